//! The promise behind the project: configuration changes and etcd trouble never cost a
//! request nor close a client's keepalive connection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use e2e::{eventually, AdminApi, Backend, Etcd, Gateway, Load};
use http_body_util::{BodyExt, Empty};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const KEY: &str = "test-admin-key-0123";

/// One HTTP/1.1 keepalive connection to the gateway, kept for the whole test.
struct KeepAlive {
    tx: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl KeepAlive {
    async fn open(gw: &Gateway) -> KeepAlive {
        let stream = tokio::net::TcpStream::connect(gw.http).await.unwrap();
        let (tx, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        KeepAlive { tx }
    }

    /// `GET path`: the status and the backend that answered; panics if the connection broke.
    async fn get(&mut self, path: &str) -> (u16, String) {
        self.tx.ready().await.expect("keepalive connection closed");
        let req = hyper::Request::get(path)
            .header("host", "zd.test")
            .body(Empty::new())
            .unwrap();
        let resp = self
            .tx
            .send_request(req)
            .await
            .expect("request on keepalive connection failed");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let backend = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["backend"].as_str().map(str::to_string))
            .unwrap_or_default();
        (status, backend)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_connection_survives_every_kind_of_change() {
    let etcd = Etcd::start();
    let admin = AdminApi::start(&etcd.url, "/gw", KEY);
    let gw = Gateway::start(&etcd.url, "/gw", &[]);
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    admin
        .ok("PUT", "/upstreams/u", Some(json!({"nodes": {a.node(): 1}})))
        .await;
    admin
        .ok(
            "PUT",
            "/routes/main",
            Some(json!({"uri": "/main", "upstream_id": "u"})),
        )
        .await;
    gw.wait_ready().await;
    let mut conn = KeepAlive::open(&gw).await;
    eventually(Duration::from_secs(2), "route served", || async {
        reqwest::Client::new()
            .get(gw.url("/main"))
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    })
    .await;

    let mut served = 0;
    for round in 0..40 {
        // Adds, deletes, priority changes and an upstream's node replaced mid-stream.
        match round % 4 {
            0 => {
                admin
                    .ok(
                        "PUT",
                        &format!("/routes/x{round}"),
                        Some(json!({"uri": format!("/x{round}"), "upstream_id": "u"})),
                    )
                    .await
            }
            1 => {
                admin
                    .ok("DELETE", &format!("/routes/x{}", round - 1), None)
                    .await
            }
            2 => {
                admin
                    .ok("PATCH", "/routes/main", Some(json!({"priority": round})))
                    .await
            }
            _ => {
                let node = if round % 8 == 3 { b.node() } else { a.node() };
                admin
                    .ok("PUT", "/upstreams/u", Some(json!({"nodes": {node: 1}})))
                    .await
            }
        };
        for _ in 0..10 {
            let (status, backend) = conn.get("/main").await;
            assert_eq!(status, 200, "round {round}");
            assert!(backend == "a" || backend == "b", "round {round}: {backend}");
            served += 1;
        }
    }
    assert_eq!(served, 400);
}

/// A gateway serving `/r` from backend `a` to 8 keepalive clients, with backend `b` ready
/// to switch to: where each etcd fault test starts.
struct Serving {
    etcd: Etcd,
    admin: AdminApi,
    gw: Gateway,
    _a: Backend,
    b: Backend,
    load: Load,
}

async fn serving_under_load() -> Serving {
    let etcd = Etcd::start();
    let admin = AdminApi::start(&etcd.url, "/gw", KEY);
    let gw = Gateway::start(&etcd.url, "/gw", &[]);
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    admin.ok("PUT", "/routes/r", Some(route("/r", &a))).await;
    gw.wait_routes(1).await;
    let load = Load::start(&[gw.url("/r")], 8);
    load.wait_more_ok(50).await;
    Serving {
        etcd,
        admin,
        gw,
        _a: a,
        b,
        load,
    }
}

/// etcd killed and started again on the same data, under client load: the watch reconnects
/// with backoff and resumes from its revision (no second list); no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restart_watch_resumes_from_its_revision_under_load() {
    let Serving {
        mut etcd,
        admin,
        gw,
        b,
        load,
        _a,
    } = serving_under_load().await;

    etcd.restart();
    // Written at once, most likely while the gateway's watch is still backing off: it must
    // get them by resuming from its revision, not from whatever is current when it is back.
    admin.ok("PUT", "/routes/r", Some(route("/r", &b))).await;
    admin.ok("PUT", "/routes/r2", Some(route("/r2", &b))).await;
    let want = etcd_revision(&etcd);
    eventually(
        Duration::from_secs(15),
        "the gateway caught up with etcd's revision",
        || async { gw.status_json().await["revision"].as_i64() >= Some(want) },
    )
    .await;
    assert_eq!(backend_of(&gw, "/r").await.as_deref(), Some("b"));
    assert_eq!(backend_of(&gw, "/r2").await.as_deref(), Some("b"));
    assert_eq!(metric(&gw, "gateway_etcd_relists_total").await, Some(1.0));
    assert!(metric(&gw, "gateway_etcd_watch_restarts_total").await >= Some(1.0));

    let report = load.stop().await;
    eprintln!("load: {report:?}");
    assert_eq!(report.failed, 0, "{report:?}");
}

/// etcd down for 10 s under client load: the gateway keeps serving its last snapshot, the
/// admin-api answers 503 saying etcd is unavailable, and once etcd is back a change flows
/// to the gateway again; no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_10s_serves_the_last_snapshot_then_changes_flow() {
    let Serving {
        mut etcd,
        admin,
        gw,
        b,
        load,
        _a,
    } = serving_under_load().await;

    etcd.stop();
    let down = Instant::now();
    let (status, body) = admin.call("PUT", "/routes/r", Some(route("/r", &b))).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap_or_default()
            .contains("etcd is unavailable"),
        "{body}"
    );
    eventually(
        Duration::from_secs(10),
        "the gateway noticed etcd is gone",
        || async { gw.status_json().await["etcd_connected"] == json!(false) },
    )
    .await;
    let served_before = load.ok();
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(down.elapsed())).await;
    assert!(
        load.ok() > served_before,
        "nothing served while etcd was down"
    );
    assert_eq!(backend_of(&gw, "/r").await.as_deref(), Some("a"));

    etcd.restart();
    admin.ok("PUT", "/routes/r", Some(route("/r", &b))).await;
    eventually(
        Duration::from_secs(15),
        "the change made after etcd's return is served",
        || async { backend_of(&gw, "/r").await.as_deref() == Some("b") },
    )
    .await;

    let report = load.stop().await;
    eprintln!("load: {report:?}");
    assert_eq!(report.failed, 0, "{report:?}");
}

/// The gateway held with SIGSTOP while its routes are rewritten hundreds of times and etcd
/// compacts past its revision, under client load: on SIGCONT it lists again and ends with
/// exactly etcd's state, and the requests that waited for it are answered, none failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_while_stopped_relists_to_exactly_etcds_state() {
    let mut etcd = Etcd::start();
    let gw = Gateway::start(&etcd.url, "/gw", &[]);
    let a = Backend::start("a").await;
    let route = |uri: &str| route(uri, &a).to_string();
    // `/keep` lives through it all and carries the load.
    etcd.ctl(&["put", "/gw/routes/keep", &route("/keep")]);
    for i in 0..20 {
        etcd.ctl(&[
            "put",
            &format!("/gw/routes/old{i}"),
            &route(&format!("/old{i}")),
        ]);
    }
    gw.wait_routes(21).await;
    let load = Load::start(&[gw.url("/keep")], 8);
    load.wait_more_ok(50).await;

    // Stopped, and its watch stream cut (etcd restarted), so on waking it must resume
    // from a revision that no longer exists.
    gw.proc.signal("STOP");
    etcd.restart();
    for i in 0..20 {
        etcd.ctl(&["del", &format!("/gw/routes/old{i}")]);
    }
    let writes: Vec<(String, String)> = (0..200)
        .map(|i| {
            (
                format!("/gw/routes/new{}", i % 30),
                route(&format!("/new{}", i % 30)),
            )
        })
        .collect();
    etcd.put_many(&writes);
    let rev = etcd_revision(&etcd);
    etcd.ctl(&["compact", &rev.to_string()]);
    gw.proc.signal("CONT");

    eventually(
        Duration::from_secs(10),
        "exactly etcd's 31 routes after the relist",
        || async {
            let s = gw.status_json().await;
            s["routes"].as_u64() == Some(31) && s["revision"].as_i64() >= Some(rev)
        },
    )
    .await;
    let client = reqwest::Client::new();
    for i in 0..20 {
        let r = client
            .get(gw.url(&format!("/old{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "stale route /old{i} still served");
    }
    for i in 0..30 {
        let r = client
            .get(gw.url(&format!("/new{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "route /new{i} missing");
    }
    assert_eq!(metric(&gw, "gateway_etcd_relists_total").await, Some(2.0));
    load.wait_more_ok(50).await;
    let report = load.stop().await;
    eprintln!("load: {report:?}");
    assert_eq!(report.failed, 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connection_closed_by_the_node_is_replayed_for_idempotent_requests() {
    let etcd = Etcd::start();
    let gw = Gateway::start(&etcd.url, "/gw", &[]);
    let flaky = e2e::backend::Backend::start_with(
        "flaky",
        e2e::backend::BackendOptions {
            drop_second_request: true,
            ..Default::default()
        },
    )
    .await;
    let route = json!({"uri": "/f", "upstream": {"nodes": {flaky.node(): 1}}}).to_string();
    etcd.ctl(&["put", "/gw/routes/f", &route]);
    gw.wait_routes(1).await;
    let client = reqwest::Client::new();
    for round in 0..3 {
        // First request opens a pooled connection; after an idle pause the second one
        // reuses it and the node drops it unanswered: the gateway must send it again.
        let r = client.get(gw.url("/f")).send().await.unwrap();
        assert_eq!(r.status(), 200, "round {round}: first");
        tokio::time::sleep(Duration::from_millis(700)).await;
        let r = client.get(gw.url("/f")).send().await.unwrap();
        assert_eq!(r.status(), 200, "round {round}: after idle");
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // The pool now holds a connection that served one request. A POST with a body on it
    // is dropped too, and is not replayed: the node may have acted on it.
    let r = client.post(gw.url("/f")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 502);
}

/// SIGTERM: no new connections, the requests in flight finish (HTTP/1 told to close, HTTP/2
/// sent GOAWAY, so it opens no new stream on the old connection), then exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let etcd = Etcd::start();
    let mut gw = Gateway::start(&etcd.url, "/gw", &["--grace-period=5s"]);
    let slow = e2e::backend::Backend::start_with(
        "slow",
        e2e::backend::BackendOptions {
            delay: Some(Duration::from_millis(1500)),
            ..Default::default()
        },
    )
    .await;
    let route = json!({"uri": "/slow", "upstream": {"nodes": {slow.node(): 1}}}).to_string();
    etcd.ctl(&["put", "/gw/routes/slow", &route]);
    gw.wait_routes(1).await;

    let url = gw.url("/slow");
    let in_flight = tokio::spawn(async move {
        reqwest::get(url).await.map(|r| {
            let close = r
                .headers()
                .get("connection")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            (r.status().as_u16(), close)
        })
    });
    // The same over HTTP/2 with prior knowledge.
    let stream = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let (mut h2, h2_conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let h2_conn = tokio::spawn(h2_conn);
    let get = |url: String| {
        hyper::Request::get(url)
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let h2_in_flight = tokio::spawn(h2.send_request(get(gw.url("/slow"))));
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.proc.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // No new connections once draining...
    assert!(
        tokio::net::TcpStream::connect(gw.http).await.is_err(),
        "still accepting after SIGTERM"
    );
    // ...no new stream on the HTTP/2 connection, which got GOAWAY...
    let refused = h2.send_request(get(gw.url("/slow"))).await;
    assert!(refused.is_err(), "new HTTP/2 stream accepted after SIGTERM");
    // ...but the requests already in flight complete, and the HTTP/1 one tells its
    // keepalive client to go.
    assert_eq!(in_flight.await.unwrap().ok(), Some((200, true)));
    let h2_resp = h2_in_flight
        .await
        .unwrap()
        .expect("HTTP/2 request in flight");
    assert_eq!(h2_resp.status(), 200);
    h2_resp.into_body().collect().await.unwrap();
    // The stream refused after GOAWAY never reached the node.
    assert_eq!(slow.hits(), 2);
    let status = gw
        .proc
        .wait_exit(Duration::from_secs(5))
        .expect("did not exit after draining");
    assert!(status.success(), "{status:?}");
    assert!(
        h2_conn.await.unwrap().is_ok(),
        "HTTP/2 connection not closed cleanly"
    );
}

/// Connections the kernel completed before SIGTERM but the gateway had not accepted yet
/// (held with SIGSTOP meanwhile) are served, not reset when the listener closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_serves_connections_already_in_the_accept_queue() {
    const QUEUED: usize = 16;
    let etcd = Etcd::start();
    let mut gw = Gateway::start(&etcd.url, "/gw", &["--grace-period=5s"]);
    let a = Backend::start("a").await;
    etcd.ctl(&["put", "/gw/routes/r", &route("/r", &a).to_string()]);
    gw.wait_routes(1).await;

    gw.proc.signal("STOP");
    let mut requests = Vec::new();
    for _ in 0..QUEUED {
        // The handshake completes in the kernel; the request waits in the socket.
        let stream = tokio::net::TcpStream::connect(gw.http).await.unwrap();
        let (mut tx, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get("/r")
            .header("host", "zd.test")
            .body(Empty::<Bytes>::new())
            .unwrap();
        requests.push(tokio::spawn(tx.send_request(req)));
    }
    gw.proc.signal("TERM");
    gw.proc.signal("CONT");
    let mut served = 0;
    for r in requests {
        let resp = r.await.unwrap().expect("queued connection reset");
        assert_eq!(resp.status(), 200);
        served += 1;
    }
    assert_eq!(served, QUEUED);
    let status = gw
        .proc
        .wait_exit(Duration::from_secs(10))
        .expect("did not exit after draining");
    assert!(status.success(), "{status:?}");
}

/// A gateway replaced by a second process with the same flags, hence on the same HTTP and
/// status ports, under keepalive load: the new process binds while the old one runs, the old
/// one drains on SIGTERM, and every client moves over without a failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacement_process_under_keepalive_load() {
    const CLIENTS: usize = 8;
    let etcd = Etcd::start();
    let mut old = Gateway::start(&etcd.url, "/gw", &["--grace-period=10s"]);
    let a = Backend::start("a").await;
    etcd.ctl(&["put", "/gw/routes/r", &route("/r", &a).to_string()]);
    old.wait_routes(1).await;
    let load = Load::start(&[old.url("/r")], CLIENTS);
    load.wait_more_ok(100).await;

    let new = old.start_replacement();
    new.wait_listed().await;
    old.proc.signal("TERM");
    let status = old
        .proc
        .wait_exit(Duration::from_secs(15))
        .expect("the old process did not exit");
    assert!(status.success(), "{status:?}");
    assert!(
        old.proc.log().contains("every connection finished"),
        "the old process did not drain within its grace period"
    );
    let at_exit = load.report();
    // Only the new process is left: whatever succeeds from now on, it served.
    load.wait_more_ok(200).await;
    let report = load.stop().await;
    eprintln!("load: {report:?}");
    assert_eq!(report.failed, 0, "{report:?}");
    assert!(
        report.reconnects >= CLIENTS as u64,
        "every client was told to go and reconnected: {report:?}"
    );
    assert!(report.ok > at_exit.ok, "{report:?}");
    // The status port, shared too, is now the new process's.
    assert!(new.is_ready().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_member_killed_then_quorum_lost() {
    let mut cluster = e2e::EtcdCluster::start();
    let endpoints = cluster.endpoints();
    let admin = AdminApi::start(&endpoints, "/gw", KEY);
    let gws = [
        Gateway::start(&endpoints, "/gw", &[]),
        Gateway::start(&endpoints, "/gw", &[]),
    ];
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    admin
        .ok(
            "PUT",
            "/routes/r",
            Some(json!({"uri": "/r", "upstream": {"nodes": {a.node(): 1}}})),
        )
        .await;
    for g in &gws {
        g.wait_routes(1).await;
    }
    let mut conns = Vec::new();
    for g in &gws {
        conns.push(KeepAlive::open(g).await);
    }
    let load = Load::start(&[gws[0].url("/r"), gws[1].url("/r")], 8);
    load.wait_more_ok(50).await;

    // One member of three gone: admin writes still succeed and reach every gateway.
    cluster.kill(0);
    for i in 0..10 {
        let node = if i % 2 == 0 { b.node() } else { a.node() };
        let want = if i % 2 == 0 { "b" } else { "a" };
        admin
            .ok(
                "PUT",
                "/routes/r",
                Some(json!({"uri": "/r", "upstream": {"nodes": {node: 1}}})),
            )
            .await;
        for g in &gws {
            eventually(
                Duration::from_secs(10),
                "change served with a member down",
                || async {
                    reqwest::get(g.url("/r"))
                        .await
                        .ok()
                        .and_then(|r| r.headers().get("x-backend").map(|v| v == want))
                        .unwrap_or(false)
                },
            )
            .await;
        }
        for c in conns.iter_mut() {
            assert_eq!(c.get("/r").await, (200, want.to_string()));
        }
    }

    // Quorum lost: the data plane keeps serving the last configuration.
    cluster.kill(1);
    for _ in 0..50 {
        for c in conns.iter_mut() {
            assert_eq!(c.get("/r").await, (200, "a".to_string()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...while writes fail clearly rather than hang or half-apply.
    let route = json!({"uri": "/r2", "upstream": {"nodes": {a.node(): 1}}});
    let (status, body) = admin.call("PUT", "/routes/r2", Some(route)).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap_or_default()
            .contains("etcd"),
        "{body}"
    );
    let report = load.stop().await;
    eprintln!("load: {report:?}");
    assert_eq!(report.failed, 0, "{report:?}");
}

/// A route to one backend, as the Admin API and etcd take it.
fn route(uri: &str, backend: &Backend) -> Value {
    json!({"uri": uri, "upstream": {"nodes": {backend.node(): 1}}})
}

/// Which backend answers `path` through the gateway now (`None`: no 2xx answer).
async fn backend_of(gw: &Gateway, path: &str) -> Option<String> {
    let r = reqwest::get(gw.url(path)).await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.headers()
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// One unlabelled metric's value from the gateway's `/metrics`.
async fn metric(gw: &Gateway, name: &str) -> Option<f64> {
    gw.metric_value(name).await
}

/// etcd's current revision. A gateway that has applied everything up to it reports at
/// least this (more once writes outside its prefix, such as the replicas' own reports,
/// move etcd on).
/// The revision of the last write under the gateways' prefix: what a gateway reports as
/// applied once it serves everything. (etcd's own revision also counts the replicas'
/// reports under `/gw.cluster/`, which no gateway applies.)
fn etcd_revision(etcd: &Etcd) -> i64 {
    let out = etcd.ctl(&["get", "/gw/", "--prefix", "--keys-only", "-w", "json"]);
    let v = serde_json::from_str::<Value>(&out).unwrap();
    v["kvs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| kv["mod_revision"].as_i64())
        .max()
        .unwrap_or(0)
}

/// File mode (APISIX standalone, no etcd): edits of the file apply under keepalive load
/// with no failed request; a half-written or invalid file changes nothing and is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_mode_applies_edits_without_dropping_a_request() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apisix.yaml");
    // As an editor or a deployment tool would: a new file renamed over the old one.
    let write = |text: &str| {
        let tmp = dir.path().join("apisix.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    let file = |node: &str, more_routes: &str| {
        format!(
            "routes:\n  - id: r\n    uri: /r\n    upstream_id: up\n{more_routes}upstreams:\n  - id: up\n    nodes:\n      \"{node}\": 1\n#END\n"
        )
    };
    // A variable with a default: `${{NAME:=default}}`.
    write(&file(&format!("${{{{FILE_MODE_NODE:={}}}}}", a.addr), ""));
    let gw = Gateway::start(
        "http://127.0.0.1:9",
        "/gw",
        &[&format!("--config-file={}", path.display())],
    );
    gw.wait_routes(1).await;
    let client = reqwest::Client::new();
    let who = |path: &'static str| {
        let req = client.get(gw.url(path));
        async move {
            let resp = req.send().await.unwrap();
            if resp.status() != 200 {
                return format!("status {}", resp.status());
            }
            let body: Value = resp.json().await.unwrap();
            body["backend"].as_str().unwrap_or_default().to_string()
        }
    };
    assert_eq!(who("/r").await, "a");
    let load = Load::start(&[gw.url("/r")], 8);
    load.wait_more_ok(50).await;

    // Another node and another route: live within the poll, nothing lost meanwhile.
    write(&file(
        &b.addr.to_string(),
        "  - id: s\n    uri: /s\n    upstream_id: up\n",
    ));
    eventually(Duration::from_secs(5), "the edit is applied", || async {
        who("/s").await == "b" && who("/r").await == "b"
    })
    .await;
    load.wait_more_ok(50).await;

    // Half written (no #END), then not YAML: the last good configuration stays.
    write("routes:\n  - id: r\n    uri: /gone\n");
    eventually(
        Duration::from_secs(5),
        "a refused file is counted",
        || async { gw.metric_value("gateway_config_file_errors_total").await >= Some(1.0) },
    )
    .await;
    write("routes: [\n#END\n");
    eventually(
        Duration::from_secs(5),
        "a second refused file is counted",
        || async { gw.metric_value("gateway_config_file_errors_total").await >= Some(2.0) },
    )
    .await;
    assert_eq!(who("/r").await, "b");
    assert_eq!(who("/s").await, "b");
    assert!(gw.proc.log().contains("configuration file not applied"));
    load.wait_more_ok(50).await;
    let report = load.stop().await;
    assert_eq!(report.failed, 0, "{report:?}");
    assert!(report.ok > 150, "{report:?}");
}
