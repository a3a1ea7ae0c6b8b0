//! The `request-id` plugin (APISIX): gives every request an id, sent to the upstream and
//! back to the client in one header; an id the client already sent is kept.
use crate::codec::from_value;
use crate::ValidationError;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

pub const NAME: &str = "request-id";

/// APISIX's default `range_id.char_set`.
pub const DEFAULT_CHAR_SET: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Algorithm {
    Uuid,
    /// 21 characters of `A-Za-z0-9_-`, as the nanoid library makes them.
    Nanoid,
    /// `length` characters drawn from `char_set`.
    RangeId {
        char_set: Vec<char>,
        length: usize,
    },
}

#[derive(Debug, Clone)]
pub struct RequestId {
    pub header_name: http::HeaderName,
    pub include_in_response: bool,
    pub algorithm: Algorithm,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    header_name: Option<String>,
    include_in_response: Option<bool>,
    algorithm: Option<String>,
    range_id: Option<RawRange>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRange {
    char_set: Option<String>,
    length: Option<u64>,
}

impl RequestId {
    pub fn parse(value: &Value) -> Result<RequestId, ValidationError> {
        let within = format!("plugins.{NAME}");
        let raw: Raw = from_value(value).map_err(|e| e.within(&within))?;
        let at = |f: &str| format!("{within}.{f}");
        let header_name = raw.header_name.as_deref().unwrap_or("X-Request-Id");
        let header_name = http::HeaderName::from_bytes(header_name.as_bytes())
            .map_err(|_| ValidationError::new(at("header_name"), "must be a valid header name"))?;
        let algorithm = match raw.algorithm.as_deref().unwrap_or("uuid") {
            "uuid" => Algorithm::Uuid,
            "nanoid" => Algorithm::Nanoid,
            "range_id" => {
                let range = raw.range_id.unwrap_or(RawRange {
                    char_set: None,
                    length: None,
                });
                let char_set: Vec<char> = range
                    .char_set
                    .as_deref()
                    .unwrap_or(DEFAULT_CHAR_SET)
                    .chars()
                    .collect();
                // A header value: visible ASCII only.
                if char_set.len() < 6 || char_set.iter().any(|c| !c.is_ascii_graphic()) {
                    return Err(ValidationError::new(
                        at("range_id.char_set"),
                        "must have at least 6 visible ASCII characters",
                    ));
                }
                let length = range.length.unwrap_or(16);
                if !(6..=256).contains(&length) {
                    return Err(ValidationError::new(
                        at("range_id.length"),
                        "must be from 6 to 256",
                    ));
                }
                Algorithm::RangeId {
                    char_set,
                    length: length as usize,
                }
            }
            _ => {
                return Err(ValidationError::new(
                    at("algorithm"),
                    "must be one of uuid, nanoid, range_id",
                ))
            }
        };
        Ok(RequestId {
            header_name,
            include_in_response: raw.include_in_response.unwrap_or(true),
            algorithm,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configs() {
        let r = RequestId::parse(&json!({})).unwrap();
        assert_eq!(r.header_name, "x-request-id");
        assert!(r.include_in_response);
        assert_eq!(r.algorithm, Algorithm::Uuid);
        let r =
            RequestId::parse(&json!({"algorithm": "range_id", "range_id": {"length": 8}})).unwrap();
        assert!(matches!(r.algorithm, Algorithm::RangeId { length: 8, .. }));
        for (bad, field) in [
            (
                json!({"algorithm": "snowflake"}),
                "plugins.request-id.algorithm",
            ),
            (
                json!({"header_name": "a b"}),
                "plugins.request-id.header_name",
            ),
            (
                json!({"algorithm": "range_id", "range_id": {"length": 1}}),
                "plugins.request-id.range_id.length",
            ),
            (json!({"bogus": 1}), "plugins.request-id.bogus"),
        ] {
            assert_eq!(RequestId::parse(&bad).unwrap_err().field, field, "{bad}");
        }
    }
}
