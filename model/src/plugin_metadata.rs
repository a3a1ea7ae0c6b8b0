//! Plugin metadata (`{prefix}/plugin_metadata/{plugin name}`): settings of a plugin shared
//! by every route that uses it, as APISIX keeps them. Only the plugins that read metadata
//! here take any: `cors` (`allow_origins`, named lists of origins that routes pick with
//! `allow_origins_by_metadata`) and `limit-count` (the names of its three headers).
//! APISIX accepts any object for other plugins; here it would be stored and never read,
//! so it is refused.
use crate::codec::from_value;
use crate::plugins::{cors, limit_count, spec};
use crate::{Id, Kind, Resource, ValidationError};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
pub struct PluginMetadata {
    /// The plugin's name (APISIX stores it as the id).
    pub id: Option<Id>,
    pub create_time: Option<u64>,
    pub update_time: Option<u64>,
    #[serde(flatten)]
    pub fields: Map<String, Value>,
    #[serde(skip)]
    pub parsed: Option<Metadata>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metadata {
    /// `allow_origins`: name → comma-separated origins.
    Cors(BTreeMap<String, Vec<String>>),
    LimitCount(LimitCountHeaders),
}

/// The names `limit-count` sends its quota under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitCountHeaders {
    pub limit: http::HeaderName,
    pub remaining: http::HeaderName,
    pub reset: http::HeaderName,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCors {
    allow_origins: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimitCount {
    limit_header: Option<String>,
    remaining_header: Option<String>,
    reset_header: Option<String>,
}

impl Default for LimitCountHeaders {
    fn default() -> LimitCountHeaders {
        LimitCountHeaders {
            limit: http::HeaderName::from_static("x-ratelimit-limit"),
            remaining: http::HeaderName::from_static("x-ratelimit-remaining"),
            reset: http::HeaderName::from_static("x-ratelimit-reset"),
        }
    }
}

fn parse(name: &str, fields: &Map<String, Value>) -> Result<Metadata, ValidationError> {
    let value = Value::Object(fields.clone());
    match name {
        cors::NAME => {
            let raw: RawCors = from_value(&value)?;
            let mut lists = BTreeMap::new();
            for (key, origins) in raw.allow_origins {
                let list: Vec<String> = origins
                    .split(',')
                    .map(|o| o.trim().to_string())
                    .filter(|o| !o.is_empty())
                    .collect();
                if list.is_empty() || origins.bytes().any(|b| b < b' ' || b == 0x7f) {
                    return Err(ValidationError::new(
                        format!("allow_origins.{key}"),
                        "must be a comma-separated list of origins",
                    ));
                }
                lists.insert(key, list);
            }
            Ok(Metadata::Cors(lists))
        }
        limit_count::NAME => {
            let raw: RawLimitCount = from_value(&value)?;
            let header = |field: &str, v: Option<String>, default: http::HeaderName| match v {
                None => Ok(default),
                Some(v) => http::HeaderName::from_bytes(v.as_bytes())
                    .map_err(|_| ValidationError::new(field, "must be a valid header name")),
            };
            let d = LimitCountHeaders::default();
            Ok(Metadata::LimitCount(LimitCountHeaders {
                limit: header("limit_header", raw.limit_header, d.limit)?,
                remaining: header("remaining_header", raw.remaining_header, d.remaining)?,
                reset: header("reset_header", raw.reset_header, d.reset)?,
            }))
        }
        other if spec(other).is_some() => Err(ValidationError::new(
            "id",
            format!("plugin {other} takes no metadata here (only cors and limit-count read any)"),
        )),
        other => Err(ValidationError::new(
            "id",
            format!("invalid plugin name {other:?}: no such plugin"),
        )),
    }
}

impl Resource for PluginMetadata {
    const KIND: Kind = Kind::PluginMetadata;

    fn id(&self) -> Option<&Id> {
        self.id.as_ref()
    }

    fn validate(&self) -> Result<(), ValidationError> {
        Ok(())
    }

    fn parse_plugins(&mut self) -> Result<(), ValidationError> {
        let name = self
            .id
            .as_ref()
            .ok_or_else(|| ValidationError::new("id", "is required: the plugin's name"))?;
        self.parsed = Some(parse(name.as_str(), &self.fields)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode_value;
    use serde_json::json;

    #[test]
    fn metadata_of_the_plugins_that_read_it() {
        let m: PluginMetadata = decode_value(&json!({"id": "cors", "create_time": 1,
            "allow_origins": {"EXAMPLE": "https://a.com, https://b.com"}}))
        .unwrap();
        let Some(Metadata::Cors(lists)) = m.parsed else {
            panic!("cors metadata")
        };
        assert_eq!(lists["EXAMPLE"], ["https://a.com", "https://b.com"]);
        let m: PluginMetadata =
            decode_value(&json!({"id": "limit-count", "limit_header": "X-Limit"})).unwrap();
        let Some(Metadata::LimitCount(h)) = m.parsed else {
            panic!("limit-count metadata")
        };
        assert_eq!(
            (h.limit.as_str(), h.reset.as_str()),
            ("x-limit", "x-ratelimit-reset")
        );
        for (bad, field) in [
            (json!({"id": "key-auth", "x": 1}), "id"),
            (json!({"id": "no-such-plugin"}), "id"),
            (json!({"allow_origins": {}}), "id"),
            (
                json!({"id": "cors", "allow_origins": {"A": ""}}),
                "allow_origins.A",
            ),
            (
                json!({"id": "cors", "allow_origins": {}, "other": 1}),
                "other",
            ),
            (
                json!({"id": "limit-count", "limit_header": "a b"}),
                "limit_header",
            ),
        ] {
            let e = decode_value::<PluginMetadata>(&bad).unwrap_err();
            assert_eq!(e.field, field, "{bad}: {e}");
        }
    }
}
