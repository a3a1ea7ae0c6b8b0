//! The filters of list requests (APISIX v3): `name` and `uri` are unanchored regular
//! expressions searched in the resource's `name` and in its `uri`/`uris`; `label` names a
//! label key the resource must have. Several filters must all hold. Pure: no IO.
use model::ValidationError;
use regex::Regex;
use serde_json::Value;
use std::collections::BTreeMap;

/// The query parameters this module reads.
pub const PARAMS: [&str; 3] = ["name", "label", "uri"];

#[derive(Debug)]
pub struct Filter {
    name: Option<Regex>,
    label: Option<String>,
    uri: Option<Regex>,
}

/// Patterns come from clients: bound what one may cost to compile.
const MAX_PATTERN: usize = 256;

impl Filter {
    /// `None` when the request filters nothing.
    pub fn parse(params: &BTreeMap<String, String>) -> Result<Option<Filter>, ValidationError> {
        let pattern = |field: &str| -> Result<Option<Regex>, ValidationError> {
            let Some(raw) = params.get(field) else {
                return Ok(None);
            };
            if raw.len() > MAX_PATTERN {
                return Err(ValidationError::new(
                    field,
                    format!("must be at most {MAX_PATTERN} characters"),
                ));
            }
            regex::RegexBuilder::new(raw)
                .size_limit(1 << 20)
                .build()
                .map(Some)
                .map_err(|e| ValidationError::new(field, format!("is not a valid regex: {e}")))
        };
        let filter = Filter {
            name: pattern("name")?,
            label: params.get("label").cloned(),
            uri: pattern("uri")?,
        };
        let none = filter.name.is_none() && filter.label.is_none() && filter.uri.is_none();
        Ok((!none).then_some(filter))
    }

    pub fn matches(&self, value: &Value) -> bool {
        if let Some(re) = &self.name {
            // A resource without a name does not match (APISIX's documented behaviour).
            if !value
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| re.is_match(n))
            {
                return false;
            }
        }
        if let Some(label) = &self.label {
            if value
                .get("labels")
                .and_then(Value::as_object)
                .is_none_or(|l| !l.contains_key(label))
            {
                return false;
            }
        }
        if let Some(re) = &self.uri {
            let uri = value.get("uri").and_then(Value::as_str);
            let uris = value.get("uris").and_then(Value::as_array).into_iter();
            let mut all = uri
                .into_iter()
                .chain(uris.flatten().filter_map(Value::as_str));
            if !all.any(|u| re.is_match(u)) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(pairs: &[(&str, &str)]) -> Result<Option<Filter>, String> {
        let params = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Filter::parse(&params).map_err(|e| e.field)
    }

    #[test]
    fn filters() {
        let route = json!({"name": "orders-api", "uri": "/orders/*",
            "labels": {"env": "prod", "team": "a"}});
        let multi = json!({"uris": ["/a", "/users/:id"], "labels": {"env": "dev"}});
        let unnamed = json!({"uri": "/x"});
        for (params, want) in [
            (&[("name", "orders")][..], [true, false, false]),
            (&[("name", "^api")][..], [false, false, false]),
            (&[("label", "env")][..], [true, true, false]),
            // A label key, not a value.
            (&[("label", "prod")][..], [false, false, false]),
            (&[("uri", "users")][..], [false, true, false]),
            (&[("uri", "^/")][..], [true, true, true]),
            (
                &[("uri", "/x"), ("label", "env")][..],
                [false, false, false],
            ),
            (
                &[("name", "api"), ("label", "team")][..],
                [true, false, false],
            ),
        ] {
            let f = filter(params).unwrap().unwrap();
            let got = [&route, &multi, &unnamed].map(|v| f.matches(v));
            assert_eq!(got, want, "{params:?}");
        }
        assert!(filter(&[]).unwrap().is_none());
        assert_eq!(filter(&[("name", "(")]).unwrap_err(), "name");
        assert_eq!(filter(&[("uri", &"a".repeat(300))]).unwrap_err(), "uri");
    }
}
