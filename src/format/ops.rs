//! Op kinds and their parameter records (one `#[repr(C)]` struct per kind).

use super::DataRef;
use bytemuck::{Pod, Zeroable};

/// What an op computes. Inputs/outputs are listed as (inputs → output).
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum OpKind {
    /// (external f32 NCHW image → int8 NHWC) [`QuantizeParams`].
    QuantizeImage = 1,
    /// (int8 → int8) [`ConvParams`].
    ConvS8 = 2,
    /// (int8 → int8) [`PrmParams`] + [`PrmBranch`] × branches.
    PrmS8 = 3,
    /// (int8 → int8) [`LinearParams`].
    LinearS8 = 4,
    /// (int8 → int8) [`LayerNormParams`].
    LayerNormS8 = 5,
    /// (q, k, v int8 → int8) [`AttentionParams`].
    AttentionS8 = 6,
    /// (k, q, v int8 → int8) [`PerformerParams`].
    PerformerS8 = 7,
    /// (a, b int8 → int8; output may be `a` itself) [`AddParams`].
    AddS8 = 8,
    /// (int8 → int8 vector) [`MeanPoolParams`].
    MeanPoolS8 = 9,
    /// (external f32 NCHW image → fp16 NHWC) no parameters.
    ImageToF16 = 20,
    /// (fp16 → fp16) [`ConvF16Params`].
    ConvF16 = 21,
    /// (fp16 → fp16) [`PrmParams`] + [`PrmBranch`] × branches (requant/lut unused, act in `act`).
    PrmF16 = 22,
    /// (fp16 → fp16) [`LinearF16Params`].
    LinearF16 = 23,
    /// (fp16 → fp16) [`LayerNormF16Params`].
    LayerNormF16 = 24,
    /// (q, k, v fp16 → fp16) [`AttentionF16Params`].
    AttentionF16 = 25,
    /// (k, q, v fp16 → fp16) [`PerformerF16Params`].
    PerformerF16 = 26,
    /// (a, b fp16 → fp16; output may be `a` itself) no parameters.
    AddF16 = 27,
    /// (fp16 → fp16 vector) [`MeanPoolF16Params`].
    MeanPoolF16 = 28,
    /// (int8 → fp16) [`ConvertParams`].
    DequantizeS8 = 40,
    /// (fp16 → int8) [`ConvertParams`].
    QuantizeF16 = 41,
}

impl OpKind {
    /// Every kind.
    pub const ALL: [OpKind; 20] = [
        OpKind::QuantizeImage,
        OpKind::ConvS8,
        OpKind::PrmS8,
        OpKind::LinearS8,
        OpKind::LayerNormS8,
        OpKind::AttentionS8,
        OpKind::PerformerS8,
        OpKind::AddS8,
        OpKind::MeanPoolS8,
        OpKind::ImageToF16,
        OpKind::ConvF16,
        OpKind::PrmF16,
        OpKind::LinearF16,
        OpKind::LayerNormF16,
        OpKind::AttentionF16,
        OpKind::PerformerF16,
        OpKind::AddF16,
        OpKind::MeanPoolF16,
        OpKind::DequantizeS8,
        OpKind::QuantizeF16,
    ];

    /// From the stored value.
    pub fn from_u16(v: u16) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| *k as u16 == v)
    }

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::QuantizeImage => "quantize",
            OpKind::ConvS8 | OpKind::ConvF16 => "conv",
            OpKind::PrmS8 | OpKind::PrmF16 => "prm",
            OpKind::LinearS8 | OpKind::LinearF16 => "linear",
            OpKind::LayerNormS8 | OpKind::LayerNormF16 => "layernorm",
            OpKind::AttentionS8 | OpKind::AttentionF16 => "attention",
            OpKind::PerformerS8 | OpKind::PerformerF16 => "performer",
            OpKind::AddS8 | OpKind::AddF16 => "add",
            OpKind::MeanPoolS8 | OpKind::MeanPoolF16 => "mean-pool",
            OpKind::ImageToF16 => "image-to-f16",
            OpKind::DequantizeS8 => "dequantize",
            OpKind::QuantizeF16 => "quantize",
        }
    }
}

/// Activation codes stored in parameter records.
pub mod act {
    /// No activation.
    pub const NONE: u16 = 0;
    /// GELU (exact erf).
    pub const GELU: u16 = 1;
    /// SiLU.
    pub const SILU: u16 = 2;
}

/// Convolution shape as stored (see [`crate::kernels::conv::ConvGeometry`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ConvGeomRecord {
    pub in_h: u16,
    pub in_w: u16,
    pub in_c: u16,
    pub out_h: u16,
    pub out_w: u16,
    pub out_c: u16,
    pub kh: u16,
    pub kw: u16,
    pub stride_h: u16,
    pub stride_w: u16,
    pub pad_h: u16,
    pub pad_w: u16,
    pub dil_h: u16,
    pub dil_w: u16,
    pub groups: u16,
    /// Reserved, zero.
    pub reserved: u16,
}
const _: () = assert!(core::mem::size_of::<ConvGeomRecord>() == 32);

impl ConvGeomRecord {
    /// As the kernel's geometry type.
    pub fn geometry(&self) -> crate::kernels::conv::ConvGeometry {
        crate::kernels::conv::ConvGeometry {
            in_h: self.in_h as usize,
            in_w: self.in_w as usize,
            in_c: self.in_c as usize,
            out_h: self.out_h as usize,
            out_w: self.out_w as usize,
            out_c: self.out_c as usize,
            kh: self.kh as usize,
            kw: self.kw as usize,
            stride_h: self.stride_h as usize,
            stride_w: self.stride_w as usize,
            pad_h: self.pad_h as usize,
            pad_w: self.pad_w as usize,
            dil_h: self.dil_h as usize,
            dil_w: self.dil_w as usize,
            groups: self.groups as usize,
        }
    }
}

/// [`OpKind::QuantizeImage`]: `q = saturate(round(x · inv_scale) + zero_point)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct QuantizeParams {
    /// `1 / scale` of the output tensor.
    pub inv_scale: f32,
    /// Zero point of the output tensor.
    pub zero_point: i32,
}

/// [`OpKind::ConvS8`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ConvParams {
    /// Shape.
    pub geom: ConvGeomRecord,
    /// Input zero point (also the padding value).
    pub in_zp: i32,
    /// Output zero point (of the pre-activation grid when `lut` is present).
    pub out_zp: i32,
    /// int8 weights, OHWI per group.
    pub weights: DataRef,
    /// int32 bias per output channel (input zero point folded in).
    pub bias: DataRef,
    /// [`crate::quant::Requant`] per output channel.
    pub requant: DataRef,
    /// Optional 256-byte activation table.
    pub lut: DataRef,
}
const _: () = assert!(core::mem::size_of::<ConvParams>() == 72);

/// [`OpKind::PrmS8`] / [`OpKind::PrmF16`] header; `branches` [`PrmBranch`] records follow.
///
/// One input, `branches` dilated convolutions with the same kernel size and stride, each
/// followed by GELU, written dilation-major into one token tensor: branch `b` fills channels
/// `b·branch_channels .. (b+1)·branch_channels` of every output token.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct PrmParams {
    /// Input height.
    pub in_h: u16,
    /// Input width.
    pub in_w: u16,
    /// Input channels.
    pub in_c: u16,
    /// Output height (= width of the token grid).
    pub out_h: u16,
    /// Output width.
    pub out_w: u16,
    /// Output channels of each branch.
    pub branch_channels: u16,
    /// Kernel size (square).
    pub kernel: u16,
    /// Stride.
    pub stride: u16,
    /// Number of branches.
    pub branches: u16,
    /// fp16 only: activation code ([`act`]).
    pub act: u16,
    /// int8 only: input zero point.
    pub in_zp: i32,
}
const _: () = assert!(core::mem::size_of::<PrmParams>() == 24);

/// One PRM branch.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct PrmBranch {
    /// Dilation.
    pub dilation: u16,
    /// Symmetric zero padding.
    pub padding: u16,
    /// int8: zero point of the pre-activation grid.
    pub out_zp: i32,
    /// Weights (int8 or fp16), OHWI.
    pub weights: DataRef,
    /// Bias (int32 or f32).
    pub bias: DataRef,
    /// int8: requantization per output channel.
    pub requant: DataRef,
    /// int8: activation table into the shared output grid.
    pub lut: DataRef,
}
const _: () = assert!(core::mem::size_of::<PrmBranch>() == 40);

/// Most branches a PRM may have.
pub const MAX_PRM_BRANCHES: usize = 8;

/// [`OpKind::LinearS8`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct LinearParams {
    /// Rows of the input.
    pub tokens: u32,
    /// Input features.
    pub in_features: u16,
    /// Output features.
    pub out_features: u16,
    /// Output zero point (of the pre-activation grid when `lut` is present).
    pub out_zp: i32,
    /// int8 weights, `out × in`.
    pub weights: DataRef,
    /// int32 bias (input zero point folded in).
    pub bias: DataRef,
    /// Requantization per output feature.
    pub requant: DataRef,
    /// Optional activation table.
    pub lut: DataRef,
}
const _: () = assert!(core::mem::size_of::<LinearParams>() == 44);

/// [`OpKind::LayerNormS8`]: see [`crate::kernels::layernorm`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct LayerNormParams {
    /// Tokens.
    pub tokens: u32,
    /// Channels.
    pub channels: u16,
    /// Reserved, zero.
    pub reserved: u16,
    /// `eps · C² / s_in²`.
    pub eps_term: f32,
    /// f32 per channel: `γ / s_out`.
    pub gain: DataRef,
    /// f32 per channel: `β / s_out + zp_out`.
    pub offset: DataRef,
}
const _: () = assert!(core::mem::size_of::<LayerNormParams>() == 28);

/// [`OpKind::AttentionS8`]: see [`crate::kernels::attention`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct AttentionParams {
    /// Tokens.
    pub tokens: u32,
    /// Heads.
    pub heads: u16,
    /// Channels per head.
    pub head_dim: u16,
    /// `s_q · s_k · qk_scale`.
    pub logit_scale: f32,
    /// `s_v / s_out`.
    pub out_scale: f32,
    /// Output zero point.
    pub out_zp: i32,
}
const _: () = assert!(core::mem::size_of::<AttentionParams>() == 20);

/// [`OpKind::PerformerS8`]: see [`crate::kernels::performer`]. Inputs are (k, q, v).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct PerformerParams {
    /// Tokens.
    pub tokens: u32,
    /// Channels of k, q, v and the output.
    pub emb: u16,
    /// Random features m.
    pub features: u16,
    /// Scale of k.
    pub k_scale: f32,
    /// Scale of q.
    pub q_scale: f32,
    /// Scale of v.
    pub v_scale: f32,
    /// `1 / s_out`.
    pub out_inv_scale: f32,
    /// Output zero point.
    pub out_zp: i32,
    /// Scale of the int16 `w` (`w ≈ w_scale · w_q`).
    pub w_scale: f32,
    /// int16 `w_q`, `features × emb`.
    pub w: DataRef,
}
const _: () = assert!(core::mem::size_of::<PerformerParams>() == 40);

/// [`OpKind::AddS8`]: see [`crate::kernels::elementwise::AddS8`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct AddParams {
    /// `s_a / s_out`.
    pub ra: f32,
    /// `s_b / s_out`.
    pub rb: f32,
    /// `zp_out − zp_a·ra − zp_b·rb`.
    pub c: f32,
}

/// [`OpKind::MeanPoolS8`]: see [`crate::kernels::elementwise::MeanPoolS8`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct MeanPoolParams {
    /// Tokens averaged.
    pub tokens: u32,
    /// Channels.
    pub channels: u32,
    /// `s_in / (N · s_out)`.
    pub scale: f32,
    /// `zp_out − zp_in · s_in / s_out`.
    pub offset: f32,
}

/// [`OpKind::ConvF16`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ConvF16Params {
    /// Shape.
    pub geom: ConvGeomRecord,
    /// Activation code ([`act`]).
    pub act: u32,
    /// fp16 weights, OHWI per group.
    pub weights: DataRef,
    /// f32 bias.
    pub bias: DataRef,
}
const _: () = assert!(core::mem::size_of::<ConvF16Params>() == 52);

/// [`OpKind::LinearF16`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct LinearF16Params {
    /// Rows.
    pub tokens: u32,
    /// Input features.
    pub in_features: u16,
    /// Output features.
    pub out_features: u16,
    /// Activation code ([`act`]).
    pub act: u32,
    /// fp16 weights, `out × in`.
    pub weights: DataRef,
    /// f32 bias.
    pub bias: DataRef,
}
const _: () = assert!(core::mem::size_of::<LinearF16Params>() == 28);

/// [`OpKind::LayerNormF16`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct LayerNormF16Params {
    /// Tokens.
    pub tokens: u32,
    /// Channels.
    pub channels: u32,
    /// Epsilon.
    pub eps: f32,
    /// f32 γ.
    pub gamma: DataRef,
    /// f32 β.
    pub beta: DataRef,
}

/// [`OpKind::AttentionF16`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct AttentionF16Params {
    /// Tokens.
    pub tokens: u32,
    /// Heads.
    pub heads: u16,
    /// Channels per head.
    pub head_dim: u16,
    /// Logit scale (`head_dim^-1/2`).
    pub qk_scale: f32,
}

/// [`OpKind::PerformerF16`]. Inputs are (k, q, v).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct PerformerF16Params {
    /// Tokens.
    pub tokens: u32,
    /// Channels.
    pub emb: u16,
    /// Random features m.
    pub features: u16,
    /// f32 `w`, `features × emb`.
    pub w: DataRef,
}

/// [`OpKind::MeanPoolF16`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct MeanPoolF16Params {
    /// Tokens averaged.
    pub tokens: u32,
    /// Channels.
    pub channels: u32,
}

/// [`OpKind::DequantizeS8`] (`scale`, `zero_point` of the int8 input) and
/// [`OpKind::QuantizeF16`] (`1/scale`, `zero_point` of the int8 output).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ConvertParams {
    /// Scale (dequantize) or inverse scale (quantize).
    pub scale: f32,
    /// Zero point of the int8 side.
    pub zero_point: i32,
}
