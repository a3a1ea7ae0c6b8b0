//! The `limit-count` plugin (APISIX): at most `count` requests per `time_window` seconds
//! for each key (the client address by default), in fixed windows; the rest are answered
//! `rejected_code`. `group` shares one count among every route that names it.
//!
//! `policy`: `local` counts per gateway replica (as APISIX's); `redis` keeps one count for
//! every replica in a Redis server, `redis-cluster` in a Redis Cluster. `redis-sentinel`
//! and TLS to Redis are refused with a 400 rather than silently counted some other way.
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
    pub policy: Policy,
    /// With Redis unreachable: let requests through (true) or answer 500 (false).
    pub allow_degradation: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Policy {
    #[default]
    Local,
    Redis(Box<Redis>),
    RedisCluster(Box<RedisCluster>),
}

/// Where the `redis-cluster` policy keeps its counts: the cluster's seed nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisCluster {
    /// `host:port` of each seed node; the others are found from them.
    pub nodes: Vec<String>,
    /// APISIX's `redis_cluster_name` (its shared-dict name for the slot cache): required
    /// as in APISIX, used here only in logs.
    pub name: String,
    pub password: Option<String>,
    pub timeout_ms: u64,
}

/// Where the `redis` policy keeps its counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redis {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub database: i64,
    /// Longest wait for one answer (connecting included), in milliseconds.
    pub timeout_ms: u64,
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
    /// `local` (default) or `redis`.
    policy: Option<String>,
    /// What to do when Redis is unreachable: pass requests (true) or answer 500.
    allow_degradation: Option<bool>,
    /// The `redis` policy's server; `redis_host` is required with it.
    redis_host: Option<String>,
    /// Default 6379.
    redis_port: Option<u64>,
    redis_username: Option<String>,
    redis_password: Option<String>,
    /// Default 0.
    redis_database: Option<i64>,
    /// Milliseconds, default 1000.
    redis_timeout: Option<u64>,
    /// TLS to Redis is not served yet: only false is accepted.
    redis_ssl: Option<bool>,
    redis_ssl_verify: Option<bool>,
    /// APISIX's cosocket pool settings, accepted for stored data: one multiplexed
    /// connection per worker serves every request here.
    redis_keepalive_timeout: Option<u64>,
    redis_keepalive_pool: Option<u64>,
    /// The `redis-cluster` policy's seed nodes (`host:port`, at least one).
    redis_cluster_nodes: Option<Vec<String>>,
    /// Required with `redis-cluster` (APISIX's); names the cluster in logs.
    redis_cluster_name: Option<String>,
    /// TLS to the cluster is not served yet: only false is accepted.
    redis_cluster_ssl: Option<bool>,
    redis_cluster_ssl_verify: Option<bool>,
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
            "only the local policy is supported for this plugin (a count per gateway replica)",
        )),
        other => Err(ValidationError::new(
            format!("{within}.policy"),
            format!("must be local, got {other:?}"),
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
        let key = Key::parse(raw.key_type.as_deref(), raw.key.clone(), true, &within)?;
        let (rejected_code, rejected_msg) =
            rejection(raw.rejected_code, raw.rejected_msg.clone(), &within)?;
        let policy = match raw.policy.as_deref().unwrap_or("local") {
            "local" => Policy::Local,
            "redis" => Policy::Redis(Box::new(redis(&raw, &at)?)),
            "redis-cluster" => Policy::RedisCluster(Box::new(redis_cluster(&raw, &at)?)),
            "redis-sentinel" => {
                return Err(ValidationError::new(
                    at("policy"),
                    "redis-sentinel is not supported yet (local, redis, redis-cluster are)",
                ))
            }
            other => {
                return Err(ValidationError::new(
                    at("policy"),
                    format!("must be local, redis or redis-cluster, got {other:?}"),
                ))
            }
        };
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
            policy,
            allow_degradation: raw.allow_degradation.unwrap_or(false),
        })
    }
}

/// `redis_timeout`: milliseconds, 1 to 60,000, default 1,000.
fn timeout_ms(raw: &Raw, at: &dyn Fn(&str) -> String) -> Result<u64, ValidationError> {
    let timeout_ms = raw.redis_timeout.unwrap_or(1000);
    if !(1..=60_000).contains(&timeout_ms) {
        return Err(ValidationError::new(
            at("redis_timeout"),
            "must be from 1 to 60000 milliseconds",
        ));
    }
    Ok(timeout_ms)
}

fn redis_cluster(raw: &Raw, at: &dyn Fn(&str) -> String) -> Result<RedisCluster, ValidationError> {
    let nodes = match &raw.redis_cluster_nodes {
        Some(n) if !n.is_empty() => n,
        _ => {
            return Err(ValidationError::new(
                at("redis_cluster_nodes"),
                "is required with the redis-cluster policy (at least one host:port)",
            ))
        }
    };
    for (i, node) in nodes.iter().enumerate() {
        let ok = node.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && !host.chars().any(|c| c.is_whitespace() || c == '/')
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok {
            return Err(ValidationError::new(
                at(&format!("redis_cluster_nodes[{i}]")),
                "must be host:port",
            ));
        }
    }
    let name = match raw.redis_cluster_name.as_deref() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => {
            return Err(ValidationError::new(
                at("redis_cluster_name"),
                "is required with the redis-cluster policy",
            ))
        }
    };
    if raw.redis_cluster_ssl == Some(true) {
        return Err(ValidationError::new(
            at("redis_cluster_ssl"),
            "TLS to Redis is not supported yet",
        ));
    }
    let _ = raw.redis_cluster_ssl_verify;
    Ok(RedisCluster {
        nodes: nodes.clone(),
        name,
        password: raw.redis_password.clone().filter(|p| !p.is_empty()),
        timeout_ms: timeout_ms(raw, at)?,
    })
}

fn redis(raw: &Raw, at: &dyn Fn(&str) -> String) -> Result<Redis, ValidationError> {
    let host = match raw.redis_host.as_deref() {
        Some(h) if !h.is_empty() && !h.chars().any(|c| c.is_whitespace() || c == '/') => h,
        Some(_) => {
            return Err(ValidationError::new(
                at("redis_host"),
                "must be a host name or address",
            ))
        }
        None => {
            return Err(ValidationError::new(
                at("redis_host"),
                "is required with the redis policy",
            ))
        }
    };
    let port = raw.redis_port.unwrap_or(6379);
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ValidationError::new(at("redis_port"), "must be from 1 to 65535"))?;
    let database = raw.redis_database.unwrap_or(0);
    if database < 0 {
        return Err(ValidationError::new(
            at("redis_database"),
            "must be 0 or more",
        ));
    }
    let timeout_ms = timeout_ms(raw, at)?;
    if raw.redis_ssl == Some(true) {
        return Err(ValidationError::new(
            at("redis_ssl"),
            "TLS to Redis is not supported yet",
        ));
    }
    let _ = (
        raw.redis_ssl_verify,
        raw.redis_keepalive_timeout,
        raw.redis_keepalive_pool,
    );
    Ok(Redis {
        host: host.to_string(),
        port,
        username: raw.redis_username.clone().filter(|u| !u.is_empty()),
        password: raw.redis_password.clone().filter(|p| !p.is_empty()),
        database,
        timeout_ms,
    })
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
                policy: Policy::Local,
                allow_degradation: false,
            }
        );
        let c = LimitCount::parse(&json!({"count": 2, "time_window": 60, "policy": "redis",
            "redis_host": "10.0.0.5", "redis_password": "pw", "redis_database": 2,
            "redis_timeout": 200, "redis_keepalive_pool": 100, "allow_degradation": true}))
        .unwrap();
        assert_eq!(
            c.policy,
            Policy::Redis(Box::new(Redis {
                host: "10.0.0.5".into(),
                port: 6379,
                username: None,
                password: Some("pw".into()),
                database: 2,
                timeout_ms: 200,
            }))
        );
        assert!(c.allow_degradation);
        let c = LimitCount::parse(&json!({"count": 2, "time_window": 60,
            "policy": "redis-cluster", "redis_cluster_nodes": ["10.0.0.1:7000", "10.0.0.2:7000"],
            "redis_cluster_name": "limits", "redis_password": "pw"}))
        .unwrap();
        assert_eq!(
            c.policy,
            Policy::RedisCluster(Box::new(RedisCluster {
                nodes: vec!["10.0.0.1:7000".into(), "10.0.0.2:7000".into()],
                name: "limits".into(),
                password: Some("pw".into()),
                timeout_ms: 1000,
            }))
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
                "plugins.limit-count.redis_host",
            ),
            (
                json!({"count": 1, "time_window": 1, "policy": "redis", "redis_host": "h",
                    "redis_port": 70000}),
                "plugins.limit-count.redis_port",
            ),
            (
                json!({"count": 1, "time_window": 1, "policy": "redis", "redis_host": "h",
                    "redis_timeout": 0}),
                "plugins.limit-count.redis_timeout",
            ),
            (
                json!({"count": 1, "time_window": 1, "policy": "redis", "redis_host": "h",
                    "redis_ssl": true}),
                "plugins.limit-count.redis_ssl",
            ),
            (
                json!({"count": 1, "time_window": 1, "policy": "redis-cluster"}),
                "plugins.limit-count.redis_cluster_nodes",
            ),
            (
                json!({"count": 1, "time_window": 1, "policy": "redis-cluster",
                    "redis_cluster_nodes": ["127.0.0.1:7000", "nohost"],
                    "redis_cluster_name": "c"}),
                "plugins.limit-count.redis_cluster_nodes[1]",
            ),
            (
                json!({"count": 1, "time_window": 1, "policy": "redis-cluster",
                    "redis_cluster_nodes": ["127.0.0.1:7000"]}),
                "plugins.limit-count.redis_cluster_name",
            ),
            (
                json!({"count": 1, "time_window": 1, "policy": "redis-sentinel"}),
                "plugins.limit-count.policy",
            ),
            (
                json!({"count": 1, "time_window": 1, "policy": "memcached"}),
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
