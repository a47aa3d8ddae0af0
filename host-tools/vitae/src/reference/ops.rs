//! f32 building blocks of ViTAE, computed the way PyTorch computes them on a CPU.
//!
//! Shared by the reference engine ([`super::model`]) and by the quantizer, which evaluates its
//! own lowered graph in float for calibration; so every op here is a plain function or a small
//! struct of weights with a `forward`, independent of the model.
//!
//! **Layout.** Activations are `tokens × channels`, row-major: for a feature map that is NHWC of
//! one image with token = `row · width + col`, which is also the device layout. Conv weights are
//! taken in PyTorch's OIHW and rearranged internally. Linear weights are PyTorch's
//! `(out_features, in_features)`.
//!
//! **Speed.** Convolutions are im2col + GEMM; GEMMs go to matrixmultiply (through ndarray's
//! safe API, with runtime AVX/FMA dispatch) and are split across threads by rows with rayon when
//! large enough to pay for it. Transcendentals use branch-free polynomial `exp`/`erf` that the
//! compiler vectorises; their accuracy is tested against f64 `libm` below.

use ndarray::{ArrayView2, ArrayViewMut2, Axis, ShapeBuilder};
use rayon::prelude::*;

/// A shape or parameter mismatch in a call to an op.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op}: {message}")]
pub struct OpError {
    /// The op that refused its arguments.
    pub op: &'static str,
    /// What is wrong.
    pub message: String,
}

fn ensure(
    condition: bool,
    op: &'static str,
    message: impl FnOnce() -> String,
) -> Result<(), OpError> {
    if condition {
        Ok(())
    } else {
        Err(OpError {
            op,
            message: message(),
        })
    }
}

/// One image's activations as a feature map: `height · width` tokens × `channels`, row-major
/// (NHWC with N = 1).
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureMap {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Channels per token.
    pub channels: usize,
    /// `height · width · channels` values; token `y · width + x`, channel fastest.
    pub data: Vec<f32>,
}

impl FeatureMap {
    /// Wraps token-major data, checking its length.
    pub fn new(
        height: usize,
        width: usize,
        channels: usize,
        data: Vec<f32>,
    ) -> Result<Self, OpError> {
        ensure(
            data.len() == height * width * channels,
            "FeatureMap::new",
            || {
                format!(
                    "{height}x{width}x{channels} needs {} values, got {}",
                    height * width * channels,
                    data.len()
                )
            },
        )?;
        Ok(FeatureMap {
            height,
            width,
            channels,
            data,
        })
    }

    /// Converts a PyTorch CHW image to token layout.
    pub fn from_chw(
        channels: usize,
        height: usize,
        width: usize,
        chw: &[f32],
    ) -> Result<Self, OpError> {
        let plane = height * width;
        ensure(
            chw.len() == channels * plane,
            "FeatureMap::from_chw",
            || {
                format!(
                    "{channels}x{height}x{width} needs {} values, got {}",
                    channels * plane,
                    chw.len()
                )
            },
        )?;
        let mut data = vec![0.0; chw.len()];
        for (token, out) in data.chunks_exact_mut(channels).enumerate() {
            for (c, value) in out.iter_mut().enumerate() {
                *value = chw[c * plane + token];
            }
        }
        Ok(FeatureMap {
            height,
            width,
            channels,
            data,
        })
    }

    /// Number of tokens (`height · width`).
    pub fn tokens(&self) -> usize {
        self.height * self.width
    }
}

// ---------------------------------------------------------------------------------------------
// GEMM

/// A read-only strided matrix view over a slice.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// Element `(r, c)` is `data[r · row_stride + c · col_stride]`; checks that every element
    /// is inside `data` and that no two elements share storage.
    pub fn new(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self, OpError> {
        if rows > 0 && cols > 0 {
            let last = (rows - 1) * row_stride + (cols - 1) * col_stride;
            ensure(last < data.len(), "MatRef", || {
                format!(
                    "{rows}x{cols} with strides ({row_stride}, {col_stride}) reaches {last}, slice has {}",
                    data.len()
                )
            })?;
            let distinct = (col_stride >= 1 && row_stride >= cols * col_stride)
                || (row_stride >= 1 && col_stride >= rows * row_stride)
                || rows == 1
                || cols == 1;
            ensure(distinct, "MatRef", || {
                format!("strides ({row_stride}, {col_stride}) overlap")
            })?;
        }
        Ok(MatRef {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    /// A contiguous row-major matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self, OpError> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    fn view(&self) -> Option<ArrayView2<'a, f32>> {
        ArrayView2::from_shape(
            (self.rows, self.cols).strides((self.row_stride, self.col_stride)),
            self.data,
        )
        .ok()
    }
}

/// A writable row-major matrix view with a row stride (columns contiguous).
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
}

impl<'a> MatMut<'a> {
    /// Element `(r, c)` is `data[r · row_stride + c]`; requires `row_stride ≥ cols`.
    pub fn new(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
    ) -> Result<Self, OpError> {
        if rows > 0 && cols > 0 {
            ensure(row_stride >= cols, "MatMut", || {
                format!("row stride {row_stride} < {cols} columns")
            })?;
            let last = (rows - 1) * row_stride + cols - 1;
            ensure(last < data.len(), "MatMut", || {
                format!(
                    "{rows}x{cols} (stride {row_stride}) exceeds slice of {}",
                    data.len()
                )
            })?;
        }
        Ok(MatMut {
            data,
            rows,
            cols,
            row_stride,
        })
    }

    /// A contiguous row-major matrix.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self, OpError> {
        Self::new(data, rows, cols, cols)
    }
}

/// Below this many multiply-adds per piece a GEMM is not split further across threads
/// (thread hand-off and duplicated packing cost more than they save).
const PARALLEL_MIN_MACS: usize = 1 << 19;

/// `c = a · b`, or `c += a · b` when `accumulate`.
///
/// Large products are split into one piece per worker thread, along whichever of `m` (rows of
/// `a`/`c`) or `n` (columns of `b`/`c`) is longer: each piece re-packs the operand it shares
/// with the other pieces, so splitting the longer dimension keeps that duplicated packing
/// small.
pub fn matmul(
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: MatMut<'_>,
    accumulate: bool,
) -> Result<(), OpError> {
    ensure(
        a.cols == b.rows && a.rows == c.rows && b.cols == c.cols,
        "matmul",
        || {
            format!(
                "({}x{}) · ({}x{}) -> ({}x{})",
                a.rows, a.cols, b.rows, b.cols, c.rows, c.cols
            )
        },
    )?;
    if c.rows == 0 || c.cols == 0 {
        return Ok(());
    }
    let a_view = a.view().ok_or_else(|| OpError {
        op: "matmul",
        message: "left operand view".into(),
    })?;
    let b_view = b.view().ok_or_else(|| OpError {
        op: "matmul",
        message: "right operand view".into(),
    })?;
    let c_view = ArrayViewMut2::from_shape((c.rows, c.cols).strides((c.row_stride, 1)), c.data)
        .map_err(|e| OpError {
            op: "matmul",
            message: format!("output view: {e}"),
        })?;
    let macs = a.rows * a.cols * b.cols;
    let pieces = rayon::current_num_threads()
        .min(macs / PARALLEL_MIN_MACS)
        .max(1);
    matmul_pieces(a_view, b_view, c_view, accumulate, pieces);
    Ok(())
}

fn matmul_pieces(
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    mut c: ArrayViewMut2<'_, f32>,
    accumulate: bool,
    pieces: usize,
) {
    let (m, n) = c.dim();
    if pieces <= 1 || (m < 2 && n < 2) {
        if a.ncols() == 0 {
            if !accumulate {
                c.fill(0.0);
            }
            return;
        }
        let beta = if accumulate { 1.0 } else { 0.0 };
        ndarray::linalg::general_mat_mul(1.0, &a, &b, beta, &mut c);
        return;
    }
    let first = pieces / 2;
    let rest = pieces - first;
    if m >= n {
        let mid = m * first / pieces;
        let (a_top, a_bottom) = a.split_at(Axis(0), mid);
        let (c_top, c_bottom) = c.split_at(Axis(0), mid);
        rayon::join(
            || matmul_pieces(a_top, b, c_top, accumulate, first),
            || matmul_pieces(a_bottom, b, c_bottom, accumulate, rest),
        );
    } else {
        let mid = n * first / pieces;
        let (b_left, b_right) = b.split_at(Axis(1), mid);
        let (c_left, c_right) = c.split_at(Axis(1), mid);
        rayon::join(
            || matmul_pieces(a, b_left, c_left, accumulate, first),
            || matmul_pieces(a, b_right, c_right, accumulate, rest),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Element-wise functions

/// `exp(x)` in f32, branch-free (vectorisable): Cody-Waite reduction by ln 2 and a degree-6
/// polynomial; max relative error ~2e-7 on [-87, 88]. Inputs below -87 give 0 (PyTorch gives
/// denormals < 1.7e-38 there), above 88 give e^88.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2^23 rounds to the nearest integer and leaves it in the low mantissa bits:
    // no float->int conversion (whose saturating semantics defeat vectorisation).
    const ROUND: f32 = 12_582_912.0;
    let below = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n through the exponent bits; n ∈ [-126, 127] after the clamp.
    let n_int = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    if below { 0.0 } else { y * scale }
}

/// `erfc(a)` for `a ≥ 0`: the Chebyshev fit of Numerical Recipes §6.2,
/// `t·exp(−a² + P(t))` with `t = 1/(1 + a/2)`, relative error < 1.2e-7 for every `a ≥ 0`.
/// `a²` is passed in so callers can compute it with one rounding (the exponent amplifies
/// its error by `a²`).
#[inline(always)]
fn erfc_nonnegative(a: f32, a_squared: f32) -> f32 {
    const ERFC: [f32; 10] = [
        -1.265_512_2,
        1.000_023_7,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_204,
        1.488_515_9,
        -0.822_152_23,
        0.170_872_77,
    ];
    let t = 1.0 / (1.0 + 0.5 * a);
    let mut poly = ERFC[9];
    for &c in ERFC[..9].iter().rev() {
        poly = poly * t + c;
    }
    t * exp_f32(poly - a_squared)
}

/// `erf(x)` in f32, max absolute error ~1.1e-7 (about one f32 ulp of values near 1), and
/// accurate relative to `x` near 0.
///
/// `|x| < 1`: the Maclaurin series `2/√π · Σ (-1)ⁿ x²ⁿ⁺¹ / (n!(2n+1))` to n = 11 (truncation
/// < 1e-10). `|x| ≥ 1`: `1 − erfc(|x|)` (erfc ≤ 0.16 there). Both are evaluated and one
/// selected, so the function stays branch-free and vectorises.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    const SERIES: [f32; 12] = [
        std::f32::consts::FRAC_2_SQRT_PI,
        -0.376_126_4,
        0.112_837_92,
        -0.026_866_17,
        0.005_223_977_6,
        -8.548_327e-4,
        1.205_533_3e-4,
        -1.492_565e-5,
        1.646_211_4e-6,
        -1.636_584_5e-7,
        1.480_719_3e-8,
        -1.229_055_5e-9,
    ];
    let a = x.abs();
    let s = a * a;
    let mut series = SERIES[11];
    for &c in SERIES[..11].iter().rev() {
        series = series * s + c;
    }
    let small = a * series;
    let large = 1.0 - erfc_nonnegative(a, s);
    let y = if a < 1.0 { small } else { large };
    y.copysign(x)
}

/// GELU with the exact (erf) form, `0.5·x·(1 + erf(x/√2))` — `nn.GELU()`'s default.
///
/// Evaluated as `0.5·x·(2 − erfc(z))` for `z = x/√2 ≥ 0` and `0.5·x·erfc(−z)` below zero, so
/// there is no cancellation in `1 + erf` for negative inputs (unlike a literal evaluation):
/// relative error < 7e-7 wherever |GELU(x)| > 1e-3 (worst near x = -3.25).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    let a = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    // z² = x²/2 with a single rounding.
    let tail = erfc_nonnegative(a, 0.5 * x * x);
    let one_plus_erf = if x >= 0.0 { 2.0 - tail } else { tail };
    0.5 * x * one_plus_erf
}

/// SiLU `x · sigmoid(x)`.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp_f32(-x))
}

/// Element-wise chunk size for parallel activation passes.
const ELEMENTWISE_CHUNK: usize = 1 << 14;

/// Applies [`gelu`] in place.
pub fn gelu_inplace(x: &mut [f32]) {
    x.par_chunks_mut(ELEMENTWISE_CHUNK)
        .for_each(|chunk| chunk.iter_mut().for_each(|v| *v = gelu(*v)));
}

/// Applies [`silu`] in place.
pub fn silu_inplace(x: &mut [f32]) {
    x.par_chunks_mut(ELEMENTWISE_CHUNK)
        .for_each(|chunk| chunk.iter_mut().for_each(|v| *v = silu(*v)));
}

/// `dst += src` element-wise (residual connections).
pub fn add_inplace(dst: &mut [f32], src: &[f32]) -> Result<(), OpError> {
    ensure(dst.len() == src.len(), "add", || {
        format!("lengths {} and {}", dst.len(), src.len())
    })?;
    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
    Ok(())
}

/// Softmax over each row of `cols` values, in place (max-subtracted, like PyTorch).
pub fn softmax_rows_inplace(x: &mut [f32], cols: usize) -> Result<(), OpError> {
    ensure(cols > 0 && x.len().is_multiple_of(cols), "softmax", || {
        format!("{} values are not rows of {cols}", x.len())
    })?;
    x.par_chunks_mut(cols)
        .with_min_len(16)
        .for_each(softmax_row);
    Ok(())
}

fn softmax_row(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    row.iter_mut().for_each(|v| *v = exp_f32(*v - max));
    let inv = 1.0 / sum_lanes(row, |v| v);
    row.iter_mut().for_each(|v| *v *= inv);
}

/// Mean over tokens: `(tokens × channels) -> (channels)` (the head input of T/6M/13M/S).
pub fn mean_pool(x: &[f32], channels: usize) -> Result<Vec<f32>, OpError> {
    ensure(
        channels > 0 && x.len().is_multiple_of(channels) && !x.is_empty(),
        "mean_pool",
        || {
            format!(
                "{} values are not a non-empty set of rows of {channels}",
                x.len()
            )
        },
    )?;
    let tokens = x.len() / channels;
    let mut sums = vec![0.0f64; channels];
    for row in x.chunks_exact(channels) {
        sums.iter_mut()
            .zip(row)
            .for_each(|(s, &v)| *s += f64::from(v));
    }
    Ok(sums
        .into_iter()
        .map(|s| (s / tokens as f64) as f32)
        .collect())
}

/// `MaxPool2d(kernel, stride=kernel, padding=0)` (the `'pooling'` reduction cell): a partial
/// last window is dropped, as PyTorch does; NaN propagates like `torch.max`.
pub fn max_pool2d(x: &FeatureMap, kernel: usize) -> Result<FeatureMap, OpError> {
    max_pool2d_window(x, (kernel, kernel), (kernel, kernel), (0, 0))
}

/// `MaxPool2d(kernel, stride, padding)`, `(rows, columns)` each, as PyTorch computes it:
/// windows `stride` apart, a partial last window dropped, implicit −∞ padding that never wins
/// (at most half the window, as PyTorch requires, so every window holds a real element); NaN
/// propagates like `torch.max`. The device's max-pool op has the same semantics.
pub fn max_pool2d_window(
    x: &FeatureMap,
    (kh, kw): (usize, usize),
    (sh, sw): (usize, usize),
    (ph, pw): (usize, usize),
) -> Result<FeatureMap, OpError> {
    ensure(
        kh > 0
            && kw > 0
            && sh > 0
            && sw > 0
            && 2 * ph <= kh
            && 2 * pw <= kw
            && x.height + 2 * ph >= kh
            && x.width + 2 * pw >= kw,
        "max_pool2d",
        || {
            format!(
                "window {kh}x{kw}, stride {sh}x{sw}, padding {ph}x{pw} on a {}x{} map",
                x.height, x.width
            )
        },
    )?;
    let (h, w, c) = (
        (x.height + 2 * ph - kh) / sh + 1,
        (x.width + 2 * pw - kw) / sw + 1,
        x.channels,
    );
    // The input rows (or columns) window `o` covers, clipped to the map.
    let span = |o: usize, k: usize, s: usize, p: usize, len: usize| {
        (o * s).saturating_sub(p)..(o * s + k - p).min(len)
    };
    let mut out = vec![f32::NEG_INFINITY; h * w * c];
    for (oy, out_row) in out.chunks_exact_mut(w * c).enumerate() {
        for (ox, o) in out_row.chunks_exact_mut(c).enumerate() {
            let cols = span(ox, kw, sw, pw, x.width);
            for iy in span(oy, kh, sh, ph, x.height) {
                let row = &x.data[(iy * x.width + cols.start) * c..][..cols.len() * c];
                for v in row.chunks_exact(c) {
                    for (m, &v) in o.iter_mut().zip(v) {
                        if v > *m || v.is_nan() {
                            *m = v;
                        }
                    }
                }
            }
        }
    }
    FeatureMap::new(h, w, c, out)
}

/// `Σ f(v)` with eight interleaved partial sums. A single running sum has a fixed IEEE order
/// the compiler may not vectorise; eight lanes vectorise and also round less (shorter chains).
#[inline]
pub fn sum_lanes(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = values.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    lanes.iter().sum::<f32>() + rest
}

// ---------------------------------------------------------------------------------------------
// Normalisation and linear layers

/// `nn.LayerNorm(channels, eps)` over the last dimension.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNorm {
    /// Scale γ (`.weight`).
    pub gamma: Vec<f32>,
    /// Shift β (`.bias`).
    pub beta: Vec<f32>,
    /// 1e-6 in NormalCells, 1e-5 inside Token_performer/Token_transformer.
    pub eps: f32,
}

impl LayerNorm {
    /// Normalises each row of `x` (`tokens × gamma.len()`).
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>, OpError> {
        let channels = self.gamma.len();
        ensure(
            self.beta.len() == channels && channels > 0,
            "layer_norm",
            || format!("gamma has {channels} values, beta {}", self.beta.len()),
        )?;
        ensure(x.len().is_multiple_of(channels), "layer_norm", || {
            format!("{} values are not rows of {channels}", x.len())
        })?;
        let mut out = vec![0.0; x.len()];
        out.par_chunks_mut(channels)
            .zip(x.par_chunks(channels))
            .with_min_len(32)
            .for_each(|(out, row)| {
                // Two passes (mean, then squared deviations) as PyTorch does, in f32 with
                // lane-wise partial sums.
                let n = channels as f32;
                let mean = sum_lanes(row, |v| v) / n;
                let var = sum_lanes(row, |v| (v - mean) * (v - mean)) / n;
                let inv = 1.0 / (var + self.eps).sqrt();
                for (((o, &v), &g), &b) in out.iter_mut().zip(row).zip(&self.gamma).zip(&self.beta)
                {
                    *o = (v - mean) * inv * g + b;
                }
            });
        Ok(out)
    }
}

/// `nn.Linear`: `y = x · Wᵀ + b` with `W` of shape `(out_features, in_features)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    /// Input width.
    pub in_features: usize,
    /// Output width.
    pub out_features: usize,
    /// `(out_features, in_features)`, row-major (PyTorch's layout).
    pub weight: Vec<f32>,
    /// `(out_features)`, or `None` for `bias=False`.
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    /// Checks weight and bias sizes.
    pub fn new(
        in_features: usize,
        out_features: usize,
        weight: Vec<f32>,
        bias: Option<Vec<f32>>,
    ) -> Result<Self, OpError> {
        ensure(
            weight.len() == in_features * out_features,
            "Linear::new",
            || {
                format!(
                    "weight has {} values, expected {out_features}x{in_features}",
                    weight.len()
                )
            },
        )?;
        if let Some(b) = &bias {
            ensure(b.len() == out_features, "Linear::new", || {
                format!("bias has {} values, expected {out_features}", b.len())
            })?;
        }
        Ok(Linear {
            in_features,
            out_features,
            weight,
            bias,
        })
    }

    /// Applies the layer to each row of `x` (`rows × in_features`).
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>, OpError> {
        ensure(
            x.len().is_multiple_of(self.in_features.max(1)),
            "linear",
            || format!("{} values are not rows of {}", x.len(), self.in_features),
        )?;
        let rows = x.len().checked_div(self.in_features).unwrap_or(0);
        let mut out = vec![0.0; rows * self.out_features];
        if let Some(bias) = &self.bias {
            out.chunks_exact_mut(self.out_features.max(1))
                .for_each(|row| row.copy_from_slice(bias));
        }
        let a = MatRef::row_major(x, rows, self.in_features)?;
        let b = MatRef::row_major(&self.weight, self.out_features, self.in_features)?.t();
        matmul(
            a,
            b,
            MatMut::row_major(&mut out, rows, self.out_features)?,
            self.bias.is_some(),
        )?;
        Ok(out)
    }
}

/// Inference BatchNorm parameters (`nn.BatchNorm2d` in eval mode).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm {
    /// γ (`.weight`).
    pub gamma: Vec<f32>,
    /// β (`.bias`).
    pub beta: Vec<f32>,
    /// `.running_mean`.
    pub running_mean: Vec<f32>,
    /// `.running_var`.
    pub running_var: Vec<f32>,
    /// 1e-5 (PyTorch default).
    pub eps: f32,
}

/// Folds an eval-mode BatchNorm that follows a conv into the conv (doc §10): per output
/// channel `s = γ/√(var+eps)`, `W' = W·s`, `b' = (b − mean)·s + β`. Works for grouped convs
/// because each output channel owns a contiguous block of the OIHW weight.
pub fn fold_batchnorm(
    weight_oihw: &mut [f32],
    bias: &mut [f32],
    bn: &BatchNorm,
) -> Result<(), OpError> {
    let out = bias.len();
    ensure(
        out > 0
            && weight_oihw.len().is_multiple_of(out)
            && [
                bn.gamma.len(),
                bn.beta.len(),
                bn.running_mean.len(),
                bn.running_var.len(),
            ]
            .iter()
            .all(|&n| n == out),
        "fold_batchnorm",
        || {
            format!(
                "conv has {out} output channels / {} weights; batchnorm sizes differ",
                weight_oihw.len()
            )
        },
    )?;
    let per_channel = weight_oihw.len() / out;
    for (o, filter) in weight_oihw.chunks_exact_mut(per_channel).enumerate() {
        let scale = (f64::from(bn.gamma[o])
            / (f64::from(bn.running_var[o]) + f64::from(bn.eps)).sqrt()) as f32;
        filter.iter_mut().for_each(|w| *w *= scale);
        bias[o] = (bias[o] - bn.running_mean[o]) * scale + bn.beta[o];
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Convolution

/// Geometry of a 2-D convolution (`[height, width]` pairs; symmetric zero padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size.
    pub kernel: [usize; 2],
    /// Stride.
    pub stride: [usize; 2],
    /// Zero padding on each side.
    pub padding: [usize; 2],
    /// Dilation.
    pub dilation: [usize; 2],
    /// Groups (`in_channels` and `out_channels` are multiples).
    pub groups: usize,
}

impl ConvSpec {
    /// A square-kernel spec (what ViTAE uses everywhere).
    pub fn square(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        dilation: usize,
        groups: usize,
    ) -> Self {
        ConvSpec {
            in_channels,
            out_channels,
            kernel: [kernel; 2],
            stride: [stride; 2],
            padding: [padding; 2],
            dilation: [dilation; 2],
            groups,
        }
    }

    fn validate(&self) -> Result<(), OpError> {
        let positive = self
            .kernel
            .iter()
            .chain(&self.stride)
            .chain(&self.dilation)
            .all(|&v| v > 0);
        ensure(positive && self.groups > 0, "ConvSpec", || {
            format!("zero kernel, stride, dilation or groups in {self:?}")
        })?;
        ensure(
            self.in_channels.is_multiple_of(self.groups)
                && self.out_channels.is_multiple_of(self.groups),
            "ConvSpec",
            || {
                format!(
                    "groups {} must divide {} and {}",
                    self.groups, self.in_channels, self.out_channels
                )
            },
        )
    }

    /// Output `(height, width)` for an input size, `None` if the dilated kernel does not fit
    /// the padded input.
    pub fn output_size(&self, height: usize, width: usize) -> Option<(usize, usize)> {
        let dim = |size: usize, axis: usize| {
            let reach = (self.kernel[axis] - 1) * self.dilation[axis] + 1;
            (size + 2 * self.padding[axis])
                .checked_sub(reach)
                .map(|span| span / self.stride[axis] + 1)
        };
        Some((dim(height, 0)?, dim(width, 1)?))
    }

    /// Input channels per group.
    pub fn in_per_group(&self) -> usize {
        self.in_channels / self.groups
    }

    /// Output channels per group.
    pub fn out_per_group(&self) -> usize {
        self.out_channels / self.groups
    }
}

/// `nn.Conv2d` (with bias; BatchNorm folded in beforehand if any).
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2d {
    spec: ConvSpec,
    weight_oihw: Vec<f32>,
    bias: Vec<f32>,
    /// `[out][ky][kx][ci_in_group]`: each output channel's filter in im2col column order, so a
    /// group's filters form the GEMM's right-hand matrix (transposed) without copying.
    packed: Vec<f32>,
    /// `[ky][kx][in_channel][out_in_group]` for grouped convs: per input channel, the weights
    /// of its group's outputs side by side (the inner loop of the direct grouped kernel).
    /// Empty for `groups == 1`.
    direct: Vec<f32>,
}

impl Conv2d {
    /// Builds a conv from PyTorch's OIHW weight (`out × in/groups × kh × kw`) and bias
    /// (`None` means zeros).
    pub fn new(
        spec: ConvSpec,
        weight_oihw: Vec<f32>,
        bias: Option<Vec<f32>>,
    ) -> Result<Self, OpError> {
        spec.validate()?;
        let [kh, kw] = spec.kernel;
        let cg = spec.in_per_group();
        let k = kh * kw * cg;
        ensure(
            weight_oihw.len() == spec.out_channels * k,
            "Conv2d::new",
            || {
                format!(
                    "weight has {} values, expected {}x{cg}x{kh}x{kw}",
                    weight_oihw.len(),
                    spec.out_channels
                )
            },
        )?;
        let bias = bias.unwrap_or_else(|| vec![0.0; spec.out_channels]);
        ensure(bias.len() == spec.out_channels, "Conv2d::new", || {
            format!(
                "bias has {} values, expected {}",
                bias.len(),
                spec.out_channels
            )
        })?;
        let mut packed = vec![0.0; weight_oihw.len()];
        for o in 0..spec.out_channels {
            for ci in 0..cg {
                for ky in 0..kh {
                    for kx in 0..kw {
                        packed[o * k + (ky * kw + kx) * cg + ci] =
                            weight_oihw[((o * cg + ci) * kh + ky) * kw + kx];
                    }
                }
            }
        }
        let mut direct = Vec::new();
        if spec.groups > 1 {
            let og = spec.out_per_group();
            direct = vec![0.0; weight_oihw.len()];
            for o in 0..spec.out_channels {
                let (g, o_local) = (o / og, o % og);
                for ci in 0..cg {
                    let c = g * cg + ci;
                    for tap in 0..kh * kw {
                        direct[(tap * spec.in_channels + c) * og + o_local] =
                            weight_oihw[(o * cg + ci) * kh * kw + tap];
                    }
                }
            }
        }
        Ok(Conv2d {
            spec,
            weight_oihw,
            bias,
            packed,
            direct,
        })
    }

    /// The geometry.
    pub fn spec(&self) -> &ConvSpec {
        &self.spec
    }

    /// The weight as given (OIHW).
    pub fn weight_oihw(&self) -> &[f32] {
        &self.weight_oihw
    }

    /// The bias.
    pub fn bias(&self) -> &[f32] {
        &self.bias
    }

    /// Convolves one feature map.
    pub fn forward(&self, input: &FeatureMap) -> Result<FeatureMap, OpError> {
        let spec = &self.spec;
        ensure(input.channels == spec.in_channels, "conv2d", || {
            format!(
                "input has {} channels, conv expects {}",
                input.channels, spec.in_channels
            )
        })?;
        ensure(
            input.data.len() == input.tokens() * input.channels,
            "conv2d",
            || "input length mismatch".into(),
        )?;
        let (oh, ow) = spec
            .output_size(input.height, input.width)
            .ok_or_else(|| OpError {
                op: "conv2d",
                message: format!(
                    "kernel {:?} (dilation {:?}) does not fit a {}x{} input",
                    spec.kernel, spec.dilation, input.height, input.width
                ),
            })?;
        let positions = oh * ow;
        let (groups, cg, og) = (spec.groups, spec.in_per_group(), spec.out_per_group());
        let k = spec.kernel[0] * spec.kernel[1] * cg;
        let cout = spec.out_channels;
        // Small per-group widths (ViTAE's NormalCell PCMs: 4 or 8 channels per group) are
        // faster computed directly than as many tiny GEMMs.
        let direct = match og {
            _ if groups == 1 => None,
            1 => Some(self.forward_direct::<1>(input, oh, ow)),
            2 => Some(self.forward_direct::<2>(input, oh, ow)),
            4 => Some(self.forward_direct::<4>(input, oh, ow)),
            8 => Some(self.forward_direct::<8>(input, oh, ow)),
            16 => Some(self.forward_direct::<16>(input, oh, ow)),
            _ => None,
        };
        if let Some(out) = direct {
            return FeatureMap::new(oh, ow, cout, out);
        }
        let columns = self.im2col(input, oh, ow);
        let mut out = vec![0.0; positions * cout];
        if groups == 1 {
            out.chunks_exact_mut(cout)
                .for_each(|row| row.copy_from_slice(&self.bias));
            let a = MatRef::row_major(&columns, positions, k)?;
            let b = MatRef::row_major(&self.packed, cout, k)?.t();
            matmul(a, b, MatMut::row_major(&mut out, positions, cout)?, true)?;
        } else {
            // Each group's GEMM writes its own contiguous block; interleave into NHWC after.
            let mut grouped = vec![0.0; groups * positions * og];
            grouped
                .par_chunks_mut(positions * og)
                .enumerate()
                .try_for_each(|(g, block)| -> Result<(), OpError> {
                    let bias = &self.bias[g * og..(g + 1) * og];
                    block
                        .chunks_exact_mut(og)
                        .for_each(|row| row.copy_from_slice(bias));
                    let a = MatRef::row_major(
                        &columns[g * positions * k..(g + 1) * positions * k],
                        positions,
                        k,
                    )?;
                    let b =
                        MatRef::row_major(&self.packed[g * og * k..(g + 1) * og * k], og, k)?.t();
                    matmul(a, b, MatMut::row_major(block, positions, og)?, true)
                })?;
            out.par_chunks_mut(cout)
                .enumerate()
                .with_min_len(64)
                .for_each(|(p, row)| {
                    for (g, dst) in row.chunks_exact_mut(og).enumerate() {
                        dst.copy_from_slice(&grouped[(g * positions + p) * og..][..og]);
                    }
                });
        }
        FeatureMap::new(oh, ow, cout, out)
    }

    /// Grouped convolution without im2col: for each output position, accumulate every
    /// in-bounds tap's input channels into their group's `OG` outputs (a fixed-width inner
    /// loop the compiler vectorises). Positions run in parallel.
    fn forward_direct<const OG: usize>(
        &self,
        input: &FeatureMap,
        oh: usize,
        ow: usize,
    ) -> Vec<f32> {
        let spec = &self.spec;
        let cg = spec.in_per_group();
        let cin = spec.in_channels;
        let cout = spec.out_channels;
        let [kh, kw] = spec.kernel;
        let (h, w) = (input.height as isize, input.width as isize);
        let mut out = vec![0.0; oh * ow * cout];
        out.par_chunks_mut(cout)
            .enumerate()
            .with_min_len(8)
            .for_each(|(p, out_row)| {
                let (oy, ox) = ((p / ow) as isize, (p % ow) as isize);
                // (input offset, weight offset) of every tap that lands inside the input.
                let mut taps = Vec::with_capacity(kh * kw);
                for ky in 0..kh {
                    let iy = oy * spec.stride[0] as isize + (ky * spec.dilation[0]) as isize
                        - spec.padding[0] as isize;
                    for kx in 0..kw {
                        let ix = ox * spec.stride[1] as isize + (kx * spec.dilation[1]) as isize
                            - spec.padding[1] as isize;
                        if iy >= 0 && iy < h && ix >= 0 && ix < w {
                            taps.push((((iy * w + ix) as usize) * cin, (ky * kw + kx) * cin * OG));
                        }
                    }
                }
                // One group's outputs stay in registers across all taps and input channels.
                for (g, (dst, bias)) in out_row
                    .chunks_exact_mut(OG)
                    .zip(self.bias.chunks_exact(OG))
                    .enumerate()
                {
                    let mut acc = [0.0f32; OG];
                    acc.iter_mut().zip(bias).for_each(|(a, &b)| *a = b);
                    for &(pixel, weights) in &taps {
                        let x = &input.data[pixel + g * cg..][..cg];
                        let wg = &self.direct[weights + g * cg * OG..][..cg * OG];
                        for (&v, wrow) in x.iter().zip(wg.chunks_exact(OG)) {
                            for (a, &wv) in acc.iter_mut().zip(wrow) {
                                *a += v * wv;
                            }
                        }
                    }
                    dst.iter_mut().zip(&acc).for_each(|(d, &a)| *d = a);
                }
            });
        out
    }

    /// Unfolds input patches: `[group][position][ky][kx][ci]`, zeros where the kernel hangs
    /// over the padding.
    fn im2col(&self, input: &FeatureMap, oh: usize, ow: usize) -> Vec<f32> {
        let spec = &self.spec;
        let (groups, cg) = (spec.groups, spec.in_per_group());
        let [kh, kw] = spec.kernel;
        let k = kh * kw * cg;
        let positions = oh * ow;
        let (h, w, c) = (input.height as isize, input.width as isize, input.channels);
        let mut columns = vec![0.0; groups * positions * k];
        columns
            .par_chunks_mut(k)
            .with_min_len(64)
            .enumerate()
            .for_each(|(row_index, row)| {
                let (g, p) = (row_index / positions, row_index % positions);
                let (oy, ox) = ((p / ow) as isize, (p % ow) as isize);
                for ky in 0..kh {
                    let iy = oy * spec.stride[0] as isize + (ky * spec.dilation[0]) as isize
                        - spec.padding[0] as isize;
                    for kx in 0..kw {
                        let ix = ox * spec.stride[1] as isize + (kx * spec.dilation[1]) as isize
                            - spec.padding[1] as isize;
                        let dst = &mut row[(ky * kw + kx) * cg..][..cg];
                        if iy >= 0 && iy < h && ix >= 0 && ix < w {
                            let src = ((iy * w + ix) as usize) * c + g * cg;
                            dst.copy_from_slice(&input.data[src..src + cg]);
                        }
                    }
                }
            });
        columns
    }
}

// ---------------------------------------------------------------------------------------------
// Attention

/// Column block `[offset, offset + width)` of a `rows × stride` row-major matrix as a view.
fn columns_of(
    data: &[f32],
    rows: usize,
    stride: usize,
    offset: usize,
    width: usize,
) -> Result<MatRef<'_>, OpError> {
    ensure(offset + width <= stride, "columns", || {
        format!("columns {offset}..{} of {stride}", offset + width)
    })?;
    MatRef::new(
        data.get(offset..).unwrap_or_default(),
        rows,
        width,
        stride,
        1,
    )
}

/// Scaled dot-product attention over heads, reading q, k, v from a packed projection.
///
/// `qkv` is `tokens × (3 · heads · head_dim)` in PyTorch's `reshape(B, N, 3, heads, head_dim)`
/// order (`[q|k|v]`, each head-major). Returns `softmax(q·kᵀ·scale)·v` with the heads
/// concatenated (`tokens × heads·head_dim`), i.e. the input of the output projection.
pub fn scaled_dot_product_attention(
    qkv: &[f32],
    tokens: usize,
    heads: usize,
    head_dim: usize,
    scale: f32,
) -> Result<Vec<f32>, OpError> {
    let width = heads * head_dim;
    ensure(qkv.len() == tokens * 3 * width, "attention", || {
        format!(
            "qkv has {} values, expected {tokens}x{}",
            qkv.len(),
            3 * width
        )
    })?;
    let per_head: Vec<Vec<f32>> = (0..heads)
        .into_par_iter()
        .map(|h| -> Result<Vec<f32>, OpError> {
            let q = columns_of(qkv, tokens, 3 * width, h * head_dim, head_dim)?;
            let k = columns_of(qkv, tokens, 3 * width, width + h * head_dim, head_dim)?;
            let v = columns_of(qkv, tokens, 3 * width, 2 * width + h * head_dim, head_dim)?;
            let mut scores = vec![0.0; tokens * tokens];
            matmul(
                q,
                k.t(),
                MatMut::row_major(&mut scores, tokens, tokens)?,
                false,
            )?;
            scores.iter_mut().for_each(|s| *s *= scale);
            softmax_rows_inplace(&mut scores, tokens)?;
            let mut out = vec![0.0; tokens * head_dim];
            matmul(
                MatRef::row_major(&scores, tokens, tokens)?,
                v,
                MatMut::row_major(&mut out, tokens, head_dim)?,
                false,
            )?;
            Ok(out)
        })
        .collect::<Result<_, _>>()?;
    let mut out = vec![0.0; tokens * width];
    for (h, head) in per_head.iter().enumerate() {
        for (dst, src) in out.chunks_exact_mut(width).zip(head.chunks_exact(head_dim)) {
            dst[h * head_dim..(h + 1) * head_dim].copy_from_slice(src);
        }
    }
    Ok(out)
}

/// NormalCell `Attention`: `proj(MHSA(qkv(x)))` with PyTorch's q, k, v order.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiHeadSelfAttention {
    /// `qkv` (C -> 3C).
    pub qkv: Linear,
    /// `proj` (C -> C).
    pub proj: Linear,
    /// Heads.
    pub heads: usize,
    /// Softmax temperature (`qk_scale or head_dim^-0.5`).
    pub scale: f32,
}

impl MultiHeadSelfAttention {
    /// Applies attention to `tokens × C` (already normalised) input.
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>, OpError> {
        let width = self.proj.in_features;
        ensure(
            self.heads > 0
                && width.is_multiple_of(self.heads)
                && self.qkv.out_features == 3 * width,
            "mhsa",
            || {
                format!(
                    "{} heads, qkv out {}, proj in {width}",
                    self.heads, self.qkv.out_features
                )
            },
        )?;
        let tokens = x.len() / self.qkv.in_features.max(1);
        let qkv = self.qkv.forward(x)?;
        let heads =
            scaled_dot_product_attention(&qkv, tokens, self.heads, width / self.heads, self.scale)?;
        self.proj.forward(&heads)
    }
}

/// `Token_performer.attn` (doc §4) and the normal cells' `AttentionPerformer.attn`: linear
/// attention with positive random features.
///
/// `kqv` splits as **k, q, v**; `prm_exp(z) = exp(z·wᵀ − |z|²/2)/√m`;
/// `y = qp·(vᵀ·kp)ᵀ / (qp·Σ_t kp + 1e-8)`; returns `v + proj(y)` (`Token_performer`: the skip
/// goes through v) or `proj(y)` (`AttentionPerformer`, `v_skip = false`).
#[derive(Clone, Debug, PartialEq)]
pub struct PerformerAttention {
    /// `kqv` (dim -> 3·emb).
    pub kqv: Linear,
    /// `proj` (emb -> emb).
    pub proj: Linear,
    /// Frozen random features `w`, `(m, emb)` row-major, loaded from the checkpoint.
    pub w: Vec<f32>,
    /// Number of random features `m`.
    pub features: usize,
    /// Whether v is added to the output (`Token_performer`) or not (`AttentionPerformer`).
    pub v_skip: bool,
}

impl PerformerAttention {
    /// Applies the attention to `tokens × dim` (already `norm1`-normalised) input; returns
    /// `tokens × emb`.
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>, OpError> {
        let emb = self.proj.out_features;
        let m = self.features;
        ensure(
            self.kqv.out_features == 3 * emb && self.w.len() == m * emb && m > 0,
            "performer",
            || {
                format!(
                    "kqv out {}, emb {emb}, w has {} values for m = {m}",
                    self.kqv.out_features,
                    self.w.len()
                )
            },
        )?;
        let tokens = x.len() / self.kqv.in_features.max(1);
        let kqv = self.kqv.forward(x)?;
        let kp = self.random_features(&kqv, tokens, 0)?;
        let qp = self.random_features(&kqv, tokens, emb)?;
        let v = columns_of(&kqv, tokens, 3 * emb, 2 * emb, emb)?;
        // kp summed over tokens, then D = qp · ksum.
        let mut ksum = vec![0.0f32; m];
        for row in kp.chunks_exact(m) {
            ksum.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
        }
        // kptv[n][i] = Σ_t v[t][n] · kp[t][i]   (emb × m)
        let mut kptv = vec![0.0; emb * m];
        matmul(
            v.t(),
            MatRef::row_major(&kp, tokens, m)?,
            MatMut::row_major(&mut kptv, emb, m)?,
            false,
        )?;
        // y[t][n] = Σ_i qp[t][i] · kptv[n][i] / (D[t] + ε)
        let mut y = vec![0.0; tokens * emb];
        matmul(
            MatRef::row_major(&qp, tokens, m)?,
            MatRef::row_major(&kptv, emb, m)?.t(),
            MatMut::row_major(&mut y, tokens, emb)?,
            false,
        )?;
        y.par_chunks_mut(emb)
            .zip(qp.par_chunks(m))
            .with_min_len(64)
            .for_each(|(row, q)| {
                let d: f32 = q.iter().zip(&ksum).map(|(a, b)| a * b).sum();
                let denominator = d + 1e-8;
                row.iter_mut().for_each(|v| *v /= denominator);
            });
        let mut out = self.proj.forward(&y)?;
        if self.v_skip {
            for (dst, src) in out.chunks_exact_mut(emb).zip(kqv.chunks_exact(3 * emb)) {
                add_inplace(dst, &src[2 * emb..])?;
            }
        }
        Ok(out)
    }

    /// `prm_exp` of the `emb` columns starting at `offset` of `kqv`: `tokens × m`.
    fn random_features(
        &self,
        kqv: &[f32],
        tokens: usize,
        offset: usize,
    ) -> Result<Vec<f32>, OpError> {
        let emb = self.proj.out_features;
        let m = self.features;
        let z = columns_of(kqv, tokens, 3 * emb, offset, emb)?;
        let mut wtx = vec![0.0; tokens * m];
        matmul(
            z,
            MatRef::row_major(&self.w, m, emb)?.t(),
            MatMut::row_major(&mut wtx, tokens, m)?,
            false,
        )?;
        let inv_sqrt_m = 1.0 / (m as f32).sqrt();
        wtx.par_chunks_mut(m)
            .zip(kqv.par_chunks(3 * emb))
            .with_min_len(64)
            .for_each(|(row, src)| {
                let half_norm: f32 =
                    src[offset..offset + emb].iter().map(|v| v * v).sum::<f32>() / 2.0;
                row.iter_mut()
                    .for_each(|v| *v = exp_f32(*v - half_norm) * inv_sqrt_m);
            });
        Ok(wtx)
    }
}

/// `Token_transformer.attn` of the Dec-2021 release (doc §5): multi-head attention from `dim`
/// input channels to `in_dim` output channels, qkv **without bias**, head dim `in_dim/heads`,
/// returns `v + proj(attention)` with v's heads concatenated.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenTransformerAttention {
    /// `attn.qkv` (dim -> 3·in_dim, no bias).
    pub qkv: Linear,
    /// `attn.proj` (in_dim -> in_dim).
    pub proj: Linear,
    /// Heads.
    pub heads: usize,
}

impl TokenTransformerAttention {
    /// Applies the attention to `tokens × dim` (already `norm1`-normalised) input.
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>, OpError> {
        let width = self.proj.out_features;
        ensure(
            self.heads > 0
                && width.is_multiple_of(self.heads)
                && self.qkv.out_features == 3 * width,
            "token_transformer",
            || {
                format!(
                    "{} heads, qkv out {}, in_dim {width}",
                    self.heads, self.qkv.out_features
                )
            },
        )?;
        let head_dim = width / self.heads;
        let tokens = x.len() / self.qkv.in_features.max(1);
        let qkv = self.qkv.forward(x)?;
        let attended = scaled_dot_product_attention(
            &qkv,
            tokens,
            self.heads,
            head_dim,
            (head_dim as f32).powf(-0.5),
        )?;
        let mut out = self.proj.forward(&attended)?;
        for (dst, src) in out.chunks_exact_mut(width).zip(qkv.chunks_exact(3 * width)) {
            add_inplace(dst, &src[2 * width..])?;
        }
        Ok(out)
    }
}

/// Transformer MLP: `fc2(GELU(fc1(x)))` (`Mlp`, or `mlp.0`/`mlp.2` in Token_performer).
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    /// First layer.
    pub fc1: Linear,
    /// Second layer.
    pub fc2: Linear,
}

impl Mlp {
    /// Applies the MLP to each row.
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>, OpError> {
        let mut hidden = self.fc1.forward(x)?;
        gelu_inplace(&mut hidden);
        self.fc2.forward(&hidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn exp_matches_f64_to_a_few_ulps() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let exact = f64::from(x).exp();
            worst = worst.max(((f64::from(exp_f32(x)) - exact) / exact).abs());
            x += 0.0173;
        }
        assert!(worst < 3e-7, "max relative error {worst}");
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
    }

    #[test]
    fn erf_and_gelu_match_libm() {
        let mut worst_erf = 0.0f64;
        let mut worst_gelu = 0.0f64;
        let mut x = -12.0f32;
        while x < 12.0 {
            let xd = f64::from(x);
            worst_erf = worst_erf.max((f64::from(erf_f32(x)) - libm::erf(xd)).abs());
            // 1 + erf(z) = erfc(-z): no cancellation in the f64 oracle either.
            let exact_gelu = 0.5 * xd * libm::erfc(-xd / std::f64::consts::SQRT_2);
            // Relative error where |GELU| > 1e-3 (x > -3.4); below that, absolute error
            // under 1e-3 · 5e-7. (Deep in the negative tail GELU is ill-conditioned in f32:
            // rounding x/√2 alone moves exp(-x²/2) by ~x²·6e-8 relative.)
            let scaled = (f64::from(gelu(x)) - exact_gelu).abs() / exact_gelu.abs().max(1e-3);
            worst_gelu = worst_gelu.max(scaled);
            x += 0.001_3;
        }
        assert!(worst_erf < 1.5e-7, "erf max abs error {worst_erf}");
        assert!(worst_gelu < 8e-7, "gelu max scaled error {worst_gelu}");
        let exact_silu = |x: f64| x / (1.0 + (-x).exp());
        for x in [-30.0f32, -3.0, -0.5, 0.0, 0.7, 5.0, 40.0] {
            assert!(
                (f64::from(silu(x)) - exact_silu(f64::from(x))).abs()
                    <= 1e-6 * f64::from(x.abs()).max(1.0),
                "silu({x})"
            );
        }
    }

    /// Direct 7-loop convolution on OIHW/CHW as an independent oracle.
    fn naive_conv(
        spec: &ConvSpec,
        w: &[f32],
        b: &[f32],
        input_chw: &[f32],
        h: usize,
        wd: usize,
    ) -> (Vec<f32>, usize, usize) {
        let (oh, ow) = spec.output_size(h, wd).unwrap();
        let (cg, og) = (spec.in_per_group(), spec.out_per_group());
        let [kh, kw] = spec.kernel;
        let mut out = vec![0.0f64; spec.out_channels * oh * ow];
        for o in 0..spec.out_channels {
            let g = o / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = f64::from(b[o]);
                    for ci in 0..cg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * spec.stride[0] + ky * spec.dilation[0]) as isize
                                    - spec.padding[0] as isize;
                                let ix = (ox * spec.stride[1] + kx * spec.dilation[1]) as isize
                                    - spec.padding[1] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let c = g * cg + ci;
                                acc += f64::from(w[((o * cg + ci) * kh + ky) * kw + kx])
                                    * f64::from(
                                        input_chw[(c * h + iy as usize) * wd + ix as usize],
                                    );
                            }
                        }
                    }
                    out[(o * oh + oy) * ow + ox] = acc;
                }
            }
        }
        (out.into_iter().map(|v| v as f32).collect(), oh, ow)
    }

    #[test]
    fn conv_matches_naive_for_strides_dilations_groups_and_rectangular_kernels() {
        let specs = [
            ConvSpec::square(3, 8, 7, 4, 11, 4, 1),
            ConvSpec::square(6, 12, 3, 2, 1, 1, 3),
            ConvSpec::square(8, 8, 3, 1, 1, 1, 8),
            ConvSpec {
                in_channels: 4,
                out_channels: 6,
                kernel: [3, 1],
                stride: [1, 2],
                padding: [1, 0],
                dilation: [2, 1],
                groups: 2,
            },
            ConvSpec::square(5, 64, 3, 1, 0, 1, 1),
        ];
        for (i, spec) in specs.iter().enumerate() {
            let (h, wd) = (13, 11);
            let w = values(
                spec.out_channels * spec.in_per_group() * spec.kernel[0] * spec.kernel[1],
                i as u64,
            );
            let b = values(spec.out_channels, 100 + i as u64);
            let x = values(spec.in_channels * h * wd, 200 + i as u64);
            let (expected, oh, ow) = naive_conv(spec, &w, &b, &x, h, wd);
            let conv = Conv2d::new(*spec, w, Some(b)).unwrap();
            let out = conv
                .forward(&FeatureMap::from_chw(spec.in_channels, h, wd, &x).unwrap())
                .unwrap();
            assert_eq!(
                (out.height, out.width, out.channels),
                (oh, ow, spec.out_channels)
            );
            for o in 0..spec.out_channels {
                for p in 0..oh * ow {
                    let (got, want) = (
                        out.data[p * spec.out_channels + o],
                        expected[o * oh * ow + p],
                    );
                    assert!(
                        (got - want).abs() < 1e-4,
                        "spec {i} channel {o} position {p}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn conv_rejects_mismatched_weights_and_inputs() {
        let spec = ConvSpec::square(4, 4, 3, 1, 1, 1, 2);
        assert!(Conv2d::new(spec, vec![0.0; 10], None).is_err());
        assert!(Conv2d::new(ConvSpec::square(3, 4, 3, 1, 1, 1, 2), vec![], None).is_err());
        let conv = Conv2d::new(spec, vec![0.0; 4 * 2 * 9], None).unwrap();
        assert!(
            conv.forward(&FeatureMap::new(2, 2, 3, vec![0.0; 12]).unwrap())
                .is_err()
        );
        let tiny = Conv2d::new(ConvSpec::square(1, 1, 5, 1, 0, 1, 1), vec![0.0; 25], None).unwrap();
        assert!(
            tiny.forward(&FeatureMap::new(2, 2, 1, vec![0.0; 4]).unwrap())
                .is_err()
        );
    }

    #[test]
    fn folding_batchnorm_equals_conv_then_batchnorm() {
        let spec = ConvSpec::square(4, 6, 3, 1, 1, 1, 2);
        let w = values(6 * 2 * 9, 1);
        let b = values(6, 2);
        let bn = BatchNorm {
            gamma: values(6, 3).iter().map(|v| v + 1.5).collect(),
            beta: values(6, 4),
            running_mean: values(6, 5),
            running_var: values(6, 6).iter().map(|v| v + 1.2).collect(),
            eps: 1e-5,
        };
        let x = FeatureMap::new(5, 5, 4, values(100, 7)).unwrap();
        let plain = Conv2d::new(spec, w.clone(), Some(b.clone()))
            .unwrap()
            .forward(&x)
            .unwrap();
        let (mut wf, mut bf) = (w, b);
        fold_batchnorm(&mut wf, &mut bf, &bn).unwrap();
        let folded = Conv2d::new(spec, wf, Some(bf))
            .unwrap()
            .forward(&x)
            .unwrap();
        for (i, (&p, &f)) in plain.data.iter().zip(&folded.data).enumerate() {
            let o = i % 6;
            let expected = (p - bn.running_mean[o]) / (bn.running_var[o] + 1e-5).sqrt()
                * bn.gamma[o]
                + bn.beta[o];
            assert!((expected - f).abs() < 1e-5, "{i}: {expected} vs {f}");
        }
        assert!(
            fold_batchnorm(
                &mut [0.0; 4],
                &mut [0.0; 2],
                &BatchNorm {
                    gamma: vec![1.0],
                    ..bn
                }
            )
            .is_err()
        );
    }

    #[test]
    fn matmul_matches_naive_with_transposes_accumulation_and_threading() {
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 2), (700, 300, 40), (64, 0, 3)] {
            let a = values(m * k, 1);
            let b = values(n * k, 2);
            let mut c = values(m * n, 3);
            let before = c.clone();
            let av = MatRef::row_major(&a, m, k).unwrap();
            let bv = MatRef::row_major(&b, n, k).unwrap().t();
            matmul(av, bv, MatMut::row_major(&mut c, m, n).unwrap(), true).unwrap();
            for i in 0..m {
                for j in 0..n {
                    let dot: f64 = (0..k)
                        .map(|t| f64::from(a[i * k + t]) * f64::from(b[j * k + t]))
                        .sum();
                    let want = dot + f64::from(before[i * n + j]);
                    assert!(
                        (f64::from(c[i * n + j]) - want).abs() < 1e-4,
                        "({m},{k},{n}) at ({i},{j})"
                    );
                }
            }
        }
        let a = vec![0.0; 6];
        assert!(
            matmul(
                MatRef::row_major(&a, 2, 3).unwrap(),
                MatRef::row_major(&a, 2, 3).unwrap(),
                MatMut::row_major(&mut [0.0; 4], 2, 2).unwrap(),
                false
            )
            .is_err()
        );
        assert!(MatRef::new(&a, 3, 3, 3, 1).is_err());
        assert!(MatRef::new(&a, 2, 3, 1, 1).is_err());
    }

    #[test]
    fn layer_norm_and_softmax_and_mean_pool() {
        let x = vec![1.0, 2.0, 3.0, 4.0, -1.0, -1.0, -1.0, -1.0];
        let ln = LayerNorm {
            gamma: vec![2.0; 4],
            beta: vec![0.5; 4],
            eps: 1e-5,
        };
        let y = ln.forward(&x).unwrap();
        let inv = 1.0 / (1.25f32 + 1e-5).sqrt();
        assert!((y[0] - (0.5 - 1.5 * inv * 2.0)).abs() < 1e-6);
        assert_eq!(&y[4..], &[0.5; 4]);
        let mut s = vec![1.0, 2.0, 3.0, 1000.0, 1000.0, 1000.0];
        softmax_rows_inplace(&mut s, 3).unwrap();
        let e: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|v| v.exp()).collect();
        let total: f64 = e.iter().sum();
        for i in 0..3 {
            assert!((f64::from(s[i]) - e[i] / total).abs() < 1e-7);
            assert!((s[3 + i] - 1.0 / 3.0).abs() < 1e-7);
        }
        assert_eq!(mean_pool(&x, 4).unwrap(), vec![0.0, 0.5, 1.0, 1.5]);
        assert!(mean_pool(&[], 4).is_err());
        assert!(softmax_rows_inplace(&mut [0.0; 5], 2).is_err());
    }

    /// Naive f64 softmax attention for one head on explicit q, k, v.
    fn naive_attention(
        q: &[Vec<f64>],
        k: &[Vec<f64>],
        v: &[Vec<f64>],
        scale: f64,
    ) -> Vec<Vec<f64>> {
        q.iter()
            .map(|qi| {
                let scores: Vec<f64> = k
                    .iter()
                    .map(|kj| qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>() * scale)
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = e.iter().sum();
                (0..v[0].len())
                    .map(|d| e.iter().zip(v).map(|(p, vj)| p * vj[d]).sum::<f64>() / total)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn attention_uses_q_k_v_head_major_layout() {
        let (tokens, heads, hd) = (5, 2, 3);
        let width = heads * hd;
        let qkv = values(tokens * 3 * width, 9);
        let out = scaled_dot_product_attention(&qkv, tokens, heads, hd, 0.7).unwrap();
        for h in 0..heads {
            let pick = |s: usize| -> Vec<Vec<f64>> {
                (0..tokens)
                    .map(|t| {
                        (0..hd)
                            .map(|d| f64::from(qkv[t * 3 * width + s * width + h * hd + d]))
                            .collect()
                    })
                    .collect()
            };
            let expected = naive_attention(&pick(0), &pick(1), &pick(2), 0.7);
            for t in 0..tokens {
                for d in 0..hd {
                    assert!(
                        (f64::from(out[t * width + h * hd + d]) - expected[t][d]).abs() < 1e-5,
                        "head {h} token {t}"
                    );
                }
            }
        }
    }

    fn linear(rows: usize, cols: usize, seed: u64, bias: bool) -> Linear {
        Linear::new(
            cols,
            rows,
            values(rows * cols, seed),
            bias.then(|| values(rows, seed + 1)),
        )
        .unwrap()
    }

    fn apply(l: &Linear, x: &[f64]) -> Vec<f64> {
        (0..l.out_features)
            .map(|o| {
                let b = l.bias.as_ref().map_or(0.0, |b| f64::from(b[o]));
                b + (0..l.in_features)
                    .map(|i| f64::from(l.weight[o * l.in_features + i]) * x[i])
                    .sum::<f64>()
            })
            .collect()
    }

    #[test]
    fn performer_matches_direct_formula_with_k_q_v_order() {
        let (tokens, dim, emb, m) = (7, 5, 4, 2);
        let p = PerformerAttention {
            kqv: Linear {
                weight: values(3 * emb * dim, 11).iter().map(|v| v * 0.5).collect(),
                ..linear(3 * emb, dim, 11, true)
            },
            proj: linear(emb, emb, 13, true),
            w: values(m * emb, 15),
            features: m,
            v_skip: true,
        };
        let x = values(tokens * dim, 17);
        let got = p.forward(&x).unwrap();
        // AttentionPerformer: the same without the v skip.
        let no_skip = PerformerAttention {
            v_skip: false,
            ..p.clone()
        }
        .forward(&x)
        .unwrap();
        let rows: Vec<Vec<f64>> = (0..tokens)
            .map(|t| {
                apply(
                    &p.kqv,
                    &x[t * dim..(t + 1) * dim]
                        .iter()
                        .map(|&v| f64::from(v))
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        let feature = |z: &[f64]| -> Vec<f64> {
            let half: f64 = z.iter().map(|v| v * v).sum::<f64>() / 2.0;
            (0..m)
                .map(|i| {
                    ((0..emb)
                        .map(|j| f64::from(p.w[i * emb + j]) * z[j])
                        .sum::<f64>()
                        - half)
                        .exp()
                        / (m as f64).sqrt()
                })
                .collect()
        };
        let kp: Vec<Vec<f64>> = rows.iter().map(|r| feature(&r[0..emb])).collect();
        let qp: Vec<Vec<f64>> = rows.iter().map(|r| feature(&r[emb..2 * emb])).collect();
        let v: Vec<&[f64]> = rows.iter().map(|r| &r[2 * emb..]).collect();
        for t in 0..tokens {
            let d: f64 = (0..m)
                .map(|i| qp[t][i] * kp.iter().map(|k| k[i]).sum::<f64>())
                .sum();
            let y: Vec<f64> = (0..emb)
                .map(|n| {
                    (0..m)
                        .map(|i| qp[t][i] * (0..tokens).map(|s| v[s][n] * kp[s][i]).sum::<f64>())
                        .sum::<f64>()
                        / (d + 1e-8)
                })
                .collect();
            let projected = apply(&p.proj, &y);
            let expected: Vec<f64> = projected.iter().zip(v[t]).map(|(a, b)| a + b).collect();
            for n in 0..emb {
                assert!(
                    (f64::from(got[t * emb + n]) - expected[n]).abs() < 1e-5,
                    "token {t} channel {n}"
                );
                assert!(
                    (f64::from(no_skip[t * emb + n]) - projected[n]).abs() < 1e-5,
                    "no skip: token {t} channel {n}"
                );
            }
        }
    }

    #[test]
    fn max_pool_takes_window_maxima_and_drops_partial_windows() {
        // 5x5 map, 2 channels, window 2: a 2x2 output; row and column 4 are dropped.
        let data = values(5 * 5 * 2, 31);
        let x = FeatureMap::new(5, 5, 2, data.clone()).unwrap();
        let y = max_pool2d(&x, 2).unwrap();
        assert_eq!((y.height, y.width, y.channels), (2, 2, 2));
        for oy in 0..2 {
            for ox in 0..2 {
                for c in 0..2 {
                    let expected = (0..2)
                        .flat_map(|dy| (0..2).map(move |dx| (dy, dx)))
                        .map(|(dy, dx)| data[((2 * oy + dy) * 5 + 2 * ox + dx) * 2 + c])
                        .fold(f32::NEG_INFINITY, f32::max);
                    assert_eq!(y.data[(oy * 2 + ox) * 2 + c], expected);
                }
            }
        }
        assert!(max_pool2d(&x, 6).is_err());
        assert!(max_pool2d(&x, 0).is_err());
    }

    #[test]
    fn max_pool_window_pads_with_minus_infinity_and_lets_nan_win() {
        // 3x4 map, 1 channel, window 3, stride 2, padding 1: a 2x2 output whose windows overlap
        // the padding; all values negative, so a padding that counted as 0 would win.
        let mut data: Vec<f32> = (0..12).map(|i| -1.0 - i as f32).collect();
        let x = FeatureMap::new(3, 4, 1, data.clone()).unwrap();
        let y = max_pool2d_window(&x, (3, 3), (2, 2), (1, 1)).unwrap();
        assert_eq!((y.height, y.width), (2, 2));
        // Window (0, 0) covers rows 0..2 and columns 0..2 of the map: its maximum is x[0][0].
        assert_eq!(y.data, vec![-1.0, -2.0, -5.0, -6.0]);
        // A NaN anywhere in a window is that window's maximum, before or after larger values.
        data[5] = f32::NAN;
        let x = FeatureMap::new(3, 4, 1, data).unwrap();
        let y = max_pool2d_window(&x, (3, 3), (2, 2), (1, 1)).unwrap();
        assert!(y.data.iter().all(|v| v.is_nan()), "{:?}", y.data);
        let x = FeatureMap::new(1, 3, 1, vec![f32::NAN, 5.0, 1.0]).unwrap();
        let y = max_pool2d_window(&x, (1, 2), (1, 1), (0, 0)).unwrap();
        assert!(y.data[0].is_nan() && y.data[1] == 5.0);
        // Padding beyond half the window is refused, as PyTorch does.
        assert!(max_pool2d_window(&x, (1, 2), (1, 1), (0, 2)).is_err());
    }

    #[test]
    fn token_transformer_skips_through_concatenated_v() {
        let (tokens, dim, width, heads) = (6, 5, 4, 2);
        let hd = width / heads;
        let tt = TokenTransformerAttention {
            qkv: linear(3 * width, dim, 21, false),
            proj: linear(width, width, 23, true),
            heads,
        };
        let x = values(tokens * dim, 25);
        let got = tt.forward(&x).unwrap();
        let rows: Vec<Vec<f64>> = (0..tokens)
            .map(|t| {
                apply(
                    &tt.qkv,
                    &x[t * dim..(t + 1) * dim]
                        .iter()
                        .map(|&v| f64::from(v))
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        let mut concat = vec![vec![0.0; width]; tokens];
        for h in 0..heads {
            let pick = |s: usize| -> Vec<Vec<f64>> {
                rows.iter()
                    .map(|r| r[s * width + h * hd..s * width + (h + 1) * hd].to_vec())
                    .collect()
            };
            let o = naive_attention(&pick(0), &pick(1), &pick(2), (hd as f64).powf(-0.5));
            for t in 0..tokens {
                concat[t][h * hd..(h + 1) * hd].copy_from_slice(&o[t]);
            }
        }
        for t in 0..tokens {
            let expected: Vec<f64> = apply(&tt.proj, &concat[t])
                .iter()
                .zip(&rows[t][2 * width..])
                .map(|(a, b)| a + b)
                .collect();
            for n in 0..width {
                assert!(
                    (f64::from(got[t * width + n]) - expected[n]).abs() < 1e-5,
                    "token {t} channel {n}"
                );
            }
        }
    }
}
