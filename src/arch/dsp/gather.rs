//! DSP copies of the im2col: runs of bytes, and int8 values widened to the int16 column layout
//! the SMLAD kernel reads.

use super::gemm::BLOCK_WORDS;
use super::{sxtb16, sxtb16_ror8};

/// Copies `min(dst.len(), src.len())` bytes: words, then the last bytes, with no call (the
/// library `memcpy` costs about 40 instructions for the short runs of an im2col).
#[inline]
pub fn copy(dst: &mut [i8], src: &[i8]) {
    let n = dst.len().min(src.len());
    #[cfg(all(target_arch = "arm", vitae_dsp))]
    {
        if n == 0 {
            return;
        }
        // SAFETY: reads the first n bytes of `src` and writes the first n bytes of `dst` (n/4
        // words, then n%4 bytes), both in bounds; `dst` is a unique borrow. Single-register
        // LDR/STR allow unaligned addresses on Armv7E-M.
        unsafe {
            core::arch::asm!(
                "lsrs r3, r2, #2",
                "beq 2f",
                "1:",
                "ldr r12, [r1], #4",
                "str r12, [r0], #4",
                "subs r3, #1",
                "bne 1b",
                "2:",
                "ands r2, #3",
                "beq 4f",
                "3:",
                "ldrb r12, [r1], #1",
                "strb r12, [r0], #1",
                "subs r2, #1",
                "bne 3b",
                "4:",
                inout("r0") dst.as_mut_ptr() => _,
                inout("r1") src.as_ptr() => _,
                inout("r2") n => _,
                out("r3") _,
                out("r12") _,
                options(nostack),
            );
        }
    }
    #[cfg(not(all(target_arch = "arm", vitae_dsp)))]
    dst[..n].copy_from_slice(&src[..n]);
}

/// Widens `src` (int8, whole words of four values) into column `col` (0..4) of a packed buffer:
/// for each word, `sxtb16` → `packed[8b + col]`, `sxtb16 ror 8` → `packed[8b + 4 + col]`, for
/// `b < min(src.len() / 4, packed.len() / 8)`.
///
/// An LDM of four words and two SXTB16 and two STR per word: under 5 instructions per four
/// values.
#[inline]
pub fn widen(src: &[i8], col: usize, packed: &mut [u32]) {
    let col = col % 4;
    let n = (src.len() / 4).min(packed.len() / BLOCK_WORDS);
    #[cfg(all(target_arch = "arm", vitae_dsp))]
    {
        if n == 0 {
            return;
        }
        let quads = n / 4;
        let rest = n % 4;
        // LDM needs a word-aligned source; the staging rows are (`i8` slices from the scratch
        // carver, aligned by the caller), but check rather than trust.
        if !(src.as_ptr() as usize).is_multiple_of(4) {
            for (b4, blk) in src
                .chunks_exact(4)
                .zip(packed.chunks_exact_mut(BLOCK_WORDS))
            {
                let raw = u32::from_le_bytes([b4[0] as u8, b4[1] as u8, b4[2] as u8, b4[3] as u8]);
                blk[col] = sxtb16(raw);
                blk[4 + col] = sxtb16_ror8(raw);
            }
            return;
        }
        // SAFETY: reads 4·n bytes of `src` (word-aligned, checked above) and writes words
        // 8b + col and 8b + 4 + col of `packed` for b < n, all in bounds by the choice of n;
        // `packed` is a unique, word-aligned borrow. Clobbers only declared registers.
        unsafe {
            core::arch::asm!(
                "cmp r2, #0",
                "beq 2f",
                "1:",
                "ldm r0!, {{r4, r5, r8, r9}}",
                "sxtb16 r12, r4",
                "str r12, [r1], #16",
                "sxtb16 r12, r4, ror #8",
                "str r12, [r1], #16",
                "sxtb16 r12, r5",
                "str r12, [r1], #16",
                "sxtb16 r12, r5, ror #8",
                "str r12, [r1], #16",
                "sxtb16 r12, r8",
                "str r12, [r1], #16",
                "sxtb16 r12, r8, ror #8",
                "str r12, [r1], #16",
                "sxtb16 r12, r9",
                "str r12, [r1], #16",
                "sxtb16 r12, r9, ror #8",
                "str r12, [r1], #16",
                "subs r2, #1",
                "bne 1b",
                "2:",
                "cmp r3, #0",
                "beq 4f",
                "3:",
                "ldr r4, [r0], #4",
                "sxtb16 r12, r4",
                "str r12, [r1], #16",
                "sxtb16 r12, r4, ror #8",
                "str r12, [r1], #16",
                "subs r3, #1",
                "bne 3b",
                "4:",
                inout("r0") src.as_ptr() => _,
                inout("r1") packed.as_mut_ptr().wrapping_add(col) => _,
                inout("r2") quads => _,
                inout("r3") rest => _,
                out("r4") _,
                out("r5") _,
                out("r8") _,
                out("r9") _,
                out("r12") _,
                options(nostack),
            );
        }
    }
    #[cfg(not(all(target_arch = "arm", vitae_dsp)))]
    for (b4, blk) in src
        .chunks_exact(4)
        .zip(packed.chunks_exact_mut(BLOCK_WORDS))
        .take(n)
    {
        let raw = u32::from_le_bytes([b4[0] as u8, b4[1] as u8, b4[2] as u8, b4[3] as u8]);
        blk[col] = sxtb16(raw);
        blk[4 + col] = sxtb16_ror8(raw);
    }
}
