//! A client's request head as the client sent it, for a request whose headers nothing
//! reads as a map: no plugin runs on it, so its lines go to the node as they came, with
//! only `Host`, the hop-by-hop lines and the forwarding headers taken out. Building a
//! header map for each request and encoding it again cost more than routing it (issue 16;
//! docs/architecture.md). What does read headers without a plugin (`vars` in a route, a
//! split or a hash key, the access log) reads them here ([`ClientHead::values`]); a
//! plugin, or an upstream not spoken to by the inline client, gets the map
//! ([`ClientHead::header_map`]), the same one the map's path would have built.
use crate::h1_client::Span;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

/// How many separate runs of lines a head may be cut into: the lines taken out are few
/// (`Host`, often `Connection`); a head cut into more goes through the map.
const MAX_RUNS: usize = 4;

/// A request head the own HTTP/1.1 loop read whole, kept as bytes (see the module's docs).
#[derive(Debug, Clone)]
pub struct ClientHead {
    head: Bytes,
    /// Where the header lines begin (after the request line).
    lines_from: u16,
    /// How many header lines there are.
    count: u8,
    /// The one `Host` line (CRLF included), and its value.
    host_line: (u16, u16),
    host: (u16, u16),
    /// The value of the one `X-Forwarded-For` line, when there is one.
    forwarded_for: Option<(u16, u16)>,
    /// Runs of whole lines (each ending in CRLF) to pass on, in order.
    runs: [(u16, u16); MAX_RUNS],
    runs_count: u8,
}

impl ClientHead {
    /// The head kept as bytes, when it is plain: exactly one `Host`, at most one
    /// `X-Forwarded-For`, no header `Connection` names for removal, no gRPC content type
    /// (its errors are answered in trailers, judged on the map), and every line passed on
    /// `name: value` ending in CRLF. `None`: the map's path takes it. `spans` are those
    /// of `head`'s header lines, in order.
    pub fn of(head: &Bytes, spans: &[Span]) -> Option<ClientHead> {
        let &(first, ..) = spans.first()?;
        let mut h = ClientHead {
            head: head.clone(),
            lines_from: first,
            count: u8::try_from(spans.len()).ok()?,
            host_line: (0, 0),
            host: (0, 0),
            forwarded_for: None,
            runs: [(0, 0); MAX_RUNS],
            runs_count: 0,
        };
        let mut has_host = false;
        for &(ns, ne, vs, ve) in spans {
            let name = &head[usize::from(ns)..usize::from(ne)];
            let value = &head[usize::from(vs)..usize::from(ve)];
            // Written whole, so spaced and ended as the map's path writes a line: `name:
            // value` and CRLF (httparse puts an empty value after the blanks that precede
            // it, so `name:` alone, without the space, is the map's path's).
            let spaced = vs == ne + 2 && head[usize::from(ne) + 1] == b' ';
            if !spaced || !head[usize::from(ve)..].starts_with(b"\r\n") {
                return None;
            }
            let end = ve + 2;
            let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
            let keep = match name.len() {
                4 if is(b"host") => {
                    if has_host {
                        return None;
                    }
                    has_host = true;
                    h.host_line = (ns, end);
                    h.host = (vs, ve);
                    false
                }
                15 if is(b"x-forwarded-for") => {
                    if h.forwarded_for.is_some() {
                        return None;
                    }
                    h.forwarded_for = Some((vs, ve));
                    false
                }
                10 if is(b"connection") => {
                    let named = value
                        .split(|b| *b == b',')
                        .map(<[u8]>::trim_ascii)
                        .any(|t| {
                            !t.is_empty()
                                && !t.eq_ignore_ascii_case(b"close")
                                && !t.eq_ignore_ascii_case(b"keep-alive")
                        });
                    if named {
                        return None;
                    }
                    false
                }
                12 if is(b"content-type") && crate::headers::is_grpc_content_type(value) => {
                    return None
                }
                // Replaced by the gateway's own (`ForwardedHeaders`; a request with a
                // `Host` always has its `X-Forwarded-Host` replaced).
                _ if crate::headers::is_forwarding_name(name) => false,
                _ => !crate::headers::is_hop_by_hop_name(name),
            };
            if !keep {
                continue;
            }
            let count = usize::from(h.runs_count);
            match h.runs[..count].last_mut() {
                Some(run) if run.1 == ns => run.1 = end,
                _ if count == MAX_RUNS => return None,
                _ => {
                    h.runs[count] = (ns, end);
                    h.runs_count += 1;
                }
            }
        }
        has_host.then_some(h)
    }

    /// The head's length in bytes.
    pub fn head_len(&self) -> usize {
        self.head.len()
    }

    /// The lines to pass on, in runs: every line but `Host`, the hop-by-hop ones and the
    /// forwarding headers.
    pub fn runs(&self) -> impl Iterator<Item = &[u8]> {
        self.runs[..usize::from(self.runs_count)]
            .iter()
            .map(|&(s, e)| &self.head[usize::from(s)..usize::from(e)])
    }

    /// The `Host` line as the client wrote it, CRLF included.
    pub fn host_line(&self) -> &[u8] {
        &self.head[usize::from(self.host_line.0)..usize::from(self.host_line.1)]
    }

    /// The `Host` value, sharing the head's bytes.
    pub fn host(&self) -> Option<HeaderValue> {
        let (s, e) = self.host;
        HeaderValue::from_maybe_shared(self.head.slice(usize::from(s)..usize::from(e))).ok()
    }

    /// The client's `X-Forwarded-For`, when it sent one in visible ASCII (what
    /// `HeaderValue::to_str` takes).
    pub fn forwarded_for(&self) -> Option<&str> {
        let (s, e) = self.forwarded_for?;
        as_str(&self.head[usize::from(s)..usize::from(e)])
    }

    /// The values of every line named `name` (any case), in order, that are visible
    /// ASCII: what `HeaderMap::get_all(name)` and `to_str` give on the map's path.
    pub fn values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.lines()
            .filter(move |&(ns, ne, _, _)| self.head[ns..ne].eq_ignore_ascii_case(name.as_bytes()))
            .filter_map(|(_, _, vs, ve)| as_str(&self.head[vs..ve]))
    }

    /// The first line named `name` (any case), when its value is visible ASCII: what
    /// `HeaderMap::get(name)` and `to_str` give on the map's path.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.lines()
            .find(|&(ns, ne, _, _)| self.head[ns..ne].eq_ignore_ascii_case(name.as_bytes()))
            .and_then(|(_, _, vs, ve)| as_str(&self.head[vs..ve]))
    }

    /// The header map the map's path builds of this head: every line, in order.
    pub fn header_map(&self) -> HeaderMap {
        let map = header_map(&self.head, self.lines(), usize::from(self.count));
        // `of` judged a head httparse took whole, which `header_map` never refuses.
        debug_assert!(map.is_some(), "a field httparse took");
        map.unwrap_or_default()
    }

    /// Each header line's name and value spans, as httparse gave them: a line is
    /// `name:`, optional blanks, the value, optional blanks, then LF or CRLF (the head
    /// was parsed whole, so nothing else is there).
    fn lines(&self) -> impl Iterator<Item = (usize, usize, usize, usize)> + '_ {
        let head = &self.head[..];
        let mut at = usize::from(self.lines_from);
        std::iter::from_fn(move || {
            let line = at;
            if matches!(head.get(line), None | Some(b'\r' | b'\n')) {
                return None;
            }
            // Names are short: a plain scan finds the colon sooner than a vector search.
            let colon = line + head[line..].iter().position(|&b| b == b':')?;
            let mut vs = colon + 1;
            while matches!(head.get(vs), Some(b' ' | b'\t')) {
                vs += 1;
            }
            let eol = vs + memchr::memchr(b'\n', &head[vs..])?;
            let mut ve = eol;
            while ve > vs && matches!(head[ve - 1], b' ' | b'\t' | b'\r') {
                ve -= 1;
            }
            at = eol + 1;
            Some((line, colon, vs, ve))
        })
        .take(usize::from(self.count))
    }
}

/// The header map of `count` fields of `head`, given as (name start, name end, value start,
/// value end), with room for what plugins add. `None` when a name or value is one `http`
/// refuses, which cannot be after httparse took them (it admits only tokens as names and
/// only what `HeaderValue` takes, visible ASCII, space, tab and obs-text, as values).
pub fn header_map(
    head: &Bytes,
    fields: impl Iterator<Item = (usize, usize, usize, usize)>,
    count: usize,
) -> Option<HeaderMap> {
    let mut map = HeaderMap::with_capacity(count + crate::h1_client::ROOM_FOR_PLUGINS);
    for (ns, ne, vs, ve) in fields {
        let name = HeaderName::from_bytes(&head[ns..ne]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve)).ok()?;
        map.append(name, value);
    }
    Some(map)
}

/// `v` as `HeaderValue::to_str` takes it: visible ASCII and tabs.
fn as_str(v: &[u8]) -> Option<&str> {
    v.iter()
        .all(|&b| b == b'\t' || (32..127).contains(&b))
        .then(|| std::str::from_utf8(v).ok())
        .flatten()
}
