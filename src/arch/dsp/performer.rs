//! The performer's f32 row updates on Cortex-M4/M7: the same flush-to-zero arithmetic as the
//! Helium assembly (`arch::mve::performer`), from the scalar FPU with `FPSCR.FZ` and `FPSCR.DN`
//! set for the duration of one assembly block.
//!
//! Rust assumes the default floating-point environment everywhere else, so the mode is set and
//! restored inside the block that computes: no Rust code ever runs with it. The architecture's
//! flush-to-zero (operands and results below 2^−126 read and written as signed zeros, tininess
//! detected before rounding, default NaN) is the one Helium's vector instructions always use;
//! `math::ftz` emulates it on the host and is the definition these functions are tested against.

#[cfg(all(target_arch = "arm", vitae_dsp, target_feature = "fpregs"))]
use core::arch::asm;

/// For each row `i < coef.len()`: `dst_i[c] = dst_i[c] + coef[i] · src_i[c]` for `c < e`, with
/// flush-to-zero arithmetic (the product and the sum each rounded), where row `i` of the
/// destination starts `i · dst_step` floats after `dst` and of the source `i · src_step` after
/// `src` (a step of 0 reuses the same row).
///
/// # Safety
/// `e ≥ 1`, `coef` is not empty, every row read (`src_i[..e]`) is inside one live allocation of
/// `f32`, every row written (`dst_i[..e]`) inside one that nothing else accesses during the call,
/// and no written row overlaps a row read.
#[cfg(all(target_arch = "arm", vitae_dsp, target_feature = "fpregs"))]
#[inline]
unsafe fn rows_ftz(
    dst: *mut f32,
    dst_step: usize,
    src: *const f32,
    src_step: usize,
    coef: &[f32],
    e: usize,
) {
    // After a row the pointers have moved on by `e` floats; these bring them to the next row.
    let dst_adjust = (dst_step as isize - e as isize) * 4;
    let src_adjust = (src_step as isize - e as isize) * 4;
    // SAFETY: the caller guarantees the rows are in bounds and the written ones exclusive; the
    // block reads `coef.len() ≥ 1` floats of `coef` and `e ≥ 1` floats per row, four at a time
    // (VLDM/VSTM need only the 4-byte alignment of `f32`) then one at a time. s0–s9 are saved on
    // the stack and restored (the single-precision register class is not available to declare on
    // the Cortex-M4 target); FPSCR is saved in s9, given FZ (bit 24) and DN (bit 25) and restored
    // before the block ends, so no Rust code sees the mode. Flags and the pointer registers are
    // declared clobbered.
    unsafe {
        asm!(
            "vpush {{s0-s9}}",
            "vmrs {t}, fpscr",
            "vmov s9, {t}",
            "orr {t}, {t}, #0x03000000",
            "vmsr fpscr, {t}",
            "2:",
            "vldmia {k}!, {{s0}}",
            "lsrs {t}, {e}, #2",
            "beq 4f",
            "3:",
            "vldmia {s}!, {{s1-s4}}",
            "vldmia {d}, {{s5-s8}}",
            "vmul.f32 s1, s1, s0",
            "vmul.f32 s2, s2, s0",
            "vmul.f32 s3, s3, s0",
            "vmul.f32 s4, s4, s0",
            "vadd.f32 s5, s5, s1",
            "vadd.f32 s6, s6, s2",
            "vadd.f32 s7, s7, s3",
            "vadd.f32 s8, s8, s4",
            "vstmia {d}!, {{s5-s8}}",
            "subs {t}, {t}, #1",
            "bne 3b",
            "4:",
            "ands {t}, {e}, #3",
            "beq 6f",
            "5:",
            "vldmia {s}!, {{s1}}",
            "vldr s5, [{d}]",
            "vmul.f32 s1, s1, s0",
            "vadd.f32 s5, s5, s1",
            "vstmia {d}!, {{s5}}",
            "subs {t}, {t}, #1",
            "bne 5b",
            "6:",
            "add {d}, {d}, {da}",
            "add {s}, {s}, {sa}",
            "subs {m}, {m}, #1",
            "bne 2b",
            "vmov {t}, s9",
            "vmsr fpscr, {t}",
            "vpop {{s0-s9}}",
            d = inout(reg) dst => _,
            s = inout(reg) src => _,
            k = inout(reg) coef.as_ptr() => _,
            m = inout(reg) coef.len() => _,
            e = in(reg) e,
            da = in(reg) dst_adjust,
            sa = in(reg) src_adjust,
            t = out(reg) _,
        );
    }
}

/// `y[i] = y[i] + a · x[i]` over `min(y.len(), x.len())` values with flush-to-zero arithmetic:
/// [`crate::math::ftz::axpy`], bit for bit, as the Helium `axpy_f32` computes it.
#[inline]
pub fn axpy_f32(y: &mut [f32], a: f32, x: &[f32]) {
    let n = y.len().min(x.len());
    #[cfg(all(target_arch = "arm", vitae_dsp, target_feature = "fpregs"))]
    if n > 0 {
        // SAFETY: one row of n ≥ 1 floats: `x[..n]` read, `y[..n]` written (a unique borrow,
        // so it overlaps nothing read).
        unsafe { rows_ftz(y.as_mut_ptr(), 0, x.as_ptr(), 0, &[a], n) };
    }
    #[cfg(not(all(target_arch = "arm", vitae_dsp, target_feature = "fpregs")))]
    crate::math::ftz::axpy(&mut y[..n], a, &x[..n]);
}

/// `mat[i·e + c] += coef[i] · x[c]` for every row `i < min(coef.len(), mat.len() / e)` and column
/// `c < e`, with flush-to-zero arithmetic: one [`axpy_f32`] per row. Nothing happens when `x`
/// holds fewer than `e` values.
#[inline]
pub fn rank1_update_rows(mat: &mut [f32], e: usize, coef: &[f32], x: &[f32]) {
    if e == 0 || x.len() < e {
        return;
    }
    let m = coef.len().min(mat.len() / e);
    #[cfg(all(target_arch = "arm", vitae_dsp, target_feature = "fpregs"))]
    if m > 0 {
        // SAFETY: rows i < m of `mat` (i·e + e ≤ m·e ≤ mat.len()) written, a unique borrow; the
        // same e floats of `x` (e ≤ x.len()) read for every row; `coef[..m]` read.
        unsafe { rows_ftz(mat.as_mut_ptr(), e, x.as_ptr(), 0, &coef[..m], e) };
    }
    #[cfg(not(all(target_arch = "arm", vitae_dsp, target_feature = "fpregs")))]
    for (row, &a) in mat.chunks_exact_mut(e).zip(coef).take(m) {
        crate::math::ftz::axpy(row, a, &x[..e]);
    }
}

/// `y[c] = Σ_{i<m} coef[i] · mat[i·e + c]` for `c < e`, summed in row order from +0.0 with
/// flush-to-zero arithmetic: zeroing `y` and one [`axpy_f32`] per row.
/// `m = min(coef.len(), mat.len() / e)`; nothing happens when `y` holds fewer than `e` values.
#[inline]
pub fn weighted_row_sum(y: &mut [f32], e: usize, coef: &[f32], mat: &[f32]) {
    if e == 0 || y.len() < e {
        return;
    }
    let m = coef.len().min(mat.len() / e);
    let y = &mut y[..e];
    y.fill(0.0);
    #[cfg(all(target_arch = "arm", vitae_dsp, target_feature = "fpregs"))]
    if m > 0 {
        // SAFETY: rows i < m of `mat` read (i·e + e ≤ mat.len()); `y[..e]` written for every
        // row, a unique borrow that overlaps nothing read; `coef[..m]` read.
        unsafe { rows_ftz(y.as_mut_ptr(), 0, mat.as_ptr(), e, &coef[..m], e) };
    }
    #[cfg(not(all(target_arch = "arm", vitae_dsp, target_feature = "fpregs")))]
    for (row, &a) in mat.chunks_exact(e).zip(coef).take(m) {
        crate::math::ftz::axpy(y, a, row);
    }
}

/// Taps of the token widened at a time by [`dot_rows_s16_s8`] (16 words of int16 pairs on the
/// stack).
const DOT_CHUNK: usize = 32;

/// `out[i] = Σ_c w[i·e + c] · z[c]` for the rows `i < min(out.len(), w.len() / e)` of the int16
/// feature matrix `w` (`e` columns) against the int8 token `z`: exact integer dot products (at
/// most `performer::MAX_EMB` taps keep them inside i32), the same values as the Helium and
/// scalar paths in any summation order. Nothing happens when `z` holds fewer than `e` values.
///
/// Two taps per SMLAD: the token is widened once per chunk of 32 taps into int16 pairs, and each
/// row's weights are read two at a time as one (possibly unaligned) word, which the single-word
/// loads of the M4/M7 allow; the re-pairing of weights that a byte-wise token needs (shifts and
/// ORs per four taps) is gone.
#[inline]
pub fn dot_rows_s16_s8(w: &[i16], e: usize, z: &[i8], out: &mut [i32]) {
    if e == 0 || z.len() < e {
        return;
    }
    let m = out.len().min(w.len() / e);
    let out = &mut out[..m];
    for (chunk, zc) in z[..e].chunks(DOT_CHUNK).enumerate() {
        // Built in place (a zeroed array first would cost a memclr call per chunk).
        let pairs: [u32; DOT_CHUNK / 2] =
            core::array::from_fn(|j| match zc.get(2 * j..2 * j + 2) {
                Some(&[a, b]) => u32::from(a as i16 as u16) | (u32::from(b as i16 as u16) << 16),
                _ => 0,
            });
        let start = chunk * DOT_CHUNK;
        for (o, row) in out.iter_mut().zip(w.chunks_exact(e)) {
            let wc = &row[start..start + zc.len()];
            let bytes: &[u8] = bytemuck::cast_slice(wc);
            let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let mut acc = if chunk == 0 { 0 } else { *o };
            // Eight taps per step (four loads of weights, the pairs by two LDRDs), then pairs.
            let used = &pairs[..zc.len() / 2];
            let mut w16 = bytes.chunks_exact(16);
            let mut p4 = used.chunks_exact(4);
            for (wb, p) in (&mut w16).zip(&mut p4) {
                acc = super::smlad(word(&wb[0..]), p[0], acc);
                acc = super::smlad(word(&wb[4..]), p[1], acc);
                acc = super::smlad(word(&wb[8..]), p[2], acc);
                acc = super::smlad(word(&wb[12..]), p[3], acc);
            }
            for (wb, &p) in w16.remainder().chunks_exact(4).zip(p4.remainder()) {
                acc = super::smlad(word(wb), p, acc);
            }
            if zc.len() % 2 == 1 {
                acc += i32::from(wc[zc.len() - 1]) * i32::from(zc[zc.len() - 1]);
            }
            *o = acc;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::math::ftz;

    /// The paired dots against a plain sum: widths across the 32-tap chunks (odd ones too), the
    /// extremes (−32768 × −128), and an output word past the rows left alone.
    #[test]
    fn paired_feature_dots_are_exact() {
        let mut s = 0x9e37_79b9u32;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s
        };
        for e in [1usize, 2, 3, 24, 31, 32, 33, 64, 65, 511] {
            for m in [1usize, 7] {
                let w: Vec<i16> = (0..m * e)
                    .map(|_| match next() % 6 {
                        0 => i16::MIN,
                        1 => i16::MAX,
                        _ => next() as i16,
                    })
                    .collect();
                let z: Vec<i8> = (0..e)
                    .map(|_| {
                        if next() % 5 == 0 {
                            i8::MIN
                        } else {
                            next() as i8
                        }
                    })
                    .collect();
                let mut got = vec![0x5a5a_5a5a; m + 1];
                super::dot_rows_s16_s8(&w, e, &z, &mut got[..m]);
                for i in 0..m {
                    let want: i32 = (0..e)
                        .map(|c| i32::from(w[i * e + c]) * i32::from(z[c]))
                        .sum();
                    assert_eq!(got[i], want, "e {e} m {m} row {i}");
                }
                assert_eq!(got[m], 0x5a5a_5a5a);
            }
        }
    }

    /// Zeros, subnormals, values just above 2^−126, tiny normals whose products fall below it,
    /// the factor 1 − 2^−23, ordinary values, ∞ and NaN, either sign.
    fn value(s: &mut u32) -> f32 {
        *s ^= *s << 13;
        *s ^= *s >> 17;
        *s ^= *s << 5;
        let (r, mant) = (*s, s.rotate_left(7) & 0x007f_ffff);
        let bits = match r % 12 {
            0 => 0,
            1 | 2 => mant | 1,
            3 => 0x0080_0000 + (mant & 0xff),
            4 => 0x3f7f_fffe,
            5 | 6 => ((1 + (r >> 8) % 40) << 23) | mant,
            7 => ((50 + (r >> 8) % 40) << 23) | mant,
            8 => 0x7f80_0000,
            9 => 0x7fc0_1234,
            _ => ((110 + (r >> 8) % 30) << 23) | mant,
        };
        f32::from_bits(bits | (r & 0x8000_0000))
    }

    /// The plain-Rust side of these functions (the assembly is compared under QEMU) against
    /// `math::ftz::axpy` and the Helium twins, on values full of subnormals and tiny products.
    #[test]
    fn row_updates_are_ftz_axpy_per_row() {
        let mut rng = 0xd5f0_0001u32;
        for e in [1usize, 4, 5, 12] {
            for m in [1usize, 3] {
                let mut mat = vec![0f32; m * e];
                let (mut coef, mut x) = (vec![0f32; m], vec![0f32; e]);
                for v in mat.iter_mut().chain(&mut coef).chain(&mut x) {
                    *v = value(&mut rng);
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                let mut want = mat.clone();
                for (row, &c) in want.chunks_exact_mut(e).zip(&coef) {
                    ftz::axpy(row, c, &x);
                }
                let mut got = mat.clone();
                super::rank1_update_rows(&mut got, e, &coef, &x);
                assert_eq!(bits(&got), bits(&want));
                let mut mve = mat.clone();
                crate::arch::mve::rank1_update_rows(&mut mve, e, &coef, &x);
                assert_eq!(bits(&mve), bits(&want));
                let mut want = vec![0f32; e];
                for (row, &c) in mat.chunks_exact(e).zip(&coef) {
                    ftz::axpy(&mut want, c, row);
                }
                let mut got = vec![9f32; e];
                super::weighted_row_sum(&mut got, e, &coef, &mat);
                assert_eq!(bits(&got), bits(&want));
                let mut got = x.clone();
                super::axpy_f32(&mut got, coef[0], &mat[..e]);
                let mut want = x.clone();
                ftz::axpy(&mut want, coef[0], &mat[..e]);
                assert_eq!(bits(&got), bits(&want));
            }
        }
    }
}
