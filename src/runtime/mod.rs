//! The executor: runs a validated blob over a caller-provided arena, with no allocation.
//!
//! Each op gets disjoint views of the arena (its inputs, its output, its scratch) at the offsets
//! the host tool planned; the blob reader has already checked that they are disjoint and in
//! bounds, and the executor checks again as it splits, so a bad plan is an error, never
//! undefined behaviour.

use crate::format::{DType, FormatError, Model, Op, OpKind, OpView, Precision};
use crate::kernels::{self, KernelError, conv::OutputSlice, f16 as kf16};
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
        let view = model.op(i);
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

fn i8s(b: &[u8]) -> &[i8] {
    bytemuck::cast_slice(b)
}

fn i8s_mut(b: &mut [u8]) -> &mut [i8] {
    bytemuck::cast_slice_mut(b)
}

fn f16s(b: &[u8], op: u16) -> Result<&[f16], RunError> {
    bytemuck::try_cast_slice(b).map_err(|_| RunError::BadPlan { op })
}

fn f16s_mut(b: &mut [u8], op: u16) -> Result<&mut [f16], RunError> {
    bytemuck::try_cast_slice_mut(b).map_err(|_| RunError::BadPlan { op })
}

fn run_op(
    model: &Model,
    view: &OpView,
    op: &Op,
    arena: &mut [u8],
    input: &Input,
) -> Result<(), RunError> {
    let idx = view.index;
    let d = view.desc;
    let tensor_range = |t: u16| model.tensor(t).arena_range();
    let out_range = tensor_range(d.output);
    let scratch_range = view.scratch_range();
    let kerr = |error| RunError::Kernel { op: idx, error };
    let bad_plan = RunError::BadPlan { op: idx };

    // In-place add: the output is the first operand's storage.
    if matches!(view.kind, OpKind::AddS8 | OpKind::AddF16) && tensor_range(d.inputs[0]) == out_range
    {
        let [b, out] = carve(arena, &[tensor_range(d.inputs[1]), out_range]).ok_or(bad_plan)?;
        return match op {
            Op::AddS8(p) => kernels::elementwise::add_s8_in_place(p, i8s_mut(out), i8s(b)),
            _ => kf16::add_f16_in_place(f16s_mut(out, idx)?, f16s(b, idx)?),
        }
        .map_err(kerr);
    }

    // Inputs may repeat a tensor (x + x); carve each distinct range once.
    let mut ranges: [Range<usize>; 5] = core::array::from_fn(|_| 0..0);
    let mut slot = [0usize; 3];
    let mut distinct = 0;
    for (k, t) in view.inputs().enumerate() {
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
    ranges[4] = scratch_range;
    let [r0, r1, r2, out, scratch] = carve(arena, &ranges).ok_or(bad_plan)?;
    let pieces: [&[u8]; 3] = [r0, r1, r2];
    let x = |k: usize| pieces[slot[k]];

    match op {
        Op::QuantizeImage(p) => {
            let Input::F32Nchw(img) = input;
            let m = model.meta();
            kernels::elementwise::quantize_image_nchw(
                img,
                m.input_channels as usize,
                m.input_height as usize,
                m.input_width as usize,
                p.inv_scale,
                p.zero_point,
                i8s_mut(out),
            )
        }
        Op::ImageToF16 => {
            let Input::F32Nchw(img) = input;
            let m = model.meta();
            kf16::image_nchw_to_f16(
                img,
                m.input_channels as usize,
                m.input_height as usize,
                m.input_width as usize,
                f16s_mut(out, idx)?,
            )
        }
        Op::ConvS8(k) => kernels::conv::conv_s8(k, i8s(x(0)), i8s_mut(out), scratch),
        Op::PrmS8(prm) => {
            let out = i8s_mut(out);
            for b in 0..prm.len() {
                let k = prm.branch_s8(b).map_err(RunError::Format)?;
                kernels::conv::conv_s8(&k, i8s(x(0)), out, scratch).map_err(kerr)?;
            }
            Ok(())
        }
        Op::LinearS8(k) => kernels::linear::linear_s8(k, i8s(x(0)), i8s_mut(out), scratch),
        Op::LayerNormS8(k) => kernels::layernorm::layernorm_s8(k, i8s(x(0)), i8s_mut(out)),
        Op::AttentionS8(k) => kernels::attention::attention_s8(
            k,
            i8s(x(0)),
            i8s(x(1)),
            i8s(x(2)),
            i8s_mut(out),
            scratch,
        ),
        Op::PerformerS8(k) => kernels::performer::performer_s8(
            k,
            i8s(x(0)),
            i8s(x(1)),
            i8s(x(2)),
            i8s_mut(out),
            scratch,
        ),
        Op::AddS8(p) => kernels::elementwise::add_s8(p, i8s(x(0)), i8s(x(1)), i8s_mut(out)),
        Op::MeanPoolS8(p) => kernels::elementwise::mean_pool_s8(p, i8s(x(0)), i8s_mut(out)),
        Op::ConvF16(c) => kf16::conv_f16(
            &c.geom,
            c.weights,
            c.bias,
            c.act,
            OutputSlice {
                offset: 0,
                pixel_stride: c.geom.out_c,
            },
            f16s(x(0), idx)?,
            f16s_mut(out, idx)?,
        ),
        Op::PrmF16(prm) => {
            let out = f16s_mut(out, idx)?;
            let act = match prm.header.act {
                crate::format::act::GELU => kf16::Activation::Gelu,
                crate::format::act::SILU => kf16::Activation::Silu,
                _ => kf16::Activation::None,
            };
            for b in 0..prm.len() {
                let (w, bias) = prm.branch_f16(b).map_err(RunError::Format)?;
                kf16::conv_f16(
                    &prm.geometry(b),
                    w,
                    bias,
                    act,
                    prm.output_slice(b),
                    f16s(x(0), idx)?,
                    out,
                )
                .map_err(kerr)?;
            }
            Ok(())
        }
        Op::LinearF16(l) => kf16::linear_f16(
            l.tokens,
            l.in_features,
            l.out_features,
            l.weights,
            l.bias,
            l.act,
            f16s(x(0), idx)?,
            f16s_mut(out, idx)?,
        ),
        Op::LayerNormF16(l) => kf16::layernorm_f16(
            l.channels,
            l.eps,
            l.gamma,
            l.beta,
            f16s(x(0), idx)?,
            f16s_mut(out, idx)?,
        ),
        Op::AttentionF16(p) => kf16::attention_f16(
            p.tokens as usize,
            p.heads as usize,
            p.head_dim as usize,
            p.qk_scale,
            f16s(x(0), idx)?,
            f16s(x(1), idx)?,
            f16s(x(2), idx)?,
            f16s_mut(out, idx)?,
            scratch,
        ),
        Op::PerformerF16 { params: p, w } => kf16::performer_f16(
            p.tokens as usize,
            p.emb as usize,
            p.features as usize,
            w,
            f16s(x(0), idx)?,
            f16s(x(1), idx)?,
            f16s(x(2), idx)?,
            f16s_mut(out, idx)?,
            scratch,
        ),
        Op::AddF16 => kf16::add_f16(f16s(x(0), idx)?, f16s(x(1), idx)?, f16s_mut(out, idx)?),
        Op::MeanPoolF16(p) => kf16::mean_pool_f16(
            p.tokens as usize,
            p.channels as usize,
            f16s(x(0), idx)?,
            f16s_mut(out, idx)?,
        ),
        Op::DequantizeS8(p) => {
            kf16::dequantize_to_f16(i8s(x(0)), p.scale, p.zero_point, f16s_mut(out, idx)?)
        }
        Op::QuantizeF16(p) => {
            kf16::quantize_from_f16(f16s(x(0), idx)?, p.scale, p.zero_point, i8s_mut(out))
        }
    }
    .map_err(kerr)
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
