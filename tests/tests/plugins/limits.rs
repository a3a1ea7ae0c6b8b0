//! `limit-count` (local policy) end to end: APISIX's documented example, its headers and
//! codes, keys per consumer, groups shared by routes, windows that reset on time, and a
//! count that survives unrelated changes but not a change of its own configuration.
use super::{env, WAIT};
use e2e::eventually;
use serde_json::{json, Value};
use std::time::Duration;

fn quota(resp: &reqwest::Response) -> [String; 3] {
    [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ]
    .map(|h| {
        resp.headers()
            .get(h)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    })
}

/// APISIX's example: 2 requests per 60 s per client address, then 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_count_documented_example() {
    let e = env().await;
    let route = |count: u64, desc: &str| {
        json!({"uri": "/index.html", "upstream_id": "rec", "desc": desc, "plugins": {"limit-count": {
            "count": count, "time_window": 60, "rejected_code": 503, "key_type": "var", "key": "remote_addr"}}})
    };
    e.s.admin.ok("PUT", "/routes/1", Some(route(2, "a"))).await;
    eventually(WAIT, "the route is served", || async {
        e.request("GET", "/index.html")
            .send()
            .await
            .is_ok_and(|r| r.headers().contains_key("x-ratelimit-limit"))
    })
    .await;
    // The probe above took the first of the two.
    let second = e.request("GET", "/index.html").send().await.unwrap();
    assert_eq!(second.status(), 200);
    let [limit, remaining, reset] = quota(&second);
    assert_eq!((limit.as_str(), remaining.as_str()), ("2", "0"));
    let reset: u64 = reset.parse().unwrap();
    assert!((55..=60).contains(&reset), "reset {reset}");
    let third = e.request("GET", "/index.html").send().await.unwrap();
    assert_eq!(third.status(), 503);
    assert_eq!(quota(&third)[..2], ["2".to_string(), "0".to_string()]);
    let seen = e.rec.requests().len();

    // An unrelated change of the route keeps the count: still refused.
    e.s.admin.ok("PUT", "/routes/1", Some(route(2, "b"))).await;
    e.s.admin
        .ok(
            "PUT",
            "/routes/other",
            Some(json!({"uri": "/other", "upstream_id": "rec"})),
        )
        .await;
    eventually(WAIT, "the other route is served", || async {
        e.request("GET", "/other")
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let resp = e.request("GET", "/index.html").send().await.unwrap();
    assert_eq!(resp.status(), 503, "an unrelated change reset the count");
    // A change of the plugin's own configuration starts a new count.
    e.s.admin.ok("PUT", "/routes/1", Some(route(3, "b"))).await;
    eventually(WAIT, "the new limit applies", || async {
        e.request("GET", "/index.html")
            .send()
            .await
            .is_ok_and(|r| r.status() == 200 && quota(&r)[0] == "3")
    })
    .await;
    // Refused requests never reached the upstream.
    assert_eq!(e.rec.requests().len(), seen + 2);
}

/// `rejected_code`/`rejected_msg`, a window that resets on time, counts per consumer,
/// and a group shared by two routes; `show_limit_quota_header: false` hides the headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_count_keys_groups_and_windows() {
    let e = env().await;
    for (user, key) in [("jack", "k-jack"), ("rose", "k-rose")] {
        e.s.admin
            .ok(
                "PUT",
                &format!("/consumers/{user}"),
                Some(json!({"plugins": {"key-auth": {"key": key}}})),
            )
            .await;
    }
    e.route(
        "per-consumer",
        json!({"uri": "/c", "upstream_id": "rec", "plugins": {
            "key-auth": {},
            "limit-count": {"count": 1, "time_window": 1, "key": "consumer_name",
                "rejected_code": 429, "rejected_msg": "Requests are too frequent, please try again later."}}}),
        "/c",
        401,
    )
    .await;
    let call = |key: &'static str| e.request("GET", "/c").header("apikey", key).send();
    // Within one window of 1 s: one each; a window that ends lets the next one through.
    let mut in_window = false;
    for _ in 0..5 {
        let first = call("k-jack").await.unwrap().status().as_u16();
        let other = call("k-rose").await.unwrap().status().as_u16();
        let again = call("k-jack").await.unwrap();
        if first == 200 && other == 200 && again.status() == 429 {
            let body: Value = again.json().await.unwrap();
            assert_eq!(
                body["error_msg"],
                "Requests are too frequent, please try again later."
            );
            in_window = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert!(in_window, "never saw one request per consumer per window");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        call("k-jack").await.unwrap().status(),
        200,
        "the window reset"
    );

    // A group: two routes, one count.
    for (id, uri) in [("g1", "/g1"), ("g2", "/g2")] {
        e.s.admin
            .ok(
                "PUT",
                &format!("/routes/{id}"),
                Some(
                    json!({"uri": uri, "upstream_id": "rec", "plugins": {"limit-count": {
                    "count": 2, "time_window": 60, "group": "shared", "key_type": "constant",
                    "key": "all", "show_limit_quota_header": false}}}),
                ),
            )
            .await;
    }
    eventually(WAIT, "both group routes are served", || async {
        let mut ok = true;
        for uri in ["/g1", "/g2"] {
            ok &= e
                .request("GET", uri)
                .send()
                .await
                .is_ok_and(|r| r.status() != 404);
        }
        ok
    })
    .await;
    // The probe spent the group's two requests, one on each route.
    for uri in ["/g1", "/g2"] {
        let resp = e.request("GET", uri).send().await.unwrap();
        assert_eq!(resp.status(), 503, "{uri}");
        assert!(resp.headers().get("x-ratelimit-limit").is_none());
    }
}

/// Plugin metadata: `cors` origin lists named by routes' `allow_origins_by_metadata`,
/// `limit-count` header names; a change reaches the routes without touching them; a
/// plugin that reads no metadata, or no plugin, is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_metadata_applies_to_routes() {
    let e = env().await;
    let a = &e.s.admin;
    for (path, body, want) in [
        ("/plugin_metadata/key-auth", json!({"x": 1}), 400),
        ("/plugin_metadata/no-such-plugin", json!({}), 400),
        (
            "/plugin_metadata/cors",
            json!({"allow_origins": {"A": ""}}),
            400,
        ),
    ] {
        let (status, resp) = a.call("PUT", path, Some(body)).await;
        assert_eq!(status, want, "{path}: {resp}");
    }
    let (status, _) = a.call("POST", "/plugin_metadata", Some(json!({}))).await;
    assert_eq!(status, 405);
    a.ok(
        "PUT",
        "/plugin_metadata/cors",
        Some(json!({"allow_origins": {"EXAMPLE": "https://example.com"}})),
    )
    .await;
    a.ok(
        "PUT",
        "/plugin_metadata/limit-count",
        Some(json!({"limit_header": "X-Limit", "remaining_header": "X-Left", "reset_header": "X-Reset"})),
    )
    .await;
    e.route(
        "1",
        json!({"uri": "/m", "upstream_id": "rec", "plugins": {
            "cors": {"allow_origins_by_metadata": ["EXAMPLE"]},
            "limit-count": {"count": 100, "time_window": 60}}}),
        "/m",
        200,
    )
    .await;
    let origin = |o: &'static str| e.request("GET", "/m").header("origin", o).send();
    let resp = origin("https://example.com").await.unwrap();
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://example.com"
    );
    assert_eq!(resp.headers()["x-limit"], "100");
    assert!(resp.headers().contains_key("x-left"));
    assert!(resp.headers().get("x-ratelimit-limit").is_none());
    let resp = origin("https://other.com").await.unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());

    // The metadata changes; the route is not touched.
    a.ok(
        "PUT",
        "/plugin_metadata/cors",
        Some(json!({"allow_origins": {"EXAMPLE": "https://example.com,https://other.com"}})),
    )
    .await;
    eventually(WAIT, "the new origin list applies", || async {
        origin("https://other.com").await.is_ok_and(|r| {
            r.headers()
                .get("access-control-allow-origin")
                .is_some_and(|v| v == "https://other.com")
        })
    })
    .await;
    let got = a.ok("GET", "/plugin_metadata/cors", None).await;
    assert_eq!(got["value"]["id"], "cors", "{got}");
    a.ok("DELETE", "/plugin_metadata/limit-count", None).await;
    eventually(WAIT, "default header names again", || async {
        origin("https://example.com")
            .await
            .is_ok_and(|r| r.headers().contains_key("x-ratelimit-limit"))
    })
    .await;
}

/// `limit-req` (a leaky bucket per client): within the burst a request waits its turn
/// (or passes at once with `nodelay`); beyond it, it is refused with `rejected_code`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_req_delays_then_refuses() {
    let e = env().await;
    let route = |uri: &str, nodelay: bool| {
        json!({"uri": uri, "upstream_id": "rec", "plugins": {"limit-req": {
            "rate": 2, "burst": 1, "key_type": "var", "key": "remote_addr",
            "rejected_code": 429, "rejected_msg": "slow down", "nodelay": nodelay}}})
    };
    e.s.admin
        .ok("PUT", "/routes/1", Some(route("/req", false)))
        .await;
    eventually(WAIT, "the route is served", || async {
        e.request("GET", "/req")
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    // Let the probe's request drain (rate 2/s).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let timed = |uri: &'static str| {
        let req = e.request("GET", uri);
        async move {
            let started = std::time::Instant::now();
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            (status, started.elapsed(), body)
        }
    };
    let (a, b, c) = tokio::join!(timed("/req"), timed("/req"), timed("/req"));
    let mut all = [a, b, c];
    all.sort_by_key(|(s, t, _)| (*s, *t));
    let [(s1, t1, _), (s2, t2, _), (s3, _, body)] = all;
    assert_eq!(
        (s1, s2, s3),
        (200, 200, 429),
        "one at once, one delayed, one refused"
    );
    assert!(
        t1 < t2,
        "the first waited as long as the second: {t1:?} {t2:?}"
    );
    assert!(
        t2 >= Duration::from_millis(400),
        "the second did not wait its turn: {t2:?}"
    );
    assert_eq!(body["error_msg"], "slow down");

    // nodelay (a route of its own, so that no request meets the old configuration): the
    // burst passes at once.
    e.s.admin
        .ok("PUT", "/routes/2", Some(route("/req2", true)))
        .await;
    eventually(WAIT, "the nodelay route is served", || async {
        e.request("GET", "/req2")
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (a, b, c) = tokio::join!(timed("/req2"), timed("/req2"), timed("/req2"));
    let mut all = [a, b, c];
    all.sort_by_key(|(s, t, _)| (*s, *t));
    let statuses: Vec<u16> = all.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(statuses, [200, 200, 429]);
    assert!(
        all[1].1 < Duration::from_millis(450),
        "nodelay waited {:?}",
        all[1].1
    );
}

/// `limit-conn`: one request in flight per client; a second meanwhile is refused; the
/// slot comes back when the response has been sent, also when the client gave up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_conn_counts_requests_in_flight() {
    let e = env().await;
    let slow = e2e::backend::Backend::start_with(
        "slow",
        e2e::backend::BackendOptions {
            delay: Some(Duration::from_millis(600)),
            ..Default::default()
        },
    )
    .await;
    e.s.admin
        .ok(
            "PUT",
            "/routes/1",
            Some(
                json!({"uri": "/conn", "upstream": {"nodes": {slow.addr.to_string(): 1}},
                "plugins": {"limit-conn": {"conn": 1, "burst": 0, "default_conn_delay": 0.1,
                    "key_type": "var", "key": "remote_addr", "rejected_code": 429}}}),
            ),
        )
        .await;
    eventually(WAIT, "the route is served", || async {
        e.request("GET", "/conn")
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let before = slow.hits();
    let first = tokio::spawn(e.request("GET", "/conn").send());
    // The first is in flight once the node has it.
    eventually(WAIT, "the first request reaches the node", || async {
        slow.hits() > before
    })
    .await;
    let second = e.request("GET", "/conn").send().await.unwrap();
    assert_eq!(second.status(), 429, "a second request in flight");
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    assert_eq!(
        e.request("GET", "/conn").send().await.unwrap().status(),
        200,
        "the slot came back with the response"
    );

    // A client that gives up: its slot still comes back.
    let impatient = e
        .request("GET", "/conn")
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(impatient.is_err(), "the client should have timed out");
    eventually(WAIT, "the aborted request's slot comes back", || async {
        e.request("GET", "/conn")
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

/// A WebSocket holds its `limit-conn` slot while its tunnel is open, and gives it back
/// when the tunnel closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_conn_holds_a_websocket_until_it_closes() {
    let e = env().await;
    let ws = e2e::ws::WsBackend::start("ws").await;
    e.s.admin
        .ok(
            "PUT",
            "/routes/ws",
            Some(json!({"uri": "/ws", "enable_websocket": true,
                "upstream": {"nodes": {ws.node(): 1}},
                "plugins": {"limit-conn": {"conn": 1, "burst": 0, "default_conn_delay": 0.1,
                    "rejected_code": 429}}})),
        )
        .await;
    let url = format!("ws://{}/ws", e.s.gw.http);
    let mut open = None;
    for _ in 0..100 {
        if let Ok((s, _)) = tokio_tungstenite::connect_async(url.as_str()).await {
            open = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut open = open.expect("a tunnel opens");
    let refused = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect_err("a second tunnel while the first is open");
    assert!(
        matches!(refused, tokio_tungstenite::tungstenite::Error::Http(ref r) if r.status() == 429),
        "{refused:?}"
    );
    open.close(None).await.unwrap();
    drop(open);
    eventually(
        WAIT,
        "the slot comes back when the tunnel closes",
        || async { tokio_tungstenite::connect_async(url.as_str()).await.is_ok() },
    )
    .await;
}

/// APISIX's api-breaker example: three 500s from the upstream open the breaker (502
/// without reaching it, body and headers as configured); after 2^1 s one request goes
/// through, and a healthy answer closes it. The breaker's state survives the route's
/// upstream being changed (an unrelated field for the plugin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_breaker_opens_and_closes() {
    use e2e::backend::{Backend, BackendOptions};
    let e = env().await;
    let failing = Backend::start_with(
        "failing",
        BackendOptions {
            status: Some(500),
            ..Default::default()
        },
    )
    .await;
    let healthy = Backend::start("healthy").await;
    let route = |node: String| {
        json!({"uri": "/api", "upstream": {"nodes": {node: 1}}, "plugins": {"api-breaker": {
            "break_response_code": 502, "break_response_body": "breaker open",
            "break_response_headers": [{"key": "X-Breaker", "value": "open"}],
            "unhealthy": {"http_statuses": [500, 503], "failures": 3},
            "healthy": {"http_statuses": [200], "successes": 1}}}})
    };
    e.s.admin
        .ok("PUT", "/routes/1", Some(route(failing.addr.to_string())))
        .await;
    eventually(WAIT, "the route is served", || async {
        e.request("GET", "/api")
            .send()
            .await
            .is_ok_and(|r| r.status() == 500)
    })
    .await;
    // The probe's was the first failure; two more open the breaker.
    for _ in 0..2 {
        assert_eq!(e.request("GET", "/api").send().await.unwrap().status(), 500);
    }
    let hits = failing.hits();
    let resp = e.request("GET", "/api").send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-breaker"], "open");
    assert_eq!(resp.text().await.unwrap(), "breaker open");
    assert_eq!(
        failing.hits(),
        hits,
        "an open breaker does not reach the upstream"
    );

    // The upstream recovers; the breaker stays open until its 2 s are over.
    e.s.admin
        .ok("PUT", "/routes/1", Some(route(healthy.addr.to_string())))
        .await;
    // A later write is served only after the route change (etcd's order): once it is,
    // the route's change is live too.
    e.s.admin
        .ok(
            "PUT",
            "/routes/marker",
            Some(json!({"uri": "/marker", "upstream_id": "rec"})),
        )
        .await;
    eventually(WAIT, "the marker is served", || async {
        e.request("GET", "/marker")
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert_eq!(
        e.request("GET", "/api").send().await.unwrap().status(),
        502,
        "a route change kept the breaker's state"
    );
    eventually(Duration::from_secs(5), "half open, then closed", || async {
        e.request("GET", "/api")
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert_eq!(e.request("GET", "/api").send().await.unwrap().status(), 200);
}
