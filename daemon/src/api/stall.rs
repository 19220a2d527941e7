//! Cutting off clients that stop reading. Every connection's socket is
//! wrapped in [`StallGuard`]: a write (or flush) that makes no progress for
//! `server.slow_client_timeout_secs` fails with `TimedOut`, so hyper closes
//! the connection and drops the response body. The connection's
//! [`StallFlag`] (also put in each request's extensions) then tells the code
//! that fed the body why it went away, so the run is recorded with that
//! reason. Without this, a client that stays connected but never reads
//! would hold its run, its connection and the shutdown drain for ever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Set once the connection was cut off for not reading.
#[derive(Clone, Debug, Default)]
pub struct StallFlag(Arc<AtomicBool>);

impl StallFlag {
    pub fn tripped(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn trip(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A socket whose writes may wait for the peer at most `limit` at a time.
pub struct StallGuard<S> {
    io: S,
    limit: Duration,
    /// Running while a write waits for room; reset by any progress.
    timer: Option<Pin<Box<Sleep>>>,
    flag: StallFlag,
}

impl<S> StallGuard<S> {
    pub fn new(io: S, limit: Duration, flag: StallFlag) -> Self {
        StallGuard { io, limit, timer: None, flag }
    }

    fn bound<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.timer = None;
            return r;
        }
        let limit = self.limit;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                self.flag.trip();
                tracing::info!(timeout_secs = limit.as_secs(), "client stopped reading; closing the connection");
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")))
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.bound(cx, r)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.bound(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.bound(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.bound(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_nobody_reads_fails_after_the_limit_and_trips_the_flag() {
        // A duplex pipe with a 16-byte buffer whose other end never reads.
        let (a, _b) = tokio::io::duplex(16);
        let flag = StallFlag::default();
        let mut g = StallGuard::new(a, Duration::from_millis(50), flag.clone());
        g.write_all(&[0; 16]).await.expect("the first 16 bytes fit");
        assert!(!flag.tripped());
        let e = tokio::time::timeout(Duration::from_secs(5), g.write_all(&[0; 16])).await.expect("bounded").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(flag.tripped());
    }
}
