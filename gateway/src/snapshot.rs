//! The immutable routing snapshot: compiled from `State` away from requests, swapped in
//! whole. A request loads one snapshot and uses only it.
use crate::balancer::Balancer;
use crate::metrics::ConfigCounts;
use crate::router::{RouteSpec, Router};
use crate::state::State;
use http::HeaderValue;
use model::timeout::Timeout;
use model::upstream::PassHost;
use model::{Id, Route, Service, Upstream};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub struct Snapshot {
    pub revision: i64,
    pub router: Router<Arc<RouteTarget>>,
    /// Every upstream in use, by key (`upstreams/1`, or the owner's key for inline ones),
    /// so the next compile can carry their balancer state over.
    pub upstreams: HashMap<String, Arc<UpstreamRt>>,
    pub counts: ConfigCounts,
}

/// What a matched route sends its request to.
pub struct RouteTarget {
    pub route_id: Id,
    /// `Err` holds the reason the route cannot be served (a dangling reference): 503.
    pub upstream: Result<Arc<UpstreamRt>, String>,
    /// The route's own `timeout`, which overrides the upstream's.
    pub timeout: Option<Timeout>,
}

/// An upstream ready for requests.
pub struct UpstreamRt {
    pub key: String,
    pub nodes: Vec<NodeRt>,
    /// Shared with the previous snapshot's upstream when the nodes are the same.
    pub balancer: Arc<Balancer>,
    pub pass_host: PassHost,
    pub upstream_host: Option<HeaderValue>,
    pub retries: u32,
    pub retry_timeout: Option<Duration>,
    pub timeout: Timeout,
    pub pool: PoolSettings,
}

pub struct NodeRt {
    /// `host:port`, what we connect to and the pool key.
    pub addr: String,
    /// The `Host` sent with `pass_host: node` (port omitted when it is the scheme's default).
    pub host_header: Option<HeaderValue>,
    pub weight: u32,
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
            upstreams: HashMap::new(),
            counts: ConfigCounts::default(),
        }
    }

    /// Compiles `state` into a snapshot. Balancer state of upstreams whose nodes did not
    /// change is carried over from `prev`, so a route change does not reset the rotation.
    pub fn compile(state: &State, revision: i64, prev: &Snapshot) -> Snapshot {
        let mut upstreams: HashMap<String, Arc<UpstreamRt>> = HashMap::new();
        let mut resolve = |key: String, def: &Upstream| -> Arc<UpstreamRt> {
            if let Some(u) = upstreams.get(&key) {
                return u.clone();
            }
            let rt = Arc::new(UpstreamRt::new(key.clone(), def, prev.upstreams.get(&key)));
            upstreams.insert(key, rt.clone());
            rt
        };
        let valid = |id: &Id, m: &std::collections::BTreeMap<Id, crate::state::Entry<Service>>| {
            m.get(id).and_then(|e| e.parsed.as_ref().ok()).cloned()
        };
        let mut specs = Vec::with_capacity(state.routes.len());
        for (id, entry) in &state.routes {
            let Ok(route) = &entry.parsed else { continue };
            if !route.enabled() {
                continue;
            }
            let service = route
                .service_id
                .as_ref()
                .map(|sid| (sid, valid(sid, &state.services)));
            // A route whose service is missing or invalid would otherwise lose the
            // service's hosts and match every host: leave it out until the service is fixed.
            if matches!(service, Some((_, None))) {
                continue;
            }
            let upstream = target_upstream(id, route, service.as_ref(), state, &mut resolve);
            let hosts = match (route.own_hosts().is_empty(), &service) {
                (true, Some((_, Some(svc)))) => svc.hosts.clone().unwrap_or_default(),
                _ => route.own_hosts().into_iter().cloned().collect(),
            };
            let target = Arc::new(RouteTarget {
                route_id: id.clone(),
                upstream,
                timeout: route.timeout,
            });
            specs.push(RouteSpec {
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
            });
        }
        let count = |ok: bool, n: Vec<bool>| n.into_iter().filter(|v| *v == ok).count();
        let flags = |m: Vec<bool>| (count(true, m.clone()), count(false, m));
        let (routes, invalid_routes) =
            flags(state.routes.values().map(|e| e.parsed.is_ok()).collect());
        let (services, invalid_services) =
            flags(state.services.values().map(|e| e.parsed.is_ok()).collect());
        let (ups, invalid_upstreams) =
            flags(state.upstreams.values().map(|e| e.parsed.is_ok()).collect());
        Snapshot {
            revision,
            router: Router::build(specs),
            upstreams,
            counts: ConfigCounts {
                routes,
                services,
                upstreams: ups,
                invalid_routes,
                invalid_services,
                invalid_upstreams,
            },
        }
    }
}

/// Route's inline upstream, else its `upstream_id`, else its service's (inline, then id).
fn target_upstream(
    route_id: &Id,
    route: &Route,
    service: Option<&(&Id, Option<Arc<Service>>)>,
    state: &State,
    resolve: &mut impl FnMut(String, &Upstream) -> Arc<UpstreamRt>,
) -> Result<Arc<UpstreamRt>, String> {
    let by_id =
        |uid: &Id, resolve: &mut dyn FnMut(String, &Upstream) -> Arc<UpstreamRt>| match state
            .upstreams
            .get(uid)
            .map(|e| &e.parsed)
        {
            Some(Ok(u)) => Ok(resolve(format!("upstreams/{uid}"), u)),
            Some(Err(_)) => Err(format!("upstream {uid} is invalid")),
            None => Err(format!("upstream {uid} does not exist")),
        };
    if let Some(u) = &route.upstream {
        return Ok(resolve(format!("routes/{route_id}"), u));
    }
    if let Some(uid) = &route.upstream_id {
        return by_id(uid, resolve);
    }
    match service {
        Some((sid, Some(svc))) => {
            if let Some(u) = &svc.upstream {
                Ok(resolve(format!("services/{sid}"), u))
            } else if let Some(uid) = &svc.upstream_id {
                by_id(uid, resolve)
            } else {
                Err(format!("service {sid} has no upstream"))
            }
        }
        Some((sid, None)) => Err(format!("service {sid} does not exist or is invalid")),
        None => Err("missing upstream configuration".into()),
    }
}

/// Seconds from the model (validated to at most a day) as a `Duration`; out-of-range
/// values become the day rather than a panic.
fn secs(v: f64) -> Duration {
    Duration::try_from_secs_f64(v).unwrap_or(Duration::from_secs(86_400))
}

impl UpstreamRt {
    fn new(key: String, def: &Upstream, prev: Option<&Arc<UpstreamRt>>) -> UpstreamRt {
        let scheme = def.scheme;
        let nodes: Vec<NodeRt> = def
            .nodes
            .0
            .iter()
            .map(|n| {
                let addr = n.address(scheme);
                let host = match n.port {
                    Some(p) if p != scheme.default_port() => addr.clone(),
                    _ => addr
                        .rsplit_once(':')
                        .map(|(h, _)| h.to_string())
                        .unwrap_or_else(|| addr.clone()),
                };
                NodeRt {
                    host_header: HeaderValue::from_str(&host).ok(),
                    addr,
                    weight: n.weight,
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
        UpstreamRt {
            key,
            nodes,
            balancer,
            pass_host: def.pass_host,
            upstream_host: def
                .upstream_host
                .as_deref()
                .and_then(|h| HeaderValue::from_str(h).ok()),
            retries: def.effective_retries(),
            retry_timeout: def.retry_timeout.filter(|t| *t > 0.0).map(secs),
            timeout: def.timeout(),
            pool,
        }
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
    fn resolve(
        snap: &Snapshot,
        host: &str,
        path: &str,
    ) -> Option<(String, Result<String, String>)> {
        let m = snap.router.find(&crate::router::Request {
            host,
            path,
            method: "GET",
            remote_addr: "127.0.0.1".parse().unwrap(),
            vars: &NoVars,
        })?;
        let target = m.value;
        Some((
            target.route_id.to_string(),
            target
                .upstream
                .as_ref()
                .map(|u| u.key.clone())
                .map_err(|e| e.clone()),
        ))
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
        let snap = Snapshot::compile(&s, 7, &Snapshot::empty());
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
                err("missing-up", "upstream nope does not exist"),
            ),
            (
                "any.com",
                "/badup",
                err("bad-up", "upstream bad is invalid"),
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
        // One runtime per upstream in use, shared by every route that uses it.
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
        let first = Snapshot::compile(&before, 1, &Snapshot::empty());
        let mut after = before.clone();
        after.apply(
            "/gw",
            Change::Put {
                key: "/gw/routes/other".into(),
                value: br#"{"uri":"/o","upstream_id":"u1"}"#.to_vec(),
            },
        );
        let second = Snapshot::compile(&after, 2, &first);
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
        let third = Snapshot::compile(&after, 3, &second);
        assert!(!Arc::ptr_eq(
            &second.upstreams["upstreams/u1"].balancer,
            &third.upstreams["upstreams/u1"].balancer
        ));
    }
}
