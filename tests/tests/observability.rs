//! Observability end to end: the access log (formats, targets, reopen on SIGUSR1), through
//! a real gateway with real etcd and admin-api.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use e2e::backend::Backend;
use e2e::stack::Stack;
use e2e::{bin, eventually, free_port};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A template of variables to a file: one line per request, with the route, the
/// consumer, the upstream and a 404 that matched nothing; reopened on SIGUSR1 after the
/// file was moved away, as logrotate does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_to_a_file_with_a_template() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let target = format!("--access-log={}", path.display());
    let format = "--access-log-format=$request_method $request_uri $status $route_id \
                  $consumer_name $upstream_addr $upstream_status $http_user_agent $request_id";
    let s = Stack::start(&[&target, format]).await;
    let backend = Backend::start("b").await;
    s.admin
        .ok(
            "PUT",
            "/consumers/jack",
            Some(json!({"plugins": {"key-auth": {"key": "jack-key-0123"}}})),
        )
        .await;
    s.admin
        .ok(
            "PUT",
            "/routes/r1",
            Some(
                json!({"uri": "/hello", "upstream": {"nodes": {backend.addr.to_string(): 1}},
                "plugins": {"key-auth": {}}}),
            ),
        )
        .await;
    let client = reqwest::Client::new();
    eventually(WAIT, "the route is served", || async {
        client
            .get(s.gw.url("/hello?x=1"))
            .header("apikey", "jack-key-0123")
            .header("user-agent", "probe/1")
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    client.get(s.gw.url("/nowhere")).send().await.unwrap();
    let node = backend.addr.to_string();
    let want_ok = format!("GET /hello?x=1 200 r1 jack {node} 200 probe/1 -");
    eventually(WAIT, "both lines are written", || async {
        let l = lines(&path);
        l.contains(&want_ok) && l.iter().any(|x| x.starts_with("GET /nowhere 404 - - - -"))
    })
    .await;
    // A route no plugin reads: the node's head is passed on verbatim, and the log still
    // reads the request id the node answered with.
    let fixed = e2e::raw::fixed_node(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Request-Id: node-id-1\r\n\r\nok",
    )
    .await;
    let route = json!({"uri": "/fixed", "upstream": {"nodes": {fixed.to_string(): 1}}});
    s.admin.ok("PUT", "/routes/fixed", Some(route)).await;
    eventually(WAIT, "the node's request id is logged", || async {
        let answered = client
            .get(s.gw.url("/fixed"))
            .header("user-agent", "probe/2")
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        answered
            && lines(&path).contains(&format!(
                "GET /fixed 200 fixed - {fixed} 200 probe/2 node-id-1"
            ))
    })
    .await;

    // logrotate: move the file, send SIGUSR1, and the next lines go to a new file.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    s.gw.proc.signal("USR1");
    tokio::time::sleep(Duration::from_millis(200)).await;
    client
        .get(s.gw.url("/after-rotation"))
        .send()
        .await
        .unwrap();
    eventually(WAIT, "a new file after SIGUSR1", || async {
        lines(&path)
            .iter()
            .any(|x| x.starts_with("GET /after-rotation 404"))
    })
    .await;
    assert!(
        !lines(&rotated)
            .iter()
            .any(|x| x.contains("/after-rotation")),
        "a line went to the rotated file"
    );
}

/// The default: nginx's combined format on stdout; `json` gives one object per line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_combined_on_stdout_and_json() {
    let s = Stack::start(&[]).await;
    let client = reqwest::Client::new();
    client
        .get(s.gw.url("/combined-check"))
        .header("referer", "http://ref.example/")
        .header("user-agent", "ua/2")
        .send()
        .await
        .unwrap();
    let combined = |log: String| {
        log.lines().any(|l| {
            l.starts_with("127.0.0.1 - - [")
                && l.contains("\"GET /combined-check HTTP/1.1\" 404 ")
                && l.ends_with("\"http://ref.example/\" \"ua/2\"")
        })
    };
    eventually(WAIT, "a combined line on stdout", || async {
        combined(s.gw.proc.log())
    })
    .await;

    // Off: nothing.
    let quiet = Stack::start(&["--access-log=off"]).await;
    client
        .get(quiet.gw.url("/combined-check"))
        .header("referer", "http://ref.example/")
        .header("user-agent", "ua/2")
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !combined(quiet.gw.proc.log()),
        "--access-log=off still logged"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("json.log");
    let target = format!("--access-log={}", path.display());
    let s = Stack::start(&[&target, "--access-log-format=json"]).await;
    reqwest::get(s.gw.url("/json-check")).await.unwrap();
    eventually(WAIT, "a JSON line", || async {
        lines(&path).iter().any(|l| {
            serde_json::from_str::<Value>(l)
                .is_ok_and(|v| v["request_uri"] == "/json-check" && v["status"] == "404")
        })
    })
    .await;
}

/// An unknown variable, or a file that cannot be opened, stops the gateway at start with
/// a message naming it; `--access-log=off` writes nothing.
#[test]
fn bad_access_log_flags_stop_the_gateway() {
    for (flag, needle) in [
        ("--access-log-format=$nope", "$nope"),
        ("--access-log=/nonexistent-dir/x/access.log", "access-log"),
    ] {
        let out = Command::new(bin("gateway"))
            .arg(flag)
            .arg("--etcd-endpoints=http://127.0.0.1:1")
            .arg(format!("--listen=127.0.0.1:{}", free_port()))
            .arg(format!("--tls-listen=127.0.0.1:{}", free_port()))
            .arg(format!("--status-listen=127.0.0.1:{}", free_port()))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} started");
        let err = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(err.contains(needle), "{flag}: {err}");
    }
}

/// The `prometheus` plugin: APISIX's metric names and labels for a route's requests,
/// whoever answered them (the upstream, or an authentication plugin), the exposition
/// through a route's `public-api`, and all of it accepted by `promtool check metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_plugin_metrics_with_apisix_names() {
    let s = Stack::start(&[]).await;
    let backend = Backend::start("b").await;
    s.admin
        .ok(
            "PUT",
            "/consumers/jack",
            Some(json!({"plugins": {"key-auth": {"key": "jack-key-0123"}}})),
        )
        .await;
    s.admin
        .ok(
            "PUT",
            "/routes/r1",
            Some(
                json!({"name": "hello-route", "uris": ["/nothing", "/hello*"],
                "upstream": {"nodes": {backend.addr.to_string(): 1}},
                "plugins": {"key-auth": {}, "prometheus": {"prefer_name": true}}}),
            ),
        )
        .await;
    s.admin
        .ok(
            "PUT",
            "/routes/metrics",
            Some(json!({"uri": "/apisix/prometheus/metrics",
                "plugins": {"public-api": {}}})),
        )
        .await;
    let client = reqwest::Client::new();
    eventually(WAIT, "the route is served", || async {
        client
            .get(s.gw.url("/hello/1"))
            .header("apikey", "jack-key-0123")
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    for _ in 0..2 {
        let r = client
            .get(s.gw.url("/hello/2"))
            .header("apikey", "jack-key-0123")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let r = client.get(s.gw.url("/hello/3")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // Requests of routes without the plugin are not labelled.
    client.get(s.gw.url("/unrouted")).send().await.unwrap();

    let ip = backend.addr.ip().to_string();
    let ok = format!(
        r#"apisix_http_status{{code="200",route="hello-route",matched_uri="/hello*",matched_host="",service="",consumer="jack",node="{ip}"}} 3"#
    );
    let denied = r#"apisix_http_status{code="401",route="hello-route",matched_uri="/hello*",matched_host="",service="",consumer="",node=""} 1"#;
    let request_count = format!(
        r#"apisix_http_latency_count{{type="request",route="hello-route",service="",consumer="jack",node="{ip}"}} 3"#
    );
    let upstream_count = format!(
        r#"apisix_http_latency_count{{type="upstream",route="hello-route",service="",consumer="jack",node="{ip}"}} 3"#
    );
    eventually(WAIT, "the requests are counted", || async {
        let text = s.gw.metrics().await;
        text.contains(&ok) && text.contains(denied)
    })
    .await;
    let text = s.gw.metrics().await;
    for want in [&request_count, &upstream_count] {
        assert!(text.contains(want.as_str()), "missing {want} in\n{text}");
    }
    assert!(!text.contains("unrouted"), "{text}");
    let egress = format!(
        r#"apisix_bandwidth{{type="egress",route="hello-route",service="",consumer="jack",node="{ip}"}} "#
    );
    let bytes: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(egress.as_str()))
        .unwrap_or_else(|| panic!("no egress line in\n{text}"))
        .parse()
        .unwrap();
    // Three responses, each with a head and a body: more than a few bytes each.
    assert!(bytes > 3 * 40, "{bytes}");
    for line in [
        "# TYPE apisix_http_status untyped",
        "# TYPE apisix_http_latency histogram",
        "apisix_etcd_reachable 1",
        r#"apisix_nginx_http_current_connections{state="active"}"#,
        "# TYPE apisix_http_requests_total counter",
        "# TYPE gateway_http_responses_total counter",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }

    // The same exposition on the data plane, through the route's public-api.
    let r = client
        .get(s.gw.url("/apisix/prometheus/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let public = r.text().await.unwrap();
    assert!(public.contains(&ok), "{public}");

    // promtool (Debian's prometheus package) parses and lints what we expose.
    for exposition in [&text, &public] {
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool (scripts/install-deps.sh installs Debian's prometheus package)");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(exposition.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A consumer group's `prometheus` counts the requests of its consumers, on routes that
/// do not carry the plugin themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_from_a_consumer_group_counts_its_consumers() {
    let s = Stack::start(&[]).await;
    let backend = Backend::start("b").await;
    s.admin
        .ok(
            "PUT",
            "/consumer_groups/observed",
            Some(json!({"plugins": {"prometheus": {}}})),
        )
        .await;
    s.admin
        .ok(
            "PUT",
            "/consumers/rose",
            Some(
                json!({"group_id": "observed", "plugins": {"key-auth": {"key": "rose-key-0123"}}}),
            ),
        )
        .await;
    s.admin
        .ok(
            "PUT",
            "/routes/g1",
            Some(
                json!({"uri": "/grouped", "upstream": {"nodes": {backend.addr.to_string(): 1}},
                "plugins": {"key-auth": {}}}),
            ),
        )
        .await;
    let client = reqwest::Client::new();
    eventually(WAIT, "the route is served", || async {
        client
            .get(s.gw.url("/grouped"))
            .header("apikey", "rose-key-0123")
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let want = format!(
        r#"apisix_http_status{{code="200",route="g1",matched_uri="/grouped",matched_host="",service="",consumer="rose",node="{}"}}"#,
        backend.addr.ip()
    );
    eventually(WAIT, "the consumer's request is counted", || async {
        s.gw.metrics().await.contains(&want)
    })
    .await;
}
