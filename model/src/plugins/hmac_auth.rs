//! The `hmac-auth` plugin (APISIX 3.11+, draft-cavage HTTP signatures): on a route, which
//! algorithms, clock skew and signed headers it accepts; on a consumer (or credential),
//! its `key_id` and `secret_key`. A request carries
//! `Authorization: Signature keyId="…",algorithm="…",headers="@request-target date",signature="…"`.
use super::Scope;
use crate::codec::from_value;
use crate::ValidationError;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

pub const NAME: &str = "hmac-auth";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn parse(s: &str) -> Option<Algorithm> {
        match s {
            "hmac-sha1" => Some(Algorithm::Sha1),
            "hmac-sha256" => Some(Algorithm::Sha256),
            "hmac-sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum HmacAuth {
    /// On a route or service.
    Check {
        allowed_algorithms: Vec<Algorithm>,
        /// Seconds the request's `Date` may be off the gateway's clock.
        clock_skew: u64,
        /// Headers every signature must cover (lower case).
        signed_headers: Vec<String>,
        /// Remove `Authorization` before the upstream sees it.
        hide_credentials: bool,
    },
    /// On a consumer or credential (`secret_key` is encrypted at rest by the admin-api).
    Credential { key_id: String, secret_key: String },
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    /// Any of hmac-sha1, hmac-sha256, hmac-sha512; default all three.
    allowed_algorithms: Option<Vec<String>>,
    /// Seconds; default 300, at least 1.
    clock_skew: Option<u64>,
    /// Headers the signature must cover; default `["date"]` (APISIX 3.17), so that a
    /// captured signature cannot be replayed with a fresh `Date`.
    signed_headers: Option<Vec<String>>,
    /// Not served: the body would have to be read whole before proxying.
    validate_request_body: Option<bool>,
    #[serde(default)]
    hide_credentials: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredential {
    key_id: String,
    secret_key: String,
}

impl HmacAuth {
    pub fn parse(value: &Value, scope: Scope) -> Result<HmacAuth, ValidationError> {
        let within = format!("plugins.{NAME}");
        let at = |f: &str| format!("{within}.{f}");
        if scope == Scope::Consumer {
            let raw: RawCredential = from_value(value).map_err(|e| e.within(&within))?;
            // The secret is stored sealed: its limit admits the sealed form of 256 bytes.
            let secret_max = crate::keyring::sealed_len(256);
            for (field, v, max) in [
                ("key_id", &raw.key_id, 256),
                ("secret_key", &raw.secret_key, secret_max),
            ] {
                if v.is_empty() || v.len() > max {
                    return Err(ValidationError::new(
                        at(field),
                        format!("must be 1 to {max} characters long"),
                    ));
                }
            }
            return Ok(HmacAuth::Credential {
                key_id: raw.key_id,
                secret_key: raw.secret_key,
            });
        }
        let raw: RawCheck = from_value(value).map_err(|e| e.within(&within))?;
        let allowed_algorithms = match raw.allowed_algorithms {
            None => vec![Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512],
            Some(names) if names.is_empty() => {
                return Err(ValidationError::new(
                    at("allowed_algorithms"),
                    "must name at least one algorithm",
                ))
            }
            Some(names) => names
                .iter()
                .map(|n| {
                    Algorithm::parse(n).ok_or_else(|| {
                        ValidationError::new(
                            at("allowed_algorithms"),
                            format!("{n:?} is not one of hmac-sha1, hmac-sha256, hmac-sha512"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let clock_skew = raw.clock_skew.unwrap_or(300);
        if clock_skew == 0 {
            return Err(ValidationError::new(at("clock_skew"), "must be at least 1"));
        }
        if raw.validate_request_body == Some(true) {
            return Err(ValidationError::new(
                at("validate_request_body"),
                "is not supported yet (the body would have to be read whole before proxying)",
            ));
        }
        let mut signed_headers = Vec::new();
        let listed = raw.signed_headers.unwrap_or_else(|| vec!["date".into()]);
        for h in listed {
            if h.is_empty() || h.len() > 50 || h.contains(' ') {
                return Err(ValidationError::new(
                    at("signed_headers"),
                    format!("{h:?} must be 1 to 50 characters without spaces"),
                ));
            }
            signed_headers.push(h.to_ascii_lowercase());
        }
        Ok(HmacAuth::Check {
            allowed_algorithms,
            clock_skew,
            signed_headers,
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
        let HmacAuth::Check {
            allowed_algorithms,
            clock_skew,
            signed_headers,
            hide_credentials,
        } = HmacAuth::parse(&json!({}), Scope::Route).unwrap()
        else {
            panic!("a check")
        };
        assert_eq!(allowed_algorithms.len(), 3);
        assert_eq!((clock_skew, hide_credentials), (300, false));
        assert_eq!(signed_headers, ["date"]);
        let HmacAuth::Check { signed_headers, .. } = HmacAuth::parse(
            &json!({"signed_headers": ["Date", "x-custom-a"]}),
            Scope::Route,
        )
        .unwrap() else {
            panic!("a check")
        };
        assert_eq!(signed_headers, ["date", "x-custom-a"]);
        assert!(matches!(
            HmacAuth::parse(&json!({"key_id": "k", "secret_key": "s"}), Scope::Consumer).unwrap(),
            HmacAuth::Credential { key_id, secret_key } if key_id == "k" && secret_key == "s"
        ));
        for (bad, scope, field) in [
            (
                json!({"allowed_algorithms": ["md5"]}),
                Scope::Route,
                "allowed_algorithms",
            ),
            (
                json!({"allowed_algorithms": []}),
                Scope::Route,
                "allowed_algorithms",
            ),
            (json!({"clock_skew": 0}), Scope::Route, "clock_skew"),
            (
                json!({"validate_request_body": true}),
                Scope::Route,
                "validate_request_body",
            ),
            (
                json!({"signed_headers": ["a b"]}),
                Scope::Route,
                "signed_headers",
            ),
            (json!({"key_id": "k"}), Scope::Consumer, "secret_key"),
            (
                json!({"key_id": "", "secret_key": "s"}),
                Scope::Consumer,
                "key_id",
            ),
            (
                json!({"key_id": "k", "secret_key": "s", "x": 1}),
                Scope::Consumer,
                "x",
            ),
        ] {
            let e = HmacAuth::parse(&bad, scope).unwrap_err();
            assert_eq!(e.field, format!("plugins.hmac-auth.{field}"), "{bad}");
        }
    }
}
