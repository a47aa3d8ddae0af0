//! x86-64 (host) micro-kernels as safe functions, for the host engine: AVX2 chosen at run time,
//! with a portable fallback of the same semantics.
//!
//! Built only for x86-64 with the `std` feature (`cfg(vitae_x86)`, set by the build script): the
//! firmware never sees this module. Every function here equals a plain scalar loop bit for bit;
//! the kernels built on it are tested against the scalar reference kernels
//! (`kernels::gemm` and the kernels' tests).
//!
//! ## Why the sums are exact
//!
//! Both operands are int8 values (−128..=127) widened to int16. VPMADDWD multiplies int16 pairs
//! into int32 and adds adjacent products: each product is at most 2^14 in magnitude
//! ((−128)·(−128) = 16384), so a pair sums to at most 2^15, far inside int32 (VPMADDWD's only
//! wrap-around case, both pairs (−32768)·(−32768), needs int16 values int8 cannot hold). The
//! int32 lanes are then added with VPADDD, which wraps modulo 2^32 like the reference kernels'
//! `wrapping_add`: addition modulo 2^32 is associative and commutative, so any order of the
//! same products gives the same bits. VPMADDUBSW (unsigned × signed bytes, summed in pairs with
//! int16 *saturation*) is not used: 255·127·2 exceeds int16.
//!
//! ## Flush-to-zero f32 updates
//!
//! The performer's feature × channel updates are defined in Arm flush-to-zero arithmetic
//! ([`crate::math::ftz`]). x86's own flush-to-zero (MXCSR.FTZ) detects tininess after rounding,
//! Arm before, so it is not used (MXCSR stays at Rust's default, IEEE). Instead each lane does
//! what `ftz::add(y, ftz::mul(a, x))` does with IEEE VMULPS/VADDPS (the same correctly rounded
//! operations as the scalar code, never fused) and explicit flushes: a subnormal operand or
//! result becomes a zero of its sign, a NaN result the default NaN. The one case where the
//! rounded product does not tell Arm's answer, a product that rounds to exactly ±2^−126, sends
//! its block of eight back to the scalar definition.
//!
//! ## fp16
//!
//! The fp16 convolution and linear layer ([`f16`]) also need F16C (checked at run time beside
//! AVX2): f32 lanes of output channels, each doing the scalar kernel's exact sequence of
//! operations; see that module.
//!
//! `unsafe` is confined to the dispatch points and the bounds-checked loads and stores below,
//! each with its argument.
#![allow(unsafe_code)]

use crate::math::ftz;
use core::arch::x86_64::*;

pub(crate) mod f16;

/// True when the CPU has AVX2 (cached by std after the first call).
#[inline(always)]
pub(crate) fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// `tile[r·4 + c] = bias[r] + Σ_{i<k} w[r·stride + i] · cols[c][i]` (wrapping) for rows `r < n`
/// and the four columns `c`. Runs the AVX2 kernel when the CPU has it and the buffers are as
/// described; otherwise (and for checking) [`panel_1x4_portable`].
pub(crate) fn panel_1x4(
    w: &[i8],
    k: usize,
    stride: usize,
    cols: [&[i16]; 4],
    bias: &[i32],
    tile: &mut [i32],
    n: usize,
) {
    let fits = n <= bias.len()
        && tile.len() >= 4 * n
        && cols.iter().all(|c| c.len() >= k)
        && (n == 0
            || (n - 1)
                .checked_mul(stride)
                .and_then(|e| e.checked_add(k))
                .is_some_and(|e| e <= w.len()));
    if fits && has_avx2() {
        // SAFETY: `panel_avx2` needs only the AVX2 instructions, which the CPU has (checked
        // just above); its memory accesses are bounds-checked slice reads.
        unsafe { panel_avx2(w, k, stride, cols, bias, tile, n) }
    } else {
        panel_1x4_portable(w, k, stride, cols, bias, tile, n);
    }
}

/// The portable definition of [`panel_1x4`] (rows or columns that do not fit are skipped).
pub(crate) fn panel_1x4_portable(
    w: &[i8],
    k: usize,
    stride: usize,
    cols: [&[i16]; 4],
    bias: &[i32],
    tile: &mut [i32],
    n: usize,
) {
    for (r, (t, &b)) in tile.chunks_exact_mut(4).zip(bias).take(n).enumerate() {
        let Some(wr) = w.get(r * stride..).and_then(|w| w.get(..k)) else {
            return;
        };
        for (t, col) in t.iter_mut().zip(cols) {
            *t = wr
                .iter()
                .zip(col)
                .fold(b, |a, (&x, &y)| a.wrapping_add(i32::from(x) * i32::from(y)));
        }
    }
}

/// 16 int8 values widened to int16.
#[target_feature(enable = "avx2")]
#[inline]
fn load_widen(v: &[i8; 16]) -> __m256i {
    // SAFETY: an unaligned load of exactly the 16 bytes of `v`.
    _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(v.as_ptr().cast::<__m128i>()) })
}

/// 16 int16 values.
#[target_feature(enable = "avx2")]
#[inline]
fn load16(v: &[i16; 16]) -> __m256i {
    // SAFETY: an unaligned load of exactly the 32 bytes of `v`.
    unsafe { _mm256_loadu_si256(v.as_ptr().cast::<__m256i>()) }
}

/// The four horizontal sums of `a[0..4]` (eight int32 lanes each, wrapping), in order.
#[target_feature(enable = "avx2")]
#[inline]
fn hsum4(a: [__m256i; 4]) -> [i32; 4] {
    let t = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(a[2], a[3]));
    let s = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t));
    [
        _mm_cvtsi128_si32(s),
        _mm_extract_epi32::<1>(s),
        _mm_extract_epi32::<2>(s),
        _mm_extract_epi32::<3>(s),
    ]
}

/// `Σ_{i<k} w[i] · col[i]` for the values past the last whole block of 16.
#[inline(always)]
fn tail(w: &[i8], col: &[i16], k16: usize, k: usize) -> i32 {
    w[k16..k]
        .iter()
        .zip(&col[k16..k])
        .fold(0i32, |a, (&x, &y)| {
            a.wrapping_add(i32::from(x) * i32::from(y))
        })
}

/// One step of [`panel_avx2`]: the sixteen values from `i` of two weight rows (masked by
/// `mask`) times the four columns, into the two rows' accumulators.
#[target_feature(enable = "avx2")]
#[inline]
fn mac2x4(
    w0: &[i8],
    w1: &[i8],
    cols: [&[i16]; 4],
    i: usize,
    mask: __m256i,
    a0: &mut [__m256i; 4],
    a1: &mut [__m256i; 4],
) {
    let x0 = _mm256_and_si256(
        load_widen(w0[i..i + 16].try_into().expect("16 values")),
        mask,
    );
    let x1 = _mm256_and_si256(
        load_widen(w1[i..i + 16].try_into().expect("16 values")),
        mask,
    );
    for c in 0..4 {
        let y = load16(cols[c][i..i + 16].try_into().expect("16 values"));
        a0[c] = _mm256_add_epi32(a0[c], _mm256_madd_epi16(x0, y));
        a1[c] = _mm256_add_epi32(a1[c], _mm256_madd_epi16(x1, y));
    }
}

/// [`panel_1x4`] with AVX2: two rows × four columns per step, sixteen values of `k` at a time
/// (VPMADDWD into eight int32 accumulators). For `k ≥ 16` the remainder is one more step over
/// the *last* sixteen values with the weights of the values already counted masked to zero
/// (adding 0 changes no sum); below 16 it is scalar.
#[target_feature(enable = "avx2")]
fn panel_avx2(
    w: &[i8],
    k: usize,
    stride: usize,
    cols: [&[i16]; 4],
    bias: &[i32],
    tile: &mut [i32],
    n: usize,
) {
    let k16 = k / 16 * 16;
    let rem = k - k16;
    let vector_tail = k >= 16 && rem > 0;
    // Lanes 16 − rem.. of the last sixteen values are new: keep those weights only.
    let lane = _mm256_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let keep = _mm256_cmpgt_epi16(lane, _mm256_set1_epi16(15 - rem as i16));
    let cols = [&cols[0][..k], &cols[1][..k], &cols[2][..k], &cols[3][..k]];
    let all = _mm256_set1_epi32(-1);
    let mut r = 0;
    while r < n {
        let pair = r + 1 < n;
        let w0 = &w[r * stride..][..k];
        let w1 = if pair {
            &w[(r + 1) * stride..][..k]
        } else {
            w0
        };
        let mut a0 = [_mm256_setzero_si256(); 4];
        let mut a1 = [_mm256_setzero_si256(); 4];
        let mut i = 0;
        while i < k16 {
            mac2x4(w0, w1, cols, i, all, &mut a0, &mut a1);
            i += 16;
        }
        if vector_tail {
            mac2x4(w0, w1, cols, k - 16, keep, &mut a0, &mut a1);
        }
        let scalar_from = if vector_tail { k } else { k16 };
        let s0 = hsum4(a0);
        for c in 0..4 {
            tile[r * 4 + c] =
                bias[r]
                    .wrapping_add(s0[c])
                    .wrapping_add(tail(w0, cols[c], scalar_from, k));
        }
        if pair {
            let s1 = hsum4(a1);
            for c in 0..4 {
                tile[(r + 1) * 4 + c] =
                    bias[r + 1]
                        .wrapping_add(s1[c])
                        .wrapping_add(tail(w1, cols[c], scalar_from, k));
            }
        }
        r += 2;
    }
}

/// The fast requantization of a `[row][column]` tile of four columns (the kernels'
/// `OutQuant::apply` for channels with `shift ≤ −2` or a zero multiplier): for row `r < rows` and
/// column `c`, with `(m, shift) = pairs[r]` and `sh = (−2 − shift) & 31`,
/// `out[r·4 + c] = clamp(((((tile[r·4 + c] · m) >> 32) >> sh) + 1 >> 1) + zp, −128, 127)`
/// (64-bit product, arithmetic shifts). AVX2 when the CPU has it, else the same in scalar code.
pub(crate) fn requant_fast4(tile: &[i32], pairs: &[[i32; 2]], zp: i32, out: &mut [i32]) {
    let rows = pairs.len().min(tile.len() / 4).min(out.len() / 4);
    let done = if has_avx2() {
        // SAFETY: `requant_avx2` needs only AVX2, which the CPU has (checked just above).
        unsafe { requant_avx2(&tile[..4 * rows], &pairs[..rows], zp, &mut out[..4 * rows]) }
    } else {
        0
    };
    for r in done..rows {
        let [m, shift] = pairs[r];
        let sh = ((-2 - shift) as u32) & 31;
        for c in 0..4 {
            let hi = ((i64::from(tile[r * 4 + c]) * i64::from(m)) >> 32) as i32;
            out[r * 4 + c] = ((((hi >> sh) + 1) >> 1) + zp).clamp(-128, 127);
        }
    }
}

/// [`requant_fast4`] on whole pairs of rows (eight lanes: two rows × four columns); returns the
/// rows done.
///
/// VPMULDQ multiplies the even int32 lanes into exact 64-bit products; the odd lanes go through
/// it after a 32-bit shift. The high halves are the `>> 32` of the scalar code (an arithmetic
/// shift of a 64-bit value keeps exactly its high word), VPSRAVD is `>>` by a count below 32, and
/// `|hi| < 2^30` keeps the adds from wrapping.
#[target_feature(enable = "avx2")]
fn requant_avx2(tile: &[i32], pairs: &[[i32; 2]], zp: i32, out: &mut [i32]) -> usize {
    let rows2 = pairs.len() / 2 * 2;
    let (one, zpv) = (_mm256_set1_epi32(1), _mm256_set1_epi32(zp));
    let (lo, hi_bound) = (_mm256_set1_epi32(-128), _mm256_set1_epi32(127));
    for r in (0..rows2).step_by(2) {
        let [m0, s0] = pairs[r];
        let [m1, s1] = pairs[r + 1];
        let sh0 = ((-2 - s0) as u32 & 31) as i32;
        let sh1 = ((-2 - s1) as u32 & 31) as i32;
        let mv = _mm256_setr_epi32(m0, m0, m0, m0, m1, m1, m1, m1);
        let shv = _mm256_setr_epi32(sh0, sh0, sh0, sh0, sh1, sh1, sh1, sh1);
        let a = load8i(tile[r * 4..r * 4 + 8].try_into().expect("8 values"));
        let even = _mm256_mul_epi32(a, mv);
        let odd = _mm256_mul_epi32(_mm256_srli_epi64::<32>(a), _mm256_srli_epi64::<32>(mv));
        let hi = _mm256_blend_epi32::<0b1010_1010>(_mm256_srli_epi64::<32>(even), odd);
        let v = _mm256_srai_epi32::<1>(_mm256_add_epi32(_mm256_srav_epi32(hi, shv), one));
        let v = _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(v, zpv), lo), hi_bound);
        store8i(
            (&mut out[r * 4..r * 4 + 8]).try_into().expect("8 values"),
            v,
        );
    }
    rows2
}

/// The performer's features of one token: for each row `i` of the int16 matrix `w` (`e`
/// columns, `e ≤ 511`), `phi[i] = exp_cut(d_i as f32 · dot_scale − half_norm, cut) · inv_sqrt_m`
/// with the exact dot product `d_i = Σ_c w[i·e + c] · z[c]` (what
/// `kernels::performer::PerformerS8::features_of` computes, element by element). AVX2 when the
/// CPU has it: the dots by VPMADDWD (int16 × int8 products are at most 2^22, pairs 2^23, a row
/// below 2^31), the exponentials eight at a time ([`exp_cut8`], for the finite arguments these
/// scales give); the scalar definition otherwise.
#[allow(clippy::too_many_arguments)]
pub(crate) fn performer_features(
    w: &[i16],
    e: usize,
    z: &[i8],
    dot_scale: f32,
    half_norm: f32,
    inv_sqrt_m: f32,
    cut: f32,
    phi: &mut [f32],
) {
    if e == 0 || e > 511 || z.len() < e {
        return;
    }
    let finite = dot_scale.is_finite() && half_norm.is_finite() && inv_sqrt_m.is_finite();
    if finite && has_avx2() {
        // SAFETY: `features_avx2` needs only AVX2, which the CPU has (checked just above).
        unsafe { features_avx2(w, e, &z[..e], dot_scale, half_norm, inv_sqrt_m, cut, phi) }
    } else {
        for (ph, row) in phi.iter_mut().zip(w.chunks_exact(e)) {
            let d: i32 = row
                .iter()
                .zip(z)
                .map(|(&a, &b)| i32::from(a) * i32::from(b))
                .sum();
            *ph = crate::math::exp_cut(d as f32 * dot_scale - half_norm, cut) * inv_sqrt_m;
        }
    }
}

/// [`performer_features`] with AVX2.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
fn features_avx2(
    w: &[i16],
    e: usize,
    z: &[i8],
    dot_scale: f32,
    half_norm: f32,
    inv_sqrt_m: f32,
    cut: f32,
    phi: &mut [f32],
) {
    // The token widened once, zero-padded to whole blocks of sixteen: a row's last block may
    // read the next row's weights, which meet these zeros.
    let mut zw = [0i16; 512 + 16];
    for (d, &v) in zw.iter_mut().zip(z) {
        *d = i16::from(v);
    }
    let blocks = e.div_ceil(16);
    let rows = phi.len().min(w.len() / e);
    let mut dots = [0i32; 8];
    let mut i0 = 0;
    while i0 < rows {
        let n = (rows - i0).min(8);
        for (j, d) in dots.iter_mut().enumerate().take(n) {
            let row = (i0 + j) * e;
            *d = if row + blocks * 16 <= w.len() {
                let mut acc = _mm256_setzero_si256();
                for b in 0..blocks {
                    let x = load16(w[row + 16 * b..][..16].try_into().expect("16 values"));
                    let y = load16(zw[16 * b..][..16].try_into().expect("16 values"));
                    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(x, y));
                }
                let zero = _mm256_setzero_si256();
                hsum4([acc, zero, zero, zero])[0]
            } else {
                w[row..row + e]
                    .iter()
                    .zip(z)
                    .map(|(&a, &b)| i32::from(a) * i32::from(b))
                    .sum()
            };
        }
        let x = _mm256_sub_ps(
            _mm256_mul_ps(_mm256_cvtepi32_ps(load8i(&dots)), _mm256_set1_ps(dot_scale)),
            _mm256_set1_ps(half_norm),
        );
        let f = _mm256_mul_ps(exp_cut8(x, cut), _mm256_set1_ps(inv_sqrt_m));
        let mut out = [0.0f32; 8];
        store8(&mut out, f);
        phi[i0..i0 + n].copy_from_slice(&out[..n]);
        i0 += n;
    }
}

/// Attention's probabilities × values without transposing the values: for `d` in `dims` and
/// the four probability columns `p[q]` (int16, `0..=32767`),
/// `part[(d − dims.start)·4 + q] = Σ_{j<t} p[q][j] · v[j·c + d]` (wrapping, as every sum here:
/// a probability times an int8 is below 2^22, a key tile of 64 below 2^28). AVX2 when the CPU has
/// it and the buffers fit; the scalar definition otherwise.
pub(crate) fn values_times_probabilities4(
    v: &[i8],
    c: usize,
    t: usize,
    dims: core::ops::Range<usize>,
    p: [&[i16]; 4],
    part: &mut [i32],
) {
    let fits = t > 0
        && dims.start <= dims.end
        && part.len() >= 4 * dims.len()
        && p.iter().all(|col| col.len() >= t)
        && (t - 1)
            .checked_mul(c)
            .and_then(|e| e.checked_add(dims.end))
            .is_some_and(|e| e <= v.len());
    if fits && has_avx2() {
        // SAFETY: `pv_avx2` needs only AVX2, which the CPU has (checked just above).
        unsafe { pv_avx2(v, c, t, dims, p, part) }
    } else {
        for (i, d) in dims.enumerate() {
            for (q, col) in p.iter().enumerate() {
                let mut acc = 0i32;
                for (j, &pj) in col.iter().enumerate().take(t) {
                    if let Some(&x) = v.get(j * c + d) {
                        acc = acc.wrapping_add(i32::from(pj) * i32::from(x));
                    }
                }
                if let Some(o) = part.get_mut(i * 4 + q) {
                    *o = acc;
                }
            }
        }
    }
}

/// [`values_times_probabilities4`] with AVX2: eight value dimensions × four queries per step,
/// keys in pairs. The two keys' values are interleaved into int16 pairs and VPMADDWD multiplies
/// them by the queries' probability pairs: exact int32 sums of exact products.
#[target_feature(enable = "avx2")]
fn pv_avx2(
    v: &[i8],
    c: usize,
    t: usize,
    dims: core::ops::Range<usize>,
    p: [&[i16]; 4],
    part: &mut [i32],
) {
    let d0 = dims.start;
    let len = dims.len();
    let len8 = len / 8 * 8;
    // Probability pairs (key j in the low half, j + 1 in the high half, 0 past the tile), per
    // query, as the int32 lanes VPMADDWD pairs with the interleaved values.
    let pairs = t.div_ceil(2);
    let mut pp = [[0i32; 4]; 32];
    for (jj, row) in pp.iter_mut().enumerate().take(pairs.min(32)) {
        let j = 2 * jj;
        for (x, col) in row.iter_mut().zip(p) {
            let hi = if j + 1 < t { col[j + 1] } else { 0 };
            *x = (col[j] as u16 as u32 | (hi as u16 as u32) << 16) as i32;
        }
    }
    // Eight values of a row as the low half of a vector (no pointer: a 64-bit move).
    let row8 = |at: usize| -> __m128i {
        let b: [i8; 8] = v[at..at + 8].try_into().expect("8 values");
        _mm_cvtsi64_si128(i64::from_le_bytes(b.map(|x| x as u8)))
    };
    if t <= 64 {
        for i in (0..len8).step_by(8) {
            let mut acc = [_mm256_setzero_si256(); 4];
            for (jj, pq) in pp.iter().enumerate().take(pairs) {
                let j = 2 * jj;
                let a = row8(j * c + d0 + i);
                let b = if j + 1 < t {
                    row8((j + 1) * c + d0 + i)
                } else {
                    _mm_setzero_si128()
                };
                // v_j[d], v_{j+1}[d] for the eight d, widened to int16 pairs.
                let x = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(a, b));
                for (a, &pv) in acc.iter_mut().zip(pq) {
                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(x, _mm256_set1_epi32(pv)));
                }
            }
            for (q, a) in acc.iter().enumerate() {
                let mut lanes = [0i32; 8];
                store8i(&mut lanes, *a);
                for (k, &x) in lanes.iter().enumerate() {
                    part[(i + k) * 4 + q] = x;
                }
            }
        }
    }
    let scalar_from = if t <= 64 { len8 } else { 0 };
    for i in scalar_from..len {
        for (q, col) in p.iter().enumerate() {
            part[i * 4 + q] = col[..t].iter().enumerate().fold(0i32, |acc, (j, &pj)| {
                acc.wrapping_add(i32::from(pj) * i32::from(v[j * c + d0 + i]))
            });
        }
    }
}

/// [`crate::quant::round_to_i8`] of eight lanes, as int32 in `[−128, 127]`: `trunc(y + 128.5)`
/// clamped to `[0, 255]`, minus 128. VCVTTPS2DQ gives `i32::MIN` where Rust's `as i32` saturates
/// upward (at or above 2^31), so the sum is first capped at 256 with a VMINPS whose NaN lanes
/// stay NaN (they convert to `i32::MIN` and clamp to 0, as Rust's NaN → 0 does).
#[target_feature(enable = "avx2")]
#[inline]
fn round_to_i8_8(y: __m256) -> __m256i {
    let t = _mm256_min_ps(
        _mm256_set1_ps(256.0),
        _mm256_add_ps(y, _mm256_set1_ps(128.5)),
    );
    let i = _mm256_cvttps_epi32(t);
    let i = _mm256_min_epi32(
        _mm256_max_epi32(i, _mm256_setzero_si256()),
        _mm256_set1_epi32(255),
    );
    _mm256_sub_epi32(i, _mm256_set1_epi32(128))
}

/// Eight int8 values widened to int32 lanes (a 64-bit move, no pointer).
#[target_feature(enable = "avx2")]
#[inline]
fn load8_i8(v: &[i8]) -> __m256i {
    let b: [i8; 8] = v[..8].try_into().expect("8 values");
    _mm256_cvtepi8_epi32(_mm_cvtsi64_si128(i64::from_le_bytes(b.map(|x| x as u8))))
}

/// Stores eight int32 lanes (each in int8 range) as int8.
#[target_feature(enable = "avx2")]
#[inline]
fn store8_i8(dst: &mut [i8], v: __m256i) {
    let mut lanes = [0i32; 8];
    store8i(&mut lanes, v);
    for (d, &x) in dst[..8].iter_mut().zip(&lanes) {
        *d = x as i8;
    }
}

/// The requantizing add `out[i] = round_to_i8(a[i]·ra + b[i]·rb + c)` (`kernels::elementwise`'s
/// `AddS8`, the same operations in the same order), with `a` read from `out` when it is `None`
/// (in place). AVX2 when the CPU has it, else the scalar code.
pub(crate) fn add_s8(ra: f32, rb: f32, c: f32, a: Option<&[i8]>, b: &[i8], out: &mut [i8]) {
    let n = out
        .len()
        .min(b.len())
        .min(a.map_or(usize::MAX, <[i8]>::len));
    let one = |x: i8, z: i8| crate::quant::round_to_i8(x as f32 * ra + z as f32 * rb + c);
    let done = if has_avx2() {
        // SAFETY: `add_avx2` needs only AVX2, which the CPU has (checked just above).
        unsafe { add_avx2(ra, rb, c, a, &b[..n], &mut out[..n]) }
    } else {
        0
    };
    for i in done..n {
        let x = a.map_or(out[i], |a| a[i]);
        out[i] = one(x, b[i]);
    }
}

/// [`add_s8`] on whole blocks of eight; returns the values done.
#[target_feature(enable = "avx2")]
fn add_avx2(ra: f32, rb: f32, c: f32, a: Option<&[i8]>, b: &[i8], out: &mut [i8]) -> usize {
    let n8 = out.len() / 8 * 8;
    let (rav, rbv, cv) = (_mm256_set1_ps(ra), _mm256_set1_ps(rb), _mm256_set1_ps(c));
    for i in (0..n8).step_by(8) {
        let x = match a {
            Some(a) => load8_i8(&a[i..]),
            None => load8_i8(&out[i..]),
        };
        let z = load8_i8(&b[i..]);
        let y = _mm256_add_ps(
            _mm256_add_ps(
                _mm256_mul_ps(_mm256_cvtepi32_ps(x), rav),
                _mm256_mul_ps(_mm256_cvtepi32_ps(z), rbv),
            ),
            cv,
        );
        store8_i8(&mut out[i..], round_to_i8_8(y));
    }
    n8
}

/// One LayerNorm token's output stage (`kernels::layernorm`):
/// `y[i] = round_to_i8(((c·x[i] − sum) as f32 · f) · gain[i] + offset[i])`. AVX2 when the CPU
/// has it (`c·x − sum` is exact in int32: fewer than 2^16 channels of int8), else the scalar
/// code.
pub(crate) fn layernorm_row(
    x: &[i8],
    c: i32,
    sum: i32,
    f: f32,
    gain: &[f32],
    offset: &[f32],
    y: &mut [i8],
) {
    let n = x.len().min(y.len()).min(gain.len()).min(offset.len());
    let done = if has_avx2() {
        // SAFETY: `layernorm_avx2` needs only AVX2, which the CPU has (checked just above).
        unsafe { layernorm_avx2(&x[..n], c, sum, f, &gain[..n], &offset[..n], &mut y[..n]) }
    } else {
        0
    };
    for i in done..n {
        let centered = (c * x[i] as i32 - sum) as f32;
        y[i] = crate::quant::round_to_i8(centered * f * gain[i] + offset[i]);
    }
}

/// [`layernorm_row`] on whole blocks of eight; returns the values done.
#[target_feature(enable = "avx2")]
fn layernorm_avx2(
    x: &[i8],
    c: i32,
    sum: i32,
    f: f32,
    gain: &[f32],
    offset: &[f32],
    y: &mut [i8],
) -> usize {
    let n8 = y.len() / 8 * 8;
    let (cv, sv, fv) = (
        _mm256_set1_epi32(c),
        _mm256_set1_epi32(sum),
        _mm256_set1_ps(f),
    );
    for i in (0..n8).step_by(8) {
        let centered = _mm256_cvtepi32_ps(_mm256_sub_epi32(
            _mm256_mullo_epi32(cv, load8_i8(&x[i..])),
            sv,
        ));
        let g = load8(gain[i..i + 8].try_into().expect("8 values"));
        let b = load8(offset[i..i + 8].try_into().expect("8 values"));
        let v = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(centered, fv), g), b);
        store8_i8(&mut y[i..], round_to_i8_8(v));
    }
    n8
}

/// `y[i] = ftz::add(y[i], ftz::mul(a, x[i]))` for `i < min(y.len(), x.len())`: AVX2 when the
/// CPU has it, else [`ftz::axpy`] (the definition).
pub(crate) fn axpy_ftz(y: &mut [f32], a: f32, x: &[f32]) {
    if has_avx2() {
        // SAFETY: `axpy_avx2` needs only AVX2, which the CPU has (checked just above).
        unsafe { axpy_avx2(y, a, x) }
    } else {
        ftz::axpy(y, a, x);
    }
}

/// `kptv[i·e..][..e]` += `phi[i]` · `x[..e]` (flush-to-zero, [`axpy_ftz`]) for every row `i`.
pub(crate) fn rank1_update_rows(kptv: &mut [f32], e: usize, phi: &[f32], x: &[f32]) {
    if e == 0 || x.len() < e {
        return;
    }
    let x = &x[..e];
    if has_avx2() {
        for (row, &f) in kptv.chunks_exact_mut(e).zip(phi) {
            // SAFETY: `axpy_avx2` needs only AVX2, which the CPU has (checked just above).
            unsafe { axpy_avx2(row, f, x) }
        }
    } else {
        for (row, &f) in kptv.chunks_exact_mut(e).zip(phi) {
            ftz::axpy(row, f, x);
        }
    }
}

/// `y[..e]` = +0.0, then `y += phi[i] · kptv[i·e..][..e]` for every row `i` in order
/// (flush-to-zero, [`axpy_ftz`]).
pub(crate) fn weighted_row_sum(y: &mut [f32], e: usize, phi: &[f32], kptv: &[f32]) {
    if e == 0 || y.len() < e {
        return;
    }
    let y = &mut y[..e];
    y.fill(0.0);
    if has_avx2() {
        for (row, &f) in kptv.chunks_exact(e).zip(phi) {
            // SAFETY: `axpy_avx2` needs only AVX2, which the CPU has (checked just above).
            unsafe { axpy_avx2(y, f, row) }
        }
    } else {
        for (row, &f) in kptv.chunks_exact(e).zip(phi) {
            ftz::axpy(y, f, row);
        }
    }
}

/// Eight f32 values.
#[target_feature(enable = "avx2")]
#[inline]
fn load8(v: &[f32; 8]) -> __m256 {
    // SAFETY: an unaligned load of exactly the 32 bytes of `v`.
    unsafe { _mm256_loadu_ps(v.as_ptr()) }
}

/// Stores eight f32 values.
#[target_feature(enable = "avx2")]
#[inline]
fn store8(dst: &mut [f32; 8], v: __m256) {
    // SAFETY: an unaligned store of exactly the 32 bytes of `dst` (a unique borrow).
    unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), v) }
}

/// [`ftz::flush`] of each lane: a subnormal becomes a zero of its sign (NaN and the rest stay).
#[target_feature(enable = "avx2")]
#[inline]
fn flush8(v: __m256) -> __m256 {
    let sign = _mm256_set1_ps(-0.0);
    let tiny =
        _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_andnot_ps(sign, v), _mm256_set1_ps(f32::MIN_POSITIVE));
    _mm256_blendv_ps(v, _mm256_and_ps(v, sign), tiny)
}

/// [`axpy_ftz`] with AVX2, eight lanes at a time.
///
/// Per lane, with `a` and `x` flushed and `r = a · x` (IEEE): `ftz::mul` gives `r` unless
/// `0 < |r| ≤ 2^−126`; below 2^−126 the rounded product is subnormal, so the exact one is below
/// 2^−126 too (rounding is monotonic and 2^−126 is a float) and `ftz::mul` gives `r`'s signed
/// zero, which is `flush(r)`; at exactly 2^−126 the exact product decides, and the block goes to
/// the scalar definition. NaN products become a NaN sum, which the last step makes the default
/// NaN as `ftz::add` does. So the lane computes `default_nan(flush(flush(y) + flush(r)))`, which
/// is `ftz::add(y, ftz::mul(a, x))`.
#[target_feature(enable = "avx2")]
fn axpy_avx2(y: &mut [f32], a: f32, x: &[f32]) {
    let n = y.len().min(x.len());
    let (y, x) = (&mut y[..n], &x[..n]);
    let av = _mm256_set1_ps(ftz::flush(a));
    let sign = _mm256_set1_ps(-0.0);
    let min_normal = _mm256_set1_ps(f32::MIN_POSITIVE);
    let nan = _mm256_set1_ps(f32::NAN);
    let mut yc = y.chunks_exact_mut(8);
    let mut xc = x.chunks_exact(8);
    for (y8, x8) in (&mut yc).zip(&mut xc) {
        let y8: &mut [f32; 8] = y8.try_into().expect("8 values");
        let x8: &[f32; 8] = x8.try_into().expect("8 values");
        let r = _mm256_mul_ps(av, flush8(load8(x8)));
        let edge = _mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_andnot_ps(sign, r), min_normal);
        if _mm256_movemask_ps(edge) != 0 {
            ftz::axpy(y8, a, x8);
            continue;
        }
        let s = flush8(_mm256_add_ps(flush8(load8(y8)), flush8(r)));
        let s = _mm256_blendv_ps(s, nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(s, s));
        store8(y8, s);
    }
    ftz::axpy(yc.into_remainder(), a, xc.remainder());
}

/// [`crate::math::exp_cut`] of eight lanes: the same operations in the same order (clamp,
/// Cody–Waite reduction, the degree-7 Horner polynomial, two power-of-two factors, the selects),
/// each an IEEE single-precision VMULPS/VADDPS/VSUBPS or an exact conversion, never fused, so
/// every lane equals the scalar function bit for bit for every non-NaN `x` (the truncating
/// conversion sees only the clamped range, where VCVTTPS2DQ and Rust's `as i32` agree). A NaN
/// lane is the caller's to avoid (the kernels' inputs are finite).
#[target_feature(enable = "avx2")]
#[inline]
fn exp_cut8(x: __m256, cut: f32) -> __m256 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const HI: f32 = 88.72;
    let c = |v: f32| _mm256_set1_ps(v);
    let (cutv, hi) = (c(cut), c(HI));
    let xc = _mm256_max_ps(_mm256_min_ps(x, hi), cutv);
    let t = _mm256_add_ps(_mm256_mul_ps(xc, c(LOG2E)), c(128.5));
    let n = _mm256_sub_epi32(_mm256_cvttps_epi32(t), _mm256_set1_epi32(128));
    let nf = _mm256_cvtepi32_ps(n);
    let r = _mm256_sub_ps(
        _mm256_sub_ps(xc, _mm256_mul_ps(nf, c(LN2_HI))),
        _mm256_mul_ps(nf, c(LN2_LO)),
    );
    // 1 + r(1 + r(1/2 + r(1/6 + r(1/24 + r(1/120 + r(1/720 + r/5040)))))), innermost first.
    let coef = [
        1.0f32 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ];
    let mut p = _mm256_mul_ps(r, c(1.0 / 5040.0));
    for (i, &k) in coef.iter().enumerate() {
        p = _mm256_add_ps(c(k), p);
        if i + 1 < coef.len() {
            p = _mm256_mul_ps(r, p);
        }
    }
    let half = _mm256_srai_epi32::<1>(n);
    let pow2 = |e| {
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            e,
            _mm256_set1_epi32(127),
        )))
    };
    let y = _mm256_mul_ps(
        _mm256_mul_ps(p, pow2(half)),
        pow2(_mm256_sub_epi32(n, half)),
    );
    let y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps::<_CMP_LT_OQ>(x, cutv));
    _mm256_blendv_ps(y, c(f32::INFINITY), _mm256_cmp_ps::<_CMP_GT_OQ>(x, hi))
}

/// Eight int32 values.
#[target_feature(enable = "avx2")]
#[inline]
fn load8i(v: &[i32; 8]) -> __m256i {
    // SAFETY: an unaligned load of exactly the 32 bytes of `v`.
    unsafe { _mm256_loadu_si256(v.as_ptr().cast::<__m256i>()) }
}

/// Stores eight int32 values.
#[target_feature(enable = "avx2")]
#[inline]
fn store8i(dst: &mut [i32; 8], v: __m256i) {
    // SAFETY: an unaligned store of exactly the 32 bytes of `dst` (a unique borrow).
    unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast::<__m256i>(), v) }
}

/// [`crate::quant::round_half_up`] of eight lanes for values in `[−2^30, 2^30]` (the kernels'
/// probabilities and features lie in `[0, 32767]`): `t = y + 0.5`, truncated, minus one where the
/// truncation went up (negative non-integers).
#[target_feature(enable = "avx2")]
#[inline]
fn round_half_up8(y: __m256) -> __m256i {
    let t = _mm256_add_ps(y, _mm256_set1_ps(0.5));
    let i = _mm256_cvttps_epi32(t);
    let up = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_cvtepi32_ps(i), t));
    // `up` is −1 in the lanes to decrement.
    _mm256_add_epi32(i, up)
}

/// The attention probabilities of one key tile for four queries: with `s = scores[j·4 + q]`,
/// `p[j·4 + q] = round_half_up(exp(s·scale − m[q]) · 32767)` for `j < t`, and `Σ_j p[j·4 + q]`
/// per query. AVX2 when the CPU has it (two keys × four queries per step), the scalar
/// definition otherwise. For finite `scale` and `m` with `s·scale − m ≤ 0` (the running maximum):
/// the probabilities are in `[0, 32767]`.
pub(crate) fn probabilities4(
    scores: &[i32],
    t: usize,
    scale: f32,
    m: [f32; 4],
    p: &mut [i32],
) -> [i32; 4] {
    let t2 = t / 2 * 2;
    let mut sums = [0i32; 4];
    let ok = scores.len() >= 4 * t
        && p.len() >= 4 * t
        && scale.is_finite()
        && m.iter().all(|v| v.is_finite());
    if ok && has_avx2() {
        // SAFETY: `probabilities_avx2` needs only AVX2, which the CPU has (checked just above).
        sums = unsafe { probabilities_avx2(&scores[..4 * t2], scale, m, &mut p[..4 * t2]) };
    }
    let done = if ok && has_avx2() { t2 } else { 0 };
    for j in done..t.min(scores.len() / 4).min(p.len() / 4) {
        for q in 0..4 {
            let x = scores[j * 4 + q] as f32 * scale - m[q];
            let v = crate::quant::round_half_up(crate::math::exp(x) * 32767.0);
            p[j * 4 + q] = v;
            sums[q] = sums[q].wrapping_add(v);
        }
    }
    sums
}

/// [`probabilities4`] with AVX2 on whole pairs of keys (`scores.len() = p.len()`, a multiple of 8).
#[target_feature(enable = "avx2")]
fn probabilities_avx2(scores: &[i32], scale: f32, m: [f32; 4], p: &mut [i32]) -> [i32; 4] {
    // Lane 4·j' + q holds query q: the scores' own layout, two keys per vector.
    let mv = load8(&[m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let sc = _mm256_set1_ps(scale);
    let mut sum = _mm256_setzero_si256();
    for (s8, p8) in scores.chunks_exact(8).zip(p.chunks_exact_mut(8)) {
        let s8: &[i32; 8] = s8.try_into().expect("8 values");
        let x = _mm256_sub_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(load8i(s8)), sc), mv);
        let v = round_half_up8(_mm256_mul_ps(
            exp_cut8(x, crate::math::EXP_MIN_ARG),
            _mm256_set1_ps(32767.0),
        ));
        store8i(p8.try_into().expect("8 values"), v);
        sum = _mm256_add_epi32(sum, v);
    }
    let mut lanes = [0i32; 8];
    store8i(&mut lanes, sum);
    core::array::from_fn(|q| lanes[q].wrapping_add(lanes[q + 4]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AVX2 against the portable loop on every `k` up to 80 and extreme values.
    #[test]
    fn panel_equals_portable() {
        let mut rng = crate::kernels::cases::Rng(7);
        for k in 1..80 {
            for n in [1, 2, 3, 7] {
                for extreme in [false, true] {
                    let stride = k + (k % 3);
                    let mut w = rng.i8s((n - 1) * stride + k);
                    let mut cols: Vec<Vec<i16>> = (0..4)
                        .map(|_| rng.i8s(k).iter().map(|&v| v.into()).collect())
                        .collect();
                    if extreme {
                        w.iter_mut()
                            .for_each(|v| *v = if *v < 0 { -128 } else { 127 });
                        cols.iter_mut().flatten().for_each(|v| *v = -128);
                    }
                    let bias: Vec<i32> = (0..n).map(|i| i32::MAX - i as i32).collect();
                    let c = [&cols[0][..], &cols[1][..], &cols[2][..], &cols[3][..]];
                    let mut want = vec![0; 4 * n];
                    panel_1x4_portable(&w, k, stride, c, &bias, &mut want, n);
                    let mut got = vec![0; 4 * n];
                    panel_1x4(&w, k, stride, c, &bias, &mut got, n);
                    assert_eq!(got, want, "k={k} n={n}");
                }
            }
        }
    }

    /// Values around every edge of the flush-to-zero definition: subnormals, ±2^−126 and its
    /// neighbours, products that round to 2^−126, zeros of both signs, infinities, NaNs, and
    /// ordinary numbers.
    fn edge_floats(rng: &mut crate::kernels::cases::Rng, n: usize) -> Vec<f32> {
        let specials = [
            0.0f32,
            -0.0,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            f32::from_bits(0x0080_0001),
            f32::from_bits(0x007f_ffff),
            f32::from_bits(0x8000_0001),
            f32::from_bits(0x3f7f_fffe),
            f32::from_bits(0x2000_0000),
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::from_bits(0x7fc1_2345),
            f32::MAX,
            1.0,
            -1.5,
        ];
        (0..n)
            .map(|_| {
                let r = rng.next_u32();
                match r % 4 {
                    0 => specials[(r >> 8) as usize % specials.len()],
                    // Exponents spread so that products land on both sides of 2^−126.
                    1 => f32::from_bits(
                        (rng.next_u32() & 0x807f_ffff) | ((rng.next_u32() % 130) << 23),
                    ),
                    2 => f32::from_bits(rng.next_u32()),
                    _ => (rng.next_u32() as i32 as f32) * 1e-9,
                }
            })
            .collect()
    }

    /// The AVX2 flush-to-zero updates against the definition, bit for bit.
    #[test]
    fn ftz_updates_equal_the_definition() {
        let mut rng = crate::kernels::cases::Rng(0x51ed_0001);
        for round in 0..3000 {
            let n = (rng.next_u32() % 40) as usize;
            let x = edge_floats(&mut rng, n);
            let y0 = edge_floats(&mut rng, n);
            let a = edge_floats(&mut rng, 1)[0];
            let mut want = y0.clone();
            ftz::axpy(&mut want, a, &x);
            let mut got = y0.clone();
            axpy_ftz(&mut got, a, &x);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "round {round} a={a:e}");
            // The row forms.
            let e = (rng.next_u32() % 20 + 1) as usize;
            let m = (rng.next_u32() % 6 + 1) as usize;
            let phi = edge_floats(&mut rng, m);
            let xs = edge_floats(&mut rng, e);
            let k0 = edge_floats(&mut rng, m * e);
            let (mut want, mut got) = (k0.clone(), k0.clone());
            for (row, &f) in want.chunks_exact_mut(e).zip(&phi) {
                ftz::axpy(row, f, &xs);
            }
            rank1_update_rows(&mut got, e, &phi, &xs);
            assert_eq!(bits(&got), bits(&want), "rank1 round {round}");
            let mut want = vec![1.0f32; e];
            want.fill(0.0);
            for (row, &f) in k0.chunks_exact(e).zip(&phi) {
                ftz::axpy(&mut want, f, row);
            }
            let mut got = vec![f32::NAN; e];
            weighted_row_sum(&mut got, e, &phi, &k0);
            assert_eq!(bits(&got), bits(&want), "row sum round {round}");
        }
    }

    /// The eight-lane exponential against `math::exp_cut` on a sweep of the whole range, the
    /// cuts, the overflow edge, zeros and random bit patterns (NaN excluded).
    #[test]
    fn exp_lanes_equal_the_scalar_function() {
        let mut xs: Vec<f32> = Vec::new();
        let mut x = -100.0f32;
        while x < 100.0 {
            xs.push(x);
            x += 0.000_73;
        }
        for edge in [
            -87.33f32,
            -83.17,
            88.72,
            0.0,
            -0.0,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ] {
            for d in -64i32..64 {
                xs.push(f32::from_bits(
                    (edge.to_bits() as i32).wrapping_add(d) as u32
                ));
            }
        }
        let mut rng = crate::kernels::cases::Rng(99);
        xs.extend((0..100_000).map(|_| f32::from_bits(rng.next_u32())));
        xs.retain(|v| !v.is_nan());
        while !xs.len().is_multiple_of(8) {
            xs.push(1.0);
        }
        if !has_avx2() {
            return;
        }
        for cut in [crate::math::EXP_MIN_ARG, -83.17] {
            for x8 in xs.chunks_exact(8) {
                let x8: &[f32; 8] = x8.try_into().unwrap();
                let mut got = [0.0f32; 8];
                // SAFETY: AVX2 is present (checked above).
                unsafe { store8(&mut got, exp_cut8(load8(x8), cut)) };
                for (g, &x) in got.iter().zip(x8) {
                    let want = crate::math::exp_cut(x, cut);
                    assert_eq!(g.to_bits(), want.to_bits(), "exp_cut({x:e}, {cut})");
                }
            }
        }
    }

    /// The probabilities of a tile against the scalar definition, on random and extreme scores.
    #[test]
    fn probabilities_equal_the_definition() {
        let mut rng = crate::kernels::cases::Rng(5);
        for round in 0..2000 {
            let t = (rng.next_u32() % 65) as usize;
            let scores: Vec<i32> = (0..4 * t)
                .map(|_| match rng.next_u32() % 4 {
                    0 => i32::MIN,
                    1 => i32::MAX,
                    _ => (rng.next_u32() as i32) >> (rng.next_u32() % 31),
                })
                .collect();
            let scale = [
                1e-4f32,
                0.01,
                0.125,
                crate::kernels::FACTOR_MIN,
                crate::kernels::FACTOR_MAX,
            ][round % 5];
            let m: [f32; 4] = core::array::from_fn(|q| {
                (0..t)
                    .map(|j| scores[j * 4 + q])
                    .max()
                    .map_or(0.0, |s| s as f32 * scale)
            });
            let mut want = vec![0i32; 4 * t];
            let mut sums = [0i32; 4];
            for j in 0..t {
                for q in 0..4 {
                    let x = scores[j * 4 + q] as f32 * scale - m[q];
                    want[j * 4 + q] = crate::quant::round_half_up(crate::math::exp(x) * 32767.0);
                    sums[q] += want[j * 4 + q];
                }
            }
            let mut got = vec![-1i32; 4 * t];
            assert_eq!(
                probabilities4(&scores, t, scale, m, &mut got),
                sums,
                "round {round}"
            );
            assert_eq!(got, want, "round {round}");
        }
    }

    /// The vector requantization against the scalar fast path on extreme accumulators,
    /// multipliers and shifts.
    #[test]
    fn requant_equals_the_scalar_fast_path() {
        let mut rng = crate::kernels::cases::Rng(11);
        for rows in 0..20 {
            for _ in 0..50 {
                let tile: Vec<i32> = (0..4 * rows)
                    .map(|_| match rng.next_u32() % 4 {
                        0 => i32::MIN,
                        1 => i32::MAX,
                        _ => (rng.next_u32() as i32) >> (rng.next_u32() % 32),
                    })
                    .collect();
                let pairs: Vec<[i32; 2]> = (0..rows)
                    .map(|_| match rng.next_u32() % 4 {
                        0 => [0, (rng.next_u32() % 62) as i32 - 31],
                        1 => [i32::MAX, -2],
                        2 => [1 << 30, -31],
                        _ => [
                            (1 << 30) + (rng.next_u32() >> 2) as i32,
                            -2 - (rng.next_u32() % 30) as i32,
                        ],
                    })
                    .collect();
                let zp = [-128, 127, 0, -7][rows % 4];
                let mut got = vec![0; 4 * rows];
                requant_fast4(&tile, &pairs, zp, &mut got);
                for r in 0..rows {
                    for c in 0..4 {
                        let [m, shift] = pairs[r];
                        let sh = ((-2 - shift) as u32) & 31;
                        let hi = ((i64::from(tile[r * 4 + c]) * i64::from(m)) >> 32) as i32;
                        let want = ((((hi >> sh) + 1) >> 1) + zp).clamp(-128, 127);
                        assert_eq!(got[r * 4 + c], want, "row {r} col {c} m {m} shift {shift}");
                    }
                }
            }
        }
    }

    /// The features against the scalar definition on extreme weights and tokens.
    #[test]
    fn performer_features_equal_the_definition() {
        let mut rng = crate::kernels::cases::Rng(21);
        for round in 0..400 {
            let e = [1, 7, 15, 16, 17, 24, 32, 33, 64, 100, 511][round % 11];
            let m = (rng.next_u32() % 40 + 1) as usize;
            let extreme = round % 3 == 0;
            let w: Vec<i16> = (0..e * m)
                .map(|_| {
                    let v = rng.next_u32();
                    if extreme {
                        if v.is_multiple_of(2) {
                            i16::MIN
                        } else {
                            i16::MAX
                        }
                    } else {
                        v as i16 >> (v % 9)
                    }
                })
                .collect();
            let z: Vec<i8> = if extreme { vec![-128; e] } else { rng.i8s(e) };
            let (dot_scale, half_norm, inv) = (
                [1e-6f32, 3e-4, 0.01][round % 3],
                [0.0f32, 1.5, 40.0][round % 3],
                0.125f32,
            );
            let cut = -83.17;
            let mut want = vec![0.0f32; m];
            for (ph, row) in want.iter_mut().zip(w.chunks_exact(e)) {
                let d: i32 = row
                    .iter()
                    .zip(&z)
                    .map(|(&a, &b)| i32::from(a) * i32::from(b))
                    .sum();
                *ph = crate::math::exp_cut(d as f32 * dot_scale - half_norm, cut) * inv;
            }
            let mut got = vec![f32::NAN; m];
            performer_features(&w, e, &z, dot_scale, half_norm, inv, cut, &mut got);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "round {round} e {e} m {m}");
        }
    }

    /// Probabilities × values against the plain sums, on random and extreme values (32767 ×
    /// −128 everywhere), odd tile lengths and dimension ranges with remainders.
    #[test]
    fn values_times_probabilities_equal_the_sums() {
        let mut rng = crate::kernels::cases::Rng(33);
        for round in 0..600 {
            let t = (rng.next_u32() % 64 + 1) as usize;
            let hd = (rng.next_u32() % 70 + 1) as usize;
            let c = hd + (rng.next_u32() % 3) as usize * 8;
            let extreme = round % 4 == 0;
            let v: Vec<i8> = if extreme {
                vec![-128; t * c]
            } else {
                rng.i8s(t * c)
            };
            let cols: Vec<Vec<i16>> = (0..4)
                .map(|_| {
                    (0..64)
                        .map(|_| {
                            if extreme {
                                32767
                            } else {
                                (rng.next_u32() % 32768) as i16
                            }
                        })
                        .collect()
                })
                .collect();
            let p = [&cols[0][..], &cols[1][..], &cols[2][..], &cols[3][..]];
            let d0 = (rng.next_u32() as usize) % hd;
            let dims = d0..hd;
            let mut got = vec![7i32; 4 * dims.len()];
            values_times_probabilities4(&v, c, t, dims.clone(), p, &mut got);
            for (i, d) in dims.enumerate() {
                for q in 0..4 {
                    let want: i32 = (0..t)
                        .map(|j| i32::from(p[q][j]) * i32::from(v[j * c + d]))
                        .sum();
                    assert_eq!(got[i * 4 + q], want, "round {round} d {d} q {q}");
                }
            }
        }
    }

    /// The eight-lane int8 rounding against `round_to_i8` on every edge: halves, the int8
    /// limits, values past 2^31 either way, infinities, NaN, random bit patterns.
    #[test]
    fn int8_rounding_lanes_equal_the_scalar_function() {
        if !has_avx2() {
            return;
        }
        let mut xs: Vec<f32> = vec![
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            126.5,
            127.5,
            -128.5,
            -127.5,
            -129.0,
            128.0,
            2147483520.0,
            2147483648.0,
            -2147483648.0,
            -2147483904.0,
            3e38,
            -3e38,
            f32::MAX,
            f32::MIN,
        ];
        let mut rng = crate::kernels::cases::Rng(77);
        xs.extend((0..40_000).map(|_| f32::from_bits(rng.next_u32())));
        xs.extend((0..40_000).map(|_| (rng.next_u32() as i32 >> 20) as f32 / 8.0));
        while !xs.len().is_multiple_of(8) {
            xs.push(0.25);
        }
        for x8 in xs.chunks_exact(8) {
            let x8: &[f32; 8] = x8.try_into().unwrap();
            let mut got = [0i32; 8];
            // SAFETY: AVX2 is present (checked above).
            unsafe { store8i(&mut got, round_to_i8_8(load8(x8))) };
            for (g, &x) in got.iter().zip(x8) {
                assert_eq!(
                    *g,
                    i32::from(crate::quant::round_to_i8(x)),
                    "round_to_i8({x:e})"
                );
            }
        }
    }

    /// The add and the LayerNorm output stage against their scalar definitions, on every int8
    /// pair, extreme factors and lengths with remainders.
    #[test]
    fn add_and_layernorm_rows_equal_the_definitions() {
        let all: Vec<(i8, i8)> = (-128..=127i32)
            .flat_map(|a| (-128..=127i32).map(move |b| (a as i8, b as i8)))
            .collect();
        let (a, b): (Vec<i8>, Vec<i8>) = all.into_iter().unzip();
        let factors = [
            (0.5f32, 0.25f32, 3.0f32),
            (crate::kernels::FACTOR_MIN, crate::kernels::FACTOR_MAX, 0.0),
            (
                crate::kernels::FACTOR_MAX,
                -crate::kernels::FACTOR_MAX,
                -7.5,
            ),
            (1.0, 1.0, 0.5),
        ];
        for (ra, rb, c) in factors {
            for len in [a.len(), 13, 7, 0] {
                let want: Vec<i8> = a[..len]
                    .iter()
                    .zip(&b[..len])
                    .map(|(&x, &z)| crate::quant::round_to_i8(x as f32 * ra + z as f32 * rb + c))
                    .collect();
                let mut got = vec![0i8; len];
                add_s8(ra, rb, c, Some(&a[..len]), &b[..len], &mut got);
                assert_eq!(got, want, "add {ra} {rb} {c} len {len}");
                let mut in_place = a[..len].to_vec();
                add_s8(ra, rb, c, None, &b[..len], &mut in_place);
                assert_eq!(in_place, want, "add in place {ra} {rb} {c} len {len}");
            }
        }
        let mut rng = crate::kernels::cases::Rng(8);
        for round in 0..500 {
            let n = (rng.next_u32() % 300 + 1) as usize;
            let x: Vec<i8> = if round % 5 == 0 {
                vec![-128; n]
            } else {
                rng.i8s(n)
            };
            let sum: i32 = x.iter().map(|&v| i32::from(v)).sum();
            let gain: Vec<f32> = (0..n)
                .map(|i| [0.0, 1.0, crate::kernels::FACTOR_MAX, -0.75][(i + round) % 4])
                .collect();
            let offset: Vec<f32> = (0..n)
                .map(|i| [0.0, -3.5, 1e3, 0.5][(i * 3 + round) % 4])
                .collect();
            let f = [1.0f32, 2f32.powi(-49), 2f32.powi(32), 0.01][round % 4];
            let want: Vec<i8> = (0..n)
                .map(|i| {
                    let centered = (n as i32 * x[i] as i32 - sum) as f32;
                    crate::quant::round_to_i8(centered * f * gain[i] + offset[i])
                })
                .collect();
            let mut got = vec![0i8; n];
            layernorm_row(&x, n as i32, sum, f, &gain, &offset, &mut got);
            assert_eq!(got, want, "layernorm round {round}");
        }
    }
}
