//! The embedding kit (issue 18): `cargo xtask examples` and the checks `cargo xtask test` runs
//! on it. The examples of `firmware/examples` and a crate made outside the repository are built
//! for QEMU boards and run; each output is checked against the host engine (the code behind
//! `cargo vitae run --model`).

use crate::assets::{self, Digit};
use crate::boards::{self, Board, Runner};
use crate::firmware::{self, Binary, Build};
use crate::qemu::{self, RunOptions};
use crate::toolchain::ArmToolchain;
use crate::{project_root, run_checked, setup, toolchain};
use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};
use std::time::Duration;
use vitae::engine::Engine;
use vitae::quantize::Precision;

/// The QEMU boards the examples run on: the Cortex-M4 (DSP kernels) and the Cortex-M55 (Helium).
pub const EXAMPLE_BOARDS: [&str; 2] = ["mps2-an386", "mps3-an547"];

#[derive(clap::Args, Debug, Default)]
pub struct ExamplesArgs {
    /// Only this QEMU board (default: mps2-an386 and mps3-an547).
    #[arg(long)]
    pub board: Option<String>,
}

/// What the examples embed or load, and what the host engine gives for it.
#[derive(Debug)]
pub struct Prepared {
    /// `target/vitae/examples`.
    pub dir: PathBuf,
    /// The demo's int8 blob (f32 input) and its first test digit as f32.
    pub blob_f32: PathBuf,
    pub digit_f32: Vec<f32>,
    /// Host engine logits of the f32 blob on that digit.
    pub logits_f32: Vec<f32>,
    /// The u8-input twin's host logits on the digit's pixels.
    pub logits_u8: Vec<f32>,
    /// Loader models: index and the logits expected, or the refusal expected.
    pub loader: Vec<(usize, LoaderExpect)>,
}

#[derive(Debug, Clone)]
pub enum LoaderExpect {
    Logits(Vec<f32>),
    Refused(&'static str),
}

/// Writes the example inputs: the digits demo's blobs (int8 for f32 and for u8 input, fp16),
/// the first test digit, the loader's models folder (a corrupt and an oversized blob among
/// them), and the board folders' default `target/vitae/digits-int8.vblob` and `digit0.npy`.
pub fn prepare() -> Result<Prepared> {
    let model = assets::digits_model()?;
    let (blob_f32, q_f32) = assets::digits_blob(&model, Precision::Int8)?;
    let (_, q_u8) = assets::digits_blob_for(&model, Precision::Int8, assets::digits_pixel_input())?;
    let (_, q_fp16) = assets::digits_blob(&model, Precision::Fp16)?;
    let digit: Digit = assets::read_digits(&assets::digits_dir().join("test.bin"))?[0];
    let (image, pixels) = (digit.image(), digit.pixels_u8());
    let vitae_dir = project_root().join("target").join("vitae");
    vitae::npy::write_npy_f32(&vitae_dir.join("digit0.npy"), &[1, 1, 32, 32], &image)?;
    let dir = vitae_dir.join("examples");
    let models = dir.join("models");
    std::fs::create_dir_all(&models)?;
    write(&dir.join("digits-int8-u8.vblob"), &q_u8.lowered.blob)?;
    write(&dir.join("digit-u8.bin"), &pixels)?;
    let logits_f32 = Engine::new(&q_f32.lowered.blob)?.run_batch(&image)?;
    let logits_u8 = Engine::new(&q_u8.lowered.blob)?.run_batch_u8(&pixels)?;

    let f32_bytes: Vec<u8> = image.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut corrupt = q_f32.lowered.blob.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0x40;
    let loader_models: [(&[u8], &[u8], LoaderExpect); 4] = [
        (
            &q_f32.lowered.blob,
            &f32_bytes,
            LoaderExpect::Logits(logits_f32.clone()),
        ),
        (
            &corrupt,
            &f32_bytes,
            LoaderExpect::Refused("ChecksumMismatch"),
        ),
        (
            &q_fp16.lowered.blob,
            &f32_bytes,
            LoaderExpect::Refused("TooLarge"),
        ),
        (
            &q_u8.lowered.blob,
            &pixels,
            LoaderExpect::Logits(logits_u8.clone()),
        ),
    ];
    let _ = std::fs::remove_dir_all(&models);
    std::fs::create_dir_all(&models)?;
    let mut loader = Vec::new();
    for (i, (blob, input, expect)) in loader_models.into_iter().enumerate() {
        write(&models.join(format!("{i:02}.vblob")), blob)?;
        write(&models.join(format!("{i:02}.input")), input)?;
        loader.push((i, expect));
    }
    Ok(Prepared {
        dir,
        blob_f32,
        digit_f32: image,
        logits_f32,
        logits_u8,
        loader,
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// `cargo xtask examples`: every example and the outside crate on the example boards, each
/// output checked.
pub fn run(args: &ExamplesArgs) -> Result<()> {
    setup::setup(true)?;
    let tc = toolchain::detect()?;
    let prepared = prepare()?;
    let c = assets::compare_pixel_input(&assets::digits_model()?, Precision::Int8)?;
    println!(
        "u8 pixel input (int8 blobs, host engine): {}/{} test digits predict the same class as the f32 path ({} logits bit-identical); accuracy {:.2} % (u8) vs {:.2} % (f32)",
        c.same_prediction,
        c.images,
        c.identical_logits,
        100.0 * c.correct_u8 as f64 / c.images as f64,
        100.0 * c.correct_f32 as f64 / c.images as f64
    );
    let boards = example_boards(args.board.as_deref())?;
    for board in boards {
        for example in ["bare", "embassy", "loader"] {
            println!("==> example {example} on {} ({})", board.name, board.core);
            for line in run_example(tc, board, example, &prepared)? {
                println!("    {line}");
            }
        }
        println!(
            "==> a crate outside the repository on {} ({})",
            board.name, board.core
        );
        for line in outside_crate(tc, board, &prepared)? {
            println!("    {line}");
        }
    }
    println!("all examples ran and matched the host engine");
    Ok(())
}

/// The boards to run examples on.
pub fn example_boards(only: Option<&str>) -> Result<Vec<&'static Board>> {
    match only {
        Some(name) => Ok(vec![boards::board(name)?]),
        None => EXAMPLE_BOARDS.iter().map(|n| boards::board(n)).collect(),
    }
}

/// Builds and runs one example on `board` and checks its output; returns the lines that show
/// it (for the log).
pub fn run_example(
    tc: ArmToolchain,
    board: &Board,
    example: &'static str,
    p: &Prepared,
) -> Result<Vec<String>> {
    let env = vec![
        (
            "VITAE_BLOB".to_string(),
            p.dir.join("digits-int8-u8.vblob").display().to_string(),
        ),
        (
            "VITAE_IMAGE".to_string(),
            p.dir.join("digit-u8.bin").display().to_string(),
        ),
    ];
    let elf = firmware::build(
        tc,
        &Build {
            board,
            what: Binary::Example(example),
            env,
        },
    )?;
    let opts = RunOptions {
        timeout: Duration::from_secs(300),
        cwd: Some(p.dir.clone()),
        ..RunOptions::default()
    };
    let out = qemu::run(board, &elf, &opts, &mut |_| {})?;
    let shown = match example {
        "bare" => check_top1(&out.lines, &p.logits_u8)?,
        "embassy" => check_embassy(&out.lines, &p.logits_u8)?,
        "loader" => check_loader(&out.lines, &p.loader)?,
        other => bail!("no check for example {other}"),
    };
    ensure!(
        out.success,
        "{example} on {}: exit code {:?}\n{}",
        board.name,
        out.exit_code,
        out.lines.join("\n")
    );
    Ok(shown)
}

fn argmax(logits: &[f32]) -> usize {
    logits
        .iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
        .0
}

/// `top-1: class <c> (logit <l>)`: the class the host engine gives, at its logit.
fn check_top1(lines: &[String], host: &[f32]) -> Result<Vec<String>> {
    let line = lines
        .iter()
        .find(|l| l.starts_with("top-1: class "))
        .with_context(|| format!("no top-1 line in:\n{}", lines.join("\n")))?;
    let rest = &line["top-1: class ".len()..];
    let (class, logit) = rest
        .split_once(" (logit ")
        .context("malformed top-1 line")?;
    let class: usize = class.parse()?;
    let logit: f32 = logit.trim_end_matches(')').parse()?;
    let want = argmax(host);
    ensure!(
        class == want && (logit - host[want]).abs() <= 1e-5 * host[want].abs().max(1.0),
        "{line}: the host engine gives class {want} at {}",
        host[want]
    );
    Ok(vec![line.clone()])
}

/// The inference ran in steps with the ticker between them: the ticker ran at least once per op
/// on average and never waited more than two ops (embassy alternates the order of ready tasks),
/// it printed during the run, and the top-1 is the host's.
fn check_embassy(lines: &[String], host: &[f32]) -> Result<Vec<String>> {
    let line = lines
        .iter()
        .find(|l| l.starts_with("INFERENCE "))
        .with_context(|| format!("no INFERENCE line in:\n{}", lines.join("\n")))?;
    let field = |name: &str| -> Result<u64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .with_context(|| format!("{line}: no {name}"))?
            .parse()
            .with_context(|| format!("{line}: {name}"))
    };
    let (ops, ticks, longest_wait) = (
        field("ops")?,
        field("ticks_during")?,
        field("most_ops_without_a_tick")?,
    );
    let inference_at = lines.iter().position(|l| l == line).unwrap_or(0);
    let tickers_before = lines[..inference_at]
        .iter()
        .filter(|l| l.starts_with("TICKER "))
        .count();
    ensure!(
        ops > 0 && ticks >= ops && longest_wait <= 2 && tickers_before > 0,
        "{line}: the ticker did not run between every op ({tickers_before} TICKER lines before it)"
    );
    let mut shown = vec![
        format!("{tickers_before} TICKER lines printed while the inference ran"),
        line.clone(),
    ];
    shown.extend(check_top1(lines, host)?);
    Ok(shown)
}

/// The loader ran the valid models (logits = host engine's bits), refused the corrupt and the
/// oversized one with their typed errors, freed everything and reported the heap's peak.
fn check_loader(lines: &[String], expect: &[(usize, LoaderExpect)]) -> Result<Vec<String>> {
    let all = || lines.join("\n");
    let mut shown = Vec::new();
    for (i, e) in expect {
        match e {
            LoaderExpect::Logits(host) => {
                let prefix = format!("LOGITS {i} ");
                let line = lines
                    .iter()
                    .find(|l| l.starts_with(&prefix))
                    .with_context(|| format!("model {i} gave no logits:\n{}", all()))?;
                let got = crate::app::parse_hex_list(&line[prefix.len()..])?;
                let want: Vec<u32> = host.iter().map(|x| x.to_bits()).collect();
                ensure!(
                    got == want,
                    "model {i}: logits {got:08x?} differ from the host engine's {want:08x?}"
                );
                shown.extend(
                    lines
                        .iter()
                        .filter(|l| l.starts_with(&format!("LOADED {i} ")))
                        .cloned(),
                );
                shown.push(format!(
                    "model {i}: {} logits bit-identical to the host engine's",
                    got.len()
                ));
            }
            LoaderExpect::Refused(kind) => {
                let prefix = format!("REFUSED {i} ");
                let line = lines
                    .iter()
                    .find(|l| l.starts_with(&prefix))
                    .with_context(|| format!("model {i} was not refused:\n{}", all()))?;
                ensure!(line.contains(kind), "{line}: expected {kind}");
                shown.push(line.clone());
            }
        }
    }
    let heap = lines
        .iter()
        .find(|l| l.starts_with("HEAP "))
        .with_context(|| format!("no HEAP line:\n{}", all()))?;
    let ran = expect
        .iter()
        .filter(|(_, e)| matches!(e, LoaderExpect::Logits(_)))
        .count();
    ensure!(
        heap.contains("in_use_after=0 ")
            && heap.contains(&format!("ran={ran} "))
            && heap.ends_with(&format!("refused={}", expect.len() - ran)),
        "{heap}: expected everything freed, {ran} run"
    );
    shown.push(heap.clone());
    Ok(shown)
}

/// A crate made in a temporary directory, outside the repository, that depends on vitae-edge by
/// path, embeds the demo blob with `include_model!` and prints its logits from `run` and from
/// the step-wise `Runner`; built for `board` (its own memory.x from the board table's FLASH and
/// RAM, its own panic handler) and run under QEMU. Both logits must be the host engine's bits.
pub fn outside_crate(tc: ArmToolchain, board: &Board, p: &Prepared) -> Result<Vec<String>> {
    let Runner::Qemu { .. } = board.runner else {
        bail!("{} does not run under QEMU", board.name);
    };
    let dir = tempfile::Builder::new()
        .prefix("vitae-outside-")
        .tempdir()
        .context("creating a temporary directory")?;
    let root = dir.path();
    std::fs::create_dir_all(root.join("src"))?;
    std::fs::copy(&p.blob_f32, root.join("model.vblob"))?;
    let image: Vec<u8> = p.digit_f32.iter().flat_map(|x| x.to_le_bytes()).collect();
    write(&root.join("digit.f32"), &image)?;
    let region = |name: &str| {
        board
            .region(name)
            .with_context(|| format!("{} has no {name} region", board.name))
    };
    let (flash, ram) = (region("FLASH")?, region("RAM")?);
    write(
        &root.join("memory.x"),
        format!(
            "MEMORY\n{{\n  FLASH : ORIGIN = {:#010x}, LENGTH = {:#x}\n  RAM : ORIGIN = {:#010x}, LENGTH = {:#x}\n}}\n",
            flash.origin, flash.length, ram.origin, ram.length
        )
        .as_bytes(),
    )?;
    let repo = project_root();
    write(
        &root.join("Cargo.toml"),
        format!(
            r#"[package]
name = "outside-user"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
vitae-edge = {{ path = "{}", features = ["defmt"] }}
cortex-m = {{ version = "0.7.7", features = ["critical-section-single-core"] }}
cortex-m-rt = "0.7.5"
defmt = "1"
defmt-semihosting = "0.4"
semihosting = "0.1.20"

[profile.release]
opt-level = 3
debug = 2
lto = "fat"
codegen-units = 1

[workspace]
"#,
            repo.display()
        )
        .as_bytes(),
    )?;
    write(&root.join("build.rs"), OUTSIDE_BUILD_RS.as_bytes())?;
    write(&root.join("src/main.rs"), OUTSIDE_MAIN_RS.as_bytes())?;
    // The firmware workspace's lock file: the same dependency versions, none fetched anew.
    std::fs::copy(
        repo.join("firmware").join("Cargo.lock"),
        root.join("Cargo.lock"),
    )?;
    let target_dir = crate::firmware::arm_target_dir().join("outside");
    let mut build = tc.cargo("build", board.target, board.cpu, &target_dir);
    build.current_dir(root).arg("--release");
    build.env("DEFMT_LOG", "info");
    run_checked(
        build,
        &format!("building the outside crate for {}", board.name),
    )?;
    let elf = target_dir
        .join(board.target)
        .join("release")
        .join("outside-user");
    let out = qemu::run(board, &elf, &RunOptions::default(), &mut |_| {})?;
    let want: Vec<u32> = p.logits_f32.iter().map(|x| x.to_bits()).collect();
    let mut shown = Vec::new();
    for tag in ["RUN", "STEPWISE"] {
        let prefix = format!("{tag} ");
        let line = out
            .lines
            .iter()
            .find(|l| l.starts_with(&prefix))
            .with_context(|| format!("no {tag} line:\n{}", out.lines.join("\n")))?;
        let got = crate::app::parse_hex_list(&line[prefix.len()..])?;
        ensure!(
            got == want,
            "{tag}: logits {got:08x?} differ from the host engine's {want:08x?}"
        );
        shown.push(format!(
            "{tag}: {} logits bit-identical to the host engine's ({line})",
            got.len()
        ));
    }
    ensure!(out.success, "exit code {:?}", out.exit_code);
    Ok(shown)
}

const OUTSIDE_BUILD_RS: &str = r#"fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::copy("memory.x", out.join("memory.x")).unwrap();
    println!("cargo::rustc-link-search={}", out.display());
    println!("cargo::rerun-if-changed=memory.x");
    println!("cargo::rustc-link-arg-bins=-Tlink.x");
    println!("cargo::rustc-link-arg-bins=-Tdefmt.x");
}
"#;

const OUTSIDE_MAIN_RS: &str = r#"//! A user's firmware, outside the ViTAE-Edge repository.
#![no_std]
#![no_main]

use cortex_m as _;
use defmt_semihosting as _;
use vitae_edge::{Arena, EmbeddedModel, Input, NoProfiler, Runner, include_model};

const MODEL: EmbeddedModel = include_model!("../model.vblob");
static IMAGE: &[u8] = include_bytes!("../digit.f32");

fn logits(out: &vitae_edge::Output) -> [u32; 10] {
    core::array::from_fn(|i| if i < out.len() { out.logit(i).to_bits() } else { 0 })
}

#[cortex_m_rt::entry]
fn main() -> ! {
    static mut ARENA: Arena<{ MODEL.arena_len() }> = Arena::new();
    let mut image = [0.0f32; 32 * 32];
    for (x, b) in image.iter_mut().zip(IMAGE.chunks_exact(4)) {
        *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    let model = MODEL.parse().unwrap();
    let out = vitae_edge::run(&model, ARENA.as_mut_slice(), Input::F32Nchw(&image), &mut NoProfiler).unwrap();
    let once = logits(&out);
    defmt::println!("RUN {:x}", &once[..out.len()]);
    let mut runner = Runner::new(&model, ARENA.as_mut_slice(), Input::F32Nchw(&image)).unwrap();
    let mut steps = 0;
    while !runner.is_done() {
        runner.step().unwrap();
        steps += 1;
    }
    let out = runner.finish().unwrap();
    defmt::println!("STEPWISE {:x}", &logits(&out)[..out.len()]);
    defmt::println!("steps={=usize}", steps);
    semihosting::process::exit(0)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    defmt::println!("PANIC {}", defmt::Display2Format(info));
    semihosting::process::exit(1)
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo run` in a QEMU board's folder goes through firmware/qemu-run, which reads the
    /// board's QEMU machine and CPU from firmware/boards.rs: for every QEMU board the command it
    /// would run has the table's machine and CPU, and a real board is refused.
    #[test]
    fn the_qemu_runner_reads_machine_and_cpu_from_the_board_table() {
        let script = project_root().join("firmware").join("qemu-run");
        for b in boards::BOARDS {
            let out = std::process::Command::new(&script)
                .args(["--print", "x.elf"])
                .env("VITAE_BOARD", b.name)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            match b.runner {
                Runner::Qemu { machine, cpu } => {
                    assert!(out.status.success(), "{}: {out:?}", b.name);
                    assert!(
                        stdout.contains(&format!("-machine {machine} -cpu {cpu} "))
                            && stdout.contains("semihosting-config enable=on,target=native")
                            && stdout.trim_end().ends_with("-kernel x.elf"),
                        "{}: {stdout}",
                        b.name
                    );
                }
                Runner::Probe { .. } => assert!(!out.status.success(), "{}", b.name),
            }
        }
    }

    /// Every folder `cargo run` works from names the runner for its boards: the QEMU board
    /// folders, the examples and the on-target tests use firmware/qemu-run.
    #[test]
    fn qemu_folders_use_the_qemu_runner() {
        let root = project_root();
        let mut folders: Vec<(PathBuf, &str)> = boards::qemu_boards()
            .map(|b| {
                (
                    root.join("firmware/boards").join(b.name),
                    "runner = \"../../qemu-run\"",
                )
            })
            .collect();
        folders.push((
            root.join("tests/qemu"),
            "runner = \"../../firmware/qemu-run\"",
        ));
        folders.push((root.join("firmware/examples"), "runner = \"../qemu-run\""));
        for (dir, runner) in folders {
            let config = std::fs::read_to_string(dir.join(".cargo/config.toml")).unwrap();
            assert!(config.contains(runner), "{}: {runner}", dir.display());
            // The runner path resolves (relative to the folder holding .cargo/).
            let path = runner.split('"').nth(1).unwrap();
            assert!(dir.join(path).is_file(), "{}: {path}", dir.display());
        }
    }

    #[test]
    fn loader_check_wants_bits_refusals_and_an_empty_heap() {
        let expect = vec![
            (0, LoaderExpect::Logits(vec![1.0, -0.5])),
            (1, LoaderExpect::Refused("ChecksumMismatch")),
        ];
        let good: Vec<String> = [
            "LOADED 0 name=digits blob=10 arena=2 heap_used=20",
            "LOGITS 0 [3f800000, bf000000]",
            "REFUSED 1 Format(FormatError { kind: ChecksumMismatch { stored: 1, computed: 2 }, offset: 20 })",
            "HEAP peak=30 size=40 in_use_after=0 ran=1 refused=1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        check_loader(&good, &expect).unwrap();
        let mut wrong_bits = good.clone();
        wrong_bits[1] = "LOGITS 0 [3f800001, bf000000]".into();
        assert!(check_loader(&wrong_bits, &expect).is_err());
        let mut leaked = good.clone();
        leaked[3] = "HEAP peak=30 size=40 in_use_after=16 ran=1 refused=1".into();
        assert!(check_loader(&leaked, &expect).is_err());
    }

    #[test]
    fn embassy_check_wants_the_ticker_between_ops() {
        let host = [0.0, 2.0];
        let mut lines: Vec<String> = [
            "TICKER tick=16",
            "INFERENCE ops=40 ticks_during=41 most_ops_without_a_tick=2",
            "top-1: class 1 (logit 2)",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        check_embassy(&lines, &host).unwrap();
        lines[1] = "INFERENCE ops=40 ticks_during=3 most_ops_without_a_tick=30".into();
        assert!(check_embassy(&lines, &host).is_err());
        lines[1] = "INFERENCE ops=40 ticks_during=41 most_ops_without_a_tick=3".into();
        assert!(check_embassy(&lines, &host).is_err());
    }
}
