//! Keepalive connections to upstream nodes, kept beside the snapshots (keyed by address)
//! so a configuration change never drops them.
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

use crate::snapshot::PoolSettings;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type sent upstream: the client's body, streamed.
pub type UpBody = UnsyncBoxBody<Bytes, BoxError>;

/// A connection to one node, ready to send a request.
pub struct Conn {
    pub addr: String,
    pub tx: SendRequest<UpBody>,
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
}

#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<Conn>>>,
}

impl Pool {
    /// The most recently used idle connection to `addr` that is still open and fresh.
    pub fn checkout(&self, addr: &str, settings: &PoolSettings) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(addr)?;
        while let Some(mut c) = list.pop() {
            if c.tx.is_closed() || c.idle_since.elapsed() >= settings.idle_timeout {
                continue;
            }
            c.reused = true;
            c.idle_for = c.idle_since.elapsed();
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
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(conn.addr.clone()).or_default();
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
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|_, list| {
            list.retain(|c| !c.tx.is_closed() && c.idle_since.elapsed() < max_idle);
            !list.is_empty()
        });
    }

    pub fn idle_count(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.values().map(Vec::len).sum()
    }
}

/// Opens a new HTTP/1.1 connection to `addr` within `timeout`.
pub async fn connect(addr: &str, timeout: Duration) -> Result<Conn, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout(addr.to_string())),
        Ok(Err(e)) => return Err(ConnectError::Io(addr.to_string(), e)),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let (tx, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ConnectError::Handshake(addr.to_string(), e))?;
    let peer = addr.to_string();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(upstream = %peer, error = %e, "upstream connection ended");
        }
    });
    Ok(Conn {
        addr: addr.to_string(),
        tx,
        uses: 0,
        reused: false,
        idle_for: Duration::ZERO,
        idle_since: Instant::now(),
    })
}
