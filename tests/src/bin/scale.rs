//! Scale-of-change benchmark (issue 3, item 5): with tens of thousands of routes in etcd,
//! how long a gateway takes to become ready, how fast one route change is served by every
//! replica, whether a write that changes nothing rebuilds anything, and what sustained
//! route writes cost the gateway in CPU while it keeps serving traffic.
//!
//! It only uses the binaries, etcd and HTTP, so it measures any version of the gateway.
//! Everything runs on loopback: its own etcd, an in-process echo backend, the admin-api and
//! `--replicas` gateways (binaries beside this one, in `target/<profile>/`). Every phase is
//! bounded and the tool stops what it started on exit, on error and on Ctrl-C/SIGTERM.
//!
//! `scale --help` lists the flags; `bench/scale.sh` builds release binaries and runs it.
// The workspace's rust-version (1.85) predates `u64::is_multiple_of` (1.87).
#![allow(clippy::manual_is_multiple_of)]
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use e2e::{AdminApi, Backend, Etcd, Gateway};
use etcd_client::{Client, Txn, TxnOp};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The etcd prefix every process of the run uses.
const PREFIX: &str = "/gw";
/// `create_time` of the generated routes (fixed, so re-writes can be byte-identical).
const CREATED: u64 = 1_700_000_000;
/// etcd's default `--max-txn-ops`.
const TXN_OPS: usize = 128;
/// How long one change may take to be served before it counts as a timeout.
const SERVE_DEADLINE: Duration = Duration::from_secs(10);
/// How long a replica may take to become ready after its start.
const READY_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Scale of change: cold start, single-change propagation, no-op writes and \
             sustained route writes against real gateway replicas with many routes in etcd."
)]
struct Args {
    /// Routes in etcd (the keepalive target included).
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    routes: u64,
    /// Hosts the routes are spread over (`0`: no route has a host, the worst case).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    hosts: u64,
    /// Gateway replicas.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=8))]
    replicas: u64,
    /// Single changes written directly to etcd (alternately a new route and a modified one).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    changes: u64,
    /// Single changes made through the Admin API.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=1000))]
    admin_changes: u64,
    /// Identical re-writes of existing routes directly to etcd.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    noop_etcd: u64,
    /// Re-PUTs of existing routes through the Admin API with the body they were created with.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=1000))]
    noop_admin: u64,
    /// Route writes per second in the sustained phase.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=5000))]
    writes_per_sec: u64,
    /// Seconds of sustained writes.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
    /// Seconds of traffic without writes before them, to separate serving from rebuilding.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    baseline_seconds: u64,
    /// Keepalive clients requesting an unrelated route, spread over the replicas.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    clients: u64,
    /// Requests per second of each client (`0`: as fast as it can).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    client_rps: u64,
    /// Print every single-change sample to stderr.
    #[arg(long)]
    verbose: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let mut sigterm = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot listen for SIGTERM: {e}");
            std::process::exit(1);
        }
    };
    // Dropping `run` (signal) or returning from it (error) drops the harness' processes,
    // which kills them; a panic unwinds through the same drops.
    let code = tokio::select! {
        r = run(args) => match r {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("scale: {e:#}");
                1
            }
        },
        _ = tokio::signal::ctrl_c() => {
            eprintln!("scale: interrupted, stopping everything it started");
            130
        }
        _ = sigterm.recv() => {
            eprintln!("scale: terminated, stopping everything it started");
            143
        }
    };
    std::process::exit(code);
}

/// The generated configuration: which host and path each route has.
struct Shape {
    hosts: u64,
    per_host: u64,
    node: String,
}

impl Shape {
    fn new(routes: u64, hosts: u64, node: String) -> Shape {
        let per_host = if hosts == 0 {
            routes
        } else {
            routes.div_ceil(hosts)
        };
        Shape {
            hosts,
            per_host,
            node,
        }
    }

    /// Host `h`: its pattern in routes and a name that a request matching it sends.
    /// Every tenth host is a wildcard.
    fn host(&self, h: u64) -> Option<(String, String)> {
        if self.hosts == 0 {
            return None;
        }
        let h = h % self.hosts;
        Some(if h % 10 == 9 {
            (
                format!("*.w{h}.example.com"),
                format!("app.w{h}.example.com"),
            )
        } else {
            (format!("h{h}.example.com"), format!("h{h}.example.com"))
        })
    }

    /// The host index of generated route `k` (1-based; 0 is the keepalive route).
    fn host_of(&self, k: u64) -> u64 {
        (k - 1) / self.per_host
    }

    fn key(id: &str) -> String {
        format!("{PREFIX}/routes/{id}")
    }

    /// Generated route `k` (k ≥ 1) as stored: 60% exact paths, 20% prefixes, 20% parameter
    /// patterns; a third limited to GET/POST; a tenth with an inline upstream, the rest on
    /// the shared one. `uri` overrides the path (a modification), `updated` the update_time.
    fn route(&self, k: u64, uri: Option<&str>, updated: u64) -> String {
        let j = (k - 1) % self.per_host;
        let path = match k % 10 {
            0..=5 => format!("/api/{j}/items"),
            6 | 7 => format!("/static/{j}/*"),
            _ => format!("/v{j}/users/:id"),
        };
        let mut r = json!({
            "id": format!("r{k}"),
            "name": format!("route-{k}"),
            "uri": uri.map(str::to_string).unwrap_or(path),
            "status": 1,
            "priority": 0,
            "create_time": CREATED,
            "update_time": updated,
        });
        if let Some((pattern, _)) = self.host(self.host_of(k)) {
            r["hosts"] = json!([pattern]);
        }
        if k % 3 == 0 {
            r["methods"] = json!(["GET", "POST"]);
        }
        if k % 10 == 3 {
            r["upstream"] = json!({"type": "roundrobin", "nodes": {self.node.clone(): 1}});
        } else {
            r["upstream_id"] = json!("shared");
        }
        r.to_string()
    }

    /// A route that is not part of the generated set (probes, sustained adds).
    fn extra_route(&self, id: &str, uri: &str, host: Option<&str>, updated: u64) -> String {
        let mut r = json!({
            "id": id, "uri": uri, "upstream_id": "shared",
            "create_time": CREATED, "update_time": updated,
        });
        if let Some(h) = host {
            r["hosts"] = json!([h]);
        }
        r.to_string()
    }

    /// Host pattern and request host of the keepalive target.
    fn keepalive_host(&self) -> Option<&'static str> {
        (self.hosts > 0).then_some("keepalive.test")
    }
}

/// A keepalive HTTP/1.1 connection to one replica, reopened after an error.
struct Poller {
    addr: SocketAddr,
    tx: Option<SendRequest<Empty<Bytes>>>,
}

impl Poller {
    fn new(addr: SocketAddr) -> Poller {
        Poller { addr, tx: None }
    }

    /// `GET path` with `Host: host`; the status, or an error (connection dropped).
    async fn get(&mut self, host: &str, path: &str) -> Result<u16> {
        if self.tx.is_none() {
            let stream = tokio::net::TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            let io = hyper_util::rt::TokioIo::new(stream);
            let (tx, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            self.tx = Some(tx);
        }
        let result = async {
            let tx = self.tx.as_mut().context("no connection")?;
            tx.ready().await?;
            let req = hyper::Request::get(path)
                .header("host", host)
                .body(Empty::new())?;
            let resp = tx.send_request(req).await?;
            let status = resp.status().as_u16();
            resp.into_body().collect().await?;
            anyhow::Ok(status)
        }
        .await;
        if result.is_err() {
            self.tx = None;
        }
        result
    }

    /// Polls `path` about every millisecond until it answers 200; the time since `since`,
    /// or `None` after `SERVE_DEADLINE`.
    async fn wait_served(&mut self, host: &str, path: &str, since: Instant) -> Option<Duration> {
        loop {
            if let Ok(200) = self.get(host, path).await {
                return Some(since.elapsed());
            }
            if since.elapsed() > SERVE_DEADLINE {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Latencies of one replica, with the samples that never got served.
#[derive(Default)]
struct Latencies {
    samples: Vec<Duration>,
    timeouts: usize,
}

impl Latencies {
    fn record(&mut self, d: Option<Duration>) {
        match d {
            Some(d) => self.samples.push(d),
            None => {
                self.timeouts += 1;
                self.samples.push(SERVE_DEADLINE);
            }
        }
    }

    /// Nearest-rank percentile.
    fn pct(&self, p: f64) -> Duration {
        let mut s = self.samples.clone();
        s.sort();
        if s.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len());
        s[rank - 1]
    }

    fn row(&self) -> String {
        format!(
            "{} | {} | {} | {} | {}",
            self.samples.len(),
            ms(self.pct(0.5)),
            ms(self.pct(0.99)),
            ms(self.pct(1.0)),
            self.timeouts
        )
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads what the run reports about one replica from its status listener.
struct Status<'a> {
    http: &'a reqwest::Client,
}

impl Status<'_> {
    async fn json(&self, gw: &Gateway) -> Result<Value> {
        Ok(self
            .http
            .get(gw.status_url("/status"))
            .send()
            .await?
            .json()
            .await?)
    }

    /// A sample of `/metrics` without labels, e.g. `gateway_snapshot_builds_total`.
    async fn metric(&self, gw: &Gateway, name: &str) -> Result<f64> {
        let text = self
            .http
            .get(gw.status_url("/metrics"))
            .send()
            .await?
            .text()
            .await?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .with_context(|| format!("{name} is not in /metrics"))
    }

    /// (snapshot builds, seconds spent building) so far.
    async fn builds(&self, gw: &Gateway) -> Result<(f64, f64)> {
        Ok((
            self.metric(gw, "gateway_snapshot_builds_total").await?,
            self.metric(gw, "gateway_snapshot_build_seconds_total")
                .await?,
        ))
    }

    /// (snapshot builds, seconds spent building) of every replica.
    async fn all_builds(&self, gws: &[Gateway]) -> Result<Vec<(f64, f64)>> {
        futures_util::future::try_join_all(gws.iter().map(|g| self.builds(g))).await
    }

    /// Waits, for every replica at once, until it has applied etcd revision `rev`.
    async fn all_caught_up(
        &self,
        gws: &[Gateway],
        rev: i64,
        within: Duration,
    ) -> Result<Vec<Duration>> {
        futures_util::future::try_join_all(gws.iter().map(|g| self.caught_up(g, rev, within))).await
    }

    /// Whether every replica reports revision `rev` within 2 s.
    async fn settled(&self, gws: &[Gateway], rev: i64) -> bool {
        self.all_caught_up(gws, rev, Duration::from_secs(2))
            .await
            .is_ok()
    }

    /// Waits until the replica has applied etcd revision `rev`; how long that took.
    async fn caught_up(&self, gw: &Gateway, rev: i64, within: Duration) -> Result<Duration> {
        let started = Instant::now();
        loop {
            let applied = self.json(gw).await?["revision"].as_i64().unwrap_or(0);
            if applied >= rev {
                return Ok(started.elapsed());
            }
            if started.elapsed() > within {
                bail!("replica at revision {applied} after {within:?}, etcd at {rev}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// user+system CPU time of a process, from `/proc/PID/stat`.
fn cpu_time(pid: u32, tick: f64) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .context("unexpected /proc/PID/stat")?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); `rest` starts at field 3.
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc/PID/stat")?
            .parse::<f64>()?)
    };
    Ok(Duration::from_secs_f64((ticks(11)? + ticks(12)?) / tick))
}

/// Resident memory of a process in MiB, from `/proc/PID/status`.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The 1-minute load average, from `/proc/loadavg`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU".to_string(), |(_, m)| m.trim().to_string());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(String::new(), |kb| {
            format!(", {:.0} GiB", kb / 1024.0 / 1024.0)
        });
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores ({model}){mem}")
}

/// Counters of the keepalive clients.
#[derive(Default)]
struct Traffic {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl Traffic {
    fn read(&self) -> (u64, u64) {
        (self.ok.load(Relaxed), self.failed.load(Relaxed))
    }
}

/// One keepalive client: `GET /keepalive` at `rps` (0: back to back) until `stop`. Any
/// error or non-200 is a failure; the connection is then reopened.
async fn client(
    addr: SocketAddr,
    host: String,
    rps: u64,
    traffic: Arc<Traffic>,
    stop: Arc<AtomicBool>,
) {
    let mut poller = Poller::new(addr);
    let mut tick = (rps > 0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / rps as f64));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    while !stop.load(Relaxed) {
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        match poller.get(&host, "/keepalive").await {
            Ok(200) => traffic.ok.fetch_add(1, Relaxed),
            _ => traffic.failed.fetch_add(1, Relaxed),
        };
    }
}

/// CPU used by each replica over a window, with the busiest one-second sample.
struct CpuWindow {
    cores: Vec<f64>,
    peak: Vec<f64>,
}

/// Samples every replica's CPU time each second for `window`, while `during` runs.
async fn measure_cpu<F: std::future::Future>(
    pids: &[u32],
    tick: f64,
    window: Duration,
    during: F,
) -> Result<(CpuWindow, F::Output)> {
    let read = || -> Result<Vec<Duration>> { pids.iter().map(|p| cpu_time(*p, tick)).collect() };
    let sampler = async {
        let start = (Instant::now(), read()?);
        let mut last = start.clone();
        let mut peak = vec![0.0f64; pids.len()];
        let end = start.0 + window;
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_secs(1).min(end - Instant::now())).await;
            let now = (Instant::now(), read()?);
            let dt = (now.0 - last.0).as_secs_f64();
            if dt >= 0.5 {
                for (i, p) in peak.iter_mut().enumerate() {
                    *p = p.max((now.1[i] - last.1[i]).as_secs_f64() / dt);
                }
            }
            last = now;
        }
        let dt = (last.0 - start.0).as_secs_f64();
        let cores = (0..pids.len())
            .map(|i| (last.1[i] - start.1[i]).as_secs_f64() / dt)
            .collect();
        anyhow::Ok(CpuWindow { cores, peak })
    };
    let (cpu, out) = tokio::join!(sampler, during);
    Ok((cpu?, out))
}

/// Puts `kvs` in transactions of `TXN_OPS`, eight in flight.
async fn bulk_put(client: &Client, kvs: Vec<(String, String)>) -> Result<()> {
    let mut chunks: VecDeque<Vec<TxnOp>> = kvs
        .chunks(TXN_OPS)
        .map(|c| {
            c.iter()
                .map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None))
                .collect()
        })
        .collect();
    let mut inflight = tokio::task::JoinSet::new();
    loop {
        while inflight.len() < 8 {
            let Some(ops) = chunks.pop_front() else { break };
            let mut c = client.clone();
            inflight.spawn(async move { c.txn(Txn::new().and_then(ops)).await });
        }
        match inflight.join_next().await {
            Some(r) => {
                r??;
            }
            None => return Ok(()),
        }
    }
}

/// What one replica's cold start took.
struct Cold {
    listening: Duration,
    ready: Duration,
    builds: f64,
    build_secs: f64,
    start_to_listed: Option<Duration>,
    rss: f64,
}

/// Page size of the reference list (the gateway's own page size at the time of writing).
const LIST_PAGE: i64 = 256;

/// Reads the whole prefix as a gateway's first list does, in pages of `page` keys or in
/// one range (`None`); (requests, time taken).
async fn list_prefix(kv: &Client, page: Option<i64>) -> Result<(u64, Duration)> {
    let mut kv = kv.kv_client().max_decoding_message_size(1 << 30);
    let started = Instant::now();
    let end = format!("{PREFIX}0");
    let mut from = format!("{PREFIX}/").into_bytes();
    let mut requests = 0;
    loop {
        let mut opts = etcd_client::GetOptions::new().with_range(end.as_str());
        if let Some(limit) = page {
            opts = opts.with_limit(limit);
        }
        let resp = kv.get(from.clone(), Some(opts)).await?;
        requests += 1;
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return Ok((requests, started.elapsed())),
        }
    }
}

/// Time between the first JSON log line whose message starts with `from` and the first
/// after it starting with `to` (`None` if either is missing or the format differs).
fn log_span(log: &str, from: &str, to: &str) -> Option<Duration> {
    let at = |l: &str, msg: &str| -> Option<f64> {
        let v: Value = serde_json::from_str(l).ok()?;
        if !v["fields"]["message"].as_str()?.starts_with(msg) {
            return None;
        }
        // "2026-11-27T18:05:19.123456Z": seconds of the day are enough for a span.
        let time = v["timestamp"]
            .as_str()?
            .split_once('T')?
            .1
            .trim_end_matches('Z');
        let mut parts = time.split(':');
        let h: f64 = parts.next()?.parse().ok()?;
        let m: f64 = parts.next()?.parse().ok()?;
        let s: f64 = parts.next()?.parse().ok()?;
        Some(h * 3600.0 + m * 60.0 + s)
    };
    let start = log.lines().find_map(|l| at(l, from))?;
    let end = log.lines().find_map(|l| at(l, to))?;
    let span = if end >= start {
        end - start
    } else {
        end + 86_400.0 - start
    };
    Some(Duration::from_secs_f64(span))
}

async fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let load_before = load_average();
    let tick = clock_ticks();
    let http = reqwest::Client::new();
    let status = Status { http: &http };
    let command = std::env::args()
        .map(|a| {
            if a.contains(char::is_whitespace) {
                format!("{a:?}")
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ");

    eprintln!("starting etcd, the admin-api and the echo backend");
    let etcd = Etcd::start();
    let mut kv = Client::connect([etcd.url.as_str()], None)
        .await
        .context("connecting to etcd")?;
    let backend = Backend::start("echo").await;
    let admin = AdminApi::start(&etcd.url, PREFIX, "scale-bench-admin-key");
    let shape = Shape::new(args.routes, args.hosts, backend.node());

    // 1. The configuration, written straight to etcd.
    let load = Instant::now();
    let mut kvs = Vec::with_capacity(args.routes as usize + 1);
    kvs.push((
        format!("{PREFIX}/upstreams/shared"),
        json!({"id": "shared", "type": "roundrobin", "nodes": {backend.node(): 1},
               "create_time": CREATED, "update_time": CREATED})
        .to_string(),
    ));
    kvs.push((
        Shape::key("keepalive"),
        shape.extra_route("keepalive", "/keepalive", shape.keepalive_host(), CREATED),
    ));
    // Current value of every generated route, for modifications and identical re-writes.
    let mut values: Vec<String> = (0..args.routes)
        .map(|k| {
            if k == 0 {
                String::new()
            } else {
                shape.route(k, None, CREATED)
            }
        })
        .collect();
    for (k, v) in values.iter().enumerate().skip(1) {
        kvs.push((Shape::key(&format!("r{k}")), v.clone()));
    }
    let bytes: usize = kvs.iter().map(|(k, v)| k.len() + v.len()).sum();
    bulk_put(&kv, kvs).await.context("bulk load")?;
    let load_took = load.elapsed();
    let mut lists = Vec::new();
    for page in [Some(LIST_PAGE), Some(8 * LIST_PAGE), None] {
        let (requests, took) = list_prefix(&kv, page).await?;
        lists.push(match page {
            Some(n) => format!("{requests} pages of {n} keys in {}", ms(took)),
            None => format!("one unpaged range in {}", ms(took)),
        });
    }
    eprintln!(
        "wrote {} routes ({:.1} MiB) in {load_took:.1?}",
        args.routes,
        bytes as f64 / 1048576.0
    );

    // 2. Cold start, one replica after the other.
    let mut gws = Vec::new();
    let mut cold = Vec::new();
    for i in 0..args.replicas {
        let spawned = Instant::now();
        // JSON logs: their timestamps split the cold start (see `log_span`).
        let gw = Gateway::start(&etcd.url, PREFIX, &["--log-format=json"]);
        let listening = spawned.elapsed();
        loop {
            let ready = matches!(
                http.get(gw.status_url("/readyz")).send().await,
                Ok(r) if r.status() == 200
            );
            if ready {
                break;
            }
            if spawned.elapsed() > READY_DEADLINE {
                bail!("replica {i} not ready after {READY_DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ready = spawned.elapsed();
        let routes = status.json(&gw).await?["routes"].as_u64().unwrap_or(0);
        if routes != args.routes {
            bail!(
                "replica {i} is ready with {routes} routes, {} expected",
                args.routes
            );
        }
        let (builds, build_secs) = status.builds(&gw).await?;
        eprintln!("replica {i}: ready in {ready:.2?} with {routes} routes");
        cold.push(Cold {
            listening,
            ready,
            builds,
            build_secs,
            start_to_listed: log_span(&gw.proc.log(), "gateway starting", "listed configuration"),
            rss: rss_mib(gw.proc.pid()),
        });
        gws.push(gw);
    }

    // 3. Single changes, each served by every replica.
    eprintln!("{} single changes through etcd", args.changes);
    let mut pollers: Vec<Poller> = gws.iter().map(|g| Poller::new(g.http)).collect();
    let changes_from = status.all_builds(&gws).await?;
    let mut direct: Vec<Latencies> = gws.iter().map(|_| Latencies::default()).collect();
    let (mut added, mut modified) = (0, 0);
    let generated = args.routes - 1;
    for s in 0..args.changes {
        let (key, value, host, path) = if s % 2 == 0 {
            let path = format!("/probe/n{s}");
            let host = shape.host(s * 37);
            let value = shape.extra_route(
                &format!("p{s}"),
                &path,
                host.as_ref().map(|h| h.0.as_str()),
                now_secs(),
            );
            added += 1;
            (Shape::key(&format!("p{s}")), value, host, path)
        } else {
            let k = 1 + (s * 7919) % generated;
            let path = format!("/probe/m{s}");
            let value = shape.route(k, Some(&path), now_secs());
            values[k as usize] = value.clone();
            modified += 1;
            (
                Shape::key(&format!("r{k}")),
                value,
                shape.host(shape.host_of(k)),
                path,
            )
        };
        let request_host = host.map_or("probe.test".to_string(), |h| h.1);
        kv.put(key, value, None).await?;
        let put = Instant::now();
        let served = futures_util::future::join_all(
            pollers
                .iter_mut()
                .map(|p| p.wait_served(&request_host, &path, put)),
        )
        .await;
        if args.verbose {
            eprintln!("change {s} ({path}): {served:?}");
        }
        for (lat, d) in direct.iter_mut().zip(served) {
            lat.record(d);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let changes_to = status.all_builds(&gws).await?;
    eprintln!(
        "{} single changes through the Admin API",
        args.admin_changes
    );
    let mut via_admin: Vec<Latencies> = gws.iter().map(|_| Latencies::default()).collect();
    for s in 0..args.admin_changes {
        let path = format!("/probe/a{s}");
        let host = shape.host(s * 53);
        let mut body = json!({"uri": path, "upstream_id": "shared"});
        if let Some((pattern, _)) = &host {
            body["hosts"] = json!([pattern]);
        }
        let (code, resp) = admin
            .call("PUT", &format!("/routes/a{s}"), Some(body))
            .await;
        if !(200..300).contains(&code) {
            bail!("Admin API PUT /routes/a{s}: {code} {resp}");
        }
        let done = Instant::now();
        let request_host = host.map_or("probe.test".to_string(), |h| h.1);
        let served = futures_util::future::join_all(
            pollers
                .iter_mut()
                .map(|p| p.wait_served(&request_host, &path, done)),
        )
        .await;
        for (lat, d) in via_admin.iter_mut().zip(served) {
            lat.record(d);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 4. Writes that change nothing.
    eprintln!("no-op writes");
    let noop_bodies: Vec<(String, Value)> = (0..args.noop_admin)
        .map(|i| {
            let mut body = json!({"uri": format!("/adm/{i}"), "upstream_id": "shared"});
            if let Some((pattern, _)) = shape.host(i * 11) {
                body["hosts"] = json!([pattern]);
            }
            (format!("/routes/noop{i}"), body)
        })
        .collect();
    for (path, body) in &noop_bodies {
        admin.ok("PUT", path, Some(body.clone())).await;
    }
    let rev = kv.get("probe-revision", None).await?;
    let rev = rev.header().map_or(0, |h| h.revision());
    status.all_caught_up(&gws, rev, SERVE_DEADLINE).await?;
    let before: Vec<(f64, f64)> = status.all_builds(&gws).await?;
    // Each write is applied by every replica before the next one, so that no batching can
    // hide a rebuild: the build count then says how many writes caused one. A gateway that
    // does not advance its reported revision for a write it ignores ends the spacing.
    let mut spaced = true;
    for i in 0..args.noop_etcd {
        let k = 1 + (i * 104_729 + 17) % generated;
        let r = kv
            .put(
                Shape::key(&format!("r{k}")),
                values[k as usize].clone(),
                None,
            )
            .await?;
        spaced = spaced
            && status
                .settled(&gws, r.header().map_or(0, |h| h.revision()))
                .await;
    }
    let etcd_spaced = spaced;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_etcd: Vec<(f64, f64)> = status.all_builds(&gws).await?;
    let mut admin_changed_bytes = 0;
    spaced = true;
    for (path, body) in &noop_bodies {
        let key = format!("{PREFIX}{path}");
        let old = kv.get(key.as_str(), None).await?;
        let old = old.kvs().first().map(|k| k.value().to_vec());
        admin.ok("PUT", path, Some(body.clone())).await;
        let new = kv.get(key.as_str(), None).await?;
        if new.kvs().first().map(|k| k.value().to_vec()) != old {
            admin_changed_bytes += 1;
        }
        spaced = spaced
            && status
                .settled(&gws, new.header().map_or(0, |h| h.revision()))
                .await;
    }
    let admin_spaced = spaced;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_admin: Vec<(f64, f64)> = status.all_builds(&gws).await?;

    // 5. Sustained writes while keepalive clients are served.
    eprintln!(
        "traffic: {} clients at {} req/s each; {} s without writes, then {} writes/s for {} s",
        args.clients, args.client_rps, args.baseline_seconds, args.writes_per_sec, args.seconds
    );
    let pids: Vec<u32> = gws.iter().map(|g| g.proc.pid()).collect();
    let traffic = Arc::new(Traffic::default());
    let stop = Arc::new(AtomicBool::new(false));
    let ka_host = shape
        .keepalive_host()
        .unwrap_or("keepalive.test")
        .to_string();
    let clients: Vec<_> = (0..args.clients)
        .map(|i| {
            let addr = gws[(i % args.replicas) as usize].http;
            tokio::spawn(client(
                addr,
                ka_host.clone(),
                args.client_rps,
                traffic.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = traffic.read();
    let (idle_cpu, ()) = measure_cpu(
        &pids,
        tick,
        Duration::from_secs(args.baseline_seconds),
        async {},
    )
    .await?;
    let t1 = traffic.read();
    let builds0: Vec<(f64, f64)> = status.all_builds(&gws).await?;
    let window = Duration::from_secs(args.seconds);
    let writer = Writer {
        kv: kv.clone(),
        shape: &shape,
        generated,
        max_rev: Arc::new(AtomicI64::new(0)),
        ok: Arc::new(AtomicU64::new(0)),
        failed: Arc::new(AtomicU64::new(0)),
    };
    let (busy_cpu, writes) =
        measure_cpu(&pids, tick, window, writer.run(args.writes_per_sec, window)).await?;
    let t2 = traffic.read();
    let builds1: Vec<(f64, f64)> = status.all_builds(&gws).await?;
    let written_rev = writes.max_rev;
    let catch_up = status
        .all_caught_up(&gws, written_rev, Duration::from_secs(60))
        .await?;
    stop.store(true, Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let t3 = traffic.read();

    // 6. The summary.
    let logs: Vec<(usize, usize)> = gws
        .iter()
        .map(|g| {
            let log = g.proc.log();
            let level = |l: &str| log.lines().filter(|x| x.contains(l)).count();
            (level("\"level\":\"WARN\""), level("\"level\":\"ERROR\""))
        })
        .collect();
    let total = started.elapsed();
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "### Scale of change: {} routes, {} hosts\n",
        args.routes, args.hosts
    ));
    line(format!("- command: `{command}`"));
    line(format!(
        "- machine: {}; load average {load_before} at the start, {} at the end (the cores are shared with other work)",
        machine(),
        load_average()
    ));
    line(format!(
        "- shape: {} routes in etcd ({} generated + 1 keepalive target), {}; 60% exact, 20% prefix, 20% parameter paths, a third with `methods`, a tenth with an inline upstream, the rest on one shared upstream; {:.1} MiB of values",
        args.routes,
        generated,
        if args.hosts == 0 {
            "no hosts at all".to_string()
        } else {
            format!("over {} hosts ({} routes each, every tenth host a wildcard)", args.hosts, shape.per_host)
        },
        bytes as f64 / 1048576.0
    ));
    line(format!(
        "- bulk load into etcd: {load_took:.1?} (transactions of {TXN_OPS} puts)"
    ));
    line(format!("- whole run: {total:.1?}\n"));

    line("Cold start (spawn → status port open → `/readyz` 200 with every route; replicas started one after the other):\n".into());
    line("| replica | status port open | ready | of which connect + list + parse | of which snapshot build | builds | RSS after |".into());
    line("|---|---:|---:|---:|---:|---:|---:|".into());
    for (i, c) in cold.iter().enumerate() {
        let build = Duration::from_secs_f64(c.build_secs);
        line(format!(
            "| {i} | {} | **{}** | {} | {} | {} | {:.0} MiB |",
            ms(c.listening),
            ms(c.ready),
            c.start_to_listed
                .map_or("—".to_string(), |d| ms(d.saturating_sub(build))),
            ms(build),
            c.builds,
            c.rss
        ));
    }
    line(String::new());
    line(format!(
        "(\"connect + list + parse\" is the time between the gateway's `gateway starting` and `listed configuration` log lines less the build time. For reference, this tool reads the same prefix from etcd, without parsing, as {}.)\n",
        lists.join("; ")
    ));
    line(format!(
        "Single change → served (time from the write's acknowledgement to the first 200 for the changed path, polled every ~1 ms over keepalive; {added} new routes and {modified} modified ones via etcd, alternating):\n"
    ));
    line("| write | replica | samples | p50 | p99 | max | not served in 10 s |".into());
    line("|---|---|---:|---:|---:|---:|---:|".into());
    for (i, l) in direct.iter().enumerate() {
        line(format!("| etcd put | {i} | {} |", l.row()));
    }
    for (i, l) in via_admin.iter().enumerate() {
        line(format!("| Admin API PUT (new route) | {i} | {} |", l.row()));
    }
    line(String::new());
    line(format!(
        "Snapshot builds during the etcd changes: {}.\n",
        changes_from
            .iter()
            .zip(&changes_to)
            .enumerate()
            .map(|(i, (a, b))| {
                let n = b.0 - a.0;
                format!(
                    "replica {i}: {n} builds, {:.0} ms each on average",
                    if n > 0.0 {
                        (b.1 - a.1) * 1000.0 / n
                    } else {
                        0.0
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    ));
    let spacing = |ok: bool| {
        if ok {
            "each applied by every replica before the next"
        } else {
            "**not spaced**: a replica did not report the write's revision within 2 s"
        }
    };
    line(format!(
        "No-op writes (snapshot builds counted in `gateway_snapshot_builds_total`; straight to etcd: {}; Admin API: {}; counted 1 s after the last):\n",
        spacing(etcd_spaced),
        spacing(admin_spaced)
    ));
    line("| writes | replica | snapshot builds caused | build time |".into());
    line("|---|---|---:|---:|".into());
    for (i, ((b, e), a)) in before.iter().zip(&after_etcd).zip(&after_admin).enumerate() {
        line(format!(
            "| {} identical re-PUTs straight to etcd | {i} | **{}** | {:.0} ms |",
            args.noop_etcd,
            e.0 - b.0,
            (e.1 - b.1) * 1000.0
        ));
        line(format!(
            "| {} Admin API re-PUTs with the creating body ({admin_changed_bytes} stored values changed: `update_time`) | {i} | **{}** | {:.0} ms |",
            args.noop_admin,
            a.0 - e.0,
            (a.1 - e.1) * 1000.0
        ));
    }
    line(String::new());
    let rate = writes.ok as f64 / window.as_secs_f64();
    line(format!(
        "Sustained writes: {} s of traffic alone, then {} route writes/s for {} s straight to etcd (modify 50%, add 25%, delete 25%); {} writes acknowledged ({rate:.1}/s), {} failed. {} keepalive clients on `/keepalive`, {} req/s each, spread over the replicas:\n",
        args.baseline_seconds, args.writes_per_sec, args.seconds, writes.ok, writes.failed, args.clients,
        if args.client_rps == 0 { "unpaced".to_string() } else { args.client_rps.to_string() }
    ));
    line("| replica | CPU, traffic only | CPU, traffic + writes (peak 1 s) | snapshot builds | build time | catch-up after the last write |".into());
    line("|---|---:|---:|---:|---:|---:|".into());
    for i in 0..gws.len() {
        line(format!(
            "| {i} | {:.3} cores | **{:.3} cores** ({:.2}) | {} | {:.1} s | {} |",
            idle_cpu.cores[i],
            busy_cpu.cores[i],
            busy_cpu.peak[i],
            builds1[i].0 - builds0[i].0,
            builds1[i].1 - builds0[i].1,
            ms(catch_up[i])
        ));
    }
    line(String::new());
    line(format!(
        "Traffic: traffic only {} ok / {} failed; during writes {} ok / {} failed; whole run {} ok / **{} failed**.",
        t1.0 - t0.0,
        t1.1 - t0.1,
        t2.0 - t1.0,
        t2.1 - t1.1,
        t3.0,
        t3.1
    ));
    line(format!(
        "Gateway logs (WARN / ERROR lines): {}.",
        logs.iter()
            .enumerate()
            .map(|(i, (w, e))| format!("replica {i}: {w} / {e}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    print!("{out}");
    drop(gws);
    drop(admin);
    drop(etcd);
    Ok(())
}

/// What the sustained writer did.
struct Written {
    ok: u64,
    failed: u64,
    max_rev: i64,
}

/// The sustained writer: route writes paced evenly, each in its own task so that a slow
/// acknowledgement does not slow the pace (at most 256 in flight).
struct Writer<'a> {
    kv: Client,
    shape: &'a Shape,
    generated: u64,
    max_rev: Arc<AtomicI64>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl Writer<'_> {
    async fn run(self, per_sec: u64, window: Duration) -> Written {
        let started = Instant::now();
        // Burst: a late tick is caught up at once, so the average rate holds on a busy machine.
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let limit = Arc::new(tokio::sync::Semaphore::new(256));
        let mut added: VecDeque<String> = VecDeque::new();
        let mut tasks = tokio::task::JoinSet::new();
        let mut n: u64 = 0;
        while started.elapsed() < window {
            tick.tick().await;
            if started.elapsed() >= window {
                break;
            }
            n += 1;
            // modify, add, modify, delete (an added route; add when none is left).
            let op = match n % 4 {
                1 | 3 => {
                    let k = 1 + (n * 48_271) % self.generated;
                    let uri = format!("/w/{n}");
                    Op::Put(
                        Shape::key(&format!("r{k}")),
                        self.shape.route(k, Some(&uri), now_secs()),
                    )
                }
                0 if !added.is_empty() => match added.pop_front() {
                    Some(id) => Op::Delete(Shape::key(&id)),
                    None => continue,
                },
                _ => {
                    let id = format!("w{n}");
                    let host = self.shape.host(n);
                    let value = self.shape.extra_route(
                        &id,
                        &format!("/w/{n}"),
                        host.as_ref().map(|h| h.0.as_str()),
                        now_secs(),
                    );
                    added.push_back(id.clone());
                    Op::Put(Shape::key(&id), value)
                }
            };
            let Ok(permit) = limit.clone().acquire_owned().await else {
                break;
            };
            let mut kv = self.kv.clone();
            let (max_rev, ok, failed) =
                (self.max_rev.clone(), self.ok.clone(), self.failed.clone());
            tasks.spawn(async move {
                let rev = match op {
                    Op::Put(k, v) => kv
                        .put(k, v, None)
                        .await
                        .map(|r| r.header().map(|h| h.revision())),
                    Op::Delete(k) => kv
                        .delete(k, None)
                        .await
                        .map(|r| r.header().map(|h| h.revision())),
                };
                match rev {
                    Ok(r) => {
                        ok.fetch_add(1, Relaxed);
                        max_rev.fetch_max(r.unwrap_or(0), Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Relaxed);
                    }
                }
                drop(permit);
            });
        }
        while tasks.join_next().await.is_some() {}
        Written {
            ok: self.ok.load(Relaxed),
            failed: self.failed.load(Relaxed),
            max_rev: self.max_rev.load(Relaxed),
        }
    }
}

enum Op {
    Put(String, String),
    Delete(String),
}
