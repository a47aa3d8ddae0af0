//! The SMLAD matrix micro-kernel: int16-widened columns in blocks of four, one weight row at a
//! time, and the requantization of a column of accumulators. Twins of `kernels::gemm`'s DSP
//! micro-kernel.

#[cfg(all(target_arch = "arm", vitae_dsp))]
use core::arch::asm;

// The host twins are written with the instruction emulations; the DSP build uses assembly.
#[cfg(not(all(target_arch = "arm", vitae_dsp)))]
use super::{smlad, sxtb16, sxtb16_ror8};

/// Words per packed block of [`mac_1x4`]'s columns: 4 columns × 4 values as int16 pairs.
pub const BLOCK_WORDS: usize = 8;

/// Rows of at most this many whole blocks (k < 164) run [`panel_1x4`]'s unrolled walk: a jump
/// into a straight run of blocks instead of a counted loop (no counter, no taken branch per two
/// blocks), which is what a short-k row (the models' 24..80, and 147 in a first PRM over an RGB
/// image) spends much of its overhead on. 2 KiB of code.
#[cfg(all(target_arch = "arm", vitae_dsp))]
const UNROLLED_BLOCKS: usize = 40;

/// Bytes of code of one block of [`panel_1x4`]: 13 instructions of 32 bits.
#[cfg(all(target_arch = "arm", vitae_dsp))]
const BLOCK_CODE_BYTES: usize = 52;

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

/// A panel of [`mac_1x4`] calls in one, tail included: for each row `r < nrows` of `w` (row `r` is
/// `w[r·stride..][..k]`), `tile[4r + c] = bias[r] + Σ_{i<k} w_r[i] · x_c[i]` for the four packed
/// columns. Returns false (nothing written) when `k < 4` (the tail trick below needs a whole
/// word) or a slice is too short.
///
/// The last `k % 4` weights of a row are the top bytes of the (unaligned) word ending at the row's
/// end, shifted down: one more block of SMLADs against the zero-padded columns. With the channel
/// loop inside the assembly, a row costs about 20 instructions besides its blocks (and 17 for the
/// tail), against about 100 for a Rust loop around [`mac_1x4`]; rows of up to 40 blocks jump into
/// an unrolled run of blocks, longer ones loop over pairs of blocks (one more instruction per
/// block).
#[inline]
pub fn panel_1x4(
    w: &[i8],
    k: usize,
    stride: usize,
    cols: &[u32],
    bias: &[i32],
    tile: &mut [i32],
    nrows: usize,
) -> bool {
    let blocks = k.div_ceil(4);
    let rows_in_w = if w.len() < k || stride == 0 {
        0
    } else {
        (w.len() - k) / stride + 1
    };
    if k < 4
        || nrows > rows_in_w
        || nrows > bias.len()
        || 4 * nrows > tile.len()
        || cols.len() < blocks * BLOCK_WORDS
        || stride < k
    {
        return false;
    }
    if nrows == 0 {
        return true;
    }
    #[cfg(all(target_arch = "arm", vitae_dsp))]
    {
        let tail = k % 4;
        let blocks = k / 4;
        let unrolled = blocks <= UNROLLED_BLOCKS;
        // Loop state in memory (r7 points here): bias, columns, full blocks (unrolled: their
        // bytes of code, then the entry address: that many bytes before the run's end), tail
        // shift, tail offset, row advance, tile, rows left.
        let mut frame: [usize; 8] = [
            bias.as_ptr() as usize,
            cols.as_ptr() as usize,
            if unrolled {
                blocks * BLOCK_CODE_BYTES
            } else {
                blocks
            },
            if tail == 0 { 0 } else { 8 * (4 - tail) },
            tail.wrapping_sub(4),
            stride - k,
            tile.as_mut_ptr() as usize,
            nrows,
        ];
        // One block: four weights against the four columns' eight words, 13 instructions, all
        // 32-bit encodings (BLOCK_CODE_BYTES = 52: the unrolled walk jumps into a run of them).
        macro_rules! block {
            () => {
                concat!(
                    "ldr.w r6, [r4], #4\n",
                    "ldm.w r5!, {{r8, r11, r12, lr}}\n",
                    "sxtb16 r10, r6\n",
                    "smlad r0, r10, r8, r0\n",
                    "smlad r1, r10, r11, r1\n",
                    "smlad r2, r10, r12, r2\n",
                    "smlad r3, r10, lr, r3\n",
                    "ldm.w r5!, {{r8, r11, r12, lr}}\n",
                    "sxtb16 r10, r6, ror #8\n",
                    "smlad r0, r10, r8, r0\n",
                    "smlad r1, r10, r11, r1\n",
                    "smlad r2, r10, r12, r2\n",
                    "smlad r3, r10, lr, r3\n",
                )
            };
        }
        // A row starts from its bias in all four accumulators, with r5 at the columns and r9
        // the frame's word 2.
        macro_rules! row_start {
            () => {
                concat!(
                    "1:\n",
                    "ldr r6, [r7]\n",
                    "ldr r0, [r6], #4\n",
                    "str r6, [r7]\n",
                    "mov r1, r0\n",
                    "mov r2, r0\n",
                    "mov r3, r0\n",
                    "ldrd r5, r9, [r7, #4]\n",
                )
            };
        }
        // The last `k % 4` weights, the tile row stored, the next row.
        macro_rules! row_end {
            () => {
                concat!(
                    "4:\n",
                    "ldr r6, [r7, #12]\n",
                    "cbz r6, 5f\n",
                    "ldr r10, [r7, #16]\n",
                    "ldr r8, [r4, r10]\n",
                    "add r4, r10\n",
                    "adds r4, #4\n",
                    "lsr.w r6, r8, r6\n",
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
                    "5:\n",
                    "ldr r6, [r7, #20]\n",
                    "add r4, r6\n",
                    "ldr r6, [r7, #24]\n",
                    "stm r6!, {{r0, r1, r2, r3}}\n",
                    "str r6, [r7, #24]\n",
                    "ldr r6, [r7, #28]\n",
                    "subs r6, #1\n",
                    "str r6, [r7, #28]\n",
                    "bne 1b\n",
                )
            };
        }
        // SAFETY: row r reads w[r·stride..][..k] (4·(k/4) bytes by the blocks, then the word at
        // k − 4, inside the row since k ≥ 4), all inside `w` since nrows ≤ rows_in_w; per row it
        // reads ceil(k/4)·8 words of `cols` (checked) and one bias (nrows ≤ bias.len()), and
        // writes tile[4r..4r+4] (4·nrows ≤ tile.len()). Single-register LDR allows unaligned
        // weights; `cols`, `bias`, `tile` and `frame` are word-aligned. `tile` and `frame` are
        // unique borrows. r6 and r7 are saved on the stack and restored; every other register
        // written is declared. The Q flag SMLAD may set is never read. The unrolled walk jumps
        // to the entry computed from its own label (`adr`, Thumb bit set for BX), which lies
        // `blocks` whole blocks before the row's end: inside the run, since blocks ≤ 40.
        unsafe {
            if unrolled {
                core::arch::asm!(
                    "push {{r6, r7}}",
                    "mov r7, r1",
                    "adr.w r9, 4f",
                    "ldr r6, [r7, #8]",
                    "sub.w r9, r9, r6",
                    "orr r9, r9, #1",
                    "str r9, [r7, #8]",
                    row_start!(),
                    "bx r9",
                    block!(), block!(), block!(), block!(), block!(), block!(), block!(), block!(),
                    block!(), block!(), block!(), block!(), block!(), block!(), block!(), block!(),
                    block!(), block!(), block!(), block!(), block!(), block!(), block!(), block!(),
                    block!(), block!(), block!(), block!(), block!(), block!(), block!(), block!(),
                    block!(), block!(), block!(), block!(), block!(), block!(), block!(), block!(),
                    row_end!(),
                    "pop {{r6, r7}}",
                    inout("r1") frame.as_mut_ptr() => _,
                    inout("r4") w.as_ptr() => _,
                    out("r0") _,
                    out("r2") _,
                    out("r3") _,
                    out("r5") _,
                    out("r8") _,
                    out("r9") _,
                    out("r10") _,
                    out("r11") _,
                    out("r12") _,
                    out("lr") _,
                );
            } else {
                core::arch::asm!(
                    "push {{r6, r7}}",
                    "mov r7, r1",
                    row_start!(),
                    // An odd block count runs one block first, then pairs; the flags of LSRS
                    // survive the block (LDR, LDM, SXTB16 and SMLAD leave N, Z, C and V alone).
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
                    row_end!(),
                    "pop {{r6, r7}}",
                    inout("r1") frame.as_mut_ptr() => _,
                    inout("r4") w.as_ptr() => _,
                    out("r0") _,
                    out("r2") _,
                    out("r3") _,
                    out("r5") _,
                    out("r8") _,
                    out("r9") _,
                    out("r10") _,
                    out("r11") _,
                    out("r12") _,
                    out("lr") _,
                );
            }
        }
    }
    #[cfg(not(all(target_arch = "arm", vitae_dsp)))]
    for r in 0..nrows {
        let row = &w[r * stride..][..k];
        let mut acc = [bias[r]; 4];
        acc = mac_1x4(row, cols, acc);
        let k4 = k / 4 * 4;
        if k4 < k {
            // The same zero-padded word the assembly builds.
            let word = u32::from_le_bytes([
                row[k - 4] as u8,
                row[k - 3] as u8,
                row[k - 2] as u8,
                row[k - 1] as u8,
            ]) >> (8 * (4 - k % 4));
            let (e, o) = (sxtb16(word), sxtb16_ror8(word));
            let blk = &cols[k4 / 4 * BLOCK_WORDS..][..BLOCK_WORDS];
            for (c, a) in acc.iter_mut().enumerate() {
                *a = smlad(o, blk[4 + c], smlad(e, blk[c], *a));
            }
        }
        tile[4 * r..4 * r + 4].copy_from_slice(&acc);
    }
    true
}

/// [`requant_col`] for the four columns of a full tile at once: row `i` of the tile
/// (`tile[4i..4i + 4]`) goes to `out[i]`, `out[stride + i]`, `out[2·stride + i]` and
/// `out[3·stride + i]`, for `i < n`. Returns `false` (and writes nothing) unless
/// `n ≤ requant.len()`, the tile holds `4n` words, the output columns do not overlap
/// (`stride ≥ n`) and `out` holds them. The same caller condition as [`requant_col`] (the fast
/// channels only).
///
/// Each row loads its multiplier and shift once for the four outputs and its accumulators with
/// one LDM: about 33 instructions (37 with the table) for four outputs, against 48 (52) in four
/// [`requant_col`] calls.
#[inline]
pub fn requant_block4(
    tile: &[i32],
    requant: &[[i32; 2]],
    zp: i32,
    lut: Option<&[i8; 256]>,
    out: &mut [i8],
    stride: usize,
    n: usize,
) -> bool {
    if n == 0
        || n > requant.len()
        || tile.len() < 4 * n
        || stride < n
        || stride
            .checked_mul(3)
            .and_then(|s| s.checked_add(n))
            .is_none_or(|end| end > out.len())
    {
        return false;
    }
    #[cfg(all(target_arch = "arm", vitae_dsp))]
    {
        // r0 tile, r1 requant pairs, r2 output (column 0, row i), r3 rows left, r4 zero point,
        // r5 stride, lr 2·stride, r12 the table's middle; r6–r9 the row's four accumulators,
        // r10 its multiplier, r11 its shift.
        macro_rules! body {
            ($($lut:literal)*) => {
                concat!(
                    "push {{r6, r7}}\n",
                    "1:\n",
                    "ldm r0!, {{r6, r7, r8, r9}}\n",
                    "ldrd r10, r11, [r1], #8\n",
                    "mvn r11, r11\n",
                    "subs r11, #1\n",
                    "smmul r6, r6, r10\n",
                    "asr.w r6, r6, r11\n",
                    "adds r6, #1\n",
                    "add.w r6, r4, r6, asr #1\n",
                    "ssat r6, #8, r6\n",
                    "smmul r7, r7, r10\n",
                    "asr.w r7, r7, r11\n",
                    "adds r7, #1\n",
                    "add.w r7, r4, r7, asr #1\n",
                    "ssat r7, #8, r7\n",
                    "smmul r8, r8, r10\n",
                    "asr.w r8, r8, r11\n",
                    "adds r8, #1\n",
                    "add.w r8, r4, r8, asr #1\n",
                    "ssat r8, #8, r8\n",
                    "smmul r9, r9, r10\n",
                    "asr.w r9, r9, r11\n",
                    "adds r9, #1\n",
                    "add.w r9, r4, r9, asr #1\n",
                    "ssat r9, #8, r9\n",
                    $($lut,)*
                    "strb r6, [r2]\n",
                    "strb r7, [r2, r5]\n",
                    "strb r8, [r2, lr]\n",
                    "add.w r6, r2, lr\n",
                    "strb r9, [r6, r5]\n",
                    "adds r2, #1\n",
                    "subs r3, #1\n",
                    "bne 1b\n",
                    "pop {{r6, r7}}\n",
                )
            };
        }
        match lut {
            Some(t) => {
                // SAFETY: for i < n reads tile[4i..4i + 4] (4n ≤ tile.len()) and requant[i]
                // (n ≤ requant.len()), writes out[c·stride + i] for c < 4 (3·stride + n ≤
                // out.len(), checked above); table reads at `t + 128 + q`, q ∈ [−128, 127] after
                // SSAT, inside the 256-byte table. `out` is a unique borrow; word loads are
                // aligned (`i32` slices). r6 and r7 are saved and restored; every other register
                // written is declared.
                unsafe {
                    core::arch::asm!(
                        body!(
                            "ldrsb r6, [r12, r6]\n"
                            "ldrsb r7, [r12, r7]\n"
                            "ldrsb r8, [r12, r8]\n"
                            "ldrsb r9, [r12, r9]\n"
                        ),
                        inout("r0") tile.as_ptr() => _,
                        inout("r1") requant.as_ptr() => _,
                        inout("r2") out.as_mut_ptr() => _,
                        inout("r3") n => _,
                        in("r4") zp,
                        in("r5") stride,
                        in("lr") 2 * stride,
                        in("r12") t.as_ptr().wrapping_add(128),
                        out("r8") _,
                        out("r9") _,
                        out("r10") _,
                        out("r11") _,
                    );
                }
            }
            None => {
                // SAFETY: as above, without the table.
                unsafe {
                    core::arch::asm!(
                        body!(),
                        inout("r0") tile.as_ptr() => _,
                        inout("r1") requant.as_ptr() => _,
                        inout("r2") out.as_mut_ptr() => _,
                        inout("r3") n => _,
                        in("r4") zp,
                        in("r5") stride,
                        in("lr") 2 * stride,
                        out("r8") _,
                        out("r9") _,
                        out("r10") _,
                        out("r11") _,
                    );
                }
            }
        }
    }
    #[cfg(not(all(target_arch = "arm", vitae_dsp)))]
    for c in 0..4 {
        requant_col(&tile[c..], requant, zp, lut, &mut out[c * stride..][..n]);
    }
    true
}

/// The output stage for one column of a `[row][column]` accumulator tile (four words per row):
/// `out[i] = act(saturate((((acc[4i]·M_i) >> 32) >> sh_i) + 1 >> 1) + zp))` with
/// `sh_i = −2 − shift_i`, for `i < min(out.len(), requant.len(), ceil(acc.len() / 4))`.
///
/// Equal to `crate::quant::requantize` + zero point + saturation only when every channel has
/// `shift ≤ −2` or a zero multiplier (see `kernels::gemm::OutQuant::apply`); the caller checks
/// that. `requant` is read as `[multiplier, shift]` pairs, `lut` is the activation table or
/// `None`. Per output: SMMUL (the product's high word), the shift, `(x + 1) >> 1` folded into the
/// zero-point add, SSAT, one LDRSB from the table (indexed by the signed value from its middle),
/// STRB: about 13 instructions.
#[inline]
pub fn requant_col(
    acc: &[i32],
    requant: &[[i32; 2]],
    zp: i32,
    lut: Option<&[i8; 256]>,
    out: &mut [i8],
) {
    let n = out.len().min(requant.len()).min(acc.len().div_ceil(4));
    #[cfg(all(target_arch = "arm", vitae_dsp))]
    {
        if n == 0 {
            return;
        }
        macro_rules! body {
            ($lut:literal) => {
                concat!(
                    "1:\n",
                    "ldr r12, [r0], #16\n",
                    "ldrd r8, r9, [r1], #8\n",
                    "smmul r12, r12, r8\n",
                    "mvn r9, r9\n",
                    "subs r9, #1\n",
                    "asr.w r12, r12, r9\n",
                    "adds r12, #1\n",
                    "add.w r12, r4, r12, asr #1\n",
                    "ssat r12, #8, r12\n",
                    $lut,
                    "strb r12, [r2], #1\n",
                    "subs r3, #1\n",
                    "bne 1b\n",
                )
            };
        }
        match lut {
            Some(t) => {
                // SAFETY: reads acc[4i] (4i < acc.len() since i < ceil(acc.len() / 4)) and
                // requant[i], writes out[i], for i < n, all in bounds; table reads are at
                // `t + 128 + q` with q ∈ [−128, 127] after SSAT, inside the 256-byte table.
                // `out` is a unique borrow; word loads are aligned (`i32` slices). Clobbers only
                // declared registers.
                unsafe {
                    core::arch::asm!(
                        body!("ldrsb r12, [r5, r12]\n"),
                        inout("r0") acc.as_ptr() => _,
                        inout("r1") requant.as_ptr() => _,
                        inout("r2") out.as_mut_ptr() => _,
                        inout("r3") n => _,
                        in("r4") zp,
                        in("r5") t.as_ptr().wrapping_add(128),
                        out("r8") _,
                        out("r9") _,
                        out("r12") _,
                        options(nostack),
                    );
                }
            }
            None => {
                // SAFETY: as above, without the table.
                unsafe {
                    core::arch::asm!(
                        body!(""),
                        inout("r0") acc.as_ptr() => _,
                        inout("r1") requant.as_ptr() => _,
                        inout("r2") out.as_mut_ptr() => _,
                        inout("r3") n => _,
                        in("r4") zp,
                        out("r8") _,
                        out("r9") _,
                        out("r12") _,
                        options(nostack),
                    );
                }
            }
        }
    }
    #[cfg(not(all(target_arch = "arm", vitae_dsp)))]
    for (i, o) in out[..n].iter_mut().enumerate() {
        let [m, shift] = requant[i];
        let hi = ((i64::from(acc[4 * i]) * i64::from(m)) >> 32) as i32;
        // ASR by a register uses its low byte; 32 and more give the sign (0 for the zero
        // multipliers that are the only channels with such shifts here).
        let sh = ((-2 - shift) as u32) & 0xff;
        let v = if sh >= 32 { hi >> 31 } else { hi >> sh };
        let q = (((v + 1) >> 1) + zp).clamp(-128, 127);
        *o = match lut {
            Some(t) => t[(q + 128) as usize],
            None => q as i8,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
