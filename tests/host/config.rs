//! Architecture configs from files: the fixtures' kwargs.json resolve to the documented
//! geometry, and bad files fail with the file and argument named.

#[path = "common.rs"]
mod common;

use vitae::config::{ConfigError, ModelConfig, RcTokensType};

use common::fixtures;

#[test]
#[cfg_attr(
    not(vitae_fixtures),
    ignore = "needs ../shared/fixtures (beside the checkout)"
)]
fn fixture_kwargs_resolve() {
    let mcu_a = ModelConfig::from_kwargs_file(&fixtures().join("mcu_a/kwargs.json")).unwrap();
    let sizes: Vec<(usize, usize, usize)> = mcu_a
        .stages()
        .iter()
        .map(|s| (s.input_size, s.output_size, s.tokens))
        .collect();
    assert_eq!(sizes, vec![(96, 24, 576), (24, 12, 144), (12, 6, 36)]);
    assert_eq!(
        mcu_a.stages()[2].rc.tokens_type,
        RcTokensType::PerformerLess
    );
    assert_eq!(
        (mcu_a.stages()[2].nc.group, mcu_a.stages()[2].nc.mlp_hidden),
        (20, 160)
    );
    let vitae_t = ModelConfig::from_kwargs_file(&fixtures().join("vitae_t/kwargs.json")).unwrap();
    assert_eq!(
        vitae_t.stages(),
        ModelConfig::preset("vitae-t").unwrap().stages()
    );
}

#[test]
fn one_channel_input_is_supported() {
    let config = ModelConfig::from_kwargs_json(
        r#"{"img_size": 32, "in_chans": 1, "stages": 2, "embed_dims": [8, 8], "token_dims": [16, 16],
            "downsample_ratios": [4, 2], "kernel_size": [7, 3], "dilations": [[1, 2], [1, 2]],
            "RC_tokens_type": ["performer", "performer_less"], "NC_depth": [0, 1], "NC_heads": [1, 2],
            "NC_group": [1, 4], "mlp_ratio": 2.0, "num_classes": 10}"#,
        "demo",
    )
    .unwrap();
    assert_eq!(config.in_chans(), 1);
    assert_eq!(config.stages()[0].input_channels, 1);
    let model = vitae::reference::ReferenceModel::new(
        config.clone(),
        &vitae::validate::random_checkpoint(&config, 3),
    )
    .unwrap();
    let logits = model.forward(&vec![0.25; 32 * 32]).unwrap();
    assert_eq!(logits.len(), 10);
    assert!(logits.iter().all(|v| v.is_finite()));
    assert!(matches!(
        model.forward(&[0.0; 7]),
        Err(vitae::reference::ModelError::InputSize { found: 7, .. })
    ));
}

#[test]
fn bad_files_name_the_file_and_argument() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let broken = write("broken.json", "{\"img_size\": ");
    let err = ModelConfig::from_kwargs_file(&broken).unwrap_err();
    assert!(matches!(err, ConfigError::Json { .. }));
    assert!(
        err.to_string()
            .starts_with(&format!("{}: not valid JSON", broken.display())),
        "{err}"
    );
    let unknown = write(
        "unknown.json",
        r#"{"img_size": 224, "norm_layer": "LayerNorm"}"#,
    );
    let err = ModelConfig::from_kwargs_file(&unknown)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown.json") && err.contains("unknown argument 'norm_layer'"),
        "{err}"
    );
    let performer_heads = write("heads.json", r#"{"RC_heads": [2, 1, 1, 1]}"#);
    let err = ModelConfig::from_kwargs_file(&performer_heads)
        .unwrap_err()
        .to_string();
    assert!(err.contains("RC_heads[0] = 2"), "{err}");
    let err = ModelConfig::from_kwargs_file(&dir.path().join("missing.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.json: file not found"), "{err}");
}

#[test]
fn official_defaults_build_the_four_stage_transformer_model() {
    // No arguments at all: ViTAE_ViT_basic's defaults (4 stages, RC 'transformer' in stages
    // 1-3, Dec-2021 semantics) must validate, build and run.
    let config = ModelConfig::from_kwargs_json("{}", "defaults").unwrap();
    assert_eq!(config.stages().len(), 4);
    assert_eq!(config.stages()[1].rc.tokens_type, RcTokensType::Transformer);
    let keys = vitae::validate::expected_state_dict(&config);
    assert!(
        keys.iter()
            .any(|k| k.key == "layers.1.RC.attn.attn.qkv.weight" && k.shape == vec![384, 192])
    );
    assert!(
        !keys
            .iter()
            .any(|k| k.key == "layers.1.RC.attn.attn.qkv.bias")
    );
}

/// The Dec-2021 and the current release build different 'transformer' reduction cells from
/// the same arguments; the checkpoint's keys decide (see vitae::config::ModelConfig).
#[test]
fn the_checkpoint_decides_between_the_releases_of_a_transformer_cell() {
    use vitae::config::{RcAttentionKind, Release};
    use vitae::reference::ReferenceModel;
    use vitae::validate::{Problem, check_checkpoint, random_checkpoint};
    // Stage 1's PRM has 2 · 8 = 16 = token_dims[1] channels, so the current release's PRM-only
    // cell exists too.
    let config = ModelConfig::from_kwargs_json(
        r#"{"img_size": 32, "stages": 2, "embed_dims": [8, 8], "token_dims": [16, 16],
            "downsample_ratios": [4, 2], "kernel_size": [7, 3], "dilations": [[1, 2], [1, 2]],
            "RC_tokens_type": ["performer", "transformer"], "RC_heads": [1, 2], "NC_depth": [0, 1],
            "NC_heads": [1, 2], "NC_group": [1, 4], "mlp_ratio": 2.0, "num_classes": 3}"#,
        "t.json",
    )
    .unwrap();
    assert_eq!(config.release(), Some(Release::Dec2021));
    assert!(config.release_reason().starts_with("assumed"));
    let dec2021 = random_checkpoint(&config, 5);
    let model = ReferenceModel::new(config.clone(), &dec2021).unwrap();
    assert_eq!(model.config().release(), Some(Release::Dec2021));
    assert_eq!(
        model.config().stages()[1].rc.attention(),
        Some(RcAttentionKind::Transformer)
    );

    // The current release's checkpoint has PRM keys only for that cell.
    let mut current = dec2021.clone();
    let mixer: Vec<String> = current
        .keys()
        .filter(|k| k.starts_with("layers.1.RC.PCM.") || k.starts_with("layers.1.RC.attn."))
        .map(str::to_string)
        .collect();
    assert_eq!(mixer.len(), 22);
    for key in &mixer {
        current.remove(key);
    }
    let resolved = config.for_checkpoint(&current);
    assert_eq!(resolved.release(), Some(Release::Current));
    assert_eq!(resolved.stages()[1].rc.attention(), None);
    check_checkpoint(&config, &current).unwrap();
    let model = ReferenceModel::new(config.clone(), &current).unwrap();
    assert_eq!(model.config().release(), Some(Release::Current));
    let logits = model.forward(&vec![0.3; 3 * 32 * 32]).unwrap();
    assert!(logits.iter().all(|v| v.is_finite()));

    // One key missing is a broken Dec-2021 checkpoint, not the other release.
    let mut broken = dec2021.clone();
    broken.remove("layers.1.RC.attn.attn.qkv.weight");
    let report = check_checkpoint(&config, &broken).unwrap_err();
    assert_eq!(
        report.problems,
        vec![Problem::Missing {
            key: "layers.1.RC.attn.attn.qkv.weight".into(),
            expected: vec![48, 16],
        }]
    );

    // Arguments only the current release has (a shallow normal cell) fix the release: the
    // Dec-2021 cell's keys are then unexpected.
    let shallow = ModelConfig::from_kwargs_json(
        r#"{"img_size": 32, "stages": 2, "embed_dims": [8, 8], "token_dims": [16, 16],
            "downsample_ratios": [4, 2], "kernel_size": [7, 3], "dilations": [[1, 2], [1, 2]],
            "RC_tokens_type": ["performer", "transformer"], "RC_heads": [1, 2], "NC_depth": [0, 1],
            "NC_heads": [1, 2], "NC_group": [1, 4], "mlp_ratio": 2.0, "num_classes": 3,
            "NC_tokens_type": "transformer_shallow"}"#,
        "s.json",
    )
    .unwrap();
    assert_eq!(shallow.release(), Some(Release::Current));
    let report = check_checkpoint(&shallow, &random_checkpoint(&config, 5)).unwrap_err();
    assert!(
        report.problems.iter().any(|p| matches!(p,
            Problem::Unexpected { key, .. } if key == "layers.1.RC.attn.attn.qkv.weight")),
        "{report}"
    );
}

/// `num_classes = 0`: the official head is nn.Identity, so the model outputs the pooled
/// features and the checkpoint has no `head.*`.
#[test]
fn a_model_without_classifier_outputs_its_features() {
    use vitae::reference::{Observer, ReferenceModel};
    use vitae::validate::{expected_state_dict, random_checkpoint};
    let config = ModelConfig::from_kwargs_json(
        r#"{"img_size": 32, "stages": 2, "embed_dims": [8, 8], "token_dims": [16, 16],
            "downsample_ratios": [4, 2], "kernel_size": [7, 3], "dilations": [[1, 2], [1, 2]],
            "RC_tokens_type": ["performer", "performer_less"], "NC_depth": [0, 1], "NC_heads": [1, 2],
            "NC_group": [1, 4], "mlp_ratio": 2.0, "num_classes": 0}"#,
        "features.json",
    )
    .unwrap();
    assert!(
        !expected_state_dict(&config)
            .iter()
            .any(|e| e.key.starts_with("head."))
    );
    let model = ReferenceModel::new(config.clone(), &random_checkpoint(&config, 2)).unwrap();
    struct Pooled(Vec<f32>);
    impl Observer for Pooled {
        fn observe(&mut self, name: &str, _: &[usize], data: &[f32]) {
            if name == "pooled" {
                self.0 = data.to_vec();
            }
        }
    }
    let mut pooled = Pooled(Vec::new());
    let out = model
        .forward_observed(&vec![0.1; 3 * 32 * 32], &mut pooled)
        .unwrap();
    assert_eq!(out.len(), 16);
    assert_eq!(out, pooled.0);
}
