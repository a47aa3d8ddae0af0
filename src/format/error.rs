//! Why a blob was refused, and where.

use crate::kernels::KernelError;

/// A rejected blob: what is wrong and the byte offset of the record or field that is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FormatError {
    /// What is wrong.
    pub kind: FormatErrorKind,
    /// Byte offset in the blob.
    pub offset: usize,
}

/// What is wrong with a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FormatErrorKind {
    /// Shorter than a header.
    TooShort {
        /// Bytes present.
        len: usize,
    },
    /// Does not start with the magic bytes.
    BadMagic,
    /// A format version this reader does not read.
    UnsupportedVersion {
        /// The blob's version.
        found: u16,
    },
    /// The header's own length field is wrong.
    BadHeaderLength,
    /// An arena split is not above the one before, not 16-aligned, not inside the arena, or
    /// follows a zero (see [`Header::arena_splits`](super::Header::arena_splits)).
    BadArenaSplit {
        /// The arena part the split begins.
        part: u8,
    },
    /// The header's total length disagrees with the bytes given.
    LengthMismatch {
        /// Length the header declares.
        declared: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The blob does not start at a 16-byte aligned address (weights are used in place).
    Misaligned,
    /// The checksum does not match: the blob is corrupt.
    ChecksumMismatch {
        /// Stored CRC-32.
        stored: u32,
        /// Computed CRC-32.
        computed: u32,
    },
    /// A section-table entry is out of bounds, misaligned or of an unknown kind.
    BadSection,
    /// Two sections overlap.
    SectionOverlap,
    /// A required section is missing or present twice.
    MissingOrDuplicateSection {
        /// The section kind value.
        kind: u32,
    },
    /// A section's length does not fit its record count.
    BadSectionSize,
    /// A name is out of bounds or not UTF-8.
    BadString,
    /// The model metadata is inconsistent.
    BadMeta(&'static str),
    /// A tensor record is invalid.
    BadTensor {
        /// Tensor index.
        index: u16,
        /// What is wrong.
        what: &'static str,
    },
    /// An op record is invalid.
    BadOp {
        /// Op index.
        index: u16,
        /// What is wrong.
        what: &'static str,
    },
    /// A DATA reference is out of bounds, misaligned or of the wrong length.
    BadData {
        /// Op index.
        op: u16,
        /// Which table.
        what: &'static str,
    },
    /// An op's parameters are rejected by its kernel.
    BadKernelParams {
        /// Op index.
        op: u16,
        /// The kernel's reason.
        error: KernelError,
    },
}

impl FormatError {
    pub(crate) const fn new(kind: FormatErrorKind, offset: usize) -> Self {
        FormatError { kind, offset }
    }
}

impl core::fmt::Display for FormatError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use FormatErrorKind::*;
        match &self.kind {
            TooShort { len } => write!(f, "blob too short ({len} bytes, a header alone is 64)"),
            BadMagic => write!(f, "not a ViTAE-Edge blob (bad magic)"),
            UnsupportedVersion { found } => {
                write!(
                    f,
                    "blob format version {found} is not supported (this reader reads {:?})",
                    super::SUPPORTED_VERSIONS
                )
            }
            BadHeaderLength => write!(f, "bad header length"),
            BadArenaSplit { part } => write!(
                f,
                "arena split {part} is not above the one before, 16-aligned and inside the arena"
            ),
            LengthMismatch { declared, actual } => {
                write!(
                    f,
                    "blob declares {declared} bytes but {actual} were given (truncated or padded?)"
                )
            }
            Misaligned => write!(f, "blob is not 16-byte aligned in memory"),
            ChecksumMismatch { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the blob is corrupt"
                )
            }
            BadSection => write!(f, "invalid section-table entry"),
            SectionOverlap => write!(f, "sections overlap"),
            MissingOrDuplicateSection { kind } => {
                write!(f, "section kind {kind} missing or duplicated")
            }
            BadSectionSize => write!(f, "section length does not match its record count"),
            BadString => write!(f, "invalid name reference"),
            BadMeta(what) => write!(f, "invalid model metadata: {what}"),
            BadTensor { index, what } => write!(f, "tensor {index}: {what}"),
            BadOp { index, what } => write!(f, "op {index}: {what}"),
            BadData { op, what } => write!(f, "op {op}: data reference `{what}` is invalid"),
            BadKernelParams { op, error } => write!(f, "op {op}: {error}"),
        }?;
        write!(f, " (at byte offset {})", self.offset)
    }
}

impl core::error::Error for FormatError {}
