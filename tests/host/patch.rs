//! Patch-based first cells (`vitae quantize --patch`): strips of the first Reduction Cell give
//! the layer-by-layer blob's logits byte for byte, on the shared fixtures (mcu_a, ViTAE-T) and
//! the committed demo model, at every strip height; the arena shrinks; the reader refuses strips
//! that break the format's rules; a cell the strips cannot cover is refused with a reason.

#[path = "blob_common.rs"]
mod blob_common;
#[path = "common.rs"]
mod common;

use std::path::{Path, PathBuf};

use blob_common::patch_crc;
use common::fixtures;
use vitae::checkpoint::load_checkpoint;
use vitae::config::ModelConfig;
use vitae::engine::Engine;
use vitae::npy::read_npy_f32;
use vitae::quantize::patch::Patch;
use vitae::quantize::plan::Region;
use vitae::quantize::{self, CalibMethod, ImageInput, NoProgress, Options, Precision, Quantized};
use vitae::reference::ReferenceModel;
use vitae_edge::format::{AlignedBytes, FormatErrorKind, Model};

fn model_in(dir: &Path) -> ReferenceModel {
    let config = ModelConfig::from_kwargs_file(&dir.join("kwargs.json")).unwrap();
    let checkpoint = load_checkpoint(&dir.join("model.pth")).unwrap();
    ReferenceModel::new(config, &checkpoint).unwrap()
}

fn quantized(
    model: &ReferenceModel,
    calib: &[Vec<f32>],
    input: ImageInput,
    patch: Patch,
) -> Quantized {
    let options = options(input, Vec::new(), patch);
    quantize::quantize(model, calib, &options, &mut NoProgress).unwrap()
}

/// int8 quantization options with this input, arena regions and patch plan.
fn options(input: ImageInput, arena_regions: Vec<Region>, patch: Patch) -> Options {
    Options {
        precision: Precision::Int8,
        method: CalibMethod::Auto,
        flash_budget: None,
        max_logit_error: None,
        name: "patch".into(),
        input,
        arena_regions,
        patch,
    }
}

/// The logits' bits for `images` (f32 NCHW, or u8 HWC pixels).
fn logits(blob: &[u8], images: &Images) -> Vec<u32> {
    let mut engine = Engine::new(blob).unwrap();
    let out = match images {
        Images::F32(x) => engine.run_batch(x),
        Images::U8(x) => engine.run_batch_u8(x),
    };
    out.unwrap().iter().map(|v| v.to_bits()).collect()
}

enum Images {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

/// Quantizes layer by layer and in strips of each of `rows`, and checks every patched blob's
/// logits against the layer-by-layer blob's; returns the arenas (layer by layer first).
fn check(
    model: &ReferenceModel,
    calib: &[Vec<f32>],
    input: ImageInput,
    images: &Images,
    rows: &[usize],
) -> Vec<usize> {
    let layered = quantized(model, calib, input.clone(), Patch::Off);
    assert!(layered.lowered.patched.is_none());
    let want = logits(&layered.lowered.blob, images);
    let mut arenas = vec![layered.lowered.arena_len];
    for &r in rows {
        let q = quantized(model, calib, input.clone(), Patch::rows(r));
        let patched = q.lowered.patched.as_ref().expect("patched");
        assert_eq!(patched.plan.rows, r);
        let m = Model::parse(AlignedBytes::new(&q.lowered.blob).as_bytes())
            .map(|m| m.header().version)
            .unwrap();
        assert_eq!(m, 2, "a patched blob is format version 2");
        assert_eq!(
            logits(&q.lowered.blob, images),
            want,
            "strips of {r} rows ({} strips)",
            patched.strips
        );
        arenas.push(q.lowered.arena_len);
    }
    arenas
}

fn fixture_input(folder: &str) -> Vec<f32> {
    read_npy_f32(&fixtures().join(folder).join("input.npy"))
        .unwrap()
        .data
}

/// A second image: the first mirrored and shifted, so the strips meet other values.
fn second_image(x: &[f32]) -> Vec<f32> {
    x.iter().rev().map(|v| v * 0.75 + 0.1).collect()
}

#[test]
fn mcu_a_strips_give_the_layer_by_layer_logits_in_half_the_arena() {
    let model = model_in(&fixtures().join("mcu_a"));
    let x = fixture_input("mcu_a");
    let images = [x.clone(), second_image(&x)].concat();
    let arenas = check(
        &model,
        &[x],
        ImageInput::F32Nchw,
        &Images::F32(images),
        &[1, 2, 5, 6, 23],
    );
    println!("mcu_a arenas: layer by layer, then strips of 1, 2, 5, 6, 23 rows: {arenas:?}");
    // The goal: at most half the layer-by-layer arena (6-row strips and shorter).
    assert!(
        arenas[1..5].iter().all(|&a| 2 * a <= arenas[0]),
        "{arenas:?}"
    );
}

/// The int16 residual stream strips as int8 does: the first cell's int16 adds, its int16-input
/// LayerNorm and the requantization that ends it run strip by strip, same logits.
#[test]
fn int16_residual_strips_give_the_layer_by_layer_logits() {
    let model = model_in(&fixtures().join("mcu_a"));
    let x = fixture_input("mcu_a");
    let images = Images::F32([x.clone(), second_image(&x)].concat());
    let blob = |patch: Patch| {
        let options = Options {
            precision: Precision::Int16Residual,
            ..options(ImageInput::F32Nchw, Vec::new(), patch)
        };
        quantize::quantize(&model, std::slice::from_ref(&x), &options, &mut NoProgress)
            .unwrap()
            .lowered
    };
    let layered = blob(Patch::Off);
    let want = logits(&layered.blob, &images);
    for rows in [1, 4, 23] {
        let q = blob(Patch::rows(rows));
        let patched = q.patched.as_ref().expect("patched");
        let aligned = AlignedBytes::new(&q.blob);
        let m = Model::parse(aligned.as_bytes()).unwrap();
        let kinds: Vec<_> = (0..m.op_count()).map(|i| m.op(i).unwrap().kind).collect();
        let strips_of = |kind| kinds.iter().filter(|&&k| k == kind).count();
        assert!(
            strips_of(vitae_edge::ops::OpKind::AddS16) > patched.strips,
            "the first cell's int16 adds run per strip"
        );
        assert_eq!(logits(&q.blob, &images), want, "strips of {rows} rows");
    }
}

/// MACs a blob's ops execute.
fn executed_macs(blob: &[u8]) -> u64 {
    let aligned = AlignedBytes::new(blob);
    let m = Model::parse(aligned.as_bytes()).unwrap();
    (0..m.op_count())
        .map(|i| m.op(i).unwrap().desc.macs as u64)
        .sum()
}

#[test]
fn keeping_q_and_v_from_pass_1_trades_ram_for_the_recomputed_prm() {
    let model = model_in(&fixtures().join("mcu_a"));
    let x = fixture_input("mcu_a");
    let images = Images::F32([x.clone(), second_image(&x)].concat());
    let calib = std::slice::from_ref(&x);
    let layered = quantized(&model, calib, ImageInput::F32Nchw, Patch::Off);
    let recompute = quantized(&model, calib, ImageInput::F32Nchw, Patch::rows(4));
    let keep = quantized(
        &model,
        calib,
        ImageInput::F32Nchw,
        Patch::Strips(vitae::quantize::patch::Strips {
            rows: 4,
            keep_qv: true,
            keep_halos: false,
        }),
    );
    assert!(keep.lowered.patched.as_ref().unwrap().plan.keep_qv);
    assert!(!recompute.lowered.patched.as_ref().unwrap().plan.keep_qv);
    let want = logits(&layered.lowered.blob, &images);
    assert_eq!(logits(&keep.lowered.blob, &images), want);
    let model_macs = executed_macs(&layered.lowered.blob);
    let (r, k) = (
        executed_macs(&recompute.lowered.blob),
        executed_macs(&keep.lowered.blob),
    );
    println!(
        "mcu_a 4-row strips: recompute {r} MACs, arena {}; keep {k} MACs, arena {}; layer by layer {model_macs}, {}",
        recompute.lowered.arena_len, keep.lowered.arena_len, layered.lowered.arena_len
    );
    assert!(model_macs < k && k < r);
    assert!(recompute.lowered.arena_len < keep.lowered.arena_len);
    // Halo rows copied from the previous strip's windows instead of recomputed: the same logits;
    // with q and v kept too, no MAC is computed twice.
    for (keep_qv, rows) in [(false, 4), (false, 1), (true, 1)] {
        let plan = vitae::quantize::patch::Strips {
            rows,
            keep_qv,
            keep_halos: true,
        };
        let q = quantized(&model, calib, ImageInput::F32Nchw, Patch::Strips(plan));
        assert!(q.lowered.patched.as_ref().unwrap().plan.keep_halos);
        assert_eq!(logits(&q.lowered.blob, &images), want, "{plan:?}");
        let macs = executed_macs(&q.lowered.blob);
        println!("{plan:?}: {macs} MACs, arena {}", q.lowered.arena_len);
        if keep_qv {
            assert_eq!(macs, model_macs, "{plan:?}");
        } else if rows == 4 {
            assert!(macs < r, "{plan:?}");
        }
    }
}

#[test]
fn vitae_t_strips_give_the_layer_by_layer_logits() {
    let model = model_in(&fixtures().join("vitae_t"));
    let x = fixture_input("vitae_t");
    // u8 pixels, as the H7 profile runs it; a gradient and a noise-like image.
    let n = x.len();
    let pixels: Vec<u8> = (0..2 * n)
        .map(|i| {
            if i < n {
                (i % 251) as u8
            } else {
                ((i * 7919) % 256) as u8
            }
        })
        .collect();
    let input = ImageInput::U8Hwc {
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
    };
    let arenas = check(&model, &[x], input, &Images::U8(pixels), &[4, 11]);
    println!("vitae_t arenas: layer by layer, then strips of 4 and 11 rows: {arenas:?}");
    assert!(arenas[1] * 4 < arenas[0], "{arenas:?}");
}

/// The other cell types the tool supports: a `pooling` cell before softmax token attention
/// (mcu_c: the image and the max pooling run in strips, the attention whole), an `embedding`
/// cell (mcu_d: the image and the patch embedding), and mcu_g (a performer cell, as mcu_a).
#[test]
fn pooling_and_embedding_cells_strip_identically() {
    for (folder, run_end) in [("mcu_c", 1), ("mcu_d", 1), ("mcu_g", 16)] {
        let model = model_in(&fixtures().join(folder));
        let x = fixture_input(folder);
        let images = Images::F32([x.clone(), second_image(&x)].concat());
        check(
            &model,
            std::slice::from_ref(&x),
            ImageInput::F32Nchw,
            &images,
            &[1, 3],
        );
        let q = quantized(&model, &[x], ImageInput::F32Nchw, Patch::rows(3));
        let p = q.lowered.patched.expect("patched");
        assert_eq!(p.ops, 0..run_end + 1, "{folder}: {p:?}");
    }
}

fn digits_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../train/digits")
}

#[test]
fn the_demo_model_strips_give_the_layer_by_layer_logits() {
    let model = model_in(&digits_dir());
    let n = model.config().input_len();
    let images: Vec<Vec<f32>> = (0..3)
        .map(|k| {
            (0..n)
                .map(|i| (((i * 13 + k * 7) % 29) as f32 - 14.0) / 7.0)
                .collect()
        })
        .collect();
    check(
        &model,
        &images,
        ImageInput::F32Nchw,
        &Images::F32(images.concat()),
        &[1, 3, 7],
    );
}

#[test]
fn auto_and_smallest_choose_strips_only_when_asked_or_needed() {
    let model = model_in(&fixtures().join("mcu_a"));
    let x = fixture_input("mcu_a");
    // No regions to fit: auto plans layer by layer.
    let calib = std::slice::from_ref(&x);
    let auto = quantized(&model, calib, ImageInput::F32Nchw, Patch::Auto);
    assert!(auto.lowered.patched.is_none());
    let smallest = quantized(&model, calib, ImageInput::F32Nchw, Patch::Smallest);
    let p = smallest.lowered.patched.as_ref().expect("smallest patches");
    for rows in [2, 4, 8] {
        let q = quantized(&model, calib, ImageInput::F32Nchw, Patch::rows(rows));
        assert!(
            smallest.lowered.arena_len <= q.lowered.arena_len,
            "{:?}",
            p.plan
        );
    }
    // A region too small for the layer-by-layer arena: auto takes the smallest arena that fits
    // within +15 % MACs.
    let room = auto.lowered.arena_len * 3 / 4;
    let sram = Region {
        name: "SRAM".into(),
        room,
    };
    let options = options(ImageInput::F32Nchw, vec![sram], Patch::Auto);
    let fit = quantize::quantize(&model, &[x], &options, &mut NoProgress).unwrap();
    let p = fit
        .lowered
        .patched
        .as_ref()
        .expect("auto patches when it must");
    assert!(fit.lowered.arena_len <= room, "{:?}", p.plan);
    // Within the +15 % of MACs auto allows itself (mcu_a has such plans: kept q, v or halos).
    let model_macs = executed_macs(&auto.lowered.blob) as f64;
    let macs = executed_macs(&fit.lowered.blob) as f64;
    assert!(macs <= 1.15 * model_macs, "{:?}: {macs} MACs", p.plan);
}

#[test]
fn a_cell_without_a_run_to_strip_is_refused_with_the_reason() {
    // Dec-2021 'transformer' reduction cells: softmax attention right after the PRM, and the
    // cell keeps q, k and v of every token, so no run of row-local ops ends in one map.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/host/data/rc_transformer");
    let config = ModelConfig::from_kwargs_file(&dir.join("kwargs.json")).unwrap();
    let checkpoint = load_checkpoint(&dir.join("model.pth")).unwrap();
    let model = ReferenceModel::new(config, &checkpoint).unwrap();
    let x: Vec<f32> = (0..model.config().input_len())
        .map(|i| (i % 9) as f32 / 4.0 - 1.0)
        .collect();
    let options = options(ImageInput::F32Nchw, Vec::new(), Patch::rows(2));
    let Err(err) = quantize::quantize(&model, &[x], &options, &mut NoProgress) else {
        panic!("strips of a transformer cell were accepted");
    };
    let err = err.to_string();
    assert!(
        err.starts_with(
            "cannot run the first cells in strips of 2 rows: the model has no int8 run"
        ),
        "{err}"
    );
}

/// The reader's rules for strips: not in a version-1 blob, and a map read after its strips must
/// have been written whole by them.
#[test]
fn the_reader_refuses_strips_that_break_the_rules() {
    let model = model_in(&fixtures().join("mcu_a"));
    let x = fixture_input("mcu_a");
    let blob = quantized(&model, &[x], ImageInput::F32Nchw, Patch::rows(4))
        .lowered
        .blob;
    let parsed = |bytes: &[u8]| Model::parse(AlignedBytes::new(bytes).as_bytes()).map(|_| ());
    parsed(&blob).unwrap();

    // Version 1 with the same contents.
    let mut v1 = blob.clone();
    v1[8] = 1;
    patch_crc(&mut v1);
    let e = parsed(&v1).unwrap_err();
    assert!(
        matches!(e.kind, FormatErrorKind::BadTensor { what, .. } if what.contains("version 2")),
        "{e}"
    );

    // One strip of the first cell's output written elsewhere: the map is not written whole.
    let aligned = AlignedBytes::new(&blob);
    let m = Model::parse(aligned.as_bytes()).unwrap();
    let tensors_at = blob_common::sections(&blob)[1].0;
    let strip = (0..m.tensor_count() as u16)
        .find(|&t| {
            let v = m.tensor(t);
            v.desc.row0 == 4 && v.name.starts_with("layers.0.RC.add_mlp[")
        })
        .expect("the second strip of the first cell's output");
    let mut gap = blob.clone();
    let at = tensors_at + strip as usize * 36 + 12; // arena_offset
    let offset = u32::from_le_bytes(gap[at..at + 4].try_into().unwrap());
    gap[at..at + 4].copy_from_slice(&(offset + 16).to_le_bytes());
    patch_crc(&mut gap);
    let e = parsed(&gap).unwrap_err();
    assert!(
        matches!(
            e.kind,
            FormatErrorKind::BadOp {
                what: "reads a tensor no earlier op writes",
                ..
            }
        ),
        "{e}"
    );
}
