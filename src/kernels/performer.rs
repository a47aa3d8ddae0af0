//! Performer token attention (T2T-ViT / ViTAE `Token_performer.attn`), int8 k, q, v in, int8 out.
//!
//! With positive random features `φ(z) = exp(w·z − |z|²/2) / √m` (the frozen `w` from the
//! checkpoint, `m` rows): `y = (φ(q) · (vᵀ φ(k))ᵀ) / (φ(q) · Σ_t φ(k_t) + 1e-8)`. The caller then
//! applies `proj` and adds `v` (the skip).
//!
//! Numerics (part of the contract):
//! * `w` is stored as int16 with one scale (`w ≈ w_scale · w_q`), so `w·z` is an exact integer dot
//!   product of the int16 `w_q` and the int8 token; the optimized paths (SMLAD, Helium) may sum it
//!   in any order. `|z|²` is exact too.
//! * The exponent, the features and everything after them are f32 (the exponent reaches tens,
//!   see the model notes, quirk Q4: int8 or fp16 features would underflow), in a fixed order:
//!   `kptv` is kept transposed (`m × emb`) so its update and the output are element-wise over the
//!   channels (vectorizable without reordering any sum), and the sums over tokens and over
//!   features run in index order.
//! * The output is `round(y_num · (1/s_out) / (D + ε))`, the division done once per token.
//! * Two streaming passes over the tokens; scratch is O(m · emb), never O(N · m). q, k, v are
//!   symmetric (zero point 0).

use super::scratch::{Scratch, bytes_for};
use super::{KernelError, check_len, ensure, is_factor};
use crate::math::{ftz, sqrt};
use crate::quant::quantize_f32;

/// PyTorch's `epsilon` in the normalizer.
const EPSILON: f32 = 1e-8;

/// Smallest k, q and w scale accepted: 2^−40 (their products, `scale · w_scale` and `scale²/2`,
/// stay at least 2^−81).
pub const SCALE_MIN: f32 = f32::from_bits(0x2b80_0000);
/// Largest k, q and w scale accepted: 2^40.
pub const SCALE_MAX: f32 = f32::from_bits(0x5380_0000);

/// Smallest exponent with a nonzero feature: −83.17, where the exponential is `2^−120 · 1.0077`.
/// Below it (where `math::exp` alone would still give values down to 2^−126, and 0 below −87.33)
/// the feature is 0, so every feature is 0 or above 2^−126 (`1/√m > 2^−6`) on every target:
/// Helium's vectorized loops never meet a subnormal feature.
pub const FEATURE_ARG_MIN: f32 = -83.17;

/// A feature from its exponent: `e^x · (1/√m)`, or 0 when `x < −83.17` ([`FEATURE_ARG_MIN`];
/// [`math::exp_cut`](crate::math::exp_cut), the same instructions as `math::exp`).
#[inline(always)]
pub fn feature(x: f32, inv_sqrt_m: f32) -> f32 {
    crate::math::exp_cut(x, FEATURE_ARG_MIN) * inv_sqrt_m
}

/// Largest `emb`: keeps the int16 × int8 dot product inside i32 (`emb · 2^15 · 2^7 < 2^31`).
pub const MAX_EMB: usize = 511;

/// A validated performer attention.
#[derive(Clone, Copy, Debug)]
pub struct PerformerS8<'a> {
    tokens: usize,
    emb: usize,
    features: usize,
    w: &'a [i16],
    w_scale: f32,
    k_scale: f32,
    q_scale: f32,
    v_scale: f32,
    out_inv_scale: f32,
    out_zp: i32,
    /// `1/√m`, computed once.
    inv_sqrt_m: f32,
}

impl<'a> PerformerS8<'a> {
    /// `w` is `features × emb` int16 (row-major, as in the checkpoint) with `w_scale`; scales
    /// are the int8 scales of k, q, v; the output is quantized with `1/out_scale` and `out_zp`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tokens: usize,
        emb: usize,
        features: usize,
        w: &'a [i16],
        w_scale: f32,
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
            tokens < 1 << 24 && emb <= MAX_EMB && features < 1 << 12,
            "performer too large (emb at most 511)",
        )?;
        check_len("performer w", w.len(), emb * features)?;
        ensure(
            [w_scale, k_scale, q_scale]
                .iter()
                .all(|s| (SCALE_MIN..=SCALE_MAX).contains(s)),
            "performer k, q and w scales must be in 2^-40..2^40",
        )?;
        ensure(
            is_factor(v_scale) && is_factor(out_inv_scale),
            "performer v scale and output inverse scale must be in 2^-64..2^64",
        )?;
        ensure((-128..=127).contains(&out_zp), "zero point outside int8")?;
        Ok(PerformerS8 {
            tokens,
            emb,
            features,
            w,
            w_scale,
            k_scale,
            q_scale,
            v_scale,
            out_inv_scale,
            out_zp,
            inv_sqrt_m: 1.0 / sqrt(features as f32),
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

    /// Multiply-accumulates of one run: the two feature maps, kptv and the output (4·N·e·m) plus
    /// the normalizer D (N·m), as the model's reference MAC counts have them.
    pub fn macs(&self) -> u64 {
        (self.tokens * self.features * (4 * self.emb + 1)) as u64
    }

    /// Multiply-accumulates of pass 1 (`pass == 1`: k features and kptv, 2·N·e·m) or pass 2
    /// (q features, the output and D, 2·N·e·m + N·m); together [`macs`](Self::macs).
    pub fn pass_macs(&self, pass: u8) -> u64 {
        let (n, e, m) = (self.tokens as u64, self.emb as u64, self.features as u64);
        2 * n * e * m + if pass == 2 { n * m } else { 0 }
    }

    /// `φ(z)` of one token into `phi`.
    ///
    /// Helium vectorizes the exponents, exponentials and features (flush-to-zero arithmetic); no
    /// value there is subnormal, so every target computes the same bits: `dot · dot_scale` is 0 or
    /// at least 2^−80 and `half_norm` 0 or at least 2^−81 (scales in 2^−40..2^40), so their
    /// difference is 0 or at least 2^−106 (a sum whose larger operand is M is 0 or at least
    /// M·2^−25); the exponential of such an exponent is the same in both arithmetics (see
    /// [`math::exp`](crate::math::exp)), and [`feature`] keeps it only from the exponent −83.17 on
    /// (`e^x > 2^−120`), so the features are 0 or above 2^−126.
    fn features_of(&self, z: &[i8], scale: f32, phi: &mut [f32]) {
        let norm: i32 = z.iter().map(|&q| q as i32 * q as i32).sum();
        let half_norm = norm as f32 * (scale * scale * 0.5);
        let dot_scale = scale * self.w_scale;
        let inv_sqrt_m = self.inv_sqrt_m;
        #[cfg(vitae_x86)]
        if super::host_simd() == super::HostSimd::Avx2 {
            // The same operations per element, eight features at a time.
            crate::arch::x86::performer_features(
                self.w,
                self.emb,
                z,
                dot_scale,
                half_norm,
                inv_sqrt_m,
                FEATURE_ARG_MIN,
                phi,
            );
            return;
        }
        if cfg!(any(vitae_mve, vitae_dsp)) {
            // The exact integer dots of all rows first (Helium: the token stays in registers;
            // DSP: widened once into int16 pairs), their bits parked in `phi`; then exponents
            // and exponentials in one element-wise loop, which Helium runs four lanes at a time.
            feature_dots(self.w, self.emb, z, bytemuck::cast_slice_mut(phi));
            for ph in phi.iter_mut() {
                let dot = ph.to_bits() as i32;
                *ph = feature(dot as f32 * dot_scale - half_norm, inv_sqrt_m);
            }
        } else {
            // Same operations per element, in one pass (no SIMD to feed).
            let rows = phi.iter_mut().zip(self.w.chunks_exact(self.emb));
            for (ph, w_row) in rows {
                let x = dot_s16_s8(w_row, z) as f32 * dot_scale - half_norm;
                *ph = feature(x, inv_sqrt_m);
            }
        }
    }
}

/// `out[i] = Σ_c w[i·e + c] · z[c]` for the rows `i < min(out.len(), w.len() / e)` of the
/// int16 feature matrix `w` (`e` columns) against the int8 token `z`: exact integer dot products
/// (Helium assembly with the token held in registers on the M55, SMLAD on int16 pairs on the
/// M4/M7). Public for the on-target tests.
pub fn feature_dots(w: &[i16], e: usize, z: &[i8], out: &mut [i32]) {
    #[cfg(any(test, vitae_mve))]
    crate::arch::mve::dot_rows_s16_s8(w, e, z, out);
    #[cfg(all(not(any(test, vitae_mve)), vitae_dsp))]
    crate::arch::dsp::dot_rows_s16_s8(w, e, z, out);
    #[cfg(not(any(test, vitae_mve, vitae_dsp)))]
    if e > 0 && z.len() >= e {
        for (o, row) in out.iter_mut().zip(w.chunks_exact(e)) {
            *o = dot_s16_s8(row, &z[..e]);
        }
    }
}

/// `y[i] += a · x[i]` over `min(y.len(), x.len())` values, the product and the sum each rounded
/// in Arm flush-to-zero arithmetic ([`crate::math::ftz::axpy`] is the definition): Helium assembly
/// on the M55, the FPU in flush-to-zero mode on the M4/M7, AVX2 lanes with explicit flushes on an
/// x86-64 host that has it, the emulation elsewhere. Public for the on-target tests.
#[inline(always)]
pub fn axpy_f32(y: &mut [f32], a: f32, x: &[f32]) {
    #[cfg(any(test, vitae_mve))]
    crate::arch::mve::axpy_f32(y, a, x);
    #[cfg(all(not(test), vitae_dsp, not(vitae_mve)))]
    crate::arch::dsp::axpy_f32(y, a, x);
    #[cfg(all(not(any(test, vitae_mve, vitae_dsp)), vitae_x86))]
    if super::host_simd() == super::HostSimd::Avx2 {
        crate::arch::x86::axpy_ftz(y, a, x);
    } else {
        crate::math::ftz::axpy(y, a, x);
    }
    #[cfg(not(any(test, vitae_mve, vitae_dsp, vitae_x86)))]
    crate::math::ftz::axpy(y, a, x);
}

/// `kptv[i][c] += phi[i] · x[c]` for every feature row (Helium: registers hold a chunk of `x`
/// while all rows are updated); the same operations per element as one [`axpy_f32`] per row.
/// Public for the on-target tests.
#[inline(always)]
pub fn rank1_update_rows(kptv: &mut [f32], e: usize, phi: &[f32], x: &[f32]) {
    #[cfg(any(test, vitae_mve))]
    crate::arch::mve::rank1_update_rows(kptv, e, phi, x);
    #[cfg(all(not(test), vitae_dsp, not(vitae_mve)))]
    crate::arch::dsp::rank1_update_rows(kptv, e, phi, x);
    #[cfg(all(not(any(test, vitae_mve, vitae_dsp)), vitae_x86))]
    if super::host_simd() == super::HostSimd::Avx2 {
        crate::arch::x86::rank1_update_rows(kptv, e, phi, x);
        return;
    }
    #[cfg(not(any(test, vitae_mve, vitae_dsp)))]
    if e > 0 && x.len() >= e {
        for (row, &f) in kptv.chunks_exact_mut(e).zip(phi) {
            crate::math::ftz::axpy(row, f, &x[..e]);
        }
    }
}

/// `y[c] = Σ_i phi[i] · kptv[i][c]`, summed in feature order from +0.0 (Helium: a chunk of `y`
/// accumulates in registers over all rows); equal to zeroing `y` and one [`axpy_f32`] per row.
/// Public for the on-target tests.
#[inline(always)]
pub fn weighted_row_sum(y: &mut [f32], e: usize, phi: &[f32], kptv: &[f32]) {
    #[cfg(any(test, vitae_mve))]
    crate::arch::mve::weighted_row_sum(y, e, phi, kptv);
    #[cfg(all(not(test), vitae_dsp, not(vitae_mve)))]
    crate::arch::dsp::weighted_row_sum(y, e, phi, kptv);
    #[cfg(all(not(any(test, vitae_mve, vitae_dsp)), vitae_x86))]
    if super::host_simd() == super::HostSimd::Avx2 {
        crate::arch::x86::weighted_row_sum(y, e, phi, kptv);
        return;
    }
    #[cfg(not(any(test, vitae_mve, vitae_dsp)))]
    if e > 0 && y.len() >= e {
        let y = &mut y[..e];
        y.fill(0.0);
        for (row, &f) in kptv.chunks_exact(e).zip(phi) {
            crate::math::ftz::axpy(y, f, row);
        }
    }
}

/// `Σ w[i]·z[i]`, exact in i32 for `len ≤ MAX_EMB` (the host's scalar path; the M4/M7 and the
/// M55 take [`feature_dots`]).
#[inline]
fn dot_s16_s8(w: &[i16], z: &[i8]) -> i32 {
    w.iter().zip(z).map(|(&a, &b)| a as i32 * b as i32).sum()
}

/// Scratch bytes [`performer_s8`] needs (its running sums, [`performer_state_len`] values, and
/// a token's row and features).
pub fn performer_s8_scratch_size(emb: usize, features: usize) -> usize {
    2 * bytes_for::<f32>(emb) + 2 * bytes_for::<f32>(features) + bytes_for::<f32>(emb * features)
}

/// Scratch bytes [`performer_s8_accumulate`] and [`performer_s8_emit`] need (a token's row and
/// features; the running sums are the caller's state).
pub fn performer_s8_pass_scratch_size(emb: usize, features: usize) -> usize {
    bytes_for::<f32>(emb) + bytes_for::<f32>(features)
}

/// f32 values of the running sums over tokens that [`performer_s8_accumulate`] keeps between
/// calls: `Σ_t φ(k_t)` (`features` values), then `kptvᵀ` (`features × emb`).
pub fn performer_state_len(emb: usize, features: usize) -> usize {
    features * (emb + 1)
}

/// The performer (one implementation: its exact integer dot products use the target's SIMD, the
/// f32 part is element-wise and in a fixed order): [`performer_s8_accumulate`] over all tokens,
/// then [`performer_s8_emit`] for all tokens.
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
    let state = s.take::<f32>(performer_state_len(e, m), "performer scratch (sums)")?;
    let rest = s.rest();
    state.fill(0.0);
    performer_s8_accumulate(p, k, v, state, rest)?;
    performer_s8_emit(p, q, state, out, rest)
}

/// Pass 1 over some tokens (a whole map, or a strip of one, strips in token order): adds their
/// `φ(k_t)` to `Σ_t φ(k_t)` and `φ(k_t) · v_tᵀ` to `kptvᵀ` in `state` ([`performer_state_len`]
/// values, zeros before the first token). The sums run token by token, so strips in token order
/// give the bits of one call over the whole map.
pub fn performer_s8_accumulate(
    p: &PerformerS8,
    k: &[i8],
    v: &[i8],
    state: &mut [f32],
    scratch: &mut [u8],
) -> Result<(), KernelError> {
    let (e, m) = (p.emb, p.features);
    check_len("performer v", v.len(), k.len())?;
    ensure(k.len().is_multiple_of(e), "performer k of whole tokens")?;
    check_len("performer state", state.len(), performer_state_len(e, m))?;
    let (ksum, kptv) = state.split_at_mut(m);
    let mut s = Scratch::new(scratch);
    let vf = s.take::<f32>(e, "performer scratch (token)")?;
    let phi = s.take::<f32>(m, "performer scratch (features)")?;
    // ksum[i] = Σ_t φ(k_t)[i] and kptvᵀ[i][c] = Σ_t φ(k_t)[i] · v[t][c], tokens in order.
    for (kt, vt) in k.chunks_exact(e).zip(v.chunks_exact(e)) {
        p.features_of(kt, p.k_scale, phi);
        dequantize_token(vf, vt, p.v_scale);
        add_features(ksum, phi);
        rank1_update_rows(kptv, e, phi, vf);
    }
    Ok(())
}

/// Pass 2 over some tokens, once `state` holds the sums over all of them
/// ([`performer_s8_accumulate`]): per token, `D = φ(q)·Σφ(k)` and
/// `y[c] = Σ_i φ(q)[i] · kptvᵀ[i][c] / (D + ε)`, quantized into `out`.
pub fn performer_s8_emit(
    p: &PerformerS8,
    q: &[i8],
    state: &[f32],
    out: &mut [i8],
    scratch: &mut [u8],
) -> Result<(), KernelError> {
    let (e, m) = (p.emb, p.features);
    check_len("performer output", out.len(), q.len())?;
    ensure(q.len().is_multiple_of(e), "performer q of whole tokens")?;
    check_len("performer state", state.len(), performer_state_len(e, m))?;
    let (ksum, kptv) = state.split_at(m);
    let mut s = Scratch::new(scratch);
    let y = s.take::<f32>(e, "performer scratch (output row)")?;
    let phi = s.take::<f32>(m, "performer scratch (features)")?;
    for (qt, yt) in q.chunks_exact(e).zip(out.chunks_exact_mut(e)) {
        p.features_of(qt, p.q_scale, phi);
        let denom = normalizer(phi, ksum) + EPSILON;
        weighted_row_sum(y, e, phi, kptv);
        // One division per token; the element-wise rest vectorizes. The flush is the same on
        // every target and keeps a subnormal factor (a huge D) out of the vectorized product.
        let scale = ftz::flush(p.out_inv_scale / denom);
        quantize_row(yt, y, scale, p.out_zp);
    }
    Ok(())
}

/// `vf[c] = v[c] · v_scale`. Vectorized on Helium: integers times a scale in 2^−64..2^64 are 0 or
/// at least 2^−64, never subnormal.
#[inline(always)]
fn dequantize_token(vf: &mut [f32], v: &[i8], v_scale: f32) {
    for (f, &vq) in vf.iter_mut().zip(v) {
        *f = vq as f32 * v_scale;
    }
}

/// `ksum[i] += phi[i]`. Vectorized on Helium: features are 0 or at least 2^−126 and never
/// negative, so every sum is at least its larger operand, never subnormal.
#[inline(always)]
fn add_features(ksum: &mut [f32], phi: &[f32]) {
    for (acc, &f) in ksum.iter_mut().zip(phi) {
        *acc += f;
    }
}

/// `D = Σ_i phi[i] · ksum[i]`, in feature order: a sequential f32 sum, which the compiler may not
/// reorder and so does not vectorize (its products can be subnormal; scalar code computes them
/// the same on every target). `cargo xtask test` checks that no Helium instruction comes from here.
#[inline(always)]
fn normalizer(phi: &[f32], ksum: &[f32]) -> f32 {
    phi.iter().zip(ksum).fold(0.0f32, |a, (&x, &s)| a + x * s)
}

/// `out[c] = quantize_f32(y[c], scale, zp)`. Vectorized on Helium: `y` (flush-to-zero results)
/// and `scale` (flushed) are never subnormal; a product below 2^−126 (0 on Helium, tiny or 2^−126
/// elsewhere) meets `zp + 128.5`, at least 0.5 in magnitude, and rounds away in that sum alike.
#[inline(always)]
fn quantize_row(out: &mut [i8], y: &[f32], scale: f32, zp: i32) {
    for (o, &num) in out.iter_mut().zip(y) {
        *o = quantize_f32(num, scale, zp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cases::Rng;

    /// Strips of tokens through the two passes, in token order, give the bytes of one call over
    /// the whole map (the patch-based first cells run it that way).
    #[test]
    fn strips_in_token_order_equal_one_call() {
        let (n, e, m) = (41usize, 20usize, 10usize);
        let mut rng = Rng(0x2545_F491);
        let w: Vec<i16> = (0..e * m)
            .map(|_| (rng.next_u32() % 4001) as i16 - 2000)
            .collect();
        let mut tokens = || -> Vec<i8> { (0..n * e).map(|_| rng.next_u32() as i8).collect() };
        let (k, q, v) = (tokens(), tokens(), tokens());
        let p = PerformerS8::new(n, e, m, &w, 1e-3, 0.03, 0.02, 0.05, 40.0, -2).unwrap();
        let mut want = vec![0i8; n * e];
        let mut scratch = vec![0u8; performer_s8_scratch_size(e, m)];
        performer_s8(&p, &k, &q, &v, &mut want, &mut scratch).unwrap();
        for strip in [1usize, 4, 7, 40] {
            let mut state = vec![0.0f32; performer_state_len(e, m)];
            let mut pass = vec![0u8; performer_s8_pass_scratch_size(e, m)];
            let rows = |t: usize| t * e..((t + strip).min(n)) * e;
            for t in (0..n).step_by(strip) {
                performer_s8_accumulate(&p, &k[rows(t)], &v[rows(t)], &mut state, &mut pass)
                    .unwrap();
            }
            let mut got = vec![0i8; n * e];
            for t in (0..n).step_by(strip) {
                performer_s8_emit(&p, &q[rows(t)], &state, &mut got[rows(t)], &mut pass).unwrap();
            }
            assert_eq!(got, want, "strips of {strip} tokens");
        }
        assert!(want.iter().any(|&x| x != want[0]), "a degenerate output");
    }

    /// The kernel against a direct f64 evaluation of the formula on the dequantized inputs.
    #[test]
    fn matches_the_formula() {
        let (n, e, m) = (37usize, 24usize, 12usize);
        let mut rng = Rng(0x9E37_79B9);
        let w: Vec<i16> = (0..e * m)
            .map(|_| (rng.next_u32() % 2001) as i16 - 1000)
            .collect();
        let w_scale = 2.0 / 1000.0;
        let mut tokens = || -> Vec<i8> {
            (0..n * e)
                .map(|_| (rng.next_u32() % 61) as i8 - 30)
                .collect()
        };
        let (k, q, v) = (tokens(), tokens(), tokens());
        let (ks, qs, vs) = (0.02f32, 0.025f32, 0.05f32);
        let out_scale = 0.02f32;
        let p = PerformerS8::new(n, e, m, &w, w_scale, ks, qs, vs, 1.0 / out_scale, 3).unwrap();
        let mut out = vec![0i8; n * e];
        let mut scratch = vec![0u8; performer_s8_scratch_size(e, m)];
        performer_s8(&p, &k, &q, &v, &mut out, &mut scratch).unwrap();

        let phi = |z: &[i8], sc: f32| -> Vec<f64> {
            let zf: Vec<f64> = z.iter().map(|&x| x as f64 * sc as f64).collect();
            let half = zf.iter().map(|x| x * x).sum::<f64>() / 2.0;
            w.chunks_exact(e)
                .map(|row| {
                    let d: f64 = row
                        .iter()
                        .zip(&zf)
                        .map(|(&a, b)| a as f64 * w_scale as f64 * b)
                        .sum();
                    (d - half).exp() / (m as f64).sqrt()
                })
                .collect()
        };
        let mut ksum = vec![0.0f64; m];
        let mut kptv = vec![0.0f64; m * e];
        for t in 0..n {
            let kp = phi(&k[t * e..][..e], ks);
            for i in 0..m {
                ksum[i] += kp[i];
                for c in 0..e {
                    kptv[i * e + c] += kp[i] * v[t * e + c] as f64 * vs as f64;
                }
            }
        }
        let mut worst = 0.0f64;
        for t in 0..n {
            let qp = phi(&q[t * e..][..e], qs);
            let d: f64 = qp.iter().zip(&ksum).map(|(a, b)| a * b).sum::<f64>() + 1e-8;
            for c in 0..e {
                let y: f64 = (0..m).map(|i| qp[i] * kptv[i * e + c]).sum::<f64>() / d;
                let want = (y / out_scale as f64 + 3.0).round().clamp(-128.0, 127.0);
                worst = worst.max((want - out[t * e + c] as f64).abs());
            }
        }
        assert!(
            worst <= 1.0,
            "largest difference {worst} quantization steps"
        );
    }

    #[test]
    fn refuses_too_wide_tokens() {
        let w = vec![0i16; 512 * 2];
        assert!(PerformerS8::new(4, 512, 2, &w, 1.0, 1.0, 1.0, 1.0, 1.0, 0).is_err());
    }

    /// The performer with IEEE arithmetic everywhere and no feature threshold: what the kernel
    /// computed before Helium's flush-to-zero was made part of its definition.
    fn ieee(p: &PerformerS8, k: &[i8], q: &[i8], v: &[i8], out: &mut [i8]) {
        use crate::math::exp;
        let (e, m) = (p.emb, p.features);
        let (mut vf, mut y) = (vec![0f32; e], vec![0f32; e]);
        let (mut phi, mut ksum, mut kptv) = (vec![0f32; m], vec![0f32; m], vec![0f32; e * m]);
        let features = |z: &[i8], scale: f32, phi: &mut [f32]| {
            let norm: i32 = z.iter().map(|&q| q as i32 * q as i32).sum();
            let half_norm = norm as f32 * (scale * scale * 0.5);
            for (ph, w_row) in phi.iter_mut().zip(p.w.chunks_exact(e)) {
                let x = dot_s16_s8(w_row, z) as f32 * (scale * p.w_scale) - half_norm;
                *ph = exp(x) * p.inv_sqrt_m;
            }
        };
        for (kt, vt) in k.chunks_exact(e).zip(v.chunks_exact(e)) {
            features(kt, p.k_scale, &mut phi);
            for (f, &vq) in vf.iter_mut().zip(vt) {
                *f = vq as f32 * p.v_scale;
            }
            for (a, &f) in ksum.iter_mut().zip(&phi) {
                *a += f;
            }
            for (row, &f) in kptv.chunks_exact_mut(e).zip(&phi) {
                for (r, &x) in row.iter_mut().zip(&vf) {
                    *r += f * x;
                }
            }
        }
        for (qt, yt) in q.chunks_exact(e).zip(out.chunks_exact_mut(e)) {
            features(qt, p.q_scale, &mut phi);
            let d = phi.iter().zip(&ksum).fold(0.0f32, |a, (&x, &s)| a + x * s);
            y.fill(0.0);
            for (row, &f) in kptv.chunks_exact(e).zip(&phi) {
                for (yy, &r) in y.iter_mut().zip(row) {
                    *yy += f * r;
                }
            }
            let scale = p.out_inv_scale / (d + EPSILON);
            for (o, &num) in yt.iter_mut().zip(&y) {
                *o = quantize_f32(num, scale, p.out_zp);
            }
        }
    }

    /// The subnormal suite's hand-made performer tokens are not vacuous: IEEE arithmetic gives
    /// other output bytes than the kernel (flush-to-zero feature × channel updates, the feature
    /// threshold), so the on-target test that pins the kernel's bytes would have caught the M55
    /// differing from the host. On ordinary tokens the two agree.
    #[test]
    fn the_subnormal_case_tells_flush_to_zero_from_ieee() {
        use crate::kernels::cases::subnormal::{PERFORMER_SHAPE, performer_tokens};
        let (n, e, m) = PERFORMER_SHAPE;
        let (k, q, v, w) = performer_tokens();
        let s = 1.0 / 16.0;
        let p =
            PerformerS8::new(n, e, m, &w, s, s, s, f32::from_bits(0x3080_0000), 1.8e19, 3).unwrap();
        let mut got = vec![0i8; n * e];
        let mut scratch = vec![0u8; performer_s8_scratch_size(e, m)];
        performer_s8(&p, &k, &q, &v, &mut got, &mut scratch).unwrap();
        let mut old = vec![0i8; n * e];
        ieee(&p, &k, &q, &v, &mut old);
        assert_eq!(&got[..2], &[3, 3]);
        assert_eq!(&old[..2], &[-128, 127]);
        assert_eq!(&got[2..], &old[2..]);
        // Ordinary tokens and scales: no subnormal anywhere, the same bytes.
        let mut rng = crate::kernels::cases::Rng(0x0d1f_0001);
        let w: Vec<i16> = (0..e * m)
            .map(|_| (rng.next_u32() % 2001) as i16 - 1000)
            .collect();
        let (k, q, v) = (rng.i8s(n * e), rng.i8s(n * e), rng.i8s(n * e));
        let p = PerformerS8::new(n, e, m, &w, 0.002, 0.02, 0.02, 0.05, 50.0, -4).unwrap();
        performer_s8(&p, &k, &q, &v, &mut got, &mut scratch).unwrap();
        ieee(&p, &k, &q, &v, &mut old);
        assert_eq!(got, old);
    }

    /// A feature is 0 exactly below the exponent −83.17 and above 2^−126 from there on, for the
    /// smallest factor `1/√m` (m = 4095), and equals `exp(x)/√m` there.
    #[test]
    fn features_are_zero_or_normal() {
        let inv = 1.0 / sqrt(4095.0);
        let mut x = -90.0f32;
        while x < -80.0 {
            let f = feature(x, inv);
            if x < FEATURE_ARG_MIN {
                assert_eq!(f.to_bits(), 0, "x = {x}");
            } else {
                assert!(f > f32::MIN_POSITIVE, "x = {x}: {f:e}");
                assert_eq!(f, crate::math::exp(x) * inv, "x = {x}");
            }
            x = f32::from_bits(x.to_bits() - 97);
        }
    }
}
