//! What every authentication plugin does once it has found the request's consumer:
//! `X-Consumer-Username` / `X-Consumer-Custom-ID` to the upstream (APISIX), and the
//! consumer on the request for the plugins, variables and balancer after it.
use super::{Answer, Req};
use crate::consumers::ConsumerRt;
use http::header::WWW_AUTHENTICATE;
use http::{HeaderName, HeaderValue, StatusCode};
use std::sync::Arc;

pub fn unauthorized(message: &str, challenge: &'static str) -> Answer {
    let mut a = Answer::message(StatusCode::UNAUTHORIZED, message);
    a.headers
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    a
}

pub fn authenticated(req: &mut Req<'_>, consumer: Arc<ConsumerRt>) {
    let headers = &mut req.parts.headers;
    if let Ok(v) = HeaderValue::from_str(&consumer.username) {
        headers.insert(HeaderName::from_static("x-consumer-username"), v);
    }
    match consumer.custom_id.as_deref().map(HeaderValue::from_str) {
        Some(Ok(v)) => {
            headers.insert(HeaderName::from_static("x-consumer-custom-id"), v);
        }
        _ => {
            // A client must not pose as a consumer it is not.
            headers.remove("x-consumer-custom-id");
        }
    }
    req.consumer = Some(consumer);
}
