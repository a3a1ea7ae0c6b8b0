//! The client's request body on its way upstream: streamed frame by frame, with the
//! upstream `send` timeout bounding each wait for the next frame, and a signal when it has
//! been sent completely — the upstream's `read` timeout only starts then, so a long upload
//! is not cut by a timeout meant for waiting on the response. It also enforces the body
//! size limit, and tells the proxy when the body failed through the client's fault
//! (stalled, too large, badly framed, aborted), which must never count against the node.
use crate::client_body::ClientBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// How the client spoiled its own request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientFault {
    /// No data for longer than the send timeout.
    Stalled = 1,
    /// More than the body size limit.
    TooLarge = 2,
    /// Invalid chunked framing (a bad chunk size line, a missing CRLF).
    BadFraming = 3,
    /// The client closed or reset before the body was complete.
    Aborted = 4,
}

impl ClientFault {
    fn from_u8(v: u8) -> Option<ClientFault> {
        Some(match v {
            1 => ClientFault::Stalled,
            2 => ClientFault::TooLarge,
            3 => ClientFault::BadFraming,
            4 => ClientFault::Aborted,
            _ => return None,
        })
    }

    /// What hyper's error reading the client's body says about it: a framing error is an
    /// `InvalidData`/`InvalidInput` I/O error in its source chain; anything else (an EOF
    /// before the declared length, a reset HTTP/2 stream) is the client going away.
    fn of(e: &hyper::Error) -> ClientFault {
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
                ) {
                    return ClientFault::BadFraming;
                }
            }
            source = s.source();
        }
        ClientFault::Aborted
    }
}

/// Shared between the body (which sends) and the proxy (which waits for the answer).
#[derive(Default)]
pub struct Progress {
    /// The upstream connection has started taking the body.
    started: AtomicBool,
    done: AtomicBool,
    /// A [`ClientFault`] once the client spoiled the body; 0 before.
    fault: AtomicU8,
    notify: Notify,
}

impl Progress {
    /// Resolves once the body has been sent completely, or dropped.
    pub async fn finished(&self) {
        loop {
            let notified = self.notify.notified();
            if self.done.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Resolves once the upstream connection asks for the body (an HTTP/2 node may
    /// queue a stream for a while first), or it is finished.
    pub async fn started(&self) {
        loop {
            let notified = self.notify.notified();
            if self.started.load(Ordering::Acquire) || self.done.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    fn start(&self) {
        if !self.started.swap(true, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }

    /// Set when the body failed through the client's fault.
    pub fn fault(&self) -> Option<ClientFault> {
        ClientFault::from_u8(self.fault.load(Ordering::Acquire))
    }

    fn fail(&self, fault: ClientFault) {
        self.fault.store(fault as u8, Ordering::Release);
        self.finish();
    }

    fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
}

pub struct RequestBody {
    inner: ClientBody,
    progress: Arc<Progress>,
    idle_timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
    /// Bytes allowed in all; `u64::MAX` for no limit.
    limit: u64,
    received: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("client sent no body data for {0:?}")]
pub struct ClientStalled(Duration);

#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than {0} bytes")]
pub struct TooLarge(u64);

impl RequestBody {
    /// `limit`: the most body bytes the client may send (`None`: no limit).
    pub fn new(
        inner: ClientBody,
        idle_timeout: Duration,
        limit: Option<u64>,
    ) -> (RequestBody, Arc<Progress>) {
        let progress = Arc::new(Progress::default());
        let body = RequestBody {
            inner,
            progress: progress.clone(),
            idle_timeout,
            deadline: None,
            limit: limit.unwrap_or(u64::MAX),
            received: 0,
        };
        (body, progress)
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        self.progress.finish();
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.deadline.is_none() {
            this.progress.start();
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len() as u64);
                    if this.received > this.limit {
                        this.progress.fail(ClientFault::TooLarge);
                        return Poll::Ready(Some(Err(Box::new(TooLarge(this.limit)))));
                    }
                }
                if let Some(d) = this.deadline.as_mut() {
                    d.as_mut().reset(Instant::now() + this.idle_timeout);
                }
                if this.inner.is_end_stream() {
                    this.progress.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.progress.fail(ClientFault::of(&e));
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.progress.finish();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let idle = this.idle_timeout;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.progress.fail(ClientFault::Stalled);
                        Poll::Ready(Some(Err(Box::new(ClientStalled(idle)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
