//! Header rewriting between client and upstream: hop-by-hop removal and forwarding headers.
use bytes::Bytes;
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
    hop_index(name).is_some()
}

/// Whether a header name as written on the wire (any case) is one of the fixed
/// hop-by-hop headers.
pub fn is_hop_by_hop_name(name: &[u8]) -> bool {
    let fixed: &[u8] = match name.len() {
        2 => b"te",
        7 if name[0].eq_ignore_ascii_case(&b't') => b"trailer",
        7 => b"upgrade",
        10 if name[0].eq_ignore_ascii_case(&b'c') => b"connection",
        10 => b"keep-alive",
        16 => b"proxy-connection",
        17 => b"transfer-encoding",
        19 => b"proxy-authorization",
        _ => return false,
    };
    name.eq_ignore_ascii_case(fixed)
}

/// `name`'s place in [`HOP_BY_HOP`]. A `match` on the text compiles to a test of the
/// length and then of a few bytes, where comparing with each of the eight names cost
/// two comparisons per header per name (a profile showed 2.6% of a request).
fn hop_index(name: &HeaderName) -> Option<usize> {
    match name.as_str() {
        "connection" => Some(0),
        "keep-alive" => Some(1),
        "proxy-connection" => Some(2),
        "te" => Some(3),
        "trailer" => Some(4),
        "transfer-encoding" => Some(5),
        "upgrade" => Some(6),
        "proxy-authorization" => Some(7),
        _ => None,
    }
}

/// Removes hop-by-hop headers, including any the `Connection` header names.
/// One scan of the names finds which are present; only those are removed, so the common
/// `Connection: keep-alive` costs two removals rather than one per hop-by-hop name.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = [false; HOP_BY_HOP.len()];
    for k in headers.keys() {
        if let Some(i) = hop_index(k) {
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
    ForwardedHeaders::new(headers, f).apply(headers);
}

/// The forwarding headers of one request, worked out once from the client's headers:
/// set in a header map for hyper's client ([`apply`](Self::apply), which gives the same
/// map however often it runs, so a retry on another node is safe), or written straight
/// after the head by the inline client ([`write`](Self::write)), which saves five map
/// inserts (and often a rehash of the whole map) per request. The addresses are kept as
/// text in place: the inline client writes them without an allocation.
#[derive(Debug, Clone)]
pub struct ForwardedHeaders {
    peer: IpText,
    /// The client's own `X-Forwarded-For` values, joined with ", ", when it sent any:
    /// the peer's address follows them.
    previous: Option<Box<str>>,
    /// `None`: the peer.
    real_ip: Option<IpText>,
    proto: &'static str,
    /// `None`: whatever `X-Forwarded-Host` the client sent stays.
    host: Option<HeaderValue>,
    port: u16,
}

impl ForwardedHeaders {
    pub fn new(headers: &HeaderMap, f: &Forwarded<'_>) -> ForwardedHeaders {
        let previous = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok());
        ForwardedHeaders::after(previous, f)
    }

    /// The same, given the client's `X-Forwarded-For` values (those in visible ASCII).
    pub fn after<'a>(
        previous: impl Iterator<Item = &'a str>,
        f: &Forwarded<'_>,
    ) -> ForwardedHeaders {
        // Proxies before us may have sent several X-Forwarded-For lines: keep them all,
        // in order.
        let mut prev = previous.map(str::trim).filter(|v| !v.is_empty()).peekable();
        let previous = prev
            .peek()
            .is_some()
            .then(|| prev.collect::<Vec<_>>().join(", ").into_boxed_str());
        ForwardedHeaders {
            peer: IpText::of(f.client_ip),
            previous,
            real_ip: f.real_ip.map(IpText::of),
            proto: f.proto,
            host: f.host.cloned(),
            port: f.port,
        }
    }

    /// `X-Forwarded-For`'s value, into `out`.
    fn forwarded_for(&self, out: &mut Vec<u8>) {
        if let Some(p) = &self.previous {
            out.extend_from_slice(p.as_bytes());
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(self.peer.as_bytes());
    }

    fn real_ip(&self) -> &[u8] {
        self.real_ip.as_ref().unwrap_or(&self.peer).as_bytes()
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        let mut xff = Vec::with_capacity(64);
        self.forwarded_for(&mut xff);
        // Visible ASCII joined with ", " and an address: always a valid value.
        let value = |v: Bytes| {
            HeaderValue::from_maybe_shared(v)
                .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
        };
        // Room for the five at once: growing the map one insert at a time rehashes it.
        headers.reserve(5);
        headers.insert(X_FORWARDED_FOR.clone(), value(Bytes::from(xff)));
        let real_ip = Bytes::copy_from_slice(self.real_ip());
        headers.insert(X_REAL_IP.clone(), value(real_ip));
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(self.proto),
        );
        if let Some(h) = &self.host {
            headers.insert(X_FORWARDED_HOST.clone(), h.clone());
        }
        headers.insert(X_FORWARDED_PORT.clone(), HeaderValue::from(self.port));
    }

    /// Whether a header line of the request is replaced by these.
    pub fn replaces(&self, name: &HeaderName) -> bool {
        is_forwarding_name(name.as_str().as_bytes())
            && (self.host.is_some() || *name != X_FORWARDED_HOST)
    }

    /// How many bytes [`ForwardedHeaders::write`] writes: room made for them up front
    /// saves growing the node's head, a copy of all of it, on every request.
    pub fn encoded_len(&self) -> usize {
        let previous = self.previous.as_ref().map_or(0, |p| p.len() + 2);
        let host = self.host.as_ref().map_or(0, |h| HOST_LINE.len() + h.len());
        FOR_LINE.len()
            + previous
            + self.peer.as_bytes().len()
            + REAL_IP_LINE.len()
            + self.real_ip().len()
            + PROTO_LINE.len()
            + self.proto.len()
            + host
            + PORT_LINE.len()
            + decimal(u64::from(self.port), &mut [0; 20]).len()
            + 2
    }

    /// The header lines, as HTTP/1.1 writes them (names lower case, as hyper's are).
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(FOR_LINE);
        self.forwarded_for(out);
        out.extend_from_slice(REAL_IP_LINE);
        out.extend_from_slice(self.real_ip());
        out.extend_from_slice(PROTO_LINE);
        out.extend_from_slice(self.proto.as_bytes());
        if let Some(h) = &self.host {
            out.extend_from_slice(HOST_LINE);
            out.extend_from_slice(h.as_bytes());
        }
        out.extend_from_slice(PORT_LINE);
        out.extend_from_slice(decimal(u64::from(self.port), &mut [0; 20]));
        out.extend_from_slice(b"\r\n");
    }
}

// What `ForwardedHeaders::write` puts before each value (and `encoded_len` counts).
const FOR_LINE: &[u8] = b"x-forwarded-for: ";
const REAL_IP_LINE: &[u8] = b"\r\nx-real-ip: ";
const PROTO_LINE: &[u8] = b"\r\nx-forwarded-proto: ";
const HOST_LINE: &[u8] = b"\r\nx-forwarded-host: ";
const PORT_LINE: &[u8] = b"\r\nx-forwarded-port: ";

/// Whether `name` (any case) is one of the forwarding headers the gateway sets:
/// `X-Forwarded-For`, `-Proto`, `-Host`, `-Port` and `X-Real-IP`.
pub fn is_forwarding_name(name: &[u8]) -> bool {
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    match name.len() {
        9 => is(b"x-real-ip"),
        15 => is(b"x-forwarded-for"),
        16 => is(b"x-forwarded-host") || is(b"x-forwarded-port"),
        17 => is(b"x-forwarded-proto"),
        _ => false,
    }
}

/// Whether a `Content-Type` value is gRPC's, whose errors are answered in trailers.
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    value.starts_with(b"application/grpc")
}

/// `n` in decimal digits, written into `digits` without the formatting machinery (it is
/// on every request: ports, lengths, counts).
pub fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &digits[at..]
}

/// An address as text, in place (an IPv6 address with an IPv4 tail is at most 45 bytes).
#[derive(Debug, Clone, Copy)]
struct IpText {
    len: u8,
    text: [u8; 45],
}

impl IpText {
    /// Without an allocation; IPv4 without the formatting machinery either (it is on
    /// every request).
    fn of(ip: IpAddr) -> IpText {
        let mut text = [0u8; 45];
        let len = match ip {
            IpAddr::V4(v4) => {
                let (digits, len) = crate::request_vars::ipv4_text(v4);
                text[..len].copy_from_slice(&digits[..len]);
                len
            }
            IpAddr::V6(v6) => {
                use std::io::Write;
                let mut rest = &mut text[..];
                // Rust writes an IPv6 address in at most 39 bytes: it fits.
                let _ = write!(rest, "{v6}");
                let left = rest.len();
                45 - left
            }
        };
        IpText {
            len: u8::try_from(len).unwrap_or(0),
            text,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.text[..usize::from(self.len)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_are_hop_by_hop_as_map_names_are() {
        let names = [
            "Connection",
            "KEEP-ALIVE",
            "proxy-Connection",
            "Te",
            "trailer",
            "Transfer-Encoding",
            "upgrade",
            "Proxy-Authorization",
            "Content-Length",
            "tf",
            "trailers",
            "upgradf",
            "connectioN",
            "keep-alivf",
            "date",
            "x",
            "Authorization",
            "proxy-authenticate",
        ];
        for name in names {
            let mapped = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert_eq!(
                is_hop_by_hop_name(name.as_bytes()),
                is_hop_by_hop(&mapped),
                "{name}"
            );
        }
    }

    #[test]
    fn the_index_is_the_list() {
        for (i, h) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_index(h), Some(i), "{h}");
        }
        for other in [
            "host",
            "user-agent",
            "content-length",
            "x-te",
            "connections",
        ] {
            assert_eq!(hop_index(&HeaderName::from_static(other)), None, "{other}");
        }
    }

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
            "::ffff:192.0.2.255",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::of(ip).as_bytes(), ip.to_string().as_bytes());
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

    /// The inline client's lines say exactly what the map gets, and the map is the same
    /// however often they are applied.
    #[test]
    fn written_and_applied_forwarding_agree() {
        for (prev, host, port, peer, real_ip) in [
            (&[][..], None, 80, "10.0.0.9", Some("192.0.2.7")),
            (
                &["1.1.1.1", "2.2.2.2, 3.3.3.3"][..],
                Some("a.com:9080"),
                9080,
                "10.0.0.9",
                Some("192.0.2.7"),
            ),
            (&[][..], Some("b"), 0, "10.0.0.9", None),
            (&[][..], None, 65535, "10.0.0.9", None),
            // Values of blanks only are dropped; IPv6 peers, an IPv4-mapped one.
            (
                &["  ", "\t", "4.4.4.4"][..],
                None,
                80,
                "2001:db8::8a2e:370:7334",
                None,
            ),
            (&[][..], None, 80, "::ffff:192.0.2.255", Some("fe80::1")),
            (
                &[][..],
                None,
                80,
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                None,
            ),
        ] {
            let mut h = HeaderMap::new();
            for p in prev {
                h.append("x-forwarded-for", HeaderValue::from_static(p));
            }
            h.insert("x-forwarded-host", HeaderValue::from_static("from-client"));
            h.insert("x-other", HeaderValue::from_static("1"));
            let host = host.map(HeaderValue::from_static);
            let f = ForwardedHeaders::new(
                &h,
                &Forwarded {
                    real_ip: real_ip.map(|ip| ip.parse().unwrap()),
                    client_ip: peer.parse().unwrap(),
                    proto: "https",
                    host: host.as_ref(),
                    port,
                },
            );
            let mut written = Vec::new();
            for (name, value) in &h {
                if !f.replaces(name) {
                    written.push(format!("{name}: {}", value.to_str().unwrap()));
                }
            }
            let mut lines = Vec::new();
            f.write(&mut lines);
            assert_eq!(f.encoded_len(), lines.len(), "room made for the lines");
            written.extend(String::from_utf8(lines).unwrap().lines().map(String::from));
            written.sort();
            f.apply(&mut h);
            let once = h.clone();
            f.apply(&mut h);
            assert_eq!(h, once, "applying twice changes the map");
            let mut applied: Vec<String> = h
                .iter()
                .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
                .collect();
            applied.sort();
            assert_eq!(written, applied);
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
