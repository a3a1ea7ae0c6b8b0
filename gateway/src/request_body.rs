//! The client's request body on its way upstream: streamed frame by frame, with the
//! upstream `send` timeout bounding each wait for the next frame, and a signal when it has
//! been sent completely — the upstream's `read` timeout only starts then, so a long upload
//! is not cut by a timeout meant for waiting on the response.
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// Shared between the body (which sends) and the proxy (which waits for the answer).
#[derive(Default)]
pub struct Progress {
    /// The upstream connection has started taking the body.
    started: AtomicBool,
    done: AtomicBool,
    stalled: AtomicBool,
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

    /// True when the client stopped sending its body for longer than the send timeout.
    pub fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Acquire)
    }

    fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
}

pub struct RequestBody {
    inner: Incoming,
    progress: Arc<Progress>,
    idle_timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("client sent no body data for {0:?}")]
pub struct ClientStalled(Duration);

impl RequestBody {
    pub fn new(inner: Incoming, idle_timeout: Duration) -> (RequestBody, Arc<Progress>) {
        let progress = Arc::new(Progress::default());
        let body = RequestBody {
            inner,
            progress: progress.clone(),
            idle_timeout,
            deadline: None,
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
                if let Some(d) = this.deadline.as_mut() {
                    d.as_mut().reset(Instant::now() + this.idle_timeout);
                }
                if this.inner.is_end_stream() {
                    this.progress.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.progress.finish();
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
                        this.progress.stalled.store(true, Ordering::Release);
                        this.progress.finish();
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
