//! GatewayClasses, Gateways and HTTPRoutes -> routes, upstream references, certificates
//! and the status of each object (pure). docs/ingress-sync.md explains the mapping.
//!
//! - A route is attached to the listeners its `parentRefs` select (`sectionName`,
//!   `port`) that allow it (`allowedRoutes` namespaces and kinds) and whose hostname
//!   intersects the route's; its hosts are the union of those intersections.
//! - One gateway route per (rule, match). The router tries exact paths before prefixes and
//!   longer prefixes first; the rest of the spec's precedence (method, most header
//!   matches, most query matches, oldest route, rule order) is packed into `priority`
//!   ([`priority`]), so it holds across HTTPRoutes without depending on write order.
//! - `backendRefs` weights: the first backend is the route's upstream, the others join
//!   through `traffic-split`; the share of refs that do not resolve (and a rule with no
//!   backend at all) is answered 500 by `fault-injection`, as the spec asks.
//! - Filters map onto the plugins: RequestHeaderModifier and URLRewrite -> `proxy-rewrite`,
//!   ResponseHeaderModifier -> `response-rewrite`, RequestRedirect -> `redirect`,
//!   RequestMirror -> `proxy-mirror`. A filter we do not support makes its rule answer 500.
use super::conditions::{render, Condition};
use super::hostnames::{intersect, Hosts};
use super::types::*;
use crate::endpoints::PortRef;
use crate::translate::{labels, stable_id, truncate, upstream_id, BackendRef, Cluster};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// An object whose status we write, and the status we want it to have. For HTTPRoutes
/// `status` holds only our entries of `parents`; the writer keeps other controllers'.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub status: Value,
}

/// The translation's result.
#[derive(Debug, Default)]
pub struct Out {
    /// (route id, route value without the controller label).
    pub routes: Vec<(String, Value)>,
    pub backends: BTreeSet<BackendRef>,
    /// (namespace, Secret) -> the SNIs it serves, from HTTPS listeners.
    pub certificates: BTreeMap<(String, String), BTreeSet<String>>,
    pub statuses: Vec<StatusUpdate>,
    pub warnings: Vec<String>,
}

/// What the caller knows that the objects do not.
pub struct Context<'a> {
    pub controller: &'a str,
    /// `--publish-address`: the Gateways' `status.addresses`.
    pub publish_address: Option<&'a str>,
    /// RFC 3339, for the conditions that change now.
    pub now: &'a str,
}

const MAX_MATCH_COUNT: i64 = 16;
const TIME_BITS: u32 = 34;
const ORDER_BITS: u32 = 10;

/// The spec's precedence among matches of the same path, as one number (higher wins):
/// an `Exact` path over the exact half of a `PathPrefix` of that path, then a method
/// match, then more header matches, more query matches, then the older route (its
/// creation second), then the earlier rule and match. The name order of two routes created
/// in the same second is not encoded: the gateway then orders by its own `create_time`.
pub fn priority(
    exact: bool,
    method: bool,
    headers: usize,
    query: usize,
    created: i64,
    order: usize,
) -> i64 {
    let count = |n: usize| (n as i64).min(MAX_MATCH_COUNT);
    let key = ((i64::from(method) * (MAX_MATCH_COUNT + 1) + count(headers))
        * (MAX_MATCH_COUNT + 1))
        + count(query);
    let age = (1i64 << TIME_BITS) - 1 - created.clamp(0, (1i64 << TIME_BITS) - 1);
    let order = (1i64 << ORDER_BITS) - 1 - (order as i64).min((1i64 << ORDER_BITS) - 1);
    (i64::from(exact) << 54) | (key << (TIME_BITS + ORDER_BITS)) | (age << ORDER_BITS) | order
}

fn ns_of(meta: &ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_default()
}

fn name_of(meta: &ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

fn created(meta: &ObjectMeta) -> i64 {
    meta.creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(i64::MAX)
}

fn generation(meta: &ObjectMeta) -> i64 {
    meta.generation.unwrap_or(0)
}

fn conditions_of(status: &Option<Value>) -> &Value {
    status
        .as_ref()
        .map(|s| &s["conditions"])
        .unwrap_or(&Value::Null)
}

/// Does a ReferenceGrant in `to_ns` let `from_kind` objects of `from_ns` refer to the
/// `to_kind` named `to_name`?
fn granted(
    c: &Cluster,
    from_kind: &str,
    from_ns: &str,
    to_kind: &str,
    to_ns: &str,
    to_name: &str,
) -> bool {
    from_ns == to_ns
        || c.reference_grants.iter().any(|g| {
            g.metadata.namespace.as_deref() == Some(to_ns)
                && g.spec
                    .from
                    .iter()
                    .any(|f| f.group == GROUP && f.kind == from_kind && f.namespace == from_ns)
                && g.spec.to.iter().any(|t| {
                    t.group.is_empty()
                        && t.kind == to_kind
                        && t.name.as_deref().is_none_or(|n| n == to_name)
                })
        })
}

/// `matchLabels` and `matchExpressions` of a label selector.
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expr = selector.match_expressions.iter().flatten().all(|e| {
        let have = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => have.is_some_and(|h| values.contains(h)),
            "NotIn" => have.is_none_or(|h| !values.contains(h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    });
    by_label && by_expr
}

/// A listener of one of our Gateways, as evaluated.
struct ListenerView<'a> {
    gateway: &'a Gateway,
    listener: &'a Listener,
    /// `None` when the listener is valid; else why not (its `Accepted` condition).
    invalid: Option<(&'static str, String)>,
    /// `ResolvedRefs` failure (certificates, route kinds).
    unresolved: Option<(&'static str, String)>,
    allows_http_route: bool,
    attached: u32,
}

fn is_http_route_kind(k: &RouteGroupKind) -> bool {
    k.group.as_deref().unwrap_or(GROUP) == GROUP && k.kind == "HTTPRoute"
}

fn listeners<'a>(c: &'a Cluster, gw: &'a Gateway, out: &mut Out) -> Vec<ListenerView<'a>> {
    let gw_ns = ns_of(&gw.metadata);
    gw.spec
        .listeners
        .iter()
        .map(|l| {
            let mut v = ListenerView {
                gateway: gw,
                listener: l,
                invalid: None,
                unresolved: None,
                allows_http_route: true,
                attached: 0,
            };
            match l.protocol.as_str() {
                "HTTP" => {}
                "HTTPS" => {
                    let tls = l.tls.clone().unwrap_or_default();
                    if tls.mode.as_deref().unwrap_or("Terminate") != "Terminate" {
                        v.invalid = Some((
                            "UnsupportedValue",
                            "only tls.mode Terminate is supported".into(),
                        ));
                    } else if tls.certificate_refs.is_empty() {
                        v.unresolved = Some((
                            "InvalidCertificateRef",
                            "an HTTPS listener needs tls.certificateRefs".into(),
                        ));
                    }
                    for r in &tls.certificate_refs {
                        match certificate(c, &gw_ns, r) {
                            Ok((ns, name)) => match &l.hostname {
                                Some(h) if !h.is_empty() => {
                                    out.certificates
                                        .entry((ns, name))
                                        .or_default()
                                        .insert(h.to_ascii_lowercase());
                                }
                                _ => out.warnings.push(format!(
                                    "gateway {gw_ns}/{}: listener {} has no hostname; its \
                                     certificate is not served (SNI needs a name)",
                                    name_of(&gw.metadata),
                                    l.name
                                )),
                            },
                            Err(e) => v.unresolved = Some(e),
                        }
                    }
                }
                other => {
                    v.invalid = Some((
                        "UnsupportedProtocol",
                        format!("protocol {other:?} is not supported (HTTP, HTTPS are)"),
                    ))
                }
            }
            if let Some(ar) = &l.allowed_routes {
                if !ar.kinds.is_empty() {
                    v.allows_http_route = ar.kinds.iter().any(is_http_route_kind);
                    if ar.kinds.iter().any(|k| !is_http_route_kind(k)) {
                        v.unresolved =
                            Some(("InvalidRouteKinds", "only HTTPRoute is supported".into()));
                    }
                }
            }
            v
        })
        .collect()
}

/// A certificate ref -> the Secret's (namespace, name), or the `ResolvedRefs` failure.
fn certificate(
    c: &Cluster,
    gw_ns: &str,
    r: &ObjectRef,
) -> Result<(String, String), (&'static str, String)> {
    let group = r.group.as_deref().unwrap_or("");
    let kind = r.kind.as_deref().unwrap_or("Secret");
    if !(group.is_empty() || group == "core") || kind != "Secret" {
        return Err((
            "InvalidCertificateRef",
            format!("{kind} {:?} is not a Secret", r.name),
        ));
    }
    let ns = r.namespace.clone().unwrap_or_else(|| gw_ns.to_string());
    if !granted(c, "Gateway", gw_ns, "Secret", &ns, &r.name) {
        return Err((
            "RefNotPermitted",
            format!(
                "no ReferenceGrant in {ns} lets Gateways of {gw_ns} use Secret {}",
                r.name
            ),
        ));
    }
    let exists = c.secrets.iter().any(|s| {
        s.metadata.namespace.as_deref() == Some(ns.as_str())
            && s.metadata.name.as_deref() == Some(r.name.as_str())
    });
    if !exists {
        return Err((
            "InvalidCertificateRef",
            format!(
                "Secret {ns}/{} does not exist or is not kubernetes.io/tls",
                r.name
            ),
        ));
    }
    Ok((ns, r.name.clone()))
}

fn namespace_allowed(c: &Cluster, l: &Listener, gw_ns: &str, route_ns: &str) -> bool {
    let from = l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    match from.and_then(|f| f.from.as_deref()).unwrap_or("Same") {
        "All" => true,
        "Same" => gw_ns == route_ns,
        "Selector" => {
            let Some(sel) = from.and_then(|f| f.selector.as_ref()) else {
                return false;
            };
            c.namespaces.iter().any(|n| {
                n.metadata.name.as_deref() == Some(route_ns)
                    && selects(sel, &n.metadata.labels.clone().unwrap_or_default())
            })
        }
        _ => false,
    }
}

/// Where an accepted route is served: its hosts, and the protocols and ports of the
/// listeners it attached to.
#[derive(Default)]
struct Placement {
    hosts: Option<Hosts>,
    protocols: BTreeSet<String>,
    ports: BTreeSet<i32>,
}

pub fn translate(c: &Cluster, cx: &Context<'_>) -> Out {
    let mut out = Out::default();
    let classes: BTreeSet<String> = c
        .gateway_classes
        .iter()
        .filter(|gc| gc.spec.controller_name == cx.controller)
        .map(|gc| name_of(&gc.metadata))
        .collect();
    for gc in &c.gateway_classes {
        if classes.contains(&name_of(&gc.metadata)) {
            let conds = [Condition::yes("Accepted", "Accepted")];
            out.statuses.push(StatusUpdate {
                kind: "GatewayClass",
                namespace: String::new(),
                name: name_of(&gc.metadata),
                status: json!({"conditions": render(conditions_of(&gc.status), &conds,
                    generation(&gc.metadata), cx.now)}),
            });
        }
    }
    let gateways: Vec<&Gateway> = c
        .gateways
        .iter()
        .filter(|g| classes.contains(&g.spec.gateway_class_name))
        .collect();
    let mut views: Vec<ListenerView<'_>> = Vec::new();
    for gw in &gateways {
        views.extend(listeners(c, gw, &mut out));
    }

    let mut routes: Vec<&HttpRoute> = c.http_routes.iter().collect();
    routes.sort_by_key(|r| {
        (
            created(&r.metadata),
            ns_of(&r.metadata),
            name_of(&r.metadata),
        )
    });
    for route in routes {
        attach_route(c, cx, route, &gateways, &mut views, &mut out);
    }

    for gw in &gateways {
        out.statuses.push(gateway_status(gw, &views, cx));
    }
    out
}

/// Attaches `route` to the listeners of its parents, emits its routes when it is accepted
/// anywhere, and records its status.
fn attach_route(
    c: &Cluster,
    cx: &Context<'_>,
    route: &HttpRoute,
    gateways: &[&Gateway],
    views: &mut [ListenerView<'_>],
    out: &mut Out,
) {
    let ns = ns_of(&route.metadata);
    let name = name_of(&route.metadata);
    let mut placement = Placement::default();
    let mut parents = Vec::new();
    let resolved = rule_refs(c, route);
    for parent in &route.spec.parent_refs {
        if parent.group.as_deref().unwrap_or(GROUP) != GROUP
            || parent.kind.as_deref().unwrap_or("Gateway") != "Gateway"
        {
            continue;
        }
        let gw_ns = parent.namespace.clone().unwrap_or_else(|| ns.clone());
        let Some(gw) = gateways
            .iter()
            .find(|g| ns_of(&g.metadata) == gw_ns && name_of(&g.metadata) == parent.name)
        else {
            continue; // not one of ours: another controller answers for it
        };
        let selected: Vec<usize> = views
            .iter()
            .enumerate()
            .filter(|(_, v)| std::ptr::eq(v.gateway, *gw))
            .filter(|(_, v)| {
                parent
                    .section_name
                    .as_ref()
                    .is_none_or(|s| *s == v.listener.name)
                    && parent.port.is_none_or(|p| p == v.listener.port)
            })
            .map(|(i, _)| i)
            .collect();
        let allowed: Vec<usize> = selected
            .iter()
            .copied()
            .filter(|i| {
                let v = &views[*i];
                v.invalid.is_none()
                    && v.allows_http_route
                    && namespace_allowed(c, v.listener, &gw_ns, &ns)
            })
            .collect();
        let mut attached = false;
        for i in &allowed {
            let v = &mut views[*i];
            if let Some(h) = intersect(v.listener.hostname.as_deref(), &route.spec.hostnames) {
                attached = true;
                v.attached += 1;
                match &mut placement.hosts {
                    Some(all) => all.union(h),
                    None => placement.hosts = Some(h),
                }
                placement.protocols.insert(v.listener.protocol.clone());
                placement.ports.insert(v.listener.port);
            }
        }
        let accepted = if selected.is_empty() {
            Condition::no(
                "Accepted",
                "NoMatchingParent",
                "no listener of the Gateway matches sectionName/port",
            )
        } else if allowed.is_empty() {
            Condition::no(
                "Accepted",
                "NotAllowedByListeners",
                "no selected listener allows this route (allowedRoutes)",
            )
        } else if !attached {
            Condition::no(
                "Accepted",
                "NoMatchingListenerHostname",
                "no listener hostname intersects the route's hostnames",
            )
        } else {
            Condition::yes("Accepted", "Accepted")
        };
        let refs = match &resolved {
            Ok(()) => Condition::yes("ResolvedRefs", "ResolvedRefs"),
            Err((reason, message)) => Condition::no("ResolvedRefs", reason, message.clone()),
        };
        parents.push((parent.clone(), [accepted, refs]));
    }
    if parents.is_empty() {
        return;
    }
    let current_parents = route
        .status
        .as_ref()
        .and_then(|s| s["parents"].as_array().cloned())
        .unwrap_or_default();
    let entries: Vec<Value> = parents
        .iter()
        .map(|(p, conds)| {
            let pref = parent_ref_json(p, &ns);
            let current = current_parents
                .iter()
                .find(|e| e["parentRef"] == pref && e["controllerName"] == cx.controller)
                .map(|e| &e["conditions"])
                .unwrap_or(&Value::Null);
            json!({
                "parentRef": pref,
                "controllerName": cx.controller,
                "conditions": render(current, conds, generation(&route.metadata), cx.now),
            })
        })
        .collect();
    out.statuses.push(StatusUpdate {
        kind: "HTTPRoute",
        namespace: ns.clone(),
        name: name.clone(),
        status: json!({"parents": entries}),
    });
    if let Some(hosts) = placement.hosts.take() {
        emit_routes(c, route, &hosts, &placement, out);
    }
}

/// The parent ref as status echoes it: the spec's, with `group`, `kind` and `namespace`
/// spelled out (readers compare them field by field).
pub fn parent_ref_json(p: &ParentRef, route_ns: &str) -> Value {
    let mut m = Map::new();
    m.insert("group".into(), json!(p.group.as_deref().unwrap_or(GROUP)));
    m.insert("kind".into(), json!(p.kind.as_deref().unwrap_or("Gateway")));
    m.insert(
        "namespace".into(),
        json!(p.namespace.as_deref().unwrap_or(route_ns)),
    );
    m.insert("name".into(), json!(p.name));
    if let Some(s) = &p.section_name {
        m.insert("sectionName".into(), json!(s));
    }
    if let Some(port) = p.port {
        m.insert("port".into(), json!(port));
    }
    Value::Object(m)
}

/// The route's `ResolvedRefs`: the first backend ref (rules, then mirrors) that fails.
fn rule_refs(c: &Cluster, route: &HttpRoute) -> Result<(), (&'static str, String)> {
    let ns = ns_of(&route.metadata);
    for rule in &route.spec.rules {
        for b in &rule.backend_refs {
            backend(c, &ns, b)?;
        }
        for f in &rule.filters {
            if let Some(m) = &f.request_mirror {
                backend(c, &ns, &m.backend_ref)?;
            }
        }
    }
    Ok(())
}

/// A backend ref -> the Service port it names, or the `ResolvedRefs` failure.
fn backend(
    c: &Cluster,
    route_ns: &str,
    b: &HttpBackendRef,
) -> Result<BackendRef, (&'static str, String)> {
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    if !(group.is_empty() || group == "core") || kind != "Service" {
        return Err((
            "InvalidKind",
            format!(
                "backend {kind} {:?} (group {group:?}) is not a Service",
                b.name
            ),
        ));
    }
    let ns = b.namespace.clone().unwrap_or_else(|| route_ns.to_string());
    if !granted(c, "HTTPRoute", route_ns, "Service", &ns, &b.name) {
        return Err((
            "RefNotPermitted",
            format!(
                "no ReferenceGrant in {ns} lets HTTPRoutes of {route_ns} use Service {}",
                b.name
            ),
        ));
    }
    let exists = c.services.iter().any(|s| {
        s.metadata.namespace.as_deref() == Some(ns.as_str())
            && s.metadata.name.as_deref() == Some(b.name.as_str())
    });
    if !exists {
        return Err((
            "BackendNotFound",
            format!("Service {ns}/{} does not exist", b.name),
        ));
    }
    let Some(port) = b.port else {
        return Err((
            "UnsupportedValue",
            format!("backend Service {ns}/{} names no port", b.name),
        ));
    };
    Ok(BackendRef {
        namespace: ns,
        service: b.name.clone(),
        port: PortRef::Number(port),
    })
}

fn gateway_status(gw: &Gateway, views: &[ListenerView<'_>], cx: &Context<'_>) -> StatusUpdate {
    let gen = generation(&gw.metadata);
    let current = gw.status.clone().unwrap_or(Value::Null);
    let mut listeners = Vec::new();
    let (mut any_valid, mut any_invalid) = (false, false);
    for v in views.iter().filter(|v| std::ptr::eq(v.gateway, gw)) {
        let name = &v.listener.name;
        let current_conds = current["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["name"] == name.as_str())
            .map(|l| &l["conditions"])
            .unwrap_or(&Value::Null);
        let conds = match (&v.invalid, &v.unresolved) {
            (Some((reason, msg)), _) => {
                any_invalid = true;
                vec![
                    Condition::no("Accepted", reason, msg.clone()),
                    Condition::no("Programmed", "Invalid", msg.clone()),
                    Condition::yes("ResolvedRefs", "ResolvedRefs"),
                    Condition::yes("Conflicted", "NoConflicts").negated(),
                ]
            }
            (None, Some((reason, msg))) => vec![
                Condition::yes("Accepted", "Accepted"),
                Condition::no("Programmed", "Invalid", msg.clone()),
                Condition::no("ResolvedRefs", reason, msg.clone()),
                Condition::yes("Conflicted", "NoConflicts").negated(),
            ],
            (None, None) => {
                any_valid = true;
                vec![
                    Condition::yes("Accepted", "Accepted"),
                    Condition::yes("Programmed", "Programmed"),
                    Condition::yes("ResolvedRefs", "ResolvedRefs"),
                    Condition::yes("Conflicted", "NoConflicts").negated(),
                ]
            }
        };
        let kinds: Vec<Value> = if v.invalid.is_some() || !v.allows_http_route {
            Vec::new()
        } else {
            vec![json!({"group": GROUP, "kind": "HTTPRoute"})]
        };
        listeners.push(json!({
            "name": name,
            "supportedKinds": kinds,
            "attachedRoutes": v.attached,
            "conditions": render(current_conds, &conds, gen, cx.now),
        }));
    }
    let conds = if !any_invalid {
        vec![
            Condition::yes("Accepted", "Accepted"),
            Condition::yes("Programmed", "Programmed"),
        ]
    } else if any_valid {
        // Served, with the invalid listeners left out.
        vec![
            Condition::yes("Accepted", "ListenersNotValid"),
            Condition::yes("Programmed", "Programmed"),
        ]
    } else {
        vec![
            Condition::no("Accepted", "ListenersNotValid", "no listener is valid"),
            Condition::no("Programmed", "Invalid", "no listener is valid"),
        ]
    };
    let mut status = json!({
        "conditions": render(&current["conditions"], &conds, gen, cx.now),
        "listeners": listeners,
    });
    if let Some(addr) = cx.publish_address {
        let kind = if addr.parse::<std::net::IpAddr>().is_ok() {
            "IPAddress"
        } else {
            "Hostname"
        };
        status["addresses"] = json!([{"type": kind, "value": addr}]);
    }
    StatusUpdate {
        kind: "Gateway",
        namespace: ns_of(&gw.metadata),
        name: name_of(&gw.metadata),
        status,
    }
}

impl Condition {
    /// The condition with its status inverted (`Conflicted: False` is the good state).
    fn negated(mut self) -> Condition {
        self.ok = !self.ok;
        self
    }
}

/// One route per (rule, match).
fn emit_routes(c: &Cluster, route: &HttpRoute, hosts: &Hosts, at: &Placement, out: &mut Out) {
    let ns = ns_of(&route.metadata);
    let name = name_of(&route.metadata);
    let default_match = [HttpRouteMatch::default()];
    for (ri, rule) in route.spec.rules.iter().enumerate() {
        let action = match rule_action(c, &ns, rule, at) {
            Ok(a) => a,
            Err(e) => {
                out.warnings.push(format!(
                    "httproute {ns}/{name} rule {ri}: {e}; its requests are answered 500"
                ));
                Action::fail(100)
            }
        };
        out.backends.extend(action.backends.iter().cloned());
        let matches: &[HttpRouteMatch] = if rule.matches.is_empty() {
            &default_match
        } else {
            &rule.matches
        };
        for (mi, m) in matches.iter().enumerate() {
            let id = stable_id("g", &[&ns, &name, &ri.to_string(), &mi.to_string()]);
            let order = ri * 64 + mi;
            match match_route(m, route, order) {
                Ok(mut r) => {
                    r.insert("id".into(), json!(id));
                    r.insert("name".into(), json!(truncate(format!("{ns}/{name}"), 100)));
                    r.insert("desc".into(), json!(format!("rule {ri} match {mi}")));
                    if let Hosts::Names(h) = hosts {
                        r.insert("hosts".into(), json!(h));
                    }
                    if at.protocols.len() == 1 {
                        // Attached to HTTP listeners only (or HTTPS only): not served on the
                        // other port.
                        let scheme = at.protocols.iter().next().map(|p| p.to_ascii_lowercase());
                        push_var(&mut r, json!(["scheme", "==", scheme]));
                    }
                    action.write(&mut r);
                    r.insert("labels".into(), labels("HTTPRoute", &ns, &name));
                    out.routes.push((id, Value::Object(r)));
                }
                Err(e) => out
                    .warnings
                    .push(format!("httproute {ns}/{name} rule {ri} match {mi}: {e}")),
            }
        }
    }
}

fn push_var(r: &mut Map<String, Value>, cond: Value) {
    match r.get_mut("vars").and_then(Value::as_array_mut) {
        Some(v) => v.push(cond),
        None => {
            r.insert("vars".into(), json!([cond]));
        }
    }
}

/// A path the gateway can match literally (no `*`, no `:param` segment).
fn literal_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("path {p:?} must start with \"/\""));
    }
    if p.contains('*')
        || p.split('/').any(|seg| seg.starts_with(':'))
        || p.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "path {p:?} holds characters the gateway cannot match literally"
        ));
    }
    Ok(())
}

/// `PathPrefix` without its trailing slash (`/` stays `/`).
fn prefix_of(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else {
        t.into()
    }
}

/// A header name as the gateway's `http_*` variable.
fn header_var(name: &str) -> String {
    format!("http_{}", name.to_ascii_lowercase().replace('-', "_"))
}

/// The match part of a route: path, method, header and query conditions, priority.
fn match_route(
    m: &HttpRouteMatch,
    route: &HttpRoute,
    order: usize,
) -> Result<Map<String, Value>, String> {
    let mut r = Map::new();
    let path_type = m
        .path
        .as_ref()
        .and_then(|p| p.type_.as_deref())
        .unwrap_or("PathPrefix");
    let value = m
        .path
        .as_ref()
        .and_then(|p| p.value.as_deref())
        .unwrap_or("/");
    let mut vars: Vec<Value> = Vec::new();
    let exact = match path_type {
        "Exact" => {
            literal_path(value)?;
            r.insert("uri".into(), json!(value));
            true
        }
        "PathPrefix" => {
            literal_path(value)?;
            let p = prefix_of(value);
            if p == "/" {
                r.insert("uri".into(), json!("/*"));
            } else {
                r.insert("uris".into(), json!([p, format!("{p}/*")]));
            }
            false
        }
        "RegularExpression" => {
            r.insert("uri".into(), json!("/*"));
            vars.push(json!(["uri", "~~", format!("^(?:{value})$")]));
            false
        }
        other => return Err(format!("unknown path match type {other:?}")),
    };
    for h in &m.headers {
        let op = match h.type_.as_deref().unwrap_or("Exact") {
            "Exact" => "==",
            "RegularExpression" => "~~",
            other => return Err(format!("unknown header match type {other:?}")),
        };
        let value = if op == "~~" {
            format!("^(?:{})$", h.value)
        } else {
            h.value.clone()
        };
        vars.push(json!([header_var(&h.name), op, value]));
    }
    for q in &m.query_params {
        let op = match q.type_.as_deref().unwrap_or("Exact") {
            "Exact" => "==",
            "RegularExpression" => "~~",
            other => return Err(format!("unknown query match type {other:?}")),
        };
        let value = if op == "~~" {
            format!("^(?:{})$", q.value)
        } else {
            q.value.clone()
        };
        vars.push(json!([format!("arg_{}", q.name), op, value]));
    }
    if let Some(method) = &m.method {
        r.insert("methods".into(), json!([method]));
    }
    if !vars.is_empty() {
        r.insert("vars".into(), Value::Array(vars));
    }
    r.insert(
        "priority".into(),
        json!(priority(
            exact,
            m.method.is_some(),
            m.headers.len(),
            m.query_params.len(),
            created(&route.metadata),
            order
        )),
    );
    Ok(r)
}

/// What a rule does with a request it matched: plugins, and the upstream(s).
#[derive(Debug, Default)]
struct Action {
    plugins: Map<String, Value>,
    /// (backend, weight), weights > 0.
    weighted: Vec<(BackendRef, u32)>,
    backends: Vec<BackendRef>,
    /// Answer this request itself (a redirect): no upstream.
    answers: bool,
    /// Seconds: the rule's `request`/`backendRequest` timeout, the smaller one.
    timeout: Option<f64>,
}

impl Action {
    fn fail(percent: u8) -> Action {
        let mut a = Action::default();
        a.add_failure(percent);
        a
    }

    fn add_failure(&mut self, percent: u8) {
        let mut abort = json!({"http_status": 500, "body": "no valid backend for this request\n"});
        if percent < 100 {
            abort["percentage"] = json!(percent);
        }
        self.plugins
            .insert("fault-injection".into(), json!({"abort": abort}));
        if percent >= 100 {
            self.answers = true;
            self.weighted.clear();
        }
    }

    fn write(&self, r: &mut Map<String, Value>) {
        let mut plugins = self.plugins.clone();
        if !self.answers {
            if let Some(((first, _), rest)) = self.weighted.split_first() {
                r.insert("upstream_id".into(), json!(upstream_id(first)));
                if !rest.is_empty() {
                    let mut ups: Vec<Value> = rest
                        .iter()
                        .map(|(b, w)| json!({"upstream_id": upstream_id(b), "weight": w}))
                        .collect();
                    ups.push(json!({"weight": self.weighted[0].1}));
                    plugins.insert(
                        "traffic-split".into(),
                        json!({"rules": [{"weighted_upstreams": ups}]}),
                    );
                }
            }
        }
        if !plugins.is_empty() {
            r.insert("plugins".into(), Value::Object(plugins));
        }
        if let Some(t) = self.timeout {
            r.insert(
                "timeout".into(),
                json!({"connect": t, "send": t, "read": t}),
            );
        }
    }
}

fn rule_action(
    c: &Cluster,
    ns: &str,
    rule: &HttpRouteRule,
    at: &Placement,
) -> Result<Action, String> {
    let mut a = Action::default();
    let mut rewrite = Map::new();
    for f in &rule.filters {
        match f.type_.as_str() {
            "RequestHeaderModifier" => {
                let m = f
                    .request_header_modifier
                    .as_ref()
                    .ok_or("RequestHeaderModifier without its settings")?;
                rewrite.insert("headers".into(), header_ops(m, false));
            }
            "ResponseHeaderModifier" => {
                let m = f
                    .response_header_modifier
                    .as_ref()
                    .ok_or("ResponseHeaderModifier without its settings")?;
                a.plugins.insert(
                    "response-rewrite".into(),
                    json!({"headers": header_ops(m, true)}),
                );
            }
            "URLRewrite" => {
                let u = f
                    .url_rewrite
                    .as_ref()
                    .ok_or("URLRewrite without its settings")?;
                if let Some(h) = &u.hostname {
                    rewrite.insert("host".into(), json!(h));
                }
                if let Some(p) = &u.path {
                    match path_rewrite(p, rule)? {
                        PathRewrite::Full(uri) => {
                            rewrite.insert("uri".into(), json!(uri));
                        }
                        PathRewrite::Prefix(prefix, replacement) => {
                            rewrite.insert(
                                "regex_uri".into(),
                                json!(prefix_pairs(&prefix, &replacement)?),
                            );
                        }
                    }
                }
            }
            "RequestRedirect" => {
                let r = f
                    .request_redirect
                    .as_ref()
                    .ok_or("RequestRedirect without its settings")?;
                a.plugins.insert("redirect".into(), redirect(r, rule, at)?);
                a.answers = true;
            }
            "RequestMirror" => {
                let m = f
                    .request_mirror
                    .as_ref()
                    .ok_or("RequestMirror without its settings")?;
                let b = backend(c, ns, &m.backend_ref).map_err(|(_, msg)| msg)?;
                let mut conf = json!({"host": mirror_host(c, &b)?});
                let ratio = match (&m.percent, &m.fraction) {
                    (Some(p), _) => f64::from(*p) / 100.0,
                    (None, Some(fr)) => {
                        f64::from(fr.numerator) / f64::from(fr.denominator.unwrap_or(100).max(1))
                    }
                    (None, None) => 1.0,
                };
                if ratio < 1.0 {
                    conf["sample_ratio"] = json!(ratio.clamp(0.00001, 1.0));
                }
                a.plugins.insert("proxy-mirror".into(), conf);
            }
            other => return Err(format!("filter {other:?} is not supported")),
        }
    }
    if a.answers && !rewrite.is_empty() {
        return Err(
            "RequestRedirect cannot be combined with URLRewrite or RequestHeaderModifier".into(),
        );
    }
    if !rewrite.is_empty() {
        a.plugins
            .insert("proxy-rewrite".into(), Value::Object(rewrite));
    }
    if let Some(t) = &rule.timeouts {
        let secs = [&t.request, &t.backend_request]
            .into_iter()
            .flatten()
            .filter_map(|d| duration(d).ok())
            .filter(|s| *s > 0.0)
            .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.min(s))));
        a.timeout = secs;
    }
    if a.answers {
        return Ok(a);
    }
    let (mut valid, mut invalid) = (0u64, 0u64);
    for b in &rule.backend_refs {
        let w = u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0);
        match backend(c, ns, b) {
            Ok(r) => {
                a.backends.push(r.clone());
                if w > 0 {
                    valid += u64::from(w);
                    a.weighted.push((r, w));
                }
            }
            Err(_) => invalid += u64::from(w),
        }
    }
    let total = valid + invalid;
    if total == 0 {
        // No backend, or every weight 0: nothing may receive the request.
        a.add_failure(100);
    } else if invalid > 0 {
        let percent = (invalid * 100).div_ceil(total).min(100) as u8;
        a.add_failure(percent);
    }
    Ok(a)
}

/// The first node of a mirror backend, as `proxy-mirror`'s `host`.
fn mirror_host(c: &Cluster, b: &BackendRef) -> Result<String, String> {
    let (nodes, warning) = crate::translate::resolve(c, b, false);
    let node = nodes.first().ok_or_else(|| {
        format!(
            "mirror Service {}/{}: {}",
            b.namespace,
            b.service,
            warning.unwrap_or_else(|| "no endpoint".into())
        )
    })?;
    let host = node["host"].as_str().unwrap_or_default();
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Ok(format!("http://{host}:{}", node["port"]))
}

/// `set`/`add`/`remove` for `proxy-rewrite` (objects) or `response-rewrite` (whose `add`
/// is a list of `name: value` lines).
fn header_ops(m: &HeaderModifier, response: bool) -> Value {
    let set: Map<String, Value> = m
        .set
        .iter()
        .map(|nv| (nv.name.clone(), json!(nv.value)))
        .collect();
    let add: Value = if response {
        json!(m
            .add
            .iter()
            .map(|nv| format!("{}: {}", nv.name, nv.value))
            .collect::<Vec<_>>())
    } else {
        Value::Object(
            m.add
                .iter()
                .map(|nv| (nv.name.clone(), json!(nv.value)))
                .collect(),
        )
    };
    let mut ops = Map::new();
    if !set.is_empty() {
        ops.insert("set".into(), Value::Object(set));
    }
    if !m.add.is_empty() {
        ops.insert("add".into(), add);
    }
    if !m.remove.is_empty() {
        ops.insert("remove".into(), json!(m.remove));
    }
    Value::Object(ops)
}

/// The single `PathPrefix` a prefix rewrite applies to (the spec allows it only there).
fn rule_prefix(rule: &HttpRouteRule) -> Result<String, String> {
    let prefixes: BTreeSet<String> = if rule.matches.is_empty() {
        ["/".to_string()].into()
    } else {
        rule.matches
            .iter()
            .map(|m| {
                let p = m.path.clone().unwrap_or_default();
                match p.type_.as_deref().unwrap_or("PathPrefix") {
                    "PathPrefix" => Ok(prefix_of(p.value.as_deref().unwrap_or("/"))),
                    _ => Err("ReplacePrefixMatch needs PathPrefix matches".to_string()),
                }
            })
            .collect::<Result<_, _>>()?
    };
    if prefixes.len() != 1 {
        return Err("ReplacePrefixMatch over several prefixes is not supported".into());
    }
    Ok(prefixes.into_iter().next().unwrap_or_default())
}

/// `$` starts a variable in the plugins' templates, and has no escape there.
fn template_literal(s: &str) -> Result<String, String> {
    if s.contains('$') {
        return Err(format!(
            "{s:?}: a \"$\" in a rewritten path or host is not supported"
        ));
    }
    Ok(s.to_string())
}

/// ReplacePrefixMatch as `regex_uri` pairs (the spec's table): the prefix alone becomes
/// the replacement (`/` if empty); the prefix and more path keeps that rest after the
/// replacement without its trailing slash (`/` + `/bar` gives `/bar`).
fn prefix_pairs(prefix: &str, replacement: &str) -> Result<Vec<String>, String> {
    let (base, trimmed) = prefix_parts(prefix, replacement)?;
    let alone = if replacement.is_empty() {
        "/"
    } else {
        replacement
    };
    Ok(vec![
        format!("^{base}$"),
        template_literal(alone)?,
        format!("^{base}(/.*)$"),
        format!("{trimmed}$1"),
    ])
}

/// The escaped prefix (empty for `/`) and the replacement without its trailing slash.
fn prefix_parts(prefix: &str, replacement: &str) -> Result<(String, String), String> {
    let base = if prefix == "/" {
        String::new()
    } else {
        regex::escape(prefix)
    };
    Ok((base, template_literal(replacement.trim_end_matches('/'))?))
}

enum PathRewrite {
    Full(String),
    /// The rule's one prefix and its replacement.
    Prefix(String, String),
}

fn path_rewrite(p: &PathModifier, rule: &HttpRouteRule) -> Result<PathRewrite, String> {
    match p.type_.as_str() {
        "ReplaceFullPath" => Ok(PathRewrite::Full(template_literal(
            p.replace_full_path.as_deref().unwrap_or("/"),
        )?)),
        "ReplacePrefixMatch" => Ok(PathRewrite::Prefix(
            rule_prefix(rule)?,
            p.replace_prefix_match.clone().unwrap_or_default(),
        )),
        other => Err(format!("unknown path modifier {other:?}")),
    }
}

fn default_port(scheme: &str) -> Option<i32> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// RequestRedirect -> the `redirect` plugin. The scheme is the filter's or the
/// listener's; the port the filter's, else the scheme's well-known one when the filter
/// changes the scheme, else the listener's; a well-known port is left out of `Location`.
fn redirect(r: &RequestRedirect, rule: &HttpRouteRule, at: &Placement) -> Result<Value, String> {
    let listener_scheme = at
        .protocols
        .iter()
        .next()
        .map(|p| p.to_ascii_lowercase())
        .unwrap_or_else(|| "http".into());
    let scheme = r.scheme.clone().unwrap_or(listener_scheme);
    let port = match (r.port, &r.scheme) {
        (Some(p), _) => Some(p),
        (None, Some(s)) => default_port(s),
        (None, None) => at.ports.iter().next().copied(),
    };
    let port = match port {
        Some(p) if Some(p) != default_port(&scheme) => format!(":{p}"),
        _ => String::new(),
    };
    let host = match &r.hostname {
        Some(h) => template_literal(h)?,
        None => "$host".into(),
    };
    let origin = format!("{scheme}://{host}{port}");
    let code = r.status_code.unwrap_or(302);
    let path = match &r.path {
        None => {
            return Ok(json!({"uri": format!("{origin}$uri"), "ret_code": code,
                                 "append_query_string": true}))
        }
        Some(p) => path_rewrite(p, rule)?,
    };
    Ok(match path {
        PathRewrite::Full(path) => json!({"uri": format!("{origin}{path}"), "ret_code": code,
                                          "append_query_string": true}),
        // `redirect` takes one pair: the prefix, with or without more path after it.
        PathRewrite::Prefix(prefix, replacement) => {
            let (base, trimmed) = prefix_parts(&prefix, &replacement)?;
            json!({"regex_uri": [format!("^{base}(/.*)?$"), format!("{origin}{trimmed}$1")],
                   "ret_code": code, "append_query_string": true})
        }
    })
}

/// A Gateway API duration (`1h`, `30s`, `500ms`, `1m30s`) in seconds.
pub fn duration(s: &str) -> Result<f64, String> {
    let mut total = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return Err(format!("{s:?} is not a duration"));
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{s:?} is not a duration"))?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else {
            return Err(format!("{s:?} is not a duration"));
        };
        total += n * unit;
        rest = &rest[len..];
    }
    Ok(total)
}

#[cfg(test)]
#[path = "translate_tests.rs"]
mod tests;
