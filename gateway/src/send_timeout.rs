//! The client send timeout (nginx's `send_timeout`): a client connection whose writes make
//! no progress for the limit fails with `TimedOut`, so a client that stops reading cannot
//! hold its upstream connection, its buffers and a drain slot forever. Only a write that
//! would block arms a timer; writes that complete at once cost a branch.
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pub struct SendTimeout<I> {
    io: I,
    limit: Duration,
    /// Armed when a write first blocks; cleared by the next one that makes progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<I> SendTimeout<I> {
    pub fn new(io: I, limit: Duration) -> Self {
        SendTimeout {
            io,
            limit,
            stalled: None,
        }
    }

    /// The connection below, for what does not write (waiting to read, peeking).
    pub fn get_ref(&self) -> &I {
        &self.io
    }

    /// The connection below, for a connection put aside between writes.
    pub fn into_inner(self) -> I {
        self.io
    }

    /// What a write that returned `r` means once the stall timer has had its say.
    fn check<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for SendTimeout<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for SendTimeout<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.check(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.check(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.check(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.check(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_reader_that_stops_is_cut_one_that_pauses_is_not() {
        let limit = Duration::from_millis(300);
        // (pause of the reader between reads, whether the writer must fail)
        for (pause, cut) in [
            (Duration::from_millis(50), false),
            (Duration::from_secs(1), true),
        ] {
            let (near, mut far) = tokio::io::duplex(1024);
            let mut w = SendTimeout::new(near, limit);
            let reader = tokio::spawn(async move {
                let mut got = 0usize;
                let mut buf = [0u8; 1024];
                while got < 16 * 1024 {
                    tokio::time::sleep(pause).await;
                    match far.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                }
                got
            });
            let mut written = 0usize;
            let mut failed = None;
            while written < 16 * 1024 {
                match w.write(&[7u8; 1024]).await {
                    Ok(n) => written += n,
                    Err(e) => {
                        failed = Some(e.kind());
                        break;
                    }
                }
            }
            drop(w);
            let got = reader.await.unwrap();
            if cut {
                assert_eq!(failed, Some(io::ErrorKind::TimedOut), "pause {pause:?}");
                assert!(got < 16 * 1024, "pause {pause:?}: {got}");
            } else {
                assert_eq!(failed, None, "pause {pause:?}");
                assert_eq!(got, 16 * 1024, "pause {pause:?}");
            }
        }
    }
}
