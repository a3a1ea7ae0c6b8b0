//! Where a consumer's plugins come from besides itself: credentials (several keys for one
//! consumer, each rotated alone) and consumer groups (plugins shared by consumers).
use super::{env, WAIT};
use e2e::eventually;
use serde_json::json;

/// APISIX's credentials example: a consumer without plugins holds two key-auth keys in
/// credentials; each key authenticates as the consumer, a deleted one stops working, and
/// the consumer's deletion takes its credentials with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_keys_of_their_consumer() {
    let e = env().await;
    let a = &e.s.admin;
    a.ok("PUT", "/consumers/jack", Some(json!({"username": "jack"})))
        .await;
    let (status, body) = a
        .call(
            "PUT",
            "/consumers/jack/credentials/key-a",
            Some(json!({"desc": "first", "plugins": {"key-auth": {"key": "jack-key-a"}}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["key"], "/gw/consumers/jack/credentials/key-a");
    assert_eq!(body["value"]["id"], "key-a");
    assert!(
        body["value"]["plugins"]["key-auth"].get("key").is_none(),
        "a key was answered: {body}"
    );

    // Refusals: no such consumer, two plugins, a plugin that is not a credential, a key
    // another consumer (or credential) has, POST and PATCH.
    for (path, def, want, text) in [
        (
            "/consumers/nobody/credentials/x",
            json!({"plugins": {"key-auth": {"key": "k-nobody"}}}),
            404,
            "consumer nobody not found",
        ),
        (
            "/consumers/jack/credentials/two",
            json!({"plugins": {"key-auth": {"key": "k2"}, "basic-auth": {"username": "u", "password": "p"}}}),
            400,
            "plugins",
        ),
        (
            "/consumers/jack/credentials/rw",
            json!({"plugins": {"proxy-rewrite": {"uri": "/x"}}}),
            400,
            "plugins.proxy-rewrite",
        ),
        (
            "/consumers/jack/credentials/dup",
            json!({"plugins": {"key-auth": {"key": "jack-key-a"}}}),
            400,
            "plugins.key-auth.key",
        ),
    ] {
        let (status, body) = a.call("PUT", path, Some(def)).await;
        assert_eq!(status, want, "{path}: {body}");
        assert!(
            body["error_msg"].as_str().unwrap().contains(text),
            "{path}: {body}"
        );
    }
    let (status, body) = a
        .call(
            "PUT",
            "/consumers/rose",
            Some(json!({"plugins": {"key-auth": {"key": "jack-key-a"}}})),
        )
        .await;
    assert_eq!(status, 400, "a consumer took a credential's key: {body}");
    for method in ["POST", "PATCH"] {
        let (status, body) = a
            .call(
                method,
                "/consumers/jack/credentials/key-a",
                Some(json!({"plugins": {"key-auth": {"key": "other"}}})),
            )
            .await;
        assert_eq!(status, 405, "{method}: {body}");
    }

    a.ok(
        "PUT",
        "/consumers/jack/credentials/key-b",
        Some(json!({"plugins": {"key-auth": {"key": "jack-key-b"}}})),
    )
    .await;
    // Lists: the consumer's credentials, without secrets; consumers without credentials.
    let creds = a.ok("GET", "/consumers/jack/credentials", None).await;
    assert_eq!(creds["total"], 2, "{creds}");
    assert!(!creds.to_string().contains("jack-key"), "{creds}");
    let consumers = a.ok("GET", "/consumers", None).await;
    assert_eq!(consumers["total"], 1, "{consumers}");
    assert_eq!(consumers["list"][0]["value"]["username"], "jack");

    e.route(
        "1",
        json!({"uri": "/hello", "upstream_id": "rec", "plugins": {"key-auth": {}}}),
        "/hello",
        401,
    )
    .await;
    let call = |key: &'static str| {
        let req = e.request("GET", "/hello").header("apikey", key);
        async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    eventually(WAIT, "both credentials authenticate", || async {
        call("jack-key-a").await == 200 && call("jack-key-b").await == 200
    })
    .await;
    e.rec.clear();
    assert_eq!(call("jack-key-b").await, 200);
    assert_eq!(e.seen().header("x-consumer-username"), ["jack"]);

    // Rotation: one key goes, the other stays.
    a.ok("DELETE", "/consumers/jack/credentials/key-a", None)
        .await;
    eventually(WAIT, "the deleted key is refused", || async {
        call("jack-key-a").await == 401
    })
    .await;
    assert_eq!(call("jack-key-b").await, 200);

    // The consumer goes, its credentials with it.
    a.ok("DELETE", "/consumers/jack", None).await;
    eventually(WAIT, "the consumer's credential is refused", || async {
        call("jack-key-b").await == 401
    })
    .await;
    let (status, _) = a
        .call("GET", "/consumers/jack/credentials/key-b", None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = a.call("GET", "/consumers/jack/credentials", None).await;
    assert_eq!(status, 404);
}

/// A consumer group's plugins apply to its consumers: over the route's, under the
/// consumer's own (APISIX's merge order); a group in use cannot be deleted, a consumer
/// cannot name a missing group, and a change to the group reaches its consumers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_groups_share_plugins() {
    let e = env().await;
    let a = &e.s.admin;
    let (status, body) = a
        .call(
            "PUT",
            "/consumers/jack",
            Some(json!({"group_id": "company_a", "plugins": {"key-auth": {"key": "k-jack"}}})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_msg"].as_str().unwrap().contains("group_id"),
        "{body}"
    );
    let (status, body) = a
        .call(
            "POST",
            "/consumer_groups",
            Some(json!({"plugins": {"request-id": {}}})),
        )
        .await;
    assert_eq!(status, 405, "{body}");
    let (status, body) = a
        .call(
            "PUT",
            "/consumer_groups/company_a",
            Some(json!({"plugins": {"key-auth": {"key": "group-key"}}})),
        )
        .await;
    assert_eq!(status, 400, "a group holds no credential: {body}");

    a.ok(
        "PUT",
        "/consumer_groups/company_a",
        Some(json!({"desc": "tenant A", "plugins": {
            "proxy-rewrite": {"headers": {"set": {"X-Who": "group"}}},
            "response-rewrite": {"headers": {"set": {"X-Group": "a"}}}
        }})),
    )
    .await;
    a.ok(
        "PUT",
        "/consumers/jack",
        Some(json!({"group_id": "company_a", "plugins": {"key-auth": {"key": "k-jack"}}})),
    )
    .await;
    a.ok(
        "PUT",
        "/consumers/rose",
        Some(json!({"group_id": "company_a", "plugins": {
            "key-auth": {"key": "k-rose"},
            "proxy-rewrite": {"headers": {"set": {"X-Who": "rose"}}}
        }})),
    )
    .await;
    e.route(
        "1",
        json!({"uri": "/who", "upstream_id": "rec", "plugins": {
            "key-auth": {}, "proxy-rewrite": {"headers": {"set": {"X-Who": "route"}}}}}),
        "/who",
        401,
    )
    .await;
    let call = |key: &'static str| e.request("GET", "/who").header("apikey", key).send();
    eventually(WAIT, "the group's plugins apply", || async {
        call("k-jack")
            .await
            .is_ok_and(|r| r.headers().get("x-group").is_some_and(|v| v == "a"))
    })
    .await;
    e.rec.clear();
    call("k-jack").await.unwrap();
    assert_eq!(e.seen().header("x-who"), ["group"], "group over route");
    let resp = call("k-rose").await.unwrap();
    assert_eq!(resp.headers()["x-group"], "a");
    assert_eq!(e.seen().header("x-who"), ["rose"], "consumer over group");

    let (status, body) = a.call("DELETE", "/consumer_groups/company_a", None).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap()
            .contains("consumer jack"),
        "{body}"
    );

    // A change to the group reaches its consumers without touching them.
    a.ok(
        "PATCH",
        "/consumer_groups/company_a",
        Some(json!({"plugins": {"response-rewrite": {"headers": {"set": {"X-Group": "b"}}}}})),
    )
    .await;
    eventually(WAIT, "the changed group applies", || async {
        call("k-jack")
            .await
            .is_ok_and(|r| r.headers().get("x-group").is_some_and(|v| v == "b"))
    })
    .await;
    let groups = a.ok("GET", "/consumer_groups", None).await;
    assert_eq!(groups["total"], 1, "{groups}");

    // consumer-restriction by group: jack's group is listed; tom has none, which APISIX
    // answers 401 (no value to check), not 403.
    a.ok(
        "PUT",
        "/consumers/tom",
        Some(json!({"plugins": {"key-auth": {"key": "k-tom"}}})),
    )
    .await;
    e.route(
        "2",
        json!({"uri": "/group-only", "upstream_id": "rec", "plugins": {
            "key-auth": {},
            "consumer-restriction": {"type": "consumer_group_id", "whitelist": ["company_a"]}}}),
        "/group-only",
        401,
    )
    .await;
    let only = |key: &'static str| e.request("GET", "/group-only").header("apikey", key).send();
    eventually(WAIT, "jack's group passes", || async {
        only("k-jack").await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let resp = only("k-tom").await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("consumer_group_id"),
        "{body}"
    );
    // A group not on the list: 403.
    a.ok(
        "PUT",
        "/consumer_groups/company_b",
        Some(json!({"plugins": {"request-id": {}}})),
    )
    .await;
    a.ok(
        "PUT",
        "/consumers/tom",
        Some(json!({"group_id": "company_b", "plugins": {"key-auth": {"key": "k-tom"}}})),
    )
    .await;
    eventually(WAIT, "tom's group is refused", || async {
        only("k-tom").await.is_ok_and(|r| r.status() == 403)
    })
    .await;
}
