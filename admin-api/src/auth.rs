//! Admin key check: every request carries the key in `X-API-KEY` or `?api_key=`, as in
//! APISIX. Only the OpenAPI document is public, so tools can fetch it before they have a key.
//! The viewer key (APISIX's `viewer` role) may only read.
use crate::config::Auth;
use crate::error::ApiError;
use crate::openapi::OPENAPI_PATH;
use crate::App;
use axum::extract::{Query, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub const HEADER: &str = "x-api-key";
pub const QUERY: &str = "api_key";

pub async fn require_key(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Auth::Keys { admin, viewer } = &app.auth else {
        return next.run(req).await;
    };
    if req.uri().path() == OPENAPI_PATH {
        return next.run(req).await;
    }
    match presented(&req) {
        Ok(Some(key)) if same(key.as_bytes(), admin.as_bytes()) => next.run(req).await,
        Ok(Some(key))
            if viewer
                .as_ref()
                .is_some_and(|v| same(key.as_bytes(), v.as_bytes())) =>
        {
            if matches!(req.method(), &Method::GET | &Method::HEAD) {
                next.run(req).await
            } else {
                ApiError::Forbidden(format!(
                    "the viewer key may only read: {} needs the admin key",
                    req.method()
                ))
                .into_response()
            }
        }
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

/// Compares `presented` with the secret `expected` in a time that depends only on the
/// presented key's length (which its sender knows anyway): neither where the first
/// difference is nor how long the secret is shows in the timing.
fn same(presented: &[u8], expected: &[u8]) -> bool {
    if expected.is_empty() {
        return false;
    }
    let mut diff = presented.len() ^ expected.len();
    for (i, p) in presented.iter().enumerate() {
        diff |= usize::from(p ^ expected[i % expected.len()]);
    }
    std::hint::black_box(diff) == 0
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
        assert!(!same(b"x", b""));
        assert!(
            !same(b"secretsecret", b"secret"),
            "a repeated key is not the key"
        );
        assert!(!same(b"sec", b"secret"));
    }
}
