//! The device runtime on the host: `vitae_edge::runtime` over an arena in a `Vec`, exactly the
//! code the firmware runs, so its int8 results are the device's, bit for bit.
//!
//! A batch is split into contiguous runs of images, one per worker thread, each with its own
//! arena. Every image is one independent `runtime::run` whatever thread runs it, so the logits
//! do not depend on the thread count: bit-identical by construction.

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

/// A batch of images that does not fit a model's input. `name` is where the images came from
/// (a file, or the argument of a Python call).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// f32 images of the wrong shape.
    #[error("{name}: input shape {shape:?} does not fit the model: expected (N, {c}, {h}, {w})")]
    Shape {
        /// Where the images came from.
        name: String,
        /// The shape given.
        shape: Vec<usize>,
        /// Channels, height, width the model takes.
        c: usize,
        /// See `c`.
        h: usize,
        /// See `c`.
        w: usize,
    },
    /// u8 pixels of the wrong shape.
    #[error(
        "{name}: input shape {shape:?} does not fit the model: expected u8 pixels (N, {h}, {w}, {c})"
    )]
    PixelShape {
        /// Where the pixels came from.
        name: String,
        /// The shape given.
        shape: Vec<usize>,
        /// Channels, height, width the model takes.
        c: usize,
        /// See `c`.
        h: usize,
        /// See `c`.
        w: usize,
    },
    /// No images.
    #[error("{name}: the batch is empty (N = 0)")]
    Empty {
        /// Where the images came from.
        name: String,
    },
    /// A value is NaN or infinite.
    #[error("{name}: value {index} is {value} (not finite)")]
    NotFinite {
        /// Where the images came from.
        name: String,
        /// Index of the first such value (C order).
        index: usize,
        /// The value.
        value: f32,
    },
}

/// The batch size of f32 images of `shape`, `(N, C, H, W)` or `(C, H, W)` for a model taking
/// `c × h × w`, with `values` all finite; `name` is where they came from.
pub fn f32_batch(
    name: &str,
    shape: &[usize],
    values: &[f32],
    (c, h, w): (usize, usize, usize),
) -> Result<usize, BatchError> {
    let batch = match shape {
        [n, ch, hh, ww] if (*ch, *hh, *ww) == (c, h, w) => *n,
        [ch, hh, ww] if (*ch, *hh, *ww) == (c, h, w) => 1,
        shape => {
            return Err(BatchError::Shape {
                name: name.into(),
                shape: shape.to_vec(),
                c,
                h,
                w,
            });
        }
    };
    if batch == 0 {
        return Err(BatchError::Empty { name: name.into() });
    }
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(BatchError::NotFinite {
            name: name.into(),
            index,
            value: values[index],
        });
    }
    Ok(batch)
}

/// The batch size of u8 pixels of `shape`, `(N, H, W, C)` or `(H, W, C)` for a model taking
/// `c × h × w`; `name` is where they came from.
pub fn u8_batch(
    name: &str,
    shape: &[usize],
    (c, h, w): (usize, usize, usize),
) -> Result<usize, BatchError> {
    let batch = match shape {
        [n, hh, ww, ch] if (*hh, *ww, *ch) == (h, w, c) => *n,
        [hh, ww, ch] if (*hh, *ww, *ch) == (h, w, c) => 1,
        shape => {
            return Err(BatchError::PixelShape {
                name: name.into(),
                shape: shape.to_vec(),
                c,
                h,
                w,
            });
        }
    };
    if batch == 0 {
        return Err(BatchError::Empty { name: name.into() });
    }
    Ok(batch)
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

/// A loaded blob and one arena (sized by its plan) per worker thread.
#[derive(Debug)]
pub struct Engine {
    blob: AlignedBytes,
    /// One per worker; the first is allocated by [`Engine::new`], the others on first use.
    arenas: Vec<AlignedBytes>,
    /// Worker threads for a batch (at least 1).
    threads: usize,
}

/// Worker threads a new [`Engine`] uses: one per core the process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
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
            arenas: vec![AlignedBytes::new(&vec![0u8; arena_len])],
            threads: default_threads(),
        })
    }

    /// Runs batches on at most `threads` worker threads (1: in the calling thread). The logits
    /// are the same for every count.
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    /// The worker threads a batch may use.
    pub fn threads(&self) -> usize {
        self.threads
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

    fn run_each<'i, T: Sync>(
        &mut self,
        images: &'i [T],
        input: impl Fn(&'i [T]) -> Input<'i> + Sync,
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
        let n = images.len() / per;
        let workers = self.threads.min(n);
        let arena_len = model.arena_len();
        while self.arenas.len() < workers {
            self.arenas.push(AlignedBytes::new(&vec![0u8; arena_len]));
        }
        let mut logits = vec![0.0f32; n * classes];
        // Contiguous runs of images, the first `n % workers` one image longer.
        let (base, extra) = (n / workers, n % workers);
        let mut jobs = Vec::with_capacity(workers);
        let (mut images_left, mut logits_left) = (images, logits.as_mut_slice());
        for (w, arena) in self.arenas.iter_mut().take(workers).enumerate() {
            let count = base + usize::from(w < extra);
            let (x, rest_x) = images_left.split_at(count * per);
            let (y, rest_y) = logits_left.split_at_mut(count * classes);
            (images_left, logits_left) = (rest_x, rest_y);
            jobs.push((x, y, arena));
        }
        let run_images = |(x, y, arena): (&'i [T], &mut [f32], &mut AlignedBytes)| {
            for (image, row) in x.chunks_exact(per).zip(y.chunks_exact_mut(classes)) {
                let out =
                    runtime::run(&model, arena.as_bytes_mut(), input(image), &mut NoProfiler)?;
                out.logits_f32(row);
            }
            Ok::<(), RunError>(())
        };
        if workers == 1 {
            jobs.into_iter().try_for_each(run_images)?;
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = jobs
                    .into_iter()
                    .map(|job| scope.spawn(|| run_images(job)))
                    .collect();
                // Every worker is joined; the first error (in image order) is returned.
                let results: Vec<_> = handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect();
                results.into_iter().collect::<Result<(), RunError>>()
            })?;
        }
        Ok(logits)
    }
}
