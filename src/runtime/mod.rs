//! The executor: runs a validated blob over a caller-provided arena, with no allocation.
//!
//! Each op gets disjoint views of the arena (its inputs, its output, its scratch) at the offsets
//! the host tool planned; the blob reader has already checked that they are disjoint and in
//! bounds, and the executor checks again as it splits, so a bad plan is an error, never
//! undefined behaviour.

use crate::format::{DType, FormatError, Model, Op, OpView, Precision};
use crate::kernels::KernelError;
use crate::ops::OpIo;
use core::ops::Range;
use half::f16;

/// The image given to [`run`].
#[derive(Clone, Copy, Debug)]
pub enum Input<'i> {
    /// f32, NCHW (channels × height × width), already normalized like the training data.
    F32Nchw(&'i [f32]),
}

/// Why a run did not happen or stopped. Everything except `Kernel` is checked before the first
/// kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RunError {
    /// The arena is smaller than the blob's plan.
    ArenaTooSmall {
        /// Bytes the plan needs.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// The arena does not start at a 16-byte aligned address.
    ArenaMisaligned,
    /// The input image has the wrong number of values.
    InputSize {
        /// Values the model takes (C·H·W).
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// An op's arena views overlap or leave the arena (a bad plan).
    BadPlan {
        /// Op index.
        op: u16,
    },
    /// A kernel refused its parameters.
    Kernel {
        /// Op index.
        op: u16,
        /// The kernel's reason.
        error: KernelError,
    },
    /// The blob could not be decoded.
    Format(FormatError),
}

impl core::fmt::Display for RunError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RunError::ArenaTooSmall { need, have } => {
                write!(
                    f,
                    "arena too small: the model's plan needs {need} bytes, {have} given"
                )
            }
            RunError::ArenaMisaligned => write!(f, "arena must start at a 16-byte aligned address"),
            RunError::InputSize { expected, got } => {
                write!(
                    f,
                    "input image has {got} values, the model takes {expected} (C·H·W)"
                )
            }
            RunError::BadPlan { op } => {
                write!(f, "op {op}: arena views overlap or leave the arena")
            }
            RunError::Kernel { op, error } => write!(f, "op {op}: {error}"),
            RunError::Format(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for RunError {}

/// Sees each op run: per-op timing on a board, instruction-count markers under QEMU, per-layer
/// comparisons on the host (`vitae diff`).
pub trait Profiler {
    /// Before op `op` runs.
    fn op_start(&mut self, op: &OpView) {
        let _ = op;
    }
    /// After op `op` ran; `output` is its output tensor's bytes in the arena.
    fn op_end(&mut self, op: &OpView, output: &[u8]) {
        let _ = (op, output);
    }
}

/// A profiler that does nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProfiler;
impl Profiler for NoProfiler {}

/// The logits of a run, in the arena.
#[derive(Clone, Copy, Debug)]
pub struct Output<'a> {
    raw: &'a [u8],
    dtype: DType,
    scale: f32,
    zero_point: i32,
}

impl<'a> Output<'a> {
    /// Number of classes.
    pub fn len(&self) -> usize {
        self.raw.len() / self.dtype.size()
    }

    /// True when there are no classes (never, for a valid blob).
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The int8 logits, when the head is int8.
    pub fn as_i8(&self) -> Option<&'a [i8]> {
        (self.dtype == DType::I8).then(|| bytemuck::cast_slice(self.raw))
    }

    /// `(scale, zero_point)` of int8 logits.
    pub fn quantization(&self) -> (f32, i32) {
        (self.scale, self.zero_point)
    }

    /// Logit `i` as f32 (dequantized for int8: `scale · (q − zp)`).
    pub fn logit(&self, i: usize) -> f32 {
        match self.dtype {
            DType::I8 => self.scale * (self.raw[i] as i8 as i32 - self.zero_point) as f32,
            DType::F16 => f16::from_le_bytes([self.raw[2 * i], self.raw[2 * i + 1]]).to_f32(),
        }
    }

    /// All logits as f32 into `out` (`out.len()` must equal [`len`](Self::len)).
    pub fn logits_f32(&self, out: &mut [f32]) {
        for (i, y) in out.iter_mut().enumerate().take(self.len()) {
            *y = self.logit(i);
        }
    }

    /// The `K` highest logits as `(class, logit)`, best first (ties: lower class first).
    pub fn top_k<const K: usize>(&self) -> [(u16, f32); K] {
        let mut best = [(u16::MAX, f32::NEG_INFINITY); K];
        for i in 0..self.len() {
            let v = self.logit(i);
            if let Some(pos) = best.iter().position(|&(c, b)| v > b || c == u16::MAX) {
                best.copy_within(pos..K - 1, pos + 1);
                best[pos] = (i as u16, v);
            }
        }
        best
    }
}

/// Checks that `arena` can run `model` (size, alignment) and that `input` fits, without running.
pub fn check(model: &Model, arena: &[u8], input: &Input) -> Result<(), RunError> {
    if arena.len() < model.arena_len() {
        return Err(RunError::ArenaTooSmall {
            need: model.arena_len(),
            have: arena.len(),
        });
    }
    if arena.as_ptr().align_offset(crate::format::ALIGN) != 0 {
        return Err(RunError::ArenaMisaligned);
    }
    let m = model.meta();
    let expected = m.input_channels as usize * m.input_height as usize * m.input_width as usize;
    let Input::F32Nchw(x) = input;
    if x.len() != expected {
        return Err(RunError::InputSize {
            expected,
            got: x.len(),
        });
    }
    Ok(())
}

/// Runs one inference. Checks the arena and input first; allocates nothing.
pub fn run<'r>(
    model: &Model,
    arena: &'r mut [u8],
    input: Input,
    profiler: &mut impl Profiler,
) -> Result<Output<'r>, RunError> {
    check(model, arena, &input)?;
    for i in 0..model.op_count() {
        let view = model.op(i).map_err(RunError::Format)?;
        // A plain match: `map_err` and `?` each moved the decoded op (three 80-byte copies).
        let op = match model.decode(i) {
            Ok(op) => op,
            Err(e) => return Err(RunError::Format(e)),
        };
        profiler.op_start(&view);
        run_op(model, &view, &op, arena, &input)?;
        let out = arena
            .get(model.tensor(view.desc.output).arena_range())
            .ok_or(RunError::BadPlan { op: view.index })?;
        profiler.op_end(&view, out);
    }
    let t = model.tensor(model.meta().output_tensor);
    let raw = arena
        .get(t.arena_range())
        .ok_or(RunError::BadPlan { op: u16::MAX })?;
    Ok(Output {
        raw,
        dtype: t.dtype,
        scale: t.desc.scale,
        zero_point: t.desc.zero_point,
    })
}

/// Splits `arena` into disjoint mutable pieces for `ranges` (empty ranges give empty slices).
fn carve<'b, const N: usize>(
    arena: &'b mut [u8],
    ranges: &[Range<usize>; N],
) -> Option<[&'b mut [u8]; N]> {
    let mut order: [usize; N] = core::array::from_fn(|i| i);
    order.sort_unstable_by_key(|&i| ranges[i].start);
    let mut out: [Option<&'b mut [u8]>; N] = core::array::from_fn(|_| None);
    let mut rest: &'b mut [u8] = arena;
    let mut pos = 0usize;
    for &i in &order {
        let r = &ranges[i];
        if r.is_empty() {
            continue;
        }
        if r.start < pos || r.end < r.start {
            return None;
        }
        let tail = core::mem::take(&mut rest).get_mut(r.start - pos..)?;
        if tail.len() < r.len() {
            return None;
        }
        let (piece, tail) = tail.split_at_mut(r.len());
        out[i] = Some(piece);
        rest = tail;
        pos = r.end;
    }
    Some(out.map(Option::unwrap_or_default))
}

/// Gives op `view` its disjoint views of the arena and runs it.
fn run_op(
    model: &Model,
    view: &OpView,
    op: &Op,
    arena: &mut [u8],
    input: &Input,
) -> Result<(), RunError> {
    let d = view.desc;
    let tensor_range = |t: u16| model.tensor(t).arena_range();
    let out_range = tensor_range(d.output);
    let bad_plan = RunError::BadPlan { op: view.index };
    // An in-place op (the residual add) writes over its first input: the output view holds it.
    let in_place = view.kind.in_place() && tensor_range(d.inputs[0]) == out_range;

    // Inputs may repeat a tensor (x + x); carve each distinct range once.
    let mut ranges: [Range<usize>; 5] = core::array::from_fn(|_| 0..0);
    let mut slot = [usize::MAX; 3];
    let mut distinct = 0;
    for (k, t) in view.inputs().enumerate() {
        if in_place && k == 0 {
            continue;
        }
        let r = tensor_range(t);
        slot[k] = match ranges[..distinct].iter().position(|x| *x == r) {
            Some(j) => j,
            None => {
                ranges[distinct] = r;
                distinct += 1;
                distinct - 1
            }
        };
    }
    ranges[3] = out_range;
    ranges[4] = view.scratch_range();
    let [r0, r1, r2, output, scratch] = carve(arena, &ranges).ok_or(bad_plan)?;
    let pieces: [&[u8]; 3] = [r0, r1, r2];
    let mut io = OpIo {
        op: view.index,
        inputs: slot.map(|s| pieces.get(s).copied().unwrap_or(&[])),
        output,
        scratch,
        image: input,
        meta: model.meta(),
        in_place,
    };
    op.run(&mut io)
}

/// The precision the blob reports, for logs.
pub fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::Int8 => "int8",
        Precision::Fp16 => "fp16",
        Precision::Mixed => "mixed",
    }
}

#[cfg(test)]
mod tests {
    use super::carve;

    #[test]
    fn carve_gives_disjoint_views_and_refuses_overlaps() {
        let mut a = [0u8; 32];
        let [x, y, z] = carve(&mut a, &[8..12, 0..4, 4..4]).unwrap();
        assert_eq!((x.len(), y.len(), z.len()), (4, 4, 0));
        x[0] = 1;
        y[0] = 2;
        assert_eq!((a[8], a[0]), (1, 2));
        assert!(carve(&mut a, &[0..8, 4..12]).is_none());
        assert!(carve(&mut a, &[0..0, 30..40]).is_none());
    }
}
