//! Float functions whose results must be identical on every target.
//!
//! Only IEEE-754 basic operations (+, −, ×, ÷, conversions), which are correctly rounded and
//! therefore the same on x86-64 and on every Cortex-M FPU (Rust never fuses or reassociates them).
//! Platform `expf` implementations differ in their last bits; this one does not.

/// `e^x` for f32, within 2 ulp for results in the normal range. Results below the smallest
/// normal (x < −87.33) are 0, above f32::MAX (x > 88.72) +∞; NaN stays NaN.
///
/// Branch-free (the out-of-range cases are selects), so loops that call it vectorize (Helium).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for |n| < 2^11 (Cody–Waite).
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const LO: f32 = -87.33;
    const HI: f32 = 88.72;
    let xc = x.clamp(LO, HI); // NaN stays NaN
    // n = floor(xc·log2e + 0.5): the +128.5 keeps the truncating conversion on positive values.
    let n = (xc * LOG2E + 128.5) as i32 - 128;
    let nf = n as f32;
    let r = (xc - nf * LN2_HI) - nf * LN2_LO; // |r| ≤ ~0.35
    // Taylor to degree 7 (remainder < 2e-9 relative over |r| ≤ 0.35), Horner form.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2^n in two factors so that neither leaves the normal range (n ∈ [−126, 128]).
    let half = n >> 1;
    let y = p * pow2i(half) * pow2i(n - half);
    let y = if x < LO { 0.0 } else { y };
    if x > HI { f32::INFINITY } else { y }
}

/// 2^n for n in [−126, 127] built from the exponent bits.
#[inline(always)]
fn pow2i(n: i32) -> f32 {
    f32::from_bits(((n + 127) as u32) << 23)
}

/// `x · sigmoid(x)` (SiLU).
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// `x · Φ(x)` with the exact error function (PyTorch's default GELU).
#[inline]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * core::f32::consts::FRAC_1_SQRT_2))
}

/// Square root, correctly rounded as IEEE requires: the FPU's VSQRT on the Cortex-M55, `libm`
/// elsewhere (the same results).
#[inline]
pub fn sqrt(x: f32) -> f32 {
    #[cfg(all(target_arch = "arm", vitae_mve))]
    {
        crate::arch::fpu::sqrt_f32(x)
    }
    #[cfg(not(all(target_arch = "arm", vitae_mve)))]
    {
        libm::sqrtf(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_f64() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let got = exp(x) as f64;
            let want = (x as f64).exp();
            let ulp = (want as f32).to_bits().abs_diff((got as f32).to_bits());
            worst = worst.max(ulp as f64);
            x += 0.0137;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn activations_match_their_definitions() {
        for &x in &[-6.0f32, -1.0, -0.1, 0.0, 0.3, 2.0, 7.5] {
            let xd = x as f64;
            let silu_ref = xd / (1.0 + (-xd).exp());
            assert!((silu(x) as f64 - silu_ref).abs() < 1e-6, "silu({x})");
            let gelu_ref = 0.5 * xd * (1.0 + libm::erf(xd / 2f64.sqrt()));
            assert!((gelu(x) as f64 - gelu_ref).abs() < 1e-6, "gelu({x})");
        }
    }
}
