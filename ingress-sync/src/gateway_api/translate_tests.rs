//! Tables from the Gateway API conformance suite, checked by feeding the translated
//! routes to the gateway's real router and plugins: "which backend gets this request"
//! is answered as in production.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use crate::gateway_api::rule::duration;
use crate::translate::tests::{cluster, settings, NOW};
use crate::translate::{translate as translate_all, Desired};
use gateway::router::{Request, RouteSpec, Router};
use model::vars::VarSource;
use std::borrow::Cow;

fn fixtures(names: &[&str]) -> Cluster {
    let mut yaml = String::new();
    for name in ["infra.yaml"].iter().chain(names) {
        let path = format!(
            "{}/tests/fixtures/gateway-api/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        yaml.push_str(&std::fs::read_to_string(&path).unwrap());
        yaml.push_str("\n---\n");
    }
    cluster(&yaml)
}

/// A request as the router and plugins see it.
struct Req<'a> {
    scheme: &'a str,
    host: String,
    path: &'a str,
    query: &'a str,
    headers: &'a [(&'a str, &'a str)],
}

impl VarSource for Req<'_> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        if let Some(h) = name.strip_prefix("http_") {
            return self
                .headers
                .iter()
                .find(|(k, _)| k.to_ascii_lowercase().replace('-', "_") == h)
                .map(|(_, v)| Cow::Borrowed(*v));
        }
        if let Some(a) = name.strip_prefix("arg_") {
            return self.query.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == a).then_some(Cow::Borrowed(v))
            });
        }
        match name {
            "host" => Some(Cow::Borrowed(self.host.as_str())),
            "uri" => Some(Cow::Borrowed(self.path)),
            "scheme" => Some(Cow::Borrowed(self.scheme)),
            "query_string" => Some(Cow::Borrowed(self.query)),
            _ => None,
        }
    }
}

/// The translated routes in the real router.
struct Probe {
    d: Desired,
    router: Router<Value>,
}

impl Probe {
    fn new(c: &Cluster) -> Probe {
        let d = translate_all(c, &settings(), NOW);
        let mut specs = Vec::new();
        for (key, v) in &d.values {
            if !key.starts_with("/g/routes/") {
                continue;
            }
            let r: model::Route = model::codec::decode_value(v).unwrap();
            specs.push(RouteSpec {
                id: r.id.clone().unwrap(),
                hosts: r.own_hosts().into_iter().cloned().collect(),
                paths: r.paths().into_iter().cloned().collect(),
                methods: v["methods"]
                    .as_array()
                    .map(|m| m.iter().map(|x| x.as_str().unwrap().to_string()).collect()),
                remote_addrs: Vec::new(),
                vars: r.vars.map(|v| v.0),
                priority: r.priority,
                create_time: 0,
                value: v.clone(),
            });
        }
        Probe {
            d,
            router: Router::build(specs),
        }
    }

    /// What `method host target` (with `headers`, over `scheme`) gets: the Service's name,
    /// `500`, `redirect <code> <location>`, `404`; and the path the backend sees when a
    /// rewrite changes it (`infra-backend-v1 /one/two`).
    fn get(
        &self,
        scheme: &str,
        method: &str,
        host: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> String {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let req = Req {
            scheme,
            host: model::host::normalize_request_host(host),
            path,
            query,
            headers,
        };
        let r = Request {
            host: &req.host,
            path,
            method,
            remote_addr: "127.0.0.1".parse().unwrap(),
            vars: &req,
        };
        let Some(m) = self.router.find(&r) else {
            return "404".into();
        };
        let route = m.value;
        let plugins = &route["plugins"];
        if let Some(conf) = plugins.get("redirect") {
            let conf = model::plugins::redirect::Redirect::parse(conf).unwrap();
            let to = gateway::plugins::redirect::location(&conf, &req, 443).unwrap();
            return format!("redirect {} {to}", conf.ret_code);
        }
        if let Some(fi) = plugins.get("fault-injection") {
            if fi["abort"].get("percentage").is_none() {
                return fi["abort"]["http_status"].to_string();
            }
        }
        let up =
            &self.d.values[&format!("/g/upstreams/{}", route["upstream_id"].as_str().unwrap())];
        let service = up["name"].as_str().unwrap().split('/').nth(1).unwrap();
        let service = service.split(':').next().unwrap().to_string();
        match plugins.get("proxy-rewrite") {
            Some(conf) => {
                let conf = model::plugins::proxy_rewrite::ProxyRewrite::parse(conf).unwrap();
                match gateway::plugins::proxy_rewrite::rewritten_uri(&conf, path, Some(query), &req)
                {
                    Some(uri) => format!("{service} {uri}"),
                    None => service,
                }
            }
            None => service,
        }
    }

    fn http(&self, host: &str, target: &str, headers: &[(&str, &str)]) -> String {
        self.get("http", "GET", host, target, headers)
    }

    /// Our status for `kind namespace/name`.
    fn status(&self, kind: &str, ns: &str, name: &str) -> &Value {
        &self
            .d
            .statuses
            .iter()
            .find(|s| s.kind == kind && s.namespace == ns && s.name == name)
            .unwrap_or_else(|| panic!("no status for {kind} {ns}/{name}"))
            .status
    }

    fn route_condition(&self, name: &str, parent: usize, type_: &str) -> (String, String) {
        let st = self.status("HTTPRoute", "infra", name);
        condition(&st["parents"][parent]["conditions"], type_)
    }
}

fn condition(list: &Value, type_: &str) -> (String, String) {
    let c = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} in {list}"));
    (
        c["status"].as_str().unwrap().to_string(),
        c["reason"].as_str().unwrap().to_string(),
    )
}

fn yes(reason: &str) -> (String, String) {
    ("True".into(), reason.into())
}

fn no(reason: &str) -> (String, String) {
    ("False".into(), reason.into())
}

/// One row of `expectations.yaml`.
#[derive(serde::Deserialize)]
struct Row {
    host: String,
    #[serde(default = "get")]
    method: String,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    want: String,
}

fn get() -> String {
    "GET".into()
}

#[derive(serde::Deserialize)]
struct Expectations {
    fixture: String,
    requests: Vec<Row>,
}

/// The conformance tables of `expectations.yaml`, each fixture through the real router.
#[test]
fn every_expected_request_gets_its_answer() {
    let path = format!(
        "{}/tests/fixtures/gateway-api/expectations.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let all: Vec<Expectations> =
        serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(all.iter().map(|e| e.requests.len()).sum::<usize>() > 100);
    for e in all {
        let p = Probe::new(&fixtures(&[&e.fixture]));
        for r in &e.requests {
            let headers: Vec<(&str, &str)> = r
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            assert_eq!(
                p.get("http", &r.method, &r.host, &r.path, &headers),
                r.want,
                "{}: {} {}{} {:?}",
                e.fixture,
                r.method,
                r.host,
                r.path,
                r.headers
            );
        }
    }
}

#[test]
fn matching_routes_are_accepted_with_their_refs_resolved() {
    let p = Probe::new(&fixtures(&["matching.yaml"]));
    // Every route is accepted with its refs resolved, at the object's generation.
    assert_eq!(
        p.route_condition("matching", 0, "Accepted"),
        yes("Accepted")
    );
    assert_eq!(
        p.route_condition("matching", 0, "ResolvedRefs"),
        yes("ResolvedRefs")
    );
    let parent = &p.status("HTTPRoute", "infra", "matching")["parents"][0];
    assert_eq!(
        parent["parentRef"],
        json!({"group": GROUP, "kind": "Gateway", "namespace": "infra", "name": "same-namespace"})
    );
    assert_eq!(parent["controllerName"], "example.com/gw");
    // The fixtures have no EndpointSlices: only that is reported.
    assert!(
        p.d.warnings
            .iter()
            .all(|w| w.contains("no serving endpoints")),
        "{:?}",
        p.d.warnings
    );
}

#[test]
fn hostname_intersection_status_and_attached_routes() {
    let p = Probe::new(&fixtures(&["hostnames.yaml"]));
    assert_eq!(
        p.route_condition("no-intersecting-hosts", 0, "Accepted"),
        no("NoMatchingListenerHostname")
    );
    // Not accepted, yet its refs are resolved (the suite checks both).
    assert_eq!(
        p.route_condition("no-intersecting-hosts", 0, "ResolvedRefs"),
        yes("ResolvedRefs")
    );
    let st = p.status("HTTPRoute", "infra", "no-intersecting-hosts");
    assert_eq!(st["parents"][0]["conditions"][0]["observedGeneration"], 3);
    let gw = p.status("Gateway", "infra", "httproute-hostname-intersection");
    let attached: Vec<(String, u64)> = gw["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_string(),
                l["attachedRoutes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        attached,
        vec![
            ("listener-1".to_string(), 2),
            ("listener-2".to_string(), 1),
            ("listener-3".to_string(), 1)
        ]
    );
    assert_eq!(condition(&gw["conditions"], "Accepted"), yes("Accepted"));
    assert_eq!(
        condition(&gw["conditions"], "Programmed"),
        yes("Programmed")
    );
    assert_eq!(gw["conditions"][0]["observedGeneration"], 2);
    let l0 = &gw["listeners"][0];
    assert_eq!(
        l0["supportedKinds"],
        json!([{"group": GROUP, "kind": "HTTPRoute"}, {"group": GROUP, "kind": "GRPCRoute"}])
    );
    assert_eq!(
        condition(&l0["conditions"], "ResolvedRefs"),
        yes("ResolvedRefs")
    );
    assert_eq!(
        condition(&l0["conditions"], "Conflicted"),
        no("NoConflicts")
    );
}

#[test]
fn attachment_follows_parents_listeners_and_namespaces() {
    let p = Probe::new(&fixtures(&["attachment.yaml"]));
    let st = |ns: &str, name: &str| p.status("HTTPRoute", ns, name).clone();
    let accepted =
        |ns: &str, name: &str| condition(&st(ns, name)["parents"][0]["conditions"], "Accepted");
    assert_eq!(
        accepted("web-backend", "invalid-cross-namespace-parent-ref"),
        no("NotAllowedByListeners")
    );
    assert_eq!(
        accepted("infra", "section-name-does-not-match"),
        no("NoMatchingParent")
    );
    assert_eq!(p.http("nomatch.example", "/", &[]), "404");
    // Selected by its namespace's labels.
    assert_eq!(accepted("web-backend", "cross-namespace"), yes("Accepted"));
    assert_eq!(p.http("cross.example", "/", &[]), "web-backend");
    assert_eq!(
        accepted("elsewhere", "not-selected"),
        no("NotAllowedByListeners")
    );
    assert_eq!(p.http("elsewhere.example", "/", &[]), "404");
    // Two parents, one entry each.
    let shared = st("infra", "shared");
    assert_eq!(shared["parents"].as_array().unwrap().len(), 2);
    assert_eq!(shared["parents"][1]["parentRef"]["name"], "all-namespaces");
    assert_eq!(
        p.http("multi.example", "/shared/x", &[]),
        "infra-backend-v1"
    );
    // Another controller's Gateway: no status of ours, no route.
    assert!(!p.d.statuses.iter().any(|s| s.name == "for-someone-else"));
    assert!(!p
        .d
        .statuses
        .iter()
        .any(|s| s.name == "not-ours" || s.name == "theirs"));
    assert_eq!(p.http("theirs.example", "/", &[]), "404");
    assert_eq!(
        condition(
            &p.status("GatewayClass", "", "ours")["conditions"],
            "Accepted"
        ),
        yes("Accepted")
    );
    // A listener for route kinds we do not serve.
    let gw = p.status("Gateway", "infra", "gateway-only-invalid-route-kind");
    let l = &gw["listeners"][0];
    assert_eq!(
        condition(&l["conditions"], "ResolvedRefs"),
        no("InvalidRouteKinds")
    );
    assert_eq!(l["supportedKinds"], json!([]));
    assert_eq!(l["attachedRoutes"], 0);
    // One unsupported listener of two: the Gateway is accepted, the listener is not.
    let gw = p.status("Gateway", "infra", "gateway-unsupported-protocol");
    assert_eq!(
        condition(&gw["conditions"], "Accepted"),
        yes("ListenersNotValid")
    );
    assert_eq!(
        condition(&gw["listeners"][0]["conditions"], "Accepted"),
        no("UnsupportedProtocol")
    );
    assert_eq!(
        condition(&gw["listeners"][1]["conditions"], "Accepted"),
        yes("Accepted")
    );
}

#[test]
fn backend_refs_weights_failures_and_grants() {
    let p = Probe::new(&fixtures(&["backends.yaml"]));
    // HTTPRouteWeight: 70/30 through traffic-split; weight 0 gets nothing.
    let key =
        p.d.values
            .iter()
            .find(|(k, v)| k.starts_with("/g/routes/") && v["name"] == "infra/weights")
            .map(|(_, v)| v.clone())
            .unwrap();
    let split = &key["plugins"]["traffic-split"]["rules"][0]["weighted_upstreams"];
    assert_eq!(split.as_array().unwrap().len(), 2);
    // 70/30, divided by their common divisor.
    assert_eq!(split[0]["weight"], 3);
    assert_eq!(split[1], json!({"weight": 7}));
    assert_eq!(p.http("weights.example", "/", &[]), "infra-backend-v1");
    // HTTPRouteNoBackendRefs
    assert_eq!(
        p.http("nobackends.example", "/omitted-no-forward", &[]),
        "500"
    );
    assert_eq!(
        p.http("nobackends.example", "/empty-no-forward", &[]),
        "500"
    );
    assert_eq!(
        p.http("nobackends.example", "/forward", &[]),
        "infra-backend-v1"
    );
    assert_eq!(
        p.route_condition("no-backends", 0, "ResolvedRefs"),
        yes("ResolvedRefs")
    );
    // Invalid refs: accepted, ResolvedRefs False, 500.
    assert_eq!(p.http("missing.example", "/", &[]), "500");
    assert_eq!(
        p.route_condition("nonexistent-backend", 0, "Accepted"),
        yes("Accepted")
    );
    assert_eq!(
        p.route_condition("nonexistent-backend", 0, "ResolvedRefs"),
        no("BackendNotFound")
    );
    assert_eq!(p.http("kind.example", "/", &[]), "500");
    assert_eq!(
        p.route_condition("unknown-kind", 0, "ResolvedRefs"),
        no("InvalidKind")
    );
    // One valid ref of two, equal weights: half of the requests are answered 500.
    let half =
        p.d.values
            .values()
            .find(|v| v["name"] == "infra/half-invalid")
            .unwrap();
    assert_eq!(
        half["plugins"]["fault-injection"]["abort"]["percentage"],
        50
    );
    assert_eq!(
        half["upstream_id"]
            .as_str()
            .map(|s| s.starts_with("k8s-u-")),
        Some(true)
    );
    // ReferenceGrant: only the granted Service, only for HTTPRoutes of infra.
    assert_eq!(p.http("granted.example", "/", &[]), "web-backend");
    assert_eq!(
        p.route_condition("granted", 0, "ResolvedRefs"),
        yes("ResolvedRefs")
    );
    assert_eq!(p.http("notgranted.example", "/v2", &[]), "500");
    assert_eq!(p.http("notgranted.example", "/", &[]), "infra-backend-v1");
    assert_eq!(
        p.route_condition("not-granted", 0, "ResolvedRefs"),
        no("RefNotPermitted")
    );
    // Backend protocols (GEP-1911): h2c upstreams, WebSocket handshakes let through, and
    // what cannot be spoken is an unresolved ref.
    let protocol_route = |uri: &str| {
        p.d.values
            .values()
            .find(|v| v["name"] == "infra/protocols" && v["uris"][0] == uri)
            .unwrap()
            .clone()
    };
    let upstream_of = |r: &Value| {
        p.d.values[&format!("/g/upstreams/{}", r["upstream_id"].as_str().unwrap())].clone()
    };
    let h2c = protocol_route("/h2c");
    assert_eq!(upstream_of(&h2c)["scheme"], "grpc");
    assert!(h2c.get("enable_websocket").is_none(), "{h2c}");
    let ws = protocol_route("/ws");
    assert_eq!(ws["enable_websocket"], true);
    assert!(upstream_of(&ws).get("scheme").is_none());
    assert_eq!(p.http("protocols.example", "/wss", &[]), "500");
    assert_eq!(
        p.route_condition("protocols", 0, "ResolvedRefs"),
        no("UnsupportedProtocol")
    );
}

#[test]
fn app_protocols_pick_how_a_backend_is_spoken_to() {
    use super::BackendProtocol::*;
    for (app_protocol, want) in [
        (None, Ok(Http1)),
        (Some(""), Ok(Http1)),
        (Some("http"), Ok(Http1)),
        (Some("HTTP"), Ok(Http1)),
        (Some("kubernetes.io/h2c"), Ok(H2c)),
        (Some("grpc"), Ok(H2c)),
        (Some("kubernetes.io/ws"), Ok(WebSocket)),
        (Some("kubernetes.io/wss"), Err(())),
        (Some("https"), Err(())),
        (Some("mysql"), Err(())),
    ] {
        assert_eq!(
            backend_protocol(app_protocol).map_err(|_| ()),
            want,
            "{app_protocol:?}"
        );
    }
}

#[test]
fn filters_become_plugins() {
    let p = Probe::new(&fixtures(&["filters.yaml"]));
    let route = |name: &str| {
        p.d.values
            .values()
            .find(|v| v["name"] == "infra/filters" && v["uris"][0] == name)
            .unwrap()
            .clone()
    };
    let set = route("/set");
    assert_eq!(
        set["plugins"]["proxy-rewrite"]["headers"],
        json!({"set": {"X-Header-Set": "set-overwrites-values"},
               "add": {"X-Header-Add": "add-appends-values"}, "remove": ["X-Header-Remove"]})
    );
    assert_eq!(
        set["plugins"]["response-rewrite"]["headers"],
        json!({"set": {"X-Resp-Set": "s"}, "add": ["X-Resp-Add: a"], "remove": ["X-Resp-Remove"]})
    );
    // A backend's own filters are the plugins of its split target, run after the rule's;
    // with one backend too, so that both levels may touch one header.
    let lone = route("/backend-filter");
    assert_eq!(
        lone["plugins"]["proxy-rewrite"]["headers"],
        json!({"set": {"X-Rule": "r"}})
    );
    assert_eq!(
        lone["plugins"]["traffic-split"],
        json!({"rules": [{"weighted_upstreams": [{"weight": 1, "plugins": {"proxy-rewrite":
            {"headers": {"set": {"X-Backend": "b"}, "remove": ["X-Drop"]}}}}]}]})
    );
    let both = route("/both-levels");
    assert_eq!(
        both["plugins"]["proxy-rewrite"]["headers"],
        json!({"remove": ["X-Same"]})
    );
    assert_eq!(
        both["plugins"]["traffic-split"]["rules"][0]["weighted_upstreams"][0]["plugins"],
        json!({"proxy-rewrite": {"headers": {"set": {"x-same": "v"}}}})
    );
    // Beside another backend: each target has its own, the unfiltered one none.
    let two = route("/two-backend-filters");
    let v1 = &p.d.values[&format!("/g/upstreams/{}", two["upstream_id"].as_str().unwrap())];
    assert!(
        v1["name"].as_str().unwrap().contains("infra-backend-v1"),
        "{v1}"
    );
    let targets = &two["plugins"]["traffic-split"]["rules"][0]["weighted_upstreams"];
    assert_eq!(targets.as_array().unwrap().len(), 2, "{targets}");
    assert!(targets[0].get("plugins").is_none(), "{targets}");
    assert!(targets[0]["upstream_id"].is_string(), "{targets}");
    assert_eq!(
        targets[1],
        json!({"weight": 1, "plugins": {"proxy-rewrite":
            {"headers": {"set": {"X-Backend": "v1"}}}}})
    );
    // Every emitted route is one the model (and so admin-api and the gateway) accepts.
    for v in p.d.values.values().filter(|v| v.get("uris").is_some()) {
        model::codec::decode_value::<model::Route>(v).unwrap_or_else(|e| panic!("{v}: {e}"));
    }
    // HTTPRouteCORS: the cors plugin, wildcard origins as patterns.
    assert_eq!(
        route("/cors")["plugins"]["cors"],
        json!({"allow_origins": "https://www.foo.com",
               "allow_origins_by_regex": ["^https://[^/]+\\.bar\\.com$",
                                          "^https://www\\.foo\\.com$"],
               "allow_methods": "GET,OPTIONS", "allow_headers": "x-header-1",
               "expose_headers": "x-header-3", "allow_credential": true, "max_age": 3600})
    );
    let strip = route("/strip-prefix");
    assert_eq!(strip["plugins"]["proxy-rewrite"]["host"], "one.example.org");
    // The smaller of request and backendRequest.
    assert_eq!(
        strip["timeout"],
        json!({"connect": 0.5, "send": 0.5, "read": 0.5})
    );
    assert!(
        p.d.warnings.iter().any(|w| w.contains("ExtensionRef")),
        "{:?}",
        p.d.warnings
    );
}

#[test]
fn precedence_packs_the_specs_order() {
    // exact > method > headers > query > older > earlier rule.
    let base = priority(false, false, 0, 0, 1_700_000_000, 0);
    assert!(priority(true, false, 0, 0, 1_700_000_000, 0) > priority(false, true, 16, 16, 0, 0));
    assert!(priority(false, true, 0, 0, 1_700_000_000, 0) > priority(false, false, 16, 16, 0, 0));
    assert!(priority(false, false, 2, 0, 1_700_000_000, 0) > priority(false, false, 1, 16, 0, 0));
    assert!(priority(false, false, 0, 1, 1_800_000_000, 9) > base);
    assert!(priority(false, false, 0, 0, 1_600_000_000, 9) > base);
    assert!(priority(false, false, 0, 0, 1_700_000_000, 1) < base);
    // Never overflows, whatever the inputs.
    assert!(priority(true, true, 99, 99, i64::MIN, usize::MAX) > 0);
    assert!(priority(true, true, 99, 99, i64::MAX, 0) > 0);
}

#[test]
fn durations_of_the_gateway_api() {
    let table: &[(&str, Option<f64>)] = &[
        ("10s", Some(10.0)),
        ("500ms", Some(0.5)),
        ("1h30m", Some(5400.0)),
        ("0s", Some(0.0)),
        ("1m1s1ms", Some(61.001)),
        ("", None),
        ("10", None),
        ("1d", None),
        ("s", None),
    ];
    for (s, want) in table {
        assert_eq!(duration(s).ok(), *want, "{s:?}");
    }
}

#[test]
fn grpc_methods_are_paths() {
    let p = Probe::new(&fixtures(&["grpc.yaml"]));
    type Call<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let table: &[Call] = &[
        ("/grpc.Echo/Unary", &[], "infra-backend-v1"),
        ("/grpc.Echo/Other", &[], "infra-backend-v2"),
        ("/other.Svc/Chat", &[], "infra-backend-v3"),
        ("/grpc.Echo/Chat", &[], "infra-backend-v2"),
        ("/grpc.X/StreamAll", &[], "infra-backend-v1"),
        ("/other.Svc/Foo", &[("x-tenant", "a")], "infra-backend-v3"),
        ("/other.Svc/Foo", &[], "404"),
        ("/grpc.Echo", &[], "404"),
    ];
    for (path, headers, want) in table {
        assert_eq!(
            &p.get("http", "POST", "grpc.example", path, headers),
            want,
            "{path} {headers:?}"
        );
    }
    // Its upstreams speak gRPC, apart from an HTTPRoute's upstream of the same Service.
    let grpc_ups: Vec<&Value> =
        p.d.values
            .iter()
            .filter(|(k, v)| k.starts_with("/g/upstreams/") && v["scheme"] == "grpc")
            .map(|(_, v)| v)
            .collect();
    assert_eq!(grpc_ups.len(), 3);
    assert!(p
        .d
        .values
        .iter()
        .any(|(k, v)| k.starts_with("/g/upstreams/") && v["scheme"].is_null()));
    let st = p.status("GRPCRoute", "infra", "echo");
    assert_eq!(
        condition(&st["parents"][0]["conditions"], "Accepted"),
        yes("Accepted")
    );
    // A listener that admits HTTPRoutes only.
    let st = p.status("GRPCRoute", "infra", "on-http-only");
    assert_eq!(
        condition(&st["parents"][0]["conditions"], "Accepted"),
        no("NotAllowedByListeners")
    );
}

#[test]
fn review_cases_serve_what_can_be_served_and_say_what_cannot() {
    let p = Probe::new(&fixtures(&["filters.yaml", "edge-cases.yaml"]));
    let h = "edge.example";
    // A mirror whose Service has no endpoint is left out; the rule still serves.
    assert_eq!(p.http(h, "/mirror", &[]), "infra-backend-v1");
    assert!(
        p.d.warnings.iter().any(|w| w.contains("mirror left out")),
        "{:?}",
        p.d.warnings
    );
    // Weights the API allows but traffic-split does not: scaled, never dropped.
    let big =
        p.d.values
            .values()
            .find(|v| v["name"] == "infra/edge" && v["uris"][0] == "/big-weights")
            .unwrap();
    let split = &big["plugins"]["traffic-split"]["rules"][0]["weighted_upstreams"];
    assert_eq!(
        (&split[0]["weight"], &split[1]["weight"]),
        (&json!(2), &json!(1))
    );
    assert_eq!(big["timeout"]["read"], 86400.0);
    // A `$` in a header value would be read as a variable: the rule answers 500 instead.
    assert_eq!(p.http(h, "/dollar", &[]), "500");
    // Redirect with ReplacePrefixMatch "/": the rest of the path, or "/".
    assert_eq!(
        p.http(h, "/strip/x/y", &[]),
        "redirect 302 http://edge.example/x/y"
    );
    assert_eq!(
        p.http(h, "/strip", &[]),
        "redirect 302 http://edge.example/"
    );
    // A redirect with a header change: the redirect.
    assert_eq!(
        p.http(h, "/redirect-and-header", &[]),
        "redirect 302 http://example.org/redirect-and-header"
    );
    // A header name that no request variable can read: that match is left out.
    assert_eq!(p.http(h, "/", &[("x_under", "1")]), "404");
    let st = p.status("HTTPRoute", "infra", "edge");
    let conds = &st["parents"][0]["conditions"];
    assert_eq!(condition(conds, "Accepted"), yes("Accepted"));
    assert_eq!(
        condition(conds, "PartiallyInvalid"),
        yes("UnsupportedValue")
    );
    let message = conds
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PartiallyInvalid")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.starts_with("Dropped Rule: "), "{message}");
    assert!(message.contains("$"), "{message}");
    // A regex the model refuses: that match is left out, and said so.
    assert!(message.contains("rule 6 match 0"), "{message}");
    // Routes without problems carry no such condition.
    let st = p.status("HTTPRoute", "infra", "plain-edge");
    assert!(st["parents"][0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["type"] != "PartiallyInvalid"));
}

#[test]
fn https_listeners_serve_their_certificates_by_the_names_they_route() {
    let p = Probe::new(&fixtures(&["https.yaml"]));
    // The listener without a hostname: its certificate for the attached routes' names.
    let (_, snis) =
        p.d.ssls
            .iter()
            .find(|(_, v)| v["labels"]["k8s-name"] == "good-cert")
            .unwrap_or_else(|| {
                panic!(
                    "not served: {:?} {:?} {}",
                    p.d.ssls.keys(),
                    p.d.warnings,
                    p.status("Gateway", "infra", "tls-gateway")
                )
            });
    assert_eq!(snis["snis"], json!(["example.org", "second-example.org"]));
    assert_eq!(
        p.get("https", "GET", "example.org", "/", &[]),
        "infra-backend-v1"
    );
    // HTTPS only: not on the plain listener.
    assert_eq!(p.http("example.org", "/", &[]), "404");
    let gw = p.status("Gateway", "infra", "tls-gateway");
    let listener = |name: &str| {
        gw["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        condition(&listener("https")["conditions"], "ResolvedRefs"),
        yes("ResolvedRefs")
    );
    // A kubernetes.io/tls Secret whose data is not a certificate.
    assert_eq!(
        condition(&listener("malformed")["conditions"], "ResolvedRefs"),
        no("InvalidCertificateRef")
    );
    assert_eq!(
        condition(&listener("missing")["conditions"], "ResolvedRefs"),
        no("InvalidCertificateRef")
    );
    // Its route still attaches (the suite counts it).
    assert_eq!(listener("missing")["attachedRoutes"], 1);
}

#[test]
fn a_route_that_leaves_our_gateways_loses_our_status_entry() {
    let mut c = fixtures(&[]);
    c.http_routes.push(
        serde_json::from_value(json!({
            "metadata": {"name": "moved", "namespace": "infra"},
            "spec": {"parentRefs": [{"name": "not-ours"}]},
            "status": {"parents": [{"parentRef": {"name": "same-namespace"},
                                    "controllerName": "example.com/gw", "conditions": []}]}
        }))
        .unwrap(),
    );
    let p = Probe::new(&c);
    assert_eq!(
        p.status("HTTPRoute", "infra", "moved"),
        &json!({"parents": []})
    );
    // A route that never had one of ours: nothing to write.
    assert!(!p.d.statuses.iter().any(|s| s.name == "for-someone-else"));
}
