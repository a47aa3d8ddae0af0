//! The int8 matrix-product machinery the optimized convolution, linear and attention kernels
//! share: packing of columns (im2col pixels, tokens, queries) into the layout a micro-kernel
//! reads, the micro-kernels themselves (in `crate::arch`), and a requantization equal to
//! [`crate::quant::requantize`] that is cheaper for the usual multipliers.
//!
//! Two flavours, selected at compile time by the kernels' entry points and both compiled for host
//! tests:
//!
//! * [`Dsp`] (Cortex-M4/M7): one output channel × four columns per call. Columns are widened to
//!   int16 once, when packed; weights stay int8 in the model and are widened in registers
//!   (SXTB16), then SMLAD does two MACs per instruction.
//! * [`Mve`] (Cortex-M55): two output channels × three columns per call, int8 throughout, 16 MACs
//!   per VMLADAVA.
//!
//! The weights are always the model's plain `out × K` rows: no re-layout is needed.

// Host library builds run the reference kernels: only the scratch sizing is used there.
#![cfg_attr(not(any(test, vitae_dsp, vitae_mve)), allow(dead_code))]

use crate::quant::{Lut256, Requant, requantize, saturate_i8};

/// Accumulators of one micro-kernel call: `[row][column]` (a flavour uses the top-left
/// `ROWS × COLS`).
pub(crate) type Acc = [[i32; 4]; 2];

/// A micro-kernel flavour: how columns are packed and how a block is multiplied.
pub(crate) trait Micro {
    /// Columns (pixels, tokens, queries) per call; at most 4.
    const COLS: usize;
    /// Rows (output channels, keys) per call; at most 2.
    const ROWS: usize;
    /// Element type of the packed column buffer.
    type Word: bytemuck::Pod;
    /// Words of a packed buffer for `COLS` columns of `k` values.
    fn packed_words(k: usize) -> usize;
    /// Stores `src` as values `k0..k0 + src.len()` of column `col`.
    fn pack(buf: &mut [Self::Word], col: usize, k0: usize, src: &[i8]);
    /// Stores `len` copies of `v` as values `k0..k0 + len` of column `col`.
    fn fill(buf: &mut [Self::Word], col: usize, k0: usize, len: usize, v: i8);
    /// `acc[r][c] += Σ_{i<k} w[r][i] · x_c[i]` for `r < ROWS`, `c < COLS`; each `w[r]` holds at
    /// least `k` values and `buf` at least `packed_words(k)` words.
    fn run(w: [&[i8]; 2], buf: &[Self::Word], k: usize, acc: &mut Acc);
}

/// Cortex-M4/M7 flavour (see the module docs).
#[cfg(any(test, all(vitae_dsp, not(vitae_mve))))]
#[derive(Debug)]
pub(crate) struct Dsp;

#[cfg(any(test, all(vitae_dsp, not(vitae_mve))))]
impl Dsp {
    #[inline(always)]
    fn set(buf: &mut [u32], col: usize, k: usize, v: i8) {
        use crate::arch::dsp::packed_index;
        let (word, high) = packed_index(col, k);
        let v = v as i16 as u16 as u32;
        if let Some(w) = buf.get_mut(word) {
            *w = if high {
                (*w & 0xffff) | v << 16
            } else {
                (*w & 0xffff_0000) | v
            };
        }
    }

    #[inline(always)]
    fn get(buf: &[u32], col: usize, k: usize) -> i32 {
        use crate::arch::dsp::packed_index;
        let (word, high) = packed_index(col, k);
        let w = buf.get(word).copied().unwrap_or(0);
        i32::from((if high { w >> 16 } else { w }) as u16 as i16)
    }

    /// Stores values `k0..` of column `col` from `src` (int8, widened) or, with `src = None`,
    /// `len` copies of `fill`.
    #[inline(always)]
    fn put(buf: &mut [u32], col: usize, k0: usize, src: Option<&[i8]>, len: usize, fill: i8) {
        use crate::arch::dsp::{BLOCK_WORDS, sxtb16, sxtb16_ror8};
        let value = |i: usize| src.map_or(fill, |s| s[i]);
        // Values before the first 4-aligned position, one at a time.
        let head = ((4 - k0 % 4) % 4).min(len);
        for i in 0..head {
            Self::set(buf, col, k0 + i, value(i));
        }
        // Whole groups of four: SXTB16 of the four bytes gives exactly the two packed words.
        let body = (len - head) / 4;
        let first = (k0 + head) / 4 * BLOCK_WORDS;
        let blocks = buf.get_mut(first..).unwrap_or_default();
        match src {
            Some(s) => {
                for (b4, blk) in s[head..]
                    .chunks_exact(4)
                    .zip(blocks.chunks_exact_mut(BLOCK_WORDS))
                    .take(body)
                {
                    let raw =
                        u32::from_le_bytes([b4[0] as u8, b4[1] as u8, b4[2] as u8, b4[3] as u8]);
                    blk[col] = sxtb16(raw);
                    blk[4 + col] = sxtb16_ror8(raw);
                }
            }
            None => {
                let pair = (fill as i16 as u16 as u32) * 0x1_0001;
                for blk in blocks.chunks_exact_mut(BLOCK_WORDS).take(body) {
                    blk[col] = pair;
                    blk[4 + col] = pair;
                }
            }
        }
        for i in head + 4 * body..len {
            Self::set(buf, col, k0 + i, value(i));
        }
    }
}

#[cfg(any(test, all(vitae_dsp, not(vitae_mve))))]
impl Micro for Dsp {
    const COLS: usize = 4;
    const ROWS: usize = 1;
    type Word = u32;

    fn packed_words(k: usize) -> usize {
        k.div_ceil(4) * crate::arch::dsp::BLOCK_WORDS
    }

    #[inline]
    fn pack(buf: &mut [u32], col: usize, k0: usize, src: &[i8]) {
        Self::put(buf, col, k0, Some(src), src.len(), 0);
    }

    #[inline]
    fn fill(buf: &mut [u32], col: usize, k0: usize, len: usize, v: i8) {
        Self::put(buf, col, k0, None, len, v);
    }

    #[inline(always)]
    fn run(w: [&[i8]; 2], buf: &[u32], k: usize, acc: &mut Acc) {
        let w = w[0];
        let k4 = k / 4 * 4;
        acc[0] = crate::arch::dsp::mac_1x4(w.get(..k4).unwrap_or(w), buf, acc[0]);
        // The last k % 4 values: the packed half-words, one at a time.
        for (i, &wi) in w.iter().enumerate().take(k).skip(k4) {
            for (c, a) in acc[0].iter_mut().enumerate() {
                *a = a.wrapping_add(i32::from(wi) * Self::get(buf, c, i));
            }
        }
    }
}

/// Cortex-M55 flavour (see the module docs).
#[cfg(any(test, vitae_mve))]
#[derive(Debug)]
pub(crate) struct Mve;

#[cfg(any(test, vitae_mve))]
impl Micro for Mve {
    const COLS: usize = crate::arch::mve::COLS;
    const ROWS: usize = 2;
    type Word = i8;

    fn packed_words(k: usize) -> usize {
        crate::arch::mve::packed_len(k)
    }

    #[inline]
    fn pack(buf: &mut [i8], col: usize, k0: usize, src: &[i8]) {
        use crate::arch::mve::{CHUNK, packed_offset};
        let (mut k, mut s) = (k0, src);
        while !s.is_empty() {
            let n = (CHUNK - k % CHUNK).min(s.len());
            let Some(dst) = buf
                .get_mut(packed_offset(col, k)..)
                .and_then(|d| d.get_mut(..n))
            else {
                return;
            };
            if let (Ok(d16), Some(s16)) = (
                <&mut [i8; CHUNK]>::try_from(&mut *dst),
                s.first_chunk::<CHUNK>(),
            ) {
                *d16 = *s16; // a whole chunk: fixed-size copy, no memcpy call
            } else {
                for (d, &v) in dst.iter_mut().zip(s) {
                    *d = v;
                }
            }
            k += n;
            s = &s[n..];
        }
    }

    #[inline]
    fn fill(buf: &mut [i8], col: usize, k0: usize, len: usize, v: i8) {
        use crate::arch::mve::{CHUNK, packed_offset};
        let (mut k, end) = (k0, k0 + len);
        while k < end {
            let n = (CHUNK - k % CHUNK).min(end - k);
            if let Some(dst) = buf
                .get_mut(packed_offset(col, k)..)
                .and_then(|d| d.get_mut(..n))
            {
                dst.fill(v);
            }
            k += n;
        }
    }

    #[inline(always)]
    fn run(w: [&[i8]; 2], buf: &[i8], k: usize, acc: &mut Acc) {
        let a = crate::arch::mve::mac_2x3(
            w[0],
            w[1],
            buf,
            k,
            [
                acc[0][0], acc[0][1], acc[0][2], acc[1][0], acc[1][1], acc[1][2],
            ],
        );
        acc[0][..3].copy_from_slice(&a[..3]);
        acc[1][..3].copy_from_slice(&a[3..]);
    }
}

/// Scratch bytes for one packed column buffer of `k` values, whichever flavour the target uses.
///
/// Blobs are planned on the host, so the answer must not depend on the build: it is the larger of
/// the two flavours (DSP, int16: 8 bytes per value of `k`; Helium, int8: 3), alignment included.
pub(crate) fn packed_scratch_bytes(k: usize) -> usize {
    use super::scratch::bytes_for;
    let dsp = bytes_for::<u32>(k.div_ceil(4) * 8);
    let mve = bytes_for::<i8>(k.div_ceil(16) * 48);
    dsp.max(mve)
}

/// One output channel's requantization, prepared for [`OutQuant::apply`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Channel {
    r: Requant,
    /// `−2 − shift`, when `shift ≤ −2` (then the fast path applies).
    sh: Option<u32>,
}

impl Channel {
    /// Prepares `r` (valid, as the kernels' constructors check).
    #[inline(always)]
    pub(crate) fn new(r: Requant) -> Self {
        let sh = (r.shift <= -2).then(|| (-2 - r.shift) as u32);
        Channel { r, sh }
    }
}

/// Output stage of the int8 kernels: requantize, add the zero point, saturate, activation table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutQuant<'a> {
    pub(crate) zp: i32,
    pub(crate) act: Option<&'a Lut256>,
}

impl OutQuant<'_> {
    /// `act(saturate(requantize(acc, ch) + zp))`, equal to the reference kernels' `finish`.
    ///
    /// For `shift ≤ −2` (every multiplier below 0.25, i.e. practically every layer) the total
    /// right shift `31 − shift` of the 64-bit product is at least 33, so the reference
    /// `((p >> (30 − shift)) as i32 + 1) >> 1`-style rounding can start from the high word of the
    /// product: `p >> (30 − shift) = (p >> 32) >> (−2 − shift)` (floor divisions by powers of two
    /// compose), `|p >> 32| < 2^30` fits an i32, and `(x >> 1) + (x & 1) = (x + 1) >> 1`. The
    /// result is below 2^29 in magnitude, so adding the zero point cannot saturate. That is one
    /// SMULL and three ALU operations instead of a 64-bit variable shift.
    #[inline(always)]
    pub(crate) fn apply(&self, ch: Channel, acc: i32) -> i8 {
        let v = match ch.sh {
            Some(sh) => {
                let hi = ((i64::from(acc) * i64::from(ch.r.multiplier)) >> 32) as i32;
                (((hi >> sh) + 1) >> 1) + self.zp
            }
            None => requantize(acc, ch.r).saturating_add(self.zp),
        };
        let q = saturate_i8(v);
        match self.act {
            Some(lut) => lut.apply(q),
            None => q,
        }
    }
}

/// A small deterministic generator for the kernels' randomized tests (the data, while proptest
/// picks shapes and seeds).
#[cfg(test)]
pub(crate) struct TestRng(pub(crate) u32);

#[cfg(test)]
impl TestRng {
    pub(crate) fn next(&mut self) -> u32 {
        let mut s = self.0.max(1);
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        self.0 = s;
        s
    }

    pub(crate) fn i8s(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.next() as i8).collect()
    }

    /// Valid per-channel requantization around `2^shift_center`, sometimes with `shift > −2`
    /// (the slow path) and sometimes a zero multiplier.
    pub(crate) fn requants(&mut self, n: usize, shift_center: i32) -> Vec<Requant> {
        (0..n)
            .map(|_| {
                let m = (1 << 30) | (self.next() >> 2) as i32;
                let shift = shift_center - 3 + (self.next() % 7) as i32;
                match self.next() % 16 {
                    0 => Requant {
                        multiplier: 0,
                        shift: 0,
                    },
                    _ => Requant {
                        multiplier: m,
                        shift: shift.clamp(crate::quant::MIN_SHIFT, crate::quant::MAX_SHIFT),
                    },
                }
            })
            .collect()
    }

    pub(crate) fn lut(&mut self) -> Lut256 {
        Lut256(core::array::from_fn(|_| self.next() as i8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fast_requantization_equals_the_reference(
            acc in any::<i32>(),
            m in (1i32 << 30)..=i32::MAX,
            shift in -31i32..=30,
            zp in -128i32..=127,
        ) {
            let r = Requant { multiplier: m, shift };
            let q = OutQuant { zp, act: None };
            let want = saturate_i8(requantize(acc, r).saturating_add(zp));
            prop_assert_eq!(q.apply(Channel::new(r), acc), want);
        }
    }

    #[test]
    fn fast_requantization_edge_values() {
        for m in [0, 1 << 30, i32::MAX] {
            for shift in [-31, -30, -8, -2, -1, 0, 30] {
                for acc in [i32::MIN, i32::MIN + 1, -1, 0, 1, 12345, i32::MAX] {
                    let r = Requant {
                        multiplier: m,
                        shift,
                    };
                    let q = OutQuant { zp: -5, act: None };
                    let want = saturate_i8(requantize(acc, r).saturating_add(-5));
                    assert_eq!(q.apply(Channel::new(r), acc), want, "{m} {shift} {acc}");
                }
            }
        }
    }

    fn check_packing<M: Micro>(k: usize, cuts: &[usize]) {
        // Each column is written in segments split at `cuts`: packed from a slice, or (every
        // other segment) filled with one value. run() must then equal plain dot products.
        let mut buf = vec![<M::Word as bytemuck::Zeroable>::zeroed(); M::packed_words(k)];
        let mut x = vec![vec![0i8; k]; M::COLS];
        for (c, xc) in x.iter_mut().enumerate() {
            let mut bounds: Vec<usize> = cuts.iter().map(|&b| b.min(k)).collect();
            bounds.insert(0, 0);
            bounds.push(k);
            for (s, seg) in bounds.windows(2).enumerate() {
                let (a, b) = (seg[0], seg[1].max(seg[0]));
                if (s + c) % 2 == 0 {
                    for (i, v) in xc[a..b].iter_mut().enumerate() {
                        *v = ((c * 131 + (a + i) * 7) as u8) as i8;
                    }
                    M::pack(&mut buf, c, a, &xc[a..b]);
                } else {
                    let v = (s as i8).wrapping_mul(-45);
                    xc[a..b].fill(v);
                    M::fill(&mut buf, c, a, b - a, v);
                }
            }
        }
        let w: Vec<Vec<i8>> = (0..2)
            .map(|r| (0..k).map(|i| ((r * 71 + i * 13) as u8) as i8).collect())
            .collect();
        let mut acc = [[7; 4]; 2];
        M::run([&w[0], &w[1]], &buf, k, &mut acc);
        for r in 0..M::ROWS {
            for c in 0..M::COLS {
                let want = 7 + (0..k).map(|i| w[r][i] as i32 * x[c][i] as i32).sum::<i32>();
                assert_eq!(acc[r][c], want, "k={k} r={r} c={c} cuts={cuts:?}");
            }
        }
    }

    #[test]
    fn packing_and_micro_kernels_compute_dot_products() {
        for k in [1, 3, 4, 5, 16, 17, 27, 33, 64, 147] {
            for k0s in [&[][..], &[1, 2, 7], &[4, 9, 10], &[3, 16, 21]] {
                check_packing::<Dsp>(k, k0s);
                check_packing::<Mve>(k, k0s);
            }
        }
    }

    #[test]
    fn fill_repeats_the_value() {
        let k = 23;
        let mut d = vec![0u32; Dsp::packed_words(k)];
        let mut m = vec![0i8; Mve::packed_words(k)];
        for c in 0..4 {
            Dsp::fill(&mut d, c, 0, k, -128);
        }
        for c in 0..3 {
            Mve::fill(&mut m, c, 0, k, -128);
        }
        let ones = vec![1i8; k];
        let mut acc = [[0; 4]; 2];
        Dsp::run([&ones, &ones], &d, k, &mut acc);
        assert_eq!(acc[0], [-128 * k as i32; 4]);
        let mut acc = [[0; 4]; 2];
        Mve::run([&ones, &ones], &m, k, &mut acc);
        assert_eq!(acc[1][..3], [-128 * k as i32; 3]);
    }
}
