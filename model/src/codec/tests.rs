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
            "upstream_id or service_id",
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
            json!({"uri": "/a", "upstream_id": "1", "plugins": {"limit-count": {}}}),
            "plugins.limit-count",
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
            "upstream.type",
            "not supported yet",
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
            json!({"uri": "/a", "upstream_id": "1", "enable_websocket": true}),
            "enable_websocket",
            "not supported",
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
            json!({"nodes": [{"host": "a", "port": 1, "zone": "z"}]}),
            "nodes",
            "unknown field",
        ),
        (
            json!({"nodes": {}, "type": "magic"}),
            "type",
            "unknown upstream type",
        ),
        (
            json!({"nodes": {}, "scheme": "https"}),
            "scheme",
            "not supported yet",
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
            "checks",
            "unknown field",
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
            other => panic!("fixture {name}: unknown kind {other}"),
        };
        result.unwrap_or_else(|e| panic!("fixture {name}: {e}"));
        seen += 1;
    }
    assert!(seen >= 5, "only {seen} fixtures");
}
