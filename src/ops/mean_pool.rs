//! The mean over tokens before the head: int8 ([`MeanPoolS8Op`]) and fp16 ([`MeanPoolF16Op`]).

use super::{DecodeCx, OpIo, OpSpec, Tensor, is_tokens};
use crate::format::{DType, FormatError};
use crate::kernels::elementwise::{MeanPoolS8, mean_pool_s8};
use crate::kernels::f16 as kf16;
use crate::runtime::RunError;
use bytemuck::{Pod, Zeroable};

/// [`MeanPoolS8Op`]: see [`MeanPoolS8`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct MeanPoolParams {
    /// Tokens averaged.
    pub tokens: u32,
    /// Channels.
    pub channels: u32,
    /// `s_in / (N · s_out)`.
    pub scale: f32,
    /// `zp_out − zp_in · s_in / s_out`.
    pub offset: f32,
}
const _: () = assert!(core::mem::size_of::<MeanPoolParams>() == 16);

/// The output is one vector of `c` values.
fn is_vector(t: &Tensor, dtype: DType, c: usize) -> bool {
    t.dtype == dtype && t.desc.elements() == c && t.desc.c as usize == c
}

/// int8 mean-pool with requantization.
#[derive(Debug)]
pub struct MeanPoolS8Op;

impl OpSpec for MeanPoolS8Op {
    const NAME: &'static str = "mean-pool";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = MeanPoolParams;
    type Decoded<'a> = MeanPoolS8;

    fn decode<'a>(p: &MeanPoolParams, cx: &DecodeCx<'a>) -> Result<MeanPoolS8, FormatError> {
        let (n, c) = (p.tokens as usize, p.channels as usize);
        cx.ensure(
            is_tokens(&cx.input(0), DType::I8, n, c),
            "mean-pool input tensor",
        )?;
        cx.ensure(
            is_vector(&cx.output(), DType::I8, c),
            "mean-pool output tensor",
        )?;
        let k = MeanPoolS8 {
            tokens: n,
            channels: c,
            scale: p.scale,
            offset: p.offset,
        };
        k.validate().map_err(|e| cx.kernel(e))?;
        Ok(k)
    }

    returns_zero!(scratch_bytes, data_bytes, macs);

    fn run(k: &MeanPoolS8, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let x = io.i8_in(0);
        mean_pool_s8(k, x, io.i8_out()).map_err(|e| io.kernel(e))
    }
}

/// [`MeanPoolF16Op`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct MeanPoolF16Params {
    /// Tokens averaged.
    pub tokens: u32,
    /// Channels.
    pub channels: u32,
}
const _: () = assert!(core::mem::size_of::<MeanPoolF16Params>() == 8);

/// fp16 mean-pool.
#[derive(Debug)]
pub struct MeanPoolF16Op;

impl OpSpec for MeanPoolF16Op {
    const NAME: &'static str = "mean-pool";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = MeanPoolF16Params;
    type Decoded<'a> = MeanPoolF16Params;

    fn decode<'a>(
        p: &MeanPoolF16Params,
        cx: &DecodeCx<'a>,
    ) -> Result<MeanPoolF16Params, FormatError> {
        let (n, c) = (p.tokens as usize, p.channels as usize);
        cx.ensure(n > 0 && c > 0, "mean-pool dimensions")?;
        cx.ensure(
            is_tokens(&cx.input(0), DType::F16, n, c),
            "mean-pool input tensor",
        )?;
        cx.ensure(
            is_vector(&cx.output(), DType::F16, c),
            "mean-pool output tensor",
        )?;
        Ok(*p)
    }

    returns_zero!(scratch_bytes, data_bytes, macs);

    fn run(p: &MeanPoolF16Params, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let x = io.f16_in(0)?;
        let out = io.f16_out()?;
        kf16::mean_pool_f16(p.tokens as usize, p.channels as usize, x, out)
            .map_err(|e| io.kernel(e))
    }
}
