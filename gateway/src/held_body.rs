//! A response body that holds something until it is dropped: hyper drops a body once it
//! has been sent, or when the client went away, so what it holds (a `limit-conn` slot)
//! lives exactly as long as the response.
use crate::pool::BoxError;
use crate::proxy::RespBody;
use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

struct Holding {
    inner: RespBody,
    _held: Vec<Arc<dyn Send + Sync>>,
}

impl Body for Holding {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `resp` with a body that holds `held` until it is dropped; unchanged when there is
/// nothing to hold.
pub fn hold(resp: Response<RespBody>, held: Vec<Arc<dyn Send + Sync>>) -> Response<RespBody> {
    if held.is_empty() {
        return resp;
    }
    resp.map(|inner| UnsyncBoxBody::new(Holding { inner, _held: held }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn held_until_the_body_is_dropped() {
        let token: Arc<dyn Send + Sync> = Arc::new(());
        let resp = hold(Response::new(crate::proxy::full("ok")), vec![token.clone()]);
        assert_eq!(Arc::strong_count(&token), 2);
        let (_, body) = resp.into_parts();
        assert_eq!(body.collect().await.unwrap().to_bytes(), "ok");
        assert_eq!(Arc::strong_count(&token), 1, "released with the body");
    }
}
