//! The demo's committed assets (host-tools/train/digits) and the blobs made from them.

use crate::project_root;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use vitae::quantize::{self, CalibMethod, NoProgress, Options, Precision};
use vitae::reference::ReferenceModel;
use vitae_edge::preprocess::digits;

/// One sklearn digit: 64 pixels (0..16) and its label.
#[derive(Clone, Copy, Debug)]
pub struct Digit {
    pub pixels: [u8; 64],
    pub label: u8,
}

impl Digit {
    /// The model input (1×32×32), through the one preprocessing definition.
    pub fn image(&self) -> Vec<f32> {
        let mut out = [0.0f32; digits::INPUT_LEN];
        digits::preprocess(&self.pixels, &mut out);
        out.to_vec()
    }
}

/// The folder with the committed demo model and data.
pub fn digits_dir() -> PathBuf {
    project_root()
        .join("host-tools")
        .join("train")
        .join("digits")
}

/// Reads a `VTDIGIT1` file (see host-tools/train/README.md).
pub fn read_digits(path: &Path) -> Result<Vec<Digit>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() < 12 || &bytes[..8] != b"VTDIGIT1" {
        bail!("{}: not a VTDIGIT1 file", path.display());
    }
    let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    if bytes.len() != 12 + 65 * n {
        bail!(
            "{}: {} bytes, expected {} for {n} images",
            path.display(),
            bytes.len(),
            12 + 65 * n
        );
    }
    Ok(bytes[12..]
        .chunks_exact(65)
        .map(|r| Digit {
            pixels: r[..64].try_into().expect("64 bytes"),
            label: r[64],
        })
        .collect())
}

/// The demo's f32 reference model.
pub fn digits_model() -> Result<ReferenceModel> {
    let dir = digits_dir();
    let config = vitae::config::ModelConfig::from_kwargs_file(&dir.join("kwargs.json"))?;
    let checkpoint = vitae::checkpoint::load_checkpoint(&dir.join("model.pth"))?;
    Ok(ReferenceModel::new(config, &checkpoint)?)
}

/// Quantizes the demo model (calibrated on the committed calibration subset of the training
/// split) and writes the blob to `target/vitae/digits-<precision>.vblob`.
pub fn digits_blob(
    model: &ReferenceModel,
    precision: Precision,
) -> Result<(PathBuf, quantize::Quantized)> {
    let calib: Vec<Vec<f32>> = read_digits(&digits_dir().join("calib.bin"))?
        .iter()
        .map(Digit::image)
        .collect();
    let options = Options {
        precision,
        method: CalibMethod::Auto,
        flash_budget: None,
        name: "digits".into(),
    };
    let q = quantize::quantize(model, &calib, &options, &mut NoProgress)?;
    let dir = project_root().join("target").join("vitae");
    std::fs::create_dir_all(&dir)?;
    let name = match precision {
        Precision::Int8 => "int8",
        Precision::Fp16 => "fp16",
        Precision::Mixed => "mixed",
    };
    let path = dir.join(format!("digits-{name}.vblob"));
    vitae::io::write_atomic(&path, &q.lowered.blob)?;
    Ok((path, q))
}
