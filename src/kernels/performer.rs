//! Performer token attention (T2T-ViT / ViTAE `Token_performer.attn`), int8 k, q, v in, int8 out.
//!
//! With positive random features `φ(z) = exp(w·z − |z|²/2) / √m` (the frozen `w` from the
//! checkpoint, `m` rows): `y = (φ(q) · (vᵀ φ(k))ᵀ) / (φ(q) · Σ_t φ(k_t) + 1e-8)`. The caller then
//! applies `proj` and adds `v` (the skip). Computed in f32 (the exponent reaches tens, see the
//! model notes, quirk Q4: int8 or fp16 features would underflow), streaming over tokens twice so
//! the scratch is O(m · emb), never O(N · m). q, k, v are symmetric (zero point 0).

use super::scratch::{Scratch, bytes_for};
use super::{KernelError, check_len, ensure};
use crate::math::{exp, sqrt};
use crate::quant::quantize_f32;

/// PyTorch's `epsilon` in the normalizer.
const EPSILON: f32 = 1e-8;

/// A validated performer attention.
#[derive(Clone, Copy, Debug)]
pub struct PerformerS8<'a> {
    tokens: usize,
    emb: usize,
    features: usize,
    w: &'a [f32],
    k_scale: f32,
    q_scale: f32,
    v_scale: f32,
    out_inv_scale: f32,
    out_zp: i32,
}

impl<'a> PerformerS8<'a> {
    /// `w` is `features × emb` (row-major, as in the checkpoint); scales are the int8 scales of
    /// k, q, v; the output is quantized with `1/out_scale` and `out_zp`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tokens: usize,
        emb: usize,
        features: usize,
        w: &'a [f32],
        k_scale: f32,
        q_scale: f32,
        v_scale: f32,
        out_inv_scale: f32,
        out_zp: i32,
    ) -> Result<Self, KernelError> {
        ensure(
            tokens > 0 && emb > 0 && features > 0,
            "performer dimensions must be > 0",
        )?;
        ensure(
            tokens < 1 << 24 && emb < 1 << 12 && features < 1 << 12,
            "performer too large",
        )?;
        check_len("performer w", w.len(), emb * features)?;
        ensure(
            w.iter().all(|x| x.is_finite()),
            "performer w must be finite",
        )?;
        let scales = [k_scale, q_scale, v_scale, out_inv_scale];
        ensure(
            scales.iter().all(|s| s.is_finite() && *s > 0.0),
            "performer scales must be finite and > 0",
        )?;
        ensure((-128..=127).contains(&out_zp), "zero point outside int8")?;
        Ok(PerformerS8 {
            tokens,
            emb,
            features,
            w,
            k_scale,
            q_scale,
            v_scale,
            out_inv_scale,
            out_zp,
        })
    }

    /// Channels of k, q, v.
    pub fn emb(&self) -> usize {
        self.emb
    }

    /// Random features.
    pub fn features(&self) -> usize {
        self.features
    }

    /// Multiply-accumulates of one run (feature maps, kptv, output).
    pub fn macs(&self) -> u64 {
        4 * (self.tokens * self.emb * self.features) as u64
    }

    /// `φ(z)` of one token into `phi`, with `zf` as room for the dequantized token.
    fn features_of(&self, z: &[i8], scale: f32, zf: &mut [f32], phi: &mut [f32]) {
        let mut norm = 0i32;
        for (f, &q) in zf.iter_mut().zip(z) {
            *f = q as f32 * scale;
            norm += q as i32 * q as i32;
        }
        let half_norm = norm as f32 * (scale * scale * 0.5);
        let inv_sqrt_m = 1.0 / sqrt(self.features as f32);
        for (ph, w_row) in phi.iter_mut().zip(self.w.chunks_exact(self.emb)) {
            let dot = w_row
                .iter()
                .zip(zf.iter())
                .fold(0.0f32, |a, (&w, &x)| a + w * x);
            *ph = exp(dot - half_norm) * inv_sqrt_m;
        }
    }
}

/// Scratch bytes [`performer_s8`] needs.
pub fn performer_s8_scratch_size(emb: usize, features: usize) -> usize {
    bytes_for::<f32>(emb) + 2 * bytes_for::<f32>(features) + bytes_for::<f32>(emb * features)
}

/// The reference (and only) implementation.
pub fn performer_s8(
    p: &PerformerS8,
    k: &[i8],
    q: &[i8],
    v: &[i8],
    out: &mut [i8],
    scratch: &mut [u8],
) -> Result<(), KernelError> {
    let (n, e, m) = (p.tokens, p.emb, p.features);
    for (what, len) in [
        ("performer k", k.len()),
        ("performer q", q.len()),
        ("performer v", v.len()),
    ] {
        check_len(what, len, n * e)?;
    }
    check_len("performer output", out.len(), n * e)?;
    let mut s = Scratch::new(scratch);
    let zf = s.take::<f32>(e, "performer scratch (token)")?;
    let phi = s.take::<f32>(m, "performer scratch (features)")?;
    let ksum = s.take::<f32>(m, "performer scratch (feature sum)")?;
    let kptv = s.take::<f32>(e * m, "performer scratch (kptv)")?;

    // Pass 1: Σ_t φ(k_t) and kptv[e][i] = Σ_t v[t][e] · φ(k_t)[i], tokens in order.
    for (kt, vt) in k.chunks_exact(e).zip(v.chunks_exact(e)) {
        p.features_of(kt, p.k_scale, zf, phi);
        for (acc, &f) in ksum.iter_mut().zip(phi.iter()) {
            *acc += f;
        }
        for (row, &vq) in kptv.chunks_exact_mut(m).zip(vt) {
            let vf = vq as f32 * p.v_scale;
            for (acc, &f) in row.iter_mut().zip(phi.iter()) {
                *acc += vf * f;
            }
        }
    }
    // Pass 2: per token, D = φ(q)·Σφ(k) and y[e] = φ(q)·kptv[e] / (D + ε).
    for (qt, yt) in q.chunks_exact(e).zip(out.chunks_exact_mut(e)) {
        p.features_of(qt, p.q_scale, zf, phi);
        let d = phi
            .iter()
            .zip(ksum.iter())
            .fold(0.0f32, |a, (&x, &y)| a + x * y);
        let denom = d + EPSILON;
        for (y, row) in yt.iter_mut().zip(kptv.chunks_exact(m)) {
            let num = phi.iter().zip(row).fold(0.0f32, |a, (&x, &r)| a + x * r);
            *y = quantize_f32(num / denom, p.out_inv_scale, p.out_zp);
        }
    }
    Ok(())
}
