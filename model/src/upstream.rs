//! Upstreams: where a route sends its traffic, and how.
use crate::checks::Checks;
use crate::codec::check_meta;
use crate::timeout::Timeout;
use crate::{Id, Kind, Resource, ValidationError};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub id: Option<Id>,
    #[serde(rename = "type", default)]
    pub lb: LbType,
    pub nodes: Nodes,
    pub retries: Option<u32>,
    pub retry_timeout: Option<f64>,
    pub timeout: Option<Timeout>,
    #[serde(default)]
    pub pass_host: PassHost,
    pub upstream_host: Option<String>,
    #[serde(default)]
    pub scheme: Scheme,
    pub keepalive_pool: Option<KeepalivePool>,
    /// How `https`/`grpcs` nodes are verified.
    pub tls: Option<UpstreamTls>,
    /// Only meaningful for `chash`; APISIX writes `"vars"` into every stored upstream,
    /// so it is accepted for the other types too.
    #[serde(default)]
    pub hash_on: HashOn,
    /// What `chash` hashes: a variable name, header name, cookie name or `$var` template,
    /// depending on `hash_on`. Checked only for `chash`, as APISIX does.
    pub key: Option<String>,
    pub checks: Option<Checks>,
    pub name: Option<String>,
    pub desc: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub create_time: Option<u64>,
    pub update_time: Option<u64>,
}

/// `type`: the balancing method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LbType {
    /// Smooth weighted round robin.
    #[default]
    RoundRobin,
    /// Consistent hashing of `key` (chosen by `hash_on`): the same key keeps its node.
    Chash,
    /// Peak-EWMA of response latency, penalised by requests in flight.
    Ewma,
    /// Fewest requests in flight relative to weight.
    LeastConn,
}

impl<'de> Deserialize<'de> for LbType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "roundrobin" => Ok(LbType::RoundRobin),
            "chash" => Ok(LbType::Chash),
            "ewma" => Ok(LbType::Ewma),
            "least_conn" => Ok(LbType::LeastConn),
            _ => Err(serde::de::Error::custom(format!(
                "unknown upstream type {s:?}; expected \"roundrobin\", \"chash\", \"ewma\" or \"least_conn\""
            ))),
        }
    }
}

/// `hash_on`: where `chash` finds its key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashOn {
    /// `key` names a request variable (`remote_addr`, `uri`, `arg_id`, …).
    #[default]
    Vars,
    Header,
    Cookie,
    Consumer,
    VarsCombinations,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PassHost {
    /// Send the client's `Host`.
    #[default]
    Pass,
    /// Send the chosen node's host (and port when not the scheme's default).
    Node,
    /// Send `upstream_host`.
    Rewrite,
}

impl<'de> Deserialize<'de> for PassHost {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "pass" => Ok(PassHost::Pass),
            "node" => Ok(PassHost::Node),
            "rewrite" => Ok(PassHost::Rewrite),
            _ => Err(serde::de::Error::custom(format!(
                "unknown pass_host {s:?}; expected \"pass\", \"node\" or \"rewrite\""
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Scheme {
    #[default]
    Http,
    /// HTTP/1.1 over TLS.
    Https,
    /// HTTP/2 with prior knowledge, in the clear (gRPC's usual in-cluster form).
    Grpc,
    /// HTTP/2 over TLS (ALPN `h2`).
    Grpcs,
}

impl Scheme {
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http | Scheme::Grpc => 80,
            Scheme::Https | Scheme::Grpcs => 443,
        }
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Https | Scheme::Grpcs)
    }

    pub fn is_http2(self) -> bool {
        matches!(self, Scheme::Grpc | Scheme::Grpcs)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Grpc => "grpc",
            Scheme::Grpcs => "grpcs",
        }
    }
}

impl<'de> Deserialize<'de> for Scheme {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "http" => Ok(Scheme::Http),
            "https" => Ok(Scheme::Https),
            "grpc" => Ok(Scheme::Grpc),
            "grpcs" => Ok(Scheme::Grpcs),
            "tcp" | "tls" | "udp" | "kafka" => Err(serde::de::Error::custom(format!(
                "scheme {s:?} is not supported yet; supported: \"http\", \"https\", \"grpc\", \"grpcs\""
            ))),
            _ => Err(serde::de::Error::custom(format!("unknown scheme {s:?}"))),
        }
    }
}

/// `tls`: certificate verification of `https`/`grpcs` nodes. Unlike APISIX (whose
/// `tls.verify` defaults to false), verification is on unless turned off: a gateway that
/// silently trusts any certificate is a gateway that can be intercepted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    #[serde(default = "default_verify")]
    pub verify: bool,
    /// Our extension: PEM CA certificates to verify the nodes with, instead of the
    /// system's roots (a private CA, a cluster's service CA).
    pub ca: Option<String>,
    /// Client certificates (mTLS to the upstream) are APISIX fields we do not serve yet;
    /// they are named here so that the error says so rather than "unknown field".
    pub client_cert: Option<Value>,
    pub client_key: Option<Value>,
    pub client_cert_id: Option<Value>,
}

fn default_verify() -> bool {
    true
}

impl UpstreamTls {
    fn validate(&self) -> Result<(), ValidationError> {
        for (field, v) in [
            ("client_cert", &self.client_cert),
            ("client_key", &self.client_key),
            ("client_cert_id", &self.client_cert_id),
        ] {
            if v.is_some() {
                return Err(ValidationError::new(
                    format!("tls.{field}"),
                    "client certificates to upstreams are not supported yet",
                ));
            }
        }
        if let Some(ca) = &self.ca {
            let n = crate::pem::certificates(ca).map_err(|e| ValidationError::new("tls.ca", e))?;
            if n.is_empty() {
                return Err(ValidationError::new(
                    "tls.ca",
                    "no PEM certificate (-----BEGIN CERTIFICATE-----) found",
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepalivePool {
    #[serde(default = "default_pool_size")]
    pub size: u32,
    #[serde(default = "default_pool_idle")]
    pub idle_timeout: f64,
    #[serde(default = "default_pool_requests")]
    pub requests: u32,
}

fn default_pool_size() -> u32 {
    320
}
fn default_pool_idle() -> f64 {
    60.0
}
fn default_pool_requests() -> u32 {
    1000
}

impl Default for KeepalivePool {
    fn default() -> Self {
        KeepalivePool {
            size: default_pool_size(),
            idle_timeout: default_pool_idle(),
            requests: default_pool_requests(),
        }
    }
}

/// One upstream node. `port` is `None` when the map form gave only a host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    pub host: String,
    pub port: Option<u16>,
    pub weight: u32,
    /// Higher first: nodes of a lower priority get traffic only when no node of a higher
    /// one is healthy (APISIX). 0 in the map form.
    pub priority: i32,
    /// Our extension (array form only): the topology zone of the node, preferred by a
    /// gateway started with the same `--zone`.
    pub zone: Option<String>,
}

impl Node {
    /// `host:port` for connecting (IPv6 in brackets).
    pub fn address(&self, scheme: Scheme) -> String {
        let port = self.port.unwrap_or(scheme.default_port());
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{port}", self.host)
        } else {
            format!("{}:{port}", self.host)
        }
    }
}

/// `nodes`, given as a map `{"host:port": weight}` or an array of objects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Nodes(pub Vec<Node>);

pub const MAX_WEIGHT: u32 = 100_000;

/// Upper bound of every duration field, in seconds (one day), so that no stored value
/// can overflow a clock or a `Duration` in a reader.
pub const MAX_SECONDS: f64 = 86_400.0;

impl<'de> Deserialize<'de> for Nodes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        parse_nodes(&v).map(Nodes).map_err(serde::de::Error::custom)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeObject {
    host: String,
    port: Option<u16>,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default)]
    priority: i32,
    zone: Option<String>,
}

fn default_weight() -> u32 {
    1
}

fn parse_nodes(v: &Value) -> Result<Vec<Node>, String> {
    let mut nodes = Vec::new();
    match v {
        Value::Object(map) => {
            for (addr, w) in map {
                let (host, port) =
                    split_host_port(addr).map_err(|e| format!("node {addr:?}: {e}"))?;
                let weight = w
                    .as_u64()
                    .filter(|w| *w <= MAX_WEIGHT as u64)
                    .ok_or_else(|| {
                        format!("node {addr:?}: weight must be an integer from 0 to {MAX_WEIGHT}")
                    })?;
                nodes.push(Node {
                    host,
                    port,
                    weight: weight as u32,
                    priority: 0,
                    zone: None,
                });
            }
        }
        Value::Array(list) => {
            for (i, item) in list.iter().enumerate() {
                // The path names the field within the node (`priority: invalid type …`).
                let n: NodeObject =
                    serde_path_to_error::deserialize(item).map_err(|e| {
                        match e.path().to_string().as_str() {
                            "." => format!("node [{i}]: {}", e.inner()),
                            field => format!("node [{i}]: {field}: {}", e.inner()),
                        }
                    })?;
                check_node_host(&n.host).map_err(|e| format!("node [{i}]: {e}"))?;
                if n.port == Some(0) {
                    return Err(format!("node [{i}]: port must be from 1 to 65535"));
                }
                if n.weight > MAX_WEIGHT {
                    return Err(format!("node [{i}]: weight must be from 0 to {MAX_WEIGHT}"));
                }
                if let Some(z) = &n.zone {
                    check_zone(z).map_err(|e| format!("node [{i}]: {e}"))?;
                }
                let host = n
                    .host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                nodes.push(Node {
                    host,
                    port: n.port,
                    weight: n.weight,
                    priority: n.priority,
                    zone: n.zone,
                });
            }
        }
        _ => {
            return Err(
                "must be a map {\"host:port\": weight} or an array of {host, port, weight}".into(),
            )
        }
    }
    Ok(nodes)
}

/// Splits `host:port`, `[v6]:port` or a bare host.
fn split_host_port(addr: &str) -> Result<(String, Option<u16>), String> {
    let parse_port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("port {p:?} must be from 1 to 65535"))
    };
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (h, tail) = rest.split_once(']').ok_or("unclosed '[' in IPv6 address")?;
        match tail.strip_prefix(':') {
            Some(p) => (h.to_string(), Some(parse_port(p)?)),
            None if tail.is_empty() => (h.to_string(), None),
            None => return Err("expected \":port\" after \"]\"".into()),
        }
    } else {
        match addr.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(parse_port(p)?)),
            None => (addr.to_string(), None),
        }
    };
    check_node_host(&host)?;
    Ok((host, port))
}

/// `host`, `host:port` or `[v6]:port`, as sent in a `Host` header.
fn is_host_and_port(s: &str) -> bool {
    match split_host_port(s) {
        Ok((host, _)) => !host.is_empty(),
        Err(_) => false,
    }
}

/// A zone is compared as an opaque string; the rules are those of a Kubernetes label
/// value (`topology.kubernetes.io/zone`), where zones usually come from.
fn check_zone(zone: &str) -> Result<(), String> {
    let ok = !zone.is_empty()
        && zone.len() <= 63
        && zone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && zone.starts_with(|c: char| c.is_ascii_alphanumeric())
        && zone.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "zone {zone:?} must be 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

/// An IP address or a host name (no port).
pub(crate) fn is_valid_host(host: &str) -> bool {
    check_node_host(host).is_ok()
}

fn check_node_host(host: &str) -> Result<(), String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = !bare.is_empty()
        && bare.len() <= 253
        && bare.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "host {host:?} is neither an IP address nor a valid host name"
        ))
    }
}

impl Upstream {
    pub fn timeout(&self) -> Timeout {
        self.timeout.unwrap_or_default()
    }

    /// How many other nodes to try after a failed connection: `retries`, else one per extra node.
    pub fn effective_retries(&self) -> u32 {
        self.retries
            .unwrap_or_else(|| self.nodes.0.len().saturating_sub(1) as u32)
    }
}

impl Resource for Upstream {
    const KIND: Kind = Kind::Upstreams;

    fn id(&self) -> Option<&Id> {
        self.id.as_ref()
    }

    fn validate(&self) -> Result<(), ValidationError> {
        check_meta(
            self.name.as_deref(),
            self.desc.as_deref(),
            self.labels.as_ref(),
        )?;
        if let Some(t) = &self.timeout {
            t.validate()?;
        }
        if let Some(rt) = self.retry_timeout {
            if !(rt.is_finite() && (0.0..=MAX_SECONDS).contains(&rt)) {
                return Err(ValidationError::new(
                    "retry_timeout",
                    format!("must be a number of seconds from 0 to {MAX_SECONDS}"),
                ));
            }
        }
        if let Some(r) = self.retries {
            if r > 100 {
                return Err(ValidationError::new("retries", "must be at most 100"));
            }
        }
        match (self.pass_host, &self.upstream_host) {
            (PassHost::Rewrite, None) => {
                return Err(ValidationError::new(
                    "upstream_host",
                    "is required when pass_host is \"rewrite\"",
                ))
            }
            (_, Some(h)) if !is_host_and_port(h) => {
                return Err(ValidationError::new(
                    "upstream_host",
                    "must be a host name, optionally with :port",
                ))
            }
            _ => {}
        }
        if self.lb == LbType::Chash {
            check_hash_key(self.hash_on, self.key.as_deref())?;
        }
        if let Some(c) = &self.checks {
            c.validate().map_err(|e| e.within("checks"))?;
        }
        if let Some(t) = &self.tls {
            if !self.scheme.is_tls() {
                return Err(ValidationError::new(
                    "tls",
                    format!(
                        "applies only to scheme \"https\" or \"grpcs\", not {:?}",
                        self.scheme.as_str()
                    ),
                ));
            }
            t.validate()?;
        }
        if let Some(p) = &self.keepalive_pool {
            if p.size == 0 {
                return Err(ValidationError::new(
                    "keepalive_pool.size",
                    "must be at least 1",
                ));
            }
            if p.requests == 0 {
                return Err(ValidationError::new(
                    "keepalive_pool.requests",
                    "must be at least 1",
                ));
            }
            if !(p.idle_timeout.is_finite() && (0.0..=MAX_SECONDS).contains(&p.idle_timeout)) {
                return Err(ValidationError::new(
                    "keepalive_pool.idle_timeout",
                    format!("must be a number of seconds from 0 to {MAX_SECONDS}"),
                ));
            }
        }
        Ok(())
    }
}

/// The variables APISIX accepts as a `chash` key with `hash_on: "vars"`
/// (`upstream_hash_vars_schema`), besides `arg_*`.
pub const HASH_VARS: [&str; 9] = [
    "uri",
    "server_name",
    "server_addr",
    "request_uri",
    "remote_port",
    "remote_addr",
    "query_string",
    "host",
    "hostname",
];

/// APISIX's rules for `key` (`check_upstream_conf`): required unless hashing on the
/// consumer, and shaped by `hash_on`.
fn check_hash_key(hash_on: HashOn, key: Option<&str>) -> Result<(), ValidationError> {
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let key = match (hash_on, key) {
        (HashOn::Consumer, _) => return Ok(()),
        (_, Some(k)) => k,
        (_, None) => {
            return Err(ValidationError::new(
                "key",
                "is required when type is \"chash\" (unless hash_on is \"consumer\")",
            ))
        }
    };
    let ok = match hash_on {
        HashOn::Vars => {
            HASH_VARS.contains(&key)
                || key
                    .strip_prefix("arg_")
                    .is_some_and(|a| !a.is_empty() && a.chars().all(name_char))
        }
        HashOn::Header | HashOn::Cookie => !key.is_empty() && key.chars().all(name_char),
        HashOn::VarsCombinations => !key.is_empty(),
        HashOn::Consumer => true,
    };
    if ok {
        return Ok(());
    }
    let expected = match hash_on {
        HashOn::Vars => format!(
            "one of {} or arg_<name> when hash_on is \"vars\"; headers and cookies need hash_on \"header\" or \"cookie\"",
            HASH_VARS.join(", ")
        ),
        HashOn::Header => "a header name (letters, digits, '_' and '-')".into(),
        HashOn::Cookie => "a cookie name (letters, digits, '_' and '-')".into(),
        HashOn::VarsCombinations | HashOn::Consumer => "a non-empty template like \"$host$uri\"".into(),
    };
    Err(ValidationError::new(
        "key",
        format!("{key:?} is not valid: expected {expected}"),
    ))
}
