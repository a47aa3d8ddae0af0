//! Build script of the examples that embed a model: links the binary for the board (as every
//! board package does) and tells `include_model!` / `include_bytes!` which files to embed.
//!
//! `VITAE_BLOB` (a `.vblob`) and `VITAE_IMAGE` (one u8 image, raw HWC bytes) choose them; by
//! default the digits demo's u8-input blob and first test digit that `cargo xtask examples`
//! writes to `target/vitae/examples/`. In your own firmware the path is simply written in the
//! macro: `include_model!("../model.vblob")`.
use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-link-arg-bins=-Tlink.x");
    println!("cargo::rustc-link-arg-bins=-Tdefmt.x");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let defaults = manifest.join("../../../target/vitae/examples");
    for (var, default, what) in [
        ("VITAE_BLOB", "digits-int8-u8.vblob", "model blob"),
        ("VITAE_IMAGE", "digit-u8.bin", "u8 image"),
    ] {
        println!("cargo::rerun-if-env-changed={var}");
        let path = env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| defaults.join(default));
        if !path.is_file() {
            eprintln!(
                "\nexample build: the {what} {} does not exist: run `cargo xtask examples` once (it writes the demo's), or set {var}\n",
                path.display()
            );
            std::process::exit(1);
        }
        let path = path.canonicalize().expect("an existing file");
        println!("cargo::rerun-if-changed={}", path.display());
        println!("cargo::rustc-env=EXAMPLE_{var}={}", path.display());
    }
}
