//! The `limit-req` plugin (APISIX, nginx's `limit_req`): a leaky bucket per key that
//! drains at `rate` requests per second; up to `burst` requests above the rate are delayed
//! until their turn (or let through at once with `nodelay`), the rest answered
//! `rejected_code`. Only the `local` policy is served here.
use super::limit_count::{local_policy, rejection, Key};
use crate::codec::from_value;
use crate::ValidationError;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

pub const NAME: &str = "limit-req";

#[derive(Debug, Clone, PartialEq)]
pub struct LimitReq {
    /// Requests per second the bucket drains.
    pub rate: f64,
    /// Requests above the rate that wait (or, with `nodelay`, pass) instead of failing.
    pub burst: f64,
    pub key: Key,
    pub rejected_code: u16,
    pub rejected_msg: Option<String>,
    pub nodelay: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    /// Requests per second (> 0).
    rate: f64,
    /// Requests above the rate that are delayed rather than refused (>= 0).
    burst: f64,
    /// `var` (default) or `var_combination`.
    key_type: Option<String>,
    /// A variable name or a `$var` template; default `remote_addr`.
    key: Option<String>,
    /// Status of a refused request, 200 to 599; default 503.
    rejected_code: Option<u16>,
    /// Body of a refused request, as `{"error_msg": …}`.
    rejected_msg: Option<String>,
    /// Let requests within the burst through at once instead of delaying them.
    nodelay: Option<bool>,
    /// Only `local` is served here.
    policy: Option<String>,
    /// What to do when the store is unreachable (redis policies only).
    allow_degradation: Option<bool>,
}

/// Beyond this many requests per second, or of burst, the numbers are a mistake.
const MAX: f64 = 1e9;
/// One request every 1,000 s: slower is not a rate limit but a block, and would make
/// the waits it computes overflow.
const MIN_RATE: f64 = 0.001;

impl LimitReq {
    pub fn parse(value: &Value) -> Result<LimitReq, ValidationError> {
        let within = format!("plugins.{NAME}");
        let raw: Raw = from_value(value).map_err(|e| e.within(&within))?;
        let at = |f: &str| format!("{within}.{f}");
        if !(MIN_RATE..=MAX).contains(&raw.rate) {
            return Err(ValidationError::new(
                at("rate"),
                format!("must be from {MIN_RATE} to {MAX} (requests per second)"),
            ));
        }
        if !(raw.burst >= 0.0 && raw.burst <= MAX) {
            return Err(ValidationError::new(at("burst"), "must be 0 or more"));
        }
        let key = Key::parse(raw.key_type.as_deref(), raw.key, false, &within)?;
        let (rejected_code, rejected_msg) =
            rejection(raw.rejected_code, raw.rejected_msg, &within)?;
        local_policy(raw.policy.as_deref(), &within)?;
        let _ = raw.allow_degradation;
        Ok(LimitReq {
            rate: raw.rate,
            burst: raw.burst,
            key,
            rejected_code,
            rejected_msg,
            nodelay: raw.nodelay.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configs() {
        let c = LimitReq::parse(&json!({"rate": 1, "burst": 2, "key": "remote_addr"})).unwrap();
        assert_eq!(
            c,
            LimitReq {
                rate: 1.0,
                burst: 2.0,
                key: Key::Var("remote_addr".into()),
                rejected_code: 503,
                rejected_msg: None,
                nodelay: false,
            }
        );
        for (bad, field) in [
            (json!({"burst": 1}), "plugins.limit-req.rate"),
            (json!({"rate": 1}), "plugins.limit-req.burst"),
            (json!({"rate": 0, "burst": 1}), "plugins.limit-req.rate"),
            (
                json!({"rate": 1e-300, "burst": 1}),
                "plugins.limit-req.rate",
            ),
            (json!({"rate": 1, "burst": -1}), "plugins.limit-req.burst"),
            (
                json!({"rate": 1, "burst": 1, "key_type": "constant"}),
                "plugins.limit-req.key_type",
            ),
            (
                json!({"rate": 1, "burst": 1, "rejected_code": 100}),
                "plugins.limit-req.rejected_code",
            ),
            (
                json!({"rate": 1, "burst": 1, "policy": "redis"}),
                "plugins.limit-req.policy",
            ),
        ] {
            assert_eq!(LimitReq::parse(&bad).unwrap_err().field, field, "{bad}");
        }
    }
}
