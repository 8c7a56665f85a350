//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, outside the
//! workspace), compiled only with the `fuzzing` feature.
//!
//! Each function takes the fuzzer's bytes, drives one piece of the crate's
//! own code with them and asserts what must hold for any input: not only
//! that nothing panics, but that the piece agrees with itself (one piece or
//! split at any point, decoded after encoding) and with a plain reference
//! model written here, so that a logic fault shows up as a crash.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncRead, ReadBuf};

use crate::config::model::{Action, Condition, Config, ListenerProtocol, Rule};
use crate::proxy::h1::chunked::{self, ChunkError, Decoder, Step};
use crate::proxy::h1::framing::{self, BodyFraming, FramingError, FramingFields};
use crate::proxy::h1::guard::{FramingGuard, GuardLimits, Refusal, Switch, REJECT_HEADER};
use crate::proxy::h1::head::{self, Span};
use crate::proxy::h1::raw_fields;
use crate::proxy::headers::HOP_BY_HOP;
use crate::proxy::route::router::{RequestView, Router};
use crate::proxy::route::wildcard::Pattern;

// ---------------------------------------------------------------------------
// HTTP/1 heads.

/// A parsed head, owned, so that parses of different prefixes compare.
#[derive(Debug, PartialEq)]
enum Parsed {
    Partial,
    Error(httparse::Error),
    Complete {
        len: usize,
        /// Method and target, or status code and reason.
        start: (Option<Vec<u8>>, Option<Vec<u8>>),
        version: Option<u8>,
        fields: Vec<(Vec<u8>, Vec<u8>)>,
    },
}

fn owned_fields(fields: &[httparse::Header<'_>]) -> Vec<(Vec<u8>, Vec<u8>)> {
    fields
        .iter()
        .map(|f| (f.name.as_bytes().to_vec(), f.value.to_vec()))
        .collect()
}

fn parsed_request(buf: &[u8]) -> Parsed {
    let mut slots = head::field_slots();
    match head::parse_request(buf, &mut slots) {
        Ok(None) => Parsed::Partial,
        Err(e) => Parsed::Error(e),
        Ok(Some((len, r))) => Parsed::Complete {
            len,
            start: (
                r.method.map(|m| m.as_bytes().to_vec()),
                r.path.map(|p| p.as_bytes().to_vec()),
            ),
            version: r.version,
            fields: owned_fields(r.headers),
        },
    }
}

fn parsed_response(buf: &[u8]) -> Parsed {
    let mut slots = head::field_slots();
    match head::parse_response(buf, &mut slots) {
        Ok(None) => Parsed::Partial,
        Err(e) => Parsed::Error(e),
        Ok(Some((len, r))) => Parsed::Complete {
            len,
            start: (
                r.code.map(|c| c.to_string().into_bytes()),
                r.reason.map(|p| p.as_bytes().to_vec()),
            ),
            version: r.version,
            fields: owned_fields(r.headers),
        },
    }
}

/// Points to cut `len` bytes at: all of them for short inputs, else an even
/// sample and the last few.
fn cut_points(len: usize, all_up_to: usize) -> Vec<usize> {
    if len <= all_up_to {
        return (0..=len).collect();
    }
    let mut points: Vec<usize> = (0..=64).map(|i| i * len / 64).collect();
    points.extend(len.saturating_sub(4)..=len);
    points.sort_unstable();
    points.dedup();
    points
}

/// A head parses the same whatever follows it, and a head cut short is only
/// ever incomplete: the guard and the fast paths parse heads as they arrive,
/// so a head judged in pieces must be judged as it would be whole.
fn check_prefixes(data: &[u8], parse: fn(&[u8]) -> Parsed) -> Parsed {
    let whole = parse(data);
    match &whole {
        Parsed::Complete { len, .. } => {
            let len = *len;
            assert!(len > 0 && len <= data.len());
            assert!(data[..len].ends_with(b"\n"), "a head ends with a line end");
            assert_eq!(parse(&data[..len]), whole, "the head alone parses the same");
            for k in cut_points(len - 1, 300) {
                assert_eq!(parse(&data[..k]), Parsed::Partial, "cut at {k} of {len}");
            }
        }
        Parsed::Partial => {
            for k in cut_points(data.len(), 300) {
                assert_eq!(parse(&data[..k]), Parsed::Partial, "cut at {k}");
            }
        }
        // A cut never completes a head the whole refuses (and by the arms
        // above, no more bytes mend a head refused at a cut).
        Parsed::Error(_) => {
            for k in cut_points(data.len(), 300) {
                let part = parse(&data[..k]);
                assert!(
                    matches!(part, Parsed::Partial | Parsed::Error(_)),
                    "cut at {k}: {part:?}"
                );
            }
        }
    }
    whole
}

/// Where each field's line ends, by the reference: its `\n` after the value.
fn line_end(head: &[u8], span: &Span) -> usize {
    let value = span.value_in(head);
    let value_end = value.as_ptr() as usize - head.as_ptr() as usize + value.len();
    value_end + head[value_end..].iter().position(|&b| b == b'\n').unwrap() + 1
}

/// Spans, lines and the header map of a complete head agree with the fields
/// httparse gave.
fn check_fields(buf: &[u8], len: usize, fields: &[httparse::Header<'_>]) -> Vec<Span> {
    let mut slots = head::span_slots();
    let spans = head::spans(buf, fields, &mut slots).to_vec();
    assert_eq!(spans.len(), fields.len());
    let head = Bytes::copy_from_slice(&buf[..len]);
    for (s, f) in spans.iter().zip(fields) {
        assert_eq!(s.name_in(&head), f.name.as_bytes());
        assert_eq!(s.value_in(&head), f.value);
        let end = line_end(&head, s);
        match s.line(&head) {
            Some((start, stop)) => {
                let line = &head[start as usize..stop as usize];
                assert_eq!(stop as usize, end);
                assert!(line.starts_with(f.name.as_bytes()));
                assert!(line.ends_with(b"\r\n"));
            }
            None => assert_ne!(head[end - 2], b'\r', "a line ending in CRLF has a span"),
        }
    }
    let valid = fields.iter().all(|f| {
        HeaderName::from_bytes(f.name.as_bytes()).is_ok()
            && HeaderValue::from_bytes(f.value).is_ok()
    });
    match head::header_map(&head, &spans, 2) {
        Some(map) => {
            assert!(valid, "a field the http crate refuses got into the map");
            assert_eq!(map.len(), fields.len());
            for f in fields {
                let name = HeaderName::from_bytes(f.name.as_bytes()).unwrap();
                let expected: Vec<&[u8]> = fields
                    .iter()
                    .filter(|g| g.name.eq_ignore_ascii_case(f.name))
                    .map(|g| g.value)
                    .collect();
                let got: Vec<&[u8]> = map.get_all(&name).iter().map(|v| v.as_bytes()).collect();
                assert_eq!(got, expected, "{}", f.name);
            }
            head::recycle(map);
        }
        None => assert!(!valid, "valid fields were refused"),
    }
    spans
}

/// The response fields the balancer passes on as the target's own lines, by
/// the reference: everything but the hop-by-hop fields, Content-Length,
/// Upgrade and Set-Cookie.
fn read_by_the_balancer(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .map(|n| n.as_str())
        .chain(["content-length", "upgrade", "set-cookie"])
        .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}

/// A response's fields split into passed-on lines and map entries lose and
/// add nothing, and are written out as the target sent them.
fn check_raw_fields(head: &Bytes, spans: &[Span]) {
    let mut kept_slots = head::span_slots();
    let passed: Vec<&Span> = spans
        .iter()
        .filter(|s| !read_by_the_balancer(s.name_in(head)))
        .collect();
    let Some((raw, kept)) = raw_fields::split(head, spans, &mut kept_slots) else {
        // Only for a reason the module names.
        let bare_lf = passed.iter().any(|s| s.line(head).is_none());
        let connection_lists_more = spans.iter().any(|s| {
            s.name_in(head).eq_ignore_ascii_case(b"connection")
                && s.value_in(head).split(|&b| b == b',').any(|t| {
                    let t = t.trim_ascii();
                    !(t.is_empty()
                        || t.eq_ignore_ascii_case(b"close")
                        || t.eq_ignore_ascii_case(b"keep-alive"))
                })
        });
        let runs = passed
            .iter()
            .zip(passed.iter().skip(1))
            .filter(|(a, b)| line_end(head, a) != b.line(head).map_or(0, |l| l.0 as usize))
            .count()
            + 1;
        assert!(
            bare_lf || connection_lists_more || runs > 6,
            "a head that could be split was not"
        );
        return;
    };
    let expected_kept: Vec<(&[u8], &[u8])> = spans
        .iter()
        .filter(|s| read_by_the_balancer(s.name_in(head)))
        .map(|s| (s.name_in(head), s.value_in(head)))
        .collect();
    let got_kept: Vec<(&[u8], &[u8])> = kept
        .iter()
        .map(|s| (s.name_in(head), s.value_in(head)))
        .collect();
    assert_eq!(
        got_kept, expected_kept,
        "the fields the balancer reads go to the map"
    );
    assert_eq!(
        raw.has_date,
        passed
            .iter()
            .any(|s| s.name_in(head).eq_ignore_ascii_case(b"date"))
    );
    let mut written = Vec::new();
    raw.write_to(&mut written);
    let mut lines = Vec::new();
    for s in &passed {
        let (start, end) = s.line(head).expect("passed-on lines end in CRLF");
        lines.extend_from_slice(&head[start as usize..end as usize]);
    }
    assert_eq!(written, lines, "passed-on lines are written as they came");
    // A writer that only knows maps gets the same fields.
    let passed_spans: Vec<Span> = passed.iter().map(|s| **s).collect();
    if let Some(expected) = head::header_map(head, &passed_spans, 0) {
        let mut map = HeaderMap::new();
        raw.into_map(&mut map);
        assert_eq!(map, expected, "passed-on fields moved into a map");
    }
}

/// The HTTP/1 head parser, with the spans, lines, header maps and passed-on
/// fields built on it.
pub fn h1_head(data: &[u8]) {
    if let Parsed::Complete { len, .. } = check_prefixes(data, parsed_request) {
        let mut slots = head::field_slots();
        let (_, r) = head::parse_request(data, &mut slots).unwrap().unwrap();
        check_fields(data, len, r.headers);
    }
    if let Parsed::Complete { len, .. } = check_prefixes(data, parsed_response) {
        let mut slots = head::field_slots();
        let (_, r) = head::parse_response(data, &mut slots).unwrap().unwrap();
        let spans = check_fields(data, len, r.headers);
        check_raw_fields(&Bytes::copy_from_slice(&data[..len]), &spans);
    }
}

// ---------------------------------------------------------------------------
// Body framing.

/// Digits only, within 18 of them: how a request's length must be written.
fn reference_request_length(v: &[u8]) -> Option<u64> {
    let v = framing::trim(v);
    (!v.is_empty() && v.len() <= 18 && v.iter().all(u8::is_ascii_digit))
        .then(|| std::str::from_utf8(v).unwrap().parse().unwrap())
}

/// A request's framing as the module documentation states it: every field
/// read strictly, the first bad one refusing the request, then any second
/// way of framing it refused.
fn reference_request(fields: &[(&[u8], &[u8])], http10: bool) -> Result<BodyFraming, FramingError> {
    let is = |n: &[u8], what: &str| n.eq_ignore_ascii_case(what.as_bytes());
    let lengths: Vec<&[u8]> = fields
        .iter()
        .filter(|(n, _)| is(n, "content-length"))
        .map(|(_, v)| *v)
        .collect();
    let encodings: Vec<&[u8]> = fields
        .iter()
        .filter(|(n, _)| is(n, "transfer-encoding"))
        .map(|(_, v)| *v)
        .collect();
    for (n, v) in fields {
        if is(n, "content-length") && reference_request_length(v).is_none() {
            return Err(FramingError::InvalidContentLength);
        }
        if is(n, "transfer-encoding") && !framing::trim(v).eq_ignore_ascii_case(b"chunked") {
            return Err(FramingError::UnsupportedTransferEncoding);
        }
    }
    match (lengths.as_slice(), encodings.as_slice()) {
        ([], []) => Ok(BodyFraming::None),
        ([_, ..], [_, ..]) => Err(FramingError::BothLengthAndChunked),
        ([_, _, ..], []) => Err(FramingError::RepeatedContentLength),
        ([], [_, _, ..]) => Err(FramingError::RepeatedTransferEncoding),
        ([], [_]) if http10 => Err(FramingError::TransferEncodingInHttp10),
        ([], [_]) => Ok(BodyFraming::Chunked),
        ([v], []) => Ok(BodyFraming::Length(reference_request_length(v).unwrap())),
    }
}

/// A final response's framing by RFC 9112 §6.3.
fn reference_response(
    fields: &[(&[u8], &[u8])],
    status: u16,
    head_request: bool,
) -> Result<BodyFraming, FramingError> {
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(BodyFraming::None);
    }
    let is = |n: &[u8], what: &str| n.eq_ignore_ascii_case(what.as_bytes());
    fn text(v: &[u8]) -> Option<&str> {
        std::str::from_utf8(v)
            .ok()
            .filter(|s| s.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)))
    }
    let lengths: Vec<&[u8]> = fields
        .iter()
        .filter(|(n, _)| is(n, "content-length"))
        .map(|(_, v)| *v)
        .collect();
    if let Some((_, last)) = fields
        .iter()
        .rev()
        .find(|(n, _)| is(n, "transfer-encoding"))
    {
        if !lengths.is_empty() {
            return Err(FramingError::BothLengthAndChunked);
        }
        let chunked = text(last).is_some_and(|t| {
            t.rsplit(',')
                .next()
                .is_some_and(|c| c.trim_matches([' ', '\t']).eq_ignore_ascii_case("chunked"))
        });
        return Ok(if chunked {
            BodyFraming::Chunked
        } else {
            BodyFraming::Close
        });
    }
    let mut length: Option<u64> = None;
    for v in lengths {
        let t = text(v).ok_or(FramingError::InvalidContentLength)?;
        for part in t.split(',') {
            let part = part.trim_matches([' ', '\t']);
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(FramingError::InvalidContentLength);
            }
            let n: u64 = part
                .parse()
                .map_err(|_| FramingError::InvalidContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(FramingError::ConflictingContentLength);
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(BodyFraming::Close, BodyFraming::Length))
}

fn framing_of(fields: &[(&[u8], &[u8])]) -> FramingFields {
    let mut f = FramingFields::default();
    for (n, v) in fields {
        let framing = f.field(n, v);
        assert_eq!(
            framing,
            n.eq_ignore_ascii_case(b"content-length")
                || n.eq_ignore_ascii_case(b"transfer-encoding")
        );
    }
    f
}

const STATUSES: [u16; 12] = [100, 101, 199, 200, 201, 204, 205, 206, 304, 404, 500, 599];

/// The framing decision of one head, for both directions.
fn check_framing(fields: &[(&[u8], &[u8])], http10: bool) {
    let f = framing_of(fields);
    let request = f.request(http10);
    assert_eq!(
        request,
        reference_request(fields, http10),
        "request {fields:?}"
    );
    for status in STATUSES {
        for head_request in [false, true] {
            let response = f.response(status, head_request);
            assert_eq!(
                response,
                reference_response(fields, status, head_request),
                "response {status} {fields:?}"
            );
            if framing::response_is_bodyless(status, head_request) {
                assert_eq!(response, Ok(BodyFraming::None));
                continue;
            }
            // The request reading is the stricter one: what it accepts, a
            // response reader frames the same way.
            match request {
                Ok(BodyFraming::None) => assert_eq!(response, Ok(BodyFraming::Close)),
                Ok(BodyFraming::Close) => panic!("a request read to the close"),
                Ok(framed) => assert_eq!(response, Ok(framed)),
                Err(_) => {}
            }
        }
    }
    // Only the framing fields count, in any case, and in their own order.
    let framing_only: Vec<(&[u8], &[u8])> = fields
        .iter()
        .copied()
        .filter(|(n, _)| {
            n.eq_ignore_ascii_case(b"content-length")
                || n.eq_ignore_ascii_case(b"transfer-encoding")
        })
        .collect();
    let upper: Vec<(Vec<u8>, &[u8])> = framing_only
        .iter()
        .map(|(n, v)| (n.to_ascii_uppercase(), *v))
        .collect();
    let upper: Vec<(&[u8], &[u8])> = upper.iter().map(|(n, v)| (&n[..], *v)).collect();
    for other in [framing_of(&framing_only), framing_of(&upper)] {
        assert_eq!(other.request(http10), request);
        assert_eq!(other.response(200, false), f.response(200, false));
    }
}

const GUARD_LIMITS: GuardLimits = GuardLimits {
    max_head: 64 * 1024,
    max_headers: head::MAX_FIELDS,
    head_timeout: Duration::from_secs(60),
};

/// The body framing decision: one reference model per direction, the two
/// directions consistent with each other, and the smuggling guard refusing
/// exactly the request heads the decision refuses.
pub fn h1_framing(data: &[u8]) {
    let mut slots = head::field_slots();
    if let Ok(Some((len, r))) = head::parse_request(data, &mut slots) {
        let fields: Vec<(&[u8], &[u8])> = r
            .headers
            .iter()
            .map(|f| (f.name.as_bytes(), f.value))
            .collect();
        let http10 = r.version == Some(0);
        check_framing(&fields, http10);
        if !data.starts_with(&H2_PREFACE[..data.len().min(H2_PREFACE.len())]) {
            let decision = FramingFields::of(r.headers).request(http10);
            let (out, _) = drain(
                FramingGuard::new(
                    Pieces::new(&data[..len], &[]),
                    GUARD_LIMITS,
                    Switch::default(),
                ),
                61,
            );
            match decision {
                Ok(_) => assert_eq!(out, &data[..len], "an accepted head passes as it is"),
                Err(e) => assert_eq!(marker_code(&out), Some((0, Refusal::Framing(e)))),
            }
        }
    }
    let mut slots = head::field_slots();
    if let Ok(Some((_, r))) = head::parse_response(data, &mut slots) {
        let fields: Vec<(&[u8], &[u8])> = r
            .headers
            .iter()
            .map(|f| (f.name.as_bytes(), f.value))
            .collect();
        check_framing(&fields, r.version == Some(0));
    }
}

// ---------------------------------------------------------------------------
// Chunked bodies.

#[derive(Debug, PartialEq)]
enum Decoded {
    /// The data, and how many bytes the body took.
    Body(Vec<u8>, usize),
    Refused(ChunkError),
    /// The input ended inside the body.
    CutShort,
}

/// Decodes the chunked body at the front of `raw`, the input growing by the
/// next of `pieces` whenever the decoder asks for more; with `bypass`, data
/// is moved past the decoder as the guard does ([`Decoder::data_taken`]).
fn decode(raw: &[u8], pieces: &mut dyn Iterator<Item = usize>, bypass: bool) -> Decoded {
    let mut d = Decoder::new(head::MAX_FIELDS);
    let mut data = Vec::new();
    let (mut at, mut seen) = (0, 0);
    loop {
        if bypass {
            if let Some(left) = d.data_left() {
                if seen > at {
                    let n = left.min((seen - at) as u64) as usize;
                    data.extend_from_slice(&raw[at..at + n]);
                    at += n;
                    d.data_taken(n as u64);
                    continue;
                }
            }
        }
        let input = &raw[at..seen];
        match d.step(input) {
            Err(e) => return Decoded::Refused(e),
            Ok(Step::Framing(n)) => {
                assert!(n > 0 && n <= input.len(), "framing {n} of {}", input.len());
                at += n;
            }
            Ok(Step::Data(n)) => {
                assert!(n > 0 && n <= input.len(), "data {n} of {}", input.len());
                data.extend_from_slice(&raw[at..at + n]);
                at += n;
            }
            Ok(Step::End(n)) => {
                assert!(n > 0 && n <= input.len(), "end {n} of {}", input.len());
                return Decoded::Body(data, at + n);
            }
            Ok(Step::More) if seen == raw.len() => return Decoded::CutShort,
            Ok(Step::More) => {
                let piece = pieces.next().unwrap_or(usize::MAX).max(1);
                seen = seen.saturating_add(piece).min(raw.len());
            }
        }
    }
}

/// A small deterministic generator, seeded by the input, for piece sizes.
struct Rng(u64);

impl Rng {
    fn new(data: &[u8]) -> Self {
        Rng(data.iter().fold(0x9e37_79b9_7f4a_7c15, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        }) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// Any input decodes the same in any pieces, with or without data moved
/// past the decoder.
fn check_decoding(raw: &[u8]) -> Decoded {
    let whole = decode(raw, &mut std::iter::empty(), false);
    for piece in [1, 2, 3, 5, 8, 13, 64, 1000] {
        for bypass in [false, true] {
            let got = decode(raw, &mut std::iter::repeat(piece), bypass);
            assert_eq!(got, whole, "pieces of {piece}, bypass {bypass}");
        }
    }
    let mut rng = Rng::new(raw);
    let mut sizes = std::iter::from_fn(|| Some(1 + rng.below(20)));
    assert_eq!(decode(raw, &mut sizes, true), whole, "random pieces");
    whole
}

/// Reads a chunked body from the fuzzer's bytes: chunk lengths and data, and
/// how each size line is written (leading zeros, case, extensions).
fn encode(data: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut raw = Vec::new();
    let mut plain = Vec::new();
    let mut i = 0;
    while i + 2 <= data.len() {
        let (len, style) = (usize::from(data[i]), data[i + 1]);
        i += 2;
        if len == 0 {
            break;
        }
        let chunk = &data[i..(i + len).min(data.len())];
        i += chunk.len();
        if chunk.is_empty() {
            break;
        }
        let mut line = Vec::new();
        chunked::write_size(&mut line, chunk.len());
        line.truncate(line.len() - 2);
        if style & 1 != 0 {
            line.make_ascii_uppercase();
        }
        raw.extend(std::iter::repeat_n(b'0', usize::from(style >> 1 & 3)));
        raw.extend_from_slice(&line);
        if style & 8 != 0 {
            raw.extend_from_slice(if style & 16 != 0 { b" \t" } else { b"" });
            raw.extend_from_slice(b";ext=\"v\";x");
        }
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(chunked::DATA_END);
        plain.extend_from_slice(chunk);
    }
    // The rest, as trailer field names.
    raw.extend_from_slice(b"0\r\n");
    for name in data[i.min(data.len())..].chunks(7).take(8) {
        if name.iter().all(u8::is_ascii_alphanumeric) && !name.is_empty() {
            raw.extend_from_slice(name);
            raw.extend_from_slice(b": 1\r\n");
        }
    }
    raw.extend_from_slice(b"\r\n");
    (raw, plain)
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for hyper");
}

/// A request carried by hyper: its path and its body (`None` when reading
/// it failed).
type Served = (String, Option<Vec<u8>>);

/// Records that it was woken.
struct Flag(std::sync::atomic::AtomicBool);

impl std::task::Wake for Flag {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What hyper's HTTP/1 server, set up as the daemon's listeners set it up,
/// reads from a connection carrying `input`: driven until it waits for
/// bytes that will not come (the connection is left open: at the end of
/// its input hyper drops what it holds unread).
fn hyper_reads(input: &[u8]) -> Vec<Served> {
    use http_body_util::BodyExt;
    use std::future::Future;
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncWrite;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let log = log.clone();
        async move {
            let path = req.uri().path().to_string();
            let body = req.into_body().collect().await.ok();
            let body = body.map(|b| b.to_bytes().to_vec());
            log.lock().unwrap().push((path, body));
            Ok::<_, std::convert::Infallible>(http::Response::new(
                http_body_util::Empty::<Bytes>::new(),
            ))
        }
    });
    let flag = std::sync::Arc::new(Flag(false.into()));
    let waker = std::task::Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    RUNTIME.with(|rt| {
        let _runtime = rt.enter();
        // Room for all of it, so that one write takes it.
        let (mut client, server) = tokio::io::duplex(input.len().max(1));
        let written = Pin::new(&mut client).poll_write(&mut cx, input);
        assert!(matches!(written, Poll::Ready(Ok(n)) if n == input.len()));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size(GUARD_LIMITS.max_head)
            .max_headers(GUARD_LIMITS.max_headers)
            .keep_alive(true)
            .serve_connection(hyper_util::rt::TokioIo::new(server), service);
        let mut conn = std::pin::pin!(conn);
        let mut answers = [0u8; 4096];
        loop {
            flag.0.store(false, Ordering::Relaxed);
            if conn.as_mut().poll(&mut cx).is_ready() {
                break;
            }
            // Take the answers, so that writing them never waits.
            loop {
                let mut rb = ReadBuf::new(&mut answers);
                match Pin::new(&mut client).poll_read(&mut cx, &mut rb) {
                    Poll::Ready(Ok(())) if !rb.filled().is_empty() => {}
                    _ => break,
                }
            }
            if !flag.0.load(Ordering::Relaxed) {
                break;
            }
        }
    });
    let served = std::mem::take(&mut *seen.lock().unwrap());
    served
}

const CHUNKED_HEAD: &[u8] = b"POST /body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
const NEXT_HEAD: &[u8] = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n";

/// hyper, which reads the bodies behind the guard, reads a body the decoder
/// accepted the same way: the same data, and the next request right after
/// it. Where the two could part, a request would be smuggled past the guard.
fn check_hyper_agrees(body: &[u8], plain: &[u8]) {
    let reads = hyper_reads(&[CHUNKED_HEAD, body, NEXT_HEAD].concat());
    let expected = [
        ("/body".to_string(), Some(plain.to_vec())),
        ("/next".to_string(), Some(Vec::new())),
    ];
    assert_eq!(reads, expected, "hyper reads the body otherwise");
}

/// The chunked decoder: arbitrary bodies decode the same in any pieces;
/// what the encoder writes (with the size lines hyper accepts) decodes back
/// to the data, stopping right at the body's end; and hyper reads every
/// body the decoder accepts the same way.
pub fn h1_chunked(data: &[u8]) {
    if let Decoded::Body(plain, len) = check_decoding(data) {
        assert!(len <= data.len());
        check_hyper_agrees(&data[..len], &plain);
        // Written again canonically, the data reads back.
        let mut raw = Vec::new();
        for c in plain.chunks(100) {
            chunked::write_size(&mut raw, c.len());
            raw.extend_from_slice(c);
            raw.extend_from_slice(chunked::DATA_END);
        }
        raw.extend_from_slice(chunked::LAST_CHUNK);
        assert_eq!(check_decoding(&raw), Decoded::Body(plain, raw.len()));
    }
    let (mut raw, plain) = encode(data);
    let len = raw.len();
    check_hyper_agrees(&raw, &plain);
    raw.extend_from_slice(NEXT_HEAD);
    assert_eq!(check_decoding(&raw), Decoded::Body(plain, len));
}

// ---------------------------------------------------------------------------
// The framing guard.

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A peer whose bytes arrive cut at the given offsets.
struct Pieces<'a> {
    data: &'a [u8],
    at: usize,
    cuts: &'a [usize],
}

impl<'a> Pieces<'a> {
    fn new(data: &'a [u8], cuts: &'a [usize]) -> Self {
        Pieces { data, at: 0, cuts }
    }
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let at = self.at;
        let next = self
            .cuts
            .iter()
            .copied()
            .find(|&c| c > at)
            .unwrap_or(self.data.len())
            .min(self.data.len());
        let n = (next - at).min(buf.remaining());
        buf.put_slice(&self.data[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

/// Everything the guard yields, read `chunk` bytes at a time, and the error
/// it ended with: read until end of stream, an error, or until it holds
/// back (after a refusal it never yields more).
fn drain<G: AsyncRead + Unpin>(mut g: G, chunk: usize) -> (Vec<u8>, Option<String>) {
    let mut out = Vec::new();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut buf = vec![0u8; chunk];
    loop {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut g).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => return (out, None),
            Poll::Ready(Ok(())) => out.extend_from_slice(rb.filled()),
            Poll::Ready(Err(e)) => return (out, Some(e.to_string())),
            Poll::Pending => return (out, None),
        }
    }
}

/// The marker request a refused head is replaced with.
fn marker(refusal: Refusal) -> Vec<u8> {
    format!(
        "GET / HTTP/1.1\r\nhost: refused\r\n{REJECT_HEADER}: {}\r\nconnection: close\r\n\r\n",
        refusal.code()
    )
    .into_bytes()
}

/// Where the marker starts in `out` and what it says, if `out` ends in one.
fn marker_code(out: &[u8]) -> Option<(usize, Refusal)> {
    let tail = b"\r\nconnection: close\r\n\r\n";
    let body = out.strip_suffix(&tail[..])?;
    let prefix = format!("GET / HTTP/1.1\r\nhost: refused\r\n{REJECT_HEADER}: ");
    let start = body
        .windows(prefix.len())
        .rposition(|w| w == prefix.as_bytes())?;
    let refusal = Refusal::from_code(&body[start + prefix.len()..])?;
    Some((start, refusal))
}

fn guard_over(data: &[u8], cuts: &[usize], chunk: usize) -> (Vec<u8>, Option<String>) {
    drain(
        FramingGuard::new(Pieces::new(data, cuts), GUARD_LIMITS, Switch::default()),
        chunk,
    )
}

/// The request-smuggling guard: what it passes on does not depend on how
/// the bytes arrive (whole, cut at any point, in random pieces, partly read
/// before it took over, read out in any sizes); it passes on a prefix of the
/// input, or a prefix and then a marker standing for a head whose framing
/// the decision refuses; and judging its output again changes nothing.
pub fn h1_guard(data: &[u8]) {
    let whole = guard_over(data, &[], 61);
    for k in cut_points(data.len(), 128) {
        assert_eq!(guard_over(data, &[k], 61), whole, "cut at {k}");
    }
    let mut rng = Rng::new(data);
    let mut cuts = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let longest = if rng.below(2) == 0 { 8 } else { 200 };
        at += 1 + rng.below(longest);
        cuts.push(at);
    }
    assert_eq!(guard_over(data, &cuts, 61), whole, "random pieces");
    for chunk in [1, 7, 4096] {
        assert_eq!(
            guard_over(data, &cuts, chunk),
            whole,
            "read {chunk} at a time"
        );
    }
    for k in cut_points(data.len(), 8) {
        let resumed = drain(
            FramingGuard::resume(
                Pieces::new(&data[k..], &[]),
                BytesMut::from(&data[..k]),
                GUARD_LIMITS,
                Switch::default(),
            ),
            61,
        );
        assert_eq!(resumed, whole, "{k} bytes read before the guard");
    }
    let (out, _) = &whole;
    if !data.starts_with(out) {
        let (start, refusal) = marker_code(out).expect("only a marker is added");
        assert!(data.starts_with(&out[..start]));
        assert_eq!(&out[start..], marker(refusal));
        // The head the marker stands for is refused by the framing decision.
        let mut slots = head::field_slots();
        let Ok(Some((_, r))) = head::parse_request(&data[start..], &mut slots) else {
            panic!("a marker stands for a complete head");
        };
        let decision = FramingFields::of(r.headers).request(r.version == Some(0));
        assert_eq!(decision.map_err(Refusal::Framing), Err(refusal));
    }
    assert_eq!(&guard_over(out, &[], 61).0, out, "judged again, the same");
    // hyper, behind the guard, reads the requests the guard judged, each
    // with the body the guard framed, as far as it reads at all (it stops
    // at a head it refuses, or after `Connection: close`).
    let judged = judged_requests(out);
    let reads = hyper_reads(out);
    assert!(
        reads.len() <= judged.len() && reads[..] == judged[..reads.len()],
        "hyper reads {reads:?}, the guard judged {judged:?}"
    );
}

/// The requests in what the guard passed on, framed as the guard frames
/// them, up to the first whose head hyper cannot be served or whose body
/// does not end there (that one without a body: hyper may fail reading it,
/// never read a body there).
fn judged_requests(out: &[u8]) -> Vec<Served> {
    let mut requests = Vec::new();
    let mut at = 0;
    while at < out.len() {
        let mut slots = head::field_slots();
        let Ok(Some((len, r))) = head::parse_request(&out[at..], &mut slots) else {
            break;
        };
        let Ok(framing) = FramingFields::of(r.headers).request(r.version == Some(0)) else {
            break;
        };
        let path = r
            .path
            .and_then(|p| http::Uri::try_from(p).ok())
            .map_or_else(String::new, |u| u.path().to_string());
        at += len;
        let (body, taken) = match framing {
            BodyFraming::None | BodyFraming::Length(0) => (Some(Vec::new()), 0),
            BodyFraming::Length(n) => match usize::try_from(n)
                .ok()
                .and_then(|n| out.get(at..at.checked_add(n)?))
            {
                Some(body) => (Some(body.to_vec()), body.len()),
                None => (None, 0),
            },
            BodyFraming::Chunked => match decode(&out[at..], &mut std::iter::empty(), false) {
                Decoded::Body(data, n) => (Some(data), n),
                _ => (None, 0),
            },
            BodyFraming::Close => unreachable!("a request read to the close"),
        };
        at += taken;
        let ended = body.is_some();
        requests.push((path, body));
        if !ended {
            break;
        }
    }
    requests
}

// ---------------------------------------------------------------------------
// The configuration loader.

/// A directory that does not exist, so relative certificate paths find
/// nothing.
const CONFIG_FILE: &str = "/nonexistent-xalb-fuzz/xalb.toml";

/// The configuration loader: any text loads or is refused the same way
/// twice; every diagnostic points into the text; a configuration that loads
/// compiles to routers and kernel maps.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = crate::config::parse_str(text, CONFIG_FILE);
    let second = crate::config::parse_str(text, CONFIG_FILE);
    match (&first, &second) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("loaded once, refused once"),
    }
    match first {
        Ok(cfg) => {
            let _ = cfg.summary();
            let headers = HeaderMap::new();
            for l in &cfg.listeners {
                if l.protocol == ListenerProtocol::Tcp {
                    continue;
                }
                let router = Router::compile(l);
                let routed = router.route(&RequestView {
                    method: &http::Method::GET,
                    host: Some("example.com"),
                    path: "/",
                    query: Some("a=b"),
                    headers: &headers,
                    source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                });
                let expected = l
                    .rules
                    .iter()
                    .find(|r| r.priority == routed.priority)
                    .map_or(&l.default_action, |r| &r.action);
                assert_eq!(routed.action, expected);
            }
            let _ = crate::kernel::compile(&cfg, &crate::kernel::LbSlots::for_config(&cfg));
        }
        Err(e) => {
            let diagnostics = e.diagnostics();
            assert!(!diagnostics.is_empty(), "a refusal says why");
            let lines: Vec<&str> = text.split('\n').collect();
            for d in diagnostics {
                assert_eq!(d.file, CONFIG_FILE);
                assert!(!d.message.is_empty());
                assert!(d.line >= 1 && d.line <= lines.len(), "{d}");
                let chars = lines[d.line - 1].chars().count();
                assert!(d.column >= 1 && d.column <= chars + 1, "{d}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The router.

/// One listener whose rules use every kind of condition and every shape of
/// wildcard, so that random requests reach each rule.
const ROUTER_CONFIG: &str = r#"
[[security_group]]
name = "web"
ingress = [{ protocol = "tcp", ports = "80", source = "0.0.0.0/0" }]

[[target_group]]
name = "web"
protocol = "HTTP"
port = 80
targets = [{ address = "10.0.1.10" }]

[[load_balancer]]
name = "web-alb"
scheme = "internet-facing"
interfaces = ["eth0"]
addresses = ["10.0.0.10"]
security_groups = ["web"]

[[listener]]
load_balancer = "web-alb"
protocol = "HTTP"
port = 80
default_action = { type = "fixed-response", status_code = "404" }

[[rule]]
listener = "web-alb:80"
priority = 10
conditions = [
  { field = "host-header", values = ["api.example.com", "*.api.example.com"] },
  { field = "path-pattern", values = ["/v?/*", "/exact"] },
]
action = { type = "fixed-response", status_code = "201" }

[[rule]]
listener = "web-alb:80"
priority = 5
conditions = [
  { field = "http-header", name = "X-Env", values = ["canary*", "*beta", "a?c*d\\*"] },
  { field = "http-request-method", values = ["GET", "POST", "PATCH"] },
]
action = { type = "fixed-response", status_code = "202" }

[[rule]]
listener = "web-alb:80"
priority = 20
conditions = [
  { field = "query-string", values = [{ key = "ver*", value = "v?" }, { value = "de*bug" }, { key = "k", value = "*%*" }] },
]
action = { type = "fixed-response", status_code = "203" }

[[rule]]
listener = "web-alb:80"
priority = 30
conditions = [
  { field = "source-ip", values = ["10.0.0.0/8", "2001:db8::/32", "::ffff:192.168.0.0/112", "192.0.2.1/32"] },
  { field = "path-pattern", values = ["*/admin/*", "/e?/*", "/\\?lit", "/a*b*c"] },
]
action = { type = "fixed-response", status_code = "204" }

[[rule]]
listener = "web-alb:80"
priority = 40
conditions = [
  { field = "host-header", values = ["*.EXAMPLE.com", "www.?xample.*", "*-*.net"] },
]
action = { type = "fixed-response", status_code = "205" }

[[rule]]
listener = "web-alb:80"
priority = 50
conditions = [
  { field = "http-header", name = "User-Agent", values = ["*bot*", "?"] },
  { field = "query-string", values = [{ key = "a", value = "*" }, { value = "x*y" }] },
]
action = { type = "fixed-response", status_code = "206" }

[[rule]]
listener = "web-alb:80"
priority = 60
conditions = [
  { field = "http-request-method", values = ["DELETE", "PUT"] },
  { field = "host-header", values = ["*"] },
]
action = { type = "fixed-response", status_code = "207" }

[[rule]]
listener = "web-alb:80"
priority = 70
conditions = [
  { field = "http-header", name = "Cookie", values = ["*session=*"] },
  { field = "source-ip", values = ["::/0", "0.0.0.0/1"] },
]
action = { type = "fixed-response", status_code = "208" }
"#;

thread_local! {
    static ROUTER: (Config, Router) = {
        let cfg = crate::config::parse_str(ROUTER_CONFIG, CONFIG_FILE)
            .unwrap_or_else(|e| panic!("the router's configuration: {e}"));
        let router = Router::compile(&cfg.listeners[0]);
        (cfg, router)
    };
}

/// `?` matches one character: a lead byte and the continuation bytes after
/// it (so invalid UTF-8 still has characters).
fn char_len(s: &[u8], i: usize) -> usize {
    if s[i] < 0x80 {
        return 1;
    }
    1 + s[i + 1..]
        .iter()
        .take(3)
        .take_while(|&&b| b & 0xc0 == 0x80)
        .count()
}

/// ALB wildcards by dynamic programming over the subject's offsets: the
/// offsets the pattern's first tokens can have matched up to.
fn reference_wildcard(pattern: &str, s: &[u8], ci: bool) -> bool {
    enum T {
        Lit(u8),
        One,
        Star,
    }
    let p = pattern.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < p.len() {
        tokens.push(match p[i] {
            b'\\' if matches!(p.get(i + 1), Some(b'*' | b'?')) => {
                i += 1;
                T::Lit(p[i])
            }
            b'*' => T::Star,
            b'?' => T::One,
            b => T::Lit(b),
        });
        i += 1;
    }
    let n = s.len();
    let mut reach = vec![false; n + 1];
    reach[0] = true;
    for t in tokens {
        let mut next = vec![false; n + 1];
        for i in 0..=n {
            match t {
                T::Lit(b) => {
                    let eq = if ci {
                        s.get(i).is_some_and(|c| c.eq_ignore_ascii_case(&b))
                    } else {
                        s.get(i) == Some(&b)
                    };
                    if reach[i] && eq {
                        next[i + 1] = true;
                    }
                }
                T::One => {
                    if reach[i] && i < n {
                        next[i + char_len(s, i)] = true;
                    }
                }
                T::Star => {
                    if reach[i] || next[i] {
                        next[i] = true;
                        if i < n {
                            next[i + char_len(s, i)] = true;
                        }
                    }
                }
            }
        }
        reach = next;
    }
    reach[n]
}

/// Drops a `:port` (digits only) after a name or a bracketed IPv6 literal.
fn reference_strip_port(host: &str) -> &str {
    let end = if host.starts_with('[') {
        host.find(']').map(|i| i + 1)
    } else if host.matches(':').count() == 1 {
        host.find(':')
    } else {
        None
    };
    match end.map(|e| host.split_at(e)) {
        Some((name, port))
            if port
                .strip_prefix(':')
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit())) =>
        {
            name
        }
        _ => host,
    }
}

/// `application/x-www-form-urlencoded`: `+` a space, `%XX` a byte (else a
/// literal `%`), then UTF-8 with replacement characters.
fn reference_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: Option<&u8>| c.and_then(|c| (*c as char).to_digit(16));
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (hex(b.get(i + 1)), hex(b.get(i + 2))) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query's pairs: key, value, and whether it was a bare token.
fn reference_query(q: &str) -> Vec<(String, String, bool)> {
    q.split('&')
        .filter(|item| !item.is_empty())
        .map(|item| match item.find('=') {
            Some(eq) => (
                reference_decode(&item[..eq]),
                reference_decode(&item[eq + 1..]),
                false,
            ),
            None => (reference_decode(item), String::new(), true),
        })
        .collect()
}

fn reference_condition(c: &Condition, req: &RequestView<'_>) -> bool {
    let any = |vs: &[String], s: &[u8], ci: bool| vs.iter().any(|v| reference_wildcard(v, s, ci));
    match c {
        Condition::HttpRequestMethod(vs) => vs.iter().any(|v| v == req.method.as_str()),
        Condition::SourceIp(nets) => {
            let ip = match req.source_ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(req.source_ip, IpAddr::V4),
                v4 => v4,
            };
            nets.iter().any(|n| match (n, ip) {
                (ipnet::IpNet::V6(n), IpAddr::V4(v4)) => {
                    n.prefix_len() >= 96
                        && n.network().to_ipv4_mapped().is_some()
                        && n.contains(&v4.to_ipv6_mapped())
                }
                _ => n.contains(&ip),
            })
        }
        Condition::HostHeader(vs) => req
            .host
            .map(reference_strip_port)
            .filter(|h| !h.is_empty())
            .is_some_and(|h| any(vs, h.as_bytes(), true)),
        Condition::PathPattern(vs) => any(vs, req.path.as_bytes(), false),
        Condition::HttpHeader { name, values } => HeaderName::from_bytes(name.as_bytes())
            .is_ok_and(|n| {
                req.headers
                    .get_all(n)
                    .iter()
                    .any(|v| any(values, v.as_bytes(), true))
            }),
        Condition::QueryString(qs) => {
            let pairs = reference_query(req.query.unwrap_or(""));
            qs.iter().any(|q| {
                pairs.iter().any(|(k, v, bare)| match &q.key {
                    Some(key) => {
                        reference_wildcard(key, k.as_bytes(), true)
                            && reference_wildcard(&q.value, v.as_bytes(), true)
                    }
                    None => {
                        reference_wildcard(&q.value, v.as_bytes(), true)
                            || (*bare && reference_wildcard(&q.value, k.as_bytes(), true))
                    }
                })
            })
        }
    }
}

/// The priority of the first rule, by priority, whose conditions all match;
/// 0 for the default action.
fn reference_route(rules: &[Rule], req: &RequestView<'_>) -> u32 {
    let mut rules: Vec<&Rule> = rules.iter().collect();
    rules.sort_by_key(|r| r.priority);
    rules
        .iter()
        .find(|r| r.conditions.iter().all(|c| reference_condition(c, req)))
        .map_or(0, |r| r.priority)
}

/// Every byte of `s` as `%XX`.
fn percent_encoded(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// A request from the fuzzer's lines: method, Host, target, source address,
/// then header fields.
struct Req {
    method: http::Method,
    host: Option<String>,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    source_ip: IpAddr,
}

impl Req {
    fn from(data: &[u8]) -> Req {
        let mut lines = data.split(|&b| b == b'\n');
        let method = lines
            .next()
            .and_then(|m| http::Method::from_bytes(m).ok())
            .unwrap_or(http::Method::GET);
        let host = lines
            .next()
            .and_then(|h| std::str::from_utf8(h).ok())
            .map(str::to_string);
        let uri = lines
            .next()
            .and_then(|t| http::Uri::try_from(t).ok())
            .unwrap_or_else(|| http::Uri::from_static("/"));
        let source_ip = lines.next().map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |l| {
            std::str::from_utf8(l)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| {
                    let mut v4 = [0u8; 4];
                    for (o, b) in v4.iter_mut().zip(l) {
                        *o = *b;
                    }
                    IpAddr::V4(v4.into())
                })
        });
        let mut headers = HeaderMap::new();
        for line in lines {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(line[..colon].trim_ascii()),
                HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
            ) {
                headers.append(n, v);
            }
        }
        Req {
            method,
            host,
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
            headers,
            source_ip,
        }
    }

    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            host: self.host.as_deref(),
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            source_ip: self.source_ip,
        }
    }
}

/// The router: a random request gets the rule a plain reference evaluation
/// picks (priority order, every condition, wildcards by dynamic
/// programming), and the same rule whatever does not matter to ALB: a port
/// after the host, the case of the host, header values and query, an
/// IPv4 client seen as IPv4-mapped IPv6, a query spelt with percent escapes.
/// The wildcard matcher is also checked on its own against the reference,
/// with the fuzzer's lines as patterns and subjects.
pub fn router(data: &[u8]) {
    ROUTER.with(|(cfg, router)| {
        let listener = &cfg.listeners[0];
        let req = Req::from(data);
        let routed = router.route(&req.view());
        let expected = reference_route(&listener.rules, &req.view());
        assert_eq!(
            routed.priority, expected,
            "the reference picks another rule"
        );
        let action: &Action = match listener.rules.iter().find(|r| r.priority == expected) {
            Some(r) => &r.action,
            None => &listener.default_action,
        };
        assert_eq!(routed.action, action);

        let same = |other: &Req, what: &str| {
            assert_eq!(router.route(&other.view()).priority, expected, "{what}");
        };
        let with = |change: &dyn Fn(&mut Req)| {
            let mut other = Req::from(data);
            change(&mut other);
            other
        };
        if let Some(host) = &req.host {
            let bracketed =
                host.starts_with('[') && host.ends_with(']') && host.matches(']').count() == 1;
            if bracketed || (!host.contains(':') && !host.starts_with('[')) {
                same(&with(&|r| r.host = Some(format!("{host}:8080"))), "a port");
            }
            same(
                &with(&|r| r.host = Some(host.to_ascii_uppercase())),
                "host case",
            );
        }
        same(
            &with(&|r| {
                let mut upper = HeaderMap::new();
                for (n, v) in &r.headers {
                    upper.append(
                        n,
                        HeaderValue::from_bytes(&v.as_bytes().to_ascii_uppercase()).unwrap(),
                    );
                }
                r.headers = upper;
            }),
            "header value case",
        );
        if let Some(q) = &req.query {
            same(
                &with(&|r| r.query = Some(q.to_ascii_uppercase())),
                "query case",
            );
            let encoded: Vec<String> = reference_query(q)
                .iter()
                .map(|(k, v, bare)| {
                    if *bare {
                        percent_encoded(k)
                    } else {
                        format!("{}={}", percent_encoded(k), percent_encoded(v))
                    }
                })
                .collect();
            same(
                &with(&|r| r.query = Some(encoded.join("&"))),
                "query escapes",
            );
        }
        match req.source_ip {
            IpAddr::V4(v4) => same(
                &with(&|r| r.source_ip = IpAddr::V6(v4.to_ipv6_mapped())),
                "mapped IPv4",
            ),
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    same(&with(&|r| r.source_ip = IpAddr::V4(v4)), "unmapped IPv4");
                }
            }
        }
    });
    // The matcher alone: every short line a pattern could be (visible
    // ASCII, as the validator requires) against every line.
    let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').take(8).collect();
    for p in lines.iter().filter(|l| l.len() <= 64) {
        let Some(p) = std::str::from_utf8(p)
            .ok()
            .filter(|p| p.bytes().all(|b| b.is_ascii_graphic()))
        else {
            continue;
        };
        for ci in [false, true] {
            let pattern = Pattern::new(p, ci);
            for s in lines.iter().filter(|l| l.len() <= 256) {
                assert_eq!(
                    pattern.matches_bytes(s),
                    reference_wildcard(p, s, ci),
                    "{p:?} against {:?}, case-insensitive {ci}",
                    String::from_utf8_lossy(s)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The committed corpus (`fuzz/corpus/<target>/`) holds for every entry
    /// point, without the fuzzer.
    #[test]
    fn the_corpus_passes() {
        type Target = fn(&[u8]);
        let targets: [(&str, Target); 6] = [
            ("h1_head", super::h1_head),
            ("h1_framing", super::h1_framing),
            ("h1_chunked", super::h1_chunked),
            ("h1_guard", super::h1_guard),
            ("config", super::config),
            ("router", super::router),
        ];
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        for (name, target) in targets {
            let mut inputs = 0;
            for e in std::fs::read_dir(root.join(name)).unwrap() {
                let path = e.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let run = std::panic::catch_unwind(|| target(&data));
                assert!(run.is_ok(), "{}", path.display());
                inputs += 1;
            }
            assert!(inputs > 0, "no corpus for {name}");
        }
    }
}
