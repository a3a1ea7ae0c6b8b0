//! Host patterns of routes and services: exact names and `*.suffix` wildcards.
use serde::Deserialize;

/// A validated, lower-cased host pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// `foo.com`: this name only.
    Exact(String),
    /// `*.foo.com`, stored as `.foo.com`: any name ending in `.foo.com`, not `foo.com` itself.
    Wildcard(String),
}

impl HostPattern {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let lower = raw.to_ascii_lowercase();
        if let Some(suffix) = lower.strip_prefix("*.") {
            check_name(suffix).map_err(|e| format!("host {raw:?}: {e}"))?;
            return Ok(HostPattern::Wildcard(format!(".{suffix}")));
        }
        if lower.contains('*') {
            return Err(format!(
                "host {raw:?}: a wildcard is only allowed as a leading \"*.\" label"
            ));
        }
        if lower.starts_with('[') && lower.ends_with(']') {
            lower[1..lower.len() - 1]
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("host {raw:?} is not a valid IPv6 literal"))?;
            return Ok(HostPattern::Exact(lower));
        }
        check_name(&lower).map_err(|e| format!("host {raw:?}: {e}"))?;
        Ok(HostPattern::Exact(lower))
    }

    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err("a host name must be 1 to 253 characters long".into());
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each label must be 1 to 63 characters long".into());
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("{c:?} is not allowed in a host name"));
        }
    }
    Ok(())
}

/// Normalises a request's `Host` for matching: lower case, port removed
/// (clients send `foo.com:9080`), IPv6 brackets kept.
pub fn normalize_request_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
            _ => host,
        }
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HostPattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        use HostPattern::*;
        let table: &[(&str, Result<HostPattern, ()>)] = &[
            ("Foo.COM", Ok(Exact("foo.com".into()))),
            ("*.foo.com", Ok(Wildcard(".foo.com".into()))),
            ("127.0.0.1", Ok(Exact("127.0.0.1".into()))),
            ("[::1]", Ok(Exact("[::1]".into()))),
            ("a.*.com", Err(())),
            ("*", Err(())),
            ("*foo.com", Err(())),
            ("foo..com", Err(())),
            ("foo com", Err(())),
            ("", Err(())),
        ];
        for (input, want) in table {
            assert_eq!(HostPattern::parse(input).map_err(|_| ()), *want, "{input}");
        }
    }

    #[test]
    fn matching() {
        let w = HostPattern::parse("*.foo.com").unwrap();
        assert!(w.matches("a.foo.com"));
        assert!(w.matches("a.b.foo.com"));
        assert!(!w.matches("foo.com"));
        assert!(!w.matches("afoo.com"));
    }

    #[test]
    fn request_hosts() {
        for (raw, want) in [
            ("Foo.com:9080", "foo.com"),
            ("foo.com", "foo.com"),
            ("foo.com.", "foo.com"),
            ("[::1]:80", "[::1]"),
            ("[::1]", "[::1]"),
            ("127.0.0.1:1", "127.0.0.1"),
        ] {
            assert_eq!(normalize_request_host(raw), want, "{raw}");
        }
    }
}
