//! Fully connected layer with int4 weights (W4A8): `out[t][o] = act(requant(bias[o] + Σ_i
//! in[t][i] · w[o][i]))` as [`crate::kernels::linear`], with each `w[o][i]` in −8..=7 stored two
//! per byte ([`crate::kernels::s4`]): half the flash of int8 weights.
//!
//! The optimized path unpacks [`s4_chunk_rows`] weight rows at a time into scratch as int8 and
//! runs the int8 matrix product of the target (Cortex-M4/M7 DSP, Cortex-M55 Helium, x86-64 AVX2)
//! on them over every token, so each weight is unpacked once per run, not once per token block:
//! on a layer of `T` tokens the unpacking costs about `1.5 / T` operations per multiply-accumulate.
//! The int8 products and sums are exact, so the result equals [`linear_s4_reference`] bit for bit.

#[cfg(any(test, vitae_dsp, vitae_mve, vitae_x86))]
use super::gemm::{Micro, TILE_WORDS};
use super::linear::LinearS8;
use super::s4::{s4_row_bytes, s4_weight};
use super::scratch::bytes_for;
use super::{KernelError, check_len, mul};
use crate::quant::{Lut256, Requant};

/// Weight bytes the optimized path unpacks at once (the chunk of rows is at least
/// [`MIN_CHUNK_ROWS`] rows whatever `in_features`).
const CHUNK_BYTES: usize = 8192;
/// Fewest rows per chunk: each chunk packs the tokens again, so fewer would let that dominate.
const MIN_CHUNK_ROWS: usize = 8;

/// A validated int4-weight linear layer. Weights are `out_features` packed rows of
/// `in_features` values ([`s4_row_bytes`] bytes each, PyTorch's row order).
#[derive(Clone, Copy, Debug)]
pub struct LinearS4<'a> {
    /// Everything but the weights (its own weights are empty).
    base: LinearS8<'a>,
    weights: &'a [u8],
}

impl<'a> LinearS4<'a> {
    /// Checks every parameter, as [`LinearS8::new`] does. `bias` already contains
    /// `−in_zp · Σ_i w[o][i]`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tokens: usize,
        in_features: usize,
        out_features: usize,
        weights: &'a [u8],
        bias: &'a [i32],
        requant: &'a [Requant],
        out_zp: i32,
        act: Option<&'a Lut256>,
    ) -> Result<Self, KernelError> {
        let base = LinearS8::without_weights(
            tokens,
            in_features,
            out_features,
            bias,
            requant,
            out_zp,
            act,
        )?;
        check_len(
            "linear int4 weights (bytes)",
            weights.len(),
            mul(s4_row_bytes(in_features), out_features, "linear size")?,
        )?;
        Ok(LinearS4 { base, weights })
    }

    /// Multiply-accumulates of one run.
    pub fn macs(&self) -> u64 {
        self.base.macs()
    }

    fn row(&self, o: usize) -> &'a [u8] {
        let n = s4_row_bytes(self.base.in_features());
        &self.weights[o * n..][..n]
    }
}

/// Rows the optimized path unpacks at once for `in_features` inputs: about 8 KiB of int8
/// weights, at least 8 rows, even (Helium's prepared blocks take row pairs) and
/// at most `out_features`.
pub fn s4_chunk_rows(in_features: usize, out_features: usize) -> usize {
    let rows = (CHUNK_BYTES / in_features.max(1)).max(MIN_CHUNK_ROWS) & !1;
    rows.min(out_features)
}

/// Scratch bytes [`linear_s4`] needs: the int8 matrix product's ([`super::linear`]) plus one
/// chunk of unpacked rows. The same on every target (blobs are planned on the host).
pub fn linear_s4_scratch_size(_tokens: usize, in_features: usize, out_features: usize) -> usize {
    super::gemm::gemm_scratch_bytes(in_features)
        + bytes_for::<i8>(s4_chunk_rows(in_features, out_features) * in_features)
}

/// The scalar reference: every weight read from its nibble.
pub fn linear_s4_reference(
    p: &LinearS4,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), KernelError> {
    let b = &p.base;
    b.check_buffers(input, output)?;
    for (x, out_row) in input
        .chunks_exact(b.in_features())
        .zip(output.chunks_exact_mut(b.out_features()))
    {
        for (o, y) in out_row.iter_mut().enumerate() {
            let row = p.row(o);
            let acc = x.iter().enumerate().fold(b.bias(o), |a, (i, &xi)| {
                a.wrapping_add(xi as i32 * s4_weight(row, i) as i32)
            });
            *y = b.finish(acc, o);
        }
    }
    Ok(())
}

/// The int4 linear layer the runtime runs: rows unpacked a chunk at a time, then the int8 matrix
/// product of the target (bit-identical to [`linear_s4_reference`]); the reference where the
/// target has no optimized product.
pub fn linear_s4(
    p: &LinearS4,
    input: &[i8],
    output: &mut [i8],
    scratch: &mut [u8],
) -> Result<(), KernelError> {
    #[cfg(vitae_mve)]
    {
        linear_s4_chunked::<super::gemm::Mve>(p, input, output, scratch)
    }
    #[cfg(all(vitae_dsp, not(vitae_mve)))]
    {
        linear_s4_chunked::<super::gemm::Dsp>(p, input, output, scratch)
    }
    #[cfg(not(any(vitae_dsp, vitae_mve)))]
    {
        #[cfg(vitae_x86)]
        if super::host_simd() == super::HostSimd::Avx2 {
            return linear_s4_chunked::<super::gemm::Avx2>(p, input, output, scratch);
        }
        let _ = scratch;
        linear_s4_reference(p, input, output)
    }
}

/// Per chunk of rows: unpack them into scratch, then [`super::linear::gemm_tokens`] over every
/// token, writing that chunk's outputs.
#[cfg(any(test, vitae_dsp, vitae_mve, vitae_x86))]
pub(crate) fn linear_s4_chunked<M: Micro>(
    p: &LinearS4,
    input: &[i8],
    output: &mut [i8],
    scratch: &mut [u8],
) -> Result<(), KernelError> {
    let b = &p.base;
    b.check_buffers(input, output)?;
    let (k, n_out) = (b.in_features(), b.out_features());
    let chunk = s4_chunk_rows(k, n_out);
    let mut s = super::scratch::Scratch::new(scratch);
    let mut cols = M::carve(&mut s, k)?;
    let tile = s.take::<i32>(TILE_WORDS, "linear scratch (accumulators)")?;
    let unpacked = s.take::<i8>(chunk * k, "linear scratch (unpacked int4 rows)")?;
    let mut o0 = 0;
    while o0 < n_out {
        let n = chunk.min(n_out - o0);
        let w = &mut unpacked[..n * k];
        for (r, dst) in w.chunks_exact_mut(k).enumerate() {
            super::s4::unpack_s4_row(p.row(o0 + r), dst);
        }
        let rows = b.rows(o0, n, w);
        super::linear::gemm_tokens::<M>(
            &rows,
            n,
            input,
            b.tokens(),
            &mut cols,
            tile,
            &mut output[o0..],
            n_out,
        );
        o0 += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::cases::{self, Rng, shift_for};
    use super::super::gemm::{Dsp, Mve};
    use super::super::s4::pack_s4_row;
    use super::*;
    use proptest::prelude::*;

    /// Random int4 weights (every value of −8..=7), packed row by row.
    fn packed(rng: &mut Rng, k: usize, n_out: usize) -> Vec<u8> {
        let mut out = vec![0u8; s4_row_bytes(k) * n_out];
        for row in out.chunks_exact_mut(s4_row_bytes(k)) {
            let w: Vec<i8> = (0..k).map(|_| (rng.next_u32() % 16) as i8 - 8).collect();
            pack_s4_row(&w, row);
        }
        out
    }

    fn check(tokens: usize, k: usize, n_out: usize, seed: u32, out_zp: i32, act: bool) {
        let mut rng = Rng(seed);
        let input = rng.i8s(tokens * k);
        let weights = packed(&mut rng, k, n_out);
        let bias = rng.biases(n_out);
        let requant = rng.requants(n_out, shift_for(k) + 4);
        let lut = act.then(|| rng.lut());
        let p = LinearS4::new(
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
        linear_s4_reference(&p, &input, &mut want).unwrap();
        let need = linear_s4_scratch_size(tokens, k, n_out);
        let mut scratch = vec![0x5au8; need + 1];
        for off in [0, 1] {
            let s = &mut scratch[off..off + need];
            let mut got = vec![0i8; tokens * n_out];
            linear_s4_chunked::<Dsp>(&p, &input, &mut got, s).unwrap();
            assert_eq!(got, want, "dsp {tokens}x{k}->{n_out}");
            let mut got = vec![0i8; tokens * n_out];
            linear_s4_chunked::<Mve>(&p, &input, &mut got, s).unwrap();
            assert_eq!(got, want, "mve {tokens}x{k}->{n_out}");
            #[cfg(vitae_x86)]
            {
                let mut got = vec![0i8; tokens * n_out];
                linear_s4_chunked::<super::super::gemm::Avx2>(&p, &input, &mut got, s).unwrap();
                assert_eq!(got, want, "avx2 {tokens}x{k}->{n_out}");
            }
        }
        let mut got = vec![0i8; tokens * n_out];
        linear_s4(&p, &input, &mut got, &mut scratch).unwrap();
        assert_eq!(got, want);
        // Too little scratch is an error, not a panic.
        let mut small = vec![0u8; need / 2];
        assert!(linear_s4_chunked::<Dsp>(&p, &input, &mut got, &mut small).is_err());
        assert!(linear_s4_chunked::<Mve>(&p, &input, &mut got, &mut small).is_err());
    }

    /// Agrees with the int8 reference on the same (unpacked) weights.
    #[test]
    fn equals_int8_on_the_unpacked_weights() {
        let (t, k, n) = (5, 37, 11);
        let mut rng = Rng(3);
        let input = rng.i8s(t * k);
        let packed = packed(&mut rng, k, n);
        let mut w8 = vec![0i8; k * n];
        for (o, row) in w8.chunks_exact_mut(k).enumerate() {
            super::super::s4::unpack_s4_row(&packed[o * s4_row_bytes(k)..], row);
        }
        let bias = rng.biases(n);
        let requant = rng.requants(n, shift_for(k) + 4);
        let p4 = LinearS4::new(t, k, n, &packed, &bias, &requant, -3, None).unwrap();
        let p8 =
            super::super::linear::LinearS8::new(t, k, n, &w8, &bias, &requant, -3, None).unwrap();
        let (mut a, mut b) = (vec![0i8; t * n], vec![0i8; t * n]);
        linear_s4_reference(&p4, &input, &mut a).unwrap();
        super::super::linear::linear_s8_reference(&p8, &input, &mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn wrong_weight_length_is_an_error() {
        let w = vec![0u8; s4_row_bytes(9) * 3 - 1];
        let (b, r) = (vec![0i32; 3], vec![Requant::default(); 3]);
        assert!(LinearS4::new(1, 9, 3, &w, &b, &r, 0, None).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// The suite's random linear shapes, int4 weights.
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
    fn vitae_shapes_and_chunk_edges() {
        for (i, &(t, k, n)) in cases::linear::VITAE.iter().enumerate() {
            check(t, k, n, 10 + i as u32, [-128, 127, -5][i % 3], i % 2 == 1);
        }
        // Row counts around the chunk size, odd and even, and a k over CHUNK_BYTES.
        for (t, k, n) in [(7, 1024, 17), (4, 9000, 9), (3, 64, 129), (1, 8, 1)] {
            check(t, k, n, 99, 0, false);
        }
    }
}
