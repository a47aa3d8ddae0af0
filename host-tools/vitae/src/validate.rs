//! Checkpoint validation against an architecture: which state_dict keys and shapes the official
//! model has for a config, and a report of every difference (missing, unexpected, misshaped,
//! wrong dtype) and every non-finite weight — all of them at once, so a user fixes a checkpoint
//! in one round instead of one error per run.

use std::collections::BTreeSet;
use std::fmt;

use crate::checkpoint::Checkpoint;
use crate::config::{ModelConfig, RcAttentionKind, RcForm};

/// Whether a state_dict entry is a learnable parameter or a buffer (BatchNorm statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorKind {
    /// `nn.Parameter` (includes the frozen performer `w`).
    Parameter,
    /// Float buffer (`running_mean`, `running_var`).
    Buffer,
    /// int64 scalar buffer `num_batches_tracked`: not used for inference and optional
    /// (checkpoints from PyTorch < 0.4.1 and some exporters omit it).
    Counter,
}

/// One expected state_dict entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedTensor {
    /// Official key, e.g. `layers.0.RC.PCM.0.weight`.
    pub key: String,
    /// Official shape (conv weights OIHW).
    pub shape: Vec<usize>,
    /// Parameter, buffer or counter.
    pub kind: TensorKind,
}

/// The official state_dict of `config`, in `model.state_dict()` order.
///
/// `config` is taken as it is: for a checkpoint, resolve it first with
/// [`ModelConfig::for_checkpoint`] (as [`check_checkpoint`] does), so that a `'transformer'` or
/// `'pooling'` reduction cell gets the keys of the right release.
pub fn expected_state_dict(config: &ModelConfig) -> Vec<ExpectedTensor> {
    let mut entries: Vec<(String, Vec<usize>, TensorKind)> = Vec::new();
    let mut push =
        |key: String, shape: Vec<usize>, kind: TensorKind| entries.push((key, shape, kind));
    if config.class_token() {
        // Registered in ViTAE_ViT_basic.__init__ before the layers.
        layer_norm(&mut push, "fc_norm", config.feature_dim());
    }
    for stage in config.stages() {
        let rc = &stage.rc;
        let p = format!("layers.{}.RC", stage.index);
        let (cin, e, t, g) = (
            stage.input_channels,
            stage.embed_dim,
            stage.token_dim,
            rc.group,
        );
        match rc.form {
            RcForm::Identity => {}
            RcForm::Embedding => {
                // The cell's own parameters first, then PatchEmbed's conv.
                push(
                    format!("{p}.pos_embed"),
                    vec![1, stage.tokens + 1, t],
                    TensorKind::Parameter,
                );
                push(
                    format!("{p}.cls_token"),
                    vec![1, 1, t],
                    TensorKind::Parameter,
                );
                conv(&mut push, &format!("{p}.PRM.proj"), t, cin, rc.ratio);
            }
            RcForm::Prm { attention } => {
                if attention.is_some() {
                    conv(&mut push, &format!("{p}.PCM.0"), e, cin / g, 3);
                    conv(&mut push, &format!("{p}.PCM.2"), e, e / g, 3);
                    batch_norm(&mut push, &format!("{p}.PCM.3"), e);
                    conv(&mut push, &format!("{p}.PCM.5"), t, e / g, 3);
                }
                for branch in 0..rc.dilations.len() {
                    conv(
                        &mut push,
                        &format!("{p}.PRM.convs.{branch}.0"),
                        e,
                        cin,
                        rc.kernel_size,
                    );
                }
                let dim = rc.prm_channels;
                match attention {
                    Some(RcAttentionKind::Performer) => {
                        push(
                            format!("{p}.attn.w"),
                            vec![rc.performer_features, t],
                            TensorKind::Parameter,
                        );
                        linear(&mut push, &format!("{p}.attn.kqv"), 3 * t, dim, true);
                        linear(&mut push, &format!("{p}.attn.proj"), t, t, true);
                        layer_norm(&mut push, &format!("{p}.attn.norm1"), dim);
                        layer_norm(&mut push, &format!("{p}.attn.norm2"), t);
                        linear(&mut push, &format!("{p}.attn.mlp.0"), t, t, true);
                        linear(&mut push, &format!("{p}.attn.mlp.2"), t, t, true);
                    }
                    Some(RcAttentionKind::Transformer) => {
                        layer_norm(&mut push, &format!("{p}.attn.norm1"), dim);
                        linear(&mut push, &format!("{p}.attn.attn.qkv"), 3 * t, dim, false);
                        linear(&mut push, &format!("{p}.attn.attn.proj"), t, t, true);
                        layer_norm(&mut push, &format!("{p}.attn.norm2"), t);
                        linear(
                            &mut push,
                            &format!("{p}.attn.mlp.fc1"),
                            rc.mlp_hidden,
                            t,
                            true,
                        );
                        linear(
                            &mut push,
                            &format!("{p}.attn.mlp.fc2"),
                            t,
                            rc.mlp_hidden,
                            true,
                        );
                    }
                    None => {}
                }
            }
        }
        let nc = &stage.nc;
        for j in 0..nc.depth {
            let p = format!("layers.{}.NC.{j}", stage.index);
            let (h, g) = (nc.mlp_hidden, nc.group);
            layer_norm(&mut push, &format!("{p}.norm1"), t);
            if nc.tokens_type.is_performer() {
                // AttentionPerformer: its own `w` first, then kqv (always with a bias), proj and
                // a LayerNorm `norm1` that its forward never calls.
                push(
                    format!("{p}.attn.w"),
                    vec![nc.performer_features, t],
                    TensorKind::Parameter,
                );
                linear(&mut push, &format!("{p}.attn.kqv"), 3 * t, t, true);
                linear(&mut push, &format!("{p}.attn.proj"), t, t, true);
                layer_norm(&mut push, &format!("{p}.attn.norm1"), t);
            } else {
                linear(&mut push, &format!("{p}.attn.qkv"), 3 * t, t, nc.qkv_bias);
                linear(&mut push, &format!("{p}.attn.proj"), t, t, true);
            }
            layer_norm(&mut push, &format!("{p}.norm2"), t);
            linear(&mut push, &format!("{p}.mlp.fc1"), h, t, true);
            linear(&mut push, &format!("{p}.mlp.fc2"), t, h, true);
            conv(&mut push, &format!("{p}.PCM.0"), h, t / g, 3);
            batch_norm(&mut push, &format!("{p}.PCM.1"), h);
            conv(&mut push, &format!("{p}.PCM.3"), t, h / g, 3);
            if !nc.tokens_type.is_shallow() {
                batch_norm(&mut push, &format!("{p}.PCM.4"), t);
                conv(&mut push, &format!("{p}.PCM.6"), t, t / g, 3);
            }
        }
    }
    if config.num_classes() > 0 {
        linear(
            &mut push,
            "head",
            config.num_classes(),
            config.feature_dim(),
            true,
        );
    }
    entries
        .into_iter()
        .map(|(key, shape, kind)| ExpectedTensor { key, shape, kind })
        .collect()
}

fn conv(
    push: &mut impl FnMut(String, Vec<usize>, TensorKind),
    p: &str,
    out: usize,
    in_per_group: usize,
    k: usize,
) {
    push(
        format!("{p}.weight"),
        vec![out, in_per_group, k, k],
        TensorKind::Parameter,
    );
    push(format!("{p}.bias"), vec![out], TensorKind::Parameter);
}

fn linear(
    push: &mut impl FnMut(String, Vec<usize>, TensorKind),
    p: &str,
    out: usize,
    inp: usize,
    bias: bool,
) {
    push(format!("{p}.weight"), vec![out, inp], TensorKind::Parameter);
    if bias {
        push(format!("{p}.bias"), vec![out], TensorKind::Parameter);
    }
}

fn layer_norm(push: &mut impl FnMut(String, Vec<usize>, TensorKind), p: &str, n: usize) {
    push(format!("{p}.weight"), vec![n], TensorKind::Parameter);
    push(format!("{p}.bias"), vec![n], TensorKind::Parameter);
}

fn batch_norm(push: &mut impl FnMut(String, Vec<usize>, TensorKind), p: &str, n: usize) {
    push(format!("{p}.weight"), vec![n], TensorKind::Parameter);
    push(format!("{p}.bias"), vec![n], TensorKind::Parameter);
    push(format!("{p}.running_mean"), vec![n], TensorKind::Buffer);
    push(format!("{p}.running_var"), vec![n], TensorKind::Buffer);
    push(
        format!("{p}.num_batches_tracked"),
        vec![],
        TensorKind::Counter,
    );
}

/// One difference between a checkpoint and the architecture.
#[derive(Clone, Debug, PartialEq)]
pub enum Problem {
    /// The architecture needs this key; the checkpoint lacks it.
    Missing {
        /// Key.
        key: String,
        /// Expected shape.
        expected: Vec<usize>,
    },
    /// The checkpoint has a key the architecture does not.
    Unexpected {
        /// Key.
        key: String,
        /// Its shape.
        found: Vec<usize>,
    },
    /// Same key, different shape.
    Misshaped {
        /// Key.
        key: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// Shape in the checkpoint.
        found: Vec<usize>,
    },
    /// A weight stored as an integer type, or a counter stored as a float.
    WrongDtype {
        /// Key.
        key: String,
        /// What the architecture needs (`floating point` / `integer`).
        expected: &'static str,
        /// Dtype in the checkpoint.
        found: String,
    },
    /// NaN or ±Inf values in a weight.
    NonFinite {
        /// Key.
        key: String,
        /// How many elements are not finite.
        count: usize,
        /// Multi-index of the first one.
        first_index: Vec<usize>,
        /// Its value (NaN, inf or -inf).
        first_value: f32,
    },
}

impl Problem {
    /// The state_dict key the problem is about.
    pub fn key(&self) -> &str {
        match self {
            Problem::Missing { key, .. }
            | Problem::Unexpected { key, .. }
            | Problem::Misshaped { key, .. }
            | Problem::WrongDtype { key, .. }
            | Problem::NonFinite { key, .. } => key,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing { key, expected } => {
                write!(f, "missing     {key}: expected shape {expected:?}")
            }
            Problem::Unexpected { key, found } => write!(
                f,
                "unexpected  {key}: shape {found:?} (not in the architecture)"
            ),
            Problem::Misshaped {
                key,
                expected,
                found,
            } => {
                write!(
                    f,
                    "misshaped   {key}: expected shape {expected:?}, found {found:?}"
                )
            }
            Problem::WrongDtype {
                key,
                expected,
                found,
            } => write!(f, "wrong dtype {key}: expected {expected}, found {found}"),
            Problem::NonFinite {
                key,
                count,
                first_index,
                first_value,
            } => write!(
                f,
                "non-finite  {key}: {count} value(s) are NaN/Inf, first at index {first_index:?} ({first_value})"
            ),
        }
    }
}

/// Every problem found by [`check_checkpoint`], in expected-key order then unexpected keys.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointReport {
    /// Checkpoint description (path, entry used).
    pub checkpoint: String,
    /// Config description.
    pub config: String,
    /// The problems; never empty when returned as an error.
    pub problems: Vec<Problem>,
}

impl CheckpointReport {
    /// One-line summary, e.g. `2 missing, 1 misshaped`.
    pub fn summary(&self) -> String {
        let count = |pred: fn(&Problem) -> bool| self.problems.iter().filter(|p| pred(p)).count();
        let parts = [
            (count(|p| matches!(p, Problem::Missing { .. })), "missing"),
            (
                count(|p| matches!(p, Problem::Unexpected { .. })),
                "unexpected",
            ),
            (
                count(|p| matches!(p, Problem::Misshaped { .. })),
                "misshaped",
            ),
            (
                count(|p| matches!(p, Problem::WrongDtype { .. })),
                "with the wrong dtype",
            ),
            (
                count(|p| matches!(p, Problem::NonFinite { .. })),
                "with NaN/Inf",
            ),
        ];
        let counts = parts
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect::<Vec<_>>()
            .join(", ");
        // The first key too, so that the one line a user reads names a tensor.
        match self.problems.first() {
            Some(first) => format!("{counts} (first: {})", first.key()),
            None => counts,
        }
    }
}

impl fmt::Display for CheckpointReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checkpoint {} does not match architecture {}: {}",
            self.checkpoint,
            self.config,
            self.summary()
        )?;
        for (i, problem) in self.problems.iter().enumerate() {
            if i + 1 < self.problems.len() {
                writeln!(f, "  {problem}")?;
            } else {
                write!(f, "  {problem}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for CheckpointReport {}

/// Checks `checkpoint` against the official state_dict of `config` and the finiteness of every
/// float tensor. Returns all problems at once.
///
/// A config whose release was only assumed is first resolved for the checkpoint
/// ([`ModelConfig::for_checkpoint`]).
pub fn check_checkpoint(
    config: &ModelConfig,
    checkpoint: &Checkpoint,
) -> Result<(), CheckpointReport> {
    let config = &config.for_checkpoint(checkpoint);
    let expected = expected_state_dict(config);
    let mut problems = Vec::new();
    let expected_keys: BTreeSet<&str> = expected.iter().map(|e| e.key.as_str()).collect();
    for entry in &expected {
        let key = entry.key.clone();
        let Some(found) = checkpoint.shape(&entry.key) else {
            if entry.kind != TensorKind::Counter {
                problems.push(Problem::Missing {
                    key,
                    expected: entry.shape.clone(),
                });
            }
            continue;
        };
        if found != entry.shape.as_slice() {
            problems.push(Problem::Misshaped {
                key: key.clone(),
                expected: entry.shape.clone(),
                found: found.to_vec(),
            });
        }
        let is_float = checkpoint.tensors.contains_key(&entry.key);
        let dtype = checkpoint
            .dtypes
            .get(&entry.key)
            .map_or_else(|| "unknown".to_string(), |d| d.to_string());
        match (entry.kind, is_float) {
            (TensorKind::Counter, true) => problems.push(Problem::WrongDtype {
                key,
                expected: "integer",
                found: dtype,
            }),
            (TensorKind::Parameter | TensorKind::Buffer, false) => {
                problems.push(Problem::WrongDtype {
                    key,
                    expected: "floating point",
                    found: dtype,
                })
            }
            _ => {}
        }
    }
    for key in checkpoint.keys() {
        if !expected_keys.contains(key) {
            let found = checkpoint
                .shape(key)
                .map(<[usize]>::to_vec)
                .unwrap_or_default();
            problems.push(Problem::Unexpected {
                key: key.to_string(),
                found,
            });
        }
    }
    for entry in &expected {
        if let Some(tensor) = checkpoint.tensors.get(&entry.key) {
            let mut non_finite = tensor
                .data
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.is_finite());
            if let Some((first, &value)) = non_finite.next() {
                problems.push(Problem::NonFinite {
                    key: entry.key.clone(),
                    count: 1 + non_finite.count(),
                    first_index: unravel(first, &tensor.shape),
                    first_value: value,
                });
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CheckpointReport {
            checkpoint: checkpoint.origin.to_string(),
            config: config.source_name().to_string(),
            problems,
        })
    }
}

/// Flat C-order index -> multi-index.
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (slot, &dim) in index.iter_mut().zip(shape).rev() {
        if dim > 0 {
            *slot = flat % dim;
            flat /= dim;
        }
    }
    index
}

/// A checkpoint with exactly the official keys and shapes of `config` and plausible random
/// values (the fixtures' recipe: weights with std 1/√fan_in, small biases, non-trivial
/// LayerNorm/BatchNorm statistics, performer `w` rows of norm √m). Deterministic in `seed`.
/// For benchmarks and tests that need a model but not trained weights.
pub fn random_checkpoint(config: &ModelConfig, seed: u64) -> Checkpoint {
    use crate::checkpoint::{CheckpointFormat, CheckpointOrigin, DType, IntTensor, Tensor};
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut uniform = move |lo: f32, hi: f32| {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        lo + (hi - lo) * ((z >> 40) as f32 / (1u64 << 24) as f32)
    };
    let mut checkpoint = Checkpoint::empty(CheckpointOrigin {
        path: format!("<random seed {seed}>").into(),
        format: CheckpointFormat::Safetensors,
        entry: None,
        stripped_prefix: None,
    });
    for entry in expected_state_dict(config) {
        let n: usize = entry.shape.iter().product();
        if entry.kind == TensorKind::Counter {
            checkpoint.insert_int(
                entry.key,
                IntTensor {
                    shape: entry.shape,
                    data: vec![0],
                },
                DType::I64,
            );
            continue;
        }
        let fan_in: usize = entry.shape.iter().skip(1).product::<usize>().max(1);
        let key = entry.key.as_str();
        let bn = key.contains(".PCM.") && entry.shape.len() == 1 && !key.ends_with(".bias")
            || key.ends_with("running_mean")
            || key.ends_with("running_var");
        let data: Vec<f32> = if key.ends_with(".attn.w") {
            let (m, emb) = (entry.shape[0], entry.shape[1]);
            let mut w: Vec<f32> = (0..n).map(|_| uniform(-1.0, 1.0)).collect();
            for row in w.chunks_exact_mut(emb) {
                let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
                row.iter_mut().for_each(|v| *v *= (m as f32).sqrt() / norm);
            }
            w
        } else if key.ends_with("running_var") {
            (0..n).map(|_| uniform(0.4, 2.5)).collect()
        } else if key.ends_with("running_mean") {
            (0..n).map(|_| uniform(-0.5, 0.5)).collect()
        } else if bn && key.ends_with(".weight") {
            (0..n).map(|_| uniform(0.6, 1.4)).collect()
        } else if entry.shape.len() == 1 && key.ends_with(".weight") {
            (0..n).map(|_| uniform(0.7, 1.3)).collect()
        } else if entry.shape.len() == 1 {
            (0..n).map(|_| uniform(-0.1, 0.1)).collect()
        } else {
            let gain = if key.ends_with("attn.kqv.weight") {
                0.5
            } else {
                1.0
            };
            let bound = gain * 3f32.sqrt() / (fan_in as f32).sqrt();
            (0..n).map(|_| uniform(-bound, bound)).collect()
        };
        checkpoint.insert_float(
            entry.key,
            Tensor {
                shape: entry.shape,
                data,
            },
            DType::F32,
        );
    }
    checkpoint
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vitae_t_has_264_keys_and_documented_parameter_count() {
        let config = ModelConfig::preset("vitae-t").unwrap();
        let expected = expected_state_dict(&config);
        assert_eq!(expected.len(), 264);
        let numel = |kind: TensorKind| -> usize {
            expected
                .iter()
                .filter(|e| e.kind == kind)
                .map(|e| e.shape.iter().product::<usize>())
                .sum()
        };
        // Doc §8: 4,886,888 parameter elements; 11,024 buffer elements (incl. 17 counters).
        assert_eq!(numel(TensorKind::Parameter), 4_886_888);
        assert_eq!(
            numel(TensorKind::Buffer) + numel(TensorKind::Counter),
            11_024
        );
        let w = expected
            .iter()
            .find(|e| e.key == "layers.0.RC.attn.w")
            .unwrap();
        assert_eq!(w.shape, vec![32, 64]);
    }

    #[test]
    fn documented_param_counts_of_the_presets() {
        for (name, params) in [
            ("vitae-6m", 6_614_120),
            ("vitae-13m", 10_834_728),
            ("vitae-s", 24_032_136),
        ] {
            let config = ModelConfig::preset(name).unwrap();
            let total: usize = expected_state_dict(&config)
                .iter()
                .filter(|e| e.kind == TensorKind::Parameter)
                .map(|e| e.shape.iter().product::<usize>())
                .sum();
            assert_eq!(total, params, "{name}");
        }
    }

    #[test]
    fn random_checkpoint_passes_validation() {
        let config = ModelConfig::preset("vitae-t").unwrap();
        let checkpoint = random_checkpoint(&config, 1);
        check_checkpoint(&config, &checkpoint).unwrap();
        assert_ne!(
            checkpoint.tensors["head.weight"].data,
            random_checkpoint(&config, 2).tensors["head.weight"].data
        );
    }

    #[test]
    fn unravel_is_c_order() {
        assert_eq!(unravel(5, &[2, 3]), vec![1, 2]);
        assert_eq!(unravel(0, &[]), Vec::<usize>::new());
        assert_eq!(unravel(7, &[2, 2, 2]), vec![1, 1, 1]);
    }
}
