//! 2-D convolution with int4 weights (W4A8): [`crate::kernels::conv`] with each output channel's
//! OHWI row of `kh·kw·in_c/groups` weights stored as packed nibbles ([`crate::kernels::s4`]).
//!
//! The optimized path unpacks the weights of a chunk of output channels into scratch as int8 and
//! runs the int8 convolution of the target on those channels (`ConvS8::channels`), writing them
//! into their place in each output pixel. An ungrouped convolution takes [`s4_chunk_rows`]
//! channels at a time (each chunk gathers the receptive fields again, so chunks are about 8 KiB
//! of weights or more); a grouped one unpacks all its channels at once (their weights are small:
//! 18 KiB for ViTAE-T's largest, 4 or 8 inputs per group) because a chunk of groups would read a
//! subset of the interleaved input channels. The int8 products are exact, so the result equals
//! [`conv_s4_reference`] bit for bit.

use super::conv::{ConvGeometry, ConvS8, OutputSlice, conv_reference_with, conv_s8_scratch_size};
use super::linear_s4::s4_chunk_rows;
use super::s4::{s4_row_bytes, s4_weight};
use super::scratch::bytes_for;
use super::{KernelError, check_len, mul};
use crate::quant::{Lut256, Requant};

/// A validated int4-weight convolution.
#[derive(Clone, Copy, Debug)]
pub struct ConvS4<'a> {
    /// Everything but the weights (its own weights are empty).
    base: ConvS8<'a>,
    /// `out_c` packed rows of `kh·kw·in_c/groups` weights.
    weights: &'a [u8],
}

impl<'a> ConvS4<'a> {
    /// Checks every parameter against the geometry, as [`ConvS8::new`] does; `weights` holds
    /// `out_c` rows of [`s4_row_bytes`]`(kh·kw·in_c/groups)` bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        geom: ConvGeometry,
        weights: &'a [u8],
        bias: &'a [i32],
        requant: &'a [Requant],
        in_zp: i32,
        out_zp: i32,
        act: Option<&'a Lut256>,
        out: OutputSlice,
    ) -> Result<Self, KernelError> {
        let base = ConvS8::without_weights(geom, bias, requant, in_zp, out_zp, act, out)?;
        check_len(
            "conv int4 weights (bytes)",
            weights.len(),
            mul(s4_row_bytes(row_len(&geom)), geom.out_c, "conv weight size")?,
        )?;
        Ok(ConvS4 { base, weights })
    }

    /// The geometry.
    pub fn geometry(&self) -> &ConvGeometry {
        self.base.geometry()
    }

    fn row(&self, oc: usize) -> &'a [u8] {
        let n = s4_row_bytes(row_len(self.geometry()));
        &self.weights[oc * n..][..n]
    }
}

/// Weights per output channel.
fn row_len(g: &ConvGeometry) -> usize {
    g.kh * g.kw * g.in_c_per_group()
}

/// Output channels the optimized path unpacks at once.
fn chunk_channels(g: &ConvGeometry) -> usize {
    if g.groups > 1 {
        g.out_c
    } else {
        s4_chunk_rows(row_len(g), g.out_c)
    }
}

/// Scratch bytes [`conv_s4`] needs: the int8 convolution's ([`conv_s8_scratch_size`]) plus the
/// unpacked weights of one chunk of channels. The same on every target.
pub fn conv_s4_scratch_size(geom: &ConvGeometry) -> usize {
    conv_s8_scratch_size(geom) + bytes_for::<i8>(chunk_channels(geom) * row_len(geom))
}

/// The scalar reference: [`super::conv::conv_s8_reference`]'s loops, every weight read from its
/// nibble.
pub fn conv_s4_reference(p: &ConvS4, input: &[i8], output: &mut [i8]) -> Result<(), KernelError> {
    conv_reference_with(&p.base, |oc, i| s4_weight(p.row(oc), i), input, output)
}

/// The int4 convolution the runtime runs: chunks of channels unpacked, then the int8
/// convolution of the target on them (bit-identical to [`conv_s4_reference`]).
pub fn conv_s4(
    p: &ConvS4,
    input: &[i8],
    output: &mut [i8],
    scratch: &mut [u8],
) -> Result<(), KernelError> {
    let g = p.geometry();
    let (k, out_c) = (row_len(g), g.out_c);
    let chunk = chunk_channels(g);
    let mut s = super::scratch::Scratch::new(scratch);
    let unpacked = s.take::<i8>(chunk * k, "conv scratch (unpacked int4 rows)")?;
    let rest = s.rest();
    let mut oc0 = 0;
    while oc0 < out_c {
        let n = chunk.min(out_c - oc0);
        for (r, dst) in unpacked[..n * k].chunks_exact_mut(k).enumerate() {
            super::s4::unpack_s4_row(p.row(oc0 + r), dst);
        }
        let part = p.base.channels(oc0, n, &unpacked[..n * k])?;
        super::conv::conv_s8(&part, input, output, rest)?;
        oc0 += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::cases::{self, Rng, shift_for};
    use super::super::s4::pack_s4_row;
    use super::*;
    use proptest::prelude::*;

    fn check(g: ConvGeometry, seed: u32, act: bool, (offset, extra): (usize, usize)) {
        let mut rng = Rng(seed);
        let k = row_len(&g);
        let input = rng.i8s(g.in_h * g.in_w * g.in_c);
        let mut packed = vec![0u8; s4_row_bytes(k) * g.out_c];
        let mut w8 = vec![0i8; k * g.out_c];
        for (row, w) in packed
            .chunks_exact_mut(s4_row_bytes(k))
            .zip(w8.chunks_exact_mut(k))
        {
            for v in w.iter_mut() {
                *v = (rng.next_u32() % 16) as i8 - 8;
            }
            pack_s4_row(w, row);
        }
        let bias = rng.biases(g.out_c);
        let requant = rng.requants(g.out_c, shift_for(k) + 4);
        let lut = act.then(|| rng.lut());
        let (in_zp, out_zp) = (rng.zero_point(), rng.zero_point());
        let out = OutputSlice {
            offset,
            pixel_stride: offset + g.out_c + extra,
        };
        let p4 = ConvS4::new(
            g,
            &packed,
            &bias,
            &requant,
            in_zp,
            out_zp,
            lut.as_ref(),
            out,
        )
        .unwrap();
        let p8 = ConvS8::new(g, &w8, &bias, &requant, in_zp, out_zp, lut.as_ref(), out).unwrap();
        let n = g.out_h * g.out_w * out.pixel_stride;
        // Channels outside the slice start as 0x33 and must stay so.
        let (mut want, mut want8) = (vec![0x33i8; n], vec![0x33i8; n]);
        conv_s4_reference(&p4, &input, &mut want).unwrap();
        super::super::conv::conv_s8_reference(&p8, &input, &mut want8).unwrap();
        assert_eq!(
            want, want8,
            "int4 reference vs int8 reference on the same weights"
        );
        let need = conv_s4_scratch_size(&g);
        let mut scratch = vec![0x5au8; need];
        let mut got = vec![0x33i8; n];
        conv_s4(&p4, &input, &mut got, &mut scratch).unwrap();
        assert_eq!(got, want, "{g:?}");
        let mut small = vec![0u8; need / 2];
        assert!(conv_s4(&p4, &input, &mut got, &mut small).is_err());
    }

    #[test]
    fn vitae_shapes() {
        for (i, g) in cases::conv::vitae().into_iter().enumerate() {
            let g = g.expect("the suite's shapes are valid");
            check(g, 40 + i as u32, i % 2 == 0, (i % 3, i % 2));
        }
    }

    const LIMITS: cases::conv::Limits = cases::conv::Limits {
        input: 1 << 14,
        weights: 1 << 14,
        output: 1 << 14,
    };

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(150))]
        #[test]
        fn optimized_equals_reference(seed in any::<u32>(), act in any::<bool>()) {
            let r = cases::conv::random(&mut Rng(seed), LIMITS);
            check(r.geom, seed, act && r.act, (r.offset, r.extra));
        }
    }
}
