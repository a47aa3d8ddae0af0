//! Reading and validating a blob. Everything is checked in [`Model::parse`]; afterwards the
//! accessors cannot fail on anything but a bug.

use super::error::{FormatError, FormatErrorKind as K};
use super::*;
use crate::ops::{DecodeCx, Op, OpKind, Tables};
use bytemuck::Pod;
use core::ops::Range;

/// A validated blob, borrowed (the weights are used in place).
#[derive(Clone, Copy, Debug)]
pub struct Model<'a> {
    bytes: &'a [u8],
    header: Header,
    meta: &'a ModelMeta,
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
        // Saturating: a hostile record must not overflow a 32-bit usize before the reader's
        // bounds check (in u64) refuses it.
        start..start.saturating_add(self.desc.byte_len as usize)
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
        // Saturating, as `TensorView::arena_range`.
        start..start.saturating_add(self.desc.scratch_len as usize)
    }
}

fn read_pod<T: Pod>(bytes: &[u8], at: usize, err: FormatError) -> Result<T, FormatError> {
    let end = at.checked_add(core::mem::size_of::<T>()).ok_or(err)?;
    bytes
        .get(at..end)
        .map(bytemuck::pod_read_unaligned)
        .ok_or(err)
}

/// Reads and checks the fixed header of a blob: the magic, a supported version, the header's
/// length and a declared total length equal to `bytes.len()`. Nothing past the header is read:
/// [`Model::parse`] starts here and then checks everything else.
///
/// A `const fn`, so [`include_model!`](crate::include_model) refuses a file that is not a blob
/// when the firmware is compiled, and a loader can size its buffers from the first
/// [`HEADER_LEN`] bytes (with `bytes` that short, only the length check differs: see
/// [`read_header_prefix`]).
pub const fn read_header(bytes: &[u8]) -> Result<Header, FormatError> {
    let header = match read_header_prefix(bytes) {
        Ok(h) => h,
        Err(e) => return Err(e),
    };
    if header.total_len as usize != bytes.len() {
        return Err(FormatError::new(
            K::LengthMismatch {
                declared: header.total_len as usize,
                actual: bytes.len(),
            },
            16,
        ));
    }
    Ok(header)
}

/// As [`read_header`], for the first bytes of a blob that has not fully arrived: checks the
/// magic, version and header length of `prefix` (at least [`HEADER_LEN`] bytes) and returns the
/// header, whose `total_len` and `arena_len` then size the buffers for the rest.
pub const fn read_header_prefix(prefix: &[u8]) -> Result<Header, FormatError> {
    let len = prefix.len();
    if len < HEADER_LEN {
        return Err(FormatError::new(K::TooShort { len }, 0));
    }
    let mut magic = [0u8; 8];
    let mut i = 0;
    while i < 8 {
        magic[i] = prefix[i];
        if magic[i] != MAGIC[i] {
            return Err(FormatError::new(K::BadMagic, 0));
        }
        i += 1;
    }
    let version = le_u16(prefix, 8);
    let mut supported = false;
    let mut v = 0;
    while v < SUPPORTED_VERSIONS.len() {
        supported |= SUPPORTED_VERSIONS[v] == version;
        v += 1;
    }
    if !supported {
        return Err(FormatError::new(
            K::UnsupportedVersion { found: version },
            8,
        ));
    }
    if le_u16(prefix, 10) as usize != HEADER_LEN {
        return Err(FormatError::new(K::BadHeaderLength, 10));
    }
    let arena_len = le_u32(prefix, 24);
    let mut arena_splits = [0u32; MAX_ARENA_PARTS - 1];
    let mut r = 0;
    let mut previous = 0;
    while r < MAX_ARENA_PARTS - 1 {
        let at = 32 + 4 * r;
        let split = le_u32(prefix, at);
        arena_splits[r] = split;
        // Splits rise strictly inside the arena, 16-aligned; once one is zero, all that follow.
        let bad = if previous == 0 && r > 0 {
            split != 0
        } else {
            split != 0
                && (split <= previous || split >= arena_len || !split.is_multiple_of(ALIGN as u32))
        };
        if bad {
            return Err(FormatError::new(K::BadArenaSplit { part: r as u8 + 1 }, at));
        }
        previous = split;
        r += 1;
    }
    Ok(Header {
        magic,
        version,
        header_len: le_u16(prefix, 10),
        section_count: le_u16(prefix, 12),
        flags: le_u16(prefix, 14),
        total_len: le_u32(prefix, 16),
        crc32: le_u32(prefix, CRC_FIELD_OFFSET),
        arena_len,
        arena_lower_bound: le_u32(prefix, 28),
        arena_splits,
        reserved: le_u32(prefix, 60),
    })
}

const fn le_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

const fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

impl<'a> Model<'a> {
    /// Validates a blob completely and returns a view of it. `bytes` must start at a 16-byte
    /// aligned address.
    pub fn parse(bytes: &'a [u8]) -> Result<Model<'a>, FormatError> {
        let header = read_header(bytes)?;
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
        // In place (the blob is 16-byte aligned, so is every section): ops borrow it as they
        // decode.
        let meta: &'a ModelMeta = bytemuck::try_from_bytes(&bytes[meta_at..meta_at + meta_len])
            .map_err(|_| FormatError::new(K::Misaligned, meta_at))?;
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
            if self.header.version < 2 && (t.row0 != 0 || dtype == DType::F32) {
                return Err(bad(
                    "strips and f32 tensors need blob format version 2 (the field was reserved)",
                ));
            }
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
            if !start.is_multiple_of(ALIGN)
                || t.arena_offset as u64 + t.byte_len as u64 > arena as u64
            {
                return Err(bad("arena range misaligned or outside the arena"));
            }
            if self.crosses_arena_split(start, t.byte_len as usize) {
                return Err(bad("arena range crosses a split between arena parts"));
            }
            if dtype == DType::I8
                && !(t.scale.is_finite() && t.scale > 0.0 && (-128..=127).contains(&t.zero_point))
            {
                return Err(bad(
                    "int8 scale must be finite and > 0, zero point within int8",
                ));
            }
            if dtype == DType::I16 && !(t.scale.is_finite() && t.scale > 0.0 && t.zero_point == 0) {
                return Err(bad("int16 scale must be finite and > 0, zero point 0"));
            }
            self.string(t.name)
                .map_err(|_| FormatError::new(K::BadString, at))?;
        }
        Ok(())
    }

    /// True when `len` bytes at arena offset `start` (inside the arena) lie in two parts.
    fn crosses_arena_split(&self, start: usize, len: usize) -> bool {
        len > 0
            && self.header.arena_splits[..self.header.arena_parts() - 1]
                .iter()
                .any(|&s| start < s as usize && (s as usize) < start + len)
    }

    fn validate_ops(&self) -> Result<(), FormatError> {
        let arena = self.header.arena_len as usize;
        for i in 0..self.ops.len() {
            let op = self.op_view(i)?;
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
            if self.crosses_arena_split(scratch.start, scratch.len()) {
                return Err(bad("scratch range crosses a split between arena parts"));
            }
            let needed = self
                .record(op.desc)
                .and_then(|r| decoded.kind().scratch_bytes(r).ok())
                .unwrap_or(usize::MAX);
            if (op.desc.scratch_len as usize) < needed {
                return Err(bad("scratch smaller than the kernel needs"));
            }
            // Outputs may not overlap inputs (except the in-place add) or scratch; scratch may not
            // overlap inputs. Each op gets disjoint views of the arena.
            let out = self.tensor_view_unchecked(op.desc.output).arena_range();
            let in_place = op.kind.in_place()
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
        let m = self.meta;
        let bad = |what| FormatError::new(K::BadMeta(what), at);
        if Precision::from_u8(m.precision).is_none() {
            return Err(bad("unknown precision"));
        }
        self.string(m.name).map_err(|_| bad("name"))?;
        let first = self.ops.first().ok_or(bad("no ops"))?;
        // The ops that read the caller's image are the ones without tensor inputs.
        let reads_image = OpKind::from_u16(first.kind)
            .is_some_and(|k| k.inputs() == 0 && k.image_layout().is_some());
        if !reads_image || first.output != m.input_tensor {
            return Err(bad(
                "the first op must convert the image into the input tensor",
            ));
        }
        let input = self
            .tensors
            .get(m.input_tensor as usize)
            .ok_or(bad("input tensor"))?;
        // The whole image, or (version 2, a patch-based run) the first strip of its rows.
        let whole = (input.c, input.h, input.w)
            == (m.input_channels, m.input_height, m.input_width)
            && input.row0 == 0;
        let strip = self.header.version >= 2
            && (input.c, input.w) == (m.input_channels, m.input_width)
            && input.row0 as u32 + input.h as u32 <= m.input_height as u32;
        if !whole && !strip {
            return Err(bad("input tensor shape differs from the input image shape"));
        }
        let output = self
            .tensors
            .get(m.output_tensor as usize)
            .ok_or(bad("output tensor"))?;
        if output.elements() != m.num_classes as usize || m.num_classes == 0 {
            return Err(bad("output tensor size differs from the class count"));
        }
        if output.dtype == DType::F32 as u8 {
            return Err(bad("output tensor is f32 (only a performer's sums are)"));
        }
        // Every op but the first reads tensors written by earlier ops (whole, or strip by strip).
        for (i, op) in self.ops.iter().enumerate().skip(1) {
            for &t in op.inputs.iter().filter(|&&t| t != NO_TENSOR) {
                if !self.ops[..i].iter().any(|o| o.output == t) && !self.written_in_strips(i, t) {
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

    /// True when the outputs of ops before `op` that hold rows of tensor `t`'s map in the same
    /// storage (strips of it, or a larger window it is a strip of) cover all of `t`'s rows: how
    /// a patch-based run writes the maps its strips read. Checked without allocating: from `t`'s
    /// first row on, some earlier output must hold the next row.
    fn written_in_strips(&self, op: usize, t: u16) -> bool {
        let Some(whole) = self.tensors.get(t as usize) else {
            return false;
        };
        let row_bytes = whole.w as i64
            * whole.c as i64
            * DType::from_u8(whole.dtype).map_or(0, |d| d.size() as i64);
        // Where row 0 of the map would sit: equal for every tensor in the same storage.
        let base = |d: &TensorDesc| d.arena_offset as i64 - d.row0 as i64 * row_bytes;
        let same_storage = |s: &TensorDesc| {
            s.dtype == whole.dtype && (s.w, s.c) == (whole.w, whole.c) && base(s) == base(whole)
        };
        let end = whole.row0 as u64 + whole.h as u64;
        let mut next = whole.row0 as u64;
        while next < end {
            let reach = self.ops[..op]
                .iter()
                .filter_map(|o| self.tensors.get(o.output as usize))
                .filter(|s| same_storage(s) && s.row0 as u64 <= next)
                .map(|s| s.row0 as u64 + s.h as u64)
                .max();
            match reach {
                Some(r) if r > next => next = r,
                _ => return false,
            }
        }
        row_bytes > 0
    }

    fn op_at(&self, i: usize) -> usize {
        self.ops_at + i * core::mem::size_of::<OpDesc>()
    }

    fn op_view(&self, i: usize) -> Result<OpView<'a>, FormatError> {
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

    /// Decodes op `i`, checking its tensors, parameter record and data against each other: the
    /// checks every op shares here (tensor ids, arity, the record's bounds), the rest in the op's
    /// own module ([`crate::ops`]).
    fn decode_at(&self, i: usize) -> Result<Op<'a>, FormatError> {
        self.decode_with(i, self.data, 0, None)
    }

    /// Decodes op `i` with its tables read from `data`, which holds the DATA section from DATA
    /// offset `base` on; `span`, when given, is widened to every DATA range the op resolves.
    fn decode_with<'s>(
        &self,
        i: usize,
        data: &'s [u8],
        base: usize,
        span: Option<&'s core::cell::Cell<(usize, usize)>>,
    ) -> Result<Op<'s>, FormatError>
    where
        'a: 's,
    {
        let view = self.op_view(i)?;
        let desc = view.desc;
        let at = self.op_at(i);
        let op = i as u16;
        let bad = |what| FormatError::new(K::BadOp { index: op, what }, at);
        let n_in = view.kind.inputs();
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
        let record = self
            .record(desc)
            .ok_or(bad("parameter record out of bounds or misaligned"))?;
        let cx = DecodeCx {
            tensors: self.tensors,
            inputs: desc.inputs,
            output: desc.output,
            meta: self.meta,
            tables: Tables {
                data,
                base,
                span,
                op,
                at: self.params_at + desc.params_offset as usize,
            },
        };
        view.kind.decode(record, &cx)
    }

    /// The parameter record of an op: in PARAMS and 4-aligned, or `None`.
    fn record(&self, desc: &OpDesc) -> Option<&'a [u8]> {
        let start = desc.params_offset as usize;
        if !start.is_multiple_of(4) {
            return None;
        }
        self.params
            .get(start..start.checked_add(desc.params_len as usize)?)
    }

    // ---- accessors (the blob is valid past this point) ----

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Model-wide facts.
    pub fn meta(&self) -> &'a ModelMeta {
        self.meta
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

    /// How the model takes its image: the [`Input`](crate::runtime::Input) variant to give it.
    pub fn image_layout(&self) -> crate::runtime::ImageLayout {
        // `parse` checked that the first op reads the image.
        self.ops
            .first()
            .and_then(|op| OpKind::from_u16(op.kind))
            .and_then(OpKind::image_layout)
            .unwrap_or(crate::runtime::ImageLayout::F32Nchw)
    }

    /// Values of one input image: channels × height × width.
    pub fn input_values(&self) -> usize {
        let m = self.meta;
        m.input_channels as usize * m.input_height as usize * m.input_width as usize
    }

    /// Bytes of the caller's input image in the model's [`image_layout`](Self::image_layout).
    pub fn input_bytes(&self) -> usize {
        self.image_layout().bytes(self.input_values())
    }

    /// Arena bytes the plan needs.
    pub fn arena_len(&self) -> usize {
        self.header.arena_len as usize
    }

    /// Parts the arena splits into, each its own buffer (1 for a contiguous plan; see
    /// [`Header::arena_splits`]).
    pub fn arena_parts(&self) -> usize {
        self.header.arena_parts()
    }

    /// The arena offsets of part `i` (empty past the last part).
    pub fn arena_part(&self, i: usize) -> Range<usize> {
        self.header.arena_part(i)
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

    /// Op `i`, `i < op_count()`. `parse` checked every op's kind and name, so this does not fail
    /// for a parsed model; the `Result` keeps a kind from ever being guessed.
    pub fn op(&self, i: usize) -> Result<OpView<'a>, FormatError> {
        self.op_view(i)
    }

    /// Op `i` decoded for its kernel (validated in `parse`, so this does not fail for a parsed
    /// model; the `Result` keeps it panic-free regardless).
    pub fn decode(&self, i: usize) -> Result<Op<'a>, FormatError> {
        self.decode_at(i)
    }

    /// The DATA bytes op `i` reads: the smallest range of the DATA section holding every table
    /// its decoding resolves (weights, biases, requantization, LUTs), as offsets into DATA
    /// (16-aligned start; empty for an op without tables). What a staging copy must hold.
    pub fn op_data_range(&self, i: usize) -> Result<Range<usize>, FormatError> {
        let span = core::cell::Cell::new((0, 0));
        self.decode_with(i, self.data, 0, Some(&span))?;
        let (start, end) = span.get();
        Ok(start..end)
    }

    /// The DATA section's bytes at `range` (offsets into DATA, as
    /// [`op_data_range`](Self::op_data_range) gives them), in the blob: the source of a staging
    /// copy. Empty when out of range.
    pub fn data_bytes(&self, range: Range<usize>) -> &'a [u8] {
        self.data.get(range).unwrap_or_default()
    }

    /// Op `i` decoded with its tables read from `staged`, a copy of
    /// [`data_bytes`](Self::data_bytes)`(`[`op_data_range`](Self::op_data_range)`(i))` in faster
    /// memory (16-byte aligned): the op then reads its weights there instead of in the blob.
    /// Validated as [`decode`](Self::decode) is, so a wrong copy is an error or wrong numbers,
    /// never out-of-bounds reads.
    pub fn decode_staged<'s>(&self, i: usize, staged: &'s [u8]) -> Result<Op<'s>, FormatError>
    where
        'a: 's,
    {
        let base = self.op_data_range(i)?.start;
        self.decode_with(i, staged, base, None)
    }

    /// As [`decode_staged`](Self::decode_staged), for a caller that already knows where op
    /// `i`'s tables start in DATA (`base`, from [`op_data_range`](Self::op_data_range)).
    pub(crate) fn decode_staged_from<'s>(
        &self,
        i: usize,
        staged: &'s [u8],
        base: usize,
    ) -> Result<Op<'s>, FormatError>
    where
        'a: 's,
    {
        self.decode_with(i, staged, base, None)
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

    /// Bytes of data (weights, tables) op `i` references and its kernel uses. Like
    /// [`decode`](Self::decode), it does not fail for a parsed model.
    pub fn op_data_bytes(&self, i: usize) -> Result<usize, FormatError> {
        let kind = self.decode_at(i)?.kind();
        let desc = &self.ops[i];
        let bad = |what| {
            FormatError::new(
                K::BadOp {
                    index: i as u16,
                    what,
                },
                self.op_at(i),
            )
        };
        let record = self
            .record(desc)
            .ok_or(bad("parameter record out of bounds or misaligned"))?;
        kind.data_bytes(record).map_err(bad)
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
