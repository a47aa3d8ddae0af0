//! int4 weights: two signed 4-bit values (−8..=7) per byte, stored so that a 32-bit word unpacks
//! into eight int8 values with a few whole-word operations on any target.
//!
//! A row of `k` weights is stored in groups of eight: group `g` is the little-endian word at bytes
//! `4g..4g + 4` of the row, and byte `j` of it holds weight `8g + j` in its low nibble and weight
//! `8g + 4 + j` in its high nibble. The last group is padded with zero nibbles, so a row takes
//! [`s4_row_bytes`]`(k)` = `4 · ⌈k / 8⌉` bytes and every row starts on a word boundary. Unpacking a
//! word is then two masks, each followed by a byte-wise sign extension done as word arithmetic
//! ([`unpack_s4_row`]): about 1.5 operations per weight, with no table and no per-target code, so
//! every build unpacks the same way.
//!
//! Kernels that take int4 weights unpack a few rows at a time into scratch and run the int8
//! matrix product on them ([`crate::kernels::linear_s4`]): the int8 products are exact, so the
//! result equals the scalar reference, which reads each weight with [`s4_weight`].

/// Bytes of one packed row of `k` weights: `4 · ⌈k / 8⌉`.
pub const fn s4_row_bytes(k: usize) -> usize {
    k.div_ceil(8) * 4
}

/// Weight `i` of a packed row (the definition of the layout).
#[inline]
pub fn s4_weight(row: &[u8], i: usize) -> i8 {
    let byte = row[(i / 8) * 4 + i % 4];
    let nibble = if i % 8 < 4 { byte & 0x0f } else { byte >> 4 };
    // Sign-extend the nibble: shift it to the top of an i8, then arithmetically back.
    ((nibble << 4) as i8) >> 4
}

/// Packs `weights` (each in −8..=7) as one row into `out` ([`s4_row_bytes`] long; the padding
/// nibbles are written as zeros). Panics when a weight is out of range or `out` has the wrong
/// length: the writer's bug, never the device's input.
pub fn pack_s4_row(weights: &[i8], out: &mut [u8]) {
    assert_eq!(out.len(), s4_row_bytes(weights.len()), "packed row length");
    out.fill(0);
    for (i, &w) in weights.iter().enumerate() {
        assert!((-8..=7).contains(&w), "int4 weight {w} out of range");
        let nibble = (w as u8) & 0x0f;
        let at = (i / 8) * 4 + i % 4;
        out[at] |= if i % 8 < 4 { nibble } else { nibble << 4 };
    }
}

/// Four nibbles `0..=15`, one per byte of `x`, as four sign-extended int8 bytes.
///
/// Per byte: `v ^ 8` maps the nibble's two's complement value `s` to `s + 8` in `0..=15`; setting
/// bit 7 first keeps the subtraction of 8 from borrowing across bytes, and clearing it again
/// (the xor) leaves `s` as an int8.
#[inline(always)]
fn sign_extend_nibbles(x: u32) -> u32 {
    const LOW: u32 = 0x0808_0808;
    const TOP: u32 = 0x8080_8080;
    (((x ^ LOW) | TOP).wrapping_sub(LOW)) ^ TOP
}

/// Unpacks the first `out.len()` weights of a packed row into `out` (`out.len() ≤ ` the row's
/// weights; the row holds at least [`s4_row_bytes`]`(out.len())` bytes).
#[inline]
pub fn unpack_s4_row(row: &[u8], out: &mut [i8]) {
    let whole = out.len() - out.len() % 8;
    let mut groups = out.chunks_exact_mut(8);
    let mut words = row.chunks_exact(4);
    for (dst, word) in (&mut groups).zip(&mut words) {
        let w = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        let lo = sign_extend_nibbles(w & 0x0f0f_0f0f).to_le_bytes();
        let hi = sign_extend_nibbles((w >> 4) & 0x0f0f_0f0f).to_le_bytes();
        for j in 0..4 {
            dst[j] = lo[j] as i8;
            dst[4 + j] = hi[j] as i8;
        }
    }
    for (j, v) in groups.into_remainder().iter_mut().enumerate() {
        *v = s4_weight(row, whole + j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_nibble_sign_extends() {
        for w in -8i8..=7 {
            for (pos, k) in [(0usize, 1usize), (3, 8), (4, 8), (7, 8), (9, 13)] {
                let mut weights = vec![0i8; k];
                weights[pos] = w;
                let mut row = vec![0u8; s4_row_bytes(k)];
                pack_s4_row(&weights, &mut row);
                assert_eq!(s4_weight(&row, pos), w);
                let mut out = vec![99i8; k];
                unpack_s4_row(&row, &mut out);
                assert_eq!(out, weights, "w {w} at {pos} of {k}");
            }
        }
    }

    #[test]
    fn rows_round_trip_at_every_length() {
        let mut rng = super::super::cases::Rng(7);
        for k in 1..70 {
            let weights: Vec<i8> = (0..k).map(|_| (rng.next_u32() % 16) as i8 - 8).collect();
            let mut row = vec![0u8; s4_row_bytes(k)];
            pack_s4_row(&weights, &mut row);
            let mut out = vec![0i8; k];
            unpack_s4_row(&row, &mut out);
            assert_eq!(out, weights, "k {k}");
            // A prefix unpacks alone.
            let mut prefix = vec![0i8; k / 2];
            unpack_s4_row(&row, &mut prefix);
            assert_eq!(prefix, weights[..k / 2]);
        }
    }
}
