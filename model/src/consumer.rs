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
    pub create_time: Option<u64>,
    pub update_time: Option<u64>,
}

/// Credentials whose secret is stored encrypted: (plugin, field).
pub const SECRET_FIELDS: &[(&str, &str)] = &[(plugins::key_auth::NAME, "key")];

impl Consumer {
    /// The consumer's `key-auth` key, if it has one.
    pub fn api_key(&self) -> Option<&str> {
        self.parsed_plugins.0.iter().find_map(|p| match &p.config {
            Config::KeyAuth(plugins::key_auth::KeyAuth::Credential { key }) => Some(key.as_str()),
            _ => None,
        })
    }

    /// Opens the secrets of its credentials (encrypted at rest by the admin-api).
    pub fn open_secrets(&mut self, keyring: &Keyring) {
        for p in &mut self.parsed_plugins.0 {
            if let Config::KeyAuth(plugins::key_auth::KeyAuth::Credential { key }) = &mut p.config {
                *key = keyring.open_secret(key);
            }
        }
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
            (r#"{"username":"j","group_id":"g"}"#, "group_id"),
        ] {
            let e = decode::<Consumer>(bad.as_bytes()).unwrap_err();
            assert_eq!(e.field, field, "{bad}: {e}");
        }
    }
}
