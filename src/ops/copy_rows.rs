//! Rows carried from one strip's window to the next in a patch-based run ([`CopyRowsOp`]): the
//! halo rows a convolution's next strip reads again are copied instead of recomputed.

use super::{DecodeCx, OpIo, OpSpec};
use crate::format::{DType, FormatError};
use crate::runtime::RunError;

/// Copies its input tensor into its output tensor: the same rows (`row0`, `h`) of the same map,
/// the same element type and, for int8, the same quantization. No record of its own.
#[derive(Debug)]
pub struct CopyRowsOp;

impl OpSpec for CopyRowsOp {
    const NAME: &'static str = "copy-rows";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = ();
    type Decoded<'a> = ();

    fn decode<'a>(_: &(), cx: &DecodeCx<'a>) -> Result<(), FormatError> {
        let (x, out) = (cx.input(0), cx.output());
        let (a, b) = (x.desc, out.desc);
        cx.ensure(
            x.dtype == out.dtype
                && x.dtype != DType::F32
                && (a.row0, a.h, a.w, a.c) == (b.row0, b.h, b.w, b.c),
            "copy-rows: input and output must be the same rows of one map",
        )?;
        cx.ensure(
            x.dtype != DType::I8
                || (a.scale.to_bits() == b.scale.to_bits() && a.zero_point == b.zero_point),
            "copy-rows: input and output must have one quantization",
        )
    }

    returns_zero!(scratch_bytes, data_bytes, macs);

    fn run(_: &(), io: &mut OpIo<'_>) -> Result<(), RunError> {
        let input = io.inputs[0];
        if input.len() != io.output.len() {
            return Err(RunError::BadPlan { op: io.op });
        }
        io.output.copy_from_slice(input);
        Ok(())
    }
}
