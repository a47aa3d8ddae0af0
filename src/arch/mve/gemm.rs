//! Helium matrix-product panels (VMLADAVA register tiles over pairs of weight rows and three
//! columns), the three-column block that packs, multiplies and requantizes in one call, and the
//! vectorized requantization epilogues. Twins of `kernels::gemm`'s Helium micro-kernel.

#[cfg(all(target_arch = "arm", vitae_mve))]
use core::arch::asm;

use super::gather::extent;
#[cfg(all(target_arch = "arm", vitae_mve))]
use super::gather::{gather3_unchecked, pack3_unchecked};
// The host twin of the block packs with the safe copy (the assembly calls the unchecked one).
#[cfg(not(all(target_arch = "arm", vitae_mve)))]
use super::gather::pack3_short;

/// Two rows against three columns: `acc[3r + c] += Σ_{i<k} w_r[i] · x_c[i]` over the first `k`
/// values, where `k` is limited to the shortest of the five slices.
///
/// Per 16 values of `k`: five VLDRB, six VMLADAVA and one LETP (tail-predicated, so `k` need not
/// be a multiple of 16 and nothing beyond the `k`th value is read). Six accumulators is what the
/// even general-purpose registers VMLADAVA accumulates into allow (LR counts the loop, Rust
/// reserves r6).
#[inline(always)]
pub fn mac_2x3(w: [&[i8]; 2], x: [&[i8]; 3], k: usize, acc: [i32; 6]) -> [i32; 6] {
    let k = k
        .min(w[0].len())
        .min(w[1].len())
        .min(x[0].len())
        .min(x[1].len())
        .min(x[2].len());
    #[cfg(all(target_arch = "arm", vitae_mve))]
    {
        if k == 0 {
            return acc;
        }
        let [mut a0, mut a1, mut a2, mut a3, mut a4, mut a5] = acc;
        // SAFETY: the loop runs ceil(k/16) times with tail predication on k lanes, so it reads
        // exactly the first `k` bytes of each of the five slices, all at least `k ≥ 1` long
        // (inactive lanes of the last iteration are not accessed). VLDRB has no alignment
        // requirement. Writes only operand registers, LR and q0–q3 (clobbered through the C ABI);
        // no memory is written.
        unsafe {
            asm!(
                "dlstp.8 lr, lr",
                "2:",
                "vldrb.u8 q0, [r1], #16",
                "vldrb.u8 q1, [r3], #16",
                "vldrb.u8 q2, [r5], #16",
                "vldrb.u8 q3, [r9], #16",
                "vmladava.s8 r0, q0, q2",
                "vmladava.s8 r8, q1, q2",
                "vldrb.u8 q2, [r11], #16",
                "vmladava.s8 r2, q0, q3",
                "vmladava.s8 r10, q1, q3",
                "vmladava.s8 r4, q0, q2",
                "vmladava.s8 r12, q1, q2",
                "letp lr, 2b",
                inout("r0") a0,
                inout("r2") a1,
                inout("r4") a2,
                inout("r8") a3,
                inout("r10") a4,
                inout("r12") a5,
                inout("r1") w[0].as_ptr() => _,
                inout("r3") w[1].as_ptr() => _,
                inout("r5") x[0].as_ptr() => _,
                inout("r9") x[1].as_ptr() => _,
                inout("r11") x[2].as_ptr() => _,
                inout("lr") k => _,
                clobber_abi("C"),
                options(readonly, nostack),
            );
        }
        [a0, a1, a2, a3, a4, a5]
    }
    #[cfg(not(all(target_arch = "arm", vitae_mve)))]
    {
        let mut acc = acc;
        for i in 0..k {
            for r in 0..2 {
                for c in 0..3 {
                    let p = i32::from(w[r][i]) * i32::from(x[c][i]);
                    acc[3 * r + c] = acc[3 * r + c].wrapping_add(p);
                }
            }
        }
        acc
    }
}

/// Words between the columns of the accumulator tile [`panel_2x3`] writes: 64 rows and room for
/// the pair that straddles an odd end.
pub const TILE_STRIDE: usize = 66;

/// Rows of `w` available to a panel: how many `k`-value rows, `stride` apart, fit in `len`.
fn rows_in(len: usize, k: usize, stride: usize) -> usize {
    if len < k || stride == 0 {
        0
    } else {
        (len - k) / stride + 1
    }
}

/// A panel of [`mac_2x3`] calls in one: for each pair `p < npairs` of weight rows `2p` and
/// `2p + 1` (row `r` is `w[r·stride..][..k]`) and the three columns `x[c·k..(c+1)·k]`,
/// `tile[c·TILE_STRIDE + 2p + r] = bias[2p + r] + Σ_i w_{2p+r}[i] · x_c[i]`.
///
/// `npairs` is limited to what `w`, `bias` and `tile` hold; nothing happens when `k` is 0 or `x`
/// holds fewer than `3k` values. Moving the pair loop into the assembly keeps the per-pair cost
/// (bias, pointers, stores) at 19 instructions, against about 100 for a Rust loop around
/// [`mac_2x3`].
#[inline(always)]
pub fn panel_2x3(
    w: &[i8],
    k: usize,
    stride: usize,
    x: &[i8],
    bias: &[i32],
    tile: &mut [i32],
    npairs: usize,
) {
    if k == 0 || x.len() < 3 * k || tile.len() < 2 * TILE_STRIDE {
        return;
    }
    let npairs = npairs
        .min(rows_in(w.len(), k, stride) / 2)
        .min(bias.len() / 2)
        .min((tile.len() - 2 * TILE_STRIDE) / 2);
    if npairs == 0 {
        return;
    }
    // SAFETY: the checks above are `panel_2x3_unchecked`'s contract: k ≥ 1, npairs ≥ 1, the
    // first 2·npairs rows (k bytes, `stride` apart) inside `w` (2·npairs ≤ rows_in(..)), 3k
    // bytes of `x`, 2·npairs biases, and the tile words up to 2·TILE_STRIDE + 2·npairs inside
    // `tile`, a unique borrow; `i32` slices are word-aligned.
    #[cfg(all(target_arch = "arm", vitae_mve))]
    unsafe {
        panel_2x3_unchecked(
            w.as_ptr(),
            k,
            stride,
            x.as_ptr(),
            bias.as_ptr(),
            tile.as_mut_ptr(),
            npairs,
        );
    }
    #[cfg(not(all(target_arch = "arm", vitae_mve)))]
    {
        for p in 0..npairs {
            for r in 0..2 {
                let row = &w[(2 * p + r) * stride..][..k];
                for c in 0..3 {
                    let xc = &x[c * k..][..k];
                    let dot = row.iter().zip(xc).fold(bias[2 * p + r], |a, (&wi, &xi)| {
                        a.wrapping_add(i32::from(wi) * i32::from(xi))
                    });
                    tile[c * TILE_STRIDE + 2 * p + r] = dot;
                }
            }
        }
    }
}

/// The assembly behind [`panel_2x3`] and [`Block3`]: for `k ≤ 32` the three columns stay in
/// registers (one or two vectors each, zero past `k`) for the whole panel and there is no inner
/// loop, so a pair costs 21 instructions (k ≤ 16) or 29 (k ≤ 32); longer rows run a
/// tail-predicated loop of 12 instructions per 16 values plus 19 per pair.
///
/// # Safety
///
/// `k ≥ 1` and `npairs ≥ 1`; for every pair `p < npairs` the `k` bytes at `w + (2p + r)·stride`
/// (`r` = 0, 1) are readable, as are `3k` bytes at `x` and `2·npairs` words at `bias`; the words
/// `tile[c·TILE_STRIDE + j]` for `c < 3`, `j < 2·npairs` are writable and nothing else accesses
/// them meanwhile; `bias` and `tile` are 4-byte aligned.
#[cfg(all(target_arch = "arm", vitae_mve))]
#[inline(always)]
unsafe fn panel_2x3_unchecked(
    w: *const i8,
    k: usize,
    stride: usize,
    x: *const i8,
    bias: *const i32,
    tile: *mut i32,
    npairs: usize,
) {
    if k <= 32 {
        let w0 = w;
        if k <= 16 {
            // SAFETY: (the caller's contract: rows 2p and 2p + 1, 3k column bytes, two biases and
            // six tile words per pair.) For 1 ≤ k ≤ 16 the columns are read with predication on
            // their first k lanes (the rest zeroed), the weight rows likewise, so no byte past a row
            // or column is touched. LDRD/STRD are word-aligned. Clobbers q0–q4 (declared; the
            // compiler saves q4), VPR and the declared registers.
            unsafe {
                asm!(
                    "add r0, r2, r4",
                    "add r8, r0, r4",
                    "vctp.8 r4",
                    "vpsttt",
                    "vldrbt.u8 q2, [r2]",
                    "vldrbt.u8 q3, [r0]",
                    "vldrbt.u8 q4, [r8]",
                    "1:",
                    "ldrd r0, r8, [r5], #8",
                    "vpstt",
                    "vldrbt.u8 q0, [r1]",
                    "vldrbt.u8 q1, [r3]",
                    "mov r2, r0",
                    "mov r4, r0",
                    "mov r10, r8",
                    "mov r12, r8",
                    "vmladava.s8 r0, q0, q2",
                    "vmladava.s8 r2, q0, q3",
                    "vmladava.s8 r4, q0, q4",
                    "vmladava.s8 r8, q1, q2",
                    "vmladava.s8 r10, q1, q3",
                    "vmladava.s8 r12, q1, q4",
                    "strd r2, r10, [r9, #{s1}]",
                    "strd r4, r12, [r9, #{s2}]",
                    "strd r0, r8, [r9], #8",
                    "add r1, lr",
                    "add r3, lr",
                    "subs r11, #1",
                    "bne 1b",
                    s1 = const TILE_STRIDE * 4,
                    s2 = const TILE_STRIDE * 8,
                    inout("r1") w0 => _,
                    inout("r3") w0.wrapping_add(stride) => _,
                    inout("r2") x => _,
                    inout("r4") k => _,
                    inout("r5") bias => _,
                    inout("r9") tile => _,
                    inout("r11") npairs => _,
                    in("lr") 2 * stride,
                    out("r0") _, out("r8") _, out("r10") _, out("r12") _,
                    out("q0") _, out("q1") _, out("q2") _, out("q3") _, out("q4") _,
                    options(nostack),
                );
            }
        } else {
            // SAFETY: as above for 16 < k ≤ 32: each row's and column's first 16 bytes are read
            // unpredicated (inside it, since k > 16), the remaining k − 16 under predication.
            // Clobbers q0–q7 (declared; the compiler saves q4–q7), VPR and the declared registers.
            unsafe {
                asm!(
                    "add r0, r2, r4",
                    "add r8, r0, r4",
                    "vldrb.u8 q2, [r2]",
                    "vldrb.u8 q4, [r0]",
                    "vldrb.u8 q6, [r8]",
                    "sub r4, #16",
                    "vctp.8 r4",
                    "vpsttt",
                    "vldrbt.u8 q3, [r2, #16]",
                    "vldrbt.u8 q5, [r0, #16]",
                    "vldrbt.u8 q7, [r8, #16]",
                    "1:",
                    "ldrd r0, r8, [r5], #8",
                    "vldrb.u8 q0, [r1]",
                    "vldrb.u8 q1, [r3]",
                    "mov r2, r0",
                    "mov r4, r0",
                    "mov r10, r8",
                    "mov r12, r8",
                    "vmladava.s8 r0, q0, q2",
                    "vmladava.s8 r2, q0, q4",
                    "vmladava.s8 r4, q0, q6",
                    "vmladava.s8 r8, q1, q2",
                    "vmladava.s8 r10, q1, q4",
                    "vmladava.s8 r12, q1, q6",
                    "vpstt",
                    "vldrbt.u8 q0, [r1, #16]",
                    "vldrbt.u8 q1, [r3, #16]",
                    "vmladava.s8 r0, q0, q3",
                    "vmladava.s8 r2, q0, q5",
                    "vmladava.s8 r4, q0, q7",
                    "vmladava.s8 r8, q1, q3",
                    "vmladava.s8 r10, q1, q5",
                    "vmladava.s8 r12, q1, q7",
                    "strd r2, r10, [r9, #{s1}]",
                    "strd r4, r12, [r9, #{s2}]",
                    "strd r0, r8, [r9], #8",
                    "add r1, lr",
                    "add r3, lr",
                    "subs r11, #1",
                    "bne 1b",
                    s1 = const TILE_STRIDE * 4,
                    s2 = const TILE_STRIDE * 8,
                    inout("r1") w0 => _,
                    inout("r3") w0.wrapping_add(stride) => _,
                    inout("r2") x => _,
                    inout("r4") k => _,
                    inout("r5") bias => _,
                    inout("r9") tile => _,
                    inout("r11") npairs => _,
                    in("lr") 2 * stride,
                    out("r0") _, out("r8") _, out("r10") _, out("r12") _,
                    out("q0") _, out("q1") _, out("q2") _, out("q3") _, out("q4") _,
                    out("q5") _, out("q6") _, out("q7") _,
                    options(nostack),
                );
            }
        }
    } else {
        // The loop state that does not fit the registers, in the order one LDM wants it: next
        // weight row, next bias, columns, row stride, k; then tile and pairs left (LDRD/STRD).
        let mut frame: [usize; 7] = [
            w as usize,
            bias as usize,
            x as usize,
            stride,
            k,
            tile as usize,
            npairs,
        ];
        // SAFETY: for pair p the inner loop reads the first k bytes of weight rows 2p and 2p+1,
        // of the three columns and two biases, and writes six words at tile[2p],
        // tile[TILE_STRIDE + 2p], tile[2·TILE_STRIDE + 2p] (+1): all inside what the caller
        // guarantees. It updates `frame` (a unique local); the next-row pointer it stores after
        // the last pair is never dereferenced. LDRD/STRD/LDM accesses are word-aligned. r6 and
        // r7 are saved on the stack and restored; every other register written is declared.
        unsafe {
            asm!(
                "push {{r6, r7}}",
                "mov r7, r1",
                "1:",
                "ldm r7, {{r1, r3, r5, r6, lr}}",
                "ldrd r0, r8, [r3], #8",
                "add.w r9, r1, r6, lsl #1",
                "strd r9, r3, [r7]",
                "add.w r3, r1, r6",
                "mov r2, r0",
                "mov r4, r0",
                "mov r10, r8",
                "mov r12, r8",
                "add.w r9, r5, lr",
                "add.w r11, r9, lr",
                "dlstp.8 lr, lr",
                "2:",
                "vldrb.u8 q0, [r1], #16",
                "vldrb.u8 q1, [r3], #16",
                "vldrb.u8 q2, [r5], #16",
                "vldrb.u8 q3, [r9], #16",
                "vmladava.s8 r0, q0, q2",
                "vmladava.s8 r8, q1, q2",
                "vldrb.u8 q2, [r11], #16",
                "vmladava.s8 r2, q0, q3",
                "vmladava.s8 r10, q1, q3",
                "vmladava.s8 r4, q0, q2",
                "vmladava.s8 r12, q1, q2",
                "letp lr, 2b",
                "ldrd r6, r1, [r7, #20]",
                "strd r2, r10, [r6, #{s1}]",
                "strd r4, r12, [r6, #{s2}]",
                "strd r0, r8, [r6], #8",
                "subs r1, #1",
                "strd r6, r1, [r7, #20]",
                "bne 1b",
                "pop {{r6, r7}}",
                s1 = const TILE_STRIDE * 4,
                s2 = const TILE_STRIDE * 8,
                inout("r1") frame.as_mut_ptr() => _,
                out("r4") _,
                out("r5") _,
                out("r8") _,
                out("r9") _,
                out("r10") _,
                out("r11") _,
                clobber_abi("C"),
            );
        }
    }
}

/// The int16 counterpart of [`panel_2x3`], from zero instead of a bias: for each pair `p <
/// npairs` of rows `2p`, `2p + 1` of `w` (row `r` is `w[r·stride..][..k]`) and the three columns
/// `x[c·xstride..][..k]`, `tile[c·TILE_STRIDE + 2p + r] = Σ_i w_{2p+r}[i] · x_c[i]`; eight MACs
/// per VMLADAVA.S16. Attention's probabilities (Q15) times values.
#[inline]
pub fn panel16_2x3(
    w: &[i16],
    k: usize,
    stride: usize,
    x: &[i16],
    xstride: usize,
    tile: &mut [i32],
    npairs: usize,
) {
    if k == 0 || rows_in(x.len(), k, xstride) < 3 || tile.len() < 2 * TILE_STRIDE {
        return;
    }
    let npairs = npairs
        .min(rows_in(w.len(), k, stride) / 2)
        .min((tile.len() - 2 * TILE_STRIDE) / 2);
    if npairs == 0 {
        return;
    }
    #[cfg(all(target_arch = "arm", vitae_mve))]
    {
        // Next row, k, tile, pairs left, columns, row stride and column stride in bytes.
        let mut frame: [usize; 7] = [
            w.as_ptr() as usize,
            k,
            tile.as_mut_ptr() as usize,
            npairs,
            x.as_ptr() as usize,
            2 * stride,
            2 * xstride,
        ];
        // SAFETY: for pair p the inner loop reads the first k values of rows 2p and 2p+1 of `w`
        // (2·npairs ≤ rows_in(w.len(), k, stride)) and of the three columns (rows_in(x.len(),
        // k, xstride) ≥ 3); it writes six words at tile[2p], tile[TILE_STRIDE + 2p],
        // tile[2·TILE_STRIDE + 2p] (+1), inside `tile` by the bound on npairs, and updates
        // `frame`; `tile` and `frame` are unique borrows. Halfword loads are 2-aligned (`i16`
        // slices, even byte strides); LDRD/STRD are word-aligned. r6 and r7 are saved on the
        // stack and restored; every other register written is declared.
        unsafe {
            asm!(
                "push {{r6, r7}}",
                "mov r7, r1",
                "1:",
                "movs r0, #0",
                "movs r2, #0",
                "movs r4, #0",
                "mov.w r8, #0",
                "mov.w r10, #0",
                "mov.w r12, #0",
                "ldrd r1, lr, [r7]",
                "ldr r6, [r7, #20]",
                "add r3, r1, r6",
                "add r6, r3, r6",
                "str r6, [r7]",
                "ldr r5, [r7, #16]",
                "ldr r6, [r7, #24]",
                "add r9, r5, r6",
                "add r11, r9, r6",
                "dlstp.16 lr, lr",
                "2:",
                "vldrh.u16 q0, [r1], #16",
                "vldrh.u16 q1, [r3], #16",
                "vldrh.u16 q2, [r5], #16",
                "vldrh.u16 q3, [r9], #16",
                "vmladava.s16 r0, q0, q2",
                "vmladava.s16 r8, q1, q2",
                "vldrh.u16 q2, [r11], #16",
                "vmladava.s16 r2, q0, q3",
                "vmladava.s16 r10, q1, q3",
                "vmladava.s16 r4, q0, q2",
                "vmladava.s16 r12, q1, q2",
                "letp lr, 2b",
                "ldr r6, [r7, #8]",
                "strd r0, r8, [r6]",
                "strd r2, r10, [r6, #{s1}]",
                "strd r4, r12, [r6, #{s2}]",
                "adds r6, #8",
                "str r6, [r7, #8]",
                "ldr r6, [r7, #12]",
                "subs r6, #1",
                "str r6, [r7, #12]",
                "bne 1b",
                "pop {{r6, r7}}",
                s1 = const TILE_STRIDE * 4,
                s2 = const TILE_STRIDE * 8,
                inout("r1") frame.as_mut_ptr() => _,
                out("r4") _,
                out("r5") _,
                out("r8") _,
                out("r9") _,
                out("r10") _,
                out("r11") _,
                clobber_abi("C"),
            );
        }
    }
    #[cfg(not(all(target_arch = "arm", vitae_mve)))]
    {
        for p in 0..npairs {
            for r in 0..2 {
                let row = &w[(2 * p + r) * stride..][..k];
                for c in 0..3 {
                    let xc = &x[c * xstride..][..k];
                    let dot = row.iter().zip(xc).fold(0i32, |a, (&wi, &xi)| {
                        a.wrapping_add(i32::from(wi) * i32::from(xi))
                    });
                    tile[c * TILE_STRIDE + 2 * p + r] = dot;
                }
            }
        }
    }
}

/// The vectorized output stage: `out[i] = act(saturate(((acc[i]·M_i) >> 32 >> sh_i) + 1 >> 1) +
/// zp))` with `sh_i = −2 − shift_i`, for `i < n = min(acc.len(), requant.len(), out.len())`.
///
/// Valid (equal to `crate::quant::requantize` + zero point + saturation, see
/// `kernels::gemm::OutQuant::apply`) only when every channel has `shift ≤ −2` or a zero
/// multiplier; the caller checks that. `requant` is read as `[multiplier, shift]` pairs of i32
/// (the `#[repr(C)]` layout of `quant::Requant`), `lut` is the activation table or `None`.
///
/// Per four outputs: VLDRW of the accumulators, two gathers for multipliers and shifts, VMULH
/// (high word of the product), VRSHL by `−(sh + 1)` (the rounding shift: `(x + 2^sh) >> (sh + 1)`
/// equals `((x >> sh) + 1) >> 1`), VADD of the zero point, VQSHL/VSHR by 24 (saturation to
/// int8), a byte gather from the table, VSTRB.
#[inline]
pub fn requant_row(
    acc: &[i32],
    requant: &[[i32; 2]],
    zp: i32,
    lut: Option<&[i8; 256]>,
    out: &mut [i8],
) {
    let n = acc.len().min(requant.len()).min(out.len());
    #[cfg(all(target_arch = "arm", vitae_mve))]
    {
        if n == 0 {
            return;
        }
        // Gather offsets (in words, scaled by the UXTW #2): lanes 0..4 of consecutive
        // [multiplier, shift] pairs.
        const OFFSETS: [u32; 4] = [0, 2, 4, 6];
        let rq = requant.as_ptr() as *const i32;
        match lut {
            Some(lut) => {
                // SAFETY: with tail predication on `n` 32-bit lanes, reads `n` accumulators,
                // the `n` pairs of `requant` (gathers at word offsets 2i and 2i+1 below
                // `2n`), `OFFSETS`, and table bytes at `lut + 128 + q` with `q ∈ [−128, 127]`
                // (the saturated value), i.e. inside the 256-byte table; writes `n` bytes of
                // `out`, a unique borrow. All pointers are to live slices of the lengths
                // stated; the word loads are 4-aligned (`i32` slices). Clobbers q0–q3, LR and
                // the pointer registers (declared). The narrowing store and the byte gather need
                // their base in r0–r7, hence the fixed registers.
                unsafe {
                    asm!(
                        "vldrw.u32 q3, [r5]",
                        "adds r2, r1, #4",
                        "dlstp.32 lr, lr",
                        "2:",
                        "vldrw.u32 q0, [r0], #16",
                        "vldrw.u32 q1, [r1, q3, uxtw #2]",
                        "vldrw.u32 q2, [r2, q3, uxtw #2]",
                        "adds r1, #32",
                        "adds r2, #32",
                        "vmulh.s32 q0, q0, q1",
                        "vadd.i32 q2, q2, r8",
                        "vrshl.s32 q0, q0, q2",
                        "vadd.i32 q0, q0, r9",
                        "vqshl.s32 q0, q0, #24",
                        "vshr.s32 q0, q0, #24",
                        "vldrb.u32 q1, [r4, q0]",
                        "vstrb.32 q1, [r3], #4",
                        "letp lr, 2b",
                        in("r5") OFFSETS.as_ptr(),
                        inout("r0") acc.as_ptr() => _,
                        inout("r1") rq => _,
                        out("r2") _,
                        in("r8") 1i32,
                        in("r9") zp,
                        in("r4") lut.as_ptr().wrapping_add(128),
                        inout("r3") out.as_mut_ptr() => _,
                        inout("lr") n => _,
                        out("q0") _, out("q1") _, out("q2") _, out("q3") _,
                        options(nostack),
                    );
                }
            }
            None => {
                // SAFETY: as above, without the table.
                unsafe {
                    asm!(
                        "vldrw.u32 q3, [r5]",
                        "adds r2, r1, #4",
                        "dlstp.32 lr, lr",
                        "2:",
                        "vldrw.u32 q0, [r0], #16",
                        "vldrw.u32 q1, [r1, q3, uxtw #2]",
                        "vldrw.u32 q2, [r2, q3, uxtw #2]",
                        "adds r1, #32",
                        "adds r2, #32",
                        "vmulh.s32 q0, q0, q1",
                        "vadd.i32 q2, q2, r8",
                        "vrshl.s32 q0, q0, q2",
                        "vadd.i32 q0, q0, r9",
                        "vqshl.s32 q0, q0, #24",
                        "vshr.s32 q0, q0, #24",
                        "vstrb.32 q0, [r3], #4",
                        "letp lr, 2b",
                        in("r5") OFFSETS.as_ptr(),
                        inout("r0") acc.as_ptr() => _,
                        inout("r1") rq => _,
                        out("r2") _,
                        in("r8") 1i32,
                        in("r9") zp,
                        inout("r3") out.as_mut_ptr() => _,
                        inout("lr") n => _,
                        out("q0") _, out("q1") _, out("q2") _, out("q3") _,
                        options(nostack),
                    );
                }
            }
        }
    }
    #[cfg(not(all(target_arch = "arm", vitae_mve)))]
    {
        for i in 0..n {
            let [m, shift] = requant[i];
            let hi = ((i64::from(acc[i]) * i64::from(m)) >> 32) as i32;
            // VRSHL by −(sh + 1) = shift + 1 (a left shift by 1 for zero multipliers, whose high
            // word is 0 anyway).
            let s = shift + 1;
            let v = if s >= 0 {
                hi.wrapping_shl(s as u32)
            } else {
                let n = (-s) as u32;
                ((i64::from(hi) + (1i64 << (n - 1))) >> n) as i32
            };
            let q = (v + zp).clamp(-128, 127);
            out[i] = match lut {
                Some(t) => t[(q + 128) as usize],
                None => q as i8,
            };
        }
    }
}

/// [`requant_row`] for the three columns of a tile at once: column `c`'s accumulators are
/// `tile[c·TILE_STRIDE..][..n]` and its outputs go to `out[c·out_stride..][..n]`. Returns `false`
/// (and writes nothing) unless the tile holds the three columns, `n ≤ min(TILE_STRIDE,
/// requant.len())`, the output columns do not overlap (`out_stride ≥ n`) and `out` holds them.
///
/// Each group of four channels loads its multipliers and shifts once for the three columns
/// (vector-base gathers that step through the `[multiplier, shift]` pairs), so a group costs
/// about 28 instructions for 12 outputs against 42 in three [`requant_row`] calls, and there is
/// one call per block instead of three.
#[inline(always)]
pub fn requant_block3(
    tile: &[i32],
    requant: &[[i32; 2]],
    zp: i32,
    lut: Option<&[i8; 256]>,
    out: &mut [i8],
    out_stride: usize,
    n: usize,
) -> bool {
    let fits = n <= TILE_STRIDE
        && n <= requant.len()
        && 2 * TILE_STRIDE + n <= tile.len()
        && out_stride >= n
        && out_stride
            .checked_mul(2)
            .and_then(|e| e.checked_add(n))
            .is_some_and(|e| e <= out.len());
    if !fits {
        return false;
    }
    if n == 0 {
        return true;
    }
    // SAFETY: the checks above are `requant3_unchecked`'s contract (three tile columns of n
    // words, n multiplier/shift pairs, three non-overlapping output runs inside `out`, a unique
    // borrow; `i32` slices are word-aligned).
    #[cfg(all(target_arch = "arm", vitae_mve))]
    unsafe {
        requant3_unchecked(
            tile.as_ptr(),
            requant.as_ptr(),
            zp,
            lut,
            out.as_mut_ptr(),
            out_stride,
            n,
        );
    }
    #[cfg(not(all(target_arch = "arm", vitae_mve)))]
    for c in 0..3 {
        requant_row(
            &tile[c * TILE_STRIDE..][..n],
            requant,
            zp,
            lut,
            &mut out[c * out_stride..][..n],
        );
    }
    true
}

/// Channels per [`Block3`] tile: the accumulator tile holds 64 rows per column.
const BLOCK3_TILE_ROWS: usize = 64;

/// A layer's weights side, checked once so that each block of three columns costs one
/// [`panel_2x3`] and one [`requant_block3`] in assembly per 64 channels and a few comparisons,
/// instead of re-deriving and re-checking every bound per block (about 200 instructions of a
/// small layer's block went there).
#[derive(Clone, Copy, Debug)]
pub struct Block3<'a> {
    w: &'a [i8],
    k: usize,
    stride: usize,
    bias: &'a [i32],
    requant: &'a [[i32; 2]],
    zp: i32,
    lut: Option<&'a [i8; 256]>,
    rows: usize,
}

impl<'a> Block3<'a> {
    /// `rows` channels: channel `r` is the weight row `w[r·stride..][..k]`, `bias[r]` and the
    /// fast-path multiplier/shift pair `requant[r]` (see [`requant_row`]), then `zp` and the
    /// optional table. `None` unless `k ≥ 1`, `rows` is even and ≥ 2 and the slices hold them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        w: &'a [i8],
        k: usize,
        stride: usize,
        bias: &'a [i32],
        requant: &'a [[i32; 2]],
        zp: i32,
        lut: Option<&'a [i8; 256]>,
        rows: usize,
    ) -> Option<Self> {
        let fits = k >= 1
            && rows >= 2
            && rows.is_multiple_of(2)
            && bias.len() >= rows
            && requant.len() >= rows
            && rows_in(w.len(), k, stride) >= rows;
        fits.then_some(Block3 {
            w,
            k,
            stride,
            bias,
            requant,
            zp,
            lut,
            rows,
        })
    }

    /// For the three columns `x[c·k..][..k]`: `out[c·out_stride + r]` = channel `r`'s
    /// requantized `bias[r] + Σ_i w_r[i] · x_c[i]`, the same as [`panel_2x3`] then
    /// [`requant_block3`]. Returns false, writing nothing, unless `x` holds `3k` values, `tile`
    /// `2·TILE_STRIDE + 64` words, `out_stride ≥ rows` and `out` the three output runs.
    #[inline(always)]
    pub fn run(&self, x: &[i8], tile: &mut [i32], out: &mut [i8], out_stride: usize) -> bool {
        let fits = x.len() >= 3 * self.k
            && tile.len() >= 2 * TILE_STRIDE + BLOCK3_TILE_ROWS
            && out_stride >= self.rows
            && out_stride
                .checked_mul(2)
                .and_then(|e| e.checked_add(self.rows))
                .is_some_and(|e| e <= out.len());
        if !fits {
            return false;
        }
        // SAFETY: `x` holds 3k bytes, `tile` the words and `out` the three runs (checked above;
        // `out` is a unique borrow).
        #[cfg(all(target_arch = "arm", vitae_mve))]
        unsafe {
            self.tiles_unchecked(x.as_ptr(), tile, out.as_mut_ptr(), out_stride);
        }
        #[cfg(not(all(target_arch = "arm", vitae_mve)))]
        {
            let mut t0 = 0;
            while t0 < self.rows {
                // Even: `rows` and the tile height are.
                let n = (self.rows - t0).min(BLOCK3_TILE_ROWS);
                let w = &self.w[t0 * self.stride..];
                panel_2x3(w, self.k, self.stride, x, &self.bias[t0..], tile, n / 2);
                let (rq, o) = (&self.requant[t0..], &mut out[t0..]);
                requant_block3(tile, rq, self.zp, self.lut, o, out_stride, n);
                t0 += n;
            }
        }
        true
    }
}

pub(crate) use crate::kernels::gemm::PlaneWalk;

impl Block3<'_> {
    /// Every pixel of `walk` (whose receptive fields lie in `plane`, the `k` values of a column
    /// being its runs back to back) through [`Block3::run`], packing three pixels at a time
    /// into `cols`: pixel `p`'s outputs go to `out[p·out_stride..][..rows]`. All bounds are
    /// checked once, so a block costs the packing, panel and requantization assembly and a few
    /// instructions (a grouped convolution's group, the interior of a convolution's output
    /// row). Returns false, writing nothing, when the walk does not suit (`pixels` not a
    /// positive multiple of 3, the runs not `k` values) or a slice is too short.
    pub fn run_planes(
        &self,
        plane: &[i8],
        walk: &PlaneWalk<'_>,
        cols: &mut [i8],
        tile: &mut [i32],
        out: &mut [i8],
        out_stride: usize,
    ) -> bool {
        let w = walk;
        let shape = w.pixels >= 3
            && w.pixels.is_multiple_of(3)
            && w.out_w >= 1
            && w.run_len >= 1
            && w.runs.checked_mul(w.run_len) == Some(self.k);
        if !shape {
            return false;
        }
        // Bytes a run spans: its length, or one past its largest gather offset.
        let span = match w.gather {
            None => Some(w.run_len),
            Some(t) => t
                .get(..w.run_len)
                .map(|t| t.iter().copied().max().map_or(0, usize::from) + 1),
        };
        let Some(span) = span else {
            return false;
        };
        let last = w.pixels - 1;
        // The furthest receptive field: last row, and the last column any row reaches.
        let field = extent(w.runs, w.run_stride, span);
        let reach = (last / w.out_w)
            .checked_mul(w.row_step)
            .zip(last.min(w.out_w - 1).checked_mul(w.col_step))
            .and_then(|(a, b)| a.checked_add(b)?.checked_add(field?));
        let out_end = last
            .checked_mul(out_stride)
            .and_then(|e| e.checked_add(self.rows));
        let fits = reach.is_some_and(|e| e <= plane.len())
            && cols.len() >= 3 * self.k
            && tile.len() >= 2 * TILE_STRIDE + BLOCK3_TILE_ROWS
            && out_stride >= self.rows
            && out_end.is_some_and(|e| e <= out.len());
        if !fits {
            return false;
        }
        let (mut oy, mut ox) = (0usize, 0usize);
        let mut p0 = 0;
        while p0 < w.pixels {
            let at: [usize; 3] = core::array::from_fn(|_| {
                let a = oy * w.row_step + ox * w.col_step;
                ox += 1;
                if ox == w.out_w {
                    (oy, ox) = (oy + 1, 0);
                }
                a
            });
            #[cfg(all(target_arch = "arm", vitae_mve))]
            {
                // SAFETY: every pixel's runs (their `span` bytes, gathered or copied) lie inside
                // `plane` (the furthest checked above), the table holds run_len offsets (checked),
                // and `cols` holds the 3k packed bytes (checked), a unique borrow.
                unsafe {
                    match w.gather {
                        None => pack3_unchecked(
                            cols.as_mut_ptr(),
                            plane.as_ptr(),
                            at,
                            w.run_stride,
                            w.runs,
                            w.run_len,
                        ),
                        Some(t) => gather3_unchecked(
                            cols.as_mut_ptr(),
                            plane.as_ptr(),
                            at,
                            w.run_stride,
                            w.runs,
                            w.run_len,
                            t.as_ptr(),
                        ),
                    }
                }
                // SAFETY: as in `run`: pixels p0..p0 + 3 have their outputs at
                // p·out_stride + j (j < rows ≤ out_stride), inside `out` since the last pixel's
                // end was checked.
                unsafe {
                    self.tiles_unchecked(
                        cols.as_ptr(),
                        tile,
                        out.as_mut_ptr().wrapping_add(p0 * out_stride),
                        out_stride,
                    )
                };
            }
            #[cfg(not(all(target_arch = "arm", vitae_mve)))]
            {
                match w.gather {
                    None => {
                        pack3_short(cols, plane, at, w.run_stride, w.runs, w.run_len);
                    }
                    Some(t) => {
                        let runs = cols.chunks_exact_mut(w.run_len).take(3 * w.runs);
                        for (i, d) in runs.enumerate() {
                            let start = at[i / w.runs] + (i % w.runs) * w.run_stride;
                            for (v, &o) in d.iter_mut().zip(t) {
                                *v = plane[start + usize::from(o)];
                            }
                        }
                    }
                }
                self.run(cols, tile, &mut out[p0 * out_stride..], out_stride);
            }
            p0 += 3;
        }
        true
    }

    /// The first `3·⌊tokens/3⌋` columns of `x` (`k` values each, back to back: a linear
    /// layer's tokens) through [`Block3::run`], token `t`'s outputs at
    /// `out[t·out_stride..][..rows]`, with all bounds checked once. Returns the tokens done
    /// (0, writing nothing, when a slice is too short).
    pub fn run_tokens(
        &self,
        x: &[i8],
        tokens: usize,
        tile: &mut [i32],
        out: &mut [i8],
        out_stride: usize,
    ) -> usize {
        let whole = tokens - tokens % 3;
        if whole == 0 {
            return 0;
        }
        let out_end = (whole - 1)
            .checked_mul(out_stride)
            .and_then(|e| e.checked_add(self.rows));
        let fits = whole.checked_mul(self.k).is_some_and(|e| e <= x.len())
            && tile.len() >= 2 * TILE_STRIDE + BLOCK3_TILE_ROWS
            && out_stride >= self.rows
            && out_end.is_some_and(|e| e <= out.len());
        if !fits {
            return 0;
        }
        for t0 in (0..whole).step_by(3) {
            // SAFETY: tokens t0..t0 + 3 (3k bytes from t0·k) lie inside `x` and their outputs
            // (t·out_stride + j, j < rows ≤ out_stride) inside `out`, both checked above for
            // the last whole block; `out` is a unique borrow.
            #[cfg(all(target_arch = "arm", vitae_mve))]
            unsafe {
                self.tiles_unchecked(
                    x.as_ptr().wrapping_add(t0 * self.k),
                    tile,
                    out.as_mut_ptr().wrapping_add(t0 * out_stride),
                    out_stride,
                );
            }
            #[cfg(not(all(target_arch = "arm", vitae_mve)))]
            self.run(
                &x[t0 * self.k..],
                tile,
                &mut out[t0 * out_stride..],
                out_stride,
            );
        }
        whole
    }

    /// The tile loop of [`Block3::run`] without its checks.
    ///
    /// # Safety
    ///
    /// `3k` bytes at `x` are readable; `tile` holds `2·TILE_STRIDE + 64` words; the bytes
    /// `out[c·out_stride + j]` (`c < 3`, `j < rows`) are writable and not accessed otherwise
    /// meanwhile; `out_stride ≥ rows`.
    #[cfg(all(target_arch = "arm", vitae_mve))]
    #[inline(always)]
    unsafe fn tiles_unchecked(
        &self,
        x: *const i8,
        tile: &mut [i32],
        out: *mut i8,
        out_stride: usize,
    ) {
        let mut t0 = 0;
        while t0 < self.rows {
            let n = (self.rows - t0).min(BLOCK3_TILE_ROWS);
            // SAFETY: rows t0..t0 + n lie inside `w`, `bias` and `requant` by `new`; the rest is
            // the caller's contract.
            unsafe {
                panel_2x3_unchecked(
                    self.w.as_ptr().wrapping_add(t0 * self.stride),
                    self.k,
                    self.stride,
                    x,
                    self.bias.as_ptr().wrapping_add(t0),
                    tile.as_mut_ptr(),
                    n / 2,
                );
                requant3_unchecked(
                    tile.as_ptr(),
                    self.requant.as_ptr().wrapping_add(t0),
                    self.zp,
                    self.lut,
                    out.wrapping_add(t0),
                    out_stride,
                    n,
                );
            }
            t0 += n;
        }
    }
}

/// The assembly behind [`requant_block3`] and [`Block3`].
///
/// # Safety
///
/// `n ≥ 1`; the words `tile[c·TILE_STRIDE + j]` (`c < 3`, `j < n`) and the pairs `requant[j]`
/// (`j < n`) are readable; the bytes `out[c·out_stride + j]` are writable, not overlapping one
/// another, and nothing else accesses them meanwhile; `tile` and `requant` are 4-byte aligned.
#[cfg(all(target_arch = "arm", vitae_mve))]
#[inline(always)]
unsafe fn requant3_unchecked(
    tile: *const i32,
    requant: *const [i32; 2],
    zp: i32,
    lut: Option<&[i8; 256]>,
    out: *mut i8,
    out_stride: usize,
    n: usize,
) {
    // Addresses of the first four multipliers, less the 32-byte step the pre-indexed
    // gather adds before its first load.
    let rq = requant as usize as u32;
    let addrs: [u32; 4] = core::array::from_fn(|i| rq.wrapping_add(8 * i as u32).wrapping_sub(32));
    let o = out;
    let acc = tile;
    // The table's middle, or no table (then the gather is not emitted and r8 is unused).
    let lut_base = lut.map_or(core::ptr::null(), |l| l.as_ptr().wrapping_add(128));
    // One column: load its accumulators, requantize, optionally look up, store four bytes.
    macro_rules! column {
        ($load:literal, $out:literal, $lut:literal, $q:literal) => {
            concat!(
                $load,
                "\n",
                "vmulh.s32 q0, q0, q1\n",
                "vrshl.s32 q0, q0, q2\n",
                "vadd.i32 q0, q0, r10\n",
                "vqshl.s32 q0, q0, #24\n",
                "vshr.s32 q0, q0, #24\n",
                $lut,
                "\n",
                "vstrb.32 ",
                $q,
                ", [",
                $out,
                "], #4\n",
            )
        };
    }
    // `$lut`: the table gather (into q4) or nothing; `$q`: the register stored.
    macro_rules! requant3 {
            ($lut:literal, $q:literal) => {
                // SAFETY: tail-predicated on `n` 32-bit lanes. Reads the first `n` words of
                // tile columns 0, 1, 2 (`r0`, `r0 + 4·TILE_STRIDE`, `r9`; readable by the
                // caller's contract), the `n` multipliers and shifts of `requant` (gathers through
                // the address vector, which starts at pair 0 and steps 4 pairs per iteration;
                // disabled lanes do not load), `addrs`, and with a table the bytes at
                // `lut + 128 + q` with q ∈ [−128, 127] (saturated). Writes `n` bytes at each of
                // `out`, `out + out_stride`, `out + 2·out_stride`, writable and exclusive by the
                // caller's contract. Clobbers q0–q4 (declared; the compiler saves q4), LR and
                // the declared registers. The narrowing stores need their bases in r0–r7.
                unsafe {
                    asm!(
                        "vldrw.u32 q3, [r2]",
                        "dlstp.32 lr, lr",
                        "2:",
                        "vldrw.u32 q1, [q3, #32]!",
                        "vldrw.u32 q2, [q3, #4]",
                        "vadd.i32 q2, q2, r11",
                        column!("vldrw.u32 q0, [r0, #{s1}]", "r4", $lut, $q),
                        column!("vldrw.u32 q0, [r9], #16", "r5", $lut, $q),
                        column!("vldrw.u32 q0, [r0], #16", "r3", $lut, $q),
                        "letp lr, 2b",
                        s1 = const TILE_STRIDE * 4,
                        in("r2") addrs.as_ptr(),
                        inout("r0") acc => _,
                        inout("r9") acc.wrapping_add(2 * TILE_STRIDE) => _,
                        inout("r3") o => _,
                        inout("r4") o.wrapping_add(out_stride) => _,
                        inout("r5") o.wrapping_add(2 * out_stride) => _,
                        in("r8") lut_base,
                        in("r10") zp,
                        in("r11") 1i32,
                        inout("lr") n => _,
                        out("q0") _, out("q1") _, out("q2") _, out("q3") _, out("q4") _,
                        options(nostack),
                    )
                }
            };
        }
    if lut.is_some() {
        requant3!("vldrb.u32 q4, [r8, q0]", "q4");
    } else {
        requant3!("", "q0");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_2x3_is_six_dot_products() {
        for k in [1usize, 15, 16, 17, 40] {
            let w0: [i8; 40] = core::array::from_fn(|i| (i as i8).wrapping_mul(37));
            let w1: [i8; 40] = core::array::from_fn(|i| (i as i8).wrapping_mul(-59));
            let x: [[i8; 40]; 3] = core::array::from_fn(|c| {
                core::array::from_fn(|i| ((c * 40 + i) as i8).wrapping_mul(73))
            });
            let got = mac_2x3([&w0, &w1], [&x[0], &x[1], &x[2]], k, [0, 1, 2, 3, 4, 5]);
            for (r, w) in [&w0, &w1].iter().enumerate() {
                for c in 0..3 {
                    let want: i32 = (0..k).map(|i| w[i] as i32 * x[c][i] as i32).sum();
                    assert_eq!(
                        got[3 * r + c],
                        want + (3 * r + c) as i32,
                        "k={k} r={r} c={c}"
                    );
                }
            }
        }
    }
}
