//! Fully connected layers (qkv, proj, the MLPs, the head): int8 ([`LinearS8Op`]), int4 weights
//! with int8 activations ([`LinearS4Op`]) and fp16 ([`LinearF16Op`]). The kernels are in
//! [`crate::kernels::linear`], [`crate::kernels::linear_s4`] and [`crate::kernels::f16`].

use super::conv::activation;
use super::{DecodeCx, OpIo, OpSpec, is_tokens, refs_len};
use crate::format::{DType, DataRef, FormatError};
use crate::kernels::f16::{self as kf16, Activation};
use crate::kernels::linear::{LinearS8, linear_s8, linear_s8_scratch_size};
use crate::kernels::linear_s4::{LinearS4, linear_s4, linear_s4_scratch_size};
use crate::quant::Lut256;
use crate::runtime::RunError;
use bytemuck::{Pod, Zeroable};
use half::f16;

/// [`LinearS8Op`] and [`LinearS4Op`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct LinearParams {
    /// Rows of the input.
    pub tokens: u32,
    /// Input features.
    pub in_features: u16,
    /// Output features.
    pub out_features: u16,
    /// Output zero point (of the pre-activation grid when `lut` is present).
    pub out_zp: i32,
    /// Weights, `out × in`: int8 ([`LinearS8Op`]), or int4 rows packed as
    /// [`crate::kernels::s4`] describes ([`LinearS4Op`]).
    pub weights: DataRef,
    /// int32 bias (input zero point folded in).
    pub bias: DataRef,
    /// Requantization per output feature.
    pub requant: DataRef,
    /// Optional activation table.
    pub lut: DataRef,
}
const _: () = assert!(core::mem::size_of::<LinearParams>() == 44);

/// What the int8 and int4-weight linear layers check alike: the tensors' shapes and zero
/// points and the activation table; returns `(tokens, in_features, out_features, table)`.
fn decode_int8<'a>(
    p: &LinearParams,
    cx: &DecodeCx<'a>,
) -> Result<(usize, usize, usize, Option<&'a Lut256>), FormatError> {
    let (n, fi, fo) = (
        p.tokens as usize,
        p.in_features as usize,
        p.out_features as usize,
    );
    let out = cx.output();
    cx.ensure(
        is_tokens(&cx.input(0), DType::I8, n, fi),
        "linear input tensor shape/dtype",
    )?;
    cx.ensure(
        is_tokens(&out, DType::I8, n, fo),
        "linear output tensor shape/dtype",
    )?;
    let lut = cx.lut(p.lut)?;
    cx.ensure(
        lut.is_some() || p.out_zp == out.desc.zero_point,
        "linear output zero point differs from its tensor",
    )?;
    Ok((n, fi, fo, lut))
}

/// int8 linear layer with fused bias, per-feature requantization and an optional activation.
#[derive(Debug)]
pub struct LinearS8Op;

impl OpSpec for LinearS8Op {
    const NAME: &'static str = "linear";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = LinearParams;
    type Decoded<'a> = LinearS8<'a>;

    fn decode<'a>(p: &LinearParams, cx: &DecodeCx<'a>) -> Result<LinearS8<'a>, FormatError> {
        let (n, fi, fo, lut) = decode_int8(p, cx)?;
        LinearS8::new(
            n,
            fi,
            fo,
            cx.data(p.weights, "linear weights")?,
            cx.data(p.bias, "linear bias")?,
            cx.data(p.requant, "linear requant")?,
            p.out_zp,
            lut,
        )
        .map_err(|e| cx.kernel(e))
    }

    fn scratch_bytes(p: &LinearParams) -> usize {
        linear_s8_scratch_size(
            p.tokens as usize,
            p.in_features as usize,
            p.out_features as usize,
        )
    }

    fn data_bytes(p: &LinearParams) -> usize {
        refs_len(&[p.weights, p.bias, p.requant, p.lut])
    }

    fn macs(k: &LinearS8) -> u64 {
        k.macs()
    }

    fn run(k: &LinearS8, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let x = io.i8_in(0);
        let (out, scratch) = io.i8_out_scratch();
        linear_s8(k, x, out, scratch).map_err(|e| io.kernel(e))
    }
}

/// int8 linear layer whose weights are int4 (two per byte), otherwise as [`LinearS8Op`].
#[derive(Debug)]
pub struct LinearS4Op;

impl OpSpec for LinearS4Op {
    const NAME: &'static str = "linear_w4";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = LinearParams;
    type Decoded<'a> = LinearS4<'a>;

    fn decode<'a>(p: &LinearParams, cx: &DecodeCx<'a>) -> Result<LinearS4<'a>, FormatError> {
        let (n, fi, fo, lut) = decode_int8(p, cx)?;
        LinearS4::new(
            n,
            fi,
            fo,
            cx.data(p.weights, "linear int4 weights")?,
            cx.data(p.bias, "linear bias")?,
            cx.data(p.requant, "linear requant")?,
            p.out_zp,
            lut,
        )
        .map_err(|e| cx.kernel(e))
    }

    fn scratch_bytes(p: &LinearParams) -> usize {
        linear_s4_scratch_size(
            p.tokens as usize,
            p.in_features as usize,
            p.out_features as usize,
        )
    }

    fn data_bytes(p: &LinearParams) -> usize {
        refs_len(&[p.weights, p.bias, p.requant, p.lut])
    }

    fn macs(k: &LinearS4) -> u64 {
        k.macs()
    }

    fn run(k: &LinearS4, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let x = io.i8_in(0);
        let (out, scratch) = io.i8_out_scratch();
        linear_s4(k, x, out, scratch).map_err(|e| io.kernel(e))
    }
}

/// [`LinearF16Op`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct LinearF16Params {
    /// Rows.
    pub tokens: u32,
    /// Input features.
    pub in_features: u16,
    /// Output features.
    pub out_features: u16,
    /// Activation code ([`super::act`]).
    pub act: u32,
    /// fp16 weights, `out × in`.
    pub weights: DataRef,
    /// f32 bias.
    pub bias: DataRef,
}
const _: () = assert!(core::mem::size_of::<LinearF16Params>() == 28);

/// fp16 linear parameters, decoded.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub struct LinearF16<'a> {
    pub tokens: usize,
    pub in_features: usize,
    pub out_features: usize,
    pub weights: &'a [f16],
    pub bias: &'a [f32],
    pub act: Activation,
}

/// fp16 linear layer with an f32 bias and a fused activation.
#[derive(Debug)]
pub struct LinearF16Op;

impl OpSpec for LinearF16Op {
    const NAME: &'static str = "linear";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = LinearF16Params;
    type Decoded<'a> = LinearF16<'a>;

    fn decode<'a>(p: &LinearF16Params, cx: &DecodeCx<'a>) -> Result<LinearF16<'a>, FormatError> {
        let (n, fi, fo) = (
            p.tokens as usize,
            p.in_features as usize,
            p.out_features as usize,
        );
        cx.ensure(n > 0 && fi > 0 && fo > 0, "linear dimensions must be > 0")?;
        cx.ensure(
            is_tokens(&cx.input(0), DType::F16, n, fi),
            "linear input tensor shape/dtype",
        )?;
        cx.ensure(
            is_tokens(&cx.output(), DType::F16, n, fo),
            "linear output tensor shape/dtype",
        )?;
        let weights = cx.data::<f16>(p.weights, "linear weights")?;
        let bias = cx.data::<f32>(p.bias, "linear bias")?;
        cx.ensure(
            weights.len() == fi * fo && bias.len() == fo,
            "linear fp16 weight/bias length",
        )?;
        Ok(LinearF16 {
            tokens: n,
            in_features: fi,
            out_features: fo,
            weights,
            bias,
            act: activation(p.act, cx)?,
        })
    }

    fn scratch_bytes(p: &LinearF16Params) -> usize {
        kf16::linear_f16_scratch_size(p.in_features as usize)
    }

    fn data_bytes(p: &LinearF16Params) -> usize {
        refs_len(&[p.weights, p.bias])
    }

    fn macs(l: &LinearF16) -> u64 {
        (l.tokens * l.in_features * l.out_features) as u64
    }

    fn run(l: &LinearF16, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let x = io.f16_in(0)?;
        let (out, scratch) = io.f16_out_scratch()?;
        kf16::linear_f16(
            l.tokens,
            l.in_features,
            l.out_features,
            l.weights,
            l.bias,
            l.act,
            x,
            out,
            scratch,
        )
        .map_err(|e| io.kernel(e))
    }
}
