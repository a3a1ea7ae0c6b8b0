//! Raw sockets for hostile-input tests: a client that writes exactly the bytes given and
//! reads what comes back, and a backend that records exactly the bytes it receives (and
//! what requests it parsed from them), so a test can assert both sides of the gateway.
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// One response as read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection that writes raw bytes.
pub struct RawConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        RawConn {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Writes, tolerating a peer that has closed already (it may answer, then close,
    /// before all of a hostile request is written).
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads one response (head, then a `Content-Length` or chunked body); `None` when the
    /// connection closes (or resets) first, or nothing complete arrives within `within`.
    pub async fn response(&mut self, within: Duration) -> Option<RawResponse> {
        tokio::time::timeout(within, self.read_response())
            .await
            .ok()
            .flatten()
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    async fn read_response(&mut self) -> Option<RawResponse> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if !self.fill().await {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        break i;
                    }
                    if !self.fill().await {
                        return None;
                    }
                };
                let size_hex = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size_hex.split(';').next()?.trim(), 16).ok()?;
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    if !self.fill().await {
                        return None;
                    }
                }
                body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
                if size == 0 {
                    break;
                }
            }
        } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            while self.buf.len() < len {
                if !self.fill().await {
                    return None;
                }
            }
            body = self.buf.drain(..len).collect();
        }
        Some(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// True once the gateway has closed the connection (EOF or reset) within `within`;
    /// bytes that arrive meanwhile are kept for [`RawConn::response`].
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, async { while self.fill().await {} })
            .await
            .is_ok()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Writes `bytes` on a new connection and reads one response.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Option<RawResponse> {
    let mut c = RawConn::connect(addr).await;
    let _ = c.try_send(bytes).await;
    c.response(Duration::from_secs(10)).await
}

/// A node that answers every request with the same bytes, on keepalive connections.
pub async fn fixed_node(answer: &'static [u8]) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&chunk[..n]),
                    }
                    while let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..i + 4);
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A request as the recording backend parsed it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Default)]
struct Log {
    bytes: Vec<u8>,
    requests: Vec<Seen>,
    /// The status it answers with; 0 means 200.
    status: u16,
}

/// An HTTP/1.1 upstream that records every byte it is sent and every request it parsed
/// from them, and answers each with `ok` (200 unless [`RecordingBackend::respond_with`]
/// says otherwise).
pub struct RecordingBackend {
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordingBackend {
    pub async fn start() -> RecordingBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let task = tokio::spawn({
            let log = log.clone();
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let log = log.clone();
                    tokio::spawn(async move {
                        let io = Recorder {
                            inner: stream,
                            log: log.clone(),
                        };
                        let svc = hyper::service::service_fn(
                            move |req: hyper::Request<hyper::body::Incoming>| {
                                let log = log.clone();
                                async move {
                                    let (parts, body) = req.into_parts();
                                    let body = body
                                        .collect()
                                        .await
                                        .map(|b| b.to_bytes().to_vec())
                                        .unwrap_or_default();
                                    let seen = Seen {
                                        method: parts.method.to_string(),
                                        target: parts.uri.to_string(),
                                        headers: parts
                                            .headers
                                            .iter()
                                            .map(|(k, v)| {
                                                (
                                                    k.to_string(),
                                                    String::from_utf8_lossy(v.as_bytes())
                                                        .into_owned(),
                                                )
                                            })
                                            .collect(),
                                        body,
                                    };
                                    let status = {
                                        let mut log = log.lock().unwrap();
                                        log.requests.push(seen);
                                        log.status
                                    };
                                    let mut resp =
                                        hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
                                    if status != 0 {
                                        *resp.status_mut() =
                                            hyper::StatusCode::from_u16(status).unwrap();
                                    }
                                    Ok::<_, std::convert::Infallible>(resp)
                                }
                            },
                        );
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
                            .await;
                    });
                }
            }
        });
        RecordingBackend { addr, log, task }
    }

    pub fn node(&self) -> String {
        self.addr.to_string()
    }

    /// Every byte received so far, on all connections, in arrival order.
    pub fn bytes(&self) -> Vec<u8> {
        self.log.lock().unwrap().bytes.clone()
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.log.lock().unwrap().requests.clone()
    }

    /// The status every later request is answered with.
    pub fn respond_with(&self, status: u16) {
        self.log.lock().unwrap().status = status;
    }

    pub fn clear(&self) {
        let mut log = self.log.lock().unwrap();
        log.bytes.clear();
        log.requests.clear();
    }
}

impl Drop for RecordingBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Tees what is read into the log.
struct Recorder {
    inner: TcpStream,
    log: Arc<Mutex<Log>>,
}

impl AsyncRead for Recorder {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let new = buf.filled()[before..].to_vec();
            self.log.lock().unwrap().bytes.extend_from_slice(&new);
        }
        r
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Hand-made HTTP/2 frames (RFC 9113) and HPACK literals (RFC 7541), for attacks no
/// well-behaved client library can send: rapid reset, CONTINUATION floods, HPACK bombs.
pub mod h2 {
    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// An HPACK integer with an `n`-bit prefix, the prefix's other bits set to `first`.
    pub fn int(first: u8, n: u32, mut v: usize, out: &mut Vec<u8>) {
        let max = (1usize << n) - 1;
        if v < max {
            out.push(first | v as u8);
            return;
        }
        out.push(first | max as u8);
        v -= max;
        while v >= 128 {
            out.push((v % 128 + 128) as u8);
            v /= 128;
        }
        out.push(v as u8);
    }

    /// A literal field with a new name: `0x00` (never added to the table) or `0x40`
    /// (added to the dynamic table, for the bomb).
    pub fn literal(first: u8, name: &str, value: &str) -> Vec<u8> {
        let mut out = vec![first];
        int(0, 7, name.len(), &mut out);
        out.extend_from_slice(name.as_bytes());
        int(0, 7, value.len(), &mut out);
        out.extend_from_slice(value.as_bytes());
        out
    }

    /// The header block of `GET {path}` for `authority`.
    pub fn get(path: &str, authority: &str) -> Vec<u8> {
        [
            literal(0, ":method", "GET"),
            literal(0, ":scheme", "http"),
            literal(0, ":path", path),
            literal(0, ":authority", authority),
        ]
        .concat()
    }

    /// Frames read until the connection closes or `within` passes: (type, flags, stream).
    pub async fn read_frames(
        stream: &mut tokio::net::TcpStream,
        within: std::time::Duration,
    ) -> (Vec<(u8, u8, u32)>, bool) {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(within, async {
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
        .is_ok();
        let mut frames = Vec::new();
        let mut at = 0;
        while buf.len() >= at + 9 {
            let len = (usize::from(buf[at]) << 16)
                | (usize::from(buf[at + 1]) << 8)
                | usize::from(buf[at + 2]);
            let id = u32::from_be_bytes([buf[at + 5], buf[at + 6], buf[at + 7], buf[at + 8]])
                & 0x7fff_ffff;
            frames.push((buf[at + 3], buf[at + 4], id));
            at += 9 + len;
        }
        (frames, closed)
    }
}
