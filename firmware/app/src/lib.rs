//! ViTAE-Edge firmware application. Until the runtime lands, it boots, runs one kernel as a
//! measured region and reports what it ran.
//!
//! The entry point lives here; each `boards/<board>` package only links this library for its
//! board (memory layout, log transport, measurement).
#![no_std]

use vitae_edge::kernels::{self, dot};

#[cortex_m_rt::entry]
fn main() -> ! {
    vitae_board::init();
    defmt::println!(
        "ViTAE-Edge on {=str} ({=str}), kernels: {}",
        vitae_board::BOARD,
        vitae_board::CORE,
        defmt::Debug2Format(&kernels::selected_impl())
    );
    let a: [i8; 256] = core::array::from_fn(|i| (i as i32 * 7 - 128) as i8);
    let b: [i8; 256] = core::array::from_fn(|i| (i as i32 * 13 + 5) as i8);
    let (sum, cycles) = vitae_board::profile::region(|| dot::dot_s8(core::hint::black_box(&a), &b));
    defmt::println!("dot_s8(256) = {=i32} (cycles: {})", sum, cycles);
    defmt::println!(
        "stack used: {=usize} of {=usize} bytes",
        vitae_board::stack::used_bytes(),
        vitae_board::stack::size_bytes()
    );
    vitae_board::exit(sum == dot::dot_s8_reference(&a, &b))
}
