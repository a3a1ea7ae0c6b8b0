//! GRPCRoute rules -> gateway routes (pure). A gRPC call is `POST /{service}/{method}`, so
//! a method match is a path match: service and method `Exact` -> the exact path; a service
//! alone -> the prefix `/{service}/`; a method alone or `RegularExpression` -> a `vars`
//! full match on `uri`. The router's order (exact paths, then longer prefixes) is the
//! spec's (longest service, then longest method); then more header matches, older route,
//! earlier rule, through `priority`. Backends are spoken to with gRPC over h2c.
use super::emit::{emit, Owner};
use super::translate::{created, header_conditions, priority, Out, Placement};
use super::types::*;
use crate::translate::{literal_path, Cluster};
use serde_json::{json, Map, Value};

/// One route per (rule, match); a rule without matches matches every call.
pub(super) fn emit_routes(
    c: &Cluster,
    route: &GrpcRoute,
    at: &Placement,
    out: &mut Out,
) -> Vec<String> {
    let default_match = [GrpcRouteMatch::default()];
    let owner = Owner {
        kind: "GRPCRoute",
        id_kind: "gg",
        meta: &route.metadata,
        grpc: true,
    };
    let rules = route.spec.rules.iter().map(|rule| {
        let as_http = HttpRouteRule {
            matches: Vec::new(),
            filters: rule.filters.clone(),
            backend_refs: rule.backend_refs.clone(),
            timeouts: None,
        };
        let matches: &[GrpcRouteMatch] = if rule.matches.is_empty() {
            &default_match
        } else {
            &rule.matches
        };
        (std::borrow::Cow::Owned(as_http), matches)
    });
    emit(c, &owner, at, out, rules, |m, order| {
        match_route(m, &route.metadata, order)
    })
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
    vars.extend(header_conditions(&m.headers)?);
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
