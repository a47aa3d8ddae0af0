//! Lowering the float graph to a blob: quantize weights per output channel, fold the input zero
//! point into the bias, compute requantization multipliers and activation tables, insert
//! int8 ↔ fp16 conversions between layers of different precision (and from an int16 residual
//! stream to the int8 or fp16 layers that read it), plan the arena.

use super::ImageInput;
use super::calib::{CalibMethod, Calibration, QParams, Slot};
use super::graph::{Act, Graph, Node, NodeId, NodeKind, Role};
use super::patch::{self, Patch, Patched};
use super::plan::{self, Buffer};
use crate::reference::ops::{Conv2d, LayerNorm, Linear};
use half::f16;
use std::collections::HashMap;
use vitae_edge::format::{self as fmt, BlobWriter, DType, DataRef, OpKind};
use vitae_edge::kernels::FACTOR_MIN;
use vitae_edge::kernels::performer::{MAX_EMB, SCALE_MIN};
use vitae_edge::ops::{self, HasKind, act};
use vitae_edge::quant::{Lut256, Requant};

/// Precision of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodePrecision {
    /// int8 activations and weights.
    Int8,
    /// int8 activations, int4 weights (linear layers and convolutions; any other node runs as
    /// [`Self::Int8`]).
    Int4,
    /// fp16 activations and weights.
    Fp16,
    /// A residual add whose sum is int16 (symmetric, per tensor): the residual stream stays
    /// int16 from it to the next add, LayerNorms read it as is, other int8 layers through a
    /// requantization. Any other node runs as [`Self::Int8`].
    Int16,
}

impl NodePrecision {
    /// The precision of the node's activations: int4 weights run on int8 activations.
    pub fn activations(self) -> NodePrecision {
        match self {
            NodePrecision::Int4 => NodePrecision::Int8,
            p => p,
        }
    }

    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            NodePrecision::Int8 => "int8",
            NodePrecision::Int4 => "int4",
            NodePrecision::Fp16 => "fp16",
            NodePrecision::Int16 => "int16",
        }
    }
}

/// Why lowering failed (a value that int8 cannot represent with this calibration).
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    /// A requantization multiplier is out of the representable range.
    #[error(
        "{node}: requantization multiplier {value:e} cannot be represented (calibration range degenerate?)"
    )]
    Multiplier {
        /// Node name.
        node: String,
        /// The real multiplier.
        value: f64,
    },
    /// The arena plan does not fit the memory regions it was made for.
    #[error(
        "the arena does not fit {regions}: {buffer} ({size} bytes, live from op {first} to op {last}) finds no room in any of them{why}"
    )]
    ArenaDoesNotFit {
        /// The regions, with their room (`AXISRAM (524,288 bytes), …`).
        regions: String,
        /// The buffer that found no room (`tensor `x``, `the scratch of op `y``).
        buffer: String,
        /// Its bytes (`802,816`).
        size: String,
        /// First op it is live at.
        first: usize,
        /// Last op it is live at.
        last: usize,
        /// Which limit it meets (the largest region, or the total at the busiest op).
        why: String,
    },
    /// Strips were asked for but cannot be made.
    #[error("cannot run the first cells in strips of {rows} rows: {why}")]
    NoPatch {
        /// Rows asked for.
        rows: usize,
        /// Why not.
        why: String,
    },
    /// The model is too large for the format's 16/32-bit fields.
    #[error("{node}: {what} does not fit the blob format")]
    TooLarge {
        /// Node name.
        node: String,
        /// What overflowed.
        what: &'static str,
    },
}

/// A lowered model.
#[derive(Clone, Debug)]
pub struct Lowered {
    /// The blob.
    pub blob: Vec<u8>,
    /// Arena bytes.
    pub arena_len: usize,
    /// Liveness lower bound.
    pub lower_bound: usize,
    /// The first cells run in strips: how.
    pub patched: Option<Patched>,
}

/// The node being lowered: its id, record, precision, input tensors (in that precision), MACs
/// and name.
struct At<'g> {
    id: NodeId,
    node: &'g Node,
    /// The precision of the node's activations ([`NodePrecision::activations`]).
    prec: NodePrecision,
    /// Whether its weights are int4 (a linear layer or convolution in [`NodePrecision::Int4`]).
    int4_weights: bool,
    inputs: Vec<u16>,
    macs: u64,
    name: &'g str,
}

struct Emitter<'g> {
    graph: &'g Graph,
    calib: &'g Calibration,
    method: CalibMethod,
    input: &'g ImageInput,
    w: BlobWriter,
    /// Tensor id of a node's output in a dtype.
    produced: HashMap<(NodeId, DType), u16>,
}

fn u16_of(v: usize, node: &Node, what: &'static str) -> Result<u16, LowerError> {
    u16::try_from(v).map_err(|_| LowerError::TooLarge {
        node: node.name.clone(),
        what,
    })
}

fn requant(real: f64, node: &Node) -> Result<Requant, LowerError> {
    Requant::from_real(real).ok_or(LowerError::Multiplier {
        node: node.name.clone(),
        value: real,
    })
}

/// Per-output-channel symmetric int8 weights: `(q, scale per channel)`. `per` = weights per
/// output channel.
/// int4 weights per output channel, symmetric in −7..=7: each row's scale is the one of
/// [`INT4_CLIP_STEPS`] clipping levels (from the row's largest magnitude down to half of it)
/// with the least squared error on that row, since at 15 levels one outlier would otherwise
/// leave most weights on two or three of them.
fn quantize_weights_int4(w: &[f32], per: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(w.len() / per.max(1));
    let round = |x: f32, s: f32| (x / s).round().clamp(-7.0, 7.0);
    for row in w.chunks_exact(per) {
        let max = row.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let mut best = (f64::INFINITY, if max > 0.0 { max / 7.0 } else { 1.0 });
        if max > 0.0 {
            for step in 0..INT4_CLIP_STEPS {
                let s = max * (1.0 - 0.5 * step as f32 / INT4_CLIP_STEPS as f32) / 7.0;
                let err: f64 = row
                    .iter()
                    .map(|&x| ((x - round(x, s) * s) as f64).powi(2))
                    .sum();
                if err < best.0 {
                    best = (err, s);
                }
            }
        }
        scales.push(best.1);
        q.extend(row.iter().map(|&x| round(x, best.1) as i8));
    }
    (q, scales)
}

/// Clipping levels [`quantize_weights_int4`] tries per row.
const INT4_CLIP_STEPS: usize = 20;

fn quantize_weights(w: &[f32], per: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(w.len() / per.max(1));
    for row in w.chunks_exact(per) {
        let max = row.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let s = if max > 0.0 { max / 127.0 } else { 1.0 };
        scales.push(s);
        q.extend(
            row.iter()
                .map(|x| (x / s).round().clamp(-127.0, 127.0) as i8),
        );
    }
    (q, scales)
}

/// OIHW (PyTorch) → OHWI (ours: input channels innermost, like the NHWC activations).
fn oihw_to_ohwi(w: &[f32], o: usize, i: usize, kh: usize, kw: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for oc in 0..o {
        for ic in 0..i {
            for y in 0..kh {
                for x in 0..kw {
                    out[((oc * kh + y) * kw + x) * i + ic] = w[((oc * i + ic) * kh + y) * kw + x];
                }
            }
        }
    }
    out
}

fn act_fn(a: Act) -> fn(f64) -> f64 {
    match a {
        Act::None => |x| x,
        Act::Gelu => |x| 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
        Act::Silu => |x| x / (1.0 + (-x).exp()),
    }
}

fn act_code(a: Act) -> u16 {
    match a {
        Act::None => act::NONE,
        Act::Gelu => act::GELU,
        Act::Silu => act::SILU,
    }
}

/// An offset as the int8 kernels accept it: 0 or at least 2^−64 in magnitude
/// (`kernels::FACTOR_MIN`; what keeps Helium's flush-to-zero away from their f32 steps). A
/// smaller offset is below 2^−64 of a quantization step: 0 instead changes no realistic result.
fn snap_tiny(x: f32) -> f32 {
    if x.abs() < FACTOR_MIN { 0.0 } else { x }
}

/// The factors of an int8 add `a + b` onto the grid `out` (see [`ops::add::AddParams`]).
fn add_params(a: QParams, b: QParams, out: QParams) -> ops::add::AddParams {
    let (ra, rb) = (a.scale / out.scale, b.scale / out.scale);
    ops::add::AddParams {
        ra,
        rb,
        c: snap_tiny(out.zero_point as f32 - a.zero_point as f32 * ra - b.zero_point as f32 * rb),
    }
}

/// The table mapping the pre-activation grid through `f` onto the output grid.
fn lut(pre: QParams, out: QParams, f: fn(f64) -> f64) -> Lut256 {
    let mut t = [0i8; 256];
    for (i, v) in t.iter_mut().enumerate() {
        let x = pre.scale as f64 * (i as i32 - 128 - pre.zero_point) as f64;
        let y = f(x) / out.scale as f64 + out.zero_point as f64;
        *v = y.round().clamp(-128.0, 127.0) as i8;
    }
    Lut256(t)
}

/// Which row copy [`Emitter::token_rows`] lowers.
#[derive(Clone, Copy, Debug)]
enum TokenRows {
    /// The rows behind the class token.
    Drop,
    /// A zero row in front.
    Pad,
}

/// Quantized weights, bias (zero point folded) and requantization of one conv/linear output.
struct QLayer {
    weights: Vec<i8>,
    bias: Vec<i32>,
    requant: Vec<Requant>,
}

#[allow(clippy::too_many_arguments)]
fn quantize_layer(
    w: &[f32],
    b: &[f32],
    per: usize,
    s_in: f32,
    zp_in: i32,
    s_out: f32,
    node: &Node,
    int4: Option<&(Vec<i8>, Vec<f32>)>,
) -> Result<QLayer, LowerError> {
    let (weights, ws) = match int4 {
        Some((q, s)) => (q.clone(), s.clone()),
        None => quantize_weights(w, per),
    };
    let mut bias = Vec::with_capacity(ws.len());
    let mut rq = Vec::with_capacity(ws.len());
    for (o, (&s_w, row)) in ws.iter().zip(weights.chunks_exact(per)).enumerate() {
        let acc_scale = s_in as f64 * s_w as f64;
        let sum_w: i64 = row.iter().map(|&q| q as i64).sum();
        let bq = (b[o] as f64 / acc_scale).round() as i64 - zp_in as i64 * sum_w;
        bias.push(bq.clamp(i32::MIN as i64, i32::MAX as i64) as i32);
        rq.push(requant(acc_scale / s_out as f64, node)?);
    }
    Ok(QLayer {
        weights,
        bias,
        requant: rq,
    })
}

/// Where one int8 conv/linear output stage landed in the blob's data section.
struct Int8Refs {
    weights: DataRef,
    bias: DataRef,
    requant: DataRef,
    lut: DataRef,
}

/// Quantizes one conv/linear output stage ([`quantize_layer`]: input grid `x`, requantized onto
/// `pre`; int4 weights packed as [`vitae_edge::kernels::s4`] when `int4`) and writes it to the
/// data section, with the table from `pre` through the activation
/// onto `out` (none for [`Act::None`], where `pre` is the output grid itself).
#[allow(clippy::too_many_arguments)]
fn write_int8_layer(
    data: &mut BlobWriter,
    (w, b, per): (&[f32], &[f32], usize),
    x: QParams,
    pre: QParams,
    out: QParams,
    a: Act,
    node: &Node,
    int4: Option<&(Vec<i8>, Vec<f32>)>,
) -> Result<Int8Refs, LowerError> {
    let l = quantize_layer(w, b, per, x.scale, x.zero_point, pre.scale, node, int4)?;
    Ok(Int8Refs {
        weights: if int4.is_some() {
            let row = vitae_edge::kernels::s4::s4_row_bytes(per);
            let mut packed = vec![0u8; row * (l.weights.len() / per)];
            for (src, dst) in l
                .weights
                .chunks_exact(per)
                .zip(packed.chunks_exact_mut(row))
            {
                vitae_edge::kernels::s4::pack_s4_row(src, dst);
            }
            data.data(&packed)
        } else {
            data.data(&l.weights)
        },
        bias: data.data(&l.bias),
        requant: data.data(&l.requant),
        lut: if a == Act::None {
            DataRef::default()
        } else {
            data.data(&lut(pre, out, act_fn(a)).0)
        },
    })
}

impl<'g> Emitter<'g> {
    /// A layer's int4 weights and per-row scales (`w`: rows of `per`): each row's clipping from
    /// [`quantize_weights_int4`], then the rounding with error feedback through the layer's input
    /// correlations ([`super::gptq`]: a linear layer's tokens, each group's receptive fields of a
    /// convolution); to nearest when none were collected. Cached: mixed precision lowers many
    /// times.
    fn int4_weights(&self, id: NodeId, w: &[f32], per: usize) -> (Vec<i8>, Vec<f32>) {
        if let Some(hit) = self.calib.int4_rows.borrow().get(&id) {
            return hit.clone();
        }
        let node = &self.graph.nodes[id];
        let (plain, scales) = quantize_weights_int4(w, per);
        let grams: Option<Vec<&super::gptq::Gram>> = match node.kind {
            NodeKind::Linear { .. } => self.calib.grams.get(&node.inputs[0]).map(|g| vec![g]),
            NodeKind::Conv { .. } => self.calib.conv_grams.get(&id).map(|g| g.iter().collect()),
            _ => None,
        };
        let q = match grams {
            Some(grams) if !grams.is_empty() => {
                // One group's rows after another (OHWI per group: rows of a group are adjacent).
                let rows_per_group = scales.len() / grams.len();
                let mut q = Vec::with_capacity(w.len());
                for (g, gram) in grams.iter().enumerate() {
                    let rows = g * rows_per_group..(g + 1) * rows_per_group;
                    q.extend(super::gptq::quantize_rows(
                        &w[rows.start * per..rows.end * per],
                        per,
                        &scales[rows],
                        gram,
                    ));
                }
                q
            }
            _ => plain,
        };
        let r = (q, scales);
        self.calib.int4_rows.borrow_mut().insert(id, r.clone());
        r
    }

    fn qp(&self, id: NodeId) -> QParams {
        let n = &self.graph.nodes[id];
        self.calib.qparams(id, Slot::Out, n.role, self.method)
    }

    fn pre_qp(&self, id: NodeId, b: usize) -> QParams {
        self.calib
            .qparams(id, Slot::Pre(b), Role::Linear, self.method)
    }

    fn new_tensor(
        &mut self,
        id: NodeId,
        dtype: DType,
        q: Option<QParams>,
        suffix: &str,
    ) -> Result<u16, LowerError> {
        let n = &self.graph.nodes[id];
        let name = if suffix.is_empty() {
            n.name.clone()
        } else {
            format!("{}{suffix}", n.name)
        };
        let q = q.unwrap_or(QParams {
            scale: 1.0,
            zero_point: 0,
        });
        let (h, w, c) = (
            u16_of(n.h, n, "height")?,
            u16_of(n.w, n, "width")?,
            u16_of(n.c, n, "channels")?,
        );
        let byte_len =
            u32::try_from(n.elements() * dtype.size()).map_err(|_| LowerError::TooLarge {
                node: n.name.clone(),
                what: "tensor size",
            })?;
        let name = self.w.string(&name);
        let t = self.w.tensor(fmt::TensorDesc {
            dtype: dtype as u8,
            reserved0: 0,
            flags: 0,
            h,
            w,
            c,
            row0: 0,
            arena_offset: 0,
            byte_len,
            scale: q.scale,
            zero_point: q.zero_point,
            name,
        });
        self.produced.insert((id, dtype), t);
        Ok(t)
    }

    fn output(&mut self, id: NodeId, prec: NodePrecision) -> Result<u16, LowerError> {
        match prec {
            NodePrecision::Int8 | NodePrecision::Int4 => {
                let q = self.qp(id);
                self.new_tensor(id, DType::I8, Some(q), "")
            }
            NodePrecision::Fp16 => self.new_tensor(id, DType::F16, None, ""),
            NodePrecision::Int16 => {
                let q = self.calib.qparams_int16(id);
                self.new_tensor(id, DType::I16, Some(q), "")
            }
        }
    }

    /// Appends an op of kind `S` (its scratch length comes from the kind).
    fn op<S: HasKind>(
        &mut self,
        inputs: &[u16],
        output: u16,
        params: &S::Params<'_>,
        macs: u64,
        name: &str,
    ) {
        self.w.op::<S>(inputs, output, params, macs, name);
    }

    /// The tensor of node `id`'s output in `dtype`, converting (once) if it was produced in the
    /// other one.
    fn input_as(&mut self, id: NodeId, dtype: DType) -> Result<u16, LowerError> {
        if let Some(&t) = self.produced.get(&(id, dtype)) {
            return Ok(t);
        }
        let name = self.graph.nodes[id].name.clone();
        if let Some(&src) = self.produced.get(&(id, DType::I16)) {
            return self.convert_int16(id, src, dtype, &name);
        }
        match dtype {
            DType::F16 => {
                let src = self.produced[&(id, DType::I8)];
                let d = self.w.tensors[src as usize];
                let t = self.new_tensor(id, DType::F16, None, ".f16")?;
                let p = ops::convert::DequantizeParams {
                    scale: d.scale,
                    zero_point: d.zero_point,
                };
                self.op::<ops::convert::DequantizeS8Op>(
                    &[src],
                    t,
                    &p,
                    0,
                    &format!("{name}.to_f16"),
                );
                Ok(t)
            }
            DType::I8 => {
                let src = self.produced[&(id, DType::F16)];
                let q = self.qp(id);
                let t = self.new_tensor(id, DType::I8, Some(q), ".i8")?;
                let p = ops::convert::QuantizeF16Params {
                    inv_scale: 1.0 / q.scale,
                    zero_point: q.zero_point,
                };
                self.op::<ops::convert::QuantizeF16Op>(&[src], t, &p, 0, &format!("{name}.to_i8"));
                Ok(t)
            }
            DType::F32 => unreachable!("no node's output is f32 (only a performer's sums are)"),
            DType::I16 => unreachable!("only a residual add makes an int16 tensor"),
        }
    }

    /// The int16 residual stream `src` (node `id`'s output) converted, once, for a layer that
    /// reads `dtype`: requantized onto the node's int8 grid, or widened to fp16.
    fn convert_int16(
        &mut self,
        id: NodeId,
        src: u16,
        dtype: DType,
        name: &str,
    ) -> Result<u16, LowerError> {
        let s_in = self.w.tensors[src as usize].scale;
        match dtype {
            DType::I8 => {
                let q = self.qp(id);
                let t = self.new_tensor(id, DType::I8, Some(q), ".i8")?;
                let p = ops::convert::RequantizeS16Params {
                    ratio: s_in / q.scale,
                    zero_point: q.zero_point,
                };
                self.op::<ops::convert::RequantizeS16Op>(
                    &[src],
                    t,
                    &p,
                    0,
                    &format!("{name}.to_i8"),
                );
                Ok(t)
            }
            DType::F16 => {
                let t = self.new_tensor(id, DType::F16, None, ".f16")?;
                let p = ops::convert::DequantizeParams {
                    scale: s_in,
                    zero_point: 0,
                };
                self.op::<ops::convert::DequantizeS16Op>(
                    &[src],
                    t,
                    &p,
                    0,
                    &format!("{name}.to_f16"),
                );
                Ok(t)
            }
            DType::I16 | DType::F32 => {
                unreachable!("no layer reads int16 or f32 through a conversion")
            }
        }
    }

    fn tq(&self, t: u16) -> QParams {
        let d = &self.w.tensors[t as usize];
        QParams {
            scale: d.scale,
            zero_point: d.zero_point,
        }
    }

    fn f16s(v: &[f32]) -> Vec<f16> {
        v.iter().map(|&x| f16::from_f32(x)).collect()
    }

    fn conv_geom(
        conv: &crate::reference::ops::Conv2d,
        input: &Node,
        out: &Node,
    ) -> Result<ops::conv::ConvGeomRecord, LowerError> {
        let s = conv.spec();
        let f = |v: usize, what| u16_of(v, out, what);
        Ok(ops::conv::ConvGeomRecord {
            in_h: f(input.h, "height")?,
            in_w: f(input.w, "width")?,
            in_c: f(input.c, "channels")?,
            out_h: f(out.h, "height")?,
            out_w: f(out.w, "width")?,
            out_c: f(s.out_channels, "channels")?,
            kh: f(s.kernel[0], "kernel")?,
            kw: f(s.kernel[1], "kernel")?,
            stride_h: f(s.stride[0], "stride")?,
            stride_w: f(s.stride[1], "stride")?,
            pad_h: f(s.padding[0], "padding")?,
            pad_w: f(s.padding[1], "padding")?,
            dil_h: f(s.dilation[0], "dilation")?,
            dil_w: f(s.dilation[1], "dilation")?,
            groups: f(s.groups, "groups")?,
            reserved: 0,
        })
    }

    /// Lowers node `id` in `prec`: its inputs converted to that precision where they were produced
    /// in the other one, then the node's own op(s).
    fn node(&mut self, id: NodeId, prec: NodePrecision) -> Result<(), LowerError> {
        let graph = self.graph;
        let node = &graph.nodes[id];
        let int4_weights = prec == NodePrecision::Int4
            && matches!(node.kind, NodeKind::Linear { .. } | NodeKind::Conv { .. });
        let prec = match prec.activations() {
            NodePrecision::Int16 if !matches!(node.kind, NodeKind::Add) => NodePrecision::Int8,
            p => p,
        };
        let dt = match prec {
            NodePrecision::Int8 | NodePrecision::Int4 | NodePrecision::Int16 => DType::I8,
            NodePrecision::Fp16 => DType::F16,
        };
        // An int16 add or an int8 LayerNorm reads the int16 residual stream as it is (the add's
        // operands may be int8 or int16; the LayerNorm has an int16-input op); anything else
        // converts.
        let reads_int16 = match node.kind {
            NodeKind::Add => prec == NodePrecision::Int16,
            NodeKind::LayerNorm(_) => prec == NodePrecision::Int8,
            _ => false,
        };
        let inputs: Vec<u16> = node
            .inputs
            .iter()
            .map(|&i| match self.produced.get(&(i, DType::I16)) {
                Some(&t) if reads_int16 => Ok(t),
                _ => self.input_as(i, dt),
            })
            .collect::<Result<_, _>>()?;
        let at = At {
            id,
            node,
            prec,
            int4_weights,
            inputs,
            macs: node.macs(graph),
            name: node.name.as_str(),
        };
        match &node.kind {
            NodeKind::Image => self.image(&at),
            NodeKind::Conv { conv, act } => self.conv(&at, conv, act),
            NodeKind::Prm { branches } => self.prm(&at, branches),
            NodeKind::Linear { linear, act } => self.linear(&at, linear, act),
            NodeKind::LayerNorm(ln) => self.layernorm(&at, ln),
            NodeKind::Attention {
                heads,
                head_dim,
                scale,
            } => self.attention(&at, heads, head_dim, scale),
            NodeKind::Performer { w, features } => self.performer(&at, w, features),
            NodeKind::Add => self.add(&at),
            NodeKind::MeanPool => self.mean_pool(&at),
            NodeKind::MaxPool {
                kernel,
                stride,
                padding,
            } => self.max_pool(&at, kernel, stride, padding),
            NodeKind::ClassToken { cls, pos } => self.class_token(&at, cls, pos),
            NodeKind::DropToken => self.token_rows(&at, TokenRows::Drop),
            NodeKind::PadToken => self.token_rows(&at, TokenRows::Pad),
        }
    }

    /// The image: quantized onto its calibrated grid (int8) or converted to fp16; u8 pixels
    /// through one 256-entry table per channel that folds in the normalization, so a pixel gets
    /// exactly what the f32 path gives its normalized value.
    fn image(&mut self, at: &At) -> Result<(), LowerError> {
        let (id, prec, name) = (at.id, at.prec, at.name);
        let channels = self.graph.nodes[id].c;
        let pixels = |c: usize| (0..=255u8).map(move |p| (c, p));
        let normalized =
            |input: &ImageInput, (c, p): (usize, u8)| input.normalized(c, p).unwrap_or(0.0);
        match (at.prec, self.input) {
            (
                NodePrecision::Int8 | NodePrecision::Int4 | NodePrecision::Int16,
                ImageInput::F32Nchw,
            ) => {
                let out = self.output(id, prec)?;
                let q = self.tq(out);
                let p = ops::image::QuantizeParams {
                    inv_scale: 1.0 / q.scale,
                    zero_point: q.zero_point,
                };
                self.op::<ops::image::QuantizeImageOp>(&[], out, &p, 0, name);
            }
            (NodePrecision::Fp16, ImageInput::F32Nchw) => {
                let out = self.output(id, prec)?;
                self.op::<ops::image::ImageToF16Op>(&[], out, &(), 0, name);
            }
            (
                NodePrecision::Int8 | NodePrecision::Int4 | NodePrecision::Int16,
                input @ ImageInput::U8Hwc { .. },
            ) => {
                let out = self.output(id, prec)?;
                let q = self.tq(out);
                // The f32 path's own arithmetic (`QuantizeImageOp` with this record).
                let inv_scale = 1.0 / q.scale;
                let tables: Vec<i8> = (0..channels)
                    .flat_map(pixels)
                    .map(|cp| {
                        vitae_edge::quant::quantize_f32(
                            normalized(input, cp),
                            inv_scale,
                            q.zero_point,
                        )
                    })
                    .collect();
                let p = ops::image_u8::PixelTableParams {
                    tables: self.w.data(&tables),
                };
                self.op::<ops::image_u8::QuantizeImageU8Op>(&[], out, &p, 0, name);
            }
            (NodePrecision::Fp16, input @ ImageInput::U8Hwc { .. }) => {
                let out = self.output(id, prec)?;
                let tables: Vec<f16> = (0..channels)
                    .flat_map(pixels)
                    .map(|cp| f16::from_f32(normalized(input, cp)))
                    .collect();
                let p = ops::image_u8::PixelTableParams {
                    tables: self.w.data(&tables),
                };
                self.op::<ops::image_u8::ImageU8ToF16Op>(&[], out, &p, 0, name);
            }
        }
        Ok(())
    }

    /// A convolution with a fused activation. int8: weights per output channel, the input zero
    /// point folded into the bias, requantized onto the activation's input grid and looked up
    /// through its table (or straight onto the output grid without an activation).
    fn conv(&mut self, at: &At, conv: &Conv2d, a: &Act) -> Result<(), LowerError> {
        let (graph, id, node, prec, macs, name, inputs) = (
            self.graph, at.id, at.node, at.prec, at.macs, at.name, &at.inputs,
        );
        let input = &graph.nodes[node.inputs[0]];
        let geom = Self::conv_geom(conv, input, node)?;
        let s = conv.spec();
        let w = oihw_to_ohwi(
            conv.weight_oihw(),
            s.out_channels,
            s.in_per_group(),
            s.kernel[0],
            s.kernel[1],
        );
        let per = s.in_per_group() * s.kernel[0] * s.kernel[1];
        let out = self.output(id, prec)?;
        if prec == NodePrecision::Int8 {
            let (qx, qo) = (self.tq(inputs[0]), self.tq(out));
            let target = if *a == Act::None {
                qo
            } else {
                self.pre_qp(id, 0)
            };
            let int4 = at.int4_weights.then(|| self.int4_weights(id, &w, per));
            let r = write_int8_layer(
                &mut self.w,
                (&w, conv.bias(), per),
                qx,
                target,
                qo,
                *a,
                node,
                int4.as_ref(),
            )?;
            let p = ops::conv::ConvParams {
                geom,
                in_zp: qx.zero_point,
                out_zp: target.zero_point,
                weights: r.weights,
                bias: r.bias,
                requant: r.requant,
                lut: r.lut,
            };
            if int4.is_some() {
                self.op::<ops::conv::ConvS4Op>(inputs, out, &p, macs, name);
            } else {
                self.op::<ops::conv::ConvS8Op>(inputs, out, &p, macs, name);
            }
        } else {
            let p = ops::conv::ConvF16Params {
                geom,
                act: act_code(*a) as u32,
                weights: self.w.data(&Self::f16s(&w)),
                bias: self.w.data(conv.bias()),
            };
            self.op::<ops::conv::ConvF16Op>(inputs, out, &p, macs, name);
        }
        Ok(())
    }

    /// The PRM: one record with a branch per dilation. int8: each branch requantized onto its
    /// own pre-GELU grid, its GELU table mapping onto the shared output grid.
    fn prm(&mut self, at: &At, branches: &[Conv2d]) -> Result<(), LowerError> {
        let (graph, id, node, prec, macs, name, inputs) = (
            self.graph, at.id, at.node, at.prec, at.macs, at.name, &at.inputs,
        );
        let input = &graph.nodes[node.inputs[0]];
        let first = branches[0].spec();
        let e = first.out_channels;
        let out = self.output(id, prec)?;
        let header = ops::prm::PrmParams {
            in_h: u16_of(input.h, node, "height")?,
            in_w: u16_of(input.w, node, "width")?,
            in_c: u16_of(input.c, node, "channels")?,
            out_h: u16_of(node.h, node, "height")?,
            out_w: u16_of(node.w, node, "width")?,
            branch_channels: u16_of(e, node, "channels")?,
            kernel: u16_of(first.kernel[0], node, "kernel")?,
            stride: u16_of(first.stride[0], node, "stride")?,
            branches: u16_of(branches.len(), node, "branches")?,
            act: if prec == NodePrecision::Fp16 {
                act::GELU
            } else {
                act::NONE
            },
            in_zp: if prec == NodePrecision::Int8 {
                self.tq(inputs[0]).zero_point
            } else {
                0
            },
        };
        let mut record = Vec::with_capacity(branches.len());
        for (b, conv) in branches.iter().enumerate() {
            let s = conv.spec();
            let w = oihw_to_ohwi(
                conv.weight_oihw(),
                s.out_channels,
                s.in_per_group(),
                s.kernel[0],
                s.kernel[1],
            );
            let per = s.in_per_group() * s.kernel[0] * s.kernel[1];
            let branch = if prec == NodePrecision::Int8 {
                let (qx, qo, pre) = (self.tq(inputs[0]), self.tq(out), self.pre_qp(id, b));
                let r = write_int8_layer(
                    &mut self.w,
                    (&w, conv.bias(), per),
                    qx,
                    pre,
                    qo,
                    Act::Gelu,
                    node,
                    None,
                )?;
                ops::prm::PrmBranch {
                    dilation: u16_of(s.dilation[0], node, "dilation")?,
                    padding: u16_of(s.padding[0], node, "padding")?,
                    out_zp: pre.zero_point,
                    weights: r.weights,
                    bias: r.bias,
                    requant: r.requant,
                    lut: r.lut,
                }
            } else {
                ops::prm::PrmBranch {
                    dilation: u16_of(s.dilation[0], node, "dilation")?,
                    padding: u16_of(s.padding[0], node, "padding")?,
                    out_zp: 0,
                    weights: self.w.data(&Self::f16s(&w)),
                    bias: self.w.data(conv.bias()),
                    requant: DataRef::default(),
                    lut: DataRef::default(),
                }
            };
            record.push(branch);
        }
        let record = ops::prm::PrmRecord {
            header,
            branches: &record,
        };
        if prec == NodePrecision::Int8 {
            self.op::<ops::prm::PrmS8Op>(inputs, out, &record, macs, name);
        } else {
            self.op::<ops::prm::PrmF16Op>(inputs, out, &record, macs, name);
        }
        Ok(())
    }

    /// A linear layer with a fused activation (int8 as for a convolution).
    fn linear(&mut self, at: &At, lin: &Linear, a: &Act) -> Result<(), LowerError> {
        let (id, node, prec, macs, name, inputs) =
            (at.id, at.node, at.prec, at.macs, at.name, &at.inputs);
        let out = self.output(id, prec)?;
        let n = node.tokens();
        let zero_bias = vec![0.0; lin.out_features];
        let bias = lin.bias.as_deref().unwrap_or(&zero_bias);
        let (fi, fo) = (
            u16_of(lin.in_features, node, "features")?,
            u16_of(lin.out_features, node, "features")?,
        );
        let tokens = u32::try_from(n).map_err(|_| LowerError::TooLarge {
            node: node.name.clone(),
            what: "tokens",
        })?;
        if prec == NodePrecision::Int8 {
            let (qx, qo) = (self.tq(inputs[0]), self.tq(out));
            let target = if *a == Act::None {
                qo
            } else {
                self.pre_qp(id, 0)
            };
            let int4 = at
                .int4_weights
                .then(|| self.int4_weights(id, &lin.weight, lin.in_features));
            let r = write_int8_layer(
                &mut self.w,
                (&lin.weight, bias, lin.in_features),
                qx,
                target,
                qo,
                *a,
                node,
                int4.as_ref(),
            )?;
            let p = ops::linear::LinearParams {
                tokens,
                in_features: fi,
                out_features: fo,
                out_zp: target.zero_point,
                weights: r.weights,
                bias: r.bias,
                requant: r.requant,
                lut: r.lut,
            };
            if at.int4_weights {
                self.op::<ops::linear::LinearS4Op>(inputs, out, &p, macs, name);
            } else {
                self.op::<ops::linear::LinearS8Op>(inputs, out, &p, macs, name);
            }
        } else {
            let p = ops::linear::LinearF16Params {
                tokens,
                in_features: fi,
                out_features: fo,
                act: act_code(*a) as u32,
                weights: self.w.data(&Self::f16s(&lin.weight)),
                bias: self.w.data(bias),
            };
            self.op::<ops::linear::LinearF16Op>(inputs, out, &p, macs, name);
        }
        Ok(())
    }

    /// LayerNorm. int8: the statistics stay exact integer sums on the device, so the host stores
    /// the affine part pre-scaled onto the output grid and the epsilon in input units squared.
    fn layernorm(&mut self, at: &At, ln: &LayerNorm) -> Result<(), LowerError> {
        let (id, node, prec, name, inputs) = (at.id, at.node, at.prec, at.name, &at.inputs);
        let out = self.output(id, prec)?;
        let c = node.c;
        let tokens = node.tokens() as u32;
        if prec == NodePrecision::Int8 {
            let int16_input = self.w.tensors[inputs[0] as usize].dtype == DType::I16 as u8;
            let (qx, qo) = (self.tq(inputs[0]), self.tq(out));
            let gain: Vec<f32> = ln.gamma.iter().map(|g| snap_tiny(g / qo.scale)).collect();
            let offset: Vec<f32> = ln
                .beta
                .iter()
                .map(|b| snap_tiny(b / qo.scale + qo.zero_point as f32))
                .collect();
            let eps_term =
                (ln.eps as f64 * (c * c) as f64 / (qx.scale as f64 * qx.scale as f64)) as f32;
            let p = ops::layernorm::LayerNormParams {
                tokens,
                channels: u16_of(c, node, "channels")?,
                reserved: 0,
                eps_term,
                gain: self.w.data(&gain),
                offset: self.w.data(&offset),
            };
            if int16_input {
                self.op::<ops::layernorm::LayerNormS16Op>(inputs, out, &p, 0, name);
            } else {
                self.op::<ops::layernorm::LayerNormS8Op>(inputs, out, &p, 0, name);
            }
        } else {
            let p = ops::layernorm::LayerNormF16Params {
                tokens,
                channels: c as u32,
                eps: ln.eps,
                gamma: self.w.data(&ln.gamma),
                beta: self.w.data(&ln.beta),
            };
            self.op::<ops::layernorm::LayerNormF16Op>(inputs, out, &p, 0, name);
        }
        Ok(())
    }

    /// Softmax attention. int8: the logit scale folds in both input scales, the output scale
    /// maps `v`'s grid onto the output's.
    fn attention(
        &mut self,
        at: &At,
        heads: &usize,
        head_dim: &usize,
        scale: &f32,
    ) -> Result<(), LowerError> {
        let (id, node, prec, macs, name, inputs) =
            (at.id, at.node, at.prec, at.macs, at.name, &at.inputs);
        let out = self.output(id, prec)?;
        let tokens = node.tokens() as u32;
        let (h, hd) = (
            u16_of(*heads, node, "heads")?,
            u16_of(*head_dim, node, "head dim")?,
        );
        if prec == NodePrecision::Int8 {
            let (qq, qk, qv, qo) = (
                self.tq(inputs[0]),
                self.tq(inputs[1]),
                self.tq(inputs[2]),
                self.tq(out),
            );
            let p = ops::attention::AttentionParams {
                tokens,
                heads: h,
                head_dim: hd,
                logit_scale: qq.scale * qk.scale * scale,
                out_scale: qv.scale / qo.scale,
                out_zp: qo.zero_point,
            };
            self.op::<ops::attention::AttentionS8Op>(inputs, out, &p, macs, name);
        } else {
            let p = ops::attention::AttentionF16Params {
                tokens,
                heads: h,
                head_dim: hd,
                qk_scale: *scale,
            };
            self.op::<ops::attention::AttentionF16Op>(inputs, out, &p, macs, name);
        }
        Ok(())
    }

    /// The performer. int8: the random features become int16 with one scale, so `w·z` is an
    /// exact integer dot product on the device.
    fn performer(&mut self, at: &At, wr: &[f32], features: &usize) -> Result<(), LowerError> {
        let (id, node, prec, macs, name, inputs) =
            (at.id, at.node, at.prec, at.macs, at.name, &at.inputs);
        let out = self.output(id, prec)?;
        let tokens = node.tokens() as u32;
        let (e, m) = (
            u16_of(node.c, node, "channels")?,
            u16_of(*features, node, "features")?,
        );
        if prec == NodePrecision::Int8 {
            // int16 random features with one scale: w·z becomes an exact integer dot.
            // At least the kernel's smallest w scale (2^−40; all-zero or tiny w).
            let max = wr.iter().fold(0.0f32, |a, x| a.max(x.abs()));
            let w_scale = (max / 32767.0).max(SCALE_MIN);
            let wq: Vec<i16> = wr
                .iter()
                .map(|x| (x / w_scale).round().clamp(-32767.0, 32767.0) as i16)
                .collect();
            if node.c > MAX_EMB {
                return Err(LowerError::TooLarge {
                    node: node.name.clone(),
                    what: "performer width (at most 511)",
                });
            }
            let w_ref = self.w.data(&wq);
            let (qk, qq, qv, qo) = (
                self.tq(inputs[0]),
                self.tq(inputs[1]),
                self.tq(inputs[2]),
                self.tq(out),
            );
            let p = ops::performer::PerformerParams {
                tokens,
                emb: e,
                features: m,
                k_scale: qk.scale,
                q_scale: qq.scale,
                v_scale: qv.scale,
                out_inv_scale: 1.0 / qo.scale,
                out_zp: qo.zero_point,
                w_scale,
                w: w_ref,
            };
            self.op::<ops::performer::PerformerS8Op>(inputs, out, &p, macs, name);
        } else {
            let w_ref = self.w.data(wr);
            let p = ops::performer::PerformerF16Params {
                tokens,
                emb: e,
                features: m,
                w: w_ref,
            };
            self.op::<ops::performer::PerformerF16Op>(inputs, out, &p, macs, name);
        }
        Ok(())
    }

    /// A residual add (see [`add_params`]; the planner may run it in place).
    fn add(&mut self, at: &At) -> Result<(), LowerError> {
        let (id, prec, name, inputs) = (at.id, at.prec, at.name, &at.inputs);
        match at.prec {
            NodePrecision::Int8 | NodePrecision::Int4 | NodePrecision::Int16 => {
                let out = self.output(id, prec)?;
                let (qa, qb, qo) = (self.tq(inputs[0]), self.tq(inputs[1]), self.tq(out));
                let p = add_params(qa, qb, qo);
                if self.w.tensors[out as usize].dtype == DType::I16 as u8 {
                    self.op::<ops::add::AddS16Op>(inputs, out, &p, 0, name);
                } else {
                    self.op::<ops::add::AddS8Op>(inputs, out, &p, 0, name);
                }
            }
            NodePrecision::Fp16 => {
                let out = self.output(id, prec)?;
                self.op::<ops::add::AddF16Op>(inputs, out, &(), 0, name);
            }
        }
        Ok(())
    }

    /// Max pooling: on the input's own grid in int8 (exact).
    fn max_pool(
        &mut self,
        at: &At,
        kernel: &(usize, usize),
        stride: &(usize, usize),
        padding: &(usize, usize),
    ) -> Result<(), LowerError> {
        let (graph, id, node, prec, name, inputs) =
            (self.graph, at.id, at.node, at.prec, at.name, &at.inputs);
        let input = &graph.nodes[node.inputs[0]];
        let f = |v: usize, what| u16_of(v, node, what);
        let p = ops::max_pool::MaxPoolParams {
            in_h: f(input.h, "height")?,
            in_w: f(input.w, "width")?,
            channels: f(node.c, "channels")?,
            out_h: f(node.h, "height")?,
            out_w: f(node.w, "width")?,
            kernel_h: f(kernel.0, "kernel")?,
            kernel_w: f(kernel.1, "kernel")?,
            stride_h: f(stride.0, "stride")?,
            stride_w: f(stride.1, "stride")?,
            pad_h: f(padding.0, "padding")?,
            pad_w: f(padding.1, "padding")?,
            reserved: 0,
        };
        if prec == NodePrecision::Int8 {
            // The maximum of quantized values is exact on the input's own grid.
            let q = self.tq(inputs[0]);
            let out = self.new_tensor(id, DType::I8, Some(q), "")?;
            self.op::<ops::max_pool::MaxPoolS8Op>(inputs, out, &p, 0, name);
        } else {
            let out = self.output(id, prec)?;
            self.op::<ops::max_pool::MaxPoolF16Op>(inputs, out, &p, 0, name);
        }
        Ok(())
    }

    /// The class token in front of the patch tokens and the position embedding added. int8: the
    /// position embedding's rows `1..` on a grid of their own, added to the patch tokens onto the
    /// output grid; row 0 (`cls_token + pos_embed[0]`) stored already on the output grid.
    fn class_token(&mut self, at: &At, cls: &[f32], pos: &[f32]) -> Result<(), LowerError> {
        let (id, node, prec, name, inputs) = (at.id, at.node, at.prec, at.name, &at.inputs);
        let c = node.c;
        let tokens = u32::try_from(node.tokens() - 1).map_err(|_| LowerError::TooLarge {
            node: node.name.clone(),
            what: "tokens",
        })?;
        let channels = u32::from(u16_of(c, node, "channels")?);
        let first: Vec<f32> = cls.iter().zip(pos).map(|(a, b)| a + b).collect();
        let rest = &pos[c..];
        let out = self.output(id, prec)?;
        match prec {
            NodePrecision::Int8 | NodePrecision::Int4 | NodePrecision::Int16 => {
                let (qx, qo) = (self.tq(inputs[0]), self.tq(out));
                let lo = rest.iter().copied().fold(0.0f32, f32::min);
                let hi = rest.iter().copied().fold(0.0f32, f32::max);
                let qp = QParams::asymmetric(lo, hi);
                let pos_q: Vec<i8> = rest.iter().map(|&v| qp.quantize(v)).collect();
                let first_q: Vec<i8> = first.iter().map(|&v| qo.quantize(v)).collect();
                let p = ops::class_token::ClassTokenParams {
                    tokens,
                    channels,
                    add: add_params(qx, qp, qo),
                    first: self.w.data(&first_q),
                    pos: self.w.data(&pos_q),
                };
                self.op::<ops::class_token::ClassTokenS8Op>(inputs, out, &p, 0, name);
            }
            NodePrecision::Fp16 => {
                let p = ops::class_token::ClassTokenF16Params {
                    tokens,
                    channels,
                    first: self.w.data(&Self::f16s(&first)),
                    pos: self.w.data(&Self::f16s(rest)),
                };
                self.op::<ops::class_token::ClassTokenF16Op>(inputs, out, &p, 0, name);
            }
        }
        Ok(())
    }

    /// Dropping the class token's row or padding its place with zero: a copy, on the input's own
    /// grid in int8 (zero is exact on every grid: the zero point).
    fn token_rows(&mut self, at: &At, what: TokenRows) -> Result<(), LowerError> {
        let (graph, id, node, prec, name, inputs) =
            (self.graph, at.id, at.node, at.prec, at.name, &at.inputs);
        let spatial = match what {
            TokenRows::Drop => node,
            TokenRows::Pad => &graph.nodes[node.inputs[0]],
        };
        let p = ops::class_token::TokenRowsParams {
            tokens: u32::try_from(spatial.tokens()).map_err(|_| LowerError::TooLarge {
                node: node.name.clone(),
                what: "tokens",
            })?,
            channels: u32::from(u16_of(node.c, node, "channels")?),
        };
        let dtype = match prec {
            NodePrecision::Int8 | NodePrecision::Int4 | NodePrecision::Int16 => DType::I8,
            NodePrecision::Fp16 => DType::F16,
        };
        let q = (prec == NodePrecision::Int8).then(|| self.tq(inputs[0]));
        let out = self.new_tensor(id, dtype, q, "")?;
        use ops::class_token::{DropTokenF16Op, DropTokenS8Op, PadTokenF16Op, PadTokenS8Op};
        match (what, prec) {
            (TokenRows::Drop, NodePrecision::Int8 | NodePrecision::Int4 | NodePrecision::Int16) => {
                self.op::<DropTokenS8Op>(inputs, out, &p, 0, name)
            }
            (TokenRows::Drop, NodePrecision::Fp16) => {
                self.op::<DropTokenF16Op>(inputs, out, &p, 0, name)
            }
            (TokenRows::Pad, NodePrecision::Int8 | NodePrecision::Int4 | NodePrecision::Int16) => {
                self.op::<PadTokenS8Op>(inputs, out, &p, 0, name)
            }
            (TokenRows::Pad, NodePrecision::Fp16) => {
                self.op::<PadTokenF16Op>(inputs, out, &p, 0, name)
            }
        }
        Ok(())
    }

    /// The mean over tokens before the head. int8: one scale and offset map the sum of the
    /// inputs onto the output grid.
    fn mean_pool(&mut self, at: &At) -> Result<(), LowerError> {
        let (graph, id, node, prec, name, inputs) =
            (self.graph, at.id, at.node, at.prec, at.name, &at.inputs);
        let out = self.output(id, prec)?;
        let input = &graph.nodes[node.inputs[0]];
        let (n, c) = (input.tokens() as u32, node.c as u32);
        if prec == NodePrecision::Int8 {
            let (qx, qo) = (self.tq(inputs[0]), self.tq(out));
            let r = qx.scale / qo.scale;
            let p = ops::mean_pool::MeanPoolParams {
                tokens: n,
                channels: c,
                scale: r / n as f32,
                offset: snap_tiny(qo.zero_point as f32 - qx.zero_point as f32 * r),
            };
            self.op::<ops::mean_pool::MeanPoolS8Op>(inputs, out, &p, 0, name);
        } else {
            let p = ops::mean_pool::MeanPoolF16Params {
                tokens: n,
                channels: c,
            };
            self.op::<ops::mean_pool::MeanPoolF16Op>(inputs, out, &p, 0, name);
        }
        Ok(())
    }

    /// Lifetimes, in-place adds and offsets, in one arena part per region of `regions` (fastest
    /// first; none: one contiguous arena).
    fn plan(
        &mut self,
        regions: &[plan::Region],
        views: &[(u16, u16)],
    ) -> Result<(usize, usize), LowerError> {
        let n_tensors = self.w.tensors.len();
        let n_ops = self.w.ops.len();
        let mut first = vec![usize::MAX; n_tensors];
        let mut last = vec![0usize; n_tensors];
        for (i, op) in self.w.ops.iter().enumerate() {
            first[op.output as usize] = first[op.output as usize].min(i);
            last[op.output as usize] = last[op.output as usize].max(i);
            for &t in op.inputs.iter().filter(|&&t| t != fmt::NO_TENSOR) {
                last[t as usize] = last[t as usize].max(i);
            }
        }
        let output = self.w.meta.map(|m| m.output_tensor as usize).unwrap_or(0);
        last[output] = n_ops - 1;
        // Strips of a patch-based run that are rows of another tensor's storage: `(whole, byte
        // offset)`; they are placed with it, and it lives as long as any of them.
        let mut view_of: Vec<Option<(usize, usize)>> = vec![None; n_tensors];
        for &(s, whole) in views {
            let (d, w) = (self.w.tensors[s as usize], self.w.tensors[whole as usize]);
            let row = w.w as usize * w.c as usize * DType::from_u8(w.dtype).map_or(1, DType::size);
            let at = (d.row0 as usize - w.row0 as usize) * row;
            view_of[s as usize] = Some((whole as usize, at));
        }
        // In-place adds: the sum takes over the storage of an operand that dies at the add (not
        // when the sum is a strip written into a whole map, or the op updates its own tensor).
        let mut owner: Vec<usize> = (0..n_tensors).collect();
        for i in 0..n_ops {
            let op = self.w.ops[i];
            if !OpKind::from_u16(op.kind).is_some_and(OpKind::in_place)
                || op.inputs[0] == op.output
                || view_of[op.output as usize].is_some()
            {
                continue;
            }
            let (a, b, o) = (
                op.inputs[0] as usize,
                op.inputs[1] as usize,
                op.output as usize,
            );
            // Of the output's dtype: an int8 operand of an int16 sum has half its bytes.
            let out_dtype = self.w.tensors[o].dtype;
            let dies_here = |t: usize| {
                last[t] == i
                    && a != b
                    && owner[t] == t
                    && view_of[t].is_none()
                    && self.w.tensors[t].dtype == out_dtype
            };
            let pick = if dies_here(a) {
                Some(a)
            } else if dies_here(b) {
                // Swap the operands so the reused one is first (the format's in-place rule).
                let ops = &mut self.w.ops[i];
                ops.inputs.swap(0, 1);
                Some(b)
            } else {
                None
            };
            if let Some(t) = pick {
                owner[o] = t;
            }
        }
        // Swapped adds need their factors swapped too.
        self.fix_swapped_adds();
        // Buffers: one per storage owner, spanning all tensors that share it (a view's owner is
        // the tensor it is rows of).
        let mut at_in_root = vec![0usize; n_tensors];
        let mut buf_of = vec![usize::MAX; n_tensors];
        let mut buffers: Vec<Buffer> = Vec::new();
        for t in 0..n_tensors {
            let root = {
                let mut r = t;
                loop {
                    if let Some((whole, at)) = view_of[r] {
                        at_in_root[t] += at;
                        r = whole;
                    } else if owner[r] != r {
                        r = owner[r];
                    } else {
                        break;
                    }
                }
                r
            };
            if buf_of[root] == usize::MAX {
                buf_of[root] = buffers.len();
                buffers.push(Buffer {
                    size: self.w.tensors[root].byte_len as usize,
                    first: first[root],
                    last: last[root],
                });
            }
            let b = &mut buffers[buf_of[root]];
            b.first = b.first.min(first[t]);
            b.last = b.last.max(last[t]);
            buf_of[t] = buf_of[root];
        }
        let tensor_buffers = buffers.len();
        for (i, op) in self.w.ops.iter().enumerate() {
            buffers.push(Buffer {
                size: op.scratch_len as usize,
                first: i,
                last: i,
            });
        }
        let p = if regions.is_empty() {
            plan::plan(&buffers)
        } else {
            plan::plan_in_regions(&buffers, regions).map_err(|e| {
                let what = if e.buffer >= tensor_buffers {
                    let op = self.w.ops[e.buffer - tensor_buffers];
                    format!("the scratch of op `{}`", self.w.name(op.name))
                } else {
                    let t = buf_of.iter().position(|&b| b == e.buffer).unwrap_or(0);
                    format!("tensor `{}`", self.w.name(self.w.tensors[t].name))
                };
                self.no_room(regions, &buffers[e.buffer], what, e.lower_bound)
            })?
        };
        let mut splits = [0u32; fmt::MAX_ARENA_PARTS - 1];
        if p.splits.len() > splits.len() {
            return Err(LowerError::TooLarge {
                node: "the arena plan".into(),
                what: "more memory regions than arena parts",
            });
        }
        for (s, &at) in splits.iter_mut().zip(&p.splits) {
            *s = u32::try_from(at).map_err(|_| LowerError::TooLarge {
                node: "the arena plan".into(),
                what: "an arena split",
            })?;
        }
        self.w.arena_splits = splits;
        for (t, &b) in buf_of.iter().enumerate() {
            self.w.tensors[t].arena_offset = (p.offsets[b] + at_in_root[t]) as u32;
        }
        for (i, op) in self.w.ops.iter_mut().enumerate() {
            op.scratch_offset = if op.scratch_len == 0 {
                0
            } else {
                p.offsets[tensor_buffers + i] as u32
            };
        }
        Ok((p.arena_len, p.lower_bound))
    }

    /// The error for `buffer` (described by `what`) finding no room in `regions`.
    fn no_room(
        &self,
        regions: &[plan::Region],
        buffer: &plan::Buffer,
        what: String,
        lower_bound: usize,
    ) -> LowerError {
        let n = crate::text::grouped;
        // The fastest of the largest regions (max_by_key keeps the last of equals).
        let largest = regions.iter().rev().max_by_key(|r| r.room);
        let total: usize = regions.iter().map(|r| r.room).sum();
        let size = buffer.size.next_multiple_of(plan::ALIGN);
        let why = match largest {
            Some(r) if size > r.room => format!(
                "; the largest, {}, is {} bytes too small for it",
                r.name,
                n(size as u64 - r.room as u64)
            ),
            _ if lower_bound > total => format!(
                "; the model has {} bytes live at once at its busiest op, {} more than the regions' {} in total",
                n(lower_bound as u64),
                n((lower_bound - total) as u64),
                n(total as u64)
            ),
            _ => format!(
                "; the model has {} bytes live at once at its busiest op against the regions' {} in total, but the pieces do not pack",
                n(lower_bound as u64),
                n(total as u64)
            ),
        };
        LowerError::ArenaDoesNotFit {
            regions: regions
                .iter()
                .map(|r| format!("{} ({} bytes)", r.name, n(r.room as u64)))
                .collect::<Vec<_>>()
                .join(", "),
            buffer: what,
            size: n(buffer.size as u64),
            first: buffer.first,
            last: buffer.last,
            why,
        }
    }

    /// After operand swaps, recompute each int8 add's factors from its tensors so `ra` belongs to
    /// the first operand.
    fn fix_swapped_adds(&mut self) {
        for i in 0..self.w.ops.len() {
            let op = self.w.ops[i];
            let kind = OpKind::from_u16(op.kind);
            if kind != Some(OpKind::AddS8) && kind != Some(OpKind::AddS16) {
                continue;
            }
            let (qa, qb, qo) = (
                self.tq(op.inputs[0]),
                self.tq(op.inputs[1]),
                self.tq(op.output),
            );
            let p = add_params(qa, qb, qo);
            if kind == Some(OpKind::AddS8) {
                self.w.replace_params::<ops::add::AddS8Op>(i, &p);
            } else {
                self.w.replace_params::<ops::add::AddS16Op>(i, &p);
            }
        }
    }
}

/// Lowers `graph` with per-node `precision` using `calib` ranges; the first op takes `input`.
pub fn lower(
    graph: &Graph,
    calib: &Calibration,
    precision: &[NodePrecision],
    method: CalibMethod,
    input: &ImageInput,
    regions: &[plan::Region],
    patch: Patch,
) -> Result<Lowered, LowerError> {
    let mut e = Emitter {
        graph,
        calib,
        method,
        input,
        w: BlobWriter::new(),
        produced: HashMap::new(),
    };
    for (id, &p) in precision.iter().enumerate().take(graph.nodes.len()) {
        e.node(id, p)?;
    }
    let image = &graph.nodes[0];
    let out_node = &graph.nodes[graph.output];
    // The output as its node produced it (a conversion of it made for another node comes later).
    let output = [DType::I8, DType::F16, DType::I16]
        .iter()
        .filter_map(|&d| e.produced.get(&(graph.output, d)).copied())
        .min()
        .expect("the output node was lowered");
    let input_tensor = e.w.ops[0].output;
    let macs = graph.macs();
    let all_int8 = precision.iter().all(|&p| p == NodePrecision::Int8);
    let all_fp16 = precision.iter().all(|&p| p == NodePrecision::Fp16);
    let name = e.w.string(&graph.name);
    e.w.meta = Some(fmt::ModelMeta {
        input_channels: u16_of(image.c, image, "channels")?,
        input_height: u16_of(image.h, image, "height")?,
        input_width: u16_of(image.w, image, "width")?,
        num_classes: u16_of(out_node.c, out_node, "classes")?,
        input_tensor,
        output_tensor: output,
        precision: if all_int8 {
            fmt::Precision::Int8
        } else if all_fp16 {
            fmt::Precision::Fp16
        } else {
            fmt::Precision::Mixed
        } as u8,
        reserved0: [0; 3],
        macs: [macs as u32, (macs >> 32) as u32],
        name,
        reserved: [0; 4],
    });
    let (arena_len, lower_bound, patched) = e.plan_patched(regions, patch)?;
    e.w.arena_len = u32::try_from(arena_len).map_err(|_| LowerError::TooLarge {
        node: "the arena plan".into(),
        what: "the arena length",
    })?;
    e.w.arena_lower_bound = lower_bound as u32;
    Ok(Lowered {
        blob: e.w.finish(),
        arena_len,
        lower_bound,
        patched,
    })
}

/// An arena plan: its length, its lower bound and, when patched, what was.
type PlannedArena = (usize, usize, Option<Patched>);

/// MACs the ops of a blob being written execute (a patched blob's strips recompute some).
fn executed_macs(w: &BlobWriter) -> u64 {
    w.ops.iter().map(|op| op.macs as u64).sum()
}

impl Emitter<'_> {
    /// Plans the arena layer by layer or with the first cells in strips, as `patch` asks: the
    /// arena length, its lower bound and, when patched, what was.
    fn plan_patched(
        &mut self,
        regions: &[plan::Region],
        choice: Patch,
    ) -> Result<PlannedArena, LowerError> {
        let layered = self.w.clone();
        let in_strips = |plan: patch::Strips, emitter: &mut Self| {
            emitter.w = layered.clone();
            let patched = patch::patch(&mut emitter.w, plan)?;
            Some(
                emitter
                    .plan(regions, &patched.views)
                    .map(|(len, lb)| (len, lb, Some(patched))),
            )
        };
        match choice {
            Patch::Off => self.plan(regions, &[]).map(|(len, lb)| (len, lb, None)),
            Patch::Strips(plan) => in_strips(plan, self).unwrap_or_else(|| {
                Err(LowerError::NoPatch {
                    rows: plan.rows,
                    why: patch::why_not(&layered),
                })
            }),
            Patch::Auto => match self.plan(regions, &[]) {
                Ok((len, lb)) => Ok((len, lb, None)),
                Err(e @ LowerError::ArenaDoesNotFit { .. }) => {
                    // Of the strips that fit, the smallest arena among those that recompute at
                    // most AUTO_EXTRA_MACS more MACs; when none is that cheap, the fewest extra
                    // MACs (the tallest strips that fit).
                    let model_macs = self.graph.macs();
                    let mut best: Option<(PlannedArena, BlobWriter, u64)> = None;
                    let candidates = patch::candidate_rows(&layered);
                    let plans = candidates.iter().flat_map(|&rows| {
                        [(false, false), (true, false), (false, true), (true, true)].map(
                            |(keep_qv, keep_halos)| patch::Strips {
                                rows,
                                keep_qv,
                                keep_halos,
                            },
                        )
                    });
                    for candidate in plans {
                        let Some(Ok(planned)) = in_strips(candidate, self) else {
                            continue;
                        };
                        let extra = executed_macs(&self.w).saturating_sub(model_macs);
                        let cheap = |x: u64| x as f64 <= patch::AUTO_EXTRA_MACS * model_macs as f64;
                        let better = match &best {
                            None => true,
                            Some((b, _, b_extra)) => match (cheap(extra), cheap(*b_extra)) {
                                (true, true) => planned.0 < b.0,
                                (true, false) => true,
                                (false, true) => false,
                                (false, false) => extra < *b_extra,
                            },
                        };
                        if better {
                            best = Some((planned, self.w.clone(), extra));
                        }
                    }
                    match best {
                        Some((planned, w, _)) => {
                            self.w = w;
                            Ok(planned)
                        }
                        None => {
                            self.w = layered;
                            Err(e)
                        }
                    }
                }
                Err(e) => Err(e),
            },
            Patch::Smallest => {
                let mut best = self.plan(regions, &[]).map(|(len, lb)| (len, lb, None));
                let mut best_w = self.w.clone();
                for rows in patch::candidate_rows(&layered) {
                    if let Some(Ok(planned)) = in_strips(
                        patch::Strips {
                            rows,
                            keep_qv: false,
                            keep_halos: false,
                        },
                        self,
                    ) && !best.as_ref().is_ok_and(|b| b.0 <= planned.0)
                    {
                        best = Ok(planned);
                        best_w = self.w.clone();
                    }
                }
                self.w = best_w;
                best
            }
        }
    }
}
