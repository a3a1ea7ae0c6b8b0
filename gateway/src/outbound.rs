//! Requests the gateway sends on its own behalf, never on a client's path: copies of
//! requests for `proxy-mirror`, batches of log entries for `http-logger`. They run on the
//! control-plane runtime over pooled connections of their own (the workers' pool hands a
//! connection only to its own event loop). A mirror copy is handed over through a bounded
//! queue: when it is full the copy is dropped and counted, and the client's request never
//! waits for it.
use crate::pool::{connect, BoxError, Pool, UpBody};
use crate::snapshot::PoolSettings;
use crate::transport::{server_name, Transport};
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use rustls::pki_types::ServerName;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// Where an outbound request goes: `http(s)://host[:port]`, parsed once.
#[derive(Clone)]
pub struct Target {
    /// `host:port`, what is connected to.
    pub addr: String,
    pub host: HeaderValue,
    /// The path of the URL (`/` when it has none), with its query.
    pub path: String,
    transport: Transport,
    name: Option<ServerName<'static>>,
    pool_key: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.addr, self.path)
    }
}

impl Target {
    /// `url` as the plugins' schemas already checked it: `http://` or `https://`, a host,
    /// an optional port, an optional path. `verify`: check an HTTPS server's certificate.
    pub fn parse(url: &str, verify: bool) -> Result<Target, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
        let (transport, default_port) = match uri.scheme_str() {
            Some("http") => (Transport::plain(), 80),
            Some("https") => (Transport::https(verify), 443),
            _ => return Err(format!("{url:?}: the scheme must be http or https")),
        };
        let authority = uri.authority().ok_or_else(|| format!("{url:?}: no host"))?;
        let port = authority.port_u16().unwrap_or(default_port);
        let addr = format!("{}:{port}", authority.host());
        let host = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
        let path = uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        let name = transport
            .tls
            .is_some()
            .then(|| server_name(authority.host()))
            .flatten();
        let pool_key = format!("outbound|{addr}|{}", transport.tag);
        Ok(Target {
            addr,
            host,
            path,
            transport,
            name,
            pool_key,
        })
    }
}

/// Mirror copies waiting to be sent; beyond this they are dropped.
const QUEUE: usize = 1024;
/// Mirror copies in flight at once.
const IN_FLIGHT: usize = 64;

/// A mirror copy: where to, and the request (its body already complete).
pub struct Copy {
    pub target: Arc<Target>,
    pub req: Request<Bytes>,
    pub timeout: Duration,
}

/// Counts by outcome, for `/metrics`.
#[derive(Default, Debug)]
pub struct Outcomes {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

pub struct Outbound {
    pool: Pool,
    settings: PoolSettings,
    copies: mpsc::Sender<Copy>,
    pub mirror: Outcomes,
    pub logger: Outcomes,
}

impl Outbound {
    /// Starts the mirror dispatcher on the calling runtime.
    pub fn start() -> Arc<Outbound> {
        let (tx, mut rx) = mpsc::channel::<Copy>(QUEUE);
        let outbound = Arc::new(Outbound {
            pool: Pool::new(1),
            settings: PoolSettings::default(),
            copies: tx,
            mirror: Outcomes::default(),
            logger: Outcomes::default(),
        });
        let weak = Arc::downgrade(&outbound);
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(IN_FLIGHT));
            while let Some(copy) = rx.recv().await {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let Some(out) = weak.upgrade() else { return };
                tokio::spawn(async move {
                    let counter = match out.send(&copy.target, copy.req, copy.timeout).await {
                        Ok(_) => &out.mirror.sent,
                        Err(e) => {
                            tracing::debug!(target = ?copy.target, error = %e, "proxy-mirror copy failed");
                            &out.mirror.failed
                        }
                    };
                    counter.fetch_add(1, Relaxed);
                    drop(slot);
                });
            }
        });
        outbound
    }

    /// Queues a mirror copy; never waits. A full queue drops it (counted).
    pub fn mirror(&self, copy: Copy) {
        if self.copies.try_send(copy).is_err() {
            self.mirror.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Sends `req` to `target` and reads the whole answer, within `timeout`; the status.
    /// The request's target is the path it carries; `Host` is the target's.
    pub async fn send(
        &self,
        target: &Target,
        req: Request<Bytes>,
        timeout: Duration,
    ) -> Result<StatusCode, String> {
        match tokio::time::timeout(timeout, self.exchange(target, req)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer from {} within {timeout:?}", target.addr)),
        }
    }

    async fn exchange(&self, target: &Target, req: Request<Bytes>) -> Result<StatusCode, String> {
        let (mut parts, body) = req.into_parts();
        parts
            .headers
            .insert(http::header::HOST, target.host.clone());
        parts.version = http::Version::HTTP_11;
        let body: UpBody = Full::new(body)
            .map_err(|never| -> BoxError { match never {} })
            .boxed_unsync();
        let req = Request::from_parts(parts, body);
        let mut conn = match self.pool.checkout(&target.pool_key, &self.settings) {
            Some(c) => c,
            None => connect(
                &target.addr,
                &target.pool_key,
                &target.transport,
                target.name.as_ref(),
                Duration::from_secs(60),
                false,
            )
            .await
            .map_err(|e| e.to_string())?,
        };
        conn.tx.ready().await.map_err(|e| e.to_string())?;
        conn.uses += 1;
        let resp = conn
            .tx
            .try_send_request(req)
            .await
            .map_err(|e| e.message())?;
        let status = resp.status();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        self.pool.checkin(conn, &self.settings);
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:9797", true).unwrap();
        assert_eq!((t.addr.as_str(), t.path.as_str()), ("127.0.0.1:9797", "/"));
        assert!(t.transport.tls.is_none());
        let t = Target::parse("https://logs.example.com/ingest?x=1", true).unwrap();
        assert_eq!(t.addr, "logs.example.com:443");
        assert_eq!(t.path, "/ingest?x=1");
        assert_eq!(t.host, "logs.example.com");
        assert!(t.transport.tls.is_some() && t.name.is_some());
        let t = Target::parse("http://[::1]/a", true).unwrap();
        assert_eq!(t.addr, "[::1]:80");
        for bad in ["ftp://h", "h:80", "http://"] {
            assert!(Target::parse(bad, true).is_err(), "{bad}");
        }
    }
}
