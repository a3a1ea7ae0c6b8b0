//! How the gateway speaks to an upstream's nodes: HTTP/1.1 or HTTP/2, in the clear or over
//! TLS (`scheme` http, https, grpc, grpcs), and the certificate checks of `tls`.
use model::upstream::{Scheme, Upstream};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::{Arc, OnceLock};

/// One upstream's way of connecting, shared by its nodes.
#[derive(Clone)]
pub struct Transport {
    pub scheme: Scheme,
    /// Set for `https` and `grpcs`.
    pub tls: Option<Arc<ClientConfig>>,
    /// Tells pooled connections of different TLS settings apart (0 in the clear): a
    /// connection verified against one CA is not reused for an upstream trusting another.
    pub tag: u64,
    /// `tls.ca`, kept for the health checker's probes.
    ca: Option<String>,
}

impl Transport {
    pub fn plain() -> Transport {
        Transport {
            scheme: Scheme::Http,
            tls: None,
            tag: 0,
            ca: None,
        }
    }

    /// The TLS settings of `https` health probes: HTTP/1.1 whatever the upstream speaks,
    /// checked against the upstream's CA (or the system's) unless `verify` is off.
    pub fn probe_config(&self, verify: bool) -> Result<Arc<ClientConfig>, String> {
        Ok(match (verify, &self.ca) {
            (false, _) => Arc::new(insecure_config(b"http/1.1")),
            (true, Some(pem)) => Arc::new(ca_config(pem, b"http/1.1")?),
            (true, None) => system_config(false),
        })
    }

    /// HTTP/1.1 over TLS, checked against the system's roots unless `verify` is off: for
    /// the requests the gateway sends on its own (`outbound.rs`).
    pub fn https(verify: bool) -> Transport {
        Transport {
            scheme: Scheme::Https,
            tls: Some(match verify {
                true => system_config(false),
                false => Arc::new(insecure_config(b"http/1.1")),
            }),
            tag: if verify { 3 } else { 5 },
            ca: None,
        }
    }

    pub fn http2(&self) -> bool {
        self.scheme.is_http2()
    }

    /// The transport of `def`; an error (the upstream is then not served) when its CA
    /// bundle cannot be used.
    pub fn new(def: &Upstream) -> Result<Transport, String> {
        if !def.scheme.is_tls() {
            return Ok(Transport {
                scheme: def.scheme,
                tls: None,
                tag: 0,
                ca: None,
            });
        }
        let alpn: &[u8] = if def.scheme.is_http2() {
            b"h2"
        } else {
            b"http/1.1"
        };
        let verify = def.tls.as_ref().is_none_or(|t| t.verify);
        let ca = def.tls.as_ref().and_then(|t| t.ca.as_deref());
        let config = match (verify, ca) {
            (false, _) => Arc::new(insecure_config(alpn)),
            (true, Some(pem)) => Arc::new(ca_config(pem, alpn)?),
            (true, None) => system_config(def.scheme.is_http2()),
        };
        let tag = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (def.scheme, verify, ca).hash(&mut h);
            h.finish() | 1
        };
        Ok(Transport {
            scheme: def.scheme,
            tls: Some(config),
            tag,
            ca: ca.map(str::to_string),
        })
    }
}

/// The name a node's certificate is checked against and sent as SNI: `upstream_host`
/// when the upstream rewrites the host, else the node's own host (name or IP).
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    let host = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(h, _)| h),
        None => host
            .rsplit_once(':')
            .filter(|(h, p)| !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()))
            .map_or(host, |(h, _)| h),
    };
    ServerName::try_from(host.to_string()).ok()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
}

fn with_alpn(mut config: ClientConfig, alpn: &[u8]) -> ClientConfig {
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

/// Verified against the system's roots, loaded once: most upstreams share these configs.
fn system_config(http2: bool) -> Arc<ClientConfig> {
    static H1: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    static H2: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    let (cell, alpn): (_, &[u8]) = if http2 {
        (&H2, b"h2")
    } else {
        (&H1, b"http/1.1")
    };
    cell.get_or_init(|| {
        let config = builder()
            .with_root_certificates(system_roots())
            .with_no_client_auth();
        Arc::new(with_alpn(config, alpn))
    })
    .clone()
}

fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "reading the system's CA certificates");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::info!(
                added,
                ignored,
                "loaded the system's CA certificates for https upstreams"
            );
            Arc::new(roots)
        })
        .clone()
}

fn ca_config(pem: &str, alpn: &[u8]) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    for cert in model::pem::certificates(pem)? {
        roots
            .add(cert)
            .map_err(|e| format!("tls.ca: unusable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("tls.ca: no certificate".into());
    }
    let config = builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(with_alpn(config, alpn))
}

/// `tls.verify: false`: the connection is encrypted but the node is not authenticated.
fn insecure_config(alpn: &[u8]) -> ClientConfig {
    let config = builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
        .with_no_client_auth();
    with_alpn(config, alpn)
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        for (host, want) in [
            ("backend.internal", Some("backend.internal")),
            ("backend.internal:8443", Some("backend.internal")),
            ("127.0.0.1:8443", Some("127.0.0.1")),
            ("[::1]:8443", Some("::1")),
            ("::1", Some("::1")),
            ("bad name!", None),
        ] {
            let got = server_name(host).map(|n| match n {
                ServerName::DnsName(d) => d.as_ref().to_string(),
                ServerName::IpAddress(ip) => std::net::IpAddr::from(ip).to_string(),
                _ => "?".into(),
            });
            assert_eq!(got.as_deref(), want, "{host}");
        }
    }
}
