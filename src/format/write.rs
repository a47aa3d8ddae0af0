//! Writing a blob (host side). The same record types as the reader, laid out as the module docs
//! describe; [`BlobWriter::finish`] fills in offsets, padding and the checksum.

use super::*;
use crate::ops::{HasKind, Record};
use bytemuck::Pod;

/// Builds a blob.
#[derive(Clone, Debug, Default)]
pub struct BlobWriter {
    /// Model-wide facts (filled by the caller).
    pub meta: Option<ModelMeta>,
    /// Tensor records; `arena_offset` is filled by the planner.
    pub tensors: Vec<TensorDesc>,
    /// Op records in execution order; each op's scratch length comes from its kind, the
    /// planner fills in the scratch offsets.
    pub ops: Vec<OpDesc>,
    params: Vec<u8>,
    data: Vec<u8>,
    strings: Vec<u8>,
    /// Arena bytes the plan needs.
    pub arena_len: u32,
    /// Largest simultaneously live set.
    pub arena_lower_bound: u32,
    /// Where the arena splits into parts ([`Header::arena_splits`]); zeros for one part.
    pub arena_splits: [u32; MAX_ARENA_PARTS - 1],
}

/// A byte buffer whose start is 16-byte aligned, as [`Model::parse`] requires (a `Vec<u8>` does
/// not promise it).
#[derive(Clone, Debug, Default)]
pub struct AlignedBytes {
    words: Vec<u128>,
    len: usize,
}

impl AlignedBytes {
    /// Copies `bytes` into aligned storage.
    pub fn new(bytes: &[u8]) -> Self {
        let mut words = vec![0u128; bytes.len().div_ceil(16)];
        bytemuck::cast_slice_mut::<u128, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        AlignedBytes {
            words,
            len: bytes.len(),
        }
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u128, u8>(&self.words)[..self.len]
    }

    /// The bytes, mutable (for tests that corrupt a blob).
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut::<u128, u8>(&mut self.words)[..self.len]
    }
}

fn pad_to(v: &mut Vec<u8>, align: usize) {
    while !v.len().is_multiple_of(align) {
        v.push(0);
    }
}

impl BlobWriter {
    /// The oldest format version that holds this blob: 2 when it has strips of a patch-based
    /// run (tensors with [`TensorDesc::row0`], f32 performer sums), else 1.
    pub fn version(&self) -> u16 {
        let v2 = self
            .tensors
            .iter()
            .any(|t| t.row0 != 0 || t.dtype == DType::F32 as u8);
        if v2 { 2 } else { 1 }
    }

    /// An empty blob.
    pub fn new() -> Self {
        Self::default()
    }

    /// A name stored by [`string`](Self::string) (empty for a reference it did not return).
    pub fn name(&self, r: StrRef) -> &str {
        let range = r.offset as usize..r.offset as usize + r.len as usize;
        self.strings
            .get(range)
            .and_then(|b| core::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    /// Stores a name.
    pub fn string(&mut self, s: &str) -> StrRef {
        let r = StrRef {
            offset: self.strings.len() as u32,
            len: s.len() as u32,
        };
        self.strings.extend_from_slice(s.as_bytes());
        r
    }

    /// Stores a table in DATA, 16-byte aligned.
    pub fn data<T: Pod>(&mut self, items: &[T]) -> DataRef {
        pad_to(&mut self.data, ALIGN);
        let bytes: &[u8] = bytemuck::cast_slice(items);
        let r = DataRef {
            offset: self.data.len() as u32,
            len: bytes.len() as u32,
        };
        self.data.extend_from_slice(bytes);
        r
    }

    /// Adds a tensor; returns its id.
    pub fn tensor(&mut self, desc: TensorDesc) -> u16 {
        self.tensors.push(desc);
        (self.tensors.len() - 1) as u16
    }

    /// Appends an op of kind `S` with its typed parameter record; returns its index. `inputs`
    /// must hold exactly the op's tensor inputs (a wrong count is a bug in the caller: it
    /// panics).
    pub fn op<S: HasKind>(
        &mut self,
        inputs: &[u16],
        output: u16,
        params: &S::Params<'_>,
        macs: u64,
        name: &str,
    ) -> usize {
        let start = self.start_record();
        params.write(&mut self.params);
        let scratch = S::scratch_bytes(params);
        self.push_op(S::KIND, inputs, output, start, scratch, macs, name)
    }

    /// Appends an op of `kind` whose record is given as stored bytes (copying an op from another
    /// blob): the bytes are read as the kind's record type first, so only a well-formed record of
    /// that kind is written. Returns the op's index, or what is wrong with the record.
    pub fn op_record(
        &mut self,
        kind: OpKind,
        inputs: &[u16],
        output: u16,
        record: &[u8],
        macs: u64,
        name: &str,
    ) -> Result<usize, &'static str> {
        let start = self.start_record();
        let scratch = kind
            .copy_record(record, &mut self.params)
            .inspect_err(|_| {
                self.params.truncate(start);
            })?;
        Ok(self.push_op(kind, inputs, output, start, scratch, macs, name))
    }

    /// Pads PARAMS to the next record's alignment; returns where the record starts.
    fn start_record(&mut self) -> usize {
        pad_to(&mut self.params, 4);
        self.params.len()
    }

    #[allow(clippy::too_many_arguments)]
    fn push_op(
        &mut self,
        kind: OpKind,
        inputs: &[u16],
        output: u16,
        params_start: usize,
        scratch: usize,
        macs: u64,
        name: &str,
    ) -> usize {
        assert_eq!(
            inputs.len(),
            kind.inputs(),
            "{kind:?} takes {} input tensors",
            kind.inputs()
        );
        let mut ins = [NO_TENSOR; 3];
        ins[..inputs.len()].copy_from_slice(inputs);
        let desc = OpDesc {
            kind: kind as u16,
            flags: 0,
            inputs: ins,
            output,
            params_offset: params_start as u32,
            params_len: (self.params.len() - params_start) as u32,
            // The planner gives the scratch its place in the arena.
            scratch_offset: 0,
            scratch_len: scratch as u32,
            macs: macs.min(u32::MAX as u64) as u32,
            name: self.string(name),
        };
        self.ops.push(desc);
        self.ops.len() - 1
    }

    /// Stores each distinct parameter record once: ops whose records are byte-identical share
    /// one (the reader reads each op's record by its offset and length), except ops of the kinds
    /// `keep_own` names, whose records a later step may rewrite in place
    /// ([`replace_params`](Self::replace_params)). Records no op references are dropped.
    pub fn share_records(&mut self, keep_own: impl Fn(u16) -> bool) {
        let mut params = Vec::new();
        let mut seen: std::collections::HashMap<Vec<u8>, u32> = std::collections::HashMap::new();
        for op in &mut self.ops {
            let bytes = self.params[op.params_offset as usize..][..op.params_len as usize].to_vec();
            if !keep_own(op.kind)
                && let Some(&at) = seen.get(&bytes)
            {
                op.params_offset = at;
                continue;
            }
            pad_to(&mut params, 4);
            let at = params.len() as u32;
            params.extend_from_slice(&bytes);
            if !keep_own(op.kind) {
                seen.insert(bytes, at);
            }
            op.params_offset = at;
        }
        self.params = params;
    }

    /// Stores each distinct name once (an op and its output tensor often share one) and drops
    /// names nothing references.
    pub fn share_strings(&mut self) {
        let old = core::mem::take(&mut self.strings);
        let mut seen: std::collections::HashMap<Vec<u8>, StrRef> = std::collections::HashMap::new();
        let mut rename = |r: &mut StrRef, strings: &mut Vec<u8>| {
            let bytes = old[r.offset as usize..][..r.len as usize].to_vec();
            *r = *seen.entry(bytes).or_insert_with_key(|b| {
                let at = strings.len() as u32;
                strings.extend_from_slice(b);
                StrRef {
                    offset: at,
                    len: b.len() as u32,
                }
            });
        };
        let mut strings = Vec::new();
        if let Some(meta) = self.meta.as_mut() {
            rename(&mut meta.name, &mut strings);
        }
        for t in &mut self.tensors {
            rename(&mut t.name, &mut strings);
        }
        for op in &mut self.ops {
            rename(&mut op.name, &mut strings);
        }
        self.strings = strings;
    }

    /// The stored parameter record of op `op`.
    pub fn record(&self, op: usize) -> &[u8] {
        let d = self.ops[op];
        &self.params[d.params_offset as usize..][..d.params_len as usize]
    }

    /// Replaces op `op`'s parameter record (of kind `S`) with another of the same length.
    pub fn replace_params<S: HasKind>(&mut self, op: usize, params: &S::Params<'_>) {
        let d = self.ops[op];
        assert_eq!(d.kind, S::KIND as u16, "op {op} is not a {:?}", S::KIND);
        let mut bytes = Vec::new();
        params.write(&mut bytes);
        assert_eq!(
            d.params_len as usize,
            bytes.len(),
            "replace_params needs a record of the same length"
        );
        let start = d.params_offset as usize;
        self.params[start..start + bytes.len()].copy_from_slice(&bytes);
    }

    /// Lays the blob out and checksums it.
    pub fn finish(self) -> Vec<u8> {
        let version = self.version();
        let meta = self
            .meta
            .expect("BlobWriter::meta must be set before finish");
        let sections: [(SectionKind, Vec<u8>, usize); 6] = [
            (SectionKind::Meta, bytemuck::bytes_of(&meta).to_vec(), 0),
            (
                SectionKind::Tensors,
                bytemuck::cast_slice(&self.tensors).to_vec(),
                self.tensors.len(),
            ),
            (
                SectionKind::Ops,
                bytemuck::cast_slice(&self.ops).to_vec(),
                self.ops.len(),
            ),
            (SectionKind::Params, self.params, 0),
            (SectionKind::Data, self.data, 0),
            (SectionKind::Strings, self.strings, 0),
        ];
        let header_len = core::mem::size_of::<Header>();
        let mut out = vec![0u8; header_len + sections.len() * core::mem::size_of::<SectionEntry>()];
        let mut table = Vec::new();
        for (kind, bytes, count) in &sections {
            pad_to(&mut out, ALIGN);
            table.push(SectionEntry {
                kind: *kind as u32,
                offset: out.len() as u32,
                len: bytes.len() as u32,
                count: *count as u32,
            });
            out.extend_from_slice(bytes);
        }
        pad_to(&mut out, ALIGN);
        let header = Header {
            magic: MAGIC,
            version,
            header_len: header_len as u16,
            section_count: sections.len() as u16,
            flags: 0,
            total_len: out.len() as u32,
            crc32: 0,
            arena_len: self.arena_len,
            arena_lower_bound: self.arena_lower_bound,
            arena_splits: self.arena_splits,
            reserved: 0,
        };
        out[..header_len].copy_from_slice(bytemuck::bytes_of(&header));
        out[header_len..header_len + table.len() * 16]
            .copy_from_slice(bytemuck::cast_slice(&table));
        let crc = read::checksum(&out);
        out[CRC_FIELD_OFFSET..CRC_FIELD_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        out
    }
}
