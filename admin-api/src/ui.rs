//! A read-only dashboard at `/ui/` (behind the admin key; a browser passes it as
//! `?api_key=`, and a viewer key is enough): the gateway replicas and their lag, routes
//! (searchable), upstreams with each node's health as every replica sees it, certificates
//! with their expiry, the resources the replicas skipped as invalid, with the reason, and
//! each route's requests per second and responses by status class (for routes counted by
//! the `prometheus` plugin; the rate is over the time since the previous view).
//! Rendered on the server from etcd and from each replica's `/status` (asked at the status
//! address it reports, 1 s at most); a little plain JavaScript filters the routes and
//! reloads the page every 5 s. Nothing is loaded from elsewhere.
use crate::cluster;
use crate::error::ApiError;
use crate::App;
use axum::extract::State;
use axum::http::Uri;
use axum::response::Html;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use model::calendar::date;
use model::cluster::Report;
use model::Kind;
use serde_json::Value;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// How long a replica's `/status` may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// The most of a replica's `/status` read (a few KB normally; 100 invalid resources and
/// thousands of health-checked nodes stay well under).
const STATUS_LIMIT: usize = 4 << 20;

/// `GET /ui/`.
pub async fn page(State(app): State<Arc<App>>, uri: Uri) -> Result<Html<String>> {
    crate::handlers::query(&uri, &[])?;
    let (_, latest) = app
        .store
        .latest_write(&model::key::root_prefix(app.store.prefix()))
        .await?;
    let mut reports = cluster::reports(&app).await?;
    reports.sort_by(|a, b| a.id.cmp(&b.id));
    let mut statuses = tokio::task::JoinSet::new();
    let local = common::host::hostname();
    for (i, r) in reports.iter().enumerate() {
        let Some(addr) = status_addr(r, local) else {
            continue;
        };
        statuses.spawn(async move { (i, fetch_status(&addr).await) });
    }
    let mut status: Vec<Option<Value>> = vec![None; reports.len()];
    while let Some(joined) = statuses.join_next().await {
        if let Ok((i, s)) = joined {
            status[i] = s;
        }
    }
    let list = |kind| {
        let app = app.clone();
        async move {
            let listing = app.store.list(kind, None).await?;
            Ok::<_, ApiError>(
                listing
                    .entries
                    .iter()
                    .map(|e| crate::handlers::stored_json(&e.value))
                    .collect::<Vec<Value>>(),
            )
        }
    };
    let sample = crate::traffic::Sample::new(
        app.started.elapsed().as_secs_f64(),
        reports.iter().map(|r| r.id.as_str()).zip(&status),
    );
    let traffic = sample.totals();
    let rates = {
        let mut last = app.traffic.lock().unwrap_or_else(|p| p.into_inner());
        let rates = crate::traffic::rates(last.as_ref(), &sample);
        *last = Some(sample.clone());
        rates
    };
    let routes = list(Kind::Routes).await?;
    let upstreams = list(Kind::Upstreams).await?;
    let ssls = list(Kind::Ssls).await?;
    Ok(Html(render(&Data {
        latest,
        reports: &reports,
        status: &status,
        routes: &routes,
        upstreams: &upstreams,
        ssls: &ssls,
        traffic: &traffic,
        rates: &rates,
        now: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    })))
}

/// The status listener a replica reports, with an unspecified address (it listens on
/// all) replaced by its host name. A loopback address is only reachable from the same
/// host: another host's replica is left unasked (`None`) rather than confused with ours.
fn status_addr(r: &Report, local_host: &str) -> Option<String> {
    let addr = r.listen.get(2).cloned().unwrap_or_default();
    if let Some(port) = addr
        .strip_prefix("0.0.0.0:")
        .or_else(|| addr.strip_prefix("[::]:"))
    {
        return Some(format!("{}:{port}", r.hostname));
    }
    let loopback = addr
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback());
    (!loopback || r.hostname == local_host).then_some(addr)
}

async fn fetch_status(addr: &str) -> Option<Value> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
        tokio::spawn(conn);
        let req = http::Request::get("/status")
            .header(http::header::HOST, addr)
            .body(Empty::<Bytes>::new())
            .ok()?;
        let resp = tx.send_request(req).await.ok()?;
        let body = http_body_util::Limited::new(resp.into_body(), STATUS_LIMIT)
            .collect()
            .await
            .ok()?
            .to_bytes();
        serde_json::from_slice(&body).ok()
    };
    tokio::time::timeout(STATUS_TIMEOUT, exchange).await.ok()?
}

pub struct Data<'a> {
    pub latest: i64,
    pub reports: &'a [Report],
    /// Each report's replica's `/status`, when it answered.
    pub status: &'a [Option<Value>],
    pub routes: &'a [Value],
    pub upstreams: &'a [Value],
    pub ssls: &'a [Value],
    /// Responses by status class per route label, over every replica.
    pub traffic: &'a crate::traffic::Totals,
    /// Requests per second per route label since the previous view.
    pub rates: &'a std::collections::BTreeMap<String, f64>,
    /// Unix seconds.
    pub now: u64,
}

/// Text made safe for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON value shown as text: strings as they are, lists joined, the rest as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// The first of these fields that is set.
fn either(v: &Value, one: &str, many: &str) -> String {
    match (&v[one], &v[many]) {
        (Value::Null, m) => text(m),
        (o, _) => text(o),
    }
}

fn nodes(upstream: &Value) -> Vec<(String, String)> {
    match &upstream["nodes"] {
        Value::Object(m) => m.iter().map(|(k, w)| (k.clone(), text(w))).collect(),
        Value::Array(list) => list
            .iter()
            .map(|n| {
                (
                    format!("{}:{}", text(&n["host"]), text(&n["port"])),
                    text(&n["weight"]),
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}\
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.bad{color:#b00;font-weight:600}.ok{color:#070}.muted{color:#777}\
input{padding:.3em;width:20em}";

const SCRIPT: &str = "const q=document.getElementById('q');\
q.addEventListener('input',()=>{const t=q.value.toLowerCase();\
for(const r of document.querySelectorAll('#routes tbody tr')){r.hidden=!r.textContent.toLowerCase().includes(t)}});\
setInterval(()=>{if(!q.value)location.reload()},5000);";

/// The page. Every value from etcd or a replica goes through [`esc`].
pub fn render(d: &Data<'_>) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Gateway</title><style>{STYLE}</style></head><body>\
         <h1>Gateway</h1><p class=\"muted\">Configuration revision {} · {} replica(s) · read-only, reloads every 5 s</p>",
        d.latest,
        d.reports.len()
    );

    h.push_str("<h2>Replicas</h2><table id=\"replicas\"><thead><tr><th>id</th><th>host</th><th>version</th><th>listen</th><th>zone</th><th>applied revision</th><th>lag</th><th>etcd watch</th><th>invalid resources</th></tr></thead><tbody>");
    if d.reports.is_empty() {
        h.push_str("<tr><td colspan=\"9\" class=\"muted\">no replica is reporting</td></tr>");
    }
    for r in d.reports {
        let lag = (d.latest - r.applied_revision).max(0);
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            esc(&r.id),
            esc(&r.hostname),
            esc(&r.version),
            esc(&r.listen.join(" ")),
            esc(r.zone.as_deref().unwrap_or("")),
            r.applied_revision,
            if lag == 0 { "ok" } else { "bad" },
            if lag == 0 { "in sync".to_string() } else { format!("{lag} behind") },
            if r.watch_connected { "ok" } else { "bad" },
            if r.watch_connected { "connected" } else { "disconnected" },
            r.invalid_resources,
        );
    }
    h.push_str("</tbody></table>");

    let _ = write!(
        h,
        "<h2>Routes ({})</h2><p><input id=\"q\" placeholder=\"search routes\" aria-label=\"search routes\"></p>\
         <table id=\"routes\"><thead><tr><th>id</th><th>name</th><th>uris</th><th>hosts</th><th>methods</th><th>upstream</th><th>plugins</th><th>status</th><th>requests/s</th><th>responses</th></tr></thead><tbody>",
        d.routes.len()
    );
    for r in d.routes {
        let upstream = match &r["upstream_id"] {
            Value::Null if r["upstream"].is_object() => nodes(&r["upstream"])
                .iter()
                .map(|(n, w)| format!("{n} ({w})"))
                .collect::<Vec<_>>()
                .join(", "),
            id => text(id),
        };
        let plugins = match &r["plugins"] {
            Value::Object(m) => m.keys().cloned().collect::<Vec<_>>().join(", "),
            _ => String::new(),
        };
        let enabled = r["status"].as_i64() != Some(0);
        // The prometheus plugin labels a route by id, or by name under `prefer_name`.
        let label = [text(&r["id"]), text(&r["name"])]
            .into_iter()
            .find(|l| !l.is_empty() && d.traffic.contains_key(l));
        let (rate, mix) = match &label {
            Some(l) => (
                d.rates
                    .get(l)
                    .map_or("—".to_string(), |r| format!("{r:.1}")),
                d.traffic[l]
                    .iter()
                    .map(|(class, n)| format!("{class} {n}"))
                    .collect::<Vec<_>>()
                    .join(" · "),
            ),
            None => ("—".to_string(), "not counted".to_string()),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&text(&r["id"])),
            esc(&text(&r["name"])),
            esc(&either(r, "uri", "uris")),
            esc(&either(r, "host", "hosts")),
            esc(&text(&r["methods"])),
            esc(&upstream),
            esc(&plugins),
            if enabled { "ok" } else { "muted" },
            if enabled { "enabled" } else { "disabled" },
            esc(&rate),
            esc(&mix),
        );
    }
    h.push_str("</tbody></table><p class=\"muted\">Requests are counted for routes that carry the <code>prometheus</code> plugin (or under a global rule that does); the rate is over the time since the previous view.</p>");

    // Node health as each replica sees it: "upstream/node" → (replica, state).
    let mut health: Vec<(String, String, String, bool, String)> = Vec::new();
    for (r, s) in d.reports.iter().zip(d.status) {
        let Some(rows) = s.as_ref().and_then(|s| s["upstream_health"].as_array()) else {
            continue;
        };
        for row in rows {
            health.push((
                text(&row["upstream"]),
                text(&row["node"]),
                r.id.clone(),
                row["healthy"].as_bool().unwrap_or(true),
                text(&row["state"]),
            ));
        }
    }
    let _ = write!(
        h,
        "<h2>Upstreams ({})</h2><table id=\"upstreams\"><thead><tr><th>id</th><th>name</th><th>type</th><th>nodes (weight)</th></tr></thead><tbody>",
        d.upstreams.len()
    );
    for u in d.upstreams {
        let list = nodes(u)
            .iter()
            .map(|(n, w)| format!("{} ({})", esc(n), esc(w)))
            .collect::<Vec<_>>()
            .join("<br>");
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{list}</td></tr>",
            esc(&text(&u["id"])),
            esc(&text(&u["name"])),
            // APISIX's default when the upstream names none.
            esc(u["type"].as_str().unwrap_or("roundrobin")),
        );
    }
    h.push_str("</tbody></table>");
    h.push_str("<h2>Node health</h2><table id=\"health\"><thead><tr><th>upstream</th><th>node</th><th>replica</th><th>health</th><th>state</th></tr></thead><tbody>");
    if health.is_empty() {
        h.push_str("<tr><td colspan=\"5\" class=\"muted\">no node is health-checked, or no replica answered</td></tr>");
    }
    for (upstream, node, replica, healthy, state) in &health {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            esc(upstream),
            esc(node),
            esc(replica),
            if *healthy { "ok" } else { "bad" },
            if *healthy { "healthy" } else { "unhealthy" },
            esc(state),
        );
    }
    h.push_str("</tbody></table>");

    let _ = write!(
        h,
        "<h2>Certificates ({})</h2><table id=\"ssls\"><thead><tr><th>id</th><th>SNIs</th><th>expires</th></tr></thead><tbody>",
        d.ssls.len()
    );
    for s in d.ssls {
        let expiry = match s["validity_end"].as_u64() {
            Some(end) if end <= d.now => ("bad", format!("expired {}", date(end))),
            Some(end) if end - d.now < 30 * 86_400 => (
                "bad",
                format!("{} (in {} days)", date(end), (end - d.now) / 86_400),
            ),
            Some(end) => (
                "ok",
                format!("{} (in {} days)", date(end), (end - d.now) / 86_400),
            ),
            None => ("muted", "unknown".to_string()),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            esc(&text(&s["id"])),
            esc(&either(s, "sni", "snis")),
            expiry.0,
            esc(&expiry.1),
        );
    }
    h.push_str("</tbody></table>");

    h.push_str("<h2>Invalid resources</h2><table id=\"invalid\"><thead><tr><th>replica</th><th>resource</th><th>why it is skipped</th></tr></thead><tbody>");
    let mut any = false;
    for (r, s) in d.reports.iter().zip(d.status) {
        let Some(rows) = s.as_ref().and_then(|s| s["invalid_resources"].as_array()) else {
            continue;
        };
        for row in rows {
            any = true;
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"bad\">{}</td></tr>",
                esc(&r.id),
                esc(&format!("{} {}", text(&row["kind"]), text(&row["id"]))),
                esc(&text(&row["error"])),
            );
        }
    }
    if !any {
        h.push_str("<tr><td colspan=\"3\" class=\"muted\">none reported</td></tr>");
    }
    h.push_str("</tbody></table>");
    let _ = write!(h, "<script>{SCRIPT}</script></body></html>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_value_is_escaped() {
        let evil = "<script>alert(1)</script>\"'&";
        let report = Report {
            id: evil.into(),
            hostname: evil.into(),
            version: "1".into(),
            listen: vec![evil.into()],
            zone: Some(evil.into()),
            started: 0,
            workers: 1,
            applied_revision: 3,
            watch_connected: false,
            invalid_resources: 1,
        };
        let status = json!({
            "upstream_health": [{"upstream": evil, "node": evil, "healthy": false, "state": evil}],
            "invalid_resources": [{"kind": evil, "id": evil, "error": evil}],
        });
        let route = json!({"id": evil, "name": evil, "uris": [evil], "hosts": [evil], "methods": [evil],
            "upstream": {"nodes": {evil: 1}}, "plugins": {evil: {}}});
        let upstream = json!({"id": evil, "name": evil, "type": evil, "nodes": [{"host": evil, "port": 1, "weight": 2}]});
        let ssl = json!({"id": evil, "snis": [evil], "validity_end": 10});
        let page = render(&Data {
            latest: 5,
            reports: &[report],
            status: &[Some(status)],
            routes: &[route],
            upstreams: &[upstream],
            ssls: &[ssl],
            // A route label from a replica is escaped like the rest.
            traffic: &[(evil.to_string(), [(evil.to_string(), 7u64)].into())].into(),
            rates: &[(evil.to_string(), 2.5)].into(),
            now: 100,
        });
        assert!(!page.contains(evil), "an unescaped value");
        assert_eq!(
            page.matches("<script>").count(),
            1,
            "only the page's own script"
        );
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
        assert!(page.contains("2 behind"));
        assert!(page.contains("unhealthy"));
        assert!(page.contains("expired 1970-01-01"));
        assert!(page.contains("disconnected"));
        assert!(page.contains("<td>2.5</td>"), "the route's rate");
    }

    #[test]
    fn status_addresses_table() {
        let mut r = Report {
            id: "a".into(),
            hostname: "node1".into(),
            version: "1".into(),
            listen: vec![
                "0.0.0.0:80".into(),
                "0.0.0.0:443".into(),
                "0.0.0.0:9090".into(),
            ],
            zone: None,
            started: 0,
            workers: 1,
            applied_revision: 0,
            watch_connected: true,
            invalid_resources: 0,
        };
        let here = |r: &Report| status_addr(r, "node1");
        let elsewhere = |r: &Report| status_addr(r, "node2");
        assert_eq!(here(&r).as_deref(), Some("node1:9090"));
        r.listen[2] = "10.1.2.3:9090".into();
        assert_eq!(elsewhere(&r).as_deref(), Some("10.1.2.3:9090"));
        r.listen[2] = "[::]:9091".into();
        assert_eq!(elsewhere(&r).as_deref(), Some("node1:9091"));
        // The default status listener is loopback: only asked on the same host.
        r.listen[2] = "127.0.0.1:9090".into();
        assert_eq!(here(&r).as_deref(), Some("127.0.0.1:9090"));
        assert_eq!(elsewhere(&r), None);
        r.listen.clear();
        assert_eq!(here(&r).as_deref(), Some(""));
    }
}
