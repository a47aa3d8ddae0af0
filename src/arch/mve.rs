//! Armv8.1-M Helium (MVE) micro-kernels as safe functions.
//!
//! On a Helium core these are inline assembly (stable Rust has no MVE intrinsics, and LLVM's
//! auto-vectorizer does not block a matrix product over registers). Everywhere else (the host)
//! the same functions are plain Rust with the same semantics, so the Helium kernels' blocking and
//! data layouts are exercised by the host unit tests against the scalar reference; the assembly
//! itself is checked against the reference under QEMU (`tests/qemu`).
#![allow(unsafe_code)]

#[cfg(all(target_arch = "arm", vitae_mve))]
use core::arch::asm;

/// Bytes per chunk of one packed column: one 16-lane int8 vector.
pub const CHUNK: usize = 16;
/// Columns interleaved in a packed buffer of [`mac_2x3`].
pub const COLS: usize = 3;

/// Byte offset of value `k` of column `col` (0..3) in a packed column buffer.
///
/// Column values are interleaved in chunks of 16: chunk `i` of the three columns is stored as
/// `[c0 k16i..16i+16][c1 …][c2 …]`, so one pointer with immediate offsets reaches all three.
#[inline(always)]
pub const fn packed_offset(col: usize, k: usize) -> usize {
    (k / CHUNK) * (COLS * CHUNK) + col * CHUNK + k % CHUNK
}

/// Bytes a packed buffer of three columns of `k` values needs.
pub const fn packed_len(k: usize) -> usize {
    k.div_ceil(CHUNK) * COLS * CHUNK
}

/// Two rows against three packed columns: `acc[3r + c] += Σ_{i<k} w_r[i] · x_c[i]`, for the
/// first `k` values, where `k` is limited to what `w0`, `w1` and `cols` hold (`cols` needs
/// [`packed_len`]`(k)` bytes).
///
/// Per 16 values of `k`: five VLDRB, six VMLADAVA and one LETP (tail-predicated, so `k` need not
/// be a multiple of 16 and nothing beyond the `k`th value is read). Six accumulators is what the
/// even general-purpose registers VMLADAVA needs allow (LR counts the loop; Rust reserves r6).
#[inline]
pub fn mac_2x3(w0: &[i8], w1: &[i8], cols: &[i8], k: usize, acc: [i32; 6]) -> [i32; 6] {
    let k = k
        .min(w0.len())
        .min(w1.len())
        .min(cols.len() / (COLS * CHUNK) * CHUNK);
    #[cfg(all(target_arch = "arm", vitae_mve))]
    {
        if k == 0 {
            return acc;
        }
        let [mut a0, mut a1, mut a2, mut a3, mut a4, mut a5] = acc;
        // SAFETY: the loop runs ceil(k/16) times with tail predication on k lanes, so it reads
        // exactly `k` bytes from `w0` and from `w1` and, per column, the first `k` values of a
        // buffer of `packed_len(k)` bytes; all within the slices by the choice of `k ≥ 1`
        // (inactive lanes of the last, predicated iteration are not accessed). VLDRB has no
        // alignment requirement. Writes only operand registers, LR and q0–q3 (all clobbered
        // through the C ABI); no memory is written.
        unsafe {
            asm!(
                "dlstp.8 lr, r9",
                "2:",
                "vldrb.u8 q0, [r1], #16",
                "vldrb.u8 q1, [r3], #16",
                "vldrb.u8 q2, [r5, #16]",
                "vldrb.u8 q3, [r5, #32]",
                "vmladava.s8 r2, q0, q2",
                "vmladava.s8 r10, q1, q2",
                "vldrb.u8 q2, [r5], #48",
                "vmladava.s8 r4, q0, q3",
                "vmladava.s8 r12, q1, q3",
                "vmladava.s8 r0, q0, q2",
                "vmladava.s8 r8, q1, q2",
                "letp lr, 2b",
                inout("r0") a0,
                inout("r2") a1,
                inout("r4") a2,
                inout("r8") a3,
                inout("r10") a4,
                inout("r12") a5,
                inout("r1") w0.as_ptr() => _,
                inout("r3") w1.as_ptr() => _,
                inout("r5") cols.as_ptr() => _,
                in("r9") k,
                clobber_abi("C"),
                options(readonly, nostack),
            );
        }
        [a0, a1, a2, a3, a4, a5]
    }
    #[cfg(not(all(target_arch = "arm", vitae_mve)))]
    {
        let mut acc = acc;
        for i in 0..k {
            let x = [0, 1, 2].map(|c| i32::from(cols[packed_offset(c, i)]));
            for (r, w) in [w0, w1].iter().enumerate() {
                for c in 0..COLS {
                    acc[3 * r + c] = acc[3 * r + c].wrapping_add(i32::from(w[i]) * x[c]);
                }
            }
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_2x3_is_six_dot_products() {
        for k in [1usize, 15, 16, 17, 40] {
            let w0: [i8; 40] = core::array::from_fn(|i| (i as i8).wrapping_mul(37));
            let w1: [i8; 40] = core::array::from_fn(|i| (i as i8).wrapping_mul(-59));
            let x: [[i8; 40]; 3] = core::array::from_fn(|c| {
                core::array::from_fn(|i| ((c * 40 + i) as i8).wrapping_mul(73))
            });
            let mut cols = [0i8; packed_len(40)];
            for (c, xc) in x.iter().enumerate() {
                for (i, &v) in xc.iter().enumerate() {
                    cols[packed_offset(c, i)] = v;
                }
            }
            let got = mac_2x3(&w0, &w1, &cols, k, [0, 1, 2, 3, 4, 5]);
            for (r, w) in [&w0, &w1].iter().enumerate() {
                for c in 0..3 {
                    let want: i32 = (0..k).map(|i| w[i] as i32 * x[c][i] as i32).sum();
                    assert_eq!(
                        got[3 * r + c],
                        want + (3 * r + c) as i32,
                        "k={k} r={r} c={c}"
                    );
                }
            }
        }
    }
}
