//! The demo's committed assets (host-tools/train/digits) and the blobs made from them.

use crate::project_root;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use vitae::quantize::{self, CalibMethod, ImageInput, NoProgress, Options, Precision};
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

    /// The input of a blob that takes u8 pixels (32×32×1, HWC): the same upsampling, no
    /// normalization.
    pub fn pixels_u8(&self) -> Vec<u8> {
        let mut out = [0u8; digits::INPUT_LEN];
        digits::upsample(&self.pixels, &mut out);
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

/// Writes the test digits as `target/vitae/digits-test.npz` (`x`: the model inputs, float32
/// N×1×32×32; `y`: the labels, int64), the form `vitae eval --data` takes.
pub fn write_digits_npz(test: &[Digit]) -> Result<PathBuf> {
    use vitae::npy::{encode_npy_f32, encode_npy_i64, write_npz};
    let x: Vec<f32> = test.iter().flat_map(Digit::image).collect();
    let y: Vec<i64> = test.iter().map(|d| i64::from(d.label)).collect();
    let dir = project_root().join("target").join("vitae");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("digits-test.npz");
    let x = encode_npy_f32(&[test.len(), 1, 32, 32], &x)?;
    let y = encode_npy_i64(&[test.len()], &y)?;
    write_npz(&path, &[("x", x), ("y", y)])?;
    Ok(path)
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
    digits_blob_for(model, precision, ImageInput::F32Nchw)
}

/// The demo's normalization as `vitae quantize --input u8` takes it (see
/// `vitae_edge::preprocess::digits::PIXEL_MEAN`).
pub fn digits_pixel_input() -> ImageInput {
    ImageInput::U8Hwc {
        mean: vec![digits::PIXEL_MEAN],
        std: vec![digits::PIXEL_STD],
    }
}

/// As [`digits_blob`], with the given image input; a blob that takes u8 pixels is written to
/// `target/vitae/digits-<precision>-u8.vblob`.
pub fn digits_blob_for(
    model: &ReferenceModel,
    precision: Precision,
    input: ImageInput,
) -> Result<(PathBuf, quantize::Quantized)> {
    let suffix = match input {
        ImageInput::U8Hwc { .. } => "-u8",
        _ => "",
    };
    let calib: Vec<Vec<f32>> = read_digits(&digits_dir().join("calib.bin"))?
        .iter()
        .map(Digit::image)
        .collect();
    let options = Options {
        precision,
        method: CalibMethod::Auto,
        flash_budget: None,
        max_logit_error: None,
        name: "digits".into(),
        input,
        arena_regions: Vec::new(),
        patch: vitae::quantize::patch::Patch::Off,
    };
    let q = quantize::quantize(model, &calib, &options, &mut NoProgress)?;
    let dir = project_root().join("target").join("vitae");
    std::fs::create_dir_all(&dir)?;
    let name = precision.name();
    let path = dir.join(format!("digits-{name}{suffix}.vblob"));
    vitae::io::write_atomic(&path, &q.lowered.blob)?;
    Ok((path, q))
}

/// The demo's test digits through a blob that takes f32 images and its twin that takes u8
/// pixels (`--input u8` with the demo's normalization), both of `precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelInputComparison {
    /// Test images.
    pub images: usize,
    /// Images whose top-1 class is the same through both blobs.
    pub same_prediction: usize,
    /// Images whose logits are the same bits through both blobs.
    pub identical_logits: usize,
    /// Images the u8 blob classifies correctly.
    pub correct_u8: usize,
    /// Images the f32 blob classifies correctly.
    pub correct_f32: usize,
}

/// Quantizes the demo model for f32 and for u8 input and runs every test digit through both on
/// the host engine (the device's kernels).
pub fn compare_pixel_input(
    model: &ReferenceModel,
    precision: Precision,
) -> Result<PixelInputComparison> {
    let (_, f32_blob) = digits_blob_for(model, precision, ImageInput::F32Nchw)?;
    let (_, u8_blob) = digits_blob_for(model, precision, digits_pixel_input())?;
    let mut f32_engine = vitae::engine::Engine::new(&f32_blob.lowered.blob)?;
    let mut u8_engine = vitae::engine::Engine::new(&u8_blob.lowered.blob)?;
    let test = read_digits(&digits_dir().join("test.bin"))?;
    let argmax = |l: &[f32]| {
        l.iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (i, &v)| if v > b.1 { (i, v) } else { b },
            )
            .0
    };
    let mut c = PixelInputComparison {
        images: test.len(),
        same_prediction: 0,
        identical_logits: 0,
        correct_u8: 0,
        correct_f32: 0,
    };
    for d in &test {
        let a = f32_engine.run_batch(&d.image())?;
        let b = u8_engine.run_batch_u8(&d.pixels_u8())?;
        let (pa, pb) = (argmax(&a), argmax(&b));
        c.same_prediction += usize::from(pa == pb);
        c.identical_logits += usize::from(
            a.iter()
                .map(|x| x.to_bits())
                .eq(b.iter().map(|x| x.to_bits())),
        );
        c.correct_f32 += usize::from(pa == d.label as usize);
        c.correct_u8 += usize::from(pb == d.label as usize);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18's acceptance: the 540 test digits given as u8 pixels predict what the f32 path
    /// predicts (int8 and fp16 input ops both).
    #[test]
    fn u8_pixels_predict_like_the_f32_path() {
        let model = digits_model().unwrap();
        for precision in [Precision::Int8, Precision::Fp16] {
            let c = compare_pixel_input(&model, precision).unwrap();
            assert_eq!(c.images, 540);
            assert_eq!(c.same_prediction, c.images, "{precision:?}: {c:?}");
            assert_eq!(c.correct_u8, c.correct_f32, "{precision:?}: {c:?}");
        }
    }
}
