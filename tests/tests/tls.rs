//! HTTPS through a real gateway: certificates written through the Admin API (keys
//! encrypted at rest) are chosen per handshake by SNI, rotated with no failed handshake,
//! and served over HTTP/1.1 and HTTP/2 alike; `https` upstreams are verified.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::backend::BackendOptions;
use e2e::tls::{self, TestCa};
use e2e::{eventually, AdminApi, Backend, Etcd, Gateway};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEYRING: &str = "0123456789abcdef";

struct Tls {
    etcd: Etcd,
    admin: AdminApi,
    gw: Gateway,
    ca: TestCa,
    /// Serves the route `/`; kept alive for the test.
    backend: Backend,
}

impl Tls {
    /// etcd, an admin-api and a gateway sharing a keyring, and a route `/` to a backend.
    async fn start() -> Tls {
        Self::start_with(&[]).await
    }

    /// [`Tls::start`] with more gateway flags.
    async fn start_with(gateway_args: &[&str]) -> Tls {
        let etcd = Etcd::start();
        let admin = AdminApi::start_with_env(
            &etcd.url,
            "/gw",
            "tls-test-admin-key",
            &[("DATA_ENCRYPTION_KEYS", KEYRING)],
        );
        let keyring = format!("--data-encryption-keys={KEYRING}");
        let mut args = vec![keyring.as_str()];
        args.extend_from_slice(gateway_args);
        let gw = Gateway::start(&etcd.url, "/gw", &args);
        gw.wait_ready().await;
        let backend = Backend::start("app").await;
        admin
            .ok(
                "PUT",
                "/routes/app",
                Some(json!({"uri": "/*", "upstream": {"nodes": {backend.node(): 1}}})),
            )
            .await;
        Tls {
            etcd,
            admin,
            gw,
            ca: TestCa::new("test ca"),
            backend,
        }
    }

    async fn put_ssl(&self, id: &str, snis: &[&str], pair: &(String, String)) {
        self.admin
            .ok(
                "PUT",
                &format!("/ssls/{id}"),
                Some(json!({"snis": snis, "cert": pair.0, "key": pair.1})),
            )
            .await;
    }

    async fn wait_ssls(&self, n: u64) {
        eventually(
            Duration::from_secs(3),
            &format!("{n} ssls loaded"),
            || async { self.gw.status_json().await["ssls"].as_u64() == Some(n) },
        )
        .await;
    }

    /// The leaf certificate served for `sni`, or the handshake error.
    async fn cert_for(&self, sni: &str) -> Result<Vec<u8>, String> {
        tls::connect(self.gw.https(), sni, &self.ca.pem(), &[b"http/1.1"])
            .await
            .map(|s| tls::peer_cert(&s))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_by_sni_exact_then_one_label_wildcard() {
    let t = Tls::start().await;
    let exact = t.ca.leaf(&["www.example.com"]);
    let wildcard = t.ca.leaf(&["*.example.com"]);
    t.put_ssl("1", &["www.example.com"], &exact).await;
    t.put_ssl("2", &["*.example.com"], &wildcard).await;
    t.wait_ssls(2).await;
    assert_eq!(
        t.cert_for("www.example.com").await.unwrap(),
        tls::der(&exact.0)
    );
    assert_eq!(
        t.cert_for("api.example.com").await.unwrap(),
        tls::der(&wildcard.0)
    );
    assert_eq!(
        t.cert_for("API.Example.com").await.unwrap(),
        tls::der(&wildcard.0)
    );
    // A wildcard covers one label: neither the parent nor a two-label name.
    for sni in ["a.b.example.com", "example.com", "other.org"] {
        let err = t.cert_for(sni).await.expect_err(sni);
        assert!(err.contains("handshake"), "{sni}: {err}");
    }
    // The gateway answers over TLS with the route, telling the node it was HTTPS.
    let answer = tls::get(
        t.gw.https(),
        "www.example.com",
        &t.ca.pem(),
        &[b"http/1.1"],
        "/hi",
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200);
    let echo: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(echo["backend"], t.backend.name);
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");

    // The private key is not in etcd in plaintext.
    let raw = t.etcd.ctl(&["get", "/gw/ssls/1", "--print-value-only"]);
    let stored: Value = serde_json::from_str(raw.trim()).unwrap();
    assert!(!stored["key"].as_str().unwrap().contains("PRIVATE KEY"));
    assert!(!raw.contains(exact.1.lines().nth(1).unwrap()));

    // Disabled or deleted certificates stop serving their names at the next handshake.
    t.admin
        .ok("PATCH", "/ssls/2", Some(json!({"status": 0})))
        .await;
    eventually(Duration::from_secs(2), "disabled wildcard gone", || async {
        t.cert_for("api.example.com").await.is_err()
    })
    .await;
    // A connection opened before the delete keeps working after it.
    let open = tls::connect(t.gw.https(), "www.example.com", &t.ca.pem(), &[b"http/1.1"])
        .await
        .unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(open))
        .await
        .unwrap();
    tokio::spawn(conn);
    let get = || {
        http::Request::get("/kept")
            .header("host", "www.example.com")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    assert_eq!(tx.send_request(get()).await.unwrap().status(), 200);
    t.admin.ok("DELETE", "/ssls/1", None).await;
    eventually(
        Duration::from_secs(2),
        "deleted certificate gone",
        || async { t.cert_for("www.example.com").await.is_err() },
    )
    .await;
    assert_eq!(tx.send_request(get()).await.unwrap().status(), 200);
    assert!(t.gw.metric("gateway_tls_unknown_sni_total").await > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_without_sni_gets_the_fallback_certificate_if_one_is_set() {
    let t = Tls::start_with(&["--tls-fallback-sni=default.example.com"]).await;
    let fallback = t.ca.leaf(&["*.example.com"]);
    let other = t.ca.leaf(&["other.org"]);
    t.put_ssl("1", &["*.example.com"], &fallback).await;
    t.put_ssl("2", &["other.org"], &other).await;
    t.wait_ssls(2).await;
    // No SNI: the certificate the fallback name resolves to (here through a wildcard).
    let stream = tls::connect_without_sni(t.gw.https(), "default.example.com", &t.ca.pem())
        .await
        .unwrap();
    assert_eq!(tls::peer_cert(&stream), tls::der(&fallback.0));
    // A client that sends a name still gets that name's certificate, and an unknown name
    // is refused as before: the fallback is for missing SNI only.
    assert_eq!(t.cert_for("other.org").await.unwrap(), tls::der(&other.0));
    assert!(t.cert_for("unknown.net").await.is_err());

    // Without the flag, a handshake without SNI is refused and counted.
    let plain = Tls::start().await;
    plain.put_ssl("1", &["*.example.com"], &fallback).await;
    plain.wait_ssls(1).await;
    let err = tls::connect_without_sni(plain.gw.https(), "default.example.com", &t.ca.pem())
        .await
        .expect_err("no fallback configured");
    assert!(err.contains("handshake"), "{err}");
    assert!(plain.gw.metric("gateway_tls_unknown_sni_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_continuous_handshakes_fails_none() {
    let t = Arc::new(Tls::start().await);
    let old = t.ca.leaf(&["shop.example.com"]);
    let new = t.ca.leaf(&["shop.example.com"]);
    t.put_ssl("shop", &["shop.example.com"], &old).await;
    t.wait_ssls(1).await;
    assert_eq!(
        t.cert_for("shop.example.com").await.unwrap(),
        tls::der(&old.0)
    );

    // Two clients handshake back to back, each on a fresh connection, recording what was
    // served and when.
    let stop = Arc::new(AtomicBool::new(false));
    // (started, finished, what was served)
    type Seen = Vec<(Instant, Instant, Result<Vec<u8>, String>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (t, stop, seen) = (t.clone(), stop.clone(), seen.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let r = t.cert_for("shop.example.com").await;
                seen.lock().unwrap().push((started, Instant::now(), r));
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Measured from before the write: an upper bound of the propagation.
    let written = Instant::now();
    t.put_ssl("shop", &["shop.example.com"], &new).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let seen = seen.lock().unwrap();
    let failed: Vec<_> = seen
        .iter()
        .filter_map(|(_, _, r)| r.as_ref().err())
        .collect();
    assert!(failed.is_empty(), "failed handshakes: {failed:?}");
    let (old_der, new_der) = (tls::der(&old.0), tls::der(&new.0));
    let first_new = seen
        .iter()
        .find(|(_, _, r)| r.as_ref().unwrap() == &new_der)
        .map(|(_, at, _)| *at)
        .expect("the new certificate was served");
    assert!(
        first_new.saturating_duration_since(written) < Duration::from_secs(1),
        "new certificate after {:?}",
        first_new.saturating_duration_since(written)
    );
    // Once the new one is served, a handshake started later never gets the old one.
    let old_after = seen
        .iter()
        .filter(|(started, _, r)| *started > first_new && r.as_ref().unwrap() == &old_der)
        .count();
    assert_eq!(old_after, 0);
    assert!(seen.len() > 50, "only {} handshakes", seen.len());
    println!(
        "{} handshakes, 0 failed; new certificate served {:?} after the admin write",
        seen.len(),
        first_new.saturating_duration_since(written)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_tls_and_h2c_route_like_http1() {
    let t = Tls::start().await;
    let pair = t.ca.leaf(&["app.example.com"]);
    t.put_ssl("1", &["app.example.com"], &pair).await;
    let api = Backend::start("api").await;
    t.admin
        .ok(
            "PUT",
            "/routes/api",
            Some(
                json!({"uri": "/api/*", "hosts": ["app.example.com"], "methods": ["GET"],
                        "upstream": {"nodes": {api.node(): 1}}, "priority": 1}),
            ),
        )
        .await;
    t.wait_ssls(1).await;
    t.gw.wait_routes(2).await;
    let ca = t.ca.pem();
    let h2 = tls::get(
        t.gw.https(),
        "app.example.com",
        &ca,
        &[b"h2", b"http/1.1"],
        "/api/x",
    )
    .await
    .unwrap();
    let h1 = tls::get(
        t.gw.https(),
        "app.example.com",
        &ca,
        &[b"http/1.1"],
        "/api/x",
    )
    .await
    .unwrap();
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(h2.version, http::Version::HTTP_2);
    assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(h1.version, http::Version::HTTP_11);
    for a in [&h2, &h1] {
        assert_eq!(a.status, 200);
        let echo: Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(echo["uri"], "/api/x", "{echo}");
        assert_eq!(echo["backend"], "api", "{echo}");
        assert_eq!(echo["headers"]["host"], "app.example.com", "{echo}");
    }
    // The same request in the clear with HTTP/2 prior knowledge routes the same way, on
    // `:authority` (a `host` header differing from it would be malformed: RFC 9113 §8.3.1).
    let port = t.gw.http.port();
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("app.example.com", t.gw.http)
        .build()
        .unwrap()
        .get(format!("http://app.example.com:{port}/api/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(h2c.version(), http::Version::HTTP_2);
    let echo: Value = h2c.json().await.unwrap();
    assert_eq!(
        (&echo["uri"], &echo["backend"]),
        (&json!("/api/x"), &json!("api"))
    );
    assert_eq!(echo["headers"]["x-forwarded-proto"], "http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_is_verified() {
    let t = Tls::start().await;
    let node_ca = TestCa::new("node ca");
    let other_ca = TestCa::new("other ca");
    // One node serves a certificate for its IP, another only for a name.
    let ip_pair = node_ca.leaf(&["127.0.0.1"]);
    let name_pair = node_ca.leaf(&["backend.internal"]);
    let by_ip = Backend::start_with(
        "secure-ip",
        BackendOptions {
            tls: Some(tls::server_config(&ip_pair.0, &ip_pair.1)),
            ..Default::default()
        },
    )
    .await;
    let by_name = Backend::start_with(
        "secure-name",
        BackendOptions {
            tls: Some(tls::server_config(&name_pair.0, &name_pair.1)),
            ..Default::default()
        },
    )
    .await;
    let route = |id: &str, upstream: Value| {
        let admin = &t.admin;
        let id = id.to_string();
        async move {
            admin
                .ok(
                    "PUT",
                    &format!("/routes/{id}"),
                    Some(json!({"uri": format!("/{id}"), "upstream": upstream})),
                )
                .await
        }
    };
    route(
        "good",
        json!({"scheme": "https", "nodes": {by_ip.node(): 1}, "tls": {"ca": node_ca.pem()}}),
    )
    .await;
    route(
        "wrong-ca",
        json!({"scheme": "https", "nodes": {by_ip.node(): 1}, "tls": {"ca": other_ca.pem()}}),
    )
    .await;
    // The name to verify (and send as SNI) comes from upstream_host when it is rewritten.
    route(
        "by-name",
        json!({"scheme": "https", "nodes": {by_name.node(): 1}, "tls": {"ca": node_ca.pem()},
               "pass_host": "rewrite", "upstream_host": "backend.internal"}),
    )
    .await;
    route(
        "no-verify",
        json!({"scheme": "https", "nodes": {by_name.node(): 1}, "tls": {"verify": false}}),
    )
    .await;
    // Active `https` probes verify the node like traffic does.
    let checks = json!({"active": {"type": "https", "http_path": "/", "timeout": 1,
        "healthy": {"interval": 1, "successes": 1},
        "unhealthy": {"interval": 1, "tcp_failures": 1, "http_failures": 1}}});
    route(
        "probed",
        json!({"scheme": "https", "nodes": {by_ip.node(): 1}, "tls": {"ca": node_ca.pem()},
               "checks": checks}),
    )
    .await;
    route(
        "probed-wrong-ca",
        json!({"scheme": "https", "nodes": {by_ip.node(): 1}, "tls": {"ca": other_ca.pem()},
               "checks": checks}),
    )
    .await;
    t.gw.wait_routes(7).await;
    let health = |upstream: &'static str| {
        let gw = &t.gw;
        async move {
            let status = gw.status_json().await;
            status["upstream_health"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|n| n["upstream"] == upstream)
                .and_then(|n| n["healthy"].as_bool())
        }
    };
    eventually(
        Duration::from_secs(5),
        "wrong-CA probes mark the node down",
        || async { health("routes/probed-wrong-ca").await == Some(false) },
    )
    .await;
    assert_eq!(health("routes/probed").await, Some(true));
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(t.gw.url(path)).send();
    let good = get("/good").await.unwrap();
    assert_eq!(good.status(), 200);
    let echo: Value = good.json().await.unwrap();
    assert_eq!(echo["backend"], "secure-ip");
    let by_name_resp = get("/by-name").await.unwrap();
    assert_eq!(by_name_resp.status(), 200);
    assert_eq!(
        by_name_resp.json::<Value>().await.unwrap()["headers"]["host"],
        "backend.internal"
    );
    assert_eq!(get("/no-verify").await.unwrap().status(), 200);

    let bad = get("/wrong-ca").await.unwrap();
    assert_eq!(bad.status(), 502);
    let log = t.gw.proc.log();
    let line = log
        .lines()
        .find(|l| l.contains("upstream connect failed") && l.contains("TLS handshake"))
        .unwrap_or_else(|| panic!("no TLS failure logged:\n{log}"));
    assert!(line.contains(&by_ip.node()), "{line}");
    assert!(
        line.contains("UnknownIssuer") || line.contains("invalid peer certificate"),
        "{line}"
    );
}
