//! A tiny ViTAE with Dec-2021 'transformer' reduction cells (2 and 3 heads), grouped RC PCMs,
//! a 1-channel input, `qkv_bias=False` and an explicit `qk_scale` — paths the shared fixtures
//! do not reach — against PyTorch (tests/host/data/make_rc_transformer.py, our PyTorch model
//! host-tools/train/vitae_model.py). The checkpoint is a real `torch.save` of a training
//! checkpoint (`model` entry, `module.` prefix, an argparse.Namespace, a transposed weight, two
//! biases sharing one storage at offsets).

#[path = "common.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use vitae::checkpoint::load_checkpoint;
use vitae::config::{ModelConfig, RcTokensType};
use vitae::npy::read_npy_f32;
use vitae::reference::{Observer, ReferenceModel};

use common::relative_error;

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/host/data/rc_transformer")
}

struct Recorder(BTreeMap<String, Vec<f32>>);

impl Observer for Recorder {
    fn observe(&mut self, name: &str, _shape: &[usize], data: &[f32]) {
        self.0.insert(name.to_string(), data.to_vec());
    }
}

#[test]
fn transformer_reduction_cells_match_pytorch() {
    let dir = data();
    let config = ModelConfig::from_kwargs_file(&dir.join("kwargs.json")).unwrap();
    assert!(
        config
            .stages()
            .iter()
            .all(|s| s.rc.tokens_type == RcTokensType::Transformer)
    );
    let checkpoint = load_checkpoint(&dir.join("model.pth")).unwrap();
    assert_eq!(checkpoint.origin.entry.as_deref(), Some("model"));
    assert_eq!(
        checkpoint.origin.stripped_prefix.as_deref(),
        Some("module.")
    );
    let model = ReferenceModel::new(config, &checkpoint).unwrap();
    let input = read_npy_f32(&dir.join("input.npy")).unwrap();
    let mut recorder = Recorder(BTreeMap::new());
    let logits = model.forward_observed(&input.data, &mut recorder).unwrap();
    let expected = read_npy_f32(&dir.join("logits.npy")).unwrap();
    let error = relative_error(&logits, &expected.data);
    println!("logits rel err {error:.3e}");
    assert!(error <= 1e-4, "logits relative error {error:e}");
    let mut compared = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if !name.starts_with('s') && name != "pooled" {
            continue;
        }
        let reference = read_npy_f32(&path).unwrap();
        let ours = recorder
            .0
            .get(&name)
            .unwrap_or_else(|| panic!("{name} not observed"));
        let error = relative_error(ours, &reference.data);
        println!("{name:12} rel err {error:.3e}");
        assert!(error <= 1e-4, "{name}: relative error {error:e}");
        compared += 1;
    }
    assert_eq!(compared, 17);
}
