//! `spec.tls` -> `ssls` values (pure), kept apart from the rest of the translation.
//!
//! NOT WIRED YET: the `Ssl` model type and `Keyring` (branch `ssl`) are not on main. Until
//! they are, these values are computed (and tested) but not written: `main.rs` leaves
//! them out of the desired state. Wiring = validate with `model::ssl::Ssl`, replace
//! `key` by `Keyring::encrypt(key)` (see `KEY_TO_ENCRYPT`), and merge into `Desired::values`.
use crate::translate::{labels, stable_id};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use model::Kind;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Marks the field whose plaintext must go through `Keyring::encrypt` once wired.
pub const KEY_TO_ENCRYPT: &str = "key";

/// One `ssls` value per (namespace, Secret), with the union of the hosts that name it.
pub fn ssls(
    prefix: &str,
    ingresses: &[&Ingress],
    secrets: &[Secret],
    warnings: &mut Vec<String>,
) -> BTreeMap<String, Value> {
    let mut snis: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
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
            KEY_TO_ENCRYPT: key,
            "snis": hosts,
            "labels": labels("Secret", &ns, &secret_name),
        });
        match model::Id::parse(&id) {
            Ok(id) => {
                out.insert(model::key::resource_key(prefix, Kind::Ssls, &id), value);
            }
            Err(e) => warnings.push(format!("ssl {id}: {e}")),
        }
    }
    out
}

/// The PEM certificate chain and key of a `kubernetes.io/tls` Secret, checked to parse.
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
    let cert = field("tls.crt")?;
    let key = field("tls.key")?;
    let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.crt does not parse: {e}"))?;
    if certs.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| format!("tls.key does not parse: {e}"))?;
    Ok((cert, key))
}
