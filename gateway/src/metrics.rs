//! Counters for `/metrics`, kept as atomics so the request path never takes a lock.
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// One metric family: name, type, help, and its `(labels, value)` rows.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    Vec<(String, String)>,
);

#[derive(Default)]
pub struct Metrics {
    /// Responses by status code 100..=599, indexed by `code - 100`.
    responses: Vec<AtomicU64>,
    pub upstream_connect_errors: AtomicU64,
    pub upstream_timeouts: AtomicU64,
    pub snapshot_builds: AtomicU64,
    pub snapshot_build_micros: AtomicU64,
    pub watch_restarts: AtomicU64,
    pub relists: AtomicU64,
    pub revision: AtomicU64,
    pub ready: AtomicU64,
    /// TLS handshakes refused for want of a certificate (no SNI, or an unknown name).
    pub tls_unknown_sni: AtomicU64,
    /// TLS handshakes that failed or timed out, whatever the reason.
    pub tls_handshake_failures: AtomicU64,
    /// WebSocket tunnels open now.
    pub websockets_open: AtomicU64,
    /// Client connections accepted, by worker.
    accepted: Vec<AtomicU64>,
    /// Client connections open now, by worker (checked against `--worker-connections`).
    open: Vec<AtomicU64>,
    /// Connections closed at accept because their worker had `--worker-connections` open.
    refused: Vec<AtomicU64>,
    /// Connections closed by the idle timer: no first request head within
    /// `--client-header-timeout`, or idle between requests for `--keepalive-timeout`.
    pub header_timeouts: AtomicU64,
    pub keepalive_timeouts: AtomicU64,
}

/// Per-kind gauges published with each snapshot.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConfigCounts {
    pub routes: usize,
    pub services: usize,
    pub upstreams: usize,
    pub invalid_routes: usize,
    pub invalid_services: usize,
    pub invalid_upstreams: usize,
    pub ssls: usize,
    pub invalid_ssls: usize,
    pub consumers: usize,
    pub invalid_consumers: usize,
    pub plugin_configs: usize,
    pub invalid_plugin_configs: usize,
    pub consumer_groups: usize,
    pub invalid_consumer_groups: usize,
    pub plugin_metadata: usize,
    pub invalid_plugin_metadata: usize,
    pub global_rules: usize,
    pub invalid_global_rules: usize,
}

impl Metrics {
    pub fn new(workers: usize) -> Metrics {
        Metrics {
            responses: (100..600).map(|_| AtomicU64::new(0)).collect(),
            accepted: (0..workers.max(1)).map(|_| AtomicU64::new(0)).collect(),
            open: (0..workers.max(1)).map(|_| AtomicU64::new(0)).collect(),
            refused: (0..workers.max(1)).map(|_| AtomicU64::new(0)).collect(),
            ..Default::default()
        }
    }

    /// Counts a connection open on `worker` unless `max` already are; a refused one is
    /// counted as such. Only the worker's own thread opens and closes its connections, so
    /// the load and the add cannot race each other.
    pub fn try_open(&self, worker: usize, max: u64) -> bool {
        let (Some(open), Some(refused)) = (self.open.get(worker), self.refused.get(worker)) else {
            return true;
        };
        if open.load(Relaxed) >= max {
            refused.fetch_add(1, Relaxed);
            return false;
        }
        open.fetch_add(1, Relaxed);
        true
    }

    pub fn closed(&self, worker: usize) {
        if let Some(c) = self.open.get(worker) {
            c.fetch_sub(1, Relaxed);
        }
    }

    pub fn accepted(&self, worker: usize) {
        if let Some(c) = self.accepted.get(worker) {
            c.fetch_add(1, Relaxed);
        }
    }

    pub fn response(&self, code: u16) {
        if let Some(c) = self.responses.get(usize::from(code).wrapping_sub(100)) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// `nodes`: the checked upstreams' nodes as (upstream key, address, healthy, in flight).
    pub fn render(&self, counts: &ConfigCounts, nodes: &[NodeHealthRow]) -> String {
        let mut out = String::new();
        let one = |v: u64| vec![(String::new(), v.to_string())];
        let kinds = |r: usize, s: usize, u: usize, t: usize| {
            [
                ("routes", r),
                ("services", s),
                ("upstreams", u),
                ("ssls", t),
            ]
            .into_iter()
            .map(|(k, v)| (format!("{{kind=\"{k}\"}}"), v.to_string()))
            .collect()
        };
        let codes = self
            .responses
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let v = c.load(Relaxed);
                (v > 0).then(|| (format!("{{code=\"{}\"}}", i + 100), v.to_string()))
            })
            .collect();
        let node_label = |n: &NodeHealthRow| {
            format!(
                "{{upstream=\"{}\",node=\"{}\"}}",
                escape(&n.upstream),
                escape(&n.node)
            )
        };
        let healthy = nodes
            .iter()
            .map(|n| (node_label(n), u8::from(n.healthy).to_string()))
            .collect();
        let in_flight = nodes
            .iter()
            .map(|n| (node_label(n), n.in_flight.to_string()))
            .collect();
        let per_worker = |v: &[AtomicU64]| {
            v.iter()
                .enumerate()
                .map(|(i, c)| (format!("{{worker=\"{i}\"}}"), c.load(Relaxed).to_string()))
                .collect()
        };
        let rows: [Family; 20] = [
            (
                "gateway_connections_accepted_total",
                "counter",
                "Client connections accepted (HTTP and HTTPS), by worker thread.",
                per_worker(&self.accepted),
            ),
            (
                "gateway_connections_open",
                "gauge",
                "Client connections open now, by worker thread.",
                per_worker(&self.open),
            ),
            (
                "gateway_connections_refused_total",
                "counter",
                "Client connections closed at accept because their worker had --worker-connections open.",
                per_worker(&self.refused),
            ),
            (
                "gateway_client_idle_closes_total",
                "counter",
                "Client connections closed for sending no request: before the first head (header) or between requests (keepalive).",
                vec![
                    (
                        "{phase=\"header\"}".to_string(),
                        self.header_timeouts.load(Relaxed).to_string(),
                    ),
                    (
                        "{phase=\"keepalive\"}".to_string(),
                        self.keepalive_timeouts.load(Relaxed).to_string(),
                    ),
                ],
            ),
            (
                "gateway_tls_unknown_sni_total",
                "counter",
                "TLS handshakes refused: no SNI, or no certificate for the name.",
                one(self.tls_unknown_sni.load(Relaxed)),
            ),
            (
                "gateway_tls_handshake_failures_total",
                "counter",
                "TLS handshakes that failed or timed out.",
                one(self.tls_handshake_failures.load(Relaxed)),
            ),
            (
                "gateway_websockets_open",
                "gauge",
                "WebSocket tunnels open now.",
                one(self.websockets_open.load(Relaxed)),
            ),
            (
                "gateway_upstream_node_healthy",
                "gauge",
                "1 while a node of an upstream with checks is healthy, 0 while it is skipped.",
                healthy,
            ),
            (
                "gateway_upstream_node_in_flight",
                "gauge",
                "Requests in flight to a node of an upstream with checks.",
                in_flight,
            ),
            (
                "gateway_http_responses_total",
                "counter",
                "Responses sent to clients by status code.",
                codes,
            ),
            (
                "gateway_upstream_connect_errors_total",
                "counter",
                "Failed attempts to connect to an upstream node.",
                one(self.upstream_connect_errors.load(Relaxed)),
            ),
            (
                "gateway_upstream_timeouts_total",
                "counter",
                "Upstream requests that timed out.",
                one(self.upstream_timeouts.load(Relaxed)),
            ),
            (
                "gateway_config_revision",
                "gauge",
                "etcd revision of the applied configuration.",
                one(self.revision.load(Relaxed)),
            ),
            (
                "gateway_ready",
                "gauge",
                "1 once the first full list from etcd is applied.",
                one(self.ready.load(Relaxed)),
            ),
            (
                "gateway_snapshot_builds_total",
                "counter",
                "Routing snapshots compiled and swapped in.",
                one(self.snapshot_builds.load(Relaxed)),
            ),
            (
                "gateway_snapshot_build_seconds_total",
                "counter",
                "Time spent compiling snapshots.",
                vec![(
                    String::new(),
                    format!(
                        "{:.6}",
                        self.snapshot_build_micros.load(Relaxed) as f64 / 1e6
                    ),
                )],
            ),
            (
                "gateway_etcd_watch_restarts_total",
                "counter",
                "Times the etcd watch was re-established after an error.",
                one(self.watch_restarts.load(Relaxed)),
            ),
            (
                "gateway_etcd_relists_total",
                "counter",
                "Full lists of the prefix (start-up, after compaction).",
                one(self.relists.load(Relaxed)),
            ),
            (
                "gateway_config_resources",
                "gauge",
                "Valid resources in the applied configuration.",
                kinds(
                    counts.routes,
                    counts.services,
                    counts.upstreams,
                    counts.ssls,
                ),
            ),
            (
                "gateway_config_invalid_resources",
                "gauge",
                "Resources in etcd that failed to parse or validate and are disabled.",
                kinds(
                    counts.invalid_routes,
                    counts.invalid_services,
                    counts.invalid_upstreams,
                    counts.invalid_ssls,
                ),
            ),
        ];
        for (name, kind, help, values) in rows {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in values {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        }
        out
    }
}

/// One node of an upstream with `checks`, as `/status` and `/metrics` show it.
pub struct NodeHealthRow {
    pub upstream: String,
    pub node: String,
    pub healthy: bool,
    pub state: &'static str,
    pub in_flight: usize,
}

/// Label values are ids and `host:port`s, but a stray quote must not break the format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
