//! The `referer-restriction` plugin (APISIX): lets only, or all but, requests whose
//! `Referer` names one of the listed hosts (`*.example.com` for any subdomain) through.
use crate::codec::from_value;
use crate::ValidationError;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

pub const NAME: &str = "referer-restriction";

#[derive(Debug, Clone)]
pub struct RefererRestriction {
    /// `whitelist` (true): only listed hosts pass; `blacklist` (false): they do not.
    pub allow: bool,
    /// Lower case; a leading `*.` matches one or more labels.
    pub hosts: Vec<String>,
    /// A request without a `Referer` (or with one that names no host) passes.
    pub bypass_missing: bool,
    pub message: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    whitelist: Option<Vec<String>>,
    blacklist: Option<Vec<String>>,
    #[serde(default)]
    bypass_missing: bool,
    message: Option<String>,
}

fn valid_host_pattern(p: &str) -> bool {
    let bare = p.strip_prefix('*').unwrap_or(p);
    !bare.is_empty()
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b))
}

impl RefererRestriction {
    pub fn parse(value: &Value) -> Result<RefererRestriction, ValidationError> {
        let within = format!("plugins.{NAME}");
        let raw: Raw = from_value(value).map_err(|e| e.within(&within))?;
        let (allow, field, list) = match (raw.whitelist, raw.blacklist) {
            (Some(l), None) => (true, "whitelist", l),
            (None, Some(l)) => (false, "blacklist", l),
            _ => {
                return Err(ValidationError::new(
                    within,
                    "give exactly one of whitelist or blacklist",
                ))
            }
        };
        if list.is_empty() {
            return Err(ValidationError::new(
                format!("{within}.{field}"),
                "must not be empty",
            ));
        }
        if let Some(i) = list.iter().position(|h| !valid_host_pattern(h)) {
            return Err(ValidationError::new(
                format!("{within}.{field}[{i}]"),
                "must be a host name, or *.domain for its subdomains",
            ));
        }
        let message = raw
            .message
            .unwrap_or_else(|| "Your referer host is not allowed".into());
        if message.is_empty() || message.len() > 1024 {
            return Err(ValidationError::new(
                format!("{within}.message"),
                "must be 1 to 1024 characters long",
            ));
        }
        Ok(RefererRestriction {
            allow,
            hosts: list.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
            bypass_missing: raw.bypass_missing,
            message,
        })
    }

    /// Whether a request with this `Referer` passes.
    pub fn allows(&self, referer: Option<&str>) -> bool {
        let Some(host) = referer.and_then(referer_host) else {
            return self.bypass_missing;
        };
        let listed = self.hosts.iter().any(|p| match p.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => *p == host,
        });
        listed == self.allow
    }
}

/// The host of an `http(s)://host[:port]/…` referer, lower case (APISIX reads it with
/// `^https?://([^:/]+)`).
fn referer_host(referer: &str) -> Option<String> {
    // Compared as bytes: a multi-byte character right after the scheme must not make
    // the referer look absent (with `bypass_missing`, that would let it through).
    let starts = |scheme: &str| {
        referer
            .as_bytes()
            .get(..scheme.len())
            .is_some_and(|b| b.eq_ignore_ascii_case(scheme.as_bytes()))
    };
    let rest = if starts("https://") {
        &referer[8..]
    } else if starts("http://") {
        &referer[7..]
    } else {
        return None;
    };
    let end = rest.find([':', '/']).unwrap_or(rest.len());
    (end > 0).then(|| rest[..end].to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hosts() {
        let white =
            RefererRestriction::parse(&json!({"whitelist": ["xx.com", "*.xx.com"]})).unwrap();
        let black =
            RefererRestriction::parse(&json!({"blacklist": ["bad.org"], "bypass_missing": true}))
                .unwrap();
        for (conf, referer, passes) in [
            (&white, Some("http://xx.com/x"), true),
            (&white, Some("https://A.b.XX.com:8443/p"), true),
            (&white, Some("http://yy.com"), false),
            (&white, Some("http://xxx.com"), false),
            (&white, Some("http://x.com.evil/xx.com"), false),
            (&white, None, false),
            (&white, Some("ftp://xx.com"), false),
            (&black, Some("http://bad.org"), false),
            (&black, Some("http://good.org"), true),
            (&black, None, true),
            (&black, Some("garbage"), true),
            // A multi-byte host right after the scheme is still read.
            (&white, Some("http://é.xx.com/"), true),
            (&black, Some("http://é.bad.org"), true),
        ] {
            assert_eq!(conf.allows(referer), passes, "{referer:?}");
        }
        for (bad, field) in [
            (json!({}), "plugins.referer-restriction"),
            (
                json!({"whitelist": []}),
                "plugins.referer-restriction.whitelist",
            ),
            (
                json!({"whitelist": ["a/b"]}),
                "plugins.referer-restriction.whitelist[0]",
            ),
        ] {
            assert_eq!(
                RefererRestriction::parse(&bad).unwrap_err().field,
                field,
                "{bad}"
            );
        }
    }
}
