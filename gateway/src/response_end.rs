//! A response body that reports when it is dropped (sent in full, or abandoned by the
//! client) how many body bytes went out: the log phase of the plugins that record a
//! request once it is over (`prometheus`, `http-logger`), as APISIX's runs after nginx
//! has sent the response.
use crate::pool::BoxError;
use crate::prometheus::Recording;
use crate::proxy::RespBody;
use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What a response was, once it is over.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    pub body_bytes: u64,
}

pub type OnEnd = Box<dyn FnOnce(Ended) + Send>;

struct Watched {
    inner: RespBody,
    sent: u64,
    metrics: Option<Recording>,
    on_end: Vec<OnEnd>,
}

impl Body for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.sent += data.len() as u64;
            }
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

impl Drop for Watched {
    fn drop(&mut self) {
        let ended = Ended {
            body_bytes: self.sent,
        };
        if let Some(m) = self.metrics.take() {
            m.finish(self.sent);
        }
        for f in self.on_end.drain(..) {
            f(ended);
        }
    }
}

/// `resp`, whose request is recorded in the metrics and whose `on_end` run when its body
/// is done; unchanged when there is nothing to do.
pub fn on_end(
    resp: Response<RespBody>,
    metrics: Option<Recording>,
    on_end: Vec<OnEnd>,
) -> Response<RespBody> {
    if metrics.is_none() && on_end.is_empty() {
        return resp;
    }
    resp.map(|inner| {
        UnsyncBoxBody::new(Watched {
            inner,
            sent: 0,
            metrics,
            on_end,
        })
    })
}

/// The size of a response head as HTTP/1.1 writes it (nginx's `$bytes_sent` counts it).
pub fn head_len<B>(resp: &Response<B>) -> u64 {
    let status_line = "HTTP/1.1 200 OK\r\n".len();
    let headers: usize = resp
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
        .sum();
    (status_line + headers + 2) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn reports_the_body_bytes_once_the_body_is_dropped() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let resp = on_end(
            Response::new(crate::proxy::full("hello")),
            None,
            vec![Box::new(move |e: Ended| {
                s.lock().unwrap().push(e.body_bytes)
            })],
        );
        assert!(seen.lock().unwrap().is_empty());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello");
        assert_eq!(*seen.lock().unwrap(), vec![5]);
        // An abandoned response reports what went out (nothing).
        let s = seen.clone();
        drop(on_end(
            Response::new(crate::proxy::full("x")),
            None,
            vec![Box::new(move |e: Ended| {
                s.lock().unwrap().push(e.body_bytes)
            })],
        ));
        assert_eq!(*seen.lock().unwrap(), vec![5, 0]);
    }
}
