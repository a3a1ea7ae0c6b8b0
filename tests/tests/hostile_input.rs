//! Hostile client input, over raw sockets: each case asserts what the client gets back
//! and what the backend received (a recording backend keeps every byte), so that nothing
//! is smuggled past the gateway and nothing it refused is forwarded anyway.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use e2e::raw::{exchange, h2, RawConn, RecordingBackend};
use e2e::stack::Stack;
use e2e::{eventually, Backend};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// A stack with one recording backend behind upstream `rec` and routes `/up/*` to it.
async fn stack_with_backend(args: &[&str]) -> (Stack, RecordingBackend) {
    let s = Stack::start(args).await;
    let rec = RecordingBackend::start().await;
    s.admin
        .ok(
            "PUT",
            "/upstreams/rec",
            Some(json!({"nodes": {rec.node(): 1}})),
        )
        .await;
    route(&s, "up", json!({"uri": "/up/*", "upstream_id": "rec"})).await;
    rec.clear();
    (s, rec)
}

/// Puts a route and waits until the gateway has it.
async fn route(s: &Stack, id: &str, def: serde_json::Value) {
    s.admin.ok("PUT", &format!("/routes/{id}"), Some(def)).await;
    let want = s.admin.ok("GET", "/routes", None).await["total"]
        .as_u64()
        .unwrap();
    s.gw.wait_routes(want).await;
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").into_bytes()
}

async fn status(s: &Stack, bytes: &[u8]) -> Option<u16> {
    exchange(s.gw.http, bytes).await.map(|r| r.status)
}

/// A client's bad chunked body or aborted upload is the client's fault: answered 4xx and
/// never counted as the node failing, so no client can take healthy nodes out of service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_faults_never_count_against_nodes() {
    let s = Stack::start(&["--workers=2"]).await;
    let a = RecordingBackend::start().await;
    let b = RecordingBackend::start().await;
    // The active probe runs once a minute: only the passive check can act in this test.
    let checks = json!({
        "active": {"http_path": "/", "healthy": {"interval": 60, "successes": 1},
            "unhealthy": {"interval": 60}},
        "passive": {"unhealthy": {"tcp_failures": 2, "timeouts": 2, "http_failures": 2,
            "http_statuses": [502, 503]}},
    });
    s.admin
        .ok(
            "PUT",
            "/upstreams/hc",
            Some(json!({"nodes": {a.node(): 1, b.node(): 1}, "checks": checks})),
        )
        .await;
    route(&s, "hc", json!({"uri": "/hc/*", "upstream_id": "hc"})).await;
    for node in [a.node(), b.node()] {
        eventually(WAIT, "both nodes probed healthy", || async {
            s.healthy("hc", &node).await == Some(true)
        })
        .await;
    }

    for _ in 0..4 {
        let bad_chunk =
            b"POST /hc/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(status(&s, bad_chunk).await, Some(400), "bad chunk size");
        // 1,000 of 100,000 bytes, then the client half-closes: an aborted upload.
        let mut c = RawConn::connect(s.gw.http).await;
        c.send(b"POST /hc/x HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n")
            .await;
        c.send(&[b'x'; 1000]).await;
        tokio::io::AsyncWriteExt::shutdown(&mut c.stream)
            .await
            .unwrap();
        // Whatever it is told (499, or nothing), it is not a 502 blaming the node.
        if let Some(r) = c.response(WAIT).await {
            assert_ne!(r.status, 502, "{}", r.text());
        }
    }
    for node in [a.node(), b.node()] {
        assert_eq!(
            s.healthy("hc", &node).await,
            Some(true),
            "{node} was marked unhealthy by client faults"
        );
    }
    let metrics = s.gw.metrics().await;
    assert!(
        !metrics.contains("code=\"502\""),
        "client faults were answered 502:\n{metrics}"
    );
    for _ in 0..4 {
        assert_eq!(status(&s, &get("/hc/ok")).await, Some(200));
    }
    // Both nodes still get traffic.
    let paths = |r: &RecordingBackend| r.requests().iter().filter(|q| q.target == "/hc/ok").count();
    assert!(paths(&a) > 0 && paths(&b) > 0, "a node was taken out");
}

/// A connection that never sends a request is closed after the header timeout; an idle
/// keepalive connection after the keepalive timeout; a slow request in flight never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let s = Stack::start(&[
        "--workers=1",
        "--client-header-timeout=1s",
        "--keepalive-timeout=2s",
    ])
    .await;
    let slow = Backend::start_delayed("slow", Duration::from_secs(3)).await;
    s.upstream("fast", json!({"nodes": {slow.node(): 1}})).await;
    slow.set_delay(Duration::ZERO);

    // Silent from the start: closed after about a second, not at once.
    let mut silent = RawConn::connect(s.gw.http).await;
    assert!(!silent.closed_within(Duration::from_millis(400)).await);
    assert!(
        silent.closed_within(Duration::from_secs(5)).await,
        "a silent connection stayed open"
    );
    // On the HTTPS port too: the header timeout counts from accept, the TLS handshake
    // included.
    let mut silent = RawConn::connect(s.gw.https()).await;
    assert!(
        silent.closed_within(Duration::from_secs(5)).await,
        "a silent HTTPS connection stayed open past the header timeout"
    );

    // Idle after a response: closed after about two seconds.
    let mut idle = RawConn::connect(s.gw.http).await;
    idle.send(&get("/fast/a")).await;
    assert_eq!(idle.response(WAIT).await.map(|r| r.status), Some(200));
    assert!(
        !idle.closed_within(Duration::from_millis(1200)).await,
        "closed before the keepalive timeout"
    );
    assert!(
        idle.closed_within(Duration::from_secs(5)).await,
        "an idle keepalive connection stayed open"
    );

    // A request whose answer takes longer than both timeouts is answered, and the
    // connection is still usable right after.
    slow.set_delay(Duration::from_secs(3));
    let mut busy = RawConn::connect(s.gw.http).await;
    busy.send(&get("/fast/slow")).await;
    assert_eq!(busy.response(WAIT).await.map(|r| r.status), Some(200));
    slow.set_delay(Duration::ZERO);
    busy.send(&get("/fast/again")).await;
    assert_eq!(busy.response(WAIT).await.map(|r| r.status), Some(200));

    for phase in ["header", "keepalive"] {
        let name = format!("gateway_client_idle_closes_total{{phase=\"{phase}\"}}");
        let n = s.gw.metric_value(&name).await.unwrap_or(0.0);
        assert!(n >= 1.0, "{name} is {n}");
    }
}

/// Beyond `--worker-connections` open connections a worker closes new ones at once and
/// counts them; a slot freed is usable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_worker_are_capped() {
    let (s, _rec) = stack_with_backend(&["--workers=1", "--worker-connections=3"]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = RawConn::connect(s.gw.http).await;
        c.send(&get("/up/held")).await;
        assert_eq!(c.response(WAIT).await.map(|r| r.status), Some(200));
        held.push(c);
    }
    let mut over = RawConn::connect(s.gw.http).await;
    let _ = over.try_send(&get("/up/over")).await;
    assert!(
        over.response(WAIT).await.is_none(),
        "a fourth connection was served"
    );
    assert_eq!(
        s.gw.metric_value("gateway_connections_refused_total{worker=\"0\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(
        s.gw.metric_value("gateway_connections_open{worker=\"0\"}")
            .await,
        Some(3.0)
    );
    drop(held.pop());
    eventually(WAIT, "the freed slot is counted", || async {
        s.gw.metric_value("gateway_connections_open{worker=\"0\"}")
            .await
            == Some(2.0)
    })
    .await;
    assert_eq!(status(&s, &get("/up/again")).await, Some(200));
}

/// A WebSocket tunnel outlives its connection's HTTP exchange but is still an open client
/// connection: it keeps its worker's slot until it closes, so tunnels cannot pile up past
/// `--worker-connections`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnels_count_against_worker_connections() {
    let s = Stack::start(&["--workers=1", "--worker-connections=1"]).await;
    let ws = e2e::ws::WsBackend::start("ws").await;
    s.admin
        .ok(
            "PUT",
            "/upstreams/ws",
            Some(json!({"nodes": {ws.node(): 1}})),
        )
        .await;
    route(
        &s,
        "ws",
        json!({"uri": "/ws", "upstream_id": "ws", "enable_websocket": true}),
    )
    .await;
    let open = "gateway_connections_open{worker=\"0\"}";
    let (tunnel, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", s.gw.http))
        .await
        .unwrap();
    eventually(WAIT, "the tunnel is open", || async {
        s.gw.metric_value("gateway_websockets_open").await == Some(1.0)
    })
    .await;
    assert_eq!(s.gw.metric_value(open).await, Some(1.0));
    assert_eq!(status(&s, &get("/ws")).await, None, "served past the cap");
    assert_eq!(
        s.gw.metric_value("gateway_connections_refused_total{worker=\"0\"}")
            .await,
        Some(1.0)
    );
    drop(tunnel);
    eventually(WAIT, "the tunnel's slot is freed", || async {
        s.gw.metric_value(open).await == Some(0.0)
    })
    .await;
}

/// Routes match the normalised path, and the backend gets that path: a `..` cannot walk
/// from an open prefix into a guarded one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalised_before_matching_and_forwarding() {
    let (s, rec) = stack_with_backend(&[]).await;
    route(
        &s,
        "public",
        json!({"uri": "/public/*", "upstream_id": "rec"}),
    )
    .await;
    route(
        &s,
        "admin",
        json!({"uri": "/admin/*", "upstream_id": "rec",
            "vars": [["http_x_admin_token", "==", "s3cret"]]}),
    )
    .await;
    for bypass in [
        "/public/../admin/secret",
        "/public/%2e%2e/admin/secret",
        "/public/.%2E/admin/secret",
        "/public//..//admin/secret",
    ] {
        assert_eq!(status(&s, &get(bypass)).await, Some(404), "{bypass}");
    }
    assert!(rec.bytes().is_empty(), "a refused path reached the backend");
    for (sent, forwarded) in [
        ("/public/./a//b/../c", "/public/a/c"),
        ("/public/%7Euser?q=/../x", "/public/~user?q=/../x"),
        ("/public/a%2Fb", "/public/a%2Fb"),
    ] {
        rec.clear();
        assert_eq!(status(&s, &get(sent)).await, Some(200), "{sent}");
        let seen = rec.requests();
        assert_eq!(seen.len(), 1, "{sent}");
        assert_eq!(seen[0].target, forwarded, "{sent}");
    }
    rec.clear();
    let guarded = b"GET /public/../admin/x HTTP/1.1\r\nHost: h\r\nX-Admin-Token: s3cret\r\n\r\n";
    assert_eq!(status(&s, guarded).await, Some(200));
    assert_eq!(rec.requests()[0].target, "/admin/x");
    rec.clear();
    // A backend that splits on an encoded slash or a backslash, or drops `;params` (Tomcat),
    // would resolve these to /admin/secret: refused, never guessed at.
    for bad in [
        "/../etc/passwd",
        "/public/%zz",
        "/public/..%2Fadmin/secret",
        "/public/..%5cadmin/secret",
        "/public/..\\admin/secret",
        "/public/..;/admin/secret",
        "/public/%2e%2e;x=1/admin/secret",
    ] {
        assert_eq!(status(&s, &get(bad)).await, Some(400), "{bad}");
    }
    assert!(rec.bytes().is_empty());
}

/// One request, one host: two `Host`s or an invalid one are refused; an absolute-form
/// target's authority wins over `Host`; on HTTP/2 a `host` differing from `:authority`
/// is malformed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_hosts_are_refused() {
    let (s, rec) = stack_with_backend(&[]).await;
    let other = RecordingBackend::start().await;
    s.admin
        .ok(
            "PUT",
            "/upstreams/other",
            Some(json!({"nodes": {other.node(): 1}})),
        )
        .await;
    route(
        &s,
        "b",
        json!({"uri": "/h/*", "host": "b.com", "upstream_id": "rec"}),
    )
    .await;
    route(&s, "any", json!({"uri": "/h/*", "upstream_id": "other"})).await;

    for (case, bytes) in [
        (
            "two Host headers",
            &b"GET /h/x HTTP/1.1\r\nHost: b.com\r\nHost: a.com\r\n\r\n"[..],
        ),
        (
            "Host with a space, a slash and an @",
            b"GET /h/x HTTP/1.1\r\nHost: a b/../@c\r\n\r\n",
        ),
        (
            "userinfo in the target",
            b"GET http://u@b.com/h/x HTTP/1.1\r\nHost: b.com\r\n\r\n",
        ),
    ] {
        assert_eq!(status(&s, bytes).await, Some(400), "{case}");
    }
    assert!(rec.bytes().is_empty() && other.bytes().is_empty());

    // Absolute form: routed on, and forwarded with, the target's authority.
    let absolute = b"GET http://b.com/h/x HTTP/1.1\r\nHost: a.com\r\n\r\n";
    assert_eq!(status(&s, absolute).await, Some(200));
    let seen = rec.requests();
    assert_eq!(seen.len(), 1, "the b.com route was not chosen");
    assert_eq!(seen[0].header("host"), ["b.com"]);
    assert_eq!(seen[0].target, "/h/x");
    assert!(other.requests().is_empty());

    // HTTP/2 (prior knowledge): `host` differing from `:authority` reaches no backend,
    // while the same request without it does.
    rec.clear();
    let h2_get = |extra: Vec<u8>| {
        let mut block = h2::get("/h/x", "b.com");
        block.extend(extra);
        [
            h2::PREFACE.to_vec(),
            h2::frame(h2::SETTINGS, 0, 0, &[]),
            h2::frame(h2::HEADERS, h2::END_STREAM | h2::END_HEADERS, 1, &block),
        ]
        .concat()
    };
    for (extra, want) in [(h2::literal(0, "host", "a.com"), 0), (Vec::new(), 1)] {
        rec.clear();
        other.clear();
        let mut c = RawConn::connect(s.gw.http).await;
        c.send(&h2_get(extra)).await;
        let (frames, _) = h2::read_frames(&mut c.stream, Duration::from_secs(2)).await;
        assert!(
            frames
                .iter()
                .any(|(t, _, id)| *id == 1 && (*t == h2::HEADERS || *t == h2::RST_STREAM)),
            "no answer on stream 1: {frames:?}"
        );
        assert_eq!(
            rec.requests().len() + other.requests().len(),
            want,
            "{frames:?}"
        );
    }
}

/// Framing the gateway cannot forward faithfully is refused (501), and bodies and targets
/// have limits: 413 (also for chunked bodies, per route via `client-control`), 414.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_and_size_limits() {
    let (s, rec) = stack_with_backend(&["--client-max-body-size=1k"]).await;
    route(
        &s,
        "big",
        json!({"uri": "/big/*", "upstream_id": "rec",
            "plugins": {"client-control": {"max_body_size": 0}}}),
    )
    .await;
    route(
        &s,
        "tiny",
        json!({"uri": "/tiny/*", "upstream_id": "rec",
            "plugins": {"client-control": {"max_body_size": 10}}}),
    )
    .await;
    let te = b"POST /up/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    assert_eq!(status(&s, te).await, Some(501));
    assert!(rec.bytes().is_empty(), "a gzip-coded body was forwarded");

    let post = |path: &str, len: usize| {
        let mut b = format!("POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {len}\r\n\r\n")
            .into_bytes();
        b.extend(std::iter::repeat_n(b'x', len));
        b
    };
    assert_eq!(status(&s, &post("/up/x", 2000)).await, Some(413));
    assert_eq!(status(&s, &post("/tiny/x", 11)).await, Some(413));
    assert!(rec.bytes().is_empty(), "an oversized body was forwarded");
    assert_eq!(status(&s, &post("/up/x", 1024)).await, Some(200));
    assert_eq!(status(&s, &post("/tiny/x", 10)).await, Some(200));
    assert_eq!(status(&s, &post("/big/x", 5000)).await, Some(200));
    assert_eq!(rec.requests().last().unwrap().body.len(), 5000);

    // Chunked: the limit holds without a Content-Length to look at.
    rec.clear();
    let mut chunked =
        b"POST /up/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        chunked.extend(b"200\r\n");
        chunked.extend([b'y'; 0x200]);
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    assert_eq!(status(&s, &chunked).await, Some(413));
    assert!(
        rec.requests().iter().all(|r| r.body.len() <= 1024),
        "more than the limit reached the backend"
    );

    let long = format!("/up/{}", "a".repeat(9 * 1024));
    assert_eq!(status(&s, &get(&long)).await, Some(414));
    let huge = format!("/up/{}", "a".repeat(70 * 1024));
    assert_eq!(status(&s, &get(&huge)).await, Some(431));
}

/// Smuggling attempts and malformed heads, the cases the gateway already held against:
/// each is refused (or its smuggled part never forwarded), and the backend receives only
/// the requests the gateway itself answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_and_malformed_heads_never_reach_the_backend() {
    let (s, rec) = stack_with_backend(&["--client-header-timeout=2s"]).await;
    let before =
        s.gw.metric_value("gateway_http_responses_total{code=\"400\"}")
            .await
            .unwrap_or(0.0);
    let mut headers_64k = b"GET /up/x HTTP/1.1\r\nHost: h\r\nX-Big: ".to_vec();
    headers_64k.extend([b'a'; 64 * 1024]);
    headers_64k.extend(b"\r\n\r\n");
    let mut many_headers = b"GET /up/x HTTP/1.1\r\nHost: h\r\n".to_vec();
    for i in 0..10_000 {
        many_headers.extend(format!("X-H{i}: v\r\n").into_bytes());
    }
    many_headers.extend(b"\r\n");
    let refused: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "duplicate Content-Length",
            b"POST /up/x HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
                .to_vec(),
            400,
        ),
        (
            "obfuscated TE",
            b"POST /up/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "TE on HTTP/1.0",
            b"POST /up/x HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "bad chunk size",
            b"POST /up/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "obs-fold",
            b"GET /up/x HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "bare CR",
            b"GET /up/x HTTP/1.1\r\nHost: h\rX-A: a\r\n\r\n".to_vec(),
            400,
        ),
        (
            "NUL in a header",
            b"GET /up/x HTTP/1.1\r\nHost: h\r\nX-A: a\0b\r\n\r\n".to_vec(),
            400,
        ),
        ("HTTP/0.9", b"GET /up/x\r\n\r\n".to_vec(), 400),
        ("64 KiB header", headers_64k, 431),
        ("10,000 headers", many_headers, 431),
        (
            "space before colon",
            b"GET /up/x HTTP/1.1\r\nHost : h\r\n\r\n".to_vec(),
            400,
        ),
    ];
    for (case, bytes, want) in &refused {
        let got = exchange(s.gw.http, bytes).await.map(|r| r.status);
        assert_eq!(got, Some(*want), "{case}");
    }
    // What hyper answered by itself is counted too.
    let after =
        s.gw.metric_value("gateway_http_responses_total{code=\"400\"}")
            .await
            .unwrap_or(0.0);
    assert!(after - before >= 6.0, "400s counted: {before} → {after}");
    let forwarded: Vec<String> = rec.requests().iter().map(|r| r.target.clone()).collect();
    assert!(
        forwarded.iter().all(|t| t == "/up/x") && forwarded.len() <= 1,
        "refused requests reached the backend: {forwarded:?}"
    );
    // The one that may reach it is the bad chunk's head, with no body byte after it.
    assert!(rec.requests().iter().all(|r| r.body.is_empty()));

    // CL + TE: chunked wins, the connection closes after it, and what follows the
    // chunked body is never read as a request.
    rec.clear();
    let cl_te = b"POST /up/a HTTP/1.1\r\nHost: h\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /up/smuggled HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut c = RawConn::connect(s.gw.http).await;
    c.send(cl_te).await;
    assert_eq!(c.response(WAIT).await.map(|r| r.status), Some(200));
    assert!(
        c.response(Duration::from_secs(2)).await.is_none(),
        "a second request was answered"
    );
    let seen = rec.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/up/a");
    assert!(seen[0].header("content-length").len() <= 1);
    let bytes = String::from_utf8_lossy(&rec.bytes()).into_owned();
    assert!(!bytes.contains("smuggled"), "{bytes}");

    // Slowloris: one byte every 300 ms never completes a head within the header timeout.
    let mut slow = RawConn::connect(s.gw.http).await;
    let head = get("/up/slow");
    let started = std::time::Instant::now();
    let mut closed = false;
    for b in head.iter().take(head.len() - 1) {
        if slow.try_send(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        closed || slow.closed_within(WAIT).await,
        "the slow client was never closed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(rec.requests().iter().all(|r| r.target != "/up/slow"));
}

/// An HTTP/2 body longer than its `content-length` is malformed (RFC 9113 §8.1.1): the
/// stream is reset, the backend never gets the excess, and the request still shows in the
/// status counts (499: it was dropped unanswered, as for a client's own RST_STREAM).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_data_beyond_content_length_is_reset_and_counted() {
    let (s, rec) = stack_with_backend(&[]).await;
    let mut c = RawConn::connect(s.gw.http).await;
    let block = [
        h2::literal(0, ":method", "POST"),
        h2::literal(0, ":scheme", "http"),
        h2::literal(0, ":path", "/up/overrun"),
        h2::literal(0, ":authority", "h"),
        h2::literal(0, "content-length", "5"),
    ]
    .concat();
    let head = [
        h2::PREFACE.to_vec(),
        h2::frame(h2::SETTINGS, 0, 0, &[]),
        h2::frame(h2::HEADERS, h2::END_HEADERS, 1, &block),
    ]
    .concat();
    c.send(&head).await;
    // Once the request is on its way to the backend, so that its body is being read.
    eventually(WAIT, "the request reaches the backend", || async {
        !rec.bytes().is_empty()
    })
    .await;
    c.send(&h2::frame(h2::DATA, h2::END_STREAM, 1, b"0123456789"))
        .await;
    let (frames, _) = h2::read_frames(&mut c.stream, Duration::from_secs(2)).await;
    assert!(
        frames
            .iter()
            .any(|(t, _, id)| *t == h2::RST_STREAM && *id == 1),
        "the overrun stream was not reset: {frames:?}"
    );
    let seen = String::from_utf8_lossy(&rec.bytes()).into_owned();
    assert!(
        !seen.contains("56789"),
        "the excess reached the backend: {seen:?}"
    );
    eventually(WAIT, "the dropped request is counted", || async {
        s.gw.metric_value("gateway_http_responses_total{code=\"499\"}")
            .await
            == Some(1.0)
    })
    .await;
}

/// HTTP/2 attacks on the connection: rapid reset, a CONTINUATION flood and an HPACK bomb
/// each end the attacker's connection (or its streams) without reaching the backend in
/// bulk, and the gateway goes on serving everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_floods_end_the_attackers_connection() {
    let (s, rec) = stack_with_backend(&[]).await;
    let hello = [h2::PREFACE.to_vec(), h2::frame(h2::SETTINGS, 0, 0, &[])].concat();

    // Rapid reset: 2,000 streams opened and cancelled at once.
    let mut c = RawConn::connect(s.gw.http).await;
    let mut flood = hello.clone();
    for i in 0..2000u32 {
        let id = 2 * i + 1;
        flood.extend(h2::frame(
            h2::HEADERS,
            h2::END_STREAM | h2::END_HEADERS,
            id,
            &h2::get("/up/rr", "h"),
        ));
        flood.extend(h2::frame(h2::RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let _ = c.try_send(&flood).await;
    let (frames, closed) = h2::read_frames(&mut c.stream, WAIT).await;
    assert!(
        closed || frames.iter().any(|(t, _, _)| *t == h2::GOAWAY),
        "rapid reset went on unchecked"
    );
    let reached = rec.requests().len();
    assert!(
        reached < 2000,
        "{reached} of 2,000 reset streams reached the backend"
    );

    // CONTINUATION flood: a header block that never ends.
    rec.clear();
    let mut c = RawConn::connect(s.gw.http).await;
    let _ = c.try_send(&hello).await;
    let _ = c
        .try_send(&h2::frame(
            h2::HEADERS,
            h2::END_STREAM,
            1,
            &h2::get("/up/cont", "h"),
        ))
        .await;
    let filler = h2::literal(0, "x-filler", &"f".repeat(1000));
    for _ in 0..10_000 {
        if c.try_send(&h2::frame(h2::CONTINUATION, 0, 1, &filler))
            .await
            .is_err()
        {
            break;
        }
    }
    let (frames, closed) = h2::read_frames(&mut c.stream, WAIT).await;
    assert!(
        closed || frames.iter().any(|(t, _, _)| *t == h2::GOAWAY),
        "a CONTINUATION flood was read on: {frames:?}"
    );
    assert!(
        rec.requests().is_empty(),
        "an endless header block reached the backend"
    );

    // HPACK bomb: one 4 KiB value put in the dynamic table, then referenced 4,000 times
    // (16 MB decoded from 16 KB sent).
    let mut c = RawConn::connect(s.gw.http).await;
    let mut block = h2::get("/up/bomb", "h");
    block.extend(h2::literal(0x40, "x-bomb", &"b".repeat(4000)));
    block.extend(std::iter::repeat_n(0x80 | 62, 4000));
    let mut bomb = hello.clone();
    bomb.extend(h2::frame(
        h2::HEADERS,
        h2::END_STREAM | h2::END_HEADERS,
        1,
        &block,
    ));
    let _ = c.try_send(&bomb).await;
    let (frames, _) = h2::read_frames(&mut c.stream, Duration::from_secs(3)).await;
    assert!(!frames.is_empty(), "no answer to the bomb");
    assert!(
        rec.requests().iter().all(|r| r.header("x-bomb").len() < 2),
        "the bomb's headers reached the backend"
    );

    // Everyone else is still served.
    assert_eq!(status(&s, &get("/up/after")).await, Some(200));
}
