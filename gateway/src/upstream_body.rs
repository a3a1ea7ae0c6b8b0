//! The upstream response body, streamed to the client: each gap between chunks is bounded
//! by the read timeout, and the connection goes back to the pool once the body has ended.
use crate::lb::InFlightGuard;
use crate::pool::{BoxError, Conn, Pool};
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
    inner: Incoming,
    /// The connection, until the body ends (then pooled) or fails (then dropped).
    conn: Option<(Conn, Arc<Pool>, PoolSettings)>,
    /// Counts the request as in flight to its node until the body ends or is dropped.
    in_flight: Option<InFlightGuard>,
    read_timeout: Duration,
    /// Armed only when the upstream makes us wait: most small bodies arrive in one poll.
    deadline: Option<Pin<Box<Sleep>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("upstream sent no data for {0:?}")]
pub struct ReadTimeout(Duration);

impl UpstreamBody {
    pub fn new(
        inner: Incoming,
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
        if let Some((conn, pool, settings)) = self.conn.take() {
            pool.checkin(conn, &settings);
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
        match Pin::new(&mut this.inner).poll_frame(cx) {
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
                Poll::Ready(Some(Err(e.into())))
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
        self.inner.size_hint()
    }
}
