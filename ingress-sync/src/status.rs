//! `status.loadBalancer.ingress` of the Ingresses we serve, patched only when it differs.
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{json, Value};

/// The `ingress` list for `--publish-address`: an IP, else a host name.
pub fn desired(publish_address: &str) -> Value {
    if publish_address.parse::<std::net::IpAddr>().is_ok() {
        json!([{ "ip": publish_address }])
    } else {
        json!([{ "hostname": publish_address }])
    }
}

/// Does `ingress` need a patch to show `want`?
pub fn needs_patch(ingress: &Ingress, want: &Value) -> bool {
    let current = ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .and_then(|list| serde_json::to_value(list).ok())
        .unwrap_or(Value::Null);
    current != *want
}

/// Patches every served Ingress whose status differs; errors are logged, not fatal.
pub async fn update(
    client: &Client,
    ingresses: &[Ingress],
    served: &[(String, String)],
    addr: &str,
) {
    let want = desired(addr);
    for ing in ingresses {
        let ns = ing.metadata.namespace.clone().unwrap_or_default();
        let name = ing.metadata.name.clone().unwrap_or_default();
        if !served.iter().any(|(n, m)| *n == ns && *m == name) || !needs_patch(ing, &want) {
            continue;
        }
        let api: Api<Ingress> = Api::namespaced(client.clone(), &ns);
        let patch = json!({"status": {"loadBalancer": {"ingress": want}}});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => tracing::info!(ingress = %format!("{ns}/{name}"), "status updated"),
            Err(e) => {
                tracing::warn!(ingress = %format!("{ns}/{name}"), error = %e, "status patch failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn patch_only_when_the_status_differs() {
        assert_eq!(desired("10.0.0.1"), json!([{"ip": "10.0.0.1"}]));
        assert_eq!(desired("2001:db8::1"), json!([{"ip": "2001:db8::1"}]));
        assert_eq!(
            desired("lb.example.com"),
            json!([{"hostname": "lb.example.com"}])
        );
        let with = |status: Value| -> Ingress {
            serde_json::from_value(json!({"metadata": {"name": "a"}, "status": status})).unwrap()
        };
        let want = desired("10.0.0.1");
        assert!(needs_patch(&with(json!({})), &want));
        assert!(needs_patch(
            &with(json!({"loadBalancer": {"ingress": [{"ip": "10.0.0.2"}]}})),
            &want
        ));
        assert!(!needs_patch(
            &with(json!({"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}})),
            &want
        ));
    }
}
