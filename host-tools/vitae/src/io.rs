//! File helpers shared by every reader and writer of the tool.
//!
//! Errors always name the path, because the CLI prints the first error line as the one cause a
//! user sees. Writes are atomic so that a failed or interrupted run never leaves a half-written
//! output (or a clobbered previous result) behind for the next pipeline step to pick up.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What an input file holds; each kind has its own size ceiling, checked before anything is
/// read (a checkpoint cannot be a terabyte by mistake, a config not a gigabyte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// A `.pth` / `.safetensors` checkpoint: at most [`InputKind::max_bytes`] = 4 GiB.
    Checkpoint,
    /// A kwargs JSON config: at most 1 MiB.
    Config,
    /// A `.npy` array (inputs, calibration data): at most 4 GiB.
    Array,
    /// A PNG/JPEG calibration image: at most 64 MiB.
    Image,
    /// A device blob: at most 256 MiB (the largest Cortex-M flash is a few MiB).
    Blob,
    /// An `.npz` dataset, streamed a chunk at a time: at most 1 TiB.
    Dataset,
}

impl InputKind {
    /// The largest file of this kind that is read.
    pub const fn max_bytes(self) -> u64 {
        match self {
            InputKind::Checkpoint | InputKind::Array => 4 << 30,
            InputKind::Config => 1 << 20,
            InputKind::Image => 64 << 20,
            InputKind::Blob => 256 << 20,
            InputKind::Dataset => 1 << 40,
        }
    }

    /// What the kind is called in messages.
    pub const fn name(self) -> &'static str {
        match self {
            InputKind::Checkpoint => "checkpoint",
            InputKind::Config => "config",
            InputKind::Array => ".npy array",
            InputKind::Image => "image",
            InputKind::Blob => "model blob",
            InputKind::Dataset => ".npz dataset",
        }
    }
}

/// Why a whole-file read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadFileError {
    /// The path does not exist.
    #[error("{}: file not found", path.display())]
    NotFound {
        /// The path that was asked for.
        path: PathBuf,
    },
    /// The path is a directory.
    #[error("{}: is a directory, expected a file", path.display())]
    IsDirectory {
        /// The path that was asked for.
        path: PathBuf,
    },
    /// The path is a device, FIFO or socket: reading it could block forever or never end.
    #[error("{}: is {what}, not a regular file", path.display())]
    NotRegular {
        /// The path that was asked for.
        path: PathBuf,
        /// What it is ("a character device", ...).
        what: &'static str,
    },
    /// The file is larger than any real file of its kind.
    #[error("{}: {size} bytes is more than the {limit}-byte limit for a {kind}", path.display())]
    TooLarge {
        /// The path that was asked for.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The ceiling.
        limit: u64,
        /// What it was read as.
        kind: &'static str,
    },
    /// The file exists but has no bytes (usually an interrupted download or copy).
    #[error("{}: file is empty", path.display())]
    Empty {
        /// The path that was asked for.
        path: PathBuf,
    },
    /// Any other OS error (permissions, I/O error).
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The path that was asked for.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// What a file system object that is not a regular file or directory is, for messages.
pub fn file_type_name(file_type: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Checks that `path` is an existing regular file of at most `kind`'s ceiling and returns its
/// size, without opening it (opening a FIFO would block).
pub fn check_input_file(path: &Path, kind: InputKind) -> Result<u64, ReadFileError> {
    let owned = || path.to_path_buf();
    let metadata = fs::metadata(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => ReadFileError::NotFound { path: owned() },
        _ => ReadFileError::Io {
            path: owned(),
            source,
        },
    })?;
    if metadata.is_dir() {
        return Err(ReadFileError::IsDirectory { path: owned() });
    }
    if !metadata.is_file() {
        return Err(ReadFileError::NotRegular {
            path: owned(),
            what: file_type_name(metadata.file_type()),
        });
    }
    let limit = kind.max_bytes();
    if metadata.len() > limit {
        return Err(ReadFileError::TooLarge {
            path: owned(),
            size: metadata.len(),
            limit,
            kind: kind.name(),
        });
    }
    if metadata.len() == 0 {
        return Err(ReadFileError::Empty { path: owned() });
    }
    Ok(metadata.len())
}

/// Opens an input file after [`check_input_file`]; also returns its size.
pub fn open_input_file(path: &Path, kind: InputKind) -> Result<(File, u64), ReadFileError> {
    let owned = || path.to_path_buf();
    check_input_file(path, kind)?;
    let file = File::open(path).map_err(|source| ReadFileError::Io {
        path: owned(),
        source,
    })?;
    // The path may have been swapped between the check and the open: check what was opened.
    let metadata = file.metadata().map_err(|source| ReadFileError::Io {
        path: owned(),
        source,
    })?;
    if !metadata.is_file() {
        return Err(ReadFileError::NotRegular {
            path: owned(),
            what: file_type_name(metadata.file_type()),
        });
    }
    if metadata.len() > kind.max_bytes() {
        return Err(ReadFileError::TooLarge {
            path: owned(),
            size: metadata.len(),
            limit: kind.max_bytes(),
            kind: kind.name(),
        });
    }
    Ok((file, metadata.len()))
}

/// Reads a whole input file: a regular file (devices and FIFOs are refused, they may never end),
/// not empty, at most `kind`'s ceiling, and never more bytes than the size it had when opened
/// (a file that grows while it is read is read up to that size, then refused).
pub fn read_file(path: &Path, kind: InputKind) -> Result<Vec<u8>, ReadFileError> {
    let owned = || path.to_path_buf();
    let (file, size) = open_input_file(path, kind)?;
    let io_error = |source| ReadFileError::Io {
        path: owned(),
        source,
    };
    let capacity = usize::try_from(size).map_err(|_| ReadFileError::TooLarge {
        path: owned(),
        size,
        limit: kind.max_bytes(),
        kind: kind.name(),
    })?;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(capacity)
        .map_err(|_| io_error(io::Error::new(io::ErrorKind::OutOfMemory, "out of memory")))?;
    file.take(size.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 != size {
        return Err(io_error(io::Error::other(format!(
            "the file changed size while it was read ({size} bytes when opened, {} read)",
            bytes.len()
        ))));
    }
    if bytes.is_empty() {
        return Err(ReadFileError::Empty { path: owned() });
    }
    Ok(bytes)
}

/// Why an atomic write failed. When this is returned, no temporary file is left behind and the
/// previous content of the destination (if any) is untouched.
#[derive(Debug, thiserror::Error)]
pub enum WriteFileError {
    /// The destination is an existing directory.
    #[error("{}: is a directory, cannot write a file there", path.display())]
    IsDirectory {
        /// The destination.
        path: PathBuf,
    },
    /// The destination's parent directory does not exist (we do not create directories
    /// silently: a typo in an output path should be an error, not a new folder).
    #[error("{}: directory {} does not exist", path.display(), dir.display())]
    NoParentDirectory {
        /// The destination.
        path: PathBuf,
        /// Its parent directory.
        dir: PathBuf,
    },
    /// The destination has no file name (e.g. `..` or `/`).
    #[error("{}: not a file path", path.display())]
    NotAFilePath {
        /// The destination.
        path: PathBuf,
    },
    /// The destination exists and is a device, FIFO or socket: renaming over it would replace
    /// the device node (as root, the system's own) with a regular file.
    #[error("{}: is {what}, not a regular file; refusing to replace it", path.display())]
    NotRegular {
        /// The destination.
        path: PathBuf,
        /// What it is.
        what: &'static str,
    },
    /// The destination is one of the inputs (same device and inode: the same path, a symbolic
    /// link or a hard link to it).
    #[error("{}: is the same file as the input {}; refusing to overwrite an input", path.display(), input.display())]
    SameAsInput {
        /// The destination.
        path: PathBuf,
        /// The input it would overwrite.
        input: PathBuf,
    },
    /// Two outputs of one command are the same file.
    #[error("{}: is the same file as the output {}; give each output its own path", path.display(), other.display())]
    SameAsOutput {
        /// The destination.
        path: PathBuf,
        /// The other output.
        other: PathBuf,
    },
    /// An OS error while creating, writing, syncing or renaming.
    #[error("{}: cannot write: {source}", path.display())]
    Io {
        /// The destination.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// Distinguishes temporary files of concurrent writers in one process (threads, tests).
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically: a temporary file in the same directory (so the final
/// rename never crosses file systems) is written, fsynced and renamed over the destination.
///
/// Readers therefore see either the old file or the complete new one. On any error the
/// temporary file is removed and an existing destination is left as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteFileError> {
    let owned = || path.to_path_buf();
    let file_name = path
        .file_name()
        .ok_or_else(|| WriteFileError::NotAFilePath { path: owned() })?;
    check_existing_output(path)?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(WriteFileError::NoParentDirectory { path: owned(), dir });
    }
    let unique = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(".tmp-{}-{unique}", std::process::id()));
    let temp_path = dir.join(temp_name);

    let result = write_and_rename(&temp_path, path, bytes);
    if result.is_err() {
        // Best effort: the temporary file may not exist if creating it was what failed.
        let _ = fs::remove_file(&temp_path);
    }
    result.map_err(|source| WriteFileError::Io {
        path: owned(),
        source,
    })?;
    // Persist the rename itself; not all file systems support syncing a directory, and the
    // data is already safe in the file, so a failure here is not worth failing the write.
    if let Ok(dir_handle) = File::open(&dir) {
        let _ = dir_handle.sync_all();
    }
    Ok(())
}

/// Refuses an existing destination that is not a regular file (a directory, device, FIFO or
/// socket, also behind a symbolic link). A missing destination is fine.
pub fn check_existing_output(path: &Path) -> Result<(), WriteFileError> {
    match fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => Err(WriteFileError::IsDirectory {
            path: path.to_path_buf(),
        }),
        Ok(metadata) if !metadata.is_file() => Err(WriteFileError::NotRegular {
            path: path.to_path_buf(),
            what: file_type_name(metadata.file_type()),
        }),
        _ => Ok(()),
    }
}

/// Device and inode of an existing path (symbolic links followed).
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The path with its parent directory resolved (symbolic links, `..`), for comparing outputs
/// that do not exist yet.
fn resolved(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    match (fs::canonicalize(dir), path.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

/// Checks a command's outputs before any work: none is the same file as an input (by device and
/// inode, so also through symbolic and hard links; a directory input counts with the files in
/// it), none is the same file as another output, and none that exists is a directory, device,
/// FIFO or socket.
pub fn check_outputs(outputs: &[&Path], inputs: &[&Path]) -> Result<(), WriteFileError> {
    let mut input_ids: Vec<((u64, u64), PathBuf)> = Vec::new();
    for &input in inputs {
        if let Some(id) = identity(input) {
            input_ids.push((id, input.to_path_buf()));
        }
        if input.is_dir()
            && let Ok(entries) = fs::read_dir(input)
        {
            for entry in entries.flatten() {
                let path = entry.path();
                if let Some(id) = identity(&path) {
                    input_ids.push((id, path));
                }
            }
        }
    }
    for (i, &output) in outputs.iter().enumerate() {
        check_existing_output(output)?;
        let id = identity(output);
        if let Some(id) = id
            && let Some((_, input)) = input_ids.iter().find(|(other, _)| *other == id)
        {
            return Err(WriteFileError::SameAsInput {
                path: output.to_path_buf(),
                input: input.clone(),
            });
        }
        for &other in &outputs[..i] {
            let same = match (id, identity(other)) {
                (Some(a), Some(b)) => a == b,
                _ => resolved(output) == resolved(other),
            };
            if same {
                return Err(WriteFileError::SameAsOutput {
                    path: output.to_path_buf(),
                    other: other.to_path_buf(),
                });
            }
        }
    }
    Ok(())
}

fn write_and_rename(temp_path: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp_path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(temp_path, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect()
    }

    #[test]
    fn write_atomic_replaces_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        write_atomic(&target, b"first").unwrap();
        write_atomic(&target, b"second").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"second");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn write_atomic_into_missing_directory_fails_without_creating_it() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("missing").join("out.bin");
        let err = write_atomic(&target, b"x").unwrap_err();
        assert!(
            matches!(err, WriteFileError::NoParentDirectory { .. }),
            "{err}"
        );
        assert!(!dir.path().join("missing").exists());
    }

    #[test]
    fn write_atomic_onto_directory_fails_and_keeps_directory() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("keep"), b"k").unwrap();
        let err = write_atomic(&target, b"x").unwrap_err();
        assert!(matches!(err, WriteFileError::IsDirectory { .. }), "{err}");
        assert_eq!(fs::read(target.join("keep")).unwrap(), b"k");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn read_file_names_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.npy");
        assert!(matches!(
            read_file(&missing, InputKind::Array),
            Err(ReadFileError::NotFound { .. })
        ));
        assert!(matches!(
            read_file(dir.path(), InputKind::Array),
            Err(ReadFileError::IsDirectory { .. })
        ));
        let empty = dir.path().join("empty.npy");
        fs::write(&empty, b"").unwrap();
        let err = read_file(&empty, InputKind::Array).unwrap_err();
        assert!(err.to_string().contains("empty.npy"), "{err}");
        assert!(matches!(err, ReadFileError::Empty { .. }));
        fs::write(&empty, b"abc").unwrap();
        assert_eq!(read_file(&empty, InputKind::Array).unwrap(), b"abc");
        let devnull = Path::new("/dev/null");
        assert!(matches!(
            read_file(devnull, InputKind::Checkpoint),
            Err(ReadFileError::NotRegular {
                what: "a character device",
                ..
            })
        ));
        let config = dir.path().join("big.json");
        fs::write(&config, vec![b' '; (1 << 20) + 1]).unwrap();
        assert!(matches!(
            read_file(&config, InputKind::Config),
            Err(ReadFileError::TooLarge { limit: 1048576, .. })
        ));
    }

    #[test]
    fn outputs_that_are_inputs_or_devices_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.bin");
        fs::write(&input, b"keep").unwrap();
        let hard = dir.path().join("hard.bin");
        fs::hard_link(&input, &hard).unwrap();
        let soft = dir.path().join("soft.bin");
        std::os::unix::fs::symlink(&input, &soft).unwrap();
        for out in [&input, &hard, &soft] {
            let err = check_outputs(&[out], &[&input]).unwrap_err();
            assert!(matches!(err, WriteFileError::SameAsInput { .. }), "{err}");
        }
        let a = dir.path().join("a.out");
        let a_again = dir.path().join(".").join("a.out");
        let err = check_outputs(&[&a, &a_again], &[&input]).unwrap_err();
        assert!(matches!(err, WriteFileError::SameAsOutput { .. }), "{err}");
        check_outputs(&[&a, &dir.path().join("b.out")], &[&input]).unwrap();
        let err = check_outputs(&[Path::new("/dev/null")], &[]).unwrap_err();
        assert!(matches!(err, WriteFileError::NotRegular { .. }), "{err}");
        let err = write_atomic(Path::new("/dev/full"), b"x").unwrap_err();
        assert!(matches!(err, WriteFileError::NotRegular { .. }), "{err}");
        assert_eq!(fs::read(&input).unwrap(), b"keep");
    }
}
