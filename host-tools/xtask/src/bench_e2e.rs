//! `cargo xtask bench e2e`: whole-model instruction counts, arena, stack and flash on the QEMU
//! boards, for the shared mcu_a fixture (int8) and the demo's digits model.
//!
//! Each firmware embeds the input twice and the second inference is the one reported (the first
//! also carries the per-op markers). Instruction counts come from QEMU: instructions, not cycles.

use crate::app::{self, AppInput};
use crate::{assets, boards, e2e, project_root, qemu, setup, toolchain};
use anyhow::{Result, bail};
use std::path::PathBuf;
use std::time::Duration;
use vitae::quantize::Precision;
use vitae::quantize::patch::Patch;

#[derive(clap::Args, Debug)]
pub struct E2eArgs {
    /// One JSON object per model and board instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Only this QEMU board (default: the three QEMU machines and the real parts' budgets under
    /// QEMU).
    #[arg(long)]
    pub board: Option<String>,
    /// Also run ViTAE-T at 224×224 (the vitae_t fixture) on mps3-an547 and within the
    /// STM32N6570-DK and STM32H747I-DISCO budgets; on the H747 as a camera runs it, on u8 pixels
    /// with its first cell in strips (takes minutes).
    #[arg(long)]
    pub vitae_t: bool,
}

/// The open issues' goals, in instructions per MAC (int8: issue 20; fp16: issue 17).
fn target(model: &str, precision: Precision, board: &str) -> Option<f64> {
    match (model, precision, board) {
        ("mcu_a", Precision::Int8, "mps2-an386") => Some(1.3),
        ("mcu_a", Precision::Int8, "mps3-an547") => Some(0.22),
        ("digits", Precision::Int8, "mps2-an386") => Some(1.5),
        ("digits", Precision::Int8, "mps3-an547") => Some(0.35),
        ("mcu_a", Precision::Fp16, "mps2-an386") => Some(4.0),
        ("mcu_a", Precision::Fp16, "mps3-an547") => Some(0.6),
        _ => None,
    }
}

/// One model on one board: its blob (planned for the board's regions when it stands in for a
/// real part), or why it does not fit.
struct Case {
    model: &'static str,
    precision: Precision,
    board: &'static boards::Board,
    blob: Result<PathBuf, String>,
    input: PathBuf,
}

/// What a run measured, or why it did not run.
struct Row {
    model: &'static str,
    precision: Precision,
    board: &'static boards::Board,
    measured: Result<Measured, String>,
}

struct Measured {
    macs: u64,
    instructions: u64,
    /// The board's timing model's figures for the reported inference.
    timing: qemu::Timing,
    memory: app::Memory,
    flash: u64,
    /// Bytes used per region: the blob (and the embedded input) in its region, each arena part
    /// in its region, the stack in RAM.
    region_bytes: Vec<(String, u64)>,
    /// Activations in on-chip RAM + the input image + the stack.
    peak_sram: u64,
}

/// Writes `image` twice as a (2, C, H, W) .npy.
fn twice(name: &str, image: &[f32], shape: [usize; 3]) -> Result<PathBuf> {
    let path = project_root()
        .join("target")
        .join("vitae")
        .join(format!("{name}-x2.npy"));
    let data: Vec<f32> = image.iter().chain(image).copied().collect();
    vitae::npy::write_npy_f32(&path, &[2, shape[0], shape[1], shape[2]], &data)?;
    Ok(path)
}

/// The strips `--patch auto` chooses for ViTAE-T on the STM32H747I-DISCO.
fn vitae_t_h7_strips() -> Result<Patch> {
    let h7 = boards::board("qemu-stm32h747i-disco")?;
    match e2e::prepare_pixels("vitae_t", Some(h7), Patch::Auto)?.strips {
        Some(plan) => Ok(Patch::Strips(plan)),
        None => bail!("ViTAE-T on the H747 was not patched"),
    }
}

/// The profile a board measures: the real part it stands in for, or itself.
fn profile(board: &boards::Board) -> &'static str {
    board.stands_in_for.unwrap_or(board.name)
}

/// Fixture `name` in int8 for `board`: planned for its regions when it stands in for a real part
/// (the row says so when the model does not fit them; any other failure stops the bench).
fn fixture_blob(name: &str, board: &boards::Board) -> Result<Result<PathBuf, String>> {
    if board.stands_in_for.is_none() {
        return Ok(Ok(e2e::prepare(name, Precision::Int8)?.blob));
    }
    match e2e::prepare_for(name, Precision::Int8, Some(board)) {
        Ok(p) => Ok(Ok(p.blob)),
        Err(e)
            if e.chain().any(|c| {
                use vitae::quantize::{QuantizeError, lower::LowerError};
                // `QuantizeError::Lower` is transparent: the lowering error is not a link of
                // its own in the chain.
                matches!(
                    c.downcast_ref::<QuantizeError>(),
                    Some(QuantizeError::Lower(LowerError::ArenaDoesNotFit { .. }))
                )
            }) =>
        {
            Ok(Err(format!("{e:#}")))
        }
        Err(e) => Err(e),
    }
}

fn measure(tc: toolchain::ArmToolchain, case: &Case, blob: &PathBuf) -> Result<Measured> {
    let board = case.board;
    let elf = app::build(tc, board, blob, &AppInput::Npy(case.input.clone()))?;
    let run = app::run(board, &elf, Duration::from_secs(3600), &mut |_| {})?;
    let Some(&instructions) = run.instructions.last() else {
        bail!(
            "{} on {}: no instruction count (is the icount plugin built?)",
            case.model,
            board.name
        );
    };
    let macs: u64 = run.ops.iter().map(|o| o.macs).sum();
    // The images the firmware embeds (f32 or u8 pixels) sit beside the blob; one of them is the
    // input.
    let images = vitae::npy::read_npy(&case.input)?;
    let element = match images.dtype() {
        vitae::npy::NpyDtype::U8 => 1,
        _ => 4,
    };
    let embedded_bytes = element * images.shape.iter().product::<usize>() as u64;
    let count = match images.shape.as_slice() {
        [n, _, _, _] => *n as u64,
        _ => 1,
    };
    let input_bytes = embedded_bytes / count.max(1);
    let blob_bytes = std::fs::metadata(blob)?.len();
    let mut region_bytes: Vec<(String, u64)> = vec![(board.blob.to_string(), blob_bytes)];
    let mut add =
        |region: &str, bytes: u64| match region_bytes.iter_mut().find(|(r, _)| r == region) {
            Some((_, b)) => *b += bytes,
            None => region_bytes.push((region.to_string(), bytes)),
        };
    add(board.blob, embedded_bytes);
    for (region, bytes) in &run.memory.arena_parts {
        add(region, *bytes);
    }
    add("RAM", run.memory.stack_used);
    let on_chip = |r: &str| board.region(r).is_some_and(|x| x.kind.is_on_chip_ram());
    let activations: u64 = run
        .memory
        .arena_parts
        .iter()
        .filter(|(r, _)| on_chip(r))
        .map(|(_, b)| b)
        .sum();
    Ok(Measured {
        macs,
        instructions,
        timing: run.timing.last().copied().unwrap_or_default(),
        flash: run.flash_bytes,
        peak_sram: activations + input_bytes + run.memory.stack_used,
        memory: run.memory,
        region_bytes,
    })
}

pub fn run(args: &E2eArgs) -> Result<()> {
    setup::setup(true)?;
    let tc = toolchain::detect()?;
    let selected: Vec<&boards::Board> = match &args.board {
        Some(b) => vec![boards::board(b)?],
        None => boards::qemu_boards()
            .chain(boards::budget_boards())
            .collect(),
    };
    let mut cases = Vec::new();
    if e2e::fixtures_dir().is_some() {
        let x = vitae::npy::read_npy_f32(&e2e::fixtures_dir().unwrap().join("mcu_a/input.npy"))?;
        let input = twice("mcu_a", &x.data, [3, 96, 96])?;
        for &board in &selected {
            cases.push(Case {
                model: "mcu_a",
                precision: Precision::Int8,
                board,
                blob: fixture_blob("mcu_a", board)?,
                input: input.clone(),
            });
        }
        // mcu_a in fp16 (the FPU kernels), mixed precision, int4 weights and the int16 residual
        // stream on the three QEMU machines.
        for precision in [
            Precision::Fp16,
            Precision::Mixed,
            Precision::Int4,
            Precision::Int16Residual,
        ] {
            let blob = e2e::prepare("mcu_a", precision)?.blob;
            for &board in selected.iter().filter(|b| b.stands_in_for.is_none()) {
                cases.push(Case {
                    model: "mcu_a",
                    precision,
                    board,
                    blob: Ok(blob.clone()),
                    input: input.clone(),
                });
            }
        }
        // mcu_a mixed within 300 kB (int8: 353 kB): int4 weights where they hurt least.
        let within = e2e::prepare_within("mcu_a", 300_000)?.blob;
        for &board in selected.iter().filter(|b| b.stands_in_for.is_none()) {
            cases.push(Case {
                model: "mcu_a/300kB",
                precision: Precision::Mixed,
                board,
                blob: Ok(within.clone()),
                input: input.clone(),
            });
        }
        // mcu_a with its first cell in strips, the smallest arena (`--patch smallest`), on the
        // three QEMU machines: against the layer-by-layer rows above.
        for &board in selected.iter().filter(|b| b.stands_in_for.is_none()) {
            let p = e2e::prepare_patched("mcu_a", Precision::Int8, None, Patch::Smallest)?;
            cases.push(Case {
                model: "mcu_a/strips",
                precision: Precision::Int8,
                board,
                blob: Ok(p.blob),
                input: input.clone(),
            });
        }
        if args.vitae_t {
            let input = e2e::fixtures_dir().unwrap().join("vitae_t/input.npy");
            let vitae_t_boards = ["mps3-an547", "qemu-stm32n6570-dk"];
            for name in vitae_t_boards {
                let board = boards::board(name)?;
                if args.board.as_deref().is_some_and(|b| b != name) {
                    continue;
                }
                cases.push(Case {
                    model: "vitae_t",
                    precision: Precision::Int8,
                    board,
                    blob: fixture_blob("vitae_t", board)?,
                    input: input.clone(),
                });
            }
            // The H747 (1 MB of SRAM in five regions): u8 pixels, the first cell in strips as
            // `--board` chooses them (`--patch auto`); and on the M55 the same strips without a
            // board, for the instructions against the layer-by-layer run above.
            let h7 = boards::board("qemu-stm32h747i-disco")?;
            if args.board.as_deref().is_none_or(|b| b == h7.name) {
                let p = e2e::prepare_pixels("vitae_t", Some(h7), Patch::Auto)?;
                cases.push(Case {
                    model: "vitae_t/u8",
                    precision: Precision::Int8,
                    board: h7,
                    blob: Ok(p.blob),
                    input: p.input,
                });
            }
            let m55 = boards::board("mps3-an547")?;
            if args.board.as_deref().is_none_or(|b| b == m55.name) {
                let plan = vitae_t_h7_strips()?;
                let p = e2e::prepare_patched("vitae_t", Precision::Int8, None, plan)?;
                cases.push(Case {
                    model: "vitae_t/strips",
                    precision: Precision::Int8,
                    board: m55,
                    blob: Ok(p.blob),
                    input,
                });
            }
        }
    } else if e2e::fixtures_required() {
        bail!("VITAE_REQUIRE_FIXTURES=1 but ../shared/fixtures was not found");
    } else if !args.json {
        println!("note: ../shared/fixtures not found: benchmarking the digits model only");
    }
    let model = assets::digits_model()?;
    let digit = assets::read_digits(&assets::digits_dir().join("test.bin"))?[0].image();
    let input = twice("digits", &digit, [1, 32, 32])?;
    for precision in [
        Precision::Int8,
        Precision::Fp16,
        Precision::Mixed,
        Precision::Int4,
    ] {
        let (blob, _) = assets::digits_blob(&model, precision)?;
        // fp16, mixed and int4 on the QEMU machines only (the budget boards measure memory plans).
        let boards = selected
            .iter()
            .filter(|b| precision == Precision::Int8 || b.stands_in_for.is_none());
        for &board in boards {
            cases.push(Case {
                model: "digits",
                precision,
                board,
                blob: Ok(blob.clone()),
                input: input.clone(),
            });
        }
    }

    let mut rows = Vec::new();
    for case in &cases {
        if !args.json {
            eprintln!(
                "==> {} {} on {} ({}, profile {})",
                case.model,
                case.precision.name(),
                case.board.name,
                case.board.core,
                profile(case.board)
            );
        }
        let measured = match &case.blob {
            Ok(blob) => Ok(measure(tc, case, blob)?),
            Err(misfit) => Err(misfit.clone()),
        };
        rows.push(Row {
            model: case.model,
            precision: case.precision,
            board: case.board,
            measured,
        });
    }
    if args.json {
        for r in &rows {
            let qemu_board = match r.board.runner {
                boards::Runner::Qemu { machine, .. } => machine,
                boards::Runner::Probe { .. } => r.board.name,
            };
            let line = match &r.measured {
                Ok(m) => {
                    let mut line = serde_json::json!({"model": r.model, "board": qemu_board,
                    "profile": profile(r.board), "precision": r.precision.name(), "macs": m.macs,
                    "instructions": m.instructions, "arena_bytes": m.memory.arena,
                    "arena_lower_bound": m.memory.lower_bound, "stack_bytes": m.memory.stack_used,
                    "flash_bytes": m.flash, "peak_sram_bytes": m.peak_sram,
                    "region_bytes": m.region_bytes.iter()
                        .map(|(region, b)| (region.clone(), serde_json::Value::from(*b)))
                        .collect::<serde_json::Map<String, serde_json::Value>>()});
                    if let Some(c) = m.timing.estimated_cycles {
                        line["estimated_cycles"] = c.into();
                    }
                    if let Some(v) = m.timing.vector_instructions {
                        line["vector_instructions"] = v.into();
                    }
                    line
                }
                Err(why) => serde_json::json!({"model": r.model, "board": qemu_board,
                    "profile": profile(r.board), "precision": r.precision.name(), "fits": false,
                    "error": why}),
            };
            println!("{line}");
        }
        return Ok(());
    }
    println!(
        "\n{:14} {:14} {:22} {:>12} {:>14} {:>10} {:>8} {:>10} {:>11} {:>8} {:>10} {:>10}",
        "model",
        "precision",
        "board",
        "MACs",
        "instructions",
        "instr/MAC",
        "target",
        "arena B",
        "lower bound",
        "stack B",
        "flash B",
        "peak SRAM"
    );
    for r in &rows {
        let (model, board, precision) = (r.model, r.board.name, r.precision.name());
        let Ok(m) = &r.measured else {
            continue;
        };
        let per = m.instructions as f64 / m.macs.max(1) as f64;
        let t = match target(model, r.precision, board) {
            Some(t) => format!("≤ {t}"),
            None => "-".into(),
        };
        println!(
            "{model:14} {precision:14} {board:22} {:>12} {:>14} {per:>10.3} {t:>8} {:>10} {:>11} {:>8} {:>10} {:>10}",
            m.macs,
            m.instructions,
            m.memory.arena,
            m.memory.lower_bound,
            m.memory.stack_used,
            m.flash,
            m.peak_sram
        );
    }
    println!(
        "\ntiming models (Cortex-M4: cycles estimated from the TRM's cycles per instruction \
         class at zero wait states, an estimate; Cortex-M55: vector (Helium) and scalar \
         instructions; Cortex-M7: none):"
    );
    for r in &rows {
        let Ok(m) = &r.measured else {
            continue;
        };
        let per_mac = |n: u64| n as f64 / m.macs.max(1) as f64;
        let figures = match (m.timing.estimated_cycles, m.timing.vector_instructions) {
            (Some(c), _) => format!(
                "est. cycles {:>12}  {:.3} per MAC  {:.2} per instruction",
                vitae::text::grouped(c),
                per_mac(c),
                c as f64 / m.instructions.max(1) as f64
            ),
            (_, Some(v)) => {
                let scalar = m.instructions.saturating_sub(v);
                format!(
                    "vector {:>12} ({:.1} %)  scalar {} ({:.3} per MAC)",
                    vitae::text::grouped(v),
                    100.0 * v as f64 / m.instructions.max(1) as f64,
                    vitae::text::grouped(scalar),
                    per_mac(scalar)
                )
            }
            _ => continue,
        };
        println!(
            "  {:14} {:14} {:22} {figures}",
            r.model,
            r.precision.name(),
            r.board.name
        );
    }
    println!("\nbytes per region (blob and embedded input, arena parts, stack):");
    for r in &rows {
        match &r.measured {
            Ok(m) => {
                let regions: Vec<String> = m
                    .region_bytes
                    .iter()
                    .map(|(region, b)| format!("{region} {}", vitae::text::grouped(*b)))
                    .collect();
                println!(
                    "  {:14} {:14} {:22} {}",
                    r.model,
                    r.precision.name(),
                    r.board.name,
                    regions.join(", ")
                );
            }
            Err(why) => println!(
                "  {:14} {:14} {:22} does not fit {}: {why}",
                r.model,
                r.precision.name(),
                r.board.name,
                profile(r.board)
            ),
        }
    }
    println!(
        "\n(instructions executed under QEMU for one inference; QEMU is not cycle-accurate: \
         cycles above are the plugin's estimate)"
    );
    Ok(())
}
