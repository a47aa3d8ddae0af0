//! Compute kernels, one per file.
//!
//! Each kernel has a parameter struct with a checked constructor (invalid parameters are rejected
//! before any kernel runs), a `*_scratch_size` query for the scratch buffer the caller provides,
//! a plain scalar `*_reference` implementation that defines the result, and the entry point the
//! runtime calls, which uses the optimized path of the build target (Cortex-M4/M7 DSP, Cortex-M55
//! Helium) where there is one. Optimized paths equal the reference bit for bit.

pub mod attention;
#[cfg(any(test, feature = "test-cases"))]
pub mod cases;
pub mod conv;
pub mod conv_s4;
pub mod dot;
pub mod elementwise;
pub mod f16;
pub mod f16_fpu;
pub(crate) mod gemm;
pub mod layernorm;
pub mod linear;
pub mod linear_s4;
pub mod performer;
pub mod pixels;
pub mod s4;
mod scratch;

/// Which implementation of a kernel a build uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
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

/// The x86-64 instruction set the host kernels use, chosen once per process (host builds with
/// the `std` feature).
#[cfg(feature = "std")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostSimd {
    /// The portable scalar reference kernels (other architectures, a CPU without AVX2, or
    /// `VITAE_SIMD=off`).
    Off,
    /// AVX2: int8 products widened to int16 and summed in pairs by VPMADDWD (exact).
    Avx2,
}

#[cfg(feature = "std")]
impl HostSimd {
    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            HostSimd::Off => "scalar",
            HostSimd::Avx2 => "avx2",
        }
    }
}

/// The SIMD level the host kernels use: the best the CPU has, unless the environment variable
/// `VITAE_SIMD` is `off` (or `scalar`, or `0`), which forces the portable scalar reference.
/// Every level gives bit-identical results; the switch exists to check exactly that.
#[cfg(feature = "std")]
pub fn host_simd() -> HostSimd {
    static LEVEL: std::sync::OnceLock<HostSimd> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let off =
            std::env::var("VITAE_SIMD").is_ok_and(|v| matches!(v.trim(), "off" | "scalar" | "0"));
        if off { HostSimd::Off } else { detect() }
    })
}

/// The best level this CPU supports.
#[cfg(feature = "std")]
fn detect() -> HostSimd {
    #[cfg(vitae_x86)]
    {
        if crate::arch::x86::has_avx2() {
            return HostSimd::Avx2;
        }
    }
    HostSimd::Off
}

/// Why a kernel refused its parameters or buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum KernelError {
    /// A parameter is out of its valid range or inconsistent with another.
    BadParam {
        /// Which parameter.
        what: &'static str,
    },
    /// A buffer has the wrong length.
    BadLength {
        /// Which buffer.
        what: &'static str,
        /// Length the parameters require.
        need: usize,
        /// Length given.
        have: usize,
    },
}

impl core::fmt::Display for KernelError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            KernelError::BadParam { what } => write!(f, "invalid kernel parameter: {what}"),
            KernelError::BadLength { what, need, have } => {
                write!(
                    f,
                    "buffer `{what}` has {have} elements, the parameters need {need}"
                )
            }
        }
    }
}

impl core::error::Error for KernelError {}

/// 2^−64: the smallest magnitude of a nonzero f32 factor the int8 kernels accept (scales, ratios
/// of scales, offsets and gains). With [`FACTOR_MAX`] = 2^64 this is the validator's half of the
/// subnormal rule (see the crate docs): the products of these factors with integers, and their
/// sums, stay zero or far inside the normal range, so a step that Helium vectorizes computes the
/// same bits as the host.
pub const FACTOR_MIN: f32 = f32::from_bits(0x1f80_0000);
/// 2^64: the largest magnitude of an f32 factor the int8 kernels accept.
pub const FACTOR_MAX: f32 = f32::from_bits(0x5f80_0000);

/// True for a positive factor in `[FACTOR_MIN, FACTOR_MAX]` (false for NaN, ±∞, 0, negatives).
/// On the bits (positive floats order like their bits), so that checking a table vectorizes as
/// integer code: the op records are validated before every inference.
#[inline(always)]
pub(crate) fn is_factor(x: f32) -> bool {
    x.to_bits().wrapping_sub(FACTOR_MIN.to_bits()) <= FACTOR_MAX.to_bits() - FACTOR_MIN.to_bits()
}

/// True for zero or a magnitude in `[FACTOR_MIN, FACTOR_MAX]`, either sign.
#[inline(always)]
pub(crate) fn is_factor_or_zero(x: f32) -> bool {
    let magnitude = f32::from_bits(x.to_bits() & 0x7fff_ffff);
    magnitude.to_bits() == 0 || is_factor(magnitude)
}

/// True when every value of `v` is [`is_factor_or_zero`]. Counts the bad ones instead of stopping
/// at the first, so the loop has no early exit and vectorizes.
pub(crate) fn all_factors_or_zero(v: &[f32]) -> bool {
    v.iter().filter(|&&x| !is_factor_or_zero(x)).count() == 0
}

/// Checks a buffer length exactly.
pub(crate) fn check_len(what: &'static str, have: usize, need: usize) -> Result<(), KernelError> {
    if have == need {
        Ok(())
    } else {
        Err(KernelError::BadLength { what, need, have })
    }
}

/// Checks a parameter condition.
pub(crate) fn ensure(cond: bool, what: &'static str) -> Result<(), KernelError> {
    if cond {
        Ok(())
    } else {
        Err(KernelError::BadParam { what })
    }
}

/// `a · b`, or an error naming `what` when it overflows.
pub(crate) fn mul(a: usize, b: usize, what: &'static str) -> Result<usize, KernelError> {
    a.checked_mul(b).ok_or(KernelError::BadParam { what })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bit tests against the plain definition, at the ends of the range and beyond.
    #[test]
    fn factor_ranges_on_the_bits() {
        let lo = FACTOR_MIN;
        let hi = FACTOR_MAX;
        let next = |x: f32| f32::from_bits(x.to_bits() + 1);
        let prev = |x: f32| f32::from_bits(x.to_bits() - 1);
        for x in [
            0.0f32,
            -0.0,
            lo,
            prev(lo),
            next(lo),
            hi,
            prev(hi),
            next(hi),
            1.0,
            -1.0,
            1e-40,
            f32::MIN_POSITIVE,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::MAX,
        ] {
            for v in [x, -x] {
                let plain = (lo..=hi).contains(&v);
                assert_eq!(is_factor(v), plain, "{v:e}");
                let plain = v == 0.0 || (lo..=hi).contains(&v.abs());
                assert_eq!(is_factor_or_zero(v), plain, "{v:e}");
                assert_eq!(all_factors_or_zero(&[1.0, v, 0.0]), plain, "{v:e}");
            }
        }
    }
}
