//! The `ua-restriction` plugin (APISIX): lets only, or all but, user agents matching the
//! listed regular expressions through.
use crate::codec::from_value;
use crate::ValidationError;
use regex::Regex;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

pub const NAME: &str = "ua-restriction";

#[derive(Debug, Clone)]
pub struct UaRestriction {
    /// `allowlist` (true): only matching agents pass; `denylist` (false): they do not.
    pub allow: bool,
    pub patterns: Vec<Regex>,
    /// A request without `User-Agent` passes.
    pub bypass_missing: bool,
    pub message: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    allowlist: Option<Vec<String>>,
    denylist: Option<Vec<String>>,
    #[serde(default)]
    bypass_missing: bool,
    message: Option<String>,
}

/// As `vars`' regexes: compiled size is bounded, so a pattern cannot take the memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl UaRestriction {
    pub fn parse(value: &Value) -> Result<UaRestriction, ValidationError> {
        let within = format!("plugins.{NAME}");
        let raw: Raw = from_value(value).map_err(|e| e.within(&within))?;
        let (allow, field, list) = match (raw.allowlist, raw.denylist) {
            (Some(l), None) => (true, "allowlist", l),
            (None, Some(l)) => (false, "denylist", l),
            _ => {
                return Err(ValidationError::new(
                    within,
                    "give exactly one of allowlist or denylist",
                ))
            }
        };
        if list.is_empty() {
            return Err(ValidationError::new(
                format!("{within}.{field}"),
                "must not be empty",
            ));
        }
        let patterns = list
            .iter()
            .enumerate()
            .map(|(i, p)| {
                regex::RegexBuilder::new(p)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| {
                        ValidationError::new(format!("{within}.{field}[{i}]"), e.to_string())
                    })
            })
            .collect::<Result<_, _>>()?;
        let message = raw.message.unwrap_or_else(|| "Not allowed".into());
        if message.is_empty() || message.len() > 1024 {
            return Err(ValidationError::new(
                format!("{within}.message"),
                "must be 1 to 1024 characters long",
            ));
        }
        Ok(UaRestriction {
            allow,
            patterns,
            bypass_missing: raw.bypass_missing,
            message,
        })
    }

    /// Whether a request with these `User-Agent` values (none: the header is missing)
    /// passes. Several values: each must pass.
    pub fn allows<'a>(&self, agents: impl IntoIterator<Item = &'a str>) -> bool {
        let mut any = false;
        for ua in agents {
            any = true;
            if self.patterns.iter().any(|p| p.is_match(ua)) != self.allow {
                return false;
            }
        }
        any || self.bypass_missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists() {
        let deny =
            UaRestriction::parse(&json!({"denylist": ["my-bot1", "(Baiduspider|Twitterbot)"]}))
                .unwrap();
        let allow = UaRestriction::parse(&json!({"allowlist": ["^curl/"], "bypass_missing": true}))
            .unwrap();
        for (conf, agents, passes) in [
            (&deny, vec!["Twitterbot/2.0"], false),
            (&deny, vec!["my-bot1"], false),
            (&deny, vec!["curl/8.0"], true),
            (&deny, vec![], false),
            (&deny, vec!["curl/8.0", "my-bot1"], false),
            (&allow, vec!["curl/8.0"], true),
            (&allow, vec!["Mozilla/5.0"], false),
            (&allow, vec![], true),
        ] {
            assert_eq!(conf.allows(agents.iter().copied()), passes, "{agents:?}");
        }
        assert_eq!(deny.message, "Not allowed");
        for (bad, field) in [
            (json!({}), "plugins.ua-restriction"),
            (
                json!({"allowlist": ["a"], "denylist": ["b"]}),
                "plugins.ua-restriction",
            ),
            (json!({"denylist": []}), "plugins.ua-restriction.denylist"),
            (
                json!({"denylist": ["("]}),
                "plugins.ua-restriction.denylist[0]",
            ),
            (
                json!({"denylist": ["a"], "message": ""}),
                "plugins.ua-restriction.message",
            ),
        ] {
            assert_eq!(
                UaRestriction::parse(&bad).unwrap_err().field,
                field,
                "{bad}"
            );
        }
    }
}
