//! `.safetensors` checkpoints, read with the `safetensors` crate (the format's reference
//! implementation): it bounds the header, parses it, and checks that every tensor's byte range
//! matches its shape and dtype and that the ranges tile the data area exactly. When it refuses a
//! file, [`explain`] re-reads the (already size-checked) header to say which tensor and which
//! byte offsets are at fault, so every error still names the key and the offsets.
//!
//! Layout: `u64` little-endian header length `N`, `N` bytes of JSON
//! `{"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}`,
//! then the data area; offsets are relative to the start of the data area.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};
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
    match header_len(bytes) {
        Some(n) => n >= 2 && n <= MAX_HEADER_SIZE as u64 && bytes.get(8) == Some(&b'{'),
        None => false,
    }
}

fn header_len(bytes: &[u8]) -> Option<u64> {
    let prefix: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(prefix))
}

/// Our dtype for the crate's, `None` for the ones we do not convert (F8 variants, unsigned
/// above 8 bits, complex, sub-byte floats).
fn convert_dtype(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::F64 => DType::F64,
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I64 => DType::I64,
        Dtype::I32 => DType::I32,
        Dtype::I16 => DType::I16,
        Dtype::I8 => DType::I8,
        Dtype::U8 => DType::U8,
        Dtype::BOOL => DType::Bool,
        _ => return None,
    })
}

fn crate_dtype(dtype: DType) -> Dtype {
    match dtype {
        DType::F64 => Dtype::F64,
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::I64 => Dtype::I64,
        DType::I32 => Dtype::I32,
        DType::I16 => Dtype::I16,
        DType::I8 => Dtype::I8,
        DType::U8 => Dtype::U8,
        DType::Bool => Dtype::BOOL,
    }
}

/// Parses a safetensors file; `path` is recorded as the origin.
pub fn parse_safetensors(bytes: &[u8], path: &Path) -> Result<Checkpoint, SafetensorsError> {
    let n = header_len(bytes).ok_or(SafetensorsError::Truncated {
        needed: 8,
        available: bytes.len(),
    })?;
    if n > MAX_HEADER_SIZE as u64 {
        return Err(SafetensorsError::HeaderTooLarge(n));
    }
    let data_start = 8 + n as usize;
    if bytes.len() < data_start {
        return Err(SafetensorsError::Truncated {
            needed: data_start as u64,
            available: bytes.len(),
        });
    }
    let file = SafeTensors::deserialize(bytes).map_err(|e| explain(bytes, data_start, &e))?;
    let mut checkpoint = Checkpoint::empty(CheckpointOrigin {
        path: path.to_path_buf(),
        format: CheckpointFormat::Safetensors,
        entry: None,
        stripped_prefix: None,
    });
    let mut views = file.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, view) in views {
        let Some(dtype) = convert_dtype(view.dtype()) else {
            return Err(SafetensorsError::UnsupportedDtype {
                key,
                dtype: view.dtype().to_string(),
            });
        };
        let shape = view.shape().to_vec();
        if dtype.is_float() {
            let data = decode_float(dtype, view.data(), false);
            checkpoint.insert_float(key, Tensor { shape, data }, dtype);
        } else {
            let data = decode_int(dtype, view.data(), false);
            checkpoint.insert_int(key, IntTensor { shape, data }, dtype);
        }
    }
    Ok(checkpoint)
}

/// Why the crate refused `bytes` (whose header length and extent were already checked), with
/// the tensor name and offsets: the header is re-read leniently and its entries walked in
/// offset order the way the format requires. Falls back to the crate's own message.
fn explain(bytes: &[u8], data_start: usize, error: &SafeTensorError) -> SafetensorsError {
    let data_len = bytes.len() - data_start;
    let invalid = |reason: String| SafetensorsError::InvalidHeader {
        end: data_start,
        reason,
    };
    let header: Value = match serde_json::from_slice(&bytes[8..data_start]) {
        Ok(value) => value,
        Err(e) => return invalid(e.to_string()),
    };
    let Value::Object(map) = header else {
        return invalid("the header is not a JSON object".into());
    };
    let mut entries = Vec::new();
    for (key, value) in &map {
        if key == "__metadata__" {
            if !value
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string))
            {
                return invalid("__metadata__ must map strings to strings".into());
            }
            continue;
        }
        let entry_error = |reason: &str| SafetensorsError::InvalidEntry {
            key: key.clone(),
            reason: reason.into(),
        };
        let Some(object) = value.as_object() else {
            return entry_error("entry is not a JSON object");
        };
        let Some(dtype_name) = object.get("dtype").and_then(Value::as_str) else {
            return entry_error("missing string field 'dtype'");
        };
        let dtype = serde_json::from_value::<Dtype>(Value::String(dtype_name.into()))
            .ok()
            .and_then(convert_dtype);
        let Some(dtype) = dtype else {
            return SafetensorsError::UnsupportedDtype {
                key: key.clone(),
                dtype: dtype_name.to_string(),
            };
        };
        let shape: Option<Vec<u64>> = object
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|dims| dims.iter().map(Value::as_u64).collect());
        let Some(shape) = shape else {
            return entry_error("'shape' must be an array of non-negative integers");
        };
        let offsets: Option<Vec<u64>> = object
            .get("data_offsets")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 2)
            .and_then(|a| a.iter().map(Value::as_u64).collect());
        let Some([begin, end]) = offsets.as_deref().map(|o| [o[0], o[1]]) else {
            return entry_error("'data_offsets' must be [begin, end], non-negative integers");
        };
        if end < begin {
            return entry_error(&format!(
                "data_offsets [{begin}, {end}] end before they begin"
            ));
        }
        let expected = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.size() as u64));
        let Some(expected) = expected else {
            return SafetensorsError::ShapeOverflow {
                key: key.clone(),
                shape,
            };
        };
        if expected != end - begin {
            return SafetensorsError::LengthMismatch {
                key: key.clone(),
                shape: shape.iter().map(|&d| d as usize).collect(),
                dtype,
                expected: expected as usize,
                found: (end - begin) as usize,
                begin: begin as usize,
                end: end as usize,
            };
        }
        entries.push((begin, end, key));
    }
    entries.sort();
    let mut expected_begin = 0u64;
    for (begin, end, key) in &entries {
        let bad = |problem: String| SafetensorsError::BadOffsets {
            key: key.to_string(),
            begin: *begin as usize,
            end: *end as usize,
            problem,
            data_start,
            data_len,
        };
        if *begin != expected_begin {
            let what = if *begin < expected_begin {
                "overlap the previous tensor"
            } else {
                "leave a gap"
            };
            return bad(format!("{what} (expected begin {expected_begin})"));
        }
        if *end > data_len as u64 {
            return bad("run past the end of the file".into());
        }
        expected_begin = *end;
    }
    if expected_begin < data_len as u64 {
        return SafetensorsError::TrailingBytes {
            slack: data_len - expected_begin as usize,
            data_end: data_start + expected_begin as usize,
        };
    }
    invalid(error.to_string())
}

/// Serialises a checkpoint as safetensors (with the crate's writer): float tensors as `F32`,
/// integer tensors as `I64`, metadata `{"format": "pt"}` (what PyTorch-side loaders expect).
pub fn encode_safetensors(checkpoint: &Checkpoint) -> Vec<u8> {
    let mut buffers: Vec<(&str, DType, &[usize], Vec<u8>)> = Vec::new();
    for (key, tensor) in &checkpoint.tensors {
        let bytes = tensor.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        buffers.push((key, DType::F32, &tensor.shape, bytes));
    }
    for (key, tensor) in &checkpoint.int_tensors {
        let bytes = tensor.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        buffers.push((key, DType::I64, &tensor.shape, bytes));
    }
    let views = buffers.iter().map(|(key, dtype, shape, bytes)| {
        let view = TensorView::new(crate_dtype(*dtype), shape.to_vec(), bytes)
            .expect("the byte length is the element count times the dtype size");
        (*key, view)
    });
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::tensor::serialize(views, Some(metadata))
        .expect("tensors built from a checkpoint always serialize")
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
