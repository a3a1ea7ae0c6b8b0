//! The status listener: liveness, readiness, a JSON summary and Prometheus metrics.
use crate::lb::health::State;
use crate::metrics::{Families, Family, NodeHealthRow, Value};
use crate::prometheus::RequestCollector;
use crate::proxy::{full, RespBody};
use crate::snapshot::Snapshot;
use crate::Shared;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    // Out of file descriptors: back off rather than spin a core.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::stopped(&mut shutdown) => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&shared, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// The nodes of every upstream with `checks`, sorted for stable output.
fn node_health(snap: &Snapshot) -> Vec<NodeHealthRow> {
    let mut rows: Vec<NodeHealthRow> = snap
        .checked
        .iter()
        .flat_map(|(key, rt)| {
            rt.nodes.iter().map(move |n| {
                let h = n.state.health.get();
                NodeHealthRow {
                    upstream: key.clone(),
                    node: n.addr.clone(),
                    healthy: h.is_healthy(),
                    state: match h.state() {
                        State::Healthy => "healthy",
                        State::MostlyHealthy => "mostly_healthy",
                        State::MostlyUnhealthy => "mostly_unhealthy",
                        State::Unhealthy => "unhealthy",
                    },
                    in_flight: n.state.in_flight.get(),
                }
            })
        })
        .collect();
    rows.sort_by(|a, b| (&a.upstream, &a.node).cmp(&(&b.upstream, &b.node)));
    rows
}

/// Every metric in the Prometheus text format: the status listener's `/metrics` and
/// `/apisix/prometheus/metrics`, and a route's `public-api`.
pub fn exposition(shared: &Shared) -> String {
    let snap = shared.snapshot.load();
    let mut families = shared.metrics.families(
        &snap.counts,
        &node_health(&snap),
        shared.etcd_connected.load(Ordering::Relaxed),
    );
    if let Some(log) = &shared.access_log {
        families.push(Family(
            "gateway_access_log_dropped",
            MetricType::Counter,
            "Access log lines dropped because the writer fell behind.",
            vec![(Vec::new(), Value::Int(log.dropped()))],
        ));
    }
    if let Some(out) = snap.states.outbound() {
        let rows = |o: &crate::outbound::Outcomes| {
            [
                ("sent", &o.sent),
                ("failed", &o.failed),
                ("dropped", &o.dropped),
            ]
            .into_iter()
            .map(|(k, v)| {
                (
                    vec![("result", k.to_string())],
                    Value::Int(v.load(Ordering::Relaxed)),
                )
            })
            .collect()
        };
        families.push(Family(
            "gateway_mirror_requests",
            MetricType::Counter,
            "proxy-mirror copies: sent (any answer), failed (no answer), dropped (queue full or body too large).",
            rows(&out.mirror),
        ));
        families.push(Family(
            "gateway_http_logger_entries",
            MetricType::Counter,
            "http-logger entries: sent, failed (after every retry), dropped (buffer full).",
            rows(&out.logger),
        ));
    }
    families.push(Family(
        "apisix_node_info",
        MetricType::Gauge,
        "Info of this gateway",
        vec![(
            vec![("hostname", common::host::hostname().to_string())],
            Value::Int(1),
        )],
    ));
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Families(families)));
    registry.register_collector(Box::new(RequestCollector(shared.requests.clone())));
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_text::encode(&mut text, &registry);
    text
}

fn answer(shared: &Shared, req: &Request<Incoming>) -> Response<RespBody> {
    let snap = shared.snapshot.load();
    let ready = shared.ready.load(Ordering::Relaxed);
    let (status, ctype, body) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" if ready => (StatusCode::OK, "text/plain", "ready\n".to_string()),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready: the first full list from etcd is not applied yet\n".to_string(),
        ),
        "/status" => {
            let c = snap.counts;
            let body = serde_json::json!({
                "ready": ready,
                "revision": shared.metrics.revision.load(Ordering::Relaxed),
                "snapshot_revision": snap.revision,
                "routes": c.routes,
                "services": c.services,
                "upstreams": c.upstreams,
                "ssls": c.ssls,
                "consumers": c.consumers,
                "plugin_configs": c.plugin_configs,
                "consumer_groups": c.consumer_groups,
                "plugin_metadata": c.plugin_metadata,
                "global_rules": c.global_rules,
                "invalid": {
                    "routes": c.invalid_routes,
                    "services": c.invalid_services,
                    "upstreams": c.invalid_upstreams,
                    "ssls": c.invalid_ssls,
                    "consumers": c.invalid_consumers,
                    "plugin_configs": c.invalid_plugin_configs,
                    "consumer_groups": c.invalid_consumer_groups,
                    "plugin_metadata": c.invalid_plugin_metadata,
                    "global_rules": c.invalid_global_rules,
                },
                "invalid_resources": snap.invalid.iter().map(|(kind, id, error)| serde_json::json!({
                    "kind": kind.as_str(),
                    "id": id.to_string(),
                    "error": error,
                })).collect::<Vec<_>>(),
                "etcd_connected": shared.etcd_connected.load(Ordering::Relaxed),
                "workers": shared.workers,
                "idle_upstream_connections": shared.pool.idle_count(),
                // Counted for the routes that carry the `prometheus` plugin (or under a
                // global rule that does), as `apisix_http_status` is.
                "route_requests": shared.requests.by_route(),
                "upstream_health": node_health(&snap).iter().map(|n| serde_json::json!({
                    "upstream": n.upstream,
                    "node": n.node,
                    "healthy": n.healthy,
                    "state": n.state,
                    "in_flight": n.in_flight,
                })).collect::<Vec<_>>(),
            });
            (StatusCode::OK, "application/json", body.to_string())
        }
        "/metrics" | model::plugins::prometheus::EXPORT_URI => (
            StatusCode::OK,
            prometheus_text::CONTENT_TYPE,
            exposition(shared),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}
