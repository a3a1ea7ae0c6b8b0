//! The `proxy-mirror` plugin (APISIX): a copy of each proxied request (or of a sample of
//! them) goes to another host, whose answer is ignored; the client's request never waits
//! for it or fails with it.
use crate::codec::from_value;
use crate::ValidationError;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

pub const NAME: &str = "proxy-mirror";

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyMirror {
    /// `http(s)://host[:port]`, without a path.
    pub host: String,
    /// Replaces the request's path (`replace`), or goes in front of it (`prefix`).
    pub path: Option<String>,
    pub prefix: bool,
    /// The share of requests copied, from 0.00001 to 1.
    pub sample_ratio: f64,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    /// `http://host[:port]` or `https://…`, no path.
    host: String,
    /// A path starting with `/`, without `?` or `&`.
    path: Option<String>,
    /// `replace` (default) or `prefix`.
    path_concat_mode: Option<String>,
    /// Default 1.
    sample_ratio: Option<f64>,
}

impl ProxyMirror {
    pub fn parse(value: &Value) -> Result<ProxyMirror, ValidationError> {
        let within = format!("plugins.{NAME}");
        let raw: Raw = from_value(value).map_err(|e| e.within(&within))?;
        let at = |f: &str| format!("{within}.{f}");
        let rest = raw
            .host
            .strip_prefix("http://")
            .or_else(|| raw.host.strip_prefix("https://"));
        let host_ok = rest.is_some_and(|r| {
            let (name, port) = match r.strip_prefix('[') {
                Some(v6) => match v6.split_once(']') {
                    Some((addr, port)) => (addr, port),
                    None => return false,
                },
                None => r.split_once(':').map_or((r, ""), |(h, p)| (h, p)),
            };
            let port = port.strip_prefix(':').unwrap_or(port);
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
                && (port.is_empty() || port.parse::<u16>().is_ok_and(|p| p > 0))
                && !(r.starts_with('[') && port.is_empty() && !r.ends_with(']'))
        });
        if !host_ok {
            return Err(ValidationError::new(
                at("host"),
                "must be http(s)://host[:port], without a path",
            ));
        }
        if let Some(p) = &raw.path {
            if !p.starts_with('/') || p.len() < 2 || p.contains(['?', '&']) {
                return Err(ValidationError::new(
                    at("path"),
                    "must start with \"/\" and have no \"?\" or \"&\"",
                ));
            }
        }
        let prefix = match raw.path_concat_mode.as_deref().unwrap_or("replace") {
            "replace" => false,
            "prefix" => true,
            other => {
                return Err(ValidationError::new(
                    at("path_concat_mode"),
                    format!("must be replace or prefix, got {other:?}"),
                ))
            }
        };
        let sample_ratio = raw.sample_ratio.unwrap_or(1.0);
        if !(0.00001..=1.0).contains(&sample_ratio) {
            return Err(ValidationError::new(
                at("sample_ratio"),
                "must be from 0.00001 to 1",
            ));
        }
        Ok(ProxyMirror {
            host: raw.host,
            path: raw.path,
            prefix,
            sample_ratio,
        })
    }

    /// The copy's path and query for a request to `path_and_query`.
    pub fn target(&self, path_and_query: &str) -> String {
        let query = path_and_query
            .find('?')
            .map_or("", |i| &path_and_query[i..]);
        match (&self.path, self.prefix) {
            (None, _) => path_and_query.to_string(),
            (Some(p), true) => format!("{p}{path_and_query}"),
            (Some(p), false) => format!("{p}{query}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configs_and_targets() {
        let m = ProxyMirror::parse(&json!({"host": "http://127.0.0.1:9797"})).unwrap();
        assert_eq!(
            (m.path.as_deref(), m.prefix, m.sample_ratio),
            (None, false, 1.0)
        );
        assert_eq!(m.target("/a?b=1"), "/a?b=1");
        let m = ProxyMirror::parse(&json!({"host": "https://m.example.com", "path": "/m",
            "path_concat_mode": "prefix", "sample_ratio": 0.5}))
        .unwrap();
        assert_eq!(m.target("/a?b=1"), "/m/a?b=1");
        let m = ProxyMirror::parse(&json!({"host": "http://[::1]:80", "path": "/m"})).unwrap();
        assert_eq!(m.target("/a?b=1"), "/m?b=1");
        assert_eq!(m.target("/a"), "/m");
        for (v, field) in [
            (json!({}), "plugins.proxy-mirror.host"),
            (json!({"host": "127.0.0.1:80"}), "plugins.proxy-mirror.host"),
            (
                json!({"host": "http://h/path"}),
                "plugins.proxy-mirror.host",
            ),
            (json!({"host": "http://h:0"}), "plugins.proxy-mirror.host"),
            (
                json!({"host": "http://h", "path": "x"}),
                "plugins.proxy-mirror.path",
            ),
            (
                json!({"host": "http://h", "path": "/a?b"}),
                "plugins.proxy-mirror.path",
            ),
            (
                json!({"host": "http://h", "path_concat_mode": "append"}),
                "plugins.proxy-mirror.path_concat_mode",
            ),
            (
                json!({"host": "http://h", "sample_ratio": 0}),
                "plugins.proxy-mirror.sample_ratio",
            ),
            (
                json!({"host": "http://h", "sample_ratio": 2}),
                "plugins.proxy-mirror.sample_ratio",
            ),
        ] {
            let e = ProxyMirror::parse(&v).unwrap_err();
            assert_eq!(e.field, field, "{v}: {e}");
        }
    }
}
