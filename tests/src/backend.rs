//! A real HTTP/1.1 upstream for tests: answers every request with a JSON echo of what it
//! received and its own name, and counts requests.
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    hits: Arc<AtomicU64>,
    /// Milliseconds to wait before answering; changeable while running.
    delay_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone, Default)]
pub struct BackendOptions {
    /// Delay before answering (to provoke read timeouts).
    pub delay: Option<Duration>,
    /// Close the connection, unanswered, when the second request arrives on it — what a
    /// node does when its keepalive timeout fires just as a pooled connection is reused.
    pub drop_second_request: bool,
    /// Answer every request with this status instead of 200 (a failing node).
    pub status: Option<u16>,
    /// Serve HTTPS with this configuration (see [`crate::tls::server_config`]).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Self::start_with(name, BackendOptions::default()).await
    }

    /// A backend that waits `delay` before each answer (changeable with `set_delay`).
    pub async fn start_delayed(name: &str, delay: Duration) -> Backend {
        let opts = BackendOptions {
            delay: Some(delay),
            ..Default::default()
        };
        Self::start_with(name, opts).await
    }

    pub async fn start_with(name: &str, opts: BackendOptions) -> Backend {
        Self::start_on("127.0.0.1:0".parse().unwrap(), name, opts).await
    }

    pub async fn start_on(addr: SocketAddr, name: &str, opts: BackendOptions) -> Backend {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let delay_ms = Arc::new(AtomicU64::new(
            opts.delay.map_or(0, |d| d.as_millis() as u64),
        ));
        let (n, h, dl) = (name.to_string(), hits.clone(), delay_ms.clone());
        let task = tokio::spawn(async move {
            // Connections live in this set: stopping the backend closes them too, as a
            // process that dies would.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let (stream, peer) = tokio::select! {
                    r = listener.accept() => match r {
                        Ok(x) => x,
                        Err(_) => continue,
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                };
                let (n, h, opts, dl) = (n.clone(), h.clone(), opts.clone(), dl.clone());
                let on_conn = Arc::new(AtomicU64::new(0));
                let tls = opts.tls.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (n, h, opts, dl) = (n.clone(), h.clone(), opts.clone(), dl.clone());
                        let nth = on_conn.fetch_add(1, Ordering::Relaxed) + 1;
                        async move {
                            if opts.drop_second_request && nth == 2 {
                                return Err(std::io::Error::other("dropping the connection"));
                            }
                            h.fetch_add(1, Ordering::Relaxed);
                            let delay = dl.load(Ordering::Relaxed);
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            let mut resp = echo(&n, peer, req).await;
                            if let Some(code) = opts.status {
                                *resp.status_mut() =
                                    hyper::StatusCode::from_u16(code).unwrap_or_default();
                            }
                            Ok::<_, std::io::Error>(resp)
                        }
                    });
                    let http1 = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = http1.serve_connection(io, svc).await;
                        }
                        Some(config) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(config);
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let io = hyper_util::rt::TokioIo::new(stream);
                                let _ = http1.serve_connection(io, svc).await;
                            }
                        }
                    }
                });
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            hits,
            delay_ms,
            task,
        }
    }

    /// From now on, wait `d` before answering.
    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// `"127.0.0.1:port"`, as an upstream node key.
    pub fn node(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(name: &str, peer: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).to_string()),
            )
        })
        .collect();
    let json = serde_json::json!({
        "backend": name,
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "headers": headers,
        "peer": peer.to_string(),
        "body": String::from_utf8_lossy(&body),
    });
    Response::builder()
        .header("content-type", "application/json")
        .header("x-backend", name)
        .body(Full::new(Bytes::from(json.to_string())))
        .unwrap()
}
