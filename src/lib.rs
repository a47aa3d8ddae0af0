//! # vitae-edge
//!
//! `no_std`, allocation-free int8 and fp16 kernels and the runtime that runs quantized ViTAE
//! vision transformers on Arm Cortex-M microcontrollers. The same code runs on the host, where
//! the `vitae` tool uses it to check a quantized model bit for bit before it goes to a device.
//!
//! ## In your firmware
//!
//! A blob (`.vblob`, written by `vitae quantize`) is embedded with [`include_model!`], which
//! checks its header and reads its arena size when the firmware compiles; the arena is an
//! [`Arena`] of exactly that size; [`EmbeddedModel::parse`] validates the whole blob once; then
//! [`run`] does one inference, or a [`Runner`] does it one op at a time (an async task yields
//! between ops). Nothing allocates.
//!
//! ```
//! use vitae_edge::{Arena, EmbeddedModel, Input, NoProfiler, include_model};
//!
//! const MODEL: EmbeddedModel = include_model!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz/seeds/blob/transformer-int8.vblob"));
//!
//! # fn main() -> Result<(), vitae_edge::RunError> {
//! let mut arena = Arena::<{ MODEL.arena_len() }>::new(); // a `static` in firmware
//! let model = MODEL.parse()?;
//! let image = [0.0f32; 2 * 8 * 8]; // this tiny model: 2 channels, 8 × 8
//! let out = vitae_edge::run(&model, arena.as_mut_slice(), Input::F32Nchw(&image), &mut NoProfiler)?;
//! let [(class, _logit)] = out.top_k::<1>();
//! assert!(usize::from(class) < out.len());
//! # Ok(())
//! # }
//! ```
//!
//! A blob that arrives at run time (over a link, into a heap or a fixed buffer) goes through the
//! same [`Model::parse`]; [`format::read_header_prefix`] sizes its buffers from its first
//! [`format::HEADER_LEN`] bytes. The items re-exported here are the API to build on; the modules
//! below them (`format`, `ops`, `kernels`, …) are public for the `vitae` host tool and for
//! tests, and change more often.
//!
//! ## Numerics contract
//!
//! The host tool, the host engine and the firmware all depend on these rules; they are what makes
//! int8 results bit-identical on x86-64 and on every Cortex-M target.
//!
//! * **Tensors.** Activations are int8 with one scale and zero point per tensor:
//!   `real = scale · (q − zero_point)`, stored NHWC (token layout: token = row·W + col, channels
//!   innermost). Weights are int8, symmetric, one scale per output channel. Biases are int32 at
//!   scale `input_scale · weight_scale[c]`, with the input zero point folded in by the host
//!   (`bias − zp_in · Σ w`); a convolution's zero padding is the input zero point.
//! * **Requantization** ([`quant::requantize`]): `acc · M · 2^(shift−31)` with a Q31 multiplier
//!   `M ∈ [2^30, 2^31)` and `shift ∈ [−31, 30]`, one rounding step, half toward +∞
//!   (CMSIS-NN's single-rounding `arm_nn_requantize`, TFLite's single-rounding mode), exact for
//!   every accepted multiplier and shift (64-bit intermediate, the rounded value saturated to
//!   i32; checked against a 128-bit oracle); then `+ zero_point` and saturation to int8.
//! * **Nonlinear functions on int8** (GELU with exact erf, SiLU) are 256-entry tables
//!   ([`quant::Lut256`]) the host builds from the float function on the quantized grid: a layer
//!   with an activation requantizes to the activation's input grid, then looks the result up.
//! * **Where int8 alone loses too much** — LayerNorm statistics, softmax, the performer's random
//!   features and normalizer, residual adds of tensors with different scales, mean-pooling — the
//!   kernels compute exact integer sums and then f32 arithmetic using only the IEEE basic
//!   operations (+ − × ÷ √, conversions) and this crate's own [`math::exp`], in a fixed order.
//!   Those are correctly rounded on every target, so the results do not depend on the platform.
//!   Every float → integer conversion rounds half toward +∞ ([`quant::round_half_up`]).
//! * **Subnormals.** Helium's floating-point vector instructions compute in Arm flush-to-zero
//!   arithmetic whatever FPSCR holds (the standard FPSCR value): a subnormal operand reads as
//!   zero, a result whose *exact* value is below 2^−126 becomes a zero of its sign (tininess is
//!   detected before rounding, so even a product IEEE rounds up to 2^−126 becomes 0), a NaN the
//!   default NaN. The host and the scalar FPUs (FPSCR.FZ = 0 at reset) keep subnormals. Measured
//!   under QEMU on all three boards (`tests/qemu`: `arm_flush_to_zero_facts`); [`math::ftz`]
//!   documents the rules. Host = device holds by construction for every f32 step the Cortex-M55
//!   build vectorizes, by hand or by LLVM; `cargo xtask test` lists those steps from the
//!   disassembly and fails on one nobody reviewed (`host-tools/xtask/src/vector_fp.rs`). Each
//!   step states its argument where it computes; there are four kinds:
//!   - *No subnormal reaches or leaves it.* The validator keeps every f32 factor of the int8
//!     ops 0 or of magnitude 2^−64..2^64 ([`kernels::FACTOR_MIN`], [`kernels::FACTOR_MAX`];
//!     LayerNorm's eps term up to 2^96, the performer's k, q and w scales 2^−40..2^40). Integers
//!     times such factors are 0 or at least 2^−64, and a sum whose larger operand is M is 0 or
//!     at least M·2^−25 (when it cancels, both operands are within a factor 2 of each other and
//!     their last bits are worth at least that). This covers the add, mean pool, LayerNorm, the
//!     performer's exponents, tokens and feature sums (a feature is 0 when its exponential is
//!     below 2^−120, i.e. its exponent below −83.17, [`kernels::performer::FEATURE_ARG_MIN`]), [`math::exp`] on such inputs, and
//!     the attention probabilities (computed for scales 2^−88..2^96 and a running maximum 0 or
//!     at least 2^−88, every validated attention's; 0 otherwise, on every target).
//!   - *An explicit flush, the same on every path,* where data can make tiny products:
//!     [`math::zero_tiny`] (magnitude ≤ 2^−126 → +0) in the attention accumulators' rescaling
//!     (int8 and fp16); the performer's output scale goes through [`math::ftz::flush`].
//!   - *A rounding constant absorbs it.* Image quantization and the performer's and attention's
//!     output stages add at least 0.5 to a product before converting to an integer: a product
//!     below 2^−126 (0 on Helium, tiny or 2^−126 elsewhere; with the factor ranges above, a
//!     subnormal operand contributes less than 2^−62) rounds away in that sum alike.
//!   - *Flush-to-zero arithmetic on every target.* The performer's feature × channel
//!     accumulations, where cancelling sums and tiny features make subnormals unavoidable, are
//!     defined in flush-to-zero arithmetic: Helium assembly on the M55, the scalar FPU with
//!     FPSCR.FZ and DN set inside the assembly block on the M4/M7, [`math::ftz`] (an exact
//!     emulation) on the host.
//!
//!   The on-target test `subnormals_through_every_vectorized_step` feeds subnormals and tiny
//!   intermediates through each step and compares with the digests the host computes
//!   (`kernels::cases::subnormal`, built with the `test-cases` feature).
//! * **Attention** processes keys in tiles of [`kernels::attention::KEY_TILE`] with an online
//!   softmax (running max and sum); the tile size is part of the contract because the rounding of
//!   the probabilities depends on the running max.
//! * **fp16**: weights and activations are stored as IEEE binary16 and computed in f32 (the same
//!   basic operations, same order on every target).
//!
//! Optimized kernels (Cortex-M4/M7 DSP, Cortex-M55 Helium, and the host engine's x86-64 AVX2
//! paths, chosen at run time by `kernels::host_simd` in std builds) reorder only exact integer
//! sums and run their f32 steps lane by lane with the scalar code's operations in its order, so
//! they equal the scalar reference bit for bit; the tests check this on the host and under QEMU.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod arch;
pub mod embed;
pub mod format;
pub mod kernels;
pub mod math;
pub mod ops;
pub mod preprocess;
pub mod quant;
pub mod runtime;

// The API to build firmware on, by name (no glob: what is here is chosen).
pub use embed::{Arena, EmbeddedModel};
pub use format::{FormatError, FormatErrorKind, Model};
pub use kernels::KernelError;
pub use runtime::{
    ImageLayout, Input, MemCopy, NoProfiler, Output, Profiler, RunError, Runner, StageCopy,
    WeightTraffic, check, check_parts, run, run_in_parts,
};
