//! HTTP/1.1 to a plain-HTTP target for a bodyless request, driven in the
//! request's own task: write the head, parse the response head, and stream
//! the response body straight off the socket.
//!
//! Most proxied requests are of this kind (GET, HEAD, ...). hyper's client
//! runs each connection as a separate task fed through channels, which costs
//! several task wake-ups and allocations per request; here the connection is
//! a plain value that moves from the pool into the response body and back.
//! Requests with a body, upgrades and TLS targets still go through hyper
//! ([`crate::proxy::upstream::pool`]), which writes a body while reading an early response.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

use super::chunked::{ChunkError, Decoder, Step};
use super::framing::{BodyFraming, FramingError, FramingFields};
use crate::proxy::h1::head;
use crate::proxy::h1::raw_fields::{self, RawFields};
use crate::proxy::headers::has_token;

/// A response head larger than this is refused (502).
pub const MAX_HEAD: usize = 64 * 1024;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;

/// Where a connection goes back when its response has been read whole.
pub trait Recycle: Send + Sync {
    fn recycle(&self, conn: Conn);
}

/// Why a request failed on a connection.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("writing the request: {0}")]
    Write(io::Error),
    #[error("reading the response: {0}")]
    Read(io::Error),
    /// The target closed the connection before sending a byte.
    #[error("the target closed the connection without answering")]
    Closed,
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    #[error("invalid response: {0}")]
    Framing(#[from] FramingError),
    #[error("invalid response body: {0}")]
    Chunked(#[from] ChunkError),
}

/// One keep-alive connection to a target.
pub struct Conn {
    stream: TcpStream,
    /// Read but not yet consumed.
    buf: BytesMut,
    /// The request head being written; kept to reuse its allocation.
    out: Vec<u8>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            out: Vec::new(),
        }
    }

    /// Ready to wait in a pool: large buffers from a big response are let go.
    pub fn idle(mut self) -> Self {
        if self.buf.capacity() > 2 * READ_CHUNK {
            self.buf = BytesMut::new();
        }
        if self.out.capacity() > 4 * 1024 {
            self.out = Vec::new();
        }
        self
    }

    /// Read bytes no response has taken.
    pub fn has_leftovers(&self) -> bool {
        !self.buf.is_empty()
    }

    /// False when the target closed the idle connection or sent something
    /// unasked: it cannot carry another request.
    pub fn is_reusable(&self) -> bool {
        if self.has_leftovers() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Sends the head of `req` (which has no body) and reads the response
    /// head. The body streams from the returned response; the connection goes
    /// to `pool` once that body has been read to its end.
    pub async fn send<B>(
        mut self,
        req: &Request<B>,
        pool: Arc<dyn Recycle>,
    ) -> Result<Response<ResponseBody>, H1Error> {
        encode_head(req, &mut self.out);
        self.stream
            .write_all(&self.out)
            .await
            .map_err(H1Error::Write)?;
        let head_request = req.method() == Method::HEAD;
        let mut seen_any = false;
        loop {
            let parsed = parse_head(&mut self.buf)?;
            let Some(head) = parsed else {
                if self.buf.len() > MAX_HEAD {
                    return Err(H1Error::Invalid("response head too large"));
                }
                let n = match std::future::poll_fn(|cx| self.poll_fill(cx)).await {
                    Ok(n) => n,
                    // A reset before any answer is the target closing the
                    // connection, as an end of stream would be.
                    Err(e) if !seen_any && self.buf.is_empty() && is_reset(&e) => 0,
                    Err(e) => return Err(H1Error::Read(e)),
                };
                if n == 0 {
                    return Err(if seen_any || !self.buf.is_empty() {
                        H1Error::Invalid("connection closed inside the response head")
                    } else {
                        H1Error::Closed
                    });
                }
                seen_any = true;
                continue;
            };
            // Interim responses (100 Continue, 103 Early Hints) are not
            // forwarded; the final one follows.
            if head.status.is_informational() {
                if head.status == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(H1Error::Invalid("unrequested protocol switch"));
                }
                continue;
            }
            let framing = framing(&head, head_request)?;
            let reusable = head.keep_alive && !matches!(framing, Framing::Close);
            let mut resp = Response::new(ResponseBody {
                conn: Some(self),
                framing,
                pool: reusable.then_some(pool),
                raw: head.raw,
            });
            *resp.status_mut() = head.status;
            *resp.version_mut() = head.version;
            *resp.headers_mut() = head.headers;
            return Ok(resp);
        }
    }

    /// Reads what the socket has into `buf`; 0 at end of stream.
    ///
    /// Through `AsyncRead` rather than `try_read_buf`: tokio forgets the
    /// socket's readiness after a short read, so the next read (and the
    /// reuse probe) does not spend a system call learning it would block.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_CHUNK);
        // Into the spare capacity, without zeroing it.
        poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf)
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// `METHOD path HTTP/1.1`, then every field as it is (hop-by-hop fields were
/// removed by the caller; Host is among the fields).
fn encode_head<B>(req: &Request<B>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

struct Head {
    status: StatusCode,
    version: Version,
    /// The fields the balancer reads, or all of them when `raw` is `None`.
    headers: HeaderMap,
    raw: Option<RawFields>,
    keep_alive: bool,
    framing: FramingFields,
}

/// A complete response head at the front of `buf`, taken off it; `None`
/// when more bytes are needed.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, H1Error> {
    let mut fields = head::field_slots();
    let (len, r) = match head::parse_response(buf, &mut fields) {
        Ok(Some((n, _))) if n > MAX_HEAD => {
            return Err(H1Error::Invalid("response head too large"))
        }
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(H1Error::Invalid("too many header fields"))
        }
        Err(_) => return Err(H1Error::Invalid("malformed response head")),
    };
    let status = r
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(H1Error::Invalid("invalid status code"))?;
    let version = if r.version == Some(1) {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let framing = FramingFields::of(r.headers);
    let mut spans = head::span_slots();
    let spans = head::spans(buf, r.headers, &mut spans);
    let head = buf.split_to(len).freeze();
    let mut kept = head::span_slots();
    let (raw, spans) = match raw_fields::split(&head, spans, &mut kept) {
        Some((raw, kept)) => (Some(raw), kept),
        None => (None, spans),
    };
    // Stickiness cookies and Date may be added.
    let headers =
        head::header_map(&head, spans, 3).ok_or(H1Error::Invalid("invalid header field"))?;
    let keep_alive = version == Version::HTTP_11
        && !headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v, "close"));
    Ok(Some(Head {
        status,
        version,
        headers,
        raw,
        keep_alive,
        framing,
    }))
}

/// How the response body is delimited, and how far it has been read.
#[derive(Debug, Clone)]
enum Framing {
    /// This many bytes left; `Length(0)` once the body has ended.
    Length(u64),
    Chunked(Decoder),
    /// Until the target closes the connection.
    Close,
}

fn framing(head: &Head, head_request: bool) -> Result<Framing, H1Error> {
    Ok(
        match head.framing.response(head.status.as_u16(), head_request)? {
            BodyFraming::None => Framing::Length(0),
            BodyFraming::Length(n) => Framing::Length(n),
            BodyFraming::Chunked => Framing::Chunked(Decoder::new(head::MAX_FIELDS)),
            BodyFraming::Close => Framing::Close,
        },
    )
}

/// A target's response body, read off its connection as the client takes it.
pub struct ResponseBody {
    /// `None` once the body has ended.
    conn: Option<Conn>,
    framing: Framing,
    /// Where the connection goes at the end, if it can be reused.
    pool: Option<Arc<dyn Recycle>>,
    /// The response's fields that are not in its map: whoever writes the
    /// head takes them ([`Self::take_raw_fields`]).
    raw: Option<RawFields>,
}

impl ResponseBody {
    pub fn take_raw_fields(&mut self) -> Option<RawFields> {
        self.raw.take()
    }

    /// The body has ended: the connection goes back to the pool if it can
    /// carry another request, else it is closed.
    fn finish(&mut self) {
        if let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.take()) {
            pool.recycle(conn);
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, H1Error>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut self.framing {
                Framing::Length(0) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(left) => {
                    if !conn.buf.is_empty() {
                        let take = (*left).min(conn.buf.len() as u64);
                        *left -= take;
                        return Poll::Ready(Some(Ok(conn.buf.split_to(take as usize).freeze())));
                    }
                    if ready!(conn.poll_fill(cx)).map_err(H1Error::Read)? == 0 {
                        return Poll::Ready(Some(Err(H1Error::Invalid("body cut short"))));
                    }
                }
                Framing::Close => {
                    if !conn.buf.is_empty() {
                        return Poll::Ready(Some(Ok(conn.buf.split().freeze())));
                    }
                    if ready!(conn.poll_fill(cx)).map_err(H1Error::Read)? == 0 {
                        self.finish();
                        return Poll::Ready(None);
                    }
                }
                Framing::Chunked(decoder) => match decoder.step(&conn.buf)? {
                    Step::Data(n) => return Poll::Ready(Some(Ok(conn.buf.split_to(n).freeze()))),
                    Step::Framing(n) => conn.buf.advance(n),
                    Step::End(n) => {
                        conn.buf.advance(n);
                        self.framing = Framing::Length(0);
                    }
                    Step::More => {
                        if ready!(conn.poll_fill(cx)).map_err(H1Error::Read)? == 0 {
                            return Poll::Ready(Some(Err(H1Error::Invalid(
                                "chunked body cut short",
                            ))));
                        }
                    }
                },
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = self.get_mut();
        match ready!(this.poll_next(cx)) {
            Some(Ok(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Some(Err(e)) => {
                // A connection left mid-body cannot be reused.
                this.pool = None;
                this.conn = None;
                Poll::Ready(Some(Err(e)))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || matches!(self.framing, Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // Whatever the client did not take ends the body where it stands; a
        // body read to its end left the connection already, an unfinished one
        // is closed here (its leftover bytes would poison the next response).
        if matches!(self.framing, Framing::Length(0)) {
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Option<Head>, H1Error> {
        parse_head(&mut BytesMut::from(raw))
    }

    fn frame(raw: &str, head: bool) -> Result<Framing, H1Error> {
        framing(&parse(raw.as_bytes())?.unwrap(), head)
    }

    #[test]
    fn heads_parse_with_their_fields_and_keep_alive() {
        let h = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabc")
            .unwrap()
            .unwrap();
        assert_eq!(h.status, 200);
        assert!(h.keep_alive);
        // Content-Length in the map; X-A, which the balancer only passes on,
        // as it came.
        assert_eq!(h.headers.len(), 1);
        assert_eq!(h.headers["content-length"], "3");
        let mut passed = Vec::new();
        h.raw
            .as_ref()
            .expect("passed-on fields")
            .write_to(&mut passed);
        assert_eq!(passed, b"X-A: b\r\n");
        let h = parse(b"HTTP/1.1 200 OK\r\nConnection: Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h = parse(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap().is_none());
        assert!(parse(b"HTTP/1.1 2x0 OK\r\n\r\n").is_err());
        assert!(parse(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn a_response_head_may_be_max_head_long_and_no_longer() {
        let head = |len: usize| {
            let fixed = "HTTP/1.1 200 OK\r\nX-Pad: \r\n\r\n".len();
            let mut h = format!(
                "HTTP/1.1 200 OK\r\nX-Pad: {}\r\n\r\n",
                "p".repeat(len - fixed)
            );
            assert_eq!(h.len(), len);
            h.push_str("body");
            h
        };
        assert!(parse(head(MAX_HEAD).as_bytes()).unwrap().is_some());
        assert!(matches!(
            parse(head(MAX_HEAD + 1).as_bytes()),
            Err(H1Error::Invalid("response head too large"))
        ));
        assert_eq!(MAX_HEAD, 65536, "the ALB's 64 KiB");
    }

    #[test]
    fn framing_follows_rfc_9112() {
        for (raw, head, framing) in [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                false,
                "length 5",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                true,
                "length 0",
            ),
            ("HTTP/1.1 204 No Content\r\n\r\n", false, "length 0"),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false,
                "length 0",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false,
                "chunked",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                false,
                "close",
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", false, "close"),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\n\r\n",
                false,
                "length 4",
            ),
        ] {
            let got = match frame(raw, head).unwrap() {
                Framing::Length(n) => format!("length {n}"),
                Framing::Chunked(_) => "chunked".to_string(),
                Framing::Close => "close".to_string(),
            };
            assert_eq!(got, framing, "{raw}");
        }
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(frame(bad, false).is_err(), "{bad}");
        }
    }
}
