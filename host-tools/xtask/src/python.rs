//! `cargo xtask test`'s Python step: the package in host-tools/python (`pip install
//! ./host-tools/python`, module `vitae_edge`) built and installed into a virtual environment
//! under the target directory, clippy on its native module, then its pytest tests against the
//! `vitae` binary.
//!
//! Skipped, with a message, only where there is no `python3`: a Python whose venv or pip fails
//! fails the step. The environment is kept between runs (`target/python-venv`): numpy, pytest
//! and maturin are installed into it once, and the package is built without build isolation and
//! into the host target directory, so a later run needs no network and recompiles only what
//! changed.

use crate::{host_cargo, project_root, run_checked};
use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;
use xtask_bootstrap::host_target_dir;

/// What the tests need besides the package itself (which declares numpy); maturin matches
/// pyproject.toml's build requirement.
const TOOLS: [&str; 3] = ["numpy>=1.21", "pytest>=7", "maturin>=1.9.4,<2"];

/// Runs the step; `Ok` also when it is skipped for want of `python3`.
pub fn check() -> Result<()> {
    match Command::new("python3").arg("--version").output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!(
                "    skipped: no python3 on PATH, so the Python package (host-tools/python) is neither built nor tested"
            );
            return Ok(());
        }
        Err(e) => return Err(e).context("running python3 --version"),
        Ok(out) => print!("    {}", String::from_utf8_lossy(&out.stdout)),
    }
    let root = project_root();
    let target = host_target_dir();
    let venv = target.join("python-venv");
    let python = venv.join("bin").join("python");
    if !python.is_file() {
        let mut c = Command::new("python3");
        c.args(["-m", "venv"]).arg(&venv);
        run_checked(
            c,
            "python3 -m venv (on Debian: apt-get install python3-venv)",
        )?;
    }
    let mut c = pip(&python);
    c.args(TOOLS);
    run_checked(c, "pip install of the test tools")?;

    // The binary the tests compare with.
    let mut c = host_cargo();
    c.args(["build", "--release", "--package", "vitae", "--bin", "vitae"]);
    run_checked(c, "cargo build of vitae")?;

    let manifest = root.join("host-tools/python/Cargo.toml");
    let mut c = host_cargo();
    c.args(["clippy", "--all-targets", "--manifest-path"])
        .arg(&manifest)
        .args(["--", "-D", "warnings"])
        .env("CARGO_TARGET_DIR", &target)
        .env("PYO3_PYTHON", &python);
    run_checked(c, "clippy of host-tools/python")?;

    // Rebuilt and reinstalled every run (same version number, so pip must be told).
    let mut c = pip(&python);
    c.args(["--no-build-isolation", "--no-deps", "--force-reinstall"])
        .arg(root.join("host-tools/python"))
        .env("CARGO_TARGET_DIR", &target);
    run_checked(c, "pip install ./host-tools/python")?;

    let mut c = Command::new(&python);
    c.current_dir(&root)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("host-tools/python/tests"))
        .env("VITAE_BIN", target.join("release").join("vitae"));
    run_checked(c, "pytest of host-tools/python")
}

/// `python -m pip install` quietly, without the version nag, with the environment's `bin/`
/// first on PATH as if it were activated: without build isolation, maturin's Python hook runs
/// the `maturin` executable installed there by name.
fn pip(python: &Path) -> Command {
    let mut c = Command::new(python);
    if let Some(bin) = python.parent() {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let joined = std::env::join_paths(
            std::iter::once(bin.to_path_buf()).chain(std::env::split_paths(&path)),
        );
        if let Ok(joined) = joined {
            c.env("PATH", joined);
        }
    }
    c.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]);
    c
}
