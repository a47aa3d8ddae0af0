//! End-to-end checks on the shared reference fixtures: the firmware's logits must be the host
//! engine's, byte for byte, on every QEMU board.
//!
//! The fixtures live beside the checkout (`../shared/fixtures`); a user's clone does not have
//! them, so these checks are skipped with a notice there. CI sets `VITAE_REQUIRE_FIXTURES=1`,
//! which turns a missing fixture folder into a failure.

use crate::app::{self, AppInput};
use crate::boards::Board;
use crate::project_root;
use crate::toolchain::ArmToolchain;
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::time::Duration;
use vitae::engine::Engine;
use vitae::quantize::patch::Patch;
use vitae::quantize::{self, CalibMethod, NoProgress, Options, Precision};
use vitae::reference::ReferenceModel;

/// `../shared/fixtures`, if present.
pub fn fixtures_dir() -> Option<PathBuf> {
    let dir = project_root().join("..").join("shared").join("fixtures");
    dir.is_dir().then_some(dir)
}

/// Whether a missing fixture folder is an error (CI) or a reason to skip (a user's clone).
pub fn fixtures_required() -> bool {
    std::env::var("VITAE_REQUIRE_FIXTURES").is_ok_and(|v| v == "1")
}

/// A quantized fixture with its input and the host engine's logits file.
pub struct Prepared {
    pub blob: PathBuf,
    pub input: PathBuf,
    pub host_npy: Vec<u8>,
    /// The strips the quantizer chose, when it patched the first cells.
    pub strips: Option<vitae::quantize::patch::Strips>,
}

/// Fixture `name`'s f32 reference model and the path of its input image.
fn fixture(name: &str) -> Result<(ReferenceModel, PathBuf)> {
    let Some(dir) = fixtures_dir() else {
        bail!("../shared/fixtures not found")
    };
    let dir = dir.join(name);
    let config = vitae::config::ModelConfig::from_kwargs_file(&dir.join("kwargs.json"))?;
    let checkpoint = vitae::checkpoint::load_checkpoint(&dir.join("model.pth"))?;
    Ok((
        ReferenceModel::new(config, &checkpoint)?,
        dir.join("input.npy"),
    ))
}

/// `target/vitae`, created.
fn out_dir() -> Result<PathBuf> {
    let dir = project_root().join("target").join("vitae");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// What a blob's file name says of its plan: `-BOARD` when planned for a board, `-stripsN` when
/// its first cells run in strips of N rows.
fn plan_tag(board: Option<&Board>, q: &quantize::Quantized) -> String {
    let mut tag = board.map_or(String::new(), |b| format!("-{}", b.name));
    if let Some(p) = &q.lowered.patched {
        tag.push_str(&format!("-strips{}", p.plan.rows));
    }
    tag
}

/// Quantizes fixture `name` (calibrated on its own input) and runs it on the host engine.
pub fn prepare(name: &str, precision: Precision) -> Result<Prepared> {
    prepare_for(name, precision, None)
}

/// As [`prepare`], with the arena planned for `board`'s memory regions (`vitae quantize
/// --board`, the first cells in strips only when layer by layer does not fit); the error says
/// which region is too small when the model does not fit.
pub fn prepare_for(name: &str, precision: Precision, board: Option<&Board>) -> Result<Prepared> {
    prepare_patched(name, precision, board, Patch::Auto)
}

/// As [`prepare_for`], with the first cells run as `patch` says (`vitae quantize --patch`).
pub fn prepare_patched(
    name: &str,
    precision: Precision,
    board: Option<&Board>,
    patch: Patch,
) -> Result<Prepared> {
    prepare_with(name, precision, board, patch, None)
}

/// Fixture `name` in mixed precision within `flash_budget` bytes (`vitae quantize --precision
/// mixed --flash-budget`): below the int8 blob's size, int4 weights where they hurt least.
pub fn prepare_within(name: &str, flash_budget: usize) -> Result<Prepared> {
    prepare_with(
        name,
        Precision::Mixed,
        None,
        Patch::Auto,
        Some(flash_budget),
    )
}

fn prepare_with(
    name: &str,
    precision: Precision,
    board: Option<&Board>,
    patch: Patch,
    flash_budget: Option<usize>,
) -> Result<Prepared> {
    let (model, input) = fixture(name)?;
    let x = vitae::npy::read_npy_f32(&input)?;
    let options = Options {
        precision,
        method: CalibMethod::Auto,
        flash_budget,
        max_logit_error: None,
        name: name.into(),
        input: Default::default(),
        // The library reads the same table (firmware/boards.rs) as its own type.
        arena_regions: match board {
            Some(b) => vitae::boards::board(b.name)?.arena_regions(),
            None => Vec::new(),
        },
        patch,
    };
    let q = quantize::quantize(
        &model,
        std::slice::from_ref(&x.data),
        &options,
        &mut NoProgress,
    )
    .with_context(|| match board {
        Some(b) => format!("{name}: planning the arena for board {}", b.name),
        None => format!("{name}: quantizing"),
    })?;
    let out_dir = out_dir()?;
    let mut planned = plan_tag(board, &q);
    if let Some(b) = flash_budget {
        planned.push_str(&format!("-{b}B"));
    }
    let blob = out_dir.join(format!("{name}-{}{planned}.vblob", precision.name()));
    vitae::io::write_atomic(&blob, &q.lowered.blob)?;
    let mut engine = Engine::new(&q.lowered.blob)?;
    let logits = engine.run_batch(&x.data)?;
    let classes = model.config().num_classes();
    let host_npy = vitae::npy::encode_npy_f32(&[logits.len() / classes, classes], &logits)?;
    Ok(Prepared {
        blob,
        input,
        host_npy,
        strips: q.lowered.patched.as_ref().map(|p| p.plan),
    })
}

/// Fixture `name` for a camera: quantized with `--input u8` and the ImageNet mean/std, planned
/// for `board`'s regions as `patch` says, on the fixture's image as u8 pixels (twice: the bench
/// reports the second inference). The host engine runs the same pixels.
pub fn prepare_pixels(name: &str, board: Option<&Board>, patch: Patch) -> Result<Prepared> {
    let (model, input) = fixture(name)?;
    let x = vitae::npy::read_npy_f32(&input)?;
    let (mean, std) = (vec![0.485f32, 0.456, 0.406], vec![0.229f32, 0.224, 0.225]);
    let [c, h, w] = match x.shape.as_slice() {
        [1, c, h, w] | [c, h, w] if *c == mean.len() => [*c, *h, *w],
        other => bail!("{name}: an RGB image (1, 3, H, W) is needed for u8 pixels, got {other:?}"),
    };
    // The f32 image back to the pixels it was normalized from, HWC.
    let mut pixels = vec![0u8; c * h * w];
    for ch in 0..c {
        for p in 0..h * w {
            let v = (x.data[ch * h * w + p] * std[ch] + mean[ch]) * 255.0;
            pixels[p * c + ch] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    let options = Options {
        precision: Precision::Int8,
        method: CalibMethod::Auto,
        flash_budget: None,
        max_logit_error: None,
        name: name.into(),
        input: quantize::ImageInput::U8Hwc { mean, std },
        arena_regions: match board {
            Some(b) => vitae::boards::board(b.name)?.arena_regions(),
            None => Vec::new(),
        },
        patch,
    };
    let q = quantize::quantize(
        &model,
        std::slice::from_ref(&x.data),
        &options,
        &mut NoProgress,
    )
    .with_context(|| format!("{name}: quantizing for u8 pixels"))?;
    let out_dir = out_dir()?;
    let blob = out_dir.join(format!("{name}-int8-u8{}.vblob", plan_tag(board, &q)));
    vitae::io::write_atomic(&blob, &q.lowered.blob)?;
    let twice: Vec<u8> = pixels.iter().chain(&pixels).copied().collect();
    let input = out_dir.join(format!("{name}-u8-x2.npy"));
    vitae::io::write_atomic(&input, &vitae::npy::encode_npy_u8(&[2, h, w, c], &twice)?)?;
    let logits = Engine::new(&q.lowered.blob)?.run_batch_u8(&twice)?;
    let classes = model.config().num_classes();
    let host_npy = vitae::npy::encode_npy_f32(&[logits.len() / classes, classes], &logits)?;
    Ok(Prepared {
        blob,
        input,
        host_npy,
        strips: q.lowered.patched.as_ref().map(|p| p.plan),
    })
}

/// Runs the prepared blob on `board` and compares the logits file with the host engine's.
pub fn check_board(tc: ArmToolchain, board: &Board, p: &Prepared) -> Result<()> {
    check_board_env(tc, board, p, &[])
}

/// As [`check_board`], with extra firmware build environment (`VITAE_STAGE`).
pub fn check_board_env(
    tc: ArmToolchain,
    board: &Board,
    p: &Prepared,
    env: &[(&str, &str)],
) -> Result<()> {
    let elf = app::build_env(tc, board, &p.blob, &AppInput::Npy(p.input.clone()), env)?;
    let run = app::run(board, &elf, Duration::from_secs(1800), &mut |_| {})?;
    let device = project_root()
        .join("target")
        .join("vitae")
        .join(format!("device-{}.npy", board.name));
    crate::qemu_cmd::write_logits(&device, &run)?;
    let device_bytes = std::fs::read(&device).context("reading the device logits back")?;
    if device_bytes != p.host_npy {
        bail!(
            "{}: the device logits differ from the host engine's",
            board.name
        );
    }
    if let Some(n) = run.instructions.last() {
        println!(
            "    {} instructions per inference, logits file identical to the host engine's",
            n
        );
    }
    if !run.weights_line.is_empty() {
        println!("    weights per inference: {}", run.weights_line);
    }
    Ok(())
}
