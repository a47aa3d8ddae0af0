//! Reading and validating a blob. Everything is checked in [`Model::parse`]; afterwards the
//! accessors cannot fail on anything but a bug.

use super::error::{FormatError, FormatErrorKind as K};
use super::ops::*;
use super::*;
use crate::kernels::attention::{AttentionS8, attention_s8_scratch_size};
use crate::kernels::conv::{ConvGeometry, ConvS8, OutputSlice, conv_s8_scratch_size};
use crate::kernels::elementwise::{AddS8, MeanPoolS8};
use crate::kernels::f16::{Activation, attention_f16_scratch_size, performer_f16_scratch_size};
use crate::kernels::layernorm::LayerNormS8;
use crate::kernels::linear::{LinearS8, linear_s8_scratch_size};
use crate::kernels::performer::{PerformerS8, performer_s8_scratch_size};
use crate::quant::{Lut256, Requant};
use bytemuck::Pod;
use core::ops::Range;
use half::f16;

/// A validated blob, borrowed (the weights are used in place).
#[derive(Clone, Copy, Debug)]
pub struct Model<'a> {
    bytes: &'a [u8],
    header: Header,
    meta: ModelMeta,
    tensors: &'a [TensorDesc],
    tensors_at: usize,
    ops: &'a [OpDesc],
    ops_at: usize,
    params: &'a [u8],
    params_at: usize,
    data: &'a [u8],
    /// The string table, checked to be UTF-8 once in `parse` (names are then O(1) slices).
    strings: &'a str,
}

/// A tensor record with its decoded fields.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    /// Index in the tensor table.
    pub index: u16,
    /// The record.
    pub desc: &'a TensorDesc,
    /// Element type.
    pub dtype: DType,
    /// Name.
    pub name: &'a str,
}

impl TensorView<'_> {
    /// Its bytes in the arena.
    pub fn arena_range(&self) -> Range<usize> {
        let start = self.desc.arena_offset as usize;
        start..start + self.desc.byte_len as usize
    }
}

/// An op record with its decoded fields.
#[derive(Clone, Copy, Debug)]
pub struct OpView<'a> {
    /// Position in execution order.
    pub index: u16,
    /// The record.
    pub desc: &'a OpDesc,
    /// Kind.
    pub kind: OpKind,
    /// Name.
    pub name: &'a str,
}

impl OpView<'_> {
    /// Input tensor ids in use.
    pub fn inputs(&self) -> impl Iterator<Item = u16> + '_ {
        self.desc.inputs.iter().copied().filter(|&t| t != NO_TENSOR)
    }

    /// Its scratch bytes in the arena.
    pub fn scratch_range(&self) -> Range<usize> {
        let start = self.desc.scratch_offset as usize;
        start..start + self.desc.scratch_len as usize
    }
}

/// A PRM op: the shared shape plus its branches, each a convolution into a channel slice.
#[derive(Clone, Copy, Debug)]
pub struct Prm<'a> {
    /// Shared parameters.
    pub header: PrmParams,
    branches: &'a [PrmBranch],
    data: &'a [u8],
    op: u16,
    at: usize,
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
            pad_w: br.padding as usize,
            dil_h: br.dilation as usize,
            dil_w: br.dilation as usize,
            groups: 1,
        }
    }

    /// Where branch `b` writes in each output token.
    pub fn output_slice(&self, b: usize) -> OutputSlice {
        let e = self.header.branch_channels as usize;
        OutputSlice {
            offset: b * e,
            pixel_stride: e * self.branches.len(),
        }
    }

    /// Branch `b` as an int8 convolution.
    pub fn branch_s8(&self, b: usize) -> Result<ConvS8<'a>, FormatError> {
        let br = &self.branches[b];
        let d = DataSlices {
            data: self.data,
            op: self.op,
            at: self.at,
        };
        ConvS8::new(
            self.geometry(b),
            d.get::<i8>(br.weights, "prm weights")?,
            d.get::<i32>(br.bias, "prm bias")?,
            d.get::<Requant>(br.requant, "prm requant")?,
            self.header.in_zp,
            br.out_zp,
            d.lut(br.lut)?,
            self.output_slice(b),
        )
        .map_err(|error| FormatError::new(K::BadKernelParams { op: self.op, error }, self.at))
    }

    /// Branch `b` as fp16 weights and f32 bias.
    pub fn branch_f16(&self, b: usize) -> Result<(&'a [f16], &'a [f32]), FormatError> {
        let br = &self.branches[b];
        let d = DataSlices {
            data: self.data,
            op: self.op,
            at: self.at,
        };
        Ok((
            d.get::<f16>(br.weights, "prm weights")?,
            d.get::<f32>(br.bias, "prm bias")?,
        ))
    }
}

/// fp16 convolution parameters, decoded.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub struct ConvF16<'a> {
    pub geom: ConvGeometry,
    pub weights: &'a [f16],
    pub bias: &'a [f32],
    pub act: Activation,
}

/// fp16 linear parameters, decoded.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub struct LinearF16<'a> {
    pub tokens: usize,
    pub in_features: usize,
    pub out_features: usize,
    pub weights: &'a [f16],
    pub bias: &'a [f32],
    pub act: Activation,
}

/// fp16 LayerNorm parameters, decoded.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub struct LayerNormF16<'a> {
    pub channels: usize,
    pub eps: f32,
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
}

/// An op, decoded into the parameters its kernel takes.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub enum Op<'a> {
    QuantizeImage(QuantizeParams),
    ConvS8(ConvS8<'a>),
    PrmS8(Prm<'a>),
    LinearS8(LinearS8<'a>),
    LayerNormS8(LayerNormS8<'a>),
    AttentionS8(AttentionS8),
    PerformerS8(PerformerS8<'a>),
    AddS8(AddS8),
    MeanPoolS8(MeanPoolS8),
    ImageToF16,
    ConvF16(ConvF16<'a>),
    PrmF16(Prm<'a>),
    LinearF16(LinearF16<'a>),
    LayerNormF16(LayerNormF16<'a>),
    AttentionF16(AttentionF16Params),
    PerformerF16 {
        params: PerformerF16Params,
        w: &'a [f32],
    },
    AddF16,
    MeanPoolF16(MeanPoolF16Params),
    DequantizeS8(ConvertParams),
    QuantizeF16(ConvertParams),
}

/// Typed views of DATA references for one op.
struct DataSlices<'a> {
    data: &'a [u8],
    op: u16,
    at: usize,
}

impl<'a> DataSlices<'a> {
    fn get<T: Pod>(&self, r: DataRef, what: &'static str) -> Result<&'a [T], FormatError> {
        let bad = || FormatError::new(K::BadData { op: self.op, what }, self.at);
        let start = r.offset as usize;
        if start % ALIGN != 0 || r.len as usize % core::mem::size_of::<T>() != 0 {
            return Err(bad());
        }
        let bytes = start
            .checked_add(r.len as usize)
            .and_then(|end| self.data.get(start..end))
            .ok_or_else(bad)?;
        bytemuck::try_cast_slice(bytes).map_err(|_| bad())
    }

    fn lut(&self, r: DataRef) -> Result<Option<&'a Lut256>, FormatError> {
        if r.is_none() {
            return Ok(None);
        }
        let t = self.get::<i8>(r, "activation table")?;
        let arr: &[i8; 256] = t.try_into().map_err(|_| {
            FormatError::new(
                K::BadData {
                    op: self.op,
                    what: "activation table",
                },
                self.at,
            )
        })?;
        Ok(Some(bytemuck::cast_ref(arr)))
    }
}

fn act_of(code: u32, op: u16, at: usize) -> Result<Activation, FormatError> {
    match code {
        c if c == act::NONE as u32 => Ok(Activation::None),
        c if c == act::GELU as u32 => Ok(Activation::Gelu),
        c if c == act::SILU as u32 => Ok(Activation::Silu),
        _ => Err(FormatError::new(
            K::BadOp {
                index: op,
                what: "unknown activation code",
            },
            at,
        )),
    }
}

fn read_pod<T: Pod>(bytes: &[u8], at: usize, err: FormatError) -> Result<T, FormatError> {
    let end = at.checked_add(core::mem::size_of::<T>()).ok_or(err)?;
    bytes
        .get(at..end)
        .map(bytemuck::pod_read_unaligned)
        .ok_or(err)
}

impl<'a> Model<'a> {
    /// Validates a blob completely and returns a view of it. `bytes` must start at a 16-byte
    /// aligned address.
    pub fn parse(bytes: &'a [u8]) -> Result<Model<'a>, FormatError> {
        let len = bytes.len();
        if len < core::mem::size_of::<Header>() {
            return Err(FormatError::new(K::TooShort { len }, 0));
        }
        let header: Header = read_pod(bytes, 0, FormatError::new(K::TooShort { len }, 0))?;
        if header.magic != MAGIC {
            return Err(FormatError::new(K::BadMagic, 0));
        }
        if !SUPPORTED_VERSIONS.contains(&header.version) {
            return Err(FormatError::new(
                K::UnsupportedVersion {
                    found: header.version,
                },
                8,
            ));
        }
        if header.header_len as usize != core::mem::size_of::<Header>() {
            return Err(FormatError::new(K::BadHeaderLength, 10));
        }
        if header.total_len as usize != len {
            return Err(FormatError::new(
                K::LengthMismatch {
                    declared: header.total_len as usize,
                    actual: len,
                },
                16,
            ));
        }
        let computed = checksum(bytes);
        if computed != header.crc32 {
            return Err(FormatError::new(
                K::ChecksumMismatch {
                    stored: header.crc32,
                    computed,
                },
                CRC_FIELD_OFFSET,
            ));
        }
        if bytes.as_ptr().align_offset(ALIGN) != 0 {
            return Err(FormatError::new(K::Misaligned, 0));
        }
        let sections = Self::sections(bytes, &header)?;
        let section = |k: SectionKind| sections[k as usize - 1];

        let (meta_at, meta_len, _) = section(SectionKind::Meta);
        if meta_len != core::mem::size_of::<ModelMeta>() {
            return Err(FormatError::new(K::BadSectionSize, meta_at));
        }
        let meta: ModelMeta =
            read_pod(bytes, meta_at, FormatError::new(K::BadSectionSize, meta_at))?;
        let records = |k: SectionKind, size: usize| -> Result<(&'a [u8], usize), FormatError> {
            let (at, len, count) = section(k);
            if count.checked_mul(size) != Some(len) {
                return Err(FormatError::new(K::BadSectionSize, at));
            }
            Ok((&bytes[at..at + len], at))
        };
        let (tensor_bytes, tensors_at) =
            records(SectionKind::Tensors, core::mem::size_of::<TensorDesc>())?;
        let (op_bytes, ops_at) = records(SectionKind::Ops, core::mem::size_of::<OpDesc>())?;
        let bytes_of = |k: SectionKind| {
            let (at, len, _) = section(k);
            (&bytes[at..at + len], at)
        };
        let (params, params_at) = bytes_of(SectionKind::Params);
        let (data, _) = bytes_of(SectionKind::Data);
        let (string_bytes, strings_at) = bytes_of(SectionKind::Strings);
        let strings = core::str::from_utf8(string_bytes)
            .map_err(|e| FormatError::new(K::BadString, strings_at + e.valid_up_to()))?;
        let cast_err = |at| FormatError::new(K::Misaligned, at);
        let model = Model {
            bytes,
            header,
            meta,
            tensors: bytemuck::try_cast_slice(tensor_bytes).map_err(|_| cast_err(tensors_at))?,
            tensors_at,
            ops: bytemuck::try_cast_slice(op_bytes).map_err(|_| cast_err(ops_at))?,
            ops_at,
            params,
            params_at,
            data,
            strings,
        };
        model.validate_tensors()?;
        model.validate_ops()?;
        model.validate_meta(meta_at)?;
        Ok(model)
    }

    /// The section table: for each [`SectionKind`] (index kind − 1), `(offset, len, count)`.
    fn sections(bytes: &[u8], header: &Header) -> Result<[(usize, usize, usize); 6], FormatError> {
        let n = header.section_count as usize;
        let table_at = core::mem::size_of::<Header>();
        let mut found: [Option<(usize, usize, usize)>; 6] = [None; 6];
        let mut end_of_table = table_at;
        for i in 0..n {
            let at = table_at + i * core::mem::size_of::<SectionEntry>();
            let e: SectionEntry = read_pod(bytes, at, FormatError::new(K::BadSection, at))?;
            end_of_table = at + core::mem::size_of::<SectionEntry>();
            let kind = SectionKind::from_u32(e.kind).ok_or(FormatError::new(K::BadSection, at))?;
            let (off, len) = (e.offset as usize, e.len as usize);
            if off % ALIGN != 0 || off.checked_add(len).is_none_or(|end| end > bytes.len()) {
                return Err(FormatError::new(K::BadSection, at));
            }
            let slot = &mut found[kind as usize - 1];
            if slot.is_some() {
                return Err(FormatError::new(
                    K::MissingOrDuplicateSection { kind: e.kind },
                    at,
                ));
            }
            *slot = Some((off, len, e.count as usize));
        }
        let mut out = [(0, 0, 0); 6];
        for (k, slot) in found.iter().enumerate() {
            out[k] = slot.ok_or(FormatError::new(
                K::MissingOrDuplicateSection { kind: k as u32 + 1 },
                table_at,
            ))?;
        }
        // No section may overlap the header, the table or another section.
        for (i, &(a, alen, _)) in out.iter().enumerate() {
            if a < end_of_table {
                return Err(FormatError::new(K::SectionOverlap, a));
            }
            for &(b, blen, _) in &out[i + 1..] {
                if a < b + blen && b < a + alen {
                    return Err(FormatError::new(K::SectionOverlap, a.max(b)));
                }
            }
        }
        Ok(out)
    }

    fn validate_tensors(&self) -> Result<(), FormatError> {
        let arena = self.header.arena_len as usize;
        for (i, t) in self.tensors.iter().enumerate() {
            let at = self.tensors_at + i * core::mem::size_of::<TensorDesc>();
            let bad = |what| {
                FormatError::new(
                    K::BadTensor {
                        index: i as u16,
                        what,
                    },
                    at,
                )
            };
            let dtype = DType::from_u8(t.dtype).ok_or(bad("unknown dtype"))?;
            if t.h == 0 || t.w == 0 || t.c == 0 {
                return Err(bad("zero dimension"));
            }
            // In u64: on a 32-bit device, h·w·c·size of hostile dimensions would wrap in usize
            // and could match a small `byte_len`.
            let bytes = t.h as u64 * t.w as u64 * t.c as u64 * dtype.size() as u64;
            if bytes != t.byte_len as u64 {
                return Err(bad("byte length does not match shape and dtype"));
            }
            let start = t.arena_offset as usize;
            if start % ALIGN != 0 || t.arena_offset as u64 + t.byte_len as u64 > arena as u64 {
                return Err(bad("arena range misaligned or outside the arena"));
            }
            if dtype == DType::I8
                && !(t.scale.is_finite() && t.scale > 0.0 && (-128..=127).contains(&t.zero_point))
            {
                return Err(bad(
                    "int8 scale must be finite and > 0, zero point within int8",
                ));
            }
            self.string(t.name)
                .map_err(|_| FormatError::new(K::BadString, at))?;
        }
        Ok(())
    }

    fn validate_ops(&self) -> Result<(), FormatError> {
        let arena = self.header.arena_len as usize;
        for i in 0..self.ops.len() {
            let op = self.op_view_unchecked(i)?;
            let at = self.op_at(i);
            let bad = |what| {
                FormatError::new(
                    K::BadOp {
                        index: i as u16,
                        what,
                    },
                    at,
                )
            };
            let decoded = self.decode_at(i)?;
            let scratch = op.scratch_range();
            let scratch_end = op.desc.scratch_offset as u64 + op.desc.scratch_len as u64;
            if scratch_end > arena as u64 || (scratch.start % ALIGN != 0 && !scratch.is_empty()) {
                return Err(bad("scratch range misaligned or outside the arena"));
            }
            if (op.desc.scratch_len as usize) < Self::scratch_needed(&decoded) {
                return Err(bad("scratch smaller than the kernel needs"));
            }
            // Outputs may not overlap inputs (except the in-place add) or scratch; scratch may not
            // overlap inputs. Each op gets disjoint views of the arena.
            let out = self.tensor_view_unchecked(op.desc.output).arena_range();
            let in_place = matches!(op.kind, OpKind::AddS8 | OpKind::AddF16)
                && self.tensor_view_unchecked(op.desc.inputs[0]).arena_range() == out;
            for (k, t) in op.inputs().enumerate() {
                let r = self.tensor_view_unchecked(t).arena_range();
                let allowed = in_place && k == 0;
                if !allowed && overlaps(&r, &out) {
                    return Err(bad("output overlaps an input in the arena"));
                }
                if overlaps(&r, &scratch) {
                    return Err(bad("scratch overlaps an input in the arena"));
                }
            }
            if overlaps(&out, &scratch) {
                return Err(bad("scratch overlaps the output in the arena"));
            }
        }
        Ok(())
    }

    fn validate_meta(&self, at: usize) -> Result<(), FormatError> {
        let m = &self.meta;
        let bad = |what| FormatError::new(K::BadMeta(what), at);
        if Precision::from_u8(m.precision).is_none() {
            return Err(bad("unknown precision"));
        }
        self.string(m.name).map_err(|_| bad("name"))?;
        let first = self.ops.first().ok_or(bad("no ops"))?;
        let first_kind = OpKind::from_u16(first.kind);
        if !matches!(first_kind, Some(OpKind::QuantizeImage | OpKind::ImageToF16))
            || first.output != m.input_tensor
        {
            return Err(bad(
                "the first op must convert the image into the input tensor",
            ));
        }
        let input = self
            .tensors
            .get(m.input_tensor as usize)
            .ok_or(bad("input tensor"))?;
        if (input.c, input.h, input.w) != (m.input_channels, m.input_height, m.input_width) {
            return Err(bad("input tensor shape differs from the input image shape"));
        }
        let output = self
            .tensors
            .get(m.output_tensor as usize)
            .ok_or(bad("output tensor"))?;
        if output.elements() != m.num_classes as usize || m.num_classes == 0 {
            return Err(bad("output tensor size differs from the class count"));
        }
        // Every op but the first reads tensors written by earlier ops.
        for (i, op) in self.ops.iter().enumerate().skip(1) {
            for &t in op.inputs.iter().filter(|&&t| t != NO_TENSOR) {
                if !self.ops[..i].iter().any(|o| o.output == t) {
                    return Err(FormatError::new(
                        K::BadOp {
                            index: i as u16,
                            what: "reads a tensor no earlier op writes",
                        },
                        self.op_at(i),
                    ));
                }
            }
        }
        if !self.ops.iter().any(|o| o.output == m.output_tensor) {
            return Err(bad("no op writes the output tensor"));
        }
        Ok(())
    }

    /// Scratch bytes the decoded op's kernel needs.
    fn scratch_needed(op: &Op) -> usize {
        match op {
            Op::ConvS8(c) => conv_s8_scratch_size(c.geometry()),
            Op::PrmS8(p) => (0..p.len())
                .map(|b| conv_s8_scratch_size(&p.geometry(b)))
                .max()
                .unwrap_or(0),
            Op::LinearS8(l) => {
                linear_s8_scratch_size(l.tokens(), l.in_features(), l.out_features())
            }
            Op::AttentionS8(a) => attention_s8_scratch_size(a.tokens(), a.head_dim()),
            Op::PerformerS8(p) => performer_s8_scratch_size(p.emb(), p.features()),
            Op::AttentionF16(a) => attention_f16_scratch_size(a.head_dim as usize),
            Op::PerformerF16 { params, .. } => {
                performer_f16_scratch_size(params.emb as usize, params.features as usize)
            }
            _ => 0,
        }
    }

    fn op_at(&self, i: usize) -> usize {
        self.ops_at + i * core::mem::size_of::<OpDesc>()
    }

    fn op_view_unchecked(&self, i: usize) -> Result<OpView<'a>, FormatError> {
        let desc = &self.ops[i];
        let at = self.op_at(i);
        let kind = OpKind::from_u16(desc.kind).ok_or(FormatError::new(
            K::BadOp {
                index: i as u16,
                what: "unknown op kind",
            },
            at,
        ))?;
        let name = self
            .string(desc.name)
            .map_err(|_| FormatError::new(K::BadString, at))?;
        Ok(OpView {
            index: i as u16,
            desc,
            kind,
            name,
        })
    }

    fn tensor_view_unchecked(&self, t: u16) -> TensorView<'a> {
        let desc = &self.tensors[t as usize];
        TensorView {
            index: t,
            desc,
            dtype: DType::from_u8(desc.dtype).unwrap_or(DType::I8),
            name: self.string(desc.name).unwrap_or(""),
        }
    }

    fn string(&self, r: StrRef) -> Result<&'a str, ()> {
        let start = r.offset as usize;
        // `get` also refuses a range that splits a character.
        start
            .checked_add(r.len as usize)
            .and_then(|end| self.strings.get(start..end))
            .ok_or(())
    }

    /// Decodes op `i`, checking its tensors, parameter record and data against each other.
    fn decode_at(&self, i: usize) -> Result<Op<'a>, FormatError> {
        let view = self.op_view_unchecked(i)?;
        let desc = view.desc;
        let at = self.op_at(i);
        let op = i as u16;
        let bad = |what| FormatError::new(K::BadOp { index: op, what }, at);
        // Tensor arity and ids.
        let (n_in, external_input) = match view.kind {
            OpKind::QuantizeImage | OpKind::ImageToF16 => (0, true),
            OpKind::AttentionS8
            | OpKind::PerformerS8
            | OpKind::AttentionF16
            | OpKind::PerformerF16 => (3, false),
            OpKind::AddS8 | OpKind::AddF16 => (2, false),
            _ => (1, false),
        };
        let _ = external_input;
        for (k, &t) in desc.inputs.iter().enumerate() {
            let used = k < n_in;
            if used && (t as usize) >= self.tensors.len() {
                return Err(bad("input tensor id out of range"));
            }
            if !used && t != NO_TENSOR {
                return Err(bad("unused input slot must be empty"));
            }
        }
        if desc.output as usize >= self.tensors.len() {
            return Err(bad("output tensor id out of range"));
        }
        let tensor = |k: usize| self.tensor_view_unchecked(desc.inputs[k]);
        let out = self.tensor_view_unchecked(desc.output);
        // The parameter record.
        let p_at = desc.params_offset as usize;
        let p_len = desc.params_len as usize;
        let rec_at = self.params_at + p_at;
        let record = p_at
            .checked_add(p_len)
            .and_then(|end| self.params.get(p_at..end))
            .filter(|_| p_at % 4 == 0)
            .ok_or(bad("parameter record out of bounds or misaligned"))?;
        let fixed = |size: usize| -> Result<&'a [u8], FormatError> {
            if record.len() == size {
                Ok(record)
            } else {
                Err(FormatError::new(
                    K::BadOp {
                        index: op,
                        what: "parameter record has the wrong length",
                    },
                    rec_at,
                ))
            }
        };
        let d = DataSlices {
            data: self.data,
            op,
            at: rec_at,
        };
        let kerr = |error| FormatError::new(K::BadKernelParams { op, error }, rec_at);
        let want = |ok: bool, what: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(FormatError::new(K::BadOp { index: op, what }, rec_at))
            }
        };
        let is = |t: &TensorView, dt: DType, h: usize, w: usize, c: usize| {
            t.dtype == dt && (t.desc.h as usize, t.desc.w as usize, t.desc.c as usize) == (h, w, c)
        };
        let tokens_of = |t: &TensorView| t.desc.h as usize * t.desc.w as usize;
        let meta = &self.meta;
        let (ih, iw, ic) = (
            meta.input_height as usize,
            meta.input_width as usize,
            meta.input_channels as usize,
        );

        let decoded = match view.kind {
            OpKind::QuantizeImage => {
                let p: QuantizeParams =
                    bytemuck::pod_read_unaligned(fixed(core::mem::size_of::<QuantizeParams>())?);
                want(
                    is(&out, DType::I8, ih, iw, ic),
                    "output must be the int8 input image",
                )?;
                want(
                    p.inv_scale.is_finite()
                        && p.inv_scale > 0.0
                        && p.zero_point == out.desc.zero_point,
                    "input quantization",
                )?;
                Op::QuantizeImage(p)
            }
            OpKind::ImageToF16 => {
                fixed(0)?;
                want(
                    is(&out, DType::F16, ih, iw, ic),
                    "output must be the fp16 input image",
                )?;
                Op::ImageToF16
            }
            OpKind::ConvS8 => {
                let p: ConvParams =
                    bytemuck::pod_read_unaligned(fixed(core::mem::size_of::<ConvParams>())?);
                let g = p.geom.geometry();
                let x = tensor(0);
                want(
                    is(&x, DType::I8, g.in_h, g.in_w, g.in_c),
                    "input tensor shape/dtype differs from the conv",
                )?;
                want(
                    is(&out, DType::I8, g.out_h, g.out_w, g.out_c),
                    "output tensor shape/dtype differs from the conv",
                )?;
                want(
                    p.in_zp == x.desc.zero_point,
                    "conv input zero point differs from its tensor",
                )?;
                let lut = d.lut(p.lut)?;
                want(
                    lut.is_some() || p.out_zp == out.desc.zero_point,
                    "conv output zero point differs from its tensor",
                )?;
                let k = ConvS8::new(
                    g,
                    d.get(p.weights, "conv weights")?,
                    d.get(p.bias, "conv bias")?,
                    d.get(p.requant, "conv requant")?,
                    p.in_zp,
                    p.out_zp,
                    lut,
                    OutputSlice {
                        offset: 0,
                        pixel_stride: g.out_c,
                    },
                )
                .map_err(kerr)?;
                Op::ConvS8(k)
            }
            OpKind::PrmS8 | OpKind::PrmF16 => {
                let hsize = core::mem::size_of::<PrmParams>();
                let head_bytes = record
                    .get(..hsize)
                    .ok_or(bad("parameter record too short"))?;
                let h: PrmParams = bytemuck::pod_read_unaligned(head_bytes);
                let nb = h.branches as usize;
                want(nb > 0 && nb <= MAX_PRM_BRANCHES, "PRM branch count")?;
                let rest = fixed(hsize + nb * core::mem::size_of::<PrmBranch>())?;
                let branches: &[PrmBranch] = bytemuck::try_cast_slice(&rest[hsize..])
                    .map_err(|_| bad("PRM branches misaligned"))?;
                let prm = Prm {
                    header: h,
                    branches,
                    data: self.data,
                    op,
                    at: rec_at,
                };
                let s8 = view.kind == OpKind::PrmS8;
                let dt = if s8 { DType::I8 } else { DType::F16 };
                let x = tensor(0);
                let e = h.branch_channels as usize;
                want(
                    is(&x, dt, h.in_h as usize, h.in_w as usize, h.in_c as usize),
                    "PRM input tensor shape/dtype",
                )?;
                want(
                    is(&out, dt, h.out_h as usize, h.out_w as usize, e * nb),
                    "PRM output tensor shape/dtype",
                )?;
                for (b, branch) in branches.iter().enumerate() {
                    prm.geometry(b).validate().map_err(kerr)?;
                    if s8 {
                        want(
                            h.in_zp == x.desc.zero_point,
                            "PRM input zero point differs from its tensor",
                        )?;
                        prm.branch_s8(b)?;
                        want(
                            !branch.lut.is_none(),
                            "an int8 PRM branch needs its GELU table",
                        )?;
                    } else {
                        let g = prm.geometry(b);
                        let (w, bias) = prm.branch_f16(b)?;
                        want(
                            w.len() == g.weight_len() && bias.len() == e,
                            "PRM fp16 weight/bias length",
                        )?;
                        act_of(h.act as u32, op, rec_at)?;
                    }
                }
                if s8 { Op::PrmS8(prm) } else { Op::PrmF16(prm) }
            }
            OpKind::LinearS8 => {
                let p: LinearParams =
                    bytemuck::pod_read_unaligned(fixed(core::mem::size_of::<LinearParams>())?);
                let (n, fi, fo) = (
                    p.tokens as usize,
                    p.in_features as usize,
                    p.out_features as usize,
                );
                let x = tensor(0);
                want(
                    x.dtype == DType::I8 && tokens_of(&x) == n && x.desc.c as usize == fi,
                    "linear input tensor shape/dtype",
                )?;
                want(
                    out.dtype == DType::I8 && tokens_of(&out) == n && out.desc.c as usize == fo,
                    "linear output tensor shape/dtype",
                )?;
                let lut = d.lut(p.lut)?;
                want(
                    lut.is_some() || p.out_zp == out.desc.zero_point,
                    "linear output zero point differs from its tensor",
                )?;
                Op::LinearS8(
                    LinearS8::new(
                        n,
                        fi,
                        fo,
                        d.get(p.weights, "linear weights")?,
                        d.get(p.bias, "linear bias")?,
                        d.get(p.requant, "linear requant")?,
                        p.out_zp,
                        lut,
                    )
                    .map_err(kerr)?,
                )
            }
            OpKind::LayerNormS8 => {
                let p: LayerNormParams =
                    bytemuck::pod_read_unaligned(fixed(core::mem::size_of::<LayerNormParams>())?);
                let (n, c) = (p.tokens as usize, p.channels as usize);
                let x = tensor(0);
                want(
                    x.dtype == DType::I8 && tokens_of(&x) == n && x.desc.c as usize == c,
                    "layernorm input tensor shape/dtype",
                )?;
                want(
                    out.dtype == DType::I8 && tokens_of(&out) == n && out.desc.c as usize == c,
                    "layernorm output tensor shape/dtype",
                )?;
                Op::LayerNormS8(
                    LayerNormS8::new(
                        n,
                        c,
                        p.eps_term,
                        d.get(p.gain, "layernorm gain")?,
                        d.get(p.offset, "layernorm offset")?,
                    )
                    .map_err(kerr)?,
                )
            }
            OpKind::AttentionS8 => {
                let p: AttentionParams =
                    bytemuck::pod_read_unaligned(fixed(core::mem::size_of::<AttentionParams>())?);
                let (n, c) = (p.tokens as usize, p.heads as usize * p.head_dim as usize);
                for k in 0..3 {
                    let t = tensor(k);
                    want(
                        t.dtype == DType::I8
                            && tokens_of(&t) == n
                            && t.desc.c as usize == c
                            && t.desc.zero_point == 0,
                        "attention q/k/v must be symmetric int8 of tokens × heads·head_dim",
                    )?;
                }
                want(
                    out.dtype == DType::I8
                        && tokens_of(&out) == n
                        && out.desc.c as usize == c
                        && out.desc.zero_point == p.out_zp,
                    "attention output tensor",
                )?;
                Op::AttentionS8(
                    AttentionS8::new(
                        n,
                        p.heads as usize,
                        p.head_dim as usize,
                        p.logit_scale,
                        p.out_scale,
                        p.out_zp,
                    )
                    .map_err(kerr)?,
                )
            }
            OpKind::PerformerS8 => {
                let p: PerformerParams =
                    bytemuck::pod_read_unaligned(fixed(core::mem::size_of::<PerformerParams>())?);
                let (n, e) = (p.tokens as usize, p.emb as usize);
                for k in 0..3 {
                    let t = tensor(k);
                    want(
                        t.dtype == DType::I8
                            && tokens_of(&t) == n
                            && t.desc.c as usize == e
                            && t.desc.zero_point == 0,
                        "performer k/q/v must be symmetric int8 of tokens × emb",
                    )?;
                }
                want(
                    out.dtype == DType::I8
                        && tokens_of(&out) == n
                        && out.desc.c as usize == e
                        && out.desc.zero_point == p.out_zp,
                    "performer output tensor",
                )?;
                Op::PerformerS8(
                    PerformerS8::new(
                        n,
                        e,
                        p.features as usize,
                        d.get(p.w, "performer w")?,
                        p.w_scale,
                        p.k_scale,
                        p.q_scale,
                        p.v_scale,
                        p.out_inv_scale,
                        p.out_zp,
                    )
                    .map_err(kerr)?,
                )
            }
            OpKind::AddS8 | OpKind::AddF16 => {
                let dt = if view.kind == OpKind::AddS8 {
                    DType::I8
                } else {
                    DType::F16
                };
                let (a, b) = (tensor(0), tensor(1));
                let same = |t: &TensorView| {
                    t.dtype == dt
                        && t.desc.elements() == out.desc.elements()
                        && (t.desc.h, t.desc.w, t.desc.c) == (out.desc.h, out.desc.w, out.desc.c)
                };
                want(
                    same(&a) && same(&b) && out.dtype == dt,
                    "add operands and output must have the same shape and dtype",
                )?;
                if dt == DType::I8 {
                    let p: AddParams =
                        bytemuck::pod_read_unaligned(fixed(core::mem::size_of::<AddParams>())?);
                    let k = AddS8 {
                        ra: p.ra,
                        rb: p.rb,
                        c: p.c,
                    };
                    k.validate().map_err(kerr)?;
                    Op::AddS8(k)
                } else {
                    fixed(0)?;
                    Op::AddF16
                }
            }
            OpKind::MeanPoolS8 => {
                let p: MeanPoolParams =
                    bytemuck::pod_read_unaligned(fixed(core::mem::size_of::<MeanPoolParams>())?);
                let x = tensor(0);
                let (n, c) = (p.tokens as usize, p.channels as usize);
                want(
                    x.dtype == DType::I8 && tokens_of(&x) == n && x.desc.c as usize == c,
                    "mean-pool input tensor",
                )?;
                want(
                    out.dtype == DType::I8 && out.desc.elements() == c && out.desc.c as usize == c,
                    "mean-pool output tensor",
                )?;
                let k = MeanPoolS8 {
                    tokens: n,
                    channels: c,
                    scale: p.scale,
                    offset: p.offset,
                };
                want(
                    k.scale.is_finite() && k.offset.is_finite(),
                    "mean-pool factors must be finite",
                )?;
                Op::MeanPoolS8(k)
            }
            OpKind::ConvF16 => {
                let p: ConvF16Params =
                    bytemuck::pod_read_unaligned(fixed(core::mem::size_of::<ConvF16Params>())?);
                let g = p.geom.geometry();
                g.validate().map_err(kerr)?;
                want(
                    is(&tensor(0), DType::F16, g.in_h, g.in_w, g.in_c),
                    "conv input tensor shape/dtype",
                )?;
                want(
                    is(&out, DType::F16, g.out_h, g.out_w, g.out_c),
                    "conv output tensor shape/dtype",
                )?;
                let weights = d.get::<f16>(p.weights, "conv weights")?;
                let bias = d.get::<f32>(p.bias, "conv bias")?;
                want(
                    weights.len() == g.weight_len() && bias.len() == g.out_c,
                    "conv fp16 weight/bias length",
                )?;
                Op::ConvF16(ConvF16 {
                    geom: g,
                    weights,
                    bias,
                    act: act_of(p.act, op, rec_at)?,
                })
            }
            OpKind::LinearF16 => {
                let p: LinearF16Params =
                    bytemuck::pod_read_unaligned(fixed(core::mem::size_of::<LinearF16Params>())?);
                let (n, fi, fo) = (
                    p.tokens as usize,
                    p.in_features as usize,
                    p.out_features as usize,
                );
                let x = tensor(0);
                want(n > 0 && fi > 0 && fo > 0, "linear dimensions must be > 0")?;
                want(
                    x.dtype == DType::F16 && tokens_of(&x) == n && x.desc.c as usize == fi,
                    "linear input tensor shape/dtype",
                )?;
                want(
                    out.dtype == DType::F16 && tokens_of(&out) == n && out.desc.c as usize == fo,
                    "linear output tensor shape/dtype",
                )?;
                let weights = d.get::<f16>(p.weights, "linear weights")?;
                let bias = d.get::<f32>(p.bias, "linear bias")?;
                want(
                    weights.len() == fi * fo && bias.len() == fo,
                    "linear fp16 weight/bias length",
                )?;
                Op::LinearF16(LinearF16 {
                    tokens: n,
                    in_features: fi,
                    out_features: fo,
                    weights,
                    bias,
                    act: act_of(p.act, op, rec_at)?,
                })
            }
            OpKind::LayerNormF16 => {
                let p: LayerNormF16Params = bytemuck::pod_read_unaligned(fixed(
                    core::mem::size_of::<LayerNormF16Params>(),
                )?);
                let (n, c) = (p.tokens as usize, p.channels as usize);
                let x = tensor(0);
                want(
                    x.dtype == DType::F16 && tokens_of(&x) == n && x.desc.c as usize == c,
                    "layernorm input tensor",
                )?;
                want(
                    out.dtype == DType::F16 && tokens_of(&out) == n && out.desc.c as usize == c,
                    "layernorm output tensor",
                )?;
                want(p.eps.is_finite() && p.eps > 0.0, "layernorm eps")?;
                let gamma = d.get::<f32>(p.gamma, "layernorm gamma")?;
                let beta = d.get::<f32>(p.beta, "layernorm beta")?;
                want(
                    gamma.len() == c && beta.len() == c,
                    "layernorm gamma/beta length",
                )?;
                Op::LayerNormF16(LayerNormF16 {
                    channels: c,
                    eps: p.eps,
                    gamma,
                    beta,
                })
            }
            OpKind::AttentionF16 => {
                let p: AttentionF16Params = bytemuck::pod_read_unaligned(fixed(
                    core::mem::size_of::<AttentionF16Params>(),
                )?);
                let (n, c) = (p.tokens as usize, p.heads as usize * p.head_dim as usize);
                want(
                    n > 0 && c > 0 && p.qk_scale.is_finite(),
                    "attention parameters",
                )?;
                for k in 0..3 {
                    let t = tensor(k);
                    want(
                        t.dtype == DType::F16 && tokens_of(&t) == n && t.desc.c as usize == c,
                        "attention q/k/v tensors",
                    )?;
                }
                want(
                    out.dtype == DType::F16 && tokens_of(&out) == n && out.desc.c as usize == c,
                    "attention output tensor",
                )?;
                Op::AttentionF16(p)
            }
            OpKind::PerformerF16 => {
                let p: PerformerF16Params = bytemuck::pod_read_unaligned(fixed(
                    core::mem::size_of::<PerformerF16Params>(),
                )?);
                let (n, e, m) = (p.tokens as usize, p.emb as usize, p.features as usize);
                want(n > 0 && e > 0 && m > 0, "performer dimensions")?;
                for k in 0..3 {
                    let t = tensor(k);
                    want(
                        t.dtype == DType::F16 && tokens_of(&t) == n && t.desc.c as usize == e,
                        "performer k/q/v tensors",
                    )?;
                }
                want(
                    out.dtype == DType::F16 && tokens_of(&out) == n && out.desc.c as usize == e,
                    "performer output tensor",
                )?;
                let w = d.get::<f32>(p.w, "performer w")?;
                want(
                    w.len() == e * m && w.iter().all(|x| x.is_finite()),
                    "performer w length/values",
                )?;
                Op::PerformerF16 { params: p, w }
            }
            OpKind::MeanPoolF16 => {
                let p: MeanPoolF16Params =
                    bytemuck::pod_read_unaligned(fixed(core::mem::size_of::<MeanPoolF16Params>())?);
                let x = tensor(0);
                let (n, c) = (p.tokens as usize, p.channels as usize);
                want(n > 0 && c > 0, "mean-pool dimensions")?;
                want(
                    x.dtype == DType::F16 && tokens_of(&x) == n && x.desc.c as usize == c,
                    "mean-pool input tensor",
                )?;
                want(
                    out.dtype == DType::F16 && out.desc.elements() == c && out.desc.c as usize == c,
                    "mean-pool output tensor",
                )?;
                Op::MeanPoolF16(p)
            }
            OpKind::DequantizeS8 | OpKind::QuantizeF16 => {
                let p: ConvertParams =
                    bytemuck::pod_read_unaligned(fixed(core::mem::size_of::<ConvertParams>())?);
                let x = tensor(0);
                let deq = view.kind == OpKind::DequantizeS8;
                let (from, to) = if deq {
                    (DType::I8, DType::F16)
                } else {
                    (DType::F16, DType::I8)
                };
                want(
                    x.dtype == from
                        && out.dtype == to
                        && (x.desc.h, x.desc.w, x.desc.c) == (out.desc.h, out.desc.w, out.desc.c),
                    "conversion tensors",
                )?;
                want(p.scale.is_finite() && p.scale > 0.0, "conversion scale")?;
                let int8 = if deq { &x } else { &out };
                want(
                    p.zero_point == int8.desc.zero_point,
                    "conversion zero point differs from the int8 tensor",
                )?;
                if deq {
                    Op::DequantizeS8(p)
                } else {
                    Op::QuantizeF16(p)
                }
            }
        };
        Ok(decoded)
    }

    // ---- accessors (the blob is valid past this point) ----

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Model-wide facts.
    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// The stored precision.
    pub fn precision(&self) -> Precision {
        Precision::from_u8(self.meta.precision).unwrap_or(Precision::Int8)
    }

    /// Model name.
    pub fn name(&self) -> &'a str {
        self.string(self.meta.name).unwrap_or("")
    }

    /// Total multiply-accumulates of one inference.
    pub fn macs(&self) -> u64 {
        self.meta.macs[0] as u64 | (self.meta.macs[1] as u64) << 32
    }

    /// Arena bytes the plan needs.
    pub fn arena_len(&self) -> usize {
        self.header.arena_len as usize
    }

    /// The whole blob.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Bytes of weights and tables (the DATA section).
    pub fn data_len(&self) -> usize {
        self.data.len()
    }

    /// Number of tensors.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }

    /// Tensor `t` (an id from an op or the metadata).
    pub fn tensor(&self, t: u16) -> TensorView<'a> {
        self.tensor_view_unchecked(t)
    }

    /// Number of ops.
    pub fn op_count(&self) -> usize {
        self.ops.len()
    }

    /// Op `i`, `i < op_count()`.
    pub fn op(&self, i: usize) -> OpView<'a> {
        let desc = &self.ops[i];
        OpView {
            index: i as u16,
            desc,
            kind: OpKind::from_u16(desc.kind).unwrap_or(OpKind::QuantizeImage),
            name: self.string(desc.name).unwrap_or(""),
        }
    }

    /// Op `i` decoded for its kernel (validated in `parse`, so this does not fail for a parsed
    /// model; the `Result` keeps it panic-free regardless).
    pub fn decode(&self, i: usize) -> Result<Op<'a>, FormatError> {
        self.decode_at(i)
    }

    /// First and last op that use tensor `t` (its writer to its last reader; the output tensor
    /// lives to the end), or `None` for a tensor no op uses.
    pub fn tensor_lifetime(&self, t: u16) -> Option<(usize, usize)> {
        let mut span: Option<(usize, usize)> = None;
        for (i, op) in self.ops.iter().enumerate() {
            if op.output == t || op.inputs.contains(&t) {
                span = Some(span.map_or((i, i), |(f, _)| (f, i)));
            }
        }
        if t == self.meta.output_tensor {
            span = span.map(|(f, _)| (f, self.ops.len().saturating_sub(1)));
        }
        span
    }

    /// Arena bytes live while op `i` runs: every tensor whose lifetime covers it (tensors that
    /// share storage, as an in-place add's operand and sum do, count once) plus its scratch.
    /// `lifetimes[t]` is [`tensor_lifetime`](Self::tensor_lifetime) of tensor `t`.
    pub fn live_arena_bytes(&self, i: usize, lifetimes: &[Option<(usize, usize)>]) -> usize {
        let live = |t: usize| {
            lifetimes
                .get(t)
                .copied()
                .flatten()
                .is_some_and(|(f, l)| f <= i && i <= l)
        };
        let mut total = self.ops.get(i).map_or(0, |o| o.scratch_len as usize);
        for t in 0..self.tensors.len() {
            if !live(t) {
                continue;
            }
            let r = self.tensor(t as u16).arena_range();
            let shared = (0..t).any(|u| live(u) && self.tensor(u as u16).arena_range() == r);
            if !shared {
                total += r.len();
            }
        }
        total
    }

    /// Bytes of data (weights, tables) op `i` references.
    pub fn op_data_bytes(&self, i: usize) -> usize {
        match self.decode_at(i) {
            // Only the tables the kernel uses were validated (an fp16 branch has no requant or
            // table: those fields are ignored, whatever they hold), each within DATA.
            Ok(Op::PrmS8(p)) => p
                .branches
                .iter()
                .map(|b| [b.weights, b.bias, b.requant, b.lut])
                .map(|refs| refs.iter().map(|r| r.len as usize).sum::<usize>())
                .sum(),
            Ok(Op::PrmF16(p)) => p
                .branches
                .iter()
                .map(|b| b.weights.len as usize + b.bias.len as usize)
                .sum(),
            Ok(_) => {
                let desc = &self.ops[i];
                let start = desc.params_offset as usize;
                let rec = &self.params[start..start + desc.params_len as usize];
                // Every DataRef-bearing record lists its refs after its fixed fields; summing the
                // refs through each kind keeps this exact.
                data_refs_len(OpKind::from_u16(desc.kind), rec)
            }
            Err(_) => 0,
        }
    }
}

fn data_refs_len(kind: Option<OpKind>, rec: &[u8]) -> usize {
    let sum = |refs: &[DataRef]| refs.iter().map(|r| r.len as usize).sum();
    match kind {
        Some(OpKind::ConvS8) => {
            let p: ConvParams = bytemuck::pod_read_unaligned(rec);
            sum(&[p.weights, p.bias, p.requant, p.lut])
        }
        Some(OpKind::LinearS8) => {
            let p: LinearParams = bytemuck::pod_read_unaligned(rec);
            sum(&[p.weights, p.bias, p.requant, p.lut])
        }
        Some(OpKind::LayerNormS8) => {
            let p: LayerNormParams = bytemuck::pod_read_unaligned(rec);
            sum(&[p.gain, p.offset])
        }
        Some(OpKind::PerformerS8) => {
            let p: PerformerParams = bytemuck::pod_read_unaligned(rec);
            p.w.len as usize
        }
        Some(OpKind::ConvF16) => {
            let p: ConvF16Params = bytemuck::pod_read_unaligned(rec);
            sum(&[p.weights, p.bias])
        }
        Some(OpKind::LinearF16) => {
            let p: LinearF16Params = bytemuck::pod_read_unaligned(rec);
            sum(&[p.weights, p.bias])
        }
        Some(OpKind::LayerNormF16) => {
            let p: LayerNormF16Params = bytemuck::pod_read_unaligned(rec);
            sum(&[p.gamma, p.beta])
        }
        Some(OpKind::PerformerF16) => {
            let p: PerformerF16Params = bytemuck::pod_read_unaligned(rec);
            p.w.len as usize
        }
        _ => 0,
    }
}

impl Precision {
    /// From the stored value.
    pub fn from_u8(v: u8) -> Option<Precision> {
        match v {
            0 => Some(Precision::Int8),
            1 => Some(Precision::Fp16),
            2 => Some(Precision::Mixed),
            _ => None,
        }
    }
}

fn overlaps(a: &Range<usize>, b: &Range<usize>) -> bool {
    !a.is_empty() && !b.is_empty() && a.start < b.end && b.start < a.end
}

/// CRC-32 of the blob with the CRC field read as zero.
pub(crate) fn checksum(bytes: &[u8]) -> u32 {
    let mut c = Crc32::default();
    c.update(&bytes[..CRC_FIELD_OFFSET]);
    c.update(&[0; 4]);
    c.update(&bytes[CRC_FIELD_OFFSET + 4..]);
    c.finish()
}
