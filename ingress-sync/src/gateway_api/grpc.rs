//! GRPCRoute rules -> gateway routes (pure). A gRPC call is `POST /{service}/{method}`, so
//! a method match is a path match: service and method `Exact` -> the exact path; a service
//! alone -> the prefix `/{service}/`; a method alone or `RegularExpression` -> a `vars`
//! full match on `uri`. The router's order (exact paths, then longer prefixes) is the
//! spec's (longest service, then longest method); then more header matches, older route,
//! earlier rule, through `priority`. Backends are spoken to with gRPC over h2c.
use super::rule::{rule_action, Action};
use super::translate::{
    created, header_var, literal_path, name_of, ns_of, priority, Out, Placement,
};
use super::types::*;
use crate::translate::{check, labels, stable_id, truncate, Cluster};
use model::Kind;
use serde_json::{json, Map, Value};

/// One route per (rule, match); returns what could not be served as asked.
pub(super) fn emit_routes(
    c: &Cluster,
    route: &GrpcRoute,
    at: &Placement,
    out: &mut Out,
) -> Vec<String> {
    let mut problems = Vec::new();
    let ns = ns_of(&route.metadata);
    let name = name_of(&route.metadata);
    let default_match = [GrpcRouteMatch::default()];
    for (ri, rule) in route.spec.rules.iter().enumerate() {
        let as_http = HttpRouteRule {
            matches: Vec::new(),
            filters: rule.filters.clone(),
            backend_refs: rule.backend_refs.clone(),
            timeouts: None,
        };
        let action = match rule_action(c, &ns, &as_http, at, true) {
            Ok(a) => a,
            Err(e) => {
                out.warnings.push(format!(
                    "grpcroute {ns}/{name} rule {ri}: {e}; its requests are answered 500"
                ));
                problems.push(format!("rule {ri}: {e}"));
                Action::fail(100)
            }
        };
        out.backends.extend(action.backends.iter().cloned());
        out.warnings.extend(
            action
                .warnings
                .iter()
                .map(|w| format!("grpcroute {ns}/{name} rule {ri}: {w}")),
        );
        let matches: &[GrpcRouteMatch] = if rule.matches.is_empty() {
            &default_match
        } else {
            &rule.matches
        };
        for (mi, m) in matches.iter().enumerate() {
            let id = stable_id("gg", &[&ns, &name, &ri.to_string(), &mi.to_string()]);
            match match_route(m, &route.metadata, ri * 64 + mi) {
                Ok(mut r) => {
                    r.insert("id".into(), json!(id));
                    r.insert("name".into(), json!(truncate(format!("{ns}/{name}"), 100)));
                    r.insert("desc".into(), json!(format!("grpc rule {ri} match {mi}")));
                    at.write(&mut r);
                    action.write(&mut r);
                    r.insert("labels".into(), labels("GRPCRoute", &ns, &name));
                    let r = Value::Object(r);
                    // What the model refuses is left out by the writer: say so here too.
                    if let Err(e) = check(Kind::Routes, &r) {
                        out.warnings.push(format!(
                            "grpcroute {ns}/{name} rule {ri} match {mi} left out: {e}"
                        ));
                        problems.push(format!("rule {ri} match {mi}: {e}"));
                        continue;
                    }
                    out.routes.push((id, r));
                }
                Err(e) => {
                    out.warnings
                        .push(format!("grpcroute {ns}/{name} rule {ri} match {mi}: {e}"));
                    problems.push(format!("rule {ri} match {mi}: {e}"));
                }
            }
        }
    }
    problems
}

/// A gRPC service or method name may not hold what would change the path's meaning.
fn name_part(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() || s.contains('/') {
        return Err(format!(
            "{what} {s:?} must be a non-empty name without \"/\""
        ));
    }
    Ok(())
}

fn match_route(
    m: &GrpcRouteMatch,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    order: usize,
) -> Result<Map<String, Value>, String> {
    let mut r = Map::new();
    let mut vars: Vec<Value> = Vec::new();
    let method = m.method.clone().unwrap_or_default();
    let exact = match method.type_.as_deref().unwrap_or("Exact") {
        "Exact" => match (&method.service, &method.method) {
            (Some(s), Some(me)) => {
                name_part("service", s)?;
                name_part("method", me)?;
                let path = format!("/{s}/{me}");
                literal_path(&path)?;
                r.insert("uri".into(), json!(path));
                true
            }
            (Some(s), None) => {
                name_part("service", s)?;
                literal_path(&format!("/{s}"))?;
                r.insert("uri".into(), json!(format!("/{s}/*")));
                false
            }
            (None, Some(me)) => {
                name_part("method", me)?;
                r.insert("uri".into(), json!("/*"));
                vars.push(json!([
                    "uri",
                    "~~",
                    format!("^/[^/]+/{}$", regex::escape(me))
                ]));
                false
            }
            (None, None) => {
                r.insert("uri".into(), json!("/*"));
                false
            }
        },
        "RegularExpression" => {
            let s = method.service.as_deref().unwrap_or("[^/]+");
            let me = method.method.as_deref().unwrap_or("[^/]+");
            r.insert("uri".into(), json!("/*"));
            vars.push(json!(["uri", "~~", format!("^/(?:{s})/(?:{me})$")]));
            false
        }
        other => return Err(format!("unknown method match type {other:?}")),
    };
    for h in &m.headers {
        if h.name.contains('_') {
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
        vars.push(json!([header_var(&h.name), op, value]));
    }
    if !vars.is_empty() {
        r.insert("vars".into(), Value::Array(vars));
    }
    r.insert(
        "priority".into(),
        json!(priority(
            exact,
            false,
            m.headers.len(),
            0,
            created(meta),
            order
        )),
    );
    Ok(r)
}
