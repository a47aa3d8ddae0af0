//! Embeds the model blob and the input(s) chosen at build time, and sizes the static arena from
//! the blob's header (read with the same reader the device uses, so an invalid blob fails the
//! build, not the device).
//!
//! Environment:
//! * `VITAE_BLOB` — the `.vblob` to embed (required).
//! * exactly one of `VITAE_INPUT` — a float32 `.npy` of shape (N, C, H, W) or (C, H, W) — and
//!   `VITAE_DIGITS` — a `VTDIGIT1` file of 8×8 digits preprocessed on the device.
//! * `VITAE_ALLOW_INVALID_BLOB=1` — embed the blob even if it does not validate (tests of the
//!   device's own validation).
//! * `VITAE_REPEAT=N` — run the embedded input(s) N times (soak test; default 1): the app checks
//!   that every repetition gives the same logits and that the stack high-water mark stays put.
//!
//! A blob or arena too large for the board fails here, naming both numbers.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

#[allow(dead_code)]
mod table {
    include!("../boards.rs");
}

fn fail(msg: &str) -> ! {
    eprintln!("\nvitae-app build: {msg}\n");
    std::process::exit(1);
}

fn path_var(name: &str) -> Option<PathBuf> {
    println!("cargo::rerun-if-env-changed={name}");
    env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Largest input file embedded (a blob or an .npy for the device's flash).
const MAX_INPUT_BYTES: u64 = 256 << 20;

fn read(path: &Path, what: &str) -> Vec<u8> {
    println!("cargo::rerun-if-changed={}", path.display());
    let meta = fs::metadata(path)
        .unwrap_or_else(|e| fail(&format!("cannot read the {what} {}: {e}", path.display())));
    if !meta.is_file() {
        fail(&format!(
            "the {what} {} is not a regular file",
            path.display()
        ));
    }
    if meta.len() > MAX_INPUT_BYTES {
        fail(&format!(
            "the {what} {} has {} bytes, more than any device's flash ({MAX_INPUT_BYTES})",
            path.display(),
            meta.len()
        ));
    }
    fs::read(path)
        .unwrap_or_else(|e| fail(&format!("cannot read the {what} {}: {e}", path.display())))
}

/// Minimal float32 .npy reader (C order, little-endian). Kept by hand rather than the `npyz`
/// crate the host tool uses: this build script reads the developer's own input for the image,
/// and `npyz` would bring its Python-literal parser (pest, num-bigint) into the Cortex-M
/// workspace's build dependencies and lock file for every firmware build.
fn npy_f32(bytes: &[u8], path: &Path) -> (Vec<usize>, Vec<u8>) {
    let bad = |why: &str| -> ! { fail(&format!("{}: not a float32 .npy ({why})", path.display())) };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bad("bad magic");
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => bad("unsupported version"),
    };
    let header = std::str::from_utf8(
        bytes
            .get(start..start + hlen)
            .unwrap_or_else(|| bad("truncated header")),
    )
    .unwrap_or_else(|_| bad("header is not text"));
    if !header.contains("'<f4'") || header.contains("'fortran_order': True") {
        bad("dtype must be '<f4', C order");
    }
    let shape_text = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap_or_else(|| bad("no shape"));
    let shape: Vec<usize> = shape_text
        .trim_start_matches([' ', '('])
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.parse()
                .unwrap_or_else(|_| bad("a shape entry is not a dimension"))
        })
        .collect();
    let data = bytes[start + hlen..].to_vec();
    let expected = shape
        .iter()
        .try_fold(4usize, |acc, &d| acc.checked_mul(d))
        .unwrap_or_else(|| bad("shape too large"));
    if data.len() != expected {
        bad("data length does not match the shape");
    }
    (shape, data)
}

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo::rerun-if-env-changed=VITAE_BOARD");
    println!("cargo::rerun-if-changed=../boards.rs");
    let Some(b) = env::var("VITAE_BOARD")
        .ok()
        .and_then(|n| table::Board::named(&n))
    else {
        fail(
            "set VITAE_BOARD to a board of firmware/boards.rs (the board folders and cargo xtask do)",
        );
    };
    let (board, blob_room, arena_room) = (b.name, b.blob_room(), b.arena_room());
    let Some(blob_path) = path_var("VITAE_BLOB") else {
        fail(
            "set VITAE_BLOB to the .vblob to embed (`cargo xtask qemu`/`demo`/`firmware` do this for you)",
        );
    };
    let blob = read(&blob_path, "model blob");
    println!("cargo::rerun-if-env-changed=VITAE_ALLOW_INVALID_BLOB");
    let allow_invalid = env::var_os("VITAE_ALLOW_INVALID_BLOB").is_some_and(|v| v == "1");
    let aligned = vitae_edge::format::AlignedBytes::new(&blob);
    let arena_len = match vitae_edge::format::Model::parse(aligned.as_bytes()) {
        Ok(m) => m.arena_len(),
        Err(e) if allow_invalid => {
            println!("cargo::warning=embedding an invalid blob on purpose: {e}");
            16
        }
        Err(e) => fail(&format!("{}: {e}", blob_path.display())),
    };
    if blob.len() as u64 > blob_room {
        fail(&format!(
            "the model blob is {} bytes but board {board} has room for {blob_room} bytes of model data",
            blob.len()
        ));
    }
    if arena_len as u64 > arena_room {
        fail(&format!(
            "the model needs a {arena_len}-byte arena but board {board} has {arena_room} bytes of RAM for it"
        ));
    }
    fs::write(out.join("model.vblob"), &blob).expect("writing OUT_DIR");

    println!("cargo::rerun-if-env-changed=VITAE_REPEAT");
    let repeat = match env::var("VITAE_REPEAT") {
        Ok(v) if !v.is_empty() => {
            v.parse::<u32>().ok().filter(|&n| n > 0).unwrap_or_else(|| {
                fail(&format!("VITAE_REPEAT must be a positive count, got `{v}`"))
            })
        }
        _ => 1,
    };

    let input = path_var("VITAE_INPUT");
    let digits = path_var("VITAE_DIGITS");
    let mut code = String::new();
    writeln!(
        code,
        "/// Bytes of the embedded blob.\npub const BLOB_LEN: usize = {};",
        blob.len()
    )
    .unwrap();
    writeln!(
        code,
        "/// Arena bytes the blob's plan needs.\npub const ARENA_LEN: usize = {};",
        arena_len.max(16)
    )
    .unwrap();
    writeln!(
        code,
        "/// Times the embedded input(s) are run (`VITAE_REPEAT`).\npub const REPEAT: usize = {repeat};"
    )
    .unwrap();
    writeln!(
        code,
        "/// The model blob, 16-byte aligned, in the board's blob region.\n#[unsafe(link_section = \".vitae_blob\")]\n\
         pub static BLOB: crate::Aligned<[u8; BLOB_LEN]> = crate::Aligned(*include_bytes!(concat!(env!(\"OUT_DIR\"), \"/model.vblob\")));"
    )
    .unwrap();
    match (input, digits) {
        (Some(p), None) => {
            let (shape, data) = npy_f32(&read(&p, "input"), &p);
            let (n, per) = match shape.as_slice() {
                [n, c, h, w] => (*n, c * h * w),
                [c, h, w] => (1, c * h * w),
                _ => fail(&format!(
                    "{}: input must be (N, C, H, W) or (C, H, W), got {shape:?}",
                    p.display()
                )),
            };
            fs::write(out.join("input.f32"), &data).expect("writing OUT_DIR");
            writeln!(
                code,
                "/// The embedded images.\npub const INPUT: crate::Inputs = crate::Inputs::F32 {{ count: {n}, per_image: {per}, \
                 data: &INPUT_BYTES.0 }};\n#[unsafe(link_section = \".vitae_blob\")]\n\
                 static INPUT_BYTES: crate::Aligned<[u8; {}]> = crate::Aligned(*include_bytes!(concat!(env!(\"OUT_DIR\"), \"/input.f32\")));",
                data.len()
            )
            .unwrap();
        }
        (None, Some(p)) => {
            let bytes = read(&p, "digits file");
            if bytes.len() < 12 || &bytes[..8] != b"VTDIGIT1" {
                fail(&format!("{}: not a VTDIGIT1 file", p.display()));
            }
            let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
            if bytes.len() != 12 + 65 * n {
                fail(&format!(
                    "{}: {} bytes, a VTDIGIT1 file with {n} images has {}",
                    p.display(),
                    bytes.len(),
                    12 + 65 * n
                ));
            }
            fs::write(out.join("digits.bin"), &bytes[12..]).expect("writing OUT_DIR");
            writeln!(
                code,
                "/// The embedded digits (64 pixels + label each).\npub const INPUT: crate::Inputs = crate::Inputs::Digits {{ count: {n}, \
                 records: include_bytes!(concat!(env!(\"OUT_DIR\"), \"/digits.bin\")) }};"
            )
            .unwrap();
        }
        _ => fail("set exactly one of VITAE_INPUT (float32 .npy) and VITAE_DIGITS (VTDIGIT1 file)"),
    }
    fs::write(out.join("embedded.rs"), code).expect("writing OUT_DIR");
}
