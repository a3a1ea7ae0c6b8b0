//! The `limit-count` plugin (APISIX): at most `count` requests per `time_window` seconds
//! for each key (the client address by default), in fixed windows; the rest are answered
//! `rejected_code`. `group` shares one count among every route that names it.
//!
//! Only the `local` policy (a count per gateway replica, as APISIX's) is served here; the
//! `redis` policies are refused with a 400 rather than silently counted locally.
use crate::codec::from_value;
use crate::ValidationError;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

pub const NAME: &str = "limit-count";

/// What the count is kept per.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// One variable (`remote_addr`, `http_x_api_key`, `consumer_name`…).
    Var(String),
    /// A template of variables (`$remote_addr $http_user_agent`).
    Combination(String),
    /// One count for every request.
    Constant(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitCount {
    pub count: u64,
    pub time_window: u64,
    pub key: Key,
    pub rejected_code: u16,
    pub rejected_msg: Option<String>,
    pub show_limit_quota_header: bool,
    /// Routes naming the same group share one count.
    pub group: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    /// Requests allowed per window (> 0).
    count: u64,
    /// The window, in seconds (> 0).
    time_window: u64,
    /// `var` (default), `var_combination` or `constant`.
    key_type: Option<String>,
    /// A variable name, a `$var` template, or a constant, as `key_type` says; default
    /// `remote_addr`.
    key: Option<String>,
    /// Status of a rejected request, 200 to 599; default 503.
    rejected_code: Option<u16>,
    /// Body of a rejected request, as `{"error_msg": …}`.
    rejected_msg: Option<String>,
    /// Only `local` is served here.
    policy: Option<String>,
    /// What to do when the count's store is unreachable (redis policies only).
    allow_degradation: Option<bool>,
    /// `X-RateLimit-Limit`, `-Remaining` and `-Reset` on responses; default true.
    show_limit_quota_header: Option<bool>,
    /// Routes naming the same group share one count (their configurations must match).
    group: Option<String>,
}

impl Key {
    /// `key_type` and `key` as the rate-limiting plugins take them: the key defaults to
    /// the client address; `constant` only where `allow_constant` (limit-count).
    pub(super) fn parse(
        key_type: Option<&str>,
        key: Option<String>,
        allow_constant: bool,
        within: &str,
    ) -> Result<Key, ValidationError> {
        let text = key.unwrap_or_else(|| "remote_addr".into());
        if text.is_empty() {
            return Err(ValidationError::new(
                format!("{within}.key"),
                "must not be empty",
            ));
        }
        Ok(match key_type.unwrap_or("var") {
            "var" => Key::Var(text),
            "var_combination" => Key::Combination(text),
            "constant" if allow_constant => Key::Constant(text),
            other => {
                let allowed = match allow_constant {
                    true => "var, var_combination or constant",
                    false => "var or var_combination",
                };
                return Err(ValidationError::new(
                    format!("{within}.key_type"),
                    format!("must be {allowed}, got {other:?}"),
                ));
            }
        })
    }
}

/// `rejected_code` (200 to 599, default 503) and `rejected_msg` (not empty).
pub(super) fn rejection(
    code: Option<u16>,
    msg: Option<String>,
    within: &str,
) -> Result<(u16, Option<String>), ValidationError> {
    let code = code.unwrap_or(503);
    if !(200..=599).contains(&code) {
        return Err(ValidationError::new(
            format!("{within}.rejected_code"),
            "must be from 200 to 599",
        ));
    }
    if msg.as_deref() == Some("") {
        return Err(ValidationError::new(
            format!("{within}.rejected_msg"),
            "must not be empty",
        ));
    }
    Ok((code, msg))
}

/// Only the `local` policy (a count per gateway replica) is served; the Redis ones are
/// refused rather than silently counted locally.
pub(super) fn local_policy(policy: Option<&str>, within: &str) -> Result<(), ValidationError> {
    match policy.unwrap_or("local") {
        "local" => Ok(()),
        "redis" | "redis-cluster" | "redis-sentinel" => Err(ValidationError::new(
            format!("{within}.policy"),
            "only the local policy is supported yet (a count per gateway replica)",
        )),
        other => Err(ValidationError::new(
            format!("{within}.policy"),
            format!("must be local, redis or redis-cluster, got {other:?}"),
        )),
    }
}

/// A window longer than a year is a configuration mistake, not a limit.
const MAX_WINDOW: u64 = 366 * 24 * 3600;

impl LimitCount {
    pub fn parse(value: &Value) -> Result<LimitCount, ValidationError> {
        let within = format!("plugins.{NAME}");
        let raw: Raw = from_value(value).map_err(|e| e.within(&within))?;
        let at = |f: &str| format!("{within}.{f}");
        if raw.count == 0 {
            return Err(ValidationError::new(at("count"), "must be greater than 0"));
        }
        if !(1..=MAX_WINDOW).contains(&raw.time_window) {
            return Err(ValidationError::new(
                at("time_window"),
                format!("must be from 1 to {MAX_WINDOW} seconds"),
            ));
        }
        let key = Key::parse(raw.key_type.as_deref(), raw.key, true, &within)?;
        let (rejected_code, rejected_msg) =
            rejection(raw.rejected_code, raw.rejected_msg, &within)?;
        local_policy(raw.policy.as_deref(), &within)?;
        let _ = raw.allow_degradation;
        if raw.group.as_deref() == Some("") {
            return Err(ValidationError::new(at("group"), "must not be empty"));
        }
        Ok(LimitCount {
            count: raw.count,
            time_window: raw.time_window,
            key,
            rejected_code,
            rejected_msg,
            show_limit_quota_header: raw.show_limit_quota_header.unwrap_or(true),
            group: raw.group,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configs() {
        let c = LimitCount::parse(&json!({"count": 2, "time_window": 60})).unwrap();
        assert_eq!(
            c,
            LimitCount {
                count: 2,
                time_window: 60,
                key: Key::Var("remote_addr".into()),
                rejected_code: 503,
                rejected_msg: None,
                show_limit_quota_header: true,
                group: None,
            }
        );
        let c = LimitCount::parse(&json!({"count": 1, "time_window": 1,
            "key_type": "var_combination", "key": "$remote_addr $consumer_name",
            "rejected_code": 429, "rejected_msg": "slow down", "policy": "local",
            "show_limit_quota_header": false, "group": "g1", "allow_degradation": true}))
        .unwrap();
        assert_eq!(
            c.key,
            Key::Combination("$remote_addr $consumer_name".into())
        );
        assert_eq!((c.rejected_code, c.group.as_deref()), (429, Some("g1")));
        for (bad, field) in [
            (json!({"time_window": 60}), "plugins.limit-count.count"),
            (
                json!({"count": 0, "time_window": 60}),
                "plugins.limit-count.count",
            ),
            (
                json!({"count": 1, "time_window": 0}),
                "plugins.limit-count.time_window",
            ),
            (
                json!({"count": -1, "time_window": 1}),
                "plugins.limit-count.count",
            ),
            (
                json!({"count": 1, "time_window": 1, "key_type": "x"}),
                "plugins.limit-count.key_type",
            ),
            (
                json!({"count": 1, "time_window": 1, "rejected_code": 600}),
                "plugins.limit-count.rejected_code",
            ),
            (
                json!({"count": 1, "time_window": 1, "policy": "redis"}),
                "plugins.limit-count.policy",
            ),
            (
                json!({"count": 1, "time_window": 1, "key": ""}),
                "plugins.limit-count.key",
            ),
            (
                json!({"count": 1, "time_window": 1, "other": 1}),
                "plugins.limit-count.other",
            ),
        ] {
            assert_eq!(LimitCount::parse(&bad).unwrap_err().field, field, "{bad}");
        }
    }
}
