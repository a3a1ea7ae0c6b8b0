//! End-to-end tests of the `admin-api` binary against a real etcd: the APISIX-compatible
//! shapes, every error path, and the concurrency guarantees (no lost update, unique ids).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::{bin, eventually, free_port, wait_for_tcp, AdminApi, Etcd, Proc};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

const KEY: &str = "test-admin-key-0123";
const PREFIX: &str = "/gateway";

fn start() -> (Etcd, AdminApi) {
    let etcd = Etcd::start();
    let admin = AdminApi::start(&etcd.url, PREFIX, KEY);
    (etcd, admin)
}

async fn upstream(admin: &AdminApi, id: &str) {
    admin
        .ok(
            "PUT",
            &format!("/upstreams/{id}"),
            Some(json!({"nodes": {"127.0.0.1:1980": 1}})),
        )
        .await;
}

async fn route(admin: &AdminApi, id: &str, body: Value) -> (u16, Value) {
    admin
        .call("PUT", &format!("/routes/{id}"), Some(body))
        .await
}

/// A raw request, for what `AdminApi::call` does not cover (other keys, raw bodies).
async fn raw(
    admin: &AdminApi,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client.request(
        method.parse().unwrap(),
        format!("http://{}{path}", admin.addr),
    );
    if let Some(k) = key {
        req = req.header("X-API-KEY", k);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{method} {path}: body is not JSON: {text:?}"));
    (status, json)
}

fn error_msg(body: &Value) -> &str {
    body["error_msg"]
        .as_str()
        .unwrap_or_else(|| panic!("no error_msg in {body}"))
}

#[track_caller]
fn assert_error(got: (u16, Value), status: u16, needle: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    let msg = error_msg(&got.1);
    assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
}

#[tokio::test]
async fn auth_by_header_or_query() {
    let (_etcd, admin) = start();
    upstream(&admin, "1").await;
    let path = "/apisix/admin/upstreams/1";

    let (status, body) = raw(&admin, "GET", path, Some(KEY), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = raw(&admin, "GET", &format!("{path}?api_key={KEY}"), None, None).await;
    assert_eq!(status, 200, "{body}");

    let missing = raw(&admin, "GET", path, None, None).await;
    assert_error(missing, 401, "failed to check token: missing admin key");
    let wrong = raw(&admin, "GET", path, Some("nope"), None).await;
    assert_error(wrong, 401, "failed to check token: wrong admin key");
    let wrong_query = raw(&admin, "GET", &format!("{path}?api_key=nope"), None, None).await;
    assert_error(wrong_query, 401, "failed to check token");
    // Writes are refused before their body is looked at.
    let write = raw(&admin, "DELETE", path, None, None).await;
    assert_error(write, 401, "failed to check token");
    assert_eq!(admin.call("GET", "/upstreams/1", None).await.0, 200);
}

#[tokio::test]
async fn openapi_is_public_and_lists_every_path() {
    let (_etcd, admin) = start();
    let (status, doc) = raw(&admin, "GET", "/apisix/admin/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.0"));
    let paths = doc["paths"].as_object().unwrap();
    for kind in ["routes", "services", "upstreams", "ssls"] {
        let base = format!("/apisix/admin/{kind}");
        for m in ["get", "put", "post"] {
            assert!(paths[&base][m].is_object(), "{m} {base}");
        }
        for m in ["get", "put", "patch", "delete"] {
            assert!(
                paths[&format!("{base}/{{id}}")][m].is_object(),
                "{m} {base}/{{id}}"
            );
        }
        assert!(paths[&format!("{base}/{{id}}/{{path}}")]["patch"].is_object());
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["ApiKeyHeader"]["name"],
        "X-API-KEY"
    );
}

#[tokio::test]
async fn unknown_paths_kinds_and_methods_answer_json() {
    let (_etcd, admin) = start();
    assert_error(
        admin.call("GET", "/nothing/here/at/all", None).await,
        404,
        "unknown resource kind",
    );
    assert_error(
        raw(&admin, "GET", "/elsewhere", Some(KEY), None).await,
        404,
        "no such endpoint",
    );
    assert_error(
        admin.call("DELETE", "/openapi.json", None).await,
        405,
        "DELETE is not allowed",
    );
    assert_error(
        admin.call("GET", "/widgets", None).await,
        404,
        "unknown resource kind \"widgets\"",
    );
    assert_error(
        admin.call("POST", "/routes/1", Some(json!({}))).await,
        405,
        "POST is not allowed",
    );
    assert_error(
        admin.call("GET", "/routes/1/uri", None).await,
        405,
        "not allowed",
    );
    assert_error(
        admin.call("GET", "/routes?color=red", None).await,
        400,
        "unknown query parameter \"color\"",
    );
}

#[tokio::test]
async fn invalid_bodies_name_the_field() {
    let (_etcd, admin) = start();
    upstream(&admin, "1").await;
    let table = [
        (
            json!({"uri": "a", "upstream_id": "1"}),
            "invalid field \"uri\"",
        ),
        (
            json!({"upstream_id": "1"}),
            "invalid field \"uri\": a route needs uri or uris",
        ),
        (json!({"uri": "/a"}), "invalid field \"upstream\""),
        (
            json!({"uri": "/a", "methods": ["FETCH"], "upstream_id": "1"}),
            "invalid field \"methods[0]\"",
        ),
        (
            json!({"uri": "/a", "upstream_id": "1", "filter_func": "x"}),
            "invalid field \"filter_func\"",
        ),
        (
            json!({"uri": "/a", "upstream_id": "1", "plugins": {"serverless-pre-function": {}}}),
            "invalid field \"plugins.serverless-pre-function\"",
        ),
        (
            json!({"uri": "/a", "upstream": {"nodes": {"127.0.0.1:0": 1}}}),
            "invalid field \"upstream.nodes\"",
        ),
        (
            json!({"uri": "/a", "upstream_id": "1", "priority": "high"}),
            "invalid field \"priority\"",
        ),
        (
            json!({"uri": "/a", "upstream_id": "1", "create_time": "yesterday"}),
            "invalid field \"create_time\"",
        ),
        (
            json!({"id": "2", "uri": "/a", "upstream_id": "1"}),
            "invalid field \"id\": \"2\" in the body does not match \"1\"",
        ),
        (json!(["/a"]), "the body must be a JSON object"),
    ];
    for (body, needle) in table {
        assert_error(route(&admin, "1", body).await, 400, needle);
    }
    let upstreams = [
        (
            json!({"nodes": {"127.0.0.1:80": 1}, "type": "chash"}),
            "invalid field \"key\": is required",
        ),
        (
            json!({"nodes": {"127.0.0.1:80": 1}, "retries": 1000}),
            "invalid field \"retries\"",
        ),
        (json!({}), "invalid field \"nodes\": is required"),
    ];
    for (body, needle) in upstreams {
        assert_error(
            admin.call("PUT", "/upstreams/2", Some(body)).await,
            400,
            needle,
        );
    }
    let services = admin
        .call("PUT", "/services/1", Some(json!({"hosts": []})))
        .await;
    assert_error(services, 400, "invalid field \"hosts\"");

    // Not JSON, empty, invalid id in the URL, missing id, id given to POST.
    let bad_json = raw(
        &admin,
        "PUT",
        "/apisix/admin/routes/1",
        Some(KEY),
        Some(b"{\"uri\":".to_vec()),
    )
    .await;
    assert_error(bad_json, 400, "invalid JSON in the request body");
    let empty = raw(
        &admin,
        "PUT",
        "/apisix/admin/routes/1",
        Some(KEY),
        Some(Vec::new()),
    )
    .await;
    assert_error(empty, 400, "the request body is empty");
    let bad_id = route(&admin, "a%20b", json!({"uri": "/a", "upstream_id": "1"})).await;
    assert_error(bad_id, 400, "invalid field \"id\"");
    let no_id = admin
        .call(
            "PUT",
            "/routes",
            Some(json!({"uri": "/a", "upstream_id": "1"})),
        )
        .await;
    assert_error(no_id, 400, "invalid field \"id\": is required");
    let post_id = admin
        .call(
            "POST",
            "/routes",
            Some(json!({"id": "5", "uri": "/a", "upstream_id": "1"})),
        )
        .await;
    assert_error(post_id, 400, "invalid field \"id\": POST assigns the id");

    // Nothing was stored by any of them.
    assert_eq!(admin.ok("GET", "/routes", None).await["total"], 0);
    assert_eq!(admin.ok("GET", "/services", None).await["total"], 0);
    assert_eq!(admin.ok("GET", "/upstreams", None).await["total"], 1);
}

#[tokio::test]
async fn unknown_ids_are_404() {
    let (_etcd, admin) = start();
    assert_error(
        admin.call("GET", "/routes/7", None).await,
        404,
        "route 7 not found",
    );
    assert_error(
        admin.call("DELETE", "/routes/7", None).await,
        404,
        "route 7 not found",
    );
    assert_error(
        admin.call("DELETE", "/upstreams/7", None).await,
        404,
        "upstream 7 not found",
    );
    assert_error(
        admin
            .call("PATCH", "/services/7", Some(json!({"desc": "x"})))
            .await,
        404,
        "service 7 not found",
    );
    assert_error(
        admin
            .call("PATCH", "/routes/7/desc", Some(json!("x")))
            .await,
        404,
        "route 7 not found",
    );
}

#[tokio::test]
async fn references_must_exist() {
    let (_etcd, admin) = start();
    assert_error(
        route(&admin, "1", json!({"uri": "/a", "upstream_id": "9"})).await,
        400,
        "upstream 9 referenced by upstream_id does not exist",
    );
    assert_error(
        route(&admin, "1", json!({"uri": "/a", "service_id": 5})).await,
        400,
        "service 5 referenced by service_id does not exist",
    );
    assert_error(
        admin
            .call("PUT", "/services/1", Some(json!({"upstream_id": "9"})))
            .await,
        400,
        "upstream 9 referenced by upstream_id does not exist",
    );
    assert_error(
        admin
            .call(
                "POST",
                "/routes",
                Some(json!({"uri": "/a", "upstream_id": "9"})),
            )
            .await,
        400,
        "upstream 9 referenced by upstream_id does not exist",
    );

    upstream(&admin, "9").await;
    admin
        .ok("PUT", "/services/5", Some(json!({"upstream_id": 9})))
        .await;
    let (status, body) = route(&admin, "1", json!({"uri": "/a", "service_id": 5})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["value"]["service_id"], 5,
        "the user's value is stored as given"
    );
    // A PATCH that points at a missing resource is refused too.
    assert_error(
        admin
            .call("PATCH", "/routes/1", Some(json!({"upstream_id": "404"})))
            .await,
        400,
        "upstream 404 referenced by upstream_id does not exist",
    );
}

#[tokio::test]
async fn delete_in_use_names_the_users_unless_forced() {
    let (_etcd, admin) = start();
    upstream(&admin, "1").await;
    upstream(&admin, "2").await;
    route(&admin, "3", json!({"uri": "/a", "upstream_id": "1"})).await;
    admin
        .ok("PUT", "/services/s", Some(json!({"upstream_id": "2"})))
        .await;
    route(&admin, "4", json!({"uri": "/b", "service_id": "s"})).await;

    assert_error(
        admin.call("DELETE", "/upstreams/1", None).await,
        400,
        "can not delete upstream 1: still used by route 3",
    );
    assert_error(
        admin.call("DELETE", "/upstreams/2", None).await,
        400,
        "can not delete upstream 2: still used by service s",
    );
    assert_error(
        admin.call("DELETE", "/services/s", None).await,
        400,
        "can not delete service s: still used by route 4",
    );
    assert_error(
        admin.call("DELETE", "/upstreams/1?force=yes", None).await,
        400,
        "invalid field \"force\"",
    );
    // Nothing was deleted.
    assert_eq!(admin.ok("GET", "/upstreams", None).await["total"], 2);

    // Once the user is gone the delete goes through; force skips the check.
    admin.ok("DELETE", "/routes/3", None).await;
    let deleted = admin.ok("DELETE", "/upstreams/1", None).await;
    assert_eq!(
        deleted,
        json!({"deleted": "1", "key": "/gateway/upstreams/1"})
    );
    let forced = admin.ok("DELETE", "/services/s?force=true", None).await;
    assert_eq!(forced["key"], "/gateway/services/s");
    assert_error(
        admin.call("GET", "/services/s", None).await,
        404,
        "service s not found",
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let (_etcd, admin) = start();
    let big = format!("{{\"desc\": \"{}\"}}", "x".repeat(1_600_000)).into_bytes();
    let (status, body) = raw(
        &admin,
        "PUT",
        "/apisix/admin/upstreams/1",
        Some(KEY),
        Some(big),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(error_msg(&body).contains("larger than"), "{body}");
    // Just under the limit, the body is read and judged on its content.
    let near = format!(
        "{{\"nodes\": {{\"127.0.0.1:1\": 1}}, \"desc\": \"{}\"}}",
        "x".repeat(1_500_000)
    )
    .into_bytes();
    let under = raw(
        &admin,
        "PUT",
        "/apisix/admin/upstreams/1",
        Some(KEY),
        Some(near),
    )
    .await;
    assert_error(under, 400, "invalid field \"desc\"");
}

#[tokio::test]
async fn put_creates_then_replaces_keeping_create_time() {
    let (_etcd, admin) = start();
    upstream(&admin, "1").await;
    let (status, created) =
        route(&admin, "1", json!({"id": 1, "uri": "/a", "upstream_id": 1})).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["key"], "/gateway/routes/1");
    assert_eq!(created["value"]["id"], "1", "the id is stored as a string");
    let create_time = created["value"]["create_time"].as_u64().unwrap();
    assert_eq!(
        created["value"]["update_time"].as_u64().unwrap(),
        create_time
    );
    let first = admin.ok("GET", "/routes/1", None).await;

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, replaced) = route(&admin, "1", json!({"uri": "/b", "upstream_id": "1"})).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(
        replaced["value"]["create_time"].as_u64().unwrap(),
        create_time
    );
    assert!(replaced["value"]["update_time"].as_u64().unwrap() > create_time);

    let got = admin.ok("GET", "/routes/1", None).await;
    assert_eq!(got["key"], "/gateway/routes/1");
    assert_eq!(got["value"], replaced["value"]);
    assert_eq!(got["createdIndex"], first["createdIndex"]);
    assert!(got["modifiedIndex"].as_i64().unwrap() > first["modifiedIndex"].as_i64().unwrap());

    // PUT on the collection takes the id from the body.
    let (status, body) = admin
        .call(
            "PUT",
            "/routes",
            Some(json!({"id": "r2", "uri": "/c", "upstream_id": "1"})),
        )
        .await;
    assert_eq!(
        (status, body["key"].as_str()),
        (201, Some("/gateway/routes/r2")),
        "{body}"
    );
}

#[tokio::test]
async fn concurrent_posts_get_distinct_ids() {
    let (_etcd, admin) = start();
    upstream(&admin, "1").await;
    let admin = std::sync::Arc::new(admin);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let admin = admin.clone();
        tasks.spawn(async move {
            let body = json!({"uri": format!("/p{i}"), "upstream_id": "1"});
            admin.call("POST", "/routes", Some(body)).await
        });
    }
    let mut ids = BTreeSet::new();
    while let Some(res) = tasks.join_next().await {
        let (status, body) = res.unwrap();
        assert_eq!(status, 201, "{body}");
        let id = body["value"]["id"].as_str().unwrap().to_string();
        assert_eq!(id.len(), 20, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_digit()), "{id}");
        assert_eq!(body["key"], format!("/gateway/routes/{id}"));
        ids.insert(id);
    }
    assert_eq!(ids.len(), 20);
    let list = admin.ok("GET", "/routes", None).await;
    assert_eq!(list["total"], 20);
    let listed: BTreeSet<String> = list["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["value"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, ids);
}

#[tokio::test]
async fn list_pages_and_total() {
    let (_etcd, admin) = start();
    for i in 0..25 {
        upstream(&admin, &format!("u{i:02}")).await;
    }
    let all = admin.ok("GET", "/upstreams", None).await;
    assert_eq!(all["total"], 25);
    let all_keys: Vec<String> = keys(&all);
    assert_eq!(all_keys.len(), 25);
    let item = &all["list"][0];
    assert_eq!(item["key"], "/gateway/upstreams/u00");
    assert!(
        item["createdIndex"].is_i64() && item["modifiedIndex"].is_i64(),
        "{item}"
    );

    let mut paged = Vec::new();
    for (page, want) in [(1, 10), (2, 10), (3, 5), (4, 0)] {
        let body = admin
            .ok("GET", &format!("/upstreams?page={page}&page_size=10"), None)
            .await;
        assert_eq!(body["total"], 25, "page {page}");
        assert_eq!(body["list"].as_array().unwrap().len(), want, "page {page}");
        paged.extend(keys(&body));
    }
    assert_eq!(
        paged, all_keys,
        "the pages together are the whole list, in order"
    );
    let first = admin.ok("GET", "/upstreams?page_size=3", None).await;
    assert_eq!(keys(&first), all_keys[..3]);
    let seventh = admin.ok("GET", "/upstreams?page=7&page_size=4", None).await;
    assert_eq!(keys(&seventh), all_keys[24..]);

    for bad in [
        "page_size=0",
        "page_size=501",
        "page_size=x",
        "page=0&page_size=10",
        "page=2",
    ] {
        let (status, body) = admin.call("GET", &format!("/upstreams?{bad}"), None).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(error_msg(&body).contains("page"), "{bad}: {body}");
    }
    // Empty kinds list as empty.
    assert_eq!(
        admin.ok("GET", "/routes", None).await,
        json!({"list": [], "total": 0})
    );
}

fn keys(list: &Value) -> Vec<String> {
    list["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn patch_merges_and_replaces_sub_paths() {
    let (_etcd, admin) = start();
    upstream(&admin, "1").await;
    let (_, created) = route(
        &admin,
        "1",
        json!({"uri": "/a", "upstream_id": "1", "desc": "old", "methods": ["GET", "POST"],
               "labels": {"team": "a", "env": "dev"}}),
    )
    .await;
    let create_time = created["value"]["create_time"].clone();

    let patched = admin
        .ok(
            "PATCH",
            "/routes/1",
            Some(json!({"desc": null, "labels": {"env": null, "tier": "1"}, "priority": 5})),
        )
        .await;
    let v = &patched["value"];
    assert_eq!(v["labels"], json!({"team": "a", "tier": "1"}));
    assert!(v.get("desc").is_none(), "null removes: {v}");
    assert_eq!(v["priority"], 5);
    assert_eq!(v["uri"], "/a");
    assert_eq!(v["create_time"], create_time);
    assert_eq!(admin.ok("GET", "/routes/1", None).await["value"], *v);

    // APISIX sub-path patch replaces the value at the path.
    let sub = admin
        .ok("PATCH", "/routes/1/methods", Some(json!(["PUT"])))
        .await;
    assert_eq!(sub["value"]["methods"], json!(["PUT"]));
    let sub = admin
        .ok("PATCH", "/routes/1/labels/team", Some(json!("b")))
        .await;
    assert_eq!(sub["value"]["labels"], json!({"team": "b", "tier": "1"}));
    assert_eq!(sub["value"]["priority"], 5);
    let nested = admin
        .ok(
            "PATCH",
            "/routes/1",
            Some(json!({"upstream_id": null, "upstream": {"nodes": {"127.0.0.1:1": 1}}})),
        )
        .await;
    assert_eq!(
        nested["value"]["upstream"]["nodes"],
        json!({"127.0.0.1:1": 1})
    );
    let nodes = admin
        .ok(
            "PATCH",
            "/routes/1/upstream/nodes",
            Some(json!({"127.0.0.1:2": 3})),
        )
        .await;
    assert_eq!(
        nodes["value"]["upstream"]["nodes"],
        json!({"127.0.0.1:2": 3})
    );
    assert_error(
        admin.call("PATCH", "/routes/1/uri/x", Some(json!(1))).await,
        400,
        "invalid sub-path",
    );
}

#[tokio::test]
async fn patch_that_breaks_the_resource_changes_nothing() {
    let (_etcd, admin) = start();
    upstream(&admin, "1").await;
    route(&admin, "1", json!({"uri": "/a", "upstream_id": "1"})).await;
    let before = admin.ok("GET", "/routes/1", None).await;

    let cases = [
        ("/routes/1", json!({"uri": null}), "invalid field \"uri\""),
        (
            "/routes/1",
            json!({"methods": ["FETCH"]}),
            "invalid field \"methods[0]\"",
        ),
        (
            "/routes/1",
            json!({"upstream": {"nodes": {}}}),
            "invalid field \"upstream_id\"",
        ),
        ("/routes/1", json!({"id": "2"}), "invalid field \"id\""),
        (
            "/routes/1",
            json!(["not", "an", "object"]),
            "must be a JSON object",
        ),
        ("/routes/1/uri", json!("relative"), "invalid field \"uri\""),
        ("/routes/1/status", json!(7), "invalid field \"status\""),
        ("/routes/1/id", json!("other"), "invalid field \"id\""),
    ];
    for (path, body, needle) in cases {
        assert_error(admin.call("PATCH", path, Some(body)).await, 400, needle);
    }
    let after = admin.ok("GET", "/routes/1", None).await;
    assert_eq!(
        after, before,
        "the stored value and its revision are unchanged"
    );
}

#[tokio::test]
async fn concurrent_patches_from_two_replicas_all_survive() {
    let etcd = Etcd::start();
    let a = std::sync::Arc::new(AdminApi::start(&etcd.url, PREFIX, KEY));
    let b = std::sync::Arc::new(AdminApi::start(&etcd.url, PREFIX, KEY));
    a.ok(
        "PUT",
        "/upstreams/1",
        Some(json!({"nodes": {"127.0.0.1:1": 1}})),
    )
    .await;
    // Each replica sees what the other wrote: all state is in etcd.
    assert_eq!(b.ok("GET", "/upstreams/1", None).await["value"]["id"], "1");

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..12 {
        for (name, admin) in [("a", a.clone()), ("b", b.clone())] {
            tasks.spawn(async move {
                let label = format!("{name}{i}");
                let body = json!({"labels": {label.clone(): "set"}});
                // A 409 means "still conflicting after retries": never a lost update,
                // so the client may simply send it again.
                for _ in 0..20 {
                    let (status, resp) = admin
                        .call("PATCH", "/upstreams/1", Some(body.clone()))
                        .await;
                    match status {
                        200 => return label,
                        409 => continue,
                        other => panic!("{label}: {other} {resp}"),
                    }
                }
                panic!("{label}: still conflicting after 20 tries");
            });
        }
    }
    let mut expected = serde_json::Map::new();
    while let Some(label) = tasks.join_next().await {
        expected.insert(label.unwrap(), json!("set"));
    }
    let stored = b.ok("GET", "/upstreams/1", None).await;
    assert_eq!(stored["value"]["labels"], Value::Object(expected));
    assert_eq!(stored["value"]["nodes"], json!({"127.0.0.1:1": 1}));
}

#[tokio::test]
async fn etcd_down_is_503_and_recovers() {
    let (mut etcd, admin) = start();
    upstream(&admin, "1").await;
    etcd.stop();
    for (method, path, body) in [
        ("GET", "/upstreams/1", None),
        ("GET", "/upstreams", None),
        (
            "PUT",
            "/upstreams/2",
            Some(json!({"nodes": {"127.0.0.1:1": 1}})),
        ),
        ("DELETE", "/upstreams/1", None),
    ] {
        let started = std::time::Instant::now();
        let got = admin.call(method, path, body).await;
        assert_error(got, 503, "etcd is unavailable: ");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{method} {path} took too long"
        );
    }
    // Validation does not need etcd.
    let invalid = admin
        .call("PUT", "/upstreams/2", Some(json!({"nodes": 1})))
        .await;
    assert_error(invalid, 400, "invalid field \"nodes\"");

    etcd.restart();
    eventually(
        Duration::from_secs(20),
        "admin-api reaches etcd again",
        || async { admin.call("GET", "/upstreams/1", None).await.0 == 200 },
    )
    .await;
}

#[tokio::test]
async fn starts_while_etcd_is_down_and_uses_every_endpoint() {
    let nothing = format!("http://127.0.0.1:{}", free_port());
    let down = AdminApi::start(&nothing, PREFIX, KEY);
    assert_error(
        down.call("GET", "/routes", None).await,
        503,
        "etcd is unavailable",
    );

    // One live and one dead endpoint: calls that hit the dead one are retried on the other.
    let etcd = Etcd::start();
    let admin = AdminApi::start(&format!("{nothing},{}", etcd.url), PREFIX, KEY);
    for i in 0..10 {
        let path = format!("/upstreams/{i}");
        admin
            .ok("PUT", &path, Some(json!({"nodes": {"127.0.0.1:1": 1}})))
            .await;
        admin.ok("GET", &path, None).await;
    }
    assert_eq!(admin.ok("GET", "/upstreams", None).await["total"], 10);
}

/// Starts the binary with exactly `args`, the admin key variables cleared.
fn spawn_admin(args: &[String], dir: &std::path::Path) -> Proc {
    let mut cmd = Command::new(bin("admin-api"));
    cmd.args(args)
        .env_remove("ADMIN_KEY")
        .env_remove("ADMIN_INSECURE_NO_AUTH")
        .env_remove("DATA_ENCRYPTION_KEYS")
        .env("RUST_LOG", "info");
    Proc::spawn("admin-api", &mut cmd, dir)
}

#[tokio::test]
async fn refuses_unsafe_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("--listen=127.0.0.1:{}", free_port());
    for (args, needle) in [
        (vec![listen.clone()], "no admin key"),
        (
            vec![
                listen.clone(),
                format!("--admin-key={KEY}"),
                "--insecure-no-auth".into(),
            ],
            "contradict",
        ),
        (
            vec![
                listen.clone(),
                format!("--admin-key={KEY}"),
                "--data-encryption-keys=tooshort".into(),
            ],
            "16 or 32",
        ),
        (vec![listen.clone(), "--admin-key=k".into()], "at least 16"),
        (
            vec![
                listen.clone(),
                "--admin-key=edd1c9f034335f136f87ad84b625c8f1".into(),
            ],
            "published default key",
        ),
    ] {
        let mut proc = spawn_admin(&args, dir.path());
        let status = proc
            .wait_exit(Duration::from_secs(10))
            .expect("it should exit");
        assert!(!status.success(), "{args:?}");
        assert!(proc.log().contains(needle), "{args:?}: {}", proc.log());
    }
}

#[tokio::test]
async fn insecure_no_auth_serves_without_key_and_warns() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let args = vec![
        format!("--etcd-endpoints={}", etcd.url),
        format!("--listen={addr}"),
        "--insecure-no-auth".to_string(),
        format!(
            "--data-encryption-keys={},{}",
            "a".repeat(16),
            "b".repeat(32)
        ),
    ];
    let proc = spawn_admin(&args, dir.path());
    wait_for_tcp(addr, Duration::from_secs(20));
    let resp = reqwest::get(format!("http://{addr}/apisix/admin/routes"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(proc.log().contains("without a key"), "{}", proc.log());
    assert!(
        !proc.log().contains("plaintext"),
        "keys were given: {}",
        proc.log()
    );

    // Without encryption keys it warns that secrets would be stored in plaintext.
    let addr2 = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let args = vec![
        format!("--etcd-endpoints={}", etcd.url),
        format!("--listen={addr2}"),
        "--insecure-no-auth".to_string(),
    ];
    let proc2 = spawn_admin(&args, dir.path());
    wait_for_tcp(addr2, Duration::from_secs(20));
    assert!(proc2.log().contains("plaintext"), "{}", proc2.log());
}

/// A route that references an upstream and a delete of that upstream race on two
/// replicas: exactly one wins, and a route never points at a missing upstream.
#[tokio::test]
async fn racing_reference_and_delete_never_dangle() {
    let etcd = Etcd::start();
    let a = AdminApi::start(&etcd.url, PREFIX, KEY);
    let b = AdminApi::start(&etcd.url, PREFIX, KEY);
    let mut wins = (0, 0);
    for i in 0..24 {
        let up = format!("u{i}");
        upstream(&a, &up).await;
        let route_path = format!("/routes/{i}");
        let up_path = format!("/upstreams/{up}");
        let (put, del) = tokio::join!(
            async {
                // Stagger the start so that either side may win.
                tokio::time::sleep(Duration::from_millis(i % 8)).await;
                a.call(
                    "PUT",
                    &route_path,
                    Some(json!({"uri": "/x", "upstream_id": up})),
                )
                .await
            },
            b.call("DELETE", &up_path, None),
        );
        let route_exists = a.call("GET", &route_path, None).await.0 == 200;
        let upstream_exists = a.call("GET", &up_path, None).await.0 == 200;
        assert!(
            !route_exists || upstream_exists,
            "dangling reference: put {put:?}, delete {del:?}"
        );
        match (put.0, del.0) {
            (201, 400) => wins.0 += 1,
            (400, 200) => wins.1 += 1,
            other => panic!("exactly one should win: {other:?} {put:?} {del:?}"),
        }
    }
    eprintln!("route won {} times, delete won {} times", wins.0, wins.1);
}

/// Input that once crashed or confused the Admin API: a sub-path PATCH 3,000 segments deep
/// (a stack overflow killed the process), ids `.` and `..` (sent raw: HTTP clients resolve
/// them away). Each is a 400 naming the problem, and the process goes on serving.
#[tokio::test]
async fn hostile_paths_are_400_and_the_process_survives() {
    let (_etcd, admin) = start();
    upstream(&admin, "1").await;
    assert_eq!(
        route(&admin, "api", json!({"uri": "/a", "upstream_id": "1"}))
            .await
            .0,
        201
    );
    let deep = format!("/routes/api/plugins/redirect/{}", vec!["a"; 3000].join("/"));
    assert_error(
        admin.call("PATCH", &deep, Some(json!("x"))).await,
        400,
        "at most 32",
    );
    for id in [".", ".."] {
        for method in ["GET", "PUT", "DELETE"] {
            let body = r#"{"uri":"/a","upstream_id":"1"}"#;
            let req = format!(
                "{method} /apisix/admin/routes/{id} HTTP/1.1\r\nHost: a\r\nX-API-KEY: {KEY}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let resp = e2e::raw::exchange(admin.addr, req.as_bytes())
                .await
                .expect("an answer");
            assert_eq!(resp.status, 400, "{method} {id}: {}", resp.text());
            assert!(resp.text().contains("relative path"), "{}", resp.text());
        }
    }
    assert!(admin.proc.log().lines().all(|l| !l.contains("overflow")));
    assert_eq!(admin.call("GET", "/routes/api", None).await.0, 200);
    assert_eq!(admin.ok("GET", "/routes", None).await["total"], 1);
}

/// The viewer key reads everything and writes nothing; the admin key does both.
#[tokio::test]
async fn the_viewer_key_may_only_read() {
    let etcd = Etcd::start();
    let viewer = "viewer-key-0123456789";
    let admin = AdminApi::start_with_env(&etcd.url, PREFIX, KEY, &[("ADMIN_VIEWER_KEY", viewer)]);
    upstream(&admin, "1").await;
    for path in ["/apisix/admin/upstreams/1", "/apisix/admin/upstreams"] {
        let (status, body) = raw(&admin, "GET", path, Some(viewer), None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let body = br#"{"nodes": {"127.0.0.1:1": 1}}"#.to_vec();
    for method in ["PUT", "PATCH", "DELETE", "POST"] {
        let path = if method == "POST" {
            "/apisix/admin/upstreams"
        } else {
            "/apisix/admin/upstreams/1"
        };
        let got = raw(&admin, method, path, Some(viewer), Some(body.clone())).await;
        assert_error(got, 403, "the viewer key may only read");
    }
    let unchanged = admin.ok("GET", "/upstreams/1", None).await;
    assert_eq!(unchanged["value"]["nodes"], json!({"127.0.0.1:1980": 1}));
    // A near miss of either key is no key.
    let wrong = raw(
        &admin,
        "GET",
        "/apisix/admin/upstreams/1",
        Some(&viewer[1..]),
        None,
    )
    .await;
    assert_error(wrong, 401, "wrong admin key");
}

/// APISIX's list filters: `name` and `uri` search (regular expressions), `label` names a
/// label key; they combine, and `total` counts the matches before paging.
#[tokio::test]
async fn list_filters() {
    let (_etcd, admin) = start();
    upstream(&admin, "u").await;
    for (id, def) in [
        (
            "1",
            json!({"name": "orders-api", "uri": "/orders/*", "labels": {"env": "prod"}}),
        ),
        (
            "2",
            json!({"name": "users-api", "uris": ["/users", "/users/:id"], "labels": {"env": "dev"}}),
        ),
        ("3", json!({"uri": "/health"})),
    ] {
        let mut def = def;
        def["upstream_id"] = json!("u");
        assert_eq!(route(&admin, id, def).await.0, 201);
    }
    let ids = |v: &Value| -> Vec<String> {
        v["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["value"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    for (query, want) in [
        ("name=api", vec!["1", "2"]),
        ("name=^orders", vec!["1"]),
        ("label=env", vec!["1", "2"]),
        ("label=prod", vec![]),
        ("uri=users", vec!["2"]),
        ("uri=/&label=env&name=users", vec!["2"]),
        ("name=api&page=2&page_size=1", vec!["2"]),
    ] {
        let list = admin.ok("GET", &format!("/routes?{query}"), None).await;
        assert_eq!(ids(&list), want, "{query}: {list}");
        let total = if query.contains("page=") {
            2
        } else {
            want.len()
        };
        assert_eq!(list["total"], total, "{query}: {list}");
    }
    let (status, body) = admin.call("GET", "/routes?name=(", None).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_msg"].as_str().unwrap().contains("name"),
        "{body}"
    );
}

/// `?ttl=` puts a resource on an etcd lease: it is gone when the lease expires; a PATCH
/// keeps the expiry; a bad ttl is a 400 that writes nothing; kinds that others reference
/// (and consumers) cannot expire.
#[tokio::test]
async fn ttl_expires_resources() {
    let (etcd, admin) = start();
    upstream(&admin, "u").await;
    let route = |uri: &str| json!({"uri": uri, "upstream_id": "u"});
    let (status, body) = admin
        .call("PUT", "/routes/short?ttl=5", Some(route("/short")))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = admin
        .call("POST", "/routes?ttl=5", Some(route("/posted")))
        .await;
    assert_eq!(status, 201, "{body}");
    let posted = body["value"]["id"].as_str().unwrap().to_string();
    admin.ok("PUT", "/routes/kept", Some(route("/kept"))).await;
    admin
        .ok("PATCH", "/routes/short", Some(json!({"desc": "patched"})))
        .await;
    let lease = etcd.ctl(&["get", "/gateway/routes/short", "-w", "json"]);
    assert!(
        lease.contains("\"lease\""),
        "PATCH dropped the lease: {lease}"
    );
    // What others reference cannot expire (their references would dangle), nor can a
    // consumer (its credentials would outlive it).
    for (path, def) in [
        (
            "/upstreams/temp?ttl=5",
            json!({"nodes": {"127.0.0.1:1980": 1}}),
        ),
        ("/consumer_groups/temp?ttl=5", json!({"plugins": {}})),
        ("/consumers/temp?ttl=5", json!({"username": "temp"})),
    ] {
        let (status, body) = admin.call("PUT", path, Some(def)).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["error_msg"].as_str().unwrap().contains("ttl"),
            "{body}"
        );
    }
    for bad in ["0", "-1", "x", "99999999999"] {
        let (status, body) = admin
            .call(
                "PUT",
                &format!("/routes/bad?ttl={bad}"),
                Some(route("/bad")),
            )
            .await;
        assert_eq!(status, 400, "ttl={bad}: {body}");
        assert!(
            body["error_msg"].as_str().unwrap().contains("ttl"),
            "{body}"
        );
    }
    eventually(
        Duration::from_secs(20),
        "the leased routes expire",
        || async {
            admin.call("GET", "/routes/short", None).await.0 == 404
                && admin
                    .call("GET", &format!("/routes/{posted}"), None)
                    .await
                    .0
                    == 404
        },
    )
    .await;
    assert_eq!(admin.call("GET", "/routes/kept", None).await.0, 200);
    assert_eq!(admin.call("GET", "/routes/bad", None).await.0, 404);
    assert_eq!(admin.call("GET", "/upstreams/temp", None).await.0, 404);
}

/// `GET /plugins/list` and each plugin's schema, as APISIX answers them.
#[tokio::test]
async fn plugin_list_and_schemas() {
    let (_etcd, admin) = start();
    let list = admin.ok("GET", "/plugins/list", None).await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for n in [
        "key-auth",
        "proxy-rewrite",
        "cors",
        "traffic-split",
        "jwt-auth",
    ] {
        assert!(names.contains(&n), "{n}: {list}");
    }
    let at = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(at("request-id") < at("key-auth"), "priority order: {list}");
    assert_eq!(
        admin.call("GET", "/plugins/list?subsystem=x", None).await.0,
        400
    );

    for path in ["/plugins/key-auth", "/schema/plugins/key-auth"] {
        let schema = admin.ok("GET", path, None).await;
        assert!(
            schema["properties"]["header"].is_object(),
            "{path}: {schema}"
        );
        assert!(
            schema["properties"]["_meta"].is_object(),
            "{path}: {schema}"
        );
    }
    let consumer = admin
        .ok("GET", "/plugins/key-auth?schema_type=consumer", None)
        .await;
    assert_eq!(consumer["required"], json!(["key"]), "{consumer}");
    let (status, body) = admin.call("GET", "/plugins/no-such-plugin", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = admin
        .call("GET", "/plugins/cors?schema_type=consumer", None)
        .await;
    assert_eq!(status, 400);
}

/// `--tls-cert`/`--tls-key`: the Admin API over HTTPS only, with the certificate re-read
/// when its files change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_a_certificate_that_can_rotate() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = e2e::tls::self_signed(&["localhost"]);
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let admin = AdminApi::start_with_env(
        &etcd.url,
        "/gw",
        KEY,
        &[
            ("ADMIN_TLS_CERT", cert_path.to_str().unwrap()),
            ("ADMIN_TLS_KEY", key_path.to_str().unwrap()),
        ],
    );
    let path = format!("/apisix/admin/routes?api_key={KEY}");
    let answer = e2e::tls::get(admin.addr, "localhost", &cert, &[b"http/1.1"], &path)
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("\"list\""), "{}", answer.body);
    // Without the key, over TLS: refused as ever.
    let bare = e2e::tls::get(
        admin.addr,
        "localhost",
        &cert,
        &[b"http/1.1"],
        "/apisix/admin/routes",
    )
    .await
    .unwrap();
    assert_eq!(bare.status, 401);
    // 300 clients that connect and say nothing take every handshake slot (256): a real
    // client still gets through once theirs time out (5 s), and nothing breaks.
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(tokio::net::TcpStream::connect(admin.addr).await.unwrap());
    }
    let through = tokio::time::timeout(
        Duration::from_secs(15),
        e2e::tls::get(admin.addr, "localhost", &cert, &[b"http/1.1"], &path),
    )
    .await
    .expect("served within 15 s despite the silent clients")
    .unwrap();
    assert_eq!(through.status, 200);
    drop(silent);
    // Plain HTTP gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/apisix/admin/routes", admin.addr))
        .header("X-API-KEY", KEY)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    // A new certificate in the files is served within the reload period (10 s).
    let (cert2, key2) = e2e::tls::self_signed(&["localhost"]);
    std::fs::write(&key_path, &key2).unwrap();
    std::fs::write(&cert_path, &cert2).unwrap();
    eventually(
        Duration::from_secs(25),
        "the rotated certificate is served",
        || async {
            e2e::tls::get(admin.addr, "localhost", &cert2, &[b"http/1.1"], &path)
                .await
                .is_ok_and(|a| a.status == 200)
        },
    )
    .await;
    // Half of the pair is refused at start, naming the flags.
    let mut lone = Command::new(bin("admin-api"));
    lone.arg(format!("--etcd-endpoints={}", etcd.url))
        .arg(format!("--admin-key={KEY}"))
        .arg(format!("--listen=127.0.0.1:{}", free_port()))
        .arg(format!("--tls-cert={}", cert_path.display()));
    let out = lone.output().unwrap();
    assert!(!out.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("--tls-key"), "{said}");
}
