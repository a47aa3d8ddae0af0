//! `vitae check`: validate a checkpoint against an architecture.

use std::io::Write;

use clap::Args;

use vitae::text::escape;
use vitae::validate::{check_checkpoint, expected_state_dict};

use crate::cli::ModelArgs;

/// Arguments of `vitae check`.
#[derive(Debug, Args)]
#[command(
    after_help = "Lists every missing, unexpected and misshaped tensor and every NaN/Inf weight, one per line;\n\
                        exits 2 if there is any.\n\n\
                        Examples:\n  vitae check --checkpoint ViTAE-T.pth.tar --arch vitae-t\n  \
                        vitae check --checkpoint model.safetensors --config kwargs.json"
)]
pub struct CheckArgs {
    /// Checkpoint and architecture.
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Runs `vitae check`.
pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let (config, checkpoint) = args.model.load()?;
    // Where the releases differ, the checkpoint's keys decide (see vitae::config::ModelConfig).
    let config = config.for_checkpoint(&checkpoint);
    check_checkpoint(&config, &checkpoint)?;
    let expected = expected_state_dict(&config);
    let mut stdout = std::io::stdout().lock();
    // Paths and the release reason come from the user's files: escaped for the terminal.
    writeln!(
        stdout,
        "ok: {} matches {}",
        escape(&checkpoint.origin.to_string()),
        escape(config.source_name())
    )?;
    writeln!(
        stdout,
        "  {} tensors ({} float, {} integer) as expected; no NaN/Inf",
        checkpoint.dtypes.len(),
        checkpoint.tensors.len(),
        checkpoint.int_tensors.len()
    )?;
    if let Some(release) = config.release() {
        writeln!(
            stdout,
            "  the model of {} ({})",
            release.name(),
            escape(config.release_reason())
        )?;
    }
    let missing_counters = expected
        .iter()
        .filter(|e| checkpoint.shape(&e.key).is_none())
        .count();
    if missing_counters > 0 {
        writeln!(
            stdout,
            "  note: {missing_counters} BatchNorm num_batches_tracked counters absent (not needed for inference)"
        )?;
    }
    Ok(())
}
