//! `cargo xtask demo`: the end-to-end demo on the QEMU Cortex-M4 board.

use crate::firmware;
use crate::qemu::{self, RunOptions};
use crate::{boards, setup, toolchain};
use anyhow::{Result, bail};

pub fn run() -> Result<()> {
    setup::setup(true)?;
    let board = boards::board("mps2-an386")?;
    let tc = toolchain::detect()?;
    println!(
        "==> building the firmware for {} ({})",
        board.name, board.core
    );
    let elf = crate::demo_firmware(tc, board)?;
    let sizes = firmware::sizes(&elf)?;
    println!(
        "==> running it under QEMU ({} flash bytes, {} static RAM bytes)",
        sizes.flash, sizes.ram
    );
    let opts = RunOptions {
        icount: true,
        echo: true,
        ..RunOptions::default()
    };
    let out = qemu::run(board, &elf, &opts, &mut |_| {})?;
    for r in &out.regions {
        println!(
            "    measured region {}: {} instructions",
            r.index, r.instructions
        );
    }
    if !out.success {
        bail!(
            "the firmware reported failure (exit code {:?})",
            out.exit_code
        );
    }
    if let Some(total) = out.total_instructions {
        println!("    whole run: {total} instructions (boot, logging and exit included)");
    }
    println!("==> done in {:.1} s", out.elapsed.as_secs_f64());
    Ok(())
}
