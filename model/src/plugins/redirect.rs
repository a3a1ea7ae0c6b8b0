//! The `redirect` plugin (APISIX): answer with a redirect instead of proxying, to force
//! HTTPS (`http_to_https`) or move a path (`uri`, `regex_uri`).
use crate::codec::from_value;
use crate::ValidationError;
use regex::Regex;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

/// The plugin's name under `plugins`.
pub const NAME: &str = "redirect";

/// Where a redirect points.
#[derive(Debug, Clone)]
pub enum Target {
    /// The same host and request URI over `https`.
    Https,
    /// A URI template; `$name` is replaced by the request variable (`$uri`, `$host`, …).
    Uri(String),
    /// The request's path rewritten by a regex; `$1`… in the template are its groups.
    /// A path the regex does not match is proxied as if there were no plugin.
    RegexUri(Regex, String),
}

#[derive(Debug, Clone)]
pub struct Redirect {
    pub target: Target,
    pub ret_code: u16,
    /// Append the request's query string to the target.
    pub append_query_string: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    #[serde(default)]
    http_to_https: bool,
    uri: Option<String>,
    regex_uri: Option<Vec<String>>,
    ret_code: Option<u16>,
    #[serde(default)]
    append_query_string: bool,
    #[serde(default)]
    encode_uri: bool,
    /// APISIX's plugin-level switch, accepted for stored data.
    #[serde(rename = "_meta")]
    _meta: Option<Value>,
}

impl Redirect {
    /// Parses and validates the plugin's configuration (APISIX's schema: exactly one of
    /// `http_to_https`, `uri`, `regex_uri`; `ret_code` defaults to 301 for
    /// `http_to_https` and 302 otherwise).
    pub fn parse(value: &Value) -> Result<Redirect, ValidationError> {
        let within = format!("plugins.{NAME}");
        if !value.is_object() {
            return Err(ValidationError::new(within, "must be an object"));
        }
        let raw: Raw = from_value(value).map_err(|e| e.within(&within))?;
        let at = |f: &str| format!("{within}.{f}");
        let given = [
            raw.http_to_https,
            raw.uri.is_some(),
            raw.regex_uri.is_some(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        if given != 1 {
            return Err(ValidationError::new(
                within,
                "give exactly one of http_to_https (true), uri or regex_uri",
            ));
        }
        if raw.encode_uri {
            return Err(ValidationError::new(
                at("encode_uri"),
                "encoding the target URI is not supported yet",
            ));
        }
        let target = if raw.http_to_https {
            Target::Https
        } else if let Some(uri) = raw.uri {
            if uri.is_empty() || uri.chars().any(|c| c.is_control() || c == ' ') {
                return Err(ValidationError::new(
                    at("uri"),
                    "must be a non-empty URI without spaces",
                ));
            }
            Target::Uri(uri)
        } else {
            let parts = raw.regex_uri.unwrap_or_default();
            let [re, template] = parts.as_slice() else {
                return Err(ValidationError::new(
                    at("regex_uri"),
                    "must be [regex, replacement]",
                ));
            };
            let re = Regex::new(re)
                .map_err(|e| ValidationError::new(at("regex_uri[0]"), format!("{e}")))?;
            Target::RegexUri(re, template.clone())
        };
        let ret_code = raw.ret_code.unwrap_or(match target {
            Target::Https => 301,
            _ => 302,
        });
        if !(200..=599).contains(&ret_code) {
            return Err(ValidationError::new(
                at("ret_code"),
                "must be an HTTP status from 200 to 599",
            ));
        }
        Ok(Redirect {
            target,
            ret_code,
            append_query_string: raw.append_query_string,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table() {
        let ok = [
            (json!({"http_to_https": true}), 301),
            (json!({"http_to_https": true, "ret_code": 302}), 302),
            (json!({"uri": "/new$uri"}), 302),
            (
                json!({"regex_uri": ["^/a/(.*)", "/b/$1"], "ret_code": 308}),
                308,
            ),
            (json!({"uri": "/x", "append_query_string": true}), 302),
        ];
        for (v, code) in ok {
            let r = Redirect::parse(&v).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert_eq!(r.ret_code, code, "{v}");
        }
        let bad = [
            (json!({}), "plugins.redirect"),
            (json!({"http_to_https": false}), "plugins.redirect"),
            (
                json!({"http_to_https": true, "uri": "/x"}),
                "plugins.redirect",
            ),
            (
                json!({"uri": "/x", "ret_code": 99}),
                "plugins.redirect.ret_code",
            ),
            (json!({"regex_uri": ["("]}), "plugins.redirect.regex_uri"),
            (
                json!({"regex_uri": ["(", "/x"]}),
                "plugins.redirect.regex_uri[0]",
            ),
            (
                json!({"uri": "/x", "encode_uri": true}),
                "plugins.redirect.encode_uri",
            ),
            (json!({"uri": "/x", "bogus": 1}), "plugins.redirect"),
            (json!("x"), "plugins.redirect"),
        ];
        for (v, field) in bad {
            let e = Redirect::parse(&v).expect_err(&v.to_string());
            assert!(e.field.starts_with(field), "{v}: {e:?}");
        }
    }
}
