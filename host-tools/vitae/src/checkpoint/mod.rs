//! Loading official ViTAE checkpoints into a name -> f32 tensor map.
//!
//! Two containers are read, chosen by content (not by file extension, which users get wrong):
//! * `torch.save(...)` zip archives (`.pth`/`.pt`/`.bin`) through a minimal, non-executing
//!   unpickler ([`pth`]);
//! * `.safetensors` ([`safetensors`]).
//!
//! Floating-point tensors (f64/f32/f16/bf16) become f32 — the precision the reference engine and
//! the quantizer work in. Integer tensors (BatchNorm's int64 `num_batches_tracked` scalars) are
//! kept separately: they are part of the official `state_dict` and validation checks they are
//! there, but they are not weights.
//!
//! Nothing here panics on malformed input: every problem is a [`CheckpointError`] naming the file
//! and the tensor key or byte offset.

pub mod pth;
pub mod safetensors;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::io::{InputKind, ReadFileError, read_file};

pub use pth::PthError;
pub use safetensors::SafetensorsError;

/// A dense f32 tensor in C order (PyTorch's default contiguous layout).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first; empty for a scalar.
    pub shape: Vec<usize>,
    /// Elements in C order; `len == shape.iter().product()`.
    pub data: Vec<f32>,
}

impl Tensor {
    /// Creates a tensor, or `None` if `data.len()` does not match `shape`.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Option<Self> {
        let count = crate::npy::checked_product(&shape)?;
        (count == data.len()).then_some(Tensor { shape, data })
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }
}

/// An integer (or bool) tensor, widened to i64.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntTensor {
    /// Dimensions, outermost first; empty for a scalar.
    pub shape: Vec<usize>,
    /// Elements in C order.
    pub data: Vec<i64>,
}

/// Element type of a tensor as stored in the checkpoint file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 64-bit float.
    F64,
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 64-bit signed integer.
    I64,
    /// 32-bit signed integer.
    I32,
    /// 16-bit signed integer.
    I16,
    /// 8-bit signed integer.
    I8,
    /// 8-bit unsigned integer.
    U8,
    /// Boolean stored as one byte.
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// Whether the values are floating point (and so become weights).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }

    /// PyTorch's name for the type (`float32`, `int64`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F64 => "float64",
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::I16 => "int16",
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::Bool => "bool",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which container a checkpoint came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// A `torch.save` zip archive.
    TorchZip,
    /// A `.safetensors` file.
    Safetensors,
}

/// Where the tensors came from, for messages such as "used entry 'state_dict_ema'".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointOrigin {
    /// The file read (empty for in-memory parses).
    pub path: PathBuf,
    /// Its container format.
    pub format: CheckpointFormat,
    /// For training checkpoints: the top-level key that held the state_dict
    /// (`state_dict`, `model` or `state_dict_ema`); `None` when the file is a bare state_dict.
    pub entry: Option<String>,
    /// Set when every key had a `module.` prefix (DataParallel / DDP) that was removed.
    pub stripped_prefix: Option<String>,
}

impl fmt::Display for CheckpointOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = match self.format {
            CheckpointFormat::TorchZip => "torch zip",
            CheckpointFormat::Safetensors => "safetensors",
        };
        write!(f, "{} ({format}", self.path.display())?;
        if let Some(entry) = &self.entry {
            write!(f, ", entry '{entry}'")?;
        }
        if let Some(prefix) = &self.stripped_prefix {
            write!(f, ", stripped prefix '{prefix}'")?;
        }
        f.write_str(")")
    }
}

/// A loaded state_dict.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Every floating-point tensor, converted to f32, by state_dict key.
    pub tensors: BTreeMap<String, Tensor>,
    /// Every integer or bool tensor (e.g. `...num_batches_tracked`), by key. Not weights.
    pub int_tensors: BTreeMap<String, IntTensor>,
    /// The stored dtype of every key in `tensors` and `int_tensors`.
    pub dtypes: BTreeMap<String, DType>,
    /// Where it came from.
    pub origin: CheckpointOrigin,
}

impl Checkpoint {
    /// An empty checkpoint, e.g. to build one in a test.
    pub fn empty(origin: CheckpointOrigin) -> Self {
        Checkpoint {
            tensors: BTreeMap::new(),
            int_tensors: BTreeMap::new(),
            dtypes: BTreeMap::new(),
            origin,
        }
    }

    /// The shape of any entry (float or integer).
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.tensors
            .get(key)
            .map(|t| t.shape.as_slice())
            .or_else(|| self.int_tensors.get(key).map(|t| t.shape.as_slice()))
    }

    /// All keys, float and integer, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.dtypes.keys().map(String::as_str)
    }

    /// Inserts a float tensor (recorded as stored in `dtype`).
    pub fn insert_float(&mut self, key: String, tensor: Tensor, dtype: DType) {
        self.int_tensors.remove(&key);
        self.dtypes.insert(key.clone(), dtype);
        self.tensors.insert(key, tensor);
    }

    /// Inserts an integer tensor (recorded as stored in `dtype`).
    pub fn insert_int(&mut self, key: String, tensor: IntTensor, dtype: DType) {
        self.tensors.remove(&key);
        self.dtypes.insert(key.clone(), dtype);
        self.int_tensors.insert(key, tensor);
    }

    /// Removes an entry of either kind; returns whether it existed.
    pub fn remove(&mut self, key: &str) -> bool {
        let existed = self.dtypes.remove(key).is_some();
        self.tensors.remove(key);
        self.int_tensors.remove(key);
        existed
    }

    /// Removes a leading `module.` from every key if all keys carry it (checkpoints saved from
    /// `nn.DataParallel`/DDP-wrapped models). Partial prefixes are left alone: they indicate a
    /// different model, which validation will report.
    pub(crate) fn strip_module_prefix(&mut self) {
        const PREFIX: &str = "module.";
        if self.dtypes.is_empty() || !self.dtypes.keys().all(|k| k.starts_with(PREFIX)) {
            return;
        }
        fn strip<V>(map: BTreeMap<String, V>) -> BTreeMap<String, V> {
            map.into_iter()
                .map(|(k, v)| (k[PREFIX.len()..].to_string(), v))
                .collect()
        }
        self.tensors = strip(std::mem::take(&mut self.tensors));
        self.int_tensors = strip(std::mem::take(&mut self.int_tensors));
        self.dtypes = strip(std::mem::take(&mut self.dtypes));
        self.origin.stripped_prefix = Some(PREFIX.to_string());
    }
}

/// Why a checkpoint could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read.
    #[error(transparent)]
    Read(#[from] ReadFileError),
    /// A torch zip archive that is malformed or holds something other than a state_dict.
    #[error("{}: {kind}", path.display())]
    Pth {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        kind: PthError,
    },
    /// A malformed safetensors file.
    #[error("{}: {kind}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        kind: SafetensorsError,
    },
    /// Neither a zip archive nor a safetensors file.
    #[error("{}: {reason}", path.display())]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// What it looks like instead.
        reason: String,
    },
}

/// Loads a checkpoint from a `torch.save` zip archive or a `.safetensors` file (detected from
/// the content), converting float tensors to f32 and stripping a DataParallel `module.` prefix.
pub fn load_checkpoint(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let bytes = read_file(path, InputKind::Checkpoint)?;
    parse_checkpoint(&bytes, path)
}

/// Like [`load_checkpoint`] on bytes already in memory; `path` is only used in messages.
pub fn parse_checkpoint(bytes: &[u8], path: &Path) -> Result<Checkpoint, CheckpointError> {
    let mut checkpoint = if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        pth::parse_pth(bytes, path).map_err(|kind| CheckpointError::Pth {
            path: path.to_path_buf(),
            kind,
        })?
    } else if safetensors::looks_like_safetensors(bytes) {
        safetensors::parse_safetensors(bytes, path).map_err(|kind| {
            CheckpointError::Safetensors {
                path: path.to_path_buf(),
                kind,
            }
        })?
    } else if bytes.first() == Some(&0x80) {
        return Err(CheckpointError::UnknownFormat {
            path: path.to_path_buf(),
            reason:
                "legacy (pre-1.6, non-zip) torch.save format is not supported; re-save it with \
                     torch.save(state_dict, path) from torch >= 1.6"
                    .into(),
        });
    } else {
        return Err(CheckpointError::UnknownFormat {
            path: path.to_path_buf(),
            reason:
                "not a checkpoint: expected a torch.save zip archive (.pth) or a .safetensors file"
                    .into(),
        });
    };
    checkpoint.strip_module_prefix();
    Ok(checkpoint)
}

/// Converts little-endian element bytes of a float dtype to f32.
pub(crate) fn decode_float(dtype: DType, bytes: &[u8], big_endian: bool) -> Vec<f32> {
    fn arr<const N: usize>(c: &[u8], big: bool) -> [u8; N] {
        let mut b = [0u8; N];
        b.copy_from_slice(c);
        if big {
            b.reverse();
        }
        b
    }
    match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(arr(c, big_endian)))
            .collect(),
        DType::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(arr(c, big_endian)) as f32)
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_bits(u16::from_le_bytes(arr(c, big_endian))).to_f32())
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_bits(u16::from_le_bytes(arr(c, big_endian))).to_f32())
            .collect(),
        _ => Vec::new(),
    }
}

/// Converts little-endian element bytes of an integer/bool dtype to i64.
pub(crate) fn decode_int(dtype: DType, bytes: &[u8], big_endian: bool) -> Vec<i64> {
    fn arr<const N: usize>(c: &[u8], big: bool) -> [u8; N] {
        let mut b = [0u8; N];
        b.copy_from_slice(c);
        if big {
            b.reverse();
        }
        b
    }
    match dtype {
        DType::I64 => bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(arr(c, big_endian)))
            .collect(),
        DType::I32 => bytes
            .chunks_exact(4)
            .map(|c| i64::from(i32::from_le_bytes(arr(c, big_endian))))
            .collect(),
        DType::I16 => bytes
            .chunks_exact(2)
            .map(|c| i64::from(i16::from_le_bytes(arr(c, big_endian))))
            .collect(),
        DType::I8 => bytes.iter().map(|&b| i64::from(b as i8)).collect(),
        DType::U8 | DType::Bool => bytes.iter().map(|&b| i64::from(b)).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> CheckpointOrigin {
        CheckpointOrigin {
            path: PathBuf::from("x"),
            format: CheckpointFormat::Safetensors,
            entry: None,
            stripped_prefix: None,
        }
    }

    #[test]
    fn module_prefix_is_stripped_only_when_every_key_has_it() {
        let mut ckpt = Checkpoint::empty(origin());
        ckpt.insert_float(
            "module.a".into(),
            Tensor::new(vec![1], vec![1.0]).unwrap(),
            DType::F32,
        );
        ckpt.insert_int(
            "module.b".into(),
            IntTensor {
                shape: vec![],
                data: vec![3],
            },
            DType::I64,
        );
        let mut partial = ckpt.clone();
        partial.insert_float(
            "c".into(),
            Tensor::new(vec![], vec![0.0]).unwrap(),
            DType::F32,
        );
        ckpt.strip_module_prefix();
        assert_eq!(ckpt.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(ckpt.origin.stripped_prefix.as_deref(), Some("module."));
        partial.strip_module_prefix();
        assert_eq!(
            partial.keys().collect::<Vec<_>>(),
            ["c", "module.a", "module.b"]
        );
        assert_eq!(partial.origin.stripped_prefix, None);
    }

    #[test]
    fn half_and_bfloat_convert_exactly() {
        // 1.5 in f16 is 0x3E00, -2.0 in bf16 is 0xC000.
        assert_eq!(decode_float(DType::F16, &[0x00, 0x3E], false), vec![1.5]);
        assert_eq!(decode_float(DType::BF16, &[0x00, 0xC0], false), vec![-2.0]);
        assert_eq!(
            decode_float(DType::F32, &1.25f32.to_be_bytes(), true),
            vec![1.25]
        );
        assert_eq!(decode_int(DType::I8, &[0xFF], false), vec![-1]);
    }

    #[test]
    fn unknown_content_is_a_typed_error() {
        let err = parse_checkpoint(b"hello world", Path::new("weights.bin")).unwrap_err();
        assert!(matches!(err, CheckpointError::UnknownFormat { .. }));
        assert!(
            err.to_string().starts_with("weights.bin: not a checkpoint"),
            "{err}"
        );
        let legacy = parse_checkpoint(b"\x80\x02\x8a\x0alz", Path::new("old.pth")).unwrap_err();
        assert!(legacy.to_string().contains("legacy"), "{legacy}");
    }
}
