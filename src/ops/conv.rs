//! 2-D convolutions: int8 ([`ConvS8Op`], the PCM stacks and the patch embedding) and fp16
//! ([`ConvF16Op`]). The kernels are in [`crate::kernels::conv`] and [`crate::kernels::f16`].

use super::{DecodeCx, OpIo, OpSpec, act, is, refs_len};
use crate::format::{DType, DataRef, FormatError};
use crate::kernels::conv::{ConvGeometry, ConvS8, OutputSlice, conv_s8, conv_s8_scratch_size};
use crate::kernels::f16::{self as kf16, Activation};
use crate::runtime::RunError;
use bytemuck::{Pod, Zeroable};
use half::f16;

/// Convolution shape as stored (see [`ConvGeometry`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ConvGeomRecord {
    pub in_h: u16,
    pub in_w: u16,
    pub in_c: u16,
    pub out_h: u16,
    pub out_w: u16,
    pub out_c: u16,
    pub kh: u16,
    pub kw: u16,
    pub stride_h: u16,
    pub stride_w: u16,
    pub pad_h: u16,
    pub pad_w: u16,
    pub dil_h: u16,
    pub dil_w: u16,
    pub groups: u16,
    /// Reserved, zero.
    pub reserved: u16,
}
const _: () = assert!(core::mem::size_of::<ConvGeomRecord>() == 32);

impl ConvGeomRecord {
    /// As the kernel's geometry type.
    pub fn geometry(&self) -> ConvGeometry {
        ConvGeometry {
            in_h: self.in_h as usize,
            in_w: self.in_w as usize,
            in_c: self.in_c as usize,
            out_h: self.out_h as usize,
            out_w: self.out_w as usize,
            out_c: self.out_c as usize,
            kh: self.kh as usize,
            kw: self.kw as usize,
            stride_h: self.stride_h as usize,
            stride_w: self.stride_w as usize,
            pad_h: self.pad_h as usize,
            pad_bottom: self.pad_h as usize,
            pad_w: self.pad_w as usize,
            dil_h: self.dil_h as usize,
            dil_w: self.dil_w as usize,
            groups: self.groups as usize,
        }
    }
}

/// An activation code of a parameter record ([`act`]) as the fp16 kernels' type.
pub(crate) fn activation(code: u32, cx: &DecodeCx) -> Result<Activation, FormatError> {
    match code {
        c if c == act::NONE as u32 => Ok(Activation::None),
        c if c == act::GELU as u32 => Ok(Activation::Gelu),
        c if c == act::SILU as u32 => Ok(Activation::Silu),
        _ => Err(cx.bad("unknown activation code")),
    }
}

/// [`ConvS8Op`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ConvParams {
    /// Shape.
    pub geom: ConvGeomRecord,
    /// Input zero point (also the padding value).
    pub in_zp: i32,
    /// Output zero point (of the pre-activation grid when `lut` is present).
    pub out_zp: i32,
    /// int8 weights, OHWI per group.
    pub weights: DataRef,
    /// int32 bias per output channel (input zero point folded in).
    pub bias: DataRef,
    /// [`crate::quant::Requant`] per output channel.
    pub requant: DataRef,
    /// Optional 256-byte activation table.
    pub lut: DataRef,
}
const _: () = assert!(core::mem::size_of::<ConvParams>() == 72);

/// int8 convolution with fused bias, per-channel requantization and an optional activation table.
#[derive(Debug)]
pub struct ConvS8Op;

impl OpSpec for ConvS8Op {
    const NAME: &'static str = "conv";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = ConvParams;
    type Decoded<'a> = ConvS8<'a>;

    fn decode<'a>(p: &ConvParams, cx: &DecodeCx<'a>) -> Result<ConvS8<'a>, FormatError> {
        let g = p.geom.geometry();
        let (x, out) = (cx.input(0), cx.output());
        cx.ensure(
            is(&x, DType::I8, g.in_h, g.in_w, g.in_c),
            "input tensor shape/dtype differs from the conv",
        )?;
        cx.ensure(
            is(&out, DType::I8, g.out_h, g.out_w, g.out_c),
            "output tensor shape/dtype differs from the conv",
        )?;
        cx.ensure(
            p.in_zp == x.desc.zero_point,
            "conv input zero point differs from its tensor",
        )?;
        let lut = cx.lut(p.lut)?;
        cx.ensure(
            lut.is_some() || p.out_zp == out.desc.zero_point,
            "conv output zero point differs from its tensor",
        )?;
        ConvS8::new(
            g,
            cx.data(p.weights, "conv weights")?,
            cx.data(p.bias, "conv bias")?,
            cx.data(p.requant, "conv requant")?,
            p.in_zp,
            p.out_zp,
            lut,
            OutputSlice {
                offset: 0,
                pixel_stride: g.out_c,
            },
        )
        .map_err(|e| cx.kernel(e))
    }

    fn scratch_bytes(p: &ConvParams) -> usize {
        conv_s8_scratch_size(&p.geom.geometry())
    }

    fn data_bytes(p: &ConvParams) -> usize {
        refs_len(&[p.weights, p.bias, p.requant, p.lut])
    }

    fn macs(k: &ConvS8) -> u64 {
        k.geometry().macs()
    }

    fn run(k: &ConvS8, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let x = io.i8_in(0);
        let (out, scratch) = io.i8_out_scratch();
        conv_s8(k, x, out, scratch).map_err(|e| io.kernel(e))
    }
}

/// [`ConvF16Op`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ConvF16Params {
    /// Shape.
    pub geom: ConvGeomRecord,
    /// Activation code ([`act`]).
    pub act: u32,
    /// fp16 weights, OHWI per group.
    pub weights: DataRef,
    /// f32 bias.
    pub bias: DataRef,
}
const _: () = assert!(core::mem::size_of::<ConvF16Params>() == 52);

/// fp16 convolution parameters, decoded.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub struct ConvF16<'a> {
    pub geom: ConvGeometry,
    pub weights: &'a [f16],
    pub bias: &'a [f32],
    pub act: Activation,
}

/// fp16 convolution (zero padding) with an f32 bias and a fused activation.
#[derive(Debug)]
pub struct ConvF16Op;

impl OpSpec for ConvF16Op {
    const NAME: &'static str = "conv";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = ConvF16Params;
    type Decoded<'a> = ConvF16<'a>;

    fn decode<'a>(p: &ConvF16Params, cx: &DecodeCx<'a>) -> Result<ConvF16<'a>, FormatError> {
        let g = p.geom.geometry();
        g.validate().map_err(|e| cx.kernel(e))?;
        cx.ensure(
            is(&cx.input(0), DType::F16, g.in_h, g.in_w, g.in_c),
            "conv input tensor shape/dtype",
        )?;
        cx.ensure(
            is(&cx.output(), DType::F16, g.out_h, g.out_w, g.out_c),
            "conv output tensor shape/dtype",
        )?;
        let weights = cx.data::<f16>(p.weights, "conv weights")?;
        let bias = cx.data::<f32>(p.bias, "conv bias")?;
        cx.ensure(
            weights.len() == g.weight_len() && bias.len() == g.out_c,
            "conv fp16 weight/bias length",
        )?;
        Ok(ConvF16 {
            geom: g,
            weights,
            bias,
            act: activation(p.act, cx)?,
        })
    }

    returns_zero!(scratch_bytes);

    fn data_bytes(p: &ConvF16Params) -> usize {
        refs_len(&[p.weights, p.bias])
    }

    fn macs(c: &ConvF16) -> u64 {
        c.geom.macs()
    }

    fn run(c: &ConvF16, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let x = io.f16_in(0)?;
        let slice = OutputSlice {
            offset: 0,
            pixel_stride: c.geom.out_c,
        };
        let out = io.f16_out()?;
        kf16::conv_f16(&c.geom, c.weights, c.bias, c.act, slice, x, out).map_err(|e| io.kernel(e))
    }
}
