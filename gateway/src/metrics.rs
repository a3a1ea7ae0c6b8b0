//! Counters for `/metrics`, kept as atomics so the request path never takes a lock.
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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
    /// File mode: loads of the configuration file that were applied, and those refused.
    pub config_file_loads: AtomicU64,
    pub config_file_errors: AtomicU64,
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
    /// Idle plain-HTTP connections held outside any task now (`park`).
    pub parked: AtomicU64,
    /// Plain HTTP connections the own HTTP/1.1 loop handed to hyper (`h1_server`): the
    /// first request it does not take (a body, an upgrade, HTTP/2, HTTP/1.0, a bad head).
    pub http1_handovers: AtomicU64,
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

    /// Every metric as one family per row, for the exposition (`status::exposition`).
    /// `nodes`: the checked upstreams' nodes.
    pub fn families(
        &self,
        counts: &ConfigCounts,
        nodes: &[NodeHealthRow],
        etcd_connected: bool,
    ) -> Vec<Family> {
        let one = |v: u64| vec![(Vec::new(), Value::Int(v))];
        let kinds = |r: usize, s: usize, u: usize, t: usize| {
            [
                ("routes", r),
                ("services", s),
                ("upstreams", u),
                ("ssls", t),
            ]
            .into_iter()
            .map(|(k, v)| (vec![("kind", k.to_string())], Value::Int(v as u64)))
            .collect()
        };
        let codes = self
            .responses
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let v = c.load(Relaxed);
                (v > 0).then(|| (vec![("code", (i + 100).to_string())], Value::Int(v)))
            })
            .collect();
        let node_labels =
            |n: &NodeHealthRow| vec![("upstream", n.upstream.clone()), ("node", n.node.clone())];
        let healthy = nodes
            .iter()
            .map(|n| (node_labels(n), Value::Int(u64::from(n.healthy))))
            .collect();
        let in_flight = nodes
            .iter()
            .map(|n| (node_labels(n), Value::Int(n.in_flight as u64)))
            .collect();
        // APISIX's: the node's address split into ip and port, the upstream as `name`.
        let upstream_status = nodes
            .iter()
            .map(|n| {
                let (ip, port) = n.node.rsplit_once(':').unwrap_or((&n.node, ""));
                let labels = vec![
                    ("name", n.upstream.clone()),
                    ("ip", ip.trim_matches(['[', ']']).to_string()),
                    ("port", port.to_string()),
                ];
                (labels, Value::Int(u64::from(n.healthy)))
            })
            .collect();
        let per_worker = |v: &[AtomicU64]| {
            v.iter()
                .enumerate()
                .map(|(i, c)| (vec![("worker", i.to_string())], Value::Int(c.load(Relaxed))))
                .collect()
        };
        let sum = |v: &[AtomicU64]| v.iter().map(|c| c.load(Relaxed)).sum::<u64>();
        let accepted = sum(&self.accepted);
        let responses = sum(&self.responses);
        use MetricType::{Counter, Gauge};
        vec![
            Family("gateway_connections_accepted", Counter,
                "Client connections accepted (HTTP and HTTPS), by worker thread.",
                per_worker(&self.accepted)),
            Family("gateway_connections_open", Gauge,
                "Client connections open now, by worker thread.",
                per_worker(&self.open)),
            Family("gateway_connections_refused", Counter,
                "Client connections closed at accept because their worker had --worker-connections open.",
                per_worker(&self.refused)),
            Family("gateway_client_idle_closes", Counter,
                "Client connections closed for sending no request: before the first head (header) or between requests (keepalive).",
                vec![
                    (vec![("phase", "header".into())], Value::Int(self.header_timeouts.load(Relaxed))),
                    (vec![("phase", "keepalive".into())], Value::Int(self.keepalive_timeouts.load(Relaxed))),
                ]),
            Family("gateway_connections_parked", Gauge,
                "Idle plain-HTTP client connections held outside any task now (idle for 0.1 s or more; they count as open).",
                one(self.parked.load(Relaxed))),
            Family("gateway_http1_handovers", Counter,
                "Plain HTTP connections the gateway's own HTTP/1.1 loop handed to hyper at a request it does not serve (a body, an upgrade, HTTP/2, HTTP/1.0, a head it does not parse).",
                one(self.http1_handovers.load(Relaxed))),
            Family("gateway_tls_unknown_sni", Counter,
                "TLS handshakes refused: no SNI, or no certificate for the name.",
                one(self.tls_unknown_sni.load(Relaxed))),
            Family("gateway_tls_handshake_failures", Counter,
                "TLS handshakes that failed or timed out.",
                one(self.tls_handshake_failures.load(Relaxed))),
            Family("gateway_websockets_open", Gauge,
                "WebSocket tunnels open now.",
                one(self.websockets_open.load(Relaxed))),
            Family("gateway_upstream_node_healthy", Gauge,
                "1 while a node of an upstream with checks is healthy, 0 while it is skipped.",
                healthy),
            Family("gateway_upstream_node_in_flight", Gauge,
                "Requests in flight to a node of an upstream with checks.",
                in_flight),
            Family("gateway_http_responses", Counter,
                "Responses sent to clients by status code.",
                codes),
            Family("gateway_upstream_connect_errors", Counter,
                "Failed attempts to connect to an upstream node.",
                one(self.upstream_connect_errors.load(Relaxed))),
            Family("gateway_upstream_timeouts", Counter,
                "Upstream requests that timed out.",
                one(self.upstream_timeouts.load(Relaxed))),
            Family("gateway_config_revision", Gauge,
                "etcd revision of the applied configuration.",
                one(self.revision.load(Relaxed))),
            Family("gateway_ready", Gauge,
                "1 once the first full list from etcd is applied.",
                one(self.ready.load(Relaxed))),
            Family("gateway_snapshot_builds", Counter,
                "Routing snapshots compiled and swapped in.",
                one(self.snapshot_builds.load(Relaxed))),
            Family("gateway_snapshot_build_seconds", Counter,
                "Time spent compiling snapshots.",
                vec![(Vec::new(), Value::Float(self.snapshot_build_micros.load(Relaxed) as f64 / 1e6))]),
            Family("gateway_etcd_watch_restarts", Counter,
                "Times the etcd watch was re-established after an error.",
                one(self.watch_restarts.load(Relaxed))),
            Family("gateway_etcd_relists", Counter,
                "Full lists of the prefix (start-up, after compaction).",
                one(self.relists.load(Relaxed))),
            Family("gateway_config_file_loads", Counter,
                "File mode: versions of the configuration file applied.",
                one(self.config_file_loads.load(Relaxed))),
            Family("gateway_config_file_errors", Counter,
                "File mode: versions of the configuration file refused (the last good one stays).",
                one(self.config_file_errors.load(Relaxed))),
            Family("gateway_config_resources", Gauge,
                "Valid resources in the applied configuration.",
                kinds(counts.routes, counts.services, counts.upstreams, counts.ssls)),
            Family("gateway_config_invalid_resources", Gauge,
                "Resources in etcd that failed to parse or validate and are disabled.",
                kinds(counts.invalid_routes, counts.invalid_services, counts.invalid_upstreams, counts.invalid_ssls)),
            // APISIX's names for what nginx's stub_status and its etcd client report.
            Family("apisix_nginx_http_current_connections", Gauge,
                "Number of HTTP connections",
                vec![
                    (vec![("state", "active".into())], Value::Int(sum(&self.open))),
                    (vec![("state", "accepted".into())], Value::Int(accepted)),
                    (vec![("state", "handled".into())], Value::Int(accepted.saturating_sub(sum(&self.refused)))),
                ]),
            Family("apisix_http_requests", Counter,
                "The total number of client requests since this gateway started",
                one(responses)),
            Family("apisix_etcd_reachable", Gauge,
                "Config server etcd reachable from this gateway, 0 is unreachable",
                one(u64::from(etcd_connected))),
            Family("apisix_etcd_modify_indexes", Gauge,
                "Etcd modify index for APISIX keys (x_etcd_index: the revision applied)",
                vec![(vec![("key", "x_etcd_index".into())], Value::Int(self.revision.load(Relaxed)))]),
            Family("apisix_upstream_status", Gauge,
                "Upstream status from health check",
                upstream_status),
        ]
    }
}

/// A label set: names are static, values are ids and addresses.
pub type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

/// One metric family: its name (without `_total`, which the encoder adds to counters),
/// type, help, and its rows.
#[derive(Debug)]
pub struct Family(
    pub &'static str,
    pub MetricType,
    pub &'static str,
    pub Vec<(Labels, Value)>,
);

/// The families as a `prometheus-client` collector.
#[derive(Debug)]
pub struct Families(pub Vec<Family>);

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for Family(name, kind, help, rows) in &self.0 {
            let mut family = encoder.encode_descriptor(name, help, None, *kind)?;
            for (labels, value) in rows {
                let mut m = family.encode_family(labels)?;
                match (kind, value) {
                    (MetricType::Counter, Value::Int(v)) => {
                        m.encode_counter::<Labels, _, u64>(v, None)?
                    }
                    (MetricType::Counter, Value::Float(v)) => {
                        m.encode_counter::<Labels, _, f64>(v, None)?
                    }
                    (_, Value::Int(v)) => m.encode_gauge(v)?,
                    (_, Value::Float(v)) => m.encode_gauge(v)?,
                }
            }
        }
        Ok(())
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
