//! `vitae eval`: accuracy of quantized blobs (and the f32 reference) over a labelled dataset,
//! side by side.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

use vitae::calib_data::{self, ImagePrep};
use vitae::engine::Engine;
use vitae::eval::{CHUNK_BYTES, Dataset, ModelShape, Score, argmax};
use vitae::io::{InputKind, read_file};
use vitae::quantize::Progress;
use vitae::reference::{NoObserver, ReferenceModel};
use vitae::text::escape;
use vitae_edge::runtime::ImageLayout;

use crate::InputError;
use crate::numbers;
use crate::progress::Bars;

/// Arguments of `vitae eval`.
#[derive(Debug, Args)]
#[command(
    after_help = "Every image goes through every engine: the blobs through the device kernels (bit-identical\n\
                  to the firmware), the checkpoint through the f32 reference. Printed: top-1 and top-5\n\
                  accuracy of each, how often each blob's top-1 agrees with the f32 reference's, and the\n\
                  classes with the lowest top-1. Nothing is written; --json prints the same as JSON.\n\n\
                  --data is an ImageFolder directory (one subfolder per class, folder i in name order is\n\
                  class i, PNG/JPEG files at any depth below it; each image resized with --resize,\n\
                  center-cropped with --crop and normalized with --mean/--std, as for `quantize`), or an\n\
                  .npz holding x and y (np.savez(path, x=images, y=labels)): x float32 (N, C, H, W)\n\
                  already normalized, or uint8 (N, H, W, C) pixels, normalized with --mean/--std for\n\
                  the engines that take f32; y one integer class per image. Images are read a chunk at a\n\
                  time (memory stays bounded whatever N); blobs quantized with --input u8 take the\n\
                  pixels themselves.\n\n\
                  Examples:\n  vitae eval --model model-int8.vblob --model model-mixed.vblob --data val.npz\n  \
                  vitae eval --model vitae_t.vblob --checkpoint vitae_t.pth --arch vitae-t --data imagenet/val \\\n      \
                  --resize 256 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225\n  \
                  vitae eval --model model.vblob --data val.npz --json > accuracy.json"
)]
pub struct EvalArgs {
    /// A quantized blob to evaluate (repeat for several, side by side).
    #[arg(long = "model", value_name = "MODEL.vblob")]
    pub models: Vec<PathBuf>,
    /// Weights of the f32 reference to evaluate beside them (.pth or .safetensors).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// With --checkpoint: `ViTAE_ViT_basic` keyword arguments as a flat JSON object.
    #[arg(
        long,
        value_name = "KWARGS.json",
        conflicts_with = "arch",
        requires = "checkpoint"
    )]
    pub config: Option<PathBuf>,
    /// With --checkpoint: a preset architecture (vitae-t, vitae-6m, vitae-13m, vitae-s).
    #[arg(long, value_name = "NAME", requires = "checkpoint")]
    pub arch: Option<String>,
    /// The labelled images: an ImageFolder directory or an .npz with x and y.
    #[arg(long, value_name = "DIR|DATA.npz")]
    pub data: PathBuf,
    /// Image folders: resize the shorter side to this many pixels first (e.g. 256 for 224).
    #[arg(long, value_name = "PIXELS")]
    pub resize: Option<usize>,
    /// Image folders: center-crop this square, then resize it to the input size (default: the
    /// input size).
    #[arg(long, value_name = "PIXELS")]
    pub crop: Option<usize>,
    /// Per-channel mean of pixels scaled to [0, 1], comma-separated (default 0.5 each).
    #[arg(long, value_delimiter = ',', value_name = "M,M,M")]
    pub mean: Option<Vec<f32>>,
    /// Per-channel std of pixels scaled to [0, 1], comma-separated (default 0.5 each).
    #[arg(long, value_delimiter = ',', value_name = "S,S,S")]
    pub std: Option<Vec<f32>>,
    /// Only the first N images (in folder/class order or array order).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Images per chunk (default: as many as fit in 64 MiB as f32, at most 256).
    #[arg(long, value_name = "N")]
    pub batch: Option<usize>,
    /// Worker threads for the blobs (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// How many of the worst classes to list (classes without a miss are never listed).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub worst: usize,
    /// Print the results as one JSON object (and nothing else) on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// What evaluates the images.
enum Runner {
    Blob { engine: Engine, pixels: bool },
    Reference(Box<ReferenceModel>),
}

struct Slot {
    name: String,
    kind: String,
    path: PathBuf,
    runner: Runner,
    score: Score,
}

fn blob_slot(path: &Path, threads: Option<usize>) -> anyhow::Result<(Slot, ModelShape)> {
    let bytes = read_file(path, InputKind::Blob)?;
    let mut engine =
        Engine::new(&bytes).map_err(|e| InputError(format!("{}: {e}", path.display())))?;
    if let Some(t) = threads {
        engine.set_threads(t);
    }
    let model = engine.model();
    let meta = *model.meta();
    if meta.input_height != meta.input_width {
        return Err(InputError(format!(
            "{}: the model takes {}x{} images; eval takes square inputs only",
            path.display(),
            meta.input_height,
            meta.input_width
        ))
        .into());
    }
    let shape = ModelShape {
        channels: meta.input_channels as usize,
        size: meta.input_height as usize,
        classes: meta.num_classes as usize,
    };
    let kind = format!("{:?}", model.precision()).to_lowercase();
    let pixels = model.image_layout() == ImageLayout::U8Hwc;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok((
        Slot {
            name,
            kind: if pixels {
                format!("{kind}, u8 input")
            } else {
                kind
            },
            path: path.to_path_buf(),
            runner: Runner::Blob { engine, pixels },
            score: Score::new(shape.classes),
        },
        shape,
    ))
}

fn reference_slot(args: &EvalArgs, checkpoint: &Path) -> anyhow::Result<(Slot, ModelShape)> {
    let config = crate::cli::checkpoint_arch(args.config.as_deref(), args.arch.as_deref())?;
    let weights = vitae::checkpoint::load_checkpoint(checkpoint)?;
    let model = ReferenceModel::new(config, &weights)?;
    let shape = ModelShape {
        channels: model.config().in_chans(),
        size: model.config().img_size(),
        classes: model.config().output_dim(),
    };
    Ok((
        Slot {
            name: checkpoint.file_name().map_or_else(
                || checkpoint.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            kind: "f32 reference".into(),
            path: checkpoint.to_path_buf(),
            runner: Runner::Reference(Box::new(model)),
            score: Score::new(shape.classes),
        },
        shape,
    ))
}

fn percent(count: usize, total: usize) -> f64 {
    100.0 * count as f64 / total.max(1) as f64
}

/// Runs `vitae eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    numbers::check_image_flags(
        args.mean.as_deref(),
        args.std.as_deref(),
        args.resize,
        args.crop,
    )?;
    numbers::check_threads(args.threads)?;
    if args.models.is_empty() && args.checkpoint.is_none() {
        return Err(InputError(
            "nothing to evaluate: give --model MODEL.vblob (repeatable) and/or --checkpoint FILE with --config/--arch".into(),
        )
        .into());
    }
    if args.limit == Some(0) || args.batch == Some(0) {
        return Err(InputError("--limit and --batch must be at least 1".into()).into());
    }
    // Every engine is loaded and checked before the dataset is touched.
    let mut slots = Vec::new();
    let mut shapes = Vec::new();
    if let Some(checkpoint) = &args.checkpoint {
        let (slot, shape) = reference_slot(&args, checkpoint)?;
        slots.push(slot);
        shapes.push(shape);
    }
    for path in &args.models {
        let (slot, shape) = blob_slot(path, args.threads)?;
        slots.push(slot);
        shapes.push(shape);
    }
    let shape = shapes[0].clone();
    for (slot, other) in slots.iter().zip(&shapes).skip(1) {
        if (other.channels, other.size, other.classes)
            != (shape.channels, shape.size, shape.classes)
        {
            return Err(InputError(format!(
                "{} takes {}x{}x{} images into {} classes, but {} takes {}x{}x{} into {}: evaluate models of one architecture together",
                slot.path.display(),
                other.channels,
                other.size,
                other.size,
                other.classes,
                slots[0].path.display(),
                shape.channels,
                shape.size,
                shape.size,
                shape.classes
            ))
            .into());
        }
    }
    let prep = ImagePrep {
        size: shape.size,
        resize: args.resize,
        crop: args.crop,
        channels: shape.channels,
        mean: args
            .mean
            .clone()
            .unwrap_or_else(|| vec![0.5; shape.channels]),
        std: args
            .std
            .clone()
            .unwrap_or_else(|| vec![0.5; shape.channels]),
    };
    calib_data::check_prep(&prep)?;
    if !args.data.exists() {
        return Err(InputError(format!(
            "{}: no such file or directory",
            args.data.display()
        ))
        .into());
    }
    let dataset = Dataset::open(&args.data, &shape)?;
    let wants_pixels = slots
        .iter()
        .any(|s| matches!(s.runner, Runner::Blob { pixels: true, .. }));
    let wants_images = slots
        .iter()
        .any(|s| !matches!(s.runner, Runner::Blob { pixels: true, .. }));
    if wants_pixels && !dataset.has_pixels() {
        let slot = slots
            .iter()
            .find(|s| matches!(s.runner, Runner::Blob { pixels: true, .. }))
            .map_or_else(String::new, |s| s.path.display().to_string());
        return Err(InputError(format!(
            "{slot} takes u8 pixels (quantized with --input u8), but {} holds float32 images that are already normalized: give uint8 x of shape (N, {s}, {s}, {c}), or an image folder",
            args.data.display(),
            s = shape.size,
            c = shape.channels
        ))
        .into());
    }
    let total = args.limit.unwrap_or(usize::MAX).min(dataset.len());
    let per_image = shape.channels * shape.size * shape.size * 4;
    let chunk = args
        .batch
        .unwrap_or_else(|| (CHUNK_BYTES / per_image.max(1)).clamp(1, 256));
    let names = dataset.class_names(shape.classes);
    let mut class_images = vec![0usize; shape.classes];
    let started = Instant::now();
    let mut bars = Bars::new(!args.no_progress);
    bars.begin(&format!("evaluating {total} images"), total);
    let mut done = 0;
    let has_reference = args.checkpoint.is_some();
    dataset.for_each_chunk(
        &prep,
        total,
        chunk,
        (wants_images, wants_pixels),
        |c| -> anyhow::Result<()> {
            for &label in &c.labels {
                class_images[label] += 1;
            }
            let mut reference_top1: Option<Vec<usize>> = None;
            for slot in &mut slots {
                let t = Instant::now();
                let logits = match &mut slot.runner {
                    Runner::Reference(model) => {
                        let images = c.images.as_deref().unwrap_or_default();
                        model.forward_batch(images, &mut NoObserver)?
                    }
                    Runner::Blob {
                        engine,
                        pixels: true,
                    } => engine.run_batch_u8(c.pixels.as_deref().unwrap_or_default())?,
                    Runner::Blob { engine, .. } => {
                        engine.run_batch(c.images.as_deref().unwrap_or_default())?
                    }
                };
                slot.score.seconds += t.elapsed().as_secs_f64();
                let is_reference = matches!(slot.runner, Runner::Reference(_));
                slot.score.add(
                    &logits,
                    &c.labels,
                    if is_reference {
                        None
                    } else {
                        reference_top1.as_deref()
                    },
                );
                if is_reference {
                    reference_top1 = Some(logits.chunks_exact(shape.classes).map(argmax).collect());
                }
            }
            done += c.labels.len();
            bars.advance(done);
            Ok(())
        },
    )?;
    bars.end();
    let seconds = started.elapsed().as_secs_f64();

    // The worst classes: lowest top-1 of any engine, among classes with images.
    let mut worst: Vec<usize> = (0..shape.classes)
        .filter(|&k| class_images[k] > 0)
        .collect();
    let class_low = |k: usize| {
        slots
            .iter()
            .map(|s| s.score.class_top1[k] as f64 / class_images[k] as f64)
            .fold(f64::INFINITY, f64::min)
    };
    worst.retain(|&k| class_low(k) < 1.0);
    worst.sort_by(|&a, &b| class_low(a).total_cmp(&class_low(b)).then(a.cmp(&b)));
    worst.truncate(args.worst);

    let mut out = std::io::stdout().lock();
    if args.json {
        let engines: Vec<_> = slots
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "kind": s.kind,
                    "path": s.path.display().to_string(),
                    "top1": s.score.top1 as f64 / done.max(1) as f64,
                    "top5": s.score.top5 as f64 / done.max(1) as f64,
                    "top1_correct": s.score.top1,
                    "top5_correct": s.score.top5,
                    "agreement_with_reference": (has_reference && !matches!(s.runner, Runner::Reference(_)))
                        .then(|| s.score.agree as f64 / done.max(1) as f64),
                    "seconds": s.score.seconds,
                    "class_top1_correct": s.score.class_top1,
                })
            })
            .collect();
        let json = serde_json::json!({
            "data": args.data.display().to_string(),
            "images": done,
            "classes": shape.classes,
            "class_names": names,
            "class_images": class_images,
            "engines": engines,
            "worst_classes": worst,
            "seconds": seconds,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
        return Ok(());
    }
    let source = match &dataset {
        Dataset::Folder {
            classes, skipped, ..
        } => {
            let mut s = format!("{} class folders, {} images", classes.len(), dataset.len());
            if *skipped > 0 {
                s += &format!(", {skipped} other files skipped");
            }
            s
        }
        Dataset::Npz { pixels, .. } => format!(
            "{} images, x as {}",
            dataset.len(),
            if *pixels { "uint8 pixels" } else { "float32" }
        ),
    };
    writeln!(
        out,
        "{}: {source}; evaluated {done} images, {} classes",
        escape(&args.data.display().to_string()),
        shape.classes
    )?;
    let labels: Vec<String> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| escape(&format!("#{} {} ({})", i + 1, s.name, s.kind)).into_owned())
        .collect();
    let width = labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    writeln!(
        out,
        "\n  {:width$}  {:>8}  {:>8}  {:>16}  {:>9}",
        "engine", "top-1", "top-5", "top-1 = f32 ref.", "ms/image"
    )?;
    for (slot, label) in slots.iter().zip(&labels) {
        let agree = if has_reference && !matches!(slot.runner, Runner::Reference(_)) {
            format!("{:.2} %", percent(slot.score.agree, done))
        } else {
            "-".into()
        };
        writeln!(
            out,
            "  {label:width$}  {:>6.2} %  {:>6.2} %  {agree:>16}  {:>9.3}",
            percent(slot.score.top1, done),
            percent(slot.score.top5, done),
            slot.score.seconds * 1e3 / done.max(1) as f64
        )?;
    }
    if !worst.is_empty() {
        writeln!(
            out,
            "\n  worst classes (lowest top-1 of any engine first; classes every engine gets all right left out):"
        )?;
        let class_width = worst
            .iter()
            .map(|&k| escape(&names[k]).chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        write!(out, "  {:class_width$}  {:>6}", "class", "images")?;
        for i in 0..slots.len() {
            write!(out, "  {:>8}", format!("#{}", i + 1))?;
        }
        writeln!(out)?;
        for &k in &worst {
            write!(
                out,
                "  {:class_width$}  {:>6}",
                escape(&names[k]),
                class_images[k]
            )?;
            for slot in &slots {
                write!(
                    out,
                    "  {:>6.2} %",
                    percent(slot.score.class_top1[k], class_images[k])
                )?;
            }
            writeln!(out)?;
        }
    }
    writeln!(
        out,
        "\nevaluated in {seconds:.2} s (reading and decoding included)"
    )?;
    Ok(())
}
