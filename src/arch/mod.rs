//! Target-specific instruction wrappers. This is one of the few places with `unsafe` (inline
//! assembly); every wrapper exposed from here is safe to call.

#[cfg(vitae_dsp)]
pub mod dsp;
