//! Mixed precision: keep in fp16 the layers whose int8 error hurts the logits most, within a
//! flash budget.
//!
//! Sensitivity of a layer = how much the logits' error (relative squared error against the f32
//! graph, over up to [`EVAL_IMAGES`] calibration images) drops when only that layer runs in fp16.
//! Then the [`GREEDY_CANDIDATES`] most sensitive layers are tried in that order, each kept in fp16
//! when the blob stays within the budget and the error falls.

use super::graph::{Graph, NodeKind};
use super::lower::{NodePrecision, lower};
use super::{Calibration, ImageInput, Options, Progress, QuantizeError};
use crate::engine::Engine;

/// Calibration images used to measure errors (the ranges still come from all of them).
pub const EVAL_IMAGES: usize = 32;
/// Most sensitive layers tried in the greedy pass.
pub const GREEDY_CANDIDATES: usize = 16;

/// Why each fp16 layer was chosen.
#[derive(Clone, Debug)]
pub struct MixedReport {
    /// Relative logits error with every layer int8.
    pub int8_error: f64,
    /// Relative logits error of the chosen mix.
    pub mixed_error: f64,
    /// Blob bytes all-int8.
    pub int8_bytes: usize,
    /// The budget used.
    pub budget_bytes: usize,
    /// Blob bytes of the chosen mix.
    pub mixed_bytes: usize,
    /// Every candidate layer: (name, error with only it in fp16, kept in fp16).
    pub layers: Vec<LayerSensitivity>,
}

/// One candidate layer.
#[derive(Clone, Debug)]
pub struct LayerSensitivity {
    /// Node name.
    pub name: String,
    /// Logits error with only this layer in fp16.
    pub error_alone_fp16: f64,
    /// Whether the mix keeps it in fp16.
    pub fp16: bool,
}

/// Relative squared error of `q` against `f`.
fn rel_error(q: &[f32], f: &[f32]) -> f64 {
    let num: f64 = q.iter().zip(f).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let den: f64 = f
        .iter()
        .map(|b| (*b as f64).powi(2))
        .sum::<f64>()
        .max(1e-30);
    num / den
}

fn candidate(kind: &NodeKind) -> bool {
    matches!(
        kind,
        NodeKind::Conv { .. }
            | NodeKind::Prm { .. }
            | NodeKind::Linear { .. }
            | NodeKind::Attention { .. }
            | NodeKind::Performer { .. }
            | NodeKind::LayerNorm(_)
    )
}

/// Picks the per-node precision for `mixed`.
pub fn select(
    graph: &Graph,
    calib: &Calibration,
    options: &Options,
    images: &[Vec<f32>],
    progress: &mut dyn Progress,
) -> Result<(Vec<NodePrecision>, MixedReport), QuantizeError> {
    let n = graph.nodes.len();
    let images = &images[..images.len().min(EVAL_IMAGES)];
    let mut reference = Vec::new();
    for img in images {
        let outs = graph.eval(img, &mut super::graph::NoObserver)?;
        reference.extend_from_slice(&outs[graph.output]);
    }
    let flat: Vec<f32> = images.iter().flatten().copied().collect();
    let evaluate = |prec: &[NodePrecision]| -> Result<(f64, usize), QuantizeError> {
        let l = lower(
            graph,
            calib,
            prec,
            options.method,
            &ImageInput::F32Nchw,
            &[],
            super::patch::Patch::Off,
        )?;
        let mut engine = Engine::new(&l.blob).map_err(|e| QuantizeError::Run(e.to_string()))?;
        let logits = engine
            .run_batch(&flat)
            .map_err(|e| QuantizeError::Run(e.to_string()))?;
        Ok((rel_error(&logits, &reference), l.blob.len()))
    };
    let all_int8 = vec![NodePrecision::Int8; n];
    let (int8_error, int8_bytes) = evaluate(&all_int8)?;
    let budget = options.flash_budget.unwrap_or(int8_bytes + int8_bytes / 4);
    let candidates: Vec<usize> = (0..n)
        .filter(|&i| candidate(&graph.nodes[i].kind))
        .collect();
    progress.begin("measuring per-layer int8 sensitivity", candidates.len());
    let mut alone = Vec::with_capacity(candidates.len());
    for (k, &i) in candidates.iter().enumerate() {
        let mut p = all_int8.clone();
        p[i] = NodePrecision::Fp16;
        alone.push(evaluate(&p)?.0);
        progress.advance(k + 1);
    }
    progress.end();
    // Most sensitive first: largest error reduction.
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| alone[a].total_cmp(&alone[b]));
    let mut chosen = all_int8.clone();
    let (mut error, mut bytes) = (int8_error, int8_bytes);
    order.truncate(GREEDY_CANDIDATES);
    progress.begin("choosing fp16 layers", order.len());
    for (k, &c) in order.iter().enumerate() {
        progress.advance(k + 1);
        if alone[c] >= int8_error {
            continue; // fp16 alone does not help this layer
        }
        let mut trial = chosen.clone();
        trial[candidates[c]] = NodePrecision::Fp16;
        let (e, b) = evaluate(&trial)?;
        if b <= budget && e < error {
            chosen = trial;
            error = e;
            bytes = b;
        }
    }
    progress.end();
    let layers = candidates
        .iter()
        .zip(&alone)
        .map(|(&i, &e)| LayerSensitivity {
            name: graph.nodes[i].name.clone(),
            error_alone_fp16: e,
            fp16: chosen[i] == NodePrecision::Fp16,
        })
        .collect();
    let report = MixedReport {
        int8_error,
        mixed_error: error,
        int8_bytes,
        budget_bytes: budget,
        mixed_bytes: bytes,
        layers,
    };
    Ok((chosen, report))
}
