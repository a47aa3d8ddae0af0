//! fp16 convolution and linear layers on the scalar FPU of Cortex-M cores: four pixels (or
//! tokens) at a time, their receptive fields converted to f32 once (`arch::vfp::pack_4`) and
//! shared by every output channel, four output channels per `arch::vfp::mac_4x4` tile.
//!
//! Same arithmetic as [`super::f16::conv_f16_reference`], in the same order: each output starts
//! from its bias and adds `x · w` over the taps inside the input (kernel row by kernel row, a row's
//! taps left to right, each tap's channels in order). Taps in the padding are skipped, not added as
//! zeros (`-0 + 0` is `+0`): a tile holds only pixels whose receptive fields are cut the same way,
//! and each kernel row's run of taps is one call of the tile.

use super::conv::{ConvGeometry, OutputSlice};
use super::f16::Activation;
use super::scratch::{Scratch, bytes_for};
use super::{KernelError, ensure};
use crate::arch::vfp::{self, PackRuns, TILE};
use half::f16;

/// Scratch bytes the FPU convolution needs: the receptive fields of four pixels in f32.
pub fn conv_scratch_bytes(g: &ConvGeometry) -> usize {
    bytes_for::<f32>(TILE * g.kh * g.kw * g.in_c_per_group())
}

/// Scratch bytes the FPU linear layer needs: four tokens in f32.
pub fn linear_scratch_bytes(in_features: usize) -> usize {
    bytes_for::<f32>(TILE * in_features)
}

/// The kernel taps `k` (of `taps`) whose input position `o·stride + k·dilation − pad` lies in
/// `0..len`: an interval, empty when none does.
fn valid_taps(
    o: usize,
    taps: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    len: usize,
) -> (usize, usize) {
    let start = o * stride;
    // First tap at or after the padding: k·d ≥ pad − start.
    let lo = pad.saturating_sub(start).div_ceil(dilation).min(taps);
    // Taps with start + k·d < len + pad.
    let hi = (len + pad)
        .saturating_sub(start)
        .div_ceil(dilation)
        .min(taps);
    (lo, hi.max(lo))
}

/// Writes `act(acc)` of the first `np` pixels and `no` outputs of a tile; pixel `p`'s outputs
/// start at `first[p]`.
fn store(
    acc: &[f32; TILE * TILE],
    first: &[usize],
    no: usize,
    act: Activation,
    output: &mut [f16],
) {
    for (p, &start) in first.iter().enumerate() {
        for (o, y) in output[start..][..no].iter_mut().enumerate() {
            *y = vfp::f32_to_f16(act.apply(acc[TILE * o + p]));
        }
    }
}

/// The four rows of output channels `oc..oc + no` (the last repeated when `no < 4`), each from
/// value `start`, `len` long.
fn rows(
    weights: &[f16],
    row_len: usize,
    oc: usize,
    no: usize,
    start: usize,
    len: usize,
) -> [&[f16]; TILE] {
    core::array::from_fn(|o| &weights[(oc + o.min(no - 1)) * row_len + start..][..len])
}

/// `acc[4·o + p] = bias[oc + o]`.
fn start_tile(bias: &[f32], oc: usize, no: usize) -> [f32; TILE * TILE] {
    core::array::from_fn(|i| bias[oc + (i / TILE).min(no - 1)])
}

/// Which kernel taps of an output pixel lie inside the input: rows `ky0..ky1`, columns
/// `kx0..kx1`. Pixels with the same field share one tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct Field {
    ky0: usize,
    ky1: usize,
    kx0: usize,
    kx1: usize,
}

/// Up to four output pixels `(oy, ox)` (in raster order) of one [`Field`], waiting for a tile.
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    field: Field,
    len: usize,
    pixels: [(usize, usize); TILE],
}

/// Open buckets: more distinct fields than this (large dilated kernels on small maps) only cost
/// partly filled tiles.
const BUCKETS: usize = 16;

/// [`super::f16::conv_f16`] on the FPU: the same checks (a typed error, never a panic, on wrong
/// lengths), the same bits.
///
/// The output pixels are visited in raster order and collected by `Field`: four pixels whose
/// receptive fields are cut the same way (the interior, or the same edge in different rows) make
/// one tile, however far apart they are.
#[allow(clippy::too_many_arguments)]
pub fn conv(
    g: &ConvGeometry,
    weights: &[f16],
    bias: &[f32],
    act: Activation,
    out_slice: OutputSlice,
    input: &[f16],
    output: &mut [f16],
    scratch: &mut [u8],
) -> Result<(), KernelError> {
    super::f16::check_conv(g, weights, bias, out_slice, input, output)?;
    let cols = Scratch::new(scratch).take::<f32>(
        TILE * g.kh * g.kw * g.in_c_per_group(),
        "fp16 conv scratch (columns)",
    )?;
    let conv = Tiles {
        g,
        weights,
        bias,
        act,
        out_slice,
        input,
    };
    let mut buckets = [Bucket::default(); BUCKETS];
    for oy in 0..g.out_h {
        let (ky0, ky1) = valid_taps(oy, g.kh, g.stride_h, g.dil_h, g.pad_h, g.in_h);
        for ox in 0..g.out_w {
            let (kx0, kx1) = valid_taps(ox, g.kw, g.stride_w, g.dil_w, g.pad_w, g.in_w);
            let field = Field { ky0, ky1, kx0, kx1 };
            let slot = buckets
                .iter()
                .position(|b| b.len > 0 && b.field == field)
                .or_else(|| buckets.iter().position(|b| b.len == 0));
            let slot = match slot {
                Some(i) => i,
                None => {
                    // All open for other fields: run the fullest and reuse it.
                    let i = (0..BUCKETS).max_by_key(|&i| buckets[i].len).unwrap_or(0);
                    conv.run(&buckets[i], cols, output)?;
                    buckets[i].len = 0;
                    i
                }
            };
            let b = &mut buckets[slot];
            b.field = field;
            b.pixels[b.len] = (oy, ox);
            b.len += 1;
            if b.len == TILE {
                conv.run(b, cols, output)?;
                b.len = 0;
            }
        }
    }
    for b in buckets.iter().filter(|b| b.len > 0) {
        conv.run(b, cols, output)?;
    }
    Ok(())
}

/// One convolution's operands, for [`Tiles::run`].
struct Tiles<'a> {
    g: &'a ConvGeometry,
    weights: &'a [f16],
    bias: &'a [f32],
    act: Activation,
    out_slice: OutputSlice,
    input: &'a [f16],
}

impl Tiles<'_> {
    /// The outputs of the bucket's pixels (1 to 4; a short bucket repeats its last pixel).
    fn run(&self, b: &Bucket, cols: &mut [f32], output: &mut [f16]) -> Result<(), KernelError> {
        let g = self.g;
        let Field { ky0, ky1, kx0, kx1 } = b.field;
        let np = b.len;
        let cin_g = g.in_c_per_group();
        let cout_g = g.out_c / g.groups;
        let row_len = g.kh * g.kw * cin_g;
        let run_len = if ky1 > ky0 { (kx1 - kx0) * cin_g } else { 0 };
        // Each pixel's first valid tap in the input (any channel of its group is then at a
        // fixed distance), relative to the first pixel's: raster order makes them ascending.
        let field_start = |(oy, ox): (usize, usize)| {
            let iy = oy * g.stride_h + ky0 * g.dil_h - g.pad_h;
            let ix = ox * g.stride_w + kx0 * g.dil_w - g.pad_w;
            (iy * g.in_w + ix) * g.in_c
        };
        let first_out: [usize; TILE] = core::array::from_fn(|p| {
            let (oy, ox) = b.pixels[p.min(np - 1)];
            (oy * g.out_w + ox) * self.out_slice.pixel_stride + self.out_slice.offset
        });
        let (pixel, start) = if run_len > 0 {
            let start = field_start(b.pixels[0]);
            let pixel = core::array::from_fn(|p| field_start(b.pixels[p.min(np - 1)]) - start);
            (pixel, start)
        } else {
            ([0; TILE], 0)
        };
        for group in 0..g.groups {
            // Pack the valid kernel rows, one after the other: a row's taps are one run when
            // they are adjacent in the input (no dilation, one group), else one run per tap.
            if run_len > 0 {
                for (i, ky) in (ky0..ky1).enumerate() {
                    let (runs, len, step) = if g.dil_w == 1 && cin_g == g.in_c {
                        (1, run_len, 0)
                    } else {
                        (kx1 - kx0, cin_g, g.dil_w * g.in_c)
                    };
                    let plan = PackRuns {
                        first: start + (ky - ky0) * g.dil_h * g.in_w * g.in_c + group * cin_g,
                        pixel,
                        runs,
                        run_len: len,
                        run_step: step,
                    };
                    ensure(
                        vfp::pack_4(self.input, &plan, &mut cols[TILE * i * run_len..]),
                        "fp16 conv columns",
                    )?;
                }
            }
            let mut oc = group * cout_g;
            let group_end = oc + cout_g;
            while oc < group_end {
                let no = (group_end - oc).min(TILE);
                let mut acc = start_tile(self.bias, oc, no);
                if run_len > 0 && kx0 == 0 && kx1 == g.kw {
                    // Whole kernel rows: one run of weights and columns.
                    let n = (ky1 - ky0) * run_len;
                    let w = rows(self.weights, row_len, oc, no, ky0 * g.kw * cin_g, n);
                    vfp::mac_4x4(&mut acc, cols, w, n);
                } else if run_len > 0 {
                    for (i, ky) in (ky0..ky1).enumerate() {
                        let w_start = (ky * g.kw + kx0) * cin_g;
                        let w = rows(self.weights, row_len, oc, no, w_start, run_len);
                        vfp::mac_4x4(&mut acc, &cols[TILE * i * run_len..], w, run_len);
                    }
                }
                let first: [usize; TILE] = core::array::from_fn(|p| first_out[p] + oc);
                store(&acc, &first[..np], no, self.act, output);
                oc += no;
            }
        }
        Ok(())
    }
}

/// [`super::f16::linear_f16`] on the FPU: the same checks, the same bits.
#[allow(clippy::too_many_arguments)]
pub fn linear(
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
    super::f16::check_linear(
        tokens,
        in_features,
        out_features,
        weights,
        bias,
        input,
        output,
    )?;
    let cols =
        Scratch::new(scratch).take::<f32>(TILE * in_features, "fp16 linear scratch (columns)")?;
    for t in (0..tokens).step_by(TILE) {
        let np = (tokens - t).min(TILE);
        let plan = PackRuns {
            first: t * in_features,
            pixel: core::array::from_fn(|p| p.min(np - 1) * in_features),
            runs: 1,
            run_len: in_features,
            run_step: 0,
        };
        ensure(vfp::pack_4(input, &plan, cols), "fp16 linear columns")?;
        let mut oc = 0;
        while oc < out_features {
            let no = (out_features - oc).min(TILE);
            let mut acc = start_tile(bias, oc, no);
            let w = rows(weights, in_features, oc, no, 0, in_features);
            vfp::mac_4x4(&mut acc, cols, w, in_features);
            let first: [usize; TILE] = core::array::from_fn(|p| (t + p) * out_features + oc);
            store(&acc, &first[..np], no, act, output);
            oc += no;
        }
    }
    Ok(())
}

/// The tiles (here their plain-Rust twins; on the boards the assembly, in `tests/qemu`) against
/// the reference, bit for bit.
#[cfg(test)]
mod tests {
    use super::super::cases::{self, Rng, half_data};
    use super::super::f16::{Activation, conv_f16_reference, linear_f16_reference};
    use super::*;

    const ACTS: [Activation; 3] = [Activation::None, Activation::Gelu, Activation::Silu];

    fn bits(x: &[f16]) -> Vec<u16> {
        x.iter().map(|h| h.to_bits()).collect()
    }

    fn conv_case(rng: &mut Rng, g: &ConvGeometry, offset: usize, extra: usize, act: Activation) {
        let mut x = vec![f16::ZERO; g.in_h * g.in_w * g.in_c];
        let mut w = vec![f16::ZERO; g.weight_len()];
        let mut bias = vec![0.0; g.out_c];
        half_data::fill(rng, &mut x);
        half_data::fill(rng, &mut w);
        half_data::bias(rng, &mut bias);
        let slice = OutputSlice {
            offset,
            pixel_stride: offset + g.out_c + extra,
        };
        let len = g.out_h * g.out_w * slice.pixel_stride;
        let (mut want, mut got) = (vec![f16::NAN; len], vec![f16::NAN; len]);
        conv_f16_reference(g, &w, &bias, act, slice, &x, &mut want).unwrap();
        let mut scratch = vec![0u8; conv_scratch_bytes(g)];
        conv(g, &w, &bias, act, slice, &x, &mut got, &mut scratch).unwrap();
        assert_eq!(bits(&got), bits(&want), "{g:?}");
    }

    #[test]
    fn conv_vitae_shapes_match_reference() {
        let mut rng = Rng(0xf9c0);
        for (i, g) in cases::conv::vitae().iter().enumerate() {
            conv_case(&mut rng, g.as_ref().unwrap(), 0, 0, ACTS[i % 3]);
        }
    }

    #[test]
    fn conv_random_shapes_match_reference() {
        let mut rng = Rng(0xf9c1);
        let limits = cases::conv::Limits {
            input: 2048,
            weights: 4096,
            output: 4096,
        };
        for i in 0..400 {
            let r = cases::conv::random(&mut rng, limits);
            conv_case(&mut rng, &r.geom, r.offset, r.extra, ACTS[i % 3]);
        }
    }

    #[test]
    fn linear_shapes_match_reference() {
        let mut rng = Rng(0xf911);
        let shapes = cases::linear::VITAE.iter().copied();
        let small = (1..=9).flat_map(|t| [(t, 1, 1), (t, 3, 5), (t, 8, 4), (t, 17, 9)]);
        for (i, (t, k, n)) in shapes.chain(small).enumerate() {
            let mut x = vec![f16::ZERO; t * k];
            let mut w = vec![f16::ZERO; k * n];
            let mut bias = vec![0.0; n];
            half_data::fill(&mut rng, &mut x);
            half_data::fill(&mut rng, &mut w);
            half_data::bias(&mut rng, &mut bias);
            let act = ACTS[i % 3];
            let (mut want, mut got) = (vec![f16::NAN; t * n], vec![f16::NAN; t * n]);
            linear_f16_reference(t, k, n, &w, &bias, act, &x, &mut want).unwrap();
            let mut scratch = vec![0u8; linear_scratch_bytes(k)];
            linear(t, k, n, &w, &bias, act, &x, &mut got, &mut scratch).unwrap();
            assert_eq!(bits(&got), bits(&want), "({t}, {k}, {n})");
        }
    }

    #[test]
    fn wrong_lengths_are_errors_not_panics() {
        let g = cases::conv::square((5, 5, 4), 8, 3, 1, 1, 1, 2).unwrap();
        let (x, w, b) = (
            vec![f16::ZERO; 5 * 5 * 4],
            vec![f16::ZERO; g.weight_len()],
            vec![0.0; 8],
        );
        let slice = OutputSlice {
            offset: 0,
            pixel_stride: 8,
        };
        let mut scratch = vec![0u8; conv_scratch_bytes(&g)];
        let mut out = vec![f16::ZERO; 5 * 5 * 8];
        let act = Activation::None;
        assert!(conv(&g, &w, &b, act, slice, &x[1..], &mut out, &mut scratch).is_err());
        assert!(conv(&g, &w[1..], &b, act, slice, &x, &mut out, &mut scratch).is_err());
        assert!(conv(&g, &w, &b, act, slice, &x, &mut out[1..], &mut scratch).is_err());
        assert!(conv(&g, &w, &b, act, slice, &x, &mut out, &mut scratch[..8]).is_err());
        assert!(conv(&g, &w, &b, act, slice, &x, &mut out, &mut scratch).is_ok());
        let mut scratch = vec![0u8; linear_scratch_bytes(4)];
        let mut y = vec![f16::ZERO; 3 * 8];
        let (xl, wl) = (vec![f16::ZERO; 3 * 4], vec![f16::ZERO; 8 * 4]);
        assert!(linear(3, 4, 8, &wl, &b, act, &xl[1..], &mut y, &mut scratch).is_err());
        assert!(linear(3, 4, 8, &wl, &b[1..], act, &xl, &mut y, &mut scratch).is_err());
        assert!(linear(3, 4, 8, &wl, &b, act, &xl, &mut y, &mut scratch[..4]).is_err());
        assert!(linear(3, 4, 8, &wl, &b, act, &xl, &mut y, &mut scratch).is_ok());
    }

    #[test]
    fn valid_taps_are_the_taps_inside_the_input() {
        for (stride, dil, pad, len, taps) in [(1, 1, 1, 5, 3), (4, 3, 9, 20, 7), (2, 2, 0, 3, 4)] {
            for o in 0..len + 3 {
                let inside = |k: usize| {
                    let pos = (o * stride + k * dil) as isize - pad as isize;
                    pos >= 0 && (pos as usize) < len
                };
                let (lo, hi) = valid_taps(o, taps, stride, dil, pad, len);
                for k in 0..taps {
                    assert_eq!((lo..hi).contains(&k), inside(k), "o {o} k {k}");
                }
            }
        }
    }
}
