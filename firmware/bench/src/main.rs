//! Kernel benchmark: each case runs the optimized kernel of this build and the scalar reference,
//! each call alone between two instruction-count markers, then checks that both wrote the same
//! bytes (outside the measured regions).
//!
//! Protocol (read by `cargo xtask bench kernels`): after each measured region one line
//! `BENCH <case> <impl> <macs> <scratch bytes> <shape>`, in region order; `CHECK <case> ok` or
//! `CHECK <case> MISMATCH …` after both runs of a case; `DONE ok` or `DONE failed` at the end. A
//! mismatch makes the run exit with failure.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use vitae_board::profile;
use vitae_edge::kernels::attention::{self, AttentionS8};
use vitae_edge::kernels::cases::{self, bench::Case, bench::Kernel};
use vitae_edge::kernels::conv::{self, ConvGeometry, ConvS8, OutputSlice};
use vitae_edge::kernels::conv_s4::{self, ConvS4};
use vitae_edge::kernels::linear::{self, LinearS8};
use vitae_edge::kernels::linear_s4::{self, LinearS4};
use vitae_edge::quant::Requant;

mod arena {
    //! The one place that hands out the static buffers the cases carve their tensors from.
    #![allow(unsafe_code)]
    use core::sync::atomic::{AtomicBool, Ordering};

    /// Tensor bytes: the largest case (e: 32 KiB input, 48 KiB weights, two 96 KiB outputs).
    pub const LEN: usize = 288 * 1024;
    /// Scratch bytes: more than any kernel here asks for (the check fails otherwise).
    pub const SCRATCH: usize = 32 * 1024;

    #[repr(C, align(16))]
    pub struct Buffers {
        pub tensors: [i8; LEN],
        pub scratch: [u8; SCRATCH],
    }

    // In the boards' arena region (NOLOAD; on the M55 board the 4 MiB SRAM2, since the tightly
    // coupled RAM is too small for case e).
    #[unsafe(link_section = ".vitae_arena")]
    static mut BUFFERS: Buffers = Buffers {
        tensors: [0; LEN],
        scratch: [0; SCRATCH],
    };
    static TAKEN: AtomicBool = AtomicBool::new(false);

    /// The buffers, once; `None` if already taken.
    pub fn take() -> Option<&'static mut Buffers> {
        if TAKEN.swap(true, Ordering::Relaxed) {
            return None;
        }
        // SAFETY: `TAKEN` makes this the only reference ever created to `BUFFERS`, and nothing
        // else names it. Any bit pattern (the NOLOAD section is not initialized) is a valid
        // `i8`/`u8`.
        Some(unsafe { &mut *core::ptr::addr_of_mut!(BUFFERS) })
    }
}

#[cortex_m_rt::entry]
fn main() -> ! {
    vitae_board::init();
    defmt::println!(
        "kernel benchmark on {=str} ({=str})",
        vitae_board::BOARD,
        vitae_board::CORE
    );
    let Some(buffers) = arena::take() else {
        defmt::println!("DONE failed (arena taken twice)");
        vitae_board::exit(false)
    };
    let (mem, scratch) = (&mut buffers.tensors[..], &mut buffers.scratch[..]);
    let mut ok = true;
    // The shapes reach the kernels as opaque values, as a blob's do at run time: the compiler must
    // not specialize a kernel for a constant shape (it did, for the reference kernels especially,
    // when each case was a call with literal shapes).
    for case in core::hint::black_box(&cases::bench::CASES) {
        ok &= match case.kernel {
            Kernel::Conv(g) => conv_case(mem, case, g, scratch),
            Kernel::ConvS4(g) => conv_s4_case(mem, case, g, scratch),
            Kernel::Linear(t, k, n) => linear_case(mem, case, (t, k, n), scratch),
            Kernel::LinearS4(t, k, n) => linear_s4_case(mem, case, (t, k, n), scratch),
            Kernel::Attention(t, h, d) => attention_case(mem, case, (t, h, d), scratch),
        };
    }
    defmt::println!("DONE {=str}", if ok { "ok" } else { "failed" });
    vitae_board::exit(ok)
}

const IN_ZP: i32 = cases::bench::ZERO_POINTS.0;
const OUT_ZP: i32 = cases::bench::ZERO_POINTS.1;

/// Splits `n` elements off the front of `*mem` (an empty slice when the arena is too small,
/// which then fails the kernel's length check and the case).
fn carve<'a>(mem: &mut &'a mut [i8], n: usize) -> &'a mut [i8] {
    let n = n.min(mem.len());
    let (head, tail) = core::mem::take(mem).split_at_mut(n);
    *mem = tail;
    head
}

fn conv_case(mem: &mut [i8], c: &Case, g: ConvGeometry, scratch: &mut [u8]) -> bool {
    let (case, shape) = (c.name, c.shape);
    let mut rng = c.rng();
    let mut mem = mem;
    let input = carve(&mut mem, g.in_h * g.in_w * g.in_c);
    let weights = carve(&mut mem, g.weight_len());
    let n_out = g.out_h * g.out_w * g.out_c;
    let got = carve(&mut mem, n_out);
    let want = carve(&mut mem, n_out);
    rng.fill(input);
    rng.fill(weights);
    let mut bias = [0i32; 128];
    let mut requant = [Requant::default(); 128];
    let (bias, requant) = (&mut bias[..g.out_c], &mut requant[..g.out_c]);
    rng.bench_channels(bias, requant);
    let lut = rng.lut();
    let slice = OutputSlice {
        offset: 0,
        pixel_stride: g.out_c,
    };
    let Ok(p) = ConvS8::new(g, weights, bias, requant, IN_ZP, OUT_ZP, Some(&lut), slice) else {
        defmt::println!("CHECK {=str} MISMATCH (invalid parameters)", case);
        return false;
    };
    let need = conv::conv_s8_scratch_size(&g);
    let scratch = &mut scratch[..need.min(arena::SCRATCH)];
    let opt = measured(case, "optimized", g.macs(), need, shape, || {
        conv::conv_s8(&p, input, got, scratch)
    });
    let refr = measured(case, "reference", g.macs(), 0, shape, || {
        conv::conv_s8_reference(&p, input, want)
    });
    check(case, opt.is_ok(), refr.is_ok(), got, want)
}

fn conv_s4_case(mem: &mut [i8], c: &Case, g: ConvGeometry, scratch: &mut [u8]) -> bool {
    let (case, shape) = (c.name, c.shape);
    let mut rng = c.rng();
    let mut mem = mem;
    let input = carve(&mut mem, g.in_h * g.in_w * g.in_c);
    let k = g.kh * g.kw * g.in_c_per_group();
    let weights = carve(&mut mem, vitae_edge::kernels::s4::s4_row_bytes(k) * g.out_c);
    let n_out = g.out_h * g.out_w * g.out_c;
    let got = carve(&mut mem, n_out);
    let want = carve(&mut mem, n_out);
    rng.fill(input);
    // Random nibbles: every int4 value.
    rng.fill(weights);
    let weights: &[u8] = bytemuck::cast_slice(weights);
    let mut bias = [0i32; 128];
    let mut requant = [Requant::default(); 128];
    let (bias, requant) = (&mut bias[..g.out_c], &mut requant[..g.out_c]);
    rng.bench_channels(bias, requant);
    let lut = rng.lut();
    let slice = OutputSlice {
        offset: 0,
        pixel_stride: g.out_c,
    };
    let Ok(p) = ConvS4::new(g, weights, bias, requant, IN_ZP, OUT_ZP, Some(&lut), slice) else {
        defmt::println!("CHECK {=str} MISMATCH (invalid parameters)", case);
        return false;
    };
    let need = conv_s4::conv_s4_scratch_size(&g);
    let scratch = &mut scratch[..need.min(arena::SCRATCH)];
    let opt = measured(case, "optimized", g.macs(), need, shape, || {
        conv_s4::conv_s4(&p, input, got, scratch)
    });
    let refr = measured(case, "reference", g.macs(), 0, shape, || {
        conv_s4::conv_s4_reference(&p, input, want)
    });
    check(case, opt.is_ok(), refr.is_ok(), got, want)
}

fn linear_case(
    mem: &mut [i8],
    c: &Case,
    (tokens, k, n_out): (usize, usize, usize),
    scratch: &mut [u8],
) -> bool {
    let (case, shape) = (c.name, c.shape);
    let mut rng = c.rng();
    let mut mem = mem;
    let input = carve(&mut mem, tokens * k);
    let weights = carve(&mut mem, k * n_out);
    let got = carve(&mut mem, tokens * n_out);
    let want = carve(&mut mem, tokens * n_out);
    rng.fill(input);
    rng.fill(weights);
    let mut bias = [0i32; 512];
    let mut requant = [Requant::default(); 512];
    let (bias, requant) = (&mut bias[..n_out], &mut requant[..n_out]);
    rng.bench_channels(bias, requant);
    let lut = rng.lut();
    let p = LinearS8::new(tokens, k, n_out, weights, bias, requant, OUT_ZP, Some(&lut));
    let Ok(p) = p else {
        defmt::println!("CHECK {=str} MISMATCH (invalid parameters)", case);
        return false;
    };
    let need = linear::linear_s8_scratch_size(tokens, k, n_out);
    let scratch = &mut scratch[..need.min(arena::SCRATCH)];
    let opt = measured(case, "optimized", p.macs(), need, shape, || {
        linear::linear_s8(&p, input, got, scratch)
    });
    let refr = measured(case, "reference", p.macs(), 0, shape, || {
        linear::linear_s8_reference(&p, input, want)
    });
    check(case, opt.is_ok(), refr.is_ok(), got, want)
}

fn linear_s4_case(
    mem: &mut [i8],
    c: &Case,
    (tokens, k, n_out): (usize, usize, usize),
    scratch: &mut [u8],
) -> bool {
    let (case, shape) = (c.name, c.shape);
    let mut rng = c.rng();
    let mut mem = mem;
    let input = carve(&mut mem, tokens * k);
    let weights = carve(&mut mem, vitae_edge::kernels::s4::s4_row_bytes(k) * n_out);
    let got = carve(&mut mem, tokens * n_out);
    let want = carve(&mut mem, tokens * n_out);
    rng.fill(input);
    // Random nibbles: every int4 value.
    rng.fill(weights);
    let weights: &[u8] = bytemuck::cast_slice(weights);
    let mut bias = [0i32; 512];
    let mut requant = [Requant::default(); 512];
    let (bias, requant) = (&mut bias[..n_out], &mut requant[..n_out]);
    rng.bench_channels(bias, requant);
    let lut = rng.lut();
    let p = LinearS4::new(tokens, k, n_out, weights, bias, requant, OUT_ZP, Some(&lut));
    let Ok(p) = p else {
        defmt::println!("CHECK {=str} MISMATCH (invalid parameters)", case);
        return false;
    };
    let need = linear_s4::linear_s4_scratch_size(tokens, k, n_out);
    let scratch = &mut scratch[..need.min(arena::SCRATCH)];
    let opt = measured(case, "optimized", p.macs(), need, shape, || {
        linear_s4::linear_s4(&p, input, got, scratch)
    });
    let refr = measured(case, "reference", p.macs(), 0, shape, || {
        linear_s4::linear_s4_reference(&p, input, want)
    });
    check(case, opt.is_ok(), refr.is_ok(), got, want)
}

fn attention_case(
    mem: &mut [i8],
    c: &Case,
    (tokens, heads, dim): (usize, usize, usize),
    scratch: &mut [u8],
) -> bool {
    let (case, shape) = (c.name, c.shape);
    let mut rng = c.rng();
    let mut mem = mem;
    let n = tokens * heads * dim;
    let q = carve(&mut mem, n);
    let k = carve(&mut mem, n);
    let v = carve(&mut mem, n);
    let got = carve(&mut mem, n);
    let want = carve(&mut mem, n);
    rng.fill(q);
    rng.fill(k);
    rng.fill(v);
    let scale = cases::bench::LOGIT_SCALE;
    let Ok(p) = AttentionS8::new(tokens, heads, dim, scale, 0.8, OUT_ZP) else {
        defmt::println!("CHECK {=str} MISMATCH (invalid parameters)", case);
        return false;
    };
    let need = attention::attention_s8_scratch_size(tokens, dim);
    let need_ref = attention::attention_s8_reference_scratch_size(dim);
    let s = &mut scratch[..need.min(arena::SCRATCH)];
    let opt = measured(case, "optimized", p.macs(), need, shape, || {
        attention::attention_s8(&p, q, k, v, got, s)
    });
    let s = &mut scratch[..need_ref.min(arena::SCRATCH)];
    let refr = measured(case, "reference", p.macs(), need_ref, shape, || {
        attention::attention_s8_reference(&p, q, k, v, want, s)
    });
    check(case, opt.is_ok(), refr.is_ok(), got, want)
}

/// Runs `f` between the instruction-count markers and reports it.
fn measured<R>(
    case: &str,
    which: &str,
    macs: u64,
    scratch: usize,
    shape: &str,
    f: impl FnOnce() -> R,
) -> R {
    let mark = profile::start();
    let r = f();
    profile::stop(mark);
    defmt::println!(
        "BENCH {=str} {=str} {=u64} {=usize} {=str}",
        case,
        which,
        macs,
        scratch,
        shape
    );
    r
}

/// Logs and returns whether both implementations wrote the same bytes (and both succeeded).
fn check(case: &str, ok_opt: bool, ok_ref: bool, got: &[i8], want: &[i8]) -> bool {
    if !ok_opt || !ok_ref {
        defmt::println!(
            "CHECK {=str} MISMATCH (kernel error: optimized ok={=bool}, reference ok={=bool})",
            case,
            ok_opt,
            ok_ref
        );
        return false;
    }
    match got.iter().zip(want).position(|(a, b)| a != b) {
        None if got.len() == want.len() => {
            defmt::println!("CHECK {=str} ok", case);
            true
        }
        None => {
            defmt::println!("CHECK {=str} MISMATCH (lengths)", case);
            false
        }
        Some(i) => {
            defmt::println!(
                "CHECK {=str} MISMATCH at {=usize}: {=i8} != {=i8}",
                case,
                i,
                got[i],
                want[i]
            );
            false
        }
    }
}
