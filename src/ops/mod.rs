//! The op registry: every op kind of the blob format, each defined in one module.
//!
//! An op module owns everything about its kind: the `#[repr(C)]` parameter record the blob stores
//! (size checked at compile time), how the record is checked against its tensors and data and
//! decoded into the kernel's parameters, the scratch and data bytes it needs, its MAC count and
//! how the runtime runs it. It does so by implementing [`OpSpec`]. The one table at the bottom of
//! this file (`op_table!`) assigns each spec its stored kind number and generates everything
//! that lists the kinds: [`OpKind`], the decoded [`Op`], and the dispatch of decoding, size
//! queries and execution. Nothing matches on kinds elsewhere, and there is no fallback arm: a kind
//! whose spec lacks a piece does not compile, and a spec that is not in the table cannot be
//! written ([`HasKind`] comes only from the table).
//!
//! Adding an op: a module with its record, spec and kernel call, and one line in the table. A
//! spec whose kernel needs no scratch, no DATA bytes or no multiplications says so with
//! `returns_zero!(scratch_bytes, data_bytes, macs)` (or some of them) in its impl: the trait has
//! no defaults.

use crate::format::{
    ALIGN, DType, DataRef, FormatError, FormatErrorKind as K, ModelMeta, TensorDesc,
};
use crate::kernels::KernelError;
use crate::quant::Lut256;
use crate::runtime::{ImageLayout, Input, RunError};
use bytemuck::Pod;
use half::f16;

/// Inside an `impl OpSpec`: the listed size queries (`scratch_bytes`, `data_bytes`, `macs`)
/// return 0 for this op, e.g. `returns_zero!(scratch_bytes, macs);`. The spec still names each
/// one (the trait has no defaults), so a new op is never given 0 by omission.
macro_rules! returns_zero {
    ($($query:ident),+) => {
        $( returns_zero!(@ $query); )+
    };
    (@ scratch_bytes) => {
        fn scratch_bytes(_: &Self::Params<'_>) -> usize {
            0
        }
    };
    (@ data_bytes) => {
        fn data_bytes(_: &Self::Params<'_>) -> usize {
            0
        }
    };
    (@ macs) => {
        fn macs(_: &Self::Decoded<'_>) -> u64 {
            0
        }
    };
}

pub mod add;
pub mod attention;
pub mod class_token;
pub mod conv;
pub mod convert;
pub mod copy_rows;
pub mod image;
pub mod image_u8;
pub mod layernorm;
pub mod linear;
pub mod max_pool;
pub mod mean_pool;
pub mod performer;
pub mod prm;

/// Activation codes stored in parameter records.
pub mod act {
    /// No activation.
    pub const NONE: u16 = 0;
    /// GELU (exact erf).
    pub const GELU: u16 = 1;
    /// SiLU.
    pub const SILU: u16 = 2;
}

/// A parameter record as stored in the PARAMS section: read from its bytes (exact length) by the
/// reader, appended by the writer. Every `#[repr(C)]` [`Pod`] struct is one; variable-length
/// records (the PRM's header and branches) implement it themselves.
pub trait Record<'a>: Sized {
    /// Reads the record from exactly its bytes, or says what is wrong with their length.
    fn read(bytes: &'a [u8]) -> Result<Self, &'static str>;
    /// Appends the record's bytes.
    #[cfg(feature = "std")]
    fn write(&self, out: &mut Vec<u8>);
}

impl<'a, T: Pod> Record<'a> for T {
    fn read(bytes: &'a [u8]) -> Result<Self, &'static str> {
        if bytes.len() == core::mem::size_of::<T>() {
            Ok(bytemuck::pod_read_unaligned(bytes))
        } else {
            Err("parameter record has the wrong length")
        }
    }

    #[cfg(feature = "std")]
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(bytemuck::bytes_of(self));
    }
}

/// Everything about one op kind. Implemented by a marker type in the op's module.
pub trait OpSpec {
    /// Short name for reports (`conv`, `linear`, …; the int8 and fp16 twins share one).
    const NAME: &'static str;
    /// Tensor inputs, in `OpDesc::inputs` order. 0: the op reads the caller's image.
    const INPUTS: usize;
    /// Whether the output may be the first input's own storage (the in-place residual add).
    const IN_PLACE: bool;
    /// For an op that reads the caller's image (`INPUTS == 0`): the [`Input`] layout it reads.
    const IMAGE: Option<ImageLayout> = None;
    /// The stored parameter record.
    type Params<'a>: Record<'a>;
    /// The op decoded for its kernel.
    type Decoded<'a>: Copy + core::fmt::Debug;
    /// Checks the record against the op's tensors and the data it references, and decodes it.
    fn decode<'a>(
        p: &Self::Params<'a>,
        cx: &DecodeCx<'a>,
    ) -> Result<Self::Decoded<'a>, FormatError>;
    /// Scratch bytes the kernel needs for these parameters (the largest need of every
    /// implementation: blobs are planned on the host). The writer records it in the op.
    fn scratch_bytes(p: &Self::Params<'_>) -> usize;
    /// Bytes of the DATA section the record references and the kernel uses (weights, tables).
    fn data_bytes(p: &Self::Params<'_>) -> usize;
    /// Multiply-accumulates of one run (`returns_zero!(macs)` for ops without products).
    fn macs(op: &Self::Decoded<'_>) -> u64;
    /// Runs the op on its views of the arena.
    fn run(op: &Self::Decoded<'_>, io: &mut OpIo<'_>) -> Result<(), RunError>;
}

/// The stored kind of a spec. Implemented only by `op_table!`, so only a spec in the table can
/// be written into a blob.
pub trait HasKind: OpSpec {
    /// The kind the table gives this spec.
    const KIND: OpKind;
}

/// What an op's [`OpSpec::decode`] sees: its tensors, the DATA section and the model metadata,
/// and where to point errors.
#[derive(Clone, Copy, Debug)]
pub struct DecodeCx<'a> {
    /// The tensor table (the ids below are in range: checked before `decode` runs).
    pub(crate) tensors: &'a [TensorDesc],
    pub(crate) inputs: [u16; 3],
    pub(crate) output: u16,
    pub(crate) meta: &'a ModelMeta,
    pub(crate) tables: Tables<'a>,
}

/// Stands in for a tensor id out of range (never, after validation).
static NO_DESC: TensorDesc = TensorDesc {
    dtype: 0,
    reserved0: 0,
    flags: 0,
    h: 0,
    w: 0,
    c: 0,
    row0: 0,
    arena_offset: 0,
    byte_len: 0,
    scale: 0.0,
    zero_point: 0,
    name: crate::format::StrRef { offset: 0, len: 0 },
};

/// A tensor as an op's decoding sees it: its record and element type.
#[derive(Clone, Copy, Debug)]
pub struct Tensor<'a> {
    /// The record (shape, quantization, arena range).
    pub desc: &'a TensorDesc,
    /// Element type.
    pub dtype: DType,
}

/// Typed views of the DATA section for one op, and where its errors point (small enough for a
/// decoded op to keep, as the PRM does to decode its branches as it runs them).
#[derive(Clone, Copy, Debug)]
pub struct Tables<'a> {
    /// The DATA section, or the part of it from DATA offset `base` on (a copy of an op's
    /// tables staged in fast memory: [`Model::decode_staged`](crate::format::Model::decode_staged)).
    pub(crate) data: &'a [u8],
    pub(crate) base: usize,
    /// When set, widened to cover every DATA range resolved ([`Model::op_data_range`](crate::format::Model::op_data_range)).
    pub(crate) span: Option<&'a core::cell::Cell<(usize, usize)>>,
    pub(crate) op: u16,
    /// Byte offset of the op's parameter record (errors about the record point here).
    pub(crate) at: usize,
}

impl<'a> Tables<'a> {
    /// The DATA table `r` as `T`s (aligned, in bounds, a whole number of elements).
    pub fn data<T: Pod>(&self, r: DataRef, what: &'static str) -> Result<&'a [T], FormatError> {
        let bad = FormatError::new(K::BadData { op: self.op, what }, self.at);
        if let Some(span) = self.span.filter(|_| r.len > 0) {
            let start = r.offset as usize;
            let end = start.saturating_add(r.len as usize);
            let (s, e) = span.get();
            span.set(if s == e {
                (start, end)
            } else {
                (s.min(start), e.max(end))
            });
        }
        let offset = (r.offset as usize).checked_sub(self.base).ok_or(bad)?;
        let r = DataRef {
            offset: offset as u32,
            len: r.len,
        };
        data_slice(self.data, r).ok_or(bad)
    }

    /// An optional 256-entry activation table.
    pub fn lut(&self, r: DataRef) -> Result<Option<&'a Lut256>, FormatError> {
        if r.is_none() {
            return Ok(None);
        }
        let table: &[i8; 256] =
            self.data::<i8>(r, "activation table")?
                .try_into()
                .map_err(|_| {
                    FormatError::new(
                        K::BadData {
                            op: self.op,
                            what: "activation table",
                        },
                        self.at,
                    )
                })?;
        Ok(Some(bytemuck::cast_ref(table)))
    }

    /// A kernel's refusal of this op's parameters.
    pub fn kernel(&self, error: KernelError) -> FormatError {
        FormatError::new(K::BadKernelParams { op: self.op, error }, self.at)
    }
}

impl<'a> DecodeCx<'a> {
    /// Index of the op.
    pub fn op(&self) -> u16 {
        self.tables.op
    }

    fn tensor(&self, t: u16) -> Tensor<'a> {
        // Ids and dtypes were validated before any op decodes; the fallbacks are never taken
        // (they keep this panic-free regardless).
        let desc = self.tensors.get(t as usize).unwrap_or(&NO_DESC);
        Tensor {
            desc,
            dtype: DType::from_u8(desc.dtype).unwrap_or(DType::I8),
        }
    }

    /// Input tensor `k` (`k < INPUTS`).
    pub fn input(&self, k: usize) -> Tensor<'a> {
        self.tensor(self.inputs[k])
    }

    /// The output tensor.
    pub fn output(&self) -> Tensor<'a> {
        self.tensor(self.output)
    }

    /// The model metadata (the input image's shape).
    pub fn meta(&self) -> &'a ModelMeta {
        self.meta
    }

    /// The op's DATA tables.
    pub fn tables(&self) -> Tables<'a> {
        self.tables
    }

    /// An error about this op's parameters.
    pub fn bad(&self, what: &'static str) -> FormatError {
        FormatError::new(
            K::BadOp {
                index: self.tables.op,
                what,
            },
            self.tables.at,
        )
    }

    /// `Ok` when `ok`, else [`bad`](Self::bad)`(what)`.
    pub fn ensure(&self, ok: bool, what: &'static str) -> Result<(), FormatError> {
        if ok { Ok(()) } else { Err(self.bad(what)) }
    }

    /// A kernel's refusal of this op's parameters.
    pub fn kernel(&self, error: KernelError) -> FormatError {
        self.tables.kernel(error)
    }

    /// The DATA table `r` as `T`s (aligned, in bounds, a whole number of elements).
    pub fn data<T: Pod>(&self, r: DataRef, what: &'static str) -> Result<&'a [T], FormatError> {
        self.tables.data(r, what)
    }

    /// An optional 256-entry activation table.
    pub fn lut(&self, r: DataRef) -> Result<Option<&'a Lut256>, FormatError> {
        self.tables.lut(r)
    }
}

/// The DATA bytes `r` names as `T`s, when aligned, in bounds and a whole number of elements.
pub(crate) fn data_slice<T: Pod>(data: &[u8], r: DataRef) -> Option<&[T]> {
    let start = r.offset as usize;
    if !start.is_multiple_of(ALIGN) || !(r.len as usize).is_multiple_of(core::mem::size_of::<T>()) {
        return None;
    }
    let bytes = data.get(start..start.checked_add(r.len as usize)?)?;
    bytemuck::try_cast_slice(bytes).ok()
}

/// Total length of DATA references (for size reports).
pub(crate) fn refs_len(refs: &[DataRef]) -> usize {
    refs.iter().map(|r| r.len as usize).sum()
}

/// True when `t` has this dtype and shape (a whole map, not a strip of a taller one).
pub(crate) fn is(t: &Tensor, dtype: DType, h: usize, w: usize, c: usize) -> bool {
    t.dtype == dtype
        && (t.desc.h as usize, t.desc.w as usize, t.desc.c as usize) == (h, w, c)
        && t.desc.row0 == 0
}

/// The rows of a `map_h × w × c` map of `dtype` that `t` holds (all of them, or a strip of a
/// patch-based run), or `None` when `t` is not such a map or rows of one.
pub(crate) fn rows_of(
    t: &Tensor,
    dtype: DType,
    map_h: usize,
    w: usize,
    c: usize,
) -> Option<core::ops::Range<usize>> {
    let rows = t.desc.row0 as usize..t.desc.row0 as usize + t.desc.h as usize;
    (t.dtype == dtype && (t.desc.w as usize, t.desc.c as usize) == (w, c) && rows.end <= map_h)
        .then_some(rows)
}

/// Tokens (`h · w`) of a tensor.
pub(crate) fn tokens_of(t: &Tensor) -> usize {
    t.desc.h as usize * t.desc.w as usize
}

/// True when `t` is `tokens × channels` of `dtype`.
pub(crate) fn is_tokens(t: &Tensor, dtype: DType, tokens: usize, channels: usize) -> bool {
    t.dtype == dtype && tokens_of(t) == tokens && t.desc.c as usize == channels
}

/// What an op's [`OpSpec::run`] works on: disjoint views of the arena (its inputs, its output,
/// its scratch) and the caller's image.
#[derive(Debug)]
pub struct OpIo<'r> {
    pub(crate) op: u16,
    pub(crate) inputs: [&'r [u8]; 3],
    pub(crate) output: &'r mut [u8],
    pub(crate) scratch: &'r mut [u8],
    pub(crate) image: &'r Input<'r>,
    pub(crate) meta: &'r ModelMeta,
    pub(crate) in_place: bool,
}

impl<'r> OpIo<'r> {
    /// True when the output holds the first input (an in-place op: input 0 is empty).
    pub fn in_place(&self) -> bool {
        self.in_place
    }

    /// Input `k` as int8.
    pub fn i8_in(&self, k: usize) -> &'r [i8] {
        bytemuck::cast_slice(self.inputs[k])
    }

    /// Input `k` as fp16.
    pub fn f16_in(&self, k: usize) -> Result<&'r [f16], RunError> {
        bytemuck::try_cast_slice(self.inputs[k]).map_err(|_| RunError::BadPlan { op: self.op })
    }

    /// Input `k` as int16.
    pub fn i16_in(&self, k: usize) -> Result<&'r [i16], RunError> {
        bytemuck::try_cast_slice(self.inputs[k]).map_err(|_| RunError::BadPlan { op: self.op })
    }

    /// The output as int16.
    pub fn i16_out(&mut self) -> Result<&mut [i16], RunError> {
        bytemuck::try_cast_slice_mut(self.output).map_err(|_| RunError::BadPlan { op: self.op })
    }

    /// The output as int8.
    pub fn i8_out(&mut self) -> &mut [i8] {
        bytemuck::cast_slice_mut(self.output)
    }

    /// The output as fp16.
    pub fn f16_out(&mut self) -> Result<&mut [f16], RunError> {
        bytemuck::try_cast_slice_mut(self.output).map_err(|_| RunError::BadPlan { op: self.op })
    }

    /// The output as int8 and the scratch bytes.
    pub fn i8_out_scratch(&mut self) -> (&mut [i8], &mut [u8]) {
        (bytemuck::cast_slice_mut(self.output), self.scratch)
    }

    /// The output as fp16 and the scratch bytes.
    pub fn f16_out_scratch(&mut self) -> Result<(&mut [f16], &mut [u8]), RunError> {
        let out = bytemuck::try_cast_slice_mut(self.output)
            .map_err(|_| RunError::BadPlan { op: self.op })?;
        Ok((out, self.scratch))
    }

    /// The caller's image and the model metadata (its shape).
    pub fn image(&self) -> (&'r Input<'r>, &'r ModelMeta) {
        (self.image, self.meta)
    }

    /// The caller's f32 NCHW image and the model metadata (its shape).
    pub fn f32_image(&self) -> Result<(&'r [f32], &'r ModelMeta), RunError> {
        match self.image {
            Input::F32Nchw(x) => Ok((x, self.meta)),
            other => Err(self.wrong_image(ImageLayout::F32Nchw, other)),
        }
    }

    /// The caller's u8 HWC image and the model metadata (its shape).
    pub fn u8_image(&self) -> Result<(&'r [u8], &'r ModelMeta), RunError> {
        match self.image {
            Input::U8Hwc(x) => Ok((x, self.meta)),
            other => Err(self.wrong_image(ImageLayout::U8Hwc, other)),
        }
    }

    /// The caller gave another layout than the op reads (`runtime::check` refuses that before
    /// the first op, so this is for an op out of place).
    fn wrong_image(&self, expected: ImageLayout, got: &Input) -> RunError {
        RunError::InputLayout {
            expected,
            got: got.layout(),
        }
    }

    /// A kernel error of this op.
    pub fn kernel(&self, error: KernelError) -> RunError {
        RunError::Kernel { op: self.op, error }
    }
}

/// Generates, from one table of `Kind = code => Spec`, the [`OpKind`] enum, [`Op`] and every
/// dispatch over kinds. A stored code is never reused for another meaning.
macro_rules! op_table {
    ($( $(#[$doc:meta])* $kind:ident = $code:literal => $spec:ty, )*) => {
        /// What an op computes (the stored kind number).
        #[repr(u16)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        #[non_exhaustive]
        pub enum OpKind {
            $( $(#[$doc])* $kind = $code, )*
        }

        $( impl HasKind for $spec { const KIND: OpKind = OpKind::$kind; } )*

        impl OpKind {
            /// Every kind, in table order.
            pub const ALL: &'static [OpKind] = &[$( OpKind::$kind, )*];

            /// From the stored value; `None` for a number no kind has.
            pub fn from_u16(v: u16) -> Option<OpKind> {
                match v {
                    $( $code => Some(OpKind::$kind), )*
                    _ => None,
                }
            }

            /// Short name for reports.
            pub fn name(self) -> &'static str {
                match self { $( OpKind::$kind => <$spec as OpSpec>::NAME, )* }
            }

            /// Tensor inputs the op reads (0: it reads the caller's image).
            pub fn inputs(self) -> usize {
                match self { $( OpKind::$kind => <$spec as OpSpec>::INPUTS, )* }
            }

            /// Whether the output may share the first input's storage.
            pub fn in_place(self) -> bool {
                match self { $( OpKind::$kind => <$spec as OpSpec>::IN_PLACE, )* }
            }

            /// For a kind that reads the caller's image: the layout it reads.
            pub fn image_layout(self) -> Option<ImageLayout> {
                match self { $( OpKind::$kind => <$spec as OpSpec>::IMAGE, )* }
            }

            /// Reads the record `bytes` of this kind and returns the DATA bytes it references,
            /// or what is wrong with the record.
            pub(crate) fn data_bytes(self, bytes: &[u8]) -> Result<usize, &'static str> {
                match self {
                    $( OpKind::$kind => {
                        <<$spec as OpSpec>::Params<'_> as Record<'_>>::read(bytes)
                            .map(|p| <$spec as OpSpec>::data_bytes(&p))
                    } )*
                }
            }

            /// Reads the record `bytes` of this kind and returns the scratch bytes its kernel
            /// needs, or what is wrong with the record.
            pub(crate) fn scratch_bytes(self, bytes: &[u8]) -> Result<usize, &'static str> {
                match self {
                    $( OpKind::$kind => {
                        <<$spec as OpSpec>::Params<'_> as Record<'_>>::read(bytes)
                            .map(|p| <$spec as OpSpec>::scratch_bytes(&p))
                    } )*
                }
            }

            /// Reads the record `bytes` as this kind's record type and appends it to `out`;
            /// returns the scratch bytes it needs (the writer's path for copying ops between
            /// blobs).
            #[cfg(feature = "std")]
            pub(crate) fn copy_record(
                self,
                bytes: &[u8],
                out: &mut Vec<u8>,
            ) -> Result<usize, &'static str> {
                match self {
                    $( OpKind::$kind => {
                        let p = <<$spec as OpSpec>::Params<'_> as Record<'_>>::read(bytes)?;
                        p.write(out);
                        Ok(<$spec as OpSpec>::scratch_bytes(&p))
                    } )*
                }
            }

            /// Reads and decodes a record of this kind.
            pub(crate) fn decode<'a>(
                self,
                bytes: &'a [u8],
                cx: &DecodeCx<'a>,
            ) -> Result<Op<'a>, FormatError> {
                match self {
                    $( OpKind::$kind => {
                        let p = <<$spec as OpSpec>::Params<'a> as Record<'a>>::read(bytes)
                            .map_err(|what| cx.bad(what))?;
                        <$spec as OpSpec>::decode(&p, cx).map(Op::$kind)
                    } )*
                }
            }
        }

        /// An op, decoded into the parameters its kernel takes (one variant per [`OpKind`]).
        #[derive(Clone, Copy, Debug)]
        #[allow(missing_docs)]
        #[non_exhaustive]
        pub enum Op<'a> {
            $( $kind(<$spec as OpSpec>::Decoded<'a>), )*
        }

        impl Op<'_> {
            /// Its kind.
            pub fn kind(&self) -> OpKind {
                match self { $( Op::$kind(_) => OpKind::$kind, )* }
            }

            /// Multiply-accumulates of one run.
            pub fn macs(&self) -> u64 {
                match self { $( Op::$kind(d) => <$spec as OpSpec>::macs(d), )* }
            }

            /// Runs it.
            pub(crate) fn run(&self, io: &mut OpIo<'_>) -> Result<(), RunError> {
                match self { $( Op::$kind(d) => <$spec as OpSpec>::run(d, io), )* }
            }
        }
    };
}

op_table! {
    /// (external f32 NCHW image → int8 NHWC) [`image::QuantizeParams`].
    QuantizeImage = 1 => image::QuantizeImageOp,
    /// (int8 → int8) [`conv::ConvParams`].
    ConvS8 = 2 => conv::ConvS8Op,
    /// (int8 → int8, int4 weights) [`conv::ConvParams`].
    ConvS4 = 34 => conv::ConvS4Op,
    /// (int8 → int8) [`prm::PrmParams`] + [`prm::PrmBranch`] × branches.
    PrmS8 = 3 => prm::PrmS8Op,
    /// (int8 → int8) [`linear::LinearParams`].
    LinearS8 = 4 => linear::LinearS8Op,
    /// (int8 → int8, int4 weights) [`linear::LinearParams`].
    LinearS4 = 19 => linear::LinearS4Op,
    /// (int8 → int8) [`layernorm::LayerNormParams`].
    LayerNormS8 = 5 => layernorm::LayerNormS8Op,
    /// (int16 → int8) [`layernorm::LayerNormParams`].
    LayerNormS16 = 36 => layernorm::LayerNormS16Op,
    /// (q, k, v int8 → int8) [`attention::AttentionParams`].
    AttentionS8 = 6 => attention::AttentionS8Op,
    /// (k, q, v int8 → int8) [`performer::PerformerParams`].
    PerformerS8 = 7 => performer::PerformerS8Op,
    /// (a, b int8 → int8; output may be `a` itself) [`add::AddParams`].
    AddS8 = 8 => add::AddS8Op,
    /// (a, b each int8 or int16 → int16; output may be `a` itself when int16)
    /// [`add::AddParams`].
    AddS16 = 35 => add::AddS16Op,
    /// (int8 → int8 vector) [`mean_pool::MeanPoolParams`].
    MeanPoolS8 = 9 => mean_pool::MeanPoolS8Op,
    /// (external f32 NCHW image → fp16 NHWC) no parameters.
    ImageToF16 = 20 => image::ImageToF16Op,
    /// (fp16 → fp16) [`conv::ConvF16Params`].
    ConvF16 = 21 => conv::ConvF16Op,
    /// (fp16 → fp16) [`prm::PrmParams`] + [`prm::PrmBranch`] × branches (requant/lut unused,
    /// activation in `act`).
    PrmF16 = 22 => prm::PrmF16Op,
    /// (fp16 → fp16) [`linear::LinearF16Params`].
    LinearF16 = 23 => linear::LinearF16Op,
    /// (fp16 → fp16) [`layernorm::LayerNormF16Params`].
    LayerNormF16 = 24 => layernorm::LayerNormF16Op,
    /// (q, k, v fp16 → fp16) [`attention::AttentionF16Params`].
    AttentionF16 = 25 => attention::AttentionF16Op,
    /// (k, q, v fp16 → fp16) [`performer::PerformerF16Params`].
    PerformerF16 = 26 => performer::PerformerF16Op,
    /// (a, b fp16 → fp16; output may be `a` itself) no parameters.
    AddF16 = 27 => add::AddF16Op,
    /// (fp16 → fp16 vector) [`mean_pool::MeanPoolF16Params`].
    MeanPoolF16 = 28 => mean_pool::MeanPoolF16Op,
    /// (int8 → fp16) [`convert::DequantizeParams`].
    DequantizeS8 = 40 => convert::DequantizeS8Op,
    /// (fp16 → int8) [`convert::QuantizeF16Params`].
    QuantizeF16 = 41 => convert::QuantizeF16Op,
    /// (int16 → int8) [`convert::RequantizeS16Params`].
    RequantizeS16 = 42 => convert::RequantizeS16Op,
    /// (int16 → fp16) [`convert::DequantizeParams`] (zero point 0).
    DequantizeS16 = 43 => convert::DequantizeS16Op,
    /// (int8 → int8, same quantization) [`max_pool::MaxPoolParams`].
    MaxPoolS8 = 10 => max_pool::MaxPoolS8Op,
    /// (fp16 → fp16) [`max_pool::MaxPoolParams`].
    MaxPoolF16 = 29 => max_pool::MaxPoolF16Op,
    /// (int8 patch tokens → int8 class token + tokens) [`class_token::ClassTokenParams`].
    ClassTokenS8 = 11 => class_token::ClassTokenS8Op,
    /// (int8 tokens → int8 spatial rows, same quantization) [`class_token::TokenRowsParams`].
    DropTokenS8 = 12 => class_token::DropTokenS8Op,
    /// (int8 spatial rows → int8 zero row + rows, same quantization)
    /// [`class_token::TokenRowsParams`].
    PadTokenS8 = 13 => class_token::PadTokenS8Op,
    /// (fp16 patch tokens → fp16 class token + tokens) [`class_token::ClassTokenF16Params`].
    ClassTokenF16 = 30 => class_token::ClassTokenF16Op,
    /// (fp16 tokens → fp16 spatial rows) [`class_token::TokenRowsParams`].
    DropTokenF16 = 31 => class_token::DropTokenF16Op,
    /// (fp16 spatial rows → fp16 zero row + rows) [`class_token::TokenRowsParams`].
    PadTokenF16 = 32 => class_token::PadTokenF16Op,
    /// (external u8 HWC image → int8 NHWC) [`image_u8::PixelTableParams`].
    QuantizeImageU8 = 14 => image_u8::QuantizeImageU8Op,
    /// (external u8 HWC image → fp16 NHWC) [`image_u8::PixelTableParams`].
    ImageU8ToF16 = 33 => image_u8::ImageU8ToF16Op,
    /// (k, v int8 → f32 sums; the first strip of a patch-based run)
    /// [`performer::PerformerParams`].
    PerformerStartS8 = 15 => performer::PerformerStartS8Op,
    /// (f32 sums, k, v int8 → the sums, in place; a further strip of a patch-based run)
    /// [`performer::PerformerParams`].
    PerformerSumS8 = 16 => performer::PerformerSumS8Op,
    /// (q int8, f32 sums → int8; a strip of a patch-based run) [`performer::PerformerParams`].
    PerformerEmitS8 = 17 => performer::PerformerEmitS8Op,
    /// (rows of a map → the same rows in another window; a patch-based run's kept halo) no
    /// parameters.
    CopyRows = 18 => copy_rows::CopyRowsOp,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind of the table: a name, a stored code that reads back as the kind, and a record
    /// reader that accepts exactly one length (so a record one byte short or long is refused).
    #[test]
    fn every_kind_has_a_name_a_code_and_one_record_length() {
        // Content matters only to the PRM's variable-length record: a header with one branch.
        // Every fixed-size record accepts any bytes of its own length. (Sizes are asked of the
        // zeroed record through `data_bytes` only: scratch sizes assume a decoded, valid record,
        // and a zero group count would divide by zero.)
        let mut record = [0u8; 512];
        let header = prm::PrmParams {
            branches: 1,
            ..bytemuck::Zeroable::zeroed()
        };
        record[..core::mem::size_of::<prm::PrmParams>()]
            .copy_from_slice(bytemuck::bytes_of(&header));
        let mut codes = Vec::new();
        for &kind in OpKind::ALL {
            assert!(!kind.name().is_empty(), "{kind:?} has no name");
            assert_eq!(OpKind::from_u16(kind as u16), Some(kind));
            codes.push(kind as u16);
            let accepted: Vec<usize> = (0..=record.len())
                .filter(|&len| kind.data_bytes(&record[..len]).is_ok())
                .collect();
            assert_eq!(
                accepted.len(),
                1,
                "{kind:?} accepts record lengths {accepted:?}"
            );
            let len = accepted[0];
            for wrong in [len.checked_sub(1), Some(len + 1)].into_iter().flatten() {
                assert!(
                    kind.data_bytes(&record[..wrong]).is_err(),
                    "{kind:?}, {wrong} B"
                );
                assert!(
                    kind.scratch_bytes(&record[..wrong]).is_err(),
                    "{kind:?}, {wrong} B"
                );
            }
        }
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), OpKind::ALL.len(), "two kinds share a code");
        assert_eq!(OpKind::from_u16(0), None);
        assert_eq!(OpKind::from_u16(u16::MAX), None);
    }
}
