//! Route lookup cost against the number of routes: the router promises it follows the
//! request, not the table, so lookups at 100k routes should cost about what they do at 100.
//!
//! Before the criterion runs it prints the time `Router::build` takes for 100k routes and
//! how much the process grew holding the result (RSS from /proc/self/status, Linux only).
use criterion::{BenchmarkId, Criterion};
use gateway::router::{Request, RouteSpec, Router};
use model::host::HostPattern;
use model::path::PathPattern;
use model::vars::VarSource;
use model::Id;
use std::borrow::Cow;
use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const SIZES: [usize; 3] = [100, 10_000, 100_000];

/// A gateway's worth of variety: mostly host-less API routes (exact, prefix and
/// parameter paths), a share bound to exact hosts and some to wildcard hosts.
fn spec(i: usize) -> Option<RouteSpec<usize>> {
    let (hosts, uri, methods) = match i % 10 {
        0..=3 => (vec![], format!("/api/v{}/svc{i}/items", i % 3), None),
        4 | 5 => (vec![], format!("/static/svc{i}/*"), None),
        6 | 7 => (
            vec![],
            format!("/users/svc{i}/:id/orders/:order"),
            Some(vec!["GET".to_string(), "POST".to_string()]),
        ),
        8 => (
            vec![format!("svc{i}.example.com")],
            "/api/*".to_string(),
            None,
        ),
        _ => (
            vec![format!("*.t{i}.example.net")],
            "/v1/:name".to_string(),
            None,
        ),
    };
    Some(RouteSpec {
        id: Id::parse(&i.to_string()).ok()?,
        hosts: hosts
            .iter()
            .map(|h| HostPattern::parse(h))
            .collect::<Result<_, _>>()
            .ok()?,
        paths: vec![PathPattern::parse(&uri).ok()?],
        methods,
        remote_addrs: Vec::new(),
        vars: None,
        priority: (i % 3) as i64,
        create_time: i as u64,
        value: i,
    })
}

fn specs(n: usize) -> Vec<RouteSpec<usize>> {
    (0..n).filter_map(spec).collect()
}

struct NoVars;

impl VarSource for NoVars {
    fn get(&self, _: &str) -> Option<Cow<'_, str>> {
        None
    }
}

/// Requests aimed at the last routes of each kind (the most recently added, deepest in
/// any list-shaped structure) and at nothing.
fn requests(n: usize) -> Vec<(&'static str, String, String)> {
    let last = |kind: usize| (n - 10 + kind) % n;
    vec![
        (
            "exact",
            String::new(),
            format!("/api/v{}/svc{}/items", last(3) % 3, last(3)),
        ),
        (
            "prefix",
            String::new(),
            format!("/static/svc{}/js/app.js", last(5)),
        ),
        (
            "param",
            String::new(),
            format!("/users/svc{}/42/orders/7", last(7)),
        ),
        (
            "host",
            format!("svc{}.example.com", last(8)),
            "/api/list".to_string(),
        ),
        (
            "wildcard",
            format!("a.b.t{}.example.net", last(9)),
            "/v1/x".to_string(),
        ),
        // Walks deep into the segment trie and the prefix tree before failing.
        (
            "miss",
            "nohost.example.org".to_string(),
            format!("/users/svc{}/42/orders", last(7)),
        ),
    ]
}

fn lookups(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    for n in SIZES {
        let router = Router::build(specs(n));
        for (name, host, path) in requests(n) {
            let req = Request {
                host: &host,
                path: &path,
                method: "GET",
                remote_addr: IpAddr::from([10, 0, 0, 1]),
                vars: &NoVars,
            };
            // A benchmark that silently measured a miss as a hit would mean nothing.
            let found = router.find(&req).map(|m| *m.value);
            assert_eq!(found.is_none(), name == "miss", "{name} at {n}: {found:?}");
            group.bench_with_input(BenchmarkId::new(name, n), &req, |b, req| {
                b.iter(|| router.find(black_box(req)).map(|m| *m.value))
            });
        }
    }
    group.finish();
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The memory the built router holds (measured first, while the heap is fresh) and the
/// build time (best of three), for 100k routes.
fn report_build() {
    let n = 100_000;
    let before = rss_kib();
    let router = Router::build(specs(n));
    let after = rss_kib();
    black_box(&router);
    drop(router);
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let routes = specs(n);
        let start = Instant::now();
        let router = Router::build(routes);
        best = best.min(start.elapsed());
        black_box(&router);
    }
    println!("Router::build, {n} routes: {best:?} (best of 3)");
    if let (Some(before), Some(after)) = (before, after) {
        let grown = after.saturating_sub(before);
        println!(
            "RSS grew by {} MiB holding the router ({} bytes/route; includes allocator slack \
             from the build)",
            grown / 1024,
            grown * 1024 / n as u64,
        );
    }
}

/// What one route change costs at 50k routes: a route on its own host, and one among the
/// host-less majority, whose shared table is the largest there is (`Router::update` copies
/// only that route's pattern lists and the trie nodes above them, so the two should cost
/// about the same).
fn report_update() {
    let n = 50_000;
    let router = Router::build(specs(n));
    // Route 8 is bound to its own exact host; route 0 is host-less.
    for (what, i) in [("own host", 8), ("host-less", 0)] {
        let mut best = Duration::MAX;
        for round in 0..5 {
            let mut changed = spec(i).expect("spec");
            changed.priority = 10 + round;
            let start = Instant::now();
            let next = router.update([(changed.id.clone(), Some(changed))]);
            best = best.min(start.elapsed());
            black_box(&next);
        }
        println!("Router::update, one {what} route among {n}: {best:?} (best of 5)");
    }
}

/// What one route change costs a whole snapshot at 50k routes: `State::apply` of the new
/// value plus the incremental `Snapshot::compile` (router update, upstream map, counts).
fn report_snapshot_change() {
    use gateway::snapshot::Snapshot;
    use gateway::state::{Change, State};
    let n = 50_000;
    let route = |i: usize, v: usize| {
        let uri = match i % 5 {
            0..=2 => format!("/api/v{v}/svc{i}/items"),
            3 => format!("/static/svc{i}/*"),
            _ => format!("/users/svc{i}/:id"),
        };
        format!(r#"{{"uri":"{uri}","upstream_id":"u1"}}"#)
    };
    let mut state = State::default();
    let put = |state: &mut State, key: String, value: String| {
        state.apply(
            "/gw",
            Change::Put {
                key,
                value: value.into_bytes(),
            },
        );
    };
    put(
        &mut state,
        "/gw/upstreams/u1".into(),
        r#"{"nodes":{"127.0.0.1:1":1}}"#.into(),
    );
    for i in 0..n {
        put(&mut state, format!("/gw/routes/{i}"), route(i, 1));
    }
    let dirty = state.take_dirty();
    let start = Instant::now();
    let mut snap = Snapshot::compile(&state, &dirty, 1, &Snapshot::empty());
    println!(
        "Snapshot::compile, {n} host-less routes from scratch: {:?}",
        start.elapsed()
    );
    let mut times = Vec::new();
    for round in 0..200 {
        let i = (round * 7919) % n;
        put(&mut state, format!("/gw/routes/{i}"), route(i, round + 2));
        let start = Instant::now();
        let dirty = state.take_dirty();
        let next = Snapshot::compile(&state, &dirty, 2 + round as i64, &snap);
        times.push(start.elapsed());
        snap = next;
    }
    times.sort();
    println!(
        "Snapshot::compile after one route change among {n}: p50 {:?}, p99 {:?}",
        times[times.len() / 2],
        times[times.len() * 99 / 100]
    );
}

/// Criterion measures each size in its own stretch of time, and on a shared 2-core VM the
/// machine's speed drifts between stretches by more than the effect in question. This
/// interleaves the smallest and largest tables round by round and keeps each one's best
/// round, so the printed ratio compares like with like.
fn report_scaling() {
    let (small, large) = (SIZES[0], SIZES[SIZES.len() - 1]);
    let (small_router, large_router) = (Router::build(specs(small)), Router::build(specs(large)));
    println!("interleaved best-of-15, ns/lookup: kind, {small} routes, {large} routes, ratio");
    for (at_small, at_large) in requests(small).iter().zip(&requests(large)) {
        let pairs = [(&small_router, at_small), (&large_router, at_large)];
        let mut best = [f64::MAX; 2];
        for _ in 0..15 {
            for (slot, (router, (_, host, path))) in best.iter_mut().zip(pairs) {
                let req = Request {
                    host,
                    path,
                    method: "GET",
                    remote_addr: IpAddr::from([10, 0, 0, 1]),
                    vars: &NoVars,
                };
                let rounds = 100_000;
                let start = Instant::now();
                for _ in 0..rounds {
                    black_box(router.find(black_box(&req)).map(|m| *m.value));
                }
                *slot = slot.min(start.elapsed().as_nanos() as f64 / rounds as f64);
            }
        }
        let [s, l] = best;
        println!("  {:8} {s:7.1} {l:7.1} {:5.2}x", at_small.0, l / s);
    }
}

fn main() {
    report_snapshot_change();
    report_update();
    report_build();
    report_scaling();
    let mut c = Criterion::default().configure_from_args();
    lookups(&mut c);
    c.final_summary();
}
