//! Armv7E-M DSP extension instructions (SMLAD, SXTB16) and the SMLAD matrix micro-kernel, as safe
//! functions.
//!
//! On a DSP core these are inline assembly: stable Rust has no intrinsic for SXTB16, SMLAD's is
//! unstable, and LLVM does not turn an int8 dot product into SMLAD by itself. Everywhere else (the
//! host) the same functions are plain Rust with the same semantics, so the DSP kernels' blocking and
//! data layouts are exercised by the host unit tests against the scalar reference; the assembly
//! itself is checked against the reference under QEMU (`tests/qemu`).
#![allow(unsafe_code)]

#[cfg(all(target_arch = "arm", vitae_dsp))]
use core::arch::asm;

mod gather;
mod gemm;
mod performer;

pub use gather::*;
pub use gemm::*;
#[cfg_attr(test, allow(unused_imports))]
pub use performer::*;

/// `SMLAD`: `acc + lo16(a)·lo16(b) + hi16(a)·hi16(b)` with signed 16-bit halves, wrapping.
#[inline(always)]
pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    #[cfg(all(target_arch = "arm", vitae_dsp))]
    {
        let out: i32;
        // SAFETY: register-only instruction; reads no memory, writes only `out` (the Q flag it may
        // set is not read anywhere in this crate).
        unsafe {
            asm!("smlad {o}, {a}, {b}, {c}", o = lateout(reg) out, a = in(reg) a, b = in(reg) b,
                 c = in(reg) acc, options(pure, nomem, nostack));
        }
        out
    }
    #[cfg(not(all(target_arch = "arm", vitae_dsp)))]
    {
        let lo = i32::from(a as i16) * i32::from(b as i16);
        let hi = i32::from((a >> 16) as i16) * i32::from((b >> 16) as i16);
        acc.wrapping_add(lo).wrapping_add(hi)
    }
}

/// `SXTB16`: sign-extend bytes 0 and 2 of `x` into the two 16-bit halves.
#[inline(always)]
pub fn sxtb16(x: u32) -> u32 {
    #[cfg(all(target_arch = "arm", vitae_dsp))]
    {
        let out: u32;
        // SAFETY: register-only instruction, no memory access, no flags.
        unsafe {
            asm!("sxtb16 {o}, {x}", o = lateout(reg) out, x = in(reg) x,
                 options(pure, nomem, nostack, preserves_flags));
        }
        out
    }
    #[cfg(not(all(target_arch = "arm", vitae_dsp)))]
    {
        let lo = x as u8 as i8 as i16 as u16 as u32;
        let hi = (x >> 16) as u8 as i8 as i16 as u16 as u32;
        lo | hi << 16
    }
}

/// `SXTB16 …, ROR #8`: sign-extend bytes 1 and 3 of `x` into the two 16-bit halves.
#[inline(always)]
pub fn sxtb16_ror8(x: u32) -> u32 {
    #[cfg(all(target_arch = "arm", vitae_dsp))]
    {
        let out: u32;
        // SAFETY: register-only instruction, no memory access, no flags.
        unsafe {
            asm!("sxtb16 {o}, {x}, ror #8", o = lateout(reg) out, x = in(reg) x,
                 options(pure, nomem, nostack, preserves_flags));
        }
        out
    }
    #[cfg(not(all(target_arch = "arm", vitae_dsp)))]
    {
        sxtb16(x.rotate_right(8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulation_matches_the_instruction_definitions() {
        assert_eq!(sxtb16(0x80_7f_01_ff), 0x007f_ffff);
        assert_eq!(sxtb16_ror8(0x80_7f_01_ff), 0xff80_0001);
        // (-1)(-1) + (2)(3)
        assert_eq!(smlad(0x0002_ffff, 0x0003_ffff, 10), 10 + 1 + 6);
        assert_eq!(smlad(0x8000_8000, 0x8000_8000, 0), i32::MIN); // wraps like the instruction
    }
}
