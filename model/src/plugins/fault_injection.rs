//! The `fault-injection` plugin (APISIX): delays a share of requests, and/or answers a
//! share itself, optionally only those matching `vars`.
use crate::codec::from_value;
use crate::vars::Expr;
use crate::ValidationError;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::time::Duration;

pub const NAME: &str = "fault-injection";

#[derive(Debug, Clone)]
pub struct FaultInjection {
    pub abort: Option<Abort>,
    pub delay: Option<Delay>,
}

#[derive(Debug, Clone)]
pub struct Abort {
    pub status: u16,
    /// May hold request variables (`$remote_addr`).
    pub body: Option<String>,
    /// Values may hold request variables.
    pub headers: Vec<(http::HeaderName, String)>,
    pub when: When,
}

#[derive(Debug, Clone)]
pub struct Delay {
    pub duration: Duration,
    pub when: When,
}

/// When a fault applies: to `percentage` % of requests (all when unset) that match one of
/// the `vars` expressions (any request when there are none).
#[derive(Debug, Clone)]
pub struct When {
    pub percentage: Option<u8>,
    pub vars: Vec<Expr>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    abort: Option<RawAbort>,
    delay: Option<RawDelay>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAbort {
    http_status: u16,
    body: Option<String>,
    headers: Option<Map<String, Value>>,
    percentage: Option<u8>,
    vars: Option<Vec<Value>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelay {
    duration: f64,
    percentage: Option<u8>,
    vars: Option<Vec<Value>>,
}

fn when(
    within: &str,
    percentage: Option<u8>,
    vars: Option<Vec<Value>>,
) -> Result<When, ValidationError> {
    if let Some(p) = percentage {
        if !(1..=100).contains(&p) {
            return Err(ValidationError::new(
                format!("{within}.percentage"),
                "must be from 1 to 100",
            ));
        }
    }
    let vars = vars
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, v)| {
            Expr::parse(v).map_err(|(path, msg)| {
                ValidationError::new(
                    format!("{within}.vars[{i}]"),
                    format!("{path} {msg}").trim().to_string(),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(When { percentage, vars })
}

impl FaultInjection {
    pub fn parse(value: &Value) -> Result<FaultInjection, ValidationError> {
        let within = format!("plugins.{NAME}");
        let raw: Raw = from_value(value).map_err(|e| e.within(&within))?;
        if raw.abort.is_none() && raw.delay.is_none() {
            return Err(ValidationError::new(within, "give abort, delay or both"));
        }
        let abort = match raw.abort {
            None => None,
            Some(a) => {
                let at = format!("{within}.abort");
                if !(200..=599).contains(&a.http_status) {
                    return Err(ValidationError::new(
                        format!("{at}.http_status"),
                        "must be an HTTP status from 200 to 599",
                    ));
                }
                let mut headers = Vec::new();
                for (name, v) in a.headers.into_iter().flatten() {
                    let field = format!("{at}.headers.{name}");
                    let name = http::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| ValidationError::new(&field, "is not a valid header name"))?;
                    let v = match v {
                        Value::String(s) => s,
                        Value::Number(n) => n.to_string(),
                        _ => return Err(ValidationError::new(field, "must be a string")),
                    };
                    headers.push((name, v));
                }
                Some(Abort {
                    status: a.http_status,
                    body: a.body,
                    headers,
                    when: when(&at, a.percentage, a.vars)?,
                })
            }
        };
        let delay = match raw.delay {
            None => None,
            Some(d) => {
                let at = format!("{within}.delay");
                // A delay holds a request (and its connection) open: bounded, as a
                // request timeout would end it anyway.
                if !(d.duration >= 0.0 && d.duration <= 3600.0) {
                    return Err(ValidationError::new(
                        format!("{at}.duration"),
                        "must be from 0 to 3600 seconds",
                    ));
                }
                Some(Delay {
                    duration: Duration::from_secs_f64(d.duration),
                    when: when(&at, d.percentage, d.vars)?,
                })
            }
        };
        Ok(FaultInjection { abort, delay })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configs() {
        let f = FaultInjection::parse(&json!({
            "abort": {"http_status": 200, "body": "Fault Injection!\n", "percentage": 50,
                      "vars": [[["arg_name", "==", "jack"]]]},
            "delay": {"duration": 0.5}
        }))
        .unwrap();
        let abort = f.abort.unwrap();
        assert_eq!(
            (abort.status, abort.when.percentage, abort.when.vars.len()),
            (200, Some(50), 1)
        );
        assert_eq!(f.delay.unwrap().duration, Duration::from_millis(500));
        for (bad, field) in [
            (json!({}), "plugins.fault-injection"),
            (
                json!({"abort": {}}),
                "plugins.fault-injection.abort.http_status",
            ),
            (
                json!({"abort": {"http_status": 100}}),
                "plugins.fault-injection.abort.http_status",
            ),
            (
                json!({"abort": {"http_status": 500, "percentage": 0}}),
                "plugins.fault-injection.abort.percentage",
            ),
            (
                json!({"abort": {"http_status": 500, "vars": [[["a", "~~", 1]]]}}),
                "plugins.fault-injection.abort.vars[0]",
            ),
            (
                json!({"abort": {"http_status": 500, "headers": {"a b": "x"}}}),
                "plugins.fault-injection.abort.headers.a b",
            ),
            (
                json!({"delay": {"duration": -1}}),
                "plugins.fault-injection.delay.duration",
            ),
            (
                json!({"delay": {}}),
                "plugins.fault-injection.delay.duration",
            ),
        ] {
            assert_eq!(
                FaultInjection::parse(&bad).unwrap_err().field,
                field,
                "{bad}"
            );
        }
    }
}
