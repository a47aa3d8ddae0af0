//! Target-specific instruction wrappers. This is one of the few places with `unsafe` (inline
//! assembly); every wrapper exposed from here is safe to call.
//!
//! Each module is compiled for its cores (as assembly) and for host tests (as plain Rust with the
//! same semantics), so the optimized kernels built on it can be tested on the host too.

// Helium cores also have the DSP extension, but their kernels use MVE instead.
#[cfg(any(test, all(vitae_dsp, not(vitae_mve))))]
pub(crate) mod dsp;
#[cfg(any(test, vitae_mve))]
pub(crate) mod mve;

// The single-precision register class needs the `vfp2` feature, which the Cortex-M4 target
// (single-precision FPU) does not enable; Helium cores have it.
#[cfg(all(target_arch = "arm", vitae_mve))]
pub(crate) mod fpu;

// Half precision on the scalar FPU (the fp16 kernels on every Arm core with one); compiled as
// plain Rust elsewhere, so the tiled fp16 kernels built on it run and are tested on the host too.
pub(crate) mod vfp;

// The host engine's x86-64 paths (AVX2 chosen at run time).
#[cfg(vitae_x86)]
pub(crate) mod x86;
