//! The model blob: one definition shared by the writer (the host tool, feature `std`) and the
//! reader (the device and the host engine).
//!
//! ```text
//! offset 0   Header (64 bytes): magic "VITAEBLB", format version, section count, total length,
//!            CRC-32, arena size and its lower bound, where the arena splits into parts
//!        64  SectionEntry × section_count (16 bytes each): kind, offset, length, record count
//!            sections, each starting at a multiple of 16:
//!            META     ModelMeta: input shape, classes, input/output tensors, precision, name
//!            TENSORS  TensorDesc × n: dtype, shape (h, w, c), arena offset and length, scale, zp
//!            OPS      OpDesc × n, in execution order: kind, input/output tensors, parameter
//!                     record, scratch range in the arena, MACs, name
//!            PARAMS   the op parameter records (one `#[repr(C)]` struct per kind, defined with
//!                     the op in `crate::ops`), 4-aligned
//!            DATA     weights, biases, requantization and LUT tables, each 16-aligned so they are
//!                     used in place from flash (zero-copy)
//!            STRINGS  UTF-8 names
//! ```
//!
//! Everything is little-endian. The CRC-32 (IEEE) covers the whole blob with the CRC field read
//! as zero. The reader validates every offset, length, alignment, overlap, tensor shape and op
//! parameter before anything runs and reports a [`FormatError`] with the byte offset of the
//! offending record; it never panics. Each packed struct's size is checked at compile time.

mod crc;
mod error;
mod read;
#[cfg(feature = "std")]
mod write;

pub use crate::ops::{Op, OpKind};
pub use crc::{Crc32, crc32};
pub use error::{FormatError, FormatErrorKind};
pub use read::{Model, OpView, TensorView, read_header, read_header_prefix};
#[cfg(feature = "std")]
pub use write::{AlignedBytes, BlobWriter};

use bytemuck::{Pod, Zeroable};

/// First eight bytes of every blob.
pub const MAGIC: [u8; 8] = *b"VITAEBLB";
/// The newest format version this code writes. A blob is written with the oldest version that
/// can hold it: 1, unless it uses what version 2 added (strips of a patch-based run: tensors with
/// [`TensorDesc::row0`], f32 performer sums and the performer's pass ops), so readers from
/// before version 2 still read every blob they can run.
pub const FORMAT_VERSION: u16 = 2;
/// Versions this reader accepts (a change that old readers cannot read bumps the version;
/// see the README's "blob format" section for the procedure).
pub const SUPPORTED_VERSIONS: &[u16] = &[1, 2];
/// Alignment of every section and every DATA item, in bytes.
pub const ALIGN: usize = 16;
/// Marks an unused tensor slot in an op.
pub const NO_TENSOR: u16 = u16::MAX;

/// The fixed header at offset 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// Format version.
    pub version: u16,
    /// `size_of::<Header>()`.
    pub header_len: u16,
    /// Entries in the section table that follows the header.
    pub section_count: u16,
    /// Reserved, zero.
    pub flags: u16,
    /// Length of the whole blob in bytes.
    pub total_len: u32,
    /// CRC-32 of the whole blob with this field read as zero.
    pub crc32: u32,
    /// Arena bytes the plan needs (activations + scratch).
    pub arena_len: u32,
    /// Largest set of simultaneously live bytes (no plan can use less).
    pub arena_lower_bound: u32,
    /// Where the arena splits into parts that may live in different memories: the arena offsets
    /// at which parts 1, 2, … begin, increasing and 16-aligned, then zeros. All zeros: one part.
    /// No tensor or scratch range crosses a split, so each part can be its own buffer (see
    /// [`Header::arena_parts`]); a contiguous arena of `arena_len` bytes still runs the plan,
    /// which is how readers from before this field (which read it as reserved zeros) ran it.
    pub arena_splits: [u32; MAX_ARENA_PARTS - 1],
    /// Reserved, zero.
    pub reserved: u32,
}

/// Most parts an arena splits into ([`Header::arena_splits`]).
pub const MAX_ARENA_PARTS: usize = 8;

impl Header {
    /// Parts the arena splits into (1 for a contiguous plan). For a header that
    /// [`read_header`] accepted, the splits are increasing and inside the arena.
    pub const fn arena_parts(&self) -> usize {
        let mut n = 1;
        while n < MAX_ARENA_PARTS && self.arena_splits[n - 1] != 0 {
            n += 1;
        }
        n
    }

    /// The arena offsets of part `i` (empty past the last part).
    pub const fn arena_part(&self, i: usize) -> core::ops::Range<usize> {
        let parts = self.arena_parts();
        if i >= parts {
            return 0..0;
        }
        let start = if i == 0 {
            0
        } else {
            self.arena_splits[i - 1] as usize
        };
        let end = if i + 1 == parts {
            self.arena_len as usize
        } else {
            self.arena_splits[i] as usize
        };
        start..end
    }

    /// Bytes of arena part `i` (0 past the last part): the size of its buffer.
    pub const fn arena_part_len(&self, i: usize) -> usize {
        let r = self.arena_part(i);
        r.end - r.start
    }
}
/// Bytes of the [`Header`].
pub const HEADER_LEN: usize = 64;
const _: () = assert!(core::mem::size_of::<Header>() == HEADER_LEN);

/// Byte offset of [`Header::crc32`].
pub const CRC_FIELD_OFFSET: usize = 20;

/// One entry of the section table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct SectionEntry {
    /// A [`SectionKind`] value.
    pub kind: u32,
    /// Byte offset from the start of the blob (multiple of [`ALIGN`]).
    pub offset: u32,
    /// Length in bytes.
    pub len: u32,
    /// Number of records (for record sections), else 0.
    pub count: u32,
}
const _: () = assert!(core::mem::size_of::<SectionEntry>() == 16);

/// Section kinds. Each appears exactly once.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SectionKind {
    /// [`ModelMeta`].
    Meta = 1,
    /// [`TensorDesc`] records.
    Tensors = 2,
    /// [`OpDesc`] records.
    Ops = 3,
    /// Op parameter records.
    Params = 4,
    /// Weights and tables.
    Data = 5,
    /// UTF-8 names.
    Strings = 6,
}

impl SectionKind {
    /// All kinds, in the order the writer lays them out.
    pub const ALL: [SectionKind; 6] = [
        SectionKind::Meta,
        SectionKind::Tensors,
        SectionKind::Ops,
        SectionKind::Params,
        SectionKind::Data,
        SectionKind::Strings,
    ];

    /// From the stored value.
    pub fn from_u32(v: u32) -> Option<SectionKind> {
        SectionKind::ALL.into_iter().find(|k| *k as u32 == v)
    }
}

/// A range in the STRINGS section.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct StrRef {
    /// Byte offset within STRINGS.
    pub offset: u32,
    /// Length in bytes.
    pub len: u32,
}

/// A range in the DATA section (offset a multiple of [`ALIGN`]; `len == 0` means absent).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct DataRef {
    /// Byte offset within DATA.
    pub offset: u32,
    /// Length in bytes.
    pub len: u32,
}

impl DataRef {
    /// True when the reference points at nothing (an optional table that is absent).
    pub fn is_none(&self) -> bool {
        self.len == 0
    }
}

/// How the whole model is stored.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Precision {
    /// Every layer int8.
    Int8 = 0,
    /// Every layer fp16.
    Fp16 = 1,
    /// Some layers int8, some fp16.
    Mixed = 2,
}

/// Model-wide facts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ModelMeta {
    /// Input image channels.
    pub input_channels: u16,
    /// Input image height.
    pub input_height: u16,
    /// Input image width.
    pub input_width: u16,
    /// Output logits.
    pub num_classes: u16,
    /// Tensor the first op writes the converted image into.
    pub input_tensor: u16,
    /// Tensor holding the logits after the last op.
    pub output_tensor: u16,
    /// A [`Precision`] value.
    pub precision: u8,
    /// Reserved, zero.
    pub reserved0: [u8; 3],
    /// Total multiply-accumulates of one inference (low and high 32 bits).
    pub macs: [u32; 2],
    /// Model name.
    pub name: StrRef,
    /// Reserved, zero.
    pub reserved: [u32; 4],
}
const _: () = assert!(core::mem::size_of::<ModelMeta>() == 48);

/// Element type of a tensor.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DType {
    /// Quantized int8 (`real = scale · (q − zero_point)`).
    I8 = 1,
    /// IEEE binary16.
    F16 = 2,
    /// IEEE binary32: only the running sums a performer keeps between the strips of a
    /// patch-based run ([`crate::ops::performer::PerformerSumS8Op`]); format version 2.
    F32 = 3,
    /// Quantized int16, symmetric (`real = scale · q`, zero point 0): the residual stream where a
    /// mixed-precision blob keeps it in int16.
    I16 = 4,
}

impl DType {
    /// From the stored value.
    pub fn from_u8(v: u8) -> Option<DType> {
        match v {
            1 => Some(DType::I8),
            2 => Some(DType::F16),
            3 => Some(DType::F32),
            4 => Some(DType::I16),
            _ => None,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::I8 => 1,
            DType::F16 | DType::I16 => 2,
            DType::F32 => 4,
        }
    }
}

/// An activation tensor: shape, element type, quantization and where it lives in the arena.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct TensorDesc {
    /// A [`DType`] value.
    pub dtype: u8,
    /// Reserved, zero.
    pub reserved0: u8,
    /// Reserved, zero.
    pub flags: u16,
    /// Height (1 for a vector).
    pub h: u16,
    /// Width; tokens = h·w.
    pub w: u16,
    /// Channels.
    pub c: u16,
    /// The first row of the map this tensor holds: a strip of a patch-based run holds rows
    /// `row0 .. row0 + h` of a taller map (the ops that read or write it know the map's height).
    /// 0 for a whole tensor; format version 2 (version 1 reserved the field as zero).
    pub row0: u16,
    /// Byte offset in the arena.
    pub arena_offset: u32,
    /// Byte length (h·w·c·dtype size).
    pub byte_len: u32,
    /// int8 or int16 scale (1.0 for fp16).
    pub scale: f32,
    /// int8 zero point (0 for fp16 and int16).
    pub zero_point: i32,
    /// Name (for `inspect` and profiles).
    pub name: StrRef,
}
const _: () = assert!(core::mem::size_of::<TensorDesc>() == 36);

impl TensorDesc {
    /// Number of elements.
    pub fn elements(&self) -> usize {
        self.h as usize * self.w as usize * self.c as usize
    }
}

/// One op of the graph.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct OpDesc {
    /// An [`OpKind`] value.
    pub kind: u16,
    /// Reserved, zero.
    pub flags: u16,
    /// Input tensors ([`NO_TENSOR`] when unused).
    pub inputs: [u16; 3],
    /// Output tensor.
    pub output: u16,
    /// Byte offset of the parameter record in PARAMS.
    pub params_offset: u32,
    /// Byte length of the parameter record.
    pub params_len: u32,
    /// Scratch range in the arena (length 0: none).
    pub scratch_offset: u32,
    /// Scratch length in bytes.
    pub scratch_len: u32,
    /// Multiply-accumulates (for reports).
    pub macs: u32,
    /// Name (for `inspect` and profiles), e.g. `layers.0.RC.PRM`.
    pub name: StrRef,
}
const _: () = assert!(core::mem::size_of::<OpDesc>() == 40);
