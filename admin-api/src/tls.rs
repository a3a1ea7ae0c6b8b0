//! Optional HTTPS for the Admin API (`--tls-cert`, `--tls-key`): a listener for
//! `axum::serve` whose connections are TLS streams. Handshakes run in their own tasks (10 s
//! at most each), so a slow or silent client never holds up the others. The certificate
//! files are read again when they change (checked every 10 s), so a rotated certificate
//! is served without a restart; a pair that does not load keeps the previous one (logged).
use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const RELOAD_EVERY: Duration = Duration::from_secs(10);

/// The certificate and key files, and the pair loaded from them.
#[derive(Debug)]
pub struct Files {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Option<SystemTime>, Arc<CertifiedKey>)>,
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// A certificate chain and its private key from PEM text, checked to belong together.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .context("the certificate file is not PEM")?;
    anyhow::ensure!(
        !chain.is_empty(),
        "the certificate file holds no certificate"
    );
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).context("the key file holds no private key")?;
    let provider = rustls::crypto::ring::default_provider();
    let ck = CertifiedKey::from_der(chain, key, &provider)
        .context("the key does not belong to the certificate")?;
    Ok(ck)
}

impl Files {
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Files> {
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let ck = certified_key(&read(cert)?, &read(key)?)?;
        Ok(Files {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new((mtime(cert).max(mtime(key)), Arc::new(ck))),
        })
    }

    /// Loads the pair again if either file changed; `Ok(true)` when it did.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let seen = mtime(&self.cert).max(mtime(&self.key));
        if self.current.read().unwrap_or_else(|p| p.into_inner()).0 == seen {
            return Ok(false);
        }
        let ck = certified_key(&std::fs::read(&self.cert)?, &std::fs::read(&self.key)?)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (seen, Arc::new(ck));
        Ok(true)
    }
}

impl ResolvesServerCert for Files {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .1
                .clone(),
        )
    }
}

/// A TCP listener whose `accept` yields completed TLS handshakes.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

/// Starts accepting on `tcp` with the pair in `files` (reloaded when the files change).
pub fn listen(tcp: TcpListener, files: Arc<Files>) -> anyhow::Result<TlsListener> {
    let local = tcp.local_addr()?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(files.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (tx, ready) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match tcp.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send((tls, peer)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RELOAD_EVERY).await;
            match files.reload() {
                Ok(true) => tracing::info!("TLS certificate reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate not reloaded; serving the previous one")
                }
            }
        }
    });
    Ok(TlsListener { local, ready })
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_that_do_not_belong_together_are_refused_and_rotation_is_picked_up() {
        let a = rcgen::generate_simple_self_signed(vec!["a.test".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.test".into()]).unwrap();
        let (a_cert, a_key) = (a.cert.pem(), a.signing_key.serialize_pem());
        let (b_cert, b_key) = (b.cert.pem(), b.signing_key.serialize_pem());
        assert!(certified_key(a_cert.as_bytes(), a_key.as_bytes()).is_ok());
        let mismatch = certified_key(a_cert.as_bytes(), b_key.as_bytes()).unwrap_err();
        assert!(
            format!("{mismatch:#}").contains("does not belong"),
            "{mismatch:#}"
        );
        assert!(certified_key(b"nothing", a_key.as_bytes()).is_err());

        let dir = tempfile_dir();
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert, &a_cert).unwrap();
        std::fs::write(&key, &a_key).unwrap();
        let files = Files::load(&cert, &key).unwrap();
        assert!(!files.reload().unwrap(), "unchanged files: nothing to do");
        let first = files.current.read().unwrap().1.cert[0].clone();
        // A rotation: new files with a later mtime.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&cert, &b_cert).unwrap();
        std::fs::write(&key, &b_key).unwrap();
        let later = SystemTime::now() + Duration::from_secs(2);
        let f = std::fs::File::options().write(true).open(&cert).unwrap();
        f.set_modified(later).unwrap();
        assert!(files.reload().unwrap());
        assert_ne!(files.current.read().unwrap().1.cert[0], first);
        // A broken rotation keeps the pair that works.
        std::fs::write(&key, &a_key).unwrap();
        let f = std::fs::File::options().write(true).open(&key).unwrap();
        f.set_modified(later + Duration::from_secs(2)).unwrap();
        assert!(files.reload().is_err());
        assert_ne!(files.current.read().unwrap().1.cert[0], first);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("admin-tls-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
