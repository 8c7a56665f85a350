//! A guard in front of the HTTP/1 parser that refuses ambiguous message
//! framing — the raw material of request smuggling — before any of it can be
//! forwarded.
//!
//! hyper, like RFC 9112, resolves `Content-Length` together with
//! `Transfer-Encoding` by dropping the length; the header map it hands over no
//! longer shows the conflict. The ALB answers 400 instead, and so does xalb: this
//! layer sees each request head as sent, follows the body framing to find the
//! next head, and replaces a head it refuses with a marker request that the
//! service answers with 400 and `Connection: close`; nothing after it is read.
//! HTTP/2 (prior knowledge) and upgraded connections pass through untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The header a refused head is replaced with; its value is the reason. A
/// client sending it itself only gets its own request refused.
pub const REJECT_HEADER: &str = "x-xalb-framing-rejected";

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest chunk-size or trailer line followed before giving up guarding.
const MAX_LINE: usize = 4096;

/// Why a head was refused; the marker carries the code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    BothLengthAndChunked,
    RepeatedContentLength,
    InvalidContentLength,
    RepeatedTransferEncoding,
    UnsupportedTransferEncoding,
    TransferEncodingInHttp10,
}

impl Refusal {
    const ALL: [Refusal; 6] = [
        Refusal::BothLengthAndChunked,
        Refusal::RepeatedContentLength,
        Refusal::InvalidContentLength,
        Refusal::RepeatedTransferEncoding,
        Refusal::UnsupportedTransferEncoding,
        Refusal::TransferEncodingInHttp10,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Refusal::BothLengthAndChunked => "cl-te",
            Refusal::RepeatedContentLength => "cl-repeated",
            Refusal::InvalidContentLength => "cl-invalid",
            Refusal::RepeatedTransferEncoding => "te-repeated",
            Refusal::UnsupportedTransferEncoding => "te-invalid",
            Refusal::TransferEncodingInHttp10 => "te-http10",
        }
    }

    pub fn from_code(code: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code().as_bytes() == code)
    }

    /// What the 400 response says.
    pub fn cause(self) -> &'static str {
        match self {
            Refusal::BothLengthAndChunked => {
                "ambiguous message framing: both Content-Length and Transfer-Encoding"
            }
            Refusal::RepeatedContentLength => "ambiguous message framing: repeated Content-Length",
            Refusal::InvalidContentLength => "invalid Content-Length",
            Refusal::RepeatedTransferEncoding => {
                "ambiguous message framing: repeated Transfer-Encoding"
            }
            Refusal::UnsupportedTransferEncoding => {
                "unsupported Transfer-Encoding (only \"chunked\" is accepted)"
            }
            Refusal::TransferEncodingInHttp10 => "Transfer-Encoding is not allowed in HTTP/1.0",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Waiting for a complete request head.
    Head,
    /// A body of known length: this many bytes remain.
    Body(u64),
    /// Chunked body: expecting a chunk-size line.
    ChunkSize,
    /// Chunk data: this many bytes remain, then CRLF.
    ChunkData(u64),
    ChunkCrlf,
    /// Trailer lines until an empty one.
    Trailers,
    /// No more guarding: HTTP/2, an upgrade, or input the parser will refuse.
    Passthrough,
    /// A marker was handed over; nothing more is read.
    Refused,
}

/// Wraps a client connection; see the module documentation.
pub struct FramingGuard<IO> {
    io: IO,
    /// Read from the socket; the first `judged` bytes may go to the parser.
    pending: BytesMut,
    judged: usize,
    state: State,
    max_head: usize,
    max_headers: usize,
    eof: bool,
}

impl<IO> FramingGuard<IO> {
    /// `max_head`: past this many bytes without a complete head the parser
    /// gets them as they are (and answers 431); `max_headers` must be at least
    /// the parser's limit, so that every head the parser accepts is judged here.
    pub fn new(io: IO, max_head: usize, max_headers: usize) -> Self {
        Self {
            io,
            pending: BytesMut::new(),
            judged: 0,
            state: State::Head,
            max_head,
            max_headers,
            eof: false,
        }
    }

    /// A guard over `io` whose first bytes, `read`, were already taken off
    /// it (by the fast path, before it handed the connection over): they are
    /// judged first, as if just read.
    pub fn resume(io: IO, read: BytesMut, max_head: usize, max_headers: usize) -> Self {
        let mut guard = Self::new(io, max_head, max_headers);
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
                State::Refused => {
                    self.pending.truncate(self.judged);
                    false
                }
                State::Head => self.head(),
                State::Body(n) => {
                    let take = (n.min(self.unjudged().len() as u64)) as usize;
                    self.release(take);
                    self.state = if n == take as u64 {
                        State::Head
                    } else {
                        State::Body(n - take as u64)
                    };
                    true
                }
                State::ChunkSize => match self.line() {
                    Some(len) => {
                        let line = &self.unjudged()[..len];
                        let line = line.strip_suffix(b"\n").unwrap_or(line);
                        let line = line.strip_suffix(b"\r").unwrap_or(line);
                        let size = line.split(|&b| b == b';').next().unwrap_or_default();
                        match parse_hex(size) {
                            Some(0) => self.state = State::Trailers,
                            Some(n) => self.state = State::ChunkData(n),
                            None => self.state = State::Passthrough,
                        }
                        self.release(len);
                        true
                    }
                    None => false,
                },
                State::ChunkData(n) => {
                    let take = (n.min(self.unjudged().len() as u64)) as usize;
                    self.release(take);
                    self.state = if n == take as u64 {
                        State::ChunkCrlf
                    } else {
                        State::ChunkData(n - take as u64)
                    };
                    take > 0
                }
                State::ChunkCrlf => {
                    if self.unjudged().len() < 2 {
                        false
                    } else {
                        if &self.unjudged()[..2] != b"\r\n" {
                            self.state = State::Passthrough;
                        } else {
                            self.state = State::ChunkSize;
                        }
                        self.release(2);
                        true
                    }
                }
                State::Trailers => match self.line() {
                    Some(len) => {
                        if len <= 2
                            && self.unjudged()[..len]
                                .iter()
                                .all(|&b| b == b'\r' || b == b'\n')
                        {
                            self.state = State::Head;
                        }
                        self.release(len);
                        true
                    }
                    None => false,
                },
            };
            if !progressed {
                return;
            }
        }
    }

    /// Bytes read but not judged yet.
    fn unjudged(&self) -> &[u8] {
        &self.pending[self.judged..]
    }

    fn release(&mut self, n: usize) {
        self.judged += n;
    }

    /// Length of the next line including its `\n`, if complete. A line too
    /// long to be a chunk header ends the guarding (the parser refuses it).
    fn line(&mut self) -> Option<usize> {
        match self
            .unjudged()
            .iter()
            .take(MAX_LINE)
            .position(|&b| b == b'\n')
        {
            Some(i) => Some(i + 1),
            None => {
                if self.unjudged().len() >= MAX_LINE {
                    self.state = State::Passthrough;
                }
                None
            }
        }
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
        let mut on_stack = [httparse::EMPTY_HEADER; 128];
        let mut on_heap;
        let headers: &mut [httparse::Header<'_>] = if self.max_headers <= on_stack.len() {
            &mut on_stack
        } else {
            on_heap = vec![httparse::EMPTY_HEADER; self.max_headers];
            &mut on_heap
        };
        let mut req = httparse::Request::new(headers);
        let len = match req.parse(unjudged) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                if unjudged.len() > self.max_head {
                    self.state = State::Passthrough;
                    return true;
                }
                return false;
            }
            // Malformed or too many headers: the parser answers it.
            Err(_) => {
                self.state = State::Passthrough;
                return true;
            }
        };
        match judge(&req) {
            Err(refusal) => {
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
            }
            Ok(next) => {
                self.release(len);
                self.state = next;
            }
        }
        true
    }
}

/// The state after an acceptable head, or why it is refused.
fn judge(req: &httparse::Request<'_, '_>) -> Result<State, Refusal> {
    let mut length: Option<u64> = None;
    let mut lengths = 0;
    let mut chunked = false;
    let mut encodings = 0;
    let mut upgrade = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            length = Some(parse_decimal(h.value).ok_or(Refusal::InvalidContentLength)?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            encodings += 1;
            let v = trim(h.value);
            if !v.eq_ignore_ascii_case(b"chunked") {
                return Err(Refusal::UnsupportedTransferEncoding);
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    if encodings > 0 && lengths > 0 {
        return Err(Refusal::BothLengthAndChunked);
    }
    if lengths > 1 {
        return Err(Refusal::RepeatedContentLength);
    }
    if encodings > 1 {
        return Err(Refusal::RepeatedTransferEncoding);
    }
    if chunked && req.version == Some(0) {
        return Err(Refusal::TransferEncodingInHttp10);
    }
    if upgrade || req.method == Some("CONNECT") {
        // Whatever follows is the upgraded protocol's, or the parser's again
        // if the upgrade is declined; either way no longer ours to follow.
        return Ok(State::Passthrough);
    }
    Ok(match (chunked, length) {
        (true, _) => State::ChunkSize,
        (false, Some(n)) if n > 0 => State::Body(n),
        _ => State::Head,
    })
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &v[start..end]
}

/// Digits only, as RFC 9110 requires: no sign, no spaces inside, no list.
fn parse_decimal(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn parse_hex(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 15 || !v.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(v).ok()?, 16).ok()
}

impl<IO: AsyncRead + Unpin> AsyncRead for FramingGuard<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.judged > 0 {
                let n = this.judged.min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                this.judged -= n;
                return Poll::Ready(Ok(()));
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
                    State::Body(n) | State::ChunkData(n) => Some(n.min(usize::MAX as u64) as usize),
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
                        State::Body(left) if n > 0 => {
                            this.state = if left == n as u64 {
                                State::Head
                            } else {
                                State::Body(left - n as u64)
                            }
                        }
                        State::ChunkData(left) if n > 0 => {
                            this.state = if left == n as u64 {
                                State::ChunkCrlf
                            } else {
                                State::ChunkData(left - n as u64)
                            }
                        }
                        _ => {}
                    }
                    return res;
                }
            }
            // Read into `pending`'s spare room: no zeroing. Small at first,
            // so that an idle connection holds little memory.
            let room = if this.pending.capacity() == 0 {
                1024
            } else {
                8 * 1024
            };
            this.pending.reserve(room);
            let spare = this.pending.spare_capacity_mut();
            let mut rb = ReadBuf::uninit(spare);
            match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        // The peer is done: hand over what is left as it is.
                        this.eof = true;
                        this.judged = this.pending.len();
                    } else {
                        let len = this.pending.len();
                        // SAFETY: the reader initialised `n` bytes of the
                        // spare capacity, right after the current contents.
                        unsafe { this.pending.set_len(len + n) };
                        this.process();
                    }
                }
            }
        }
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
    use tokio::io::AsyncReadExt;

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

    /// What the parser behind the guard reads, with input in one piece and
    /// trickled three bytes at a time (the two must agree).
    async fn through(parts: &[&[u8]]) -> Vec<u8> {
        // After a refusal the guard never yields more (nor EOF): stop waiting.
        let wait = std::time::Duration::from_millis(100);
        let mut whole = Vec::new();
        let mut g = FramingGuard::new(std::io::Cursor::new(parts.concat()), 64 * 1024, 100);
        let _ = tokio::time::timeout(wait, g.read_to_end(&mut whole)).await;
        let mut trickled = Vec::new();
        let mut g = FramingGuard::new(Trickle(parts.concat(), 0, 3), 64 * 1024, 100);
        let _ = tokio::time::timeout(wait, g.read_to_end(&mut trickled)).await;
        assert_eq!(whole, trickled);
        // Bytes read before the guard took over are judged the same way.
        let input = parts.concat();
        for k in [1, 17, input.len() / 2, input.len()] {
            let k = k.min(input.len());
            let read = BytesMut::from(&input[..k]);
            let mut g = FramingGuard::resume(
                std::io::Cursor::new(input[k..].to_vec()),
                read,
                64 * 1024,
                100,
            );
            let mut resumed = Vec::new();
            let _ = tokio::time::timeout(wait, g.read_to_end(&mut resumed)).await;
            assert_eq!(whole, resumed, "{k} bytes read before");
        }
        whole
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
}
