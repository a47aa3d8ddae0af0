//! The device runtime on the host: `vitae_edge::runtime` over an arena in a `Vec`, exactly the
//! code the firmware runs, so its int8 results are the device's, bit for bit.

use vitae_edge::format::{AlignedBytes, FormatError, Model};
use vitae_edge::runtime::{self, Input, NoProfiler, RunError};

/// Largest arena the host allocates for a blob: 256 MiB, far above any Cortex-M's RAM (the
/// blob format allows 4 GiB, which a crafted blob with a valid checksum may claim).
pub const MAX_HOST_ARENA: usize = 256 << 20;

/// Why a blob cannot run on the host.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The blob is malformed (everything `Model::parse` checks).
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The blob claims an arena above [`MAX_HOST_ARENA`].
    #[error(transparent)]
    Limits(#[from] HostLimitError),
}

/// A blob that is well formed but claims more than any device has.
#[derive(Debug, thiserror::Error)]
pub enum HostLimitError {
    /// The arena the header asks for.
    #[error(
        "arena of {arena_len} bytes (header, at byte offset 24) is above the {MAX_HOST_ARENA}-byte ceiling: no Cortex-M has that much RAM"
    )]
    ArenaTooLarge {
        /// `Header::arena_len`.
        arena_len: usize,
    },
    /// The claimed liveness lower bound is above the arena itself.
    #[error(
        "liveness lower bound of {lower_bound} bytes (header, at byte offset 28) is above the arena of {arena_len} bytes"
    )]
    LowerBoundAboveArena {
        /// `Header::arena_lower_bound`.
        lower_bound: usize,
        /// `Header::arena_len`.
        arena_len: usize,
    },
}

/// The host's own limits on a parsed blob, checked before anything is allocated for it or
/// printed about it.
pub fn check_host_limits(model: &Model) -> Result<(), HostLimitError> {
    let h = model.header();
    let (arena_len, lower_bound) = (h.arena_len as usize, h.arena_lower_bound as usize);
    if arena_len > MAX_HOST_ARENA {
        return Err(HostLimitError::ArenaTooLarge { arena_len });
    }
    if lower_bound > arena_len {
        return Err(HostLimitError::LowerBoundAboveArena {
            lower_bound,
            arena_len,
        });
    }
    Ok(())
}

/// A loaded blob and an arena sized by its plan.
#[derive(Debug)]
pub struct Engine {
    blob: AlignedBytes,
    arena: AlignedBytes,
}

impl Engine {
    /// Validates the blob (everything `Model::parse` checks, then [`check_host_limits`]) and
    /// allocates its arena.
    pub fn new(blob: &[u8]) -> Result<Engine, EngineError> {
        let blob = AlignedBytes::new(blob);
        let model = Model::parse(blob.as_bytes())?;
        check_host_limits(&model)?;
        let arena_len = model.arena_len();
        Ok(Engine {
            blob,
            arena: AlignedBytes::new(&vec![0u8; arena_len]),
        })
    }

    /// The parsed model (cheap: the blob was validated in `new`, parsing again re-checks it).
    pub fn model(&self) -> Model<'_> {
        Model::parse(self.blob.as_bytes()).expect("validated in Engine::new")
    }

    /// Runs every CHW image of `images` (back to back) and returns their logits (dequantized
    /// f32, `N × classes`). For a blob that takes f32 NCHW input.
    pub fn run_batch(&mut self, images: &[f32]) -> Result<Vec<f32>, RunError> {
        self.run_each(images, Input::F32Nchw)
    }

    /// Runs every HWC u8 image of `pixels` (back to back) and returns their logits. For a blob
    /// that takes u8 HWC input (`vitae quantize --input u8`).
    pub fn run_batch_u8(&mut self, pixels: &[u8]) -> Result<Vec<f32>, RunError> {
        self.run_each(pixels, Input::U8Hwc)
    }

    fn run_each<'i, T>(
        &mut self,
        images: &'i [T],
        input: impl Fn(&'i [T]) -> Input<'i>,
    ) -> Result<Vec<f32>, RunError> {
        let model = Model::parse(self.blob.as_bytes()).map_err(RunError::Format)?;
        let per = model.input_values();
        if per == 0 || !images.len().is_multiple_of(per) || images.is_empty() {
            return Err(RunError::InputSize {
                expected: per,
                got: images.len(),
            });
        }
        let classes = model.meta().num_classes as usize;
        let mut logits = Vec::with_capacity(images.len() / per * classes);
        for image in images.chunks_exact(per) {
            let out = runtime::run(
                &model,
                self.arena.as_bytes_mut(),
                input(image),
                &mut NoProfiler,
            )?;
            let mut row = vec![0.0f32; out.len()];
            out.logits_f32(&mut row);
            logits.extend(row);
        }
        Ok(logits)
    }
}
