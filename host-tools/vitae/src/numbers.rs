//! Ranges of the numeric command-line flags: a value outside them is a usage error naming the
//! flag, never a silently wrong result (`--std inf` would turn every calibration value into 0)
//! or an allocation sized by a typo (`--resize 100000`).

use crate::InputError;
use crate::cmd::quantize::QuantizeArgs;

/// Largest `--resize` (pixels of the shorter side before the center crop).
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

fn bad(message: String) -> anyhow::Error {
    InputError(message).into()
}

/// Checks a comma-separated per-channel list such as `--mean`.
fn check_list(flag: &str, values: &[f32], low: f32, high: f32) -> anyhow::Result<()> {
    for (i, &v) in values.iter().enumerate() {
        if !v.is_finite() || v < low || v > high {
            return Err(bad(format!(
                "{flag}: value {} is {v}: must be a finite number in [{low:e}, {high}]",
                i + 1
            )));
        }
    }
    Ok(())
}

/// Checks `--mean`, `--std`, `--resize` and `--crop` (image folders).
pub fn check_image_flags(
    mean: Option<&[f32]>,
    std: Option<&[f32]>,
    resize: Option<usize>,
    crop: Option<usize>,
) -> anyhow::Result<()> {
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
            return Err(bad(format!(
                "{flag} {r}: must be between 1 and {MAX_RESIZE} pixels"
            )));
        }
    }
    Ok(())
}

/// Checks the numeric flags of `vitae quantize`.
pub fn check_quantize_flags(args: &QuantizeArgs) -> anyhow::Result<()> {
    check_image_flags(args.mean.as_deref(), args.std.as_deref(), args.resize, None)?;
    if args.max_calib == Some(0) {
        return Err(bad("--max-calib 0: must be at least 1".into()));
    }
    if let Some(b) = args.flash_budget
        && !(1..=MAX_FLASH_BUDGET).contains(&b)
    {
        return Err(bad(format!(
            "--flash-budget {b}: must be between 1 and {MAX_FLASH_BUDGET} bytes"
        )));
    }
    if let Some(name) = &args.name {
        if name.len() > MAX_NAME_BYTES {
            return Err(bad(format!(
                "--name: {} bytes, at most {MAX_NAME_BYTES}",
                name.len()
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(bad(
                "--name: contains control characters (escape sequences, newlines)".into(),
            ));
        }
    }
    Ok(())
}

/// Checks `vitae bench-reference --iters/--threads`.
pub fn check_bench_flags(iters: usize, threads: Option<usize>) -> anyhow::Result<()> {
    if !(1..=1_000_000).contains(&iters) {
        return Err(bad(format!(
            "--iters {iters}: must be between 1 and 1000000"
        )));
    }
    if let Some(t) = threads
        && !(1..=1024).contains(&t)
    {
        return Err(bad(format!("--threads {t}: must be between 1 and 1024")));
    }
    Ok(())
}
