//! The first op of every blob: the caller's f32 NCHW image into the input tensor, quantized to
//! int8 ([`QuantizeImageOp`]) or converted to fp16 ([`ImageToF16Op`]).

use super::{DecodeCx, OpIo, OpSpec, is};
use crate::format::{DType, FormatError};
use crate::kernels::{elementwise, f16 as kf16};
use crate::runtime::{ImageLayout, RunError};
use bytemuck::{Pod, Zeroable};

/// [`QuantizeImageOp`]: `q = saturate(round(x · inv_scale) + zero_point)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct QuantizeParams {
    /// `1 / scale` of the output tensor.
    pub inv_scale: f32,
    /// Zero point of the output tensor.
    pub zero_point: i32,
}
const _: () = assert!(core::mem::size_of::<QuantizeParams>() == 8);

/// The image's shape `(c, h, w)` from the metadata.
fn image_shape(cx: &DecodeCx) -> (usize, usize, usize) {
    let m = cx.meta();
    (
        m.input_channels as usize,
        m.input_height as usize,
        m.input_width as usize,
    )
}

/// f32 NCHW image → int8 NHWC input tensor.
#[derive(Debug)]
pub struct QuantizeImageOp;

impl OpSpec for QuantizeImageOp {
    const NAME: &'static str = "quantize";
    const INPUTS: usize = 0;
    const IN_PLACE: bool = false;
    const IMAGE: Option<ImageLayout> = Some(ImageLayout::F32Nchw);
    type Params<'a> = QuantizeParams;
    type Decoded<'a> = QuantizeParams;

    fn decode<'a>(p: &QuantizeParams, cx: &DecodeCx<'a>) -> Result<QuantizeParams, FormatError> {
        let (c, h, w) = image_shape(cx);
        let out = cx.output();
        cx.ensure(
            is(&out, DType::I8, h, w, c),
            "output must be the int8 input image",
        )?;
        cx.ensure(
            crate::kernels::is_factor(p.inv_scale) && p.zero_point == out.desc.zero_point,
            "input quantization (inv_scale in 2^-64..2^64, the output's zero point)",
        )?;
        Ok(*p)
    }

    returns_zero!(scratch_bytes, data_bytes, macs);

    fn run(p: &QuantizeParams, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let (img, m) = io.f32_image()?;
        let (img, c, h, w) = (
            img,
            m.input_channels as usize,
            m.input_height as usize,
            m.input_width as usize,
        );
        elementwise::quantize_image_nchw(img, c, h, w, p.inv_scale, p.zero_point, io.i8_out())
            .map_err(|e| io.kernel(e))
    }
}

/// f32 NCHW image → fp16 NHWC input tensor.
#[derive(Debug)]
pub struct ImageToF16Op;

impl OpSpec for ImageToF16Op {
    const NAME: &'static str = "image-to-f16";
    const INPUTS: usize = 0;
    const IN_PLACE: bool = false;
    const IMAGE: Option<ImageLayout> = Some(ImageLayout::F32Nchw);
    type Params<'a> = ();
    type Decoded<'a> = ();

    fn decode<'a>(_: &(), cx: &DecodeCx<'a>) -> Result<(), FormatError> {
        let (c, h, w) = image_shape(cx);
        cx.ensure(
            is(&cx.output(), DType::F16, h, w, c),
            "output must be the fp16 input image",
        )
    }

    returns_zero!(scratch_bytes, data_bytes, macs);

    fn run(_: &(), io: &mut OpIo<'_>) -> Result<(), RunError> {
        let (img, m) = io.f32_image()?;
        let (img, c, h, w) = (
            img,
            m.input_channels as usize,
            m.input_height as usize,
            m.input_width as usize,
        );
        let out = io.f16_out()?;
        kf16::image_nchw_to_f16(img, c, h, w, out).map_err(|e| io.kernel(e))
    }
}
