//! The plugin chain of a route: compiled when the snapshot is built (the merged, sorted
//! plugin instances of the route, its service and later its consumer), run per request in
//! APISIX's phases: `rewrite` and `access` before the upstream is chosen, `header_filter`
//! on the response (also on one a plugin or the proxy answered itself), `log` at the end.
//! One file per plugin; each implements only the phases it needs.
//!
//! A route without plugins has no chain, and the request path then skips all of this.
pub mod client_control;
pub mod cors;
pub mod ip_restriction;
pub mod key_auth;
pub mod proxy_rewrite;
pub mod redirect;
pub mod request_id;

use crate::consumers::{ConsumerRt, Consumers};
use crate::proxy::{full, ConnInfo, RespBody};
use crate::request_vars::RequestVars;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use model::plugins::{Config, Plugins};
use model::vars::Expr;
use std::sync::Arc;

/// An answer a plugin gives instead of proxying: the one type for 401, 403, 429, a CORS
/// preflight's 200 or a redirect.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// APISIX's plugin answer: `{"message": …}`.
    pub fn message(status: StatusCode, message: &str) -> Answer {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Answer {
            status,
            headers,
            body: serde_json::json!({ "message": message }).to_string().into(),
        }
    }

    pub fn empty(status: StatusCode) -> Answer {
        Answer {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    pub fn into_response(self) -> Response<RespBody> {
        let mut resp = Response::new(full(self.body));
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers;
        resp
    }
}

/// The request as the request-side phases see and change it.
pub struct Req<'a> {
    pub parts: &'a mut http::request::Parts,
    /// The normalised host the route matched (lower case, no port).
    pub host: &'a str,
    pub conn: ConnInfo,
    /// The HTTPS listener's port, for redirects to HTTPS.
    pub https_port: u16,
    /// The snapshot's consumers, for authentication plugins.
    pub consumers: &'a Consumers,
    /// Set once an authentication plugin has recognised the request's credential.
    pub consumer: Option<Arc<ConsumerRt>>,
}

impl Req<'_> {
    /// The request's variables as they are now (after earlier plugins' changes).
    pub fn vars(&self) -> RequestVars<'_> {
        RequestVars {
            parts: self.parts,
            host: self.host,
            remote: self.conn.remote,
            local: self.conn.local,
            scheme: self.conn.scheme,
            consumer: self.consumer.as_deref().map(|c| c.username.as_str()),
        }
    }
}

/// What one request's plugins decided, kept from the request phases to the response ones.
#[derive(Default)]
pub struct Run {
    /// Bit `i`: instance `i` of the chain runs for this request (its `_meta.filter` held).
    active: u64,
    /// `client-control.max_body_size`.
    pub max_body_size: Option<u64>,
    /// `proxy-rewrite.host`: the `Host` the upstream gets (unless `pass_host` says else).
    pub upstream_host: Option<HeaderValue>,
    /// `request-id`: the id, for the response header.
    pub request_id: Option<HeaderValue>,
    /// `cors`: the request's `Origin` and `Access-Control-Request-Headers`.
    pub origin: Option<HeaderValue>,
    pub cors_request_headers: Option<HeaderValue>,
    /// The consumer an authentication plugin recognised.
    pub consumer: Option<Arc<ConsumerRt>>,
}

/// What a plugin does in each phase; every phase does nothing unless the plugin says so.
pub trait Phases: Send + Sync {
    /// Whether the plugin acts in the rewrite phase; when it does not, its `_meta.filter`
    /// is evaluated at the access phase instead.
    fn in_rewrite(&self) -> bool {
        true
    }
    fn rewrite(&self, _req: &mut Req<'_>, _run: &mut Run) -> Option<Answer> {
        None
    }
    fn access(&self, _req: &mut Req<'_>, _run: &mut Run) -> Option<Answer> {
        None
    }
    fn header_filter(&self, _run: &Run, _status: StatusCode, _headers: &mut HeaderMap) {}
}

struct Instance {
    name: &'static str,
    filter: Option<Expr>,
    phases: Arc<dyn Phases>,
}

/// The plugins of one route, highest priority first.
pub struct Chain {
    instances: Vec<Instance>,
}

/// A chain holds at most this many instances (one bit each in [`Run`]); APISIX has about
/// 80 plugins in all, and a route uses a handful.
const MAX_INSTANCES: usize = 64;

impl Chain {
    /// The chain of a route's merged plugins, or `None` when none of them runs per request
    /// (`traffic-split` is the router's, not the chain's).
    pub fn compile(plugins: &Plugins) -> Option<Arc<Chain>> {
        let mut sorted: Vec<_> = plugins.0.iter().collect();
        // Higher priority first; equal priorities by name, so every replica runs one order.
        sorted.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(b.name)));
        let instances: Vec<Instance> = sorted
            .into_iter()
            .filter_map(|p| {
                let phases: Arc<dyn Phases> = match &p.config {
                    Config::ClientControl(c) => Arc::new(client_control::ClientControl(*c)),
                    Config::Cors(c) => Arc::new(cors::Cors((**c).clone())),
                    Config::IpRestriction(c) => Arc::new(ip_restriction::IpRestriction(c.clone())),
                    Config::ProxyRewrite(c) => Arc::new(proxy_rewrite::ProxyRewrite((**c).clone())),
                    Config::Redirect(c) => Arc::new(redirect::Redirect(c.clone())),
                    Config::RequestId(c) => Arc::new(request_id::RequestId(c.clone())),
                    Config::KeyAuth(c) => Arc::new(key_auth::KeyAuth(c.clone())),
                    Config::TrafficSplit(_) => return None,
                };
                Some(Instance {
                    name: p.name,
                    filter: p.filter.clone(),
                    phases,
                })
            })
            .take(MAX_INSTANCES)
            .collect();
        (!instances.is_empty()).then(|| Arc::new(Chain { instances }))
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.instances.iter().map(|i| i.name)
    }

    /// `rewrite`, then `access`, of every instance whose filter holds; stops at the first
    /// answer.
    pub fn request(&self, req: &mut Req<'_>, run: &mut Run) -> Option<Answer> {
        // A filter is evaluated once, just before the first phase its plugin runs in (as
        // APISIX caches it): an access-phase plugin's filter sees what rewrite-phase
        // plugins did, the consumer included.
        let mut decided = 0u64;
        for phase in [Phase::Rewrite, Phase::Access] {
            for (i, inst) in self.instances.iter().enumerate() {
                let bit = 1u64 << i;
                if decided & bit == 0 && (phase == Phase::Access || inst.phases.in_rewrite()) {
                    decided |= bit;
                    if inst.filter.as_ref().is_none_or(|f| f.eval(&req.vars())) {
                        run.active |= bit;
                    }
                }
                if run.active & bit == 0 {
                    continue;
                }
                let answer = match phase {
                    Phase::Rewrite => inst.phases.rewrite(req, run),
                    Phase::Access => inst.phases.access(req, run),
                };
                if answer.is_some() {
                    return answer;
                }
            }
        }
        None
    }

    /// `header_filter` of every instance that ran, on whatever answers the client.
    pub fn response(&self, run: &Run, resp: &mut Response<RespBody>) {
        let status = resp.status();
        for (i, inst) in self.instances.iter().enumerate() {
            if run.active & (1 << i) != 0 {
                inst.phases.header_filter(run, status, resp.headers_mut());
            }
        }
    }
}

/// The chains that ran for one request (the global rules', then the route's), each with
/// what it decided; empty, and never allocated, for a request no plugin touched.
#[derive(Default)]
pub struct Ran {
    chains: Vec<(Arc<Chain>, Run)>,
}

impl Ran {
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }

    /// `chain`'s request phases; the consumer found by an earlier chain stays on `req`.
    pub fn request(&mut self, chain: &Arc<Chain>, req: &mut Req<'_>) -> Option<Answer> {
        let mut run = Run::default();
        let answer = chain.request(req, &mut run);
        run.consumer = req.consumer.clone();
        self.chains.push((chain.clone(), run));
        answer
    }

    /// The header filters of every chain that ran, in the order they ran.
    pub fn response(&self, resp: &mut Response<RespBody>) {
        for (chain, run) in &self.chains {
            chain.response(run, resp);
        }
    }

    /// The route's setting over the global rules'.
    fn last<T>(&self, f: impl Fn(&Run) -> Option<T>) -> Option<T> {
        self.chains.iter().rev().find_map(|(_, r)| f(r))
    }

    pub fn max_body_size(&self) -> Option<u64> {
        self.last(|r| r.max_body_size)
    }

    pub fn upstream_host(&self) -> Option<HeaderValue> {
        self.last(|r| r.upstream_host.clone())
    }

    pub fn consumer(&self) -> Option<&ConsumerRt> {
        self.chains
            .iter()
            .rev()
            .find_map(|(_, r)| r.consumer.as_deref())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Rewrite,
    Access,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(v: serde_json::Value) -> Arc<Chain> {
        let plugins = model::plugins::parse(v.as_object(), model::plugins::Scope::Route).unwrap();
        Chain::compile(&plugins).unwrap()
    }

    fn request(uri: &str) -> http::request::Parts {
        http::Request::builder()
            .uri(uri)
            .header("host", "h")
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    fn conn() -> ConnInfo {
        ConnInfo {
            remote: "10.0.0.1:1234".parse().unwrap(),
            local: "127.0.0.1:9080".parse().unwrap(),
            scheme: "http",
        }
    }

    #[test]
    fn order_is_priority_then_name_and_meta_overrides_it() {
        let c = chain(json!({
            "proxy-rewrite": {"uri": "/x"},
            "request-id": {},
            "cors": {},
            "redirect": {"uri": "/r", "_meta": {"priority": 20000}},
            "traffic-split": {"rules": []},
        }));
        let names: Vec<_> = c.names().collect();
        assert_eq!(names, ["redirect", "request-id", "cors", "proxy-rewrite"]);
        let none = model::plugins::parse(
            json!({"traffic-split": {"rules": []}}).as_object(),
            model::plugins::Scope::Route,
        )
        .unwrap();
        assert!(
            Chain::compile(&none).is_none(),
            "nothing to run per request"
        );
    }

    #[test]
    fn a_filter_decides_per_request_and_an_answer_stops_the_chain() {
        let c = chain(json!({
            "ip-restriction": {"blacklist": ["10.0.0.0/8"], "_meta": {"filter": [["arg_guard", "==", "on"]]}},
            "proxy-rewrite": {"uri": "/rewritten"},
        }));
        for (uri, blocked) in [
            ("/a?guard=on", true),
            ("/a?guard=off", false),
            ("/a", false),
        ] {
            let mut parts = request(uri);
            let mut run = Run::default();
            let consumers = Consumers::default();
            let mut req = Req {
                parts: &mut parts,
                host: "h",
                conn: conn(),
                https_port: 443,
                consumers: &consumers,
                consumer: None,
            };
            let answer = c.request(&mut req, &mut run);
            assert_eq!(
                answer.map(|a| a.status.as_u16()),
                blocked.then_some(403),
                "{uri}"
            );
            // proxy-rewrite (1008) runs in rewrite, before ip-restriction's access (3000).
            assert_eq!(parts.uri.path(), "/rewritten", "{uri}");
        }
    }
}
