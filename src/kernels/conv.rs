//! 2-D convolution, int8, NHWC, with fused bias (BatchNorm folded by the host), per-channel
//! requantization and an optional activation table (SiLU, GELU).
//!
//! Any kernel size, stride, padding, dilation and group count. The output may be written into a
//! slice of a wider tensor (`out_offset`/`out_pixel_stride`), which is how the PRM writes its
//! dilation branches straight into the concatenated token buffer.

#[cfg(any(test, vitae_dsp, vitae_mve, vitae_x86))]
use super::gemm::{Micro, OutQuant, PlaneWalk, Rows, TILE_WORDS, all_fast, block_prepared};
use super::{KernelError, check_len, ensure, mul};
use crate::quant::{Lut256, Requant, requantize, saturate_i8};

/// Shape of a convolution. Input `in_h × in_w × in_c`, output `out_h × out_w × out_c`, weights
/// `out_c × kh × kw × (in_c / groups)` (OHWI per group).
///
/// `pad_h` rows of padding lie above the input and `pad_bottom` below it (equal for a whole map;
/// a row window of a map, [`ConvGeometry::window`], has padding only where the map has it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[allow(missing_docs)]
pub struct ConvGeometry {
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub out_c: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_h: usize,
    pub pad_w: usize,
    pub pad_bottom: usize,
    pub dil_h: usize,
    pub dil_w: usize,
    pub groups: usize,
}

/// Output length of a convolution along one axis, or `None` when the kernel does not fit.
pub fn conv_out_len(
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
) -> Option<usize> {
    let reach = dilation
        .checked_mul(kernel.checked_sub(1)?)?
        .checked_add(1)?;
    let span = input.checked_add(pad.checked_mul(2)?)?.checked_sub(reach)?;
    Some(span / stride.max(1) + 1)
}

impl ConvGeometry {
    /// Checks the geometry is self-consistent.
    pub fn validate(&self) -> Result<(), KernelError> {
        let g = self;
        ensure(
            g.in_h > 0 && g.in_w > 0 && g.in_c > 0,
            "input dimensions must be > 0",
        )?;
        ensure(
            g.out_c > 0 && g.kh > 0 && g.kw > 0,
            "output channels and kernel size must be > 0",
        )?;
        ensure(g.stride_h > 0 && g.stride_w > 0, "stride must be > 0")?;
        ensure(g.dil_h > 0 && g.dil_w > 0, "dilation must be > 0")?;
        ensure(
            g.groups > 0 && g.in_c.is_multiple_of(g.groups) && g.out_c.is_multiple_of(g.groups),
            "groups must divide channels",
        )?;
        let rows = g
            .in_h
            .checked_add(g.pad_h)
            .and_then(|r| r.checked_add(g.pad_bottom));
        ensure(
            rows.and_then(|r| conv_out_len(r, g.kh, g.stride_h, 0, g.dil_h)) == Some(g.out_h)
                && conv_out_len(g.in_w, g.kw, g.stride_w, g.pad_w, g.dil_w) == Some(g.out_w),
            "output size does not follow from input, kernel, stride, padding and dilation",
        )?;
        // Keep every index in u32 range so the 32-bit targets cannot overflow.
        let big = |v: usize| v < (1 << 30);
        ensure(
            big(g.in_h * g.in_w)
                && big(g.in_c * g.in_h * g.in_w)
                && big(g.out_h * g.out_w * g.out_c),
            "tensor too large",
        )?;
        Ok(())
    }

    /// Input channels per group.
    pub fn in_c_per_group(&self) -> usize {
        self.in_c / self.groups
    }

    /// Multiply-accumulates of one run.
    pub fn macs(&self) -> u64 {
        (self.out_h * self.out_w * self.out_c) as u64
            * (self.kh * self.kw * self.in_c_per_group()) as u64
    }

    /// Number of weights.
    pub fn weight_len(&self) -> usize {
        self.out_c * self.kh * self.kw * self.in_c_per_group()
    }

    /// Output rows `out_rows` of this (whole-map) convolution as a convolution of its own: the
    /// window's geometry and the input rows it reads, `lo..hi` (the rows of the map those
    /// output rows reach, cut to the map; the cut-off part is the window's padding).
    ///
    /// Every output value of the window has the same taps, padding included, in the same order
    /// as in the whole convolution, so the window computes the same bytes (the patch-based
    /// execution of the first cells relies on it). Ungrouped convolutions only: a grouped one
    /// stages a padded plane whose scratch is sized for the whole map.
    pub fn window(
        &self,
        out_rows: core::ops::Range<usize>,
    ) -> Result<(ConvGeometry, core::ops::Range<usize>), KernelError> {
        let g = self;
        g.validate()?;
        ensure(g.groups == 1, "row windows of grouped convolutions")?;
        ensure(
            out_rows.start < out_rows.end && out_rows.end <= g.out_h,
            "row window outside the output",
        )?;
        let reach = g.dil_h * (g.kh - 1) + 1;
        // Input rows the window's taps reach (padding rows negative or past the map).
        let first = (out_rows.start * g.stride_h) as isize - g.pad_h as isize;
        let last = ((out_rows.end - 1) * g.stride_h + reach) as isize - g.pad_h as isize;
        let lo = first.max(0) as usize;
        let hi = (last.min(g.in_h as isize)).max(0) as usize;
        ensure(lo < hi, "row window reads no input row")?;
        let w = ConvGeometry {
            in_h: hi - lo,
            out_h: out_rows.len(),
            pad_h: (lo as isize - first) as usize,
            pad_bottom: (last - hi as isize) as usize,
            ..*g
        };
        w.validate()?;
        Ok((w, lo..hi))
    }
}

/// Where the output goes: channel `c` of output pixel `p` is `out[p · pixel_stride + offset + c]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OutputSlice {
    /// First channel of this kernel's output within each pixel.
    pub offset: usize,
    /// Elements per output pixel (≥ offset + out_c).
    pub pixel_stride: usize,
}

/// A validated int8 convolution.
#[derive(Clone, Copy, Debug)]
pub struct ConvS8<'a> {
    geom: ConvGeometry,
    weights: &'a [i8],
    bias: &'a [i32],
    requant: &'a [Requant],
    in_zp: i32,
    out_zp: i32,
    act: Option<&'a Lut256>,
    out: OutputSlice,
}

impl<'a> ConvS8<'a> {
    /// Checks every parameter against the geometry.
    ///
    /// `bias` already contains `−in_zp · Σ w` (the host folds it); `in_zp` is the padding value.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        geom: ConvGeometry,
        weights: &'a [i8],
        bias: &'a [i32],
        requant: &'a [Requant],
        in_zp: i32,
        out_zp: i32,
        act: Option<&'a Lut256>,
        out: OutputSlice,
    ) -> Result<Self, KernelError> {
        geom.validate()?;
        check_len("conv weights", weights.len(), geom.weight_len())?;
        Self::without_weights(geom, bias, requant, in_zp, out_zp, act, out)
            .map(|p| ConvS8 { weights, ..p })
    }

    /// Every check of [`ConvS8::new`] but the weights' (left empty): the int4-weight
    /// convolution ([`super::conv_s4`]) keeps its packed weights itself.
    pub(crate) fn without_weights(
        geom: ConvGeometry,
        bias: &'a [i32],
        requant: &'a [Requant],
        in_zp: i32,
        out_zp: i32,
        act: Option<&'a Lut256>,
        out: OutputSlice,
    ) -> Result<Self, KernelError> {
        geom.validate()?;
        check_len("conv bias", bias.len(), geom.out_c)?;
        check_len("conv requant", requant.len(), geom.out_c)?;
        ensure(
            Requant::all_valid(requant),
            "conv requant multiplier/shift out of range",
        )?;
        ensure(
            (-128..=127).contains(&in_zp) && (-128..=127).contains(&out_zp),
            "zero point outside int8",
        )?;
        ensure(
            out.offset
                .checked_add(geom.out_c)
                .is_some_and(|e| e <= out.pixel_stride),
            "output slice too narrow",
        )?;
        Ok(ConvS8 {
            geom,
            weights: &[],
            bias,
            requant,
            in_zp,
            out_zp,
            act,
            out,
        })
    }

    /// Output channels `oc0..oc0 + n` of this (ungrouped, or `n = out_c`) convolution as one of
    /// its own with the int8 `weights` of those channels, writing into the same output pixels.
    pub(crate) fn channels(
        &self,
        oc0: usize,
        n: usize,
        weights: &'a [i8],
    ) -> Result<ConvS8<'a>, KernelError> {
        ensure(
            oc0 + n <= self.geom.out_c && (self.geom.groups == 1 || n == self.geom.out_c),
            "conv channel range",
        )?;
        let geom = ConvGeometry {
            out_c: n,
            ..self.geom
        };
        let out = OutputSlice {
            offset: self.out.offset + oc0,
            pixel_stride: self.out.pixel_stride,
        };
        ConvS8::new(
            geom,
            weights,
            &self.bias[oc0..oc0 + n],
            &self.requant[oc0..oc0 + n],
            self.in_zp,
            self.out_zp,
            self.act,
            out,
        )
    }

    /// The geometry.
    pub fn geometry(&self) -> &ConvGeometry {
        &self.geom
    }

    /// Output elements this kernel needs (`out` must hold at least this many).
    pub fn output_len(&self) -> usize {
        (self.geom.out_h * self.geom.out_w - 1) * self.out.pixel_stride
            + self.out.offset
            + self.geom.out_c
    }

    fn check_buffers(&self, input: &[i8], output: &[i8]) -> Result<(), KernelError> {
        let g = &self.geom;
        check_len(
            "conv input",
            input.len(),
            mul(g.in_h * g.in_w, g.in_c, "conv input size")?,
        )?;
        if output.len() < self.output_len() {
            return Err(KernelError::BadLength {
                what: "conv output",
                need: self.output_len(),
                have: output.len(),
            });
        }
        Ok(())
    }

    /// Requantizes one accumulator of output channel `oc` and applies the activation.
    #[inline(always)]
    pub(crate) fn finish(&self, acc: i32, oc: usize) -> i8 {
        let q = saturate_i8(requantize(acc, self.requant[oc]).saturating_add(self.out_zp));
        match self.act {
            Some(lut) => lut.apply(q),
            None => q,
        }
    }
}

/// Scratch bytes [`conv_s8`] needs for this geometry: one packed im2col block (four pixels as
/// int16 on Cortex-M4/M7, three as int8 on Cortex-M55) of `kh·kw·in_c/groups` values, and a tile
/// of accumulators (1 KiB), and the im2col offsets of one kernel row (2 bytes per value).
///
/// The same on every target (blobs are planned on the host): the larger of the two layouts, about
/// 9 bytes per value of `kh·kw·in_c/groups` plus 1 KiB (6.2 KiB for a 3×3 convolution of 64
/// channels).
///
/// Grouped convolutions add one zero-point-padded plane of a single group
/// (`(pad_h + in_h + pad_bottom) × (in_w + 2·pad_w) × in_c/groups` bytes, see [`staged_plane_len`]).
pub fn conv_s8_scratch_size(geom: &ConvGeometry) -> usize {
    super::gemm::gemm_scratch_bytes(geom.kh * geom.kw * geom.in_c_per_group())
        + super::scratch::bytes_for::<u16>(geom.kw * geom.in_c_per_group())
        + staged_plane_len(geom).map_or(0, super::scratch::bytes_for::<i8>)
}

/// Largest padded plane a grouped convolution stages (bytes of scratch).
const MAX_STAGED_PLANE: usize = 32 * 1024;

/// Bytes of the padded single-group plane a grouped convolution stages, or `None` when it runs
/// without staging (ungrouped, or a plane above 32 KiB).
///
/// Why stage: with few channels per group (ViTAE's Normal Cells have 4–8), gathering each
/// pixel's receptive field straight from the interleaved input costs more than the products,
/// and most pixels of a small feature map touch the padding. In the staged plane every pixel is
/// interior and every kernel row is one contiguous run.
pub fn staged_plane_len(geom: &ConvGeometry) -> Option<usize> {
    if geom.groups <= 1 {
        return None;
    }
    let h = geom
        .in_h
        .checked_add(geom.pad_h)?
        .checked_add(geom.pad_bottom)?;
    let w = geom.in_w.checked_add(geom.pad_w.checked_mul(2)?)?;
    h.checked_mul(w)?
        .checked_mul(geom.in_c_per_group())
        .filter(|&n| n <= MAX_STAGED_PLANE)
}

/// The scalar reference convolution.
pub fn conv_s8_reference(p: &ConvS8, input: &[i8], output: &mut [i8]) -> Result<(), KernelError> {
    let k = p.geom.kh * p.geom.kw * p.geom.in_c_per_group();
    conv_reference_with(p, |oc, i| p.weights[oc * k + i], input, output)
}

/// The reference loops, weight `i` of output channel `oc`'s row (OHWI) read through `weight`.
pub(crate) fn conv_reference_with(
    p: &ConvS8,
    weight: impl Fn(usize, usize) -> i8,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), KernelError> {
    p.check_buffers(input, output)?;
    let g = &p.geom;
    let cin_g = g.in_c_per_group();
    let cout_g = g.out_c / g.groups;
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            let out_base = (oy * g.out_w + ox) * p.out.pixel_stride + p.out.offset;
            for oc in 0..g.out_c {
                let group = oc / cout_g;
                let mut acc = p.bias[oc];
                for ky in 0..g.kh {
                    // Signed input coordinates: padding makes them negative.
                    let iy = (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_h as isize;
                    for kx in 0..g.kw {
                        let ix = (ox * g.stride_w + kx * g.dil_w) as isize - g.pad_w as isize;
                        let inside =
                            iy >= 0 && ix >= 0 && (iy as usize) < g.in_h && (ix as usize) < g.in_w;
                        let w_base = (ky * g.kw + kx) * cin_g;
                        for ic in 0..cin_g {
                            let x = if inside {
                                input[(iy as usize * g.in_w + ix as usize) * g.in_c
                                    + group * cin_g
                                    + ic] as i32
                            } else {
                                p.in_zp
                            };
                            acc = acc.wrapping_add(weight(oc, w_base + ic) as i32 * x);
                        }
                    }
                }
                output[out_base + oc] = p.finish(acc, oc);
            }
        }
    }
    Ok(())
}

/// The convolution the runtime runs: the im2col + matrix-product path of the target (Cortex-M4/M7
/// DSP, Cortex-M55 Helium, x86-64 AVX2 on the host when the CPU has it), bit-identical to
/// [`conv_s8_reference`]; otherwise the reference.
pub fn conv_s8(
    p: &ConvS8,
    input: &[i8],
    output: &mut [i8],
    scratch: &mut [u8],
) -> Result<(), KernelError> {
    #[cfg(vitae_mve)]
    {
        conv_gemm::<super::gemm::Mve>(p, input, output, scratch)
    }
    #[cfg(all(vitae_dsp, not(vitae_mve)))]
    {
        conv_gemm::<super::gemm::Dsp>(p, input, output, scratch)
    }
    #[cfg(not(any(vitae_dsp, vitae_mve)))]
    {
        #[cfg(vitae_x86)]
        if super::host_simd() == super::HostSimd::Avx2 {
            return conv_gemm::<super::gemm::Avx2>(p, input, output, scratch);
        }
        let _ = scratch;
        conv_s8_reference(p, input, output)
    }
}

/// im2col + matrix product: for each group and each block of `M::COLS` output pixels, the
/// pixels' receptive fields are packed once into `scratch`, then every output channel of the
/// group runs the micro-kernel over them (one or two channels per call) straight from the model's
/// OHWI weight rows; accumulators are requantized a row of channels at a time.
#[cfg(any(test, vitae_dsp, vitae_mve, vitae_x86))]
pub(crate) fn conv_gemm<M: Micro>(
    p: &ConvS8,
    input: &[i8],
    output: &mut [i8],
    scratch: &mut [u8],
) -> Result<(), KernelError> {
    p.check_buffers(input, output)?;
    if let Some(len) = staged_plane_len(&p.geom) {
        return conv_staged::<M>(p, input, output, scratch, len);
    }
    let g = &p.geom;
    let cin_g = g.in_c_per_group();
    let cout_g = g.out_c / g.groups;
    let k = g.kh * g.kw * cin_g;
    let mut s = super::scratch::Scratch::new(scratch);
    let mut cols = M::carve(&mut s, k)?;
    let tile = s.take::<i32>(TILE_WORDS, "conv scratch (accumulators)")?;
    // Where each value of a kernel row comes from, relative to its first tap: one gather per
    // kernel row instead of one copy per tap (not needed when the row is one contiguous run).
    let offsets = s.take::<u16>(g.kw * cin_g, "conv scratch (im2col offsets)")?;
    let reach = ((g.kw - 1) * g.dil_w * g.in_c + cin_g).min(usize::from(u16::MAX) + 1);
    for (j, o) in offsets.iter_mut().enumerate() {
        *o = ((j / cin_g) * g.dil_w * g.in_c + j % cin_g).min(reach - 1) as u16;
    }
    let contiguous = g.groups == 1 && g.dil_w == 1;
    let gather = !contiguous && cin_g < M::GATHER_BELOW && reach <= usize::from(u16::MAX);
    let plan = Im2col::<M> {
        p,
        input,
        table: gather.then(|| M::table(offsets)),
        contiguous,
        cin_g,
        kx_len: g.kw * cin_g,
        row_len: g.in_w * g.in_c,
        src_stride: g.dil_h * g.in_w * g.in_c,
        y_last: (g.kh - 1) * g.dil_h,
        x_last: (g.kw - 1) * g.dil_w,
    };
    let rows = Rows {
        w: p.weights,
        k,
        stride: k,
        bias: p.bias,
        requant: p.requant,
        q: OutQuant {
            zp: p.out_zp,
            act: p.act,
        },
        fast: all_fast(p.requant),
    };
    let npix = g.out_h * g.out_w;
    let stride = p.out.pixel_stride;
    for grp in 0..g.groups {
        let oc = grp * cout_g;
        let prepared = M::prepare(&rows, oc..oc + cout_g);
        // Kernel rows that are contiguous runs, or gathers through a byte table, of an
        // ungrouped convolution.
        let runs_fit = g.groups == 1
            && plan.kx_len <= M::RUNS_UP_TO
            && (plan.contiguous || plan.table.as_ref().and_then(M::narrow).is_some());
        let mut p0 = 0;
        while p0 < npix {
            if runs_fit {
                let out = (&mut cols, &mut *tile, &mut *output);
                let done = walk_row::<M>(&plan, prepared.as_ref(), p0, oc, out);
                if done > 0 {
                    p0 += done;
                    continue;
                }
            }
            let n = (npix - p0).min(M::COLS);
            for c in 0..n {
                M::pack(&mut cols, c, k, |row| plan.pixel(p0 + c, grp, row));
            }
            let base = core::array::from_fn(|c| (p0 + c) * stride + p.out.offset + oc);
            let range = oc..oc + cout_g;
            block_prepared::<M>(
                prepared.as_ref(),
                &rows,
                &cols,
                n,
                range,
                tile,
                output,
                base,
            );
            p0 += n;
        }
    }
    Ok(())
}

/// The whole blocks of pixel `p0`'s output row, from `p0` on, whose kernels lie inside the input
/// (each kernel row one run), in one walk when the flavour has it: the pixels done (0 when
/// none). Out of line, so that [`conv_gemm`]'s per-block loop keeps its registers.
#[cfg(any(test, vitae_dsp, vitae_mve, vitae_x86))]
#[inline(never)]
fn walk_row<M: Micro>(
    plan: &Im2col<'_, '_, M>,
    prepared: Option<&M::Prepared<'_>>,
    p0: usize,
    oc: usize,
    (cols, tile, output): (&mut M::Cols<'_>, &mut [i32], &mut [i8]),
) -> usize {
    let g = &plan.p.geom;
    let (Some(pr), Some((count, at))) = (prepared, plan.interior_row_from(p0)) else {
        return 0;
    };
    let walk = PlaneWalk {
        pixels: count - count % M::COLS,
        out_w: count,
        row_step: 0,
        col_step: g.stride_w * g.in_c,
        runs: g.kh,
        run_len: plan.kx_len,
        run_stride: plan.src_stride,
        gather: if plan.contiguous {
            None
        } else {
            plan.table.as_ref().and_then(M::narrow)
        },
    };
    if !plan.contiguous && walk.gather.is_none() {
        return 0;
    }
    let stride = plan.p.out.pixel_stride;
    let base0 = p0 * stride + plan.p.out.offset + oc;
    let plane = plan.input.get(at..).unwrap_or_default();
    let done = walk.pixels > 0 && M::run_walk(pr, plane, &walk, cols, tile, output, base0, stride);
    if done { walk.pixels } else { 0 }
}

/// A grouped convolution, one group at a time: the group's channels are copied into a plane
/// padded with the input zero point, so every receptive field lies inside the plane and each of
/// its kernel rows is one contiguous run (no edge cases, one short copy per kernel row); the
/// group's output channels then run through the same micro-kernel blocks as [`conv_gemm`]. Same
/// sums in the same order as the reference (a padding tap contributes `w · in_zp` either way).
#[cfg(any(test, vitae_dsp, vitae_mve, vitae_x86))]
fn conv_staged<M: Micro>(
    p: &ConvS8,
    input: &[i8],
    output: &mut [i8],
    scratch: &mut [u8],
    plane_len: usize,
) -> Result<(), KernelError> {
    let g = &p.geom;
    let (cin_g, cout_g) = (g.in_c_per_group(), g.out_c / g.groups);
    let pw = g.in_w + 2 * g.pad_w;
    let k = g.kh * g.kw * cin_g;
    let mut s = super::scratch::Scratch::new(scratch);
    let plane = s.take::<i8>(plane_len, "conv scratch (padded group)")?;
    let mut cols = M::carve(&mut s, k)?;
    let tile = s.take::<i32>(TILE_WORDS, "conv scratch (accumulators)")?;
    let (kx_len, row_len) = (g.kw * cin_g, pw * cin_g);
    let src_stride = g.dil_h * row_len;
    let zp = p.in_zp as i8;
    let npix = g.out_h * g.out_w;
    let stride = p.out.pixel_stride;
    for grp in 0..g.groups {
        M::fill(plane, zp);
        for y in 0..g.in_h {
            let src = &input[y * g.in_w * g.in_c + grp * cin_g..];
            let dst = &mut plane[(y + g.pad_h) * row_len + g.pad_w * cin_g..][..g.in_w * cin_g];
            if !M::copy_runs(dst, src, g.in_c, g.in_w, cin_g) {
                for (d, s) in dst.chunks_exact_mut(cin_g).zip(src.chunks(g.in_c)) {
                    M::copy(d, s);
                }
            }
        }
        let oc = grp * cout_g;
        let requant = &p.requant[oc..][..cout_g];
        let rows = Rows {
            w: &p.weights[oc * k..][..cout_g * k],
            k,
            stride: k,
            bias: &p.bias[oc..][..cout_g],
            requant,
            q: OutQuant {
                zp: p.out_zp,
                act: p.act,
            },
            fast: all_fast(requant),
        };
        let prepared = M::prepare(&rows, 0..cout_g);
        // The whole group in one call when the flavour has it: every receptive field is
        // kernel-row runs of the padded plane.
        let walk = PlaneWalk {
            pixels: npix,
            out_w: g.out_w,
            row_step: g.stride_h * row_len,
            col_step: g.stride_w * cin_g,
            runs: g.kh,
            run_len: kx_len,
            run_stride: src_stride,
            gather: None,
        };
        let base0 = p.out.offset + oc;
        if g.dil_w == 1
            && prepared.as_ref().is_some_and(|pr| {
                M::run_walk(pr, plane, &walk, &mut cols, tile, output, base0, stride)
            })
        {
            continue;
        }
        let mut p0 = 0;
        while p0 < npix {
            let n = (npix - p0).min(M::COLS);
            let at: [usize; 4] = core::array::from_fn(|c| {
                let (oy, ox) = ((p0 + c) / g.out_w, (p0 + c) % g.out_w);
                oy * g.stride_h * row_len + ox * g.stride_w * cin_g
            });
            let packed =
                g.dil_w == 1 && M::pack_runs(&mut cols, plane, &at[..n], src_stride, g.kh, kx_len);
            for (c, &at) in at.iter().enumerate().take(if packed { 0 } else { n }) {
                M::pack(&mut cols, c, k, |row| {
                    for (ky, dst) in row.chunks_exact_mut(kx_len).enumerate() {
                        let src = &plane[at + ky * src_stride..];
                        if g.dil_w == 1 {
                            M::copy(dst, src);
                        } else {
                            for (kx, tap) in dst.chunks_exact_mut(cin_g).enumerate() {
                                M::copy(tap, &src[kx * g.dil_w * cin_g..]);
                            }
                        }
                    }
                });
            }
            let base = core::array::from_fn(|c| (p0 + c) * stride + p.out.offset + oc);
            let range = 0..cout_g;
            block_prepared::<M>(
                prepared.as_ref(),
                &rows,
                &cols,
                n,
                range,
                tile,
                output,
                base,
            );
            p0 += n;
        }
    }
    Ok(())
}

/// The kernel taps `lo..hi` (along one axis) that land inside the input, for a first tap at
/// `start` (negative in the padding): taps are `dil` apart, `n` of them, the input `len` long.
#[cfg(any(test, vitae_dsp, vitae_mve, vitae_x86))]
#[inline(always)]
fn inside(start: isize, dil: usize, n: usize, len: usize) -> (usize, usize) {
    let dil = dil as isize;
    let lo = if start < 0 {
        (-start + dil - 1) / dil
    } else {
        0
    };
    let hi = if (len as isize) > start {
        ((len as isize - start + dil - 1) / dil).min(n as isize)
    } else {
        0
    };
    (lo.min(n as isize) as usize, hi.max(0) as usize)
}

/// What the im2col of one convolution call needs, computed once.
#[cfg(any(test, vitae_dsp, vitae_mve, vitae_x86))]
struct Im2col<'a, 't, M: Micro> {
    p: &'a ConvS8<'a>,
    input: &'a [i8],
    /// Offsets of one kernel row's values, relative to its first tap (strided or grouped
    /// convolutions with short channel runs).
    table: Option<M::Table<'t>>,
    /// Each kernel row is one contiguous run of the input (dense, ungrouped, no horizontal
    /// dilation).
    contiguous: bool,
    cin_g: usize,
    kx_len: usize,
    row_len: usize,
    src_stride: usize,
    y_last: usize,
    x_last: usize,
}

#[cfg(any(test, vitae_dsp, vitae_mve, vitae_x86))]
impl<M: Micro> Im2col<'_, '_, M> {
    /// Writes the receptive field of output pixel `pix` for group `grp` into `row`: values in
    /// (ky, kx, channel) order, the input zero point where the kernel reaches into the padding.
    ///
    /// Usually the whole kernel lies inside the input: one strided copy, or one gather through
    /// the table, moves it. Inlined into the packing loop (measured: fewer instructions on both
    /// the M4 and the M55 than a call per pixel); the rare edge case stays out of line.
    #[inline(always)]
    fn pixel(&self, pix: usize, grp: usize, row: &mut [i8]) {
        let g = &self.p.geom;
        let (oy, ox) = (pix / g.out_w, pix % g.out_w);
        let iy0 = (oy * g.stride_h) as isize - g.pad_h as isize;
        let ix0 = (ox * g.stride_w) as isize - g.pad_w as isize;
        if iy0 >= 0
            && ix0 >= 0
            && iy0 as usize + self.y_last < g.in_h
            && ix0 as usize + self.x_last < g.in_w
        {
            let at = iy0 as usize * self.row_len + ix0 as usize * g.in_c + grp * self.cin_g;
            let src = self.input.get(at..).unwrap_or_default();
            let (kx, st) = (self.kx_len, self.src_stride);
            let done = match &self.table {
                None if self.contiguous => M::copy_rows(row, kx, src, st, g.kh, kx),
                Some(t) => M::gather_rows(row, kx, src, st, g.kh, kx, t),
                None => false,
            };
            if done {
                return;
            }
        }
        self.edge(iy0, ix0, grp, row);
    }

    /// From pixel `p0` on, how many pixels of its output row have their kernel wholly inside
    /// the input, and where the first one's receptive field starts (group 0); `None` when
    /// `p0`'s does not.
    #[inline]
    fn interior_row_from(&self, p0: usize) -> Option<(usize, usize)> {
        let g = &self.p.geom;
        let (oy, ox) = (p0 / g.out_w, p0 % g.out_w);
        let iy0 = (oy * g.stride_h).checked_sub(g.pad_h)?;
        let ix0 = (ox * g.stride_w).checked_sub(g.pad_w)?;
        if iy0 + self.y_last >= g.in_h || ix0 + self.x_last >= g.in_w {
            return None;
        }
        // Last output column whose kernel ends inside the input.
        let ox_last = ((g.in_w - 1 - self.x_last + g.pad_w) / g.stride_w).min(g.out_w - 1);
        Some((ox_last + 1 - ox, iy0 * self.row_len + ix0 * g.in_c))
    }

    /// A pixel whose kernel reaches into the padding (or that the fast path declined): the taps
    /// inside the input form a rectangle (kernel rows `ky_lo..ky_hi` × taps `kx_lo..kx_hi`),
    /// moved in one call (a prefix of the gather table serves any run of taps); everything else
    /// is the zero point.
    #[inline(never)]
    fn edge(&self, iy0: isize, ix0: isize, grp: usize, row: &mut [i8]) {
        let g = &self.p.geom;
        let (cin_g, kx_len) = (self.cin_g, self.kx_len);
        let zp = self.p.in_zp as i8;
        let (ky_lo, ky_hi) = inside(iy0, g.dil_h, g.kh, g.in_h);
        let (kx_lo, kx_hi) = inside(ix0, g.dil_w, g.kw, g.in_w);
        if ky_lo >= ky_hi || kx_lo >= kx_hi {
            M::fill(row, zp);
            return;
        }
        let (top, rest) = row.split_at_mut(ky_lo * kx_len);
        let (mid, bottom) = rest.split_at_mut((ky_hi - ky_lo) * kx_len);
        M::fill(top, zp);
        M::fill(bottom, zp);
        let (left, len) = (kx_lo * cin_g, (kx_hi - kx_lo) * cin_g);
        if left > 0 || kx_hi < g.kw {
            for r in mid.chunks_exact_mut(kx_len) {
                M::fill(&mut r[..left], zp);
                M::fill(&mut r[left + len..], zp);
            }
        }
        let iy = (iy0 + (ky_lo * g.dil_h) as isize) as usize;
        let ix = (ix0 + (kx_lo * g.dil_w) as isize) as usize;
        let src = &self.input[(iy * g.in_w + ix) * g.in_c + grp * cin_g..];
        let (dst, rows, st) = (&mut mid[left..], ky_hi - ky_lo, self.src_stride);
        let done = match &self.table {
            None if self.contiguous => M::copy_rows(dst, kx_len, src, st, rows, len),
            Some(t) => M::gather_rows(dst, kx_len, src, st, rows, len, t),
            None => false,
        };
        if !done {
            // Tap by tap (a table that reaches past the end of the input near its last rows).
            for (r, d) in mid.chunks_exact_mut(kx_len).enumerate() {
                let src_row =
                    &self.input[((iy + r * g.dil_h) * g.in_w + ix) * g.in_c + grp * cin_g..];
                for (t, dt) in d[left..left + len].chunks_exact_mut(cin_g).enumerate() {
                    M::copy(dt, &src_row[t * g.dil_w * g.in_c..][..cin_g]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::cases::{self, Rng, shift_for};
    use super::super::gemm::{Dsp, Mve};
    use super::*;
    use proptest::prelude::*;

    /// Everything one convolution test needs, generated from a geometry and a seed.
    struct Case {
        geom: ConvGeometry,
        input: Vec<i8>,
        weights: Vec<i8>,
        bias: Vec<i32>,
        requant: Vec<Requant>,
        in_zp: i32,
        out_zp: i32,
        lut: Option<Lut256>,
        out: OutputSlice,
    }

    impl Case {
        fn new(
            geom: ConvGeometry,
            rng: &mut Rng,
            zps: (i32, i32),
            act: bool,
            slice: (usize, usize),
        ) -> Self {
            let k = geom.kh * geom.kw * geom.in_c_per_group();
            Case {
                input: rng.i8s(geom.in_h * geom.in_w * geom.in_c),
                weights: rng.i8s(geom.weight_len()),
                bias: rng.biases(geom.out_c),
                requant: rng.requants(geom.out_c, shift_for(k)),
                in_zp: zps.0,
                out_zp: zps.1,
                lut: act.then(|| rng.lut()),
                out: OutputSlice {
                    offset: slice.0,
                    pixel_stride: slice.0 + geom.out_c + slice.1,
                },
                geom,
            }
        }

        fn params(&self) -> ConvS8<'_> {
            self.params_for(self.geom)
        }

        /// The case's tables and zero points with geometry `geom` (the whole map or a window).
        fn params_for(&self, geom: ConvGeometry) -> ConvS8<'_> {
            ConvS8::new(
                geom,
                &self.weights,
                &self.bias,
                &self.requant,
                self.in_zp,
                self.out_zp,
                self.lut.as_ref(),
                self.out,
            )
            .unwrap()
        }

        /// Runs the reference and both optimized flavours; all outputs (including the bytes of
        /// the wider tensor the slice must not touch) must be identical.
        fn check(&self) -> Result<(), TestCaseError> {
            let p = self.params();
            let len = p.output_len() + 5;
            let mut want = vec![0x55u8 as i8; len];
            conv_s8_reference(&p, &self.input, &mut want).unwrap();
            let mut scratch = vec![0xa5u8; conv_s8_scratch_size(&self.geom) + 3];
            for (name, run) in [
                (
                    "dsp",
                    conv_gemm::<Dsp> as fn(&ConvS8, &[i8], &mut [i8], &mut [u8]) -> _,
                ),
                ("mve", conv_gemm::<Mve>),
                #[cfg(vitae_x86)]
                ("avx2", conv_gemm::<super::super::gemm::Avx2>),
            ] {
                // Odd scratch offsets: the kernel must align its own buffers.
                for off in [0, 1] {
                    let mut got = vec![0x55u8 as i8; len];
                    let need = conv_s8_scratch_size(&self.geom);
                    run(&p, &self.input, &mut got, &mut scratch[off..off + need]).unwrap();
                    prop_assert_eq!(&got, &want, "{} {:?}", name, self.geom);
                }
            }
            let mut got = vec![0x55u8 as i8; len];
            conv_s8(&p, &self.input, &mut got, &mut scratch).unwrap();
            prop_assert_eq!(&got, &want);
            Ok(())
        }
    }

    fn zero_point() -> impl Strategy<Value = i32> {
        prop_oneof![Just(-128), Just(127), Just(0), -128i32..=127]
    }

    /// Room for the suite's random shapes on the host (larger than a board's test buffers).
    const HOST: cases::conv::Limits = cases::conv::Limits {
        input: 1 << 16,
        weights: 1 << 16,
        output: 1 << 16,
    };

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        /// The suite's random shapes (the ones the on-target tests draw), with proptest's zero
        /// points.
        #[test]
        fn optimized_equals_reference(
            seed in any::<u32>(),
            in_zp in zero_point(),
            out_zp in zero_point(),
        ) {
            let mut rng = Rng(seed);
            let r = cases::conv::random(&mut rng, HOST);
            Case::new(r.geom, &mut rng, (in_zp, out_zp), r.act, (r.offset, r.extra)).check()?;
        }
    }

    impl Case {
        /// The whole convolution's output rows, split into windows of `rows` output rows each:
        /// every window, run on exactly the input rows [`ConvGeometry::window`] names, writes
        /// the same bytes as the whole convolution (reference and target kernel alike).
        fn check_windows(&self, rows: usize) -> Result<(), TestCaseError> {
            let whole = self.params();
            let stride = self.out.pixel_stride;
            let row_out = self.geom.out_w * stride;
            let mut want = vec![0x55u8 as i8; self.geom.out_h * row_out];
            conv_s8_reference(&whole, &self.input, &mut want).unwrap();
            let row_in = self.geom.in_w * self.geom.in_c;
            let mut scratch = vec![0u8; conv_s8_scratch_size(&self.geom)];
            let mut start = 0;
            while start < self.geom.out_h {
                let end = (start + rows).min(self.geom.out_h);
                let Ok((w, input_rows)) = self.geom.window(start..end) else {
                    // Only refused when every tap of the window lies in the padding.
                    let first = (start * self.geom.stride_h) as isize - self.geom.pad_h as isize;
                    let reach = self.geom.dil_h * (self.geom.kh - 1) + 1;
                    let last = first + ((end - 1 - start) * self.geom.stride_h + reach) as isize;
                    prop_assert!(last <= 0 || first >= self.geom.in_h as isize);
                    start = end;
                    continue;
                };
                prop_assert!(conv_s8_scratch_size(&w) <= scratch.len());
                let p = self.params_for(w);
                let input = &self.input[input_rows.start * row_in..input_rows.end * row_in];
                let mut got = want[start * row_out..end * row_out].to_vec();
                got.iter_mut().for_each(|v| *v = 0x55u8 as i8);
                conv_s8_reference(&p, input, &mut got).unwrap();
                prop_assert_eq!(
                    &got[..],
                    &want[start * row_out..end * row_out],
                    "reference {:?}",
                    w
                );
                conv_s8(&p, input, &mut got, &mut scratch).unwrap();
                prop_assert_eq!(
                    &got[..],
                    &want[start * row_out..end * row_out],
                    "target {:?}",
                    w
                );
                start = end;
            }
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Row windows of the suite's random ungrouped shapes compute the whole map's bytes.
        #[test]
        fn row_windows_equal_the_whole_map(
            seed in any::<u32>(),
            in_zp in zero_point(),
            rows in 1usize..5,
        ) {
            let mut rng = Rng(seed);
            let mut r = cases::conv::random(&mut rng, HOST);
            while r.geom.groups != 1 {
                r = cases::conv::random(&mut rng, HOST);
            }
            let case = Case::new(r.geom, &mut rng, (in_zp, 3), r.act, (r.offset, r.extra));
            case.check_windows(rows)?;
        }
    }

    /// A window is refused where it cannot be one: grouped, empty or past the output.
    #[test]
    fn row_windows_refuse_what_they_cannot_compute() {
        let g = cases::conv::vitae()[3].unwrap();
        assert!(g.groups > 1 && g.window(0..1).is_err());
        let g = cases::conv::vitae()[0].unwrap();
        assert!(g.window(0..0).is_err());
        assert!(g.window(0..g.out_h + 1).is_err());
        // The whole map: the same geometry, padded below only as far as the taps reach.
        let (w, rows) = g.window(0..g.out_h).unwrap();
        assert_eq!(rows, 0..g.in_h);
        assert_eq!((w.pad_bottom, g.pad_bottom), (0, 1));
        assert_eq!(ConvGeometry { pad_bottom: 1, ..w }, g);
    }

    /// The suite's ViTAE shapes, with extreme zero points.
    #[test]
    fn vitae_shapes() {
        for (i, g) in cases::conv::vitae().into_iter().enumerate() {
            let g = g.expect("the suite's shapes are valid");
            let mut rng = Rng(1 + i as u32);
            for zps in [(-128, 127), (127, -128), (7, -5)] {
                Case::new(g, &mut rng, zps, i % 2 == 0, (i % 3, i % 2))
                    .check()
                    .unwrap();
            }
        }
    }
}
