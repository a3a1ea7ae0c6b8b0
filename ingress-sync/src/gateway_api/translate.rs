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
use super::emit::{emit, Owner};
use super::hostnames::{intersect, Hosts};
use super::types::*;
use crate::endpoints::PortRef;
use crate::translate::{literal_path, truncate, BackendRef, Cluster};
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

pub(super) fn ns_of(meta: &ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_default()
}

pub(super) fn name_of(meta: &ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

pub(super) fn created(meta: &ObjectMeta) -> i64 {
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
    /// The route kinds it admits (`supportedKinds`).
    kinds: Vec<&'static str>,
    /// Its certificates' Secrets, (namespace, name).
    secrets: Vec<(String, String)>,
    /// The hosts of the routes attached to it: a listener without a hostname serves its
    /// certificate for these names.
    route_hosts: BTreeSet<String>,
    attached: u32,
}

/// The route kinds we serve, as `allowedRoutes.kinds` names them.
const ROUTE_KINDS: [&str; 2] = ["HTTPRoute", "GRPCRoute"];

fn route_kind(k: &RouteGroupKind) -> Option<&'static str> {
    if k.group.as_deref().unwrap_or(GROUP) != GROUP {
        return None;
    }
    ROUTE_KINDS.iter().copied().find(|r| *r == k.kind)
}

fn listeners<'a>(c: &'a Cluster, gw: &'a Gateway) -> Vec<ListenerView<'a>> {
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
                kinds: ROUTE_KINDS.to_vec(),
                attached: 0,
                secrets: Vec::new(),
                route_hosts: BTreeSet::new(),
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
                            Ok(secret) => v.secrets.push(secret),
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
                    v.kinds = ROUTE_KINDS
                        .iter()
                        .copied()
                        .filter(|r| ar.kinds.iter().any(|k| route_kind(k) == Some(*r)))
                        .collect();
                    if ar.kinds.iter().any(|k| route_kind(k).is_none()) {
                        v.unresolved = Some((
                            "InvalidRouteKinds",
                            "only HTTPRoute and GRPCRoute are supported".into(),
                        ));
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
    let secret = c.secrets.iter().find(|s| {
        s.metadata.namespace.as_deref() == Some(ns.as_str())
            && s.metadata.name.as_deref() == Some(r.name.as_str())
    });
    let usable = secret
        .ok_or_else(|| "does not exist".to_string())
        .and_then(crate::tls::check_secret);
    if let Err(e) = usable {
        return Err((
            "InvalidCertificateRef",
            format!("Secret {ns}/{}: {e}", r.name),
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
pub(super) struct Placement {
    hosts: Option<Hosts>,
    pub(super) protocols: BTreeSet<String>,
    pub(super) ports: BTreeSet<i32>,
}

impl Placement {
    /// Its hosts, and — when it is attached to HTTP listeners only, or HTTPS ones only —
    /// a condition on the scheme, so that it is not served on the other listener.
    pub(super) fn write(&self, r: &mut Map<String, Value>) {
        if let Some(Hosts::Names(h)) = &self.hosts {
            r.insert("hosts".into(), json!(h));
        }
        if self.protocols.len() == 1 {
            let scheme = self.protocols.iter().next().map(|p| p.to_ascii_lowercase());
            push_var(r, json!(["scheme", "==", scheme]));
        }
    }
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
        views.extend(listeners(c, gw));
    }

    for route in &c.http_routes {
        let r = RouteRef::new(
            c,
            "HTTPRoute",
            &route.metadata,
            (
                &route.spec.parent_refs,
                &route.spec.hostnames,
                &route.status,
            ),
            route
                .spec
                .rules
                .iter()
                .map(|r| (&r.backend_refs, &r.filters)),
        );
        serve(c, cx, &r, &gateways, &mut views, &mut out, |at, out| {
            emit_routes(c, route, at, out)
        });
    }
    for route in &c.grpc_routes {
        let r = RouteRef::new(
            c,
            "GRPCRoute",
            &route.metadata,
            (
                &route.spec.parent_refs,
                &route.spec.hostnames,
                &route.status,
            ),
            route
                .spec
                .rules
                .iter()
                .map(|r| (&r.backend_refs, &r.filters)),
        );
        serve(c, cx, &r, &gateways, &mut views, &mut out, |at, out| {
            super::grpc::emit_routes(c, route, at, out)
        });
    }

    for v in &views {
        let snis: BTreeSet<String> = match &v.listener.hostname {
            Some(h) if !h.is_empty() => [h.to_ascii_lowercase()].into(),
            _ => v.route_hosts.clone(),
        };
        if snis.is_empty() && !v.secrets.is_empty() {
            out.warnings.push(format!(
                "gateway {}/{}: listener {} has no hostname and no route with hostnames; \
                 its certificate waits for a name to serve it by (SNI)",
                ns_of(&v.gateway.metadata),
                name_of(&v.gateway.metadata),
                v.listener.name
            ));
        }
        for secret in &v.secrets {
            out.certificates
                .entry(secret.clone())
                .or_default()
                .extend(snis.iter().cloned());
        }
    }
    out.certificates.retain(|_, snis| !snis.is_empty());
    for gw in &gateways {
        out.statuses.push(gateway_status(gw, &views, cx));
    }
    out
}

/// What attachment needs of a route, whatever its kind.
struct RouteRef<'a> {
    kind: &'static str,
    meta: &'a ObjectMeta,
    parent_refs: &'a [ParentRef],
    hostnames: &'a [String],
    status: &'a Option<Value>,
    /// Its `ResolvedRefs`: the first backend ref that fails.
    resolved: Result<(), (&'static str, String)>,
}

/// Attaches a route, emits its routes where it is accepted, and says which of its parts
/// could not be served.
fn serve(
    c: &Cluster,
    cx: &Context<'_>,
    r: &RouteRef<'_>,
    gateways: &[&Gateway],
    views: &mut [ListenerView<'_>],
    out: &mut Out,
    emit_routes: impl FnOnce(&Placement, &mut Out) -> Vec<String>,
) {
    if let Some(at) = attach(c, cx, r, gateways, views, out) {
        let problems = emit_routes(&at, out);
        partially_invalid(out, r, &problems, cx);
    }
}

impl<'a> RouteRef<'a> {
    /// `spec`: the route's parent refs, hostnames and status; `rules`: each rule's backend
    /// refs and filters, for `ResolvedRefs`.
    fn new(
        c: &Cluster,
        kind: &'static str,
        meta: &'a ObjectMeta,
        spec: (&'a [ParentRef], &'a [String], &'a Option<Value>),
        rules: impl Iterator<Item = (&'a Vec<HttpBackendRef>, &'a Vec<HttpRouteFilter>)>,
    ) -> RouteRef<'a> {
        RouteRef {
            kind,
            meta,
            parent_refs: spec.0,
            hostnames: spec.1,
            status: spec.2,
            resolved: rule_refs(c, meta, rules),
        }
    }
}

/// Attaches a route to the listeners of its parents and records its status; where it is
/// served when it is accepted anywhere.
fn attach(
    c: &Cluster,
    cx: &Context<'_>,
    route: &RouteRef<'_>,
    gateways: &[&Gateway],
    views: &mut [ListenerView<'_>],
    out: &mut Out,
) -> Option<Placement> {
    let ns = ns_of(route.meta);
    let name = name_of(route.meta);
    let mut placement = Placement::default();
    let mut parents = Vec::new();
    for parent in route.parent_refs {
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
                    && v.kinds.contains(&route.kind)
                    && namespace_allowed(c, v.listener, &gw_ns, &ns)
            })
            .collect();
        let mut attached = false;
        for i in &allowed {
            let v = &mut views[*i];
            if let Some(h) = intersect(v.listener.hostname.as_deref(), route.hostnames) {
                attached = true;
                v.attached += 1;
                if let Hosts::Names(names) = &h {
                    v.route_hosts.extend(names.iter().cloned());
                }
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
        let refs = match &route.resolved {
            Ok(()) => Condition::yes("ResolvedRefs", "ResolvedRefs"),
            Err((reason, message)) => Condition::no("ResolvedRefs", reason, message.clone()),
        };
        parents.push((parent.clone(), [accepted, refs]));
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
                "conditions": render(current, conds, generation(route.meta), cx.now),
            })
        })
        .collect();
    let ours_shown = current_parents
        .iter()
        .any(|e| e["controllerName"] == cx.controller);
    // No parent of ours (any more): only entries of ours still shown need removing.
    if !entries.is_empty() || ours_shown {
        out.statuses.push(StatusUpdate {
            kind: route.kind,
            namespace: ns,
            name,
            status: json!({ "parents": entries }),
        });
    }
    placement.hosts.is_some().then_some(placement)
}

/// Adds `PartiallyInvalid` (the spec's "Dropped Rule" form) to the route's accepted
/// parents when some of its rules or matches could not be served as written.
fn partially_invalid(out: &mut Out, r: &RouteRef<'_>, problems: &[String], cx: &Context<'_>) {
    if problems.is_empty() {
        return;
    }
    let (ns, name) = (ns_of(r.meta), name_of(r.meta));
    let Some(update) = out
        .statuses
        .iter_mut()
        .rev()
        .find(|u| u.kind == r.kind && u.namespace == ns && u.name == name)
    else {
        return;
    };
    let message = format!("Dropped Rule: {}", problems.join("; "));
    let current = r
        .status
        .as_ref()
        .and_then(|s| s["parents"].as_array().cloned())
        .unwrap_or_default();
    for entry in update.status["parents"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        let accepted = entry["conditions"].as_array().is_some_and(|l| {
            l.iter()
                .any(|c| c["type"] == "Accepted" && c["status"] == "True")
        });
        if !accepted {
            continue;
        }
        let old = current
            .iter()
            .find(|e| e["parentRef"] == entry["parentRef"] && e["controllerName"] == cx.controller)
            .map(|e| e["conditions"].clone())
            .unwrap_or(Value::Null);
        let cond = Condition {
            type_: "PartiallyInvalid",
            ok: true,
            reason: "UnsupportedValue",
            message: truncate(message.clone(), 32_000),
        };
        let rendered = render(&old, &[cond], generation(r.meta), cx.now);
        if let (Some(list), Some(c)) = (entry["conditions"].as_array_mut(), rendered.get(0)) {
            list.push(c.clone());
        }
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

/// The route's `ResolvedRefs`: the first backend ref (rules, then mirrors, the rule's and
/// then the backends') that fails.
fn rule_refs<'a>(
    c: &Cluster,
    meta: &ObjectMeta,
    rules: impl Iterator<Item = (&'a Vec<HttpBackendRef>, &'a Vec<HttpRouteFilter>)>,
) -> Result<(), (&'static str, String)> {
    let ns = ns_of(meta);
    for (refs, filters) in rules {
        for b in refs {
            backend(c, &ns, b)?;
        }
        // The rule's mirrors, then each backend's own.
        let backend_filters = refs.iter().flat_map(|b| &b.filters);
        for f in filters.iter().chain(backend_filters) {
            if let Some(m) = &f.request_mirror {
                backend(c, &ns, &m.backend_ref)?;
            }
        }
    }
    Ok(())
}

/// A backend ref -> the Service port it names, or the `ResolvedRefs` failure.
pub(super) fn backend(
    c: &Cluster,
    route_ns: &str,
    b: &HttpBackendRef,
) -> Result<BackendRef, (&'static str, String)> {
    backend_speaking(c, route_ns, b).map(|(r, _)| r)
}

/// [`backend`], with how it is spoken to (its Service port's `appProtocol`).
pub(super) fn backend_speaking(
    c: &Cluster,
    route_ns: &str,
    b: &HttpBackendRef,
) -> Result<(BackendRef, BackendProtocol), (&'static str, String)> {
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
    let Some(service) = c.services.iter().find(|s| {
        s.metadata.namespace.as_deref() == Some(ns.as_str())
            && s.metadata.name.as_deref() == Some(b.name.as_str())
    }) else {
        return Err((
            "BackendNotFound",
            format!("Service {ns}/{} does not exist", b.name),
        ));
    };
    let Some(port) = b.port else {
        return Err((
            "UnsupportedValue",
            format!("backend Service {ns}/{} names no port", b.name),
        ));
    };
    let app_protocol = service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_ref())
        .and_then(|ports| ports.iter().find(|p| p.port == port))
        .and_then(|p| p.app_protocol.as_deref());
    let protocol = backend_protocol(app_protocol).map_err(|supported| {
        (
            "UnsupportedProtocol",
            format!(
                "Service {ns}/{} port {port}: appProtocol {:?} is not supported (supported: {supported})",
                b.name,
                app_protocol.unwrap_or_default()
            ),
        )
    })?;
    let r = BackendRef {
        namespace: ns,
        service: b.name.clone(),
        port: PortRef::Number(port),
        grpc: protocol == BackendProtocol::H2c,
    };
    Ok((r, protocol))
}

/// How a backend is spoken to, from its Service port's `appProtocol` (GEP-1911).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum BackendProtocol {
    Http1,
    /// HTTP/2 with prior knowledge, in clear text.
    H2c,
    /// HTTP/1.1, and its routes let WebSocket handshakes through.
    WebSocket,
}

/// `appProtocol` as GEP-1911 reads it; `Err` lists what is supported. `kubernetes.io/wss`
/// (WebSocket over TLS to the backend) is not: TLS to backends needs BackendTLSPolicy.
pub(super) fn backend_protocol(
    app_protocol: Option<&str>,
) -> Result<BackendProtocol, &'static str> {
    match app_protocol.map(str::to_ascii_lowercase).as_deref() {
        None | Some("" | "http") => Ok(BackendProtocol::Http1),
        Some("kubernetes.io/h2c" | "grpc") => Ok(BackendProtocol::H2c),
        Some("kubernetes.io/ws") => Ok(BackendProtocol::WebSocket),
        Some(_) => Err("none, http, kubernetes.io/h2c, grpc, kubernetes.io/ws"),
    }
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
        let kinds: Vec<Value> = if v.invalid.is_some() {
            Vec::new()
        } else {
            v.kinds
                .iter()
                .map(|k| json!({"group": GROUP, "kind": k}))
                .collect()
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

/// One route per (rule, match); a rule without matches matches `PathPrefix /`.
fn emit_routes(c: &Cluster, route: &HttpRoute, at: &Placement, out: &mut Out) -> Vec<String> {
    let default_match = [HttpRouteMatch::default()];
    let owner = Owner {
        kind: "HTTPRoute",
        id_kind: "g",
        meta: &route.metadata,
        grpc: false,
    };
    let rules = route.spec.rules.iter().map(|rule| {
        let matches: &[HttpRouteMatch] = if rule.matches.is_empty() {
            &default_match
        } else {
            &rule.matches
        };
        (std::borrow::Cow::Borrowed(rule), matches)
    });
    emit(c, &owner, at, out, rules, |m, order| {
        match_route(m, route, order)
    })
}

pub(super) fn push_var(r: &mut Map<String, Value>, cond: Value) {
    match r.get_mut("vars").and_then(Value::as_array_mut) {
        Some(v) => v.push(cond),
        None => {
            r.insert("vars".into(), json!([cond]));
        }
    }
}

/// `PathPrefix` without its trailing slash (`/` stays `/`).
pub(super) fn prefix_of(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else {
        t.into()
    }
}

/// A header name as the gateway's `http_*` variable.
pub(super) fn header_var(name: &str) -> String {
    format!("http_{}", name.to_ascii_lowercase().replace('-', "_"))
}

/// Header matches as `vars` conditions (names case-insensitive, values whole).
pub(super) fn header_conditions(headers: &[ValueMatch]) -> Result<Vec<Value>, String> {
    headers
        .iter()
        .map(|h| {
            if h.name.contains('_') {
                // `http_x_y` reads `x-y`: a name with `_` could never match.
                return Err(format!(
                    "header name {:?} with \"_\" cannot be matched",
                    h.name
                ));
            }
            let (op, value) = match h.type_.as_deref().unwrap_or("Exact") {
                "Exact" => ("==", h.value.clone()),
                "RegularExpression" => ("~~", format!("^(?:{})$", h.value)),
                other => return Err(format!("unknown header match type {other:?}")),
            };
            Ok(json!([header_var(&h.name), op, value]))
        })
        .collect()
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
    vars.extend(header_conditions(&m.headers)?);
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

#[cfg(test)]
#[path = "translate_tests.rs"]
mod tests;
