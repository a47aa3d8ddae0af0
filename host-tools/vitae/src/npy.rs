//! NumPy `.npy` files: the exchange format for inputs, logits and intermediates between this
//! tool, the PyTorch scripts and the fixtures.
//!
//! Reads format versions 1.0, 2.0 and 3.0 (the header dict is the same; only its length field
//! and encoding differ) in C order, for `float32`, `float64`, `uint8` and `int64` in either byte
//! order (Fortran-order files, which numpy writes for non-contiguous arrays, are transposed to
//! C order on read). Writes `float32`, little-endian, C order, version 1.0 (2.0 only for huge headers),
//! always through [`crate::io::write_atomic`]. Every error names the file.

use std::path::{Path, PathBuf};

use crate::io::{ReadFileError, WriteFileError, read_file, write_atomic};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// numpy pads the header so the data starts on a 64-byte boundary; we do the same on write.
const HEADER_ALIGN: usize = 64;
/// numpy itself refuses headers above 10 kB unless told otherwise; anything this large is not
/// a real array header but a corrupt or hostile file.
const MAX_HEADER_LEN: usize = 1 << 20;

/// Element types this reader understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpyDtype {
    /// `<f4`
    F32,
    /// `<f8`
    F64,
    /// `|u1`
    U8,
    /// `<i8`
    I64,
}

impl NpyDtype {
    fn size(self) -> usize {
        match self {
            NpyDtype::F32 => 4,
            NpyDtype::F64 | NpyDtype::I64 => 8,
            NpyDtype::U8 => 1,
        }
    }

    /// numpy's name for the type.
    pub fn name(self) -> &'static str {
        match self {
            NpyDtype::F32 => "float32",
            NpyDtype::F64 => "float64",
            NpyDtype::U8 => "uint8",
            NpyDtype::I64 => "int64",
        }
    }
}

/// The elements of an array, in C order.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyData {
    /// float32 elements.
    F32(Vec<f32>),
    /// float64 elements.
    F64(Vec<f64>),
    /// uint8 elements.
    U8(Vec<u8>),
    /// int64 elements.
    I64(Vec<i64>),
}

/// A decoded `.npy` array of any supported dtype.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    /// Dimensions, outermost first (an empty shape is a scalar).
    pub shape: Vec<usize>,
    /// Elements in C order; `len == shape.iter().product()`.
    pub data: NpyData,
}

impl NpyArray {
    /// The element type.
    pub fn dtype(&self) -> NpyDtype {
        match self.data {
            NpyData::F32(_) => NpyDtype::F32,
            NpyData::F64(_) => NpyDtype::F64,
            NpyData::U8(_) => NpyDtype::U8,
            NpyData::I64(_) => NpyDtype::I64,
        }
    }
}

/// A float32 array: what the model consumes and produces.
#[derive(Clone, Debug, PartialEq)]
pub struct ArrayF32 {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Elements in C order; `len == shape.iter().product()`.
    pub data: Vec<f32>,
}

/// What is wrong inside an `.npy` file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NpyFormatError {
    /// The file does not start with `\x93NUMPY`.
    #[error("not a .npy file (bad magic; expected \\x93NUMPY)")]
    BadMagic,
    /// A format version other than 1.0, 2.0 or 3.0.
    #[error("unsupported .npy format version {major}.{minor}")]
    UnsupportedVersion {
        /// Major version byte.
        major: u8,
        /// Minor version byte.
        minor: u8,
    },
    /// The file ends before the header or the data does.
    #[error("truncated: need {needed} bytes for the {part}, file has {available}")]
    Truncated {
        /// Which part was cut off (`preamble`, `header`, `data`).
        part: &'static str,
        /// Bytes the part needs (counted from the start of the file).
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The header is not a valid numpy header dict.
    #[error("malformed header: {0}")]
    BadHeader(String),
    /// A dtype we do not read.
    #[error("unsupported dtype '{0}' (supported: <f4, <f8, |u1, <i8, either byte order)")]
    UnsupportedDtype(String),
    /// More data than the shape calls for.
    #[error(
        "size mismatch: shape {shape:?} of {dtype} needs {expected} data bytes, file has {found}"
    )]
    SizeMismatch {
        /// Declared shape.
        shape: Vec<usize>,
        /// Declared dtype.
        dtype: &'static str,
        /// Data bytes the shape needs.
        expected: usize,
        /// Data bytes present.
        found: usize,
    },
    /// The element count overflows.
    #[error("shape {0:?} is too large")]
    ShapeOverflow(Vec<usize>),
    /// The array's dtype is not the one the caller needs.
    #[error("dtype is {found}, expected {expected}")]
    WrongDtype {
        /// What the caller needs.
        expected: &'static str,
        /// What the file holds.
        found: &'static str,
    },
    /// The caller's data length does not match the shape it gave for writing.
    #[error("cannot write: shape {shape:?} needs {expected} elements, got {found}")]
    DataLengthMismatch {
        /// The shape given.
        shape: Vec<usize>,
        /// Elements the shape needs.
        expected: usize,
        /// Elements given.
        found: usize,
    },
}

/// Any failure reading or writing an `.npy` file; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file could not be read.
    #[error(transparent)]
    Read(#[from] ReadFileError),
    /// The file could not be written.
    #[error(transparent)]
    Write(#[from] WriteFileError),
    /// The file's content is not a supported `.npy` array.
    #[error("{}: {kind}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        kind: NpyFormatError,
    },
}

/// Reads an `.npy` file of any supported dtype.
pub fn read_npy(path: &Path) -> Result<NpyArray, NpyError> {
    let bytes = read_file(path)?;
    parse_npy(&bytes).map_err(|kind| NpyError::Format {
        path: path.to_path_buf(),
        kind,
    })
}

/// Reads an `.npy` file that must hold float32 (float64 is narrowed to f32, as PyTorch's
/// `torch.from_numpy(x).float()` would; integer arrays are refused because they are almost
/// certainly un-normalised images or labels passed by mistake).
pub fn read_npy_f32(path: &Path) -> Result<ArrayF32, NpyError> {
    let array = read_npy(path)?;
    let found = array.dtype().name();
    let data = match array.data {
        NpyData::F32(values) => values,
        NpyData::F64(values) => values.into_iter().map(|v| v as f32).collect(),
        NpyData::U8(_) | NpyData::I64(_) => {
            return Err(NpyError::Format {
                path: path.to_path_buf(),
                kind: NpyFormatError::WrongDtype {
                    expected: "float32",
                    found,
                },
            });
        }
    };
    Ok(ArrayF32 {
        shape: array.shape,
        data,
    })
}

/// Parses `.npy` bytes.
pub fn parse_npy(bytes: &[u8]) -> Result<NpyArray, NpyFormatError> {
    let truncated = |part, needed| NpyFormatError::Truncated {
        part,
        needed,
        available: bytes.len(),
    };
    let preamble = bytes.get(..8).ok_or_else(|| {
        if bytes.len() >= MAGIC.len() || !MAGIC.starts_with(bytes) {
            NpyFormatError::BadMagic
        } else {
            truncated("preamble", 8)
        }
    })?;
    if &preamble[..6] != MAGIC {
        return Err(NpyFormatError::BadMagic);
    }
    let (major, minor) = (preamble[6], preamble[7]);
    let (len_field_size, utf8) = match major {
        1 => (2, false),
        2 => (4, false),
        3 => (4, true),
        _ => return Err(NpyFormatError::UnsupportedVersion { major, minor }),
    };
    let header_start = 8 + len_field_size;
    let len_bytes = bytes
        .get(8..header_start)
        .ok_or_else(|| truncated("preamble", header_start))?;
    let header_len = len_bytes
        .iter()
        .rev()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    if header_len > MAX_HEADER_LEN {
        return Err(NpyFormatError::BadHeader(format!(
            "header length {header_len} is implausibly large"
        )));
    }
    let data_start = header_start + header_len;
    let header_bytes = bytes
        .get(header_start..data_start)
        .ok_or_else(|| truncated("header", data_start))?;
    let header = if utf8 {
        std::str::from_utf8(header_bytes)
            .map_err(|_| NpyFormatError::BadHeader("header is not UTF-8".into()))?
    } else {
        if !header_bytes.is_ascii() {
            return Err(NpyFormatError::BadHeader("header is not ASCII".into()));
        }
        std::str::from_utf8(header_bytes)
            .map_err(|_| NpyFormatError::BadHeader("header is not ASCII".into()))?
    };
    let parsed = parse_header(header)?;
    let count = checked_product(&parsed.shape)
        .ok_or_else(|| NpyFormatError::ShapeOverflow(parsed.shape.clone()))?;
    let expected = count
        .checked_mul(parsed.dtype.size())
        .ok_or_else(|| NpyFormatError::ShapeOverflow(parsed.shape.clone()))?;
    let data = &bytes[data_start..];
    if data.len() < expected {
        return Err(NpyFormatError::Truncated {
            part: "data",
            needed: data_start + expected,
            available: bytes.len(),
        });
    }
    if data.len() > expected {
        return Err(NpyFormatError::SizeMismatch {
            shape: parsed.shape,
            dtype: parsed.dtype.name(),
            expected,
            found: data.len(),
        });
    }
    let big = parsed.big_endian;
    let data = match parsed.dtype {
        NpyDtype::F32 => NpyData::F32(
            data.chunks_exact(4)
                .map(|c| {
                    let b = [c[0], c[1], c[2], c[3]];
                    if big {
                        f32::from_be_bytes(b)
                    } else {
                        f32::from_le_bytes(b)
                    }
                })
                .collect(),
        ),
        NpyDtype::F64 => NpyData::F64(
            data.chunks_exact(8)
                .map(|c| decode_u64(c, big))
                .map(f64::from_bits)
                .collect(),
        ),
        NpyDtype::I64 => NpyData::I64(
            data.chunks_exact(8)
                .map(|c| decode_u64(c, big) as i64)
                .collect(),
        ),
        NpyDtype::U8 => NpyData::U8(data.to_vec()),
    };
    // numpy saves non-C-contiguous arrays (e.g. a permuted torch tensor) in Fortran order.
    let data = if parsed.fortran_order {
        match data {
            NpyData::F32(v) => NpyData::F32(fortran_to_c(&v, &parsed.shape)),
            NpyData::F64(v) => NpyData::F64(fortran_to_c(&v, &parsed.shape)),
            NpyData::U8(v) => NpyData::U8(fortran_to_c(&v, &parsed.shape)),
            NpyData::I64(v) => NpyData::I64(fortran_to_c(&v, &parsed.shape)),
        }
    } else {
        data
    };
    Ok(NpyArray {
        shape: parsed.shape,
        data,
    })
}

/// Reorders column-major (first index fastest) elements into C order for `shape`.
fn fortran_to_c<T: Copy>(column_major: &[T], shape: &[usize]) -> Vec<T> {
    let mut fortran_strides = Vec::with_capacity(shape.len());
    let mut stride = 1;
    for &dim in shape {
        fortran_strides.push(stride);
        stride *= dim;
    }
    let mut index = vec![0usize; shape.len()];
    let mut out = Vec::with_capacity(column_major.len());
    for _ in 0..column_major.len() {
        let offset: usize = index.iter().zip(&fortran_strides).map(|(i, s)| i * s).sum();
        out.push(column_major[offset]);
        for dim in (0..shape.len()).rev() {
            index[dim] += 1;
            if index[dim] < shape[dim] {
                break;
            }
            index[dim] = 0;
        }
    }
    out
}

fn decode_u64(chunk: &[u8], big_endian: bool) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(chunk);
    if big_endian {
        u64::from_be_bytes(b)
    } else {
        u64::from_le_bytes(b)
    }
}

/// `shape.iter().product()` without overflow.
pub(crate) fn checked_product(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Serialises a float32 array to `.npy` bytes (little-endian, C order).
pub fn encode_npy_f32(shape: &[usize], data: &[f32]) -> Result<Vec<u8>, NpyFormatError> {
    let expected =
        checked_product(shape).ok_or_else(|| NpyFormatError::ShapeOverflow(shape.to_vec()))?;
    if expected != data.len() {
        return Err(NpyFormatError::DataLengthMismatch {
            shape: shape.to_vec(),
            expected,
            found: data.len(),
        });
    }
    let shape_text = match shape {
        [single] => format!("({single},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Version 1 has a 2-byte length field; fall back to version 2 only when we must.
    let (version, preamble_len) = if header.len() + 1 + 10 + HEADER_ALIGN <= usize::from(u16::MAX) {
        (1u8, 10)
    } else {
        (2u8, 12)
    };
    let unpadded = preamble_len + header.len() + 1;
    let padding = (HEADER_ALIGN - unpadded % HEADER_ALIGN) % HEADER_ALIGN;
    header.extend(std::iter::repeat_n(' ', padding));
    header.push('\n');
    let mut out = Vec::with_capacity(preamble_len + header.len() + data.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        // Fits: checked above.
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        let len = u32::try_from(header.len())
            .map_err(|_| NpyFormatError::ShapeOverflow(shape.to_vec()))?;
        out.extend_from_slice(&len.to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    for value in data {
        out.extend_from_slice(&value.to_le_bytes());
    }
    Ok(out)
}

/// Writes a float32 `.npy` file atomically (see [`write_atomic`]).
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), NpyError> {
    let bytes = encode_npy_f32(shape, data).map_err(|kind| NpyError::Format {
        path: path.to_path_buf(),
        kind,
    })?;
    write_atomic(path, &bytes)?;
    Ok(())
}

struct Header {
    dtype: NpyDtype,
    big_endian: bool,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// The values a numpy header dict can hold.
enum HeaderValue {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// Parses the Python dict literal numpy writes, e.g.
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3), }`.
/// Only the three keys numpy defines are accepted, each exactly once.
fn parse_header(text: &str) -> Result<Header, NpyFormatError> {
    let bad = |msg: String| NpyFormatError::BadHeader(msg);
    let mut cursor = HeaderCursor {
        text: text.as_bytes(),
        pos: 0,
    };
    cursor.expect(b'{').map_err(bad)?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        cursor.skip_whitespace();
        if cursor.eat(b'}') {
            break;
        }
        let key = cursor.string().map_err(bad)?;
        cursor.expect(b':').map_err(bad)?;
        let value = cursor.value().map_err(bad)?;
        let slot_was_empty = match (key.as_str(), value) {
            ("descr", HeaderValue::Str(s)) => descr.replace(s).is_none(),
            ("fortran_order", HeaderValue::Bool(b)) => fortran.replace(b).is_none(),
            ("shape", HeaderValue::Tuple(t)) => shape.replace(t).is_none(),
            ("descr" | "fortran_order" | "shape", _) => {
                return Err(bad(format!("key '{key}' has the wrong type")));
            }
            _ => return Err(bad(format!("unexpected key '{key}'"))),
        };
        if !slot_was_empty {
            return Err(bad(format!("duplicate key '{key}'")));
        }
        cursor.skip_whitespace();
        if cursor.eat(b',') {
            continue;
        }
        cursor.expect(b'}').map_err(bad)?;
        break;
    }
    cursor.skip_whitespace();
    if cursor.pos != cursor.text.len() {
        return Err(bad("trailing characters after the header dict".into()));
    }
    let descr = descr.ok_or_else(|| bad("missing key 'descr'".into()))?;
    let fortran_order = fortran.ok_or_else(|| bad("missing key 'fortran_order'".into()))?;
    let shape = shape.ok_or_else(|| bad("missing key 'shape'".into()))?;
    let (big_endian, dtype) = match descr.as_str() {
        "<f4" | "=f4" => (false, NpyDtype::F32),
        ">f4" => (true, NpyDtype::F32),
        "<f8" | "=f8" => (false, NpyDtype::F64),
        ">f8" => (true, NpyDtype::F64),
        "<i8" | "=i8" => (false, NpyDtype::I64),
        ">i8" => (true, NpyDtype::I64),
        "|u1" | "<u1" | ">u1" | "=u1" => (false, NpyDtype::U8),
        _ => return Err(NpyFormatError::UnsupportedDtype(descr)),
    };
    Ok(Header {
        dtype,
        big_endian,
        fortran_order,
        shape,
    })
}

struct HeaderCursor<'a> {
    text: &'a [u8],
    pos: usize,
}

impl HeaderCursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_whitespace();
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!(
                "expected '{}' at header offset {}",
                char::from(c),
                self.pos
            ))
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.skip_whitespace();
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => {
                return Err(format!(
                    "expected a quoted string at header offset {}",
                    self.pos
                ));
            }
        };
        let start = self.pos + 1;
        let end = self.text[start..]
            .iter()
            .position(|&c| c == quote)
            .map(|i| start + i)
            .ok_or_else(|| "unterminated string".to_string())?;
        self.pos = end + 1;
        Ok(String::from_utf8_lossy(&self.text[start..end]).into_owned())
    }

    fn value(&mut self) -> Result<HeaderValue, String> {
        self.skip_whitespace();
        match self.peek() {
            Some(b'\'' | b'"') => self.string().map(HeaderValue::Str),
            Some(b'(') => self.tuple().map(HeaderValue::Tuple),
            _ => {
                let rest = &self.text[self.pos..];
                if rest.starts_with(b"True") {
                    self.pos += 4;
                    Ok(HeaderValue::Bool(true))
                } else if rest.starts_with(b"False") {
                    self.pos += 5;
                    Ok(HeaderValue::Bool(false))
                } else {
                    Err(format!("unexpected value at header offset {}", self.pos))
                }
            }
        }
    }

    fn tuple(&mut self) -> Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            if self.eat(b')') {
                return Ok(dims);
            }
            self.skip_whitespace();
            let start = self.pos;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.pos += 1;
            }
            // Python 2 era files may write `3L`.
            let digits = &self.text[start..self.pos];
            if self.peek() == Some(b'L') {
                self.pos += 1;
            }
            let dim = std::str::from_utf8(digits)
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or_else(|| {
                    format!("expected a non-negative dimension at header offset {start}")
                })?;
            dims.push(dim);
            if !self.eat(b',') {
                self.expect(b')')?;
                return Ok(dims);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_shape_and_values_and_aligns_data() {
        for shape in [vec![], vec![3], vec![2, 3], vec![1, 2, 2, 1]] {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 1.0).collect();
            let bytes = encode_npy_f32(&shape, &data).unwrap();
            assert_eq!(
                (bytes.len() - n * 4) % HEADER_ALIGN,
                0,
                "data must start 64-aligned"
            );
            let back = parse_npy(&bytes).unwrap();
            assert_eq!(back.shape, shape);
            assert_eq!(back.data, NpyData::F32(data));
        }
    }

    #[test]
    fn header_written_like_numpy() {
        let bytes = encode_npy_f32(&[5], &[0.0; 5]).unwrap();
        let text = String::from_utf8_lossy(&bytes[10..bytes.len() - 20]).into_owned();
        assert!(
            text.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }"),
            "{text}"
        );
        assert!(text.ends_with('\n'));
    }

    fn with_header(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn reads_other_dtypes_and_big_endian() {
        let f8 = with_header(
            "{'descr': '>f8', 'fortran_order': False, 'shape': (1,), }\n",
            &1.5f64.to_be_bytes(),
        );
        assert_eq!(parse_npy(&f8).unwrap().data, NpyData::F64(vec![1.5]));
        let i8 = with_header(
            "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }",
            &[255; 16],
        );
        assert_eq!(parse_npy(&i8).unwrap().data, NpyData::I64(vec![-1, -1]));
        let u1 = with_header(
            "{'shape': (2, 1), 'fortran_order': False, 'descr': '|u1'}",
            &[7, 9],
        );
        let parsed = parse_npy(&u1).unwrap();
        assert_eq!(
            (parsed.shape, parsed.data),
            (vec![2, 1], NpyData::U8(vec![7, 9]))
        );
    }

    #[test]
    fn fortran_order_is_transposed_to_c_order() {
        // np.asfortranarray(np.arange(6).reshape(2, 3)) stores 0 3 1 4 2 5.
        let data: Vec<u8> = [0.0f32, 3.0, 1.0, 4.0, 2.0, 5.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let fortran = with_header(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
            &data,
        );
        let parsed = parse_npy(&fortran).unwrap();
        assert_eq!(parsed.shape, vec![2, 3]);
        assert_eq!(
            parsed.data,
            NpyData::F32(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
        );
        // 3-D: element (i, j, k) sits at i + 2j + 4k in the file.
        let bytes: Vec<u8> = (0..8u8).collect();
        let cube = with_header(
            "{'descr': '|u1', 'fortran_order': True, 'shape': (2, 2, 2), }",
            &bytes,
        );
        assert_eq!(
            parse_npy(&cube).unwrap().data,
            NpyData::U8(vec![0, 4, 2, 6, 1, 5, 3, 7])
        );
    }

    #[test]
    fn typed_errors_for_bad_files() {
        assert_eq!(
            parse_npy(b"PK\x03\x04 not numpy"),
            Err(NpyFormatError::BadMagic)
        );
        assert!(matches!(
            parse_npy(b"\x93NUM"),
            Err(NpyFormatError::Truncated {
                part: "preamble",
                ..
            })
        ));
        let mut v9 = encode_npy_f32(&[1], &[1.0]).unwrap();
        v9[6] = 9;
        assert_eq!(
            parse_npy(&v9),
            Err(NpyFormatError::UnsupportedVersion { major: 9, minor: 0 })
        );
        let complex = with_header(
            "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }",
            &[0; 8],
        );
        assert_eq!(
            parse_npy(&complex),
            Err(NpyFormatError::UnsupportedDtype("<c8".into()))
        );
        let short = with_header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
            &[0; 7],
        );
        assert!(
            matches!(parse_npy(&short), Err(NpyFormatError::Truncated { part: "data", needed, .. }) if needed == short.len() + 1)
        );
        let long = with_header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
            &[0; 8],
        );
        assert!(matches!(
            parse_npy(&long),
            Err(NpyFormatError::SizeMismatch {
                expected: 4,
                found: 8,
                ..
            })
        ));
        let huge = with_header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }",
            &[],
        );
        assert!(matches!(
            parse_npy(&huge),
            Err(NpyFormatError::ShapeOverflow(_))
        ));
        let garbage = with_header("{'descr': '<f4', 'fortran_order': Maybe}", &[]);
        assert!(matches!(
            parse_npy(&garbage),
            Err(NpyFormatError::BadHeader(_))
        ));
        let negative = with_header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
            &[],
        );
        assert!(matches!(
            parse_npy(&negative),
            Err(NpyFormatError::BadHeader(_))
        ));
        let header_past_end = [&MAGIC[..], &[1, 0, 200, 0], b"{"].concat();
        assert!(matches!(
            parse_npy(&header_past_end),
            Err(NpyFormatError::Truncated { part: "header", .. })
        ));
    }

    #[test]
    fn every_truncation_of_a_valid_file_is_an_error_not_a_panic() {
        let bytes = encode_npy_f32(&[2, 3], &[1.0; 6]).unwrap();
        for cut in 0..bytes.len() {
            assert!(parse_npy(&bytes[..cut]).is_err(), "cut at {cut} parsed");
        }
    }

    #[test]
    fn encode_rejects_length_mismatch() {
        assert!(matches!(
            encode_npy_f32(&[2, 2], &[0.0; 3]),
            Err(NpyFormatError::DataLengthMismatch {
                expected: 4,
                found: 3,
                ..
            })
        ));
    }
}
