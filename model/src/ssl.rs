//! SSL resources: certificates and private keys that the gateway serves by SNI, with
//! APISIX's fields.
//!
//! Two levels of checks. [`Resource::validate`] (run by [`crate::decode`]) needs no secret:
//! fields, SNIs, `certs`/`keys` lengths, so the gateway can decode a stored value whose keys
//! are encrypted. [`Ssl::check_pem`] needs the keys in plaintext (after
//! [`Ssl::decrypt_keys`]): PEM parses, every key matches its certificate, and it returns
//! the leaf's validity dates.
use crate::codec::check_meta;
use crate::keyring::Keyring;
use crate::route::Status;
use crate::{Id, Kind, Resource, ValidationError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssl {
    pub id: Option<Id>,
    /// The certificate chain, PEM: the leaf first, then intermediates.
    pub cert: String,
    /// The private key of `cert`: PEM, or encrypted by a [`Keyring`] as stored.
    pub key: String,
    /// More certificates for the same SNIs (e.g. ECDSA beside RSA), each with `keys[i]`.
    pub certs: Option<Vec<String>>,
    pub keys: Option<Vec<String>>,
    /// One SNI; folded into `snis` by decoding.
    pub sni: Option<String>,
    /// After decoding: every SNI (`sni` or `snis`), lowercase, e.g. `*.example.com`.
    #[serde(default)]
    pub snis: Vec<String>,
    #[serde(default = "enabled")]
    pub status: Status,
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "type", default)]
    pub ssl_type: SslType,
    /// Mutual TLS (`client.ca`, …): not supported yet, refused by `validate`.
    pub client: Option<Value>,
    /// Refused by `validate`: not supported yet.
    pub ssl_protocols: Option<Value>,
    pub create_time: Option<u64>,
    pub update_time: Option<u64>,
    /// The leaf certificate's notBefore / notAfter, unix seconds, as APISIX stores them.
    pub validity_start: Option<u64>,
    pub validity_end: Option<u64>,
}

fn enabled() -> Status {
    Status(1)
}

/// `type`: only `server` (certificates the gateway presents) is supported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SslType {
    #[default]
    Server,
}

impl<'de> Deserialize<'de> for SslType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "server" => Ok(SslType::Server),
            "client" => Err(serde::de::Error::custom(
                "type \"client\" (certificates for upstream mTLS) is not supported yet; \
                 supported: \"server\"",
            )),
            _ => Err(serde::de::Error::custom(format!(
                "unknown type {s:?}; expected \"server\""
            ))),
        }
    }
}

/// Private keys never reach the logs.
impl fmt::Debug for Ssl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ssl")
            .field("id", &self.id)
            .field("snis", &self.snis)
            .field("status", &self.status)
            .field("certs", &self.certs.as_ref().map_or(0, Vec::len))
            .field("labels", &self.labels)
            .field("validity_start", &self.validity_start)
            .field("validity_end", &self.validity_end)
            .finish_non_exhaustive()
    }
}

/// The leaf certificate's validity, unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: u64,
    pub not_after: u64,
}

impl Ssl {
    pub fn enabled(&self) -> bool {
        self.status.0 == 1
    }

    /// `(cert, key)` as stored: `cert`/`key` first, then each `certs[i]`/`keys[i]`.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        let extra = self
            .certs
            .iter()
            .flatten()
            .zip(self.keys.iter().flatten())
            .map(|(c, k)| (c.as_str(), k.as_str()));
        std::iter::once((self.cert.as_str(), self.key.as_str())).chain(extra)
    }

    /// Replaces `key` and every `keys[i]` with its plaintext. A value already PEM is kept.
    pub fn decrypt_keys(&mut self, keyring: &Keyring) -> Result<(), ValidationError> {
        self.key = keyring
            .decrypt(&self.key)
            .map_err(|e| ValidationError::new("key", undecryptable(&e)))?;
        for (i, key) in self.keys.iter_mut().flatten().enumerate() {
            *key = keyring
                .decrypt(key)
                .map_err(|e| ValidationError::new(format!("keys[{i}]"), undecryptable(&e)))?;
        }
        Ok(())
    }

    /// With the keys in plaintext: every certificate chain and key parses, every key
    /// matches its certificate. Returns the validity of `cert`'s leaf.
    pub fn check_pem(&self) -> Result<Validity, ValidationError> {
        let validity = leaf_validity(&self.cert).map_err(|e| ValidationError::new("cert", e))?;
        check_pair(&self.cert, &self.key, "cert", "key")?;
        for (i, (cert, key)) in self.pairs().skip(1).enumerate() {
            leaf_validity(cert).map_err(|e| ValidationError::new(format!("certs[{i}]"), e))?;
            check_pair(cert, key, &format!("certs[{i}]"), &format!("keys[{i}]"))?;
        }
        Ok(validity)
    }
}

fn undecryptable(reason: &str) -> String {
    format!("is not a PEM private key, and cannot be decrypted as a stored one: {reason}")
}

fn check_pair(
    cert: &str,
    key: &str,
    cert_field: &str,
    key_field: &str,
) -> Result<(), ValidationError> {
    match checked_key(cert, key) {
        Ok(_) => Ok(()),
        Err(CheckError::Cert(e)) => Err(ValidationError::new(cert_field, e)),
        Err(CheckError::Key(e)) => Err(ValidationError::new(key_field, e)),
    }
}

enum CheckError {
    Cert(String),
    Key(String),
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Cert(e) => write!(f, "certificate: {e}"),
            CheckError::Key(e) => write!(f, "private key: {e}"),
        }
    }
}

/// Parses a PEM certificate chain and its PEM private key (plaintext) into what rustls
/// serves, checking that the key matches the chain's first (leaf) certificate. Used by
/// validation and by the gateway. The error says which of the two is at fault.
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<CertifiedKey, String> {
    checked_key(cert_pem, key_pem).map_err(|e| e.to_string())
}

fn checked_key(cert_pem: &str, key_pem: &str) -> Result<CertifiedKey, CheckError> {
    let chain = parse_chain(cert_pem).map_err(CheckError::Cert)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| {
        CheckError::Key(format!(
            "is not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"
        ))
    })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| CheckError::Key(format!("is not a supported key type: {e}")))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            CheckError::Key("does not match the certificate".to_string())
        }
        other => CheckError::Cert(format!("cannot be checked against the key: {other}")),
    })?;
    Ok(certified)
}

fn parse_chain(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = crate::pem::certificates(pem)?;
    if chain.is_empty() {
        return Err("holds no PEM CERTIFICATE block".into());
    }
    Ok(chain)
}

/// notBefore and notAfter of the chain's first certificate.
fn leaf_validity(pem: &str) -> Result<Validity, String> {
    let chain = parse_chain(pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(chain[0].as_ref())
        .map_err(|e| format!("is not a valid X.509 certificate: {e}"))?;
    let v = cert.validity();
    let secs = |t: i64| u64::try_from(t).unwrap_or(0);
    Ok(Validity {
        not_before: secs(v.not_before.timestamp()),
        not_after: secs(v.not_after.timestamp()),
    })
}

/// A server name as a client sends it in SNI (`example.com`), or one leading wildcard
/// label (`*.example.com`).
pub fn check_sni(sni: &str) -> Result<(), String> {
    let name = sni.strip_prefix("*.").unwrap_or(sni);
    if name.is_empty() || name.len() > 253 {
        return Err(format!("{sni:?} is not a DNS name (1 to 253 characters)"));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            let hint = if label.contains('*') {
                "; a wildcard must be the whole first label: *.example.com"
            } else {
                ""
            };
            return Err(format!(
                "{sni:?} is not a valid server name: label {label:?} must be 1 to 63 letters, \
                 digits or '-', not starting or ending with '-'{hint}"
            ));
        }
    }
    Ok(())
}

impl Resource for Ssl {
    const KIND: Kind = Kind::Ssls;

    fn id(&self) -> Option<&Id> {
        self.id.as_ref()
    }

    /// Folds `sni` into `snis` and lowercases them.
    fn parse_plugins(&mut self) -> Result<(), ValidationError> {
        if let Some(sni) = self.sni.take() {
            if !self.snis.is_empty() {
                return Err(ValidationError::new(
                    "snis",
                    "give either sni or snis, not both",
                ));
            }
            self.snis.push(sni);
        }
        for sni in &mut self.snis {
            *sni = sni.to_ascii_lowercase();
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ValidationError> {
        check_meta(None, None, self.labels.as_ref())?;
        if self.client.is_some() {
            return Err(ValidationError::new(
                "client",
                "client certificate verification (mTLS) is not supported yet",
            ));
        }
        if self.ssl_protocols.is_some() {
            return Err(ValidationError::new(
                "ssl_protocols",
                "is not supported yet; the gateway serves TLS 1.2 and 1.3",
            ));
        }
        if self.snis.is_empty() {
            return Err(ValidationError::new(
                "snis",
                "an SSL needs at least one server name in sni or snis",
            ));
        }
        for (i, sni) in self.snis.iter().enumerate() {
            check_sni(sni).map_err(|e| ValidationError::new(format!("snis[{i}]"), e))?;
        }
        for (field, text) in [("cert", &self.cert), ("key", &self.key)] {
            if text.trim().is_empty() {
                return Err(ValidationError::new(field, "must not be empty"));
            }
        }
        match (&self.certs, &self.keys) {
            (None, None) => {}
            (Some(c), Some(k)) if c.len() == k.len() => {}
            (c, k) => {
                return Err(ValidationError::new(
                    "keys",
                    format!(
                        "certs and keys must have as many entries ({} certs, {} keys)",
                        c.as_ref().map_or(0, Vec::len),
                        k.as_ref().map_or(0, Vec::len)
                    ),
                ))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
