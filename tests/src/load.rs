//! Client load for fault tests: keepalive HTTP/1.1 clients that send `GET`s continuously
//! and never retry, so every request a fault costs is counted.
//!
//! The clients run on a thread and runtime of their own: a test may block its threads
//! (`etcdctl`, waiting for a process to exit) without pausing the load.
//!
//! ```no_run
//! # async fn demo(gw: &e2e::Gateway) {
//! let load = e2e::Load::start(&[gw.url("/r")], 8);
//! // ... the fault ...
//! let report = load.stop().await;
//! assert_eq!(report.failed, 0, "{report:?}");
//! # }
//! ```
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Pause between two requests of one client: a handful of clients then cannot saturate the
/// two cores the tests share, and each connection still carries a request most of the time.
const PAUSE: Duration = Duration::from_millis(2);

/// A request unanswered this long counts as failed, so a test always ends by itself. Long
/// enough for a gateway held with SIGSTOP for a few seconds to answer after SIGCONT.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How many failure messages a report keeps.
const KEPT_ERRORS: usize = 10;

/// What the clients saw. `failed` counts requests that got an error or a non-2xx status
/// (and connections that could not be opened); `reconnects` counts connections the server
/// closed between two requests, which cost nothing.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub ok: u64,
    pub failed: u64,
    pub reconnects: u64,
    /// The first failures, to explain a non-zero `failed`.
    pub errors: Vec<String>,
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    reconnects: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Counts {
    fn fail(&self, client: usize, what: String) {
        self.failed.fetch_add(1, Relaxed);
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < KEPT_ERRORS {
            errors.push(format!("client {client}: {what}"));
        }
    }

    fn report(&self) -> LoadReport {
        LoadReport {
            ok: self.ok.load(Relaxed),
            failed: self.failed.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            errors: self.errors.lock().unwrap().clone(),
        }
    }
}

/// Running clients; stopped (and their thread joined) by [`Load::stop`], or told to stop
/// when dropped.
pub struct Load {
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
    done: Option<tokio::sync::oneshot::Receiver<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
}

impl Target {
    /// `http://127.0.0.1:port/path`: loopback addresses only, no name resolution.
    fn parse(url: &str) -> Target {
        let uri: hyper::Uri = url.parse().unwrap_or_else(|e| panic!("{url}: {e}"));
        let authority = uri.authority().expect("the URL has host:port").as_str();
        Target {
            addr: authority
                .parse()
                .unwrap_or_else(|e| panic!("{url}: not an IP address and port: {e}")),
            host: authority.to_string(),
            path: uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .to_string(),
        }
    }
}

impl Load {
    /// Starts `clients` clients; client `i` sends to `urls[i % urls.len()]`, one request at
    /// a time on one keepalive connection, and opens a new one when the server closes it.
    pub fn start(urls: &[String], clients: usize) -> Load {
        assert!(!urls.is_empty() && clients > 0);
        let targets: Vec<Target> = urls.iter().map(|u| Target::parse(u)).collect();
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let thread = {
            let (counts, stop) = (counts.clone(), stop.clone());
            std::thread::Builder::new()
                .name("load".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async move {
                        let tasks: Vec<_> = (0..clients)
                            .map(|i| {
                                let target = targets[i % targets.len()].clone();
                                tokio::spawn(client(i, target, counts.clone(), stop.clone()))
                            })
                            .collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                    });
                    let _ = done_tx.send(());
                })
                .unwrap()
        };
        Load {
            counts,
            stop,
            done: Some(done),
            thread: Some(thread),
        }
    }

    /// The counts so far; the load goes on.
    pub fn report(&self) -> LoadReport {
        self.counts.report()
    }

    /// Requests answered with 2xx so far.
    pub fn ok(&self) -> u64 {
        self.counts.ok.load(Relaxed)
    }

    /// Waits until `n` more requests than now have succeeded (at most 20 s).
    pub async fn wait_more_ok(&self, n: u64) {
        let target = self.ok() + n;
        crate::eventually(
            Duration::from_secs(20),
            &format!("{n} more successful requests under load"),
            || async { self.ok() >= target },
        )
        .await;
    }

    /// Stops the clients after their current request and returns the final counts.
    pub async fn stop(mut self) -> LoadReport {
        self.stop.store(true, Relaxed);
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("the load thread panicked");
        }
        self.counts.report()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

async fn client(id: usize, target: Target, counts: Arc<Counts>, stop: Arc<AtomicBool>) {
    'connection: while !stop.load(Relaxed) {
        let stream = match tokio::time::timeout(
            REQUEST_TIMEOUT,
            tokio::net::TcpStream::connect(target.addr),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                counts.fail(id, format!("connect: {e}"));
                tokio::time::sleep(PAUSE).await;
                continue;
            }
            Err(_) => {
                counts.fail(id, "connect: timed out".into());
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut tx, conn) =
            match hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io).await {
                Ok(x) => x,
                Err(e) => {
                    counts.fail(id, format!("handshake: {e}"));
                    continue;
                }
            };
        tokio::spawn(conn);
        loop {
            if stop.load(Relaxed) {
                break 'connection;
            }
            // Fails only once the server has closed the connection with nothing in flight
            // (after a `Connection: close` response): nothing was lost, open another.
            if tx.ready().await.is_err() {
                counts.reconnects.fetch_add(1, Relaxed);
                continue 'connection;
            }
            let req = hyper::Request::get(target.path.as_str())
                .header(hyper::header::HOST, target.host.as_str())
                .body(Empty::new())
                .unwrap();
            let exchange = async {
                let resp = tx.send_request(req).await?;
                let status = resp.status();
                resp.into_body().collect().await?;
                Ok::<_, hyper::Error>(status)
            };
            match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
                Ok(Ok(status)) if status.is_success() => {
                    counts.ok.fetch_add(1, Relaxed);
                }
                Ok(Ok(status)) => counts.fail(id, format!("status {status}")),
                Ok(Err(e)) => {
                    counts.fail(id, format!("request: {e}"));
                    continue 'connection;
                }
                Err(_) => {
                    counts.fail(id, "request: timed out".into());
                    continue 'connection;
                }
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
}
