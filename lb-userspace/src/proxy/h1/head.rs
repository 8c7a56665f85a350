//! HTTP/1 message heads: parsed by httparse into uninitialised field slots,
//! then turned into a `HeaderMap` whose values are slices of the head's own
//! bytes (no copy per value). Every HTTP/1 path parses its heads here.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Header fields per head on the fast paths; a head with more goes to the
/// slower, fully general path (or is refused).
pub const MAX_FIELDS: usize = 128;

/// Where one field's name and value lie in the head (offset, length).
#[derive(Clone, Copy)]
pub struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

impl Span {
    pub fn name_in<'h>(&self, head: &'h [u8]) -> &'h [u8] {
        &head[range(self.name)]
    }

    pub fn value_in<'h>(&self, head: &'h [u8]) -> &'h [u8] {
        &head[range(self.value)]
    }

    /// The whole line, from the name to its CRLF included; `None` if it
    /// ends in a bare LF.
    pub fn line(&self, head: &[u8]) -> Option<(u32, u32)> {
        let from = range(self.name).end;
        let lf = from + head[from..].iter().position(|&b| b == b'\n')?;
        (head[lf - 1] == b'\r').then_some((self.name.0, lf as u32 + 1))
    }
}

/// Room for httparse's fields, left uninitialised: writing 4 KB of empty
/// fields before every parse showed in profiles.
pub type FieldSlots<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_FIELDS];
/// Room for [`spans`], uninitialised for the same reason.
pub type SpanSlots = [MaybeUninit<Span>; MAX_FIELDS];

pub const fn field_slots<'b>() -> FieldSlots<'b> {
    [const { MaybeUninit::uninit() }; MAX_FIELDS]
}

pub const fn span_slots() -> SpanSlots {
    [const { MaybeUninit::uninit() }; MAX_FIELDS]
}

/// A request head at the front of `buf`: its length and parts; `None`
/// while it is incomplete. `fields` bounds how many fields it may have.
pub fn parse_request<'h, 'b>(
    buf: &'b [u8],
    fields: &'h mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Option<(usize, httparse::Request<'h, 'b>)>, httparse::Error> {
    let mut r = httparse::Request::new(&mut []);
    Ok(match r.parse_with_uninit_headers(buf, fields)? {
        httparse::Status::Complete(len) => Some((len, r)),
        httparse::Status::Partial => None,
    })
}

/// A response head at the front of `buf`, as [`parse_request`].
pub fn parse_response<'h, 'b>(
    buf: &'b [u8],
    fields: &'h mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Option<(usize, httparse::Response<'h, 'b>)>, httparse::Error> {
    let mut r = httparse::Response::new(&mut []);
    Ok(
        match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut r, buf, fields)?
        {
            httparse::Status::Complete(len) => Some((len, r)),
            httparse::Status::Partial => None,
        },
    )
}

/// Records where `fields` lie relative to `base`, the start of the buffer
/// they were parsed from (a head of at most 4 GiB).
pub fn spans<'s>(
    base: &[u8],
    fields: &[httparse::Header<'_>],
    out: &'s mut SpanSlots,
) -> &'s [Span] {
    let start = base.as_ptr() as usize;
    let offset = |s: &[u8]| ((s.as_ptr() as usize - start) as u32, s.len() as u32);
    let n = fields.len().min(MAX_FIELDS);
    for (slot, f) in out.iter_mut().zip(&fields[..n]) {
        slot.write(Span {
            name: offset(f.name.as_bytes()),
            value: offset(f.value),
        });
    }
    // SAFETY: the first `n` slots were written just above.
    unsafe { std::slice::from_raw_parts(out.as_ptr().cast::<Span>(), n) }
}

/// The fields at `spans` of `head`, in order, with room for `extra` more
/// (the balancer's own, added later without regrowing the map); `None` if
/// one is not a valid field name or value.
pub fn header_map(head: &Bytes, spans: &[Span], extra: usize) -> Option<HeaderMap> {
    let mut headers = SPARE.with(|s| s.borrow_mut().pop()).unwrap_or_default();
    headers.reserve(spans.len() + extra);
    for s in spans {
        let (name, value) = (range(s.name), range(s.value));
        let name = HeaderName::from_bytes(&head[name]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(value)).ok()?;
        headers.append(name, value);
    }
    Some(headers)
}

fn range((offset, len): (u32, u32)) -> std::ops::Range<usize> {
    offset as usize..(offset + len) as usize
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
