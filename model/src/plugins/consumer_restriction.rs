//! The `consumer-restriction` plugin (APISIX): lets only, or all but, the listed consumers
//! (or routes, or services) through, optionally per HTTP method.
use crate::codec::from_value;
use crate::ValidationError;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

pub const NAME: &str = "consumer-restriction";

/// What the lists name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    ConsumerName,
    ServiceId,
    RouteId,
    ConsumerGroupId,
}

impl Subject {
    pub fn as_str(self) -> &'static str {
        match self {
            Subject::ConsumerName => "consumer_name",
            Subject::ServiceId => "service_id",
            Subject::RouteId => "route_id",
            Subject::ConsumerGroupId => "consumer_group_id",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ConsumerRestriction {
    pub subject: Subject,
    pub whitelist: Vec<String>,
    pub blacklist: Vec<String>,
    /// `allowed_by_methods`: (user, methods) for users not in the whitelist.
    pub by_methods: Vec<(String, Vec<String>)>,
    pub rejected_code: u16,
    pub rejected_msg: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    #[serde(rename = "type")]
    subject: Option<Subject>,
    whitelist: Option<Vec<String>>,
    blacklist: Option<Vec<String>>,
    allowed_by_methods: Option<Vec<RawByMethod>>,
    rejected_code: Option<u16>,
    rejected_msg: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawByMethod {
    user: String,
    #[serde(default)]
    methods: Vec<String>,
}

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE",
];

impl ConsumerRestriction {
    pub fn parse(value: &Value) -> Result<ConsumerRestriction, ValidationError> {
        let within = format!("plugins.{NAME}");
        let raw: Raw = from_value(value).map_err(|e| e.within(&within))?;
        let at = |f: &str| format!("{within}.{f}");
        for (field, list) in [("whitelist", &raw.whitelist), ("blacklist", &raw.blacklist)] {
            if list.as_ref().is_some_and(|l| l.is_empty()) {
                return Err(ValidationError::new(at(field), "must not be empty"));
            }
        }
        if raw
            .allowed_by_methods
            .as_ref()
            .is_some_and(|l| l.is_empty())
        {
            return Err(ValidationError::new(
                at("allowed_by_methods"),
                "must not be empty",
            ));
        }
        if raw.whitelist.is_none() && raw.blacklist.is_none() && raw.allowed_by_methods.is_none() {
            return Err(ValidationError::new(
                within,
                "give whitelist, blacklist or allowed_by_methods",
            ));
        }
        let mut by_methods = Vec::new();
        for (i, m) in raw.allowed_by_methods.into_iter().flatten().enumerate() {
            if let Some(bad) = m
                .methods
                .iter()
                .position(|x| !METHODS.contains(&x.as_str()))
            {
                return Err(ValidationError::new(
                    format!("{within}.allowed_by_methods[{i}].methods[{bad}]"),
                    format!("must be one of {}", METHODS.join(", ")),
                ));
            }
            by_methods.push((m.user, m.methods));
        }
        let rejected_code = raw.rejected_code.unwrap_or(403);
        if !(200..=599).contains(&rejected_code) {
            return Err(ValidationError::new(
                at("rejected_code"),
                "must be an HTTP status from 200 to 599",
            ));
        }
        Ok(ConsumerRestriction {
            subject: raw.subject.unwrap_or(Subject::ConsumerName),
            whitelist: raw.whitelist.unwrap_or_default(),
            blacklist: raw.blacklist.unwrap_or_default(),
            by_methods,
            rejected_code,
            rejected_msg: raw.rejected_msg,
        })
    }

    /// Whether a request whose subject is `value`, with `method`, may pass (APISIX's
    /// order: the blacklist first, then the whitelist, then `allowed_by_methods` for
    /// those the whitelist did not let through).
    pub fn allows(&self, value: &str, method: &str) -> bool {
        if self.blacklist.iter().any(|b| b == value) {
            return false;
        }
        let whitelisted = self.whitelist.iter().any(|w| w == value);
        let mut block = !self.whitelist.is_empty() && !whitelisted;
        if !self.by_methods.is_empty() && !whitelisted {
            let allowed = self
                .by_methods
                .iter()
                .any(|(user, methods)| user == value && methods.iter().any(|m| m == method));
            block |= !allowed;
        }
        !block
    }

    pub fn message(&self) -> String {
        self.rejected_msg
            .clone()
            .unwrap_or_else(|| format!("The {} is forbidden.", self.subject.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_and_methods() {
        let parse = |v| ConsumerRestriction::parse(&v).unwrap();
        let white = parse(json!({"whitelist": ["jack1"]}));
        let black = parse(json!({"blacklist": ["jack1"], "rejected_code": 401}));
        let methods =
            parse(json!({"allowed_by_methods": [{"user": "jack1", "methods": ["POST"]}]}));
        let both = parse(
            json!({"whitelist": ["jack2"], "allowed_by_methods": [{"user": "jack1", "methods": ["GET"]}]}),
        );
        for (conf, value, method, allowed) in [
            (&white, "jack1", "GET", true),
            (&white, "jack2", "GET", false),
            (&black, "jack1", "GET", false),
            (&black, "jack2", "GET", true),
            (&methods, "jack1", "POST", true),
            (&methods, "jack1", "GET", false),
            (&methods, "jack2", "POST", false),
            (&both, "jack2", "DELETE", true),
            (&both, "jack1", "GET", false),
            (&both, "jack1", "POST", false),
        ] {
            assert_eq!(conf.allows(value, method), allowed, "{value} {method}");
        }
        assert_eq!(white.message(), "The consumer_name is forbidden.");
        assert_eq!(black.rejected_code, 401);
        let route = parse(json!({"type": "route_id", "blacklist": ["1"], "rejected_msg": "no"}));
        assert_eq!(
            (route.subject, route.message().as_str()),
            (Subject::RouteId, "no")
        );

        for (bad, field) in [
            (json!({}), "plugins.consumer-restriction"),
            (
                json!({"whitelist": []}),
                "plugins.consumer-restriction.whitelist",
            ),
            (
                json!({"whitelist": ["a"], "type": "user"}),
                "plugins.consumer-restriction.type",
            ),
            (
                json!({"whitelist": ["a"], "rejected_code": 99}),
                "plugins.consumer-restriction.rejected_code",
            ),
            (
                json!({"allowed_by_methods": [{"user": "a", "methods": ["FETCH"]}]}),
                "plugins.consumer-restriction.allowed_by_methods[0].methods[0]",
            ),
        ] {
            assert_eq!(
                ConsumerRestriction::parse(&bad).unwrap_err().field,
                field,
                "{bad}"
            );
        }
    }
}
