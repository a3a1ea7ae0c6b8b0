//! The `cors` plugin (APISIX): answers preflight requests and adds the CORS headers to
//! responses for allowed origins. Values are sent as configured; `**` means "whatever the
//! request asks" (its origin, every method, the headers it names), as APISIX does.
use crate::codec::from_value;
use crate::ValidationError;
use regex::Regex;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

pub const NAME: &str = "cors";

/// What APISIX sends for `allow_methods: "**"`.
pub const ALL_METHODS: &str = "GET,POST,PUT,DELETE,PATCH,HEAD,OPTIONS,CONNECT,TRACE";

#[derive(Debug, Clone)]
pub enum Origins {
    /// One value (`*`, `null` or an origin), sent as it is whatever the request's origin:
    /// APISIX compares only lists, and the browser compares the rest.
    Literal(String),
    /// `**`: the request's own origin.
    Echo,
    /// Any of these (`scheme://host[:port]`), echoed when the request's origin is one.
    List(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Cors {
    pub allow_origins: Origins,
    /// When given, the only test of an origin (`allow_origins` is then ignored).
    pub allow_origins_by_regex: Vec<Regex>,
    /// Names of origin lists in the plugin's metadata, tried first.
    pub allow_origins_by_metadata: Vec<String>,
    /// `Vary: Origin` is added unless `allow_origins` is `*`.
    pub vary: bool,
    pub allow_methods: String,
    /// `None`: `**`, the request's `Access-Control-Request-Headers`.
    pub allow_headers: Option<String>,
    pub expose_headers: Option<String>,
    pub max_age: i64,
    pub allow_credential: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    allow_origins: Option<String>,
    allow_methods: Option<String>,
    allow_headers: Option<String>,
    expose_headers: Option<String>,
    max_age: Option<i64>,
    #[serde(default)]
    allow_credential: bool,
    allow_origins_by_regex: Option<Vec<String>>,
    /// Names of the origin lists in the `cors` plugin metadata's `allow_origins`.
    allow_origins_by_metadata: Option<Vec<String>>,
}

fn header_safe(field: &str, s: &str) -> Result<(), ValidationError> {
    if s.bytes().any(|b| b < b' ' || b == 0x7f) {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

impl Cors {
    pub fn parse(value: &Value) -> Result<Cors, ValidationError> {
        let within = format!("plugins.{NAME}");
        let raw: Raw = from_value(value).map_err(|e| e.within(&within))?;
        let at = |f: &str| format!("{within}.{f}");
        let origins = raw.allow_origins.unwrap_or_else(|| "*".into());
        let methods = raw.allow_methods.unwrap_or_else(|| "*".into());
        let headers = raw.allow_headers.unwrap_or_else(|| "*".into());
        for (f, v) in [
            ("allow_origins", Some(&origins)),
            ("allow_methods", Some(&methods)),
            ("allow_headers", Some(&headers)),
            ("expose_headers", raw.expose_headers.as_ref()),
        ] {
            if let Some(v) = v {
                header_safe(&at(f), v)?;
                // Browsers refuse credentials with a wildcard, so APISIX refuses the config.
                if raw.allow_credential && v == "*" {
                    return Err(ValidationError::new(
                        at(f),
                        "cannot be '*' when allow_credential is true (use '**' or a list)",
                    ));
                }
            }
        }
        let allow_origins = match origins.as_str() {
            "**" => Origins::Echo,
            one if !one.contains(',') => Origins::Literal(one.to_string()),
            list => {
                let list: Vec<String> = list
                    .split(',')
                    .map(|o| o.trim().to_string())
                    .filter(|o| !o.is_empty())
                    .collect();
                if list.is_empty() {
                    return Err(ValidationError::new(
                        at("allow_origins"),
                        "must not be empty",
                    ));
                }
                Origins::List(list)
            }
        };
        let mut allow_origins_by_regex = Vec::new();
        for (i, re) in raw.allow_origins_by_regex.iter().flatten().enumerate() {
            allow_origins_by_regex.push(
                regex::RegexBuilder::new(re)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| {
                        ValidationError::new(
                            format!("{within}.allow_origins_by_regex[{i}]"),
                            e.to_string(),
                        )
                    })?,
            );
        }
        Ok(Cors {
            vary: origins != "*",
            allow_origins,
            allow_origins_by_regex,
            allow_origins_by_metadata: raw.allow_origins_by_metadata.unwrap_or_default(),
            allow_methods: if methods == "**" {
                ALL_METHODS.into()
            } else {
                methods
            },
            allow_headers: (headers != "**").then_some(headers),
            expose_headers: raw.expose_headers.filter(|e| !e.is_empty()),
            max_age: raw.max_age.unwrap_or(5),
            allow_credential: raw.allow_credential,
        })
    }

    /// The `Access-Control-Allow-Origin` for a request from `origin`, if it is allowed.
    pub fn allowed_origin<'a>(&'a self, origin: Option<&'a str>) -> Option<&'a str> {
        if !self.allow_origins_by_regex.is_empty() {
            let o = origin?;
            return self
                .allow_origins_by_regex
                .iter()
                .any(|re| re.is_match(o))
                .then_some(o);
        }
        match (&self.allow_origins, origin) {
            (Origins::Literal(v), _) => Some(v),
            (Origins::Echo, Some(o)) => Some(o),
            (Origins::Echo, None) => Some("*"),
            (Origins::List(l), Some(o)) => l.iter().any(|a| a == o).then_some(o),
            (Origins::List(_), None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn origins() {
        let any = Cors::parse(&json!({})).unwrap();
        assert_eq!(any.allowed_origin(Some("http://a.com")), Some("*"));
        assert_eq!(any.max_age, 5);
        assert_eq!(any.allow_methods, "*");
        assert!(!any.vary);
        let list = Cors::parse(&json!({
            "allow_origins": "http://a.com,https://b.com:8443",
            "allow_credential": true, "allow_methods": "GET,POST", "allow_headers": "**"
        }))
        .unwrap();
        for (origin, want) in [
            ("http://a.com", Some("http://a.com")),
            ("https://b.com:8443", Some("https://b.com:8443")),
            ("http://evil.com", None),
            ("http://a.com.evil.com", None),
        ] {
            assert_eq!(list.allowed_origin(Some(origin)), want, "{origin}");
        }
        assert_eq!(list.allowed_origin(None), None);
        assert!(list.allow_headers.is_none());
        assert!(list.vary);
        let re = Cors::parse(&json!({
            "allow_origins": "http://a.com",
            "allow_origins_by_regex": ["^https://.*\\.example\\.org$"],
        }))
        .unwrap();
        assert_eq!(
            re.allowed_origin(Some("https://x.example.org")),
            Some("https://x.example.org")
        );
        assert_eq!(
            re.allowed_origin(Some("http://a.com")),
            None,
            "regexes replace the list"
        );
        let one = Cors::parse(&json!({"allow_origins": "http://a.com"})).unwrap();
        assert_eq!(
            one.allowed_origin(Some("http://b.com")),
            Some("http://a.com")
        );
        let echo = Cors::parse(&json!({"allow_origins": "**", "allow_methods": "**"})).unwrap();
        assert_eq!(
            echo.allowed_origin(Some("http://z.io")),
            Some("http://z.io")
        );
        assert_eq!(echo.allow_methods, ALL_METHODS);
    }

    #[test]
    fn refuses_bad_configs() {
        for (bad, field) in [
            (
                json!({"allow_credential": true}),
                "plugins.cors.allow_origins",
            ),
            (
                json!({"allow_credential": true, "allow_origins": "http://a.com"}),
                "plugins.cors.allow_methods",
            ),
            (json!({"allow_origins": ","}), "plugins.cors.allow_origins"),
            (
                json!({"allow_origins_by_regex": ["("]}),
                "plugins.cors.allow_origins_by_regex[0]",
            ),
            (json!({"max_age": "5"}), "plugins.cors.max_age"),
            (
                json!({"allow_headers": "a\r\nb"}),
                "plugins.cors.allow_headers",
            ),
        ] {
            assert_eq!(Cors::parse(&bad).unwrap_err().field, field, "{bad}");
        }
    }
}
