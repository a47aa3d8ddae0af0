//! `vitae`: the ViTAE-Edge host tool (see `vitae --help`).
//!
//! Exit status: 0 success; 2 bad input or usage, with the first stderr line naming the file or
//! key at fault; 1 internal error. Panics are caught and reported as internal errors: users
//! never see a Rust backtrace.

#![forbid(unsafe_code)]

mod cli;
mod cmd;
mod numbers;
mod progress;

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Parser;

use vitae::checkpoint::CheckpointError;
use vitae::config::ConfigError;
use vitae::io::{ReadFileError, WriteFileError};
use vitae::npy::NpyError;
use vitae::reference::ModelError;
use vitae::validate::CheckpointReport;

/// Marks an error as caused by the user's input (exit status 2) when it is not one of the
/// library's input-error types.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

fn is_input_error(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<InputError>()
            || cause.is::<ReadFileError>()
            || cause.is::<WriteFileError>()
            || cause.is::<NpyError>()
            || cause.is::<CheckpointError>()
            || cause.is::<ConfigError>()
            || cause.is::<CheckpointReport>()
            || cause.is::<vitae::calib_data::CalibDataError>()
            || cause.is::<vitae::eval::DatasetError>()
            || cause.is::<vitae::engine::BatchError>()
            || cause.is::<vitae::quantize::build::FloatGraphTooLarge>()
            || matches!(
                cause.downcast_ref::<vitae::quantize::QuantizeError>(),
                Some(
                    vitae::quantize::QuantizeError::NoCalibration
                        | vitae::quantize::QuantizeError::CalibrationSize { .. }
                        | vitae::quantize::QuantizeError::CalibrationNotFinite(_)
                        | vitae::quantize::QuantizeError::Lower(_)
                        | vitae::quantize::QuantizeError::FloatGraphTooLarge(_)
                        | vitae::quantize::QuantizeError::Budget(_)
                )
            )
            || matches!(
                cause.downcast_ref::<vitae_edge::runtime::RunError>(),
                Some(vitae_edge::runtime::RunError::InputSize { .. })
            )
            || matches!(
                cause.downcast_ref::<ModelError>(),
                Some(ModelError::Checkpoint(_) | ModelError::InputSize { .. })
            )
    })
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints `error: <outermost message>` then one `  cause: ...` line per underlying error
/// (the ruff convention), never panicking on a closed stderr.
fn report(error: &anyhow::Error) {
    let mut stderr = std::io::stderr().lock();
    for (i, line) in vitae::text::report_lines(error.chain()).iter().enumerate() {
        let _ = if i == 0 {
            writeln!(stderr, "error: {line}")
        } else {
            writeln!(stderr, "{line}")
        };
    }
}

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version go to stdout with status 0; usage errors to stderr with 2.
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let panic_message = Arc::new(Mutex::new(None::<String>));
    let sink = Arc::clone(&panic_message);
    std::panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        if let Ok(mut slot) = sink.lock() {
            slot.get_or_insert(format!("{payload}{location}"));
        }
    }));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cli.command.run()));
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(error)) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Ok(Err(error)) => {
            report(&error);
            if is_input_error(&error) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
        Err(_) => {
            let message = panic_message
                .lock()
                .ok()
                .and_then(|m| m.clone())
                .unwrap_or_else(|| "unknown panic".into());
            let _ = writeln!(
                std::io::stderr(),
                "error: internal error (a bug in vitae, please report it): {}",
                vitae::text::escape(&message)
            );
            ExitCode::from(1)
        }
    }
}
