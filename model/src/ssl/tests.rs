use super::*;
use crate::decode;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{json, Value};

/// A self-signed ECDSA certificate for `names`, valid 2024-01-01 to 2034-01-01.
fn self_signed(names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let cert = dated(names).self_signed(&key).expect("cert");
    (cert.pem(), key.serialize_pem())
}

fn dated(names: &[&str]) -> CertificateParams {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    params.not_before = date_time_ymd(2024, 1, 1);
    params.not_after = date_time_ymd(2034, 1, 1);
    params
}

/// A leaf signed by a fresh CA: (leaf + CA chain, leaf key).
fn chained(names: &[&str]) -> (String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let leaf = dated(names).signed_by(&key, &ca).expect("leaf");
    (
        format!("{}{}", leaf.pem(), ca.as_ref().pem()),
        key.serialize_pem(),
    )
}

fn decoded(v: &Value) -> Result<Ssl, ValidationError> {
    decode::<Ssl>(v.to_string().as_bytes())
}

/// Decoding then the PEM checks, as the admin-api runs them.
fn full_check(v: &Value) -> Result<Validity, ValidationError> {
    decoded(v)?.check_pem()
}

#[track_caller]
fn assert_err(got: Result<impl fmt::Debug, ValidationError>, field: &str, needle: &str) {
    match got {
        Ok(v) => panic!("should fail on {field}, got {v:?}"),
        Err(e) => {
            assert_eq!(e.field, field, "{e}");
            assert!(e.to_string().contains(needle), "{e} lacks {needle:?}");
        }
    }
}

#[test]
fn valid_and_validity_dates() {
    let (cert, key) = self_signed(&["example.com"]);
    let validity =
        full_check(&json!({"cert": cert, "key": key, "snis": ["example.com"]})).expect("valid");
    assert_eq!(
        validity,
        Validity {
            not_before: 1_704_067_200,
            not_after: 2_019_686_400
        }
    );
    // A chain (leaf then CA) is fine; the dates are the leaf's.
    let (chain, key) = chained(&["a.test"]);
    let v = json!({"cert": chain, "key": key, "sni": "a.test", "status": 0, "type": "server",
        "labels": {"team": "x"}, "id": "1", "create_time": 1, "update_time": 2,
        "validity_start": 5, "validity_end": 6});
    assert_eq!(full_check(&v).expect("valid").not_before, 1_704_067_200);
    let ssl = decoded(&v).expect("valid");
    assert!(!ssl.enabled());
    assert_eq!(ssl.snis, ["a.test"]);
}

#[test]
fn snis() {
    let (cert, key) = self_signed(&["x.test"]);
    let with = |snis: Value| json!({"cert": cert, "key": key, "snis": snis});
    let ssl = decoded(&with(json!(["*.Example.COM", "a-b.c1.test", "localhost"]))).expect("ok");
    assert_eq!(ssl.snis, ["*.example.com", "a-b.c1.test", "localhost"]);
    let one = json!({"cert": cert, "key": key, "sni": "WWW.test"});
    assert_eq!(decoded(&one).expect("ok").snis, ["www.test"]);

    for (snis, field, needle) in [
        (json!([]), "snis", "at least one server name"),
        (
            json!(["ok.test", "bad_name.test"]),
            "snis[1]",
            "\"bad_name.test\"",
        ),
        (
            json!(["*.*.test"]),
            "snis[0]",
            "wildcard must be the whole first label",
        ),
        (json!(["a.*.test"]), "snis[0]", "wildcard"),
        (
            json!(["*"]),
            "snis[0]",
            "wildcard must be the whole first label",
        ),
        (json!(["-a.test"]), "snis[0]", "not starting or ending"),
        (json!(["a..test"]), "snis[0]", "label \"\""),
        (
            json!([format!("{}.test", "a".repeat(64))]),
            "snis[0]",
            "1 to 63",
        ),
        (json!("a.test"), "snis", "invalid type"),
    ] {
        assert_err(decoded(&with(snis)), field, needle);
    }
    let none = json!({"cert": cert, "key": key});
    assert_err(decoded(&none), "snis", "at least one");
    let both = json!({"cert": cert, "key": key, "sni": "a.test", "snis": ["b.test"]});
    assert_err(decoded(&both), "snis", "either sni or snis");
}

#[test]
fn pem_errors_name_the_field() {
    let (cert, key) = self_signed(&["a.test"]);
    let (other_cert, other_key) = self_signed(&["a.test"]);
    let ssl = |cert: &str, key: &str| json!({"cert": cert, "key": key, "snis": ["a.test"]});

    assert_err(
        full_check(&ssl(&cert, &other_key)),
        "key",
        "does not match the certificate",
    );
    assert_err(
        full_check(&ssl("garbage", &key)),
        "cert",
        "no PEM CERTIFICATE block",
    );
    let broken = cert.replace("MI", "!!");
    assert_err(full_check(&ssl(&broken, &key)), "cert", "certificate");
    assert_err(
        full_check(&ssl(&cert, "garbage")),
        "key",
        "not a PEM private key",
    );
    // A certificate where the key should be, and the other way round.
    assert_err(
        full_check(&ssl(&cert, &cert)),
        "key",
        "not a PEM private key",
    );
    assert_err(
        full_check(&ssl(&key, &key)),
        "cert",
        "no PEM CERTIFICATE block",
    );
    assert_err(decoded(&ssl(&cert, " ")), "key", "must not be empty");

    // Extra pairs: each must match, errors name the index.
    let extra = |certs: Value, keys: Value| json!({"cert": cert, "key": key, "snis": ["a.test"], "certs": certs, "keys": keys});
    full_check(&extra(json!([other_cert]), json!([other_key]))).expect("valid pair");
    assert_err(
        full_check(&extra(
            json!([other_cert, other_cert]),
            json!([other_key, key]),
        )),
        "keys[1]",
        "does not match",
    );
    assert_err(
        full_check(&extra(json!([other_cert, "nope"]), json!([other_key, key]))),
        "certs[1]",
        "no PEM",
    );
    assert_err(
        decoded(&extra(json!([other_cert]), json!([]))),
        "keys",
        "1 certs, 0 keys",
    );
    let only_certs = json!({"cert": cert, "key": key, "snis": ["a.test"], "certs": [other_cert]});
    assert_err(decoded(&only_certs), "keys", "as many entries");
}

#[test]
fn other_fields() {
    let (cert, key) = self_signed(&["a.test"]);
    let with = |extra: Value| {
        let mut v = json!({"cert": cert, "key": key, "snis": ["a.test"]});
        for (k, x) in extra.as_object().expect("object") {
            v[k] = x.clone();
        }
        v
    };
    assert_err(
        decoded(&with(json!({"type": "client"}))),
        "type",
        "not supported yet",
    );
    assert_err(
        decoded(&with(json!({"type": "x"}))),
        "type",
        "expected \"server\"",
    );
    assert_err(
        decoded(&with(json!({"status": 2}))),
        "status",
        "0 (disabled) or 1",
    );
    assert_err(
        decoded(&with(json!({"client": {"ca": "x"}}))),
        "client",
        "mTLS",
    );
    assert_err(
        decoded(&with(json!({"ssl_protocols": ["TLSv1.3"]}))),
        "ssl_protocols",
        "not supported",
    );
    assert_err(
        decoded(&with(json!({"name": "x"}))),
        "name",
        "unknown field",
    );
    assert_err(
        decoded(&with(json!({"labels": {"k": ""}}))),
        "labels.k",
        "1 to 256",
    );
    let missing = json!({"key": key, "snis": ["a.test"]});
    assert_err(decoded(&missing), "cert", "is required");
}

#[test]
fn pairs_and_certified_key() {
    let (cert, key) = self_signed(&["a.test"]);
    let (c2, k2) = self_signed(&["a.test"]);
    let v = json!({"cert": cert, "key": key, "snis": ["a.test"], "certs": [c2], "keys": [k2]});
    let ssl = decoded(&v).expect("valid");
    let pairs: Vec<(&str, &str)> = ssl.pairs().collect();
    assert_eq!(
        pairs,
        [(cert.as_str(), key.as_str()), (c2.as_str(), k2.as_str())]
    );
    for (c, k) in ssl.pairs() {
        let ck = certified_key(c, k).expect("usable by rustls");
        assert_eq!(ck.cert.len(), 1);
    }
    let (chain, leaf_key) = chained(&["b.test"]);
    assert_eq!(
        certified_key(&chain, &leaf_key).expect("chain").cert.len(),
        2
    );
    let err = certified_key(&cert, &k2).expect_err("mismatch");
    assert!(err.contains("private key: does not match"), "{err}");
    let err = certified_key("x", &key).expect_err("garbage");
    assert!(err.starts_with("certificate: "), "{err}");
    // Debug shows no key material.
    assert!(!format!("{ssl:?}").contains("PRIVATE KEY"));
}

#[test]
fn encrypted_keys_decode_and_decrypt() {
    let keyring = Keyring::new(&["0123456789abcdef".to_string()]).expect("keyring");
    let (cert, key) = self_signed(&["a.test"]);
    let (c2, k2) = self_signed(&["a.test"]);
    let v = json!({"cert": cert, "key": keyring.encrypt(&key), "snis": ["a.test"],
        "certs": [c2], "keys": [keyring.encrypt(&k2)]});
    // Decoding needs no secret (the gateway decodes stored values as they are).
    let mut ssl = decoded(&v).expect("decodes encrypted");
    assert!(ssl.check_pem().is_err(), "encrypted keys are not PEM");
    ssl.decrypt_keys(&keyring).expect("decrypts");
    assert_eq!(ssl.key, key);
    assert_eq!(ssl.keys, Some(vec![k2]));
    ssl.check_pem().expect("valid once decrypted");

    let mut again = decoded(&v).expect("decodes");
    let wrong = Keyring::new(&["fedcba9876543210".to_string()]).expect("keyring");
    assert_err(again.decrypt_keys(&wrong), "key", "cannot be decrypted");
    again.key = key.clone();
    assert_err(again.decrypt_keys(&wrong), "keys[0]", "cannot be decrypted");
}

/// An SSL as APISIX stores it with `data_encryption` (key `0123456789abcdef`): made with
/// `openssl req -x509 -newkey ec …` and `openssl enc -aes-128-cbc -K … -iv … -base64 -A`;
/// its validity dates are openssl's reading of the certificate.
#[test]
fn apisix_stored_ssl() {
    let bytes = include_bytes!("../../fixtures/stored/ssl-apisix-encrypted.json");
    let raw: Value = serde_json::from_slice(bytes).expect("json");
    let mut ssl = decode::<Ssl>(bytes).expect("decodes");
    assert_eq!(ssl.snis, ["apisix.test", "*.apisix.test"]);
    assert!(ssl.check_pem().is_err(), "the key is encrypted");
    let keyring = Keyring::new(&["0123456789abcdef".to_string()]).expect("keyring");
    ssl.decrypt_keys(&keyring).expect("APISIX's format");
    assert!(ssl.key.starts_with("-----BEGIN PRIVATE KEY-----"));
    let validity = ssl.check_pem().expect("the key matches");
    assert_eq!(Some(validity.not_before), raw["validity_start"].as_u64());
    assert_eq!(Some(validity.not_after), raw["validity_end"].as_u64());
}
