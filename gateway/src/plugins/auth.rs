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
    if let Some(v) = &consumer.username_header {
        headers.insert(X_CONSUMER_USERNAME, v.clone());
    }
    match &consumer.custom_id_header {
        Some(v) => {
            headers.insert(X_CONSUMER_CUSTOM_ID, v.clone());
        }
        None => {
            // A client must not pose as a consumer it is not.
            headers.remove(X_CONSUMER_CUSTOM_ID);
        }
    }
    req.consumer = Some(consumer);
}

const X_CONSUMER_USERNAME: HeaderName = HeaderName::from_static("x-consumer-username");
const X_CONSUMER_CUSTOM_ID: HeaderName = HeaderName::from_static("x-consumer-custom-id");

#[cfg(test)]
mod tests {
    use super::*;

    /// The consumer's headers replace whatever the client sent under their names; without
    /// a custom id (or with one that is no header value), the client's is removed.
    #[test]
    fn a_client_cannot_pose_as_a_consumer() {
        for (custom_id, want) in [
            (Some("c-1"), Some("c-1")),
            (None, None),
            (Some("a\nb"), None),
        ] {
            let consumer = Arc::new(ConsumerRt {
                username: "jack".into(),
                custom_id: custom_id.map(String::from),
                group_id: None,
                chain: None,
                username_header: HeaderValue::from_str("jack").ok(),
                custom_id_header: custom_id.and_then(|c| HeaderValue::from_str(c).ok()),
            });
            let mut parts = http::Request::new(()).into_parts().0;
            parts
                .headers
                .insert("x-consumer-username", HeaderValue::from_static("admin"));
            parts
                .headers
                .insert("x-consumer-custom-id", HeaderValue::from_static("root"));
            let consumers = crate::consumers::Consumers::default();
            let mut req = Req::for_test(&mut parts, &consumers);
            authenticated(&mut req, consumer);
            assert_eq!(
                req.consumer.as_ref().map(|c| c.username.as_str()),
                Some("jack")
            );
            let got = |n: &str| {
                parts
                    .headers
                    .get_all(n)
                    .iter()
                    .map(|v| v.to_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            };
            assert_eq!(got("x-consumer-username"), ["jack"]);
            assert_eq!(
                got("x-consumer-custom-id"),
                want.into_iter().map(String::from).collect::<Vec<_>>()
            );
        }
    }
}
