//! `cargo xtask test`: every check the project has, in the order that fails fastest.

use crate::boards::{self, Board};
use crate::firmware::{self, arm_target_dir};
use crate::qemu::{self, RunOptions};
use crate::{host_cargo, project_root, run_checked, setup, toolchain};
use anyhow::{Context, Result, bail};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Default)]
pub struct TestArgs {
    /// Only the host checks (fmt, clippy, host tests); no ARM builds, no QEMU.
    #[arg(long, conflicts_with = "target_only")]
    pub host_only: bool,
    /// Only the ARM builds and the on-target tests under QEMU.
    #[arg(long)]
    pub target_only: bool,
    /// Only this QEMU board's on-target tests (default: all three).
    #[arg(long)]
    pub board: Option<String>,
    /// Only the on-target test binary under QEMU (implies --target-only): no library, clippy or
    /// firmware builds and no fixture runs. For iterating on a kernel; not a substitute for the
    /// full run.
    #[arg(long, conflicts_with = "host_only")]
    pub quick: bool,
    /// Add a deliberately failing on-target test (shows that a failure fails the run).
    #[arg(long)]
    pub demo_failure: bool,
    /// Only the Python package's step (host-tools/python: clippy, pip install, pytest).
    #[arg(long, conflicts_with_all = ["host_only", "target_only", "quick", "board"])]
    pub python_only: bool,
}

/// Outcome of one on-target test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed(String),
}

struct Steps {
    failed: Vec<String>,
}

impl Steps {
    fn run(&mut self, name: &str, f: impl FnOnce() -> Result<()>) {
        println!("\n==> {name}");
        let t = Instant::now();
        match f() {
            Ok(()) => println!("    ok ({:.1} s)", t.elapsed().as_secs_f64()),
            Err(e) => {
                println!("    FAILED: {e:#}");
                self.failed.push(name.to_string());
            }
        }
    }
}

pub fn run(args: &TestArgs) -> Result<()> {
    let mut steps = Steps { failed: Vec::new() };
    let started = Instant::now();
    if args.python_only {
        steps.run(PYTHON_STEP, crate::python::check);
        println!("\ntotal time {:.0} s", started.elapsed().as_secs_f64());
        if !steps.failed.is_empty() {
            bail!("failed steps: {}", steps.failed.join("; "));
        }
        println!("the Python package's checks passed");
        return Ok(());
    }
    if !args.target_only && !args.quick {
        host_checks(&mut steps);
    }
    let mut on_target = (0usize, 0usize);
    if !args.host_only {
        steps.run("setup", || setup::setup(true));
        let tc = toolchain::detect()?;
        println!("\nARM toolchain: {}", tc.describe());
        for (target, cpu) in boards::arm_targets().into_iter().filter(|_| !args.quick) {
            steps.run(&format!("library alone for {target} ({cpu})"), || {
                // Built from the firmware workspace so it shares its profile (and `core`) with the
                // firmware builds below.
                let mut build = tc.cargo("build", target, cpu, &arm_target_dir());
                build.current_dir(project_root().join("firmware")).args([
                    "--release",
                    "--package",
                    "vitae-edge",
                ]);
                run_checked(build, "library build")
            });
        }
        // One clippy per distinct kernel selection: DSP (M4; M7 compiles the same code) and Helium.
        // Helium is selected with `+mve` rather than `target-cpu=cortex-m55`: clippy compiles
        // `core` without LTO, and LLVM 22 crashes on part of it for the full M55 feature set
        // ("Do not know how to promote this operator"); the LTO'd firmware builds are unaffected.
        let clippy_targets = [
            ("thumbv7em-none-eabihf", "-Ctarget-cpu=cortex-m4"),
            ("thumbv8m.main-none-eabihf", "-Ctarget-feature=+mve"),
        ];
        for (target, rustflags) in clippy_targets.into_iter().filter(|_| !args.quick) {
            steps.run(
                &format!("clippy -D warnings of the library for {target} ({rustflags})"),
                || {
                    // From the root workspace: clippy lints workspace members only.
                    let mut clippy =
                        tc.cargo_with_rustflags("clippy", target, rustflags, &arm_target_dir());
                    clippy.current_dir(project_root()).args([
                        "--package",
                        "vitae-edge",
                        "--features",
                        "defmt",
                        "--",
                        "-D",
                        "warnings",
                    ]);
                    run_checked(clippy, "clippy of the library")
                },
            );
        }
        if !args.quick {
            steps.run(
                "firmware on corrupt blobs (typed error, no fault) and stack margin, mps2-an386",
                || crate::hardening::firmware_bad_blobs(tc),
            );
        }
        for board in boards::BOARDS
            .iter()
            .filter(|b| !b.is_qemu() && !args.quick)
        {
            steps.run(
                &format!("firmware build for {} ({})", board.name, board.core),
                || {
                    let elf = crate::demo_firmware(tc, board)?;
                    let s = firmware::sizes(&elf)?;
                    println!(
                        "    {}: {} flash bytes, {} static RAM bytes",
                        elf.display(),
                        s.flash,
                        s.ram
                    );
                    Ok(())
                },
            );
        }
        let selected: Vec<&Board> = match &args.board {
            Some(name) => vec![boards::board(name)?],
            None => boards::qemu_boards().collect(),
        };
        let mut results: Vec<(&Board, String, Outcome)> = Vec::new();
        for board in selected.iter().copied() {
            steps.run(
                &format!(
                    "on-target tests on {} ({}) under QEMU",
                    board.name, board.core
                ),
                || {
                    let r = on_target_tests(tc, board, args.demo_failure)?;
                    let failed = r.iter().filter(|(_, o)| *o != Outcome::Passed).count();
                    results.extend(r.into_iter().map(|(n, o)| (board, n, o)));
                    if failed > 0 {
                        bail!("{failed} on-target test(s) failed");
                    }
                    Ok(())
                },
            );
        }
        // Helium floating point only where reviewed (subnormals: see vector_fp.rs).
        for board in selected.iter().filter(|b| b.cpu == "cortex-m55") {
            steps.run(
                &format!(
                    "Helium floating point in the {} binaries only in reviewed steps",
                    board.name
                ),
                || {
                    let mut elfs = vec![firmware::build(
                        tc,
                        &firmware::Build {
                            board,
                            what: firmware::Binary::Tests {
                                demo_failure: false,
                            },
                            env: vec![],
                        },
                    )?];
                    // The firmware links every op's kernel; --quick checks the tests alone, which
                    // hold only some, so it cannot tell a stale entry.
                    if !args.quick {
                        elfs.push(crate::demo_firmware(tc, board)?);
                    }
                    crate::vector_fp::check(tc, &elfs, !args.quick)
                },
            );
        }
        // The plugin's instruction classes (its Cortex-M4 cycle estimate, its Cortex-M55 vector
        // count) against the disassembler, over every instruction of the firmware.
        for board in selected.iter().filter(|b| {
            b.stands_in_for.is_none()
                && matches!(b.runner, boards::Runner::Qemu { cpu, .. }
                    if crate::qemu::timing_model(cpu).is_some())
        }) {
            steps.run(
                &format!(
                    "icount plugin's instruction classes == llvm-objdump on the {} firmware",
                    board.name
                ),
                || crate::insn_classes::check(tc, &crate::demo_firmware(tc, board)?),
            );
        }
        // The embedding kit (issue 18): the examples and a crate outside the repository, on the
        // Cortex-M4 and M55 boards, outputs checked against the host engine.
        let mut kit = None;
        steps.run(
            "embedding kit: prepare the examples' blobs and inputs",
            || {
                kit = Some(crate::kit::prepare()?);
                Ok(())
            },
        );
        if let Some(p) = &kit {
            let kit_boards: Vec<&Board> = crate::kit::example_boards(None)?
                .into_iter()
                .filter(|b| selected.iter().any(|s| s.name == b.name))
                .collect();
            for board in kit_boards {
                for (example, what) in [
                    ("bare", "bare cortex-m-rt example: top-1 == host engine"),
                    (
                        "embassy",
                        "embassy example: the ticker ran between every op, top-1 == host engine",
                    ),
                    (
                        "loader",
                        "run-time loader example: 2 blobs == host engine, corrupt and oversized refused, heap freed",
                    ),
                ] {
                    let mut outcome = Outcome::Passed;
                    steps.run(&format!("{what} on {}", board.name), || {
                        let shown = crate::kit::run_example(tc, board, example, p)
                            .inspect_err(|e| outcome = Outcome::Failed(format!("{e:#}")))?;
                        for line in shown {
                            println!("    {line}");
                        }
                        Ok(())
                    });
                    results.push((board, what.to_string(), outcome));
                }
                let what = "outside crate: include_model! + run and Runner, logits == host engine";
                let mut outcome = Outcome::Passed;
                steps.run(&format!("{what} on {}", board.name), || {
                    let shown = crate::kit::outside_crate(tc, board, p)
                        .inspect_err(|e| outcome = Outcome::Failed(format!("{e:#}")))?;
                    for line in shown {
                        println!("    {line}");
                    }
                    Ok(())
                });
                results.push((board, what.to_string(), outcome));
            }
        }
        // End to end: the fixtures int8 through the firmware, logits byte-identical to the host
        // engine (mcu_a; mcu_c for the pooling cells and summed PRMs; mcu_d for the class token,
        // the embedding cell and performer normal cells; mcu_g for the shallow normal cells), and
        // mcu_a in fp16 (the FPU kernels), mixed precision, int4 weights, the int16 residual
        // stream (int16 adds, the int16-input LayerNorm, requantizations), and mixed within a
        // flash budget that takes int4 weights.
        if args.quick {
            println!("\nnote: --quick: no fixture end-to-end checks");
        } else if crate::e2e::fixtures_dir().is_some() {
            use vitae::quantize::Precision;
            // (fixture, precision, flash budget): mcu_a mixed within 300 kB (int8: 353 kB) mixes
            // int4 weights with int8.
            let runs = [
                ("mcu_a", Precision::Int8, None),
                ("mcu_c", Precision::Int8, None),
                ("mcu_d", Precision::Int8, None),
                ("mcu_g", Precision::Int8, None),
                ("mcu_a", Precision::Fp16, None),
                ("mcu_a", Precision::Mixed, None),
                ("mcu_a", Precision::Int4, None),
                ("mcu_a", Precision::Int16Residual, None),
                ("mcu_a", Precision::Mixed, Some(300_000)),
            ];
            for (fixture, precision, budget) in runs {
                let mut prepared = None;
                let label = match budget {
                    Some(b) => format!("{} within {b} bytes", precision.name()),
                    None => precision.name().to_string(),
                };
                steps.run(
                    &format!(
                        "quantize the {fixture} fixture ({label}) and run it on the host engine"
                    ),
                    || {
                        prepared = Some(match budget {
                            Some(b) => crate::e2e::prepare_within(fixture, b)?,
                            None => crate::e2e::prepare(fixture, precision)?,
                        });
                        Ok(())
                    },
                );
                let Some(p) = &prepared else { continue };
                for board in &selected {
                    let name = format!(
                        "{fixture} {label}: firmware logits == host engine (cargo xtask qemu vs cargo vitae run)"
                    );
                    let mut outcome = Outcome::Passed;
                    steps.run(&format!("{name} on {}", board.name), || {
                        crate::e2e::check_board(tc, board, p)
                            .inspect_err(|e| outcome = Outcome::Failed(format!("{e:#}")))
                    });
                    results.push((board, name, outcome));
                }
            }
            // Patch-based first cell: mcu_a with its first Reduction Cell in strips of 4 rows
            // (the image, the PRM, the PCM and the performer's two passes strip by strip); the
            // host engine gives the layer-by-layer blob's logits, and every board the host's.
            let mut patched = None;
            steps.run(
                "quantize mcu_a (int8) with its first cell in strips of 4 rows (--patch 4): host logits == layer by layer",
                || {
                    let layered = crate::e2e::prepare("mcu_a", vitae::quantize::Precision::Int8)?;
                    let p = crate::e2e::prepare_patched(
                        "mcu_a",
                        vitae::quantize::Precision::Int8,
                        None,
                        vitae::quantize::patch::Patch::rows(4),
                    )?;
                    if p.host_npy != layered.host_npy {
                        bail!("the patched blob's host logits differ from the layer-by-layer blob's");
                    }
                    patched = Some(p);
                    Ok(())
                },
            );
            if let Some(p) = &patched {
                for board in &selected {
                    let name =
                        "mcu_a int8 in strips (--patch 4): firmware logits == host engine (== layer by layer)"
                            .to_string();
                    let mut outcome = Outcome::Passed;
                    steps.run(&format!("{name} on {}", board.name), || {
                        crate::e2e::check_board(tc, board, p)
                            .inspect_err(|e| outcome = Outcome::Failed(format!("{e:#}")))
                    });
                    results.push((board, name, outcome));
                }
            }
            // Real parts' memory budgets under QEMU: mcu_a planned for each stand-in board's
            // regions (the arena split over them, the blob in the external memory), byte-identical
            // to the host engine.
            for board in boards::budget_boards().filter(|_| args.board.is_none()) {
                let name = format!(
                    "mcu_a int8 planned for {}'s regions: firmware logits == host engine",
                    board.stands_in_for.unwrap_or(board.name)
                );
                let mut outcome = Outcome::Passed;
                steps.run(&format!("{name} on {}", board.name), || {
                    let planned_and_run = || {
                        let p = crate::e2e::prepare_for(
                            "mcu_a",
                            vitae::quantize::Precision::Int8,
                            Some(board),
                        )?;
                        crate::e2e::check_board(tc, board, &p)?;
                        // The blob sits in the stand-in's external memory: the same run with
                        // the weights staged into SRAM first, double-buffered, must give the
                        // same bytes.
                        println!(
                            "    again with the weights staged into 2 x 16 KiB (VITAE_STAGE, VITAE_STAGE_AHEAD):"
                        );
                        crate::e2e::check_board_env(
                            tc,
                            board,
                            &p,
                            &[("VITAE_STAGE", "32768"), ("VITAE_STAGE_AHEAD", "1")],
                        )
                    };
                    planned_and_run().inspect_err(|e| outcome = Outcome::Failed(format!("{e:#}")))
                });
                results.push((board, name, outcome));
            }
        } else if crate::e2e::fixtures_required() {
            steps.run("fixture end-to-end checks", || {
                bail!("VITAE_REQUIRE_FIXTURES=1 but ../shared/fixtures was not found")
            });
        } else {
            println!(
                "\nnote: ../shared/fixtures not found (a clone without the shared fixtures): skipping the fixture end-to-end checks"
            );
        }
        if !results.is_empty() {
            println!("\non-target tests:");
            for (board, name, outcome) in &results {
                match outcome {
                    Outcome::Passed => println!("  {:12} {name} ... ok", board.name),
                    Outcome::Failed(why) => {
                        println!("  {:12} {name} ... FAILED ({why})", board.name)
                    }
                }
            }
            let passed = results
                .iter()
                .filter(|(_, _, o)| *o == Outcome::Passed)
                .count();
            on_target = (passed, results.len() - passed);
        }
    }
    println!("\n{} passed, {} failed", on_target.0, on_target.1);
    println!(
        "total time {:.0} s{}",
        started.elapsed().as_secs_f64(),
        xtask_bootstrap::since_start_note()
    );
    if !steps.failed.is_empty() {
        bail!("failed steps: {}", steps.failed.join("; "));
    }
    println!("all checks passed");
    Ok(())
}

fn host_checks(steps: &mut Steps) {
    steps.run(
        "cargo fmt --check (host workspace, firmware workspace, host-tools/python)",
        || {
            let mut c = host_cargo();
            c.args(["fmt", "--all", "--check"]);
            run_checked(c, "rustfmt (run `cargo fmt --all`)")?;
            // The workspaces of their own.
            for manifest in ["firmware/Cargo.toml", "host-tools/python/Cargo.toml"] {
                let mut c = host_cargo();
                c.args(["fmt", "--all", "--check", "--manifest-path", manifest]);
                run_checked(
                    c,
                    &format!(
                        "rustfmt of {manifest} (run `cargo fmt --all --manifest-path {manifest}`)"
                    ),
                )?;
            }
            Ok(())
        },
    );
    steps.run("cargo clippy --workspace --all-targets -D warnings", || {
        let mut c = host_cargo();
        c.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        run_checked(c, "clippy")
    });
    steps.run("host unit + integration tests and doctests", || {
        let mut c = host_cargo();
        c.args(["test", "--workspace"]);
        run_checked(c, "cargo test")
    });
    steps.run(
        "cargo doc of vitae-edge with -D warnings (the features docs.rs builds)",
        || {
            let mut c = host_cargo();
            c.args([
                "doc",
                "--package",
                "vitae-edge",
                "--no-deps",
                "--features",
                "std,defmt",
            ])
            .env("RUSTDOCFLAGS", "-D warnings");
            run_checked(c, "cargo doc")
        },
    );
    steps.run("MSRV: vitae-edge checked with its rust-version", msrv_check);
    steps.run(PYTHON_STEP, crate::python::check);
}

const PYTHON_STEP: &str =
    "Python package (host-tools/python): clippy, pip install into target/python-venv, pytest";

/// Checks the library with a toolchain of its `rust-version` (rustup's, for the host: the
/// language and `core` APIs are the same for every target), without and with `std`. The
/// toolchain is whichever installed rustup toolchain reports that version, so the check needs no
/// extra install where the machine's stable is the MSRV, and says what to install where not.
fn msrv_check() -> Result<()> {
    let manifest = std::fs::read_to_string(project_root().join("Cargo.toml"))?;
    let version = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .ok_or_else(|| anyhow::anyhow!("Cargo.toml: no rust-version"))?;
    // `1.95` is any 1.95.x; `1.95.1` exactly that release.
    let wanted = if version.matches('.').count() == 1 {
        format!("rustc {version}.")
    } else {
        format!("rustc {version} ")
    };
    let list = std::process::Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .context("running `rustup toolchain list`")?;
    let toolchains: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    let toolchain = toolchains
        .iter()
        .find(|t| {
            std::process::Command::new("rustup")
                .args(["run", t, "rustc", "-V"])
                .env_remove("RUSTC")
                .env_remove("RUSTUP_TOOLCHAIN")
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).starts_with(&wanted))
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no installed rustup toolchain is Rust {version} (the rust-version of Cargo.toml; installed: {}): `rustup toolchain install {version}`",
                toolchains.join(", ")
            )
        })?;
    let msrv_dir = xtask_bootstrap::host_target_dir().join("msrv");
    for features in ["", "std"] {
        let mut c = std::process::Command::new("rustup");
        c.args([
            "run",
            toolchain,
            "cargo",
            "check",
            "--package",
            "vitae-edge",
        ])
        .arg("--features")
        .arg(features)
        .current_dir(project_root())
        .env("CARGO_TARGET_DIR", &msrv_dir)
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("RUSTUP_TOOLCHAIN");
        run_checked(
            c,
            &format!(
                "cargo check of vitae-edge with Rust {version} ({toolchain}, its rust-version)"
            ),
        )?;
    }
    println!("    vitae-edge builds with Rust {version} ({toolchain}, its rust-version)");
    Ok(())
}

/// Builds and runs the on-target test binary on one QEMU board; returns each test's outcome.
pub fn on_target_tests(
    tc: toolchain::ArmToolchain,
    board: &Board,
    demo_failure: bool,
) -> Result<Vec<(String, Outcome)>> {
    let elf = firmware::build(
        tc,
        &firmware::Build {
            board,
            what: firmware::Binary::Tests { demo_failure },
            env: vec![],
        },
    )?;
    let opts = RunOptions {
        timeout: Duration::from_secs(600),
        ..RunOptions::default()
    };
    let out = qemu::run(board, &elf, &opts, &mut |line| {
        if !line.starts_with("TEST ") && !line.starts_with("PASS ") {
            println!("    {line}");
        }
    })?;
    if out.malformed_frames > 0 {
        println!(
            "    warning: {} log frames could not be decoded",
            out.malformed_frames
        );
    }
    let results = parse_protocol(&out.lines, out.success);
    if results.is_empty() {
        bail!("no tests ran (exit code {:?})", out.exit_code);
    }
    Ok(results)
}

/// Reads the harness protocol (`TEST`/`PASS`/`FAIL`/`DONE` lines); a test that started but did
/// not finish crashed the run (panic or fault) and counts as failed.
pub fn parse_protocol(lines: &[String], exit_success: bool) -> Vec<(String, Outcome)> {
    let mut results = Vec::new();
    let mut running: Option<String> = None;
    let mut last_crash = String::new();
    let mut done = false;
    for line in lines {
        if let Some(name) = line.strip_prefix("TEST ") {
            running = Some(name.to_string());
        } else if let Some(name) = line.strip_prefix("PASS ") {
            results.push((name.to_string(), Outcome::Passed));
            running = None;
        } else if let Some(rest) = line.strip_prefix("FAIL ") {
            let (name, why) = rest.split_once(' ').unwrap_or((rest, ""));
            results.push((name.to_string(), Outcome::Failed(why.to_string())));
            running = None;
        } else if line.starts_with("DONE ") {
            done = true;
        } else if line.starts_with("PANIC ") || line.starts_with("HARDFAULT ") {
            last_crash = line.clone();
        }
    }
    if let Some(name) = running {
        let why = if last_crash.is_empty() {
            "the run ended during this test".to_string()
        } else {
            last_crash
        };
        results.push((name, Outcome::Failed(why)));
    } else if !done {
        let why = if last_crash.is_empty() {
            "the run did not complete".to_string()
        } else {
            last_crash
        };
        results.push(("(harness)".to_string(), Outcome::Failed(why)));
    } else if !exit_success && results.iter().all(|(_, o)| *o == Outcome::Passed) {
        results.push((
            "(harness)".to_string(),
            Outcome::Failed("every test passed but the run exited with failure".into()),
        ));
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &[&str]) -> Vec<String> {
        s.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn reads_passes_and_failures() {
        let r = parse_protocol(
            &lines(&[
                "TEST a",
                "PASS a",
                "TEST b",
                "FAIL b at x.rs:3",
                "DONE passed=1 failed=1",
            ]),
            false,
        );
        assert_eq!(
            r,
            vec![
                ("a".into(), Outcome::Passed),
                ("b".into(), Outcome::Failed("at x.rs:3".into()))
            ]
        );
    }

    #[test]
    fn a_crash_fails_the_running_test() {
        let r = parse_protocol(&lines(&["TEST a", "PASS a", "TEST b", "PANIC oops"]), false);
        assert_eq!(r[1], ("b".into(), Outcome::Failed("PANIC oops".into())));
    }

    #[test]
    fn a_failure_exit_after_reported_failures_adds_nothing() {
        let r = parse_protocol(
            &lines(&["TEST a", "FAIL a at x.rs:1", "DONE passed=0 failed=1"]),
            false,
        );
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn a_run_without_done_is_a_failure() {
        let r = parse_protocol(&lines(&["TEST a", "PASS a"]), true);
        assert_eq!(r.len(), 2);
        assert!(matches!(r[1].1, Outcome::Failed(_)));
    }
}
