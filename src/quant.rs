//! The int8 numerics contract: requantization, rounding, lookup tables.
//!
//! These few functions define every int8 result this crate produces; host and device run the
//! same code, so results are bit-identical by construction. See the crate docs for the contract.

/// A real multiplier in fixed point: `real ≈ multiplier · 2^(shift − 31)`.
///
/// `multiplier` is in `[2^30, 2^31)` (or 0 for a zero multiplier) and `shift` in `[-31, 30]`, as
/// in TFLite's `QuantizeMultiplier` and CMSIS-NN's `arm_nn_requantize`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Requant {
    /// Q31 mantissa.
    pub multiplier: i32,
    /// Power-of-two exponent.
    pub shift: i32,
}

/// Smallest accepted `Requant::shift`.
pub const MIN_SHIFT: i32 = -31;
/// Largest accepted `Requant::shift`.
pub const MAX_SHIFT: i32 = 30;

impl Requant {
    /// True when the fields are in their documented ranges.
    pub fn is_valid(&self) -> bool {
        (self.multiplier == 0 || self.multiplier >= 1 << 30)
            && (MIN_SHIFT..=MAX_SHIFT).contains(&self.shift)
    }

    /// True when every entry [`is_valid`](Self::is_valid). Counts the bad ones instead of
    /// stopping at the first, so the loop has no early exit and vectorizes: kernels are built
    /// from the blob before every inference, and this is most of that work.
    pub fn all_valid(requant: &[Requant]) -> bool {
        requant.iter().filter(|r| !r.is_valid()).count() == 0
    }

    /// The multiplier closest to `real` (which must be finite and ≥ 0), with the mantissa
    /// rounded to nearest (TFLite's `QuantizeMultiplier`). Multipliers too small to represent
    /// become zero; too large ones are an error.
    pub fn from_real(real: f64) -> Option<Requant> {
        if !real.is_finite() || real < 0.0 {
            return None;
        }
        if real == 0.0 {
            return Some(Requant {
                multiplier: 0,
                shift: 0,
            });
        }
        // real = m · 2^e with m in [0.5, 1) (exact: only powers of two are applied).
        let (mut m, mut e) = (real, 0i32);
        while m >= 1.0 {
            m /= 2.0;
            e += 1;
        }
        while m < 0.5 && e > -1100 {
            m *= 2.0;
            e -= 1;
        }
        let mut q = libm::round(m * (1u64 << 31) as f64) as i64;
        if q == 1i64 << 31 {
            q /= 2;
            e += 1;
        }
        if e < MIN_SHIFT {
            return Some(Requant {
                multiplier: 0,
                shift: 0,
            });
        }
        if e > MAX_SHIFT {
            return None;
        }
        Some(Requant {
            multiplier: q as i32,
            shift: e,
        })
    }

    /// The real value this multiplier stands for.
    pub fn to_real(&self) -> f64 {
        self.multiplier as f64 * pow2(self.shift - 31)
    }
}

fn pow2(e: i32) -> f64 {
    libm::exp2(e as f64)
}

/// `acc · multiplier · 2^(shift − 31)`, rounded half toward +∞ (one rounding step), saturated
/// to the i32 range.
///
/// This is CMSIS-NN's `arm_nn_requantize` with `CMSIS_NN_USE_SINGLE_ROUNDING` and TFLite's
/// single-rounding `MultiplyByQuantizedMultiplier`: `((acc·M) >> (30 − shift)) + 1) >> 1` with an
/// arithmetic shift on the 64-bit product. The only rounding rule of the int8 kernels.
///
/// Exact for every multiplier and shift [`Requant::is_valid`] accepts: the shifted product and the
/// final rounding step stay in 64 bits (`|acc · M| < 2^62`), and only the rounded value is
/// saturated to i32 (the callers add a zero point and saturate to int8, so a saturated value
/// keeps its sign). Kept in 32 bits, the step `(p >> (30 − shift))` wraps when the result is at
/// least 2^30 in magnitude, which needs `shift ≥ −1` (a multiplier of 0.25 or more): no model
/// from PyTorch gets there, a crafted blob can. For `shift ≤ −2` the optimized kernels' fast
/// path (high word of the product, see `kernels::gemm::OutQuant::apply`) computes the same
/// value; they call this function for every other channel.
#[inline(always)]
pub fn requantize(acc: i32, r: Requant) -> i32 {
    let total_shift = 31 - r.shift; // in [1, 62]
    let prod = acc as i64 * r.multiplier as i64;
    let result = prod >> (total_shift - 1);
    let rounded = (result >> 1) + (result & 1);
    rounded.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// Saturates to the int8 range.
#[inline(always)]
pub fn saturate_i8(x: i32) -> i8 {
    x.clamp(-128, 127) as i8
}

/// `floor(y + 0.5)` as i32 (round half toward +∞), saturating; NaN gives 0.
///
/// The rounding rule for every float → integer conversion in the crate. Uses only a truncating
/// conversion and a compare, so it is exact and identical on every IEEE-754 target.
#[inline(always)]
pub fn round_half_up(y: f32) -> i32 {
    let t = y + 0.5;
    let i = t as i32; // truncates toward zero, saturates
    // Below i32::MIN the conversion already saturated: stay there (a crafted blob's factors can
    // get here; a wrapping `i - 1` would turn the most negative value into the most positive).
    if (i as f32) > t {
        i.saturating_sub(1)
    } else {
        i
    }
}

/// `saturate_i8(floor(y + 0.5))`: the int8 rounding of every f32 result (round half toward +∞,
/// NaN gives −128).
///
/// Computed as `clamp(trunc(y + 128.5), 0, 255) − 128`: for `y + 128.5 ≥ 0` truncation is floor,
/// and everything below saturates anyway. One add, one truncating conversion and an integer
/// saturation (USAT on Arm): no compare or branch, identical on every IEEE-754 target.
#[inline(always)]
pub fn round_to_i8(y: f32) -> i8 {
    let i = (y + 128.5) as i32;
    (i.clamp(0, 255) - 128) as i8
}

/// `saturate_i16(floor(y + 0.5))`: the int16 rounding of every f32 result (round half toward
/// +∞, NaN gives −32768), [`round_to_i8`]'s rule on the int16 range: `clamp(trunc(y + 32768.5),
/// 0, 65535) − 32768`.
#[inline(always)]
pub fn round_to_i16(y: f32) -> i16 {
    let i = (y + 32768.5) as i32;
    (i.clamp(0, 65535) - 32768) as i16
}

/// Quantizes a real value: `saturate(floor(x · inv_scale + zero_point + 0.5))`.
///
/// The zero point joins the constant (`zero_point + 128.5` is exact), so this is
/// [`round_to_i8`]`(x · inv_scale + zero_point)` with a single rounding of the sum.
#[inline(always)]
pub fn quantize_f32(x: f32, inv_scale: f32, zero_point: i32) -> i8 {
    let i = (x * inv_scale + (zero_point as f32 + 128.5)) as i32;
    (i.clamp(0, 255) - 128) as i8
}

/// A 256-entry int8 → int8 table: `out = table[in + 128]`. Nonlinear functions (GELU, SiLU) are
/// applied this way; the host builds each table from the float function on the quantized grid.
#[repr(transparent)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Lut256(pub [i8; 256]);

impl core::fmt::Debug for Lut256 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Lut256([{}, {}, …, {}])",
            self.0[0], self.0[1], self.0[255]
        )
    }
}

impl Lut256 {
    /// Looks a value up.
    #[inline(always)]
    pub fn apply(&self, x: i8) -> i8 {
        self.0[(x as u8 ^ 0x80) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requantize_rounds_half_up() {
        // multiplier 0.5 exactly: 2^30 with shift 0.
        let half = Requant {
            multiplier: 1 << 30,
            shift: 0,
        };
        assert_eq!(requantize(3, half), 2); // 1.5 -> 2
        assert_eq!(requantize(-3, half), -1); // -1.5 -> -1
        assert_eq!(requantize(5, half), 3); // 2.5 -> 3
        assert_eq!(requantize(4, half), 2);
        assert_eq!(requantize(i32::MIN, half), -(1 << 30));
    }

    #[test]
    fn requantize_is_exact_at_the_extremes_of_every_valid_shift() {
        use crate::kernels::cases::{Rng, requant};
        // Failed before the 64-bit final step: acc = 2^31 − 1, M = 2^31 − 1, shift 0 gave −2
        // (the 32-bit `prod >> 30` wrapped) instead of 2^31 − 2.
        let worst = Requant {
            multiplier: i32::MAX,
            shift: 0,
        };
        assert_eq!(requantize(i32::MAX, worst), 2_147_483_646);
        assert_eq!(requantize(i32::MIN, worst), -2_147_483_647);
        assert_eq!(requant::oracle(i32::MAX, worst), 2_147_483_646);
        let mut checked = 0;
        for (acc, r) in requant::extremes() {
            assert!(r.is_valid());
            assert_eq!(
                requantize(acc, r),
                requant::oracle(acc, r),
                "acc {acc}, {r:?}"
            );
            checked += 1;
        }
        assert_eq!(checked, 62 * 6 * 17);
        // And a deterministic spread of random valid pairs.
        let mut rng = Rng(0x9E37_79B9);
        for _ in 0..200_000 {
            let acc = rng.next_u32() as i32;
            let multiplier = (1 << 30) | (rng.next_u32() >> 2) as i32;
            let shift = MIN_SHIFT + (rng.next_u32() % 62) as i32;
            let r = Requant { multiplier, shift };
            assert_eq!(
                requantize(acc, r),
                requant::oracle(acc, r),
                "acc {acc}, {r:?}"
            );
        }
    }

    #[test]
    fn from_real_round_trips() {
        for &r in &[1.0, 0.5, 0.25, 0.001234, 0.75, 1.9999, 3.0e-9, 123.456] {
            let q = Requant::from_real(r).unwrap();
            assert!(q.is_valid(), "{r}: {q:?}");
            let back = q.to_real();
            assert!((back - r).abs() <= r * 1e-9, "{r} -> {q:?} -> {back}");
        }
        assert_eq!(
            Requant::from_real(0.0),
            Some(Requant {
                multiplier: 0,
                shift: 0
            })
        );
        assert_eq!(
            Requant::from_real(1e-12),
            Some(Requant {
                multiplier: 0,
                shift: 0
            })
        );
        assert_eq!(Requant::from_real(f64::NAN), None);
        assert_eq!(Requant::from_real(1e10), None);
    }

    #[test]
    fn requantize_matches_float_within_half() {
        let r = 0.0123456f64;
        let q = Requant::from_real(r).unwrap();
        for acc in [-100000, -12345, -1, 0, 1, 999, 54321, 2_000_000] {
            let exact = acc as f64 * q.to_real();
            let got = requantize(acc, q) as f64;
            assert!((got - exact).abs() <= 0.5 + 1e-9, "{acc}: {got} vs {exact}");
        }
    }

    #[test]
    fn round_half_up_is_floor_of_y_plus_half() {
        for &(y, want) in &[
            (0.5f32, 1),
            (-0.5, 0),
            (1.49, 1),
            (-1.5, -1),
            (-1.51, -2),
            (2.5, 3),
            (1e10, i32::MAX),
            (-1e10, i32::MIN),
            (f32::NEG_INFINITY, i32::MIN),
            (f32::INFINITY, i32::MAX),
        ] {
            assert_eq!(round_half_up(y), want, "{y}");
        }
        assert_eq!(round_half_up(f32::NAN), 0);
        for &(y, want) in &[
            (0.5f32, 1i8),
            (-0.5, 0),
            (-0.51, -1),
            (126.5, 127),
            (-128.5, -128),
            (1e30, 127),
            (-1e30, -128),
        ] {
            assert_eq!(round_to_i8(y), want, "{y}");
        }
        assert_eq!(round_to_i8(f32::NAN), -128);
        assert_eq!(quantize_f32(1000.0, 1.0, 0), 127);
        assert_eq!(quantize_f32(-1000.0, 1.0, 0), -128);
        assert_eq!(quantize_f32(-1e30, 1.0, 127), -128);
        assert_eq!(quantize_f32(0.26, 4.0, -3), -2);
    }

    #[test]
    fn lut_indexes_by_value_plus_128() {
        let mut t = [0i8; 256];
        for (i, v) in t.iter_mut().enumerate() {
            *v = (i as i32 - 128).clamp(-128, 127) as i8;
        }
        let lut = Lut256(t);
        for x in i8::MIN..=i8::MAX {
            assert_eq!(lut.apply(x), x);
        }
    }
}
