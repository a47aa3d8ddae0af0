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
and the RAM at the peak: the arena plus the caller's input image (f32 NCHW or u8 HWC).\n\n\
Examples:\n  vitae inspect model.vblob\n  vitae inspect --json model.vblob"
)]
pub struct InspectArgs {
    /// The blob.
    #[arg(value_name = "MODEL.vblob")]
    pub blob: PathBuf,
    /// One JSON object per op and a final totals object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `vitae inspect`.
pub fn run(args: InspectArgs) -> anyhow::Result<()> {
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
    Ok(())
}
