//! What the gateway refuses in a client's request head before routing it, and the host and
//! path it routes on. Each check closes a way for the gateway and a backend to read one
//! request differently (the host it is for, the path it asks, where its body ends). Pure.
use crate::client_head::ClientHead;
use crate::normalize::{normalize_path, PathError};
use crate::proxy::ProxyError;
use http::header::{HOST, TRANSFER_ENCODING};
use http::{HeaderValue, Version};
use model::host::{parse_request_host, plain_request_host_len};

/// Longest request target (path and query) accepted; longer is 414, as nginx's default
/// `large_client_header_buffers 4 8k` answers a request line over 8 KiB. (A target too
/// long for the whole head's buffer, 64 KiB, is refused by the HTTP parser with 431.)
pub const MAX_TARGET_BYTES: usize = 8 * 1024;

/// The host a request is for: the name to route on (normalised) and the value to forward
/// as `Host`, when there is one.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestHost {
    name: HostName,
    pub header: Option<HeaderValue>,
}

#[derive(Debug, PartialEq, Eq)]
enum HostName {
    Normalised(String),
    /// The header's first this many bytes, already normal (most hosts): no copy.
    Prefix(usize),
}

impl RequestHost {
    /// The name to route on.
    pub fn name(&self) -> &str {
        match (&self.name, &self.header) {
            (HostName::Normalised(n), _) => n,
            (HostName::Prefix(len), Some(h)) => h
                .as_bytes()
                .get(..*len)
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or_default(),
            (HostName::Prefix(_), None) => "",
        }
    }
}

/// RFC 9112 §3.2: exactly one `Host` in HTTP/1.1; when the target is in absolute form its
/// authority wins and `Host` is replaced by it (§3.2.2). RFC 9113 §8.3.1: an HTTP/2 `host`
/// header that differs from `:authority` makes the request malformed. HTTP/1.0 may omit
/// both. The name must be a valid host (see [`parse_request_host`]).
pub fn request_host(parts: &http::request::Parts) -> Result<RequestHost, ProxyError> {
    let mut hosts = parts.headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    let authority = parts
        .uri
        .authority()
        .map(|a| HeaderValue::from_str(a.as_str()))
        .transpose()
        .map_err(|_| ProxyError::BadRequest("invalid authority in the request target"))?;
    let chosen = match (authority, host) {
        (Some(a), Some(h)) if parts.version == Version::HTTP_2 && a != h => {
            return Err(ProxyError::BadRequest(
                "the host header differs from :authority",
            ))
        }
        (Some(a), _) => Some(a),
        (None, Some(h)) => Some(h.clone()),
        (None, None) if parts.version == Version::HTTP_11 => {
            return Err(ProxyError::BadRequest("missing Host header"))
        }
        (None, None) => None,
    };
    named(chosen)
}

/// The host of a request whose head is kept as bytes ([`ClientHead`]): its one `Host`
/// (such a head has exactly one, and its target no authority), judged as
/// [`request_host`] judges it.
pub fn request_host_of(head: &ClientHead) -> Result<RequestHost, ProxyError> {
    let host = head
        .host()
        .ok_or(ProxyError::BadRequest("invalid Host header"))?;
    named(Some(host))
}

/// The name to route on of the chosen `Host` value.
fn named(chosen: Option<HeaderValue>) -> Result<RequestHost, ProxyError> {
    let name = match &chosen {
        // Most hosts are plain: judged on the bytes, which then need no text check.
        Some(h) => match plain_request_host_len(h.as_bytes()) {
            Some(len) => HostName::Prefix(len),
            None => {
                let s = h
                    .to_str()
                    .map_err(|_| ProxyError::BadRequest("invalid Host header"))?;
                HostName::Normalised(
                    parse_request_host(s)
                        .map_err(|_| ProxyError::BadRequest("invalid Host header"))?,
                )
            }
        },
        None => HostName::Prefix(0),
    };
    Ok(RequestHost {
        name,
        header: chosen,
    })
}

/// A body is framed by `Content-Length` or by `chunked` alone. Any other transfer coding
/// (`gzip, chunked`) would reach the node decoded from chunked but still gzip-encoded
/// with nothing saying so: the body would change meaning. nginx answers 501 too.
pub fn check_framing(headers: &http::HeaderMap) -> Result<(), ProxyError> {
    // Exactly one `chunked` over every header: hyper removes one layer, so a second one
    // would reach the node still chunk-encoded with nothing saying so.
    let mut codings = 0;
    let mut ok = true;
    for value in headers.get_all(TRANSFER_ENCODING) {
        ok &= value.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .all(|c| {
                    codings += 1;
                    c.eq_ignore_ascii_case("chunked")
                })
        });
    }
    if !ok || codings > 1 {
        return Err(ProxyError::NotImplemented(
            "transfer codings other than chunked are not supported",
        ));
    }
    Ok(())
}

/// The target's length limit, then its path normalised ([`normalize_path`]); `Some` only
/// when normalising changed it, with the query kept as sent.
pub fn normalized_target(uri: &http::Uri) -> Result<Option<http::uri::PathAndQuery>, ProxyError> {
    let Some(pq) = uri.path_and_query() else {
        return Ok(None);
    };
    if pq.as_str().len() > MAX_TARGET_BYTES {
        return Err(ProxyError::UriTooLong);
    }
    let path = normalize_path(pq.path()).map_err(|e| match e {
        PathError::AboveRoot => ProxyError::BadRequest("the path climbs above the root"),
        PathError::BadPercent => ProxyError::BadRequest("invalid percent-encoding in the path"),
        PathError::HiddenDotSegment => {
            ProxyError::BadRequest("a '.' or '..' segment hidden behind %2F, %5C, '\\' or ';'")
        }
    })?;
    let std::borrow::Cow::Owned(path) = path else {
        return Ok(None);
    };
    let rebuilt = match pq.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    rebuilt
        .parse()
        .map(Some)
        .map_err(|_| ProxyError::BadRequest("invalid request target"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(version: Version, target: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().version(version).uri(target);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn hosts() {
        use Version as V;
        type Case<'a> = (
            V,
            &'a str,
            &'a [(&'a str, &'a str)],
            Result<(&'a str, Option<&'a str>), &'a str>,
        );
        let table: &[Case] = &[
            (
                V::HTTP_11,
                "/",
                &[("host", "Foo.com:9080")],
                Ok(("foo.com", Some("Foo.com:9080"))),
            ),
            (
                V::HTTP_11,
                "/",
                &[("host", "a"), ("host", "b")],
                Err("more than one"),
            ),
            (
                V::HTTP_11,
                "/",
                &[("host", "a"), ("host", "a")],
                Err("more than one"),
            ),
            (V::HTTP_11, "/", &[], Err("missing Host")),
            (V::HTTP_10, "/", &[], Ok(("", None))),
            (
                V::HTTP_11,
                "/",
                &[("host", "a b/../@c")],
                Err("invalid Host"),
            ),
            (
                V::HTTP_11,
                "/",
                &[("host", "evil.com\\\\@good.com")],
                Err("invalid Host"),
            ),
            // Absolute form: the target's authority wins and replaces Host.
            (
                V::HTTP_11,
                "http://b.com/x",
                &[("host", "a.com")],
                Ok(("b.com", Some("b.com"))),
            ),
            (
                V::HTTP_11,
                "http://b.com:81/x",
                &[],
                Ok(("b.com", Some("b.com:81"))),
            ),
            (
                V::HTTP_11,
                "http://user@b.com/x",
                &[("host", "b.com")],
                Err("invalid Host"),
            ),
            (
                V::HTTP_2,
                "http://a.com/x",
                &[],
                Ok(("a.com", Some("a.com"))),
            ),
            (
                V::HTTP_2,
                "http://a.com/x",
                &[("host", "a.com")],
                Ok(("a.com", Some("a.com"))),
            ),
            (
                V::HTTP_2,
                "http://a.com/x",
                &[("host", "b.com")],
                Err("differs from :authority"),
            ),
            (
                V::HTTP_2,
                "/x",
                &[("host", "b.com")],
                Ok(("b.com", Some("b.com"))),
            ),
        ];
        for (version, target, headers, want) in table {
            let got = request_host(&parts(*version, target, headers));
            match (got, want) {
                (Ok(h), Ok((name, header))) => {
                    assert_eq!(h.name(), *name, "{target} {headers:?}");
                    assert_eq!(
                        h.header.as_ref().map(|v| v.to_str().unwrap()),
                        *header,
                        "{target} {headers:?}"
                    );
                }
                (Err(e), Err(needle)) => {
                    assert!(e.to_string().contains(needle), "{target} {headers:?}: {e}")
                }
                (got, want) => panic!("{target} {headers:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn framing() {
        for (te, ok) in [
            (&["chunked"][..], true),
            (&["Chunked"], true),
            (&["gzip, chunked"], false),
            (&["gzip", "chunked"], false),
            (&["identity"], false),
            (&["chunked, chunked"], false),
            (&["chunked", "chunked"], false),
            (&[], true),
        ] {
            let mut h = http::HeaderMap::new();
            for v in te {
                h.append(TRANSFER_ENCODING, HeaderValue::from_static(v));
            }
            let got = check_framing(&h);
            assert_eq!(got.is_ok(), ok, "{te:?}");
            if !ok {
                assert_eq!(got.unwrap_err().status(), 501);
            }
        }
    }

    #[test]
    fn targets() {
        let check = |target: &str| normalized_target(&target.parse().unwrap());
        assert_eq!(check("/a/b?x=1").unwrap(), None);
        assert_eq!(
            check("/a/../b?x=/../y").unwrap().unwrap().as_str(),
            "/b?x=/../y"
        );
        assert_eq!(check("/..").unwrap_err().status(), 400);
        assert_eq!(check("/a%zz").unwrap_err().status(), 400);
        let long = format!("/{}", "a".repeat(MAX_TARGET_BYTES));
        assert_eq!(check(&long).unwrap_err().status(), 414);
        let fits = format!("/{}", "a".repeat(MAX_TARGET_BYTES - 1));
        assert_eq!(check(&fits).unwrap(), None);
    }
}
