//! Activation ranges from calibration data: min/max, percentile and MSE-optimal clipping, and the
//! int8 quantization parameters that follow from a range.

use super::gptq::Gram;
use super::graph::{FloatObserver, Graph, Node, NodeId, Role};

/// How to turn observed values into a clipping range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum CalibMethod {
    /// Per tensor kind: min/max for the image, residual sums (LayerNorm inputs: their outlier
    /// channels matter, FQ-ViT) and logits; MSE-optimal for everything else.
    Auto,
    /// The full observed range.
    Minmax,
    /// Clip 0.01 % of the values at each end.
    Percentile,
    /// The range that minimizes the int8 quantization error of the observed values.
    Mse,
}

/// Which values of a node a range is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// The node's output.
    Out,
    /// Before the activation (for PRM: branch `b`).
    Pre(usize),
}

const BINS: usize = 2048;
/// Bytes of one tensor's histogram.
pub(crate) const HISTOGRAM_BYTES: u64 = (BINS * std::mem::size_of::<u64>()) as u64;

/// Values seen for one tensor: min/max, then a histogram over that range.
#[derive(Clone, Debug)]
pub struct Stats {
    /// Smallest value seen.
    pub min: f32,
    /// Largest value seen.
    pub max: f32,
    hist: Vec<u64>,
    count: u64,
}

impl Stats {
    fn new() -> Self {
        Stats {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            hist: Vec::new(),
            count: 0,
        }
    }

    fn see_range(&mut self, xs: &[f32]) {
        for &x in xs {
            if x.is_finite() {
                self.min = self.min.min(x);
                self.max = self.max.max(x);
            }
        }
    }

    fn width(&self) -> f32 {
        ((self.max - self.min) / BINS as f32).max(f32::MIN_POSITIVE)
    }

    fn see_hist(&mut self, xs: &[f32]) {
        if self.hist.is_empty() {
            self.hist = vec![0; BINS];
        }
        let w = self.width();
        for &x in xs {
            if x.is_finite() {
                let b = (((x - self.min) / w) as usize).min(BINS - 1);
                self.hist[b] += 1;
                self.count += 1;
            }
        }
    }

    fn bin_center(&self, b: usize) -> f32 {
        self.min + (b as f32 + 0.5) * self.width()
    }

    /// Value below which `frac` of the observations lie.
    fn quantile(&self, frac: f64) -> f32 {
        let target = (frac * self.count as f64) as u64;
        let mut seen = 0;
        for (b, &c) in self.hist.iter().enumerate() {
            seen += c;
            if seen > target {
                return self.bin_center(b);
            }
        }
        self.max
    }

    /// Squared error of quantizing the observations with range `[lo, hi]` (asymmetric 8-bit).
    fn mse(&self, lo: f32, hi: f32) -> f64 {
        let s = ((hi - lo) / 255.0).max(f32::MIN_POSITIVE) as f64;
        let mut err = 0.0;
        for (b, &c) in self.hist.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let x = self.bin_center(b) as f64;
            let q = ((x - lo as f64) / s).round().clamp(0.0, 255.0);
            let d = x - (lo as f64 + q * s);
            err += d * d * c as f64;
        }
        err
    }

    fn mse_range(&self, symmetric: bool) -> (f32, f32) {
        let (lo0, hi0) = (self.min.min(0.0), self.max.max(0.0));
        let steps = 80;
        let frac = |k: usize| 1.0 - 0.95 * k as f32 / steps as f32;
        if symmetric {
            let a0 = lo0.abs().max(hi0.abs());
            let best = (0..=steps)
                .map(|k| a0 * frac(k))
                .map(|a| (self.mse(-a * 128.0 / 127.0, a), a))
                .min_by(|x, y| x.0.total_cmp(&y.0))
                .map(|(_, a)| a)
                .unwrap_or(a0);
            return (-best, best);
        }
        // Coordinate descent over the two ends.
        let (mut lo, mut hi) = (lo0, hi0);
        for _ in 0..3 {
            lo = (0..=steps)
                .map(|k| lo0 * frac(k))
                .min_by(|a, b| self.mse(*a, hi).total_cmp(&self.mse(*b, hi)))
                .unwrap_or(lo0);
            hi = (0..=steps)
                .map(|k| hi0 * frac(k))
                .min_by(|a, b| self.mse(lo, *a).total_cmp(&self.mse(lo, *b)))
                .unwrap_or(hi0);
        }
        (lo, hi)
    }

    /// The clipping range for `method` and the tensor's role.
    pub fn range(&self, method: CalibMethod, role: Role) -> (f32, f32) {
        if !(self.min.is_finite() && self.max.is_finite()) {
            return (0.0, 0.0);
        }
        let symmetric = role == Role::AttentionInput;
        let method = match method {
            CalibMethod::Auto => match role {
                Role::Image | Role::Residual | Role::Logits | Role::Pooled => CalibMethod::Minmax,
                _ => CalibMethod::Mse,
            },
            m => m,
        };
        match method {
            CalibMethod::Minmax | CalibMethod::Auto => (self.min, self.max),
            CalibMethod::Percentile if self.count > 0 => {
                (self.quantile(1e-4), self.quantile(1.0 - 1e-4))
            }
            CalibMethod::Percentile => (self.min, self.max),
            CalibMethod::Mse if self.count > 0 => self.mse_range(symmetric),
            CalibMethod::Mse => (self.min, self.max),
        }
    }
}

/// int8 quantization of a tensor: `real = scale · (q − zero_point)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QParams {
    /// Scale.
    pub scale: f32,
    /// Zero point.
    pub zero_point: i32,
}

impl QParams {
    /// Asymmetric parameters covering `[lo, hi]` (widened to include 0).
    pub fn asymmetric(lo: f32, hi: f32) -> QParams {
        let (lo, mut hi) = (lo.min(0.0), hi.max(0.0));
        if hi - lo < 1e-8 {
            hi = lo + 1e-8;
        }
        let scale = (hi - lo) / 255.0;
        let zero_point = (-128.0 - lo / scale).round().clamp(-128.0, 127.0) as i32;
        QParams { scale, zero_point }
    }

    /// Symmetric parameters (zero point 0) covering `[-a, a]`, `a = max(|lo|, |hi|)`.
    pub fn symmetric(lo: f32, hi: f32) -> QParams {
        let a = lo.abs().max(hi.abs()).max(1e-8);
        QParams {
            scale: a / 127.0,
            zero_point: 0,
        }
    }

    /// For a tensor of this role with this range.
    pub fn for_role(role: Role, lo: f32, hi: f32) -> QParams {
        if role == Role::AttentionInput {
            QParams::symmetric(lo, hi)
        } else {
            QParams::asymmetric(lo, hi)
        }
    }

    /// `real → q` with the runtime's rounding.
    pub fn quantize(&self, x: f32) -> i8 {
        vitae_edge::quant::quantize_f32(x, 1.0 / self.scale, self.zero_point)
    }

    /// `q → real`.
    pub fn dequantize(&self, q: i8) -> f32 {
        self.scale * (q as i32 - self.zero_point) as f32
    }
}

/// A chosen range is cached per tensor, role and method.
type RangeKey = (NodeId, Slot, Role, CalibMethod);

/// Observed statistics of every tensor of a graph.
#[derive(Clone, Debug, Default)]
pub struct Calibration {
    /// By (node, slot).
    pub stats: std::collections::BTreeMap<(NodeId, Slot), Stats>,
    /// Ranges already chosen (the MSE search is costly and mixed precision lowers many times).
    ranges: std::cell::RefCell<std::collections::HashMap<RangeKey, (f32, f32)>>,
    /// `Σ x xᵀ` of the tensors linear layers read, by the node producing them (for int4 weights:
    /// [`Calibration::collect_grams`]).
    pub grams: std::collections::BTreeMap<NodeId, Gram>,
    /// `Σ p pᵀ` of each convolution's receptive fields, one per group, by the convolution.
    pub conv_grams: std::collections::BTreeMap<NodeId, Vec<Gram>>,
    /// int4 weights already rounded, by linear node (mixed precision lowers many times).
    pub(crate) int4_rows: std::cell::RefCell<std::collections::HashMap<NodeId, Int4Rows>>,
}

/// A layer's int4 weights (one row per output channel, in −7..=7) and the scale of each row.
pub type Int4Rows = (Vec<i8>, Vec<f32>);

/// Images [`Calibration::collect_grams`] uses at most (the correlations settle long before).
pub const GRAM_IMAGES: usize = 64;

/// For each node feeding convolutions: each convolution and its output size.
type ConvConsumers = std::collections::BTreeMap<NodeId, Vec<(NodeId, (usize, usize))>>;

struct GramPass<'a> {
    grams: &'a mut std::collections::BTreeMap<NodeId, Gram>,
    conv_grams: &'a mut std::collections::BTreeMap<NodeId, Vec<Gram>>,
    conv_inputs: &'a ConvConsumers,
    graph: &'a Graph,
}

impl FloatObserver for GramPass<'_> {
    fn node(&mut self, id: NodeId, node: &Node, _pre: &[Vec<f32>], out: &[f32]) {
        if let Some(g) = self.grams.get_mut(&id) {
            g.add(out);
        }
        for &(conv_id, out_size) in self.conv_inputs.get(&id).into_iter().flatten() {
            let super::graph::NodeKind::Conv { conv, .. } = &self.graph.nodes[conv_id].kind else {
                continue;
            };
            if let Some(grams) = self.conv_grams.get_mut(&conv_id) {
                for (group, g) in grams.iter_mut().enumerate() {
                    g.add_patches(out, (node.h, node.w), conv.spec(), group, out_size);
                }
            }
        }
    }
}

struct Pass<'a> {
    calib: &'a mut Calibration,
    histogram: bool,
}

impl FloatObserver for Pass<'_> {
    fn node(&mut self, id: NodeId, _node: &Node, pre: &[Vec<f32>], out: &[f32]) {
        let slots = pre
            .iter()
            .enumerate()
            .map(|(b, v)| (Slot::Pre(b), v.as_slice()))
            .chain([(Slot::Out, out)]);
        for (slot, values) in slots {
            let s = self
                .calib
                .stats
                .entry((id, slot))
                .or_insert_with(Stats::new);
            if self.histogram {
                s.see_hist(values)
            } else {
                s.see_range(values)
            }
        }
    }
}

impl Calibration {
    /// Sums `Σ x xᵀ` of every tensor a linear layer reads, and of every convolution's receptive
    /// fields per group, over up to [`GRAM_IMAGES`] images (the correlations int4 rounding feeds
    /// its errors through, [`super::gptq`]).
    pub fn collect_grams(
        &mut self,
        graph: &Graph,
        images: &[Vec<f32>],
    ) -> Result<(), crate::reference::ops::OpError> {
        let mut conv_inputs = ConvConsumers::new();
        for (id, node) in graph.nodes.iter().enumerate() {
            match &node.kind {
                super::graph::NodeKind::Linear { linear, .. } => {
                    self.grams
                        .entry(node.inputs[0])
                        .or_insert_with(|| Gram::new(linear.in_features));
                }
                super::graph::NodeKind::Conv { conv, .. } => {
                    let s = conv.spec();
                    let k = s.kernel[0] * s.kernel[1] * s.in_per_group();
                    self.conv_grams
                        .insert(id, (0..s.groups).map(|_| Gram::new(k)).collect());
                    conv_inputs
                        .entry(node.inputs[0])
                        .or_default()
                        .push((id, (node.h, node.w)));
                }
                _ => {}
            }
        }
        for img in images.iter().take(GRAM_IMAGES) {
            let mut pass = GramPass {
                grams: &mut self.grams,
                conv_grams: &mut self.conv_grams,
                conv_inputs: &conv_inputs,
                graph,
            };
            graph.eval(img, &mut pass)?;
        }
        Ok(())
    }

    /// Runs the float graph over every image twice: once for min/max, once for histograms.
    /// `progress` is called after each image of each pass with (done, total).
    pub fn collect(
        graph: &Graph,
        images: &[Vec<f32>],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Calibration, crate::reference::ops::OpError> {
        let mut calib = Calibration::default();
        let total = 2 * images.len();
        for (pass, histogram) in [false, true].into_iter().enumerate() {
            for (i, img) in images.iter().enumerate() {
                graph.eval(
                    img,
                    &mut Pass {
                        calib: &mut calib,
                        histogram,
                    },
                )?;
                progress(pass * images.len() + i + 1, total);
            }
        }
        Ok(calib)
    }

    /// The int16 parameters of node `id`'s output (a residual add's sum): symmetric over its
    /// whole observed range (`max |x| / 32767`), no clipping.
    pub fn qparams_int16(&self, id: NodeId) -> QParams {
        let (lo, hi) = self
            .stats
            .get(&(id, Slot::Out))
            .map(|s| s.range(CalibMethod::Minmax, Role::Residual))
            .unwrap_or((0.0, 0.0));
        QParams {
            scale: lo.abs().max(hi.abs()).max(1e-8) / 32767.0,
            zero_point: 0,
        }
    }

    /// The quantization parameters of a tensor.
    pub fn qparams(&self, id: NodeId, slot: Slot, role: Role, method: CalibMethod) -> QParams {
        let key = (id, slot, role, method);
        let cached = self.ranges.borrow().get(&key).copied();
        let (lo, hi) = cached.unwrap_or_else(|| {
            let r = self
                .stats
                .get(&(id, slot))
                .map(|s| s.range(method, role))
                .unwrap_or((0.0, 0.0));
            self.ranges.borrow_mut().insert(key, r);
            r
        });
        QParams::for_role(role, lo, hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qparams_cover_the_range_and_zero() {
        let q = QParams::asymmetric(-1.0, 3.0);
        assert!((q.dequantize(-128) + 1.0).abs() < q.scale);
        assert!((q.dequantize(127) - 3.0).abs() < q.scale);
        assert_eq!(q.dequantize(q.quantize(0.0)), 0.0);
        let s = QParams::symmetric(-2.0, 1.0);
        assert_eq!(s.zero_point, 0);
        assert!((s.scale - 2.0 / 127.0).abs() < 1e-9);
    }

    #[test]
    fn mse_clips_a_heavy_tail_and_beats_minmax() {
        // Laplace-distributed values (inverse CDF on a grid): a long thin tail, as activations have.
        let n = 100_000;
        let xs: Vec<f32> = (1..=n)
            .map(|i| {
                let u = i as f64 / (n as f64 + 1.0);
                let x = -(1.0 - u).ln() as f32;
                if i % 2 == 0 { x } else { -x }
            })
            .collect();
        let mut s = Stats::new();
        s.see_range(&xs);
        s.see_hist(&xs);
        let (lo, hi) = s.range(CalibMethod::Mse, Role::Linear);
        assert!(
            hi < s.max && lo > s.min,
            "MSE range [{lo}, {hi}] should clip the tail of [{}, {}]",
            s.min,
            s.max
        );
        assert!(s.mse(lo, hi) < s.mse(s.min, s.max));
        assert_eq!(s.range(CalibMethod::Minmax, Role::Linear), (s.min, s.max));
        let (plo, phi) = s.range(CalibMethod::Percentile, Role::Linear);
        assert!(phi < s.max && plo > s.min);
    }
}
