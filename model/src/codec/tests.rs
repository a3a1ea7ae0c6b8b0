use crate::checks::CheckType;
use crate::upstream::{HashOn, LbType};
use crate::{decode, Resource, Route, Service, Upstream};
use serde_json::{json, Value};

fn check_ok<T: Resource>(v: Value) {
    if let Err(e) = decode::<T>(v.to_string().as_bytes()) {
        panic!("{v} should be valid, got: {e}");
    }
}

/// Every invalid document must be rejected, naming the field it expects.
fn check_err<T: Resource + std::fmt::Debug>(v: Value, field: &str, needle: &str) {
    match decode::<T>(v.to_string().as_bytes()) {
        Ok(r) => panic!("{v} should be invalid, parsed as {r:?}"),
        Err(e) => {
            assert_eq!(e.field, field, "{v}: {e}");
            assert!(
                e.to_string().contains(needle),
                "{v}: {e:?} lacks {needle:?}"
            );
        }
    }
}

#[test]
fn valid_routes() {
    for v in [
        json!({"uri": "/a", "upstream_id": "1"}),
        json!({"uris": ["/a", "/b*"], "upstream_id": 1}),
        json!({"uri": "/a", "host": "Foo.com", "service_id": "s"}),
        json!({"uri": "/a", "hosts": ["*.foo.com", "bar.com"], "upstream": {"nodes": {"127.0.0.1:80": 1}}}),
        json!({"uri": "/u/:id", "methods": ["GET", "POST"], "upstream_id": "1", "priority": -3, "status": 0}),
        json!({"uri": "/a", "remote_addrs": ["10.0.0.0/8", "::1"], "upstream_id": "1"}),
        json!({"uri": "/a", "vars": [["arg_a", "==", "1"]], "upstream_id": "1", "plugins": {}}),
        json!({"uri": "/a", "upstream_id": "1", "timeout": {"connect": 1, "send": 2.5, "read": 3}}),
        json!({"id": "r1", "uri": "/a", "upstream_id": "1", "name": "n", "desc": "d", "labels": {"team": "x"},
               "create_time": 1700000000, "update_time": 1700000001, "enable_websocket": false}),
    ] {
        check_ok::<Route>(v);
    }
}

#[test]
fn invalid_routes() {
    let table = [
        (json!([]), "", "JSON object"),
        (json!({"upstream_id": "1"}), "uri", "uri or uris"),
        (
            json!({"uri": "/a"}),
            "upstream",
            "service_id, plugins or plugin_config_id",
        ),
        (
            json!({"uri": "a", "upstream_id": "1"}),
            "uri",
            "must start with",
        ),
        (
            json!({"uri": "/a", "uris": ["/b"], "upstream_id": "1"}),
            "uris",
            "not both",
        ),
        (
            json!({"uris": [], "upstream_id": "1"}),
            "uris",
            "not be empty",
        ),
        (
            json!({"uri": "/a", "host": "a b", "upstream_id": "1"}),
            "host",
            "not allowed",
        ),
        (
            json!({"uri": "/a", "hosts": ["ok.com", "*"], "upstream_id": "1"}),
            "hosts[1]",
            "wildcard",
        ),
        (
            json!({"uri": "/a", "methods": ["FETCH"], "upstream_id": "1"}),
            "methods[0]",
            "unknown method",
        ),
        (
            json!({"uri": "/a", "remote_addrs": ["10.0.0.0/33"], "upstream_id": "1"}),
            "remote_addrs[0]",
            "CIDR",
        ),
        (
            json!({"uri": "/a", "vars": [["arg_a", "=~", "1"]], "upstream_id": "1"}),
            "vars",
            "unknown operator",
        ),
        (
            json!({"uri": "/a", "priority": "high", "upstream_id": "1"}),
            "priority",
            "invalid type",
        ),
        (
            json!({"uri": "/a", "status": 2, "upstream_id": "1"}),
            "status",
            "0 (disabled) or 1",
        ),
        (
            json!({"uri": "/a", "upstream_id": "a/b"}),
            "upstream_id",
            "only letters",
        ),
        (
            json!({"uri": "/a", "upstream_id": "1", "plugins": {"serverless-pre-function": {}}}),
            "plugins.serverless-pre-function",
            "not supported",
        ),
        (
            json!({"uri": "/a", "upstream_id": "1", "filter_func": "x"}),
            "filter_func",
            "unknown field",
        ),
        (
            json!({"uri": "/a", "upstream_id": "1", "upstream": {"nodes": {}}}),
            "upstream_id",
            "not both",
        ),
        (
            json!({"uri": "/a", "upstream": {"nodes": {"127.0.0.1:0": 1}}}),
            "upstream.nodes",
            "port",
        ),
        (
            json!({"uri": "/a", "upstream": {"nodes": {}, "type": "chash"}}),
            "upstream.key",
            "is required",
        ),
        (
            json!({"uri": "/a", "upstream": {"nodes": {}, "checks": {"active": {"healthy": {"successes": 0}}}}}),
            "upstream.checks.active.healthy.successes",
            "from 1 to 254",
        ),
        (
            json!({"uri": "/a", "upstream_id": "1", "timeout": {"connect": 0, "send": 1, "read": 1}}),
            "timeout.connect",
            "above 0",
        ),
        (
            json!({"uri": "/a", "upstream_id": "1", "timeout": {"connect": 1}}),
            "timeout.send",
            "is required",
        ),
        (
            json!({"uri": "/a", "upstream_id": "1", "name": ""}),
            "name",
            "1 to 100",
        ),
        (
            json!({"uri": "/a", "upstream_id": "1", "enable_websocket": 1}),
            "enable_websocket",
            "invalid type",
        ),
        (
            json!({"uri": "/a", "upstream_id": "1", "plugins": {"redirect": {"uri": "/b", "ret_code": 1}}}),
            "plugins.redirect.ret_code",
            "200 to 599",
        ),
    ];
    for (v, field, needle) in table {
        check_err::<Route>(v, field, needle);
    }
}

#[test]
fn valid_upstreams() {
    for v in [
        json!({"nodes": {"127.0.0.1:8080": 1, "example.com:80": 0}}),
        json!({"type": "roundrobin", "nodes": {"[::1]:80": 2, "backend": 1}}),
        json!({"nodes": [{"host": "127.0.0.1", "port": 80, "weight": 5, "priority": 1}]}),
        json!({"nodes": [], "retries": 2, "retry_timeout": 0.5}),
        json!({"nodes": {}, "pass_host": "rewrite", "upstream_host": "svc.internal:8080"}),
        json!({"nodes": {}, "pass_host": "node", "scheme": "http",
               "keepalive_pool": {"size": 10, "idle_timeout": 5, "requests": 100}}),
        // Balancing methods and chash keys, by APISIX's rules.
        json!({"nodes": {}, "type": "least_conn"}),
        json!({"nodes": {}, "type": "ewma"}),
        json!({"nodes": {}, "type": "chash", "key": "remote_addr"}),
        json!({"nodes": {}, "type": "chash", "hash_on": "vars", "key": "uri"}),
        json!({"nodes": {}, "type": "chash", "key": "arg_user-id_2"}),
        json!({"nodes": {}, "type": "chash", "hash_on": "header", "key": "X-User_Id"}),
        json!({"nodes": {}, "type": "chash", "hash_on": "cookie", "key": "session"}),
        json!({"nodes": {}, "type": "chash", "hash_on": "consumer"}),
        json!({"nodes": {}, "type": "chash", "hash_on": "vars_combinations", "key": "$host$arg_id"}),
        // APISIX checks `key` only for chash, and stores hash_on everywhere.
        json!({"nodes": {}, "type": "roundrobin", "hash_on": "header", "key": "not checked"}),
        // Array nodes: priority, and our zone extension.
        json!({"nodes": [{"host": "10.0.0.1", "port": 80, "weight": 1, "priority": -1, "zone": "eu-west-1a"},
                         {"host": "10.0.0.2", "port": 80, "zone": "z_2.b"}]}),
        // Health checks: each part may be left to its defaults.
        json!({"nodes": {}, "checks": {"active": {}}}),
        json!({"nodes": {}, "checks": {"active": {"type": "tcp", "timeout": 0.5}, "passive": {}}}),
        json!({"nodes": {}, "checks": {"active": {"type": "http", "http_path": "/status?full=1", "host": "svc.local",
               "port": 8081, "concurrency": 2, "req_headers": ["X-Probe: 1", "Accept:*/*"],
               "healthy": {"interval": 3, "http_statuses": [200], "successes": 1},
               "unhealthy": {"interval": 1, "http_statuses": [500, 599], "http_failures": 254, "tcp_failures": 1, "timeouts": 2}},
               "passive": {"type": "tcp", "healthy": {"http_statuses": [200, 204], "successes": 3},
               "unhealthy": {"http_statuses": [502], "http_failures": 2, "tcp_failures": 3, "timeouts": 4}}}}),
    ] {
        check_ok::<Upstream>(v);
    }
}

#[test]
fn invalid_upstreams() {
    let table = [
        (json!({}), "nodes", "is required"),
        (json!({"nodes": "x"}), "nodes", "map"),
        (json!({"nodes": {"127.0.0.1:80": -1}}), "nodes", "weight"),
        (json!({"nodes": {"127.0.0.1:99999": 1}}), "nodes", "port"),
        (json!({"nodes": {"bad host:80": 1}}), "nodes", "host name"),
        (
            json!({"nodes": [{"host": "a", "port": 1, "region": "z"}]}),
            "nodes",
            "unknown field",
        ),
        (
            json!({"nodes": {}, "type": "magic"}),
            "type",
            "unknown upstream type",
        ),
        (
            json!({"nodes": {}, "hash_on": "query"}),
            "hash_on",
            "unknown variant",
        ),
        (
            json!({"nodes": {}, "scheme": "tcp"}),
            "scheme",
            "not supported yet",
        ),
        (
            json!({"nodes": {}, "scheme": "http", "tls": {"verify": false}}),
            "tls",
            "applies only",
        ),
        (
            json!({"nodes": {}, "scheme": "https", "tls": {"client_cert": "x"}}),
            "tls.client_cert",
            "not supported yet",
        ),
        (
            json!({"nodes": {}, "scheme": "https", "tls": {"ca": "nothing"}}),
            "tls.ca",
            "no PEM certificate",
        ),
        (
            json!({"nodes": {}, "scheme": "grpcs", "tls": {"verify": "yes"}}),
            "tls.verify",
            "invalid type",
        ),
        (
            json!({"nodes": {}, "pass_host": "rewrite"}),
            "upstream_host",
            "required",
        ),
        (
            json!({"nodes": {}, "pass_host": "other"}),
            "pass_host",
            "unknown pass_host",
        ),
        (
            json!({"nodes": {}, "retries": -1}),
            "retries",
            "invalid value",
        ),
        (
            json!({"nodes": {}, "checks": {}}),
            "checks.active",
            "is required",
        ),
        (
            json!({"nodes": {}, "checks": {"passive": {}}}),
            "checks.active",
            "is required",
        ),
        (
            json!({"nodes": {}, "keepalive_pool": {"size": 0}}),
            "keepalive_pool.size",
            "at least 1",
        ),
    ];
    for (v, field, needle) in table {
        check_err::<Upstream>(v, field, needle);
    }
}

/// `type`, `hash_on`/`key` and node `priority`/`zone` that must be refused.
#[test]
fn invalid_balancing() {
    let chash = |hash_on: &str, key: &str| json!({"nodes": {}, "type": "chash", "hash_on": hash_on, "key": key});
    let node = |extra: serde_json::Value| {
        let mut n = json!({"host": "10.0.0.1", "port": 80});
        n.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"nodes": [n]})
    };
    let table = [
        (json!({"nodes": {}, "type": "chash"}), "key", "is required"),
        (
            json!({"nodes": {}, "type": "chash", "hash_on": "header"}),
            "key",
            "is required",
        ),
        (chash("vars", "http_x_user"), "key", "hash_on \"header\""),
        (chash("vars", "cookie_sid"), "key", "arg_<name>"),
        (chash("vars", "request_method"), "key", "not valid"),
        (chash("vars", "arg_"), "key", "not valid"),
        (chash("vars", "arg_a b"), "key", "not valid"),
        (chash("vars", ""), "key", "not valid"),
        (chash("header", "X User"), "key", "header name"),
        (chash("header", ""), "key", "header name"),
        (chash("cookie", "a=b"), "key", "cookie name"),
        (chash("vars_combinations", ""), "key", "template"),
        (
            json!({"nodes": {}, "type": "chash", "key": 5}),
            "key",
            "invalid type",
        ),
        (
            json!({"nodes": {}, "type": "Chash"}),
            "type",
            "unknown upstream type",
        ),
        (node(json!({"priority": 1.5})), "nodes", "priority"),
        (node(json!({"priority": "high"})), "nodes", "priority"),
        (node(json!({"zone": ""})), "nodes", "zone"),
        (node(json!({"zone": "eu west"})), "nodes", "zone"),
        (node(json!({"zone": "-a"})), "nodes", "zone"),
        (node(json!({"zone": "a".repeat(64)})), "nodes", "zone"),
        (node(json!({"zone": 3})), "nodes", "zone"),
    ];
    for (v, field, needle) in table {
        check_err::<Upstream>(v, field, needle);
    }
}

/// Every `checks` rule names the field at fault with its full path.
#[test]
fn invalid_checks() {
    let active = |a: serde_json::Value| json!({"nodes": {}, "checks": {"active": a}});
    let passive =
        |p: serde_json::Value| json!({"nodes": {}, "checks": {"active": {}, "passive": p}});
    let table = [
        (
            json!({"nodes": {}, "checks": {"active": {}, "other": {}}}),
            "checks.other",
            "unknown field",
        ),
        (
            active(json!({"type": "udp"})),
            "checks.active.type",
            "unknown variant",
        ),
        (
            active(json!({"timeout": 0})),
            "checks.active.timeout",
            "above 0",
        ),
        (
            active(json!({"timeout": -1})),
            "checks.active.timeout",
            "above 0",
        ),
        (
            active(json!({"timeout": 86401})),
            "checks.active.timeout",
            "at most",
        ),
        (
            active(json!({"concurrency": 0})),
            "checks.active.concurrency",
            "at least 1",
        ),
        (
            active(json!({"host": "a b"})),
            "checks.active.host",
            "host name",
        ),
        (
            active(json!({"port": 0})),
            "checks.active.port",
            "1 to 65535",
        ),
        (
            active(json!({"port": 65536})),
            "checks.active.port",
            "invalid value",
        ),
        (
            active(json!({"http_path": "status"})),
            "checks.active.http_path",
            "start with",
        ),
        (
            active(json!({"http_path": "/a b"})),
            "checks.active.http_path",
            "spaces",
        ),
        (
            active(json!({"req_headers": []})),
            "checks.active.req_headers",
            "not be empty",
        ),
        (
            active(json!({"req_headers": ["X-A: 1", "no colon"]})),
            "checks.active.req_headers[1]",
            "Name: value",
        ),
        (
            active(json!({"req_headers": ["X A: 1"]})),
            "checks.active.req_headers[0]",
            "header name",
        ),
        (
            active(json!({"req_headers": ["X-A: 1\r\nX-B: 2"]})),
            "checks.active.req_headers[0]",
            "control",
        ),
        (
            active(json!({"healthy": {"interval": 0}})),
            "checks.active.healthy.interval",
            "from 1",
        ),
        (
            active(json!({"healthy": {"interval": 1.5}})),
            "checks.active.healthy.interval",
            "invalid type",
        ),
        (
            active(json!({"healthy": {"http_statuses": []}})),
            "checks.active.healthy.http_statuses",
            "not be empty",
        ),
        (
            active(json!({"healthy": {"http_statuses": [200, 199]}})),
            "checks.active.healthy.http_statuses[1]",
            "200 to 599",
        ),
        (
            active(json!({"healthy": {"http_statuses": [200, 200]}})),
            "checks.active.healthy.http_statuses[1]",
            "twice",
        ),
        (
            active(json!({"healthy": {"successes": 255}})),
            "checks.active.healthy.successes",
            "1 to 254",
        ),
        (
            active(json!({"healthy": {"timeouts": 1}})),
            "checks.active.healthy.timeouts",
            "unknown field",
        ),
        (
            active(json!({"unhealthy": {"interval": 0}})),
            "checks.active.unhealthy.interval",
            "from 1",
        ),
        (
            active(json!({"unhealthy": {"http_statuses": [600]}})),
            "checks.active.unhealthy.http_statuses[0]",
            "200 to 599",
        ),
        (
            active(json!({"unhealthy": {"http_failures": 0}})),
            "checks.active.unhealthy.http_failures",
            "1 to 254",
        ),
        (
            active(json!({"unhealthy": {"tcp_failures": 255}})),
            "checks.active.unhealthy.tcp_failures",
            "1 to 254",
        ),
        (
            active(json!({"unhealthy": {"timeouts": 0}})),
            "checks.active.unhealthy.timeouts",
            "1 to 254",
        ),
        (
            active(json!({"unhealthy": {"timeouts": -1}})),
            "checks.active.unhealthy.timeouts",
            "invalid value",
        ),
        (
            passive(json!({"type": "grpc"})),
            "checks.passive.type",
            "unknown variant",
        ),
        (
            passive(json!({"healthy": {"interval": 1}})),
            "checks.passive.healthy.interval",
            "unknown field",
        ),
        (
            passive(json!({"healthy": {"successes": 0}})),
            "checks.passive.healthy.successes",
            "1 to 254",
        ),
        (
            passive(json!({"healthy": {"http_statuses": [302, 302]}})),
            "checks.passive.healthy.http_statuses[1]",
            "twice",
        ),
        (
            passive(json!({"unhealthy": {"http_statuses": [100]}})),
            "checks.passive.unhealthy.http_statuses[0]",
            "200 to 599",
        ),
        (
            passive(json!({"unhealthy": {"http_failures": 255}})),
            "checks.passive.unhealthy.http_failures",
            "1 to 254",
        ),
        (
            passive(json!({"unhealthy": {"tcp_failures": 0}})),
            "checks.passive.unhealthy.tcp_failures",
            "1 to 254",
        ),
        (
            passive(json!({"unhealthy": {"timeouts": 0}})),
            "checks.passive.unhealthy.timeouts",
            "1 to 254",
        ),
    ];
    for (v, field, needle) in table {
        check_err::<Upstream>(v, field, needle);
    }
}

/// Fields left out take APISIX's defaults, so the gateway reads concrete values.
#[test]
fn balancing_and_check_defaults() {
    let u: Upstream =
        decode(br#"{"nodes": {"10.0.0.1:80": 3}, "checks": {"active": {}, "passive": {}}}"#)
            .unwrap();
    assert_eq!(u.lb, LbType::RoundRobin);
    assert_eq!(u.hash_on, HashOn::Vars);
    assert_eq!(u.key, None);
    assert_eq!(
        (u.nodes.0[0].priority, u.nodes.0[0].zone.as_deref()),
        (0, None)
    );
    let c = u.checks.unwrap();
    let a = &c.active;
    assert_eq!(a.kind, CheckType::Http);
    assert_eq!(
        (a.timeout, a.concurrency, a.http_path.as_str()),
        (1.0, 10, "/")
    );
    assert!(a.https_verify_certificate);
    assert_eq!(
        (a.host.as_deref(), a.port, a.req_headers.as_ref()),
        (None, None, None)
    );
    assert_eq!((a.healthy.interval, a.healthy.successes), (1, 2));
    assert_eq!(a.healthy.http_statuses, [200, 302]);
    assert_eq!(a.unhealthy.interval, 1);
    assert_eq!(
        a.unhealthy.http_statuses,
        [429, 404, 500, 501, 502, 503, 504, 505]
    );
    assert_eq!(
        (
            a.unhealthy.http_failures,
            a.unhealthy.tcp_failures,
            a.unhealthy.timeouts
        ),
        (5, 2, 3)
    );
    assert_eq!(a.interval(true), std::time::Duration::from_secs(1));
    let p = c.passive.unwrap();
    assert_eq!(p.kind, CheckType::Http);
    assert_eq!(p.healthy.successes, 5);
    assert_eq!(p.healthy.http_statuses.len(), 19);
    assert_eq!(p.unhealthy.http_statuses, [429, 500, 503]);
    assert_eq!(
        (
            p.unhealthy.http_failures,
            p.unhealthy.tcp_failures,
            p.unhealthy.timeouts
        ),
        (5, 2, 7)
    );

    let u: Upstream = decode(
        br#"{"type": "chash", "hash_on": "cookie", "key": "sid",
             "nodes": [{"host": "10.0.0.1", "port": 80, "priority": 2, "zone": "a"}],
             "checks": {"active": {"healthy": {"interval": 7}, "unhealthy": {"interval": 2}}}}"#,
    )
    .unwrap();
    assert_eq!(
        (u.lb, u.hash_on, u.key.as_deref()),
        (LbType::Chash, HashOn::Cookie, Some("sid"))
    );
    assert_eq!(
        (u.nodes.0[0].priority, u.nodes.0[0].zone.as_deref()),
        (2, Some("a"))
    );
    let a = u.checks.unwrap().active;
    assert_eq!(a.interval(true), std::time::Duration::from_secs(7));
    assert_eq!(a.interval(false), std::time::Duration::from_secs(2));
    // A partly given object keeps the defaults of its other fields.
    assert_eq!(a.healthy.successes, 2);
}

#[test]
fn services() {
    check_ok::<Service>(json!({"upstream_id": "1", "hosts": ["a.com"]}));
    check_ok::<Service>(json!({"upstream": {"nodes": {"127.0.0.1:1": 1}}, "name": "s"}));
    check_err::<Service>(json!({"hosts": []}), "hosts", "not be empty");
    check_err::<Service>(json!({"upstream": {"nodes": 1}}), "upstream.nodes", "map");
    check_err::<Service>(json!({"uri": "/a"}), "uri", "unknown field");
}

/// Values as APISIX and earlier versions of this project stored them must keep parsing.
#[test]
fn stored_fixtures_keep_parsing() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/stored");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&path).unwrap();
        let result = match name.split('-').next().unwrap() {
            "route" => decode::<Route>(&bytes).map(|_| ()),
            "upstream" => decode::<Upstream>(&bytes).map(|_| ()),
            "service" => decode::<Service>(&bytes).map(|_| ()),
            "ssl" => decode::<crate::Ssl>(&bytes).map(|_| ()),
            other => panic!("fixture {name}: unknown kind {other}"),
        };
        result.unwrap_or_else(|e| panic!("fixture {name}: {e}"));
        seen += 1;
    }
    assert!(seen >= 10, "only {seen} fixtures");
}

fn split_route(split: Value) -> Value {
    json!({"uri": "/a", "upstream_id": "1", "plugins": {"traffic-split": split}})
}

#[test]
fn valid_traffic_splits() {
    for split in [
        json!({}),
        json!({"rules": []}),
        json!({"rules": [{}]}),
        json!({"rules": [{"weighted_upstreams": [{"upstream_id": "2", "weight": 3}, {"weight": 1}]}]}),
        json!({"rules": [{"weighted_upstreams": [{"upstream_id": 2}, {"upstream": {"nodes": {"127.0.0.1:1": 1}}, "weight": 0}]}]}),
        json!({"rules": [
            {"match": [{"vars": [["http_x-canary", "==", "1"]]}, {"vars": [["arg_canary", "==", "1"]]}],
             "weighted_upstreams": [{"upstream_id": "canary"}]},
            {"match": [], "weighted_upstreams": [{"weight": 1}]}
        ]}),
        json!({"rules": [{"weighted_upstreams": [
            {"upstream_id": "2", "plugins": {"proxy-rewrite": {"headers": {"set": {"backend": "v2"}}}}},
            {"plugins": {"response-rewrite": {"headers": {"set": {"x": "1"}}},
                         "proxy-mirror": {"host": "http://127.0.0.1:9"}}},
            {"upstream_id": "3", "plugins": {}}
        ]}]}),
    ] {
        check_ok::<Route>(split_route(split));
    }
}

#[test]
fn invalid_traffic_splits() {
    let table = [
        (json!([]), "plugins.traffic-split", "must be an object"),
        (
            json!({"rule": []}),
            "plugins.traffic-split.rule",
            "unknown field",
        ),
        (
            json!({"rules": {}}),
            "plugins.traffic-split.rules",
            "sequence",
        ),
        (
            json!({"rules": [{"weighted_upstreams": []}]}),
            "plugins.traffic-split.rules[0].weighted_upstreams",
            "1 to 20",
        ),
        (
            json!({"rules": [{"weighted_upstreams": [{"weight": 1}, {"weight": -1}]}]}),
            "plugins.traffic-split.rules[0].weighted_upstreams[1].weight",
            "invalid value",
        ),
        (
            json!({"rules": [{"weighted_upstreams": [{"weight": 1}, {"weight": 100001}]}]}),
            "plugins.traffic-split.rules[0].weighted_upstreams[1].weight",
            "at most 100000",
        ),
        (
            json!({"rules": [{}, {"weighted_upstreams": [{"upstream_id": "a/b"}]}]}),
            "plugins.traffic-split.rules[1].weighted_upstreams[0].upstream_id",
            "only letters",
        ),
        (
            json!({"rules": [{"weighted_upstreams": [{"upstream_id": "2", "upstream": {"nodes": {"127.0.0.1:1": 1}}}]}]}),
            "plugins.traffic-split.rules[0].weighted_upstreams[0].upstream",
            "not both",
        ),
        (
            json!({"rules": [{"weighted_upstreams": [{"upstream": {"nodes": {"127.0.0.1:1": 1}, "type": "x"}}]}]}),
            "plugins.traffic-split.rules[0].weighted_upstreams[0].upstream.type",
            "unknown upstream type",
        ),
        (
            json!({"rules": [{"weighted_upstreams": [{"upstream": {"type": "roundrobin"}}]}]}),
            "plugins.traffic-split.rules[0].weighted_upstreams[0].upstream.nodes",
            "is required",
        ),
        (
            json!({"rules": [{"weighted_upstreams": [{"upstream_id": "2", "name": "x"}]}]}),
            "plugins.traffic-split.rules[0].weighted_upstreams[0].name",
            "unknown field",
        ),
        (
            json!({"rules": [{"match": [{"vars": [["arg_a", "=~", "1"]]}]}]}),
            "plugins.traffic-split.rules[0].match[0].vars",
            "at [0][1]: unknown operator",
        ),
        (
            json!({"rules": [{"match": [{}]}]}),
            "plugins.traffic-split.rules[0].match[0].vars",
            "is required",
        ),
        (
            json!({"rules": [{"match": {"vars": []}}]}),
            "plugins.traffic-split.rules[0].match",
            "sequence",
        ),
        // A target's plugins shape what is forwarded; deciding whether to serve is the
        // route's (and a split inside a split would recurse).
        (
            json!({"rules": [{"weighted_upstreams": [{"plugins": {"key-auth": {}}}]}]}),
            "plugins.traffic-split.rules[0].weighted_upstreams[0].plugins.key-auth",
            "not supported on a weighted upstream (supported: proxy-rewrite, response-rewrite, proxy-mirror)",
        ),
        (
            json!({"rules": [{"weighted_upstreams": [{"plugins": {"traffic-split": {}}}]}]}),
            "plugins.traffic-split.rules[0].weighted_upstreams[0].plugins.traffic-split",
            "not supported on a weighted upstream",
        ),
        (
            json!({"rules": [{"weighted_upstreams": [{"weight": 1}, {"plugins": {"proxy-rewrite": {"uri": "x"}}}]}]}),
            "plugins.traffic-split.rules[0].weighted_upstreams[1].plugins.proxy-rewrite.uri",
            "",
        ),
        (
            json!({"rules": [{"weighted_upstreams": [{"plugins": []}]}]}),
            "plugins.traffic-split.rules[0].weighted_upstreams[0].plugins",
            "",
        ),
    ];
    for (split, field, needle) in table {
        check_err::<Route>(split_route(split), field, needle);
    }
    // Other plugins stay rejected, beside traffic-split and on services.
    check_err::<Route>(
        json!({"uri": "/a", "upstream_id": "1", "plugins": {"traffic-split": {}, "serverless-pre-function": {}}}),
        "plugins.serverless-pre-function",
        "redirect, public-api, http-logger, prometheus, response-rewrite)",
    );
    check_err::<Service>(
        json!({"upstream_id": "1", "plugins": {"traffic-split": {}}}),
        "plugins.traffic-split",
        "not supported",
    );
}

#[test]
fn traffic_split_references() {
    let route: Route = decode(
        split_route(json!({"rules": [
            {"weighted_upstreams": [{"upstream_id": "2"}, {"weight": 1}]},
            {"weighted_upstreams": [{"upstream": {"nodes": {"127.0.0.1:1": 1}}}, {"upstream_id": 3}]}
        ]}))
        .to_string()
        .as_bytes(),
    )
    .expect("valid");
    let refs: Vec<(String, String)> = route
        .references()
        .into_iter()
        .map(|(_, id, field)| (field, id.to_string()))
        .collect();
    assert_eq!(
        refs,
        [
            ("upstream_id".to_string(), "1".to_string()),
            (
                "plugins.traffic-split.rules[0].weighted_upstreams[0].upstream_id".into(),
                "2".into()
            ),
            (
                "plugins.traffic-split.rules[1].weighted_upstreams[1].upstream_id".into(),
                "3".into()
            ),
        ]
    );
}
