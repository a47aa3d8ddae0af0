//! Picks the kernel implementations for the target being built, as `--cfg` flags:
//! `vitae_dsp` for Armv7E-M / Armv8-M Mainline cores with the DSP extension (SMLAD, SXTB16), and
//! `vitae_mve` for Armv8.1-M cores with Helium (integer MVE), `vitae_vfp` for M-profile cores
//! built for the hard-float ABI (an FPU with the half-precision conversions: FPv4-SP and later).
//! Host builds get none of them; x86-64
//! host builds with the `std` feature get `vitae_x86`: kernels that choose AVX2 at run time (with
//! the scalar reference as the fallback, see `kernels::host_simd`).

use std::env;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(vitae_dsp)");
    println!("cargo::rustc-check-cfg=cfg(vitae_mve)");
    println!("cargo::rustc-check-cfg=cfg(vitae_x86)");
    println!("cargo::rustc-check-cfg=cfg(vitae_vfp)");
    println!("cargo::rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    println!("cargo::rerun-if-env-changed=VITAE_FORCE_REFERENCE");

    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if arch == "x86_64"
        && env::var_os("CARGO_FEATURE_STD").is_some()
        && env::var_os("VITAE_FORCE_REFERENCE").is_none()
    {
        println!("cargo::rustc-cfg=vitae_x86");
    }
    if arch != "arm" || env::var_os("VITAE_FORCE_REFERENCE").is_some() {
        return;
    }
    let features = env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let features: Vec<&str> = features.split(',').collect();
    let rustflags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();

    let mclass = features.contains(&"mclass");
    // Every M-profile FPU (FPv4-SP on the M4, FPv5 on the M7, the M55's) converts halves; the
    // hard-float ABI is how a target says it has one.
    if mclass && env::var("CARGO_CFG_TARGET_ABI").is_ok_and(|abi| abi == "eabihf") {
        println!("cargo::rustc-cfg=vitae_vfp");
    }
    if mclass && features.contains(&"dsp") {
        println!("cargo::rustc-cfg=vitae_dsp");
    }
    // rustc reports no `mve` target feature; on M-profile cores, LLVM's MVE implies what rustc
    // calls "neon" (M-profile has no NEON), so either that or an explicit request selects Helium.
    let mve_requested = ["cortex-m55", "cortex-m85", "+mve"]
        .iter()
        .any(|s| rustflags.contains(s));
    if mclass && (features.contains(&"neon") || mve_requested) {
        println!("cargo::rustc-cfg=vitae_mve");
    }
}
