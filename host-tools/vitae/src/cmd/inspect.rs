//! `vitae inspect`: what a blob holds, layer by layer.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use vitae::io::{InputKind, read_file};
use vitae::report;
use vitae_edge::format::{AlignedBytes, Model};

use crate::InputError;

/// Arguments of `vitae inspect`.
#[derive(Debug, Args)]
#[command(
    after_help = "Validates the blob completely (checksum, bounds, every op's parameters) before printing:\n\
one line per op (kind, name, output dtype, shapes, weight bytes, MACs, arena offset of the\n\
output, scratch), then totals: flash bytes, arena bytes against the liveness lower bound, MACs;\n\
and the RAM at the peak: the arena plus the caller's input image (f32 NCHW or u8 HWC).\n\
With --board, where the blob and each arena part go in that board's memory regions, or which\n\
region is too small and by how much (exit status 2).\n\n\
Examples:\n  vitae inspect model.vblob\n  vitae inspect --json model.vblob\n  vitae inspect --board stm32h747i-disco model.vblob"
)]
pub struct InspectArgs {
    /// The blob.
    #[arg(value_name = "MODEL.vblob")]
    pub blob: PathBuf,
    /// One JSON object per op and a final totals object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also show where the blob and the arena parts go on this board (firmware/boards.rs).
    #[arg(long, value_name = "BOARD")]
    pub board: Option<String>,
}

/// Runs `vitae inspect`.
pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let board = match &args.board {
        Some(name) => Some(vitae::boards::board(name).map_err(|e| InputError(e.to_string()))?),
        None => None,
    };
    let bytes = read_file(&args.blob, InputKind::Blob)?;
    let aligned = AlignedBytes::new(&bytes);
    let m = Model::parse(aligned.as_bytes())
        .map_err(|e| InputError(format!("{}: {e}", args.blob.display())))?;
    vitae::engine::check_host_limits(&m)
        .map_err(|e| InputError(format!("{}: {e}", args.blob.display())))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        for line in report::inspect_json(&m)? {
            writeln!(out, "{}", vitae::text::json_for_terminal(&line.to_string()))?;
        }
    } else {
        write!(
            out,
            "{}",
            report::inspect_text(&m, &args.blob.display().to_string())?
        )?;
    }
    if let Some(board) = board {
        let misfit = |e: String| InputError(format!("{}: {e}", args.blob.display()));
        if args.json {
            let rows: Vec<serde_json::Value> = report::placement(&m, board)
                .map_err(misfit)?
                .iter()
                .map(|r| {
                    serde_json::json!({"what": r.what, "region": r.region, "kind": r.kind,
                        "bytes": r.bytes, "room": r.room})
                })
                .collect();
            let line = serde_json::json!({"board": board.name, "placement": rows});
            writeln!(out, "{}", vitae::text::json_for_terminal(&line.to_string()))?;
        } else {
            write!(
                out,
                "{}",
                report::placement_text(&m, board).map_err(misfit)?
            )?;
        }
    }
    Ok(())
}
