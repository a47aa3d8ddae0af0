//! An embassy app in which a ViTAE inference shares the core: the inference task runs one op,
//! yields to the executor, runs the next; the ticker task counts every time it gets the core.
//! The MPS2/MPS3 QEMU boards have no embassy HAL, so the ticker yields instead of waiting on a
//! timer; with a HAL it would be `Timer::after_millis(1).await` and a LED toggle.
//!
//! Output: `TICKER` lines while the inference runs, then `INFERENCE ops=<n> ticks_during=<t>
//! most_ops_without_a_tick=<k>` and the top-1. embassy's run queue takes the ready tasks in
//! alternating order, so the inference may run two ops back to back: k = 2.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use embassy_executor::Spawner;
use embassy_futures::yield_now;
use vitae_board as _;
use vitae_edge::{Arena, EmbeddedModel, Input, Runner, include_model};

// In the board's blob section (DDR on the Cortex-M55 board, flash on the others): a blob may be
// larger than the flash next to the code.
const MODEL: EmbeddedModel =
    include_model!(env!("EXAMPLE_VITAE_BLOB"), link_section = ".vitae_blob");
static IMAGE: [u8; 32 * 32] = *include_bytes!(env!("EXAMPLE_VITAE_IMAGE"));

/// Times the ticker task ran.
static TICKS: AtomicU32 = AtomicU32::new(0);
/// Set by the inference task when it has finished, so the ticker stops.
static DONE: AtomicBool = AtomicBool::new(false);

#[embassy_executor::task]
async fn ticker() {
    while !DONE.load(Ordering::Relaxed) {
        let t = TICKS.fetch_add(1, Ordering::Relaxed) + 1;
        if t % 16 == 0 {
            defmt::println!("TICKER tick={=u32}", t);
        }
        yield_now().await;
    }
}

#[embassy_executor::task]
async fn inference() {
    let arena = cortex_m::singleton!(: Arena<{ MODEL.arena_len() }> = Arena::new())
        .expect("the arena is taken once");
    let model = match MODEL.parse() {
        Ok(m) => m,
        Err(e) => fail("blob", e),
    };
    let mut runner = match Runner::new(&model, arena.as_mut_slice(), Input::U8Hwc(&IMAGE)) {
        Ok(r) => r,
        Err(e) => fail("input", e),
    };
    let ticks_at_start = TICKS.load(Ordering::Relaxed);
    let (mut last_ticks, mut ops_since_tick, mut most_ops_without_a_tick) = (ticks_at_start, 0, 0);
    while !runner.is_done() {
        if let Err(e) = runner.step() {
            fail("op", e);
        }
        ops_since_tick += 1;
        yield_now().await; // the ticker (and anything else ready) may run here
        let now = TICKS.load(Ordering::Relaxed);
        if now > last_ticks {
            most_ops_without_a_tick = most_ops_without_a_tick.max(ops_since_tick);
            (last_ticks, ops_since_tick) = (now, 0);
        }
    }
    most_ops_without_a_tick = most_ops_without_a_tick.max(ops_since_tick);
    let ops = runner.op_count();
    let out = match runner.finish() {
        Ok(out) => out,
        Err(e) => fail("finish", e),
    };
    let ticks_during = TICKS.load(Ordering::Relaxed) - ticks_at_start;
    DONE.store(true, Ordering::Relaxed);
    defmt::println!(
        "INFERENCE ops={=usize} ticks_during={=u32} most_ops_without_a_tick={=u32}",
        ops,
        ticks_during,
        most_ops_without_a_tick
    );
    let [(class, logit)] = out.top_k::<1>();
    defmt::println!("top-1: class {=u16} (logit {=f32})", class, logit);
    vitae_board::exit(true)
}

fn fail(what: &str, e: impl defmt::Format) -> ! {
    defmt::println!("ERROR {=str}: {}", what, e);
    vitae_board::exit(false)
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    spawner.spawn(ticker().expect("one ticker"));
    spawner.spawn(inference().expect("one inference"));
}
