//! Post-training quantization: the float graph, calibration, mixed-precision selection and the
//! lowering to a blob.

pub mod build;
pub mod calib;
pub mod gptq;
pub mod graph;
pub mod lower;
pub mod mixed;
pub mod patch;
pub mod plan;

pub use calib::{CalibMethod, Calibration};
pub use graph::Graph;
pub use lower::{Lowered, NodePrecision};

use crate::reference::ReferenceModel;

/// Weight and activation precision of the whole model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    /// Every layer int8.
    Int8,
    /// Every layer fp16.
    Fp16,
    /// int8 activations; every linear layer's and convolution's weights int4 (half the flash of
    /// int8 weights).
    Int4,
    /// int8 layers, with the residual stream in int16: every residual add's sum is int16
    /// (symmetric), LayerNorms read it as is and the other layers through a requantization.
    /// Same flash as int8; the arena grows by the int16 tensors.
    Int16Residual,
    /// Chosen per layer by measured sensitivity: int4 weights where needed to meet the flash
    /// budget or allowed by `--max-logit-error`, int16 sums of residual adds and fp16 layers
    /// where they lower the error most within the budget, int8 elsewhere.
    Mixed,
}

impl Precision {
    /// The name `--precision` takes, which file names and reports use too.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Int8 => "int8",
            Precision::Fp16 => "fp16",
            Precision::Int4 => "int4",
            Precision::Int16Residual => "int16-residual",
            Precision::Mixed => "mixed",
        }
    }
}

/// What the device is given as the image.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum ImageInput {
    /// f32 NCHW, normalized by the caller exactly like the calibration data.
    #[default]
    F32Nchw,
    /// u8 HWC pixels, as a camera or a decoded PNG gives them: the blob normalizes each pixel
    /// `p` of channel `c` as `(p / 255 − mean[c]) / std[c]` through a 256-entry table per
    /// channel (the same f32 arithmetic as an image folder's calibration data gets).
    U8Hwc {
        /// Per-channel mean (pixels scaled to [0, 1]).
        mean: Vec<f32>,
        /// Per-channel standard deviation (pixels scaled to [0, 1]).
        std: Vec<f32>,
    },
}

impl ImageInput {
    /// The normalized value of pixel `p` (0..=255) of channel `c`: `(p / 255 − mean) / std` in
    /// f32, as `calib_data` normalizes image folders. `None` for f32 input.
    pub fn normalized(&self, c: usize, p: u8) -> Option<f32> {
        match self {
            ImageInput::F32Nchw => None,
            ImageInput::U8Hwc { mean, std } => Some((p as f32 / 255.0 - mean[c]) / std[c]),
        }
    }
}

/// Options of [`quantize`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Precision.
    pub precision: Precision,
    /// Calibration method.
    pub method: CalibMethod,
    /// Most blob bytes `mixed` may use (default: 1.25 × the int8 blob).
    pub flash_budget: Option<usize>,
    /// For `mixed`: the largest logits error (relative squared error against the f32 model) int4
    /// weights may bring; without it, int4 is used only to meet the flash budget.
    pub max_logit_error: Option<f64>,
    /// Model name stored in the blob.
    pub name: String,
    /// What the device is given as the image (the blob's first op).
    pub input: ImageInput,
    /// The memory regions the arena is planned into, fastest first, one arena part each (a
    /// board's arena regions, `--board`); empty: one contiguous arena.
    pub arena_regions: Vec<plan::Region>,
    /// Whether the first cells run in strips (patch-based), and how tall.
    pub patch: patch::Patch,
}

/// Progress of a long step, for a progress bar.
pub trait Progress {
    /// A new step with `total` units of work.
    fn begin(&mut self, what: &str, total: usize);
    /// `done` of `total` units finished.
    fn advance(&mut self, done: usize);
    /// The step finished.
    fn end(&mut self);
}

/// A [`Progress`] that reports nothing.
#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&mut self, _: &str, _: usize) {}
    fn advance(&mut self, _: usize) {}
    fn end(&mut self) {}
}

/// Why quantization failed.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// No calibration images.
    #[error("the calibration set is empty: give at least one image")]
    NoCalibration,
    /// A calibration image has the wrong size.
    #[error(
        "calibration image {index} has {found} values, the model takes {expected} ({channels}x{size}x{size})"
    )]
    CalibrationSize {
        /// Image index.
        index: usize,
        /// Values found.
        found: usize,
        /// Values expected.
        expected: usize,
        /// Channels.
        channels: usize,
        /// Height = width.
        size: usize,
    },
    /// A calibration image contains NaN or infinity.
    #[error("calibration image {0} contains NaN or infinite values")]
    CalibrationNotFinite(usize),
    /// Evaluating the float graph failed (a bug).
    #[error("internal error in the float graph: {0}")]
    Float(#[from] crate::reference::ops::OpError),
    /// Lowering failed.
    #[error(transparent)]
    Lower(#[from] lower::LowerError),
    /// The float graph is too large to calibrate.
    #[error(transparent)]
    FloatGraphTooLarge(#[from] build::FloatGraphTooLarge),
    /// u8 input needs one mean and one std per image channel.
    #[error(
        "u8 input: --mean and --std need {channels} value(s) each (one per image channel), got {means} and {stds}"
    )]
    PixelNormalization {
        /// Image channels.
        channels: usize,
        /// Means given.
        means: usize,
        /// Stds given.
        stds: usize,
    },
    /// `mixed` cannot meet the flash budget.
    #[error(transparent)]
    Budget(#[from] mixed::BudgetTooSmall),
    /// Running a candidate blob failed (a bug).
    #[error("internal error running the quantized model: {0}")]
    Run(String),
}

/// A quantized model.
#[derive(Clone, Debug)]
pub struct Quantized {
    /// The blob and its plan.
    pub lowered: Lowered,
    /// For `mixed`: what each layer got, and why.
    pub mixed: Option<mixed::MixedReport>,
    /// Per-node precision used.
    pub precision: Vec<NodePrecision>,
    /// The float graph (for reports).
    pub graph: Graph,
}

/// Quantizes `model` with `calib_images` (CHW f32 each, normalized like the training data).
pub fn quantize(
    model: &ReferenceModel,
    calib_images: &[Vec<f32>],
    options: &Options,
    progress: &mut dyn Progress,
) -> Result<Quantized, QuantizeError> {
    let cfg = model.config();
    if calib_images.is_empty() {
        return Err(QuantizeError::NoCalibration);
    }
    for (index, img) in calib_images.iter().enumerate() {
        if img.len() != cfg.input_len() {
            return Err(QuantizeError::CalibrationSize {
                index,
                found: img.len(),
                expected: cfg.input_len(),
                channels: cfg.in_chans(),
                size: cfg.img_size(),
            });
        }
        if img.iter().any(|x| !x.is_finite()) {
            return Err(QuantizeError::CalibrationNotFinite(index));
        }
    }
    if let ImageInput::U8Hwc { mean, std } = &options.input
        && (mean.len() != cfg.in_chans() || std.len() != cfg.in_chans())
    {
        return Err(QuantizeError::PixelNormalization {
            channels: cfg.in_chans(),
            means: mean.len(),
            stds: std.len(),
        });
    }
    let graph = build::build_graph(model, &options.name)?;
    progress.begin("calibrating", 2 * calib_images.len());
    let mut calib =
        Calibration::collect(&graph, calib_images, &mut |done, _| progress.advance(done))?;
    progress.end();
    if matches!(options.precision, Precision::Int4 | Precision::Mixed) {
        progress.begin("input correlations for int4 rounding", 1);
        calib.collect_grams(&graph, calib_images)?;
        progress.end();
    }
    let n = graph.nodes.len();
    let (precision, mixed) = match options.precision {
        Precision::Int8 => (vec![NodePrecision::Int8; n], None),
        Precision::Fp16 => (vec![NodePrecision::Fp16; n], None),
        Precision::Int4 => (vec![NodePrecision::Int4; n], None),
        Precision::Int16Residual => {
            let add = |k: &graph::NodeKind| matches!(k, graph::NodeKind::Add);
            let p = graph.nodes.iter().map(|node| {
                if add(&node.kind) {
                    NodePrecision::Int16
                } else {
                    NodePrecision::Int8
                }
            });
            (p.collect(), None)
        }
        Precision::Mixed => {
            let (p, report) = mixed::select(&graph, &calib, options, calib_images, progress)?;
            (p, Some(report))
        }
    };
    let lowered = lower::lower(
        &graph,
        &calib,
        &precision,
        options.method,
        &options.input,
        &options.arena_regions,
        options.patch,
    )?;
    Ok(Quantized {
        lowered,
        mixed,
        precision,
        graph,
    })
}
