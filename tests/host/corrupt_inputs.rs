//! Malformed checkpoints and arrays: every case is a typed error that names the file and the
//! entry, key or offset at fault, and none panics (a panic fails these tests).

#[path = "common.rs"]
mod common;

use std::io::{Cursor, Read, Write};
use std::path::Path;

use vitae::checkpoint::{
    CheckpointError, PthError, SafetensorsError, load_checkpoint, parse_checkpoint,
};
use vitae::npy::{NpyError, NpyFormatError, parse_npy, read_npy_f32};

use common::fixtures;

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// Rebuilds a torch zip archive entry by entry (stored, like torch), letting `edit` drop or
/// replace entries.
fn rebuild_pth(
    original: &[u8],
    edit: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>,
    extra: &[(&str, &[u8])],
) -> Vec<u8> {
    let mut archive = zip::ZipArchive::new(Cursor::new(original)).unwrap();
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).unwrap();
        let name = file.name().to_string();
        let mut data = Vec::new();
        file.read_to_end(&mut data).unwrap();
        if let Some(data) = edit(&name, data) {
            writer.start_file(name, options).unwrap();
            writer.write_all(&data).unwrap();
        }
    }
    for (name, data) in extra {
        writer.start_file(*name, options).unwrap();
        writer.write_all(data).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

fn pth_error(bytes: &[u8]) -> PthError {
    match parse_checkpoint(bytes, Path::new("doctored.pth")) {
        Err(CheckpointError::Pth { path, kind }) => {
            assert_eq!(path, Path::new("doctored.pth"));
            kind
        }
        other => panic!(
            "expected a .pth error, got {:?}",
            other.map(|c| c.tensors.len())
        ),
    }
}

#[test]
#[cfg_attr(
    not(vitae_fixtures),
    ignore = "needs ../shared/fixtures (beside the checkout)"
)]
fn rebuilt_archive_still_loads() {
    // Guards the helper: an unedited rebuild must parse to the same tensors.
    let original = read(&fixtures().join("mcu_a/model.pth"));
    let rebuilt = rebuild_pth(&original, |_, d| Some(d), &[]);
    let a = parse_checkpoint(&original, Path::new("a")).unwrap();
    let b = parse_checkpoint(&rebuilt, Path::new("b")).unwrap();
    assert_eq!(a.tensors, b.tensors);
}

#[test]
#[cfg_attr(
    not(vitae_fixtures),
    ignore = "needs ../shared/fixtures (beside the checkout)"
)]
fn truncated_pth_is_an_error_at_every_cut() {
    let original = read(&fixtures().join("mcu_a/model.pth"));
    let mut cuts: Vec<usize> = (0..original.len()).step_by(9973).collect();
    cuts.extend(original.len() - 300..original.len());
    for cut in cuts {
        assert!(
            parse_checkpoint(&original[..cut], Path::new("t.pth")).is_err(),
            "cut at {cut} parsed"
        );
    }
}

#[test]
#[cfg_attr(
    not(vitae_fixtures),
    ignore = "needs ../shared/fixtures (beside the checkout)"
)]
fn flipped_bytes_never_panic_and_corrupt_storage_is_detected() {
    let original = read(&fixtures().join("mcu_a/model.pth"));
    for offset in (0..original.len()).step_by(4099) {
        let mut bytes = original.clone();
        bytes[offset] ^= 0x5A;
        let _ = parse_checkpoint(&bytes, Path::new("f.pth"));
    }
    // Every byte of the pickle region (first entry) flipped in turn: errors or loads, no panic.
    for offset in 40..1200 {
        let mut bytes = original.clone();
        bytes[offset] = bytes[offset].wrapping_add(1);
        let _ = parse_checkpoint(&bytes, Path::new("f.pth"));
    }
    // A flipped byte inside tensor data fails the zip CRC check.
    let mut archive = zip::ZipArchive::new(Cursor::new(&original[..])).unwrap();
    let start = archive.by_name("model/data/2").unwrap().data_start() as usize;
    let mut bytes = original.clone();
    bytes[start + 100] ^= 0xFF;
    match pth_error(&bytes) {
        PthError::Entry { entry, .. } => assert_eq!(entry, "model/data/2"),
        other => panic!("{other}"),
    }
}

#[test]
#[cfg_attr(
    not(vitae_fixtures),
    ignore = "needs ../shared/fixtures (beside the checkout)"
)]
fn missing_or_short_storage_names_entry_and_key() {
    let original = read(&fixtures().join("mcu_a/model.pth"));
    let missing = rebuild_pth(&original, |n, d| (n != "model/data/2").then_some(d), &[]);
    let err = pth_error(&missing).to_string();
    assert!(
        err.contains("model/data/2") && err.contains("layers.0.RC.PCM.2.weight"),
        "{err}"
    );

    let short = rebuild_pth(
        &original,
        |n, d| {
            Some(if n == "model/data/2" {
                d[..d.len() - 4].to_vec()
            } else {
                d
            })
        },
        &[],
    );
    let err = pth_error(&short).to_string();
    assert!(
        err.contains("model/data/2") && err.contains("9216 bytes") && err.contains("found 9212"),
        "{err}"
    );
}

#[test]
#[cfg_attr(
    not(vitae_fixtures),
    ignore = "needs ../shared/fixtures (beside the checkout)"
)]
fn broken_pickles_are_typed_errors() {
    let original = read(&fixtures().join("mcu_a/model.pth"));
    let garbage = rebuild_pth(
        &original,
        |n, d| {
            Some(if n.ends_with("data.pkl") {
                b"\x80\x02\xff\xff".to_vec()
            } else {
                d
            })
        },
        &[],
    );
    assert!(matches!(
        pth_error(&garbage),
        PthError::Pickle { offset: 2, .. }
    ));
    let truncated = rebuild_pth(
        &original,
        |n, d| {
            Some(if n.ends_with("data.pkl") {
                d[..d.len() / 2].to_vec()
            } else {
                d
            })
        },
        &[],
    );
    assert!(matches!(pth_error(&truncated), PthError::Pickle { .. }));
    let no_pickle = rebuild_pth(
        &original,
        |n, d| (!n.ends_with("data.pkl")).then_some(d),
        &[],
    );
    assert!(matches!(pth_error(&no_pickle), PthError::NoPickle(_)));
    let script = rebuild_pth(
        &original,
        |_, d| Some(d),
        &[("model/code/__torch__.py", b"def forward(self): pass")],
    );
    assert!(matches!(pth_error(&script), PthError::TorchScript));
}

#[test]
#[cfg_attr(
    not(vitae_fixtures),
    ignore = "needs ../shared/fixtures (beside the checkout)"
)]
fn corrupt_safetensors_are_typed_errors() {
    let original = read(&fixtures().join("mcu_a/model.safetensors"));
    let header_len = u64::from_le_bytes(original[..8].try_into().unwrap()) as usize;
    let mut cuts: Vec<usize> = (9..original.len()).step_by(7919).collect();
    cuts.extend([
        9,
        100,
        8 + header_len - 1,
        8 + header_len,
        8 + header_len + 1,
        original.len() - 1,
    ]);
    for cut in cuts {
        let err = parse_checkpoint(&original[..cut], Path::new("cut.safetensors"))
            .expect_err("truncated file parsed");
        assert!(err.to_string().starts_with("cut.safetensors: "), "{err}");
    }
    let mut trailing = original.clone();
    trailing.extend_from_slice(&[0; 12]);
    match parse_checkpoint(&trailing, Path::new("x.safetensors")) {
        Err(CheckpointError::Safetensors {
            kind: SafetensorsError::TrailingBytes { slack: 12, .. },
            ..
        }) => {}
        other => panic!("{:?}", other.err()),
    }
    // Shift one tensor's offsets so it overlaps its neighbour: same length, so it passes the
    // per-entry size check and must be caught by the tiling check.
    let header = String::from_utf8(original[8..8 + header_len].to_vec()).unwrap();
    let json: serde_json::Value = serde_json::from_str(&header).unwrap();
    let (key, begin, end) = json
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| {
            let o = v.get("data_offsets")?.as_array()?;
            Some((k.clone(), o[0].as_u64()?, o[1].as_u64()?))
        })
        .find(|(_, b, e)| *b > 0 && e - b >= 8)
        .unwrap();
    let needle = format!("[{begin},{end}]");
    assert!(header.contains(&needle), "fixture header format changed");
    let replacement = format!("[{},{}]", begin - 4, end - 4);
    let mut shifted = header.replacen(&needle, &replacement, 1);
    while shifted.len() < header.len() {
        shifted.push(' ');
    }
    assert_eq!(shifted.len(), header.len());
    let mut bytes = original[..8].to_vec();
    bytes.extend_from_slice(shifted.as_bytes());
    bytes.extend_from_slice(&original[8 + header_len..]);
    let err = parse_checkpoint(&bytes, Path::new("o.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&key) && err.contains("overlap"), "{err}");
}

#[test]
#[cfg_attr(
    not(vitae_fixtures),
    ignore = "needs ../shared/fixtures (beside the checkout)"
)]
fn non_checkpoints_are_named_as_such() {
    let npy = fixtures().join("mcu_a/input.npy");
    let err = load_checkpoint(&npy).unwrap_err();
    assert!(matches!(err, CheckpointError::UnknownFormat { .. }));
    assert!(
        err.to_string()
            .starts_with(&format!("{}: not a checkpoint", npy.display())),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let err = load_checkpoint(&dir.path().join("absent.pth"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.pth: file not found"), "{err}");
    let err = load_checkpoint(dir.path()).unwrap_err().to_string();
    assert!(err.contains("is a directory"), "{err}");
}

#[test]
#[cfg_attr(
    not(vitae_fixtures),
    ignore = "needs ../shared/fixtures (beside the checkout)"
)]
fn truncated_and_wrong_npy_files() {
    let input = read(&fixtures().join("mcu_a/input.npy"));
    for cut in [1, 7, 9, 60, 127, 128, 129, 5000, input.len() - 1] {
        assert!(parse_npy(&input[..cut]).is_err(), "cut at {cut}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.npy");
    std::fs::write(&path, &input[..input.len() - 4]).unwrap();
    match read_npy_f32(&path) {
        Err(NpyError::Format {
            path: p,
            kind: NpyFormatError::Truncated { part: "data", .. },
        }) => assert_eq!(p, path),
        other => panic!("{other:?}"),
    }
    let pth = fixtures().join("mcu_a/model.pth");
    let err = read_npy_f32(&pth).unwrap_err().to_string();
    assert!(
        err.contains("model.pth") && err.contains("bad magic"),
        "{err}"
    );
}
