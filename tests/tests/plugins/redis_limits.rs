//! `limit-count` with `policy: redis` end to end, against a real `redis-server`: two
//! gateway replicas share one count under concurrent load, a window resets on time, and
//! Redis going away never hangs a request (`allow_degradation` decides pass or 500).
use super::{env, WAIT};
use e2e::{eventually, Gateway, Redis, RedisCluster};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn limited(redis: &Redis, uri: &str, count: u64, window: u64, extra: Value) -> Value {
    let mut conf = json!({"count": count, "time_window": window, "key_type": "var",
        "key": "http_x_k", "policy": "redis", "redis_host": "127.0.0.1",
        "redis_port": redis.port, "redis_timeout": 300, "rejected_code": 429});
    if let (Some(c), Some(x)) = (conf.as_object_mut(), extra.as_object()) {
        c.extend(x.clone());
    }
    json!({"uri": uri, "upstream_id": "rec", "plugins": {"limit-count": conf}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_count_in_redis_is_one_count_for_every_replica() {
    let mut redis = Redis::start();
    let e = env().await;
    let gw2 = Gateway::start(&e.s.etcd.url, "/gw", &[]);
    gw2.wait_ready().await;
    let gws = [&e.s.gw, &gw2];
    const LIMIT: u64 = 300;
    e.s.admin
        .ok(
            "PUT",
            "/routes/shared",
            Some(limited(&redis, "/shared", LIMIT, 60, json!({}))),
        )
        .await;
    // Both replicas serve it (each probe with a key of its own).
    for (i, gw) in gws.iter().enumerate() {
        eventually(WAIT, "the route is served", || async {
            e.client
                .get(gw.url("/shared"))
                .header("x-k", format!("probe-{i}"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200 && r.headers().contains_key("x-ratelimit-limit"))
        })
        .await;
    }

    // Twice the limit, from 8 concurrent clients spread over both replicas.
    let mut tasks = Vec::new();
    for t in 0..8usize {
        let client = e.client.clone();
        let urls = [gws[0].url("/shared"), gws[1].url("/shared")];
        tasks.push(tokio::spawn(async move {
            let mut tally = [[0u64; 2]; 2]; // [replica][allowed, rejected]
            for n in 0..(2 * LIMIT as usize / 8) {
                let replica = (t + n) % 2;
                let r = client
                    .get(&urls[replica])
                    .header("x-k", "load")
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    200 => tally[replica][0] += 1,
                    429 => tally[replica][1] += 1,
                    other => panic!("unexpected status {other}"),
                }
            }
            tally
        }));
    }
    let mut tally = [[0u64; 2]; 2];
    for t in tasks {
        let one = t.await.unwrap();
        for r in 0..2 {
            for k in 0..2 {
                tally[r][k] += one[r][k];
            }
        }
    }
    let allowed = tally[0][0] + tally[1][0];
    let rejected = tally[0][1] + tally[1][1];
    assert_eq!(allowed + rejected, 2 * LIMIT);
    // Within 1% of the limit (one script per request in Redis makes it exact).
    let slack = LIMIT / 100;
    assert!(
        allowed.abs_diff(LIMIT) <= slack,
        "{allowed} allowed of a limit of {LIMIT} across replicas ({tally:?})"
    );
    assert!(
        tally[0][0] > 0 && tally[1][0] > 0,
        "both replicas let some through: {tally:?}"
    );

    // A window resets on time, on both replicas.
    e.s.admin
        .ok(
            "PUT",
            "/routes/short",
            Some(limited(&redis, "/short", 2, 2, json!({}))),
        )
        .await;
    eventually(WAIT, "the short route is served", || async {
        e.client
            .get(e.s.gw.url("/short"))
            .header("x-k", "probe")
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let get = |gw: &Gateway| e.client.get(gw.url("/short")).header("x-k", "w").send();
    let first = get(&e.s.gw).await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-ratelimit-remaining"], "1");
    assert_eq!(get(&gw2).await.unwrap().status(), 200);
    let third = get(&e.s.gw).await.unwrap();
    assert_eq!(third.status(), 429);
    let reset: u64 = third.headers()["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(reset <= 2, "reset {reset}");
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(get(&gw2).await.unwrap().status(), 200, "a new window");

    // Redis away: a request is answered within its timeout, passed or refused as
    // allow_degradation says; none hangs.
    e.s.admin
        .ok(
            "PUT",
            "/routes/degrade",
            Some(limited(
                &redis,
                "/degrade",
                5,
                60,
                json!({"allow_degradation": true}),
            )),
        )
        .await;
    eventually(WAIT, "the degrade route is served", || async {
        e.client
            .get(e.s.gw.url("/degrade"))
            .header("x-k", "probe")
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    redis.stop();
    for (path, want) in [("/short", 500), ("/degrade", 200)] {
        for gw in gws {
            let started = Instant::now();
            let r = e
                .client
                .get(gw.url(path))
                .header("x-k", "down")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), want, "{path} with redis down");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{path} took {:?} with redis down",
                started.elapsed()
            );
            if want == 500 {
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["error_msg"], "failed to limit count");
            }
        }
    }
    // Back: counting resumes on both replicas without a restart or a change.
    redis.restart();
    for gw in gws {
        eventually(WAIT, "counting resumes", || async {
            e.client
                .get(gw.url("/short"))
                .header("x-k", "back")
                .send()
                .await
                .is_ok_and(|r| r.status() != 500)
        })
        .await;
    }
}

/// `policy: redis-cluster` against a real three-master Redis Cluster: two replicas share
/// one count per key, the keys spread over the masters by their slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_count_in_a_redis_cluster_is_one_count_for_every_replica() {
    let cluster = RedisCluster::start();
    let e = env().await;
    let gw2 = Gateway::start(&e.s.etcd.url, "/gw", &[]);
    gw2.wait_ready().await;
    const LIMIT: u64 = 20;
    e.s.admin
        .ok(
            "PUT",
            "/routes/clustered",
            Some(
                json!({"uri": "/clustered", "upstream_id": "rec", "plugins": {"limit-count": {
                "count": LIMIT, "time_window": 60, "key_type": "var", "key": "http_x_k",
                "policy": "redis-cluster", "redis_cluster_nodes": cluster.nodes(),
                "redis_cluster_name": "test", "redis_timeout": 1000, "rejected_code": 429}}}),
            ),
        )
        .await;
    for gw in [&e.s.gw, &gw2] {
        eventually(WAIT, "the route is served", || async {
            e.client
                .get(gw.url("/clustered"))
                .header("x-k", "probe")
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
    }
    // Twelve keys, each asked twice its limit, alternately through both replicas.
    for k in 0..12 {
        let mut allowed = 0;
        for n in 0..2 * LIMIT {
            let gw = if n % 2 == 0 { &e.s.gw } else { &gw2 };
            let r = e
                .client
                .get(gw.url("/clustered"))
                .header("x-k", format!("key-{k}"))
                .send()
                .await
                .unwrap();
            match r.status().as_u16() {
                200 => allowed += 1,
                429 => {}
                other => panic!("unexpected status {other}"),
            }
        }
        assert_eq!(allowed, LIMIT, "key-{k}: one count across replicas");
    }
    let per_node = cluster.keys_per_node("plugin-limit-count:*key-*");
    assert_eq!(per_node.iter().sum::<usize>(), 12, "{per_node:?}");
    assert!(
        per_node.iter().filter(|n| **n > 0).count() >= 2,
        "keys spread over the masters: {per_node:?}"
    );
}

/// A `traffic-split` target's own plugins run before a Redis count is known: a request
/// the count then refuses was sent to no target, so they leave its answer alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_refusal_gets_no_split_targets_plugins() {
    let redis = Redis::start();
    let e = env().await;
    let mut route = limited(&redis, "/split-limited", 1, 60, json!({}));
    route["plugins"]["traffic-split"] = json!({"rules": [{"weighted_upstreams": [
        {"weight": 1, "plugins": {"response-rewrite": {"headers": {"set": {"x-target": "own"}}}}}
    ]}]});
    e.s.admin
        .ok("PUT", "/routes/split-limited", Some(route))
        .await;
    let get = || async {
        e.client
            .get(e.s.gw.url("/split-limited"))
            .header("x-k", "one")
            .send()
            .await
            .unwrap()
    };
    eventually(WAIT, "the split's target plugins run", || async {
        get().await.headers().get("x-target").is_some()
    })
    .await;
    // The count of 1 is spent: refused, without the target's header.
    let refused = get().await;
    assert_eq!(refused.status(), 429);
    assert!(
        refused.headers().get("x-target").is_none(),
        "{:?}",
        refused.headers()
    );
}
