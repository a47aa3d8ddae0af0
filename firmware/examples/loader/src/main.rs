//! Models that arrive at run time (an update without reflashing): the firmware reads each blob
//! from the host over semihosting (under QEMU; RTT or a UART on a board), into a heap buffer
//! sized from the blob's 64-byte header, validates it completely, runs it on its input, and
//! frees blob and arena before the next. A corrupt blob, or one too large for the heap, gets
//! its typed error and the firmware goes on with the next.
//!
//! Input, from QEMU's working directory: `models/<i>.vblob` and `models/<i>.input` (the image
//! in the layout the blob takes: f32 little-endian NCHW, or u8 HWC), for i = 0, 1, … until a
//! blob is missing. Output, per model: `LOADED`, `LOGITS` (f32 bits) and `TOP1`, or `REFUSED`
//! with the error; then `HEAP peak=… size=… in_use_after=…`.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicUsize, Ordering};
use embedded_alloc::LlffHeap as Heap;
use semihosting::fs::File;
use semihosting::io::Read;
use vitae_board as _;
use vitae_edge::format::{self, FormatError};
use vitae_edge::{Input, Model, NoProfiler, RunError};

/// Heap bytes: room for the digits demo's int8 blob and arena (358 KB), not for its fp16 one
/// (612 KB), so the run shows both outcomes.
const HEAP_BYTES: usize = 512 * 1024;
/// Most models tried.
const MAX_MODELS: usize = 16;

#[global_allocator]
static HEAP: Heap = Heap::empty();

/// Heap high-water mark, sampled after each allocation this program makes.
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Why one model did not run.
#[derive(defmt::Format)]
enum LoadError {
    /// Reading the host's file failed.
    Io,
    /// The blob is not valid (its header, or anything `Model::parse` checks).
    Format(FormatError),
    /// Blob and arena together need more heap than is free.
    TooLarge { need: usize, free: usize },
    /// The input file does not hold one image in the layout the blob takes.
    Input { expected: usize, got: usize },
    /// The run stopped.
    Run(RunError),
}

/// 16-byte units, so a `Vec` of them is a 16-byte aligned buffer (what the blob and the arena
/// need) without an `unsafe` allocation.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(16))]
struct Block([u8; 16]);

/// A zeroed, 16-byte aligned heap buffer of `len` bytes, or `TooLarge` when the heap cannot hold
/// it (a fallible reservation: the firmware never aborts on an allocation).
fn aligned_buffer(len: usize) -> Result<Vec<Block>, LoadError> {
    let mut v = Vec::new();
    let blocks = len.div_ceil(16);
    v.try_reserve_exact(blocks)
        .map_err(|_| LoadError::TooLarge {
            need: len,
            free: HEAP.free(),
        })?;
    v.resize(blocks, Block([0; 16]));
    note_peak();
    Ok(v)
}

fn note_peak() {
    PEAK.fetch_max(HEAP.used(), Ordering::Relaxed);
}

fn path<'b>(i: usize, ext: &str, buf: &'b mut [u8; 32]) -> &'b core::ffi::CStr {
    let mut n = 0;
    for b in b"models/"
        .iter()
        .chain(&[b'0' + (i / 10) as u8, b'0' + (i % 10) as u8])
        .chain(ext.as_bytes())
    {
        buf[n] = *b;
        n += 1;
    }
    buf[n] = 0;
    core::ffi::CStr::from_bytes_with_nul(&buf[..=n]).unwrap_or(c"")
}

/// Reads the whole file at `path` into `buf`'s bytes, which must be exactly its length.
fn read_into(path: &core::ffi::CStr, buf: &mut [u8]) -> Result<(), LoadError> {
    let mut f = File::open(path).map_err(|_| LoadError::Io)?;
    f.read_exact(buf).map_err(|_| LoadError::Io)?;
    let mut probe = [0u8; 1];
    match f.read(&mut probe) {
        Ok(0) => Ok(()),
        _ => Err(LoadError::Io),
    }
}

/// Loads, validates and runs model `i`; everything it allocated is freed when it returns.
fn run_one(i: usize, header: &[u8]) -> Result<(), LoadError> {
    // The header alone sizes both buffers: nothing is allocated for a blob that is not one.
    let h = format::read_header_prefix(header).map_err(LoadError::Format)?;
    let (blob_len, arena_len) = (h.total_len as usize, h.arena_len as usize);
    let need = blob_len + arena_len;
    if need > HEAP.free() {
        return Err(LoadError::TooLarge {
            need,
            free: HEAP.free(),
        });
    }
    let mut blob = aligned_buffer(blob_len)?;
    let blob_bytes = &mut bytemuck::cast_slice_mut::<Block, u8>(&mut blob)[..blob_len];
    let mut name = [0u8; 32];
    read_into(path(i, ".vblob", &mut name), blob_bytes)?;
    let model = Model::parse(blob_bytes).map_err(LoadError::Format)?; // everything, once
    let mut arena = aligned_buffer(arena_len)?;
    let arena_bytes = bytemuck::cast_slice_mut::<Block, u8>(&mut arena);
    let values = model.input_values();
    let input_len = model.input_bytes();
    let mut input = aligned_buffer(input_len)?;
    let input_bytes = &mut bytemuck::cast_slice_mut::<Block, u8>(&mut input)[..input_len];
    read_into(path(i, ".input", &mut name), input_bytes).map_err(|_| LoadError::Input {
        expected: input_len,
        got: 0,
    })?;
    let image = match model.image_layout() {
        vitae_edge::ImageLayout::U8Hwc => Input::U8Hwc(input_bytes),
        _ => Input::F32Nchw(&bytemuck::cast_slice::<u8, f32>(input_bytes)[..values]),
    };
    defmt::println!(
        "LOADED {=usize} name={=str} blob={=usize} arena={=usize} heap_used={=usize}",
        i,
        model.name(),
        blob_len,
        arena_len,
        HEAP.used()
    );
    let out =
        vitae_edge::run(&model, arena_bytes, image, &mut NoProfiler).map_err(LoadError::Run)?;
    let mut bits = [0u32; 64];
    for (c, b) in bits.iter_mut().enumerate().take(out.len()) {
        *b = out.logit(c).to_bits();
    }
    defmt::println!("LOGITS {=usize} {:x}", i, &bits[..out.len().min(64)]);
    let [(class, logit)] = out.top_k::<1>();
    defmt::println!("TOP1 {=usize} {=u16} {=f32}", i, class, logit);
    Ok(())
}

/// The heap's memory: a NOLOAD static in the board's arena region (no flash, no zeroing).
#[unsafe(link_section = ".vitae_arena")]
static mut HEAP_MEM: [MaybeUninit<u8>; HEAP_BYTES] = [MaybeUninit::uninit(); HEAP_BYTES];

#[cortex_m_rt::entry]
fn main() -> ! {
    // SAFETY: called once, before any allocation, with memory nothing else uses (only its
    // address is taken, here).
    unsafe { HEAP.init(&raw mut HEAP_MEM as usize, HEAP_BYTES) }

    let mut ran = 0usize;
    let mut refused = 0usize;
    for i in 0..MAX_MODELS {
        let mut name = [0u8; 32];
        let Ok(mut file) = File::open(path(i, ".vblob", &mut name)) else {
            break;
        };
        let mut header = [0u8; format::HEADER_LEN];
        // A file shorter than a header is refused by the header reader itself.
        let mut got = 0;
        while got < header.len() {
            match file.read(&mut header[got..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        let result = run_one(i, &header[..got]);
        drop(file);
        match result {
            Ok(()) => ran += 1,
            Err(e) => {
                refused += 1;
                defmt::println!("REFUSED {=usize} {}", i, e);
            }
        }
        defmt::println!("FREED {=usize} heap_used={=usize}", i, HEAP.used());
    }
    let peak = PEAK.load(Ordering::Relaxed);
    defmt::println!(
        "HEAP peak={=usize} size={=usize} in_use_after={=usize} ran={=usize} refused={=usize}",
        peak,
        HEAP_BYTES,
        HEAP.used(),
        ran,
        refused
    );
    vitae_board::exit(ran > 0)
}
