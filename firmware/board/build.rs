//! Selects the board (`VITAE_BOARD`, one of `firmware/boards.rs`), checks that the build's target
//! and `-C target-cpu` are the board's, writes its `memory.x` (generated from the table) and the
//! shared sections where cortex-m-rt's `link.x` finds them, and tells the crate which board and
//! core it is built for.
use std::{env, fs, path::PathBuf};

#[allow(dead_code)]
mod table {
    include!("../boards.rs");
}

fn fail(msg: &str) -> ! {
    eprintln!("\nvitae-board build: {msg}\n");
    std::process::exit(1);
}

fn main() {
    println!("cargo::rerun-if-env-changed=VITAE_BOARD");
    println!("cargo::rerun-if-changed=../boards.rs");
    let names: Vec<&str> = table::BOARDS.iter().map(|b| b.name).collect();
    let Ok(name) = env::var("VITAE_BOARD") else {
        fail(&format!(
            "set VITAE_BOARD to one of {names:?} (each board folder's .cargo/config.toml does; cargo xtask does)"
        ));
    };
    let Some(board) = table::Board::named(&name) else {
        fail(&format!(
            "VITAE_BOARD={name} is not a board; known: {names:?}"
        ));
    };
    if let Some(problem) = board.problem() {
        fail(&format!("firmware/boards.rs: {problem}"));
    }
    // The board folder's .cargo/config.toml (or the xtask) chose the target and CPU; they must be
    // the table's, or the memory map and the kernels selected would belong to another core.
    let target = env::var("TARGET").expect("set by cargo");
    let rustflags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if let Err(mismatch) = board.check_build(&target, &rustflags) {
        fail(&mismatch);
    }
    let transport = if board.is_qemu() { "qemu" } else { "probe" };
    if env::var_os(format!("CARGO_FEATURE_{}", transport.to_uppercase())).is_none() {
        fail(&format!(
            "board {name} logs through its `{transport}` transport: build with vitae-board's feature `{transport}`"
        ));
    }
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    fs::write(out.join("memory.x"), board.memory_x())
        .unwrap_or_else(|e| fail(&format!("writing memory.x: {e}")));
    let sections = manifest.join("..").join("boards").join("vitae-sections.x");
    fs::copy(&sections, out.join("vitae-sections.x"))
        .unwrap_or_else(|e| fail(&format!("copying {}: {e}", sections.display())));
    println!("cargo::rerun-if-changed={}", sections.display());
    println!("cargo::rustc-link-search={}", out.display());
    println!("cargo::rustc-env=VITAE_BOARD={name}");
    println!("cargo::rustc-env=VITAE_CORE={}", board.core);
}
