//! Scalar FPU instructions the compiler does not emit by itself in `no_std` code.
#![allow(unsafe_code)]

/// Square root by the FPU's VSQRT, correctly rounded as IEEE requires, hence equal to
/// `libm::sqrtf`, which is a software routine on these targets (about 46 instructions).
#[inline(always)]
pub(crate) fn sqrt_f32(x: f32) -> f32 {
    let bits: u32;
    // SAFETY: register-only FPU instructions: no memory access, no stack, no control flow. s0 is
    // part of q0, declared clobbered (the single-precision register class itself needs the
    // `vfp2` feature, which not every Helium build configuration enables).
    unsafe {
        core::arch::asm!(
            "vmov s0, {x}",
            "vsqrt.f32 s0, s0",
            "vmov {y}, s0",
            x = in(reg) x.to_bits(),
            y = lateout(reg) bits,
            out("q0") _,
            options(pure, nomem, nostack),
        );
    }
    f32::from_bits(bits)
}
