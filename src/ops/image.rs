//! The first op of every blob: the caller's f32 NCHW image into the input tensor, quantized to
//! int8 ([`QuantizeImageOp`]) or converted to fp16 ([`ImageToF16Op`]).

use super::{DecodeCx, OpIo, OpSpec, is, rows_of};
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

/// The rows of the image an op's output tensor holds: all of them, or a strip of a
/// patch-based run (int8 only).
pub(crate) fn image_rows(cx: &DecodeCx, dtype: DType) -> Result<(u16, u16), FormatError> {
    let (c, h, w) = image_shape(cx);
    let rows = rows_of(&cx.output(), dtype, h, w, c)
        .ok_or(cx.bad("output must be the input image (or rows of it) in the op's dtype"))?;
    // Rows of a tensor are u16 (its row0 and h).
    Ok((rows.start as u16, rows.end as u16))
}

/// A decoded image quantization: the record and the rows of the image it writes.
#[derive(Clone, Copy, Debug)]
pub struct QuantizeRows {
    /// The record.
    pub params: QuantizeParams,
    /// Rows of the image, `(start, end)`.
    pub rows: (u16, u16),
}

/// f32 NCHW image → int8 NHWC input tensor (or rows of it: a strip of a patch-based run).
#[derive(Debug)]
pub struct QuantizeImageOp;

impl OpSpec for QuantizeImageOp {
    const NAME: &'static str = "quantize";
    const INPUTS: usize = 0;
    const IN_PLACE: bool = false;
    const IMAGE: Option<ImageLayout> = Some(ImageLayout::F32Nchw);
    type Params<'a> = QuantizeParams;
    type Decoded<'a> = QuantizeRows;

    fn decode<'a>(p: &QuantizeParams, cx: &DecodeCx<'a>) -> Result<QuantizeRows, FormatError> {
        let rows = image_rows(cx, DType::I8)?;
        cx.ensure(
            crate::kernels::is_factor(p.inv_scale) && p.zero_point == cx.output().desc.zero_point,
            "input quantization (inv_scale in 2^-64..2^64, the output's zero point)",
        )?;
        Ok(QuantizeRows { params: *p, rows })
    }

    returns_zero!(scratch_bytes, data_bytes, macs);

    fn run(op: &QuantizeRows, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let (img, m) = io.f32_image()?;
        let (c, h, w) = (
            m.input_channels as usize,
            m.input_height as usize,
            m.input_width as usize,
        );
        let (p, rows) = (&op.params, op.rows.0 as usize..op.rows.1 as usize);
        let out = io.i8_out();
        elementwise::quantize_image_rows_nchw(img, c, h, w, rows, p.inv_scale, p.zero_point, out)
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
