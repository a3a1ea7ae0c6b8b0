//! The client-facing listeners: HTTP/1.1 with keepalive and HTTP/2 with prior knowledge on
//! one port, the same over TLS (ALPN) on another, and the drain on shutdown that hands every client over to a replacement
//! process without losing a request.
//!
//! Shutdown runs in two steps, in this order:
//! 1. Stop accepting without resetting anyone: the connections the kernel already
//!    completed sit in this socket's accept queue, and closing the socket with them
//!    there would reset them. They are accepted (until `WouldBlock`) and served like any
//!    other, then the socket is closed; from then on new connections reach only the
//!    other processes listening on the port (`SO_REUSEPORT`).
//! 2. Tell every open connection to go, so that it reconnects to the replacement, never
//!    to the closing socket: HTTP/2 connections get GOAWAY and finish their streams;
//!    HTTP/1 connections answer their next request with `Connection: close`. An idle
//!    HTTP/1 connection cannot be closed without racing a request its client may be
//!    sending at that moment, so it is given [`KEEPALIVE_LINGER`] to send one before it
//!    is closed. Everything ends within the grace period.
//!
//! Idle connections are closed by one timer per connection (`idle_timer`): the first
//! request head must be complete within `--client-header-timeout` of accept, each later
//! one within `--keepalive-timeout` of the previous response's end; while a request is in
//! flight the timer waits. A worker keeps at most `--worker-connections` open.
use crate::client_body::ClientBody;
use crate::h1_server::{self, IdlePoint, Own};
use crate::park::{self, Park};
use crate::proxy::{self, ConnInfo};
use crate::send_timeout::SendTimeout;
use crate::Shared;
use http::{header, HeaderValue, Version};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// A client that has not finished its TLS handshake by then (or by the header timeout, if
/// shorter: it counts from accept) is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request head accepted; beyond it the client gets 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How long, once draining, an idle HTTP/1 keepalive connection waits for its client's next
/// request (answered with `Connection: close`) before it is closed; never longer than the
/// grace period. Clients that send within it lose nothing; shutdown takes at least this long
/// only while such connections are open.
pub const KEEPALIVE_LINGER: Duration = Duration::from_secs(1);

/// Binds with SO_REUSEPORT, so a replacement process can listen on the same port while
/// this one drains. Every listener of the gateway (HTTP, status, and HTTPS when it is
/// served) is bound here, so that all of them can be shared during a replacement.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::from_std(bind_std(addr)?)
}

/// [`bind`], before the socket is given to an event loop (workers take theirs on their own
/// thread).
pub fn bind_std(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// What a client connection may do, from the flags.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    /// `--client-send-timeout`: how long a write to the client may stall.
    pub send_timeout: Duration,
    /// `--client-header-timeout`: from accept to the first complete request head.
    pub header_timeout: Duration,
    /// `--keepalive-timeout`: from a response's end to the next complete request head.
    pub keepalive_timeout: Duration,
    /// `--worker-connections`: open client connections per worker, HTTP and HTTPS.
    pub max_connections: u64,
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // hyper's own header timeout is off: it starts only once HTTP/1 is detected (an idle
    // connection that sends nothing was never closed) and HTTP/2 has none; the idle timer
    // covers both, from accept.
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    b
}

/// Serves until `shutdown` turns true, then stops accepting (emptying the accept queue
/// first) and gives open connections `grace` to finish (see the module docs). With `tls`,
/// every connection starts with a TLS handshake.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    limits: ClientLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let (park, watcher) = match tls {
        Some(_) => (None, None),
        None => match Park::new() {
            Ok((p, w)) => (Some(p), Some(w)),
            Err(e) => {
                tracing::warn!(error = %e, "idle connections will stay in their tasks");
                (None, None)
            }
        },
    };
    let conns = Arc::new(Connections {
        shared,
        builder: builder(),
        local: listener.local_addr().ok(),
        draining: Arc::new(AtomicBool::new(false)),
        drain: watch::Sender::new(false),
        linger: grace.min(KEEPALIVE_LINGER),
        limits,
        tls: tls.map(TlsAcceptor::from),
        park,
    });
    if let Some(watcher) = watcher {
        // Holds the drain open until every parked connection is back in a task.
        let mut drain = conns.drain.subscribe();
        let conns = conns.clone();
        tokio::spawn(async move {
            if let Some(park) = &conns.park {
                park.watch(
                    watcher,
                    crate::stopped(&mut drain),
                    |stream, parked| conns.resume(stream, parked),
                    |parked| conns.expired(parked),
                )
                .await;
            }
        });
    }
    loop {
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::stopped(&mut shutdown) => break,
        };
        conns.spawn(stream, remote);
    }

    // Step 1: whatever the kernel already queued for us is ours to serve.
    let queued = accept_queued(listener, &conns);
    tracing::info!(
        grace = ?grace,
        queued,
        "stopped accepting; telling connections to go"
    );

    // Step 2: every connection is told to go and has `grace` to finish.
    conns.draining.store(true, Ordering::Relaxed);
    conns.drain.send_replace(true);
    let open = conns.drain.receiver_count();
    if tokio::time::timeout(grace, conns.drain.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            open = conns.drain.receiver_count(),
            "grace period over; closing the remaining connections"
        );
    } else {
        tracing::info!(drained = open, "every connection finished");
    }
}

/// Accepts what is already in the accept queue without waiting, serves it, and closes the
/// listening socket. Returns how many connections were taken from the queue.
fn accept_queued(listener: TcpListener, conns: &Arc<Connections>) -> usize {
    let listener = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot empty the accept queue; closing the listener");
            return 0;
        }
    };
    let mut queued = 0;
    loop {
        match listener.accept() {
            Ok((stream, remote)) => {
                queued += 1;
                let stream = stream
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(stream));
                match stream {
                    Ok(s) => conns.spawn(s, remote),
                    Err(e) => {
                        tracing::warn!(peer = %remote, error = %e, "cannot serve a queued connection")
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed while emptying the queue");
                break;
            }
        }
    }
    // `listener` is dropped here: the socket closes with an empty queue.
    queued
}

/// What every connection task shares: how to serve, and the drain signal.
struct Connections {
    shared: Arc<Shared>,
    builder: auto::Builder<TokioExecutor>,
    local: Option<SocketAddr>,
    /// Read by every response: once set, HTTP/1 responses carry `Connection: close`.
    draining: Arc<AtomicBool>,
    /// Turns true when draining starts; every connection task holds a receiver, so the
    /// drain is over when none is left.
    drain: watch::Sender<bool>,
    linger: Duration,
    limits: ClientLimits,
    /// Set on the HTTPS listener.
    tls: Option<TlsAcceptor>,
    /// Where idle plain-HTTP connections wait outside any task (`park`); none for HTTPS,
    /// whose TLS state is what an idle connection holds.
    park: Option<Park<Parked>>,
}

/// What a parked connection needs to be served again.
struct Parked {
    info: ConnInfo,
    slot: OpenSlot,
    /// Closed then, if its client has not sent.
    until: tokio::time::Instant,
    phase: IdlePhase,
    /// How long it waited idle before this park, and when it was parked: how long it waits
    /// before the next one follows from them (`park::next_park_after`).
    park_after: Duration,
    parked_at: tokio::time::Instant,
}

impl Connections {
    fn spawn(self: &Arc<Self>, stream: TcpStream, remote: SocketAddr) {
        let worker = crate::workers::current();
        self.shared.metrics.accepted(worker);
        if !self
            .shared
            .metrics
            .try_open(worker, self.limits.max_connections)
        {
            // Closed at once: a client learns now, rather than after a timeout, and the
            // worker keeps serving the connections it has.
            tracing::debug!(peer = %remote, worker, max = self.limits.max_connections, "worker_connections reached; connection closed");
            return;
        }
        let slot = Arc::new(OpenSlot {
            shared: self.shared.clone(),
            worker,
        });
        // From accept: the header timeout covers a TLS handshake too.
        let activity = Arc::new(Activity::new());
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok().or(self.local).unwrap_or(remote);
        // Below TLS, so that a stalled encrypted write counts too.
        let stream = SendTimeout::new(stream, self.limits.send_timeout);
        // Subscribed before the handshake: a drain waits for connections still in it.
        let drain = self.drain.subscribe();
        let conns = self.clone();
        match &self.tls {
            None => {
                let info = ConnInfo {
                    remote,
                    local,
                    scheme: "http",
                };
                tokio::spawn(conns.run_plain(stream, info, drain, slot, activity));
            }
            Some(acceptor) => {
                let info = ConnInfo {
                    remote,
                    local,
                    scheme: "https",
                };
                let handshake = acceptor.accept(stream);
                let within = TLS_HANDSHAKE_TIMEOUT.min(self.limits.header_timeout);
                tokio::spawn(async move {
                    match tokio::time::timeout(within, handshake).await {
                        Ok(Ok(tls)) => conns.run(tls, info, drain, slot, activity).await,
                        failed => {
                            conns
                                .shared
                                .metrics
                                .tls_handshake_failures
                                .fetch_add(1, Ordering::Relaxed);
                            let error = match failed {
                                Ok(Err(e)) => e.to_string(),
                                _ => "timed out".into(),
                            };
                            tracing::debug!(peer = %remote, error, "TLS handshake failed");
                        }
                    }
                });
            }
        }
    }

    /// A plain-TCP connection: the gateway's own HTTP/1.1 loop (`h1_server`) serves it
    /// until a request is not its own (HTTP/2, a body, an upgrade, anything it does not
    /// parse), and hyper serves the rest of it, from that request on.
    // Not an `async fn`: its arguments would be kept twice in the connection's future
    // (as arguments, and moved into locals), which every idle connection carries.
    #[allow(clippy::manual_async_fn)]
    fn run_plain(
        self: Arc<Self>,
        io: SendTimeout<TcpStream>,
        info: ConnInfo,
        mut drain: watch::Receiver<bool>,
        slot: Arc<OpenSlot>,
        activity: Arc<Activity>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        async move {
            let (mut io, mut slot) = (io, slot);
            // False once the park refused the connection (it stopped: the drain began).
            let mut may_park = self.park.is_some();
            let outcome = loop {
                let mut parking = None;
                let outcome = {
                    let conn = h1_server::Conn {
                        shared: &self.shared,
                        info: &info,
                        draining: &self.draining,
                        idle: &activity.idle,
                    };
                    let own = h1_server::serve(conn, || activity.begin(), io);
                    tokio::pin!(own);
                    let stopped = std::pin::pin!(crate::stopped(&mut drain));
                    let mut drained = gated(stopped, &self.draining);
                    let park_after = may_park.then_some(activity.park_after);
                    // Biased: the loop is polled first, so when the timer says "park", the
                    // loop was just seen waiting at its idle point, and its next poll leaves.
                    loop {
                        tokio::select! {
                            biased;
                            outcome = own.as_mut() => break outcome,
                            // Its next response says `Connection: close`; an idle connection
                            // has `linger` to send one more request, one in flight is
                            // finished. Boxed: once per connection at most, where its room
                            // inline would be in every idle connection's future.
                            () = &mut drained => break Box::pin(async {
                                match tokio::time::timeout(self.linger, own.as_mut()).await {
                                    Ok(outcome) => outcome,
                                    Err(_) if activity.in_flight.load(Ordering::Relaxed) > 0 => own.await,
                                    Err(_) => Own::Done,
                                }
                            }).await,
                            idled = idle_timer(&activity, self.limits.header_timeout, self.limits.keepalive_timeout, park_after) => match idled {
                                Idled::Close(phase) => {
                                    self.count_idle_close(info.remote, phase);
                                    break Own::Done;
                                }
                                Idled::Park(until, phase) => {
                                    parking = Some((until, phase));
                                    activity.idle.leave();
                                }
                            },
                        }
                    }
                };
                let (back, until, phase) = match (outcome, parking) {
                    (Own::Idle(back), Some((until, phase))) => (back, until, phase),
                    (outcome, _) => break outcome,
                };
                // Held inline while parked: a small allocation per parked connection
                // would keep the pages its task freed from going back to the system. Only
                // a WebSocket tunnel shares the slot, and those are hyper's connections.
                let owned = match Arc::try_unwrap(slot) {
                    Ok(owned) => owned,
                    Err(shared) => {
                        (may_park, io, slot) = (false, back, shared);
                        continue;
                    }
                };
                let parked = Parked {
                    info,
                    slot: owned,
                    until,
                    phase,
                    park_after: activity.park_after,
                    parked_at: tokio::time::Instant::now(),
                };
                match self.park(back, parked) {
                    Ok(()) => return,
                    Err((back, parked)) => {
                        // Served here until it ends: the drain gives it `linger`.
                        may_park = false;
                        (io, slot) = (back, Arc::new(parked.slot));
                    }
                }
            };
            if let Own::Unusual(io) = outcome {
                self.shared
                    .metrics
                    .http1_handovers
                    .fetch_add(1, Ordering::Relaxed);
                // Boxed: hyper's connection state is large, and idle connections of the own
                // loop should not carry room for it.
                Box::pin(self.run(io, info, drain, slot, activity)).await;
            }
        }
    }

    /// Moves an idle connection out of its task into the park; handed back when the park
    /// has stopped. A socket tokio cannot let go of is closed.
    #[allow(clippy::result_large_err)]
    fn park(
        &self,
        io: SendTimeout<TcpStream>,
        parked: Parked,
    ) -> Result<(), (SendTimeout<TcpStream>, Parked)> {
        let Some(park) = &self.park else {
            return Err((io, parked));
        };
        let until = parked.until;
        let stream = match io.into_inner().into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(peer = %parked.info.remote, error = %e, "cannot park a connection; closed");
                return Ok(());
            }
        };
        match park.park(stream, parked, until) {
            Ok(()) => {
                self.shared.metrics.parked.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err((stream, parked)) => match TcpStream::from_std(stream) {
                Ok(s) => Err((SendTimeout::new(s, self.limits.send_timeout), parked)),
                Err(e) => {
                    tracing::debug!(peer = %parked.info.remote, error = %e, "cannot take back a connection; closed");
                    Ok(())
                }
            },
        }
    }

    /// A parked connection whose client sent (or closed): served by a new task.
    fn resume(self: &Arc<Self>, stream: std::net::TcpStream, parked: Parked) {
        self.shared.metrics.parked.fetch_sub(1, Ordering::Relaxed);
        let stream = match TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(peer = %parked.info.remote, error = %e, "cannot resume a parked connection; closed");
                return;
            }
        };
        let limit = parked
            .phase
            .limit(self.limits.header_timeout, self.limits.keepalive_timeout);
        let park_after = park::next_park_after(parked.park_after, parked.parked_at.elapsed());
        let activity = Arc::new(Activity::resumed(
            parked.phase,
            parked.until,
            limit,
            park_after,
        ));
        let io = SendTimeout::new(stream, self.limits.send_timeout);
        let drain = self.drain.subscribe();
        tokio::spawn(self.clone().run_plain(
            io,
            parked.info,
            drain,
            Arc::new(parked.slot),
            activity,
        ));
    }

    /// A parked connection the park closed at its deadline.
    fn expired(&self, parked: Parked) {
        self.shared.metrics.parked.fetch_sub(1, Ordering::Relaxed);
        self.count_idle_close(parked.info.remote, parked.phase);
    }

    fn count_idle_close(&self, peer: SocketAddr, phase: IdlePhase) {
        let metrics = &self.shared.metrics;
        match phase {
            IdlePhase::Header => metrics.header_timeouts.fetch_add(1, Ordering::Relaxed),
            IdlePhase::Keepalive => metrics.keepalive_timeouts.fetch_add(1, Ordering::Relaxed),
        };
        tracing::debug!(peer = %peer, ?phase, "idle connection closed");
    }

    /// Serves one connection to its end (or the drain's, or the idle timer's).
    async fn run<I>(
        self: Arc<Self>,
        io: I,
        info: ConnInfo,
        mut drain: watch::Receiver<bool>,
        slot: Arc<OpenSlot>,
        activity: Arc<Activity>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let remote = info.remote;
        let http2 = Arc::new(AtomicBool::new(false));
        let svc = {
            let (shared, draining, http2) =
                (self.shared.clone(), self.draining.clone(), http2.clone());
            let conns = self.clone();
            let activity = activity.clone();
            service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                let (shared, draining) = (shared.clone(), draining.clone());
                let end = activity.begin();
                // A WebSocket tunnel keeps the drain waiting and its worker's connection
                // slot taken after its connection is done (subscribed only then, so the
                // drain's counts stay one per connection).
                if req.headers().contains_key(header::UPGRADE) {
                    let held = (conns.drain.subscribe(), slot.clone());
                    req.extensions_mut()
                        .insert(proxy::TunnelGuard(Arc::new(held)));
                }
                let http1 = req.version() < Version::HTTP_2;
                if !http1 {
                    http2.store(true, Ordering::Relaxed);
                }
                async move {
                    let mut resp =
                        proxy::handle(shared, info, req.map(ClientBody::Hyper), None, None).await;
                    // A 101 keeps its `Connection: upgrade`: the socket becomes a tunnel.
                    if http1
                        && draining.load(Ordering::Relaxed)
                        && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS
                    {
                        resp.headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    Ok::<_, std::convert::Infallible>(resp.map(|body| Tracked { body, _end: end }))
                }
            })
        };
        // With upgrades: a WebSocket handshake on a route that allows it turns the
        // connection into a tunnel (`proxy::tunnel`).
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), svc)
            .into_owned();
        let linger = self.linger;
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            idled = idle_timer(&activity, self.limits.header_timeout, self.limits.keepalive_timeout, None) => {
                if let Idled::Close(phase) = idled {
                    self.count_idle_close(remote, phase);
                }
                // Idle: HTTP/1 closes at once, HTTP/2 says GOAWAY first. A request that
                // arrived as the timer fired is answered, however long it takes.
                conn.as_mut().graceful_shutdown();
                match tokio::time::timeout(linger, conn.as_mut()).await {
                    Ok(r) => r,
                    Err(_) if activity.in_flight.load(Ordering::Relaxed) > 0 => conn.await,
                    Err(_) => Ok(()),
                }
            }
            _ = crate::stopped(&mut drain) => 'drained: {
                if !http2.load(Ordering::Relaxed) {
                    // HTTP/1 (or nothing read yet): its next response says
                    // `Connection: close`, after which it ends by itself.
                    if let Ok(r) = tokio::time::timeout(linger, conn.as_mut()).await {
                        break 'drained r;
                    }
                }
                // HTTP/2: GOAWAY, streams in flight finish. HTTP/1: closed if idle,
                // else after the response in flight.
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        self.log_end(remote, result);
        drop(drain);
    }

    /// Counts what hyper answered by itself (a request it could not parse never reaches
    /// the proxy) and logs the end of a connection that failed.
    fn log_end(
        &self,
        peer: SocketAddr,
        result: Result<(), Box<dyn std::error::Error + Send + Sync>>,
    ) {
        let Err(e) = result else { return };
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if let Some(code) = parser_answer(h) {
                self.shared.metrics.response(code);
            }
        }
        tracing::debug!(peer = %peer, error = %e, "client connection ended with an error");
    }
}

/// The status hyper's HTTP/1 parser answers by itself for this error, if any (hyper's
/// `Server::on_error`: 431 for a head too large, 414 for a target over 64 KiB, else 400).
fn parser_answer(e: &hyper::Error) -> Option<u16> {
    // hyper has no predicate for its URI-too-long kind, which `is_parse_too_large`
    // covers too; its message is stable.
    if e.is_parse_too_large() {
        Some(if e.to_string().contains("URI too long") {
            414
        } else {
            431
        })
    } else if e.is_parse() && !e.is_parse_version_h2() {
        Some(400)
    } else {
        None
    }
}

/// Holds one of its worker's `--worker-connections` while the connection lives.
struct OpenSlot {
    shared: Arc<Shared>,
    worker: usize,
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.shared.metrics.closed(self.worker);
    }
}

/// Requests in flight on one connection, and since when it has had none: what the idle
/// timer reads. Written by the requests (on this connection's worker thread).
struct Activity {
    opened: tokio::time::Instant,
    /// When this task took the connection: at accept, or back from the park. Parking
    /// counts idle time from here too, or a connection back from the park, whose idle
    /// time began before it was parked, would be parked again before it had been read.
    taken: tokio::time::Instant,
    in_flight: std::sync::atomic::AtomicUsize,
    any_request: AtomicBool,
    /// Milliseconds after `opened` when the last request in flight ended.
    idle_since_ms: std::sync::atomic::AtomicU64,
    /// Where the own loop waits idle, for parking.
    idle: IdlePoint,
    /// How long it waits there before it is parked.
    park_after: Duration,
}

impl Activity {
    fn new() -> Activity {
        let now = tokio::time::Instant::now();
        Activity {
            opened: now,
            taken: now,
            in_flight: Default::default(),
            any_request: AtomicBool::new(false),
            idle_since_ms: Default::default(),
            idle: IdlePoint::default(),
            park_after: park::PARK_AFTER,
        }
    }

    /// A connection back from the park: idle in `phase` since `until - limit`, so the
    /// idle timer closes it at `until` as before, and parked again after `park_after`.
    fn resumed(
        phase: IdlePhase,
        until: tokio::time::Instant,
        limit: Duration,
        park_after: Duration,
    ) -> Activity {
        let a = Activity::new();
        Activity {
            opened: until.checked_sub(limit).unwrap_or(a.opened),
            any_request: AtomicBool::new(phase == IdlePhase::Keepalive),
            park_after,
            ..a
        }
    }

    /// A request head arrived; the returned guard ends it when dropped (with its body).
    fn begin(self: &Arc<Self>) -> RequestEnd {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.any_request.store(true, Ordering::Relaxed);
        RequestEnd(self.clone())
    }
}

/// Dropped when a response has been sent (or abandoned): the connection may be idle again.
struct RequestEnd(Arc<Activity>);

impl Drop for RequestEnd {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = u64::try_from(a.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.idle_since_ms.store(ms, Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that ends its request when it is dropped: hyper drops it once the
/// body is sent (or the client is gone), so the keepalive timer starts from there.
struct Tracked {
    body: proxy::RespBody,
    _end: RequestEnd,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = crate::pool::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdlePhase {
    /// No request yet since accept.
    Header,
    /// Idle after a response.
    Keepalive,
}

impl IdlePhase {
    /// How long a connection may be idle in this phase.
    fn limit(self, header: Duration, keepalive: Duration) -> Duration {
        match self {
            IdlePhase::Header => header,
            IdlePhase::Keepalive => keepalive,
        }
    }
}

/// `stopped`, polled only once the drain has begun (and once before, to be woken by it).
/// A connection's task is woken several times for each request, and `select!` polls every
/// branch on each wake: the drain's watch cost ~400 instructions a request, for nothing.
/// `draining` is set before the drain's watch is sent, so the wake that the watch causes
/// finds it set.
fn gated<'a>(
    mut stopped: Pin<&'a mut (impl std::future::Future<Output = ()> + ?Sized)>,
    draining: &'a AtomicBool,
) -> impl std::future::Future<Output = ()> + 'a {
    let mut registered = false;
    std::future::poll_fn(move |cx| {
        if registered && !draining.load(Ordering::Relaxed) {
            return std::task::Poll::Pending;
        }
        registered = true;
        stopped.as_mut().poll(cx)
    })
}

/// What the idle timer decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idled {
    /// No request for the phase's limit: to be closed.
    Close(IdlePhase),
    /// Idle at the own loop's idle point for `park_after`, and to be closed at the deadline.
    Park(tokio::time::Instant, IdlePhase),
}

/// Resolves once the connection has had no request in flight for its limit: `header`
/// before its first request, `keepalive` after one. Never while a request is in flight.
/// With `park_after`, resolves earlier, once it has been idle that long (and waits at the
/// own loop's idle point; a client in the middle of a head is not parked).
// Not an `async fn`, so that its arguments are not kept twice in every connection's future.
#[allow(clippy::manual_async_fn)]
fn idle_timer(
    a: &Activity,
    header: Duration,
    keepalive: Duration,
    park_after: Option<Duration>,
) -> impl std::future::Future<Output = Idled> + '_ {
    async move {
        let mut recheck = 1u32;
        loop {
            let phase = if a.any_request.load(Ordering::Relaxed) {
                IdlePhase::Keepalive
            } else {
                IdlePhase::Header
            };
            let limit = phase.limit(header, keepalive);
            if a.in_flight.load(Ordering::Relaxed) > 0 {
                // A request in flight is never cut by this timer. On the own loop (the only
                // one that parks) a request ends inside the loop's poll, which the biased
                // `select!` makes just before this one: looked at again on the task's next
                // wake, with no timer. Hyper's requests end wherever hyper drops them:
                // looked at again after `limit`.
                if park_after.is_some() {
                    std::future::poll_fn(|_| match a.in_flight.load(Ordering::Relaxed) {
                        0 => std::task::Poll::Ready(()),
                        _ => std::task::Poll::Pending,
                    })
                    .await;
                } else {
                    tokio::time::sleep(limit).await;
                }
                continue;
            }
            let idle_from =
                a.opened + Duration::from_millis(a.idle_since_ms.load(Ordering::Relaxed));
            let deadline = idle_from + limit;
            let now = tokio::time::Instant::now();
            if deadline <= now {
                return Idled::Close(phase);
            }
            let mut wake = deadline;
            if let Some(after) = park_after {
                let park_at = idle_from.max(a.taken) + after;
                if park_at >= deadline {
                    // Closed before it would be parked.
                } else if park_at > now {
                    wake = park_at;
                } else if a.idle.waiting() {
                    return Idled::Park(deadline, phase);
                } else {
                    // A head is arriving: looked at again later, by when its request has
                    // usually moved the idle start on; each time later, for a client that
                    // trickles one.
                    wake = deadline.min(now + after * recheck);
                    recheck = recheck.saturating_mul(2);
                }
            }
            tokio::time::sleep_until(wake).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_idle_timer_parks_a_connection_waiting_idle_before_closing_it() {
        use IdlePhase::{Header, Keepalive};
        let (s, ms) = (Duration::from_secs, Duration::from_millis);
        // Parked after a second: (case, a request ended at the start, waiting at the idle
        // point, header limit, keepalive limit, when it resolves, parked with a deadline
        // this far from the start (else closed), the phase)
        let cases = [
            (
                "no head yet",
                false,
                true,
                s(10),
                s(60),
                s(1),
                Some(s(10)),
                Header,
            ),
            (
                "after a response",
                true,
                true,
                s(10),
                s(60),
                s(1),
                Some(s(60)),
                Keepalive,
            ),
            (
                "a head arriving",
                true,
                false,
                s(10),
                s(60),
                s(60),
                None,
                Keepalive,
            ),
            (
                "a head arriving, closed",
                true,
                false,
                s(10),
                ms(2500),
                ms(2500),
                None,
                Keepalive,
            ),
            (
                "no head arriving",
                false,
                false,
                s(10),
                s(60),
                s(10),
                None,
                Header,
            ),
            (
                "closed before a park",
                true,
                true,
                s(10),
                ms(500),
                ms(500),
                None,
                Keepalive,
            ),
            (
                "closed at the park",
                true,
                true,
                s(10),
                s(1),
                s(1),
                None,
                Keepalive,
            ),
        ];
        for (case, request, waiting, header, keepalive, after, parked, phase) in cases {
            let a = Arc::new(Activity::new());
            if request {
                drop(a.begin());
            }
            a.idle.set_waiting(waiting);
            let t0 = tokio::time::Instant::now();
            let got = idle_timer(&a, header, keepalive, Some(s(1))).await;
            assert_eq!(t0.elapsed(), after, "{case}");
            let want = match parked {
                Some(limit) => Idled::Park(t0 + limit, phase),
                None => Idled::Close(phase),
            };
            assert_eq!(got, want, "{case}");
        }

        // A head that arrives slowly across the moment to park: parked once the request it
        // makes has ended and the connection has been idle for `park_after` again.
        let a = Arc::new(Activity::new());
        drop(a.begin());
        let t0 = tokio::time::Instant::now();
        let timer = tokio::spawn({
            let a = a.clone();
            async move { idle_timer(&a, s(10), s(60), Some(s(1))).await }
        });
        tokio::time::sleep(ms(2500)).await;
        let end = a.begin();
        tokio::time::sleep(ms(200)).await;
        drop(end);
        let ended = tokio::time::Instant::now();
        a.idle.set_waiting(true);
        assert_eq!(timer.await.unwrap(), Idled::Park(ended + s(60), Keepalive));
        let parked_after = ended.elapsed();
        assert!(
            parked_after >= s(1) && parked_after <= s(2),
            "{parked_after:?}"
        );
        assert!(t0.elapsed() < s(5));

        // Back from the park 30 s before its deadline: closed at that deadline, and parked
        // again only after being idle a whole `PARK_AFTER` in its new task.
        for (waiting, after, want) in [(true, park::PARK_AFTER, "park"), (false, s(30), "close")] {
            let until = tokio::time::Instant::now() + s(30);
            let a = Activity::resumed(Keepalive, until, s(60), park::PARK_AFTER);
            a.idle.set_waiting(waiting);
            let t0 = tokio::time::Instant::now();
            let got = idle_timer(&a, s(10), s(60), Some(park::PARK_AFTER)).await;
            assert_eq!(t0.elapsed(), after, "{want}");
            let expected = match want {
                "park" => Idled::Park(until, Keepalive),
                _ => Idled::Close(Keepalive),
            };
            assert_eq!(got, expected);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_timer_waits_for_requests_and_restarts_after_each() {
        let header = Duration::from_secs(10);
        let keepalive = Duration::from_secs(60);
        let a = Arc::new(Activity::new());
        // Nothing ever sent: closed after the header timeout.
        let t0 = tokio::time::Instant::now();
        assert_eq!(
            idle_timer(&a, header, keepalive, None).await,
            Idled::Close(IdlePhase::Header)
        );
        assert_eq!(t0.elapsed(), header);

        // A request that lasts 5 minutes is never cut; the keepalive limit starts at its end.
        let a = Arc::new(Activity::new());
        let end = a.begin();
        let timer = tokio::spawn({
            let a = a.clone();
            async move { idle_timer(&a, header, keepalive, None).await }
        });
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(!timer.is_finished(), "closed while a request was in flight");
        drop(end);
        let ended = tokio::time::Instant::now();
        assert_eq!(timer.await.unwrap(), Idled::Close(IdlePhase::Keepalive));
        let idle = ended.elapsed();
        assert!(idle >= keepalive && idle <= keepalive + header, "{idle:?}");

        // Requests every 30 s keep it open; the limit counts from the last one's end.
        let a = Arc::new(Activity::new());
        drop(a.begin());
        let timer = tokio::spawn({
            let a = a.clone();
            async move { idle_timer(&a, header, keepalive, None).await }
        });
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(30)).await;
            assert!(!timer.is_finished());
            drop(a.begin());
        }
        let last = tokio::time::Instant::now();
        assert_eq!(timer.await.unwrap(), Idled::Close(IdlePhase::Keepalive));
        assert_eq!(last.elapsed(), keepalive);
    }
}
