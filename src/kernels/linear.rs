//! Fully connected layer / matrix product, int8: `out[t][o] = act(requant(bias[o] + Σ_i
//! in[t][i] · w[o][i]))` for every token `t`. Used for qkv, proj, the MLPs and the head.

use super::{KernelError, check_len, ensure, mul};
use crate::quant::{Lut256, Requant, requantize, saturate_i8};

/// A validated int8 linear layer. Weights are `out_features × in_features` (PyTorch's layout).
#[derive(Clone, Copy, Debug)]
pub struct LinearS8<'a> {
    tokens: usize,
    in_features: usize,
    out_features: usize,
    weights: &'a [i8],
    bias: &'a [i32],
    requant: &'a [Requant],
    out_zp: i32,
    act: Option<&'a Lut256>,
}

impl<'a> LinearS8<'a> {
    /// Checks every parameter. `bias` already contains `−in_zp · Σ_i w[o][i]`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tokens: usize,
        in_features: usize,
        out_features: usize,
        weights: &'a [i8],
        bias: &'a [i32],
        requant: &'a [Requant],
        out_zp: i32,
        act: Option<&'a Lut256>,
    ) -> Result<Self, KernelError> {
        ensure(
            tokens > 0 && in_features > 0 && out_features > 0,
            "linear dimensions must be > 0",
        )?;
        ensure(
            tokens < 1 << 24 && in_features < 1 << 16 && out_features < 1 << 16,
            "linear too large",
        )?;
        check_len(
            "linear weights",
            weights.len(),
            mul(in_features, out_features, "linear size")?,
        )?;
        check_len("linear bias", bias.len(), out_features)?;
        check_len("linear requant", requant.len(), out_features)?;
        ensure(
            requant.iter().all(Requant::is_valid),
            "linear requant multiplier/shift out of range",
        )?;
        ensure((-128..=127).contains(&out_zp), "zero point outside int8")?;
        Ok(LinearS8 {
            tokens,
            in_features,
            out_features,
            weights,
            bias,
            requant,
            out_zp,
            act,
        })
    }

    /// Multiply-accumulates of one run.
    pub fn macs(&self) -> u64 {
        (self.tokens * self.in_features * self.out_features) as u64
    }

    fn check_buffers(&self, input: &[i8], output: &[i8]) -> Result<(), KernelError> {
        check_len("linear input", input.len(), self.tokens * self.in_features)?;
        check_len(
            "linear output",
            output.len(),
            self.tokens * self.out_features,
        )
    }

    #[inline(always)]
    pub(crate) fn finish(&self, acc: i32, o: usize) -> i8 {
        let q = saturate_i8(requantize(acc, self.requant[o]).saturating_add(self.out_zp));
        match self.act {
            Some(lut) => lut.apply(q),
            None => q,
        }
    }
}

/// Scratch bytes [`linear_s8`] needs (none).
pub fn linear_s8_scratch_size(_tokens: usize, _in_features: usize, _out_features: usize) -> usize {
    0
}

/// The scalar reference.
pub fn linear_s8_reference(
    p: &LinearS8,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), KernelError> {
    p.check_buffers(input, output)?;
    let k = p.in_features;
    for (x, out_row) in input
        .chunks_exact(k)
        .zip(output.chunks_exact_mut(p.out_features))
    {
        for (o, (w, y)) in p
            .weights
            .chunks_exact(k)
            .zip(out_row.iter_mut())
            .enumerate()
        {
            let acc = x.iter().zip(w).fold(p.bias[o], |a, (&xi, &wi)| {
                a.wrapping_add(xi as i32 * wi as i32)
            });
            *y = p.finish(acc, o);
        }
    }
    Ok(())
}

/// The linear layer the runtime runs (optimized where the target has a faster path).
pub fn linear_s8(
    p: &LinearS8,
    input: &[i8],
    output: &mut [i8],
    scratch: &mut [u8],
) -> Result<(), KernelError> {
    let _ = scratch;
    linear_s8_reference(p, input, output)
}
