//! Armv7E-M DSP extension instructions as safe functions (register-only `asm!`, no memory
//! access). stable Rust has no intrinsics for SXTB16, and SMLAD's is unstable.
#![allow(unsafe_code)]

use core::arch::asm;

/// `SMLAD`: `acc + lo16(a)·lo16(b) + hi16(a)·hi16(b)` with signed 16-bit halves.
#[inline(always)]
pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    let out: i32;
    // SAFETY: register-only instruction; reads no memory, writes only `out` (the Q flag it may
    // set is not read anywhere in this crate).
    unsafe {
        asm!("smlad {o}, {a}, {b}, {c}", o = lateout(reg) out, a = in(reg) a, b = in(reg) b,
             c = in(reg) acc, options(pure, nomem, nostack));
    }
    out
}

/// `SXTB16`: sign-extend bytes 0 and 2 of `x` into the two 16-bit halves.
#[inline(always)]
pub fn sxtb16(x: u32) -> u32 {
    let out: u32;
    // SAFETY: register-only instruction, no memory access, no flags.
    unsafe {
        asm!("sxtb16 {o}, {x}", o = lateout(reg) out, x = in(reg) x,
             options(pure, nomem, nostack, preserves_flags));
    }
    out
}

/// `SXTB16 …, ROR #8`: sign-extend bytes 1 and 3 of `x` into the two 16-bit halves.
#[inline(always)]
pub fn sxtb16_ror8(x: u32) -> u32 {
    let out: u32;
    // SAFETY: register-only instruction, no memory access, no flags.
    unsafe {
        asm!("sxtb16 {o}, {x}, ror #8", o = lateout(reg) out, x = in(reg) x,
             options(pure, nomem, nostack, preserves_flags));
    }
    out
}
