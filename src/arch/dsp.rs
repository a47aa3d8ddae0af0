//! Armv7E-M DSP extension instructions (SMLAD, SXTB16) and the SMLAD matrix micro-kernel, as safe
//! functions.
//!
//! On a DSP core these are inline assembly: stable Rust has no intrinsic for SXTB16, SMLAD's is
//! unstable, and LLVM does not turn an int8 dot product into SMLAD by itself. Everywhere else (the
//! host) the same functions are plain Rust with the same semantics, so the DSP kernels' blocking and
//! data layouts are exercised by the host unit tests against the scalar reference; the assembly
//! itself is checked against the reference under QEMU (`tests/qemu`).
#![allow(unsafe_code)]

#[cfg(all(target_arch = "arm", vitae_dsp))]
use core::arch::asm;

/// `SMLAD`: `acc + lo16(a)·lo16(b) + hi16(a)·hi16(b)` with signed 16-bit halves, wrapping.
#[inline(always)]
pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    #[cfg(all(target_arch = "arm", vitae_dsp))]
    {
        let out: i32;
        // SAFETY: register-only instruction; reads no memory, writes only `out` (the Q flag it may
        // set is not read anywhere in this crate).
        unsafe {
            asm!("smlad {o}, {a}, {b}, {c}", o = lateout(reg) out, a = in(reg) a, b = in(reg) b,
                 c = in(reg) acc, options(pure, nomem, nostack));
        }
        out
    }
    #[cfg(not(all(target_arch = "arm", vitae_dsp)))]
    {
        let lo = i32::from(a as i16) * i32::from(b as i16);
        let hi = i32::from((a >> 16) as i16) * i32::from((b >> 16) as i16);
        acc.wrapping_add(lo).wrapping_add(hi)
    }
}

/// `SXTB16`: sign-extend bytes 0 and 2 of `x` into the two 16-bit halves.
#[inline(always)]
pub fn sxtb16(x: u32) -> u32 {
    #[cfg(all(target_arch = "arm", vitae_dsp))]
    {
        let out: u32;
        // SAFETY: register-only instruction, no memory access, no flags.
        unsafe {
            asm!("sxtb16 {o}, {x}", o = lateout(reg) out, x = in(reg) x,
                 options(pure, nomem, nostack, preserves_flags));
        }
        out
    }
    #[cfg(not(all(target_arch = "arm", vitae_dsp)))]
    {
        let lo = x as u8 as i8 as i16 as u16 as u32;
        let hi = (x >> 16) as u8 as i8 as i16 as u16 as u32;
        lo | hi << 16
    }
}

/// `SXTB16 …, ROR #8`: sign-extend bytes 1 and 3 of `x` into the two 16-bit halves.
#[inline(always)]
pub fn sxtb16_ror8(x: u32) -> u32 {
    #[cfg(all(target_arch = "arm", vitae_dsp))]
    {
        let out: u32;
        // SAFETY: register-only instruction, no memory access, no flags.
        unsafe {
            asm!("sxtb16 {o}, {x}, ror #8", o = lateout(reg) out, x = in(reg) x,
                 options(pure, nomem, nostack, preserves_flags));
        }
        out
    }
    #[cfg(not(all(target_arch = "arm", vitae_dsp)))]
    {
        sxtb16(x.rotate_right(8))
    }
}

/// Words per packed block of [`mac_1x4`]'s columns: 4 columns × 4 values as int16 pairs.
pub const BLOCK_WORDS: usize = 8;

/// Where value `k` of column `col` (0..4) lives in a packed column buffer: `(word, high half)`.
///
/// The layout matches what SXTB16 makes of four int8 weights `w[4b..4b+4]`: `sxtb16` gives the
/// pair `(w0, w2)`, `sxtb16 ror 8` the pair `(w1, w3)`. So block `b` holds, as int16 pairs, first
/// `(x0, x2)` of the four columns, then `(x1, x3)` of the four columns, and one `LDM` of four words
/// feeds four SMLADs.
#[inline(always)]
pub const fn packed_index(col: usize, k: usize) -> (usize, bool) {
    let r = k % 4;
    ((k / 4) * BLOCK_WORDS + (r & 1) * 4 + col, r >= 2)
}

/// One output channel against four packed columns: for `b < n`, `acc[c] += Σ_{r<4} w[4b+r] ·
/// x_c[4b+r]`, where `n = min(w.len() / 4, cols.len() / 8)` (see `packed_index` for the layout
/// of `cols`).
///
/// The int8 weights are read straight from the model (any alignment) and widened in registers;
/// the columns were widened to int16 once, when packed. Per 16 MACs: one LDR, two SXTB16, two LDM
/// and eight SMLAD, with the loop unrolled twice.
#[inline]
pub fn mac_1x4(w: &[i8], cols: &[u32], acc: [i32; 4]) -> [i32; 4] {
    let n = (w.len() / 4).min(cols.len() / BLOCK_WORDS);
    #[cfg(all(target_arch = "arm", vitae_dsp))]
    {
        if n == 0 {
            return acc;
        }
        let [mut a0, mut a1, mut a2, mut a3] = acc;
        // One block: LDR the four weights, LDM four column words, SXTB16 and four SMLAD per
        // half. r6 (reserved by Rust) holds the raw weights and is saved around the loop.
        macro_rules! block {
            () => {
                concat!(
                    "ldr r6, [r4], #4\n",
                    "ldm r5!, {{r8, r11, r12, lr}}\n",
                    "sxtb16 r10, r6\n",
                    "smlad r0, r10, r8, r0\n",
                    "smlad r1, r10, r11, r1\n",
                    "smlad r2, r10, r12, r2\n",
                    "smlad r3, r10, lr, r3\n",
                    "ldm r5!, {{r8, r11, r12, lr}}\n",
                    "sxtb16 r10, r6, ror #8\n",
                    "smlad r0, r10, r8, r0\n",
                    "smlad r1, r10, r11, r1\n",
                    "smlad r2, r10, r12, r2\n",
                    "smlad r3, r10, lr, r3\n",
                )
            };
        }
        // SAFETY: reads `4·n` bytes from `w` and `8·n` words from `cols`, both in bounds by the
        // choice of `n ≥ 1`. `w` may be unaligned: single-register LDR allows that on Armv7E-M
        // (only LDRD/LDM need alignment); `cols` is a `&[u32]`, so word-aligned for LDM. r6 is
        // saved on the stack and restored; every other register written is an operand. No
        // memory is written; the Q flag SMLAD may set is never read.
        unsafe {
            asm!(
                "push {{r6}}",
                // An odd block count runs one block first, then pairs. The flags of LSRS survive
                // the block (LDR, LDM, SXTB16 and SMLAD leave N, Z, C and V alone).
                "lsrs r9, r9, #1",
                "bcc 2f",
                block!(),
                "2:",
                "beq 4f",
                "3:",
                block!(),
                block!(),
                "subs r9, r9, #1",
                "bne 3b",
                "4:",
                "pop {{r6}}",
                inout("r0") a0,
                inout("r1") a1,
                inout("r2") a2,
                inout("r3") a3,
                inout("r4") w.as_ptr() => _,
                inout("r5") cols.as_ptr() => _,
                inout("r9") n => _,
                out("r10") _,
                out("r8") _,
                out("r11") _,
                out("r12") _,
                out("lr") _,
                options(readonly),
            );
        }
        [a0, a1, a2, a3]
    }
    #[cfg(not(all(target_arch = "arm", vitae_dsp)))]
    {
        let mut acc = acc;
        for (w4, blk) in w
            .chunks_exact(4)
            .zip(cols.chunks_exact(BLOCK_WORDS))
            .take(n)
        {
            let raw = u32::from_le_bytes([w4[0] as u8, w4[1] as u8, w4[2] as u8, w4[3] as u8]);
            let (e, o) = (sxtb16(raw), sxtb16_ror8(raw));
            for (c, a) in acc.iter_mut().enumerate() {
                *a = smlad(o, blk[4 + c], smlad(e, blk[c], *a));
            }
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulation_matches_the_instruction_definitions() {
        assert_eq!(sxtb16(0x80_7f_01_ff), 0x007f_ffff);
        assert_eq!(sxtb16_ror8(0x80_7f_01_ff), 0xff80_0001);
        // (-1)(-1) + (2)(3)
        assert_eq!(smlad(0x0002_ffff, 0x0003_ffff, 10), 10 + 1 + 6);
        assert_eq!(smlad(0x8000_8000, 0x8000_8000, 0), i32::MIN); // wraps like the instruction
    }

    #[test]
    fn mac_1x4_is_four_dot_products() {
        let k = 12;
        let w: [i8; 12] = core::array::from_fn(|i| (i as i8).wrapping_mul(37).wrapping_sub(100));
        let x: [[i8; 12]; 4] = core::array::from_fn(|c| {
            core::array::from_fn(|i| ((c * 12 + i) as i8).wrapping_mul(73))
        });
        let mut cols = [0u32; 3 * BLOCK_WORDS];
        for (c, xc) in x.iter().enumerate() {
            for (kk, &v) in xc.iter().enumerate() {
                let (word, high) = packed_index(c, kk);
                let v = v as i16 as u16 as u32;
                cols[word] |= if high { v << 16 } else { v };
            }
        }
        let got = mac_1x4(&w, &cols, [1, 2, 3, 4]);
        for c in 0..4 {
            let want: i32 =
                (0..k).map(|i| w[i] as i32 * x[c][i] as i32).sum::<i32>() + 1 + c as i32;
            assert_eq!(got[c], want);
        }
    }
}
