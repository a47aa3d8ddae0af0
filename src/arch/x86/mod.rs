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
//! `unsafe` is confined to the three load/dispatch points below, each with its argument.
#![allow(unsafe_code)]

use core::arch::x86_64::{
    __m128i, __m256i, _mm_add_epi32, _mm_cvtsi128_si32, _mm_extract_epi32, _mm_loadu_si128,
    _mm256_add_epi32, _mm256_castsi256_si128, _mm256_cvtepi8_epi16, _mm256_extracti128_si256,
    _mm256_hadd_epi32, _mm256_loadu_si256, _mm256_madd_epi16, _mm256_setzero_si256,
};

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

/// [`panel_1x4`] with AVX2: two rows × four columns per step, sixteen values of `k` at a time
/// (VPMADDWD into eight int32 accumulators), then the sixteen-value remainder in scalar code.
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
    let cols = cols.map(|c| &c[..k]);
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
            let x0 = load_widen(w0[i..i + 16].try_into().expect("16 values"));
            let x1 = load_widen(w1[i..i + 16].try_into().expect("16 values"));
            for c in 0..4 {
                let y = load16(cols[c][i..i + 16].try_into().expect("16 values"));
                a0[c] = _mm256_add_epi32(a0[c], _mm256_madd_epi16(x0, y));
                a1[c] = _mm256_add_epi32(a1[c], _mm256_madd_epi16(x1, y));
            }
            i += 16;
        }
        let s0 = hsum4(a0);
        for c in 0..4 {
            tile[r * 4 + c] = bias[r]
                .wrapping_add(s0[c])
                .wrapping_add(tail(w0, cols[c], k16, k));
        }
        if pair {
            let s1 = hsum4(a1);
            for c in 0..4 {
                tile[(r + 1) * 4 + c] = bias[r + 1]
                    .wrapping_add(s1[c])
                    .wrapping_add(tail(w1, cols[c], k16, k));
            }
        }
        r += 2;
    }
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
}
