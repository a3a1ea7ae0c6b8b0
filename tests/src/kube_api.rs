//! A small loopback Kubernetes API server for ingress-sync's end-to-end tests: it speaks
//! the real wire protocol kube-rs uses for Ingress, IngressClass, Service, EndpointSlice
//! and Secret — LIST (`{kind}List` with `metadata.resourceVersion`), `?watch=true` from a
//! `resourceVersion` as newline-delimited events (with BOOKMARKs when
//! `allowWatchBookmarks=true`, an ERROR event with a `410` Status for a compacted
//! resourceVersion, closing after `timeoutSeconds`), and merge-PATCH of the status of
//! Ingresses and of the Gateway API's GatewayClasses, Gateways, HTTPRoutes and GRPCRoutes (which
//! ingress-sync reads with `--gateway-api`, beside ReferenceGrants and Namespaces).
//! `metadata.generation` moves when `spec` changes, as on a real server. Anything else is
//! answered 404 and logged loudly.
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

const GATEWAY_V1: &str = "/apis/gateway.networking.k8s.io/v1";

/// (kind, API path prefix, plural, namespaced)
const KINDS: [(&str, &str, &str, bool); 11] = [
    ("Ingress", "/apis/networking.k8s.io/v1", "ingresses", true),
    (
        "IngressClass",
        "/apis/networking.k8s.io/v1",
        "ingressclasses",
        false,
    ),
    ("Service", "/api/v1", "services", true),
    (
        "EndpointSlice",
        "/apis/discovery.k8s.io/v1",
        "endpointslices",
        true,
    ),
    ("Secret", "/api/v1", "secrets", true),
    ("Namespace", "/api/v1", "namespaces", false),
    ("GatewayClass", GATEWAY_V1, "gatewayclasses", false),
    ("Gateway", GATEWAY_V1, "gateways", true),
    ("HTTPRoute", GATEWAY_V1, "httproutes", true),
    ("GRPCRoute", GATEWAY_V1, "grpcroutes", true),
    (
        "ReferenceGrant",
        "/apis/gateway.networking.k8s.io/v1beta1",
        "referencegrants",
        true,
    ),
];

/// The kinds whose `status` subresource can be patched.
const STATUS_KINDS: [&str; 5] = [
    "Ingress",
    "GatewayClass",
    "Gateway",
    "HTTPRoute",
    "GRPCRoute",
];

fn api_version(prefix: &str) -> &str {
    prefix
        .strip_prefix("/apis/")
        .or_else(|| prefix.strip_prefix("/api/"))
        .unwrap_or(prefix)
}

type Key = (String, String, String); // kind, namespace, name

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    /// (resourceVersion, kind, namespace, type, object)
    events: Vec<(u64, String, String, &'static str, Value)>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    /// Bumped by `compact`: open watches end (as when the server's watch cache drops them).
    generation: u64,
    /// (kind, namespace, name, patch)
    patches: Vec<(String, String, String, Value)>,
    gone_sent: u64,
    unknown: Vec<String>,
}

pub struct KubeApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changed: watch::Sender<u64>,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// A response body fed from a channel: one chunk per watch event.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

impl KubeApi {
    pub async fn start() -> KubeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let (changed, _) = watch::channel(0u64);
        let (st, ch) = (state.clone(), changed.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let stream = tokio::select! {
                    r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                    Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                };
                let (st, ch) = (st.clone(), ch.clone());
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (st, ch) = (st.clone(), ch.clone());
                        async move { Ok::<_, Infallible>(handle(st, ch, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let config = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": format!("http://{addr}")}}],
            "users": [{"name": "test", "user": {}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        });
        std::fs::write(&kubeconfig, config.to_string()).unwrap();
        KubeApi {
            addr,
            state,
            changed,
            kubeconfig,
            _dir: dir,
            task,
        }
    }

    /// A kubeconfig file pointing at this server (for `--kubeconfig`).
    pub fn kubeconfig(&self) -> &std::path::Path {
        &self.kubeconfig
    }

    /// Creates or replaces an object (its `kind` says which); returns its resourceVersion.
    pub fn apply(&self, mut obj: Value) -> u64 {
        let kind = obj["kind"].as_str().expect("object has a kind").to_string();
        let (_, prefix, _, namespaced) = KINDS
            .iter()
            .find(|k| k.0 == kind)
            .unwrap_or_else(|| panic!("unsupported kind {kind}"));
        let ns = if *namespaced {
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let name = obj["metadata"]["name"].as_str().expect("name").to_string();
        let mut s = self.state.lock().unwrap();
        s.rv += 1;
        let rv = s.rv;
        let key = (kind.clone(), ns.clone(), name.clone());
        let existing = s.objects.get(&key).cloned();
        obj["apiVersion"] = json!(api_version(prefix));
        if *namespaced {
            obj["metadata"]["namespace"] = json!(ns);
        }
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let created = existing
            .as_ref()
            .map(|e| e["metadata"]["creationTimestamp"].clone())
            .filter(|t| !t.is_null());
        if obj["metadata"]["creationTimestamp"].is_null() {
            obj["metadata"]["creationTimestamp"] =
                created.unwrap_or_else(|| json!(format!("2025-01-01T00:00:{:02}Z", rv % 60)));
        }
        obj["metadata"]["uid"] = json!(format!("uid-{kind}-{ns}-{name}"));
        // As a real server: `generation` counts spec changes, and a write of the object
        // keeps the status (only the status subresource changes it).
        let generation = match &existing {
            Some(e) if e["spec"] == obj["spec"] => e["metadata"]["generation"].clone(),
            Some(e) => json!(e["metadata"]["generation"].as_i64().unwrap_or(0) + 1),
            None => json!(1),
        };
        obj["metadata"]["generation"] = generation;
        if obj.get("status").is_none() {
            if let Some(status) = existing.as_ref().and_then(|e| e.get("status")) {
                obj["status"] = status.clone();
            }
        }
        let kind_type = if existing.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.objects.insert(key, obj.clone());
        s.events.push((rv, kind, ns, kind_type, obj));
        drop(s);
        self.changed.send_replace(rv);
        rv
    }

    pub fn delete(&self, kind: &str, namespace: &str, name: &str) {
        let mut s = self.state.lock().unwrap();
        let key = (kind.to_string(), namespace.to_string(), name.to_string());
        let Some(mut obj) = s.objects.remove(&key) else {
            return;
        };
        s.rv += 1;
        let rv = s.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        s.events
            .push((rv, kind.to_string(), namespace.to_string(), "DELETED", obj));
        drop(s);
        self.changed.send_replace(rv);
    }

    /// Forgets the event history and ends every open watch: a client resuming from any
    /// resourceVersion it has seen gets `410 Gone` and must list again.
    pub fn compact(&self) {
        let mut s = self.state.lock().unwrap();
        s.compacted = s.rv + 1;
        s.events.clear();
        s.generation += 1;
        let rv = s.rv;
        drop(s);
        self.changed.send_replace(rv);
    }

    /// How many 410 Gone errors watches were answered with.
    pub fn gone_sent(&self) -> u64 {
        self.state.lock().unwrap().gone_sent
    }

    /// `(namespace, name, patch body)` of every Ingress status patch received.
    pub fn status_patches(&self) -> Vec<(String, String, Value)> {
        self.status_patches_of("Ingress")
    }

    /// `(namespace, name, patch body)` of every status patch of `kind` received.
    pub fn status_patches_of(&self, kind: &str) -> Vec<(String, String, Value)> {
        self.state
            .lock()
            .unwrap()
            .patches
            .iter()
            .filter(|p| p.0 == kind)
            .map(|p| (p.1.clone(), p.2.clone(), p.3.clone()))
            .collect()
    }

    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = (kind.to_string(), namespace.to_string(), name.to_string());
        self.state.lock().unwrap().objects.get(&key).cloned()
    }

    /// Requests this server did not understand.
    pub fn unknown_requests(&self) -> Vec<String> {
        self.state.lock().unwrap().unknown.clone()
    }
}

/// What a request path names.
struct Target {
    kind: &'static str,
    prefix: &'static str,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_path(path: &str) -> Option<Target> {
    for (kind, prefix, plural, namespaced) in KINDS {
        let Some(rest) = path.strip_prefix(prefix) else {
            continue;
        };
        let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        let (namespace, parts) = match parts.as_slice() {
            ["namespaces", ns, rest @ ..] if namespaced => (Some(ns.to_string()), rest.to_vec()),
            _ => (None, parts),
        };
        match parts.as_slice() {
            [p] if *p == plural => {
                return Some(Target {
                    kind,
                    prefix,
                    namespace,
                    name: None,
                    status: false,
                })
            }
            [p, name] if *p == plural => {
                return Some(Target {
                    kind,
                    prefix,
                    namespace,
                    name: Some(name.to_string()),
                    status: false,
                })
            }
            [p, name, "status"] if *p == plural => {
                return Some(Target {
                    kind,
                    prefix,
                    namespace,
                    name: Some(name.to_string()),
                    status: true,
                })
            }
            _ => {}
        }
    }
    None
}

fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), percent_decode(v)))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `type=kubernetes.io/tls`, `metadata.name=x`, comma-separated, `=`/`==`/`!=`.
fn field_selector_matches(selector: Option<&String>, obj: &Value) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    sel.split(',').all(|term| {
        let (path, want, negate) = if let Some((p, v)) = term.split_once("!=") {
            (p, v, true)
        } else if let Some((p, v)) = term.split_once("==") {
            (p, v, false)
        } else if let Some((p, v)) = term.split_once('=') {
            (p, v, false)
        } else {
            return true;
        };
        let got = path
            .split('.')
            .fold(obj, |v, k| &v[k])
            .as_str()
            .unwrap_or_default();
        (got == want) != negate
    })
}

async fn handle(
    state: Arc<Mutex<State>>,
    changed: watch::Sender<u64>,
    req: Request<Incoming>,
) -> Response<Body> {
    let method = req.method().clone();
    let uri = req.uri().to_string();
    let q = query(&req);
    let Some(t) = parse_path(req.uri().path()) else {
        return unknown(&state, &method, &uri);
    };
    match (method.as_str(), &t.name, t.status) {
        ("GET", None, _) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            if q.contains_key("sendInitialEvents") {
                return unknown(&state, &method, &uri);
            }
            watch_response(state, changed, t, q)
        }
        ("GET", None, _) => {
            let s = state.lock().unwrap();
            let items: Vec<Value> = s
                .objects
                .iter()
                .filter(|((k, ns, _), o)| {
                    *k == t.kind
                        && t.namespace.as_ref().is_none_or(|want| want == ns)
                        && field_selector_matches(q.get("fieldSelector"), o)
                })
                .map(|(_, o)| o.clone())
                .collect();
            full(
                StatusCode::OK,
                &json!({"kind": format!("{}List", t.kind), "apiVersion": api_version(t.prefix),
                        "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
            )
        }
        ("GET", Some(name), false) => {
            let key = (
                t.kind.to_string(),
                t.namespace.clone().unwrap_or_default(),
                name.clone(),
            );
            match state.lock().unwrap().objects.get(&key) {
                Some(o) => full(StatusCode::OK, o),
                None => full(
                    StatusCode::NOT_FOUND,
                    &status_object(404, "NotFound", "not found"),
                ),
            }
        }
        ("PATCH", Some(name), true) if STATUS_KINDS.contains(&t.kind) => {
            let ct = req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                return full(
                    StatusCode::BAD_REQUEST,
                    &status_object(400, "BadRequest", "invalid JSON"),
                );
            };
            if !ct.starts_with("application/merge-patch+json") {
                return full(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    &status_object(
                        415,
                        "UnsupportedMediaType",
                        &format!("only merge patches here, got {ct}"),
                    ),
                );
            }
            let ns = t.namespace.clone().unwrap_or_default();
            let key = (t.kind.to_string(), ns.clone(), name.clone());
            let mut s = state.lock().unwrap();
            let Some(mut obj) = s.objects.get(&key).cloned() else {
                return full(
                    StatusCode::NOT_FOUND,
                    &status_object(404, "NotFound", "not found"),
                );
            };
            // A status subresource patch changes only `status`.
            let mut status = obj["status"].take();
            merge(&mut status, &patch["status"]);
            obj["status"] = status;
            s.rv += 1;
            let rv = s.rv;
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            s.objects.insert(key, obj.clone());
            s.events
                .push((rv, t.kind.to_string(), ns.clone(), "MODIFIED", obj.clone()));
            s.patches
                .push((t.kind.to_string(), ns, name.clone(), patch));
            drop(s);
            changed.send_replace(rv);
            full(StatusCode::OK, &obj)
        }
        _ => unknown(&state, &method, &uri),
    }
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn unknown(state: &Arc<Mutex<State>>, method: &hyper::Method, uri: &str) -> Response<Body> {
    eprintln!("!!! kube_api: unsupported request {method} {uri}");
    state
        .lock()
        .unwrap()
        .unknown
        .push(format!("{method} {uri}"));
    full(
        StatusCode::NOT_FOUND,
        &status_object(404, "NotFound", &format!("unsupported: {method} {uri}")),
    )
}

fn watch_response(
    state: Arc<Mutex<State>>,
    changed: watch::Sender<u64>,
    t: Target,
    q: BTreeMap<String, String>,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1800);
    let from = q.get("resourceVersion").and_then(|s| s.parse::<u64>().ok());
    let mut rx_changed = changed.subscribe();
    tokio::spawn(async move {
        let line = |v: Value| {
            let mut s = v.to_string();
            s.push('\n');
            Bytes::from(s)
        };
        let start = {
            let mut s = state.lock().unwrap();
            let from = from.filter(|rv| *rv != 0).unwrap_or(s.rv);
            if from < s.compacted {
                s.gone_sent += 1;
                Err(format!(
                    "too old resource version: {from} ({})",
                    s.compacted
                ))
            } else {
                Ok((from, s.generation))
            }
        };
        let (mut sent, generation) = match start {
            Ok(x) => x,
            Err(msg) => {
                let _ = tx
                    .send(line(
                        json!({"type": "ERROR", "object": status_object(410, "Expired", &msg)}),
                    ))
                    .await;
                return;
            }
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let mut bookmark_tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let (batch, now_rv, ended) = {
                let s = state.lock().unwrap();
                let batch: Vec<(u64, &'static str, Value)> = s
                    .events
                    .iter()
                    .filter(|(rv, k, ns, _, _)| {
                        *rv > sent && *k == t.kind && t.namespace.as_ref().is_none_or(|w| w == ns)
                    })
                    .map(|(rv, _, _, ty, o)| (*rv, *ty, o.clone()))
                    .collect();
                (batch, s.rv, s.generation != generation)
            };
            if ended {
                return;
            }
            for (rv, ty, obj) in batch {
                if tx
                    .send(line(json!({"type": ty, "object": obj})))
                    .await
                    .is_err()
                {
                    return;
                }
                sent = rv;
            }
            tokio::select! {
                _ = rx_changed.changed() => {}
                _ = bookmark_tick.tick() => {
                    if bookmarks && now_rv > sent {
                        // Every event up to now_rv of this kind was sent above.
                        sent = now_rv;
                        let bm = json!({"type": "BOOKMARK", "object": {
                            "kind": t.kind, "apiVersion": api_version(t.prefix),
                            "metadata": {"resourceVersion": sent.to_string()}}});
                        if tx.send(line(bm)).await.is_err() {
                            return;
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
        }
    });
    let mut r = Response::new(ChannelBody(rx).boxed());
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}
