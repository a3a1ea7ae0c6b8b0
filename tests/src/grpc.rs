//! A real tonic gRPC server for tests: unary and bidirectional streaming calls that echo,
//! name the server, and fail with a chosen status on request (with a custom trailer).
use futures_util::Stream;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status, Streaming};

pub mod proto {
    tonic::include_proto!("test.echo");
}

use proto::echo_server::{Echo, EchoServer};
use proto::{EchoReply, EchoRequest};

/// The trailer every failed call carries, to check trailers pass through untouched.
pub const TRAILER: &str = "x-failed-by";

struct Service {
    name: String,
    /// Client addresses of unary calls: one per connection the calls came on.
    peers: Arc<Mutex<HashSet<SocketAddr>>>,
}

fn failure(code: i32, name: &str) -> Status {
    let mut s = Status::new(
        tonic::Code::from(code),
        format!("failed as asked by {name}"),
    );
    if let Ok(v) = name.parse() {
        s.metadata_mut().insert(TRAILER, v);
    }
    s
}

#[tonic::async_trait]
impl Echo for Service {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        if let Some(peer) = req.remote_addr() {
            self.peers.lock().unwrap().insert(peer);
        }
        let req = req.into_inner();
        if req.fail_with != 0 {
            return Err(failure(req.fail_with, &self.name));
        }
        Ok(Response::new(EchoReply {
            message: req.message,
            served_by: self.name.clone(),
        }))
    }

    type ChatStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

    async fn chat(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let mut inbound = req.into_inner();
        let name = self.name.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                let item = if msg.fail_with != 0 {
                    Err(failure(msg.fail_with, &name))
                } else {
                    Ok(EchoReply {
                        message: msg.message,
                        served_by: name.clone(),
                    })
                };
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    return;
                }
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// A gRPC server (HTTP/2 in the clear) on a free loopback port, until dropped.
pub struct GrpcBackend {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    peers: Arc<Mutex<HashSet<SocketAddr>>>,
}

impl GrpcBackend {
    pub async fn start(name: &str) -> GrpcBackend {
        Self::start_limited(name, None).await
    }

    /// [`GrpcBackend::start`] allowing at most `streams` concurrent streams per
    /// connection (HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub async fn start_limited(name: &str, streams: Option<u32>) -> GrpcBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peers = Arc::default();
        let svc = EchoServer::new(Service {
            name: name.to_string(),
            peers: Arc::clone(&peers),
        });
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .max_concurrent_streams(streams)
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await;
        });
        GrpcBackend { addr, task, peers }
    }

    /// The same service over TLS (ALPN `h2`) with `tls`, for `grpcs` upstreams.
    pub async fn start_tls(name: &str, tls: std::sync::Arc<rustls::ServerConfig>) -> GrpcBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Served through hyper directly: calls carry no client address, none are counted.
        let peers = Arc::default();
        let routes = tonic::service::Routes::new(EchoServer::new(Service {
            name: name.to_string(),
            peers: Arc::clone(&peers),
        }));
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, routes) = (acceptor.clone(), routes.clone());
                conns.spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let mut routes = routes.clone();
                            async move {
                                use tonic::codegen::Service;
                                type Req = http::Request<hyper::body::Incoming>;
                                std::future::poll_fn(|cx| {
                                    Service::<Req>::poll_ready(&mut routes, cx)
                                })
                                .await?;
                                routes.call(req).await
                            }
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
                });
            }
        });
        GrpcBackend { addr, task, peers }
    }

    pub fn node(&self) -> String {
        self.addr.to_string()
    }

    /// Connections unary calls have come on so far (cleartext servers only).
    pub fn connections(&self) -> usize {
        self.peers.lock().unwrap().len()
    }
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}
