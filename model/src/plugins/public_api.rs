//! The `public-api` plugin (APISIX): a route that carries it answers with one of the
//! gateway's own APIs instead of proxying: the one at `uri`, else at the request's path.
//! The only such API here is the Prometheus exposition (`/apisix/prometheus/metrics`).
use crate::codec::from_value;
use crate::ValidationError;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

pub const NAME: &str = "public-api";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublicApi {
    pub uri: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    uri: Option<String>,
}

impl PublicApi {
    pub fn parse(value: &Value) -> Result<PublicApi, ValidationError> {
        let within = format!("plugins.{NAME}");
        let raw: Raw = from_value(value).map_err(|e| e.within(&within))?;
        if let Some(uri) = &raw.uri {
            if !uri.starts_with('/') {
                return Err(ValidationError::new(
                    format!("{within}.uri"),
                    "must start with \"/\"",
                ));
            }
        }
        Ok(PublicApi { uri: raw.uri })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configs() {
        assert_eq!(PublicApi::parse(&json!({})).unwrap().uri, None);
        assert_eq!(
            PublicApi::parse(&json!({"uri": "/apisix/prometheus/metrics"}))
                .unwrap()
                .uri
                .as_deref(),
            Some("/apisix/prometheus/metrics")
        );
        for (v, field) in [
            (json!({"uri": "metrics"}), "plugins.public-api.uri"),
            (json!({"uri": 7}), "plugins.public-api.uri"),
        ] {
            let e = PublicApi::parse(&v).unwrap_err();
            assert!(e.to_string().contains(field), "{v}: {e}");
        }
    }
}
