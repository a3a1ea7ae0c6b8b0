//! End-to-end: admin-api and gateway binaries against a real etcd, real backends, real clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::{eventually, AdminApi, Backend, Etcd, Gateway};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

const KEY: &str = "test-admin-key-0123";

/// Which backend answered `GET path` (with an optional Host), or the status if it was not 200.
async fn who(
    client: &reqwest::Client,
    gw: &Gateway,
    path: &str,
    host: Option<&str>,
) -> Result<String, u16> {
    let mut req = client.get(gw.url(path));
    if let Some(h) = host {
        req = req.header("host", h);
    }
    let resp = req.send().await.map_err(|_| 0u16)?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(status);
    }
    let body: Value = resp.json().await.map_err(|_| 1u16)?;
    Ok(body["backend"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_follow_admin_changes() {
    let etcd = Etcd::start();
    let admin = AdminApi::start(&etcd.url, "/gw", KEY);
    let gws = [
        Gateway::start(&etcd.url, "/gw", &[]),
        Gateway::start(&etcd.url, "/gw", &[]),
    ];
    for g in &gws {
        g.wait_ready().await;
    }
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    admin
        .ok(
            "PUT",
            "/upstreams/ua",
            Some(json!({"nodes": {a.node(): 1}})),
        )
        .await;
    admin
        .ok(
            "PUT",
            "/upstreams/ub",
            Some(json!({"nodes": {b.node(): 1}})),
        )
        .await;
    admin
        .ok(
            "PUT",
            "/routes/r1",
            Some(json!({"uri": "/hello", "upstream_id": "ua"})),
        )
        .await;
    let client = reqwest::Client::new();
    for g in &gws {
        eventually(
            Duration::from_secs(1),
            "route served on every replica",
            || async { who(&client, g, "/hello", None).await == Ok("a".into()) },
        )
        .await;
    }

    admin
        .ok("PATCH", "/routes/r1", Some(json!({"upstream_id": "ub"})))
        .await;
    for g in &gws {
        eventually(
            Duration::from_secs(1),
            "changed route served on every replica",
            || async { who(&client, g, "/hello", None).await == Ok("b".into()) },
        )
        .await;
    }

    admin.ok("DELETE", "/routes/r1", None).await;
    for g in &gws {
        eventually(
            Duration::from_secs(1),
            "deleted route gone on every replica",
            || async { who(&client, g, "/hello", None).await == Err(404) },
        )
        .await;
        let resp = client.get(g.url("/hello")).send().await.unwrap();
        assert_eq!(resp.status(), 404);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body, json!({"error_msg": "404 Route Not Found"}));
    }

    // Both replicas converge on the revision of the last write under their prefix and
    // report it (etcd's own revision moves on with writes elsewhere, such as the
    // replicas' reports): a key outside the resource layout marks it.
    let etcd_rev: i64 = {
        let out = etcd.ctl(&["put", "/gw/zz-marker", "1", "-w", "json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["header"]["revision"].as_i64().unwrap()
    };
    for g in &gws {
        eventually(
            Duration::from_secs(2),
            "status revision converges",
            || async { g.status_json().await["revision"].as_i64() == Some(etcd_rev) },
        )
        .await;
        let s = g.status_json().await;
        assert_eq!(
            (s["routes"].as_u64(), s["upstreams"].as_u64()),
            (Some(0), Some(2)),
            "{s}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_while_etcd_down_then_ready_when_it_returns() {
    let mut etcd = Etcd::start();
    let backend = Backend::start("a").await;
    let up = json!({"nodes": {backend.node(): 1}}).to_string();
    let route = json!({"uri": "/x", "upstream_id": "1"}).to_string();
    etcd.ctl(&["put", "/gw/upstreams/1", &up]);
    etcd.ctl(&["put", "/gw/routes/1", &route]);
    etcd.stop();

    let gw = Gateway::start(&etcd.url, "/gw", &[]);
    let client = reqwest::Client::new();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!gw.is_ready().await, "ready without etcd");
    let resp = reqwest::get(gw.status_url("/readyz")).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(
        who(&client, &gw, "/x", None).await,
        Err(404),
        "served a route it cannot know"
    );

    etcd.restart();
    gw.wait_ready().await;
    eventually(Duration::from_secs(2), "stored route served", || async {
        who(&client, &gw, "/x", None).await == Ok("a".into())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_within_one_percent() {
    let etcd = Etcd::start();
    let admin = AdminApi::start(&etcd.url, "/gw", KEY);
    let gw = Gateway::start(&etcd.url, "/gw", &[]);
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let nodes = json!({a.node(): 5, b.node(): 3, c.node(): 2});
    admin
        .ok(
            "PUT",
            "/routes/w",
            Some(json!({"uri": "/w", "upstream": {"nodes": nodes}})),
        )
        .await;
    gw.wait_routes(1).await;
    let client = reqwest::Client::new();
    const CHANGES_AT: [usize; 8] = [53, 117, 271, 389, 402, 555, 713, 899];
    let mut counts: HashMap<String, u32> = HashMap::new();
    for i in 0..1000 {
        // Unrelated routes change meanwhile, at uneven points: the rotation must carry
        // over from one snapshot to the next.
        if CHANGES_AT.contains(&i) {
            let body = json!({"uri": format!("/other{i}"), "upstream": {"nodes": {a.node(): 1}}});
            admin
                .ok("PUT", &format!("/routes/other{i}"), Some(body))
                .await;
            let want = 2 + CHANGES_AT.iter().position(|c| *c == i).unwrap_or(0) as u64;
            eventually(
                Duration::from_secs(2),
                "unrelated route applied",
                || async { gw.status_json().await["routes"].as_u64() == Some(want) },
            )
            .await;
        }
        let who = who(&client, &gw, "/w", None).await.unwrap();
        *counts.entry(who).or_default() += 1;
    }
    for (name, weight) in [("a", 5.0), ("b", 3.0), ("c", 2.0)] {
        let share = f64::from(counts[name]) / 1000.0;
        assert!(
            (share - weight / 10.0).abs() <= 0.01,
            "{name}: {share} vs {}: {counts:?}",
            weight / 10.0
        );
    }
    // Smooth WRR is exact over whole windows of 10; a rotation reset by a swap in
    // mid-window would shift these.
    assert_eq!((counts["a"], counts["b"], counts["c"]), (500, 300, 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxying_headers_hosts_retries_and_errors() {
    let etcd = Etcd::start();
    let admin = AdminApi::start(&etcd.url, "/gw", KEY);
    let gw = Gateway::start(&etcd.url, "/gw", &[]);
    let a = Backend::start("a").await;
    let slow = Backend::start_delayed("slow", Duration::from_secs(3)).await;
    let dead = format!("127.0.0.1:{}", e2e::free_port());
    let routes = [
        (
            "pass",
            json!({"uri": "/pass", "upstream": {"nodes": {a.node(): 1}}}),
        ),
        (
            "node",
            json!({"uri": "/node", "upstream": {"nodes": {a.node(): 1}, "pass_host": "node"}}),
        ),
        (
            "rewrite",
            json!({"uri": "/rewrite", "upstream": {"nodes": {a.node(): 1}, "pass_host": "rewrite", "upstream_host": "internal.svc"}}),
        ),
        (
            "retry",
            json!({"uri": "/retry", "upstream": {"nodes": {dead.clone(): 100, a.node(): 1}, "retries": 1}}),
        ),
        (
            "alldead",
            json!({"uri": "/alldead", "upstream": {"nodes": {dead.clone(): 1}}}),
        ),
        (
            "slow",
            json!({"uri": "/slow", "upstream": {"nodes": {slow.node(): 1}, "timeout": {"connect": 1, "send": 1, "read": 0.5}}}),
        ),
        (
            "routeto",
            json!({"uri": "/routeto", "timeout": {"connect": 1, "send": 1, "read": 0.5}, "upstream": {"nodes": {slow.node(): 1}}}),
        ),
        ("empty", json!({"uri": "/empty", "upstream": {"nodes": {}}})),
        (
            "slowup",
            json!({"uri": "/slowup", "upstream": {"nodes": {a.node(): 1}, "timeout": {"connect": 1, "send": 1, "read": 0.5}}}),
        ),
        (
            "dangling-up",
            json!({"uri": "/dangling-up", "upstream_id": "nope-up"}),
        ),
        (
            "dangling-svc",
            json!({"uri": "/dangling-svc", "service_id": "nope-svc"}),
        ),
    ];
    // Dangling references cannot be written through the Admin API (it checks), so the
    // last two go straight to etcd, as another writer could have put them.
    let (checked, dangling) = routes.split_at(routes.len() - 2);
    for (id, body) in checked {
        admin
            .ok("PUT", &format!("/routes/{id}"), Some(body.clone()))
            .await;
    }
    for (id, body) in dangling {
        etcd.ctl(&["put", &format!("/gw/routes/{id}"), &body.to_string()]);
    }
    gw.wait_routes(routes.len() as u64).await;
    let client = reqwest::Client::new();

    let echo = |path: &'static str| {
        let client = client.clone();
        let url = gw.url(path);
        async move {
            let resp = client
                .get(url)
                .header("host", "Public.Example:9080")
                .header("x-forwarded-for", "1.2.3.4")
                .header("connection", "x-secret")
                .header("x-secret", "hop")
                .header("keep-alive", "timeout=5")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            resp.json::<Value>().await.unwrap()
        }
    };
    let e = echo("/pass?q=1").await;
    let h = &e["headers"];
    assert_eq!(e["uri"], "/pass?q=1");
    assert_eq!(h["host"], "Public.Example:9080");
    assert_eq!(h["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "Public.Example:9080");
    assert_eq!(h["x-forwarded-port"], gw.http.port().to_string());
    assert!(
        h.get("x-secret").is_none() && h.get("keep-alive").is_none(),
        "hop-by-hop leaked: {h}"
    );
    assert_eq!(echo("/node").await["headers"]["host"], a.node());
    assert_eq!(echo("/rewrite").await["headers"]["host"], "internal.svc");

    // The dead node has 100x the weight: every request starts there and must be retried.
    for _ in 0..20 {
        assert_eq!(who(&client, &gw, "/retry", None).await, Ok("a".into()));
    }
    let resp = client.get(gw.url("/alldead")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert!(resp.text().await.unwrap().contains("error_msg"));
    let started = std::time::Instant::now();
    assert_eq!(who(&client, &gw, "/slow", None).await, Err(504));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "read timeout not applied"
    );
    assert_eq!(
        who(&client, &gw, "/routeto", None).await,
        Err(504),
        "route timeout not applied"
    );
    assert_eq!(who(&client, &gw, "/empty", None).await, Err(503));
    // A missing upstream answers 503; a missing service leaves the route out entirely,
    // since without the service's hosts it would match every host.
    assert_eq!(who(&client, &gw, "/dangling-up", None).await, Err(503));
    assert_eq!(who(&client, &gw, "/dangling-svc", None).await, Err(404));

    // POST bodies are streamed through.
    let resp = client
        .post(gw.url("/pass"))
        .body("x".repeat(300_000))
        .send()
        .await
        .unwrap();
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["body"].as_str().unwrap().len(), 300_000);
    assert_eq!(e["method"], "POST");

    // HTTP/2 with prior knowledge on the same port.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2.get(gw.url("/pass")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["headers"]["host"], gw.http.to_string());

    // Upstream connections are kept alive and reused: sequential requests on one client
    // connection (hence one worker, whose pool shard they use) arrive at the backend from
    // the same local port. One connection for sure: a pooling client such as reqwest may
    // open a second one when the first is not back in its pool yet.
    let stream = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let (mut one_connection, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut peers = std::collections::HashSet::new();
    for _ in 0..20 {
        use http_body_util::BodyExt;
        let req = http::Request::get("/pass")
            .header("host", "t")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        one_connection.ready().await.unwrap();
        let body = one_connection
            .send_request(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        let e: Value = serde_json::from_slice(&body).unwrap();
        peers.insert(e["peer"].as_str().unwrap().to_string());
    }
    assert_eq!(
        peers.len(),
        1,
        "a new upstream connection per request: {peers:?}"
    );

    // HTTP/1.0 without Host still reaches the upstream with one (the node's).
    let addr = gw.http;
    let resp =
        tokio::task::spawn_blocking(move || raw_response(addr, b"GET /pass HTTP/1.0\r\n\r\n"))
            .await
            .unwrap();
    assert!(resp.starts_with("HTTP/1.0 200"), "{resp}");
    assert!(
        resp.contains(&format!("\"host\":\"{}\"", a.node())),
        "{resp}"
    );

    // An upload slower than the read timeout is not cut: the read timeout starts once
    // the body has been sent.
    let addr = gw.http;
    let status = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"POST /slowup HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\n")
            .unwrap();
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(400));
            s.write_all(b"xy").unwrap();
        }
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    })
    .await
    .unwrap();
    assert!(status.contains("200"), "slow upload: {status}");
}

/// Which backend answered a `GET path` sent on a new connection of its own.
fn who_on_new_connection(addr: std::net::SocketAddr, path: &str) -> String {
    let resp = raw_response(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str::<Value>(body).map_or_else(
        |_| format!("no JSON body in {resp:?}"),
        |v| v["backend"].as_str().unwrap_or_default().to_string(),
    )
}

/// Who answered each of `n` requests, each on a new connection.
async fn who_on_new_connections(addr: std::net::SocketAddr, path: &str, n: usize) -> Vec<String> {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        (0..n).map(|_| who_on_new_connection(addr, &path)).collect()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_accepts_on_the_shared_ports_and_sees_each_change() {
    let etcd = Etcd::start();
    let admin = AdminApi::start(&etcd.url, "/gw", KEY);
    let gw = Gateway::start(&etcd.url, "/gw", &["--workers=3"]);
    gw.wait_ready().await;
    assert_eq!(gw.status_json().await["workers"], 3);
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    admin
        .ok(
            "PUT",
            "/routes/w",
            Some(json!({"uri": "/w", "upstream": {"nodes": {a.node(): 1}}})),
        )
        .await;
    gw.wait_routes(1).await;
    // The kernel spreads connections over the three sockets by address hash: 48 of them
    // miss one worker entirely with a probability of about 1e-8.
    let addr = gw.http;
    let answers = who_on_new_connections(addr, "/w", 48).await;
    assert!(answers.iter().all(|w| w == "a"), "{answers:?}");
    let mut accepted = Vec::new();
    for worker in 0..3 {
        let name = format!("gateway_connections_accepted_total{{worker=\"{worker}\"}}");
        accepted.push(gw.metric(&name).await);
    }
    assert!(
        accepted.iter().all(|&n| n > 0.0),
        "accepted by worker: {accepted:?}"
    );
    assert!(accepted.iter().sum::<f64>() >= 48.0, "{accepted:?}");

    // One snapshot for all: a change reaches every worker's connections at once.
    admin
        .ok(
            "PATCH",
            "/routes/w",
            Some(json!({"upstream": {"nodes": {a.node(): null, b.node(): 1}}})),
        )
        .await;
    eventually(
        Duration::from_secs(1),
        "the change served on new connections",
        || async { who_on_new_connections(addr, "/w", 1).await == ["b"] },
    )
    .await;
    let answers = who_on_new_connections(addr, "/w", 48).await;
    assert!(answers.iter().all(|w| w == "b"), "{answers:?}");
}

/// A raw HTTP/1.1 node answering `GET /bytes/N` with N bytes, written as fast as its
/// reader takes them; the flag turns true when a write fails (its reader went away).
async fn streaming_node() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = cut.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let flag = flag.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let len: usize = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.strip_prefix("/bytes/"))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
                if conn.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                let mut left = len;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if conn.write_all(&chunk[..n]).await.is_err() {
                        flag.store(true, std::sync::atomic::Ordering::SeqCst);
                        return;
                    }
                    left -= n;
                }
            });
        }
    });
    (addr, cut)
}

/// Reads until the peer closes (or fails, or 20 s pass), pausing `pause` before each read;
/// returns the bytes after the response head.
async fn body_bytes_until_close(stream: &mut tokio::net::TcpStream, pause: Duration) -> usize {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut head = Vec::new();
    let mut body = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(pause).await;
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return body,
        };
        if body == 0 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            head.extend_from_slice(&buf[..n]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                body = head.len() - end - 4;
            }
        } else {
            body += n;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_after_the_send_timeout() {
    use tokio::io::AsyncWriteExt;
    let etcd = Etcd::start();
    let gw = Gateway::start(&etcd.url, "/gw", &["--client-send-timeout=1s"]);
    let (node, cut) = streaming_node().await;
    let route = json!({"uri": "/bytes/*", "upstream": {"nodes": {node.to_string(): 1}}});
    etcd.ctl(&["put", "/gw/routes/bytes", &route.to_string()]);
    gw.wait_routes(1).await;

    // Asks for 1 GiB and reads nothing: once the gateway's writes have stalled for 1 s it
    // closes the client, and with it the upstream connection (the node's write fails).
    let mut stalled = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    stalled
        .write_all(b"GET /bytes/1073741824 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the upstream connection released after the client stopped reading",
        || async { cut.load(std::sync::atomic::Ordering::SeqCst) },
    )
    .await;
    let got = body_bytes_until_close(&mut stalled, Duration::ZERO).await;
    assert!(got < 1 << 30, "the stalled client got the whole body");

    // A client that reads with pauses shorter than the limit gets all of it (4 MiB in
    // 200 ms pauses: within 20 s even at 64 KiB per read).
    let mut slow = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    slow.write_all(b"GET /bytes/4194304 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = body_bytes_until_close(&mut slow, Duration::from_millis(200)).await;
    assert_eq!(got, 4 << 20);
}

/// Sends raw bytes and returns everything read until the server closes.
fn raw_response(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

/// Sends raw bytes and returns the status line.
fn raw_status(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_the_right_status() {
    let etcd = Etcd::start();
    let gw = Gateway::start(&etcd.url, "/gw", &[]);
    gw.wait_ready().await;
    let table: Vec<(Vec<u8>, &str)> = vec![
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nbad header line\r\n\r\n".to_vec(),
            "400",
        ),
        (b"GARBAGE\r\n\r\n".to_vec(), "400"),
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), "400"),
        (
            [
                b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec(),
                vec![b'a'; 70 * 1024],
                b"\r\n\r\n".to_vec(),
            ]
            .concat(),
            "431",
        ),
        (b"GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), "404"),
    ];
    for (req, want) in table {
        let line = raw_status(gw.http, &req);
        assert!(
            line.contains(want),
            "{:?} -> {line:?}, want {want}",
            String::from_utf8_lossy(&req[..20.min(req.len())])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_values_in_etcd_disable_only_themselves() {
    let etcd = Etcd::start();
    let a = Backend::start("a").await;
    let good = json!({"uri": "/good", "upstream": {"nodes": {a.node(): 1}}}).to_string();
    etcd.ctl(&["put", "/gw/routes/good", &good]);
    etcd.ctl(&["put", "/gw/routes/bad1", "{not json"]);
    etcd.ctl(&[
        "put",
        "/gw/routes/bad2",
        r#"{"uri":"/bad","upstream_id":"1","surprise":true}"#,
    ]);
    etcd.ctl(&["put", "/gw/ssls/whatever", "{}"]);
    let gw = Gateway::start(&etcd.url, "/gw", &[]);
    gw.wait_ready().await;
    let client = reqwest::Client::new();
    assert_eq!(who(&client, &gw, "/good", None).await, Ok("a".into()));
    assert_eq!(who(&client, &gw, "/bad", None).await, Err(404));
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("gateway_config_invalid_resources{kind=\"routes\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gateway_config_resources{kind=\"routes\"} 1"),
        "{metrics}"
    );

    // Fixing a bad value brings it back; breaking the good one takes only it away.
    etcd.ctl(&[
        "put",
        "/gw/routes/bad1",
        &json!({"uri": "/fixed", "upstream": {"nodes": {a.node(): 1}}}).to_string(),
    ]);
    etcd.ctl(&["put", "/gw/routes/good", "[]"]);
    eventually(
        Duration::from_secs(2),
        "fixed route served, broken one gone",
        || async {
            who(&client, &gw, "/fixed", None).await == Ok("a".into())
                && who(&client, &gw, "/good", None).await == Err(404)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_rules_reach_the_right_backend() {
    let etcd = Etcd::start();
    let admin = AdminApi::start(&etcd.url, "/gw", KEY);
    let gw = Gateway::start(&etcd.url, "/gw", &[]);
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    admin
        .ok("PUT", "/upstreams/a", Some(json!({"nodes": {a.node(): 1}})))
        .await;
    admin
        .ok("PUT", "/upstreams/b", Some(json!({"nodes": {b.node(): 1}})))
        .await;
    admin
        .ok("PUT", "/upstreams/c", Some(json!({"nodes": {c.node(): 1}})))
        .await;
    admin
        .ok(
            "PUT",
            "/services/s",
            Some(json!({"hosts": ["svc.example"], "upstream_id": "c"})),
        )
        .await;
    for (id, body) in [
        ("any", json!({"uri": "/api/*", "upstream_id": "a"})),
        (
            "host",
            json!({"uri": "/api/*", "hosts": ["*.example.com"], "upstream_id": "b"}),
        ),
        (
            "canary",
            json!({"uri": "/api/*", "vars": [["http_x_canary", "==", "1"]], "priority": 5, "upstream_id": "c"}),
        ),
        (
            "post",
            json!({"uri": "/form", "methods": ["POST"], "upstream_id": "b"}),
        ),
        ("svc", json!({"uri": "/svc", "service_id": "s"})),
        (
            "off",
            json!({"uri": "/off", "upstream_id": "a", "status": 0}),
        ),
    ] {
        admin.ok("PUT", &format!("/routes/{id}"), Some(body)).await;
    }
    gw.wait_routes(6).await;
    let client = reqwest::Client::new();
    assert_eq!(who(&client, &gw, "/api/x", None).await, Ok("a".into()));
    assert_eq!(
        who(&client, &gw, "/api/x", Some("v1.example.com:9080")).await,
        Ok("b".into())
    );
    assert_eq!(
        who(&client, &gw, "/api/x", Some("example.com")).await,
        Ok("a".into())
    );
    let canary = client
        .get(gw.url("/api/x"))
        .header("x-canary", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(canary.headers()["x-backend"], "c");
    assert_eq!(who(&client, &gw, "/form", None).await, Err(404));
    let post = client.post(gw.url("/form")).send().await.unwrap();
    assert_eq!(post.headers()["x-backend"], "b");
    assert_eq!(
        who(&client, &gw, "/svc", Some("svc.example")).await,
        Ok("c".into())
    );
    assert_eq!(
        who(&client, &gw, "/svc", Some("other.example")).await,
        Err(404)
    );
    assert_eq!(who(&client, &gw, "/off", None).await, Err(404));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_lists_every_page() {
    let etcd = Etcd::start();
    let a = Backend::start("a").await;
    // More keys than one list page holds, so the list must follow `more` across pages.
    let kvs: Vec<(String, String)> = (0..2500)
        .map(|i| {
            let route = json!({"uri": format!("/r{i}"), "upstream": {"nodes": {a.node(): 1}}});
            (format!("/gw/routes/{i}"), route.to_string())
        })
        .collect();
    etcd.put_many(&kvs);
    let gw = Gateway::start(&etcd.url, "/gw", &[]);
    gw.wait_routes(2500).await;
    let client = reqwest::Client::new();
    for i in [0, 1023, 1024, 2047, 2048, 2499] {
        assert_eq!(
            who(&client, &gw, &format!("/r{i}"), None).await,
            Ok("a".into()),
            "/r{i}"
        );
    }
}

/// A raw HTTP/1.1 node answering by path with exact bytes (see `scripted_answer`), and
/// counting the connections it accepts.
async fn scripted_node() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let end = loop {
                        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&pending[..end]).to_string();
                    pending.drain(..end);
                    let mut line = head.split_whitespace();
                    let (method, path) = (line.next().unwrap_or(""), line.next().unwrap_or(""));
                    if path == "/vanish" {
                        VANISHED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        return;
                    }
                    if path == "/refuse-upload" {
                        // Answers before reading the body, then closes as nginx does:
                        // its side first, then reading (and dropping) what still comes
                        // for a while, so that no reset destroys the answer in flight.
                        let _ = conn
                            .write_all(
                                b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n",
                            )
                            .await;
                        let _ = conn.shutdown().await;
                        let linger =
                            async { while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {} };
                        let _ = tokio::time::timeout(Duration::from_secs(5), linger).await;
                        return;
                    }
                    if path == "/echo" {
                        let lower = head.to_ascii_lowercase();
                        let Some(body) = read_request_body(&mut conn, &lower, &mut pending).await
                        else {
                            return;
                        };
                        let framing = if lower.contains("transfer-encoding: chunked") {
                            "chunked"
                        } else {
                            "length"
                        };
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-framing: {framing}\r\n\r\n",
                            body.len()
                        );
                        if conn.write_all(answer.as_bytes()).await.is_err()
                            || conn.write_all(&body).await.is_err()
                        {
                            return;
                        }
                        continue;
                    }
                    let (answer, then) = scripted_answer(method, path);
                    if conn.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    match then {
                        After::Stay => {}
                        After::Close => return,
                        After::CloseSoon => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, conns)
}

/// Reads a request body framed by the head (`lower`: the head in lower case) from what
/// is `pending` and then the connection; `None` when the connection ends first.
async fn read_request_body(
    conn: &mut tokio::net::TcpStream,
    lower: &str,
    pending: &mut Vec<u8>,
) -> Option<Vec<u8>> {
    async fn more(conn: &mut tokio::net::TcpStream, pending: &mut Vec<u8>) -> Option<()> {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                Some(())
            }
        }
    }
    if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        while pending.len() < len {
            more(conn, pending).await?;
        }
        return Some(pending.drain(..len).collect());
    }
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = pending.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            more(conn, pending).await?;
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&pending[..line_end]).ok()?, 16).ok()?;
        pending.drain(..line_end + 2);
        while pending.len() < size + 2 {
            more(conn, pending).await?;
        }
        body.extend(pending.drain(..size));
        pending.drain(..2);
        if size == 0 {
            return Some(body);
        }
    }
}

/// How many times `/vanish` reached the scripted node (it closes without answering).
static VANISHED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

enum After {
    Stay,
    Close,
    /// Closes the idle connection 100 ms later, as a node's keepalive timeout would.
    CloseSoon,
}

fn scripted_answer(method: &str, path: &str) -> (&'static str, After) {
    match (method, path) {
        ("HEAD", _) => ("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", After::Stay),
        (_, "/cl") => ("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", After::Stay),
        (_, "/chunked") => (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 99\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\nx-t: 1\r\n\r\n",
            After::Stay,
        ),
        (_, "/close") => (
            "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the close",
            After::Close,
        ),
        (_, "/early") => (
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-node-secret: 1\r\nconnection: x-node-secret\r\n\r\nok",
            After::Stay,
        ),
        (_, "/conflict") => (
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nxx",
            After::Stay,
        ),
        (_, "/extra") => (
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n",
            After::Stay,
        ),
        (_, "/short") => (
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
            After::Close,
        ),
        (_, "/reason") => ("HTTP/1.1 520 Origin Error\r\ncontent-length: 0\r\n\r\n", After::Stay),
        (_, "/idle-close") => ("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", After::CloseSoon),
        _ => ("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n", After::Stay),
    }
}

/// Bodiless requests reach plain HTTP/1.1 nodes through the gateway's own client
/// (h1_client.rs): every way a response can be framed, what must not be reused, and
/// what must be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_node_is_read_by_its_framing() {
    let etcd = Etcd::start();
    let gw = Gateway::start(&etcd.url, "/gw", &["--workers=1"]);
    let (node, conns) = scripted_node().await;
    let route = json!({"uri": "/*", "upstream": {"nodes": {node.to_string(): 1}}});
    etcd.ctl(&["put", "/gw/routes/all", &route.to_string()]);
    gw.wait_routes(1).await;
    let opened = || conns.load(std::sync::atomic::Ordering::SeqCst);
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(gw.url(path)).send();

    // Content-Length, one connection for all.
    for _ in 0..10 {
        let r = get("/cl").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "hello");
    }
    assert_eq!(opened(), 1, "keepalive connections to the node are reused");

    // Chunked, with an extension and a trailer; its Content-Length is dropped.
    let r = get("/chunked").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-length").is_none());
    assert_eq!(r.text().await.unwrap(), "hello");

    // HEAD: the length is kept, no body is waited for.
    let r = client.head(gw.url("/cl")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "5");

    // 1xx skipped; headers that Connection names are not forwarded.
    let r = get("/early").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-node-secret").is_none());
    assert_eq!(r.text().await.unwrap(), "ok");
    assert_eq!(opened(), 1);

    // A body read to the close: complete, and that connection is not pooled.
    let r = get("/close").await.unwrap();
    assert_eq!(r.text().await.unwrap(), "until the close");
    assert_eq!(get("/cl").await.unwrap().text().await.unwrap(), "hello");
    assert_eq!(opened(), 2);

    // Bytes after the body: the client gets the body, the connection is dropped.
    assert_eq!(get("/extra").await.unwrap().text().await.unwrap(), "ok");
    assert_eq!(get("/cl").await.unwrap().text().await.unwrap(), "hello");
    assert_eq!(opened(), 3);

    // Conflicting lengths: refused, 502.
    assert_eq!(get("/conflict").await.unwrap().status(), 502);

    // A body cut short fails the client's response rather than ending it early.
    // (The head may not have left either: then the request itself fails.)
    if let Ok(short) = get("/short").await {
        assert!(
            short.bytes().await.is_err(),
            "a truncated body must not look complete"
        );
    }

    // A node's own reason phrase reaches the client.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut raw = tokio::net::TcpStream::connect(gw.http).await.unwrap();
        raw.write_all(b"GET /reason HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut got = vec![0u8; 64];
        let n = raw.read(&mut got).await.unwrap();
        assert!(
            got[..n].starts_with(b"HTTP/1.1 520 Origin Error\r\n"),
            "{:?}",
            String::from_utf8_lossy(&got[..n])
        );
    }

    // A node that drops a request on a connection just used is not sent it again (only
    // a connection idle long enough for the node's keepalive timeout may have been
    // closed under it): 502, and the node saw it once.
    assert_eq!(get("/cl").await.unwrap().status(), 200);
    assert_eq!(get("/vanish").await.unwrap().status(), 502);
    assert_eq!(VANISHED.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Request bodies: a known length goes as it is, a chunked one chunked.
    let sent = "x".repeat(100_000);
    let r = client
        .post(gw.url("/echo"))
        .body(sent.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-framing"], "length");
    assert_eq!(r.text().await.unwrap(), sent);
    let big = "y".repeat(70_000);
    let chunked = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n5\r\ndefgh\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    let r = e2e::raw::exchange(gw.http, chunked.as_bytes())
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-framing"), Some("chunked"));
    assert_eq!(r.text(), format!("abcdefgh{big}"));
    let before = opened();
    // A node that refuses an upload before reading it: its answer reaches the client,
    // and that connection is not used again.
    let r = client
        .post(gw.url("/refuse-upload"))
        .body("z".repeat(64_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(get("/cl").await.unwrap().text().await.unwrap(), "hello");
    assert_eq!(
        opened(),
        before + 1,
        "the refused upload's connection was reused"
    );

    // A node that closes idle connections: every request still succeeds.
    for _ in 0..10 {
        let r = get("/idle-close").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ok");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Replicas report what they serve (`{prefix}.cluster/gateways/{id}`); a write with
/// `?wait=applied` is answered once every replica serves it, or 504 naming those that do
/// not; a replica that dies leaves the view within its lease TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_can_wait_until_every_replica_serves_them() {
    let etcd = Etcd::start();
    let admin = AdminApi::start(&etcd.url, "/gw", KEY);
    let mut gws: Vec<Gateway> = ["gw-a", "gw-b", "gw-c"]
        .iter()
        .map(|id| {
            let id = format!("--instance-id={id}");
            Gateway::start(&etcd.url, "/gw", &[&id, "--report-ttl=5s", "--workers=1"])
        })
        .collect();
    let backend = Backend::start("b1").await;
    let client = reqwest::Client::new();
    let ids = |view: &Value| -> Vec<String> {
        view["gateways"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|g| g["id"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    eventually(Duration::from_secs(20), "three replicas report", || async {
        let (_, view) = admin.call("GET", "/cluster", None).await;
        ids(&view) == ["gw-a", "gw-b", "gw-c"]
            && view["gateways"]
                .as_array()
                .unwrap()
                .iter()
                .all(|g| g["watch_connected"] == true && g["applied_revision"].as_i64() > Some(0))
    })
    .await;
    let (_, view) = admin.call("GET", "/cluster", None).await;
    let first = &view["gateways"][0];
    assert!(first["listen"][0] == gws[0].http.to_string(), "{view}");
    assert_eq!(first["workers"], 1);

    // Each answer comes only once all three serve the change: checked right after it.
    let route =
        |uri: &str| json!({"uri": uri, "upstream": {"nodes": {backend.addr.to_string(): 1}}});
    for i in 0..5 {
        let path = format!("/w{i}");
        let (status, body) = admin
            .call(
                "PUT",
                &format!("/routes/w{i}?wait=applied"),
                Some(route(&path)),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        for gw in &gws {
            let got = client.get(gw.url(&path)).send().await.unwrap().status();
            assert_eq!(got, 200, "{path} on {}", gw.http);
        }
    }
    let (status, _) = admin.call("DELETE", "/routes/w0?wait=applied", None).await;
    assert_eq!(status, 200);
    for gw in &gws {
        assert_eq!(
            client.get(gw.url("/w0")).send().await.unwrap().status(),
            404
        );
    }
    let (_, view) = admin.call("GET", "/cluster", None).await;
    for g in view["gateways"].as_array().unwrap() {
        assert_eq!(
            (g["in_sync"].clone(), g["lag"].clone()),
            (json!(true), json!(0)),
            "{view}"
        );
    }

    // A replica that stopped: the wait times out and names it; the write is done anyway.
    gws[1].proc.signal("STOP");
    let asked = std::time::Instant::now();
    let (status, body) = admin
        .call(
            "PUT",
            "/routes/late?wait=applied&timeout=1s",
            Some(route("/late")),
        )
        .await;
    assert_eq!(status, 504, "{body}");
    assert!(asked.elapsed() < Duration::from_secs(4));
    assert_eq!(body["pending"][0]["id"], "gw-b", "{body}");
    assert!(
        body["error_msg"].as_str().unwrap().contains("gw-b"),
        "{body}"
    );
    assert_eq!(admin.call("GET", "/routes/late", None).await.0, 200);
    // Two of three is what this one asks for.
    let (status, body) = admin
        .call(
            "PUT",
            "/routes/late2?wait=applied&timeout=1s&min=2",
            Some(route("/late2")),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    gws[1].proc.signal("CONT");
    eventually(
        Duration::from_secs(10),
        "the stopped replica catches up",
        || async {
            let (_, view) = admin.call("GET", "/cluster", None).await;
            ids(&view).len() == 3
                && view["gateways"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|g| g["in_sync"] == true)
        },
    )
    .await;

    // A replica that dies leaves within its lease TTL (5 s).
    gws[2].proc.kill();
    eventually(
        Duration::from_secs(12),
        "the killed replica leaves",
        || async {
            let (_, view) = admin.call("GET", "/cluster", None).await;
            ids(&view) == ["gw-a", "gw-b"]
        },
    )
    .await;

    // Bad parameters name themselves.
    let (status, body) = admin
        .call("PUT", "/routes/x?wait=soon", Some(route("/x")))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error_msg"].as_str().unwrap().contains("wait"),
        "{body}"
    );
    let (status, body) = admin
        .call(
            "PUT",
            "/routes/x?wait=applied&timeout=5h",
            Some(route("/x")),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error_msg"].as_str().unwrap().contains("timeout"),
        "{body}"
    );
}

/// A node given by name counts as applied only once its name has had a first answer:
/// with a resolver that takes 1.5 s, `?wait=applied` answers after it, and the route
/// serves right away (not 503 for want of an address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_waits_for_the_first_dns_answer_of_new_names() {
    let dns = e2e::dns::DnsServer::start(60).await;
    let etcd = Etcd::start();
    let admin = AdminApi::start(&etcd.url, "/gw", KEY);
    let resolver = dns.addr.to_string();
    let gw = Gateway::start(
        &etcd.url,
        "/gw",
        &["--instance-id=gw-dns", "--dns-resolver", &resolver],
    );
    let backend = Backend::start("named").await;
    eventually(Duration::from_secs(20), "the replica reports", || async {
        let (_, view) = admin.call("GET", "/cluster", None).await;
        view["gateways"].as_array().is_some_and(|g| g.len() == 1)
    })
    .await;
    dns.set("slow.test.internal", &[std::net::Ipv4Addr::LOCALHOST]);
    dns.set_delay(Duration::from_millis(1500));
    let node = format!("slow.test.internal:{}", backend.addr.port());
    let started = std::time::Instant::now();
    let (status, body) = admin
        .call(
            "PUT",
            "/routes/named?wait=applied",
            Some(json!({"uri": "/named", "upstream": {"nodes": {node: 1}}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        started.elapsed() >= Duration::from_millis(1200),
        "answered before the name resolved"
    );
    let got = reqwest::get(gw.url("/named")).await.unwrap().status();
    assert_eq!(
        got, 200,
        "served right after the write was reported applied"
    );
    // A name that does not resolve still settles (its first answer is "no address"):
    // the write is reported applied, and the route answers 503.
    dns.set_delay(Duration::ZERO);
    let (status, body) = admin
        .call(
            "PUT",
            "/routes/nowhere?wait=applied&timeout=10s",
            Some(
                json!({"uri": "/nowhere", "upstream": {"nodes": {"nowhere.test.internal:80": 1}}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let got = reqwest::get(gw.url("/nowhere")).await.unwrap().status();
    assert_eq!(got, 503);
}

/// The page as a real browser (Debian's headless Chromium) renders it, scripts run.
async fn browser_dom(url: &str) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--virtual-time-budget=2000",
                "--dump-dom",
                url,
            ])
            .output(),
    )
    .await
    .expect("chromium did not finish within 60 s")
    .expect("chromium runs (scripts/install-deps.sh installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `<tr>` of table `id` whose text holds `needle`.
fn row_of(dom: &str, table: &str, needle: &str) -> Option<String> {
    let start = dom.find(&format!("id=\"{table}\""))?;
    let end = dom[start..].find("</table>")? + start;
    dom[start..end]
        .split("<tr>")
        .find(|row| row.contains(needle))
        .map(str::to_string)
}

/// The dashboard in a real browser: the replicas, a route created a moment before, and
/// a node the replicas' health checks find down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_replicas_routes_and_node_health() {
    let etcd = Etcd::start();
    let admin = AdminApi::start(&etcd.url, "/gw", KEY);
    let gw = Gateway::start(&etcd.url, "/gw", &["--instance-id=gw-ui", "--workers=1"]);
    let backend = Backend::start("b1").await;
    let down = format!("127.0.0.1:{}", e2e::free_port());
    admin
        .ok(
            "PUT",
            "/upstreams/checked?wait=applied",
            Some(
                json!({"name": "checked", "nodes": {backend.addr.to_string(): 1, down.clone(): 1},
                "checks": {"active": {"type": "tcp",
                    "healthy": {"interval": 1, "successes": 1},
                    "unhealthy": {"interval": 1, "tcp_failures": 1}}}}),
            ),
        )
        .await;
    admin
        .ok(
            "PUT",
            "/routes/dash-route?wait=applied",
            Some(
                json!({"name": "made-a-moment-ago", "uri": "/dash/*", "upstream_id": "checked",
                "plugins": {"proxy-rewrite": {"uri": "/x"}}}),
            ),
        )
        .await;
    // A value the admin-api would refuse, written by another tool: skipped, with why.
    etcd.ctl(&["put", "/gw/routes/broken", r#"{"uri": 5}"#]);
    let url = format!("http://{}/ui/?api_key={KEY}", admin.addr);
    eventually(
        Duration::from_secs(10),
        "the invalid route is shown with its error",
        || async {
            let dom = browser_dom(&url).await;
            row_of(&dom, "invalid", "routes broken")
                .is_some_and(|r| r.contains("uri") && r.contains("gw-ui"))
        },
    )
    .await;
    let dom = browser_dom(&url).await;
    assert!(dom.contains("<h1>Gateway</h1>"), "{dom}");
    let replica = row_of(&dom, "replicas", "gw-ui").expect("the replica is listed");
    assert!(
        replica.contains("in sync") && replica.contains("connected"),
        "{replica}"
    );
    let route = row_of(&dom, "routes", "dash-route").expect("the new route is listed");
    assert!(
        route.contains("made-a-moment-ago") && route.contains("/dash/*"),
        "{route}"
    );
    assert!(
        route.contains("checked") && route.contains("proxy-rewrite"),
        "{route}"
    );
    eventually(
        Duration::from_secs(15),
        "the down node shows unhealthy",
        || async {
            let dom = browser_dom(&url).await;
            row_of(&dom, "health", &down).is_some_and(|r| r.contains("unhealthy"))
                && row_of(&dom, "health", &backend.addr.to_string())
                    .is_some_and(|r| r.contains(">healthy<"))
        },
    )
    .await;
    // Traffic: counted once the prometheus plugin runs for every route (a global rule).
    let row = row_of(&browser_dom(&url).await, "routes", "dash-route").unwrap();
    assert!(row.contains("not counted"), "{row}");
    admin
        .ok(
            "PUT",
            "/global_rules/count?wait=applied",
            Some(json!({"plugins": {"prometheus": {}}})),
        )
        .await;
    let client = reqwest::Client::new();
    let send = |n: usize| {
        let client = client.clone();
        let url = gw.url("/dash/x");
        async move {
            for _ in 0..n {
                let _ = client.get(&url).send().await;
            }
        }
    };
    send(10).await;
    // One view to sample, then more requests, then the view that shows their rate.
    let _ = browser_dom(&url).await;
    send(20).await;
    let row = row_of(&browser_dom(&url).await, "routes", "dash-route").unwrap();
    assert!(row.contains("2xx"), "{row}");
    // The only cell of the row that is a number.
    let rate: f64 = row
        .split("<td>")
        .find_map(|c| c.split('<').next()?.parse().ok())
        .unwrap_or_else(|| panic!("a rate in {row}"));
    assert!(rate > 0.0, "{row}");
    // Without the key: refused.
    let bare = reqwest::get(format!("http://{}/ui/", admin.addr))
        .await
        .unwrap();
    assert_eq!(bare.status(), 401);
}
