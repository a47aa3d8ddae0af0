//! NumPy `.npy` files: the exchange format for inputs, logits and intermediates between this
//! tool, the PyTorch scripts and the fixtures.
//!
//! Reading goes through the `npyz` crate, streaming: the file is never held in memory next to
//! its decoded elements. Format versions 1.0, 2.0 and 3.0, C order, `float32`, `float64`,
//! `uint8`, `int64` and `int32` in either byte order (Fortran-order files, which numpy writes for
//! non-contiguous arrays, are transposed to C order on read). Before `npyz` sees the header,
//! the preamble, the header length (at most 1 MiB), the nesting depth of the header literal and
//! the shape's element count are checked here, and the data length is checked against the
//! file's real size before any element is allocated: a header cannot make the reader allocate
//! more than the file holds, nor recurse deeply. Writes `float32`, little-endian, C order,
//! version 1.0 (2.0 only for huge headers), always through [`crate::io::write_atomic`]. Every
//! error names the file.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use crate::io::{InputKind, ReadFileError, WriteFileError, open_input_file, write_atomic};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// numpy pads the header so the data starts on a 64-byte boundary; we do the same on write.
const HEADER_ALIGN: usize = 64;
/// numpy itself refuses headers above 10 kB unless told otherwise; anything this large is not
/// a real array header but a corrupt or hostile file.
const MAX_HEADER_LEN: usize = 1 << 20;
/// numpy's header is a flat dict holding one tuple; deeper nesting is not a real header (and
/// the literal parser behind `npyz` recurses once per level).
const MAX_HEADER_NESTING: usize = 4;

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
    /// `<i4` (class labels)
    I32,
}

impl NpyDtype {
    fn size(self) -> usize {
        match self {
            NpyDtype::F32 => 4,
            NpyDtype::F64 | NpyDtype::I64 => 8,
            NpyDtype::I32 => 4,
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
            NpyDtype::I32 => "int32",
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
    /// int32 elements.
    I32(Vec<i32>),
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
            NpyData::I32(_) => NpyDtype::I32,
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
    #[error("unsupported dtype '{0}' (supported: <f4, <f8, |u1, <i8, <i4, either byte order)")]
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
    /// A Fortran-order array where one image after another must be read.
    #[error(
        "stored in Fortran (column-major) order, which cannot be read one image at a time: save np.ascontiguousarray(x) instead"
    )]
    FortranOrder,
    /// The bytes could not be read (an I/O error on a file that passed the size checks).
    #[error("cannot read: {0}")]
    Io(String),
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

/// Reads an `.npy` file of any supported dtype (a regular file of at most
/// [`InputKind::Array`]'s ceiling; the elements are streamed from the file).
pub fn read_npy(path: &Path) -> Result<NpyArray, NpyError> {
    let (mut reader, layout) = open_npy(path)?;
    let data = read_data(&mut reader, &layout, false).map_err(|e| e.at(path))?;
    Ok(NpyArray {
        shape: layout.shape,
        data,
    })
}

/// Reads an `.npy` file that must hold float32 (float64 is narrowed to f32, as PyTorch's
/// `torch.from_numpy(x).float()` would; integer arrays are refused because they are almost
/// certainly un-normalised images or labels passed by mistake).
pub fn read_npy_f32(path: &Path) -> Result<ArrayF32, NpyError> {
    let (mut reader, layout) = open_npy(path)?;
    if matches!(layout.dtype, NpyDtype::U8 | NpyDtype::I64 | NpyDtype::I32) {
        return Err(NpyError::Format {
            path: path.to_path_buf(),
            kind: NpyFormatError::WrongDtype {
                expected: "float32",
                found: layout.dtype.name(),
            },
        });
    }
    let data = match read_data(&mut reader, &layout, true).map_err(|e| e.at(path))? {
        NpyData::F32(values) => values,
        _ => unreachable!("read_data narrows float64 when asked to"),
    };
    Ok(ArrayF32 {
        shape: layout.shape,
        data,
    })
}

/// A float32 (or float64) `.npy` file whose header has been read and checked against the
/// file's size, positioned at its first element: the caller sees the shape before deciding how
/// much to read ([`NpyF32Rows::read_rows`]).
#[derive(Debug)]
pub struct NpyF32Rows {
    path: PathBuf,
    reader: std::io::BufReader<std::fs::File>,
    layout: Layout,
}

impl std::fmt::Debug for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layout")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

/// Opens a float32 `.npy` (float64 is narrowed to f32 on read) and reads its header only; see
/// [`read_npy_f32`] for what is accepted.
pub fn open_npy_f32(path: &Path) -> Result<NpyF32Rows, NpyError> {
    let (reader, layout) = open_npy(path)?;
    if matches!(layout.dtype, NpyDtype::U8 | NpyDtype::I64 | NpyDtype::I32) {
        return Err(NpyError::Format {
            path: path.to_path_buf(),
            kind: NpyFormatError::WrongDtype {
                expected: "float32",
                found: layout.dtype.name(),
            },
        });
    }
    Ok(NpyF32Rows {
        path: path.to_path_buf(),
        reader,
        layout,
    })
}

impl NpyF32Rows {
    /// The array's shape, from its header.
    pub fn shape(&self) -> &[usize] {
        &self.layout.shape
    }

    /// Whether the elements are stored in Fortran (column-major) order: then
    /// [`NpyF32Rows::read_rows`] reads the whole array, whatever it is asked for.
    pub fn is_fortran_order(&self) -> bool {
        self.layout.header.order() == npyz::Order::Fortran
    }

    /// The first `rows` rows of `row_len` elements (C order), each in its own vector, streamed
    /// from the file: nothing after them is read, nothing is held twice. A Fortran-order array
    /// is read whole and reordered first. `rows · row_len` must not exceed the array.
    pub fn read_rows(mut self, row_len: usize, rows: usize) -> Result<Vec<Vec<f32>>, NpyError> {
        let wanted = row_len.saturating_mul(rows);
        if wanted > self.layout.count || row_len == 0 {
            return Err(NpyError::Format {
                path: self.path,
                kind: NpyFormatError::BadHeader(format!(
                    "asked for {rows} rows of {row_len} elements from shape {:?}",
                    self.layout.shape
                )),
            });
        }
        if self.layout.header.order() == npyz::Order::Fortran {
            let all = match read_data(&mut self.reader, &self.layout, true)
                .map_err(|e| e.at(&self.path))?
            {
                NpyData::F32(values) => values,
                _ => unreachable!("read_data narrows float64 when asked to"),
            };
            return Ok(all
                .chunks_exact(row_len)
                .take(rows)
                .map(<[f32]>::to_vec)
                .collect());
        }
        fn stream<T: npyz::Deserialize>(
            rows_in: &mut NpyF32Rows,
            row_len: usize,
            rows: usize,
            convert: impl Fn(T) -> f32,
        ) -> Result<Vec<Vec<f32>>, DataError> {
            let file =
                npyz::NpyFile::with_header(rows_in.layout.header.clone(), &mut rows_in.reader);
            let mut elements = file
                .data::<T>()
                .map_err(|e| DataError::Format(NpyFormatError::UnsupportedDtype(e.to_string())))?;
            let mut out = Vec::with_capacity(rows);
            for _ in 0..rows {
                let mut row = Vec::new();
                row.try_reserve_exact(row_len).map_err(|_| {
                    DataError::Io(std::io::Error::new(
                        std::io::ErrorKind::OutOfMemory,
                        format!("cannot allocate {row_len} elements"),
                    ))
                })?;
                for element in elements.by_ref().take(row_len) {
                    row.push(convert(element.map_err(DataError::Io)?));
                }
                if row.len() != row_len {
                    return Err(DataError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                out.push(row);
            }
            Ok(out)
        }
        let path = self.path.clone();
        match self.layout.dtype {
            NpyDtype::F64 => stream::<f64>(&mut self, row_len, rows, |v| v as f32),
            _ => stream::<f32>(&mut self, row_len, rows, |v| v),
        }
        .map_err(|e| e.at(&path))
    }
}

/// An `.npy` array read a few rows at a time from any reader, e.g. an entry of an `.npz`
/// archive too large to hold: the header is checked against the entry's `size` (as for a file),
/// then each call reads exactly the rows asked for. C order only ([`NpyFormatError::FortranOrder`]
/// otherwise, for arrays of more than one dimension). `name` is what errors call the array.
#[derive(Debug)]
pub struct NpyRows<R> {
    name: PathBuf,
    reader: R,
    layout: Layout,
    big_endian: bool,
    /// Elements read so far.
    consumed: usize,
}

impl<R: Read> NpyRows<R> {
    /// Reads and checks the header of the array `reader` is positioned at (`size` bytes long).
    pub fn open(mut reader: R, size: u64, name: &Path) -> Result<Self, NpyError> {
        let at = |kind| NpyError::Format {
            path: name.to_path_buf(),
            kind,
        };
        let layout = read_layout(&mut reader, size).map_err(at)?;
        if layout.header.order() == npyz::Order::Fortran && layout.shape.len() > 1 {
            return Err(at(NpyFormatError::FortranOrder));
        }
        let big_endian = matches!(
            layout.header.dtype(),
            npyz::DType::Plain(ts) if ts.endianness() == npyz::Endianness::Big
        );
        Ok(NpyRows {
            name: name.to_path_buf(),
            reader,
            layout,
            big_endian,
            consumed: 0,
        })
    }

    /// The array's shape, from its header.
    pub fn shape(&self) -> &[usize] {
        &self.layout.shape
    }

    /// The element type, from its header.
    pub fn dtype(&self) -> NpyDtype {
        self.layout.dtype
    }

    /// Reads the next `count` elements as raw bytes (`count · dtype size`), or fails naming the
    /// array if that would run past its end.
    fn next_bytes(&mut self, count: usize) -> Result<Vec<u8>, NpyError> {
        let error = |kind| NpyError::Format {
            path: self.name.clone(),
            kind,
        };
        let end = self
            .consumed
            .checked_add(count)
            .filter(|&e| e <= self.layout.count);
        let Some(end) = end else {
            return Err(error(NpyFormatError::BadHeader(format!(
                "asked for {count} more elements after {} of shape {:?}",
                self.consumed, self.layout.shape
            ))));
        };
        let len = count * self.layout.dtype.size();
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(len).map_err(|_| {
            NpyError::Read(ReadFileError::Io {
                path: self.name.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::OutOfMemory,
                    format!("cannot allocate {len} bytes"),
                ),
            })
        })?;
        bytes.resize(len, 0);
        self.reader.read_exact(&mut bytes).map_err(|source| {
            NpyError::Read(ReadFileError::Io {
                path: self.name.clone(),
                source,
            })
        })?;
        self.consumed = end;
        Ok(bytes)
    }

    /// Appends the next `count` elements of a float32 (or float64, narrowed) array to `out`.
    pub fn read_f32(&mut self, count: usize, out: &mut Vec<f32>) -> Result<(), NpyError> {
        let big = self.big_endian;
        match self.layout.dtype {
            NpyDtype::F32 => {
                let bytes = self.next_bytes(count)?;
                out.extend(bytes.chunks_exact(4).map(|b| {
                    let b = [b[0], b[1], b[2], b[3]];
                    if big {
                        f32::from_be_bytes(b)
                    } else {
                        f32::from_le_bytes(b)
                    }
                }));
            }
            NpyDtype::F64 => {
                let bytes = self.next_bytes(count)?;
                out.extend(bytes.chunks_exact(8).map(|b| {
                    let b: [u8; 8] = core::array::from_fn(|i| b[i]);
                    (if big {
                        f64::from_be_bytes(b)
                    } else {
                        f64::from_le_bytes(b)
                    }) as f32
                }));
            }
            found => return Err(self.wrong_dtype("float32", found)),
        }
        Ok(())
    }

    /// Appends the next `count` elements of a uint8 array to `out`.
    pub fn read_u8(&mut self, count: usize, out: &mut Vec<u8>) -> Result<(), NpyError> {
        match self.layout.dtype {
            NpyDtype::U8 => out.extend(self.next_bytes(count)?),
            found => return Err(self.wrong_dtype("uint8", found)),
        }
        Ok(())
    }

    /// Every element of an integer array (int64, int32 or uint8), widened to i64.
    pub fn read_all_integers(mut self) -> Result<Vec<i64>, NpyError> {
        let (count, big) = (self.layout.count, self.big_endian);
        let bytes = self.next_bytes(count)?;
        Ok(match self.layout.dtype {
            NpyDtype::U8 => bytes.into_iter().map(i64::from).collect(),
            NpyDtype::I32 => bytes
                .chunks_exact(4)
                .map(|b| {
                    let b = [b[0], b[1], b[2], b[3]];
                    i64::from(if big {
                        i32::from_be_bytes(b)
                    } else {
                        i32::from_le_bytes(b)
                    })
                })
                .collect(),
            NpyDtype::I64 => bytes
                .chunks_exact(8)
                .map(|b| {
                    let b: [u8; 8] = core::array::from_fn(|i| b[i]);
                    if big {
                        i64::from_be_bytes(b)
                    } else {
                        i64::from_le_bytes(b)
                    }
                })
                .collect(),
            found => return Err(self.wrong_dtype("an integer type (int64, int32 or uint8)", found)),
        })
    }

    fn wrong_dtype(&self, expected: &'static str, found: NpyDtype) -> NpyError {
        NpyError::Format {
            path: self.name.clone(),
            kind: NpyFormatError::WrongDtype {
                expected,
                found: found.name(),
            },
        }
    }
}

/// Parses `.npy` bytes.
pub fn parse_npy(bytes: &[u8]) -> Result<NpyArray, NpyFormatError> {
    let mut reader = Cursor::new(bytes);
    let layout = read_layout(&mut reader, bytes.len() as u64)?;
    let data = read_data(&mut reader, &layout, false).map_err(|e| match e {
        DataError::Format(kind) => kind,
        // Cannot happen on bytes whose length was checked; reported as a truncation anyway.
        DataError::Io(_) => NpyFormatError::Truncated {
            part: "data",
            needed: layout.data_start + layout.data_bytes,
            available: bytes.len(),
        },
    })?;
    Ok(NpyArray {
        shape: layout.shape,
        data,
    })
}

fn open_npy(path: &Path) -> Result<(std::io::BufReader<std::fs::File>, Layout), NpyError> {
    let (file, size) = open_input_file(path, InputKind::Array)?;
    let mut reader = std::io::BufReader::new(file);
    let layout = read_layout(&mut reader, size).map_err(|e| match e {
        NpyFormatError::Io(source) => NpyError::Read(ReadFileError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(source),
        }),
        kind => NpyError::Format {
            path: path.to_path_buf(),
            kind,
        },
    })?;
    Ok((reader, layout))
}

/// What the header says, checked against the size of the file.
struct Layout {
    header: npyz::NpyHeader,
    dtype: NpyDtype,
    shape: Vec<usize>,
    count: usize,
    data_start: usize,
    data_bytes: usize,
}

/// Reads and checks the preamble and header, leaving `reader` at the first data byte.
fn read_layout(reader: &mut impl Read, total: u64) -> Result<Layout, NpyFormatError> {
    let available = usize::try_from(total).unwrap_or(usize::MAX);
    let truncated = |part, needed| NpyFormatError::Truncated {
        part,
        needed,
        available,
    };
    let io = |e: std::io::Error| NpyFormatError::Io(e.to_string());
    let mut preamble = [0u8; 12];
    let head = available.min(8);
    reader.read_exact(&mut preamble[..head]).map_err(io)?;
    if head < 8 {
        let start = &preamble[..head];
        return Err(if start.len() >= MAGIC.len() || !MAGIC.starts_with(start) {
            NpyFormatError::BadMagic
        } else {
            truncated("preamble", 8)
        });
    }
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
    if available < header_start {
        return Err(truncated("preamble", header_start));
    }
    reader
        .read_exact(&mut preamble[8..header_start])
        .map_err(io)?;
    let header_len = preamble[8..header_start]
        .iter()
        .rev()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    if header_len > MAX_HEADER_LEN {
        return Err(NpyFormatError::BadHeader(format!(
            "header length {header_len} is implausibly large"
        )));
    }
    let data_start = header_start + header_len;
    if available < data_start {
        return Err(truncated("header", data_start));
    }
    let mut header_bytes = vec![0u8; header_len];
    reader.read_exact(&mut header_bytes).map_err(io)?;
    let text = if utf8 {
        std::str::from_utf8(&header_bytes)
            .map_err(|_| NpyFormatError::BadHeader("header is not UTF-8".into()))?
    } else {
        if !header_bytes.is_ascii() {
            return Err(NpyFormatError::BadHeader("header is not ASCII".into()));
        }
        std::str::from_utf8(&header_bytes)
            .map_err(|_| NpyFormatError::BadHeader("header is not ASCII".into()))?
    };
    check_nesting(text)?;
    let shape = scan_shape(text)?;
    // npyz parses the literal (dict keys, descr, fortran_order) from the same bytes.
    let mut full = preamble[..header_start].to_vec();
    full.extend_from_slice(&header_bytes);
    let header = npyz::NpyHeader::from_reader(&full[..])
        .map_err(|e| NpyFormatError::BadHeader(e.to_string()))?;
    if header
        .shape()
        .iter()
        .map(|&d| d as usize)
        .ne(shape.iter().copied())
    {
        return Err(NpyFormatError::BadHeader(format!(
            "shape {:?} could not be read consistently",
            header.shape()
        )));
    }
    let dtype = match header.dtype() {
        npyz::DType::Plain(ts) => {
            use npyz::TypeChar;
            match (ts.type_char(), ts.size_field()) {
                (TypeChar::Float, 4) => NpyDtype::F32,
                (TypeChar::Float, 8) => NpyDtype::F64,
                (TypeChar::Uint, 1) => NpyDtype::U8,
                (TypeChar::Int, 8) => NpyDtype::I64,
                (TypeChar::Int, 4) => NpyDtype::I32,
                _ => return Err(NpyFormatError::UnsupportedDtype(ts.to_string())),
            }
        }
        other => return Err(NpyFormatError::UnsupportedDtype(other.descr())),
    };
    let count =
        checked_product(&shape).ok_or_else(|| NpyFormatError::ShapeOverflow(shape.clone()))?;
    let data_bytes = count
        .checked_mul(dtype.size())
        .ok_or_else(|| NpyFormatError::ShapeOverflow(shape.clone()))?;
    let found = available - data_start;
    if found < data_bytes {
        return Err(NpyFormatError::Truncated {
            part: "data",
            needed: data_start.saturating_add(data_bytes),
            available,
        });
    }
    if found > data_bytes {
        return Err(NpyFormatError::SizeMismatch {
            shape,
            dtype: dtype.name(),
            expected: data_bytes,
            found,
        });
    }
    Ok(Layout {
        header,
        dtype,
        shape,
        count,
        data_start,
        data_bytes,
    })
}

/// Refuses header literals nested deeper than [`MAX_HEADER_NESTING`] (outside quotes).
fn check_nesting(text: &str) -> Result<(), NpyFormatError> {
    let (mut depth, mut quote) = (0usize, None::<char>);
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(' | '[' | '{') => {
                depth += 1;
                if depth > MAX_HEADER_NESTING {
                    return Err(NpyFormatError::BadHeader(format!(
                        "the header literal is nested more than {MAX_HEADER_NESTING} levels deep"
                    )));
                }
            }
            (None, ')' | ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The `'shape': (..)` tuple of the header, read before `npyz` is given the header so that an
/// element count that overflows is an error here rather than an overflow there.
fn scan_shape(text: &str) -> Result<Vec<usize>, NpyFormatError> {
    let bad = |m: &str| NpyFormatError::BadHeader(m.to_string());
    let key = ["'shape'", "\"shape\""]
        .iter()
        .find_map(|k| text.find(k).map(|i| i + k.len()))
        .ok_or_else(|| bad("missing key 'shape'"))?;
    let rest = text[key..].trim_start();
    let rest = rest
        .strip_prefix(':')
        .map(str::trim_start)
        .and_then(|r| r.strip_prefix('('))
        .ok_or_else(|| bad("'shape' must be a tuple of dimensions"))?;
    let end = rest
        .find(')')
        .ok_or_else(|| bad("unterminated 'shape' tuple"))?;
    let mut shape = Vec::new();
    let items: Vec<&str> = rest[..end].split(',').map(str::trim).collect();
    for (i, item) in items.iter().enumerate() {
        if item.is_empty() && i + 1 == items.len() && i > 0 {
            break; // the trailing comma of `(5,)`
        }
        if item.is_empty() && items.len() == 1 {
            break; // `()`: a scalar
        }
        if !item.bytes().all(|b| b.is_ascii_digit()) || item.is_empty() {
            return Err(bad(&format!(
                "shape entry '{item}' is not a non-negative dimension"
            )));
        }
        match item.parse::<usize>() {
            Ok(d) => shape.push(d),
            Err(_) => return Err(NpyFormatError::ShapeOverflow(shape)),
        }
    }
    if checked_product(&shape).is_none() {
        return Err(NpyFormatError::ShapeOverflow(shape));
    }
    Ok(shape)
}

/// A failure while streaming the elements.
enum DataError {
    Format(NpyFormatError),
    Io(std::io::Error),
}

impl DataError {
    fn at(self, path: &Path) -> NpyError {
        match self {
            DataError::Format(kind) => NpyError::Format {
                path: path.to_path_buf(),
                kind,
            },
            DataError::Io(source) => NpyError::Read(ReadFileError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

/// Streams the `layout.count` elements into memory (reserved up front, fallibly), transposing
/// Fortran order; float64 becomes float32 on the fly when `narrow` is set.
fn read_data(reader: &mut impl Read, layout: &Layout, narrow: bool) -> Result<NpyData, DataError> {
    fn collect<T: npyz::Deserialize, U: Copy>(
        reader: &mut impl Read,
        layout: &Layout,
        convert: impl Fn(T) -> U,
    ) -> Result<Vec<U>, DataError> {
        let mut out = Vec::new();
        out.try_reserve_exact(layout.count).map_err(|_| {
            DataError::Io(std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("cannot allocate {} elements", layout.count),
            ))
        })?;
        let file = npyz::NpyFile::with_header(layout.header.clone(), reader);
        let elements = file
            .data::<T>()
            .map_err(|e| DataError::Format(NpyFormatError::UnsupportedDtype(e.to_string())))?;
        for element in elements.take(layout.count) {
            out.push(convert(element.map_err(DataError::Io)?));
        }
        if layout.header.order() == npyz::Order::Fortran {
            out = fortran_to_c(&out, &layout.shape);
        }
        Ok(out)
    }
    Ok(match layout.dtype {
        NpyDtype::F32 => NpyData::F32(collect::<f32, f32>(reader, layout, |v| v)?),
        NpyDtype::F64 if narrow => NpyData::F32(collect::<f64, f32>(reader, layout, |v| v as f32)?),
        NpyDtype::F64 => NpyData::F64(collect::<f64, f64>(reader, layout, |v| v)?),
        NpyDtype::U8 => NpyData::U8(collect::<u8, u8>(reader, layout, |v| v)?),
        NpyDtype::I64 => NpyData::I64(collect::<i64, i64>(reader, layout, |v| v)?),
        NpyDtype::I32 => NpyData::I32(collect::<i32, i32>(reader, layout, |v| v)?),
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

/// `shape.iter().product()` without overflow.
pub(crate) fn checked_product(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Serialises a float32 array to `.npy` bytes (little-endian, C order).
pub fn encode_npy_f32(shape: &[usize], data: &[f32]) -> Result<Vec<u8>, NpyFormatError> {
    encode_npy(shape, "<f4", data, |v| v.to_le_bytes())
}

/// Serialises an int64 array to `.npy` bytes (little-endian, C order): class labels.
pub fn encode_npy_i64(shape: &[usize], data: &[i64]) -> Result<Vec<u8>, NpyFormatError> {
    encode_npy(shape, "<i8", data, |v| v.to_le_bytes())
}

/// Serialises a uint8 array to `.npy` bytes (C order): pixels.
pub fn encode_npy_u8(shape: &[usize], data: &[u8]) -> Result<Vec<u8>, NpyFormatError> {
    encode_npy(shape, "|u1", data, |v| [v])
}

fn encode_npy<T: Copy, const N: usize>(
    shape: &[usize],
    descr: &str,
    data: &[T],
    bytes: impl Fn(T) -> [u8; N],
) -> Result<Vec<u8>, NpyFormatError> {
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
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
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
    let mut out = Vec::with_capacity(preamble_len + header.len() + data.len() * N);
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
    for &value in data {
        out.extend_from_slice(&bytes(value));
    }
    Ok(out)
}

/// Writes an `.npz` (an uncompressed zip of `.npy` members, as `np.savez` makes) atomically:
/// `members` are (array name without `.npy`, `.npy` bytes).
pub fn write_npz(path: &Path, members: &[(&str, Vec<u8>)]) -> Result<(), NpyError> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(
            members
                .iter()
                .any(|(_, b)| b.len() as u64 >= u64::from(u32::MAX)),
        );
    let failed = |e: &dyn std::fmt::Display| {
        NpyError::Write(WriteFileError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })
    };
    for (name, bytes) in members {
        zip.start_file(format!("{name}.npy"), options)
            .map_err(|e| failed(&e))?;
        std::io::Write::write_all(&mut zip, bytes).map_err(|e| failed(&e))?;
    }
    let bytes = zip.finish().map_err(|e| failed(&e))?.into_inner();
    write_atomic(path, &bytes)?;
    Ok(())
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
