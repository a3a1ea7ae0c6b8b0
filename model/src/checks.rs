//! Upstream health checks (`checks`): APISIX's field names, defaults and bounds
//! (`apisix/schema_def.lua`, `health_checker`), so stored APISIX upstreams keep parsing.
//!
//! Missing fields take APISIX's defaults at parse time, so readers never need to know them.
//! APISIX writes those defaults into what it stores, which is why fields without an effect
//! here (`concurrency`, `passive.type`) are still accepted.
use crate::ValidationError;
use serde::Deserialize;
use std::time::Duration;

/// Upper bound of `timeout` and the intervals, in seconds (one day), as for every other
/// duration in the model.
const MAX_SECONDS: f64 = 86_400.0;

/// `checks`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    /// Required, as in APISIX: passive checks can take a node out but only active probes
    /// bring it back, so passive checks alone would drain nodes for good.
    pub active: ActiveCheck,
    pub passive: Option<PassiveCheck>,
}

/// `checks.active.type` and `checks.passive.type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    #[default]
    Http,
    Https,
    Tcp,
}

/// `checks.active`: probes sent by the gateway on a timer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActiveCheck {
    #[serde(rename = "type")]
    pub kind: CheckType,
    /// Seconds per probe.
    pub timeout: f64,
    pub concurrency: u32,
    /// `Host` of HTTP probes; the node's host when absent.
    pub host: Option<String>,
    /// Probe this port instead of the node's.
    pub port: Option<u16>,
    pub http_path: String,
    pub https_verify_certificate: bool,
    /// Extra header lines of HTTP probes, `"Name: value"`.
    pub req_headers: Option<Vec<String>>,
    pub healthy: ActiveHealthy,
    pub unhealthy: ActiveUnhealthy,
}

impl Default for ActiveCheck {
    fn default() -> Self {
        ActiveCheck {
            kind: CheckType::Http,
            timeout: 1.0,
            concurrency: 10,
            host: None,
            port: None,
            http_path: "/".into(),
            https_verify_certificate: true,
            req_headers: None,
            healthy: ActiveHealthy::default(),
            unhealthy: ActiveUnhealthy::default(),
        }
    }
}

/// `checks.active.healthy`: probing of healthy nodes, and what makes an unhealthy one healthy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActiveHealthy {
    /// Seconds between probes of a healthy node.
    pub interval: u32,
    pub http_statuses: Vec<u16>,
    pub successes: u32,
}

impl Default for ActiveHealthy {
    fn default() -> Self {
        ActiveHealthy {
            interval: 1,
            http_statuses: vec![200, 302],
            successes: 2,
        }
    }
}

/// `checks.active.unhealthy`: probing of unhealthy nodes, and what makes a healthy one unhealthy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActiveUnhealthy {
    /// Seconds between probes of an unhealthy node.
    pub interval: u32,
    pub http_statuses: Vec<u16>,
    pub http_failures: u32,
    pub tcp_failures: u32,
    pub timeouts: u32,
}

impl Default for ActiveUnhealthy {
    fn default() -> Self {
        ActiveUnhealthy {
            interval: 1,
            http_statuses: vec![429, 404, 500, 501, 502, 503, 504, 505],
            http_failures: 5,
            tcp_failures: 2,
            timeouts: 3,
        }
    }
}

/// `checks.passive`: verdicts drawn from proxied requests.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PassiveCheck {
    /// Has no effect, in APISIX either: its balancer reports statuses, TCP failures and
    /// timeouts directly. Accepted because APISIX stores it.
    #[serde(rename = "type")]
    pub kind: CheckType,
    pub healthy: PassiveHealthy,
    pub unhealthy: PassiveUnhealthy,
}

/// `checks.passive.healthy`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PassiveHealthy {
    pub http_statuses: Vec<u16>,
    pub successes: u32,
}

impl Default for PassiveHealthy {
    fn default() -> Self {
        PassiveHealthy {
            http_statuses: vec![
                200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305,
                306, 307, 308,
            ],
            successes: 5,
        }
    }
}

/// `checks.passive.unhealthy`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PassiveUnhealthy {
    pub http_statuses: Vec<u16>,
    pub http_failures: u32,
    pub tcp_failures: u32,
    pub timeouts: u32,
}

impl Default for PassiveUnhealthy {
    fn default() -> Self {
        PassiveUnhealthy {
            http_statuses: vec![429, 500, 503],
            http_failures: 5,
            tcp_failures: 2,
            timeouts: 7,
        }
    }
}

/// APISIX's bounds of every counter threshold: the health checker packs each counter in a byte.
const MAX_COUNT: u32 = 254;

impl Checks {
    /// Field paths in errors are relative to the upstream (`checks.active.timeout`).
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.active.validate().map_err(|e| e.within("active"))?;
        if let Some(p) = &self.passive {
            p.validate().map_err(|e| e.within("passive"))?;
        }
        Ok(())
    }
}

impl ActiveCheck {
    /// How long to wait before probing a node that is currently `healthy` (or not) again.
    pub fn interval(&self, healthy: bool) -> Duration {
        let secs = if healthy {
            self.healthy.interval
        } else {
            self.unhealthy.interval
        };
        Duration::from_secs(u64::from(secs))
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout)
    }

    fn validate(&self) -> Result<(), ValidationError> {
        if !(self.timeout.is_finite() && self.timeout > 0.0 && self.timeout <= MAX_SECONDS) {
            return Err(ValidationError::new(
                "timeout",
                format!("must be a number of seconds above 0 and at most {MAX_SECONDS}"),
            ));
        }
        if self.concurrency == 0 {
            return Err(ValidationError::new("concurrency", "must be at least 1"));
        }
        if let Some(h) = &self.host {
            if !crate::upstream::is_valid_host(h) {
                return Err(ValidationError::new(
                    "host",
                    format!("{h:?} is neither an IP address nor a valid host name"),
                ));
            }
        }
        if self.port == Some(0) {
            return Err(ValidationError::new("port", "must be from 1 to 65535"));
        }
        // The path is written into a request line as is.
        if !self.http_path.starts_with('/')
            || self
                .http_path
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ValidationError::new(
                "http_path",
                "must start with \"/\" and contain no spaces or control characters",
            ));
        }
        if let Some(headers) = &self.req_headers {
            if headers.is_empty() {
                return Err(ValidationError::new("req_headers", "must not be empty"));
            }
            for (i, h) in headers.iter().enumerate() {
                check_header_line(h)
                    .map_err(|m| ValidationError::new(format!("req_headers[{i}]"), m))?;
            }
        }
        let h = &self.healthy;
        check_interval(h.interval).map_err(|e| e.within("healthy"))?;
        check_statuses(&h.http_statuses).map_err(|e| e.within("healthy"))?;
        check_count("successes", h.successes).map_err(|e| e.within("healthy"))?;
        let u = &self.unhealthy;
        check_interval(u.interval).map_err(|e| e.within("unhealthy"))?;
        check_statuses(&u.http_statuses).map_err(|e| e.within("unhealthy"))?;
        check_failure_counts(u.http_failures, u.tcp_failures, u.timeouts)
            .map_err(|e| e.within("unhealthy"))
    }
}

impl PassiveCheck {
    fn validate(&self) -> Result<(), ValidationError> {
        let h = &self.healthy;
        check_statuses(&h.http_statuses).map_err(|e| e.within("healthy"))?;
        check_count("successes", h.successes).map_err(|e| e.within("healthy"))?;
        let u = &self.unhealthy;
        check_statuses(&u.http_statuses).map_err(|e| e.within("unhealthy"))?;
        check_failure_counts(u.http_failures, u.tcp_failures, u.timeouts)
            .map_err(|e| e.within("unhealthy"))
    }
}

/// The three failure thresholds both kinds of check share.
fn check_failure_counts(http: u32, tcp: u32, timeouts: u32) -> Result<(), ValidationError> {
    check_count("http_failures", http)?;
    check_count("tcp_failures", tcp)?;
    check_count("timeouts", timeouts)
}

fn check_interval(secs: u32) -> Result<(), ValidationError> {
    if secs == 0 || f64::from(secs) > MAX_SECONDS {
        return Err(ValidationError::new(
            "interval",
            format!("must be a whole number of seconds from 1 to {MAX_SECONDS}"),
        ));
    }
    Ok(())
}

fn check_count(name: &str, n: u32) -> Result<(), ValidationError> {
    if !(1..=MAX_COUNT).contains(&n) {
        return Err(ValidationError::new(
            name,
            format!("must be from 1 to {MAX_COUNT}, got {n}"),
        ));
    }
    Ok(())
}

fn check_statuses(statuses: &[u16]) -> Result<(), ValidationError> {
    if statuses.is_empty() {
        return Err(ValidationError::new("http_statuses", "must not be empty"));
    }
    for (i, s) in statuses.iter().enumerate() {
        if !(200..=599).contains(s) {
            return Err(ValidationError::new(
                format!("http_statuses[{i}]"),
                format!("must be a status from 200 to 599, got {s}"),
            ));
        }
        if statuses[..i].contains(s) {
            return Err(ValidationError::new(
                format!("http_statuses[{i}]"),
                format!("{s} is listed twice"),
            ));
        }
    }
    Ok(())
}

/// `Name: value`: a header line lua-resty-healthcheck would copy into the probe verbatim.
fn check_header_line(line: &str) -> Result<(), String> {
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| format!("{line:?} must look like \"Name: value\""))?;
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!("{name:?} is not a valid header name"));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err("header values must not contain control characters".into());
    }
    Ok(())
}
