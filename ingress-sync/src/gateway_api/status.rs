//! Writes the Gateway API status that [`super::translate`] computed, when it differs from
//! what the object shows. A route's `status.parents` is shared by every controller of its
//! parents: the entries of other controllers are kept as they are.
use super::translate::StatusUpdate;
use super::types::{Gateway, GatewayClass, GrpcRoute, HttpRoute};
use crate::translate::Cluster;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{json, Value};

/// The full `status` to write for `update`, or `None` when the object already shows it
/// (or is gone). Pure.
pub fn merged(cluster: &Cluster, update: &StatusUpdate, controller: &str) -> Option<Value> {
    let find = |ns: Option<&String>, name: Option<&String>| {
        ns.map_or("", |n| n.as_str()) == update.namespace && name.is_some_and(|n| *n == update.name)
    };
    let current = match update.kind {
        "GatewayClass" => cluster
            .gateway_classes
            .iter()
            .find(|o| find(None, o.metadata.name.as_ref()))
            .map(|o| o.status.clone()),
        "Gateway" => cluster
            .gateways
            .iter()
            .find(|o| find(o.metadata.namespace.as_ref(), o.metadata.name.as_ref()))
            .map(|o| o.status.clone()),
        "HTTPRoute" => cluster
            .http_routes
            .iter()
            .find(|o| find(o.metadata.namespace.as_ref(), o.metadata.name.as_ref()))
            .map(|o| o.status.clone()),
        "GRPCRoute" => cluster
            .grpc_routes
            .iter()
            .find(|o| find(o.metadata.namespace.as_ref(), o.metadata.name.as_ref()))
            .map(|o| o.status.clone()),
        _ => None,
    }?
    .unwrap_or(Value::Null);
    let want = if update.kind.ends_with("Route") {
        // Ours replace ours where they stood; the others stay as they are.
        let all = current["parents"].as_array().cloned().unwrap_or_default();
        let at = all
            .iter()
            .position(|p| p["controllerName"] == controller)
            .unwrap_or(all.len());
        let mut parents: Vec<Value> = all
            .iter()
            .filter(|p| p["controllerName"] != controller)
            .cloned()
            .collect();
        let ours = update.status["parents"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let at = at.min(parents.len());
        parents.splice(at..at, ours);
        json!({ "parents": parents })
    } else {
        let mut want = current.clone();
        if !want.is_object() {
            want = json!({});
        }
        if let (Some(w), Some(u)) = (want.as_object_mut(), update.status.as_object()) {
            for (k, v) in u {
                w.insert(k.clone(), v.clone());
            }
        }
        want
    };
    // Compared without regard to the order of `parents`: two controllers that each put
    // theirs elsewhere must not rewrite the list back and forth.
    if same_ignoring_order(&want, &current) {
        return None;
    }
    Some(want)
}

fn same_ignoring_order(a: &Value, b: &Value) -> bool {
    let sorted = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(list) = v.get_mut("parents").and_then(Value::as_array_mut) {
            list.sort_by_key(|p| p.to_string());
        }
        v
    };
    sorted(a) == sorted(b)
}

/// Patches every object whose status differs; failures are logged (the next pass retries).
pub async fn update(
    client: &Client,
    cluster: &Cluster,
    updates: &[StatusUpdate],
    controller: &str,
) {
    for u in updates {
        let Some(status) = merged(cluster, u, controller) else {
            continue;
        };
        // A merge patch replaces lists whole: `status` carries every entry we keep.
        let patch = Patch::Merge(json!({ "status": status }));
        let params = PatchParams::default();
        let result = match u.kind {
            "GatewayClass" => Api::<GatewayClass>::all(client.clone())
                .patch_status(&u.name, &params, &patch)
                .await
                .map(|_| ()),
            "Gateway" => Api::<Gateway>::namespaced(client.clone(), &u.namespace)
                .patch_status(&u.name, &params, &patch)
                .await
                .map(|_| ()),
            "GRPCRoute" => Api::<GrpcRoute>::namespaced(client.clone(), &u.namespace)
                .patch_status(&u.name, &params, &patch)
                .await
                .map(|_| ()),
            _ => Api::<HttpRoute>::namespaced(client.clone(), &u.namespace)
                .patch_status(&u.name, &params, &patch)
                .await
                .map(|_| ()),
        };
        let what = format!("{} {}/{}", u.kind, u.namespace, u.name);
        match result {
            Ok(()) => tracing::info!(object = %what, "status updated"),
            Err(e) => tracing::warn!(object = %what, error = %e, "status patch failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn other_controllers_entries_are_kept_and_equal_status_is_not_patched() {
        let theirs = json!({"parentRef": {"name": "gw"}, "controllerName": "other.io/c",
                            "conditions": []});
        let old_ours = json!({"parentRef": {"name": "gw"}, "controllerName": "me.io/c",
                              "conditions": [{"type": "Accepted", "status": "False"}]});
        let new_ours = json!({"parentRef": {"name": "gw"}, "controllerName": "me.io/c",
                              "conditions": [{"type": "Accepted", "status": "True"}]});
        let route: HttpRoute = serde_json::from_value(json!({
            "metadata": {"name": "r", "namespace": "ns"},
            "status": {"parents": [theirs.clone(), old_ours]}
        }))
        .unwrap();
        let mut cluster = Cluster {
            http_routes: vec![route],
            ..Cluster::default()
        };
        let update = StatusUpdate {
            kind: "HTTPRoute",
            namespace: "ns".into(),
            name: "r".into(),
            status: json!({"parents": [new_ours.clone()]}),
        };
        let want = merged(&cluster, &update, "me.io/c").unwrap();
        assert_eq!(want, json!({"parents": [theirs.clone(), new_ours.clone()]}));
        cluster.http_routes[0].status = Some(want);
        assert_eq!(merged(&cluster, &update, "me.io/c"), None);
        // Theirs first or ours first: the same status, nothing to write (two controllers
        // sharing a route do not rewrite it in turn).
        cluster.http_routes[0].status =
            Some(json!({"parents": [new_ours.clone(), theirs.clone()]}));
        assert_eq!(merged(&cluster, &update, "me.io/c"), None);
        // No parent of ours any more: ours are removed, theirs kept.
        let gone = StatusUpdate {
            status: json!({"parents": []}),
            ..update.clone()
        };
        assert_eq!(
            merged(&cluster, &gone, "me.io/c"),
            Some(json!({"parents": [theirs]}))
        );
        // A deleted object: nothing to write.
        cluster.http_routes.clear();
        assert_eq!(merged(&cluster, &update, "me.io/c"), None);
    }
}
