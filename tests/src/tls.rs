//! Certificates for TLS tests, made with rcgen (ECDSA P-256, ring backend): a test CA that
//! signs server certificates for given names, and self-signed certificates.
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// A certificate authority for one test: trust [`TestCa::pem`] in the client, serve the
/// leaves it signs.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A fresh CA whose common name is `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = common_name(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.as_ref().pem()
    }

    /// A server certificate signed by this CA for `names` (DNS names, `*.x` wildcards or IP
    /// addresses as subject alternative names; the first is also the common name):
    /// `(certificate PEM, private key PEM)`. The certificate PEM holds the leaf only.
    pub fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = server_params(names).signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

impl TestCa {
    /// A client certificate signed by this CA, for servers that ask for one (etcd's
    /// `--client-cert-auth`): `(certificate PEM, private key PEM)`.
    pub fn client(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = common_name(name);
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A self-signed server certificate for `names`: `(certificate PEM, private key PEM)`.
pub fn self_signed(names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let cert = server_params(names).self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn server_params(names: &[&str]) -> CertificateParams {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    if let Some(first) = names.first() {
        params.distinguished_name = common_name(first);
    }
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

/// A rustls server configuration serving `cert`/`key` (PEM), for test HTTPS backends.
pub fn server_config(cert: &str, key: &str) -> std::sync::Arc<rustls::ServerConfig> {
    server_config_alpn(cert, key, b"http/1.1")
}

/// [`server_config`] offering `alpn` (`h2` for gRPC over TLS).
pub fn server_config_alpn(
    cert: &str,
    key: &str,
    alpn: &[u8],
) -> std::sync::Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let chain = model::pem::certificates(cert).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![alpn.to_vec()];
    std::sync::Arc::new(config)
}

/// The DER of the first certificate in a PEM text, to compare with what a server sent.
pub fn der(pem: &str) -> Vec<u8> {
    model::pem::certificates(pem).unwrap()[0].to_vec()
}

/// What one HTTPS exchange saw.
#[derive(Debug)]
pub struct TlsAnswer {
    /// The server's leaf certificate, DER.
    pub cert: Vec<u8>,
    pub alpn: Option<Vec<u8>>,
    pub status: u16,
    pub version: http::Version,
    pub body: String,
}

/// A fresh TCP connection and TLS handshake to `addr` with `sni`, trusting only `ca_pem`,
/// offering `alpn`. Returns the client stream after the handshake.
pub async fn connect(
    addr: std::net::SocketAddr,
    sni: &str,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    connect_with(addr, sni, ca_pem, alpn, true).await
}

/// [`connect`] sending no SNI, as a client that dialled an IP address does, while still
/// verifying the certificate for `name`.
pub async fn connect_without_sni(
    addr: std::net::SocketAddr,
    name: &str,
    ca_pem: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    connect_with(addr, name, ca_pem, &[b"http/1.1"], false).await
}

async fn connect_with(
    addr: std::net::SocketAddr,
    sni: &str,
    ca_pem: &str,
    alpn: &[&[u8]],
    send_sni: bool,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in model::pem::certificates(ca_pem).unwrap() {
        roots.add(c).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.enable_sni = send_sni;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))
}

/// The leaf certificate the server presented on `stream`.
pub fn peer_cert(stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default()
}

/// `GET path` over a fresh TLS connection (HTTP/2 when the server picks `h2` by ALPN).
pub async fn get(
    addr: std::net::SocketAddr,
    sni: &str,
    ca_pem: &str,
    alpn: &[&[u8]],
    path: &str,
) -> Result<TlsAnswer, String> {
    use http_body_util::BodyExt;
    let stream = connect(addr, sni, ca_pem, alpn).await?;
    let cert = peer_cert(&stream);
    let negotiated = stream.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    let io = hyper_util::rt::TokioIo::new(stream);
    let empty = || http_body_util::Empty::<bytes::Bytes>::new();
    let resp = if negotiated.as_deref() == Some(b"h2") {
        let (mut tx, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::get(format!("https://{sni}{path}"))
            .body(empty())
            .unwrap();
        tx.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header("host", sni)
            .body(empty())
            .unwrap();
        tx.send_request(req).await.map_err(|e| e.to_string())?
    };
    let status = resp.status().as_u16();
    let version = resp.version();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(TlsAnswer {
        cert,
        alpn: negotiated,
        status,
        version,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_are_pem() {
        let ca = TestCa::new("test ca");
        assert!(ca.pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let (cert, key) = ca.leaf(&["a.test", "*.b.test", "127.0.0.1"]);
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.contains("PRIVATE KEY"));
        let (cert2, _) = self_signed(&["c.test"]);
        assert_ne!(cert, cert2);
    }
}
