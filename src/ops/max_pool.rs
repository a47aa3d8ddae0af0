//! 2-D max pooling (the `'pooling'` Reduction Cell's `MaxPool2d` on the image or on the token
//! map): int8 ([`MaxPoolS8Op`]) and fp16 ([`MaxPoolF16Op`]).
//!
//! The maximum commutes with the monotone int8 quantization, so pooling the quantized values is
//! exact: the output tensor has the input's scale and zero point, and the kernel only compares.
//! Padding, as in PyTorch, never wins (it is implicit −∞). The work is one comparison per window
//! element, tiny beside the convolutions around it, so there is one implementation: the same code
//! on the host and every core.

use super::{DecodeCx, OpIo, OpSpec, is, rows_of};
use crate::format::{DType, FormatError};
use crate::kernels::{KernelError, check_len, conv::conv_out_len, ensure};
use crate::runtime::RunError;
use bytemuck::{Pod, Zeroable};
use half::f16;

/// [`MaxPoolS8Op`] and [`MaxPoolF16Op`]: the window and the shapes (NHWC, channels unchanged).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct MaxPoolParams {
    pub in_h: u16,
    pub in_w: u16,
    pub channels: u16,
    pub out_h: u16,
    pub out_w: u16,
    pub kernel_h: u16,
    pub kernel_w: u16,
    pub stride_h: u16,
    pub stride_w: u16,
    pub pad_h: u16,
    pub pad_w: u16,
    /// Reserved, zero.
    pub reserved: u16,
}
const _: () = assert!(core::mem::size_of::<MaxPoolParams>() == 24);

impl MaxPoolParams {
    /// Checks the window against the shapes (`out = (in + 2·pad − kernel) / stride + 1`, padding
    /// at most half the window as PyTorch requires, so every window holds a real element).
    pub fn validate(&self) -> Result<(), KernelError> {
        let p = self;
        ensure(
            p.in_h > 0 && p.in_w > 0 && p.channels > 0,
            "max-pool dimensions must be > 0",
        )?;
        ensure(
            p.kernel_h > 0 && p.kernel_w > 0 && p.stride_h > 0 && p.stride_w > 0,
            "max-pool window and stride must be > 0",
        )?;
        ensure(
            2 * p.pad_h <= p.kernel_h && 2 * p.pad_w <= p.kernel_w,
            "max-pool padding must be at most half the window",
        )?;
        let out = |n: u16, k: u16, s: u16, pad: u16| {
            conv_out_len(n as usize, k as usize, s as usize, pad as usize, 1)
        };
        ensure(
            out(p.in_h, p.kernel_h, p.stride_h, p.pad_h) == Some(p.out_h as usize)
                && out(p.in_w, p.kernel_w, p.stride_w, p.pad_w) == Some(p.out_w as usize),
            "max-pool output size does not follow from input, window, stride and padding",
        )
    }

    /// The input rows (or columns) window `o` covers, clipped to the input.
    fn span(o: usize, kernel: u16, stride: u16, pad: u16, len: u16) -> core::ops::Range<usize> {
        let start = (o * stride as usize).saturating_sub(pad as usize);
        let end = (o * stride as usize + kernel as usize)
            .saturating_sub(pad as usize)
            .min(len as usize);
        start..end
    }
    /// The input rows the output rows `out_rows` read (clipped to the input).
    pub fn rows_read(&self, out_rows: core::ops::Range<usize>) -> core::ops::Range<usize> {
        let (k, s, p, h) = (self.kernel_h, self.stride_h, self.pad_h, self.in_h);
        if out_rows.is_empty() {
            return 0..0;
        }
        Self::span(out_rows.start, k, s, p, h).start..Self::span(out_rows.end - 1, k, s, p, h).end
    }
}

/// `out[y][x][c] = max` over the window of `input` (NHWC), for any copyable ordered element.
fn max_pool<T: Copy>(
    p: &MaxPoolParams,
    input: &[T],
    out: &mut [T],
    max: impl Fn(T, T) -> T,
) -> Result<(), KernelError> {
    max_pool_rows(p, input, 0..p.in_h as usize, 0..p.out_h as usize, out, max)
}

/// [`max_pool`] of the output rows `out_rows` only, from `input` holding the input rows
/// `in_rows` (a strip of a patch-based run; they must cover the rows the windows read).
fn max_pool_rows<T: Copy>(
    p: &MaxPoolParams,
    input: &[T],
    in_rows: core::ops::Range<usize>,
    out_rows: core::ops::Range<usize>,
    out: &mut [T],
    max: impl Fn(T, T) -> T,
) -> Result<(), KernelError> {
    p.validate()?;
    let c = p.channels as usize;
    ensure(
        out_rows.start < out_rows.end && out_rows.end <= p.out_h as usize,
        "max-pool output rows outside the output",
    )?;
    let reads = p.rows_read(out_rows.clone());
    ensure(
        in_rows.start <= reads.start && reads.end <= in_rows.end && in_rows.end <= p.in_h as usize,
        "max-pool input rows do not cover the windows",
    )?;
    check_len(
        "max-pool input",
        input.len(),
        in_rows.len() * p.in_w as usize * c,
    )?;
    check_len(
        "max-pool output",
        out.len(),
        out_rows.len() * p.out_w as usize * c,
    )?;
    for (oy, row) in out_rows.zip(out.chunks_exact_mut(p.out_w as usize * c)) {
        let ys = MaxPoolParams::span(oy, p.kernel_h, p.stride_h, p.pad_h, p.in_h);
        for (ox, pixel) in row.chunks_exact_mut(c).enumerate() {
            let xs = MaxPoolParams::span(ox, p.kernel_w, p.stride_w, p.pad_w, p.in_w);
            // The window's first element starts the maximum (validation keeps every window
            // non-empty), then each other element joins it, channel by channel.
            let at =
                |y: usize, x: usize| &input[((y - in_rows.start) * p.in_w as usize + x) * c..][..c];
            pixel.copy_from_slice(at(ys.start, xs.start));
            for y in ys.clone() {
                for x in xs.clone() {
                    for (m, &v) in pixel.iter_mut().zip(at(y, x)) {
                        *m = max(*m, v);
                    }
                }
            }
        }
    }
    Ok(())
}

/// int8 max pooling on the quantized grid.
pub fn max_pool_s8(p: &MaxPoolParams, input: &[i8], out: &mut [i8]) -> Result<(), KernelError> {
    max_pool(p, input, out, core::cmp::max)
}

/// [`max_pool_s8`] of the output rows `out_rows`, from an input holding the rows `in_rows`.
pub fn max_pool_rows_s8(
    p: &MaxPoolParams,
    input: &[i8],
    in_rows: core::ops::Range<usize>,
    out_rows: core::ops::Range<usize>,
    out: &mut [i8],
) -> Result<(), KernelError> {
    max_pool_rows(p, input, in_rows, out_rows, out, core::cmp::max)
}

/// fp16 max pooling (PyTorch's: a NaN in the window wins).
pub fn max_pool_f16(p: &MaxPoolParams, input: &[f16], out: &mut [f16]) -> Result<(), KernelError> {
    max_pool(
        p,
        input,
        out,
        |m, v| if v > m || v.is_nan() { v } else { m },
    )
}

/// The checks both precisions share.
fn decode(p: &MaxPoolParams, cx: &DecodeCx, dtype: DType) -> Result<MaxPoolParams, FormatError> {
    p.validate().map_err(|e| cx.kernel(e))?;
    let c = p.channels as usize;
    cx.ensure(
        is(&cx.input(0), dtype, p.in_h as usize, p.in_w as usize, c),
        "max-pool input tensor shape/dtype",
    )?;
    cx.ensure(
        is(&cx.output(), dtype, p.out_h as usize, p.out_w as usize, c),
        "max-pool output tensor shape/dtype",
    )?;
    Ok(*p)
}

/// A decoded int8 max pooling: the record and the rows of its input and output maps its
/// tensors hold (all of them, or strips of a patch-based run).
#[derive(Clone, Copy, Debug)]
pub struct MaxPoolRows {
    /// The record (the whole maps).
    pub params: MaxPoolParams,
    /// Input rows, `(start, end)`.
    pub in_rows: (u16, u16),
    /// Output rows, `(start, end)`.
    pub out_rows: (u16, u16),
}

/// int8 max pooling: the output keeps the input's scale and zero point.
#[derive(Debug)]
pub struct MaxPoolS8Op;

impl OpSpec for MaxPoolS8Op {
    const NAME: &'static str = "max-pool";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = MaxPoolParams;
    type Decoded<'a> = MaxPoolRows;

    fn decode<'a>(p: &MaxPoolParams, cx: &DecodeCx<'a>) -> Result<MaxPoolRows, FormatError> {
        p.validate().map_err(|e| cx.kernel(e))?;
        let c = p.channels as usize;
        let (x, out) = (cx.input(0), cx.output());
        let in_rows = rows_of(&x, DType::I8, p.in_h as usize, p.in_w as usize, c)
            .ok_or(cx.bad("max-pool input tensor shape/dtype"))?;
        let out_rows = rows_of(&out, DType::I8, p.out_h as usize, p.out_w as usize, c)
            .ok_or(cx.bad("max-pool output tensor shape/dtype"))?;
        let reads = p.rows_read(out_rows.clone());
        cx.ensure(
            in_rows.start <= reads.start && reads.end <= in_rows.end,
            "max-pool input strip does not hold the rows its output strip reads",
        )?;
        cx.ensure(
            x.desc.scale.to_bits() == out.desc.scale.to_bits()
                && x.desc.zero_point == out.desc.zero_point,
            "max-pool output must have its input's quantization",
        )?;
        // Rows of a tensor are u16 (its row0 and h).
        let pair = |r: core::ops::Range<usize>| (r.start as u16, r.end as u16);
        Ok(MaxPoolRows {
            params: *p,
            in_rows: pair(in_rows),
            out_rows: pair(out_rows),
        })
    }

    returns_zero!(scratch_bytes, data_bytes, macs);

    fn run(p: &MaxPoolRows, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let x = io.i8_in(0);
        let range = |(a, b): (u16, u16)| a as usize..b as usize;
        let (i, o) = (range(p.in_rows), range(p.out_rows));
        max_pool_rows_s8(&p.params, x, i, o, io.i8_out()).map_err(|e| io.kernel(e))
    }
}

/// fp16 max pooling.
#[derive(Debug)]
pub struct MaxPoolF16Op;

impl OpSpec for MaxPoolF16Op {
    const NAME: &'static str = "max-pool";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = MaxPoolParams;
    type Decoded<'a> = MaxPoolParams;

    fn decode<'a>(p: &MaxPoolParams, cx: &DecodeCx<'a>) -> Result<MaxPoolParams, FormatError> {
        decode(p, cx, DType::F16)
    }

    returns_zero!(scratch_bytes, data_bytes, macs);

    fn run(p: &MaxPoolParams, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let x = io.f16_in(0)?;
        let out = io.f16_out()?;
        max_pool_f16(p, x, out).map_err(|e| io.kernel(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cases::Rng;

    fn params(
        (in_h, in_w, channels): (u16, u16, u16),
        (kernel_h, kernel_w): (u16, u16),
        (stride_h, stride_w): (u16, u16),
        (pad_h, pad_w): (u16, u16),
    ) -> Option<MaxPoolParams> {
        let out = |n, k, s, p| conv_out_len(n as usize, k as usize, s as usize, p as usize, 1);
        Some(MaxPoolParams {
            in_h,
            in_w,
            channels,
            out_h: out(in_h, kernel_h, stride_h, pad_h)? as u16,
            out_w: out(in_w, kernel_w, stride_w, pad_w)? as u16,
            kernel_h,
            kernel_w,
            stride_h,
            stride_w,
            pad_h,
            pad_w,
            reserved: 0,
        })
    }

    /// The maximum over each window by brute force: every input pixel, kept if inside.
    fn oracle(p: &MaxPoolParams, x: &[i8]) -> Vec<i8> {
        let c = p.channels as usize;
        let mut out = vec![i8::MIN; p.out_h as usize * p.out_w as usize * c];
        let mut seen = vec![false; out.len()];
        for y in 0..p.in_h as isize {
            for xx in 0..p.in_w as isize {
                for oy in 0..p.out_h as isize {
                    for ox in 0..p.out_w as isize {
                        let y0 = oy * p.stride_h as isize - p.pad_h as isize;
                        let x0 = ox * p.stride_w as isize - p.pad_w as isize;
                        if (y0..y0 + p.kernel_h as isize).contains(&y)
                            && (x0..x0 + p.kernel_w as isize).contains(&xx)
                        {
                            for ch in 0..c {
                                let o = (oy as usize * p.out_w as usize + ox as usize) * c + ch;
                                let v = x[(y as usize * p.in_w as usize + xx as usize) * c + ch];
                                out[o] = out[o].max(v);
                                seen[o] = true;
                            }
                        }
                    }
                }
            }
        }
        assert!(seen.iter().all(|&s| s), "a window saw no input");
        out
    }

    #[test]
    fn matches_brute_force_on_random_windows() {
        let mut rng = Rng(0x9001);
        let mut tried = 0;
        while tried < 300 {
            let k = (rng.range(1, 5) as u16, rng.range(1, 5) as u16);
            let s = (rng.range(1, 4) as u16, rng.range(1, 4) as u16);
            let pad = (
                rng.range(0, k.0 as usize / 2) as u16,
                rng.range(0, k.1 as usize / 2) as u16,
            );
            let shape = (
                rng.range(1, 12) as u16,
                rng.range(1, 12) as u16,
                rng.range(1, 5) as u16,
            );
            let Some(p) = params(shape, k, s, pad) else {
                continue;
            };
            let mut x = vec![0i8; shape.0 as usize * shape.1 as usize * shape.2 as usize];
            rng.fill(&mut x);
            let mut got = vec![0i8; p.out_h as usize * p.out_w as usize * p.channels as usize];
            max_pool_s8(&p, &x, &mut got).unwrap();
            assert_eq!(got, oracle(&p, &x), "{p:?}");
            // The fp16 kernel on the same values (exactly representable) agrees.
            let xf: Vec<f16> = x.iter().map(|&v| f16::from_f32(v as f32)).collect();
            let mut gotf = vec![f16::ZERO; got.len()];
            max_pool_f16(&p, &xf, &mut gotf).unwrap();
            assert!(gotf.iter().zip(&got).all(|(a, &b)| a.to_f32() == b as f32));
            // Strips of output rows, each from exactly the input rows it reads, give the same
            // rows (the patch-based first cells).
            let rows = rng.range(1, 4);
            let (row_in, row_out) = (
                p.in_w as usize * p.channels as usize,
                p.out_w as usize * p.channels as usize,
            );
            for start in (0..p.out_h as usize).step_by(rows) {
                let out_rows = start..(start + rows).min(p.out_h as usize);
                let reads = p.rows_read(out_rows.clone());
                let mut strip = vec![0i8; out_rows.len() * row_out];
                let input = &x[reads.start * row_in..reads.end * row_in];
                max_pool_rows_s8(&p, input, reads, out_rows.clone(), &mut strip).unwrap();
                assert_eq!(strip, got[out_rows.start * row_out..out_rows.end * row_out]);
            }
            tried += 1;
        }
    }

    #[test]
    fn the_pooling_cell_window() {
        // MaxPool2d(4) on a 64×64 RGB image, as the 'pooling' Reduction Cell has it.
        let p = params((64, 64, 3), (4, 4), (4, 4), (0, 0)).unwrap();
        assert_eq!((p.out_h, p.out_w), (16, 16));
        let x: Vec<i8> = (0..64 * 64 * 3).map(|i| (i % 251) as i8).collect();
        let mut got = vec![0i8; 16 * 16 * 3];
        max_pool_s8(&p, &x, &mut got).unwrap();
        assert_eq!(got, oracle(&p, &x));
    }

    #[test]
    fn bad_windows_are_refused() {
        let mut p = params((8, 8, 2), (2, 2), (2, 2), (0, 0)).unwrap();
        p.out_h += 1;
        assert!(p.validate().is_err());
        let mut q = params((8, 8, 2), (2, 2), (2, 2), (1, 1)).unwrap();
        q.pad_h = 2;
        assert!(q.validate().is_err());
        let x = vec![0i8; 8 * 8 * 2];
        let mut out = vec![0i8; 3];
        let p = params((8, 8, 2), (2, 2), (2, 2), (0, 0)).unwrap();
        assert!(max_pool_s8(&p, &x, &mut out).is_err());
    }
}
