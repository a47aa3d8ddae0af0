//! Multi-head self-attention on int8 q, k, v, tiled so that no `N × N` score matrix ever exists.
//!
//! For each head and query, keys are processed in tiles of [`KEY_TILE`] with an online softmax:
//! a running max `m`, running sum `l` and running output `acc` are rescaled by `exp(m_old −
//! m_new)` when a tile raises the max. Within a tile, scores are exact int32 dot products; the
//! probabilities `p = exp(x − m)` are rounded to Q15 integers so that `Σ p` and `Σ p·v` are exact
//! integer sums (which optimized paths may reorder freely). q, k and v are symmetric (zero point
//! 0); `v` and the output have `heads × head_dim` channels per token, heads concatenated.

use super::scratch::{Scratch, bytes_for};
use super::{KernelError, check_len, ensure, is_factor};
use crate::math::{exp, zero_tiny};
use crate::quant::{round_half_up, saturate_i8};

/// Keys per tile of the online softmax. Part of the numerics contract: the rounding of the
/// probabilities depends on the running max, hence on where tiles start.
pub const KEY_TILE: usize = 64;

/// Probability scale: `p ∈ [0, 1]` is stored as `round(p · P_ONE)`.
const P_ONE: f32 = 32767.0;

/// A validated attention.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AttentionS8 {
    tokens: usize,
    heads: usize,
    head_dim: usize,
    logit_scale: f32,
    out_scale: f32,
    out_zp: i32,
}

impl AttentionS8 {
    /// `logit_scale = s_q · s_k · qk_scale` turns an int32 score into a softmax logit;
    /// `out_scale = s_v / s_out`.
    pub fn new(
        tokens: usize,
        heads: usize,
        head_dim: usize,
        logit_scale: f32,
        out_scale: f32,
        out_zp: i32,
    ) -> Result<Self, KernelError> {
        ensure(
            tokens > 0 && heads > 0 && head_dim > 0,
            "attention dimensions must be > 0",
        )?;
        ensure(
            tokens < 1 << 20 && heads * head_dim < 1 << 16,
            "attention too large",
        )?;
        ensure(
            is_factor(logit_scale),
            "attention logit scale must be in 2^-64..2^64",
        )?;
        ensure(
            is_factor(out_scale),
            "attention output scale must be in 2^-64..2^64",
        )?;
        ensure((-128..=127).contains(&out_zp), "zero point outside int8")?;
        Ok(AttentionS8 {
            tokens,
            heads,
            head_dim,
            logit_scale,
            out_scale,
            out_zp,
        })
    }

    /// Tokens.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Channels per head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    fn channels(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Multiply-accumulates of one run (QKᵀ and AV).
    pub fn macs(&self) -> u64 {
        2 * (self.tokens * self.tokens * self.channels()) as u64
    }
}

/// Scratch bytes [`attention_s8`] needs: O(KEY_TILE · head_dim), independent of the token count
/// (about 12 KiB for head_dim 64).
///
/// The same on every target (blobs are planned on the host): the most any implementation needs —
/// a block of queries packed for the matrix products, their running softmax state, one tile of
/// scores and probabilities and one key tile of values, transposed.
pub fn attention_s8_scratch_size(_tokens: usize, head_dim: usize) -> usize {
    attention_s8_reference_scratch_size(head_dim)
        .max(dsp_scratch_bytes(head_dim))
        .max(mve_scratch_bytes(head_dim))
}

/// Scratch bytes [`attention_s8_reference`] needs: a tile of scores and the per-head accumulators.
pub fn attention_s8_reference_scratch_size(head_dim: usize) -> usize {
    bytes_for::<i32>(KEY_TILE) + bytes_for::<i32>(head_dim) + bytes_for::<f32>(head_dim)
}

/// The scalar reference: the definition of the result.
pub fn attention_s8_reference(
    p: &AttentionS8,
    q: &[i8],
    k: &[i8],
    v: &[i8],
    out: &mut [i8],
    scratch: &mut [u8],
) -> Result<(), KernelError> {
    let (n, c, hd) = (p.tokens, p.channels(), p.head_dim);
    for (what, len) in [
        ("attention q", q.len()),
        ("attention k", k.len()),
        ("attention v", v.len()),
    ] {
        check_len(what, len, n * c)?;
    }
    check_len("attention output", out.len(), n * c)?;
    let mut s = Scratch::new(scratch);
    let scores = s.take::<i32>(KEY_TILE, "attention scratch (scores)")?;
    let part = s.take::<i32>(hd, "attention scratch (partial AV)")?;
    let acc = s.take::<f32>(hd, "attention scratch (output accumulator)")?;
    for h in 0..p.heads {
        let ch = h * hd..(h + 1) * hd;
        for i in 0..n {
            let qi = &q[i * c..][ch.clone()];
            let (mut m, mut l) = (f32::NEG_INFINITY, 0.0f32);
            acc.fill(0.0);
            for j0 in (0..n).step_by(KEY_TILE) {
                let j1 = (j0 + KEY_TILE).min(n);
                let mut smax = i32::MIN;
                for (j, sj) in (j0..j1).zip(scores.iter_mut()) {
                    let kj = &k[j * c..][ch.clone()];
                    *sj = qi.iter().zip(kj).map(|(&a, &b)| a as i32 * b as i32).sum();
                    smax = smax.max(*sj);
                }
                // max(s)·scale == max(s·scale): multiplying by a positive float is monotonic.
                let m_new = m.max(smax as f32 * p.logit_scale);
                let corr = exp(m - m_new);
                part.fill(0);
                let mut psum = 0i32;
                for (j, &sj) in (j0..j1).zip(scores.iter()) {
                    let pj = round_half_up(exp(sj as f32 * p.logit_scale - m_new) * P_ONE);
                    psum += pj;
                    let vj = &v[j * c..][ch.clone()];
                    for (pd, &vd) in part.iter_mut().zip(vj) {
                        *pd += pj * vd as i32;
                    }
                }
                l = l * corr + psum as f32;
                rescale(acc, corr, part.iter().copied());
                m = m_new;
            }
            output(acc, l, p, &mut out[i * c..][ch.clone()]);
        }
    }
    Ok(())
}

/// `acc[d] = acc[d] · corr + part[d]`: the running output of one query rescaled to a new running
/// maximum and a key tile's integer sums added.
///
/// Helium vectorizes this (flush-to-zero arithmetic) and the data can make `acc[d] · corr` tiny:
/// an accumulator that decayed over earlier rescales, a tile whose sums are 0. [`zero_tiny`] turns
/// every product of magnitude ≤ 2^−126 into +0 on every target, which makes Helium's result (0
/// below 2^−126 exactly) and IEEE's (subnormal, or rounded up to 2^−126) the same; above it both
/// round alike. The accumulators stay +0 or above 2^−126 in magnitude (a sum whose larger operand
/// is an integer ≥ 1 is 0 or at least 2^−25), so no later step reads a subnormal either. `corr`
/// is computed in scalar code.
///
/// On Helium two factors skip the multiplication with the same result: 0 (the first tile, or a
/// maximum that rose by more than 87.33) turns the finite accumulators into +0 after `zero_tiny`,
/// and 1 (a tile that did not raise the maximum) leaves them as they are, none being tiny or −0
/// (`rescale_shortcuts_are_exact` checks both). On the scalar FPUs the extra branches cost more
/// than they save (measured on the M4), so only the general form runs there.
#[inline(always)]
fn rescale(acc: &mut [f32], corr: f32, part: impl Iterator<Item = i32>) {
    if cfg!(vitae_mve) && corr == 0.0 {
        for (a, pd) in acc.iter_mut().zip(part) {
            *a = pd as f32;
        }
    } else if cfg!(vitae_mve) && corr == 1.0 {
        for (a, pd) in acc.iter_mut().zip(part) {
            *a += pd as f32;
        }
    } else {
        rescale_general(acc, corr, part);
    }
}

/// [`rescale`] for any factor.
#[inline(always)]
fn rescale_general(acc: &mut [f32], corr: f32, part: impl Iterator<Item = i32>) {
    for (a, pd) in acc.iter_mut().zip(part) {
        *a = zero_tiny(*a * corr) + pd as f32;
    }
}

/// The output channels of one query: `round_half_up(acc[d] / l · out_scale) + zp`, saturated.
///
/// Helium vectorizes the multiplication and the rounding (the division stays scalar): a quotient
/// or product below 2^−126 reads or comes out as 0 there, but `out_scale ≤ 2^64` keeps it below
/// 2^−62 and `round_half_up` adds 0.5 to it, which rounds it away on every target alike.
#[inline(always)]
fn output(acc: &[f32], l: f32, p: &AttentionS8, out: &mut [i8]) {
    for (y, &a) in out.iter_mut().zip(acc) {
        *y = saturate_i8(round_half_up(a / l * p.out_scale).saturating_add(p.out_zp));
    }
}

/// The attention the runtime runs: blocks of queries through tiled integer matrix products on
/// Cortex-M4/M7 (SMLAD), Cortex-M55 (VMLADAVA, vectorized exponentials) and x86-64 hosts with
/// AVX2 (VPMADDWD, eight-lane exponentials), bit-identical to [`attention_s8_reference`];
/// otherwise the reference.
pub fn attention_s8(
    p: &AttentionS8,
    q: &[i8],
    k: &[i8],
    v: &[i8],
    out: &mut [i8],
    scratch: &mut [u8],
) -> Result<(), KernelError> {
    #[cfg(vitae_mve)]
    {
        attention_mve(p, q, k, v, out, scratch)
    }
    #[cfg(all(vitae_dsp, not(vitae_mve)))]
    {
        attention_dsp(p, q, k, v, out, scratch)
    }
    #[cfg(not(any(vitae_dsp, vitae_mve)))]
    {
        #[cfg(vitae_x86)]
        if super::host_simd() == super::HostSimd::Avx2 {
            return attention_quad::<super::gemm::Avx2>(p, q, k, v, out, scratch);
        }
        attention_s8_reference(p, q, k, v, out, scratch)
    }
}

/// The probabilities of one key tile for one query with this build's implementation (four lanes
/// at a time with Helium floating point on Cortex-M55): `p[j] = round_half_up(exp(s[j]·scale −
/// m) · 32767)` for `j < min(s.len(), p.len())`, returning `Σ p[j]`. `m` must be at least every
/// `s[j]·scale` (the running maximum, as in [`attention_s8`]).
///
/// Defined for [`softmax_inputs_in_range`] (every validated attention's inputs); for other inputs
/// every `p[j]` is 0 and so is the sum, on every target.
///
/// Public so that the on-target tests can check it value by value against [`crate::math::exp`]
/// on inputs chosen at the exponential's rounding boundaries.
pub fn tile_probabilities(s: &[i32], scale: f32, m: f32, p: &mut [i16]) -> i32 {
    #[cfg(vitae_mve)]
    {
        crate::arch::mve::softmax_row(s, scale, m, p)
    }
    #[cfg(not(vitae_mve))]
    {
        if !softmax_inputs_in_range(scale, m) {
            let n = s.len().min(p.len());
            p[..n].fill(0);
            return 0;
        }
        let mut psum = 0i32;
        for (pj, &sj) in p.iter_mut().zip(s) {
            let v = round_half_up(exp(sj as f32 * scale - m) * P_ONE);
            *pj = v as i16;
            psum += v;
        }
        psum
    }
}

/// The inputs for which the probabilities of a key tile are computed (Helium: with vector
/// instructions that never meet a subnormal, see `arch::mve::softmax_row`): `2^−88 ≤ scale ≤ 2^96`
/// and `m` finite and zero or at least 2^−88 in magnitude. Every [`AttentionS8`] meets this: its
/// logit scale is in 2^−64..2^64 and its running maximum is an integer times that scale.
pub fn softmax_inputs_in_range(scale: f32, m: f32) -> bool {
    let bound = f32::from_bits(0x1380_0000); // 2^-88
    (bound..=f32::from_bits(0x6f80_0000)).contains(&scale)
        && m.is_finite()
        && (m == 0.0 || m.abs() >= bound)
}

/// Checks the tensor lengths (as the reference does).
#[cfg(any(test, vitae_dsp, vitae_mve, vitae_x86))]
fn check_tensors(
    p: &AttentionS8,
    q: &[i8],
    k: &[i8],
    v: &[i8],
    out: &[i8],
) -> Result<(), KernelError> {
    let n = p.tokens * p.channels();
    for (what, len) in [
        ("attention q", q.len()),
        ("attention k", k.len()),
        ("attention v", v.len()),
        ("attention output", out.len()),
    ] {
        check_len(what, len, n)?;
    }
    Ok(())
}

/// The online softmax of one query, outside the integer products: the reference's float
/// operations in the reference's order.
#[cfg(any(test, vitae_dsp, vitae_mve, vitae_x86))]
#[derive(Clone, Copy, Debug)]
struct Online {
    m: f32,
    l: f32,
}

#[cfg(any(test, vitae_dsp, vitae_mve, vitae_x86))]
impl Online {
    const START: Online = Online {
        m: f32::NEG_INFINITY,
        l: 0.0,
    };

    /// The tile's new running max and the factor that rescales what came before.
    #[inline]
    fn enter(&self, smax: i32, scale: f32) -> (f32, f32) {
        let m_new = self.m.max(smax as f32 * scale);
        (m_new, exp(self.m - m_new))
    }

    /// Folds in a tile: `psum` = Σ p, `part[d]` = Σ p·v.
    #[inline]
    fn leave(
        &mut self,
        m_new: f32,
        corr: f32,
        psum: i32,
        acc: &mut [f32],
        part: impl Iterator<Item = i32>,
    ) {
        self.l = self.l * corr + psum as f32;
        rescale(acc, corr, part);
        self.m = m_new;
    }

    /// Writes the query's output channels.
    #[inline]
    fn finish(&self, acc: &[f32], p: &AttentionS8, out: &mut [i8]) {
        output(acc, self.l, p, out);
    }
}

/// Rows of an integer product without bias or requantization (keys, transposed values).
#[cfg(any(test, vitae_dsp, vitae_mve, vitae_x86))]
fn product_rows<'a>(
    w: &'a [i8],
    k: usize,
    stride: usize,
    zeros: &'a [i32],
) -> super::gemm::Rows<'a> {
    super::gemm::Rows {
        w,
        k,
        stride,
        bias: zeros,
        requant: &[],
        q: super::gemm::OutQuant { zp: 0, act: None },
        fast: false,
    }
}

/// Queries per block on Cortex-M4/M7 (one packed column group).
const DSP_QUERIES: usize = 4;
/// Queries per block on Cortex-M55 (the micro-kernel's three columns).
const MVE_QUERIES: usize = 3;

/// Scratch of `attention_dsp`: packed queries, packed probabilities, scores and products tiles,
/// the transposed value tile (int8), accumulators, zero biases.
fn dsp_scratch_bytes(hd: usize) -> usize {
    use super::gemm::{TILE_WORDS, dsp_cols_bytes};
    dsp_cols_bytes(hd)
        + dsp_cols_bytes(KEY_TILE)
        + 2 * bytes_for::<i32>(TILE_WORDS)
        + bytes_for::<i8>(hd * KEY_TILE)
        + bytes_for::<f32>(DSP_QUERIES * hd)
        + bytes_for::<i32>(KEY_TILE.max(hd))
}

/// Scratch of `attention_mve`: packed queries, scores and products tiles, probabilities
/// (int16), the transposed value tile (int16, one spare zero row), accumulators, zero biases.
fn mve_scratch_bytes(hd: usize) -> usize {
    use super::gemm::{TILE_WORDS, mve_cols_bytes};
    mve_cols_bytes(hd)
        + 2 * bytes_for::<i32>(TILE_WORDS)
        + bytes_for::<i16>(MVE_QUERIES * KEY_TILE)
        + bytes_for::<i16>((hd + 1) * KEY_TILE)
        + bytes_for::<f32>(MVE_QUERIES * hd)
        + bytes_for::<i32>(KEY_TILE)
}

/// Cortex-M4/M7: per block of four queries and key tile, QKᵀ as SMLAD products of the key rows
/// (int8) against the packed queries, the probabilities in scalar float (the reference's code),
/// written straight into a packed int16 column block, then P·V as SMLAD products of the
/// transposed value rows against it. Every integer sum is exact, so only their order differs
/// from the reference.
#[cfg(any(test, all(vitae_dsp, not(vitae_mve))))]
pub(crate) fn attention_dsp(
    p: &AttentionS8,
    q: &[i8],
    k: &[i8],
    v: &[i8],
    out: &mut [i8],
    scratch: &mut [u8],
) -> Result<(), KernelError> {
    attention_quad::<super::gemm::Dsp>(p, q, k, v, out, scratch)
}

/// A matrix-product flavour with four columns, the `[row][column]` tile layout, int16 column
/// stores and a way to compute a tile's probabilities (the DSP and x86 flavours).
#[cfg(any(test, vitae_x86, all(vitae_dsp, not(vitae_mve))))]
pub(crate) trait Quad: super::gemm::Micro {
    /// Stores `v` as value `k` of column `col`.
    fn set16(cols: &mut Self::Cols<'_>, col: usize, k: usize, v: i16);
    /// Prepares the `t` value rows of a key tile (`v_tile[j·c..][..hd]`) for
    /// [`Quad::values_times_probabilities`]: by default transposed into `vt` (`hd × KEY_TILE`).
    #[inline(always)]
    fn stage_values(v_tile: &[i8], c: usize, t: usize, hd: usize, vt: &mut [i8]) {
        for (j, row) in v_tile.chunks(c).take(t).enumerate() {
            for (d, &x) in row[..hd].iter().enumerate() {
                vt[d * KEY_TILE + j] = x;
            }
        }
    }
    /// `part[(d − d0)·4 + q] = Σ_{j<t} p_q[j] · v_tile[j·c + d]` for `d` in `dims` and the four
    /// probability columns `p_q` of `cols`: by default the flavour's panel over the rows of
    /// `vt`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn values_times_probabilities(
        v_tile: &[i8],
        c: usize,
        t: usize,
        vt: &[i8],
        cols: &Self::Cols<'_>,
        dims: core::ops::Range<usize>,
        zeros: &[i32],
        part: &mut [i32],
    ) {
        let _ = (v_tile, c);
        Self::panel(&product_rows(vt, t, KEY_TILE, zeros), cols, dims, part);
    }
    /// The probabilities of one key tile for the first `nq` queries, as the reference computes
    /// them: `p = round_half_up(exp(scores[j·4 + q]·scale − m[q]) · 32767)` for `j < t`, stored
    /// with [`Quad::set16`] as value `j` of column `q`; returns `Σ_j p` per query. `spare` (at
    /// least `4·t` words) is the flavour's to use.
    #[inline(always)]
    fn probabilities(
        scores: &[i32],
        t: usize,
        nq: usize,
        scale: f32,
        m: [f32; 4],
        cols: &mut Self::Cols<'_>,
        spare: &mut [i32],
    ) -> [i32; 4] {
        let _ = spare;
        let mut sums = [0i32; 4];
        for (col, psum) in sums.iter_mut().enumerate().take(nq) {
            for j in 0..t {
                let s = scores[j * 4 + col] as f32 * scale - m[col];
                let pj = round_half_up(exp(s) * P_ONE);
                *psum += pj;
                Self::set16(cols, col, j, pj as i16);
            }
        }
        sums
    }
}

#[cfg(any(test, all(vitae_dsp, not(vitae_mve))))]
impl Quad for super::gemm::Dsp {
    #[inline(always)]
    fn set16(cols: &mut Self::Cols<'_>, col: usize, k: usize, v: i16) {
        cols.set16(col, k, v);
    }
}

#[cfg(vitae_x86)]
impl Quad for super::gemm::Avx2 {
    #[inline(always)]
    fn set16(cols: &mut Self::Cols<'_>, col: usize, k: usize, v: i16) {
        cols.set16(col, k, v);
    }

    /// Nothing to stage: the products read the value rows where they lie.
    #[inline(always)]
    fn stage_values(_: &[i8], _: usize, _: usize, _: usize, _: &mut [i8]) {}

    /// Straight from the value rows, two keys at a time (`crate::arch::x86::values_times_probabilities4`).
    #[inline(always)]
    fn values_times_probabilities(
        v_tile: &[i8],
        c: usize,
        t: usize,
        _vt: &[i8],
        cols: &Self::Cols<'_>,
        dims: core::ops::Range<usize>,
        _zeros: &[i32],
        part: &mut [i32],
    ) {
        crate::arch::x86::values_times_probabilities4(v_tile, c, t, dims, cols.columns(), part);
    }

    /// Eight lanes at a time (`crate::arch::x86::probabilities4`, into `spare`), then stored.
    fn probabilities(
        scores: &[i32],
        t: usize,
        nq: usize,
        scale: f32,
        m: [f32; 4],
        cols: &mut Self::Cols<'_>,
        spare: &mut [i32],
    ) -> [i32; 4] {
        let sums = crate::arch::x86::probabilities4(scores, t, scale, m, spare);
        for col in 0..nq {
            for j in 0..t {
                cols.set16(col, j, spare[j * 4 + col] as i16);
            }
        }
        sums
    }
}

/// [`attention_dsp`] over any [`Quad`] flavour.
#[cfg(any(test, vitae_x86, all(vitae_dsp, not(vitae_mve))))]
pub(crate) fn attention_quad<M: Quad>(
    p: &AttentionS8,
    q: &[i8],
    k: &[i8],
    v: &[i8],
    out: &mut [i8],
    scratch: &mut [u8],
) -> Result<(), KernelError> {
    use super::gemm::{TILE, TILE_WORDS};
    check_tensors(p, q, k, v, out)?;
    let (n, c, hd) = (p.tokens, p.channels(), p.head_dim);
    let mut s = Scratch::new(scratch);
    let mut qcols = M::carve(&mut s, hd)?;
    let mut pcols = M::carve(&mut s, KEY_TILE)?;
    let scores = s.take::<i32>(TILE_WORDS, "attention scratch (scores)")?;
    let part = s.take::<i32>(TILE_WORDS, "attention scratch (products)")?;
    let vt = s.take::<i8>(hd * KEY_TILE, "attention scratch (values)")?;
    let acc = s.take::<f32>(DSP_QUERIES * hd, "attention scratch (accumulators)")?;
    let zeros = s.take::<i32>(KEY_TILE.max(hd), "attention scratch (zeros)")?;
    let zeros: &[i32] = zeros;
    for h in 0..p.heads {
        let (q_h, k_h, v_h) = (&q[h * hd..], &k[h * hd..], &v[h * hd..]);
        let mut i0 = 0;
        while i0 < n {
            let nq = (n - i0).min(DSP_QUERIES);
            for col in 0..nq {
                M::pack(&mut qcols, col, hd, |row| {
                    row.copy_from_slice(&q_h[(i0 + col) * c..][..hd])
                });
            }
            let mut st = [Online::START; DSP_QUERIES];
            acc.fill(0.0);
            for j0 in (0..n).step_by(KEY_TILE) {
                let t = (n - j0).min(KEY_TILE);
                // Scores: tile[j·4 + col].
                M::panel(
                    &product_rows(&k_h[j0 * c..], hd, c, zeros),
                    &qcols,
                    0..t,
                    scores,
                );
                let v_tile = &v_h[j0 * c..];
                M::stage_values(v_tile, c, t, hd, vt);
                let mut tile_state = [(0.0f32, 0.0f32, 0i32); DSP_QUERIES];
                let mut m4 = [0.0f32; 4];
                for (col, (o, ts)) in st.iter().zip(tile_state.iter_mut()).enumerate().take(nq) {
                    let smax = (0..t)
                        .map(|j| scores[j * 4 + col])
                        .max()
                        .unwrap_or(i32::MIN);
                    let (m_new, corr) = o.enter(smax, p.logit_scale);
                    m4[col] = m_new;
                    *ts = (m_new, corr, 0);
                }
                // `part` is free until the products below.
                let psums = M::probabilities(scores, t, nq, p.logit_scale, m4, &mut pcols, part);
                for (ts, &psum) in tile_state.iter_mut().zip(&psums).take(nq) {
                    ts.2 = psum;
                }
                // P·V, a tile of value dimensions at a time: part[d·4 + col].
                for d0 in (0..hd).step_by(TILE) {
                    let d1 = (d0 + TILE).min(hd);
                    M::values_times_probabilities(v_tile, c, t, vt, &pcols, d0..d1, zeros, part);
                    for (col, (o, &(m_new, corr, psum))) in
                        st.iter_mut().zip(&tile_state).enumerate().take(nq)
                    {
                        let a = &mut acc[col * hd..][d0..d1];
                        let pd = (0..d1 - d0).map(|d| part[d * 4 + col]);
                        if d1 == hd {
                            o.leave(m_new, corr, psum, a, pd);
                        } else {
                            rescale(a, corr, pd);
                        }
                    }
                }
            }
            for (col, o) in st.iter().enumerate().take(nq) {
                let y = &mut out[(i0 + col) * c + h * hd..][..hd];
                o.finish(&acc[col * hd..][..hd], p, y);
            }
            i0 += nq;
        }
    }
    Ok(())
}

/// Cortex-M55: per block of three queries and key tile, QKᵀ through the int8 Helium panel (key
/// pairs × the three queries), the probabilities four at a time with the vectorized exponential
/// (the reference's float operations, lane by lane), the value tile transposed and widened by
/// gathers, then P·V through the int16 panel (value-dimension pairs × the three probability
/// rows).
#[cfg(any(test, vitae_mve))]
pub(crate) fn attention_mve(
    p: &AttentionS8,
    q: &[i8],
    k: &[i8],
    v: &[i8],
    out: &mut [i8],
    scratch: &mut [u8],
) -> Result<(), KernelError> {
    use super::gemm::{Micro, Mve, TILE, TILE_WORDS};
    use crate::arch::mve::{TILE_STRIDE, panel16_2x3, softmax_row};
    check_tensors(p, q, k, v, out)?;
    let (n, c, hd) = (p.tokens, p.channels(), p.head_dim);
    let mut s = Scratch::new(scratch);
    let mut qcols = Mve::carve(&mut s, hd)?;
    let scores = s.take::<i32>(TILE_WORDS, "attention scratch (scores)")?;
    let part = s.take::<i32>(TILE_WORDS, "attention scratch (products)")?;
    let probs = s.take::<i16>(MVE_QUERIES * KEY_TILE, "attention scratch (probabilities)")?;
    let vt = s.take::<i16>((hd + 1) * KEY_TILE, "attention scratch (values)")?;
    let acc = s.take::<f32>(MVE_QUERIES * hd, "attention scratch (accumulators)")?;
    let zeros = s.take::<i32>(KEY_TILE, "attention scratch (zeros)")?;
    for h in 0..p.heads {
        let (q_h, k_h, v_h) = (&q[h * hd..], &k[h * hd..], &v[h * hd..]);
        let single_tile = n <= KEY_TILE;
        if single_tile {
            values_transposed(v_h, c, n, hd, vt);
        }
        let mut i0 = 0;
        while i0 < n {
            let nq = (n - i0).min(MVE_QUERIES);
            for col in 0..nq {
                Mve::pack(&mut qcols, col, hd, |row| {
                    Mve::copy(row, &q_h[(i0 + col) * c..][..hd])
                });
            }
            let mut st = [Online::START; MVE_QUERIES];
            acc.fill(0.0);
            for j0 in (0..n).step_by(KEY_TILE) {
                let t = (n - j0).min(KEY_TILE);
                // Scores: tile[col·TILE_STRIDE + j].
                Mve::panel(
                    &product_rows(&k_h[j0 * c..], hd, c, zeros),
                    &qcols,
                    0..t,
                    scores,
                );
                // Values transposed: vt[d·KEY_TILE + j] (row `hd` stays zero for odd pairs);
                // with a single key tile, once per head (above).
                if !single_tile {
                    values_transposed(&v_h[j0 * c..], c, t, hd, vt);
                }
                let mut tile_state = [(0.0f32, 0.0f32, 0i32); MVE_QUERIES];
                for (col, (o, ts)) in st.iter().zip(tile_state.iter_mut()).enumerate().take(nq) {
                    let sc = &scores[col * TILE_STRIDE..][..t];
                    let smax = sc.iter().copied().max().unwrap_or(i32::MIN);
                    let (m_new, corr) = o.enter(smax, p.logit_scale);
                    let pr = &mut probs[col * KEY_TILE..][..t];
                    *ts = (m_new, corr, softmax_row(sc, p.logit_scale, m_new, pr));
                }
                for d0 in (0..hd).step_by(TILE) {
                    let d1 = (d0 + TILE).min(hd);
                    let pairs = (d1 - d0).div_ceil(2);
                    panel16_2x3(
                        &vt[d0 * KEY_TILE..],
                        t,
                        KEY_TILE,
                        probs,
                        KEY_TILE,
                        part,
                        pairs,
                    );
                    for (col, (o, &(m_new, corr, psum))) in
                        st.iter_mut().zip(&tile_state).enumerate().take(nq)
                    {
                        let a = &mut acc[col * hd..][d0..d1];
                        let pd = part[col * TILE_STRIDE..][..d1 - d0].iter().copied();
                        if d1 == hd {
                            o.leave(m_new, corr, psum, a, pd);
                        } else {
                            rescale(a, corr, pd);
                        }
                    }
                }
            }
            for (col, o) in st.iter().enumerate().take(nq) {
                let y = &mut out[(i0 + col) * c + h * hd..][..hd];
                o.finish(&acc[col * hd..][..hd], p, y);
            }
            i0 += nq;
        }
    }
    Ok(())
}

/// `vt[d·KEY_TILE + j] = v[j·c + d]` for `j < t`, `d < hd`, widened to int16 (Helium gathers;
/// a plain loop when the gather offsets would not fit).
#[cfg(any(test, vitae_mve))]
fn values_transposed(v: &[i8], c: usize, t: usize, hd: usize, vt: &mut [i16]) {
    if !crate::arch::mve::transpose_widen(v, c, t, hd, vt, KEY_TILE) {
        for (j, row) in v.chunks(c).take(t).enumerate() {
            for (d, &x) in row[..hd].iter().enumerate() {
                vt[d * KEY_TILE + j] = i16::from(x);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::cases::{self, Rng};
    use super::*;
    use proptest::prelude::*;

    fn check(tokens: usize, heads: usize, hd: usize, scale: f32, seed: u32) {
        let mut rng = Rng(seed);
        let n = tokens * heads * hd;
        let (q, k, v) = (rng.i8s(n), rng.i8s(n), rng.i8s(n));
        let zp = rng.next_u32() as i8 as i32;
        let p = AttentionS8::new(tokens, heads, hd, scale, 0.7, zp).unwrap();
        let mut want = vec![0i8; n];
        let mut scratch = vec![0u8; attention_s8_scratch_size(tokens, hd) + 1];
        attention_s8_reference(&p, &q, &k, &v, &mut want, &mut scratch).unwrap();
        let need = attention_s8_scratch_size(tokens, hd);
        for off in [0, 1] {
            let s = &mut scratch[off..off + need];
            let mut got = vec![0i8; n];
            attention_dsp(&p, &q, &k, &v, &mut got, s).unwrap();
            assert_eq!(got, want, "dsp {tokens}x{heads}x{hd} scale {scale}");
            let mut got = vec![0i8; n];
            attention_mve(&p, &q, &k, &v, &mut got, s).unwrap();
            assert_eq!(got, want, "mve {tokens}x{heads}x{hd} scale {scale}");
            #[cfg(vitae_x86)]
            {
                let mut got = vec![0i8; n];
                attention_quad::<super::super::gemm::Avx2>(&p, &q, &k, &v, &mut got, s).unwrap();
                assert_eq!(got, want, "avx2 {tokens}x{heads}x{hd} scale {scale}");
            }
        }
        let mut got = vec![0i8; n];
        attention_s8(&p, &q, &k, &v, &mut got, &mut scratch).unwrap();
        assert_eq!(got, want);
        let mut small = vec![0u8; need / 2];
        assert!(attention_dsp(&p, &q, &k, &v, &mut got, &mut small).is_err());
        assert!(attention_mve(&p, &q, &k, &v, &mut got, &mut small).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(60))]
        /// The suite's random shapes (the ones the on-target tests draw), and proptest's scales
        /// besides (including both ends of the accepted range).
        #[test]
        fn optimized_equals_reference(
            seed in any::<u32>(),
            scale in prop_oneof![Just(None), Just(Some(super::super::FACTOR_MIN)), Just(Some(super::super::FACTOR_MAX)), (1e-6f32..0.5).prop_map(Some)],
        ) {
            let (t, h, d, s) = cases::attention::random(&mut Rng(seed), 1 << 16);
            check(t, h, d, scale.unwrap_or(s), seed);
        }
    }

    /// Logit and output scales outside 2^−64..2^64 (where Helium's flush-to-zero could show) are
    /// refused; the ends are accepted. A probability tile outside its defined inputs is all 0.
    #[test]
    fn scales_outside_the_factor_range_are_refused() {
        use super::super::{FACTOR_MAX, FACTOR_MIN};
        let below = f32::from_bits(FACTOR_MIN.to_bits() - 1);
        let above = f32::from_bits(FACTOR_MAX.to_bits() + 1);
        for s in [below, above, 1e-40, 0.0, -1.0, f32::INFINITY, f32::NAN] {
            assert!(
                AttentionS8::new(4, 1, 8, s, 0.5, 0).is_err(),
                "logit scale {s:e}"
            );
            assert!(
                AttentionS8::new(4, 1, 8, 0.5, s, 0).is_err(),
                "output scale {s:e}"
            );
        }
        for s in [FACTOR_MIN, FACTOR_MAX] {
            assert!(AttentionS8::new(4, 1, 8, s, s, 0).is_ok());
        }
        let mut p = [7i16; 3];
        for (scale, m) in [(1e-30f32, 0.0f32), (1.0, 1e-40), (1.0, f32::INFINITY)] {
            assert_eq!(tile_probabilities(&[0, -1, 5], scale, m, &mut p), 0);
            assert_eq!(p, [0; 3]);
            assert_eq!(
                crate::arch::mve::softmax_row(&[0, -1, 5], scale, m, &mut p),
                0
            );
        }
        assert_eq!(
            tile_probabilities(&[0, -1, 5], 1.0, 5.0, &mut p),
            221 + 81 + 32767
        );
        assert_eq!(p, [221, 81, 32767]);
    }

    #[test]
    fn vitae_shapes() {
        for (i, &(t, h, d, s)) in cases::attention::VITAE.iter().enumerate() {
            check(t, h, d, s, 100 + i as u32);
        }
    }

    /// The Helium shortcuts of `rescale` (factor 0: the sums; factor 1: add the sums) against the
    /// general form, on accumulators made by the general form itself (decayed to tiny values,
    /// cancelled to 0, large), which is what the kernels hold.
    #[test]
    fn rescale_shortcuts_are_exact() {
        let mut rng = Rng(0x5ca1_e001);
        for _ in 0..2000 {
            let mut acc = vec![0f32; 16];
            for _ in 0..(rng.next_u32() % 6) {
                let corr = exp(-((rng.next_u32() % 9000) as f32) / 100.0);
                let part: Vec<i32> = (0..16)
                    .map(|_| match rng.next_u32() % 3 {
                        0 => 0,
                        _ => (rng.next_u32() as i32) >> (rng.next_u32() % 31),
                    })
                    .collect();
                rescale_general(&mut acc, corr, part.into_iter());
            }
            let part: Vec<i32> = (0..16).map(|_| (rng.next_u32() as i32) >> 12).collect();
            for corr in [0.0f32, 1.0] {
                let mut want = acc.clone();
                rescale_general(&mut want, corr, part.iter().copied());
                let mut got = acc.clone();
                for (a, &pd) in got.iter_mut().zip(&part) {
                    *a = if corr == 0.0 {
                        pd as f32
                    } else {
                        *a + pd as f32
                    };
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "corr {corr}, acc {acc:?}");
            }
        }
    }
}
