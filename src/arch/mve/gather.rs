//! Helium copies and gathers of the convolution im2col: contiguous and strided runs, three
//! columns packed back to back, runs gathered through an offset table (dilated kernels), fills.

#[cfg(all(target_arch = "arm", vitae_mve))]
use core::arch::asm;

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
pub(super) fn extent(rows: usize, stride: usize, len: usize) -> Option<usize> {
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
pub(super) unsafe fn pack3_unchecked(
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
pub(super) unsafe fn gather3_unchecked(
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
