//! Internet checksum arithmetic (RFC 1071, RFC 1624), shared by the XDP
//! program, which rewrites addresses and ports of forwarded TCP packets, and
//! the tests, which check its results against full recomputations.
//!
//! Everything works on fixed-size arrays of big-endian 16-bit words, so the
//! loops have bounds the verifier sees. A checksum is handled as the 16-bit
//! value its header field holds in network byte order, read with
//! `u16::from_be_bytes`.

/// The one's-complement sum of `bytes` as big-endian 16-bit words (`N` is
/// even), not folded: up to 2^16 words fit a `u32` without overflow.
#[inline(always)]
pub fn sum<const N: usize>(bytes: &[u8; N]) -> u32 {
    let mut s = 0u32;
    let mut i = 0;
    while i + 1 < N {
        s += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    s
}

/// The sum of the complements of `bytes`' words: what removing them from a
/// checksummed sum means in one's-complement arithmetic.
#[inline(always)]
pub fn sum_complement<const N: usize>(bytes: &[u8; N]) -> u32 {
    let mut s = 0u32;
    let mut i = 0;
    while i + 1 < N {
        s += u32::from(!u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    s
}

/// Folds a 32-bit sum to 16 bits, end-around carries added back.
#[inline(always)]
pub fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The checksum field for data whose words sum to `s` (RFC 1071).
#[inline(always)]
pub fn finish(s: u32) -> u16 {
    !fold(s)
}

/// RFC 1624, equation 3: the new checksum when words summing to `removed`
/// (as [`sum_complement`] gives them) are replaced by words summing to
/// `added` (as [`sum`] gives them): `HC' = ~(~HC + ~m + m')`.
#[inline(always)]
pub fn update(check: u16, removed: u32, added: u32) -> u16 {
    // Each part is folded first, so the total stays far below 2^32.
    !fold(u32::from(!check) + u32::from(fold(removed)) + u32::from(fold(added)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Full checksum over `data` of any even length.
    fn full(data: &[u8]) -> u16 {
        let mut s = 0u32;
        for w in data.chunks(2) {
            s += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        finish(s)
    }

    #[test]
    fn a_known_ipv4_header_checksum() {
        // The example header of RFC 1071's usual illustrations, checksum 0xb861.
        let mut h: [u8; 20] = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(finish(sum(&h)), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(
            fold(sum(&h)),
            0xffff,
            "a checksummed header sums to all ones"
        );
    }

    #[test]
    fn a_fold_adds_back_the_carry_of_its_first_round() {
        // 0xffff + 0x2 = 0x10001: a second round folds it to 0x2.
        assert_eq!(fold(0x0002_ffff), 0x0002);
        assert_eq!(fold(0x0001_0000), 0x0001);
    }

    #[test]
    fn an_update_equals_a_recomputation() {
        let mut h: [u8; 20] = [
            0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 0x0a, 0xe7,
            0x01, 0x02, 0x0a, 0xe7, 0x01, 0x01,
        ];
        let check = full(&h);
        let old: [u8; 8] = h[12..20].try_into().unwrap();
        let new: [u8; 8] = [10, 231, 11, 1, 10, 231, 11, 2];
        let updated = update(check, sum_complement(&old), sum(&new));
        h[12..20].copy_from_slice(&new);
        assert_eq!(updated, full(&h));
    }

    proptest::proptest! {
        /// Replacing any aligned 8 bytes (two addresses, or ports and
        /// more) of checksummed data and updating the checksum leaves data
        /// that verifies, with the checksum a recomputation gives (or its
        /// other one's-complement zero).
        #[test]
        fn any_update_verifies(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 40),
            at in 0usize..15,
            new: [u8; 8],
        ) {
            let mut d: [u8; 40] = data.try_into().unwrap();
            // The checksum field is the first word.
            d[0..2].copy_from_slice(&[0, 0]);
            let check = full(&d);
            d[0..2].copy_from_slice(&check.to_be_bytes());
            let at = 2 + 2 * at;
            let old: [u8; 8] = d[at..at + 8].try_into().unwrap();
            let updated = update(check, sum_complement(&old), sum(&new));
            d[at..at + 8].copy_from_slice(&new);
            d[0..2].copy_from_slice(&updated.to_be_bytes());
            proptest::prop_assert_eq!(fold(sum(&d)), 0xffff, "the data verifies");
            d[0..2].copy_from_slice(&[0, 0]);
            let again = full(&d);
            proptest::prop_assert!(
                updated == again || (updated | again == 0xffff && updated & again == 0),
                "{:#06x} vs {:#06x}", updated, again
            );
        }
    }
}
