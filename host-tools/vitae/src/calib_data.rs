//! Loading calibration images: a float32 `.npy` batch, or a folder of PNG/JPEG files resized and
//! normalized like the training data.

use std::path::{Path, PathBuf};

use crate::io::{InputKind, ReadFileError, open_input_file};
use crate::npy::open_npy_f32;

/// Widest and tallest image decoded (larger ones are refused from their header).
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// Most pixels a resize may touch: the larger of source and target in each direction,
/// multiplied (the resampler's intermediate image is that large, in f32).
pub const MAX_RESIZE_PIXELS: u64 = 1 << 24;
/// Most bytes of calibration images held in memory as f32, from a folder or a `.npy` (use
/// `--max-calib` to take the first images of a larger set).
pub const MAX_CALIB_BYTES: u64 = 512 << 20;

/// How to turn image files into model inputs.
#[derive(Clone, Debug)]
pub struct ImagePrep {
    /// The model's input side length (images end up `size × size`).
    pub size: usize,
    /// Resize the shorter side to this many pixels first, then center-crop `size × size`
    /// (ImageNet-style evaluation: 256 then 224). `None`: resize straight to `size × size`.
    pub resize: Option<usize>,
    /// Center-crop this square (after `resize`, from the image as it is without one), then
    /// resize it to `size × size`. `None`: the crop is the input size itself.
    pub crop: Option<usize>,
    /// Channels the model takes (1: grayscale, 3: RGB).
    pub channels: usize,
    /// Per-channel mean subtracted after scaling pixels to [0, 1].
    pub mean: Vec<f32>,
    /// Per-channel std divided by.
    pub std: Vec<f32>,
}

/// Why calibration data could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CalibDataError {
    /// The path does not exist.
    #[error("{}: no such file or directory", .0.display())]
    Missing(PathBuf),
    /// The .npy has the wrong shape.
    #[error("{}: calibration array has shape {shape:?}, expected (N, {channels}, {size}, {size})", path.display())]
    Shape {
        /// File.
        path: PathBuf,
        /// Shape found.
        shape: Vec<usize>,
        /// Channels expected.
        channels: usize,
        /// Size expected.
        size: usize,
    },
    /// No images.
    #[error("{}: contains no calibration images (N = 0)", .0.display())]
    Empty(PathBuf),
    /// An image file could not be decoded.
    #[error("{}: cannot decode image: {reason}", path.display())]
    Decode {
        /// File.
        path: PathBuf,
        /// Decoder message.
        reason: String,
    },
    /// A folder could not be listed.
    #[error("{}: cannot list folder: {reason}", path.display())]
    List {
        /// Folder.
        path: PathBuf,
        /// Reason.
        reason: String,
    },
    /// mean/std do not match the channels.
    #[error("--mean and --std need {0} values each (one per input channel)")]
    Normalization(usize),
    /// Reading the .npy failed.
    #[error(transparent)]
    Npy(#[from] crate::npy::NpyError),
    /// An image file is not a regular file or too large.
    #[error(transparent)]
    Read(#[from] ReadFileError),
    /// An image whose resize would need more memory than any real calibration image.
    #[error("{}: {width}x{height} pixels resized to {target_width}x{target_height} is more than {MAX_RESIZE_PIXELS} pixels to resample", path.display())]
    TooLarge {
        /// File.
        path: PathBuf,
        /// Source width.
        width: u32,
        /// Source height.
        height: u32,
        /// Width after the resize.
        target_width: u64,
        /// Height after the resize.
        target_height: u64,
    },
    /// `--resize` below the model's input: the center crop would not fit.
    #[error(
        "--resize {resize}: smaller than the model's {size}x{size} input, which the center crop takes from the resized image; give at least {size}, or leave --resize out to resize straight to {size}x{size}"
    )]
    ResizeTooSmall {
        /// The flag's value.
        resize: usize,
        /// The model's input side.
        size: usize,
    },
    /// `--crop` larger than the image it is taken from.
    #[error("{}: a {crop}x{crop} crop does not fit in the {width}x{height} image it is taken from", path.display())]
    CropTooLarge {
        /// File.
        path: PathBuf,
        /// Width of the image cropped (after any resize).
        width: u64,
        /// Height of the image cropped.
        height: u64,
        /// The crop's side.
        crop: u64,
    },
    /// `--crop 0`, or a `--resize` below the `--crop`.
    #[error("--crop {crop}: {reason}")]
    BadCrop {
        /// The flag's value.
        crop: usize,
        /// Why it cannot be used.
        reason: String,
    },
    /// More images than fit in memory.
    #[error("{}: {count} images of {per_image} bytes each are more than {MAX_CALIB_BYTES} bytes; use --max-calib", path.display())]
    TooMany {
        /// The folder.
        path: PathBuf,
        /// Images found.
        count: usize,
        /// Bytes each takes as f32.
        per_image: u64,
    },
}

/// Loads calibration images as CHW vectors.
pub fn load(
    path: &Path,
    prep: &ImagePrep,
    limit: Option<usize>,
) -> Result<Vec<Vec<f32>>, CalibDataError> {
    if !path.exists() {
        return Err(CalibDataError::Missing(path.to_path_buf()));
    }
    let images = if path.is_dir() {
        load_folder(path, prep, limit)?
    } else {
        load_npy(path, prep, limit)?
    };
    if images.is_empty() {
        return Err(CalibDataError::Empty(path.to_path_buf()));
    }
    Ok(images)
}

/// The first `limit` images of a `(N, C, H, W)` (or `(C, H, W)`) array, read straight into one
/// vector each: the header is checked against [`MAX_CALIB_BYTES`] before any element is read,
/// and the images after `limit` are never read (unless the array is in Fortran order, which is
/// read whole and so counted whole).
/// The number of images of a calibration array of `shape`: `(N, C, H, W)` or `(C, H, W)` for
/// the model's input, at least one.
fn images_in(path: &Path, shape: &[usize], prep: &ImagePrep) -> Result<usize, CalibDataError> {
    let (c, s) = (prep.channels, prep.size);
    let n = match shape {
        [n, ch, h, w] if (*ch, *h, *w) == (c, s, s) => *n,
        [ch, h, w] if (*ch, *h, *w) == (c, s, s) => 1,
        shape => {
            return Err(CalibDataError::Shape {
                path: path.to_path_buf(),
                shape: shape.to_vec(),
                channels: c,
                size: s,
            });
        }
    };
    if n == 0 {
        return Err(CalibDataError::Empty(path.to_path_buf()));
    }
    Ok(n)
}

/// The first `limit` images of an array already in memory (the Python package's `calib=`),
/// checked like a `.npy` file's: `values` in C order for `shape`, which must be
/// `(N, C, H, W)` or `(C, H, W)` for the model. `label` names the array in errors.
pub fn from_array(
    label: &Path,
    shape: &[usize],
    values: &[f32],
    prep: &ImagePrep,
    limit: Option<usize>,
) -> Result<Vec<Vec<f32>>, CalibDataError> {
    let n = images_in(label, shape, prep)?;
    let per = prep.channels * prep.size * prep.size;
    if n.checked_mul(per) != Some(values.len()) {
        return Err(CalibDataError::Shape {
            path: label.to_path_buf(),
            shape: shape.to_vec(),
            channels: prep.channels,
            size: prep.size,
        });
    }
    let count = limit.map_or(n, |l| n.min(l.max(1)));
    Ok(values
        .chunks_exact(per)
        .take(count)
        .map(<[f32]>::to_vec)
        .collect())
}

fn load_npy(
    path: &Path,
    prep: &ImagePrep,
    limit: Option<usize>,
) -> Result<Vec<Vec<f32>>, CalibDataError> {
    let array = open_npy_f32(path)?;
    let (c, s) = (prep.channels, prep.size);
    let n = images_in(path, array.shape(), prep)?;
    let count = limit.map_or(n, |l| n.min(l.max(1)));
    let per_image = (c * s * s * 4) as u64;
    // A Fortran-order array is reordered whole before its first image is known: all of it counts.
    let held = if array.is_fortran_order() { n } else { count };
    if (held as u64).saturating_mul(per_image) > MAX_CALIB_BYTES {
        return Err(CalibDataError::TooMany {
            path: path.to_path_buf(),
            count: held,
            per_image,
        });
    }
    Ok(array.read_rows(c * s * s, count)?)
}

/// Whether a file is taken as an image, by its extension: `.png`, `.jpg` or `.jpeg`, any case
/// (the content decides the decoder).
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// Checks `prep`'s sizes and normalization before any file is opened.
pub fn check_prep(prep: &ImagePrep) -> Result<(), CalibDataError> {
    if prep.mean.len() != prep.channels || prep.std.len() != prep.channels {
        return Err(CalibDataError::Normalization(prep.channels));
    }
    match (prep.resize, prep.crop) {
        (_, Some(0)) => Err(CalibDataError::BadCrop {
            crop: 0,
            reason: "must be at least 1 pixel".into(),
        }),
        (Some(resize), Some(crop)) if resize < crop => Err(CalibDataError::BadCrop {
            crop,
            reason: format!(
                "larger than the --resize {resize} image it is taken from; give at most {resize}"
            ),
        }),
        (Some(resize), None) if resize < prep.size => Err(CalibDataError::ResizeTooSmall {
            resize,
            size: prep.size,
        }),
        _ => Ok(()),
    }
}

fn load_folder(
    dir: &Path,
    prep: &ImagePrep,
    limit: Option<usize>,
) -> Result<Vec<Vec<f32>>, CalibDataError> {
    let list_err = |e: std::io::Error| CalibDataError::List {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    check_prep(prep)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(list_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_image_file(p))
        .collect();
    files.sort();
    if let Some(n) = limit {
        files.truncate(n.max(1));
    }
    let per_image = (prep.channels * prep.size * prep.size * 4) as u64;
    if (files.len() as u64).saturating_mul(per_image) > MAX_CALIB_BYTES {
        return Err(CalibDataError::TooMany {
            path: dir.to_path_buf(),
            count: files.len(),
            per_image,
        });
    }
    files
        .iter()
        .map(|f| load_pixels(f, prep).map(|pixels| normalize(&pixels, prep)))
        .collect()
}

/// Decodes one PNG/JPEG file into `size × size` pixels, HWC with `prep.channels` channels
/// (gray, or RGB; channels after the third are 0): resized (shorter side to `resize`, or
/// straight to the input size), center-cropped to `crop` and, when `crop` is not the input
/// size, resized to it. Every size is checked before any pixel is decoded or allocated.
pub fn load_pixels(f: &Path, prep: &ImagePrep) -> Result<Vec<u8>, CalibDataError> {
    // Opened once, as a regular file within the image ceiling (checked again on the opened
    // file); the decoder reads from that handle, guessing the format from the content.
    let (file, _) = open_input_file(f, InputKind::Image)?;
    let decode_error = |e: image::ImageError| CalibDataError::Decode {
        path: f.to_path_buf(),
        reason: e.to_string(),
    };
    let mut reader = image::ImageReader::new(std::io::BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| decode_error(e.into()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(256 << 20);
    reader.limits(limits);
    let img = reader.decode().map_err(decode_error)?;
    let s = prep.size as u32;
    let crop = prep.crop.unwrap_or(prep.size) as u64;
    let (w, h) = (img.width().max(1), img.height().max(1));
    let (nw, nh) = match prep.resize {
        Some(r) => {
            // At least the crop: checked before any file was opened.
            let r = r as u64;
            if w <= h {
                (r, h as u64 * r / w as u64)
            } else {
                (w as u64 * r / h as u64, r)
            }
        }
        // A crop without a resize is taken from the image as it is.
        None if prep.crop.is_some() => (u64::from(w), u64::from(h)),
        None => (u64::from(s), u64::from(s)),
    };
    let touched = nw.max(u64::from(w)).saturating_mul(nh.max(u64::from(h)));
    if touched > MAX_RESIZE_PIXELS || nw > u64::from(u32::MAX) || nh > u64::from(u32::MAX) {
        return Err(CalibDataError::TooLarge {
            path: f.to_path_buf(),
            width: w,
            height: h,
            target_width: nw,
            target_height: nh,
        });
    }
    if prep.crop.is_some() && (nw < crop || nh < crop) {
        return Err(CalibDataError::CropTooLarge {
            path: f.to_path_buf(),
            width: nw,
            height: nh,
            crop,
        });
    }
    let (nw, nh, crop) = (nw as u32, nh as u32, crop as u32);
    let img = match (prep.resize, prep.crop) {
        (None, None) => img.resize_exact(s, s, image::imageops::FilterType::Triangle),
        _ => {
            let img = match prep.resize {
                Some(_) => img.resize_exact(nw, nh, image::imageops::FilterType::Triangle),
                None => img,
            };
            let img = img.crop_imm((nw - crop) / 2, (nh - crop) / 2, crop, crop);
            if crop == s {
                img
            } else {
                img.resize_exact(s, s, image::imageops::FilterType::Triangle)
            }
        }
    };
    let plane = prep.size * prep.size;
    let c = prep.channels;
    let mut out = vec![0u8; c * plane];
    if c == 1 {
        out.copy_from_slice(img.to_luma8().as_raw());
    } else {
        for (i, p) in img.to_rgb8().pixels().enumerate() {
            out[i * c..i * c + c.min(3)].copy_from_slice(&p.0[..c.min(3)]);
        }
    }
    Ok(out)
}

/// HWC pixels from [`load_pixels`] as a normalized CHW image: `(pixel / 255 − mean) / std`
/// per channel (channels after the third stay 0, as they are in the pixels' place).
pub fn normalize(pixels: &[u8], prep: &ImagePrep) -> Vec<f32> {
    let c = prep.channels;
    let plane = prep.size * prep.size;
    let mut out = vec![0.0f32; c * plane];
    for (i, p) in pixels.chunks_exact(c).enumerate() {
        for ch in 0..c.min(3) {
            out[ch * plane + i] = (p[ch] as f32 / 255.0 - prep.mean[ch]) / prep.std[ch];
        }
    }
    out
}
