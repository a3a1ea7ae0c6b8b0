//! The plugin chain end to end: real etcd, admin-api and gateway, a recording backend that
//! keeps what each request looked like when it arrived. Each plugin is checked by what the
//! client gets and what the upstream was sent; most cases are APISIX's documented examples.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use e2e::eventually;
use e2e::raw::{RecordingBackend, Seen};
use e2e::stack::Stack;
use serde_json::{json, Value};
use std::time::Duration;

#[path = "plugins/auth.rs"]
mod auth;
#[path = "plugins/consumers.rs"]
mod consumers;
#[path = "plugins/limits.rs"]
mod limits;
#[path = "plugins/outbound.rs"]
mod outbound;
#[path = "plugins/redis_limits.rs"]
mod redis_limits;
#[path = "plugins/traffic.rs"]
mod traffic;

const WAIT: Duration = Duration::from_secs(10);

struct Env {
    s: Stack,
    rec: RecordingBackend,
    /// Redirects are answers to check, not to follow.
    client: reqwest::Client,
}

async fn env() -> Env {
    let s = Stack::start(&[]).await;
    let rec = RecordingBackend::start().await;
    s.admin
        .ok(
            "PUT",
            "/upstreams/rec",
            Some(json!({"nodes": {rec.node(): 1}})),
        )
        .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Env { s, rec, client }
}

impl Env {
    /// Puts route `id` and waits until a request to `probe` gets `want`.
    async fn route(&self, id: &str, def: Value, probe: &str, want: u16) {
        self.s
            .admin
            .ok("PUT", &format!("/routes/{id}"), Some(def))
            .await;
        eventually(WAIT, "the route is served", || async {
            self.client
                .get(self.s.gw.url(probe))
                .send()
                .await
                .is_ok_and(|r| r.status() == want)
        })
        .await;
        self.rec.clear();
    }

    /// The only request the backend saw since the last clear.
    fn seen(&self) -> Seen {
        let seen = self.rec.requests();
        assert_eq!(seen.len(), 1, "requests at the backend: {seen:?}");
        self.rec.clear();
        seen.into_iter().next().unwrap()
    }

    fn request(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method.parse().unwrap(), self.s.gw.url(path))
    }
}

/// APISIX's proxy-rewrite example: path, host, method and headers of the upstream request
/// change, the client's query string stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_rewrite_changes_what_the_upstream_gets() {
    let e = env().await;
    e.route(
        "1",
        json!({
            "methods": ["GET"], "uri": "/test/index.html", "upstream_id": "rec",
            "plugins": {"proxy-rewrite": {
                "uri": "/test/home.html", "host": "iresty.com", "method": "POST",
                "headers": {
                    "set": {"X-Api-Version": "v1", "X-Api-Engine": "apisix", "X-From": "$remote_addr"},
                    "add": {"X-Via": "gateway"},
                    "remove": ["User-Agent"]
                }
            }}
        }),
        "/test/index.html",
        200,
    )
    .await;
    let resp = e
        .request("GET", "/test/index.html?a=1")
        .header("User-Agent", "curl/8")
        .header("X-Api-Version", "v0")
        .header("X-Via", "client")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = e.seen();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/test/home.html?a=1");
    assert_eq!(seen.header("host"), ["iresty.com"]);
    assert_eq!(seen.header("x-api-version"), ["v1"]);
    assert_eq!(seen.header("x-api-engine"), ["apisix"]);
    assert_eq!(seen.header("x-from"), ["127.0.0.1"]);
    assert_eq!(seen.header("x-via"), ["client", "gateway"]);
    assert!(seen.header("user-agent").is_empty());

    // regex_uri: the first pair that matches rewrites; no match leaves the path alone.
    e.route(
        "2",
        json!({"uri": "/iresty/*", "upstream_id": "rec",
            "plugins": {"proxy-rewrite": {"regex_uri": ["^/iresty/(.*)/(.*)/(.*)", "/$1-$2-$3"]}}}),
        "/iresty/x",
        200,
    )
    .await;
    e.request("GET", "/iresty/a/b/c").send().await.unwrap();
    assert_eq!(e.seen().target, "/a-b-c");
    e.request("GET", "/iresty/a").send().await.unwrap();
    assert_eq!(e.seen().target, "/iresty/a");
}

/// request-id: the upstream and the client see one id; a client's own id is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_reaches_the_upstream_and_the_client() {
    let e = env().await;
    e.route(
        "1",
        json!({"uri": "/id", "upstream_id": "rec", "plugins": {"request-id": {}}}),
        "/id",
        200,
    )
    .await;
    let resp = e.request("GET", "/id").send().await.unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(e.seen().header("x-request-id"), [id.as_str()]);
    let resp = e
        .request("GET", "/id")
        .header("X-Request-Id", "mine")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "mine");
    assert_eq!(e.seen().header("x-request-id"), ["mine"]);

    e.route(
        "1",
        json!({"uri": "/id", "upstream_id": "rec", "plugins": {"request-id": {
            "header_name": "X-Trace", "include_in_response": false,
            "algorithm": "range_id", "range_id": {"char_set": "abcdef", "length": 10}}}}),
        "/id",
        200,
    )
    .await;
    eventually(WAIT, "the new configuration is served", || async {
        let resp = e.request("GET", "/id").send().await.unwrap();
        let hidden = !resp.headers().contains_key("x-trace");
        let seen = e.rec.requests();
        e.rec.clear();
        hidden
            && seen.last().is_some_and(|s| {
                s.header("x-trace")
                    .first()
                    .is_some_and(|v| v.len() == 10 && v.chars().all(|c| "abcdef".contains(c)))
            })
    })
    .await;
}

/// APISIX's cors examples: a preflight is answered by the gateway, a request from an
/// allowed origin gets the headers, one from another origin does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_preflights_and_marks_allowed_origins() {
    let e = env().await;
    e.route(
        "1",
        json!({"uri": "/cors/*", "upstream_id": "rec", "plugins": {"cors": {
            "allow_origins": "http://a.example,https://b.example",
            "allow_methods": "GET,POST", "allow_headers": "**",
            "expose_headers": "X-Total", "max_age": 60, "allow_credential": true
        }}}),
        "/cors/x",
        200,
    )
    .await;
    let pre = e
        .request("OPTIONS", "/cors/items")
        .header("Origin", "https://b.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "X-Token, Content-Type")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 200);
    let h = pre.headers();
    assert_eq!(h["access-control-allow-origin"], "https://b.example");
    assert_eq!(h["access-control-allow-methods"], "GET,POST");
    assert_eq!(h["access-control-allow-headers"], "X-Token, Content-Type");
    assert_eq!(h["access-control-max-age"], "60");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["vary"], "Origin");
    assert!(
        e.rec.requests().is_empty(),
        "a preflight reached the upstream"
    );

    let get = e
        .request("GET", "/cors/items")
        .header("Origin", "http://a.example")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(
        get.headers()["access-control-allow-origin"],
        "http://a.example"
    );
    assert_eq!(get.headers()["access-control-expose-headers"], "X-Total");
    assert_eq!(e.seen().target, "/cors/items");

    let other = e
        .request("GET", "/cors/items")
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    assert!(!other.headers().contains_key("access-control-allow-origin"));

    // The defaults: every origin, `*` values.
    e.route(
        "2",
        json!({"uri": "/open", "upstream_id": "rec", "plugins": {"cors": {}}}),
        "/open",
        200,
    )
    .await;
    let open = e
        .request("GET", "/open")
        .header("Origin", "http://any.example")
        .send()
        .await
        .unwrap();
    assert_eq!(open.headers()["access-control-allow-origin"], "*");
    assert_eq!(open.headers()["access-control-allow-methods"], "*");
    assert_eq!(open.headers()["access-control-max-age"], "5");
    assert!(!open.headers().contains_key("vary"));
}

/// ip-restriction with APISIX's message, `_meta.disable` and `_meta.filter`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_restriction_and_meta() {
    let e = env().await;
    e.route(
        "1",
        json!({"uri": "/ip", "upstream_id": "rec",
            "plugins": {"ip-restriction": {"blacklist": ["127.0.0.0/8"]}}}),
        "/ip",
        403,
    )
    .await;
    let resp = e.request("GET", "/ip").send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, json!({"message": "Your IP address is not allowed"}));
    assert!(e.rec.requests().is_empty());

    e.route(
        "1",
        json!({"uri": "/ip", "upstream_id": "rec",
            "plugins": {"ip-restriction": {"whitelist": ["127.0.0.1"]}}}),
        "/ip",
        200,
    )
    .await;

    // Off, and on only for requests that match its filter.
    e.route(
        "1",
        json!({"uri": "/ip", "upstream_id": "rec", "plugins": {"ip-restriction": {
            "blacklist": ["127.0.0.1"], "response_code": 404, "message": "no",
            "_meta": {"filter": [["arg_guard", "==", "on"]]}}}}),
        "/ip?guard=on",
        404,
    )
    .await;
    let off = e.request("GET", "/ip?guard=off").send().await.unwrap();
    assert_eq!(off.status(), 200);
    e.route(
        "1",
        json!({"uri": "/ip", "upstream_id": "rec", "plugins": {"ip-restriction": {
            "blacklist": ["127.0.0.1"], "_meta": {"disable": true}}}}),
        "/ip",
        200,
    )
    .await;
}

/// A service's plugins run for its routes; the route's own configuration of a plugin wins.
/// Phases order plugins before priorities do: `redirect` (rewrite) answers before
/// `ip-restriction` (access) whatever their priorities.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_plugins_merge_under_the_routes() {
    let e = env().await;
    e.s.admin
        .ok(
            "PUT",
            "/services/s",
            Some(json!({"upstream_id": "rec", "plugins": {
                "request-id": {"header_name": "X-Svc-Id"},
                "proxy-rewrite": {"uri": "/from-service"}
            }})),
        )
        .await;
    e.route("a", json!({"uri": "/a", "service_id": "s"}), "/a", 200)
        .await;
    e.route(
        "b",
        json!({"uri": "/b", "service_id": "s", "plugins": {"proxy-rewrite": {"uri": "/from-route"}}}),
        "/b",
        200,
    )
    .await;
    let a = e.request("GET", "/a").send().await.unwrap();
    assert!(a.headers().contains_key("x-svc-id"));
    assert_eq!(e.seen().target, "/from-service");
    let b = e.request("GET", "/b").send().await.unwrap();
    assert!(b.headers().contains_key("x-svc-id"));
    assert_eq!(e.seen().target, "/from-route");

    e.route(
        "c",
        json!({"uri": "/c", "upstream_id": "rec", "plugins": {
            "ip-restriction": {"blacklist": ["127.0.0.1"]},
            "redirect": {"uri": "/elsewhere"}
        }}),
        "/c",
        302,
    )
    .await;
    let c = e.request("GET", "/c").send().await.unwrap();
    assert_eq!(c.headers()["location"], "/elsewhere");
}

/// client-control's limit, and its `_meta.disable`, which turns the route's limit off and
/// leaves the gateway's default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_control_honours_meta_disable() {
    let e = env().await;
    e.route(
        "1",
        json!({"uri": "/up", "upstream_id": "rec",
            "plugins": {"client-control": {"max_body_size": 10}}}),
        "/up",
        200,
    )
    .await;
    let post = || e.request("POST", "/up").body(vec![b'x'; 100]).send();
    assert_eq!(post().await.unwrap().status(), 413);
    e.route(
        "1",
        json!({"uri": "/up", "upstream_id": "rec",
            "plugins": {"client-control": {"max_body_size": 10, "_meta": {"disable": true}}}}),
        "/up",
        200,
    )
    .await;
    eventually(WAIT, "the disabled limit lets the body through", || async {
        post().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
}

/// Bad plugin configurations are refused with the field named, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_plugin_configurations_name_the_field() {
    let e = env().await;
    for (plugins, field) in [
        (json!({"no-such-plugin": {}}), "plugins.no-such-plugin"),
        (
            json!({"proxy-rewrite": {"uri": "relative"}}),
            "plugins.proxy-rewrite.uri",
        ),
        (
            json!({"proxy-rewrite": {"bogus": 1}}),
            "plugins.proxy-rewrite.bogus",
        ),
        (
            json!({"cors": {"allow_credential": true}}),
            "plugins.cors.allow_origins",
        ),
        (
            json!({"ip-restriction": {"whitelist": ["x"]}}),
            "plugins.ip-restriction.whitelist[0]",
        ),
        (
            json!({"request-id": {"_meta": {"priority": "high"}}}),
            "plugins.request-id._meta.priority",
        ),
    ] {
        let (status, body) =
            e.s.admin
                .call(
                    "PUT",
                    "/routes/bad",
                    Some(json!({"uri": "/bad", "upstream_id": "rec", "plugins": plugins})),
                )
                .await;
        assert_eq!(status, 400, "{plugins}: {body}");
        let msg = body["error_msg"].as_str().unwrap_or_default();
        assert!(msg.contains(field), "{plugins}: {msg}");
    }
    let (status, _) = e.s.admin.call("GET", "/routes/bad", None).await;
    assert_eq!(status, 404);
}

/// APISIX's key-auth example: a consumer with a key, a route that asks for one. The
/// upstream learns who called; a missing, wrong or deleted key is a 401 and never reaches
/// it. A plugin filtered on `consumer_name` runs for one consumer only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_auth_with_consumers() {
    let e = env().await;
    // PUT on the collection, the username in the body, as APISIX's documentation does.
    let (status, body) =
        e.s.admin
            .call(
                "PUT",
                "/consumers",
                Some(
                    json!({"username": "jack", "plugins": {"key-auth": {"key": "auth-one"}},
                "labels": {"custom_id": "c-1"}}),
                ),
            )
            .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        body["value"]["plugins"]["key-auth"].get("key").is_none(),
        "a secret was answered: {body}"
    );
    e.s.admin
        .ok(
            "PUT",
            "/consumers/rose",
            Some(json!({"plugins": {"key-auth": {"key": "auth-two"}}})),
        )
        .await;
    let stored = e.s.admin.ok("GET", "/consumers/rose", None).await;
    assert_eq!(stored["value"]["username"], "rose");
    assert!(stored["value"]["plugins"]["key-auth"].get("key").is_none());

    e.route(
        "1",
        json!({"methods": ["GET"], "uri": "/index.html", "upstream_id": "rec",
            "plugins": {"key-auth": {}, "ip-restriction": {"blacklist": ["127.0.0.1"],
                "_meta": {"filter": [["consumer_name", "==", "rose"]]}}}}),
        "/index.html",
        401,
    )
    .await;
    let call = |key: Option<&str>, path: &str| {
        let mut r = e.request("GET", path);
        if let Some(k) = key {
            r = r.header("apikey", k);
        }
        r.send()
    };
    let ok = call(Some("auth-one"), "/index.html").await.unwrap();
    assert_eq!(ok.status(), 200);
    let seen = e.seen();
    assert_eq!(seen.header("x-consumer-username"), ["jack"]);
    assert_eq!(seen.header("x-consumer-custom-id"), ["c-1"]);
    assert_eq!(
        seen.header("apikey"),
        ["auth-one"],
        "kept without hide_credentials"
    );

    for (key, path, message) in [
        (None, "/index.html", "Missing API key in request"),
        (
            Some("abcabcabc"),
            "/index.html",
            "Invalid API key in request",
        ),
        (Some(""), "/index.html", "Invalid API key in request"),
        (
            None,
            "/index.html?apikey=wrong",
            "Invalid API key in request",
        ),
    ] {
        let resp = call(key, path).await.unwrap();
        assert_eq!(resp.status(), 401, "{key:?} {path}");
        assert_eq!(resp.headers()["www-authenticate"], "apikey realm=\"key\"");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body, json!({"message": message}), "{key:?} {path}");
    }
    assert!(
        e.rec.requests().is_empty(),
        "an unauthenticated request reached the upstream"
    );
    let by_query = call(None, "/index.html?apikey=auth-one&x=1").await.unwrap();
    assert_eq!(by_query.status(), 200);
    assert_eq!(e.seen().target, "/index.html?apikey=auth-one&x=1");
    // The filtered ip-restriction holds for rose only.
    assert_eq!(
        call(Some("auth-two"), "/index.html")
            .await
            .unwrap()
            .status(),
        403
    );

    // hide_credentials: the upstream never sees the key, from the header or the query.
    e.route(
        "1",
        json!({"uri": "/index.html", "upstream_id": "rec",
            "plugins": {"key-auth": {"hide_credentials": true, "header": "X-Key", "query": "k"}}}),
        "/index.html?k=auth-one",
        200,
    )
    .await;
    let resp = e
        .request("GET", "/index.html")
        .header("X-Key", "auth-one")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(e.seen().header("x-key").is_empty());
    call(None, "/index.html?a=1&k=auth-one").await.unwrap();
    assert_eq!(e.seen().target, "/index.html?a=1");

    // A deleted consumer's key no longer opens anything.
    e.s.admin.ok("DELETE", "/consumers/jack", None).await;
    eventually(WAIT, "the deleted consumer's key is refused", || async {
        let resp = e
            .request("GET", "/index.html")
            .header("X-Key", "auth-one")
            .send()
            .await
            .unwrap();
        resp.status() == 401
    })
    .await;
}

/// Consumers are written with PUT only (as APISIX), and no two may share a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_are_put_only_and_keys_unique() {
    let e = env().await;
    let admin = &e.s.admin;
    admin
        .ok(
            "PUT",
            "/consumers/jack",
            Some(json!({"plugins": {"key-auth": {"key": "auth-one"}}})),
        )
        .await;
    let (status, body) = admin
        .call(
            "PUT",
            "/consumers/rose",
            Some(json!({"plugins": {"key-auth": {"key": "auth-one"}}})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let msg = body["error_msg"].as_str().unwrap();
    assert!(
        msg.contains("plugins.key-auth.key") && msg.contains("jack"),
        "{msg}"
    );
    // Replacing jack's own key with itself is no clash.
    admin
        .ok(
            "PUT",
            "/consumers/jack",
            Some(json!({"username": "jack", "plugins": {"key-auth": {"key": "auth-one"}}})),
        )
        .await;
    for (method, path) in [("POST", "/consumers"), ("PATCH", "/consumers/jack")] {
        let (status, body) = admin.call(method, path, Some(json!({"desc": "x"}))).await;
        assert_eq!(status, 405, "{method} {path}: {body}");
    }
    for (path, body, field) in [
        ("/consumers/a%20b", json!({}), "id"),
        ("/consumers/jack", json!({"username": "other"}), "username"),
        (
            "/consumers/x",
            json!({"plugins": {"key-auth": {}}}),
            "plugins.key-auth.key",
        ),
        (
            "/consumers/x",
            json!({"plugins": {"proxy-rewrite": {"uri": "x"}}}),
            "plugins.proxy-rewrite.uri",
        ),
    ] {
        let (status, resp) = admin.call("PUT", path, Some(body.clone())).await;
        assert_eq!(status, 400, "{path} {body}: {resp}");
        let msg = resp["error_msg"].as_str().unwrap_or_default();
        assert!(msg.contains(field), "{path} {body}: {msg}");
    }
}

/// A plugin config's plugins run for the routes that name it, under their own; a change
/// to it reaches those routes; it cannot be deleted while in use or named when missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_configs_merge_between_service_and_route() {
    let e = env().await;
    let admin = &e.s.admin;
    let (status, body) = admin
        .call(
            "PUT",
            "/routes/x",
            Some(json!({"uri": "/x", "upstream_id": "rec", "plugin_config_id": "pc"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap()
            .contains("plugin_config_id"),
        "{body}"
    );
    admin
        .ok(
            "PUT",
            "/plugin_configs/pc",
            Some(json!({"desc": "shared", "plugins": {
                "proxy-rewrite": {"uri": "/from-config"},
                "request-id": {"header_name": "X-Pc"}}})),
        )
        .await;
    e.route(
        "a",
        json!({"uri": "/a", "upstream_id": "rec", "plugin_config_id": "pc"}),
        "/a",
        200,
    )
    .await;
    e.route(
        "b",
        json!({"uri": "/b", "upstream_id": "rec", "plugin_config_id": "pc",
            "plugins": {"proxy-rewrite": {"uri": "/from-route"}}}),
        "/b",
        200,
    )
    .await;
    let a = e.request("GET", "/a").send().await.unwrap();
    assert!(a.headers().contains_key("x-pc"));
    assert_eq!(e.seen().target, "/from-config");
    e.request("GET", "/b").send().await.unwrap();
    assert_eq!(e.seen().target, "/from-route");

    admin
        .ok(
            "PUT",
            "/plugin_configs/pc",
            Some(json!({"plugins": {"proxy-rewrite": {"uri": "/changed"}}})),
        )
        .await;
    eventually(WAIT, "the config's change reaches its route", || async {
        e.request("GET", "/a").send().await.unwrap();
        let seen = e.rec.requests();
        e.rec.clear();
        seen.last().is_some_and(|s| s.target == "/changed")
    })
    .await;
    let (status, body) = admin.call("DELETE", "/plugin_configs/pc", None).await;
    assert_eq!(status, 400, "{body}");
}

/// Global rules run for every request, before the route's plugins and also when no route
/// matches; removing the rule stops them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_rules_run_for_every_request() {
    let e = env().await;
    e.route(
        "open",
        json!({"uri": "/open", "upstream_id": "rec"}),
        "/open",
        200,
    )
    .await;
    e.s.admin
        .ok(
            "PUT",
            "/global_rules/1",
            Some(json!({"plugins": {
                "request-id": {"header_name": "X-Global-Id"},
                "ip-restriction": {"blacklist": ["127.0.0.1"],
                    "_meta": {"filter": [["http_x_block", "==", "yes"]]}}}})),
        )
        .await;
    eventually(WAIT, "the global rule runs", || async {
        let r = e.request("GET", "/open").send().await.unwrap();
        r.headers().contains_key("x-global-id")
    })
    .await;
    e.rec.clear();
    let r = e.request("GET", "/open").send().await.unwrap();
    let id = r.headers()["x-global-id"].to_str().unwrap().to_string();
    assert_eq!(e.seen().header("x-global-id"), [id.as_str()]);
    let missing = e.request("GET", "/no-such-route").send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert!(
        missing.headers().contains_key("x-global-id"),
        "a 404 skipped the global rule"
    );
    let blocked = e
        .request("GET", "/open")
        .header("X-Block", "yes")
        .send()
        .await
        .unwrap();
    assert_eq!(blocked.status(), 403);
    assert!(e.rec.requests().is_empty());

    e.s.admin.ok("DELETE", "/global_rules/1", None).await;
    eventually(WAIT, "the removed rule no longer runs", || async {
        let r = e.request("GET", "/open").send().await.unwrap();
        !r.headers().contains_key("x-global-id")
    })
    .await;
}
