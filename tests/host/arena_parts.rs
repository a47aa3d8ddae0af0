//! Arena plans split over memory regions (`vitae quantize --board`): the quantizer's split plans
//! run bit-identically in parts and in one contiguous arena, the reader refuses splits that
//! break the format's rules, the runtime refuses parts that do not match the plan, and a model
//! too large for the regions is refused naming the buffer and the region.

#[path = "blob_common.rs"]
mod blob_common;
#[path = "common.rs"]
mod common;

use blob_common::patch_crc;
use vitae::quantize::plan::Region;
use vitae::quantize::{self, CalibMethod, NoProgress, Options, Precision, QuantizeError};
use vitae::reference::ReferenceModel;
use vitae_edge::format::{AlignedBytes, FormatErrorKind, Model};
use vitae_edge::runtime::{self, Input, NoProfiler, RunError, Runner};

/// A small two-stage model (performer and performer_less reduction cells, a normal cell) with
/// random weights, and three calibration images.
fn model() -> (ReferenceModel, Vec<Vec<f32>>) {
    let json = r#"{"img_size": 16, "in_chans": 3, "num_classes": 5, "stages": 2,
        "embed_dims": [8, 16], "token_dims": [8, 16], "downsample_ratios": [4, 2],
        "kernel_size": [3, 3], "RC_heads": [1, 1], "NC_heads": [1, 2],
        "dilations": [[1, 2], [1]], "RC_tokens_type": ["performer", "performer_less"],
        "NC_tokens_type": ["transformer", "transformer"], "RC_group": [1, 1],
        "NC_group": [1, 2], "NC_depth": [1, 1], "mlp_ratio": 2.0}"#;
    let config = vitae::config::ModelConfig::from_kwargs_json(json, "split").unwrap();
    let checkpoint = vitae::validate::random_checkpoint(&config, 5);
    let model = ReferenceModel::new(config, &checkpoint).unwrap();
    let n = model.config().input_len();
    let calib = (0..3)
        .map(|k| {
            (0..n)
                .map(|i| (((i * 5 + k * 11) % 23) as f32 - 11.0) / 6.0)
                .collect()
        })
        .collect();
    (model, calib)
}

fn quantized(
    model: &ReferenceModel,
    calib: &[Vec<f32>],
    precision: Precision,
    regions: Vec<Region>,
) -> Result<Vec<u8>, QuantizeError> {
    let options = Options {
        precision,
        method: CalibMethod::Auto,
        flash_budget: None,
        max_logit_error: None,
        name: "split".into(),
        input: Default::default(),
        arena_regions: regions,
        patch: vitae::quantize::patch::Patch::Off,
    };
    Ok(quantize::quantize(model, calib, &options, &mut NoProgress)?
        .lowered
        .blob)
}

fn region(name: &str, room: usize) -> Region {
    Region {
        name: name.into(),
        room,
    }
}

/// Logits bytes of a run in one contiguous arena.
fn run_contiguous(m: &Model, image: &[f32]) -> Vec<u8> {
    let mut arena = AlignedBytes::new(&vec![0; m.arena_len()]);
    let out = runtime::run(
        m,
        arena.as_bytes_mut(),
        Input::F32Nchw(image),
        &mut NoProfiler,
    )
    .unwrap();
    (0..out.len())
        .flat_map(|i| out.logit(i).to_le_bytes())
        .collect()
}

/// Regions that force a split: a small fast one, then room for everything, then more.
fn split_regions(contiguous_arena: usize) -> Vec<Region> {
    vec![
        region("TCM", contiguous_arena / 3),
        region("SRAM", contiguous_arena),
        region("SRAM2", contiguous_arena),
    ]
}

/// The model in int8, planned over [`split_regions`] sized from its contiguous arena.
fn int8_split_blob(model: &ReferenceModel, calib: &[Vec<f32>]) -> AlignedBytes {
    let plain = quantized(model, calib, Precision::Int8, Vec::new()).unwrap();
    let len = Model::parse(AlignedBytes::new(&plain).as_bytes())
        .unwrap()
        .arena_len();
    let split = quantized(model, calib, Precision::Int8, split_regions(len)).unwrap();
    AlignedBytes::new(&split)
}

#[test]
fn split_plans_run_bit_identically_in_parts_and_contiguous() {
    let (model, calib) = model();
    for precision in [Precision::Int8, Precision::Fp16, Precision::Mixed] {
        let plain = quantized(&model, &calib, precision, Vec::new()).unwrap();
        let plain = AlignedBytes::new(&plain);
        let plain = Model::parse(plain.as_bytes()).unwrap();
        assert_eq!(plain.arena_parts(), 1);
        let regions = split_regions(plain.arena_len());
        let split = quantized(&model, &calib, precision, regions.clone()).unwrap();
        let split = AlignedBytes::new(&split);
        let m = Model::parse(split.as_bytes()).unwrap();
        assert_eq!(m.arena_parts(), 3, "{precision:?}");
        for (i, r) in regions.iter().enumerate() {
            assert!(m.arena_part(i).len() <= r.room, "{precision:?} part {i}");
        }
        // The fast region holds something: the plan fills it first.
        assert!(m.arena_part(0).len() > 16, "{precision:?}");
        for image in &calib {
            let want = run_contiguous(&plain, image);
            assert_eq!(run_contiguous(&m, image), want, "{precision:?} contiguous");
            let mut parts: Vec<AlignedBytes> = (0..3)
                .map(|i| AlignedBytes::new(&vec![0xa5; m.arena_part(i).len()]))
                .collect();
            let [a, b, c] = &mut parts[..] else {
                unreachable!()
            };
            let buffers = [a.as_bytes_mut(), b.as_bytes_mut(), c.as_bytes_mut()];
            let out = Runner::with_parts(&m, buffers, Input::F32Nchw(image))
                .unwrap()
                .finish()
                .unwrap();
            let got: Vec<u8> = (0..out.len())
                .flat_map(|i| out.logit(i).to_le_bytes())
                .collect();
            assert_eq!(got, want, "{precision:?} in parts");
        }
    }
}

#[test]
fn parts_that_do_not_match_the_plan_are_refused() {
    let (model, calib) = model();
    let split = int8_split_blob(&model, &calib);
    let m = Model::parse(split.as_bytes()).unwrap();
    let image = Input::F32Nchw(&calib[0]);
    let mut big = AlignedBytes::new(&vec![0; m.arena_len()]);
    let e = Runner::with_parts(&m, [big.as_bytes_mut()], image).unwrap_err();
    assert_eq!(e, RunError::ArenaPartCount { need: 3, have: 1 });
    let need = m.arena_part(1).len();
    let mut p0 = AlignedBytes::new(&vec![0; m.arena_part(0).len()]);
    let mut p1 = AlignedBytes::new(&vec![0; need - 16]);
    let mut p2 = AlignedBytes::new(&vec![0; m.arena_part(2).len()]);
    let parts = [p0.as_bytes_mut(), p1.as_bytes_mut(), p2.as_bytes_mut()];
    let e = Runner::with_parts(&m, parts, image).unwrap_err();
    assert_eq!(
        e,
        RunError::ArenaPartTooSmall {
            part: 1,
            need,
            have: need - 16
        }
    );
    assert!(e.to_string().contains("arena part 1 too small"), "{e}");
}

#[test]
fn splits_that_break_the_rules_are_refused() {
    let (model, calib) = model();
    let aligned = int8_split_blob(&model, &calib);
    let split = aligned.as_bytes().to_vec();
    let m = Model::parse(aligned.as_bytes()).unwrap();
    let (s1, s2, arena) = (
        m.header().arena_splits[0],
        m.header().arena_splits[1],
        m.arena_len() as u32,
    );
    let with_splits = |splits: &[u32]| {
        let mut b = split.clone();
        for (i, s) in splits.iter().enumerate() {
            b[32 + 4 * i..36 + 4 * i].copy_from_slice(&s.to_le_bytes());
        }
        patch_crc(&mut b);
        Model::parse(AlignedBytes::new(&b).as_bytes()).map(|_| ())
    };
    let bad_split = |part: u8, at: usize| {
        Err(vitae_edge::FormatError {
            kind: FormatErrorKind::BadArenaSplit { part },
            offset: at,
        })
    };
    assert_eq!(with_splits(&[s1, s2]), Ok(()));
    assert_eq!(with_splits(&[s1 + 8, s2]), bad_split(1, 32), "misaligned");
    assert_eq!(with_splits(&[s2, s1]), bad_split(2, 36), "falling");
    assert_eq!(with_splits(&[s1, arena]), bad_split(2, 36), "at the end");
    assert_eq!(with_splits(&[0, s2]), bad_split(2, 36), "after a zero");
    // A split moved into the middle of a buffer: that buffer crosses it.
    let crossing = with_splits(&[s1 - 16, s2]).unwrap_err();
    assert!(
        matches!(crossing.kind, FormatErrorKind::BadTensor { what, .. } | FormatErrorKind::BadOp { what, .. } if what.contains("crosses a split")),
        "{crossing}"
    );
    // No splits at all is the contiguous plan of the same offsets, which is valid.
    assert_eq!(with_splits(&[0, 0]), Ok(()));
}

#[test]
fn a_model_too_large_for_the_regions_names_the_buffer_and_the_region() {
    let (model, calib) = model();
    // Too little room in total: the message gives the busiest op's live bytes against it.
    let regions = vec![region("DTCM", 64), region("SRAM1", 128)];
    let msg = quantized(&model, &calib, Precision::Int8, regions)
        .unwrap_err()
        .to_string();
    for part in [
        "the arena does not fit DTCM (64 bytes), SRAM1 (128 bytes): tensor `",
        "finds no room in any of them; the model has ",
        "bytes live at once at its busiest op, ",
        "more than the regions' 192 in total",
    ] {
        assert!(msg.contains(part), "{msg}");
    }
    // Room enough in total, but the largest buffer fits no single region: the message names
    // the largest region and by how much it is short.
    let plain = quantized(&model, &calib, Precision::Int8, Vec::new()).unwrap();
    let plain = AlignedBytes::new(&plain);
    let m = Model::parse(plain.as_bytes()).unwrap();
    let largest = (0..m.tensor_count())
        .map(|t| m.tensor(t as u16).arena_range().len().next_multiple_of(16))
        .max()
        .unwrap();
    let regions: Vec<Region> = (0..8)
        .map(|i| region(&format!("R{i}"), largest - 16))
        .collect();
    assert!(8 * (largest - 16) >= m.header().arena_lower_bound as usize);
    let msg = quantized(&model, &calib, Precision::Int8, regions)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&format!(
            "({} bytes, live from op",
            vitae::text::grouped(largest as u64)
        )) && msg.contains("the largest, R0, is 16 bytes too small for it"),
        "{msg}"
    );
}

/// mcu_a int8 planned for each board with more than one arena region: the parts fit the
/// regions' room and the logits are the contiguous plan's, bit for bit.
#[test]
fn mcu_a_planned_for_each_split_board_runs_bit_identically() {
    let dir = common::fixtures().join("mcu_a");
    let config = vitae::config::ModelConfig::from_kwargs_file(&dir.join("kwargs.json")).unwrap();
    let checkpoint = vitae::checkpoint::load_checkpoint(&dir.join("model.safetensors")).unwrap();
    let model = ReferenceModel::new(config, &checkpoint).unwrap();
    let input = vitae::npy::read_npy_f32(&dir.join("input.npy")).unwrap();
    let image = input.data.clone();
    let calib = vec![image.clone()];
    let plain = quantized(&model, &calib, Precision::Int8, Vec::new()).unwrap();
    let plain = AlignedBytes::new(&plain);
    let want = run_contiguous(&Model::parse(plain.as_bytes()).unwrap(), &image);
    for board in vitae::boards::BOARDS.iter().filter(|b| b.arena.len() > 1) {
        let blob = quantized(&model, &calib, Precision::Int8, board.arena_regions()).unwrap();
        let blob = AlignedBytes::new(&blob);
        let m = Model::parse(blob.as_bytes()).unwrap();
        assert_eq!(m.arena_parts(), board.arena.len(), "{}", board.name);
        let lens: Vec<u64> = (0..m.arena_parts())
            .map(|i| m.arena_part(i).len() as u64)
            .collect();
        assert_eq!(board.place_arena(&lens), Ok((0..lens.len()).collect()));
        assert_eq!(run_contiguous(&m, &image), want, "{}", board.name);
    }
    // Staged into 32 KiB (every op's tables fit) and into 8 KiB (some): the same logits.
    let m = Model::parse(plain.as_bytes()).unwrap();
    let (staged, t) = run_staged(&m, &image, 32 * 1024);
    assert_eq!(staged, want);
    assert!(t.staged_ops > 0 && t.in_place == 0, "{t:?}");
    let (staged, t) = run_staged(&m, &image, 8 * 1024);
    assert_eq!(staged, want);
    assert!(t.staged_ops > 0 && t.in_place > 0, "{t:?}");
}

/// Logits bytes of a run that stages each op's tables into a buffer of `stage` bytes first, and
/// what it staged.
fn run_staged(m: &Model, image: &[f32], stage: usize) -> (Vec<u8>, runtime::WeightTraffic) {
    let mut arena = AlignedBytes::new(&vec![0; m.arena_len()]);
    let mut buffer = AlignedBytes::new(&vec![0; stage]);
    let mut runner = Runner::new(m, arena.as_bytes_mut(), Input::F32Nchw(image)).unwrap();
    runner.stage_weights(buffer.as_bytes_mut()).unwrap();
    while !runner.is_done() {
        runner.step().unwrap();
    }
    let traffic = runner.weight_traffic();
    let out = runner.finish().unwrap();
    let logits = (0..out.len())
        .flat_map(|i| out.logit(i).to_le_bytes())
        .collect();
    (logits, traffic)
}

/// Weights staged into a fast buffer before each op give the logits of the run that reads them
/// in place, in every precision, with every op staged, some, or none.
#[test]
fn staged_weights_give_the_in_place_logits() {
    let (model, calib) = model();
    for precision in [Precision::Int8, Precision::Fp16, Precision::Mixed] {
        let blob = quantized(&model, &calib, precision, Vec::new()).unwrap();
        let blob = AlignedBytes::new(&blob);
        let m = Model::parse(blob.as_bytes()).unwrap();
        let ranges: Vec<_> = (0..m.op_count())
            .map(|i| m.op_data_range(i).unwrap())
            .collect();
        for (i, r) in ranges.iter().enumerate() {
            // The range covers every table the op uses, and no other op's (the writer lays an
            // op's tables out together).
            let used = m.op_data_bytes(i).unwrap();
            assert!(
                r.len() >= used && r.len() < used + 16 * 8,
                "op {i}: {r:?} for {used}"
            );
            assert_eq!(r.start % 16, 0);
        }
        let with_tables = ranges.iter().filter(|r| !r.is_empty()).count();
        let largest = ranges.iter().map(|r| r.len()).max().unwrap();
        let total: u64 = ranges.iter().map(|r| r.len() as u64).sum();
        let image = &calib[0];
        let want = run_contiguous(&m, image);
        let (all, t) = run_staged(&m, image, largest);
        assert_eq!(all, want, "{precision:?}: all staged");
        assert_eq!(
            (t.staged_ops as usize, t.staged, t.in_place),
            (with_tables, total, 0)
        );
        let (some, t) = run_staged(&m, image, largest / 2);
        assert_eq!(some, want, "{precision:?}: some staged");
        assert!(t.in_place > 0 && t.staged > 0 && t.staged + t.in_place == total);
        let (none, t) = run_staged(&m, image, 0);
        assert_eq!(none, want, "{precision:?}: none staged");
        assert_eq!((t.staged, t.in_place), (0, total));
    }
}

/// A staged copy of the wrong length is refused like any bad table reference: an error, no
/// out-of-bounds read.
#[test]
fn a_short_staged_copy_is_an_error() {
    let (model, calib) = model();
    let blob = quantized(&model, &calib, Precision::Int8, Vec::new()).unwrap();
    let blob = AlignedBytes::new(&blob);
    let m = Model::parse(blob.as_bytes()).unwrap();
    let i = (0..m.op_count())
        .find(|&i| m.op_data_range(i).unwrap().len() > 32)
        .unwrap();
    let r = m.op_data_range(i).unwrap();
    let short = AlignedBytes::new(&m.data_bytes(r.clone())[..r.len() - 16]);
    let e = m.decode_staged(i, short.as_bytes()).unwrap_err();
    assert!(matches!(e.kind, FormatErrorKind::BadData { .. }), "{e}");
    let whole = AlignedBytes::new(m.data_bytes(r));
    assert!(m.decode_staged(i, whole.as_bytes()).is_ok());
}

/// A copier that behaves like a DMA finishing late: `start` scribbles over the destination and
/// only `wait` delivers the bytes. A runner that read a half before waiting would see the
/// scribbles.
#[derive(Default)]
struct LateCopy {
    pending: Option<(Vec<u8>, *mut u8)>,
    starts: usize,
    waits: usize,
}

// SAFETY: `wait` writes the last copy's bytes through the pointer `start` was given, and the
// runner promises not to touch that destination nor give up its buffer before `wait` returns.
unsafe impl runtime::StageCopy for LateCopy {
    fn start(&mut self, src: &[u8], dst: &mut [u8]) {
        assert!(
            self.pending.is_none(),
            "a copy started before the last was waited for"
        );
        dst.fill(0xa5);
        self.pending = Some((src.to_vec(), dst.as_mut_ptr()));
        self.starts += 1;
    }

    fn wait(&mut self) {
        if let Some((bytes, dst)) = self.pending.take() {
            // SAFETY: `dst` is the start of the `bytes.len()`-byte destination given to `start`,
            // which the runner keeps alive and untouched until this returns.
            unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
        }
        self.waits += 1;
    }
}

/// Double-buffered staging (the next op's tables moving while an op runs) gives the in-place
/// logits with the core's copy and with a copy that lands late; a run dropped half way waits
/// for the copy in flight.
#[test]
fn double_buffered_staging_gives_the_in_place_logits() {
    let (model, calib) = model();
    for precision in [Precision::Int8, Precision::Fp16, Precision::Mixed] {
        let blob = quantized(&model, &calib, precision, Vec::new()).unwrap();
        let blob = AlignedBytes::new(&blob);
        let m = Model::parse(blob.as_bytes()).unwrap();
        let largest = (0..m.op_count())
            .map(|i| m.op_data_range(i).unwrap().len())
            .max()
            .unwrap();
        let image = &calib[0];
        let want = run_contiguous(&m, image);
        let run_ahead = |copier: &mut dyn runtime::StageCopy, stage: usize, stop_after: usize| {
            let mut arena = AlignedBytes::new(&vec![0; m.arena_len()]);
            let mut buffer = AlignedBytes::new(&vec![0; stage]);
            let mut runner = Runner::new(&m, arena.as_bytes_mut(), Input::F32Nchw(image)).unwrap();
            runner
                .stage_weights_ahead(buffer.as_bytes_mut(), copier)
                .unwrap();
            while !runner.is_done() && runner.next_op() < stop_after {
                runner.step().unwrap();
            }
            if !runner.is_done() {
                return (Vec::new(), runner.weight_traffic());
            }
            let traffic = runner.weight_traffic();
            let out = runner.finish().unwrap();
            let logits = (0..out.len())
                .flat_map(|i| out.logit(i).to_le_bytes())
                .collect();
            (logits, traffic)
        };
        // Both halves hold any op's tables: every op with tables is staged.
        let (got, t) = run_ahead(&mut runtime::MemCopy, 2 * largest, usize::MAX);
        assert_eq!(got, want, "{precision:?}: ahead, core copy");
        assert_eq!(t.in_place, 0);
        let mut late = LateCopy::default();
        let (got, t) = run_ahead(&mut late, 2 * largest, usize::MAX);
        assert_eq!(got, want, "{precision:?}: ahead, late copy");
        assert!(t.staged_ops > 1 && late.starts > 1 && late.waits >= late.starts);
        // Halves too small for some ops: those read in place, the rest are staged.
        let mut late = LateCopy::default();
        let (got, t) = run_ahead(&mut late, largest, usize::MAX);
        assert_eq!(got, want, "{precision:?}: ahead, some staged");
        assert!(t.in_place > 0 && t.staged > 0, "{t:?}");
        // Stopped before an op with tables, whose copy is then in flight: dropping the runner
        // waits for it (each start is matched by exactly one wait).
        let k = (1..m.op_count())
            .find(|&i| !m.op_data_range(i).unwrap().is_empty())
            .unwrap();
        let mut late = LateCopy::default();
        run_ahead(&mut late, 2 * largest, k);
        assert!(late.pending.is_none() && late.starts > 0 && late.waits == late.starts);
    }
}
