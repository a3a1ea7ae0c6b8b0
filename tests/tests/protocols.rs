//! Protocols beyond plain HTTP/1.1 requests, through a real gateway from a real etcd:
//! WebSocket tunnels that outlive configuration changes, gRPC over HTTP/2 with its status
//! and trailers intact, and the `redirect` plugin.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::grpc::proto::echo_client::EchoClient;
use e2e::grpc::proto::EchoRequest;
use e2e::grpc::{GrpcBackend, TRAILER};
use e2e::stack::Stack;
use e2e::ws::WsBackend;
use e2e::{eventually, Backend};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

async fn ws_echo<T>(ws: &mut tokio_tungstenite::WebSocketStream<T>, text: &str) -> String
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(text)).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("an echo within 5 s")
        .expect("the tunnel is open")
        .unwrap();
    reply.into_text().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnel_survives_configuration_changes() {
    let s = Stack::start(&[]).await;
    let (a, b) = (
        WsBackend::start("ws-a").await,
        WsBackend::start("ws-b").await,
    );
    s.admin
        .ok(
            "PUT",
            "/upstreams/ws",
            Some(json!({"nodes": {a.node(): 1}})),
        )
        .await;
    s.admin
        .ok(
            "PUT",
            "/routes/ws",
            Some(json!({"uri": "/ws/*", "upstream_id": "ws", "enable_websocket": true})),
        )
        .await;
    let url = format!("ws://{}/ws/chat", s.gw.http);
    s.gw.wait_routes(1).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    assert_eq!(ws_echo(&mut ws, "hello").await, "ws-a: hello");
    assert_eq!(s.metric("gateway_websockets_open").await, 1.0);

    // Change everything the tunnel was routed by: the route, its upstream's nodes, and
    // unrelated routes. The open tunnel keeps its node; new ones follow the change.
    s.admin
        .ok(
            "PUT",
            "/upstreams/ws",
            Some(json!({"nodes": {b.node(): 1}})),
        )
        .await;
    s.admin
        .ok(
            "PUT",
            "/routes/ws",
            Some(json!({"uri": "/ws/*", "upstream_id": "ws", "enable_websocket": true, "priority": 3})),
        )
        .await;
    for i in 0..20 {
        s.admin
            .ok(
                "PUT",
                &format!("/routes/other-{i}"),
                Some(json!({"uri": format!("/other/{i}"), "upstream_id": "ws"})),
            )
            .await;
    }
    s.gw.wait_routes(21).await;
    for i in 0..5 {
        assert_eq!(
            ws_echo(&mut ws, &format!("after change {i}")).await,
            format!("ws-a: after change {i}")
        );
    }
    let (mut fresh, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    assert_eq!(ws_echo(&mut fresh, "new").await, "ws-b: new");

    // Deleting the route does not cut the tunnel either.
    s.admin.ok("DELETE", "/routes/ws", None).await;
    s.gw.wait_routes(20).await;
    assert_eq!(ws_echo(&mut ws, "still").await, "ws-a: still");
    ws.close(None).await.unwrap();
    fresh.close(None).await.unwrap();
    eventually(Duration::from_secs(3), "tunnels counted closed", || async {
        s.metric("gateway_websockets_open").await == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_needs_enable_websocket() {
    let s = Stack::start(&[]).await;
    let a = WsBackend::start("ws-a").await;
    s.admin
        .ok(
            "PUT",
            "/routes/plain",
            Some(json!({"uri": "/plain", "upstream": {"nodes": {a.node(): 1}}})),
        )
        .await;
    s.gw.wait_routes(1).await;
    // Without the flag the upgrade headers are not forwarded: the node sees a plain GET
    // and refuses it, so the handshake fails rather than tunnelling.
    let err = tokio_tungstenite::connect_async(format!("ws://{}/plain", s.gw.http))
        .await
        .expect_err("no tunnel without enable_websocket");
    assert!(
        matches!(err, tokio_tungstenite::tungstenite::Error::Http(ref r) if r.status() != 101),
        "{err:?}"
    );
    assert_eq!(s.metric("gateway_websockets_open").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_websocket_is_closed_after_the_read_timeout() {
    let s = Stack::start(&[]).await;
    let a = WsBackend::start("ws-a").await;
    s.admin
        .ok(
            "PUT",
            "/routes/ws",
            Some(json!({"uri": "/ws", "enable_websocket": true,
                "timeout": {"connect": 1, "send": 1, "read": 1},
                "upstream": {"nodes": {a.node(): 1}}})),
        )
        .await;
    s.gw.wait_routes(1).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", s.gw.http))
        .await
        .unwrap();
    // Messages closer together than the read timeout keep it open past it.
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            ws_echo(&mut ws, &format!("m{i}")).await,
            format!("ws-a: m{i}")
        );
    }
    // Then silence: the gateway closes both sides.
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the gateway ends an idle tunnel");
    assert!(
        !matches!(end, Some(Ok(Message::Text(_)))),
        "no message expected: {end:?}"
    );
    eventually(
        Duration::from_secs(3),
        "the tunnel counted closed",
        || async { s.metric("gateway_websockets_open").await == 0.0 },
    )
    .await;
}

/// Reads one HTTP/1.1 response with a Content-Length body; returns its head.
async fn read_response(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .expect("a Content-Length");
        if body.len() >= len {
            return head.to_string();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_handshake_on_a_draining_connection_still_upgrades() {
    // One worker, so its two listeners (HTTP, HTTPS) are all that log the drain below.
    let mut s = Stack::start(&["--grace-period=5s", "--workers=1"]).await;
    let ws_node = WsBackend::start("ws-a").await;
    let plain = Backend::start("plain").await;
    s.admin
        .ok(
            "PUT",
            "/routes/ws",
            Some(json!({"uri": "/ws", "enable_websocket": true,
                "upstream": {"nodes": {ws_node.node(): 1}}})),
        )
        .await;
    s.admin
        .ok(
            "PUT",
            "/routes/plain",
            Some(json!({"uri": "/plain", "upstream": {"nodes": {plain.node(): 1}}})),
        )
        .await;
    s.gw.wait_routes(2).await;
    // A keepalive connection with one request behind it…
    let mut stream = tokio::net::TcpStream::connect(s.gw.http).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET /plain HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let head = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // …is told to go once the gateway drains: its next answer carries `Connection: close`,
    // except a 101, which must keep `Connection: upgrade` or the client fails the handshake.
    s.gw.proc.signal("TERM");
    eventually(Duration::from_secs(3), "the gateway drains", || async {
        s.gw.proc.log().matches("telling connections to go").count() == 2
    })
    .await;
    let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://{}/ws", s.gw.http), stream)
        .await
        .expect("the handshake succeeds while draining");
    assert_eq!(resp.status(), 101);
    assert_eq!(ws_echo(&mut ws, "draining").await, "ws-a: draining");
    // The tunnel is part of the drain: it outlives the idle connections' linger (1 s)…
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ws_echo(&mut ws, "later").await, "ws-a: later");
    // …and once it closes nothing is left: the process exits before its 5 s grace period.
    ws.close(None).await.unwrap();
    let exited = s.gw.proc.wait_exit(Duration::from_millis(2500));
    assert!(
        exited.is_some(),
        "the gateway exits once its last tunnel closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_streaming_keep_status_and_trailers() {
    let s = Stack::start(&[]).await;
    let (a, b) = (
        GrpcBackend::start("grpc-a").await,
        GrpcBackend::start("grpc-b").await,
    );
    s.admin
        .ok(
            "PUT",
            "/routes/echo",
            Some(json!({"uri": "/test.echo.Echo/*",
                        "upstream": {"scheme": "grpc", "nodes": {a.node(): 1}}})),
        )
        .await;
    // gRPC routes by path: one method of the service goes elsewhere.
    s.admin
        .ok(
            "PUT",
            "/routes/chat",
            Some(json!({"uri": "/test.echo.Echo/Chat",
                        "upstream": {"scheme": "grpc", "nodes": {b.node(): 1}}})),
        )
        .await;
    s.gw.wait_routes(2).await;
    let mut client = EchoClient::connect(format!("http://{}", s.gw.http))
        .await
        .unwrap();

    let reply = client
        .unary(EchoRequest {
            message: "ping".into(),
            fail_with: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (reply.message.as_str(), reply.served_by.as_str()),
        ("ping", "grpc-a")
    );

    let status = client
        .unary(EchoRequest {
            message: "x".into(),
            fail_with: tonic::Code::NotFound as i32,
        })
        .await
        .expect_err("the node fails the call");
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(status.message(), "failed as asked by grpc-a");
    assert_eq!(status.metadata().get(TRAILER).unwrap(), "grpc-a");

    // Bidirectional: replies interleave with requests, then the call ends with a status
    // carried in the trailers after data frames.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut inbound = client.chat(outbound).await.unwrap().into_inner();
    for word in ["one", "two", "three"] {
        tx.send(EchoRequest {
            message: word.into(),
            fail_with: 0,
        })
        .await
        .unwrap();
        let r = inbound.message().await.unwrap().unwrap();
        assert_eq!((r.message.as_str(), r.served_by.as_str()), (word, "grpc-b"));
    }
    tx.send(EchoRequest {
        message: String::new(),
        fail_with: tonic::Code::Aborted as i32,
    })
    .await
    .unwrap();
    let end = inbound
        .message()
        .await
        .expect_err("the stream ends with a status");
    assert_eq!(end.code(), tonic::Code::Aborted);
    assert_eq!(end.metadata().get(TRAILER).unwrap(), "grpc-b");

    // A clean end of stream carries grpc-status 0.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut inbound = client.chat(outbound).await.unwrap().into_inner();
    tx.send(EchoRequest {
        message: "last".into(),
        fail_with: 0,
    })
    .await
    .unwrap();
    assert_eq!(inbound.message().await.unwrap().unwrap().message, "last");
    drop(tx);
    assert!(inbound.message().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcs_upstream_over_tls_is_verified() {
    let s = Stack::start(&[]).await;
    let ca = e2e::tls::TestCa::new("grpc ca");
    let (cert, key) = ca.leaf(&["grpc.internal"]);
    let node =
        GrpcBackend::start_tls("grpc-tls", e2e::tls::server_config_alpn(&cert, &key, b"h2")).await;
    let upstream = |ca_pem: String| {
        json!({"scheme": "grpcs", "nodes": {node.node(): 1}, "tls": {"ca": ca_pem},
               "pass_host": "rewrite", "upstream_host": "grpc.internal"})
    };
    s.admin
        .ok(
            "PUT",
            "/routes/echo",
            Some(json!({"uri": "/test.echo.Echo/*", "upstream": upstream(ca.pem())})),
        )
        .await;
    s.gw.wait_routes(1).await;
    let mut client = EchoClient::connect(format!("http://{}", s.gw.http))
        .await
        .unwrap();
    let reply = client
        .unary(EchoRequest {
            message: "secure".into(),
            fail_with: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.served_by, "grpc-tls");
    let status = client
        .unary(EchoRequest {
            message: String::new(),
            fail_with: tonic::Code::PermissionDenied as i32,
        })
        .await
        .expect_err("the node fails the call");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(status.metadata().get(TRAILER).unwrap(), "grpc-tls");

    // Trusting another CA, the gateway refuses the node, and tells the gRPC client so
    // with a gRPC status (not an HTTP error page it cannot read).
    let other = e2e::tls::TestCa::new("other ca");
    s.admin
        .ok(
            "PUT",
            "/routes/echo",
            Some(json!({"uri": "/test.echo.Echo/*", "upstream": upstream(other.pem())})),
        )
        .await;
    eventually(Duration::from_secs(3), "untrusted node refused", || async {
        let mut c = client.clone();
        let r = c
            .unary(EchoRequest {
                message: "x".into(),
                fail_with: 0,
            })
            .await;
        matches!(r, Err(ref st) if st.code() == tonic::Code::Unavailable
            && st.message().contains("no upstream node could be reached"))
    })
    .await;
    s.admin.ok("DELETE", "/routes/echo", None).await;
    s.gw.wait_routes(0).await;
    let st = client
        .unary(EchoRequest {
            message: "x".into(),
            fail_with: 0,
        })
        .await
        .expect_err("no route");
    assert_eq!(st.code(), tonic::Code::Unimplemented);
    assert_eq!(st.message(), "404 Route Not Found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_http2_connection_is_retired_after_keepalive_pool_requests() {
    let s = Stack::start(&[]).await;
    let node = GrpcBackend::start("h2").await;
    s.admin
        .ok(
            "PUT",
            "/routes/echo",
            Some(json!({"uri": "/test.echo.Echo/*",
                        "upstream": {"scheme": "grpc", "nodes": {node.node(): 1},
                                     "keepalive_pool": {"requests": 3}}})),
        )
        .await;
    s.gw.wait_routes(1).await;
    let mut client = EchoClient::connect(format!("http://{}", s.gw.http))
        .await
        .unwrap();
    // One at a time, so each call finds the pooled connection: 3 calls per connection.
    for i in 0..7 {
        let reply = client
            .unary(EchoRequest {
                message: format!("call {i}"),
                fail_with: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.message, format!("call {i}"));
    }
    assert_eq!(node.connections(), 3, "7 calls, 3 per connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_http2_connection_does_not_stall_new_calls() {
    let s = Stack::start(&[]).await;
    // One stream per connection: an open call fills the node's only pooled connection.
    let node = GrpcBackend::start_limited("one-stream", Some(1)).await;
    s.admin
        .ok(
            "PUT",
            "/routes/echo",
            Some(json!({"uri": "/test.echo.Echo/*",
                        "timeout": {"connect": 1, "send": 1, "read": 30},
                        "upstream": {"scheme": "grpc", "nodes": {node.node(): 1}}})),
        )
        .await;
    s.gw.wait_routes(1).await;
    let url = format!("http://{}", s.gw.http);
    let mut holder = EchoClient::connect(url.clone()).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut open = holder.chat(outbound).await.unwrap().into_inner();
    tx.send(EchoRequest {
        message: "hold".into(),
        fail_with: 0,
    })
    .await
    .unwrap();
    assert_eq!(open.message().await.unwrap().unwrap().message, "hold");

    // A call with a body cannot get a stream on that connection: the gateway does not
    // queue it there (the pooled connection is not ready within 100 ms) but opens another.
    let mut other = EchoClient::connect(url).await.unwrap();
    let started = std::time::Instant::now();
    let call = other.unary(EchoRequest {
        message: "queued".into(),
        fail_with: 0,
    });
    let reply = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the call is not stuck behind the open one")
        .unwrap()
        .into_inner();
    assert_eq!(reply.message, "queued");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The open call is unaffected.
    tx.send(EchoRequest {
        message: "still".into(),
        fail_with: 0,
    })
    .await
    .unwrap();
    assert_eq!(open.message().await.unwrap().unwrap().message, "still");
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_plugin() {
    let s = Stack::start(&[]).await;
    let backend = Backend::start("plain").await;
    let https_port =
        s.gw.args
            .iter()
            .find_map(|a| a.strip_prefix("--tls-listen="))
            .and_then(|a| a.rsplit_once(':'))
            .map(|(_, p)| p.to_string())
            .unwrap();
    s.admin
        .ok(
            "PUT",
            "/routes/secure",
            Some(
                json!({"uri": "/secure/*", "upstream": {"nodes": {backend.node(): 1}},
                        "plugins": {"redirect": {"http_to_https": true}}}),
            ),
        )
        .await;
    s.admin
        .ok(
            "PUT",
            "/routes/moved",
            Some(json!({"uri": "/old/*", "upstream": {"nodes": {backend.node(): 1}},
                        "plugins": {"redirect": {"regex_uri": ["^/old/(.*)", "/new/$1"], "ret_code": 308,
                                                 "append_query_string": true}}})),
        )
        .await;
    s.gw.wait_routes(2).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .get(s.gw.url("/secure/page?x=1"))
        .header("host", "shop.example.com:9080")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 301);
    assert_eq!(
        resp.headers()["location"],
        format!("https://shop.example.com:{https_port}/secure/page?x=1").as_str()
    );
    let resp = client.get(s.gw.url("/old/a/b?y=2")).send().await.unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(resp.headers()["location"], "/new/a/b?y=2");
    assert_eq!(backend.hits(), 0, "redirects are answered by the gateway");
}
