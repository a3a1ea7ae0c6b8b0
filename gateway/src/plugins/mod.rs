//! The plugin chain of a route: compiled when the snapshot is built (the merged, sorted
//! plugin instances of the route, its service and later its consumer), run per request in
//! APISIX's phases: `rewrite` and `access` before the upstream is chosen, `header_filter`
//! on the response (also on one a plugin or the proxy answered itself), `log` at the end.
//! One file per plugin; each implements only the phases it needs.
//!
//! A route without plugins has no chain, and the request path then skips all of this.
pub mod api_breaker;
pub mod auth;
pub mod basic_auth;
pub mod client_control;
pub mod consumer_restriction;
pub mod cors;
pub mod fault_injection;
pub mod hmac_auth;
pub mod http_logger;
pub mod ip_restriction;
pub mod jwt_auth;
pub mod key_auth;
pub mod keyed;
pub mod limit_conn;
pub mod limit_count;
pub mod limit_req;
pub mod prometheus;
pub mod proxy_mirror;
pub mod proxy_rewrite;
pub mod public_api;
pub mod real_ip;
pub mod redirect;
pub mod redis_count;
pub mod referer_restriction;
pub mod request_id;
pub mod response_rewrite;
pub mod ua_restriction;

use crate::consumers::{ConsumerRt, Consumers};
use crate::plugin_state::{ChainEnv, StateKey};
use crate::proxy::{full, ConnInfo, RespBody};
use crate::request_vars::RequestVars;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use model::plugin_metadata::{LimitCountHeaders, Metadata};
use model::plugins::limit_count::Policy;
use model::plugins::{Config, Plugins};
use model::vars::Expr;
use std::sync::Arc;
use std::time::Duration;

/// Set once a chain with a log-phase plugin (`prometheus`, `http-logger`) has been
/// compiled in this process: until then the request path skips the timing and sizes that
/// they need. Never reset, as it only switches on that bookkeeping; what is recorded
/// follows each request's chain.
static LOG_PHASE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

const LOG_PHASE_PLUGINS: &[&str] = &[
    model::plugins::prometheus::NAME,
    model::plugins::http_logger::NAME,
];

pub fn log_phase_seen() -> bool {
    LOG_PHASE.load(std::sync::atomic::Ordering::Relaxed)
}

fn log_phase_compiled() {
    LOG_PHASE.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// An answer a plugin gives instead of proxying: the one type for 401, 403, 429, a CORS
/// preflight's 200 or a redirect.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// `public-api`: the body is the metrics exposition, rendered by the proxy.
    pub exposition: bool,
}

impl Answer {
    /// APISIX's plugin answer: `{"message": …}`.
    pub fn message(status: StatusCode, message: &str) -> Answer {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Answer {
            status,
            headers,
            body: serde_json::json!({ "message": message }).to_string().into(),
            exposition: false,
        }
    }

    pub fn empty(status: StatusCode) -> Answer {
        Answer {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            exposition: false,
        }
    }

    pub fn into_response(self) -> Response<RespBody> {
        let mut resp = Response::new(full(self.body));
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers;
        resp
    }
}

/// A plugin's check that waits on I/O (a count kept in Redis). The request phases are
/// synchronous, so the plugin leaves the check in its [`Run`]; the proxy awaits it once
/// the phases are over, before anything is sent upstream, and its answer (a rejection)
/// then stands in for the upstream's. Plugins of lower priority in the access phase have
/// already run by then: what they did is dropped with the request when it is rejected.
pub type Deferred = std::pin::Pin<Box<dyn std::future::Future<Output = Settled> + Send>>;

/// What a deferred check decided.
#[derive(Debug, Default)]
pub struct Settled {
    pub answer: Option<Answer>,
    pub quota: Option<limit_count::Quota>,
}

/// The request as the request-side phases see and change it.
pub struct Req<'a> {
    pub parts: &'a mut http::request::Parts,
    /// The normalised host the route matched (lower case, no port).
    pub host: &'a str,
    pub conn: ConnInfo,
    /// The HTTPS listener's port, for redirects to HTTPS.
    pub https_port: u16,
    /// The snapshot's consumers, for authentication plugins.
    pub consumers: &'a Consumers,
    /// The matched route and its service (`consumer-restriction` by `route_id`).
    pub route_id: Option<&'a str>,
    pub service_id: Option<&'a str>,
    /// Set once an authentication plugin has recognised the request's credential.
    pub consumer: Option<Arc<ConsumerRt>>,
    /// The clock, read once per request at most (`Req::now`); already set when the
    /// request is timed for the log phase.
    pub now: std::cell::OnceCell<std::time::Instant>,
}

#[cfg(test)]
impl<'a> Req<'a> {
    /// A request from 10.0.0.1:1234 to 127.0.0.1:9080, for host `h`, no route, no consumer.
    pub(crate) fn for_test(parts: &'a mut http::request::Parts, consumers: &'a Consumers) -> Self {
        Req {
            parts,
            host: "h",
            conn: ConnInfo {
                remote: "10.0.0.1:1234".parse().unwrap(),
                local: "127.0.0.1:9080".parse().unwrap(),
                scheme: "http",
            },
            https_port: 443,
            consumers,
            route_id: None,
            service_id: None,
            consumer: None,
            now: Default::default(),
        }
    }
}

impl Req<'_> {
    /// The time of the request, for the limiters: one clock read whoever asks.
    pub fn now(&self) -> std::time::Instant {
        *self.now.get_or_init(std::time::Instant::now)
    }

    /// The request's variables as they are now (after earlier plugins' changes).
    pub fn vars(&self) -> RequestVars<'_> {
        RequestVars {
            parts: self.parts,
            host: self.host,
            remote: self.conn.remote,
            local: self.conn.local,
            scheme: self.conn.scheme,
            consumer: self.consumer.as_deref().map(|c| c.username.as_str()),
            // Plugins run on requests whose map has been built.
            raw: None,
        }
    }
}

/// What one request's plugins decided, kept from the request phases to the response ones.
#[derive(Default)]
pub struct Run {
    /// Bit `i`: instance `i` of the chain runs for this request (its `_meta.filter` held).
    active: u64,
    /// `client-control.max_body_size`.
    pub max_body_size: Option<u64>,
    /// `proxy-rewrite.host`: the `Host` the upstream gets (unless `pass_host` says else).
    pub upstream_host: Option<HeaderValue>,
    /// `request-id`: the id, for the response header.
    pub request_id: Option<HeaderValue>,
    /// `cors`: the request's `Origin` and `Access-Control-Request-Headers`.
    pub origin: Option<HeaderValue>,
    pub cors_request_headers: Option<HeaderValue>,
    /// The consumer an authentication plugin recognised.
    pub consumer: Option<Arc<ConsumerRt>>,
    /// `real-ip`: the client behind the proxy that connected.
    pub real_ip: Option<std::net::IpAddr>,
    /// `fault-injection.delay`: how long the proxy waits before going on.
    pub delay: Option<Duration>,
    /// The upstream's status for this request (502/504 when it failed), `None` when a
    /// plugin answered or no upstream was reached (`api-breaker` counts only these).
    pub upstream_status: Option<u16>,
    /// What must live until the response has ended (a `limit-conn` slot): moved into
    /// the response body, or into a WebSocket tunnel.
    pub held: Vec<Arc<dyn Send + Sync>>,
    /// `limit-count`: the quota left, for the `X-RateLimit-*` headers.
    pub quota: Option<limit_count::Quota>,
    /// `http-logger`: the entry, to be completed when the response is over.
    pub log: Option<Box<http_logger::Draft>>,
    /// `proxy-mirror`: where this request's copy goes.
    pub mirror: Option<Box<proxy_mirror::Plan>>,
    /// `limit-count` with Redis: the count to await (see [`Deferred`]).
    pub deferred: Option<Deferred>,
    /// `prometheus`: the request is counted in the `apisix_*` metrics, so labelled.
    pub prometheus: Option<model::plugins::prometheus::Prometheus>,
    /// `response-rewrite`: what it read of the request for the response.
    pub response_rewrite: Option<Box<response_rewrite::Captured>>,
}

/// What a plugin does in each phase; every phase does nothing unless the plugin says so.
pub trait Phases: Send + Sync {
    /// Whether the plugin acts in the rewrite phase; when it does not, its `_meta.filter`
    /// is evaluated at the access phase instead.
    fn in_rewrite(&self) -> bool {
        true
    }
    fn rewrite(&self, _req: &mut Req<'_>, _run: &mut Run) -> Option<Answer> {
        None
    }
    fn access(&self, _req: &mut Req<'_>, _run: &mut Run) -> Option<Answer> {
        None
    }
    /// Once the request phases are over (the request proxied, or answered by a plugin,
    /// this one included or not): what the response phases will need of the request.
    fn before_response(&self, _req: &Req<'_>, _run: &mut Run) {}
    fn header_filter(&self, _run: &Run, _status: StatusCode, _headers: &mut HeaderMap) {}
    /// The whole response (status, headers, body); by default its headers only.
    fn response(&self, run: &Run, resp: &mut Response<RespBody>) {
        let status = resp.status();
        self.header_filter(run, status, resp.headers_mut());
    }
}

#[derive(Clone)]
struct Instance {
    name: &'static str,
    priority: i64,
    filter: Option<Arc<Expr>>,
    phases: Arc<dyn Phases>,
}

/// The plugins of one route, highest priority first.
pub struct Chain {
    instances: Vec<Instance>,
    /// It has a log-phase plugin (`prometheus`, `http-logger`), which needs the request
    /// timed and measured.
    logs: bool,
    /// A route's chain takes in the plugins of the consumer its request authenticates as;
    /// the global rules' and a consumer's own do not.
    merges_consumer: bool,
}

/// Whose plugins a chain is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Of {
    Route,
    GlobalRules,
    Consumer,
    /// A `traffic-split` target's own plugins, run after the route's.
    SplitTarget,
}

/// A chain holds at most this many instances (one bit each in [`Run`]); APISIX has about
/// 80 plugins in all, and a route uses a handful.
const MAX_INSTANCES: usize = 64;

impl Chain {
    /// The chain of a route's merged plugins, or `None` when none of them runs per request
    /// (`traffic-split` is the router's, not the chain's). Stateful plugins take their
    /// state from `states`, as `owner`'s (`routes/1`).
    pub fn compile(
        plugins: &Plugins,
        of: Of,
        env: ChainEnv<'_>,
        owner: &str,
    ) -> Option<Arc<Chain>> {
        let mut instances: Vec<Instance> = plugins
            .0
            .iter()
            .filter_map(|p| {
                // State that outlives snapshots: the owner's, for this configuration.
                let state_key = |owner: &str| StateKey {
                    owner: owner.to_string(),
                    plugin: p.name,
                    source: p.source.clone(),
                };
                let phases: Arc<dyn Phases> = match &p.config {
                    Config::ApiBreaker(c) => Arc::new(api_breaker::ApiBreaker {
                        conf: (**c).clone(),
                        state: env
                            .states
                            .get_or_insert(state_key(owner), api_breaker::Breaker::default),
                    }),
                    Config::BasicAuth(c) => Arc::new(basic_auth::BasicAuth(c.clone())),
                    Config::ClientControl(c) => Arc::new(client_control::ClientControl(*c)),
                    Config::ConsumerRestriction(c) => {
                        Arc::new(consumer_restriction::ConsumerRestriction(c.clone()))
                    }
                    Config::Cors(c) => {
                        Arc::new(cors::Cors::new((**c).clone(), env.metadata(p.name)))
                    }
                    Config::FaultInjection(c) => {
                        Arc::new(fault_injection::FaultInjection((**c).clone()))
                    }
                    Config::HmacAuth(c) => Arc::new(hmac_auth::HmacAuth((**c).clone())),
                    Config::HttpLogger(c) => {
                        // One batch queue per configuration, kept across snapshots.
                        let batcher = env.states.outbound().map(|out| {
                            let out = out.clone();
                            let conf = Arc::new((**c).clone());
                            env.states.get_or_insert(state_key(owner), || {
                                http_logger::Batcher::start(conf, out)
                            })
                        });
                        Arc::new(http_logger::HttpLogger::new((**c).clone(), batcher))
                    }
                    Config::IpRestriction(c) => Arc::new(ip_restriction::IpRestriction(c.clone())),
                    Config::JwtAuth(c) => Arc::new(jwt_auth::JwtAuth((**c).clone())),
                    Config::KeyAuth(c) => Arc::new(key_auth::KeyAuth(c.clone())),
                    Config::LimitConn(c) => Arc::new(limit_conn::LimitConn {
                        conf: (**c).clone(),
                        counts: env
                            .states
                            .get_or_insert(state_key(owner), limit_conn::Counts::default),
                    }),
                    Config::LimitReq(c) => Arc::new(limit_req::LimitReq {
                        conf: (**c).clone(),
                        buckets: env
                            .states
                            .get_or_insert(state_key(owner), limit_req::Buckets::default),
                    }),
                    Config::LimitCount(c) => {
                        // A group's count is shared by every route that names it.
                        let group = c.group.as_ref().map(|g| format!("limit-count-group/{g}"));
                        let scope = group.as_deref().unwrap_or(owner);
                        let key = state_key(scope);
                        let server = match &c.policy {
                            Policy::Local => None,
                            Policy::Redis(r) => Some(redis_count::Server::Single((**r).clone())),
                            Policy::RedisCluster(r) => {
                                Some(redis_count::Server::Cluster((**r).clone()))
                            }
                        };
                        let redis = server.map(|server| {
                            // One client per server, shared by every route using it.
                            let client = StateKey {
                                owner: "redis".into(),
                                plugin: p.name,
                                source: format!("{server:?}"),
                            };
                            let counter = env
                                .states
                                .get_or_insert(client, || redis_count::RedisCounter::new(server));
                            // A changed configuration counts afresh, as a local one does.
                            (counter, redis_count::key_prefix(scope, &p.source))
                        });
                        Arc::new(limit_count::LimitCount {
                            limit_value: limit_count::number(c.count),
                            conf: Arc::new((**c).clone()),
                            redis,
                            windows: env.states.get_or_insert(key, limit_count::Windows::default),
                            headers: match env.metadata(p.name) {
                                Some(Metadata::LimitCount(h)) => h.clone(),
                                _ => LimitCountHeaders::default(),
                            },
                        })
                    }
                    Config::Prometheus(c) => Arc::new(prometheus::Prometheus::new(*c)),
                    Config::ProxyMirror(c) => Arc::new(proxy_mirror::ProxyMirror {
                        conf: (**c).clone(),
                        to: env.states.outbound().and_then(|o| {
                            let target = crate::outbound::Target::parse(&c.host, false).ok()?;
                            Some((o.clone(), Arc::new(target)))
                        }),
                    }),
                    Config::ProxyRewrite(c) => {
                        Arc::new(proxy_rewrite::ProxyRewrite::new((**c).clone()))
                    }
                    Config::PublicApi(c) => Arc::new(public_api::PublicApi(c.clone())),
                    Config::RealIp(c) => Arc::new(real_ip::RealIp(c.clone())),
                    Config::Redirect(c) => Arc::new(redirect::Redirect(c.clone())),
                    Config::RefererRestriction(c) => {
                        Arc::new(referer_restriction::RefererRestriction(c.clone()))
                    }
                    Config::RequestId(c) => Arc::new(request_id::RequestId(c.clone())),
                    Config::ResponseRewrite(c) => {
                        Arc::new(response_rewrite::ResponseRewrite((**c).clone()))
                    }
                    Config::UaRestriction(c) => Arc::new(ua_restriction::UaRestriction(c.clone())),
                    Config::TrafficSplit(_) => return None,
                };
                Some(Instance {
                    name: p.name,
                    priority: p.priority,
                    filter: p.filter.clone().map(Arc::new),
                    phases,
                })
            })
            .collect();
        sort(&mut instances);
        instances.truncate(MAX_INSTANCES);
        let logs = instances
            .iter()
            .any(|i| LOG_PHASE_PLUGINS.contains(&i.name));
        (!instances.is_empty()).then(|| {
            Arc::new(Chain {
                instances,
                logs,
                merges_consumer: of == Of::Route,
            })
        })
    }

    /// This chain with `consumer`'s plugins over its own (APISIX's `merge_consumer_route`),
    /// after the rewrite phase: what `run` decided for the instances kept is carried over;
    /// the second value marks the consumer's instances.
    fn with_consumer(&self, consumer: &Chain, run: &mut Run, decided: &mut u64) -> (Chain, u64) {
        // (instance, its bit in this chain, or None for the consumer's)
        let mut all: Vec<(Instance, Option<u64>)> = consumer
            .instances
            .iter()
            .map(|i| (i.clone(), None))
            .chain(
                self.instances
                    .iter()
                    .enumerate()
                    .filter(|(_, i)| !consumer.instances.iter().any(|c| c.name == i.name))
                    .map(|(n, i)| (i.clone(), Some(1u64 << n))),
            )
            .collect();
        all.sort_by(|(a, _), (b, _)| order(a, b));
        all.truncate(MAX_INSTANCES);
        let (mut active, mut now_decided, mut from_consumer) = (0u64, 0u64, 0u64);
        for (n, (_, old)) in all.iter().enumerate() {
            let bit = 1u64 << n;
            match old {
                Some(old) => {
                    if run.active & old != 0 {
                        active |= bit;
                    }
                    if *decided & old != 0 {
                        now_decided |= bit;
                    }
                }
                None => from_consumer |= bit,
            }
        }
        run.active = active;
        *decided = now_decided;
        let instances: Vec<Instance> = all.into_iter().map(|(i, _)| i).collect();
        let chain = Chain {
            logs: instances
                .iter()
                .any(|i| LOG_PHASE_PLUGINS.contains(&i.name)),
            instances,
            merges_consumer: false,
        };
        (chain, from_consumer)
    }

    /// Whether it has a log-phase plugin.
    pub fn logs(&self) -> bool {
        self.logs
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.instances.iter().map(|i| i.name)
    }

    /// `rewrite`, then `access`, of every instance whose filter holds; stops at the first
    /// answer. When the rewrite phase authenticated a consumer with plugins of its own,
    /// the rest runs on the merged chain, which is returned: the response phases run on it.
    pub fn request(
        self: &Arc<Self>,
        req: &mut Req<'_>,
        run: &mut Run,
    ) -> (Option<Answer>, Option<Arc<Chain>>) {
        // A filter is evaluated once, just before the first phase its plugin runs in (as
        // APISIX caches it): an access-phase plugin's filter sees what rewrite-phase
        // plugins did, the consumer included.
        let mut decided = 0u64;
        if let Some(a) = self.phase(Phase::Rewrite, req, run, &mut decided, u64::MAX) {
            self.before_response(req, run, &mut decided);
            return (Some(a), None);
        }
        let consumer = match self.merges_consumer {
            true => req.consumer.as_ref().and_then(|c| c.chain.clone()),
            false => None,
        };
        let Some(consumer) = consumer else {
            let answer = self.phase(Phase::Access, req, run, &mut decided, u64::MAX);
            self.before_response(req, run, &mut decided);
            return (answer, None);
        };
        let (merged, from_consumer) = self.with_consumer(&consumer, run, &mut decided);
        // The consumer's plugins had no rewrite phase yet (APISIX's rewrite_in_consumer).
        let answer = merged
            .phase(Phase::Rewrite, req, run, &mut decided, from_consumer)
            .or_else(|| merged.phase(Phase::Access, req, run, &mut decided, u64::MAX));
        merged.before_response(req, run, &mut decided);
        (answer, Some(Arc::new(merged)))
    }

    /// As APISIX runs every plugin's header filter on an answer a plugin gave early, the
    /// plugins that did not get to run are decided now, and each one that runs reads what
    /// its response phases need.
    fn before_response(&self, req: &Req<'_>, run: &mut Run, decided: &mut u64) {
        for (i, inst) in self.instances.iter().enumerate() {
            let bit = 1u64 << i;
            if *decided & bit == 0 {
                *decided |= bit;
                if inst.filter.as_ref().is_none_or(|f| f.eval(&req.vars())) {
                    run.active |= bit;
                }
            }
            if run.active & bit != 0 {
                inst.phases.before_response(req, run);
            }
        }
    }

    /// One phase over the instances in `mask`.
    fn phase(
        &self,
        phase: Phase,
        req: &mut Req<'_>,
        run: &mut Run,
        decided: &mut u64,
        mask: u64,
    ) -> Option<Answer> {
        for (i, inst) in self.instances.iter().enumerate() {
            let bit = 1u64 << i;
            if mask & bit == 0 {
                continue;
            }
            if *decided & bit == 0 && (phase == Phase::Access || inst.phases.in_rewrite()) {
                *decided |= bit;
                if inst.filter.as_ref().is_none_or(|f| f.eval(&req.vars())) {
                    run.active |= bit;
                }
            }
            if run.active & bit == 0 {
                continue;
            }
            let answer = match phase {
                Phase::Rewrite => inst.phases.rewrite(req, run),
                Phase::Access => inst.phases.access(req, run),
            };
            if answer.is_some() {
                return answer;
            }
        }
        None
    }

    /// The response phases of every instance that ran, on whatever answers the client.
    pub fn response(&self, run: &Run, resp: &mut Response<RespBody>) {
        for (i, inst) in self.instances.iter().enumerate() {
            if run.active & (1 << i) != 0 {
                inst.phases.response(run, resp);
            }
        }
    }
}

fn order(a: &Instance, b: &Instance) -> std::cmp::Ordering {
    // Higher priority first; equal priorities by name, so every replica runs one order.
    b.priority.cmp(&a.priority).then(a.name.cmp(b.name))
}

fn sort(instances: &mut [Instance]) {
    instances.sort_by(order);
}

/// Removes the cookie `name` from the request's `Cookie` headers, keeping the others.
pub fn without_cookie(headers: &mut HeaderMap, name: &str) {
    let kept: Vec<String> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty() && c.split_once('=').map_or(*c, |(k, _)| k) != name)
        .map(str::to_string)
        .collect();
    headers.remove(http::header::COOKIE);
    if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
        if !kept.is_empty() {
            headers.insert(http::header::COOKIE, v);
        }
    }
}

/// The chains that ran for one request (the global rules', then the route's), each with
/// what it decided; empty, and never allocated, for a request no plugin touched.
#[derive(Default)]
pub struct Ran {
    chains: Vec<(Arc<Chain>, Run)>,
    /// A plugin answered the request itself.
    answered: bool,
    /// Where the chosen `traffic-split` target's chain is in `chains`, once it ran.
    target_at: Option<usize>,
}

impl Ran {
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }

    /// `chain`'s request phases; the consumer found by an earlier chain stays on `req`.
    pub fn request(&mut self, chain: &Arc<Chain>, req: &mut Req<'_>) -> Option<Answer> {
        if self.chains.capacity() == 0 {
            // The global rules' chain and the route's: sized for both at once, which
            // also keeps the allocation small enough for the allocator's fast path.
            self.chains.reserve_exact(2);
        }
        // Made in place: a `Run` is a few hundred bytes, not worth a copy per request.
        self.chains.push((chain.clone(), Run::default()));
        let (ran_chain, run) = self.chains.last_mut()?;
        let (answer, merged) = chain.request(req, run);
        run.consumer = req.consumer.clone();
        if let Some(merged) = merged {
            *ran_chain = merged;
        }
        self.answered |= answer.is_some();
        answer
    }

    /// The chosen `traffic-split` target's own chain, after the route's.
    pub fn request_target(&mut self, chain: &Arc<Chain>, req: &mut Req<'_>) -> Option<Answer> {
        self.target_at = Some(self.chains.len());
        self.request(chain, req)
    }

    /// Whether a chain that ran has a log-phase plugin.
    pub fn logs(&self) -> bool {
        self.chains.iter().any(|(c, _)| c.logs())
    }

    /// Whether a plugin left a check to await ([`Deferred`]).
    pub fn has_deferred(&self) -> bool {
        self.chains.iter().any(|(_, r)| r.deferred.is_some())
    }

    /// Awaits the checks plugins deferred, in the order their chains ran; the first
    /// answer (a rejection) stands.
    pub async fn settle(&mut self) -> Option<Answer> {
        let mut answer = None;
        for (_, run) in &mut self.chains {
            if let Some(check) = run.deferred.take() {
                let settled = check.await;
                if settled.quota.is_some() {
                    run.quota = settled.quota;
                }
                if answer.is_none() {
                    answer = settled.answer;
                }
            }
            // A refusal stands: a later chain's count is not taken for a request that
            // is already refused, nor waited for.
            if answer.is_some() {
                break;
            }
        }
        self.answered |= answer.is_some();
        // A refused request was sent to no target: its target's plugins (which run
        // before the count is known) do not act on the refusal.
        if let (Some(_), Some(at)) = (&answer, self.target_at.take()) {
            self.chains.truncate(at);
        }
        answer
    }

    pub fn real_ip(&self) -> Option<std::net::IpAddr> {
        self.last(|r| r.real_ip)
    }

    /// The `fault-injection` delays of every chain, summed.
    pub fn delay(&self) -> Option<Duration> {
        self.chains
            .iter()
            .filter_map(|(_, r)| r.delay)
            .reduce(|a, b| a + b)
    }

    /// Whether a plugin answered the request instead of the upstream.
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// What the upstream answered (or 502/504 when it failed), for the response phases.
    pub fn set_upstream_status(&mut self, status: u16) {
        for (_, run) in &mut self.chains {
            run.upstream_status = Some(status);
        }
    }

    /// The header filters of every chain that ran, in the order they ran.
    pub fn response(&self, resp: &mut Response<RespBody>) {
        for (chain, run) in &self.chains {
            chain.response(run, resp);
        }
    }

    /// The route's setting over the global rules'.
    fn last<T>(&self, f: impl Fn(&Run) -> Option<T>) -> Option<T> {
        self.chains.iter().rev().find_map(|(_, r)| f(r))
    }

    /// What the response (or a WebSocket tunnel) must hold until it ends.
    pub fn held(&self) -> Vec<Arc<dyn Send + Sync>> {
        self.chains
            .iter()
            .flat_map(|(_, r)| r.held.iter().cloned())
            .collect()
    }

    /// The `prometheus` plugin's settings when it ran for this request (the route's
    /// over the global rules').
    pub fn prometheus(&self) -> Option<model::plugins::prometheus::Prometheus> {
        self.last(|r| r.prometheus)
    }

    /// The `http-logger` entries of this request, one per chain that has the plugin.
    pub fn take_logs(&mut self) -> impl Iterator<Item = http_logger::Draft> + '_ {
        self.chains
            .iter_mut()
            .filter_map(|(_, r)| r.log.take().map(|d| *d))
    }

    /// `proxy-mirror`'s plan for this request (the route's over the global rules').
    pub fn mirror(&self) -> Option<&proxy_mirror::Plan> {
        self.chains
            .iter()
            .rev()
            .find_map(|(_, r)| r.mirror.as_deref())
    }

    pub fn max_body_size(&self) -> Option<u64> {
        self.last(|r| r.max_body_size)
    }

    pub fn upstream_host(&self) -> Option<HeaderValue> {
        self.last(|r| r.upstream_host.clone())
    }

    pub fn consumer_arc(&self) -> Option<Arc<ConsumerRt>> {
        self.chains
            .iter()
            .rev()
            .find_map(|(_, r)| r.consumer.clone())
    }

    pub fn consumer(&self) -> Option<&ConsumerRt> {
        self.chains
            .iter()
            .rev()
            .find_map(|(_, r)| r.consumer.as_deref())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Rewrite,
    Access,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn test_env() -> ChainEnv<'static> {
        static STATES: std::sync::LazyLock<crate::plugin_state::PluginStates> =
            std::sync::LazyLock::new(Default::default);
        static NONE: std::collections::BTreeMap<
            model::Id,
            crate::state::Entry<model::PluginMetadata>,
        > = std::collections::BTreeMap::new();
        ChainEnv {
            states: &STATES,
            metadata: &NONE,
        }
    }

    fn chain(v: serde_json::Value) -> Arc<Chain> {
        let plugins = model::plugins::parse(v.as_object(), model::plugins::Scope::Route).unwrap();
        Chain::compile(&plugins, Of::Route, test_env(), "routes/1").unwrap()
    }

    fn request(uri: &str) -> http::request::Parts {
        http::Request::builder()
            .uri(uri)
            .header("host", "h")
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn order_is_priority_then_name_and_meta_overrides_it() {
        let c = chain(json!({
            "proxy-rewrite": {"uri": "/x"},
            "request-id": {},
            "cors": {},
            "redirect": {"uri": "/r", "_meta": {"priority": 20000}},
            "traffic-split": {"rules": []},
        }));
        let names: Vec<_> = c.names().collect();
        assert_eq!(names, ["redirect", "request-id", "cors", "proxy-rewrite"]);
        let none = model::plugins::parse(
            json!({"traffic-split": {"rules": []}}).as_object(),
            model::plugins::Scope::Route,
        )
        .unwrap();
        assert!(
            Chain::compile(&none, Of::Route, test_env(), "routes/1").is_none(),
            "nothing to run per request"
        );
    }

    /// A consumer's plugins replace the route's of the same name and add their own, in
    /// priority order; what the rewrite phase decided for the route's is kept.
    #[test]
    fn consumer_plugins_merge_over_the_routes() {
        let mut state = crate::state::State::default();
        for (user, plugins) in [
            ("jack", json!({"key-auth": {"key": "k-jack"}})),
            (
                "rose",
                json!({"key-auth": {"key": "k-rose"},
                    "proxy-rewrite": {"uri": "/consumer"},
                    "ip-restriction": {"blacklist": ["10.0.0.0/8"]}}),
            ),
        ] {
            state.apply(
                "/gw",
                crate::state::Change::Put {
                    key: format!("/gw/consumers/{user}"),
                    value: json!({"username": user, "plugins": plugins})
                        .to_string()
                        .into_bytes(),
                },
            );
        }
        let consumers = Consumers::build(&state, &crate::plugin_state::PluginStates::default());
        let c = chain(json!({
            "key-auth": {},
            "proxy-rewrite": {"uri": "/route"},
            "request-id": {"_meta": {"filter": [["arg_id", "==", "1"]]}},
        }));
        for (key, uri, path, status, names) in [
            (
                "k-jack",
                "/a?id=1",
                "/route",
                None,
                vec!["request-id", "key-auth", "proxy-rewrite"],
            ),
            (
                "k-rose",
                "/a?id=1",
                "/consumer",
                Some(403),
                vec!["request-id", "ip-restriction", "key-auth", "proxy-rewrite"],
            ),
        ] {
            let mut parts = request(uri);
            parts.headers.insert("apikey", key.parse().unwrap());
            let mut run = Run::default();
            let mut req = Req::for_test(&mut parts, &consumers);
            let (answer, merged) = c.request(&mut req, &mut run);
            assert_eq!(answer.map(|a| a.status.as_u16()), status, "{key}");
            assert_eq!(parts.uri.path(), path, "{key}");
            let ran = merged.unwrap_or_else(|| c.clone());
            assert_eq!(ran.names().collect::<Vec<_>>(), names, "{key}");
            // request-id's filter held before the merge and still does after it.
            let request_id = names.iter().position(|n| *n == "request-id").unwrap();
            assert_ne!(run.active & (1 << request_id), 0, "{key}");
        }
    }

    #[test]
    fn a_filter_decides_per_request_and_an_answer_stops_the_chain() {
        let c = chain(json!({
            "ip-restriction": {"blacklist": ["10.0.0.0/8"], "_meta": {"filter": [["arg_guard", "==", "on"]]}},
            "proxy-rewrite": {"uri": "/rewritten"},
        }));
        for (uri, blocked) in [
            ("/a?guard=on", true),
            ("/a?guard=off", false),
            ("/a", false),
        ] {
            let mut parts = request(uri);
            let mut run = Run::default();
            let consumers = Consumers::default();
            let mut req = Req::for_test(&mut parts, &consumers);
            let (answer, _) = c.request(&mut req, &mut run);
            assert_eq!(
                answer.map(|a| a.status.as_u16()),
                blocked.then_some(403),
                "{uri}"
            );
            // proxy-rewrite (1008) runs in rewrite, before ip-restriction's access (3000).
            assert_eq!(parts.uri.path(), "/rewritten", "{uri}");
        }
    }
}
