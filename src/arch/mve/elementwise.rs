//! Helium element-wise kernels: the RGB image quantized four pixels at a time into the
//! interleaved int8 layout.

#[cfg(all(target_arch = "arm", vitae_mve))]
use core::arch::asm;

/// Quantizes three planes into interleaved int8 triples: `out[3i + c] = quantize_f32(plane_c[i],
/// inv_scale, zero_point)` for `i < n`, `n` the shortest of the planes and `out.len() / 3`.
///
/// Four pixels per iteration: per channel a load, the multiply and add of `quantize_f32` (each
/// rounded, as there), the truncating conversion (saturating, NaN to 0, as Rust's `as i32`), a
/// saturating subtract of 128 and a saturating narrow to int8 (the clamp to 0..=255 less 128),
/// and a byte scatter with offsets 0, 3, 6, 9: about 2 instructions per value against 6. Helium
/// flushes a subnormal product to zero, which cannot change the result: the constant added is
/// at least 0.5 in magnitude.
#[inline]
pub fn quantize_rgb(planes: [&[f32]; 3], inv_scale: f32, zero_point: i32, out: &mut [i8]) {
    let n = planes[0]
        .len()
        .min(planes[1].len())
        .min(planes[2].len())
        .min(out.len() / 3);
    #[cfg(all(target_arch = "arm", vitae_mve))]
    {
        if n == 0 {
            return;
        }
        // `quantize_f32`'s constant: the zero point plus the rounding and range offset.
        let c = zero_point as f32 + 128.5;
        let offsets: [u32; 4] = [0, 3, 6, 9];
        // SAFETY: tail-predicated on n 32-bit lanes: reads the first n floats of each plane and
        // writes the bytes out[3i + c] (i < n, c < 3), inside `out` (3n ≤ out.len()), a unique
        // borrow; disabled lanes neither load nor store. Reads the four offsets. VLDRW needs the
        // 4-byte alignment of `f32`/`u32` slices; the scatter stores bytes. Clobbers q0–q2, LR
        // and the inputs.
        unsafe {
            asm!(
                "vldrw.u32 q2, [r8]",
                "dlstp.32 lr, lr",
                "1:",
                "vldrw.u32 q0, [r10], #16",
                "vldrw.u32 q1, [r11], #16",
                "vmul.f32 q0, q0, r4",
                "vmul.f32 q1, q1, r4",
                "vadd.f32 q0, q0, r5",
                "vadd.f32 q1, q1, r5",
                "vcvt.s32.f32 q0, q0",
                "vcvt.s32.f32 q1, q1",
                "vqsub.s32 q0, q0, r9",
                "vqsub.s32 q1, q1, r9",
                "vqshl.s32 q0, q0, #24",
                "vqshl.s32 q1, q1, #24",
                "vshr.s32 q0, q0, #24",
                "vshr.s32 q1, q1, #24",
                "vstrb.32 q0, [r0, q2]",
                "vldrw.u32 q0, [r12], #16",
                "vmul.f32 q0, q0, r4",
                "vadd.f32 q0, q0, r5",
                "vcvt.s32.f32 q0, q0",
                "vqsub.s32 q0, q0, r9",
                "vqshl.s32 q0, q0, #24",
                "vshr.s32 q0, q0, #24",
                "vstrb.32 q1, [r2, q2]",
                "vstrb.32 q0, [r3, q2]",
                "adds r0, #12",
                "adds r2, #12",
                "adds r3, #12",
                "letp lr, 1b",
                inout("r0") out.as_mut_ptr() => _,
                inout("r2") out.as_mut_ptr().wrapping_add(1) => _,
                inout("r3") out.as_mut_ptr().wrapping_add(2) => _,
                inout("r10") planes[0].as_ptr() => _,
                inout("r11") planes[1].as_ptr() => _,
                inout("r12") planes[2].as_ptr() => _,
                in("r4") inv_scale.to_bits(),
                in("r5") c.to_bits(),
                in("r8") offsets.as_ptr(),
                in("r9") 128i32,
                inout("lr") n => _,
                out("q0") _,
                out("q1") _,
                out("q2") _,
                options(nostack),
            );
        }
    }
    #[cfg(not(all(target_arch = "arm", vitae_mve)))]
    for (i, o) in out[..3 * n].chunks_exact_mut(3).enumerate() {
        for (ch, v) in o.iter_mut().enumerate() {
            *v = crate::quant::quantize_f32(planes[ch][i], inv_scale, zero_point);
        }
    }
}
