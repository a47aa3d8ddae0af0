//! Properties of the blob format itself (no quantizer involved), run by `cargo test -p
//! vitae-edge`: randomly generated graphs written with the `BlobWriter`, parsed back and compared
//! record by record, re-serialized to the same bytes and run; and the inputs that once crashed a
//! fuzz target, replayed. The quantizer's real blobs have their own properties in
//! `blob_properties.rs` (bit flips, truncations, crafted edits).

#[path = "blob_common.rs"]
mod blob_common;

use blob_common::{parse, parse_and_maybe_run, patch_crc, reserialize, section_bytes};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use vitae_edge::format::{
    AlignedBytes, BlobWriter, DType, DataRef, FormatErrorKind, Model, ModelMeta, OpKind,
    SectionKind, StrRef, TensorDesc,
};
use vitae_edge::kernels::KernelError;
use vitae_edge::ops::{
    add::AddParams, image::QuantizeParams, layernorm::LayerNormParams, mean_pool::MeanPoolParams,
};
use vitae_edge::runtime::{self, Input, NoProfiler};

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

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
            let v = m.op(i).unwrap();
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
        row0: 0,
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
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/regressions");
    let mut replayed = 0;
    for entry in std::fs::read_dir(root.join("blob_run")).unwrap() {
        let mut bytes = std::fs::read(entry.unwrap().path()).unwrap();
        patch_crc(&mut bytes);
        let aligned = AlignedBytes::new(&bytes);
        if let Ok(m) = Model::parse(aligned.as_bytes()) {
            for i in 0..m.op_count() {
                m.decode(i).expect("a parsed blob decodes");
                m.op_data_bytes(i)
                    .expect("a parsed blob reports its data bytes");
            }
        }
        let _ = parse_and_maybe_run(&bytes, &[]);
        replayed += 1;
    }
    assert!(replayed > 0, "no regression inputs found");
}

/// The f32 factors Helium's flush-to-zero arithmetic could meet are range-checked at parse time:
/// a crafted blob with one factor outside 0 ∪ ±[2^−64, 2^64] (the LayerNorm eps term up to 2^96)
/// is refused with a typed error naming the op, and the ends of the range are accepted. Before
/// the check, `inv_scale = 1e38` parsed, and a pixel of 5e−39 quantized to 1 on the host and to 0
/// on the Cortex-M55.
#[test]
fn factors_that_could_meet_flush_to_zero_are_refused() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let base = graph().new_tree(&mut runner).unwrap().current();
    parse(&base.write().0).expect("the unchanged graph parses");
    let lo = f32::from_bits(0x1f80_0000); // 2^-64
    let hi = f32::from_bits(0x5f80_0000); // 2^64
    let below = f32::from_bits(lo.to_bits() - 1);
    let above = f32::from_bits(hi.to_bits() + 1);
    type Edit = Box<dyn Fn(&mut Graph)>;
    // Sets the f32 at byte `at` of op `op`'s parameter record.
    let field = |op: usize, at: usize, x: f32| -> Edit {
        Box::new(move |g: &mut Graph| {
            g.ops[op].params[at..at + 4].copy_from_slice(&x.to_le_bytes())
        })
    };
    // QuantizeParams.inv_scale, LayerNormParams.eps_term, AddParams.{ra, rb, c},
    // MeanPoolParams.{scale, offset}.
    let inv_scale = |x| field(0, 0, x);
    let eps_term = |x| field(1, 8, x);
    let (ra, rb, c) = (|x| field(2, 0, x), |x| field(2, 4, x), |x| field(2, 8, x));
    let (pool_scale, pool_offset) = (|x| field(3, 8, x), |x| field(3, 12, x));
    // (edit, op index, refused by the kernel (true) or the op decoder (false))
    let refused: Vec<(Edit, u16, bool)> = vec![
        (inv_scale(1e38), 0, false),
        (inv_scale(above), 0, false),
        (inv_scale(below), 0, false),
        (eps_term(f32::from_bits(0x6f80_0001)), 1, true),
        (eps_term(below), 1, true),
        (Box::new(|g: &mut Graph| g.gain[0] = 1e-40), 1, true),
        (Box::new(|g: &mut Graph| g.offset[0] = -1e-30), 1, true),
        (Box::new(|g: &mut Graph| g.gain[0] = 3e19), 1, true),
        (ra(1e30), 2, true),
        (rb(below), 2, true),
        (c(-1e-39), 2, true),
        (pool_scale(above), 3, true),
        (pool_offset(1e-25), 3, true),
    ];
    for (i, (edit, op, by_kernel)) in refused.iter().enumerate() {
        let mut g = base.clone();
        edit(&mut g);
        let bytes = g.write().0;
        let aligned = AlignedBytes::new(&bytes);
        let err = Model::parse(aligned.as_bytes()).expect_err(&format!("edit {i} parsed"));
        match err.kind {
            FormatErrorKind::BadKernelParams {
                op: at,
                error: KernelError::BadParam { .. },
            } if *by_kernel => assert_eq!(at, *op, "edit {i}: {err}"),
            FormatErrorKind::BadOp { index, .. } if !by_kernel => {
                assert_eq!(index, *op, "edit {i}: {err}")
            }
            _ => panic!("edit {i}: unexpected error {err}"),
        }
    }
    let accepted: Vec<Edit> = vec![
        inv_scale(lo),
        inv_scale(hi),
        eps_term(f32::from_bits(0x6f80_0000)),
        eps_term(lo),
        Box::new(move |g: &mut Graph| {
            g.gain[0] = -lo;
            g.offset[0] = 0.0;
        }),
        ra(hi),
        rb(-lo),
        c(0.0),
        pool_offset(-hi),
    ];
    for (i, edit) in accepted.iter().enumerate() {
        let mut g = base.clone();
        edit(&mut g);
        parse(&g.write().0).unwrap_or_else(|e| panic!("accepted edit {i}: {e}"));
    }
}
