//! Putting a model into your own firmware: the blob embedded at build time with
//! [`include_model!`](crate::include_model), its arena as a static of the size the blob's plan
//! needs ([`Arena`]).
//!
//! The arena size is read from the blob's header when the firmware is compiled (a `const fn`
//! over the included bytes), so the arena is an ordinary static sized exactly for the model, and
//! a file that is not a blob is a compile error, not a fault on the device. The rest of the blob
//! (checksum, every section, every op) is validated once at run time by
//! [`EmbeddedModel::parse`], before anything runs.

use crate::format::{self, FormatError, FormatErrorKind, Header, Model};

/// A value stored at a 16-byte aligned address: the alignment the blob's weights are used at
/// in place ([`format::ALIGN`]). [`include_model!`](crate::include_model) wraps the included
/// bytes in it.
#[repr(C, align(16))]
#[derive(Debug)]
pub struct Align16<T: ?Sized>(pub T);

const _: () = assert!(core::mem::align_of::<Align16<u8>>() == format::ALIGN);

/// A blob embedded in the firmware by [`include_model!`](crate::include_model): its bytes, 16-byte
/// aligned, and its header, checked when the firmware was compiled.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddedModel {
    bytes: &'static [u8],
    header: Header,
}

impl EmbeddedModel {
    /// Checks the header of `bytes` at compile time (when called in a `const` context, as
    /// [`include_model!`](crate::include_model) does) and keeps them.
    ///
    /// # Panics
    ///
    /// When `bytes` do not start with a valid blob header of their own length (see
    /// [`format::read_header`]), or do not start at a 16-byte aligned address; in a `const`
    /// context that is a compile error naming the reason.
    pub const fn from_static(bytes: &'static [u8]) -> EmbeddedModel {
        let header = match format::read_header(bytes) {
            Ok(h) => h,
            Err(e) => panic!("{}", header_error(e)),
        };
        EmbeddedModel { bytes, header }
    }

    /// Arena bytes the blob's plan needs: the `N` of the [`Arena`] to run it in.
    pub const fn arena_len(&self) -> usize {
        self.header.arena_len as usize
    }

    /// Parts the blob's plan splits its arena into (1 unless it was planned for a board whose
    /// memory is split into regions: `vitae quantize --board`).
    pub const fn arena_parts(&self) -> usize {
        self.header.arena_parts()
    }

    /// Bytes of arena part `i`: the `N` of the [`Arena`] for that part (0 past the last part).
    /// Give the parts to [`Runner::with_parts`](crate::Runner::with_parts) in order.
    pub const fn arena_part_len(&self, i: usize) -> usize {
        self.header.arena_part_len(i)
    }

    /// The blob's bytes (16-byte aligned).
    pub const fn bytes(&self) -> &'static [u8] {
        self.bytes
    }

    /// The blob's header.
    pub const fn header(&self) -> &Header {
        &self.header
    }

    /// Validates the whole blob (checksum, sections, tensors, every op) and returns the model to
    /// run. Call it once at start-up; the [`Model`] it returns is `Copy` and borrows the
    /// embedded bytes.
    pub fn parse(&self) -> Result<Model<'static>, FormatError> {
        Model::parse(self.bytes)
    }
}

/// The compile-time message for a header [`format::read_header`] refused.
const fn header_error(e: FormatError) -> &'static str {
    match e.kind {
        FormatErrorKind::TooShort { .. } => {
            "include_model!: the file is shorter than a blob header: not a ViTAE-Edge blob"
        }
        FormatErrorKind::BadMagic => {
            "include_model!: the file does not start with VITAEBLB: not a ViTAE-Edge blob"
        }
        FormatErrorKind::UnsupportedVersion { .. } => {
            "include_model!: the blob's format version is not one this vitae-edge reads (format::SUPPORTED_VERSIONS): re-quantize it with the matching `vitae`"
        }
        FormatErrorKind::LengthMismatch { .. } => {
            "include_model!: the blob's header declares another length than the file has: truncated or padded"
        }
        _ => "include_model!: invalid blob header",
    }
}

/// Embeds a model blob (a `.vblob` written by `vitae quantize`) in the firmware, 16-byte aligned,
/// and evaluates to an [`EmbeddedModel`](crate::embed::EmbeddedModel) whose
/// [`arena_len`](crate::embed::EmbeddedModel::arena_len) is a constant read from the blob's
/// header at compile time.
///
/// The path is resolved like `include_bytes!`'s (relative to the file that invokes the macro;
/// `concat!(env!("OUT_DIR"), "/model.vblob")` works too). A file that is not a blob, or a blob of
/// a format version this crate does not read, is a compile error. An optional
/// `link_section = "…"` puts the bytes in a section of your linker script (a blob larger than the
/// flash next to the code, e.g. in external memory).
///
/// ```
/// use vitae_edge::{Arena, EmbeddedModel, Input, NoProfiler, include_model};
///
/// // A tiny model (8×8 pixels, 2 channels, 2 classes) from the repository's fuzz seeds.
/// const MODEL: EmbeddedModel = include_model!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz/seeds/blob/transformer-int8.vblob"));
///
/// # fn main() -> Result<(), vitae_edge::RunError> {
/// // In firmware, `static mut ARENA: Arena<{ MODEL.arena_len() }> = Arena::new();` at the top of
/// // the `#[cortex_m_rt::entry]` function is a safe `&'static mut` (see firmware/examples).
/// let mut arena = Arena::<{ MODEL.arena_len() }>::new();
/// let model = MODEL.parse()?; // the whole blob validated, once
/// let image = [0.25f32; 2 * 8 * 8]; // C × H × W, normalized like the training data
/// let logits = vitae_edge::run(&model, arena.as_mut_slice(), Input::F32Nchw(&image), &mut NoProfiler)?;
/// assert_eq!(logits.len(), 2);
/// # Ok(())
/// # }
/// ```
///
/// A file that is not a blob does not compile:
///
/// ```compile_fail,E0080
/// const MODEL: vitae_edge::EmbeddedModel = vitae_edge::include_model!("lib.rs");
/// # fn main() { let _ = MODEL; }
/// ```
#[macro_export]
macro_rules! include_model {
    ($path:expr $(,)?) => {{
        static ALIGNED: $crate::embed::Align16<[u8; ::core::include_bytes!($path).len()]> =
            $crate::embed::Align16(*::core::include_bytes!($path));
        const { $crate::embed::EmbeddedModel::from_static(&ALIGNED.0) }
    }};
    ($path:expr, link_section = $section:literal $(,)?) => {{
        #[unsafe(link_section = $section)]
        static ALIGNED: $crate::embed::Align16<[u8; ::core::include_bytes!($path).len()]> =
            $crate::embed::Align16(*::core::include_bytes!($path));
        const { $crate::embed::EmbeddedModel::from_static(&ALIGNED.0) }
    }};
}

/// The activation arena of one model: `N` bytes at a 16-byte aligned address, as
/// [`run`](crate::run) and [`Runner`](crate::Runner) require. Size it with the model's
/// [`EmbeddedModel::arena_len`] (or [`Model::arena_len`] for a blob that arrives at run time and
/// lives on a heap; see the loader example).
///
/// `Arena::new()` is a `const fn` of zeros, so a `static` arena goes to `.bss` and costs no
/// flash.
#[repr(C, align(16))]
#[derive(Debug)]
pub struct Arena<const N: usize>([u8; N]);

impl<const N: usize> Arena<N> {
    /// A zeroed arena (the runtime never reads arena bytes it has not written).
    pub const fn new() -> Self {
        Arena([0; N])
    }

    /// Its bytes, for [`run`](crate::run) or [`Runner::new`](crate::Runner::new).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.0
    }

    /// `N`.
    pub const fn len(&self) -> usize {
        N
    }

    /// True for a zero-byte arena.
    pub const fn is_empty(&self) -> bool {
        N == 0
    }
}

impl<const N: usize> Default for Arena<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_is_aligned_and_sized() {
        let a = Arena::<40>::new();
        assert_eq!(core::mem::align_of_val(&a), 16);
        assert_eq!(a.len(), 40);
        assert_eq!((&a as *const Arena<40>).align_offset(16), 0);
    }

    #[test]
    fn embedded_bytes_are_aligned_and_the_arena_comes_from_the_header() {
        const M: EmbeddedModel = crate::include_model!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fuzz/seeds/blob/transformer-int8.vblob"
        ));
        assert_eq!(M.bytes().as_ptr().align_offset(16), 0);
        let header = format::read_header(M.bytes()).unwrap();
        assert_eq!(M.arena_len(), header.arena_len as usize);
        assert!(M.arena_len() > 0);
        let model = M.parse().unwrap();
        assert_eq!(model.arena_len(), M.arena_len());
    }

    #[test]
    fn compile_time_messages_name_the_problem() {
        let e = format::read_header(b"not a blob at all, just some text").unwrap_err();
        assert!(header_error(e).contains("shorter than a blob header"));
        let e = format::read_header(&[b'x'; 64]).unwrap_err();
        assert!(header_error(e).contains("VITAEBLB"));
    }
}
