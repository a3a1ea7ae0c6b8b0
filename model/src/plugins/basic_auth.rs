//! The `basic-auth` plugin (APISIX): on a route, whether the `Authorization` header is
//! removed before the upstream sees it; on a consumer, its `username` and `password`.
use super::Scope;
use crate::codec::from_value;
use crate::ValidationError;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

pub const NAME: &str = "basic-auth";

#[derive(Debug, Clone)]
pub enum BasicAuth {
    /// On a route or service.
    Check { hide_credentials: bool },
    /// On a consumer: its credential (`password` is encrypted at rest by the admin-api).
    Credential { username: String, password: String },
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    #[serde(default)]
    hide_credentials: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredential {
    username: String,
    password: String,
}

impl BasicAuth {
    pub fn parse(value: &Value, scope: Scope) -> Result<BasicAuth, ValidationError> {
        let within = format!("plugins.{NAME}");
        if scope != Scope::Consumer {
            let raw: RawCheck = from_value(value).map_err(|e| e.within(&within))?;
            return Ok(BasicAuth::Check {
                hide_credentials: raw.hide_credentials,
            });
        }
        let raw: RawCredential = from_value(value).map_err(|e| e.within(&within))?;
        // A ':' in the user name would make the header ambiguous (RFC 7617).
        if raw.username.is_empty() || raw.username.len() > 256 || raw.username.contains(':') {
            return Err(ValidationError::new(
                format!("{within}.username"),
                "must be 1 to 256 characters long, without ':'",
            ));
        }
        if raw.password.is_empty() || raw.password.len() > crate::keyring::sealed_len(4096) {
            return Err(ValidationError::new(
                format!("{within}.password"),
                "must be 1 to 4096 characters long",
            ));
        }
        Ok(BasicAuth::Credential {
            username: raw.username,
            password: raw.password,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn route_and_consumer_configs() {
        assert!(matches!(
            BasicAuth::parse(&json!({}), Scope::Route).unwrap(),
            BasicAuth::Check {
                hide_credentials: false
            }
        ));
        assert!(matches!(
            BasicAuth::parse(&json!({"username": "foo", "password": "bar"}), Scope::Consumer).unwrap(),
            BasicAuth::Credential { username, password } if username == "foo" && password == "bar"
        ));
        for (bad, scope, field) in [
            (
                json!({"username": "u"}),
                Scope::Consumer,
                "plugins.basic-auth.password",
            ),
            (
                json!({"username": "a:b", "password": "p"}),
                Scope::Consumer,
                "plugins.basic-auth.username",
            ),
            (
                json!({"username": "", "password": "p"}),
                Scope::Consumer,
                "plugins.basic-auth.username",
            ),
            (
                json!({"username": "u"}),
                Scope::Route,
                "plugins.basic-auth.username",
            ),
            (
                json!({"hide_credentials": "yes"}),
                Scope::Route,
                "plugins.basic-auth.hide_credentials",
            ),
        ] {
            assert_eq!(
                BasicAuth::parse(&bad, scope).unwrap_err().field,
                field,
                "{bad}"
            );
        }
    }
}
