//! One gateway route per (rule, match), whatever the route's kind (pure): the rule's
//! action (`rule.rs`), where the route is served, its match as the kind reads it, and the
//! model's check. What could not be served as written is returned, for the route's
//! `PartiallyInvalid`.
use super::rule::{rule_action, Action};
use super::translate::{name_of, ns_of, Out, Placement};
use super::types::HttpRouteRule;
use crate::translate::{check, labels, stable_id, truncate, Cluster};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use model::Kind;
use serde_json::{json, Map, Value};
use std::borrow::Cow;

/// The route a rule belongs to.
pub(super) struct Owner<'a> {
    /// `HTTPRoute` or `GRPCRoute`.
    pub kind: &'static str,
    /// The kind's letter in route ids (ids must not change between releases).
    pub id_kind: &'static str,
    pub meta: &'a ObjectMeta,
    /// A GRPCRoute's backends speak gRPC.
    pub grpc: bool,
}

/// Emits the routes of `rules` (each as the filters and backends `rule.rs` reads, and the
/// rule's matches, never empty); `to_route(match, order)` gives a match's part of a route.
pub(super) fn emit<'r, M: 'r>(
    c: &Cluster,
    owner: &Owner<'_>,
    at: &Placement,
    out: &mut Out,
    rules: impl Iterator<Item = (Cow<'r, HttpRouteRule>, &'r [M])>,
    to_route: impl Fn(&M, usize) -> Result<Map<String, Value>, String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let (ns, name) = (ns_of(owner.meta), name_of(owner.meta));
    let who = format!("{} {ns}/{name}", owner.kind.to_ascii_lowercase());
    for (ri, (rule, matches)) in rules.enumerate() {
        let action = match rule_action(c, &ns, &rule, at, owner.grpc) {
            Ok(a) => a,
            Err(e) => {
                out.warnings.push(format!(
                    "{who} rule {ri}: {e}; its requests are answered 500"
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
                .map(|w| format!("{who} rule {ri}: {w}")),
        );
        for (mi, m) in matches.iter().enumerate() {
            let id = stable_id(
                owner.id_kind,
                &[&ns, &name, &ri.to_string(), &mi.to_string()],
            );
            let route = to_route(m, ri * 64 + mi).and_then(|mut r| {
                r.insert("id".into(), json!(id));
                r.insert("name".into(), json!(truncate(format!("{ns}/{name}"), 100)));
                r.insert("desc".into(), json!(format!("rule {ri} match {mi}")));
                at.write(&mut r);
                action.write(&mut r);
                r.insert("labels".into(), labels(owner.kind, &ns, &name));
                let r = Value::Object(r);
                // What the model refuses is left out by the writer: say so here too.
                check(Kind::Routes, &r).map(|()| r)
            });
            match route {
                Ok(r) => out.routes.push((id, r)),
                Err(e) => {
                    out.warnings
                        .push(format!("{who} rule {ri} match {mi} left out: {e}"));
                    problems.push(format!("rule {ri} match {mi}: {e}"));
                }
            }
        }
    }
    problems
}
