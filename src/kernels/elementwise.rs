//! Element-wise int8 kernels: the residual add of two tensors with different scales, mean-pooling
//! over tokens, and the conversions at the model's edges (f32 image in, int8 logits out); and
//! the int16 residual stream's add and its requantization to int8.

use super::{KernelError, check_len, ensure, is_factor, is_factor_or_zero};
use crate::quant::{quantize_f32, round_to_i8, round_to_i16};

/// `out = round(a · ra + b · rb + c)` saturated to int8: the requantizing add of two int8
/// tensors. The host stores `ra = s_a/s_out`, `rb = s_b/s_out`,
/// `c = zp_out − zp_a·ra − zp_b·rb`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AddS8 {
    /// `s_a / s_out`.
    pub ra: f32,
    /// `s_b / s_out`.
    pub rb: f32,
    /// `zp_out − zp_a·ra − zp_b·rb`.
    pub c: f32,
}

impl AddS8 {
    /// Checks the factors: each 0 or of magnitude in `[FACTOR_MIN, FACTOR_MAX]` (2^−64..2^64),
    /// which keeps every value of the add zero or normal (the argument is at the element step).
    pub fn validate(&self) -> Result<(), KernelError> {
        ensure(
            is_factor_or_zero(self.ra) && is_factor_or_zero(self.rb) && is_factor_or_zero(self.c),
            "add factors must be 0 or of magnitude 2^-64..2^64",
        )
    }

    /// One element. Helium vectorizes this on the Cortex-M55 (flush-to-zero arithmetic); no value
    /// here is ever subnormal, so every target computes the same bits: `a·ra` and `b·rb` are 0 or
    /// at least 2^−64 in magnitude (integers times validated factors); a sum of two values whose
    /// larger one is at least 2^−101 is 0 or at least 2^−126 (if it cancels, both operands are
    /// within a factor 2 of each other and their last bits are multiples of 2^−125), which
    /// covers `a·ra + b·rb`, `+ c` (c = 0 or ≥ 2^−64) and `round_to_i8`'s `+ 128.5`.
    #[inline(always)]
    fn one(&self, a: i8, b: i8) -> i8 {
        round_to_i8(a as f32 * self.ra + b as f32 * self.rb + self.c)
    }
}

/// `out[i] = a[i] ⊕ b[i]`.
pub fn add_s8(p: &AddS8, a: &[i8], b: &[i8], out: &mut [i8]) -> Result<(), KernelError> {
    p.validate()?;
    check_len("add b", b.len(), a.len())?;
    check_len("add output", out.len(), a.len())?;
    #[cfg(vitae_x86)]
    if super::host_simd() == super::HostSimd::Avx2 {
        crate::arch::x86::add_s8(p.ra, p.rb, p.c, Some(a), b, out);
        return Ok(());
    }
    for ((y, &x), &z) in out.iter_mut().zip(a).zip(b) {
        *y = p.one(x, z);
    }
    Ok(())
}

/// In place: `a[i] = a[i] ⊕ b[i]` (the arena plan reuses `a`'s storage for the sum).
pub fn add_s8_in_place(p: &AddS8, a: &mut [i8], b: &[i8]) -> Result<(), KernelError> {
    p.validate()?;
    check_len("add b", b.len(), a.len())?;
    #[cfg(vitae_x86)]
    if super::host_simd() == super::HostSimd::Avx2 {
        crate::arch::x86::add_s8(p.ra, p.rb, p.c, None, b, a);
        return Ok(());
    }
    for (x, &z) in a.iter_mut().zip(b) {
        *x = p.one(*x, z);
    }
    Ok(())
}

/// An operand of the int16 add: int8 (a branch's output) or int16 (the residual stream).
#[derive(Clone, Copy, Debug)]
pub enum AddOperand<'a> {
    /// int8 values.
    I8(&'a [i8]),
    /// int16 values.
    I16(&'a [i16]),
}

impl AddOperand<'_> {
    fn len(&self) -> usize {
        match self {
            AddOperand::I8(v) => v.len(),
            AddOperand::I16(v) => v.len(),
        }
    }
}

/// `round(x · ra + y · rb + c)` into int16 over whole slices: one loop per pair of operand types,
/// so the element type is not matched per element.
#[inline(always)]
fn add_lanes<A: Copy + Into<f32>, B: Copy + Into<f32>>(
    p: &AddS8,
    a: &[A],
    b: &[B],
    out: &mut [i16],
) {
    for ((y, &x), &z) in out.iter_mut().zip(a).zip(b) {
        *y = round_to_i16(x.into() * p.ra + z.into() * p.rb + p.c);
    }
}

#[inline(always)]
fn add_lanes_in_place<B: Copy + Into<f32>>(p: &AddS8, a: &mut [i16], b: &[B]) {
    for (x, &z) in a.iter_mut().zip(b) {
        *x = round_to_i16(f32::from(*x) * p.ra + z.into() * p.rb + p.c);
    }
}

/// `out = round(a · ra + b · rb + c)` saturated to int16: [`AddS8`]'s formula (and its argument
/// that no value is ever subnormal: `|a|, |b| ≤ 2^15` are still integers) onto an int16 output;
/// each operand int8 or int16. The reference and only implementation: the residual adds are a
/// small part of a model's work.
pub fn add_s16(
    p: &AddS8,
    a: AddOperand,
    b: AddOperand,
    out: &mut [i16],
) -> Result<(), KernelError> {
    p.validate()?;
    check_len("add b", b.len(), a.len())?;
    check_len("add output", out.len(), a.len())?;
    use AddOperand::{I8, I16};
    match (a, b) {
        (I8(a), I8(b)) => add_lanes(p, a, b, out),
        (I8(a), I16(b)) => add_lanes(p, a, b, out),
        (I16(a), I8(b)) => add_lanes(p, a, b, out),
        (I16(a), I16(b)) => add_lanes(p, a, b, out),
    }
    Ok(())
}

/// In place: `a[i] = a[i] ⊕ b[i]` with `a` int16 (the arena plan reuses `a`'s storage).
pub fn add_s16_in_place(p: &AddS8, a: &mut [i16], b: AddOperand) -> Result<(), KernelError> {
    p.validate()?;
    check_len("add b", b.len(), a.len())?;
    match b {
        AddOperand::I8(b) => add_lanes_in_place(p, a, b),
        AddOperand::I16(b) => add_lanes_in_place(p, a, b),
    }
    Ok(())
}

/// int16 → int8: `out = saturate(round(q · ratio) + zp_out)`, `ratio = s_in / s_out` (the int16
/// input is symmetric). `ratio` in 2^−64..2^64, so `q · ratio` is 0 or normal and the rounding
/// constant `zp_out + 128.5` absorbs it whether or not a target flushes.
pub fn requantize_s16(
    input: &[i16],
    ratio: f32,
    zero_point: i32,
    out: &mut [i8],
) -> Result<(), KernelError> {
    ensure(
        is_factor(ratio) && (-128..=127).contains(&zero_point),
        "requantize: ratio must be in 2^-64..2^64, zero point within int8",
    )?;
    check_len("requantize output", out.len(), input.len())?;
    for (y, &q) in out.iter_mut().zip(input) {
        *y = quantize_f32(q as f32, ratio, zero_point);
    }
    Ok(())
}

/// Mean over tokens: `out[c] = round(Σ_t in[t][c] · scale + offset)`, with the host storing
/// `scale = s_in / (N · s_out)` and `offset = zp_out − zp_in · s_in / s_out`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MeanPoolS8 {
    /// Tokens averaged.
    pub tokens: usize,
    /// Channels per token.
    pub channels: usize,
    /// `s_in / (N · s_out)`.
    pub scale: f32,
    /// `zp_out − zp_in · s_in / s_out`.
    pub offset: f32,
}

impl MeanPoolS8 {
    /// Checks the dimensions and the factors: `scale` and `offset` each 0 or of magnitude in
    /// `[FACTOR_MIN, FACTOR_MAX]`, so `sum·scale + offset` never makes a subnormal (the argument
    /// of [`AddS8`]'s), whether or not a target vectorizes it.
    pub fn validate(&self) -> Result<(), KernelError> {
        ensure(
            self.tokens > 0 && self.channels > 0 && self.tokens < 1 << 23,
            "mean-pool dimensions",
        )?;
        ensure(
            is_factor_or_zero(self.scale) && is_factor_or_zero(self.offset),
            "mean-pool factors must be 0 or of magnitude 2^-64..2^64",
        )
    }
}

/// Mean-pools `tokens × channels` into `channels`.
pub fn mean_pool_s8(p: &MeanPoolS8, input: &[i8], out: &mut [i8]) -> Result<(), KernelError> {
    p.validate()?;
    check_len("mean-pool input", input.len(), p.tokens * p.channels)?;
    check_len("mean-pool output", out.len(), p.channels)?;
    for (c, y) in out.iter_mut().enumerate() {
        let sum: i32 = input[c..]
            .iter()
            .step_by(p.channels)
            .map(|&q| q as i32)
            .sum();
        *y = round_to_i8(sum as f32 * p.scale + p.offset);
    }
    Ok(())
}

/// Quantizes an f32 NCHW image into int8 NHWC: `q = saturate(round(x · inv_scale) + zp)`.
pub fn quantize_image_nchw(
    image: &[f32],
    channels: usize,
    height: usize,
    width: usize,
    inv_scale: f32,
    zero_point: i32,
    out: &mut [i8],
) -> Result<(), KernelError> {
    let rows = 0..height;
    quantize_image_rows_nchw(
        image, channels, height, width, rows, inv_scale, zero_point, out,
    )
}

/// [`quantize_image_nchw`] of rows `rows` of the image only (a strip of a patch-based run):
/// `out` holds those rows, NHWC. Each value is quantized alone, so a strip's bytes are the whole
/// image's bytes of those rows.
#[allow(clippy::too_many_arguments)]
pub fn quantize_image_rows_nchw(
    image: &[f32],
    channels: usize,
    height: usize,
    width: usize,
    rows: core::ops::Range<usize>,
    inv_scale: f32,
    zero_point: i32,
    out: &mut [i8],
) -> Result<(), KernelError> {
    let n = channels * height * width;
    check_len("input image", image.len(), n)?;
    ensure(
        rows.start <= rows.end && rows.end <= height,
        "image rows outside the image",
    )?;
    check_len("quantized image", out.len(), channels * rows.len() * width)?;
    // 2^−64 ≤ inv_scale ≤ 2^64 makes Helium's flush-to-zero invisible here (the RGB path is
    // Helium assembly): `quantize_f32` adds `zero_point + 128.5`, at least 0.5 in magnitude, to
    // `x · inv_scale`, so a product below 2^−126 (flushed on Helium, kept or rounded up to 2^−126
    // elsewhere) and a subnormal pixel (read as 0 on Helium; its product is below 2^−62) both
    // vanish in that sum's rounding; inv_scale itself is never subnormal.
    ensure(
        is_factor(inv_scale) && (-128..=127).contains(&zero_point),
        "input quantization: inv_scale must be in 2^-64..2^64",
    )?;
    let plane = height * width;
    let span = rows.start * width..rows.end * width;
    let q = |x: f32| quantize_f32(x, inv_scale, zero_point);
    if channels == 3 {
        let (r, gb) = image.split_at(plane);
        let (g, b) = gb.split_at(plane);
        let (r, g, b) = (&r[span.clone()], &g[span.clone()], &b[span]);
        // RGB, the usual case: one pass over the pixels with no index arithmetic (Helium: four
        // pixels per step).
        #[cfg(vitae_mve)]
        crate::arch::mve::quantize_rgb([r, g, b], inv_scale, zero_point, out);
        #[cfg(not(vitae_mve))]
        for (((o, &x0), &x1), &x2) in out.chunks_exact_mut(3).zip(r).zip(g).zip(b) {
            o[0] = q(x0);
            o[1] = q(x1);
            o[2] = q(x2);
        }
        return Ok(());
    }
    for (ch, src) in image.chunks_exact(plane).enumerate() {
        for (p, &x) in src[span.clone()].iter().enumerate() {
            out[p * channels + ch] = q(x);
        }
    }
    Ok(())
}

/// `real = scale · (q − zp)` for every element.
pub fn dequantize_s8(
    input: &[i8],
    scale: f32,
    zero_point: i32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_len("dequantize output", out.len(), input.len())?;
    for (y, &q) in out.iter_mut().zip(input) {
        *y = scale * (q as i32 - zero_point) as f32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Helium RGB path's semantics (`arch::mve::quantize_rgb`, here its plain-Rust twin)
    /// against `quantize_f32` per value, on special values and ties; the assembly itself is
    /// compared on the M55 by the on-target test `quantize_image_matches_scalar`.
    #[test]
    fn rgb_fast_path_matches_per_value_quantization() {
        let values = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e30,
            -1e30,
            1e-40,
            0.5,
            -0.5,
            1.5,
            127.5,
            -128.5,
            3.25,
            -7.75,
        ];
        for pixels in 1..=values.len() {
            let planes: Vec<f32> = (0..3 * pixels)
                .map(|i| values[(i * 7) % values.len()])
                .collect();
            let (r, gb) = planes.split_at(pixels);
            let (g, b) = gb.split_at(pixels);
            for (zp, inv) in [(0, 1.0f32), (-128, 0.37), (127, 41.0)] {
                let mut got = vec![0x55i8; 3 * pixels + 1];
                crate::arch::mve::quantize_rgb([r, g, b], inv, zp, &mut got[..3 * pixels]);
                for p in 0..pixels {
                    for (ch, plane) in [r, g, b].iter().enumerate() {
                        assert_eq!(got[3 * p + ch], quantize_f32(plane[p], inv, zp));
                    }
                }
                assert_eq!(got[3 * pixels], 0x55);
            }
        }
    }

    /// The int16 add against its formula in f64 (exact here: the factors are powers of two and
    /// small integers), for every pair of operand types, in and out of place, with saturation at
    /// both ends of int16; and with both operands int8 against [`add_s8`] before its int8
    /// saturation (same formula, same rounding rule).
    #[test]
    fn int16_add_matches_its_formula_in_and_out_of_place() {
        let a16: Vec<i16> = (0..64).map(|i| (i * 1031 - 32768) as i16).collect();
        let b16: Vec<i16> = (0..64).map(|i| (32767 - i * 997) as i16).collect();
        let a8: Vec<i8> = (0..64).map(|i| (i * 4 - 128) as i8).collect();
        let b8: Vec<i8> = (0..64).map(|i| (127 - i * 3) as i8).collect();
        for p in [
            AddS8 {
                ra: 1.0,
                rb: 1.0,
                c: 0.0,
            },
            AddS8 {
                ra: 0.5,
                rb: 2.0,
                c: -3.0,
            },
            AddS8 {
                ra: 256.0,
                rb: 0.25,
                c: 0.5,
            },
        ] {
            let want = |x: f64, y: f64| -> i16 {
                (x * p.ra as f64 + y * p.rb as f64 + p.c as f64 + 0.5)
                    .floor()
                    .clamp(-32768.0, 32767.0) as i16
            };
            let operands = [
                (AddOperand::I16(&a16), AddOperand::I16(&b16)),
                (AddOperand::I16(&a16), AddOperand::I8(&b8)),
                (AddOperand::I8(&a8), AddOperand::I16(&b16)),
                (AddOperand::I8(&a8), AddOperand::I8(&b8)),
            ];
            for (a, b) in operands {
                let value = |o: &AddOperand, i: usize| match o {
                    AddOperand::I8(v) => v[i] as f64,
                    AddOperand::I16(v) => v[i] as f64,
                };
                let mut out = vec![0i16; 64];
                add_s16(&p, a, b, &mut out).unwrap();
                for (i, &y) in out.iter().enumerate() {
                    assert_eq!(y, want(value(&a, i), value(&b, i)), "{p:?} element {i}");
                }
                if let AddOperand::I16(a) = a {
                    let mut in_place = a.to_vec();
                    add_s16_in_place(&p, &mut in_place, b).unwrap();
                    assert_eq!(in_place, out);
                }
            }
            let mut narrow = vec![0i8; 64];
            add_s8(&p, &a8, &b8, &mut narrow).unwrap();
            let mut wide = vec![0i16; 64];
            add_s16(&p, AddOperand::I8(&a8), AddOperand::I8(&b8), &mut wide).unwrap();
            for (n, w) in narrow.iter().zip(&wide) {
                assert_eq!(*n, (*w).clamp(-128, 127) as i8);
            }
        }
        let mut short = vec![0i16; 3];
        let p = AddS8 {
            ra: 1.0,
            rb: 1.0,
            c: 0.0,
        };
        assert!(add_s16(&p, AddOperand::I16(&a16), AddOperand::I8(&b8), &mut short).is_err());
    }

    /// int16 → int8 requantization: `quantize_f32` of the int16 value, so the full int16 range
    /// saturates at both ends and a bad ratio is refused.
    #[test]
    fn int16_requantization_rounds_and_saturates() {
        let x: Vec<i16> = vec![i16::MIN, -300, -1, 0, 1, 255, 256, 300, i16::MAX];
        let mut out = vec![0i8; x.len()];
        requantize_s16(&x, 0.5, 3, &mut out).unwrap();
        let want: Vec<i8> = x.iter().map(|&q| quantize_f32(q as f32, 0.5, 3)).collect();
        assert_eq!(out, want);
        assert_eq!((out[0], out[8]), (-128, 127));
        assert!(requantize_s16(&x, 0.0, 0, &mut out).is_err());
        assert!(requantize_s16(&x, 1.0, 128, &mut out).is_err());
    }
}
