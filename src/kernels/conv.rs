//! 2-D convolution, int8, NHWC, with fused bias (BatchNorm folded by the host), per-channel
//! requantization and an optional activation table (SiLU, GELU).
//!
//! Any kernel size, stride, padding, dilation and group count. The output may be written into a
//! slice of a wider tensor (`out_offset`/`out_pixel_stride`), which is how the PRM writes its
//! dilation branches straight into the concatenated token buffer.

use super::{KernelError, check_len, ensure, mul};
use crate::quant::{Lut256, Requant, requantize, saturate_i8};

/// Shape of a convolution. Input `in_h × in_w × in_c`, output `out_h × out_w × out_c`, weights
/// `out_c × kh × kw × (in_c / groups)` (OHWI per group).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[allow(missing_docs)]
pub struct ConvGeometry {
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub out_c: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_h: usize,
    pub pad_w: usize,
    pub dil_h: usize,
    pub dil_w: usize,
    pub groups: usize,
}

/// Output length of a convolution along one axis, or `None` when the kernel does not fit.
pub fn conv_out_len(
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
) -> Option<usize> {
    let reach = dilation
        .checked_mul(kernel.checked_sub(1)?)?
        .checked_add(1)?;
    let span = input.checked_add(pad.checked_mul(2)?)?.checked_sub(reach)?;
    Some(span / stride.max(1) + 1)
}

impl ConvGeometry {
    /// Checks the geometry is self-consistent.
    pub fn validate(&self) -> Result<(), KernelError> {
        let g = self;
        ensure(
            g.in_h > 0 && g.in_w > 0 && g.in_c > 0,
            "input dimensions must be > 0",
        )?;
        ensure(
            g.out_c > 0 && g.kh > 0 && g.kw > 0,
            "output channels and kernel size must be > 0",
        )?;
        ensure(g.stride_h > 0 && g.stride_w > 0, "stride must be > 0")?;
        ensure(g.dil_h > 0 && g.dil_w > 0, "dilation must be > 0")?;
        ensure(
            g.groups > 0 && g.in_c % g.groups == 0 && g.out_c % g.groups == 0,
            "groups must divide channels",
        )?;
        ensure(
            conv_out_len(g.in_h, g.kh, g.stride_h, g.pad_h, g.dil_h) == Some(g.out_h)
                && conv_out_len(g.in_w, g.kw, g.stride_w, g.pad_w, g.dil_w) == Some(g.out_w),
            "output size does not follow from input, kernel, stride, padding and dilation",
        )?;
        // Keep every index in u32 range so the 32-bit targets cannot overflow.
        let big = |v: usize| v < (1 << 30);
        ensure(
            big(g.in_h * g.in_w)
                && big(g.in_c * g.in_h * g.in_w)
                && big(g.out_h * g.out_w * g.out_c),
            "tensor too large",
        )?;
        Ok(())
    }

    /// Input channels per group.
    pub fn in_c_per_group(&self) -> usize {
        self.in_c / self.groups
    }

    /// Multiply-accumulates of one run.
    pub fn macs(&self) -> u64 {
        (self.out_h * self.out_w * self.out_c) as u64
            * (self.kh * self.kw * self.in_c_per_group()) as u64
    }

    /// Number of weights.
    pub fn weight_len(&self) -> usize {
        self.out_c * self.kh * self.kw * self.in_c_per_group()
    }
}

/// Where the output goes: channel `c` of output pixel `p` is `out[p · pixel_stride + offset + c]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OutputSlice {
    /// First channel of this kernel's output within each pixel.
    pub offset: usize,
    /// Elements per output pixel (≥ offset + out_c).
    pub pixel_stride: usize,
}

/// A validated int8 convolution.
#[derive(Clone, Copy, Debug)]
pub struct ConvS8<'a> {
    geom: ConvGeometry,
    weights: &'a [i8],
    bias: &'a [i32],
    requant: &'a [Requant],
    in_zp: i32,
    out_zp: i32,
    act: Option<&'a Lut256>,
    out: OutputSlice,
}

impl<'a> ConvS8<'a> {
    /// Checks every parameter against the geometry.
    ///
    /// `bias` already contains `−in_zp · Σ w` (the host folds it); `in_zp` is the padding value.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        geom: ConvGeometry,
        weights: &'a [i8],
        bias: &'a [i32],
        requant: &'a [Requant],
        in_zp: i32,
        out_zp: i32,
        act: Option<&'a Lut256>,
        out: OutputSlice,
    ) -> Result<Self, KernelError> {
        geom.validate()?;
        check_len("conv weights", weights.len(), geom.weight_len())?;
        check_len("conv bias", bias.len(), geom.out_c)?;
        check_len("conv requant", requant.len(), geom.out_c)?;
        ensure(
            requant.iter().all(Requant::is_valid),
            "conv requant multiplier/shift out of range",
        )?;
        ensure(
            (-128..=127).contains(&in_zp) && (-128..=127).contains(&out_zp),
            "zero point outside int8",
        )?;
        ensure(
            out.offset
                .checked_add(geom.out_c)
                .is_some_and(|e| e <= out.pixel_stride),
            "output slice too narrow",
        )?;
        Ok(ConvS8 {
            geom,
            weights,
            bias,
            requant,
            in_zp,
            out_zp,
            act,
            out,
        })
    }

    /// The geometry.
    pub fn geometry(&self) -> &ConvGeometry {
        &self.geom
    }

    /// Output elements this kernel needs (`out` must hold at least this many).
    pub fn output_len(&self) -> usize {
        (self.geom.out_h * self.geom.out_w - 1) * self.out.pixel_stride
            + self.out.offset
            + self.geom.out_c
    }

    fn check_buffers(&self, input: &[i8], output: &[i8]) -> Result<(), KernelError> {
        let g = &self.geom;
        check_len(
            "conv input",
            input.len(),
            mul(g.in_h * g.in_w, g.in_c, "conv input size")?,
        )?;
        if output.len() < self.output_len() {
            return Err(KernelError::BadLength {
                what: "conv output",
                need: self.output_len(),
                have: output.len(),
            });
        }
        Ok(())
    }

    /// Requantizes one accumulator of output channel `oc` and applies the activation.
    #[inline(always)]
    pub(crate) fn finish(&self, acc: i32, oc: usize) -> i8 {
        let q = saturate_i8(requantize(acc, self.requant[oc]).saturating_add(self.out_zp));
        match self.act {
            Some(lut) => lut.apply(q),
            None => q,
        }
    }
}

/// Scratch bytes [`conv_s8`] needs for this geometry (0 for the reference path).
pub fn conv_s8_scratch_size(_geom: &ConvGeometry) -> usize {
    0
}

/// The scalar reference convolution.
pub fn conv_s8_reference(p: &ConvS8, input: &[i8], output: &mut [i8]) -> Result<(), KernelError> {
    p.check_buffers(input, output)?;
    let g = &p.geom;
    let cin_g = g.in_c_per_group();
    let cout_g = g.out_c / g.groups;
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            let out_base = (oy * g.out_w + ox) * p.out.pixel_stride + p.out.offset;
            for oc in 0..g.out_c {
                let group = oc / cout_g;
                let mut acc = p.bias[oc];
                for ky in 0..g.kh {
                    // Signed input coordinates: padding makes them negative.
                    let iy = (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_h as isize;
                    for kx in 0..g.kw {
                        let ix = (ox * g.stride_w + kx * g.dil_w) as isize - g.pad_w as isize;
                        let inside =
                            iy >= 0 && ix >= 0 && (iy as usize) < g.in_h && (ix as usize) < g.in_w;
                        let w_base = ((oc * g.kh + ky) * g.kw + kx) * cin_g;
                        for ic in 0..cin_g {
                            let x = if inside {
                                input[(iy as usize * g.in_w + ix as usize) * g.in_c
                                    + group * cin_g
                                    + ic] as i32
                            } else {
                                p.in_zp
                            };
                            acc = acc.wrapping_add(p.weights[w_base + ic] as i32 * x);
                        }
                    }
                }
                output[out_base + oc] = p.finish(acc, oc);
            }
        }
    }
    Ok(())
}

/// The convolution the runtime runs (optimized where the target has a faster path).
pub fn conv_s8(
    p: &ConvS8,
    input: &[i8],
    output: &mut [i8],
    scratch: &mut [u8],
) -> Result<(), KernelError> {
    let _ = scratch;
    conv_s8_reference(p, input, output)
}
