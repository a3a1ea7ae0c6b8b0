//! Churn harness (issue 3's first piece): keepalive clients send requests continuously
//! through two gateway replicas while a driver changes the configuration through the Admin
//! API; it counts every failed request and measures how long each change takes to be served
//! by every replica.
//!
//! `churn [CLIENTS] [SECONDS] [INTERVAL_MS]` (defaults 64, 20, 100). Starts its own etcd,
//! admin-api, two gateways and two backends on loopback; stops by itself.
use bytes::Bytes;
use e2e::{AdminApi, Backend, Etcd, Gateway};
use http_body_util::{BodyExt, Empty};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    reconnects: AtomicU64,
}

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let clients = args.first().copied().unwrap_or(64) as usize;
    let seconds = args.get(1).copied().unwrap_or(20).min(60);
    let interval = Duration::from_millis(args.get(2).copied().unwrap_or(100).max(1));

    let etcd = Etcd::start();
    let admin = AdminApi::start(&etcd.url, "/gw", "churn-key");
    let gws = [
        Gateway::start(&etcd.url, "/gw", &[]),
        Gateway::start(&etcd.url, "/gw", &[]),
    ];
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    admin
        .ok("PUT", "/upstreams/a", Some(json!({"nodes": {a.node(): 1}})))
        .await;
    admin
        .ok("PUT", "/upstreams/b", Some(json!({"nodes": {b.node(): 1}})))
        .await;
    admin
        .ok(
            "PUT",
            "/routes/target",
            Some(json!({"uri": "/target", "upstream_id": "a"})),
        )
        .await;
    for g in &gws {
        g.wait_routes(1).await;
    }

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let addr = gws[i % 2].http;
        let (counts, stop) = (counts.clone(), stop.clone());
        tasks.push(tokio::spawn(
            async move { client(addr, counts, stop).await },
        ));
    }

    // The driver: every interval one change, cycling through the kinds a real deploy makes.
    let started = Instant::now();
    let mut delays: Vec<Duration> = Vec::new();
    let mut step = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        let tick = Instant::now();
        let (path, body) = match step % 4 {
            0 => (
                format!("/routes/x{step}"),
                Some(json!({"uri": format!("/x{step}"), "upstream_id": "a"})),
            ),
            1 => (format!("/routes/x{}", step - 1), None),
            2 => (
                "/routes/target".to_string(),
                Some(
                    json!({"uri": "/target", "upstream_id": if step % 8 == 2 { "b" } else { "a" }}),
                ),
            ),
            _ => (
                "/routes/target".to_string(),
                Some(json!({"uri": "/target", "upstream_id": "a", "priority": step})),
            ),
        };
        let method = if body.is_some() { "PUT" } else { "DELETE" };
        admin.ok(method, &path, body).await;
        let applied = Instant::now();
        let (_, v) = admin.call("GET", "/routes/target", None).await;
        let want = v["modifiedIndex"].as_i64().unwrap_or(0);
        // Propagation: until every replica reports a revision at least the write's.
        for g in &gws {
            while g.status_json().await["revision"].as_i64().unwrap_or(0) < want {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        delays.push(applied.elapsed());
        step += 1;
        if let Some(rest) = interval.checked_sub(tick.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    stop.store(true, Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    delays.sort();
    let pct = |p: f64| {
        delays
            .get(((delays.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "changes: {}  requests ok: {}  failed: {}  reconnects: {}",
        delays.len(),
        counts.ok.load(Relaxed),
        counts.failed.load(Relaxed),
        counts.reconnects.load(Relaxed)
    );
    println!(
        "propagation to every replica: p50 {:?}  p99 {:?}  max {:?}",
        pct(0.5),
        pct(0.99),
        delays.last().copied().unwrap_or_default()
    );
    drop(gws);
    drop(admin);
    drop(etcd);
}

/// One keepalive connection that never retries: any error or non-200 counts as a failure,
/// and a connection the gateway closed is reopened (and counted).
async fn client(addr: std::net::SocketAddr, counts: Arc<Counts>, stop: Arc<AtomicBool>) {
    while !stop.load(Relaxed) {
        let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
            counts.failed.fetch_add(1, Relaxed);
            continue;
        };
        let io = hyper_util::rt::TokioIo::new(stream);
        let Ok((mut tx, conn)) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io).await
        else {
            counts.failed.fetch_add(1, Relaxed);
            continue;
        };
        tokio::spawn(conn);
        while !stop.load(Relaxed) {
            if tx.ready().await.is_err() {
                counts.reconnects.fetch_add(1, Relaxed);
                break;
            }
            let Ok(req) = hyper::Request::get("/target")
                .header("host", "churn")
                .body(Empty::new())
            else {
                return;
            };
            match tx.send_request(req).await {
                Ok(resp) if resp.status() == 200 => {
                    let _ = resp.into_body().collect().await;
                    counts.ok.fetch_add(1, Relaxed);
                }
                _ => {
                    counts.failed.fetch_add(1, Relaxed);
                    break;
                }
            }
        }
    }
}
