//! The gateway's own HTTP/1.1 loop (`gateway/src/h1_server.rs`) on raw sockets: what it
//! serves itself (bodiless HTTP/1.1 requests: keepalive, pipelining, HEAD, `Connection:
//! close`, a client that leaves before its answer) and the hand-over to hyper, mid
//! connection, of the first request it does not take.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::raw::RawConn;
use e2e::stack::Stack;
use e2e::{eventually, Backend};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

async fn stack() -> (Stack, Backend) {
    let s = Stack::start(&[]).await;
    let b = Backend::start("b").await;
    s.upstream("up", json!({"nodes": {b.node(): 1}})).await;
    (s, b)
}

async fn handovers(s: &Stack) -> f64 {
    s.metric("gateway_http1_handovers_total").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_requests_are_served_by_the_own_loop_and_the_rest_by_hyper() {
    let (s, _b) = stack().await;
    let before = handovers(&s).await;
    let mut c = RawConn::connect(s.gw.http).await;
    // Two requests in one write (pipelined): two answers, in order.
    c.send(b"GET /up/one HTTP/1.1\r\nHost: h\r\n\r\nGET /up/two HTTP/1.1\r\nHost: h\r\n\r\n")
        .await;
    for want in ["/up/one", "/up/two"] {
        let r = c.response(WAIT).await.expect("an answer");
        assert_eq!(r.status, 200);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["uri"], want);
        assert!(r.header("date").is_some(), "{:?}", r.headers);
        assert_eq!(
            r.header("content-length").map(str::to_string),
            Some(r.body.len().to_string())
        );
        assert!(r.header("connection").is_none(), "{:?}", r.headers);
    }
    // A gateway answer (no route): a JSON error, framed, and the connection goes on.
    c.send(b"GET /nothing-here HTTP/1.1\r\nHost: h\r\n\r\n")
        .await;
    let r = c.response(WAIT).await.expect("an answer");
    assert_eq!(r.status, 404);
    // Content-Length: 0 is no body.
    c.send(b"GET /up/zero HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
        .await;
    assert_eq!(c.response(WAIT).await.unwrap().status, 200);
    assert_eq!(handovers(&s).await, before, "nothing handed to hyper yet");

    // A body: hyper's, on the same connection, from this request on.
    c.send(b"POST /up/post HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    let r = c.response(WAIT).await.expect("hyper answers");
    assert_eq!(r.status, 200);
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["body"], "hello");
    assert_eq!(handovers(&s).await, before + 1.0);
    c.send(b"GET /up/after HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert_eq!(c.response(WAIT).await.unwrap().status, 200);
    assert_eq!(
        handovers(&s).await,
        before + 1.0,
        "one hand-over per connection"
    );
}

/// HEAD keeps the length GET would have and sends no body; the next answer on the
/// connection starts right after the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_have_a_length_and_no_body() {
    let (s, _b) = stack().await;
    let mut c = RawConn::connect(s.gw.http).await;
    c.send(b"HEAD /up/h HTTP/1.1\r\nHost: h\r\n\r\nGET /up/g HTTP/1.1\r\nHost: h\r\n\r\n")
        .await;
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    // Both answers: the HEAD's head, then the GET's head and body.
    while !String::from_utf8_lossy(&seen).contains("\"/up/g\"") {
        let n = tokio::time::timeout(WAIT, c.stream.read(&mut chunk))
            .await
            .expect("answers in time")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&seen).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: "),
        "{head}"
    );
    assert!(
        rest.starts_with("HTTP/1.1 200 OK\r\n"),
        "a body after HEAD: {rest}"
    );
    assert_eq!(
        handovers(&s).await,
        0.0,
        "served by hyper, not the own loop"
    );
}

/// Pipelined requests followed by the client's half-close: each one with more of the
/// client's bytes behind it is answered; only the last, whose answer is owed when the
/// close is seen, is dropped (as hyper drops a request in flight when its client closes
/// with nothing left to read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_before_a_half_close_are_answered() {
    let (s, _b) = stack().await;
    let mut c = RawConn::connect(s.gw.http).await;
    c.send(b"GET /up/1 HTTP/1.1\r\nHost: h\r\n\r\nGET /up/2 HTTP/1.1\r\nHost: h\r\n\r\n")
        .await;
    c.stream.shutdown().await.unwrap();
    let r = c.response(WAIT).await.expect("the first is answered");
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["uri"], "/up/1");
    assert_eq!(handovers(&s).await, 0.0);
}

/// `Connection: close` from the client: the answer says so, and the gateway closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_is_answered_and_honoured() {
    let (s, _b) = stack().await;
    let mut c = RawConn::connect(s.gw.http).await;
    c.send(b"GET /up/x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .await;
    let r = c.response(WAIT).await.expect("an answer");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_within(WAIT).await, "the connection stayed open");
    assert_eq!(
        handovers(&s).await,
        0.0,
        "served by hyper, not the own loop"
    );
}

/// A client that closes before its answer: the request is dropped and counted as 499,
/// and nothing is written to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_before_its_answer_is_counted_499() {
    let s = Stack::start(&[]).await;
    let slow = Backend::start_delayed("slow", Duration::from_secs(3)).await;
    s.upstream(
        "slow",
        json!({"nodes": {slow.node(): 1}, "timeout": {"connect": 1, "send": 10, "read": 10}}),
    )
    .await;
    let before = s.metric("gateway_http_responses_total{code=\"499\"}").await;
    let mut c = tokio::net::TcpStream::connect(s.gw.http).await.unwrap();
    c.write_all(b"GET /slow/x HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(c);
    eventually(WAIT, "the dropped request is counted", || async {
        s.metric("gateway_http_responses_total{code=\"499\"}").await == before + 1.0
    })
    .await;
    assert_eq!(
        handovers(&s).await,
        0.0,
        "served by hyper, not the own loop"
    );
}

/// Reads one chunked answer whole (up to its last chunk) off `c`.
async fn chunked_answer(c: &mut tokio::net::TcpStream) -> String {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        while !got.ends_with(b"0\r\n\r\n") {
            let n = c.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("a whole answer");
    String::from_utf8(got).unwrap()
}

/// A node's answer to a route no plugin reads comes to the client with its header lines as
/// the node wrote them (the names' case too), hop-by-hop lines left out and the framing
/// the gateway's own; on a route with a plugin, through the header map, the same answer.
/// Upstream `name` with `node`, a route `/{name}/*` to it without plugins, and a route
/// `/plugged/*` to it with a plugin that reads and changes the response's headers.
async fn with_and_without_a_plugin(s: &Stack, name: &str, node: &str) {
    let nodes = json!({"nodes": {node: 1}});
    s.admin
        .ok("PUT", &format!("/upstreams/{name}"), Some(nodes))
        .await;
    let route = json!({"uri": format!("/{name}/*"), "upstream_id": name});
    s.admin
        .ok("PUT", &format!("/routes/{name}"), Some(route))
        .await;
    let plugged = json!({
        "uri": "/plugged/*",
        "upstream_id": name,
        "plugins": {"response-rewrite": {"headers": {"set": {"x-added": "1"}}}},
    });
    s.admin.ok("PUT", "/routes/plugged", Some(plugged)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_head_is_passed_on_as_written_when_nothing_reads_it() {
    let s = Stack::start(&[]).await;
    let node = e2e::raw::fixed_node(
        b"HTTP/1.1 200 OK\r\nX-Node-Case: Kept\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\n\
          Trailer: x-t\r\nTransfer-Encoding: chunked\r\nDate: Mon, 07 Dec 2026 00:00:00 GMT\r\n\r\n\
          2\r\nok\r\n0\r\n\r\n",
    )
    .await;
    with_and_without_a_plugin(&s, "fixed", &node.to_string()).await;
    let mut c = tokio::net::TcpStream::connect(s.gw.http).await.unwrap();
    for path in ["/fixed/a", "/fixed/b", "/plugged/a", "/plugged/b"] {
        eventually(WAIT, "routed", || async {
            e2e::raw::exchange(
                s.gw.http,
                format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes(),
            )
            .await
            .is_some_and(|r| r.status == 200)
        })
        .await;
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let text = chunked_answer(&mut c).await;
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, "2\r\nok\r\n0\r\n\r\n", "{text}");
        let lines: Vec<&str> = head.lines().collect();
        assert_eq!(lines[0], "HTTP/1.1 200 OK");
        let mut names: Vec<String> = lines[1..]
            .iter()
            .map(|l| l.split_once(':').unwrap().0.to_ascii_lowercase())
            .collect();
        names.sort();
        let mut want = vec!["date", "transfer-encoding", "x-node-case"];
        if path.starts_with("/plugged") {
            want.push("x-added");
            // The map's path writes names in lower case.
            assert!(head.contains("\r\nx-node-case: Kept"), "{text}");
        } else {
            assert!(head.contains("\r\nX-Node-Case: Kept\r\n"), "{text}");
        }
        want.sort();
        assert_eq!(names, want, "{text}");
        assert!(head.contains("Date: Mon, 07 Dec 2026") || head.contains("date: Mon, 07 Dec 2026"));
    }
    assert_eq!(handovers(&s).await, 0.0);
}

/// The head the node got for the one request `rec` saw since it was cleared.
fn seen_head(rec: &e2e::raw::RecordingBackend) -> String {
    let bytes = rec.bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    text.split_once("\r\n\r\n")
        .map(|(h, _)| h.to_string())
        .unwrap_or(text)
}

/// Its fields as (lower-case name, value), sorted.
fn fields(head: &str) -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    f.sort();
    f
}

/// What the node must get of [`CLIENT_HEAD`], whichever way it went: its fields, the
/// gateway's forwarding headers in place of the client's, no hop-by-hop line.
fn assert_client_head_forwarded(head: &str) {
    let f = fields(head);
    let value = |name: &str| {
        f.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(value("host"), ["Example.COM"], "{head}");
    assert_eq!(value("x-custom-case"), ["Value One"], "{head}");
    assert_eq!(value("cookie"), ["a=1"], "{head}");
    assert_eq!(value("x-forwarded-for"), ["192.0.2.1, 127.0.0.1"], "{head}");
    assert_eq!(value("x-real-ip"), ["127.0.0.1"], "{head}");
    assert_eq!(value("x-forwarded-proto"), ["http"], "{head}");
    assert_eq!(value("x-forwarded-host"), ["Example.COM"], "{head}");
    for gone in ["keep-alive", "te", "connection"] {
        assert!(value(gone).is_empty(), "{gone} passed on: {head}");
    }
}

const CLIENT_HEAD: &str = "Host: Example.COM\r\nX-Custom-Case: Value One\r\n\
    X-Forwarded-For: 192.0.2.1\r\nX-Real-IP: 6.6.6.6\r\nConnection: keep-alive\r\n\
    Keep-Alive: timeout=5\r\nTE: trailers\r\nCookie: a=1\r\nX-Forwarded-Proto: https\r\n\r\n";

/// A request no plugin reads reaches the node with the client's lines as written (their
/// case kept), less the hop-by-hop ones, with the gateway's forwarding headers; with a
/// plugin, the same fields come through the map. `vars` read the head as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_head_reaches_the_node_as_written_when_nothing_reads_it() {
    let s = Stack::start(&[]).await;
    let rec = e2e::raw::RecordingBackend::start().await;
    with_and_without_a_plugin(&s, "rec", &rec.node()).await;
    s.admin
        .ok(
            "PUT",
            "/routes/vars",
            Some(json!({
                "uri": "/vars/*",
                "upstream_id": "rec",
                "vars": [["http_x_custom_case", "==", "Value One"], ["cookie_a", "==", "1"]],
            })),
        )
        .await;
    let mut heads = Vec::new();
    for path in ["/rec/a?q=1", "/plugged/a?q=1", "/vars/a?q=1"] {
        let request = format!("GET {path} HTTP/1.1\r\n{CLIENT_HEAD}");
        eventually(WAIT, "routed", || async {
            e2e::raw::exchange(s.gw.http, request.as_bytes())
                .await
                .is_some_and(|r| r.status == 200)
        })
        .await;
        rec.clear();
        let r = e2e::raw::exchange(s.gw.http, request.as_bytes()).await;
        assert_eq!(r.map(|r| r.status), Some(200));
        heads.push(seen_head(&rec));
    }
    let path_of = |head: &str| head.lines().next().unwrap().to_string();
    for (head, path) in heads
        .iter()
        .zip(["/rec/a?q=1", "/plugged/a?q=1", "/vars/a?q=1"])
    {
        assert_eq!(path_of(head), format!("GET {path} HTTP/1.1"), "{head}");
        assert_client_head_forwarded(head);
    }
    // The same fields either way; only the names' case tells them apart.
    assert_eq!(fields(&heads[0]), fields(&heads[1]));
    assert!(
        heads[0].contains("\r\nX-Custom-Case: Value One\r\n"),
        "{}",
        heads[0]
    );
    assert!(heads[0].starts_with("GET /rec/a?q=1 HTTP/1.1\r\nHost: Example.COM\r\n"));
    assert!(
        heads[1].contains("\r\nx-custom-case: Value One"),
        "{}",
        heads[1]
    );
    assert!(
        heads[2].contains("\r\nX-Custom-Case: Value One\r\n"),
        "{}",
        heads[2]
    );
    // `vars` that do not match the head: no route.
    let other = CLIENT_HEAD.replace("Value One", "Value Two");
    let r = e2e::raw::exchange(
        s.gw.http,
        format!("GET /vars/a HTTP/1.1\r\n{other}").as_bytes(),
    )
    .await;
    assert_eq!(r.map(|r| r.status), Some(404));
    assert_eq!(handovers(&s).await, 0.0);
}

/// A pooled node connection that hyper's client drives (left by a WebSocket handshake the
/// node refused) gets a head kept as bytes as a full header map.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_kept_as_bytes_goes_whole_over_hypers_client() {
    let s = Stack::start(&[]).await;
    let rec = e2e::raw::RecordingBackend::start().await;
    let nodes = json!({"nodes": {rec.node(): 1}});
    s.admin.ok("PUT", "/upstreams/rec", Some(nodes)).await;
    s.admin
        .ok(
            "PUT",
            "/routes/ws",
            Some(json!({"uri": "/ws/*", "upstream_id": "rec", "enable_websocket": true})),
        )
        .await;
    let handshake =
        "GET /ws/a HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    // The node answers the handshake 200 (no upgrade): each connection it came on, now
    // hyper's, goes back to the pool.
    eventually(WAIT, "routed", || async {
        e2e::raw::exchange(s.gw.http, handshake.as_bytes())
            .await
            .is_some_and(|r| r.status == 200)
    })
    .await;
    // A connection goes back to the pool once its answer has ended, which may be a moment
    // after the client has it, and a request that finds none connects anew (an inline
    // connection). So: every attempt must reach the node whole, and one of them must go
    // over a connection hyper's client drives.
    let request = format!("GET /ws/b HTTP/1.1\r\n{CLIENT_HEAD}");
    let mut through_hyper = false;
    for _ in 0..50 {
        let r = e2e::raw::exchange(s.gw.http, handshake.as_bytes()).await;
        assert_eq!(r.map(|r| r.status), Some(200));
        tokio::time::sleep(Duration::from_millis(20)).await;
        rec.clear();
        let r = e2e::raw::exchange(s.gw.http, request.as_bytes()).await;
        assert_eq!(r.map(|r| r.status), Some(200));
        let head = seen_head(&rec);
        assert_client_head_forwarded(&head);
        // hyper's client writes names in lower case: this came through the map.
        if head.contains("\r\nx-custom-case: Value One") {
            through_hyper = true;
            break;
        }
    }
    assert!(
        through_hyper,
        "no request went over a connection hyper's client drives"
    );
}

/// A connection idle for a second leaves its task for the worker's park (issue 16: memory
/// per idle connection) and is served again, on the same socket, when its client sends:
/// after a response, before any request, with a head split across the return. One whose
/// client closes while parked gives its worker slot back; a drain hands parked connections
/// back to tasks, so a request sent in the linger is answered, with `Connection: close`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_parked_and_served_again() {
    let s = Stack::start(&["--workers=1", "--grace-period=5s"]).await;
    let b = Backend::start("b").await;
    s.upstream("up", json!({"nodes": {b.node(): 1}})).await;
    let uri = |r: &e2e::raw::RawResponse| {
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["uri"].clone()
    };
    let (parked, open) = (
        "gateway_connections_parked",
        "gateway_connections_open{worker=\"0\"}",
    );
    // Every open connection parked: the test's and whatever the harness keeps open (its
    // client's pooled connection), all idle.
    let all_parked = || async {
        eventually(WAIT, "every idle connection parked", || async {
            s.metric(parked).await == s.metric(open).await
        })
        .await
    };
    // Whatever the harness left open (its clients' pooled connections).
    let before = s.metric(open).await;
    let mut after_response = RawConn::connect(s.gw.http).await;
    // With an empty line after it, as some clients send: still idle, still parked.
    after_response
        .send(b"GET /up/one HTTP/1.1\r\nHost: h\r\n\r\n\r\n")
        .await;
    assert_eq!(after_response.response(WAIT).await.unwrap().status, 200);
    let mut closing = RawConn::connect(s.gw.http).await;
    closing.send(b"GET /up/c HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert_eq!(closing.response(WAIT).await.unwrap().status, 200);
    let mut silent = RawConn::connect(s.gw.http).await;
    all_parked().await;
    assert_eq!(
        s.metric(open).await - before,
        3.0,
        "parked connections count as open"
    );

    // Back from the park with a head that comes in two writes.
    after_response.send(b"GET /up/two HTTP/1.1\r\nHo").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    after_response.send(b"st: h\r\n\r\n").await;
    let r = after_response.response(WAIT).await.unwrap();
    assert_eq!((r.status, uri(&r)), (200, json!("/up/two")));
    // Never a request before: served as any first request.
    silent
        .send(b"GET /up/first HTTP/1.1\r\nHost: h\r\n\r\n")
        .await;
    let r = silent.response(WAIT).await.unwrap();
    assert_eq!((r.status, uri(&r)), (200, json!("/up/first")));
    // Closed by its client while parked: the gateway closes its side and frees the slot.
    drop(closing);
    eventually(WAIT, "the closed connection's slot given back", || async {
        s.metric(open).await - before == 2.0
    })
    .await;
    // Both idle again: parked again.
    all_parked().await;

    // The drain: parked connections go back to tasks and get the linger to send one more
    // request, which is answered and told to close; the gateway then exits cleanly.
    let mut gw = s.gw;
    gw.proc.signal("TERM");
    // Draining once the listener is closed (it is closed just before connections are
    // told to go); the linger is a second from then.
    eventually(WAIT, "the listener closed", || async {
        tokio::net::TcpStream::connect(gw.http).await.is_err()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    after_response
        .send(b"GET /up/last HTTP/1.1\r\nHost: h\r\n\r\n")
        .await;
    let r = after_response
        .response(WAIT)
        .await
        .expect("answered in the linger");
    assert_eq!((r.status, uri(&r)), (200, json!("/up/last")));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(after_response.closed_within(WAIT).await);
    // Closed at the linger's end (a second), not the grace period's (five): the park let
    // it go when the drain began.
    assert!(
        silent.closed_within(Duration::from_secs(3)).await,
        "the silent one was not closed within the linger"
    );
    let status = gw
        .proc
        .wait_exit(Duration::from_secs(10))
        .expect("did not exit after draining");
    assert!(status.success(), "{status:?}");
}
