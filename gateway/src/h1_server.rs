//! The gateway's own HTTP/1.1 server loop for the common request: a plain-TCP HTTP/1.1
//! request without a body, without `Expect`, `Upgrade` or `Transfer-Encoding`, whose head
//! `httparse` reads whole within [`MAX_HEAD`]. hyper's server costs about 11,000
//! instructions a request and keeps an 8 KiB buffer and a boxed request future for each
//! connection's whole life; this loop holds no buffer while a connection is idle and
//! parses straight into the request the proxy takes (issue 16; docs/architecture.md).
//!
//! Everything else is hyper's: the first request this loop does not take, with the bytes
//! already read, goes to hyper ([`Own::Unusual`]), which serves the connection from then
//! on. So the loop only ever accepts a subset of what hyper accepts (what it cannot parse
//! or does not take, hyper answers or refuses as it always did), and what it writes
//! follows hyper's rules for a response head (`hyper::proto::h1::role::Server::encode`).
use crate::client_body::ClientBody;
use crate::proxy::{self, ConnInfo, RespBody};
use crate::send_timeout::SendTimeout;
use crate::Shared;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use std::future::poll_fn;
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// The largest head this loop reads; a larger one is hyper's (which allows 64 KiB and
/// answers 431 above it). nginx reads heads of up to 1 KiB into its first buffer.
pub const MAX_HEAD: usize = 8 * 1024;
/// hyper's default limit: more headers are hyper's to refuse (431).
const MAX_HEADERS: usize = 100;
const READ_CHUNK: usize = 2048;

/// How the loop left the connection.
pub enum Own {
    /// Closed, or to be closed: by either side, after `Connection: close`, or on an error.
    Done,
    /// A request this loop does not take: the connection, with what was read of it.
    Unusual(Rewind<SendTimeout<TcpStream>>),
}

/// What one connection's loop needs of its server.
pub struct Conn<'a> {
    pub shared: &'a Arc<Shared>,
    pub info: ConnInfo,
    /// Once set, every response says `Connection: close` and the connection ends after it.
    pub draining: &'a AtomicBool,
}

/// Serves requests on `io` until the connection ends or a request is not this loop's.
/// `begin` is called when a request head is complete; the guard it returns is dropped
/// once the response is written (the idle timer's reference).
pub async fn serve<G>(c: Conn<'_>, begin: impl Fn() -> G, mut io: SendTimeout<TcpStream>) -> Own {
    let mut buf = BytesMut::new();
    loop {
        // Idle between requests: no buffer is held until the client sends again.
        if buf.is_empty() {
            buf = BytesMut::new();
            if io.get_ref().readable().await.is_err() {
                return Own::Done;
            }
        }
        let (req, close) = loop {
            match parse(&mut buf) {
                Parsed::Request(req, close) => break (req, close),
                Parsed::Unusual => return Own::Unusual(Rewind::new(io, buf.freeze())),
                Parsed::Partial if buf.len() >= MAX_HEAD => {
                    return Own::Unusual(Rewind::new(io, buf.freeze()))
                }
                Parsed::Partial => {}
            }
            buf.reserve(READ_CHUNK);
            match poll_fn(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut io), cx, &mut buf)).await
            {
                // The client went away (or never finished a head, which hyper would
                // not answer either).
                Ok(0) | Err(_) => return Own::Done,
                Ok(_) => {}
            }
        };
        let end = begin();
        let head_request = req.method() == Method::HEAD;
        let handled = Box::pin(proxy::handle(c.shared.clone(), c.info, req));
        // A client that closes before its answer: the request is dropped, as hyper does
        // (the proxy counts it as 499). Data instead (a pipelined request) is read later.
        let resp = tokio::select! {
            resp = handled => resp,
            () = closed(io.get_ref()) => return Own::Done,
        };
        let close = close || c.draining.load(Ordering::Relaxed);
        let kept = write_response(&mut io, resp, head_request, close).await;
        drop(end);
        if !kept {
            let _ = io.shutdown().await;
            return Own::Done;
        }
    }
}

/// Resolves when the client has closed its side (or the socket failed); stays pending
/// once it has sent more data, which is the next request's to read.
async fn closed(stream: &TcpStream) {
    let mut probe = [0u8; 1];
    match stream.peek(&mut probe).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

// Moved once per request, where a box would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Partial,
    /// A request and whether it asked to close the connection after its response.
    Request(Request<ClientBody>, bool),
    Unusual,
}

/// A request head at the start of `buf`, taken out of it when complete and this loop's.
fn parse(buf: &mut BytesMut) -> Parsed {
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
    if r.version != Some(1) {
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
    let mut fields = Vec::with_capacity(r.headers.len());
    for h in r.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            return Parsed::Unusual;
        };
        match name {
            header::TRANSFER_ENCODING | header::EXPECT | header::UPGRADE => return Parsed::Unusual,
            // A body, or a length hyper may refuse: hyper's.
            header::CONTENT_LENGTH if h.value != b"0" => return Parsed::Unusual,
            header::CONNECTION => close |= has_token(h.value, b"close"),
            _ => {}
        }
        fields.push((name, span(h.value)));
    }
    // At most one `Content-Length: 0`: two are hyper's to judge.
    if fields
        .iter()
        .filter(|(n, _)| n == header::CONTENT_LENGTH)
        .count()
        > 1
    {
        return Parsed::Unusual;
    }
    let head = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path.0..path.1)) else {
        // Put back for hyper, which answers 400.
        let mut back = BytesMut::from(&head[..]);
        back.extend_from_slice(buf);
        *buf = back;
        return Parsed::Unusual;
    };
    let mut map = HeaderMap::with_capacity(fields.len());
    for (name, (start, end)) in fields {
        // httparse admitted only what `HeaderValue` does (visible ASCII, space, tab and
        // obs-text), so this never fails; were it to, hyper would be no better judge.
        let Ok(value) = HeaderValue::from_maybe_shared(head.slice(start..end)) else {
            let mut back = BytesMut::from(&head[..]);
            back.extend_from_slice(buf);
            *buf = back;
            return Parsed::Unusual;
        };
        map.append(name, value);
    }
    let mut req = Request::new(ClientBody::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = map;
    Parsed::Request(req, close)
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
}

/// Writes `resp` as hyper's server would for an HTTP/1.1 request; returns whether the
/// connection may serve another request.
async fn write_response<W: AsyncWrite + Unpin>(
    io: &mut W,
    resp: Response<RespBody>,
    head_request: bool,
    close: bool,
) -> bool {
    let (parts, mut body) = resp.into_parts();
    let mut out = Vec::with_capacity(128 + parts.headers.len() * 32);
    let (framing, keep) = encode_head(&parts, &body, head_request, close, &mut out);
    let Framing::Length(mut left) = framing else {
        return write_chunked(io, &out, &mut body).await && keep;
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
            Some(h) => write_all_vectored(io, &[&h, &data]).await,
            None => io.write_all(&data).await.is_ok(),
        };
        if !ok {
            return false;
        }
        if left == 0 {
            // The body must be over: more than its length would be hyper's body error.
            return keep && ended(&mut body);
        }
    }
}

/// Whether a body that gave all of its length is over, without waiting for it.
fn ended(body: &mut RespBody) -> bool {
    if body.is_end_stream() {
        return true;
    }
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    matches!(
        Pin::new(body).poll_frame(&mut cx),
        std::task::Poll::Ready(None)
    )
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
                // Trailers are not sent (`Trailer` is hop-by-hop), nor empty chunks.
                _ => continue,
            },
            None => {
                let last: &[u8] = b"0\r\n\r\n";
                return match head.take() {
                    Some(h) => write_all_vectored(io, &[h, last]).await,
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
        let size = format!("{:x}\r\n", data.len());
        let ok = match head.take() {
            Some(h) => write_all_vectored(io, &[h, size.as_bytes(), &data, b"\r\n"]).await,
            None => write_all_vectored(io, &[size.as_bytes(), &data, b"\r\n"]).await,
        };
        if !ok {
            return false;
        }
    }
}

/// Writes every byte of `parts` (at most 4), in as few vectored writes as the socket takes.
async fn write_all_vectored<W: AsyncWrite + Unpin>(io: &mut W, parts: &[&[u8]]) -> bool {
    let (mut idx, mut offset) = (0, 0);
    loop {
        // Empty parts would not be advanced past by a write.
        while idx < parts.len() && parts[idx].len() == offset {
            idx += 1;
            offset = 0;
        }
        if idx == parts.len() {
            return true;
        }
        let mut slices = [IoSlice::new(&[]); 4];
        let mut count = 0;
        for (i, p) in parts[idx..].iter().take(4).enumerate() {
            slices[i] = IoSlice::new(if i == 0 { &p[offset..] } else { p });
            count += 1;
        }
        let slices = &slices[..count];
        let mut n = match poll_fn(|cx| Pin::new(&mut *io).poll_write_vectored(cx, slices)).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        while n > 0 && idx < parts.len() {
            let rest = parts[idx].len() - offset;
            if n >= rest {
                n -= rest;
                idx += 1;
                offset = 0;
            } else {
                offset += n;
                n = 0;
            }
        }
    }
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
    if status == StatusCode::OK && reason.is_none() {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        match reason {
            Some(r) => out.extend_from_slice(r.as_bytes()),
            None => out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        out.extend_from_slice(b"\r\n");
    }
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
                    Some(n) if framing.is_none() && may_have_length => {
                        framing = Some(Framing::Length(n));
                    }
                    None if framing.is_none() && may_have_length => {
                        match std::str::from_utf8(value.as_bytes())
                            .ok()
                            .and_then(|v| v.parse::<u64>().ok())
                        {
                            Some(n) => framing = Some(Framing::Length(n)),
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
                push_decimal(out, n);
                out.extend_from_slice(b"\r\n");
                Framing::Length(n)
            }
            Some(_) => Framing::Length(0),
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

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
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
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
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
