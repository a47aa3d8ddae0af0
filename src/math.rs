//! Float functions whose results must be identical on every target.
//!
//! Only IEEE-754 basic operations (+, −, ×, ÷, conversions), which are correctly rounded and
//! therefore the same on x86-64 and on every Cortex-M FPU (Rust never fuses or reassociates them).
//! Platform `expf` implementations differ in their last bits; this one does not.

/// `e^x` for f32, within 2 ulp for results in the normal range. Results below the smallest
/// normal (x < −87.33) are 0, above f32::MAX (x > 88.72) +∞; NaN stays NaN.
///
/// Branch-free (the out-of-range cases are selects), so loops that call it vectorize (Helium).
/// In Helium's flush-to-zero arithmetic it gives the same bits for every `x` that is 0 or at
/// least 2^−126 in magnitude: when `n = 0` the reduced argument is `x` itself and a product of
/// it that falls below 2^−126 in the polynomial is next added to a coefficient of at least
/// 1/720, which absorbs it (0 or not) alike; when `n ≠ 0`, `|x| ≥ 0.34` and every intermediate
/// is normal (the reduced argument is 0 or at least 2^−45); the result is 0 or at least 2^−126
/// (for `n = −126` the clamp leaves a reduced argument ≥ 0.0065, so `p ≥ 1`).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    exp_cut(x, EXP_MIN_ARG)
}

/// The smallest argument of [`exp`] with a nonzero result: −87.33 (`e^−87.33` is just above
/// 2^−126).
pub const EXP_MIN_ARG: f32 = -87.33;

/// [`exp`] with its zero region moved up: `e^x` for `x ≥ cut` (bit for bit [`exp`]'s), 0 below,
/// for `cut ≥ −87.33`. The same operations as [`exp`], the clamp and the select to 0 at `cut`
/// instead of −87.33, so a vectorized loop pays nothing for the higher cut.
#[inline(always)]
pub fn exp_cut(x: f32, cut: f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for |n| < 2^11 (Cody–Waite).
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const HI: f32 = 88.72;
    let xc = x.clamp(cut, HI); // NaN stays NaN
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
    let y = if x < cut { 0.0 } else { y };
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

/// `x`, or `+0.0` when `|x| ≤ 2^−126`: a product that Helium (which flushes results below 2^−126)
/// and an IEEE unit (which keeps them, and may round one up to exactly 2^−126) can disagree on
/// becomes the same value on both. For the vectorized steps whose data can make tiny products
/// (the attention accumulators' rescaling): an explicit, identical flush on every path.
#[inline(always)]
pub fn zero_tiny(x: f32) -> f32 {
    if x.abs() <= f32::MIN_POSITIVE { 0.0 } else { x }
}

/// Arm flush-to-zero arithmetic on single precision, computed exactly with IEEE operations on
/// any target: what Helium's floating-point vector instructions always compute, and what the scalar
/// FPU of every Cortex-M computes with `FPSCR.FZ = 1` and `FPSCR.DN = 1`.
///
/// The Arm architecture's shared floating-point pseudocode (Armv7-M and Armv8-M alike): with
/// flush-to-zero, `FPUnpack` reads a subnormal operand as a zero of its sign, and `FPRound` turns a
/// result whose *exact* value is below 2^−126 in magnitude into a zero of its sign before any
/// rounding (tininess is detected before rounding), so even a product that IEEE rounding carries
/// up to 2^−126 becomes zero. MVE floating point runs under the standard FPSCR value (FZ = 1,
/// DN = 1, round to nearest) whatever FPSCR holds. Measured under QEMU on the three boards
/// (`tests/qemu`, `arm_flush_to_zero_facts`), which follow the same pseudocode.
///
/// The hand-written Helium steps whose data can make subnormals (the performer's feature ×
/// channel accumulations) use this arithmetic on every target: [`ftz::axpy`] is their
/// definition.
pub mod ftz {
    /// 2^−126, the smallest normal f32.
    const MIN_NORMAL: f32 = f32::MIN_POSITIVE;

    /// `x`, or a zero of `x`'s sign when `x` is subnormal: an operand as Arm reads it with
    /// flush-to-zero.
    #[inline(always)]
    pub fn flush(x: f32) -> f32 {
        if x.abs() < MIN_NORMAL {
            f32::from_bits(x.to_bits() & 0x8000_0000)
        } else {
            x
        }
    }

    /// The default NaN for every NaN result (`FPSCR.DN = 1`).
    #[inline(always)]
    fn default_nan(r: f32) -> f32 {
        if r.is_nan() { f32::NAN } else { r }
    }

    /// `a · b` with flush-to-zero.
    #[inline(always)]
    pub fn mul(a: f32, b: f32) -> f32 {
        let (a, b) = (flush(a), flush(b));
        let r = a * b;
        // |r| > 2^−126 means the exact |a·b| > 2^−126 (rounding is monotonic and 2^−126 is a
        // float), and a zero r is already the right zero; in between the exact product decides.
        if r != 0.0 && r.abs() <= MIN_NORMAL {
            tiny_product(a, b, r)
        } else {
            default_nan(r)
        }
    }

    /// [`mul`] when the rounded product `r` is subnormal or ±2^−126: the exact product of two
    /// f32 values is an f64 (48 significant bits, exponent well inside f64's range).
    #[cold]
    #[inline(never)]
    fn tiny_product(a: f32, b: f32, r: f32) -> f32 {
        if (f64::from(a) * f64::from(b)).abs() < f64::from(MIN_NORMAL) {
            f32::from_bits(r.to_bits() & 0x8000_0000)
        } else {
            r
        }
    }

    /// `a + b` with flush-to-zero.
    #[inline(always)]
    pub fn add(a: f32, b: f32) -> f32 {
        // Zero or normal operands are multiples of 2^−149, so a sum below 2^−126 is exact: the
        // rounded sum is tiny exactly when the exact one is, and keeps its sign.
        default_nan(flush(flush(a) + flush(b)))
    }

    /// `y[i] = y[i] + a · x[i]` over `min(y.len(), x.len())` values with flush-to-zero, the
    /// product and the sum each rounded: the definition of the performer's Helium updates
    /// (`kernels::performer::axpy_f32` and the row updates built from it).
    #[inline]
    pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        for (yi, &xi) in y.iter_mut().zip(x) {
            *yi = add(*yi, mul(a, xi));
        }
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

    /// The flush-to-zero emulation against what the three QEMU boards computed (Helium with
    /// FZ = 0, the scalar FPUs with FZ = DN = 1; `tests/qemu`, `arm_flush_to_zero_facts`).
    #[test]
    fn ftz_matches_the_measured_arm_results() {
        let f = f32::from_bits;
        // (a, b, a·b with flush-to-zero)
        let products = [
            (0x3f80_0000, 0x0001_16c2, 0x0000_0000), // 1 × 1e-40: the subnormal operand reads 0
            (0x0d80_0000, 0x3080_0000, 0x0000_0000), // 2^-100 × 2^-30 = 2^-130: flushed
            (0x8d80_0000, 0x3080_0000, 0x8000_0000), // the sign is kept
            (0x3f7f_fffe, 0x0080_0001, 0x0000_0000), // 2^-126(1 - 2^-46): IEEE rounds up, Arm not
            (0x2000_0000, 0x2000_0000, 0x0080_0000), // exactly 2^-126 stays
            (0x7fc1_2345, 0x3f80_0000, 0x7fc0_0000), // the default NaN
            (0x3fc0_0000, 0x4040_0000, 0x4090_0000), // 1.5 × 3
        ];
        for (a, b, want) in products {
            assert_eq!(ftz::mul(f(a), f(b)).to_bits(), want, "{a:#x} × {b:#x}");
            assert_eq!(ftz::mul(f(b), f(a)).to_bits(), want, "{b:#x} × {a:#x}");
        }
        // IEEE keeps or rounds what Arm flushes.
        assert_eq!((f(0x3f7f_fffe) * f(0x0080_0001)).to_bits(), 0x0080_0000);
        assert_eq!((f(0x0d80_0000) * f(0x3080_0000)).to_bits(), 0x0008_0000);
        let sums = [
            (0x00c0_0000, 0x8080_0000, 0x0000_0000), // 1.5·2^-126 − 2^-126 = 2^-127: flushed
            (0x80c0_0000, 0x0080_0000, 0x8000_0000), // with its sign
            (0x0001_16c2, 0x0001_16c2, 0x0000_0000), // subnormal operands read 0
            (0x0001_16c2, 0x0d80_0000, 0x0d80_0000),
            (0x0080_0000, 0x8080_0000, 0x0000_0000), // x − x = +0
        ];
        for (a, b, want) in sums {
            assert_eq!(ftz::add(f(a), f(b)).to_bits(), want, "{a:#x} + {b:#x}");
        }
        assert_eq!(zero_tiny(f(0x0080_0000)).to_bits(), 0);
        assert_eq!(zero_tiny(f(0x8080_0001)), f(0x8080_0001));
    }

    /// `ftz::mul` against an independent model of Arm's FPRound with flush-to-zero: the exact
    /// product (f64) below 2^-126 gives a signed zero, else the IEEE product; on random operands
    /// around the subnormal boundary.
    #[test]
    fn ftz_mul_decides_on_the_exact_product() {
        let mut s = 0x2545_f491u32;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s
        };
        for _ in 0..200_000 {
            // Exponents spread so that products land on both sides of 2^-126.
            let a = f32::from_bits((next() & 0x807f_ffff) | ((next() % 130) << 23));
            let b = f32::from_bits((next() & 0x807f_ffff) | ((60 + next() % 70) << 23));
            let (fa, fb) = (ftz::flush(a), ftz::flush(b));
            let exact = f64::from(fa) * f64::from(fb);
            let want = if exact.abs() < f64::from(f32::MIN_POSITIVE) {
                if exact.is_sign_negative() {
                    -0.0f32
                } else {
                    0.0
                }
            } else {
                fa * fb
            };
            assert_eq!(ftz::mul(a, b).to_bits(), want.to_bits(), "{a:e} × {b:e}");
        }
    }
}
