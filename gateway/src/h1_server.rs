//! The gateway's own HTTP/1.1 server loop for the common request: a plain-TCP HTTP/1.1
//! request without a body, without `Expect`, `Upgrade` or `Transfer-Encoding`, whose head
//! `httparse` reads whole within [`MAX_HEAD`]. hyper's server keeps an 8 KiB buffer and a
//! boxed request future for each connection's whole life; this loop holds no buffer and
//! no room for a request while a connection is idle, parses straight into the request
//! the proxy takes, and writes a node's head as the node wrote it when nothing read it
//! ([`Verbatim`]; issue 16; docs/architecture.md).
//!
//! Everything else is hyper's: the first request this loop does not take, with the bytes
//! already read, goes to hyper ([`Own::Unusual`]), which serves the connection from then
//! on. So the loop only ever accepts a subset of what hyper accepts (what it cannot parse
//! or does not take, hyper answers or refuses as it always did), and what it writes
//! follows hyper's rules for a response head (`hyper::proto::h1::role::Server::encode`).
use crate::client_body::ClientBody;
use crate::client_head::ClientHead;
use crate::h1_client::{Verbatim, MAX_HEADERS};
use crate::proxy::{self, ConnInfo, RespBody};
use crate::send_timeout::SendTimeout;
use crate::Shared;
use bytes::{Buf, Bytes, BytesMut};
use http::header;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use std::future::poll_fn;
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// The largest head this loop reads; a larger one is hyper's (which allows 64 KiB and
/// answers 431 above it). nginx reads heads of up to 1 KiB into its first buffer.
pub const MAX_HEAD: usize = 8 * 1024;
const READ_CHUNK: usize = 2048;
/// The first read of a request: most heads fit (nginx's first buffer is 1 KiB too), and
/// an allocation this small is served from the allocator's per-thread cache.
const FIRST_READ: usize = 1024;

/// How the loop left the connection.
pub enum Own {
    /// Closed, or to be closed: by either side, after `Connection: close`, or on an error.
    Done,
    /// A request this loop does not take: the connection, with what was read of it.
    Unusual(Rewind<SendTimeout<TcpStream>>),
    /// Idle with nothing read, as [`IdlePoint::leave`] asked: the connection, to be parked.
    Idle(SendTimeout<TcpStream>),
}

/// Where the loop waits for its client's next request with nothing read: the one point at
/// which the connection can leave its task with nothing lost (`server` parks it there).
#[derive(Default)]
pub struct IdlePoint {
    waiting: AtomicBool,
    leave: AtomicBool,
}

impl IdlePoint {
    /// Whether the loop waits there now.
    pub fn waiting(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn set_waiting(&self, waiting: bool) {
        self.waiting.store(waiting, Ordering::Relaxed);
    }

    /// The loop's next poll, while it waits there, ends it with [`Own::Idle`].
    pub fn leave(&self) {
        self.leave.store(true, Ordering::Relaxed);
    }
}

/// What one connection's loop needs of its server.
pub struct Conn<'a> {
    pub shared: &'a Arc<Shared>,
    pub info: &'a ConnInfo,
    /// Once set, every response says `Connection: close` and the connection ends after it.
    pub draining: &'a AtomicBool,
    pub idle: &'a IdlePoint,
}

/// Serves requests on `io` until the connection ends or a request is not this loop's.
/// `begin` is called when a request head is complete; the guard it returns is dropped
/// once the response is written (the idle timer's reference).
// Not an `async fn`: its arguments would be kept twice in the connection's future (once
// as arguments, once moved into locals), which every idle connection carries.
#[allow(clippy::manual_async_fn)]
pub fn serve<'a, G: 'a>(
    c: Conn<'a>,
    begin: impl Fn() -> G + 'a,
    mut io: SendTimeout<TcpStream>,
) -> impl std::future::Future<Output = Own> + 'a {
    async move {
        let mut buf = BytesMut::new();
        loop {
            // Idle between requests: the previous request's buffer is let go.
            if buf.is_empty() {
                buf = BytesMut::new();
            }
            // How far the buffer is known to hold no end of head: a client that sends its
            // head a byte at a time costs one scan of each byte, not one parse per read.
            // `None` until a parse found the head incomplete: a head that comes whole in
            // one read (nearly all do) is parsed at once, without the scan.
            let mut scanned = None;
            let (req, close, raw) = loop {
                // Empty lines before a request (which the parse skips) are nothing of one:
                // the connection is as idle, and as parkable, as with none.
                if !buf.is_empty() && buf.iter().all(|&b| b == b'\r' || b == b'\n') {
                    buf.clear();
                    scanned = None;
                }
                // Nothing of a request read: the idle point, where the connection waits
                // for its client and can leave its task (`IdlePoint`).
                if buf.is_empty() {
                    c.idle.waiting.store(true, Ordering::Relaxed);
                    // Polled, not `readable()`: that future queues a waiter under a lock.
                    let ready = poll_fn(|cx| {
                        if c.idle.leave.load(Ordering::Relaxed) {
                            return std::task::Poll::Ready(None);
                        }
                        io.get_ref().poll_read_ready(cx).map(Some)
                    })
                    .await;
                    c.idle.waiting.store(false, Ordering::Relaxed);
                    match ready {
                        Some(Ok(())) => {}
                        Some(Err(_)) => return Own::Done,
                        None => {
                            c.idle.leave.store(false, Ordering::Relaxed);
                            return Own::Idle(io);
                        }
                    }
                }
                // Matched in place: a parsed request kept in a local would be room in
                // the connection's future across the read below.
                let may_end = match scanned {
                    None => !buf.is_empty(),
                    Some(from) => crate::h1_client::head_may_end(&buf, from),
                };
                if may_end {
                    match parse(&mut buf, true) {
                        Parsed::Request(req, close, raw) => break (req, close, raw),
                        Parsed::Unusual => return Own::Unusual(Rewind::new(io, buf.freeze())),
                        Parsed::Partial => {}
                    }
                }
                if !buf.is_empty() {
                    scanned = Some(buf.len());
                }
                if buf.len() >= MAX_HEAD {
                    return Own::Unusual(Rewind::new(io, buf.freeze()));
                }
                if buf.capacity() == 0 {
                    buf = BytesMut::with_capacity(FIRST_READ);
                } else {
                    buf.reserve(READ_CHUNK);
                }
                // tokio still takes the socket for readable after a read that emptied it:
                // a read that finds nothing goes back to the idle point, so that an idle
                // connection always waits there, not here.
                let read = poll_fn(|cx| {
                    let r = tokio_util::io::poll_read_buf(Pin::new(&mut io), cx, &mut buf);
                    if r.is_pending() && buf.is_empty() {
                        return std::task::Poll::Ready(None);
                    }
                    r.map(Some)
                });
                match read.await {
                    None => {}
                    // The client went away (or never finished a head, which hyper would
                    // not answer either).
                    Some(Ok(0) | Err(_)) => return Own::Done,
                    Some(Ok(_)) => {}
                }
            };
            let end = begin();
            // Boxed, write and all: an idle connection's task carries no room for a request.
            let kept = Box::pin(exchange(&c, req, raw, close, &mut io, buf.is_empty())).await;
            drop(end);
            match kept {
                Exchanged::Kept => {}
                Exchanged::Ended => {
                    let _ = io.shutdown().await;
                    return Own::Done;
                }
                Exchanged::ClientGone => return Own::Done,
            }
        }
    }
}

/// How one request's exchange left the connection.
enum Exchanged {
    Kept,
    /// Written and to be closed.
    Ended,
    /// The client closed before its answer.
    ClientGone,
}

/// Answers one request: the proxy's response, written as hyper would.
// Not an `async fn` (its arguments would be kept twice), and the request's future awaited
// at one point only: a local that lives across two awaits is never overlapped with the
// writing that follows, and this future is copied whole into its box for each request.
#[allow(clippy::manual_async_fn)]
fn exchange<'a>(
    c: &'a Conn<'_>,
    req: Request<ClientBody>,
    raw: Option<ClientHead>,
    close: bool,
    io: &'a mut SendTimeout<TcpStream>,
    nothing_buffered: bool,
) -> impl std::future::Future<Output = Exchanged> + 'a {
    async move {
        let head_request = req.method() == Method::HEAD;
        let verbatim = OnceLock::new();
        let resp = {
            // Pinned where it is made: moving a request's future copies all of it.
            let mut handled = std::pin::pin!(proxy::handle(
                c.shared.clone(),
                *c.info,
                req,
                raw,
                Some(&verbatim)
            ));
            // A client that closes before its answer: the request is dropped, as hyper
            // does (the proxy counts it as 499). Not while pipelined requests are
            // buffered: those are answered first, as hyper does, however the client's
            // side ends.
            // Biased: the answer first, so that `closed` is looked at once a wake, not on
            // a coin's throw (a peek of the socket each time), and an answer that is ready
            // when the client has also closed is written, not dropped.
            tokio::select! {
                biased;
                resp = &mut handled => resp,
                () = closed(io.get_ref()), if nothing_buffered => return Exchanged::ClientGone,
            }
        };
        let close = close || c.draining.load(Ordering::Relaxed);
        if write_response(io, resp, verbatim.into_inner(), head_request, close).await {
            Exchanged::Kept
        } else {
            Exchanged::Ended
        }
    }
}

/// Resolves when the client has closed its side (or the socket failed); stays pending
/// once it has sent more data, which is the next request's to read.
async fn closed(stream: &TcpStream) {
    let mut probe = [0u8; 1];
    let mut probe = ReadBuf::new(&mut probe);
    // Polled, not `peek()`: that future queues a waiter under a lock. The connection's
    // last read was short, so this costs no system call until the client sends or closes.
    match poll_fn(|cx| stream.poll_peek(cx, &mut probe)).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

// Moved once per request, where a box would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Partial,
    /// A request, whether it asked to close the connection after its response, and its
    /// head as bytes when its header map is left empty until asked for.
    Request(Request<ClientBody>, bool, Option<ClientHead>),
    Unusual,
}

/// A request head at the start of `buf`, taken out of it when complete and this loop's;
/// with `keep_raw`, kept as bytes without a header map when it is plain ([`ClientHead`]).
fn parse(buf: &mut BytesMut, keep_raw: bool) -> Parsed {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut r = httparse::Request::new(&mut []);
    // hyper's own parser settings are httparse's defaults.
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut r,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Unusual,
    };
    // Offsets into the head are kept in 16 bits (it is never near this long: reads stop
    // at `MAX_HEAD`).
    if r.version != Some(1) || len > usize::from(u16::MAX) {
        return Parsed::Unusual;
    }
    let Some(Ok(method)) = r.method.map(|m| Method::from_bytes(m.as_bytes())) else {
        return Parsed::Unusual;
    };
    if method == Method::CONNECT {
        return Parsed::Unusual;
    }
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        (start, start + s.len())
    };
    let Some(path) = r.path.map(|p| span(p.as_bytes())) else {
        return Parsed::Unusual;
    };
    let mut close = false;
    let mut lengths = 0;
    for h in r.headers.iter() {
        let name = h.name.as_bytes();
        match name.len() {
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => return Parsed::Unusual,
            6 if name.eq_ignore_ascii_case(b"expect") => return Parsed::Unusual,
            7 if name.eq_ignore_ascii_case(b"upgrade") => return Parsed::Unusual,
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                // A body, or a length hyper may refuse: hyper's.
                if h.value != b"0" {
                    return Parsed::Unusual;
                }
                lengths += 1;
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                close |= has_token(h.value, b"close");
            }
            _ => {}
        }
    }
    // At most one `Content-Length: 0`: two are hyper's to judge.
    if lengths > 1 {
        return Parsed::Unusual;
    }
    let count = r.headers.len();
    crate::h1_client::spans_of!(spans, buf, r.headers);
    let head = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path.0..path.1)) else {
        // Put back for hyper, which answers 400.
        return put_back(buf, &head);
    };
    let mut req = Request::new(ClientBody::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    // Kept as bytes when it is plain and its target is in origin form (an authority in
    // the target replaces `Host`): the map is built only if something asks for it.
    if keep_raw && req.uri().authority().is_none() {
        if let Some(raw) = ClientHead::of(&head, &spans[..count]) {
            return Parsed::Request(req, close, Some(raw));
        }
    }
    let fields = spans[..count].iter().map(|&(ns, ne, vs, ve)| {
        let at = usize::from;
        (at(ns), at(ne), at(vs), at(ve))
    });
    // A field `http` refuses (httparse took none): hyper is no worse a judge.
    let Some(map) = crate::client_head::header_map(&head, fields, count) else {
        return put_back(buf, &head);
    };
    *req.headers_mut() = map;
    Parsed::Request(req, close, None)
}

/// Puts a head taken out of `buf` back in front of what followed it, for hyper to read.
fn put_back(buf: &mut BytesMut, head: &[u8]) -> Parsed {
    let mut back = BytesMut::from(head);
    back.extend_from_slice(buf);
    *buf = back;
    Parsed::Unusual
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// How the body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Exactly this many bytes (0: none at all).
    Length(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 node's answer of unknown length).
    Close,
}

/// Writes `resp` as hyper's server would for an HTTP/1.1 request; returns whether the
/// connection may serve another request.
async fn write_response<W: AsyncWrite + Unpin>(
    io: &mut W,
    resp: Response<RespBody>,
    verbatim: Option<Verbatim>,
    head_request: bool,
    close: bool,
) -> bool {
    let (parts, mut body) = resp.into_parts();
    let mut out = Vec::with_capacity(128 + parts.headers.len() * 32);
    let (framing, keep) = match &verbatim {
        Some(v) => encode_verbatim(&parts, v, &body, close, &mut out),
        None => encode_head(&parts, &body, head_request, close, &mut out),
    };
    let mut left = match framing {
        Framing::Length(n) => n,
        Framing::Chunked => return write_chunked(io, &out, &mut body).await && keep,
        Framing::Close => {
            write_until_end(io, &out, &mut body).await;
            return false;
        }
    };
    if left == 0 {
        return io.write_all(&out).await.is_ok() && keep;
    }
    // The first frame usually is there already: head and body leave in one write.
    let mut head = Some(out);
    loop {
        let frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let data = match frame {
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
            // The body failed, or ended short of its length: the client must not wait
            // for the rest on a connection that goes on.
            Some(Err(_)) | None => {
                if let Some(h) = head {
                    let _ = io.write_all(&h).await;
                }
                return false;
            }
        };
        let mut data = data;
        if data.len() as u64 > left {
            data.truncate(left as usize);
        }
        left -= data.len() as u64;
        let ok = match head.take() {
            Some(h) => write_buf(io, (&h[..]).chain(&data[..])).await,
            None => io.write_all(&data).await.is_ok(),
        };
        if !ok {
            return false;
        }
        if left == 0 {
            // As hyper: once the length is written, the body is dropped, whatever it
            // would still give.
            return keep;
        }
    }
}

/// The head, then every data frame as it is, until the body ends.
async fn write_until_end<W: AsyncWrite + Unpin>(io: &mut W, head: &[u8], body: &mut RespBody) {
    if io.write_all(head).await.is_err() {
        return;
    }
    while let Some(Ok(frame)) = poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
        if let Ok(data) = frame.into_data() {
            if io.write_all(&data).await.is_err() {
                return;
            }
        }
    }
}

async fn write_chunked<W: AsyncWrite + Unpin>(
    io: &mut W,
    head: &[u8],
    body: &mut RespBody,
) -> bool {
    let mut head = Some(head);
    loop {
        let frame = poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await;
        let data = match frame {
            Some(Ok(f)) => match f.into_data() {
                Ok(d) if !d.is_empty() => d,
                // Trailers are not sent (hyper sends them only for names a `Trailer`
                // header lists, and the proxy strips that header), nor empty chunks.
                _ => continue,
            },
            None => {
                let last: &[u8] = b"0\r\n\r\n";
                return match head.take() {
                    Some(h) => write_buf(io, h.chain(last)).await,
                    None => io.write_all(last).await.is_ok(),
                };
            }
            // No last chunk: the client sees the body cut short.
            Some(Err(_)) => {
                if let Some(h) = head {
                    let _ = io.write_all(h).await;
                }
                return false;
            }
        };
        let size = format!("{:X}\r\n", data.len()).into_bytes();
        let ok = match head.take() {
            Some(h) => write_buf(io, h.chain(&size[..]).chain(&data[..]).chain(CRLF)).await,
            None => write_buf(io, (&size[..]).chain(&data[..]).chain(CRLF)).await,
        };
        if !ok {
            return false;
        }
    }
}

const CRLF: &[u8] = b"\r\n";

/// Writes all of `buf`, in vectored writes where the socket takes them (tokio's
/// `write_all_buf`): a head and its body, or a chunk and its framing, leave together.
async fn write_buf<W: AsyncWrite + Unpin>(io: &mut W, mut buf: impl Buf) -> bool {
    io.write_all_buf(&mut buf).await.is_ok()
}

/// The status line and headers, by hyper's rules (`Server::encode`): the response's
/// `content-length` when its body has a known length or none, else chunked; none of
/// either for HEAD, 204 and 304; `date` when missing. Returns the body's framing and
/// whether the connection may go on.
fn encode_head(
    parts: &http::response::Parts,
    body: &RespBody,
    head_request: bool,
    close: bool,
    out: &mut Vec<u8>,
) -> (Framing, bool) {
    let status = parts.status;
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    // An HTTP/1.0 node's answer keeps its version, as hyper writes it.
    let http10 = parts.version == Version::HTTP_10;
    status_line(status, reason.map(|r| r.as_bytes()), http10, out);
    // 1xx is never the proxy's final answer; 204/304 and HEAD have no body.
    let may_have_body = !(head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED);
    let may_have_length = !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED);
    let body_len = if body.is_end_stream() {
        Some(0)
    } else {
        body.size_hint().exact()
    };
    let mut keep = !close;
    let mut says_close = false;
    let mut framing = None;
    let mut wrote_date = false;
    for (name, value) in &parts.headers {
        match *name {
            header::CONTENT_LENGTH => {
                // The body's own length decides; the header is written as the proxy has
                // it (HEAD keeps the length of what GET would give).
                match body_len {
                    Some(0) if !head_request => continue,
                    // HEAD keeps it, even on a 304, as hyper does.
                    Some(n) if framing.is_none() && (may_have_length || head_request) => {
                        framing = Some(Framing::Length(n));
                    }
                    None if framing.is_none() && may_have_length => {
                        match crate::h1_client::parse_decimal(value.as_bytes()) {
                            Some(n) => framing = Some(Framing::Length(n)),
                            // hyper refuses it too: never written, never trusted.
                            None => continue,
                        }
                    }
                    _ => continue,
                }
            }
            header::TRANSFER_ENCODING => {
                // The proxy never passes one on (it is hop-by-hop); the framing below
                // is this loop's own.
                continue;
            }
            header::CONNECTION if has_token(value.as_bytes(), b"close") => {
                keep = false;
                says_close = true;
            }
            header::DATE => wrote_date = true,
            _ => {}
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // As hyper: a connection that will close says so.
    if !keep && !says_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    let framing = match framing {
        Some(f) => f,
        None => match body_len {
            Some(0) => {
                if may_have_length && !head_request {
                    out.extend_from_slice(b"content-length: 0\r\n");
                }
                Framing::Length(0)
            }
            Some(n) if may_have_length => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(crate::headers::decimal(n, &mut [0; 20]));
                out.extend_from_slice(b"\r\n");
                Framing::Length(n)
            }
            Some(_) => Framing::Length(0),
            None if may_have_body && http10 => {
                keep = false;
                Framing::Close
            }
            None if may_have_body => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
            None => Framing::Length(0),
        },
    };
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        crate::http_date::extend(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let framing = if may_have_body {
        framing
    } else {
        Framing::Length(0)
    };
    (framing, keep)
}

/// The status line, as hyper writes it: the usual reason phrase unless another is given.
#[inline]
fn status_line(status: StatusCode, reason: Option<&[u8]>, http10: bool, out: &mut Vec<u8>) {
    if status == StatusCode::OK && reason.is_none() && !http10 {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    out.extend_from_slice(if http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    match reason {
        Some(r) => out.extend_from_slice(r),
        None => out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
}

/// A head whose header lines came as the node wrote them ([`Verbatim`]): the status
/// line, those lines, and what this loop adds by the same rules as [`encode_head`]. Such
/// a head is never a HEAD's, a 1xx, 204 or 304, nor HTTP/1.0, and its body has a length
/// (which its lines give) or is chunked.
fn encode_verbatim(
    parts: &http::response::Parts,
    v: &Verbatim,
    body: &RespBody,
    close: bool,
    out: &mut Vec<u8>,
) -> (Framing, bool) {
    status_line(parts.status, None, false, out);
    for run in v.runs() {
        out.extend_from_slice(run);
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    let framing = match body.size_hint().exact() {
        Some(n) => Framing::Length(n),
        None => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Framing::Chunked
        }
    };
    if !v.has_date {
        out.extend_from_slice(b"date: ");
        crate::http_date::extend(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (framing, !close)
}

/// A connection with bytes already read from it in front: what a handed-over
/// connection's new server reads first.
pub struct Rewind<I> {
    pre: Bytes,
    io: I,
}

impl<I> Rewind<I> {
    pub fn new(io: I, pre: Bytes) -> Self {
        Rewind { pre, io }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.pre.is_empty() && buf.remaining() > 0 {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            if self.pre.is_empty() {
                // The read buffer they share is released.
                self.pre = Bytes::new();
            }
            return std::task::Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};
    use http_body_util::BodyExt;

    fn parsed(head: &[u8]) -> (&'static str, BytesMut) {
        let mut buf = BytesMut::from(head);
        let kind = match parse(&mut buf, true) {
            Parsed::Partial => "partial",
            Parsed::Unusual => "unusual",
            Parsed::Request(..) => "ours",
        };
        (kind, buf)
    }

    /// What this loop takes, and what it leaves to hyper untouched (every byte still in
    /// the buffer, for hyper to parse from the first).
    #[test]
    fn only_bodiless_http11_heads_are_taken() {
        for (head, want) in [
            (&b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"[..], "ours"),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
                "ours",
            ),
            (
                b"GET /a?b HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n",
                "ours",
            ),
            (b"GET http://h/x HTTP/1.1\r\n\r\n", "ours"),
            (b"GET / HTTP/1.1\r\nHost: h\r\n", "partial"),
            (b"GET / HTTP/1.0\r\n\r\n", "unusual"),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "unusual"),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
                "unusual",
            ),
            (b"GET / HTTP/1.1\r\nContent-Length: +0\r\n\r\n", "unusual"),
            (b"GET / HTTP/1.1\r\nContent-Length: 00\r\n\r\n", "unusual"),
            (
                b"GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
                "unusual",
            ),
            (
                b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                "unusual",
            ),
            (
                b"GET / HTTP/1.1\r\ntransfer-encoding: identity\r\n\r\n",
                "unusual",
            ),
            (b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", "unusual"),
            (
                b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
                "unusual",
            ),
            // Names in any case.
            (b"GET / HTTP/1.1\r\nEXPECT: 100-continue\r\n\r\n", "unusual"),
            (b"GET / HTTP/1.1\r\nuPgRaDe: h2c\r\n\r\n", "unusual"),
            (b"GET / HTTP/1.1\r\ncontent-LENGTH: 1\r\n\r\nx", "unusual"),
            (
                b"GET / HTTP/1.1\r\nCONTENT-LENGTH: 0\r\ncontent-length: 0\r\n\r\n",
                "unusual",
            ),
            (
                b"GET / HTTP/1.1\r\nTRANSFER-ENCODING: chunked\r\n\r\n0\r\n\r\n",
                "unusual",
            ),
            (b"CONNECT h:443 HTTP/1.1\r\n\r\n", "unusual"),
            (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", "unusual"),
            (b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", "unusual"),
            (b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", "unusual"),
            // A target `Uri` refuses: put back whole, for hyper's 400.
            (b"GET http://[::1 HTTP/1.1\r\nHost: h\r\n\r\n", "unusual"),
        ] {
            let (kind, rest) = parsed(head);
            assert_eq!(kind, want, "{}", String::from_utf8_lossy(head));
            if kind != "ours" {
                assert_eq!(&rest[..], head, "bytes kept for hyper");
            }
        }
        // A pipelined request stays in the buffer for the next turn.
        let (kind, rest) = parsed(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n");
        assert_eq!((kind, &rest[..]), ("ours", &b"GET /2 HTTP/1.1\r\n\r\n"[..]));
    }

    /// A plain head is kept as bytes; it reaches the node as the map's path sends it but
    /// for the names' case and the lines' order, with the `Host` that `pass_host` chose;
    /// its map, built when a plugin asks, is the map's path's; `vars` read the same
    /// values from it.
    #[test]
    fn heads_kept_as_bytes_reach_the_node_as_mapped_ones_do() {
        use crate::headers::{strip_hop_by_hop, Forwarded, ForwardedHeaders};
        for (head, kept) in [
            (&b"GET /a?b=1 HTTP/1.1\r\nHost: h.example:8080\r\nUser-Agent: t\r\n\r\n"[..], true),
            (
                b"GET / HTTP/1.1\r\nHOST: H.Example\r\nX-Forwarded-For: 1.2.3.4\r\nX-Real-IP: 6.6.6.6\r\n\
                  X-Forwarded-Proto: https\r\nX-Forwarded-Host: e\r\nX-Forwarded-Port: 1\r\n\
                  Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nProxy-Connection: x\r\nTE: trailers\r\n\
                  Trailer: x\r\nProxy-Authorization: y\r\nCookie: a=1\r\ncookie: b=2\r\nx-dup: 1\r\n\
                  X-Dup: 2\r\nContent-Length: 0\r\n\r\n",
                true,
            ),
            // Blanks and bytes a value may hold; a value of nothing.
            (
                b"GET / HTTP/1.1\r\nX-Tab: v\t1\r\nX-Obs: caf\xc3\xa9\r\nHost: h\r\nx-forwarded-for: 1.1.1.1\r\n\r\n",
                true,
            ),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX-Empty:\r\n\r\n", false),
            (b"GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: caf\xc3\xa9\r\nUser-Agent: curl\r\n\r\n", true),
            // Spaced otherwise than `name: value`: the map's path writes it anew.
            (b"GET / HTTP/1.1\r\nHost:h\r\n\r\n", false),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX:  v\r\n\r\n", false),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX:\tv\r\n\r\n", false),
            // `name: ` and nothing: as the map's path writes it.
            (b"GET / HTTP/1.1\r\nHost: h\r\nX: \r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close, x-drop\r\nX-Drop: 1\r\n\r\n", false),
            (b"GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n", false),
            (b"GET / HTTP/1.1\r\nUser-Agent: t\r\n\r\n", false),
            (b"GET / HTTP/1.1\r\n\r\n", false),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1\r\nX-Forwarded-For: 2\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Type: application/grpc\r\n\r\n", false),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX-Space: v \r\n\r\n", false),
            (b"GET / HTTP/1.1\nHost: h\nX: v\n\n", false),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX: v\n\r\n", false),
            (b"GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n", false),
            // Lines taken out cut the rest into runs: four are kept, five go to the map.
            (b"GET / HTTP/1.1\r\nA: 1\r\nHost: h\r\nB: 1\r\nTE: x\r\nC: 1\r\nTrailer: x\r\nD: 1\r\n\r\n", true),
            (
                b"GET / HTTP/1.1\r\nA: 1\r\nHost: h\r\nB: 1\r\nTE: x\r\nC: 1\r\nTrailer: x\r\nD: 1\r\nX-Real-IP: 1\r\nE: 1\r\n\r\n",
                false,
            ),
        ] {
            let shown = String::from_utf8_lossy(head);
            let Parsed::Request(req, _, raw) = parse(&mut BytesMut::from(head), true) else {
                panic!("not taken: {shown}");
            };
            let Parsed::Request(mapped, _, None) = parse(&mut BytesMut::from(head), false) else {
                panic!("not mapped: {shown}");
            };
            assert_eq!(raw.is_some(), kept, "{shown}");
            let Some(raw) = raw else {
                assert_eq!(req.headers(), mapped.headers(), "{shown}");
                continue;
            };
            assert!(req.headers().is_empty(), "{shown}");
            assert_eq!(&raw.header_map(), mapped.headers(), "{shown}");
            for name in mapped.headers().keys() {
                let want: Vec<&str> = mapped
                    .headers()
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                let upper = name.as_str().to_ascii_uppercase();
                assert_eq!(raw.values(name.as_str()).collect::<Vec<_>>(), want, "{shown}");
                assert_eq!(raw.values(&upper).collect::<Vec<_>>(), want, "{shown}");
                // As the access log reads one: the first line, if it is visible ASCII.
                let first = mapped.headers().get(name).and_then(|v| v.to_str().ok());
                assert_eq!(raw.first(&upper), first, "{shown}");
            }
            assert_eq!(raw.values("x-absent").count(), 0);
            // What the node gets, with the client's Host and with the node's own.
            for node_host in [None, Some(HeaderValue::from_static("node.example"))] {
                let f = |host| Forwarded {
                    client_ip: "10.0.0.9".parse().unwrap(),
                    real_ip: None,
                    proto: "http",
                    host,
                    port: 9080,
                };
                let mut map = mapped.headers().clone();
                strip_hop_by_hop(&mut map);
                let client_host = map.get(http::header::HOST).cloned();
                let by_map = ForwardedHeaders::new(&map, &f(client_host.as_ref()));
                let by_raw = ForwardedHeaders::after(
                    raw.forwarded_for().into_iter(),
                    &f(raw.host().as_ref()),
                );
                let mut as_mapped = Request::new(());
                *as_mapped.uri_mut() = mapped.uri().clone();
                *as_mapped.headers_mut() = map;
                let mut as_raw = Request::new(());
                *as_raw.uri_mut() = req.uri().clone();
                if let Some(h) = &node_host {
                    as_mapped.headers_mut().insert(http::header::HOST, h.clone());
                    as_raw.headers_mut().insert(http::header::HOST, h.clone());
                }
                let (mut a, mut b) = (Vec::new(), Vec::new());
                crate::h1_client::encode_head(&as_mapped, None, Some(&by_map), false, &mut a);
                crate::h1_client::encode_head(&as_raw, Some(&raw), Some(&by_raw), false, &mut b);
                assert!(b.ends_with(b"\r\n\r\n"), "{shown}");
                let lines = |head: &[u8]| {
                    let text = String::from_utf8_lossy(head).into_owned();
                    assert!(!text.replace("\r\n", "").contains('\n'), "a bare LF: {text}");
                    let mut lines = text.trim_end().split("\r\n");
                    let start = lines.next().unwrap().to_string();
                    let mut fields: Vec<(String, String)> = lines
                        .map(|l| {
                            // Spacing as written: the two paths write the same.
                            let (n, v) = l.split_once(':').unwrap();
                            (n.to_ascii_lowercase(), v.to_string())
                        })
                        .collect();
                    fields.sort();
                    (start, fields)
                };
                let (a, b) = (lines(&a), lines(&b));
                assert_eq!(a, b, "{shown}");
                let hosts: Vec<_> = b.1.iter().filter(|(n, _)| n == "host").collect();
                let want_host = node_host
                    .as_ref()
                    .or(client_host.as_ref())
                    .map(|h| h.to_str().unwrap());
                assert_eq!(hosts.len(), 1, "{shown}");
                assert_eq!(hosts[0].1.strip_prefix(' '), want_host, "{shown}");
            }
        }
    }

    #[test]
    fn content_lengths_are_digits_only() {
        for (v, want) in [
            (&b"0"[..], Some(0)),
            (b"12", Some(12)),
            (b"+5", None),
            (b"-1", None),
            (b"", None),
            (b" 5", None),
            (b"99999999999999999999999", None),
        ] {
            assert_eq!(
                crate::h1_client::parse_decimal(v),
                want,
                "{}",
                String::from_utf8_lossy(v)
            );
        }
    }

    /// A writer that takes one byte per call, to walk every offset of a vectored write.
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(1);
            self.0.extend_from_slice(&buf[..n]);
            std::task::Poll::Ready(Ok(n))
        }
        fn poll_flush(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn vectored_writes_survive_partial_writes() {
        let mut w = Trickle(Vec::new());
        let parts = (&b"ab"[..])
            .chain(&b""[..])
            .chain(&b"c"[..])
            .chain(&b"def"[..]);
        assert!(write_buf(&mut w, parts).await);
        assert_eq!(w.0, b"abcdef");
    }

    async fn written(resp: Response<RespBody>, head_request: bool, close: bool) -> (String, bool) {
        written_with(resp, None, head_request, close).await
    }

    async fn written_with(
        resp: Response<RespBody>,
        verbatim: Option<Verbatim>,
        head_request: bool,
        close: bool,
    ) -> (String, bool) {
        let mut w = Trickle(Vec::new());
        let keep = write_response(&mut w, resp, verbatim, head_request, close).await;
        let text = String::from_utf8(w.0).unwrap();
        // The date changes; its presence is what counts.
        let text = text
            .lines()
            .map(|l| {
                if l.starts_with("date: ") {
                    "date: D"
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        (text, keep)
    }

    fn resp(status: u16, body: RespBody, headers: &[(&str, &str)]) -> Response<RespBody> {
        let mut r = Response::new(body);
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        for (k, v) in headers {
            r.headers_mut().append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        r
    }

    fn streamed(chunks: &[&'static str]) -> RespBody {
        let frames: Vec<Result<http_body::Frame<Bytes>, crate::pool::BoxError>> = chunks
            .iter()
            .map(|c| Ok(http_body::Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    /// A node's head passed on verbatim gives the client the same response as the head
    /// parsed into a map and encoded again, but for the case of the names the node wrote.
    #[tokio::test]
    async fn verbatim_heads_are_written_as_mapped_ones_are() {
        let cases: &[(&str, Option<&'static str>)] = &[
            (
                "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n",
                Some("ok"),
            ),
            (
                "HTTP/1.1 404 Not Found\r\nDate: Mon, 07 Dec 2026 00:00:00 GMT\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n",
                None,
            ),
            ("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", Some("")),
            ("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 3\r\nRetry-After: 1\r\n\r\n", Some("abc")),
        ];
        let body = |b: Option<&'static str>| match b {
            Some(s) => proxy::full(s),
            None => streamed(&["ab", "c"]),
        };
        for &(raw, b) in cases {
            for close in [false, true] {
                let parse = |verbatim| {
                    let mut buf = BytesMut::from(raw.as_bytes());
                    crate::h1_client::parse_head(&mut buf, &Method::GET, verbatim)
                        .unwrap()
                        .unwrap()
                };
                let (parts, _, lines) = parse(true);
                assert!(lines.is_some(), "{raw:?} did not come verbatim");
                let verbatim =
                    written_with(Response::from_parts(parts, body(b)), lines, false, close).await;
                let mapped =
                    written(Response::from_parts(parse(false).0, body(b)), false, close).await;
                // The same status line, header lines in any order (names in any case),
                // body and reuse.
                let same = |(text, keep): (String, bool)| {
                    let mut lines = text.lines();
                    let mut head: Vec<String> = lines
                        .by_ref()
                        .take_while(|l| !l.is_empty())
                        .map(|l| l.to_ascii_lowercase())
                        .map(|l| {
                            if l.starts_with("date: ") {
                                "date: D".into()
                            } else {
                                l
                            }
                        })
                        .collect();
                    head[1..].sort();
                    (head, lines.map(str::to_string).collect::<Vec<_>>(), keep)
                };
                assert_eq!(same(verbatim), same(mapped), "{raw:?} close={close}");
            }
        }
        // The node's own date is kept, and none added beside it.
        let (parts, _, lines) = {
            let mut buf = BytesMut::from(cases[1].0.as_bytes());
            crate::h1_client::parse_head(&mut buf, &Method::GET, true)
                .unwrap()
                .unwrap()
        };
        let mut w = Trickle(Vec::new());
        write_response(
            &mut w,
            Response::from_parts(parts, body(None)),
            lines,
            false,
            false,
        )
        .await;
        let text = String::from_utf8(w.0).unwrap();
        assert_eq!(
            text.to_ascii_lowercase().matches("date: ").count(),
            1,
            "{text}"
        );
        assert!(
            text.contains("Date: Mon, 07 Dec 2026 00:00:00 GMT\r\n"),
            "{text}"
        );
    }

    /// Heads as hyper's server writes them for an HTTP/1.1 request.
    #[tokio::test]
    async fn responses_are_framed_as_hyper_frames_them() {
        let full = |s: &'static str| proxy::full(s);
        let cases: Vec<(Response<RespBody>, bool, bool, &str, bool)> = vec![
            (
                resp(200, full("ok"), &[("x", "1")]),
                false,
                false,
                "HTTP/1.1 200 OK\nx: 1\ncontent-length: 2\ndate: D\n\nok",
                true,
            ),
            (
                resp(200, full("ok"), &[("content-length", "2")]),
                false,
                false,
                "HTTP/1.1 200 OK\ncontent-length: 2\ndate: D\n\nok",
                true,
            ),
            (
                resp(404, full(""), &[]),
                false,
                false,
                "HTTP/1.1 404 Not Found\ncontent-length: 0\ndate: D\n",
                true,
            ),
            (
                resp(200, full("ok"), &[("content-length", "2")]),
                true,
                false,
                "HTTP/1.1 200 OK\ncontent-length: 2\ndate: D\n",
                true,
            ),
            (
                resp(204, full(""), &[]),
                false,
                false,
                "HTTP/1.1 204 No Content\ndate: D\n",
                true,
            ),
            (
                resp(200, streamed(&["ab", "cde"]), &[]),
                false,
                false,
                "HTTP/1.1 200 OK\ntransfer-encoding: chunked\ndate: D\n\n2\nab\n3\ncde\n0\n",
                true,
            ),
            (
                resp(200, full("ok"), &[]),
                false,
                true,
                "HTTP/1.1 200 OK\nconnection: close\ncontent-length: 2\ndate: D\n\nok",
                false,
            ),
            (
                resp(200, full("ok"), &[("connection", "close")]),
                false,
                false,
                "HTTP/1.1 200 OK\nconnection: close\ncontent-length: 2\ndate: D\n\nok",
                false,
            ),
            (
                resp(200, full("ok"), &[("date", "then")]),
                false,
                false,
                "HTTP/1.1 200 OK\ndate: D\ncontent-length: 2\n\nok",
                true,
            ),
        ];
        for (r, head, close, want, want_keep) in cases {
            let (got, keep) = written(r, head, close).await;
            assert_eq!(got, want);
            assert_eq!(keep, want_keep, "{got}");
        }
        // An HTTP/1.0 node's answer of unknown length: as it came, then closed.
        let mut r = resp(200, streamed(&["ab"]), &[]);
        *r.version_mut() = Version::HTTP_10;
        let (got, keep) = written(r, false, false).await;
        assert_eq!(got, "HTTP/1.0 200 OK\ndate: D\n\nab");
        assert!(!keep);
    }
}
