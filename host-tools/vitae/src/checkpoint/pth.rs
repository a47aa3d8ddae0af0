//! `torch.save` zip archives (the default format since PyTorch 1.6).
//!
//! Layout: `<name>/data.pkl` is a pickle of the saved object; every tensor's storage is a
//! separate entry `<name>/data/<key>` holding raw little-endian elements (`<name>/byteorder`
//! says otherwise if present). Torch writes entries uncompressed ("stored"); deflated entries
//! from repacked archives are read too.
//!
//! The pickle is decoded by `Unpickler`, a small stack machine that **never executes
//! anything**: a `GLOBAL` only records a module/name pair, and `REDUCE` is interpreted for the
//! handful of callables torch uses to rebuild a state_dict (`collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`, `torch._tensor._rebuild_from_type_v2`).
//! Any other object (argparse namespaces, optimizer states, numpy scalars in a training
//! checkpoint) becomes an inert placeholder, so a full training checkpoint still loads as long
//! as its state_dict is plain tensors.

use std::collections::{HashMap, HashSet};
use std::io::{Cursor, Read};
use std::path::Path;

use super::{
    Checkpoint, CheckpointFormat, CheckpointOrigin, DType, IntTensor, Tensor, decode_float,
    decode_int,
};

/// Top-level keys of a training checkpoint that may hold the model weights, in the order they
/// are tried. `model` before `state_dict_ema`: the EMA copy is only used when it is all there is.
pub const STATE_DICT_ENTRIES: [&str; 3] = ["state_dict", "model", "state_dict_ema"];

/// A pickle larger than this is not a state_dict index (ViTAE-S's is ~60 kB).
pub const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// Deflate cannot expand data more than about 1032:1; an entry that claims more is lying.
const MAX_DEFLATE_RATIO: u64 = 1032;
/// All entries of an archive together inflate to at most this many times the archive's own size
/// (plus [`INFLATE_SLACK`]): torch stores its entries uncompressed, and float weights barely
/// compress, so a real checkpoint is far below this; a zip bomb is far above.
pub const MAX_INFLATE_FACTOR: u64 = 8;
/// See [`MAX_INFLATE_FACTOR`].
const INFLATE_SLACK: u64 = 1 << 20;
/// The tensors of a state_dict may materialize, as loaded (f32 or i64), at most this many times
/// the bytes of the distinct storages the file holds (plus [`MATERIALIZE_SLACK`]): f16 weights
/// double, tied weights view one storage twice, small expanded (stride-0) views fit in the
/// slack; 300 keys viewing one storage do not.
pub const MAX_MATERIALIZE_FACTOR: u64 = 4;
/// See [`MAX_MATERIALIZE_FACTOR`].
const MATERIALIZE_SLACK: u64 = 1 << 20;
/// Most opcodes one pickle may execute.
pub const MAX_PICKLE_OPS: u64 = 16 << 20;
/// Most bytes the unpickler's values may take (objects, container slots, strings, the stack and
/// the memo together): 64 times the pickle plus 16 MiB, at most 256 MiB. A real state_dict
/// pickle needs a few times its own size.
const MAX_UNPICKLE_BYTES: u64 = 256 << 20;
/// Deepest nesting of MARKs (a real pickle nests a handful) and of tensor rebuild calls
/// (`_rebuild_from_type_v2` wrapping `_rebuild_tensor_v2`: one level in real files).
pub const MAX_PICKLE_DEPTH: usize = 64;
/// Highest tensor rank accepted (PyTorch's own limit is 64 dimensions).
const MAX_RANK: usize = 64;
/// Most values on the unpickler's stack at once (torch pushes at most 1000 dict items between
/// a MARK and its SETITEMS).
const MAX_STACK: usize = 1 << 20;
/// Most memo entries.
const MAX_MEMO: usize = 1 << 20;

/// What is wrong with a torch zip archive.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PthError {
    /// The zip container itself is unreadable.
    #[error("not a readable zip archive: {0}")]
    Zip(String),
    /// No `<name>/data.pkl` entry.
    #[error("no '<name>/data.pkl' entry: not a torch.save archive (entries: {0})")]
    NoPickle(String),
    /// A `torch.jit.save` archive.
    #[error(
        "this is a TorchScript archive (torch.jit.save); save model.state_dict() with torch.save instead"
    )]
    TorchScript,
    /// An entry could not be read (corrupt, CRC mismatch, truncated).
    #[error("archive entry '{entry}': {reason}")]
    Entry {
        /// Entry name.
        entry: String,
        /// What went wrong.
        reason: String,
    },
    /// The pickle stream is malformed.
    #[error("data.pkl at byte {offset}: {reason}")]
    Pickle {
        /// Offset of the failing opcode in data.pkl.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// The saved object is not a dict.
    #[error(
        "the saved object is {0}, expected a state_dict (save model.state_dict(), not the model)"
    )]
    NotADict(String),
    /// A training checkpoint entry that should hold the state_dict holds something else.
    #[error("entry '{entry}' is {found}, expected a state_dict")]
    EntryNotADict {
        /// The top-level key.
        entry: String,
        /// What it holds.
        found: String,
    },
    /// A dict without tensors and without a known state_dict entry.
    #[error(
        "no state_dict found: top-level keys are [{keys}]; expected tensors or one of 'state_dict', 'model', 'state_dict_ema'"
    )]
    NoStateDict {
        /// The keys present.
        keys: String,
    },
    /// A state_dict value that is not a tensor.
    #[error("key '{key}': {found} is not a tensor")]
    NotATensor {
        /// The state_dict key.
        key: String,
        /// What it holds.
        found: String,
    },
    /// A state_dict key that is not a string.
    #[error("state_dict key {0} is not a string")]
    NonStringKey(String),
    /// A storage class we do not convert.
    #[error("key '{key}': unsupported storage type {storage_type}")]
    UnsupportedStorage {
        /// The state_dict key.
        key: String,
        /// e.g. `torch.ComplexFloatStorage`.
        storage_type: String,
    },
    /// The rebuild arguments of a tensor are inconsistent.
    #[error("key '{key}': {reason}")]
    BadTensor {
        /// The state_dict key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// Parses a `torch.save` zip archive held in memory.
///
/// Every resource is bounded by what the file really holds: entries are read only up to the
/// size the archive declares for them (checked first against what the reader expects, and for
/// deflated entries against deflate's ratio and [`MAX_INFLATE_FACTOR`] × the archive's size);
/// the unpickler has an explicit stack, a depth limit and caps on opcodes, memo entries and the
/// bytes its values take; and the tensors may not materialize more than
/// [`MAX_MATERIALIZE_FACTOR`] × the distinct storage bytes read (shared storages counted once).
pub fn parse_pth(bytes: &[u8], path: &Path) -> Result<Checkpoint, PthError> {
    check_directory_claim(bytes)?;
    let mut archive =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| PthError::Zip(e.to_string()))?;
    let mut reader = EntryReader {
        archive_len: bytes.len() as u64,
        inflate_budget: (bytes.len() as u64)
            .saturating_mul(MAX_INFLATE_FACTOR)
            .saturating_add(INFLATE_SLACK),
    };
    let names: Vec<String> = archive.file_names().map(str::to_string).collect();
    let name_set: HashSet<&str> = names.iter().map(String::as_str).collect();
    let pickle_name = names
        .iter()
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .cloned()
        .ok_or_else(|| {
            let mut listed: Vec<&str> = names.iter().take(8).map(String::as_str).collect();
            if names.len() > 8 {
                listed.push("...");
            }
            PthError::NoPickle(listed.join(", "))
        })?;
    let prefix = pickle_name.trim_end_matches("data.pkl").to_string();
    let code_prefix = format!("{prefix}code/");
    if names.iter().any(|n| n.starts_with(&code_prefix)) {
        return Err(PthError::TorchScript);
    }
    let byteorder = format!("{prefix}byteorder");
    let big_endian = match name_set.contains(byteorder.as_str()) {
        true => reader.read(&mut archive, &byteorder, 16)? == b"big",
        false => false,
    };
    let pickle = reader.read(&mut archive, &pickle_name, MAX_PICKLE_BYTES)?;
    let mut unpickler = Unpickler::new(&pickle);
    let root = unpickler.run()?;
    let (entry, state_dict) = unpickler.select_state_dict(root)?;
    drop(unpickler);

    let mut checkpoint = Checkpoint::empty(CheckpointOrigin {
        path: path.to_path_buf(),
        format: CheckpointFormat::TorchZip,
        entry,
        stripped_prefix: None,
    });
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    // Distinct storage bytes read, and bytes the tensors materialize (in their stored dtype).
    let (mut held, mut materialized) = (0u64, 0u64);
    for (key, tensor) in state_dict {
        let dtype = storage_dtype(&tensor.storage.type_name).ok_or_else(|| {
            PthError::UnsupportedStorage {
                key: key.clone(),
                storage_type: tensor.storage.type_name.clone(),
            }
        })?;
        if !storages.contains_key(&tensor.storage.key) {
            let entry = format!("{prefix}data/{}", tensor.storage.key);
            let expected = tensor
                .storage
                .numel
                .checked_mul(dtype.size() as u64)
                .ok_or_else(|| PthError::BadTensor {
                    key: key.clone(),
                    reason: "storage size overflows".into(),
                })?;
            if !name_set.contains(entry.as_str()) {
                return Err(PthError::Entry {
                    entry,
                    reason: format!("missing (storage of key '{key}')"),
                });
            }
            let bytes = reader.read(&mut archive, &entry, expected)?;
            if bytes.len() as u64 != expected {
                return Err(PthError::Entry {
                    entry,
                    reason: format!(
                        "storage of key '{key}' should hold {} {} elements ({expected} bytes), found {} bytes",
                        tensor.storage.numel,
                        dtype,
                        bytes.len()
                    ),
                });
            }
            held += expected;
            storages.insert(tensor.storage.key.clone(), bytes);
        }
        let storage_bytes = &storages[&tensor.storage.key];
        let numel =
            crate::npy::checked_product(&tensor.size).ok_or_else(|| PthError::BadTensor {
                key: key.clone(),
                reason: format!("size {:?} overflows", tensor.size),
            })?;
        let budget = held
            .saturating_mul(MAX_MATERIALIZE_FACTOR)
            .saturating_add(MATERIALIZE_SLACK);
        // Counted as loaded: f32 for floats, i64 for integers.
        let loaded_size = if dtype.is_float() { 4 } else { 8 };
        materialized = materialized.saturating_add((numel as u64).saturating_mul(loaded_size));
        if materialized > budget {
            return Err(PthError::BadTensor {
                key,
                reason: format!(
                    "the tensors so far describe {materialized} bytes once loaded, more than {MAX_MATERIALIZE_FACTOR} times \
                     the {held} bytes of distinct storages the file holds (views repeating the same data)"
                ),
            });
        }
        let elements = gather(&key, &tensor, dtype, storage_bytes)?;
        if dtype.is_float() {
            let data = decode_float(dtype, &elements, big_endian);
            checkpoint.insert_float(
                key,
                Tensor {
                    shape: tensor.size,
                    data,
                },
                dtype,
            );
        } else {
            let data = decode_int(dtype, &elements, big_endian);
            checkpoint.insert_int(
                key,
                IntTensor {
                    shape: tensor.size,
                    data,
                },
                dtype,
            );
        }
    }
    Ok(checkpoint)
}

/// Refuses an end-of-central-directory record (or its zip64 form) claiming more entries than
/// the archive could hold (each takes at least 46 bytes): the zip reader reserves room for the
/// claimed count before it reads a single entry.
fn check_directory_claim(bytes: &[u8]) -> Result<(), PthError> {
    const EOCD: &[u8] = b"PK\x05\x06";
    const ZIP64_LOCATOR: &[u8] = b"PK\x06\x07";
    const ZIP64_EOCD: &[u8] = b"PK\x06\x06";
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    let tail_start = bytes.len().saturating_sub(22 + 65535);
    let Some(eocd) = bytes[tail_start..]
        .windows(4)
        .rposition(|w| w == EOCD)
        .map(|i| tail_start + i)
    else {
        return Ok(()); // the zip reader reports a missing directory itself
    };
    let mut claimed = bytes
        .get(eocd + 10..eocd + 12)
        .map_or(0, |b| u64::from(u16::from_le_bytes([b[0], b[1]])));
    if let Some(locator) = eocd.checked_sub(20)
        && bytes.get(locator..locator + 4) == Some(ZIP64_LOCATOR)
        && let Some(record) = u64_at(locator + 8).and_then(|r| usize::try_from(r).ok())
        && bytes.get(record..record.saturating_add(4)) == Some(ZIP64_EOCD)
        && let Some(entries) = u64_at(record + 32)
    {
        claimed = claimed.max(entries);
    }
    if claimed.saturating_mul(46) > bytes.len() as u64 {
        return Err(PthError::Zip(format!(
            "the central directory claims {claimed} entries, more than a {}-byte archive can hold",
            bytes.len()
        )));
    }
    Ok(())
}

/// Reads archive entries within the archive's real sizes.
struct EntryReader {
    /// Bytes of the whole archive.
    archive_len: u64,
    /// Bytes that deflated entries may still inflate to.
    inflate_budget: u64,
}

impl EntryReader {
    /// Reads entry `name`. Its declared uncompressed size must be at most `limit`; its
    /// compressed bytes must fit in the archive; a stored entry may not declare more than those
    /// bytes, a deflated one not more than deflate can produce from them nor more than the
    /// archive's inflate budget; and at most the declared size is read (one byte more is asked
    /// for, to catch an entry longer than it says).
    fn read(
        &mut self,
        archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
        name: &str,
        limit: u64,
    ) -> Result<Vec<u8>, PthError> {
        let entry_error = |reason: String| PthError::Entry {
            entry: name.to_string(),
            reason,
        };
        let file = archive
            .by_name(name)
            .map_err(|e| entry_error(e.to_string()))?;
        let size = file.size();
        if size > limit {
            return Err(entry_error(format!(
                "declares {size} bytes, more than the expected {limit} bytes"
            )));
        }
        let compressed = file.compressed_size();
        if compressed > self.archive_len {
            return Err(entry_error(format!(
                "declares {compressed} compressed bytes, more than the {} bytes the archive holds",
                self.archive_len
            )));
        }
        if file.compression() == zip::CompressionMethod::Stored {
            if size > compressed {
                return Err(entry_error(format!(
                    "is stored (uncompressed) but declares {size} bytes in {compressed} stored bytes"
                )));
            }
        } else {
            let most = compressed.saturating_mul(MAX_DEFLATE_RATIO);
            if size > most {
                return Err(entry_error(format!(
                    "declares {size} bytes from {compressed} compressed bytes, more than deflate can produce"
                )));
            }
            if size > self.inflate_budget {
                return Err(entry_error(format!(
                    "declares {size} bytes: the archive's entries would inflate to more than {MAX_INFLATE_FACTOR} \
                     times its own size"
                )));
            }
            self.inflate_budget -= size;
        }
        let mut out = Vec::new();
        out.try_reserve_exact(usize::try_from(size).unwrap_or(usize::MAX))
            .map_err(|_| entry_error(format!("cannot allocate {size} bytes")))?;
        file.take(size.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| entry_error(e.to_string()))?;
        if out.len() as u64 > size {
            return Err(entry_error(format!(
                "holds more than the {size} bytes it declares"
            )));
        }
        Ok(out)
    }
}

fn storage_dtype(type_name: &str) -> Option<DType> {
    Some(match type_name {
        "torch.DoubleStorage" => DType::F64,
        "torch.FloatStorage" => DType::F32,
        "torch.HalfStorage" => DType::F16,
        "torch.BFloat16Storage" => DType::BF16,
        "torch.LongStorage" => DType::I64,
        "torch.IntStorage" => DType::I32,
        "torch.ShortStorage" => DType::I16,
        "torch.CharStorage" => DType::I8,
        "torch.ByteStorage" => DType::U8,
        "torch.BoolStorage" => DType::Bool,
        _ => return None,
    })
}

/// Copies the tensor's elements out of its storage in C order, honouring the storage offset
/// and arbitrary (e.g. transposed or expanded) strides. Returns raw element bytes.
fn gather(
    key: &str,
    tensor: &TensorRef,
    dtype: DType,
    storage: &[u8],
) -> Result<Vec<u8>, PthError> {
    let bad = |reason: String| PthError::BadTensor {
        key: key.to_string(),
        reason,
    };
    let elem = dtype.size();
    let storage_numel = storage.len() / elem;
    let numel = crate::npy::checked_product(&tensor.size)
        .ok_or_else(|| bad(format!("size {:?} overflows", tensor.size)))?;
    if numel == 0 {
        return Ok(Vec::new());
    }
    // Stride-0 (expanded) views can describe far more elements than the file holds; refuse
    // to materialise a view more than 64x its storage (no real state_dict comes close).
    if numel > storage_numel.max(1).saturating_mul(64) {
        return Err(bad(format!(
            "size {:?} has {numel} elements, far more than its storage's {storage_numel}",
            tensor.size
        )));
    }
    // Highest element index touched; all terms are non-negative, so this bounds every access.
    let mut last = tensor.offset;
    for (&size, &stride) in tensor.size.iter().zip(&tensor.stride) {
        last = (size - 1)
            .checked_mul(stride)
            .and_then(|span| last.checked_add(span))
            .ok_or_else(|| bad("stride arithmetic overflows".into()))?;
    }
    if last >= storage_numel {
        return Err(bad(format!(
            "size {:?}, stride {:?}, offset {} reach element {last} of a storage with {storage_numel} elements",
            tensor.size, tensor.stride, tensor.offset
        )));
    }
    let mut contiguous_stride = 1usize;
    let mut contiguous = true;
    for (&size, &stride) in tensor.size.iter().zip(&tensor.stride).rev() {
        if size != 1 && stride != contiguous_stride {
            contiguous = false;
        }
        contiguous_stride *= size;
    }
    if contiguous {
        return Ok(storage[tensor.offset * elem..(tensor.offset + numel) * elem].to_vec());
    }
    let mut out = Vec::with_capacity(numel * elem);
    let mut index = vec![0usize; tensor.size.len()];
    for _ in 0..numel {
        let position = tensor.offset
            + index
                .iter()
                .zip(&tensor.stride)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        out.extend_from_slice(&storage[position * elem..(position + 1) * elem]);
        for dim in (0..index.len()).rev() {
            index[dim] += 1;
            if index[dim] < tensor.size[dim] {
                break;
            }
            index[dim] = 0;
        }
    }
    Ok(out)
}

/// A storage reference from a persistent id `('storage', StorageType, key, location, numel)`.
#[derive(Clone, Debug, PartialEq)]
struct StorageRef {
    type_name: String,
    key: String,
    numel: u64,
}

/// Arguments of `_rebuild_tensor_v2`, validated for shape but not yet against the storage.
#[derive(Clone, Debug, PartialEq)]
struct TensorRef {
    storage: StorageRef,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

/// A pickle value. Compound values live in the unpickler's heap and are referenced by index,
/// so that memo aliases see later mutations (as in Python) and copying is O(1).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Obj(usize),
}

#[derive(Clone, Debug, PartialEq)]
enum Object {
    Str(String),
    Bytes(usize),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global {
        module: String,
        name: String,
    },
    Storage(StorageRef),
    Tensor(TensorRef),
    /// Anything we do not interpret; the string says what it was for messages.
    Opaque(String),
}

/// The non-executing pickle machine (protocols 0-5 opcodes that torch and the Python standard
/// library emit for plain data; protocol 2 is what `torch.save` uses).
struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    /// Start offset of the opcode being executed, for messages.
    op_start: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    heap: Vec<Object>,
    /// Bytes the values may still take (see [`MAX_UNPICKLE_BYTES`]).
    budget: u64,
    /// Opcodes executed.
    ops: u64,
}

type PResult<T> = Result<T, PthError>;

/// The unpickler's value budget for a pickle of `len` bytes.
fn unpickle_budget(len: usize) -> u64 {
    (len as u64)
        .saturating_mul(64)
        .saturating_add(16 << 20)
        .min(MAX_UNPICKLE_BYTES)
}

/// The first `MAX` characters of an untrusted name, for descriptions kept in the heap.
fn short(text: &str) -> String {
    const MAX: usize = 80;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(MAX).collect();
        cut.push('…');
        cut
    }
}

/// What an object costs against the unpickler's budget.
fn object_cost(object: &Object) -> u64 {
    let slot = std::mem::size_of::<Value>() as u64;
    let inline = match object {
        Object::Str(s) | Object::Opaque(s) => s.len() as u64,
        Object::Bytes(_) => 0,
        Object::Tuple(items) | Object::List(items) => items.len() as u64 * slot,
        Object::Dict(entries) => entries.len() as u64 * 2 * slot,
        Object::Global { module, name } => (module.len() + name.len()) as u64,
        Object::Storage(storage) => (storage.type_name.len() + storage.key.len()) as u64,
        Object::Tensor(tensor) => {
            (tensor.storage.type_name.len() + tensor.storage.key.len()) as u64
                + (tensor.size.len() + tensor.stride.len()) as u64 * 8
        }
    };
    std::mem::size_of::<Object>() as u64 + inline
}

/// State_dict entries in file order: key and tensor reference.
type StateDict = Vec<(String, TensorRef)>;

impl<'a> Unpickler<'a> {
    fn new(data: &'a [u8]) -> Self {
        Unpickler {
            data,
            pos: 0,
            op_start: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            heap: Vec::new(),
            budget: unpickle_budget(data.len()),
            ops: 0,
        }
    }

    /// Takes `bytes` from the budget, or fails naming the limit.
    fn charge(&mut self, bytes: u64) -> PResult<()> {
        match self.budget.checked_sub(bytes) {
            Some(rest) => {
                self.budget = rest;
                Ok(())
            }
            None => self.error(format!(
                "the pickle builds more than {} MiB of values, more than a state_dict index of {} bytes can need",
                unpickle_budget(self.data.len()) >> 20,
                self.data.len()
            )),
        }
    }

    fn error<T>(&self, reason: impl Into<String>) -> PResult<T> {
        Err(PthError::Pickle {
            offset: self.op_start,
            reason: reason.into(),
        })
    }

    fn take(&mut self, n: usize) -> PResult<&'a [u8]> {
        match self
            .pos
            .checked_add(n)
            .and_then(|end| self.data.get(self.pos..end))
        {
            Some(bytes) => {
                self.pos += n;
                Ok(bytes)
            }
            None => self.error(format!("truncated: operand of {n} bytes runs past the end")),
        }
    }

    fn take_array<const N: usize>(&mut self) -> PResult<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn take_len<const N: usize>(&mut self) -> PResult<usize> {
        let raw = self.take_array::<N>()?;
        let mut wide = [0u8; 8];
        wide[..N].copy_from_slice(&raw);
        match usize::try_from(u64::from_le_bytes(wide)) {
            Ok(n) => Ok(n),
            Err(_) => self.error("length operand too large"),
        }
    }

    fn take_line(&mut self) -> PResult<&'a str> {
        let rest = &self.data[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return self.error("truncated: unterminated text operand");
        };
        self.pos += end + 1;
        match std::str::from_utf8(&rest[..end]) {
            Ok(s) => Ok(s),
            Err(_) => self.error("text operand is not UTF-8"),
        }
    }

    fn alloc(&mut self, object: Object) -> PResult<Value> {
        self.charge(object_cost(&object))?;
        self.heap.push(object);
        Ok(Value::Obj(self.heap.len() - 1))
    }

    fn push(&mut self, value: Value) -> PResult<()> {
        if self.stack.len() >= MAX_STACK {
            return self.error(format!("more than {MAX_STACK} values on the stack"));
        }
        self.charge(std::mem::size_of::<Value>() as u64)?;
        self.stack.push(value);
        Ok(())
    }

    fn pop(&mut self) -> PResult<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return self.error("stack underflow");
        }
        match self.stack.pop() {
            Some(v) => Ok(v),
            None => self.error("stack underflow"),
        }
    }

    fn top(&self) -> PResult<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        match self.stack.last() {
            Some(v) if self.stack.len() > floor => Ok(*v),
            _ => self.error("stack underflow"),
        }
    }

    fn pop_mark(&mut self) -> PResult<Vec<Value>> {
        let Some(mark) = self.marks.pop() else {
            return self.error("no MARK on the stack");
        };
        Ok(self.stack.split_off(mark))
    }

    fn object(&self, value: Value) -> Option<&Object> {
        match value {
            Value::Obj(i) => self.heap.get(i),
            _ => None,
        }
    }

    fn string(&self, value: Value) -> Option<&str> {
        match self.object(value) {
            Some(Object::Str(s)) => Some(s),
            _ => None,
        }
    }

    fn memo_put(&mut self, index: u64) -> PResult<()> {
        let value = self.top()?;
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&index) {
            return self.error(format!("more than {MAX_MEMO} memo entries"));
        }
        self.charge(32)?;
        self.memo.insert(index, value);
        Ok(())
    }

    fn memo_get(&mut self, index: u64) -> PResult<()> {
        match self.memo.get(&index) {
            Some(&value) => self.push(value),
            None => self.error(format!("memo entry {index} was never stored")),
        }
    }

    /// Runs the machine to STOP and returns the pickled object.
    fn run(&mut self) -> PResult<Value> {
        loop {
            self.op_start = self.pos;
            self.ops += 1;
            if self.ops > MAX_PICKLE_OPS {
                return self.error(format!("more than {MAX_PICKLE_OPS} opcodes"));
            }
            let [op] = match self.take_array::<1>() {
                Ok(op) => op,
                Err(_) => return self.error("truncated: no STOP opcode"),
            };
            match op {
                0x80 => {
                    let [proto] = self.take_array::<1>()?;
                    if proto > 5 {
                        return self.error(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.take(8)?;
                }
                b'.' => {
                    let result = self.pop()?;
                    return Ok(result);
                }
                b'(' => {
                    if self.marks.len() >= MAX_PICKLE_DEPTH {
                        return self
                            .error(format!("MARKs nested more than {MAX_PICKLE_DEPTH} deep"));
                    }
                    self.marks.push(self.stack.len());
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?;
                    self.push(v)?;
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'J' => {
                    let v = i32::from_le_bytes(self.take_array()?);
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'K' => {
                    let [v] = self.take_array::<1>()?;
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.take_array()?);
                    self.push(Value::Int(i64::from(v)))?;
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.take_len::<1>()?
                    } else {
                        self.take_len::<4>()?
                    };
                    let bytes = self.take(n)?;
                    if n > 8 {
                        return self.error(format!("integer of {n} bytes does not fit in 64 bits"));
                    }
                    let value = if n == 0 {
                        0
                    } else {
                        let fill = if bytes[n - 1] & 0x80 != 0 { 0xFF } else { 0 };
                        let mut wide = [fill; 8];
                        wide[..n].copy_from_slice(bytes);
                        i64::from_le_bytes(wide)
                    };
                    self.push(Value::Int(value))?;
                }
                b'I' => {
                    let line = self.take_line()?;
                    let value = match line {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        _ => match line.parse::<i64>() {
                            Ok(v) => Value::Int(v),
                            Err(_) => return self.error(format!("bad INT operand '{line}'")),
                        },
                    };
                    self.push(value)?;
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take_array()?);
                    self.push(Value::Float(v))?;
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        0x8c => self.take_len::<1>()?,
                        b'X' => self.take_len::<4>()?,
                        _ => self.take_len::<8>()?,
                    };
                    let bytes = self.take(n)?;
                    let Ok(text) = std::str::from_utf8(bytes) else {
                        return self.error("string is not UTF-8");
                    };
                    let value = self.alloc(Object::Str(text.to_string()))?;
                    self.push(value)?;
                }
                b'T' | b'U' => {
                    let n = if op == b'U' {
                        self.take_len::<1>()?
                    } else {
                        self.take_len::<4>()?
                    };
                    let bytes = self.take(n)?;
                    let text: String = bytes.iter().map(|&b| char::from(b)).collect();
                    let value = self.alloc(Object::Str(text))?;
                    self.push(value)?;
                }
                b'B' | b'C' | 0x8e => {
                    let n = match op {
                        b'C' => self.take_len::<1>()?,
                        b'B' => self.take_len::<4>()?,
                        _ => self.take_len::<8>()?,
                    };
                    self.take(n)?;
                    let value = self.alloc(Object::Bytes(n))?;
                    self.push(value)?;
                }
                b')' => {
                    let value = self.alloc(Object::Tuple(Vec::new()))?;
                    self.push(value)?;
                }
                b't' => {
                    let items = self.pop_mark()?;
                    let value = self.alloc(Object::Tuple(items))?;
                    self.push(value)?;
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    let value = self.alloc(Object::Tuple(items))?;
                    self.push(value)?;
                }
                b']' => {
                    let value = self.alloc(Object::List(Vec::new()))?;
                    self.push(value)?;
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    let value = self.alloc(Object::List(items))?;
                    self.push(value)?;
                }
                b'a' => {
                    let item = self.pop()?;
                    let list = self.top()?;
                    self.extend_list(list, vec![item])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let list = self.top()?;
                    self.extend_list(list, items)?;
                }
                b'}' => {
                    let value = self.alloc(Object::Dict(Vec::new()))?;
                    self.push(value)?;
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let value = self.alloc(Object::Dict(Vec::new()))?;
                    self.set_items(value, items)?;
                    self.push(value)?;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    let dict = self.top()?;
                    self.set_items(dict, vec![key, value])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let dict = self.top()?;
                    self.set_items(dict, items)?;
                }
                0x8f => {
                    let value = self.alloc(Object::Opaque("a set".into()))?;
                    self.push(value)?;
                }
                0x90 => {
                    self.pop_mark()?;
                    self.top()?;
                }
                0x91 => {
                    self.pop_mark()?;
                    let value = self.alloc(Object::Opaque("a frozenset".into()))?;
                    self.push(value)?;
                }
                b'c' => {
                    let module = self.take_line()?.to_string();
                    let name = self.take_line()?.to_string();
                    let value = self.alloc(Object::Global { module, name })?;
                    self.push(value)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(module), Some(name)) = (self.string(module), self.string(name))
                    else {
                        return self.error("STACK_GLOBAL needs two strings");
                    };
                    let global = Object::Global {
                        module: module.to_string(),
                        name: name.to_string(),
                    };
                    let value = self.alloc(global)?;
                    self.push(value)?;
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let value = self.reduce(callable, args)?;
                    self.push(value)?;
                }
                0x81 => {
                    let _args = self.pop()?;
                    let class = self.pop()?;
                    let value = self.instantiate(class)?;
                    self.push(value)?;
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let _args = self.pop()?;
                    let class = self.pop()?;
                    let value = self.instantiate(class)?;
                    self.push(value)?;
                }
                b'b' => {
                    // Object state (e.g. the state_dict's `_metadata` attribute): not needed.
                    self.pop()?;
                    self.top()?;
                }
                b'q' => {
                    let [i] = self.take_array::<1>()?;
                    self.memo_put(u64::from(i))?;
                }
                b'r' => {
                    let i = u32::from_le_bytes(self.take_array()?);
                    self.memo_put(u64::from(i))?;
                }
                0x94 => {
                    let index = self.memo.len() as u64;
                    self.memo_put(index)?;
                }
                b'p' => {
                    let line = self.take_line()?;
                    let Ok(i) = line.parse::<u64>() else {
                        return self.error(format!("bad PUT operand '{line}'"));
                    };
                    self.memo_put(i)?;
                }
                b'h' => {
                    let [i] = self.take_array::<1>()?;
                    self.memo_get(u64::from(i))?;
                }
                b'j' => {
                    let i = u32::from_le_bytes(self.take_array()?);
                    self.memo_get(u64::from(i))?;
                }
                b'g' => {
                    let line = self.take_line()?;
                    let Ok(i) = line.parse::<u64>() else {
                        return self.error(format!("bad GET operand '{line}'"));
                    };
                    self.memo_get(i)?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let value = self.persistent_load(pid)?;
                    self.push(value)?;
                }
                _ => return self.error(format!("unsupported opcode 0x{op:02x}")),
            }
        }
    }

    fn extend_list(&mut self, list: Value, items: Vec<Value>) -> PResult<()> {
        match list {
            Value::Obj(i) => match self.heap.get(i) {
                Some(Object::List(_)) => {
                    self.charge(items.len() as u64 * std::mem::size_of::<Value>() as u64)?;
                    if let Some(Object::List(existing)) = self.heap.get_mut(i) {
                        existing.extend(items);
                    }
                    Ok(())
                }
                // Appending to an opaque object (e.g. a custom container) is harmless.
                Some(Object::Opaque(_)) => Ok(()),
                _ => self.error("APPEND target is not a list"),
            },
            _ => self.error("APPEND target is not a list"),
        }
    }

    fn set_items(&mut self, dict: Value, items: Vec<Value>) -> PResult<()> {
        if !items.len().is_multiple_of(2) {
            return self.error("odd number of items for a dict");
        }
        match dict {
            Value::Obj(i) => match self.heap.get(i) {
                Some(Object::Dict(_)) => {
                    self.charge(items.len() as u64 * std::mem::size_of::<Value>() as u64)?;
                    if let Some(Object::Dict(entries)) = self.heap.get_mut(i) {
                        let mut iter = items.into_iter();
                        while let (Some(k), Some(v)) = (iter.next(), iter.next()) {
                            entries.push((k, v));
                        }
                    }
                    Ok(())
                }
                Some(Object::Opaque(_)) => Ok(()),
                _ => self.error("SETITEM target is not a dict"),
            },
            _ => self.error("SETITEM target is not a dict"),
        }
    }

    fn global_name(&self, value: Value) -> Option<(&str, &str)> {
        match self.object(value) {
            Some(Object::Global { module, name }) => Some((module, name)),
            _ => None,
        }
    }

    fn instantiate(&mut self, class: Value) -> PResult<Value> {
        match self.global_name(class) {
            Some(("collections", "OrderedDict")) | Some(("builtins", "dict")) => {
                self.alloc(Object::Dict(Vec::new()))
            }
            Some((module, name)) => {
                let what = format!("a pickled {}.{} object", short(module), short(name));
                self.alloc(Object::Opaque(what))
            }
            None => self.alloc(Object::Opaque("an object of unknown class".into())),
        }
    }

    /// Interprets `callable(*args)` for the callables torch uses; anything else is opaque.
    /// Never recursive: a tensor subclass's `_rebuild_from_type_v2(func, type, args, state)`
    /// loops to `func(*args)`, at most [`MAX_PICKLE_DEPTH`] times. Only the few arguments that
    /// are interpreted are copied out of the tuple.
    fn reduce(&mut self, mut callable: Value, mut args: Value) -> PResult<Value> {
        for _ in 0..MAX_PICKLE_DEPTH {
            let Some((module, name)) = self.global_name(callable) else {
                return self.alloc(Object::Opaque("the result of an unknown call".into()));
            };
            let (module, name) = (short(module), short(name));
            let (count, first) = match self.object(args) {
                Some(Object::Tuple(items)) => (
                    items.len(),
                    items.iter().take(4).copied().collect::<Vec<_>>(),
                ),
                _ => return self.error(format!("arguments of {module}.{name} are not a tuple")),
            };
            return match (module.as_str(), name.as_str()) {
                ("collections", "OrderedDict") | ("builtins", "dict") if count == 0 => {
                    self.alloc(Object::Dict(Vec::new()))
                }
                ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
                    if count < 4 {
                        return self.error(format!(
                            "_rebuild_tensor_v2 needs at least 4 arguments, got {count}"
                        ));
                    }
                    self.rebuild_tensor(&first)
                }
                ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                    match first.first() {
                        Some(&data) => Ok(data),
                        None => self.error("_rebuild_parameter without arguments"),
                    }
                }
                // Tensor subclasses: (func, type, func_args, state) -> func(*func_args).
                ("torch._tensor", "_rebuild_from_type_v2") => match (first.first(), first.get(2)) {
                    (Some(&func), Some(&func_args)) => {
                        callable = func;
                        args = func_args;
                        continue;
                    }
                    _ => self.error("_rebuild_from_type_v2 needs (func, type, args, state)"),
                },
                _ => self.alloc(Object::Opaque(format!(
                    "the result of {module}.{name}(...)"
                ))),
            };
        }
        self.error(format!(
            "tensor rebuild calls nested more than {MAX_PICKLE_DEPTH} deep"
        ))
    }

    fn int_arg(&self, value: Value, what: &str) -> PResult<usize> {
        match value {
            Value::Int(v) if v >= 0 => match usize::try_from(v) {
                Ok(v) => Ok(v),
                Err(_) => self.error(format!("{what} {v} is too large")),
            },
            other => self.error(format!(
                "{what} must be a non-negative integer, found {other:?}"
            )),
        }
    }

    fn int_tuple(&self, value: Value, what: &str) -> PResult<Vec<usize>> {
        match self.object(value) {
            Some(Object::Tuple(items) | Object::List(items)) => {
                if items.len() > MAX_RANK {
                    return self.error(format!(
                        "{what} has {} dimensions, more than {MAX_RANK}",
                        items.len()
                    ));
                }
                items.iter().map(|&v| self.int_arg(v, what)).collect()
            }
            _ => self.error(format!("{what} is not a tuple")),
        }
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])`.
    fn rebuild_tensor(&mut self, args: &[Value]) -> PResult<Value> {
        if args.len() < 4 {
            return self.error(format!(
                "_rebuild_tensor_v2 needs at least 4 arguments, got {}",
                args.len()
            ));
        }
        let storage = match self.object(args[0]) {
            Some(Object::Storage(storage)) => storage.clone(),
            _ => return self.error("_rebuild_tensor_v2: first argument is not a storage"),
        };
        let offset = self.int_arg(args[1], "storage offset")?;
        let size = self.int_tuple(args[2], "size")?;
        let stride = self.int_tuple(args[3], "stride")?;
        if size.len() != stride.len() {
            return self.error(format!(
                "size {size:?} and stride {stride:?} have different ranks"
            ));
        }
        self.alloc(Object::Tensor(TensorRef {
            storage,
            offset,
            size,
            stride,
        }))
    }

    /// Torch's persistent id for storages: `('storage', StorageType, key, location, numel)`.
    fn persistent_load(&mut self, pid: Value) -> PResult<Value> {
        let items: Vec<Value> = match self.object(pid) {
            Some(Object::Tuple(items)) if items.len() == 5 => items.clone(),
            Some(Object::Tuple(_)) => {
                return self.error("persistent id is not ('storage', type, key, location, numel)");
            }
            _ => return self.error("persistent id is not a tuple"),
        };
        if self.string(items[0]) != Some("storage") {
            return self.error("persistent id is not ('storage', type, key, location, numel)");
        }
        let type_name = match self.global_name(items[1]) {
            Some((module, name)) => format!("{}.{}", short(module), short(name)),
            None => return self.error("storage type is not a class reference"),
        };
        let key = match self.string(items[2]) {
            Some(key) if !key.is_empty() && !key.contains('/') => key.to_string(),
            _ => return self.error("storage key is not a plain string"),
        };
        let numel = match items[4] {
            Value::Int(n) if n >= 0 => n as u64,
            _ => return self.error("storage numel is not a non-negative integer"),
        };
        self.alloc(Object::Storage(StorageRef {
            type_name,
            key,
            numel,
        }))
    }

    fn describe(&self, value: Value) -> String {
        match value {
            Value::None => "None".into(),
            Value::Bool(b) => format!("the bool {b}"),
            Value::Int(i) => format!("the integer {i}"),
            Value::Float(f) => format!("the float {f}"),
            Value::Obj(_) => match self.object(value) {
                Some(Object::Str(s)) => {
                    format!("the string '{}'", s.chars().take(40).collect::<String>())
                }
                Some(Object::Bytes(n)) => format!("{n} bytes"),
                Some(Object::Tuple(_)) => "a tuple".into(),
                Some(Object::List(_)) => "a list".into(),
                Some(Object::Dict(_)) => "a dict".into(),
                Some(Object::Global { module, name }) => format!("the class {module}.{name}"),
                Some(Object::Storage(_)) => "a bare storage".into(),
                Some(Object::Tensor(_)) => "a tensor".into(),
                Some(Object::Opaque(what)) => what.clone(),
                None => "nothing".into(),
            },
        }
    }

    fn dict_entries(&self, value: Value) -> Option<&[(Value, Value)]> {
        match self.object(value) {
            Some(Object::Dict(entries)) => Some(entries),
            _ => None,
        }
    }

    /// Finds the state_dict in the saved object: the object itself if it is a dict of tensors,
    /// else the first of [`STATE_DICT_ENTRIES`] that holds a dict.
    fn select_state_dict(&self, root: Value) -> PResult<(Option<String>, StateDict)> {
        let Some(entries) = self.dict_entries(root) else {
            return Err(PthError::NotADict(self.describe(root)));
        };
        let lookup = |name: &str| {
            entries
                .iter()
                .find(|(k, _)| self.string(*k) == Some(name))
                .map(|(_, v)| *v)
        };
        let all_tensors = !entries.is_empty()
            && entries
                .iter()
                .all(|(_, v)| matches!(self.object(*v), Some(Object::Tensor(_))));
        let (entry, dict) = if all_tensors {
            (None, root)
        } else if let Some((name, value)) = STATE_DICT_ENTRIES
            .iter()
            .find_map(|&n| lookup(n).map(|v| (n, v)))
        {
            if self.dict_entries(value).is_none() {
                return Err(PthError::EntryNotADict {
                    entry: name.to_string(),
                    found: self.describe(value),
                });
            }
            (Some(name.to_string()), value)
        } else if entries.is_empty() {
            return Err(PthError::NoStateDict {
                keys: String::new(),
            });
        } else {
            let has_tensor = entries
                .iter()
                .any(|(_, v)| matches!(self.object(*v), Some(Object::Tensor(_))));
            if !has_tensor {
                let keys: Vec<String> = entries
                    .iter()
                    .take(12)
                    .map(|(k, _)| {
                        self.string(*k)
                            .map_or_else(|| self.describe(*k), |s| format!("'{s}'"))
                    })
                    .collect();
                return Err(PthError::NoStateDict {
                    keys: keys.join(", "),
                });
            }
            (None, root)
        };
        let mut tensors = Vec::new();
        for &(key, value) in self.dict_entries(dict).unwrap_or_default() {
            let Some(key) = self.string(key) else {
                return Err(PthError::NonStringKey(self.describe(key)));
            };
            match self.object(value) {
                Some(Object::Tensor(tensor)) => tensors.push((key.to_string(), tensor.clone())),
                _ => {
                    return Err(PthError::NotATensor {
                        key: key.to_string(),
                        found: self.describe(value),
                    });
                }
            }
        }
        Ok((entry, tensors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a protocol-2 pickle of `{key: tensor}` like torch.save does.
    /// One `_rebuild_tensor_v2` entry of a synthetic state_dict pickle.
    struct Entry<'a> {
        key: &'a str,
        storage_key: &'a str,
        offset: u32,
        size: &'a [u32],
        stride: &'a [u32],
        numel: u32,
    }

    fn entry<'a>(
        key: &'a str,
        storage_key: &'a str,
        offset: u32,
        size: &'a [u32],
        stride: &'a [u32],
        numel: u32,
    ) -> Entry<'a> {
        Entry {
            key,
            storage_key,
            offset,
            size,
            stride,
            numel,
        }
    }

    fn tensor_pickle(entries: &[Entry<'_>]) -> Vec<u8> {
        let mut p = vec![0x80, 2];
        p.extend_from_slice(b"ccollections\nOrderedDict\nq\x00)R(");
        for &Entry {
            key,
            storage_key,
            offset,
            size,
            stride,
            numel,
        } in entries
        {
            p.push(b'X');
            p.extend_from_slice(&(key.len() as u32).to_le_bytes());
            p.extend_from_slice(key.as_bytes());
            p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX");
            p.extend_from_slice(&(storage_key.len() as u32).to_le_bytes());
            p.extend_from_slice(storage_key.as_bytes());
            p.extend_from_slice(b"X\x03\x00\x00\x00cpuJ");
            p.extend_from_slice(&numel.to_le_bytes());
            p.extend_from_slice(b"tQJ");
            p.extend_from_slice(&offset.to_le_bytes());
            p.push(b'(');
            for d in size {
                p.push(b'J');
                p.extend_from_slice(&d.to_le_bytes());
            }
            p.extend_from_slice(b"t(");
            for s in stride {
                p.push(b'J');
                p.extend_from_slice(&s.to_le_bytes());
            }
            p.extend_from_slice(b"t\x89h\x00)RtR");
        }
        p.extend_from_slice(b"u.");
        p
    }

    fn run(pickle: &[u8]) -> PResult<StateDict> {
        let mut u = Unpickler::new(pickle);
        let root = u.run()?;
        Ok(u.select_state_dict(root)?.1)
    }

    #[test]
    fn decodes_torch_style_tensor_entries() {
        let pickle = tensor_pickle(&[entry("a.weight", "0", 2, &[2, 3], &[1, 2], 8)]);
        let tensors = run(&pickle).unwrap();
        assert_eq!(tensors.len(), 1);
        let (key, t) = &tensors[0];
        assert_eq!(key, "a.weight");
        assert_eq!(
            (t.offset, t.size.clone(), t.stride.clone()),
            (2, vec![2, 3], vec![1, 2])
        );
        assert_eq!(
            t.storage,
            StorageRef {
                type_name: "torch.FloatStorage".into(),
                key: "0".into(),
                numel: 8
            }
        );
    }

    #[test]
    fn gather_honours_offset_and_transposed_strides() {
        // Storage 0..8; view offset 2, size (2,3), stride (1,2) -> [[2,4,6],[3,5,7]].
        let storage: Vec<u8> = (0..8).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let t = TensorRef {
            storage: StorageRef {
                type_name: "torch.FloatStorage".into(),
                key: "0".into(),
                numel: 8,
            },
            offset: 2,
            size: vec![2, 3],
            stride: vec![1, 2],
        };
        let bytes = gather("k", &t, DType::F32, &storage).unwrap();
        assert_eq!(
            decode_float(DType::F32, &bytes, false),
            vec![2.0, 4.0, 6.0, 3.0, 5.0, 7.0]
        );
        let out_of_bounds = TensorRef {
            offset: 3,
            ..t.clone()
        };
        let err = gather("k", &out_of_bounds, DType::F32, &storage).unwrap_err();
        assert!(err.to_string().contains("reach element 8"), "{err}");
        let huge = TensorRef {
            offset: 0,
            size: vec![1 << 20, 1 << 20],
            stride: vec![0, 0],
            ..t.clone()
        };
        let err = gather("k", &huge, DType::F32, &storage).unwrap_err();
        assert!(
            err.to_string().contains("far more than its storage"),
            "{err}"
        );
        let expanded = TensorRef {
            offset: 0,
            size: vec![3, 2],
            stride: vec![0, 1],
            ..t
        };
        let bytes = gather("k", &expanded, DType::F32, &storage).unwrap();
        assert_eq!(
            decode_float(DType::F32, &bytes, false),
            vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
        );
    }

    #[test]
    fn a_directory_claiming_more_entries_than_the_file_holds_is_refused() {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        zip.start_file("archive/data.pkl", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(b"\x80\x02}.").unwrap();
        let mut bytes = zip.finish().unwrap().into_inner();
        assert!(check_directory_claim(&bytes).is_ok());
        let eocd = bytes.windows(4).rposition(|w| w == b"PK\x05\x06").unwrap();
        bytes[eocd + 8..eocd + 12].copy_from_slice(&[0xff; 4]);
        let err = parse_pth(&bytes, Path::new("x.pth")).unwrap_err();
        assert!(err.to_string().contains("claims 65535 entries"), "{err}");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let pickle = tensor_pickle(&[
            entry("a", "0", 0, &[2], &[1], 2),
            entry("b", "1", 0, &[], &[], 1),
        ]);
        assert_eq!(run(&pickle).unwrap().len(), 2);
        for cut in 0..pickle.len() {
            assert!(run(&pickle[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn selects_state_dict_entry_of_training_checkpoints_and_ignores_other_objects() {
        // {'epoch': 3, 'args': argparse.Namespace(...), 'state_dict_ema': {...}, 'state_dict': {...}}
        let inner = tensor_pickle(&[entry("w", "0", 0, &[1], &[1], 1)]);
        // Reuse the inner dict-building bytes without PROTO and STOP.
        let inner_body = &inner[2..inner.len() - 1];
        let mut p = vec![0x80, 2, b'}', b'('];
        p.extend_from_slice(b"X\x05\x00\x00\x00epochK\x03");
        p.extend_from_slice(
            b"X\x04\x00\x00\x00argscargparse\nNamespace\n)\x81}bX\x0e\x00\x00\x00state_dict_ema",
        );
        p.extend_from_slice(inner_body);
        p.extend_from_slice(b"X\x0a\x00\x00\x00state_dict");
        p.extend_from_slice(inner_body);
        p.extend_from_slice(b"u.");
        let mut u = Unpickler::new(&p);
        let root = u.run().unwrap();
        let (entry, tensors) = u.select_state_dict(root).unwrap();
        assert_eq!(entry.as_deref(), Some("state_dict"));
        assert_eq!(tensors.len(), 1);
    }

    #[test]
    fn the_opcode_cap_stops_a_pickle_that_builds_nothing() {
        // MARK / POP_MARK pairs allocate nothing: only the opcode count stops them.
        let mut p = vec![0x80, 2];
        for _ in 0..MAX_PICKLE_OPS / 2 + 1 {
            p.extend_from_slice(b"(1");
        }
        p.extend_from_slice(b"N.");
        let err = run(&p).unwrap_err().to_string();
        assert!(
            err.contains(&format!("more than {MAX_PICKLE_OPS} opcodes")),
            "{err}"
        );
        // Two pairs fewer, the pickle runs to its STOP (an empty dict: no state_dict).
        let fits = [&p[..2 + 2 * (MAX_PICKLE_OPS as usize / 2 - 2)], b"}."].concat();
        assert!(
            matches!(run(&fits), Err(PthError::NoStateDict { .. })),
            "{:?}",
            run(&fits)
        );
    }

    #[test]
    fn the_stack_cap_stops_a_pickle_that_only_pushes() {
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b'N', MAX_STACK + 1));
        p.push(b'.');
        let err = run(&p).unwrap_err().to_string();
        assert!(
            err.contains(&format!("more than {MAX_STACK} values on the stack")),
            "{err}"
        );
    }

    #[test]
    fn the_memo_cap_stops_a_pickle_that_memoizes_without_end() {
        // MEMOIZE stores the top of the stack under the next free index, every time.
        let mut p = vec![0x80, 2, b'N'];
        p.extend(std::iter::repeat_n(0x94, MAX_MEMO + 1));
        p.push(b'.');
        let err = run(&p).unwrap_err().to_string();
        assert!(
            err.contains(&format!("more than {MAX_MEMO} memo entries")),
            "{err}"
        );
        // Re-storing one index is not a new entry.
        let mut again = vec![0x80, 2, b'N'];
        for _ in 0..MAX_MEMO + 1 {
            again.extend_from_slice(b"q\x07");
        }
        again.extend_from_slice(b"0}.");
        assert!(
            matches!(run(&again), Err(PthError::NoStateDict { .. })),
            "{:?}",
            run(&again)
        );
    }

    #[test]
    fn the_value_budget_stops_a_pickle_that_builds_more_than_64_times_its_size() {
        // `h0 ) R 0`: five bytes that call a memoized global with long names, each call making
        // a tuple and an opaque result that names them, about 470 bytes of values. No other cap
        // is near: 113 k calls exhaust 64 x the pickle plus 16 MiB.
        let slot = std::mem::size_of::<Value>() as u64;
        let object = std::mem::size_of::<Object>() as u64;
        let (module, name) = ("m".repeat(80), "n".repeat(80));
        let described = format!("the result of {module}.{name}(...)").len() as u64;
        let per_call = 3 * slot + 2 * object + described;
        assert!(per_call > 64 * 5, "{per_call} bytes per 5-byte call");
        let mut p = vec![0x80, 2];
        p.extend_from_slice(format!("c{module}\n{name}\nq\x000").as_bytes());
        let calls = 300_000;
        for _ in 0..calls {
            p.extend_from_slice(b"h\x00)R0");
        }
        p.extend_from_slice(b"}.");
        let err = run(&p).unwrap_err().to_string();
        assert!(err.contains("MiB of values"), "{err}");
        // Stopped part way through the calls, not at their end.
        match run(&p) {
            Err(PthError::Pickle { offset, .. }) => {
                assert!(offset < p.len() * 9 / 10, "{offset} of {}", p.len())
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_non_state_dicts_with_a_reason() {
        let list = b"\x80\x02]K\x01a.";
        let err = run(list).unwrap_err();
        assert!(
            matches!(err, PthError::NotADict(ref what) if what == "a list"),
            "{err}"
        );
        let module = b"\x80\x02cmymodels\nNet\n)\x81}b.";
        assert!(
            run(module)
                .unwrap_err()
                .to_string()
                .contains("mymodels.Net")
        );
        let metrics = b"\x80\x02}(X\x03\x00\x00\x00accG@\x00\x00\x00\x00\x00\x00\x00u.";
        assert!(matches!(run(metrics), Err(PthError::NoStateDict { .. })));
        let bad_model = b"\x80\x02}(X\x05\x00\x00\x00modelK\x01u.";
        assert!(matches!(
            run(bad_model),
            Err(PthError::EntryNotADict { .. })
        ));
        let evil = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00lsR.";
        // Never executed: just an opaque object that is not a state_dict.
        assert!(run(evil).unwrap_err().to_string().contains("os.system"));
        let underflow = b"\x80\x02s.";
        assert!(matches!(
            run(underflow),
            Err(PthError::Pickle { offset: 2, .. })
        ));
        let bad_memo = b"\x80\x02h\x05.";
        assert!(
            run(bad_memo)
                .unwrap_err()
                .to_string()
                .contains("memo entry 5")
        );
    }
}
