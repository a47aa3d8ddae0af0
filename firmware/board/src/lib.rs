//! Board support shared by the ViTAE-Edge firmware and the on-target tests.
//!
//! `VITAE_BOARD` selects the board of `firmware/boards.rs` (its memory layout, generated into
//! `memory.x` by the build script); the `qemu` or `probe` feature selects the log transport
//! (defmt over semihosting under QEMU, defmt over RTT on real boards through probe-rs) and how
//! work is measured (instruction-count markers under QEMU, the DWT cycle counter on real boards).
//! Panics and HardFaults are logged and end the program with a failure exit code, so a run under
//! QEMU or `probe-rs run` never hangs.
#![no_std]
#![deny(unsafe_code)]

pub mod profile;
pub mod stack;
pub mod testing;

// cortex-m provides the single-core critical-section implementation that defmt's transports use.
use cortex_m as _;
#[cfg(feature = "probe")]
use defmt_rtt as _;
#[cfg(feature = "qemu")]
use defmt_semihosting as _;

#[cfg(not(any(feature = "qemu", feature = "probe")))]
compile_error!("select vitae-board's `qemu` or `probe` feature (the board's kind)");

/// The board this firmware was built for, e.g. `"mps2-an386"`.
pub const BOARD: &str = env!("VITAE_BOARD");

/// The core's name as the board runs it, e.g. `"Cortex-M4"` (from `firmware/boards.rs`).
pub const CORE: &str = env!("VITAE_CORE");

/// Call first thing in `main`: starts the cycle counter on real boards.
pub fn init() {
    profile::init();
}

/// Ends the program: exit code 0 on success, 1 on failure (semihosting `SYS_EXIT`, understood by
/// QEMU and by `probe-rs run`).
pub fn exit(success: bool) -> ! {
    semihosting::process::exit(if success { 0 } else { 1 })
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    defmt::println!("PANIC {}", defmt::Display2Format(info));
    exit(false)
}

#[cortex_m_rt::exception]
#[allow(unsafe_code)]
unsafe fn HardFault(frame: &cortex_m_rt::ExceptionFrame) -> ! {
    defmt::println!(
        "HARDFAULT pc={=u32:#010x} lr={=u32:#010x}",
        frame.pc(),
        frame.lr()
    );
    exit(false)
}
