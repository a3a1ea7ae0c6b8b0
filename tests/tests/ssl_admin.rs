//! End-to-end tests of `/apisix/admin/ssls` against a real etcd and the real `admin-api`:
//! validation of certificates, keys and SNIs, private keys encrypted at rest with the
//! `DATA_ENCRYPTION_KEYS` keyring (and rotated), and never returned.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::tls::{self_signed, TestCa};
use e2e::{AdminApi, Etcd};
use model::Keyring;
use serde_json::{json, Value};

const KEY: &str = "test-admin-key-0123";
const PREFIX: &str = "/gateway";
const A: &str = "0123456789abcdef";
const B: &str = "abcdefghijklmnopqrstuvwxyz012345";

fn keyring(keys: &[&str]) -> Keyring {
    Keyring::new(&keys.iter().map(|k| k.to_string()).collect::<Vec<_>>()).unwrap()
}

fn admin(etcd: &Etcd, keys: &str) -> AdminApi {
    AdminApi::start_with_env(&etcd.url, PREFIX, KEY, &[("DATA_ENCRYPTION_KEYS", keys)])
}

/// The value etcd holds for `ssls/{id}`, as stored.
fn stored(etcd: &Etcd, id: &str) -> Value {
    let raw = etcd.ctl(&["get", &format!("{PREFIX}/ssls/{id}"), "--print-value-only"]);
    serde_json::from_str(raw.trim()).unwrap_or_else(|e| panic!("{raw:?}: {e}"))
}

#[track_caller]
fn assert_no_secret(value: &Value) {
    assert!(value.get("key").is_none(), "key returned: {value}");
    assert!(value.get("keys").is_none(), "keys returned: {value}");
    assert!(!value.to_string().contains("PRIVATE KEY"), "{value}");
}

#[track_caller]
fn assert_error(got: (u16, Value), status: u16, needle: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    let msg = got.1["error_msg"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
}

#[tokio::test]
async fn crud_with_encrypted_keys() {
    let etcd = Etcd::start();
    let admin = admin(&etcd, A);
    let ca = TestCa::new("crud ca");
    let (cert, key) = ca.leaf(&["a.test", "*.a.test"]);

    let (status, body) = admin
        .call(
            "PUT",
            "/ssls/1",
            Some(json!({"cert": cert, "key": key, "snis": ["a.test", "*.A.test"]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["key"], format!("{PREFIX}/ssls/1"));
    assert_no_secret(&body["value"]);
    assert_eq!(body["value"]["cert"], json!(cert));

    let got = admin.ok("GET", "/ssls/1", None).await;
    let value = &got["value"];
    assert_no_secret(value);
    let (start, end) = (
        value["validity_start"].as_u64().unwrap(),
        value["validity_end"].as_u64().unwrap(),
    );
    assert!(start < end, "{value}");
    assert!(value["create_time"].is_u64() && value["update_time"].is_u64());

    // At rest: encrypted, not PEM, and our keyring opens it.
    let raw = stored(&etcd, "1");
    let sealed = raw["key"].as_str().unwrap();
    assert!(!sealed.contains("BEGIN"), "{sealed}");
    assert_ne!(sealed, key);
    assert_eq!(keyring(&[A]).decrypt(sealed).unwrap(), key);
    assert_eq!(raw["validity_start"].as_u64(), Some(start));

    // POST assigns an id; `sni` is accepted as well as `snis`; extra certs/keys too.
    let (c2, k2) = self_signed(&["b.test"]);
    let (c3, k3) = self_signed(&["b.test"]);
    let (status, body) = admin
        .call(
            "POST",
            "/ssls",
            Some(json!({"cert": c2, "key": k2, "sni": "b.test", "certs": [c3], "keys": [k3]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_no_secret(&body["value"]);
    let posted = body["key"].as_str().unwrap().rsplit('/').next().unwrap();
    let raw = stored(&etcd, posted);
    let sealed = raw["keys"][0].as_str().unwrap();
    assert!(!sealed.contains("BEGIN"));
    assert_eq!(keyring(&[A]).decrypt(sealed).unwrap(), k3);

    let list = admin.ok("GET", "/ssls", None).await;
    assert_eq!(list["total"], 2, "{list}");
    for item in list["list"].as_array().unwrap() {
        assert_no_secret(&item["value"]);
        assert!(item["value"]["validity_end"].is_u64());
    }

    // PATCH merges over the stored (encrypted) key: it is opened, checked, sealed again.
    let body = admin
        .ok(
            "PATCH",
            "/ssls/1",
            Some(json!({"labels": {"team": "edge"}, "status": 0})),
        )
        .await;
    assert_no_secret(&body["value"]);
    assert_eq!(body["value"]["labels"]["team"], "edge");
    assert_eq!(
        keyring(&[A])
            .decrypt(stored(&etcd, "1")["key"].as_str().unwrap())
            .unwrap(),
        key
    );
    // A sub-path PATCH too.
    admin
        .ok("PATCH", "/ssls/1/snis", Some(json!(["c.test"])))
        .await;
    assert_eq!(stored(&etcd, "1")["snis"], json!(["c.test"]));
    // Replacing the certificate alone with one the stored key does not match fails.
    let (other_cert, _) = ca.leaf(&["a.test"]);
    assert_error(
        admin
            .call("PATCH", "/ssls/1", Some(json!({"cert": other_cert})))
            .await,
        400,
        "invalid field \"key\": does not match the certificate",
    );
    // PUT replaces (200), keeping create_time.
    let created = stored(&etcd, "1")["create_time"].clone();
    let (status, body) = admin
        .call(
            "PUT",
            "/ssls/1",
            Some(json!({"cert": cert, "key": key, "sni": "a.test"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stored(&etcd, "1")["create_time"], created);

    let deleted = admin.ok("DELETE", "/ssls/1", None).await;
    assert_eq!(deleted["deleted"], "1");
    assert_eq!(admin.call("GET", "/ssls/1", None).await.0, 404);
}

#[tokio::test]
async fn invalid_ssls_name_the_field() {
    let etcd = Etcd::start();
    let admin = admin(&etcd, A);
    let (cert, key) = self_signed(&["a.test"]);
    let (_, other_key) = self_signed(&["a.test"]);
    let put = |body: Value| admin.call("PUT", "/ssls/1", Some(body));

    assert_error(
        put(json!({"cert": cert, "key": other_key, "snis": ["a.test"]})).await,
        400,
        "invalid field \"key\": does not match the certificate",
    );
    assert_error(
        put(json!({"cert": cert, "key": key, "snis": ["a.test", "bad name"]})).await,
        400,
        "invalid field \"snis[1]\"",
    );
    assert_error(
        put(json!({"cert": cert, "key": key, "snis": ["*.*.test"]})).await,
        400,
        "invalid field \"snis[0]\"",
    );
    assert_error(
        put(json!({"cert": cert, "key": key})).await,
        400,
        "invalid field \"snis\"",
    );
    assert_error(
        put(json!({"cert": "garbage", "key": key, "sni": "a.test"})).await,
        400,
        "invalid field \"cert\"",
    );
    assert_error(
        put(json!({"cert": cert, "key": "garbage", "sni": "a.test"})).await,
        400,
        "invalid field \"key\": is not a PEM private key",
    );
    assert_error(
        put(json!({"cert": cert, "key": key, "sni": "a.test", "certs": [cert], "keys": [other_key]}))
            .await,
        400,
        "invalid field \"keys[0]\"",
    );
    assert_error(
        put(json!({"cert": cert, "key": key, "sni": "a.test", "type": "client"})).await,
        400,
        "invalid field \"type\"",
    );
    // Nothing was written.
    assert_eq!(admin.ok("GET", "/ssls", None).await["total"], 0);
}

#[tokio::test]
async fn key_rotation() {
    let etcd = Etcd::start();
    let (cert, key) = self_signed(&["a.test"]);
    let body = json!({"cert": cert, "key": key, "snis": ["a.test"]});
    {
        let old = admin(&etcd, A);
        old.ok("PUT", "/ssls/1", Some(body.clone())).await;
        old.ok("PUT", "/ssls/2", Some(body.clone())).await;
    }
    assert!(keyring(&[B])
        .decrypt(stored(&etcd, "1")["key"].as_str().unwrap())
        .is_err());

    // Step 1: the new key first, the old one still there to decrypt.
    let rotating = admin(&etcd, &format!("{B},{A}"));
    let got = rotating
        .ok(
            "PATCH",
            "/ssls/1",
            Some(json!({"labels": {"rotated": "yes"}})),
        )
        .await;
    assert_no_secret(&got["value"]);
    let resealed = stored(&etcd, "1")["key"].as_str().unwrap().to_string();
    assert_eq!(keyring(&[B]).decrypt(&resealed).unwrap(), key);
    assert!(keyring(&[A]).decrypt(&resealed).is_err(), "sealed with B");
    drop(rotating);

    // Step 2 done too early: ssl 2 was not re-saved, and without A it cannot be opened.
    let new = admin(&etcd, B);
    assert_error(
        new.call("PATCH", "/ssls/2", Some(json!({"labels": {"x": "y"}})))
            .await,
        400,
        "cannot be decrypted as a stored one: none of the 1 configured",
    );
    // ssl 1 is fine under B alone, and GET never needs a key.
    new.ok("PATCH", "/ssls/1", Some(json!({"labels": {"x": "y"}})))
        .await;
    assert_eq!(new.ok("GET", "/ssls", None).await["total"], 2);
    // A PUT with the plaintext key repairs ssl 2.
    new.ok("PUT", "/ssls/2", Some(body)).await;
    let sealed = stored(&etcd, "2")["key"].as_str().unwrap().to_string();
    assert_eq!(keyring(&[B]).decrypt(&sealed).unwrap(), key);
}

#[tokio::test]
async fn without_keyring_keys_are_plaintext_and_it_warns() {
    let etcd = Etcd::start();
    let admin = admin(&etcd, "");
    let (cert, key) = self_signed(&["a.test"]);
    let body = admin
        .ok(
            "PUT",
            "/ssls/1",
            Some(json!({"cert": cert, "key": key, "snis": ["a.test"]})),
        )
        .await;
    assert_no_secret(&body["value"]);
    assert_no_secret(&admin.ok("GET", "/ssls/1", None).await["value"]);
    assert_eq!(stored(&etcd, "1")["key"], json!(key));
    assert!(
        admin.proc.log().contains("stored in etcd in plaintext"),
        "{}",
        admin.proc.log()
    );

    // A keyring added later opens the plaintext value and encrypts it on the next write.
    drop(admin);
    let keyed = self::admin(&etcd, A);
    keyed
        .ok("PATCH", "/ssls/1", Some(json!({"labels": {"k": "v"}})))
        .await;
    let sealed = stored(&etcd, "1")["key"].as_str().unwrap().to_string();
    assert!(!sealed.contains("BEGIN"));
    assert_eq!(keyring(&[A]).decrypt(&sealed).unwrap(), key);
}

/// An SSL that APISIX stored with its `data_encryption` keyring (AES-128-CBC) under
/// `/apisix` is read, patched, and re-encrypted in our format.
#[tokio::test]
async fn reads_and_rewrites_apisix_encrypted_keys() {
    let etcd = Etcd::start();
    let fixture = include_str!("../../model/fixtures/stored/ssl-apisix-encrypted.json");
    let original: Value = serde_json::from_str(fixture).unwrap();
    etcd.put_many(&[("/apisix/ssls/1".to_string(), original.to_string())]);
    let admin = AdminApi::start_with_env(&etcd.url, "/apisix", KEY, &[("DATA_ENCRYPTION_KEYS", A)]);
    let got = admin.ok("GET", "/ssls/1", None).await;
    assert_no_secret(&got["value"]);
    assert_eq!(got["value"]["snis"], original["snis"]);

    admin
        .ok(
            "PATCH",
            "/ssls/1",
            Some(json!({"labels": {"from": "apisix"}})),
        )
        .await;
    let raw = etcd.ctl(&["get", "/apisix/ssls/1", "--print-value-only"]);
    let stored: Value = serde_json::from_str(raw.trim()).unwrap();
    let sealed = stored["key"].as_str().unwrap();
    assert_ne!(sealed, original["key"].as_str().unwrap(), "re-encrypted");
    let ring = keyring(&[A]);
    let plain = ring.decrypt(sealed).unwrap();
    assert!(plain.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(
        plain,
        ring.decrypt(original["key"].as_str().unwrap()).unwrap()
    );
    assert_eq!(stored["validity_end"], original["validity_end"]);
    assert_eq!(stored["labels"]["from"], "apisix");
}
