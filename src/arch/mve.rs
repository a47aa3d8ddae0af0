//! Armv8.1-M Helium (MVE) micro-kernels as safe functions.
//!
//! On a Helium core these are inline assembly (stable Rust has no MVE intrinsics, and LLVM's
//! auto-vectorizer neither blocks a matrix product over registers nor vectorizes the
//! requantization). Everywhere else (the host) the same functions are plain Rust with the same
//! semantics, so the Helium kernels' blocking and data layouts are exercised by the host unit
//! tests against the scalar reference; the assembly itself is checked against the reference under
//! QEMU (`tests/qemu`).
#![allow(unsafe_code)]

#[cfg(all(target_arch = "arm", vitae_mve))]
use core::arch::asm;

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

/// Transposes and widens a tile of values: `vt[d·vt_stride + j] = v[j·stride + d]` for `j < rows`,
/// `d < dims`. Returns false (nothing written) when an index would leave a slice or `7·stride`
/// does not fit the 16-bit gather offsets.
///
/// One VLDRB.S16 gather (eight rows of one column) and one VSTRH per eight values.
#[inline]
pub fn transpose_widen(
    v: &[i8],
    stride: usize,
    rows: usize,
    dims: usize,
    vt: &mut [i16],
    vt_stride: usize,
) -> bool {
    if rows == 0 || dims == 0 {
        return true;
    }
    let fits = |r: usize, st: usize, n: usize, have: usize| {
        r.checked_sub(1)
            .and_then(|r| r.checked_mul(st))
            .and_then(|e| e.checked_add(n))
            .is_some_and(|e| e <= have)
    };
    if !fits(rows, stride, dims, v.len())
        || !fits(dims, vt_stride, rows, vt.len())
        || stride
            .checked_mul(7)
            .is_none_or(|m| m > usize::from(u16::MAX))
    {
        return false;
    }
    #[cfg(all(target_arch = "arm", vitae_mve))]
    {
        let offsets: [u16; 8] = core::array::from_fn(|i| (i * stride) as u16);
        // SAFETY: column d gathers v[j·stride + d] for j < rows (tail-predicated, eight rows per
        // step; inactive lanes are not accessed), inside `v` by the first check; it writes
        // vt[d·vt_stride..][..rows], inside `vt` by the second. `vt` is a unique borrow, its
        // halfword stores 2-aligned. The gather needs its base in r0–r7. Clobbers q0, q1, LR
        // and the declared registers.
        unsafe {
            asm!(
                "vldrh.u16 q1, [r0]",
                "1:",
                "mov r0, r4",
                "mov r1, r5",
                "mov lr, r8",
                "dlstp.16 lr, lr",
                "2:",
                "vldrb.s16 q0, [r1, q1]",
                "vstrh.16 q0, [r0], #16",
                "add r1, r2",
                "letp lr, 2b",
                "add r4, r9",
                "adds r5, #1",
                "subs r3, #1",
                "bne 1b",
                inout("r0") offsets.as_ptr() => _,
                out("r1") _,
                in("r2") 8 * stride,
                inout("r3") dims => _,
                inout("r4") vt.as_mut_ptr() => _,
                inout("r5") v.as_ptr() => _,
                in("r8") rows,
                in("r9") 2 * vt_stride,
                out("lr") _,
                out("q0") _,
                out("q1") _,
                options(nostack),
            );
        }
    }
    #[cfg(not(all(target_arch = "arm", vitae_mve)))]
    for d in 0..dims {
        for j in 0..rows {
            vt[d * vt_stride + j] = i16::from(v[j * stride + d]);
        }
    }
    true
}

/// Attention's probabilities for one query and one key tile, exactly as the reference computes
/// them: `p[j] = round_half_up(exp(s[j]·scale − m) · 32767)` with [`crate::math::exp`]; returns
/// `Σ p[j]`. `m` must be at least every `s[j]·scale` (the running maximum), so every exponent is
/// at most 0.
///
/// Four lanes at a time with MVE floating point, following `math::exp` step by step: the same
/// IEEE operations in the same order (correctly rounded, never fused), the clamp at −87.33 and
/// the select to 0 below it (the comparison kept in VPR.P0 from the clamp to the select),
/// `n = trunc(x·log2e + 128.5) − 128`, `half = n >> 1`, and `VCVTM` (floor) for `round_half_up`,
/// which is `floor(y + 0.5)`. Helium arithmetic flushes subnormals to zero, so the vector path is
/// taken only when none can occur: for `2^−88 ≤ scale ≤ 2^96`, every nonzero exponent is at least
/// `scale·2^−24` in magnitude and every intermediate (down to `r/5040` in the polynomial) stays
/// normal; otherwise the scalar reference code runs.
#[inline]
pub fn softmax_row(s: &[i32], scale: f32, m: f32, p: &mut [i16]) -> i32 {
    let n = s.len().min(p.len());
    let vector_ok = (f32::from_bits(0x1380_0000)..=f32::from_bits(0x6f80_0000)).contains(&scale)
        && m.is_finite();
    #[cfg(all(target_arch = "arm", vitae_mve))]
    if vector_ok && n > 0 {
        // Constants in the order the assembly loads them into r3–r12, then the four Horner
        // coefficients that go to q4–q7 and the element count.
        let c: [f32; 10] = [
            scale,
            m,
            core::f32::consts::LOG2_E,
            32767.0,
            -87.33,
            128.5,
            0.693_145_75,
            1.428_606_8e-6,
            1.0 / 5040.0,
            0.0, // replaced by the integer 128 below
        ];
        let horner: [f32; 4] = [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0];
        let mut frame = [0u32; 15];
        for (f, v) in frame.iter_mut().zip(c.iter().chain(&horner)) {
            *f = v.to_bits();
        }
        frame[9] = 128;
        frame[14] = n as u32;
        let psum: i32;
        // SAFETY: reads `n` words of `s` and writes `n` halfwords of `p` (tail predication on n
        // lanes; inactive lanes are not accessed), both in bounds; reads `frame`. `p` is a
        // unique borrow, 2-aligned. The narrowing store needs its base in r0–r7. r6, r7 and
        // d8–d15 (q4–q7, callee-saved) are saved on the stack and restored; the rest written is
        // declared.
        unsafe {
            asm!(
                "vpush {{d8-d15}}",
                "push {{r6, r7}}",
                "ldr r3, [lr, #40]",
                "vdup.32 q4, r3",
                "ldr r3, [lr, #44]",
                "vdup.32 q5, r3",
                "ldr r3, [lr, #48]",
                "vdup.32 q6, r3",
                "ldr r3, [lr, #52]",
                "vdup.32 q7, r3",
                "ldm lr, {{r3, r4, r5, r6, r7, r8, r9, r10, r11, r12}}",
                "ldr lr, [lr, #56]",
                "dlstp.32 lr, lr",
                "1:",
                "vldrw.u32 q0, [r1], #16",
                "vcvt.f32.s32 q0, q0",
                "vmul.f32 q0, q0, r3",
                "vsub.f32 q0, q0, r4",
                // x < −87.33: clamp now, select 0 at the end (P0 holds the comparison).
                "vpt.f32 lt, q0, r7",
                "vdupt.32 q0, r7",
                "vmul.f32 q1, q0, r5",
                "vadd.f32 q1, q1, r8",
                "vcvt.s32.f32 q1, q1",
                "vsub.i32 q1, q1, r12",
                "vcvt.f32.s32 q2, q1",
                "vmul.f32 q3, q2, r9",
                "vsub.f32 q3, q0, q3",
                "vmul.f32 q2, q2, r10",
                "vsub.f32 q3, q3, q2",
                "vmul.f32 q2, q3, r11",
                "vadd.f32 q2, q2, q4",
                "vmul.f32 q2, q2, q3",
                "vadd.f32 q2, q2, q5",
                "vmul.f32 q2, q2, q3",
                "vadd.f32 q2, q2, q6",
                "vmul.f32 q2, q2, q3",
                "vadd.f32 q2, q2, q7",
                "vmul.f32 q2, q2, q3",
                "vmov.f32 q0, #0.5",
                "vadd.f32 q2, q2, q0",
                "vmul.f32 q2, q2, q3",
                "vmov.f32 q0, #1.0",
                "vadd.f32 q2, q2, q0",
                "vmul.f32 q2, q2, q3",
                "vadd.f32 q2, q2, q0",
                "vshr.s32 q3, q1, #1",
                "vsub.i32 q1, q1, q3",
                "vmov.i32 q0, #127",
                "vadd.i32 q3, q3, q0",
                "vshl.i32 q3, q3, #23",
                "vadd.i32 q1, q1, q0",
                "vshl.i32 q1, q1, #23",
                "vmul.f32 q2, q2, q3",
                "vmul.f32 q2, q2, q1",
                "vpst",
                "veort q2, q2, q2",
                "vmul.f32 q2, q2, r6",
                "vmov.f32 q0, #0.5",
                "vadd.f32 q2, q2, q0",
                "vcvtm.s32.f32 q2, q2",
                "vaddva.u32 r0, q2",
                "vstrh.32 q2, [r2], #8",
                "letp lr, 1b",
                "pop {{r6, r7}}",
                "vpop {{d8-d15}}",
                inout("r0") 0i32 => psum,
                inout("r1") s.as_ptr() => _,
                inout("r2") p.as_mut_ptr() => _,
                inout("lr") frame.as_ptr() => _,
                out("r3") _,
                out("r4") _,
                out("r5") _,
                out("r8") _,
                out("r9") _,
                out("r10") _,
                out("r11") _,
                out("r12") _,
                out("q0") _,
                out("q1") _,
                out("q2") _,
                out("q3") _,
            );
        }
        return psum;
    }
    let _ = vector_ok;
    let mut psum = 0i32;
    for (pj, &sj) in p[..n].iter_mut().zip(s) {
        let v = crate::quant::round_half_up(crate::math::exp(sj as f32 * scale - m) * 32767.0);
        *pj = v as i16;
        psum += v;
    }
    psum
}

/// `y[i] = y[i] + a · x[i]` over `min(y.len(), x.len())` values, the product and the sum each
/// rounded (no fused multiply-add), so the result equals the plain Rust loop on every target.
/// Per four values: two VLDRW, VMUL, VADD, VSTRW and the LETP; the performer's feature updates
/// spend most of their time here.
#[inline(always)]
pub fn axpy_f32(y: &mut [f32], a: f32, x: &[f32]) {
    let n = y.len().min(x.len());
    #[cfg(all(target_arch = "arm", vitae_mve))]
    {
        if n == 0 {
            return;
        }
        // SAFETY: reads the first `n ≥ 1` floats of `x` and of `y` and writes the first `n` of
        // `y`, all in bounds (tail predication disables the lanes beyond `n`); `y` is a unique
        // borrow. VLDRW/VSTRW need only the 4-byte alignment `f32` slices have. Clobbers q0, q1
        // and LR only.
        unsafe {
            asm!(
                "dlstp.32 lr, lr",
                "2:",
                "vldrw.u32 q0, [r1], #16",
                "vldrw.u32 q1, [r0]",
                "vmul.f32 q0, q0, r2",
                "vadd.f32 q1, q1, q0",
                "vstrw.32 q1, [r0], #16",
                "letp lr, 2b",
                inout("r0") y.as_mut_ptr() => _,
                inout("r1") x.as_ptr() => _,
                in("r2") a.to_bits(),
                inout("lr") n => _,
                out("q0") _,
                out("q1") _,
                options(nostack),
            );
        }
    }
    #[cfg(not(all(target_arch = "arm", vitae_mve)))]
    for (yi, &xi) in y[..n].iter_mut().zip(&x[..n]) {
        *yi += a * xi;
    }
}

/// One column chunk of [`rank1_update_rows`]: loads the chunk of `x` (one `vldrw` per
/// `offset => register`, up to six registers ending at q7), then for each of the `m` rows adds
/// `coef[i] · x` to the row's chunk. Registers: r0 rows, r1 coefficients, r2 `x`, r3 row stride in bytes, r4 rows left.
#[cfg(all(target_arch = "arm", vitae_mve))]
macro_rules! rank1_chunk {
    ($rows:expr, $coefs:expr, $xs:expr, $stride:expr, $m:expr; $($off:literal => $q:literal),+) => {
        asm!(
            $(concat!("vldrw.u32 ", $q, ", [r2, #", $off, "]"),)+
            "1:",
            "ldr r12, [r1], #4",
            $(
                concat!("vldrw.u32 q0, [r0, #", $off, "]"),
                concat!("vmul.f32 q1, ", $q, ", r12"),
                "vadd.f32 q0, q0, q1",
                concat!("vstrw.32 q0, [r0, #", $off, "]"),
            )+
            "add r0, r3",
            "subs r4, #1",
            "bne 1b",
            inout("r0") $rows => _, inout("r1") $coefs => _, in("r2") $xs,
            in("r3") $stride, inout("r4") $m => _, out("r12") _,
            out("q0") _, out("q1") _, out("q2") _, out("q3") _, out("q4") _, out("q5") _,
            out("q6") _, out("q7") _,
            options(nostack),
        )
    };
}

/// One column chunk of [`weighted_row_sum`]: the chunk's registers (up to six, ending at q7)
/// start at +0.0, each row adds `coef[i] ·` its chunk, then the sums are stored to `y` (r2). Registers as in `rank1_chunk!`.
#[cfg(all(target_arch = "arm", vitae_mve))]
macro_rules! weighted_chunk {
    ($rows:expr, $coefs:expr, $ys:expr, $stride:expr, $m:expr; $($off:literal => $q:literal),+) => {
        asm!(
            $(concat!("vmov.i32 ", $q, ", #0"),)+
            "1:",
            "ldr r12, [r1], #4",
            $(
                concat!("vldrw.u32 q0, [r0, #", $off, "]"),
                "vmul.f32 q0, q0, r12",
                concat!("vadd.f32 ", $q, ", ", $q, ", q0"),
            )+
            "add r0, r3",
            "subs r4, #1",
            "bne 1b",
            $(concat!("vstrw.32 ", $q, ", [r2, #", $off, "]"),)+
            inout("r0") $rows => _, inout("r1") $coefs => _, in("r2") $ys,
            in("r3") $stride, inout("r4") $m => _, out("r12") _,
            out("q0") _, out("q2") _, out("q3") _, out("q4") _, out("q5") _, out("q6") _,
            out("q7") _,
            options(nostack),
        )
    };
}

/// The column chunks of [`rank1_update_rows`] and [`weighted_row_sum`]: `(first column,
/// vectors)` covering `0..e` (a multiple of 4): one chunk of up to six four-float vectors when
/// `e ≤ 24` (one pass over the rows), else chunks of up to four.
#[cfg(all(target_arch = "arm", vitae_mve))]
fn column_chunks(e: usize) -> impl Iterator<Item = (usize, usize)> {
    let step = if e <= 24 { 24 } else { 16 };
    (0..e)
        .step_by(step)
        .map(move |c0| (c0, ((e - c0) / 4).min(step / 4)))
}

/// `mat[i·e + c] += coef[i] · x[c]` for every row `i < min(coef.len(), mat.len() / e)` and
/// column `c < e` (each product and sum rounded, no fused multiply-add): the performer's
/// per-token update of its feature × channel matrix. The same operations per element as one
/// [`axpy_f32`] call per row, so the results are the same bit for bit. Nothing happens when
/// `x` holds fewer than `e` values.
///
/// On Helium, when `e` is a multiple of 4, the columns go in chunks (see `column_chunks`) whose `x` values
/// stay in registers while every row is updated: 4 instructions per 4 values and row plus 4 per
/// row, against 6 per 4 values and the loop overhead of one [`axpy_f32`] per row.
#[inline]
pub fn rank1_update_rows(mat: &mut [f32], e: usize, coef: &[f32], x: &[f32]) {
    if e == 0 || x.len() < e {
        return;
    }
    let m = coef.len().min(mat.len() / e);
    #[cfg(all(target_arch = "arm", vitae_mve))]
    if e % 4 == 0 && m > 0 {
        for (c0, vectors) in column_chunks(e) {
            let (rows, xs) = (mat[c0..].as_mut_ptr(), x[c0..].as_ptr());
            let (coefs, stride) = (coef.as_ptr(), 4 * e);
            // SAFETY: for rows i < m the asm reads and writes `vectors` four-float vectors at
            // `mat[i·e + c0..]`: i·e + c0 + 4·vectors ≤ (m − 1)·e + e ≤ mat.len(). It reads
            // `vectors` vectors of `x[c0..]` (c0 + 4·vectors ≤ e ≤ x.len()) and `m` floats of
            // `coef` (m ≤ coef.len()). All word-aligned (`f32` slices); `mat` is a unique borrow.
            // Clobbers q0–q7 (declared: the compiler saves q4–q7), r12 and the inputs.
            unsafe {
                match vectors {
                    6 => rank1_chunk!(rows, coefs, xs, stride, m;
                        0 => "q2", 16 => "q3", 32 => "q4", 48 => "q5", 64 => "q6", 80 => "q7"),
                    5 => rank1_chunk!(rows, coefs, xs, stride, m;
                        0 => "q3", 16 => "q4", 32 => "q5", 48 => "q6", 64 => "q7"),
                    4 => rank1_chunk!(rows, coefs, xs, stride, m;
                        0 => "q4", 16 => "q5", 32 => "q6", 48 => "q7"),
                    3 => {
                        rank1_chunk!(rows, coefs, xs, stride, m; 0 => "q4", 16 => "q5", 32 => "q6")
                    }
                    2 => rank1_chunk!(rows, coefs, xs, stride, m; 0 => "q4", 16 => "q5"),
                    _ => rank1_chunk!(rows, coefs, xs, stride, m; 0 => "q4"),
                }
            }
        }
        return;
    }
    for (row, &a) in mat.chunks_exact_mut(e).zip(coef).take(m) {
        axpy_f32(row, a, x);
    }
}

/// `y[c] = Σ_{i<m} coef[i] · mat[i·e + c]` for `c < e`, summed in row order from +0.0 (each
/// product and sum rounded): the performer's output numerator, equal bit for bit to zeroing `y`
/// and calling [`axpy_f32`] once per row. `m = min(coef.len(), mat.len() / e)`; nothing happens
/// when `y` holds fewer than `e` values.
///
/// On Helium, when `e` is a multiple of 4, chunks of up to 16 (24) columns accumulate in registers
/// over all rows (3 instructions per 4 values and row plus 4 per row).
#[inline]
pub fn weighted_row_sum(y: &mut [f32], e: usize, coef: &[f32], mat: &[f32]) {
    if e == 0 || y.len() < e {
        return;
    }
    let m = coef.len().min(mat.len() / e);
    #[cfg(all(target_arch = "arm", vitae_mve))]
    if e % 4 == 0 && m > 0 {
        for (c0, vectors) in column_chunks(e) {
            let (rows, ys) = (mat[c0..].as_ptr(), y[c0..].as_mut_ptr());
            let (coefs, stride) = (coef.as_ptr(), 4 * e);
            // SAFETY: for rows i < m reads `vectors` four-float vectors at `mat[i·e + c0..]`
            // (i·e + c0 + 4·vectors ≤ m·e ≤ mat.len()) and `m` floats of `coef`; writes
            // `vectors` vectors at `y[c0..]` (c0 + 4·vectors ≤ e ≤ y.len()), a unique borrow.
            // Word-aligned (`f32` slices). Clobbers q0, q2–q7 (declared: the compiler saves
            // q4–q7), r12 and the inputs.
            unsafe {
                match vectors {
                    6 => weighted_chunk!(rows, coefs, ys, stride, m;
                        0 => "q2", 16 => "q3", 32 => "q4", 48 => "q5", 64 => "q6", 80 => "q7"),
                    5 => weighted_chunk!(rows, coefs, ys, stride, m;
                        0 => "q3", 16 => "q4", 32 => "q5", 48 => "q6", 64 => "q7"),
                    4 => weighted_chunk!(rows, coefs, ys, stride, m;
                        0 => "q4", 16 => "q5", 32 => "q6", 48 => "q7"),
                    3 => {
                        weighted_chunk!(rows, coefs, ys, stride, m; 0 => "q4", 16 => "q5", 32 => "q6")
                    }
                    2 => weighted_chunk!(rows, coefs, ys, stride, m; 0 => "q4", 16 => "q5"),
                    _ => weighted_chunk!(rows, coefs, ys, stride, m; 0 => "q4"),
                }
            }
        }
        return;
    }
    let y = &mut y[..e];
    y.fill(0.0);
    for (row, &a) in mat.chunks_exact(e).zip(coef).take(m) {
        axpy_f32(y, a, row);
    }
}

/// One call of [`dot_rows_s16_s8`]: the token's chunks (eight int8 values widened to int16 per
/// `offset => register`) stay in q2.. while each of the `m` int16 rows is loaded alongside and
/// dotted with them; one word per row goes to the output. Registers: r0 rows, r1 token, r2
/// output, r3 row stride in bytes, r4 rows left; r12 (even, as VMLADAV wants) accumulates.
#[cfg(all(target_arch = "arm", vitae_mve))]
macro_rules! dot_rows_chunks {
    ($rows:expr, $z:expr, $out:expr, $stride:expr, $m:expr;
     $zoff0:literal, $woff0:literal => $q0:literal $(, $zoff:literal, $woff:literal => $q:literal)*) => {
        asm!(
            concat!("vldrb.s16 ", $q0, ", [r1, #", $zoff0, "]"),
            $(concat!("vldrb.s16 ", $q, ", [r1, #", $zoff, "]"),)*
            "1:",
            concat!("vldrh.u16 q0, [r0, #", $woff0, "]"),
            concat!("vmladav.s16 r12, q0, ", $q0),
            $(
                concat!("vldrh.u16 q0, [r0, #", $woff, "]"),
                concat!("vmladava.s16 r12, q0, ", $q),
            )*
            "str r12, [r2], #4",
            "add r0, r3",
            "subs r4, #1",
            "bne 1b",
            inout("r0") $rows => _, in("r1") $z, inout("r2") $out => _,
            in("r3") $stride, inout("r4") $m => _, out("r12") _,
            out("q0") _, out("q2") _, out("q3") _, out("q4") _, out("q5") _, out("q6") _,
            out("q7") _,
            options(nostack),
        )
    };
}

/// `out[i] = Σ_{c<e} w[i·e + c] · z[c]` for every row `i < min(out.len(), w.len() / e)`: the
/// exact int16 × int8 dot products of the performer's feature map (the caller keeps `e` small
/// enough for i32, see `performer::MAX_EMB`). Nothing happens when `z` holds fewer than `e`
/// values.
///
/// On Helium, when `e` is a multiple of 8 up to 48, the token stays in registers (as int16)
/// while the rows stream past: two instructions per eight values and row plus four per row,
/// against about 29 per row of 24 for LLVM's vectorized loop with the token reloaded each time.
#[inline]
pub fn dot_rows_s16_s8(w: &[i16], e: usize, z: &[i8], out: &mut [i32]) {
    if e == 0 || z.len() < e {
        return;
    }
    let m = out.len().min(w.len() / e);
    #[cfg(all(target_arch = "arm", vitae_mve))]
    if e % 8 == 0 && e <= 48 && m > 0 {
        let (rows, zs, outs, stride) = (w.as_ptr(), z.as_ptr(), out.as_mut_ptr(), 2 * e);
        // SAFETY: reads the first e ≤ 48 bytes of `z` (e ≤ z.len()), for rows i < m the e
        // int16 values at w[i·e..] ((i + 1)·e ≤ m·e ≤ w.len()), and writes m words of `out`
        // (m ≤ out.len()), a unique borrow. VLDRH and STR need the 2- and 4-byte alignment of
        // `i16` and `i32` slices. Clobbers q0, q2–q7 (declared: the compiler saves q4–q7), r12
        // and the inputs.
        unsafe {
            match e / 8 {
                6 => dot_rows_chunks!(rows, zs, outs, stride, m;
                    0, 0 => "q2", 8, 16 => "q3", 16, 32 => "q4", 24, 48 => "q5",
                    32, 64 => "q6", 40, 80 => "q7"),
                5 => dot_rows_chunks!(rows, zs, outs, stride, m;
                    0, 0 => "q2", 8, 16 => "q3", 16, 32 => "q4", 24, 48 => "q5", 32, 64 => "q6"),
                4 => dot_rows_chunks!(rows, zs, outs, stride, m;
                    0, 0 => "q2", 8, 16 => "q3", 16, 32 => "q4", 24, 48 => "q5"),
                3 => dot_rows_chunks!(rows, zs, outs, stride, m;
                    0, 0 => "q2", 8, 16 => "q3", 16, 32 => "q4"),
                2 => dot_rows_chunks!(rows, zs, outs, stride, m; 0, 0 => "q2", 8, 16 => "q3"),
                _ => dot_rows_chunks!(rows, zs, outs, stride, m; 0, 0 => "q2"),
            }
        }
        return;
    }
    for (o, row) in out.iter_mut().zip(w.chunks_exact(e)).take(m) {
        *o = row
            .iter()
            .zip(&z[..e])
            .map(|(&a, &b)| i32::from(a) * i32::from(b))
            .sum();
    }
}

/// Copies `min(dst.len(), src.len())` bytes (a tail-predicated VLDRB/VSTRB loop: 3 instructions
/// per 16 bytes and no call, which matters for the many short runs of an im2col).
#[inline(always)]
pub fn copy(dst: &mut [i8], src: &[i8]) {
    let n = dst.len().min(src.len());
    #[cfg(all(target_arch = "arm", vitae_mve))]
    {
        if n == 0 {
            return;
        }
        // SAFETY: reads the first `n ≥ 1` bytes of `src` and writes the first `n` bytes of `dst`,
        // both in bounds; tail predication leaves the lanes beyond `n` untouched. `dst` is a
        // unique borrow, so the write aliases nothing. Clobbers q0 and LR only.
        unsafe {
            asm!(
                "dlstp.8 lr, lr",
                "2:",
                "vldrb.u8 q0, [r1], #16",
                "vstrb.8 q0, [r0], #16",
                "letp lr, 2b",
                inout("r0") dst.as_mut_ptr() => _,
                inout("r1") src.as_ptr() => _,
                inout("lr") n => _,
                out("q0") _,
                options(nostack),
            );
        }
    }
    #[cfg(not(all(target_arch = "arm", vitae_mve)))]
    dst[..n].copy_from_slice(&src[..n]);
}

/// Checked extent of `rows` runs of `len` bytes, `stride` apart: `(rows − 1)·stride + len`.
fn extent(rows: usize, stride: usize, len: usize) -> Option<usize> {
    rows.checked_sub(1)?.checked_mul(stride)?.checked_add(len)
}

/// Copies `rows` runs of `len` bytes from `src` (runs `src_stride` apart) to `dst` (runs
/// `dst_stride` apart); returns false, writing nothing, when a run would leave either slice.
///
/// One call for all the kernel rows of an im2col column: per row four instructions and a
/// tail-predicated VLDRB/VSTRB loop (3 per 16 bytes).
#[inline(always)]
pub fn copy_rows(
    dst: &mut [i8],
    dst_stride: usize,
    src: &[i8],
    src_stride: usize,
    rows: usize,
    len: usize,
) -> bool {
    let fits = |n: usize, stride, have| extent(rows, stride, n).is_some_and(|e| e <= have);
    if !fits(len, dst_stride, dst.len()) || !fits(len, src_stride, src.len()) {
        return false;
    }
    if len == 0 {
        return true;
    }
    #[cfg(all(target_arch = "arm", vitae_mve))]
    {
        // SAFETY: row r reads src[r·src_stride..][..len] and writes dst[r·dst_stride..][..len],
        // in bounds by the extent checks above (rows ≥ 1 since the extent exists; len ≥ 1).
        // `dst` is a unique borrow. Tail predication leaves lanes past `len` untouched.
        // Clobbers q0, LR and the declared registers.
        unsafe {
            asm!(
                "1:",
                "mov r8, r0",
                "mov r9, r1",
                "mov lr, r3",
                "dlstp.8 lr, lr",
                "2:",
                "vldrb.u8 q0, [r9], #16",
                "vstrb.8 q0, [r8], #16",
                "letp lr, 2b",
                "add r0, r4",
                "add r1, r5",
                "subs r2, #1",
                "bne 1b",
                inout("r0") dst.as_mut_ptr() => _,
                inout("r1") src.as_ptr() => _,
                inout("r2") rows => _,
                in("r3") len,
                in("r4") dst_stride,
                in("r5") src_stride,
                out("r8") _,
                out("r9") _,
                out("lr") _,
                out("q0") _,
                options(nostack),
            );
        }
    }
    #[cfg(not(all(target_arch = "arm", vitae_mve)))]
    for r in 0..rows {
        dst[r * dst_stride..][..len].copy_from_slice(&src[r * src_stride..][..len]);
    }
    true
}

/// Packs three im2col columns whose kernel rows are short runs: column `c` is the `rows` runs
/// `src[at[c] + r·src_stride..][..len]` (`r < rows`), and the `3·rows` runs go back to back into
/// `dst` (column 0's rows, then column 1's, then column 2's). Returns false, writing nothing,
/// unless `len ≥ 1`, `rows ≥ 1` and every run lies inside its slice.
///
/// Per run one predicated VLDRB/VSTRB pair (two pairs up to 32 bytes, a tail-predicated loop
/// beyond) and four scalar instructions: a grouped convolution's three-pixel block costs about
/// 70 instructions here against about 300 through per-row copies.
#[inline(always)]
pub fn pack3_short(
    dst: &mut [i8],
    src: &[i8],
    at: [usize; 3],
    src_stride: usize,
    rows: usize,
    len: usize,
) -> bool {
    if len == 0 || rows == 0 {
        return false;
    }
    let column = extent(rows, src_stride, len);
    let inside = |a: usize| {
        column
            .and_then(|e| a.checked_add(e))
            .is_some_and(|e| e <= src.len())
    };
    if 3 * rows * len > dst.len() || !at.iter().all(|&a| inside(a)) {
        return false;
    }
    // SAFETY: the checks above are `pack3_unchecked`'s contract; `dst` is a unique borrow.
    #[cfg(all(target_arch = "arm", vitae_mve))]
    unsafe {
        pack3_unchecked(dst.as_mut_ptr(), src.as_ptr(), at, src_stride, rows, len);
    }
    #[cfg(not(all(target_arch = "arm", vitae_mve)))]
    {
        let runs = dst.chunks_exact_mut(len).take(3 * rows);
        for (i, d) in runs.enumerate() {
            let (c, r) = (i / rows, i % rows);
            d.copy_from_slice(&src[at[c] + r * src_stride..][..len]);
        }
    }
    true
}

/// One column of `pack3_unchecked` / `gather3_unchecked`: `rows` runs (r8) of `len` (r5)
/// bytes read from `$src` on (stepping `src_stride`, r4) and written back to back from r0 on;
/// `$outer`/`$inner` are the loop labels. How a run moves:
/// * `short`: one VLDRB/VSTRB pair predicated by P0 (len ≤ 16, P0 = VCTP len);
/// * `two`: a full pair, then one predicated by P0 (16 < len ≤ 32, P0 = VCTP len − 16);
/// * `long`: a tail-predicated loop over the run (r9 reads, r10 writes);
/// * `gathered`: the same loop over a byte gather through the offsets at r11 (`$src` low).
#[cfg(all(target_arch = "arm", vitae_mve))]
macro_rules! column_runs {
    (@run $src:literal, $outer:literal, $($move:expr),+) => {
        concat!(
            "mov r12, r8\n",
            $outer, ":\n",
            $($move,)+
            "add ", $src, ", r4\n",
            "add r0, r5\n",
            "subs r12, #1\n",
            "bne ", $outer, "b\n",
        )
    };
    (short $src:literal, $outer:literal) => {
        column_runs!(@run $src, $outer,
            "vpstt\n",
            concat!("vldrbt.u8 q0, [", $src, "]\n"),
            "vstrbt.8 q0, [r0]\n")
    };
    (two $src:literal, $outer:literal) => {
        column_runs!(@run $src, $outer,
            concat!("vldrb.u8 q0, [", $src, "]\n"),
            "vstrb.8 q0, [r0]\n",
            "vpstt\n",
            concat!("vldrbt.u8 q0, [", $src, ", #16]\n"),
            "vstrbt.8 q0, [r0, #16]\n")
    };
    (long $src:literal, $outer:literal, $inner:literal) => {
        column_runs!(@run $src, $outer,
            concat!("mov r9, ", $src, "\n"),
            "mov r10, r0\n",
            "mov lr, r5\n",
            "dlstp.8 lr, lr\n",
            concat!($inner, ":\n"),
            "vldrb.u8 q0, [r9], #16\n",
            "vstrb.8 q0, [r10], #16\n",
            concat!("letp lr, ", $inner, "b\n"))
    };
    (gathered $src:literal, $outer:literal, $inner:literal) => {
        column_runs!(@run $src, $outer,
            "mov r9, r11\n",
            "mov r10, r0\n",
            "mov lr, r5\n",
            "dlstp.8 lr, lr\n",
            concat!($inner, ":\n"),
            "vldrb.u8 q1, [r9], #16\n",
            concat!("vldrb.u8 q0, [", $src, ", q1]\n"),
            "vstrb.8 q0, [r10], #16\n",
            concat!("letp lr, ", $inner, "b\n"))
    };
}

/// The assembly behind [`pack3_short`] and [`Block3::run_planes`].
///
/// # Safety
///
/// `len ≥ 1`, `rows ≥ 1`; for `c < 3`, `r < rows` the `len` bytes at
/// `base + at[c] + r·src_stride` are readable, and the `3·rows·len` bytes at `dst` writable and
/// not accessed otherwise meanwhile.
#[cfg(all(target_arch = "arm", vitae_mve))]
#[inline(always)]
unsafe fn pack3_unchecked(
    dst: *mut i8,
    base: *const i8,
    at: [usize; 3],
    src_stride: usize,
    rows: usize,
    len: usize,
) {
    if len <= 16 {
        // SAFETY: column c reads rows runs of len ≤ 16 bytes at base + at[c] + r·src_stride
        // and the 3·rows runs go to dst..dst + 3·rows·len, all accessible by the caller's
        // contract; predication on the first `len` lanes: no byte past a run is read or
        // written. Byte accesses, no alignment needed. Clobbers q0, VPR, r12 and the inputs.
        unsafe {
            asm!(
                "vctp.8 r5",
                column_runs!(short "r1", "1"),
                column_runs!(short "r2", "2"),
                column_runs!(short "r3", "3"),
                inout("r0") dst => _,
                inout("r1") base.wrapping_add(at[0]) => _,
                inout("r2") base.wrapping_add(at[1]) => _,
                inout("r3") base.wrapping_add(at[2]) => _,
                in("r4") src_stride,
                in("r5") len,
                in("r8") rows,
                out("r12") _,
                out("q0") _,
                options(nostack),
            );
        }
    } else if len <= 32 {
        // SAFETY: as above for runs of 16 < len ≤ 32 bytes: each run's first 16 bytes move
        // unpredicated (inside the run), the remaining `len − 16` under predication.
        unsafe {
            asm!(
                "sub r12, r5, #16",
                "vctp.8 r12",
                column_runs!(two "r1", "1"),
                column_runs!(two "r2", "2"),
                column_runs!(two "r3", "3"),
                inout("r0") dst => _,
                inout("r1") base.wrapping_add(at[0]) => _,
                inout("r2") base.wrapping_add(at[1]) => _,
                inout("r3") base.wrapping_add(at[2]) => _,
                in("r4") src_stride,
                in("r5") len,
                in("r8") rows,
                out("r12") _,
                out("q0") _,
                options(nostack),
            );
        }
    } else {
        // SAFETY: as above for runs longer than 32 bytes: per run, a tail-predicated loop over
        // exactly `len` bytes (the copy pointers r9/r10 start at the run and stop with it).
        // Clobbers q0, LR, r9, r10, r12 and the inputs.
        unsafe {
            asm!(
                column_runs!(long "r1", "1", "2"),
                column_runs!(long "r2", "3", "4"),
                column_runs!(long "r3", "5", "6"),
                inout("r0") dst => _,
                inout("r1") base.wrapping_add(at[0]) => _,
                inout("r2") base.wrapping_add(at[1]) => _,
                inout("r3") base.wrapping_add(at[2]) => _,
                in("r4") src_stride,
                in("r5") len,
                in("r8") rows,
                out("r9") _,
                out("r10") _,
                out("r12") _,
                out("lr") _,
                out("q0") _,
                options(nostack),
            );
        }
    }
}

/// Copies `runs` runs of `len` bytes, `src_stride` apart in `src`, back to back into `dst`
/// (`dst[r·len..][..len] = src[r·src_stride..][..len]`); returns false, writing nothing, unless
/// `1 ≤ len ≤ 16`, `runs ≥ 1` and both slices hold the runs. One predicated VLDRB/VSTRB pair and
/// four scalar instructions per run: the channels of one group, pixel by pixel, into a
/// convolution's staged plane.
#[inline]
pub fn copy_short_runs(
    dst: &mut [i8],
    src: &[i8],
    src_stride: usize,
    runs: usize,
    len: usize,
) -> bool {
    let fits = (1..=16).contains(&len)
        && runs.checked_mul(len).is_some_and(|e| e <= dst.len())
        && extent(runs, src_stride, len).is_some_and(|e| e <= src.len());
    if !fits {
        return false;
    }
    #[cfg(all(target_arch = "arm", vitae_mve))]
    {
        // SAFETY: run r reads src[r·src_stride..][..len] and writes dst[r·len..][..len], inside
        // both slices by the checks above (runs ≥ 1, 1 ≤ len ≤ 16); predication on the first
        // `len` lanes touches no other byte. `dst` is a unique borrow. Byte accesses. Clobbers
        // q0, VPR and the inputs.
        unsafe {
            asm!(
                "vctp.8 r3",
                "1:",
                "vpstt",
                "vldrbt.u8 q0, [r1]",
                "vstrbt.8 q0, [r0]",
                "add r0, r3",
                "add r1, r4",
                "subs r2, #1",
                "bne 1b",
                inout("r0") dst.as_mut_ptr() => _,
                inout("r1") src.as_ptr() => _,
                inout("r2") runs => _,
                in("r3") len,
                in("r4") src_stride,
                out("q0") _,
                options(nostack),
            );
        }
    }
    #[cfg(not(all(target_arch = "arm", vitae_mve)))]
    for (r, d) in dst.chunks_exact_mut(len).take(runs).enumerate() {
        d.copy_from_slice(&src[r * src_stride..][..len]);
    }
    true
}

/// [`pack3_unchecked`] with gathered runs: run `r` of column `c` is the `len` bytes
/// `base[at[c] + r·src_stride + table[j]]`, `j < len`.
///
/// # Safety
///
/// `len ≥ 1`, `rows ≥ 1`; `len` bytes are readable at `table`; for `c < 3`, `r < rows` and
/// `j < len` the byte at `base + at[c] + r·src_stride + table[j]` is readable, and the
/// `3·rows·len` bytes at `dst` writable and not accessed otherwise meanwhile.
#[cfg(all(target_arch = "arm", vitae_mve))]
#[inline(always)]
unsafe fn gather3_unchecked(
    dst: *mut i8,
    base: *const i8,
    at: [usize; 3],
    src_stride: usize,
    rows: usize,
    len: usize,
    table: *const u8,
) {
    // SAFETY: per run a tail-predicated loop over exactly `len` lanes: the offsets (r9 from the
    // table's start), the byte gather from the run's start (r1–r3, low registers as the gather
    // needs) and the store (r10 from the run's place in `dst`) touch only what the caller's
    // contract allows. Clobbers q0, q1, LR, r9, r10, r12 and the inputs.
    unsafe {
        asm!(
            column_runs!(gathered "r1", "1", "2"),
            column_runs!(gathered "r2", "3", "4"),
            column_runs!(gathered "r3", "5", "6"),
            inout("r0") dst => _,
            inout("r1") base.wrapping_add(at[0]) => _,
            inout("r2") base.wrapping_add(at[1]) => _,
            inout("r3") base.wrapping_add(at[2]) => _,
            in("r4") src_stride,
            in("r5") len,
            in("r8") rows,
            in("r11") table,
            out("r9") _,
            out("r10") _,
            out("r12") _,
            out("lr") _,
            out("q0") _,
            out("q1") _,
            options(nostack),
        );
    }
}

/// A table of offsets for [`gather_rows`] and walks: bytes when every offset fits one (then a
/// gather moves sixteen values instead of eight), else halfwords; with its largest entry
/// (computed here, so the bound [`gather_rows`] checks cannot disagree with the table).
#[derive(Clone, Copy, Debug)]
pub struct GatherTable<'a> {
    offsets: Offsets<'a>,
    max: usize,
}

/// The two widths of a [`GatherTable`].
#[derive(Clone, Copy, Debug)]
enum Offsets<'a> {
    Narrow(&'a [u8]),
    Wide(&'a [u16]),
}

impl<'a> GatherTable<'a> {
    /// Takes `offsets`, scanning them once for the largest; when that fits a byte, the table is
    /// narrowed in place (into the first half of the same memory).
    pub fn new(offsets: &'a mut [u16]) -> Self {
        let max = offsets.iter().copied().max().map_or(0, usize::from);
        if max > usize::from(u8::MAX) {
            return GatherTable {
                offsets: Offsets::Wide(offsets),
                max,
            };
        }
        let n = offsets.len();
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(offsets);
        // Byte i overwrites halfword i / 2 ≤ i, already read.
        for i in 0..n {
            let v = u16::from_ne_bytes([bytes[2 * i], bytes[2 * i + 1]]);
            bytes[i] = v as u8;
        }
        GatherTable {
            offsets: Offsets::Narrow(&bytes[..n]),
            max,
        }
    }

    /// Entries in the table.
    fn len(&self) -> usize {
        match self.offsets {
            Offsets::Narrow(t) => t.len(),
            Offsets::Wide(t) => t.len(),
        }
    }

    /// The byte offsets, when the table is narrow.
    pub fn narrow(&self) -> Option<&'a [u8]> {
        match self.offsets {
            Offsets::Narrow(t) => Some(t),
            Offsets::Wide(_) => None,
        }
    }
}

/// For `r < rows` and `j < len`: `dst[r·dst_stride + j] = src[r·src_stride + table[j]]`;
/// returns false, writing nothing, when the table is shorter than `len` or a row would leave
/// either slice (judged by the table's largest entry).
///
/// Per row five instructions and a tail-predicated loop: VLDRB (VLDRH) of the offsets, a byte
/// gather and a store, 4 instructions per 16 (8) bytes with a narrow (wide) table. The im2col
/// of a strided, dilated or grouped convolution in one call per column instead of one per tap.
#[inline(always)]
pub fn gather_rows(
    dst: &mut [i8],
    dst_stride: usize,
    src: &[i8],
    src_stride: usize,
    rows: usize,
    len: usize,
    table: &GatherTable,
) -> bool {
    let fits = |n: usize, stride, have| extent(rows, stride, n).is_some_and(|e| e <= have);
    if len > table.len()
        || !fits(len, dst_stride, dst.len())
        || !fits(table.max + 1, src_stride, src.len())
    {
        return false;
    }
    if len == 0 {
        return true;
    }
    #[cfg(all(target_arch = "arm", vitae_mve))]
    match table.offsets {
        // SAFETY: row r writes dst[r·dst_stride..][..len] (in bounds by the first extent check)
        // and reads src[r·src_stride + o] for the first `len` table entries o ≤ table.max (in
        // bounds by the second); `len ≤ table length`. rows ≥ 1 since the extents exist, len ≥
        // 1. `dst` is a unique borrow. Tail predication leaves lanes past `len` untouched. The
        // gather and the narrowing store need their bases in r0–r7. Clobbers q0, q1, LR and the
        // declared registers.
        Offsets::Wide(t) => unsafe {
            asm!(
                "1:",
                "mov r0, r3",
                "mov r2, r8",
                "mov lr, r5",
                "dlstp.16 lr, lr",
                "2:",
                "vldrh.u16 q1, [r2], #16",
                "vldrb.u16 q0, [r1, q1]",
                "vstrb.16 q0, [r0], #8",
                "letp lr, 2b",
                "add r3, r9",
                "add r1, r10",
                "subs r4, #1",
                "bne 1b",
                out("r0") _,
                inout("r1") src.as_ptr() => _,
                out("r2") _,
                inout("r3") dst.as_mut_ptr() => _,
                inout("r4") rows => _,
                in("r5") len,
                in("r8") t.as_ptr(),
                in("r9") dst_stride,
                in("r10") src_stride,
                out("lr") _,
                out("q0") _,
                out("q1") _,
                options(nostack),
            );
        },
        // SAFETY: as above with byte offsets, sixteen lanes per step.
        Offsets::Narrow(t) => unsafe {
            asm!(
                "1:",
                "mov r0, r3",
                "mov r2, r8",
                "mov lr, r5",
                "dlstp.8 lr, lr",
                "2:",
                "vldrb.u8 q1, [r2], #16",
                "vldrb.u8 q0, [r1, q1]",
                "vstrb.8 q0, [r0], #16",
                "letp lr, 2b",
                "add r3, r9",
                "add r1, r10",
                "subs r4, #1",
                "bne 1b",
                out("r0") _,
                inout("r1") src.as_ptr() => _,
                out("r2") _,
                inout("r3") dst.as_mut_ptr() => _,
                inout("r4") rows => _,
                in("r5") len,
                in("r8") t.as_ptr(),
                in("r9") dst_stride,
                in("r10") src_stride,
                out("lr") _,
                out("q0") _,
                out("q1") _,
                options(nostack),
            );
        },
    }
    #[cfg(not(all(target_arch = "arm", vitae_mve)))]
    for r in 0..rows {
        for j in 0..len {
            let o = match table.offsets {
                Offsets::Narrow(t) => usize::from(t[j]),
                Offsets::Wide(t) => usize::from(t[j]),
            };
            dst[r * dst_stride + j] = src[r * src_stride + o];
        }
    }
    true
}

/// Quantizes three planes into interleaved int8 triples: `out[3i + c] = quantize_f32(plane_c[i],
/// inv_scale, zero_point)` for `i < n`, `n` the shortest of the planes and `out.len() / 3`.
///
/// Four pixels per iteration: per channel a load, the multiply and add of `quantize_f32` (each
/// rounded, as there), the truncating conversion (saturating, NaN to 0, as Rust's `as i32`), a
/// saturating subtract of 128 and a saturating narrow to int8 (the clamp to 0..=255 less 128),
/// and a byte scatter with offsets 0, 3, 6, 9: about 2 instructions per value against 6. Helium
/// flushes a subnormal product to zero, which cannot change the result: the constant added is
/// at least 0.5 in magnitude.
#[inline]
pub fn quantize_rgb(planes: [&[f32]; 3], inv_scale: f32, zero_point: i32, out: &mut [i8]) {
    let n = planes[0]
        .len()
        .min(planes[1].len())
        .min(planes[2].len())
        .min(out.len() / 3);
    #[cfg(all(target_arch = "arm", vitae_mve))]
    {
        if n == 0 {
            return;
        }
        // `quantize_f32`'s constant: the zero point plus the rounding and range offset.
        let c = zero_point as f32 + 128.5;
        let offsets: [u32; 4] = [0, 3, 6, 9];
        // SAFETY: tail-predicated on n 32-bit lanes: reads the first n floats of each plane and
        // writes the bytes out[3i + c] (i < n, c < 3), inside `out` (3n ≤ out.len()), a unique
        // borrow; disabled lanes neither load nor store. Reads the four offsets. VLDRW needs the
        // 4-byte alignment of `f32`/`u32` slices; the scatter stores bytes. Clobbers q0–q2, LR
        // and the inputs.
        unsafe {
            asm!(
                "vldrw.u32 q2, [r8]",
                "dlstp.32 lr, lr",
                "1:",
                "vldrw.u32 q0, [r10], #16",
                "vldrw.u32 q1, [r11], #16",
                "vmul.f32 q0, q0, r4",
                "vmul.f32 q1, q1, r4",
                "vadd.f32 q0, q0, r5",
                "vadd.f32 q1, q1, r5",
                "vcvt.s32.f32 q0, q0",
                "vcvt.s32.f32 q1, q1",
                "vqsub.s32 q0, q0, r9",
                "vqsub.s32 q1, q1, r9",
                "vqshl.s32 q0, q0, #24",
                "vqshl.s32 q1, q1, #24",
                "vshr.s32 q0, q0, #24",
                "vshr.s32 q1, q1, #24",
                "vstrb.32 q0, [r0, q2]",
                "vldrw.u32 q0, [r12], #16",
                "vmul.f32 q0, q0, r4",
                "vadd.f32 q0, q0, r5",
                "vcvt.s32.f32 q0, q0",
                "vqsub.s32 q0, q0, r9",
                "vqshl.s32 q0, q0, #24",
                "vshr.s32 q0, q0, #24",
                "vstrb.32 q1, [r2, q2]",
                "vstrb.32 q0, [r3, q2]",
                "adds r0, #12",
                "adds r2, #12",
                "adds r3, #12",
                "letp lr, 1b",
                inout("r0") out.as_mut_ptr() => _,
                inout("r2") out.as_mut_ptr().wrapping_add(1) => _,
                inout("r3") out.as_mut_ptr().wrapping_add(2) => _,
                inout("r10") planes[0].as_ptr() => _,
                inout("r11") planes[1].as_ptr() => _,
                inout("r12") planes[2].as_ptr() => _,
                in("r4") inv_scale.to_bits(),
                in("r5") c.to_bits(),
                in("r8") offsets.as_ptr(),
                in("r9") 128i32,
                inout("lr") n => _,
                out("q0") _,
                out("q1") _,
                out("q2") _,
                options(nostack),
            );
        }
    }
    #[cfg(not(all(target_arch = "arm", vitae_mve)))]
    for (i, o) in out[..3 * n].chunks_exact_mut(3).enumerate() {
        for (ch, v) in o.iter_mut().enumerate() {
            *v = crate::quant::quantize_f32(planes[ch][i], inv_scale, zero_point);
        }
    }
}

/// Sets every byte of `dst` to `v` (VDUP and a tail-predicated VSTRB loop).
#[inline(always)]
pub fn fill(dst: &mut [i8], v: i8) {
    #[cfg(all(target_arch = "arm", vitae_mve))]
    {
        if dst.is_empty() {
            return;
        }
        // SAFETY: writes the first `dst.len() ≥ 1` bytes of `dst`, a unique borrow; tail
        // predication leaves the lanes beyond the end untouched. Clobbers q0 and LR only.
        unsafe {
            asm!(
                "vdup.8 q0, r1",
                "dlstp.8 lr, lr",
                "2:",
                "vstrb.8 q0, [r0], #16",
                "letp lr, 2b",
                inout("r0") dst.as_mut_ptr() => _,
                in("r1") v as i32,
                inout("lr") dst.len() => _,
                out("q0") _,
                options(nostack),
            );
        }
    }
    #[cfg(not(all(target_arch = "arm", vitae_mve)))]
    dst.fill(v);
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
            && rows % 2 == 0
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
            && w.pixels % 3 == 0
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

    /// The exponential exactly as the `softmax_row` assembly computes it, lane by lane (the
    /// same operations in the same order; `x ≤ 0`).
    fn exp_as_the_assembly_does(x: f32) -> f32 {
        const LO: f32 = -87.33;
        let xc = if x < LO { LO } else { x };
        let n = (xc * core::f32::consts::LOG2_E + 128.5) as i32 - 128;
        let nf = n as f32;
        let r = (xc - nf * 0.693_145_75) - nf * 1.428_606_8e-6;
        let mut p = r * (1.0 / 5040.0);
        for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0] {
            p = (p + c) * r;
        }
        p += 1.0;
        let half = n >> 1;
        let bits = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
        let y = p * bits(half) * bits(n - half);
        if x < LO { 0.0 } else { y }
    }

    /// Pins `math::exp` to the sequence the Helium assembly reproduces: if the reference
    /// exponential changes, this fails and `softmax_row` must change with it.
    #[test]
    fn the_assembly_exponential_is_math_exp() {
        let mut x = 0.0f32;
        let mut checked = 0;
        while x > -90.0 {
            for d in [
                x,
                f32::from_bits(x.to_bits() + 1),
                f32::from_bits(x.to_bits() + 7),
            ] {
                let (a, b) = (exp_as_the_assembly_does(d), crate::math::exp(d));
                assert_eq!(a.to_bits(), b.to_bits(), "x = {d}");
                checked += 1;
            }
            x -= 0.000_37;
        }
        // Both sides of every range-reduction boundary x·log2e = j − ½.
        for j in -126..=0 {
            let b = (j as f32 - 0.5) / core::f32::consts::LOG2_E;
            for k in 0..64u32 {
                for d in [
                    f32::from_bits(b.to_bits() + k),
                    f32::from_bits(b.to_bits() - k),
                ] {
                    let (a, e) = (exp_as_the_assembly_does(d), crate::math::exp(d));
                    assert_eq!(a.to_bits(), e.to_bits(), "x = {d}");
                }
            }
        }
        assert!(checked > 500_000);
    }

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
