//! Compute kernels. Each kernel has a plain scalar `reference` implementation and, where the
//! target has them, optimized paths (`dsp` for Cortex-M4/M7, `mve` for Cortex-M55) that are
//! bit-identical to the reference.

pub mod dot;

/// Which implementation of a kernel a build uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    /// Plain scalar Rust, the definition of the result.
    Reference,
    /// Armv7E-M DSP extension (SMLAD, SXTB16).
    Dsp,
    /// Armv8.1-M Helium (MVE).
    Mve,
}

/// The implementation this build selects for the optimized entry points.
pub const fn selected_impl() -> Impl {
    if cfg!(vitae_mve) {
        Impl::Mve
    } else if cfg!(vitae_dsp) {
        Impl::Dsp
    } else {
        Impl::Reference
    }
}
