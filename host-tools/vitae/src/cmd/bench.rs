//! `vitae bench-reference` (hidden): milliseconds per f32 reference forward pass.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use vitae::checkpoint::load_checkpoint;
use vitae::reference::ReferenceModel;
use vitae::validate::random_checkpoint;

use crate::cli::ArchArgs;

/// Arguments of `vitae bench-reference`.
#[derive(Debug, Args)]
#[command(
    after_help = "Without --checkpoint the model gets deterministic random weights of the right shapes.\n\n\
                        Examples:\n  vitae bench-reference --arch vitae-t\n  \
                        vitae bench-reference --config kwargs.json --checkpoint model.pth --iters 20 --threads 1"
)]
pub struct BenchArgs {
    /// The architecture.
    #[command(flatten)]
    pub arch: ArchArgs,
    /// Weights (default: random weights with the official shapes).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Timed forward passes (after two warm-up passes).
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Runs `vitae bench-reference`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    crate::numbers::check_bench_flags(args.iters, args.threads)?;
    let config = args.arch.load()?;
    let checkpoint = match &args.checkpoint {
        Some(path) => load_checkpoint(path)?,
        None => {
            // Random weights are allocated from the config alone: bound them first. The model
            // holds copies of them (the checkpoint is dropped once it is built): ViTAE-S, 24 M
            // parameters, runs in 204 MiB; 2^28 were allowed before, and 108 M took 889 MiB.
            const MAX_RANDOM_PARAMETERS: u64 = 1 << 25;
            let parameters: u64 = vitae::validate::expected_state_dict(&config)
                .iter()
                .map(|e| e.shape.iter().map(|&d| d as u64).product::<u64>())
                .sum();
            if parameters > MAX_RANDOM_PARAMETERS {
                return Err(crate::InputError(format!(
                    "{}: {parameters} parameters, more than the {MAX_RANDOM_PARAMETERS} random weights \
                     bench-reference makes; give --checkpoint",
                    config.source_name()
                ))
                .into());
            }
            random_checkpoint(&config, 0)
        }
    };
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(threads) = args.threads {
        builder = builder.num_threads(threads);
    }
    let pool = builder.build().context("cannot start the worker threads")?;
    let model = ReferenceModel::new(config, &checkpoint)?;
    drop(checkpoint);
    let image: Vec<f32> = (0..model.config().input_len())
        .map(|i| ((i % 97) as f32 / 48.0) - 1.0)
        .collect();
    let iters = args.iters.max(1);
    let mut times = pool.install(|| -> anyhow::Result<Vec<f64>> {
        for _ in 0..2 {
            model.forward(&image)?;
        }
        (0..iters)
            .map(|_| {
                let start = Instant::now();
                model.forward(&image)?;
                Ok(start.elapsed().as_secs_f64() * 1e3)
            })
            .collect()
    })?;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    writeln!(
        std::io::stdout().lock(),
        "{}: {}x{} input, {} threads, {iters} iterations: median {median:.2} ms, min {:.2} ms per forward",
        vitae::text::escape(model.config().source_name()),
        model.config().img_size(),
        model.config().img_size(),
        pool.current_num_threads(),
        times[0]
    )?;
    Ok(())
}
