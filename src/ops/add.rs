//! The residual add of two tensors of one shape: int8 with requantization ([`AddS8Op`]), onto an
//! int16 residual stream ([`AddS16Op`]) and fp16 ([`AddF16Op`]). Each may run in place: the arena
//! plan lets the sum take over the storage of an operand of the output's dtype that dies at the
//! add, which the format allows for the first operand only.

use super::{DecodeCx, OpIo, OpSpec};
use crate::format::{DType, FormatError};
use crate::kernels::elementwise::{
    AddOperand, AddS8, add_s8, add_s8_in_place, add_s16, add_s16_in_place,
};
use crate::kernels::f16 as kf16;
use crate::runtime::RunError;
use bytemuck::{Pod, Zeroable};

/// [`AddS8Op`]: see [`AddS8`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct AddParams {
    /// `s_a / s_out`.
    pub ra: f32,
    /// `s_b / s_out`.
    pub rb: f32,
    /// `zp_out − zp_a·ra − zp_b·rb`.
    pub c: f32,
}
const _: () = assert!(core::mem::size_of::<AddParams>() == 12);

/// Both operands and the output have one shape and `dtype`.
fn check_shapes(cx: &DecodeCx, dtype: DType) -> Result<(), FormatError> {
    check_operands(
        cx,
        |d| d == dtype,
        dtype,
        "add operands and output must have the same shape and dtype",
    )
}

/// Both operands have the output's shape and a dtype `operand` accepts; the output is `out`.
fn check_operands(
    cx: &DecodeCx,
    operand: impl Fn(DType) -> bool,
    out: DType,
    what: &'static str,
) -> Result<(), FormatError> {
    let o = cx.output();
    let same = |k: usize| {
        let t = cx.input(k);
        operand(t.dtype)
            && t.desc.elements() == o.desc.elements()
            && (t.desc.h, t.desc.w, t.desc.c) == (o.desc.h, o.desc.w, o.desc.c)
    };
    cx.ensure(same(0) && same(1) && o.dtype == out, what)
}

/// The requantizing add's factors, validated.
fn factors(p: &AddParams, cx: &DecodeCx) -> Result<AddS8, FormatError> {
    let k = AddS8 {
        ra: p.ra,
        rb: p.rb,
        c: p.c,
    };
    k.validate().map_err(|e| cx.kernel(e))?;
    Ok(k)
}

/// int8 add: `round(a · ra + b · rb + c)`.
#[derive(Debug)]
pub struct AddS8Op;

impl OpSpec for AddS8Op {
    const NAME: &'static str = "add";
    const INPUTS: usize = 2;
    const IN_PLACE: bool = true;
    type Params<'a> = AddParams;
    type Decoded<'a> = AddS8;

    fn decode<'a>(p: &AddParams, cx: &DecodeCx<'a>) -> Result<AddS8, FormatError> {
        check_shapes(cx, DType::I8)?;
        factors(p, cx)
    }

    returns_zero!(scratch_bytes, data_bytes, macs);

    fn run(k: &AddS8, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let b = io.i8_in(1);
        let result = if io.in_place() {
            add_s8_in_place(k, io.i8_out(), b)
        } else {
            let a = io.i8_in(0);
            add_s8(k, a, b, io.i8_out())
        };
        result.map_err(|e| io.kernel(e))
    }
}

/// The int16 add: `round(a · ra + b · rb + c)` saturated to int16, each operand int8 or int16
/// (the residual stream and a branch's output); the params are [`AddS8Op`]'s.
#[derive(Debug)]
pub struct AddS16Op;

/// [`AddS16Op`] decoded: the factors and whether each operand is int16.
#[derive(Clone, Copy, Debug)]
pub struct AddS16 {
    /// The factors.
    pub add: AddS8,
    /// Operand `a` is int16 (else int8).
    pub a_i16: bool,
    /// Operand `b` is int16 (else int8).
    pub b_i16: bool,
}

impl OpSpec for AddS16Op {
    const NAME: &'static str = "add_a16";
    const INPUTS: usize = 2;
    const IN_PLACE: bool = true;
    type Params<'a> = AddParams;
    type Decoded<'a> = AddS16;

    fn decode<'a>(p: &AddParams, cx: &DecodeCx<'a>) -> Result<AddS16, FormatError> {
        check_operands(
            cx,
            |d| d == DType::I8 || d == DType::I16,
            DType::I16,
            "int16 add: operands int8 or int16 of the output's shape, output int16",
        )?;
        Ok(AddS16 {
            add: factors(p, cx)?,
            a_i16: cx.input(0).dtype == DType::I16,
            b_i16: cx.input(1).dtype == DType::I16,
        })
    }

    returns_zero!(scratch_bytes, data_bytes, macs);

    fn run(k: &AddS16, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let b = operand(io, 1, k.b_i16)?;
        // In place only when `a` is int16: the reader accepts an in-place op only when input 0's
        // arena range is the output's, which an int8 `a` (half the bytes) never has.
        let result = if io.in_place() {
            add_s16_in_place(&k.add, io.i16_out()?, b)
        } else {
            let a = operand(io, 0, k.a_i16)?;
            add_s16(&k.add, a, b, io.i16_out()?)
        };
        result.map_err(|e| io.kernel(e))
    }
}

/// Input `k` of an int16 add as the kernel takes it.
fn operand<'r>(io: &OpIo<'r>, k: usize, i16: bool) -> Result<AddOperand<'r>, RunError> {
    Ok(if i16 {
        AddOperand::I16(io.i16_in(k)?)
    } else {
        AddOperand::I8(io.i8_in(k))
    })
}

/// fp16 add.
#[derive(Debug)]
pub struct AddF16Op;

impl OpSpec for AddF16Op {
    const NAME: &'static str = "add";
    const INPUTS: usize = 2;
    const IN_PLACE: bool = true;
    type Params<'a> = ();
    type Decoded<'a> = ();

    fn decode<'a>(_: &(), cx: &DecodeCx<'a>) -> Result<(), FormatError> {
        check_shapes(cx, DType::F16)
    }

    returns_zero!(scratch_bytes, data_bytes, macs);

    fn run(_: &(), io: &mut OpIo<'_>) -> Result<(), RunError> {
        let b = io.f16_in(1)?;
        let result = if io.in_place() {
            kf16::add_f16_in_place(io.f16_out()?, b)
        } else {
            let a = io.f16_in(0)?;
            kf16::add_f16(a, b, io.f16_out()?)
        };
        result.map_err(|e| io.kernel(e))
    }
}
