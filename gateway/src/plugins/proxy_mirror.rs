//! The `proxy-mirror` plugin: decides per request whether a copy goes to the mirror
//! (`sample_ratio`) and where; the proxy makes the copy from what it forwards, and
//! [`Tee`] completes it with the request body as that streams to the upstream.
use super::{Phases, Req, Run};
use crate::outbound::{Copy, Outbound, Target};
use crate::pool::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use model::plugins::proxy_mirror::ProxyMirror as Conf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

pub struct ProxyMirror {
    pub conf: Conf,
    /// `None` outside a running gateway (no outbound client): nothing is mirrored.
    pub to: Option<(Arc<Outbound>, Arc<Target>)>,
}

/// Where one request's copy goes.
#[derive(Clone)]
pub struct Plan {
    pub outbound: Arc<Outbound>,
    pub target: Arc<Target>,
    /// The copy's path and query.
    pub path: String,
}

impl Phases for ProxyMirror {
    fn rewrite(&self, req: &mut Req<'_>, run: &mut Run) -> Option<super::Answer> {
        let (outbound, target) = self.to.as_ref()?;
        if self.conf.sample_ratio < 1.0 && rand::random::<f64>() >= self.conf.sample_ratio {
            return None;
        }
        let pq = req.parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        run.mirror = Some(Box::new(Plan {
            outbound: outbound.clone(),
            target: target.clone(),
            path: self.conf.target(pq),
        }));
        None
    }
}

/// Bodies larger than this are not mirrored (the copy is dropped, counted), so that a
/// large upload is never held in memory twice.
pub const MAX_BODY: usize = 1 << 20;

/// The copy of a request as forwarded: `parts` with the mirror's path.
pub fn copy_head(plan: &Plan, parts: &http::request::Parts) -> http::request::Parts {
    let (mut head, ()) = http::Request::new(()).into_parts();
    head.method = parts.method.clone();
    head.headers = parts.headers.clone();
    head.uri = plan
        .path
        .parse()
        .unwrap_or_else(|_| http::Uri::from_static("/"));
    head
}

/// Sends the copy of a bodiless request now.
pub fn send_now(plan: &Plan, head: http::request::Parts, timeout: Duration) {
    plan.outbound.mirror(Copy {
        target: plan.target.clone(),
        req: http::Request::from_parts(head, Bytes::new()),
        timeout,
    });
}

/// A request body on its way upstream that keeps a copy of what passes, and hands the
/// whole copy to the mirror when the body has ended; an aborted or too large body sends
/// nothing.
pub struct Tee<B> {
    inner: B,
    plan: Option<(Plan, http::request::Parts, Duration)>,
    seen: Vec<Bytes>,
    size: usize,
}

impl<B> Tee<B> {
    pub fn new(inner: B, plan: Plan, head: http::request::Parts, timeout: Duration) -> Tee<B> {
        Tee {
            inner,
            plan: Some((plan, head, timeout)),
            seen: Vec::new(),
            size: 0,
        }
    }
}

impl<B> Tee<B> {
    /// The body is complete: the copy goes.
    fn finish(&mut self) {
        if let Some((plan, head, timeout)) = self.plan.take() {
            let body: Vec<u8> = self.seen.drain(..).flat_map(|b| b.to_vec()).collect();
            plan.outbound.mirror(Copy {
                target: plan.target.clone(),
                req: http::Request::from_parts(head, Bytes::from(body)),
                timeout,
            });
        }
    }
}

impl<B> Body for Tee<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.size += data.len();
                    if self.size > MAX_BODY {
                        if let Some((plan, _, _)) = self.plan.take() {
                            plan.outbound
                                .mirror
                                .dropped
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        self.seen.clear();
                    } else if self.plan.is_some() {
                        let data = data.clone();
                        self.seen.push(data);
                    }
                }
                // A client with a declared length stops polling after the last bytes.
                if self.inner.is_end_stream() {
                    self.finish();
                }
            }
            Poll::Ready(None) => self.finish(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
