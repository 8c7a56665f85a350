//! A client's request body on its way to a target, watched for how it ends.
//!
//! Two things hang on that end. The response deadline (`idle_timeout`)
//! starts only once the whole request has gone to the target, so a long
//! upload is not cut with a 504. And a body the client breaks (an upload
//! it abandons, chunked framing it gets wrong) fails the attempt at the
//! target as surely as a target fault would: the watch is how the caller
//! tells the two apart, so that no client can fail a target.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::Notify;

/// How a request body ended, as far as the client's side goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEnd {
    /// Still being read from the client.
    Streaming,
    /// Read to its end.
    Complete,
    /// The client closed or reset the connection (or the HTTP/2 stream)
    /// before the body's end.
    Aborted,
    /// The body's framing was invalid (chunk lines, trailers).
    Malformed,
}

impl BodyEnd {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => BodyEnd::Complete,
            2 => BodyEnd::Aborted,
            3 => BodyEnd::Malformed,
            _ => BodyEnd::Streaming,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            BodyEnd::Streaming => 0,
            BodyEnd::Complete => 1,
            BodyEnd::Aborted => 2,
            BodyEnd::Malformed => 3,
        }
    }

    /// Whether the body ended by the client's fault.
    pub fn is_client_fault(self) -> bool {
        matches!(self, BodyEnd::Aborted | BodyEnd::Malformed)
    }
}

/// Shared between the body (which the upstream connection polls) and the
/// request's task.
#[derive(Default)]
pub struct BodyWatch {
    end: AtomicU8,
    ended: Notify,
}

impl BodyWatch {
    pub fn end(&self) -> BodyEnd {
        BodyEnd::from_u8(self.end.load(Ordering::Acquire))
    }

    fn set(&self, end: BodyEnd) {
        // The first end is the one that counts.
        if self
            .end
            .compare_exchange(0, end.as_u8(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.ended.notify_waiters();
        }
    }

    /// Resolves once the body has ended, however it ended.
    pub async fn ended(&self) -> BodyEnd {
        loop {
            let notified = self.ended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let end = self.end();
            if end != BodyEnd::Streaming {
                return end;
            }
            notified.await;
        }
    }
}

/// The client's body as it goes upstream.
pub struct ClientBody {
    inner: Incoming,
    /// `None` for a body that was empty from the start: nothing to watch,
    /// and no allocation for the bodyless requests that are most of them.
    watch: Option<Arc<BodyWatch>>,
}

impl ClientBody {
    pub fn new(inner: Incoming) -> Self {
        let watch = (!inner.is_end_stream()).then(Arc::default);
        Self { inner, watch }
    }

    /// The body's watch, if it has a body to watch.
    pub fn watch(&self) -> Option<Arc<BodyWatch>> {
        self.watch.clone()
    }
}

/// Whether a body error is the client going away (rather than framing it
/// got wrong). hyper hands the cause over as the error's source: the I/O
/// error of the socket or of the framing guard, the end of stream inside a
/// body; an HTTP/2 stream error is the client resetting its stream.
fn classify(e: &hyper::Error) -> BodyEnd {
    use std::error::Error;
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        return BodyEnd::Aborted;
    }
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::NotConnected => BodyEnd::Aborted,
                _ => BodyEnd::Malformed,
            };
        }
        source = s.source();
    }
    if e.is_parse() {
        BodyEnd::Malformed
    } else {
        BodyEnd::Aborted
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(watch) = &this.watch {
            match &polled {
                Poll::Ready(None) => watch.set(BodyEnd::Complete),
                Poll::Ready(Some(Err(e))) => watch.set(classify(e)),
                // The upstream writer may stop polling once the body says
                // it is at its end.
                Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => {
                    watch.set(BodyEnd::Complete)
                }
                _ => {}
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
