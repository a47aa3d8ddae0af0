//! `.safetensors` reader (and a small writer), validating the header the way the reference
//! `safetensors` crate does: bounded header size, known dtypes, byte lengths that match
//! `numel × dtype size`, offsets that tile the data area exactly (no gaps, overlaps or slack).
//! Unlike that crate, errors also carry the byte offset involved.
//!
//! Layout: `u64` little-endian header length `N`, `N` bytes of JSON
//! `{"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}`,
//! then the data area; offsets are relative to the start of the data area.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::{
    Checkpoint, CheckpointFormat, CheckpointOrigin, DType, IntTensor, Tensor, decode_float,
    decode_int,
};

/// Same cap as the reference implementation: a header above this is corrupt or hostile.
const MAX_HEADER_SIZE: usize = 100_000_000;

/// What is wrong with a safetensors file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SafetensorsError {
    /// Shorter than the 8-byte length prefix, or shorter than the header it announces.
    #[error("truncated: the header needs {needed} bytes, the file has {available}")]
    Truncated {
        /// Bytes needed.
        needed: u64,
        /// Bytes present.
        available: usize,
    },
    /// The announced header length exceeds the cap.
    #[error("header length {0} at offset 0 exceeds the {MAX_HEADER_SIZE}-byte limit")]
    HeaderTooLarge(u64),
    /// The header is not a JSON object of the expected form.
    #[error("invalid header JSON (bytes 8..{end}): {reason}")]
    InvalidHeader {
        /// End offset of the header in the file.
        end: usize,
        /// What is wrong.
        reason: String,
    },
    /// An entry is not `{"dtype", "shape", "data_offsets"}`.
    #[error("tensor '{key}': {reason}")]
    InvalidEntry {
        /// Tensor name.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A dtype we do not convert (e.g. F8 variants, unsigned > 8 bit).
    #[error("tensor '{key}': unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// Tensor name.
        key: String,
        /// The dtype string from the header.
        dtype: String,
    },
    /// `end - begin` disagrees with shape × dtype size.
    #[error(
        "tensor '{key}': shape {shape:?} of {dtype} needs {expected} bytes, data_offsets [{begin}, {end}] give {found}"
    )]
    LengthMismatch {
        /// Tensor name.
        key: String,
        /// Declared shape.
        shape: Vec<usize>,
        /// Declared dtype.
        dtype: DType,
        /// Bytes needed.
        expected: usize,
        /// Bytes given.
        found: usize,
        /// Start offset (relative to the data area).
        begin: usize,
        /// End offset (relative to the data area).
        end: usize,
    },
    /// Offsets leave a gap, overlap another tensor, or run past the end of the file.
    #[error(
        "tensor '{key}': data_offsets [{begin}, {end}] {problem} (data area starts at file offset {data_start}, {data_len} bytes)"
    )]
    BadOffsets {
        /// Tensor name.
        key: String,
        /// Start offset (relative to the data area).
        begin: usize,
        /// End offset (relative to the data area).
        end: usize,
        /// What is wrong.
        problem: String,
        /// File offset of the data area.
        data_start: usize,
        /// Length of the data area.
        data_len: usize,
    },
    /// Bytes after the last tensor that no tensor owns.
    #[error(
        "{slack} trailing bytes after the last tensor (data area ends at file offset {data_end})"
    )]
    TrailingBytes {
        /// Unowned bytes.
        slack: usize,
        /// Where the last tensor ends.
        data_end: usize,
    },
    /// Shape product overflows.
    #[error("tensor '{key}': shape {shape:?} is too large")]
    ShapeOverflow {
        /// Tensor name.
        key: String,
        /// Declared shape.
        shape: Vec<u64>,
    },
}

/// Whether `bytes` plausibly starts a safetensors file (a sane length prefix followed by `{`).
pub fn looks_like_safetensors(bytes: &[u8]) -> bool {
    match bytes.get(..8) {
        Some(prefix) => {
            let mut b = [0u8; 8];
            b.copy_from_slice(prefix);
            let n = u64::from_le_bytes(b);
            n >= 2 && n <= MAX_HEADER_SIZE as u64 && bytes.get(8) == Some(&b'{')
        }
        None => false,
    }
}

fn parse_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "F64" => DType::F64,
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "I64" => DType::I64,
        "I32" => DType::I32,
        "I16" => DType::I16,
        "I8" => DType::I8,
        "U8" => DType::U8,
        "BOOL" => DType::Bool,
        _ => return None,
    })
}

fn dtype_tag(dtype: DType) -> &'static str {
    match dtype {
        DType::F64 => "F64",
        DType::F32 => "F32",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::I64 => "I64",
        DType::I32 => "I32",
        DType::I16 => "I16",
        DType::I8 => "I8",
        DType::U8 => "U8",
        DType::Bool => "BOOL",
    }
}

struct Entry {
    key: String,
    dtype: DType,
    shape: Vec<usize>,
    begin: usize,
    end: usize,
}

/// Parses a safetensors file; `path` is recorded as the origin.
pub fn parse_safetensors(bytes: &[u8], path: &Path) -> Result<Checkpoint, SafetensorsError> {
    let prefix = bytes.get(..8).ok_or(SafetensorsError::Truncated {
        needed: 8,
        available: bytes.len(),
    })?;
    let mut b = [0u8; 8];
    b.copy_from_slice(prefix);
    let header_len = u64::from_le_bytes(b);
    if header_len > MAX_HEADER_SIZE as u64 {
        return Err(SafetensorsError::HeaderTooLarge(header_len));
    }
    // Fits in usize: bounded by MAX_HEADER_SIZE.
    let data_start = 8 + header_len as usize;
    let header_bytes = bytes
        .get(8..data_start)
        .ok_or(SafetensorsError::Truncated {
            needed: data_start as u64,
            available: bytes.len(),
        })?;
    let invalid = |reason: String| SafetensorsError::InvalidHeader {
        end: data_start,
        reason,
    };
    let header: Value = serde_json::from_slice(header_bytes).map_err(|e| invalid(e.to_string()))?;
    let Value::Object(map) = header else {
        return Err(invalid("the header is not a JSON object".into()));
    };

    let mut entries = Vec::with_capacity(map.len());
    for (key, value) in map {
        if key == "__metadata__" {
            let is_string_map = value
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string));
            if !is_string_map {
                return Err(invalid("__metadata__ must map strings to strings".into()));
            }
            continue;
        }
        entries.push(parse_entry(key, &value)?);
    }

    let data = &bytes[data_start..];
    // Entries must tile the data area in offset order, as the reference implementation demands.
    entries.sort_by_key(|e| (e.begin, e.end));
    let mut expected_begin = 0usize;
    for entry in &entries {
        let bad = |problem: String| SafetensorsError::BadOffsets {
            key: entry.key.clone(),
            begin: entry.begin,
            end: entry.end,
            problem,
            data_start,
            data_len: data.len(),
        };
        if entry.begin != expected_begin {
            let what = if entry.begin < expected_begin {
                "overlap the previous tensor"
            } else {
                "leave a gap"
            };
            return Err(bad(format!("{what} (expected begin {expected_begin})")));
        }
        if entry.end > data.len() {
            return Err(bad("run past the end of the file".into()));
        }
        expected_begin = entry.end;
    }
    if expected_begin != data.len() {
        return Err(SafetensorsError::TrailingBytes {
            slack: data.len() - expected_begin,
            data_end: data_start + expected_begin,
        });
    }

    let mut checkpoint = Checkpoint::empty(CheckpointOrigin {
        path: path.to_path_buf(),
        format: CheckpointFormat::Safetensors,
        entry: None,
        stripped_prefix: None,
    });
    for entry in entries {
        let raw = &data[entry.begin..entry.end];
        if entry.dtype.is_float() {
            let values = decode_float(entry.dtype, raw, false);
            checkpoint.insert_float(
                entry.key,
                Tensor {
                    shape: entry.shape,
                    data: values,
                },
                entry.dtype,
            );
        } else {
            let values = decode_int(entry.dtype, raw, false);
            checkpoint.insert_int(
                entry.key,
                IntTensor {
                    shape: entry.shape,
                    data: values,
                },
                entry.dtype,
            );
        }
    }
    Ok(checkpoint)
}

fn parse_entry(key: String, value: &Value) -> Result<Entry, SafetensorsError> {
    let invalid = |reason: &str| SafetensorsError::InvalidEntry {
        key: key.clone(),
        reason: reason.into(),
    };
    let object = value
        .as_object()
        .ok_or_else(|| invalid("entry is not a JSON object"))?;
    if let Some(extra) = object
        .keys()
        .find(|k| !matches!(k.as_str(), "dtype" | "shape" | "data_offsets"))
    {
        return Err(invalid(&format!("unexpected field '{extra}'")));
    }
    let dtype_name = object
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("missing string field 'dtype'"))?;
    let dtype = parse_dtype(dtype_name).ok_or_else(|| SafetensorsError::UnsupportedDtype {
        key: key.clone(),
        dtype: dtype_name.to_string(),
    })?;
    let shape_u64: Vec<u64> = object
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("missing array field 'shape'"))?
        .iter()
        .map(Value::as_u64)
        .collect::<Option<_>>()
        .ok_or_else(|| invalid("'shape' must hold non-negative integers"))?;
    let overflow = || SafetensorsError::ShapeOverflow {
        key: key.clone(),
        shape: shape_u64.clone(),
    };
    let shape: Vec<usize> = shape_u64
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<_>>()
        .ok_or_else(overflow)?;
    let offsets = object
        .get("data_offsets")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 2)
        .ok_or_else(|| invalid("'data_offsets' must be [begin, end]"))?;
    let (begin, end) = match (offsets[0].as_u64(), offsets[1].as_u64()) {
        (Some(b), Some(e)) => (
            usize::try_from(b).map_err(|_| overflow())?,
            usize::try_from(e).map_err(|_| overflow())?,
        ),
        _ => return Err(invalid("'data_offsets' must hold non-negative integers")),
    };
    if end < begin {
        return Err(invalid(&format!(
            "data_offsets [{begin}, {end}] end before they begin"
        )));
    }
    let expected = crate::npy::checked_product(&shape)
        .and_then(|n| n.checked_mul(dtype.size()))
        .ok_or_else(overflow)?;
    if expected != end - begin {
        return Err(SafetensorsError::LengthMismatch {
            key,
            shape,
            dtype,
            expected,
            found: end - begin,
            begin,
            end,
        });
    }
    Ok(Entry {
        key,
        dtype,
        shape,
        begin,
        end,
    })
}

/// Serialises a checkpoint as safetensors: float tensors as `F32`, integer tensors as `I64`,
/// metadata `{"format": "pt"}` (what PyTorch-side loaders expect), tensors in key order.
pub fn encode_safetensors(checkpoint: &Checkpoint) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut meta = serde_json::Map::new();
    meta.insert("format".into(), Value::String("pt".into()));
    header.insert("__metadata__".into(), Value::Object(meta));
    let mut data: Vec<u8> = Vec::new();
    let mut all: BTreeMap<&str, (DType, &[usize], Vec<u8>)> = BTreeMap::new();
    for (key, tensor) in &checkpoint.tensors {
        let bytes = tensor.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        all.insert(key, (DType::F32, &tensor.shape, bytes));
    }
    for (key, tensor) in &checkpoint.int_tensors {
        let bytes = tensor.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        all.insert(key, (DType::I64, &tensor.shape, bytes));
    }
    for (key, (dtype, shape, bytes)) in all {
        let begin = data.len();
        data.extend_from_slice(&bytes);
        header.insert(
            key.to_string(),
            serde_json::json!({ "dtype": dtype_tag(dtype), "shape": shape, "data_offsets": [begin, data.len()] }),
        );
    }
    let mut header_text = Value::Object(header).to_string();
    // Align the data area to 8 bytes, as the reference writer does (spaces are valid JSON padding).
    while (8 + header_text.len()) % 8 != 0 {
        header_text.push(' ');
    }
    let mut out = Vec::with_capacity(8 + header_text.len() + data.len());
    out.extend_from_slice(&(header_text.len() as u64).to_le_bytes());
    out.extend_from_slice(header_text.as_bytes());
    out.extend_from_slice(&data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn parse(bytes: &[u8]) -> Result<Checkpoint, SafetensorsError> {
        parse_safetensors(bytes, Path::new("t.safetensors"))
    }

    #[test]
    fn round_trip_through_encoder() {
        let mut ckpt = Checkpoint::empty(CheckpointOrigin {
            path: "t.safetensors".into(),
            format: CheckpointFormat::Safetensors,
            entry: None,
            stripped_prefix: None,
        });
        ckpt.insert_float(
            "a.weight".into(),
            Tensor::new(vec![2, 2], vec![1.0, -2.0, 3.5, 0.25]).unwrap(),
            DType::F32,
        );
        ckpt.insert_int(
            "bn.num_batches_tracked".into(),
            IntTensor {
                shape: vec![],
                data: vec![7],
            },
            DType::I64,
        );
        let bytes = encode_safetensors(&ckpt);
        assert!(looks_like_safetensors(&bytes));
        assert_eq!(parse(&bytes).unwrap(), ckpt);
    }

    #[test]
    fn converts_half_precision() {
        let bytes = file(
            r#"{"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#,
            &[0x00, 0x3C, 0x00, 0xC0],
        );
        let ckpt = parse(&bytes).unwrap();
        assert_eq!(ckpt.tensors["h"].data, vec![1.0, -2.0]);
        assert_eq!(ckpt.dtypes["h"], DType::F16);
    }

    #[test]
    fn rejects_each_malformation_with_the_tensor_name() {
        let two = [0u8; 8];
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                    &two,
                ),
                "needs 12 bytes",
            ),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                    &two[..4],
                ),
                "run past the end",
            ),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}"#,
                    &two,
                ),
                "'b': data_offsets [2, 6] overlap",
            ),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                    &two,
                ),
                "leave a gap",
            ),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                    &two,
                ),
                "4 trailing bytes",
            ),
            (
                file(
                    r#"{"a":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}"#,
                    &two[..1],
                ),
                "unsupported dtype F8_E4M3",
            ),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
                    &two[..4],
                ),
                "non-negative",
            ),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#,
                    &two[..4],
                ),
                "end before",
            ),
            (
                file(r#"{"a":{"dtype":"F32","shape":[1]}}"#, &two[..4]),
                "'data_offsets'",
            ),
            (file(r#"{"a":[1,2]}"#, &[]), "not a JSON object"),
            (file(r#"[1,2]"#, &[]), "not a JSON object"),
            (file(r#"{"a": "#, &[]), "invalid header JSON"),
            (file(r#"{"__metadata__":{"x":1}}"#, &[]), "__metadata__"),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}}"#,
                    &[],
                ),
                "too large",
            ),
        ];
        for (bytes, expected) in cases {
            let err = parse(&bytes).expect_err(expected);
            assert!(
                err.to_string().contains(expected),
                "expected '{expected}' in '{err}'"
            );
        }
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.push(b'{');
        assert!(matches!(
            parse(&huge),
            Err(SafetensorsError::HeaderTooLarge(_))
        ));
        assert!(matches!(
            parse(&[1, 0]),
            Err(SafetensorsError::Truncated { needed: 8, .. })
        ));
    }
}
