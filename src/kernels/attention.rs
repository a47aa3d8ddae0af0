//! Multi-head self-attention on int8 q, k, v, tiled so that no `N × N` score matrix ever exists.
//!
//! For each head and query, keys are processed in tiles of [`KEY_TILE`] with an online softmax:
//! a running max `m`, running sum `l` and running output `acc` are rescaled by `exp(m_old −
//! m_new)` when a tile raises the max. Within a tile, scores are exact int32 dot products; the
//! probabilities `p = exp(x − m)` are rounded to Q15 integers so that `Σ p` and `Σ p·v` are exact
//! integer sums (which optimized paths may reorder freely). q, k and v are symmetric (zero point
//! 0); `v` and the output have `heads × head_dim` channels per token, heads concatenated.

use super::scratch::{Scratch, bytes_for};
use super::{KernelError, check_len, ensure};
use crate::math::exp;
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
            logit_scale.is_finite() && logit_scale > 0.0,
            "attention logit scale must be finite and > 0",
        )?;
        ensure(
            out_scale.is_finite() && out_scale > 0.0,
            "attention output scale must be finite and > 0",
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

/// Scratch bytes [`attention_s8`] needs: O(KEY_TILE + head_dim), independent of N².
pub fn attention_s8_scratch_size(_tokens: usize, head_dim: usize) -> usize {
    bytes_for::<i32>(KEY_TILE) + bytes_for::<i32>(head_dim) + bytes_for::<f32>(head_dim)
}

/// Scratch bytes [`attention_s8_reference`] needs: a tile of scores and the per-head accumulators.
pub fn attention_s8_reference_scratch_size(head_dim: usize) -> usize {
    bytes_for::<i32>(KEY_TILE) + bytes_for::<i32>(head_dim) + bytes_for::<f32>(head_dim)
}

/// The scalar reference (and, for now, the only implementation).
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
                for (a, &pd) in acc.iter_mut().zip(part.iter()) {
                    *a = *a * corr + pd as f32;
                }
                m = m_new;
            }
            let o = &mut out[i * c..][ch.clone()];
            for (y, &a) in o.iter_mut().zip(acc.iter()) {
                *y = saturate_i8(round_half_up(a / l * p.out_scale).saturating_add(p.out_zp));
            }
        }
    }
    Ok(())
}

/// The attention the runtime runs.
pub fn attention_s8(
    p: &AttentionS8,
    q: &[i8],
    k: &[i8],
    v: &[i8],
    out: &mut [i8],
    scratch: &mut [u8],
) -> Result<(), KernelError> {
    attention_s8_reference(p, q, k, v, out, scratch)
}
