//! Command-line definition. Each subcommand lives in its own `cmd/<name>.rs` with an `Args`
//! struct (clap derive) and `fn run(args) -> anyhow::Result<()>`; adding one means a file there
//! plus one variant in [`Command`] and one arm in [`Command::run`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use vitae::checkpoint::{Checkpoint, load_checkpoint};
use vitae::config::{ModelConfig, PRESETS};

use crate::cmd;

/// ViTAE-Edge host tool: official ViTAE checkpoints -> f32 reference -> device blobs.
#[derive(Debug, Parser)]
#[command(
    name = "vitae",
    version,
    about,
    after_help = "Exit status: 0 success, 2 bad input or usage (the first line names the file or key), 1 internal error.\n\n\
                  Example:\n  vitae check --checkpoint model.pth --arch vitae-t\n  \
                  vitae run --checkpoint model.pth --arch vitae-t --input x.npy --out logits.npy\n  \
                  vitae eval --model model.vblob --data val.npz"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the f32 reference model on a batch of images (.npy) and write the logits (.npy).
    Run(cmd::run::RunArgs),
    /// Check a checkpoint against an architecture and list every mismatch.
    Check(cmd::check::CheckArgs),
    /// Quantize a checkpoint into a device blob (int8, int4, fp16, int16 residual or mixed),
    /// calibrated on your data.
    Quantize(cmd::quantize::QuantizeArgs),
    /// Validate a blob and print its layers, sizes, MACs and arena plan.
    Inspect(cmd::inspect::InspectArgs),
    /// Per-layer error of a quantized blob against the f32 model (cosine, max |Δ|, SQNR).
    Diff(cmd::diff::DiffArgs),
    /// Top-1/top-5 accuracy of blobs (and the f32 reference) over a labelled dataset.
    Eval(cmd::eval::EvalArgs),
    /// Time the f32 reference forward pass (development aid).
    #[command(hide = true)]
    BenchReference(cmd::bench::BenchArgs),
    /// Time the host engine (the device kernels) on a batch: ms per image and G MAC/s.
    BenchEngine(cmd::bench_engine::BenchEngineArgs),
}

impl Command {
    /// Runs the chosen subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Run(args) => cmd::run::run(args),
            Command::Check(args) => cmd::check::run(args),
            Command::Quantize(args) => cmd::quantize::run(args),
            Command::Inspect(args) => cmd::inspect::run(args),
            Command::Diff(args) => cmd::diff::run(args),
            Command::Eval(args) => cmd::eval::run(args),
            Command::BenchReference(args) => cmd::bench::run(args),
            Command::BenchEngine(args) => cmd::bench_engine::run(args),
        }
    }
}

/// Where the architecture comes from: a kwargs JSON file or a preset name (exactly one).
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct ArchArgs {
    /// `ViTAE_ViT_basic` keyword arguments as a flat JSON object (official names, e.g. a
    /// fixture's kwargs.json).
    #[arg(long, value_name = "KWARGS.json")]
    pub config: Option<PathBuf>,
    /// A preset architecture: vitae-t, vitae-6m, vitae-13m or vitae-s (224x224, 1000 classes).
    #[arg(long, value_name = "NAME")]
    pub arch: Option<String>,
}

impl ArchArgs {
    /// Loads the config.
    pub fn load(&self) -> anyhow::Result<ModelConfig> {
        match (&self.config, &self.arch) {
            (Some(path), _) => Ok(ModelConfig::from_kwargs_file(path)?),
            (None, Some(name)) => Ok(ModelConfig::preset(name)?),
            (None, None) => anyhow::bail!(
                "give --config KWARGS.json or --arch NAME ({})",
                PRESETS.join(", ")
            ),
        }
    }
}

/// The architecture of a `--checkpoint` given by the optional `--config`/`--arch` flags of
/// `run` and `eval`: a usage error naming both when neither is there.
pub fn checkpoint_arch(
    config: Option<&std::path::Path>,
    arch: Option<&str>,
) -> anyhow::Result<ModelConfig> {
    match (config, arch) {
        (Some(path), _) => Ok(ModelConfig::from_kwargs_file(path)?),
        (None, Some(name)) => Ok(ModelConfig::preset(name)?),
        (None, None) => Err(crate::InputError(format!(
            "--checkpoint needs the architecture: --config KWARGS.json or --arch NAME ({})",
            PRESETS.join(", ")
        ))
        .into()),
    }
}

/// A checkpoint plus its architecture.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Weights: a torch.save(state_dict) file (.pth; training checkpoints holding 'state_dict',
    /// 'model' or 'state_dict_ema' work too) or a .safetensors file.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// The architecture.
    #[command(flatten)]
    pub arch: ArchArgs,
}

impl ModelArgs {
    /// Loads config and checkpoint (not yet validated against each other).
    pub fn load(&self) -> anyhow::Result<(ModelConfig, Checkpoint)> {
        let config = self.arch.load()?;
        let checkpoint = load_checkpoint(&self.checkpoint)?;
        Ok((config, checkpoint))
    }
}

/// Fails early, before any long computation, unless every output can be written without
/// touching anything else: none is an input or another output (same device and inode, through
/// links too), none that exists is a directory, device, FIFO or socket, and each one's directory
/// exists and takes new files.
pub fn check_outputs(
    outputs: &[&std::path::Path],
    inputs: &[&std::path::Path],
) -> anyhow::Result<()> {
    vitae::io::check_outputs(outputs, inputs)?;
    for output in outputs {
        check_output_path(output)?;
    }
    Ok(())
}

/// Fails early, before any long computation, if `path` cannot be an output file.
pub fn check_output_path(path: &std::path::Path) -> anyhow::Result<()> {
    vitae::io::check_existing_output(path)?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => std::path::Path::new("."),
    };
    if !dir.is_dir() {
        return Err(vitae::io::WriteFileError::NoParentDirectory {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        }
        .into());
    }
    // A directory we cannot create files in (read-only, no permission) fails now, not after
    // minutes of calibration: create and remove a probe file where the output will go.
    let probe = dir.join(format!(".vitae-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(file) => {
            drop(file);
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(source) => Err(vitae::io::WriteFileError::Io {
            path: path.to_path_buf(),
            source,
        }
        .into()),
    }
}
