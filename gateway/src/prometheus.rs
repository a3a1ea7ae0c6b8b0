//! The `apisix_*` request metrics of the routes (or global rules) that carry the
//! `prometheus` plugin: status codes, latencies and bandwidth, with APISIX's names and
//! labels so that its Grafana dashboards work unchanged.
//!
//! Recording takes no lock that another worker takes: each worker thread has a shard of
//! its own (a mutex that only a scrape also takes, to sum the shards). A request is
//! recorded when its response body is dropped, sent or abandoned, as APISIX records in its
//! log phase: latency and bytes cover the whole response.
use model::host::HostPattern;
use model::path::PathPattern;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// APISIX's default latency buckets, in milliseconds.
pub const BUCKETS_MS: [f64; 15] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0,
    60000.0,
];

/// Label sets one worker keeps before new ones are folded into one overflow set (every
/// label `_overflow`), so that a client inventing hosts or paths cannot grow memory.
/// Routes, services, consumers and nodes come from configuration, so a real deployment
/// stays far below this.
pub const MAX_SERIES: usize = 8192;

const OVERFLOW: &str = "_overflow";

/// Routes `/status` lists in `route_requests`, the busiest first.
pub const MAX_STATUS_ROUTES: usize = 1000;

/// One request's labels, as APISIX's `http_log` sets them; an empty value is a label
/// that does not apply (no route matched, no consumer, no node reached).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Labels {
    pub route: Arc<str>,
    pub matched_uri: Arc<str>,
    pub matched_host: Arc<str>,
    pub service: Arc<str>,
    pub consumer: Arc<str>,
    pub node: Arc<str>,
}

impl Labels {
    fn overflow() -> Labels {
        let o: Arc<str> = OVERFLOW.into();
        Labels {
            route: o.clone(),
            matched_uri: o.clone(),
            matched_host: o.clone(),
            service: o.clone(),
            consumer: o.clone(),
            node: o,
        }
    }
}

/// A route's label values, made when the snapshot is built.
#[derive(Debug, Default)]
pub struct RouteLabels {
    pub id: Arc<str>,
    pub name: Option<Arc<str>>,
    pub service: Arc<str>,
    pub service_name: Option<Arc<str>>,
    /// The route's paths and hosts (its service's when it has none), as written.
    pub uris: Vec<(PathPattern, Arc<str>)>,
    pub hosts: Vec<(HostPattern, Arc<str>)>,
}

/// Which of a route's paths and hosts a request matched (indexes into
/// [`RouteLabels::uris`] and [`RouteLabels::hosts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Matched {
    pub uri: Option<u16>,
    pub host: Option<u16>,
}

impl RouteLabels {
    /// The pattern and host of this route that a request to `path` on `host` matched.
    pub fn matched(&self, path: &str, host: &str) -> Matched {
        let index = |i: usize| u16::try_from(i).ok();
        Matched {
            uri: self
                .uris
                .iter()
                .position(|(p, _)| p.matches(path))
                .and_then(index),
            host: self
                .hosts
                .iter()
                .position(|(h, _)| h.matches(host))
                .and_then(index),
        }
    }

    /// `(route, service, matched_uri, matched_host)`. `prefer_name`: the route's and
    /// service's names where they have one.
    pub fn values(&self, prefer_name: bool, m: Matched) -> [&str; 4] {
        let route = match (prefer_name, &self.name) {
            (true, Some(n)) => &**n,
            _ => &*self.id,
        };
        let service = match (prefer_name, &self.service_name) {
            (true, Some(n)) => &**n,
            _ => &*self.service,
        };
        fn at<T>(list: &[(T, Arc<str>)], i: Option<u16>) -> &str {
            i.and_then(|i| list.get(usize::from(i)))
                .map_or("", |(_, s)| &**s)
        }
        [
            route,
            service,
            at(&self.uris, m.uri),
            at(&self.hosts, m.host),
        ]
    }
}

/// A node's address as APISIX's `node` label has it: the IP, without the port.
pub fn node_label(addr: &str) -> Arc<str> {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().to_string().into(),
        Err(_) => addr.rsplit_once(':').map_or(addr, |(h, _)| h).into(),
    }
}

/// One request's label values, borrowed: a request of a series already kept copies
/// nothing and touches no shared reference count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelsRef<'a> {
    pub route: &'a str,
    pub matched_uri: &'a str,
    pub matched_host: &'a str,
    pub service: &'a str,
    pub consumer: &'a str,
    pub node: &'a str,
}

/// The route, consumer and node only: the service follows the route, and a route's few
/// matched paths and hosts share a hash (equality still tells them apart). Half the
/// hashing of every label.
impl std::hash::Hash for LabelsRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.route.hash(state);
        self.consumer.hash(state);
        self.node.hash(state);
    }
}

impl LabelsRef<'_> {
    fn owned(&self) -> Labels {
        Labels {
            route: self.route.into(),
            matched_uri: self.matched_uri.into(),
            matched_host: self.matched_host.into(),
            service: self.service.into(),
            consumer: self.consumer.into(),
            node: self.node.into(),
        }
    }
}

impl Labels {
    fn as_ref(&self) -> LabelsRef<'_> {
        LabelsRef {
            route: &self.route,
            matched_uri: &self.matched_uri,
            matched_host: &self.matched_host,
            service: &self.service,
            consumer: &self.consumer,
            node: &self.node,
        }
    }
}

/// What one finished request adds.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    pub status: u16,
    /// From the request head to the end of the response, in milliseconds.
    pub request_ms: f64,
    /// From the request sent upstream to its response head, when an upstream answered.
    pub upstream_ms: Option<f64>,
    /// Bytes of the request (head and body) and of the response (head and body sent).
    pub ingress: u64,
    pub egress: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Hist {
    buckets: [u64; BUCKETS_MS.len()],
    sum: f64,
    count: u64,
}

impl Hist {
    fn observe(&mut self, ms: f64) {
        if let Some(i) = BUCKETS_MS.iter().position(|b| ms <= *b) {
            self.buckets[i] += 1;
        }
        self.sum += ms;
        self.count += 1;
    }

    fn add(&mut self, other: &Hist) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.sum += other.sum;
        self.count += other.count;
    }
}

/// `type` label values of `apisix_http_latency`, in this order in [`Series::latency`].
const LATENCY_TYPES: [&str; 3] = ["request", "upstream", "apisix"];
const BANDWIDTH_TYPES: [&str; 2] = ["ingress", "egress"];

#[derive(Debug, Clone, Default)]
struct Series {
    /// By status code: a handful per label set.
    codes: Vec<(u16, u64)>,
    latency: [Hist; 3],
    bandwidth: [u64; 2],
}

impl Series {
    fn observe(&mut self, o: &Observation) {
        match self.codes.iter_mut().find(|(c, _)| *c == o.status) {
            Some((_, n)) => *n += 1,
            None => self.codes.push((o.status, 1)),
        }
        self.latency[0].observe(o.request_ms);
        if let Some(up) = o.upstream_ms {
            self.latency[1].observe(up);
        }
        self.latency[2].observe((o.request_ms - o.upstream_ms.unwrap_or(0.0)).max(0.0));
        self.bandwidth[0] += o.ingress;
        self.bandwidth[1] += o.egress;
    }

    fn add(&mut self, other: &Series) {
        for (code, n) in &other.codes {
            match self.codes.iter_mut().find(|(c, _)| c == code) {
                Some((_, m)) => *m += n,
                None => self.codes.push((*code, *n)),
            }
        }
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            a.add(b);
        }
        self.bandwidth[0] += other.bandwidth[0];
        self.bandwidth[1] += other.bandwidth[1];
    }
}

/// One worker's series, by a hash of their label values (hashed from borrowed values, so
/// finding a kept series copies nothing); a list per hash, for collisions.
type Shard = HashMap<u64, Vec<(Labels, Series)>>;

/// The request metrics of every worker.
pub struct RequestMetrics {
    shards: Box<[Mutex<Shard>]>,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics")
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl RequestMetrics {
    pub fn new(workers: usize) -> RequestMetrics {
        RequestMetrics {
            shards: (0..workers.max(1)).map(|_| Mutex::default()).collect(),
        }
    }

    /// Adds one request to the calling worker's shard.
    pub fn record(&self, labels: &LabelsRef<'_>, o: &Observation) {
        use std::hash::BuildHasher;
        let shard = &self.shards[crate::workers::current() % self.shards.len()];
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        let hash = foldhash::fast::FixedState::default().hash_one(labels);
        if let Some((_, s)) = shard
            .get_mut(&hash)
            .and_then(|list| list.iter_mut().find(|(l, _)| l.as_ref() == *labels))
        {
            s.observe(o);
            return;
        }
        let held: usize = shard.values().map(Vec::len).sum();
        let (hash, labels) = match held >= MAX_SERIES {
            true => {
                let o = Labels::overflow();
                (
                    foldhash::fast::FixedState::default().hash_one(o.as_ref()),
                    o,
                )
            }
            false => (hash, labels.owned()),
        };
        let list = shard.entry(hash).or_default();
        match list.iter_mut().find(|(l, _)| *l == labels) {
            Some((_, s)) => s.observe(o),
            None => {
                let mut s = Series::default();
                s.observe(o);
                list.push((labels, s));
            }
        }
    }

    /// Responses by route label (id, or name under `prefer_name`) and status class
    /// (`2xx`…`5xx`, and `1xx`), summed over the workers: the dashboard's traffic view.
    pub fn by_route(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (labels, series) in self.merged() {
            if labels.route.is_empty() {
                continue;
            }
            let route = out.entry(labels.route.to_string()).or_default();
            for (code, n) in &series.codes {
                *route.entry(format!("{}xx", code / 100)).or_default() += n;
            }
        }
        // The busiest routes only: `/status` stays small whatever the number of routes
        // (the dashboard reads at most 4 MiB of it).
        if out.len() > MAX_STATUS_ROUTES {
            let mut by_count: Vec<(u64, String)> = out
                .iter()
                .map(|(route, classes)| (classes.values().sum(), route.clone()))
                .collect();
            by_count.sort_unstable_by(|a, b| b.cmp(a));
            let keep: std::collections::BTreeSet<String> = by_count
                .into_iter()
                .take(MAX_STATUS_ROUTES)
                .map(|(_, r)| r)
                .collect();
            out.retain(|route, _| keep.contains(route));
        }
        out
    }

    /// Every shard summed, in label order.
    fn merged(&self) -> BTreeMap<Labels, Series> {
        let mut all: BTreeMap<Labels, Series> = BTreeMap::new();
        for shard in self.shards.iter() {
            let series = shard.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for (labels, s) in series.into_values().flatten() {
                all.entry(labels).or_default().add(&s);
            }
        }
        all
    }
}

/// The request metrics as a `prometheus-client` collector.
///
/// `apisix_http_status` and `apisix_bandwidth` are counters under names without
/// `_total`, which the text format's `counter` type requires (and `prometheus-client`
/// appends): they are exposed `untyped` under APISIX's exact names, on which `rate()`
/// and the dashboards work as before.
#[derive(Debug)]
pub struct RequestCollector(pub Arc<RequestMetrics>);

type LabelPairs = Vec<(&'static str, String)>;

impl Collector for RequestCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let all = self.0.merged();
        // status: every label; latency and bandwidth: without matched_uri/matched_host.
        let mut by_route: BTreeMap<[&str; 4], Series> = BTreeMap::new();
        for (l, s) in &all {
            by_route
                .entry([&l.route, &l.service, &l.consumer, &l.node])
                .or_default()
                .add(s);
        }
        let route_labels = |kind: &str, k: &[&str; 4]| -> LabelPairs {
            vec![
                ("type", kind.to_string()),
                ("route", k[0].to_string()),
                ("service", k[1].to_string()),
                ("consumer", k[2].to_string()),
                ("node", k[3].to_string()),
            ]
        };

        let mut status = encoder.encode_descriptor(
            "apisix_http_status",
            "HTTP status codes per service in APISIX",
            None,
            MetricType::Unknown,
        )?;
        for (l, s) in &all {
            let mut codes = s.codes.clone();
            codes.sort_unstable();
            for (code, n) in codes {
                let labels: LabelPairs = vec![
                    ("code", code.to_string()),
                    ("route", l.route.to_string()),
                    ("matched_uri", l.matched_uri.to_string()),
                    ("matched_host", l.matched_host.to_string()),
                    ("service", l.service.to_string()),
                    ("consumer", l.consumer.to_string()),
                    ("node", l.node.to_string()),
                ];
                status.encode_family(&labels)?.encode_gauge(&n)?;
            }
        }

        let mut latency = encoder.encode_descriptor(
            "apisix_http_latency",
            "HTTP request latency in milliseconds per service in APISIX",
            None,
            MetricType::Histogram,
        )?;
        for (k, s) in &by_route {
            for (kind, h) in LATENCY_TYPES.iter().zip(&s.latency) {
                if h.count == 0 {
                    continue;
                }
                let buckets: Vec<(f64, u64)> = BUCKETS_MS.iter().copied().zip(h.buckets).collect();
                latency
                    .encode_family(&route_labels(kind, k))?
                    .encode_histogram::<LabelPairs>(h.sum, h.count, &buckets, None)?;
            }
        }

        let mut bandwidth = encoder.encode_descriptor(
            "apisix_bandwidth",
            "Total bandwidth in bytes consumed per service in APISIX",
            None,
            MetricType::Unknown,
        )?;
        for (k, s) in &by_route {
            for (kind, bytes) in BANDWIDTH_TYPES.iter().zip(s.bandwidth) {
                bandwidth
                    .encode_family(&route_labels(kind, k))?
                    .encode_gauge(&bytes)?;
            }
        }

        Ok(())
    }
}

/// Whose request it was: what the labels are read from when it is recorded.
pub struct Owner {
    pub route: Option<Arc<RouteLabels>>,
    pub matched: Matched,
    pub prefer_name: bool,
    pub consumer: Option<Arc<crate::consumers::ConsumerRt>>,
    pub node: Option<Arc<str>>,
}

/// One request to record in `metrics` once its response is over. `obs` has what is known
/// at the response head: status, upstream latency, request bytes and the bytes of the
/// response head; the body's bytes and the total latency are added at the end. Kept
/// inline in the response body (`response_end.rs`), not boxed: it is on every request of
/// a route with the plugin.
pub struct Recording {
    pub metrics: Arc<RequestMetrics>,
    pub owner: Owner,
    pub obs: Observation,
    pub started: Instant,
}

impl Recording {
    pub fn finish(mut self, body_bytes: u64) {
        self.obs.request_ms = self.started.elapsed().as_secs_f64() * 1e3;
        self.obs.egress += body_bytes;
        let o = &self.owner;
        let [route, service, matched_uri, matched_host] = match &o.route {
            Some(r) => r.values(o.prefer_name, o.matched),
            None => [""; 4],
        };
        let labels = LabelsRef {
            route,
            matched_uri,
            matched_host,
            service,
            consumer: o.consumer.as_ref().map_or("", |c| c.username.as_str()),
            node: o.node.as_deref().unwrap_or(""),
        };
        self.metrics.record(&labels, &self.obs);
    }
}

/// The size of a request as HTTP/1.1 would carry it (nginx's `$request_length`): its head,
/// and its body when the length is declared.
pub fn request_len(parts: &http::request::Parts, body_len: Option<u64>) -> u64 {
    let line = parts.method.as_str().len()
        + 1
        + parts.uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + " HTTP/1.1\r\n".len();
    let headers: usize = parts
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
        .sum();
    (line + headers + 2) as u64 + body_len.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(route: &str, node: &str) -> Labels {
        Labels {
            route: route.into(),
            node: node.into(),
            ..Default::default()
        }
    }

    fn obs(status: u16, request_ms: f64, upstream_ms: Option<f64>) -> Observation {
        Observation {
            status,
            request_ms,
            upstream_ms,
            ingress: 100,
            egress: 10,
        }
    }

    fn exposition(m: &Arc<RequestMetrics>) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(RequestCollector(m.clone())));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn series_sum_codes_latencies_and_bytes() {
        let m = Arc::new(RequestMetrics::new(2));
        m.record(
            &labels("1", "127.0.0.1").as_ref(),
            &obs(200, 3.0, Some(1.0)),
        );
        m.record(
            &labels("1", "127.0.0.1").as_ref(),
            &obs(200, 40.0, Some(39.5)),
        );
        m.record(&labels("1", "127.0.0.1").as_ref(), &obs(503, 0.5, None));
        m.record(&labels("", "").as_ref(), &obs(404, 0.2, None));
        let text = exposition(&m);
        for line in [
            "# TYPE apisix_http_status untyped",
            r#"apisix_http_status{code="200",route="1",matched_uri="",matched_host="",service="",consumer="",node="127.0.0.1"} 2"#,
            r#"apisix_http_status{code="503",route="1",matched_uri="",matched_host="",service="",consumer="",node="127.0.0.1"} 1"#,
            r#"apisix_http_status{code="404",route="",matched_uri="",matched_host="",service="",consumer="",node=""} 1"#,
            "# TYPE apisix_http_latency histogram",
            // request latencies 3, 40 and 0.5 ms: one at or under 1, two under 5, all under 50.
            r#"apisix_http_latency_bucket{type="request",route="1",service="",consumer="",node="127.0.0.1",le="1"} 1"#,
            r#"apisix_http_latency_bucket{type="request",route="1",service="",consumer="",node="127.0.0.1",le="5"} 2"#,
            r#"apisix_http_latency_bucket{type="request",route="1",service="",consumer="",node="127.0.0.1",le="50"} 3"#,
            r#"apisix_http_latency_bucket{type="request",route="1",service="",consumer="",node="127.0.0.1",le="+Inf"} 3"#,
            r#"apisix_http_latency_count{type="upstream",route="1",service="",consumer="",node="127.0.0.1"} 2"#,
            r#"apisix_http_latency_sum{type="apisix",route="1",service="",consumer="",node="127.0.0.1"} 3.0"#,
            r#"apisix_bandwidth{type="ingress",route="1",service="",consumer="",node="127.0.0.1"} 300"#,
            r#"apisix_bandwidth{type="egress",route="1",service="",consumer="",node="127.0.0.1"} 30"#,
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn route_labels_name_the_pattern_and_host_that_matched() {
        let rl = RouteLabels {
            id: "7".into(),
            name: Some("orders".into()),
            service: "".into(),
            service_name: None,
            uris: ["/a/:id", "/b*"]
                .iter()
                .map(|u| (PathPattern::parse(u).unwrap(), Arc::from(*u)))
                .collect(),
            hosts: ["x.com", "*.y.com"]
                .iter()
                .map(|h| (HostPattern::parse(h).unwrap(), Arc::from(*h)))
                .collect(),
        };
        for (prefer, path, host, route, uri, mhost) in [
            (false, "/a/1", "x.com", "7", "/a/:id", "x.com"),
            (true, "/bcd", "a.y.com", "orders", "/b*", "*.y.com"),
            (true, "/zz", "other", "orders", "", ""),
        ] {
            let [r, _, u, h] = rl.values(prefer, rl.matched(path, host));
            assert_eq!((r, u, h), (route, uri, mhost), "{path} {host}");
        }
        assert_eq!(&*node_label("10.0.0.1:80"), "10.0.0.1");
        assert_eq!(&*node_label("[::1]:80"), "::1");
        assert_eq!(&*node_label("backend.local:8080"), "backend.local");
    }

    #[test]
    fn new_label_sets_beyond_the_cap_share_the_overflow_set() {
        let m = Arc::new(RequestMetrics::new(1));
        for i in 0..MAX_SERIES + 10 {
            m.record(&labels(&i.to_string(), "").as_ref(), &obs(200, 1.0, None));
        }
        // An existing set still counts on its own.
        m.record(&labels("0", "").as_ref(), &obs(200, 1.0, None));
        let all = m.merged();
        assert_eq!(all.len(), MAX_SERIES + 1);
        assert_eq!(all[&Labels::overflow()].codes, vec![(200, 10)]);
        assert_eq!(all[&labels("0", "")].codes, vec![(200, 2)]);
    }

    #[test]
    fn status_lists_the_busiest_routes_by_class() {
        let m = Arc::new(RequestMetrics::new(1));
        for i in 0..MAX_STATUS_ROUTES + 5 {
            m.record(&labels(&i.to_string(), "").as_ref(), &obs(200, 1.0, None));
        }
        // Route 7 is the busiest, with a 5xx besides.
        for _ in 0..3 {
            m.record(&labels("7", "").as_ref(), &obs(502, 1.0, None));
        }
        // Requests that matched no route are not a route's.
        m.record(&labels("", "").as_ref(), &obs(404, 1.0, None));
        let by = m.by_route();
        assert_eq!(by.len(), MAX_STATUS_ROUTES);
        assert_eq!(by["7"]["2xx"], 1);
        assert_eq!(by["7"]["5xx"], 3);
        assert!(!by.contains_key(""));
    }

    #[tokio::test]
    async fn a_response_is_recorded_when_its_body_ends_with_the_bytes_sent() {
        use http_body_util::BodyExt;
        let m = Arc::new(RequestMetrics::new(1));
        let resp = http::Response::new(crate::proxy::full("hello"));
        let head = crate::response_end::head_len(&resp);
        let mut o = obs(200, 0.0, None);
        o.egress = head;
        let owner = Owner {
            route: Some(Arc::new(RouteLabels {
                id: "r".into(),
                ..Default::default()
            })),
            matched: Matched::default(),
            prefer_name: false,
            consumer: None,
            node: Some("n".into()),
        };
        let rec = Recording {
            metrics: m.clone(),
            owner,
            obs: o,
            started: Instant::now(),
        };
        let resp = crate::response_end::on_end(resp, Some(rec), Vec::new());
        assert!(m.merged().is_empty(), "nothing before the body is done");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello");
        let all = m.merged();
        let s = &all[&labels("r", "n")];
        assert_eq!(s.bandwidth, [100, head + 5]);
        assert_eq!(s.latency[0].count, 1);
    }

    #[test]
    fn request_length_counts_line_headers_and_body() {
        let (parts, ()) = http::Request::builder()
            .method("POST")
            .uri("/a?b=1")
            .header("host", "h")
            .body(())
            .unwrap()
            .into_parts();
        // "POST /a?b=1 HTTP/1.1\r\n" + "host: h\r\n" + "\r\n" + 5
        assert_eq!(request_len(&parts, Some(5)), 22 + 9 + 2 + 5);
    }
}
