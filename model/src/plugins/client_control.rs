//! The `client-control` plugin (APISIX): limits on what a client may send on a route,
//! today `max_body_size` (nginx's `client_max_body_size` for that route).
use crate::codec::from_value;
use crate::ValidationError;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

/// The plugin's name under `plugins`.
pub const NAME: &str = "client-control";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientControl {
    /// Most body bytes a request may carry; 0 lifts the gateway's default limit for this
    /// route (as nginx's `client_max_body_size 0`).
    pub max_body_size: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    max_body_size: Option<u64>,
    /// APISIX's plugin-level switch, accepted for stored data.
    #[serde(rename = "_meta")]
    _meta: Option<Value>,
}

impl ClientControl {
    pub fn parse(value: &Value) -> Result<ClientControl, ValidationError> {
        let within = format!("plugins.{NAME}");
        if !value.is_object() {
            return Err(ValidationError::new(within, "must be an object"));
        }
        let raw: Raw = from_value(value).map_err(|e| e.within(&within))?;
        Ok(ClientControl {
            max_body_size: raw.max_body_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configs() {
        let ok = |v: Value, want: Option<u64>| {
            assert_eq!(ClientControl::parse(&v).unwrap().max_body_size, want, "{v}");
        };
        ok(json!({"max_body_size": 1024}), Some(1024));
        ok(json!({"max_body_size": 0}), Some(0));
        ok(json!({}), None);
        for (bad, field) in [
            (
                json!({"max_body_size": -1}),
                "plugins.client-control.max_body_size",
            ),
            (
                json!({"max_body_size": "1m"}),
                "plugins.client-control.max_body_size",
            ),
            (json!({"max_body": 1}), "plugins.client-control"),
            (json!(1), "plugins.client-control"),
        ] {
            let e = ClientControl::parse(&bad).unwrap_err().to_string();
            assert!(e.contains(field), "{bad}: {e}");
        }
    }
}
