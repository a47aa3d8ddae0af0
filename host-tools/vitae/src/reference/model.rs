//! The f32 reference ViTAE: official forward pass (doc §2-§6) built from [`super::ops`], the
//! oracle every quantized or device result is compared against.

use rayon::prelude::*;

use crate::checkpoint::{Checkpoint, Tensor};
use crate::config::{ModelConfig, RcTokensType, StageInfo};
use crate::validate::{CheckpointReport, check_checkpoint};

use super::ops::{
    BatchNorm, Conv2d, ConvSpec, FeatureMap, LayerNorm, Linear, Mlp, MultiHeadSelfAttention,
    OpError, PerformerAttention, TokenTransformerAttention, add_inplace, fold_batchnorm,
    gelu_inplace, mean_pool, silu_inplace,
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
/// layout `(1, N, C)`, token = row·W + col):
/// `s{i}_rc_prm`, `s{i}_rc_pcm`, `s{i}_rc_attn` (attention incl. the v skip), `s{i}_rc_out`,
/// `s{i}_nc{j}_pcm`, `s{i}_nc{j}_attn`, `s{i}_nc{j}_mlp` (branch outputs before their residual
/// add), `s{i}_nc{j}_out`, `pooled` `(1, C)`, `logits` `(1, classes)`. Cells without a PCM or
/// attention (performer_less) report only `_prm` and `_out`.
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
    Performer(PerformerAttention),
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

#[derive(Clone, Debug)]
pub(crate) struct ReductionCell {
    /// One conv per dilation; GELU after each; outputs concatenated branch-major.
    pub(crate) prm: Vec<Conv2d>,
    pub(crate) mixer: Option<RcMixer>,
}

#[derive(Clone, Debug)]
pub(crate) struct NormalCell {
    /// PCM convs; BatchNorms `PCM.1`/`PCM.4` folded into the first two.
    pub(crate) pcm: [Conv2d; 3],
    pub(crate) norm1: LayerNorm,
    pub(crate) attention: MultiHeadSelfAttention,
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
    head: Linear,
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
    /// the model with BatchNorms folded into their convs.
    pub fn new(config: ModelConfig, checkpoint: &Checkpoint) -> Result<Self, ModelError> {
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
        let head = weights.linear("head", true)?;
        Ok(ReferenceModel {
            config,
            stages,
            head,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The cells with their (BatchNorm-folded) weights, for the quantizer's graph builder.
    pub(crate) fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The classifier.
    pub(crate) fn head(&self) -> &Linear {
        &self.head
    }

    /// Logits for one CHW image of `in_chans × img_size × img_size` values.
    pub fn forward(&self, image_chw: &[f32]) -> Result<Vec<f32>, ModelError> {
        self.forward_observed(image_chw, &mut NoObserver)
    }

    /// Logits for a batch of `N` CHW images laid out back to back (NCHW); returns `N × classes`.
    /// Images run one after another (each forward already uses all cores).
    pub fn forward_batch(
        &self,
        images_nchw: &[f32],
        observer: &mut dyn Observer,
    ) -> Result<Vec<f32>, ModelError> {
        let per_image = self.config.input_len();
        if per_image == 0 || images_nchw.is_empty() || images_nchw.len() % per_image != 0 {
            return Err(self.input_error(images_nchw.len()));
        }
        let mut logits =
            Vec::with_capacity(images_nchw.len() / per_image * self.config.num_classes());
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
        let mut x = FeatureMap::from_chw(self.config.in_chans(), size, size, image_chw)?;
        for stage in &self.stages {
            let i = stage.info.index;
            x = reduction_cell(stage, &x, observer)?;
            for (j, nc) in stage.ncs.iter().enumerate() {
                x = normal_cell(nc, &x, &format!("s{i}_nc{j}"), observer)?;
            }
        }
        let pooled = mean_pool(&x.data, x.channels)?;
        observer.observe("pooled", &[1, pooled.len()], &pooled);
        let logits = self.head.forward(&pooled)?;
        observer.observe("logits", &[1, logits.len()], &logits);
        Ok(logits)
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
    let prm = rc
        .dilations
        .iter()
        .zip(&rc.prm_paddings)
        .enumerate()
        .map(|(b, (&d, &pad))| {
            let spec = ConvSpec::square(cin, e, rc.kernel_size, rc.ratio, pad, d, 1);
            weights.conv(&format!("{p}.PRM.convs.{b}.0"), spec, None)
        })
        .collect::<Result<_, _>>()?;
    let mixer = match rc.tokens_type {
        RcTokensType::PerformerLess => None,
        kind => {
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
            let (attention, mlp) = if kind == RcTokensType::Performer {
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
            } else {
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
    Ok(ReductionCell { prm, mixer })
}

fn build_normal_cell(
    weights: &Weights<'_>,
    info: &StageInfo,
    j: usize,
) -> Result<NormalCell, ModelError> {
    let nc = &info.nc;
    let p = format!("layers.{}.NC.{j}", info.index);
    let (t, h, g) = (info.token_dim, nc.mlp_hidden, nc.group);
    Ok(NormalCell {
        pcm: [
            weights.conv(
                &format!("{p}.PCM.0"),
                ConvSpec::square(t, h, 3, 1, 1, 1, g),
                Some(&format!("{p}.PCM.1")),
            )?,
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
        ],
        norm1: weights.layer_norm(&format!("{p}.norm1"), NC_LAYER_NORM_EPS)?,
        attention: MultiHeadSelfAttention {
            qkv: weights.linear(&format!("{p}.attn.qkv"), nc.qkv_bias)?,
            proj: weights.linear(&format!("{p}.attn.proj"), true)?,
            heads: nc.heads,
            scale: nc.scale,
        },
        norm2: weights.layer_norm(&format!("{p}.norm2"), NC_LAYER_NORM_EPS)?,
        mlp: Mlp {
            fc1: weights.linear(&format!("{p}.mlp.fc1"), true)?,
            fc2: weights.linear(&format!("{p}.mlp.fc2"), true)?,
        },
    })
}

/// Three 3×3 convs, each followed by SiLU (BatchNorms already folded).
fn pcm(convs: &[Conv2d; 3], x: &FeatureMap) -> Result<FeatureMap, ModelError> {
    let [first, second, third] = convs;
    let mut y = first.forward(x)?;
    silu_inplace(&mut y.data);
    for conv in [second, third] {
        y = conv.forward(&y)?;
        silu_inplace(&mut y.data);
    }
    Ok(y)
}

/// PRM: dilated convs + GELU, concatenated branch-major (channel = branch·E + c).
fn prm(convs: &[Conv2d], x: &FeatureMap) -> Result<FeatureMap, ModelError> {
    let branches = convs
        .par_iter()
        .map(|conv| {
            let mut y = conv.forward(x)?;
            gelu_inplace(&mut y.data);
            Ok(y)
        })
        .collect::<Result<Vec<FeatureMap>, ModelError>>()?;
    let (h, w, e) = match branches.first() {
        Some(b) => (b.height, b.width, b.channels),
        None => return Ok(FeatureMap::new(0, 0, 0, Vec::new())?),
    };
    let channels = e * branches.len();
    let mut out = vec![0.0; h * w * channels];
    for (b, branch) in branches.iter().enumerate() {
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
    x: &FeatureMap,
    observer: &mut dyn Observer,
) -> Result<FeatureMap, ModelError> {
    let i = stage.info.index;
    let rc = &stage.rc;
    // The PRM and the PCM both read the cell input (image or previous tokens) and are
    // independent: run them side by side.
    let (prm, conv) = rayon::join(
        || prm(&rc.prm, x),
        || {
            rc.mixer
                .as_ref()
                .map(|mixer| pcm(&mixer.pcm, x))
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
    let (Some(mixer), Some(conv)) = (&rc.mixer, conv?) else {
        observe_tokens(
            observer,
            &format!("s{i}_rc_out"),
            tokens,
            channels,
            &prm.data,
        );
        return Ok(prm);
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
    Ok(FeatureMap::new(h, w, t, y)?)
}

/// NormalCell.forward (doc §6): `x + attn(LN1 x) + PCM(x)`, then `+ MLP(LN2 ·)`.
fn normal_cell(
    nc: &NormalCell,
    x: &FeatureMap,
    name: &str,
    observer: &mut dyn Observer,
) -> Result<FeatureMap, ModelError> {
    let (tokens, c) = (x.tokens(), x.channels);
    // Conv branch and attention branch both read the cell input: run them side by side.
    let (conv, attention) = rayon::join(
        || pcm(&nc.pcm, x),
        || -> Result<Vec<f32>, ModelError> {
            Ok(nc.attention.forward(&nc.norm1.forward(&x.data)?)?)
        },
    );
    let (conv, attention) = (conv?, attention?);
    observe_tokens(observer, &format!("{name}_pcm"), tokens, c, &conv.data);
    observe_tokens(observer, &format!("{name}_attn"), tokens, c, &attention);
    let mut y = x.data.clone();
    add_inplace(&mut y, &attention)?;
    add_inplace(&mut y, &conv.data)?;
    let mlp = nc.mlp.forward(&nc.norm2.forward(&y)?)?;
    observe_tokens(observer, &format!("{name}_mlp"), tokens, c, &mlp);
    add_inplace(&mut y, &mlp)?;
    observe_tokens(observer, &format!("{name}_out"), tokens, c, &y);
    Ok(FeatureMap::new(x.height, x.width, c, y)?)
}
