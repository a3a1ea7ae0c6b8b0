//! The upstream response body, streamed to the client: each gap between chunks is bounded
//! by the read timeout, and the connection goes back to the pool once the body has ended.
use crate::h1_client::Decoder;
use crate::lb::InFlightGuard;
use crate::pool::{BoxError, Conn, Pool, Sender};
use crate::snapshot::PoolSettings;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

pub struct UpstreamBody {
    inner: Inner,
    /// The connection, until the body ends (then pooled) or fails (then dropped).
    conn: Option<(Conn, Arc<Pool>, PoolSettings)>,
    /// Counts the request as in flight to its node until the body ends or is dropped.
    in_flight: Option<InFlightGuard>,
    read_timeout: Duration,
    /// Armed only when the upstream makes us wait: most small bodies arrive in one poll.
    deadline: Option<Pin<Box<Sleep>>>,
}

/// Where the bytes come from.
pub enum Inner {
    /// hyper's connection task.
    Hyper(Incoming),
    /// Read here, off the inline connection held in `conn`.
    Inline(Decoder),
}

impl Inner {
    fn is_end_stream(&self) -> bool {
        match self {
            Inner::Hyper(b) => b.is_end_stream(),
            Inner::Inline(d) => d.is_end_stream(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("upstream sent no data for {0:?}")]
pub struct ReadTimeout(Duration);

impl UpstreamBody {
    pub fn new(
        inner: Inner,
        conn: Conn,
        pool: Arc<Pool>,
        settings: PoolSettings,
        read_timeout: Duration,
        in_flight: InFlightGuard,
    ) -> Self {
        let mut body = UpstreamBody {
            inner,
            conn: Some((conn, pool, settings)),
            in_flight: Some(in_flight),
            read_timeout,
            deadline: None,
        };
        // A server never polls a body that is already at its end (204, HEAD, empty).
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        self.in_flight = None;
        // An inline connection is reused only when its response was framed to an end
        // and nothing beyond it arrived.
        let reusable = match &self.inner {
            Inner::Hyper(_) => true,
            Inner::Inline(d) => d.reusable(),
        };
        if let Some((conn, pool, settings)) = self.conn.take() {
            if reusable && !matches!(&conn.tx, Sender::Inline(c) if !c.buf.is_empty()) {
                pool.checkin(conn, &settings);
            }
        }
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.inner {
            Inner::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            // The connection went back to the pool when the body ended.
            Inner::Inline(d) if d.is_end_stream() => Poll::Ready(None),
            Inner::Inline(d) => match self.conn.as_mut() {
                Some((
                    Conn {
                        tx: Sender::Inline(c),
                        ..
                    },
                    _,
                    _,
                )) => d.poll_frame(cx, c).map_err(Into::into),
                _ => Poll::Ready(Some(Err("the upstream connection is gone".into()))),
            },
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match this.poll_inner(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = this.deadline.as_mut() {
                    d.as_mut().reset(Instant::now() + this.read_timeout);
                }
                if this.inner.is_end_stream() {
                    this.release();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.conn = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.release();
                Poll::Ready(None)
            }
            Poll::Pending => match this
                .deadline
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(this.read_timeout)))
                .as_mut()
                .poll(cx)
            {
                Poll::Ready(()) => {
                    this.conn = None;
                    Poll::Ready(Some(Err(Box::new(ReadTimeout(this.read_timeout)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Hyper(b) => b.size_hint(),
            Inner::Inline(d) => d.size_hint(),
        }
    }
}
