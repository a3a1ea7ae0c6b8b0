//! One etcd, one admin-api and one gateway, with the client-side helpers the routing and
//! balancing tests share: who answered, tallies by backend, node health and metrics.
use crate::{eventually, AdminApi, Etcd, Gateway};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// The admin key the stack's admin-api is started with.
pub const KEY: &str = "test-admin-key-0123";

pub struct Stack {
    pub etcd: Etcd,
    pub admin: AdminApi,
    pub gw: Gateway,
    pub client: reqwest::Client,
}

impl Stack {
    /// Starts etcd, the admin-api and a gateway (with `gateway_args`), ready to serve.
    pub async fn start(gateway_args: &[&str]) -> Stack {
        let etcd = Etcd::start();
        let admin = AdminApi::start(&etcd.url, "/gw", KEY);
        let gw = Gateway::start(&etcd.url, "/gw", gateway_args);
        gw.wait_ready().await;
        Stack {
            etcd,
            admin,
            gw,
            client: reqwest::Client::new(),
        }
    }

    /// Which backend answered, or the status (0: no response at all, 1: not an echo).
    pub async fn who(&self, path: &str, headers: &[(&str, &str)]) -> Result<String, u16> {
        let mut req = self.client.get(self.gw.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.map_err(|_| 0u16)?;
        if resp.status() != 200 {
            return Err(resp.status().as_u16());
        }
        let body: Value = resp.json().await.map_err(|_| 1u16)?;
        Ok(body["backend"].as_str().unwrap_or_default().to_string())
    }

    /// `requests` sequential requests; the answers by backend, failures under "!status".
    pub async fn tally(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        requests: usize,
    ) -> HashMap<String, usize> {
        let mut seen = HashMap::new();
        for _ in 0..requests {
            let k = match self.who(path, headers).await {
                Ok(b) => b,
                Err(s) => format!("!{s}"),
            };
            *seen.entry(k).or_insert(0) += 1;
        }
        seen
    }

    /// Puts upstream `u` and a route `/{u}/*` to it, and waits until the route answers.
    pub async fn upstream(&self, u: &str, def: Value) {
        self.admin
            .ok("PUT", &format!("/upstreams/{u}"), Some(def))
            .await;
        self.admin
            .ok(
                "PUT",
                &format!("/routes/{u}"),
                Some(json!({"uri": format!("/{u}/*"), "upstream_id": u})),
            )
            .await;
        let path = format!("/{u}/probe");
        eventually(Duration::from_secs(2), "route served", || async {
            self.who(&path, &[]).await.is_ok()
        })
        .await;
    }

    /// The health `/status` reports for `node` of upstream `u`.
    pub async fn healthy(&self, u: &str, node: &str) -> Option<bool> {
        let status = self.gw.status_json().await;
        status["upstream_health"]
            .as_array()?
            .iter()
            .find(|n| n["upstream"] == format!("upstreams/{u}") && n["node"] == node)
            .and_then(|n| n["healthy"].as_bool())
    }

    /// The value of an unlabelled metric (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        self.gw.metric(name).await
    }
}
