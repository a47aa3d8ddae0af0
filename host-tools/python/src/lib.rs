//! `vitae_edge._native`: the `vitae` host tool's library behind a small Python surface.
//!
//! Arrays cross as `bytes` plus a shape and a dtype name (the Python wrapper,
//! `vitae_edge/__init__.py`, makes them C-contiguous native-endian float32 or uint8 first), so
//! the module needs no numpy headers and no rust-numpy version. Every long step (checkpoint
//! loading, quantization, inference) runs with the interpreter released (`Python::detach`).
//! Errors are raised as `vitae_edge.VitaeError` (a `ValueError`) with the text `vitae` prints
//! after `error: ` ([`vitae::text::report_lines`]).

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use clap::ValueEnum;
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use vitae::calib_data::{self, ImagePrep};
use vitae::config::{ModelConfig, PRESETS};
use vitae::engine;
use vitae::quantize::{CalibMethod, ImageInput, NoProgress, Options, Precision};
use vitae::reference::{NoObserver, ReferenceModel};
use vitae_edge::format::{AlignedBytes, Model};
use vitae_edge::runtime::ImageLayout;

create_exception!(
    vitae_edge,
    VitaeError,
    PyValueError,
    "Bad input to vitae_edge (a file, an array, a blob or an argument); the message is the one the `vitae` command prints."
);

/// A Python exception carrying `error`'s report, as `vitae` prints it after `error: `.
fn raise(error: &(dyn std::error::Error + 'static)) -> PyErr {
    let lines = vitae::text::report_lines(std::iter::successors(Some(error), |e| e.source()));
    VitaeError::new_err(lines.join("\n"))
}

fn raise_message(message: String) -> PyErr {
    VitaeError::new_err(message)
}

/// Name the input argument has in messages (where `vitae` names the file).
const INPUT: &str = "x";

/// `values` (native-endian f32, as numpy lays them out) as f32.
fn f32_values(bytes: &[u8]) -> Result<Vec<f32>, PyErr> {
    if !bytes.len().is_multiple_of(4) {
        return Err(raise_message(format!(
            "{INPUT}: {} bytes are not a whole number of float32 values",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Logits as native-endian bytes for `numpy.frombuffer`.
fn logits_bytes<'py>(py: Python<'py>, logits: &[f32]) -> Bound<'py, PyBytes> {
    let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_ne_bytes()).collect();
    PyBytes::new(py, &bytes)
}

/// The dtype a model's input must have, checked against the one given.
fn check_dtype(
    dtype: &str,
    expected: &str,
    layout: ImageLayout,
    chw: (usize, usize, usize),
) -> PyResult<()> {
    if dtype == expected {
        return Ok(());
    }
    let (c, h, w) = chw;
    Err(raise_message(if layout == ImageLayout::U8Hwc {
        format!(
            "{INPUT}: the model takes u8 pixels (it was quantized with --input u8): expected a uint8 array of shape (N, {h}, {w}, {c}), got {dtype}"
        )
    } else {
        format!("{INPUT}: dtype is {dtype}, expected float32")
    }))
}

/// The architecture: a kwargs JSON file or a preset name, exactly one.
fn load_config(config: Option<PathBuf>, arch: Option<String>) -> Result<ModelConfig, PyErr> {
    match (config, arch) {
        (Some(path), None) => ModelConfig::from_kwargs_file(&path).map_err(|e| raise(&e)),
        (None, Some(name)) => ModelConfig::preset(&name).map_err(|e| raise(&e)),
        (Some(_), Some(_)) => Err(raise_message(
            "give the architecture once: config=KWARGS.json or arch=NAME, not both".into(),
        )),
        (None, None) => Err(raise_message(format!(
            "the checkpoint needs its architecture: config=KWARGS.json or arch=NAME ({})",
            PRESETS.join(", ")
        ))),
    }
}

/// Loads `checkpoint` and checks it against the architecture (every mismatch listed).
fn load_reference(
    checkpoint: &Path,
    config: Option<PathBuf>,
    arch: Option<String>,
) -> Result<ReferenceModel, PyErr> {
    let config = load_config(config, arch)?;
    let weights = vitae::checkpoint::load_checkpoint(checkpoint).map_err(|e| raise(&e))?;
    ReferenceModel::new(config, &weights).map_err(|e| raise(&e))
}

/// A value of a clap enum of `vitae quantize` by its command-line name.
fn choice<T: ValueEnum>(what: &str, name: &str) -> PyResult<T> {
    T::from_str(name, false).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        raise_message(format!(
            "{what} '{}': expected one of {}",
            vitae::text::escape(name),
            names.join(", ")
        ))
    })
}

/// The device engine over one blob (the firmware's kernels, bit for bit).
#[pyclass(name = "Engine", module = "vitae_edge._native", frozen)]
#[derive(Debug)]
struct PyEngine {
    engine: Mutex<engine::Engine>,
    layout: ImageLayout,
    chw: (usize, usize, usize),
    classes: usize,
}

#[pymethods]
impl PyEngine {
    #[new]
    #[pyo3(signature = (blob, threads = None))]
    fn new(py: Python<'_>, blob: &[u8], threads: Option<usize>) -> PyResult<Self> {
        let mut engine = py
            .detach(|| engine::Engine::new(blob))
            .map_err(|e| raise(&e))?;
        if let Some(t) = threads {
            check_threads(t)?;
            engine.set_threads(t);
        }
        let (layout, meta) = {
            let model = engine.model();
            (model.image_layout(), *model.meta())
        };
        Ok(PyEngine {
            engine: Mutex::new(engine),
            layout,
            chw: (
                meta.input_channels as usize,
                meta.input_height as usize,
                meta.input_width as usize,
            ),
            classes: meta.num_classes as usize,
        })
    }

    /// `"f32"` (NCHW images) or `"u8"` (HWC pixels).
    #[getter]
    fn input_dtype(&self) -> &'static str {
        match self.layout {
            ImageLayout::U8Hwc => "u8",
            _ => "f32",
        }
    }

    /// (C, H, W) of one image.
    #[getter]
    fn input_chw(&self) -> (usize, usize, usize) {
        self.chw
    }

    /// Logits per image.
    #[getter]
    fn classes(&self) -> usize {
        self.classes
    }

    /// Worker threads a batch uses.
    #[getter]
    fn threads(&self) -> usize {
        self.lock().threads()
    }

    #[setter]
    fn set_threads(&self, threads: usize) -> PyResult<()> {
        check_threads(threads)?;
        self.lock().set_threads(threads);
        Ok(())
    }

    /// Logits (native-endian f32 bytes, N × classes) and N for the images in `data`.
    fn run<'py>(
        &self,
        py: Python<'py>,
        dtype: &str,
        shape: Vec<usize>,
        data: &[u8],
    ) -> PyResult<(Bound<'py, PyBytes>, usize)> {
        let chw = self.chw;
        let (logits, batch) = if self.layout == ImageLayout::U8Hwc {
            check_dtype(dtype, "uint8", self.layout, chw)?;
            let batch = engine::u8_batch(INPUT, &shape, chw).map_err(|e| raise(&e))?;
            let logits = py
                .detach(|| self.lock().run_batch_u8(data))
                .map_err(|e| raise(&e))?;
            (logits, batch)
        } else {
            check_dtype(dtype, "float32", self.layout, chw)?;
            let values = f32_values(data)?;
            let batch = engine::f32_batch(INPUT, &shape, &values, chw).map_err(|e| raise(&e))?;
            let logits = py
                .detach(|| self.lock().run_batch(&values))
                .map_err(|e| raise(&e))?;
            (logits, batch)
        };
        Ok((logits_bytes(py, &logits), batch))
    }
}

impl PyEngine {
    /// The engine, for one call at a time (a second thread's call waits, the interpreter
    /// released). A panic in a kernel is a bug; every run rewrites the arenas, so a poisoned
    /// lock holds nothing stale.
    fn lock(&self) -> std::sync::MutexGuard<'_, engine::Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn check_threads(threads: usize) -> PyResult<()> {
    vitae::settings::check_threads("threads", threads).map_err(|e| raise_message(e.0))
}

/// The f32 reference model of a checkpoint (`vitae run --checkpoint`).
#[pyclass(name = "Reference", module = "vitae_edge._native", frozen)]
#[derive(Debug)]
struct PyReference {
    model: ReferenceModel,
}

#[pymethods]
impl PyReference {
    #[new]
    #[pyo3(signature = (checkpoint, config = None, arch = None))]
    fn new(
        py: Python<'_>,
        checkpoint: PathBuf,
        config: Option<PathBuf>,
        arch: Option<String>,
    ) -> PyResult<Self> {
        let model = py.detach(|| load_reference(&checkpoint, config, arch))?;
        Ok(PyReference { model })
    }

    /// (C, H, W) of one image.
    #[getter]
    fn input_chw(&self) -> (usize, usize, usize) {
        let c = self.model.config();
        (c.in_chans(), c.img_size(), c.img_size())
    }

    /// Outputs per image.
    #[getter]
    fn classes(&self) -> usize {
        self.model.config().output_dim()
    }

    /// Logits (native-endian f32 bytes, N × classes) and N for the images in `data`.
    fn run<'py>(
        &self,
        py: Python<'py>,
        dtype: &str,
        shape: Vec<usize>,
        data: &[u8],
    ) -> PyResult<(Bound<'py, PyBytes>, usize)> {
        let chw = self.input_chw();
        check_dtype(dtype, "float32", ImageLayout::F32Nchw, chw)?;
        let values = f32_values(data)?;
        let batch = engine::f32_batch(INPUT, &shape, &values, chw).map_err(|e| raise(&e))?;
        let logits = py
            .detach(|| self.model.forward_batch(&values, &mut NoObserver))
            .map_err(|e| raise(&e))?;
        Ok((logits_bytes(py, &logits), batch))
    }
}

/// Where the calibration images are.
#[derive(Debug)]
enum CalibSource<'a> {
    /// A `.npy` file or an image folder.
    Path(PathBuf),
    /// dtype name, shape and the values' bytes of an array.
    Array(String, Vec<usize>, &'a [u8]),
}

/// Quantizes a checkpoint into a blob, as `vitae quantize` does with the same settings.
#[pyfunction]
#[pyo3(signature = (
    checkpoint, *, calib_path = None, calib_dtype = None, calib_shape = None, calib_data = None,
    config = None, arch = None, precision = "int8", calib_method = "auto",
    flash_budget = None, max_logit_error = None, max_calib = None, resize = None, mean = None, std = None,
    input = "f32", name = None, board = None, patch = "auto"
))]
#[allow(clippy::too_many_arguments)]
fn quantize<'py>(
    py: Python<'py>,
    checkpoint: PathBuf,
    calib_path: Option<PathBuf>,
    calib_dtype: Option<String>,
    calib_shape: Option<Vec<usize>>,
    calib_data: Option<&[u8]>,
    config: Option<PathBuf>,
    arch: Option<String>,
    precision: &str,
    calib_method: &str,
    flash_budget: Option<usize>,
    max_logit_error: Option<f64>,
    max_calib: Option<usize>,
    resize: Option<usize>,
    mean: Option<Vec<f32>>,
    std: Option<Vec<f32>>,
    input: &str,
    name: Option<String>,
    board: Option<String>,
    patch: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let precision: Precision = choice("precision", precision)?;
    for (name, given) in [
        ("flash_budget", flash_budget.is_some()),
        ("max_logit_error", max_logit_error.is_some()),
    ] {
        if given && precision != Precision::Mixed {
            return Err(raise_message(format!(
                "{name} applies to precision='mixed' only (this is precision='{}')",
                precision.name()
            )));
        }
    }
    let patch: vitae::quantize::patch::Patch = patch
        .parse()
        .map_err(|e: String| raise_message(format!("patch: {e}")))?;
    let arena_regions = match board {
        Some(b) => vitae::boards::board(&b)
            .map_err(|e| raise(&e))?
            .arena_regions(),
        None => Vec::new(),
    };
    let method: CalibMethod = choice("calib_method", calib_method)?;
    let u8_input = match input {
        "f32" => false,
        "u8" => true,
        other => {
            return Err(raise_message(format!(
                "input '{}': expected one of f32, u8",
                vitae::text::escape(other)
            )));
        }
    };
    vitae::settings::QuantizeSettings {
        mean: mean.as_deref(),
        std: std.as_deref(),
        resize,
        max_calib,
        flash_budget,
        max_logit_error,
        name: name.as_deref(),
    }
    .check()
    .map_err(|e| raise(&e))?;
    let calib = match (calib_path, calib_dtype, calib_shape, calib_data) {
        (Some(path), None, None, None) => CalibSource::Path(path),
        (None, Some(dtype), Some(shape), Some(data)) => CalibSource::Array(dtype, shape, data),
        _ => {
            return Err(raise_message(
                "give the calibration images once: an array, or a path (.npy or image folder)"
                    .into(),
            ));
        }
    };
    let normalized_array = match &calib {
        CalibSource::Path(path) => !path.is_dir(),
        CalibSource::Array(..) => true,
    };
    // Normalized images carry no pixel scale: for u8 input the blob must be told, never guess.
    if u8_input && normalized_array && (mean.is_none() || std.is_none()) {
        return Err(raise_message(
            "input='u8' with normalized calibration images (an array or a .npy): give mean and std, the per-channel normalization they were made with (x = (pixel/255 - mean) / std)".into(),
        ));
    }
    let blob = py.detach(|| -> PyResult<Vec<u8>> {
        let model = load_reference(&checkpoint, config, arch)?;
        vitae::quantize::build::check_float_graph_size(&model).map_err(|e| raise(&e))?;
        let cfg = model.config();
        let channels = cfg.in_chans();
        let prep = ImagePrep {
            size: cfg.img_size(),
            resize,
            // As `vitae quantize`: no crop flag (that is `vitae eval`'s).
            crop: None,
            channels,
            mean: mean.clone().unwrap_or_else(|| vec![0.5; channels]),
            std: std.clone().unwrap_or_else(|| vec![0.5; channels]),
        };
        let images = match &calib {
            CalibSource::Path(path) => calib_data::load(path, &prep, max_calib),
            CalibSource::Array(dtype, shape, bytes) => {
                if dtype != "float32" {
                    return Err(raise_message(format!(
                        "calib: dtype is {dtype}, expected float32"
                    )));
                }
                let values = f32_values(bytes)?;
                calib_data::from_array(Path::new("calib"), shape, &values, &prep, max_calib)
            }
        }
        .map_err(|e| raise(&e))?;
        let name = name.unwrap_or_else(|| {
            checkpoint
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into())
        });
        let input = if u8_input {
            ImageInput::U8Hwc {
                mean: prep.mean.clone(),
                std: prep.std.clone(),
            }
        } else {
            ImageInput::F32Nchw
        };
        let options = Options {
            precision,
            method,
            flash_budget,
            max_logit_error,
            name,
            input,
            arena_regions,
            patch,
        };
        let q = vitae::quantize::quantize(&model, &images, &options, &mut NoProgress)
            .map_err(|e| raise(&e))?;
        Ok(q.lowered.blob)
    })?;
    Ok(PyBytes::new(py, &blob))
}

/// What a blob holds: `{"layers": [...], "totals": {...}}` as `vitae inspect --json` prints it.
#[pyfunction]
fn inspect_json(blob: &[u8]) -> PyResult<(Vec<String>, String)> {
    let aligned = AlignedBytes::new(blob);
    let model = Model::parse(aligned.as_bytes()).map_err(|e| raise(&e))?;
    engine::check_host_limits(&model).map_err(|e| raise(&e))?;
    let mut lines: Vec<String> = vitae::report::inspect_json(&model)
        .map_err(|e| raise(&e))?
        .iter()
        .map(|v| v.to_string())
        .collect();
    let totals = lines
        .pop()
        .ok_or_else(|| raise_message("inspect: no totals".into()))?;
    Ok((lines, totals))
}

/// Reads a file the way `vitae` reads a blob (regular file, size limits), errors included.
#[pyfunction]
fn read_blob<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyBytes>> {
    let bytes = py
        .detach(|| vitae::io::read_file(&path, vitae::io::InputKind::Blob))
        .map_err(|e| raise(&e))?;
    Ok(PyBytes::new(py, &bytes))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("VitaeError", py.get_type::<VitaeError>())?;
    m.add("PRESETS", PyList::new(py, PRESETS)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<PyEngine>()?;
    m.add_class::<PyReference>()?;
    m.add_function(wrap_pyfunction!(quantize, m)?)?;
    m.add_function(wrap_pyfunction!(inspect_json, m)?)?;
    m.add_function(wrap_pyfunction!(read_blob, m)?)?;
    Ok(())
}
