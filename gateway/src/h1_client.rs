//! HTTP/1.1 to a node over plain TCP, driven by the request's own task: the request head is
//! written as one buffer, the response head is parsed with httparse straight into the
//! response the client gets, and the body is read by the client's response body as the
//! client takes it. hyper's client puts a connection task and a channel between the two
//! (about 14,600 instructions per request of the 45,700 measured in docs/benchmarks.md
//! §1d); this path has neither. It carries every request but upgrades and CONNECT (a body
//! is written as it arrives while the answer is awaited); those go through hyper on the
//! same connection (`Conn::into_hyper`).
use crate::client_head::ClientHead;
use crate::headers::{is_hop_by_hop, ForwardedHeaders};
use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Version};
use http_body::{Frame, SizeHint};
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most bytes a response head (status line and headers) may take; over it, 502.
/// hyper's client is held to the same (`pool::handshake`), so that a node's answer does
/// not depend on which client carried the request. nginx's default is 4 or 8 KiB.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header lines in a head or trailer section (hyper's default).
pub const MAX_HEADERS: usize = 100;
/// Room a header map is made with beyond the lines it starts with, for the headers the
/// plugins and the forwarding add: a map that grows rehashes every entry.
pub const ROOM_FOR_PLUGINS: usize = 8;

/// Where a header's name and value lie in its head: name start and end, value start and
/// end. Offsets, not slices, so that the values can share the head's bytes once it is
/// split off; 16 bits, as the heads they index are at most 64 KiB.
pub type Span = (u16, u16, u16, u16);
/// Heads with at most this many lines (nearly all) have their spans in a small array.
pub const FEW_HEADERS: usize = 16;

/// Binds `$spans` to the [`Span`]s of `$headers` in `$head`, in a local array: a small
/// one for most heads. Zeroing room for `MAX_HEADERS` spans (800 bytes) on every head cost
/// more than the spans themselves. A macro, as the array must live in the caller's frame.
macro_rules! spans_of {
    ($spans:ident, $head:expr, $headers:expr) => {
        let (mut few, mut many);
        let $spans: &mut [$crate::h1_client::Span] =
            if $headers.len() <= $crate::h1_client::FEW_HEADERS {
                few = [(0, 0, 0, 0); $crate::h1_client::FEW_HEADERS];
                &mut few
            } else {
                many = [(0, 0, 0, 0); $crate::h1_client::MAX_HEADERS];
                &mut many
            };
        $crate::h1_client::header_spans($head, $headers, $spans);
    };
}
pub(crate) use spans_of;

/// Fills `spans` with those of `headers`, which `httparse` parsed out of `head` (at most
/// 64 KiB long); on the stack, where a list would cost an allocation a request.
#[inline]
pub fn header_spans(head: &[u8], headers: &[httparse::Header<'_>], spans: &mut [Span]) {
    let base = head.as_ptr() as usize;
    let at = |s: &[u8]| (s.as_ptr() as usize - base) as u16;
    for (span, h) in spans.iter_mut().zip(headers) {
        let (name, value) = (at(h.name.as_bytes()), at(h.value));
        *span = (
            name,
            name + h.name.len() as u16,
            value,
            value + h.value.len() as u16,
        );
    }
}
/// How much room each read asks for.
const READ_CHUNK: usize = 8 * 1024;
/// The longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// A connection to a node and the bytes read from it but not yet used.
pub struct Connection {
    pub io: TcpStream,
    pub buf: BytesMut,
}

impl Connection {
    pub fn new(io: TcpStream) -> Connection {
        Connection {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Whether the node closed the connection, or sent something unasked, while it sat in
    /// the pool. The socket's readiness is cached by the event loop, so an idle, open
    /// connection answers without a system call.
    pub fn is_closed(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => false,
            Poll::Ready(Err(_)) => true,
            // Readable: data, end of stream, or only a stale readiness; one read tells.
            Poll::Ready(Ok(())) => self.is_closed_for_use(),
        }
    }

    /// [`Connection::is_closed`] for a connection the calling task is about to use, about
    /// 170 instructions cheaper: a read tried on the cached readiness (no system call
    /// while it says "not readable"), without swapping the socket's waker under its lock.
    /// `is_closed` puts a no-op waker there, so that a pooled socket holds no finished
    /// task; here the caller's own waker goes there next anyway.
    pub fn is_closed_for_use(&self) -> bool {
        // Data, end of stream or an error: not a connection to send a request on.
        !matches!(
            self.io.try_read(&mut [0u8; 1]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        )
    }
}

impl Error {
    pub fn into_io(self) -> std::io::Error {
        match self {
            Error::NotSent(e) | Error::Io(e) => e,
            other => std::io::Error::other(other.to_string()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The head could not be written: the node never got a whole request.
    #[error("writing the request: {0}")]
    NotSent(std::io::Error),
    /// The node closed the connection before a byte of response.
    #[error("connection closed before a response")]
    Closed,
    #[error("reading the response: {0}")]
    Io(std::io::Error),
    #[error("connection closed before the response ended")]
    Truncated,
    #[error("invalid response: {0}")]
    Invalid(&'static str),
}

/// Writes the request head as HTTP/1.1: origin-form target, header lines as they are in
/// the map (names lower case, as hyper writes them), then those of `raw`, the head as the
/// client sent it (its `Host` line unless the map has one), then the forwarding headers
/// in place of any the map has.
pub fn encode_head<B>(
    req: &Request<B>,
    raw: Option<&ClientHead>,
    forwarded: Option<&ForwardedHeaders>,
    chunked: bool,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        if forwarded.is_some_and(|f| f.replaces(name)) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(raw) = raw {
        if !req.headers().contains_key(http::header::HOST) {
            out.extend_from_slice(raw.host_line());
        }
        for run in raw.runs() {
            out.extend_from_slice(run);
        }
    }
    if let Some(f) = forwarded {
        f.write(out);
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes the request head. Bounded by the caller's send timeout.
pub async fn send(conn: &mut Connection, head: &[u8]) -> Result<(), Error> {
    conn.io.write_all(head).await.map_err(Error::NotSent)
}

/// Why a request body did not reach the node whole.
#[derive(Debug)]
pub enum BodyError {
    /// The client's body failed (aborted, too large, stalled, badly framed).
    Client,
    /// Writing to the node failed.
    Write(std::io::Error),
    /// The node took nothing for the send timeout.
    Timeout,
}

/// Writes a request body as it arrives: as it is when the head gave its length,
/// chunk-encoded otherwise (trailers are not sent, as hyper's client does not send them
/// without `TE: trailers`). Each write is bounded by `gap`.
pub async fn write_body<W, B>(
    io: &mut W,
    body: &mut B,
    chunked: bool,
    gap: Duration,
) -> Result<(), BodyError>
where
    W: AsyncWrite + Unpin,
    B: http_body::Body<Data = Bytes> + Unpin,
{
    loop {
        let frame = match poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
            None => break,
            Some(Err(_)) => return Err(BodyError::Client),
            Some(Ok(frame)) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        let written = if chunked {
            // One vectored write: size line, data, CRLF.
            let mut buf = Bytes::from(format!("{:x}\r\n", data.len()))
                .chain(data)
                .chain(&b"\r\n"[..]);
            tokio::time::timeout(gap, io.write_all_buf(&mut buf)).await
        } else {
            tokio::time::timeout(gap, io.write_all(&data)).await
        };
        match written {
            Err(_) => return Err(BodyError::Timeout),
            Ok(Err(e)) => return Err(BodyError::Write(e)),
            Ok(Ok(())) => {}
        }
    }
    if chunked {
        match tokio::time::timeout(gap, io.write_all(b"0\r\n\r\n")).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(Err(e)) => return Err(BodyError::Write(e)),
            Ok(Ok(())) => {}
        }
    }
    Ok(())
}

/// Reads until a final response head is complete (informational ones are skipped) and
/// returns it with the decoder of its body. Reads from one half of the connection: the
/// other may be writing the request body meanwhile.
pub async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    method: &Method,
    verbatim: bool,
) -> Result<Parsed, Error> {
    let mut seen_any = !buf.is_empty();
    // How far the buffer is known to hold no end of head: a node that sends its head a
    // byte at a time costs one scan of each byte, not one parse of the whole per read.
    // `None` until a parse found the head incomplete: a head that comes whole in one read
    // (nearly all do) is parsed at once, without the scan.
    let mut scanned = None;
    loop {
        let may_end = match scanned {
            None => !buf.is_empty(),
            Some(from) => head_may_end(buf, from),
        };
        if may_end {
            if let Some(done) = parse_head(buf, method, verbatim)? {
                return Ok(done);
            }
            // What is left (after any informational heads taken out) holds no whole head.
            scanned = Some(buf.len());
        } else if !buf.is_empty() {
            scanned = Some(buf.len());
        }
        if buf.len() >= MAX_HEAD {
            return Err(Error::Invalid("response head too large"));
        }
        let n = poll_fn(|cx| fill(&mut *io, buf, cx, READ_CHUNK)).await;
        match n {
            Ok(0) | Err(_) if !seen_any => return Err(Error::Closed),
            Ok(0) => return Err(Error::Truncated),
            Err(e) => return Err(Error::Io(e)),
            Ok(_) => seen_any = true,
        }
    }
}

/// Whether `buf` holds an empty line (`\n\n` or `\n\r\n`) that ends past `from`.
pub(crate) fn head_may_end(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(2);
    memchr::memchr_iter(b'\n', &buf[start..]).any(|i| {
        let rest = &buf[start + i + 1..];
        rest.starts_with(b"\n") || rest.starts_with(b"\r\n")
    })
}

fn fill<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
    want: usize,
) -> Poll<std::io::Result<usize>> {
    buf.reserve(want);
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// A response head: its parts (headers in the map unless they came [`Verbatim`]), its
/// body's decoder, and its header lines as the node wrote them when that was asked for
/// and the head is a plain one.
pub type Parsed = (http::response::Parts, Decoder, Option<Verbatim>);

/// Parses a response head at the start of `buf`, taking it out. `None`: not complete yet.
/// Informational (1xx) heads are dropped; 101 is refused, as nothing asked to upgrade.
/// Hop-by-hop headers (and those `Connection` names) are left out of the returned map.
/// `verbatim`: the caller passes the head on untouched, so a plain head (a success with
/// a length or chunked, HTTP/1.1, the usual reason phrase) is not parsed into the map but
/// returned as its lines ([`Verbatim`]); anything else still comes in the map.
pub fn parse_head(
    buf: &mut BytesMut,
    method: &Method,
    verbatim: bool,
) -> Result<Option<Parsed>, Error> {
    loop {
        // Uninitialised: a zeroed array of 100 headers costs more than the parse.
        let mut headers =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut r = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut r,
            buf,
            &mut headers,
        ) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Error::Invalid("more than 100 header lines"))
            }
            Err(_) => return Err(Error::Invalid("malformed response head")),
        };
        if len > usize::from(u16::MAX) {
            return Err(Error::Invalid("response head too large"));
        }
        let code = r.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| Error::Invalid("status code"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(Error::Invalid("switched protocols unasked"));
        }
        if status.is_informational() {
            buf.advance(len);
            continue;
        }
        let version = if r.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        // hyper's server writes a reason phrase other than the usual one back out.
        let reason = r
            .reason
            .filter(|given| Some(*given) != status.canonical_reason())
            .and_then(|given| hyper::ext::ReasonPhrase::try_from(given.as_bytes().to_vec()).ok());
        let count = r.headers.len();
        spans_of!(spans, buf, r.headers);
        let head = buf.split_to(len).freeze();
        let plain = verbatim
            && version == Version::HTTP_11
            && reason.is_none()
            && *method != Method::HEAD
            && status != StatusCode::NO_CONTENT
            && status != StatusCode::NOT_MODIFIED;
        if plain {
            if let Some((lines, framing)) = Verbatim::of(&head, &spans[..count])? {
                let mut parts = http::Response::new(()).into_parts().0;
                parts.status = status;
                let keepalive = !lines.close;
                return Ok(Some((parts, Decoder { framing, keepalive }, Some(lines))));
            }
        }
        let mut map = HeaderMap::with_capacity(count + ROOM_FOR_PLUGINS);
        let mut length: Option<u64> = None;
        let mut has_te = false;
        let mut chunked = false;
        // Once any value asks to close, a later keep-alive must not undo it.
        let (mut saw_close, mut saw_keepalive) = (false, false);
        let mut named: Vec<HeaderName> = Vec::new();
        for &(ns, ne, vs, ve) in &spans[..count] {
            let name = HeaderName::from_bytes(&head[usize::from(ns)..usize::from(ne)])
                .map_err(|_| Error::Invalid("header name"))?;
            let value = &head[usize::from(vs)..usize::from(ve)];
            if name == CONTENT_LENGTH {
                let n = parse_length(value)?;
                if length.is_some_and(|l| l != n) {
                    return Err(Error::Invalid("differing Content-Length values"));
                }
                length = Some(n);
            } else if name == TRANSFER_ENCODING {
                // Only the last coding decides; a later line may add one after chunked.
                has_te = true;
                chunked = last_token(value).eq_ignore_ascii_case(b"chunked");
            } else if name == CONNECTION {
                for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        saw_close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        saw_keepalive = true;
                    } else if let Ok(n) = HeaderName::from_bytes(token) {
                        named.push(n);
                    }
                }
            }
            if is_hop_by_hop(&name) {
                continue;
            }
            let value =
                HeaderValue::from_maybe_shared(head.slice(usize::from(vs)..usize::from(ve)))
                    .map_err(|_| Error::Invalid("header value"))?;
            map.append(name, value);
        }
        for n in named {
            map.remove(n);
        }
        // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message is faulty framing.
        if has_te && version == Version::HTTP_10 {
            return Err(Error::Invalid("Transfer-Encoding in an HTTP/1.0 response"));
        }
        let close = saw_close || (version == Version::HTTP_10 && !saw_keepalive);
        let framing = if *method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::Length(0)
        } else if has_te {
            // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, which goes; a
            // final coding other than chunked means the body runs to the close.
            map.remove(CONTENT_LENGTH);
            if chunked {
                Framing::Chunked(Chunk::Size)
            } else {
                Framing::Close
            }
        } else if let Some(n) = length {
            Framing::Length(n)
        } else {
            Framing::Close
        };
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = status;
        parts.version = version;
        parts.headers = map;
        if let Some(reason) = reason {
            parts.extensions.insert(reason);
        }
        let keepalive = !close && !matches!(framing, Framing::Close);
        return Ok(Some((parts, Decoder { framing, keepalive }, None)));
    }
}

/// A response head's header lines as the node wrote them, hop-by-hop lines left out:
/// what a client of the gateway's own HTTP/1.1 loop gets when nothing (no plugin, no
/// access log) reads or changes the response's headers. Building a header map and
/// encoding it again costs more than the rest of the response's handling (issue 16).
#[derive(Debug, Clone)]
pub struct Verbatim {
    head: Bytes,
    /// Runs of whole lines (each ending in CRLF) to pass on, in order.
    runs: [(u16, u16); MAX_RUNS],
    count: u8,
    /// The node sent a `Date`.
    pub has_date: bool,
    close: bool,
}

/// How many separate runs of lines a verbatim head may be cut into: hop-by-hop lines are
/// few (usually one `Connection`); a head cut into more goes through the map.
const MAX_RUNS: usize = 4;

impl Verbatim {
    /// The lines to pass on, in runs.
    pub fn runs(&self) -> impl Iterator<Item = &[u8]> {
        self.runs[..usize::from(self.count)]
            .iter()
            .map(|&(s, e)| &self.head[usize::from(s)..usize::from(e)])
    }

    /// The value of the first line named `name` (any case), for the access log.
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.runs()
            .flat_map(|run| run.split(|&b| b == b'\n'))
            .filter_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                line[..colon]
                    .eq_ignore_ascii_case(name)
                    .then(|| line[colon + 1..].trim_ascii())
            })
            .next()
    }

    /// The head's lines to pass on and its body's framing, when the head is plain: a
    /// `Content-Length` without `Transfer-Encoding`, or chunked without a length; no
    /// header `Connection` names for removal; every line `name: value` ending in CRLF.
    /// `None`: the map's path judges it. An invalid length is an error, as there.
    fn of(head: &Bytes, spans: &[Span]) -> Result<Option<(Verbatim, Framing)>, Error> {
        let mut v = Verbatim {
            head: head.clone(),
            runs: [(0, 0); MAX_RUNS],
            count: 0,
            has_date: false,
            close: false,
        };
        let (mut length, mut chunked, mut has_te) = (None, false, false);
        for &(ns, ne, vs, ve) in spans {
            let name = &head[usize::from(ns)..usize::from(ne)];
            let value = &head[usize::from(vs)..usize::from(ve)];
            let mut keep = true;
            match name.len() {
                4 if name.eq_ignore_ascii_case(b"date") => v.has_date = true,
                14 if name.eq_ignore_ascii_case(b"content-length") => {
                    let n = parse_length(value)?;
                    if length.is_some_and(|l| l != n) {
                        return Err(Error::Invalid("differing Content-Length values"));
                    }
                    // Passed on only as one line of plain digits: the map's path writes
                    // one line, and its own for an empty body ("0, 0", "00", a repeat).
                    let plain = crate::headers::decimal(n, &mut [0; 20]) == value;
                    if length.is_some() || !plain {
                        return Ok(None);
                    }
                    length = Some(n);
                }
                17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                    has_te = true;
                    chunked = last_token(value).eq_ignore_ascii_case(b"chunked");
                    keep = false;
                }
                10 if name.eq_ignore_ascii_case(b"connection") => {
                    for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                        if token.eq_ignore_ascii_case(b"close") {
                            v.close = true;
                        } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                            // It names a header to remove: the map's path does that.
                            return Ok(None);
                        }
                    }
                    keep = false;
                }
                _ => keep = !crate::headers::is_hop_by_hop_name(name),
            }
            if !keep {
                continue;
            }
            // A line ending otherwise (a bare LF, or space after the value) is rewritten.
            if !head[usize::from(ve)..].starts_with(b"\r\n") {
                return Ok(None);
            }
            let end = ve + 2;
            match v.runs[..usize::from(v.count)].last_mut() {
                Some(run) if run.1 == ns => run.1 = end,
                _ if usize::from(v.count) == MAX_RUNS => return Ok(None),
                _ => {
                    v.runs[usize::from(v.count)] = (ns, end);
                    v.count += 1;
                }
            }
        }
        let framing = match (has_te, chunked, length) {
            (false, _, Some(n)) => Framing::Length(n),
            (true, true, None) => Framing::Chunked(Chunk::Size),
            // To the close, or a length beside a coding: the map's path.
            _ => return Ok(None),
        };
        Ok(Some((v, framing)))
    }
}

fn parse_length(v: &[u8]) -> Result<u64, Error> {
    // A list of identical values ("42, 42") is allowed by RFC 9110 §8.6.
    let mut found: Option<u64> = None;
    for part in v.split(|b| *b == b',') {
        let part = part.trim_ascii();
        let n = parse_decimal(part).ok_or(Error::Invalid("Content-Length"))?;
        if found.is_some_and(|f| f != n) {
            return Err(Error::Invalid("differing Content-Length values"));
        }
        found = Some(n);
    }
    found.ok_or(Error::Invalid("Content-Length"))
}

/// A length as HTTP writes it: digits only (no sign, no space), within `u64`.
pub fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

fn last_token(v: &[u8]) -> &[u8] {
    v.rsplit(|b| *b == b',').next().unwrap_or(v).trim_ascii()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// Until the node closes the connection.
    Close,
    /// The body has ended.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    /// This many bytes of the current chunk are left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty line, none ending in the
    /// first this many bytes.
    Trailers(usize),
}

/// Reads a response body off the connection as it is polled.
#[derive(Debug)]
pub struct Decoder {
    framing: Framing,
    keepalive: bool,
}

impl Decoder {
    pub fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    pub fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }

    /// The node answered before it had the whole request body: whatever it makes of the
    /// rest, the connection carries nothing more.
    pub fn forbid_reuse(&mut self) {
        self.keepalive = false;
    }

    /// The body has ended and the connection may carry another request.
    pub fn reusable(&self) -> bool {
        self.keepalive && self.is_end_stream()
    }

    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
        conn: &mut Connection,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        loop {
            if let Some(step) = self.step(&mut conn.buf)? {
                return Poll::Ready(step.map(Ok));
            }
            let want = match self.framing {
                Framing::Length(n) | Framing::Chunked(Chunk::Data(n)) => {
                    (n as usize).clamp(1, 4 * READ_CHUNK)
                }
                _ => READ_CHUNK,
            };
            let n = ready!(fill(&mut conn.io, &mut conn.buf, cx, want)).map_err(Error::Io)?;
            if n == 0 {
                if self.framing == Framing::Close {
                    self.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Err(Error::Truncated)));
            }
        }
    }

    /// Decodes what `buf` holds. `Some(None)`: the body has ended; `Some(Some(frame))`: a
    /// frame; `None`: more bytes are needed. (Public for the `upstream_response` fuzz
    /// target; the proxy reads through `poll_frame`.)
    #[allow(clippy::type_complexity)]
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Option<Option<Frame<Bytes>>>, Error> {
        loop {
            match self.framing {
                Framing::Done | Framing::Length(0) => {
                    self.framing = Framing::Done;
                    return Ok(Some(None));
                }
                Framing::Length(n) | Framing::Chunked(Chunk::Data(n)) if !buf.is_empty() => {
                    let take = n.min(buf.len() as u64);
                    let data = buf.split_to(take as usize).freeze();
                    self.framing = match self.framing {
                        Framing::Length(_) => Framing::Length(n - take),
                        _ if n == take => Framing::Chunked(Chunk::DataEnd),
                        _ => Framing::Chunked(Chunk::Data(n - take)),
                    };
                    return Ok(Some(Some(Frame::data(data))));
                }
                Framing::Close if !buf.is_empty() => {
                    return Ok(Some(Some(Frame::data(buf.split().freeze()))));
                }
                Framing::Chunked(Chunk::Size) => {
                    let end = memchr::memchr(b'\n', buf);
                    if end.unwrap_or(buf.len()) > MAX_CHUNK_LINE {
                        return Err(Error::Invalid("chunk size line too long"));
                    }
                    let Some(end) = end else {
                        return Ok(None);
                    };
                    let size = chunk_size(&buf[..end + 1])?;
                    buf.advance(end + 1);
                    self.framing = Framing::Chunked(if size == 0 {
                        Chunk::Trailers(0)
                    } else {
                        Chunk::Data(size)
                    });
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Error::Invalid("chunk data longer than its size"));
                    }
                    buf.advance(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Trailers(scanned)) => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        self.framing = Framing::Done;
                        return Ok(Some(None));
                    }
                    let from = scanned.saturating_sub(3);
                    let Some(end) = memchr::memmem::find(&buf[from..], b"\r\n\r\n") else {
                        if buf.len() > MAX_HEAD {
                            return Err(Error::Invalid("trailer section too large"));
                        }
                        self.framing = Framing::Chunked(Chunk::Trailers(buf.len()));
                        return Ok(None);
                    };
                    let end = from + end;
                    let trailers = parse_trailers(&buf[..end + 4])?;
                    buf.advance(end + 4);
                    self.framing = Framing::Done;
                    return Ok(Some(Some(Frame::trailers(trailers))));
                }
                // Data framings with nothing buffered.
                _ => return Ok(None),
            }
        }
    }
}

/// `1a;ext=1\r\n` → 26. At most 16 hex digits; extensions are ignored.
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let line = line
        .strip_suffix(b"\r\n")
        .ok_or(Error::Invalid("chunk size line without CRLF"))?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(Error::Invalid("chunk size"));
    }
    // Only blanks before the extensions; no bare CR anywhere in the line.
    let rest = &line[digits..];
    let blanks = rest
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count();
    if (blanks < rest.len() && rest[blanks] != b';') || rest.contains(&b'\r') {
        return Err(Error::Invalid("chunk size"));
    }
    Ok(line[..digits].iter().fold(0u64, |n, d| {
        n << 4 | u64::from((*d as char).to_digit(16).unwrap_or(0))
    }))
}

fn parse_trailers(section: &[u8]) -> Result<HeaderMap, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let parsed = match httparse::parse_headers(section, &mut headers) {
        Ok(httparse::Status::Complete((_, h))) => h,
        _ => return Err(Error::Invalid("malformed trailers")),
    };
    let mut map = HeaderMap::with_capacity(parsed.len());
    for h in parsed {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| Error::Invalid("trailer name"))?;
        let value =
            HeaderValue::from_bytes(h.value).map_err(|_| Error::Invalid("trailer value"))?;
        map.append(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pooled_connection_is_closed_once_its_node_closes_or_sends() {
        use tokio::io::AsyncWriteExt;
        // (what the node did while the connection sat in the pool, closed?)
        for (did, want) in [("nothing", false), ("sent", true), ("closed", true)] {
            for for_use in [false, true] {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let io = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
                let (mut node, _) = l.accept().await.unwrap();
                match did {
                    "sent" => node.write_all(b"HTTP/1.1 408 \r\n\r\n").await.unwrap(),
                    "closed" => drop(node),
                    _ => {}
                }
                // The event loop sees the socket's readiness, as it has for a pooled one.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let c = Connection::new(io);
                let got = if for_use {
                    c.is_closed_for_use()
                } else {
                    c.is_closed()
                };
                assert_eq!(got, want, "node {did}, for use {for_use}");
            }
        }
    }

    fn head(raw: &str, method: Method) -> Result<Option<(http::response::Parts, Decoder)>, Error> {
        parse_head(&mut BytesMut::from(raw.as_bytes()), &method, false)
            .map(|h| h.map(|(p, d, _)| (p, d)))
    }

    #[test]
    fn response_heads_table() {
        // (response, method, status, framing, keepalive, headers kept)
        type Case = (
            &'static str,
            Method,
            u16,
            Framing,
            bool,
            &'static [&'static str],
        );
        let table: &[Case] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\n\r\nok",
                Method::GET, 200, Framing::Length(2), true, &["content-length", "x-a"],
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
                Method::GET, 200, Framing::Chunked(Chunk::Size), true, &[],
            ),
            // gzip after chunked: the body runs to the close.
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                Method::GET, 200, Framing::Close, false, &[],
            ),
            ("HTTP/1.1 200 OK\r\nX-B: 2\r\n\r\n", Method::GET, 200, Framing::Close, false, &["x-b"]),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\n",
                Method::GET, 200, Framing::Length(10), false, &["content-length"],
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
                Method::GET, 200, Framing::Length(1), false, &["content-length"],
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n",
                Method::GET, 200, Framing::Length(1), true, &["content-length"],
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n",
                Method::HEAD, 200, Framing::Length(0), true, &["content-length"],
            ),
            ("HTTP/1.1 204 No Content\r\n\r\n", Method::GET, 204, Framing::Length(0), true, &[]),
            ("HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\n\r\n", Method::GET, 304, Framing::Length(0), true, &["etag"]),
            // Informational heads are skipped.
            (
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
                Method::GET, 201, Framing::Length(0), true, &["content-length"],
            ),
            // Headers that Connection names are hop-by-hop too.
            (
                "HTTP/1.1 200 OK\r\nConnection: x-secret, keep-alive\r\nX-Secret: 1\r\nContent-Length: 0\r\n\r\n",
                Method::GET, 200, Framing::Length(0), true, &["content-length"],
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n",
                Method::GET, 200, Framing::Length(3), true, &["content-length"],
            ),
            // A later keep-alive does not undo a close.
            (
                "HTTP/1.0 200 OK\r\nConnection: close, keep-alive\r\nContent-Length: 0\r\n\r\n",
                Method::GET, 200, Framing::Length(0), false, &["content-length"],
            ),
            (
                "HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
                Method::GET, 200, Framing::Length(0), false, &["content-length"],
            ),
            // Bare LF line ends.
            ("HTTP/1.1 200 OK\nContent-Length: 1\n\n", Method::GET, 200, Framing::Length(1), true, &["content-length"]),
        ];
        for (raw, method, status, framing, keepalive, kept) in table {
            let (parts, decoder) = head(raw, method.clone()).unwrap().unwrap();
            assert_eq!(parts.status.as_u16(), *status, "{raw}");
            assert_eq!(decoder.framing, *framing, "{raw}");
            assert_eq!(decoder.keepalive, *keepalive, "{raw}");
            let mut names: Vec<_> = parts.headers.keys().map(|k| k.as_str()).collect();
            names.sort();
            assert_eq!(&names, kept, "{raw}");
            // Asked for verbatim lines, a head means the same: the same status, framing,
            // connection reuse and headers, in lines or in the map.
            let mut buf = BytesMut::from(raw.as_bytes());
            let (vparts, vdecoder, lines) = parse_head(&mut buf, method, true).unwrap().unwrap();
            assert_eq!(vparts.status, parts.status, "{raw}");
            assert_eq!(vdecoder.framing, decoder.framing, "{raw}");
            assert_eq!(vdecoder.keepalive, decoder.keepalive, "{raw}");
            let fields = match lines {
                Some(v) => {
                    assert!(vparts.headers.is_empty(), "{raw}");
                    fields_of_lines(&v.runs().collect::<Vec<_>>().concat())
                }
                None => fields_of_map(&vparts.headers),
            };
            assert_eq!(fields, fields_of_map(&parts.headers), "{raw}");
        }
    }

    fn fields_of_map(map: &HeaderMap) -> Vec<(String, String)> {
        map.iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect()
    }

    fn fields_of_lines(lines: &[u8]) -> Vec<(String, String)> {
        let text = std::str::from_utf8(lines).unwrap();
        assert!(text.is_empty() || text.ends_with("\r\n"), "{text:?}");
        text.split_terminator("\r\n")
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.to_ascii_lowercase(), v.trim().to_string())
            })
            .collect()
    }

    /// Which heads come verbatim, and as which lines: plain successes with a length or
    /// chunked; everything else through the map.
    #[test]
    fn verbatim_heads_table() {
        let table: &[(&str, Method, Option<&str>)] = &[
            (
                "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: x\r\nContent-Length: 2\r\nConnection: keep-alive\r\nX-A: 1\r\n\r\nok",
                Method::GET,
                Some("Server: nginx\r\nDate: x\r\nContent-Length: 2\r\nX-A: 1\r\n"),
            ),
            (
                "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nKeep-Alive: timeout=5\r\nTrailer: x\r\nx-b:2\r\n\r\n",
                Method::GET,
                Some("x-b:2\r\n"),
            ),
            ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", Method::GET, Some("Content-Length: 0\r\n")),
            // A length written otherwise than once in plain digits: the map's path.
            ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n", Method::GET, None),
            ("HTTP/1.1 200 OK\r\nContent-Length: 00\r\n\r\n", Method::GET, None),
            ("HTTP/1.1 200 OK\r\nContent-Length: 0, 0\r\n\r\n", Method::GET, None),
            ("HTTP/1.1 200 OK\r\nContent-Length: 012\r\n\r\n", Method::GET, None),
            // Not plain: to the close; a length beside a coding; a named header; HEAD;
            // 204/304; HTTP/1.0; an unusual reason; a bare LF; trailing space; too cut up.
            ("HTTP/1.1 200 OK\r\nX: 1\r\n\r\n", Method::GET, None),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n", Method::GET, None),
            ("HTTP/1.1 200 OK\r\nConnection: x-secret\r\nContent-Length: 0\r\n\r\n", Method::GET, None),
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Method::HEAD, None),
            ("HTTP/1.1 204 No Content\r\n\r\n", Method::GET, None),
            ("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", Method::GET, None),
            ("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", Method::GET, None),
            ("HTTP/1.1 200 Fine\r\nContent-Length: 1\r\n\r\n", Method::GET, None),
            ("HTTP/1.1 200 OK\nContent-Length: 1\n\n", Method::GET, None),
            ("HTTP/1.1 200 OK\r\nContent-Length: 1 \r\n\r\n", Method::GET, None),
            (
                "HTTP/1.1 200 OK\r\nA: 1\r\nTE: x\r\nB: 1\r\nTE: x\r\nC: 1\r\nTE: x\r\nD: 1\r\nTE: x\r\nE: 1\r\nContent-Length: 1\r\n\r\n",
                Method::GET,
                None,
            ),
        ];
        for (raw, method, want) in table {
            let mut buf = BytesMut::from(raw.as_bytes());
            let (_, _, lines) = parse_head(&mut buf, method, true).unwrap().unwrap();
            let got =
                lines.map(|v| String::from_utf8(v.runs().collect::<Vec<_>>().concat()).unwrap());
            assert_eq!(got.as_deref(), *want, "{raw:?}");
        }
        let mut buf = BytesMut::from(table[0].0.as_bytes());
        let (_, _, lines) = parse_head(&mut buf, &Method::GET, true).unwrap().unwrap();
        let lines = lines.unwrap();
        assert_eq!(lines.header(b"x-a"), Some(&b"1"[..]));
        assert_eq!(lines.header(b"SERVER"), Some(&b"nginx"[..]));
        assert_eq!(lines.header(b"connection"), None);
        assert_eq!(lines.header(b"x"), None);
        // What the map's path refuses, this one refuses too.
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(raw.as_bytes());
            assert!(parse_head(&mut buf, &Method::GET, true).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn bad_response_heads_table() {
        let table = [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
            "NOTHTTP 200\r\n\r\n",
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
        ];
        for raw in table {
            assert!(head(raw, Method::GET).is_err(), "{raw:?} was accepted");
            let mut buf = BytesMut::from(raw.as_bytes());
            assert!(
                parse_head(&mut buf, &Method::GET, true).is_err(),
                "{raw:?} was accepted verbatim"
            );
        }
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "X: 1\r\n".repeat(101));
        assert!(matches!(head(&many, Method::GET), Err(Error::Invalid(_))));
    }

    #[test]
    fn an_unusual_reason_phrase_is_kept() {
        let (parts, _) = head("HTTP/1.1 520 Origin Error\r\n\r\n", Method::GET)
            .unwrap()
            .unwrap();
        let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>().unwrap();
        assert_eq!(reason.as_bytes(), b"Origin Error");
        let (parts, _) = head("HTTP/1.1 404 Not Found\r\n\r\n", Method::GET)
            .unwrap()
            .unwrap();
        assert!(parts.extensions.get::<hyper::ext::ReasonPhrase>().is_none());
    }

    #[test]
    fn the_end_of_a_head_is_found_past_the_scanned_part() {
        let table: &[(&[u8], usize, bool)] = &[
            (b"HTTP/1.1 200 OK\r\n\r\n", 0, true),
            (b"HTTP/1.1 200 OK\r\n\r\n", 17, true),
            (b"HTTP/1.1 200 OK\r\n\r\n", 18, true),
            (b"HTTP/1.1 200 OK\r\n\r", 0, false),
            (b"HTTP/1.1 200 OK\n\n", 16, true),
            (b"HTTP/1.1 200 OK\r\nA: b\r\n", 0, false),
            (b"", 0, false),
        ];
        for (buf, from, expected) in table {
            assert_eq!(
                head_may_end(buf, *from),
                *expected,
                "{:?} from {from}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn a_partial_head_waits_and_the_body_stays_buffered() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..raw.len() - 5 {
            assert!(head(std::str::from_utf8(&raw[..cut]).unwrap(), Method::GET)
                .unwrap()
                .is_none());
        }
        let mut buf = BytesMut::from(&raw[..]);
        let (_, mut d, _) = parse_head(&mut buf, &Method::GET, false).unwrap().unwrap();
        assert_eq!(&buf[..], b"hello");
        let frame = d.step(&mut buf).unwrap().unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "hello");
        assert!(d.reusable());
    }

    /// Feeds `input` to a decoder one byte at a time, then whole; both must agree.
    fn decode(framing: Framing, input: &[u8]) -> Result<(Vec<u8>, Option<HeaderMap>, bool), Error> {
        let run = |pieces: Vec<&[u8]>| -> Result<(Vec<u8>, Option<HeaderMap>, bool), Error> {
            let mut d = Decoder {
                framing,
                keepalive: true,
            };
            let (mut body, mut trailers, mut buf) = (Vec::new(), None, BytesMut::new());
            for piece in pieces {
                buf.extend_from_slice(piece);
                while let Some(step) = d.step(&mut buf)? {
                    match step {
                        None => return Ok((body, trailers, buf.is_empty())),
                        Some(f) => match f.into_data() {
                            Ok(data) => body.extend_from_slice(&data),
                            Err(f) => trailers = f.into_trailers().ok(),
                        },
                    }
                }
            }
            Err(Error::Truncated)
        };
        let whole = run(vec![input]);
        let bytewise = run(input.chunks(1).collect());
        match (&whole, &bytewise) {
            (Ok(a), Ok(b)) => assert_eq!((&a.0, &a.1), (&b.0, &b.1)),
            (Err(_), Err(_)) => {}
            _ => panic!("whole {whole:?} and byte-wise {bytewise:?} differ"),
        }
        whole
    }

    #[test]
    fn chunked_bodies_table() {
        let chunked = Framing::Chunked(Chunk::Size);
        let (body, trailers, clean) =
            decode(chunked, b"5\r\nhello\r\n6;ext=\"a\"\r\n world\r\n0\r\n\r\n").unwrap();
        assert_eq!(body, b"hello world");
        assert!(trailers.is_none() && clean);
        let (body, trailers, _) = decode(
            chunked,
            b"A\r\n0123456789\r\n0\r\nGrpc-Status: 0\r\nX-T: a\r\n\r\n",
        )
        .unwrap();
        assert_eq!(body, b"0123456789");
        let trailers = trailers.unwrap();
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["x-t"], "a");
        // Bytes after the end stay in the buffer: the connection is not reused then.
        let (_, _, clean) = decode(chunked, b"0\r\n\r\nHTTP/1.1 200").unwrap();
        assert!(!clean);
        for bad in [
            &b"5\r\nhello!\r\n0\r\n\r\n"[..],
            b"x\r\n",
            b"5 x\r\nhello\r\n",
            b"11111111111111111\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"0\r\nBad Trailer\r\n\r\n",
            b"5\r\r\nhello\r\n0\r\n\r\n",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
        ] {
            assert!(
                matches!(decode(chunked, bad), Err(Error::Invalid(_))),
                "{:?} was accepted",
                String::from_utf8_lossy(bad)
            );
        }
        let long_ext = [b"1;".as_slice(), &[b'a'; MAX_CHUNK_LINE]].concat();
        assert!(matches!(decode(chunked, &long_ext), Err(Error::Invalid(_))));
        // Also when its line end is already buffered.
        let long_ext = [long_ext.as_slice(), b"\r\nx\r\n0\r\n\r\n"].concat();
        assert!(matches!(decode(chunked, &long_ext), Err(Error::Invalid(_))));
        let (body, _, _) = decode(chunked, b"1 \t;a=b\r\nx\r\n0\r\n\r\n").unwrap();
        assert_eq!(body, b"x");
    }

    #[test]
    fn length_bodies_stop_at_their_length() {
        let (body, _, clean) = decode(Framing::Length(3), b"abcdef").unwrap();
        assert_eq!(body, b"abc");
        assert!(!clean);
        assert!(matches!(
            decode(Framing::Length(9), b"abc"),
            Err(Error::Truncated)
        ));
    }

    #[test]
    fn request_heads_are_written_in_origin_form() {
        let req = Request::builder()
            .method(Method::DELETE)
            .uri("/a/b?c=1")
            .header("host", "up.example")
            .header("x-multi", "1")
            .header("x-multi", "2")
            .body(())
            .unwrap();
        let mut out = Vec::new();
        encode_head(&req, None, None, false, &mut out);
        assert_eq!(
            out,
            b"DELETE /a/b?c=1 HTTP/1.1\r\nhost: up.example\r\nx-multi: 1\r\nx-multi: 2\r\n\r\n"
        );
        let mut out = Vec::new();
        encode_head(&Request::new(()), None, None, true, &mut out);
        assert_eq!(out, b"GET / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n");
    }
}
