//! Churn harness (issue 3's first piece): keepalive clients send requests continuously
//! through two gateway replicas while a driver changes the configuration through the Admin
//! API; it counts every failed request and measures how long each change takes to be served
//! by every replica.
//!
//! `churn [CLIENTS] [SECONDS] [INTERVAL_MS]` (defaults 64, 20, 100). Starts its own etcd,
//! admin-api, two gateways and three backends on loopback; stops by itself.
//!
//! `churn external ADDR [CLIENTS] [SECONDS]` runs only the clients, against another proxy
//! (nginx, haproxy) whose configuration a script changes meanwhile, for comparison.
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
    /// Answers from a backend the configuration no longer allowed, on every replica.
    stale: AtomicU64,
}

/// Which backends may answer `/target` now: a bit per backend (a=1, b=2, c=4), and an
/// epoch that changes whenever the driver starts a change. 0 means "in transition: any".
#[derive(Default)]
struct Allowed {
    state: AtomicU64,
}

impl Allowed {
    fn load(&self) -> (u64, u64) {
        let s = self.state.load(Relaxed);
        (s >> 8, s & 0xff)
    }
    fn set(&self, epoch: u64, mask: u64) {
        self.state.store(epoch << 8 | mask, Relaxed);
    }
}

fn bit(backend: &str) -> u64 {
    match backend {
        "a" => 1,
        "b" => 2,
        "c" => 4,
        _ => 0,
    }
}

#[tokio::main]
async fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.first().map(String::as_str) == Some("external") {
        return external(&raw[1..]).await;
    }
    let args: Vec<u64> = raw.iter().filter_map(|a| a.parse().ok()).collect();
    let clients = args.first().copied().unwrap_or(64) as usize;
    let seconds = args.get(1).copied().unwrap_or(20).min(60);
    let interval = Duration::from_millis(args.get(2).copied().unwrap_or(100).max(1));

    let etcd = Etcd::start();
    let admin = AdminApi::start(&etcd.url, "/gw", "churn-bench-admin-key");
    let gws = [
        Gateway::start(&etcd.url, "/gw", &[]),
        Gateway::start(&etcd.url, "/gw", &[]),
    ];
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let setup = [
        ("/upstreams/t", json!({"nodes": {a.node(): 1}})),
        ("/upstreams/u2", json!({"nodes": {c.node(): 1}})),
        (
            "/routes/target",
            json!({"uri": "/target", "upstream_id": "t"}),
        ),
    ];
    for (path, body) in setup {
        admin.ok("PUT", path, Some(body)).await;
    }
    for g in &gws {
        g.wait_routes(1).await;
    }

    let counts = Arc::new(Counts::default());
    let allowed = Arc::new(Allowed::default());
    allowed.set(0, bit("a"));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let addr = gws[i % 2].http;
        let (counts, stop, allowed) = (counts.clone(), stop.clone(), allowed.clone());
        tasks.push(tokio::spawn(async move {
            client(addr, counts, stop, allowed).await
        }));
    }

    // The driver: every interval one change, cycling through what real deploys do —
    // unrelated routes come and go, the target's upstream gets a new node and loses the old
    // one (rolling deploy), the target switches to another upstream and back, priorities move.
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut delays: Vec<Duration> = Vec::new();
    let mut step = 0u64;
    let (mut route_up, mut t_nodes) = ("t", vec![&a]);
    while started.elapsed() < Duration::from_secs(seconds) {
        let tick = Instant::now();
        let nodes = |list: &[&Backend]| {
            let m: serde_json::Map<String, serde_json::Value> =
                list.iter().map(|n| (n.node(), json!(1))).collect();
            json!({ "nodes": m })
        };
        let target =
            |up: &str, prio: u64| json!({"uri": "/target", "upstream_id": up, "priority": prio});
        let (path, body) = match step % 12 {
            0 | 6 => (
                format!("/routes/x{step}"),
                Some(json!({"uri": format!("/x{step}"), "upstream_id": "t"})),
            ),
            1 | 7 => (format!("/routes/x{}", step - 1), None),
            2 | 9 => {
                t_nodes = vec![&a, &b];
                ("/upstreams/t".to_string(), Some(nodes(&t_nodes)))
            }
            4 => {
                t_nodes = vec![&b];
                ("/upstreams/t".to_string(), Some(nodes(&t_nodes)))
            }
            10 => {
                t_nodes = vec![&a];
                ("/upstreams/t".to_string(), Some(nodes(&t_nodes)))
            }
            5 => {
                route_up = "u2";
                ("/routes/target".to_string(), Some(target(route_up, step)))
            }
            8 => {
                route_up = "t";
                ("/routes/target".to_string(), Some(target(route_up, step)))
            }
            _ => ("/routes/target".to_string(), Some(target(route_up, step))),
        };
        let mask = if route_up == "u2" {
            bit("c")
        } else {
            t_nodes.iter().map(|n| bit(&n.name)).sum()
        };
        // While the change propagates, any backend of the old or new configuration may answer.
        allowed.set(step * 2 + 1, 0);
        let method = if body.is_some() { "PUT" } else { "DELETE" };
        admin.ok(method, &path, body).await;
        let applied = Instant::now();
        let want = etcd_revision(&http, &etcd.url).await;
        // Propagation: until every replica reports a revision at least the write's.
        for g in &gws {
            while g.status_json().await["revision"].as_i64().unwrap_or(0) < want {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        delays.push(applied.elapsed());
        allowed.set(step * 2 + 2, mask);
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
        "changes: {}  requests ok: {}  failed: {}  reconnects: {}  answers from a backend no longer allowed: {}",
        delays.len(),
        counts.ok.load(Relaxed),
        counts.failed.load(Relaxed),
        counts.reconnects.load(Relaxed),
        counts.stale.load(Relaxed)
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

/// Clients only, against `ADDR`, for `SECONDS`: failures and reconnects.
async fn external(args: &[String]) {
    let Some(addr) = args
        .first()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
    else {
        eprintln!("usage: churn external ADDR [CLIENTS] [SECONDS]");
        std::process::exit(2);
    };
    let clients: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let seconds: u64 = args
        .get(2)
        .and_then(|a| a.parse::<u64>().ok())
        .unwrap_or(20)
        .min(60);
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    // Any backend may answer: the script decides, this side only counts failures.
    let allowed = Arc::new(Allowed::default());
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (counts, stop, allowed) = (counts.clone(), stop.clone(), allowed.clone());
            tokio::spawn(async move { client(addr, counts, stop, allowed).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    println!(
        "requests ok: {}  failed: {}  reconnects: {}",
        counts.ok.load(Relaxed),
        counts.failed.load(Relaxed),
        counts.reconnects.load(Relaxed)
    );
}

/// etcd's current revision, through its JSON gateway (an etcdctl process would take longer
/// than the propagation being measured): a count-only range over "/gw/".."/gw0".
async fn etcd_revision(http: &reqwest::Client, etcd: &str) -> i64 {
    let range = json!({"key": "L2d3Lw==", "range_end": "L2d3MA==", "count_only": true});
    let Ok(resp) = http
        .post(format!("{etcd}/v3/kv/range"))
        .body(range.to_string())
        .send()
        .await
    else {
        return 0;
    };
    let Ok(v) = resp.json::<serde_json::Value>().await else {
        return 0;
    };
    v["header"]["revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// One keepalive connection that never retries: any error or non-200 counts as a failure,
/// and a connection the gateway closed is reopened (and counted).
async fn client(
    addr: std::net::SocketAddr,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
    allowed: Arc<Allowed>,
) {
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
            let before = allowed.load();
            match tx.send_request(req).await {
                Ok(resp) if resp.status() == 200 => {
                    let backend = resp
                        .headers()
                        .get("x-backend")
                        .and_then(|v| v.to_str().ok())
                        .map(bit)
                        .unwrap_or(0);
                    let _ = resp.into_body().collect().await;
                    counts.ok.fetch_add(1, Relaxed);
                    // Only judged when one settled configuration covered the whole exchange.
                    let (epoch, mask) = allowed.load();
                    if (epoch, mask) == before && mask != 0 && backend & mask == 0 {
                        counts.stale.fetch_add(1, Relaxed);
                    }
                }
                _ => {
                    counts.failed.fetch_add(1, Relaxed);
                    break;
                }
            }
        }
    }
}
