//! Credentials (APISIX 3.x): a consumer's authentication plugins kept apart from it, at
//! `{prefix}/consumers/{username}/credentials/{id}`, so that one consumer can hold several
//! keys and each can be rotated alone. Only credential-holding plugins are allowed.
use crate::codec::{check_meta, from_value};
use crate::consumer::is_credential;
use crate::key::{kind_prefix, root_prefix};
use crate::plugins::{self, Plugins, Scope};
use crate::{Id, Kind, ValidationError};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub id: Option<Id>,
    pub plugins: Map<String, Value>,
    #[serde(skip)]
    pub parsed_plugins: Plugins,
    pub name: Option<String>,
    pub desc: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub create_time: Option<u64>,
    pub update_time: Option<u64>,
}

impl Credential {
    pub fn decode_value(value: &Value) -> Result<Credential, ValidationError> {
        if !value.is_object() {
            return Err(ValidationError::new("", "the body must be a JSON object"));
        }
        let mut c: Credential = from_value(value)?;
        check_meta(c.name.as_deref(), c.desc.as_deref(), c.labels.as_ref())?;
        // One plugin per credential, as APISIX (`maxProperties: 1`): a credential is one key.
        if c.plugins.len() != 1 {
            return Err(ValidationError::new(
                "plugins",
                "must hold exactly one authentication plugin (key-auth, basic-auth, jwt-auth, \
                 hmac-auth)",
            ));
        }
        c.parsed_plugins = plugins::parse(Some(&c.plugins), Scope::Consumer)?;
        if let Some(p) = c.plugins.keys().find(|name| {
            !c.parsed_plugins
                .get(name)
                .is_none_or(|p| is_credential(&p.config))
        }) {
            return Err(ValidationError::new(
                format!("plugins.{p}"),
                "only authentication plugins can be configured in a credential",
            ));
        }
        Ok(c)
    }

    pub fn decode(bytes: &[u8]) -> Result<Credential, ValidationError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| ValidationError::new("", format!("invalid JSON: {e}")))?;
        Credential::decode_value(&value)
    }
}

/// `{prefix}/consumers/{username}/credentials/`: the range of one consumer's credentials.
pub fn credentials_prefix(prefix: &str, username: &Id) -> String {
    format!(
        "{}{username}/credentials/",
        kind_prefix(prefix, Kind::Consumers)
    )
}

/// `{prefix}/consumers/{username}/credentials/{id}`.
pub fn credential_key(prefix: &str, username: &Id, id: &Id) -> String {
    format!("{}{id}", credentials_prefix(prefix, username))
}

/// The username and id of a credential's key; `None` for any other key.
pub fn parse_credential_key(prefix: &str, key: &str) -> Option<(Id, Id)> {
    let rest = key
        .strip_prefix(&root_prefix(prefix))?
        .strip_prefix("consumers/")?;
    let (user, rest) = rest.split_once('/')?;
    let id = rest.strip_prefix("credentials/")?;
    Some((Id::parse(user).ok()?, Id::parse(id).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credentials_hold_authentication_plugins_only() {
        let c = Credential::decode_value(&json!({"plugins": {"key-auth": {"key": "k"}}})).unwrap();
        assert_eq!(c.parsed_plugins.0.len(), 1);
        for (bad, field) in [
            (json!({"plugins": {}}), "plugins"),
            (json!({}), "plugins"),
            (
                json!({"plugins": {"key-auth": {"key": "k"}, "basic-auth": {"username": "u", "password": "p"}}}),
                "plugins",
            ),
            (
                json!({"plugins": {"proxy-rewrite": {"uri": "/a"}}}),
                "plugins.proxy-rewrite",
            ),
            (json!({"plugins": {"key-auth": {}}}), "plugins.key-auth.key"),
            (
                json!({"plugins": {"basic-auth": {"username": "u", "password": "p"}}, "x": 1}),
                "x",
            ),
        ] {
            assert_eq!(
                Credential::decode_value(&bad).unwrap_err().field,
                field,
                "{bad}"
            );
        }
    }

    #[test]
    fn keys() {
        let (u, c) = (Id::parse("jack").unwrap(), Id::parse("cred-1").unwrap());
        let key = credential_key("/apisix", &u, &c);
        assert_eq!(key, "/apisix/consumers/jack/credentials/cred-1");
        assert_eq!(parse_credential_key("/apisix", &key), Some((u, c)));
        for other in [
            "/apisix/consumers/jack",
            "/apisix/consumers/jack/credentials/",
            "/apisix/consumers/jack/other/c",
            "/apisix/routes/jack/credentials/c",
            "/other/consumers/jack/credentials/c",
        ] {
            assert_eq!(parse_credential_key("/apisix", other), None, "{other}");
        }
    }
}
