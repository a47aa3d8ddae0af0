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
