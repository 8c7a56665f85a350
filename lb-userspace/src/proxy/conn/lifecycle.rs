//! How a socket group's accept loops and connections end: stopped (SIGTERM)
//! or drained (another process takes the listening sockets over).
//!
//! Stop ends idle connections at once: nothing else will serve the address,
//! and a client sending a request just then gets an error whatever is done.
//! Drain is for a takeover ([`Phase::Drain`]): the next process already
//! accepts on the same sockets, so no client may lose a request. Closing an
//! idle kept-alive connection races a request on its way to it (hyper's
//! `graceful_shutdown` does so on HTTP/1); a drained connection instead
//! closes after its next response, when its client closes it, or when it
//! has been idle for the idle timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// Where a socket group is in its life. It moves once, from `Run` to one of
/// the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Run,
    /// Stop accepting and close each connection when no request can be on
    /// its way: after its next response (`Connection: close`, GOAWAY on
    /// HTTP/2), or when its client closes it or it idles out. Upgraded
    /// connections carry on.
    Drain,
    /// Stop accepting, close idle connections now, finish in-flight requests.
    Stop,
}

/// The sending side: one per socket group, read by its accept loops.
pub struct Lifecycle(watch::Sender<Phase>);

/// What an accept loop or a connection watches.
pub type PhaseRx = watch::Receiver<Phase>;

impl Lifecycle {
    pub fn new() -> (Self, PhaseRx) {
        let (tx, rx) = watch::channel(Phase::Run);
        (Self(tx), rx)
    }

    pub fn drain(&self) {
        self.set(Phase::Drain);
    }

    pub fn stop(&self) {
        self.set(Phase::Stop);
    }

    fn set(&self, phase: Phase) {
        // The move is one way: a group drained stays drained.
        self.0.send_if_modified(|p| {
            let moved = *p == Phase::Run;
            if moved {
                *p = phase;
            }
            moved
        });
    }
}

/// The phase `rx` moves to. A sender gone without a word (its task dropped
/// with its worker) is a stop. Awaited once: after it has resolved, it
/// resolves again at once.
pub async fn next(rx: &mut PhaseRx) -> Phase {
    match rx.changed().await {
        Ok(()) => *rx.borrow_and_update(),
        Err(_) => match *rx.borrow() {
            Phase::Run => Phase::Stop,
            p => p,
        },
    }
}

/// How long a drained connection reads and discards what its client still
/// sends after its last response, before closing. Linux answers a close
/// with unread input by a reset (`tcp_close`), which can also discard the
/// response before the client read it; a client that sent a pipelined
/// request, or a WINDOW_UPDATE, a moment before it saw `Connection: close`
/// closes within a round trip (well under a millisecond on a LAN, 200 ms
/// across continents), so one second covers them.
pub const LINGER: Duration = Duration::from_secs(1);

/// Reads and discards until the client closes (or fails), or for [`LINGER`].
/// For after the write side was shut down.
pub async fn linger<IO: AsyncRead + Unpin>(io: &mut IO) {
    let mut scratch = [0u8; 512];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = io.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// A hyper-served connection's drain state, shared by its service (which
/// marks responses) and its task (which sees the phase move).
#[derive(Default)]
pub struct ConnDrain(AtomicU8);

const SERVING: u8 = 0;
const DRAINING: u8 = 1;
/// Upgraded (101): the connection is a tunnel now, and never lingers (its
/// read side belongs to the tunnel).
const UPGRADED: u8 = 2;

impl ConnDrain {
    /// The phase moved to drain; false if the connection is a tunnel already.
    pub fn start(&self) -> bool {
        self.0
            .compare_exchange(SERVING, DRAINING, Relaxed, Relaxed)
            .is_ok()
    }

    /// Whether the response being written is to close the connection.
    pub fn draining(&self) -> bool {
        self.0.load(Relaxed) == DRAINING
    }

    /// The connection switched protocols.
    pub fn upgraded(&self) {
        self.0.store(UPGRADED, Relaxed);
    }
}

/// A hyper-served socket that, once its connection drains, lingers when
/// hyper shuts it down ([`linger`]'s reasons): hyper closes a connection
/// with `poll_shutdown` and then drops the socket (HTTP/1 after a
/// `Connection: close` response, HTTP/2 after its last GOAWAY).
pub struct Lingering<IO> {
    io: IO,
    drain: Arc<ConnDrain>,
    /// Armed at the shutdown, once the write side is shut.
    until: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> Lingering<IO> {
    pub fn new(io: IO, drain: Arc<ConnDrain>) -> Self {
        Self {
            io,
            drain,
            until: None,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Lingering<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.until.is_none() {
            ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            if !this.drain.draining() {
                return Poll::Ready(Ok(()));
            }
            this.until = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let mut scratch = [0u8; 512];
        loop {
            if this
                .until
                .as_mut()
                .is_some_and(|u| u.as_mut().poll(cx).is_ready())
            {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match ready!(Pin::new(&mut this.io).poll_read(cx, &mut buf)) {
                Ok(()) if !buf.filled().is_empty() => continue,
                // The client's end, or an error: nothing is left to read.
                _ => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// Waits until `open()` (the connections of the drained groups) is zero or
/// `deadline` passes, and returns how many were left open then: those the
/// caller closes by force.
pub async fn settle(open: impl Fn() -> i64, deadline: tokio::time::Instant) -> u64 {
    // A gauge, not an event: checked every 20 ms, a delay no client sees.
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        let left = open().max(0) as u64;
        if left == 0 || tokio::time::Instant::now() >= deadline {
            return left;
        }
    }
}

#[cfg(test)]
mod tests;
