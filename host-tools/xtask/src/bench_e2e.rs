//! `cargo xtask bench e2e`: whole-model instruction counts, arena, stack and flash on the QEMU
//! boards, for the shared mcu_a fixture (int8) and the demo's digits model.
//!
//! Each firmware embeds the input twice and the second inference is the one reported (the first
//! also carries the per-op markers). Instruction counts come from QEMU: instructions, not cycles.

use crate::app::{self, AppInput};
use crate::{assets, boards, e2e, project_root, setup, toolchain};
use anyhow::{Result, bail};
use std::path::PathBuf;
use std::time::Duration;
use vitae::quantize::Precision;

#[derive(clap::Args, Debug)]
pub struct E2eArgs {
    /// One JSON object per model and board instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Only this QEMU board (default: all three).
    #[arg(long)]
    pub board: Option<String>,
    /// Also run ViTAE-T at 224×224 (the vitae_t fixture) on mps3-an547 (takes minutes).
    #[arg(long)]
    pub vitae_t: bool,
}

/// The targets, in instructions per MAC (model mcu_a, int8).
fn target(board: &str) -> Option<f64> {
    match board {
        "mps2-an386" => Some(2.0),
        "mps3-an547" => Some(0.35),
        _ => None,
    }
}

struct Case {
    model: &'static str,
    blob: PathBuf,
    input: PathBuf,
    boards: Vec<&'static boards::Board>,
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

pub fn run(args: &E2eArgs) -> Result<()> {
    setup::setup(true)?;
    let tc = toolchain::detect()?;
    let selected: Vec<&boards::Board> = match &args.board {
        Some(b) => vec![boards::board(b)?],
        None => boards::qemu_boards().collect(),
    };
    let mut cases = Vec::new();
    if e2e::fixtures_dir().is_some() {
        let p = e2e::prepare("mcu_a", Precision::Int8)?;
        let x = vitae::npy::read_npy_f32(&p.input)?;
        let input = twice("mcu_a", &x.data, [3, 96, 96])?;
        cases.push(Case {
            model: "mcu_a",
            blob: p.blob,
            input,
            boards: selected.clone(),
        });
        if args.vitae_t {
            let p = e2e::prepare("vitae_t", Precision::Int8)?;
            let m55 = boards::board("mps3-an547")?;
            cases.push(Case {
                model: "vitae_t",
                blob: p.blob,
                input: p.input,
                boards: vec![m55],
            });
        }
    } else if e2e::fixtures_required() {
        bail!("VITAE_REQUIRE_FIXTURES=1 but ../shared/fixtures was not found");
    } else if !args.json {
        println!("note: ../shared/fixtures not found: benchmarking the digits model only");
    }
    let model = assets::digits_model()?;
    let (blob, _) = assets::digits_blob(&model, Precision::Int8)?;
    let digit = assets::read_digits(&assets::digits_dir().join("test.bin"))?[0].image();
    let input = twice("digits", &digit, [1, 32, 32])?;
    cases.push(Case {
        model: "digits",
        blob,
        input,
        boards: selected,
    });

    let mut rows = Vec::new();
    for case in &cases {
        for board in &case.boards {
            if !args.json {
                eprintln!("==> {} on {} ({})", case.model, board.name, board.core);
            }
            let elf = app::build(tc, board, &case.blob, &AppInput::Npy(case.input.clone()))?;
            let run = app::run(board, &elf, Duration::from_secs(3600), &mut |_| {})?;
            let Some(&instructions) = run.instructions.last() else {
                bail!(
                    "{} on {}: no instruction count (is the icount plugin built?)",
                    case.model,
                    board.name
                );
            };
            let macs: u64 = run.ops.iter().map(|o| o.macs).sum();
            rows.push((
                case.model,
                board.name,
                macs,
                instructions,
                run.memory,
                run.flash_bytes,
            ));
        }
    }
    if args.json {
        for (model, board, macs, instructions, m, flash) in &rows {
            println!(
                "{}",
                serde_json::json!({"model": model, "board": board, "precision": "int8", "macs": macs,
                    "instructions": instructions, "arena_bytes": m.arena, "arena_lower_bound": m.lower_bound,
                    "stack_bytes": m.stack_used, "flash_bytes": flash})
            );
        }
        return Ok(());
    }
    println!(
        "\n{:8} {:11} {:>12} {:>14} {:>10} {:>8} {:>10} {:>11} {:>8} {:>10}",
        "model",
        "board",
        "MACs",
        "instructions",
        "instr/MAC",
        "target",
        "arena B",
        "lower bound",
        "stack B",
        "flash B"
    );
    for (model, board, macs, instructions, m, flash) in &rows {
        let per = *instructions as f64 / (*macs).max(1) as f64;
        let t = match (model, target(board)) {
            (&"mcu_a", Some(t)) => format!("≤ {t}"),
            _ => "-".into(),
        };
        println!(
            "{model:8} {board:11} {macs:>12} {instructions:>14} {per:>10.3} {t:>8} {:>10} {:>11} {:>8} {flash:>10}",
            m.arena, m.lower_bound, m.stack_used
        );
    }
    println!("\n(instructions executed under QEMU for one inference; QEMU is not cycle-accurate)");
    Ok(())
}
