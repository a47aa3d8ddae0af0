//! `cargo xtask qemu`: build the firmware with a blob and an input, run it under QEMU, write the
//! logits in the same .npy form as `cargo vitae run --model`.

use crate::app::{self, AppInput, AppRun};
use crate::{boards, setup, toolchain};
use anyhow::{Result, bail};
use std::path::Path;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct QemuArgs {
    /// QEMU board: mps2-an386 (Cortex-M4), mps2-an500 (Cortex-M7), mps3-an547 (Cortex-M55), or
    /// a real part's budget on them (qemu-stm32n6570-dk, qemu-stm32h747i-disco, qemu-nrf52840-dk).
    #[arg(long)]
    pub board: String,
    /// The blob to run (from `cargo vitae quantize`).
    #[arg(long, value_name = "MODEL.vblob")]
    pub model: std::path::PathBuf,
    /// Images: float32 .npy (N, C, H, W) or (C, H, W), or for a blob quantized with `--input u8`
    /// uint8 pixels (N, H, W, C) or (H, W, C); embedded in the firmware.
    #[arg(long, value_name = "X.npy")]
    pub input: std::path::PathBuf,
    /// Where to write the logits: float32 .npy (N, classes), as `cargo vitae run --model` does.
    #[arg(long, value_name = "LOGITS.npy")]
    pub out: std::path::PathBuf,
    /// Give up after this many seconds of emulation.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    /// Stage weights: copy each op's tables that fit into a buffer of this many bytes in the
    /// board's fastest arena region with room, before the op runs (for a blob in slow memory).
    #[arg(long, value_name = "BYTES")]
    pub stage: Option<u64>,
    /// With --stage: double-buffered, the next op's tables copied into one half of the buffer
    /// while an op runs from the other.
    #[arg(long, requires = "stage")]
    pub stage_ahead: bool,
    /// Also print where the instructions went by function (the whole run: start-up, every
    /// image), with estimated cycles on the Cortex-M4.
    #[arg(long)]
    pub profile: bool,
}

/// Refuses an `--out` that is the model or the input (also through a link) or not a regular
/// file, before anything is built: the logits are written over it at the end.
fn check_paths(args: &QemuArgs) -> Result<()> {
    vitae::io::check_outputs(&[&args.out], &[&args.model, &args.input])?;
    Ok(())
}

pub fn run(args: &QemuArgs) -> Result<()> {
    check_paths(args)?;
    setup::setup(true)?;
    let board = boards::board(&args.board)?;
    if !board.is_qemu() {
        bail!(
            "{} is a real board: use `cargo xtask flash --board {}`",
            board.name,
            board.name
        );
    }
    let tc = toolchain::detect()?;
    let stage = args.stage.map(|b| b.to_string());
    let mut env: Vec<(&str, &str)> = stage.iter().map(|b| ("VITAE_STAGE", b.as_str())).collect();
    if args.stage_ahead {
        env.push(("VITAE_STAGE_AHEAD", "1"));
    }
    let elf = app::build_env(
        tc,
        board,
        &args.model,
        &AppInput::Npy(args.input.clone()),
        &env,
    )?;
    println!("==> running on {} ({}) under QEMU", board.name, board.core);
    let timeout = Duration::from_secs(args.timeout);
    let r = app::run_with(board, &elf, timeout, args.profile, &mut |l| {
        if l.starts_with("TOP5") {
            println!("    {l}");
        }
    })?;
    write_logits(&args.out, &r)?;
    report(&r);
    if args.profile {
        let functions = crate::profile::elf_functions(tc, &elf)?;
        let costs = crate::profile::by_function(&functions, &r.blocks);
        let total: u64 = costs.iter().map(|c| c.instructions).sum();
        let timed = costs.iter().any(|c| c.cycles > 0);
        println!(
            "    profile of the whole run by function ({} instructions{}):",
            vitae::text::grouped(total),
            if timed {
                "; est. cycles: the Cortex-M4 estimate, taken-branch refills excluded"
            } else {
                ""
            }
        );
        for c in costs.iter().take(25) {
            let cycles = if timed {
                format!(" {:>13}", vitae::text::grouped(c.cycles))
            } else {
                String::new()
            };
            println!(
                "    {:>13} {:5.1} %{cycles}  {}",
                vitae::text::grouped(c.instructions),
                100.0 * c.instructions as f64 / total.max(1) as f64,
                c.name
            );
        }
    }
    println!(
        "wrote {} ({} x {})",
        args.out.display(),
        r.logits.len(),
        r.logits.first().map_or(0, Vec::len)
    );
    Ok(())
}

/// Writes the logits as float32 (N, classes) .npy, byte for byte what `vitae run` writes.
pub fn write_logits(path: &Path, r: &AppRun) -> Result<()> {
    let classes = r.logits.first().map_or(0, Vec::len);
    let flat: Vec<f32> = r.logits.iter().flatten().copied().collect();
    vitae::npy::write_npy_f32(path, &[r.logits.len(), classes], &flat)?;
    Ok(())
}

/// Prints the per-op profile and memory of a run.
pub fn report(r: &AppRun) {
    println!("    {}", r.model_line);
    let total: u64 = r.ops.iter().map(|o| o.instructions).sum();
    let macs: u64 = r.ops.iter().map(|o| o.macs).sum();
    let timing_header = match r.ops.first().map(|o| o.timing) {
        Some(t) if t.estimated_cycles.is_some() => "est. cycles",
        Some(t) if t.vector_instructions.is_some() => "vector",
        _ => "",
    };
    println!(
        "    {:>3} {:10} {:40} {:>12} {:>12} {:>9} {:>12} {:>10}",
        "#", "op", "name", "MACs", "instructions", "instr/MAC", timing_header, "arena live"
    );
    for (i, o) in r.ops.iter().enumerate() {
        let per = if o.macs > 0 {
            format!("{:.3}", o.instructions as f64 / o.macs as f64)
        } else {
            "-".into()
        };
        let timing = match (o.timing.estimated_cycles, o.timing.vector_instructions) {
            (Some(c), _) => c.to_string(),
            (_, Some(v)) => format!("{:.1} %", 100.0 * v as f64 / o.instructions.max(1) as f64),
            _ => String::new(),
        };
        println!(
            "    {i:>3} {:10} {:40} {:>12} {:>12} {per:>9} {timing:>12} {:>10}",
            o.kind, o.name, o.macs, o.instructions, o.live_bytes
        );
    }
    if let Some(&whole) = r.instructions.last() {
        println!(
            "    one inference: {whole} instructions ({:.3} per MAC over {macs} MACs; ops sum {total})",
            whole as f64 / macs.max(1) as f64
        );
    }
    if let Some(t) = r.timing.last()
        && let Some(line) = timing_summary(t, r.instructions.last().copied().unwrap_or(0), macs)
    {
        println!("    {line}");
    }
    let m = &r.memory;
    println!(
        "    memory: arena {} bytes (lower bound {}), stack {} of {} bytes; firmware flash {} bytes, static RAM {} bytes",
        m.arena, m.lower_bound, m.stack_used, m.stack_size, r.flash_bytes, r.static_ram_bytes
    );
    for (i, (region, bytes)) in m.arena_parts.iter().enumerate() {
        println!("    arena part {i}: {bytes} bytes in {region}");
    }
    if !r.weights_line.is_empty() {
        println!("    weights per inference: {}", r.weights_line);
    }
}

/// One line on a run's timing figures, or `None` for a core without a model.
pub fn timing_summary(t: &crate::qemu::Timing, instructions: u64, macs: u64) -> Option<String> {
    if let Some(c) = t.estimated_cycles {
        return Some(format!(
            "estimated Cortex-M4 cycles: {} ({:.3} per MAC, {:.2} per instruction; the TRM's cycles \
             per instruction class at zero wait states: an estimate, not a measurement)",
            vitae::text::grouped(c),
            c as f64 / macs.max(1) as f64,
            c as f64 / instructions.max(1) as f64
        ));
    }
    let v = t.vector_instructions?;
    let scalar = instructions.saturating_sub(v);
    Some(format!(
        "Cortex-M55 instructions: {} vector ({:.1} %), {} scalar ({:.3} per MAC)",
        vitae::text::grouped(v),
        100.0 * v as f64 / instructions.max(1) as f64,
        vitae::text::grouped(scalar),
        scalar as f64 / macs.max(1) as f64
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_may_not_be_the_model_or_the_input() {
        let dir = tempfile::tempdir().unwrap();
        let (model, input) = (dir.path().join("m.vblob"), dir.path().join("x.npy"));
        std::fs::write(&model, b"blob").unwrap();
        std::fs::write(&input, b"npy").unwrap();
        let link = dir.path().join("link.npy");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        let args = |out: &Path| QemuArgs {
            board: "mps2-an386".into(),
            model: model.clone(),
            input: input.clone(),
            out: out.to_path_buf(),
            timeout: 1,
            stage: None,
            stage_ahead: false,
            profile: false,
        };
        for out in [&model, &input, &link] {
            let err = check_paths(&args(out)).unwrap_err().to_string();
            assert!(err.contains("is the same file as the input"), "{err}");
        }
        let err = check_paths(&args(Path::new("/dev/null")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
        check_paths(&args(&dir.path().join("logits.npy"))).unwrap();
        assert_eq!(std::fs::read(&input).unwrap(), b"npy");
    }
}
