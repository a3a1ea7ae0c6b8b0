//! Every binary against a real etcd that serves only TLS and asks for client certificates,
//! and against one with `auth enable`: what works with the right credentials, and what a
//! binary without them is refused (it never reads or writes anything).
#![allow(clippy::unwrap_used, clippy::expect_used)]
use e2e::{bin, eventually, free_port, AdminApi, Backend, Etcd, Gateway, Proc};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

const KEY: &str = "test-admin-key-0123";
const PREFIX: &str = "/gw";

fn admin_with(etcd: &Etcd, flags: &[String]) -> AdminApi {
    let env: Vec<(String, String)> = flags
        .iter()
        .filter_map(|f| f.strip_prefix("--"))
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_ascii_uppercase().replace('-', "_"), v.to_string()))
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // Through the environment variables, as a container would pass them.
    AdminApi::start_with_env(&etcd.url, PREFIX, KEY, &env)
}

fn gateway_with(etcd: &Etcd, flags: &[String]) -> Gateway {
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    Gateway::start(&etcd.url, PREFIX, &args)
}

/// With the right credentials the admin-api writes and the gateway serves; without them
/// the admin-api answers 5xx naming etcd and the gateway never becomes ready.
async fn check(etcd: &Etcd, wrong: &[String]) {
    let backend = Backend::start("b").await;
    let admin = admin_with(etcd, &etcd.client_flags());
    let gw = gateway_with(etcd, &etcd.client_flags());
    gw.wait_ready().await;
    admin
        .ok(
            "PUT",
            "/upstreams/u",
            Some(json!({"nodes": {backend.node(): 1}})),
        )
        .await;
    admin
        .ok(
            "PUT",
            "/routes/r",
            Some(json!({"uri": "/s/*", "upstream_id": "u"})),
        )
        .await;
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(5), "the route is served", || async {
        client
            .get(gw.url("/s/x"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;

    let refused_admin = admin_with(etcd, wrong);
    // 503 when it cannot connect at all, 500 naming etcd's refusal (a bad password).
    let (status, body) = refused_admin.call("GET", "/routes", None).await;
    assert!(status == 503 || status == 500, "{status} {body}");
    assert!(
        body["error_msg"]
            .as_str()
            .is_some_and(|m| m.contains("etcd")),
        "{body}"
    );
    let refused_gw = gateway_with(etcd, wrong);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!refused_gw.is_ready().await, "ready without credentials");
    assert!(
        refused_gw.proc.log().contains("etcd"),
        "{}",
        refused_gw.proc.log()
    );
    let total = admin.ok("GET", "/routes", None).await["total"].clone();
    assert_eq!(total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    let etcd = Etcd::start_secured(true, None);
    // Trusting the CA but without a client certificate: the handshake is refused.
    let certs = etcd.certs.as_ref().unwrap();
    let no_client_cert = vec![format!("--etcd-cacert={}", certs.ca.display())];
    check(&etcd, &no_client_cert).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_passwords() {
    let etcd = Etcd::start_secured(false, Some("root-password-1234"));
    let wrong = vec![
        "--etcd-user=root".into(),
        "--etcd-password=not-the-password".into(),
    ];
    check(&etcd, &wrong).await;
}

/// Flags that cannot work stop each binary at start with a message naming the flag.
#[test]
fn flags_that_cannot_work_stop_every_binary_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "any").unwrap();
    let http = "--etcd-endpoints=http://127.0.0.1:1".to_string();
    let cases = [
        (
            vec![http.clone(), format!("--etcd-cacert={}", missing.display())],
            "missing-ca.pem",
        ),
        (
            vec![http.clone(), format!("--etcd-cacert={}", ca.display())],
            "must be https://",
        ),
        (
            vec!["--etcd-endpoints=https://127.0.0.1:1".into()],
            "needs --etcd-cacert",
        ),
        (
            vec![http.clone(), "--etcd-user=root".into()],
            "ETCD_PASSWORD",
        ),
    ];
    for binary in ["gateway", "admin-api"] {
        for (flags, needle) in &cases {
            let mut cmd = Command::new(bin(binary));
            cmd.args(flags)
                .arg(format!("--listen=127.0.0.1:{}", free_port()))
                .env_remove("ETCD_PASSWORD")
                .env("ADMIN_KEY", KEY);
            if binary == "gateway" {
                cmd.arg(format!("--tls-listen=127.0.0.1:{}", free_port()))
                    .arg(format!("--status-listen=127.0.0.1:{}", free_port()));
            }
            let mut proc = Proc::spawn(binary, &mut cmd, dir.path());
            let status = proc.wait_exit(Duration::from_secs(10));
            assert!(status.is_some_and(|s| !s.success()), "{binary} {flags:?}");
            assert!(
                proc.log().contains(needle),
                "{binary} {flags:?}: {}",
                proc.log()
            );
        }
    }
}
