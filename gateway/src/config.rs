//! Command-line flags and their environment variables, as fixed by design.md.
use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser, Debug, Clone)]
#[command(
    version,
    about = "Dynamic API gateway: routes from etcd, applied without reloads"
)]
pub struct Config {
    /// etcd endpoints, comma-separated; all are used.
    #[arg(
        long,
        env = "ETCD_ENDPOINTS",
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ','
    )]
    pub etcd_endpoints: Vec<String>,
    /// Key prefix that holds the resources (`/apisix` reads APISIX's data).
    #[arg(long, env = "ETCD_PREFIX", default_value = "/gateway")]
    pub etcd_prefix: String,
    #[command(flatten)]
    pub etcd_access: common::etcd::EtcdAccess,
    /// `text` or `json`; levels come from RUST_LOG.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// HTTP listener (HTTP/1.1 and HTTP/2 with prior knowledge).
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "0.0.0.0:9080")]
    pub listen: SocketAddr,
    /// HTTPS listener (certificates from the ssls resource, chosen by SNI).
    #[arg(long, env = "GATEWAY_TLS_LISTEN", default_value = "0.0.0.0:9443")]
    pub tls_listen: SocketAddr,
    /// The server name whose certificate answers handshakes without SNI (clients that
    /// dial an IP address), as APISIX's `fallback_sni`; without it they are refused.
    #[arg(long, env = "GATEWAY_TLS_FALLBACK_SNI")]
    pub tls_fallback_sni: Option<String>,
    /// Health, readiness, status and metrics.
    #[arg(long, env = "GATEWAY_STATUS_LISTEN", default_value = "127.0.0.1:9090")]
    pub status_listen: SocketAddr,
    /// File mode (APISIX standalone): read the configuration from this YAML (ending with a
    /// `#END` line) or `.json` file instead of etcd, and again whenever it changes.
    #[arg(long, env = "GATEWAY_CONFIG_FILE")]
    pub config_file: Option<std::path::PathBuf>,
    /// This replica's name in `{prefix}.cluster/gateways/` (`GET /apisix/admin/cluster`);
    /// default: host name and process id.
    #[arg(long, env = "GATEWAY_INSTANCE_ID", value_parser = parse_instance_id)]
    pub instance_id: Option<String>,
    /// TTL of the lease this replica's report is kept on: a replica that dies (or stops)
    /// drops out of the cluster view within it. At least 2 s.
    #[arg(long, env = "GATEWAY_REPORT_TTL", default_value = "10s", value_parser = parse_positive_duration)]
    pub report_ttl: Duration,
    /// This replica's zone: upstream nodes with this `zone` are preferred while any is healthy.
    #[arg(long, env = "GATEWAY_ZONE")]
    pub zone: Option<String>,
    /// DNS server (`ip:port`) for upstream nodes given by name, queried over UDP with the
    /// records' TTLs honoured (APISIX's `dns_resolver`); default: the system resolver.
    #[arg(long, env = "GATEWAY_DNS_RESOLVER")]
    pub dns_resolver: Option<SocketAddr>,
    /// How long SIGTERM waits for in-flight requests, e.g. `15s`, `500ms`.
    #[arg(long, env = "GATEWAY_GRACE_PERIOD", default_value = "15s", value_parser = parse_duration)]
    pub grace_period: Duration,
    /// Request-serving threads, each with its own event loop and its own listening
    /// sockets on the same ports (SO_REUSEPORT); default: one per available core.
    #[arg(long, env = "GATEWAY_WORKERS")]
    pub workers: Option<std::num::NonZeroUsize>,
    /// How long a write to a client may make no progress before its connection is closed
    /// (nginx's `send_timeout`): a client that stops reading releases what it holds.
    #[arg(long, env = "GATEWAY_CLIENT_SEND_TIMEOUT", default_value = "60s", value_parser = parse_positive_duration)]
    pub client_send_timeout: Duration,
    /// How long a new connection may take to send its first complete request head
    /// (nginx's and APISIX's `client_header_timeout`); also bounds a slow head.
    #[arg(long, env = "GATEWAY_CLIENT_HEADER_TIMEOUT", default_value = "60s", value_parser = parse_positive_duration)]
    pub client_header_timeout: Duration,
    /// How long a connection may sit idle between requests before it is closed
    /// (`keepalive_timeout`; APISIX's default, 60 s).
    #[arg(long, env = "GATEWAY_KEEPALIVE_TIMEOUT", default_value = "60s", value_parser = parse_positive_duration)]
    pub keepalive_timeout: Duration,
    /// Most client connections each worker keeps open (nginx's `worker_connections`);
    /// beyond it new connections are closed at once and counted.
    #[arg(long, env = "GATEWAY_WORKER_CONNECTIONS", default_value_t = 10_240, value_parser = clap::value_parser!(u32).range(1..))]
    pub worker_connections: u32,
    /// Largest request body accepted, e.g. `1m`, `512k`, `1048576`; `0` for no limit
    /// (APISIX's `client_max_body_size` default). A route's `client-control` plugin
    /// overrides it. Beyond it: 413.
    #[arg(long, env = "GATEWAY_CLIENT_MAX_BODY_SIZE", default_value = "0", value_parser = parse_size)]
    pub client_max_body_size: u64,
    /// AES keys (16 or 32 characters), comma-separated, to decrypt stored private keys.
    /// The access log: `stdout`, a file path (reopened on SIGUSR1), or `off`.
    #[arg(long, env = "GATEWAY_ACCESS_LOG", default_value = "stdout")]
    pub access_log: String,
    /// `combined` (nginx's), `json`, or a template of `$variables` (docs/operations.md).
    #[arg(long, env = "GATEWAY_ACCESS_LOG_FORMAT", default_value = "combined", value_parser = parse_access_log_format)]
    pub access_log_format: crate::access_log::Format,
    #[arg(long, env = "DATA_ENCRYPTION_KEYS", value_delimiter = ',')]
    pub data_encryption_keys: Vec<String>,
}

/// Parses `250ms`, `15s`, `2m` or a bare number of seconds.
fn parse_access_log_format(s: &str) -> Result<crate::access_log::Format, String> {
    crate::access_log::Format::parse(s)
}

impl Config {
    /// Where the access log goes, `None` when it is off.
    pub fn access_log_target(&self) -> Option<crate::access_log::Target> {
        match self.access_log.as_str() {
            "off" => None,
            "stdout" | "-" | "" => Some(crate::access_log::Target::Stdout),
            path => Some(crate::access_log::Target::File(path.into())),
        }
    }
}

pub use model::duration::parse_duration;

/// An etcd key segment: 1 to 64 of `A-Z a-z 0-9 . _ -`.
fn parse_instance_id(s: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && s != "."
        && s != "..";
    ok.then(|| s.to_string())
        .ok_or_else(|| format!("{s:?}: 1 to 64 of A-Z a-z 0-9 . _ -"))
}

/// [`parse_duration`], refusing zero (a limit that every blocked write would exceed).
/// A size in bytes as nginx writes it: digits, optionally `k`, `m` or `g` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, shift) = match t.as_bytes().last() {
        Some(b'k') => (&t[..t.len() - 1], 10),
        Some(b'm') => (&t[..t.len() - 1], 20),
        Some(b'g') => (&t[..t.len() - 1], 30),
        _ => (&t[..], 0),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 1048576, 512k or 1m"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("{s:?}: must be more than zero")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (input, want) in [
            ("0", Some(0)),
            ("1048576", Some(1 << 20)),
            ("512k", Some(512 << 10)),
            ("1m", Some(1 << 20)),
            ("2G", Some(2 << 30)),
            (" 8K ", Some(8 << 10)),
            ("1.5m", None),
            ("m", None),
            ("-1", None),
            ("99999999999999999999g", None),
            ("17179869184g", None),
        ] {
            assert_eq!(parse_size(input).ok(), want, "{input}");
        }
    }

    #[test]
    fn durations() {
        for (input, want) in [
            ("15s", Some(15_000)),
            ("500ms", Some(500)),
            ("2m", Some(120_000)),
            ("3", Some(3_000)),
            ("1.5s", Some(1_500)),
            ("x", None),
            ("5h", None),
        ] {
            assert_eq!(
                parse_duration(input).ok().map(|d| d.as_millis() as u64),
                want,
                "{input}"
            );
        }
        for (input, ok) in [("0s", false), ("0", false), ("0ms", false), ("1ms", true)] {
            assert_eq!(parse_positive_duration(input).is_ok(), ok, "{input}");
        }
    }
}
