//! The f32 reference ViTAE: official forward pass (doc §2-§6) built from [`super::ops`], the
//! oracle every quantized or device result is compared against.

use std::borrow::Cow;

use rayon::prelude::*;

use crate::checkpoint::{Checkpoint, Tensor};
use crate::config::{ModelConfig, PrmOp, RcAttentionKind, RcForm, StageInfo};
use crate::validate::{CheckpointReport, check_checkpoint};

use super::ops::{
    BatchNorm, Conv2d, ConvSpec, FeatureMap, LayerNorm, Linear, Mlp, MultiHeadSelfAttention,
    OpError, PerformerAttention, TokenTransformerAttention, add_inplace, fold_batchnorm,
    gelu_inplace, max_pool2d, mean_pool, silu_inplace,
};

/// LayerNorm eps of NormalCells (`norm_layer=partial(nn.LayerNorm, eps=1e-6)`).
const NC_LAYER_NORM_EPS: f32 = 1e-6;
/// LayerNorm eps inside Token_performer / Token_transformer (plain `nn.LayerNorm`).
const TOKEN_LAYER_NORM_EPS: f32 = 1e-5;
/// BatchNorm eps (PyTorch default).
const BATCH_NORM_EPS: f32 = 1e-5;

/// Receives named intermediate activations during [`ReferenceModel::forward_observed`].
///
/// Names and shapes follow the fixtures (`shape` has a leading batch dimension of 1; token
/// layout `(1, N, C)`, token = row·W + col, a class token first where there is one):
/// `s{i}_rc_pool` (the max-pool of `'pooling'`), `s{i}_rc_prm` (the PRM, or the patch embedding
/// of `'embedding'` without the class token), `s{i}_rc_pcm`, `s{i}_rc_attn` (attention incl. the
/// v skip), `s{i}_rc_out`, `s{i}_nc{j}_pcm` (spatial tokens only), `s{i}_nc{j}_attn`,
/// `s{i}_nc{j}_mlp` (branch outputs before their residual add), `s{i}_nc{j}_out`, `pooled`
/// `(1, C)`, `fc_norm` `(1, C)` (`class_token = true`), `logits` `(1, classes)`. Cells without a
/// PCM or attention (performer_less) report only `_prm` and `_out`; identity cells nothing.
pub trait Observer {
    /// Called once per named activation, in forward order.
    fn observe(&mut self, name: &str, shape: &[usize], data: &[f32]);
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn observe(&mut self, _name: &str, _shape: &[usize], _data: &[f32]) {}
}

/// Why a model could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The checkpoint does not match the config (every problem listed).
    #[error(transparent)]
    Checkpoint(#[from] CheckpointReport),
    /// The input has the wrong number of values.
    #[error(
        "input has {found} values, the model expects {expected} per image ({channels}x{size}x{size})"
    )]
    InputSize {
        /// Values given.
        found: usize,
        /// Values per image.
        expected: usize,
        /// Channels.
        channels: usize,
        /// Height = width.
        size: usize,
    },
    /// An op refused its arguments (a bug: validation should have caught it).
    #[error("internal error: {0}")]
    Op(#[from] OpError),
    /// A validated key was absent (a bug).
    #[error("internal error: tensor '{0}' missing after validation")]
    MissingTensor(String),
}

/// Reduction cell attention block.
#[derive(Clone, Debug)]
pub(crate) enum RcAttention {
    /// `Token_performer.attn`, with the v skip (`v_skip = true`).
    Performer(PerformerAttention),
    /// `Token_transformer.attn` (Dec-2021), with the v skip.
    Transformer(TokenTransformerAttention),
}

/// Weights of a reduction cell with PCM + attention (not performer_less).
#[derive(Clone, Debug)]
pub(crate) struct RcMixer {
    /// PCM convs; BatchNorm `PCM.3` folded into the second.
    pub(crate) pcm: [Conv2d; 3],
    pub(crate) norm1: LayerNorm,
    pub(crate) attention: RcAttention,
    pub(crate) norm2: LayerNorm,
    pub(crate) mlp: Mlp,
}

/// A reduction cell built on the PRM: `performer`, `performer_less`, `transformer`, `pooling`.
#[derive(Clone, Debug)]
pub(crate) struct PrmCell {
    /// `'pooling'`: `MaxPool2d(r, stride r)` first; the PRM (stride 1) and the PCM read its output.
    pub(crate) pool: Option<usize>,
    /// One conv per dilation; GELU after each.
    pub(crate) prm: Vec<Conv2d>,
    /// Branches concatenated branch-major (channel = branch·E + c) or summed.
    pub(crate) op: PrmOp,
    /// PCM + attention + MLP; `None`: the PRM output is the cell output.
    pub(crate) mixer: Option<RcMixer>,
}

/// The `'embedding'` reduction cell (timm `PatchEmbed` + class token + position embedding).
#[derive(Clone, Debug)]
pub(crate) struct PatchEmbedding {
    /// `PRM.proj`: kernel = stride = ratio, no padding, no activation.
    pub(crate) proj: Conv2d,
    /// `cls_token`, `token_dim` values.
    pub(crate) cls_token: Vec<f32>,
    /// `pos_embed`, `(1 + tokens) × token_dim` row-major; row 0 goes with the class token.
    pub(crate) pos_embed: Vec<f32>,
}

/// What a reduction cell computes (config: [`crate::config::RcForm`]).
#[derive(Clone, Debug)]
pub(crate) enum ReductionCell {
    /// `nn.Identity` / `'none'`: no weights, the activations pass through.
    Identity,
    /// `'embedding'`: output `cat(cls_token, proj(x)) + pos_embed`, class token first.
    Embedding(Box<PatchEmbedding>),
    /// PRM-based cells.
    Prm(Box<PrmCell>),
}

/// Normal cell attention block (on `norm1(x)`, all tokens incl. the class token).
#[derive(Clone, Debug)]
pub(crate) enum NcAttention {
    /// `Attention`: `proj(MHSA(qkv(x)))`.
    Mhsa(MultiHeadSelfAttention),
    /// `AttentionPerformer.attn`: `proj(performer(kqv(x)))`, no v skip (`v_skip = false`), one
    /// head; its own `attn.norm1` is never used and not loaded.
    Performer(PerformerAttention),
}

/// Normal cell PCM (on the spatial tokens only); BatchNorms folded into the conv before them.
#[derive(Clone, Debug)]
pub(crate) enum NcPcm {
    /// `PCM.0`(+BN `PCM.1`), SiLU, `PCM.3`(+BN `PCM.4`), SiLU, `PCM.6`, SiLU.
    Full([Conv2d; 3]),
    /// `*_shallow`: `PCM.0`(+BN `PCM.1`), SiLU, `PCM.3` — no activation after the last conv.
    Shallow([Conv2d; 2]),
}

/// A normal cell. With a class token in front (`StageInfo::class_token`) the attention and the
/// MLP see all `1 + N` rows, the PCM reads rows `1..` as the map and is added to them only
/// (`x[:, 1:] += convX`, after the attention residual).
#[derive(Clone, Debug)]
pub(crate) struct NormalCell {
    pub(crate) pcm: NcPcm,
    pub(crate) norm1: LayerNorm,
    pub(crate) attention: NcAttention,
    pub(crate) norm2: LayerNorm,
    pub(crate) mlp: Mlp,
}

#[derive(Clone, Debug)]
pub(crate) struct Stage {
    pub(crate) info: StageInfo,
    pub(crate) rc: ReductionCell,
    pub(crate) ncs: Vec<NormalCell>,
}

/// The f32 reference model.
#[derive(Clone, Debug)]
pub struct ReferenceModel {
    config: ModelConfig,
    stages: Vec<Stage>,
    /// `class_token = true`: `fc_norm` (LayerNorm eps 1e-6) on the pooled features.
    fc_norm: Option<LayerNorm>,
    /// The classifier; `None` for `num_classes = 0` (`nn.Identity`: the features are the output).
    head: Option<Linear>,
}

/// Looks tensors up by key after validation.
struct Weights<'a>(&'a Checkpoint);

impl Weights<'_> {
    fn get(&self, key: &str) -> Result<&Tensor, ModelError> {
        self.0
            .tensors
            .get(key)
            .ok_or_else(|| ModelError::MissingTensor(key.to_string()))
    }

    fn vec(&self, key: &str) -> Result<Vec<f32>, ModelError> {
        Ok(self.get(key)?.data.clone())
    }

    fn linear(&self, prefix: &str, bias: bool) -> Result<Linear, ModelError> {
        let weight = self.get(&format!("{prefix}.weight"))?;
        let (out, inp) = match weight.shape.as_slice() {
            [out, inp] => (*out, *inp),
            _ => return Err(ModelError::MissingTensor(format!("{prefix}.weight (2-D)"))),
        };
        let bias = if bias {
            Some(self.vec(&format!("{prefix}.bias"))?)
        } else {
            None
        };
        Ok(Linear::new(inp, out, weight.data.clone(), bias)?)
    }

    fn layer_norm(&self, prefix: &str, eps: f32) -> Result<LayerNorm, ModelError> {
        Ok(LayerNorm {
            gamma: self.vec(&format!("{prefix}.weight"))?,
            beta: self.vec(&format!("{prefix}.bias"))?,
            eps,
        })
    }

    fn batch_norm(&self, prefix: &str) -> Result<BatchNorm, ModelError> {
        Ok(BatchNorm {
            gamma: self.vec(&format!("{prefix}.weight"))?,
            beta: self.vec(&format!("{prefix}.bias"))?,
            running_mean: self.vec(&format!("{prefix}.running_mean"))?,
            running_var: self.vec(&format!("{prefix}.running_var"))?,
            eps: BATCH_NORM_EPS,
        })
    }

    /// A conv from `{prefix}.weight/.bias`, with an optional BatchNorm folded in.
    fn conv(
        &self,
        prefix: &str,
        spec: ConvSpec,
        batch_norm: Option<&str>,
    ) -> Result<Conv2d, ModelError> {
        let mut weight = self.vec(&format!("{prefix}.weight"))?;
        let mut bias = self.vec(&format!("{prefix}.bias"))?;
        if let Some(bn) = batch_norm {
            fold_batchnorm(&mut weight, &mut bias, &self.batch_norm(bn)?)?;
        }
        Ok(Conv2d::new(spec, weight, Some(bias))?)
    }
}

impl ReferenceModel {
    /// Validates `checkpoint` against `config` (every problem reported at once), then builds
    /// the model with BatchNorms folded into their convs. A config whose release was only
    /// assumed is resolved for the checkpoint first ([`ModelConfig::for_checkpoint`]);
    /// [`ReferenceModel::config`] returns the resolved one.
    pub fn new(config: ModelConfig, checkpoint: &Checkpoint) -> Result<Self, ModelError> {
        let config = config.for_checkpoint(checkpoint);
        check_checkpoint(&config, checkpoint)?;
        let weights = Weights(checkpoint);
        let mut stages = Vec::with_capacity(config.stages().len());
        for info in config.stages() {
            let rc = build_reduction_cell(&weights, info)?;
            let ncs = (0..info.nc.depth)
                .map(|j| build_normal_cell(&weights, info, j))
                .collect::<Result<_, _>>()?;
            stages.push(Stage {
                info: info.clone(),
                rc,
                ncs,
            });
        }
        let fc_norm = config
            .class_token()
            .then(|| weights.layer_norm("fc_norm", NC_LAYER_NORM_EPS))
            .transpose()?;
        let head = (config.num_classes() > 0)
            .then(|| weights.linear("head", true))
            .transpose()?;
        Ok(ReferenceModel {
            config,
            stages,
            fc_norm,
            head,
        })
    }

    /// The architecture (resolved for the checkpoint).
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The cells with their (BatchNorm-folded) weights, for the quantizer's graph builder.
    pub(crate) fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// `fc_norm` (`class_token = true`), applied to the pooled features before the head.
    pub(crate) fn fc_norm(&self) -> Option<&LayerNorm> {
        self.fc_norm.as_ref()
    }

    /// The classifier (`None`: `num_classes = 0`).
    pub(crate) fn head(&self) -> Option<&Linear> {
        self.head.as_ref()
    }

    /// Logits for one CHW image of `in_chans × img_size × img_size` values
    /// ([`ModelConfig::output_dim`] of them).
    pub fn forward(&self, image_chw: &[f32]) -> Result<Vec<f32>, ModelError> {
        self.forward_observed(image_chw, &mut NoObserver)
    }

    /// Logits for a batch of `N` CHW images laid out back to back (NCHW); returns
    /// `N × output_dim`.
    /// Images run one after another (each forward already uses all cores).
    pub fn forward_batch(
        &self,
        images_nchw: &[f32],
        observer: &mut dyn Observer,
    ) -> Result<Vec<f32>, ModelError> {
        let per_image = self.config.input_len();
        if per_image == 0 || images_nchw.is_empty() || !images_nchw.len().is_multiple_of(per_image)
        {
            return Err(self.input_error(images_nchw.len()));
        }
        let mut logits =
            Vec::with_capacity(images_nchw.len() / per_image * self.config.output_dim());
        for image in images_nchw.chunks_exact(per_image) {
            logits.extend(self.forward_observed(image, observer)?);
        }
        Ok(logits)
    }

    fn input_error(&self, found: usize) -> ModelError {
        ModelError::InputSize {
            found,
            expected: self.config.input_len(),
            channels: self.config.in_chans(),
            size: self.config.img_size(),
        }
    }

    /// Logits for one image, reporting named intermediates to `observer` (see [`Observer`]).
    pub fn forward_observed(
        &self,
        image_chw: &[f32],
        observer: &mut dyn Observer,
    ) -> Result<Vec<f32>, ModelError> {
        let size = self.config.img_size();
        if image_chw.len() != self.config.input_len() {
            return Err(self.input_error(image_chw.len()));
        }
        let mut x = Tokens {
            cls: None,
            map: FeatureMap::from_chw(self.config.in_chans(), size, size, image_chw)?,
        };
        for stage in &self.stages {
            let i = stage.info.index;
            x = reduction_cell(stage, x, observer)?;
            for (j, nc) in stage.ncs.iter().enumerate() {
                x = normal_cell(nc, &x, &format!("s{i}_nc{j}"), observer)?;
            }
        }
        let c = x.map.channels;
        let pooled = if self.config.class_token() {
            // mean(x[:, 1:]): without a class token in front that leaves out spatial token 0.
            match x.cls {
                Some(_) => mean_pool(&x.map.data, c)?,
                None => mean_pool(x.map.data.get(c..).unwrap_or_default(), c)?,
            }
        } else {
            mean_pool(&x.rows(), c)?
        };
        observer.observe("pooled", &[1, pooled.len()], &pooled);
        let features = match &self.fc_norm {
            Some(norm) => {
                let normed = norm.forward(&pooled)?;
                observer.observe("fc_norm", &[1, normed.len()], &normed);
                normed
            }
            None => pooled,
        };
        let logits = match &self.head {
            Some(head) => head.forward(&features)?,
            None => features,
        };
        observer.observe("logits", &[1, logits.len()], &logits);
        Ok(logits)
    }
}

/// The activations between cells: a square map of tokens, after the class token if an
/// `'embedding'` cell put one in front.
struct Tokens {
    /// The class token (`channels` values), row 0 of the official `(B, 1 + N, C)` tensor.
    cls: Option<Vec<f32>>,
    /// The spatial tokens, rows `1..` (or all rows without a class token).
    map: FeatureMap,
}

impl Tokens {
    /// All rows, class token first: the official `(1 + N) × C` (or `N × C`) tensor.
    fn rows(&self) -> Cow<'_, [f32]> {
        match &self.cls {
            None => Cow::Borrowed(&self.map.data),
            Some(cls) => {
                let mut rows = Vec::with_capacity(cls.len() + self.map.data.len());
                rows.extend_from_slice(cls);
                rows.extend_from_slice(&self.map.data);
                Cow::Owned(rows)
            }
        }
    }

    /// From rows, splitting off the class token if `with_cls`.
    fn from_rows(
        height: usize,
        width: usize,
        channels: usize,
        mut rows: Vec<f32>,
        with_cls: bool,
    ) -> Result<Self, ModelError> {
        let cls = with_cls.then(|| {
            let spatial = rows.split_off(channels.min(rows.len()));
            std::mem::replace(&mut rows, spatial)
        });
        Ok(Tokens {
            cls,
            map: FeatureMap::new(height, width, channels, rows)?,
        })
    }
}

fn build_reduction_cell(
    weights: &Weights<'_>,
    info: &StageInfo,
) -> Result<ReductionCell, ModelError> {
    let rc = &info.rc;
    let p = format!("layers.{}.RC", info.index);
    let (cin, e, t, g) = (
        info.input_channels,
        info.embed_dim,
        info.token_dim,
        rc.group,
    );
    let attention = match rc.form {
        RcForm::Identity => return Ok(ReductionCell::Identity),
        RcForm::Embedding => {
            let spec = ConvSpec::square(cin, t, rc.ratio, rc.ratio, 0, 1, 1);
            return Ok(ReductionCell::Embedding(Box::new(PatchEmbedding {
                proj: weights.conv(&format!("{p}.PRM.proj"), spec, None)?,
                cls_token: weights.vec(&format!("{p}.cls_token"))?,
                pos_embed: weights.vec(&format!("{p}.pos_embed"))?,
            })));
        }
        RcForm::Prm { attention } => attention,
    };
    let prm = rc
        .dilations
        .iter()
        .zip(&rc.prm_paddings)
        .enumerate()
        .map(|(b, (&d, &pad))| {
            let spec = ConvSpec::square(cin, e, rc.kernel_size, rc.prm_stride, pad, d, 1);
            weights.conv(&format!("{p}.PRM.convs.{b}.0"), spec, None)
        })
        .collect::<Result<_, _>>()?;
    let mixer = match attention {
        None => None,
        Some(kind) => {
            let [s0, s1, s2] = rc.pcm_strides;
            let pcm = [
                weights.conv(
                    &format!("{p}.PCM.0"),
                    ConvSpec::square(cin, e, 3, s0, 1, 1, g),
                    None,
                )?,
                weights.conv(
                    &format!("{p}.PCM.2"),
                    ConvSpec::square(e, e, 3, s1, 1, 1, g),
                    Some(&format!("{p}.PCM.3")),
                )?,
                weights.conv(
                    &format!("{p}.PCM.5"),
                    ConvSpec::square(e, t, 3, s2, 1, 1, g),
                    None,
                )?,
            ];
            let (attention, mlp) = match kind {
                RcAttentionKind::Performer => {
                    let attention = RcAttention::Performer(PerformerAttention {
                        kqv: weights.linear(&format!("{p}.attn.kqv"), true)?,
                        proj: weights.linear(&format!("{p}.attn.proj"), true)?,
                        w: weights.vec(&format!("{p}.attn.w"))?,
                        features: rc.performer_features,
                        v_skip: true,
                    });
                    let mlp = Mlp {
                        fc1: weights.linear(&format!("{p}.attn.mlp.0"), true)?,
                        fc2: weights.linear(&format!("{p}.attn.mlp.2"), true)?,
                    };
                    (attention, mlp)
                }
                RcAttentionKind::Transformer => {
                    let attention = RcAttention::Transformer(TokenTransformerAttention {
                        qkv: weights.linear(&format!("{p}.attn.attn.qkv"), false)?,
                        proj: weights.linear(&format!("{p}.attn.attn.proj"), true)?,
                        heads: rc.heads,
                    });
                    let mlp = Mlp {
                        fc1: weights.linear(&format!("{p}.attn.mlp.fc1"), true)?,
                        fc2: weights.linear(&format!("{p}.attn.mlp.fc2"), true)?,
                    };
                    (attention, mlp)
                }
            };
            Some(RcMixer {
                pcm,
                norm1: weights.layer_norm(&format!("{p}.attn.norm1"), TOKEN_LAYER_NORM_EPS)?,
                attention,
                norm2: weights.layer_norm(&format!("{p}.attn.norm2"), TOKEN_LAYER_NORM_EPS)?,
                mlp,
            })
        }
    };
    Ok(ReductionCell::Prm(Box::new(PrmCell {
        pool: rc.pool,
        prm,
        op: rc.prm_op,
        mixer,
    })))
}

fn build_normal_cell(
    weights: &Weights<'_>,
    info: &StageInfo,
    j: usize,
) -> Result<NormalCell, ModelError> {
    let nc = &info.nc;
    let p = format!("layers.{}.NC.{j}", info.index);
    let (t, h, g) = (info.token_dim, nc.mlp_hidden, nc.group);
    let first = weights.conv(
        &format!("{p}.PCM.0"),
        ConvSpec::square(t, h, 3, 1, 1, 1, g),
        Some(&format!("{p}.PCM.1")),
    )?;
    let pcm = if nc.tokens_type.is_shallow() {
        NcPcm::Shallow([
            first,
            weights.conv(
                &format!("{p}.PCM.3"),
                ConvSpec::square(h, t, 3, 1, 1, 1, g),
                None,
            )?,
        ])
    } else {
        NcPcm::Full([
            first,
            weights.conv(
                &format!("{p}.PCM.3"),
                ConvSpec::square(h, t, 3, 1, 1, 1, g),
                Some(&format!("{p}.PCM.4")),
            )?,
            weights.conv(
                &format!("{p}.PCM.6"),
                ConvSpec::square(t, t, 3, 1, 1, 1, g),
                None,
            )?,
        ])
    };
    let attention = if nc.tokens_type.is_performer() {
        NcAttention::Performer(PerformerAttention {
            kqv: weights.linear(&format!("{p}.attn.kqv"), true)?,
            proj: weights.linear(&format!("{p}.attn.proj"), true)?,
            w: weights.vec(&format!("{p}.attn.w"))?,
            features: nc.performer_features,
            v_skip: false,
        })
    } else {
        NcAttention::Mhsa(MultiHeadSelfAttention {
            qkv: weights.linear(&format!("{p}.attn.qkv"), nc.qkv_bias)?,
            proj: weights.linear(&format!("{p}.attn.proj"), true)?,
            heads: nc.heads,
            scale: nc.scale,
        })
    };
    Ok(NormalCell {
        pcm,
        norm1: weights.layer_norm(&format!("{p}.norm1"), NC_LAYER_NORM_EPS)?,
        attention,
        norm2: weights.layer_norm(&format!("{p}.norm2"), NC_LAYER_NORM_EPS)?,
        mlp: Mlp {
            fc1: weights.linear(&format!("{p}.mlp.fc1"), true)?,
            fc2: weights.linear(&format!("{p}.mlp.fc2"), true)?,
        },
    })
}

/// 3×3 convs with BatchNorms folded: SiLU after each, except after the last of a shallow
/// normal-cell PCM (`silu_last = false`).
fn pcm(convs: &[Conv2d], x: &FeatureMap, silu_last: bool) -> Result<FeatureMap, ModelError> {
    let mut y: Option<FeatureMap> = None;
    for (n, conv) in convs.iter().enumerate() {
        let mut out = conv.forward(y.as_ref().unwrap_or(x))?;
        if silu_last || n + 1 < convs.len() {
            silu_inplace(&mut out.data);
        }
        y = Some(out);
    }
    match y {
        Some(y) => Ok(y),
        None => Ok(x.clone()),
    }
}

/// PRM: dilated convs + GELU, concatenated branch-major (channel = branch·E + c) or summed.
fn prm(convs: &[Conv2d], op: PrmOp, x: &FeatureMap) -> Result<FeatureMap, ModelError> {
    let branches = convs
        .par_iter()
        .map(|conv| {
            let mut y = conv.forward(x)?;
            gelu_inplace(&mut y.data);
            Ok(y)
        })
        .collect::<Result<Vec<FeatureMap>, ModelError>>()?;
    let mut branches = branches.into_iter();
    let Some(first) = branches.next() else {
        return Ok(FeatureMap::new(0, 0, 0, Vec::new())?);
    };
    if op == PrmOp::Sum {
        let mut sum = first;
        for branch in branches {
            add_inplace(&mut sum.data, &branch.data)?;
        }
        return Ok(sum);
    }
    let (h, w, e) = (first.height, first.width, first.channels);
    let all: Vec<FeatureMap> = std::iter::once(first).chain(branches).collect();
    let channels = e * all.len();
    let mut out = vec![0.0; h * w * channels];
    for (b, branch) in all.iter().enumerate() {
        for (dst, src) in out
            .chunks_exact_mut(channels)
            .zip(branch.data.chunks_exact(e))
        {
            dst[b * e..(b + 1) * e].copy_from_slice(src);
        }
    }
    Ok(FeatureMap::new(h, w, channels, out)?)
}

fn observe_tokens(
    observer: &mut dyn Observer,
    name: &str,
    tokens: usize,
    channels: usize,
    data: &[f32],
) {
    observer.observe(name, &[1, tokens, channels], data);
}

/// ReductionCell.forward (doc §3.1).
fn reduction_cell(
    stage: &Stage,
    x: Tokens,
    observer: &mut dyn Observer,
) -> Result<Tokens, ModelError> {
    let i = stage.info.index;
    let cell = match &stage.rc {
        ReductionCell::Identity => return Ok(x),
        ReductionCell::Embedding(embedding) => {
            let patches = embedding.proj.forward(&x.map)?;
            let (h, w, t) = (patches.height, patches.width, patches.channels);
            observe_tokens(observer, &format!("s{i}_rc_prm"), h * w, t, &patches.data);
            let mut rows = Vec::with_capacity((1 + h * w) * t);
            rows.extend_from_slice(&embedding.cls_token);
            rows.extend_from_slice(&patches.data);
            add_inplace(&mut rows, &embedding.pos_embed)?;
            observe_tokens(observer, &format!("s{i}_rc_out"), 1 + h * w, t, &rows);
            return Tokens::from_rows(h, w, t, rows, true);
        }
        ReductionCell::Prm(cell) => cell,
    };
    let pooled = match cell.pool {
        Some(window) => {
            let pooled = max_pool2d(&x.map, window)?;
            observe_tokens(
                observer,
                &format!("s{i}_rc_pool"),
                pooled.tokens(),
                pooled.channels,
                &pooled.data,
            );
            Cow::Owned(pooled)
        }
        None => Cow::Borrowed(&x.map),
    };
    let input: &FeatureMap = &pooled;
    // The PRM and the PCM both read the cell input (image, previous tokens or the pooled map)
    // and are independent: run them side by side.
    let (prm, conv) = rayon::join(
        || prm(&cell.prm, cell.op, input),
        || {
            cell.mixer
                .as_ref()
                .map(|mixer| pcm(&mixer.pcm, input, true))
                .transpose()
        },
    );
    let prm = prm?;
    let (h, w, channels) = (prm.height, prm.width, prm.channels);
    let tokens = h * w;
    observe_tokens(
        observer,
        &format!("s{i}_rc_prm"),
        tokens,
        channels,
        &prm.data,
    );
    let (Some(mixer), Some(conv)) = (&cell.mixer, conv?) else {
        observe_tokens(
            observer,
            &format!("s{i}_rc_out"),
            tokens,
            channels,
            &prm.data,
        );
        return Ok(Tokens {
            cls: None,
            map: prm,
        });
    };
    let t = conv.channels;
    observe_tokens(observer, &format!("s{i}_rc_pcm"), tokens, t, &conv.data);
    let normed = mixer.norm1.forward(&prm.data)?;
    let mut y = match &mixer.attention {
        RcAttention::Performer(attention) => attention.forward(&normed)?,
        RcAttention::Transformer(attention) => attention.forward(&normed)?,
    };
    observe_tokens(observer, &format!("s{i}_rc_attn"), tokens, t, &y);
    add_inplace(&mut y, &conv.data)?;
    let mlp = mixer.mlp.forward(&mixer.norm2.forward(&y)?)?;
    add_inplace(&mut y, &mlp)?;
    observe_tokens(observer, &format!("s{i}_rc_out"), tokens, t, &y);
    Ok(Tokens {
        cls: None,
        map: FeatureMap::new(h, w, t, y)?,
    })
}

/// NormalCell.forward (doc §6): `x + attn(LN1 x) + PCM(x)`, then `+ MLP(LN2 ·)`; with a class
/// token the PCM reads and is added to the spatial rows only.
fn normal_cell(
    nc: &NormalCell,
    x: &Tokens,
    name: &str,
    observer: &mut dyn Observer,
) -> Result<Tokens, ModelError> {
    let c = x.map.channels;
    let spatial = x.map.tokens();
    let rows = x.rows();
    let n = rows.len() / c.max(1);
    // Conv branch and attention branch both read the cell input: run them side by side.
    let (conv, attention) = rayon::join(
        || match &nc.pcm {
            NcPcm::Full(convs) => pcm(convs, &x.map, true),
            NcPcm::Shallow(convs) => pcm(convs, &x.map, false),
        },
        || -> Result<Vec<f32>, ModelError> {
            let normed = nc.norm1.forward(&rows)?;
            Ok(match &nc.attention {
                NcAttention::Mhsa(attention) => attention.forward(&normed)?,
                NcAttention::Performer(attention) => attention.forward(&normed)?,
            })
        },
    );
    let (conv, attention) = (conv?, attention?);
    observe_tokens(observer, &format!("{name}_pcm"), spatial, c, &conv.data);
    observe_tokens(observer, &format!("{name}_attn"), n, c, &attention);
    let mut y = rows.into_owned();
    add_inplace(&mut y, &attention)?;
    let offset = if x.cls.is_some() { c } else { 0 };
    add_inplace(&mut y[offset..], &conv.data)?;
    let mlp = nc.mlp.forward(&nc.norm2.forward(&y)?)?;
    observe_tokens(observer, &format!("{name}_mlp"), n, c, &mlp);
    add_inplace(&mut y, &mlp)?;
    observe_tokens(observer, &format!("{name}_out"), n, c, &y);
    Tokens::from_rows(x.map.height, x.map.width, c, y, x.cls.is_some())
}
