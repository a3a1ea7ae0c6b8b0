//! The `response-rewrite` plugin: the request variables its header values and `vars` need
//! are read when the request phases end (the request is gone by the time the response
//! comes);
//! status, headers and body are rewritten on the response, whoever answered it.
use super::{Phases, Req, Run};
use crate::proxy::{full, RespBody};
use crate::request_vars::expand;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, ETAG, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use model::vars::VarSource;
use std::borrow::Cow;

pub struct ResponseRewrite(pub model::plugins::response_rewrite::ResponseRewrite);

/// What the access phase kept for the response.
#[derive(Default)]
pub struct Captured {
    /// Request variables `vars` reads, with their values.
    vars: Vec<(String, Vec<String>)>,
    add: Vec<(HeaderName, HeaderValue)>,
    set: Vec<(HeaderName, HeaderValue)>,
}

/// Variables on the response: `status` and `upstream_http_*` / `sent_http_*` from it, the
/// others as the request had them.
struct ResponseVars<'a> {
    status: StatusCode,
    headers: &'a HeaderMap,
    captured: &'a [(String, Vec<String>)],
}

impl ResponseVars<'_> {
    fn response_header(&self, name: &str) -> Option<&str> {
        let h = name
            .strip_prefix("upstream_http_")
            .or_else(|| name.strip_prefix("sent_http_"))?;
        self.headers
            .get(h.replace('_', "-").as_str())
            .and_then(|v| v.to_str().ok())
    }
}

impl VarSource for ResponseVars<'_> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        if name == "status" || name == "upstream_status" {
            return Some(Cow::Owned(self.status.as_u16().to_string()));
        }
        if let Some(v) = self.response_header(name) {
            return Some(Cow::Borrowed(v));
        }
        self.get_all(name).into_iter().next()
    }

    fn get_all(&self, name: &str) -> Vec<Cow<'_, str>> {
        self.captured
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, vs)| vs.iter().map(|v| Cow::Borrowed(v.as_str())).collect())
            .unwrap_or_default()
    }
}

fn is_response_var(name: &str) -> bool {
    matches!(name, "status" | "upstream_status")
        || name.starts_with("upstream_http_")
        || name.starts_with("sent_http_")
}

impl Phases for ResponseRewrite {
    fn in_rewrite(&self) -> bool {
        false
    }

    fn before_response(&self, req: &Req<'_>, run: &mut Run) {
        let c = &self.0;
        let vars = req.vars();
        let expand_all = |list: &[(HeaderName, String)]| {
            list.iter()
                .filter_map(|(n, t)| {
                    Some((n.clone(), HeaderValue::from_str(&expand(t, &vars)).ok()?))
                })
                .collect()
        };
        let captured = Captured {
            vars: c
                .vars
                .iter()
                .flat_map(|e| e.var_names())
                .filter(|n| !is_response_var(n))
                .map(|n| {
                    (
                        n.to_string(),
                        vars.get_all(n)
                            .into_iter()
                            .map(|v| v.into_owned())
                            .collect(),
                    )
                })
                .collect(),
            add: expand_all(&c.add),
            set: expand_all(&c.set),
        };
        run.response_rewrite = Some(Box::new(captured));
    }

    fn response(&self, run: &Run, resp: &mut Response<RespBody>) {
        let c = &self.0;
        let Some(captured) = &run.response_rewrite else {
            return;
        };
        if let Some(expr) = &c.vars {
            let src = ResponseVars {
                status: resp.status(),
                headers: resp.headers(),
                captured: &captured.vars,
            };
            if !expr.eval(&src) {
                return;
            }
        }
        if let Some(code) = c.status_code.and_then(|s| StatusCode::from_u16(s).ok()) {
            *resp.status_mut() = code;
        }
        let headers = resp.headers_mut();
        for (n, v) in &captured.add {
            headers.append(n.clone(), v.clone());
        }
        for (n, v) in &captured.set {
            headers.insert(n.clone(), v.clone());
        }
        for n in &c.remove {
            headers.remove(n);
        }
        if let Some(body) = &c.body {
            // The new body is sent as it is: nothing said about the old one holds.
            for h in [CONTENT_LENGTH, CONTENT_ENCODING, TRANSFER_ENCODING, ETAG] {
                headers.remove(h);
            }
            headers.remove("content-md5");
            *resp.body_mut() = full(body.clone());
        }
    }
}
