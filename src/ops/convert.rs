//! Conversions between the int8, int16 and fp16 forms of a tensor, where a mixed-precision blob
//! changes precision between layers.

use super::{DecodeCx, OpIo, OpSpec, Tensor};
use crate::format::{DType, FormatError};
use crate::kernels::elementwise::requantize_s16;
use crate::kernels::f16 as kf16;
use crate::runtime::RunError;
use bytemuck::{Pod, Zeroable};

/// [`DequantizeS8Op`]: `scale` and `zero_point` of the int8 input.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct DequantizeParams {
    /// Scale of the int8 input.
    pub scale: f32,
    /// Zero point of the int8 input.
    pub zero_point: i32,
}
const _: () = assert!(core::mem::size_of::<DequantizeParams>() == 8);

/// [`QuantizeF16Op`]: `1/scale` and `zero_point` of the int8 output.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct QuantizeF16Params {
    /// Inverse scale of the int8 output.
    pub inv_scale: f32,
    /// Zero point of the int8 output.
    pub zero_point: i32,
}
const _: () = assert!(core::mem::size_of::<QuantizeF16Params>() == 8);

/// The checks both conversions share: same shape, the dtypes given, a factor in 2^−64..2^64 (as
/// every int8 scale; `quantize_f32`'s rounding constant then absorbs any tiny product) and the
/// int8 side's zero point.
fn check(
    cx: &DecodeCx,
    (from, to): (DType, DType),
    factor: f32,
    zero_point: i32,
    int8: &Tensor,
) -> Result<(), FormatError> {
    let (x, out) = (cx.input(0), cx.output());
    cx.ensure(
        x.dtype == from
            && out.dtype == to
            && (x.desc.h, x.desc.w, x.desc.c) == (out.desc.h, out.desc.w, out.desc.c),
        "conversion tensors",
    )?;
    cx.ensure(
        crate::kernels::is_factor(factor),
        "conversion scale (in 2^-64..2^64)",
    )?;
    cx.ensure(
        zero_point == int8.desc.zero_point,
        "conversion zero point differs from the int8 tensor",
    )
}

/// int8 → fp16: `scale · (q − zp)`.
#[derive(Debug)]
pub struct DequantizeS8Op;

impl OpSpec for DequantizeS8Op {
    const NAME: &'static str = "dequantize";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = DequantizeParams;
    type Decoded<'a> = DequantizeParams;

    fn decode<'a>(
        p: &DequantizeParams,
        cx: &DecodeCx<'a>,
    ) -> Result<DequantizeParams, FormatError> {
        check(
            cx,
            (DType::I8, DType::F16),
            p.scale,
            p.zero_point,
            &cx.input(0),
        )?;
        Ok(*p)
    }

    returns_zero!(scratch_bytes, data_bytes, macs);

    fn run(p: &DequantizeParams, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let x = io.i8_in(0);
        let out = io.f16_out()?;
        kf16::dequantize_to_f16(x, p.scale, p.zero_point, out).map_err(|e| io.kernel(e))
    }
}

/// fp16 → int8: `saturate(round(x · inv_scale) + zp)`.
#[derive(Debug)]
pub struct QuantizeF16Op;

impl OpSpec for QuantizeF16Op {
    const NAME: &'static str = "quantize";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = QuantizeF16Params;
    type Decoded<'a> = QuantizeF16Params;

    fn decode<'a>(
        p: &QuantizeF16Params,
        cx: &DecodeCx<'a>,
    ) -> Result<QuantizeF16Params, FormatError> {
        check(
            cx,
            (DType::F16, DType::I8),
            p.inv_scale,
            p.zero_point,
            &cx.output(),
        )?;
        Ok(*p)
    }

    returns_zero!(scratch_bytes, data_bytes, macs);

    fn run(p: &QuantizeF16Params, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let x = io.f16_in(0)?;
        let out = io.i8_out();
        kf16::quantize_from_f16(x, p.inv_scale, p.zero_point, out).map_err(|e| io.kernel(e))
    }
}

/// [`RequantizeS16Op`]: `s_in / s_out` and the int8 output's zero point.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct RequantizeS16Params {
    /// `s_in / s_out`.
    pub ratio: f32,
    /// Zero point of the int8 output.
    pub zero_point: i32,
}
const _: () = assert!(core::mem::size_of::<RequantizeS16Params>() == 8);

/// int16 → int8: `saturate(round(q · s_in/s_out) + zp)`, where an int8 op reads the int16
/// residual stream.
#[derive(Debug)]
pub struct RequantizeS16Op;

impl OpSpec for RequantizeS16Op {
    const NAME: &'static str = "requantize";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = RequantizeS16Params;
    type Decoded<'a> = RequantizeS16Params;

    fn decode<'a>(
        p: &RequantizeS16Params,
        cx: &DecodeCx<'a>,
    ) -> Result<RequantizeS16Params, FormatError> {
        check(
            cx,
            (DType::I16, DType::I8),
            p.ratio,
            p.zero_point,
            &cx.output(),
        )?;
        Ok(*p)
    }

    returns_zero!(scratch_bytes, data_bytes, macs);

    fn run(p: &RequantizeS16Params, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let x = io.i16_in(0)?;
        requantize_s16(x, p.ratio, p.zero_point, io.i8_out()).map_err(|e| io.kernel(e))
    }
}

/// int16 → fp16: `scale · q`, where an fp16 op reads the int16 residual stream.
#[derive(Debug)]
pub struct DequantizeS16Op;

impl OpSpec for DequantizeS16Op {
    const NAME: &'static str = "dequantize";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = DequantizeParams;
    type Decoded<'a> = DequantizeParams;

    fn decode<'a>(
        p: &DequantizeParams,
        cx: &DecodeCx<'a>,
    ) -> Result<DequantizeParams, FormatError> {
        check(
            cx,
            (DType::I16, DType::F16),
            p.scale,
            p.zero_point,
            &cx.input(0),
        )?;
        Ok(*p)
    }

    returns_zero!(scratch_bytes, data_bytes, macs);

    fn run(p: &DequantizeParams, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let x = io.i16_in(0)?;
        kf16::dequantize_s16_to_f16(x, p.scale, io.f16_out()?).map_err(|e| io.kernel(e))
    }
}
