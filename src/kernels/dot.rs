//! int8 dot product with int32 accumulation: the inner loop of every int8 kernel.

/// Scalar reference: `Σ a[i]·b[i]` over the common length, accumulated in i32.
///
/// The sum cannot overflow for slices shorter than 2^17 elements (|a·b| ≤ 2^14).
pub fn dot_s8_reference(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}

/// Optimized dot product; bit-identical to [`dot_s8_reference`].
pub fn dot_s8(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(all(vitae_dsp, not(vitae_mve)))]
    {
        dot_s8_dsp(a, b)
    }
    #[cfg(not(all(vitae_dsp, not(vitae_mve))))]
    {
        // On Helium LLVM vectorizes this loop into VMLADAV; on the host it is the reference.
        dot_s8_reference(a, b)
    }
}

/// Four elements per step: SXTB16 unpacks even and odd bytes, SMLAD does two MACs each.
#[cfg(all(vitae_dsp, not(vitae_mve)))]
fn dot_s8_dsp(a: &[i8], b: &[i8]) -> i32 {
    use crate::arch::dsp::{smlad, sxtb16, sxtb16_ror8};
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = 0i32;
    let mut a4 = a.chunks_exact(4);
    let mut b4 = b.chunks_exact(4);
    for (x, y) in (&mut a4).zip(&mut b4) {
        let x = u32::from_le_bytes([x[0] as u8, x[1] as u8, x[2] as u8, x[3] as u8]);
        let y = u32::from_le_bytes([y[0] as u8, y[1] as u8, y[2] as u8, y[3] as u8]);
        acc = smlad(sxtb16(x), sxtb16(y), acc);
        acc = smlad(sxtb16_ror8(x), sxtb16_ror8(y), acc);
    }
    acc + dot_s8_reference(a4.remainder(), b4.remainder())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hand_computed_value() {
        let a = [1i8, -2, 3, -128, 127, 0, 5];
        let b = [4i8, 5, -6, -128, 127, 9, -1];
        assert_eq!(dot_s8_reference(&a, &b), 4 - 10 - 18 + 16384 + 16129 - 5);
        assert_eq!(dot_s8(&a, &b), dot_s8_reference(&a, &b));
    }
}
