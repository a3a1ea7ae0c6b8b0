//! HTTPS: the server certificate is chosen per handshake by SNI from the current snapshot,
//! so a certificate written to etcd applies to the next handshake, with no reload.
use crate::Shared;
use model::Id;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::collections::HashMap;
use std::sync::Arc;

/// The key pairs of one `ssls` resource (`cert`/`key`, then `certs`/`keys`), for the names
/// it serves. Several pairs let one name offer, say, an ECDSA and an RSA certificate.
#[derive(Debug)]
pub struct CertSet {
    pub snis: Vec<String>,
    pub keys: Vec<Arc<CertifiedKey>>,
}

/// Server names to certificates: exact names, and wildcards (`*.foo.com`) by the part
/// after their first label.
#[derive(Debug, Default)]
pub struct CertTable {
    exact: HashMap<String, Arc<CertSet>>,
    wildcard: HashMap<String, Arc<CertSet>>,
}

impl CertTable {
    /// When two resources claim one name, the smaller id wins, so every replica serves
    /// the same certificate.
    pub fn build<'a>(sets: impl IntoIterator<Item = (&'a Id, &'a Arc<CertSet>)>) -> CertTable {
        let mut sets: Vec<_> = sets.into_iter().collect();
        sets.sort_by(|a, b| b.0.sort_key().cmp(&a.0.sort_key()));
        let mut table = CertTable::default();
        // Largest id first: a smaller id inserted later takes the name over.
        for (_, set) in sets {
            for sni in &set.snis {
                let sni = sni.to_ascii_lowercase();
                match sni.strip_prefix("*.") {
                    Some(parent) => table.wildcard.insert(parent.to_string(), set.clone()),
                    None => table.exact.insert(sni, set.clone()),
                };
            }
        }
        table
    }

    /// The exact name first, then a wildcard covering exactly one label: `*.foo.com`
    /// serves `a.foo.com`, not `foo.com` nor `a.b.foo.com`.
    pub fn lookup(&self, server_name: &str) -> Option<&Arc<CertSet>> {
        let name = server_name.trim_end_matches('.').to_ascii_lowercase();
        self.exact.get(&name).or_else(|| {
            let (_, parent) = name.split_once('.')?;
            self.wildcard.get(parent)
        })
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }
}

/// Reads the current snapshot on every handshake. A handshake without SNI (a client
/// that dialled an IP address) gets the certificate of `fallback` when it is set
/// (APISIX's `fallback_sni`).
struct SniResolver {
    shared: Arc<Shared>,
    fallback: Option<String>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SniResolver")
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name().or(self.fallback.as_deref()) else {
            self.shared
                .metrics
                .tls_unknown_sni
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!("TLS handshake without SNI refused: no --tls-fallback-sni");
            return None;
        };
        let snapshot = self.shared.snapshot.load();
        let Some(set) = snapshot.certs.lookup(name) else {
            self.shared
                .metrics
                .tls_unknown_sni
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(
                sni = name,
                "TLS handshake refused: no certificate for this name"
            );
            return None;
        };
        // The first pair whose key can sign with a scheme the client offers.
        let schemes = hello.signature_schemes();
        set.keys
            .iter()
            .find(|k| k.key.choose_scheme(schemes).is_some())
            .or_else(|| set.keys.first())
            .cloned()
    }
}

/// TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, certificates by SNI (by `fallback_sni`
/// for clients that send none).
pub fn server_config(shared: Arc<Shared>, fallback_sni: Option<String>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver {
            shared,
            fallback: fallback_sni,
        }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(snis: &[&str]) -> Arc<CertSet> {
        Arc::new(CertSet {
            snis: snis.iter().map(|s| s.to_string()).collect(),
            keys: Vec::new(),
        })
    }

    #[test]
    fn lookup_table() {
        let (a, b, c) = (
            Id::parse("1").unwrap(),
            Id::parse("2").unwrap(),
            Id::parse("10").unwrap(),
        );
        let (sa, sb, sc) = (
            set(&["foo.com", "*.foo.com"]),
            set(&["a.foo.com", "bar.com"]),
            set(&["bar.com", "*.bar.com"]),
        );
        let table = CertTable::build([(&c, &sc), (&a, &sa), (&b, &sb)]);
        let who = |name: &str| {
            table.lookup(name).map(|s| {
                if Arc::ptr_eq(s, &sa) {
                    "1"
                } else if Arc::ptr_eq(s, &sb) {
                    "2"
                } else {
                    "10"
                }
            })
        };
        for (name, want) in [
            ("foo.com", Some("1")),
            ("FOO.com", Some("1")),
            ("a.foo.com", Some("2")),
            ("x.foo.com", Some("1")),
            ("x.y.foo.com", None),
            ("bar.com", Some("2")),
            ("x.bar.com", Some("10")),
            ("other.com", None),
            ("com", None),
        ] {
            assert_eq!(who(name), want, "{name}");
        }
    }
}
