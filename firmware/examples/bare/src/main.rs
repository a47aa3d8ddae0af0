//! A bare cortex-m-rt app with a ViTAE in it: embed the blob, give it an arena, run, print.
#![no_std]
#![no_main]

use vitae_board as _; // your board support: memory.x, panic handler, defmt transport
use vitae_edge::{Arena, EmbeddedModel, Input, NoProfiler, include_model};

// A blob written by `vitae quantize --input u8` (here the digits demo, chosen by build.rs), and
// one 32×32 gray image as a camera would give it.
const MODEL: EmbeddedModel = include_model!(env!("EXAMPLE_VITAE_BLOB"));
static IMAGE: [u8; 32 * 32] = *include_bytes!(env!("EXAMPLE_VITAE_IMAGE"));

#[cortex_m_rt::entry]
fn main() -> ! {
    static mut ARENA: Arena<{ MODEL.arena_len() }> = Arena::new();
    let model = MODEL.parse().unwrap(); // the whole blob validated, once
    let input = Input::U8Hwc(&IMAGE);
    let out = vitae_edge::run(&model, ARENA.as_mut_slice(), input, &mut NoProfiler).unwrap();
    let [(class, logit)] = out.top_k::<1>();
    defmt::println!("top-1: class {=u16} (logit {=f32})", class, logit);
    vitae_board::exit(true)
}
