//! The residual add of two tensors of one shape: int8 with requantization ([`AddS8Op`]) and fp16
//! ([`AddF16Op`]). Both may run in place: the arena plan lets the sum take over the storage of an
//! operand that dies at the add, which the format allows for the first operand only.

use super::{DecodeCx, OpIo, OpSpec};
use crate::format::{DType, FormatError};
use crate::kernels::elementwise::{AddS8, add_s8, add_s8_in_place};
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
    let out = cx.output();
    let same = |k: usize| {
        let t = cx.input(k);
        t.dtype == dtype
            && t.desc.elements() == out.desc.elements()
            && (t.desc.h, t.desc.w, t.desc.c) == (out.desc.h, out.desc.w, out.desc.c)
    };
    cx.ensure(
        same(0) && same(1) && out.dtype == dtype,
        "add operands and output must have the same shape and dtype",
    )
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
        let k = AddS8 {
            ra: p.ra,
            rb: p.rb,
            c: p.c,
        };
        k.validate().map_err(|e| cx.kernel(e))?;
        Ok(k)
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
