//! Multi-head softmax attention on separate q, k, v token tensors, tiled over keys with an online
//! softmax: int8 ([`AttentionS8Op`], see [`crate::kernels::attention`]) and fp16
//! ([`AttentionF16Op`]).

use super::{DecodeCx, OpIo, OpSpec, is_tokens};
use crate::format::{DType, FormatError};
use crate::kernels::attention::{AttentionS8, attention_s8, attention_s8_scratch_size};
use crate::kernels::f16 as kf16;
use crate::runtime::RunError;
use bytemuck::{Pod, Zeroable};

/// [`AttentionS8Op`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct AttentionParams {
    /// Tokens.
    pub tokens: u32,
    /// Heads.
    pub heads: u16,
    /// Channels per head.
    pub head_dim: u16,
    /// `s_q · s_k · qk_scale`.
    pub logit_scale: f32,
    /// `s_v / s_out`.
    pub out_scale: f32,
    /// Output zero point.
    pub out_zp: i32,
}
const _: () = assert!(core::mem::size_of::<AttentionParams>() == 20);

/// int8 attention; inputs (q, k, v), symmetric.
#[derive(Debug)]
pub struct AttentionS8Op;

impl OpSpec for AttentionS8Op {
    const NAME: &'static str = "attention";
    const INPUTS: usize = 3;
    const IN_PLACE: bool = false;
    type Params<'a> = AttentionParams;
    type Decoded<'a> = AttentionS8;

    fn decode<'a>(p: &AttentionParams, cx: &DecodeCx<'a>) -> Result<AttentionS8, FormatError> {
        let (n, c) = (p.tokens as usize, p.heads as usize * p.head_dim as usize);
        for k in 0..3 {
            let t = cx.input(k);
            cx.ensure(
                is_tokens(&t, DType::I8, n, c) && t.desc.zero_point == 0,
                "attention q/k/v must be symmetric int8 of tokens × heads·head_dim",
            )?;
        }
        let out = cx.output();
        cx.ensure(
            is_tokens(&out, DType::I8, n, c) && out.desc.zero_point == p.out_zp,
            "attention output tensor",
        )?;
        AttentionS8::new(
            n,
            p.heads as usize,
            p.head_dim as usize,
            p.logit_scale,
            p.out_scale,
            p.out_zp,
        )
        .map_err(|e| cx.kernel(e))
    }

    fn scratch_bytes(p: &AttentionParams) -> usize {
        attention_s8_scratch_size(p.tokens as usize, p.head_dim as usize)
    }

    returns_zero!(data_bytes);

    fn macs(a: &AttentionS8) -> u64 {
        a.macs()
    }

    fn run(a: &AttentionS8, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let (q, k, v) = (io.i8_in(0), io.i8_in(1), io.i8_in(2));
        let (out, scratch) = io.i8_out_scratch();
        attention_s8(a, q, k, v, out, scratch).map_err(|e| io.kernel(e))
    }
}

/// [`AttentionF16Op`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct AttentionF16Params {
    /// Tokens.
    pub tokens: u32,
    /// Heads.
    pub heads: u16,
    /// Channels per head.
    pub head_dim: u16,
    /// Logit scale (`head_dim^-1/2`).
    pub qk_scale: f32,
}
const _: () = assert!(core::mem::size_of::<AttentionF16Params>() == 12);

/// fp16 attention; inputs (q, k, v).
#[derive(Debug)]
pub struct AttentionF16Op;

impl OpSpec for AttentionF16Op {
    const NAME: &'static str = "attention";
    const INPUTS: usize = 3;
    const IN_PLACE: bool = false;
    type Params<'a> = AttentionF16Params;
    type Decoded<'a> = AttentionF16Params;

    fn decode<'a>(
        p: &AttentionF16Params,
        cx: &DecodeCx<'a>,
    ) -> Result<AttentionF16Params, FormatError> {
        let (n, c) = (p.tokens as usize, p.heads as usize * p.head_dim as usize);
        cx.ensure(
            n > 0 && c > 0 && p.qk_scale.is_finite(),
            "attention parameters",
        )?;
        for k in 0..3 {
            cx.ensure(
                is_tokens(&cx.input(k), DType::F16, n, c),
                "attention q/k/v tensors",
            )?;
        }
        cx.ensure(
            is_tokens(&cx.output(), DType::F16, n, c),
            "attention output tensor",
        )?;
        Ok(*p)
    }

    fn scratch_bytes(p: &AttentionF16Params) -> usize {
        kf16::attention_f16_scratch_size(p.head_dim as usize)
    }

    returns_zero!(data_bytes);

    fn macs(p: &AttentionF16Params) -> u64 {
        2 * (p.tokens as u64).pow(2) * p.heads as u64 * p.head_dim as u64
    }

    fn run(p: &AttentionF16Params, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let (q, k, v) = (io.f16_in(0)?, io.f16_in(1)?, io.f16_in(2)?);
        let (out, scratch) = io.f16_out_scratch()?;
        kf16::attention_f16(
            p.tokens as usize,
            p.heads as usize,
            p.head_dim as usize,
            p.qk_scale,
            q,
            k,
            v,
            out,
            scratch,
        )
        .map_err(|e| io.kernel(e))
    }
}
