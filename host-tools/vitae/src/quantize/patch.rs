//! Patch-based execution of the first cells: the int8 ops from the image to the first cell's
//! output run strip by strip (rows of the output map), so that no full-resolution map of the
//! first Reduction Cell is ever whole in the arena.
//!
//! What is patched: the longest run of ops from the image op on that are row-local (the int8
//! image conversion, ungrouped int8 convolutions, PRMs and max pooling, LayerNorm, linear layers,
//! adds) plus
//! at most one performer, and whose only tensor used later is one map, the *sink* (ViTAE's first
//! Reduction Cell: its output tokens). Each strip is a band of the sink's rows; every op of the run is re-emitted per strip
//! on the rows of its output that the strip needs (a convolution's halo rows are recomputed, not
//! kept), into tensors that hold only those rows ([`TensorDesc::row0`]); the sink's strips are
//! written into the whole sink in place.
//!
//! A performer makes two passes over the strips: pass 1 computes each strip's k and v and adds
//! them to the performer's running sums (the kernel's own first pass, strip by strip), pass 2
//! recomputes each strip's q (and v for the skip) and everything after the performer. Strips run
//! in token order and the integer ops' outputs do not depend on the strip, so the logits are the
//! unpatched blob's, byte for byte. The price is the recomputation: the PRM and the linear layers
//! before the performer run twice, halos once more per strip (reported as extra MACs).
//!
//! Softmax attention (a Reduction Cell of the `transformer` token type) needs every key for every
//! query: the run stops before it, so only the convolutions before it are patched.

use std::collections::HashMap;
use std::ops::Range;
use vitae_edge::format::{BlobWriter, DType, NO_TENSOR, OpKind, TensorDesc};
use vitae_edge::kernels::conv::ConvGeometry;
use vitae_edge::ops::Record;
use vitae_edge::ops::conv::ConvParams;
use vitae_edge::ops::copy_rows::CopyRowsOp;
use vitae_edge::ops::layernorm::{LayerNormParams, LayerNormS8Op, LayerNormS16Op};
use vitae_edge::ops::linear::{LinearParams, LinearS4Op, LinearS8Op};
use vitae_edge::ops::max_pool::MaxPoolParams;
use vitae_edge::ops::performer::{
    PerformerEmitS8Op, PerformerParams, PerformerStartS8Op, PerformerSumS8Op,
};
use vitae_edge::ops::prm::PrmRecord;

/// The share of the model's MACs that [`Patch::Auto`] lets strips recompute while it looks for
/// the smallest arena (the patch-based issue's bound).
pub const AUTO_EXTRA_MACS: f64 = 0.15;

/// How the first cells run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Patch {
    /// Layer by layer, unless the arena does not fit the memory regions it is planned for; then
    /// in strips: of the strip plans that fit, the one with the smallest arena among those that
    /// recompute at most 15 % more MACs ([`AUTO_EXTRA_MACS`]), or, when none is that cheap,
    /// the one that recomputes the fewest.
    #[default]
    Auto,
    /// Layer by layer.
    Off,
    /// In these strips.
    Strips(Strips),
    /// In the strips that give the smallest arena.
    Smallest,
}

/// A strip plan: the strip height and what the strips keep instead of recomputing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strips {
    /// Rows of the first cells' output map per strip.
    pub rows: usize,
    /// The performer's pass 1 keeps q and v whole for pass 2 (no PRM recomputed, more RAM).
    pub keep_qv: bool,
    /// Each strip copies the halo rows its convolutions read again from the previous strip's
    /// window instead of recomputing them (two windows alive at the copy).
    pub keep_halos: bool,
}

impl Patch {
    /// Strips of `rows` rows that recompute what they need again.
    pub const fn rows(rows: usize) -> Patch {
        Patch::Strips(Strips {
            rows,
            keep_qv: false,
            keep_halos: false,
        })
    }
}

impl std::str::FromStr for Patch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Patch::Auto),
            "off" => Ok(Patch::Off),
            "smallest" => Ok(Patch::Smallest),
            n => {
                let mut parts = n.split(':');
                let rows = parts.next().and_then(|r| r.parse::<usize>().ok());
                let mut plan = Strips {
                    rows: rows.unwrap_or(0),
                    keep_qv: false,
                    keep_halos: false,
                };
                let mut ok = plan.rows > 0;
                for part in parts {
                    match part {
                        "keep" => plan.keep_qv = true,
                        "halos" => plan.keep_halos = true,
                        _ => ok = false,
                    }
                }
                if ok {
                    Ok(Patch::Strips(plan))
                } else {
                    Err(format!(
                        "`{s}` is not a patch plan: give auto, off, smallest, or a number of rows \
                         (> 0) with :keep and/or :halos"
                    ))
                }
            }
        }
    }
}

/// What patching did to a blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Patched {
    /// Ops of the unpatched blob that run in strips (the image op, op 0, stays whole).
    pub ops: Range<usize>,
    /// The map the strips end in (the first cells' output).
    pub sink: String,
    /// Number of strips.
    pub strips: usize,
    /// Passes over the strips (2 with a performer).
    pub passes: usize,
    /// The plan as carried out: its height, and what it keeps (q and v only where a performer
    /// makes a second pass).
    pub plan: Strips,
    /// Tensors that are rows of another tensor's storage: `(strip, whole)`, for the planner.
    pub views: Vec<(u16, u16)>,
}

/// How an op of the run maps the rows of its output to the rows of its inputs.
#[derive(Clone, Debug)]
enum RowMap {
    /// The image op: the rows of the caller's image (no tensor input).
    Image,
    /// A convolution (or each PRM branch): the rows its window reaches.
    Conv(Vec<ConvGeometry>),
    /// A max pooling: the rows its windows cover.
    Pool(MaxPoolParams),
    /// Token by token: the same rows.
    Tokens,
    /// The performer: pass 2 reads the same rows of q (its sums cover all tokens).
    Performer,
}

/// The ops that can run in strips, from the image op (op 0) on: the run's end (inclusive), its
/// sink, its performer and each op's row map, or `None` when no run ends in a single map.
struct Run {
    end: usize,
    sink: u16,
    performer: Option<usize>,
    maps: Vec<RowMap>,
}

fn row_map(w: &BlobWriter, i: usize) -> Option<RowMap> {
    let op = w.ops[i];
    let record = w.record(i);
    Some(match OpKind::from_u16(op.kind)? {
        OpKind::ConvS8 => {
            let p = ConvParams::read(record).ok()?;
            let g = p.geom.geometry();
            if g.groups != 1 {
                return None;
            }
            RowMap::Conv(vec![g])
        }
        OpKind::PrmS8 => {
            let r = PrmRecord::read(record).ok()?;
            RowMap::Conv((0..r.branches.len()).map(|b| r.geometry(b)).collect())
        }
        OpKind::MaxPoolS8 => RowMap::Pool(MaxPoolParams::read(record).ok()?),
        OpKind::LayerNormS8
        | OpKind::LayerNormS16
        | OpKind::LinearS8
        | OpKind::LinearS4
        | OpKind::AddS8
        | OpKind::AddS16
        | OpKind::RequantizeS16 => RowMap::Tokens,
        OpKind::PerformerS8 => RowMap::Performer,
        _ => return None,
    })
}

fn find_run(w: &BlobWriter, output: u16) -> Option<Run> {
    let first = OpKind::from_u16(w.ops.first()?.kind)?;
    if !matches!(first, OpKind::QuantizeImage | OpKind::QuantizeImageU8) {
        return None;
    }
    let mut maps = vec![RowMap::Image];
    let mut performer = None;
    let mut best = None;
    for i in 1..w.ops.len() {
        let Some(map) = row_map(w, i) else { break };
        if matches!(map, RowMap::Performer) {
            if performer.is_some() {
                break;
            }
            performer = Some(i);
        }
        maps.push(map);
        // Tensors written in 1..=i and read after i (or the model's output).
        let mut live: Vec<u16> = Vec::new();
        for op in &w.ops[..=i] {
            let t = op.output;
            let read_later = w.ops[i + 1..]
                .iter()
                .any(|o| o.inputs.contains(&t) && t != NO_TENSOR);
            if (read_later || t == output) && !live.contains(&t) {
                live.push(t);
            }
        }
        // A run of the image op alone gains nothing: it must reach a convolution.
        if let [sink] = live[..]
            && i >= 1
            && w.tensors[sink as usize].h > 1
            && performer.is_none_or(|p| p <= i)
        {
            best = Some((i, sink, performer));
        }
    }
    let (end, sink, performer) = best?;
    maps.truncate(end + 1);
    Some(Run {
        end,
        sink,
        performer,
        maps,
    })
}

/// Strip heights worth trying, tallest first (fewest recomputed MACs): one per strip count.
pub fn candidate_rows(w: &BlobWriter) -> Vec<usize> {
    let Some(run) = w.meta.and_then(|m| find_run(w, m.output_tensor)) else {
        return Vec::new();
    };
    let h = w.tensors[run.sink as usize].h as usize;
    let mut rows: Vec<usize> = (2..=h).map(|strips| h.div_ceil(strips)).collect();
    rows.dedup();
    rows
}

/// Why [`patch`] gives `None`.
pub fn why_not(w: &BlobWriter) -> String {
    match w.meta.and_then(|m| find_run(w, m.output_tensor)) {
        None => "the model has no int8 run of row-local ops from its image op to one map (an \
                 fp16 first cell, or softmax attention right after the image)"
            .to_string(),
        Some(run) => {
            let h = w.tensors[run.sink as usize].h;
            format!(
                "the first cells end in `{}`, {h} rows tall: give 1 to {} rows",
                w.name(w.tensors[run.sink as usize].name),
                h.saturating_sub(1)
            )
        }
    }
}

fn hull(a: Option<&Range<usize>>, b: Range<usize>) -> Range<usize> {
    match a {
        Some(a) => a.start.min(b.start)..a.end.max(b.end),
        None => b,
    }
}

/// The rows of every tensor of the run that one strip needs, back from `targets`; `pass2` makes
/// the performer read q (pass 1 never reaches it: its targets are k and v).
/// What one strip needs: the rows of each tensor it holds, and the rows of them its producer
/// computes (fewer when the first rows are kept from the previous strip's window, `prev`).
struct Needs {
    hold: HashMap<u16, Range<usize>>,
    compute: HashMap<u16, Range<usize>>,
}

fn needs(
    w: &BlobWriter,
    run: &Run,
    targets: &[(u16, Range<usize>)],
    whole: &[u16],
    prev: &HashMap<u16, (u16, Range<usize>)>,
) -> Option<Needs> {
    let mut need: HashMap<u16, Range<usize>> = targets.iter().cloned().collect();
    let mut compute = HashMap::new();
    for i in (0..=run.end).rev() {
        let op = w.ops[i];
        let Some(held) = need.get(&op.output).cloned() else {
            continue;
        };
        // Rows the previous strip's window holds from this window's first row on are copied.
        let rows = match prev.get(&op.output) {
            Some((_, p)) if p.start <= held.start && held.start < p.end => {
                p.end.min(held.end)..held.end
            }
            _ => held.clone(),
        };
        compute.insert(op.output, rows.clone());
        if rows.is_empty() {
            continue;
        }
        let kind = OpKind::from_u16(op.kind)?;
        let reads: Vec<(u16, Range<usize>)> = match &run.maps[i] {
            RowMap::Image => Vec::new(),
            RowMap::Conv(gs) => {
                let mut r: Option<Range<usize>> = None;
                for g in gs {
                    let (_, reads) = g.window(rows.clone()).ok()?;
                    r = Some(hull(r.as_ref(), reads));
                }
                vec![(op.inputs[0], r?)]
            }
            RowMap::Pool(p) => vec![(op.inputs[0], p.rows_read(rows))],
            RowMap::Tokens => (0..kind.inputs())
                .map(|k| (op.inputs[k], rows.clone()))
                .collect(),
            RowMap::Performer => vec![(op.inputs[1], rows)],
        };
        // Tensors already whole in the arena (kept from pass 1) are read, not recomputed.
        for (t, r) in reads.into_iter().filter(|(t, _)| !whole.contains(t)) {
            let h = hull(need.get(&t), r);
            need.insert(t, h);
        }
    }
    Some(Needs {
        hold: need,
        compute,
    })
}

/// Rewrites the run of ops from the image op on into strips of `rows` rows of its output map.
/// `None` when the blob has no such run (or the strips would be the whole map); the blob is
/// untouched then.
/// With `plan.keep_qv`, pass 1 also computes each strip's q and writes q and v into whole
/// tensors that pass 2 reads instead of recomputing them; with `plan.keep_halos`, each strip
/// copies the rows it shares with the previous strip's windows instead of recomputing them.
pub fn patch(w: &mut BlobWriter, plan: Strips) -> Option<Patched> {
    let (rows, keep) = (plan.rows, plan.keep_qv);
    let output = w.meta?.output_tensor;
    let run = find_run(w, output)?;
    let sink_h = w.tensors[run.sink as usize].h as usize;
    if rows == 0 || rows >= sink_h {
        return None;
    }
    let strips: Vec<Range<usize>> = (0..sink_h)
        .step_by(rows)
        .map(|s| s..(s + rows).min(sink_h))
        .collect();
    let mut out = Emit {
        w: w.clone(),
        ops: Vec::new(),
        views: Vec::new(),
        state: None,
    };
    let mut passes = 1;
    let mut kept: Vec<u16> = Vec::new();
    if let Some(p) = run.performer {
        passes = 2;
        let perf = w.ops[p];
        let (k, q, v) = (perf.inputs[0], perf.inputs[1], perf.inputs[2]);
        if keep {
            kept = vec![q, v];
        }
        let kh = w.tensors[k as usize].h as usize;
        let record = PerformerParams::read(w.record(p)).ok()?;
        let state = out.state_tensor(&record, w.name(perf.name));
        let mut prev = HashMap::new();
        for (s, strip) in (0..kh).step_by(rows).enumerate() {
            let strip = strip..(strip + rows).min(kh);
            let mut targets = vec![(k, strip.clone()), (v, strip.clone())];
            if keep {
                targets.push((q, strip.clone()));
            }
            let need = needs(w, &run, &targets, &[], &prev)?;
            let cur = out.strip(w, &run, &need, &kept, &[], &prev)?;
            if plan.keep_halos {
                prev = windows(&cur, &need);
            }
            let (ks, vs) = (*cur.get(&k)?, *cur.get(&v)?);
            let tokens = (strip.len() * w.tensors[k as usize].w as usize) as u32;
            let params = PerformerParams { tokens, ..record };
            let name = format!("{}[{}:{}]", w.name(perf.name), strip.start, strip.end);
            let macs = pass_macs(&params, 1);
            if s == 0 {
                out.w
                    .op::<PerformerStartS8Op>(&[ks, vs], state, &params, macs, &name);
            } else {
                let inputs = [state, ks, vs];
                out.w
                    .op::<PerformerSumS8Op>(&inputs, state, &params, macs, &name);
            }
            out.take_last();
        }
        out.state = Some((state, record));
    }
    let mut prev = HashMap::new();
    for strip in &strips {
        let need = needs(w, &run, &[(run.sink, strip.clone())], &kept, &prev)?;
        let cur = out.strip(w, &run, &need, &[run.sink], &kept, &prev)?;
        if plan.keep_halos {
            prev = windows(&cur, &need);
        }
    }
    out.ops.extend_from_slice(&w.ops[run.end + 1..]);
    let Emit {
        w: mut nw,
        ops,
        mut views,
        ..
    } = out;
    nw.ops = ops;
    // The input tensor is the first strip of the image now.
    if let Some(meta) = nw.meta.as_mut() {
        meta.input_tensor = nw.ops[0].output;
    }
    compact(&mut nw, &mut views);
    // The strips repeat records and names: store each once (adds keep their own records, which
    // the planner may rewrite when it swaps their operands).
    nw.share_records(|kind| kind == OpKind::AddS8 as u16 || kind == OpKind::AddS16 as u16);
    nw.share_strings();
    let sink = w.name(w.tensors[run.sink as usize].name).to_string();
    *w = nw;
    Some(Patched {
        ops: 0..run.end + 1,
        sink,
        strips: strips.len(),
        passes,
        plan: Strips {
            keep_qv: keep && passes == 2,
            ..plan
        },
        views,
    })
}

/// Each tensor's window in a strip and the rows it holds, for the next strip to copy from.
fn windows(cur: &HashMap<u16, u16>, need: &Needs) -> HashMap<u16, (u16, Range<usize>)> {
    cur.iter()
        .filter_map(|(t, &s)| Some((*t, (s, need.hold.get(t)?.clone()))))
        .collect()
}

fn pass_macs(p: &PerformerParams, pass: u8) -> u64 {
    let (n, e, m) = (p.tokens as u64, p.emb as u64, p.features as u64);
    2 * n * e * m + if pass == 2 { n * m } else { 0 }
}

/// The patched blob being written: a copy of the original whose op list is rebuilt.
struct Emit {
    w: BlobWriter,
    ops: Vec<vitae_edge::format::OpDesc>,
    views: Vec<(u16, u16)>,
    /// Set by pass 1 for pass 2: the performer's sums tensor and its record.
    state: Option<(u16, PerformerParams)>,
}

impl Emit {
    /// Moves the op just appended to the writer into the new op list.
    fn take_last(&mut self) {
        if let Some(op) = self.w.ops.pop() {
            self.ops.push(op);
        }
    }

    fn state_tensor(&mut self, p: &PerformerParams, name: &str) -> u16 {
        let (m, e) = (p.features, p.emb + 1);
        let name = self.w.string(&format!("{name}.sums"));
        self.w.tensor(TensorDesc {
            dtype: DType::F32 as u8,
            reserved0: 0,
            flags: 0,
            h: m,
            w: 1,
            c: e,
            row0: 0,
            arena_offset: 0,
            byte_len: m as u32 * e as u32 * 4,
            scale: 1.0,
            zero_point: 0,
            name,
        })
    }

    /// A tensor holding rows `rows` of tensor `t` (of the original blob): its own storage, or,
    /// with `view_of`, rows of `view_of`'s storage.
    fn rows_of(&mut self, t: u16, rows: &Range<usize>, view_of: Option<u16>) -> u16 {
        let d = self.w.tensors[t as usize];
        let size = DType::from_u8(d.dtype).map_or(1, |d| d.size());
        let name = format!("{}[{}:{}]", self.w.name(d.name), rows.start, rows.end);
        let name = self.w.string(&name);
        let s = self.w.tensor(TensorDesc {
            h: rows.len() as u16,
            row0: rows.start as u16,
            byte_len: (rows.len() * d.w as usize * d.c as usize * size) as u32,
            name,
            ..d
        });
        if let Some(whole) = view_of {
            self.views.push((s, whole));
        }
        s
    }
}

impl Emit {
    /// Emits one strip: every op of the run whose output the strip needs, on those rows, in the
    /// original order. The strips of `sinks` are rows of their whole tensors' storage; the
    /// tensors of `whole_maps` are read whole (rows of them, for a token op). Returns the strip tensor
    /// of each original tensor it wrote.
    fn strip(
        &mut self,
        w: &BlobWriter,
        run: &Run,
        need: &Needs,
        sinks: &[u16],
        whole_maps: &[u16],
        prev: &HashMap<u16, (u16, Range<usize>)>,
    ) -> Option<HashMap<u16, u16>> {
        let mut cur: HashMap<u16, u16> = HashMap::new();
        for i in 0..=run.end {
            let op = w.ops[i];
            let Some(held) = need.hold.get(&op.output).cloned() else {
                continue;
            };
            let rows = need
                .compute
                .get(&op.output)
                .cloned()
                .unwrap_or(held.clone());
            let kind = OpKind::from_u16(op.kind)?;
            let whole = w.tensors[op.output as usize];
            let into_whole = sinks.contains(&op.output).then_some(op.output);
            // The strip's window of the op's output; its first rows copied from the previous
            // strip's window when they are kept, the op computing the rest into it.
            let window = self.rows_of(op.output, &held, into_whole);
            let out_t = if rows == held {
                window
            } else {
                let kept = held.start..rows.start;
                if !kept.is_empty() {
                    let (previous, _) = prev.get(&op.output)?;
                    let src = self.rows_of(op.output, &kept, Some(*previous));
                    let dst = self.rows_of(op.output, &kept, Some(window));
                    let name = format!("{}[{}:{}] kept", w.name(op.name), kept.start, kept.end);
                    self.w.op::<CopyRowsOp>(&[src], dst, &(), 0, &name);
                    self.take_last();
                }
                cur.insert(op.output, window);
                if rows.is_empty() {
                    continue;
                }
                self.rows_of(op.output, &rows, Some(window))
            };
            let name = format!("{}[{}:{}]", w.name(op.name), rows.start, rows.end);
            let scale = |macs: u32| macs as u64 / whole.h as u64 * rows.len() as u64;
            let tokens = (rows.len() * whole.w as usize) as u32;
            // The inputs: the image whole, the run's tensors as this strip wrote them (a token
            // op reading fewer rows than a convolution needed gets a view of its rows).
            let mut inputs = Vec::new();
            let performer_pass2 = matches!(run.maps[i], RowMap::Performer);
            let read: Vec<usize> = if performer_pass2 {
                vec![1]
            } else {
                (0..kind.inputs()).collect()
            };
            for k in read {
                let t = op.inputs[k];
                let s = match cur.get(&t) {
                    Some(&s) => s,
                    None if whole_maps.contains(&t) => t,
                    None => return None,
                };
                let sd = self.w.tensors[s as usize];
                let held = sd.row0 as usize..sd.row0 as usize + sd.h as usize;
                if matches!(run.maps[i], RowMap::Conv(_) | RowMap::Pool(_)) || held == rows {
                    inputs.push(s);
                } else {
                    inputs.push(self.rows_of(t, &rows, Some(s)));
                }
            }
            match kind {
                OpKind::QuantizeImage
                | OpKind::QuantizeImageU8
                | OpKind::ConvS8
                | OpKind::MaxPoolS8
                | OpKind::PrmS8
                | OpKind::AddS8
                | OpKind::AddS16
                | OpKind::RequantizeS16 => {
                    self.w
                        .op_record(kind, &inputs, out_t, w.record(i), scale(op.macs), &name)
                        .ok()?;
                }
                OpKind::LinearS8 => {
                    let p = LinearParams::read(w.record(i)).ok()?;
                    let p = LinearParams { tokens, ..p };
                    self.w
                        .op::<LinearS8Op>(&inputs, out_t, &p, scale(op.macs), &name);
                }
                OpKind::LinearS4 => {
                    let p = LinearParams::read(w.record(i)).ok()?;
                    let p = LinearParams { tokens, ..p };
                    self.w
                        .op::<LinearS4Op>(&inputs, out_t, &p, scale(op.macs), &name);
                }
                OpKind::LayerNormS8 => {
                    let p = LayerNormParams::read(w.record(i)).ok()?;
                    let p = LayerNormParams { tokens, ..p };
                    self.w.op::<LayerNormS8Op>(&inputs, out_t, &p, 0, &name);
                }
                OpKind::LayerNormS16 => {
                    let p = LayerNormParams::read(w.record(i)).ok()?;
                    let p = LayerNormParams { tokens, ..p };
                    self.w.op::<LayerNormS16Op>(&inputs, out_t, &p, 0, &name);
                }
                OpKind::PerformerS8 => {
                    let state = self.state?;
                    let p = PerformerParams { tokens, ..state.1 };
                    let ins = [inputs[0], state.0];
                    self.w
                        .op::<PerformerEmitS8Op>(&ins, out_t, &p, pass_macs(&p, 2), &name);
                }
                _ => return None,
            }
            self.take_last();
            cur.insert(op.output, window);
        }
        Some(cur)
    }
}

/// Drops the tensors no op reads or writes any more (the whole maps the strips replaced) and
/// renumbers the rest.
fn compact(w: &mut BlobWriter, views: &mut [(u16, u16)]) {
    let Some(meta) = w.meta.as_mut() else { return };
    let mut used = vec![false; w.tensors.len()];
    for op in &w.ops {
        used[op.output as usize] = true;
        for &t in op.inputs.iter().filter(|&&t| t != NO_TENSOR) {
            used[t as usize] = true;
        }
    }
    used[meta.input_tensor as usize] = true;
    used[meta.output_tensor as usize] = true;
    for &(_, whole) in views.iter() {
        used[whole as usize] = true;
    }
    let mut id = vec![NO_TENSOR; w.tensors.len()];
    let mut kept = Vec::new();
    for (t, desc) in w.tensors.iter().enumerate() {
        if used[t] {
            id[t] = kept.len() as u16;
            kept.push(*desc);
        }
    }
    w.tensors = kept;
    for op in &mut w.ops {
        op.output = id[op.output as usize];
        for t in op.inputs.iter_mut().filter(|t| **t != NO_TENSOR) {
            *t = id[*t as usize];
        }
    }
    meta.input_tensor = id[meta.input_tensor as usize];
    meta.output_tensor = id[meta.output_tensor as usize];
    for (s, whole) in views.iter_mut() {
        (*s, *whole) = (id[*s as usize], id[*whole as usize]);
    }
}
