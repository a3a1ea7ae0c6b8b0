//! The request path: load the current snapshot once, match a route, forward to a node.
//! No lock on configuration, no etcd, no await on the control plane in here.
use crate::client_body::ClientBody;
use crate::client_head::ClientHead;
use crate::client_request;
use crate::h1_client::{self, Decoder, Verbatim};
use crate::headers::{join_cookies, strip_hop_by_hop, Forwarded, ForwardedHeaders};
use crate::lb::health::Outcome;
use crate::lb::InFlightGuard;
use crate::plugins::{Ran, Req};
use crate::pool::{connect, BoxError, Conn, ConnectError, Sender, UpBody};
use crate::request_body::{ClientFault, Progress, RequestBody};
use crate::request_vars::RequestVars;
use crate::router;
use crate::snapshot::{NodeRt, RouteTarget, UpstreamRt};
use crate::upstream_body::{Inner, UpstreamBody};
use crate::Shared;
use bytes::Bytes;
use http::header::{CONNECTION, HOST, TE, UPGRADE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use model::upstream::PassHost;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

pub type RespBody = UnsyncBoxBody<Bytes, BoxError>;

/// nginx's status for a client that closed the connection before the answer: logged and
/// counted, never seen by the client.
pub const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(s) => s,
    Err(_) => StatusCode::BAD_REQUEST,
};

/// The client side of a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub scheme: &'static str,
}

/// What a client connection holds that its WebSocket tunnel must hold too, since the tunnel
/// outlives the connection's HTTP exchange (`server.rs` puts it on handshake requests): the
/// drain waits for it, and it still counts against `--worker-connections`. Opaque here.
#[derive(Clone)]
pub struct TunnelGuard(pub Arc<dyn Send + Sync>);

/// The client's side of an allowed WebSocket handshake.
struct ClientSide {
    on: OnUpgrade,
    guard: Option<TunnelGuard>,
    /// What the plugins hold until the exchange ends (`limit-conn` slots): a tunnel's
    /// exchange ends when it closes.
    held: Vec<Arc<dyn Send + Sync>>,
}

/// How many stale pooled connections one request may discard before connecting anew.
const MAX_STALE_RETRIES: usize = 3;

/// Answers one request. `verbatim`: where the caller (the own HTTP/1.1 loop, which writes
/// responses itself) takes a response head whose header lines came as the node wrote
/// them; such a response's header map is empty. Only requests that no plugin and no
/// access log see are answered so.
// Not an `async fn`: its arguments would be kept twice in the future (as arguments and
// as the locals they are moved into), and this future is part of every request's.
#[allow(clippy::manual_async_fn)]
pub fn handle(
    shared: Arc<Shared>,
    conn: ConnInfo,
    req: Request<ClientBody>,
    raw: Option<ClientHead>,
    verbatim: Option<&OnceLock<Verbatim>>,
) -> impl std::future::Future<Output = Response<RespBody>> + Send + '_ {
    async move {
        let grpc = is_grpc(&req);
        // Only when the access log is on: what it needs of the request, before it is consumed.
        let mut entry = shared.access_log.as_ref().map(|_| {
            (
                Box::new(log_entry(&req, raw.as_ref(), conn)),
                Instant::now(),
            )
        });
        let mut unanswered = Unanswered(Some(&shared.metrics));
        let log = entry.as_mut().map(|(e, _)| &mut **e);
        let resp = match route_and_forward(&shared, conn, req, raw, grpc, log, verbatim).await {
            Ok(r) => r,
            // gRPC clients read a status from trailers, not an HTTP error page.
            Err(e) if grpc => e.into_grpc_response(),
            Err(e) => e.into_response(),
        };
        unanswered.0 = None;
        shared.metrics.response(resp.status().as_u16());
        if let (Some(log), Some((mut e, started))) = (&shared.access_log, entry) {
            finish_entry(&mut e, &resp, verbatim.and_then(OnceLock::get), started);
            log.log(*e);
        }
        resp
    }
}

/// The request's part of its access log entry.
fn log_entry(
    req: &Request<ClientBody>,
    raw: Option<&ClientHead>,
    conn: ConnInfo,
) -> crate::access_log::Entry {
    let header = |name: http::header::HeaderName| match raw {
        Some(raw) => raw.first(name.as_str()).map(str::to_string),
        None => req
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    crate::access_log::Entry {
        remote: Some(conn.remote),
        time: Some(std::time::SystemTime::now()),
        method: req.method().as_str().to_string(),
        request_uri: req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().to_string(), |pq| pq.as_str().to_string()),
        protocol: match req.version() {
            Version::HTTP_10 => "HTTP/1.0",
            Version::HTTP_2 => "HTTP/2.0",
            _ => "HTTP/1.1",
        },
        host: header(HOST).unwrap_or_else(|| req.uri().host().unwrap_or_default().to_string()),
        referer: header(http::header::REFERER),
        user_agent: header(http::header::USER_AGENT),
        ..Default::default()
    }
}

/// The response's part: status, size when known, timings, what the upstream said.
fn finish_entry(
    e: &mut crate::access_log::Entry,
    resp: &Response<RespBody>,
    verbatim: Option<&Verbatim>,
    started: Instant,
) {
    e.status = resp.status().as_u16();
    e.body_bytes_sent = resp.body().size_hint().exact();
    e.request_time = started.elapsed().as_secs_f64();
    let request_id = match verbatim {
        Some(v) => v.header(b"x-request-id"),
        None => resp
            .headers()
            .get("x-request-id")
            .map(HeaderValue::as_bytes),
    };
    e.request_id = request_id
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_string);
}

/// What the access log and the log-phase plugins need of the node that answered; kept
/// only when one of them is on.
#[derive(Clone)]
struct UpstreamSeen {
    addr: Arc<str>,
    /// The node's metrics label.
    label: Arc<str>,
    status: u16,
    took: Duration,
}

/// Counts a request whose handling was dropped before it had an answer as 499: hyper drops
/// it when its HTTP/2 stream is reset, by the client or by h2 for a malformed stream (DATA
/// beyond `content-length`), so that every request shows up in the status counts.
struct Unanswered<'a>(Option<&'a crate::metrics::Metrics>);

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if let Some(m) = self.0 {
            m.response(499);
        }
    }
}

/// Every way a request can fail before an upstream answers; `into_response` is the one
/// place that turns them into HTTP, without leaking internals, and
/// [`ProxyError::node_outcome`] the one place that decides what counts against a node.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("400 Bad Request: {0}")]
    BadRequest(&'static str),
    /// The client's body was badly framed (chunked), so it cannot be forwarded.
    #[error("400 Bad Request: invalid request body framing")]
    BadBody,
    #[error("404 Route Not Found")]
    NoRoute,
    #[error("413 Request Entity Too Large: the body is larger than {0} bytes")]
    TooLarge(u64),
    #[error("414 Request-URI Too Large")]
    UriTooLong,
    /// The client went away before its request body was complete (nginx logs 499).
    #[error("499 Client Closed Request")]
    ClientAborted,
    #[error("501 Not Implemented: {0}")]
    NotImplemented(&'static str),
    #[error("503 Service Unavailable: {0}")]
    Unavailable(String),
    #[error("502 Bad Gateway: {0}")]
    BadGateway(String),
    #[error("504 Gateway Timeout: {0}")]
    Timeout(String),
    #[error("408 Request Timeout: the request body stopped arriving")]
    ClientTimeout,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::BadBody => StatusCode::BAD_REQUEST,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::ClientAborted => CLIENT_CLOSED_REQUEST,
            ProxyError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// What this failure says about the node it happened on, for passive health checks:
    /// only the node's own failures count. A client's bad, stalled, oversized or aborted
    /// body says nothing about the node, and must not let a client eject healthy nodes.
    pub fn node_outcome(&self) -> Option<Outcome> {
        match self {
            ProxyError::Timeout(_) => Some(Outcome::Timeout),
            ProxyError::BadGateway(_) => Some(Outcome::TcpFailure),
            _ => None,
        }
    }

    pub fn into_response(self) -> Response<RespBody> {
        json_response(self.status(), &self.to_string())
    }

    /// A trailers-only gRPC answer (HTTP 200, `grpc-status`, `grpc-message`), with the
    /// gRPC code a client would infer from the HTTP status (gRPC's
    /// `http-grpc-status-mapping`), so it reports "unavailable" rather than a protocol
    /// error.
    pub fn into_grpc_response(self) -> Response<RespBody> {
        let code = grpc_code(self.status().as_u16());
        let mut resp = Response::new(full(Bytes::new()));
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from(code));
        if let Ok(v) = HeaderValue::from_str(&grpc_percent_encode(&self.to_string())) {
            h.insert("grpc-message", v);
        }
        resp
    }
}

/// gRPC's mapping of HTTP statuses to codes, as clients apply it.
fn grpc_code(http: u16) -> u16 {
    match http {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => 2,                      // UNKNOWN
    }
}

/// `grpc-message` is percent-encoded outside printable ASCII (and `%` itself).
fn grpc_percent_encode(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for b in msg.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| crate::headers::is_grpc_content_type(v.as_bytes()))
}

pub fn json_response(status: StatusCode, msg: &str) -> Response<RespBody> {
    let body = serde_json::json!({ "error_msg": msg }).to_string();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub fn full(s: impl Into<Bytes>) -> RespBody {
    Full::new(s.into()).map_err(|e| match e {}).boxed_unsync()
}

// Not an `async fn`: its arguments would be kept twice in the future (as arguments and
// as the locals they are moved into), and this future is part of every request's.
#[allow(clippy::manual_async_fn)]
fn route_and_forward<'a>(
    shared: &'a Arc<Shared>,
    conn: ConnInfo,
    req: Request<ClientBody>,
    mut raw: Option<ClientHead>,
    grpc: bool,
    mut log: Option<&'a mut crate::access_log::Entry>,
    verbatim: Option<&'a OnceLock<Verbatim>>,
) -> impl std::future::Future<Output = Result<Response<RespBody>, ProxyError>> + Send + 'a {
    async move {
        let (mut parts, body) = req.into_parts();
        let request_host = match &raw {
            // The own loop took no transfer coding.
            Some(head) => client_request::request_host_of(head)?,
            None => {
                client_request::check_framing(&parts.headers)?;
                client_request::request_host(&parts)?
            }
        };
        // What is matched is what the node gets: the normalised path.
        if let Some(pq) = client_request::normalized_target(&parts.uri)? {
            parts.uri = Uri::from(pq);
        }
        let mut ran = Ran::default();
        // The log-phase plugins (`prometheus`, `http-logger`) time the whole request: the
        // clock is read only once a chain with one of them exists in this process, and the
        // rest of what they need only for requests whose chains have them (`decide`).
        let started = crate::plugins::log_phase_seen().then(Instant::now);
        let mut measure = None;
        let mut matched = None;
        // Routing and the plugins' request phases are synchronous: done here, so that only
        // the waits below are states of this future (a nested future would be moved, parts
        // and all, on every request).
        let mut decision = decide(
            shared,
            conn,
            &mut parts,
            &mut raw,
            request_host.name(),
            &mut ran,
            Seen {
                log: log.as_deref_mut(),
                matched: &mut matched,
                measure: started.map(|at| (at, &mut measure, body.size_hint().exact())),
            },
        );
        // A count kept in Redis: a rejection stands in for anything else decided, and is
        // answered at once, as a local one is.
        let mut refused = false;
        if ran.has_deferred() {
            if let Some(answer) = ran.settle().await {
                decision = Ok(Err(answer));
                refused = true;
            }
        }
        // `fault-injection.delay` and `limit-req`'s wait, with the snapshot released.
        if let Some(delay) = ran.delay().filter(|_| !refused) {
            tokio::time::sleep(delay).await;
        }
        let mut upstream_seen = None;
        // No plugin reads or changes the response's headers (the access log reads them
        // verbatim: `finish_entry`).
        let verbatim = verbatim.filter(|_| ran.is_empty());
        let result = match decision {
            Ok(Ok((target, upstream))) => 'forwarded: {
                // In a block of its own: a result kept in a local to the end of this arm
                // (~600 bytes) would be room in this future's state across the wait below.
                let (upstream, req, mut exchange) = {
                    let prepared = prepare_forward(
                        shared,
                        conn,
                        parts,
                        raw,
                        body,
                        request_host.header,
                        &target,
                        upstream,
                        &ran,
                    );
                    match prepared {
                        Ok(p) => p,
                        Err(e) => break 'forwarded Err(e),
                    }
                };
                exchange.verbatim = verbatim;
                let r = forward(shared, &upstream, req, &exchange).await;
                upstream_seen = exchange
                    .seen
                    .into_inner()
                    .unwrap_or_else(|p| p.into_inner());
                r
            }
            Ok(Err(answer)) if answer.exposition => Ok(exposition(shared, answer)),
            Ok(Err(answer)) => Ok(answer.into_response()),
            Err(e) => Err(e),
        };
        if let Some(e) = log {
            if let Some(up) = &upstream_seen {
                e.upstream_addr = Some(up.addr.to_string());
                e.upstream_status = Some(up.status);
                e.upstream_response_time = Some(up.took.as_secs_f64());
            }
            e.consumer_name = ran.consumer().map(|c| c.username.clone());
        }
        if ran.is_empty() {
            return result;
        }
        // What the upstream said, as nginx's `$upstream_status` has it: its own status, or
        // 502/504 when it failed; nothing when a plugin answered or no upstream was reached.
        let upstream_status = match &result {
            Ok(r) if !ran.answered() => Some(r.status().as_u16()),
            Err(e) if e.node_outcome().is_some() => Some(e.status().as_u16()),
            _ => None,
        };
        if let Some(status) = upstream_status {
            ran.set_upstream_status(status);
        }
        // Whatever answers the client (a plugin, the upstream, an error), the plugins that
        // ran see its headers.
        let mut resp = match result {
            Ok(r) => r,
            Err(e) if grpc => e.into_grpc_response(),
            Err(e) => e.into_response(),
        };
        ran.response(&mut resp);
        // The log phase: what records the request once its response is over.
        if let Some(measure) = measure {
            let mut metrics = None;
            if let Some(conf) = ran.prometheus() {
                metrics = Some(prometheus_recording(
                    shared,
                    &resp,
                    &ran,
                    conf,
                    matched.as_deref(),
                    &measure,
                    upstream_seen.as_ref(),
                ));
            }
            let seen = upstream_seen.as_ref();
            let finished = crate::plugins::http_logger::Finished {
                status: resp.status().as_u16(),
                headers: resp.headers(),
                upstream: seen.map(|s| &*s.addr),
                upstream_status: seen.map(|s| s.status),
                upstream_ms: seen.map(|s| s.took.as_secs_f64() * 1e3),
                started: measure.0.into_std(),
                request_len: measure.1,
                head_len: crate::response_end::head_len(&resp),
            };
            let logs = ran
                .take_logs()
                .map(|draft| draft.on_end(&finished))
                .collect();
            resp = crate::response_end::on_end(resp, metrics, logs);
        }
        // A `limit-conn` slot is given back when the response has been sent (or dropped).
        Ok(crate::held_body::hold(resp, ran.held()))
    }
}

/// The `public-api` answer: every metric, as the status listener serves them.
fn exposition(shared: &Shared, answer: crate::plugins::Answer) -> Response<RespBody> {
    let mut resp = answer.into_response();
    *resp.body_mut() = full(crate::status::exposition(shared));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(prometheus_client::encoding::prometheus_text::CONTENT_TYPE),
    );
    resp
}

/// What counts `resp` in the `apisix_*` metrics once its body is done.
fn prometheus_recording(
    shared: &Shared,
    resp: &Response<RespBody>,
    ran: &Ran,
    conf: model::plugins::prometheus::Prometheus,
    route: Option<&RouteTarget>,
    (started, ingress, matched): &Measure,
    seen: Option<&UpstreamSeen>,
) -> crate::prometheus::Recording {
    let owner = crate::prometheus::Owner {
        route: route.map(|r| r.labels.clone()),
        matched: *matched,
        prefer_name: conf.prefer_name,
        consumer: ran.consumer_arc(),
        node: seen.map(|s| s.label.clone()),
    };
    let obs = crate::prometheus::Observation {
        status: resp.status().as_u16(),
        request_ms: 0.0,
        upstream_ms: seen.map(|u| u.took.as_secs_f64() * 1e3),
        ingress: *ingress,
        egress: crate::response_end::head_len(resp),
    };
    crate::prometheus::Recording {
        metrics: shared.requests.clone(),
        owner,
        obs,
        started: started.into_std(),
    }
}

/// What `decide` reports beside its decision, for the access log and the log-phase
/// plugins.
struct Seen<'a> {
    log: Option<&'a mut crate::access_log::Entry>,
    /// The route matched, when plugins ran.
    matched: &'a mut Option<Arc<RouteTarget>>,
    /// When the request began, where to put what the log-phase plugins need of it (its
    /// start, size and routed path), and its body's declared length.
    measure: Option<(Instant, &'a mut Option<Measure>, Option<u64>)>,
}

/// When the request began, its size, and which of its route's paths and hosts it matched.
type Measure = (Instant, u64, crate::prometheus::Matched);

/// What the upstream needs once routing is done: the matched route and its upstream (or
/// why it has none), with the key a hash balancer uses.
type Forward = (
    Arc<RouteTarget>,
    Result<(Arc<UpstreamRt>, Option<Vec<u8>>), String>,
);

/// Routing and the request phases of the global rules', the route's and the chosen
/// `traffic-split` target's plugins: where the request goes, or the answer a plugin gave. The snapshot is held only while this
/// runs: the matched target carries everything the rest of the request needs, so a long
/// download does not pin an old router in memory.
fn decide(
    shared: &Arc<Shared>,
    conn: ConnInfo,
    parts: &mut http::request::Parts,
    raw: &mut Option<ClientHead>,
    host: &str,
    ran: &mut Ran,
    seen: Seen<'_>,
) -> Result<Result<Forward, crate::plugins::Answer>, ProxyError> {
    let Seen {
        log,
        matched,
        measure,
    } = seen;
    let measure_start = measure.as_ref().map(|(at, _, _)| *at);
    let snapshot = shared.snapshot.load();
    let found = snapshot
        .router
        .find(&router::Request {
            host,
            path: parts.uri.path(),
            method: parts.method.as_str(),
            remote_addr: conn.remote.ip(),
            vars: &RequestVars {
                parts: &*parts,
                host,
                remote: conn.remote,
                local: conn.local,
                scheme: conn.scheme,
                consumer: None,
                raw: raw.as_ref(),
            },
        })
        .map(|m| m.value.clone());
    if let (Some(e), Some(t)) = (log, &found) {
        e.route_id = Some(t.route_id.as_str().to_string());
    }
    // Global rules run for every request, a route matched or not, before the route's.
    let chains = snapshot
        .global
        .iter()
        .chain(found.iter().filter_map(|t| t.chain.as_ref()));
    let mut answer = None;
    let mut client = conn;
    // A route without plugins, and no global rules: nothing to set up.
    if snapshot.global.is_some() || found.as_ref().is_some_and(|t| t.chain.is_some()) {
        // Plugins read and change headers through the map, so it must exist before they
        // run; the head's bytes no longer say what the node gets.
        if let Some(head) = raw.take() {
            parts.headers = head.header_map();
        }
        let logs = snapshot.global.as_ref().is_some_and(|c| c.logs())
            || found
                .as_ref()
                .and_then(|t| t.chain.as_ref())
                .is_some_and(|c| c.logs());
        // The request as it came, before the plugins change it.
        let measure_of = |parts: &http::request::Parts, at: Instant, body_len: Option<u64>| {
            let ingress = crate::prometheus::request_len(parts, body_len);
            let matched = found
                .as_ref()
                .map(|t| t.labels.matched(parts.uri.path(), host))
                .unwrap_or_default();
            (at, ingress, matched)
        };
        let mut measure = measure;
        if let (true, Some((at, out, body_len))) = (logs, measure.as_mut()) {
            **out = Some(measure_of(parts, *at, *body_len));
        }
        let mut req = Req {
            parts: &mut *parts,
            host,
            conn,
            https_port: shared.https_port,
            consumers: &snapshot.consumers,
            route_id: found.as_ref().map(|t| t.route_id.as_str()),
            service_id: found
                .as_ref()
                .and_then(|t| t.service_id.as_ref().map(|s| s.as_str())),
            consumer: None,
            now: match measure_start {
                Some(at) => std::cell::OnceCell::from(at.into_std()),
                None => std::cell::OnceCell::new(),
            },
        };
        for chain in chains {
            answer = ran.request(chain, &mut req);
            if answer.is_some() {
                break;
            }
        }
        // `real-ip` may have said who the client is.
        client = req.conn;
        // For the plugins' metrics, whatever answers.
        matched.clone_from(&found);
        // A log-phase plugin that came with the consumer's plugins (a consumer group's):
        // measured now, as the request is after the plugins.
        if let Some((at, out, body_len)) = measure {
            if out.is_none() && ran.logs() {
                *out = Some(measure_of(parts, at, body_len));
            }
        }
    }
    match (answer, found) {
        (Some(answer), _) => Ok(Err(answer)),
        (None, None) => Err(ProxyError::NoRoute),
        (None, Some(target)) => {
            let (upstream, target_chain) =
                snapshot.upstream_for(&target, &vars_after(parts, raw.as_ref(), host, client, ran));
            // The chosen split target's own plugins (a Gateway API backendRef's filters)
            // act on the request as the route's plugins left it.
            if let Some(chain) = target_chain {
                // As for the route's plugins.
                if let Some(head) = raw.take() {
                    parts.headers = head.header_map();
                }
                let mut req = Req {
                    parts: &mut *parts,
                    host,
                    conn: client,
                    https_port: shared.https_port,
                    consumers: &snapshot.consumers,
                    route_id: Some(target.route_id.as_str()),
                    service_id: target.service_id.as_ref().map(|s| s.as_str()),
                    consumer: ran.consumer_arc(),
                    now: match measure_start {
                        Some(at) => std::cell::OnceCell::from(at.into_std()),
                        None => std::cell::OnceCell::new(),
                    },
                };
                if let Some(answer) = ran.request_target(chain, &mut req) {
                    return Ok(Err(answer));
                }
            }
            let hash_key = match &upstream {
                Ok(u) => u.hash_key(&vars_after(parts, raw.as_ref(), host, client, ran)),
                Err(_) => None,
            };
            Ok(Ok((target, upstream.map(|u| (u, hash_key)))))
        }
    }
}

/// The request's variables as the plugins have left it (its client as `real-ip` says).
fn vars_after<'a>(
    parts: &'a http::request::Parts,
    raw: Option<&'a ClientHead>,
    host: &'a str,
    client: ConnInfo,
    ran: &'a Ran,
) -> RequestVars<'a> {
    RequestVars {
        parts,
        host,
        remote: client.remote,
        local: client.local,
        scheme: client.scheme,
        consumer: ran.consumer().map(|c| c.username.as_str()),
        raw,
    }
}

/// The request to its route's upstream, once routing and the plugins' request phases are
/// done: what [`forward`] sends. Synchronous, so that it adds no future of its own to the
/// request's (each nested future is moved, whole, on every request).
#[allow(clippy::too_many_arguments)]
fn prepare_forward<'a>(
    shared: &Arc<Shared>,
    conn: ConnInfo,
    mut parts: http::request::Parts,
    raw: Option<ClientHead>,
    body: ClientBody,
    raw_host: Option<HeaderValue>,
    target: &RouteTarget,
    upstream: Result<(Arc<UpstreamRt>, Option<Vec<u8>>), String>,
    ran: &Ran,
) -> Result<(Arc<UpstreamRt>, Request<UpBody>, Exchange<'a>), ProxyError> {
    let (upstream, hash_key) = upstream.map_err(ProxyError::Unavailable)?;
    // A head kept as bytes is written by the inline client, which speaks HTTP/1.1 in the
    // clear; any other upstream, or a plugin, gets the map.
    let raw = match raw {
        Some(head)
            if ran.is_empty()
                && upstream.transport.tls.is_none()
                && !upstream.transport.http2() =>
        {
            Some(head)
        }
        Some(head) => {
            parts.headers = head.header_map();
            None
        }
        None => None,
    };
    let body_limit = ran
        .max_body_size()
        .or(shared.max_body_size)
        .filter(|l| *l > 0);
    if let (Some(limit), Some(len)) = (body_limit, body.size_hint().exact()) {
        if len > limit {
            return Err(ProxyError::TooLarge(limit));
        }
    }
    // A WebSocket handshake keeps its upgrade headers, which are otherwise hop-by-hop,
    // on routes that allow it; elsewhere it reaches the node as a plain request.
    let upgrade = match raw.is_none().then(|| websocket_upgrade(&parts)).flatten() {
        Some(protocol) if target.websocket && !upstream.transport.http2() => {
            parts.extensions.remove::<OnUpgrade>().map(|on| {
                let guard = parts.extensions.remove::<TunnelGuard>();
                let held = ran.held();
                (ClientSide { on, guard, held }, protocol)
            })
        }
        _ => None,
    };
    // Only HTTP/2 upstreams are told about trailers (TE is hop-by-hop otherwise).
    let te_trailers = upstream.transport.http2()
        && parts.headers.get_all(TE).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("trailers"))
        });
    if raw.is_none() {
        strip_hop_by_hop(&mut parts.headers);
    }
    let upgrade = upgrade.map(|(client, protocol)| {
        parts
            .headers
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(UPGRADE, protocol);
        client
    });
    if parts.version == Version::HTTP_2 {
        join_cookies(&mut parts.headers);
    }
    // Set when the request leaves (`send_to_node`): the inline client writes them
    // without touching the map.
    let f = Forwarded {
        client_ip: conn.remote.ip(),
        real_ip: ran.real_ip(),
        proto: conn.scheme,
        host: raw_host.as_ref(),
        port: conn.local.port(),
    };
    let forwarded = match &raw {
        Some(head) => ForwardedHeaders::after(head.forwarded_for().into_iter(), &f),
        None => ForwardedHeaders::new(&parts.headers, &f),
    };
    // HTTP/2 requests have no Host header; the upstream speaks HTTP/1.1 and needs one.
    // `proxy-rewrite.host` replaces it (and `pass_host: node/rewrite` still win over both).
    // A head kept as bytes keeps its own line.
    if raw.is_none() {
        if let Some(h) = ran.upstream_host().or(raw_host) {
            parts.headers.insert(HOST, h);
        }
    }
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|pq| Uri::from(pq.clone()))
        .unwrap_or_else(|| Uri::from_static("/"));
    parts.version = Version::HTTP_11;
    let timeout = target.timeout.unwrap_or(upstream.timeout);
    // `proxy-mirror`: a copy of what the upstream gets, at the mirror's path.
    let mirror = ran.mirror().map(|plan| {
        let mut head = crate::plugins::proxy_mirror::copy_head(plan, &parts);
        forwarded.apply(&mut head.headers);
        (plan.clone(), head, timeout.connect + timeout.read)
    });
    // A request without a body can be replayed if a pooled connection turns out to have
    // been closed by the node mid-exchange; keep what is needed to rebuild it.
    let (body, progress, replayable) = if body.is_end_stream() {
        let replayable = is_idempotent(&parts.method);
        // A body with nothing left, boxed without an allocation (`Empty` has no size).
        let empty = http_body_util::Empty::new().map_err(|e| match e {});
        (empty.boxed_unsync(), None, replayable)
    } else {
        let (b, p) = RequestBody::new(body, timeout.send, body_limit);
        (b.boxed_unsync(), Some(p), false)
    };
    let body = match mirror {
        None => body,
        Some((plan, head, t)) if body.is_end_stream() => {
            crate::plugins::proxy_mirror::send_now(&plan, head, t);
            body
        }
        Some((plan, head, t)) => {
            crate::plugins::proxy_mirror::Tee::new(body, plan, head, t).boxed_unsync()
        }
    };
    let req = Request::from_parts(parts, body);
    let exchange = Exchange {
        timeout,
        progress,
        replayable,
        hash_key,
        te_trailers,
        body_limit: body_limit.unwrap_or(u64::MAX),
        forwarded,
        upstream_seen: shared.access_log.is_some() || ran.logs(),
        seen: std::sync::Mutex::new(None),
        upgrade: std::sync::Mutex::new(upgrade),
        verbatim: None,
        raw,
        raw_spent: AtomicBool::new(false),
    };
    Ok((upstream, req, exchange))
}

/// The protocol a request asks to upgrade to, when it is a WebSocket handshake
/// (`Connection: upgrade` and `Upgrade: websocket`, HTTP/1.1).
fn websocket_upgrade(parts: &http::request::Parts) -> Option<HeaderValue> {
    // Most requests carry no Upgrade header: decided by one lookup.
    let protocol = parts.headers.get(UPGRADE)?;
    if parts.version != Version::HTTP_11 || !protocol.as_bytes().eq_ignore_ascii_case(b"websocket")
    {
        return None;
    }
    let connection_upgrade = parts.headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    connection_upgrade.then(|| protocol.clone())
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The parts of a bodiless request, to send it again.
struct Replay {
    method: Method,
    uri: Uri,
    headers: http::HeaderMap,
}

impl Replay {
    fn of(req: &Request<UpBody>) -> Replay {
        Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
        }
    }

    fn request(self) -> Request<UpBody> {
        let mut req = Request::new(
            http_body_util::Empty::new()
                .map_err(|e| match e {})
                .boxed_unsync(),
        );
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.headers_mut() = self.headers;
        req
    }
}

/// What stays the same across the attempts of one request.
struct Exchange<'a> {
    timeout: crate::snapshot::Timeouts,
    /// Tracks the request body; `None` when there is none.
    progress: Option<Arc<Progress>>,
    /// The most body bytes the client may send (`u64::MAX`: no limit).
    body_limit: u64,
    /// No body and an idempotent method: safe to send twice.
    replayable: bool,
    /// The `chash` key of this request, for upstreams balanced by hash.
    hash_key: Option<Vec<u8>>,
    /// The client sent `TE: trailers` (gRPC does): HTTP/2 upstreams need it too.
    te_trailers: bool,
    /// The client's side of an allowed WebSocket handshake, joined to the node's side
    /// once the node answers 101.
    upgrade: std::sync::Mutex<Option<ClientSide>>,
    /// `X-Forwarded-*` and `X-Real-IP`, set as the request leaves.
    forwarded: ForwardedHeaders,
    /// Whether to keep [`UpstreamSeen`] (the access log or a log-phase plugin reads it),
    /// and where.
    upstream_seen: bool,
    seen: std::sync::Mutex<Option<UpstreamSeen>>,
    /// Where a verbatim response head goes, when the client's side takes one.
    verbatim: Option<&'a OnceLock<Verbatim>>,
    /// The client's head as it sent it, when the request's map is empty but for what
    /// `pass_host` puts there: the inline client writes its lines.
    raw: Option<ClientHead>,
    /// Set once the request's map has been built from `raw` (for hyper's client).
    raw_spent: AtomicBool,
}

impl Exchange<'_> {
    /// The client's head as sent, while the request's map has not been built from it.
    fn raw(&self) -> Option<&ClientHead> {
        self.raw
            .as_ref()
            .filter(|_| !self.raw_spent.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Builds `req`'s map from the client's head, as the map's path has it by now
    /// (`prepare_forward`): hop-by-hop headers out, the `Host` that `pass_host` chose in.
    fn spend_raw(&self, req: &mut Request<UpBody>) {
        let Some(head) = self.raw() else {
            return;
        };
        let mut map = head.header_map();
        strip_hop_by_hop(&mut map);
        if let Some(h) = req.headers_mut().remove(HOST) {
            map.insert(HOST, h);
        }
        *req.headers_mut() = map;
        self.raw_spent
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Sends `req` to a node of `upstream`, moving to the next node when a connection cannot
/// be made (`retries`), and streams the answer back.
// Not an `async fn`: its arguments would be kept twice in the future (as arguments and
// as the locals they are moved into), and this future is part of every request's.
#[allow(clippy::manual_async_fn)]
fn forward<'a>(
    shared: &'a Arc<Shared>,
    upstream: &'a Arc<UpstreamRt>,
    mut req: Request<UpBody>,
    ex: &'a Exchange<'a>,
) -> impl std::future::Future<Output = Result<Response<RespBody>, ProxyError>> + Send + 'a {
    async move {
        if upstream.nodes.is_empty() {
            return Err(ProxyError::Unavailable("no valid upstream node".into()));
        }
        let deadline = upstream
            .retry_timeout
            .and_then(|t| Instant::now().checked_add(t));
        let mut tried: Vec<usize> = Vec::new();
        let mut last_err: Option<ConnectError> = None;
        for attempt in 0..=upstream.retries {
            if attempt > 0 && deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let idx = match upstream.pick(&tried, shared.zone.as_deref(), ex.hash_key.as_deref()) {
                Some(i) => i,
                // Every node failed once already: retry them in turn rather than give up early.
                None => match upstream.pick(&[], shared.zone.as_deref(), ex.hash_key.as_deref()) {
                    Some(i) => {
                        tried.clear();
                        i
                    }
                    None => {
                        return Err(ProxyError::Unavailable(
                            "every upstream node has weight 0".into(),
                        ))
                    }
                },
            };
            let node = &upstream.nodes[idx];
            let host = match upstream.pass_host {
                // A client without Host (HTTP/1.0, HTTP/2 without :authority) still needs one
                // upstream, which speaks HTTP/1.1.
                PassHost::Pass if ex.raw().is_some() || req.headers().contains_key(HOST) => None,
                PassHost::Pass | PassHost::Node => node.host_header.as_ref(),
                PassHost::Rewrite => upstream.upstream_host.as_ref(),
            };
            if let Some(h) = host {
                req.headers_mut().insert(HOST, h.clone());
            }
            let sent = ex.upstream_seen.then(Instant::now);
            match send_to_node(shared, upstream, node, req, ex).await {
                Ok(resp) => {
                    if let Some(sent) = sent {
                        *ex.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(UpstreamSeen {
                            addr: node.shown.clone(),
                            label: node.label.clone(),
                            status: resp.status().as_u16(),
                            took: sent.elapsed(),
                        });
                    }
                    return Ok(resp);
                }
                Err(SendError::Connect(e, back)) => {
                    upstream.observe(
                        node,
                        match e {
                            ConnectError::Timeout(_) => Outcome::Timeout,
                            _ => Outcome::TcpFailure,
                        },
                    );
                    shared
                        .metrics
                        .upstream_connect_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(upstream = %upstream.key, node = %node.addr, error = %e, "upstream connect failed");
                    last_err = Some(e);
                    tried.push(idx);
                    req = *back;
                }
                Err(SendError::Failed(e)) => {
                    if let Some(outcome) = e.node_outcome() {
                        upstream.observe(node, outcome);
                    }
                    return Err(e);
                }
            }
        }
        Err(match last_err {
            Some(ConnectError::Timeout(a)) => {
                shared
                    .metrics
                    .upstream_timeouts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ProxyError::Timeout(format!("connecting to upstream {a} timed out"))
            }
            Some(e) => ProxyError::BadGateway(format!("no upstream node could be reached ({e})")),
            None => ProxyError::BadGateway("retry timeout exceeded".into()),
        })
    }
}

enum SendError {
    /// Nothing was sent: the request comes back for the next node.
    Connect(ConnectError, Box<Request<UpBody>>),
    Failed(ProxyError),
}

/// How long a pooled connection may take to become ready before it is treated as stale
/// (for example still writing an earlier request's body) and replaced by a fresh one.
const POOLED_READY_WAIT: Duration = Duration::from_millis(100);

/// Idle time after which a pooled connection may have been closed by its node (keepalive
/// timeouts are seconds at least), so an idempotent bodiless request on it is kept to be
/// replayed.
const REPLAY_AFTER_IDLE: Duration = Duration::from_millis(500);

// Not an `async fn`: its arguments would be kept twice in the future (as arguments and
// as the locals they are moved into), and this future is part of every request's.
#[allow(clippy::manual_async_fn)]
fn send_to_node<'a>(
    shared: &'a Arc<Shared>,
    upstream: &'a Arc<UpstreamRt>,
    node: &'a NodeRt,
    mut req: Request<UpBody>,
    ex: &'a Exchange<'a>,
) -> impl std::future::Future<Output = Result<Response<RespBody>, SendError>> + Send + 'a {
    async move {
        let addr = node.addr.as_str();
        let timeout = ex.timeout;
        if upstream.transport.http2() {
            to_http2(
                &mut req,
                node,
                upstream.transport.tls.is_some(),
                ex.te_trailers,
            );
        }
        // Held from here to the end of the response body: least_conn and ewma count a node
        // busy while it thinks, not only while it streams.
        let in_flight = node.state.in_flight.enter();
        // Only `ewma` reads how long a node took: two clock reads a request saved elsewhere.
        let started = upstream.measures_rtt().then(std::time::Instant::now);
        let mut stale = 0;
        // No upgrade: the request's own task speaks HTTP/1.1 to a plain node.
        let inline = req.method() != Method::CONNECT
            && ex
                .upgrade
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none();
        loop {
            let mut conn: Conn = match shared.pool.checkout(&node.pool_key, &upstream.pool) {
                Some(c) if stale < MAX_STALE_RETRIES => c,
                // Boxed: a connect future (TCP, TLS, handshake) is ~7 KB, and held inline it
                // would make every request's future that large, to be copied on each move.
                _ => match Box::pin(connect(
                    addr,
                    &node.pool_key,
                    &upstream.transport,
                    node.tls_name.as_ref(),
                    timeout.connect,
                    true,
                ))
                .await
                {
                    Ok(c) => c,
                    Err(e) => return Err(SendError::Connect(e, Box::new(req))),
                },
            };
            if let Sender::Inline(_) = conn.tx {
                if inline {
                    // A body of unknown length (the client's was chunked) goes chunked.
                    let chunked = !req.body().is_end_stream()
                        && !req.headers().contains_key(http::header::CONTENT_LENGTH);
                    let raw = ex.raw();
                    let mut head = Vec::with_capacity(
                        128 + raw.map_or(0, ClientHead::head_len)
                            + 48 * req.headers().len()
                            + ex.forwarded.encoded_len(),
                    );
                    h1_client::encode_head(&req, raw, Some(&ex.forwarded), chunked, &mut head);
                    let method = req.method().clone();
                    let body = (!req.body().is_end_stream()).then(|| req.body_mut());
                    match send_inline(shared, node, &head, &method, body, chunked, conn, ex).await {
                        Inline::Answered(parts, decoder, conn, verbatim) => {
                            upstream.observe_response(node, parts.status.as_u16(), started);
                            if let (Some(slot), Some(v)) = (ex.verbatim, verbatim) {
                                // Set once: the exchange ends with this answer.
                                let _ = slot.set(v);
                            }
                            return Ok(client_response(
                                shared,
                                parts,
                                Inner::Inline(decoder),
                                conn,
                                upstream,
                                timeout.read,
                                in_flight,
                            ));
                        }
                        Inline::Stale => {
                            stale += 1;
                            continue;
                        }
                        Inline::Unsent(e) => return Err(SendError::Connect(e, Box::new(req))),
                        Inline::Failed(e) => return Err(SendError::Failed(e)),
                    }
                }
                // Boxed: the hand-over to hyper (upgrades, CONNECT) is rare, and held
                // inline its ~1.5 KB would be room in every request's future.
                conn = match Box::pin(conn.into_hyper()).await {
                    Ok(c) => c,
                    Err(_) if stale < MAX_STALE_RETRIES => {
                        stale += 1;
                        continue;
                    }
                    Err(e) => return Err(SendError::Connect(e, Box::new(req))),
                };
            }
            let ready_wait = if conn.reused {
                POOLED_READY_WAIT.min(timeout.send)
            } else {
                timeout.send
            };
            match tokio::time::timeout(ready_wait, conn.tx.ready()).await {
                Ok(Ok(())) => {}
                _ if conn.reused => {
                    stale += 1;
                    continue;
                }
                Ok(Err(e)) => {
                    let err = ConnectError::Handshake(addr.to_string(), e);
                    return Err(SendError::Connect(err, Box::new(req)));
                }
                Err(_) => {
                    return Err(SendError::Failed(timeout_err(
                        shared,
                        addr,
                        "sending the request",
                    )))
                }
            }
            // hyper's client sends only what the map holds.
            ex.spend_raw(&mut req);
            ex.forwarded.apply(req.headers_mut());
            conn.uses += 1;
            // Only a connection that sat idle can have been closed by the node under us; a
            // copy for that case is not worth making on connections in constant use.
            let replay = (ex.replayable && conn.reused && conn.idle_for >= REPLAY_AFTER_IDLE)
                .then(|| Replay::of(&req));
            let sent = conn.tx.try_send_request(req);
            // The read timeout covers the wait for the response once the body has been sent.
            let read_deadline = async {
                if let Some(p) = &ex.progress {
                    // Until the node takes the body up at all (an HTTP/2 node with every
                    // stream in use queues it), the send timeout bounds the wait.
                    if tokio::time::timeout(timeout.send, p.started())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    p.finished().await;
                }
                tokio::time::sleep(timeout.read).await;
            };
            let result = tokio::select! {
                r = sent => r,
                _ = read_deadline => {
                    return Err(SendError::Failed(timeout_err(shared, addr, "waiting for the response")));
                }
            };
            match result {
                Ok(resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    let client = ex.upgrade.lock().unwrap_or_else(|p| p.into_inner()).take();
                    let Some(client) = client else {
                        return Err(SendError::Failed(ProxyError::BadGateway(format!(
                            "upstream {addr} switched protocols unasked"
                        ))));
                    };
                    upstream.observe_response(node, 101, started);
                    return Ok(tunnel(shared, resp, client, in_flight, addr, timeout.read));
                }
                Ok(resp) => {
                    upstream.observe_response(node, resp.status().as_u16(), started);
                    let (parts, body) = resp.into_parts();
                    return Ok(client_response(
                        shared,
                        parts,
                        Inner::Hyper(body),
                        conn,
                        upstream,
                        timeout.read,
                        in_flight,
                    ));
                }
                Err(mut e) => match (e.take_message(), replay) {
                    // The node closed an idle connection just as we used it; the request
                    // never left, so it is safe to send again on a fresh connection.
                    (Some(back), _) if conn.reused => {
                        stale += 1;
                        req = back;
                    }
                    (Some(back), _) => {
                        let err = e.into_connect_error(addr);
                        return Err(SendError::Connect(err, Box::new(back)));
                    }
                    // It left, but had no body and is idempotent: the node closing a pooled
                    // connection under it is no reason to fail the client.
                    (None, Some(r)) => {
                        stale += 1;
                        req = r.request();
                    }
                    // The client spoiled its own body: its fault, never the node's.
                    (None, None) if client_fault(ex).is_some() => {
                        return Err(SendError::Failed(client_fault_error(ex)))
                    }
                    (None, None) => {
                        return Err(SendError::Failed(ProxyError::BadGateway(format!(
                            "upstream {addr} failed: {}",
                            e.message()
                        ))))
                    }
                },
            }
        }
    }
}

/// How an inline exchange ended.
// Returned once and taken apart at once: boxing the large variant would cost an
// allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
enum Inline {
    Answered(http::response::Parts, Decoder, Conn, Option<Verbatim>),
    /// A pooled connection the node had closed under us: another connection may serve.
    Stale,
    /// Nothing reached the node: the next node may serve.
    Unsent(ConnectError),
    Failed(ProxyError),
}

/// Sends a request on an inline connection and reads the response head; the response
/// body is read later, by the client's response body. A request body is written while
/// the response is awaited: a node that answers early (a 413 halfway through an upload)
/// is heard, and its connection is not reused.
#[allow(clippy::too_many_arguments)]
async fn send_inline(
    shared: &Shared,
    node: &NodeRt,
    head: &[u8],
    method: &Method,
    body: Option<&mut UpBody>,
    chunked: bool,
    mut conn: Conn,
    ex: &Exchange<'_>,
) -> Inline {
    let addr = node.addr.as_str();
    let timeout = ex.timeout;
    let (reused, idle_for) = (conn.reused, conn.idle_for);
    conn.uses += 1;
    let Sender::Inline(c) = &mut conn.tx else {
        return Inline::Failed(ProxyError::BadGateway(format!(
            "upstream {addr}: not an inline connection"
        )));
    };
    match tokio::time::timeout(timeout.send, h1_client::send(c, head)).await {
        Err(_) => return Inline::Failed(timeout_err(shared, addr, "sending the request")),
        Ok(Ok(())) => {}
        // Nothing of the body was taken yet: it can still go on another connection.
        Ok(Err(_)) if reused => return Inline::Stale,
        Ok(Err(e)) => return Inline::Unsent(ConnectError::Io(addr.to_string(), e.into_io())),
    }
    let has_body = body.is_some();
    // In a block: the halves borrow the connection, which the answer takes along.
    let (early, result) = 'exchange: {
        let (mut rd, mut wr) = c.io.split();
        let answer = h1_client::read_head(&mut rd, &mut c.buf, method, ex.verbatim.is_some());
        tokio::pin!(answer);
        let mut early = false;
        let mut answered = None;
        if let Some(body) = body {
            let upload = h1_client::write_body(&mut wr, body, chunked, timeout.send);
            tokio::select! {
                biased;
                sent = upload => match sent {
                    Ok(()) => {}
                    Err(h1_client::BodyError::Client) => {
                        break 'exchange (false, Err(Inline::Failed(client_fault_error(ex))));
                    }
                    Err(h1_client::BodyError::Timeout) => {
                        let e = timeout_err(shared, addr, "sending the request body");
                        break 'exchange (false, Err(Inline::Failed(e)));
                    }
                    // The node stopped reading: it may have answered already (and closed).
                    Err(h1_client::BodyError::Write(_)) => early = true,
                },
                // The node answered before the body was all sent.
                got = &mut answer => {
                    early = true;
                    answered = Some(got);
                }
            }
        }
        // The read timeout starts once the body has gone, as on hyper's path.
        let result = match answered {
            Some(got) => Ok(got),
            None => tokio::time::timeout(timeout.read, answer).await,
        };
        (early, Ok(result))
    };
    let result = match result {
        Ok(r) => r,
        Err(failed) => return failed,
    };
    match result {
        Err(_) => Inline::Failed(timeout_err(shared, addr, "waiting for the response")),
        Ok(Ok((parts, mut decoder, verbatim))) => {
            if early {
                decoder.forbid_reuse();
            }
            Inline::Answered(parts, decoder, conn, verbatim)
        }
        // The node closed an idle connection as the request arrived; sending a bodiless
        // idempotent request again is safe.
        Ok(Err(h1_client::Error::Closed))
            if !has_body && reused && ex.replayable && idle_for >= REPLAY_AFTER_IDLE =>
        {
            Inline::Stale
        }
        Ok(Err(_)) if client_fault(ex).is_some() => Inline::Failed(client_fault_error(ex)),
        Ok(Err(e)) => Inline::Failed(ProxyError::BadGateway(format!(
            "upstream {addr} failed: {e}"
        ))),
    }
}

fn client_fault(ex: &Exchange<'_>) -> Option<ClientFault> {
    ex.progress.as_ref().and_then(|p| p.fault())
}

/// The answer for a request whose body the client spoiled: its fault, never the node's.
fn client_fault_error(ex: &Exchange<'_>) -> ProxyError {
    match client_fault(ex) {
        Some(ClientFault::Stalled) => ProxyError::ClientTimeout,
        Some(ClientFault::TooLarge) => ProxyError::TooLarge(ex.body_limit),
        Some(ClientFault::BadFraming) => ProxyError::BadBody,
        Some(ClientFault::Aborted) | None => ProxyError::ClientAborted,
    }
}

/// Makes a request fit for an HTTP/2 node: absolute URI (`:scheme`, `:authority` from the
/// `Host` chosen by `pass_host`), and `TE: trailers` when the client asked for trailers.
fn to_http2(req: &mut Request<UpBody>, node: &NodeRt, tls: bool, te_trailers: bool) {
    let authority = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .or_else(|| node.addr.parse().ok());
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(if tls {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    });
    uri.authority = authority;
    uri.path_and_query = req.uri().path_and_query().cloned();
    if let Ok(u) = Uri::from_parts(uri) {
        *req.uri_mut() = u;
    }
    *req.version_mut() = Version::HTTP_2;
    if te_trailers {
        req.headers_mut()
            .insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// Answers the client's WebSocket handshake with the node's 101 and joins the two
/// connections until either side closes, or nothing has crossed either way for `idle`
/// (the read timeout, as nginx's `proxy_read_timeout` ends idle tunnels). The tunnel
/// belongs to neither snapshot nor pool: configuration changes leave it alone.
fn tunnel(
    shared: &Arc<Shared>,
    mut resp: Response<Incoming>,
    client: ClientSide,
    in_flight: InFlightGuard,
    addr: &str,
    idle: Duration,
) -> Response<RespBody> {
    let node = hyper::upgrade::on(&mut resp);
    let addr = addr.to_string();
    let shared = shared.clone();
    let ClientSide {
        on: client,
        guard,
        held,
    } = client;
    tokio::spawn(async move {
        // Counted in flight while open, as least_conn should see it; a drain waits for it
        // (within its grace period) as for any connection.
        let _in_flight = in_flight;
        let _connection = guard;
        let _held = held;
        let (client, node) = match tokio::try_join!(client, node) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(upstream = %addr, error = %e, "websocket upgrade failed");
                return;
            }
        };
        let open = &shared.metrics.websockets_open;
        open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let closed_by = join_until_either_closes(
            hyper_util::rt::TokioIo::new(client),
            hyper_util::rt::TokioIo::new(node),
            idle,
        )
        .await;
        open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(upstream = %addr, closed_by, "websocket closed");
    });
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, full(Bytes::new()))
}

/// Copies both ways until either side closes its end, then closes the other: a tunnel
/// ends with its first close, and no half-closed tunnel lingers. A tunnel with no byte
/// in either direction for `idle` is closed on both sides. Returns who ended it.
async fn join_until_either_closes<C, N>(client: C, node: N, idle: Duration) -> &'static str
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite,
    N: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    let (mut client_rx, mut client_tx) = tokio::io::split(client);
    let (mut node_rx, mut node_tx) = tokio::io::split(node);
    let activity = Activity::new();
    tokio::select! {
        _ = pipe(&mut client_rx, &mut node_tx, &activity) => "client",
        _ = pipe(&mut node_rx, &mut client_tx, &activity) => "node",
        _ = activity.idle_for(idle) => "idle",
    }
}

/// When bytes last crossed a tunnel, either way: milliseconds since it opened, in an
/// atomic so that both directions' copies (one task, two futures) can stamp it.
struct Activity {
    opened: tokio::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: tokio::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn stamp(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn quiet_until(&self, idle: Duration) -> tokio::time::Instant {
        let last = self.last_ms.load(std::sync::atomic::Ordering::Relaxed);
        self.opened + Duration::from_millis(last) + idle
    }

    /// Resolves once nothing has been stamped for `idle`.
    async fn idle_for(&self, idle: Duration) {
        if idle.is_zero() {
            return std::future::pending().await;
        }
        loop {
            let until = self.quiet_until(idle);
            tokio::time::sleep_until(until).await;
            if self.quiet_until(idle) <= tokio::time::Instant::now() {
                return;
            }
        }
    }
}

/// Copies until `rx` ends (or fails), then closes `tx`'s write side. Each chunk is
/// flushed at once: a message must not wait in a TLS buffer for the next one.
async fn pipe<R, W>(rx: &mut R, tx: &mut W, activity: &Activity)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match rx.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        activity.stamp();
        // Written piece by piece, each stamped: a slow reader on the other side is still a
        // live tunnel, even while one large message takes longer than `idle` to cross.
        let mut sent = 0;
        while sent < n {
            match tx.write(&buf[sent..n]).await {
                Ok(0) | Err(_) => {
                    let _ = tx.shutdown().await;
                    return;
                }
                Ok(w) => {
                    sent += w;
                    activity.stamp();
                }
            }
        }
        if tx.flush().await.is_err() {
            break;
        }
    }
    let _ = tx.shutdown().await;
}

fn timeout_err(shared: &Shared, addr: &str, what: &str) -> ProxyError {
    shared
        .metrics
        .upstream_timeouts
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ProxyError::Timeout(format!("upstream {addr} timed out {what}"))
}

fn client_response(
    shared: &Arc<Shared>,
    mut parts: http::response::Parts,
    body: Inner,
    conn: Conn,
    upstream: &UpstreamRt,
    read_timeout: Duration,
    in_flight: InFlightGuard,
) -> Response<RespBody> {
    // h1_client leaves hop-by-hop headers out as it parses.
    if let Inner::Hyper(_) = body {
        strip_hop_by_hop(&mut parts.headers);
    }
    let body = UpstreamBody::new(
        body,
        conn,
        shared.pool.clone(),
        upstream.pool,
        read_timeout,
        in_flight,
    );
    Response::from_parts(parts, body.boxed_unsync())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_handshakes() {
        type Case<'a> = (Version, &'a [(&'a str, &'a str)], bool);
        let cases: &[Case] = &[
            (
                Version::HTTP_11,
                &[("connection", "Upgrade"), ("upgrade", "websocket")],
                true,
            ),
            (
                Version::HTTP_11,
                &[
                    ("connection", "keep-alive, upgrade"),
                    ("upgrade", "WebSocket"),
                ],
                true,
            ),
            (Version::HTTP_11, &[("upgrade", "websocket")], false),
            (
                Version::HTTP_11,
                &[("connection", "upgrade"), ("upgrade", "h2c")],
                false,
            ),
            (
                Version::HTTP_10,
                &[("connection", "upgrade"), ("upgrade", "websocket")],
                false,
            ),
            (Version::HTTP_11, &[("connection", "upgrade")], false),
        ];
        for (version, headers, want) in cases {
            let mut req = Request::builder().version(*version).uri("/ws");
            for (k, v) in *headers {
                req = req.header(*k, *v);
            }
            let (parts, ()) = req.body(()).unwrap().into_parts();
            assert_eq!(websocket_upgrade(&parts).is_some(), *want, "{headers:?}");
        }
    }

    #[tokio::test]
    async fn a_slow_reader_of_a_large_message_keeps_the_tunnel_open() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let idle = Duration::from_millis(300);
        let (mut client, gw_client) = tokio::io::duplex(1024);
        let (gw_node, mut node) = tokio::io::duplex(64 * 1024);
        let joined = tokio::spawn(join_until_either_closes(gw_client, gw_node, idle));
        // One 32 KiB message, read 1 KiB per 40 ms: it takes four times `idle` to cross,
        // and neither peer writes anything else meanwhile.
        node.write_all(&[1u8; 32 * 1024]).await.unwrap();
        let (mut got, mut buf) = (0, [0u8; 1024]);
        while got < 32 * 1024 {
            tokio::time::sleep(Duration::from_millis(40)).await;
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "the tunnel closed after {got} bytes");
            got += n;
        }
        assert!(
            !joined.is_finished(),
            "closed while the message was crossing"
        );
        drop(client);
        assert_eq!(joined.await.unwrap(), "client");
    }

    #[tokio::test]
    async fn tunnels_end_at_the_first_close_or_when_idle() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Gaps of 100 ms against an idle limit of 600 ms: a margin for a busy machine.
        let idle = Duration::from_millis(600);
        // (who closes after some traffic, expected verdict); None: nobody, ever.
        for (closer, want) in [
            (Some("client"), "client"),
            (Some("node"), "node"),
            (None, "idle"),
        ] {
            let (mut client, gw_client) = tokio::io::duplex(1024);
            let (gw_node, mut node) = tokio::io::duplex(1024);
            let joined = tokio::spawn(join_until_either_closes(gw_client, gw_node, idle));
            // Traffic both ways, spread over twice `idle` in total, keeps it open.
            for i in 0..12u8 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                client.write_all(&[i]).await.unwrap();
                let mut b = [0u8; 1];
                node.read_exact(&mut b).await.unwrap();
                assert_eq!(b, [i]);
                node.write_all(&[i + 100]).await.unwrap();
                client.read_exact(&mut b).await.unwrap();
                assert_eq!(b, [i + 100]);
            }
            assert!(
                !joined.is_finished(),
                "{want}: still open after 1.2 s of traffic"
            );
            match closer {
                Some("client") => client.shutdown().await.unwrap(),
                Some(_) => node.shutdown().await.unwrap(),
                None => {}
            }
            let verdict = tokio::time::timeout(idle * 5, joined).await;
            assert_eq!(verdict.expect("the tunnel ended").unwrap(), want);
            // Either way both sides are closed: the other peer reads EOF.
            let mut rest = Vec::new();
            match closer {
                Some("client") => node.read_to_end(&mut rest).await.unwrap(),
                _ => client.read_to_end(&mut rest).await.unwrap(),
            };
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn grpc_statuses() {
        for (http, code) in [
            (404, 12),
            (502, 14),
            (503, 14),
            (504, 14),
            (400, 13),
            (408, 2),
        ] {
            assert_eq!(grpc_code(http), code, "{http}");
        }
        assert_eq!(grpc_percent_encode("50% done\n"), "50%25 done%0A");
        let resp = ProxyError::NoRoute.into_grpc_response();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["grpc-status"], "12");
        assert_eq!(resp.headers()["grpc-message"], "404 Route Not Found");
    }
}
#[cfg(test)]
mod future_size {
    use super::*;

    fn size_of_future<F, Fut>(_: F) -> usize
    where
        F: FnOnce(
            Arc<Shared>,
            ConnInfo,
            Request<ClientBody>,
            Option<ClientHead>,
            Option<&'static OnceLock<Verbatim>>,
        ) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// Every request's future is moved (copied whole) a few times on its way into hyper's
    /// dispatcher: rarely used large parts (the connect future, ~7 KB with TLS) are
    /// boxed so that it stays small: about 4 KB, against 10 KB before.
    #[test]
    fn the_request_future_stays_small() {
        let size = size_of_future(handle);
        assert!(size <= 6 * 1024, "proxy::handle's future is {size} bytes");
    }
}
