//! The immutable routing snapshot: compiled from `State` away from requests, swapped in
//! whole. A request loads one snapshot and uses only it.
use crate::balancer::Balancer;
use crate::consumers::Consumers;
use crate::lb::chash::Ring;
use crate::lb::ewma::Ewma;
use crate::lb::health::{self, Candidate, Outcome, Thresholds, Transition};
use crate::lb::least_conn::LeastConn;
use crate::lb::NodeState;
use crate::metrics::ConfigCounts;
use crate::plugin_state::{ChainEnv, PluginStates};
use crate::plugins::{Chain, Of};
use crate::router::{RouteSpec, Router};
use crate::split::{Choice, Split};
use crate::state::{Dirty, State};

/// How many invalid entries `/status` lists (all are counted).
pub const MAX_INVALID_SHOWN: usize = 100;
use crate::tls::CertTable;
use crate::transport::{server_name, Transport};
use http::HeaderValue;
use model::checks::Checks;
use model::timeout::Timeout;
use model::upstream::PassHost;
use model::upstream::{HashOn, LbType};
use model::vars::VarSource;
use model::{Id, Route, Service, Upstream};
use rustls::pki_types::ServerName;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub struct Snapshot {
    pub revision: i64,
    pub router: Router<Arc<RouteTarget>>,
    /// Every valid upstream by key (`upstreams/1`, or the owner's key for inline ones:
    /// `routes/7`, `services/3`). Routes refer to upstreams by key, so a node change
    /// replaces one entry here and rebuilds no route table. Persistent map: the next
    /// compile shares it and copies only what changes.
    pub upstreams: imbl::HashMap<String, Arc<UpstreamRt>>,
    /// The upstreams with `checks`: probed by the active checker, shown in `/status`.
    pub checked: imbl::HashMap<String, Arc<UpstreamRt>>,
    /// Every valid route's compiled `traffic-split`, by route id: route targets share it,
    /// and the next compile removes its inline upstreams and carries its balancers over.
    pub splits: imbl::HashMap<Id, Arc<Split>>,
    pub counts: ConfigCounts,
    /// The first [`MAX_INVALID_SHOWN`] invalid entries and why, for `/status`; rebuilt
    /// only when that list changed.
    pub invalid: Arc<Vec<(model::Kind, Id, String)>>,
    /// Server certificates by SNI for the HTTPS listener, rebuilt only when an ssl changes.
    pub certs: Arc<CertTable>,
    /// Consumers by credential, rebuilt only when a consumer changes.
    pub consumers: Arc<Consumers>,
    /// The plugins of every global rule, run for every request before the route's;
    /// rebuilt only when a global rule changes.
    pub global: Option<Arc<Chain>>,
    /// Plugin state that outlives snapshots (rate-limit windows), handed from each
    /// snapshot to the next.
    pub states: Arc<PluginStates>,
}

/// What a matched route sends its request to.
pub struct RouteTarget {
    pub route_id: Id,
    pub service_id: Option<Id>,
    /// The key of the upstream in [`Snapshot::upstreams`], or why the route has none.
    pub upstream: Result<String, String>,
    /// The route's own `timeout`, which overrides the upstream's.
    pub timeout: Option<Timeouts>,
    /// The route's `traffic-split`, which may send a request elsewhere than `upstream`.
    pub split: Option<Arc<Split>>,
    /// `enable_websocket` of the route, else of its service.
    pub websocket: bool,
    /// The plugins of the route over those of its service, compiled; `None` when there
    /// are none to run per request.
    pub chain: Option<Arc<Chain>>,
    /// What the `prometheus` plugin labels the route's requests with.
    pub labels: Arc<crate::prometheus::RouteLabels>,
}
/// An upstream ready for requests.
pub struct UpstreamRt {
    pub key: String,
    pub nodes: Vec<NodeRt>,
    /// Shared with the previous snapshot's upstream when the nodes are the same.
    pub balancer: Arc<Balancer>,
    pub method: Method,
    /// Round robin over nodes that are all equal in priority, zone-less and never checked:
    /// the common case, which skips the candidate filtering.
    plain: bool,
    /// `checks` as configured: active probes run beside the snapshots (`health_check.rs`).
    pub checks: Option<Checks>,
    /// Thresholds for outcomes seen on real traffic, when `checks.passive` is set.
    pub passive: Option<Thresholds>,
    pub pass_host: PassHost,
    pub upstream_host: Option<HeaderValue>,
    pub retries: u32,
    pub retry_timeout: Option<Duration>,
    pub timeout: Timeouts,
    pub pool: PoolSettings,
    /// HTTP/1.1 or HTTP/2, in the clear or over TLS.
    pub transport: Transport,
}

pub struct NodeRt {
    /// `host:port`, what we connect to.
    pub addr: String,
    /// The same, shared by the responses that name it (the access log's
    /// `$upstream_addr`), and its `node` label for the metrics (the IP alone).
    pub shown: Arc<str>,
    pub label: Arc<str>,
    /// Connections to the node are pooled under this: the address, plus the transport's
    /// scheme, server name and TLS settings when it is not plain HTTP.
    pub pool_key: String,
    /// The name its certificate must carry, sent as SNI (TLS transports only).
    pub tls_name: Option<ServerName<'static>>,
    /// The `Host` sent with `pass_host: node` (port omitted when it is the scheme's default).
    pub host_header: Option<HeaderValue>,
    pub weight: u32,
    /// Higher first; lower priorities are used only when every node above is down.
    pub priority: i32,
    pub zone: Option<String>,
    /// In-flight count, latency estimate and health: carried over from the previous
    /// snapshot's node with the same address, so a swap resets none of them.
    pub state: NodeState,
}

/// How a node is chosen among the candidates health, priority and zone leave.
pub enum Method {
    /// Smooth weighted round robin, with [`UpstreamRt::balancer`].
    RoundRobin,
    LeastConn(LeastConn),
    Ewma(Ewma),
    Chash {
        ring: Ring,
        hash_on: HashOn,
        key: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolSettings {
    pub size: usize,
    pub idle_timeout: Duration,
    pub requests: u32,
}

impl Default for PoolSettings {
    fn default() -> Self {
        let d = model::upstream::KeepalivePool::default();
        PoolSettings {
            size: d.size as usize,
            idle_timeout: secs(d.idle_timeout),
            requests: d.requests,
        }
    }
}

impl Snapshot {
    pub fn empty() -> Snapshot {
        Snapshot {
            revision: 0,
            router: Router::build(Vec::new()),
            upstreams: imbl::HashMap::new(),
            checked: imbl::HashMap::new(),
            splits: imbl::HashMap::new(),
            counts: ConfigCounts::default(),
            invalid: Arc::default(),
            certs: Arc::default(),
            consumers: Arc::default(),
            global: None,
            states: Arc::default(),
        }
    }

    /// The upstream `target` sends to in this snapshot, or why there is none (503).
    pub fn upstream_of(&self, target: &RouteTarget) -> Result<Arc<UpstreamRt>, String> {
        let key = target.upstream.as_ref().map_err(|why| why.clone())?;
        self.upstream_by_key(key)
    }

    /// The upstream for one request: the route's `traffic-split` decides first (advancing
    /// its rotation), else the route's own upstream. With it, the chosen split target's
    /// own plugins, which run after the route's.
    pub fn upstream_for<'t>(
        &self,
        target: &'t RouteTarget,
        vars: &dyn VarSource,
    ) -> (Result<Arc<UpstreamRt>, String>, Option<&'t Arc<Chain>>) {
        let Some(picked) = target.split.as_ref().map(|s| s.choose(vars)) else {
            return (self.upstream_of(target), None);
        };
        let upstream = match picked.choice {
            Choice::Upstream(key) => self.upstream_by_key(key),
            Choice::RouteUpstream => self.upstream_of(target),
        };
        (upstream, picked.chain)
    }

    fn upstream_by_key(&self, key: &str) -> Result<Arc<UpstreamRt>, String> {
        self.upstreams.get(key).cloned().ok_or_else(|| {
            let (kind, id) = key.split_once('/').unwrap_or(("upstream", key));
            let kind = kind.trim_end_matches('s');
            format!("{kind} {id} does not exist or is invalid")
        })
    }

    /// Compiles `state` into a snapshot, redoing only what `dirty` names unless it says
    /// `all`. Balancer state of upstreams whose nodes did not change is carried over from
    /// `prev`, so a route change does not reset the rotation.
    pub fn compile(state: &State, dirty: &Dirty, revision: i64, prev: &Snapshot) -> Snapshot {
        // States no snapshot holds any more are dropped first, so that a configuration
        // changed back to an earlier one starts afresh rather than finding its old count.
        prev.states.sweep();
        let (
            router,
            Upstreams {
                all,
                checked,
                splits,
            },
        ) = if dirty.all {
            compile_all(state, prev)
        } else {
            compile_changes(state, dirty, prev)
        };
        let states = &prev.states;
        let next = Snapshot {
            revision,
            router,
            upstreams: all,
            checked,
            splits,
            counts: state.counts(),
            invalid: if dirty.all || dirty.errors {
                Arc::new(
                    state
                        .errors()
                        .iter()
                        .take(MAX_INVALID_SHOWN)
                        .map(|((kind, id), e)| (*kind, id.clone(), e.clone()))
                        .collect(),
                )
            } else {
                prev.invalid.clone()
            },
            // A handful of certificates even in large setups: the table is rebuilt whole.
            certs: if dirty.all || !dirty.ssls.is_empty() {
                Arc::new(CertTable::build(&state.certs))
            } else {
                prev.certs.clone()
            },
            consumers: if dirty.all
                || !dirty.consumers.is_empty()
                || !dirty.consumer_groups.is_empty()
            {
                Arc::new(Consumers::build(state, states))
            } else {
                prev.consumers.clone()
            },
            global: if dirty.all || !dirty.global_rules.is_empty() {
                global_chain(state, states)
            } else {
                prev.global.clone()
            },
            states: states.clone(),
        };
        states.sweep();
        next
    }
}

/// A route's plugins over its plugin config's over its service's (APISIX's precedence).
fn route_chain(
    env: ChainEnv<'_>,
    id: &Id,
    route: &Route,
    service: Option<&Service>,
    plugin_config: Option<&model::PluginConfig>,
) -> Option<Arc<Chain>> {
    let mut plugins = std::borrow::Cow::Borrowed(&route.parsed_plugins);
    for under in [
        plugin_config.map(|p| &p.parsed_plugins),
        service.map(|s| &s.parsed_plugins),
    ]
    .into_iter()
    .flatten()
    {
        if !under.is_empty() {
            plugins = std::borrow::Cow::Owned(under.merged(&plugins));
        }
    }
    Chain::compile(&plugins, Of::Route, env, &route_key(id))
}

/// Every valid global rule's plugins as one chain. A plugin in several rules runs once,
/// configured as in the rule with the smallest id.
fn global_chain(state: &State, states: &PluginStates) -> Option<Arc<Chain>> {
    let mut all = model::plugins::Plugins::default();
    let mut ids: Vec<&Id> = state.global_rules.keys().collect();
    ids.sort_by_key(|id| id.sort_key());
    for id in ids {
        if let Ok(rule) = &state.global_rules[id].parsed {
            all = rule.parsed_plugins.merged(&all);
        }
    }
    let env = ChainEnv {
        states,
        metadata: &state.plugin_metadata,
    };
    Chain::compile(&all, Of::GlobalRules, env, "global_rules")
}

#[derive(Default)]
struct Upstreams {
    all: imbl::HashMap<String, Arc<UpstreamRt>>,
    checked: imbl::HashMap<String, Arc<UpstreamRt>>,
    splits: imbl::HashMap<Id, Arc<Split>>,
}

fn compile_all(state: &State, prev: &Snapshot) -> (Router<Arc<RouteTarget>>, Upstreams) {
    let mut upstreams = Upstreams::default();
    refresh_upstreams(
        &mut upstreams,
        state,
        prev,
        state.upstreams.keys(),
        state.services.keys(),
        state.routes.keys(),
    );
    let specs = state
        .routes
        .keys()
        .filter_map(|id| route_spec(state, id, &upstreams.splits, &prev.states))
        .collect();
    (Router::build(specs), upstreams)
}

fn compile_changes(
    state: &State,
    dirty: &Dirty,
    prev: &Snapshot,
) -> (Router<Arc<RouteTarget>>, Upstreams) {
    let mut upstreams = Upstreams {
        all: prev.upstreams.clone(),
        checked: prev.checked.clone(),
        splits: prev.splits.clone(),
    };
    refresh_upstreams(
        &mut upstreams,
        state,
        prev,
        dirty.upstreams.iter(),
        dirty.services.iter(),
        dirty.routes.iter(),
    );
    // A route depends on its service (hosts, upstream, whether it is served at all) but
    // only on upstreams by key, so upstream changes never touch the router.
    let mut redo: BTreeSet<&Id> = dirty.routes.iter().collect();
    if !dirty.services.is_empty() || !dirty.plugin_configs.is_empty() {
        redo.extend(state.routes.iter().filter_map(|(id, e)| {
            let r = e.parsed.as_ref().ok()?;
            let by_service = r
                .service_id
                .as_ref()
                .is_some_and(|s| dirty.services.contains(s));
            let by_config = r
                .plugin_config_id
                .as_ref()
                .is_some_and(|p| dirty.plugin_configs.contains(p));
            (by_service || by_config).then_some(id)
        }));
    }
    let router = if redo.is_empty() {
        prev.router.clone()
    } else {
        prev.router.update(redo.into_iter().map(|id| {
            let spec = route_spec(state, id, &upstreams.splits, &prev.states);
            (id.clone(), spec)
        }))
    };
    (router, upstreams)
}

/// Re-derives the upstream runtimes the given ids own, by kind: an upstream's own, a
/// service's or route's inline one, and a route's `traffic-split` upstreams. The one
/// place both compile paths go through, so they cannot drift apart.
fn refresh_upstreams<'a>(
    upstreams: &mut Upstreams,
    state: &State,
    prev: &Snapshot,
    upstream_ids: impl Iterator<Item = &'a Id>,
    service_ids: impl Iterator<Item = &'a Id>,
    route_ids: impl Iterator<Item = &'a Id>,
) {
    let dns = state.dns();
    for id in upstream_ids {
        set_upstream(
            upstreams,
            upstream_key(id),
            upstream_def(state, id),
            prev,
            dns,
        );
    }
    for id in service_ids {
        set_upstream(
            upstreams,
            service_key(id),
            service_inline(state, id),
            prev,
            dns,
        );
    }
    for id in route_ids {
        set_upstream(upstreams, route_key(id), route_inline(state, id), prev, dns);
        set_split(
            upstreams,
            id,
            valid_route(state, id),
            prev,
            dns,
            &state.plugin_metadata,
        );
    }
}

fn upstream_key(id: &Id) -> String {
    format!("upstreams/{id}")
}
fn service_key(id: &Id) -> String {
    format!("services/{id}")
}
fn route_key(id: &Id) -> String {
    format!("routes/{id}")
}

fn upstream_def<'a>(state: &'a State, id: &Id) -> Option<&'a Upstream> {
    state.upstreams.get(id)?.parsed.as_deref().ok()
}
fn valid_service<'a>(state: &'a State, id: &Id) -> Option<&'a Arc<Service>> {
    state.services.get(id)?.parsed.as_ref().ok()
}
fn service_inline<'a>(state: &'a State, id: &Id) -> Option<&'a Upstream> {
    valid_service(state, id)?.upstream.as_ref()
}
fn valid_route<'a>(state: &'a State, id: &Id) -> Option<&'a Route> {
    state.routes.get(id)?.parsed.as_deref().ok()
}
fn route_inline<'a>(state: &'a State, id: &Id) -> Option<&'a Upstream> {
    valid_route(state, id)?.upstream.as_ref()
}

/// Puts the runtime for `def` under `key` (carrying the balancer over from `prev` when
/// the nodes stayed), or removes the key when there is no valid definition.
fn set_upstream(
    map: &mut Upstreams,
    key: String,
    def: Option<&Upstream>,
    prev: &Snapshot,
    dns: &BTreeMap<String, Vec<IpAddr>>,
) {
    match def {
        Some(def) => {
            let rt = Arc::new(UpstreamRt::new(
                key.clone(),
                def,
                prev.upstreams.get(&key),
                dns,
            ));
            if rt.checks.is_some() {
                map.checked.insert(key.clone(), rt.clone());
            } else {
                map.checked.remove(&key);
            }
            map.all.insert(key, rt);
        }
        None => {
            map.all.remove(&key);
            map.checked.remove(&key);
        }
    }
}

/// Replaces route `id`'s compiled `traffic-split` and the inline upstreams it owns
/// (`routes/7/split/0/1`): the old ones go, the new ones come with their balancer and node
/// state carried over by key, as for any other upstream.
fn set_split(
    map: &mut Upstreams,
    id: &Id,
    route: Option<&Route>,
    prev: &Snapshot,
    dns: &BTreeMap<String, Vec<IpAddr>>,
    metadata: &BTreeMap<Id, crate::state::Entry<model::PluginMetadata>>,
) {
    if let Some(old) = map.splits.remove(id) {
        for key in &old.inline_keys {
            map.all.remove(key);
            map.checked.remove(key);
        }
    }
    let Some(def) = route.and_then(|r| r.parsed_plugins.traffic_split()) else {
        return;
    };
    let chain_of = |plugins: &model::plugins::Plugins, owner: &str| {
        let env = ChainEnv {
            states: &prev.states,
            metadata,
        };
        Chain::compile(plugins, Of::SplitTarget, env, owner)
    };
    let (split, inline) = Split::compile(
        &route_key(id),
        def,
        upstream_key,
        chain_of,
        prev.splits.get(id).map(|s| &**s),
    );
    for (key, up) in inline {
        set_upstream(map, key, Some(up), prev, dns);
    }
    map.splits.insert(id.clone(), Arc::new(split));
}

/// The route as the router needs it, or `None` when it is not served: invalid, disabled,
/// or its service is missing or invalid (without the service's hosts it would otherwise
/// match every host, so it is left out until the service is fixed).
fn route_spec(
    state: &State,
    id: &Id,
    splits: &imbl::HashMap<Id, Arc<Split>>,
    states: &PluginStates,
) -> Option<RouteSpec<Arc<RouteTarget>>> {
    let route = state.routes.get(id)?.parsed.as_ref().ok()?;
    if !route.enabled() {
        return None;
    }
    let service = match &route.service_id {
        Some(sid) => Some((sid, valid_service(state, sid)?)),
        None => None,
    };
    // Without the plugins it names (an authentication, say) the route must not be served.
    let plugin_config = match &route.plugin_config_id {
        Some(pid) => Some(state.plugin_configs.get(pid)?.parsed.as_ref().ok()?),
        None => None,
    };
    let hosts = match (route.own_hosts().is_empty(), &service) {
        (true, Some((_, svc))) => svc.hosts.clone().unwrap_or_default(),
        _ => route.own_hosts().into_iter().cloned().collect(),
    };
    let target = Arc::new(RouteTarget {
        route_id: id.clone(),
        service_id: route.service_id.clone(),
        upstream: target_upstream(id, route, service),
        timeout: route.timeout.map(Timeouts::from),
        split: splits.get(id).cloned(),
        websocket: route
            .enable_websocket
            .or(service.and_then(|(_, s)| s.enable_websocket))
            .unwrap_or(false),
        chain: route_chain(
            ChainEnv {
                states,
                metadata: &state.plugin_metadata,
            },
            id,
            route,
            service.map(|(_, s)| &**s),
            plugin_config.map(|p| &**p),
        ),
        labels: Arc::new(crate::prometheus::RouteLabels {
            id: id.as_str().into(),
            name: route.name.as_deref().map(Arc::from),
            service: route.service_id.as_ref().map_or("", |s| s.as_str()).into(),
            service_name: service.and_then(|(_, s)| s.name.as_deref().map(Arc::from)),
            uris: route
                .paths()
                .into_iter()
                .map(|p| (p.clone(), Arc::from(p.to_string())))
                .collect(),
            hosts: hosts
                .iter()
                .map(|h| (h.clone(), Arc::from(h.to_string())))
                .collect(),
        }),
    });
    Some(RouteSpec {
        id: id.clone(),
        hosts,
        paths: route.paths().into_iter().cloned().collect(),
        methods: route
            .methods
            .as_ref()
            .map(|ms| ms.iter().map(|m| m.0.clone()).collect()),
        remote_addrs: route.remote_ranges(),
        vars: route.vars.as_ref().map(|v| v.0.clone()),
        priority: route.priority,
        create_time: route.create_time.unwrap_or(0),
        value: target,
    })
}

/// The key of the route's inline upstream, else its `upstream_id`, else its service's
/// (inline, then id). Whether that key exists is looked up per request.
fn target_upstream(
    route_id: &Id,
    route: &Route,
    service: Option<(&Id, &Arc<Service>)>,
) -> Result<String, String> {
    if route.upstream.is_some() {
        return Ok(route_key(route_id));
    }
    if let Some(uid) = &route.upstream_id {
        return Ok(upstream_key(uid));
    }
    match service {
        Some((sid, svc)) => {
            if svc.upstream.is_some() {
                Ok(service_key(sid))
            } else if let Some(uid) = &svc.upstream_id {
                Ok(upstream_key(uid))
            } else {
                Err(format!("service {sid} has no upstream"))
            }
        }
        None => Err("missing upstream configuration".into()),
    }
}

pub(crate) fn log_transition(upstream: &str, node: &str, change: Transition, by: &str) {
    match change {
        Transition::BecameHealthy => {
            tracing::info!(upstream, node, by, "upstream node is healthy again")
        }
        Transition::BecameUnhealthy => {
            tracing::warn!(upstream, node, by, "upstream node marked unhealthy")
        }
        Transition::Unchanged => {}
    }
}

/// Seconds from the model (validated to at most a day) as a `Duration`; out-of-range
/// values become the day rather than a panic.
fn secs(v: f64) -> Duration {
    Duration::try_from_secs_f64(v).unwrap_or(Duration::from_secs(86_400))
}

/// An upstream's (or a route's) `timeout` as the proxy reads it, several times a request:
/// converted from seconds once, when the snapshot is built.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    pub send: Duration,
    pub read: Duration,
}

impl From<Timeout> for Timeouts {
    fn from(t: Timeout) -> Timeouts {
        Timeouts {
            connect: t.connect(),
            send: t.send(),
            read: t.read(),
        }
    }
}

impl UpstreamRt {
    fn new(
        key: String,
        def: &Upstream,
        prev: Option<&Arc<UpstreamRt>>,
        dns: &BTreeMap<String, Vec<IpAddr>>,
    ) -> UpstreamRt {
        let scheme = def.scheme;
        // Validated in the model; a CA that parses but cannot anchor anything lands in
        // `Err`. No node is served then, rather than one unverified.
        let (transport, nodes_def) = match Transport::new(def) {
            Ok(t) => (t, &def.nodes.0[..]),
            Err(e) => {
                tracing::warn!(upstream = %key, error = %e, "upstream TLS settings unusable; the upstream has no node");
                (Transport::plain(), &[][..])
            }
        };
        // A node given by name becomes one node per address it resolved to (none until
        // it has resolved), each keeping the name for `pass_host: node`.
        let expanded = nodes_def.iter().flat_map(|n| {
            let port = n.port.unwrap_or(scheme.default_port());
            let host_header = match n.port {
                Some(p) if p != scheme.default_port() => n.address(scheme),
                _ => n.host.clone(),
            };
            let addrs: Vec<String> = if crate::dns::is_name(&n.host) {
                dns.get(&n.host.to_ascii_lowercase())
                    .map(|ips| {
                        ips.iter()
                            .map(|ip| std::net::SocketAddr::new(*ip, port).to_string())
                            .collect()
                    })
                    .unwrap_or_default()
            } else {
                vec![n.address(scheme)]
            };
            addrs
                .into_iter()
                .map(move |addr| (n, addr, host_header.clone()))
        });
        let rewrite_name = match def.pass_host {
            PassHost::Rewrite => def.upstream_host.as_deref(),
            _ => None,
        };
        // By address, so an upstream of many nodes is not matched node against node.
        let prev_state: std::collections::HashMap<&str, &NodeState> = prev
            .map(|p| {
                p.nodes
                    .iter()
                    .map(|o| (o.addr.as_str(), &o.state))
                    .collect()
            })
            .unwrap_or_default();
        let nodes: Vec<NodeRt> = expanded
            .map(|(n, addr, host)| {
                let state = prev_state
                    .get(addr.as_str())
                    .map(|s| (*s).clone())
                    .unwrap_or_default();
                let tls_name = transport
                    .tls
                    .as_ref()
                    .and_then(|_| server_name(rewrite_name.unwrap_or(&n.host)));
                let pool_key = match &tls_name {
                    None if transport.tag == 0 && !transport.http2() => addr.clone(),
                    name => format!(
                        "{}://{addr}/{}#{:x}",
                        scheme.as_str(),
                        name.as_ref().map(|n| n.to_str()).unwrap_or_default(),
                        transport.tag
                    ),
                };
                NodeRt {
                    host_header: HeaderValue::from_str(&host).ok(),
                    pool_key,
                    tls_name,
                    shown: Arc::from(addr.as_str()),
                    label: crate::prometheus::node_label(&addr),
                    addr,
                    weight: n.weight,
                    priority: n.priority,
                    zone: n.zone.clone(),
                    state,
                }
            })
            .collect();
        let weights: Vec<u32> = nodes.iter().map(|n| n.weight).collect();
        // Same nodes, same weights: keep the rotation where it was.
        let balancer = match prev {
            Some(p) if p.same_nodes(&nodes) => p.balancer.clone(),
            _ => Arc::new(Balancer::new(&weights)),
        };
        let pool = def
            .keepalive_pool
            .map(|k| PoolSettings {
                size: k.size as usize,
                idle_timeout: secs(k.idle_timeout),
                requests: k.requests,
            })
            .unwrap_or_default();
        let method = match def.lb {
            LbType::RoundRobin => Method::RoundRobin,
            LbType::LeastConn => Method::LeastConn(LeastConn::new(
                nodes.iter().map(|n| (n.weight, n.state.in_flight.clone())),
            )),
            LbType::Ewma => Method::Ewma(Ewma::new(
                nodes
                    .iter()
                    .map(|n| (n.state.rtt.clone(), n.state.in_flight.clone())),
            )),
            LbType::Chash => Method::Chash {
                ring: Ring::new(nodes.iter().map(|n| (n.addr.as_str(), n.weight))),
                hash_on: def.hash_on,
                key: def.key.clone(),
            },
        };
        let plain = matches!(method, Method::RoundRobin)
            && def.checks.is_none()
            && nodes.iter().all(|n| n.zone.is_none())
            && nodes.windows(2).all(|w| w[0].priority == w[1].priority);
        UpstreamRt {
            key,
            nodes,
            balancer,
            method,
            plain,
            checks: def.checks.clone(),
            passive: def
                .checks
                .as_ref()
                .and_then(|c| c.passive.as_ref())
                .map(Thresholds::passive),
            pass_host: def.pass_host,
            upstream_host: def
                .upstream_host
                .as_deref()
                .and_then(|h| HeaderValue::from_str(h).ok()),
            retries: def.effective_retries(),
            retry_timeout: def.retry_timeout.filter(|t| *t > 0.0).map(secs),
            timeout: def.timeout().into(),
            pool,
            transport,
        }
    }

    /// The node for one attempt: health, priority and zone narrow the candidates (see
    /// [`health::select`]), then the method chooses. `None` when no node is left.
    pub fn pick(
        &self,
        tried: &[usize],
        zone: Option<&str>,
        hash_key: Option<&[u8]>,
    ) -> Option<usize> {
        if self.plain {
            return self.balancer.pick(tried);
        }
        let candidates: Vec<Candidate<'_>> = self
            .nodes
            .iter()
            .map(|n| Candidate {
                weight: n.weight,
                priority: n.priority,
                zone: n.zone.as_deref(),
                healthy: n.state.health.is_healthy(),
            })
            .collect();
        let allowed = health::select(&candidates, tried, zone);
        match &self.method {
            Method::RoundRobin => self.balancer.pick_among(&allowed),
            Method::LeastConn(lc) => lc.pick(&allowed),
            Method::Ewma(e) => e.pick(&allowed, std::time::Instant::now()),
            Method::Chash { ring, .. } => {
                ring.lookup_with(hash_key.unwrap_or_default(), |i| allowed.contains(&i))
            }
        }
    }

    /// The `chash` key of a request: the variable, header or cookie `hash_on`/`key` name,
    /// or the client address when the request has none (as APISIX falls back).
    pub fn hash_key(&self, vars: &dyn VarSource) -> Option<Vec<u8>> {
        let Method::Chash { hash_on, key, .. } = &self.method else {
            return None;
        };
        let key = key.as_deref().unwrap_or("");
        let value: Option<String> = match hash_on {
            HashOn::Vars => vars.get(key).map(|v| v.into_owned()),
            HashOn::Header => vars
                .get(&format!(
                    "http_{}",
                    key.to_ascii_lowercase().replace('-', "_")
                ))
                .map(|v| v.into_owned()),
            HashOn::Cookie => vars.get(&format!("cookie_{key}")).map(|v| v.into_owned()),
            // No consumers (authentication plugins) exist yet to name one.
            HashOn::Consumer => None,
            HashOn::VarsCombinations => Some(crate::request_vars::expand(key, vars)),
        };
        let value = value
            .filter(|v| !v.is_empty())
            .or_else(|| vars.get("remote_addr").map(|v| v.into_owned()))
            .unwrap_or_default();
        Some(value.into_bytes())
    }

    /// Records what an exchange with `node` ended in, for passive health checks.
    pub fn observe(&self, node: &NodeRt, outcome: Outcome) {
        if let Some(t) = &self.passive {
            let change = node.state.health.record(outcome, t);
            log_transition(&self.key, &node.addr, change, "passive");
        }
    }

    /// A response head arrived from `node` after `rtt`.
    /// Whether [`UpstreamRt::observe_response`] uses when the request was sent.
    pub fn measures_rtt(&self) -> bool {
        matches!(self.method, Method::Ewma(_))
    }

    /// A node's answer; `sent` when [`UpstreamRt::measures_rtt`] (the request's start).
    pub fn observe_response(&self, node: &NodeRt, status: u16, sent: Option<std::time::Instant>) {
        if let (Method::Ewma(_), Some(sent)) = (&self.method, sent) {
            let now = std::time::Instant::now();
            node.state
                .rtt
                .observe(now.saturating_duration_since(sent), now);
        }
        self.observe(node, Outcome::Status(status));
    }

    fn same_nodes(&self, nodes: &[NodeRt]) -> bool {
        self.nodes.len() == nodes.len()
            && self
                .nodes
                .iter()
                .zip(nodes)
                .all(|(a, b)| a.addr == b.addr && a.weight == b.weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Change;
    use model::vars::VarSource;
    use std::borrow::Cow;

    struct NoVars;
    impl VarSource for NoVars {
        fn get(&self, _: &str) -> Option<Cow<'_, str>> {
            None
        }
    }

    fn state(entries: &[(&str, &str)]) -> State {
        let mut s = State::default();
        for (key, value) in entries {
            s.apply(
                "/gw",
                Change::Put {
                    key: format!("/gw/{key}"),
                    value: value.as_bytes().to_vec(),
                },
            );
        }
        s
    }

    /// What a request for `host` + `path` resolves to: the route id and its upstream key,
    /// or the reason it cannot be served.
    fn find<'s>(snap: &'s Snapshot, host: &str, path: &str) -> Option<&'s Arc<RouteTarget>> {
        snap.router
            .find(&crate::router::Request {
                host,
                path,
                method: "GET",
                remote_addr: "127.0.0.1".parse().unwrap(),
                vars: &NoVars,
            })
            .map(|m| m.value)
    }

    fn resolve(
        snap: &Snapshot,
        host: &str,
        path: &str,
    ) -> Option<(String, Result<String, String>)> {
        let target = find(snap, host, path)?;
        Some((
            target.route_id.to_string(),
            snap.upstream_of(target).map(|u| u.key.clone()),
        ))
    }

    /// The matched route's split as data: per rule, each target's upstream key (`own` for
    /// the route's), its weight and whether the snapshot can serve it.
    /// The plugin names of the matched route's chain, and of the global rules'.
    fn chain_of(
        snap: &Snapshot,
        host: &str,
        path: &str,
    ) -> (Option<Vec<&'static str>>, Vec<&'static str>) {
        let global = snap.global.iter().flat_map(|c| c.names()).collect();
        let route =
            find(snap, host, path).map(|t| t.chain.iter().flat_map(|c| c.names()).collect());
        (route, global)
    }

    fn split_of(snap: &Snapshot, host: &str, path: &str) -> Option<Vec<Vec<(String, i64, bool)>>> {
        let target = find(snap, host, path)?;
        let split = target.split.as_ref()?;
        Some(
            split
                .rules
                .iter()
                .map(|r| {
                    r.targets
                        .iter()
                        .zip(r.balancer.weights())
                        .map(|(t, w)| match t {
                            Some(key) => (key.clone(), *w, snap.upstreams.contains_key(key)),
                            None => ("own".to_string(), *w, snap.upstream_of(target).is_ok()),
                        })
                        .collect()
                })
                .collect(),
        )
    }

    /// An incremental compile of what changed since the last one.
    fn step(state: &mut State, revision: i64, prev: &Snapshot) -> Snapshot {
        let dirty = state.take_dirty();
        Snapshot::compile(state, &dirty, revision, prev)
    }

    #[test]
    fn compile_table() {
        let s = state(&[
            ("upstreams/u1", r#"{"nodes":{"127.0.0.1:1":1}}"#),
            ("upstreams/bad", r#"{"nodes":"x"}"#),
            ("services/s1", r#"{"hosts":["svc.com"],"upstream_id":"u1"}"#),
            ("services/s2", r#"{"upstream":{"nodes":{"127.0.0.1:2":1}}}"#),
            ("services/s3", r#"{"hosts":["s3.com"]}"#),
            (
                "routes/inline",
                r#"{"uri":"/inline","upstream":{"nodes":{"127.0.0.1:3":1}}}"#,
            ),
            ("routes/byid", r#"{"uri":"/byid","upstream_id":"u1"}"#),
            ("routes/svc", r#"{"uri":"/svc","service_id":"s1"}"#),
            (
                "routes/svc-own-host",
                r#"{"uri":"/own","host":"own.com","service_id":"s1"}"#,
            ),
            ("routes/svc-inline", r#"{"uri":"/svc2","service_id":"s2"}"#),
            (
                "routes/svc-override",
                r#"{"uri":"/over","service_id":"s1","upstream_id":"u1"}"#,
            ),
            ("routes/no-up", r#"{"uri":"/s3","service_id":"s3"}"#),
            (
                "routes/missing-up",
                r#"{"uri":"/missing","upstream_id":"nope"}"#,
            ),
            ("routes/bad-up", r#"{"uri":"/badup","upstream_id":"bad"}"#),
            (
                "routes/missing-svc",
                r#"{"uri":"/nosvc","service_id":"nope"}"#,
            ),
            (
                "routes/off",
                r#"{"uri":"/off","upstream_id":"u1","status":0}"#,
            ),
        ]);
        let snap = Snapshot::compile(&s, &Dirty::all(), 7, &Snapshot::empty());
        let ok = |r: &str, u: &str| Some((r.to_string(), Ok(u.to_string())));
        let err = |r: &str, e: &str| Some((r.to_string(), Err(e.to_string())));
        let table = [
            ("any.com", "/inline", ok("inline", "routes/inline")),
            ("any.com", "/byid", ok("byid", "upstreams/u1")),
            ("svc.com", "/svc", ok("svc", "upstreams/u1")),
            ("other.com", "/svc", None),
            ("own.com", "/own", ok("svc-own-host", "upstreams/u1")),
            ("svc.com", "/own", None),
            ("any.com", "/svc2", ok("svc-inline", "services/s2")),
            ("svc.com", "/over", ok("svc-override", "upstreams/u1")),
            ("s3.com", "/s3", err("no-up", "service s3 has no upstream")),
            (
                "any.com",
                "/missing",
                err("missing-up", "upstream nope does not exist or is invalid"),
            ),
            (
                "any.com",
                "/badup",
                err("bad-up", "upstream bad does not exist or is invalid"),
            ),
            ("any.com", "/nosvc", None),
            ("any.com", "/off", None),
        ];
        for (host, path, want) in table {
            assert_eq!(resolve(&snap, host, path), want, "{host}{path}");
        }
        assert_eq!(snap.revision, 7);
        let c = snap.counts;
        assert_eq!((c.routes, c.services, c.upstreams), (11, 3, 1));
        assert_eq!((c.invalid_routes, c.invalid_upstreams), (0, 1));
        // One runtime per valid upstream, shared by every route that uses it.
        let mut keys: Vec<_> = snap.upstreams.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["routes/inline", "services/s2", "upstreams/u1"]);
    }

    #[test]
    fn balancer_state_carries_over_only_when_nodes_stay() {
        let before = state(&[
            (
                "upstreams/u1",
                r#"{"nodes":{"127.0.0.1:1":1,"127.0.0.1:2":1}}"#,
            ),
            ("routes/r", r#"{"uri":"/r","upstream_id":"u1"}"#),
        ]);
        let mut before = before;
        let first = step(&mut before, 1, &Snapshot::empty());
        let mut after = before.clone();
        after.apply(
            "/gw",
            Change::Put {
                key: "/gw/routes/other".into(),
                value: br#"{"uri":"/o","upstream_id":"u1"}"#.to_vec(),
            },
        );
        let second = step(&mut after, 2, &first);
        assert!(Arc::ptr_eq(
            &first.upstreams["upstreams/u1"].balancer,
            &second.upstreams["upstreams/u1"].balancer
        ));
        after.apply(
            "/gw",
            Change::Put {
                key: "/gw/upstreams/u1".into(),
                value: br#"{"nodes":{"127.0.0.1:1":1,"127.0.0.1:3":1}}"#.to_vec(),
            },
        );
        let third = step(&mut after, 3, &second);
        assert!(!Arc::ptr_eq(
            &second.upstreams["upstreams/u1"].balancer,
            &third.upstreams["upstreams/u1"].balancer
        ));
    }

    /// Every kind of change, applied one at a time: the incremental snapshot answers
    /// exactly as one compiled from scratch, including routes that depend on a changed
    /// service and upstreams that appear, change and disappear.
    #[test]
    fn incremental_compile_agrees_with_a_full_one() {
        let changes: &[(&str, Option<&str>)] = &[
            ("upstreams/u1", Some(r#"{"nodes":{"127.0.0.1:1":1}}"#)),
            ("upstreams/u2", Some(r#"{"nodes":{"127.0.0.1:2":1}}"#)),
            (
                "services/s1",
                Some(r#"{"hosts":["a.com"],"upstream_id":"u1"}"#),
            ),
            ("routes/r1", Some(r#"{"uri":"/r1","service_id":"s1"}"#)),
            ("routes/r2", Some(r#"{"uri":"/r2","upstream_id":"u2"}"#)),
            (
                "routes/r3",
                Some(r#"{"uri":"/r3","upstream":{"nodes":{"127.0.0.1:3":1}}}"#),
            ),
            (
                "routes/r4",
                Some(r#"{"uri":"/r1","service_id":"s1","priority":5}"#),
            ),
            // The service moves to another host and upstream: its routes follow.
            (
                "services/s1",
                Some(r#"{"hosts":["b.com"],"upstream_id":"u2"}"#),
            ),
            (
                "services/s1",
                Some(r#"{"upstream":{"nodes":{"127.0.0.1:4":1}}}"#),
            ),
            ("upstreams/u2", None),
            (
                "services/s1",
                Some(r#"{"hosts":["c.com"],"upstream_id":"u1"}"#),
            ),
            ("services/s1", Some(r#"{"hosts":"bad"}"#)),
            (
                "services/s1",
                Some(r#"{"hosts":["d.com"],"upstream_id":"u1"}"#),
            ),
            (
                "routes/r4",
                Some(r#"{"uri":"/r2","host":"d.com","upstream_id":"u1"}"#),
            ),
            ("routes/r3", None),
            ("upstreams/u2", Some(r#"{"nodes":{"127.0.0.1:5":1}}"#)),
            (
                "routes/r2",
                Some(r#"{"uri":"/r2","upstream_id":"u2","status":0}"#),
            ),
            ("services/s1", None),
            ("routes/r1", Some(r#"{"uri":"/r1","upstream_id":"u2"}"#)),
            // traffic-split: inline upstreams in rules come and go with the route.
            (
                "routes/r5",
                Some(
                    r#"{"uri":"/r5","upstream_id":"u1","plugins":{"traffic-split":{"rules":[
                    {"match":[{"vars":[["arg_c","==","1"]]}],"weighted_upstreams":[{"upstream_id":"u2"}]},
                    {"weighted_upstreams":[{"upstream":{"nodes":{"127.0.0.1:6":1}},"weight":2},{"weight":1}]}]}}}"#,
                ),
            ),
            (
                "routes/r5",
                Some(
                    r#"{"uri":"/r5","upstream_id":"u1","plugins":{"traffic-split":{"rules":[
                    {"weighted_upstreams":[{"upstream":{"nodes":{"127.0.0.1:7":1}}},{"upstream":{"nodes":{"127.0.0.1:8":1}}}]},
                    {"weighted_upstreams":[{"upstream":{"nodes":{"127.0.0.1:9":1}}}]}]}}}"#,
                ),
            ),
            (
                "routes/r5",
                Some(
                    r#"{"uri":"/r5","upstream_id":"u1","plugins":{"traffic-split":{"rules":[
                    {"weighted_upstreams":[{"upstream_id":"gone"},{"upstream":{"nodes":{"127.0.0.1:7":1}}}]}]}}}"#,
                ),
            ),
            ("upstreams/u2", None),
            (
                "routes/r5",
                Some(r#"{"uri":"/r5","upstream_id":"u1","plugins":{"limit-count":{}}}"#),
            ),
            (
                "routes/r5",
                Some(
                    r#"{"uri":"/r5","status":0,"upstream_id":"u1","plugins":{"traffic-split":{"rules":[
                    {"weighted_upstreams":[{"upstream":{"nodes":{"127.0.0.1:7":1}}}]}]}}}"#,
                ),
            ),
            (
                "routes/r5",
                Some(
                    r#"{"uri":"/r5","upstream_id":"u1","plugins":{"traffic-split":{"rules":[
                    {"weighted_upstreams":[{"upstream_id":"u2","weight":3},{"weight":1}]}]}}}"#,
                ),
            ),
            ("upstreams/u2", Some(r#"{"nodes":{"127.0.0.1:2":1}}"#)),
            ("routes/r5", None),
            // Plugin configs: their routes follow each change, and are not served while
            // the config is missing or invalid.
            (
                "plugin_configs/p1",
                Some(r#"{"plugins":{"proxy-rewrite":{"uri":"/x"},"request-id":{}}}"#),
            ),
            (
                "routes/r2",
                Some(
                    r#"{"uri":"/r2","upstream_id":"u2","plugin_config_id":"p1","plugins":{"cors":{}}}"#,
                ),
            ),
            (
                "plugin_configs/p1",
                Some(r#"{"plugins":{"ip-restriction":{"whitelist":["1.1.1.1"]}}}"#),
            ),
            (
                "plugin_configs/p1",
                Some(r#"{"plugins":{"cors":{"max_age":"x"}}}"#),
            ),
            ("plugin_configs/p1", None),
            ("plugin_configs/p1", Some(r#"{"plugins":{}}"#)),
            ("global_rules/g1", Some(r#"{"plugins":{"request-id":{}}}"#)),
            (
                "global_rules/g2",
                Some(r#"{"plugins":{"request-id":{"header_name":"X-B"},"cors":{}}}"#),
            ),
            ("global_rules/g1", None),
        ];
        let requests: Vec<(&str, &str)> = ["a.com", "b.com", "c.com", "d.com", "x.com"]
            .into_iter()
            .flat_map(|h| ["/r1", "/r2", "/r3", "/r5"].map(|p| (h, p)))
            .collect();
        let mut state = State::default();
        let mut incremental = Snapshot::empty();
        for (n, (key, value)) in changes.iter().enumerate() {
            let key = format!("/gw/{key}");
            state.apply(
                "/gw",
                match value {
                    Some(v) => Change::Put {
                        key,
                        value: v.as_bytes().to_vec(),
                    },
                    None => Change::Delete { key },
                },
            );
            incremental = step(&mut state, n as i64, &incremental);
            let full = Snapshot::compile(&state, &Dirty::all(), n as i64, &Snapshot::empty());
            for (host, path) in &requests {
                assert_eq!(
                    resolve(&incremental, host, path),
                    resolve(&full, host, path),
                    "after change {n} ({:?}), {host}{path}",
                    changes[n]
                );
                assert_eq!(
                    chain_of(&incremental, host, path),
                    chain_of(&full, host, path),
                    "after change {n} ({:?}), {host}{path}",
                    changes[n]
                );
                assert_eq!(
                    split_of(&incremental, host, path),
                    split_of(&full, host, path),
                    "after change {n} ({:?}), {host}{path}",
                    changes[n]
                );
            }
            let split_ids = |s: &Snapshot| {
                let mut k: Vec<Id> = s.splits.keys().cloned().collect();
                k.sort();
                k
            };
            assert_eq!(
                split_ids(&incremental),
                split_ids(&full),
                "after change {n}"
            );
            let keys = |s: &Snapshot| {
                let mut k: Vec<String> = s.upstreams.keys().cloned().collect();
                k.sort();
                k
            };
            assert_eq!(keys(&incremental), keys(&full), "after change {n}");
            assert_eq!(
                incremental.router.len(),
                full.router.len(),
                "after change {n}"
            );
        }
    }

    /// A split picks per request by its rules; its rotation survives changes of other
    /// resources and of the route itself when the rule's targets and weights stay.
    #[test]
    fn traffic_split_per_request_and_across_swaps() {
        struct Canary(bool);
        impl VarSource for Canary {
            fn get(&self, name: &str) -> Option<Cow<'_, str>> {
                (self.0 && name == "http_x-canary").then(|| "1".into())
            }
        }
        let split_route = |extra: &str| {
            format!(
                r#"{{"uri":"/s","upstream_id":"u1"{extra},"plugins":{{"traffic-split":{{"rules":[
                {{"match":[{{"vars":[["http_x-canary","==","1"]]}}],"weighted_upstreams":[{{"upstream":{{"nodes":{{"127.0.0.1:9":1}}}}}}]}},
                {{"weighted_upstreams":[{{"upstream_id":"u2","weight":3}},{{"weight":1}}]}}]}}}}}}"#
            )
        };
        let mut s = state(&[
            ("upstreams/u1", r#"{"nodes":{"127.0.0.1:1":1}}"#),
            ("upstreams/u2", r#"{"nodes":{"127.0.0.1:2":1}}"#),
            ("routes/s", &split_route("")),
        ]);
        let first = step(&mut s, 1, &Snapshot::empty());
        let target = first
            .router
            .find(&crate::router::Request {
                host: "a.com",
                path: "/s",
                method: "GET",
                remote_addr: "127.0.0.1".parse().unwrap(),
                vars: &NoVars,
            })
            .expect("route s")
            .value
            .clone();
        let picks = |snap: &Snapshot, canary: bool, n: usize| -> Vec<String> {
            (0..n)
                .map(|_| {
                    snap.upstream_for(&target, &Canary(canary))
                        .0
                        .unwrap()
                        .key
                        .clone()
                })
                .collect()
        };
        assert_eq!(picks(&first, true, 2), ["routes/s/split/0/0"; 2]);
        assert_eq!(
            picks(&first, false, 4),
            [
                "upstreams/u2",
                "upstreams/u2",
                "upstreams/u1",
                "upstreams/u2"
            ]
        );
        let mut keys: Vec<_> = first.upstreams.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["routes/s/split/0/0", "upstreams/u1", "upstreams/u2"]);
        // An unrelated change keeps the compiled split itself.
        s.apply(
            "/gw",
            Change::Put {
                key: "/gw/routes/other".into(),
                value: br#"{"uri":"/o","upstream_id":"u1"}"#.to_vec(),
            },
        );
        let second = step(&mut s, 2, &first);
        assert!(Arc::ptr_eq(
            &first.splits[&id("s")],
            &second.splits[&id("s")]
        ));
        // A change of the route that keeps the rules keeps their rotation.
        s.apply(
            "/gw",
            Change::Put {
                key: "/gw/routes/s".into(),
                value: split_route(r#","name":"renamed""#).into_bytes(),
            },
        );
        let third = step(&mut s, 3, &second);
        assert!(!Arc::ptr_eq(
            &second.splits[&id("s")],
            &third.splits[&id("s")]
        ));
        for r in 0..2 {
            assert!(Arc::ptr_eq(
                &second.splits[&id("s")].rules[r].balancer,
                &third.splits[&id("s")].rules[r].balancer
            ));
        }
        assert!(Arc::ptr_eq(
            &second.upstreams["routes/s/split/0/0"].balancer,
            &third.upstreams["routes/s/split/0/0"].balancer
        ));
    }

    /// One request through the matched route's chain: the status a plugin answered, else
    /// 200 (it would be proxied).
    fn through_chain(snap: &Snapshot, path: &str) -> u16 {
        let target = find(snap, "", path).expect("a route");
        let chain = target.chain.as_ref().expect("a chain");
        let (mut parts, _) = http::Request::builder()
            .uri(path)
            .body(())
            .unwrap()
            .into_parts();
        let mut req = crate::plugins::Req {
            parts: &mut parts,
            host: "",
            conn: crate::proxy::ConnInfo {
                remote: "10.0.0.1:1000".parse().unwrap(),
                local: "127.0.0.1:9080".parse().unwrap(),
                scheme: "http",
            },
            https_port: 443,
            consumers: &snap.consumers,
            route_id: None,
            service_id: None,
            consumer: None,
            now: Default::default(),
        };
        let mut ran = crate::plugins::Ran::default();
        ran.request(chain, &mut req)
            .map_or(200, |a| a.status.as_u16())
    }

    /// Plugin state outlives snapshots: a change to an unrelated field of the route, or to
    /// another route, keeps the count; a change to the plugin's own configuration starts
    /// a new one; a deleted route's state is dropped once no snapshot holds it.
    #[test]
    fn plugin_state_survives_unrelated_changes_only() {
        let up = r#"{"nodes":{"10.0.0.1:80":1}}"#;
        let limited = |count: u32, desc: &str| {
            format!(
                r#"{{"uri":"/a","upstream_id":"u","desc":"{desc}","plugins":{{"limit-count":{{"count":{count},"time_window":60}}}}}}"#
            )
        };
        let mut s = state(&[("upstreams/u", up), ("routes/1", &limited(2, "one"))]);
        s.mark_all_dirty();
        let mut snap = step(&mut s, 1, &Snapshot::empty());
        let statuses = |snap: &Snapshot, n: usize| -> Vec<u16> {
            (0..n).map(|_| through_chain(snap, "/a")).collect()
        };
        assert_eq!(statuses(&snap, 3), [200, 200, 503]);
        let changes: [(&str, Option<String>, u16); 4] = [
            // Unrelated: the route's desc, another route.
            ("routes/1", Some(limited(2, "two")), 503),
            (
                "routes/2",
                Some(r#"{"uri":"/b","upstream_id":"u"}"#.to_string()),
                503,
            ),
            // The plugin's own configuration: a fresh count.
            ("routes/1", Some(limited(3, "two")), 200),
            // Back to a count of 2: also fresh (the old count was dropped).
            ("routes/1", Some(limited(2, "two")), 200),
        ];
        for (rev, (key, value, want)) in changes.into_iter().enumerate() {
            let change = match value {
                Some(v) => Change::Put {
                    key: format!("/gw/{key}"),
                    value: v.into_bytes(),
                },
                None => Change::Delete {
                    key: format!("/gw/{key}"),
                },
            };
            s.apply("/gw", change);
            snap = step(&mut s, rev as i64 + 2, &snap);
            assert_eq!(through_chain(&snap, "/a"), want, "after {key}");
        }
        // The count-3 state is kept while the snapshot before this one may still serve.
        assert_eq!(snap.states.len(), 2);
        s.apply(
            "/gw",
            Change::Delete {
                key: "/gw/routes/1".into(),
            },
        );
        let next = step(&mut s, 10, &snap);
        drop(snap);
        let last = step(&mut s, 11, &next);
        assert!(last.states.is_empty(), "a deleted route's state is dropped");
    }

    fn id(s: &str) -> Id {
        Id::parse(s).unwrap()
    }
}
