//! `vitae run`: logits of `.npy` images, from the f32 reference model (checkpoint) or from a
//! quantized blob through the device kernels.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use vitae::engine::{Engine, f32_batch, u8_batch};
use vitae::io::{InputKind, read_file};
use vitae::npy::{NpyData, read_npy, read_npy_f32, write_npy_f32};
use vitae::reference::{NoObserver, ReferenceModel};
use vitae_edge::runtime::ImageLayout;

use crate::InputError;
use crate::cli::check_outputs;

/// Arguments of `vitae run`.
#[derive(Debug, Args)]
#[command(
    after_help = "With --model, the blob runs on the host through the very kernels the firmware runs: int8\n\
                  results are bit-identical to the device's, so two engines agree iff their output files are\n\
                  identical (int8 logits are written dequantized to float32). With --checkpoint, the f32\n\
                  reference model runs.\n\n\
                  The input is float32 NCHW (already resized and normalised exactly as for training);\n\
                  the output is float32 (N, num_classes), written atomically (an existing file is only\n\
                  replaced when the run succeeds).\n\n\
                  Examples:\n  vitae run --model model.vblob --input x.npy --out logits.npy\n  \
                  vitae run --checkpoint model.pth --arch vitae-t --input batch.npy --out logits.npy\n  \
                  vitae run --checkpoint model.safetensors --config kwargs.json --input x.npy --out y.npy"
)]
pub struct RunArgs {
    /// A quantized blob (from `vitae quantize`): run the device kernels.
    #[arg(long, value_name = "MODEL.vblob", conflicts_with_all = ["checkpoint", "config", "arch"])]
    pub model: Option<PathBuf>,
    /// Weights for the f32 reference: a torch.save(state_dict) file (.pth) or .safetensors.
    #[arg(long, value_name = "FILE", required_unless_present = "model")]
    pub checkpoint: Option<PathBuf>,
    /// With --checkpoint: `ViTAE_ViT_basic` keyword arguments as a flat JSON object.
    #[arg(long, value_name = "KWARGS.json", conflicts_with = "arch")]
    pub config: Option<PathBuf>,
    /// With --checkpoint: a preset architecture (vitae-t, vitae-6m, vitae-13m, vitae-s).
    #[arg(long, value_name = "NAME")]
    pub arch: Option<String>,
    /// Images: float32 .npy of shape (N, C, H, W) (or (C, H, W) for one image); for a blob
    /// quantized with --input u8, uint8 pixels of shape (N, H, W, C) (or (H, W, C)).
    #[arg(long, value_name = "X.npy")]
    pub input: PathBuf,
    /// Where to write the logits (float32 .npy, shape (N, num_classes)).
    #[arg(long, value_name = "LOGITS.npy")]
    pub out: PathBuf,
}

/// Reads the u8 images of a blob that takes pixels: a uint8 .npy of shape (N, H, W, C) or
/// (H, W, C). Returns the pixels and the batch size.
fn read_pixels(path: &Path, h: usize, w: usize, c: usize) -> anyhow::Result<(Vec<u8>, usize)> {
    let array = read_npy(path)?;
    let NpyData::U8(pixels) = array.data else {
        return Err(InputError(format!(
            "{}: the model takes u8 pixels (it was quantized with --input u8): expected a uint8 .npy of shape (N, {h}, {w}, {c}), got {}",
            path.display(),
            array.dtype().name()
        ))
        .into());
    };
    let batch = u8_batch(&path.display().to_string(), &array.shape, (c, h, w))?;
    Ok((pixels, batch))
}

/// Runs `vitae run`.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let inputs: Vec<&Path> = [&args.model, &args.checkpoint, &args.config]
        .into_iter()
        .flatten()
        .map(PathBuf::as_path)
        .chain([args.input.as_path()])
        .collect();
    check_outputs(&[&args.out], &inputs)?;
    let name = args.input.display().to_string();
    let (logits, batch, classes) = if let Some(blob_path) = &args.model {
        let bytes = read_file(blob_path, InputKind::Blob)?;
        let mut engine =
            Engine::new(&bytes).map_err(|e| InputError(format!("{}: {e}", blob_path.display())))?;
        let meta = *engine.model().meta();
        let layout = engine.model().image_layout();
        let (c, h, w) = (
            meta.input_channels as usize,
            meta.input_height as usize,
            meta.input_width as usize,
        );
        let (logits, batch) = if layout == ImageLayout::U8Hwc {
            let (pixels, batch) = read_pixels(&args.input, h, w, c)?;
            (engine.run_batch_u8(&pixels)?, batch)
        } else {
            let input = read_npy_f32(&args.input)?;
            let batch = f32_batch(&name, &input.shape, &input.data, (c, h, w))?;
            (engine.run_batch(&input.data)?, batch)
        };
        (logits, batch, meta.num_classes as usize)
    } else {
        let Some(checkpoint_path) = &args.checkpoint else {
            return Err(InputError(
                "give --model MODEL.vblob, or --checkpoint FILE with --config/--arch".into(),
            )
            .into());
        };
        let config = crate::cli::checkpoint_arch(args.config.as_deref(), args.arch.as_deref())?;
        let checkpoint = vitae::checkpoint::load_checkpoint(checkpoint_path)?;
        // Checkpoint against architecture first: with the wrong --arch that is the problem.
        let model = ReferenceModel::new(config, &checkpoint)?;
        let input = read_npy_f32(&args.input)?;
        let size = model.config().img_size();
        let batch = f32_batch(
            &name,
            &input.shape,
            &input.data,
            (model.config().in_chans(), size, size),
        )?;
        let logits = model.forward_batch(&input.data, &mut NoObserver)?;
        (logits, batch, model.config().output_dim())
    };
    write_npy_f32(&args.out, &[batch, classes], &logits)?;
    let top1: Vec<String> = logits
        .chunks_exact(classes)
        .take(8)
        .map(|row| vitae::eval::argmax(row).to_string())
        .collect();
    let more = if batch > 8 { ", ..." } else { "" };
    writeln!(
        std::io::stdout().lock(),
        "wrote {} ({batch} x {classes}); top-1 class per image: {}{more}",
        args.out.display(),
        top1.join(", ")
    )?;
    Ok(())
}
