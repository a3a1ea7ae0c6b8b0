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

/// The pattern as it was written, lower case (`*.foo.com`).
impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(suffix) => write!(f, "*{suffix}"),
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

/// Checks a request's `Host` (or HTTP/2 `:authority`, or the authority of an
/// absolute-form target) and normalises it for matching as [`normalize_request_host`]
/// does. Refused, as nginx refuses them: characters outside a DNS name, an IPv4 address or
/// a bracketed IPv6 literal (spaces, `/`, `@`, `\`, control bytes), an empty label
/// (`a..b`), a port that is not 1 to 5 digits. A request carrying such a name is
/// ambiguous: backends and logs may each read a different host out of it.
pub fn parse_request_host(raw: &str) -> Result<String, String> {
    match plain_request_host(raw) {
        Some(host) => Ok(host.to_string()),
        None => parse_request_host_full(raw),
    }
}

fn parse_request_host_full(raw: &str) -> Result<String, String> {
    let (name, port) = if let Some(rest) = raw.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Err("an IPv6 literal must end with ']'".into());
        };
        if inside.is_empty()
            || !inside
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err("invalid IPv6 literal".into());
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("junk after the IPv6 literal")?),
        };
        (&raw[..inside.len() + 2], port)
    } else {
        match raw.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (raw, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("invalid port {p:?}"));
        }
    }
    if !name.starts_with('[') {
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.len() > 253 {
            return Err("the name is longer than 253 characters".into());
        }
        if let Some(b) = name
            .bytes()
            .find(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')))
        {
            return Err(format!("the name contains {:?}", char::from(b)));
        }
        if !name.is_empty() && name.split('.').any(str::is_empty) {
            return Err("the name has an empty label".into());
        }
    }
    Ok(normalize_request_host(raw))
}

/// The common request host, checked in one pass: a lower-case name of `a-z 0-9 - _`
/// labels (an IPv4 address is one) without an empty label or a final dot, with an
/// optional port of 1 to 5 digits. Such a host is valid and already normal, so it is the
/// name itself; anything else (`None`) takes the full path, which judges it the same way
/// (a test compares the two on every string of a small alphabet).
pub fn plain_request_host(raw: &str) -> Option<&str> {
    plain_request_host_len(raw.as_bytes()).map(|n| &raw[..n])
}

/// [`plain_request_host`] on bytes, before they are known to be text: the length of the
/// name. What it accepts is ASCII, so a header value it accepts needs no other check.
pub fn plain_request_host_len(b: &[u8]) -> Option<usize> {
    let (name, port) = match b.iter().rposition(|&c| c == b':') {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &b""[..]),
    };
    if name.is_empty() || name.len() > 253 || port.len() > 5 {
        return None;
    }
    if b.len() > name.len() && (port.is_empty() || !port.iter().all(u8::is_ascii_digit)) {
        return None;
    }
    let mut previous = b'.';
    for &c in name {
        let ok = match c {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => true,
            b'.' => previous != b'.',
            _ => false,
        };
        if !ok {
            return None;
        }
        previous = c;
    }
    (previous != b'.').then_some(name.len())
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

    /// The one-pass path for common hosts gives what the full path gives, on every
    /// string of up to six characters of an alphabet with each kind of byte they judge.
    #[test]
    fn plain_hosts_are_judged_as_the_full_path_judges_them() {
        let alphabet = ['a', 'Z', '0', '.', ':', '-', '_', '[', ']', ' '];
        let mut strings = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..6 {
            let next: Vec<String> = last
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            strings.extend(next.iter().cloned());
            last = next;
        }
        let mut fast = 0;
        for s in strings.iter().map(String::as_str).chain([
            &*"a".repeat(253),
            &*"a".repeat(254),
            &*format!("{}:8080", "b".repeat(253)),
            "example.com:123456",
            "192.168.0.1:443",
        ]) {
            let full = parse_request_host_full(s).ok();
            if let Some(plain) = plain_request_host(s) {
                fast += 1;
                assert_eq!(Some(plain.to_string()), full, "{s:?}");
            }
            assert_eq!(parse_request_host(s).ok(), full, "{s:?}");
        }
        assert!(fast > 10_000, "only {fast} strings took the one-pass path");
    }

    #[test]
    fn request_hosts_checked() {
        let table: &[(&str, Result<&str, &str>)] = &[
            ("Foo.COM", Ok("foo.com")),
            ("foo.com:9080", Ok("foo.com")),
            ("foo.com.", Ok("foo.com")),
            ("foo.com.:80", Ok("foo.com")),
            ("127.0.0.1:80", Ok("127.0.0.1")),
            ("[::1]:8080", Ok("[::1]")),
            ("[::1]", Ok("[::1]")),
            ("under_score.local", Ok("under_score.local")),
            ("", Ok("")),
            ("a b/../@c", Err("contains ' '")),
            ("a/b", Err("contains '/'")),
            ("user@host", Err("contains '@'")),
            ("a\\b", Err("contains '\\\\'")),
            ("foo..com", Err("empty label")),
            (".foo.com", Err("empty label")),
            ("foo.com:", Err("invalid port")),
            ("foo.com:80:80", Err("contains ':'")),
            ("foo.com:123456", Err("invalid port")),
            ("foo.com:8a", Err("invalid port")),
            ("[::1", Err("must end")),
            ("[::1]x", Err("junk")),
            ("[zz]", Err("invalid IPv6")),
            ("[]", Err("invalid IPv6")),
            ("a\u{0}b", Err("contains")),
        ];
        for (raw, want) in table {
            match (parse_request_host(raw), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want, "{raw:?}"),
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{raw:?}: {e}"),
                (got, want) => panic!("{raw:?}: got {got:?}, want {want:?}"),
            }
        }
        assert!(parse_request_host(&"a".repeat(254)).is_err());
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
    fn request_hosts_normalised() {
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
