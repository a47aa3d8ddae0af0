//! Ranges of the numeric command-line flags: a value outside them is a usage error naming the
//! flag, never a silently wrong result or an allocation sized by a typo. `vitae quantize`'s are
//! [`vitae::settings`].

use crate::InputError;
use crate::cmd::quantize::QuantizeArgs;

fn bad(message: String) -> anyhow::Error {
    InputError(message).into()
}

/// Checks `--mean`, `--std`, `--resize` and `--crop` (image folders); the ranges are
/// [`vitae::settings`]'s.
pub fn check_image_flags(
    mean: Option<&[f32]>,
    std: Option<&[f32]>,
    resize: Option<usize>,
    crop: Option<usize>,
) -> anyhow::Result<()> {
    vitae::settings::check_image_settings(mean, std, resize, crop).map_err(|e| bad(e.0))
}

/// Checks the numeric flags of `vitae quantize` (the ranges are the library's, shared with the
/// Python package).
pub fn check_quantize_flags(args: &QuantizeArgs) -> anyhow::Result<()> {
    let mixed = args.precision == vitae::quantize::Precision::Mixed;
    for (flag, given) in [
        ("--flash-budget", args.flash_budget.is_some()),
        ("--max-logit-error", args.max_logit_error.is_some()),
    ] {
        if given && !mixed {
            return Err(bad(format!(
                "{flag} applies to --precision mixed only (this is --precision {})",
                args.precision.name()
            )));
        }
    }
    vitae::settings::QuantizeSettings {
        mean: args.mean.as_deref(),
        std: args.std.as_deref(),
        resize: args.resize,
        max_calib: args.max_calib,
        flash_budget: args.flash_budget,
        max_logit_error: args.max_logit_error,
        name: args.name.as_deref(),
    }
    .check()
    .map_err(|e| bad(e.0))
}

/// Checks `vitae bench-reference --iters/--threads`.
pub fn check_bench_flags(iters: usize, threads: Option<usize>) -> anyhow::Result<()> {
    if !(1..=1_000_000).contains(&iters) {
        return Err(bad(format!(
            "--iters {iters}: must be between 1 and 1000000"
        )));
    }
    check_threads(threads)
}

/// Checks `--threads` (when given).
pub fn check_threads(threads: Option<usize>) -> anyhow::Result<()> {
    match threads {
        Some(t) => vitae::settings::check_threads("--threads", t).map_err(|e| bad(e.0)),
        None => Ok(()),
    }
}
