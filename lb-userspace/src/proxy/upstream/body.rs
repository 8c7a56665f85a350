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

use crate::proxy::errors::LbError;

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

    /// The client's answer when the body ended by its fault: 400 either
    /// way (the ALB's for an unfinished body), logged with the cause.
    pub fn client_fault(self) -> Option<LbError> {
        match self {
            BodyEnd::Aborted => Some(LbError::ClientClosed),
            BodyEnd::Malformed => Some(LbError::BadRequest("malformed request body framing")),
            BodyEnd::Streaming | BodyEnd::Complete => None,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;

    /// The body of the one request `bytes` carry, as hyper's server hands
    /// it over, read to its end through [`ClientBody`]: how the watch saw
    /// it end (`None`: nothing to watch), and what `ended` resolved to.
    /// `close` ends the client's side after the bytes.
    async fn body_end(bytes: &'static [u8], close: bool) -> Option<(BodyEnd, BodyEnd)> {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = std::sync::Mutex::new(Some(tx));
        let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let tx = tx.lock().unwrap().take();
            async move {
                // A length the head declares (none for chunked; 0 without one).
                let chunked = req.headers().contains_key(http::header::TRANSFER_ENCODING);
                let declared = (!chunked).then(|| {
                    req.headers()
                        .get(http::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                        .unwrap_or(0)
                });
                let mut body = ClientBody::new(req.into_body());
                // The upstream writer frames the body by these.
                assert_eq!(body.size_hint().exact(), declared);
                assert_eq!(
                    body.is_end_stream(),
                    declared == Some(0) || body.watch().is_none()
                );
                let watch = body.watch();
                while let Some(frame) = body.frame().await {
                    if frame.is_err() {
                        break;
                    }
                }
                let seen = match watch {
                    Some(w) => Some((w.end(), w.ended().await)),
                    None => None,
                };
                if let Some(tx) = tx {
                    let _ = tx.send(seen);
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(
                    http_body_util::Empty::<Bytes>::new(),
                ))
            }
        });
        let server = tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(server), svc),
        );
        client.write_all(bytes).await.unwrap();
        // Unless it is to close, the client stays until the body is judged.
        let open = (!close).then_some(client);
        let seen = rx.await.unwrap();
        drop(open);
        let _ = server.await;
        seen
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_is_complete() {
        let complete = Some((BodyEnd::Complete, BodyEnd::Complete));
        assert_eq!(
            body_end(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", false).await,
            complete
        );
        assert_eq!(
            body_end(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                false
            )
            .await,
            complete
        );
    }

    #[tokio::test]
    async fn a_bodyless_request_has_nothing_to_watch() {
        assert_eq!(body_end(b"GET / HTTP/1.1\r\n\r\n", false).await, None);
        assert_eq!(
            body_end(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", false).await,
            None
        );
    }

    #[tokio::test]
    async fn a_client_that_leaves_mid_body_aborted_it() {
        let aborted = Some((BodyEnd::Aborted, BodyEnd::Aborted));
        assert_eq!(
            body_end(b"POST / HTTP/1.1\r\nContent-Length: 50\r\n\r\nhello", true).await,
            aborted
        );
        assert_eq!(
            body_end(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
                true
            )
            .await,
            aborted
        );
    }

    #[tokio::test]
    async fn chunked_framing_the_client_got_wrong_is_malformed() {
        let malformed = Some((BodyEnd::Malformed, BodyEnd::Malformed));
        for bytes in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello!!\r\n0\r\n\r\n",
        ] {
            assert_eq!(body_end(bytes, false).await, malformed);
        }
    }

    #[test]
    fn client_faults_are_the_aborted_and_malformed_ends() {
        assert_eq!(BodyEnd::Streaming.client_fault(), None);
        assert_eq!(BodyEnd::Complete.client_fault(), None);
        assert_eq!(BodyEnd::Aborted.client_fault(), Some(LbError::ClientClosed));
        assert!(matches!(
            BodyEnd::Malformed.client_fault(),
            Some(LbError::BadRequest(why)) if why.contains("malformed")
        ));
        for end in [
            BodyEnd::Streaming,
            BodyEnd::Complete,
            BodyEnd::Aborted,
            BodyEnd::Malformed,
        ] {
            assert_eq!(BodyEnd::from_u8(end.as_u8()), end);
        }
    }

    #[tokio::test]
    async fn the_first_end_is_the_one_that_counts() {
        let w = BodyWatch::default();
        assert_eq!(w.end(), BodyEnd::Streaming);
        w.set(BodyEnd::Aborted);
        w.set(BodyEnd::Complete);
        assert_eq!(w.ended().await, BodyEnd::Aborted);
    }
}
