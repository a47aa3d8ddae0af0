//! Model architecture: the keyword arguments of the official `ViTAE_ViT_basic` constructor,
//! resolved per stage, validated, plus the per-stage facts every consumer needs (feature-map
//! sizes, PRM paddings, PCM strides, token counts) so nobody recomputes them differently.
//!
//! A config comes from a flat `kwargs.json` (official argument names, scalars or per-stage
//! lists — see [`ModelConfig::from_kwargs_json`]) or from a preset name ([`ModelConfig::preset`]).
//! Missing keys take the constructor's defaults. Only what the reference engine implements is
//! accepted; everything else is rejected with an error naming the argument.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::io::{InputKind, ReadFileError, read_file};

/// Preset names accepted by [`ModelConfig::preset`] (current official code, ImageNet head).
pub const PRESETS: [&str; 4] = ["vitae-t", "vitae-6m", "vitae-13m", "vitae-s"];

/// Token mixer of a reduction cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RcTokensType {
    /// PRM + PCM + `Token_performer` (positive random features), heads must be 1.
    Performer,
    /// PRM only: the concatenated dilated-conv tokens are the cell output.
    PerformerLess,
    /// PRM + PCM + `Token_transformer` (Dec-2021 release; the current code silently drops it).
    Transformer,
}

impl RcTokensType {
    /// The official string.
    pub fn name(self) -> &'static str {
        match self {
            RcTokensType::Performer => "performer",
            RcTokensType::PerformerLess => "performer_less",
            RcTokensType::Transformer => "transformer",
        }
    }

    /// Whether the cell has a PCM and an attention block (everything but `performer_less`).
    pub fn has_attention(self) -> bool {
        !matches!(self, RcTokensType::PerformerLess)
    }
}

/// Token mixer of a normal cell. Only plain multi-head self-attention with the 3-conv PCM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NcTokensType {
    /// `Attention` (MHSA) + non-shallow PCM.
    Transformer,
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
    /// Token mixer.
    pub tokens_type: RcTokensType,
    /// Spatial downsampling (PRM stride).
    pub ratio: usize,
    /// PRM kernel size.
    pub kernel_size: usize,
    /// PRM dilations, in branch (= output channel block) order.
    pub dilations: Vec<usize>,
    /// PRM zero padding per dilation: `ceil(((k-1)·d + 1 - s) / 2)`.
    pub prm_paddings: Vec<usize>,
    /// PRM output channels `len(dilations) · embed_dim` (branch-major concat).
    pub prm_channels: usize,
    /// Strides of the three PCM convs (`ratio` split into powers of two).
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

/// Per-stage normal-cell facts.
#[derive(Clone, Debug, PartialEq)]
pub struct NormalCellInfo {
    /// Number of normal cells.
    pub depth: usize,
    /// Token mixer.
    pub tokens_type: NcTokensType,
    /// Attention heads.
    pub heads: usize,
    /// `token_dim / heads`.
    pub head_dim: usize,
    /// Softmax temperature `qk_scale or head_dim^-0.5`.
    pub scale: f32,
    /// Whether qkv has a bias.
    pub qkv_bias: bool,
    /// PCM conv groups.
    pub group: usize,
    /// `int(token_dim · mlp_ratio)`: MLP hidden width and PCM hidden channels.
    pub mlp_hidden: usize,
}

/// Everything about one stage (`layers.{index}`).
#[derive(Clone, Debug, PartialEq)]
pub struct StageInfo {
    /// Stage index.
    pub index: usize,
    /// Height = width of the stage's input feature map.
    pub input_size: usize,
    /// Channels of the stage's input (`in_chans` for stage 0, else the previous `token_dims`).
    pub input_channels: usize,
    /// Height = width after the reduction cell.
    pub output_size: usize,
    /// Tokens after the reduction cell (`output_size²`).
    pub tokens: usize,
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
}

/// A validated ViTAE architecture (official `ViTAE_ViT_basic` arguments, resolved per stage).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// The raw resolved arguments, by official name, for display.
    kwargs: BTreeMap<String, Value>,
    img_size: usize,
    in_chans: usize,
    num_classes: usize,
    stages: Vec<StageInfo>,
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
                let hint = if key == "norm_layer" {
                    " (LayerNorm eps 1e-6 is fixed)"
                } else {
                    ""
                };
                return Err(invalid(format!(
                    "unknown argument '{key}'{hint}; known: {}",
                    kwargs.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            kwargs.insert(key.clone(), value.clone());
        }
        resolve(kwargs, source_name).map_err(invalid)
    }

    /// Square input size the model is built for.
    pub fn img_size(&self) -> usize {
        self.img_size
    }

    /// Input channels.
    pub fn in_chans(&self) -> usize {
        self.in_chans
    }

    /// Classifier outputs.
    pub fn num_classes(&self) -> usize {
        self.num_classes
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
}

impl fmt::Display for ModelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}x{}x{} -> {} classes",
            self.source_name, self.in_chans, self.img_size, self.img_size, self.num_classes
        )?;
        for s in &self.stages {
            write!(
                f,
                "; stage {}: RC {} {}->{} tokens x{}, {} NC",
                s.index,
                s.rc.tokens_type.name(),
                s.input_size,
                s.output_size,
                s.token_dim,
                s.nc.depth
            )?;
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

fn resolve(mut kwargs: BTreeMap<String, Value>, source_name: &str) -> Result<ModelConfig, String> {
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
    if num_classes == 0 {
        return Err("num_classes = 0 (no classifier head) is not supported".into());
    }
    match kwargs["class_token"].as_bool() {
        Some(false) => {}
        Some(true) => return Err("class_token = true (ViTAE-B/L/H style) is not supported".into()),
        None => {
            return Err(format!(
                "class_token must be true or false, found {}",
                kwargs["class_token"]
            ));
        }
    }
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
    let rc_types = per_stage(&kwargs, "RC_tokens_type", stages, "a string", |v| {
        v.as_str().map(str::to_string)
    })?;
    let nc_types = per_stage(&kwargs, "NC_tokens_type", stages, "a string", |v| {
        v.as_str().map(str::to_string)
    })?;

    let mut stage_infos = Vec::with_capacity(stages);
    let mut size = img_size;
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
        let (embed, token, ratio, k) = (embed_dims[i], token_dims[i], ratios[i], kernel_size[i]);
        if embed == 0 || token == 0 {
            return Err(format!(
                "embed_dims[{i}] and token_dims[{i}] must be positive"
            ));
        }
        if rc_op[i] != "cat" {
            return Err(format!(
                "RC_op[{i}] = '{}' is not supported (only 'cat')",
                rc_op[i]
            ));
        }
        let tokens_type = match rc_types[i].as_str() {
            "performer" => RcTokensType::Performer,
            "performer_less" => RcTokensType::PerformerLess,
            "transformer" => RcTokensType::Transformer,
            other => {
                return Err(format!(
                    "RC_tokens_type[{i}] = '{other}' is not supported (supported: performer, performer_less, transformer)"
                ));
            }
        };
        let nc_type = match nc_types[i].as_str() {
            "transformer" => NcTokensType::Transformer,
            other => {
                return Err(format!(
                    "NC_tokens_type[{i}] = '{other}' is not supported (supported: transformer)"
                ));
            }
        };
        if ratio < 2 {
            return Err(format!(
                "downsample_ratios[{i}] = {ratio} is not supported (an identity reduction cell); use 2, 4 or 8"
            ));
        }
        if k == 0 {
            return Err(format!("kernel_size[{i}] must be positive"));
        }
        if dilations[i].is_empty() || dilations[i].contains(&0) {
            return Err(format!(
                "dilations[{i}] must be a non-empty list of positive dilations"
            ));
        }
        if size % ratio != 0 {
            return Err(format!(
                "input size {size} at stage {i} is not divisible by downsample_ratios[{i}] = {ratio} \
                 (img_size {img_size} must be divisible by the product of downsample_ratios)"
            ));
        }
        let out = size / ratio;
        let prm_paddings: Vec<usize> = dilations[i]
            .iter()
            .map(|&d| ((k - 1) * d + 1).saturating_sub(ratio).div_ceil(2))
            .collect();
        for (&d, &p) in dilations[i].iter().zip(&prm_paddings) {
            let reach = (k - 1) * d + 1;
            let produced = (size + 2 * p)
                .checked_sub(reach)
                .map(|span| span / ratio + 1);
            if produced != Some(out) {
                return Err(format!(
                    "stage {i}: PRM branch with kernel {k}, dilation {d}, stride {ratio}, padding {p} maps {size} to \
                     {produced:?}, not {out}"
                ));
            }
        }
        let prm_channels = dilations[i].len() * embed;
        let mut pcm_strides = [1usize; 3];
        let mut residual = ratio / 2;
        for stride in &mut pcm_strides {
            *stride = if residual > 0 { 2 } else { 1 };
            residual /= 2;
        }
        let heads = rc_heads[i];
        let group = rc_group[i];
        match tokens_type {
            RcTokensType::Performer | RcTokensType::Transformer => {
                if residual != 0 || pcm_strides.iter().product::<usize>() != ratio {
                    return Err(format!(
                        "downsample_ratios[{i}] = {ratio}: the PCM of a '{}' reduction cell only downsamples by 2, 4 or 8",
                        tokens_type.name()
                    ));
                }
                if group == 0 || channels % group != 0 || embed % group != 0 || token % group != 0 {
                    return Err(format!(
                        "RC_group[{i}] = {group} must divide the PCM channels {channels}, {embed} and {token}"
                    ));
                }
                if tokens_type == RcTokensType::Performer && heads != 1 {
                    return Err(format!(
                        "RC_heads[{i}] = {heads}: a 'performer' reduction cell needs RC_heads = 1"
                    ));
                }
                if tokens_type == RcTokensType::Transformer && (heads == 0 || token % heads != 0) {
                    return Err(format!(
                        "RC_heads[{i}] = {heads} must divide token_dims[{i}] = {token}"
                    ));
                }
                if tokens_type == RcTokensType::Performer && token < 2 {
                    return Err(format!(
                        "token_dims[{i}] = {token} is too small for performer features"
                    ));
                }
            }
            RcTokensType::PerformerLess => {
                if prm_channels != token {
                    return Err(format!(
                        "stage {i} is 'performer_less': len(dilations[{i}]) * embed_dims[{i}] = {} * {embed} = \
                         {prm_channels} must equal token_dims[{i}] = {token}",
                        dilations[i].len()
                    ));
                }
            }
        }
        let mlp_hidden = (token as f64 * mlp_ratio[i]).floor();
        if !(1.0..=MAX_DIM as f64).contains(&mlp_hidden) {
            return Err(format!(
                "mlp_ratio[{i}] = {} gives an invalid hidden width",
                mlp_ratio[i]
            ));
        }
        let mlp_hidden = mlp_hidden as usize;
        let depth = nc_depth[i];
        let (nc_heads_i, nc_group_i) = (nc_heads[i], nc_group[i]);
        if depth > 0 {
            if nc_heads_i == 0 || token % nc_heads_i != 0 {
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
            Some(s) if s != 0.0 => s as f32,
            _ => (head_dim.max(1) as f32).powf(-0.5),
        };
        stage_infos.push(StageInfo {
            index: i,
            input_size: size,
            input_channels: channels,
            output_size: out,
            tokens: out * out,
            embed_dim: embed,
            token_dim: token,
            rc: ReductionCellInfo {
                tokens_type,
                ratio,
                kernel_size: k,
                dilations: dilations[i].clone(),
                prm_paddings,
                prm_channels,
                pcm_strides,
                group,
                heads,
                performer_features: token / 2,
                mlp_hidden: token,
            },
            nc: NormalCellInfo {
                depth,
                tokens_type: nc_type,
                heads: nc_heads_i,
                head_dim,
                scale,
                qkv_bias: qkv_bias[i],
                group: nc_group_i,
                mlp_hidden,
            },
        });
        size = out;
        channels = token;
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
        img_size,
        in_chans,
        num_classes,
        stages: stage_infos,
        source_name: source_name.to_string(),
    })
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
            (r#""class_token": true"#, "class_token"),
            (
                r#""RC_tokens_type": ["pooling","performer","performer_less"]"#,
                "RC_tokens_type[0] = 'pooling'",
            ),
            (
                r#""RC_tokens_type": ["embedding","none","none"]"#,
                "RC_tokens_type[0] = 'embedding'",
            ),
            (
                r#""NC_tokens_type": "transformer_shallow""#,
                "NC_tokens_type[0]",
            ),
            (r#""RC_heads": [2,1,1]"#, "RC_heads[0] = 2"),
            (
                r#""token_dims": [64,64,200]"#,
                "must equal token_dims[2] = 200",
            ),
            (r#""img_size": 200"#, "not divisible"),
            (
                r#""embed_dims": [64,64]"#,
                "embed_dims has 2 entries but stages = 3",
            ),
            (r#""NC_heads": [1,1,3]"#, "NC_heads[2] = 3"),
            (r#""NC_group": [1,1,3]"#, "NC_group[2] = 3"),
            (r#""RC_op": "sum""#, "RC_op[0] = 'sum'"),
            (
                r#""dilations": [1,2,3]"#,
                "dilations must be a list of per-stage lists",
            ),
            (
                r#""downsample_ratios": [4,1,2]"#,
                "downsample_ratios[1] = 1",
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
