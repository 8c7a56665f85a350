//! Chunked bodies (RFC 9112 §7.1): one decoder, which the smuggling guard
//! uses to find where a request body ends and the fast client uses to take a
//! response body's data, and the encoder the fast server writes with.
//!
//! The decoder holds lines to hyper's own rules, because hyper reads the
//! requests behind the guard and the responses on the other client path:
//! hex digits (leading zeros allowed), optional spaces or tabs, an optional
//! `;` extension, CRLF. Wherever hyper and a lenient reader could disagree on
//! where a body ends (a bare CR or LF, a size hyper would overflow on, data
//! longer than its size, extensions or trailers past hyper's limits) it
//! answers an error instead of a guess.

/// hyper's limit on the chunk extensions of one body, in bytes: it refuses
/// the body at this many.
pub(crate) const MAX_EXTENSIONS: usize = 16 * 1024;
/// Longest chunk-size line: room for hyper's whole extension allowance.
const MAX_SIZE_LINE: usize = MAX_EXTENSIONS + 1024;
/// hyper's limit on a body's trailer section, in bytes.
pub(crate) const MAX_TRAILERS: usize = 16 * 1024;
/// Most significant hex digits in a chunk size: 2^60 bytes is no real chunk,
/// and fewer digits than hyper's 16 leave no doubt about overflow.
const MAX_SIZE_DIGITS: usize = 15;

/// Why a chunked body is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("bare CR or LF in a chunk-size line")]
    BareLineEndInSize,
    #[error("invalid chunk size")]
    InvalidSize,
    #[error("chunk size too large")]
    SizeTooLarge,
    #[error("chunk-size or trailer line too long")]
    LineTooLong,
    #[error("chunk extensions over the limit")]
    ExtensionsOverLimit,
    #[error("chunk data longer than its size, or not ended by CRLF")]
    DataNotEnded,
    #[error("bare CR or LF in the trailer section")]
    BareLineEndInTrailers,
    #[error("a trailer line that is not a header field")]
    InvalidTrailer,
    #[error("trailer section over the limit")]
    TrailersOverLimit,
}

/// What the decoder expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    /// This many data bytes left in the chunk.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines, until an empty one.
    Trailers,
    Done,
}

/// What the bytes at the front of the input are; each step consumes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// This many bytes of framing: a size line, a data CRLF, a trailer line.
    Framing(usize),
    /// This many bytes of chunk data.
    Data(usize),
    /// The last line of the body, this many bytes: the body has ended.
    End(usize),
    /// More input is needed.
    More,
}

/// Decodes one chunked body, step by step over the bytes as they come.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    /// Chunk-extension bytes, trailer bytes and trailer fields so far:
    /// hyper counts them over the whole body.
    extensions: u32,
    trailers: u32,
    trailer_fields: u32,
    max_trailer_fields: u32,
}

impl Decoder {
    /// A body whose trailer section may have at most `max_trailer_fields`
    /// fields (the head's own limit, as hyper applies it).
    pub fn new(max_trailer_fields: usize) -> Self {
        Self {
            state: State::Size,
            extensions: 0,
            trailers: 0,
            trailer_fields: 0,
            max_trailer_fields: u32::try_from(max_trailer_fields).unwrap_or(u32::MAX),
        }
    }

    #[cfg(test)]
    fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Data bytes left in the current chunk, when data is what comes next:
    /// a reader may move them without [`Self::step`], then tell
    /// [`Self::data_taken`].
    pub fn data_left(&self) -> Option<u64> {
        match self.state {
            State::Data(n) => Some(n),
            _ => None,
        }
    }

    /// `n` data bytes, at most [`Self::data_left`], went by.
    pub fn data_taken(&mut self, n: u64) {
        if let State::Data(left) = self.state {
            self.state = if n >= left {
                State::DataEnd
            } else {
                State::Data(left - n)
            };
        }
    }

    /// Reads what `input` starts with. A body's bytes may come in any
    /// pieces: a line split over two inputs is `More` until it is whole.
    pub fn step(&mut self, input: &[u8]) -> Result<Step, ChunkError> {
        match self.state {
            State::Size => {
                let Some(len) = line(input, MAX_SIZE_LINE)? else {
                    return Ok(Step::More);
                };
                let (size, extensions) = size_line(&input[..len])?;
                // Both below 17 KiB: no overflow.
                self.extensions += extensions as u32;
                if self.extensions as usize >= MAX_EXTENSIONS {
                    return Err(ChunkError::ExtensionsOverLimit);
                }
                self.state = if size == 0 {
                    State::Trailers
                } else {
                    State::Data(size)
                };
                Ok(Step::Framing(len))
            }
            State::Data(left) => {
                if input.is_empty() {
                    return Ok(Step::More);
                }
                let take = left.min(input.len() as u64);
                self.data_taken(take);
                Ok(Step::Data(take as usize))
            }
            State::DataEnd => {
                let seen = &input[..input.len().min(2)];
                if !b"\r\n".starts_with(seen) {
                    return Err(ChunkError::DataNotEnded);
                }
                if seen.len() < 2 {
                    return Ok(Step::More);
                }
                self.state = State::Size;
                Ok(Step::Framing(2))
            }
            State::Trailers => {
                let Some(len) = line(input, MAX_TRAILERS)? else {
                    return Ok(Step::More);
                };
                if !is_crlf_line(&input[..len]) {
                    return Err(ChunkError::BareLineEndInTrailers);
                }
                if len == 2 {
                    self.state = State::Done;
                    return Ok(Step::End(2));
                }
                if !is_field_line(&input[..len - 2]) {
                    return Err(ChunkError::InvalidTrailer);
                }
                self.trailers += len as u32;
                self.trailer_fields += 1;
                if self.trailers as usize > MAX_TRAILERS
                    || self.trailer_fields > self.max_trailer_fields
                {
                    return Err(ChunkError::TrailersOverLimit);
                }
                Ok(Step::Framing(len))
            }
            State::Done => Ok(Step::End(0)),
        }
    }
}

/// Length of the line at the front of `input`, its `\n` included, if it is
/// complete; an error when none ends within `max` bytes.
fn line(input: &[u8], max: usize) -> Result<Option<usize>, ChunkError> {
    match input.iter().take(max).position(|&b| b == b'\n') {
        Some(i) => Ok(Some(i + 1)),
        None if input.len() >= max => Err(ChunkError::LineTooLong),
        None => Ok(None),
    }
}

/// A chunk-size line, `\n` included: the size, and how many extension bytes
/// it has.
fn size_line(line: &[u8]) -> Result<(u64, usize), ChunkError> {
    if !is_crlf_line(line) {
        return Err(ChunkError::BareLineEndInSize);
    }
    let line = &line[..line.len() - 2];
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ChunkError::InvalidSize);
    }
    let significant = line[..digits].iter().skip_while(|&&b| b == b'0').count();
    if significant > MAX_SIZE_DIGITS {
        return Err(ChunkError::SizeTooLarge);
    }
    let rest = &line[digits..];
    let lws = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let extensions = match &rest[lws..] {
        [] => 0,
        [b';', ext @ ..] => ext.len(),
        _ => return Err(ChunkError::InvalidSize),
    };
    let size = line[digits - significant..digits]
        .iter()
        .fold(0u64, |n, &b| n * 16 + u64::from(hex_value(b)));
    Ok((size, extensions))
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// A line that ends in CRLF and has no other CR or LF: where hyper and any
/// lenient reader agree on where it ends.
fn is_crlf_line(line: &[u8]) -> bool {
    line.ends_with(b"\r\n")
        && !line[..line.len() - 2]
            .iter()
            .any(|&b| b == b'\r' || b == b'\n')
}

/// A trailer line, CRLF removed, that hyper reads as a field (httparse's
/// rules, then the http crate's): a token, a colon, then visible ASCII,
/// obs-text, spaces and tabs. hyper refuses the body for any other line.
fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    colon > 0
        && line[..colon]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && line[colon + 1..]
            .iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}

/// Ends a chunk's data.
pub const DATA_END: &[u8] = b"\r\n";
/// The last chunk and an empty trailer section: the body's end.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Writes a chunk-size line: `len` in hexadecimal, then CRLF.
pub fn write_size(out: &mut Vec<u8>, len: usize) {
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(b"0123456789abcdef"[(len >> (4 * i)) & 0xf]);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a whole body held in `raw`, fed `piece` bytes at a time: the
    /// data, and how many bytes of `raw` follow the body.
    fn decode(raw: &[u8], piece: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut d = Decoder::new(100);
        let mut data = Vec::new();
        let (mut at, mut seen) = (0, piece.min(raw.len()));
        loop {
            match d.step(&raw[at..seen])? {
                Step::Framing(n) => at += n,
                Step::Data(n) => {
                    data.extend_from_slice(&raw[at..at + n]);
                    at += n;
                }
                Step::End(n) => return Ok((data, raw.len() - at - n)),
                Step::More if seen == raw.len() => return Err(ChunkError::InvalidSize),
                Step::More => seen = (seen + piece).min(raw.len()),
            }
        }
    }

    #[test]
    fn bodies_decode_in_any_pieces_and_stop_at_their_end() {
        let raw = b"4;ext=1\r\nWiki\r\nA \t;x\r\n0123456789\r\n000\r\nX-T: 1\r\n\r\nNEXT";
        for piece in [1, 2, 3, 7, raw.len()] {
            let (data, after) = decode(raw, piece).unwrap();
            assert_eq!(data, b"Wiki0123456789", "{piece}");
            assert_eq!(after, 4, "the next message's bytes stay");
        }
    }

    #[test]
    fn lines_hyper_could_read_otherwise_are_refused() {
        use ChunkError::*;
        for (raw, why) in [
            (&b"zz\r\n"[..], InvalidSize),
            (b"+5\r\nhello\r\n0\r\n\r\n", InvalidSize),
            (b"5 x\r\nhello\r\n0\r\n\r\n", InvalidSize),
            (b"5\nhello\r\n0\r\n\r\n", BareLineEndInSize),
            (b"5\rX\nhello\r\n0\r\n\r\n", BareLineEndInSize),
            (b"1000000000000000\r\n", SizeTooLarge),
            (b"4\r\nWikiXX0\r\n\r\n", DataNotEnded),
            (b"4\r\nWiki\n0\r\n\r\n", DataNotEnded),
            (b"0\r\nX-T: 1\n\r\n", BareLineEndInTrailers),
            (b"0\r\n\n", BareLineEndInTrailers),
        ] {
            assert_eq!(
                decode(raw, raw.len()),
                Err(why),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        // Leading zeros do not count towards the size's digits.
        assert!(decode(b"0000000000000000001\r\nx\r\n0\r\n\r\n", 64).is_ok());
        assert!(decode(b"fffffffffffffff\r\n", 64).is_err_and(|e| e != SizeTooLarge));
    }

    #[test]
    fn trailer_lines_are_held_to_hypers_field_rules() {
        // hyper parses the trailer section as header fields and refuses the
        // whole body for a line that is not one; the fast client passed
        // such a response on, and the guard such a request to hyper.
        for raw in [
            &b"0\r\ne\r\n\r\n"[..],
            b"0\r\n: v\r\n\r\n",
            b"0\r\nX T: 1\r\n\r\n",
            b"0\r\nX-T : 1\r\n\r\n",
            b"0\r\n X-T: 1\r\n\r\n",
            b"0\r\nX-T: a\x7fb\r\n\r\n",
            b"0\r\nX-T: a\x00b\r\n\r\n",
            b"0\r\nX-T: 1\r\nnot a field\r\n\r\n",
        ] {
            assert_eq!(
                decode(raw, raw.len()),
                Err(ChunkError::InvalidTrailer),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        for raw in [
            &b"0\r\nX-T:\r\n\r\n"[..],
            b"0\r\nx_t~1: a \t b\r\n\r\n",
            b"0\r\nX-T: caf\xc3\xa9 \xff\r\n\r\n",
        ] {
            assert_eq!(decode(raw, 1), Ok((Vec::new(), 0)), "{raw:?}");
        }
    }

    #[test]
    fn extensions_and_trailers_are_held_to_hypers_limits() {
        let ext = "x".repeat(MAX_EXTENSIONS / 2);
        let body = format!("1;{ext}\r\na\r\n1;{ext}\r\nb\r\n0\r\n\r\n");
        assert_eq!(
            decode(body.as_bytes(), 1000),
            Err(ChunkError::ExtensionsOverLimit)
        );
        let body = format!("1;{}\r\na\r\n0\r\n\r\n", &ext[1..]);
        assert!(decode(body.as_bytes(), 1000).is_ok());
        let long = format!("1;{}\r\n", "x".repeat(MAX_SIZE_LINE));
        assert_eq!(decode(long.as_bytes(), 1000), Err(ChunkError::LineTooLong));
        let fields = |n: usize| format!("0\r\n{}\r\n", "t: 1\r\n".repeat(n));
        let mut d = Decoder::new(3);
        let ok = fields(3);
        let mut at = 0;
        while let Ok(Step::Framing(n)) = d.step(&ok.as_bytes()[at..]) {
            at += n;
        }
        assert!(d.is_done());
        let mut d = Decoder::new(3);
        let over = fields(4);
        let mut at = 0;
        let end = loop {
            match d.step(&over.as_bytes()[at..]) {
                Ok(Step::Framing(n)) => at += n,
                other => break other,
            }
        };
        assert_eq!(end, Err(ChunkError::TrailersOverLimit));
        let big = format!("0\r\nt: {}\r\n\r\n", "v".repeat(MAX_TRAILERS));
        assert!(decode(big.as_bytes(), 100_000).is_err());
    }

    #[test]
    fn data_may_be_taken_past_the_decoder() {
        let mut d = Decoder::new(100);
        assert_eq!(d.step(b"a\r\n"), Ok(Step::Framing(3)));
        assert_eq!(d.data_left(), Some(10));
        d.data_taken(4);
        assert_eq!(d.data_left(), Some(6));
        d.data_taken(6);
        assert_eq!(d.data_left(), None);
        assert_eq!(d.step(b"\r\n0\r\n\r\n"), Ok(Step::Framing(2)));
    }

    #[test]
    fn sizes_are_written_in_hexadecimal() {
        for (len, line) in [
            (0, "0\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (4096, "1000\r\n"),
            (0x1a2b3, "1a2b3\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            let mut out = Vec::new();
            write_size(&mut out, len);
            assert_eq!(out, line.as_bytes(), "{len}");
        }
    }

    proptest::proptest! {
        /// Whatever the encoder writes, the decoder reads back.
        #[test]
        fn what_is_encoded_decodes(chunks in proptest::collection::vec(
            proptest::collection::vec(proptest::prelude::any::<u8>(), 1..300), 0..8),
            piece in 1usize..64,
        ) {
            let mut raw = Vec::new();
            for c in &chunks {
                write_size(&mut raw, c.len());
                raw.extend_from_slice(c);
                raw.extend_from_slice(DATA_END);
            }
            raw.extend_from_slice(LAST_CHUNK);
            let (data, after) = decode(&raw, piece).unwrap();
            proptest::prop_assert_eq!(data, chunks.concat());
            proptest::prop_assert_eq!(after, 0);
        }
    }
}
