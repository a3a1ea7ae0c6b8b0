//! Translation tables. Routes are checked by feeding them to the gateway's real router,
//! so "which backend gets this request" is answered exactly as in production.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use gateway::router::{Request, RouteSpec, Router};
use model::vars::VarSource;
use std::borrow::Cow;

pub(crate) const NOW: &str = "2026-01-01T00:00:00Z";

pub(crate) fn settings() -> Settings {
    Settings {
        prefix: "/g".into(),
        selector: Selector {
            controller_name: "example.com/gw".into(),
            ingress_class: "gateway".into(),
        },
        allow_external_name: false,
        publish_address: None,
    }
}

/// Parses a multi-document YAML fixture into the objects it holds.
pub(crate) fn cluster(yaml: &str) -> Cluster {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("fixture parses");
    let mut c = Cluster::default();
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        fn parse<T: serde::de::DeserializeOwned>(kind: &str, doc: Value) -> T {
            serde_json::from_value(doc).unwrap_or_else(|e| panic!("{kind}: {e}"))
        }
        match kind.as_str() {
            "Ingress" => c.ingresses.push(parse(&kind, doc)),
            "IngressClass" => c.classes.push(parse(&kind, doc)),
            "Service" => c.services.push(parse(&kind, doc)),
            "EndpointSlice" => c.slices.push(parse(&kind, doc)),
            "Secret" => c.secrets.push(parse(&kind, doc)),
            "Namespace" => c.namespaces.push(parse(&kind, doc)),
            "GatewayClass" => c.gateway_classes.push(parse(&kind, doc)),
            "Gateway" => c.gateways.push(parse(&kind, doc)),
            "HTTPRoute" => c.http_routes.push(parse(&kind, doc)),
            "GRPCRoute" => c.grpc_routes.push(parse(&kind, doc)),
            "ReferenceGrant" => c.reference_grants.push(parse(&kind, doc)),
            other => panic!("unknown kind {other:?} in fixture"),
        }
    }
    c
}

fn fixture(name: &str) -> Cluster {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    cluster(&std::fs::read_to_string(&path).unwrap())
}

struct Host<'a>(&'a str);
impl VarSource for Host<'_> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        (name == "host").then_some(Cow::Borrowed(self.0))
    }
}

/// The desired routes in the real router; a lookup answers with the upstream's name
/// (`namespace/service:port`).
struct Routes {
    router: Router<String>,
}

impl Routes {
    fn new(d: &Desired) -> Routes {
        let mut specs = Vec::new();
        for (key, v) in &d.values {
            if !key.starts_with("/g/routes/") {
                continue;
            }
            let r: model::Route = model::codec::decode_value(v).unwrap();
            let up = &d.values[&format!("/g/upstreams/{}", v["upstream_id"].as_str().unwrap())];
            specs.push(RouteSpec {
                id: r.id.clone().unwrap(),
                hosts: r.own_hosts().into_iter().cloned().collect(),
                paths: r.paths().into_iter().cloned().collect(),
                methods: None,
                remote_addrs: Vec::new(),
                vars: r.vars.map(|v| v.0),
                priority: r.priority,
                create_time: 0,
                value: up["name"].as_str().unwrap().to_string(),
            });
        }
        Routes {
            router: Router::build(specs),
        }
    }

    /// The service (`name` of `namespace/name:port`) that `host` + `path` reaches.
    fn get(&self, host: &str, path: &str) -> Option<String> {
        let host = model::host::normalize_request_host(host);
        let vars = Host(&host);
        let req = Request {
            host: &host,
            path,
            method: "GET",
            remote_addr: "127.0.0.1".parse().unwrap(),
            vars: &vars,
        };
        self.router.find(&req).map(|m| {
            let name = m.value.split('/').nth(1).unwrap();
            name.split(':').next().unwrap().to_string()
        })
    }
}

fn ingress(paths: &[(&str, &str)], default_backend: bool) -> Cluster {
    let paths: Vec<Value> = paths
        .iter()
        .map(|(t, p)| {
            json!({"path": p, "pathType": t,
                   "backend": {"service": {"name": svc_name(t, p), "port": {"number": 80}}}})
        })
        .collect();
    let mut spec = json!({"ingressClassName": "gw", "rules": [{"http": {"paths": paths}}]});
    if default_backend {
        spec["defaultBackend"] = json!({"service": {"name": "default", "port": {"number": 80}}});
    }
    Cluster {
        ingresses: vec![serde_json::from_value(
            json!({"metadata": {"name": "t", "namespace": "ns"}, "spec": spec}),
        )
        .unwrap()],
        classes: vec![serde_json::from_value(
            json!({"metadata": {"name": "gw"}, "spec": {"controller": "example.com/gw"}}),
        )
        .unwrap()],
        ..Cluster::default()
    }
}

/// A service name standing for one (pathType, path).
fn svc_name(t: &str, p: &str) -> String {
    let p = p.trim_matches('/').replace('/', "-");
    format!(
        "{}-{}",
        t.to_ascii_lowercase(),
        if p.is_empty() { "root" } else { &p }
    )
}

/// The Kubernetes documentation's table of path matching examples
/// (concepts/services-networking/ingress/#examples), one row per request.
#[test]
fn kubernetes_path_matching_examples() {
    type Row<'a> = (
        &'a [(&'a str, &'a str)],
        &'a str,
        Option<(&'a str, &'a str)>,
    );
    let table: &[Row] = &[
        (&[("Prefix", "/")], "/", Some(("Prefix", "/"))),
        (&[("Prefix", "/")], "/any/thing", Some(("Prefix", "/"))),
        (&[("Exact", "/foo")], "/foo", Some(("Exact", "/foo"))),
        (&[("Exact", "/foo")], "/bar", None),
        (&[("Exact", "/foo")], "/foo/", None),
        (&[("Exact", "/foo/")], "/foo", None),
        (&[("Prefix", "/foo")], "/foo", Some(("Prefix", "/foo"))),
        (&[("Prefix", "/foo")], "/foo/", Some(("Prefix", "/foo"))),
        (&[("Prefix", "/foo/")], "/foo", Some(("Prefix", "/foo/"))),
        (&[("Prefix", "/foo/")], "/foo/", Some(("Prefix", "/foo/"))),
        (&[("Prefix", "/aaa/bb")], "/aaa/bbb", None),
        (
            &[("Prefix", "/aaa/bbb")],
            "/aaa/bbb",
            Some(("Prefix", "/aaa/bbb")),
        ),
        (
            &[("Prefix", "/aaa/bbb/")],
            "/aaa/bbb",
            Some(("Prefix", "/aaa/bbb/")),
        ),
        (
            &[("Prefix", "/aaa/bbb")],
            "/aaa/bbb/",
            Some(("Prefix", "/aaa/bbb")),
        ),
        (
            &[("Prefix", "/aaa/bbb")],
            "/aaa/bbb/ccc",
            Some(("Prefix", "/aaa/bbb")),
        ),
        (&[("Prefix", "/aaa/bbb")], "/aaa/bbbxyz", None),
        (
            &[("Prefix", "/"), ("Prefix", "/aaa")],
            "/aaa/ccc",
            Some(("Prefix", "/aaa")),
        ),
        (
            &[("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")],
            "/aaa/bbb",
            Some(("Prefix", "/aaa/bbb")),
        ),
        (
            &[("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")],
            "/ccc",
            Some(("Prefix", "/")),
        ),
        (&[("Prefix", "/aaa")], "/ccc", None),
        (
            &[("Prefix", "/foo"), ("Exact", "/foo")],
            "/foo",
            Some(("Exact", "/foo")),
        ),
        (
            &[("Exact", "/foo"), ("Prefix", "/foo")],
            "/foo",
            Some(("Exact", "/foo")),
        ),
        // Beyond the table: the longest path wins whatever the type, and Exact is case-sensitive.
        (
            &[("Prefix", "/foo"), ("Exact", "/foo/bar")],
            "/foo/bar",
            Some(("Exact", "/foo/bar")),
        ),
        (
            &[("Prefix", "/foo/bar"), ("Exact", "/foo")],
            "/foo/bar/x",
            Some(("Prefix", "/foo/bar")),
        ),
        (&[("Exact", "/Foo")], "/foo", None),
        (
            &[("ImplementationSpecific", "/foo")],
            "/foo/x",
            Some(("ImplementationSpecific", "/foo")),
        ),
        (&[("ImplementationSpecific", "/foo")], "/foobar", None),
    ];
    for (paths, request, want) in table {
        let d = translate(&ingress(paths, false), &settings(), NOW);
        assert!(
            d.warnings.iter().all(|w| w.contains("does not exist")),
            "{:?}",
            d.warnings
        );
        let got = Routes::new(&d).get("any.host", request);
        let want = want.map(|(t, p)| svc_name(t, p));
        assert_eq!(got, want, "paths {paths:?}, request {request}");
        // "No match" goes to the default backend when there is one.
        let d = translate(&ingress(paths, true), &settings(), NOW);
        let got = Routes::new(&d).get("any.host", request);
        assert_eq!(
            got,
            Some(want.unwrap_or_else(|| "default".into())),
            "{paths:?} {request} with default backend"
        );
    }
}

#[test]
fn hosts_and_default_backend() {
    let d = translate(&fixture("hosts.yaml"), &settings(), NOW);
    assert!(
        d.warnings.iter().all(|w| w.contains("does not exist")),
        "{:?}",
        d.warnings
    );
    let r = Routes::new(&d);
    let table = [
        ("foo.bar.com", "/x", "exact-host"),
        ("FOO.Bar.com:9080", "/", "exact-host"),
        ("bar.foo.com", "/x", "wildcard"),
        ("BAR.foo.com:80", "/", "wildcard"),
        // Wildcards cover exactly one label.
        ("baz.bar.foo.com", "/any/x", "any-host"),
        ("baz.bar.foo.com", "/x", "fallback"),
        ("foo.com", "/any", "any-host"),
        ("foo.com", "/", "fallback"),
        // A rule without host matches every host; what no rule matches goes to the default.
        ("foo.bar.com", "/any", "exact-host"),
        ("other.org", "/any/thing", "any-host"),
        ("other.org", "/anything", "fallback"),
    ];
    for (host, path, want) in table {
        assert_eq!(r.get(host, path).as_deref(), Some(want), "{host}{path}");
    }
    assert_eq!(d.served, vec![("web".to_string(), "hosts".to_string())]);
}

#[test]
fn the_older_ingress_wins_a_conflict() {
    let d = translate(&fixture("conflicts.yaml"), &settings(), NOW);
    let r = Routes::new(&d);
    assert_eq!(r.get("foo.com", "/api/x").as_deref(), Some("older-api"));
    // Exact /api is a different claim than Prefix /api: the newer one keeps it.
    assert_eq!(r.get("foo.com", "/api").as_deref(), Some("newer-api-exact"));
    assert_eq!(
        r.get("foo.com", "/only-newer").as_deref(),
        Some("newer-only")
    );
    assert_eq!(r.get("foo.com", "/else").as_deref(), Some("older-default"));
    assert_eq!(r.get("twin.com", "/").as_deref(), Some("twin-a"));
    let lost: Vec<&String> = d
        .warnings
        .iter()
        .filter(|w| w.contains("older ingress"))
        .collect();
    assert_eq!(lost.len(), 3, "{lost:?}");
    // The losers' backends are not even written.
    assert!(!d.values.values().any(|v| v["name"] == "web/newer-api:80"));
    assert!(!d
        .values
        .values()
        .any(|v| v["name"] == "web/newer-default:80"));
}

#[test]
fn which_ingresses_are_ours() {
    let d = translate(&fixture("selection.yaml"), &settings(), NOW);
    let names: Vec<&str> = d.served.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, vec!["by-annotation", "by-class", "no-class"]);
    // Without the default-class annotation, class-less Ingresses are not ours.
    let mut c = fixture("selection.yaml");
    c.classes[0].metadata.annotations = None;
    let d = translate(&c, &settings(), NOW);
    let names: Vec<&str> = d.served.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, vec!["by-annotation", "by-class"]);
}

fn upstream<'a>(d: &'a Desired, name: &str) -> &'a Value {
    d.values
        .values()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no upstream {name}"))
}

#[test]
fn backends_resolve_through_endpoint_slices() {
    let d = translate(&fixture("endpoints.yaml"), &settings(), NOW);
    // Named and numbered references of the same port give the same nodes, each slice its
    // own port; not serving dropped, terminating dropped while others serve; zones as
    // given, or the hinted one.
    let want = json!([
        {"host": "10.0.0.1", "port": 8080, "weight": 1, "zone": "zone-a"},
        {"host": "10.0.1.1", "port": 8081, "weight": 1, "zone": "zone-c"},
        {"host": "10.0.1.2", "port": 8081, "weight": 1, "zone": "zone-b"},
    ]);
    assert_eq!(upstream(&d, "web/app:http")["nodes"], want);
    assert_eq!(upstream(&d, "web/app:80")["nodes"], want);
    // Terminating endpoints are the last resort.
    assert_eq!(
        upstream(&d, "web/draining:80")["nodes"],
        json!([{"host": "10.0.2.1", "port": 8080, "weight": 1}])
    );
    // No Service, no endpoints, no such port, ExternalName without the flag: no nodes
    // (the gateway answers 503), and a warning each.
    for (name, why) in [
        ("web/nowhere:80", "does not exist"),
        ("web/empty:80", "no serving endpoints"),
        ("web/app:81", "has no port 81"),
        ("web/ext:443", "ExternalName"),
    ] {
        assert_eq!(upstream(&d, name)["nodes"], json!([]), "{name}");
        assert!(
            d.warnings
                .iter()
                .any(|w| w.contains(&name.replace(':', " port ")) && w.contains(why)),
            "{name}: {:?}",
            d.warnings
        );
    }
    let mut s = settings();
    s.allow_external_name = true;
    let d = translate(&fixture("endpoints.yaml"), &s, NOW);
    assert_eq!(
        upstream(&d, "web/ext:443")["nodes"],
        json!([{"host": "api.example.org", "port": 443, "weight": 1}])
    );
}

#[test]
fn every_value_is_valid_labelled_and_stable() {
    for f in [
        "hosts.yaml",
        "conflicts.yaml",
        "selection.yaml",
        "endpoints.yaml",
        "tls.yaml",
    ] {
        let c = fixture(f);
        let d = translate(&c, &settings(), NOW);
        assert!(!d.values.is_empty(), "{f}");
        for (key, v) in &d.values {
            let id = key.rsplit('/').next().unwrap();
            assert!(id.len() <= 64 && v["id"] == id, "{key}");
            assert_eq!(v["labels"][MANAGED_BY], OWNER, "{key}");
            assert!(v["labels"][LABEL_NAME].is_string(), "{key}");
            assert_eq!(v["labels"][LABEL_CONTROLLER], "example.com/gw", "{key}");
            if key.starts_with("/g/routes/") {
                model::codec::decode_value::<model::Route>(v).unwrap();
                assert!(d.values.contains_key(&format!(
                    "/g/upstreams/{}",
                    v["upstream_id"].as_str().unwrap()
                )));
            } else {
                model::codec::decode_value::<model::Upstream>(v).unwrap();
            }
        }
        // The same input gives the same keys and values (ids are stable hashes).
        assert_eq!(translate(&c, &settings(), NOW).values, d.values, "{f}");
    }
}

#[test]
fn tls_secrets_become_ssls_and_bad_ones_are_reported() {
    let d = translate(&fixture("tls.yaml"), &settings(), NOW);
    assert_eq!(d.ssls.len(), 1, "{:?}", d.ssls.keys());
    let ssl = d.ssls.values().next().unwrap();
    assert_eq!(ssl["snis"], json!(["*.example.com", "foo.example.com"]));
    assert!(ssl["cert"].as_str().unwrap().contains("BEGIN CERTIFICATE"));
    assert!(ssl["key"].as_str().unwrap().contains("PRIVATE KEY"));
    assert_eq!(ssl["labels"][LABEL_NAME], "good");
    assert_eq!(ssl["labels"][LABEL_CONTROLLER], "example.com/gw");
    for (secret, why) in [
        ("opaque", "not \"kubernetes.io/tls\""),
        ("broken", "cert"),
        ("gone", "does not exist"),
    ] {
        assert!(
            d.warnings
                .iter()
                .any(|w| w.contains(&format!("web/{secret}:")) && w.contains(why)),
            "{secret}: {:?}",
            d.warnings
        );
    }
    // The routes are served regardless.
    assert!(Routes::new(&d).get("foo.example.com", "/").is_some());

    // A key and certificate that do not belong together are refused too.
    let mut c = fixture("tls.yaml");
    let other_key = std::fs::read_to_string(format!(
        "{}/tests/fixtures/other-key.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    c.secrets[0]
        .string_data
        .as_mut()
        .unwrap()
        .insert("tls.key".into(), other_key);
    let d = translate(&c, &settings(), NOW);
    assert!(d.ssls.is_empty(), "{:?}", d.ssls.keys());
    assert!(
        d.warnings.iter().any(|w| w.contains("web/good:")),
        "{:?}",
        d.warnings
    );
}

#[test]
fn ssl_keys_are_encrypted_once_and_kept_while_unchanged() {
    let d = translate(&fixture("tls.yaml"), &settings(), NOW);
    let plain = d.ssls.values().next().unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let ring = model::Keyring::new(&["0123456789abcdef".to_string()]).unwrap();
    // Nothing stored yet: encrypted.
    let sealed = crate::tls::seal(&d.ssls, &BTreeMap::new(), &ring);
    let (key, v) = sealed.iter().next().unwrap();
    let cipher = v["key"].as_str().unwrap().to_string();
    assert!(!cipher.contains("PRIVATE KEY"));
    assert_eq!(ring.decrypt(&cipher).unwrap(), plain);
    let mut ssl: model::Ssl = model::codec::decode_value(v).unwrap();
    ssl.decrypt_keys(&ring).unwrap();
    ssl.check_pem().unwrap();
    // Stored and unchanged: the same ciphertext, so the diff writes nothing.
    let owned: BTreeMap<String, Value> = sealed.clone();
    let again = crate::tls::seal(&d.ssls, &owned, &ring);
    assert_eq!(again, sealed);
    let plan = crate::reconcile::diff("/g", &again, &owned, &BTreeSet::new(), 1);
    assert!(plan.ops.is_empty());
    assert_eq!(again[key]["key"], json!(cipher));
    // Stored in plaintext but keys configured now: re-encrypted.
    let plain_stored = crate::tls::seal(&d.ssls, &BTreeMap::new(), &model::Keyring::default());
    assert_eq!(plain_stored[key]["key"], json!(plain));
    assert_eq!(
        crate::tls::seal(&d.ssls, &plain_stored, &model::Keyring::default()),
        plain_stored
    );
    assert_ne!(
        crate::tls::seal(&d.ssls, &plain_stored, &ring)[key]["key"],
        json!(plain)
    );
}

#[test]
fn invalid_paths_and_hosts_are_skipped_with_a_warning() {
    let mut c = ingress(
        &[
            ("Prefix", "/ok"),
            ("Exact", "/users/:id"),
            ("Prefix", "/a*b"),
            ("Regex", "/x"),
        ],
        false,
    );
    c.ingresses[0].spec.as_mut().unwrap().rules.as_mut().unwrap().push(
        serde_json::from_value(json!({"host": "a.*.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "s", "port": {"number": 80}}}}]}}))
        .unwrap(),
    );
    let d = translate(&c, &settings(), NOW);
    let routes = d
        .values
        .keys()
        .filter(|k| k.starts_with("/g/routes/"))
        .count();
    assert_eq!(routes, 1);
    assert_eq!(
        d.warnings
            .iter()
            .filter(|w| !w.contains("does not exist"))
            .count(),
        4,
        "{:?}",
        d.warnings
    );
}
