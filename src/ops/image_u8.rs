//! The first op of a blob that takes camera pixels: the caller's u8 HWC image into the input
//! tensor through one 256-entry table per channel, to int8 ([`QuantizeImageU8Op`]) or fp16
//! ([`ImageU8ToF16Op`]).
//!
//! The host folds the normalization into the tables: entry `p` of channel `c` is
//! `(p / 255 − mean[c]) / std[c]` quantized onto the input tensor's grid (or rounded to fp16), so
//! the device never holds an f32 copy of the image. Kept apart from the f32 path
//! ([`super::image`]) on purpose: no float arithmetic runs here.

use super::{DecodeCx, OpIo, OpSpec, is};
use crate::format::{DType, DataRef, FormatError};
use crate::kernels::pixels::{self, TABLE_LEN};
use crate::runtime::{ImageLayout, RunError};
use bytemuck::{Pod, Zeroable};
use half::f16;

/// [`QuantizeImageU8Op`] and [`ImageU8ToF16Op`]: where the per-channel tables are.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct PixelTableParams {
    /// `channels × 256` entries (int8 or fp16, the output's type), channel-major.
    pub tables: DataRef,
}
const _: () = assert!(core::mem::size_of::<PixelTableParams>() == 8);

/// The decoded op: the tables, the image's channel count and the rows of the image it writes.
#[derive(Clone, Copy, Debug)]
pub struct PixelTables<'a, T> {
    /// `channels × 256` entries.
    pub tables: &'a [T],
    /// Channels of the image (interleaved in each pixel).
    pub channels: usize,
    /// Pixels of the image it reads, `(start, end)`: all, or the rows of a strip of a
    /// patch-based run (int8 only).
    pub pixels: (usize, usize),
}

/// Checks that the output is the input image's tensor in `dtype` (int8: or rows of it) and that
/// the tables have one entry per channel and pixel value.
fn decode_tables<'a, T: Pod>(
    p: &PixelTableParams,
    cx: &DecodeCx<'a>,
    dtype: DType,
) -> Result<PixelTables<'a, T>, FormatError> {
    let m = cx.meta();
    let (c, h, w) = (
        m.input_channels as usize,
        m.input_height as usize,
        m.input_width as usize,
    );
    let (start, end) = if dtype == DType::I8 {
        super::image::image_rows(cx, dtype)?
    } else {
        cx.ensure(
            is(&cx.output(), dtype, h, w, c),
            "output must be the input image in the op's dtype",
        )?;
        (0, h as u16)
    };
    let tables = cx.data::<T>(p.tables, "pixel tables")?;
    cx.ensure(
        tables.len() == c * TABLE_LEN,
        "pixel tables must hold 256 entries per channel",
    )?;
    let row = w * c;
    Ok(PixelTables {
        tables,
        channels: c,
        pixels: (start as usize * row, end as usize * row),
    })
}

/// The pixels of the caller's image an op reads.
fn pixels_of<'r, T>(op: &PixelTables<'_, T>, io: &OpIo<'r>) -> Result<&'r [u8], RunError> {
    let (pixels, _) = io.u8_image()?;
    // The image's size was checked before the first op ran.
    let op_index = io.op;
    pixels
        .get(op.pixels.0..op.pixels.1)
        .ok_or(RunError::BadPlan { op: op_index })
}

/// u8 HWC image → int8 NHWC input tensor.
#[derive(Debug)]
pub struct QuantizeImageU8Op;

impl OpSpec for QuantizeImageU8Op {
    const NAME: &'static str = "pixels-to-i8";
    const INPUTS: usize = 0;
    const IN_PLACE: bool = false;
    const IMAGE: Option<ImageLayout> = Some(ImageLayout::U8Hwc);
    type Params<'a> = PixelTableParams;
    type Decoded<'a> = PixelTables<'a, i8>;

    fn decode<'a>(
        p: &PixelTableParams,
        cx: &DecodeCx<'a>,
    ) -> Result<PixelTables<'a, i8>, FormatError> {
        decode_tables(p, cx, DType::I8)
    }

    fn scratch_bytes(_: &PixelTableParams) -> usize {
        0
    }

    fn data_bytes(p: &PixelTableParams) -> usize {
        p.tables.len as usize
    }

    fn macs(_: &PixelTables<'_, i8>) -> u64 {
        0
    }

    fn run(op: &PixelTables<'_, i8>, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let pixels = pixels_of(op, io)?;
        pixels::lookup_hwc(pixels, op.channels, op.tables, io.i8_out()).map_err(|e| io.kernel(e))
    }
}

/// u8 HWC image → fp16 NHWC input tensor.
#[derive(Debug)]
pub struct ImageU8ToF16Op;

impl OpSpec for ImageU8ToF16Op {
    const NAME: &'static str = "pixels-to-f16";
    const INPUTS: usize = 0;
    const IN_PLACE: bool = false;
    const IMAGE: Option<ImageLayout> = Some(ImageLayout::U8Hwc);
    type Params<'a> = PixelTableParams;
    type Decoded<'a> = PixelTables<'a, f16>;

    fn decode<'a>(
        p: &PixelTableParams,
        cx: &DecodeCx<'a>,
    ) -> Result<PixelTables<'a, f16>, FormatError> {
        decode_tables(p, cx, DType::F16)
    }

    fn scratch_bytes(_: &PixelTableParams) -> usize {
        0
    }

    fn data_bytes(p: &PixelTableParams) -> usize {
        p.tables.len as usize
    }

    fn macs(_: &PixelTables<'_, f16>) -> u64 {
        0
    }

    fn run(op: &PixelTables<'_, f16>, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let pixels = pixels_of(op, io)?;
        let out = io.f16_out()?;
        pixels::lookup_hwc(pixels, op.channels, op.tables, out).map_err(|e| io.kernel(e))
    }
}
