//! Measuring regions of work.
//!
//! Under QEMU, [`start`] and [`stop`] execute two reserved hint instructions that the project's
//! QEMU plugin (`host-tools/qemu-icount`) counts instructions between; regions may nest, and the
//! host reads the counts from QEMU's log. On real boards the same calls read the DWT cycle
//! counter and the markers are not emitted.

/// Starts the DWT cycle counter on real boards; nothing under QEMU (QEMU does not model it).
pub(crate) fn init() {
    #[cfg(feature = "probe")]
    {
        if let Some(mut p) = cortex_m::Peripherals::take() {
            p.DCB.enable_trace();
            p.DWT.enable_cycle_counter();
            // The peripherals are taken once here and never given back: the app has no other
            // use for DCB/DWT.
        }
    }
}

/// A point in time: a cycle count on real boards, nothing under QEMU.
#[derive(Clone, Copy, Debug)]
pub struct Mark(#[allow(dead_code)] u32);

/// Opens a measured region.
#[inline(always)]
pub fn start() -> Mark {
    #[cfg(feature = "qemu")]
    markers::start();
    Mark(cycles())
}

/// Closes the innermost open region. Returns the elapsed cycles on real boards, `None` under QEMU
/// (where the host reads the instruction count from the plugin's log instead).
#[inline(always)]
pub fn stop(mark: Mark) -> Option<u32> {
    #[cfg(feature = "qemu")]
    {
        markers::stop();
        let _ = mark;
        None
    }
    #[cfg(not(feature = "qemu"))]
    {
        Some(cycles().wrapping_sub(mark.0))
    }
}

/// Runs `f` as one measured region.
#[inline(always)]
pub fn region<R>(f: impl FnOnce() -> R) -> (R, Option<u32>) {
    let mark = start();
    let r = f();
    (r, stop(mark))
}

#[inline(always)]
fn cycles() -> u32 {
    #[cfg(feature = "probe")]
    {
        cortex_m::peripheral::DWT::cycle_count()
    }
    #[cfg(not(feature = "probe"))]
    {
        0
    }
}

#[cfg(feature = "qemu")]
#[allow(unsafe_code)]
mod markers {
    // No `nomem`: the asm statements then also act as compiler barriers, so the measured memory
    // work is not moved across them.
    #[inline(always)]
    pub fn start() {
        // SAFETY: a reserved T32 hint (NOP on every Armv7-M/Armv8-M core); no registers, memory or
        // flags change.
        unsafe { core::arch::asm!(".inst.w 0xf3af807a", options(nostack, preserves_flags)) }
    }
    #[inline(always)]
    pub fn stop() {
        // SAFETY: as for `start`.
        unsafe { core::arch::asm!(".inst.w 0xf3af807b", options(nostack, preserves_flags)) }
    }
}
