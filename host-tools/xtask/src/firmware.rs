//! Building Cortex-M binaries of the firmware workspace (`firmware/`, which also holds the
//! on-target test crate `tests/qemu`).

use crate::boards::Board;
use crate::toolchain::ArmToolchain;
use crate::{project_root, run_checked};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// What to build.
#[derive(Debug, Clone)]
pub struct Build<'a> {
    pub board: &'a Board,
    pub what: Binary,
    /// Extra environment for build scripts (e.g. which blob to embed).
    pub env: Vec<(String, String)>,
}

/// Which binary of the firmware workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// The application, linked by the board's own package `firmware/boards/<board>`.
    App,
    /// The on-target test binary (`tests/qemu`); `demo_failure` adds a deliberately failing test.
    Tests { demo_failure: bool },
    /// An example of `firmware/examples/<name>` (package `example-<name>`).
    Example(&'static str),
}

impl Build<'_> {
    pub fn app(board: &Board) -> Build<'_> {
        Build {
            board,
            what: Binary::App,
            env: Vec::new(),
        }
    }
}

pub use crate::setup::arm_target_dir;

/// Builds the binary and copies it to `target/firmware/<board>/<package>.elf` (M4 and M7 share a
/// Rust target, so cargo's own output path is not per board). Returns that path.
pub fn build(tc: ArmToolchain, b: &Build) -> Result<PathBuf> {
    let (package, features) = match b.what {
        Binary::App => (format!("vitae-fw-{}", b.board.name), vec![]),
        Binary::Tests { demo_failure } => {
            let f = if demo_failure {
                vec!["demo-failure"]
            } else {
                vec![]
            };
            ("vitae-qemu-tests".to_string(), f)
        }
        Binary::Example(name) => (format!("example-{name}"), vec![]),
    };
    let mut cmd = tc.cargo_for_board("build", b.board, &arm_target_dir());
    cmd.current_dir(project_root().join("firmware")).args([
        "--release",
        "--package",
        &package,
        "--bin",
        &package,
    ]);
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    cmd.env("DEFMT_LOG", "info");
    for (k, v) in &b.env {
        cmd.env(k, v);
    }
    run_checked(cmd, &format!("building {package} for {}", b.board.name))?;
    let built = arm_target_dir()
        .join(b.board.target)
        .join("release")
        .join(&package);
    let dest_dir = project_root()
        .join("target")
        .join("firmware")
        .join(b.board.name);
    std::fs::create_dir_all(&dest_dir)?;
    let dest = dest_dir.join(format!("{package}.elf"));
    std::fs::copy(&built, &dest).with_context(|| format!("copying {}", built.display()))?;
    Ok(dest)
}

/// Section sizes of an ELF (flash = text + rodata + data + blob; RAM = data + bss + arena).
#[derive(Debug, Default, Clone, Copy)]
pub struct Sizes {
    pub flash: u64,
    pub ram: u64,
}

/// Reads the section sizes from the ELF's section headers.
pub fn sizes(elf: &std::path::Path) -> Result<Sizes> {
    use object::{Object, ObjectSection};
    let bytes = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
    let file = object::File::parse(&*bytes)
        .with_context(|| format!("{} is not an ELF file", elf.display()))?;
    let mut s = Sizes::default();
    for section in file.sections() {
        let size = section.size();
        match section.name().unwrap_or("") {
            ".vector_table" | ".text" | ".rodata" | ".vitae_blob" => s.flash += size,
            ".data" => {
                s.flash += size;
                s.ram += size;
            }
            ".bss" | ".uninit" | ".vitae_arena" => s.ram += size,
            _ => {}
        }
    }
    Ok(s)
}
