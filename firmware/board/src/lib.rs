//! Board support shared by the ViTAE-Edge firmware and the on-target tests.
//!
//! One board feature selects the memory layout (`boards/<board>/memory.x`), the log transport
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
compile_error!("select a board feature of vitae-board (e.g. mps2-an386 or nucleo-h743zi)");

/// The board this firmware was built for, e.g. `"mps2-an386"`.
pub const BOARD: &str = env!("VITAE_BOARD");

/// The core's name as the board runs it.
pub const CORE: &str = if cfg!(feature = "mps3-an547") {
    "Cortex-M55"
} else if cfg!(any(feature = "mps2-an500", feature = "nucleo-h743zi")) {
    "Cortex-M7"
} else {
    "Cortex-M4"
};

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
