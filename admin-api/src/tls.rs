//! Optional HTTPS for the Admin API (`--tls-cert`, `--tls-key`): a listener for
//! `axum::serve` whose connections are TLS streams. Handshakes run in their own tasks (5 s
//! at most each, at most [`MAX_HANDSHAKES`] at once: past that, connections wait in the
//! kernel's backlog), so slow or silent clients hold up neither the others nor the process's
//! descriptors. The certificate files are compared with what was loaded every 10 s (their
//! contents, not their times, which copies may keep or round), so a rotated certificate is
//! served without a restart; a pair that does not load keeps the previous one (logged).
use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress at once.
pub const MAX_HANDSHAKES: usize = 256;
const RELOAD_EVERY: Duration = Duration::from_secs(10);

/// The certificate and key files, and the pair loaded from them with the bytes it was
/// loaded from.
#[derive(Debug)]
pub struct Files {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Vec<u8>, Vec<u8>, Arc<CertifiedKey>)>,
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

fn read(p: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

impl Files {
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Files> {
        let (c, k) = (read(cert)?, read(key)?);
        let ck = certified_key(&c, &k)?;
        Ok(Files {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new((c, k, Arc::new(ck))),
        })
    }

    /// Loads the pair again if either file's contents changed; `Ok(true)` when it did.
    /// (A rotation caught between its two writes does not load, and is tried again.)
    pub fn reload(&self) -> anyhow::Result<bool> {
        let (c, k) = (read(&self.cert)?, read(&self.key)?);
        {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            if current.0 == c && current.1 == k {
                return Ok(false);
            }
        }
        let ck = certified_key(&c, &k)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (c, k, Arc::new(ck));
        Ok(true)
    }

    fn served(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .2
            .clone()
    }
}

impl ResolvesServerCert for Files {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.served())
    }
}

/// A TCP listener whose `accept` yields completed TLS handshakes.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

/// Starts accepting on `tcp` with the pair in `files` (reloaded when the files change).
/// Its tasks end once the returned listener is dropped.
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
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let accepting = tx.clone();
    tokio::spawn(async move {
        loop {
            // A slot first: while every slot is taken, connections wait in the backlog.
            let slot = tokio::select! {
                () = accepting.closed() => return,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(s) => s,
                    Err(_) => return,
                },
            };
            let accepted = tokio::select! {
                () = accepting.closed() => return,
                accepted = tcp.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (acceptor, tx) = (acceptor.clone(), accepting.clone());
            tokio::spawn(async move {
                let done = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                drop(slot);
                match done {
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
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep(RELOAD_EVERY) => {}
            }
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
    use std::time::SystemTime;

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

        let dir = std::env::temp_dir().join(format!("admin-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert, &a_cert).unwrap();
        std::fs::write(&key, &a_key).unwrap();
        let files = Files::load(&cert, &key).unwrap();
        assert!(!files.reload().unwrap(), "unchanged files: nothing to do");
        let first = files.served().cert[0].clone();
        // A rotation whose files keep their old times (as `cp -p` does): still seen.
        let times: Vec<SystemTime> = [&cert, &key]
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
            .collect();
        std::fs::write(&cert, &b_cert).unwrap();
        // Caught between its two writes: refused, the previous pair still served.
        assert!(files.reload().is_err());
        assert_eq!(files.served().cert[0], first);
        std::fs::write(&key, &b_key).unwrap();
        for (p, t) in [&cert, &key].iter().zip(&times) {
            let f = std::fs::File::options().write(true).open(p).unwrap();
            f.set_modified(*t).unwrap();
        }
        assert!(files.reload().unwrap());
        assert_ne!(files.served().cert[0], first);
        // A broken rotation keeps the pair that works.
        std::fs::write(&key, &a_key).unwrap();
        assert!(files.reload().is_err());
        assert_ne!(files.served().cert[0], first);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
