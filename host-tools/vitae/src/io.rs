//! File helpers shared by every reader and writer of the tool.
//!
//! Errors always name the path, because the CLI prints the first error line as the one cause a
//! user sees. Writes are atomic so that a failed or interrupted run never leaves a half-written
//! output (or a clobbered previous result) behind for the next pipeline step to pick up.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Reads a whole file, refusing directories and empty files with an error that names the path.
pub fn read_file(path: &Path) -> Result<Vec<u8>, ReadFileError> {
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
    let bytes = fs::read(path).map_err(|source| ReadFileError::Io {
        path: owned(),
        source,
    })?;
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
    if path.is_dir() {
        return Err(WriteFileError::IsDirectory { path: owned() });
    }
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
            read_file(&missing),
            Err(ReadFileError::NotFound { .. })
        ));
        assert!(matches!(
            read_file(dir.path()),
            Err(ReadFileError::IsDirectory { .. })
        ));
        let empty = dir.path().join("empty.npy");
        fs::write(&empty, b"").unwrap();
        let err = read_file(&empty).unwrap_err();
        assert!(err.to_string().contains("empty.npy"), "{err}");
        assert!(matches!(err, ReadFileError::Empty { .. }));
        fs::write(&empty, b"abc").unwrap();
        assert_eq!(read_file(&empty).unwrap(), b"abc");
    }
}
