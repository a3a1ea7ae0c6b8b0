//! The `proxy-rewrite` plugin (APISIX): changes what the upstream is sent — its path
//! (`uri`, or `regex_uri` pairs), `host`, `method` and headers (`set`, `add`, `remove`).
//! Values may name request variables (`$uri`, `${http_x}`), resolved per request.
use crate::codec::from_value;
use crate::ValidationError;
use regex::Regex;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

pub const NAME: &str = "proxy-rewrite";

/// APISIX's `method` enum.
const METHODS: [&str; 14] = [
    "GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "MKCOL", "COPY", "MOVE", "PROPFIND", "LOCK",
    "UNLOCK", "PATCH", "TRACE",
];

#[derive(Debug, Clone)]
pub struct ProxyRewrite {
    /// A path template: the upstream's path, the query string appended.
    pub uri: Option<String>,
    /// Tried in order; the first regex that matches the path rewrites it.
    pub regex_uri: Vec<(Regex, String)>,
    pub host: Option<String>,
    pub method: Option<http::Method>,
    /// Header templates that replace the request's.
    pub set: Vec<(http::HeaderName, String)>,
    /// Header templates added beside the request's.
    pub add: Vec<(http::HeaderName, String)>,
    pub remove: Vec<http::HeaderName>,
    /// Send `uri` as written, without normalising or appending the query.
    pub use_real_request_uri_unsafe: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    uri: Option<String>,
    regex_uri: Option<Vec<String>>,
    host: Option<String>,
    method: Option<String>,
    headers: Option<Map<String, Value>>,
    #[serde(default)]
    use_real_request_uri_unsafe: bool,
}

fn header_name(field: &str, name: &str) -> Result<http::HeaderName, ValidationError> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ValidationError::new(field, format!("{name:?} is not a valid header name")))
}

fn header_value(field: &str, v: &Value) -> Result<String, ValidationError> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err(ValidationError::new(field, "must be a string or a number")),
    };
    if s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(ValidationError::new(
            field,
            "must not contain CR, LF or NUL",
        ));
    }
    Ok(s)
}

type Headers = (
    Vec<(http::HeaderName, String)>,
    Vec<(http::HeaderName, String)>,
    Vec<http::HeaderName>,
);

/// `headers` in APISIX's two forms: `{set, add, remove}`, or (older) a flat map where an
/// empty value removes the header and any other sets it.
fn parse_headers(within: &str, h: &Map<String, Value>) -> Result<Headers, ValidationError> {
    let (mut set, mut add, mut remove) = (Vec::new(), Vec::new(), Vec::new());
    let structured = h
        .keys()
        .any(|k| matches!(k.as_str(), "set" | "add" | "remove"));
    if !structured {
        for (name, v) in h {
            let at = format!("{within}.headers.{name}");
            let value = header_value(&at, v)?;
            let name = header_name(&at, name)?;
            if value.is_empty() {
                remove.push(name);
            } else {
                set.push((name, value));
            }
        }
        return Ok((set, add, remove));
    }
    for (op, v) in h {
        let at = format!("{within}.headers.{op}");
        match op.as_str() {
            "set" | "add" => {
                let map = v
                    .as_object()
                    .ok_or_else(|| ValidationError::new(&at, "must be an object"))?;
                let out = if op == "set" { &mut set } else { &mut add };
                for (name, v) in map {
                    let at = format!("{at}.{name}");
                    out.push((header_name(&at, name)?, header_value(&at, v)?));
                }
            }
            "remove" => {
                let list = v
                    .as_array()
                    .ok_or_else(|| ValidationError::new(&at, "must be an array of names"))?;
                for (i, n) in list.iter().enumerate() {
                    let at = format!("{at}[{i}]");
                    let n = n
                        .as_str()
                        .ok_or_else(|| ValidationError::new(&at, "must be a string"))?;
                    remove.push(header_name(&at, n)?);
                }
            }
            _ => {
                return Err(ValidationError::new(
                    at,
                    "not supported (supported: set, add, remove)",
                ))
            }
        }
    }
    Ok((set, add, remove))
}

impl ProxyRewrite {
    pub fn parse(value: &Value) -> Result<ProxyRewrite, ValidationError> {
        let within = format!("plugins.{NAME}");
        let raw: Raw = from_value(value).map_err(|e| e.within(&within))?;
        let at = |f: &str| format!("{within}.{f}");
        if let Some(uri) = &raw.uri {
            if !uri.starts_with('/') || uri.len() > 4096 || uri.bytes().any(|b| b <= b' ') {
                return Err(ValidationError::new(
                    at("uri"),
                    "must start with / and have no spaces or control characters (at most 4096 bytes)",
                ));
            }
        }
        let mut regex_uri = Vec::new();
        if let Some(list) = &raw.regex_uri {
            if list.is_empty() || list.len() % 2 != 0 {
                return Err(ValidationError::new(
                    at("regex_uri"),
                    "must be pairs of [regex, replacement]",
                ));
            }
            for (i, pair) in list.chunks(2).enumerate() {
                let re = regex::RegexBuilder::new(&pair[0])
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| {
                        ValidationError::new(
                            format!("{within}.regex_uri[{}]", 2 * i),
                            e.to_string(),
                        )
                    })?;
                regex_uri.push((re, pair[1].clone()));
            }
        }
        if let Some(host) = &raw.host {
            let valid = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'));
            if !valid {
                return Err(ValidationError::new(
                    at("host"),
                    "must be a host name or address, with an optional :port",
                ));
            }
        }
        let method = match &raw.method {
            Some(m) if METHODS.contains(&m.as_str()) => Some(
                http::Method::from_bytes(m.as_bytes())
                    .map_err(|_| ValidationError::new(at("method"), "is not a valid method"))?,
            ),
            Some(_) => {
                return Err(ValidationError::new(
                    at("method"),
                    format!("must be one of {}", METHODS.join(", ")),
                ))
            }
            None => None,
        };
        let (set, add, remove) = match &raw.headers {
            Some(h) => parse_headers(&within, h)?,
            None => Default::default(),
        };
        Ok(ProxyRewrite {
            uri: raw.uri,
            regex_uri,
            host: raw.host,
            method,
            set,
            add,
            remove,
            use_real_request_uri_unsafe: raw.use_real_request_uri_unsafe,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configs() {
        let p = ProxyRewrite::parse(&json!({
            "uri": "/test/home.html", "host": "iresty.com", "method": "POST",
            "headers": {"set": {"X-Api-Version": "v1"}, "add": {"X-Via": "gw"}, "remove": ["User-Agent"]}
        }))
        .unwrap();
        assert_eq!(p.set[0].0, "x-api-version");
        assert_eq!(p.add[0].1, "gw");
        assert_eq!(p.remove[0], "user-agent");
        let flat = ProxyRewrite::parse(&json!({"headers": {"X-A": "1", "X-B": ""}})).unwrap();
        assert_eq!(flat.set.len(), 1);
        assert_eq!(flat.remove[0], "x-b");
        let re =
            ProxyRewrite::parse(&json!({"regex_uri": ["^/a/(.*)", "/b/$1", "^/c", "/d"]})).unwrap();
        assert_eq!(re.regex_uri.len(), 2);
        for (bad, field) in [
            (json!({"uri": "x"}), "plugins.proxy-rewrite.uri"),
            (
                json!({"regex_uri": ["^/a"]}),
                "plugins.proxy-rewrite.regex_uri",
            ),
            (
                json!({"regex_uri": ["(", "/x"]}),
                "plugins.proxy-rewrite.regex_uri[0]",
            ),
            (json!({"method": "BREW"}), "plugins.proxy-rewrite.method"),
            (json!({"host": "a b"}), "plugins.proxy-rewrite.host"),
            (
                json!({"headers": {"set": {"X-A": "1\r\nX-B: 2"}}}),
                "plugins.proxy-rewrite.headers.set.X-A",
            ),
            (
                json!({"headers": {"set": {"bad name": "1"}}}),
                "plugins.proxy-rewrite.headers.set.bad name",
            ),
            (
                json!({"headers": {"set": {}, "move": {}}}),
                "plugins.proxy-rewrite.headers.move",
            ),
            (json!({"scheme": "https"}), "plugins.proxy-rewrite.scheme"),
        ] {
            assert_eq!(ProxyRewrite::parse(&bad).unwrap_err().field, field, "{bad}");
        }
    }
}
