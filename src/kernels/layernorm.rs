//! LayerNorm over the channels of each token, int8 in → int8 out ([`layernorm_s8`]), and int16
//! in (the residual stream kept in int16, symmetric) → int8 out ([`layernorm_s16`]).
//!
//! Statistics are exact integer sums; the normalization is f32 (see the numerics contract):
//! with `S = Σ q`, `V = C·Σ q² − S²` (exact, i64),
//! `out_c = round((C·q_c − S) · f · g_c + b_c)`, `f = 1/√(V + eps·C²/s_in²)`,
//! where the host stores `g_c = γ_c / s_out` and `b_c = β_c / s_out + zp_out`.

use super::{KernelError, all_factors_or_zero, check_len, ensure};
use crate::quant::round_to_i8;

/// Smallest `eps_term` accepted: 2^−64.
pub const EPS_TERM_MIN: f32 = super::FACTOR_MIN;
/// Largest `eps_term` accepted: 2^96 (a degenerate input scale of 4e−11 with 2^16 channels gives
/// about 2^84); it keeps `f = 1/√(V + eps_term)` at least 2^−49.
pub const EPS_TERM_MAX: f32 = f32::from_bits(0x6f80_0000);

/// A validated int8 LayerNorm.
#[derive(Clone, Copy, Debug)]
pub struct LayerNormS8<'a> {
    tokens: usize,
    channels: usize,
    /// `eps · C² / s_in²`.
    eps_term: f32,
    gain: &'a [f32],
    offset: &'a [f32],
}

impl<'a> LayerNormS8<'a> {
    /// `gain[c] = γ_c / s_out`, `offset[c] = β_c / s_out + zp_out`, `eps_term = eps·C²/s_in²`.
    pub fn new(
        tokens: usize,
        channels: usize,
        eps_term: f32,
        gain: &'a [f32],
        offset: &'a [f32],
    ) -> Result<Self, KernelError> {
        ensure(
            tokens > 0 && channels > 0 && channels < 1 << 16,
            "layernorm dimensions",
        )?;
        ensure(
            (EPS_TERM_MIN..=EPS_TERM_MAX).contains(&eps_term),
            "layernorm eps term must be in 2^-64..2^96",
        )?;
        check_len("layernorm gain", gain.len(), channels)?;
        check_len("layernorm offset", offset.len(), channels)?;
        ensure(
            all_factors_or_zero(gain) && all_factors_or_zero(offset),
            "layernorm gain/offset must be 0 or of magnitude 2^-64..2^64",
        )?;
        Ok(LayerNormS8 {
            tokens,
            channels,
            eps_term,
            gain,
            offset,
        })
    }
}

/// The reference (and only) implementation: the work is O(tokens·channels), small beside the
/// matrix products around it.
pub fn layernorm_s8(p: &LayerNormS8, input: &[i8], output: &mut [i8]) -> Result<(), KernelError> {
    check_len("layernorm input", input.len(), p.tokens * p.channels)?;
    check_len("layernorm output", output.len(), p.tokens * p.channels)?;
    let c = p.channels as i32;
    for (x, y) in input
        .chunks_exact(p.channels)
        .zip(output.chunks_exact_mut(p.channels))
    {
        // Both sums fit an i32 (|q| ≤ 128 and fewer than 2^16 channels: Σq² < 2^30), which
        // lets the loop vectorize; only the variance numerator needs 64 bits.
        let (mut sum, mut sum_sq) = (0i32, 0i32);
        for &q in x {
            let q = i32::from(q);
            sum += q;
            sum_sq += q * q;
        }
        let var_num = i64::from(c) * i64::from(sum_sq) - i64::from(sum) * i64::from(sum);
        let f = inverse_std(var_num, p.eps_term);
        #[cfg(vitae_x86)]
        if super::host_simd() == super::HostSimd::Avx2 {
            crate::arch::x86::layernorm_row(x, c, sum, f, p.gain, p.offset, y);
            continue;
        }
        // Helium vectorizes this loop (flush-to-zero arithmetic); no value in it is ever
        // subnormal, so every target computes the same bits: `f ∈ [2^−49, 2^32]` (V < 2^47 and the
        // validated eps term), so `centered · f` is 0 or at least 2^−49 and `· g` 0 or at least
        // 2^−113 (gains 0 or 2^−64..2^64, products exact above 2^−126); `+ b` and `+ 128.5` are
        // sums whose larger operand is at least 2^−64, which are 0 or at least 2^−88 (see
        // `AddS8`'s argument).
        for (((&q, out), &g), &b) in x.iter().zip(y.iter_mut()).zip(p.gain).zip(p.offset) {
            let centered = (c * q as i32 - sum) as f32;
            *out = round_to_i8(centered * f * g + b);
        }
    }
    Ok(())
}

/// Most channels [`layernorm_s16`] takes: below 2^15, `|Σ q| < 2^30` and every `C·q − S` fits an
/// i32 for `|q| ≤ 2^15`.
pub const S16_CHANNELS_MAX: usize = (1 << 15) - 1;

/// [`layernorm_s8`] on an int16 input (zero point 0) with the same parameters (`eps_term` in
/// input units squared): the same formula, with `Σ q²` and `V` in 64 bits. The reference and only
/// implementation. No value is ever subnormal (the argument of [`layernorm_s8`]: here
/// `V < 2^60`, so `f ≥ 2^−48` with the largest eps term).
pub fn layernorm_s16(p: &LayerNormS8, input: &[i16], output: &mut [i8]) -> Result<(), KernelError> {
    ensure(
        p.channels <= S16_CHANNELS_MAX,
        "int16 layernorm takes fewer than 2^15 channels",
    )?;
    check_len("layernorm input", input.len(), p.tokens * p.channels)?;
    check_len("layernorm output", output.len(), p.tokens * p.channels)?;
    let c = p.channels as i32;
    for (x, y) in input
        .chunks_exact(p.channels)
        .zip(output.chunks_exact_mut(p.channels))
    {
        let (mut sum, mut sum_sq) = (0i32, 0i64);
        for &q in x {
            let q = i32::from(q);
            sum += q;
            sum_sq += i64::from(q * q);
        }
        let var_num = i64::from(c) * sum_sq - i64::from(sum) * i64::from(sum);
        let f = inverse_std(var_num, p.eps_term);
        for (((&q, out), &g), &b) in x.iter().zip(y.iter_mut()).zip(p.gain).zip(p.offset) {
            let centered = (c * i32::from(q) - sum) as f32;
            *out = round_to_i8(centered * f * g + b);
        }
    }
    Ok(())
}

/// `f = 1/√(V + eps_term)` from the exact variance numerator `V`, as both kernels compute it.
#[inline(always)]
fn inverse_std(var_num: i64, eps_term: f32) -> f32 {
    // The same rounding either way; the 32-bit conversion is one instruction on the Cortex-M
    // FPUs, the 64-bit one a library call.
    let var = match i32::try_from(var_num) {
        Ok(v) => v as f32,
        Err(_) => wide_to_f32(var_num),
    };
    1.0 / crate::math::sqrt(var + eps_term)
}

/// `v as f32` out of line: otherwise the compiler evaluates the library conversion for every
/// token and discards it.
#[cold]
#[inline(never)]
fn wide_to_f32(v: i64) -> f32 {
    v as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel against the formula with a 64-bit variance conversion, on tokens whose
    /// variance numerator fits 32 bits and on wide ones (1024 channels of ±127) where it does not.
    #[test]
    fn matches_the_formula_narrow_and_wide() {
        for channels in [24usize, 1024] {
            let x: Vec<i8> = (0..channels)
                .map(|i| {
                    if i % 3 == 0 {
                        -127
                    } else {
                        127 - (i % 7) as i8
                    }
                })
                .collect();
            let gain: Vec<f32> = (0..channels).map(|i| 0.5 + i as f32 * 1e-3).collect();
            let offset: Vec<f32> = (0..channels).map(|i| (i % 5) as f32 - 2.0).collect();
            let p = LayerNormS8::new(1, channels, 3.0, &gain, &offset).unwrap();
            let mut got = vec![0i8; channels];
            layernorm_s8(&p, &x, &mut got).unwrap();
            let c = channels as i64;
            let sum: i64 = x.iter().map(|&q| i64::from(q)).sum();
            let sum_sq: i64 = x.iter().map(|&q| i64::from(q) * i64::from(q)).sum();
            let var_num = c * sum_sq - sum * sum;
            assert_eq!(var_num > i64::from(i32::MAX), channels == 1024);
            let f = 1.0 / crate::math::sqrt(var_num as f32 + 3.0);
            for (i, &q) in x.iter().enumerate() {
                let centered = (c * i64::from(q) - sum) as f32;
                assert_eq!(got[i], round_to_i8(centered * f * gain[i] + offset[i]));
            }
        }
    }

    /// The int16 kernel against its formula (exact sums in i64), on tokens of full-range
    /// int16 values (the variance numerator needs 64 bits), and against the int8 kernel on int8
    /// values (same formula, same bits).
    #[test]
    fn int16_matches_the_formula_and_the_int8_kernel() {
        for channels in [24usize, 768] {
            let x: Vec<i16> = (0..channels)
                .map(|i| match i % 4 {
                    0 => i16::MIN,
                    1 => i16::MAX,
                    2 => (i as i16).wrapping_mul(97),
                    _ => -(i as i16),
                })
                .collect();
            let gain: Vec<f32> = (0..channels).map(|i| 0.01 + i as f32 * 1e-5).collect();
            let offset: Vec<f32> = (0..channels).map(|i| (i % 5) as f32 - 2.0).collect();
            let p = LayerNormS8::new(1, channels, 1e6, &gain, &offset).unwrap();
            let mut got = vec![0i8; channels];
            layernorm_s16(&p, &x, &mut got).unwrap();
            let c = channels as i64;
            let sum: i64 = x.iter().map(|&q| i64::from(q)).sum();
            let sum_sq: i64 = x.iter().map(|&q| i64::from(q) * i64::from(q)).sum();
            let f = 1.0 / crate::math::sqrt((c * sum_sq - sum * sum) as f32 + 1e6);
            for (i, &q) in x.iter().enumerate() {
                let centered = (c * i64::from(q) - sum) as f32;
                assert_eq!(got[i], round_to_i8(centered * f * gain[i] + offset[i]));
            }
            let x8: Vec<i8> = (0..channels)
                .map(|i| (i as i32 * 37 % 255 - 127) as i8)
                .collect();
            let x16: Vec<i16> = x8.iter().map(|&q| i16::from(q)).collect();
            let (mut a, mut b) = (vec![0i8; channels], vec![0i8; channels]);
            layernorm_s8(&p, &x8, &mut a).unwrap();
            layernorm_s16(&p, &x16, &mut b).unwrap();
            assert_eq!(a, b);
        }
        let wide = vec![0f32; S16_CHANNELS_MAX + 1];
        let p = LayerNormS8::new(1, S16_CHANNELS_MAX + 1, 1.0, &wide, &wide).unwrap();
        let mut out = vec![0i8; S16_CHANNELS_MAX + 1];
        assert!(layernorm_s16(&p, &vec![0i16; S16_CHANNELS_MAX + 1], &mut out).is_err());
    }
}
