//! HTTP/1.1 client connections served without hyper while their requests
//! carry no body: read a head, route and act, write the response, repeat.
//!
//! Keep-alive GETs are most of a balancer's traffic, and hyper's server
//! machinery (dispatcher, request and response conversions, a date cache
//! checked on every poll) cost about as much CPU as everything else in
//! user space. The first request that is anything else — a body, an
//! upgrade, `Expect`, HTTP/1.0 or HTTP/2's preface, a head the parser
//! refuses or one over the limits — hands the connection, with every byte
//! read so far, to hyper for the rest of its life (`Outcome::Handoff`), so
//! hyper still decides every error and every unusual framing.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::AtomicU64;
use std::task::{Context, Waker};

use bytes::BytesMut;
use http::header;
use http::{Method, Request, Response, Uri, Version};
use http_body_util::Either;
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::chunked;
use super::framing::{self, BodyFraming, FramingFields};
use crate::proxy::conn::lifecycle::{self, Phase, PhaseRx};
use crate::proxy::conn::listener::{quiet_for, ConnLimits};
use crate::proxy::conn::rebalance::ConnLoad;
use crate::proxy::errors::{LbError, ProxyBody};
use crate::proxy::h1::guard::REJECT_HEADER;
use crate::proxy::h1::head;
use crate::proxy::headers::{has_token, lists_token};
use crate::proxy::service::{handle, take_raw_fields};
use crate::proxy::upstream::pool::UpstreamBody;

/// How a connection's fast path ended.
pub enum Outcome<IO> {
    /// Closed: by the client, idle, on stop, or after `Connection: close`.
    Closed,
    /// The rest is hyper's: the connection, and what was read off it and
    /// not used.
    Handoff(IO, BytesMut),
    /// Between two requests, with nothing unread: the connection is to move
    /// to this worker ([`crate::proxy::conn::rebalance`]).
    Migrate(IO, usize),
}

/// Response bytes gathered before a write; bodies beyond go out directly.
const COALESCE: usize = 64 * 1024;

/// Serves requests on `io` until it closes, needs hyper or is to move to
/// another worker. On [`Phase::Stop`] an idle connection closes at once; on
/// [`Phase::Drain`] it waits for its next request (one may be on its way),
/// and closes after answering it. `activity` is what the connection's
/// [`crate::proxy::conn::meter::Metered`] socket bumps; `load` counts what it serves;
/// `conn` is what an HTTPS connection's requests carry.
#[allow(clippy::too_many_arguments)]
pub async fn serve<IO>(
    mut io: IO,
    route: &crate::proxy::conn::listener::ConnRoute,
    peer: SocketAddr,
    limits: ConnLimits,
    phase_rx: &mut PhaseRx,
    activity: &AtomicU64,
    load: &mut ConnLoad<'_>,
    conn: Option<&std::sync::Arc<crate::proxy::conn::listener::ConnTls>>,
) -> io::Result<Outcome<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut own_route = route.own();
    // One of each per connection, not per request: timers are not free.
    let mut idle = pin!(quiet_for(activity, limits.idle_timeout));
    // The drain may have been seen already, by an earlier call for this
    // connection (before a move to another worker failed); a stop not seen
    // yet is seen below.
    let mut phase = match *phase_rx.borrow() {
        Phase::Drain => Phase::Drain,
        _ => Phase::Run,
    };
    let mut next_phase = pin!(lifecycle::next(phase_rx));
    loop {
        // Armed only for a head that does not arrive in one read: a timer
        // per request would cost every request.
        let mut head_deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let (req, close) = loop {
            match parse_request(&mut buf, limits) {
                Parsed::Request(req, close) => break (req, close),
                Parsed::Partial if buf.len() <= limits.max_header_bytes => {}
                Parsed::Partial | Parsed::Unusual => {
                    return Ok(Outcome::Handoff(io, buf));
                }
            }
            if !buf.is_empty() && head_deadline.is_none() {
                head_deadline = Some(Box::pin(tokio::time::sleep(limits.request_head_timeout)));
            }
            let n = tokio::select! {
                biased;
                r = read_more(&mut io, &mut buf) => r?,
                p = &mut next_phase, if phase == Phase::Run => {
                    phase = p;
                    if p == Phase::Drain {
                        // A request may be on its way; a head half read
                        // keeps its own deadline.
                        continue;
                    }
                    return Ok(Outcome::Closed);
                }
                _ = &mut idle => return Ok(Outcome::Closed),
                _ = async { head_deadline.as_mut().expect("armed").await }, if head_deadline.is_some() => {
                    head_timed_out(&mut io, &mut out, own_route.load()).await;
                    return Ok(Outcome::Closed);
                }
            };
            if n == 0 {
                return Ok(Outcome::Closed);
            }
        };
        let head_request = req.method() == Method::HEAD;
        let mut req = req;
        if let Some(c) = conn.filter(|c| c.wanted(&own_route.load().ctx)) {
            req.extensions_mut().insert(std::sync::Arc::clone(c));
        }
        // The response lives only in this block, not across the write's
        // await: a local kept over an await takes room in every idle
        // connection's future, moved out or not.
        let (write, close) = {
            // Boxed, like hyper does with a service's future: inline, its
            // 5 KB (see `boxed`) would sit in every connection's future,
            // idle ones included.
            let resp = match boxed(|| handle(own_route.load(), peer, req)).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            if phase == Phase::Run {
                if let Some(p) = poll_now(next_phase.as_mut()) {
                    phase = p;
                }
            }
            let stopping = phase != Phase::Run;
            // The service may end the connection too (a 400 for a malformed head).
            let close = close
                || stopping
                || resp
                    .headers()
                    .get_all(header::CONNECTION)
                    .iter()
                    .any(|v| has_token(v, "close"));
            // Boxed for the same reason as the request's future.
            let write = boxed(|| write_response(&mut io, &mut out, resp, head_request, close));
            (write, close)
        };
        tokio::select! {
            biased;
            r = write => r?,
            // A client that stops reading is let go like an idle one.
            _ = &mut idle => return Ok(Outcome::Closed),
        }
        if close {
            let _ = io.shutdown().await;
            if phase == Phase::Drain {
                lifecycle::linger(&mut io).await;
            }
            return Ok(Outcome::Closed);
        }
        load.served();
        // The response is out and nothing of the next request was read: the
        // moment a connection can change workers.
        if buf.is_empty() {
            if let Some(to) = load.take_move() {
                return Ok(Outcome::Migrate(io, to));
            }
        }
        // An idle connection keeps no large response buffer.
        if out.capacity() > 8 * 1024 {
            out = Vec::new();
        }
    }
}

/// A head that trickled in for longer than `request_head_timeout`: 408,
/// and the connection is closed (as nginx's `client_header_timeout`).
async fn head_timed_out<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    out: &mut Vec<u8>,
    route: &crate::proxy::conn::listener::Route,
) {
    let e = LbError::RequestTimeout;
    route.ctx.metrics.elb_response(e.status());
    if write_response(io, out, e.response(), false, true)
        .await
        .is_ok()
    {
        let _ = io.shutdown().await;
    }
}

/// `make()`'s future, built in a heap block of its own. Written into the
/// block rather than moved there: a future is as large as its largest state
/// (about 5 KB for a request, 4 KB of it `service::forward`'s) however
/// little of it is set at first, and `Box::pin(f)` copies all of it.
fn boxed<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    let mut block = Box::<F>::new_uninit();
    block.write(make());
    // SAFETY: written just above.
    Box::into_pin(unsafe { block.assume_init() })
}

/// `f`'s output if it has completed, without waiting; it must not be
/// polled again once it has.
fn poll_now<F: Future>(f: Pin<&mut F>) -> Option<F::Output> {
    match f.poll(&mut Context::from_waker(Waker::noop())) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

async fn read_more<IO: AsyncRead + Unpin>(io: &mut IO, buf: &mut BytesMut) -> io::Result<usize> {
    // Small at first, so that an idle connection holds little memory.
    buf.reserve(if buf.capacity() == 0 { 1024 } else { 4 * 1024 });
    io.read_buf(buf).await
}

// Returned and matched at once, once per request: boxing the request would
// only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    /// A bodyless request, and whether the client asked to close after it.
    Request(Request<UpstreamBody>, bool),
    Partial,
    /// For hyper: anything the fast path does not serve.
    Unusual,
}

fn parse_request(buf: &mut BytesMut, limits: ConnLimits) -> Parsed {
    let mut fields = head::field_slots();
    let (len, r) = match head::parse_request(buf, &mut fields) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Parsed::Partial,
        Err(_) => return Parsed::Unusual,
    };
    if len > limits.max_header_bytes || r.headers.len() > limits.max_headers || r.version != Some(1)
    {
        return Parsed::Unusual;
    }
    let Some(method) = r.method.and_then(|m| Method::from_bytes(m.as_bytes()).ok()) else {
        return Parsed::Unusual;
    };
    if method == Method::CONNECT {
        return Parsed::Unusual;
    }
    let mut close = false;
    let mut framing = FramingFields::default();
    for f in r.headers.iter() {
        let n = f.name;
        if framing.field(n.as_bytes(), f.value) {
            continue;
        }
        // A protocol switch, or the framing guard's refusal marker: hyper's
        // (and the service's) to judge.
        if n.eq_ignore_ascii_case("upgrade")
            || n.eq_ignore_ascii_case("expect")
            || n.eq_ignore_ascii_case(REJECT_HEADER)
        {
            return Parsed::Unusual;
        }
        if n.eq_ignore_ascii_case("connection") {
            close |= lists_token(f.value, "close");
        }
    }
    // A body in any form, well framed or not, is hyper's to read.
    if framing.request(false) != Ok(BodyFraming::None) {
        return Parsed::Unusual;
    }
    let Some(path) = r.path else {
        return Parsed::Unusual;
    };
    let path_span = (path.as_ptr() as usize - buf.as_ptr() as usize, path.len());
    let mut spans = head::span_slots();
    let spans = head::spans(buf, r.headers, &mut spans);
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(path_span.0..path_span.0 + path_span.1));
    // X-Forwarded-For, -Proto, -Port and X-Request-Id are added.
    let headers = head::header_map(&head, spans, 4);
    let (Ok(uri), Some(headers)) = (uri, headers) else {
        // Rare: the bytes go back in front for hyper to refuse.
        let mut back = BytesMut::with_capacity(head.len() + buf.len());
        back.extend_from_slice(&head);
        back.extend_from_slice(buf);
        *buf = back;
        return Parsed::Unusual;
    };
    let mut req = Request::new(Either::Right(http_body_util::Empty::new()));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Parsed::Request(req, close)
}

async fn write_response<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    out: &mut Vec<u8>,
    resp: Response<ProxyBody>,
    head_request: bool,
    close: bool,
) -> io::Result<()> {
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let h = &parts.headers;
    // The target's fields the balancer did not read, as the target sent them.
    let raw = take_raw_fields(&mut body);
    if let Some(raw) = &raw {
        raw.write_to(out);
    }
    // RFC 9112 §6.3: these responses have no body whatever their fields say;
    // a HEAD response's Content-Length describes what a GET would get.
    let bodyless = framing::response_is_bodyless(status.as_u16(), head_request);
    // The framing and connection fields the balancer writes itself; the
    // response's own ones are skipped. Written straight into the head, not
    // into the map: no value is allocated.
    let length = if bodyless {
        // The balancer's own answer to a HEAD: the length a GET would get.
        body.size_hint()
            .exact()
            .filter(|&n| head_request && n > 0 && !h.contains_key(header::CONTENT_LENGTH))
    } else {
        body.size_hint().exact()
    };
    let is_chunked = !bodyless && length.is_none();
    let mut has_date = raw.as_ref().is_some_and(|r| r.has_date);
    for (name, value) in h.iter() {
        if (!bodyless && (name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING))
            || (close && name == header::CONNECTION)
        {
            continue;
        }
        has_date |= name == header::DATE;
        push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(n) = length {
        push_field(
            out,
            b"content-length",
            itoa::Buffer::new().format(n).as_bytes(),
        );
    }
    if is_chunked {
        push_field(out, b"transfer-encoding", b"chunked");
    }
    if !has_date {
        push_field(out, b"date", crate::clock::http_date_now().as_bytes());
    }
    if close {
        push_field(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    head::recycle(parts.headers);
    if bodyless {
        return io.write_all(out).await;
    }
    while !body.is_end_stream() {
        let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        else {
            break;
        };
        // A target failing mid-body: the client sees the connection end.
        let frame = frame.map_err(io::Error::other)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers are not forwarded
        };
        if data.is_empty() {
            continue;
        }
        if is_chunked {
            chunked::write_size(out, data.len());
        }
        if out.len() + data.len() <= COALESCE {
            out.extend_from_slice(&data);
        } else {
            io.write_all(out).await?;
            out.clear();
            io.write_all(&data).await?;
        }
        if is_chunked {
            out.extend_from_slice(chunked::DATA_END);
        }
        // More may take a while: what the client has so far goes out now.
        if !body.is_end_stream() {
            io.write_all(out).await?;
            out.clear();
        }
    }
    if is_chunked {
        out.extend_from_slice(chunked::LAST_CHUNK);
    }
    if !out.is_empty() {
        io.write_all(out).await?;
    }
    Ok(())
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const LIMITS: ConnLimits = ConnLimits {
        max_header_bytes: 1024,
        max_headers: 16,
        idle_timeout: Duration::from_secs(60),
        request_head_timeout: Duration::from_secs(60),
    };

    fn parse(raw: &str) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(raw.as_bytes());
        (parse_request(&mut buf, LIMITS), buf)
    }

    #[test]
    fn bodyless_requests_are_taken_and_pipelined_ones_stay_queued() {
        let (p, rest) =
            parse("GET /a?b=1 HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n\r\nGET /next HTTP/1.1\r\n");
        let Parsed::Request(req, close) = p else {
            panic!("not taken")
        };
        assert!(!close);
        assert_eq!(req.uri(), "/a?b=1");
        assert_eq!(req.headers()["x-a"], "1");
        assert_eq!(&rest[..], b"GET /next HTTP/1.1\r\n");
        let (p, _) = parse("GET / HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, Close\r\n\r\n");
        assert!(matches!(p, Parsed::Request(_, true)));
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nHost: t\r\n").0,
            Parsed::Partial
        ));
    }

    #[test]
    fn anything_unusual_is_left_whole_for_hyper() {
        for raw in [
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: t\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "CONNECT t:443 HTTP/1.1\r\nHost: t\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: t\r\nx-xalb-framing-rejected: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: t\r\n folded\r\n\r\n",
        ] {
            let (p, rest) = parse(raw);
            assert!(matches!(p, Parsed::Unusual), "{raw:?}");
            assert_eq!(&rest[..], raw.as_bytes(), "bytes kept for hyper: {raw:?}");
        }
        for (raw, why) in [
            (
                format!(
                    "GET / HTTP/1.1\r\nHost: t\r\n{}\r\n",
                    "X-A: 1\r\n".repeat(20)
                ),
                "over max_headers",
            ),
            (
                format!(
                    "GET / HTTP/1.1\r\nHost: t\r\nX-A: {}\r\n\r\n",
                    "a".repeat(2000)
                ),
                "over max_header_bytes",
            ),
        ] {
            assert!(matches!(parse(&raw).0, Parsed::Unusual), "{why}");
        }
    }

    async fn written(resp: Response<ProxyBody>, head: bool, close: bool) -> String {
        let mut io = std::io::Cursor::new(Vec::new());
        let mut out = Vec::new();
        write_response(&mut io, &mut out, resp, head, close)
            .await
            .unwrap();
        String::from_utf8(io.into_inner()).unwrap()
    }

    #[tokio::test]
    async fn responses_are_framed_by_their_body() {
        let ok = || {
            crate::proxy::errors::plain(
                http::StatusCode::OK,
                bytes::Bytes::from("hello"),
                "text/plain",
            )
        };
        let text = written(ok(), false, false).await;
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("content-length: 5\r\n"), "{text}");
        assert!(text.contains("date: "), "{text}");
        assert!(text.ends_with("\r\n\r\nhello"), "{text}");
        // HEAD: the fields a GET would get, no body.
        let text = written(ok(), true, true).await;
        assert!(text.contains("content-length: 5\r\n"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
    }
}
