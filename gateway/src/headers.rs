//! Header rewriting between client and upstream: hop-by-hop removal and forwarding headers.
use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION};
use std::net::IpAddr;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// What the gateway knows about the client side of a request.
pub struct Forwarded<'a> {
    pub client_ip: IpAddr,
    pub proto: &'a str,
    /// The `Host` the client sent (with its port, if any).
    pub host: Option<&'a str>,
    pub port: u16,
}

/// Sets `X-Forwarded-For` (appended), `X-Real-IP`, `X-Forwarded-Proto`, `-Host` and `-Port`.
pub fn set_forwarded(headers: &mut HeaderMap, f: &Forwarded<'_>) {
    let ip = f.client_ip.to_string();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
        _ => ip.clone(),
    };
    let set = |headers: &mut HeaderMap, name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set(headers, "x-forwarded-for", &xff);
    set(headers, "x-real-ip", &ip);
    set(headers, "x-forwarded-proto", f.proto);
    if let Some(h) = f.host {
        set(headers, "x-forwarded-host", h);
    }
    set(headers, "x-forwarded-port", &f.port.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut n: Vec<String> = h.keys().map(|k| k.to_string()).collect();
        n.sort();
        n
    }

    #[test]
    fn hop_by_hop_table() {
        let table: &[(&[(&str, &str)], &[&str])] = &[
            (&[("connection", "keep-alive"), ("keep-alive", "timeout=5"), ("x-a", "1")], &["x-a"]),
            (&[("connection", "close, x-secret"), ("x-secret", "s"), ("x-b", "2")], &["x-b"]),
            (&[("te", "trailers"), ("transfer-encoding", "chunked"), ("upgrade", "h2c")], &[]),
            (&[("proxy-connection", "x"), ("content-type", "text/plain")], &["content-type"]),
        ];
        for (input, want) in table {
            let mut h = map(input);
            strip_hop_by_hop(&mut h);
            assert_eq!(names(&h), want.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{input:?}");
        }
    }

    #[test]
    fn forwarded_table() {
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        for (prev, want_xff) in [(None, "10.0.0.9"), (Some("1.2.3.4"), "1.2.3.4, 10.0.0.9")] {
            let mut h = HeaderMap::new();
            if let Some(p) = prev {
                h.insert("x-forwarded-for", HeaderValue::from_static(p));
            }
            set_forwarded(&mut h, &Forwarded { client_ip: ip, proto: "http", host: Some("a.com:9080"), port: 9080 });
            assert_eq!(h["x-forwarded-for"], want_xff);
            assert_eq!(h["x-real-ip"], "10.0.0.9");
            assert_eq!(h["x-forwarded-proto"], "http");
            assert_eq!(h["x-forwarded-host"], "a.com:9080");
            assert_eq!(h["x-forwarded-port"], "9080");
        }
    }
}
