//! The `limit-conn` plugin (APISIX, nginx's `limit_conn`): at most `conn` requests in
//! flight per key; up to `burst` more wait `default_conn_delay` per `conn` ahead of them,
//! the rest are answered `rejected_code`. A request counts until its response has ended
//! (a WebSocket until its tunnel closes). Only the `local` policy is served here.
use super::limit_count::{local_policy, rejection, Key};
use crate::codec::from_value;
use crate::ValidationError;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

pub const NAME: &str = "limit-conn";

#[derive(Debug, Clone, PartialEq)]
pub struct LimitConn {
    pub conn: u64,
    pub burst: u64,
    /// Seconds an excess request waits per `conn` requests ahead of it.
    pub default_conn_delay: f64,
    pub key: Key,
    pub rejected_code: u16,
    pub rejected_msg: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    /// Requests in flight per key (> 0).
    conn: u64,
    /// Requests above `conn` that wait rather than fail (>= 0).
    burst: u64,
    /// Seconds an excess request waits per `conn` ahead of it (> 0).
    default_conn_delay: f64,
    /// Accepted; the delay is always `default_conn_delay` here (see docs/plugins.md).
    only_use_default_delay: Option<bool>,
    /// `var` (default) or `var_combination`.
    key_type: Option<String>,
    /// A variable name or a `$var` template; default `remote_addr`.
    key: Option<String>,
    /// Status of a refused request, 200 to 599; default 503.
    rejected_code: Option<u16>,
    /// Body of a refused request, as `{"error_msg": …}`.
    rejected_msg: Option<String>,
    /// Only `local` is served here.
    policy: Option<String>,
    /// What to do when the store is unreachable (redis policies only).
    allow_degradation: Option<bool>,
}

impl LimitConn {
    pub fn parse(value: &Value) -> Result<LimitConn, ValidationError> {
        let within = format!("plugins.{NAME}");
        let raw: Raw = from_value(value).map_err(|e| e.within(&within))?;
        let at = |f: &str| format!("{within}.{f}");
        if raw.conn == 0 {
            return Err(ValidationError::new(at("conn"), "must be greater than 0"));
        }
        if !(raw.default_conn_delay > 0.0 && raw.default_conn_delay <= 3600.0) {
            return Err(ValidationError::new(
                at("default_conn_delay"),
                "must be greater than 0 and at most 3600 seconds",
            ));
        }
        let key = Key::parse(raw.key_type.as_deref(), raw.key, false, &within)?;
        let (rejected_code, rejected_msg) =
            rejection(raw.rejected_code, raw.rejected_msg, &within)?;
        local_policy(raw.policy.as_deref(), &within)?;
        let _ = (raw.allow_degradation, raw.only_use_default_delay);
        Ok(LimitConn {
            conn: raw.conn,
            burst: raw.burst,
            default_conn_delay: raw.default_conn_delay,
            key,
            rejected_code,
            rejected_msg,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configs() {
        let c = LimitConn::parse(&json!({"conn": 1, "burst": 0, "default_conn_delay": 0.1,
            "key_type": "var", "key": "http_x_user", "rejected_code": 429}))
        .unwrap();
        assert_eq!((c.conn, c.burst, c.rejected_code), (1, 0, 429));
        assert_eq!(c.key, Key::Var("http_x_user".into()));
        for (bad, field) in [
            (
                json!({"burst": 0, "default_conn_delay": 0.1}),
                "plugins.limit-conn.conn",
            ),
            (
                json!({"conn": 0, "burst": 0, "default_conn_delay": 0.1}),
                "plugins.limit-conn.conn",
            ),
            (
                json!({"conn": 1, "burst": 0, "default_conn_delay": 0}),
                "plugins.limit-conn.default_conn_delay",
            ),
            (
                json!({"conn": 1, "burst": -1, "default_conn_delay": 1}),
                "plugins.limit-conn.burst",
            ),
            (
                json!({"conn": 1, "burst": 0, "default_conn_delay": 1, "policy": "redis"}),
                "plugins.limit-conn.policy",
            ),
        ] {
            assert_eq!(LimitConn::parse(&bad).unwrap_err().field, field, "{bad}");
        }
    }
}
