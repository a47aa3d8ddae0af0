//! `vitae bench-engine`: throughput of the host engine (the device kernels) on a blob.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use vitae::engine::{Engine, default_threads};
use vitae::io::{InputKind, read_file};
use vitae::npy::read_npy_f32;
use vitae_edge::format::{AlignedBytes, OpView};
use vitae_edge::runtime::{self, Input, Profiler};

use crate::InputError;

/// Arguments of `vitae bench-engine`.
#[derive(Debug, Args)]
#[command(
    after_help = "Times `Engine::run_batch`, what `vitae run --model` does after loading, on a batch of\n\
                  deterministic pseudo-random images (or --input). The kernels' x86-64 SIMD level is\n\
                  chosen at run time; VITAE_SIMD=off forces the portable scalar kernels.\n\n\
                  Examples:\n  vitae bench-engine --model mcu_a.vblob --batch 32\n  \
                  vitae bench-engine --model vitae_t.vblob --batch 1 --threads 1 --iters 5\n  \
                  vitae bench-engine --model vitae_t.vblob --batch 1 --profile"
)]
pub struct BenchEngineArgs {
    /// A quantized blob (from `vitae quantize`).
    #[arg(long, value_name = "MODEL.vblob")]
    pub model: PathBuf,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Timed batches (after one warm-up batch).
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Images (float32 .npy, N×C×H×W) to cycle through instead of random ones.
    #[arg(long, value_name = "X.npy")]
    pub input: Option<PathBuf>,
    /// Also print the time per op kind (one image at a time, one thread).
    #[arg(long)]
    pub profile: bool,
}

/// Seconds per op kind.
#[derive(Debug, Default)]
struct KindTimes {
    started: Option<Instant>,
    seconds: Vec<(&'static str, f64, u64)>,
}

impl Profiler for KindTimes {
    fn op_start(&mut self, _op: &OpView) {
        self.started = Some(Instant::now());
    }
    fn op_end(&mut self, op: &OpView, _output: &[u8]) {
        let dt = self.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        let name = op.kind.name();
        let macs = u64::from(op.desc.macs);
        match self.seconds.iter_mut().find(|(n, _, _)| *n == name) {
            Some(e) => {
                e.1 += dt;
                e.2 += macs;
            }
            None => self.seconds.push((name, dt, macs)),
        }
    }
}

/// Runs `vitae bench-engine`.
pub fn run(args: BenchEngineArgs) -> anyhow::Result<()> {
    crate::numbers::check_bench_flags(args.iters, args.threads)?;
    if !(1..=4096).contains(&args.batch) {
        return Err(InputError(format!(
            "--batch {}: must be between 1 and 4096",
            args.batch
        ))
        .into());
    }
    let bytes = read_file(&args.model, InputKind::Blob)?;
    let mut engine =
        Engine::new(&bytes).map_err(|e| InputError(format!("{}: {e}", args.model.display())))?;
    engine.set_threads(args.threads.unwrap_or_else(default_threads));
    let (per, name, macs, precision, arena_len) = {
        let model = engine.model();
        let m = model.meta();
        (
            m.input_channels as usize * m.input_height as usize * m.input_width as usize,
            vitae::text::escape(model.name()).to_string(),
            model.macs(),
            model.precision(),
            model.arena_len(),
        )
    };
    let pool: Vec<f32> = match &args.input {
        Some(path) => {
            let x = read_npy_f32(path)?;
            if x.data.is_empty() || x.data.len() % per != 0 {
                return Err(InputError(format!(
                    "{}: {} values are not a whole number of {per}-value images",
                    path.display(),
                    x.data.len()
                ))
                .into());
            }
            x.data
        }
        None => {
            // A fixed xorshift stream of values in [−2, 2): the range of normalized images.
            let mut s = 0x9e37_79b9u32;
            (0..per * args.batch.min(8))
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 17;
                    s ^= s << 5;
                    (s >> 8) as f32 / (1u32 << 22) as f32 - 2.0
                })
                .collect()
        }
    };
    let batch: Vec<f32> = pool
        .iter()
        .copied()
        .cycle()
        .take(per * args.batch)
        .collect();
    engine.run_batch(&batch)?;
    let mut times = Vec::with_capacity(args.iters);
    for _ in 0..args.iters {
        let start = Instant::now();
        engine.run_batch(&batch)?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let total_macs = macs as f64 * args.batch as f64;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{name}: {precision:?}, {:.2} M MACs per image, batch {}, {} threads, kernels {}",
        macs as f64 / 1e6,
        args.batch,
        engine.threads().min(args.batch),
        vitae_edge::kernels::host_simd().name()
    )?;
    writeln!(
        out,
        "  {} batches: median {:.1} ms per batch ({:.2} ms per image), {:.2} G MAC/s; best {:.1} ms ({:.2} G MAC/s)",
        args.iters,
        median * 1e3,
        median * 1e3 / args.batch as f64,
        total_macs / median / 1e9,
        times[0] * 1e3,
        total_macs / times[0] / 1e9
    )?;
    if args.profile {
        let mut arena = AlignedBytes::new(&vec![0u8; arena_len]);
        let mut prof = KindTimes::default();
        let model = engine.model();
        for image in batch.chunks_exact(per) {
            runtime::run(
                &model,
                arena.as_bytes_mut(),
                Input::F32Nchw(image),
                &mut prof,
            )?;
        }
        let total: f64 = prof.seconds.iter().map(|e| e.1).sum();
        prof.seconds.sort_by(|a, b| b.1.total_cmp(&a.1));
        writeln!(
            out,
            "  per op kind, one thread, {} images ({:.1} ms):",
            args.batch,
            total * 1e3
        )?;
        for (kind, s, m) in &prof.seconds {
            let rate = if *s > 0.0 && *m > 0 {
                format!("{:.2} G MAC/s", *m as f64 / s / 1e9)
            } else {
                String::new()
            };
            writeln!(
                out,
                "    {kind:<16} {:>9.2} ms {:>5.1} %  {rate}",
                s * 1e3,
                100.0 * s / total
            )?;
        }
    }
    Ok(())
}
