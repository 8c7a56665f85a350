//! A guard in front of the HTTP/1 parser that refuses ambiguous message
//! framing — the raw material of request smuggling — before any of it can be
//! forwarded.
//!
//! hyper, like RFC 9112, resolves `Content-Length` together with
//! `Transfer-Encoding` by dropping the length; the header map it hands over no
//! longer shows the conflict. The ALB answers 400 instead, and so does xalb: this
//! layer sees each request head as sent, follows the body framing to find the
//! next head ([`super::framing`], [`super::chunked`]), and replaces a head it
//! refuses with a marker request that the service answers with 400 and
//! `Connection: close`; nothing after it is read. Wherever hyper and the
//! chunked decoder could read a body differently the guard ends the body with
//! an error instead of passing the bytes on: the request is refused and its
//! connection closed. A request head that trickles in for longer than
//! `request_head_timeout` is replaced with a marker too, answered 408.
//! HTTP/2 (prior knowledge) passes through untouched, and so does a
//! connection once its protocol has switched (the service says so through
//! [`Switch`], on a 101): a request that merely asks for an upgrade is judged
//! like any other, and so is the next one if the target declines.

use std::fmt;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tokio_util::io::poll_read_buf;

use super::chunked::{ChunkError, Decoder, Step};
use super::framing::{BodyFraming, FramingError, FramingFields};
use super::head;
use crate::proxy::errors::LbError;

/// The header a refused head is replaced with; its value is the reason. A
/// client sending it itself only gets its own request refused.
pub const REJECT_HEADER: &str = "x-xalb-framing-rejected";

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Set by the service when a response switched the connection's protocol
/// (101): from then on the bytes belong to the new protocol and pass
/// through unjudged.
#[derive(Clone, Default)]
pub struct Switch(Arc<AtomicBool>);

impl Switch {
    pub fn switched(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_switched(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Why a head was refused; the marker carries the code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its framing fields could be read two ways (400).
    Framing(FramingError),
    /// Not a framing fault: the head did not arrive in time (408).
    HeadTimeout,
}

impl Refusal {
    #[cfg(test)]
    const ALL: [Refusal; 8] = [
        Refusal::Framing(FramingError::BothLengthAndChunked),
        Refusal::Framing(FramingError::RepeatedContentLength),
        Refusal::Framing(FramingError::ConflictingContentLength),
        Refusal::Framing(FramingError::InvalidContentLength),
        Refusal::Framing(FramingError::RepeatedTransferEncoding),
        Refusal::Framing(FramingError::UnsupportedTransferEncoding),
        Refusal::Framing(FramingError::TransferEncodingInHttp10),
        Refusal::HeadTimeout,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Refusal::Framing(e) => match e {
                FramingError::BothLengthAndChunked => "cl-te",
                FramingError::RepeatedContentLength => "cl-repeated",
                FramingError::ConflictingContentLength => "cl-conflicting",
                FramingError::InvalidContentLength => "cl-invalid",
                FramingError::RepeatedTransferEncoding => "te-repeated",
                FramingError::UnsupportedTransferEncoding => "te-invalid",
                FramingError::TransferEncodingInHttp10 => "te-http10",
            },
            Refusal::HeadTimeout => "head-timeout",
        }
    }

    pub fn from_code(code: &[u8]) -> Option<Self> {
        use FramingError::*;
        let framing = match code {
            b"cl-te" => BothLengthAndChunked,
            b"cl-repeated" => RepeatedContentLength,
            b"cl-conflicting" => ConflictingContentLength,
            b"cl-invalid" => InvalidContentLength,
            b"te-repeated" => RepeatedTransferEncoding,
            b"te-invalid" => UnsupportedTransferEncoding,
            b"te-http10" => TransferEncodingInHttp10,
            b"head-timeout" => return Some(Refusal::HeadTimeout),
            _ => return None,
        };
        Some(Refusal::Framing(framing))
    }

    /// How the service answers the marker: 408 for a head that did not
    /// arrive in time, 400 with the cause for the rest.
    pub fn error(self) -> LbError {
        match self {
            Refusal::HeadTimeout => LbError::RequestTimeout,
            r => LbError::BadRequest(r.cause()),
        }
    }

    /// What the response says.
    pub fn cause(self) -> &'static str {
        match self {
            Refusal::Framing(e) => e.cause(),
            Refusal::HeadTimeout => "the request head did not arrive in time",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.cause())
    }
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Waiting for a complete request head.
    Head,
    /// A body of known length: this many bytes remain.
    Body(u64),
    /// A chunked body, followed by the guard's [`Decoder`].
    Chunked,
    /// No more guarding: HTTP/2, a switched protocol, or a head the parser
    /// will refuse (and then close the connection).
    Passthrough,
    /// A marker was handed over; nothing more is read.
    Refused,
    /// A body's framing was refused: the parser gets what came before it,
    /// then this error, and answers 400.
    Broken(ChunkError),
}

/// Wraps a client connection; see the module documentation.
pub struct FramingGuard<IO> {
    io: IO,
    /// Read from the socket; the first `judged` bytes may go to the parser.
    pending: BytesMut,
    judged: usize,
    state: State,
    /// The current chunked body's decoder.
    chunks: Decoder,
    limits: GuardLimits,
    eof: bool,
    switch: Switch,
    /// Armed while a head is arriving in pieces; boxed so that a
    /// connection whose heads come whole (nearly all) carries no timer.
    head_deadline: Option<Pin<Box<Sleep>>>,
}

/// What the guard holds requests to.
#[derive(Clone, Copy, Debug)]
pub struct GuardLimits {
    /// Past this many bytes without a complete head the parser gets them as
    /// they are (and answers 431).
    pub max_head: usize,
    /// At least the parser's limit, so that every head the parser accepts is
    /// judged here.
    pub max_headers: usize,
    /// A head must arrive whole this long after its first byte.
    pub head_timeout: Duration,
}

impl<IO> FramingGuard<IO> {
    pub fn new(io: IO, limits: GuardLimits, switch: Switch) -> Self {
        Self {
            io,
            pending: BytesMut::new(),
            judged: 0,
            state: State::Head,
            chunks: Decoder::new(limits.max_headers),
            limits,
            eof: false,
            switch,
            head_deadline: None,
        }
    }

    /// A guard over `io` whose first bytes, `read`, were already taken off
    /// it (by the fast path, before it handed the connection over): they are
    /// judged first, as if just read.
    pub fn resume(io: IO, read: BytesMut, limits: GuardLimits, switch: Switch) -> Self {
        let mut guard = Self::new(io, limits, switch);
        guard.pending = read;
        guard.process();
        guard
    }

    /// Judges what it can of `pending` past `judged`.
    fn process(&mut self) {
        while self.judged < self.pending.len() {
            let progressed = match self.state {
                State::Passthrough => {
                    self.judged = self.pending.len();
                    false
                }
                State::Refused | State::Broken(_) => {
                    self.pending.truncate(self.judged);
                    false
                }
                State::Head => self.head(),
                State::Body(n) => {
                    let unjudged = (self.pending.len() - self.judged) as u64;
                    let take = n.min(unjudged) as usize;
                    self.release(take);
                    self.state = if n == take as u64 {
                        State::Head
                    } else {
                        State::Body(n - take as u64)
                    };
                    true
                }
                State::Chunked => match self.chunks.step(&self.pending[self.judged..]) {
                    Ok(Step::Framing(n) | Step::Data(n)) => {
                        self.release(n);
                        true
                    }
                    Ok(Step::End(n)) => {
                        self.release(n);
                        self.state = State::Head;
                        true
                    }
                    Ok(Step::More) => false,
                    Err(e) => {
                        self.break_body(e);
                        return;
                    }
                },
            };
            if !progressed {
                return;
            }
        }
    }

    fn release(&mut self, n: usize) {
        self.judged += n;
    }

    /// Ends the body here: what was judged goes to the parser, then an error.
    fn break_body(&mut self, why: ChunkError) {
        self.pending.truncate(self.judged);
        self.state = State::Broken(why);
    }

    /// Replaces everything unjudged with a marker request carrying
    /// `refusal`; nothing after it is read.
    fn refuse(&mut self, refusal: Refusal) {
        self.pending.truncate(self.judged);
        self.pending.extend_from_slice(
            format!(
                "GET / HTTP/1.1\r\nhost: refused\r\n{REJECT_HEADER}: {}\r\nconnection: close\r\n\r\n",
                refusal.code()
            )
            .as_bytes(),
        );
        self.judged = self.pending.len();
        self.state = State::Refused;
        self.head_deadline = None;
    }

    /// Judges a complete head at the start of `pending`; true if it did.
    fn head(&mut self) -> bool {
        let unjudged = &self.pending[self.judged..];
        if unjudged.is_empty() {
            return false;
        }
        let n = unjudged.len().min(H2_PREFACE.len());
        if unjudged[..n] == H2_PREFACE[..n] {
            if n == H2_PREFACE.len() {
                self.state = State::Passthrough;
                return true;
            }
            return false;
        }
        let mut on_stack = head::field_slots();
        let mut on_heap;
        let slots: &mut [MaybeUninit<httparse::Header<'_>>] =
            if self.limits.max_headers <= on_stack.len() {
                &mut on_stack
            } else {
                on_heap = vec![MaybeUninit::uninit(); self.limits.max_headers];
                &mut on_heap
            };
        let (len, framing) = match head::parse_request(unjudged, slots) {
            Ok(Some((len, req))) => (
                len,
                FramingFields::of(req.headers).request(req.version == Some(0)),
            ),
            Ok(None) => {
                if unjudged.len() > self.limits.max_head {
                    self.state = State::Passthrough;
                    return true;
                }
                return false;
            }
            // Malformed or too many headers: the parser answers it, and
            // closes the connection.
            Err(_) => {
                self.state = State::Passthrough;
                return true;
            }
        };
        self.head_deadline = None;
        // CONNECT is refused (405) and its connection closed, so nothing
        // after it is served.
        match framing {
            Err(e) => self.refuse(Refusal::Framing(e)),
            Ok(framing) => {
                self.release(len);
                self.state = match framing {
                    BodyFraming::Chunked => {
                        self.chunks = Decoder::new(self.limits.max_headers);
                        State::Chunked
                    }
                    BodyFraming::Length(n) if n > 0 => State::Body(n),
                    _ => State::Head,
                };
            }
        }
        true
    }

    /// Whether a head has been arriving for longer than its deadline; arms
    /// the deadline at the first look at a partial head.
    fn head_overdue(&mut self, cx: &mut Context<'_>) -> bool {
        if self.state != State::Head || self.judged == self.pending.len() {
            self.head_deadline = None;
            return false;
        }
        let timeout = self.limits.head_timeout;
        let deadline = self
            .head_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        deadline.as_mut().poll(cx).is_ready()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FramingGuard<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.state != State::Passthrough && this.switch.is_switched() {
            this.state = State::Passthrough;
            this.judged = this.pending.len();
            this.head_deadline = None;
        }
        loop {
            if this.judged > 0 {
                let n = this.judged.min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                this.judged -= n;
                return Poll::Ready(Ok(()));
            }
            if let State::Broken(why) = this.state {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.state == State::Refused {
                // Not EOF: the parser would drop the connection before
                // answering. It closes it itself after the 400
                // (`Connection: close`), so no wake-up is needed.
                return Poll::Pending;
            }
            // Nothing held back: bodies and passthrough bytes go straight
            // into the parser's buffer, as much as the framing says is body.
            if this.pending.is_empty() {
                let limit = match this.state {
                    State::Passthrough => Some(usize::MAX),
                    State::Body(n) => Some(n.min(usize::MAX as u64) as usize),
                    State::Chunked => this
                        .chunks
                        .data_left()
                        .map(|n| n.min(usize::MAX as u64) as usize),
                    _ => None,
                };
                if let Some(limit) = limit {
                    let before = buf.filled().len();
                    let res = if limit >= buf.remaining() {
                        Pin::new(&mut this.io).poll_read(cx, buf)
                    } else {
                        let mut sub = buf.take(limit);
                        let res = Pin::new(&mut this.io).poll_read(cx, &mut sub);
                        let n = sub.filled().len();
                        // SAFETY: the reader initialised `n` bytes of `buf`'s unfilled part.
                        unsafe { buf.assume_init(n) };
                        buf.advance(n);
                        res
                    };
                    let n = buf.filled().len() - before;
                    match this.state {
                        State::Body(left) => {
                            this.state = if left == n as u64 {
                                State::Head
                            } else {
                                State::Body(left - n as u64)
                            }
                        }
                        State::Chunked => this.chunks.data_taken(n as u64),
                        _ => {}
                    }
                    return res;
                }
            }
            // Read into `pending`'s spare room: no zeroing.
            this.pending.reserve(read_room(this.pending.capacity()));
            match poll_read_buf(Pin::new(&mut this.io), cx, &mut this.pending) {
                Poll::Pending => {
                    if this.head_overdue(cx) {
                        this.refuse(Refusal::HeadTimeout);
                        continue;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => {
                    // The peer is done: hand over what is left as it is.
                    this.eof = true;
                    this.judged = this.pending.len();
                }
                Poll::Ready(Ok(_)) => this.process(),
            }
        }
    }
}

/// The room a read reserves in the guard's buffer: small at first, so that
/// an idle connection holds little memory, then 8 KiB a read.
fn read_room(capacity: usize) -> usize {
    if capacity == 0 {
        1024
    } else {
        8 * 1024
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FramingGuard<IO> {
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
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::h1::chunked::{MAX_EXTENSIONS, MAX_TRAILERS};

    /// A peer that sends its bytes a few at a time, so heads and chunk lines
    /// arrive split.
    struct Trickle(Vec<u8>, usize, usize);

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self.2.min(self.0.len() - self.1).min(buf.remaining());
            let start = self.1;
            buf.put_slice(&self.0[start..start + n]);
            self.1 += n;
            Poll::Ready(Ok(()))
        }
    }

    /// Hands out one part a read, whole.
    struct Parts(std::collections::VecDeque<Vec<u8>>);

    impl Parts {
        fn of(parts: &[&[u8]]) -> Self {
            Self(parts.iter().map(|p| p.to_vec()).collect())
        }
    }

    impl AsyncRead for Parts {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(part) = self.0.pop_front() {
                assert!(part.len() <= buf.remaining(), "a part fits a read");
                buf.put_slice(&part);
            }
            Poll::Ready(Ok(()))
        }
    }

    const LIMITS: GuardLimits = GuardLimits {
        max_head: 64 * 1024,
        max_headers: 100,
        head_timeout: Duration::from_secs(60),
    };

    /// Everything the guard yields, and the error it ended with, if any:
    /// read until end of stream, an error, or until it holds back (after a
    /// refusal it never yields more). Small reads, as a parser's may be.
    /// Each read goes into a buffer that already holds a few bytes, as
    /// AsyncRead allows: the guard counts only what it adds.
    fn drain<G: AsyncRead + Unpin>(mut g: G) -> (Vec<u8>, Option<String>) {
        const HELD: &[u8] = b"xyz";
        let mut out = Vec::new();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut chunk = [0u8; 64];
        loop {
            let mut rb = ReadBuf::new(&mut chunk);
            rb.put_slice(HELD);
            match Pin::new(&mut g).poll_read(&mut cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().len() == HELD.len() => return (out, None),
                Poll::Ready(Ok(())) => out.extend_from_slice(&rb.filled()[HELD.len()..]),
                Poll::Ready(Err(e)) => return (out, Some(e.to_string())),
                Poll::Pending => return (out, None),
            }
        }
    }

    /// What the parser behind the guard reads, and the error it gets if the
    /// guard ends a body, with the input in one piece, trickled three bytes
    /// at a time, and partly read before the guard took over (all must
    /// agree).
    fn judged(parts: &[&[u8]]) -> (Vec<u8>, Option<String>) {
        let input = parts.concat();
        let whole = drain(FramingGuard::new(
            std::io::Cursor::new(input.clone()),
            LIMITS,
            Switch::default(),
        ));
        let trickled = drain(FramingGuard::new(
            Trickle(input.clone(), 0, 3),
            LIMITS,
            Switch::default(),
        ));
        assert_eq!(whole, trickled);
        for k in [1, 17, input.len() / 2, input.len()] {
            let k = k.min(input.len());
            let resumed = drain(FramingGuard::resume(
                std::io::Cursor::new(input[k..].to_vec()),
                BytesMut::from(&input[..k]),
                LIMITS,
                Switch::default(),
            ));
            assert_eq!(whole, resumed, "{k} bytes read before");
        }
        whole
    }

    async fn through(parts: &[&[u8]]) -> Vec<u8> {
        judged(parts).0
    }

    fn refused(out: &[u8]) -> Option<String> {
        let s = String::from_utf8_lossy(out);
        s.lines().find_map(|l| {
            l.strip_prefix(&format!("{REJECT_HEADER}: "))
                .map(str::to_string)
        })
    }

    #[tokio::test]
    async fn clean_requests_pass_unchanged_including_pipelined_and_chunked() {
        let input: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
POST /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n\
GET /z HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(through(&[input]).await, input);
    }

    #[tokio::test]
    async fn a_body_that_looks_like_a_smuggled_head_is_just_a_body() {
        let body = b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut input = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        input.extend_from_slice(body);
        assert_eq!(through(&[&input]).await, input);
    }

    #[tokio::test]
    async fn ambiguous_framing_is_replaced_by_a_marker_and_nothing_after_it() {
        let cases: [(&[u8], &str); 7] = [
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n", "cl-te"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n", "cl-te"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd", "cl-repeated"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd", "cl-invalid"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", "te-invalid"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "te-repeated"),
            (b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", "te-http10"),
        ];
        for (input, code) in cases {
            let out = through(&[input]).await;
            assert_eq!(
                refused(&out).as_deref(),
                Some(code),
                "{}",
                String::from_utf8_lossy(input)
            );
            assert!(!String::from_utf8_lossy(&out).contains("smuggled"));
        }
    }

    #[tokio::test]
    async fn the_second_of_two_pipelined_requests_is_judged_too() {
        let input: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
        let out = through(&[input]).await;
        assert!(out.starts_with(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_eq!(refused(&out).as_deref(), Some("cl-repeated"));
    }

    #[tokio::test]
    async fn http2_prior_knowledge_passes_through() {
        let mut input = H2_PREFACE.to_vec();
        input.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(through(&[&input]).await, input);
    }

    #[test]
    fn codes_round_trip() {
        for r in Refusal::ALL {
            assert_eq!(Refusal::from_code(r.code().as_bytes()), Some(r));
        }
    }

    const CHUNKED_HEAD: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    const SMUGGLED: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

    #[test]
    fn chunk_lines_hyper_accepts_pass_unchanged() {
        let ext = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(MAX_EXTENSIONS - 1));
        for body in [
            &b"0005\r\nhello\r\n0\r\n\r\n"[..],
            b"000000000000000000005\r\nhello\r\n00\r\n\r\n",
            b"5 \t;a=b;c\r\nhello\r\n0 ;x\r\n\r\n",
            b"fFfFfFfFfFfFfFf\r\n",
            ext.as_bytes(),
            b"5\r\nhello\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n",
        ] {
            let (out, err) = judged(&[CHUNKED_HEAD, body, SMUGGLED]);
            assert_eq!(err, None, "{}", String::from_utf8_lossy(body));
            let mut expected = [CHUNKED_HEAD, body].concat();
            // A body whose last chunk is still open keeps the next bytes
            // as its data; one that ended lets the next head be judged.
            expected.extend_from_slice(SMUGGLED);
            assert_eq!(out, expected, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn chunk_framing_hyper_could_read_otherwise_ends_the_body_with_an_error() {
        let two_extensions = format!(
            "1;{}\r\na\r\n1;{}\r\nb\r\n0\r\n\r\n",
            "e".repeat(MAX_EXTENSIONS / 2),
            "e".repeat(MAX_EXTENSIONS / 2)
        );
        // Spaces hyper would take; a line this long is refused all the same.
        let long_line = format!("5{}\r\n", " ".repeat(20 * 1024));
        let cases: [(&[u8], &[u8]); 16] = [
            (b"5;a\rb\r\nhello\r\n0\r\n\r\n", b""),
            (
                b"5\r\nhello\r\n0\r\nX: a\rb\r\n\r\n",
                b"5\r\nhello\r\n0\r\n",
            ),
            (b"+5\r\nhello\r\n0\r\n\r\n", b""),
            (b"-5\r\nhello\r\n0\r\n\r\n", b""),
            (b"0x5\r\nhello\r\n0\r\n\r\n", b""),
            (b" 5\r\nhello\r\n0\r\n\r\n", b""),
            (b"1000000000000000\r\n", b""),
            (b"5\nhello\r\n0\r\n\r\n", b""),
            (b"5;ext\nhello\r\n0\r\n\r\n", b""),
            (b"5\r\r\nhello\r\n0\r\n\r\n", b""),
            (b"5 5\r\nhello\r\n0\r\n\r\n", b""),
            (b"5\r\nhello!\r\n0\r\n\r\n", b"5\r\nhello"),
            (
                b"5\r\nhello\r\n0\r\nX: 1\nY: 2\r\n\r\n",
                b"5\r\nhello\r\n0\r\n",
            ),
            (
                b"5\r\nhello\r\n0\r\nX: 1\r\n\n",
                b"5\r\nhello\r\n0\r\nX: 1\r\n",
            ),
            (two_extensions.as_bytes(), b"1;"),
            (long_line.as_bytes(), b""),
        ];
        for (body, passed) in cases {
            let (out, err) = judged(&[CHUNKED_HEAD, body, SMUGGLED]);
            let shown = String::from_utf8_lossy(body);
            assert!(err.is_some(), "not refused: {shown}");
            assert!(
                out.starts_with(CHUNKED_HEAD),
                "the head goes through: {shown}"
            );
            let body_out = &out[CHUNKED_HEAD.len()..];
            assert!(
                body_out.len() <= body.len() && body.starts_with(body_out),
                "only bytes before the fault go on: {shown}"
            );
            assert!(
                body_out.starts_with(passed),
                "what came before the fault goes on: {shown}"
            );
            assert!(
                !String::from_utf8_lossy(&out).contains("smuggled"),
                "{shown}"
            );
        }
    }

    #[test]
    fn the_trailer_section_is_held_to_hypers_limits() {
        let body = |fields: usize, len: usize| {
            let mut b = b"5\r\nhello\r\n0\r\n".to_vec();
            for i in 0..fields {
                // `len` bytes a field, CRLF included.
                let name = format!("X-{i:05}: ");
                b.extend_from_slice(name.as_bytes());
                b.extend(std::iter::repeat_n(b'v', len - name.len() - 2));
                b.extend_from_slice(b"\r\n");
            }
            b.extend_from_slice(b"\r\n");
            b
        };
        // At the limits: 100 fields (max_headers), 16 KiB in all.
        for ok in [body(LIMITS.max_headers, 20), body(4, MAX_TRAILERS / 4)] {
            let (out, err) = judged(&[CHUNKED_HEAD, &ok, SMUGGLED]);
            assert_eq!(err, None);
            assert_eq!(out, [CHUNKED_HEAD, &ok, SMUGGLED].concat());
        }
        // One past either.
        for over in [
            body(LIMITS.max_headers + 1, 20),
            body(4, MAX_TRAILERS / 4 + 1),
        ] {
            let (out, err) = judged(&[CHUNKED_HEAD, &over, SMUGGLED]);
            assert!(err.is_some(), "{} bytes", over.len());
            assert!(!String::from_utf8_lossy(&out).contains("smuggled"));
        }
    }

    #[test]
    fn heads_with_more_fields_than_fit_on_the_stack_are_judged_too() {
        let limits = GuardLimits {
            max_headers: 200,
            ..LIMITS
        };
        let mut head = b"POST / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..150 {
            head.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        head.extend_from_slice(b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
        let (out, _) = drain(FramingGuard::new(
            std::io::Cursor::new(head),
            limits,
            Switch::default(),
        ));
        assert_eq!(refused(&out).as_deref(), Some("cl-te"));
    }

    #[test]
    fn a_partial_head_past_the_size_limit_goes_to_the_parser_as_it_is() {
        // The parser answers 431; nothing is held back waiting for more.
        let limits = GuardLimits {
            max_head: 64,
            ..LIMITS
        };
        for len in [65, 200] {
            let mut head = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
            head.resize(len, b'a');
            let (out, err) = drain(FramingGuard::new(
                Trickle(head.clone(), 0, 1),
                limits,
                Switch::default(),
            ));
            assert_eq!((out, err), (head, None));
        }
    }

    #[tokio::test]
    async fn a_partial_head_at_the_size_limit_is_held_for_more() {
        use tokio::io::AsyncWriteExt;
        let limits = GuardLimits {
            max_head: 64,
            ..LIMITS
        };
        for (len, held) in [(64, true), (65, false)] {
            let (mut client, server) = tokio::io::duplex(4096);
            let mut g = FramingGuard::new(server, limits, Switch::default());
            let mut head = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
            head.resize(len, b'a');
            client.write_all(&head).await.unwrap();
            let (out, _) = drain(&mut g);
            assert_eq!(out.is_empty(), held, "{len} bytes");
        }
    }

    #[test]
    fn bodies_read_straight_through_keep_the_framing() {
        // Each head is read whole before its body: the body then goes
        // straight from the socket to the parser, and the guard must still
        // know where the next head starts.
        let parts: Vec<&[u8]> = vec![
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\n",
            b"abc",
            b"def",
            CHUNKED_HEAD,
            b"3\r\nabc\r\n",
            b"0\r\n\r\n",
            b"GET /last HTTP/1.1\r\nHost: a\r\n\r\n",
            SMUGGLED,
        ];
        let g = FramingGuard::new(Parts::of(&parts), LIMITS, Switch::default());
        assert_eq!(drain(g), (parts.concat(), None));
        // The same with a smuggled head where a body's bytes end.
        let parts: [&[u8]; 3] = [
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n",
            b"abc",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ];
        let g = FramingGuard::new(Parts::of(&parts), LIMITS, Switch::default());
        let (out, _) = drain(g);
        assert!(refused(&out).is_some(), "{}", String::from_utf8_lossy(&out));
    }

    #[test]
    fn a_connection_reads_1_kib_first_then_8() {
        assert_eq!(read_room(0), 1024);
        assert_eq!(read_room(1024), 8192);
    }

    /// A writer that notes what it was asked to do.
    #[derive(Default)]
    struct Noting {
        vectored: bool,
        written: Vec<u8>,
        flushes: usize,
        shut: bool,
    }

    impl AsyncRead for Noting {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Noting {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn is_write_vectored(&self) -> bool {
            self.vectored
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn writes_flushes_and_shutdowns_reach_the_connection() {
        use tokio::io::AsyncWriteExt;
        for vectored in [false, true] {
            let io = Noting {
                vectored,
                ..Noting::default()
            };
            let mut g = FramingGuard::new(io, LIMITS, Switch::default());
            assert_eq!(g.is_write_vectored(), vectored);
            g.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
            let n = g
                .write_vectored(&[io::IoSlice::new(b"a"), io::IoSlice::new(b"b")])
                .await
                .unwrap();
            assert_eq!(n, 1, "the connection wrote the first slice");
            g.flush().await.unwrap();
            g.shutdown().await.unwrap();
            let io = &g.io;
            assert_eq!(io.written, b"HTTP/1.1 200 OK\r\na");
            assert!(io.flushes >= 1 && io.shut);
        }
    }

    #[test]
    fn every_refusal_says_why() {
        let causes: Vec<&str> = Refusal::ALL.iter().map(|r| r.cause()).collect();
        for (r, cause) in Refusal::ALL.iter().zip(&causes) {
            assert!(cause.len() > 10, "{r:?}");
            assert_eq!(causes.iter().filter(|c| *c == cause).count(), 1, "{r:?}");
        }
        assert!(Refusal::Framing(FramingError::BothLengthAndChunked)
            .cause()
            .contains("both Content-Length and Transfer-Encoding"));
        assert!(Refusal::HeadTimeout.cause().contains("in time"));
        // The log prints a refusal as its cause.
        for r in Refusal::ALL {
            assert_eq!(r.to_string(), r.cause());
        }
    }

    #[test]
    fn the_request_after_a_body_with_trailers_is_judged() {
        let input = [
            CHUNKED_HEAD,
            b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        ];
        let out = judged(&input).0;
        assert!(out.starts_with(&input[..2].concat()));
        assert_eq!(refused(&out).as_deref(), Some("cl-repeated"));
    }

    #[test]
    fn a_request_that_only_asks_for_an_upgrade_does_not_end_the_judging() {
        for upgrade in [
            &b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: upgrade, http2-settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        ] {
            let out = judged(&[
                upgrade,
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                SMUGGLED,
            ])
            .0;
            assert!(out.starts_with(upgrade));
            assert_eq!(refused(&out).as_deref(), Some("cl-te"));
            assert!(!String::from_utf8_lossy(&out).contains("smuggled"));
        }
    }

    /// Longer than any passing run waits for bytes the guard should let
    /// through, and shorter than `LIMITS.head_timeout`, whose marker would
    /// otherwise release what the guard holds.
    const PATIENCE: Duration = Duration::from_secs(30);

    /// Reads off `g` until `expected.len()` bytes came, and compares. The
    /// peer stays open, so no end of stream releases anything: the bytes
    /// arrive because the guard let them through, or the wait fails.
    async fn arrives<G: AsyncRead + Unpin>(g: &mut G, expected: &[u8]) {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while got.len() < expected.len() {
            let n = tokio::time::timeout(PATIENCE, g.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("held back after {:?}", String::from_utf8_lossy(&got)))
                .unwrap();
            assert!(n > 0, "end of stream with the peer open");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected)
        );
    }

    /// Whether `g` has nothing to give now (a read would wait).
    fn holds<G: AsyncRead + Unpin>(g: &mut G) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut buf = [0u8; 64];
        let mut rb = ReadBuf::new(&mut buf);
        Pin::new(g).poll_read(&mut cx, &mut rb).is_pending()
    }

    #[tokio::test]
    async fn once_the_protocol_switched_bytes_pass_at_once() {
        use tokio::io::AsyncWriteExt;
        const HEAD: &[u8] =
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        // Tunnel bytes that look like the start of a head, sent after the
        // head (a client waiting for the 101) or with it (one that does not).
        for with_the_head in [false, true] {
            let (mut client, server) = tokio::io::duplex(4096);
            let switch = Switch::default();
            let mut g = FramingGuard::new(server, LIMITS, switch.clone());
            if with_the_head {
                client
                    .write_all(&[HEAD, b"GET /still-a-head"].concat())
                    .await
                    .unwrap();
                arrives(&mut g, HEAD).await;
            } else {
                client.write_all(HEAD).await.unwrap();
                arrives(&mut g, HEAD).await;
                client.write_all(b"GET /still-a-head").await.unwrap();
            }
            // Held while the target may still decline the upgrade...
            assert!(holds(&mut g), "with the head: {with_the_head}");
            // ...and passed on as soon as the protocol has switched, with
            // no end of stream needed.
            switch.switched();
            arrives(&mut g, b"GET /still-a-head").await;
            client.write_all(b"\x81\x05hello").await.unwrap();
            arrives(&mut g, b"\x81\x05hello").await;
            // Tunnel bytes are never judged as requests, however they look.
            let ambiguous = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
            client.write_all(ambiguous).await.unwrap();
            arrives(&mut g, ambiguous).await;
        }
    }

    #[tokio::test]
    async fn no_head_deadline_is_armed_between_requests_or_inside_a_body() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(4096);
        let mut g = FramingGuard::new(server, LIMITS, Switch::default());
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        drain(&mut g);
        assert!(g.head_deadline.is_none(), "idle between requests");
        client
            .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhalf")
            .await
            .unwrap();
        drain(&mut g);
        assert!(g.head_deadline.is_none(), "inside a body");
        client.write_all(b"-body!GET / HT").await.unwrap();
        drain(&mut g);
        assert!(g.head_deadline.is_some(), "a head arriving in pieces");
    }

    #[tokio::test]
    async fn a_head_that_trickles_past_its_deadline_becomes_a_timeout_marker() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(4096);
        let limits = GuardLimits {
            head_timeout: Duration::from_millis(20),
            ..LIMITS
        };
        let mut g = FramingGuard::new(server, limits, Switch::default());
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /slow HTTP/1.1\r\nHo")
            .await
            .unwrap();
        // The complete head goes through; the partial one is held until its
        // deadline, then replaced by the marker.
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        while refused(&out).is_none() {
            let n = g.read(&mut buf).await.unwrap();
            assert!(n > 0, "no end of stream before the marker");
            out.extend_from_slice(&buf[..n]);
        }
        assert!(out.starts_with(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n"));
        assert_eq!(refused(&out).as_deref(), Some("head-timeout"));
        assert!(!String::from_utf8_lossy(&out).contains("/slow"));
    }

    /// A request as a client may frame it: no body, a length, or chunks
    /// with hyper-valid size lines (leading zeros, spaces, extensions) and
    /// trailers.
    fn request() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let chunk = (
            1usize..40,
            0usize..3,
            prop::option::of("[a-z=;\" ]{0,12}"),
            any::<bool>(),
        )
            .prop_map(|(len, zeros, ext, upper)| {
                let size = if upper {
                    format!("{len:X}")
                } else {
                    format!("{len:x}")
                };
                let mut line = format!("{}{size}", "0".repeat(zeros));
                if let Some(ext) = ext {
                    line.push_str(" ;");
                    line.push_str(&ext);
                }
                format!("{line}\r\n{}\r\n", "d".repeat(len))
            });
        let body = prop_oneof![
            Just(String::new()).prop_map(|_| (String::new(), String::new())),
            (0usize..60).prop_map(|n| (format!("Content-Length: {n}\r\n"), "b".repeat(n))),
            (
                prop::collection::vec(chunk, 0..4),
                prop::collection::vec("[A-Za-z-]{1,8}: [a-z0-9 ]{0,8}", 0..3)
            )
                .prop_map(|(chunks, trailers)| {
                    let mut body = chunks.concat();
                    body.push_str("0\r\n");
                    for t in trailers {
                        body.push_str(&t);
                        body.push_str("\r\n");
                    }
                    body.push_str("\r\n");
                    ("Transfer-Encoding: chunked\r\n".to_string(), body)
                }),
        ];
        ("[a-z/]{1,10}", body).prop_map(|(path, (framing, body))| {
            format!("POST /{path} HTTP/1.1\r\nHost: a\r\n{framing}\r\n{body}").into_bytes()
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn valid_requests_pass_unchanged_and_a_smuggled_head_after_them_is_refused(
            requests in proptest::collection::vec(request(), 1..5),
        ) {
            let input = requests.concat();
            proptest::prop_assert_eq!(judged(&[&input]), (input.clone(), None));
            let (out, err) = judged(&[
                &input,
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                SMUGGLED,
            ]);
            proptest::prop_assert_eq!(err, None);
            proptest::prop_assert!(out.starts_with(&input));
            let why = refused(&out);
            proptest::prop_assert_eq!(why.as_deref(), Some("cl-te"));
        }

        #[test]
        fn any_bytes_pass_as_they_are_or_stop_at_a_refusal(
            input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            prefix in request(),
        ) {
            // Behind a valid request, so that the bytes are judged as a head
            // or a body rather than passed to the parser at once.
            let input = [prefix, input].concat();
            let (out, _) = judged(&[&input]);
            let marker = out.windows(REJECT_HEADER.len()).any(|w| w == REJECT_HEADER.as_bytes());
            proptest::prop_assert!(
                input.starts_with(&out) || marker,
                "the guard adds nothing but a marker"
            );
        }
    }
}
