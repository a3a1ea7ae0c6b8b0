//! Consumers: who a request comes from, once an authentication plugin has recognised its
//! credential (`plugins.key-auth.key`). The etcd key's id is the `username`.
use crate::codec::check_meta;
use crate::plugins::{self, Config, Plugins, Scope};
use crate::{Id, Keyring, Kind, Resource, ValidationError};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    /// Stored by our admin-api, the same as `username`; absent in APISIX's own data.
    pub id: Option<Id>,
    pub username: String,
    pub plugins: Option<Map<String, Value>>,
    /// `plugins`, parsed by [`Resource::parse_plugins`].
    #[serde(skip)]
    pub parsed_plugins: Plugins,
    pub desc: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    /// Its consumer group, whose plugins its own are merged over.
    pub group_id: Option<Id>,
    pub create_time: Option<u64>,
    pub update_time: Option<u64>,
}

/// Credentials whose secret is stored encrypted: (plugin, field).
pub const SECRET_FIELDS: &[(&str, &str)] = &[
    (plugins::key_auth::NAME, "key"),
    (plugins::basic_auth::NAME, "password"),
    (plugins::jwt_auth::NAME, "secret"),
    (plugins::hmac_auth::NAME, "secret_key"),
];

/// The fields that say who a credential belongs to: two consumers may not share a value
/// (plugin, field, whether it is a secret stored encrypted).
pub const IDENTITY_FIELDS: &[(&str, &str, bool)] = &[
    (plugins::key_auth::NAME, "key", true),
    (plugins::basic_auth::NAME, "username", false),
    (plugins::jwt_auth::NAME, "key", false),
    (plugins::hmac_auth::NAME, "key_id", false),
];

impl Consumer {
    /// The consumer's `key-auth` key, if it has one.
    pub fn api_key(&self) -> Option<&str> {
        api_key(&self.parsed_plugins)
    }

    /// The plugins merged over a route's once this consumer is authenticated: all but
    /// its credentials.
    pub fn route_plugins(&self) -> Plugins {
        Plugins(
            self.parsed_plugins
                .0
                .iter()
                .filter(|p| !is_credential(&p.config))
                .cloned()
                .collect(),
        )
    }
}

/// The `key-auth` key among a consumer's (or a credential's) plugins.
pub fn api_key(plugins: &Plugins) -> Option<&str> {
    plugins.0.iter().find_map(|p| match &p.config {
        Config::KeyAuth(plugins::key_auth::KeyAuth::Credential { key }) => Some(key.as_str()),
        _ => None,
    })
}

/// The `basic-auth` credential: (username, password).
pub fn basic_auth(plugins: &Plugins) -> Option<(&str, &str)> {
    plugins.0.iter().find_map(|p| match &p.config {
        Config::BasicAuth(plugins::basic_auth::BasicAuth::Credential { username, password }) => {
            Some((username.as_str(), password.as_str()))
        }
        _ => None,
    })
}

/// The `jwt-auth` credential.
pub fn jwt_auth(plugins: &Plugins) -> Option<&plugins::jwt_auth::Credential> {
    plugins.0.iter().find_map(|p| match &p.config {
        Config::JwtAuth(j) => match &**j {
            plugins::jwt_auth::JwtAuth::Credential(c) => Some(c),
            _ => None,
        },
        _ => None,
    })
}

/// The `hmac-auth` credential: (key_id, secret_key).
pub fn hmac_auth(plugins: &Plugins) -> Option<(&str, &str)> {
    plugins.0.iter().find_map(|p| match &p.config {
        Config::HmacAuth(h) => match &**h {
            plugins::hmac_auth::HmacAuth::Credential { key_id, secret_key } => {
                Some((key_id.as_str(), secret_key.as_str()))
            }
            _ => None,
        },
        _ => None,
    })
}

/// Opens the secrets of the credentials among `plugins` (encrypted at rest by the
/// admin-api).
pub fn open_secrets(plugins: &mut Plugins, keyring: &Keyring) {
    use plugins::{basic_auth::BasicAuth, jwt_auth::JwtAuth, key_auth::KeyAuth};
    for p in &mut plugins.0 {
        let secret = match &mut p.config {
            Config::HmacAuth(h) => match &mut **h {
                plugins::hmac_auth::HmacAuth::Credential { secret_key, .. } => secret_key,
                _ => continue,
            },
            Config::KeyAuth(KeyAuth::Credential { key }) => key,
            Config::BasicAuth(BasicAuth::Credential { password, .. }) => password,
            Config::JwtAuth(j) => match &mut **j {
                JwtAuth::Credential(c) => match &mut c.secret {
                    Some(s) => s,
                    None => continue,
                },
                _ => continue,
            },
            _ => continue,
        };
        *secret = keyring.open_secret(secret);
    }
}

/// Whether a plugin's configuration is a credential (a consumer's key, password…).
pub fn is_credential(c: &Config) -> bool {
    use plugins::{basic_auth::BasicAuth, jwt_auth::JwtAuth, key_auth::KeyAuth};
    match c {
        Config::KeyAuth(k) => matches!(k, KeyAuth::Credential { .. }),
        Config::BasicAuth(b) => matches!(b, BasicAuth::Credential { .. }),
        Config::JwtAuth(j) => matches!(**j, JwtAuth::Credential(_)),
        Config::HmacAuth(h) => matches!(**h, plugins::hmac_auth::HmacAuth::Credential { .. }),
        _ => false,
    }
}

/// APISIX's `username` pattern.
fn valid_username(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 100
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Resource for Consumer {
    const KIND: Kind = Kind::Consumers;

    fn id(&self) -> Option<&Id> {
        self.id.as_ref()
    }

    fn validate(&self) -> Result<(), ValidationError> {
        check_meta(None, self.desc.as_deref(), self.labels.as_ref())?;
        if !valid_username(&self.username) {
            return Err(ValidationError::new(
                "username",
                "must be 1 to 100 letters, digits, '_' or '-'",
            ));
        }
        if let Some(id) = &self.id {
            if id.as_str() != self.username {
                return Err(ValidationError::new(
                    "username",
                    "must equal the consumer's id",
                ));
            }
        }
        Ok(())
    }

    fn parse_plugins(&mut self) -> Result<(), ValidationError> {
        self.parsed_plugins = plugins::parse(self.plugins.as_ref(), Scope::Consumer)?;
        Ok(())
    }

    fn references(&self) -> Vec<(Kind, &Id, String)> {
        let group = self.group_id.iter();
        group
            .map(|g| (Kind::ConsumerGroups, g, "group_id".to_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode;

    #[test]
    fn consumers() {
        let c: Consumer =
            decode(br#"{"username":"jack","plugins":{"key-auth":{"key":"auth-one"}}}"#).unwrap();
        assert_eq!(c.api_key(), Some("auth-one"));
        let none: Consumer = decode(br#"{"username":"anon"}"#).unwrap();
        assert_eq!(none.api_key(), None);
        let grouped: Consumer = decode(br#"{"username":"g","group_id":"company_a"}"#).unwrap();
        let refs = grouped.references();
        assert_eq!(refs.len(), 1);
        assert_eq!(
            (refs[0].0, refs[0].1.as_str()),
            (Kind::ConsumerGroups, "company_a")
        );
        for (bad, field) in [
            (r#"{}"#, "username"),
            (r#"{"username":"a b"}"#, "username"),
            (r#"{"id":"x","username":"y"}"#, "username"),
            (
                r#"{"username":"j","plugins":{"key-auth":{}}}"#,
                "plugins.key-auth.key",
            ),
            (
                r#"{"username":"j","plugins":{"traffic-split":{}}}"#,
                "plugins.traffic-split",
            ),
            (r#"{"username":"j","group_id":"a b"}"#, "group_id"),
        ] {
            let e = decode::<Consumer>(bad.as_bytes()).unwrap_err();
            assert_eq!(e.field, field, "{bad}: {e}");
        }
    }

    /// Secrets are stored sealed, longer than written: the longest valid ones still
    /// decode once sealed (else the gateway would drop the whole consumer).
    #[test]
    fn sealed_secrets_of_the_longest_valid_length_decode() {
        let ring = crate::Keyring::new(&["0123456789abcdef".to_string()]).unwrap();
        for (plugin, field, n, extra) in [
            ("key-auth", "key", 4096, serde_json::json!({})),
            (
                "basic-auth",
                "password",
                4096,
                serde_json::json!({"username": "u"}),
            ),
            (
                "hmac-auth",
                "secret_key",
                256,
                serde_json::json!({"key_id": "k"}),
            ),
        ] {
            let mut conf = extra;
            conf[field] = ring.encrypt(&"s".repeat(n)).into();
            let doc = serde_json::json!({"username": "jack", "plugins": {plugin: conf}});
            let c = decode::<Consumer>(doc.to_string().as_bytes());
            assert!(c.is_ok(), "{plugin}: {:?}", c.err());
        }
    }
}
