//! The plugins that send requests of their own: `proxy-mirror` (a copy of each request to
//! another host, sampled, never delaying or failing the client's) and `http-logger`
//! (batched JSON entries POSTed to a receiver, with retries), against recording backends.
use super::{env, WAIT};
use e2e::eventually;
use e2e::raw::RecordingBackend;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_mirror_copies_requests_and_never_holds_the_client() {
    let e = env().await;
    let mirror = RecordingBackend::start().await;
    e.route(
        "m",
        json!({"uri": "/m*", "upstream_id": "rec", "plugins": {"proxy-mirror": {
            "host": format!("http://{}", mirror.node()), "path": "/copy",
            "path_concat_mode": "prefix"}}}),
        "/m/probe",
        200,
    )
    .await;
    eventually(WAIT, "the probe's copy arrives", || async {
        !mirror.requests().is_empty()
    })
    .await;
    mirror.clear();
    let resp = e
        .request("POST", "/m/upload?x=1")
        .header("x-trace", "t1")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let upstream = e.seen();
    assert_eq!(
        (upstream.target.as_str(), upstream.body.as_slice()),
        ("/m/upload?x=1", &b"payload"[..])
    );
    eventually(WAIT, "the copy arrives", || async {
        !mirror.requests().is_empty()
    })
    .await;
    let copy = mirror.requests().remove(0);
    assert_eq!(copy.method, "POST");
    assert_eq!(copy.target, "/copy/m/upload?x=1");
    assert_eq!(copy.body, b"payload");
    assert_eq!(copy.header("x-trace"), ["t1"]);

    // A mirror that never answers: the client is answered at once all the same.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    e.route(
        "m",
        json!({"uri": "/m*", "upstream_id": "rec", "plugins": {"proxy-mirror": {
            "host": format!("http://{silent_addr}")}}}),
        "/m/probe2",
        200,
    )
    .await;
    for _ in 0..5 {
        let started = Instant::now();
        let r = e.request("GET", "/m/x").send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a silent mirror held the client for {:?}",
            started.elapsed()
        );
    }

    // sample_ratio: about half of 200 requests are copied.
    mirror.clear();
    e.route(
        "m",
        json!({"uri": "/m*", "upstream_id": "rec", "plugins": {"proxy-mirror": {
            "host": format!("http://{}", mirror.node()), "sample_ratio": 0.5}}}),
        "/m/probe3",
        200,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    mirror.clear();
    for _ in 0..200 {
        e.request("GET", "/m/s").send().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let copies = mirror.requests().len();
    assert!(
        (60..=140).contains(&copies),
        "{copies} of 200 copied at 0.5"
    );
    let sent = e.s.gw.metrics().await;
    assert!(
        sent.contains("gateway_mirror_requests_total{result=\"sent\"}"),
        "{sent}"
    );
}

fn batches(receiver: &RecordingBackend) -> Vec<Value> {
    receiver
        .requests()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_logger_batches_entries_and_retries() {
    let e = env().await;
    let receiver = RecordingBackend::start().await;
    let uri = format!("http://{}/ingest?token=1", receiver.node());
    e.route(
        "logged",
        json!({"uri": "/logged", "upstream_id": "rec", "plugins": {"http-logger": {
            "uri": uri, "batch_max_size": 3, "inactive_timeout": 1,
            "auth_header": "Bearer s3cret"}}}),
        "/logged",
        200,
    )
    .await;
    // The probe's entry goes alone after a second of inactivity.
    eventually(WAIT, "the probe's entry is sent", || async {
        !receiver.requests().is_empty()
    })
    .await;
    // Past one more inactive_timeout: any other probe's entry has gone too.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    receiver.clear();
    for i in 0..3 {
        let r = e
            .request("GET", &format!("/logged?i={i}"))
            .header("user-agent", "probe/2")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    eventually(WAIT, "a full batch is sent", || async {
        !receiver.requests().is_empty()
    })
    .await;
    let post = receiver.requests().remove(0);
    assert_eq!(
        (post.method.as_str(), post.target.as_str()),
        ("POST", "/ingest?token=1")
    );
    assert_eq!(post.header("authorization"), ["Bearer s3cret"]);
    assert_eq!(post.header("content-type"), ["application/json"]);
    let batch = batches(&receiver).remove(0);
    let entries = batch.as_array().expect("a JSON array");
    assert_eq!(entries.len(), 3, "{batch}");
    let first = &entries[0];
    assert_eq!(first["route_id"], "logged");
    assert_eq!(first["request"]["method"], "GET");
    assert_eq!(first["request"]["uri"], "/logged?i=0");
    assert_eq!(first["request"]["querystring"]["i"], "0");
    assert_eq!(first["request"]["headers"]["user-agent"], "probe/2");
    assert_eq!(first["response"]["status"], 200);
    assert_eq!(first["upstream"], e.rec.node());
    assert_eq!(first["client_ip"], "127.0.0.1");
    assert!(first["latency"].as_f64().unwrap() >= 0.0);
    assert!(first["response"]["size"].as_u64().unwrap() > 2);

    // log_format and new_line; a refused batch is retried, then counted failed.
    receiver.clear();
    receiver.respond_with(500);
    e.route(
        "logged",
        json!({"uri": "/logged", "upstream_id": "rec", "plugins": {"http-logger": {
            "uri": format!("http://{}/ingest", receiver.node()), "batch_max_size": 2,
            "concat_method": "new_line", "max_retry_count": 1, "retry_delay": 0,
            "log_format": {"host": "$host", "st": "$status", "tag": "gw"}}}}),
        "/logged",
        200,
    )
    .await;
    e.request("GET", "/logged").send().await.unwrap();
    // A batch of the route's previous configuration may still arrive after the clear:
    // only batches in the new format count.
    let ours = || {
        receiver
            .requests()
            .into_iter()
            .filter(|r| String::from_utf8_lossy(&r.body).contains("\"tag\":\"gw\""))
            .collect::<Vec<_>>()
    };
    eventually(WAIT, "two attempts", || async { ours().len() >= 2 }).await;
    eventually(WAIT, "the failure is counted", || async {
        e.s.gw.metrics().await.lines().any(|l| {
            l.starts_with("gateway_http_logger_entries_total{result=\"failed\"} ")
                && !l.ends_with(" 0")
        })
    })
    .await;
    let lines = String::from_utf8(ours()[0].body.clone()).unwrap();
    let parsed: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed.len(), 2, "{lines}");
    assert_eq!(parsed[1]["st"], "200");
    assert_eq!(parsed[1]["tag"], "gw");
    assert_eq!(parsed[1]["route_id"], "logged");
    assert!(parsed[1]["host"].as_str().unwrap().starts_with("127.0.0.1"));
    receiver.respond_with(200);
}
