//! `spec.tls` -> `ssls` values, kept apart from the rest of the translation.
//!
//! [`ssls`] is pure: values with the private key in plaintext, checked with the model's
//! `Ssl` rules (PEM parses, key matches certificate). [`seal`] then encrypts each key with
//! the keyring (`--data-encryption-keys`) just before the diff; since AES-GCM ciphertexts
//! differ at every call, a key whose stored ciphertext decrypts to the same plaintext keeps
//! that ciphertext, so an unchanged certificate writes nothing.
use crate::translate::{labels, stable_id};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use model::{Keyring, Kind};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// One `ssls` value per (namespace, Secret), with the union of the hosts that name it:
/// the Ingresses' and `more` (the Gateways' HTTPS listeners).
pub fn ssls(
    prefix: &str,
    ingresses: &[&Ingress],
    more: BTreeMap<(String, String), BTreeSet<String>>,
    secrets: &[Secret],
    warnings: &mut Vec<String>,
) -> BTreeMap<String, Value> {
    let mut snis = more;
    for ing in ingresses {
        let ns = ing.metadata.namespace.clone().unwrap_or_default();
        let name = ing.metadata.name.clone().unwrap_or_default();
        for tls in ing.spec.iter().flat_map(|s| s.tls.iter().flatten()) {
            let Some(secret) = tls.secret_name.clone().filter(|s| !s.is_empty()) else {
                warnings.push(format!("ingress {ns}/{name}: a tls entry names no secret"));
                continue;
            };
            let hosts: Vec<String> = tls
                .hosts
                .iter()
                .flatten()
                .map(|h| h.to_ascii_lowercase())
                .collect();
            if hosts.is_empty() {
                warnings.push(format!(
                    "ingress {ns}/{name}: tls secret {secret} lists no hosts; skipped"
                ));
                continue;
            }
            snis.entry((ns.clone(), secret)).or_default().extend(hosts);
        }
    }
    let mut out = BTreeMap::new();
    for ((ns, secret_name), hosts) in snis {
        let secret = secrets.iter().find(|s| {
            s.metadata.namespace.as_deref() == Some(ns.as_str())
                && s.metadata.name.as_deref() == Some(secret_name.as_str())
        });
        let (cert, key) = match secret
            .ok_or("does not exist".to_string())
            .and_then(cert_and_key)
        {
            Ok(ck) => ck,
            Err(e) => {
                warnings.push(format!(
                    "secret {ns}/{secret_name}: {e}; its certificate is skipped"
                ));
                continue;
            }
        };
        let id = stable_id("s", &[&ns, &secret_name]);
        let value = json!({
            "id": id,
            "cert": cert,
            "key": key,
            "snis": hosts,
            "labels": labels("Secret", &ns, &secret_name),
        });
        let checked = model::Id::parse(&id).and_then(|id| {
            let ssl =
                model::codec::decode_value::<model::Ssl>(&value).map_err(|e| e.to_string())?;
            ssl.check_pem().map_err(|e| e.to_string())?;
            Ok(id)
        });
        match checked {
            Ok(id) => {
                out.insert(model::key::resource_key(prefix, Kind::Ssls, &id), value);
            }
            Err(e) => warnings.push(format!(
                "secret {ns}/{secret_name}: {e}; its certificate is skipped"
            )),
        }
    }
    out
}

/// Can `secret` be served: a `kubernetes.io/tls` Secret whose pair passes the model's
/// `Ssl` checks (PEM parses, the key matches the certificate)?
pub fn check_secret(secret: &Secret) -> Result<(), String> {
    let (cert, key) = cert_and_key(secret)?;
    let value = json!({"cert": cert, "key": key, "snis": ["check.invalid"]});
    let ssl = model::codec::decode_value::<model::Ssl>(&value).map_err(|e| e.to_string())?;
    ssl.check_pem().map(|_| ()).map_err(|e| e.to_string())
}

/// The PEM certificate chain and key of a `kubernetes.io/tls` Secret.
fn cert_and_key(secret: &Secret) -> Result<(String, String), String> {
    if secret.type_.as_deref() != Some("kubernetes.io/tls") {
        return Err(format!(
            "type is {:?}, not \"kubernetes.io/tls\"",
            secret.type_.as_deref().unwrap_or("")
        ));
    }
    let field = |name: &str| {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(name))
            .map(|b| b.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(name))
                    .map(|s| s.clone().into_bytes())
            })
            .ok_or_else(|| format!("has no {name}"))?;
        String::from_utf8(bytes).map_err(|_| format!("{name} is not PEM text"))
    };
    Ok((field("tls.crt")?, field("tls.key")?))
}

/// `ssls` values ready to store: each plaintext `key` encrypted with `keyring` (kept in
/// plaintext without keys), or — when what we stored under that etcd key decrypts to the
/// same plaintext — the stored ciphertext, so that an unchanged value compares equal.
pub fn seal(
    ssls: &BTreeMap<String, Value>,
    owned: &BTreeMap<String, Value>,
    keyring: &Keyring,
) -> BTreeMap<String, Value> {
    ssls.iter()
        .map(|(k, v)| {
            let mut v = v.clone();
            let plain = v["key"].as_str().unwrap_or_default().to_string();
            let stored = owned
                .get(k)
                .and_then(|o| o["key"].as_str())
                .filter(|c| keyring.decrypt(c).is_ok_and(|p| p == plain))
                // Plaintext stored while we now have keys: encrypt it.
                .filter(|c| keyring.is_empty() || !c.trim_start().starts_with("-----BEGIN"));
            v["key"] = json!(match stored {
                Some(c) => c.to_string(),
                None => keyring.encrypt(&plain),
            });
            (k.clone(), v)
        })
        .collect()
}
