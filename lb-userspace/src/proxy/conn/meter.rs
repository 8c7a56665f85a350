//! Where a client connection's traffic is accounted: the listener's
//! processed bytes, and the activity the idle watcher
//! ([`crate::proxy::conn::listener::quiet_for`]) looks at. [`Metered`] wraps the socket
//! itself, so the fast path and hyper (after a handoff) count through the
//! same layer, each byte once.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::ListenerMetrics;

#[derive(Clone)]
pub struct Meter {
    /// None: activity only (the target side of a tunnel, whose bytes the
    /// client side has already counted).
    pub metrics: Option<Arc<ListenerMetrics>>,
    pub activity: Arc<AtomicU64>,
}

impl Meter {
    pub fn new(metrics: Arc<ListenerMetrics>) -> Self {
        Self {
            metrics: Some(metrics),
            activity: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Counts activity only, for the idle watcher.
    pub fn activity_only() -> Self {
        Self {
            metrics: None,
            activity: Arc::new(AtomicU64::new(0)),
        }
    }

    /// `n` bytes moved, either way.
    pub fn moved(&self, n: usize) {
        if n > 0 {
            if let Some(m) = &self.metrics {
                m.processed_bytes.add(n as u64);
            }
            // Only this connection writes it: no read-modify-write needed.
            self.activity
                .store(self.activity.load(Relaxed).wrapping_add(1), Relaxed);
        }
    }
}

/// A client connection whose bytes, both ways, are counted in its [`Meter`].
pub struct Metered<IO> {
    io: IO,
    meter: Meter,
}

impl<IO> Metered<IO> {
    pub fn new(io: IO, meter: Meter) -> Self {
        Self { io, meter }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// The socket, no longer counted.
    pub fn into_inner(self) -> IO {
        self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Metered<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        this.meter.moved(buf.filled().len() - before);
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Metered<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.meter.moved(n);
        }
        r
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            this.meter.moved(n);
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
