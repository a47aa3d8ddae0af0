//! `vitae inspect`: what a blob holds, layer by layer.

use std::path::PathBuf;

use std::io::Write;

use clap::Args;

use vitae::io::read_file;
use vitae_edge::format::{AlignedBytes, DType, Model};
use vitae_edge::runtime::precision_name;

use crate::InputError;

/// Arguments of `vitae inspect`.
#[derive(Debug, Args)]
#[command(
    after_help = "Validates the blob completely (checksum, bounds, every op's parameters) before printing.\n\n\
Example:\n  vitae inspect model.vblob"
)]
pub struct InspectArgs {
    /// The blob.
    #[arg(value_name = "MODEL.vblob")]
    pub blob: PathBuf,
    /// Print one JSON object per op and a final totals object instead of the table.
    #[arg(long)]
    pub json: bool,
}

fn shape(m: &Model, t: u16) -> String {
    let d = m.tensor(t).desc;
    if d.h == 1 && d.w == 1 {
        format!("{}", d.c)
    } else {
        format!("{}x{}x{}", d.h, d.w, d.c)
    }
}

fn dtype(d: DType) -> &'static str {
    match d {
        DType::I8 => "i8",
        DType::F16 => "f16",
    }
}

/// Runs `vitae inspect`.
pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let bytes = read_file(&args.blob)?;
    let aligned = AlignedBytes::new(&bytes);
    let m = Model::parse(aligned.as_bytes())
        .map_err(|e| InputError(format!("{}: {e}", args.blob.display())))?;
    let meta = m.meta();
    let h = m.header();
    let mut rows = Vec::new();
    for i in 0..m.op_count() {
        let op = m.op(i);
        let ins: Vec<String> = op.inputs().map(|t| shape(&m, t)).collect();
        let input = if ins.is_empty() {
            format!(
                "{}x{}x{} f32",
                meta.input_height, meta.input_width, meta.input_channels
            )
        } else {
            ins.join(", ")
        };
        let out = m.tensor(op.desc.output);
        rows.push((
            op,
            input,
            shape(&m, op.desc.output),
            dtype(out.dtype),
            m.op_data_bytes(i),
            out.desc.arena_offset,
        ));
    }
    let data: usize = rows.iter().map(|r| r.4).sum();
    let mut out = std::io::stdout().lock();
    if args.json {
        for (op, input, output, dt, wbytes, at) in &rows {
            writeln!(
                out,
                "{}",
                serde_json::json!({"index": op.index, "op": op.kind.name(), "name": op.name, "dtype": dt,
                    "input": input, "output": output, "weight_bytes": wbytes, "macs": op.desc.macs,
                    "arena_offset": at, "scratch_bytes": op.desc.scratch_len})
            )?;
        }
        writeln!(
            out,
            "{}",
            serde_json::json!({"model": m.name(), "precision": precision_name(m.precision()), "flash_bytes": bytes.len(),
                "weight_bytes": data, "arena_bytes": h.arena_len, "arena_lower_bound": h.arena_lower_bound,
                "macs": m.macs(), "ops": m.op_count(), "format_version": h.version})
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "{}: model \"{}\", {}, blob format v{}, {} bytes, checksum ok",
        args.blob.display(),
        m.name(),
        precision_name(m.precision()),
        h.version,
        bytes.len()
    )?;
    writeln!(
        out,
        "input {}x{}x{} (C×H×W f32) → {} classes, {} ops, {} tensors\n",
        meta.input_channels,
        meta.input_height,
        meta.input_width,
        meta.num_classes,
        m.op_count(),
        m.tensor_count()
    )?;
    writeln!(
        out,
        "{:>3}  {:10} {:34} {:5} {:>22} → {:<10} {:>9} {:>11} {:>8} {:>8}",
        "#", "op", "name", "dtype", "input", "output", "weight B", "MACs", "arena@", "scratch"
    )?;
    for (op, input, output, dt, wbytes, at) in &rows {
        writeln!(
            out,
            "{:>3}  {:10} {:34} {:5} {:>22} → {:<10} {:>9} {:>11} {:>8} {:>8}",
            op.index,
            op.kind.name(),
            op.name,
            dt,
            input,
            output,
            wbytes,
            op.desc.macs,
            at,
            op.desc.scratch_len
        )?;
    }
    writeln!(
        out,
        "\ntotals: flash {} bytes (weights and tables {}), arena {} bytes (liveness lower bound {}, {:.3}×), {:.3} M MACs",
        bytes.len(),
        data,
        h.arena_len,
        h.arena_lower_bound,
        h.arena_len as f64 / (h.arena_lower_bound.max(1)) as f64,
        m.macs() as f64 / 1e6
    )?;
    Ok(())
}
