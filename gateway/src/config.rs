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
    /// AES keys (16 or 32 characters), comma-separated, to decrypt stored private keys.
    #[arg(long, env = "DATA_ENCRYPTION_KEYS", value_delimiter = ',')]
    pub data_encryption_keys: Vec<String>,
}

/// Parses `250ms`, `15s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 15s or 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}, use ms, s or m")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// [`parse_duration`], refusing zero (a limit that every blocked write would exceed).
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
