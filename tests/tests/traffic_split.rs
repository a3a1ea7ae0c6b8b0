//! End-to-end `traffic-split` (issue 4): weighted upstreams per rule and `vars` matches,
//! against real backends through a real gateway fed by a real etcd, and the Admin API's
//! reference checks for the upstreams its rules name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::{eventually, AdminApi, Backend, Etcd, Gateway};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

const KEY: &str = "test-key";

struct Stack {
    _etcd: Etcd,
    admin: AdminApi,
    gw: Gateway,
    client: reqwest::Client,
}

async fn stack() -> Stack {
    let etcd = Etcd::start();
    let admin = AdminApi::start(&etcd.url, "/gw", KEY);
    let gw = Gateway::start(&etcd.url, "/gw", &[]);
    gw.wait_ready().await;
    Stack {
        _etcd: etcd,
        admin,
        gw,
        client: reqwest::Client::new(),
    }
}

impl Stack {
    /// Which backend answered, or the status (0: no response at all).
    async fn who(&self, path: &str, headers: &[(&str, &str)]) -> Result<String, u16> {
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

    /// Puts upstreams `stable` (backend `a`) and `canary` (backend `b`).
    async fn upstreams(&self, a: &Backend, b: &Backend) {
        for (id, backend) in [("stable", a), ("canary", b)] {
            self.admin
                .ok(
                    "PUT",
                    &format!("/upstreams/{id}"),
                    Some(json!({"nodes": {backend.node(): 1}})),
                )
                .await;
        }
    }

    /// Puts route `id` on `/{id}/*` to upstream `stable` with `split`, and waits until
    /// the gateway has the split (the probe path answers with `probe_backend`).
    async fn split_route(&self, id: &str, split: Value, probe: (&str, &str)) {
        self.admin
            .ok(
                "PUT",
                &format!("/routes/{id}"),
                Some(json!({
                    "uri": format!("/{id}/*"),
                    "upstream_id": "stable",
                    "plugins": {"traffic-split": split},
                })),
            )
            .await;
        let path = format!("/{id}/{}", probe.0);
        eventually(Duration::from_secs(3), "split served", || async {
            self.who(&path, &[]).await.is_ok_and(|b| b == probe.1)
        })
        .await;
    }

    /// `requests` sequential requests; the answers by backend, failures under "!status".
    async fn tally(
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
}

/// 3:1 between an upstream by id and an inline one: smooth weighted round robin gives
/// 300/100 over 400 requests (within 1%, as the probe may start the window mid-cycle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_3_to_1_give_300_and_100_of_400() {
    let s = stack().await;
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    s.upstreams(&a, &b).await;
    s.split_route(
        "w",
        json!({"rules": [{"weighted_upstreams": [
            {"upstream_id": "canary", "weight": 3},
            {"upstream": {"nodes": {c.node(): 1}}, "weight": 1}
        ]}]}),
        ("probe", "c"),
    )
    .await;
    let seen = s.tally("/w/x", &[], 400).await;
    let (nb, nc) = (
        seen.get("b").copied().unwrap_or(0),
        seen.get("c").copied().unwrap_or(0),
    );
    assert_eq!(nb + nc, 400, "{seen:?}");
    assert!(nb.abs_diff(300) <= 4 && nc.abs_diff(100) <= 4, "{seen:?}");
    assert_eq!(a.hits(), 0, "the route's own upstream has weight 0 here");
    println!("3:1 over 400 requests: {seen:?}");
}

/// A rule with two `match` entries (header or query argument) sends matching requests to
/// the canary; the others fall through to the route's own upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_requests_go_to_the_canary() {
    let s = stack().await;
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    s.upstreams(&a, &b).await;
    s.split_route(
        "m",
        json!({"rules": [{
            "match": [
                {"vars": [["http_x-canary", "==", "1"]]},
                {"vars": [["arg_canary", "==", "1"]]}
            ],
            "weighted_upstreams": [{"upstream_id": "canary", "weight": 1}]
        }]}),
        ("probe?canary=1", "b"),
    )
    .await;
    for (path, headers, want) in [
        ("/m/x", &[("x-canary", "1")][..], "b"),
        ("/m/x?canary=1", &[][..], "b"),
        ("/m/x?canary=1", &[("x-canary", "0")][..], "b"),
        ("/m/x", &[][..], "a"),
        ("/m/x", &[("x-canary", "0")][..], "a"),
        ("/m/x?canary=2", &[][..], "a"),
    ] {
        let seen = s.tally(path, headers, 20).await;
        assert_eq!(
            seen,
            HashMap::from([(want.to_string(), 20)]),
            "{path} {headers:?}"
        );
    }
}

/// An entry with neither `upstream_id` nor `upstream` is the route's own upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_without_upstream_is_the_routes_own() {
    let s = stack().await;
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    s.upstreams(&a, &b).await;
    s.split_route(
        "o",
        json!({"rules": [{"weighted_upstreams": [
            {"upstream_id": "canary", "weight": 1},
            {"weight": 1}
        ]}]}),
        ("probe", "b"),
    )
    .await;
    let seen = s.tally("/o/x", &[], 200).await;
    let (na, nb) = (
        seen.get("a").copied().unwrap_or(0),
        seen.get("b").copied().unwrap_or(0),
    );
    assert_eq!(na + nb, 200, "{seen:?}");
    assert!(na.abs_diff(100) <= 1, "{seen:?}");
}

/// The Admin API checks the upstreams a rule names, and counts rules as users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_checks_rule_upstreams() {
    let s = stack().await;
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    s.upstreams(&a, &b).await;
    let route = |split: Value| json!({"uri": "/r", "upstream_id": "stable", "plugins": {"traffic-split": split}});
    let (status, body) = s
        .admin
        .call(
            "PUT",
            "/routes/r",
            Some(route(json!({"rules": [{"weighted_upstreams": [
                {"upstream_id": "canary"}, {"upstream_id": "nope"}
            ]}]}))),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error_msg"],
        "upstream nope referenced by plugins.traffic-split.rules[0].weighted_upstreams[1].upstream_id does not exist"
    );
    let (status, body) = s
        .admin
        .call(
            "PUT",
            "/routes/r",
            Some(route(
                json!({"rules": [{"weighted_upstreams": [{"weight": -1}]}]}),
            )),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let msg = body["error_msg"].as_str().unwrap();
    assert!(
        msg.contains("plugins.traffic-split.rules[0].weighted_upstreams[0].weight"),
        "{msg}"
    );
    let (status, body) = s
        .admin
        .call(
            "PUT",
            "/routes/r",
            Some(json!({"uri": "/r", "upstream_id": "stable", "plugins": {"limit-count": {}}})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // A valid split is stored; a PATCH to a missing upstream is checked like a PUT.
    s.admin
        .ok(
            "PUT",
            "/routes/r",
            Some(route(
                json!({"rules": [{"weighted_upstreams": [{"upstream_id": "canary"}]}]}),
            )),
        )
        .await;
    let (status, body) = s
        .admin
        .call(
            "PATCH",
            "/routes/r",
            Some(json!({"plugins": {"traffic-split": {"rules": [{"weighted_upstreams": [{"upstream_id": "nope"}]}]}}})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = s.admin.call("DELETE", "/upstreams/canary", None).await;
    assert_eq!(status, 400, "{body}");
    let msg = body["error_msg"].as_str().unwrap();
    assert!(
        msg.contains("can not delete upstream canary: still used by route r"),
        "{msg}"
    );
    s.admin
        .ok("DELETE", "/upstreams/canary?force=true", None)
        .await;
    let (status, _) = s.admin.call("GET", "/upstreams/canary", None).await;
    assert_eq!(status, 404);
}
