//! The `http-logger` plugin: a JSON entry per request (APISIX's full log, or the fields of
//! `log_format`), begun when the request phases are over and completed when the response
//! is, then batched and POSTed by a [`Batcher`] on the control-plane runtime. The request
//! path only hands the entry to a bounded queue: a full queue drops it (counted).
use super::{Phases, Req, Run};
use crate::outbound::{Outbound, Target};
use crate::response_end::{Ended, OnEnd};
use bytes::Bytes;
use http::HeaderMap;
use model::plugins::http_logger::{HttpLogger as Conf, MAX_BATCH};
use model::vars::VarSource;
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

pub struct HttpLogger {
    conf: Conf,
    batcher: Option<Arc<Batcher>>,
}

impl HttpLogger {
    pub fn new(conf: Conf, batcher: Option<Arc<Batcher>>) -> HttpLogger {
        super::log_phase_compiled();
        HttpLogger { conf, batcher }
    }
}

/// The variables only known once the response is: resolved then.
const RESPONSE_VARS: &[&str] = &[
    "status",
    "upstream_addr",
    "upstream_status",
    "upstream_response_time",
    "request_time",
    "bytes_sent",
    "body_bytes_sent",
];

/// An entry begun from the request, completed from the response.
pub struct Draft {
    batcher: Arc<Batcher>,
    entry: Map<String, Value>,
    /// `log_format` fields naming a response variable.
    pending: Vec<(String, String)>,
    /// APISIX's full log (no `log_format`): the response part is added.
    full: bool,
}

/// What the response was, for the entries.
pub struct Finished<'a> {
    pub status: u16,
    pub headers: &'a HeaderMap,
    pub upstream: Option<&'a str>,
    pub upstream_status: Option<u16>,
    pub upstream_ms: Option<f64>,
    pub started: Instant,
    pub request_len: u64,
    pub head_len: u64,
}

fn headers_json(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for (name, value) in headers {
        let v = Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned());
        match out.get_mut(name.as_str()) {
            Some(Value::Array(list)) => list.push(v),
            Some(first) => *first = Value::Array(vec![first.take(), v]),
            None => {
                out.insert(name.as_str().to_string(), v);
            }
        }
    }
    Value::Object(out)
}

impl Phases for HttpLogger {
    fn in_rewrite(&self) -> bool {
        false
    }

    fn before_response(&self, req: &Req<'_>, run: &mut Run) {
        let Some(batcher) = &self.batcher else { return };
        let vars = req.vars();
        let mut entry = Map::new();
        let mut pending = Vec::new();
        let full = self.conf.log_format.is_none();
        match &self.conf.log_format {
            Some(format) => {
                for (key, v) in format {
                    let v = v.as_str().unwrap_or_default();
                    match v.strip_prefix('$') {
                        Some(name) if RESPONSE_VARS.contains(&name) => {
                            pending.push((key.clone(), name.to_string()));
                        }
                        Some(name) => {
                            let value = vars.get(name).map(|v| v.into_owned());
                            entry.insert(key.clone(), value.map_or(Value::Null, Value::String));
                        }
                        None => {
                            entry.insert(key.clone(), Value::String(v.to_string()));
                        }
                    }
                }
            }
            None => {
                let parts = &*req.parts;
                let query: Map<String, Value> = parts
                    .uri
                    .query()
                    .map(|q| form_pairs(q).map(|(k, v)| (k, Value::String(v))).collect())
                    .unwrap_or_default();
                let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
                let start_ms = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                entry.insert(
                    "request".into(),
                    json!({
                        "url": format!("{}://{}:{}{}", req.conn.scheme, req.host, req.conn.local.port(), pq),
                        "uri": pq,
                        "method": parts.method.as_str(),
                        "headers": headers_json(&parts.headers),
                        "querystring": query,
                    }),
                );
                entry.insert("client_ip".into(), json!(req.conn.remote.ip().to_string()));
                entry.insert("start_time".into(), json!(start_ms));
                entry.insert(
                    "server".into(),
                    json!({"hostname": common::host::hostname(), "version": env!("CARGO_PKG_VERSION")}),
                );
                if let Some(c) = &req.consumer {
                    entry.insert("consumer".into(), json!({"username": c.username}));
                }
            }
        }
        entry.insert("route_id".into(), json!(req.route_id.unwrap_or_default()));
        entry.insert(
            "service_id".into(),
            json!(req.service_id.unwrap_or_default()),
        );
        run.log = Some(Box::new(Draft {
            batcher: batcher.clone(),
            entry,
            pending,
            full,
        }));
    }
}

/// `a=1&b=2` as (name, value) pairs, percent-decoded.
fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (decode(k), decode(v))
    })
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).copied(),
            bytes.get(i + 2).copied(),
        ) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(v as u8);
                i += 2;
            }
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Draft {
    /// What completes and queues the entry once the response body is done.
    pub fn on_end(self, f: &Finished<'_>) -> OnEnd {
        let mut d = self;
        let response_headers = d.full.then(|| headers_json(f.headers));
        let (status, upstream, upstream_status, upstream_ms, started, request_len, head_len) = (
            f.status,
            f.upstream.map(str::to_string),
            f.upstream_status,
            f.upstream_ms,
            f.started,
            f.request_len,
            f.head_len,
        );
        Box::new(move |ended: Ended| {
            let latency = started.elapsed().as_secs_f64() * 1e3;
            let bytes_sent = head_len + ended.body_bytes;
            for (key, var) in d.pending.drain(..) {
                let v = match var.as_str() {
                    "status" => json!(status.to_string()),
                    "upstream_addr" => json!(upstream.clone()),
                    "upstream_status" => json!(upstream_status.map(|s| s.to_string())),
                    "upstream_response_time" => {
                        json!(upstream_ms.map(|ms| format!("{:.3}", ms / 1e3)))
                    }
                    "request_time" => json!(format!("{:.3}", latency / 1e3)),
                    "bytes_sent" => json!(bytes_sent.to_string()),
                    _ => json!(ended.body_bytes.to_string()),
                };
                d.entry.insert(key, v);
            }
            if let Some(headers) = response_headers {
                if let Some(Value::Object(r)) = d.entry.get_mut("request") {
                    r.insert("size".into(), json!(request_len));
                }
                d.entry.insert(
                    "response".into(),
                    json!({"status": status, "headers": headers, "size": bytes_sent}),
                );
                d.entry
                    .insert("upstream".into(), json!(upstream.unwrap_or_default()));
                d.entry.insert("latency".into(), json!(latency));
                if let Some(up) = upstream_ms {
                    d.entry.insert("upstream_latency".into(), json!(up));
                }
                d.entry.insert(
                    "apisix_latency".into(),
                    json!((latency - upstream_ms.unwrap_or(0.0)).max(0.0)),
                );
            }
            d.batcher.push(Value::Object(d.entry));
        })
    }
}

/// The batch queue of one `http-logger` configuration and the task that sends it.
pub struct Batcher {
    /// `None` when no batch can be sent (no runtime, or the URL cannot be used).
    tx: Option<mpsc::Sender<Value>>,
    outbound: Arc<Outbound>,
}

impl Batcher {
    /// Starts the sending task on the calling runtime; it ends, after sending what it
    /// holds, once the batcher is dropped (its configuration is gone).
    pub fn start(conf: Arc<Conf>, outbound: Arc<Outbound>) -> Batcher {
        let target = Target::parse(&conf.uri, conf.ssl_verify);
        let runtime = tokio::runtime::Handle::try_current();
        let tx = match (target, runtime) {
            (Ok(target), Ok(rt)) => {
                let (tx, rx) = mpsc::channel(MAX_BATCH as usize);
                rt.spawn(send_batches(rx, conf, target, outbound.clone()));
                Some(tx)
            }
            (Err(e), _) => {
                tracing::warn!(uri = %conf.uri, error = %e, "http-logger: cannot send to this uri");
                None
            }
            (_, Err(_)) => None,
        };
        Batcher { tx, outbound }
    }

    pub fn push(&self, entry: Value) {
        let queued = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.try_send(entry).is_ok());
        if !queued {
            self.outbound.logger.dropped.fetch_add(1, Relaxed);
        }
    }
}

/// When the batch being filled must go: `inactive_timeout` after its last entry, or
/// `buffer_duration` after its first, whichever is sooner.
pub fn due(first: Instant, last: Instant, conf: &Conf) -> Instant {
    let inactive = last + Duration::from_secs(conf.inactive_timeout_secs);
    let oldest = first + Duration::from_secs(conf.buffer_duration_secs);
    inactive.min(oldest)
}

/// The body of one batch: a JSON array (one object alone for a batch size of 1, as
/// APISIX), or one object per line.
pub fn encode(batch: &[Value], conf: &Conf) -> Bytes {
    let text = match (conf.new_line, conf.batch_max_size == 1, batch) {
        (_, true, [one]) => one.to_string(),
        (true, _, _) => batch
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        (false, _, _) => Value::Array(batch.to_vec()).to_string(),
    };
    Bytes::from(text)
}

/// The wait before retry `attempt` (1-based): `retry_delay` doubling, at most a minute.
pub fn backoff(conf: &Conf, attempt: u64) -> Duration {
    let secs = conf
        .retry_delay_secs
        .saturating_mul(1u64 << (attempt.saturating_sub(1)).min(16));
    Duration::from_secs(secs.min(60))
}

enum Event {
    Entry(Value),
    Due,
    Closed,
}

async fn send_batches(
    mut rx: mpsc::Receiver<Value>,
    conf: Arc<Conf>,
    target: Target,
    out: Arc<Outbound>,
) {
    let mut batch: Vec<Value> = Vec::new();
    let (mut first, mut last) = (Instant::now(), Instant::now());
    loop {
        let event = match batch.is_empty() {
            true => rx.recv().await.map_or(Event::Closed, Event::Entry),
            false => {
                let at = tokio::time::Instant::from_std(due(first, last, &conf));
                tokio::select! {
                    e = rx.recv() => e.map_or(Event::Closed, Event::Entry),
                    _ = tokio::time::sleep_until(at) => Event::Due,
                }
            }
        };
        match event {
            Event::Entry(e) => {
                last = Instant::now();
                if batch.is_empty() {
                    first = last;
                }
                batch.push(e);
                if batch.len() >= conf.batch_max_size {
                    flush(&mut batch, &conf, &target, &out).await;
                }
            }
            Event::Due => flush(&mut batch, &conf, &target, &out).await,
            Event::Closed => {
                flush(&mut batch, &conf, &target, &out).await;
                return;
            }
        }
    }
}

async fn flush(batch: &mut Vec<Value>, conf: &Conf, target: &Target, out: &Outbound) {
    if batch.is_empty() {
        return;
    }
    let body = encode(batch, conf);
    let n = batch.len() as u64;
    batch.clear();
    let timeout = Duration::from_secs(conf.timeout_secs);
    for attempt in 0..=conf.max_retry_count {
        if attempt > 0 {
            tokio::time::sleep(backoff(conf, attempt)).await;
        }
        let mut req = http::Request::new(body.clone());
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = target
            .path
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("/"));
        let h = req.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        if let Some(auth) = conf
            .auth_header
            .as_deref()
            .and_then(|a| http::HeaderValue::from_str(a).ok())
        {
            h.insert(http::header::AUTHORIZATION, auth);
        }
        match out.send(target, req, timeout).await {
            Ok(status) if status.as_u16() < 400 => {
                out.logger.sent.fetch_add(n, Relaxed);
                return;
            }
            Ok(status) => {
                tracing::warn!(name = %conf.name, target = ?target, %status, attempt, "http-logger: batch refused")
            }
            Err(e) => {
                tracing::warn!(name = %conf.name, target = ?target, error = %e, attempt, "http-logger: batch not sent")
            }
        }
    }
    out.logger.failed.fetch_add(n, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(v: Value) -> Conf {
        Conf::parse(&v).unwrap()
    }

    #[test]
    fn batches_encode_as_apisix_sends_them() {
        let a = json!({"a": 1});
        let b = json!({"b": 2});
        let c = conf(json!({"uri": "http://h/x"}));
        assert_eq!(encode(std::slice::from_ref(&a), &c), r#"[{"a":1}]"#);
        assert_eq!(encode(&[a.clone(), b.clone()], &c), r#"[{"a":1},{"b":2}]"#);
        let one = conf(json!({"uri": "http://h/x", "batch_max_size": 1}));
        assert_eq!(encode(std::slice::from_ref(&a), &one), r#"{"a":1}"#);
        let lines = conf(json!({"uri": "http://h/x", "concat_method": "new_line"}));
        assert_eq!(encode(&[a, b], &lines), "{\"a\":1}\n{\"b\":2}");
    }

    #[test]
    fn a_batch_is_due_when_inactive_or_old() {
        let c = conf(json!({"uri": "http://h", "inactive_timeout": 5, "buffer_duration": 60}));
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(due(t0, t0, &c), t0 + s(5));
        assert_eq!(due(t0, t0 + s(30), &c), t0 + s(35));
        assert_eq!(
            due(t0, t0 + s(58), &c),
            t0 + s(60),
            "the oldest entry bounds it"
        );
    }

    #[test]
    fn retries_back_off_doubling_up_to_a_minute() {
        let c = conf(json!({"uri": "http://h", "retry_delay": 2, "max_retry_count": 9}));
        let got: Vec<u64> = (1..=7).map(|a| backoff(&c, a).as_secs()).collect();
        assert_eq!(got, [2, 4, 8, 16, 32, 60, 60]);
        let none = conf(json!({"uri": "http://h", "retry_delay": 0}));
        assert_eq!(backoff(&none, 3), Duration::ZERO);
    }

    #[test]
    fn query_strings_decode() {
        let got: Vec<(String, String)> = form_pairs("a=1&b=x%20y&c&d=%zz+e").collect();
        assert_eq!(
            got,
            [
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "".into()),
                ("d".into(), "%zz e".into())
            ]
        );
    }
}
