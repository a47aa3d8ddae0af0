//! Structural validation and the executor on hostile blobs: the checksum is recomputed and
//! patched in before parsing (every random mutation would fail it otherwise), and a blob that
//! parses is run through `vitae_edge::runtime::run` with an arena of exactly the planned size.
//! Neither may panic, read out of bounds or loop: a parsed blob is supposed to be safe to run.
//!
//! The work is bounded so that no input takes a second: validation guarantees memory safety, not
//! a small model, and a 4 GiB arena or a 10^12-MAC layer is legal. Such blobs are still parsed and
//! decoded, just not run.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitae_edge::format::{AlignedBytes, CRC_FIELD_OFFSET, Model, crc32};
use vitae_edge::runtime::{self, Input, NoProfiler};

/// Largest arena a run gets.
const MAX_ARENA: usize = 1 << 18;
/// Largest estimated work (multiply-accumulates plus elements touched) a run gets.
const MAX_WORK: u64 = 4_000_000;

fuzz_target!(|data: &[u8]| {
    let mut blob = AlignedBytes::new(data);
    let bytes = blob.as_bytes_mut();
    if bytes.len() >= CRC_FIELD_OFFSET + 4 {
        bytes[CRC_FIELD_OFFSET..CRC_FIELD_OFFSET + 4].fill(0);
        let crc = crc32(bytes);
        bytes[CRC_FIELD_OFFSET..CRC_FIELD_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    }
    let Ok(model) = Model::parse(blob.as_bytes()) else {
        return;
    };
    let mut total = 0u64;
    for i in 0..model.op_count() {
        let op = model.decode(i).expect("a parsed model decodes");
        // The op's own MAC count, from its decoded parameters (not the blob's claim).
        total = total.saturating_add(op.macs());
        model.op(i).expect("a parsed model has only known op kinds");
        model
            .op_data_bytes(i)
            .expect("a parsed model reports its data bytes");
    }
    let m = model.meta();
    let pixels = m.input_channels as usize * m.input_height as usize * m.input_width as usize;
    // Elements touched outside the MAC-counted kernels are bounded by the arena size per op.
    let touched = model.arena_len() as u64 * model.op_count() as u64;
    if model.arena_len() > MAX_ARENA || total.saturating_add(touched) > MAX_WORK {
        return;
    }
    // An input with values across the int8 range, some negative, some large.
    let image: Vec<f32> = (0..pixels).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
    let mut arena = AlignedBytes::new(&vec![0u8; model.arena_len()]);
    if let Ok(out) = runtime::run(
        &model,
        arena.as_bytes_mut(),
        Input::F32Nchw(&image),
        &mut NoProfiler,
    ) {
        let mut logits = vec![0.0f32; out.len()];
        out.logits_f32(&mut logits);
        let _ = out.top_k::<5>();
    }
});
