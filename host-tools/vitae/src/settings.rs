//! Ranges of `vitae quantize`'s numeric settings, shared by the command line and the Python
//! package: a value outside them is refused with a message naming the setting (by its flag),
//! never a silently wrong result (`--std inf` would turn every calibration value into 0) or an
//! allocation sized by a typo (`--resize 100000`).

/// Largest `--resize` and `--crop` (pixels).
pub const MAX_RESIZE: usize = 8192;
/// `--mean` values lie in `[-MAX_MEAN, MAX_MEAN]` (pixels are scaled to [0, 1] first).
pub const MAX_MEAN: f32 = 1000.0;
/// `--std` values lie in `[MIN_STD, MAX_STD]`.
pub const MIN_STD: f32 = 1e-6;
/// See [`MIN_STD`].
pub const MAX_STD: f32 = 1000.0;
/// Longest `--name` stored in a blob, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Largest `--flash-budget`: a blob's length is a 32-bit field.
pub const MAX_FLASH_BUDGET: usize = u32::MAX as usize;
/// Most worker threads an engine may be given (`--threads`, `Engine(threads=)`).
pub const MAX_THREADS: usize = 1024;

/// A quantize setting outside its range; the message names the flag and the range.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingError(pub String);

/// The optional settings of a quantization run, as given (`None`: not given).
#[derive(Clone, Copy, Debug, Default)]
pub struct QuantizeSettings<'a> {
    /// `--mean`.
    pub mean: Option<&'a [f32]>,
    /// `--std`.
    pub std: Option<&'a [f32]>,
    /// `--resize`.
    pub resize: Option<usize>,
    /// `--max-calib`.
    pub max_calib: Option<usize>,
    /// `--flash-budget`.
    pub flash_budget: Option<usize>,
    /// `--max-logit-error`.
    pub max_logit_error: Option<f64>,
    /// `--name`.
    pub name: Option<&'a str>,
}

/// Checks a comma-separated per-channel list such as `--mean`.
fn check_list(flag: &str, values: &[f32], low: f32, high: f32) -> Result<(), SettingError> {
    for (i, &v) in values.iter().enumerate() {
        if !v.is_finite() || v < low || v > high {
            return Err(SettingError(format!(
                "{flag}: value {} is {v}: must be a finite number in [{low:e}, {high}]",
                i + 1
            )));
        }
    }
    Ok(())
}

/// Checks the image settings: `--mean`, `--std`, and `--resize` and `--crop` (pixels).
pub fn check_image_settings(
    mean: Option<&[f32]>,
    std: Option<&[f32]>,
    resize: Option<usize>,
    crop: Option<usize>,
) -> Result<(), SettingError> {
    if let Some(mean) = mean {
        check_list("--mean", mean, -MAX_MEAN, MAX_MEAN)?;
    }
    if let Some(std) = std {
        check_list("--std", std, MIN_STD, MAX_STD)?;
    }
    for (flag, value) in [("--resize", resize), ("--crop", crop)] {
        if let Some(r) = value
            && !(1..=MAX_RESIZE).contains(&r)
        {
            return Err(SettingError(format!(
                "{flag} {r}: must be between 1 and {MAX_RESIZE} pixels"
            )));
        }
    }
    Ok(())
}

/// Checks a worker-thread count; `name` is how the caller spells the setting (`--threads`).
pub fn check_threads(name: &str, threads: usize) -> Result<(), SettingError> {
    if (1..=MAX_THREADS).contains(&threads) {
        Ok(())
    } else {
        Err(SettingError(format!(
            "{name} {threads}: must be between 1 and {MAX_THREADS}"
        )))
    }
}

impl QuantizeSettings<'_> {
    /// Checks every given setting against its range.
    pub fn check(&self) -> Result<(), SettingError> {
        check_image_settings(self.mean, self.std, self.resize, None)?;
        if self.max_calib == Some(0) {
            return Err(SettingError("--max-calib 0: must be at least 1".into()));
        }
        if let Some(b) = self.flash_budget
            && !(1..=MAX_FLASH_BUDGET).contains(&b)
        {
            return Err(SettingError(format!(
                "--flash-budget {b}: must be between 1 and {MAX_FLASH_BUDGET} bytes"
            )));
        }
        if let Some(e) = self.max_logit_error
            && !(e.is_finite() && e > 0.0 && e <= 1.0)
        {
            return Err(SettingError(format!(
                "--max-logit-error {e}: must be a number in (0, 1] (relative squared error of the logits)"
            )));
        }
        if let Some(name) = self.name {
            if name.len() > MAX_NAME_BYTES {
                return Err(SettingError(format!(
                    "--name: {} bytes, at most {MAX_NAME_BYTES}",
                    name.len()
                )));
            }
            if name.chars().any(char::is_control) {
                return Err(SettingError(
                    "--name: contains control characters (escape sequences, newlines)".into(),
                ));
            }
        }
        Ok(())
    }
}
