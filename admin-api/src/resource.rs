//! What the admin-api knows about each kind, without IO: which kinds it serves, how a
//! submitted document becomes the stored value (string `id`, `create_time`, `update_time`,
//! encrypted secrets), model validation, and who may reference whom.
use model::codec::decode_value;
use model::{
    Consumer, ConsumerGroup, GlobalRule, Id, Keyring, Kind, PluginConfig, PluginMetadata, Resource,
    Route, Service, Ssl, Upstream, ValidationError,
};
use serde_json::{Map, Value};

/// The kinds this admin-api serves; the others of design.md answer "not supported yet".
pub const SUPPORTED: [Kind; 9] = [
    Kind::Routes,
    Kind::Services,
    Kind::Upstreams,
    Kind::Ssls,
    Kind::Consumers,
    Kind::PluginConfigs,
    Kind::GlobalRules,
    Kind::ConsumerGroups,
    Kind::PluginMetadata,
];

/// Kinds written only with PUT (APISIX: consumers are named by their `username`).
pub fn put_only(kind: Kind) -> bool {
    kind == Kind::Consumers
}

/// Kinds that may be put on a lease (`?ttl=`): not those other resources reference,
/// whose expiry the delete check would never see, nor consumers, whose credentials would
/// outlive them.
pub fn may_expire(kind: Kind) -> bool {
    referrers(kind).is_empty() && kind != Kind::Consumers
}

/// Kinds that cannot be created with POST (an id of their own is required), as APISIX.
pub fn no_post(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Consumers | Kind::ConsumerGroups | Kind::PluginMetadata
    )
}

/// For consumers: the `username` is the id; filled in from the URL when the body has none.
pub fn fill_identity(kind: Kind, doc: &mut Map<String, Value>, id: &Id) {
    if kind == Kind::Consumers && !doc.contains_key("username") {
        doc.insert("username".into(), Value::String(id.as_str().to_string()));
    }
}

pub fn supported(kind: Kind) -> bool {
    SUPPORTED.contains(&kind)
}

/// A resource another one points at, with the field that names it (for the error when
/// it is missing): `(Kind::Upstreams, "1", "upstream_id")`.
pub type Reference = (Kind, Id, String);

/// Validates `value` as a `kind` with the model, returning the resources it references.
pub fn validate(kind: Kind, value: &Value) -> Result<Vec<Reference>, ValidationError> {
    fn refs<T: Resource>(value: &Value) -> Result<Vec<Reference>, ValidationError> {
        let resource: T = decode_value(value)?;
        Ok(resource
            .references()
            .into_iter()
            .map(|(kind, id, field)| (kind, id.clone(), field))
            .collect())
    }
    match kind {
        Kind::Routes => refs::<Route>(value),
        Kind::Services => refs::<Service>(value),
        Kind::Upstreams => refs::<Upstream>(value),
        Kind::Ssls => refs::<Ssl>(value),
        Kind::Consumers => refs::<Consumer>(value),
        Kind::PluginConfigs => refs::<PluginConfig>(value),
        Kind::GlobalRules => refs::<GlobalRule>(value),
        Kind::ConsumerGroups => refs::<ConsumerGroup>(value),
        Kind::PluginMetadata => refs::<PluginMetadata>(value),
    }
}

/// For kinds with secrets (ssls), after [`validate`]: opens the private keys of `value`
/// (plaintext as submitted, or encrypted as stored and merged by a PATCH) with `keyring`,
/// checks them against the certificates, records the leaf's `validity_start` /
/// `validity_end`, and seals every key again with the keyring's first key (none: plaintext).
pub fn seal(kind: Kind, value: &mut Value, keyring: &Keyring) -> Result<(), ValidationError> {
    if kind == Kind::Consumers {
        seal_secrets(value, keyring);
        return Ok(());
    }
    if kind != Kind::Ssls {
        return Ok(());
    }
    let mut ssl: Ssl = decode_value(value)?;
    let Value::Object(doc) = value else {
        return Ok(());
    };
    ssl.decrypt_keys(keyring)?;
    let validity = ssl.check_pem()?;
    doc.insert("validity_start".into(), Value::from(validity.not_before));
    doc.insert("validity_end".into(), Value::from(validity.not_after));
    doc.insert("key".into(), Value::String(keyring.encrypt(&ssl.key)));
    if let Some(keys) = &ssl.keys {
        let sealed = keys.iter().map(|k| Value::String(keyring.encrypt(k)));
        doc.insert("keys".into(), Value::Array(sealed.collect()));
    }
    Ok(())
}

/// Encrypts the secret fields of a consumer's (or a credential's) authentication plugins
/// (`plugins.key-auth.key`). A value already sealed (kept by a merge) is opened first, so
/// it is never sealed twice.
pub fn seal_secrets(value: &mut Value, keyring: &Keyring) {
    for (plugin, field) in model::consumer::SECRET_FIELDS {
        if let Some(Value::String(secret)) = value
            .get_mut("plugins")
            .and_then(|p| p.get_mut(*plugin))
            .and_then(|p| p.get_mut(*field))
        {
            *secret = keyring.encrypt(&keyring.open_secret(secret));
        }
    }
}

/// What a response may show of a stored value: never a private key or a credential's
/// secret (encrypted or not).
pub fn redact(kind: Kind, value: &mut Value) {
    match (kind, value) {
        (Kind::Ssls, Value::Object(map)) => {
            map.remove("key");
            map.remove("keys");
        }
        (Kind::Consumers, value) => redact_secrets(value),
        _ => {}
    }
}

/// Removes the secret fields of a consumer's (or a credential's) authentication plugins.
pub fn redact_secrets(value: &mut Value) {
    for (plugin, field) in model::consumer::SECRET_FIELDS {
        if let Some(Value::Object(conf)) = value.get_mut("plugins").and_then(|p| p.get_mut(*plugin))
        {
            conf.remove(*field);
        }
    }
}

/// The field through which a resource references one of `kind`.
pub fn reference_field(kind: Kind) -> &'static str {
    match kind {
        Kind::Upstreams => "upstream_id",
        Kind::Services => "service_id",
        Kind::PluginConfigs => "plugin_config_id",
        Kind::Consumers => "consumer_id",
        Kind::Ssls => "ssl_id",
        Kind::Routes => "route_id",
        Kind::GlobalRules => "global_rule_id",
        Kind::ConsumerGroups => "group_id",
        Kind::PluginMetadata => "plugin_name",
    }
}

/// The kinds whose resources may reference one of `kind` (checked before a delete).
pub fn referrers(kind: Kind) -> &'static [Kind] {
    match kind {
        Kind::Upstreams => &[Kind::Routes, Kind::Services],
        Kind::Services => &[Kind::Routes],
        Kind::PluginConfigs => &[Kind::Routes],
        Kind::ConsumerGroups => &[Kind::Consumers],
        _ => &[],
    }
}

/// Whether a stored value of kind `user` references `kind`/`id`: as the model says (its
/// `references()`, `traffic-split` rules included) when the value validates; read raw
/// when it does not (or its kind is unknown), so that a stored value that no longer
/// validates still counts as a user.
pub fn references_to(user: Option<Kind>, value: &Value, kind: Kind, id: &Id) -> bool {
    if let Some(Ok(refs)) = user.map(|u| validate(u, value)) {
        return refs.iter().any(|(k, i, _)| *k == kind && i == id);
    }
    raw_references_to(value, kind, id)
}

fn raw_references_to(value: &Value, kind: Kind, id: &Id) -> bool {
    let is_id = |v: &Value| id_text(v).is_some_and(|v| v == id.as_str());
    if value.get(reference_field(kind)).is_some_and(is_id) {
        return true;
    }
    kind == Kind::Upstreams
        && value
            .pointer("/plugins/traffic-split/rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|rule| rule.get("weighted_upstreams")?.as_array())
            .flatten()
            .any(|w| w.get("upstream_id").is_some_and(is_id))
}

/// An id as APISIX accepts it: a string or a non-negative integer.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        _ => None,
    }
}

/// The `id` a body carries, if any, validated.
pub fn body_id(doc: &Map<String, Value>) -> Result<Option<Id>, ValidationError> {
    let Some(raw) = doc.get("id") else {
        return Ok(None);
    };
    let text = id_text(raw)
        .ok_or_else(|| ValidationError::new("id", "must be a string or a non-negative integer"))?;
    Id::parse(&text)
        .map(Some)
        .map_err(|e| ValidationError::new("id", e))
}

/// Refuses a body whose `id` differs from the one in the URL.
pub fn check_body_id(doc: &Map<String, Value>, id: &Id) -> Result<(), ValidationError> {
    match body_id(doc)? {
        Some(body) if body != *id => Err(ValidationError::new(
            "id",
            format!(
                "{:?} in the body does not match {:?} in the URL",
                body.as_str(),
                id.as_str()
            ),
        )),
        _ => Ok(()),
    }
}

/// Turns a submitted document into the value to store, as APISIX does: `id` as a string;
/// `create_time` as given, else the previous value's, else `now`; `update_time` as given
/// unless `reset_update_time` (PATCH without one), else `now`.
pub fn stamp(
    doc: &mut Map<String, Value>,
    id: &Id,
    previous: Option<&Value>,
    now: u64,
    reset_update_time: bool,
) {
    doc.insert("id".into(), Value::String(id.as_str().to_string()));
    if !doc.contains_key("create_time") {
        let created = previous
            .and_then(|p| p.get("create_time"))
            .filter(|t| t.is_u64())
            .cloned()
            .unwrap_or_else(|| Value::from(now));
        doc.insert("create_time".into(), created);
    }
    if reset_update_time || !doc.contains_key("update_time") {
        doc.insert("update_time".into(), Value::from(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id(s: &str) -> Id {
        Id::parse(s).expect("valid id")
    }

    fn check_stamp(doc: Value, previous: Option<Value>, reset: bool, expected: Value) {
        let Value::Object(mut map) = doc else {
            panic!("not an object")
        };
        stamp(&mut map, &id("7"), previous.as_ref(), 100, reset);
        assert_eq!(Value::Object(map), expected);
    }

    #[test]
    fn stamps() {
        check_stamp(
            json!({"uri": "/a"}),
            None,
            false,
            json!({"id": "7", "uri": "/a", "create_time": 100, "update_time": 100}),
        );
        // Replace: create_time survives, update_time moves.
        check_stamp(
            json!({"id": 7, "uri": "/b"}),
            Some(json!({"id": "7", "create_time": 5, "update_time": 6})),
            false,
            json!({"id": "7", "uri": "/b", "create_time": 5, "update_time": 100}),
        );
        // Given times are kept (imports); PATCH resets update_time.
        check_stamp(
            json!({"create_time": 1, "update_time": 2}),
            None,
            false,
            json!({"id": "7", "create_time": 1, "update_time": 2}),
        );
        check_stamp(
            json!({"create_time": 1, "update_time": 2}),
            None,
            true,
            json!({"id": "7", "create_time": 1, "update_time": 100}),
        );
    }

    #[test]
    fn body_ids() {
        let check = |doc: Value, expected: Result<(), &str>| {
            let Value::Object(map) = doc.clone() else {
                panic!("not an object")
            };
            let got = check_body_id(&map, &id("1")).map_err(|e| e.to_string());
            match expected {
                Ok(()) => assert_eq!(got, Ok(()), "{doc}"),
                Err(needle) => {
                    let err = got.expect_err("should fail");
                    assert!(err.contains(needle), "{doc}: {err}");
                }
            }
        };
        check(json!({}), Ok(()));
        check(json!({"id": "1"}), Ok(()));
        check(json!({"id": 1}), Ok(()));
        check(
            json!({"id": "2"}),
            Err("invalid field \"id\": \"2\" in the body does not match"),
        );
        check(
            json!({"id": -1}),
            Err("invalid field \"id\": must be a string"),
        );
        check(json!({"id": "a/b"}), Err("invalid field \"id\""));
    }

    fn cert(name: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("cert");
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn keyring(keys: &[&str]) -> Keyring {
        Keyring::new(&keys.iter().map(|k| k.to_string()).collect::<Vec<_>>()).expect("keys")
    }

    #[test]
    fn consumer_keys_are_sealed_once_and_redacted() {
        let ring = keyring(&["0123456789abcdef"]);
        let mut v = json!({"username": "jack", "plugins": {"key-auth": {"key": "auth-one"}}});
        seal(Kind::Consumers, &mut v, &ring).unwrap();
        let sealed = v["plugins"]["key-auth"]["key"]
            .as_str()
            .unwrap()
            .to_string();
        assert_ne!(sealed, "auth-one");
        assert_eq!(ring.open_secret(&sealed), "auth-one");
        // A merge keeps the sealed value; sealing again must not wrap it twice.
        seal(Kind::Consumers, &mut v, &ring).unwrap();
        assert_eq!(
            ring.open_secret(v["plugins"]["key-auth"]["key"].as_str().unwrap()),
            "auth-one"
        );
        // Without a keyring: plaintext at rest, still never answered.
        let mut plain = json!({"username": "jack", "plugins": {"key-auth": {"key": "auth-one"}}});
        seal(Kind::Consumers, &mut plain, &Keyring::default()).unwrap();
        assert_eq!(plain["plugins"]["key-auth"]["key"], "auth-one");
        redact(Kind::Consumers, &mut plain);
        assert_eq!(
            plain,
            json!({"username": "jack", "plugins": {"key-auth": {}}})
        );
    }

    #[test]
    fn ssl_keys_are_sealed_and_redacted() {
        const A: &str = "0123456789abcdef";
        const B: &str = "0123456789abcdef0123456789abcdef";
        let (c, k) = cert("a.test");
        let (c2, k2) = cert("a.test");
        let mut value =
            json!({"cert": c, "key": k, "snis": ["a.test"], "certs": [c2], "keys": [k2]});
        seal(Kind::Ssls, &mut value, &keyring(&[A])).expect("valid");
        assert!(value["validity_start"].is_u64() && value["validity_end"].is_u64());
        let stored = value["key"].as_str().expect("key").to_string();
        assert!(!stored.contains("BEGIN"), "{stored}");
        assert!(!value["keys"][0]
            .as_str()
            .expect("keys[0]")
            .contains("BEGIN"));
        assert_eq!(keyring(&[A]).decrypt(&stored).as_deref(), Ok(k.as_str()));

        // Sealing a stored (encrypted) value again, after a rotation, re-encrypts with the
        // new first key; without the old key it fails naming the field.
        let mut rotated = value.clone();
        seal(Kind::Ssls, &mut rotated, &keyring(&[B, A])).expect("rotation");
        let resealed = rotated["key"].as_str().expect("key");
        assert_eq!(keyring(&[B]).decrypt(resealed).as_deref(), Ok(k.as_str()));
        let err = seal(Kind::Ssls, &mut value.clone(), &keyring(&[B])).expect_err("no A");
        assert_eq!(err.field, "key", "{err}");

        // No keyring: plaintext.
        let mut plain = json!({"cert": c, "key": k, "sni": "a.test"});
        seal(Kind::Ssls, &mut plain, &keyring(&[])).expect("valid");
        assert_eq!(plain["key"], json!(k));

        redact(Kind::Ssls, &mut value);
        assert!(value.get("key").is_none() && value.get("keys").is_none());
        assert!(value.get("cert").is_some() && value.get("certs").is_some());
        let mut route = json!({"uri": "/", "key": "x"});
        redact(Kind::Routes, &mut route);
        assert_eq!(route["key"], "x");
        seal(Kind::Routes, &mut route, &keyring(&[A])).expect("untouched");
        assert_eq!(route["key"], "x");
    }

    #[test]
    fn references() {
        let upstream = id("1");
        assert!(references_to(
            None,
            &json!({"upstream_id": "1"}),
            Kind::Upstreams,
            &upstream
        ));
        assert!(references_to(
            None,
            &json!({"upstream_id": 1}),
            Kind::Upstreams,
            &upstream
        ));
        assert!(!references_to(
            None,
            &json!({"upstream_id": "10"}),
            Kind::Upstreams,
            &upstream
        ));
        assert!(!references_to(
            None,
            &json!({"service_id": "1"}),
            Kind::Upstreams,
            &upstream
        ));
        let refs = validate(
            Kind::Routes,
            &json!({"uri": "/", "upstream_id": 3, "service_id": "s"}),
        )
        .expect("valid route");
        assert_eq!(
            refs,
            vec![
                (Kind::Upstreams, id("3"), "upstream_id".to_string()),
                (Kind::Services, id("s"), "service_id".to_string())
            ]
        );
        let split = json!({"uri": "/", "upstream_id": "9", "plugins": {"traffic-split": {"rules": [
            {"weighted_upstreams": [{"weight": 1}]},
            {"weighted_upstreams": [{"upstream_id": 2}, {"upstream_id": "1", "weight": 3}]}
        ]}}});
        assert!(references_to(None, &split, Kind::Upstreams, &upstream));
        assert!(references_to(None, &split, Kind::Upstreams, &id("2")));
        assert!(!references_to(None, &split, Kind::Upstreams, &id("3")));
        assert!(!references_to(None, &split, Kind::Services, &upstream));
        // Through the model when the value validates: the same answers.
        for (i, want) in [(upstream.clone(), true), (id("2"), true), (id("3"), false)] {
            assert_eq!(
                references_to(Some(Kind::Routes), &split, Kind::Upstreams, &i),
                want
            );
        }
        let grouped = json!({"username": "jack", "group_id": "g"});
        assert!(references_to(
            Some(Kind::Consumers),
            &grouped,
            Kind::ConsumerGroups,
            &id("g")
        ));
        assert_eq!(
            validate(Kind::Routes, &split).expect("valid route")[2],
            (
                Kind::Upstreams,
                id("1"),
                "plugins.traffic-split.rules[1].weighted_upstreams[1].upstream_id".to_string()
            )
        );
    }
}
