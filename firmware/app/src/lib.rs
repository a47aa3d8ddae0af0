//! ViTAE-Edge firmware: runs the model blob embedded at build time on the embedded input(s) and
//! reports logits, top-5, per-op cost, arena and stack use over defmt.
//!
//! The entry point lives here; each `boards/<board>` package only links this library for its
//! board (memory layout, log transport, measurement). What to embed is chosen by environment
//! variables at build time (see `build.rs`); `cargo xtask qemu` / `demo` / `firmware` set them.
//!
//! Output lines (read by `cargo xtask`): `MODEL …`, then per image `LOGITS <i> [<f32 bits>…]` and
//! `TOP5 <i> …`, then (with `VITAE_REPEAT` > 1) `REPEAT …`, `OP <i> <kind> <name> …` per op,
//! `MEMORY …`, `DONE images=<n>`; a problem is one `ERROR …` line and a failure exit code.
#![no_std]
#![deny(unsafe_code)]

use vitae_board::profile::{self, Mark};
use vitae_edge::format::{Model, OpView};
use vitae_edge::preprocess::digits;
use vitae_edge::runtime::{self, Input, Profiler};

/// 16-byte alignment for the blob (weights are used in place) and the arena.
#[repr(C, align(16))]
pub struct Aligned<T>(pub T);

/// Inputs embedded at build time.
pub enum Inputs {
    /// float32 CHW images, back to back (little-endian bytes).
    F32 {
        /// Images.
        count: usize,
        /// Values per image.
        per_image: usize,
        /// The bytes.
        data: &'static [u8],
    },
    /// u8 HWC pixels, back to back (for a blob quantized with `--input u8`).
    U8 {
        /// Images.
        count: usize,
        /// Values per image.
        per_image: usize,
        /// The pixels.
        data: &'static [u8],
    },
    /// sklearn digits, 65-byte records (64 pixels 0..16, label), preprocessed on the device.
    Digits {
        /// Images.
        count: usize,
        /// The records.
        records: &'static [u8],
    },
}

// The embedded blob and inputs are statics placed in the board's blob region (`link_section`).
#[allow(unsafe_code)]
mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

mod arena {
    //! The one place that hands out the static arena parts.
    #![allow(unsafe_code)]
    use super::embedded::{ARENA_PARTS, arena_parts};
    use core::sync::atomic::{AtomicBool, Ordering};

    static TAKEN: AtomicBool = AtomicBool::new(false);

    /// The arena parts (one per memory region of the plan) and the weight staging buffer, if
    /// the build has one, once; `None` if already taken.
    #[allow(clippy::type_complexity)]
    pub fn take() -> Option<([&'static mut [u8]; ARENA_PARTS], Option<&'static mut [u8]>)> {
        if TAKEN.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: `TAKEN` makes this the only call of `arena_parts` and `stage_buffer`, so the
        // references they make are the only ones ever created to those statics, which nothing
        // else names.
        Some(unsafe { (arena_parts(), super::embedded::stage_buffer()) })
    }
}

/// Most ops a per-op profile holds.
const MAX_OPS: usize = 512;
/// Most tensors whose lifetimes the memory report tracks.
const MAX_TENSORS: usize = 512;

/// Per-op regions: instruction-count markers under QEMU, DWT cycles on real boards.
struct OpTimer {
    enabled: bool,
    mark: Option<Mark>,
    cycles: heapless::Vec<u32, MAX_OPS>,
}

impl Profiler for OpTimer {
    fn op_start(&mut self, _op: &OpView) {
        if self.enabled {
            self.mark = Some(profile::start());
        }
    }

    fn op_end(&mut self, _op: &OpView, _output: &[u8]) {
        if let Some(m) = self.mark.take() {
            let c = profile::stop(m).unwrap_or(0);
            let _ = self.cycles.push(c);
        }
    }
}

fn fail(what: &str, detail: impl defmt::Format) -> ! {
    defmt::println!("ERROR {=str}: {}", what, detail);
    vitae_board::exit(false)
}

#[cortex_m_rt::entry]
fn main() -> ! {
    vitae_board::init();
    let blob: &'static [u8] = &embedded::BLOB.0;
    let model = match Model::parse(blob) {
        Ok(m) => m,
        Err(e) => fail("invalid model blob", e),
    };
    let Some((mut arena, mut stage)) = arena::take() else {
        fail("arena", "already taken")
    };
    let meta = model.meta();
    defmt::println!(
        "MODEL name={=str} precision={=str} ops={=usize} arena={=usize} blob={=usize} macs={=u64} board={=str} core={=str} kernels={}",
        model.name(),
        runtime::precision_name(model.precision()),
        model.op_count(),
        model.arena_len(),
        blob.len(),
        model.macs(),
        vitae_board::BOARD,
        vitae_board::CORE,
        vitae_edge::kernels::selected_impl()
    );
    let per_image =
        meta.input_channels as usize * meta.input_height as usize * meta.input_width as usize;
    let count = match embedded::INPUT {
        Inputs::F32 {
            count,
            per_image: p,
            ..
        }
        | Inputs::U8 {
            count,
            per_image: p,
            ..
        } => {
            if p != per_image {
                fail(
                    "input size",
                    "the embedded images do not have the model's C·H·W",
                );
            }
            count
        }
        Inputs::Digits { count, .. } => count,
    };
    let mut traffic = vitae_edge::WeightTraffic::default();
    // The core copies the next op's tables (a board with a DMA channel would give its own).
    let mut copier = vitae_edge::MemCopy;
    let mut digit_image = [0.0f32; digits::INPUT_LEN];
    let mut timer = OpTimer {
        enabled: false,
        mark: None,
        cycles: heapless::Vec::new(),
    };
    // With `VITAE_REPEAT` > 1 (soak), every later pass over the inputs must reproduce the first
    // pass's logits bit for bit (compared through a CRC-32 of all of them) and must not deepen
    // the stack. Only the first pass prints logits and is measured.
    let mut first_digest: Option<u32> = None;
    let mut mismatched_passes = 0usize;
    let mut stack_after_first = 0usize;
    for pass in 0..embedded::REPEAT {
        let mut digest = vitae_edge::format::Crc32::default();
        for i in 0..count {
            let image = match embedded::INPUT {
                Inputs::F32 { data, .. } => {
                    let all: &[f32] = bytemuck::cast_slice(data);
                    Input::F32Nchw(&all[i * per_image..(i + 1) * per_image])
                }
                Inputs::U8 { data, .. } => Input::U8Hwc(&data[i * per_image..(i + 1) * per_image]),
                Inputs::Digits { records, .. } => {
                    let rec = &records[i * 65..i * 65 + 64];
                    let px: &[u8; 64] = rec.try_into().unwrap_or(&[0; 64]);
                    digits::preprocess(px, &mut digit_image);
                    Input::F32Nchw(&digit_image)
                }
            };
            // The first image also gets per-op regions, nested in the whole-inference region.
            timer.enabled = pass == 0 && i == 0;
            let whole = (pass == 0).then(profile::start);
            let parts = arena.each_mut().map(|p| &mut **p);
            let result =
                runtime::Runner::with_parts(&model, parts, image).and_then(|mut runner| {
                    match stage.as_deref_mut() {
                        Some(buffer) if embedded::STAGE_AHEAD => {
                            runner.stage_weights_ahead(buffer, &mut copier)?
                        }
                        Some(buffer) => runner.stage_weights(buffer)?,
                        None => {}
                    }
                    while !runner.is_done() {
                        runner.step_profiled(&mut timer)?;
                    }
                    traffic = runner.weight_traffic();
                    runner.finish()
                });
            let cycles = whole.and_then(profile::stop);
            let out = match result {
                Ok(out) => out,
                Err(e) => fail("inference", e),
            };
            let mut bits: heapless::Vec<u32, 1024> = heapless::Vec::new();
            for c in 0..out.len().min(1024) {
                let _ = bits.push(out.logit(c).to_bits());
            }
            digest.update(bytemuck::cast_slice(&bits[..]));
            if pass > 0 {
                continue;
            }
            defmt::println!("LOGITS {=usize} {:x}", i, &bits[..]);
            let top = out.top_k::<5>();
            defmt::println!(
                "TOP5 {=usize} {=u16}:{=f32} {=u16}:{=f32} {=u16}:{=f32} {=u16}:{=f32} {=u16}:{=f32} cycles={}",
                i,
                top[0].0,
                top[0].1,
                top[1].0,
                top[1].1,
                top[2].0,
                top[2].1,
                top[3].0,
                top[3].1,
                top[4].0,
                top[4].1,
                cycles
            );
        }
        let digest = digest.finish();
        match first_digest {
            None => {
                first_digest = Some(digest);
                stack_after_first = vitae_board::stack::used_bytes();
            }
            Some(first) if first != digest => mismatched_passes += 1,
            Some(_) => {}
        }
    }
    if embedded::REPEAT > 1 {
        let stack_after_all = vitae_board::stack::used_bytes();
        defmt::println!(
            "REPEAT passes={=usize} images={=usize} identical={=bool} mismatched_passes={=usize} logits_crc={=u32:#010x} stack_after_first={=usize} stack_after_all={=usize}",
            embedded::REPEAT,
            count,
            mismatched_passes == 0,
            mismatched_passes,
            first_digest.unwrap_or(0),
            stack_after_first,
            stack_after_all
        );
        if mismatched_passes > 0 {
            fail("soak", "logits differ between passes");
        }
        if stack_after_all > stack_after_first {
            fail(
                "soak",
                "the stack high-water mark grew after the first pass",
            );
        }
    }
    // The stack high-water mark of the inferences, read before the report below adds its own.
    let stack_used = vitae_board::stack::used_bytes();
    // Arena bytes in use per op, from the plan (outside the measured regions).
    let mut lifetimes: heapless::Vec<Option<(usize, usize)>, MAX_TENSORS> = heapless::Vec::new();
    for t in 0..model.tensor_count().min(MAX_TENSORS) {
        let _ = lifetimes.push(model.tensor_lifetime(t as u16));
    }
    for i in 0..model.op_count() {
        let op = match model.op(i) {
            Ok(op) => op,
            Err(e) => fail("report", e),
        };
        defmt::println!(
            "OP {=usize} {=str} {=str} macs={=u32} cycles={=u32} live_bytes={=usize}",
            i,
            op.kind.name(),
            op.name,
            op.desc.macs,
            timer.cycles.get(i).copied().unwrap_or(0),
            model.live_arena_bytes(i, &lifetimes)
        );
    }
    // Weights and tables the ops took per inference, by region (each op's tables once).
    if stage.is_none() {
        traffic.in_place = (0..model.op_count())
            .map(|i| model.op_data_bytes(i).unwrap_or(0) as u64)
            .sum();
    }
    defmt::println!(
        "WEIGHTS in_place={=u64} in_place_region={=str} staged={=u64} staged_ops={=u32} stage_region={=str}",
        traffic.in_place,
        embedded::BLOB_REGION,
        traffic.staged,
        traffic.staged_ops,
        embedded::STAGE_REGION
    );
    for (i, region) in embedded::ARENA_REGIONS.iter().enumerate() {
        defmt::println!(
            "ARENA_PART {=usize} region={=str} bytes={=usize}",
            i,
            region,
            model.arena_part(i).len()
        );
    }
    defmt::println!(
        "MEMORY arena={=usize} lower_bound={=u32} stack_used={=usize} stack_size={=usize}",
        model.arena_len(),
        model.header().arena_lower_bound,
        stack_used,
        vitae_board::stack::size_bytes()
    );
    defmt::println!("DONE images={=usize}", count);
    vitae_board::exit(true)
}
