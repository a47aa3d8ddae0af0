//! LayerNorm over the channels of each token: int8 ([`LayerNormS8Op`], exact integer statistics
//! then f32, see [`crate::kernels::layernorm`]), int16 in → int8 out ([`LayerNormS16Op`], the
//! same on the int16 residual stream) and fp16 ([`LayerNormF16Op`]).

use super::{DecodeCx, OpIo, OpSpec, is_tokens, refs_len};
use crate::format::{DType, DataRef, FormatError};
use crate::kernels::f16 as kf16;
use crate::kernels::layernorm::{LayerNormS8, layernorm_s8, layernorm_s16};
use crate::runtime::RunError;
use bytemuck::{Pod, Zeroable};

/// [`LayerNormS8Op`]: see [`crate::kernels::layernorm`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct LayerNormParams {
    /// Tokens.
    pub tokens: u32,
    /// Channels.
    pub channels: u16,
    /// Reserved, zero.
    pub reserved: u16,
    /// `eps · C² / s_in²`.
    pub eps_term: f32,
    /// f32 per channel: `γ / s_out`.
    pub gain: DataRef,
    /// f32 per channel: `β / s_out + zp_out`.
    pub offset: DataRef,
}
const _: () = assert!(core::mem::size_of::<LayerNormParams>() == 28);

/// The integer LayerNorms' decode: `input` (int8 or int16) tokens in, int8 out, the record's
/// tables (an int16 input takes fewer than 2^15 channels).
fn decode_integer<'a>(
    p: &LayerNormParams,
    cx: &DecodeCx<'a>,
    input: DType,
) -> Result<LayerNormS8<'a>, FormatError> {
    let (n, c) = (p.tokens as usize, p.channels as usize);
    cx.ensure(
        is_tokens(&cx.input(0), input, n, c),
        "layernorm input tensor shape/dtype",
    )?;
    cx.ensure(
        is_tokens(&cx.output(), DType::I8, n, c),
        "layernorm output tensor shape/dtype",
    )?;
    cx.ensure(
        input != DType::I16 || c <= crate::kernels::layernorm::S16_CHANNELS_MAX,
        "int16 layernorm takes fewer than 2^15 channels",
    )?;
    LayerNormS8::new(
        n,
        c,
        p.eps_term,
        cx.data(p.gain, "layernorm gain")?,
        cx.data(p.offset, "layernorm offset")?,
    )
    .map_err(|e| cx.kernel(e))
}

/// int8 LayerNorm.
#[derive(Debug)]
pub struct LayerNormS8Op;

impl OpSpec for LayerNormS8Op {
    const NAME: &'static str = "layernorm";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = LayerNormParams;
    type Decoded<'a> = LayerNormS8<'a>;

    fn decode<'a>(p: &LayerNormParams, cx: &DecodeCx<'a>) -> Result<LayerNormS8<'a>, FormatError> {
        decode_integer(p, cx, DType::I8)
    }

    returns_zero!(scratch_bytes, macs);

    fn data_bytes(p: &LayerNormParams) -> usize {
        refs_len(&[p.gain, p.offset])
    }

    fn run(k: &LayerNormS8, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let x = io.i8_in(0);
        layernorm_s8(k, x, io.i8_out()).map_err(|e| io.kernel(e))
    }
}

/// int16 → int8 LayerNorm (the int8 op's params, `eps_term` in int16 input units squared).
#[derive(Debug)]
pub struct LayerNormS16Op;

impl OpSpec for LayerNormS16Op {
    const NAME: &'static str = "layernorm_a16";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = LayerNormParams;
    type Decoded<'a> = LayerNormS8<'a>;

    fn decode<'a>(p: &LayerNormParams, cx: &DecodeCx<'a>) -> Result<LayerNormS8<'a>, FormatError> {
        decode_integer(p, cx, DType::I16)
    }

    returns_zero!(scratch_bytes, macs);

    fn data_bytes(p: &LayerNormParams) -> usize {
        refs_len(&[p.gain, p.offset])
    }

    fn run(k: &LayerNormS8, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let x = io.i16_in(0)?;
        layernorm_s16(k, x, io.i8_out()).map_err(|e| io.kernel(e))
    }
}

/// [`LayerNormF16Op`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct LayerNormF16Params {
    /// Tokens.
    pub tokens: u32,
    /// Channels.
    pub channels: u32,
    /// Epsilon.
    pub eps: f32,
    /// f32 γ.
    pub gamma: DataRef,
    /// f32 β.
    pub beta: DataRef,
}
const _: () = assert!(core::mem::size_of::<LayerNormF16Params>() == 28);

/// fp16 LayerNorm parameters, decoded.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub struct LayerNormF16<'a> {
    pub channels: usize,
    pub eps: f32,
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
}

/// fp16 LayerNorm (two-pass mean and variance in f32).
#[derive(Debug)]
pub struct LayerNormF16Op;

impl OpSpec for LayerNormF16Op {
    const NAME: &'static str = "layernorm";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = LayerNormF16Params;
    type Decoded<'a> = LayerNormF16<'a>;

    fn decode<'a>(
        p: &LayerNormF16Params,
        cx: &DecodeCx<'a>,
    ) -> Result<LayerNormF16<'a>, FormatError> {
        let (n, c) = (p.tokens as usize, p.channels as usize);
        cx.ensure(
            is_tokens(&cx.input(0), DType::F16, n, c),
            "layernorm input tensor",
        )?;
        cx.ensure(
            is_tokens(&cx.output(), DType::F16, n, c),
            "layernorm output tensor",
        )?;
        cx.ensure(p.eps.is_finite() && p.eps > 0.0, "layernorm eps")?;
        let gamma = cx.data::<f32>(p.gamma, "layernorm gamma")?;
        let beta = cx.data::<f32>(p.beta, "layernorm beta")?;
        cx.ensure(
            gamma.len() == c && beta.len() == c,
            "layernorm gamma/beta length",
        )?;
        Ok(LayerNormF16 {
            channels: c,
            eps: p.eps,
            gamma,
            beta,
        })
    }

    returns_zero!(scratch_bytes, macs);

    fn data_bytes(p: &LayerNormF16Params) -> usize {
        refs_len(&[p.gamma, p.beta])
    }

    fn run(l: &LayerNormF16, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let x = io.f16_in(0)?;
        let out = io.f16_out()?;
        kf16::layernorm_f16(l.channels, l.eps, l.gamma, l.beta, x, out).map_err(|e| io.kernel(e))
    }
}
