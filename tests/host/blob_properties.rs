//! Properties of the blob format on real blobs made by the quantizer (tiny ViTAE models in int8,
//! fp16 and mixed precision, and the mcu_a fixture in int8) and the mcu_a fixture:
//!
//! * every single bit flip and every truncation of a valid blob is rejected with a typed error
//!   (the checksum, or the header check that comes before it): no `Model` exists for it, so no
//!   kernel can run on it;
//! * a crafted truncation that keeps the header consistent (length and checksum patched) is
//!   rejected by the structural checks;
//! * arbitrary edits with a patched checksum never panic in the reader or the executor;
//! * the quantizer's blobs re-serialize to the same bytes and run.
//!
//! The format's own properties (random graphs round-tripping through the writer, fuzz
//! regressions) are `vitae-edge`'s tests, in `format_properties.rs`.

#[path = "blob_common.rs"]
mod blob_common;
#[path = "common.rs"]
mod common;

use blob_common::{parse, parse_and_maybe_run, patch_crc, reserialize, sections};

use std::sync::OnceLock;

use proptest::prelude::*;
use vitae::quantize::{self, CalibMethod, NoProgress, Options, Precision};
use vitae::reference::ReferenceModel;
use vitae_edge::format::{AlignedBytes, FormatErrorKind, Model};
use vitae_edge::runtime::{self, Input, NoProfiler};

/// Tiny architectures (a few hundred parameters) covering performer, performer_less and
/// transformer reduction cells and grouped normal cells.
const TINY: &[(&str, &str)] = &[
    (
        "performer",
        r#"{"img_size": 8, "in_chans": 1, "num_classes": 3, "stages": 2,
            "embed_dims": [4, 8], "token_dims": [4, 8], "downsample_ratios": [4, 2],
            "kernel_size": [3, 3], "RC_heads": [1, 1], "NC_heads": [1, 2],
            "dilations": [[1, 2], [1]], "RC_tokens_type": ["performer", "performer_less"],
            "NC_tokens_type": ["transformer", "transformer"], "RC_group": [1, 1],
            "NC_group": [1, 2], "NC_depth": [0, 1], "mlp_ratio": 1.0}"#,
    ),
    (
        "transformer",
        r#"{"img_size": 8, "in_chans": 2, "num_classes": 2, "stages": 1,
            "embed_dims": [4], "token_dims": [6], "downsample_ratios": [4],
            "kernel_size": [3], "RC_heads": [1], "NC_heads": [2],
            "dilations": [[1]], "RC_tokens_type": ["transformer"],
            "NC_tokens_type": ["transformer"], "RC_group": [1],
            "NC_group": [2], "NC_depth": [1], "mlp_ratio": 1.0}"#,
    ),
];

struct Blob {
    name: String,
    bytes: Vec<u8>,
    /// A valid input image.
    image: Vec<f32>,
}

fn quantized(model: &ReferenceModel, name: &str, precision: Precision, calib: &[Vec<f32>]) -> Blob {
    let options = Options {
        precision,
        method: CalibMethod::Auto,
        flash_budget: None,
        max_logit_error: None,
        name: name.into(),
        input: Default::default(),
        arena_regions: Vec::new(),
        patch: vitae::quantize::patch::Patch::Off,
    };
    let q = quantize::quantize(model, calib, &options, &mut NoProgress).unwrap();
    Blob {
        name: format!("{name} {precision:?}"),
        bytes: q.lowered.blob,
        image: calib[0].clone(),
    }
}

/// The tiny models in every precision (made once per test binary).
fn tiny_blobs() -> &'static [Blob] {
    static BLOBS: OnceLock<Vec<Blob>> = OnceLock::new();
    BLOBS.get_or_init(|| {
        let mut out = Vec::new();
        for (name, json) in TINY {
            let config = vitae::config::ModelConfig::from_kwargs_json(json, name).unwrap();
            let checkpoint = vitae::validate::random_checkpoint(&config, 11);
            let model = ReferenceModel::new(config, &checkpoint).unwrap();
            let n = model.config().input_len();
            let calib: Vec<Vec<f32>> = (0..3)
                .map(|k| {
                    (0..n)
                        .map(|i| (((i * 7 + k * 13) % 17) as f32 - 8.0) / 4.0)
                        .collect()
                })
                .collect();
            for p in [
                Precision::Int8,
                Precision::Fp16,
                Precision::Mixed,
                Precision::Int16Residual,
            ] {
                out.push(quantized(&model, name, p, &calib));
            }
        }
        out
    })
}

/// mcu_a int8, calibrated on its own input.
fn mcu_a_blob() -> &'static Blob {
    static BLOB: OnceLock<Blob> = OnceLock::new();
    BLOB.get_or_init(|| {
        let dir = common::fixtures().join("mcu_a");
        let config =
            vitae::config::ModelConfig::from_kwargs_file(&dir.join("kwargs.json")).unwrap();
        let checkpoint =
            vitae::checkpoint::load_checkpoint(&dir.join("model.safetensors")).unwrap();
        let model = ReferenceModel::new(config, &checkpoint).unwrap();
        let input = vitae::npy::read_npy_f32(&dir.join("input.npy")).unwrap();
        quantized(&model, "mcu_a", Precision::Int8, &[input.data])
    })
}

/// The error a bit flip at `byte` must give: the header fields checked before the checksum
/// name themselves, everything else (the checksum field included) fails the checksum.
fn expected_flip_error(byte: usize, kind: &FormatErrorKind) -> bool {
    match byte {
        0..8 => *kind == FormatErrorKind::BadMagic,
        8..10 => matches!(kind, FormatErrorKind::UnsupportedVersion { .. }),
        10..12 => *kind == FormatErrorKind::BadHeaderLength,
        16..20 => matches!(kind, FormatErrorKind::LengthMismatch { .. }),
        // The arena splits: a flipped split that breaks their rules is refused before the
        // checksum is read; one that keeps them, by the checksum.
        32..60 => matches!(
            kind,
            FormatErrorKind::BadArenaSplit { .. } | FormatErrorKind::ChecksumMismatch { .. }
        ),
        _ => matches!(kind, FormatErrorKind::ChecksumMismatch { .. }),
    }
}

#[test]
fn every_single_bit_flip_of_a_tiny_blob_is_rejected() {
    let mut tried = 0usize;
    for blob in tiny_blobs() {
        parse(&blob.bytes).unwrap_or_else(|e| panic!("{}: {e}", blob.name));
        let mut bytes = blob.bytes.clone();
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                bytes[byte] ^= 1 << bit;
                let err = parse(&bytes).expect_err("a flipped blob parsed");
                assert!(
                    expected_flip_error(byte, &err.kind),
                    "{}: bit {bit} of byte {byte}: {err}",
                    blob.name
                );
                bytes[byte] ^= 1 << bit;
                tried += 1;
            }
        }
        assert_eq!(bytes, blob.bytes);
    }
    println!("{tried} single-bit flips rejected");
}

#[test]
fn every_truncation_of_a_tiny_blob_is_rejected() {
    for blob in tiny_blobs() {
        for cut in 0..blob.bytes.len() {
            let err = parse(&blob.bytes[..cut]).expect_err("a truncated blob parsed");
            let ok = if cut < 64 {
                err.kind == FormatErrorKind::TooShort { len: cut }
            } else {
                err.kind
                    == FormatErrorKind::LengthMismatch {
                        declared: blob.bytes.len(),
                        actual: cut,
                    }
            };
            assert!(ok, "{}: cut at {cut}: {err}", blob.name);
        }
    }
}

#[test]
#[cfg_attr(
    not(vitae_fixtures),
    ignore = "needs ../shared/fixtures (beside the checkout)"
)]
fn real_blobs_reserialize_to_the_same_bytes_and_run() {
    for blob in tiny_blobs().iter().chain([mcu_a_blob()]) {
        let aligned = AlignedBytes::new(&blob.bytes);
        let m = Model::parse(aligned.as_bytes()).unwrap();
        assert!(
            reserialize(&m) == blob.bytes,
            "{}: re-serialized blob differs",
            blob.name
        );
        let mut arena = AlignedBytes::new(&vec![0u8; m.arena_len()]);
        let out = runtime::run(
            &m,
            arena.as_bytes_mut(),
            Input::F32Nchw(&blob.image),
            &mut NoProfiler,
        )
        .unwrap();
        assert_eq!(out.len(), m.meta().num_classes as usize);
    }
}

#[test]
#[cfg_attr(
    not(vitae_fixtures),
    ignore = "needs ../shared/fixtures (beside the checkout)"
)]
fn mcu_a_blob_flips_and_truncations_are_rejected() {
    // 300 KB: a stride through every bit position of each byte, plus every header byte.
    let blob = mcu_a_blob();
    let mut bytes = blob.bytes.clone();
    let positions = (0..256).chain((256..bytes.len()).step_by(97));
    for byte in positions {
        let bit = byte % 8;
        bytes[byte] ^= 1 << bit;
        let err = parse(&bytes).expect_err("flipped blob parsed");
        assert!(expected_flip_error(byte, &err.kind), "byte {byte}: {err}");
        bytes[byte] ^= 1 << bit;
    }
    for cut in (0..bytes.len()).step_by(1013) {
        assert!(parse(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut engine_input = bytes.clone();
    engine_input[bytes.len() / 2] ^= 4;
    assert!(vitae::engine::Engine::new(&engine_input).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// A truncated blob whose header length and checksum were fixed up to match: only the
    /// structural checks stand between it and the kernels, and they must refuse it whenever
    /// the cut removes section bytes.
    #[test]
    fn crafted_truncation_is_a_structural_error(which in 0usize..6, frac in 0.0f64..1.0) {
        let blob = &tiny_blobs()[which];
        let end_of_sections = sections(&blob.bytes)
            .iter()
            .map(|&(at, len, _)| at + len)
            .max()
            .unwrap();
        let cut = 64 + ((end_of_sections - 64) as f64 * frac) as usize;
        let mut bytes = blob.bytes[..cut].to_vec();
        bytes[16..20].copy_from_slice(&(cut as u32).to_le_bytes());
        patch_crc(&mut bytes);
        let err = parse(&bytes).expect_err("crafted truncation parsed");
        prop_assert!(
            !matches!(
                err.kind,
                FormatErrorKind::ChecksumMismatch { .. } | FormatErrorKind::LengthMismatch { .. }
            ),
            "{}: cut {cut}: {err}", blob.name
        );
    }

    /// Up to 8 bytes overwritten anywhere past the header, checksum patched: the reader and,
    /// when it accepts, the executor return (an error or logits) without panicking.
    #[test]
    fn crafted_edits_never_panic(
        which in 0usize..6,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let blob = &tiny_blobs()[which];
        let mut bytes = blob.bytes.clone();
        for (at, value) in &edits {
            let i = 24 + at.index(bytes.len() - 24);
            bytes[i] = *value;
        }
        patch_crc(&mut bytes);
        let _ = parse_and_maybe_run(&bytes, &blob.image);
    }

    /// Any single bit flipped anywhere in mcu_a's blob is refused (checksum or header check).
    #[test]
    #[cfg_attr(not(vitae_fixtures), ignore = "needs ../shared/fixtures (beside the checkout)")]
    fn mcu_a_single_bit_flips_are_rejected(at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let blob = mcu_a_blob();
        let mut bytes = blob.bytes.clone();
        let byte = at.index(bytes.len());
        bytes[byte] ^= 1 << bit;
        let err = parse(&bytes).expect_err("flipped blob parsed");
        prop_assert!(expected_flip_error(byte, &err.kind), "byte {byte}: {err}");
    }
}

/// The host engine's logits do not depend on its thread count: every tiny blob (int8, fp16,
/// mixed) on a batch of seven images with 1, 2, 3 and 8 worker threads, and each image alone,
/// give the same bits.
/// An int16 tensor must be symmetric: the reader refuses one whose zero point is not 0 (with a
/// valid checksum, so the tensor check itself speaks), naming the tensor.
#[test]
fn an_int16_tensor_with_a_zero_point_is_refused() {
    let blob = tiny_blobs()
        .iter()
        .find(|b| b.name.ends_with("Int16Residual"))
        .expect("a tiny int16-residual blob");
    let aligned = AlignedBytes::new(&blob.bytes);
    let m = Model::parse(aligned.as_bytes()).unwrap();
    let t = (0..m.tensor_count() as u16)
        .find(|&t| m.tensor(t).dtype == vitae_edge::format::DType::I16)
        .expect("an int16 tensor");
    let desc = std::mem::size_of::<vitae_edge::format::TensorDesc>();
    let zero_point_at = sections(&blob.bytes)[1].0 + t as usize * desc + 24;
    let mut bytes = blob.bytes.clone();
    bytes[zero_point_at..zero_point_at + 4].copy_from_slice(&3i32.to_le_bytes());
    patch_crc(&mut bytes);
    let e = Model::parse(AlignedBytes::new(&bytes).as_bytes()).unwrap_err();
    assert!(
        matches!(e.kind, FormatErrorKind::BadTensor { index, what } if index == t && what.contains("int16")),
        "{e}"
    );
}

#[test]
fn engine_logits_do_not_depend_on_the_thread_count() {
    for blob in tiny_blobs() {
        let batch: Vec<f32> = (0..7u32)
            .flat_map(|k| {
                blob.image.iter().enumerate().map(move |(i, &v)| {
                    v * (1.0 + k as f32 / 4.0) - ((i as u32 * 7 + k) % 5) as f32 / 8.0
                })
            })
            .collect();
        let mut engine = vitae::engine::Engine::new(&blob.bytes).unwrap();
        engine.set_threads(1);
        let want: Vec<u32> = engine
            .run_batch(&batch)
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        for threads in [2, 3, 8] {
            engine.set_threads(threads);
            let got: Vec<u32> = engine
                .run_batch(&batch)
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect();
            assert_eq!(got, want, "{} with {threads} threads", blob.name);
        }
        let per = blob.image.len();
        let classes = want.len() / 7;
        for (k, image) in batch.chunks_exact(per).enumerate() {
            let got: Vec<u32> = engine
                .run_batch(image)
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect();
            assert_eq!(
                got,
                want[k * classes..][..classes],
                "{} image {k} alone",
                blob.name
            );
        }
    }
}
