//! The float graph the quantizer works on: the model as a list of nodes in execution order,
//! each one blob op, with float weights (BatchNorm already folded). Built from a
//! [`ReferenceModel`](crate::reference::ReferenceModel), evaluated in f32 for calibration and for
//! `vitae diff`, then lowered to a blob.

use crate::reference::ops::{
    Conv2d, FeatureMap, LayerNorm, Linear, OpError, gelu_inplace, max_pool2d_window, mean_pool,
    silu_inplace,
};

/// Index of a node; node outputs are the graph's tensors.
pub type NodeId = usize;

/// Activation fused into a conv or linear node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// Identity.
    None,
    /// GELU (exact erf).
    Gelu,
    /// SiLU.
    Silu,
}

/// What a node computes.
#[derive(Clone, Debug)]
pub enum NodeKind {
    /// The input image (`h × w × c`).
    Image,
    /// Convolution + activation.
    Conv {
        /// Weights and bias.
        conv: Conv2d,
        /// Fused activation.
        act: Act,
    },
    /// PRM: dilated convs, each followed by GELU, concatenated channel-wise in branch order.
    Prm {
        /// One conv per dilation.
        branches: Vec<Conv2d>,
    },
    /// Linear + activation.
    Linear {
        /// Weights and bias.
        linear: Linear,
        /// Fused activation.
        act: Act,
    },
    /// LayerNorm over channels.
    LayerNorm(LayerNorm),
    /// Multi-head softmax attention; inputs (q, k, v), heads concatenated.
    Attention {
        /// Heads.
        heads: usize,
        /// Channels per head.
        head_dim: usize,
        /// Logit scale (`head_dim^-0.5`).
        scale: f32,
    },
    /// Performer attention `y`; inputs (k, q, v) (the caller adds proj and the v skip).
    Performer {
        /// `features × emb`.
        w: Vec<f32>,
        /// Random features m.
        features: usize,
    },
    /// Element-wise sum of two inputs.
    Add,
    /// Mean over tokens.
    MeanPool,
    /// Max over `kernel` windows, `stride` apart, `padding` (never the maximum) around the map
    /// (PyTorch's `MaxPool2d`; the `'pooling'` Reduction Cell). `(rows, columns)` each.
    MaxPool {
        /// Window.
        kernel: (usize, usize),
        /// Step between windows.
        stride: (usize, usize),
        /// Implicit −∞ padding.
        padding: (usize, usize),
    },
    /// The `'embedding'` cell's class token: `cat(cls, x) + pos`, `1 × (1 + N)` rows out, class
    /// token first.
    ClassToken {
        /// `cls_token` (one row).
        cls: Vec<f32>,
        /// `pos_embed` (`1 + N` rows).
        pos: Vec<f32>,
    },
    /// Rows `1..` of the input (the spatial tokens without the class token), as the node's
    /// `h × w` map.
    DropToken,
    /// A zero row in front of the input's rows: a spatial branch added to the rows behind the
    /// class token only (`x[:, 1:] += convX`) is an add of the padded branch.
    PadToken,
}

/// How a tensor is used, which decides how its range is calibrated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The input image.
    Image,
    /// Output of a conv/linear without activation.
    Linear,
    /// Output after GELU/SiLU.
    Activated,
    /// q, k or v of an attention (quantized symmetric).
    AttentionInput,
    /// Output of an attention / performer.
    AttentionOutput,
    /// Residual sum (LayerNorm inputs; outliers matter).
    Residual,
    /// LayerNorm output.
    Normalized,
    /// Mean-pooled features.
    Pooled,
    /// The logits.
    Logits,
}

/// One node.
#[derive(Clone, Debug)]
pub struct Node {
    /// Name (state_dict module path where there is one, e.g. `layers.0.RC.PCM.0`).
    pub name: String,
    /// Computation.
    pub kind: NodeKind,
    /// Input nodes.
    pub inputs: Vec<NodeId>,
    /// Output height.
    pub h: usize,
    /// Output width.
    pub w: usize,
    /// Output channels.
    pub c: usize,
    /// Calibration role of the output.
    pub role: Role,
}

impl Node {
    /// Output elements.
    pub fn elements(&self) -> usize {
        self.h * self.w * self.c
    }

    /// Tokens of the output.
    pub fn tokens(&self) -> usize {
        self.h * self.w
    }

    /// Multiply-accumulates.
    pub fn macs(&self, graph: &Graph) -> u64 {
        let input = |k: usize| &graph.nodes[self.inputs[k]];
        match &self.kind {
            NodeKind::Conv { conv, .. } => conv_macs(conv, self),
            NodeKind::Prm { branches } => {
                let per = self.c / branches.len().max(1);
                branches
                    .iter()
                    .map(|b| (self.tokens() * per) as u64 * filter_len(b) as u64)
                    .sum()
            }
            NodeKind::Linear { linear, .. } => {
                (self.tokens() * linear.in_features * linear.out_features) as u64
            }
            NodeKind::Attention { .. } => 2 * (self.tokens() * self.tokens() * self.c) as u64,
            // Feature maps of k and q, kptv, output (4·N·e·m) and the normalizer D (N·m), as the
            // reference MAC counts (fixtures' config.json) have them.
            NodeKind::Performer { features, .. } => {
                (input(0).tokens() * features * (4 * self.c + 1)) as u64
            }
            _ => 0,
        }
    }

    /// Weight parameters (for size reports).
    pub fn weight_count(&self) -> usize {
        match &self.kind {
            NodeKind::Conv { conv, .. } => conv.weight_oihw().len(),
            NodeKind::Prm { branches } => branches.iter().map(|b| b.weight_oihw().len()).sum(),
            NodeKind::Linear { linear, .. } => linear.weight.len(),
            _ => 0,
        }
    }
}

fn filter_len(conv: &Conv2d) -> usize {
    let s = conv.spec();
    s.kernel[0] * s.kernel[1] * s.in_per_group()
}

fn conv_macs(conv: &Conv2d, node: &Node) -> u64 {
    (node.tokens() * node.c) as u64 * filter_len(conv) as u64
}

/// The whole model.
#[derive(Clone, Debug)]
pub struct Graph {
    /// Nodes in execution order; node 0 is the image.
    pub nodes: Vec<Node>,
    /// The logits node.
    pub output: NodeId,
    /// Model name.
    pub name: String,
}

/// What the float evaluation reports for each node: its output, and for activated nodes the
/// values before the activation (per PRM branch).
pub trait FloatObserver {
    /// Called once per node and image.
    fn node(&mut self, id: NodeId, node: &Node, pre_activation: &[Vec<f32>], output: &[f32]);
}

/// A [`FloatObserver`] that ignores everything.
#[derive(Debug, Default)]
pub struct NoObserver;

impl FloatObserver for NoObserver {
    fn node(&mut self, _: NodeId, _: &Node, _: &[Vec<f32>], _: &[f32]) {}
}

impl Graph {
    /// Bytes one [`Graph::eval`] holds for calibration or `vitae diff`: every node's f32 output
    /// (all kept to the end), the largest node's own working set (its input copied, a
    /// convolution's im2col columns, the output with its pre-activation copies), and a
    /// [`super::calib`] histogram per calibrated tensor. An estimate from the shapes, computed
    /// without evaluating anything.
    pub fn calibration_bytes(&self) -> u64 {
        let (mut outputs, mut work, mut tensors) = (0u64, 0u64, 0u64);
        for node in &self.nodes {
            let out = node.elements() as u64;
            outputs = outputs.saturating_add(out);
            let input = node
                .inputs
                .first()
                .map_or(0, |&i| self.nodes[i].elements() as u64);
            let columns = |conv: &Conv2d| {
                (node.tokens() as u64)
                    .saturating_mul(filter_len(conv) as u64 * conv.spec().groups as u64)
            };
            let (scratch, pre) = match &node.kind {
                NodeKind::Conv { conv, act } => (columns(conv), u64::from(*act != Act::None)),
                NodeKind::Prm { branches } => (
                    branches.iter().map(columns).max().unwrap_or(0),
                    branches.len() as u64,
                ),
                NodeKind::Linear { act, .. } => (0, u64::from(*act != Act::None)),
                // f64 sums of the performer: `features × (emb + 1)`.
                NodeKind::Performer { w, .. } => (2 * w.len() as u64, 0),
                _ => (0, 0),
            };
            let here = [input, scratch, out.saturating_mul(3)]
                .iter()
                .fold(0u64, |a, &v| a.saturating_add(v));
            work = work.max(here);
            tensors += 1 + pre;
        }
        outputs
            .saturating_add(work)
            .saturating_mul(4)
            .saturating_add(tensors.saturating_mul(super::calib::HISTOGRAM_BYTES))
    }

    /// Total multiply-accumulates.
    pub fn macs(&self) -> u64 {
        self.nodes.iter().map(|n| n.macs(self)).sum()
    }

    /// Evaluates the graph in f32 on one CHW image; returns every node's output (token layout).
    pub fn eval(
        &self,
        image_chw: &[f32],
        observer: &mut dyn FloatObserver,
    ) -> Result<Vec<Vec<f32>>, OpError> {
        let mut outs: Vec<Vec<f32>> = Vec::with_capacity(self.nodes.len());
        for (id, node) in self.nodes.iter().enumerate() {
            let fmap = |k: usize| -> Result<FeatureMap, OpError> {
                let src = &self.nodes[node.inputs[k]];
                FeatureMap::new(src.h, src.w, src.c, outs[node.inputs[k]].clone())
            };
            let mut pre = Vec::new();
            let out = match &node.kind {
                NodeKind::Image => FeatureMap::from_chw(node.c, node.h, node.w, image_chw)?.data,
                NodeKind::Conv { conv, act } => {
                    let y = conv.forward(&fmap(0)?)?.data;
                    activate(y, *act, &mut pre)
                }
                NodeKind::Prm { branches } => {
                    let x = fmap(0)?;
                    let per = node.c / branches.len();
                    let mut out = vec![0.0; node.elements()];
                    for (b, conv) in branches.iter().enumerate() {
                        let y = conv.forward(&x)?.data;
                        pre.push(y.clone());
                        let mut g = y;
                        gelu_inplace(&mut g);
                        for (dst, src) in out.chunks_exact_mut(node.c).zip(g.chunks_exact(per)) {
                            dst[b * per..(b + 1) * per].copy_from_slice(src);
                        }
                    }
                    out
                }
                NodeKind::Linear { linear, act } => {
                    let y = linear.forward(&outs[node.inputs[0]])?;
                    activate(y, *act, &mut pre)
                }
                NodeKind::LayerNorm(ln) => ln.forward(&outs[node.inputs[0]])?,
                NodeKind::Attention {
                    heads,
                    head_dim,
                    scale,
                } => attention(
                    &outs[node.inputs[0]],
                    &outs[node.inputs[1]],
                    &outs[node.inputs[2]],
                    node.tokens(),
                    *heads,
                    *head_dim,
                    *scale,
                ),
                NodeKind::Performer { w, features } => performer(
                    &outs[node.inputs[0]],
                    &outs[node.inputs[1]],
                    &outs[node.inputs[2]],
                    node.tokens(),
                    node.c,
                    w,
                    *features,
                ),
                NodeKind::Add => outs[node.inputs[0]]
                    .iter()
                    .zip(&outs[node.inputs[1]])
                    .map(|(a, b)| a + b)
                    .collect(),
                NodeKind::MeanPool => mean_pool(&outs[node.inputs[0]], node.c)?,
                NodeKind::MaxPool {
                    kernel,
                    stride,
                    padding,
                } => {
                    // The reference's max-pool (NaN wins, as on the device and in PyTorch).
                    let y = max_pool2d_window(&fmap(0)?, *kernel, *stride, *padding)?;
                    if (y.height, y.width, y.channels) != (node.h, node.w, node.c) {
                        return Err(OpError {
                            op: "max_pool2d",
                            message: format!(
                                "node {id} is {}x{}x{}, its window gives {}x{}x{}",
                                node.h, node.w, node.c, y.height, y.width, y.channels
                            ),
                        });
                    }
                    y.data
                }
                NodeKind::ClassToken { cls, pos } => {
                    let mut rows = cls.clone();
                    rows.extend_from_slice(&outs[node.inputs[0]]);
                    for (r, p) in rows.iter_mut().zip(pos) {
                        *r += p;
                    }
                    rows
                }
                NodeKind::DropToken => outs[node.inputs[0]]
                    .get(node.c..)
                    .unwrap_or_default()
                    .to_vec(),
                NodeKind::PadToken => {
                    let mut rows = vec![0.0; node.c];
                    rows.extend_from_slice(&outs[node.inputs[0]]);
                    rows
                }
            };
            observer.node(id, node, &pre, &out);
            outs.push(out);
        }
        Ok(outs)
    }
}

fn activate(mut y: Vec<f32>, act: Act, pre: &mut Vec<Vec<f32>>) -> Vec<f32> {
    match act {
        Act::None => y,
        Act::Gelu => {
            pre.push(y.clone());
            gelu_inplace(&mut y);
            y
        }
        Act::Silu => {
            pre.push(y.clone());
            silu_inplace(&mut y);
            y
        }
    }
}

/// Softmax attention on separate q, k, v (`tokens × heads·head_dim`), in f64 accumulation for a
/// calibration reference that does not itself add error.
fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n: usize,
    heads: usize,
    hd: usize,
    scale: f32,
) -> Vec<f32> {
    let c = heads * hd;
    let mut out = vec![0.0f32; n * c];
    let mut s = vec![0.0f64; n];
    for h in 0..heads {
        for i in 0..n {
            let qi = &q[i * c + h * hd..][..hd];
            let mut m = f64::NEG_INFINITY;
            for (j, sj) in s.iter_mut().enumerate() {
                let kj = &k[j * c + h * hd..][..hd];
                *sj = qi
                    .iter()
                    .zip(kj)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
                    * scale as f64;
                m = m.max(*sj);
            }
            let mut l = 0.0;
            for sj in s.iter_mut() {
                *sj = (*sj - m).exp();
                l += *sj;
            }
            for d in 0..hd {
                let acc: f64 = (0..n).map(|j| s[j] * v[j * c + h * hd + d] as f64).sum();
                out[i * c + h * hd + d] = (acc / l) as f32;
            }
        }
    }
    out
}

/// Performer `y` (without proj and skip), f64 accumulation.
fn performer(k: &[f32], q: &[f32], v: &[f32], n: usize, e: usize, w: &[f32], m: usize) -> Vec<f32> {
    let phi = |z: &[f32]| -> Vec<f64> {
        let half = z.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / 2.0;
        w.chunks_exact(e)
            .map(|row| {
                (row.iter()
                    .zip(z)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
                    - half)
                    .exp()
                    / (m as f64).sqrt()
            })
            .collect()
    };
    let mut ksum = vec![0.0f64; m];
    let mut kptv = vec![0.0f64; e * m];
    for t in 0..n {
        let kp = phi(&k[t * e..][..e]);
        for i in 0..m {
            ksum[i] += kp[i];
            for ee in 0..e {
                kptv[ee * m + i] += v[t * e + ee] as f64 * kp[i];
            }
        }
    }
    let mut y = vec![0.0f32; n * e];
    for t in 0..n {
        let qp = phi(&q[t * e..][..e]);
        let d: f64 = qp.iter().zip(&ksum).map(|(a, b)| a * b).sum::<f64>() + 1e-8;
        for ee in 0..e {
            let num: f64 = (0..m).map(|i| qp[i] * kptv[ee * m + i]).sum();
            y[t * e + ee] = (num / d) as f32;
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(
        name: &str,
        kind: NodeKind,
        inputs: Vec<NodeId>,
        (h, w, c): (usize, usize, usize),
    ) -> Node {
        Node {
            name: name.into(),
            kind,
            inputs,
            h,
            w,
            c,
            role: Role::Image,
        }
    }

    /// The graph's max-pool is the reference's: a NaN in a window wins (as on the device and in
    /// PyTorch), where `f32::max` would drop it.
    #[test]
    fn max_pool_node_lets_nan_win_like_the_reference() {
        let pool = NodeKind::MaxPool {
            kernel: (2, 2),
            stride: (2, 2),
            padding: (0, 0),
        };
        let graph = Graph {
            nodes: vec![
                node("image", NodeKind::Image, vec![], (4, 4, 1)),
                node("pool", pool, vec![0], (2, 2, 1)),
            ],
            output: 1,
            name: "pool".into(),
        };
        let mut image: Vec<f32> = (0..16).map(|v| v as f32).collect();
        image[0] = f32::NAN;
        let outs = graph.eval(&image, &mut NoObserver).unwrap();
        let pooled = &outs[1];
        assert!(pooled[0].is_nan(), "{pooled:?}");
        assert_eq!(&pooled[1..], &[7.0, 13.0, 15.0]);
        // A node whose shape is not what its window gives is an error, not a short output.
        let mut wrong = graph.clone();
        wrong.nodes[1].h = 3;
        assert!(wrong.eval(&image, &mut NoObserver).is_err());
    }
}
