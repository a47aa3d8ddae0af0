//! `vitae run`: the f32 reference model on `.npy` images.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use vitae::npy::{read_npy_f32, write_npy_f32};
use vitae::reference::{NoObserver, ReferenceModel};

use crate::InputError;
use crate::cli::{ModelArgs, check_output_path};

/// Arguments of `vitae run`.
#[derive(Debug, Args)]
#[command(
    after_help = "The input is float32 NCHW (already resized and normalised exactly as for PyTorch);\n\
                        the output is float32 (N, num_classes), written atomically (an existing file is only\n\
                        replaced when the run succeeds).\n\n\
                        Examples:\n  vitae run --checkpoint model.pth --arch vitae-t --input batch.npy --out logits.npy\n  \
                        vitae run --checkpoint model.safetensors --config kwargs.json --input x.npy --out y.npy"
)]
pub struct RunArgs {
    /// Checkpoint and architecture.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Images: float32 .npy of shape (N, C, H, W) (or (C, H, W) for one image).
    #[arg(long, value_name = "X.npy")]
    pub input: PathBuf,
    /// Where to write the logits (float32 .npy, shape (N, num_classes)).
    #[arg(long, value_name = "LOGITS.npy")]
    pub out: PathBuf,
}

/// Runs `vitae run`.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    check_output_path(&args.out)?;
    let (config, checkpoint) = args.model.load()?;
    let input = read_npy_f32(&args.input)?;
    let (c, size) = (config.in_chans(), config.img_size());
    let batch = match input.shape.as_slice() {
        [n, ch, h, w] if *ch == c && *h == size && *w == size => *n,
        [ch, h, w] if *ch == c && *h == size && *w == size => 1,
        shape => {
            return Err(InputError(format!(
                "{}: input shape {shape:?} does not fit the model: expected (N, {c}, {size}, {size})",
                args.input.display()
            ))
            .into());
        }
    };
    if batch == 0 {
        return Err(InputError(format!(
            "{}: the batch is empty (N = 0)",
            args.input.display()
        ))
        .into());
    }
    if let Some(index) = input.data.iter().position(|v| !v.is_finite()) {
        return Err(InputError(format!(
            "{}: value {index} is {} (not finite)",
            args.input.display(),
            input.data[index]
        ))
        .into());
    }
    let model = ReferenceModel::new(config, &checkpoint)?;
    let logits = model.forward_batch(&input.data, &mut NoObserver)?;
    let classes = model.config().num_classes();
    write_npy_f32(&args.out, &[batch, classes], &logits)?;
    let top1: Vec<String> = logits
        .chunks_exact(classes)
        .take(8)
        .map(|row| {
            let best = row
                .iter()
                .enumerate()
                .fold(0, |best, (i, v)| if *v > row[best] { i } else { best });
            best.to_string()
        })
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
