//! The `response-rewrite` plugin (APISIX): changes the status, headers and body of the
//! response the client gets, optionally only when `vars` hold.
use crate::codec::from_value;
use crate::vars::Expr;
use crate::ValidationError;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

pub const NAME: &str = "response-rewrite";

#[derive(Debug, Clone)]
pub struct ResponseRewrite {
    pub status_code: Option<u16>,
    /// The new body, decoded already when `body_base64` is set.
    pub body: Option<bytes::Bytes>,
    /// Header values may hold request variables (`$remote_addr`).
    pub add: Vec<(http::HeaderName, String)>,
    pub set: Vec<(http::HeaderName, String)>,
    pub remove: Vec<http::HeaderName>,
    /// Evaluated on the response: `status` and `upstream_http_*` are the response's, the
    /// other variables the request's.
    pub vars: Option<Expr>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    status_code: Option<u16>,
    body: Option<String>,
    #[serde(default)]
    body_base64: bool,
    headers: Option<Map<String, Value>>,
    vars: Option<Value>,
    filters: Option<Value>,
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
        return Err(ValidationError::new(field, "must not hold CR, LF or NUL"));
    }
    Ok(s)
}

impl ResponseRewrite {
    pub fn parse(value: &Value) -> Result<ResponseRewrite, ValidationError> {
        use base64::Engine;
        let within = format!("plugins.{NAME}");
        let at = |f: &str| format!("{within}.{f}");
        let raw: Raw = from_value(value).map_err(|e| e.within(&within))?;
        if raw.filters.is_some() {
            return Err(ValidationError::new(
                at("filters"),
                "is not supported yet (body regex filters); use body",
            ));
        }
        if let Some(code) = raw.status_code {
            if !(200..=598).contains(&code) {
                return Err(ValidationError::new(
                    at("status_code"),
                    "must be an HTTP status from 200 to 598",
                ));
            }
        }
        let body = match (raw.body, raw.body_base64) {
            (None, true) => {
                return Err(ValidationError::new(
                    at("body"),
                    "is required when body_base64 is true",
                ))
            }
            (None, false) => None,
            (Some(b), false) => Some(bytes::Bytes::from(b)),
            (Some(b), true) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b.as_bytes())
                    .map_err(|_| {
                        ValidationError::new(at("body"), "must be base64 (body_base64 is true)")
                    })?
                    .into(),
            ),
        };
        let mut out = ResponseRewrite {
            status_code: raw.status_code,
            body,
            add: Vec::new(),
            set: Vec::new(),
            remove: Vec::new(),
            vars: None,
        };
        let headers = raw.headers.unwrap_or_default();
        let structured = ["add", "set", "remove"]
            .iter()
            .any(|k| headers.contains_key(*k));
        for (name, v) in &headers {
            let field = at(&format!("headers.{name}"));
            if !structured {
                // APISIX's first form: `{"X-Name": "value"}`; an empty value removes.
                let value = header_value(&field, v)?;
                let name = header_name(&field, name)?;
                match value.is_empty() {
                    true => out.remove.push(name),
                    false => out.set.push((name, value)),
                }
                continue;
            }
            match name.as_str() {
                "add" => {
                    let list = v.as_array().ok_or_else(|| {
                        ValidationError::new(&field, "must be an array of \"Name: value\"")
                    })?;
                    for (i, item) in list.iter().enumerate() {
                        let f = format!("{field}[{i}]");
                        let (n, val) = item
                            .as_str()
                            .and_then(|s| s.split_once(':'))
                            .ok_or_else(|| ValidationError::new(&f, "must be \"Name: value\""))?;
                        let val = header_value(&f, &Value::String(val.trim().to_string()))?;
                        out.add.push((header_name(&f, n.trim())?, val));
                    }
                }
                "set" => {
                    let map = v.as_object().ok_or_else(|| {
                        ValidationError::new(&field, "must be an object of name: value")
                    })?;
                    for (n, val) in map {
                        let f = format!("{field}.{n}");
                        out.set.push((header_name(&f, n)?, header_value(&f, val)?));
                    }
                }
                "remove" => {
                    let list = v.as_array().ok_or_else(|| {
                        ValidationError::new(&field, "must be an array of header names")
                    })?;
                    for (i, item) in list.iter().enumerate() {
                        let f = format!("{field}[{i}]");
                        let n = item
                            .as_str()
                            .ok_or_else(|| ValidationError::new(&f, "must be a header name"))?;
                        out.remove.push(header_name(&f, n)?);
                    }
                }
                _ => {
                    return Err(ValidationError::new(
                        field,
                        "unknown operation (add, set, remove)",
                    ))
                }
            }
        }
        if let Some(v) = raw.vars {
            out.vars = Some(Expr::parse(&v).map_err(|(path, msg)| {
                ValidationError::new(format!("{}{path}", at("vars")), msg)
            })?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configs() {
        let r = ResponseRewrite::parse(&json!({
            "body": "{\"code\":\"ok\",\"message\":\"new json body\"}\n",
            "headers": {"set": {"X-Server-id": 3, "X-Server-status": "on", "X-Server-balancer-addr": "$balancer_ip:$balancer_port"},
                        "add": ["X-A: 1"], "remove": ["Server"]},
            "vars": [["status", "==", 200]]
        }))
        .unwrap();
        assert_eq!((r.set.len(), r.add.len(), r.remove.len()), (3, 1, 1));
        assert!(r.vars.is_some());
        let legacy = ResponseRewrite::parse(
            &json!({"headers": {"X-A": "1", "Server": ""}, "status_code": 403}),
        )
        .unwrap();
        assert_eq!(
            (legacy.set.len(), legacy.remove.len(), legacy.status_code),
            (1, 1, Some(403))
        );
        let b64 =
            ResponseRewrite::parse(&json!({"body": "aGVsbG8=", "body_base64": true})).unwrap();
        assert_eq!(b64.body.unwrap(), "hello");
        for (bad, field) in [
            (
                json!({"status_code": 700}),
                "plugins.response-rewrite.status_code",
            ),
            (
                json!({"body_base64": true}),
                "plugins.response-rewrite.body",
            ),
            (
                json!({"body": "%%", "body_base64": true}),
                "plugins.response-rewrite.body",
            ),
            (
                json!({"headers": {"set": {"a b": "1"}}}),
                "plugins.response-rewrite.headers.set.a b",
            ),
            (
                json!({"headers": {"add": ["nocolon"]}}),
                "plugins.response-rewrite.headers.add[0]",
            ),
            (
                json!({"headers": {"set": {"X": "a\r\nb"}}}),
                "plugins.response-rewrite.headers.set.X",
            ),
            (
                json!({"headers": {"add": [], "bad": 1}}),
                "plugins.response-rewrite.headers.bad",
            ),
            (
                json!({"vars": [["status", "~~", 1]]}),
                "plugins.response-rewrite.vars[0]",
            ),
            (json!({"filters": []}), "plugins.response-rewrite.filters"),
        ] {
            let e = ResponseRewrite::parse(&bad).unwrap_err();
            assert!(e.field.starts_with(field), "{bad}: {} vs {field}", e.field);
        }
    }
}
