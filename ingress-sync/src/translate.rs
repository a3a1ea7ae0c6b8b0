//! Kubernetes objects -> the etcd keys the gateway should hold (pure). All of the Ingress
//! semantics live here; docs/ingress-sync.md explains the mapping.
//!
//! - One route per winning (host, path type, path); one upstream per referenced
//!   (namespace, Service, port), even when it has no endpoint: an upstream with no node
//!   answers 503, as Kubernetes controllers do for a missing Service.
//! - `Exact /p` -> `uri: /p`; `Prefix /p` (and `ImplementationSpecific`) -> `uris: [/p, /p/*]`,
//!   element-wise as Kubernetes wants (`/foo` matches `/foo/bar`, not `/foobar`); `Prefix /`
//!   -> `/*`. The gateway tries exact paths before prefixes and longer prefixes first, which
//!   is "the longest path wins"; `Exact` routes get a higher `priority` so they beat the
//!   exact half of a `Prefix` of the same path.
//! - `*.foo.com` -> `hosts: ["*.foo.com"]` plus a `vars` condition on `host` that admits
//!   exactly one label (the gateway's wildcard alone would admit several).
//! - `spec.defaultBackend` -> `/*` on every host with the lowest priority.
//! - Two Ingresses claiming the same (host, path type, path), or both a default backend:
//!   only the older one's is emitted (creationTimestamp, then namespace/name).
use crate::endpoints::{self, PortRef};
use crate::gateway_api;
use crate::select::Selector;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};
use model::{Id, Kind};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The label every key we write carries; ownership is decided by it alone.
pub const MANAGED_BY: &str = "managed-by";
pub const OWNER: &str = "ingress-sync";
pub const LABEL_KIND: &str = "k8s-kind";
pub const LABEL_NAMESPACE: &str = "k8s-namespace";
pub const LABEL_NAME: &str = "k8s-name";
/// `--controller-name`: two installations (different controller names) sharing a prefix
/// own disjoint sets of keys.
pub const LABEL_CONTROLLER: &str = "ingress-controller";
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

const PRIORITY_EXACT: i64 = 1;
const PRIORITY_PREFIX: i64 = 0;
const PRIORITY_DEFAULT_BACKEND: i64 = -1;

/// What the watchers hold: the input of a translation.
#[derive(Debug, Default, Clone)]
pub struct Cluster {
    pub ingresses: Vec<Ingress>,
    pub classes: Vec<IngressClass>,
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
    pub secrets: Vec<Secret>,
    /// The Gateway API kinds (empty unless `--gateway-api`).
    pub gateway_classes: Vec<gateway_api::GatewayClass>,
    pub gateways: Vec<gateway_api::Gateway>,
    pub http_routes: Vec<gateway_api::HttpRoute>,
    pub grpc_routes: Vec<gateway_api::GrpcRoute>,
    pub reference_grants: Vec<gateway_api::ReferenceGrant>,
    /// For `allowedRoutes.namespaces.selector`.
    pub namespaces: Vec<Namespace>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub prefix: String,
    pub selector: Selector,
    pub allow_external_name: bool,
    /// `--publish-address`, for the Gateways' `status.addresses`.
    pub publish_address: Option<String>,
}

/// The translation's result.
#[derive(Debug, Default)]
pub struct Desired {
    /// etcd key -> value (without `create_time`/`update_time`: the writer adds them).
    pub values: BTreeMap<String, Value>,
    /// The Ingresses we serve, as (namespace, name): they get a status.
    pub served: Vec<(String, String)>,
    /// `ssls` from `spec.tls`, with private keys in plaintext: `tls::seal` encrypts them
    /// (against what is stored) before they join `values` in the diff.
    pub ssls: BTreeMap<String, Value>,
    /// What was skipped and why (logged by the caller; tests assert on it).
    pub warnings: Vec<String>,
    /// The Gateway API objects' status, written once the change is served.
    pub statuses: Vec<gateway_api::StatusUpdate>,
}

/// A path as an Ingress claims it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum PathMatch {
    Exact(String),
    /// Normalised: no trailing slash, except `/` itself.
    Prefix(String),
}

impl PathMatch {
    fn parse(path_type: &str, path: Option<&str>) -> Result<PathMatch, String> {
        let path = path.unwrap_or("/");
        literal_path(path)?;
        match path_type {
            "Exact" => Ok(PathMatch::Exact(path.to_string())),
            // ImplementationSpecific: ours is Prefix (documented).
            "Prefix" | "ImplementationSpecific" => {
                let trimmed = path.trim_end_matches('/');
                Ok(PathMatch::Prefix(if trimmed.is_empty() {
                    "/".to_string()
                } else {
                    trimmed.to_string()
                }))
            }
            other => Err(format!("unknown pathType {other:?}")),
        }
    }

    fn uris(&self) -> Value {
        match self {
            PathMatch::Exact(p) => json!({ "uri": p }),
            PathMatch::Prefix(p) if p == "/" => json!({ "uri": "/*" }),
            PathMatch::Prefix(p) => json!({ "uris": [p, format!("{p}/*")] }),
        }
    }

    fn describe(&self) -> String {
        match self {
            PathMatch::Exact(p) => format!("Exact {p}"),
            PathMatch::Prefix(p) => format!("Prefix {p}"),
        }
    }
}

/// A path the gateway can match literally: absolute, without what it would read as a
/// pattern (`*`, a `:param` segment) or that no request path can hold.
pub(crate) fn literal_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must start with \"/\""));
    }
    if path.contains('*')
        || path.split('/').any(|seg| seg.starts_with(':'))
        || path.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "path {path:?} holds characters the gateway cannot match literally"
        ));
    }
    Ok(())
}

/// A validated rule host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum HostMatch {
    Any,
    Exact(String),
    /// `*.suffix`, stored as `suffix`.
    Wildcard(String),
}

impl HostMatch {
    fn parse(host: Option<&str>) -> Result<HostMatch, String> {
        let Some(h) = host.filter(|h| !h.is_empty()) else {
            return Ok(HostMatch::Any);
        };
        let lower = h.to_ascii_lowercase();
        model::host::HostPattern::parse(&lower)?;
        Ok(match lower.strip_prefix("*.") {
            Some(suffix) => HostMatch::Wildcard(suffix.to_string()),
            None => HostMatch::Exact(lower),
        })
    }

    fn describe(&self) -> String {
        match self {
            HostMatch::Any => "*".to_string(),
            HostMatch::Exact(h) => h.clone(),
            HostMatch::Wildcard(s) => format!("*.{s}"),
        }
    }

    fn write(&self, route: &mut Map<String, Value>) {
        match self {
            HostMatch::Any => {}
            HostMatch::Exact(h) => {
                route.insert("hosts".into(), json!([h]));
            }
            HostMatch::Wildcard(suffix) => {
                route.insert("hosts".into(), json!([format!("*.{suffix}")]));
                // The request's `host` variable is lower-cased, without the port.
                let re = format!("^[^.]+\\.{}$", suffix.replace('.', "\\."));
                route.insert("vars".into(), json!([["host", "~~", re]]));
            }
        }
    }
}

/// Where a path sends its traffic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct BackendRef {
    pub namespace: String,
    pub service: String,
    pub port: PortRef,
    /// Spoken to over HTTP/2 cleartext: a GRPCRoute's backends, and a Service port whose
    /// `appProtocol` says h2c.
    pub grpc: bool,
}

fn backend_ref(namespace: &str, b: &IngressBackend) -> Result<BackendRef, String> {
    let svc = b
        .service
        .as_ref()
        .ok_or("only Service backends are supported (resource backends are not)".to_string())?;
    let port = svc
        .port
        .as_ref()
        .ok_or_else(|| format!("backend Service {:?} names no port", svc.name))?;
    let port = match (&port.number, &port.name) {
        (Some(n), _) => PortRef::Number(*n),
        (None, Some(name)) if !name.is_empty() => PortRef::Name(name.clone()),
        _ => return Err(format!("backend Service {:?} names no port", svc.name)),
    };
    Ok(BackendRef {
        namespace: namespace.to_string(),
        service: svc.name.clone(),
        port,
        grpc: false,
    })
}

/// `namespace/name`, for messages and ordering.
fn full_name(i: &Ingress) -> (String, String) {
    (
        i.metadata.namespace.clone().unwrap_or_default(),
        i.metadata.name.clone().unwrap_or_default(),
    )
}

/// A short, stable id (≤ 64 characters of the model's alphabet) from the parts that
/// identify a resource: FNV-1a, 64 bits, twice with different seeds.
pub fn stable_id(kind: &str, parts: &[&str]) -> String {
    let hash = |seed: u64| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
        for p in parts {
            for b in p.bytes().chain([0u8]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    };
    format!(
        "k8s-{kind}-{:016x}{:016x}",
        hash(0),
        hash(0x9e37_79b9_7f4a_7c15)
    )
}

pub(crate) fn labels(kind: &str, namespace: &str, name: &str) -> Value {
    json!({
        MANAGED_BY: OWNER,
        LABEL_KIND: kind,
        LABEL_NAMESPACE: namespace,
        LABEL_NAME: name,
    })
}

pub(crate) fn truncate(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        s
    } else {
        s.chars().take(max).collect()
    }
}

/// Does `value` pass the model's validation as `kind`? (Catches what we could not foresee;
/// nothing invalid is ever written.)
pub(crate) fn check(kind: Kind, value: &Value) -> Result<(), String> {
    let r = match kind {
        Kind::Routes => model::codec::decode_value::<model::Route>(value).map(|_| ()),
        Kind::Upstreams => model::codec::decode_value::<model::Upstream>(value).map(|_| ()),
        _ => Ok(()),
    };
    r.map_err(|e| e.to_string())
}

/// The translation itself; `now` (RFC 3339) dates the status conditions that change.
pub fn translate(cluster: &Cluster, settings: &Settings, now: &str) -> Desired {
    let mut out = Desired::default();
    let classes = settings.selector.our_classes(&cluster.classes);
    let mut ours: Vec<&Ingress> = cluster
        .ingresses
        .iter()
        .filter(|i| settings.selector.is_ours(i, &classes))
        .collect();
    // Oldest first: the first claim of a (host, path) wins.
    ours.sort_by(|a, b| {
        let ta = a.metadata.creation_timestamp.as_ref();
        let tb = b.metadata.creation_timestamp.as_ref();
        // A missing timestamp sorts last.
        (ta.is_none(), ta, full_name(a)).cmp(&(tb.is_none(), tb, full_name(b)))
    });

    let mut claimed: BTreeMap<(HostMatch, PathMatch), (String, String)> = BTreeMap::new();
    let mut default_claimed: Option<(String, String)> = None;
    let mut backends: BTreeSet<BackendRef> = BTreeSet::new();
    let mut routes: Vec<(String, Value)> = Vec::new();

    for ing in &ours {
        let (ns, name) = full_name(ing);
        out.served.push((ns.clone(), name.clone()));
        let Some(spec) = &ing.spec else { continue };
        let mut emit = |host: &HostMatch,
                        path: Option<&PathMatch>,
                        backend: &IngressBackend,
                        out: &mut Desired| {
            let b = match backend_ref(&ns, backend) {
                Ok(b) => b,
                Err(e) => {
                    out.warnings.push(format!("ingress {ns}/{name}: {e}"));
                    return;
                }
            };
            let what = match path {
                Some(p) => format!("{} {}", host.describe(), p.describe()),
                None => "default backend".to_string(),
            };
            let id = stable_id("r", &[&ns, &name, &what]);
            let mut route = Map::new();
            route.insert("id".into(), json!(id));
            route.insert("name".into(), json!(truncate(format!("{ns}/{name}"), 100)));
            route.insert("desc".into(), json!(truncate(what, 256)));
            match path {
                Some(p) => {
                    if let Value::Object(u) = p.uris() {
                        route.extend(u);
                    }
                    let prio = match p {
                        PathMatch::Exact(_) => PRIORITY_EXACT,
                        PathMatch::Prefix(_) => PRIORITY_PREFIX,
                    };
                    route.insert("priority".into(), json!(prio));
                    host.write(&mut route);
                }
                None => {
                    route.insert("uri".into(), json!("/*"));
                    route.insert("priority".into(), json!(PRIORITY_DEFAULT_BACKEND));
                }
            }
            route.insert("upstream_id".into(), json!(upstream_id(&b)));
            route.insert("labels".into(), labels("Ingress", &ns, &name));
            backends.insert(b);
            routes.push((id, Value::Object(route)));
        };

        for rule in spec.rules.iter().flatten() {
            let host = match HostMatch::parse(rule.host.as_deref()) {
                Ok(h) => h,
                Err(e) => {
                    out.warnings.push(format!("ingress {ns}/{name}: {e}"));
                    continue;
                }
            };
            for p in rule.http.iter().flat_map(|h| &h.paths) {
                let path = match PathMatch::parse(&p.path_type, p.path.as_deref()) {
                    Ok(m) => m,
                    Err(e) => {
                        out.warnings.push(format!("ingress {ns}/{name}: {e}"));
                        continue;
                    }
                };
                let claim = (host.clone(), path.clone());
                if let Some((wns, wname)) = claimed.get(&claim) {
                    out.warnings.push(format!(
                        "ingress {ns}/{name}: {} {} is already served by the older ingress {wns}/{wname}",
                        host.describe(),
                        path.describe()
                    ));
                    continue;
                }
                claimed.insert(claim, (ns.clone(), name.clone()));
                emit(&host, Some(&path), &p.backend, &mut out);
            }
        }
        if let Some(db) = &spec.default_backend {
            match &default_claimed {
                Some((wns, wname)) => out.warnings.push(format!(
                    "ingress {ns}/{name}: default backend ignored, the older ingress {wns}/{wname} has one"
                )),
                None => {
                    default_claimed = Some((ns.clone(), name.clone()));
                    emit(&HostMatch::Any, None, db, &mut out);
                }
            }
        }
    }

    let gw = gateway_api::translate(
        cluster,
        &gateway_api::Context {
            controller: &settings.selector.controller_name,
            publish_address: settings.publish_address.as_deref(),
            now,
        },
    );
    routes.extend(gw.routes);
    backends.extend(gw.backends);
    out.warnings.extend(gw.warnings);
    out.statuses = gw.statuses;
    out.ssls = crate::tls::ssls(
        &settings.prefix,
        &ours,
        gw.certificates,
        &cluster.secrets,
        &mut out.warnings,
    );
    for v in out.ssls.values_mut() {
        v["labels"][LABEL_CONTROLLER] = json!(settings.selector.controller_name);
    }
    let controller = json!(settings.selector.controller_name);
    for (id, mut route) in routes {
        route["labels"][LABEL_CONTROLLER] = controller.clone();
        put(&mut out, Kind::Routes, &id, route, &settings.prefix);
    }
    for b in backends {
        let (nodes, warning) = resolve(cluster, &b, settings.allow_external_name);
        if let Some(w) = warning {
            out.warnings.push(format!(
                "service {}/{} port {}: {w}; its routes answer 503",
                b.namespace, b.service, b.port
            ));
        }
        let id = upstream_id(&b);
        let upstream = json!({
            "id": id,
            "name": truncate(format!("{}/{}:{}", b.namespace, b.service, b.port), 100),
            "type": "roundrobin",
            "nodes": nodes,
            "labels": labels("Service", &b.namespace, &b.service),
        });
        let mut upstream = upstream;
        upstream["labels"][LABEL_CONTROLLER] = controller.clone();
        if b.grpc {
            upstream["scheme"] = json!("grpc");
        }
        put(&mut out, Kind::Upstreams, &id, upstream, &settings.prefix);
    }
    out
}

fn put(out: &mut Desired, kind: Kind, id: &str, value: Value, prefix: &str) {
    let checked = Id::parse(id).and_then(|id| check(kind, &value).map(|()| id));
    match checked {
        Ok(id) => {
            out.values
                .insert(model::key::resource_key(prefix, kind, &id), value);
        }
        Err(e) => out
            .warnings
            .push(format!("{} {id} left out: {e}", kind.singular())),
    }
}

pub(crate) fn upstream_id(b: &BackendRef) -> String {
    let port = b.port.to_string();
    if b.grpc {
        stable_id("u", &[&b.namespace, &b.service, &port, "grpc"])
    } else {
        stable_id("u", &[&b.namespace, &b.service, &port])
    }
}

/// The nodes of a backend, and a warning when there are none.
pub(crate) fn resolve(
    cluster: &Cluster,
    b: &BackendRef,
    allow_external_name: bool,
) -> (Vec<Value>, Option<String>) {
    let in_ns = |ns: &Option<String>| ns.as_deref() == Some(b.namespace.as_str());
    let Some(service) = cluster
        .services
        .iter()
        .find(|s| in_ns(&s.metadata.namespace) && s.metadata.name.as_deref() == Some(&b.service))
    else {
        return (Vec::new(), Some("the Service does not exist".into()));
    };
    let slices: Vec<&EndpointSlice> = cluster
        .slices
        .iter()
        .filter(|s| {
            in_ns(&s.metadata.namespace)
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .is_some_and(|n| *n == b.service)
        })
        .collect();
    match endpoints::nodes(service, &b.port, &slices, allow_external_name) {
        Ok(nodes) => (nodes.iter().map(|n| n.to_json()).collect(), None),
        Err(e) => (Vec::new(), Some(e)),
    }
}

#[cfg(test)]
#[path = "translate_tests.rs"]
pub(crate) mod tests;
