//! Keepalive connections to upstream nodes, kept beside the snapshots (keyed by address)
//! so a configuration change never drops them.
use bytes::Bytes;
use futures_util::future::Either;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::h1_client;
use crate::snapshot::PoolSettings;
use crate::transport::Transport;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type sent upstream: the client's body, streamed.
pub type UpBody = UnsyncBoxBody<Bytes, BoxError>;

/// The sending half of a connection to a node.
pub enum Sender {
    Http1(http1::SendRequest<UpBody>),
    /// Multiplexed: one pooled connection serves any number of requests at once.
    Http2(http2::SendRequest<UpBody>),
    /// Plain TCP, HTTP/1.1, driven by the request that holds it ([`crate::h1_client`]).
    Inline(h1_client::Connection),
}

impl Sender {
    pub fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(tx) => tx.is_closed(),
            Sender::Http2(tx) => tx.is_closed(),
            Sender::Inline(c) => c.is_closed(),
        }
    }

    /// [`Sender::is_closed`] for a connection the calling task takes now (checkout).
    fn is_closed_for_use(&self) -> bool {
        match self {
            Sender::Inline(c) => c.is_closed_for_use(),
            other => other.is_closed(),
        }
    }

    pub async fn ready(&mut self) -> Result<(), hyper::Error> {
        match self {
            Sender::Http1(tx) => tx.ready().await,
            Sender::Http2(tx) => tx.ready().await,
            Sender::Inline(_) => Ok(()),
        }
    }

    /// Sends through hyper; an inline connection must have been handed over first
    /// ([`Conn::into_hyper`]), or the request comes back unsent.
    pub fn try_send_request(
        &mut self,
        req: Request<UpBody>,
    ) -> impl Future<Output = Result<Response<Incoming>, Unsent>> {
        use futures_util::TryFutureExt;
        match self {
            Sender::Http1(tx) => Either::Left(Either::Left(
                tx.try_send_request(req).map_err(Unsent::Hyper),
            )),
            Sender::Http2(tx) => Either::Left(Either::Right(
                tx.try_send_request(req).map_err(Unsent::Hyper),
            )),
            Sender::Inline(_) => Either::Right(std::future::ready(Err(Unsent::Inline(req)))),
        }
    }
}

fn self_message() -> &'static str {
    "an inline connection was not handed to hyper"
}

/// Why hyper did not deliver a response.
pub enum Unsent {
    Hyper(TrySendError<Request<UpBody>>),
    Inline(Request<UpBody>),
}

impl Unsent {
    /// The request, when it never left.
    pub fn take_message(&mut self) -> Option<Request<UpBody>> {
        match self {
            Unsent::Hyper(e) => e.take_message(),
            Unsent::Inline(_) => None,
        }
    }

    pub fn into_connect_error(self, addr: &str) -> ConnectError {
        match self {
            Unsent::Hyper(e) => ConnectError::Handshake(addr.to_string(), e.into_error()),
            Unsent::Inline(_) => {
                ConnectError::Io(addr.to_string(), std::io::Error::other(self_message()))
            }
        }
    }

    pub fn message(self) -> String {
        match self {
            Unsent::Hyper(e) => e.into_error().to_string(),
            Unsent::Inline(_) => self_message().into(),
        }
    }
}

/// A connection to one node, ready to send a request.
pub struct Conn {
    /// The pool key: the address, plus the TLS settings for encrypted transports.
    pub addr: String,
    pub tx: Sender,
    /// Requests already sent on it.
    pub uses: u32,
    /// Taken from the pool rather than just connected: it may have been closed by the
    /// node while idle, so an unsent request on it is retried on a fresh connection.
    pub reused: bool,
    /// How long it sat in the pool before this checkout.
    pub idle_for: Duration,
    idle_since: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {0} timed out")]
    Timeout(String),
    #[error("connect to {0}: {1}")]
    Io(String, std::io::Error),
    #[error("HTTP handshake with {0}: {1}")]
    Handshake(String, hyper::Error),
    #[error("TLS handshake with {0} (server name {1}): {2}")]
    Tls(String, String, std::io::Error),
    #[error("{0}: no valid TLS server name (set upstream_host or use a host name)")]
    NoServerName(String),
}

/// Idle connections, one shard per worker: a connection is driven by a task on the event
/// loop that opened it, so it is only handed to requests on that same loop, which keeps
/// every request on one thread (no cross-thread wake-ups) and the shards' locks uncontended.
pub struct Pool {
    shards: Box<[Mutex<Shard>]>,
}

/// Idle connections by pool key, most recently used last. The keys are node addresses
/// from configuration, never chosen by a client: a fast hash is enough.
type Shard = HashMap<String, Vec<Conn>, foldhash::fast::RandomState>;

impl Default for Pool {
    fn default() -> Self {
        Pool::new(1)
    }
}

impl Pool {
    pub fn new(shards: usize) -> Pool {
        Pool {
            shards: (0..shards.max(1)).map(|_| Mutex::default()).collect(),
        }
    }

    /// The calling worker's shard (threads outside the workers share the first).
    fn shard(&self) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[crate::workers::current() % self.shards.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle connection to `addr` that is still open and fresh.
    pub fn checkout(&self, addr: &str, settings: &PoolSettings) -> Option<Conn> {
        let mut idle = self.shard();
        let list = idle.get_mut(addr)?;
        while let Some(mut c) = list.pop() {
            let idle_for = c.idle_since.elapsed();
            if c.tx.is_closed_for_use() || idle_for >= settings.idle_timeout {
                continue;
            }
            c.reused = true;
            c.idle_for = idle_for;
            // An HTTP/2 connection stays in the pool for every other request meanwhile,
            // until it has carried `requests` of them (counted here, on the pooled one).
            if let Sender::Http2(tx) = &c.tx {
                c.uses += 1;
                if c.uses < settings.requests {
                    list.push(Conn {
                        addr: c.addr.clone(),
                        tx: Sender::Http2(tx.clone()),
                        uses: c.uses,
                        reused: false,
                        idle_for: Duration::ZERO,
                        idle_since: Instant::now(),
                    });
                }
            }
            return Some(c);
        }
        None
    }

    /// Returns a connection whose response has been read completely.
    pub fn checkin(&self, conn: Conn, settings: &PoolSettings) {
        if conn.tx.is_closed() || conn.uses >= settings.requests || settings.idle_timeout.is_zero()
        {
            return;
        }
        let mut idle = self.shard();
        // One lookup when the node has a list; the key is copied only the first time a
        // node's connection is pooled.
        let list = match idle.get_mut(&conn.addr) {
            Some(list) => list,
            None => idle.entry(conn.addr.clone()).or_default(),
        };
        // One live HTTP/2 connection per key is enough: it multiplexes.
        if matches!(conn.tx, Sender::Http2(_)) && list.iter().any(|c| !c.tx.is_closed()) {
            return;
        }
        if list.len() < settings.size {
            list.push(Conn {
                idle_since: Instant::now(),
                reused: false,
                ..conn
            });
        }
    }

    /// Drops idle connections that were closed by their node or outlived `max_idle`.
    pub fn sweep(&self, max_idle: Duration) {
        for shard in self.shards.iter() {
            let mut idle = shard.lock().unwrap_or_else(|p| p.into_inner());
            idle.retain(|_, list| {
                list.retain(|c| !c.tx.is_closed() && c.idle_since.elapsed() < max_idle);
                !list.is_empty()
            });
        }
    }

    pub fn idle_count(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let idle = shard.lock().unwrap_or_else(|p| p.into_inner());
                idle.values().map(Vec::len).sum::<usize>()
            })
            .sum()
    }
}

/// Opens a new connection to `addr` within `timeout`: TCP, then TLS when the transport
/// has it (checked against `name`), then the HTTP/1.1 or HTTP/2 handshake. With `inline`,
/// a plain HTTP/1.1 connection is left to [`h1_client`] (no handshake, no task).
pub async fn connect(
    addr: &str,
    key: &str,
    transport: &Transport,
    name: Option<&ServerName<'static>>,
    timeout: Duration,
    inline: bool,
) -> Result<Conn, ConnectError> {
    let started = tokio::time::Instant::now();
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout(addr.to_string())),
        Ok(Err(e)) => return Err(ConnectError::Io(addr.to_string(), e)),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let tx = match &transport.tls {
        None if inline && !transport.http2() => Sender::Inline(h1_client::Connection::new(stream)),
        None => handshake(addr, stream, transport.http2()).await?,
        Some(config) => {
            let name = name
                .cloned()
                .ok_or_else(|| ConnectError::NoServerName(addr.to_string()))?;
            let shown = name.to_str().into_owned();
            let left = timeout.saturating_sub(started.elapsed());
            let tls = tokio_rustls::TlsConnector::from(config.clone()).connect(name, stream);
            let stream = match tokio::time::timeout(left, tls).await {
                Err(_) => return Err(ConnectError::Timeout(addr.to_string())),
                Ok(Err(e)) => return Err(ConnectError::Tls(addr.to_string(), shown, e)),
                Ok(Ok(s)) => s,
            };
            handshake(addr, stream, transport.http2()).await?
        }
    };
    Ok(Conn {
        addr: key.to_string(),
        tx,
        uses: 0,
        reused: false,
        idle_for: Duration::ZERO,
        idle_since: Instant::now(),
    })
}

impl Conn {
    /// Hands an inline connection to hyper, for an upgrade or CONNECT.
    /// Bytes left unread from the previous response mean the node is out of step: the
    /// connection is refused as stale. The handshake writes nothing.
    pub async fn into_hyper(mut self) -> Result<Conn, ConnectError> {
        if let Sender::Inline(c) = self.tx {
            if !c.buf.is_empty() {
                let e = std::io::Error::other("unexpected bytes from the node");
                return Err(ConnectError::Io(self.addr, e));
            }
            self.tx = handshake(&self.addr, c.io, false).await?;
        }
        Ok(self)
    }
}

async fn handshake<I>(addr: &str, io: I, http2: bool) -> Result<Sender, ConnectError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = addr.to_string();
    let err = |e| ConnectError::Handshake(addr.to_string(), e);
    if http2 {
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .handshake(TokioIo::new(io))
            .await
            .map_err(err)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(upstream = %peer, error = %e, "upstream connection ended");
            }
        });
        Ok(Sender::Http2(tx))
    } else {
        let (tx, conn) = http1::Builder::new()
            .max_buf_size(h1_client::MAX_HEAD)
            .handshake(TokioIo::new(io))
            .await
            .map_err(err)?;
        // With upgrades: a WebSocket handshake hands the connection over to the tunnel.
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(upstream = %peer, error = %e, "upstream connection ended");
            }
        });
        Ok(Sender::Http1(tx))
    }
}
