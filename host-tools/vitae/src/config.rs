//! Model architecture: the keyword arguments of the official `ViTAE_ViT_basic` constructor,
//! resolved per stage, validated, plus the per-stage facts every consumer needs (feature-map
//! sizes, PRM paddings, PCM strides, token counts) so nobody recomputes them differently.
//!
//! A config comes from a flat `kwargs.json` (official argument names, scalars or per-stage
//! lists — see [`ModelConfig::from_kwargs_json`]) or from a preset name ([`ModelConfig::preset`]).
//! Missing keys take the constructor's defaults. What the official code builds and runs is
//! accepted (in either release: see [`ModelConfig`] for how a config picks one where they
//! differ); everything else is rejected with an error naming the argument and saying why the
//! official code fails on it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::checkpoint::Checkpoint;
use crate::io::{InputKind, ReadFileError, read_file};

/// Preset names accepted by [`ModelConfig::preset`] (current official code, ImageNet head).
pub const PRESETS: [&str; 4] = ["vitae-t", "vitae-6m", "vitae-13m", "vitae-s"];

/// The two releases of the official code, where they build different models from the same
/// arguments (design doc §0, quirk Q1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// The first public release, `Annbless/ViTAE` @ a4c31bb (Dec 2021): `'transformer'` and
    /// `'pooling'` reduction cells have their PCM and `Token_transformer`.
    Dec2021,
    /// `ViTAE-Transformer/ViTAE-Transformer` (2022 on): adds `class_token`, the `'embedding'` and
    /// `'none'` reduction cells and the `*_shallow` normal cells, and builds `'transformer'` and
    /// `'pooling'` reduction cells without PCM and attention (quirk Q1).
    Current,
}

impl Release {
    /// How messages name the release.
    pub fn name(self) -> &'static str {
        match self {
            Release::Dec2021 => "the Dec-2021 release",
            Release::Current => "the current release",
        }
    }
}

/// `RC_tokens_type` of a stage: the official string. What the cell computes is
/// [`ReductionCellInfo::form`], which also depends on the downsample ratio and the release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RcTokensType {
    /// PRM + PCM + `Token_performer` (positive random features), heads must be 1.
    Performer,
    /// PRM only: the dilated-conv tokens are the cell output.
    PerformerLess,
    /// PRM + PCM + `Token_transformer` (Dec-2021); PRM only in the current release (Q1).
    Transformer,
    /// `MaxPool2d(ratio)`, then a `'transformer'` cell at stride 1 on the pooled map (Dec-2021);
    /// max-pool + PRM only in the current release (Q1).
    Pooling,
    /// timm `PatchEmbed` (conv with kernel = stride = ratio) + learned `cls_token` and
    /// `pos_embed` (current release).
    Embedding,
    /// No reduction: the input passes through (current release).
    None,
}

impl RcTokensType {
    /// The official string.
    pub fn name(self) -> &'static str {
        match self {
            RcTokensType::Performer => "performer",
            RcTokensType::PerformerLess => "performer_less",
            RcTokensType::Transformer => "transformer",
            RcTokensType::Pooling => "pooling",
            RcTokensType::Embedding => "embedding",
            RcTokensType::None => "none",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "performer" => RcTokensType::Performer,
            "performer_less" => RcTokensType::PerformerLess,
            "transformer" => RcTokensType::Transformer,
            "pooling" => RcTokensType::Pooling,
            "embedding" => RcTokensType::Embedding,
            "none" => RcTokensType::None,
            _ => return None,
        })
    }
}

/// The attention block of a reduction cell with a PCM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RcAttentionKind {
    /// `Token_performer` (keys `attn.kqv`, `attn.w`, `attn.mlp.0/2`).
    Performer,
    /// `Token_transformer` (keys `attn.attn.qkv` without bias, `attn.mlp.fc1/fc2`).
    Transformer,
}

/// What a reduction cell computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RcForm {
    /// `nn.Identity` (`downsample_ratios[i] = 1`, whatever the type) or `'none'`: no weights,
    /// the input passes through unchanged.
    Identity,
    /// `'embedding'`: `PRM.proj` conv (kernel = stride = ratio, no padding, no activation) to
    /// `token_dim` channels, then `cat(cls_token, tokens) + pos_embed`.
    Embedding,
    /// An optional max-pool ([`ReductionCellInfo::pool`]), the PRM, and with `Some` attention the
    /// PCM, `norm1`, attention (+ v skip), `+ PCM`, `+ MLP(norm2)`.
    Prm {
        /// `None`: the PRM output is the cell output (`performer_less`, and `'transformer'` /
        /// `'pooling'` in the current release).
        attention: Option<RcAttentionKind>,
    },
}

/// How the PRM combines its dilation branches (`RC_op`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrmOp {
    /// Concatenated, branch-major: channel = branch · embed_dim + c.
    Cat,
    /// Summed (each branch after its own GELU): `embed_dim` channels.
    Sum,
}

impl PrmOp {
    /// The official string.
    pub fn name(self) -> &'static str {
        match self {
            PrmOp::Cat => "cat",
            PrmOp::Sum => "sum",
        }
    }
}

/// `NC_tokens_type` of a stage. The current code selects by substring (`'transformer' in t`,
/// else `'performer' in t`; `'shallow' in t` for the PCM); the Dec-2021 code knows exactly
/// `'transformer'` and `'performer'`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NcTokensType {
    /// `Attention` (MHSA) + the 3-conv PCM.
    Transformer,
    /// `AttentionPerformer` (kqv with bias, no v skip, one head) + the 3-conv PCM.
    Performer,
    /// `Attention` + the shallow PCM (conv, BN, SiLU, conv), as ViTAE-B/L/H use.
    TransformerShallow,
    /// `AttentionPerformer` + the shallow PCM.
    PerformerShallow,
}

impl NcTokensType {
    /// The canonical official string.
    pub fn name(self) -> &'static str {
        match self {
            NcTokensType::Transformer => "transformer",
            NcTokensType::Performer => "performer",
            NcTokensType::TransformerShallow => "transformer_shallow",
            NcTokensType::PerformerShallow => "performer_shallow",
        }
    }

    /// Whether the attention is `AttentionPerformer` (else `Attention`).
    pub fn is_performer(self) -> bool {
        matches!(
            self,
            NcTokensType::Performer | NcTokensType::PerformerShallow
        )
    }

    /// Whether the PCM is the shallow one (`PCM.0`, BN `PCM.1`, SiLU, `PCM.3`).
    pub fn is_shallow(self) -> bool {
        matches!(
            self,
            NcTokensType::TransformerShallow | NcTokensType::PerformerShallow
        )
    }

    /// The current code's substring rule.
    fn parse(name: &str) -> Option<Self> {
        let shallow = name.contains("shallow");
        Some(
            match (name.contains("transformer"), name.contains("performer")) {
                (true, _) if shallow => NcTokensType::TransformerShallow,
                (true, _) => NcTokensType::Transformer,
                (false, true) if shallow => NcTokensType::PerformerShallow,
                (false, true) => NcTokensType::Performer,
                (false, false) => return None,
            },
        )
    }
}

/// Why a config was rejected. Messages name the official argument.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error(transparent)]
    Read(#[from] ReadFileError),
    /// The file is not JSON.
    #[error("{}: not valid JSON: {reason}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// Parser message.
        reason: String,
    },
    /// A problem with one argument or combination; `source_name` is the file or preset.
    #[error("{source_name}: {message}")]
    Invalid {
        /// File path or preset name.
        source_name: String,
        /// What is wrong, naming the argument.
        message: String,
    },
    /// An unknown preset name.
    #[error("unknown architecture '{0}'; known: {list}", list = PRESETS.join(", "))]
    UnknownPreset(String),
}

/// Per-stage reduction-cell facts.
#[derive(Clone, Debug, PartialEq)]
pub struct ReductionCellInfo {
    /// The official token type.
    pub tokens_type: RcTokensType,
    /// What the cell computes.
    pub form: RcForm,
    /// `downsample_ratios[i]`: spatial downsampling of the cell (1 for an identity).
    pub ratio: usize,
    /// `Some(r)` for `'pooling'`: `MaxPool2d(r, stride r, padding 0)` on the cell input; the
    /// PRM (at stride 1) and the PCM (strides 1, 1, 1) both read the pooled map.
    pub pool: Option<usize>,
    /// PRM conv stride: `ratio`, or 1 after the max-pool of `'pooling'`.
    pub prm_stride: usize,
    /// PRM kernel size.
    pub kernel_size: usize,
    /// PRM dilations, in branch order.
    pub dilations: Vec<usize>,
    /// PRM zero padding per dilation: `ceil(((k-1)·d + 1 - prm_stride) / 2)`.
    pub prm_paddings: Vec<usize>,
    /// How the PRM branches are combined.
    pub prm_op: PrmOp,
    /// PRM output channels: `len(dilations) · embed_dim` (cat) or `embed_dim` (sum); for
    /// `'embedding'` the patch embedding's `token_dim`; 0 for an identity.
    pub prm_channels: usize,
    /// Strides of the three PCM convs (`ratio` split into powers of two; 1, 1, 1 for pooling).
    pub pcm_strides: [usize; 3],
    /// Conv groups of the PCM.
    pub group: usize,
    /// Attention heads (`RC_heads`).
    pub heads: usize,
    /// Performer random features `m = int(token_dim · 0.5)` (performer only).
    pub performer_features: usize,
    /// Hidden width of the cell's MLP (`int(token_dim · 1.0)`).
    pub mlp_hidden: usize,
}

impl ReductionCellInfo {
    /// The attention block, for cells with PCM + attention.
    pub fn attention(&self) -> Option<RcAttentionKind> {
        match self.form {
            RcForm::Prm { attention } => attention,
            RcForm::Identity | RcForm::Embedding => None,
        }
    }
}

/// Per-stage normal-cell facts.
#[derive(Clone, Debug, PartialEq)]
pub struct NormalCellInfo {
    /// Number of normal cells.
    pub depth: usize,
    /// Token mixer and PCM depth.
    pub tokens_type: NcTokensType,
    /// Attention heads (1 for the performer).
    pub heads: usize,
    /// `token_dim / heads`.
    pub head_dim: usize,
    /// Softmax temperature `qk_scale or head_dim^-0.5` (MHSA only).
    pub scale: f32,
    /// Whether the MHSA qkv has a bias (the performer's kqv always has one).
    pub qkv_bias: bool,
    /// PCM conv groups.
    pub group: usize,
    /// `int(token_dim · mlp_ratio)`: MLP hidden width and PCM hidden channels.
    pub mlp_hidden: usize,
    /// Performer random features `m = int(token_dim · 0.5)` (performer only).
    pub performer_features: usize,
}

/// Everything about one stage (`layers.{index}`).
#[derive(Clone, Debug, PartialEq)]
pub struct StageInfo {
    /// Stage index.
    pub index: usize,
    /// Height = width of the stage's input feature map (without a class token).
    pub input_size: usize,
    /// Channels of the stage's input (`in_chans` for stage 0, else the previous `token_dims`).
    pub input_channels: usize,
    /// Height = width after the reduction cell.
    pub output_size: usize,
    /// Spatial tokens after the reduction cell (`output_size²`), the class token not counted.
    pub tokens: usize,
    /// Whether the stage's activations after its reduction cell start with a class token (from
    /// an `'embedding'` cell in this or an earlier stage); then they hold `1 + tokens` rows.
    pub class_token: bool,
    /// `embed_dims[index]` (PRM/PCM width).
    pub embed_dim: usize,
    /// `token_dims[index]` (the stage's token width).
    pub token_dim: usize,
    /// The reduction cell.
    pub rc: ReductionCellInfo,
    /// The normal cells.
    pub nc: NormalCellInfo,
}

/// Ceilings on the sizes a config may ask for, checked before anything is allocated from them
/// (the official models are far below: 3 stages, 224-448 pixels, dims up to 1280, depth up to 32).
pub mod limits {
    /// Most stages.
    pub const MAX_STAGES: usize = 8;
    /// Largest `img_size`.
    pub const MAX_IMG_SIZE: usize = 1024;
    /// Most input channels.
    pub const MAX_IN_CHANS: usize = 64;
    /// Most classes.
    pub const MAX_CLASSES: usize = 100_000;
    /// Largest embedding, token and hidden (MLP) width.
    pub const MAX_DIM: usize = 16_384;
    /// Most normal cells in one stage (`NC_depth`).
    pub const MAX_DEPTH: usize = 256;
    /// Most attention heads.
    pub const MAX_HEADS: usize = 1024;
    /// Largest `kernel_size`.
    pub const MAX_KERNEL: usize = 31;
    /// Most PRM dilations per stage, and the largest dilation.
    pub const MAX_DILATIONS: usize = 16;
    /// See [`MAX_DILATIONS`].
    pub const MAX_DILATION: usize = 64;
    /// Smallest `qk_scale` other than 0 (the official default is `head_dim^-0.5`, 0.03 to 1
    /// for any real head width).
    pub const MIN_QK_SCALE: f64 = 1e-6;
    /// Largest `qk_scale`: larger ones overflow f32 logits of ordinary size.
    pub const MAX_QK_SCALE: f64 = 1e6;
    /// Largest softmax score matrices of one attention of the f32 reference (a normal cell's
    /// MHSA or a Dec-2021 `Token_transformer`): `heads · tokens²` f32, every head counted since
    /// they may all run at once. The official variants need at most 20 MiB (ViTAE-L and -H at
    /// 384×384: 16 heads of 577 tokens); ViTAE-T at 224×224, 0.6 MiB. Without this ceiling, 224×224
    /// pixels at a downsample ratio of 2 (12,544 tokens) took 630 MB per head.
    pub const MAX_ATTENTION_BYTES: u64 = 256 << 20;
    /// Largest working set of one f32 reference forward pass
    /// ([`super::ModelConfig::reference_footprint`]): the feature maps, im2col columns, q/k/v,
    /// score matrices and MLP activations live at once in the cell that needs most, every
    /// parallel branch (PRM dilations, PCM beside attention, attention heads) counted as running
    /// at the same time. The official variants need at most 167 MiB (ViTAE-H at 384×384);
    /// ViTAE-T at 224×224, 26 MiB. With the weights a checkpoint under 10 MB can hold, a run stays
    /// well below 1 GB of memory (ViTAE-T at 960×960, estimated at 470 MiB, ran in 425 MiB).
    pub const MAX_REFERENCE_BYTES: u64 = 512 << 20;
}

/// What the f32 reference holds at its peak, derived from the config alone (see
/// [`limits::MAX_REFERENCE_BYTES`] for what is counted). An upper bound, not a measurement: it
/// counts every parallel branch as running at once and a convolution's im2col columns even where
/// the direct path needs none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// Bytes of the largest working set of one forward pass.
    pub peak_bytes: u64,
    /// Which cell needs them (e.g. "the normal cells of stage 2").
    pub peak_at: String,
    /// Bytes of the largest attention score matrices (all heads of one attention); 0 without
    /// softmax attention.
    pub attention_bytes: u64,
    /// Which attention (empty without softmax attention).
    pub attention_at: String,
}

/// f32 values of a reference [`Conv2d`](crate::reference::ops::Conv2d) call besides its
/// input: the im2col columns, the output and, for grouped convs, the per-group blocks.
fn conv_values(
    out_size: u64,
    kernel: u64,
    in_channels: u64,
    out_channels: u64,
    groups: u64,
) -> u64 {
    let positions = out_size.saturating_mul(out_size);
    let columns = positions
        .saturating_mul(kernel.saturating_mul(kernel))
        .saturating_mul(in_channels);
    let outputs = positions.saturating_mul(out_channels);
    columns.saturating_add(outputs.saturating_mul(if groups > 1 { 2 } else { 1 }))
}

/// f32 values one reference attention holds besides its input: `(values, scores)`, where
/// `scores` are the softmax matrices of all heads (0 for the performer).
fn attention_values(
    rows: u64,
    width: u64,
    heads: u64,
    performer_features: Option<u64>,
) -> (u64, u64) {
    let rows_of = |cols: u64| rows.saturating_mul(cols);
    match performer_features {
        // kqv, k and q features, kptv, y, proj.
        Some(m) => {
            let values = [
                rows_of(3 * width),
                rows_of(m).saturating_mul(2),
                width.saturating_mul(m),
                rows_of(width).saturating_mul(2),
            ];
            (values.iter().fold(0, |a: u64, &v| a.saturating_add(v)), 0)
        }
        // qkv, per head scores and output, the heads concatenated, proj.
        None => {
            let scores = heads.saturating_mul(rows.saturating_mul(rows));
            let values = [rows_of(3 * width), scores, rows_of(width).saturating_mul(3)];
            (
                values.iter().fold(0, |a: u64, &v| a.saturating_add(v)),
                scores,
            )
        }
    }
}

/// The reference's footprint for resolved stages (see [`Footprint`]); it follows
/// `reference::model::{reduction_cell, normal_cell}` buffer by buffer.
fn reference_footprint(stages: &[StageInfo], img_size: usize, in_chans: usize) -> Footprint {
    let sum = |xs: &[u64]| xs.iter().fold(0u64, |a, &v| a.saturating_add(v));
    let sq = |n: usize| (n as u64).saturating_mul(n as u64);
    // The caller's image and its HWC copy stay alive throughout.
    let image = sq(img_size).saturating_mul(in_chans as u64);
    let mut fp = Footprint {
        peak_bytes: 0,
        peak_at: String::new(),
        attention_bytes: 0,
        attention_at: String::new(),
    };
    let note = |values: u64, scores: u64, at: String, fp: &mut Footprint| {
        let bytes = sum(&[values, image, image]).saturating_mul(4);
        if bytes > fp.peak_bytes {
            fp.peak_bytes = bytes;
            fp.peak_at = at.clone();
        }
        let scores = scores.saturating_mul(4);
        if scores > fp.attention_bytes {
            fp.attention_bytes = scores;
            fp.attention_at = at;
        }
    };
    for s in stages {
        let i = s.index;
        let (cin, e, t) = (
            s.input_channels as u64,
            s.embed_dim as u64,
            s.token_dim as u64,
        );
        let input = sq(s.input_size).saturating_mul(cin);
        let n = sq(s.output_size);
        let rows = s.sequence_len() as u64;
        let rc = &s.rc;
        'rc: {
            match rc.form {
                RcForm::Identity => {}
                RcForm::Embedding => {
                    let proj = conv_values(s.output_size as u64, rc.ratio as u64, cin, t, 1);
                    let values = sum(&[input, proj, rows.saturating_mul(t)]);
                    note(
                        values,
                        0,
                        format!("the reduction cell of stage {i}"),
                        &mut fp,
                    );
                }
                RcForm::Prm { attention } => {
                    let pooled = match rc.pool {
                        Some(r) => sq(s.input_size / r).saturating_mul(cin),
                        None => 0,
                    };
                    let out = s.output_size as u64;
                    let branches = rc.dilations.len() as u64;
                    // Branches side by side, each with its own columns and output, then the concat.
                    let prm = sum(&[
                        branches.saturating_mul(conv_values(out, rc.kernel_size as u64, cin, e, 1)),
                        n.saturating_mul(rc.prm_channels as u64),
                    ]);
                    let cp = rc.prm_channels as u64;
                    let at = format!("the reduction cell of stage {i}");
                    let Some(kind) = attention else {
                        note(sum(&[input, pooled, prm]), 0, at, &mut fp);
                        break 'rc;
                    };
                    // The PCM runs beside the PRM: its largest conv with the previous conv's output.
                    let g = rc.group as u64;
                    let mut size = if rc.pool.is_some() {
                        (s.input_size / rc.ratio) as u64
                    } else {
                        s.input_size as u64
                    };
                    let mut pcm = 0u64;
                    let mut held = 0u64;
                    for (k, &stride) in rc.pcm_strides.iter().enumerate() {
                        size = (size.max(1) - 1) / stride as u64 + 1;
                        let (ci, co) = match k {
                            0 => (cin, e),
                            1 => (e, e),
                            _ => (e, t),
                        };
                        pcm = pcm.max(held.saturating_add(conv_values(size, 3, ci, co, g)));
                        held = sq(size as usize).saturating_mul(co);
                    }
                    note(sum(&[input, pooled, prm, pcm]), 0, at.clone(), &mut fp);
                    // Then norm1 and the attention on the PRM tokens, the PCM output beside them.
                    let (attn, scores) = match kind {
                        RcAttentionKind::Performer => {
                            attention_values(n, t, 1, Some(rc.performer_features as u64))
                        }
                        RcAttentionKind::Transformer => {
                            attention_values(n, t, rc.heads as u64, None)
                        }
                    };
                    let mlp = sum(&[
                        n.saturating_mul(t).saturating_mul(3),
                        n.saturating_mul(rc.mlp_hidden as u64),
                    ]);
                    let values = sum(&[
                        input,
                        pooled,
                        n.saturating_mul(cp).saturating_mul(2),
                        n.saturating_mul(t),
                        attn.max(mlp),
                    ]);
                    note(values, scores, at, &mut fp);
                }
            }
        }
        if s.nc.depth == 0 {
            continue;
        }
        // A normal cell: its input (and the rows with the class token), the PCM beside the
        // attention, then the residual sums and the MLP.
        let nc = &s.nc;
        let (c, h, g) = (t, nc.mlp_hidden as u64, nc.group as u64);
        let x = rows.saturating_mul(c).saturating_mul(2);
        let out = s.output_size as u64;
        let spatial = n;
        let mut pcm = conv_values(out, 3, c, h, g);
        pcm = pcm.max(sum(&[
            spatial.saturating_mul(h),
            conv_values(out, 3, h, c, g),
        ]));
        if !nc.tokens_type.is_shallow() {
            pcm = pcm.max(sum(&[
                spatial.saturating_mul(c),
                conv_values(out, 3, c, c, g),
            ]));
        }
        let features = nc
            .tokens_type
            .is_performer()
            .then_some(nc.performer_features as u64);
        let (attn, scores) = attention_values(rows, c, nc.heads as u64, features);
        let at = format!("the normal cells of stage {i}");
        note(
            sum(&[x, pcm, rows.saturating_mul(c), attn]),
            scores,
            at.clone(),
            &mut fp,
        );
        let mlp = sum(&[
            spatial.saturating_mul(c),
            rows.saturating_mul(c).saturating_mul(4),
            rows.saturating_mul(h),
        ]);
        note(sum(&[x, mlp]), 0, at, &mut fp);
    }
    fp
}

impl StageInfo {
    /// Rows of the activations after the reduction cell: `tokens`, plus the class token.
    pub fn sequence_len(&self) -> usize {
        self.tokens + usize::from(self.class_token)
    }
}

/// A validated ViTAE architecture (official `ViTAE_ViT_basic` arguments, resolved per stage).
///
/// **Which release.** The two releases of the official code build the same model from the same
/// arguments except for `'transformer'` and `'pooling'` reduction cells (at a downsample ratio
/// above 1): the Dec-2021 release gives them a PCM and a `Token_transformer`, the current one
/// silently drops both (quirk Q1: PRM only, after the max-pool for `'pooling'`). The rule:
///
/// 1. arguments only the current release accepts or builds — `class_token = true`, an
///    `'embedding'` or `'none'` reduction cell at a ratio above 1, a normal-cell type other than
///    exactly `'transformer'` / `'performer'` (e.g. `'transformer_shallow'`), a ratio of 16 or
///    more (the Dec-2021 cell asserts below 16) — mean the current release;
/// 2. otherwise a config with `'transformer'` / `'pooling'` reduction cells is the Dec-2021 one
///    ([`ModelConfig::release`] says so, "assumed"), and [`ModelConfig::for_checkpoint`] turns
///    it into the current release's model when the checkpoint has none of those cells' PCM or
///    attention keys (`layers.{i}.RC.PCM.*`, `layers.{i}.RC.attn.*`) and the current release
///    can build it;
/// 3. without such cells both releases build the same model ([`ModelConfig::release`] is `None`).
///
/// The `class_token` key itself (the Dec-2021 constructor has no such argument) is not taken as
/// a sign: `class_token: false` is the current default, and hand-written configs add it freely.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// The raw resolved arguments, by official name, for display.
    kwargs: BTreeMap<String, Value>,
    /// The arguments as given (defaults filled in), to resolve again for the other release.
    given: BTreeMap<String, Value>,
    img_size: usize,
    in_chans: usize,
    num_classes: usize,
    class_token: bool,
    release: Option<Release>,
    /// Why that release (for messages).
    release_reason: String,
    /// The release was assumed (rule 2) and a checkpoint may still change it.
    release_assumed: bool,
    stages: Vec<StageInfo>,
    /// What the f32 reference holds at its peak.
    footprint: Footprint,
    /// File or preset the config came from.
    source_name: String,
}

impl ModelConfig {
    /// Loads a flat kwargs JSON file (like the fixtures' `kwargs.json`).
    pub fn from_kwargs_file(path: &Path) -> Result<Self, ConfigError> {
        let bytes = read_file(path, InputKind::Config)?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| ConfigError::Json {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_kwargs_value(&value, &path.display().to_string())
    }

    /// Parses flat kwargs JSON text; `source_name` is used in messages.
    pub fn from_kwargs_json(text: &str, source_name: &str) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ConfigError::Json {
            path: PathBuf::from(source_name),
            reason: e.to_string(),
        })?;
        Self::from_kwargs_value(&value, source_name)
    }

    /// Resolves a preset: `vitae-t`, `vitae-6m`, `vitae-13m`, `vitae-s` (current official
    /// definitions, 224×224, 1000 classes; `vitae-s` uses token_dims `[96, 192, 384]`).
    pub fn preset(name: &str) -> Result<Self, ConfigError> {
        let (embed, token, depth, heads, mlp_ratio, group): (
            [usize; 3],
            [usize; 3],
            usize,
            usize,
            f64,
            usize,
        ) = match name.to_ascii_lowercase().as_str() {
            "vitae-t" | "vitae_basic_tiny" => ([64, 64, 128], [64, 64, 256], 7, 4, 2.0, 64),
            "vitae-6m" | "vitae_basic_6m" => ([64, 64, 128], [64, 64, 256], 10, 4, 2.0, 64),
            "vitae-13m" | "vitae_basic_13m" => ([64, 64, 160], [64, 64, 320], 11, 5, 2.0, 64),
            "vitae-s" | "vitae_basic_small" => ([64, 64, 192], [96, 192, 384], 14, 6, 3.0, 96),
            _ => return Err(ConfigError::UnknownPreset(name.to_string())),
        };
        let kwargs = serde_json::json!({
            "RC_tokens_type": ["performer", "performer", "performer_less"],
            "NC_tokens_type": ["transformer", "transformer", "transformer"],
            "stages": 3,
            "embed_dims": embed,
            "token_dims": token,
            "downsample_ratios": [4, 2, 2],
            "NC_depth": [0, 0, depth],
            "NC_heads": [1, 1, heads],
            "RC_heads": [1, 1, 1],
            "mlp_ratio": mlp_ratio,
            "NC_group": [1, 1, group],
            "RC_group": [1, 1, 1],
        });
        Self::from_kwargs_value(&kwargs, name)
    }

    /// Parses kwargs from a JSON value.
    pub fn from_kwargs_value(value: &Value, source_name: &str) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            source_name: source_name.to_string(),
            message,
        };
        let Value::Object(map) = value else {
            return Err(invalid(
                "expected a JSON object of ViTAE_ViT_basic keyword arguments".into(),
            ));
        };
        let mut kwargs = defaults();
        for (key, value) in map {
            if !kwargs.contains_key(key) {
                let hint = match key.as_str() {
                    "norm_layer" => " (LayerNorm eps 1e-6 is fixed)",
                    "share_weights" => {
                        " (PRM share_weights=True is not reachable through ViTAE_ViT_basic in either \
                         release: its ReductionCells are always built with share_weights=False)"
                    }
                    _ => "",
                };
                return Err(invalid(format!(
                    "unknown argument '{key}'{hint}; known: {}",
                    kwargs.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            kwargs.insert(key.clone(), value.clone());
        }
        resolve(kwargs, source_name, None).map_err(invalid)
    }

    /// Square input size the model is built for.
    pub fn img_size(&self) -> usize {
        self.img_size
    }

    /// Input channels.
    pub fn in_chans(&self) -> usize {
        self.in_chans
    }

    /// Classifier outputs (0: no classifier, the official head is `nn.Identity`).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Values per image out of the model: `num_classes`, or the width of the pooled features
    /// (after `fc_norm`) when `num_classes = 0`.
    pub fn output_dim(&self) -> usize {
        if self.num_classes == 0 {
            self.feature_dim()
        } else {
            self.num_classes
        }
    }

    /// Per-stage information, in order.
    pub fn stages(&self) -> &[StageInfo] {
        &self.stages
    }

    /// Width of the pooled features (head input): the last stage's `token_dim`.
    pub fn feature_dim(&self) -> usize {
        self.stages.last().map_or(0, |s| s.token_dim)
    }

    /// Number of input elements per image (`in_chans · img_size²`).
    pub fn input_len(&self) -> usize {
        self.in_chans * self.img_size * self.img_size
    }

    /// The resolved keyword arguments by official name (per-stage lists expanded).
    pub fn kwargs(&self) -> &BTreeMap<String, Value> {
        &self.kwargs
    }

    /// Where the config came from (file path or preset name).
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// `class_token`: the head reads `fc_norm(mean(x[:, 1:]))` instead of `mean(x)`.
    pub fn class_token(&self) -> bool {
        self.class_token
    }

    /// The release whose model this is, where the releases differ (`None`: both build the
    /// same model). See the rule on [`ModelConfig`].
    pub fn release(&self) -> Option<Release> {
        self.release
    }

    /// What the f32 reference holds at its peak for one image (checked against
    /// [`limits::MAX_REFERENCE_BYTES`] and [`limits::MAX_ATTENTION_BYTES`] when the config is
    /// resolved).
    pub fn reference_footprint(&self) -> &Footprint {
        &self.footprint
    }

    /// Why [`ModelConfig::release`] is what it is, for messages.
    pub fn release_reason(&self) -> &str {
        &self.release_reason
    }

    /// The config for `checkpoint` (rule 2 on [`ModelConfig`]): a config whose Dec-2021 release
    /// was only assumed becomes the current release's model when the checkpoint has no PCM or
    /// attention key of its `'transformer'` / `'pooling'` reduction cells and the current
    /// release can build it; otherwise the config is returned unchanged, and checking the
    /// checkpoint against it lists the missing keys.
    pub fn for_checkpoint(&self, checkpoint: &Checkpoint) -> ModelConfig {
        if !self.release_assumed {
            return self.clone();
        }
        let prefixes: Vec<[String; 2]> = self
            .stages
            .iter()
            .filter(|s| {
                matches!(
                    s.rc.tokens_type,
                    RcTokensType::Transformer | RcTokensType::Pooling
                ) && s.rc.attention().is_some()
            })
            .map(|s| {
                let p = format!("layers.{}.RC", s.index);
                [format!("{p}.PCM."), format!("{p}.attn.")]
            })
            .collect();
        let has_mixer_keys = checkpoint.keys().any(|key| {
            prefixes
                .iter()
                .flatten()
                .any(|p| key.starts_with(p.as_str()))
        });
        if has_mixer_keys || prefixes.is_empty() {
            let mut config = self.clone();
            if has_mixer_keys {
                config.release_assumed = false;
                config.release_reason = "the checkpoint has PCM/attention keys for its \
                                         'transformer'/'pooling' reduction cells"
                    .into();
            }
            return config;
        }
        match resolve(
            self.given.clone(),
            &self.source_name,
            Some(Release::Current),
        ) {
            Ok(mut config) => {
                config.release_reason = "the checkpoint has no PCM or attention key for its \
                                         'transformer'/'pooling' reduction cells"
                    .into();
                config
            }
            Err(_) => self.clone(),
        }
    }
}

impl fmt::Display for ModelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}x{}x{} -> {} classes",
            self.source_name, self.in_chans, self.img_size, self.img_size, self.num_classes
        )?;
        if let Some(release) = self.release {
            write!(f, ", {}", release.name())?;
        }
        for s in &self.stages {
            let rc = match s.rc.form {
                RcForm::Identity => "identity".to_string(),
                _ => s.rc.tokens_type.name().to_string(),
            };
            let cls = if s.class_token { "1+" } else { "" };
            write!(
                f,
                "; stage {}: RC {rc} {}->{} tokens {cls}{}x{}, {} NC",
                s.index, s.input_size, s.output_size, s.tokens, s.token_dim, s.nc.depth
            )?;
            if s.nc.depth > 0 {
                write!(f, " {}", s.nc.tokens_type.name())?;
            }
        }
        f.write_str(")")
    }
}

/// The official constructor defaults (Dec-2021 and current code agree on these).
fn defaults() -> BTreeMap<String, Value> {
    let v = serde_json::json!({
        "img_size": 224,
        "in_chans": 3,
        "stages": 4,
        "embed_dims": 64,
        "token_dims": 64,
        "downsample_ratios": [4, 2, 2, 2],
        "kernel_size": [7, 3, 3, 3],
        "RC_heads": [1, 1, 1, 1],
        "NC_heads": 4,
        "dilations": [[1, 2, 3, 4], [1, 2, 3], [1, 2], [1, 2]],
        "RC_op": "cat",
        "RC_tokens_type": ["performer", "transformer", "transformer", "transformer"],
        "NC_tokens_type": "transformer",
        "RC_group": [1, 1, 1, 1],
        "NC_group": [1, 32, 64, 64],
        "NC_depth": [2, 2, 6, 2],
        "mlp_ratio": 4.0,
        "qkv_bias": true,
        "qk_scale": null,
        "drop_rate": 0.0,
        "attn_drop_rate": 0.0,
        "drop_path_rate": 0.0,
        "num_classes": 1000,
        "class_token": false,
    });
    match v {
        Value::Object(map) => map.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

fn as_usize(value: &Value) -> Option<usize> {
    value
        .as_u64()
        .and_then(|v| usize::try_from(v).ok())
        .or_else(|| {
            // JSON written by Python may say 4.0 for an int argument.
            value
                .as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1e12)
                .map(|f| f as usize)
        })
}

/// `repeatOrNot(x, stages)`: a list is used as is (extra entries ignored), a scalar repeated.
fn per_stage<T>(
    kwargs: &BTreeMap<String, Value>,
    key: &str,
    stages: usize,
    what: &str,
    parse: impl Fn(&Value) -> Option<T>,
) -> Result<Vec<T>, String> {
    let value = &kwargs[key];
    let items: Vec<&Value> = match value {
        Value::Array(items) => {
            if items.len() < stages {
                return Err(format!(
                    "{key} has {} entries but stages = {stages}",
                    items.len()
                ));
            }
            items.iter().take(stages).collect()
        }
        scalar => vec![scalar; stages],
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            parse(item).ok_or_else(|| format!("{key}[{i}] must be {what}, found {item}"))
        })
        .collect()
}

/// The activations between stages, as the official forward has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    /// The 4-D image: no reduction cell has made tokens yet.
    Image,
    /// `(B, N, C)` tokens of a square map, after the class token that the `'embedding'` cell of
    /// stage `class_token_from` put in front.
    Tokens { class_token_from: Option<usize> },
}

/// Resolves and validates the arguments; `forced` picks the release instead of the rule on
/// [`ModelConfig`].
fn resolve(
    mut kwargs: BTreeMap<String, Value>,
    source_name: &str,
    forced: Option<Release>,
) -> Result<ModelConfig, String> {
    let given = kwargs.clone();
    let scalar_usize = |key: &str| -> Result<usize, String> {
        as_usize(&kwargs[key]).ok_or_else(|| {
            format!(
                "{key} must be a non-negative integer, found {}",
                kwargs[key]
            )
        })
    };
    let img_size = scalar_usize("img_size")?;
    let in_chans = scalar_usize("in_chans")?;
    let stages = scalar_usize("stages")?;
    let num_classes = scalar_usize("num_classes")?;
    if stages == 0 {
        return Err("stages must be at least 1".into());
    }
    use limits::*;
    for (key, value, max) in [
        ("stages", stages, MAX_STAGES),
        ("img_size", img_size, MAX_IMG_SIZE),
        ("in_chans", in_chans, MAX_IN_CHANS),
        ("num_classes", num_classes, MAX_CLASSES),
    ] {
        if value > max {
            return Err(format!(
                "{key} = {value} is above the supported maximum {max}"
            ));
        }
    }
    if in_chans == 0 {
        return Err("in_chans must be at least 1".into());
    }
    let class_token = kwargs["class_token"].as_bool().ok_or_else(|| {
        format!(
            "class_token must be true or false, found {}",
            kwargs["class_token"]
        )
    })?;
    for key in ["drop_rate", "attn_drop_rate", "drop_path_rate"] {
        if !kwargs[key].is_number() {
            return Err(format!("{key} must be a number, found {}", kwargs[key]));
        }
    }

    let int = "a non-negative integer";
    let embed_dims = per_stage(&kwargs, "embed_dims", stages, int, as_usize)?;
    // token_dims given as a scalar t means [t·2^i] (official special case, not repeatOrNot).
    let token_dims = match &kwargs["token_dims"] {
        Value::Array(_) => per_stage(&kwargs, "token_dims", stages, int, as_usize)?,
        scalar => {
            let t = as_usize(scalar)
                .filter(|&t| t <= limits::MAX_DIM)
                .ok_or_else(|| {
                    format!(
                        "token_dims must be {int} of at most {}, found {scalar}",
                        limits::MAX_DIM
                    )
                })?;
            (0..stages).map(|i| t << i).collect()
        }
    };
    let ratios = per_stage(&kwargs, "downsample_ratios", stages, int, as_usize)?;
    let kernel_size = per_stage(&kwargs, "kernel_size", stages, int, as_usize)?;
    let rc_heads = per_stage(&kwargs, "RC_heads", stages, int, as_usize)?;
    let nc_heads = per_stage(&kwargs, "NC_heads", stages, int, as_usize)?;
    let rc_group = per_stage(&kwargs, "RC_group", stages, int, as_usize)?;
    let nc_group = per_stage(&kwargs, "NC_group", stages, int, as_usize)?;
    let nc_depth = per_stage(&kwargs, "NC_depth", stages, int, as_usize)?;
    let mlp_ratio = per_stage(&kwargs, "mlp_ratio", stages, "a number", Value::as_f64)?;
    let qkv_bias = per_stage(&kwargs, "qkv_bias", stages, "true or false", Value::as_bool)?;
    let qk_scale = per_stage(
        &kwargs,
        "qk_scale",
        stages,
        "null or a number",
        |v| match v {
            Value::Null => Some(None),
            other => other.as_f64().map(Some),
        },
    )?;
    let dilation_list =
        |v: &Value| -> Option<Vec<usize>> { v.as_array()?.iter().map(as_usize).collect() };
    let dilations = match &kwargs["dilations"] {
        Value::Array(items) if items.iter().all(Value::is_array) => per_stage(
            &kwargs,
            "dilations",
            stages,
            "a list of dilations",
            dilation_list,
        )?,
        other => {
            return Err(format!(
                "dilations must be a list of per-stage lists like [[1,2,3,4],[1,2,3],[1,2]], found {other}"
            ));
        }
    };
    let rc_op = per_stage(&kwargs, "RC_op", stages, "a string", |v| {
        v.as_str().map(str::to_string)
    })?;
    let rc_type_names = per_stage(&kwargs, "RC_tokens_type", stages, "a string", |v| {
        v.as_str().map(str::to_string)
    })?;
    let nc_type_names = per_stage(&kwargs, "NC_tokens_type", stages, "a string", |v| {
        v.as_str().map(str::to_string)
    })?;
    let mut rc_types = Vec::with_capacity(stages);
    for (i, name) in rc_type_names.iter().enumerate() {
        rc_types.push(RcTokensType::parse(name).ok_or_else(|| {
            format!(
                "RC_tokens_type[{i}] = '{name}' is not a reduction-cell type of the official code \
                 (performer, performer_less, transformer, pooling, embedding, none); the current \
                 release would silently build it as a PRM-only cell (quirk Q1), or as nn.Identity at \
                 a downsample ratio of 1: write 'performer_less' or 'none' for those"
            )
        })?);
    }
    let mut nc_types = Vec::with_capacity(stages);
    for (i, name) in nc_type_names.iter().enumerate() {
        // The type of a stage without normal cells is never looked at.
        let parsed = match (NcTokensType::parse(name), nc_depth[i]) {
            (Some(t), _) => t,
            (None, 0) => NcTokensType::Transformer,
            (None, _) => {
                return Err(format!(
                    "NC_tokens_type[{i}] = '{name}' contains neither 'transformer' nor 'performer': \
                     the official NormalCell then has no attention and fails"
                ));
            }
        };
        nc_types.push(parsed);
    }

    // Which release (the rule on ModelConfig).
    let mut current_only: Vec<String> = Vec::new();
    if class_token {
        current_only.push("class_token = true".into());
    }
    for i in 0..stages {
        if ratios[i] > 1 && matches!(rc_types[i], RcTokensType::Embedding | RcTokensType::None) {
            current_only.push(format!("RC_tokens_type[{i}] = '{}'", rc_types[i].name()));
        }
        if ratios[i] >= 16 {
            current_only.push(format!(
                "downsample_ratios[{i}] = {} (the Dec-2021 ReductionCell asserts a ratio below 16)",
                ratios[i]
            ));
        }
        if nc_depth[i] > 0 && !matches!(nc_type_names[i].as_str(), "transformer" | "performer") {
            // The canonical name, not the text as given: the reason is printed, and a name that
            // only contains 'transformer' may carry anything else (escape sequences too).
            current_only.push(format!(
                "NC_tokens_type[{i}] other than exactly 'transformer' or 'performer' (read as '{}')",
                nc_types[i].name()
            ));
        }
    }
    let ambiguous: Vec<String> = (0..stages)
        .filter(|&i| {
            ratios[i] > 1
                && matches!(
                    rc_types[i],
                    RcTokensType::Transformer | RcTokensType::Pooling
                )
        })
        .map(|i| i.to_string())
        .collect();
    let (release, release_reason, release_assumed) = match forced {
        Some(release) => (Some(release), "chosen by the caller".to_string(), false),
        None if !current_only.is_empty() => (
            Some(Release::Current),
            format!("only it has {}", current_only.join(", ")),
            false,
        ),
        None if !ambiguous.is_empty() => (
            Some(Release::Dec2021),
            format!(
                "assumed for the 'transformer'/'pooling' reduction cells of stage(s) {} (a \
                 checkpoint without their PCM and attention keys selects the current release)",
                ambiguous.join(", ")
            ),
            true,
        ),
        None => (None, "both releases build this model".to_string(), false),
    };

    let mut stage_infos = Vec::with_capacity(stages);
    let mut flow = Flow::Image;
    let mut size = img_size;
    // The `img_size` the official constructor passes to stage i (divided by every ratio so
    // far, identities included); only timm's PatchEmbed looks at it.
    let mut believed_size = img_size;
    let mut channels = in_chans;
    for i in 0..stages {
        for (key, value, max) in [
            ("embed_dims", embed_dims[i], MAX_DIM),
            ("token_dims", token_dims[i], MAX_DIM),
            ("downsample_ratios", ratios[i], 64),
            ("kernel_size", kernel_size[i], MAX_KERNEL),
            ("RC_heads", rc_heads[i], MAX_HEADS),
            ("NC_heads", nc_heads[i], MAX_HEADS),
            ("RC_group", rc_group[i], MAX_DIM),
            ("NC_group", nc_group[i], MAX_DIM),
            ("NC_depth", nc_depth[i], MAX_DEPTH),
            ("len(dilations)", dilations[i].len(), MAX_DILATIONS),
        ] {
            if value > max {
                return Err(format!(
                    "{key}[{i}] = {value} is above the supported maximum {max}"
                ));
            }
        }
        if let Some(&d) = dilations[i].iter().find(|&&d| d > MAX_DILATION) {
            return Err(format!(
                "dilations[{i}] has {d}, above the supported maximum {MAX_DILATION}"
            ));
        }
        let (embed, token, ratio) = (embed_dims[i], token_dims[i], ratios[i]);
        if token == 0 {
            return Err(format!("token_dims[{i}] must be positive"));
        }
        if ratio == 0 {
            return Err(format!(
                "downsample_ratios[{i}] = 0: the official constructor divides img_size by it"
            ));
        }
        let tokens_type = rc_types[i];
        let form = if ratio == 1 {
            RcForm::Identity
        } else {
            match tokens_type {
                RcTokensType::None => RcForm::Identity,
                RcTokensType::Embedding => RcForm::Embedding,
                RcTokensType::Performer => RcForm::Prm {
                    attention: Some(RcAttentionKind::Performer),
                },
                RcTokensType::PerformerLess => RcForm::Prm { attention: None },
                RcTokensType::Transformer | RcTokensType::Pooling => RcForm::Prm {
                    attention: (release != Some(Release::Current))
                        .then_some(RcAttentionKind::Transformer),
                },
            }
        };
        let what = format!("RC_tokens_type[{i}] = '{}'", tokens_type.name());
        let class_token_from = match flow {
            Flow::Tokens { class_token_from } => class_token_from,
            Flow::Image => None,
        };
        let mut rc = ReductionCellInfo {
            tokens_type,
            form,
            ratio,
            pool: None,
            prm_stride: ratio,
            kernel_size: kernel_size[i],
            dilations: dilations[i].clone(),
            prm_paddings: Vec::new(),
            prm_op: PrmOp::Cat,
            prm_channels: 0,
            pcm_strides: [1; 3],
            group: rc_group[i],
            heads: rc_heads[i],
            performer_features: token / 2,
            mlp_hidden: token,
        };
        let out = match form {
            RcForm::Identity => {
                if channels != token {
                    let why = if ratio == 1 {
                        format!("downsample_ratios[{i}] = 1 makes its reduction cell nn.Identity")
                    } else {
                        format!("{what} passes its input through")
                    };
                    return Err(format!(
                        "stage {i}: {why}, so its output keeps the {channels} input channels, but the \
                         official code builds the layers after it for token_dims[{i}] = {token}"
                    ));
                }
                rc.kernel_size = 0;
                rc.dilations.clear();
                size
            }
            RcForm::Embedding => {
                if let Some(j) = class_token_from {
                    return Err(format!(
                        "{what}: the 'embedding' cell of stage {j} already added a class token; the \
                         official ReductionCell reshapes the 1+N tokens into a square map and fails"
                    ));
                }
                if size != believed_size {
                    return Err(format!(
                        "{what}: timm's PatchEmbed asserts a {believed_size}x{believed_size} input \
                         (img_size divided by the earlier downsample_ratios) but gets {size}x{size}"
                    ));
                }
                if size < ratio {
                    return Err(format!(
                        "{what}: the {size}x{size} input is smaller than one {ratio}x{ratio} patch"
                    ));
                }
                rc.kernel_size = ratio;
                rc.dilations.clear();
                rc.prm_channels = token;
                size / ratio
            }
            RcForm::Prm { attention } => {
                if let Some(j) = class_token_from {
                    return Err(format!(
                        "{what}: the class token added by the 'embedding' cell of stage {j} is still \
                         there; the official ReductionCell reshapes the 1+N tokens into a square map \
                         and fails (only 'none' or a downsample ratio of 1 may follow 'embedding')"
                    ));
                }
                prm_cell(
                    &mut rc,
                    PrmArgs {
                        i,
                        what: &what,
                        size,
                        channels,
                        embed,
                        token,
                        op: &rc_op[i],
                        attention,
                        release,
                        release_reason: &release_reason,
                    },
                )?
            }
        };
        believed_size /= ratio;
        let flow_out = match form {
            RcForm::Identity => flow,
            RcForm::Embedding => Flow::Tokens {
                class_token_from: Some(i),
            },
            RcForm::Prm { .. } => Flow::Tokens {
                class_token_from: None,
            },
        };

        let depth = nc_depth[i];
        let nc_type = nc_types[i];
        let (nc_heads_i, nc_group_i) = (nc_heads[i], nc_group[i]);
        let mut mlp_hidden = 0;
        if depth > 0 {
            let nc = format!("NC_tokens_type[{i}] = '{}'", nc_type_names[i]);
            match flow_out {
                Flow::Image => {
                    return Err(format!(
                        "stage {i} has {depth} normal cell(s) but no reduction cell so far has made \
                         tokens of the image: the official NormalCell needs (B, N, C) tokens"
                    ));
                }
                Flow::Tokens {
                    class_token_from: Some(j),
                } if !class_token => {
                    return Err(format!(
                        "stage {i}: the 'embedding' cell of stage {j} puts a class token in front, \
                         which needs class_token = true: with false the official NormalCell reshapes \
                         the 1+N tokens into a square map and fails"
                    ));
                }
                Flow::Tokens {
                    class_token_from: None,
                } if class_token => {
                    return Err(format!(
                        "class_token = true needs an 'embedding' reduction cell before the first \
                         normal cell (stage {i}): the official NormalCell treats token 0 as the class \
                         token and reshapes the other N-1 into a square map"
                    ));
                }
                Flow::Tokens { .. } => {}
            }
            let hidden = (token as f64 * mlp_ratio[i]).floor();
            if !(1.0..=MAX_DIM as f64).contains(&hidden) {
                return Err(format!(
                    "mlp_ratio[{i}] = {} gives an invalid hidden width",
                    mlp_ratio[i]
                ));
            }
            mlp_hidden = hidden as usize;
            if nc_type.is_performer() {
                if nc_heads_i != 1 {
                    return Err(format!(
                        "NC_heads[{i}] = {nc_heads_i}: {nc} (AttentionPerformer) works only with \
                         NC_heads = 1; with h heads it outputs h·token_dims[{i}] channels and the \
                         official residual add fails"
                    ));
                }
                if token < 2 {
                    return Err(format!(
                        "token_dims[{i}] = {token} is too small for performer features"
                    ));
                }
            } else if nc_heads_i == 0 || token % nc_heads_i != 0 {
                return Err(format!(
                    "NC_heads[{i}] = {nc_heads_i} must divide token_dims[{i}] = {token}"
                ));
            }
            if nc_group_i == 0 || token % nc_group_i != 0 || mlp_hidden % nc_group_i != 0 {
                return Err(format!(
                    "NC_group[{i}] = {nc_group_i} must divide token_dims[{i}] = {token} and the hidden width {mlp_hidden}"
                ));
            }
        }
        let head_dim = token.checked_div(nc_heads_i).unwrap_or(0);
        // Python's `qk_scale or head_dim ** -0.5`: 0.0 and None both fall back.
        let scale = match qk_scale[i] {
            Some(s) if s != 0.0 => {
                if !(MIN_QK_SCALE..=MAX_QK_SCALE).contains(&s) {
                    return Err(format!(
                        "qk_scale[{i}] = {s}: must be null, 0 (both mean head_dim^-0.5) or a number \
                         in [{MIN_QK_SCALE:e}, {MAX_QK_SCALE:e}] (as f32 it scales every attention \
                         logit: infinite, zero or negative it makes the softmax NaN, uniform or \
                         reversed)"
                    ));
                }
                s as f32
            }
            _ => (head_dim.max(1) as f32).powf(-0.5),
        };
        stage_infos.push(StageInfo {
            index: i,
            input_size: size,
            input_channels: channels,
            output_size: out,
            tokens: out * out,
            class_token: matches!(
                flow_out,
                Flow::Tokens {
                    class_token_from: Some(_)
                }
            ),
            embed_dim: embed,
            token_dim: token,
            rc,
            nc: NormalCellInfo {
                depth,
                tokens_type: nc_type,
                heads: nc_heads_i,
                head_dim,
                scale,
                qkv_bias: qkv_bias[i],
                group: nc_group_i,
                mlp_hidden,
                performer_features: token / 2,
            },
        });
        flow = flow_out;
        size = out;
        channels = token;
    }
    let Flow::Tokens { class_token_from } = flow else {
        return Err(
            "no reduction cell turns the image into tokens (every stage is an identity): the \
             official head would pool the 4-D image"
                .into(),
        );
    };
    if let Value::Array(items) = &kwargs["token_dims"] {
        // The official head (and fc_norm) take the list's last entry, not the last stage's.
        let last = items.last().and_then(as_usize);
        if let Some(last) = last.filter(|&last| last != token_dims[stages - 1]) {
            return Err(format!(
                "token_dims has {} entries for {stages} stages: the official head is built for its \
                 last entry {last}, but the last stage has {} channels",
                items.len(),
                token_dims[stages - 1]
            ));
        }
    } else if class_token {
        return Err(
            "class_token = true needs token_dims as a list: the official constructor builds \
             fc_norm from token_dims[-1]"
                .into(),
        );
    }
    if class_token && class_token_from.is_none() && size * size < 2 {
        return Err("class_token = true pools x[:, 1:], which is empty for a single token".into());
    }

    // The reference's buffers are sized by the tokens and widths: bound them before any
    // command allocates one.
    let footprint = reference_footprint(&stage_infos, img_size, in_chans);
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    if footprint.attention_bytes > MAX_ATTENTION_BYTES {
        return Err(format!(
            "the attention of {} holds {:.0} MiB of softmax scores (heads × tokens² as f32), more \
             than the {} MiB the host tools allow (vitae::config::limits::MAX_ATTENTION_BYTES): \
             img_size, downsample_ratios and the heads make too many tokens",
            footprint.attention_at,
            mib(footprint.attention_bytes),
            MAX_ATTENTION_BYTES >> 20
        ));
    }
    if footprint.peak_bytes > MAX_REFERENCE_BYTES {
        return Err(format!(
            "the f32 reference would hold {:.0} MiB at once in {}, more than the {} MiB the host \
             tools allow (vitae::config::limits::MAX_REFERENCE_BYTES): img_size, \
             downsample_ratios and the widths make too many tokens × channels",
            mib(footprint.peak_bytes),
            footprint.peak_at,
            MAX_REFERENCE_BYTES >> 20
        ));
    }

    // Record the resolved per-stage values for display and for tools that dump the config.
    let resolved: [(&str, Value); 3] = [
        ("embed_dims", serde_json::json!(embed_dims)),
        ("token_dims", serde_json::json!(token_dims)),
        ("downsample_ratios", serde_json::json!(ratios)),
    ];
    for (key, value) in resolved {
        kwargs.insert(key.to_string(), value);
    }
    Ok(ModelConfig {
        kwargs,
        given,
        img_size,
        in_chans,
        num_classes,
        class_token,
        release,
        release_reason,
        release_assumed,
        stages: stage_infos,
        footprint,
        source_name: source_name.to_string(),
    })
}

/// What [`prm_cell`] needs to know about the stage.
struct PrmArgs<'a> {
    i: usize,
    what: &'a str,
    size: usize,
    channels: usize,
    embed: usize,
    token: usize,
    op: &'a str,
    attention: Option<RcAttentionKind>,
    release: Option<Release>,
    release_reason: &'a str,
}

/// Fills in and checks the PRM (after the max-pool of `'pooling'`) and, for cells with
/// attention, the PCM of a reduction cell; returns the output size.
fn prm_cell(rc: &mut ReductionCellInfo, a: PrmArgs<'_>) -> Result<usize, String> {
    let PrmArgs { i, what, .. } = a;
    let (embed, token, ratio, k) = (a.embed, a.token, rc.ratio, rc.kernel_size);
    rc.prm_op = match a.op {
        "cat" => PrmOp::Cat,
        "sum" => PrmOp::Sum,
        other => {
            return Err(format!(
                "RC_op[{i}] = '{other}': the official PRM knows only 'cat' and 'sum' (it fails on \
                 anything else)"
            ));
        }
    };
    if embed == 0 {
        return Err(format!("embed_dims[{i}] must be positive"));
    }
    if k == 0 {
        return Err(format!("kernel_size[{i}] must be positive"));
    }
    if rc.dilations.is_empty() || rc.dilations.contains(&0) {
        return Err(format!(
            "dilations[{i}] must be a non-empty list of positive dilations"
        ));
    }
    let mut input = a.size;
    if rc.tokens_type == RcTokensType::Pooling {
        if input < ratio {
            return Err(format!(
                "{what}: MaxPool2d({ratio}) of the {input}x{input} input is empty"
            ));
        }
        // MaxPool2d(r, stride r, padding 0) drops a partial last window.
        input /= ratio;
        rc.pool = Some(ratio);
        rc.prm_stride = 1;
    }
    let stride = rc.prm_stride;
    let mut produced = Vec::with_capacity(rc.dilations.len());
    for &d in &rc.dilations {
        let reach = (k - 1) * d + 1;
        // math.ceil(((k-1)·d + 1 - stride) / 2), which Python lets go negative.
        let padding = (reach as i64 - stride as i64 + 1).div_euclid(2);
        let Ok(padding) = usize::try_from(padding) else {
            return Err(format!(
                "stage {i}: the PRM padding ceil(((k-1)·d + 1 - stride) / 2) for kernel {k}, \
                 dilation {d}, stride {stride} is {padding}: PyTorch refuses negative padding"
            ));
        };
        let Some(span) = (input + 2 * padding).checked_sub(reach) else {
            return Err(format!(
                "stage {i}: the PRM branch with kernel {k}, dilation {d} spans {reach} pixels, more \
                 than the {input}x{input} input padded by {padding}"
            ));
        };
        rc.prm_paddings.push(padding);
        produced.push(span / stride + 1);
    }
    let out = produced[0];
    if produced.iter().any(|&o| o != out) {
        return Err(format!(
            "stage {i}: the PRM branches (kernel {k}, stride {stride}, dilations {:?}, paddings {:?}) \
             map {input}x{input} to sizes {produced:?}: the official PRM fails stacking them",
            rc.dilations, rc.prm_paddings
        ));
    }
    rc.prm_channels = match rc.prm_op {
        PrmOp::Cat => rc.dilations.len() * embed,
        PrmOp::Sum => embed,
    };
    let prm = match rc.prm_op {
        PrmOp::Cat => format!(
            "len(dilations[{i}]) * embed_dims[{i}] = {} * {embed} = {}",
            rc.dilations.len(),
            rc.prm_channels
        ),
        PrmOp::Sum => format!("embed_dims[{i}] = {embed} (RC_op 'sum')"),
    };
    let Some(kind) = a.attention else {
        if rc.prm_channels != token {
            let built = match rc.tokens_type {
                RcTokensType::PerformerLess => format!("stage {i} is 'performer_less'"),
                _ => format!(
                    "{} builds {what} as {} only (quirk Q1; that release because {})",
                    a.release.unwrap_or(Release::Current).name(),
                    if rc.pool.is_some() {
                        "max-pool + PRM"
                    } else {
                        "PRM"
                    },
                    a.release_reason
                ),
            };
            return Err(format!(
                "{built}: its output has {prm} channels, which must equal token_dims[{i}] = {token}"
            ));
        }
        return Ok(out);
    };
    rc.pcm_strides = if rc.pool.is_some() {
        [1; 3]
    } else {
        let mut strides = [1usize; 3];
        let mut residual = ratio / 2;
        for s in &mut strides {
            *s = if residual > 0 { 2 } else { 1 };
            residual /= 2;
        }
        strides
    };
    // 3x3 convs with padding 1: n -> (n - 1) / s + 1.
    let pcm_out = rc
        .pcm_strides
        .iter()
        .fold(input, |n, &s| (n.max(1) - 1) / s + 1);
    if pcm_out != out {
        let [s0, s1, s2] = rc.pcm_strides;
        return Err(format!(
            "stage {i}: the PCM of {what} (3x3 convs with strides {s0}, {s1}, {s2}) maps \
             {input}x{input} to {pcm_out}x{pcm_out}, the PRM to {out}x{out}: the official cell fails \
             adding them (downsample_ratios[{i}] = {ratio})"
        ));
    }
    let (channels, group, heads) = (a.channels, rc.group, rc.heads);
    if group == 0 || channels % group != 0 || embed % group != 0 || token % group != 0 {
        return Err(format!(
            "RC_group[{i}] = {group} must divide the PCM channels {channels}, {embed} and {token}"
        ));
    }
    match kind {
        RcAttentionKind::Performer => {
            if heads != 1 {
                return Err(format!(
                    "RC_heads[{i}] = {heads}: a 'performer' reduction cell needs RC_heads = 1"
                ));
            }
            if token < 2 {
                return Err(format!(
                    "token_dims[{i}] = {token} is too small for performer features"
                ));
            }
        }
        RcAttentionKind::Transformer => {
            if heads == 0 || token % heads != 0 {
                return Err(format!(
                    "RC_heads[{i}] = {heads} must divide token_dims[{i}] = {token}"
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ModelConfig, ConfigError> {
        ModelConfig::from_kwargs_json(text, "test.json")
    }

    #[test]
    fn vitae_t_preset_has_documented_geometry() {
        let c = ModelConfig::preset("vitae-t").unwrap();
        let s = c.stages();
        assert_eq!(s.len(), 3);
        assert_eq!(
            (
                s[0].input_size,
                s[0].output_size,
                s[1].output_size,
                s[2].output_size
            ),
            (224, 56, 28, 14)
        );
        assert_eq!(s[0].rc.prm_paddings, vec![2, 5, 8, 11]);
        assert_eq!(s[1].rc.prm_paddings, vec![1, 2, 3]);
        assert_eq!(s[0].rc.pcm_strides, [2, 2, 1]);
        assert_eq!(s[1].rc.pcm_strides, [2, 1, 1]);
        assert_eq!(
            (
                s[0].rc.prm_channels,
                s[1].rc.prm_channels,
                s[2].rc.prm_channels
            ),
            (256, 192, 256)
        );
        assert_eq!(s[0].rc.performer_features, 32);
        assert_eq!(
            (
                s[2].nc.depth,
                s[2].nc.heads,
                s[2].nc.head_dim,
                s[2].nc.mlp_hidden
            ),
            (7, 4, 64, 512)
        );
        assert_eq!(s[2].nc.scale, 0.125);
        assert_eq!((s[1].input_channels, s[2].input_channels), (64, 64));
        assert_eq!(c.feature_dim(), 256);
        assert_eq!(s[2].tokens, 196);
    }

    #[test]
    fn all_presets_resolve() {
        for name in PRESETS {
            let c = ModelConfig::preset(name).unwrap();
            assert_eq!((c.img_size(), c.num_classes()), (224, 1000), "{name}");
        }
        assert_eq!(
            ModelConfig::preset("vitae-s").unwrap().stages()[0].token_dim,
            96
        );
        assert!(matches!(
            ModelConfig::preset("vitae-b"),
            Err(ConfigError::UnknownPreset(_))
        ));
    }

    #[test]
    fn scalars_repeat_and_token_dims_scalar_doubles() {
        let c = parse(
            r#"{"stages": 2, "img_size": 32, "embed_dims": 8, "token_dims": 16, "downsample_ratios": 2,
                "kernel_size": 3, "dilations": [[1,2],[1]], "RC_tokens_type": "performer", "NC_depth": [0, 1],
                "NC_heads": 2, "NC_group": 4, "mlp_ratio": 1.5, "in_chans": 1, "num_classes": 5}"#,
        )
        .unwrap();
        let s = c.stages();
        assert_eq!((s[0].token_dim, s[1].token_dim), (16, 32));
        assert_eq!((s[0].embed_dim, s[1].embed_dim), (8, 8));
        assert_eq!(s[1].nc.mlp_hidden, 48);
        assert_eq!(s[0].input_channels, 1);
        assert_eq!(s[1].rc.dilations, vec![1]);
    }

    #[test]
    fn rejects_unsupported_or_inconsistent_arguments() {
        let base = r#""stages": 3, "embed_dims": [64,64,128], "token_dims": [64,64,256], "downsample_ratios": [4,2,2],
            "RC_tokens_type": ["performer","performer","performer_less"], "NC_tokens_type": "transformer",
            "NC_depth": [0,0,1], "NC_heads": [1,1,4], "RC_heads": [1,1,1], "mlp_ratio": 2.0, "NC_group": [1,1,64],
            "RC_group": [1,1,1]"#;
        assert!(parse(&format!("{{{base}}}")).is_ok());
        let cases = [
            (r#""bogus_arg": 1"#, "unknown argument 'bogus_arg'"),
            (
                r#""share_weights": true"#,
                "share_weights=True is not reachable through ViTAE_ViT_basic",
            ),
            (
                r#""class_token": true"#,
                "class_token = true needs an 'embedding' reduction cell before the first normal cell (stage 2)",
            ),
            (
                r#""RC_tokens_type": ["perfromer","performer","performer_less"]"#,
                "RC_tokens_type[0] = 'perfromer' is not a reduction-cell type",
            ),
            (
                r#""RC_tokens_type": ["embedding","none","none"]"#,
                "RC_tokens_type[2] = 'none' passes its input through, so its output keeps the 64 input channels",
            ),
            (
                r#""RC_tokens_type": ["embedding","performer","performer_less"]"#,
                "RC_tokens_type[1] = 'performer': the class token added by the 'embedding' cell of stage 0",
            ),
            (
                r#""RC_tokens_type": ["embedding","none","performer_less"], "NC_depth": [1,0,0]"#,
                "needs class_token = true",
            ),
            (
                r#""NC_tokens_type": "attention""#,
                "NC_tokens_type[2] = 'attention' contains neither 'transformer' nor 'performer'",
            ),
            (
                r#""NC_tokens_type": "performer""#,
                "NC_heads[2] = 4: NC_tokens_type[2] = 'performer' (AttentionPerformer) works only with NC_heads = 1",
            ),
            (r#""RC_heads": [2,1,1]"#, "RC_heads[0] = 2"),
            (
                r#""token_dims": [64,64,200]"#,
                "must equal token_dims[2] = 200",
            ),
            (
                r#""img_size": 98"#,
                "maps 98x98 to 25x25, the PRM to 24x24: the official cell fails adding them",
            ),
            (
                r#""embed_dims": [64,64]"#,
                "embed_dims has 2 entries but stages = 3",
            ),
            (r#""NC_heads": [1,1,3]"#, "NC_heads[2] = 3"),
            (r#""NC_group": [1,1,3]"#, "NC_group[2] = 3"),
            (
                r#""RC_op": "sum""#,
                "its output has embed_dims[2] = 128 (RC_op 'sum') channels, which must equal token_dims[2] = 256",
            ),
            (r#""RC_op": "max""#, "RC_op[0] = 'max'"),
            (
                r#""dilations": [1,2,3]"#,
                "dilations must be a list of per-stage lists",
            ),
            (
                r#""downsample_ratios": [4,2,1]"#,
                "downsample_ratios[2] = 1 makes its reduction cell nn.Identity",
            ),
            (
                r#""downsample_ratios": [1,4,4], "img_size": 64"#,
                "stage 0: downsample_ratios[0] = 1 makes its reduction cell nn.Identity, so its output keeps the 3 input channels",
            ),
            (
                r#""downsample_ratios": [4,0,2]"#,
                "downsample_ratios[1] = 0",
            ),
            (
                r#""RC_tokens_type": ["performer","transformer","performer_less"], "NC_tokens_type": "transformer_shallow", "embed_dims": [64,32,128]"#,
                "the current release builds RC_tokens_type[1] = 'transformer' as PRM only (quirk Q1; that release because only it has NC_tokens_type[2] other than exactly 'transformer' or 'performer' (read as 'transformer_shallow'))",
            ),
            (
                r#""num_classes": "ten""#,
                "num_classes must be a non-negative integer",
            ),
            (
                r#""mlp_ratio": [2.0, "x", 2.0]"#,
                "mlp_ratio[1] must be a number",
            ),
        ];
        for (patch, expected) in cases {
            // Later keys override earlier ones in serde_json's map.
            let text = format!("{{{base}, {patch}}}");
            let err = parse(&text).expect_err(expected).to_string();
            assert!(err.contains(expected), "expected '{expected}' in '{err}'");
            assert!(err.starts_with("test.json: "), "{err}");
        }
        assert!(
            parse("[1]")
                .unwrap_err()
                .to_string()
                .contains("JSON object")
        );
        assert!(matches!(parse("{"), Err(ConfigError::Json { .. })));
    }

    #[test]
    fn options_of_both_releases_resolve() {
        // mcu_c-like (Dec-2021): 'pooling' on the image and on tokens, RC_op 'sum'.
        let c = parse(
            r#"{"img_size": 64, "stages": 3, "embed_dims": [24,32,64], "token_dims": [24,48,64],
                "downsample_ratios": [4,2,2], "kernel_size": [7,3,3], "RC_heads": [1,2,1],
                "NC_heads": [1,2,4], "RC_tokens_type": ["pooling","pooling","performer_less"],
                "NC_group": [1,8,16], "NC_depth": [0,1,2], "mlp_ratio": 2.0, "RC_op": "sum",
                "num_classes": 10}"#,
        )
        .unwrap();
        assert_eq!(c.release(), Some(Release::Dec2021));
        let s = c.stages();
        assert_eq!(
            (s[0].rc.pool, s[0].rc.prm_stride, s[0].rc.pcm_strides),
            (Some(4), 1, [1, 1, 1])
        );
        assert_eq!(s[0].rc.prm_paddings, vec![3, 6, 9, 12]);
        assert_eq!((s[0].output_size, s[1].output_size), (16, 8));
        assert_eq!(
            (s[0].rc.prm_channels, s[1].rc.prm_channels, s[2].rc.prm_op),
            (24, 32, PrmOp::Sum)
        );
        assert_eq!(s[1].rc.attention(), Some(RcAttentionKind::Transformer));
        // mcu_d-like (current): 'embedding' then identities, class token, NC performers.
        let c = parse(
            r#"{"img_size": 64, "stages": 3, "embed_dims": 64, "token_dims": [64,64,64],
                "downsample_ratios": [8,1,1], "RC_tokens_type": ["embedding","none","none"],
                "NC_tokens_type": ["performer","transformer","performer"], "NC_heads": [1,4,1],
                "NC_group": [8,16,8], "NC_depth": [1,1,2], "mlp_ratio": 2.0, "class_token": true,
                "num_classes": 10}"#,
        )
        .unwrap();
        assert_eq!(c.release(), Some(Release::Current));
        assert!(c.class_token());
        let s = c.stages();
        assert_eq!(s[0].rc.form, RcForm::Embedding);
        assert_eq!(
            (s[1].rc.form, s[2].rc.form),
            (RcForm::Identity, RcForm::Identity)
        );
        assert_eq!((s[0].tokens, s[0].sequence_len()), (64, 65));
        assert!(s.iter().all(|s| s.class_token));
        assert_eq!(s[2].nc.tokens_type, NcTokensType::Performer);
        assert_eq!(s[0].nc.performer_features, 32);
        // The current code's substring rule for normal cells.
        for (name, parsed) in [
            ("transformer_shallow", NcTokensType::TransformerShallow),
            ("performer_shallow", NcTokensType::PerformerShallow),
            ("performer", NcTokensType::Performer),
            ("shallow_transformer_v2", NcTokensType::TransformerShallow),
        ] {
            assert_eq!(NcTokensType::parse(name), Some(parsed), "{name}");
        }
        // No transformer/pooling reduction cells: the same model in both releases.
        assert_eq!(ModelConfig::preset("vitae-t").unwrap().release(), None);
    }

    #[test]
    fn no_classifier_outputs_the_features() {
        let c = parse(
            r#"{"img_size": 32, "stages": 1, "embed_dims": [8], "token_dims": [16],
                "downsample_ratios": [4], "kernel_size": [7], "dilations": [[1, 2]],
                "RC_tokens_type": ["performer_less"], "NC_depth": [0], "num_classes": 0}"#,
        )
        .unwrap();
        assert_eq!((c.num_classes(), c.output_dim()), (0, 16));
    }

    #[test]
    fn sizes_need_not_divide_when_the_official_cells_still_agree() {
        // 200 -> 50 -> 25 -> 13: the PRM and the PCM round the same way at every stage.
        let c = parse(
            r#"{"img_size": 200, "stages": 3, "embed_dims": [64,64,128], "token_dims": [64,64,256],
                "downsample_ratios": [4,2,2], "RC_tokens_type": ["performer","performer","performer_less"],
                "NC_depth": [0,0,1], "NC_heads": [1,1,4], "mlp_ratio": 2.0, "NC_group": [1,1,64]}"#,
        )
        .unwrap();
        let sizes: Vec<usize> = c.stages().iter().map(|s| s.output_size).collect();
        assert_eq!(sizes, vec![50, 25, 13]);
    }

    /// RC types, NC type, embed_dims, token_dims, ratios, depth, heads, mlp_ratio, group,
    /// class_token of an official variant.
    type Variant = (
        [&'static str; 3],
        &'static str,
        [usize; 3],
        [usize; 3],
        [usize; 3],
        usize,
        usize,
        f64,
        usize,
        bool,
    );

    /// The registered official variants (current release) at `img` pixels.
    fn official(name: &str, img: usize) -> ModelConfig {
        let (rc, nc, dims, token, ratios, depth, heads, mlp, group, cls): Variant = match name {
            "T" => (
                PERF,
                "transformer",
                [64, 64, 128],
                [64, 64, 256],
                [4, 2, 2],
                7,
                4,
                2.0,
                64,
                false,
            ),
            "6M" => (
                PERF,
                "transformer",
                [64, 64, 128],
                [64, 64, 256],
                [4, 2, 2],
                10,
                4,
                2.0,
                64,
                false,
            ),
            "13M" => (
                PERF,
                "transformer",
                [64, 64, 160],
                [64, 64, 320],
                [4, 2, 2],
                11,
                5,
                2.0,
                64,
                false,
            ),
            "S" => (
                PERF,
                "transformer",
                [64, 64, 192],
                [96, 192, 384],
                [4, 2, 2],
                14,
                6,
                3.0,
                96,
                false,
            ),
            "B" => (
                EMB,
                "transformer_shallow",
                [768; 3],
                [768; 3],
                [16, 1, 1],
                12,
                12,
                4.0,
                192,
                true,
            ),
            "L" => (
                EMB,
                "transformer_shallow",
                [1024; 3],
                [1024; 3],
                [16, 1, 1],
                24,
                16,
                4.0,
                256,
                true,
            ),
            "H" => (
                EMB,
                "transformer_shallow",
                [1280; 3],
                [1280; 3],
                [16, 1, 1],
                32,
                16,
                4.0,
                320,
                true,
            ),
            _ => unreachable!(),
        };
        const PERF: [&str; 3] = ["performer", "performer", "performer_less"];
        const EMB: [&str; 3] = ["embedding", "none", "none"];
        let kwargs = serde_json::json!({
            "img_size": img, "RC_tokens_type": rc, "NC_tokens_type": [nc, nc, nc], "stages": 3,
            "embed_dims": dims, "token_dims": token, "downsample_ratios": ratios,
            "NC_depth": [0, 0, depth], "NC_heads": [1, 1, heads], "RC_heads": [1, 1, 1],
            "mlp_ratio": mlp, "NC_group": [1, 1, group], "RC_group": [1, 1, 1], "class_token": cls,
        });
        ModelConfig::from_kwargs_value(&kwargs, &format!("ViTAE-{name}@{img}"))
            .unwrap_or_else(|e| panic!("ViTAE-{name} at {img}: {e}"))
    }

    #[test]
    fn every_official_variant_fits_the_reference_ceilings_at_224_and_384() {
        let mut peak = (0, String::new());
        for name in ["T", "6M", "13M", "S", "B", "L", "H"] {
            for img in [224, 384] {
                let c = official(name, img);
                let f = c.reference_footprint();
                println!(
                    "ViTAE-{name}@{img}: peak {:.1} MiB in {}, attention {:.2} MiB in {}",
                    f.peak_bytes as f64 / (1 << 20) as f64,
                    f.peak_at,
                    f.attention_bytes as f64 / (1 << 20) as f64,
                    f.attention_at
                );
                assert!(
                    f.peak_bytes <= limits::MAX_REFERENCE_BYTES / 2,
                    "ViTAE-{name}@{img}"
                );
                assert!(
                    f.attention_bytes <= limits::MAX_ATTENTION_BYTES / 8,
                    "ViTAE-{name}@{img}"
                );
                if f.peak_bytes > peak.0 {
                    peak = (f.peak_bytes, format!("ViTAE-{name}@{img}"));
                }
            }
        }
        println!("largest: {} ({} bytes)", peak.1, peak.0);
        let t = ModelConfig::preset("vitae-t").unwrap();
        assert_eq!(
            t.reference_footprint(),
            official("T", 224).reference_footprint()
        );
    }

    #[test]
    fn configs_whose_reference_buffers_are_huge_are_refused() {
        // 224x224 at a downsample ratio of 2 is 12,544 tokens: two heads of softmax scores
        // take 1.26 GB, with a handful of weights.
        let small = r#""img_size": 224, "in_chans": 1, "stages": 1, "embed_dims": [4],
            "token_dims": [4], "downsample_ratios": [2], "kernel_size": [3], "dilations": [[1]],
            "RC_tokens_type": ["performer_less"], "NC_group": [1], "NC_depth": [1],
            "mlp_ratio": 1.0, "num_classes": 2"#;
        let err = parse(&format!(r#"{{{small}, "NC_heads": [2]}}"#))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("normal cells of stage 0") && err.contains("MAX_ATTENTION_BYTES"),
            "{err}"
        );
        // The performer has no score matrix: the same tokens pass at this width...
        let c = parse(&format!(
            r#"{{{small}, "NC_heads": [1], "NC_tokens_type": "performer"}}"#
        ))
        .unwrap();
        assert_eq!(c.reference_footprint().attention_bytes, 0);
        // ...but not at 1024 pixels with 1,024 channels per token.
        let wide = small
            .replace(r#""img_size": 224"#, r#""img_size": 1024"#)
            .replace(r#""embed_dims": [4]"#, r#""embed_dims": [1024]"#)
            .replace(r#""token_dims": [4]"#, r#""token_dims": [1024]"#);
        let err = parse(&format!(
            r#"{{{wide}, "NC_heads": [1], "NC_tokens_type": "performer"}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("f32 reference would hold") && err.contains("MAX_REFERENCE_BYTES"),
            "{err}"
        );
    }

    #[test]
    fn qk_scale_must_be_a_positive_number_that_f32_holds() {
        let base = r#""img_size": 16, "stages": 1, "embed_dims": [8], "token_dims": [8],
            "downsample_ratios": [4], "kernel_size": [7], "dilations": [[1]],
            "RC_tokens_type": ["performer_less"], "NC_depth": [1], "NC_heads": [2],
            "NC_group": [1], "mlp_ratio": 1.0, "num_classes": 2"#;
        // 1e39 became inf as f32 (every score inf, softmax NaN), 1e-50 became 0 (uniform
        // attention): silently wrong models.
        for bad in ["1e39", "-1e39", "1e300", "1e-50", "-0.5"] {
            let err = parse(&format!(r#"{{{base}, "qk_scale": {bad}}}"#))
                .err()
                .unwrap_or_else(|| panic!("qk_scale {bad} accepted"))
                .to_string();
            assert!(err.contains("qk_scale"), "{bad}: {err}");
        }
        // Python's `qk_scale or head_dim ** -0.5`: null and 0 both fall back (head_dim 4).
        for (ok, scale) in [
            ("null", 0.5),
            ("0", 0.5),
            ("0.0", 0.5),
            ("0.125", 0.125),
            ("3", 3.0),
        ] {
            let c = parse(&format!(r#"{{{base}, "qk_scale": {ok}}}"#)).unwrap();
            assert_eq!(c.stages()[0].nc.scale, scale, "{ok}");
        }
    }

    #[test]
    fn transformer_rc_with_multiple_heads_is_accepted() {
        let c = parse(
            r#"{"stages": 1, "img_size": 16, "embed_dims": 8, "token_dims": [12], "downsample_ratios": [4],
                "kernel_size": [7], "dilations": [[1,2]], "RC_tokens_type": ["transformer"], "RC_heads": [3],
                "NC_depth": [0], "num_classes": 2}"#,
        )
        .unwrap();
        assert_eq!(c.stages()[0].rc.tokens_type, RcTokensType::Transformer);
        assert_eq!(c.stages()[0].rc.heads, 3);
    }
}
