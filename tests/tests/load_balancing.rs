//! End-to-end load balancing (issue 4): every method, health checks, priority and zone,
//! against real backends through a real gateway fed by a real etcd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::backend::BackendOptions;
use e2e::stack::Stack;
use e2e::{eventually, free_port, Backend};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

async fn stack(gateway_args: &[&str]) -> Stack {
    Stack::start(gateway_args).await
}

/// Active checks that decide after one probe each way, every second.
fn quick_checks() -> Value {
    json!({"active": {
        "type": "tcp",
        "healthy": {"interval": 1, "successes": 1},
        "unhealthy": {"interval": 1, "tcp_failures": 1},
    }})
}

fn unbound_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundrobin_follows_weights_within_2_percent_over_2000_requests() {
    let s = stack(&[]).await;
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    s.upstream(
        "rr",
        json!({"nodes": {a.node(): 5, b.node(): 3, c.node(): 2}}),
    )
    .await;
    let seen = s.tally("/rr/x", &[], 2000).await;
    for (name, weight) in [("a", 5.0), ("b", 3.0), ("c", 2.0)] {
        let share = *seen.get(name).unwrap_or(&0) as f64 / 2000.0;
        assert!(
            (share - weight / 10.0).abs() <= 0.02,
            "{name}: share {share} for weight {weight}/10 ({seen:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_sends_new_requests_away_from_a_slow_node() {
    let s = stack(&[]).await;
    let slow = Backend::start_with(
        "slow",
        BackendOptions {
            delay: Some(Duration::from_millis(400)),
            ..Default::default()
        },
    )
    .await;
    let fast = Backend::start("fast").await;
    s.upstream(
        "lc",
        json!({"type": "least_conn", "nodes": {slow.node(): 1, fast.node(): 1}}),
    )
    .await;
    let (slow0, fast0) = (slow.hits(), fast.hits());
    // Eight clients in parallel for a second and a half: the slow node keeps requests
    // in flight, so new ones go to the fast node.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = s.client.clone();
        let url = s.gw.url("/lc/x");
        tasks.push(tokio::spawn(async move {
            let mut failed = 0;
            while tokio::time::Instant::now() < deadline {
                let ok = client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == reqwest::StatusCode::OK);
                if !ok {
                    failed += 1;
                }
            }
            failed
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 0, "failed requests");
    }
    let (to_slow, to_fast) = (slow.hits() - slow0, fast.hits() - fast0);
    assert!(to_fast > 100, "fast node got {to_fast}");
    // Round robin would give the slow node half; least_conn only what it can take while
    // its requests are in flight (about one per client per 400 ms).
    assert!(
        (to_slow as f64) < 0.1 * (to_slow + to_fast) as f64,
        "slow node got {to_slow} of {}",
        to_slow + to_fast
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ewma_moves_traffic_away_from_a_node_that_turns_slow() {
    let s = stack(&[]).await;
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    s.upstream(
        "ew",
        json!({"type": "ewma", "nodes": {a.node(): 1, b.node(): 1}}),
    )
    .await;
    let before = s.tally("/ew/x", &[], 100).await;
    assert!(
        before.get("a").copied().unwrap_or(0) > 0 && before.get("b").copied().unwrap_or(0) > 0,
        "both nodes serve while equally fast: {before:?}"
    );
    a.set_delay(Duration::from_millis(200));
    let after = s.tally("/ew/x", &[], 100).await;
    assert_eq!(
        after.keys().filter(|k| k.starts_with('!')).count(),
        0,
        "{after:?}"
    );
    // The first slow answer raises a's estimate to the peak at once.
    assert!(
        after.get("a").copied().unwrap_or(0) <= 3,
        "slow node still chosen: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chash_keeps_each_key_on_one_node_and_remaps_few_when_one_leaves() {
    let s = stack(&[]).await;
    let mut backends = Vec::new();
    for i in 0..10 {
        backends.push(Backend::start(&format!("n{i}")).await);
    }
    let nodes = |bs: &[Backend]| -> Value {
        bs.iter()
            .map(|b| (b.node(), json!(1)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    s.upstream(
        "ch",
        json!({"type": "chash", "hash_on": "vars", "key": "arg_user", "nodes": nodes(&backends)}),
    )
    .await;
    // 100 keys, each asked three times, stay on their node. The remap share is measured
    // over 1,000 keys: with 100 the node that leaves may hold 17 of them by chance alone
    // (its expected share is 10 ± 3), which says nothing about the ring.
    placement(&s, 100, 3).await;
    let before = placement(&s, 1000, 1).await;
    let used: std::collections::HashSet<_> = before.values().collect();
    assert_eq!(
        used.len(),
        10,
        "1,000 keys spread over only {} nodes",
        used.len()
    );

    // One node leaves, as in a scale-down.
    let gone = backends.remove(3);
    let probe_key = (0..1000)
        .find(|k| before[k] == gone.name)
        .expect("some key on the leaving node");
    // PUT, not PATCH: a merge patch of the `nodes` map would keep the leaving node.
    s.admin
        .ok(
            "PUT",
            "/upstreams/ch",
            Some(json!({"type": "chash", "hash_on": "vars", "key": "arg_user", "nodes": nodes(&backends)})),
        )
        .await;
    let probe = format!("/ch/x?user=u{probe_key}");
    eventually(Duration::from_secs(2), "node removal applied", || async {
        s.who(&probe, &[]).await.is_ok_and(|b| b != gone.name)
    })
    .await;
    placement(&s, 100, 3).await;
    let after = placement(&s, 1000, 1).await;
    let moved: Vec<_> = (0..1000).filter(|k| before[k] != after[k]).collect();
    for k in &moved {
        assert_eq!(
            before[k], gone.name,
            "key u{k} moved though its node stayed"
        );
    }
    assert!(
        moved.len() <= 150,
        "{} of 1,000 keys remapped when one of 10 nodes left",
        moved.len()
    );
    assert!(!moved.is_empty(), "the leaving node's keys must move");

    // Header keys: one user, one node; a request without the header falls back to the
    // client address, which is also stable.
    s.upstream(
        "chh",
        json!({"type": "chash", "hash_on": "header", "key": "X-User", "nodes": nodes(&backends)}),
    )
    .await;
    for user in ["alice", "bob", "carol"] {
        let first = s.who("/chh/x", &[("x-user", user)]).await.unwrap();
        for _ in 0..5 {
            assert_eq!(s.who("/chh/x", &[("x-user", user)]).await.unwrap(), first);
        }
    }
    let anon = s.who("/chh/x", &[]).await.unwrap();
    assert_eq!(s.who("/chh/x", &[]).await.unwrap(), anon);
}

/// Where each of `keys` keys lands; with `repeats` > 1, also checks that every key answers
/// from one node each time.
async fn placement(s: &Stack, keys: usize, repeats: usize) -> HashMap<usize, String> {
    let mut at = HashMap::new();
    for k in 0..keys {
        let path = format!("/ch/x?user=u{k}");
        let first = s.who(&path, &[]).await.unwrap();
        for _ in 1..repeats {
            assert_eq!(s.who(&path, &[]).await.unwrap(), first, "key u{k} moved");
        }
        at.insert(k, first);
    }
    at
}

/// One node refuses connections: retries keep every request whole, the active check takes
/// the node out (no more connection attempts), a route and upstream change does not bring
/// it back, and it returns once it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_node_is_retried_then_checked_out_and_back_in() {
    let s = stack(&[]).await;
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let c_addr = unbound_addr();
    let c = c_addr.to_string();
    let upstream = |retries: u32| {
        json!({
            "nodes": {a.node(): 1, b.node(): 1, c.clone(): 1},
            "retries": retries,
            "checks": quick_checks(),
        })
    };
    s.upstream("hc", upstream(2)).await;
    let seen = s.tally("/hc/x", &[], 1000).await;
    assert_eq!(
        seen.keys().filter(|k| k.starts_with('!')).count(),
        0,
        "failed requests: {seen:?}"
    );
    eventually(
        Duration::from_secs(5),
        "node c marked unhealthy",
        || async { s.healthy("hc", &c).await == Some(false) },
    )
    .await;
    let errors = s.metric("gateway_upstream_connect_errors_total").await;
    let seen = s.tally("/hc/x", &[], 200).await;
    assert_eq!(seen.len(), 2, "only a and b answer: {seen:?}");
    assert_eq!(
        s.metric("gateway_upstream_connect_errors_total").await,
        errors,
        "a request was sent to the unhealthy node"
    );

    // Changes to the route and the upstream (nodes unchanged) keep the verdict.
    s.admin
        .ok("PATCH", "/routes/hc", Some(json!({"priority": 3})))
        .await;
    s.admin.ok("PUT", "/upstreams/hc", Some(upstream(1))).await;
    s.admin
        .ok(
            "PUT",
            "/routes/other",
            Some(json!({"uri": "/other", "upstream_id": "hc"})),
        )
        .await;
    eventually(Duration::from_secs(2), "changes applied", || async {
        s.who("/other", &[]).await.is_ok()
    })
    .await;
    assert_eq!(
        s.healthy("hc", &c).await,
        Some(false),
        "health reset by a change"
    );
    let seen = s.tally("/hc/x", &[], 50).await;
    assert_eq!(seen.len(), 2, "{seen:?}");

    // c comes up: the next probes bring it back and it takes traffic again.
    let c_up = Backend::start_on(c_addr, "c", BackendOptions::default()).await;
    eventually(Duration::from_secs(5), "node c healthy again", || async {
        s.healthy("hc", &c).await == Some(true)
    })
    .await;
    let seen = s.tally("/hc/x", &[], 30).await;
    assert!(seen.get("c").copied().unwrap_or(0) >= 5, "{seen:?}");
    assert!(c_up.hits() >= 5);
    let metrics = s.gw.metrics().await;
    assert!(
        metrics.contains(&format!(
            "gateway_upstream_node_healthy{{upstream=\"upstreams/hc\",node=\"{c}\"}} 1"
        )),
        "{metrics}"
    );
}

/// `--zone`: nodes of the gateway's zone take the traffic while healthy; the rest take
/// over when none is, and give it back when it returns. Node `priority` works the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_and_priority_prefer_then_fall_back() {
    let s = stack(&["--zone", "z1"]).await;
    let near = Backend::start("near").await;
    let far = Backend::start("far").await;
    let near_addr = near.addr;
    let node = |b: &SocketAddr, extra: Value| {
        let mut n = json!({"host": b.ip().to_string(), "port": b.port(), "weight": 1});
        n.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        n
    };
    s.upstream(
        "zone",
        json!({"nodes": [node(&near.addr, json!({"zone": "z1"})), node(&far.addr, json!({"zone": "z2"}))],
               "checks": quick_checks()}),
    )
    .await;
    s.upstream(
        "prio",
        json!({"nodes": [node(&near.addr, json!({"priority": 10})), node(&far.addr, json!({"priority": 0}))],
               "checks": quick_checks()}),
    )
    .await;
    for path in ["/zone/x", "/prio/x"] {
        let seen = s.tally(path, &[], 40).await;
        assert_eq!(seen.get("near"), Some(&40), "{path}: {seen:?}");
    }
    drop(near);
    for u in ["zone", "prio"] {
        eventually(Duration::from_secs(5), "near node marked down", || async {
            s.healthy(u, &near_addr.to_string()).await == Some(false)
        })
        .await;
    }
    for path in ["/zone/x", "/prio/x"] {
        let seen = s.tally(path, &[], 40).await;
        assert_eq!(seen.get("far"), Some(&40), "{path}: {seen:?}");
    }
    let _near = Backend::start_on(near_addr, "near", BackendOptions::default()).await;
    for u in ["zone", "prio"] {
        eventually(Duration::from_secs(5), "near node back", || async {
            s.healthy(u, &near_addr.to_string()).await == Some(true)
        })
        .await;
    }
    for path in ["/zone/x", "/prio/x"] {
        let seen = s.tally(path, &[], 40).await;
        assert_eq!(seen.get("near"), Some(&40), "{path}: {seen:?}");
    }
    drop(far);
}

/// A node given by name: every address it resolves to is a node (DNS round robin), and
/// when the records change (after their TTL) traffic follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_name_spreads_over_its_addresses_and_follows_changes() {
    let dns = e2e::dns::DnsServer::start(1).await;
    let s = stack(&["--dns-resolver", &dns.addr.to_string()]).await;
    // Three backends on three loopback addresses, one port.
    let first = Backend::start_on(
        "127.0.0.1:0".parse().unwrap(),
        "ip1",
        BackendOptions::default(),
    )
    .await;
    let port = first.addr.port();
    let mut backends = vec![first];
    for (i, ip) in [(2, [127, 0, 0, 2]), (3, [127, 0, 0, 3])] {
        let addr = SocketAddr::from((ip, port));
        backends.push(Backend::start_on(addr, &format!("ip{i}"), BackendOptions::default()).await);
    }
    let ips = |n: &[u8]| -> Vec<std::net::Ipv4Addr> {
        n.iter()
            .map(|i| std::net::Ipv4Addr::new(127, 0, 0, *i))
            .collect()
    };
    dns.set("svc.test.internal", &ips(&[1, 2, 3]));
    s.upstream(
        "dns",
        json!({"nodes": {format!("svc.test.internal:{port}"): 1}, "pass_host": "node"}),
    )
    .await;
    let seen = s.tally("/dns/x", &[], 300).await;
    for name in ["ip1", "ip2", "ip3"] {
        assert_eq!(seen.get(name), Some(&100), "{seen:?}");
    }
    // pass_host node sends the name, not the address.
    let body: Value = s
        .client
        .get(s.gw.url("/dns/host"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["headers"]["host"], format!("svc.test.internal:{port}"));

    // The service moves off 127.0.0.1: once the 1 s TTL runs out, traffic follows.
    dns.set("svc.test.internal", &ips(&[2, 3]));
    eventually(Duration::from_secs(5), "re-resolved", || async {
        let seen = s.tally("/dns/x", &[], 10).await;
        !seen.contains_key("ip1")
    })
    .await;
    let seen = s.tally("/dns/x", &[], 100).await;
    assert_eq!(seen.get("ip2"), Some(&50), "{seen:?}");
    assert_eq!(seen.get("ip3"), Some(&50), "{seen:?}");
    // The name stops resolving: the last addresses keep serving.
    dns.set("other.test.internal", &ips(&[1]));
    drop(dns);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let seen = s.tally("/dns/x", &[], 20).await;
    assert_eq!(seen.values().sum::<usize>(), 20, "{seen:?}");
    assert!(seen.keys().all(|k| k == "ip2" || k == "ip3"), "{seen:?}");
}

/// Passive checks: a node answering 500 on real traffic is taken out after
/// `unhealthy.http_failures` such answers, with no probe involved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_check_takes_out_a_node_failing_on_real_traffic() {
    let s = stack(&[]).await;
    let good = Backend::start("good").await;
    let bad = Backend::start_with(
        "bad",
        BackendOptions {
            status: Some(500),
            ..Default::default()
        },
    )
    .await;
    // The active probe (once at start, then every 60 s) counts 500 as healthy, so only
    // the passive check can take the node out during the test.
    let checks = json!({
        "active": {"http_path": "/health",
            "healthy": {"interval": 60, "http_statuses": [200, 500], "successes": 1},
            "unhealthy": {"interval": 60, "http_statuses": [503]}},
        "passive": {"unhealthy": {"http_statuses": [500], "http_failures": 3}},
    });
    s.admin
        .ok(
            "PUT",
            "/upstreams/pv",
            Some(json!({"nodes": {good.node(): 1, bad.node(): 1}, "checks": checks})),
        )
        .await;
    s.admin
        .ok(
            "PUT",
            "/routes/pv",
            Some(json!({"uri": "/pv/*", "upstream_id": "pv"})),
        )
        .await;
    eventually(Duration::from_secs(2), "route served", || async {
        s.who("/pv/x", &[]).await.is_ok()
    })
    .await;
    let seen = s.tally("/pv/x", &[], 100).await;
    // Round robin alternates until the third 500 marks the node down.
    assert!(
        seen.get("!500").copied().unwrap_or(0) <= 3,
        "bad node kept receiving traffic: {seen:?}"
    );
    assert_eq!(s.healthy("pv", &bad.node()).await, Some(false));
    let seen = s.tally("/pv/x", &[], 50).await;
    assert_eq!(seen.get("good"), Some(&50), "{seen:?}");
}
