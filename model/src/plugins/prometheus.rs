//! The `prometheus` plugin (APISIX): the requests of the routes (or global rules) that
//! carry it are counted in the `apisix_*` metrics; `prefer_name` labels them with route
//! and service names instead of ids.
use crate::codec::from_value;
use crate::ValidationError;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

pub const NAME: &str = "prometheus";

/// APISIX's default `export_uri`, served by the status listener and by any route with
/// the `public-api` plugin (which needs no `prometheus` beside it).
pub const EXPORT_URI: &str = "/apisix/prometheus/metrics";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prometheus {
    pub prefer_name: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    prefer_name: Option<bool>,
}

impl Prometheus {
    pub fn parse(value: &Value) -> Result<Prometheus, ValidationError> {
        let within = format!("plugins.{NAME}");
        let raw: Raw = from_value(value).map_err(|e| e.within(&within))?;
        Ok(Prometheus {
            prefer_name: raw.prefer_name.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configs() {
        assert!(!Prometheus::parse(&json!({})).unwrap().prefer_name);
        assert!(
            Prometheus::parse(&json!({"prefer_name": true}))
                .unwrap()
                .prefer_name
        );
        for (v, field) in [
            (
                json!({"prefer_name": "yes"}),
                "plugins.prometheus.prefer_name",
            ),
            (json!({"export_uri": "/m"}), "plugins.prometheus"),
        ] {
            let e = Prometheus::parse(&v).unwrap_err();
            assert!(e.to_string().contains(field), "{v}: {e}");
        }
    }
}
