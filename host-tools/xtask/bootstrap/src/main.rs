//! `cargo xtask …`: checks the machine first ([`xtask_bootstrap::setup`], seconds), then builds
//! the task runner (`host-tools/xtask`: the long first compile, with cargo's progress shown) and
//! runs it with the same arguments.
//!
//! Commands that build or run Cortex-M code get the setup check before the long compile, so a
//! missing linker or QEMU is reported in the first seconds of a new machine, not after minutes.

use std::ffi::OsString;
use std::process::{Command, ExitCode};
use xtask_bootstrap::{STARTED_ENV, exit_code, host_cargo, host_target_dir, setup, shown};

/// Subcommands that need the ARM toolchain or QEMU (all of them unless `--host-only`).
const NEEDS_ARM_TOOLS: &[&str] = &[
    "test",
    "demo",
    "qemu",
    "firmware",
    "flash",
    "bench",
    "soak",
    "firmware-bad-blobs",
];

fn main() -> ExitCode {
    let started = std::env::var(STARTED_ENV).unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
            .to_string()
    });
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let words: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
    let command = words.first().copied().unwrap_or("");
    let asks_help = words.iter().any(|w| matches!(*w, "-h" | "--help"));

    if command == "setup" && !asks_help {
        return exit_code(setup::setup(false));
    }
    if NEEDS_ARM_TOOLS.contains(&command)
        && !asks_help
        && !words.contains(&"--host-only")
        && let Err(e) = setup::setup(true)
    {
        return exit_code(Err(e));
    }

    // The task runner. Its first build is long (it links the whole host tool): say so, and let
    // cargo show its progress; later builds are quick and stay quiet.
    let runner = host_target_dir().join("debug").join("xtask");
    let first_build = !runner.exists();
    let mut build = host_cargo();
    build.args(["build", "--package", "xtask"]);
    if first_build {
        println!(
            "xtask: building the host tools (first build: about 4 minutes on 2 cores; later runs start at once)"
        );
    } else {
        build.arg("--quiet");
    }
    match build.status() {
        Ok(s) if s.success() => {}
        Ok(s) => {
            eprintln!(
                "error: building the task runner failed ({s}): {}",
                shown(&build)
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("error: cannot start cargo ({e}): {}", shown(&build));
            return ExitCode::FAILURE;
        }
    }
    let mut run = Command::new(&runner);
    run.args(&args).env(STARTED_ENV, started);
    exec(run)
}

/// Replaces this process with `cmd` (exit status and signals pass straight through).
fn exec(mut cmd: Command) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let e = cmd.exec();
    eprintln!("error: cannot run {}: {e}", shown(&cmd));
    ExitCode::FAILURE
}
