//! The device runtime on the host: `vitae_edge::runtime` over an arena in a `Vec`, exactly the
//! code the firmware runs, so its int8 results are the device's, bit for bit.

use vitae_edge::format::{AlignedBytes, FormatError, Model};
use vitae_edge::runtime::{self, Input, NoProfiler, RunError};

/// A loaded blob and an arena sized by its plan.
#[derive(Debug)]
pub struct Engine {
    blob: AlignedBytes,
    arena: AlignedBytes,
}

impl Engine {
    /// Validates the blob (everything `Model::parse` checks) and allocates its arena.
    pub fn new(blob: &[u8]) -> Result<Engine, FormatError> {
        let blob = AlignedBytes::new(blob);
        let arena_len = Model::parse(blob.as_bytes())?.arena_len();
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
    /// f32, `N × classes`).
    pub fn run_batch(&mut self, images: &[f32]) -> Result<Vec<f32>, RunError> {
        let model = Model::parse(self.blob.as_bytes()).map_err(RunError::Format)?;
        let m = model.meta();
        let per = m.input_channels as usize * m.input_height as usize * m.input_width as usize;
        if per == 0 || images.len() % per != 0 || images.is_empty() {
            return Err(RunError::InputSize {
                expected: per,
                got: images.len(),
            });
        }
        let mut logits = Vec::with_capacity(images.len() / per * m.num_classes as usize);
        for image in images.chunks_exact(per) {
            let out = runtime::run(
                &model,
                self.arena.as_bytes_mut(),
                Input::F32Nchw(image),
                &mut NoProfiler,
            )?;
            let mut row = vec![0.0f32; out.len()];
            out.logits_f32(&mut row);
            logits.extend(row);
        }
        Ok(logits)
    }
}
