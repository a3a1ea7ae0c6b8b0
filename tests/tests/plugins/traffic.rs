//! Restriction, fault and rewrite plugins: ua-restriction, referer-restriction,
//! fault-injection, real-ip and response-rewrite, mostly as APISIX documents them.
use super::{env, WAIT};
use e2e::eventually;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn answer(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ua_and_referer_restriction() {
    let e = env().await;
    e.route(
        "1",
        json!({"uri": "/ua", "upstream_id": "rec",
            "plugins": {"ua-restriction": {"denylist": ["my-bot1", "(Baiduspider|Twitterbot)"]}}}),
        "/ua",
        403,
    )
    .await;
    let not_allowed = (403, json!({"message": "Not allowed"}).to_string());
    for (ua, want) in [
        (Some("Twitterbot/2.0"), not_allowed.clone()),
        (Some("my-bot1"), not_allowed.clone()),
        // No User-Agent, and bypass_missing is off.
        (None, not_allowed.clone()),
    ] {
        let mut r = e.request("GET", "/ua");
        if let Some(ua) = ua {
            r = r.header("user-agent", ua);
        }
        assert_eq!(answer(r.send().await.unwrap()).await, want, "{ua:?}");
    }
    assert!(e.rec.requests().is_empty());
    let ok = e
        .request("GET", "/ua")
        .header("user-agent", "curl/8.0")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    e.seen();

    e.route(
        "2",
        json!({"uri": "/ref", "upstream_id": "rec",
            "plugins": {"referer-restriction": {"whitelist": ["xx.com", "*.xx.com"],
                "message": "go away"}}}),
        "/ref",
        403,
    )
    .await;
    for (referer, status) in [
        (Some("http://xx.com/x"), 200),
        (Some("https://a.b.xx.com:8443/x"), 200),
        (Some("http://yy.com/x"), 403),
        (Some("http://xx.com.evil.org/"), 403),
        (None, 403),
    ] {
        let mut r = e.request("GET", "/ref");
        if let Some(v) = referer {
            r = r.header("referer", v);
        }
        let (got, body) = answer(r.send().await.unwrap()).await;
        assert_eq!(got, status, "{referer:?}");
        if status == 403 {
            assert_eq!(body, json!({"message": "go away"}).to_string());
        }
    }
    assert_eq!(e.rec.requests().len(), 2);
}

/// APISIX's fault-injection examples: an abort with its body, a delay, and both only for
/// requests whose `vars` match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_aborts_and_delays() {
    let e = env().await;
    e.route(
        "1",
        json!({"uri": "/abort", "upstream_id": "rec",
            "plugins": {"fault-injection": {"abort": {"http_status": 200,
                "body": "Fault Injection! $remote_addr\n", "headers": {"X-Fault": "yes"}}}}}),
        "/abort",
        200,
    )
    .await;
    let resp = e.request("GET", "/abort").send().await.unwrap();
    assert_eq!(resp.headers()["x-fault"], "yes");
    assert_eq!(
        answer(resp).await,
        (200, "Fault Injection! 127.0.0.1\n".into())
    );
    assert!(
        e.rec.requests().is_empty(),
        "an aborted request reached the upstream"
    );

    e.route(
        "2",
        json!({"uri": "/vars", "upstream_id": "rec",
            "plugins": {"fault-injection": {
                "abort": {"http_status": 403, "body": "Fault Injection!\n",
                          "vars": [[["arg_name", "==", "jack"], ["arg_age", "!", "<", 18]]]},
                "delay": {"duration": 1, "vars": [[["arg_name", "==", "slow"]]]}}}}),
        "/vars",
        200,
    )
    .await;
    e.rec.clear();
    let (status, _) = answer(
        e.request("GET", "/vars?name=jack&age=20")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = answer(
        e.request("GET", "/vars?name=jack&age=10")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    e.seen();
    let started = Instant::now();
    let (status, _) = answer(e.request("GET", "/vars?name=slow").send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "not delayed: {:?}",
        started.elapsed()
    );
    e.seen();

    // Half the requests: over 200 of them, both outcomes happen (the chance of a miss is
    // 2^-200).
    e.route(
        "3",
        json!({"uri": "/half", "upstream_id": "rec",
            "plugins": {"fault-injection": {"abort": {"http_status": 503, "percentage": 50}}}}),
        "/nothing",
        404,
    )
    .await;
    eventually(WAIT, "the route is served", || async {
        e.request("GET", "/half")
            .send()
            .await
            .is_ok_and(|r| r.status() != 404)
    })
    .await;
    let mut aborted = 0;
    for _ in 0..200 {
        if e.request("GET", "/half").send().await.unwrap().status() == 503 {
            aborted += 1;
        }
    }
    assert!((1..200).contains(&aborted), "aborted {aborted} of 200");
}

/// real-ip: behind a trusted proxy, the address in X-Forwarded-For is the client's for
/// ip-restriction, `vars` and X-Real-IP; from an untrusted peer it is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_ip_behind_a_trusted_proxy() {
    let e = env().await;
    e.route(
        "1",
        json!({"uri": "/ip", "upstream_id": "rec",
            "plugins": {
                "real-ip": {"source": "http_x_forwarded_for", "trusted_addresses": ["127.0.0.0/24"],
                            "recursive": true},
                "ip-restriction": {"blacklist": ["198.51.100.0/24"]}}}),
        "/ip",
        200,
    )
    .await;
    let call = |xff: &str| {
        e.request("GET", "/ip")
            .header("x-forwarded-for", xff)
            .send()
    };
    assert_eq!(call("198.51.100.7").await.unwrap().status(), 403);
    // Recursive: trusted hops on the right are skipped.
    assert_eq!(call("198.51.100.7, 127.0.0.5").await.unwrap().status(), 403);
    assert_eq!(call("203.0.113.1").await.unwrap().status(), 200);
    let seen = e.seen();
    assert_eq!(seen.header("x-real-ip"), ["203.0.113.1"]);
    assert_eq!(seen.header("x-forwarded-for"), ["203.0.113.1, 127.0.0.1"]);

    // Not a trusted peer: the header says nothing.
    e.route(
        "1",
        json!({"uri": "/ip", "upstream_id": "rec",
            "plugins": {
                "real-ip": {"source": "http_x_forwarded_for", "trusted_addresses": ["10.0.0.0/8"]},
                "ip-restriction": {"blacklist": ["198.51.100.0/24"]}}}),
        "/ip",
        200,
    )
    .await;
    assert_eq!(call("198.51.100.7").await.unwrap().status(), 200);
    assert_eq!(e.seen().header("x-real-ip"), ["127.0.0.1"]);
}

/// APISIX's response-rewrite examples: body and headers replaced when `vars` hold (on the
/// upstream's status), a status code, and an answer of another plugin rewritten too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_rewrite_changes_what_the_client_gets() {
    let e = env().await;
    e.route(
        "1",
        json!({"uri": "/test/index.html", "upstream_id": "rec",
            "plugins": {"response-rewrite": {
                "body": "{\"code\":\"ok\",\"message\":\"new json body\"}",
                "headers": {"set": {"X-Server-id": 3, "X-Server-status": "on", "X-Client": "$remote_addr"},
                            "add": ["X-Extra: 1"]},
                "vars": [["status", "==", 200]]}}}),
        "/test/index.html",
        200,
    )
    .await;
    let resp = e.request("GET", "/test/index.html").send().await.unwrap();
    let h = resp.headers().clone();
    assert_eq!(
        (
            &h["x-server-id"],
            &h["x-server-status"],
            &h["x-client"],
            &h["x-extra"]
        ),
        (
            &"3".parse().unwrap(),
            &"on".parse().unwrap(),
            &"127.0.0.1".parse().unwrap(),
            &"1".parse().unwrap()
        )
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, json!({"code": "ok", "message": "new json body"}));
    e.seen();
    // The upstream's 404 does not match `vars`: untouched.
    e.rec.respond_with(404);
    let resp = e.request("GET", "/test/index.html").send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.headers().get("x-server-id").is_none());
    e.rec.respond_with(200);

    // A status and a header removed, over another plugin's answer (a fault-injection abort).
    e.route(
        "2",
        json!({"uri": "/status", "upstream_id": "rec",
            "plugins": {
                "fault-injection": {"abort": {"http_status": 200, "body": "from the gateway",
                                              "headers": {"X-Secret": "s"}}},
                "response-rewrite": {"status_code": 203, "headers": {"remove": ["X-Secret"]}}}}),
        "/status",
        203,
    )
    .await;
    let resp = e.request("GET", "/status").send().await.unwrap();
    assert!(resp.headers().get("x-secret").is_none());
    assert_eq!(answer(resp).await, (203, "from the gateway".into()));
}
