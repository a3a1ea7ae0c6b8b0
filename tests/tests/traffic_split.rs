//! End-to-end `traffic-split` (issue 4): weighted upstreams per rule and `vars` matches,
//! against real backends through a real gateway fed by a real etcd, and the Admin API's
//! reference checks for the upstreams its rules name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::stack::Stack;
use e2e::{eventually, Backend};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

async fn stack() -> Stack {
    Stack::start(&[]).await
}

/// Puts upstreams `stable` (backend `a`) and `canary` (backend `b`).
async fn upstreams(s: &Stack, a: &Backend, b: &Backend) {
    for (id, backend) in [("stable", a), ("canary", b)] {
        s.admin
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
async fn split_route(s: &Stack, id: &str, split: Value, probe: (&str, &str)) {
    s.admin
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
        s.who(&path, &[]).await.is_ok_and(|b| b == probe.1)
    })
    .await;
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
    upstreams(&s, &a, &b).await;
    split_route(
        &s,
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
    upstreams(&s, &a, &b).await;
    split_route(
        &s,
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
    upstreams(&s, &a, &b).await;
    split_route(
        &s,
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

/// A weighted upstream's own `plugins` (our extension) run for the requests sent there,
/// after the route's: the path, request headers and response headers each target gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targets_own_plugins_run_only_for_its_requests() {
    let s = stack().await;
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    upstreams(&s, &a, &b).await;
    s.admin
        .ok(
            "PUT",
            "/routes/p",
            Some(json!({
                "uri": "/p/*",
                "upstream_id": "stable",
                "plugins": {
                    "proxy-rewrite": {"headers": {"set": {"x-route": "1", "x-target": "route"}}},
                    "traffic-split": {"rules": [{"weighted_upstreams": [
                        {"upstream_id": "canary", "weight": 1, "plugins": {
                            "proxy-rewrite": {"uri": "/to-canary$uri",
                                              "headers": {"set": {"x-target": "canary"}}},
                            "response-rewrite": {"headers": {"set": {"x-target": "canary"}}}}},
                        {"weight": 1, "plugins": {
                            "proxy-rewrite": {"headers": {"set": {"x-target": "own"}}}}}
                    ]}]}
                }
            })),
        )
        .await;
    eventually(Duration::from_secs(3), "split served", || async {
        s.tally("/p/x", &[], 2).await.get("b") == Some(&1)
    })
    .await;
    let mut seen = HashMap::<String, usize>::new();
    for _ in 0..40 {
        let resp = s.client.get(s.gw.url("/p/x?q=1")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let target = resp
            .headers()
            .get("x-target")
            .map(|v| v.to_str().unwrap().to_string());
        let body: Value = resp.json().await.unwrap();
        let backend = body["backend"].as_str().unwrap();
        assert_eq!(body["headers"]["x-route"], "1", "{body}");
        match backend {
            "b" => {
                assert_eq!(body["uri"], "/to-canary/p/x?q=1", "{body}");
                assert_eq!(body["headers"]["x-target"], "canary", "{body}");
                assert_eq!(target.as_deref(), Some("canary"));
            }
            "a" => {
                assert_eq!(body["uri"], "/p/x?q=1", "{body}");
                assert_eq!(body["headers"]["x-target"], "own", "{body}");
                assert_eq!(target, None, "the canary's response plugin ran for `a`");
            }
            other => panic!("{other}"),
        }
        *seen.entry(backend.to_string()).or_default() += 1;
    }
    assert_eq!(seen.values().sum::<usize>(), 40);
    assert!(seen["a"].abs_diff(20) <= 1, "{seen:?}");
    // A route whose only plugin is the split (no chain of its own) runs them too.
    s.admin
        .ok(
            "PUT",
            "/routes/only",
            Some(
                json!({"uri": "/only", "upstream_id": "stable", "plugins": {"traffic-split":
                {"rules": [{"weighted_upstreams": [{"weight": 1, "plugins": {
                    "proxy-rewrite": {"headers": {"set": {"x-target": "own"}}}}}]}]}}}),
            ),
        )
        .await;
    eventually(Duration::from_secs(3), "the split-only route", || async {
        let Ok(resp) = s.client.get(s.gw.url("/only")).send().await else {
            return false;
        };
        let body: Value = resp.json().await.unwrap_or_default();
        body["headers"]["x-target"] == "own"
    })
    .await;
    // Plugins that decide whether a request is served belong to the route.
    let (status, body) = s
        .admin
        .call(
            "PUT",
            "/routes/q",
            Some(json!({"uri": "/q", "upstream_id": "stable", "plugins": {"traffic-split":
                {"rules": [{"weighted_upstreams": [{"weight": 1, "plugins": {"key-auth": {}}}]}]}}})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string()
            .contains("plugins.traffic-split.rules[0].weighted_upstreams[0].plugins.key-auth"),
        "{body}"
    );
}

/// The Admin API checks the upstreams a rule names, and counts rules as users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_checks_rule_upstreams() {
    let s = stack().await;
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    upstreams(&s, &a, &b).await;
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
            Some(json!({"uri": "/r", "upstream_id": "stable", "plugins": {"serverless-pre-function": {}}})),
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
