//! Which Rust toolchain builds for Cortex-M here, and how to call it.
//!
//! Two ways work: a rustup toolchain with the thumb targets installed (a normal laptop), or, where
//! rustup cannot fetch ARM targets, Debian's `rustc-web` (1.96) building `core` from
//! `rust-web-src` with `-Zbuild-std` (needs `RUSTC_BOOTSTRAP=1` in cargo's own environment).
//! `VITAE_ARM_TOOLCHAIN=rustup|debian` overrides the detection.

use anyhow::{Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const THUMB_TARGETS: &[&str] = &["thumbv7em-none-eabihf", "thumbv8m.main-none-eabihf"];
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_LIBRARY_SRC: &str = "/usr/lib/rustlib/src/rust/library/core";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArmToolchain {
    /// rustup's cargo with the thumb targets installed; no build-std.
    Rustup,
    /// Debian's cargo/rustc with build-std.
    Debian,
}

impl ArmToolchain {
    pub fn describe(self) -> &'static str {
        match self {
            ArmToolchain::Rustup => "rustup toolchain with the thumb targets installed",
            ArmToolchain::Debian => "Debian rustc-web + rust-web-src (-Zbuild-std=core,alloc)",
        }
    }

    /// A `cargo` command for an ARM build (`subcommand` is e.g. "build" or "clippy"), with the
    /// target, CPU and target dir set. The caller adds the packages and features.
    pub fn cargo(self, subcommand: &str, target: &str, cpu: &str, target_dir: &Path) -> Command {
        self.cargo_with_rustflags(
            subcommand,
            target,
            &format!("-Ctarget-cpu={cpu}"),
            target_dir,
        )
    }

    /// As [`cargo`](Self::cargo), with explicit rustflags instead of a CPU.
    pub fn cargo_with_rustflags(
        self,
        subcommand: &str,
        target: &str,
        rustflags: &str,
        target_dir: &Path,
    ) -> Command {
        let mut cmd = match self {
            ArmToolchain::Rustup => {
                let mut c =
                    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
                c.arg(subcommand);
                c
            }
            ArmToolchain::Debian => {
                let mut c = Command::new(DEBIAN_CARGO);
                c.arg(subcommand).arg("-Zbuild-std=core,alloc");
                c.env("RUSTC", DEBIAN_RUSTC).env("RUSTC_BOOTSTRAP", "1");
                // Debian's cargo must find Debian's clippy-driver/rustdoc, not rustup's proxies.
                let path = std::env::var_os("PATH").unwrap_or_default();
                let mut dirs = vec![PathBuf::from("/usr/bin")];
                dirs.extend(std::env::split_paths(&path));
                c.env(
                    "PATH",
                    std::env::join_paths(dirs).expect("PATH entries are valid"),
                );
                c.env_remove("RUSTUP_TOOLCHAIN").env_remove("RUSTC_WRAPPER");
                c
            }
        };
        cmd.arg("--target").arg(target);
        // The outer `cargo xtask` may have set these for the host build; they must not leak.
        for var in [
            "RUSTFLAGS",
            "CARGO_BUILD_RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_BUILD_TARGET",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags);
        cmd.env("CARGO_TARGET_DIR", target_dir);
        cmd
    }
}

/// True when rustup has every thumb target we build for.
pub fn rustup_has_thumb_targets() -> bool {
    let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        return false;
    };
    let installed = String::from_utf8_lossy(&out.stdout);
    out.status.success()
        && THUMB_TARGETS
            .iter()
            .all(|t| installed.lines().any(|l| l.trim() == *t))
}

/// True when Debian's toolchain and library sources are installed.
pub fn debian_toolchain_present() -> bool {
    Path::new(DEBIAN_RUSTC).exists()
        && Path::new(DEBIAN_CARGO).exists()
        && Path::new(DEBIAN_LIBRARY_SRC).exists()
}

/// Picks the toolchain for ARM builds.
pub fn detect() -> Result<ArmToolchain> {
    match std::env::var("VITAE_ARM_TOOLCHAIN").as_deref() {
        Ok("rustup") => return Ok(ArmToolchain::Rustup),
        Ok("debian") => return Ok(ArmToolchain::Debian),
        Ok(other) => bail!("VITAE_ARM_TOOLCHAIN={other}: expected `rustup` or `debian`"),
        Err(_) => {}
    }
    if rustup_has_thumb_targets() {
        Ok(ArmToolchain::Rustup)
    } else if debian_toolchain_present() {
        Ok(ArmToolchain::Debian)
    } else {
        bail!(
            "no Rust toolchain here can build for Cortex-M: run `cargo xtask setup` (or `rustup target add {}`)",
            THUMB_TARGETS.join(" ")
        )
    }
}
