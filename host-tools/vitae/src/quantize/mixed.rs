//! Mixed precision: int4 weights where the logits hardly notice them (to meet a flash budget or
//! use an error allowance), an int16 residual stream after the adds where int8 rounding of the
//! stream hurts, and fp16 for the layers whose int8 error hurts the logits most.
//!
//! The error is the logits' relative squared error against the f32 graph (`Σ (q − f)² / Σ f²`)
//! over up to [`EVAL_IMAGES`] calibration images; a layer's sensitivity is that error with only
//! that layer changed (to fp16, to int4 weights, or a residual add's sum to int16). [`select`]
//! describes the passes.

use super::graph::{Graph, NodeKind};
use super::lower::{NodePrecision, lower};
use super::{Calibration, ImageInput, Options, Progress, QuantizeError};
use crate::engine::Engine;

/// Calibration images used to measure errors (the ranges still come from all of them).
pub const EVAL_IMAGES: usize = 32;
/// Most sensitive layers tried in the greedy pass.
pub const GREEDY_CANDIDATES: usize = 16;

/// What `mixed` chose and why.
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
    /// The error floor asked for (`--max-logit-error`), if any.
    pub max_error: Option<f64>,
    /// Blob bytes of the chosen mix.
    pub mixed_bytes: usize,
    /// Every candidate layer, in graph order.
    pub layers: Vec<LayerSensitivity>,
}

/// One candidate layer.
#[derive(Clone, Debug)]
pub struct LayerSensitivity {
    /// Node name.
    pub name: String,
    /// Logits error with only this layer in fp16 (layers with weights, attention, LayerNorm).
    pub error_alone_fp16: Option<f64>,
    /// Logits error with only this residual add's sum in int16.
    pub error_alone_int16: Option<f64>,
    /// Logits error with only this layer's weights in int4 (linear layers and convolutions).
    pub error_alone_int4: Option<f64>,
    /// Blob bytes int4 weights save on this layer (linear layers and convolutions).
    pub int4_saves: Option<usize>,
    /// The precision chosen.
    pub choice: NodePrecision,
    /// Why, in a few words.
    pub why: String,
}

impl LayerSensitivity {
    /// Whether the mix keeps it in fp16.
    pub fn fp16(&self) -> bool {
        self.choice == NodePrecision::Fp16
    }
}

/// The flash budget is below the smallest blob `mixed` can make.
#[derive(Debug, thiserror::Error)]
#[error(
    "--flash-budget {budget} bytes cannot be met: the smallest mix (every linear layer's and convolution's weights in int4) takes {smallest} bytes (all int8: {int8})"
)]
pub struct BudgetTooSmall {
    /// The budget asked for.
    pub budget: usize,
    /// Bytes of the smallest mix tried.
    pub smallest: usize,
    /// Bytes all-int8.
    pub int8: usize,
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

/// The higher precision a candidate node may take instead of int8 (int4 weights aside): fp16 for
/// the layers, an int16 sum for the residual adds.
fn upgrade(kind: &NodeKind) -> Option<NodePrecision> {
    match kind {
        NodeKind::Conv { .. }
        | NodeKind::Prm { .. }
        | NodeKind::Linear { .. }
        | NodeKind::Attention { .. }
        | NodeKind::Performer { .. }
        | NodeKind::LayerNorm(_) => Some(NodePrecision::Fp16),
        NodeKind::Add => Some(NodePrecision::Int16),
        _ => None,
    }
}

/// Picks the per-node precision for `mixed`, in two greedy passes over measured sensitivities
/// (each trial lowered and run on the host engine, which computes what the device computes):
///
/// 1. int4 weights, linear layers and convolutions least hurt per byte saved first: taken while the blob is over
///    the budget (whatever the error costs: the budget is a hard limit), then, with
///    `--max-logit-error`, while the error stays within it.
/// 2. int16 sums for the residual adds, the [`GREEDY_CANDIDATES`] whose error drops most first:
///    kept when the error falls (no flash cost; the arena grows by the int16 tensors).
/// 3. fp16, the [`GREEDY_CANDIDATES`] layers whose error drops most in fp16 first: kept when the
///    blob stays within the budget and the error falls.
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
    let max_error = options.max_logit_error;
    let candidates: Vec<usize> = (0..n)
        .filter(|&i| upgrade(&graph.nodes[i].kind).is_some())
        .collect();
    let upgrades: Vec<NodePrecision> = candidates
        .iter()
        .filter_map(|&i| upgrade(&graph.nodes[i].kind))
        .collect();
    let int4_able: Vec<bool> = candidates
        .iter()
        .map(|&i| {
            matches!(
                graph.nodes[i].kind,
                NodeKind::Linear { .. } | NodeKind::Conv { .. }
            )
        })
        .collect();
    let int4_wanted = int8_bytes > budget || max_error.is_some();
    let trials = candidates.len()
        + if int4_wanted {
            int4_able.iter().filter(|&&l| l).count()
        } else {
            0
        };
    progress.begin("measuring per-layer sensitivity", trials);
    let mut done = 0;
    let mut alone = Vec::with_capacity(candidates.len());
    let mut alone4: Vec<Option<(f64, usize)>> = vec![None; candidates.len()];
    for (k, &i) in candidates.iter().enumerate() {
        let mut p = all_int8.clone();
        p[i] = upgrades[k];
        alone.push(evaluate(&p)?.0);
        done += 1;
        progress.advance(done);
        if int4_wanted && int4_able[k] {
            p[i] = NodePrecision::Int4;
            let (e, b) = evaluate(&p)?;
            alone4[k] = Some((e, int8_bytes.saturating_sub(b)));
            done += 1;
            progress.advance(done);
        }
    }
    progress.end();
    let mut chosen = all_int8.clone();
    let mut why = vec![String::from("int8: default"); candidates.len()];
    let (mut error, mut bytes) = (int8_error, int8_bytes);

    // Pass 1: int4 weights, cheapest in error per byte saved first.
    let mut order4: Vec<usize> = (0..candidates.len())
        .filter(|&c| alone4[c].is_some_and(|(_, saved)| saved > 0))
        .collect();
    let cost = |c: usize| {
        let (e, saved) = alone4[c].unwrap_or((f64::INFINITY, 1));
        (e - int8_error).max(0.0) / saved as f64
    };
    order4.sort_by(|&a, &b| cost(a).total_cmp(&cost(b)));
    progress.begin("choosing int4 layers", order4.len());
    for (k, &c) in order4.iter().enumerate() {
        progress.advance(k + 1);
        let over = bytes > budget;
        if !over && max_error.is_none() {
            break;
        }
        let mut trial = chosen.clone();
        trial[candidates[c]] = NodePrecision::Int4;
        let (e, b) = evaluate(&trial)?;
        if over {
            why[c] = format!("int4: blob {bytes} B over the {budget} B budget");
        } else if max_error.is_some_and(|m| e <= m) {
            why[c] = format!("int4: error {e:.3e} within --max-logit-error");
        } else {
            why[c] = format!("int8: int4 would raise the error to {e:.3e}");
            continue;
        }
        chosen = trial;
        error = e;
        bytes = b;
    }
    progress.end();
    if bytes > budget {
        return Err(QuantizeError::Budget(BudgetTooSmall {
            budget,
            smallest: bytes,
            int8: int8_bytes,
        }));
    }

    // Passes 2 and 3: int16 sums, then fp16 layers, where they lower the error most, within the
    // budget.
    for (upgrade, what) in [
        (NodePrecision::Int16, "choosing int16 residual adds"),
        (NodePrecision::Fp16, "choosing fp16 layers"),
    ] {
        let mut order: Vec<usize> = (0..candidates.len())
            .filter(|&c| upgrades[c] == upgrade)
            .collect();
        order.sort_by(|&a, &b| alone[a].total_cmp(&alone[b]));
        order.truncate(GREEDY_CANDIDATES);
        progress.begin(what, order.len());
        for (k, &c) in order.iter().enumerate() {
            progress.advance(k + 1);
            if alone[c] >= int8_error {
                continue; // the upgrade alone does not help this node
            }
            let mut trial = chosen.clone();
            trial[candidates[c]] = upgrade;
            let (e, b) = evaluate(&trial)?;
            let name = upgrade.name();
            if b <= budget && e < error {
                why[c] = format!("{name}: error {error:.3e} -> {e:.3e}, blob {b} B");
                chosen = trial;
                error = e;
                bytes = b;
            } else if b > budget && chosen[candidates[c]] == NodePrecision::Int8 {
                why[c] = format!("int8: {name} would take the blob to {b} B, over the budget");
            } else if chosen[candidates[c]] == NodePrecision::Int8 {
                why[c] = format!(
                    "int8: {name} with the others chosen would not lower the error ({e:.3e})"
                );
            }
        }
        progress.end();
    }
    let layers = candidates
        .iter()
        .enumerate()
        .map(|(c, &i)| LayerSensitivity {
            name: graph.nodes[i].name.clone(),
            error_alone_fp16: (upgrades[c] == NodePrecision::Fp16).then_some(alone[c]),
            error_alone_int16: (upgrades[c] == NodePrecision::Int16).then_some(alone[c]),
            error_alone_int4: alone4[c].map(|(e, _)| e),
            int4_saves: alone4[c].map(|(_, s)| s),
            choice: chosen[i],
            why: why[c].clone(),
        })
        .collect();
    let report = MixedReport {
        int8_error,
        mixed_error: error,
        int8_bytes,
        budget_bytes: budget,
        max_error,
        mixed_bytes: bytes,
        layers,
    };
    Ok((chosen, report))
}
