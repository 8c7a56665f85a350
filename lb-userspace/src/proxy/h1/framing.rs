//! How an HTTP/1 message's body is delimited (RFC 9112 §6), decided in one
//! place for every HTTP/1 path: the fast server and the smuggling guard read
//! requests with it, the fast client reads responses with it.
//!
//! The two directions are read differently on purpose. A request is read as
//! the ALB reads it: anything a second reader could frame otherwise (both
//! `Content-Length` and `Transfer-Encoding`, a repeated or listed length, a
//! coding other than `chunked`) is refused, because a request body framed two
//! ways is how requests are smuggled past a balancer. A response is read as
//! RFC 9112 §6.3 says a recipient reads it (a list of equal lengths is one
//! length, a body not ending in `chunked` runs to the connection's close),
//! because the target is the one party whose framing is not in doubt.

/// How a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: a request without framing fields, or a response that has
    /// none whatever its fields say (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// Until the sender closes the connection (responses only).
    Close,
}

/// Why a head's framing fields are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    BothLengthAndChunked,
    RepeatedContentLength,
    ConflictingContentLength,
    InvalidContentLength,
    RepeatedTransferEncoding,
    UnsupportedTransferEncoding,
    TransferEncodingInHttp10,
}

impl FramingError {
    /// What a refusal says (a 400's body names it).
    pub fn cause(self) -> &'static str {
        match self {
            FramingError::BothLengthAndChunked => {
                "ambiguous message framing: both Content-Length and Transfer-Encoding"
            }
            FramingError::RepeatedContentLength => {
                "ambiguous message framing: repeated Content-Length"
            }
            FramingError::ConflictingContentLength => "conflicting Content-Length",
            FramingError::InvalidContentLength => "invalid Content-Length",
            FramingError::RepeatedTransferEncoding => {
                "ambiguous message framing: repeated Transfer-Encoding"
            }
            FramingError::UnsupportedTransferEncoding => {
                "unsupported Transfer-Encoding (only \"chunked\" is accepted)"
            }
            FramingError::TransferEncodingInHttp10 => {
                "Transfer-Encoding is not allowed in HTTP/1.0"
            }
        }
    }
}

impl std::fmt::Display for FramingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.cause())
    }
}

impl std::error::Error for FramingError {}

/// The framing fields of one head, noted as its fields go by, so that the
/// caller's own pass over the fields is the only one.
#[derive(Debug, Clone, Copy)]
pub struct FramingFields {
    /// `Content-Length` fields seen.
    lengths: u32,
    /// The last one's value, read strictly (digits only): requests.
    length: Option<u64>,
    /// Every one read as a list of equal numbers: responses.
    length_list: Result<Option<u64>, FramingError>,
    /// `Transfer-Encoding` fields seen.
    encodings: u32,
    /// Whether the last field's last coding is `chunked`: responses.
    last_coding_chunked: bool,
    /// The first field a request cannot have (an invalid length, a coding
    /// other than `chunked`), in field order.
    first_refusal: Option<FramingError>,
}

impl Default for FramingFields {
    fn default() -> Self {
        Self {
            lengths: 0,
            length: None,
            length_list: Ok(None),
            encodings: 0,
            last_coding_chunked: false,
            first_refusal: None,
        }
    }
}

impl FramingFields {
    /// Gathers the framing fields of a parsed head.
    pub fn of(fields: &[httparse::Header<'_>]) -> Self {
        let mut framing = Self::default();
        for f in fields {
            framing.field(f.name.as_bytes(), f.value);
        }
        framing
    }

    /// Takes note of one field; true when it is a framing field.
    pub fn field(&mut self, name: &[u8], value: &[u8]) -> bool {
        if name.eq_ignore_ascii_case(b"content-length") {
            self.lengths += 1;
            self.length = decimal(value);
            if self.length.is_none() {
                self.first_refusal
                    .get_or_insert(FramingError::InvalidContentLength);
            }
            if let Ok(so_far) = self.length_list {
                self.length_list = length_list(value, so_far);
            }
            true
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.encodings += 1;
            if !trim(value).eq_ignore_ascii_case(b"chunked") {
                self.first_refusal
                    .get_or_insert(FramingError::UnsupportedTransferEncoding);
            }
            self.last_coding_chunked = is_field_text(value)
                && value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|c| trim(c).eq_ignore_ascii_case(b"chunked"));
            true
        } else {
            false
        }
    }

    /// A request's body, or why the request is refused. `BodyFraming::None`
    /// only when the head has no framing field at all: an explicit
    /// `Content-Length: 0` is `Length(0)`.
    pub fn request(&self, http10: bool) -> Result<BodyFraming, FramingError> {
        if let Some(refusal) = self.first_refusal {
            return Err(refusal);
        }
        if self.encodings > 0 && self.lengths > 0 {
            return Err(FramingError::BothLengthAndChunked);
        }
        if self.lengths > 1 {
            return Err(FramingError::RepeatedContentLength);
        }
        if self.encodings > 1 {
            return Err(FramingError::RepeatedTransferEncoding);
        }
        if self.encodings == 1 && http10 {
            return Err(FramingError::TransferEncodingInHttp10);
        }
        // An Upgrade request is framed like any other: what follows is
        // still HTTP until a 101 says otherwise.
        Ok(match (self.encodings, self.length) {
            (1, _) => BodyFraming::Chunked,
            (_, Some(n)) => BodyFraming::Length(n),
            _ => BodyFraming::None,
        })
    }

    /// A final response's body (RFC 9112 §6.3), given its status and
    /// whether it answers a HEAD.
    pub fn response(&self, status: u16, head_request: bool) -> Result<BodyFraming, FramingError> {
        if response_is_bodyless(status, head_request) {
            return Ok(BodyFraming::None);
        }
        if self.encodings > 0 {
            if self.lengths > 0 {
                return Err(FramingError::BothLengthAndChunked);
            }
            return Ok(if self.last_coding_chunked {
                BodyFraming::Chunked
            } else {
                BodyFraming::Close
            });
        }
        Ok(self
            .length_list?
            .map_or(BodyFraming::Close, BodyFraming::Length))
    }
}

/// Whether a response has no body whatever its fields say (RFC 9112 §6.3):
/// it answers a HEAD (its `Content-Length` is what a GET would get), or is
/// 1xx, 204 or 304.
pub fn response_is_bodyless(status: u16, head_request: bool) -> bool {
    head_request || (100..200).contains(&status) || status == 204 || status == 304
}

/// Digits only, as RFC 9110 requires of a request: no sign, no list.
fn decimal(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// `so_far` and every number of a comma-separated `Content-Length` list,
/// which must all be the same.
/// A value that is not field text is invalid as a whole, before any of its
/// numbers is compared (hyper cannot read it as text).
fn length_list(v: &[u8], so_far: Option<u64>) -> Result<Option<u64>, FramingError> {
    if !is_field_text(v) {
        return Err(FramingError::InvalidContentLength);
    }
    let mut length = so_far;
    for part in v.split(|&b| b == b',') {
        let n = decimal_any_length(trim(part)).ok_or(FramingError::InvalidContentLength)?;
        if length.is_some_and(|l| l != n) {
            return Err(FramingError::ConflictingContentLength);
        }
        length = Some(n);
    }
    Ok(length)
}

/// Digits that fit a u64.
fn decimal_any_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Visible ASCII, spaces and tabs: what `HeaderValue::to_str` accepts.
fn is_field_text(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// The value without the spaces and tabs around it.
pub fn trim(v: &[u8]) -> &[u8] {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(raw: &[(&str, &str)]) -> FramingFields {
        let mut f = FramingFields::default();
        for (n, v) in raw {
            f.field(n.as_bytes(), v.as_bytes());
        }
        f
    }

    fn request(raw: &[(&str, &str)]) -> Result<BodyFraming, FramingError> {
        fields(raw).request(false)
    }

    fn response(raw: &[(&str, &str)]) -> Result<BodyFraming, FramingError> {
        fields(raw).response(200, false)
    }

    #[test]
    fn a_refusal_prints_as_its_cause_which_the_log_and_the_400_carry() {
        use FramingError::*;
        for (e, text) in [
            (
                BothLengthAndChunked,
                "ambiguous message framing: both Content-Length and Transfer-Encoding",
            ),
            (
                RepeatedContentLength,
                "ambiguous message framing: repeated Content-Length",
            ),
            (ConflictingContentLength, "conflicting Content-Length"),
            (InvalidContentLength, "invalid Content-Length"),
            (
                RepeatedTransferEncoding,
                "ambiguous message framing: repeated Transfer-Encoding",
            ),
            (
                UnsupportedTransferEncoding,
                "unsupported Transfer-Encoding (only \"chunked\" is accepted)",
            ),
            (
                TransferEncodingInHttp10,
                "Transfer-Encoding is not allowed in HTTP/1.0",
            ),
        ] {
            assert_eq!(e.cause(), text, "{e:?}");
            assert_eq!(e.to_string(), text, "{e:?}");
        }
    }

    #[test]
    fn only_framing_fields_are_framing_fields() {
        let mut f = FramingFields::default();
        assert!(f.field(b"Content-Length", b"1"));
        assert!(f.field(b"TRANSFER-ENCODING", b"chunked"));
        assert!(!f.field(b"content-type", b"text/plain"));
        assert!(!f.field(b"content-lengths", b"1"));
    }

    #[test]
    fn requests_are_framed_by_one_unambiguous_field() {
        use BodyFraming::*;
        assert_eq!(request(&[]), Ok(None));
        assert_eq!(request(&[("host", "a")]), Ok(None));
        assert_eq!(request(&[("content-length", "0")]), Ok(Length(0)));
        assert_eq!(request(&[("Content-Length", " 12 ")]), Ok(Length(12)));
        assert_eq!(request(&[("transfer-encoding", "Chunked")]), Ok(Chunked));
        // 18 digits always fit a u64; 19 are refused (below).
        assert_eq!(
            request(&[("content-length", "123456789012345678")]),
            Ok(Length(123_456_789_012_345_678))
        );
    }

    #[test]
    fn requests_framed_two_ways_are_refused_with_the_first_cause() {
        use FramingError::*;
        for (raw, why) in [
            (
                &[("content-length", "1"), ("transfer-encoding", "chunked")][..],
                BothLengthAndChunked,
            ),
            (
                &[("content-length", "1"), ("content-length", "1")],
                RepeatedContentLength,
            ),
            (&[("content-length", "1, 1")], InvalidContentLength),
            (&[("content-length", "+1")], InvalidContentLength),
            (&[("content-length", "")], InvalidContentLength),
            (
                &[("content-length", "1234567890123456789")],
                InvalidContentLength,
            ),
            (
                &[("transfer-encoding", "gzip, chunked")],
                UnsupportedTransferEncoding,
            ),
            (
                &[
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ],
                RepeatedTransferEncoding,
            ),
            // The first bad field decides, before the combination is looked at.
            (
                &[("transfer-encoding", "chunked"), ("content-length", "x")],
                InvalidContentLength,
            ),
            (
                &[("transfer-encoding", "gzip"), ("content-length", "x")],
                UnsupportedTransferEncoding,
            ),
        ] {
            assert_eq!(request(raw), Err(why), "{raw:?}");
        }
        assert_eq!(
            fields(&[("transfer-encoding", "chunked")]).request(true),
            Err(TransferEncodingInHttp10)
        );
        assert_eq!(
            fields(&[("content-length", "3")]).request(true),
            Ok(BodyFraming::Length(3))
        );
    }

    #[test]
    fn responses_are_framed_as_rfc_9112_reads_them() {
        use BodyFraming::*;
        assert_eq!(response(&[("content-length", "5")]), Ok(Length(5)));
        assert_eq!(response(&[("content-length", "4, 4")]), Ok(Length(4)));
        assert_eq!(
            response(&[("content-length", "4"), ("content-length", "4")]),
            Ok(Length(4))
        );
        assert_eq!(
            response(&[("transfer-encoding", "gzip, chunked")]),
            Ok(Chunked)
        );
        assert_eq!(
            response(&[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "gzip")
            ]),
            Ok(Close)
        );
        assert_eq!(response(&[("transfer-encoding", "gzip")]), Ok(Close));
        // A tab is field text; a byte hyper cannot read as text makes the
        // codings unreadable, so the body runs to the close.
        assert_eq!(
            response(&[("transfer-encoding", "gzip,\tchunked")]),
            Ok(Chunked)
        );
        assert_eq!(
            response(&[("transfer-encoding", "gzip\u{80}, chunked")]),
            Ok(Close)
        );
        assert_eq!(
            response(&[("content-length", "5\u{80}")]),
            Err(FramingError::InvalidContentLength)
        );
        // Invalid as a whole, though its first number already conflicts.
        assert_eq!(
            response(&[("content-length", "100"), ("content-length", "5, 4\u{e6}")]),
            Err(FramingError::InvalidContentLength)
        );
        assert_eq!(response(&[]), Ok(Close));
        assert_eq!(
            response(&[("content-length", "4"), ("content-length", "5")]),
            Err(FramingError::ConflictingContentLength)
        );
        assert_eq!(
            response(&[("content-length", "-1")]),
            Err(FramingError::InvalidContentLength)
        );
        assert_eq!(
            response(&[("content-length", "1"), ("transfer-encoding", "chunked")]),
            Err(FramingError::BothLengthAndChunked)
        );
    }

    #[test]
    fn some_responses_have_no_body_whatever_their_fields_say() {
        let f = fields(&[("content-length", "9")]);
        assert_eq!(f.response(200, true), Ok(BodyFraming::None));
        for status in [100, 103, 204, 304] {
            assert_eq!(f.response(status, false), Ok(BodyFraming::None), "{status}");
        }
        assert_eq!(f.response(205, false), Ok(BodyFraming::Length(9)));
        assert!(response_is_bodyless(304, false));
        assert!(!response_is_bodyless(200, false));
    }
}
