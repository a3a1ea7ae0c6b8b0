//! What the registry knows about plugins, as APISIX's Admin API answers it:
//! `GET /apisix/admin/plugins/list` (names, highest priority first) and
//! `GET /apisix/admin/plugins/{name}` = `GET /apisix/admin/schema/plugins/{name}` (the
//! JSON schema of its configuration; `?schema_type=consumer` for a credential's).
use crate::error::ApiError;
use crate::handlers::query;
use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::Uri;
use axum::Json;
use model::plugins::{spec, Scope, REGISTRY};
use serde_json::Value;

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Plugins that authenticate: the ones with a consumer (credential) schema.
fn is_auth(name: &str) -> bool {
    model::consumer::IDENTITY_FIELDS
        .iter()
        .any(|(plugin, _, _)| *plugin == name)
}

/// The names of every plugin, highest default priority first (the order they run in).
pub fn names(subsystem: &str) -> Result<Vec<&'static str>> {
    match subsystem {
        "http" => {
            let mut specs: Vec<_> = REGISTRY.iter().collect();
            specs.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(b.name)));
            Ok(specs.into_iter().map(|s| s.name).collect())
        }
        // No stream (L4) plugins exist here.
        "stream" => Ok(Vec::new()),
        other => Err(ApiError::BadRequest(format!(
            "invalid subsystem passed: {other:?} (http or stream)"
        ))),
    }
}

pub async fn list(uri: Uri) -> Result<Json<Vec<&'static str>>> {
    let params = query(&uri, &["subsystem"])?;
    let subsystem = params.get("subsystem").map_or("http", String::as_str);
    Ok(Json(names(subsystem)?))
}

/// The schema of `name`'s configuration; `schema_type` `consumer` for its credential.
pub fn schema(name: &str, schema_type: Option<&str>) -> Result<Value> {
    let spec = spec(name).ok_or_else(|| {
        ApiError::NotFound(format!("plugin {name:?} not found in subsystem http"))
    })?;
    let scope = match schema_type {
        None | Some("route") => Scope::Route,
        Some("consumer") if is_auth(name) => Scope::Consumer,
        Some("consumer") => {
            return Err(ApiError::BadRequest(format!(
            "not found schema: {name} has no consumer schema (it is not an authentication plugin)"
        )))
        }
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "schema_type must be route or consumer, got {other:?}"
            )))
        }
    };
    Ok(spec.schema(scope))
}

pub async fn get_schema(
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Json<Value>> {
    let name = path?.0;
    let params = query(&uri, &["schema_type", "subsystem"])?;
    if let Some(sub) = params.get("subsystem").filter(|s| *s != "http") {
        return Err(ApiError::BadRequest(format!(
            "unsupported subsystem: {sub} (only http plugins exist here)"
        )));
    }
    schema(&name, params.get("schema_type").map(String::as_str)).map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_schemas() {
        let all = names("http").unwrap();
        assert_eq!(all.len(), REGISTRY.len());
        // Highest priority first: real-ip (23000) before key-auth (2500).
        let at = |n: &str| all.iter().position(|x| *x == n).unwrap();
        assert!(at("real-ip") < at("key-auth"));
        assert!(at("key-auth") < at("proxy-rewrite"));
        assert!(names("stream").unwrap().is_empty());
        assert!(names("udp").is_err());

        let route = schema("key-auth", None).unwrap();
        let props = route["properties"].as_object().unwrap();
        for field in ["header", "query", "hide_credentials", "_meta"] {
            assert!(props.contains_key(field), "{field}: {route}");
        }
        assert_eq!(route["additionalProperties"], false);
        let consumer = schema("key-auth", Some("consumer")).unwrap();
        assert_eq!(consumer["required"], serde_json::json!(["key"]));
        assert!(matches!(schema("nope", None), Err(ApiError::NotFound(_))));
        assert!(matches!(
            schema("proxy-rewrite", Some("consumer")),
            Err(ApiError::BadRequest(_))
        ));
        // Every plugin has an object schema listing its fields.
        for name in all {
            let s = schema(name, None).unwrap();
            assert!(s["properties"].is_object(), "{name}: {s}");
        }
    }
}
