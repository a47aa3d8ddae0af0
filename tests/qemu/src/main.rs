//! On-target tests: the optimized kernels of this build (DSP on M4/M7, Helium on M55) checked
//! against known values and against the scalar reference, on the emulated core.
#![no_std]
#![no_main]

use vitae_board::testing::TestResult;
use vitae_board::{check, check_eq, tests};
use vitae_edge::kernels::{self, dot};

#[cortex_m_rt::entry]
fn main() -> ! {
    vitae_board::init();
    defmt::println!(
        "on-target tests on {=str} ({=str}), kernels: {}",
        vitae_board::BOARD,
        vitae_board::CORE,
        defmt::Debug2Format(&kernels::selected_impl())
    );
    let failed = vitae_board::testing::run_all(ALL);
    vitae_board::exit(failed == 0)
}

const ALL: &[vitae_board::testing::Test] = if cfg!(feature = "demo-failure") {
    tests![deliberately_failing, dot_s8_known_value]
} else {
    tests![
        dot_s8_known_value,
        dot_s8_matches_reference_all_lengths,
        selected_impl_matches_core
    ]
};

fn dot_s8_known_value() -> TestResult {
    let a = [1i8, -2, 3, -128, 127, 0, 5];
    let b = [4i8, 5, -6, -128, 127, 9, -1];
    check_eq!(dot::dot_s8(&a, &b), 4 - 10 - 18 + 16384 + 16129 - 5);
    Ok(())
}

fn dot_s8_matches_reference_all_lengths() -> TestResult {
    let mut a = [0i8; 67];
    let mut b = [0i8; 67];
    let mut s = 0x1234_5678u32;
    for (x, y) in a.iter_mut().zip(b.iter_mut()) {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        *x = s as i8;
        *y = (s >> 8) as i8;
    }
    a[0] = -128;
    b[0] = -128;
    for n in 0..=a.len() {
        check_eq!(
            dot::dot_s8(&a[..n], &b[..n]),
            dot::dot_s8_reference(&a[..n], &b[..n])
        );
    }
    Ok(())
}

fn selected_impl_matches_core() -> TestResult {
    let expected = if vitae_board::CORE == "Cortex-M55" {
        kernels::Impl::Mve
    } else {
        kernels::Impl::Dsp
    };
    check!(kernels::selected_impl() == expected);
    Ok(())
}

/// Only in builds with `--features demo-failure` (`cargo xtask test --demo-failure`).
fn deliberately_failing() -> TestResult {
    check_eq!(dot::dot_s8(&[1, 2], &[3, 4]), 12);
    Ok(())
}
