//! Puts the selected board's `memory.x` where cortex-m-rt's `link.x` finds it.
use std::{env, fs, path::PathBuf};

const BOARDS: &[&str] = &[
    "mps2-an386",
    "mps2-an500",
    "mps3-an547",
    "nucleo-h743zi",
    "nrf52840-dk",
];

fn main() {
    let selected: Vec<&str> = BOARDS
        .iter()
        .copied()
        .filter(|b| {
            env::var_os(format!(
                "CARGO_FEATURE_{}",
                b.to_uppercase().replace('-', "_")
            ))
            .is_some()
        })
        .collect();
    let board = match selected.as_slice() {
        [one] => *one,
        [] => panic!("vitae-board: select a board feature, one of {BOARDS:?}"),
        many => panic!("vitae-board: select exactly one board feature, got {many:?}"),
    };
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let src = manifest
        .join("..")
        .join("boards")
        .join(board)
        .join("memory.x");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    fs::copy(&src, out.join("memory.x"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", src.display()));
    let sections = manifest.join("..").join("boards").join("vitae-sections.x");
    fs::copy(&sections, out.join("vitae-sections.x"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", sections.display()));
    println!("cargo::rerun-if-changed={}", sections.display());
    println!("cargo::rustc-link-search={}", out.display());
    println!("cargo::rerun-if-changed={}", src.display());
    println!("cargo::rustc-env=VITAE_BOARD={board}");
}
