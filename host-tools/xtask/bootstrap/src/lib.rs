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

/// A command line as a person would type it.
pub fn shown(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
