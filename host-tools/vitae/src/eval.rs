//! Accuracy over a labelled dataset (`vitae eval`): images streamed a chunk at a time from an
//! ImageFolder tree or an `.npz` (`x`, `y`), through any number of engines, scored as top-1 and
//! top-5 against the labels, top-1 agreement with a reference engine, and per class.
//!
//! Memory is bounded by one chunk of images whatever the dataset's size: a folder is listed
//! (paths only) and decoded a chunk at a time; an `.npz` member is read a chunk at a time from
//! the archive (stored or deflated), its labels (one integer per image) in full.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::calib_data::{self, CalibDataError, ImagePrep};
use crate::io::{InputKind, ReadFileError, check_input_file};
use crate::npy::{NpyDtype, NpyError, NpyRows};

/// Most images a dataset may hold (labels are read whole: 8 bytes each at most).
pub const MAX_IMAGES: usize = 50_000_000;
/// Deepest folder nesting followed inside one class folder.
pub const MAX_FOLDER_DEPTH: usize = 16;
/// Most bytes of f32 images one chunk holds (the chunk's image count is derived from it).
pub const CHUNK_BYTES: usize = 64 << 20;

/// Why a dataset cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// Neither a folder nor a readable `.npz`.
    #[error("{}: not a zip archive (.npz): {reason}; --data takes an ImageFolder directory (one subfolder per class) or an .npz with arrays x and y", path.display())]
    NotNpz {
        /// The path given.
        path: PathBuf,
        /// The zip reader's message.
        reason: String,
    },
    /// An `.npz` without `x` or `y`.
    #[error("{}: has no array '{name}' (it holds: {found}); save it with np.savez(path, x=images, y=labels)", path.display())]
    MissingArray {
        /// The archive.
        path: PathBuf,
        /// `x` or `y`.
        name: &'static str,
        /// The members it does hold.
        found: String,
    },
    /// `x` or `y` of the wrong shape.
    #[error("{}: {what}", path.display())]
    Shape {
        /// The archive member (`data.npz/x.npy`).
        path: PathBuf,
        /// What is wrong and what was expected.
        what: String,
    },
    /// A label outside the model's classes.
    #[error("{}: label {label} of image {index} is not a class of the model (0..{classes})", path.display())]
    Label {
        /// The archive member.
        path: PathBuf,
        /// Image index.
        index: usize,
        /// The label.
        label: i64,
        /// The model's class count.
        classes: usize,
    },
    /// A non-finite input value.
    #[error("{}: value {index} of x is {value} (not finite)", path.display())]
    NotFinite {
        /// The archive member.
        path: PathBuf,
        /// Element index (C order).
        index: usize,
        /// The value.
        value: f32,
    },
    /// An ImageFolder with more class folders than the model has classes.
    #[error("{}: {folders} class folders, but the model has {classes} classes (folder i, in name order, is class i)", path.display())]
    TooManyClasses {
        /// The root.
        path: PathBuf,
        /// Class folders found.
        folders: usize,
        /// The model's classes.
        classes: usize,
    },
    /// No images at all.
    #[error("{}: {what}", path.display())]
    Empty {
        /// The path.
        path: PathBuf,
        /// What was looked for.
        what: String,
    },
    /// More images than [`MAX_IMAGES`].
    #[error("{}: {count} images are more than the {MAX_IMAGES} this tool evaluates in one run", path.display())]
    TooMany {
        /// The path.
        path: PathBuf,
        /// The count claimed.
        count: usize,
    },
    /// A folder could not be listed.
    #[error("{}: cannot list folder: {source}", path.display())]
    List {
        /// The folder.
        path: PathBuf,
        /// The OS's reason.
        source: std::io::Error,
    },
    /// An array member could not be read.
    #[error(transparent)]
    Npy(#[from] NpyError),
    /// An image could not be loaded.
    #[error(transparent)]
    Image(#[from] CalibDataError),
    /// The path itself.
    #[error(transparent)]
    Read(#[from] ReadFileError),
}

/// What every engine of one evaluation takes.
#[derive(Clone, Debug)]
pub struct ModelShape {
    /// Input channels.
    pub channels: usize,
    /// Input height and width.
    pub size: usize,
    /// Output classes.
    pub classes: usize,
}

/// One chunk of labelled images: normalized f32 CHW images, u8 HWC pixels, or both.
#[derive(Debug, Default)]
pub struct Chunk {
    /// One class index per image.
    pub labels: Vec<usize>,
    /// Normalized images, N × C × H × W (what f32-input engines take).
    pub images: Option<Vec<f32>>,
    /// Pixels, N × H × W × C (what `--input u8` blobs take).
    pub pixels: Option<Vec<u8>>,
}

/// A labelled dataset, listed or opened but not yet read.
#[derive(Debug)]
pub enum Dataset {
    /// An ImageFolder tree: `root/<class>/**/<image>.{png,jpg,jpeg}`.
    Folder {
        /// The root.
        root: PathBuf,
        /// Class folder names, in name order (folder `i` is class `i`).
        classes: Vec<String>,
        /// Every image and its class, class by class, in name order within each.
        files: Vec<(PathBuf, usize)>,
        /// Files skipped for their extension.
        skipped: usize,
    },
    /// An `.npz` with `x` (N, C, H, W float32, or N, H, W, C uint8) and `y` (N integers).
    Npz {
        /// The archive.
        path: PathBuf,
        /// The labels.
        labels: Vec<usize>,
        /// `x` holds u8 HWC pixels (else normalized f32 NCHW).
        pixels: bool,
    },
}

impl Dataset {
    /// Lists a folder or opens an `.npz` and reads its labels, checking every shape and label
    /// against `shape` before any image is read.
    pub fn open(path: &Path, shape: &ModelShape) -> Result<Dataset, DatasetError> {
        if path.is_dir() {
            list_folder(path, shape)
        } else {
            open_npz(path, shape)
        }
    }

    /// Images in the dataset.
    pub fn len(&self) -> usize {
        match self {
            Dataset::Folder { files, .. } => files.len(),
            Dataset::Npz { labels, .. } => labels.len(),
        }
    }

    /// No images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The class names (folder names; for an `.npz`, the class indices).
    pub fn class_names(&self, classes: usize) -> Vec<String> {
        match self {
            Dataset::Folder { classes: names, .. } => (0..classes)
                .map(|i| names.get(i).cloned().unwrap_or_else(|| i.to_string()))
                .collect(),
            Dataset::Npz { .. } => (0..classes).map(|i| i.to_string()).collect(),
        }
    }

    /// Whether the images come as u8 pixels (an ImageFolder, or an `.npz` of uint8 `x`) that
    /// `--input u8` blobs can take.
    pub fn has_pixels(&self) -> bool {
        match self {
            Dataset::Folder { .. } => true,
            Dataset::Npz { pixels, .. } => *pixels,
        }
    }

    /// Reads the first `limit` images in chunks of at most `chunk` and hands each to `f`:
    /// with `normalized` f32 images (pixels normalized with `prep`), with `pixels` the u8
    /// pixels too when the dataset has them.
    pub fn for_each_chunk<E: From<DatasetError>>(
        &self,
        prep: &ImagePrep,
        limit: usize,
        chunk: usize,
        (normalized, pixels): (bool, bool),
        mut f: impl FnMut(Chunk) -> Result<(), E>,
    ) -> Result<(), E> {
        let total = limit.min(self.len());
        let chunk = chunk.max(1);
        match self {
            Dataset::Folder { files, .. } => {
                for part in files[..total].chunks(chunk) {
                    let decoded: Vec<Vec<u8>> = part
                        .par_iter()
                        .map(|(file, _)| calib_data::load_pixels(file, prep))
                        .collect::<Result<_, _>>()
                        .map_err(|e| E::from(e.into()))?;
                    let images = normalized.then(|| {
                        decoded
                            .iter()
                            .flat_map(|p| calib_data::normalize(p, prep))
                            .collect()
                    });
                    f(Chunk {
                        labels: part.iter().map(|(_, class)| *class).collect(),
                        images,
                        pixels: pixels.then(|| decoded.concat()),
                    })?;
                }
            }
            Dataset::Npz {
                path,
                labels,
                pixels: has_pixels,
            } => {
                let (mut archive, _) = open_archive(path).map_err(E::from)?;
                let member = path.join("x.npy");
                let mut x = archive.by_name("x.npy").map_err(|_| {
                    E::from(DatasetError::Empty {
                        path: member.clone(),
                        what: "could not be opened again".into(),
                    })
                })?;
                let size = x.size();
                let mut rows =
                    NpyRows::open(&mut x, size, &member).map_err(|e| E::from(e.into()))?;
                let per = prep.channels * prep.size * prep.size;
                let mut done = 0;
                while done < total {
                    let n = chunk.min(total - done);
                    let labels = labels[done..done + n].to_vec();
                    let next = if *has_pixels {
                        let mut px = Vec::with_capacity(n * per);
                        rows.read_u8(n * per, &mut px)
                            .map_err(|e| E::from(e.into()))?;
                        Chunk {
                            labels,
                            images: normalized.then(|| {
                                px.chunks_exact(per)
                                    .flat_map(|p| calib_data::normalize(p, prep))
                                    .collect()
                            }),
                            pixels: pixels.then_some(px),
                        }
                    } else {
                        let mut images = Vec::with_capacity(n * per);
                        rows.read_f32(n * per, &mut images)
                            .map_err(|e| E::from(e.into()))?;
                        if let Some(i) = images.iter().position(|v| !v.is_finite()) {
                            return Err(E::from(DatasetError::NotFinite {
                                path: member,
                                index: done * per + i,
                                value: images[i],
                            }));
                        }
                        Chunk {
                            labels,
                            images: Some(images),
                            pixels: None,
                        }
                    };
                    f(next)?;
                    done += n;
                }
            }
        }
        Ok(())
    }
}

/// Sorted entries of one folder.
fn sorted_entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>, DatasetError> {
    let list = |source| DatasetError::List {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(list)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(list)?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

/// The images under one class folder, depth first in name order. Symbolic links to folders
/// are not followed (a link cycle cannot make the walk endless); links to files are.
fn walk_class(
    dir: &Path,
    class: usize,
    depth: usize,
    files: &mut Vec<(PathBuf, usize)>,
    skipped: &mut usize,
) -> Result<(), DatasetError> {
    for entry in sorted_entries(dir)? {
        let path = entry.path();
        let kind = entry.file_type().map_err(|source| DatasetError::List {
            path: path.clone(),
            source,
        })?;
        if kind.is_dir() {
            if depth < MAX_FOLDER_DEPTH {
                walk_class(&path, class, depth + 1, files, skipped)?;
            }
        } else if calib_data::is_image_file(&path) && !(kind.is_symlink() && path.is_dir()) {
            if files.len() >= MAX_IMAGES {
                return Err(DatasetError::TooMany {
                    path: dir.to_path_buf(),
                    count: files.len() + 1,
                });
            }
            files.push((path, class));
        } else if !kind.is_symlink() || !path.is_dir() {
            *skipped += 1;
        }
    }
    Ok(())
}

fn list_folder(root: &Path, shape: &ModelShape) -> Result<Dataset, DatasetError> {
    let mut classes = Vec::new();
    let mut class_dirs = Vec::new();
    for entry in sorted_entries(root)? {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            classes.push(entry.file_name().to_string_lossy().into_owned());
            class_dirs.push(entry.path());
        }
    }
    if classes.is_empty() {
        return Err(DatasetError::Empty {
            path: root.to_path_buf(),
            what: "has no class folders (ImageFolder layout: one subfolder of PNG/JPEG images per class, in class order by name)".into(),
        });
    }
    if classes.len() > shape.classes {
        return Err(DatasetError::TooManyClasses {
            path: root.to_path_buf(),
            folders: classes.len(),
            classes: shape.classes,
        });
    }
    let (mut files, mut skipped) = (Vec::new(), 0);
    for (class, dir) in class_dirs.iter().enumerate() {
        walk_class(dir, class, 0, &mut files, &mut skipped)?;
    }
    if files.is_empty() {
        return Err(DatasetError::Empty {
            path: root.to_path_buf(),
            what: format!(
                "its {} class folders hold no .png, .jpg or .jpeg files",
                classes.len()
            ),
        });
    }
    Ok(Dataset::Folder {
        root: root.to_path_buf(),
        classes,
        files,
        skipped,
    })
}

fn open_archive(path: &Path) -> Result<(zip::ZipArchive<BufReader<File>>, u64), DatasetError> {
    let size = check_input_file(path, InputKind::Dataset)?;
    let file = File::open(path).map_err(|source| ReadFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let archive = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| DatasetError::NotNpz {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok((archive, size))
}

fn open_npz(path: &Path, shape: &ModelShape) -> Result<Dataset, DatasetError> {
    let (mut archive, _) = open_archive(path)?;
    let members = || {
        let names: Vec<String> = archive
            .file_names()
            .take(20)
            .map(|n| crate::text::escape(n).into_owned())
            .collect();
        if names.is_empty() {
            "nothing".to_string()
        } else {
            names.join(", ")
        }
    };
    let found = members();
    let x_name = path.join("x.npy");
    let (n, pixels) = {
        let Ok(mut x) = archive.by_name("x.npy") else {
            return Err(DatasetError::MissingArray {
                path: path.to_path_buf(),
                name: "x",
                found,
            });
        };
        let size = x.size();
        let rows = NpyRows::open(&mut x, size, &x_name)?;
        let (c, s) = (shape.channels, shape.size);
        match (rows.dtype(), rows.shape()) {
            (NpyDtype::U8, [n, h, w, ch]) if (*h, *w, *ch) == (s, s, c) => (*n, true),
            (NpyDtype::F32 | NpyDtype::F64, [n, ch, h, w]) if (*ch, *h, *w) == (c, s, s) => {
                (*n, false)
            }
            (dtype, dims) => {
                return Err(DatasetError::Shape {
                    path: x_name,
                    what: format!(
                        "x is {} of shape {dims:?}; the model takes float32 (N, {c}, {s}, {s}) normalized images or uint8 (N, {s}, {s}, {c}) pixels",
                        dtype.name()
                    ),
                });
            }
        }
    };
    if n == 0 {
        return Err(DatasetError::Empty {
            path: x_name,
            what: "x holds no images (N = 0)".into(),
        });
    }
    if n > MAX_IMAGES {
        return Err(DatasetError::TooMany {
            path: x_name,
            count: n,
        });
    }
    let y_name = path.join("y.npy");
    let Ok(mut y) = archive.by_name("y.npy") else {
        return Err(DatasetError::MissingArray {
            path: path.to_path_buf(),
            name: "y",
            found,
        });
    };
    let size = y.size();
    let rows = NpyRows::open(&mut y, size, &y_name)?;
    if rows.shape() != [n] {
        return Err(DatasetError::Shape {
            path: y_name,
            what: format!(
                "y has shape {:?}; expected ({n},), one class index per image of x",
                rows.shape()
            ),
        });
    }
    let raw = rows.read_all_integers()?;
    let mut labels = Vec::with_capacity(n);
    for (index, &label) in raw.iter().enumerate() {
        match usize::try_from(label) {
            Ok(class) if class < shape.classes => labels.push(class),
            _ => {
                return Err(DatasetError::Label {
                    path: y_name,
                    index,
                    label,
                    classes: shape.classes,
                });
            }
        }
    }
    Ok(Dataset::Npz {
        path: path.to_path_buf(),
        labels,
        pixels,
    })
}

/// Where the correct class ranks in one row of logits: the number of classes ahead of it,
/// a larger logit or an equal one at a lower index (so rank 0 is the argmax that takes the first
/// of equal maxima, as `vitae run` and the firmware's top-k do).
pub fn rank_of(row: &[f32], class: usize) -> usize {
    let v = row[class];
    row.iter()
        .enumerate()
        .filter(|&(j, &u)| u > v || (u == v && j < class))
        .count()
}

/// The first index of the largest logit.
pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |best, (i, v)| if *v > row[best] { i } else { best })
}

/// One engine's tally.
#[derive(Clone, Debug)]
pub struct Score {
    /// Images whose label ranks first.
    pub top1: usize,
    /// Images whose label ranks in the first five (the first `classes` when fewer).
    pub top5: usize,
    /// Images whose top-1 equals the reference engine's.
    pub agree: usize,
    /// Per class: images whose label ranks first.
    pub class_top1: Vec<usize>,
    /// Seconds spent in the engine.
    pub seconds: f64,
}

impl Score {
    /// An empty tally over `classes` classes.
    pub fn new(classes: usize) -> Self {
        Score {
            top1: 0,
            top5: 0,
            agree: 0,
            class_top1: vec![0; classes],
            seconds: 0.0,
        }
    }

    /// Adds a chunk's logits (`labels.len() × classes`); `reference_top1` holds the reference
    /// engine's top-1 per image when there is one.
    pub fn add(&mut self, logits: &[f32], labels: &[usize], reference_top1: Option<&[usize]>) {
        let classes = self.class_top1.len();
        for (i, (row, &label)) in logits.chunks_exact(classes).zip(labels).enumerate() {
            let rank = rank_of(row, label);
            if rank == 0 {
                self.top1 += 1;
                self.class_top1[label] += 1;
            }
            if rank < 5 {
                self.top5 += 1;
            }
            if reference_top1.is_some_and(|r| r[i] == argmax(row)) {
                self.agree += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_counts_larger_and_earlier_equal_logits() {
        let row = [0.5, 2.0, 2.0, -1.0, 0.5, 3.0];
        assert_eq!(rank_of(&row, 5), 0);
        assert_eq!(rank_of(&row, 1), 1);
        assert_eq!(rank_of(&row, 2), 2);
        assert_eq!(rank_of(&row, 0), 3);
        assert_eq!(rank_of(&row, 4), 4);
        assert_eq!(rank_of(&row, 3), 5);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(rank_of(&[1.0, 3.0, 3.0], argmax(&[1.0, 3.0, 3.0])), 0);
    }

    #[test]
    fn score_counts_top1_top5_agreement_and_classes() {
        let mut score = Score::new(6);
        let logits = [
            0.0, 1.0, 0.0, 0.0, 0.0, 0.0, // label 1: top-1
            6.0, 5.0, 4.0, 3.0, 2.0, 1.0, // label 4: rank 4, in the top-5
            6.0, 5.0, 4.0, 3.0, 2.0, 1.0, // label 5: rank 5, not
        ];
        score.add(&logits, &[1, 4, 5], Some(&[1, 1, 0]));
        assert_eq!((score.top1, score.top5, score.agree), (1, 2, 2));
        assert_eq!(score.class_top1, vec![0, 1, 0, 0, 0, 0]);
    }
}
