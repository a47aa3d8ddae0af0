//! `vitae quantize`: checkpoint + calibration data → device blob.

use std::path::PathBuf;

use clap::Args;

use vitae::calib_data::{self, ImagePrep};
use vitae::quantize::{self, CalibMethod, ImageInput, Options, Precision};
use vitae::reference::ReferenceModel;

use crate::cli::{ModelArgs, check_outputs};
use crate::numbers;
use crate::progress::Bars;

/// Arguments of `vitae quantize`.
#[derive(Debug, Args)]
#[command(
    after_help = "Calibration data is either a float32 .npy of shape (N, C, H, W), already normalized exactly\n\
like the training data, or a folder of PNG/JPEG images that are resized to the model's input\n\
size and normalized with --mean/--std (per channel, after scaling pixels to [0, 1]).\n\n\
--input u8 makes a blob that takes u8 HWC pixels (interleaved RGB or gray, as a camera or a\n\
decoded PNG gives them) and normalizes them itself with --mean/--std, folded into its input\n\
tables: the device needs no f32 copy of the image. With an image folder the same --mean/--std\n\
normalize the calibration images; with a .npy (already normalized) give the --mean/--std it\n\
was normalized with.\n\n\
The blob is written atomically: a failed run leaves no file and does not touch an existing one.\n\n\
Examples:\n  vitae quantize --checkpoint model.pth --config kwargs.json --calib calib.npy --precision int8 --out model.vblob\n  \
vitae quantize --checkpoint vitae_t.pth --arch vitae-t --calib images/ --resize 256 \\\n      \
--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --precision mixed --flash-budget 6000000 --out vitae_t.vblob\n  \
vitae quantize --checkpoint vitae_t.pth --arch vitae-t --calib calib.npy --precision mixed \\\n      \
--flash-budget 3000000 --report choices.json --out vitae_t-3mb.vblob   # int4 weights where they hurt least\n  \
vitae quantize --checkpoint model.pth --config kwargs.json --calib calib.npy --input u8 \\\n      \
--mean 0.5 --std 0.5 --out model-u8.vblob\n  \
vitae quantize --checkpoint vitae_t.pth --arch vitae-t --calib calib.npy --board stm32n6570-dk --out vitae_t-n6.vblob\n  \
vitae quantize --checkpoint vitae_t.pth --arch vitae-t --calib calib.npy --input u8 --mean 0.485,0.456,0.406 \\\n      \
--std 0.229,0.224,0.225 --board stm32h747i-disco --patch auto --out vitae_t-h7.vblob"
)]
pub struct QuantizeArgs {
    /// Checkpoint and architecture.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Calibration images: a float32 .npy (N, C, H, W) or a folder of PNG/JPEG files.
    #[arg(long, value_name = "X.npy|DIR")]
    pub calib: PathBuf,
    /// int8, fp16, int4 (int4 weights in every linear layer and convolution, int8 elsewhere),
    /// int16-residual (int8 layers, the residual stream in int16), or mixed (chosen per layer by
    /// measured sensitivity: int4 weights to meet --flash-budget or within --max-logit-error,
    /// int16 residual sums and fp16 layers where they lower the error most, int8 elsewhere).
    #[arg(long, value_enum, default_value = "int8")]
    pub precision: Precision,
    /// How activation ranges are chosen from the calibration data.
    #[arg(long, value_enum, default_value = "auto")]
    pub calib_method: CalibMethod,
    /// For --precision mixed: most bytes the blob may take (default: 1.25 × the int8 blob).
    /// Below the int8 blob's size, linear layers and convolutions get int4 weights, least sensitive first, until
    /// the blob fits.
    #[arg(long, value_name = "BYTES")]
    pub flash_budget: Option<usize>,
    /// For --precision mixed: also give linear layers and convolutions int4 weights (least
    /// sensitive first) while
    /// the logits' relative squared error against the f32 model (Σ(q−f)²/Σf² over up to 32
    /// calibration images, the number the report prints) stays within this, e.g. 1e-3.
    #[arg(long, value_name = "ERROR")]
    pub max_logit_error: Option<f64>,
    /// Use at most this many calibration images.
    #[arg(long, value_name = "N")]
    pub max_calib: Option<usize>,
    /// Image folders: resize the shorter side to this many pixels, then center-crop to the
    /// model's input size (e.g. 256 for a 224 model); default: resize straight to the input size.
    #[arg(long, value_name = "PIXELS")]
    pub resize: Option<usize>,
    /// Image folders and --input u8: per-channel mean, comma-separated, of pixels scaled to
    /// [0, 1] (default for image folders: 0.5 per channel).
    #[arg(long, value_delimiter = ',', value_name = "M,M,M")]
    pub mean: Option<Vec<f32>>,
    /// Image folders and --input u8: per-channel std, comma-separated, of pixels scaled to
    /// [0, 1] (default for image folders: 0.5 per channel).
    #[arg(long, value_delimiter = ',', value_name = "S,S,S")]
    pub std: Option<Vec<f32>>,
    /// What the device gives the model: f32 NCHW images normalized by the caller, or u8 HWC
    /// pixels that the blob normalizes with --mean/--std.
    #[arg(long, value_enum, default_value = "f32")]
    pub input: InputKind,
    /// Plan the arena for this board's memory regions (firmware/boards.rs; e.g.
    /// stm32n6570-dk): one arena part per region, fastest first, each buffer in the first region
    /// with room for it. The blob still runs anywhere with one contiguous arena.
    #[arg(long, value_name = "BOARD")]
    pub board: Option<String>,
    /// Run the first cells patch-based, in strips of rows of their output map, so no
    /// full-resolution map is ever whole in RAM (same logits, some MACs recomputed): `auto`
    /// (only when the arena does not fit the --board's regions otherwise: the smallest arena that
    /// fits for at most 15 % more MACs, else the fewest extra MACs; pass 2 recomputing q and v
    /// or reading them kept from pass 1, whichever gives that), `off`, `smallest` (the smallest
    /// arena, whatever it recomputes), a number of rows, or `ROWS:keep` (q and v kept whole from
    /// the performer's first pass: no PRM recomputed, more RAM).
    #[arg(
        long,
        value_name = "auto|off|smallest|ROWS[:keep]",
        default_value = "auto"
    )]
    pub patch: quantize::patch::Patch,
    /// Model name stored in the blob (default: the checkpoint's file stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Where to write the blob.
    #[arg(long, value_name = "MODEL.vblob")]
    pub out: PathBuf,
    /// For --precision mixed: also write the per-layer sensitivity report as JSON here.
    #[arg(long, value_name = "REPORT.json")]
    pub report: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

/// `--input`: what the device gives the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InputKind {
    /// f32 NCHW, normalized by the caller like the calibration data.
    F32,
    /// u8 HWC pixels (interleaved RGB or gray), normalized by the blob with --mean/--std.
    U8,
}

/// Runs `vitae quantize`.
pub fn run(args: QuantizeArgs) -> anyhow::Result<()> {
    let mut outputs = vec![args.out.as_path()];
    outputs.extend(args.report.as_deref());
    let mut inputs = vec![args.model.checkpoint.as_path(), args.calib.as_path()];
    inputs.extend(args.model.arch.config.as_deref());
    check_outputs(&outputs, &inputs)?;
    numbers::check_quantize_flags(&args)?;
    let board = match &args.board {
        Some(name) => {
            Some(vitae::boards::board(name).map_err(|e| crate::InputError(e.to_string()))?)
        }
        None => None,
    };
    // A .npy is already normalized: for u8 input the blob must be told how, never guess 0.5.
    if args.input == InputKind::U8
        && !args.calib.is_dir()
        && (args.mean.is_none() || args.std.is_none())
    {
        return Err(crate::InputError(format!(
            "--input u8 with the .npy calibration set {}: give --mean and --std, the per-channel normalization the .npy was made with (x = (pixel/255 - mean) / std)",
            args.calib.display()
        ))
        .into());
    }
    let (config, checkpoint) = args.model.load()?;
    let channels = config.in_chans();
    let prep = ImagePrep {
        size: config.img_size(),
        resize: args.resize,
        crop: None,
        channels,
        mean: args.mean.clone().unwrap_or_else(|| vec![0.5; channels]),
        std: args.std.clone().unwrap_or_else(|| vec![0.5; channels]),
    };
    // The checkpoint is checked against the architecture before the calibration data is read:
    // with the wrong --arch, the mismatch is the problem to report, not the images' size.
    let model = ReferenceModel::new(config, &checkpoint)?;
    // So is a float graph too large to calibrate, before minutes of reading calibration data.
    vitae::quantize::build::check_float_graph_size(&model)?;
    let images = calib_data::load(&args.calib, &prep, args.max_calib)?;
    let name = args.name.clone().unwrap_or_else(|| {
        args.model
            .checkpoint
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    });
    let input = match args.input {
        InputKind::F32 => ImageInput::F32Nchw,
        InputKind::U8 => ImageInput::U8Hwc {
            mean: prep.mean.clone(),
            std: prep.std.clone(),
        },
    };
    let options = Options {
        precision: args.precision,
        method: args.calib_method,
        flash_budget: args.flash_budget,
        max_logit_error: args.max_logit_error,
        name,
        input,
        arena_regions: board.map(|b| b.arena_regions()).unwrap_or_default(),
        patch: args.patch,
    };
    let mut bars = Bars::new(!args.no_progress);
    let q = quantize::quantize(&model, &images, &options, &mut bars).map_err(|e| {
        let e = anyhow::Error::from(e);
        match &args.board {
            Some(b) => e.context(format!("planning the arena for board {b}")),
            None => e,
        }
    })?;
    // The error names the path and the OS's reason (disk full, permissions) on its first line.
    vitae::io::write_atomic(&args.out, &q.lowered.blob)?;
    let l = &q.lowered;
    println!(
        "wrote {} ({} bytes, {}): arena {} bytes (liveness lower bound {}, {:.3}×), {} MACs, {} calibration images",
        args.out.display(),
        l.blob.len(),
        args.precision.name(),
        l.arena_len,
        l.lower_bound,
        l.arena_len as f64 / l.lower_bound.max(1) as f64,
        q.graph.macs(),
        images.len()
    );
    if let Some(p) = &l.patched {
        println!("{}", vitae::report::patch_line(p));
    }
    if let Some(m) = &q.mixed {
        println!(
            "mixed precision: logits error {:.3e} (all int8: {:.3e}); {} of {} bytes budget (all int8: {})",
            m.mixed_error, m.int8_error, m.mixed_bytes, m.budget_bytes, m.int8_bytes
        );
        println!(
            "per layer (logits error with only that layer changed: in fp16 or, for a residual add, an int16 sum / with int4 weights):"
        );
        let e = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |e| format!("{e:.3e}"));
        for l in &m.layers {
            let (upgrade, alone) = match l.error_alone_int16 {
                Some(v) => ("int16", Some(v)),
                None => ("fp16", l.error_alone_fp16),
            };
            println!(
                "  {:40} {:5}  {upgrade:5} {:>9}  int4 {:>9}  {}",
                l.name,
                l.choice.name(),
                e(alone),
                e(l.error_alone_int4),
                l.why
            );
        }
        if let Some(path) = &args.report {
            let json = serde_json::json!({
                "int8_error": m.int8_error,
                "mixed_error": m.mixed_error,
                "int8_bytes": m.int8_bytes,
                "mixed_bytes": m.mixed_bytes,
                "budget_bytes": m.budget_bytes,
                "max_logit_error": m.max_error,
                "layers": m.layers.iter().map(|l| serde_json::json!({
                    "name": l.name,
                    "precision": l.choice.name(),
                    "why": l.why,
                    "error_alone_fp16": l.error_alone_fp16,
                    "error_alone_int16": l.error_alone_int16,
                    "error_alone_int4": l.error_alone_int4,
                    "int4_saves_bytes": l.int4_saves,
                    "fp16": l.fp16(),
                })).collect::<Vec<_>>(),
            });
            vitae::io::write_atomic(path, serde_json::to_string_pretty(&json)?.as_bytes())?;
        }
    }
    Ok(())
}
