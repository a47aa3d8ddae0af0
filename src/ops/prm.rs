//! The Pyramid Reduction Module of a Reduction Cell: parallel dilated convolutions of one input,
//! each followed by GELU, written side by side into one token tensor. int8 ([`PrmS8Op`]) and fp16
//! ([`PrmF16Op`]) share the record layout: a [`PrmParams`] header and one [`PrmBranch`] per
//! dilation.

use super::conv::activation;
use super::conv::window;
use super::{DecodeCx, OpIo, OpSpec, Record, Tables, is, refs_len, rows_of};
use crate::format::{DType, DataRef, FormatError};
use crate::kernels::conv::{ConvGeometry, ConvS8, OutputSlice, conv_s8, conv_s8_scratch_size};
use crate::kernels::f16::{self as kf16, Activation};
use crate::quant::Requant;
use crate::runtime::RunError;
use bytemuck::{Pod, Zeroable};
use half::f16;

/// The record header; `branches` [`PrmBranch`] records follow it.
///
/// One input, `branches` dilated convolutions with the same kernel size and stride, each
/// followed by GELU, written dilation-major into one token tensor: branch `b` fills channels
/// `b·branch_channels .. (b+1)·branch_channels` of every output token.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct PrmParams {
    /// Input height.
    pub in_h: u16,
    /// Input width.
    pub in_w: u16,
    /// Input channels.
    pub in_c: u16,
    /// Output height (= width of the token grid).
    pub out_h: u16,
    /// Output width.
    pub out_w: u16,
    /// Output channels of each branch.
    pub branch_channels: u16,
    /// Kernel size (square).
    pub kernel: u16,
    /// Stride.
    pub stride: u16,
    /// Number of branches.
    pub branches: u16,
    /// fp16 only: activation code ([`super::act`]).
    pub act: u16,
    /// int8 only: input zero point.
    pub in_zp: i32,
}
const _: () = assert!(core::mem::size_of::<PrmParams>() == 24);

/// One PRM branch.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct PrmBranch {
    /// Dilation.
    pub dilation: u16,
    /// Symmetric zero padding.
    pub padding: u16,
    /// int8: zero point of the pre-activation grid.
    pub out_zp: i32,
    /// Weights (int8 or fp16), OHWI.
    pub weights: DataRef,
    /// Bias (int32 or f32).
    pub bias: DataRef,
    /// int8: requantization per output channel.
    pub requant: DataRef,
    /// int8: activation table into the shared output grid.
    pub lut: DataRef,
}
const _: () = assert!(core::mem::size_of::<PrmBranch>() == 40);

/// Most branches a PRM may have.
pub const MAX_PRM_BRANCHES: usize = 8;

/// The whole record: the header and its branches.
#[derive(Clone, Copy, Debug)]
pub struct PrmRecord<'a> {
    /// Shared parameters.
    pub header: PrmParams,
    /// One per dilation (`header.branches` of them).
    pub branches: &'a [PrmBranch],
}

impl<'a> Record<'a> for PrmRecord<'a> {
    fn read(bytes: &'a [u8]) -> Result<Self, &'static str> {
        let hsize = core::mem::size_of::<PrmParams>();
        let header: PrmParams =
            bytemuck::pod_read_unaligned(bytes.get(..hsize).ok_or("parameter record too short")?);
        let n = header.branches as usize;
        if n == 0 || n > MAX_PRM_BRANCHES {
            return Err("PRM branch count");
        }
        if bytes.len() != hsize + n * core::mem::size_of::<PrmBranch>() {
            return Err("parameter record has the wrong length");
        }
        let branches =
            bytemuck::try_cast_slice(&bytes[hsize..]).map_err(|_| "PRM branches misaligned")?;
        Ok(PrmRecord { header, branches })
    }

    #[cfg(feature = "std")]
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(bytemuck::bytes_of(&self.header));
        out.extend_from_slice(bytemuck::cast_slice(self.branches));
    }
}

impl PrmRecord<'_> {
    /// Geometry of branch `b` (its own output channels only).
    pub fn geometry(&self, b: usize) -> ConvGeometry {
        let h = &self.header;
        let br = &self.branches[b];
        ConvGeometry {
            in_h: h.in_h as usize,
            in_w: h.in_w as usize,
            in_c: h.in_c as usize,
            out_h: h.out_h as usize,
            out_w: h.out_w as usize,
            out_c: h.branch_channels as usize,
            kh: h.kernel as usize,
            kw: h.kernel as usize,
            stride_h: h.stride as usize,
            stride_w: h.stride as usize,
            pad_h: br.padding as usize,
            pad_bottom: br.padding as usize,
            pad_w: br.padding as usize,
            dil_h: br.dilation as usize,
            dil_w: br.dilation as usize,
            groups: 1,
        }
    }
}

/// A decoded PRM: the shared shape plus its branches, each a convolution into a channel slice.
#[derive(Clone, Copy, Debug)]
pub struct Prm<'a> {
    /// Shared parameters.
    pub header: PrmParams,
    branches: &'a [PrmBranch],
    tables: Tables<'a>,
    /// The rows of the input map the input tensor holds and of the output map the output tensor
    /// holds (all of them, or strips of a patch-based run; int8 only).
    rows: [(u16, u16); 2],
}

impl<'a> Prm<'a> {
    /// Number of branches.
    pub fn len(&self) -> usize {
        self.branches.len()
    }

    /// True when there are no branches (never, after validation).
    pub fn is_empty(&self) -> bool {
        self.branches.is_empty()
    }

    /// Geometry of branch `b` (its own output channels only).
    pub fn geometry(&self, b: usize) -> ConvGeometry {
        PrmRecord {
            header: self.header,
            branches: self.branches,
        }
        .geometry(b)
    }

    /// Where branch `b` writes in each output token.
    pub fn output_slice(&self, b: usize) -> OutputSlice {
        let e = self.header.branch_channels as usize;
        OutputSlice {
            offset: b * e,
            pixel_stride: e * self.branches.len(),
        }
    }

    /// Branch `b` as an int8 convolution of the output tensor's rows, and the elements of the
    /// input tensor it reads, `(start, end)`.
    pub fn branch_s8(&self, b: usize) -> Result<(ConvS8<'a>, (usize, usize)), FormatError> {
        let br = &self.branches[b];
        let t = &self.tables;
        let [(i0, i1), (o0, o1)] = self.rows.map(|(a, b)| (a as usize, b as usize));
        let (g, input) = window(&self.geometry(b), i0..i1, o0..o1).map_err(|e| t.kernel(e))?;
        let kernel = ConvS8::new(
            g,
            t.data::<i8>(br.weights, "prm weights")?,
            t.data::<i32>(br.bias, "prm bias")?,
            t.data::<Requant>(br.requant, "prm requant")?,
            self.header.in_zp,
            br.out_zp,
            t.lut(br.lut)?,
            self.output_slice(b),
        )
        .map_err(|e| t.kernel(e))?;
        Ok((kernel, input))
    }

    /// Branch `b` as fp16 weights and f32 bias.
    pub fn branch_f16(&self, b: usize) -> Result<(&'a [f16], &'a [f32]), FormatError> {
        let br = &self.branches[b];
        Ok((
            self.tables.data::<f16>(br.weights, "prm weights")?,
            self.tables.data::<f32>(br.bias, "prm bias")?,
        ))
    }

    fn macs(&self) -> u64 {
        (0..self.len()).map(|b| self.geometry(b).macs()).sum()
    }
}

/// The checks both precisions share, then the decoded view. int8 tensors may be strips of a
/// patch-based run (rows of the maps); fp16 ones are whole maps.
fn decode<'a>(r: &PrmRecord<'a>, cx: &DecodeCx<'a>, dtype: DType) -> Result<Prm<'a>, FormatError> {
    let h = r.header;
    let e = h.branch_channels as usize;
    let (in_h, out_h) = (h.in_h as usize, h.out_h as usize);
    let (x, out) = (cx.input(0), cx.output());
    let (in_c, out_c) = (h.in_c as usize, e * r.branches.len());
    let (in_rows, out_rows) = if dtype == DType::I8 {
        (
            rows_of(&x, dtype, in_h, h.in_w as usize, in_c),
            rows_of(&out, dtype, out_h, h.out_w as usize, out_c),
        )
    } else {
        (
            is(&x, dtype, in_h, h.in_w as usize, in_c).then_some(0..in_h),
            is(&out, dtype, out_h, h.out_w as usize, out_c).then_some(0..out_h),
        )
    };
    let in_rows = in_rows.ok_or(cx.bad("PRM input tensor shape/dtype"))?;
    let out_rows = out_rows.ok_or(cx.bad("PRM output tensor shape/dtype"))?;
    // Rows of a tensor are u16 (its row0 and h), so these fit.
    let pair = |r: core::ops::Range<usize>| (r.start as u16, r.end as u16);
    Ok(Prm {
        header: h,
        branches: r.branches,
        tables: cx.tables(),
        rows: [pair(in_rows), pair(out_rows)],
    })
}

/// int8 PRM: each branch an int8 convolution requantized onto its own grid, then its GELU table
/// onto the shared output grid.
#[derive(Debug)]
pub struct PrmS8Op;

impl OpSpec for PrmS8Op {
    const NAME: &'static str = "prm";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = PrmRecord<'a>;
    type Decoded<'a> = Prm<'a>;

    fn decode<'a>(r: &PrmRecord<'a>, cx: &DecodeCx<'a>) -> Result<Prm<'a>, FormatError> {
        let prm = decode(r, cx, DType::I8)?;
        for (b, branch) in r.branches.iter().enumerate() {
            prm.geometry(b).validate().map_err(|e| cx.kernel(e))?;
            cx.ensure(
                prm.header.in_zp == cx.input(0).desc.zero_point,
                "PRM input zero point differs from its tensor",
            )?;
            prm.branch_s8(b)?;
            cx.ensure(
                !branch.lut.is_none(),
                "an int8 PRM branch needs its GELU table",
            )?;
        }
        Ok(prm)
    }

    fn scratch_bytes(r: &PrmRecord) -> usize {
        (0..r.branches.len())
            .map(|b| conv_s8_scratch_size(&r.geometry(b)))
            .max()
            .unwrap_or(0)
    }

    fn data_bytes(r: &PrmRecord) -> usize {
        r.branches
            .iter()
            .map(|b| refs_len(&[b.weights, b.bias, b.requant, b.lut]))
            .sum()
    }

    fn macs(p: &Prm) -> u64 {
        p.macs()
    }

    fn run(prm: &Prm, io: &mut OpIo<'_>) -> Result<(), RunError> {
        for b in 0..prm.len() {
            let (k, (start, end)) = prm.branch_s8(b).map_err(RunError::Format)?;
            let x = io.i8_in(0).get(start..end);
            let x = x.ok_or(RunError::BadPlan { op: io.op })?;
            let (out, scratch) = io.i8_out_scratch();
            conv_s8(&k, x, out, scratch).map_err(|e| io.kernel(e))?;
        }
        Ok(())
    }
}

/// A decoded fp16 PRM: the branches and the activation its record names.
#[derive(Clone, Copy, Debug)]
pub struct PrmF16<'a> {
    /// The shared shape and the branches.
    pub prm: Prm<'a>,
    /// The activation after each branch (decoded from the record's code once).
    pub act: Activation,
}

/// fp16 PRM: each branch an fp16 convolution with the record's activation.
#[derive(Debug)]
pub struct PrmF16Op;

impl OpSpec for PrmF16Op {
    const NAME: &'static str = "prm";
    const INPUTS: usize = 1;
    const IN_PLACE: bool = false;
    type Params<'a> = PrmRecord<'a>;
    type Decoded<'a> = PrmF16<'a>;

    fn decode<'a>(r: &PrmRecord<'a>, cx: &DecodeCx<'a>) -> Result<PrmF16<'a>, FormatError> {
        let prm = decode(r, cx, DType::F16)?;
        let act = activation(prm.header.act as u32, cx)?;
        let e = prm.header.branch_channels as usize;
        for b in 0..prm.len() {
            let g = prm.geometry(b);
            g.validate().map_err(|e| cx.kernel(e))?;
            let (w, bias) = prm.branch_f16(b)?;
            cx.ensure(
                w.len() == g.weight_len() && bias.len() == e,
                "PRM fp16 weight/bias length",
            )?;
        }
        Ok(PrmF16 { prm, act })
    }

    fn scratch_bytes(r: &PrmRecord) -> usize {
        (0..r.branches.len())
            .map(|b| kf16::conv_f16_scratch_size(&r.geometry(b)))
            .max()
            .unwrap_or(0)
    }

    // Only the tables the fp16 kernel uses were validated: a branch's requant and lut fields are
    // ignored, whatever they hold.
    fn data_bytes(r: &PrmRecord) -> usize {
        r.branches
            .iter()
            .map(|b| refs_len(&[b.weights, b.bias]))
            .sum()
    }

    fn macs(p: &PrmF16) -> u64 {
        p.prm.macs()
    }

    fn run(op: &PrmF16, io: &mut OpIo<'_>) -> Result<(), RunError> {
        let (prm, act) = (&op.prm, op.act);
        let x = io.f16_in(0)?;
        for b in 0..prm.len() {
            let (w, bias) = prm.branch_f16(b).map_err(RunError::Format)?;
            let (out, scratch) = io.f16_out_scratch()?;
            let slice = prm.output_slice(b);
            kf16::conv_f16(&prm.geometry(b), w, bias, act, slice, x, out, scratch)
                .map_err(|e| io.kernel(e))?;
        }
        Ok(())
    }
}
