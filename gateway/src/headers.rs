//! Header rewriting between client and upstream: hop-by-hop removal and forwarding headers.
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, COOKIE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use std::net::IpAddr;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
static HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    PROXY_AUTHORIZATION,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// Whether `name` is one of the fixed hop-by-hop headers (not those `Connection` names).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// Removes hop-by-hop headers, including any the `Connection` header names.
/// One scan of the names finds which are present; only those are removed, so the common
/// `Connection: keep-alive` costs two removals rather than one per hop-by-hop name.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = [false; HOP_BY_HOP.len()];
    for k in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == k) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    // `Connection` is HOP_BY_HOP[0]; its options other than the usual ones name headers.
    let named: Vec<HeaderName> = if present[0] {
        headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect()
    } else {
        Vec::new()
    };
    for name in named {
        headers.remove(name);
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
}

/// HTTP/2 clients may split `Cookie` into several fields; an HTTP/1.1 upstream expects
/// one, joined with "; " (RFC 9113 §8.2.3).
pub fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined = headers
        .get_all(COOKIE)
        .iter()
        .map(|v| v.as_bytes())
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, v);
    }
}

/// What the gateway knows about the client side of a request.
pub struct Forwarded<'a> {
    /// The connection's peer, appended to `X-Forwarded-For`.
    pub client_ip: IpAddr,
    /// The client behind it, as `real-ip` found it: `X-Real-IP` (else the peer).
    pub real_ip: Option<IpAddr>,
    pub proto: &'static str,
    /// The `Host` the client sent (with its port, if any).
    pub host: Option<&'a HeaderValue>,
    pub port: u16,
}

/// Sets `X-Forwarded-For` (appended), `X-Real-IP`, `X-Forwarded-Proto`, `-Host` and `-Port`.
pub fn set_forwarded(headers: &mut HeaderMap, f: &Forwarded<'_>) {
    // Room for the five at once: growing the map one insert at a time rehashes it.
    headers.reserve(5);
    let ip = ip_text(f.client_ip);
    // Proxies before us may have sent several X-Forwarded-For lines: keep them all, in order.
    let mut prev = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .peekable();
    let joined = prev.peek().is_some().then(|| {
        let mut joined = prev.collect::<Vec<_>>().join(", ");
        joined.push_str(", ");
        joined.push_str(&ip);
        joined
    });
    // An IP address is always a valid header value; both headers share its bytes.
    if let Ok(peer) = HeaderValue::from_maybe_shared(bytes::Bytes::from(ip)) {
        let xff = match joined {
            Some(j) => HeaderValue::from_str(&j).ok(),
            None => Some(peer.clone()),
        };
        if let Some(v) = xff {
            headers.insert(X_FORWARDED_FOR.clone(), v);
        }
        let real = match f.real_ip {
            Some(ip) => HeaderValue::from_str(&ip.to_string()).ok(),
            None => Some(peer),
        };
        if let Some(real) = real {
            headers.insert(X_REAL_IP.clone(), real);
        }
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(f.proto));
    if let Some(h) = f.host {
        headers.insert(X_FORWARDED_HOST.clone(), h.clone());
    }
    headers.insert(X_FORWARDED_PORT.clone(), HeaderValue::from(f.port));
}

/// The address as text; IPv4 without the formatting machinery (it is on every request).
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut n: Vec<String> = h.keys().map(|k| k.to_string()).collect();
        n.sort();
        n
    }

    #[test]
    fn ip_text_matches_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.100.255",
            "192.168.9.99",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn hop_by_hop_table() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
        let table: &[Case] = &[
            (
                &[
                    ("connection", "keep-alive"),
                    ("keep-alive", "timeout=5"),
                    ("x-a", "1"),
                ],
                &["x-a"],
            ),
            (
                &[
                    ("connection", "close, x-secret"),
                    ("x-secret", "s"),
                    ("x-b", "2"),
                ],
                &["x-b"],
            ),
            (
                &[
                    ("te", "trailers"),
                    ("transfer-encoding", "chunked"),
                    ("upgrade", "h2c"),
                ],
                &[],
            ),
            (
                &[("proxy-connection", "x"), ("content-type", "text/plain")],
                &["content-type"],
            ),
            (
                &[
                    ("connection", "Keep-Alive, X-Hop"),
                    ("connection", "close"),
                    ("x-hop", "1"),
                    ("server", "s"),
                ],
                &["server"],
            ),
            (
                &[("server", "s"), ("content-length", "2")],
                &["content-length", "server"],
            ),
        ];
        for (input, want) in table {
            let mut h = map(input);
            strip_hop_by_hop(&mut h);
            assert_eq!(
                names(&h),
                want.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{input:?}"
            );
        }
    }

    #[test]
    fn cookies_joined() {
        let mut h = map(&[("cookie", "a=1"), ("cookie", "b=2"), ("x", "y")]);
        join_cookies(&mut h);
        assert_eq!(
            h.get_all("cookie").iter().collect::<Vec<_>>(),
            vec!["a=1; b=2"]
        );
        let mut one = map(&[("cookie", "a=1")]);
        join_cookies(&mut one);
        assert_eq!(one["cookie"], "a=1");
    }

    #[test]
    fn several_forwarded_for_lines_are_kept() {
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2, 3.3.3.3"),
        ]);
        let f = Forwarded {
            real_ip: None,
            client_ip: "10.0.0.9".parse().unwrap(),
            proto: "http",
            host: None,
            port: 80,
        };
        set_forwarded(&mut h, &f);
        assert_eq!(
            h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            vec!["1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9"]
        );
    }

    #[test]
    fn forwarded_table() {
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        for (prev, want_xff) in [(None, "10.0.0.9"), (Some("1.2.3.4"), "1.2.3.4, 10.0.0.9")] {
            let mut h = HeaderMap::new();
            if let Some(p) = prev {
                h.insert("x-forwarded-for", HeaderValue::from_static(p));
            }
            set_forwarded(
                &mut h,
                &Forwarded {
                    real_ip: None,
                    client_ip: ip,
                    proto: "http",
                    host: Some(&HeaderValue::from_static("a.com:9080")),
                    port: 9080,
                },
            );
            assert_eq!(h["x-forwarded-for"], want_xff);
            assert_eq!(h["x-real-ip"], "10.0.0.9");
            assert_eq!(h["x-forwarded-proto"], "http");
            assert_eq!(h["x-forwarded-host"], "a.com:9080");
            assert_eq!(h["x-forwarded-port"], "9080");
        }
    }
}
