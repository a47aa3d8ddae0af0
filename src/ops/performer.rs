//! Performer attention (random-feature linear attention) on separate k, q, v token tensors,
//! streamed over the tokens twice with O(features · emb) scratch: int8 ([`PerformerS8Op`], see
//! [`crate::kernels::performer`]) and fp16 ([`PerformerF16Op`]).

use super::{DecodeCx, OpIo, OpSpec, Tensor, is, is_tokens};
use crate::format::{DType, DataRef, FormatError};
use crate::kernels::f16 as kf16;
use crate::kernels::performer::{
    PerformerS8, performer_s8, performer_s8_accumulate, performer_s8_emit,
    performer_s8_pass_scratch_size, performer_s8_scratch_size,
};
use crate::runtime::RunError;
use bytemuck::{Pod, Zeroable};

/// [`PerformerS8Op`]: see [`crate::kernels::performer`]. Inputs are (k, q, v).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct PerformerParams {
    /// Tokens.
    pub tokens: u32,
    /// Channels of k, q, v and the output.
    pub emb: u16,
    /// Random features m.
    pub features: u16,
    /// Scale of k.
    pub k_scale: f32,
    /// Scale of q.
    pub q_scale: f32,
    /// Scale of v.
    pub v_scale: f32,
    /// `1 / s_out`.
    pub out_inv_scale: f32,
    /// Output zero point.
    pub out_zp: i32,
    /// Scale of the int16 `w` (`w ≈ w_scale · w_q`).
    pub w_scale: f32,
    /// int16 `w_q`, `features × emb`.
    pub w: DataRef,
}
const _: () = assert!(core::mem::size_of::<PerformerParams>() == 40);

/// The kernel a performer record describes.
fn kernel<'a>(p: &PerformerParams, cx: &DecodeCx<'a>) -> Result<PerformerS8<'a>, FormatError> {
    PerformerS8::new(
        p.tokens as usize,
        p.emb as usize,
        p.features as usize,
        cx.data(p.w, "performer w")?,
        p.w_scale,
        p.k_scale,
        p.q_scale,
        p.v_scale,
        p.out_inv_scale,
        p.out_zp,
    )
    .map_err(|e| cx.kernel(e))
}

/// int8 performer; inputs (k, q, v), symmetric.
#[derive(Debug)]
pub struct PerformerS8Op;

impl OpSpec for PerformerS8Op {
    const NAME: &'static str = "performer";
    const INPUTS: usize = 3;
    const IN_PLACE: bool = false;
    type Params<'a> = PerformerParams;
    type Decoded<'a> = PerformerS8<'a>;

    fn decode<'a>(p: &PerformerParams, cx: &DecodeCx<'a>) -> Result<PerformerS8<'a>, FormatError> {
        let (n, e) = (p.tokens as usize, p.emb as usize);
        for k in 0..3 {
            let t = cx.input(k);
            cx.ensure(
                is_tokens(&t, DType::I8, n, e) && t.desc.zero_point == 0,
                "performer k/q/v must be symmetric int8 of tokens × emb",
            )?;
        }
        let out = cx.output();
        cx.ensure(
            is_tokens(&out, DType::I8, n, e) && out.desc.zero_point == p.out_zp,
            "performer output tensor",
        )?;
        kernel(p, cx)
    }

    fn scratch_bytes(p: &PerformerParams) -> usize {
        performer_s8_scratch_size(p.emb as usize, p.features as usize)
    }

    fn data_bytes(p: &PerformerParams) -> usize {
        p.w.len as usize
    }

    fn macs(k: &PerformerS8) -> u64 {
        k.macs()
    }

    fn run(p: &PerformerS8, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let (k, q, v) = (io.i8_in(0), io.i8_in(1), io.i8_in(2));
        let (out, scratch) = io.i8_out_scratch();
        performer_s8(p, k, q, v, out, scratch).map_err(|e| io.kernel(e))
    }
}

/// The state tensor of a performer pass: f32, `features × 1 × (emb + 1)` (the running sums,
/// [`performer_state_len`] values).
fn is_state(t: &Tensor, p: &PerformerParams) -> bool {
    is(t, DType::F32, p.features as usize, 1, p.emb as usize + 1)
}

/// The kernel of a pass over a strip (`p.tokens` is the strip's), its state tensor and its int8
/// token inputs checked.
fn decode_pass<'a>(
    p: &PerformerParams,
    cx: &DecodeCx<'a>,
    state: Tensor,
    tokens: &[Tensor],
) -> Result<PerformerS8<'a>, FormatError> {
    cx.ensure(
        is_state(&state, p),
        "performer sums must be f32 features × 1 × (emb + 1)",
    )?;
    for t in tokens {
        cx.ensure(
            is_tokens(t, DType::I8, p.tokens as usize, p.emb as usize) && t.desc.zero_point == 0,
            "performer k/q/v must be symmetric int8 of tokens × emb",
        )?;
    }
    kernel(p, cx)
}

/// Scratch of one pass over a strip (a token's row and features; the sums are a tensor).
fn pass_scratch_bytes(p: &PerformerParams) -> usize {
    performer_s8_pass_scratch_size(p.emb as usize, p.features as usize)
}

/// The state of a pass as f32s.
fn state_of<'s>(bytes: &'s [u8], io: &OpIo) -> Result<&'s [f32], RunError> {
    bytemuck::try_cast_slice(bytes).map_err(|_| RunError::BadPlan { op: io.op })
}

/// Pass 1 of a performer over the first strip of tokens (patch-based runs): the running sums
/// of the strip's k features and kᵀv, from zero. Inputs (k, v); the output is the sums.
#[derive(Debug)]
pub struct PerformerStartS8Op;

impl OpSpec for PerformerStartS8Op {
    const NAME: &'static str = "performer-start";
    const INPUTS: usize = 2;
    const IN_PLACE: bool = false;
    type Params<'a> = PerformerParams;
    type Decoded<'a> = PerformerS8<'a>;

    fn decode<'a>(p: &PerformerParams, cx: &DecodeCx<'a>) -> Result<PerformerS8<'a>, FormatError> {
        decode_pass(p, cx, cx.output(), &[cx.input(0), cx.input(1)])
    }

    fn scratch_bytes(p: &PerformerParams) -> usize {
        pass_scratch_bytes(p)
    }

    fn data_bytes(p: &PerformerParams) -> usize {
        p.w.len as usize
    }

    fn macs(k: &PerformerS8) -> u64 {
        k.pass_macs(1)
    }

    fn run(p: &PerformerS8, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let (k, v) = (io.i8_in(0), io.i8_in(1));
        let op = io.op;
        let state: &mut [f32] =
            bytemuck::try_cast_slice_mut(&mut *io.output).map_err(|_| RunError::BadPlan { op })?;
        state.fill(0.0);
        performer_s8_accumulate(p, k, v, state, io.scratch)
            .map_err(|error| RunError::Kernel { op, error })
    }
}

/// Pass 1 of a performer over a further strip of tokens (patch-based runs, strips in token
/// order): adds the strip's k features and kᵀv to the running sums. Inputs (sums, k, v); the
/// output is the sums themselves (in place).
#[derive(Debug)]
pub struct PerformerSumS8Op;

impl OpSpec for PerformerSumS8Op {
    const NAME: &'static str = "performer-sum";
    const INPUTS: usize = 3;
    const IN_PLACE: bool = true;
    type Params<'a> = PerformerParams;
    type Decoded<'a> = PerformerS8<'a>;

    fn decode<'a>(p: &PerformerParams, cx: &DecodeCx<'a>) -> Result<PerformerS8<'a>, FormatError> {
        cx.ensure(
            cx.inputs[0] == cx.output,
            "performer sums are updated in place",
        )?;
        decode_pass(p, cx, cx.output(), &[cx.input(1), cx.input(2)])
    }

    fn scratch_bytes(p: &PerformerParams) -> usize {
        pass_scratch_bytes(p)
    }

    fn data_bytes(p: &PerformerParams) -> usize {
        p.w.len as usize
    }

    fn macs(k: &PerformerS8) -> u64 {
        k.pass_macs(1)
    }

    fn run(p: &PerformerS8, io: &mut OpIo<'_>) -> Result<(), RunError> {
        if !io.in_place() {
            return Err(RunError::BadPlan { op: io.op });
        }
        let (k, v) = (io.i8_in(1), io.i8_in(2));
        let op = io.op;
        let state: &mut [f32] =
            bytemuck::try_cast_slice_mut(&mut *io.output).map_err(|_| RunError::BadPlan { op })?;
        performer_s8_accumulate(p, k, v, state, io.scratch)
            .map_err(|error| RunError::Kernel { op, error })
    }
}

/// Pass 2 of a performer over a strip of tokens (patch-based runs), once the sums cover all
/// tokens: the strip's outputs. Inputs (q, sums).
#[derive(Debug)]
pub struct PerformerEmitS8Op;

impl OpSpec for PerformerEmitS8Op {
    const NAME: &'static str = "performer-out";
    const INPUTS: usize = 2;
    const IN_PLACE: bool = false;
    type Params<'a> = PerformerParams;
    type Decoded<'a> = PerformerS8<'a>;

    fn decode<'a>(p: &PerformerParams, cx: &DecodeCx<'a>) -> Result<PerformerS8<'a>, FormatError> {
        let out = cx.output();
        cx.ensure(
            is_tokens(&out, DType::I8, p.tokens as usize, p.emb as usize)
                && out.desc.zero_point == p.out_zp,
            "performer output tensor",
        )?;
        decode_pass(p, cx, cx.input(1), &[cx.input(0)])
    }

    fn scratch_bytes(p: &PerformerParams) -> usize {
        pass_scratch_bytes(p)
    }

    fn data_bytes(p: &PerformerParams) -> usize {
        p.w.len as usize
    }

    fn macs(k: &PerformerS8) -> u64 {
        k.pass_macs(2)
    }

    fn run(p: &PerformerS8, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let q = io.i8_in(0);
        let state = state_of(io.inputs[1], io)?;
        let (out, scratch) = io.i8_out_scratch();
        performer_s8_emit(p, q, state, out, scratch).map_err(|e| io.kernel(e))
    }
}

/// [`PerformerF16Op`]. Inputs are (k, q, v).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct PerformerF16Params {
    /// Tokens.
    pub tokens: u32,
    /// Channels.
    pub emb: u16,
    /// Random features m.
    pub features: u16,
    /// f32 `w`, `features × emb`.
    pub w: DataRef,
}
const _: () = assert!(core::mem::size_of::<PerformerF16Params>() == 16);

/// fp16 performer parameters, decoded.
#[derive(Clone, Copy, Debug)]
pub struct PerformerF16<'a> {
    /// The record.
    pub params: PerformerF16Params,
    /// `features × emb` random features.
    pub w: &'a [f32],
}

/// fp16 performer; inputs (k, q, v).
#[derive(Debug)]
pub struct PerformerF16Op;

impl OpSpec for PerformerF16Op {
    const NAME: &'static str = "performer";
    const INPUTS: usize = 3;
    const IN_PLACE: bool = false;
    type Params<'a> = PerformerF16Params;
    type Decoded<'a> = PerformerF16<'a>;

    fn decode<'a>(
        p: &PerformerF16Params,
        cx: &DecodeCx<'a>,
    ) -> Result<PerformerF16<'a>, FormatError> {
        let (n, e, m) = (p.tokens as usize, p.emb as usize, p.features as usize);
        cx.ensure(n > 0 && e > 0 && m > 0, "performer dimensions")?;
        for k in 0..3 {
            cx.ensure(
                is_tokens(&cx.input(k), DType::F16, n, e),
                "performer k/q/v tensors",
            )?;
        }
        cx.ensure(
            is_tokens(&cx.output(), DType::F16, n, e),
            "performer output tensor",
        )?;
        let w = cx.data::<f32>(p.w, "performer w")?;
        cx.ensure(
            w.len() == e * m && w.iter().all(|x| x.is_finite()),
            "performer w length/values",
        )?;
        Ok(PerformerF16 { params: *p, w })
    }

    fn scratch_bytes(p: &PerformerF16Params) -> usize {
        kf16::performer_f16_scratch_size(p.emb as usize, p.features as usize)
    }

    fn data_bytes(p: &PerformerF16Params) -> usize {
        p.w.len as usize
    }

    fn macs(op: &PerformerF16) -> u64 {
        let p = &op.params;
        p.tokens as u64 * p.features as u64 * (4 * p.emb as u64 + 1)
    }

    fn run(op: &PerformerF16, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let p = &op.params;
        let (k, q, v) = (io.f16_in(0)?, io.f16_in(1)?, io.f16_in(2)?);
        let (out, scratch) = io.f16_out_scratch()?;
        kf16::performer_f16(
            p.tokens as usize,
            p.emb as usize,
            p.features as usize,
            op.w,
            k,
            q,
            v,
            out,
            scratch,
        )
        .map_err(|e| io.kernel(e))
    }
}
