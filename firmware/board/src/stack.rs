//! Stack high-water mark. cortex-m-rt's `paint-stack` fills the whole stack region with
//! `STACK_PAINT_VALUE` before `main`; the lowest overwritten word marks the deepest use.
//!
//! The stack lives in its own region below `.data`/`.bss` (see `boards/*/memory.x`), so an
//! overflow runs off the bottom of RAM and faults instead of corrupting statics; this module only
//! measures.
#![allow(unsafe_code)]

use cortex_m_rt::STACK_PAINT_VALUE;

unsafe extern "C" {
    static _stack_end: u32;
    static _stack_start: u32;
}

fn bottom() -> usize {
    core::ptr::addr_of!(_stack_end) as usize
}

fn top() -> usize {
    core::ptr::addr_of!(_stack_start) as usize
}

/// Size of the stack region in bytes.
pub fn size_bytes() -> usize {
    top() - bottom()
}

/// Bytes of stack used since reset (the high-water mark).
pub fn used_bytes() -> usize {
    let (mut p, top) = (bottom(), top());
    while p < top {
        // SAFETY: reads an aligned word inside the stack region that memory.x defines (mapped RAM);
        // the words below the deepest use are not live, the others are only read.
        if unsafe { core::ptr::read_volatile(p as *const u32) } != STACK_PAINT_VALUE {
            break;
        }
        p += 4;
    }
    top - p
}
