//! End-to-end: ingress-sync with `--gateway-api`, its real kube-rs watchers against the
//! loopback Kubernetes API server (`e2e::kube_api`), a real etcd, a real gateway and real
//! backends: HTTPRoutes become routes, filters become plugins, and status is written back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::grpc::proto::echo_client::EchoClient;
use e2e::grpc::proto::EchoRequest;
use e2e::grpc::GrpcBackend;
use e2e::kube_api::KubeApi;
use e2e::{eventually, Backend, Etcd, Gateway, IngressSync, Load};
use serde_json::{json, Value};
use std::time::Duration;

const PREFIX: &str = "/gw";
const CONTROLLER: &str = "example.com/gateway-sync";
const NS: &str = "infra";

struct Env {
    _etcd: Etcd,
    gw: Gateway,
    kube: KubeApi,
    _sync: IngressSync,
    client: reqwest::Client,
}

impl Env {
    async fn start(backends: &[&Backend]) -> Env {
        let etcd = Etcd::start();
        let gw = Gateway::start(&etcd.url, PREFIX, &[]);
        gw.wait_ready().await;
        let kube = KubeApi::start().await;
        kube.apply(json!({"kind": "Namespace", "metadata": {"name": NS}}));
        kube.apply(json!({"kind": "GatewayClass", "metadata": {"name": "ours"},
                          "spec": {"controllerName": CONTROLLER}}));
        kube.apply(
            json!({"kind": "Gateway", "metadata": {"name": "gw", "namespace": NS},
            "spec": {"gatewayClassName": "ours", "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP"}]}}),
        );
        for b in backends {
            service(&kube, &b.name, b.addr.port());
        }
        let args = [
            format!("--controller-name={CONTROLLER}"),
            "--gateway-api".to_string(),
            "--publish-address=203.0.113.7".to_string(),
            "--debounce-ms=50".to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let sync = IngressSync::start(&etcd.url, PREFIX, kube.kubeconfig(), &args);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Env {
            _etcd: etcd,
            gw,
            kube,
            _sync: sync,
            client,
        }
    }

    /// The status and the JSON echo of `GET path` with `headers`.
    async fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Value, String) {
        let mut req = self.client.get(self.gw.url(path)).header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let Ok(resp) = req.send().await else {
            return (0, Value::Null, String::new());
        };
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body, location)
    }

    async fn backend(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> String {
        match self.get(host, path, headers).await {
            (200, body, _) => body["backend"].as_str().unwrap_or_default().to_string(),
            (status, _, _) => status.to_string(),
        }
    }

    fn status(&self, kind: &str, ns: &str, name: &str) -> Value {
        self.kube
            .get(kind, ns, name)
            .map(|o| o["status"].clone())
            .unwrap_or(Value::Null)
    }
}

/// A Service `name` in the test namespace whose one endpoint is 127.0.0.1:`port`.
fn service(kube: &KubeApi, name: &str, port: u16) {
    service_speaking(kube, name, port, None);
}

/// As [`service`], its port's `appProtocol` set.
fn service_speaking(kube: &KubeApi, name: &str, port: u16, app_protocol: Option<&str>) {
    let mut service_port = json!({"name": "http", "port": 8080, "targetPort": 3000});
    if let Some(p) = app_protocol {
        service_port["appProtocol"] = json!(p);
    }
    kube.apply(
        json!({"kind": "Service", "metadata": {"name": name, "namespace": NS},
        "spec": {"ports": [service_port]}}),
    );
    kube.apply(json!({"kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": NS,
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]}));
}

fn condition(list: &Value, type_: &str) -> Option<(String, String, i64)> {
    list.as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["observedGeneration"].as_i64().unwrap_or(-1),
            )
        })
}

/// Whether a unary Echo call to the gateway at `url` is answered by backend `name`.
async fn unary_served_by(url: &str, name: &str) -> bool {
    let Ok(mut client) = EchoClient::connect(url.to_string()).await else {
        return false;
    };
    let req = EchoRequest {
        message: "hi".into(),
        fail_with: 0,
    };
    client
        .unary(req)
        .await
        .is_ok_and(|r| r.get_ref().served_by == name)
}

fn route(name: &str, spec: Value) -> Value {
    json!({"kind": "HTTPRoute", "metadata": {"name": name, "namespace": NS}, "spec": spec})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproutes_route_filter_and_report_status() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let env = Env::start(&[&v1, &v2]).await;
    // HTTPRouteMatching's rules, plus filters on their own paths.
    env.kube.apply(route(
        "matching",
        json!({
            "parentRefs": [{"name": "gw"}],
            "hostnames": ["example.com"],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}},
                             {"headers": [{"name": "version", "value": "one"}]}],
                 "backendRefs": [{"name": "v1", "port": 8080}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/v2"}},
                             {"headers": [{"name": "version", "value": "two"}]}],
                 "backendRefs": [{"name": "v2", "port": 8080}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/set"}}],
                 "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {
                     "set": [{"name": "X-Header-Set", "value": "set-overwrites-values"}],
                     "remove": ["X-Header-Remove"]}},
                             {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                     "add": [{"name": "X-Resp-Add", "value": "added"}]}}],
                 "backendRefs": [{"name": "v1", "port": 8080}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/hostname-redirect"}}],
                 "filters": [{"type": "RequestRedirect",
                              "requestRedirect": {"hostname": "example.org"}}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/original-prefix"}}],
                 "filters": [{"type": "RequestRedirect", "requestRedirect": {"path": {
                     "type": "ReplacePrefixMatch", "replacePrefixMatch": "/replacement-prefix"}}}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/prefix/one"}}],
                 "filters": [{"type": "URLRewrite", "urlRewrite": {"hostname": "one.example.org",
                     "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/one"}}}],
                 "backendRefs": [{"name": "v2", "port": 8080}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/cors"}}],
             "filters": [{"type": "CORS", "cors": {
                 "allowOrigins": ["https://www.foo.com", "https://*.bar.com"],
                 "allowMethods": ["GET", "POST"], "allowCredentials": true}}],
             "backendRefs": [{"name": "v1", "port": 8080}]},
            {"matches": [{"path": {"type": "Exact", "value": "/missing"}}],
                 "backendRefs": [{"name": "nonexistent", "port": 8080}]}
            ]
        }),
    ));
    eventually(Duration::from_secs(15), "the route is served", || async {
        env.backend("example.com", "/v2/x", &[]).await == "v2"
    })
    .await;
    type Row<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let table: &[Row] = &[
        ("/", &[], "v1"),
        ("/example", &[], "v1"),
        ("/", &[("version", "two")], "v2"),
        ("/v2example", &[], "v1"),
        ("/missing", &[], "500"),
    ];
    for (path, headers, want) in table {
        assert_eq!(
            &env.backend("example.com", path, headers).await,
            want,
            "{path} {headers:?}"
        );
    }
    // Another host: no route.
    assert_eq!(env.backend("example.net", "/", &[]).await, "404");

    let (status, echo, _) = env
        .get(
            "example.com",
            "/set",
            &[("X-Header-Set", "old"), ("X-Header-Remove", "x")],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(echo["headers"]["x-header-set"], "set-overwrites-values");
    assert!(echo["headers"].get("x-header-remove").is_none(), "{echo}");
    let resp = env
        .client
        .get(env.gw.url("/set"))
        .header("host", "example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-resp-add"], "added");

    let (status, _, location) = env.get("example.com", "/hostname-redirect?a=1", &[]).await;
    assert_eq!(
        (status, location.as_str()),
        (302, "http://example.org/hostname-redirect?a=1")
    );
    let (status, _, location) = env.get("example.com", "/original-prefix/lemon", &[]).await;
    assert_eq!(
        (status, location.as_str()),
        (302, "http://example.com/replacement-prefix/lemon")
    );
    let (status, echo, _) = env.get("example.com", "/prefix/one/two?q=1", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(echo["uri"], "/one/two?q=1");
    assert_eq!(echo["headers"]["host"], "one.example.org");

    // CORS: a preflight from an origin a wildcard admits, and one it does not.
    let allow = |origin: &'static str| {
        let env = &env;
        async move {
            let resp = env
                .client
                .request(reqwest::Method::OPTIONS, env.gw.url("/cors"))
                .header("host", "example.com")
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .send()
                .await
                .unwrap();
            resp.headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap().to_string())
        }
    };
    assert_eq!(
        allow("https://a.bar.com").await.as_deref(),
        Some("https://a.bar.com")
    );
    assert_eq!(
        allow("https://www.foo.com").await.as_deref(),
        Some("https://www.foo.com")
    );
    assert_ne!(
        allow("https://evil.com").await.as_deref(),
        Some("https://evil.com")
    );

    // Status: the class, the Gateway (programmed, one route attached, the published
    // address) and the route (accepted; one ref does not resolve).
    // Routes are patched before their Gateway: wait for the Gateway's.
    eventually(Duration::from_secs(10), "status written", || async {
        condition(
            &env.status("HTTPRoute", NS, "matching")["parents"][0]["conditions"],
            "Accepted",
        )
        .is_some()
            && condition(&env.status("Gateway", NS, "gw")["conditions"], "Programmed").is_some()
    })
    .await;
    let class = env.status("GatewayClass", "", "ours");
    assert_eq!(
        condition(&class["conditions"], "Accepted"),
        Some(("True".into(), "Accepted".into(), 1))
    );
    let gw = env.status("Gateway", NS, "gw");
    assert_eq!(
        condition(&gw["conditions"], "Programmed"),
        Some(("True".into(), "Programmed".into(), 1))
    );
    assert_eq!(
        gw["addresses"],
        json!([{"type": "IPAddress", "value": "203.0.113.7"}])
    );
    assert_eq!(gw["listeners"][0]["attachedRoutes"], 1);
    let parent = &env.status("HTTPRoute", NS, "matching")["parents"][0];
    assert_eq!(parent["controllerName"], CONTROLLER);
    assert_eq!(parent["parentRef"]["name"], "gw");
    assert_eq!(
        condition(&parent["conditions"], "Accepted"),
        Some(("True".into(), "Accepted".into(), 1))
    );
    assert_eq!(
        condition(&parent["conditions"], "ResolvedRefs"),
        Some(("False".into(), "BackendNotFound".into(), 1))
    );

    // A spec change moves observedGeneration; an unchanged pass writes no status.
    let patches_before = env.kube.status_patches_of("HTTPRoute").len();
    env.kube.apply(route(
        "matching",
        json!({
            "parentRefs": [{"name": "gw"}],
            "hostnames": ["example.com"],
            "rules": [{"backendRefs": [{"name": "v2", "port": 8080}]}]
        }),
    ));
    eventually(Duration::from_secs(15), "generation 2 observed", || async {
        let st = env.status("HTTPRoute", NS, "matching");
        condition(&st["parents"][0]["conditions"], "ResolvedRefs")
            == Some(("True".into(), "ResolvedRefs".into(), 2))
    })
    .await;
    assert_eq!(env.backend("example.com", "/example", &[]).await, "v2");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let patches = env.kube.status_patches_of("HTTPRoute").len();
    assert_eq!(patches, patches_before + 1, "one patch for one change");

    // Deleted: 404, and the Gateway counts no route.
    env.kube.delete("HTTPRoute", NS, "matching");
    eventually(Duration::from_secs(15), "route removed", || async {
        env.backend("example.com", "/example", &[]).await == "404"
    })
    .await;
    eventually(Duration::from_secs(10), "attachedRoutes 0", || async {
        env.status("Gateway", NS, "gw")["listeners"][0]["attachedRoutes"] == 0
    })
    .await;
    assert!(
        env.kube.unknown_requests().is_empty(),
        "{:?}",
        env.kube.unknown_requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_changes_under_keepalive_load_lose_no_request() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let env = Env::start(&[&v1, &v2]).await;
    let spec = |weights: (i32, i32)| {
        json!({"parentRefs": [{"name": "gw"}], "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/load"}}],
            "backendRefs": [{"name": "v1", "port": 8080, "weight": weights.0},
                            {"name": "v2", "port": 8080, "weight": weights.1}]}]})
    };
    env.kube.apply(route("churn", spec((1, 0))));
    eventually(Duration::from_secs(15), "served", || async {
        env.backend("any", "/load", &[]).await == "v1"
    })
    .await;
    // An Ingress of the same controller beside the Gateway API: both are served.
    env.kube
        .apply(json!({"kind": "IngressClass", "metadata": {"name": "ours"},
                          "spec": {"controller": CONTROLLER}}));
    env.kube.apply(
        json!({"kind": "Ingress", "metadata": {"name": "legacy", "namespace": NS},
        "spec": {"ingressClassName": "ours", "rules": [{"http": {"paths": [{
            "path": "/ingress", "pathType": "Prefix",
            "backend": {"service": {"name": "v2", "port": {"number": 8080}}}}]}}]}}),
    );
    eventually(
        Duration::from_secs(15),
        "the Ingress is served too",
        || async { env.backend("any", "/ingress/x", &[]).await == "v2" },
    )
    .await;
    let load = Load::start(&[env.gw.url("/load"), env.gw.url("/ingress/x")], 4);
    load.wait_more_ok(50).await;
    // Shift the weights back and forth, add and remove a second route beside it, and
    // change the Gateway's listeners.
    for round in 0..6 {
        let w = if round % 2 == 0 { (0, 1) } else { (1, 1) };
        env.kube.apply(route("churn", spec(w)));
        env.kube.apply(route(
            &format!("extra-{round}"),
            json!({"parentRefs": [{"name": "gw"}],
            "rules": [{"matches": [{"path": {"type": "Exact", "value": format!("/extra/{round}")}}],
                       "backendRefs": [{"name": "v2", "port": 8080}]}]}),
        ));
        if round > 0 {
            env.kube
                .delete("HTTPRoute", NS, &format!("extra-{}", round - 1));
        }
        let mut listeners = vec![json!({"name": "http", "port": 80, "protocol": "HTTP"})];
        if round % 2 == 1 {
            listeners.push(json!({"name": "other", "port": 8080, "protocol": "HTTP",
                                  "hostname": format!("round-{round}.example")}));
        }
        env.kube.apply(
            json!({"kind": "Gateway", "metadata": {"name": "gw", "namespace": NS},
            "spec": {"gatewayClassName": "ours", "listeners": listeners}}),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eventually(Duration::from_secs(15), "the last weights hold", || async {
        env.backend("any", "/extra/5", &[]).await == "v2"
    })
    .await;
    load.wait_more_ok(50).await;
    let report = load.stop().await;
    assert_eq!(report.failed, 0, "{report:?}");
    assert!(v1.hits() > 0 && v2.hits() > 0);
}

/// `ingress-sync/tests/fixtures/gateway-api/`: the objects, and the conformance tables the
/// translation tests check through the router, here through a real gateway.
fn fixture_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ingress-sync/tests/fixtures/gateway-api")
}

fn objects(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixture_dir().join(name)).unwrap();
    serde_saphyr::from_multiple(&text).unwrap()
}

/// What a request got, in `expectations.yaml`'s words.
async fn outcome(env: &Env, row: &Value) -> String {
    let mut req = env
        .client
        .request(
            row["method"].as_str().unwrap_or("GET").parse().unwrap(),
            env.gw.url(row["path"].as_str().unwrap()),
        )
        .header("host", row["host"].as_str().unwrap());
    for (k, v) in row["headers"].as_object().into_iter().flatten() {
        req = req.header(k.as_str(), v.as_str().unwrap());
    }
    let Ok(resp) = req.send().await else {
        return "no answer".into();
    };
    let status = resp.status().as_u16();
    if (300..400).contains(&status) {
        let to = resp.headers()["location"].to_str().unwrap().to_string();
        return format!("redirect {status} {to}");
    }
    if status != 200 {
        return status.to_string();
    }
    let echo: Value = resp.json().await.unwrap_or(Value::Null);
    let backend = echo["backend"].as_str().unwrap_or_default().to_string();
    // Rows that name a path check what the backend received.
    match row["want"].as_str().unwrap().split_once(' ') {
        Some(_) => format!("{backend} {}", echo["uri"].as_str().unwrap_or_default()),
        None => backend,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_tables_hold_through_a_real_gateway() {
    let infra = objects("infra.yaml");
    let expectations: Vec<Value> = serde_saphyr::from_str(
        &std::fs::read_to_string(fixture_dir().join("expectations.yaml")).unwrap(),
    )
    .unwrap();
    // One echo backend per Service of the fixtures, named as the Service.
    let mut services: Vec<(String, String)> = Vec::new();
    for e in &expectations {
        for o in infra.iter().chain(&objects(e["fixture"].as_str().unwrap())) {
            if o["kind"] == "Service" {
                let key = (
                    o["metadata"]["namespace"].as_str().unwrap().to_string(),
                    o["metadata"]["name"].as_str().unwrap().to_string(),
                );
                if !services.contains(&key) {
                    services.push(key);
                }
            }
        }
    }
    let mut backends = Vec::new();
    for (_, name) in &services {
        backends.push(Backend::start(name).await);
    }
    let env = Env::start(&[]).await;
    for o in &infra {
        let mut o = o.clone();
        // The fixtures' class names the translation tests' controller.
        if o["spec"]["controllerName"] == "example.com/gw" {
            o["spec"]["controllerName"] = json!(CONTROLLER);
        }
        env.kube.apply(o);
    }
    for ((ns, name), b) in services.iter().zip(&backends) {
        env.kube.apply(json!({"kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": ns,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": b.addr.port()}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]}));
    }
    let mut checked = 0;
    for e in &expectations {
        let fixture = e["fixture"].as_str().unwrap();
        let objs = objects(fixture);
        for o in &objs {
            env.kube.apply(o.clone());
        }
        let rows = e["requests"].as_array().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut wrong = Vec::new();
            for row in rows {
                let got = outcome(&env, row).await;
                if got != row["want"].as_str().unwrap() {
                    wrong.push(format!("{row} got {got:?}"));
                }
            }
            if wrong.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{fixture}: {} of {} requests differ:\n{}",
                wrong.len(),
                rows.len(),
                wrong.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        checked += rows.len();
        // The next fixture starts from the infrastructure alone.
        for o in &objs {
            let kind = o["kind"].as_str().unwrap();
            let ns = o["metadata"]["namespace"].as_str().unwrap_or_default();
            env.kube
                .delete(kind, ns, o["metadata"]["name"].as_str().unwrap());
        }
    }
    assert!(checked > 100, "{checked}");
    assert!(
        env.kube.unknown_requests().is_empty(),
        "{:?}",
        env.kube.unknown_requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_share_the_traffic_and_an_unresolved_ref_answers_its_share_500() {
    let (v1, v2, v3) = (
        Backend::start("v1").await,
        Backend::start("v2").await,
        Backend::start("v3").await,
    );
    let env = Env::start(&[&v1, &v2, &v3]).await;
    // HTTPRouteWeight: 70 / 30 / 0.
    env.kube.apply(route(
        "weights",
        json!({"parentRefs": [{"name": "gw"}],
        "hostnames": ["weights.example"],
        "rules": [{"backendRefs": [{"name": "v1", "port": 8080, "weight": 70},
                                   {"name": "v2", "port": 8080, "weight": 30},
                                   {"name": "v3", "port": 8080, "weight": 0}]}]}),
    ));
    // One ref of two does not resolve: half of the requests are answered 500.
    env.kube.apply(route(
        "half",
        json!({"parentRefs": [{"name": "gw"}],
        "hostnames": ["half.example"],
        "rules": [{"backendRefs": [{"name": "v1", "port": 8080},
                                   {"name": "nonexistent", "port": 8080}]}]}),
    ));
    eventually(Duration::from_secs(15), "both served", || async {
        env.backend("weights.example", "/", &[])
            .await
            .starts_with('v')
            && env.backend("half.example", "/", &[]).await != "404"
    })
    .await;
    let count = |answers: &[String], what: &str| answers.iter().filter(|a| *a == what).count();
    let mut answers = Vec::new();
    for _ in 0..500 {
        answers.push(env.backend("weights.example", "/", &[]).await);
    }
    let (n1, n2, n3) = (
        count(&answers, "v1"),
        count(&answers, "v2"),
        count(&answers, "v3"),
    );
    // The conformance suite allows 5 percentage points either way.
    assert!(
        (325..=375).contains(&n1) && (125..=175).contains(&n2) && n3 == 0,
        "{n1} {n2} {n3}"
    );
    let mut answers = Vec::new();
    for _ in 0..400 {
        answers.push(env.backend("half.example", "/", &[]).await);
    }
    let (ok, failed) = (count(&answers, "v1"), count(&answers, "500"));
    assert_eq!(ok + failed, 400);
    assert!(
        (160..=240).contains(&failed),
        "{failed} of 400 answered 500"
    );
}

/// HTTPRouteBackendRequestHeaderModifier (`request-header-modifier-backend-weights` in
/// the conformance suite), with response headers too: a backendRef's own filters act on
/// exactly the requests sent to it, after the rule's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backends_own_filters_apply_only_to_the_requests_it_gets() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let env = Env::start(&[&v1, &v2]).await;
    let backend = |name: &str, weight: i32| {
        json!({"name": name, "port": 8080, "weight": weight, "filters": [
            {"type": "RequestHeaderModifier",
             "requestHeaderModifier": {"set": [{"name": "Backend", "value": name}],
                                       "remove": ["X-Rule-Removes"]}},
            {"type": "ResponseHeaderModifier",
             "responseHeaderModifier": {"add": [{"name": "X-Served-By", "value": name}]}}]})
    };
    env.kube.apply(route(
        "backend-filters",
        json!({"parentRefs": [{"name": "gw"}],
        "hostnames": ["backend-filters.example"],
        "rules": [{
            "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {
                "set": [{"name": "X-Rule", "value": "r"}, {"name": "X-Rule-Removes", "value": "r"}]}}],
            "backendRefs": [backend("v1", 1), backend("v2", 3)]}]}),
    ));
    eventually(Duration::from_secs(15), "served", || async {
        env.backend("backend-filters.example", "/", &[])
            .await
            .starts_with('v')
    })
    .await;
    let mut got = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..200 {
        let resp = env
            .client
            .get(env.gw.url("/"))
            .header("host", "backend-filters.example")
            .header("backend", "from-the-client")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let served_by: Vec<String> = resp
            .headers()
            .get_all("x-served-by")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        let body: Value = resp.json().await.unwrap();
        let name = body["backend"].as_str().unwrap().to_string();
        // The chosen backend's filters, and only its own.
        assert_eq!(body["headers"]["backend"], name.as_str(), "{body}");
        assert_eq!(served_by, std::slice::from_ref(&name));
        // The rule's filters ran first, for every request.
        assert_eq!(body["headers"]["x-rule"], "r", "{body}");
        assert!(body["headers"].get("x-rule-removes").is_none(), "{body}");
        *got.entry(name).or_default() += 1;
    }
    // Weights 1:3 (smooth weighted round robin gives exactly 50, unless a change of the
    // route restarted the rotation meanwhile).
    let v1 = got.get("v1").copied().unwrap_or_default();
    assert!((40..=60).contains(&v1), "{got:?}");
    assert_eq!(got.values().sum::<usize>(), 200, "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcroutes_send_each_method_to_its_backend_over_h2c() {
    let (g1, g2) = (
        GrpcBackend::start("g1").await,
        GrpcBackend::start("g2").await,
    );
    let env = Env::start(&[]).await;
    service(&env.kube, "g1", g1.addr.port());
    service(&env.kube, "g2", g2.addr.port());
    env.kube.apply(
        json!({"kind": "GRPCRoute", "metadata": {"name": "echo", "namespace": NS},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [
            {"matches": [{"method": {"service": "test.echo.Echo", "method": "Unary"}}],
             "backendRefs": [{"name": "g1", "port": 8080}]},
            {"matches": [{"method": {"service": "test.echo.Echo"}}],
             "backendRefs": [{"name": "g2", "port": 8080}]}]}}),
    );
    let url = format!("http://{}", env.gw.http);
    eventually(Duration::from_secs(15), "the unary call reaches g1", || {
        unary_served_by(&url, "g1")
    })
    .await;
    // The streaming method matches the service alone: g2.
    let mut client = EchoClient::connect(url).await.unwrap();
    let out = futures_util::stream::iter(vec![EchoRequest {
        message: "a".into(),
        fail_with: 0,
    }]);
    let mut replies = client.chat(out).await.unwrap().into_inner();
    let first = replies.message().await.unwrap().unwrap();
    assert_eq!(first.served_by, "g2");
    eventually(Duration::from_secs(10), "GRPCRoute accepted", || async {
        let st = env.status("GRPCRoute", NS, "echo");
        condition(&st["parents"][0]["conditions"], "Accepted")
            == Some(("True".into(), "Accepted".into(), 1))
    })
    .await;
}

/// Backend protocol selection (GEP-1911; the conformance suite's
/// HTTPRouteBackendProtocolH2C and HTTPRouteBackendProtocolWebSocket): the Service
/// port's `appProtocol` says h2c (an HTTP/2-only backend, reached by an HTTPRoute) or
/// WebSocket; one that cannot be spoken is an unresolved ref.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_protocols_reach_h2c_and_websocket_backends() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let h2c = GrpcBackend::start("h2c").await;
    let ws = e2e::ws::WsBackend::start("ws").await;
    let env = Env::start(&[]).await;
    service_speaking(&env.kube, "h2c", h2c.addr.port(), Some("kubernetes.io/h2c"));
    service_speaking(&env.kube, "ws", ws.addr.port(), Some("kubernetes.io/ws"));
    service_speaking(&env.kube, "wss", ws.addr.port(), Some("kubernetes.io/wss"));
    env.kube.apply(route(
        "h2c",
        json!({"parentRefs": [{"name": "gw"}], "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/test.echo.Echo/"}}],
            "backendRefs": [{"name": "h2c", "port": 8080}]}]}),
    ));
    env.kube.apply(route(
        "ws",
        json!({"parentRefs": [{"name": "gw"}], "hostnames": ["ws.example"],
        "rules": [{"backendRefs": [{"name": "ws", "port": 8080}]}]}),
    ));
    env.kube.apply(route(
        "wss",
        json!({"parentRefs": [{"name": "gw"}], "hostnames": ["wss.example"],
        "rules": [{"backendRefs": [{"name": "wss", "port": 8080}]}]}),
    ));
    // The backend speaks HTTP/2 only: an HTTP/1.1 upstream request would fail.
    let url = format!("http://{}", env.gw.http);
    eventually(
        Duration::from_secs(15),
        "a unary call through the HTTPRoute",
        || unary_served_by(&url, "h2c"),
    )
    .await;
    let ws_url = format!("ws://{}/chat", env.gw.http);
    let handshake = || async {
        let mut req = ws_url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("host", "ws.example".parse().unwrap());
        tokio_tungstenite::connect_async(req).await
    };
    eventually(Duration::from_secs(15), "the WebSocket route", || async {
        handshake().await.is_ok()
    })
    .await;
    let (mut conn, _) = handshake().await.unwrap();
    conn.send(Message::text("hello")).await.unwrap();
    let reply = conn.next().await.unwrap().unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "ws: hello");
    // WebSocket over TLS to the backend is not spoken here: ResolvedRefs False, 500.
    eventually(Duration::from_secs(15), "wss refused", || async {
        let st = env.status("HTTPRoute", NS, "wss");
        condition(&st["parents"][0]["conditions"], "ResolvedRefs").map(|c| c.1)
            == Some("UnsupportedProtocol".into())
    })
    .await;
    assert_eq!(env.backend("wss.example", "/", &[]).await, "500");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_listener_serves_its_certificate_for_its_routes_names() {
    let v1 = Backend::start("v1").await;
    let env = Env::start(&[&v1]).await;
    let (cert, key) = e2e::tls::self_signed(&["example.org"]);
    env.kube
        .apply(json!({"kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "site", "namespace": NS},
        "stringData": {"tls.crt": cert, "tls.key": key}}));
    // HTTPRouteHTTPSListener: a listener without a hostname, a route with one.
    env.kube.apply(
        json!({"kind": "Gateway", "metadata": {"name": "gw", "namespace": NS},
        "spec": {"gatewayClassName": "ours", "listeners": [
            {"name": "http", "port": 80, "protocol": "HTTP"},
            {"name": "https", "port": 443, "protocol": "HTTPS",
             "tls": {"certificateRefs": [{"name": "site"}]}}]}}),
    );
    env.kube.apply(route(
        "secure",
        json!({
        "parentRefs": [{"name": "gw", "sectionName": "https"}],
        "hostnames": ["example.org"],
        "rules": [{"backendRefs": [{"name": "v1", "port": 8080}]}]}),
    ));
    let https = env.gw.https();
    eventually(
        Duration::from_secs(15),
        "served over HTTPS by SNI",
        || async {
            e2e::tls::get(https, "example.org", &cert, &[b"http/1.1"], "/x")
                .await
                .is_ok_and(|a| a.status == 200 && a.body.contains("\"v1\""))
        },
    )
    .await;
    // Attached to the HTTPS listener only: not served over plain HTTP.
    assert_eq!(env.backend("example.org", "/x", &[]).await, "404");
    eventually(Duration::from_secs(10), "the listener's status", || async {
        let gw = env.status("Gateway", NS, "gw");
        let Some(l) = gw["listeners"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["name"] == "https").cloned())
        else {
            return false;
        };
        // Generation 2: the Gateway of `Env::start`, given its HTTPS listener.
        l["attachedRoutes"] == 1
            && condition(&l["conditions"], "ResolvedRefs")
                == Some(("True".into(), "ResolvedRefs".into(), 2))
    })
    .await;
}
