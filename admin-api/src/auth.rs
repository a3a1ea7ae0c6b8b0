//! Admin key check: every request carries the key in `X-API-KEY` or `?api_key=`, as in
//! APISIX. Only the OpenAPI document is public, so tools can fetch it before they have a key.
use crate::config::Auth;
use crate::error::ApiError;
use crate::openapi::OPENAPI_PATH;
use crate::App;
use axum::extract::{Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub const HEADER: &str = "x-api-key";
pub const QUERY: &str = "api_key";

pub async fn require_key(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Auth::Key(expected) = &app.auth else {
        return next.run(req).await;
    };
    if req.uri().path() == OPENAPI_PATH {
        return next.run(req).await;
    }
    match presented(&req) {
        Ok(Some(key)) if same(key.as_bytes(), expected.as_bytes()) => next.run(req).await,
        Ok(Some(_)) => ApiError::Unauthorized("wrong admin key".into()).into_response(),
        Ok(None) => ApiError::Unauthorized(format!(
            "missing admin key: send it in the X-API-KEY header or the {QUERY} query parameter"
        ))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// The key the request presents: the header first, then the query parameter.
fn presented(req: &Request) -> Result<Option<String>, ApiError> {
    if let Some(v) = req.headers().get(HEADER) {
        let key = v
            .to_str()
            .map_err(|_| ApiError::Unauthorized("the X-API-KEY header is not ASCII".into()))?;
        return Ok(Some(key.to_string()));
    }
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(req.uri())?;
    Ok(pairs.into_iter().find(|(k, _)| k == QUERY).map(|(_, v)| v))
}

/// Compares without stopping at the first difference, so timing does not reveal the key.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn compare() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }
}
