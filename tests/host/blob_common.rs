//! Helpers shared by the blob-format property tests of `vitae-edge` (format_properties.rs) and
//! of the quantizer's blobs (blob_properties.rs): parsing, checksum patching, the section table,
//! re-serialization through the writer, and running whatever parses.
#![allow(dead_code)]

use vitae_edge::format::{
    AlignedBytes, BlobWriter, CRC_FIELD_OFFSET, FormatError, Header, Model, SectionEntry,
    SectionKind, StrRef, crc32,
};
use vitae_edge::runtime::{self, Input, NoProfiler};

pub fn parse(bytes: &[u8]) -> Result<(), FormatError> {
    let aligned = AlignedBytes::new(bytes);
    Model::parse(aligned.as_bytes()).map(|_| ())
}

/// Recomputes and stores the checksum (what a crafted blob would do).
pub fn patch_crc(bytes: &mut [u8]) {
    bytes[CRC_FIELD_OFFSET..CRC_FIELD_OFFSET + 4].fill(0);
    let crc = crc32(bytes);
    bytes[CRC_FIELD_OFFSET..CRC_FIELD_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Offset and length of each section, by kind, read straight from the bytes.
pub fn sections(bytes: &[u8]) -> [(usize, usize, usize); 6] {
    let header: Header = bytemuck::pod_read_unaligned(&bytes[..64]);
    let mut out = [(0, 0, 0); 6];
    for i in 0..header.section_count as usize {
        let at = 64 + 16 * i;
        let e: SectionEntry = bytemuck::pod_read_unaligned(&bytes[at..at + 16]);
        out[e.kind as usize - 1] = (e.offset as usize, e.len as usize, e.count as usize);
    }
    out
}

pub fn section_bytes(bytes: &[u8], kind: SectionKind) -> &[u8] {
    let (at, len, _) = sections(bytes)[kind as usize - 1];
    &bytes[at..at + len]
}

/// Rebuilds a blob from a parsed model through the writer's own API, replaying names in the
/// order they sit in STRINGS: the result must be the same bytes.
pub fn reserialize(m: &Model) -> Vec<u8> {
    let bytes = m.bytes();
    let strings = section_bytes(bytes, SectionKind::Strings);
    let data = section_bytes(bytes, SectionKind::Data);
    let params = section_bytes(bytes, SectionKind::Params);
    let mut w = BlobWriter::new();
    w.meta = Some(*m.meta());
    w.arena_len = m.header().arena_len;
    w.arena_lower_bound = m.header().arena_lower_bound;
    w.arena_splits = m.header().arena_splits;
    if !data.is_empty() {
        let r = w.data(data);
        assert_eq!(r.offset, 0);
    }
    let text = |r: StrRef| {
        std::str::from_utf8(&strings[r.offset as usize..(r.offset + r.len) as usize]).unwrap()
    };
    // Names that are not op names (the model's and the tensors'), by offset.
    let mut names: Vec<StrRef> = std::iter::once(m.meta().name)
        .chain((0..m.tensor_count()).map(|t| m.tensor(t as u16).desc.name))
        .collect();
    names.sort_by_key(|r| (r.offset, r.len));
    let mut names = names.into_iter().peekable();
    let mut replay_names_before = |w: &mut BlobWriter, end: u32| {
        while let Some(r) = names.next_if(|r| r.offset < end || (r.offset == end && r.len == 0)) {
            assert_eq!(w.string(text(r)), r, "names are not stored in order");
        }
    };
    for i in 0..m.op_count() {
        let op = m.op(i).unwrap();
        let d = *op.desc;
        replay_names_before(&mut w, d.name.offset);
        let record = &params[d.params_offset as usize..(d.params_offset + d.params_len) as usize];
        let inputs: Vec<u16> = op.inputs().collect();
        let index = w
            .op_record(
                op.kind,
                &inputs,
                d.output,
                record,
                d.macs as u64,
                text(d.name),
            )
            .expect("a parsed blob's records are well formed");
        let written = &mut w.ops[index];
        written.scratch_offset = d.scratch_offset;
        written.scratch_len = d.scratch_len;
        written.flags = d.flags;
        assert_eq!(
            bytemuck::bytes_of(written),
            bytemuck::bytes_of(&d),
            "op {i} differs after replay"
        );
    }
    replay_names_before(&mut w, u32::MAX);
    for t in 0..m.tensor_count() {
        w.tensor(*m.tensor(t as u16).desc);
    }
    w.finish()
}

/// Runs a blob if it parses; nothing may panic.
pub fn parse_and_maybe_run(bytes: &[u8], image: &[f32]) -> Result<(), FormatError> {
    let aligned = AlignedBytes::new(bytes);
    let m = Model::parse(aligned.as_bytes())?;
    for i in 0..m.op_count() {
        m.decode(i).expect("a parsed blob decodes");
    }
    if m.arena_len() <= 1 << 22 {
        let mut arena = AlignedBytes::new(&vec![0u8; m.arena_len()]);
        let pixels = m.meta().input_channels as usize
            * m.meta().input_height as usize
            * m.meta().input_width as usize;
        let fallback;
        let image = if image.len() == pixels {
            image
        } else {
            fallback = vec![0.5f32; pixels];
            &fallback
        };
        let _ = runtime::run(
            &m,
            arena.as_bytes_mut(),
            Input::F32Nchw(image),
            &mut NoProfiler,
        );
    }
    Ok(())
}
