//! `vitae diff`: where a quantized model departs from the f32 model, layer by layer.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Args;

use vitae::io::{InputKind, read_file};
use vitae::npy::read_npy_f32;
use vitae::quantize::build::build_graph;
use vitae::quantize::graph::NoObserver;
use vitae::reference::ReferenceModel;
use vitae_edge::format::{AlignedBytes, DType, Model, OpView};
use vitae_edge::runtime::{self, Input, Profiler};

use crate::InputError;
use crate::cli::ModelArgs;

/// Arguments of `vitae diff`.
#[derive(Debug, Args)]
#[command(
    after_help = "For every op of the blob, compares its output (dequantized) with the same tensor of the\n\
f32 model on the same input: cosine similarity, largest absolute difference and SQNR in dB\n\
(10·log10 of signal power over error power). Errors accumulate from layer to layer; the\n\
first layer whose SQNR drops sharply is where to look (try --calib-method, more calibration\n\
data, or --precision mixed).\n\n\
Example:\n  vitae diff --model model.vblob --checkpoint model.pth --config kwargs.json --input x.npy"
)]
pub struct DiffArgs {
    /// The quantized blob.
    #[arg(long, value_name = "MODEL.vblob")]
    pub model: PathBuf,
    /// The checkpoint and architecture it was made from.
    #[command(flatten)]
    pub reference: ModelArgs,
    /// One image (C, H, W) or a batch (N, C, H, W), float32 .npy; the first image is used.
    #[arg(long, value_name = "X.npy")]
    pub input: PathBuf,
}

/// Compares every op's output, dequantized, with the float graph's tensor of the same name as
/// the op runs; only the numbers are kept (the graph's outputs are the one full copy held).
struct Capture<'m> {
    model: &'m Model<'m>,
    float_outs: &'m [Vec<f32>],
    by_name: &'m HashMap<&'m str, usize>,
    /// The dequantized output of the op being compared (reused).
    values: Vec<f32>,
    /// Op index, name, cosine, max |Δ|, SQNR.
    rows: Vec<(usize, String, (f64, f64, f64))>,
    ops: usize,
}

impl Profiler for Capture<'_> {
    fn op_end(&mut self, op: &OpView, output: &[u8]) {
        let index = self.ops;
        self.ops += 1;
        let name = op.name;
        let base = name
            .strip_suffix(".to_f16")
            .or_else(|| name.strip_suffix(".to_i8"))
            .unwrap_or(name);
        let Some(&node) = self.by_name.get(base) else {
            return;
        };
        let t = self.model.tensor(op.desc.output);
        self.values.clear();
        match t.dtype {
            DType::I8 => self.values.extend(
                output
                    .iter()
                    .map(|&q| t.desc.scale * (q as i8 as i32 - t.desc.zero_point) as f32),
            ),
            DType::F16 => self.values.extend(
                output
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
            ),
            DType::I16 => self.values.extend(
                output
                    .chunks_exact(2)
                    .map(|b| t.desc.scale * f32::from(i16::from_le_bytes([b[0], b[1]]))),
            ),
            DType::F32 => self.values.extend(
                output
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
        }
        let stats = compare(&self.values, &self.float_outs[node]);
        self.rows.push((index, name.to_string(), stats));
    }
}

/// Cosine, max |Δ|, SQNR (dB).
pub fn compare(q: &[f32], f: &[f32]) -> (f64, f64, f64) {
    let (mut dot, mut nq, mut nf, mut err, mut maxd) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (&a, &b) in q.iter().zip(f) {
        let (a, b) = (a as f64, b as f64);
        dot += a * b;
        nq += a * a;
        nf += b * b;
        err += (a - b) * (a - b);
        maxd = maxd.max((a - b).abs());
    }
    let cos = if nq > 0.0 && nf > 0.0 {
        dot / (nq.sqrt() * nf.sqrt())
    } else if nq == nf {
        1.0
    } else {
        0.0
    };
    let sqnr = if err > 0.0 {
        10.0 * (nf / err).log10()
    } else {
        f64::INFINITY
    };
    (cos, maxd, sqnr)
}

/// Runs `vitae diff`.
pub fn run(args: DiffArgs) -> anyhow::Result<()> {
    let bytes = read_file(&args.model, InputKind::Blob)?;
    let aligned = AlignedBytes::new(&bytes);
    let m = Model::parse(aligned.as_bytes())
        .map_err(|e| InputError(format!("{}: {e}", args.model.display())))?;
    vitae::engine::check_host_limits(&m)
        .map_err(|e| InputError(format!("{}: {e}", args.model.display())))?;
    let (config, checkpoint) = args.reference.load()?;
    // Checkpoint against architecture first: with the wrong --arch that is the problem.
    let reference = ReferenceModel::new(config, &checkpoint)?;
    let config = reference.config();
    let input = read_npy_f32(&args.input)?;
    let per = config.input_len();
    if input.data.len() < per || input.data.len() % per != 0 {
        return Err(InputError(format!(
            "{}: input shape {:?} does not fit the model: expected (N, {}, {s}, {s})",
            args.input.display(),
            input.shape,
            config.in_chans(),
            s = config.img_size()
        ))
        .into());
    }
    let image = &input.data[..per];
    let graph = build_graph(&reference, m.name())?;
    let float_outs = graph.eval(image, &mut NoObserver)?;
    let by_name: HashMap<&str, usize> = graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();

    let mut arena = AlignedBytes::new(&vec![0u8; m.arena_len()]);
    let mut cap = Capture {
        model: &m,
        float_outs: &float_outs,
        by_name: &by_name,
        values: Vec::new(),
        rows: Vec::new(),
        ops: 0,
    };
    runtime::run(&m, arena.as_bytes_mut(), Input::F32Nchw(image), &mut cap)?;
    println!(
        "{:>3}  {:40} {:>10} {:>12} {:>9}",
        "#", "op", "cosine", "max |Δ|", "SQNR dB"
    );
    for (i, name, (cos, maxd, sqnr)) in &cap.rows {
        let name = vitae::text::escape(name);
        println!("{i:>3}  {name:40} {cos:>10.6} {maxd:>12.5} {sqnr:>9.2}");
    }
    Ok(())
}
