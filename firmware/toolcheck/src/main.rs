//! The smallest Cortex-M program that proves a toolchain works end to end: compiled with `core`
//! for the target, linked by the target's linker, booted by QEMU. It prints one line over
//! semihosting, runs a measured region between the instruction-count markers (so the counting
//! plugin is exercised too) and exits with status 0. `cargo xtask setup` builds it once per target
//! family and boots it on each QEMU board.
#![no_std]
#![no_main]

use core::arch::asm;
use core::panic::PanicInfo;

/// Semihosting operation numbers (Arm semihosting specification).
const SYS_WRITE0: u32 = 0x04;
const SYS_EXIT: u32 = 0x18;
/// `ADP_Stopped_ApplicationExit`: QEMU exits with status 0; any other reason exits with 1.
const APPLICATION_EXIT: u32 = 0x20026;
const RUN_TIME_ERROR: u32 = 0x20023;

/// The reset vector, placed after the initial stack pointer by `toolcheck.x`.
#[unsafe(link_section = ".vector_table.reset")]
#[used]
static RESET_VECTOR: extern "C" fn() -> ! = toolcheck_reset;

#[unsafe(no_mangle)]
extern "C" fn toolcheck_reset() -> ! {
    semihost(SYS_WRITE0, c"vitae-toolcheck: running\n".as_ptr() as u32);
    let sum = measured_sum(100);
    let reason = if sum == 4950 {
        semihost(SYS_WRITE0, c"vitae-toolcheck: ok\n".as_ptr() as u32);
        APPLICATION_EXIT
    } else {
        RUN_TIME_ERROR
    };
    semihost(SYS_EXIT, reason);
    loop {}
}

/// Sums 0..n between the start and stop markers of the instruction-count plugin.
#[inline(never)]
fn measured_sum(n: u32) -> u32 {
    // SAFETY: the markers are reserved hint encodings, NOPs on every core; they touch no memory,
    // registers or flags.
    unsafe {
        asm!(
            ".inst.w 0xf3af807a",
            options(nomem, nostack, preserves_flags)
        )
    };
    let mut sum = 0u32;
    for i in 0..core::hint::black_box(n) {
        sum = sum.wrapping_add(i);
    }
    // SAFETY: as above.
    unsafe {
        asm!(
            ".inst.w 0xf3af807b",
            options(nomem, nostack, preserves_flags)
        )
    };
    sum
}

/// One semihosting call (`bkpt 0xab` with the operation in r0 and its argument in r1).
fn semihost(op: u32, arg: u32) {
    // SAFETY: under QEMU with semihosting enabled the debugger side handles the breakpoint; the
    // operations used here only read the NUL-terminated string `arg` points to (SYS_WRITE0) or
    // end the program (SYS_EXIT). r0 is clobbered with the result.
    unsafe {
        asm!("bkpt 0xab", inout("r0") op => _, in("r1") arg, options(nostack, preserves_flags));
    }
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    semihost(SYS_EXIT, RUN_TIME_ERROR);
    loop {}
}
