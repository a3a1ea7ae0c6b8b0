//! The `key-auth` plugin (APISIX): on a route, where the API key is read from (`header`,
//! else `query`); on a consumer, the consumer's `key`. A request without a known key is
//! answered 401; one with a key becomes that consumer's.
use super::Scope;
use crate::codec::from_value;
use crate::ValidationError;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

pub const NAME: &str = "key-auth";

#[derive(Debug, Clone)]
pub enum KeyAuth {
    /// On a route or service: where to look for the key.
    Check {
        header: http::HeaderName,
        query: String,
        /// Remove the key from the request before it goes upstream.
        hide_credentials: bool,
    },
    /// On a consumer: its key.
    Credential { key: String },
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    header: Option<String>,
    query: Option<String>,
    #[serde(default)]
    hide_credentials: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredential {
    key: String,
}

impl KeyAuth {
    pub fn parse(value: &Value, scope: Scope) -> Result<KeyAuth, ValidationError> {
        let within = format!("plugins.{NAME}");
        if scope == Scope::Consumer {
            let raw: RawCredential = from_value(value).map_err(|e| e.within(&within))?;
            if raw.key.is_empty() || raw.key.len() > crate::keyring::sealed_len(4096) {
                return Err(ValidationError::new(
                    format!("{within}.key"),
                    "must be 1 to 4096 characters long",
                ));
            }
            return Ok(KeyAuth::Credential { key: raw.key });
        }
        let raw: RawCheck = from_value(value).map_err(|e| e.within(&within))?;
        let header = raw.header.as_deref().unwrap_or("apikey");
        let header = http::HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
            ValidationError::new(format!("{within}.header"), "must be a valid header name")
        })?;
        let query = raw.query.unwrap_or_else(|| "apikey".into());
        if query.is_empty() {
            return Err(ValidationError::new(
                format!("{within}.query"),
                "must not be empty",
            ));
        }
        Ok(KeyAuth::Check {
            header,
            query,
            hide_credentials: raw.hide_credentials,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn route_and_consumer_configs() {
        let KeyAuth::Check {
            header,
            query,
            hide_credentials,
        } = KeyAuth::parse(&json!({}), Scope::Route).unwrap()
        else {
            panic!("a check on a route")
        };
        assert_eq!(
            (header.as_str(), query.as_str(), hide_credentials),
            ("apikey", "apikey", false)
        );
        assert!(matches!(
            KeyAuth::parse(&json!({"key": "auth-one"}), Scope::Consumer).unwrap(),
            KeyAuth::Credential { key } if key == "auth-one"
        ));
        for (bad, scope, field) in [
            (json!({}), Scope::Consumer, "plugins.key-auth.key"),
            (json!({"key": ""}), Scope::Consumer, "plugins.key-auth.key"),
            (json!({"key": "k"}), Scope::Route, "plugins.key-auth.key"),
            (
                json!({"header": "a b"}),
                Scope::Route,
                "plugins.key-auth.header",
            ),
        ] {
            assert_eq!(
                KeyAuth::parse(&bad, scope).unwrap_err().field,
                field,
                "{bad}"
            );
        }
    }
}
