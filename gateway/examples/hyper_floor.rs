//! The floor of any proxy built on hyper, for `bench/hyper-floor.sh`: the least a hyper
//! HTTP/1.1 server (and a server plus a pooled hyper client) can cost per request, with no
//! routing, no header rewriting and no configuration. Whatever the gateway adds on top is
//! ours to optimise; what this costs is the design card's HTTP library.
//!
//!   hyper_floor serve LISTEN             answers every request with `ok`
//!   hyper_floor proxy LISTEN UPSTREAM    forwards every request to UPSTREAM over pooled
//!                                        keepalive connections, streaming both bodies
use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};

type Body = UnsyncBoxBody<Bytes, hyper::Error>;
type Pool = Arc<Mutex<Vec<SendRequest<Incoming>>>>;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, listen) = match args.as_slice() {
        [mode, listen, ..] => (mode.as_str(), listen.as_str()),
        _ => usage(),
    };
    let upstream = match (mode, args.get(2)) {
        ("serve", None) => None,
        ("proxy", Some(u)) => Some(u.clone()),
        _ => usage(),
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hyper_floor: cannot listen on {listen}: {e}");
            std::process::exit(1)
        }
    };
    let pool: Pool = Arc::default();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let upstream = upstream.clone();
        let pool = pool.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let upstream = upstream.clone();
                let pool = pool.clone();
                async move {
                    match upstream {
                        None => Ok::<_, hyper::Error>(Response::new(
                            Full::new(Bytes::from_static(b"ok"))
                                .map_err(|e| match e {})
                                .boxed_unsync(),
                        )),
                        Some(u) => forward(&u, &pool, req).await,
                    }
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    upstream: &str,
    pool: &Pool,
    req: Request<Incoming>,
) -> Result<Response<Body>, hyper::Error> {
    let pooled = pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
    let mut tx = match pooled {
        Some(tx) if !tx.is_closed() => tx,
        _ => {
            let Ok(stream) = TcpStream::connect(upstream).await else {
                let mut resp = Response::new(Body::default());
                *resp.status_mut() = hyper::StatusCode::BAD_GATEWAY;
                return Ok(resp);
            };
            let _ = stream.set_nodelay(true);
            let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            tx
        }
    };
    tx.ready().await?;
    let resp = tx.send_request(req).await?;
    // Back to the pool once the response head is in: hyper queues the next request until
    // this body has been read, as a real proxy's pool would after the body ends.
    pool.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
    Ok(resp.map(|b| b.boxed_unsync()))
}

fn usage() -> ! {
    eprintln!("usage: hyper_floor serve LISTEN | hyper_floor proxy LISTEN UPSTREAM");
    std::process::exit(2)
}
