//! Properties of the blob format on real blobs made by the quantizer (tiny ViTAE models in int8,
//! fp16 and mixed precision, and the mcu_a fixture in int8) and on randomly generated graphs:
//!
//! * every single bit flip and every truncation of a valid blob is rejected with a typed error
//!   (the checksum, or the header check that comes before it): no `Model` exists for it, so no
//!   kernel can run on it;
//! * a crafted truncation that keeps the header consistent (length and checksum patched) is
//!   rejected by the structural checks;
//! * arbitrary edits with a patched checksum never panic in the reader or the executor;
//! * valid blobs round-trip exactly: write → parse gives back every record, and re-serializing
//!   the parsed model gives the same bytes.

#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use vitae::quantize::{self, CalibMethod, NoProgress, Options, Precision};
use vitae::reference::ReferenceModel;
use vitae_edge::format::{
    AlignedBytes, BlobWriter, CRC_FIELD_OFFSET, DType, DataRef, FormatError, FormatErrorKind,
    Header, Model, ModelMeta, OpKind, SectionEntry, SectionKind, StrRef, TensorDesc, crc32,
};
use vitae_edge::ops::{
    add::AddParams, image::QuantizeParams, layernorm::LayerNormParams, mean_pool::MeanPoolParams,
};
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
        name: name.into(),
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
            for p in [Precision::Int8, Precision::Fp16, Precision::Mixed] {
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

fn parse(bytes: &[u8]) -> Result<(), FormatError> {
    let aligned = AlignedBytes::new(bytes);
    Model::parse(aligned.as_bytes()).map(|_| ())
}

/// Recomputes and stores the checksum (what a crafted blob would do).
fn patch_crc(bytes: &mut [u8]) {
    bytes[CRC_FIELD_OFFSET..CRC_FIELD_OFFSET + 4].fill(0);
    let crc = crc32(bytes);
    bytes[CRC_FIELD_OFFSET..CRC_FIELD_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
}

/// The error a bit flip at `byte` must give: the header fields checked before the checksum
/// name themselves, everything else (the checksum field included) fails the checksum.
fn expected_flip_error(byte: usize, kind: &FormatErrorKind) -> bool {
    match byte {
        0..8 => *kind == FormatErrorKind::BadMagic,
        8..10 => matches!(kind, FormatErrorKind::UnsupportedVersion { .. }),
        10..12 => *kind == FormatErrorKind::BadHeaderLength,
        16..20 => matches!(kind, FormatErrorKind::LengthMismatch { .. }),
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

/// Offset and length of each section, by kind, read straight from the bytes.
fn sections(bytes: &[u8]) -> [(usize, usize, usize); 6] {
    let header: Header = bytemuck::pod_read_unaligned(&bytes[..64]);
    let mut out = [(0, 0, 0); 6];
    for i in 0..header.section_count as usize {
        let at = 64 + 16 * i;
        let e: SectionEntry = bytemuck::pod_read_unaligned(&bytes[at..at + 16]);
        out[e.kind as usize - 1] = (e.offset as usize, e.len as usize, e.count as usize);
    }
    out
}

fn section_bytes(bytes: &[u8], kind: SectionKind) -> &[u8] {
    let (at, len, _) = sections(bytes)[kind as usize - 1];
    &bytes[at..at + len]
}

/// Rebuilds a blob from a parsed model through the writer's own API, replaying names in the
/// order they sit in STRINGS: the result must be the same bytes.
fn reserialize(m: &Model) -> Vec<u8> {
    let bytes = m.bytes();
    let strings = section_bytes(bytes, SectionKind::Strings);
    let data = section_bytes(bytes, SectionKind::Data);
    let params = section_bytes(bytes, SectionKind::Params);
    let mut w = BlobWriter::new();
    w.meta = Some(*m.meta());
    w.arena_len = m.header().arena_len;
    w.arena_lower_bound = m.header().arena_lower_bound;
    if !data.is_empty() {
        let r = w.data(data);
        assert_eq!(r.offset, 0);
    }
    let text = |r: StrRef| {
        std::str::from_utf8(&strings[r.offset as usize..(r.offset + r.len) as usize]).unwrap()
    };
    // Names that are not op names (the model's and the tensors'), by offset.
    let mut names: Vec<StrRef> = std::iter::once(m.meta().name)
        .chain((0..m.tensor_count()).map(|t| m.tensor(t as u16).desc.name))
        .collect();
    names.sort_by_key(|r| (r.offset, r.len));
    let mut names = names.into_iter().peekable();
    let mut replay_names_before = |w: &mut BlobWriter, end: u32| {
        while let Some(r) = names.next_if(|r| r.offset < end || (r.offset == end && r.len == 0)) {
            assert_eq!(w.string(text(r)), r, "names are not stored in order");
        }
    };
    for i in 0..m.op_count() {
        let op = m.op(i);
        let d = *op.desc;
        replay_names_before(&mut w, d.name.offset);
        let record = &params[d.params_offset as usize..(d.params_offset + d.params_len) as usize];
        let inputs: Vec<u16> = op.inputs().collect();
        let index = w
            .op_record(
                op.kind,
                &inputs,
                d.output,
                record,
                d.macs as u64,
                text(d.name),
            )
            .expect("a parsed blob's records are well formed");
        let written = &mut w.ops[index];
        written.scratch_offset = d.scratch_offset;
        written.scratch_len = d.scratch_len;
        written.flags = d.flags;
        assert_eq!(
            bytemuck::bytes_of(written),
            bytemuck::bytes_of(&d),
            "op {i} differs after replay"
        );
    }
    replay_names_before(&mut w, u32::MAX);
    for t in 0..m.tensor_count() {
        w.tensor(*m.tensor(t as u16).desc);
    }
    w.finish()
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

/// Runs a blob if it parses; nothing may panic.
fn parse_and_maybe_run(bytes: &[u8], image: &[f32]) -> Result<(), FormatError> {
    let aligned = AlignedBytes::new(bytes);
    let m = Model::parse(aligned.as_bytes())?;
    for i in 0..m.op_count() {
        m.decode(i).expect("a parsed blob decodes");
    }
    if m.arena_len() <= 1 << 22 {
        let mut arena = AlignedBytes::new(&vec![0u8; m.arena_len()]);
        let pixels = m.meta().input_channels as usize
            * m.meta().input_height as usize
            * m.meta().input_width as usize;
        let fallback;
        let image = if image.len() == pixels {
            image
        } else {
            fallback = vec![0.5f32; pixels];
            &fallback
        };
        let _ = runtime::run(
            &m,
            arena.as_bytes_mut(),
            Input::F32Nchw(image),
            &mut NoProfiler,
        );
    }
    Ok(())
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

    /// Random small graphs (quantize → layernorm → add → mean-pool, random shapes, names,
    /// quantization and tables) written, parsed and compared record by record.
    #[test]
    fn random_graphs_round_trip_exactly(g in graph()) {
        let (bytes, written_ops) = g.write();
        let aligned = AlignedBytes::new(&bytes);
        let m = Model::parse(aligned.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut want_meta = g.meta();
        want_meta.name = m.meta().name;
        prop_assert_eq!(bytemuck::bytes_of(m.meta()), bytemuck::bytes_of(&want_meta));
        prop_assert_eq!(m.header().arena_len, g.arena_len);
        prop_assert_eq!(m.header().arena_lower_bound, g.lower_bound);
        prop_assert_eq!(m.name(), g.model_name.as_str());
        prop_assert_eq!(m.tensor_count(), g.tensors.len());
        for (i, (desc, name)) in g.tensors.iter().enumerate() {
            let t = m.tensor(i as u16);
            prop_assert_eq!(t.name, name.as_str());
            let mut want = *desc;
            want.name = t.desc.name;
            prop_assert_eq!(bytemuck::bytes_of(t.desc), bytemuck::bytes_of(&want));
        }
        prop_assert_eq!(m.op_count(), g.ops.len());
        let params = section_bytes(&bytes, SectionKind::Params);
        let data = section_bytes(&bytes, SectionKind::Data);
        for (i, op) in written_ops.iter().enumerate() {
            let v = m.op(i);
            prop_assert_eq!(v.kind, op.kind);
            prop_assert_eq!(v.name, op.name.as_str());
            prop_assert_eq!(v.inputs().collect::<Vec<_>>(), op.inputs.clone());
            prop_assert_eq!(v.desc.output, op.output);
            prop_assert_eq!(v.desc.macs as u64, op.macs);
            let rec = &params[v.desc.params_offset as usize..][..v.desc.params_len as usize];
            prop_assert_eq!(rec, op.params.as_slice());
            // The tables the record points at hold what was written.
            if op.kind == OpKind::LayerNormS8 {
                let p: LayerNormParams = bytemuck::pod_read_unaligned(rec);
                let at = |r: DataRef| &data[r.offset as usize..][..r.len as usize];
                prop_assert_eq!(at(p.gain), bytemuck::cast_slice::<f32, u8>(&g.gain));
                prop_assert_eq!(at(p.offset), bytemuck::cast_slice::<f32, u8>(&g.offset));
            }
        }
        prop_assert!(reserialize(&m) == bytes, "re-serialized blob differs");
        // And it is a model that runs.
        let mut arena = AlignedBytes::new(&vec![0u8; m.arena_len()]);
        let image = vec![0.25f32; g.c * g.h * g.w];
        let out = runtime::run(&m, arena.as_bytes_mut(), Input::F32Nchw(&image), &mut NoProfiler)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(out.len(), g.c);
    }
}

/// One op of a generated graph.
#[derive(Clone, Debug)]
struct GenOp {
    kind: OpKind,
    inputs: Vec<u16>,
    output: u16,
    params: Vec<u8>,
    macs: u64,
    name: String,
}

/// A generated graph with everything needed to write it and check it back.
#[derive(Clone, Debug)]
struct Graph {
    h: usize,
    w: usize,
    c: usize,
    model_name: String,
    /// Tensor records (name refs filled by the writer) and names.
    tensors: Vec<(TensorDesc, String)>,
    ops: Vec<GenOp>,
    gain: Vec<f32>,
    offset: Vec<f32>,
    arena_len: u32,
    lower_bound: u32,
    macs: [u32; 2],
}

impl Graph {
    fn meta(&self) -> ModelMeta {
        ModelMeta {
            input_channels: self.c as u16,
            input_height: self.h as u16,
            input_width: self.w as u16,
            num_classes: self.c as u16,
            input_tensor: 0,
            output_tensor: self.tensors.len() as u16 - 1,
            precision: 0,
            reserved0: [0; 3],
            macs: self.macs,
            // Filled in `write` (the writer assigns offsets).
            name: StrRef::default(),
            reserved: [0; 4],
        }
    }

    /// The blob, and the ops as written (with their table references filled in).
    fn write(&self) -> (Vec<u8>, Vec<GenOp>) {
        let mut w = BlobWriter::new();
        let mut meta = self.meta();
        meta.name = w.string(&self.model_name);
        for (desc, name) in &self.tensors {
            let mut d = *desc;
            d.name = w.string(name);
            w.tensor(d);
        }
        let mut params = self.ops.clone();
        // Tables first, then point the layernorm record at them.
        let gain = w.data(&self.gain);
        let offset = w.data(&self.offset);
        for op in &mut params {
            if op.kind == OpKind::LayerNormS8 {
                let mut p: LayerNormParams = bytemuck::pod_read_unaligned(&op.params);
                p.gain = gain;
                p.offset = offset;
                op.params = bytemuck::bytes_of(&p).to_vec();
            }
        }
        for op in &params {
            w.op_record(
                op.kind, &op.inputs, op.output, &op.params, op.macs, &op.name,
            )
            .expect("generated records are well formed");
        }
        w.meta = Some(meta);
        w.arena_len = self.arena_len;
        w.arena_lower_bound = self.lower_bound;
        (w.finish(), params)
    }
}

fn tensor(h: usize, w: usize, c: usize, at: u32, scale: f32, zp: i32) -> TensorDesc {
    TensorDesc {
        dtype: DType::I8 as u8,
        reserved0: 0,
        flags: 0,
        h: h as u16,
        w: w as u16,
        c: c as u16,
        reserved1: 0,
        arena_offset: at,
        byte_len: (h * w * c) as u32,
        scale,
        zero_point: zp,
        name: StrRef::default(),
    }
}

fn graph() -> impl Strategy<Value = Graph> {
    (
        (1usize..7, 1usize..7, 1usize..9),
        "[a-zA-Z0-9_.é→ ]{0,24}",
        proptest::collection::vec("[a-z0-9_.]{0,16}", 8),
        proptest::collection::vec((0.001f32..10.0, -128i32..128), 4),
        (any::<bool>(), any::<u32>(), any::<u32>(), 0u32..1024),
        proptest::collection::vec((-4.0f32..4.0, -4.0f32..4.0), 8),
    )
        .prop_map(
            |((h, w, c), model_name, names, quant, (in_place, m0, m1, slack), tables)| {
                let n = h * w * c;
                let al = |x: usize| x.div_ceil(16) * 16;
                // Arena: image | normed | sum (or in place) | pooled, plus slack.
                let offs = [0, al(n), 2 * al(n), 3 * al(n)];
                let mut tensors = vec![
                    (
                        tensor(h, w, c, offs[0] as u32, quant[0].0, quant[0].1),
                        names[0].clone(),
                    ),
                    (
                        tensor(h, w, c, offs[1] as u32, quant[1].0, quant[1].1),
                        names[1].clone(),
                    ),
                ];
                let sum = if in_place { 1 } else { 2 };
                if !in_place {
                    tensors.push((
                        tensor(h, w, c, offs[2] as u32, quant[2].0, quant[2].1),
                        names[2].clone(),
                    ));
                }
                let pooled = tensors.len() as u16;
                tensors.push((
                    tensor(1, 1, c, offs[3] as u32, quant[3].0, quant[3].1),
                    names[3].clone(),
                ));
                let q = QuantizeParams {
                    inv_scale: 1.0 / quant[0].0,
                    zero_point: quant[0].1,
                };
                let ln = LayerNormParams {
                    tokens: (h * w) as u32,
                    channels: c as u16,
                    reserved: 0,
                    eps_term: 1e-3,
                    gain: DataRef::default(),
                    offset: DataRef::default(),
                };
                let add = AddParams {
                    ra: 0.5,
                    rb: 0.25,
                    c: quant[2].1 as f32,
                };
                let pool = MeanPoolParams {
                    tokens: (h * w) as u32,
                    channels: c as u32,
                    scale: 1.0 / (h * w) as f32,
                    offset: 0.0,
                };
                let op = |kind, inputs: Vec<u16>, output, params: &[u8], name: &String| GenOp {
                    kind,
                    inputs,
                    output,
                    params: params.to_vec(),
                    macs: (n as u64) * 3,
                    name: name.clone(),
                };
                let ops = vec![
                    op(
                        OpKind::QuantizeImage,
                        vec![],
                        0,
                        bytemuck::bytes_of(&q),
                        &names[4],
                    ),
                    op(
                        OpKind::LayerNormS8,
                        vec![0],
                        1,
                        bytemuck::bytes_of(&ln),
                        &names[5],
                    ),
                    op(
                        OpKind::AddS8,
                        vec![1, 0],
                        sum,
                        bytemuck::bytes_of(&add),
                        &names[6],
                    ),
                    op(
                        OpKind::MeanPoolS8,
                        vec![sum],
                        pooled,
                        bytemuck::bytes_of(&pool),
                        &names[7],
                    ),
                ];
                let arena_len = (offs[3] + al(c)) as u32 + slack * 16;
                Graph {
                    h,
                    w,
                    c,
                    model_name,
                    tensors,
                    ops,
                    gain: tables.iter().take(c).map(|t| t.0).collect(),
                    offset: tables.iter().take(c).map(|t| t.1).collect(),
                    arena_len,
                    lower_bound: arena_len / 2,
                    macs: [m0, m1],
                }
            },
        )
}

#[test]
fn the_generated_graphs_are_valid_models() {
    // Guards the generator itself: a graph that fails to parse would make the round trip vacuous.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..50 {
        let g = graph().new_tree(&mut runner).unwrap().current();
        assert_eq!(g.ops.len(), 4);
        parse(&g.write().0).unwrap_or_else(|e| panic!("{g:?}: {e}"));
    }
}

/// Inputs that once crashed a fuzz target (`tests/fuzz/regressions/<target>/`), replayed the
/// way the target feeds them: each must now be handled without a panic.
#[test]
fn fuzz_regressions_are_handled() {
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fuzz/regressions");
    let mut replayed = 0;
    for entry in std::fs::read_dir(root.join("blob_run")).unwrap() {
        let mut bytes = std::fs::read(entry.unwrap().path()).unwrap();
        patch_crc(&mut bytes);
        let aligned = AlignedBytes::new(&bytes);
        if let Ok(m) = Model::parse(aligned.as_bytes()) {
            for i in 0..m.op_count() {
                m.decode(i).expect("a parsed blob decodes");
                let _ = m.op_data_bytes(i);
            }
        }
        let _ = parse_and_maybe_run(&bytes, &[]);
        replayed += 1;
    }
    assert!(replayed > 0, "no regression inputs found");
}
