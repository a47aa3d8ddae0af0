//! Human-readable views of a blob, shared by `vitae inspect` and the demo.

use std::fmt::Write as _;

use vitae_edge::format::{DType, FormatError, Model};
use vitae_edge::runtime::precision_name;

use crate::boards::Board;
use crate::text::escape;

/// One op of a blob, for tables and reports.
#[derive(Clone, Debug)]
pub struct LayerRow {
    /// Position in execution order.
    pub index: usize,
    /// Op kind (`conv`, `linear`, …).
    pub op: &'static str,
    /// Name (state_dict path).
    pub name: String,
    /// Output element type.
    pub dtype: &'static str,
    /// Input shape(s).
    pub input: String,
    /// Output shape.
    pub output: String,
    /// Bytes of weights and tables.
    pub weight_bytes: usize,
    /// Multiply-accumulates.
    pub macs: u64,
    /// Arena offset of the output.
    pub arena_offset: usize,
    /// Scratch bytes.
    pub scratch_bytes: usize,
    /// Arena bytes live while this op runs (its inputs, output, scratch and everything still
    /// needed later).
    pub live_bytes: usize,
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
        DType::F32 => "f32",
        DType::I16 => "i16",
    }
}

/// Every op of `m` as a row (a parsed model gives no error).
pub fn layer_rows(m: &Model) -> Result<Vec<LayerRow>, FormatError> {
    let meta = m.meta();
    let n_ops = m.op_count();
    let lifetimes: Vec<Option<(usize, usize)>> = (0..m.tensor_count())
        .map(|t| m.tensor_lifetime(t as u16))
        .collect();
    (0..n_ops)
        .map(|i| {
            let op = m.op(i)?;
            let ins: Vec<String> = op.inputs().map(|t| shape(m, t)).collect();
            let input = if ins.is_empty() {
                // The caller's image, in the element type the blob takes.
                let element = match m.image_layout() {
                    vitae_edge::ImageLayout::U8Hwc => "u8",
                    _ => "f32",
                };
                format!(
                    "{}x{}x{} {element}",
                    meta.input_height, meta.input_width, meta.input_channels
                )
            } else {
                ins.join(", ")
            };
            let out = m.tensor(op.desc.output);
            let live = m.live_arena_bytes(i, &lifetimes);
            Ok(LayerRow {
                index: i,
                op: op.kind.name(),
                name: op.name.to_string(),
                dtype: dtype(out.dtype),
                input,
                output: shape(m, op.desc.output),
                weight_bytes: m.op_data_bytes(i)?,
                macs: op.desc.macs as u64,
                arena_offset: out.desc.arena_offset as usize,
                scratch_bytes: op.desc.scratch_len as usize,
                live_bytes: live,
            })
        })
        .collect()
}

/// The `vitae inspect` text: header, one line per op, totals. `label` names the blob (a path).
pub fn inspect_text(m: &Model, label: &str) -> Result<String, FormatError> {
    let meta = m.meta();
    let h = m.header();
    let rows = layer_rows(m)?;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: model \"{}\", {}, blob format v{}, {} bytes, checksum ok",
        escape(label),
        escape(m.name()),
        precision_name(m.precision()),
        h.version,
        m.bytes().len()
    );
    let _ = writeln!(
        s,
        "input {}x{}x{} (C×H×W, given as {}) → {} classes, {} ops, {} tensors\n",
        meta.input_channels,
        meta.input_height,
        meta.input_width,
        m.image_layout().name(),
        meta.num_classes,
        m.op_count(),
        m.tensor_count()
    );
    let _ = writeln!(
        s,
        "{:>3}  {:10} {:34} {:5} {:>22} → {:<10} {:>9} {:>11} {:>8} {:>8}",
        "#", "op", "name", "dtype", "input", "output", "weight B", "MACs", "arena@", "scratch"
    );
    for r in &rows {
        let _ = writeln!(
            s,
            "{:>3}  {:10} {:34} {:5} {:>22} → {:<10} {:>9} {:>11} {:>8} {:>8}",
            r.index,
            r.op,
            escape(&r.name),
            r.dtype,
            r.input,
            r.output,
            r.weight_bytes,
            r.macs,
            r.arena_offset,
            r.scratch_bytes
        );
    }
    let _ = writeln!(s, "\n{}", totals_line(m));
    if let Some(line) = strips_line(m) {
        let _ = writeln!(s, "{line}");
    }
    if let Some(line) = parts_line(m) {
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(s, "{}", ram_line(m));
    Ok(s)
}

/// One line: the RAM an inference needs, the arena and the caller's input image together.
pub fn ram_line(m: &Model) -> String {
    let input = m.input_bytes();
    format!(
        "RAM: arena {} + input image {} bytes ({}) = {} bytes at the peak",
        m.arena_len(),
        input,
        m.image_layout().name(),
        m.arena_len() + input
    )
}

/// Where the blob and each arena part go on `board`, one row each: what, region, its kind,
/// bytes and the room there; or why they do not fit (the region, the need and the room).
pub fn placement(m: &Model, board: &Board) -> Result<Vec<Placed>, String> {
    let kind = |name: &str| board.region(name).map_or("?", |r| r.kind.name());
    let blob = m.bytes().len() as u64;
    if blob > board.blob_room() {
        return Err(format!(
            "the blob is {blob} bytes but region {} of board {} has room for {} ({} over)",
            board.blob,
            board.name,
            board.blob_room(),
            blob - board.blob_room()
        ));
    }
    let mut rows = vec![Placed {
        what: "blob".into(),
        region: board.blob,
        kind: kind(board.blob),
        bytes: blob,
        room: board.blob_room(),
    }];
    let parts: Vec<u64> = (0..m.arena_parts())
        .map(|i| m.arena_part(i).len() as u64)
        .collect();
    for (i, r) in board.place_arena(&parts)?.into_iter().enumerate() {
        rows.push(Placed {
            what: format!("arena part {i}"),
            region: board.arena[r],
            kind: kind(board.arena[r]),
            bytes: parts[i],
            room: board.arena_room(r),
        });
    }
    Ok(rows)
}

/// One row of [`placement`].
#[derive(Clone, Debug)]
pub struct Placed {
    /// `blob` or `arena part N`.
    pub what: String,
    /// The region.
    pub region: &'static str,
    /// Its kind (`TCM`, `SRAM`, `external flash`, …).
    pub kind: &'static str,
    /// Bytes placed there.
    pub bytes: u64,
    /// Room there.
    pub room: u64,
}

/// The placement on `board` as text lines, ending with the on-chip RAM the arena takes.
pub fn placement_text(m: &Model, board: &Board) -> Result<String, String> {
    let rows = placement(m, board)?;
    let g = crate::text::grouped;
    let mut s = format!("placement on {} ({}):\n", board.name, board.core);
    for r in &rows {
        let _ = writeln!(
            s,
            "  {:12} {:12} {:15} {:>13} of {:>13} bytes",
            r.what,
            r.region,
            r.kind,
            g(r.bytes),
            g(r.room)
        );
    }
    let on_chip: u64 = rows
        .iter()
        .filter(|r| r.what != "blob")
        .filter(|r| {
            board
                .region(r.region)
                .is_some_and(|x| x.kind.is_on_chip_ram())
        })
        .map(|r| r.bytes)
        .sum();
    let _ = writeln!(
        s,
        "  arena in on-chip RAM: {} bytes, plus the stack ({} bytes reserved)",
        g(on_chip),
        g(board.stack)
    );
    Ok(s)
}

/// One line: the arena's parts when its plan is split over memory regions (empty otherwise).
pub fn parts_line(m: &Model) -> Option<String> {
    (m.arena_parts() > 1).then(|| {
        let parts: Vec<String> = (0..m.arena_parts())
            .map(|i| format!("{} bytes", m.arena_part(i).len()))
            .collect();
        format!(
            "arena parts (planned for a board's memory regions, fastest first): {}",
            parts.join(", ")
        )
    })
}

/// How a patch-based blob runs its first cells: the strips, the performer passes, the halo rows
/// copied between strips, and the MACs its ops execute against the model's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strips {
    /// Strips per pass: the performer's pass-1 strips, or (no performer) the image's.
    pub per_pass: usize,
    /// Passes over the strips (2 with a performer).
    pub passes: usize,
    /// Ops that copy kept halo rows from one strip's window to the next.
    pub halo_copies: usize,
    /// MACs the ops execute (recomputed halos and the second pass included).
    pub executed_macs: u64,
    /// The model's MACs (each product once).
    pub model_macs: u64,
}

/// [`Strips`] of a blob, or `None` when it runs layer by layer.
pub fn strips(m: &Model) -> Option<Strips> {
    use vitae_edge::format::OpKind;
    let (mut image_ops, mut starts, mut sums, mut halo_copies) = (0, 0, 0, 0);
    let mut executed_macs = 0u64;
    for i in 0..m.op_count() {
        let op = m.op(i).ok()?;
        executed_macs += op.desc.macs as u64;
        match op.kind {
            k if k.inputs() == 0 => image_ops += 1,
            OpKind::PerformerStartS8 => starts += 1,
            OpKind::PerformerSumS8 => sums += 1,
            OpKind::CopyRows => halo_copies += 1,
            _ => {}
        }
    }
    (image_ops > 1).then_some(Strips {
        per_pass: if starts > 0 { starts + sums } else { image_ops },
        passes: 1 + starts,
        halo_copies,
        executed_macs,
        model_macs: m.macs(),
    })
}

/// One line on the strips of a patch-based blob (`None` for a layer-by-layer one).
pub fn strips_line(m: &Model) -> Option<String> {
    let s = strips(m)?;
    let extra = s.executed_macs.saturating_sub(s.model_macs);
    Some(format!(
        "patch-based: the first cells run in {} strips per pass, {} pass{}, {} halo copies; the ops execute {:.3} M MACs, {:.3} M ({:+.1} %) more than the model's {:.3} M (recomputed rows)",
        s.per_pass,
        s.passes,
        if s.passes == 1 { "" } else { "es" },
        s.halo_copies,
        s.executed_macs as f64 / 1e6,
        extra as f64 / 1e6,
        100.0 * extra as f64 / s.model_macs.max(1) as f64,
        s.model_macs as f64 / 1e6,
    ))
}

/// One line: flash, weights, arena vs lower bound, MACs.
pub fn totals_line(m: &Model) -> String {
    let h = m.header();
    format!(
        "totals: flash {} bytes (weights and tables {}), arena {} bytes (liveness lower bound {}, {:.3}×), {:.3} M MACs",
        m.bytes().len(),
        m.data_len(),
        h.arena_len,
        h.arena_lower_bound,
        h.arena_len as f64 / (h.arena_lower_bound.max(1)) as f64,
        m.macs() as f64 / 1e6
    )
}

/// The `vitae inspect --json` lines.
pub fn inspect_json(m: &Model) -> Result<Vec<serde_json::Value>, FormatError> {
    let h = m.header();
    let rows = layer_rows(m)?;
    let mut v: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({"index": r.index, "op": r.op, "name": r.name, "dtype": r.dtype,
                "input": r.input, "output": r.output, "weight_bytes": r.weight_bytes, "macs": r.macs,
                "arena_offset": r.arena_offset, "scratch_bytes": r.scratch_bytes, "live_bytes": r.live_bytes})
        })
        .collect();
    v.push(serde_json::json!({"model": m.name(), "precision": precision_name(m.precision()),
        "flash_bytes": m.bytes().len(), "weight_bytes": m.data_len(), "arena_bytes": h.arena_len,
        "arena_lower_bound": h.arena_lower_bound, "macs": m.macs(), "ops": m.op_count(), "format_version": h.version,
        "input_layout": m.image_layout().name(), "input_bytes": m.input_bytes(),
        "arena_plus_input_bytes": m.arena_len() + m.input_bytes(),
        "arena_part_bytes": (0..m.arena_parts()).map(|i| m.arena_part(i).len()).collect::<Vec<_>>(),
        "executed_macs": rows.iter().map(|r| r.macs).sum::<u64>(),
        "strips": strips(m).map(|s| serde_json::json!({"per_pass": s.per_pass, "passes": s.passes, "halo_copies": s.halo_copies}))}));
    Ok(v)
}

/// One line on how the first cells run in strips (`vitae quantize`).
pub fn patch_line(p: &crate::quantize::patch::Patched) -> String {
    format!(
        "patch-based: ops {}..={} run in {} strips of {} rows of `{}`, {} pass{} over the strips{}",
        p.ops.start,
        p.ops.end - 1,
        p.strips,
        p.plan.rows,
        p.sink,
        p.passes,
        if p.passes == 1 { "" } else { "es" },
        match (p.plan.keep_qv, p.plan.keep_halos) {
            (true, true) => " (q and v kept whole from pass 1, halo rows kept between strips)",
            (true, false) => " (q and v kept whole from pass 1)",
            (false, true) => " (halo rows kept between strips)",
            (false, false) => "",
        }
    )
}
