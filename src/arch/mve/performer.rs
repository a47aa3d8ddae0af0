//! Helium pieces of the performer kernel: the int16 × int8 feature dot products with the token in
//! registers, and the f32 row updates and weighted sums of its feature × channel matrix.
//!
//! The f32 updates compute in Arm flush-to-zero arithmetic, as every Helium floating-point vector
//! instruction does whatever FPSCR holds: subnormal operands read as zeros, results below 2^−126
//! (exact value, before rounding) become zeros, NaNs the default NaN. Their data can make such
//! values (tiny features times small values, cancelling sums), so instead of keeping them out
//! the other targets compute the same: the plain-Rust twins below and the host use
//! `math::ftz` (an exact emulation), the Cortex-M4/M7 their FPU in flush-to-zero mode
//! (`arch::dsp::performer`). Each product and sum is rounded (no fused multiply-add).

#[cfg(all(target_arch = "arm", vitae_mve))]
use core::arch::asm;

/// `y[i] = y[i] + a · x[i]` over `min(y.len(), x.len())` values, the product and the sum each
/// rounded with flush-to-zero (no fused multiply-add): [`crate::math::ftz::axpy`], bit for bit.
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
    crate::math::ftz::axpy(&mut y[..n], a, &x[..n]);
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
/// column `c < e` (each product and sum rounded with flush-to-zero): the performer's
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
    if e.is_multiple_of(4) && m > 0 {
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
/// product and sum rounded with flush-to-zero): the performer's output numerator, equal bit for bit to zeroing `y`
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
    if e.is_multiple_of(4) && m > 0 {
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
    if e.is_multiple_of(8) && e <= 48 && m > 0 {
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
