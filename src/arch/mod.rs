//! Target-specific instruction wrappers. This is one of the few places with `unsafe` (inline
//! assembly); every wrapper exposed from here is safe to call.

// Helium cores also have the DSP extension, but their kernels use MVE instead.
#[cfg(all(vitae_dsp, not(vitae_mve)))]
pub mod dsp;
