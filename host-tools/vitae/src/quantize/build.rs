//! From the f32 reference model (weights loaded, checked and BatchNorm-folded) to the float
//! graph, one node per blob op, in an execution order that keeps the arena small: in each cell
//! the PCM branch runs before the PRM/attention path, so the full-size cell input dies earlier.

use super::graph::{Act, Graph, Node, NodeId, NodeKind, Role};
use crate::reference::ReferenceModel;
use crate::reference::model::RcAttention;
use crate::reference::ops::{Conv2d, LayerNorm, Linear};

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

/// Builds the graph of `model`.
pub fn build_graph(model: &ReferenceModel, name: &str) -> Graph {
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
    for stage in model.stages() {
        let i = stage.info.index;
        let p = format!("layers.{i}.RC");
        let rc = &stage.rc;
        let pcm = rc.mixer.as_ref().map(|m| {
            let c0 = b.conv(format!("{p}.PCM.0"), &m.pcm[0], x, Act::Silu);
            let c1 = b.conv(format!("{p}.PCM.2"), &m.pcm[1], c0, Act::Silu);
            b.conv(format!("{p}.PCM.5"), &m.pcm[2], c1, Act::Silu)
        });
        let (h, w, _) = b.shape(x);
        let s = rc.prm[0].spec();
        let (oh, ow) = s.output_size(h, w).expect("validated PRM geometry");
        let prm = b.push(
            format!("{p}.PRM"),
            NodeKind::Prm {
                branches: rc.prm.clone(),
            },
            vec![x],
            (oh, ow, s.out_channels * rc.prm.len()),
            Role::Activated,
        );
        x = match (&rc.mixer, pcm) {
            (Some(m), Some(pcm)) => {
                let ln1 = b.layer_norm(format!("{p}.attn.norm1"), &m.norm1, prm);
                let attn = match &m.attention {
                    RcAttention::Performer(a) => {
                        let [k, q, v] =
                            b.split3(&format!("{p}.attn.kqv"), &a.kqv, ["k", "q", "v"], ln1);
                        let emb = a.proj.out_features;
                        let y = b.push(
                            format!("{p}.attn.prm_exp"),
                            NodeKind::Performer {
                                w: a.w.clone(),
                                features: a.features,
                            },
                            vec![k, q, v],
                            (oh, ow, emb),
                            Role::AttentionOutput,
                        );
                        let o = b.linear(
                            format!("{p}.attn.proj"),
                            a.proj.clone(),
                            y,
                            Act::None,
                            Role::Linear,
                        );
                        b.add(format!("{p}.attn.skip_v"), v, o)
                    }
                    RcAttention::Transformer(a) => {
                        let [q, k, v] =
                            b.split3(&format!("{p}.attn.attn.qkv"), &a.qkv, ["q", "k", "v"], ln1);
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
            _ => prm,
        };
        for (j, nc) in stage.ncs.iter().enumerate() {
            let p = format!("layers.{i}.NC.{j}");
            let c0 = b.conv(format!("{p}.PCM.0"), &nc.pcm[0], x, Act::Silu);
            let c1 = b.conv(format!("{p}.PCM.3"), &nc.pcm[1], c0, Act::Silu);
            let pcm = b.conv(format!("{p}.PCM.6"), &nc.pcm[2], c1, Act::Silu);
            let ln1 = b.layer_norm(format!("{p}.norm1"), &nc.norm1, x);
            let a = &nc.attention;
            let [q, k, v] = b.split3(&format!("{p}.attn.qkv"), &a.qkv, ["q", "k", "v"], ln1);
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
            let o = b.linear(
                format!("{p}.attn.proj"),
                a.proj.clone(),
                att,
                Act::None,
                Role::Linear,
            );
            let x1 = b.add(format!("{p}.add_attn"), x, o);
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
    let pooled = b.push(
        "pool".into(),
        NodeKind::MeanPool,
        vec![x],
        (1, 1, c),
        Role::Pooled,
    );
    let logits = b.linear(
        "head".into(),
        model.head().clone(),
        pooled,
        Act::None,
        Role::Logits,
    );
    Graph {
        nodes: b.nodes,
        output: logits,
        name: name.to_string(),
    }
}
