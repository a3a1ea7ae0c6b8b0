//! The `cors` plugin: a preflight (`OPTIONS`) is answered 200 in the rewrite phase, and
//! every response to an allowed origin gets the CORS headers (header filter).
use super::{Answer, Phases, Req, Run};
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

pub struct Cors(pub model::plugins::cors::Cors);

impl Phases for Cors {
    fn rewrite(&self, req: &mut Req<'_>, run: &mut Run) -> Option<Answer> {
        run.origin = req.parts.headers.get(ORIGIN).cloned();
        run.cors_request_headers = req
            .parts
            .headers
            .get(ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned();
        (req.parts.method == Method::OPTIONS).then(|| Answer::empty(StatusCode::OK))
    }

    fn header_filter(&self, run: &Run, _status: StatusCode, headers: &mut HeaderMap) {
        let c = &self.0;
        if c.vary {
            headers.append(VARY, HeaderValue::from_static("Origin"));
        }
        let origin = run.origin.as_ref().and_then(|o| o.to_str().ok());
        let Some(allowed) = c.allowed_origin(origin) else {
            return;
        };
        let value = |s: &str| HeaderValue::from_str(s).ok();
        let mut set = |name, v: Option<HeaderValue>| {
            if let Some(v) = v {
                headers.insert(name, v);
            }
        };
        set(ACCESS_CONTROL_ALLOW_ORIGIN, value(allowed));
        set(ACCESS_CONTROL_ALLOW_METHODS, value(&c.allow_methods));
        set(ACCESS_CONTROL_MAX_AGE, value(&c.max_age.to_string()));
        if let Some(e) = &c.expose_headers {
            set(ACCESS_CONTROL_EXPOSE_HEADERS, value(e));
        }
        let allow_headers = match &c.allow_headers {
            Some(h) => value(h),
            None => run.cors_request_headers.clone(),
        };
        set(ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
        if c.allow_credential {
            set(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                Some(HeaderValue::from_static("true")),
            );
        }
    }
}
