//! End-to-end: ingress-sync's real kube-rs client against the loopback Kubernetes API
//! server (`e2e::kube_api`), a real etcd, a real gateway and real backends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::kube_api::KubeApi;
use e2e::{eventually, Backend, Etcd, Gateway, IngressSync, Load};
use serde_json::{json, Value};
use std::time::Duration;

const PREFIX: &str = "/gw";
const CONTROLLER: &str = "example.com/ingress-sync";

struct Env {
    etcd: Etcd,
    gw: Gateway,
    kube: KubeApi,
    client: reqwest::Client,
}

impl Env {
    async fn start() -> Env {
        Self::start_with(&[]).await
    }

    async fn start_with(gateway_args: &[&str]) -> Env {
        Self::start_on(Etcd::start(), gateway_args).await
    }

    /// With this etcd (a secured one, say): every binary gets its client flags.
    async fn start_on(etcd: Etcd, gateway_args: &[&str]) -> Env {
        let mut args = etcd.client_flags();
        args.extend(gateway_args.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let gw = Gateway::start(&etcd.url, PREFIX, &args);
        gw.wait_ready().await;
        let kube = KubeApi::start().await;
        kube.apply(json!({"kind": "IngressClass", "metadata": {"name": "gw"},
                          "spec": {"controller": CONTROLLER}}));
        Env {
            etcd,
            gw,
            kube,
            client: reqwest::Client::new(),
        }
    }

    fn sync(&self, extra: &[&str]) -> IngressSync {
        let mut args = vec![
            format!("--controller-name={CONTROLLER}"),
            "--publish-address=203.0.113.7".to_string(),
            "--debounce-ms=50".to_string(),
        ];
        args.extend(self.etcd.client_flags());
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        IngressSync::start(&self.etcd.url, PREFIX, self.kube.kubeconfig(), &args)
    }

    /// Which backend answered, or the status.
    async fn who(&self, host: &str, path: &str) -> Result<String, u16> {
        let resp = self
            .client
            .get(self.gw.url(path))
            .header("host", host)
            .send()
            .await
            .map_err(|_| 0u16)?;
        if resp.status() != 200 {
            return Err(resp.status().as_u16());
        }
        let body: Value = resp.json().await.map_err(|_| 1u16)?;
        Ok(body["backend"].as_str().unwrap_or_default().to_string())
    }

    /// The keys under the prefix labelled as this ingress-sync's (our controller name).
    fn owned_keys(&self) -> Vec<String> {
        let out = self.etcd.ctl(&["get", "--prefix", &format!("{PREFIX}/")]);
        let lines: Vec<&str> = out.lines().collect();
        lines
            .chunks(2)
            .filter(|kv| {
                kv.len() == 2
                    && kv[1].contains("\"managed-by\":\"ingress-sync\"")
                    && kv[1].contains(&format!("\"ingress-controller\":\"{CONTROLLER}\""))
            })
            .map(|kv| kv[0].to_string())
            .collect()
    }
}

fn ingress(name: &str, host: Option<&str>, path: &str, service: &str) -> Value {
    let mut rule = json!({"http": {"paths": [{"path": path, "pathType": "Prefix",
        "backend": {"service": {"name": service, "port": {"name": "http"}}}}]}});
    if let Some(h) = host {
        rule["host"] = json!(h);
    }
    json!({"kind": "Ingress", "metadata": {"name": name, "namespace": "web"},
           "spec": {"ingressClassName": "gw", "rules": [rule]}})
}

fn service(name: &str) -> Value {
    json!({"kind": "Service", "metadata": {"name": name, "namespace": "web"},
           "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "web"}]}})
}

/// One EndpointSlice per backend: each has its own port (a named targetPort resolved per
/// slice), all on 127.0.0.1.
fn slice(service: &str, backend: &Backend) -> Value {
    json!({"kind": "EndpointSlice",
           "metadata": {"name": format!("{service}-{}", backend.name), "namespace": "web",
                        "labels": {"kubernetes.io/service-name": service}},
           "addressType": "IPv4",
           "ports": [{"name": "http", "port": backend.addr.port()}],
           "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_lifecycle_routes_scales_and_cleans_up() {
    let env = Env::start().await;
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    env.kube.apply(service("app"));
    env.kube.apply(slice("app", &a));
    // Keys someone else wrote — by hand, or another installation of ingress-sync with its
    // own controller name — are never touched.
    env.etcd.ctl(&[
        "put",
        &format!("{PREFIX}/routes/mine"),
        r#"{"id":"mine","uri":"/mine","upstream":{"nodes":{"127.0.0.1:1":1}}}"#,
    ]);
    env.etcd.ctl(&[
        "put",
        &format!("{PREFIX}/routes/theirs"),
        r#"{"id":"theirs","uri":"/theirs","upstream":{"nodes":{"127.0.0.1:1":1}},"labels":{"managed-by":"ingress-sync","ingress-controller":"other.example/sync"}}"#,
    ]);
    let sync = env.sync(&[]);

    // Create -> requests reach its endpoints (host-less rule: every host).
    env.kube.apply(ingress("shop", None, "/shop", "app"));
    eventually(Duration::from_secs(15), "ingress served", || async {
        env.who("any.example", "/shop/cart").await == Ok("a".into())
    })
    .await;
    assert_eq!(
        env.who("any.example", "/shopping").await,
        Err(404),
        "Prefix is element-wise"
    );

    // Status written once, with the publish address.
    eventually(Duration::from_secs(5), "status patched", || async {
        !env.kube.status_patches().is_empty()
    })
    .await;
    let ing = env.kube.get("Ingress", "web", "shop").unwrap();
    assert_eq!(
        ing["status"]["loadBalancer"]["ingress"],
        json!([{"ip": "203.0.113.7"}])
    );

    // Scale up: traffic reaches both.
    env.kube.apply(slice("app", &b));
    eventually(Duration::from_secs(10), "b gets traffic", || async {
        env.who("x", "/shop").await == Ok("b".into())
    })
    .await;

    // Scale down under load: no request fails; then a's process can go.
    let load = Load::start(&[env.gw.url("/shop/load")], 4);
    load.wait_more_ok(50).await;
    env.kube.delete("EndpointSlice", "web", "app-a");
    // Wait until a gets no more requests (the gateways have the new nodes).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let before = a.hits();
        tokio::time::sleep(Duration::from_millis(300)).await;
        if a.hits() == before {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "a still gets traffic");
    }
    load.wait_more_ok(50).await;
    let report = load.stop().await;
    assert_eq!(report.failed, 0, "{report:?}");
    assert!(env.who("x", "/shop").await == Ok("b".into()));

    // Bursts are coalesced and equal results write nothing: the status patch did not loop.
    assert_eq!(
        env.kube.status_patches().len(),
        1,
        "{:?}",
        env.kube.status_patches()
    );

    // A burst of changes that translate to the same keys writes nothing; a burst of new
    // Ingresses is written in one or two passes, not one per event.
    let writes = sync.writes();
    for i in 0..20 {
        let mut svc = service("app");
        svc["metadata"]["annotations"] = json!({"touch": i.to_string()});
        env.kube.apply(svc);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sync.writes(), writes, "no-op changes wrote to etcd");
    for i in 0..10 {
        env.kube.apply(ingress(
            &format!("burst-{i}"),
            None,
            &format!("/burst-{i}"),
            "app",
        ));
    }
    eventually(Duration::from_secs(10), "burst served", || async {
        env.who("x", "/burst-9").await == Ok("b".into())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        sync.writes() - writes <= 3,
        "{} writes for one burst",
        sync.writes() - writes
    );
    for i in 0..10 {
        env.kube.delete("Ingress", "web", &format!("burst-{i}"));
    }

    // Delete -> its keys are gone and the route answers 404; the foreign key stays.
    assert!(!env.owned_keys().is_empty());
    env.kube.delete("Ingress", "web", "shop");
    eventually(Duration::from_secs(10), "keys removed", || async {
        env.owned_keys().is_empty()
    })
    .await;
    eventually(Duration::from_secs(5), "route gone", || async {
        env.who("x", "/shop").await == Err(404)
    })
    .await;
    assert!(env
        .etcd
        .ctl(&["get", &format!("{PREFIX}/routes/mine")])
        .contains("mine"));
    assert!(
        env.kube.unknown_requests().is_empty(),
        "{:?}",
        env.kube.unknown_requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_service_answers_503_until_it_exists() {
    let env = Env::start().await;
    let _sync = env.sync(&[]);
    env.kube
        .apply(ingress("later", Some("later.example"), "/", "late"));
    eventually(Duration::from_secs(15), "503 without a Service", || async {
        env.who("later.example", "/x").await == Err(503)
    })
    .await;
    env.kube.apply(service("late"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        env.who("later.example", "/x").await,
        Err(503),
        "no endpoints yet"
    );
    let c = Backend::start("c").await;
    env.kube.apply(slice("late", &c));
    eventually(
        Duration::from_secs(10),
        "served once it has endpoints",
        || async { env.who("later.example", "/x").await == Ok("c".into()) },
    )
    .await;
    // Another host is not served by it.
    assert_eq!(env.who("other.example", "/x").await, Err(404));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_relist_after_410_gone() {
    let env = Env::start().await;
    let d = Backend::start("d").await;
    env.kube.apply(service("app"));
    env.kube.apply(slice("app", &d));
    let _sync = env.sync(&[]);
    env.kube.apply(ingress("one", None, "/one", "app"));
    eventually(Duration::from_secs(15), "first ingress served", || async {
        env.who("x", "/one").await == Ok("d".into())
    })
    .await;
    // History forgotten, watches cut: the client resumes from a compacted version, gets
    // 410 Gone, lists again, and sees what changed meanwhile.
    env.kube.compact();
    env.kube.apply(ingress("two", None, "/two", "app"));
    env.kube.delete("Ingress", "web", "one");
    eventually(
        Duration::from_secs(20),
        "changes after the 410 applied",
        || async {
            env.who("x", "/two").await == Ok("d".into()) && env.who("x", "/one").await == Err(404)
        },
    )
    .await;
    assert!(env.kube.gone_sent() > 0, "no watch was answered 410");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_takes_over_when_the_leader_dies() {
    let env = Env::start().await;
    let e = Backend::start("e").await;
    env.kube.apply(service("app"));
    env.kube.apply(slice("app", &e));
    env.kube.apply(ingress("first", None, "/first", "app"));
    let mut syncs = [env.sync(&["--leader-ttl=2"]), env.sync(&["--leader-ttl=2"])];
    eventually(Duration::from_secs(15), "served", || async {
        env.who("x", "/first").await == Ok("e".into())
    })
    .await;
    // Exactly one leads, and only it writes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leaders: Vec<usize> = (0..2).filter(|i| syncs[*i].is_leader()).collect();
    assert_eq!(leaders.len(), 1, "leaders: {leaders:?}");
    let (leader, follower) = (leaders[0], 1 - leaders[0]);
    assert!(syncs[leader].writes() > 0);
    assert_eq!(syncs[follower].writes(), 0);

    // kill -9 the leader: its lease expires within the TTL and the other takes over.
    syncs[leader].proc.signal("KILL");
    syncs[leader].proc.kill();
    let killed_at = std::time::Instant::now();
    env.kube.apply(ingress("second", None, "/second", "app"));
    eventually(
        Duration::from_secs(10),
        "the new leader serves the change",
        || async { env.who("x", "/second").await == Ok("e".into()) },
    )
    .await;
    assert!(syncs[follower].is_leader());
    assert!(
        killed_at.elapsed() < Duration::from_secs(6),
        "took {:?}",
        killed_at.elapsed()
    );
    assert_eq!(env.who("x", "/first").await, Ok("e".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_hands_over_at_once() {
    let env = Env::start().await;
    let f = Backend::start("f").await;
    env.kube.apply(service("app"));
    env.kube.apply(slice("app", &f));
    env.kube.apply(ingress("first", None, "/first", "app"));
    // A long TTL: only the resignation on SIGTERM can make the handover quick.
    let mut syncs = [
        env.sync(&["--leader-ttl=30"]),
        env.sync(&["--leader-ttl=30"]),
    ];
    eventually(Duration::from_secs(15), "served", || async {
        env.who("x", "/first").await == Ok("f".into())
    })
    .await;
    let leader = (0..2).find(|i| syncs[*i].is_leader()).unwrap();
    syncs[leader].proc.signal("TERM");
    let status = syncs[leader].proc.wait_exit(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    env.kube.apply(ingress("second", None, "/second", "app"));
    eventually(
        Duration::from_secs(5),
        "the other replica took over",
        || async { env.who("x", "/second").await == Ok("f".into()) },
    )
    .await;
    assert!(syncs[1 - leader].is_leader());
}

// ---- TLS ----

const ENCRYPTION_KEY: &str = "0123456789abcdef";

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../ingress-sync/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap()
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Accepts any server certificate (ours is self-signed) and remembers the one shown.
#[derive(Debug)]
struct Capture(std::sync::Mutex<Vec<u8>>);

impl rustls::client::danger::ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = end_entity.to_vec();
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `GET path` over TLS with `sni`: the certificate shown (DER) and the raw response.
async fn https_get(addr: &str, sni: &str, path: &str) -> Result<(Vec<u8>, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let capture = std::sync::Arc::new(Capture(std::sync::Mutex::new(Vec::new())));
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(capture.clone())
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    let _ = tls.read_to_end(&mut resp).await;
    let cert = capture.0.lock().unwrap().clone();
    Ok((cert, String::from_utf8_lossy(&resp).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_secrets_become_encrypted_ssls_served_by_sni() {
    let keys = format!("--data-encryption-keys={ENCRYPTION_KEY}");
    let env = Env::start_with(&[&keys]).await;
    let g = Backend::start("g").await;
    env.kube.apply(service("app"));
    env.kube.apply(slice("app", &g));
    let (cert, key) = (fixture("tls-cert.pem"), fixture("tls-key.pem"));
    env.kube
        .apply(json!({"kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "site", "namespace": "web"},
        "data": {"tls.crt": base64(cert.as_bytes()), "tls.key": base64(key.as_bytes())}}));
    let mut ing = ingress("secure", Some("foo.example.com"), "/", "app");
    ing["spec"]["tls"] = json!([
        {"hosts": ["foo.example.com"], "secretName": "site"},
        {"hosts": ["gone.example.com"], "secretName": "gone"},
    ]);
    env.kube.apply(ing);
    let sync = env.sync(&[&keys]);

    let tls_addr = env
        .gw
        .args
        .iter()
        .find_map(|a| a.strip_prefix("--tls-listen="))
        .unwrap()
        .to_string();
    eventually(
        Duration::from_secs(15),
        "HTTPS served with the Secret's certificate",
        || async {
            match https_get(&tls_addr, "foo.example.com", "/hello").await {
                Ok((_, resp)) => resp.starts_with("HTTP/1.1 200") && resp.contains("\"g\""),
                Err(_) => false,
            }
        },
    )
    .await;
    let (shown, _) = https_get(&tls_addr, "foo.example.com", "/").await.unwrap();
    use rustls::pki_types::pem::PemObject;
    let want = rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    assert_eq!(shown, want.to_vec(), "the Secret's certificate is served");

    // Stored with the key encrypted, labelled as ours.
    let stored = env.etcd.ctl(&[
        "get",
        "--prefix",
        &format!("{PREFIX}/ssls/"),
        "--print-value-only",
    ]);
    let v: Value = serde_json::from_str(stored.trim()).unwrap();
    assert!(
        !v["key"].as_str().unwrap().contains("PRIVATE KEY"),
        "key stored in plaintext"
    );
    assert_eq!(v["labels"]["managed-by"], "ingress-sync");
    assert_eq!(v["snis"], json!(["foo.example.com"]));
    // The missing Secret is reported, and only its certificate is skipped.
    assert!(
        sync.proc.log().contains("secret web/gone: does not exist"),
        "{}",
        sync.proc.log()
    );

    // Unchanged on the next passes (the ciphertext is kept), and removed with the Ingress.
    let writes = sync.writes();
    env.kube.apply(service("app"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sync.writes(), writes);
    env.kube.delete("Ingress", "web", "secure");
    eventually(Duration::from_secs(10), "ssl removed", || async {
        env.etcd
            .ctl(&["get", "--prefix", &format!("{PREFIX}/ssls/"), "--keys-only"])
            .trim()
            .is_empty()
    })
    .await;
}

/// ingress-sync and the gateway reach an etcd that asks for client certificates and a
/// user: the leader election, the reconcile and the watch all go through TLS and auth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_through_an_etcd_with_client_certificates_and_a_user() {
    let env = Env::start_on(Etcd::start_secured(true, Some("root-password-1234")), &[]).await;
    let a = Backend::start("a").await;
    env.kube.apply(service("app"));
    env.kube.apply(slice("app", &a));
    env.kube.apply(ingress("secure", None, "/secure", "app"));
    let sync = env.sync(&[]);
    eventually(Duration::from_secs(15), "ingress served", || async {
        env.who("x", "/secure/a").await == Ok("a".into())
    })
    .await;
    assert!(sync.is_leader(), "{}", sync.proc.log());
    // The keys are there, read back with etcdctl through TLS and the user.
    let keys = env.etcd.ctl(&["get", PREFIX, "--prefix", "--keys-only"]);
    assert!(keys.contains("/routes/"), "{keys}");
}

/// An Ingress's status says it is served only once every gateway replica serves it: with
/// the one replica stopped, no status; once it runs again, the status comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_waits_until_every_replica_serves_the_change() {
    let env = Env::start_with(&["--report-ttl=20s"]).await;
    let a = Backend::start("a").await;
    env.kube.apply(service("app"));
    env.kube.apply(slice("app", &a));
    let sync = env.sync(&[]);
    // The replica has reported itself before it is stopped.
    eventually(Duration::from_secs(10), "the replica reports", || async {
        let out = env.etcd.ctl(&[
            "get",
            "--prefix",
            "--keys-only",
            &format!("{PREFIX}.cluster/"),
        ]);
        !out.trim().is_empty()
    })
    .await;
    env.gw.proc.signal("STOP");
    env.kube.apply(ingress("late", None, "/late", "app"));
    // Written to etcd, but not served: no status.
    eventually(
        Duration::from_secs(10),
        "the ingress is written to etcd",
        || async {
            !env.etcd
                .ctl(&[
                    "get",
                    "--prefix",
                    "--keys-only",
                    &format!("{PREFIX}/routes/"),
                ])
                .trim()
                .is_empty()
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        env.kube.status_patches().is_empty(),
        "status patched while the replica could not serve it"
    );
    // A new leader (this one stops, another starts) has nothing to write: it still waits
    // for the revision the old one wrote.
    let mut sync = sync;
    sync.proc.signal("TERM");
    assert!(sync.proc.wait_exit(Duration::from_secs(10)).is_some());
    let next = env.sync(&[]);
    eventually(Duration::from_secs(10), "the new one leads", || async {
        next.proc.log().contains("elected leader")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        env.kube.status_patches().is_empty(),
        "a new leader patched the status while the replica could not serve it"
    );
    env.gw.proc.signal("CONT");
    eventually(
        Duration::from_secs(15),
        "status patched once served",
        || async { !env.kube.status_patches().is_empty() },
    )
    .await;
    assert_eq!(env.who("any.example", "/late").await, Ok("a".into()));
}
