//! The class token's row bookkeeping (`class_token = True` in the official code): the
//! `'embedding'` cell puts a learned row in front of the patch tokens and adds the position
//! embedding ([`ClassTokenS8Op`], [`ClassTokenF16Op`]); a normal cell's PCM reads the spatial rows
//! only ([`DropTokenS8Op`], [`DropTokenF16Op`]) and its output is added to them only, which the
//! blob expresses as an add with a zero row in front ([`PadTokenS8Op`], [`PadTokenF16Op`]); the
//! head pools the spatial rows (a dropped row again).
//!
//! Tensors with a class token are `1 × (1 + N)` token rows, class token first; the spatial views
//! are `h × w` maps of the other `N`. Dropping or padding a row is a copy on the tensor's own
//! grid (zero is exact on every int8 grid: its zero point), so int8 outputs keep their input's
//! quantization. The class-token op is the requantizing add of the patch tokens and the stored
//! position embedding, with the first row stored already on the output grid. All of it is a copy
//! or an add per element once per cell, far below 5 % of any model's cost: one implementation,
//! the same code on the host and every core.

use super::{DecodeCx, OpIo, OpSpec, Tensor, is_tokens, refs_len};
use crate::format::{DType, DataRef, FormatError};
use crate::kernels::elementwise::{AddS8, add_s8};
use crate::kernels::f16 as kf16;
use crate::kernels::{KernelError, check_len};
use crate::runtime::RunError;
use bytemuck::{Pod, Zeroable};
use half::f16;

/// [`DropTokenS8Op`], [`DropTokenF16Op`], [`PadTokenS8Op`] and [`PadTokenF16Op`]: the spatial
/// rows (the tensor without the class token) and their width.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct TokenRowsParams {
    /// Spatial tokens `N` (the tensor with the class token has `N + 1`).
    pub tokens: u32,
    /// Channels per token.
    pub channels: u32,
}
const _: () = assert!(core::mem::size_of::<TokenRowsParams>() == 8);

/// Rows `1..` of `with_token` (`(1 + N) × C`) into `out` (`N × C`).
pub fn drop_token<T: Copy>(
    p: &TokenRowsParams,
    with_token: &[T],
    out: &mut [T],
) -> Result<(), KernelError> {
    let (n, c) = (p.tokens as usize, p.channels as usize);
    check_len("token rows", with_token.len(), (n + 1) * c)?;
    check_len("spatial rows", out.len(), n * c)?;
    out.copy_from_slice(&with_token[c..]);
    Ok(())
}

/// `zero` then `spatial` (`N × C`) into `out` (`(1 + N) × C`).
pub fn pad_token<T: Copy>(
    p: &TokenRowsParams,
    spatial: &[T],
    zero: T,
    out: &mut [T],
) -> Result<(), KernelError> {
    let (n, c) = (p.tokens as usize, p.channels as usize);
    check_len("spatial rows", spatial.len(), n * c)?;
    check_len("token rows", out.len(), (n + 1) * c)?;
    let (first, rest) = out.split_at_mut(c);
    first.fill(zero);
    rest.copy_from_slice(spatial);
    Ok(())
}

/// The shapes the row ops share: `with_token` has `N + 1` rows of `C`, `spatial` any `h × w`
/// map of `N` of them; one dtype; int8 on one grid.
fn check_rows(
    cx: &DecodeCx,
    p: &TokenRowsParams,
    (with_token, spatial): (Tensor, Tensor),
    dtype: DType,
) -> Result<TokenRowsParams, FormatError> {
    let (n, c) = (p.tokens as usize, p.channels as usize);
    cx.ensure(n > 0 && c > 0, "token rows must be > 0")?;
    cx.ensure(
        is_tokens(&with_token, dtype, n + 1, c),
        "class-token tensor shape/dtype",
    )?;
    cx.ensure(
        is_tokens(&spatial, dtype, n, c),
        "spatial tensor shape/dtype",
    )?;
    cx.ensure(
        dtype != DType::I8
            || (with_token.desc.scale.to_bits() == spatial.desc.scale.to_bits()
                && with_token.desc.zero_point == spatial.desc.zero_point),
        "dropping or padding the class token must keep the quantization",
    )?;
    Ok(*p)
}

/// A drop-token op of one dtype: `$run` reads the input and writes the output through `io`.
macro_rules! drop_op {
    ($(#[$doc:meta])* $name:ident, $dtype:expr, |$p:ident, $io:ident| $run:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;

        impl OpSpec for $name {
            const NAME: &'static str = "drop-token";
            const INPUTS: usize = 1;
            const IN_PLACE: bool = false;
            type Params<'a> = TokenRowsParams;
            type Decoded<'a> = TokenRowsParams;

            fn decode<'a>(
                p: &TokenRowsParams,
                cx: &DecodeCx<'a>,
            ) -> Result<TokenRowsParams, FormatError> {
                check_rows(cx, p, (cx.input(0), cx.output()), $dtype)
            }

            returns_zero!(scratch_bytes, data_bytes, macs);

            fn run($p: &TokenRowsParams, $io: &mut OpIo<'_>) -> Result<(), RunError> {
                $run
            }
        }
    };
}

drop_op!(
    /// int8: the spatial rows, on the same grid.
    DropTokenS8Op,
    DType::I8,
    |p, io| {
        let x = io.i8_in(0);
        drop_token(p, x, io.i8_out()).map_err(|e| io.kernel(e))
    }
);
drop_op!(
    /// fp16: the spatial rows.
    DropTokenF16Op,
    DType::F16,
    |p, io| {
        let x = io.f16_in(0)?;
        drop_token(p, x, io.f16_out()?).map_err(|e| io.kernel(e))
    }
);

/// int8: a zero row (the zero point) in front of the spatial rows, on the same grid.
#[derive(Debug)]
pub struct PadTokenS8Op;

impl OpSpec for PadTokenS8Op {
    const NAME: &'static str = "pad-token";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = TokenRowsParams;
    type Decoded<'a> = (TokenRowsParams, i8);

    fn decode<'a>(
        p: &TokenRowsParams,
        cx: &DecodeCx<'a>,
    ) -> Result<(TokenRowsParams, i8), FormatError> {
        let p = check_rows(cx, p, (cx.output(), cx.input(0)), DType::I8)?;
        let zero = i8::try_from(cx.output().desc.zero_point)
            .map_err(|_| cx.bad("pad-token zero point outside int8"))?;
        Ok((p, zero))
    }

    returns_zero!(scratch_bytes, data_bytes, macs);

    fn run(&(p, zero): &(TokenRowsParams, i8), io: &mut OpIo<'_>) -> Result<(), RunError> {
        let x = io.i8_in(0);
        pad_token(&p, x, zero, io.i8_out()).map_err(|e| io.kernel(e))
    }
}

/// fp16: a zero row in front of the spatial rows.
#[derive(Debug)]
pub struct PadTokenF16Op;

impl OpSpec for PadTokenF16Op {
    const NAME: &'static str = "pad-token";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = TokenRowsParams;
    type Decoded<'a> = TokenRowsParams;

    fn decode<'a>(p: &TokenRowsParams, cx: &DecodeCx<'a>) -> Result<TokenRowsParams, FormatError> {
        check_rows(cx, p, (cx.output(), cx.input(0)), DType::F16)
    }

    returns_zero!(scratch_bytes, data_bytes, macs);

    fn run(p: &TokenRowsParams, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let x = io.f16_in(0)?;
        pad_token(p, x, f16::ZERO, io.f16_out()?).map_err(|e| io.kernel(e))
    }
}

/// [`ClassTokenS8Op`]: `out[0] = first`, `out[1 + i] = x[i] ⊕ pos[i]` (the requantizing add
/// [`AddS8`] with the position embedding's rows `1..` as its second operand).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ClassTokenParams {
    /// Patch tokens `N` (the output has `N + 1` rows).
    pub tokens: u32,
    /// Channels.
    pub channels: u32,
    /// The add of patch tokens and position embedding onto the output grid.
    pub add: super::add::AddParams,
    /// Row 0 of the output, `cls_token + pos_embed[0]` on the output grid (`C` int8).
    pub first: DataRef,
    /// `pos_embed[1..]` on its own grid (`N × C` int8).
    pub pos: DataRef,
}
const _: () = assert!(core::mem::size_of::<ClassTokenParams>() == 36);

/// [`ClassTokenS8Op`] decoded.
#[derive(Clone, Copy, Debug)]
pub struct ClassTokenS8<'a> {
    /// Spatial rows and channels.
    pub rows: TokenRowsParams,
    /// The add.
    pub add: AddS8,
    /// Output row 0.
    pub first: &'a [i8],
    /// Position embedding of rows `1..`.
    pub pos: &'a [i8],
}

/// `out[0] = first`, `out[1..] = x ⊕ pos`.
pub fn class_token_s8(k: &ClassTokenS8, x: &[i8], out: &mut [i8]) -> Result<(), KernelError> {
    let (n, c) = (k.rows.tokens as usize, k.rows.channels as usize);
    check_len("class token row", k.first.len(), c)?;
    check_len("class-token output", out.len(), (n + 1) * c)?;
    let (first, rest) = out.split_at_mut(c);
    first.copy_from_slice(k.first);
    add_s8(&k.add, x, k.pos, rest)
}

/// The checks both precisions share: `N × C` in, `(N + 1) × C` out, `first` one row and `pos`
/// `N` rows.
fn check_class_token(
    cx: &DecodeCx,
    (tokens, channels): (u32, u32),
    dtype: DType,
    (first, pos): (usize, usize),
) -> Result<TokenRowsParams, FormatError> {
    let (n, c) = (tokens as usize, channels as usize);
    cx.ensure(n > 0 && c > 0, "class-token rows must be > 0")?;
    cx.ensure(
        is_tokens(&cx.input(0), dtype, n, c),
        "class-token input tensor shape/dtype",
    )?;
    cx.ensure(
        is_tokens(&cx.output(), dtype, n + 1, c),
        "class-token output tensor shape/dtype",
    )?;
    cx.ensure(
        first == c && pos == n * c,
        "class-token row or position embedding has the wrong length",
    )?;
    Ok(TokenRowsParams { tokens, channels })
}

/// int8: the `'embedding'` cell's class token and position embedding.
#[derive(Debug)]
pub struct ClassTokenS8Op;

impl OpSpec for ClassTokenS8Op {
    const NAME: &'static str = "class-token";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = ClassTokenParams;
    type Decoded<'a> = ClassTokenS8<'a>;

    fn decode<'a>(
        p: &ClassTokenParams,
        cx: &DecodeCx<'a>,
    ) -> Result<ClassTokenS8<'a>, FormatError> {
        let first = cx.data::<i8>(p.first, "class token row")?;
        let pos = cx.data::<i8>(p.pos, "position embedding")?;
        let rows = check_class_token(
            cx,
            (p.tokens, p.channels),
            DType::I8,
            (first.len(), pos.len()),
        )?;
        let add = AddS8 {
            ra: p.add.ra,
            rb: p.add.rb,
            c: p.add.c,
        };
        add.validate().map_err(|e| cx.kernel(e))?;
        Ok(ClassTokenS8 {
            rows,
            add,
            first,
            pos,
        })
    }

    returns_zero!(scratch_bytes, macs);

    fn data_bytes(p: &ClassTokenParams) -> usize {
        refs_len(&[p.first, p.pos])
    }

    fn run(k: &ClassTokenS8, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let x = io.i8_in(0);
        class_token_s8(k, x, io.i8_out()).map_err(|e| io.kernel(e))
    }
}

/// [`ClassTokenF16Op`]: `out[0] = first`, `out[1 + i] = x[i] + pos[i]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ClassTokenF16Params {
    /// Patch tokens `N`.
    pub tokens: u32,
    /// Channels.
    pub channels: u32,
    /// Row 0 of the output, `cls_token + pos_embed[0]` (`C` fp16).
    pub first: DataRef,
    /// `pos_embed[1..]` (`N × C` fp16).
    pub pos: DataRef,
}
const _: () = assert!(core::mem::size_of::<ClassTokenF16Params>() == 24);

/// [`ClassTokenF16Op`] decoded.
#[derive(Clone, Copy, Debug)]
pub struct ClassTokenF16<'a> {
    /// Spatial rows and channels.
    pub rows: TokenRowsParams,
    /// Output row 0.
    pub first: &'a [f16],
    /// Position embedding of rows `1..`.
    pub pos: &'a [f16],
}

/// `out[0] = first`, `out[1..] = x + pos`.
pub fn class_token_f16(k: &ClassTokenF16, x: &[f16], out: &mut [f16]) -> Result<(), KernelError> {
    let (n, c) = (k.rows.tokens as usize, k.rows.channels as usize);
    check_len("class token row", k.first.len(), c)?;
    check_len("class-token output", out.len(), (n + 1) * c)?;
    let (first, rest) = out.split_at_mut(c);
    first.copy_from_slice(k.first);
    kf16::add_f16(x, k.pos, rest)
}

/// fp16: the `'embedding'` cell's class token and position embedding.
#[derive(Debug)]
pub struct ClassTokenF16Op;

impl OpSpec for ClassTokenF16Op {
    const NAME: &'static str = "class-token";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = ClassTokenF16Params;
    type Decoded<'a> = ClassTokenF16<'a>;

    fn decode<'a>(
        p: &ClassTokenF16Params,
        cx: &DecodeCx<'a>,
    ) -> Result<ClassTokenF16<'a>, FormatError> {
        let first = cx.data::<f16>(p.first, "class token row")?;
        let pos = cx.data::<f16>(p.pos, "position embedding")?;
        let rows = check_class_token(
            cx,
            (p.tokens, p.channels),
            DType::F16,
            (first.len(), pos.len()),
        )?;
        Ok(ClassTokenF16 { rows, first, pos })
    }

    returns_zero!(scratch_bytes, macs);

    fn data_bytes(p: &ClassTokenF16Params) -> usize {
        refs_len(&[p.first, p.pos])
    }

    fn run(k: &ClassTokenF16, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let x = io.f16_in(0)?;
        class_token_f16(k, x, io.f16_out()?).map_err(|e| io.kernel(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cases::Rng;

    #[test]
    fn drop_and_pad_are_inverse_copies() {
        let mut rng = Rng(0xc1a5);
        for _ in 0..50 {
            let p = TokenRowsParams {
                tokens: rng.range(1, 40) as u32,
                channels: rng.range(1, 9) as u32,
            };
            let (n, c) = (p.tokens as usize, p.channels as usize);
            let mut spatial = vec![0i8; n * c];
            rng.fill(&mut spatial);
            let mut padded = vec![0i8; (n + 1) * c];
            pad_token(&p, &spatial, -7, &mut padded).unwrap();
            assert!(padded[..c].iter().all(|&v| v == -7));
            assert_eq!(&padded[c..], &spatial[..]);
            let mut back = vec![0i8; n * c];
            drop_token(&p, &padded, &mut back).unwrap();
            assert_eq!(back, spatial);
        }
    }

    #[test]
    fn wrong_lengths_are_refused() {
        let p = TokenRowsParams {
            tokens: 4,
            channels: 3,
        };
        let mut out = [0i8; 12];
        assert!(drop_token(&p, &[0i8; 12], &mut out).is_err());
        assert!(pad_token(&p, &[0i8; 12], 0, &mut [0i8; 12]).is_err());
        let k = ClassTokenS8 {
            rows: p,
            add: AddS8 {
                ra: 1.0,
                rb: 1.0,
                c: 0.0,
            },
            first: &[0; 2],
            pos: &[0; 12],
        };
        assert!(class_token_s8(&k, &[0; 12], &mut [0; 15]).is_err());
    }

    #[test]
    fn class_token_is_the_first_row_then_the_add() {
        let p = TokenRowsParams {
            tokens: 3,
            channels: 2,
        };
        let add = AddS8 {
            ra: 0.5,
            rb: 2.0,
            c: 1.0,
        };
        let k = ClassTokenS8 {
            rows: p,
            add,
            first: &[9, -9],
            pos: &[1, 2, 3, 4, -5, -6],
        };
        let x = [10i8, 20, 30, 40, 50, 60];
        let mut out = [0i8; 8];
        class_token_s8(&k, &x, &mut out).unwrap();
        // round(x·0.5 + pos·2 + 1)
        assert_eq!(out, [9, -9, 8, 15, 22, 29, 16, 19]);
        let kf = ClassTokenF16 {
            rows: p,
            first: &[f16::from_f32(0.5), f16::from_f32(-0.25)],
            pos: &[f16::from_f32(1.0); 6],
        };
        let xf: Vec<f16> = x.iter().map(|&v| f16::from_f32(v as f32)).collect();
        let mut outf = [f16::ZERO; 8];
        class_token_f16(&kf, &xf, &mut outf).unwrap();
        let got: Vec<f32> = outf.iter().map(|v| v.to_f32()).collect();
        assert_eq!(got, [0.5, -0.25, 11.0, 21.0, 31.0, 41.0, 51.0, 61.0]);
    }
}
