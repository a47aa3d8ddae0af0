//! Helium pieces of the attention kernel: the key tile of values transposed and widened for the
//! probability × value panels, and the softmax probabilities of one query row with the vectorized
//! exponential.

#[cfg(all(target_arch = "arm", vitae_mve))]
use core::arch::asm;

/// Transposes and widens a tile of values: `vt[d·vt_stride + j] = v[j·stride + d]` for `j < rows`,
/// `d < dims`. Returns false (nothing written) when an index would leave a slice or `7·stride`
/// does not fit the 16-bit gather offsets.
///
/// One VLDRB.S16 gather (eight rows of one column) and one VSTRH per eight values.
#[inline]
pub fn transpose_widen(
    v: &[i8],
    stride: usize,
    rows: usize,
    dims: usize,
    vt: &mut [i16],
    vt_stride: usize,
) -> bool {
    if rows == 0 || dims == 0 {
        return true;
    }
    let fits = |r: usize, st: usize, n: usize, have: usize| {
        r.checked_sub(1)
            .and_then(|r| r.checked_mul(st))
            .and_then(|e| e.checked_add(n))
            .is_some_and(|e| e <= have)
    };
    if !fits(rows, stride, dims, v.len())
        || !fits(dims, vt_stride, rows, vt.len())
        || stride
            .checked_mul(7)
            .is_none_or(|m| m > usize::from(u16::MAX))
    {
        return false;
    }
    #[cfg(all(target_arch = "arm", vitae_mve))]
    {
        let offsets: [u16; 8] = core::array::from_fn(|i| (i * stride) as u16);
        // SAFETY: column d gathers v[j·stride + d] for j < rows (tail-predicated, eight rows per
        // step; inactive lanes are not accessed), inside `v` by the first check; it writes
        // vt[d·vt_stride..][..rows], inside `vt` by the second. `vt` is a unique borrow, its
        // halfword stores 2-aligned. The gather needs its base in r0–r7. Clobbers q0, q1, LR
        // and the declared registers.
        unsafe {
            asm!(
                "vldrh.u16 q1, [r0]",
                "1:",
                "mov r0, r4",
                "mov r1, r5",
                "mov lr, r8",
                "dlstp.16 lr, lr",
                "2:",
                "vldrb.s16 q0, [r1, q1]",
                "vstrh.16 q0, [r0], #16",
                "add r1, r2",
                "letp lr, 2b",
                "add r4, r9",
                "adds r5, #1",
                "subs r3, #1",
                "bne 1b",
                inout("r0") offsets.as_ptr() => _,
                out("r1") _,
                in("r2") 8 * stride,
                inout("r3") dims => _,
                inout("r4") vt.as_mut_ptr() => _,
                inout("r5") v.as_ptr() => _,
                in("r8") rows,
                in("r9") 2 * vt_stride,
                out("lr") _,
                out("q0") _,
                out("q1") _,
                options(nostack),
            );
        }
    }
    #[cfg(not(all(target_arch = "arm", vitae_mve)))]
    for d in 0..dims {
        for j in 0..rows {
            vt[d * vt_stride + j] = i16::from(v[j * stride + d]);
        }
    }
    true
}

/// Attention's probabilities for one query and one key tile, exactly as the reference computes
/// them: `p[j] = round_half_up(exp(s[j]·scale − m) · 32767)` with [`crate::math::exp`]; returns
/// `Σ p[j]`. `m` must be at least every `s[j]·scale` (the running maximum), so every exponent is
/// at most 0.
///
/// Four lanes at a time with MVE floating point, following `math::exp` step by step: the same
/// IEEE operations in the same order (correctly rounded, never fused), the clamp at −87.33 and
/// the select to 0 below it (the comparison kept in VPR.P0 from the clamp to the select),
/// `n = trunc(x·log2e + 128.5) − 128`, `half = n >> 1`, and `VCVTM` (floor) for `round_half_up`,
/// which is `floor(y + 0.5)`. Helium arithmetic flushes subnormals to zero, so this computes only
/// where none can occur: for `2^−88 ≤ scale ≤ 2^96` and `m` zero or at least 2^−88 in magnitude
/// ([`crate::kernels::attention::softmax_inputs_in_range`], which every validated attention
/// meets) every nonzero exponent is at least 2^−113 in magnitude (both terms are 0 or at least
/// 2^−88) and every intermediate (down to `r/5040` in the polynomial) stays normal. For other inputs every `p[j]` is 0 and so is
/// the sum, on every target (a scalar fallback would not do: LLVM vectorizes it on Helium too).
#[inline]
pub fn softmax_row(s: &[i32], scale: f32, m: f32, p: &mut [i16]) -> i32 {
    let n = s.len().min(p.len());
    if !crate::kernels::attention::softmax_inputs_in_range(scale, m) {
        p[..n].fill(0);
        return 0;
    }
    #[cfg(all(target_arch = "arm", vitae_mve))]
    if n > 0 {
        // Constants in the order the assembly loads them into r3–r12, then the four Horner
        // coefficients that go to q4–q7 and the element count.
        let c: [f32; 10] = [
            scale,
            m,
            core::f32::consts::LOG2_E,
            32767.0,
            -87.33,
            128.5,
            0.693_145_75,
            1.428_606_8e-6,
            1.0 / 5040.0,
            0.0, // replaced by the integer 128 below
        ];
        let horner: [f32; 4] = [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0];
        let mut frame = [0u32; 15];
        for (f, v) in frame.iter_mut().zip(c.iter().chain(&horner)) {
            *f = v.to_bits();
        }
        frame[9] = 128;
        frame[14] = n as u32;
        let psum: i32;
        // SAFETY: reads `n` words of `s` and writes `n` halfwords of `p` (tail predication on n
        // lanes; inactive lanes are not accessed), both in bounds; reads `frame`. `p` is a
        // unique borrow, 2-aligned. The narrowing store needs its base in r0–r7. r6, r7 and
        // d8–d15 (q4–q7, callee-saved) are saved on the stack and restored; the rest written is
        // declared.
        unsafe {
            asm!(
                "vpush {{d8-d15}}",
                "push {{r6, r7}}",
                "ldr r3, [lr, #40]",
                "vdup.32 q4, r3",
                "ldr r3, [lr, #44]",
                "vdup.32 q5, r3",
                "ldr r3, [lr, #48]",
                "vdup.32 q6, r3",
                "ldr r3, [lr, #52]",
                "vdup.32 q7, r3",
                "ldm lr, {{r3, r4, r5, r6, r7, r8, r9, r10, r11, r12}}",
                "ldr lr, [lr, #56]",
                "dlstp.32 lr, lr",
                "1:",
                "vldrw.u32 q0, [r1], #16",
                "vcvt.f32.s32 q0, q0",
                "vmul.f32 q0, q0, r3",
                "vsub.f32 q0, q0, r4",
                // x < −87.33: clamp now, select 0 at the end (P0 holds the comparison).
                "vpt.f32 lt, q0, r7",
                "vdupt.32 q0, r7",
                "vmul.f32 q1, q0, r5",
                "vadd.f32 q1, q1, r8",
                "vcvt.s32.f32 q1, q1",
                "vsub.i32 q1, q1, r12",
                "vcvt.f32.s32 q2, q1",
                "vmul.f32 q3, q2, r9",
                "vsub.f32 q3, q0, q3",
                "vmul.f32 q2, q2, r10",
                "vsub.f32 q3, q3, q2",
                "vmul.f32 q2, q3, r11",
                "vadd.f32 q2, q2, q4",
                "vmul.f32 q2, q2, q3",
                "vadd.f32 q2, q2, q5",
                "vmul.f32 q2, q2, q3",
                "vadd.f32 q2, q2, q6",
                "vmul.f32 q2, q2, q3",
                "vadd.f32 q2, q2, q7",
                "vmul.f32 q2, q2, q3",
                "vmov.f32 q0, #0.5",
                "vadd.f32 q2, q2, q0",
                "vmul.f32 q2, q2, q3",
                "vmov.f32 q0, #1.0",
                "vadd.f32 q2, q2, q0",
                "vmul.f32 q2, q2, q3",
                "vadd.f32 q2, q2, q0",
                "vshr.s32 q3, q1, #1",
                "vsub.i32 q1, q1, q3",
                "vmov.i32 q0, #127",
                "vadd.i32 q3, q3, q0",
                "vshl.i32 q3, q3, #23",
                "vadd.i32 q1, q1, q0",
                "vshl.i32 q1, q1, #23",
                "vmul.f32 q2, q2, q3",
                "vmul.f32 q2, q2, q1",
                "vpst",
                "veort q2, q2, q2",
                "vmul.f32 q2, q2, r6",
                "vmov.f32 q0, #0.5",
                "vadd.f32 q2, q2, q0",
                "vcvtm.s32.f32 q2, q2",
                "vaddva.u32 r0, q2",
                "vstrh.32 q2, [r2], #8",
                "letp lr, 1b",
                "pop {{r6, r7}}",
                "vpop {{d8-d15}}",
                inout("r0") 0i32 => psum,
                inout("r1") s.as_ptr() => _,
                inout("r2") p.as_mut_ptr() => _,
                inout("lr") frame.as_ptr() => _,
                out("r3") _,
                out("r4") _,
                out("r5") _,
                out("r8") _,
                out("r9") _,
                out("r10") _,
                out("r11") _,
                out("r12") _,
                out("q0") _,
                out("q1") _,
                out("q2") _,
                out("q3") _,
            );
        }
        return psum;
    }
    let mut psum = 0i32;
    for (pj, &sj) in p[..n].iter_mut().zip(s) {
        let v = crate::quant::round_half_up(crate::math::exp(sj as f32 * scale - m) * 32767.0);
        *pj = v as i16;
        psum += v;
    }
    psum
}

#[cfg(test)]
mod tests {
    /// The exponential exactly as the `softmax_row` assembly computes it, lane by lane (the
    /// same operations in the same order; `x ≤ 0`).
    fn exp_as_the_assembly_does(x: f32) -> f32 {
        const LO: f32 = -87.33;
        let xc = if x < LO { LO } else { x };
        let n = (xc * core::f32::consts::LOG2_E + 128.5) as i32 - 128;
        let nf = n as f32;
        let r = (xc - nf * 0.693_145_75) - nf * 1.428_606_8e-6;
        let mut p = r * (1.0 / 5040.0);
        for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0] {
            p = (p + c) * r;
        }
        p += 1.0;
        let half = n >> 1;
        let bits = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
        let y = p * bits(half) * bits(n - half);
        if x < LO { 0.0 } else { y }
    }

    /// Pins `math::exp` to the sequence the Helium assembly reproduces: if the reference
    /// exponential changes, this fails and `softmax_row` must change with it.
    #[test]
    fn the_assembly_exponential_is_math_exp() {
        let mut x = 0.0f32;
        let mut checked = 0;
        while x > -90.0 {
            for d in [
                x,
                f32::from_bits(x.to_bits() + 1),
                f32::from_bits(x.to_bits() + 7),
            ] {
                let (a, b) = (exp_as_the_assembly_does(d), crate::math::exp(d));
                assert_eq!(a.to_bits(), b.to_bits(), "x = {d}");
                checked += 1;
            }
            x -= 0.000_37;
        }
        // Both sides of every range-reduction boundary x·log2e = j − ½.
        for j in -126..=0 {
            let b = (j as f32 - 0.5) / core::f32::consts::LOG2_E;
            for k in 0..64u32 {
                for d in [
                    f32::from_bits(b.to_bits() + k),
                    f32::from_bits(b.to_bits() - k),
                ] {
                    let (a, e) = (exp_as_the_assembly_does(d), crate::math::exp(d));
                    assert_eq!(a.to_bits(), e.to_bits(), "x = {d}");
                }
            }
        }
        assert!(checked > 500_000);
    }
}
