//! 2-D convolutions: int8 ([`ConvS8Op`], the PCM stacks and the patch embedding), int4 weights
//! with int8 activations ([`ConvS4Op`]) and fp16 ([`ConvF16Op`]). The kernels are in
//! [`crate::kernels::conv`], [`crate::kernels::conv_s4`] and [`crate::kernels::f16`].

use super::{DecodeCx, OpIo, OpSpec, Tensor, act, is, refs_len, rows_of};
use crate::format::{DType, DataRef, FormatError};
use crate::kernels::KernelError;
use crate::kernels::conv::{ConvGeometry, ConvS8, OutputSlice, conv_s8, conv_s8_scratch_size};
use crate::kernels::conv_s4::{ConvS4, conv_s4, conv_s4_scratch_size};
use crate::kernels::f16::{self as kf16, Activation};
use crate::runtime::RunError;
use bytemuck::{Pod, Zeroable};
use core::ops::Range;
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

/// [`ConvS8Op`] and [`ConvS4Op`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ConvParams {
    /// Shape.
    pub geom: ConvGeomRecord,
    /// Input zero point (also the padding value).
    pub in_zp: i32,
    /// Output zero point (of the pre-activation grid when `lut` is present).
    pub out_zp: i32,
    /// Weights, OHWI per group: int8 ([`ConvS8Op`]), or one row of int4 per output channel
    /// packed as [`crate::kernels::s4`] describes ([`ConvS4Op`]).
    pub weights: DataRef,
    /// int32 bias per output channel (input zero point folded in).
    pub bias: DataRef,
    /// [`crate::quant::Requant`] per output channel.
    pub requant: DataRef,
    /// Optional 256-byte activation table.
    pub lut: DataRef,
}
const _: () = assert!(core::mem::size_of::<ConvParams>() == 72);

/// A decoded int8 convolution: the kernel (of the whole map, or of the output tensor's rows of
/// it) and the elements of the input tensor it reads (`start..end`: all of them for a whole map,
/// the rows the window reaches for a strip).
#[derive(Clone, Copy, Debug)]
pub struct ConvRows<'a> {
    /// The convolution the kernel runs.
    pub kernel: ConvS8<'a>,
    /// Elements of the input tensor it reads, `(start, end)`.
    pub input: (usize, usize),
}

/// The rows of its map an int8 convolution's (or PRM's) input and output tensors hold, checked
/// against the map: `(input rows, output rows)`.
pub(crate) fn tensor_rows(
    map: &ConvGeometry,
    x: &Tensor,
    out: &Tensor,
    cx: &DecodeCx,
) -> Result<(Range<usize>, Range<usize>), FormatError> {
    let out_rows = rows_of(out, DType::I8, map.out_h, map.out_w, map.out_c)
        .ok_or(cx.bad("output tensor shape/dtype differs from the conv"))?;
    let in_rows = rows_of(x, DType::I8, map.in_h, map.in_w, map.in_c)
        .ok_or(cx.bad("input tensor shape/dtype differs from the conv"))?;
    Ok((in_rows, out_rows))
}

/// The geometry a convolution of the map `map` runs with, when its input tensor holds rows
/// `in_rows` of the map's input and its output tensor rows `out_rows` of its output, and the
/// elements of the input tensor it reads, `(start, end)`. Whole tensors: `map` itself, all of the
/// input. A strip of a patch-based run: the window of the output rows
/// ([`ConvGeometry::window`]), which the input rows must cover.
pub(crate) fn window(
    map: &ConvGeometry,
    in_rows: Range<usize>,
    out_rows: Range<usize>,
) -> Result<(ConvGeometry, (usize, usize)), KernelError> {
    let row = map.in_w * map.in_c;
    if out_rows == (0..map.out_h) && in_rows == (0..map.in_h) {
        return Ok((*map, (0, map.in_h * row)));
    }
    let (g, reads) = map.window(out_rows)?;
    if !(in_rows.start <= reads.start && reads.end <= in_rows.end) {
        return Err(KernelError::BadParam {
            what: "the input strip does not hold the rows the output strip reaches",
        });
    }
    let skip = reads.start - in_rows.start;
    Ok((g, (skip * row, (skip + reads.len()) * row)))
}

/// int8 convolution with fused bias, per-channel requantization and an optional activation table.
#[derive(Debug)]
pub struct ConvS8Op;

impl OpSpec for ConvS8Op {
    const NAME: &'static str = "conv";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = ConvParams;
    type Decoded<'a> = ConvRows<'a>;

    fn decode<'a>(p: &ConvParams, cx: &DecodeCx<'a>) -> Result<ConvRows<'a>, FormatError> {
        let (g, input, lut) = decode_int8(p, cx)?;
        let kernel = ConvS8::new(
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
        .map_err(|e| cx.kernel(e))?;
        Ok(ConvRows { kernel, input })
    }

    fn scratch_bytes(p: &ConvParams) -> usize {
        conv_s8_scratch_size(&p.geom.geometry())
    }

    fn data_bytes(p: &ConvParams) -> usize {
        refs_len(&[p.weights, p.bias, p.requant, p.lut])
    }

    fn macs(k: &ConvRows) -> u64 {
        k.kernel.geometry().macs()
    }

    fn run(k: &ConvRows, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let x = io.i8_in(0).get(k.input.0..k.input.1);
        let x = x.ok_or(RunError::BadPlan { op: io.op })?;
        let (out, scratch) = io.i8_out_scratch();
        conv_s8(&k.kernel, x, out, scratch).map_err(|e| io.kernel(e))
    }
}

/// What the int8 and int4-weight convolutions check alike: the geometry of the window the
/// tensors hold, the elements of the input it reads, the zero points, the activation table.
#[allow(clippy::type_complexity)]
fn decode_int8<'a>(
    p: &ConvParams,
    cx: &DecodeCx<'a>,
) -> Result<
    (
        ConvGeometry,
        (usize, usize),
        Option<&'a crate::quant::Lut256>,
    ),
    FormatError,
> {
    let map = p.geom.geometry();
    map.validate().map_err(|e| cx.kernel(e))?;
    let (x, out) = (cx.input(0), cx.output());
    let (in_rows, out_rows) = tensor_rows(&map, &x, &out, cx)?;
    let (g, input) = window(&map, in_rows, out_rows).map_err(|e| cx.kernel(e))?;
    cx.ensure(
        p.in_zp == x.desc.zero_point,
        "conv input zero point differs from its tensor",
    )?;
    let lut = cx.lut(p.lut)?;
    cx.ensure(
        lut.is_some() || p.out_zp == out.desc.zero_point,
        "conv output zero point differs from its tensor",
    )?;
    Ok((g, input, lut))
}

/// A decoded int4-weight convolution (as [`ConvRows`]).
#[derive(Clone, Copy, Debug)]
pub struct ConvS4Rows<'a> {
    /// The convolution the kernel runs.
    pub kernel: ConvS4<'a>,
    /// Elements of the input tensor it reads, `(start, end)`.
    pub input: (usize, usize),
}

/// int8 convolution whose weights are int4 (two per byte), otherwise as [`ConvS8Op`].
#[derive(Debug)]
pub struct ConvS4Op;

impl OpSpec for ConvS4Op {
    const NAME: &'static str = "conv_w4";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = ConvParams;
    type Decoded<'a> = ConvS4Rows<'a>;

    fn decode<'a>(p: &ConvParams, cx: &DecodeCx<'a>) -> Result<ConvS4Rows<'a>, FormatError> {
        let (g, input, lut) = decode_int8(p, cx)?;
        let kernel = ConvS4::new(
            g,
            cx.data(p.weights, "conv int4 weights")?,
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
        .map_err(|e| cx.kernel(e))?;
        Ok(ConvS4Rows { kernel, input })
    }

    fn scratch_bytes(p: &ConvParams) -> usize {
        conv_s4_scratch_size(&p.geom.geometry())
    }

    fn data_bytes(p: &ConvParams) -> usize {
        refs_len(&[p.weights, p.bias, p.requant, p.lut])
    }

    fn macs(k: &ConvS4Rows) -> u64 {
        k.kernel.geometry().macs()
    }

    fn run(k: &ConvS4Rows, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let x = io.i8_in(0).get(k.input.0..k.input.1);
        let x = x.ok_or(RunError::BadPlan { op: io.op })?;
        let (out, scratch) = io.i8_out_scratch();
        conv_s4(&k.kernel, x, out, scratch).map_err(|e| io.kernel(e))
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

    fn scratch_bytes(p: &ConvF16Params) -> usize {
        kf16::conv_f16_scratch_size(&p.geom.geometry())
    }

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
        let (out, scratch) = io.f16_out_scratch()?;
        kf16::conv_f16(&c.geom, c.weights, c.bias, c.act, slice, x, out, scratch)
            .map_err(|e| io.kernel(e))
    }
}
