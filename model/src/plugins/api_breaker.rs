//! The `api-breaker` plugin (APISIX): a circuit breaker on the upstream's answers. After
//! `unhealthy.failures` answers with an unhealthy status the route is answered
//! `break_response_code` for 2^(failures seen / failures) seconds (at most
//! `max_breaker_sec`); `healthy.successes` healthy answers in a row close it again.
use crate::codec::from_value;
use crate::ValidationError;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

pub const NAME: &str = "api-breaker";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiBreaker {
    pub break_response_code: u16,
    pub break_response_body: Option<String>,
    pub break_response_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub max_breaker_sec: u64,
    pub unhealthy_statuses: Vec<u16>,
    pub failures: u64,
    pub healthy_statuses: Vec<u16>,
    pub successes: u64,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    /// Status answered while the breaker is open (200 to 599).
    break_response_code: u16,
    break_response_body: Option<String>,
    /// `[{"key": …, "value": …}]` added to the answer while open.
    break_response_headers: Option<Vec<RawHeader>>,
    /// The longest the breaker stays open, in seconds (>= 3, default 300).
    max_breaker_sec: Option<u64>,
    unhealthy: Option<RawUnhealthy>,
    healthy: Option<RawHealthy>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeader {
    key: String,
    value: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUnhealthy {
    /// Default `[500]`.
    http_statuses: Option<Vec<u16>>,
    /// Default 3.
    failures: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthy {
    /// Default `[200]`.
    http_statuses: Option<Vec<u16>>,
    /// Default 3.
    successes: Option<u64>,
}

fn statuses(list: Option<Vec<u16>>, default: u16, at: String) -> Result<Vec<u16>, ValidationError> {
    let list = list.unwrap_or_else(|| vec![default]);
    if list.is_empty() || list.iter().any(|s| !(200..=599).contains(s)) {
        return Err(ValidationError::new(
            at,
            "must list at least one status from 200 to 599",
        ));
    }
    Ok(list)
}

/// A year: beyond it the breaker is a configuration mistake, not a pause.
const MAX_BREAKER_SEC: u64 = 366 * 24 * 3600;

impl ApiBreaker {
    pub fn parse(value: &Value) -> Result<ApiBreaker, ValidationError> {
        let within = format!("plugins.{NAME}");
        let raw: Raw = from_value(value).map_err(|e| e.within(&within))?;
        let at = |f: &str| format!("{within}.{f}");
        if !(200..=599).contains(&raw.break_response_code) {
            return Err(ValidationError::new(
                at("break_response_code"),
                "must be from 200 to 599",
            ));
        }
        let mut headers = Vec::new();
        for (i, h) in raw.break_response_headers.into_iter().flatten().enumerate() {
            let name = http::HeaderName::from_bytes(h.key.as_bytes());
            let value = http::HeaderValue::from_str(&h.value);
            match (name, value) {
                (Ok(n), Ok(v)) => headers.push((n, v)),
                _ => {
                    return Err(ValidationError::new(
                        format!("{within}.break_response_headers[{i}]"),
                        "must be a valid header name and value",
                    ))
                }
            }
        }
        let max_breaker_sec = raw.max_breaker_sec.unwrap_or(300);
        if !(3..=MAX_BREAKER_SEC).contains(&max_breaker_sec) {
            return Err(ValidationError::new(
                at("max_breaker_sec"),
                format!("must be from 3 to {MAX_BREAKER_SEC} seconds"),
            ));
        }
        let unhealthy = raw.unhealthy.unwrap_or(RawUnhealthy {
            http_statuses: None,
            failures: None,
        });
        let healthy = raw.healthy.unwrap_or(RawHealthy {
            http_statuses: None,
            successes: None,
        });
        let failures = unhealthy.failures.unwrap_or(3);
        let successes = healthy.successes.unwrap_or(3);
        if failures == 0 {
            return Err(ValidationError::new(
                at("unhealthy.failures"),
                "must be at least 1",
            ));
        }
        if successes == 0 {
            return Err(ValidationError::new(
                at("healthy.successes"),
                "must be at least 1",
            ));
        }
        Ok(ApiBreaker {
            break_response_code: raw.break_response_code,
            break_response_body: raw.break_response_body,
            break_response_headers: headers,
            max_breaker_sec,
            unhealthy_statuses: statuses(
                unhealthy.http_statuses,
                500,
                at("unhealthy.http_statuses"),
            )?,
            failures,
            healthy_statuses: statuses(healthy.http_statuses, 200, at("healthy.http_statuses"))?,
            successes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configs() {
        let c = ApiBreaker::parse(&json!({"break_response_code": 502})).unwrap();
        assert_eq!((c.max_breaker_sec, c.failures, c.successes), (300, 3, 3));
        assert_eq!(
            (c.unhealthy_statuses, c.healthy_statuses),
            (vec![500], vec![200])
        );
        for (bad, field) in [
            (json!({}), "plugins.api-breaker.break_response_code"),
            (
                json!({"break_response_code": 199}),
                "plugins.api-breaker.break_response_code",
            ),
            (
                json!({"break_response_code": 502, "max_breaker_sec": 2}),
                "plugins.api-breaker.max_breaker_sec",
            ),
            (
                json!({"break_response_code": 502, "max_breaker_sec": u64::MAX}),
                "plugins.api-breaker.max_breaker_sec",
            ),
            (
                json!({"break_response_code": 502, "unhealthy": {"failures": 0}}),
                "plugins.api-breaker.unhealthy.failures",
            ),
            (
                json!({"break_response_code": 502, "healthy": {"http_statuses": [600]}}),
                "plugins.api-breaker.healthy.http_statuses",
            ),
            (
                json!({"break_response_code": 502, "break_response_headers": [{"key": "a b", "value": "v"}]}),
                "plugins.api-breaker.break_response_headers[0]",
            ),
        ] {
            assert_eq!(ApiBreaker::parse(&bad).unwrap_err().field, field, "{bad}");
        }
    }
}
