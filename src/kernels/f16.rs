//! The fp16 kernel set: weights and activations stored as IEEE binary16, arithmetic in f32 in a
//! fixed order (bias first, then inputs in memory order), so results are identical on every
//! target. Cortex-M4/M7 have no fp16 arithmetic; conversions go through the `half` crate.
//!
//! Same operations and layouts as the int8 kernels; see those files for the semantics.

use super::conv::{ConvGeometry, OutputSlice};
use super::scratch::{Scratch, bytes_for};
use super::{KernelError, check_len, ensure, mul};
use crate::math::{exp, gelu, silu, sqrt};
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
    fn apply(self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            Activation::Gelu => gelu(x),
            Activation::Silu => silu(x),
        }
    }
}

#[inline(always)]
fn h(x: f32) -> f16 {
    f16::from_f32(x)
}

/// fp16 convolution (zero padding), NHWC, weights OHWI per group, f32 bias.
#[allow(clippy::too_many_arguments)]
pub fn conv_f16(
    g: &ConvGeometry,
    weights: &[f16],
    bias: &[f32],
    act: Activation,
    out_slice: OutputSlice,
    input: &[f16],
    output: &mut [f16],
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
                            acc += xi.to_f32() * wi.to_f32();
                        }
                    }
                }
                output[out_base + oc] = h(act.apply(acc));
            }
        }
    }
    Ok(())
}

/// fp16 linear layer: weights `out × in`, f32 bias.
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
                .fold(b, |a, (&xi, &wi)| a + xi.to_f32() * wi.to_f32());
            *yo = h(act.apply(acc));
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
        input.len() % channels == 0,
        "layernorm input is not whole tokens",
    )?;
    check_len("layernorm output", output.len(), input.len())?;
    let inv_c = 1.0 / channels as f32;
    for (x, y) in input
        .chunks_exact(channels)
        .zip(output.chunks_exact_mut(channels))
    {
        let mean = x.iter().fold(0.0f32, |a, v| a + v.to_f32()) * inv_c;
        let var = x.iter().fold(0.0f32, |a, v| {
            let d = v.to_f32() - mean;
            a + d * d
        }) * inv_c;
        let inv_std = 1.0 / sqrt(var + eps);
        for (((&xi, yi), &g), &b) in x.iter().zip(y.iter_mut()).zip(gamma).zip(beta) {
            *yi = h((xi.to_f32() - mean) * inv_std * g + b);
        }
    }
    Ok(())
}

/// Scratch bytes [`attention_f16`] needs.
pub fn attention_f16_scratch_size(head_dim: usize) -> usize {
    bytes_for::<f32>(super::attention::KEY_TILE) + bytes_for::<f32>(head_dim)
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
    for hh in 0..heads {
        let ch = hh * head_dim..(hh + 1) * head_dim;
        for i in 0..tokens {
            let qi = &q[i * c..][ch.clone()];
            let (mut m, mut l) = (f32::NEG_INFINITY, 0.0f32);
            acc.fill(0.0);
            for j0 in (0..tokens).step_by(KEY_TILE) {
                let j1 = (j0 + KEY_TILE).min(tokens);
                let mut tmax = f32::NEG_INFINITY;
                for (j, sj) in (j0..j1).zip(scores.iter_mut()) {
                    let kj = &k[j * c..][ch.clone()];
                    *sj = qi
                        .iter()
                        .zip(kj)
                        .fold(0.0f32, |a, (x, y)| a + x.to_f32() * y.to_f32())
                        * qk_scale;
                    tmax = tmax.max(*sj);
                }
                let m_new = m.max(tmax);
                let corr = exp(m - m_new);
                l *= corr;
                for a in acc.iter_mut() {
                    *a *= corr;
                }
                for (j, &sj) in (j0..j1).zip(scores.iter()) {
                    let pj = exp(sj - m_new);
                    l += pj;
                    let vj = &v[j * c..][ch.clone()];
                    for (a, vd) in acc.iter_mut().zip(vj) {
                        *a += pj * vd.to_f32();
                    }
                }
                m = m_new;
            }
            for (y, &a) in out[i * c..][ch.clone()].iter_mut().zip(acc.iter()) {
                *y = h(a / l);
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
            *f = x.to_f32();
            norm += *f * *f;
        }
        for (ph, w_row) in phi.iter_mut().zip(w.chunks_exact(emb)) {
            let dot = w_row
                .iter()
                .zip(zf.iter())
                .fold(0.0f32, |a, (&wi, &x)| a + wi * x);
            *ph = exp(dot - 0.5 * norm) * inv_sqrt_m;
        }
    };
    for (kt, vt) in k.chunks_exact(emb).zip(v.chunks_exact(emb)) {
        features_of(kt, zf, phi);
        for (acc, &f) in ksum.iter_mut().zip(phi.iter()) {
            *acc += f;
        }
        for (row, vq) in kptv.chunks_exact_mut(features).zip(vt) {
            let vf = vq.to_f32();
            for (acc, &f) in row.iter_mut().zip(phi.iter()) {
                *acc += vf * f;
            }
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
            *y = h(phi.iter().zip(row).fold(0.0f32, |a, (&x, &r)| a + x * r) / denom);
        }
    }
    Ok(())
}

/// `out = a + b`.
pub fn add_f16(a: &[f16], b: &[f16], out: &mut [f16]) -> Result<(), KernelError> {
    check_len("add b", b.len(), a.len())?;
    check_len("add output", out.len(), a.len())?;
    for ((y, x), z) in out.iter_mut().zip(a).zip(b) {
        *y = h(x.to_f32() + z.to_f32());
    }
    Ok(())
}

/// In place: `a += b`.
pub fn add_f16_in_place(a: &mut [f16], b: &[f16]) -> Result<(), KernelError> {
    check_len("add b", b.len(), a.len())?;
    for (x, z) in a.iter_mut().zip(b) {
        *x = h(x.to_f32() + z.to_f32());
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
            .fold(0.0f32, |a, x| a + x.to_f32());
        *y = h(sum * inv_n);
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
            out[p * channels + ch] = h(x);
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
        *y = h(scale * (q as i32 - zero_point) as f32);
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
        *y = crate::quant::quantize_f32(x.to_f32(), inv_scale, zero_point);
    }
    Ok(())
}
