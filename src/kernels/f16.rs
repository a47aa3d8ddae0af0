//! The fp16 kernel set: weights and activations stored as IEEE binary16, arithmetic in f32 in a
//! fixed order (bias first, then inputs in memory order), so results are identical on every
//! target. Cortex-M4/M7 have no fp16 arithmetic; conversions go through the `half` crate.
//!
//! Same operations and layouts as the int8 kernels; see those files for the semantics.

use super::conv::{ConvGeometry, OutputSlice};
use super::performer::{axpy_f32, feature};
use super::scratch::{Scratch, bytes_for};
use super::{KernelError, check_len, ensure, mul};
use crate::math::{exp, gelu, silu, sqrt, zero_tiny};
use half::f16;

/// Activation applied after a conv or linear layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Activation {
    /// Identity.
    None,
    /// `x · Φ(x)`, exact erf.
    Gelu,
    /// `x · sigmoid(x)`.
    Silu,
}

impl Activation {
    #[inline(always)]
    pub(crate) fn apply(self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            Activation::Gelu => gelu(x),
            Activation::Silu => silu(x),
        }
    }
}

/// `x` rounded to the nearest half (ties to even), as every fp16 kernel rounds: by the FPU's
/// VCVTB on Arm cores that have one, elsewhere by `half` in software; the same bits.
#[inline(always)]
pub fn narrow(x: f32) -> f16 {
    crate::arch::vfp::f32_to_f16(x)
}

/// `x` as f32 (exact), as every fp16 kernel widens: by the FPU on Arm cores that have one.
#[inline(always)]
pub fn widen(x: f16) -> f32 {
    crate::arch::vfp::f16_to_f32(x)
}

/// [`widen`] of `src[i]` into `dst[i]` for `i < min(src.len(), dst.len())`: two values per step
/// on Arm cores with an FPU.
pub fn widen_slice(src: &[f16], dst: &mut [f32]) {
    crate::arch::vfp::widen_into(src, dst)
}

/// Scratch bytes [`conv_f16`] needs (on every target: the Arm FPU path uses them).
pub fn conv_f16_scratch_size(g: &ConvGeometry) -> usize {
    super::f16_fpu::conv_scratch_bytes(g)
}

/// fp16 convolution (zero padding), NHWC, weights OHWI per group, f32 bias, bit-identical to
/// [`conv_f16_reference`]: on Arm cores with an FPU four pixels × four output channels at a time
/// ([`super::f16_fpu::conv`]); on an x86-64 host with AVX2 and F16C (unless `VITAE_SIMD=off`)
/// eight output channels at a time; otherwise the reference.
#[allow(clippy::too_many_arguments)]
pub fn conv_f16(
    g: &ConvGeometry,
    weights: &[f16],
    bias: &[f32],
    act: Activation,
    out_slice: OutputSlice,
    input: &[f16],
    output: &mut [f16],
    scratch: &mut [u8],
) -> Result<(), KernelError> {
    if cfg!(vitae_vfp) {
        return super::f16_fpu::conv(g, weights, bias, act, out_slice, input, output, scratch);
    }
    #[cfg(vitae_x86)]
    if super::host_simd() == super::HostSimd::Avx2 {
        check_conv(g, weights, bias, out_slice, input, output)?;
        if crate::arch::x86::f16::conv(g, weights, bias, act, out_slice, input, output) {
            return Ok(());
        }
    }
    conv_f16_reference(g, weights, bias, act, out_slice, input, output)
}

/// The buffers and parameters [`conv_f16`] accepts.
pub(crate) fn check_conv(
    g: &ConvGeometry,
    weights: &[f16],
    bias: &[f32],
    out_slice: OutputSlice,
    input: &[f16],
    output: &[f16],
) -> Result<(), KernelError> {
    g.validate()?;
    check_len("conv weights", weights.len(), g.weight_len())?;
    check_len("conv bias", bias.len(), g.out_c)?;
    check_len(
        "conv input",
        input.len(),
        mul(g.in_h * g.in_w, g.in_c, "conv input size")?,
    )?;
    ensure(
        out_slice.offset + g.out_c <= out_slice.pixel_stride,
        "output slice too narrow",
    )?;
    let need = (g.out_h * g.out_w - 1) * out_slice.pixel_stride + out_slice.offset + g.out_c;
    if output.len() < need {
        return Err(KernelError::BadLength {
            what: "conv output",
            need,
            have: output.len(),
        });
    }
    Ok(())
}

/// The definition of [`conv_f16`]: one output at a time, `acc = bias`, then `acc + x · w` over
/// the taps inside the input and the group's channels in memory order.
#[allow(clippy::too_many_arguments)]
pub fn conv_f16_reference(
    g: &ConvGeometry,
    weights: &[f16],
    bias: &[f32],
    act: Activation,
    out_slice: OutputSlice,
    input: &[f16],
    output: &mut [f16],
) -> Result<(), KernelError> {
    check_conv(g, weights, bias, out_slice, input, output)?;
    let cin_g = g.in_c_per_group();
    let cout_g = g.out_c / g.groups;
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            let out_base = (oy * g.out_w + ox) * out_slice.pixel_stride + out_slice.offset;
            for oc in 0..g.out_c {
                let group = oc / cout_g;
                let mut acc = bias[oc];
                for ky in 0..g.kh {
                    let iy = (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_h as isize;
                    if iy < 0 || iy as usize >= g.in_h {
                        continue;
                    }
                    for kx in 0..g.kw {
                        let ix = (ox * g.stride_w + kx * g.dil_w) as isize - g.pad_w as isize;
                        if ix < 0 || ix as usize >= g.in_w {
                            continue;
                        }
                        let x = &input
                            [(iy as usize * g.in_w + ix as usize) * g.in_c + group * cin_g..]
                            [..cin_g];
                        let w = &weights[((oc * g.kh + ky) * g.kw + kx) * cin_g..][..cin_g];
                        for (&xi, &wi) in x.iter().zip(w) {
                            acc += widen(xi) * widen(wi);
                        }
                    }
                }
                output[out_base + oc] = narrow(act.apply(acc));
            }
        }
    }
    Ok(())
}

/// Scratch bytes [`linear_f16`] needs (on every target: the Arm FPU path uses them).
pub fn linear_f16_scratch_size(in_features: usize) -> usize {
    super::f16_fpu::linear_scratch_bytes(in_features)
}

/// fp16 linear layer: weights `out × in`, f32 bias, bit-identical to [`linear_f16_reference`]: on
/// Arm cores with an FPU four tokens × four outputs at a time ([`super::f16_fpu::linear`]); on an
/// x86-64 host with AVX2 and F16C (unless `VITAE_SIMD=off`) eight outputs at a time; otherwise
/// the reference.
#[allow(clippy::too_many_arguments)]
pub fn linear_f16(
    tokens: usize,
    in_features: usize,
    out_features: usize,
    weights: &[f16],
    bias: &[f32],
    act: Activation,
    input: &[f16],
    output: &mut [f16],
    scratch: &mut [u8],
) -> Result<(), KernelError> {
    if cfg!(vitae_vfp) {
        return super::f16_fpu::linear(
            tokens,
            in_features,
            out_features,
            weights,
            bias,
            act,
            input,
            output,
            scratch,
        );
    }
    #[cfg(vitae_x86)]
    if super::host_simd() == super::HostSimd::Avx2 {
        check_linear(
            tokens,
            in_features,
            out_features,
            weights,
            bias,
            input,
            output,
        )?;
        if crate::arch::x86::f16::linear(
            tokens,
            in_features,
            out_features,
            weights,
            bias,
            act,
            input,
            output,
        ) {
            return Ok(());
        }
    }
    linear_f16_reference(
        tokens,
        in_features,
        out_features,
        weights,
        bias,
        act,
        input,
        output,
    )
}

/// The buffers and parameters [`linear_f16`] accepts.
pub(crate) fn check_linear(
    tokens: usize,
    in_features: usize,
    out_features: usize,
    weights: &[f16],
    bias: &[f32],
    input: &[f16],
    output: &[f16],
) -> Result<(), KernelError> {
    ensure(
        tokens > 0 && in_features > 0 && out_features > 0,
        "linear dimensions must be > 0",
    )?;
    check_len(
        "linear weights",
        weights.len(),
        mul(in_features, out_features, "linear size")?,
    )?;
    check_len("linear bias", bias.len(), out_features)?;
    check_len(
        "linear input",
        input.len(),
        mul(tokens, in_features, "linear input size")?,
    )?;
    check_len(
        "linear output",
        output.len(),
        mul(tokens, out_features, "linear output size")?,
    )?;
    Ok(())
}

/// The definition of [`linear_f16`]: one output at a time, `acc = bias`, then `acc + x · w` over
/// the inputs in memory order.
#[allow(clippy::too_many_arguments)]
pub fn linear_f16_reference(
    tokens: usize,
    in_features: usize,
    out_features: usize,
    weights: &[f16],
    bias: &[f32],
    act: Activation,
    input: &[f16],
    output: &mut [f16],
) -> Result<(), KernelError> {
    check_linear(
        tokens,
        in_features,
        out_features,
        weights,
        bias,
        input,
        output,
    )?;
    for (x, y) in input
        .chunks_exact(in_features)
        .zip(output.chunks_exact_mut(out_features))
    {
        for ((w, &b), yo) in weights
            .chunks_exact(in_features)
            .zip(bias)
            .zip(y.iter_mut())
        {
            let acc = x
                .iter()
                .zip(w)
                .fold(b, |a, (&xi, &wi)| a + widen(xi) * widen(wi));
            *yo = narrow(act.apply(acc));
        }
    }
    Ok(())
}

/// fp16 LayerNorm: two-pass mean and variance in f32.
pub fn layernorm_f16(
    channels: usize,
    eps: f32,
    gamma: &[f32],
    beta: &[f32],
    input: &[f16],
    output: &mut [f16],
) -> Result<(), KernelError> {
    ensure(
        channels > 0 && eps.is_finite() && eps > 0.0,
        "layernorm parameters",
    )?;
    check_len("layernorm gamma", gamma.len(), channels)?;
    check_len("layernorm beta", beta.len(), channels)?;
    ensure(
        input.len().is_multiple_of(channels),
        "layernorm input is not whole tokens",
    )?;
    check_len("layernorm output", output.len(), input.len())?;
    let inv_c = 1.0 / channels as f32;
    for (x, y) in input
        .chunks_exact(channels)
        .zip(output.chunks_exact_mut(channels))
    {
        let mean = x.iter().fold(0.0f32, |a, v| a + widen(*v)) * inv_c;
        let var = x.iter().fold(0.0f32, |a, v| {
            let d = widen(*v) - mean;
            a + d * d
        }) * inv_c;
        let inv_std = 1.0 / sqrt(var + eps);
        for (((&xi, yi), &g), &b) in x.iter().zip(y.iter_mut()).zip(gamma).zip(beta) {
            *yi = narrow((widen(xi) - mean) * inv_std * g + b);
        }
    }
    Ok(())
}

/// Scratch bytes [`attention_f16`] needs.
pub fn attention_f16_scratch_size(head_dim: usize) -> usize {
    bytes_for::<f32>(super::attention::KEY_TILE) + 3 * bytes_for::<f32>(head_dim)
}

/// fp16 multi-head attention: same tiling and online softmax as the int8 kernel, in f32.
#[allow(clippy::too_many_arguments)]
pub fn attention_f16(
    tokens: usize,
    heads: usize,
    head_dim: usize,
    qk_scale: f32,
    q: &[f16],
    k: &[f16],
    v: &[f16],
    out: &mut [f16],
    scratch: &mut [u8],
) -> Result<(), KernelError> {
    use super::attention::KEY_TILE;
    ensure(
        tokens > 0 && heads > 0 && head_dim > 0 && qk_scale.is_finite(),
        "attention parameters",
    )?;
    let c = heads * head_dim;
    for (what, len) in [
        ("attention q", q.len()),
        ("attention k", k.len()),
        ("attention v", v.len()),
    ] {
        check_len(what, len, tokens * c)?;
    }
    check_len("attention output", out.len(), tokens * c)?;
    let mut s = Scratch::new(scratch);
    let scores = s.take::<f32>(KEY_TILE, "attention scratch (scores)")?;
    let acc = s.take::<f32>(head_dim, "attention scratch (output accumulator)")?;
    // The query row and one key row widened to f32 (exact): one conversion per value instead of
    // one per product. The scores are ordered sums, which no compiler vectorizes.
    let qf = s.take::<f32>(head_dim, "attention scratch (query)")?;
    let kf = s.take::<f32>(head_dim, "attention scratch (key)")?;
    for hh in 0..heads {
        let ch = hh * head_dim..(hh + 1) * head_dim;
        for i in 0..tokens {
            widen_slice(&q[i * c..][ch.clone()], qf);
            let (mut m, mut l) = (f32::NEG_INFINITY, 0.0f32);
            acc.fill(0.0);
            for j0 in (0..tokens).step_by(KEY_TILE) {
                let j1 = (j0 + KEY_TILE).min(tokens);
                let mut tmax = f32::NEG_INFINITY;
                for (j, sj) in (j0..j1).zip(scores.iter_mut()) {
                    widen_slice(&k[j * c..][ch.clone()], kf);
                    *sj = qf.iter().zip(kf.iter()).fold(0.0f32, |a, (x, y)| a + x * y) * qk_scale;
                    tmax = tmax.max(*sj);
                }
                let m_new = m.max(tmax);
                let corr = exp(m - m_new);
                l *= corr;
                // Vectorized on Helium: a product ≤ 2^−126 is +0 on every target (see
                // `math::zero_tiny`), so the accumulators never hold a subnormal.
                for a in acc.iter_mut() {
                    *a = zero_tiny(*a * corr);
                }
                for (j, &sj) in (j0..j1).zip(scores.iter()) {
                    let pj = exp(sj - m_new);
                    l += pj;
                    let vj = &v[j * c..][ch.clone()];
                    for (a, vd) in acc.iter_mut().zip(vj) {
                        *a += pj * widen(*vd);
                    }
                }
                m = m_new;
            }
            for (y, &a) in out[i * c..][ch.clone()].iter_mut().zip(acc.iter()) {
                *y = narrow(a / l);
            }
        }
    }
    Ok(())
}

/// Scratch bytes [`performer_f16`] needs.
pub fn performer_f16_scratch_size(emb: usize, features: usize) -> usize {
    super::performer::performer_s8_scratch_size(emb, features)
}

/// fp16 performer attention (same streaming algorithm as the int8 kernel, in f32).
#[allow(clippy::too_many_arguments)]
pub fn performer_f16(
    tokens: usize,
    emb: usize,
    features: usize,
    w: &[f32],
    k: &[f16],
    q: &[f16],
    v: &[f16],
    out: &mut [f16],
    scratch: &mut [u8],
) -> Result<(), KernelError> {
    ensure(
        tokens > 0 && emb > 0 && features > 0,
        "performer dimensions must be > 0",
    )?;
    check_len("performer w", w.len(), emb * features)?;
    for (what, len) in [
        ("performer k", k.len()),
        ("performer q", q.len()),
        ("performer v", v.len()),
    ] {
        check_len(what, len, tokens * emb)?;
    }
    check_len("performer output", out.len(), tokens * emb)?;
    let mut s = Scratch::new(scratch);
    let zf = s.take::<f32>(emb, "performer scratch (token)")?;
    let phi = s.take::<f32>(features, "performer scratch (features)")?;
    let ksum = s.take::<f32>(features, "performer scratch (feature sum)")?;
    let kptv = s.take::<f32>(emb * features, "performer scratch (kptv)")?;
    let inv_sqrt_m = 1.0 / sqrt(features as f32);
    let features_of = |z: &[f16], zf: &mut [f32], phi: &mut [f32]| {
        let mut norm = 0.0f32;
        for (f, x) in zf.iter_mut().zip(z) {
            *f = widen(*x);
            norm += *f * *f;
        }
        for (ph, w_row) in phi.iter_mut().zip(w.chunks_exact(emb)) {
            let dot = w_row
                .iter()
                .zip(zf.iter())
                .fold(0.0f32, |a, (&wi, &x)| a + wi * x);
            *ph = feature(dot - 0.5 * norm, inv_sqrt_m);
        }
    };
    // As the int8 kernel: features 0 or at least 2^−126 (so the feature sums, which Helium
    // vectorizes, never meet a subnormal), the feature × channel updates in flush-to-zero
    // arithmetic on every target (`performer::axpy_f32`).
    for (kt, vt) in k.chunks_exact(emb).zip(v.chunks_exact(emb)) {
        features_of(kt, zf, phi);
        for (acc, &f) in ksum.iter_mut().zip(phi.iter()) {
            *acc += f;
        }
        for (row, vq) in kptv.chunks_exact_mut(features).zip(vt) {
            axpy_f32(row, widen(*vq), phi);
        }
    }
    for (qt, yt) in q.chunks_exact(emb).zip(out.chunks_exact_mut(emb)) {
        features_of(qt, zf, phi);
        let denom = phi
            .iter()
            .zip(ksum.iter())
            .fold(0.0f32, |a, (&x, &y)| a + x * y)
            + 1e-8;
        for (y, row) in yt.iter_mut().zip(kptv.chunks_exact(features)) {
            *y = narrow(phi.iter().zip(row).fold(0.0f32, |a, (&x, &r)| a + x * r) / denom);
        }
    }
    Ok(())
}

/// `out = a + b`.
pub fn add_f16(a: &[f16], b: &[f16], out: &mut [f16]) -> Result<(), KernelError> {
    check_len("add b", b.len(), a.len())?;
    check_len("add output", out.len(), a.len())?;
    for ((y, x), z) in out.iter_mut().zip(a).zip(b) {
        *y = narrow(widen(*x) + widen(*z));
    }
    Ok(())
}

/// In place: `a += b`.
pub fn add_f16_in_place(a: &mut [f16], b: &[f16]) -> Result<(), KernelError> {
    check_len("add b", b.len(), a.len())?;
    for (x, z) in a.iter_mut().zip(b) {
        *x = narrow(widen(*x) + widen(*z));
    }
    Ok(())
}

/// Mean over tokens.
pub fn mean_pool_f16(
    tokens: usize,
    channels: usize,
    input: &[f16],
    out: &mut [f16],
) -> Result<(), KernelError> {
    ensure(tokens > 0 && channels > 0, "mean-pool dimensions")?;
    check_len("mean-pool input", input.len(), tokens * channels)?;
    check_len("mean-pool output", out.len(), channels)?;
    let inv_n = 1.0 / tokens as f32;
    for (c, y) in out.iter_mut().enumerate() {
        let sum = input[c..]
            .iter()
            .step_by(channels)
            .fold(0.0f32, |a, x| a + widen(*x));
        *y = narrow(sum * inv_n);
    }
    Ok(())
}

/// f32 NCHW image → fp16 NHWC.
pub fn image_nchw_to_f16(
    image: &[f32],
    channels: usize,
    height: usize,
    width: usize,
    out: &mut [f16],
) -> Result<(), KernelError> {
    let n = channels * height * width;
    check_len("input image", image.len(), n)?;
    check_len("fp16 image", out.len(), n)?;
    let plane = height * width;
    for (ch, src) in image.chunks_exact(plane).enumerate() {
        for (p, &x) in src.iter().enumerate() {
            out[p * channels + ch] = narrow(x);
        }
    }
    Ok(())
}

/// int8 → fp16: `scale · (q − zp)`.
pub fn dequantize_to_f16(
    input: &[i8],
    scale: f32,
    zero_point: i32,
    out: &mut [f16],
) -> Result<(), KernelError> {
    check_len("dequantize output", out.len(), input.len())?;
    for (y, &q) in out.iter_mut().zip(input) {
        *y = narrow(scale * (q as i32 - zero_point) as f32);
    }
    Ok(())
}

/// int16 (symmetric) → fp16: `scale · q`. `scale` in 2^−64..2^64 (the op checks it), so the
/// product is 0 or normal in f32 before its one rounding to fp16.
pub fn dequantize_s16_to_f16(
    input: &[i16],
    scale: f32,
    out: &mut [f16],
) -> Result<(), KernelError> {
    check_len("dequantize output", out.len(), input.len())?;
    for (y, &q) in out.iter_mut().zip(input) {
        *y = narrow(scale * f32::from(q));
    }
    Ok(())
}

/// fp16 → int8: `saturate(round(x · inv_scale) + zp)`.
pub fn quantize_from_f16(
    input: &[f16],
    inv_scale: f32,
    zero_point: i32,
    out: &mut [i8],
) -> Result<(), KernelError> {
    check_len("quantize output", out.len(), input.len())?;
    for (y, x) in out.iter_mut().zip(input) {
        *y = crate::quant::quantize_f32(widen(*x), inv_scale, zero_point);
    }
    Ok(())
}

/// Every fp16 kernel against an f64 oracle computed from the same fp16 inputs: the kernels round
/// in f32 and once more to fp16, so they must land within an fp16 rounding step (plus the f32
/// accumulation error, bounded by the sum of the magnitudes that were added) of the exact value.
#[cfg(test)]
mod tests {
    use super::super::cases::{self, Rng};
    use super::*;

    /// A half in [−1, 1].
    fn half(rng: &mut Rng) -> f16 {
        f16::from_f32(rng.next_u32() as i32 as f32 / 2_147_483_648.0)
    }

    fn halves(rng: &mut Rng, n: usize) -> Vec<f16> {
        (0..n).map(|_| half(rng)).collect()
    }

    fn floats(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| rng.next_u32() as i32 as f32 / 2_147_483_648.0 * scale)
            .collect()
    }

    /// Fails unless `got` is within one fp16 rounding of `want` (relative 2^-10, or 2^-24 near 0)
    /// plus the f32 error of summing terms of total magnitude `mag`.
    #[track_caller]
    fn close(got: f16, want: f64, mag: f64, what: &str) {
        let tol = want.abs() * 2f64.powi(-10) + mag * 2f64.powi(-20) + 2f64.powi(-24);
        let err = (got.to_f64() - want).abs();
        assert!(
            err <= tol,
            "{what}: got {got} want {want} (error {err:e} > {tol:e})"
        );
    }

    fn act64(a: Activation, x: f64) -> f64 {
        match a {
            Activation::None => x,
            Activation::Gelu => 0.5 * x * (1.0 + libm::erf(x / core::f64::consts::SQRT_2)),
            Activation::Silu => x / (1.0 + (-x).exp()),
        }
    }

    const ACTS: [Activation; 3] = [Activation::None, Activation::Gelu, Activation::Silu];

    #[test]
    fn conv_matches_f64() {
        let mut rng = Rng(0xf16c0);
        let limits = cases::conv::Limits {
            input: 2048,
            weights: 4096,
            output: 4096,
        };
        for i in 0..60 {
            let r = cases::conv::random(&mut rng, limits);
            let g = r.geom;
            let (x, w) = (
                halves(&mut rng, g.in_h * g.in_w * g.in_c),
                halves(&mut rng, g.weight_len()),
            );
            let bias = floats(&mut rng, g.out_c, 0.5);
            let act = ACTS[i % 3];
            let slice = OutputSlice {
                offset: r.offset,
                pixel_stride: r.offset + g.out_c + r.extra,
            };
            let mut out = vec![f16::from_f32(7.0); g.out_h * g.out_w * slice.pixel_stride];
            let mut scratch = vec![0u8; conv_f16_scratch_size(&g)];
            conv_f16(&g, &w, &bias, act, slice, &x, &mut out, &mut scratch).unwrap();
            let (cin_g, cout_g) = (g.in_c_per_group(), g.out_c / g.groups);
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    let pixel = (oy * g.out_w + ox) * slice.pixel_stride;
                    for oc in 0..g.out_c {
                        let (mut acc, mut mag) = (bias[oc] as f64, bias[oc].abs() as f64);
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let iy =
                                    (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_h as isize;
                                let ix =
                                    (ox * g.stride_w + kx * g.dil_w) as isize - g.pad_w as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy as usize >= g.in_h
                                    || ix as usize >= g.in_w
                                {
                                    continue;
                                }
                                for ci in 0..cin_g {
                                    let xv = x[(iy as usize * g.in_w + ix as usize) * g.in_c
                                        + (oc / cout_g) * cin_g
                                        + ci]
                                        .to_f64();
                                    let wv =
                                        w[((oc * g.kh + ky) * g.kw + kx) * cin_g + ci].to_f64();
                                    acc += xv * wv;
                                    mag += (xv * wv).abs();
                                }
                            }
                        }
                        close(out[pixel + r.offset + oc], act64(act, acc), mag, "conv");
                    }
                    // The channels around the slice are untouched.
                    for c in (0..r.offset).chain(r.offset + g.out_c..slice.pixel_stride) {
                        assert_eq!(out[pixel + c], f16::from_f32(7.0));
                    }
                }
            }
        }
    }

    #[test]
    fn linear_matches_f64() {
        let mut rng = Rng(0xf1611);
        for (i, &(t, k, n)) in cases::linear::VITAE.iter().enumerate() {
            let (x, w) = (halves(&mut rng, t * k), halves(&mut rng, k * n));
            let bias = floats(&mut rng, n, 0.5);
            let act = ACTS[i % 3];
            let mut out = vec![f16::ZERO; t * n];
            let mut scratch = vec![0u8; linear_f16_scratch_size(k)];
            linear_f16(t, k, n, &w, &bias, act, &x, &mut out, &mut scratch).unwrap();
            for r in 0..t {
                for o in 0..n {
                    let terms = (0..k).map(|j| x[r * k + j].to_f64() * w[o * k + j].to_f64());
                    let acc = bias[o] as f64 + terms.clone().sum::<f64>();
                    let mag = bias[o].abs() as f64 + terms.map(f64::abs).sum::<f64>();
                    close(out[r * n + o], act64(act, acc), mag, "linear");
                }
            }
        }
    }

    #[test]
    fn layernorm_matches_f64() {
        let mut rng = Rng(0xf161a);
        for &c in &[1usize, 7, 64, 192] {
            let tokens = 5;
            let x = halves(&mut rng, tokens * c);
            let (gamma, beta) = (floats(&mut rng, c, 2.0), floats(&mut rng, c, 1.0));
            let mut out = vec![f16::ZERO; tokens * c];
            layernorm_f16(c, 1e-6, &gamma, &beta, &x, &mut out).unwrap();
            for t in 0..tokens {
                let row: Vec<f64> = x[t * c..][..c].iter().map(|v| v.to_f64()).collect();
                let mean = row.iter().sum::<f64>() / c as f64;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / c as f64;
                let inv = 1.0 / (var + 1e-6).sqrt();
                for ch in 0..c {
                    let want = (row[ch] - mean) * inv * gamma[ch] as f64 + beta[ch] as f64;
                    // The normalized value has relative error ~ c·2^-24 from the f32 statistics.
                    let mag = ((row[ch] - mean).abs() * inv * gamma[ch].abs() as f64) * c as f64;
                    close(out[t * c + ch], want, mag, "layernorm");
                }
            }
        }
    }

    #[test]
    fn attention_matches_f64() {
        let mut rng = Rng(0xf16a7);
        for &(t, heads, d, _) in cases::attention::VITAE.iter().take(12) {
            let c = heads * d;
            let (q, k, v) = (
                halves(&mut rng, t * c),
                halves(&mut rng, t * c),
                halves(&mut rng, t * c),
            );
            let scale = 1.0 / (d as f32).sqrt();
            let mut out = vec![f16::ZERO; t * c];
            let mut scratch = vec![0u8; attention_f16_scratch_size(d)];
            attention_f16(t, heads, d, scale, &q, &k, &v, &mut out, &mut scratch).unwrap();
            for h in 0..heads {
                for i in 0..t {
                    let s: Vec<f64> = (0..t)
                        .map(|j| {
                            (0..d)
                                .map(|e| {
                                    q[i * c + h * d + e].to_f64() * k[j * c + h * d + e].to_f64()
                                })
                                .sum::<f64>()
                                * scale as f64
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let p: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                    let l: f64 = p.iter().sum();
                    for e in 0..d {
                        let want = (0..t)
                            .map(|j| p[j] * v[j * c + h * d + e].to_f64())
                            .sum::<f64>()
                            / l;
                        // exp is accurate to a few f32 ulps; the weighted mean of |v| ≤ 1.
                        close(out[i * c + h * d + e], want, 1.0 + d as f64, "attention");
                    }
                }
            }
        }
    }

    #[test]
    fn performer_matches_f64() {
        let mut rng = Rng(0xf169e);
        for &(t, e, m) in &[(1usize, 8usize, 4usize), (17, 24, 12), (49, 64, 32)] {
            let (k, q, v) = (
                halves(&mut rng, t * e),
                halves(&mut rng, t * e),
                halves(&mut rng, t * e),
            );
            let w = floats(&mut rng, m * e, 1.0);
            let mut out = vec![f16::ZERO; t * e];
            let mut scratch = vec![0u8; performer_f16_scratch_size(e, m)];
            performer_f16(t, e, m, &w, &k, &q, &v, &mut out, &mut scratch).unwrap();
            let phi = |z: &[f16]| -> Vec<f64> {
                let half_norm = z.iter().map(|x| x.to_f64().powi(2)).sum::<f64>() / 2.0;
                w.chunks_exact(e)
                    .map(|row| {
                        let dot: f64 = row.iter().zip(z).map(|(a, b)| *a as f64 * b.to_f64()).sum();
                        (dot - half_norm).exp() / (m as f64).sqrt()
                    })
                    .collect()
            };
            let mut ksum = vec![0.0f64; m];
            let mut kptv = vec![0.0f64; e * m];
            for tt in 0..t {
                let kp = phi(&k[tt * e..][..e]);
                for i in 0..m {
                    ksum[i] += kp[i];
                    for c in 0..e {
                        kptv[c * m + i] += v[tt * e + c].to_f64() * kp[i];
                    }
                }
            }
            for tt in 0..t {
                let qp = phi(&q[tt * e..][..e]);
                let d: f64 = qp.iter().zip(&ksum).map(|(a, b)| a * b).sum::<f64>() + 1e-8;
                for c in 0..e {
                    let num: f64 = (0..m).map(|i| qp[i] * kptv[c * m + i]).sum();
                    // A ratio of sums of positive terms: relative error ~ (t + m)·2^-24.
                    close(
                        out[tt * e + c],
                        num / d,
                        (t + m) as f64 * (num / d).abs().max(1.0),
                        "performer",
                    );
                }
            }
        }
    }

    #[test]
    fn elementwise_match_f64() {
        let mut rng = Rng(0xf16e1);
        let (a, b) = (halves(&mut rng, 300), halves(&mut rng, 300));
        let mut out = vec![f16::ZERO; 300];
        add_f16(&a, &b, &mut out).unwrap();
        let mut in_place = a.clone();
        add_f16_in_place(&mut in_place, &b).unwrap();
        for i in 0..300 {
            let want = a[i].to_f64() + b[i].to_f64();
            close(out[i], want, 0.0, "add");
            assert_eq!(in_place[i], out[i], "add in place");
        }
        // Mean over 50 tokens of 6 channels.
        let x = halves(&mut rng, 300);
        let mut pooled = vec![f16::ZERO; 6];
        mean_pool_f16(50, 6, &x, &mut pooled).unwrap();
        for c in 0..6 {
            let col = (0..50).map(|t| x[t * 6 + c].to_f64());
            let want = col.clone().sum::<f64>() / 50.0;
            close(pooled[c], want, col.map(f64::abs).sum::<f64>(), "mean-pool");
        }
        // The image: NCHW f32 → NHWC fp16, each value rounded once (exactly what f64 → f16 does).
        let (ch, hh, ww) = (3, 4, 5);
        let img = floats(&mut rng, ch * hh * ww, 3.0);
        let mut nhwc = vec![f16::ZERO; img.len()];
        image_nchw_to_f16(&img, ch, hh, ww, &mut nhwc).unwrap();
        for c in 0..ch {
            for p in 0..hh * ww {
                assert_eq!(nhwc[p * ch + c], f16::from_f64(img[c * hh * ww + p] as f64));
            }
        }
        // int8 ↔ fp16.
        let q: Vec<i8> = (0..=255u8).map(|v| v as i8).collect();
        let mut deq = vec![f16::ZERO; 256];
        dequantize_to_f16(&q, 0.037, -3, &mut deq).unwrap();
        for (i, &v) in q.iter().enumerate() {
            close(
                deq[i],
                0.037f32 as f64 * (v as f64 + 3.0),
                0.0,
                "dequantize",
            );
        }
        let mut back = vec![0i8; 256];
        quantize_from_f16(&deq, 1.0 / 0.037, -3, &mut back).unwrap();
        for (i, &v) in back.iter().enumerate() {
            let want = (deq[i].to_f64() / 0.037 - 3.0).round().clamp(-128.0, 127.0);
            assert!(
                (v as f64 - want).abs() <= 1.0,
                "quantize {i}: {v} vs {want}"
            );
            assert!((v as i32 - q[i] as i32).abs() <= 1, "round trip {i}");
        }
    }
}
