//! From the f32 reference model (weights loaded, checked and BatchNorm-folded) to the float
//! graph, one node per blob op, in an execution order that keeps the arena small: in each cell
//! the PCM branch runs before the PRM/attention path, so the full-size cell input dies earlier.

use super::graph::{Act, Graph, Node, NodeId, NodeKind, Role};
use crate::config::PrmOp;
use crate::reference::ReferenceModel;
use crate::reference::model::{NcAttention, NcPcm, PrmCell, RcAttention, ReductionCell};
use crate::reference::ops::{Conv2d, LayerNorm, Linear, PerformerAttention};

/// Most bytes one evaluation of the float graph may hold ([`Graph::calibration_bytes`]: every
/// node's output, kept for calibration and `vitae diff`, the largest node's working set and a
/// histogram per calibrated tensor). The official variants need at most 363 MiB (ViTAE-S at
/// 384×384); ViTAE-T at 224×224, 62 MiB. Before this ceiling, 12,544 tokens through 512 normal
/// cells from a 5 MB checkpoint took gigabytes (1,625 MiB by this estimate).
pub const MAX_FLOAT_GRAPH_BYTES: u64 = 512 << 20;

/// Why [`build_graph`] refused a model: evaluating its float graph for one image would hold more
/// than [`MAX_FLOAT_GRAPH_BYTES`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{model}: float activations of {:.0} MiB for one image (every intermediate of the float graph, \
     which calibration and `vitae diff` keep, and a histogram per tensor), more than {} MiB \
     (vitae::quantize::build::MAX_FLOAT_GRAPH_BYTES)",
    *.bytes as f64 / (1 << 20) as f64,
    MAX_FLOAT_GRAPH_BYTES >> 20
)]
pub struct FloatGraphTooLarge {
    /// The config (file or preset) of the model.
    pub model: String,
    /// What one evaluation would hold.
    pub bytes: u64,
}

/// Fails when the float graph of `model` is above [`MAX_FLOAT_GRAPH_BYTES`]; for commands that
/// want to refuse before any long work (reading calibration data). Builds the graph once to
/// measure it.
pub fn check_float_graph_size(model: &ReferenceModel) -> Result<(), FloatGraphTooLarge> {
    build_graph(model, "").map(drop)
}

struct Builder {
    nodes: Vec<Node>,
}

impl Builder {
    fn push(
        &mut self,
        name: String,
        kind: NodeKind,
        inputs: Vec<NodeId>,
        (h, w, c): (usize, usize, usize),
        role: Role,
    ) -> NodeId {
        self.nodes.push(Node {
            name,
            kind,
            inputs,
            h,
            w,
            c,
            role,
        });
        self.nodes.len() - 1
    }

    fn shape(&self, id: NodeId) -> (usize, usize, usize) {
        let n = &self.nodes[id];
        (n.h, n.w, n.c)
    }

    fn conv(&mut self, name: String, conv: &Conv2d, x: NodeId, act: Act) -> NodeId {
        let (h, w, _) = self.shape(x);
        let (oh, ow) = conv
            .spec()
            .output_size(h, w)
            .expect("validated conv geometry");
        let c = conv.spec().out_channels;
        let role = if act == Act::None {
            Role::Linear
        } else {
            Role::Activated
        };
        self.push(
            name,
            NodeKind::Conv {
                conv: conv.clone(),
                act,
            },
            vec![x],
            (oh, ow, c),
            role,
        )
    }

    fn linear(&mut self, name: String, linear: Linear, x: NodeId, act: Act, role: Role) -> NodeId {
        let (h, w, _) = self.shape(x);
        let c = linear.out_features;
        self.push(
            name,
            NodeKind::Linear { linear, act },
            vec![x],
            (h, w, c),
            role,
        )
    }

    fn layer_norm(&mut self, name: String, ln: &LayerNorm, x: NodeId) -> NodeId {
        let s = self.shape(x);
        self.push(
            name,
            NodeKind::LayerNorm(ln.clone()),
            vec![x],
            s,
            Role::Normalized,
        )
    }

    /// The rows of `x` behind its first one, as an `h × w` map (on `x`'s grid: the role is
    /// `x`'s).
    fn drop_token(&mut self, name: String, x: NodeId, (h, w): (usize, usize)) -> NodeId {
        let (_, _, c) = self.shape(x);
        let role = self.nodes[x].role;
        self.push(name, NodeKind::DropToken, vec![x], (h, w, c), role)
    }

    fn add(&mut self, name: String, a: NodeId, b: NodeId) -> NodeId {
        let s = self.shape(a);
        self.push(name, NodeKind::Add, vec![a, b], s, Role::Residual)
    }

    /// Rows `[part·n, (part+1)·n)` of a packed projection (qkv or kqv) as their own layer.
    fn rows(linear: &Linear, part: usize, n: usize) -> Linear {
        let k = linear.in_features;
        Linear {
            in_features: k,
            out_features: n,
            weight: linear.weight[part * n * k..(part + 1) * n * k].to_vec(),
            bias: linear
                .bias
                .as_ref()
                .map(|b| b[part * n..(part + 1) * n].to_vec()),
        }
    }

    /// Three linear layers from a packed projection, named `{name}[label]`.
    fn split3(&mut self, name: &str, packed: &Linear, labels: [&str; 3], x: NodeId) -> [NodeId; 3] {
        let n = packed.out_features / 3;
        [0, 1, 2].map(|p| {
            self.linear(
                format!("{name}[{}]", labels[p]),
                Self::rows(packed, p, n),
                x,
                Act::None,
                Role::AttentionInput,
            )
        })
    }

    /// The performer's `y` on `x`: kqv split into k, q and v, then the random-feature attention
    /// (the caller adds proj and, for a reduction cell, the v skip).
    fn performer(&mut self, prefix: &str, a: &PerformerAttention, x: NodeId) -> NodeId {
        let [k, q, v] = self.split3(&format!("{prefix}.kqv"), &a.kqv, ["k", "q", "v"], x);
        let (h, w, _) = self.shape(x);
        self.push(
            format!("{prefix}.prm_exp"),
            NodeKind::Performer {
                w: a.w.clone(),
                features: a.features,
            },
            vec![k, q, v],
            (h, w, a.proj.out_features),
            Role::AttentionOutput,
        )
    }

    fn mlp(
        &mut self,
        prefix: &str,
        fc1: (&str, &Linear),
        fc2: (&str, &Linear),
        x: NodeId,
    ) -> NodeId {
        let h = self.linear(
            format!("{prefix}.{}", fc1.0),
            fc1.1.clone(),
            x,
            Act::Gelu,
            Role::Activated,
        );
        self.linear(
            format!("{prefix}.{}", fc2.0),
            fc2.1.clone(),
            h,
            Act::None,
            Role::Linear,
        )
    }
}

/// Builds the graph of `model`; refuses a graph above [`MAX_FLOAT_GRAPH_BYTES`] (its nodes are
/// only descriptions and weights: nothing is evaluated here).
pub fn build_graph(model: &ReferenceModel, name: &str) -> Result<Graph, FloatGraphTooLarge> {
    let graph = graph_of(model, name);
    let bytes = graph.calibration_bytes();
    if bytes > MAX_FLOAT_GRAPH_BYTES {
        return Err(FloatGraphTooLarge {
            model: model.config().source_name().to_string(),
            bytes,
        });
    }
    Ok(graph)
}

/// The graph of `model`.
///
/// With a class token (`class_token = true`, put in front by an `'embedding'` cell) the token
/// tensors are `1 × (1 + N)` rows, class token first: the attention, the MLP and the residual
/// adds see all rows, a normal cell's PCM reads the spatial rows (a [`NodeKind::DropToken`]) and
/// is added to them only (an add of the PCM output behind a zero row, [`NodeKind::PadToken`]),
/// and the head reads `fc_norm` of the mean of the spatial rows.
fn graph_of(model: &ReferenceModel, name: &str) -> Graph {
    let cfg = model.config();
    let mut b = Builder { nodes: Vec::new() };
    let size = cfg.img_size();
    let mut x = b.push(
        "input".into(),
        NodeKind::Image,
        vec![],
        (size, size, cfg.in_chans()),
        Role::Image,
    );
    // `Some((h, w))` once an `'embedding'` cell has put the class token in front of an `h × w`
    // map of tokens.
    let mut class_token: Option<(usize, usize)> = None;
    for stage in model.stages() {
        let i = stage.info.index;
        let p = format!("layers.{i}.RC");
        match &stage.rc {
            // `nn.Identity` / `'none'`: the activations pass through.
            ReductionCell::Identity => {}
            // timm's PatchEmbed (a convolution, kernel = stride = patch), then the class token in
            // front and the position embedding added.
            ReductionCell::Embedding(e) => {
                let patches = b.conv(format!("{p}.PRM.proj"), &e.proj, x, Act::None);
                let (h, w, c) = b.shape(patches);
                x = b.push(
                    format!("{p}.cls_token"),
                    NodeKind::ClassToken {
                        cls: e.cls_token.clone(),
                        pos: e.pos_embed.clone(),
                    },
                    vec![patches],
                    (1, 1 + h * w, c),
                    Role::Residual,
                );
                class_token = Some((h, w));
            }
            ReductionCell::Prm(rc) => x = reduction_cell(&mut b, &p, rc, x),
        }
        for (j, nc) in stage.ncs.iter().enumerate() {
            let p = format!("layers.{i}.NC.{j}");
            let spatial = match class_token {
                Some(map) => b.drop_token(format!("{p}.spatial"), x, map),
                None => x,
            };
            let pcm = match &nc.pcm {
                NcPcm::Full(convs) => {
                    let c0 = b.conv(format!("{p}.PCM.0"), &convs[0], spatial, Act::Silu);
                    let c1 = b.conv(format!("{p}.PCM.3"), &convs[1], c0, Act::Silu);
                    b.conv(format!("{p}.PCM.6"), &convs[2], c1, Act::Silu)
                }
                // `*_shallow`: no activation after the last conv.
                NcPcm::Shallow(convs) => {
                    let c0 = b.conv(format!("{p}.PCM.0"), &convs[0], spatial, Act::Silu);
                    b.conv(format!("{p}.PCM.3"), &convs[1], c0, Act::None)
                }
            };
            let ln1 = b.layer_norm(format!("{p}.norm1"), &nc.norm1, x);
            let o = match &nc.attention {
                NcAttention::Mhsa(a) => {
                    let [q, k, v] =
                        b.split3(&format!("{p}.attn.qkv"), &a.qkv, ["q", "k", "v"], ln1);
                    let width = a.proj.in_features;
                    let att = b.push(
                        format!("{p}.attn.softmax"),
                        NodeKind::Attention {
                            heads: a.heads,
                            head_dim: width / a.heads,
                            scale: a.scale,
                        },
                        vec![q, k, v],
                        b.shape(x),
                        Role::AttentionOutput,
                    );
                    b.linear(
                        format!("{p}.attn.proj"),
                        a.proj.clone(),
                        att,
                        Act::None,
                        Role::Linear,
                    )
                }
                // AttentionPerformer: `proj(performer(kqv(x)))`, no v skip.
                NcAttention::Performer(a) => {
                    let y = b.performer(&format!("{p}.attn"), a, ln1);
                    b.linear(
                        format!("{p}.attn.proj"),
                        a.proj.clone(),
                        y,
                        Act::None,
                        Role::Linear,
                    )
                }
            };
            let x1 = b.add(format!("{p}.add_attn"), x, o);
            // `x[:, 1:] += convX`: the PCM output behind a zero row for the class token.
            let pcm = match class_token {
                Some(_) => {
                    let (_, _, c) = b.shape(x);
                    let role = b.nodes[pcm].role;
                    b.push(
                        format!("{p}.PCM.pad"),
                        NodeKind::PadToken,
                        vec![pcm],
                        (1, b.nodes[x].tokens(), c),
                        role,
                    )
                }
                None => pcm,
            };
            let x2 = b.add(format!("{p}.add_pcm"), x1, pcm);
            let ln2 = b.layer_norm(format!("{p}.norm2"), &nc.norm2, x2);
            let mlp = b.mlp(
                &format!("{p}.mlp"),
                ("fc1", &nc.mlp.fc1),
                ("fc2", &nc.mlp.fc2),
                ln2,
            );
            x = b.add(format!("{p}.add_mlp"), x2, mlp);
        }
    }
    let (_, _, c) = b.shape(x);
    // `class_token = true`: the mean of `x[:, 1:]`, the rows behind the class token (without
    // one in front, which the config allows only without normal cells, the official code still
    // leaves out row 0).
    let pooled_rows = if cfg.class_token() {
        let map = class_token.unwrap_or((1, b.nodes[x].tokens().saturating_sub(1)));
        b.drop_token("pool.spatial".into(), x, map)
    } else {
        x
    };
    // Without a classifier (`num_classes = 0`) the features are the output.
    let features_role = |last: bool| if last { Role::Logits } else { Role::Pooled };
    let fc_norm = model.fc_norm();
    let pooled = b.push(
        "pool".into(),
        NodeKind::MeanPool,
        vec![pooled_rows],
        (1, 1, c),
        features_role(fc_norm.is_none() && model.head().is_none()),
    );
    let features = match fc_norm {
        Some(norm) => b.push(
            "fc_norm".into(),
            NodeKind::LayerNorm(norm.clone()),
            vec![pooled],
            (1, 1, c),
            if model.head().is_none() {
                Role::Logits
            } else {
                Role::Normalized
            },
        ),
        None => pooled,
    };
    let output = match model.head() {
        Some(head) => b.linear(
            "head".into(),
            head.clone(),
            features,
            Act::None,
            Role::Logits,
        ),
        None => features,
    };
    Graph {
        nodes: b.nodes,
        output,
        name: name.to_string(),
    }
}

/// A PRM-based reduction cell on `x`: the optional max-pool, the PRM (branches concatenated in
/// one op, or each branch a convolution with GELU and the branches added), and, unless the
/// cell is `performer_less`, the PCM beside the token attention (performer or transformer, both
/// with the v skip), then the MLP.
fn reduction_cell(b: &mut Builder, p: &str, rc: &PrmCell, x: NodeId) -> NodeId {
    // 'pooling': MaxPool2d(r) first; the PRM (stride 1) and the PCM read the pooled map.
    let x = match rc.pool {
        Some(r) => {
            let (h, w, c) = b.shape(x);
            let role = b.nodes[x].role;
            b.push(
                format!("{p}.pool"),
                NodeKind::MaxPool {
                    kernel: (r, r),
                    stride: (r, r),
                    padding: (0, 0),
                },
                vec![x],
                (h / r, w / r, c),
                role,
            )
        }
        None => x,
    };
    let pcm = rc.mixer.as_ref().map(|m| {
        let c0 = b.conv(format!("{p}.PCM.0"), &m.pcm[0], x, Act::Silu);
        let c1 = b.conv(format!("{p}.PCM.2"), &m.pcm[1], c0, Act::Silu);
        b.conv(format!("{p}.PCM.5"), &m.pcm[2], c1, Act::Silu)
    });
    let prm = match rc.op {
        PrmOp::Cat => {
            let (h, w, _) = b.shape(x);
            let s = rc.prm[0].spec();
            let (oh, ow) = s.output_size(h, w).expect("validated PRM geometry");
            b.push(
                format!("{p}.PRM"),
                NodeKind::Prm {
                    branches: rc.prm.clone(),
                },
                vec![x],
                (oh, ow, s.out_channels * rc.prm.len()),
                Role::Activated,
            )
        }
        // 'sum': each dilation's conv with its GELU, then the branches added in order.
        PrmOp::Sum => {
            let mut sum = b.conv(format!("{p}.PRM.convs.0"), &rc.prm[0], x, Act::Gelu);
            for (d, conv) in rc.prm.iter().enumerate().skip(1) {
                let branch = b.conv(format!("{p}.PRM.convs.{d}"), conv, x, Act::Gelu);
                sum = b.add(format!("{p}.PRM.sum{d}"), sum, branch);
            }
            sum
        }
    };
    let (Some(m), Some(pcm)) = (&rc.mixer, pcm) else {
        return prm;
    };
    let (oh, ow, _) = b.shape(prm);
    let ln1 = b.layer_norm(format!("{p}.attn.norm1"), &m.norm1, prm);
    let attn = match &m.attention {
        RcAttention::Performer(a) => {
            let y = b.performer(&format!("{p}.attn"), a, ln1);
            let o = b.linear(
                format!("{p}.attn.proj"),
                a.proj.clone(),
                y,
                Act::None,
                Role::Linear,
            );
            // Token_performer's v skip: v is the kqv layer's third part.
            let v = b.nodes[y].inputs[2];
            b.add(format!("{p}.attn.skip_v"), v, o)
        }
        RcAttention::Transformer(a) => {
            let [q, k, v] = b.split3(&format!("{p}.attn.attn.qkv"), &a.qkv, ["q", "k", "v"], ln1);
            let width = a.proj.out_features;
            let hd = width / a.heads;
            let att = b.push(
                format!("{p}.attn.attn.softmax"),
                NodeKind::Attention {
                    heads: a.heads,
                    head_dim: hd,
                    scale: (hd as f32).powf(-0.5),
                },
                vec![q, k, v],
                (oh, ow, width),
                Role::AttentionOutput,
            );
            let o = b.linear(
                format!("{p}.attn.attn.proj"),
                a.proj.clone(),
                att,
                Act::None,
                Role::Linear,
            );
            b.add(format!("{p}.attn.skip_v"), v, o)
        }
    };
    let r = b.add(format!("{p}.add_pcm"), attn, pcm);
    let ln2 = b.layer_norm(format!("{p}.attn.norm2"), &m.norm2, r);
    let (l1, l2) = match &m.attention {
        RcAttention::Performer(_) => ("mlp.0", "mlp.2"),
        RcAttention::Transformer(_) => ("mlp.fc1", "mlp.fc2"),
    };
    let mlp = b.mlp(
        &format!("{p}.attn"),
        (l1, &m.mlp.fc1),
        (l2, &m.mlp.fc2),
        ln2,
    );
    b.add(format!("{p}.add_mlp"), r, mlp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::validate::random_checkpoint;

    fn model(kwargs: &str) -> ReferenceModel {
        let config = ModelConfig::from_kwargs_json(kwargs, "t.json").unwrap();
        let checkpoint = random_checkpoint(&config, 1);
        ReferenceModel::new(config, &checkpoint).unwrap()
    }

    /// Every option of the official code (pooling cells, summed PRMs, identity cells, the
    /// embedding cell with the class token and `fc_norm`, performer and shallow normal cells, no
    /// classifier): the float graph computes what the reference computes.
    #[test]
    fn every_option_builds_a_graph_that_matches_the_reference() {
        for kwargs in [
            r#"{"img_size": 32, "stages": 3, "embed_dims": [8, 8, 16], "token_dims": [8, 16, 16],
                "downsample_ratios": [4, 2, 2], "kernel_size": [7, 3, 3], "RC_heads": [1, 2, 1],
                "dilations": [[1, 2], [1, 2], [1, 2]], "NC_heads": [1, 2, 2], "NC_group": [1, 4, 4],
                "RC_tokens_type": ["pooling", "pooling", "performer_less"], "RC_op": ["sum", "cat", "sum"],
                "NC_depth": [0, 1, 1], "mlp_ratio": 2.0, "num_classes": 3}"#,
            r#"{"img_size": 32, "stages": 3, "embed_dims": [8, 8, 16], "token_dims": [8, 16, 16],
                "downsample_ratios": [4, 2, 1], "kernel_size": [7, 3, 3], "RC_heads": [1, 1, 1],
                "dilations": [[1, 2], [1, 2], [1, 2]], "NC_heads": [1, 1, 2], "NC_group": [1, 4, 4],
                "RC_tokens_type": ["performer", "performer_less", "none"],
                "NC_tokens_type": ["transformer", "performer_shallow", "transformer_shallow"],
                "NC_depth": [0, 1, 1], "mlp_ratio": 2.0, "num_classes": 0}"#,
            r#"{"img_size": 32, "stages": 3, "embed_dims": 16, "token_dims": [16, 16, 16],
                "downsample_ratios": [8, 1, 1], "RC_tokens_type": ["embedding", "none", "none"],
                "NC_tokens_type": ["performer", "transformer_shallow", "performer_shallow"],
                "NC_depth": [1, 1, 1], "NC_heads": [1, 2, 1], "NC_group": 4, "mlp_ratio": 2.0,
                "class_token": true, "num_classes": 3}"#,
            r#"{"img_size": 32, "stages": 2, "embed_dims": 16, "token_dims": [16, 16],
                "downsample_ratios": [4, 1], "RC_tokens_type": ["embedding", "none"],
                "NC_tokens_type": ["transformer", "transformer"],
                "NC_depth": [1, 0], "NC_heads": [2, 1], "NC_group": 4, "mlp_ratio": 2.0,
                "class_token": true, "num_classes": 0}"#,
        ] {
            let m = model(kwargs);
            let graph = build_graph(&m, "m").unwrap();
            let image: Vec<f32> = (0..3 * 32 * 32)
                .map(|i| ((i % 17) as f32 - 8.0) / 9.0)
                .collect();
            let outs = graph
                .eval(&image, &mut super::super::graph::NoObserver)
                .unwrap();
            let reference = m.forward(&image).unwrap();
            let got = &outs[graph.output];
            assert_eq!(got.len(), reference.len());
            for (a, b) in got.iter().zip(&reference) {
                assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn the_official_variants_float_graphs_fit_the_ceiling_at_224_and_384() {
        let mut largest = (0, String::new());
        for (name, embed, token, depth, heads, mlp, group) in [
            ("T", [64, 64, 128], [64, 64, 256], 7, 4, 2.0, 64),
            ("6M", [64, 64, 128], [64, 64, 256], 10, 4, 2.0, 64),
            ("13M", [64, 64, 160], [64, 64, 320], 11, 5, 2.0, 64),
            ("S", [64, 64, 192], [96, 192, 384], 14, 6, 3.0, 96),
        ] {
            for img in [224, 384] {
                let kwargs = serde_json::json!({
                    "img_size": img, "stages": 3, "embed_dims": embed, "token_dims": token,
                    "RC_tokens_type": ["performer", "performer", "performer_less"],
                    "NC_tokens_type": "transformer", "downsample_ratios": [4, 2, 2],
                    "NC_depth": [0, 0, depth], "NC_heads": [1, 1, heads], "RC_heads": [1, 1, 1],
                    "mlp_ratio": mlp, "NC_group": [1, 1, group], "RC_group": [1, 1, 1],
                });
                let m = model(&kwargs.to_string());
                let bytes = build_graph(&m, "m").unwrap().calibration_bytes();
                println!(
                    "ViTAE-{name}@{img}: {:.1} MiB",
                    bytes as f64 / (1 << 20) as f64
                );
                assert!(bytes <= MAX_FLOAT_GRAPH_BYTES * 3 / 4, "ViTAE-{name}@{img}");
                if bytes > largest.0 {
                    largest = (bytes, format!("ViTAE-{name}@{img}"));
                }
            }
        }
        println!("largest: {} ({} bytes)", largest.1, largest.0);
    }

    #[test]
    fn the_float_graph_estimate_covers_what_an_evaluation_holds() {
        // Every output is kept: the estimate is at least their sum, plus a histogram each.
        let m = model(
            r#"{"img_size": 32, "stages": 2, "embed_dims": [8, 8], "token_dims": [16, 16],
                "downsample_ratios": [4, 2], "kernel_size": [7, 3], "dilations": [[1, 2], [1, 2]],
                "RC_tokens_type": ["performer", "performer_less"], "NC_depth": [0, 2],
                "NC_heads": [1, 2], "NC_group": [1, 4], "mlp_ratio": 2.0, "num_classes": 3}"#,
        );
        let graph = build_graph(&m, "m").unwrap();
        let image = vec![0.1; 3 * 32 * 32];
        let outs = graph
            .eval(&image, &mut super::super::graph::NoObserver)
            .unwrap();
        let held: u64 = outs.iter().map(|o| 4 * o.len() as u64).sum();
        let histograms = graph.nodes.len() as u64 * super::super::calib::HISTOGRAM_BYTES;
        assert!(graph.calibration_bytes() > held + histograms);
    }

    #[test]
    fn the_current_release_transformer_cell_is_a_prm_only_cell_it_can_lower() {
        // A 'transformer' cell whose checkpoint has no PCM or attention keys: the current
        // release's PRM-only cell, lowered like performer_less.
        let config = ModelConfig::from_kwargs_json(
            r#"{"img_size": 32, "stages": 2, "embed_dims": [8, 8], "token_dims": [16, 16],
                "downsample_ratios": [4, 2], "kernel_size": [7, 3], "dilations": [[1, 2], [1, 2]],
                "RC_tokens_type": ["performer", "transformer"], "NC_depth": [0, 1],
                "NC_heads": [1, 2], "NC_group": [1, 4], "mlp_ratio": 2.0, "num_classes": 3}"#,
            "t.json",
        )
        .unwrap();
        let mut checkpoint = random_checkpoint(&config, 1);
        let mixer: Vec<String> = checkpoint
            .keys()
            .filter(|k| k.starts_with("layers.1.RC.PCM.") || k.starts_with("layers.1.RC.attn."))
            .map(str::to_string)
            .collect();
        for key in mixer {
            checkpoint.remove(&key);
        }
        let m = ReferenceModel::new(config, &checkpoint).unwrap();
        assert_eq!(m.config().release(), Some(crate::config::Release::Current));
        let graph = build_graph(&m, "m").unwrap();
        assert!(
            !graph
                .nodes
                .iter()
                .any(|n| n.name.starts_with("layers.1.RC.attn"))
        );
        let image = vec![0.2; 3 * 32 * 32];
        let outs = graph
            .eval(&image, &mut super::super::graph::NoObserver)
            .unwrap();
        let logits = &outs[graph.output];
        let reference = m.forward(&image).unwrap();
        for (a, b) in logits.iter().zip(&reference) {
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
}
