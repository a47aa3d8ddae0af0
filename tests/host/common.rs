//! Helpers shared by the `vitae` integration tests (included with `#[path]`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `../shared/fixtures` seen from the repository root (shared/ lives beside the checkout).
/// Fails loudly, with where it looked, if it is not there: these tests are the oracle check.
pub fn fixtures() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures");
    assert!(
        dir.join("mcu_a/model.pth").is_file() && dir.join("vitae_t/model.pth").is_file(),
        "reference fixtures not found at {} (expected shared/ beside the repository checkout, \
         with fixtures/mcu_a and fixtures/vitae_t)",
        dir.display()
    );
    dir
}

/// `max |a - b| / max |b|`, the fixtures' error metric.
pub fn relative_error(ours: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(ours.len(), reference.len(), "length mismatch");
    let max_abs = reference
        .iter()
        .map(|v| f64::from(v.abs()))
        .fold(0.0, f64::max);
    let max_err = ours
        .iter()
        .zip(reference)
        .map(|(a, b)| f64::from((a - b).abs()))
        .fold(0.0, f64::max);
    max_err / max_abs.max(1e-30)
}

/// Writes `tensors` as a `torch.save(state_dict)` zip archive (protocol-2 pickle of an
/// OrderedDict of `_rebuild_tensor_v2` float32 tensors, one storage each), the layout PyTorch
/// itself writes; for tests that need doctored .pth files.
pub fn write_pth(tensors: &[(&str, &[usize], &[f32])]) -> Vec<u8> {
    use std::io::Write;
    let mut p = vec![0x80, 2];
    p.extend_from_slice(b"ccollections\nOrderedDict\nq\x00)R(");
    for (i, (key, shape, data)) in tensors.iter().enumerate() {
        let storage_key = i.to_string();
        p.push(b'X');
        p.extend_from_slice(&(key.len() as u32).to_le_bytes());
        p.extend_from_slice(key.as_bytes());
        p.extend_from_slice(
            b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX",
        );
        p.extend_from_slice(&(storage_key.len() as u32).to_le_bytes());
        p.extend_from_slice(storage_key.as_bytes());
        p.extend_from_slice(b"X\x03\x00\x00\x00cpuJ");
        p.extend_from_slice(&(data.len() as u32).to_le_bytes());
        p.extend_from_slice(b"tQJ\x00\x00\x00\x00(");
        for &d in *shape {
            p.push(b'J');
            p.extend_from_slice(&(d as u32).to_le_bytes());
        }
        p.extend_from_slice(b"t(");
        let mut stride = 1usize;
        let mut strides = vec![0usize; shape.len()];
        for (s, &d) in strides.iter_mut().zip(shape.iter()).rev() {
            *s = stride;
            stride *= d;
        }
        for s in strides {
            p.push(b'J');
            p.extend_from_slice(&(s as u32).to_le_bytes());
        }
        p.extend_from_slice(b"t\x89h\x00)RtR");
    }
    p.extend_from_slice(b"u.");
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", options).unwrap();
    zip.write_all(&p).unwrap();
    zip.start_file("archive/byteorder", options).unwrap();
    zip.write_all(b"little").unwrap();
    for (i, (_, _, data)) in tensors.iter().enumerate() {
        zip.start_file(format!("archive/data/{i}"), options)
            .unwrap();
        for v in *data {
            zip.write_all(&v.to_le_bytes()).unwrap();
        }
    }
    zip.start_file("archive/version", options).unwrap();
    zip.write_all(b"3\n").unwrap();
    zip.finish().unwrap().into_inner()
}
