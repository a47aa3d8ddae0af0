//! `cargo xtask fuzz`: libFuzzer (cargo-fuzz) on the readers of untrusted input — the blob
//! reader/validator (as given, and with the checksum patched so the structural checks and the
//! executor are reached), the checkpoint readers and the .npy reader. The fuzz crate lives in
//! `tests/fuzz`, outside every normal build; its committed seed corpora are in `tests/fuzz/seeds`.

use crate::{project_root, run_checked};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use vitae::quantize::{self, CalibMethod, NoProgress, Options, Precision};
use vitae::reference::ReferenceModel;

/// The fuzz targets (binaries of `tests/fuzz`).
pub const TARGETS: &[&str] = &["blob_parse", "blob_run", "checkpoint", "npy"];

#[derive(clap::Args, Debug)]
pub struct FuzzArgs {
    /// blob_parse, blob_run, checkpoint or npy.
    #[arg(required_unless_present = "make_seeds")]
    pub target: Option<String>,
    /// Stop after this many executions (default 10 million).
    #[arg(long, conflicts_with = "seconds")]
    pub runs: Option<u64>,
    /// Stop after this many seconds instead.
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Largest input libFuzzer generates, in bytes (default: 16384 for blobs, 65536 otherwise).
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Build without AddressSanitizer (2-3x more executions per second; overflow checks and
    /// debug assertions stay on). The fuzzed crates hold no `unsafe`; `cargo xtask asan` runs the
    /// tests under ASan.
    #[arg(long)]
    pub no_asan: bool,
    /// Regenerate the blob seeds in tests/fuzz/seeds/blob (deterministic) and exit.
    #[arg(long)]
    pub make_seeds: bool,
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    if args.make_seeds {
        return make_seeds();
    }
    let target = args.target.as_deref().unwrap_or_default();
    if !TARGETS.contains(&target) {
        bail!(
            "unknown fuzz target `{target}`; the targets are {}",
            TARGETS.join(", ")
        );
    }
    ensure_cargo_fuzz()?;
    let root = project_root();
    let seeds = seeds_dir().join(corpus_of(target));
    // New interesting inputs go to a scratch corpus (not committed); the seeds are read only.
    let work = root.join("target").join("fuzz-corpus").join(target);
    std::fs::create_dir_all(&work)?;
    let artifacts = root.join("target").join("fuzz-artifacts").join(target);
    std::fs::create_dir_all(&artifacts)?;
    let max_len = args.max_len.unwrap_or(if target.starts_with("blob") {
        16384
    } else {
        65536
    });
    let mut cmd = Command::new("nice");
    cmd.current_dir(&root)
        .args(["-n", "10", "cargo", "+nightly", "fuzz", "run"]);
    cmd.args(["--fuzz-dir", "tests/fuzz"]);
    if args.no_asan {
        cmd.args(["--sanitizer", "none"]);
    }
    cmd.arg(target);
    cmd.arg(&work).arg(&seeds).arg("--");
    match (args.seconds, args.runs) {
        (Some(s), _) => cmd.arg(format!("-max_total_time={s}")),
        (None, runs) => cmd.arg(format!("-runs={}", runs.unwrap_or(10_000_000))),
    };
    cmd.args([
        "-timeout=1".to_string(),
        "-rss_limit_mb=2048".to_string(),
        "-malloc_limit_mb=1024".to_string(),
        format!("-max_len={max_len}"),
        "-print_final_stats=1".to_string(),
        format!("-artifact_prefix={}/", artifacts.display()),
    ]);
    run_checked(cmd, &format!("fuzzing {target}"))?;
    println!(
        "no crash, hang (> 1 s) or excessive memory found in {target}; new corpus entries in {}",
        work.display()
    );
    Ok(())
}

fn corpus_of(target: &str) -> &str {
    if target.starts_with("blob") {
        "blob"
    } else {
        target
    }
}

fn seeds_dir() -> PathBuf {
    project_root().join("tests").join("fuzz").join("seeds")
}

/// Installs cargo-fuzz (from crates.io) when `cargo +nightly fuzz` is not there.
fn ensure_cargo_fuzz() -> Result<()> {
    let have = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have {
        return Ok(());
    }
    let nightly = Command::new("cargo")
        .args(["+nightly", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !nightly {
        bail!(
            "fuzzing needs a nightly toolchain (libFuzzer's sanitizer flags): `rustup toolchain install nightly`"
        );
    }
    println!("==> installing cargo-fuzz (once)");
    let mut cmd = Command::new("cargo");
    cmd.args(["install", "cargo-fuzz", "--locked"]);
    run_checked(cmd, "cargo install cargo-fuzz")
}

/// The tiny architectures the blob seeds are made from: every reduction-cell token type and a
/// normal cell, at a few hundred parameters so that one execution takes microseconds.
const TINY_CONFIGS: &[(&str, &str)] = &[
    (
        "performer",
        r#"{"img_size": 8, "in_chans": 1, "num_classes": 3, "stages": 2,
            "embed_dims": [4, 8], "token_dims": [4, 8], "downsample_ratios": [4, 2],
            "kernel_size": [3, 3], "RC_heads": [1, 1], "NC_heads": [1, 2],
            "dilations": [[1, 2], [1]], "RC_tokens_type": ["performer", "performer_less"],
            "NC_tokens_type": ["transformer", "transformer"], "RC_group": [1, 1],
            "NC_group": [1, 2], "NC_depth": [0, 1], "mlp_ratio": 1.0}"#,
    ),
    (
        "transformer",
        r#"{"img_size": 8, "in_chans": 2, "num_classes": 2, "stages": 1,
            "embed_dims": [4], "token_dims": [6], "downsample_ratios": [4],
            "kernel_size": [3], "RC_heads": [1], "NC_heads": [2],
            "dilations": [[1]], "RC_tokens_type": ["transformer"],
            "NC_tokens_type": ["transformer"], "RC_group": [1],
            "NC_group": [2], "NC_depth": [1], "mlp_ratio": 1.0}"#,
    ),
];

/// Writes the blob seeds (each tiny architecture in int8, fp16 and mixed precision). The
/// checkpoint and .npy seeds are written by PyTorch/numpy themselves (`tests/fuzz/make_seeds.py`),
/// so they are the real writers' output.
fn make_seeds() -> Result<()> {
    let blob_dir = seeds_dir().join("blob");
    std::fs::create_dir_all(&blob_dir)?;
    for (name, json) in TINY_CONFIGS {
        let config = vitae::config::ModelConfig::from_kwargs_json(json, name)?;
        let checkpoint = vitae::validate::random_checkpoint(&config, 7);
        let model = ReferenceModel::new(config, &checkpoint)?;
        let n = model.config().input_len();
        let calib: Vec<Vec<f32>> = (0..3)
            .map(|k| {
                (0..n)
                    .map(|i| (((i * 7 + k * 13) % 17) as f32 - 8.0) / 4.0)
                    .collect()
            })
            .collect();
        for (precision, tag) in [
            (Precision::Int8, "int8"),
            (Precision::Fp16, "fp16"),
            (Precision::Mixed, "mixed"),
        ] {
            let options = Options {
                precision,
                method: CalibMethod::Auto,
                flash_budget: None,
                max_logit_error: None,
                name: (*name).into(),
                input: Default::default(),
                arena_regions: Vec::new(),
                patch: vitae::quantize::patch::Patch::Off,
            };
            let q = quantize::quantize(&model, &calib, &options, &mut NoProgress)
                .with_context(|| format!("quantizing the {name} seed model ({tag})"))?;
            write(
                &blob_dir.join(format!("{name}-{tag}.vblob")),
                &q.lowered.blob,
            )?;
        }
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    println!("  {} ({} bytes)", path.display(), bytes.len());
    Ok(())
}
