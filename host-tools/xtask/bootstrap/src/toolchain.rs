//! Which Rust toolchain builds for Cortex-M here, and how to call it.
//!
//! Two ways work: a rustup toolchain with the thumb targets installed (a normal laptop), or, where
//! rustup cannot fetch ARM targets, Debian's `rustc-web` (1.96) building `core` from
//! `rust-web-src` with `-Zbuild-std` (needs `RUSTC_BOOTSTRAP=1` in cargo's own environment).
//! `VITAE_ARM_TOOLCHAIN=rustup|debian` overrides the detection.

use anyhow::{Result, bail};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Rust targets of the boards, one per Cortex-M family we build for.
pub const THUMB_TARGETS: &[&str] = &["thumbv7em-none-eabihf", "thumbv8m.main-none-eabihf"];
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
pub const DEBIAN_CARGO: &str = "/usr/bin/cargo";
pub const DEBIAN_CLIPPY: &str = "/usr/bin/clippy-driver";
/// What `-Zbuild-std` compiles.
pub const DEBIAN_LIBRARY_SRC: &str = "/usr/lib/rustlib/src/rust/library/core/src/lib.rs";
/// The linker the thumb targets name by default (rustc's `gnu-lld` flavour).
pub const DEFAULT_LINKER: &str = "rust-lld";

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

    /// A `cargo` command that builds firmware for `board`: its target and CPU, and
    /// `VITAE_BOARD`, which the firmware build scripts read (memory map, limits, log transport).
    pub fn cargo_for_board(
        self,
        subcommand: &str,
        board: &crate::boards::Board,
        target_dir: &Path,
    ) -> Command {
        let mut cmd = self.cargo(subcommand, board.target, board.cpu, target_dir);
        cmd.env("VITAE_BOARD", board.name);
        cmd
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
                c.env("PATH", self.search_path());
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

    /// The `PATH` the ARM builds run with (Debian's tools first for the Debian toolchain).
    pub fn search_path(self) -> OsString {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs: Vec<PathBuf> = Vec::new();
        if self == ArmToolchain::Debian {
            dirs.push(PathBuf::from("/usr/bin"));
        }
        dirs.extend(std::env::split_paths(&path));
        std::env::join_paths(dirs).unwrap_or(path)
    }

    /// The `rustc` that compiles for ARM, as a command.
    pub fn rustc(self) -> Command {
        match self {
            ArmToolchain::Rustup => {
                Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
            }
            ArmToolchain::Debian => Command::new(DEBIAN_RUSTC),
        }
    }

    /// An LLVM binary tool (`llvm-objdump`, `llvm-symbolizer`: they know MVE without options and
    /// read the ELF's build attributes), found by running `<name>-22`, `<name>`, then the one in
    /// rustc's sysroot (rustup's `llvm-tools`); on failure, the names tried. Debian's
    /// `rust-web-llvm` pulls in `llvm-22`.
    pub fn llvm_tool(self, name: &str) -> Result<PathBuf, String> {
        let mut candidates: Vec<PathBuf> = vec![format!("{name}-22").into(), name.into()];
        if let Some(dir) = self.sysroot_tool_dir() {
            candidates.push(dir.join(name));
        }
        for c in &candidates {
            let ok = Command::new(c)
                .arg("--version")
                .env("PATH", self.search_path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(c.clone());
            }
        }
        Err(format!(
            "is not there (tried {})",
            candidates
                .iter()
                .map(|c| c.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    /// The linker cargo will give rustc for `target`, and where that choice comes from: cargo's
    /// `CARGO_TARGET_<TRIPLE>_LINKER` override, else the target's own default (`rust-lld`).
    pub fn linker(self, target: &str) -> Linker {
        let var = format!(
            "CARGO_TARGET_{}_LINKER",
            target.to_uppercase().replace(['-', '.'], "_")
        );
        match std::env::var_os(&var) {
            Some(v) => Linker {
                program: PathBuf::from(v),
                origin: format!("set by {var}"),
            },
            None => Linker {
                program: PathBuf::from(DEFAULT_LINKER),
                origin: format!("{target}'s default linker"),
            },
        }
    }

    /// Where rustc itself looks for `rust-lld`, besides `PATH`: its sysroot's tool directory.
    pub fn sysroot_tool_dir(self) -> Option<PathBuf> {
        let out = self.rustc().arg("-vV").output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let host = text.lines().find_map(|l| l.strip_prefix("host: "))?.trim();
        let out = self.rustc().args(["--print", "sysroot"]).output().ok()?;
        let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Some(
            Path::new(&sysroot)
                .join("lib/rustlib")
                .join(host)
                .join("bin"),
        )
    }
}

/// A linker choice for one target.
#[derive(Debug, Clone)]
pub struct Linker {
    pub program: PathBuf,
    /// For messages: which setting chose it.
    pub origin: String,
}

impl Linker {
    /// The executable the name resolves to, the way the build will resolve it: a path as given,
    /// a bare name on `search_path` or in rustc's sysroot tool directory.
    pub fn resolve(&self, search_path: &OsString, sysroot_tools: Option<&Path>) -> Option<PathBuf> {
        if self.program.components().count() > 1 {
            return is_executable(&self.program).then(|| self.program.clone());
        }
        std::env::split_paths(search_path)
            .chain(sysroot_tools.map(Path::to_path_buf))
            .map(|d| d.join(&self.program))
            .find(|p| is_executable(p))
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
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

/// The toolchain ARM builds will use once setup has installed what it needs: the override, else
/// rustup when it has the thumb targets, else Debian's.
pub fn planned() -> Result<ArmToolchain> {
    match std::env::var("VITAE_ARM_TOOLCHAIN").as_deref() {
        Ok("rustup") => Ok(ArmToolchain::Rustup),
        Ok("debian") => Ok(ArmToolchain::Debian),
        Ok(other) => bail!("VITAE_ARM_TOOLCHAIN={other}: expected `rustup` or `debian`"),
        Err(_) if rustup_has_thumb_targets() => Ok(ArmToolchain::Rustup),
        Err(_) => Ok(ArmToolchain::Debian),
    }
}

/// Picks the toolchain for ARM builds; fails when it is not installed.
pub fn detect() -> Result<ArmToolchain> {
    let tc = planned()?;
    if tc == ArmToolchain::Debian && !debian_toolchain_present() {
        bail!(
            "no Rust toolchain here can build for Cortex-M: run `cargo xtask setup` (or `rustup target add {}`)",
            THUMB_TARGETS.join(" ")
        )
    }
    Ok(tc)
}
