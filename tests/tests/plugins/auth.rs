//! Authentication and access plugins beyond key-auth: basic-auth, jwt-auth,
//! consumer-restriction, and a consumer's own plugins merged over the route's.
use super::{env, Env, WAIT};
use base64::Engine;
use e2e::eventually;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

async fn message(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn basic(user: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b64}")
}

/// APISIX's basic-auth example (consumer `foo`, `foo:bar`), and every refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_with_consumers() {
    let e = env().await;
    let stored =
        e.s.admin
            .ok(
                "PUT",
                "/consumers/foo",
                Some(json!({"plugins": {"basic-auth": {"username": "foo", "password": "bar"}}})),
            )
            .await;
    assert!(
        stored["value"]["plugins"]["basic-auth"]
            .get("password")
            .is_none(),
        "a password was answered: {stored}"
    );
    assert_eq!(stored["value"]["plugins"]["basic-auth"]["username"], "foo");
    // Another consumer may not take the same user name.
    let (status, body) =
        e.s.admin
            .call(
                "PUT",
                "/consumers/bar",
                Some(json!({"plugins": {"basic-auth": {"username": "foo", "password": "x"}}})),
            )
            .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap()
            .contains("plugins.basic-auth.username"),
        "{body}"
    );

    e.route(
        "1",
        json!({"uri": "/hello", "upstream_id": "rec", "plugins": {"basic-auth": {}}}),
        "/hello",
        401,
    )
    .await;
    let resp = e
        .request("GET", "/hello")
        .header("authorization", basic("foo", "bar"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = e.seen();
    assert_eq!(seen.header("x-consumer-username"), ["foo"]);
    assert_eq!(seen.header("authorization"), [basic("foo", "bar").as_str()]);

    for (header, want) in [
        (None, "Missing authorization in request"),
        (
            Some("Basic !!!".to_string()),
            "Invalid authorization in request",
        ),
        (
            Some("Bearer abc".to_string()),
            "Invalid authorization in request",
        ),
        (Some(basic("foo", "baz")), "Invalid user authorization"),
        (Some(basic("nobody", "bar")), "Invalid user authorization"),
        (Some(basic("foo", "")), "Invalid user authorization"),
    ] {
        let mut r = e.request("GET", "/hello");
        if let Some(h) = &header {
            r = r.header("authorization", h);
        }
        let resp = r.send().await.unwrap();
        assert_eq!(resp.headers()["www-authenticate"], "Basic realm='.'");
        assert_eq!(
            message(resp).await,
            (401, json!({"message": want})),
            "{header:?}"
        );
    }
    assert!(
        e.rec.requests().is_empty(),
        "a refused request reached the upstream"
    );

    // hide_credentials: the upstream never sees the password.
    e.route(
        "1",
        json!({"uri": "/hello", "upstream_id": "rec",
            "plugins": {"basic-auth": {"hide_credentials": true}}}),
        "/nothing-yet",
        404,
    )
    .await;
    eventually(WAIT, "hide_credentials is applied", || async {
        e.rec.clear();
        let resp = e
            .request("GET", "/hello")
            .header("authorization", basic("foo", "bar"))
            .send()
            .await
            .unwrap();
        resp.status() == 200
            && e.rec
                .requests()
                .first()
                .is_some_and(|s| s.header("authorization").is_empty())
    })
    .await;
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(alg: Algorithm, key: &EncodingKey, claims: Value) -> String {
    encode(&Header::new(alg), &claims, key).unwrap()
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// jwt-auth with HS256, RS256 and ES256 consumers; the token in a header (with and without
/// `Bearer`), the query and a cookie; and what must be refused: no token, garbage, an
/// unknown key, a wrong signature, `alg: none`, a public key used as an HMAC secret, an
/// expired token, one not valid yet, a deleted consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_auth_with_consumers() {
    let e = env().await;
    let ec = rcgen::KeyPair::generate().unwrap();
    let rsa_public = fixture("jwt-rs256-public.pem");
    for (user, conf) in [
        (
            "jack",
            json!({"key": "jack-key", "secret": "jack-hs256-secret"}),
        ),
        (
            "nick",
            json!({"key": "nick-key", "secret": "bmljay1zZWNyZXQ=", "base64_secret": true,
                         "algorithm": "HS512"}),
        ),
        (
            "rose",
            json!({"key": "rose-key", "algorithm": "ES256", "public_key": ec.public_key_pem()}),
        ),
        (
            "tom",
            json!({"key": "tom-key", "algorithm": "RS256", "public_key": rsa_public}),
        ),
    ] {
        let stored =
            e.s.admin
                .ok(
                    "PUT",
                    &format!("/consumers/{user}"),
                    Some(json!({"plugins": {"jwt-auth": conf}})),
                )
                .await;
        assert!(
            stored["value"]["plugins"]["jwt-auth"]
                .get("secret")
                .is_none(),
            "{stored}"
        );
    }
    let (status, body) = e
        .s
        .admin
        .call(
            "PUT",
            "/consumers/bad",
            Some(json!({"plugins": {"jwt-auth": {"key": "k", "algorithm": "RS256", "public_key": "nope"}}})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap()
            .contains("plugins.jwt-auth.public_key"),
        "{body}"
    );

    e.route(
        "1",
        json!({"uri": "/get", "upstream_id": "rec", "plugins": {"jwt-auth": {}}}),
        "/get",
        401,
    )
    .await;
    let hs = EncodingKey::from_secret(b"jack-hs256-secret");
    let exp = now() + 3600;
    let jack = token(
        Algorithm::HS256,
        &hs,
        json!({"key": "jack-key", "exp": exp}),
    );
    let get = |token: &str, how: &str| {
        let r = e.request(
            "GET",
            &match how {
                "query" => format!("/get?jwt={token}"),
                _ => "/get".to_string(),
            },
        );
        match how {
            "bearer" => r.header("authorization", format!("Bearer {token}")),
            "header" => r.header("authorization", token),
            "cookie" => r.header("cookie", format!("a=1; jwt={token}")),
            _ => r,
        }
        .send()
    };
    for how in ["bearer", "header", "query", "cookie"] {
        let resp = get(&jack, how).await.unwrap();
        assert_eq!(resp.status(), 200, "{how}");
        assert_eq!(e.seen().header("x-consumer-username"), ["jack"], "{how}");
    }
    let nick = token(
        Algorithm::HS512,
        &EncodingKey::from_secret(b"nick-secret"),
        json!({"key": "nick-key"}),
    );
    let rose = token(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
        json!({"key": "rose-key", "exp": exp}),
    );
    let tom = token(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(fixture("jwt-rs256-private.pem").as_bytes()).unwrap(),
        json!({"key": "tom-key", "exp": exp}),
    );
    for (t, user) in [(&nick, "nick"), (&rose, "rose"), (&tom, "tom")] {
        let resp = get(t, "bearer").await.unwrap();
        assert_eq!(resp.status(), 200, "{user}");
        assert_eq!(e.seen().header("x-consumer-username"), [user]);
    }

    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(r#"{"key":"jack-key"}"#)
    );
    // Algorithm confusion: rose's public key as an HMAC secret.
    let confused = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(ec.public_key_pem().as_bytes()),
        json!({"key": "rose-key"}),
    );
    let wrong = EncodingKey::from_secret(b"another-secret");
    for (t, want) in [
        ("".to_string(), "Missing JWT token in request"),
        ("not-a-token".to_string(), "JWT token invalid"),
        (
            token(Algorithm::HS256, &hs, json!({"sub": "x"})),
            "JWT token invalid",
        ),
        (
            token(Algorithm::HS256, &hs, json!({"key": "who"})),
            "Invalid user key in JWT token",
        ),
        (
            token(Algorithm::HS256, &wrong, json!({"key": "jack-key"})),
            "failed to verify jwt",
        ),
        (none, "failed to verify jwt"),
        (confused, "failed to verify jwt"),
        (
            token(
                Algorithm::HS256,
                &hs,
                json!({"key": "jack-key", "exp": now() - 600}),
            ),
            "failed to verify jwt",
        ),
        (
            token(
                Algorithm::HS256,
                &hs,
                json!({"key": "jack-key", "nbf": now() + 600}),
            ),
            "failed to verify jwt",
        ),
        // HS512 for a consumer whose algorithm is HS256.
        (
            token(Algorithm::HS512, &hs, json!({"key": "jack-key"})),
            "failed to verify jwt",
        ),
    ] {
        let resp = match t.is_empty() {
            true => e.request("GET", "/get").send().await.unwrap(),
            false => get(&t, "bearer").await.unwrap(),
        };
        assert_eq!(message(resp).await, (401, json!({"message": want})), "{t}");
    }
    assert!(
        e.rec.requests().is_empty(),
        "a refused request reached the upstream"
    );

    // hide_credentials: the token's cookie goes, the others stay.
    e.s.admin
        .ok(
            "PUT",
            "/routes/1",
            Some(json!({"uri": "/get", "upstream_id": "rec",
            "plugins": {"jwt-auth": {"hide_credentials": true}}})),
        )
        .await;
    eventually(WAIT, "hide_credentials is applied", || async {
        e.rec.clear();
        let ok = get(&jack, "cookie").await.unwrap().status() == 200;
        ok && e
            .rec
            .requests()
            .first()
            .is_some_and(|s| s.header("cookie") == ["a=1"])
    })
    .await;

    e.s.admin.ok("DELETE", "/consumers/jack", None).await;
    eventually(
        WAIT,
        "the deleted consumer's tokens are refused",
        || async {
            let resp = get(&jack, "bearer").await.unwrap();
            message(resp).await == (401, json!({"message": "Invalid user key in JWT token"}))
        },
    )
    .await;
}

async fn consumers(e: &Env) {
    for (user, key, extra) in [
        ("jack1", "auth-jack1", json!({})),
        ("jack2", "auth-jack2", json!({})),
        // Its own plugins, merged over the route's once it is authenticated.
        (
            "rose",
            "auth-rose",
            json!({"proxy-rewrite": {"headers": {"set": {"X-Who": "rose"}}},
                   "response-rewrite": {"headers": {"set": {"X-Rose": "yes"}}}}),
        ),
    ] {
        let mut plugins = json!({"key-auth": {"key": key}});
        for (k, v) in extra.as_object().unwrap() {
            plugins[k] = v.clone();
        }
        e.s.admin
            .ok(
                "PUT",
                &format!("/consumers/{user}"),
                Some(json!({"plugins": plugins})),
            )
            .await;
    }
}

/// APISIX's consumer-restriction examples: a whitelist of consumers, a blacklist with
/// its own code and message, methods per consumer, routes by id; and a request without a
/// consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_restriction() {
    let e = env().await;
    consumers(&e).await;
    e.route(
        "1",
        json!({"uri": "/anything", "upstream_id": "rec",
            "plugins": {"key-auth": {}, "consumer-restriction": {"whitelist": ["jack1"]}}}),
        "/anything",
        401,
    )
    .await;
    let call = |path: &str, key: Option<&str>, method: &str| {
        let mut r = e.request(method, path);
        if let Some(k) = key {
            r = r.header("apikey", k);
        }
        r.send()
    };
    assert_eq!(
        call("/anything", Some("auth-jack1"), "GET")
            .await
            .unwrap()
            .status(),
        200
    );
    let forbidden = json!({"message": "The consumer_name is forbidden."});
    assert_eq!(
        message(call("/anything", Some("auth-jack2"), "GET").await.unwrap()).await,
        (403, forbidden.clone())
    );

    for (id, conf) in [
        (
            "2",
            json!({"blacklist": ["jack1"], "rejected_code": 401, "rejected_msg": "go away"}),
        ),
        (
            "3",
            json!({"allowed_by_methods": [{"user": "jack1", "methods": ["POST"]}]}),
        ),
    ] {
        e.s.admin
            .ok(
                "PUT",
                &format!("/routes/{id}"),
                Some(json!({"uri": format!("/r{id}"), "upstream_id": "rec",
                "plugins": {"key-auth": {}, "consumer-restriction": conf}})),
            )
            .await;
    }
    // Route id as the subject; no authentication on this route at all.
    e.s.admin
        .ok(
            "PUT",
            "/routes/4",
            Some(json!({"uri": "/r4", "upstream_id": "rec",
            "plugins": {"consumer-restriction": {"type": "route_id", "blacklist": ["4"]}}})),
        )
        .await;
    e.s.admin
        .ok(
            "PUT",
            "/routes/5",
            Some(json!({"uri": "/r5", "upstream_id": "rec",
            "plugins": {"consumer-restriction": {"whitelist": ["jack1"]}}})),
        )
        .await;
    eventually(WAIT, "the routes are served", || async {
        call("/r5", None, "GET")
            .await
            .is_ok_and(|r| r.status() == 401)
    })
    .await;
    for (path, key, method, want) in [
        (
            "/r2",
            "auth-jack1",
            "GET",
            (401, json!({"message": "go away"})),
        ),
        ("/r3", "auth-jack1", "GET", (403, forbidden.clone())),
        ("/r3", "auth-jack2", "POST", (403, forbidden.clone())),
        (
            "/r4",
            "",
            "GET",
            (403, json!({"message": "The route_id is forbidden."})),
        ),
        (
            "/r5",
            "",
            "GET",
            (
                401,
                json!({"message": "The request is rejected, please check the consumer_name for this request"}),
            ),
        ),
    ] {
        let key = (!key.is_empty()).then_some(key);
        assert_eq!(
            message(call(path, key, method).await.unwrap()).await,
            want,
            "{path} {key:?} {method}"
        );
    }
    e.rec.clear();
    for (path, key, method) in [("/r2", "auth-jack2", "GET"), ("/r3", "auth-jack1", "POST")] {
        assert_eq!(
            call(path, Some(key), method).await.unwrap().status(),
            200,
            "{path} {key}"
        );
    }
    assert_eq!(e.rec.requests().len(), 2);
}

/// A consumer's plugins are merged over the route's after authentication: rose's
/// proxy-rewrite replaces the route's, her response-rewrite is added; jack1 gets the
/// route's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_plugins_merge_over_the_routes() {
    let e = env().await;
    consumers(&e).await;
    e.route(
        "1",
        json!({"uri": "/who", "upstream_id": "rec",
            "plugins": {"key-auth": {}, "proxy-rewrite": {"headers": {"set": {"X-Who": "route"}}}}}),
        "/who",
        401,
    )
    .await;
    let call = |key: &str| e.request("GET", "/who").header("apikey", key).send();
    let resp = call("auth-jack1").await.unwrap();
    assert!(resp.headers().get("x-rose").is_none());
    assert_eq!(e.seen().header("x-who"), ["route"]);
    let resp = call("auth-rose").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-rose"], "yes");
    assert_eq!(e.seen().header("x-who"), ["rose"]);
}

/// Signs a request as APISIX's hmac-auth documentation does (draft-cavage: the key id,
/// then one line per name of `headers`), returning its `Date` and `Authorization`.
fn hmac_sign(
    key_id: &str,
    secret: &str,
    alg: &str,
    target: &str,
    date: std::time::SystemTime,
    extra: &[(&str, &str)],
) -> (String, String) {
    let date = httpdate::fmt_http_date(date);
    let mut names = vec!["@request-target", "date"];
    let mut s = format!("{key_id}\nGET {target}\ndate: {date}\n");
    for (name, value) in extra {
        names.push(name);
        s.push_str(&format!("{name}: {value}\n"));
    }
    let ring_alg = match alg {
        "hmac-sha1" => ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        "hmac-sha512" => ring::hmac::HMAC_SHA512,
        _ => ring::hmac::HMAC_SHA256,
    };
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring_alg, secret.as_bytes()),
        s.as_bytes(),
    );
    let sig = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    let auth = format!(
        r#"Signature keyId="{key_id}",algorithm="{alg}",headers="{}",signature="{sig}""#,
        names.join(" ")
    );
    (date, auth)
}

/// APISIX's hmac-auth examples: a signed request becomes its consumer's (also through a
/// credential); hide_credentials; mandated signed headers; and each refusal is a 401 with
/// APISIX's message, never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_auth_with_consumers() {
    let e = env().await;
    let stored =
        e.s.admin
            .ok(
                "PUT",
                "/consumers/john",
                Some(json!({"plugins": {"hmac-auth": {"key_id": "john-key", "secret_key": "john-secret-key"}}})),
            )
            .await;
    assert!(
        !stored.to_string().contains("john-secret-key"),
        "a secret was answered: {stored}"
    );
    e.s.admin
        .ok("PUT", "/consumers/rose", Some(json!({"username": "rose"})))
        .await;
    e.s.admin
        .ok(
            "PUT",
            "/consumers/rose/credentials/hmac",
            Some(json!({"plugins": {"hmac-auth": {"key_id": "rose-key", "secret_key": "rose-secret"}}})),
        )
        .await;
    let (status, body) =
        e.s.admin
            .call(
                "PUT",
                "/routes/bad",
                Some(json!({"uri": "/x", "upstream_id": "rec", "plugins": {"hmac-auth": {"validate_request_body": true}}})),
            )
            .await;
    assert_eq!(status, 400, "{body}");
    e.route(
        "1",
        json!({"uri": "/get", "upstream_id": "rec", "plugins": {"hmac-auth": {}}}),
        "/get",
        401,
    )
    .await;
    let now = SystemTime::now();
    let send = |target: &'static str,
                date: String,
                auth: String,
                extra: Vec<(&'static str, &'static str)>| {
        let mut req = e
            .request("GET", target)
            .header("date", date)
            .header("authorization", auth);
        for (k, v) in extra {
            req = req.header(k, v);
        }
        async move { message(req.send().await.unwrap()).await }
    };
    let (date, auth) = hmac_sign(
        "john-key",
        "john-secret-key",
        "hmac-sha256",
        "/get?a=1",
        now,
        &[],
    );
    assert_eq!(send("/get?a=1", date, auth.clone(), vec![]).await.0, 200);
    let seen = e.seen();
    assert_eq!(seen.header("x-consumer-username"), ["john"]);
    assert_eq!(seen.header("authorization"), [auth.as_str()]);
    let (date, auth) = hmac_sign("rose-key", "rose-secret", "hmac-sha512", "/get", now, &[]);
    assert_eq!(send("/get", date, auth, vec![]).await.0, 200);
    assert_eq!(e.seen().header("x-consumer-username"), ["rose"]);

    // Refusals: each a 401 with APISIX's message and the challenge.
    let generic = "client request can't be validated";
    let hour_ago = now - std::time::Duration::from_secs(3600);
    let cases: Vec<(&str, (String, String), String)> = vec![
        (
            "signed /get?a=1, sent /get",
            hmac_sign(
                "john-key",
                "john-secret-key",
                "hmac-sha256",
                "/get?a=1",
                now,
                &[],
            ),
            generic.into(),
        ),
        (
            "wrong secret",
            hmac_sign("john-key", "nope", "hmac-sha256", "/get", now, &[]),
            generic.into(),
        ),
        (
            "unknown key",
            hmac_sign("who", "john-secret-key", "hmac-sha256", "/get", now, &[]),
            generic.into(),
        ),
        (
            "an hour old",
            hmac_sign(
                "john-key",
                "john-secret-key",
                "hmac-sha256",
                "/get",
                hour_ago,
                &[],
            ),
            generic.into(),
        ),
        (
            "unknown algorithm",
            hmac_sign("john-key", "john-secret-key", "hmac-md5", "/get", now, &[]),
            generic.into(),
        ),
        (
            "not a signature",
            (httpdate::fmt_http_date(now), "Bearer abc".into()),
            format!("{generic}: Authorization header does not start with 'Signature'"),
        ),
        (
            "malformed",
            (httpdate::fmt_http_date(now), "Signature keyId=x".into()),
            generic.into(),
        ),
    ];
    for (what, (date, auth), want) in cases {
        let resp = e
            .request("GET", "/get")
            .header("date", date)
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.headers()["www-authenticate"],
            "hmac realm=\"hmac\"",
            "{what}"
        );
        let (status, body) = message(resp).await;
        assert_eq!(
            (status, body["message"].as_str().unwrap()),
            (401, want.as_str()),
            "{what}"
        );
    }
    let (status, body) = message(e.request("GET", "/get").send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(
        body["message"],
        format!("{generic}: missing Authorization header")
    );
    assert!(
        e.rec.requests().is_empty(),
        "a refused request reached the upstream"
    );

    // Mandated headers and allowed algorithms; hide_credentials.
    e.route(
        "2",
        json!({"uri": "/strict", "upstream_id": "rec", "plugins": {"hmac-auth": {
            "signed_headers": ["date", "x-custom-a"], "allowed_algorithms": ["hmac-sha256"],
            "hide_credentials": true}}}),
        "/strict",
        401,
    )
    .await;
    let (date, auth) = hmac_sign(
        "john-key",
        "john-secret-key",
        "hmac-sha256",
        "/strict",
        now,
        &[],
    );
    assert_eq!(
        send("/strict", date, auth, vec![("x-custom-a", "v")])
            .await
            .0,
        401,
        "x-custom-a not signed"
    );
    let (date, auth) = hmac_sign(
        "john-key",
        "john-secret-key",
        "hmac-sha1",
        "/strict",
        now,
        &[("x-custom-a", "v")],
    );
    assert_eq!(
        send("/strict", date, auth, vec![("x-custom-a", "v")])
            .await
            .0,
        401,
        "sha1 not allowed"
    );
    let (date, auth) = hmac_sign(
        "john-key",
        "john-secret-key",
        "hmac-sha256",
        "/strict",
        now,
        &[("x-custom-a", "v")],
    );
    assert_eq!(
        send(
            "/strict",
            date.clone(),
            auth.clone(),
            vec![("x-custom-a", "changed")]
        )
        .await
        .0,
        401,
        "a signed header changed"
    );
    assert_eq!(
        send("/strict", date, auth, vec![("x-custom-a", "v")])
            .await
            .0,
        200
    );
    let seen = e.seen();
    assert!(seen.header("authorization").is_empty(), "hide_credentials");
    assert_eq!(seen.header("x-consumer-username"), ["john"]);
}
