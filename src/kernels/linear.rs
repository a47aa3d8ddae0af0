//! Fully connected layer / matrix product, int8: `out[t][o] = act(requant(bias[o] + Σ_i
//! in[t][i] · w[o][i]))` for every token `t`. Used for qkv, proj, the MLPs and the head.

#[cfg(any(test, vitae_dsp, vitae_mve, vitae_x86))]
use super::gemm::{Micro, OutQuant, Rows, TILE_WORDS, all_fast, block_prepared};
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
        check_len(
            "linear weights",
            weights.len(),
            mul(in_features, out_features, "linear size")?,
        )?;
        Self::without_weights(
            tokens,
            in_features,
            out_features,
            bias,
            requant,
            out_zp,
            act,
        )
        .map(|p| LinearS8 { weights, ..p })
    }

    /// Every check of [`LinearS8::new`] but the weights' (left empty): the int4-weight layer
    /// ([`super::linear_s4`]) keeps its packed weights itself.
    pub(crate) fn without_weights(
        tokens: usize,
        in_features: usize,
        out_features: usize,
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
        check_len("linear bias", bias.len(), out_features)?;
        check_len("linear requant", requant.len(), out_features)?;
        ensure(
            Requant::all_valid(requant),
            "linear requant multiplier/shift out of range",
        )?;
        ensure((-128..=127).contains(&out_zp), "zero point outside int8")?;
        Ok(LinearS8 {
            tokens,
            in_features,
            out_features,
            weights: &[],
            bias,
            requant,
            out_zp,
            act,
        })
    }

    /// Output features `o0..o0 + n` with the int8 `weights` of those rows: the weights side of
    /// their matrix product.
    #[cfg(any(test, vitae_dsp, vitae_mve, vitae_x86))]
    pub(crate) fn rows(&self, o0: usize, n: usize, weights: &'a [i8]) -> Rows<'a> {
        let requant = &self.requant[o0..o0 + n];
        Rows {
            w: weights,
            k: self.in_features,
            stride: self.in_features,
            bias: &self.bias[o0..o0 + n],
            requant,
            q: OutQuant {
                zp: self.out_zp,
                act: self.act,
            },
            fast: all_fast(requant),
        }
    }

    /// The bias of output feature `o` (input zero point folded in).
    pub(crate) fn bias(&self, o: usize) -> i32 {
        self.bias[o]
    }

    /// Multiply-accumulates of one run.
    pub fn macs(&self) -> u64 {
        (self.tokens * self.in_features * self.out_features) as u64
    }

    /// Tokens (rows of the input).
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Input features per token.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Output features per token.
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    pub(crate) fn check_buffers(&self, input: &[i8], output: &[i8]) -> Result<(), KernelError> {
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

/// Scratch bytes [`linear_s8`] needs: one packed block of tokens (four as int16 on
/// Cortex-M4/M7, three as int8 on Cortex-M55) of `in_features` values (about 9 bytes per input
/// feature) and a 1 KiB tile of accumulators. The same on every target (blobs are planned on the
/// host).
pub fn linear_s8_scratch_size(_tokens: usize, in_features: usize, _out_features: usize) -> usize {
    super::gemm::gemm_scratch_bytes(in_features)
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

/// The linear layer the runtime runs: the blocked matrix product of the target (Cortex-M4/M7 DSP,
/// Cortex-M55 Helium, x86-64 AVX2 on the host when the CPU has it), bit-identical to
/// [`linear_s8_reference`]; otherwise the reference.
pub fn linear_s8(
    p: &LinearS8,
    input: &[i8],
    output: &mut [i8],
    scratch: &mut [u8],
) -> Result<(), KernelError> {
    #[cfg(vitae_mve)]
    {
        linear_gemm::<super::gemm::Mve>(p, input, output, scratch)
    }
    #[cfg(all(vitae_dsp, not(vitae_mve)))]
    {
        linear_gemm::<super::gemm::Dsp>(p, input, output, scratch)
    }
    #[cfg(not(any(vitae_dsp, vitae_mve)))]
    {
        #[cfg(vitae_x86)]
        if super::host_simd() == super::HostSimd::Avx2 {
            return linear_gemm::<super::gemm::Avx2>(p, input, output, scratch);
        }
        let _ = scratch;
        linear_s8_reference(p, input, output)
    }
}

/// A matrix product blocked over tokens: each block of `M::COLS` tokens is packed once into
/// `scratch`, then every output feature runs the micro-kernel over the block (one or two features
/// per call), so each weight row is read once per token block instead of once per token.
#[cfg(any(test, vitae_dsp, vitae_mve, vitae_x86))]
pub(crate) fn linear_gemm<M: Micro>(
    p: &LinearS8,
    input: &[i8],
    output: &mut [i8],
    scratch: &mut [u8],
) -> Result<(), KernelError> {
    p.check_buffers(input, output)?;
    let (k, n_out) = (p.in_features, p.out_features);
    let mut s = super::scratch::Scratch::new(scratch);
    let mut cols = M::carve(&mut s, k)?;
    let tile = s.take::<i32>(TILE_WORDS, "linear scratch (accumulators)")?;
    let rows = p.rows(0, n_out, p.weights);
    gemm_tokens::<M>(
        &rows, n_out, input, p.tokens, &mut cols, tile, output, n_out,
    );
    Ok(())
}

/// The matrix product of `n_rows` weight rows with every token of `input` (`tokens × rows.k`):
/// token `t`'s output for row `o` goes to `output[t · out_stride + o]`. Each block of `M::COLS`
/// tokens is packed once into `cols` (or read in place), then every row runs the micro-kernel
/// over the block.
#[cfg(any(test, vitae_dsp, vitae_mve, vitae_x86))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_tokens<'a, M: Micro>(
    rows: &Rows,
    n_rows: usize,
    input: &'a [i8],
    tokens: usize,
    cols: &mut M::Cols<'a>,
    tile: &mut [i32],
    output: &mut [i8],
    out_stride: usize,
) {
    let k = rows.k;
    let prepared = M::prepare(rows, 0..n_rows);
    // Whole blocks of tokens in one call when the flavour has it; the rest below.
    let mut t0 = prepared.as_ref().map_or(0, |pr| {
        M::run_tokens(pr, input, tokens, tile, output, out_stride)
    });
    while t0 < tokens {
        let n = (tokens - t0).min(M::COLS);
        let base = core::array::from_fn(|c| (t0 + c) * out_stride);
        // Consecutive tokens already lie back to back: the flavour may read them in place.
        let view = M::in_place(&input[t0 * k..], n, k);
        let block_cols = match &view {
            Some(view) => view,
            None => {
                for c in 0..n {
                    let x = &input[(t0 + c) * k..][..k];
                    M::pack(cols, c, k, |row| M::copy(row, x));
                }
                &*cols
            }
        };
        block_prepared::<M>(
            prepared.as_ref(),
            rows,
            block_cols,
            n,
            0..n_rows,
            tile,
            output,
            base,
        );
        t0 += n;
    }
}

#[cfg(test)]
mod tests {
    use super::super::cases::{self, Rng, shift_for};
    use super::super::gemm::{Dsp, Mve};
    use super::*;
    use proptest::prelude::*;

    fn check(tokens: usize, k: usize, n_out: usize, seed: u32, out_zp: i32, act: bool) {
        let mut rng = Rng(seed);
        let input = rng.i8s(tokens * k);
        let weights = rng.i8s(k * n_out);
        let bias = rng.biases(n_out);
        let requant = rng.requants(n_out, shift_for(k));
        let lut = act.then(|| rng.lut());
        let p = LinearS8::new(
            tokens,
            k,
            n_out,
            &weights,
            &bias,
            &requant,
            out_zp,
            lut.as_ref(),
        )
        .unwrap();
        let mut want = vec![0i8; tokens * n_out];
        linear_s8_reference(&p, &input, &mut want).unwrap();
        let need = linear_s8_scratch_size(tokens, k, n_out);
        let mut scratch = vec![0x5au8; need + 1];
        for off in [0, 1] {
            let mut got = vec![0i8; tokens * n_out];
            linear_gemm::<Dsp>(&p, &input, &mut got, &mut scratch[off..off + need]).unwrap();
            assert_eq!(got, want, "dsp {tokens}x{k}->{n_out}");
            let mut got = vec![0i8; tokens * n_out];
            linear_gemm::<Mve>(&p, &input, &mut got, &mut scratch[off..off + need]).unwrap();
            assert_eq!(got, want, "mve {tokens}x{k}->{n_out}");
            #[cfg(vitae_x86)]
            {
                let mut got = vec![0i8; tokens * n_out];
                linear_gemm::<super::super::gemm::Avx2>(
                    &p,
                    &input,
                    &mut got,
                    &mut scratch[off..off + need],
                )
                .unwrap();
                assert_eq!(got, want, "avx2 {tokens}x{k}->{n_out}");
            }
        }
        let mut got = vec![0i8; tokens * n_out];
        linear_s8(&p, &input, &mut got, &mut scratch).unwrap();
        assert_eq!(got, want);
        // Too little scratch is an error, not a panic.
        let mut small = vec![0u8; need / 4];
        assert!(linear_gemm::<Dsp>(&p, &input, &mut got, &mut small).is_err());
        assert!(linear_gemm::<Mve>(&p, &input, &mut got, &mut small).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// The suite's random shapes (the ones the on-target tests draw).
        #[test]
        fn optimized_equals_reference(
            seed in any::<u32>(),
            out_zp in prop_oneof![Just(-128), Just(127), -128i32..=127],
            act in any::<bool>(),
        ) {
            let (t, k, n) = cases::linear::random(&mut Rng(seed), (1 << 16, 1 << 16, 1 << 16));
            check(t, k, n, seed, out_zp, act);
        }
    }

    #[test]
    fn vitae_shapes() {
        for (i, &(t, k, n)) in cases::linear::VITAE.iter().enumerate() {
            check(t, k, n, 10 + i as u32, [-128, 127, -5][i % 3], i % 2 == 1);
        }
    }
}
