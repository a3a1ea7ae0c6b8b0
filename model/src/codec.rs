//! Decoding stored or submitted JSON into validated resources, with errors that name the field.
use crate::{Id, Kind, ValidationError};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;

/// A resource kind the model can validate.
pub trait Resource: DeserializeOwned {
    const KIND: Kind;
    fn id(&self) -> Option<&Id>;
    /// Cross-field rules that types alone cannot express.
    fn validate(&self) -> Result<(), ValidationError>;
    /// Parses what serde leaves raw (`plugins`), before `validate`.
    fn parse_plugins(&mut self) -> Result<(), ValidationError> {
        Ok(())
    }
    /// Other resources this one points at, with the field that names each
    /// (`upstream_id`, `service_id`, `plugins.traffic-split.rules[0]…upstream_id`).
    fn references(&self) -> Vec<(Kind, &Id, String)> {
        Vec::new()
    }
}

/// Parses and validates one resource from JSON bytes.
pub fn decode<T: Resource>(bytes: &[u8]) -> Result<T, ValidationError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ValidationError::new("", format!("invalid JSON: {e}")))?;
    decode_value(&value)
}

/// Parses and validates one resource from a JSON value.
pub fn decode_value<T: Resource>(value: &Value) -> Result<T, ValidationError> {
    if !value.is_object() {
        return Err(ValidationError::new("", "the body must be a JSON object"));
    }
    let mut parsed: T = from_value(value)?;
    parsed.parse_plugins()?;
    parsed.validate()?;
    Ok(parsed)
}

/// Deserializes `value`, naming the field at fault in the error.
pub(crate) fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, ValidationError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let msg = strip_location(&e.inner().to_string());
        // serde reports a missing field at its parent; name the field itself.
        let missing = msg
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(name, _)| name.to_string());
        match missing {
            Some(name) => ValidationError::new(name, "is required").within(&path),
            None => ValidationError::new(path, msg),
        }
    })
}

fn strip_location(msg: &str) -> String {
    match msg.rsplit_once(" at line ") {
        Some((head, _)) => head.to_string(),
        None => msg.to_string(),
    }
}

pub(crate) fn check_meta(
    name: Option<&str>,
    desc: Option<&str>,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<(), ValidationError> {
    if let Some(n) = name {
        if n.is_empty() || n.chars().count() > 100 {
            return Err(ValidationError::new(
                "name",
                "must be 1 to 100 characters long",
            ));
        }
    }
    if let Some(d) = desc {
        if d.chars().count() > 256 {
            return Err(ValidationError::new(
                "desc",
                "must be at most 256 characters long",
            ));
        }
    }
    for (k, v) in labels.into_iter().flatten() {
        if k.is_empty() || k.len() > 256 || v.is_empty() || v.len() > 256 {
            return Err(ValidationError::new(
                format!("labels.{k}"),
                "label keys and values must be 1 to 256 characters long",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
