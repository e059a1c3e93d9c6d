//! Byte searches eight bytes at a time in a `u64` (the inputs are short: attribute
//! values and tags, where a call into a SIMD search costs more than it saves).
//!
//! The masks have the high bit set in matching bytes. A borrow can also set it in
//! bytes *above* a true match, never below one, so the lowest set bit is exact.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

fn word(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap_or_default())
}

/// Bytes of `w` equal to `byte`.
fn eq(w: u64, byte: u8) -> u64 {
    let x = w ^ (LO * u64::from(byte));
    x.wrapping_sub(LO) & !x & HI
}

/// Bytes of `w` below `n` (`n <= 128`).
fn below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(LO * u64::from(n)) & !w & HI
}

/// Bytes `unescape_attr` may change: `&` and control characters below `\x0e`
/// (tab, line feed, carriage return among them).
fn special(w: u64) -> u64 {
    eq(w, b'&') | below(w, 0x0e)
}

fn is_special(c: u8) -> bool {
    c == b'&' || c < 0x0e
}

/// Offset of the first `quote` in `b`, and whether a special byte (see
/// `special`) comes before it.
#[inline]
pub(super) fn until_quote(b: &[u8], quote: u8) -> Option<(usize, bool)> {
    let mut seen = false;
    let mut i = 0;
    while i + 8 <= b.len() {
        let w = word(&b[i..]);
        let q = eq(w, quote);
        let s = special(w);
        if q != 0 {
            let at = (q.trailing_zeros() / 8) as usize;
            let before = (1u64 << (at * 8)) - 1;
            return Some((i + at, seen || s & before != 0));
        }
        seen |= s != 0;
        i += 8;
    }
    for (k, &c) in b[i..].iter().enumerate() {
        if c == quote {
            return Some((i + k, seen));
        }
        seen |= is_special(c);
    }
    None
}

/// Offset of the first of `x`, `y`, `z` in `b`.
pub(super) fn find3(b: &[u8], x: u8, y: u8, z: u8) -> Option<usize> {
    let mut i = 0;
    while i + 8 <= b.len() {
        let w = word(&b[i..]);
        let m = eq(w, x) | eq(w, y) | eq(w, z);
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b[i..]
        .iter()
        .position(|&c| c == x || c == y || c == z)
        .map(|k| i + k)
}

/// Offset of the first `x` in `b`.
pub(super) fn find(b: &[u8], x: u8) -> Option<usize> {
    let mut i = 0;
    while i + 8 <= b.len() {
        let m = eq(word(&b[i..]), x);
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b[i..].iter().position(|&c| c == x).map(|k| i + k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swar_searches_agree_with_naive_ones() {
        let hay: Vec<u8> = (0..300u32).map(|i| (i * 37 % 127) as u8).collect();
        for start in 0..40 {
            let h = &hay[start..];
            for q in [b'"', b'\'', 0u8, 0x7e] {
                let naive = h
                    .iter()
                    .position(|&c| c == q)
                    .map(|at| (at, h[..at].iter().any(|&c| c == b'&' || c < 0x0e)));
                assert_eq!(until_quote(h, q), naive);
                assert_eq!(find(h, q), h.iter().position(|&c| c == q));
            }
            assert_eq!(
                find3(h, b'>', b'"', 9),
                h.iter().position(|&c| c == b'>' || c == b'"' || c == 9)
            );
        }
    }
}
