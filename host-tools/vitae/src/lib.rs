//! The `vitae` host tool as a library: everything the CLI does, testable without a process.
//!
//! * [`checkpoint`]: official PyTorch checkpoints (`torch.save` zip, `.safetensors`) -> f32 tensors.
//! * [`config`]: the `ViTAE_ViT_basic` architecture arguments, presets and per-stage geometry.
//! * [`validate`]: expected state_dict of a config and a full mismatch report.
//! * [`mod@reference`]: the f32 reference engine (ops + model), the oracle for everything else.
//! * [`npy`], [`io`]: NumPy files and atomic writes.
//! * [`quantize`]: post-training quantization: float graph, calibration, mixed precision,
//!   lowering to a device blob with its arena plan.
//! * [`engine`]: the device runtime on the host (bit-identical to the firmware).
//! * [`boards`]: the table of boards (`firmware/boards.rs`): memory regions for arena plans.
//! * [`calib_data`]: calibration images from `.npy` or image folders.
//! * [`eval`]: labelled datasets (ImageFolder, `.npz`) streamed through engines, scored.
//! * [`settings`]: the ranges of the quantize settings (flags, Python arguments).
//! * [`text`]: untrusted names escaped before they reach a terminal; how errors are reported.

#![forbid(unsafe_code)]

pub mod boards;
pub mod calib_data;
pub mod checkpoint;
pub mod config;
pub mod engine;
pub mod eval;
pub mod io;
pub mod npy;
pub mod quantize;
pub mod reference;
pub mod report;
pub mod settings;
pub mod text;
pub mod validate;
