//! Encryption at rest of secrets stored in etcd (SSL private keys), as APISIX's
//! `data_encryption` does: a keyring of AES keys given by `--data-encryption-keys`; the
//! first key encrypts, any key decrypts, so keys can be rotated.
//!
//! Our format: standard base64 of `nonce (12 bytes) || ciphertext || tag (16 bytes)`,
//! AES-GCM with a random nonce (AES-128 or AES-256 by the key's length). For data APISIX
//! wrote, `decrypt` also reads APISIX's format: base64 of AES-128-CBC with PKCS#7 padding
//! whose IV is the 16-byte key itself, accepted only when the result is PEM.
use aes::cipher::{BlockDecryptMut, KeyIvInit};
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use std::fmt;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// What a stored value that is plaintext PEM starts with.
const PEM_START: &str = "-----BEGIN";

/// The AES keys secrets are encrypted with. `Debug` tells how many keys, never the keys.
#[derive(Clone, Default)]
pub struct Keyring {
    keys: Vec<Vec<u8>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyring({} keys)", self.keys.len())
    }
}

/// The longest a secret of `plain` bytes is once sealed (nonce, tag, base64): a length
/// limit on a secret field must admit it, or a valid secret stored encrypted would make
/// its whole consumer invalid.
pub const fn sealed_len(plain: usize) -> usize {
    4 * (NONCE_LEN + 16 + plain).div_ceil(3)
}

impl Keyring {
    /// A keyring of `keys` (16 bytes for AES-128, 32 for AES-256). Blank entries (a
    /// trailing comma) are skipped; no key at all means no encryption. The error names
    /// the key at fault by its position, never by its value.
    pub fn new(keys: &[String]) -> Result<Keyring, String> {
        let mut ring = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if key.is_empty() {
                continue;
            }
            let n = key.len();
            if n != 16 && n != 32 {
                return Err(format!(
                    "--data-encryption-keys: key {} has {n} bytes; AES keys must have 16 or 32 \
                     (AES-128 or AES-256)",
                    i + 1
                ));
            }
            ring.push(key.as_bytes().to_vec());
        }
        Ok(Keyring { keys: ring })
    }

    /// No key: secrets are stored in plaintext.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Encrypts with the first key; returns `plaintext` unchanged when there is no key.
    /// The result is at most [`sealed_len`] of the plaintext's length.
    pub fn encrypt(&self, plaintext: &str) -> String {
        let Some(key) = self.keys.first() else {
            return plaintext.to_string();
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = match key.len() {
            16 => Aes128Gcm::new_from_slice(key).ok().and_then(|c| {
                c.encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
                    .ok()
            }),
            _ => Aes256Gcm::new_from_slice(key).ok().and_then(|c| {
                c.encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
                    .ok()
            }),
        };
        // Keys are checked to be 16 or 32 bytes, and AES-GCM refuses only inputs of 64 GiB
        // or more: `sealed` is always there.
        let mut out = nonce.to_vec();
        out.extend(sealed.unwrap_or_default());
        STANDARD.encode(out)
    }

    /// A secret field as stored (an API key, a password): decrypted when it was encrypted
    /// with one of the keys, else taken as written in plaintext (stored without a keyring,
    /// or by hand), as APISIX does. AES-GCM's tag makes a plaintext that happens to decrypt
    /// practically impossible.
    pub fn open_secret(&self, stored: &str) -> String {
        if self.keys.is_empty() {
            return stored.to_string();
        }
        let Ok(bytes) = STANDARD.decode(stored.trim()) else {
            return stored.to_string();
        };
        self.keys
            .iter()
            .find_map(|k| decrypt_gcm(k, &bytes))
            .or_else(|| self.keys.iter().find_map(|k| decrypt_apisix(k, &bytes)))
            .unwrap_or_else(|| stored.to_string())
    }

    /// Decrypts a stored value. One that starts with `-----BEGIN` is plaintext PEM (written
    /// without a keyring) and is returned as is; otherwise each key is tried, in our format
    /// and then in APISIX's.
    pub fn decrypt(&self, stored: &str) -> Result<String, String> {
        if stored.trim_start().starts_with(PEM_START) {
            return Ok(stored.to_string());
        }
        if self.keys.is_empty() {
            return Err(
                "no --data-encryption-keys (DATA_ENCRYPTION_KEYS) are configured to decrypt it"
                    .into(),
            );
        }
        let bytes = STANDARD
            .decode(stored.trim())
            .map_err(|_| "it is not base64".to_string())?;
        for key in &self.keys {
            if let Some(text) = decrypt_gcm(key, &bytes) {
                return Ok(text);
            }
        }
        for key in &self.keys {
            if let Some(text) = decrypt_apisix(key, &bytes) {
                return Ok(text);
            }
        }
        Err(format!(
            "none of the {} configured --data-encryption-keys decrypts it; was it encrypted \
             with a key that has since been removed from the keyring?",
            self.keys.len()
        ))
    }
}

fn decrypt_gcm(key: &[u8], bytes: &[u8]) -> Option<String> {
    if bytes.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let nonce = Nonce::from_slice(nonce);
    let plain = match key.len() {
        16 => Aes128Gcm::new_from_slice(key).ok()?.decrypt(nonce, sealed),
        _ => Aes256Gcm::new_from_slice(key).ok()?.decrypt(nonce, sealed),
    }
    .ok()?;
    String::from_utf8(plain).ok()
}

/// APISIX's `aes_decrypt_pkey`: AES-128-CBC, PKCS#7, IV = key. Wrong keys usually fail the
/// padding check; the PEM check rules out the rest.
fn decrypt_apisix(key: &[u8], bytes: &[u8]) -> Option<String> {
    // A length that is not whole blocks fails the decryption itself.
    if key.len() != 16 || bytes.is_empty() {
        return None;
    }
    let cipher = cbc::Decryptor::<aes::Aes128>::new_from_slices(key, key).ok()?;
    let plain = cipher
        .decrypt_padded_vec_mut::<aes::cipher::block_padding::Pkcs7>(bytes)
        .ok()?;
    String::from_utf8(plain)
        .ok()
        .filter(|text| text.starts_with(PEM_START))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";
    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";

    fn ring(keys: &[&str]) -> Keyring {
        Keyring::new(&keys.iter().map(|k| k.to_string()).collect::<Vec<_>>()).expect("valid keys")
    }

    #[test]
    fn sealed_lengths_are_bounded() {
        for keys in [&[A][..], &[B][..]] {
            for n in [0, 1, 255, 256, 4096] {
                let sealed = ring(keys).encrypt(&"x".repeat(n));
                assert_eq!(sealed.len(), sealed_len(n), "{n} bytes");
            }
        }
    }

    #[test]
    fn key_lengths() {
        for (keys, expected) in [
            (vec![], Ok(0)),
            (vec![""], Ok(0)),
            (vec![A], Ok(1)),
            (vec![B, A, ""], Ok(2)),
            (vec!["short"], Err("key 1 has 5 bytes")),
            (vec![A, &"x".repeat(24)], Err("key 2 has 24 bytes")),
            (vec![&"x".repeat(33)], Err("16 or 32")),
        ] {
            let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            match (Keyring::new(&keys), expected) {
                (Ok(r), Ok(n)) => {
                    assert_eq!(r.keys.len(), n, "{keys:?}");
                    assert_eq!(r.is_empty(), n == 0);
                }
                (Err(e), Err(needle)) => {
                    assert!(e.contains(needle), "{keys:?}: {e}");
                    assert!(
                        !e.contains('x') || !e.contains("xxxx"),
                        "leaks the key: {e}"
                    );
                }
                (got, want) => panic!("{keys:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn debug_hides_keys() {
        let shown = format!("{:?}", ring(&[A, B]));
        assert_eq!(shown, "Keyring(2 keys)");
    }

    #[test]
    fn round_trip() {
        for keys in [vec![A], vec![B], vec![B, A]] {
            let r = ring(&keys);
            let sealed = r.encrypt(PEM);
            assert!(!sealed.contains("BEGIN"), "{sealed}");
            assert_ne!(sealed, r.encrypt(PEM), "the nonce must be random");
            assert_eq!(r.decrypt(&sealed).as_deref(), Ok(PEM), "{keys:?}");
        }
        // Any UTF-8 text, not only PEM, goes through our format.
        let r = ring(&[A]);
        assert_eq!(r.decrypt(&r.encrypt("é")).as_deref(), Ok("é"));
    }

    #[test]
    fn no_keyring_is_plaintext() {
        let r = ring(&[]);
        assert!(r.is_empty());
        assert_eq!(r.encrypt(PEM), PEM);
        assert_eq!(r.decrypt(PEM).as_deref(), Ok(PEM));
        let sealed = ring(&[A]).encrypt(PEM);
        let err = r.decrypt(&sealed).expect_err("no key");
        assert!(err.contains("no --data-encryption-keys"), "{err}");
    }

    #[test]
    fn plaintext_passes_through_any_keyring() {
        assert_eq!(ring(&[A]).decrypt(PEM).as_deref(), Ok(PEM));
        let indented = format!("\n  {PEM}");
        assert_eq!(ring(&[A]).decrypt(&indented), Ok(indented.clone()));
    }

    #[test]
    fn rotation() {
        let sealed = ring(&[A]).encrypt(PEM);
        assert_eq!(ring(&[B, A]).decrypt(&sealed).as_deref(), Ok(PEM));
        let err = ring(&[B]).decrypt(&sealed).expect_err("A was removed");
        assert!(err.contains("none of the 1 configured"), "{err}");
        // Re-encrypting after rotation uses the new first key.
        let resealed = ring(&[B, A]).encrypt(PEM);
        assert_eq!(ring(&[B]).decrypt(&resealed).as_deref(), Ok(PEM));
        assert!(ring(&[A]).decrypt(&resealed).is_err());
    }

    #[test]
    fn garbage() {
        let r = ring(&[A]);
        for stored in ["", "not base64!", "AAAA", "c2hvcnQ="] {
            assert!(r.decrypt(stored).is_err(), "{stored:?}");
        }
        let mut sealed = STANDARD.decode(r.encrypt(PEM)).expect("base64");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(r.decrypt(&STANDARD.encode(sealed)).is_err(), "tampered");
    }

    /// Produced by APISIX's scheme with Debian's openssl:
    /// `printf '%s' "$PEM" | openssl enc -aes-128-cbc -K <hex of A> -iv <hex of A> -base64 -A`
    const APISIX_VECTOR: &str = include_str!("../fixtures/keyring/apisix-aes128cbc.txt");

    #[test]
    fn reads_apisix_format() {
        let plain = ring(&[A])
            .decrypt(APISIX_VECTOR.trim())
            .expect("APISIX format");
        assert_eq!(plain, PEM);
        // Also found behind a newer key, and not with another key.
        assert_eq!(
            ring(&[B, A]).decrypt(APISIX_VECTOR.trim()).as_deref(),
            Ok(PEM)
        );
        assert!(ring(&["abcdefghijklmnop"])
            .decrypt(APISIX_VECTOR.trim())
            .is_err());
    }
}
