//! The int8 matrix-product machinery the optimized convolution, linear and attention kernels
//! share: packing of columns (im2col pixels, tokens, queries) into the layout a micro-kernel
//! reads, panels of micro-kernel calls (in `crate::arch`, assembly on the cores), and a
//! requantization equal to [`crate::quant::requantize`] that is cheaper for the usual
//! multipliers.
//!
//! A kernel packs a block of columns once, then [`block`] runs the rows (output channels) over it
//! a tile of [`TILE`] rows at a time: the flavour's panel leaves one accumulator per row and column
//! in the tile, and each column's accumulators are requantized together.
//!
//! Two flavours, selected at compile time by the kernels' entry points and both compiled for host
//! tests (on the host, `crate::arch` is plain Rust with the instructions' semantics):
//!
//! * `Dsp` (Cortex-M4/M7): one output channel × four columns per step. Columns are widened to
//!   int16 once, when packed; weights stay int8 in the model and are widened in registers
//!   (SXTB16), then SMLAD does two MACs per instruction: 13 instructions per 16 MACs.
//! * `Mve` (Cortex-M55): two output channels × three columns per step, int8 throughout, 16 MACs
//!   per VMLADAVA: 12 instructions per 96 MACs.
//!
//! The weights are always the model's plain `out × K` rows: no re-layout is needed.

// Host library builds run the reference kernels: only the scratch sizing is used there.
#![cfg_attr(not(any(test, vitae_dsp, vitae_mve, vitae_x86)), allow(dead_code))]

use super::KernelError;
use super::scratch::{Scratch, bytes_for};
use crate::quant::{Lut256, Requant, requantize, saturate_i8};
use core::ops::Range;

/// Accumulators of one micro-kernel call: `[row][column]` (a flavour uses the top-left one or two
/// rows × `COLS`).
// Only the Arm flavours' panels call `Micro::run` outside the tests.
#[cfg_attr(not(any(test, vitae_dsp, vitae_mve)), allow(dead_code))]
pub(crate) type Acc = [[i32; 4]; 2];

/// Output channels whose accumulators are collected (for every column of a block) before they are
/// requantized together, a row of channels at a time.
pub(crate) const TILE: usize = 64;

/// The im2col walk of a whole convolution group (Helium: `Block3::run_planes`): output pixel `p` (row `p / out_w`, column
/// `p % out_w`) reads `runs` runs of `run_len` bytes, `run_stride` apart, from
/// `(p / out_w)·row_step + (p % out_w)·col_step` on.
#[derive(Clone, Copy, Debug)]
// Read only by the Helium walk; the DSP flavour declines walks.
#[cfg_attr(not(any(test, vitae_mve)), allow(dead_code))]
pub(crate) struct PlaneWalk<'t> {
    /// Output pixels in all (a multiple of 3).
    pub(crate) pixels: usize,
    /// Output pixels per row.
    pub(crate) out_w: usize,
    /// Bytes from one output row's first receptive field to the next row's.
    pub(crate) row_step: usize,
    /// Bytes from one output pixel's receptive field to its right neighbour's.
    pub(crate) col_step: usize,
    /// Runs per receptive field (kernel rows).
    pub(crate) runs: usize,
    /// Bytes per run.
    pub(crate) run_len: usize,
    /// Bytes from one run to the next.
    pub(crate) run_stride: usize,
    /// When set, a run's values are `start[gather[j]]` (`j < run_len`) instead of `run_len`
    /// consecutive bytes (dilated taps).
    pub(crate) gather: Option<&'t [u8]>,
}

/// A micro-kernel flavour: how columns are packed, how a block is multiplied and how a row of
/// accumulators is requantized.
pub(crate) trait Micro {
    /// Columns (pixels, tokens, queries) per call; at most 4.
    const COLS: usize;
    /// The packed columns (and whatever staging the flavour needs), carved from the scratch.
    type Cols<'a>;
    /// Carves the column buffers for `k` values per column.
    fn carve<'a>(s: &mut Scratch<'a>, k: usize) -> Result<Self::Cols<'a>, KernelError>;
    /// Makes column `col` the `k` int8 values that `fill` writes into the row it is given.
    fn pack(cols: &mut Self::Cols<'_>, col: usize, k: usize, fill: impl FnOnce(&mut [i8]));
    /// A layer's rows checked once for [`Micro::run_prepared`].
    type Prepared<'a>;
    /// Prepares rows `range` of `rows` for whole blocks of `COLS` columns; `None` when the
    /// flavour has no such path or the rows do not suit it (then [`block`] runs every block).
    fn prepare<'a>(rows: &Rows<'a>, range: Range<usize>) -> Option<Self::Prepared<'a>> {
        let _ = (rows, range);
        None
    }
    /// A whole block of `COLS` columns with prepared rows: column `c`'s outputs go to
    /// `output[base0 + c·out_stride..]`; false (nothing written) when the flavour declines.
    fn run_prepared(
        p: &Self::Prepared<'_>,
        cols: &Self::Cols<'_>,
        tile: &mut [i32],
        output: &mut [i8],
        base0: usize,
        out_stride: usize,
    ) -> bool {
        let _ = (p, cols, tile, output, base0, out_stride);
        false
    }
    /// Every pixel of one convolution group (`walk`, receptive fields in `plane`) with prepared
    /// rows, pixel `p`'s outputs at `output[base0 + p·out_stride..]`; false (nothing written)
    /// when the flavour declines.
    #[allow(clippy::too_many_arguments)]
    fn run_walk(
        p: &Self::Prepared<'_>,
        plane: &[i8],
        walk: &PlaneWalk<'_>,
        cols: &mut Self::Cols<'_>,
        tile: &mut [i32],
        output: &mut [i8],
        base0: usize,
        out_stride: usize,
    ) -> bool {
        let _ = (p, plane, walk, cols, tile, output, base0, out_stride);
        false
    }
    /// The leading whole blocks of `tokens` back-to-back columns of `x` with prepared rows,
    /// token `t`'s outputs at `output[t·out_stride..]`; returns the tokens done (0 when the
    /// flavour declines).
    fn run_tokens(
        p: &Self::Prepared<'_>,
        x: &[i8],
        tokens: usize,
        tile: &mut [i32],
        output: &mut [i8],
        out_stride: usize,
    ) -> usize {
        let _ = (p, x, tokens, tile, output, out_stride);
        0
    }
    /// `dst[r·len..][..len] = src[r·src_stride..][..len]` for `r < runs` in one call; false
    /// (nothing written) when the flavour has no such path or the shapes do not suit it.
    fn copy_runs(dst: &mut [i8], src: &[i8], src_stride: usize, runs: usize, len: usize) -> bool {
        let _ = (dst, src, src_stride, runs, len);
        false
    }
    /// Longest run [`Micro::pack_runs`] takes (0: it has no such path).
    const RUNS_UP_TO: usize = 0;
    /// Packs all `at.len()` columns in one go when each is `rows` runs of `len` values,
    /// `src[at[c] + r·src_stride..][..len]`, making up all `k = rows·len` values of the column;
    /// false (nothing written) when the flavour has no such path or the shapes do not suit it,
    /// and the caller packs column by column.
    fn pack_runs(
        cols: &mut Self::Cols<'_>,
        src: &[i8],
        at: &[usize],
        src_stride: usize,
        rows: usize,
        len: usize,
    ) -> bool {
        let _ = (cols, src, at, src_stride, rows, len);
        false
    }
    /// Columns read where they lie, without packing: `n` columns of `k` values back to back at
    /// the start of `x` (a linear layer's consecutive tokens); `None` when the flavour needs its
    /// own layout or the block is partial, and the caller packs.
    fn in_place(x: &[i8], n: usize, k: usize) -> Option<Self::Cols<'_>> {
        let _ = (x, n, k);
        None
    }
    /// `acc[r][c] += Σ_{i<k} w[r][i] · x_c[i]` for the flavour's rows (one on DSP, two on
    /// Helium) and `c < COLS`; each `w[r]` holds at least `k` values.
    #[cfg_attr(not(any(test, vitae_dsp, vitae_mve)), allow(dead_code))]
    fn run(w: [&[i8]; 2], cols: &Self::Cols<'_>, k: usize, acc: &mut Acc);
    /// Accumulators of rows `o` (at most [`TILE`]) for every column, into the tile (flavour's
    /// layout), each starting from the row's bias.
    fn panel(rows: &Rows, cols: &Self::Cols<'_>, o: Range<usize>, tile: &mut [i32]);
    /// `out[j] = q.apply(requant[j], acc_c[j])` for the first `out.len()` tile rows of column `c`;
    /// `fast` says every channel takes the fast path (see [`all_fast`]).
    fn requant_col(
        tile: &[i32],
        c: usize,
        requant: &[Requant],
        q: &OutQuant,
        fast: bool,
        out: &mut [i8],
    );
    /// The outputs of a whole block: column `c < n` of the tile (rows `requant.len()`) into
    /// `output[base[c] + off..]`. One [`Micro::requant_col`] per column unless the flavour has
    /// something better.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn requant_block(
        tile: &[i32],
        n: usize,
        requant: &[Requant],
        q: &OutQuant,
        fast: bool,
        output: &mut [i8],
        base: [usize; 4],
        off: usize,
    ) {
        requant_each_col::<Self>(tile, n, requant, q, fast, output, base, off);
    }
    /// Copies `src` into `dst` (same length), for im2col runs of any length.
    fn copy(dst: &mut [i8], src: &[i8]);
    /// Fills `dst` with `v`.
    fn fill(dst: &mut [i8], v: i8);
    /// Copies `rows` runs of `len` values, `src_stride` apart in `src`, to runs `dst_stride`
    /// apart in `dst`; false (and nothing written) when a run would leave a slice.
    fn copy_rows(
        dst: &mut [i8],
        dst_stride: usize,
        src: &[i8],
        src_stride: usize,
        rows: usize,
        len: usize,
    ) -> bool;
    /// Channel runs shorter than this are gathered ([`Micro::gather_rows`]); longer ones are
    /// copied tap by tap.
    const GATHER_BELOW: usize;
    /// A table of byte offsets for [`Micro::gather_rows`].
    type Table<'a>;
    /// Prepares `offsets` (once per kernel call) for [`Micro::gather_rows`]; may rewrite them in
    /// place.
    fn table(offsets: &mut [u16]) -> Self::Table<'_>;
    /// The table as byte offsets, when the flavour's walks can gather with it.
    fn narrow<'t>(table: &Self::Table<'t>) -> Option<&'t [u8]> {
        let _ = table;
        None
    }
    /// `dst[r·dst_stride + j] = src[r·src_stride + offsets[j]]` for `r < rows`, `j < len`;
    /// false (and nothing written) when an access would leave a slice.
    fn gather_rows(
        dst: &mut [i8],
        dst_stride: usize,
        src: &[i8],
        src_stride: usize,
        rows: usize,
        len: usize,
        table: &Self::Table<'_>,
    ) -> bool;
}

/// Checked extent of `rows` runs of `len` values, `stride` apart.
#[cfg(any(test, vitae_x86, all(vitae_dsp, not(vitae_mve))))]
fn fits(rows: usize, stride: usize, len: usize, have: usize) -> bool {
    rows.checked_sub(1)
        .and_then(|r| r.checked_mul(stride))
        .and_then(|e| e.checked_add(len))
        .is_some_and(|e| e <= have)
}

/// `rows` runs of `len` bytes from `src` (`src_stride` apart) to `dst` (`dst_stride` apart), the
/// plain-slice `copy_rows` of the DSP and x86 flavours; false, touching nothing, when either side
/// is too short.
#[cfg(any(test, vitae_x86, all(vitae_dsp, not(vitae_mve))))]
#[inline(always)]
fn copy_rows_checked(
    dst: &mut [i8],
    dst_stride: usize,
    src: &[i8],
    src_stride: usize,
    rows: usize,
    len: usize,
) -> bool {
    if !fits(rows, dst_stride, len, dst.len()) || !fits(rows, src_stride, len, src.len()) {
        return false;
    }
    for r in 0..rows {
        dst[r * dst_stride..][..len].copy_from_slice(&src[r * src_stride..][..len]);
    }
    true
}

/// A gather table as the DSP and x86 flavours keep it: the offsets and their largest entry
/// (what the bounds check of [`gather_rows_checked`] needs).
#[cfg(any(test, vitae_x86, all(vitae_dsp, not(vitae_mve))))]
#[inline(always)]
fn table_with_max(offsets: &mut [u16]) -> (&[u16], usize) {
    let offsets: &[u16] = offsets;
    (
        offsets,
        offsets.iter().copied().max().map_or(0, usize::from),
    )
}

/// `dst[r·dst_stride + i] = src[r·src_stride + offsets[i]]` for `rows` rows and `i < len`, one
/// byte at a time; false, touching nothing, when a side is too short for the table.
#[cfg(any(test, vitae_x86, all(vitae_dsp, not(vitae_mve))))]
#[inline(always)]
fn gather_rows_checked(
    dst: &mut [i8],
    dst_stride: usize,
    src: &[i8],
    src_stride: usize,
    rows: usize,
    len: usize,
    &(offsets, max): &(&[u16], usize),
) -> bool {
    if len > offsets.len()
        || !fits(rows, dst_stride, len, dst.len())
        || !fits(rows, src_stride, max + 1, src.len())
    {
        return false;
    }
    for r in 0..rows {
        let (d, s) = (&mut dst[r * dst_stride..][..len], &src[r * src_stride..]);
        for (d, &o) in d.iter_mut().zip(offsets) {
            *d = s[usize::from(o)];
        }
    }
    true
}

/// Cortex-M4/M7 flavour (see the module docs).
#[cfg(any(test, all(vitae_dsp, not(vitae_mve))))]
#[derive(Debug)]
pub(crate) struct Dsp;

/// The DSP flavour's columns: one int8 staging row and the packed int16 columns.
#[cfg(any(test, all(vitae_dsp, not(vitae_mve))))]
#[derive(Debug)]
pub(crate) struct DspCols<'a> {
    stage: &'a mut [i8],
    packed: &'a mut [u32],
}

#[cfg(any(test, all(vitae_dsp, not(vitae_mve))))]
impl DspCols<'_> {
    /// Stores `v` (int16) as value `k` of column `col`, for callers that produce int16 columns
    /// themselves (attention's probabilities).
    #[inline(always)]
    pub(crate) fn set16(&mut self, col: usize, k: usize, v: i16) {
        let (word, high) = crate::arch::dsp::packed_index(col, k);
        if let Some(w) = self.packed.get_mut(word) {
            let v = v as u16 as u32;
            *w = if high {
                (*w & 0xffff) | v << 16
            } else {
                (*w & 0xffff_0000) | v
            };
        }
    }
}

/// Scratch bytes `Dsp::carve` takes for `k` values per column.
pub(crate) fn dsp_cols_bytes(k: usize) -> usize {
    let blocks = k.div_ceil(4);
    bytes_for::<u32>(blocks) + bytes_for::<u32>(blocks * 8)
}

/// Scratch bytes `Mve::carve` takes for `k` values per column.
pub(crate) fn mve_cols_bytes(k: usize) -> usize {
    bytes_for::<i8>(3 * k)
}

#[cfg(any(test, all(vitae_dsp, not(vitae_mve))))]
impl Micro for Dsp {
    const COLS: usize = 4;
    type Cols<'a> = DspCols<'a>;
    /// No prepared path: every block goes through [`block`].
    type Prepared<'a> = ();

    fn carve<'a>(s: &mut Scratch<'a>, k: usize) -> Result<DspCols<'a>, KernelError> {
        let blocks = k.div_ceil(4);
        Ok(DspCols {
            // Word-aligned, for the LDM of the widening.
            stage: bytemuck::cast_slice_mut(s.take::<u32>(blocks, "scratch (im2col row)")?),
            packed: s.take::<u32>(blocks * crate::arch::dsp::BLOCK_WORDS, "scratch (columns)")?,
        })
    }

    /// Fills the int8 staging row, then widens it four values at a time: SXTB16 of four bytes
    /// gives exactly the two packed words of the layout `crate::arch::dsp::mac_1x4` reads. Staging bytes
    /// past `k` (up to the next multiple of 4) are never written, so stay zero; they meet zero
    /// weights in [`Micro::run`] anyway.
    #[inline]
    fn pack(cols: &mut DspCols<'_>, col: usize, k: usize, fill: impl FnOnce(&mut [i8])) {
        if let Some(row) = cols.stage.get_mut(..k) {
            fill(row);
        }
        crate::arch::dsp::widen(cols.stage, col, cols.packed);
    }

    #[inline(always)]
    fn run(w: [&[i8]; 2], cols: &DspCols<'_>, k: usize, acc: &mut Acc) {
        use crate::arch::dsp::{BLOCK_WORDS, mac_1x4, smlad, sxtb16, sxtb16_ror8};
        let w = w[0];
        let k4 = k / 4 * 4;
        acc[0] = mac_1x4(w.get(..k4).unwrap_or(w), cols.packed, acc[0]);
        if k4 < k {
            // The last k % 4 weights, zero-padded to a block: one more block of SMLADs.
            let mut b = [0u8; 4];
            for (d, &v) in b.iter_mut().zip(w.get(k4..k).unwrap_or_default()) {
                *d = v as u8;
            }
            let raw = u32::from_le_bytes(b);
            let (e, o) = (sxtb16(raw), sxtb16_ror8(raw));
            if let Some(blk) = cols
                .packed
                .get(k4 / 4 * BLOCK_WORDS..(k4 / 4 + 1) * BLOCK_WORDS)
            {
                for (c, a) in acc[0].iter_mut().enumerate() {
                    *a = smlad(o, blk[4 + c], smlad(e, blk[c], *a));
                }
            }
        }
    }

    /// Tile layout `[row][column]`: four words per row. The row loop runs in one assembly
    /// panel (for `k ≥ 4`).
    #[inline]
    fn panel(rows: &Rows, cols: &DspCols<'_>, o: Range<usize>, tile: &mut [i32]) {
        let k = rows.k;
        let w = rows.w.get(o.start * rows.stride..).unwrap_or_default();
        let bias = rows.bias.get(o.start..).unwrap_or_default();
        let n = o.len();
        if crate::arch::dsp::panel_1x4(w, k, rows.stride, cols.packed, bias, tile, n) {
            return;
        }
        for (t, oc) in tile.chunks_exact_mut(4).zip(o) {
            let w = &rows.w[oc * rows.stride..][..k];
            let mut acc = [[rows.bias[oc]; 4]; 2];
            Self::run([w, w], cols, k, &mut acc);
            t.copy_from_slice(&acc[0]);
        }
    }

    /// Four columns with evenly spaced outputs (every full block of a convolution or a linear
    /// layer) go through one [`crate::arch::dsp::requant_block4`] call.
    #[inline]
    fn requant_block(
        tile: &[i32],
        n: usize,
        requant: &[Requant],
        q: &OutQuant,
        fast: bool,
        output: &mut [i8],
        base: [usize; 4],
        off: usize,
    ) {
        if n == 4
            && fast
            && let Some(stride) = even_stride(&base[..4])
            && let Some(out) = output.get_mut(base[0] + off..)
        {
            let pairs: &[[i32; 2]] = bytemuck::cast_slice(requant);
            let lut = q.act.map(|l| &l.0);
            let len = requant.len();
            if crate::arch::dsp::requant_block4(tile, pairs, q.zp, lut, out, stride, len) {
                return;
            }
        }
        requant_each_col::<Self>(tile, n, requant, q, fast, output, base, off);
    }

    #[inline]
    fn requant_col(
        tile: &[i32],
        c: usize,
        requant: &[Requant],
        q: &OutQuant,
        fast: bool,
        out: &mut [i8],
    ) {
        if fast {
            let pairs: &[[i32; 2]] = bytemuck::cast_slice(requant);
            let acc = tile.get(c..).unwrap_or_default();
            crate::arch::dsp::requant_col(acc, pairs, q.zp, q.act.map(|l| &l.0), out);
        } else {
            let acc = tile.iter().skip(c).step_by(4).copied();
            requant_scalar(acc, requant, q, false, out);
        }
    }

    #[inline(always)]
    fn copy(dst: &mut [i8], src: &[i8]) {
        crate::arch::dsp::copy(dst, src);
    }

    #[inline(always)]
    fn fill(dst: &mut [i8], v: i8) {
        dst.fill(v);
    }

    #[inline]
    fn copy_rows(
        dst: &mut [i8],
        dst_stride: usize,
        src: &[i8],
        src_stride: usize,
        rows: usize,
        len: usize,
    ) -> bool {
        copy_rows_checked(dst, dst_stride, src, src_stride, rows, len)
    }

    /// A byte-wise gather costs about 7 instructions per value here, a 4-byte copy about 4.
    const GATHER_BELOW: usize = 4;

    /// The table and its largest entry.
    type Table<'a> = (&'a [u16], usize);

    fn table(offsets: &mut [u16]) -> (&[u16], usize) {
        table_with_max(offsets)
    }

    #[inline]
    fn gather_rows(
        dst: &mut [i8],
        dst_stride: usize,
        src: &[i8],
        src_stride: usize,
        rows: usize,
        len: usize,
        table: &(&[u16], usize),
    ) -> bool {
        gather_rows_checked(dst, dst_stride, src, src_stride, rows, len, table)
    }
}

/// Cortex-M55 flavour (see the module docs).
#[cfg(any(test, vitae_mve))]
#[derive(Debug)]
pub(crate) struct Mve;

/// The Helium flavour's columns: three int8 rows of `k` values, back to back.
#[cfg(any(test, vitae_mve))]
#[derive(Debug)]
pub(crate) struct MveCols<'a> {
    /// The packing buffer.
    buf: &'a mut [i8],
    /// Columns read in place instead ([`Micro::in_place`]).
    ext: Option<&'a [i8]>,
}

#[cfg(any(test, vitae_mve))]
impl MveCols<'_> {
    /// The three columns the micro-kernel reads.
    #[inline(always)]
    fn x(&self) -> &[i8] {
        self.ext.unwrap_or(self.buf)
    }
}

#[cfg(any(test, vitae_mve))]
impl Micro for Mve {
    const COLS: usize = 3;
    type Cols<'a> = MveCols<'a>;
    type Prepared<'a> = crate::arch::mve::Block3<'a>;

    /// Rows with the fast requantization and an even count.
    fn prepare<'a>(rows: &Rows<'a>, range: Range<usize>) -> Option<crate::arch::mve::Block3<'a>> {
        if !rows.fast {
            return None;
        }
        let pairs: &[[i32; 2]] = bytemuck::cast_slice(rows.requant);
        crate::arch::mve::Block3::new(
            rows.w.get(range.start * rows.stride..)?,
            rows.k,
            rows.stride,
            rows.bias.get(range.start..)?,
            pairs.get(range.start..)?,
            rows.q.zp,
            rows.q.act.map(|l| &l.0),
            range.len(),
        )
    }

    fn run_walk(
        p: &crate::arch::mve::Block3<'_>,
        plane: &[i8],
        walk: &PlaneWalk<'_>,
        cols: &mut MveCols<'_>,
        tile: &mut [i32],
        output: &mut [i8],
        base0: usize,
        out_stride: usize,
    ) -> bool {
        cols.ext = None;
        output
            .get_mut(base0..)
            .is_some_and(|out| p.run_planes(plane, walk, cols.buf, tile, out, out_stride))
    }

    fn copy_runs(dst: &mut [i8], src: &[i8], src_stride: usize, runs: usize, len: usize) -> bool {
        crate::arch::mve::copy_short_runs(dst, src, src_stride, runs, len)
    }

    fn run_tokens(
        p: &crate::arch::mve::Block3<'_>,
        x: &[i8],
        tokens: usize,
        tile: &mut [i32],
        output: &mut [i8],
        out_stride: usize,
    ) -> usize {
        p.run_tokens(x, tokens, tile, output, out_stride)
    }

    #[inline(always)]
    fn run_prepared(
        p: &crate::arch::mve::Block3<'_>,
        cols: &MveCols<'_>,
        tile: &mut [i32],
        output: &mut [i8],
        base0: usize,
        out_stride: usize,
    ) -> bool {
        output
            .get_mut(base0..)
            .is_some_and(|out| p.run(cols.x(), tile, out, out_stride))
    }

    fn carve<'a>(s: &mut Scratch<'a>, k: usize) -> Result<MveCols<'a>, KernelError> {
        Ok(MveCols {
            buf: s.take::<i8>(3 * k, "scratch (columns)")?,
            ext: None,
        })
    }

    #[inline(always)]
    fn pack(cols: &mut MveCols<'_>, col: usize, k: usize, fill: impl FnOnce(&mut [i8])) {
        cols.ext = None;
        if let Some(row) = cols.buf.get_mut(col * k..(col + 1) * k) {
            fill(row);
        }
    }

    const RUNS_UP_TO: usize = usize::MAX;

    /// Three columns of runs: one assembly call
    /// ([`crate::arch::mve::pack3_short`]).
    #[inline(always)]
    fn pack_runs(
        cols: &mut MveCols<'_>,
        src: &[i8],
        at: &[usize],
        src_stride: usize,
        rows: usize,
        len: usize,
    ) -> bool {
        match *at {
            [a0, a1, a2] if 3 * rows * len == cols.buf.len() => {
                cols.ext = None;
                crate::arch::mve::pack3_short(cols.buf, src, [a0, a1, a2], src_stride, rows, len)
            }
            _ => false,
        }
    }

    /// Three whole columns: the panel reads them from `x` directly.
    #[inline(always)]
    fn in_place(x: &[i8], n: usize, k: usize) -> Option<MveCols<'_>> {
        let x = x.get(..3 * k).filter(|_| n == 3)?;
        Some(MveCols {
            buf: &mut [],
            ext: Some(x),
        })
    }

    #[inline(always)]
    fn run(w: [&[i8]; 2], cols: &MveCols<'_>, k: usize, acc: &mut Acc) {
        let x = cols.x();
        let (x0, rest) = x.split_at(k.min(x.len()));
        let (x1, x2) = rest.split_at(k.min(rest.len()));
        let a = crate::arch::mve::mac_2x3(
            w,
            [x0, x1, x2],
            k,
            [
                acc[0][0], acc[0][1], acc[0][2], acc[1][0], acc[1][1], acc[1][2],
            ],
        );
        acc[0][..3].copy_from_slice(&a[..3]);
        acc[1][..3].copy_from_slice(&a[3..]);
    }

    /// Tile layout `[column][row]`, columns `TILE_STRIDE` words apart: the pair loop runs in
    /// one assembly panel, an odd last row as a pair with itself.
    #[inline(always)]
    fn panel(rows: &Rows, cols: &MveCols<'_>, o: Range<usize>, tile: &mut [i32]) {
        use crate::arch::mve::{TILE_STRIDE, panel_2x3};
        let k = rows.k;
        let pairs = o.len() / 2;
        let bias = rows.bias.get(o.start..).unwrap_or_default();
        let w = rows.w.get(o.start * rows.stride..).unwrap_or_default();
        panel_2x3(w, k, rows.stride, cols.x(), bias, tile, pairs);
        if o.len() % 2 == 1 {
            let last = o.end - 1;
            let w = &rows.w[last * rows.stride..][..k];
            let mut acc = [[rows.bias[last]; 4]; 2];
            Self::run([w, w], cols, k, &mut acc);
            for (c, &a) in acc[0].iter().enumerate().take(3) {
                tile[c * TILE_STRIDE + last - o.start] = a;
            }
        }
    }

    #[inline]
    fn requant_col(
        tile: &[i32],
        c: usize,
        requant: &[Requant],
        q: &OutQuant,
        fast: bool,
        out: &mut [i8],
    ) {
        use crate::arch::mve::TILE_STRIDE;
        let acc = tile.get(c * TILE_STRIDE..).unwrap_or_default();
        if fast {
            let pairs: &[[i32; 2]] = bytemuck::cast_slice(requant);
            crate::arch::mve::requant_row(acc, pairs, q.zp, q.act.map(|l| &l.0), out);
        } else {
            requant_scalar(acc.iter().copied(), requant, q, false, out);
        }
    }

    /// Three columns with evenly spaced outputs (every full block of a convolution or a
    /// linear layer) go through one [`crate::arch::mve::requant_block3`] call.
    #[inline(always)]
    fn requant_block(
        tile: &[i32],
        n: usize,
        requant: &[Requant],
        q: &OutQuant,
        fast: bool,
        output: &mut [i8],
        base: [usize; 4],
        off: usize,
    ) {
        if n == 3
            && fast
            && let Some(stride) = even_stride(&base[..3])
            && let Some(out) = output.get_mut(base[0] + off..)
        {
            let pairs: &[[i32; 2]] = bytemuck::cast_slice(requant);
            let lut = q.act.map(|l| &l.0);
            let len = requant.len();
            if crate::arch::mve::requant_block3(tile, pairs, q.zp, lut, out, stride, len) {
                return;
            }
        }
        requant_each_col::<Self>(tile, n, requant, q, fast, output, base, off);
    }

    #[inline(always)]
    fn copy(dst: &mut [i8], src: &[i8]) {
        crate::arch::mve::copy(dst, src);
    }

    #[inline(always)]
    fn fill(dst: &mut [i8], v: i8) {
        crate::arch::mve::fill(dst, v);
    }

    #[inline(always)]
    fn copy_rows(
        dst: &mut [i8],
        dst_stride: usize,
        src: &[i8],
        src_stride: usize,
        rows: usize,
        len: usize,
    ) -> bool {
        crate::arch::mve::copy_rows(dst, dst_stride, src, src_stride, rows, len)
    }

    const GATHER_BELOW: usize = usize::MAX;

    type Table<'a> = crate::arch::mve::GatherTable<'a>;

    fn table(offsets: &mut [u16]) -> crate::arch::mve::GatherTable<'_> {
        crate::arch::mve::GatherTable::new(offsets)
    }

    // The bound makes `'t` early-bound, as the trait's projection makes it there.
    fn narrow<'t>(table: &crate::arch::mve::GatherTable<'t>) -> Option<&'t [u8]>
    where
        't: 't,
    {
        table.narrow()
    }

    #[inline(always)]
    fn gather_rows(
        dst: &mut [i8],
        dst_stride: usize,
        src: &[i8],
        src_stride: usize,
        rows: usize,
        len: usize,
        table: &Self::Table<'_>,
    ) -> bool {
        crate::arch::mve::gather_rows(dst, dst_stride, src, src_stride, rows, len, table)
    }
}

/// x86-64 host flavour (AVX2 chosen at run time, see `crate::arch::x86`): one or two output
/// channels × four columns per step. Columns are widened to int16 once, when packed; weights stay
/// int8 in the model and are widened in registers; VPMADDWD does sixteen exact MACs per
/// instruction.
#[cfg(vitae_x86)]
#[derive(Debug)]
pub(crate) struct Avx2;

/// The x86 flavour's columns: one int8 staging row and four int16 columns of `k` values, back to
/// back. Fits in the DSP flavour's bytes (`dsp_cols_bytes`): k + 8k ≤ 4⌈k/4⌉ + 32⌈k/4⌉.
#[cfg(vitae_x86)]
#[derive(Debug)]
pub(crate) struct Avx2Cols<'a> {
    stage: &'a mut [i8],
    cols: &'a mut [i16],
    k: usize,
}

#[cfg(vitae_x86)]
impl Avx2Cols<'_> {
    /// Stores `v` (int16) as value `k` of column `col`, for callers that produce int16 columns
    /// themselves (attention's probabilities).
    #[inline(always)]
    pub(crate) fn set16(&mut self, col: usize, k: usize, v: i16) {
        if k < self.k
            && let Some(d) = self.cols.get_mut(col * self.k + k)
        {
            *d = v;
        }
    }

    /// The four columns (attention reads its probabilities from them).
    #[inline(always)]
    pub(crate) fn columns(&self) -> [&[i16]; 4] {
        self.each()
    }

    /// The four columns.
    #[inline(always)]
    fn each(&self) -> [&[i16]; 4] {
        let k = self.k;
        core::array::from_fn(|c| self.cols.get(c * k..(c + 1) * k).unwrap_or_default())
    }
}

#[cfg(vitae_x86)]
impl Micro for Avx2 {
    const COLS: usize = 4;
    type Cols<'a> = Avx2Cols<'a>;
    /// No prepared path: every block goes through [`block`].
    type Prepared<'a> = ();

    fn carve<'a>(s: &mut Scratch<'a>, k: usize) -> Result<Avx2Cols<'a>, KernelError> {
        Ok(Avx2Cols {
            cols: s.take::<i16>(4 * k, "scratch (columns)")?,
            stage: s.take::<i8>(k, "scratch (im2col row)")?,
            k,
        })
    }

    #[inline]
    fn pack(cols: &mut Avx2Cols<'_>, col: usize, k: usize, fill: impl FnOnce(&mut [i8])) {
        if let Some(row) = cols.stage.get_mut(..k) {
            fill(row);
            if let Some(dst) = cols.cols.get_mut(col * k..(col + 1) * k) {
                for (d, &v) in dst.iter_mut().zip(row.iter()) {
                    *d = i16::from(v);
                }
            }
        }
    }

    #[inline]
    fn run(w: [&[i8]; 2], cols: &Avx2Cols<'_>, k: usize, acc: &mut Acc) {
        let mut t = [0i32; 4];
        let w = w[0].get(..k).unwrap_or_default();
        crate::arch::x86::panel_1x4(w, k, k, cols.each(), &[0], &mut t, 1);
        for (a, &v) in acc[0].iter_mut().zip(&t) {
            *a = a.wrapping_add(v);
        }
    }

    /// Tile layout `[row][column]`: four words per row, as the DSP flavour's.
    #[inline]
    fn panel(rows: &Rows, cols: &Avx2Cols<'_>, o: Range<usize>, tile: &mut [i32]) {
        let w = rows.w.get(o.start * rows.stride..).unwrap_or_default();
        let bias = rows.bias.get(o.start..o.end).unwrap_or_default();
        crate::arch::x86::panel_1x4(w, rows.k, rows.stride, cols.each(), bias, tile, o.len());
    }

    #[inline]
    fn requant_col(
        tile: &[i32],
        c: usize,
        requant: &[Requant],
        q: &OutQuant,
        fast: bool,
        out: &mut [i8],
    ) {
        let acc = tile.iter().skip(c).step_by(4).copied();
        requant_scalar(acc, requant, q, fast, out);
    }

    /// With the fast requantization, the whole tile at once (eight lanes: two rows × four
    /// columns, `crate::arch::x86::requant_fast4`), then the activation table and the stores
    /// column by column.
    #[inline]
    fn requant_block(
        tile: &[i32],
        n: usize,
        requant: &[Requant],
        q: &OutQuant,
        fast: bool,
        output: &mut [i8],
        base: [usize; 4],
        off: usize,
    ) {
        let rows = requant.len();
        if !fast || rows > TILE || tile.len() < 4 * rows {
            requant_each_col::<Self>(tile, n, requant, q, fast, output, base, off);
            return;
        }
        let mut v = [0i32; 4 * TILE];
        let pairs: &[[i32; 2]] = bytemuck::cast_slice(requant);
        crate::arch::x86::requant_fast4(tile, pairs, q.zp, &mut v[..4 * rows]);
        for (c, &b) in base.iter().enumerate().take(n) {
            let out = &mut output[b + off..][..rows];
            for (o, &x) in out.iter_mut().zip(v.iter().skip(c).step_by(4)) {
                *o = q.activate(x as i8);
            }
        }
    }

    #[inline(always)]
    fn copy(dst: &mut [i8], src: &[i8]) {
        let n = dst.len().min(src.len());
        dst[..n].copy_from_slice(&src[..n]);
    }

    #[inline(always)]
    fn fill(dst: &mut [i8], v: i8) {
        dst.fill(v);
    }

    #[inline]
    fn copy_rows(
        dst: &mut [i8],
        dst_stride: usize,
        src: &[i8],
        src_stride: usize,
        rows: usize,
        len: usize,
    ) -> bool {
        copy_rows_checked(dst, dst_stride, src, src_stride, rows, len)
    }

    const GATHER_BELOW: usize = 4;

    /// The table and its largest entry.
    type Table<'a> = (&'a [u16], usize);

    fn table(offsets: &mut [u16]) -> (&[u16], usize) {
        table_with_max(offsets)
    }

    #[inline]
    fn gather_rows(
        dst: &mut [i8],
        dst_stride: usize,
        src: &[i8],
        src_stride: usize,
        rows: usize,
        len: usize,
        table: &(&[u16], usize),
    ) -> bool {
        gather_rows_checked(dst, dst_stride, src, src_stride, rows, len, table)
    }
}

/// Scalar output stage shared by the flavours (see [`OutQuant::apply`]).
#[inline]
fn requant_scalar(
    acc: impl Iterator<Item = i32>,
    requant: &[Requant],
    q: &OutQuant,
    fast: bool,
    out: &mut [i8],
) {
    if fast {
        for ((o, a), r) in out.iter_mut().zip(acc).zip(requant) {
            // Zero multipliers give 0 whatever the shift; `& 31` keeps their shift in range.
            let sh = ((-2 - r.shift) as u32) & 31;
            let hi = ((i64::from(a) * i64::from(r.multiplier)) >> 32) as i32;
            *o = q.activate(saturate_i8((((hi >> sh) + 1) >> 1) + q.zp));
        }
    } else {
        for ((o, a), r) in out.iter_mut().zip(acc).zip(requant) {
            *o = q.apply(Channel::new(*r), a);
        }
    }
}

/// True when every channel can use the fast requantization: `shift ≤ −2`, or a zero multiplier.
pub(crate) fn all_fast(requant: &[Requant]) -> bool {
    requant.iter().all(|r| r.shift <= -2 || r.multiplier == 0)
}

/// The weights side of a matrix product: `out × k` int8 rows with their bias and requantization.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rows<'a> {
    pub(crate) w: &'a [i8],
    pub(crate) k: usize,
    /// Elements from one row of `w` to the next (`k` for a weight matrix).
    pub(crate) stride: usize,
    pub(crate) bias: &'a [i32],
    pub(crate) requant: &'a [Requant],
    pub(crate) q: OutQuant<'a>,
    pub(crate) fast: bool,
}

/// Multiplies the `n` packed columns by rows `range` and writes column `c`'s outputs to
/// `output[base[c]..][..range.len()]`: per tile of [`TILE`] rows, the flavour's panel fills the
/// accumulator tile, then each column's accumulators are requantized at once.
#[inline(always)]
pub(crate) fn block<M: Micro>(
    rows: &Rows,
    cols: &M::Cols<'_>,
    n: usize,
    range: Range<usize>,
    tile: &mut [i32],
    output: &mut [i8],
    base: [usize; 4],
) {
    let mut t0 = range.start;
    while t0 < range.end {
        let t1 = (t0 + TILE).min(range.end);
        M::panel(rows, cols, t0..t1, tile);
        M::requant_block(
            tile,
            n,
            &rows.requant[t0..t1],
            &rows.q,
            rows.fast,
            output,
            base,
            t0 - range.start,
        );
        t0 = t1;
    }
}

/// [`block`], or one [`Micro::run_prepared`] call when the flavour prepared the rows and the
/// block is whole with evenly spaced outputs (every full block of a convolution or a linear
/// layer).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn block_prepared<M: Micro>(
    prepared: Option<&M::Prepared<'_>>,
    rows: &Rows,
    cols: &M::Cols<'_>,
    n: usize,
    range: Range<usize>,
    tile: &mut [i32],
    output: &mut [i8],
    base: [usize; 4],
) {
    if let Some(p) = prepared {
        let step = base[1].wrapping_sub(base[0]);
        let even = base[1] > base[0] && base[2].wrapping_sub(base[1]) == step;
        if n == M::COLS && even && M::run_prepared(p, cols, tile, output, base[0], step) {
            return;
        }
    }
    block::<M>(rows, cols, n, range, tile, output, base);
}

/// [`Micro::requant_block`] one column at a time.
#[inline]
#[allow(clippy::too_many_arguments)]
fn requant_each_col<M: Micro + ?Sized>(
    tile: &[i32],
    n: usize,
    requant: &[Requant],
    q: &OutQuant,
    fast: bool,
    output: &mut [i8],
    base: [usize; 4],
    off: usize,
) {
    for (c, &b) in base.iter().enumerate().take(n) {
        M::requant_col(
            tile,
            c,
            requant,
            q,
            fast,
            &mut output[b + off..][..requant.len()],
        );
    }
}

/// The common step of increasing output bases `base` (a block's columns whose outputs are evenly
/// spaced), or `None`.
#[cfg(any(test, vitae_dsp, vitae_mve))]
#[inline(always)]
fn even_stride(base: &[usize]) -> Option<usize> {
    let stride = base.get(1)?.checked_sub(base[0]).filter(|&s| s > 0)?;
    base.windows(2)
        .all(|w| w[1].wrapping_sub(w[0]) == stride)
        .then_some(stride)
}

/// Words of the accumulator tile, enough for either flavour's layout.
pub(crate) const TILE_WORDS: usize = 4 * (TILE + 2);

/// Scratch bytes of the matrix-product path for `k` values per column, whichever flavour the
/// target uses: blobs are planned on the host, so the answer must not depend on the build. The
/// larger of the two flavours' column buffers (DSP: an int8 staging row and four int16 columns,
/// about 9 bytes per value of `k`; Helium: three int8 columns), plus the accumulator tile,
/// alignment included.
pub(crate) fn gemm_scratch_bytes(k: usize) -> usize {
    dsp_cols_bytes(k).max(mve_cols_bytes(k)) + bytes_for::<i32>(TILE_WORDS)
}

/// One output channel's requantization, prepared for [`OutQuant::apply`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Channel {
    r: Requant,
    /// `−2 − shift`, when `shift ≤ −2` (then the fast path applies).
    sh: Option<u32>,
}

impl Channel {
    /// Prepares `r` (valid, as the kernels' constructors check). A zero multiplier gives 0
    /// whatever the shift, so it takes the fast path too.
    #[inline(always)]
    pub(crate) fn new(r: Requant) -> Self {
        let sh = if r.multiplier == 0 {
            Some(0)
        } else {
            (r.shift <= -2).then(|| (-2 - r.shift) as u32)
        };
        Channel { r, sh }
    }
}

/// Output stage of the int8 kernels: requantize, add the zero point, saturate, activation table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutQuant<'a> {
    pub(crate) zp: i32,
    pub(crate) act: Option<&'a Lut256>,
}

impl OutQuant<'_> {
    /// `act(saturate(requantize(acc, ch) + zp))`, equal to the reference kernels' `finish`.
    ///
    /// For `shift ≤ −2` (every multiplier below 0.25, i.e. practically every layer) the total
    /// right shift `31 − shift` of the 64-bit product is at least 33, so the reference
    /// `((p >> (30 − shift)) as i32 + 1) >> 1`-style rounding can start from the high word of the
    /// product: `p >> (30 − shift) = (p >> 32) >> (−2 − shift)` (floor divisions by powers of two
    /// compose), `|p >> 32| < 2^30` fits an i32, and `(x >> 1) + (x & 1) = (x + 1) >> 1`. The
    /// result is below 2^29 in magnitude, so adding the zero point cannot saturate. That is one
    /// SMULL and three ALU operations instead of a 64-bit variable shift.
    #[inline(always)]
    pub(crate) fn apply(&self, ch: Channel, acc: i32) -> i8 {
        let v = match ch.sh {
            Some(sh) => {
                let hi = ((i64::from(acc) * i64::from(ch.r.multiplier)) >> 32) as i32;
                (((hi >> sh) + 1) >> 1) + self.zp
            }
            None => requantize(acc, ch.r).saturating_add(self.zp),
        };
        self.activate(saturate_i8(v))
    }

    /// The activation table, if any.
    #[inline(always)]
    pub(crate) fn activate(&self, q: i8) -> i8 {
        match self.act {
            Some(lut) => lut.apply(q),
            None => q,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fast_requantization_equals_the_reference(
            acc in any::<i32>(),
            m in (1i32 << 30)..=i32::MAX,
            shift in -31i32..=30,
            zp in -128i32..=127,
        ) {
            let r = Requant { multiplier: m, shift };
            let q = OutQuant { zp, act: None };
            let want = saturate_i8(requantize(acc, r).saturating_add(zp));
            prop_assert_eq!(q.apply(Channel::new(r), acc), want);
        }
    }

    #[test]
    fn fast_requantization_edge_values() {
        for m in [0, 1 << 30, i32::MAX] {
            for shift in [-31, -30, -8, -2, -1, 0, 30] {
                for acc in [i32::MIN, i32::MIN + 1, -1, 0, 1, 12345, i32::MAX] {
                    let r = Requant {
                        multiplier: m,
                        shift,
                    };
                    let q = OutQuant { zp: -5, act: None };
                    let want = saturate_i8(requantize(acc, r).saturating_add(-5));
                    assert_eq!(q.apply(Channel::new(r), acc), want, "{m} {shift} {acc}");
                    // Both paths against the exact value in 128 bits (round half up of
                    // acc·M / 2^(31 − shift), plus the zero point, saturated to int8).
                    let total = 31 - shift;
                    let exact = (i128::from(acc) * i128::from(m) + (1i128 << (total - 1))) >> total;
                    let exact = (exact - 5).clamp(-128, 127) as i8;
                    assert_eq!(want, exact, "{m} {shift} {acc}");
                }
            }
        }
    }

    fn check_micro<M: Micro>(k: usize, seed: u32) {
        let mut rng = crate::kernels::cases::Rng(seed);
        let mut mem = vec![0u8; gemm_scratch_bytes(k) + 7];
        let mut s = Scratch::new(&mut mem[1..]);
        let mut cols = M::carve(&mut s, k).unwrap();
        // Pack twice: the second packing must fully replace the first.
        let mut x = vec![vec![0i8; k]; M::COLS];
        for _ in 0..2 {
            for (c, xc) in x.iter_mut().enumerate() {
                *xc = rng.i8s(k);
                M::pack(&mut cols, c, k, |row| M::copy(row, xc));
            }
        }
        let w = [rng.i8s(k), rng.i8s(k)];
        let mut acc = [[7; 4]; 2];
        M::run([&w[0], &w[1]], &cols, k, &mut acc);
        for r in 0..if M::COLS == 4 { 1 } else { 2 } {
            for c in 0..M::COLS {
                let want = 7 + (0..k).map(|i| w[r][i] as i32 * x[c][i] as i32).sum::<i32>();
                assert_eq!(acc[r][c], want, "k={k} r={r} c={c}");
            }
        }
    }

    #[test]
    fn micro_kernels_compute_dot_products() {
        for k in [1, 2, 3, 4, 5, 15, 16, 17, 27, 33, 64, 147, 576] {
            check_micro::<Dsp>(k, k as u32);
            check_micro::<Mve>(k, k as u32 + 1000);
            #[cfg(vitae_x86)]
            check_micro::<Avx2>(k, k as u32 + 2000);
        }
    }

    /// Puts `acc` in column 1 of a tile (found by probing the flavour's layout with a panel) and
    /// requantizes it.
    fn requant_via_tile<M: Micro>(
        acc: &[i32],
        requant: &[Requant],
        q: &OutQuant,
        fast: bool,
        out: &mut [i8],
    ) {
        // A panel over a k = 1 product with weights 1 and column 1 equal to 1 gives bias + 1.
        let n = acc.len();
        let mut mem = vec![0u8; gemm_scratch_bytes(1)];
        let mut s = Scratch::new(&mut mem);
        let mut cols = M::carve(&mut s, 1).unwrap();
        for c in 0..M::COLS {
            M::pack(&mut cols, c, 1, |row| row[0] = (c == 1) as i8);
        }
        let w = vec![1i8; n];
        let bias: Vec<i32> = acc.iter().map(|&a| a.wrapping_sub(1)).collect();
        let rows = Rows {
            w: &w,
            k: 1,
            stride: 1,
            bias: &bias,
            requant,
            q: *q,
            fast,
        };
        let mut tile = vec![0i32; TILE_WORDS];
        M::panel(&rows, &cols, 0..n, &mut tile);
        M::requant_col(&tile, 1, requant, q, fast, out);
    }

    fn check_requant_row<M: Micro>(seed: u32) {
        let mut rng = crate::kernels::cases::Rng(seed);
        for n in [1, 3, 4, 5, 63, 64] {
            let acc: Vec<i32> = (0..n)
                .map(|_| (rng.next_u32() as i32) >> (rng.next_u32() % 24))
                .collect();
            let requant = rng.requants(n, if seed.is_multiple_of(2) { -8 } else { 0 });
            let lut = rng.lut();
            for act in [None, Some(&lut)] {
                let q = OutQuant {
                    zp: rng.next_u32() as i8 as i32,
                    act,
                };
                let want: Vec<i8> = acc
                    .iter()
                    .zip(&requant)
                    .map(|(&a, &r)| saturate_i8(requantize(a, r).saturating_add(q.zp)))
                    .map(|v| q.activate(v))
                    .collect();
                let mut got = vec![0i8; n];
                requant_via_tile::<M>(&acc, &requant, &q, all_fast(&requant), &mut got);
                assert_eq!(got, want);
                requant_via_tile::<M>(&acc, &requant, &q, false, &mut got);
                assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn requant_rows_equal_the_reference() {
        for seed in 1..40 {
            check_requant_row::<Dsp>(seed);
            check_requant_row::<Mve>(seed);
            #[cfg(vitae_x86)]
            check_requant_row::<Avx2>(seed);
        }
    }

    #[test]
    fn fill_and_copy() {
        for n in [0, 1, 15, 16, 17, 40] {
            let src: Vec<i8> = (0..n).map(|i| i as i8 - 20).collect();
            let mut d = vec![0i8; n];
            Mve::copy(&mut d, &src);
            assert_eq!(d, src);
            Mve::fill(&mut d, -128);
            assert!(d.iter().all(|&v| v == -128));
            Dsp::copy(&mut d, &src);
            assert_eq!(d, src);
        }
    }
}
