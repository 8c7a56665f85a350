//! Header fields parsed by httparse, turned into a `HeaderMap` whose values
//! are slices of the message head's own bytes (no copy per value).

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Header fields per head on the fast paths; a head with more goes to the
/// slower, fully general path (or is refused).
pub const MAX_FIELDS: usize = 128;

/// Where one field's name and value lie in the head.
#[derive(Clone, Copy, Default)]
pub struct Span {
    name: (usize, usize),
    value: (usize, usize),
}

/// Records where `fields` lie relative to `base`, the start of the buffer
/// they were parsed from; returns how many were recorded.
pub fn spans(base: &[u8], fields: &[httparse::Header<'_>], out: &mut [Span; MAX_FIELDS]) -> usize {
    let start = base.as_ptr() as usize;
    for (span, f) in out.iter_mut().zip(fields) {
        span.name = (f.name.as_ptr() as usize - start, f.name.len());
        span.value = (f.value.as_ptr() as usize - start, f.value.len());
    }
    fields.len().min(MAX_FIELDS)
}

/// The fields at `spans` of `head`, in order, with room for `extra` more
/// (the balancer's own, added later without regrowing the map); `None` if
/// one is not a valid field name or value.
pub fn header_map(head: &Bytes, spans: &[Span], extra: usize) -> Option<HeaderMap> {
    let mut headers = SPARE.with(|s| s.borrow_mut().pop()).unwrap_or_default();
    headers.reserve(spans.len() + extra);
    for s in spans {
        let name = HeaderName::from_bytes(&head[s.name.0..s.name.0 + s.name.1]).ok()?;
        let value =
            HeaderValue::from_maybe_shared(head.slice(s.value.0..s.value.0 + s.value.1)).ok()?;
        headers.append(name, value);
    }
    Some(headers)
}

/// Maps kept per thread at most, and the largest capacity kept.
const SPARE_COUNT: usize = 64;
const SPARE_CAPACITY: usize = 64;

thread_local! {
    /// Cleared maps for the next heads parsed on this thread. A proxied
    /// request builds two (its own and its response's), each two
    /// allocations; the fast paths hand them back here when written out.
    static SPARE: std::cell::RefCell<Vec<HeaderMap>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Keeps `map`'s allocation for a later [`header_map`] on this thread; its
/// fields (and the head bytes they share) are let go now.
pub fn recycle(mut map: HeaderMap) {
    if map.capacity() > SPARE_CAPACITY {
        return;
    }
    map.clear();
    SPARE.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SPARE_COUNT {
            s.push(map);
        }
    });
}
