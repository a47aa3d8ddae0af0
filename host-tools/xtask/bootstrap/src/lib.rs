//! The first stage of `cargo xtask`: what must work before anything long starts.
//!
//! `cargo xtask …` runs this crate's binary. It checks the machine ([`setup`]: the Cortex-M
//! toolchain, its linker, QEMU, the instruction-count plugin; installing what is missing), then
//! builds the real task runner (`host-tools/xtask`, which links the whole host tool) and hands
//! over to it. The task runner uses this library too, so there is one definition of the boards,
//! the ARM toolchain and the setup check.

pub mod boards;
pub mod setup;
pub mod toolchain;

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

/// The repository root (this crate lives in host-tools/xtask/bootstrap).
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../..")
        .canonicalize()
        .expect("project root exists")
}

/// Where host builds put their output (`CARGO_TARGET_DIR` when set, else `target/`).
pub fn host_target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => project_root().join(dir),
        None => project_root().join("target"),
    }
}

/// The cargo that runs this xtask (rustup's on a normal machine), for host builds.
pub fn host_cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(project_root());
    c
}

/// Runs a command, echoing it; fails with `what` when it exits non-zero.
pub fn run_checked(mut cmd: Command, what: &str) -> Result<()> {
    println!("  $ {}", shown(&cmd));
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Set by the first stage to the Unix time (ms) `cargo xtask` started, so the task runner can say
/// how long the whole command took, first build included.
pub const STARTED_ENV: &str = "VITAE_XTASK_STARTED_MS";

/// Seconds since `cargo xtask` started (the first stage's clock), when known.
pub fn since_start() -> Option<f64> {
    let started: u128 = std::env::var(STARTED_ENV).ok()?.parse().ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis();
    Some(now.saturating_sub(started) as f64 / 1000.0)
}

/// `" (N s since `cargo xtask` started, …)"` when the first stage's clock is known.
pub fn since_start_note() -> String {
    since_start()
        .map(|s| format!(" ({s:.0} s since `cargo xtask` started, setup and builds included)"))
        .unwrap_or_default()
}

/// The exit status of a command's result, its error (and causes) printed as `error: …` lines.
pub fn exit_code(result: Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// A command line as a person would type it.
pub fn shown(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
