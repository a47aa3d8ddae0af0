//! `cargo xtask setup`: install what the build needs, once. Idempotent: a second run checks and
//! does nothing.

use crate::{project_root, run_checked, toolchain};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

/// Debian packages and why we need them.
const RUST_PACKAGES: &[(&str, &str)] = &[
    ("rustc-web", "rustc 1.96 that can build `core` for Cortex-M"),
    ("cargo-web", "its cargo"),
    ("rust-web-src", "the library sources -Zbuild-std compiles"),
    ("lld-22", "the linker behind /usr/bin/rust-lld"),
    ("rust-web-clippy", "clippy for the ARM builds"),
    ("rustfmt-web", "rustfmt matching that rustc"),
];
const TOOL_PACKAGES: &[(&str, &str)] = &[
    (
        "qemu-system-arm",
        "runs the firmware on the mps2/mps3 boards",
    ),
    ("gcc-arm-none-eabi", "objdump/size for the firmware"),
];

/// Where the instruction-count plugin is built.
pub fn icount_plugin_path() -> PathBuf {
    project_root()
        .join("target")
        .join("qemu-icount")
        .join("libicount.so")
}

fn package_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn sudo_works() -> bool {
    Command::new("sudo")
        .args(["-n", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn setup(quiet: bool) -> Result<()> {
    let use_rustup = toolchain::rustup_has_thumb_targets();
    let mut wanted: Vec<(&str, &str)> = TOOL_PACKAGES.to_vec();
    if !use_rustup {
        wanted.extend_from_slice(RUST_PACKAGES);
    }
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(p, _)| !package_installed(p))
        .map(|(p, _)| *p)
        .collect();
    let mut did_something = false;
    if !missing.is_empty() {
        install_packages(&missing, &wanted)?;
        did_something = true;
    }
    did_something |= build_icount_plugin()?;
    if !did_something && !quiet {
        let arm = if use_rustup {
            "rustup thumb targets"
        } else {
            "Debian rustc-web + build-std"
        };
        println!("setup: everything is in place ({arm}, QEMU, icount plugin); nothing to do");
    }
    Ok(())
}

fn install_packages(missing: &[&str], wanted: &[(&str, &str)]) -> Result<()> {
    println!("setup: installing Debian packages: {}", missing.join(" "));
    for (p, why) in wanted.iter().filter(|(p, _)| missing.contains(p)) {
        println!("  {p:18} {why}");
    }
    let has_apt = Command::new("apt-get").arg("--version").output().is_ok();
    if !has_apt {
        bail!(
            "apt-get is not available on this machine. Install the equivalents of {} by hand, or use a \
             rustup toolchain with `rustup target add thumbv7em-none-eabihf thumbv8m.main-none-eabihf` \
             plus qemu-system-arm",
            missing.join(", ")
        );
    }
    let prefix: Vec<&str> = if is_root() {
        vec![]
    } else if sudo_works() {
        vec!["sudo", "-n"]
    } else {
        bail!(
            "installing packages needs root. Run this once, then rerun the command:\n  sudo apt-get update && \
             sudo apt-get install -y --no-install-recommends {}",
            missing.join(" ")
        );
    };
    let apt = |args: &[&str]| -> Command {
        let argv: Vec<&str> = prefix
            .iter()
            .copied()
            .chain(["apt-get"])
            .chain(args.iter().copied())
            .collect();
        let mut c = Command::new(argv[0]);
        c.args(&argv[1..]).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    run_checked(apt(&["update", "-q"]), "apt-get update")?;
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(missing);
    run_checked(install, "apt-get install")?;
    Ok(())
}

/// Builds the QEMU plugin with the system C compiler when it is missing or older than its source.
fn build_icount_plugin() -> Result<bool> {
    let src_dir = project_root().join("host-tools").join("qemu-icount");
    let out = icount_plugin_path();
    let newest_src = ["icount.c", "qemu_plugin_api_v1.h"]
        .iter()
        .filter_map(|f| {
            std::fs::metadata(src_dir.join(f))
                .and_then(|m| m.modified())
                .ok()
        })
        .max()
        .context("host-tools/qemu-icount sources are missing")?;
    if let Ok(m) = std::fs::metadata(&out).and_then(|m| m.modified()) {
        if m >= newest_src {
            return Ok(false);
        }
    }
    std::fs::create_dir_all(out.parent().expect("plugin path has a parent"))?;
    println!(
        "setup: building the QEMU instruction-count plugin -> {}",
        out.display()
    );
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut cmd = Command::new(&cc);
    cmd.args([
        "-O2",
        "-Wall",
        "-Wextra",
        "-fvisibility=hidden",
        "-shared",
        "-fPIC",
        "-o",
    ])
    .arg(&out)
    .arg(src_dir.join("icount.c"));
    run_checked(cmd, &format!("{cc} (building the icount plugin)"))?;
    Ok(true)
}
