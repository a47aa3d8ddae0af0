//! The executor: runs a validated blob over a caller-provided arena, with no allocation.
//!
//! Each op gets disjoint views of the arena (its inputs, its output, its scratch) at the offsets
//! the host tool planned; the blob reader has already checked that they are disjoint and in
//! bounds, and the executor checks again as it splits, so a bad plan is an error, never
//! undefined behaviour.

use crate::format::{DType, FormatError, MAX_ARENA_PARTS, Model, Op, OpView, Precision};
use crate::kernels::KernelError;
use crate::ops::OpIo;
use core::ops::Range;
use half::f16;

mod staging;
use staging::Staging;
pub use staging::{MemCopy, StageCopy};

/// The image given to [`run`] or [`Runner::new`]. Which one a blob takes is its
/// [`ImageLayout`] ([`Model::image_layout`]), chosen when it was quantized (`vitae quantize
/// --input f32|u8`).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Input<'i> {
    /// f32, NCHW (channels × height × width), already normalized like the training data.
    F32Nchw(&'i [f32]),
    /// u8 pixels, HWC (rows of interleaved channels: RGB triples, or one gray byte per pixel), as
    /// a camera or a decoded PNG gives them. The blob normalizes them on the way in (the mean and
    /// standard deviation were folded into its input tables when it was quantized).
    U8Hwc(&'i [u8]),
}

impl Input<'_> {
    /// Its layout.
    pub fn layout(&self) -> ImageLayout {
        match self {
            Input::F32Nchw(_) => ImageLayout::F32Nchw,
            Input::U8Hwc(_) => ImageLayout::U8Hwc,
        }
    }

    /// Number of values (C·H·W for a whole image).
    pub fn len(&self) -> usize {
        match self {
            Input::F32Nchw(x) => x.len(),
            Input::U8Hwc(x) => x.len(),
        }
    }

    /// True when it holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a blob takes its image: the [`Input`] variant it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ImageLayout {
    /// [`Input::F32Nchw`].
    F32Nchw,
    /// [`Input::U8Hwc`].
    U8Hwc,
}

impl ImageLayout {
    /// Bytes of one image of `values` values in this layout (the caller's input buffer).
    pub fn bytes(self, values: usize) -> usize {
        match self {
            ImageLayout::F32Nchw => 4 * values,
            ImageLayout::U8Hwc => values,
        }
    }

    /// Short name for reports: `f32 NCHW` or `u8 HWC`.
    pub fn name(self) -> &'static str {
        match self {
            ImageLayout::F32Nchw => "f32 NCHW",
            ImageLayout::U8Hwc => "u8 HWC",
        }
    }
}

/// Why a run did not happen or stopped. Everything except `Kernel` is checked before the first
/// kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
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
    /// A split arena was given as another number of parts than the blob's plan has
    /// ([`Model::arena_parts`]).
    ArenaPartCount {
        /// Parts the plan has.
        need: usize,
        /// Parts given.
        have: usize,
    },
    /// A part of a split arena is smaller than the plan's part.
    ArenaPartTooSmall {
        /// The part.
        part: usize,
        /// Bytes the plan's part needs.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// The input image has the wrong number of values.
    InputSize {
        /// Values the model takes (C·H·W).
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// The input is in another layout than the blob takes (see [`Model::image_layout`]).
    InputLayout {
        /// The layout the blob takes.
        expected: ImageLayout,
        /// The layout given.
        got: ImageLayout,
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
            RunError::ArenaPartCount { need, have } => write!(
                f,
                "the model's plan splits its arena into {need} parts, {have} given"
            ),
            RunError::ArenaPartTooSmall { part, need, have } => write!(
                f,
                "arena part {part} too small: the model's plan needs {need} bytes, {have} given"
            ),
            RunError::InputSize { expected, got } => {
                write!(
                    f,
                    "input image has {got} values, the model takes {expected} (C·H·W)"
                )
            }
            RunError::InputLayout { expected, got } => {
                write!(
                    f,
                    "input is {}, the model takes {} (quantized with `--input {}`)",
                    got.name(),
                    expected.name(),
                    match expected {
                        ImageLayout::F32Nchw => "f32",
                        ImageLayout::U8Hwc => "u8",
                    }
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

impl From<FormatError> for RunError {
    fn from(e: FormatError) -> Self {
        RunError::Format(e)
    }
}

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
            DType::I16 => {
                self.scale * f32::from(i16::from_le_bytes([self.raw[2 * i], self.raw[2 * i + 1]]))
            }
            DType::F32 => {
                let b = &self.raw[4 * i..4 * i + 4];
                f32::from_le_bytes([b[0], b[1], b[2], b[3]])
            }
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

/// Checks that `arena` can run `model` (size, alignment) and that `input` fits (layout and
/// size), without running: the checks [`Runner::new`] makes before the first op.
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
    check_input(model, input)
}

/// As [`check`], for an arena given as one buffer per part of the plan
/// ([`Runner::with_parts`]).
pub fn check_parts(model: &Model, parts: &[&mut [u8]], input: &Input) -> Result<(), RunError> {
    if parts.len() != model.arena_parts() {
        return Err(RunError::ArenaPartCount {
            need: model.arena_parts(),
            have: parts.len(),
        });
    }
    for (i, part) in parts.iter().enumerate() {
        let need = model.arena_part(i).len();
        if part.len() < need {
            return Err(RunError::ArenaPartTooSmall {
                part: i,
                need,
                have: part.len(),
            });
        }
        if part.as_ptr().align_offset(crate::format::ALIGN) != 0 {
            return Err(RunError::ArenaMisaligned);
        }
    }
    check_input(model, input)
}

fn check_input(model: &Model, input: &Input) -> Result<(), RunError> {
    let expected_layout = model.image_layout();
    if input.layout() != expected_layout {
        return Err(RunError::InputLayout {
            expected: expected_layout,
            got: input.layout(),
        });
    }
    let expected = model.input_values();
    if input.len() != expected {
        return Err(RunError::InputSize {
            expected,
            got: input.len(),
        });
    }
    Ok(())
}

/// Runs one inference: [`Runner::new`], then every op. Checks the arena and input first;
/// allocates nothing.
///
/// ```
/// # use vitae_edge::{Arena, EmbeddedModel, Input, NoProfiler, include_model};
/// # const MODEL: EmbeddedModel = include_model!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz/seeds/blob/transformer-int8.vblob"));
/// # fn main() -> Result<(), vitae_edge::RunError> {
/// let model = MODEL.parse()?;
/// let mut arena = Arena::<{ MODEL.arena_len() }>::new();
/// let image = [0.5f32; 2 * 8 * 8];
/// let out = vitae_edge::run(&model, arena.as_mut_slice(), Input::F32Nchw(&image), &mut NoProfiler)?;
/// let [(class, logit)] = out.top_k::<1>();
/// assert!(usize::from(class) < out.len() && logit.is_finite());
///
/// // The wrong layout or size is refused before anything runs:
/// let pixels = [0u8; 8 * 8 * 2];
/// let refused = vitae_edge::run(&model, arena.as_mut_slice(), Input::U8Hwc(&pixels), &mut NoProfiler);
/// assert!(matches!(refused, Err(vitae_edge::RunError::InputLayout { .. })));
/// # Ok(())
/// # }
/// ```
pub fn run<'r>(
    model: &Model,
    arena: &'r mut [u8],
    input: Input,
    profiler: &mut impl Profiler,
) -> Result<Output<'r>, RunError> {
    Runner::new(model, arena, input)?.finish_profiled(profiler)
}

/// As [`run`], with the arena as one buffer per part of the blob's plan
/// ([`Runner::with_parts`]): for plans split over several memories.
pub fn run_in_parts<'r, const N: usize>(
    model: &Model,
    parts: [&'r mut [u8]; N],
    input: Input,
    profiler: &mut impl Profiler,
) -> Result<Output<'r>, RunError> {
    Runner::with_parts(model, parts, input)?.finish_profiled(profiler)
}

/// One inference, run one op at a time: an async task can yield between ops
/// ([`step`](Self::step)), a super-loop can interleave other work, and each op can be timed.
///
/// [`new`](Self::new) makes every check [`run`] makes before the first op (the blob itself was
/// validated once by [`Model::parse`]); each step then runs one op on its disjoint views of the
/// arena. The result is the same bytes as [`run`]'s, which is built on this.
///
/// ```
/// # use vitae_edge::{Arena, EmbeddedModel, Input, NoProfiler, include_model};
/// # const MODEL: EmbeddedModel = include_model!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz/seeds/blob/transformer-int8.vblob"));
/// use vitae_edge::Runner;
/// # fn main() -> Result<(), vitae_edge::RunError> {
/// let model = MODEL.parse()?;
/// let mut arena = Arena::<{ MODEL.arena_len() }>::new();
/// let image = [0.5f32; 2 * 8 * 8];
/// let mut runner = Runner::new(&model, arena.as_mut_slice(), Input::F32Nchw(&image))?;
/// while !runner.is_done() {
///     runner.step()?;
///     // An embassy task would `embassy_futures::yield_now().await` here.
/// }
/// let stepwise: Vec<f32> = {
///     let out = runner.finish()?;
///     (0..out.len()).map(|i| out.logit(i)).collect()
/// };
/// let mut arena2 = Arena::<{ MODEL.arena_len() }>::new();
/// let out = vitae_edge::run(&model, arena2.as_mut_slice(), Input::F32Nchw(&image), &mut NoProfiler)?;
/// assert!((0..out.len()).all(|i| out.logit(i).to_bits() == stepwise[i].to_bits()));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Runner<'m, 'r, 'i> {
    model: Model<'m>,
    arena: ArenaParts<'r>,
    input: Input<'i>,
    next: usize,
    staging: Option<Staging<'r>>,
    traffic: WeightTraffic,
}

/// Bytes of weights and tables the ops of a staged run took, by where they read them
/// ([`Runner::weight_traffic`]; counted only once [`Runner::stage_weights`] is set, so an
/// unstaged run pays nothing for it): each op's tables counted once (a kernel that walks its
/// weights once per block of outputs reads them again from the same place).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct WeightTraffic {
    /// Read in place from the blob.
    pub in_place: u64,
    /// Copied from the blob into the staging buffer, then read there.
    pub staged: u64,
    /// Ops run on staged tables.
    pub staged_ops: u32,
}

impl<'m, 'r, 'i> Runner<'m, 'r, 'i> {
    /// Checks `arena` and `input` against `model` ([`check`]) and prepares to run its first op.
    pub fn new(model: &Model<'m>, arena: &'r mut [u8], input: Input<'i>) -> Result<Self, RunError> {
        check(model, arena, &input)?;
        let whole = 0..arena.len();
        Ok(Runner {
            model: *model,
            arena: ArenaParts::new([arena], [whole]),
            input,
            next: 0,
            staging: None,
            traffic: WeightTraffic::default(),
        })
    }

    /// As [`new`](Self::new), with the arena as one buffer per part of the blob's plan, in
    /// order ([`Model::arena_parts`]; each at least [`Model::arena_part`]`(i)` bytes and
    /// 16-byte aligned): a plan made for a board whose memory is split into regions puts each
    /// part in its own region. A model whose plan is one part takes `[arena]`.
    ///
    /// ```
    /// # use vitae_edge::{Arena, EmbeddedModel, Input, Runner, include_model};
    /// # const MODEL: EmbeddedModel = include_model!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz/seeds/blob/transformer-int8.vblob"));
    /// # fn main() -> Result<(), vitae_edge::RunError> {
    /// // One static per part; on a device each carries the `#[link_section]` of its region.
    /// let mut fast = Arena::<{ MODEL.arena_part_len(0) }>::new();
    /// let model = MODEL.parse()?;
    /// assert_eq!(model.arena_parts(), 1);
    /// let image = [0.5f32; 2 * 8 * 8];
    /// let out = Runner::with_parts(&model, [fast.as_mut_slice()], Input::F32Nchw(&image))?.finish()?;
    /// assert!(out.len() > 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_parts<const N: usize>(
        model: &Model<'m>,
        parts: [&'r mut [u8]; N],
        input: Input<'i>,
    ) -> Result<Self, RunError> {
        check_parts(model, &parts, &input)?;
        let ranges = core::array::from_fn(|i| model.arena_part(i));
        Ok(Runner {
            model: *model,
            arena: ArenaParts::new(parts, ranges),
            input,
            next: 0,
            staging: None,
            traffic: WeightTraffic::default(),
        })
    }

    /// Stages weights: before each op whose tables fit `buffer`, they are copied there from the
    /// blob and the op reads them there ([`Model::decode_staged`]); ops whose tables do not fit
    /// read them in place. For a blob in slow memory (external flash) and a buffer in fast
    /// memory (TCM, SRAM). Same arithmetic on the same bytes: the logits are identical.
    /// `buffer` must be 16-byte aligned.
    pub fn stage_weights(&mut self, buffer: &'r mut [u8]) -> Result<(), RunError> {
        if buffer.as_ptr().align_offset(crate::format::ALIGN) != 0 {
            return Err(RunError::ArenaMisaligned);
        }
        self.staging = Some(Staging::single(buffer));
        Ok(())
    }

    /// As [`stage_weights`](Self::stage_weights), double-buffered: `buffer` is split into two
    /// halves, and while an op runs from one, `copier` moves the next op's tables into the
    /// other (a DMA channel works beside the core; [`MemCopy`] is the core's own copy). Ops
    /// whose tables do not fit a half read them in place. `buffer` must be 16-byte aligned.
    pub fn stage_weights_ahead(
        &mut self,
        buffer: &'r mut [u8],
        copier: &'r mut dyn StageCopy,
    ) -> Result<(), RunError> {
        if buffer.as_ptr().align_offset(crate::format::ALIGN) != 0 {
            return Err(RunError::ArenaMisaligned);
        }
        self.staging = Some(Staging::ahead(buffer, copier));
        Ok(())
    }

    /// Bytes of weights and tables the ops that ran so far took, in place and staged.
    pub fn weight_traffic(&self) -> WeightTraffic {
        self.traffic
    }

    /// True when every op has run ([`finish`](Self::finish) then only reads the logits).
    pub fn is_done(&self) -> bool {
        self.next >= self.model.op_count()
    }

    /// Index of the op the next [`step`](Self::step) runs (the op count when done).
    pub fn next_op(&self) -> usize {
        self.next
    }

    /// Ops in the model.
    pub fn op_count(&self) -> usize {
        self.model.op_count()
    }

    /// Runs the next op; does nothing when all have run.
    pub fn step(&mut self) -> Result<(), RunError> {
        self.step_profiled(&mut NoProfiler)
    }

    /// As [`step`](Self::step), with `profiler` told when the op starts and ends.
    pub fn step_profiled(&mut self, profiler: &mut impl Profiler) -> Result<(), RunError> {
        if self.is_done() {
            return Ok(());
        }
        let model = &self.model;
        let i = self.next;
        let view = model.op(i).map_err(RunError::Format)?;
        // Only a staged run pays for finding the op's tables (one more decode).
        let (staged, bytes) = match self.staging.as_mut() {
            Some(staging) => staging.prepare(model, i).map_err(RunError::Format)?,
            None => (None, 0),
        };
        // A plain match: `map_err` and `?` each moved the decoded op (three 80-byte copies).
        let decoded = match staged {
            Some((tables, base)) => model.decode_staged_from(i, tables, base),
            None => model.decode(i),
        };
        let op = match decoded {
            Ok(op) => op,
            Err(e) => return Err(RunError::Format(e)),
        };
        if staged.is_some() {
            self.traffic.staged += bytes;
            self.traffic.staged_ops += 1;
        } else {
            self.traffic.in_place += bytes;
        }
        profiler.op_start(&view);
        run_op(model, &view, &op, &mut self.arena, &self.input)?;
        let out = self
            .arena
            .get(model.tensor(view.desc.output).arena_range())
            .ok_or(RunError::BadPlan { op: view.index })?;
        profiler.op_end(&view, out);
        self.next += 1;
        Ok(())
    }

    /// Runs the ops that have not run and returns the logits (in the arena).
    pub fn finish(self) -> Result<Output<'r>, RunError> {
        self.finish_profiled(&mut NoProfiler)
    }

    /// As [`finish`](Self::finish), with `profiler` told about each op that still runs.
    pub fn finish_profiled(mut self, profiler: &mut impl Profiler) -> Result<Output<'r>, RunError> {
        while !self.is_done() {
            self.step_profiled(profiler)?;
        }
        let t = self.model.tensor(self.model.meta().output_tensor);
        let raw = self
            .arena
            .into_range(t.arena_range())
            .ok_or(RunError::BadPlan { op: u16::MAX })?;
        Ok(Output {
            raw,
            dtype: t.dtype,
            scale: t.desc.scale,
            zero_point: t.desc.zero_point,
        })
    }
}

/// The arena of a run: one buffer per part of the plan, each cut to its part's length and
/// starting at its part's arena offset (one part spanning the arena for a contiguous buffer).
#[derive(Debug)]
struct ArenaParts<'r> {
    parts: [&'r mut [u8]; MAX_ARENA_PARTS],
    starts: [usize; MAX_ARENA_PARTS],
    count: usize,
}

impl<'r> ArenaParts<'r> {
    /// Part `i` is `buffers[i]`, cut to `ranges[i].len()`, at arena offset `ranges[i].start`
    /// (the ranges rise and do not overlap; the caller checked the buffers' sizes).
    fn new<const N: usize>(buffers: [&'r mut [u8]; N], ranges: [Range<usize>; N]) -> Self {
        let mut parts: [&'r mut [u8]; MAX_ARENA_PARTS] = Default::default();
        let mut starts = [0; MAX_ARENA_PARTS];
        let mut count = 0;
        for ((buffer, range), (part, start)) in buffers
            .into_iter()
            .zip(ranges)
            .zip(parts.iter_mut().zip(&mut starts))
        {
            let len = range.len().min(buffer.len());
            *part = &mut buffer[..len];
            *start = range.start;
            count += 1;
        }
        ArenaParts {
            parts,
            starts,
            count,
        }
    }

    /// The part holding arena offsets `range` and the range within it.
    fn locate(&self, range: &Range<usize>) -> Option<(usize, Range<usize>)> {
        (0..self.count).find_map(|i| {
            let start = range.start.checked_sub(self.starts[i])?;
            let end = start + range.len();
            (end <= self.parts[i].len()).then_some((i, start..end))
        })
    }

    /// The bytes at arena offsets `range`.
    fn get(&self, range: Range<usize>) -> Option<&[u8]> {
        let (i, r) = self.locate(&range)?;
        self.parts[i].get(r)
    }

    /// As [`get`](Self::get), keeping the run's borrow of the arena.
    fn into_range(self, range: Range<usize>) -> Option<&'r [u8]> {
        let (i, r) = self.locate(&range)?;
        let part: &'r [u8] = self.parts.into_iter().nth(i)?;
        part.get(r)
    }

    /// Disjoint mutable views of the arena at offsets `ranges` (empty ranges give empty
    /// slices); `None` when two overlap or one leaves its part.
    fn carve<const N: usize>(&mut self, ranges: &[Range<usize>; N]) -> Option<[&mut [u8]; N]> {
        let mut order: [usize; N] = core::array::from_fn(|i| i);
        order.sort_unstable_by_key(|&i| ranges[i].start);
        let mut out: [Option<&mut [u8]>; N] = core::array::from_fn(|_| None);
        let mut parts = self.parts[..self.count].iter_mut().zip(self.starts);
        // `rest` holds the current part's bytes from arena offset `pos` to `end`.
        let (mut rest, mut pos, mut end): (&mut [u8], usize, usize) = (&mut [], 0, 0);
        for &i in &order {
            let r = &ranges[i];
            if r.is_empty() {
                continue;
            }
            while r.start >= end {
                let (part, start) = parts.next()?;
                (pos, end) = (start, start + part.len());
                rest = &mut **part;
            }
            if r.start < pos {
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
}

/// Gives op `view` its disjoint views of the arena and runs it.
fn run_op(
    model: &Model,
    view: &OpView,
    op: &Op,
    arena: &mut ArenaParts,
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
    let [r0, r1, r2, output, scratch] = arena.carve(&ranges).ok_or(bad_plan)?;
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
// Single ranges in arrays are the point: `carve` takes one range per view.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::ArenaParts;

    #[test]
    fn carve_gives_disjoint_views_and_refuses_overlaps() {
        let mut a = [0u8; 32];
        let mut parts = ArenaParts::new([&mut a[..]], [0..32]);
        let [x, y, z] = parts.carve(&[8..12, 0..4, 4..4]).unwrap();
        assert_eq!((x.len(), y.len(), z.len()), (4, 4, 0));
        x[0] = 1;
        y[0] = 2;
        assert!(parts.carve(&[0..8, 4..12]).is_none());
        assert!(parts.carve(&[0..0, 30..40]).is_none());
        assert_eq!((a[8], a[0]), (1, 2));
    }

    #[test]
    fn carve_maps_arena_offsets_into_their_parts() {
        // Arena offsets 0..16 live in `low`, 16..48 in `high` (given longer than its part).
        let (mut low, mut high) = ([0u8; 16], [0u8; 40]);
        let mut parts = ArenaParts::new([&mut low[..], &mut high[..]], [0..16, 16..48]);
        let [x, y, z] = parts.carve(&[20..24, 0..16, 44..48]).unwrap();
        (x[0], y[15], z[3]) = (1, 2, 3);
        // A range across the split, or past the last part's end, is a bad plan.
        assert!(parts.carve(&[8..24]).is_none());
        assert!(parts.carve(&[40..52]).is_none());
        assert_eq!(parts.get(44..48), Some(&[0, 0, 0, 3][..]));
        assert_eq!((low[15], high[4], high[31]), (2, 1, 3));
    }
}
