//! Hardening checks (issue 7): the firmware on corrupt blobs and its stack margin (a step of
//! `cargo xtask test`), the soak run (`cargo xtask soak`) and AddressSanitizer over the host
//! tests (`cargo xtask asan`).

use crate::app::{self, AppInput};
use crate::boards::{self, Board};
use crate::qemu::{self, RunOptions};
use crate::{project_root, run_checked, setup, toolchain};
use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vitae_edge::format::{CRC_FIELD_OFFSET, crc32};

/// The stack may use at most this fraction of its region (the rest is margin).
const STACK_BUDGET: f64 = 0.5;

/// Builds `blob` into the app (invalid blobs allowed), runs it under QEMU without measuring and
/// returns the decoded lines and whether it exited with success.
fn run_app(
    tc: toolchain::ArmToolchain,
    board: &Board,
    blob: &Path,
    input: &AppInput,
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<(Vec<String>, bool)> {
    let elf = app::build_env(tc, board, blob, input, env)?;
    // Our own copy: other builds of the app reuse the same output path.
    let tag = blob
        .file_stem()
        .map_or("app".into(), |s| s.to_string_lossy());
    let own = elf.with_file_name(format!("hardening-{tag}.elf"));
    std::fs::copy(&elf, &own)?;
    let opts = RunOptions {
        timeout,
        icount: false,
        echo: false,
        cwd: None,
        profile: false,
    };
    let out = qemu::run(board, &own, &opts, &mut |_| {})?;
    Ok((out.lines, out.success))
}

fn line<'a>(lines: &'a [String], prefix: &str) -> Option<&'a str> {
    lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .map(String::as_str)
}

fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

fn no_crash(lines: &[String]) -> Result<()> {
    if let Some(l) = lines
        .iter()
        .find(|l| l.starts_with("PANIC") || l.starts_with("HARDFAULT"))
    {
        bail!("the firmware crashed: {l}");
    }
    Ok(())
}

/// `cargo xtask test` step: on mps2-an386, the demo model runs with its stack well inside the
/// stack region; a bit-flipped blob and a blob of another format version (checksum correct) are
/// refused by the device's own validation with their typed errors and a failure exit, no fault.
pub fn firmware_bad_blobs(tc: toolchain::ArmToolchain) -> Result<()> {
    let board = boards::board("mps2-an386")?;
    let model = crate::assets::digits_model()?;
    let (blob, _) = crate::assets::digits_blob(&model, vitae::quantize::Precision::Int8)?;
    let digits = crate::assets::read_digits(&crate::assets::digits_dir().join("test.bin"))?;
    let dir = project_root().join("target").join("vitae");
    let input = dir.join("hardening-digit0.npy");
    vitae::npy::write_npy_f32(&input, &[1, 1, 32, 32], &digits[0].image())?;
    let input = AppInput::Npy(input);
    let timeout = Duration::from_secs(300);

    // The valid blob: runs, and its stack high-water mark leaves the margin.
    let (lines, ok) = run_app(tc, board, &blob, &input, &[], timeout)?;
    no_crash(&lines)?;
    ensure!(
        ok && line(&lines, "DONE").is_some(),
        "the valid blob did not run: {lines:?}"
    );
    let memory = line(&lines, "MEMORY").context("no MEMORY line")?;
    let (used, size) = (
        field(memory, "stack_used").context("stack_used")?,
        field(memory, "stack_size").context("stack_size")?,
    );
    println!(
        "    valid blob: stack high-water mark {used} of {size} bytes ({:.1}%)",
        100.0 * used as f64 / size as f64
    );
    ensure!(
        used > 0 && (used as f64) <= STACK_BUDGET * size as f64,
        "stack use {used} bytes is over {:.0}% of the {size}-byte stack region",
        100.0 * STACK_BUDGET
    );

    let good = std::fs::read(&blob)?;
    // One bit flipped in the middle of the weights: only the checksum can tell.
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x04;
    let flipped_path = dir.join("hardening-flipped.vblob");
    std::fs::write(&flipped_path, &flipped)?;
    // A format version from the future with a correct checksum: the version check must say so.
    let mut v2 = good.clone();
    let future = vitae_edge::format::FORMAT_VERSION + 1;
    v2[8..10].copy_from_slice(&future.to_le_bytes());
    v2[CRC_FIELD_OFFSET..CRC_FIELD_OFFSET + 4].fill(0);
    let crc = crc32(&v2);
    v2[CRC_FIELD_OFFSET..CRC_FIELD_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    let v2_path = dir.join("hardening-future-version.vblob");
    std::fs::write(&v2_path, &v2)?;

    for (path, expect) in [
        (&flipped_path, "ChecksumMismatch"),
        (&v2_path, "UnsupportedVersion"),
    ] {
        let (lines, ok) = run_app(
            tc,
            board,
            path,
            &input,
            &[("VITAE_ALLOW_INVALID_BLOB", "1")],
            timeout,
        )?;
        no_crash(&lines)?;
        let err = line(&lines, "ERROR")
            .with_context(|| format!("{}: no ERROR line: {lines:?}", path.display()))?;
        println!("    {}: {err}", path.file_name().unwrap().to_string_lossy());
        ensure!(
            err.starts_with("ERROR invalid model blob:") && err.contains(expect),
            "{}: expected `ERROR invalid model blob: … {expect} …`, got `{err}`",
            path.display()
        );
        ensure!(!ok, "{}: the firmware exited with success", path.display());
        ensure!(
            line(&lines, "LOGITS").is_none(),
            "{}: the firmware ran the invalid blob",
            path.display()
        );
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct SoakArgs {
    /// Consecutive inferences on the host engine.
    #[arg(long, default_value_t = 10_000)]
    pub host_runs: usize,
    /// Consecutive inferences under QEMU (mps2-an386, one firmware boot).
    #[arg(long, default_value_t = 200)]
    pub qemu_runs: usize,
    /// Skip the QEMU part (no ARM tools needed).
    #[arg(long)]
    pub host_only: bool,
}

fn mcu_a_dir() -> PathBuf {
    project_root()
        .join("..")
        .join("shared")
        .join("fixtures")
        .join("mcu_a")
}

/// Resident set size of this process, from /proc/self/statm.
fn rss_bytes() -> Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .context("malformed /proc/self/statm")?
        .parse()?;
    Ok(pages * 4096)
}

/// mcu_a quantized int8 the way `cargo vitae quantize --precision int8 --calib input.npy` does.
fn mcu_a_int8() -> Result<(PathBuf, Vec<f32>)> {
    let dir = mcu_a_dir();
    ensure!(
        dir.join("model.pth").is_file(),
        "the mcu_a fixture is not at {}",
        dir.display()
    );
    let config = vitae::config::ModelConfig::from_kwargs_file(&dir.join("kwargs.json"))?;
    let checkpoint = vitae::checkpoint::load_checkpoint(&dir.join("model.pth"))?;
    let model = vitae::reference::ReferenceModel::new(config, &checkpoint)?;
    let input = vitae::npy::read_npy_f32(&dir.join("input.npy"))?;
    let options = vitae::quantize::Options {
        precision: vitae::quantize::Precision::Int8,
        method: vitae::quantize::CalibMethod::Auto,
        flash_budget: None,
        max_logit_error: None,
        name: "model".into(),
        input: Default::default(),
        arena_regions: Vec::new(),
        patch: vitae::quantize::patch::Patch::Off,
    };
    let q = vitae::quantize::quantize(
        &model,
        std::slice::from_ref(&input.data),
        &options,
        &mut vitae::quantize::NoProgress,
    )?;
    let out = project_root()
        .join("target")
        .join("vitae")
        .join("soak-mcu_a-int8.vblob");
    std::fs::create_dir_all(out.parent().unwrap())?;
    vitae::io::write_atomic(&out, &q.lowered.blob)?;
    Ok((out, input.data))
}

/// `cargo xtask soak`.
pub fn soak(args: &SoakArgs) -> Result<()> {
    let (blob_path, image) = mcu_a_int8()?;
    let blob = std::fs::read(&blob_path)?;

    println!(
        "==> host engine: {} consecutive inferences of mcu_a int8",
        args.host_runs
    );
    let mut engine = vitae::engine::Engine::new(&blob)?;
    let reference: Vec<u32> = engine
        .run_batch(&image)?
        .iter()
        .map(|v| v.to_bits())
        .collect();
    // Steady state first (allocator pools, lazily touched pages), then measure.
    let warmup = 100.min(args.host_runs);
    for _ in 0..warmup {
        engine.run_batch(&image)?;
    }
    let rss_start = rss_bytes()?;
    let mut rss_max = rss_start;
    let started = Instant::now();
    for i in 0..args.host_runs {
        let logits = engine.run_batch(&image)?;
        ensure!(
            logits
                .iter()
                .map(|v| v.to_bits())
                .eq(reference.iter().copied()),
            "inference {i} gave different logits"
        );
        if i % 500 == 0 {
            rss_max = rss_max.max(rss_bytes()?);
        }
    }
    let rss_end = rss_bytes()?;
    rss_max = rss_max.max(rss_end);
    println!(
        "    {} inferences in {:.1} s, all logits bit-identical; RSS {} KiB after warm-up, {} KiB at the end, {} KiB at most",
        args.host_runs,
        started.elapsed().as_secs_f64(),
        rss_start / 1024,
        rss_end / 1024,
        rss_max / 1024
    );
    ensure!(
        rss_max <= rss_start + 64 * 1024,
        "resident memory grew by {} KiB during the soak",
        (rss_max - rss_start) / 1024
    );

    if args.host_only {
        return Ok(());
    }
    setup::setup(true)?;
    let tc = toolchain::detect()?;
    let board = boards::board("mps2-an386")?;
    println!(
        "==> {} ({}) under QEMU: {} consecutive inferences in one boot",
        board.name, board.core, args.qemu_runs
    );
    let runs = args.qemu_runs.to_string();
    let started = Instant::now();
    let (lines, ok) = run_app(
        tc,
        board,
        &blob_path,
        &AppInput::Npy(mcu_a_dir().join("input.npy")),
        &[("VITAE_REPEAT", runs.as_str())],
        Duration::from_secs(3600),
    )?;
    no_crash(&lines)?;
    if let Some(err) = line(&lines, "ERROR") {
        bail!("the firmware reported: {err}");
    }
    ensure!(
        ok && line(&lines, "DONE").is_some(),
        "the soak did not finish"
    );
    let repeat = line(&lines, "REPEAT").context("no REPEAT line")?;
    println!("    {repeat}");
    ensure!(
        field(repeat, "passes") == Some(args.qemu_runs as u64)
            && repeat.contains("identical=true")
            && field(repeat, "stack_after_first") == field(repeat, "stack_after_all"),
        "the device soak failed: {repeat}"
    );
    // The device's logits are the host engine's, bit for bit.
    let logits = line(&lines, "LOGITS 0").context("no LOGITS line")?;
    let device: Vec<u32> = logits
        .split_once('[')
        .and_then(|(_, l)| l.strip_suffix(']'))
        .context("malformed LOGITS line")?
        .split(',')
        .map(|h| u32::from_str_radix(h.trim().trim_start_matches("0x"), 16))
        .collect::<Result<_, _>>()?;
    ensure!(
        device == reference,
        "device logits differ from the host engine's"
    );
    let memory = line(&lines, "MEMORY").context("no MEMORY line")?;
    println!("    {memory}");
    println!(
        "    {} inferences in {:.0} s of emulation, identical to each other and to the host engine",
        args.qemu_runs,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct AsanArgs {
    /// Only show that ASan catches the deliberate out-of-bounds read (skip the suite).
    #[arg(long)]
    pub canary_only: bool,
}

fn asan_cargo() -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(project_root())
        .env("RUSTFLAGS", "-Zsanitizer=address")
        .env("RUSTDOCFLAGS", "-Zsanitizer=address")
        .env(
            "CARGO_TARGET_DIR",
            project_root().join("target").join("asan"),
        )
        .args([
            "+nightly",
            "test",
            "--target",
            "x86_64-unknown-linux-gnu",
            "--package",
            "vitae-edge",
            "--package",
            "vitae",
        ]);
    c
}

/// `cargo xtask asan`: first shows that AddressSanitizer catches a deliberate out-of-bounds read
/// (the run must fail with an ASan report), then runs the host tests of vitae-edge and vitae
/// under it.
pub fn asan(args: &AsanArgs) -> Result<()> {
    println!("==> canary: a deliberate heap out-of-bounds read must be caught");
    let mut c = asan_cargo();
    c.args([
        "--test",
        "asan_canary",
        "--",
        "--ignored",
        "--exact",
        "reads_one_byte_past_a_heap_buffer",
    ]);
    let out = c.output().context("running cargo +nightly test")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = stderr
        .lines()
        .find(|l| l.contains("ERROR: AddressSanitizer"))
        .map(str::to_string);
    match (out.status.success(), report) {
        (false, Some(report)) => println!("    caught: {}", report.trim()),
        _ => bail!(
            "AddressSanitizer did not report the deliberate out-of-bounds read (exit {:?}):\n{stderr}",
            out.status.code()
        ),
    }
    if args.canary_only {
        return Ok(());
    }
    println!("==> host tests of vitae-edge and vitae under AddressSanitizer");
    run_checked(asan_cargo(), "the host tests under AddressSanitizer")
}
