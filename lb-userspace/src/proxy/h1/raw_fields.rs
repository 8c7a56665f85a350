//! A target's response fields that the balancer only passes on, kept as the
//! target's own bytes instead of entries of a `HeaderMap`.
//!
//! Most fields of a response (Server, Date, Content-Type, ETag, ...) are
//! read by no rule of the balancer. Building a map entry for each (a name
//! lookup, a hash, a shared-buffer reference) and writing each back out
//! field by field cost several percent of xalb's CPU on keep-alive GETs.
//! The fields the balancer does read or change (framing, hop-by-hop,
//! Set-Cookie for stickiness) still go into the map; the others stay in the
//! response head as runs of whole lines, and the fast path copies each run
//! out in one piece. Whoever writes the response otherwise (hyper: HTTP/2
//! clients and handed-over connections) moves them into the map first
//! ([`RawFields::into_map`]).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::proxy::h1::head::{Span, SpanSlots};
use crate::proxy::headers::HOP_BY_HOP;

/// Runs of passed-on lines kept per response; a head whose passed-on fields
/// are split into more runs goes into the map whole.
const MAX_RUNS: usize = 6;

/// Fields the balancer reads or changes in a target's response besides the
/// hop-by-hop ones (`headers::HOP_BY_HOP`): framing, Upgrade, and
/// Set-Cookie (app_cookie stickiness follows it).
const ALSO_READ: [HeaderName; 3] = [header::CONTENT_LENGTH, header::UPGRADE, header::SET_COOKIE];

/// Whether the balancer reads or changes a response field called `name`.
fn read_by_the_balancer(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .chain(&ALSO_READ)
        .any(|n| name.eq_ignore_ascii_case(n.as_str().as_bytes()))
}

/// Passed-on field lines of one response head, each run ending in CRLF.
pub struct RawFields {
    head: Bytes,
    runs: [(u32, u32); MAX_RUNS],
    len: usize,
    /// One of them is Date, so the balancer adds none.
    pub has_date: bool,
}

/// `head`'s fields at `spans` split in two: the lines passed on as they are,
/// and the spans the map gets (written into `kept`). `None` when the head
/// must go into the map whole: a bare LF ending a line, a Connection field
/// naming other fields (they are hop-by-hop then, and the map's rules remove
/// them), or passed-on lines in too many pieces.
pub fn split<'k>(
    head: &Bytes,
    spans: &[Span],
    kept: &'k mut SpanSlots,
) -> Option<(RawFields, &'k [Span])> {
    let mut raw = RawFields {
        head: head.clone(),
        runs: [(0, 0); MAX_RUNS],
        len: 0,
        has_date: false,
    };
    let mut count = 0;
    for s in spans {
        let name = s.name_in(head);
        if read_by_the_balancer(name) {
            if name.eq_ignore_ascii_case(b"connection")
                && !only_close_or_keep_alive(s.value_in(head))
            {
                return None;
            }
            kept[count].write(*s);
            count += 1;
            continue;
        }
        raw.has_date |= name.eq_ignore_ascii_case(b"date");
        let (start, end) = s.line(head)?;
        match raw.runs[..raw.len].last_mut() {
            Some(run) if run.1 == start => run.1 = end,
            _ if raw.len == MAX_RUNS => return None,
            _ => {
                raw.runs[raw.len] = (start, end);
                raw.len += 1;
            }
        }
    }
    // SAFETY: the first `count` slots were written above.
    let kept = unsafe { std::slice::from_raw_parts(kept.as_ptr().cast::<Span>(), count) };
    Some((raw, kept))
}

fn only_close_or_keep_alive(value: &[u8]) -> bool {
    value.split(|&b| b == b',').all(|t| {
        let t = t.trim_ascii();
        t.is_empty() || t.eq_ignore_ascii_case(b"close") || t.eq_ignore_ascii_case(b"keep-alive")
    })
}

impl RawFields {
    /// Appends the lines, as the target sent them.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        for &(start, end) in &self.runs[..self.len] {
            out.extend_from_slice(&self.head[start as usize..end as usize]);
        }
    }

    /// Appends the fields to `map`, for a writer that only knows maps.
    pub fn into_map(self, map: &mut HeaderMap) {
        for &(start, end) in &self.runs[..self.len] {
            let run = self.head.slice(start as usize..end as usize);
            // Lines the parser accepted and that end in CRLF (`split`).
            for line in run.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let Some(colon) = line.iter().position(|&b| b == b':') else {
                    continue;
                };
                let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(&line[..colon]),
                    HeaderValue::from_maybe_shared(run.slice_ref(line[colon + 1..].trim_ascii())),
                ) else {
                    continue;
                };
                map.append(name, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::h1::head;

    /// Parses a response head and splits its fields.
    fn split_head(head: &str) -> (Bytes, Vec<Span>, Option<RawFields>) {
        let head = Bytes::from(head.to_string());
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut fields);
        assert!(r.parse(&head).unwrap().is_complete());
        let mut slots = head::span_slots();
        let spans = head::spans(&head, r.headers, &mut slots).to_vec();
        let mut kept = head::span_slots();
        match split(&head, &spans, &mut kept) {
            Some((raw, kept)) => (head.clone(), kept.to_vec(), Some(raw)),
            None => (head.clone(), Vec::new(), None),
        }
    }

    const NGINX: &str = "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 29 Nov 2026 07:00:00 GMT\r\nContent-Type: text/html\r\nContent-Length: 100\r\nLast-Modified: Sat, 28 Nov 2026 08:00:00 GMT\r\nConnection: keep-alive\r\nETag: \"x\"\r\nSet-Cookie: s=1\r\nAccept-Ranges: bytes\r\n\r\n";

    #[test]
    fn fields_the_balancer_reads_go_to_the_map_and_the_rest_pass_as_they_are() {
        let (head, kept, raw) = split_head(NGINX);
        let raw = raw.expect("split");
        let names: Vec<&[u8]> = kept.iter().map(|s| s.name_in(&head)).collect();
        assert_eq!(
            names,
            [&b"Content-Length"[..], b"Connection", b"Set-Cookie"]
        );
        assert!(raw.has_date);
        let mut out = Vec::new();
        raw.write_to(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Server: nginx/1.22.1\r\nDate: Sun, 29 Nov 2026 07:00:00 GMT\r\nContent-Type: text/html\r\n\
             Last-Modified: Sat, 28 Nov 2026 08:00:00 GMT\r\nETag: \"x\"\r\nAccept-Ranges: bytes\r\n"
        );
        // Four runs: the map's fields split the passed-on lines.
        assert_eq!(raw.len, 4);
        let mut map = HeaderMap::new();
        raw.into_map(&mut map);
        assert_eq!(map.len(), 6);
        assert_eq!(map["server"], "nginx/1.22.1");
        assert_eq!(map["etag"], "\"x\"");
        assert_eq!(map["date"], "Sun, 29 Nov 2026 07:00:00 GMT");
    }

    #[test]
    fn heads_that_need_the_map_whole_are_not_split() {
        // Connection naming another field: that field is hop-by-hop.
        let (_, _, raw) =
            split_head("HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n\r\n");
        assert!(raw.is_none());
        // A line ending in a bare LF is not copied as it is.
        let (_, _, raw) = split_head("HTTP/1.1 200 OK\r\nX-A: 1\nX-B: 2\r\n\r\n");
        assert!(raw.is_none());
        // Passed-on lines in more pieces than kept.
        let many = "X-A: 1\r\nContent-Length: 0\r\n".repeat(MAX_RUNS + 1);
        let (_, _, raw) = split_head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"));
        assert!(raw.is_none());
        // Only the framing and connection fields: nothing passed on.
        let (_, kept, raw) =
            split_head("HTTP/1.1 204 No Content\r\nConnection: Keep-Alive, close\r\n\r\n");
        assert_eq!(kept.len(), 1);
        let raw = raw.expect("split");
        assert!(!raw.has_date);
        let mut out = Vec::new();
        raw.write_to(&mut out);
        assert!(out.is_empty());
    }
}
