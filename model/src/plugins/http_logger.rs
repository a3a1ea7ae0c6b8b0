//! The `http-logger` plugin (APISIX): one JSON entry per request, sent in batches to an
//! HTTP(S) endpoint (`POST`), with APISIX's batch settings: a batch goes when it has
//! `batch_max_size` entries, when no entry came for `inactive_timeout` seconds, or when its
//! oldest entry is `buffer_duration` seconds old; a failed batch is retried
//! `max_retry_count` times, `retry_delay` seconds apart and doubling.
use crate::codec::from_value;
use crate::ValidationError;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

pub const NAME: &str = "http-logger";

#[derive(Debug, Clone, PartialEq)]
pub struct HttpLogger {
    pub uri: String,
    pub auth_header: Option<String>,
    pub timeout_secs: u64,
    pub name: String,
    pub max_retry_count: u64,
    pub retry_delay_secs: u64,
    pub buffer_duration_secs: u64,
    pub inactive_timeout_secs: u64,
    pub batch_max_size: usize,
    /// `new_line`: entries one per line; else a JSON array (an object for batches of 1).
    pub new_line: bool,
    pub ssl_verify: bool,
    /// Custom entries: each key's value is a `$variable` or a literal.
    pub log_format: Option<Map<String, Value>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    /// `http://` or `https://` URL the batches are POSTed to.
    uri: String,
    /// Sent as `Authorization`.
    auth_header: Option<String>,
    /// Seconds, default 3.
    timeout: Option<u64>,
    name: Option<String>,
    max_retry_count: Option<u64>,
    retry_delay: Option<u64>,
    buffer_duration: Option<u64>,
    inactive_timeout: Option<u64>,
    batch_max_size: Option<u64>,
    /// Only false: request bodies are not logged here.
    include_req_body: Option<bool>,
    /// Only false: response bodies are not logged here.
    include_resp_body: Option<bool>,
    /// `json` (default) or `new_line`.
    concat_method: Option<String>,
    /// Default false (APISIX's).
    ssl_verify: Option<bool>,
    /// Entry fields: `"$var"` values are the request's variables, others literals.
    log_format: Option<Map<String, Value>>,
}

/// Entries waiting for a batch, per configuration; beyond this they are dropped.
pub const MAX_BATCH: u64 = 10_000;

impl HttpLogger {
    pub fn parse(value: &Value) -> Result<HttpLogger, ValidationError> {
        let within = format!("plugins.{NAME}");
        let raw: Raw = from_value(value).map_err(|e| e.within(&within))?;
        let at = |f: &str| format!("{within}.{f}");
        let ok_uri = raw
            .uri
            .parse::<http::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if ok_uri.is_none() {
            return Err(ValidationError::new(
                at("uri"),
                "must be an http:// or https:// URL",
            ));
        }
        let at_least = |v: Option<u64>, default: u64, min: u64, field: &str| {
            let v = v.unwrap_or(default);
            match v >= min {
                true => Ok(v),
                false => Err(ValidationError::new(
                    at(field),
                    format!("must be at least {min}"),
                )),
            }
        };
        let timeout_secs = at_least(raw.timeout, 3, 1, "timeout")?;
        let max_retry_count = at_least(raw.max_retry_count, 0, 0, "max_retry_count")?;
        let retry_delay_secs = at_least(raw.retry_delay, 1, 0, "retry_delay")?;
        let buffer_duration_secs = at_least(raw.buffer_duration, 60, 1, "buffer_duration")?;
        let inactive_timeout_secs = at_least(raw.inactive_timeout, 5, 1, "inactive_timeout")?;
        let batch_max_size = at_least(raw.batch_max_size, 1000, 1, "batch_max_size")?;
        if batch_max_size > MAX_BATCH {
            return Err(ValidationError::new(
                at("batch_max_size"),
                format!("must be at most {MAX_BATCH}"),
            ));
        }
        for (field, v) in [
            ("include_req_body", raw.include_req_body),
            ("include_resp_body", raw.include_resp_body),
        ] {
            if v == Some(true) {
                return Err(ValidationError::new(
                    at(field),
                    "logging bodies is not supported yet",
                ));
            }
        }
        let new_line = match raw.concat_method.as_deref().unwrap_or("json") {
            "json" => false,
            "new_line" => true,
            other => {
                return Err(ValidationError::new(
                    at("concat_method"),
                    format!("must be json or new_line, got {other:?}"),
                ))
            }
        };
        if let Some(f) = &raw.log_format {
            if let Some((k, _)) = f.iter().find(|(_, v)| !v.is_string()) {
                return Err(ValidationError::new(
                    at(&format!("log_format.{k}")),
                    "must be a string (a $variable or a literal)",
                ));
            }
        }
        Ok(HttpLogger {
            uri: raw.uri,
            auth_header: raw.auth_header.filter(|a| !a.is_empty()),
            timeout_secs,
            name: raw.name.unwrap_or_else(|| "http logger".into()),
            max_retry_count,
            retry_delay_secs,
            buffer_duration_secs,
            inactive_timeout_secs,
            batch_max_size: batch_max_size as usize,
            new_line,
            ssl_verify: raw.ssl_verify.unwrap_or(false),
            log_format: raw.log_format.filter(|f| !f.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configs() {
        let c = HttpLogger::parse(&json!({"uri": "http://127.0.0.1:1980/log"})).unwrap();
        assert_eq!(
            (
                c.batch_max_size,
                c.inactive_timeout_secs,
                c.max_retry_count,
                c.new_line
            ),
            (1000, 5, 0, false)
        );
        let c = HttpLogger::parse(&json!({"uri": "https://logs.example.com/in",
            "batch_max_size": 2, "concat_method": "new_line", "auth_header": "Bearer x",
            "log_format": {"host": "$host", "tag": "gw"}}))
        .unwrap();
        assert!(c.new_line);
        assert_eq!(c.auth_header.as_deref(), Some("Bearer x"));
        for (v, field) in [
            (json!({}), "plugins.http-logger.uri"),
            (json!({"uri": "127.0.0.1/log"}), "plugins.http-logger.uri"),
            (json!({"uri": "ftp://h/x"}), "plugins.http-logger.uri"),
            (
                json!({"uri": "http://h", "batch_max_size": 0}),
                "plugins.http-logger.batch_max_size",
            ),
            (
                json!({"uri": "http://h", "timeout": 0}),
                "plugins.http-logger.timeout",
            ),
            (
                json!({"uri": "http://h", "concat_method": "xml"}),
                "plugins.http-logger.concat_method",
            ),
            (
                json!({"uri": "http://h", "include_req_body": true}),
                "plugins.http-logger.include_req_body",
            ),
            (
                json!({"uri": "http://h", "log_format": {"n": 1}}),
                "plugins.http-logger.log_format.n",
            ),
        ] {
            let e = HttpLogger::parse(&v).unwrap_err();
            assert_eq!(e.field, field, "{v}: {e}");
        }
    }
}
