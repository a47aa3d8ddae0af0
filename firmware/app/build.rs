//! Embeds the model blob and the input(s) chosen at build time, and sizes the static arena from
//! the blob's header (read with the same reader the device uses, so an invalid blob fails the
//! build, not the device).
//!
//! Environment:
//! * `VITAE_BLOB` — the `.vblob` to embed (required).
//! * exactly one of `VITAE_INPUT` — a float32 `.npy` of shape (N, C, H, W) or (C, H, W), or for a
//!   blob quantized with `--input u8` a uint8 `.npy` of pixels (N, H, W, C) or (H, W, C) — and
//!   `VITAE_DIGITS` — a `VTDIGIT1` file of 8×8 digits preprocessed on the device.
//! * `VITAE_ALLOW_INVALID_BLOB=1` — embed the blob even if it does not validate (tests of the
//!   device's own validation).
//! * `VITAE_REPEAT=N` — run the embedded input(s) N times (soak test; default 1): the app checks
//!   that every repetition gives the same logits and that the stack high-water mark stays put.
//! * `VITAE_STAGE=BYTES` — stage weights: a buffer of that many bytes in the fastest arena region
//!   with room for it, into which each op's tables that fit are copied from the blob before the
//!   op runs (`Runner::stage_weights`); for a blob in slow external memory. Default 0 (off).
//! * `VITAE_STAGE_AHEAD=1` — with `VITAE_STAGE`: double-buffered (`Runner::stage_weights_ahead`),
//!   the next op's tables copied into one half while an op runs from the other (here by the core,
//!   `MemCopy`: the path a DMA channel would take, without the overlap).
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

/// Deepest bracket nesting accepted in a `.npy` header: numpy writes a flat dict holding one
/// tuple. The literal parser behind `npyz` recurses once per level, and a header nested some
/// thousands deep overflows this build script's stack instead of failing with a message.
const MAX_HEADER_NESTING: usize = 4;

/// How deeply the header's brackets nest, outside quotes: from the end of the preamble (magic,
/// version and the header length: 10 bytes in format version 1, 12 in 2 and 3) to the newline
/// numpy ends the header with.
fn header_nesting(bytes: &[u8]) -> usize {
    let preamble = if bytes.get(6) == Some(&1) { 10 } else { 12 };
    let header = bytes.get(preamble..).unwrap_or_default();
    let (mut depth, mut deepest, mut quote) = (0usize, 0usize, None);
    for &b in header.iter().take_while(|&&b| b != b'\n') {
        match (quote, b) {
            (Some(q), b) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(b),
            (None, b'(' | b'[' | b'{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (None, b')' | b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// A float32 `.npy` array, read with `npyz`: its shape and its elements as little-endian bytes
/// (what the device reads). Either byte order is accepted; anything but a float32 C-order array
/// whose data holds exactly the bytes its shape needs is refused, naming the file (two inputs
/// that npyz does not turn into errors are caught here: see below).
/// Element type of an input `.npy`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Elem {
    F32,
    U8,
}

/// A float32 or uint8 `.npy`: its shape, element type and little-endian data bytes.
fn npy_input(bytes: &[u8], path: &Path) -> (Vec<usize>, Elem, Vec<u8>) {
    let bad = |why: &str| -> ! {
        fail(&format!(
            "{}: not a float32 or uint8 .npy ({why})",
            path.display()
        ))
    };
    if header_nesting(bytes) > MAX_HEADER_NESTING {
        bad(&format!(
            "header nested more than {MAX_HEADER_NESTING} levels deep"
        ));
    }
    // npyz multiplies the dimensions unchecked, which panics where overflow checks are on (a
    // debug build of this script): that is this file's error, not a crash of the build.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let read = std::panic::catch_unwind(|| {
        let mut data = bytes;
        npyz::NpyHeader::from_reader(&mut data).map(|header| (header, data))
    });
    std::panic::set_hook(default_hook);
    let (header, data) = match read {
        Ok(Ok(read)) => read,
        Ok(Err(e)) => bad(&e.to_string()),
        Err(_) => bad("shape too large"),
    };
    let elem = match header.dtype() {
        npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Float && t.size_field() == 4 => {
            Elem::F32
        }
        npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Uint && t.size_field() == 1 => {
            Elem::U8
        }
        other => bad(&format!("dtype {}", other.descr())),
    };
    if header.order() == npyz::Order::Fortran {
        bad("Fortran order; save a C-order array");
    }
    let shape: Vec<usize> = header
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or_else(|_| bad("shape too large")))
        .collect();
    let needed = shape
        .iter()
        .try_fold(if elem == Elem::F32 { 4usize } else { 1 }, |acc, &d| {
            acc.checked_mul(d)
        })
        .unwrap_or_else(|| bad("shape too large"));
    if data.len() != needed {
        bad(&format!(
            "{} data bytes, shape {shape:?} needs {needed}",
            data.len()
        ));
    }
    if elem == Elem::U8 {
        return (shape, elem, data.to_vec());
    }
    let values: Vec<f32> = npyz::NpyFile::with_header(header, data)
        .into_vec()
        .unwrap_or_else(|e| bad(&e.to_string()));
    (
        shape,
        elem,
        values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
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
    let (board, blob_room) = (b.name, b.blob_room());
    let Some(blob_path) = path_var("VITAE_BLOB") else {
        fail(
            "set VITAE_BLOB to the .vblob to embed (`cargo xtask qemu`/`demo`/`firmware` do this for you)",
        );
    };
    let blob = read(&blob_path, "model blob");
    println!("cargo::rerun-if-env-changed=VITAE_ALLOW_INVALID_BLOB");
    let allow_invalid = env::var_os("VITAE_ALLOW_INVALID_BLOB").is_some_and(|v| v == "1");
    let aligned = vitae_edge::format::AlignedBytes::new(&blob);
    let part_lens: Vec<u64> = match vitae_edge::format::Model::parse(aligned.as_bytes()) {
        Ok(m) => (0..m.arena_parts())
            .map(|i| m.arena_part(i).len() as u64)
            .collect(),
        Err(e) if allow_invalid => {
            println!("cargo::warning=embedding an invalid blob on purpose: {e}");
            vec![16]
        }
        Err(e) => fail(&format!("{}: {e}", blob_path.display())),
    };
    if blob.len() as u64 > blob_room {
        fail(&format!(
            "the model blob is {} bytes but board {board} has room for {blob_room} bytes of model data",
            blob.len()
        ));
    }
    let part_regions = b
        .place_arena(&part_lens)
        .unwrap_or_else(|e| fail(&format!("{}: {e}", blob_path.display())));
    println!("cargo::rerun-if-env-changed=VITAE_STAGE");
    let stage = match env::var("VITAE_STAGE") {
        Ok(v) if !v.is_empty() => v
            .parse::<u64>()
            .unwrap_or_else(|_| fail(&format!("VITAE_STAGE must be a byte count, got `{v}`"))),
        _ => 0,
    }
    .next_multiple_of(32);
    println!("cargo::rerun-if-env-changed=VITAE_STAGE_AHEAD");
    let stage_ahead = env::var_os("VITAE_STAGE_AHEAD").is_some_and(|v| v == "1");
    // The staging buffer goes to the fastest arena region with room beside the arena parts.
    let stage_region = (stage > 0).then(|| {
        (0..b.arena.len())
            .find(|&r| {
                let used: u64 = part_regions
                    .iter()
                    .zip(&part_lens)
                    .filter(|&(&pr, _)| pr == r)
                    .map(|(_, &len)| len)
                    .sum();
                used + stage <= b.arena_room(r)
            })
            .unwrap_or_else(|| {
                fail(&format!(
                    "VITAE_STAGE={stage}: no arena region of board {board} has room for the staging buffer beside the arena"
                ))
            })
    });
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
    // One static per arena part, in the section of its region (memory.x places `.vitae_arenaN`
    // in the board's arena region N).
    writeln!(
        code,
        "/// Parts of the arena (one per memory region the plan uses).\npub const ARENA_PARTS: usize = {};",
        part_lens.len()
    )
    .unwrap();
    for (i, (&len, &region)) in part_lens.iter().zip(&part_regions).enumerate() {
        writeln!(
            code,
            "/// Arena part {i}, in {}.\n#[unsafe(link_section = \".vitae_arena{region}\")]\n\
             static mut ARENA{i}: crate::Aligned<[u8; {}]> = crate::Aligned([0; {}]);",
            b.arena[region],
            len.max(16),
            len.max(16)
        )
        .unwrap();
    }
    let parts: Vec<String> = (0..part_lens.len())
        .map(|i| {
            format!(
                "\n        // SAFETY: called at most once (the caller's promise): the only reference to ARENA{i}.\n        unsafe {{ &mut (*core::ptr::addr_of_mut!(ARENA{i})).0 }},"
            )
        })
        .collect();
    writeln!(
        code,
        "/// The arena parts, in order.\n///\n/// # Safety\n///\n/// Call at most once: each call makes new `&'static mut` references to the parts.\n\
         pub unsafe fn arena_parts() -> [&'static mut [u8]; ARENA_PARTS] {{\n    [{}\n    ]\n}}",
        parts.concat()
    )
    .unwrap();
    match stage_region {
        Some(r) => writeln!(
            code,
            "/// The weight staging buffer (`VITAE_STAGE`), in {region}.\npub const STAGE_REGION: &str = {region:?};\n\
             #[unsafe(link_section = \".vitae_arena{r}\")]\n\
             static mut STAGE: crate::Aligned<[u8; {stage}]> = crate::Aligned([0; {stage}]);\n\
             /// The staging buffer.\n///\n/// # Safety\n///\n/// Call at most once.\n\
             pub unsafe fn stage_buffer() -> Option<&'static mut [u8]> {{\n    \
             // SAFETY: called at most once (the caller's promise): the only reference to STAGE.\n    \
             Some(unsafe {{ &mut (*core::ptr::addr_of_mut!(STAGE)).0 }})\n}}",
            region = b.arena[r]
        ),
        None => writeln!(
            code,
            "/// No weight staging (`VITAE_STAGE` unset).\npub const STAGE_REGION: &str = \"\";\n\
             /// No staging buffer.\n///\n/// # Safety\n///\n/// None needed; `unsafe` like the staged build's.\n\
             pub unsafe fn stage_buffer() -> Option<&'static mut [u8]> {{\n    None\n}}"
        ),
    }
    .unwrap();
    writeln!(
        code,
        "/// The blob's region.\npub const BLOB_REGION: &str = {:?};\n\
         /// Double-buffered staging (`VITAE_STAGE_AHEAD`).\npub const STAGE_AHEAD: bool = {stage_ahead};",
        b.blob
    )
    .unwrap();
    writeln!(
        code,
        "/// The regions of the arena parts (for the memory report).\npub const ARENA_REGIONS: [&str; ARENA_PARTS] = [{}];",
        part_regions
            .iter()
            .map(|&r| format!("{:?}", b.arena[r]))
            .collect::<Vec<_>>()
            .join(", ")
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
            let (shape, elem, data) = npy_input(&read(&p, "input"), &p);
            // f32: (N, C, H, W) or (C, H, W); u8 pixels: (N, H, W, C) or (H, W, C). Either way
            // the product of the last three is the values per image.
            let (n, per) = match shape.as_slice() {
                [n, a, b, c] => (*n, a * b * c),
                [a, b, c] => (1, a * b * c),
                _ => fail(&format!(
                    "{}: input must be (N, C, H, W) or (C, H, W) float32, or (N, H, W, C) or \
                     (H, W, C) uint8, got {shape:?}",
                    p.display()
                )),
            };
            let variant = if elem == Elem::F32 { "F32" } else { "U8" };
            fs::write(out.join("input.bin"), &data).expect("writing OUT_DIR");
            writeln!(
                code,
                "/// The embedded images.\npub const INPUT: crate::Inputs = crate::Inputs::{variant} {{ count: {n}, per_image: {per}, \
                 data: &INPUT_BYTES.0 }};\n#[unsafe(link_section = \".vitae_blob\")]\n\
                 static INPUT_BYTES: crate::Aligned<[u8; {}]> = crate::Aligned(*include_bytes!(concat!(env!(\"OUT_DIR\"), \"/input.bin\")));",
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
        _ => fail(
            "set exactly one of VITAE_INPUT (float32 or uint8 .npy) and VITAE_DIGITS (VTDIGIT1 file)",
        ),
    }
    fs::write(out.join("embedded.rs"), code).expect("writing OUT_DIR");
}
