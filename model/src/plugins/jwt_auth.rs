//! The `jwt-auth` plugin (APISIX): on a route, where the token is read from; on a consumer,
//! its `key` (the token's `key` claim names it) and how its tokens are verified.
use super::Scope;
use crate::codec::from_value;
use crate::ValidationError;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

pub const NAME: &str = "jwt-auth";

#[derive(Debug, Clone)]
pub enum JwtAuth {
    /// On a route or service.
    Check(Check),
    /// On a consumer.
    Credential(Credential),
}

#[derive(Debug, Clone)]
pub struct Check {
    /// The header holding the token (an optional `Bearer ` prefix is dropped).
    pub header: http::HeaderName,
    /// Else this query argument, else this cookie.
    pub query: String,
    pub cookie: String,
    pub hide_credentials: bool,
    /// The claim that names the consumer's `key`.
    pub key_claim_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum Algorithm {
    HS256,
    HS512,
    RS256,
    ES256,
}

impl Algorithm {
    pub fn is_hmac(self) -> bool {
        matches!(self, Algorithm::HS256 | Algorithm::HS512)
    }
}

#[derive(Debug, Clone)]
pub struct Credential {
    pub key: String,
    pub algorithm: Algorithm,
    /// HS256/HS512: the shared secret (encrypted at rest by the admin-api).
    pub secret: Option<String>,
    /// `secret` is base64: the key is its decoded bytes.
    pub base64_secret: bool,
    /// RS256/ES256: the PEM public key that verifies the signature.
    pub public_key: Option<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub lifetime_grace_period: u64,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    header: Option<String>,
    query: Option<String>,
    cookie: Option<String>,
    #[serde(default)]
    hide_credentials: bool,
    key_claim_name: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredential {
    key: String,
    secret: Option<String>,
    algorithm: Option<Algorithm>,
    #[serde(default)]
    base64_secret: bool,
    public_key: Option<String>,
    /// APISIX's lifetime of the tokens its (removed) sign endpoint issued: accepted, unused.
    exp: Option<u64>,
    #[serde(default)]
    lifetime_grace_period: u64,
}

impl JwtAuth {
    pub fn parse(value: &Value, scope: Scope) -> Result<JwtAuth, ValidationError> {
        let within = format!("plugins.{NAME}");
        let at = |f: &str| format!("{within}.{f}");
        if scope != Scope::Consumer {
            let raw: RawCheck = from_value(value).map_err(|e| e.within(&within))?;
            let header = raw.header.as_deref().unwrap_or("authorization");
            let header = http::HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| ValidationError::new(at("header"), "must be a valid header name"))?;
            let nonempty = |field: &str, v: Option<String>, default: &str| {
                let v = v.unwrap_or_else(|| default.to_string());
                match v.is_empty() {
                    true => Err(ValidationError::new(at(field), "must not be empty")),
                    false => Ok(v),
                }
            };
            return Ok(JwtAuth::Check(Check {
                header,
                query: nonempty("query", raw.query, "jwt")?,
                cookie: nonempty("cookie", raw.cookie, "jwt")?,
                hide_credentials: raw.hide_credentials,
                key_claim_name: nonempty("key_claim_name", raw.key_claim_name, "key")?,
            }));
        }
        let raw: RawCredential = from_value(value).map_err(|e| e.within(&within))?;
        if raw.key.is_empty() || raw.key.len() > 256 {
            return Err(ValidationError::new(
                at("key"),
                "must be 1 to 256 characters long",
            ));
        }
        if raw.exp == Some(0) {
            return Err(ValidationError::new(at("exp"), "must be at least 1"));
        }
        let algorithm = raw.algorithm.unwrap_or(Algorithm::HS256);
        let cred = Credential {
            key: raw.key,
            algorithm,
            secret: raw.secret,
            base64_secret: raw.base64_secret,
            public_key: raw.public_key,
            lifetime_grace_period: raw.lifetime_grace_period,
        };
        cred.decoding_key()
            .map_err(|(field, msg)| ValidationError::new(at(field), msg))?;
        Ok(JwtAuth::Credential(cred))
    }
}

impl Credential {
    /// The key that verifies this consumer's tokens; the field at fault when it cannot be
    /// built. `secret` must already be opened (it is stored encrypted).
    pub fn decoding_key(&self) -> Result<jsonwebtoken::DecodingKey, (&'static str, String)> {
        use base64::Engine;
        use jsonwebtoken::DecodingKey;
        if self.algorithm.is_hmac() {
            let secret = self.secret.as_deref().filter(|s| !s.is_empty()).ok_or((
                "secret",
                format!("is required with algorithm {:?}", self.algorithm),
            ))?;
            if !self.base64_secret {
                return Ok(DecodingKey::from_secret(secret.as_bytes()));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(secret)
                .map_err(|_| ("secret", "must be base64 when base64_secret is true".into()))?;
            return Ok(DecodingKey::from_secret(&bytes));
        }
        let pem = self.public_key.as_deref().ok_or((
            "public_key",
            format!("is required with algorithm {:?}", self.algorithm),
        ))?;
        let key = match self.algorithm {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(pem.as_bytes()),
            _ => DecodingKey::from_ec_pem(pem.as_bytes()),
        };
        key.map_err(|e| {
            (
                "public_key",
                format!("is not a PEM public key for {:?}: {e}", self.algorithm),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn route_and_consumer_configs() {
        let JwtAuth::Check(c) = JwtAuth::parse(&json!({}), Scope::Route).unwrap() else {
            panic!("a check on a route")
        };
        assert_eq!(
            (
                c.header.as_str(),
                c.query.as_str(),
                c.cookie.as_str(),
                c.key_claim_name.as_str()
            ),
            ("authorization", "jwt", "jwt", "key")
        );
        let JwtAuth::Credential(cred) = JwtAuth::parse(
            &json!({"key": "user-key", "secret": "my-secret-key"}),
            Scope::Consumer,
        )
        .unwrap() else {
            panic!("a credential on a consumer")
        };
        assert_eq!(
            (cred.algorithm, cred.key.as_str()),
            (Algorithm::HS256, "user-key")
        );
        for (bad, scope, field) in [
            (
                json!({"secret": "s"}),
                Scope::Consumer,
                "plugins.jwt-auth.key",
            ),
            (
                json!({"key": "k"}),
                Scope::Consumer,
                "plugins.jwt-auth.secret",
            ),
            (
                json!({"key": "k", "secret": "%%", "base64_secret": true}),
                Scope::Consumer,
                "plugins.jwt-auth.secret",
            ),
            (
                json!({"key": "k", "algorithm": "RS256"}),
                Scope::Consumer,
                "plugins.jwt-auth.public_key",
            ),
            (
                json!({"key": "k", "algorithm": "RS256", "public_key": "not pem"}),
                Scope::Consumer,
                "plugins.jwt-auth.public_key",
            ),
            (
                json!({"key": "k", "secret": "s", "algorithm": "none"}),
                Scope::Consumer,
                "plugins.jwt-auth.algorithm",
            ),
            (json!({"key": "k"}), Scope::Route, "plugins.jwt-auth.key"),
            (
                json!({"header": ""}),
                Scope::Route,
                "plugins.jwt-auth.header",
            ),
        ] {
            assert_eq!(
                JwtAuth::parse(&bad, scope).unwrap_err().field,
                field,
                "{bad}"
            );
        }
    }
}
