//! Hostile inputs to every subcommand, one test per class of issue 21: inputs built (at run time
//! where they are big) to exhaust the stack, memory or time, to overwrite inputs or devices, to
//! drive the terminal, or to be silently wrong. Every run of the binary happens under
//! `ulimit -v` (1 GiB of address space) and a 120 s kill timer, so a reader that allocates by
//! what an input claims fails here with a signal instead of taking the machine down; each case
//! must exit 2 with a one-line `error: …` naming the problem, no panic text, and leave its
//! inputs as they were.
//!
//! Needs nothing from `../shared`: the model, checkpoint, input and blob are a tiny ViTAE made
//! here with random weights.

#[path = "common.rs"]
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use vitae::quantize::{self, CalibMethod, NoProgress, Options, Precision};
use vitae::reference::ReferenceModel;
use vitae_edge::format::{
    BlobWriter, CRC_FIELD_OFFSET, DType, DataRef, ModelMeta, StrRef, TensorDesc, crc32,
};

const TINY: &str = r#"{"img_size": 8, "in_chans": 1, "num_classes": 3, "stages": 2,
    "embed_dims": [4, 8], "token_dims": [4, 8], "downsample_ratios": [4, 2],
    "kernel_size": [3, 3], "RC_heads": [1, 1], "NC_heads": [1, 2],
    "dilations": [[1, 2], [1]], "RC_tokens_type": ["performer", "performer_less"],
    "NC_tokens_type": ["transformer", "transformer"], "RC_group": [1, 1],
    "NC_group": [1, 2], "NC_depth": [0, 1], "mlp_ratio": 1.0}"#;

/// Address space the binary may use, in KiB (so RSS stays below 1 GiB too).
const ADDRESS_SPACE_KIB: u64 = 1 << 20;

/// The tiny model's files: config, checkpoint (.pth), one input image (.npy), its int8 blob,
/// and a folder of three 8×8 PNG calibration images.
struct Tiny {
    _dir: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    pth: PathBuf,
    input: PathBuf,
    blob: PathBuf,
    images: PathBuf,
}

fn tiny_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let config = vitae::config::ModelConfig::from_kwargs_json(TINY, "tiny.json").unwrap();
    let checkpoint = vitae::validate::random_checkpoint(&config, 5);
    checkpoint
        .tensors
        .into_iter()
        .map(|(k, t)| (k, t.shape, t.data))
        .collect()
}

fn pth_of(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let refs: Vec<(&str, &[usize], &[f32])> = tensors
        .iter()
        .map(|(k, s, d)| (k.as_str(), s.as_slice(), d.as_slice()))
        .collect();
    common::write_pth(&refs)
}

fn tiny() -> &'static Tiny {
    static TINY_FILES: OnceLock<Tiny> = OnceLock::new();
    TINY_FILES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let config_path = root.join("tiny.json");
        std::fs::write(&config_path, TINY).unwrap();
        let config = vitae::config::ModelConfig::from_kwargs_json(TINY, "tiny.json").unwrap();
        let checkpoint = vitae::validate::random_checkpoint(&config, 5);
        let pth = root.join("tiny.pth");
        std::fs::write(&pth, pth_of(&tiny_tensors())).unwrap();
        let model = ReferenceModel::new(config, &checkpoint).unwrap();
        let n = model.config().input_len();
        let image: Vec<f32> = (0..n).map(|i| ((i * 7 % 17) as f32 - 8.0) / 4.0).collect();
        let input = root.join("x.npy");
        vitae::npy::write_npy_f32(&input, &[1, 1, 8, 8], &image).unwrap();
        let options = Options {
            precision: Precision::Int8,
            method: CalibMethod::Auto,
            flash_budget: None,
            max_logit_error: None,
            name: "NAME-TO-BE-PATCHED-01234".into(),
            input: Default::default(),
            arena_regions: Vec::new(),
            patch: vitae::quantize::patch::Patch::Off,
        };
        let q = quantize::quantize(&model, &[image], &options, &mut NoProgress).unwrap();
        let blob = root.join("tiny.vblob");
        std::fs::write(&blob, &q.lowered.blob).unwrap();
        let images = root.join("images");
        std::fs::create_dir(&images).unwrap();
        for k in 0..3u8 {
            let img = image::GrayImage::from_fn(8, 8, |x, y| {
                image::Luma([(x * 30 + y + u32::from(k)) as u8])
            });
            img.save(images.join(format!("{k}.png"))).unwrap();
        }
        Tiny {
            _dir: dir,
            root,
            config: config_path,
            pth,
            input,
            blob,
            images,
        }
    })
}

/// Runs the binary under the address-space limit and the kill timer (120 s, or
/// `VITAE_HOSTILE_TIMEOUT` seconds: a shorter one when replaying the suite against old code).
fn vitae(args: &[&str]) -> Output {
    let timeout = std::env::var("VITAE_HOSTILE_TIMEOUT").unwrap_or_else(|_| "120".into());
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {ADDRESS_SPACE_KIB} && exec timeout -s KILL {timeout} \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_vitae"))
        .args(args)
        .output()
        .expect("run vitae")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `vitae quantize` of `checkpoint` with `config`, calibrated on `calib`, written to `out`.
fn quantize_args<'a>(
    checkpoint: &'a str,
    config: &'a str,
    calib: &'a str,
    out: &'a str,
) -> Vec<&'a str> {
    vec![
        "quantize",
        "--checkpoint",
        checkpoint,
        "--config",
        config,
        "--calib",
        calib,
        "--out",
        out,
        "--no-progress",
    ]
}

/// `vitae diff` of the blob `model` against `checkpoint` with `config` on `input`.
fn diff_args<'a>(
    model: &'a str,
    checkpoint: &'a str,
    config: &'a str,
    input: &'a str,
) -> Vec<&'a str> {
    vec![
        "diff",
        "--model",
        model,
        "--checkpoint",
        checkpoint,
        "--config",
        config,
        "--input",
        input,
    ]
}

/// `vitae run` of the f32 reference (`checkpoint` with `config`) on `input`, logits to `out`.
fn run_checkpoint_args<'a>(
    checkpoint: &'a str,
    config: &'a str,
    input: &'a str,
    out: &'a str,
) -> Vec<&'a str> {
    vec![
        "run",
        "--checkpoint",
        checkpoint,
        "--config",
        config,
        "--input",
        input,
        "--out",
        out,
    ]
}

/// Runs each command and asserts that every one is refused with `needle` ([`assert_refused`]),
/// reporting all that are not at once.
#[track_caller]
fn assert_all_refused(commands: &[Vec<&str>], needle: &str) {
    let wrong: Vec<String> = commands
        .iter()
        .filter_map(|args| {
            refusal_problem(&vitae(args), needle).map(|p| format!("{}: {p}", args[0]))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "not refused with {needle:?}:\n{}",
        wrong.join("\n")
    );
}

/// Exit status 2, one first line `error: …` containing `needle`, no panic or abort text.
#[track_caller]
fn assert_refused(output: &Output, needle: &str) {
    if let Some(problem) = refusal_problem(output, needle) {
        panic!("{problem}");
    }
}

/// What keeps `output` from being the refusal [`assert_refused`] wants, if anything.
fn refusal_problem(output: &Output, needle: &str) -> Option<String> {
    let err = String::from_utf8_lossy(&output.stderr);
    if output.status.code() != Some(2) {
        return Some(format!(
            "status {:?} (a signal if None), stderr:\n{err}",
            output.status
        ));
    }
    let first = err.lines().next().unwrap_or_default();
    if !(first.starts_with("error: ") && first.contains(needle)) {
        return Some(format!("first line {first:?} lacks {needle:?}"));
    }
    // "out of memory": a reader that allocated by what the input claims until the limit.
    [
        "out of memory",
        "panicked",
        "internal error",
        "overflowed",
        "memory allocation",
        "RUST_BACKTRACE",
    ]
    .iter()
    .find(|bad| err.contains(*bad))
    .map(|bad| format!("{bad:?} in:\n{err}"))
}

/// A zip archive of the given entries, each stored or deflated.
fn zip_of(entries: &[(&str, &[u8], bool)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for &(name, data, deflate) in entries {
        let method = if deflate {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(method)
            .large_file(data.len() > u32::MAX as usize / 2);
        zip.start_file(name, options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn put_u32(p: &mut Vec<u8>, op: u8, v: u32) {
    p.push(op);
    p.extend_from_slice(&v.to_le_bytes());
}

fn put_str(p: &mut Vec<u8>, s: &str) {
    put_u32(p, b'X', s.len() as u32);
    p.extend_from_slice(s.as_bytes());
}

/// One tensor of [`views_pickle`]: `(key, storage key, storage numel, offset, size, stride)`.
type View<'a> = (&'a str, &'a str, u32, u32, &'a [u32], &'a [u32]);

/// A torch-style state_dict pickle whose tensors are arbitrary views of float storages.
fn views_pickle(views: &[View<'_>]) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    p.extend_from_slice(b"ccollections\nOrderedDict\nq\x00)R(");
    for &(key, storage, numel, offset, size, stride) in views {
        put_str(&mut p, key);
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        put_str(&mut p, "storage");
        p.extend_from_slice(b"ctorch\nFloatStorage\n");
        put_str(&mut p, storage);
        put_str(&mut p, "cpu");
        put_u32(&mut p, b'J', numel);
        p.extend_from_slice(b"tQ");
        put_u32(&mut p, b'J', offset);
        p.push(b'(');
        for &d in size {
            put_u32(&mut p, b'J', d);
        }
        p.extend_from_slice(b"t(");
        for &s in stride {
            put_u32(&mut p, b'J', s);
        }
        p.extend_from_slice(b"t\x89h\x00)RtR");
    }
    p.extend_from_slice(b"u.");
    p
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A `.pth` of random weights for `config` (JSON), resolved with `img_size` replaced by
/// `weights_img` when given: no weight's shape depends on the image size (without an
/// `'embedding'` cell), so a config the tool refuses can still get a matching checkpoint.
fn pth_for(config: &str, weights_img: Option<usize>) -> Vec<u8> {
    let mut value: serde_json::Value = serde_json::from_str(config).unwrap();
    if let Some(img) = weights_img {
        value["img_size"] = serde_json::json!(img);
    }
    let resolved = vitae::config::ModelConfig::from_kwargs_value(&value, "weights").unwrap();
    let checkpoint = vitae::validate::random_checkpoint(&resolved, 3);
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = checkpoint
        .tensors
        .into_iter()
        .map(|(k, t)| (k, t.shape, t.data))
        .collect();
    pth_of(&tensors)
}

// ---- 1. recursion --------------------------------------------------------------------------

#[test]
fn deeply_nested_rebuild_calls_are_an_error_not_a_stack_overflow() {
    // `_rebuild_from_type_v2(func, None, args, None)` whose args are again such a call, 200,000
    // levels deep, built inside out through the memo (so MARKs never nest). Before the fix the
    // recursive reduce overflowed the stack: `thread 'main' has overflowed its stack`, SIGABRT.
    let levels = 200_000u32;
    let mut pickle = vec![0x80, 2];
    pickle.extend_from_slice(b"ctorch._tensor\n_rebuild_from_type_v2\nq\x000");
    pickle.push(b')');
    put_u32(&mut pickle, b'r', 1);
    pickle.push(b'0');
    for k in 1..=levels {
        pickle.extend_from_slice(b"(h\x00N");
        put_u32(&mut pickle, b'j', k);
        pickle.extend_from_slice(b"Nt");
        put_u32(&mut pickle, b'r', k + 1);
        pickle.push(b'0');
    }
    pickle.extend_from_slice(b"h\x00");
    put_u32(&mut pickle, b'j', levels + 1);
    pickle.extend_from_slice(b"R.");
    let dir = tempfile::tempdir().unwrap();
    let pth = write(
        dir.path(),
        "deep.pth",
        &zip_of(&[("archive/data.pkl", &pickle, true)]),
    );
    assert!(std::fs::metadata(&pth).unwrap().len() < 2 << 20);
    let out = vitae(&[
        "check",
        "--checkpoint",
        p(&pth),
        "--config",
        p(&tiny().config),
    ]);
    assert_refused(&out, "nested more than");
}

#[test]
fn pickles_naming_code_execute_nothing() {
    // Every callable is only a name to the unpickler; the marker files must never appear.
    let dir = tempfile::tempdir().unwrap();
    for (i, (module, name)) in [
        ("os", "system"),
        ("posix", "system"),
        ("builtins", "eval"),
        ("builtins", "exec"),
        ("subprocess", "Popen"),
    ]
    .iter()
    .enumerate()
    {
        let marker = dir.path().join(format!("executed-{i}"));
        let command = format!("touch {}", marker.display());
        let code = format!("open({:?}, 'w')", marker.display().to_string());
        let arg = if *module == "builtins" { code } else { command };
        let mut pickle = vec![0x80, 2];
        pickle.extend_from_slice(format!("c{module}\n{name}\n").as_bytes());
        put_str(&mut pickle, &arg);
        pickle.extend_from_slice(b"\x85R.");
        let pth = write(
            dir.path(),
            &format!("evil{i}.pth"),
            &zip_of(&[("archive/data.pkl", &pickle, false)]),
        );
        let out = vitae(&[
            "check",
            "--checkpoint",
            p(&pth),
            "--config",
            p(&tiny().config),
        ]);
        assert_refused(&out, &format!("{module}.{name}"));
        assert!(!marker.exists(), "{module}.{name} ran");
    }
}

// ---- 2. memory bounded by what the input holds ---------------------------------------------

#[test]
fn a_small_pth_whose_pickle_inflates_hugely_is_refused_unread() {
    // 48 MiB of `]0` (new list, pop) deflate to well under 1 MB. Before: every list stayed on
    // the unpickler's heap, 24 M objects, far past the address-space limit (SIGABRT).
    let pickle: Vec<u8> = [&[0x80u8, 2][..], &b"]0".repeat(24 << 20), b"N."].concat();
    let dir = tempfile::tempdir().unwrap();
    let pth = write(
        dir.path(),
        "bomb.pth",
        &zip_of(&[("archive/data.pkl", &pickle, true)]),
    );
    assert!(std::fs::metadata(&pth).unwrap().len() < 1 << 20);
    let out = vitae(&[
        "check",
        "--checkpoint",
        p(&pth),
        "--config",
        p(&tiny().config),
    ]);
    assert_refused(&out, "times its own size");
}

#[test]
fn many_views_of_one_storage_are_refused_before_they_are_materialized() {
    // One 64 KiB storage, 300 keys each viewing it 64 times over (stride 0): 1.2 GB of f32
    // from a 100 KB file. Before: materialized until the allocator aborted.
    let keys: Vec<String> = (0..300).map(|i| format!("w{i}")).collect();
    let views: Vec<View<'_>> = keys
        .iter()
        .map(|k| {
            (
                k.as_str(),
                "0",
                16384,
                0,
                &[64u32, 16384][..],
                &[0u32, 1][..],
            )
        })
        .collect();
    let storage = vec![0u8; 16384 * 4];
    let archive = zip_of(&[
        ("archive/data.pkl", &views_pickle(&views), false),
        ("archive/data/0", &storage, false),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let pth = write(dir.path(), "views.pth", &archive);
    let out = vitae(&[
        "check",
        "--checkpoint",
        p(&pth),
        "--config",
        p(&tiny().config),
    ]);
    assert_refused(&out, "distinct storages the file holds");
}

#[test]
fn a_storage_entry_that_inflates_past_the_archive_is_refused_unread() {
    // A storage claiming 2^40 elements whose deflated entry really inflates to 1.25 GiB (from
    // about 1.2 MB). Before: read until memory ran out (here: "out of memory" at the 1 GiB
    // limit, after 530 MB of RSS; unbounded, it reads the whole entry), then refused.
    let big = vec![0u8; 1280 << 20];
    let views: [View<'_>; 1] = [("w", "0", 0, 0, &[1], &[1])];
    let mut pickle = views_pickle(&views);
    // numel 2^40: patch the storage's `J` operand (0) into a LONG1 of 2^40.
    let needle = [b'J', 0, 0, 0, 0, b't', b'Q'];
    let at = pickle
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    pickle.splice(at..at + 5, [0x8a, 6, 0, 0, 0, 0, 0, 1]);
    let archive = zip_of(&[
        ("archive/data.pkl", &pickle, false),
        ("archive/data/0", &big, true),
    ]);
    drop(big);
    let dir = tempfile::tempdir().unwrap();
    let pth = write(dir.path(), "inflating.pth", &archive);
    assert!(archive.len() < 4 << 20, "{}", archive.len());
    let out = vitae(&[
        "check",
        "--checkpoint",
        p(&pth),
        "--config",
        p(&tiny().config),
    ]);
    assert_refused(&out, "times its own size");
}

#[test]
fn devices_and_fifos_are_refused_as_every_kind_of_input() {
    let t = tiny();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.npy");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let out_path = dir.path().join("out.npy");
    let out = p(&out_path);
    for dev in ["/dev/zero", "/dev/urandom", p(&fifo)] {
        let what = if dev == p(&fifo) {
            "FIFO"
        } else {
            "character device"
        };
        let cases: Vec<Vec<&str>> = vec![
            vec!["check", "--checkpoint", dev, "--config", p(&t.config)],
            vec!["check", "--checkpoint", p(&t.pth), "--config", dev],
            vec!["run", "--model", p(&t.blob), "--input", dev, "--out", out],
            vec!["run", "--model", dev, "--input", p(&t.input), "--out", out],
            vec!["inspect", dev],
            vec![
                "quantize",
                "--checkpoint",
                p(&t.pth),
                "--config",
                p(&t.config),
                "--calib",
                dev,
                "--out",
                out,
            ],
            diff_args(p(&t.blob), p(&t.pth), p(&t.config), dev),
            vec!["eval", "--model", p(&t.blob), "--data", dev],
        ];
        for args in cases {
            let output = vitae(&args);
            assert_refused(&output, what);
            assert!(!out_path.exists(), "{args:?} wrote an output");
        }
    }
}

#[test]
fn config_sizes_are_checked_against_ceilings_before_allocation() {
    // Before: `stages` 10^11 allocated per-stage vectors of that length (SIGABRT), 2^62
    // panicked with "capacity overflow" (exit 1), NC_depth 10^8 built 10^8 blocks of keys.
    let t = tiny();
    let dir = tempfile::tempdir().unwrap();
    let base: serde_json::Value = serde_json::from_str(TINY).unwrap();
    let cases: [(&str, serde_json::Value, &str); 6] = [
        (
            "stages",
            serde_json::json!(100_000_000_000u64),
            "stages = 100000000000",
        ),
        (
            "stages",
            serde_json::json!(1u64 << 62),
            "above the supported maximum",
        ),
        (
            "NC_depth",
            serde_json::json!(100_000_000u64),
            "NC_depth[0] = 100000000",
        ),
        ("img_size", serde_json::json!(1u64 << 40), "img_size"),
        ("token_dims", serde_json::json!(1u64 << 60), "token_dims"),
        ("num_classes", serde_json::json!(1u64 << 33), "num_classes"),
    ];
    for (key, value, needle) in cases {
        let mut config = base.clone();
        config[key] = value;
        // Scalars are repeated per stage (the official repeatOrNot): with a list here the
        // old code stopped at the list's length instead of allocating.
        config["embed_dims"] = serde_json::json!(4);
        let path = write(
            dir.path(),
            &format!("{key}.json"),
            config.to_string().as_bytes(),
        );
        for args in [
            vec!["check", "--checkpoint", p(&t.pth), "--config", p(&path)],
            vec!["bench-reference", "--config", p(&path), "--iters", "1"],
        ] {
            assert_refused(&vitae(&args), needle);
        }
    }
}

#[test]
fn huge_images_and_resize_factors_are_refused_before_resampling() {
    // A 16,000,000×1 PNG (16 MB of pixels, a few KB of file): the decoder's own limit let it
    // through and the resize step allocated gigabytes. --resize 10^5 and 2^64−1 did too.
    let t = tiny();
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    image::GrayImage::new(16_000_000, 1)
        .save(images.join("wide.png"))
        .unwrap();
    let out_path = dir.path().join("q.vblob");
    let quantize = |extra: &[&str]| {
        let mut args = quantize_args(p(&t.pth), p(&t.config), p(&images), p(&out_path));
        args.extend_from_slice(extra);
        vitae(&args)
    };
    assert_refused(&quantize(&[]), "wide.png");
    assert_refused(&quantize(&["--resize", "256"]), "wide.png");
    let tall = image::GrayImage::new(1, 16_000);
    std::fs::remove_file(images.join("wide.png")).unwrap();
    tall.save(images.join("tall.png")).unwrap();
    assert_refused(&quantize(&["--resize", "8000"]), "pixels to resample");
    for r in ["100000", "18446744073709551615"] {
        assert_refused(&quantize(&["--resize", r]), "--resize");
    }
    assert!(!out_path.exists());
}

/// 224×224 pixels at a downsample ratio of 2: 12,544 tokens of 4 channels, from a handful of
/// weights.
const MANY_TOKENS: &str = r#"{"img_size": 224, "in_chans": 1, "num_classes": 2, "stages": 1,
    "embed_dims": [4], "token_dims": [4], "downsample_ratios": [2], "kernel_size": [3],
    "dilations": [[1]], "RC_tokens_type": ["performer_less"], "NC_tokens_type": ["transformer"],
    "NC_heads": [2], "NC_group": [1], "NC_depth": [1], "mlp_ratio": 1.0}"#;

#[test]
fn a_small_config_whose_f32_attention_would_take_gigabytes_is_refused_by_every_subcommand() {
    // Two heads of 12,544² softmax scores: 1.26 GB for the f32 reference, from a 10 kB
    // checkpoint, a 200 kB image and a 400-byte config.
    let t = tiny();
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "tokens.json", MANY_TOKENS.as_bytes());
    let pth = write(dir.path(), "tokens.pth", &pth_for(MANY_TOKENS, Some(8)));
    let input = dir.path().join("x224.npy");
    let image: Vec<f32> = (0..224 * 224).map(|i| (i % 13) as f32 / 13.0).collect();
    vitae::npy::write_npy_f32(&input, &[1, 1, 224, 224], &image).unwrap();
    let out = dir.path().join("out.npy");
    let blob_out = dir.path().join("q.vblob");
    let commands = [
        vec!["check", "--checkpoint", p(&pth), "--config", p(&config)],
        run_checkpoint_args(p(&pth), p(&config), p(&input), p(&out)),
        quantize_args(p(&pth), p(&config), p(&input), p(&blob_out)),
        diff_args(p(&t.blob), p(&pth), p(&config), p(&input)),
        vec!["bench-reference", "--config", p(&config), "--iters", "1"],
    ];
    assert_all_refused(&commands, "MAX_ATTENTION_BYTES");
    assert!(!out.exists() && !blob_out.exists());
}

/// 12,544 tokens through 512 performer normal cells: a small f32 reference working set, but
/// every intermediate of the quantizer's float graph together is gigabytes.
const DEEP: &str = r#"{"img_size": 224, "in_chans": 1, "num_classes": 2, "stages": 2,
    "embed_dims": [4, 4], "token_dims": [4, 4], "downsample_ratios": [2, 1],
    "kernel_size": [3, 3], "dilations": [[1], [1]], "RC_tokens_type": ["performer_less", "none"],
    "NC_tokens_type": "performer", "NC_heads": 1, "NC_group": 1, "NC_depth": [256, 256],
    "mlp_ratio": 1.0}"#;

#[test]
fn a_deep_model_whose_float_graph_would_take_gigabytes_is_refused_by_quantize_and_diff() {
    // A 5 MB checkpoint; `quantize` and `diff` keep every node's output of the float graph for
    // one image.
    let t = tiny();
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "deep.json", DEEP.as_bytes());
    let pth = write(dir.path(), "deep.pth", &pth_for(DEEP, None));
    assert!(std::fs::metadata(&pth).unwrap().len() < 10 << 20);
    let input = dir.path().join("x224.npy");
    let image: Vec<f32> = (0..224 * 224).map(|i| (i % 11) as f32 / 11.0).collect();
    vitae::npy::write_npy_f32(&input, &[1, 1, 224, 224], &image).unwrap();
    let blob_out = dir.path().join("q.vblob");
    let commands = [
        quantize_args(p(&pth), p(&config), p(&input), p(&blob_out)),
        diff_args(p(&t.blob), p(&pth), p(&config), p(&input)),
    ];
    assert_all_refused(&commands, "float activations");
    assert!(!blob_out.exists());
    // The f32 reference itself runs it within the limit (the refusal is the quantizer's).
    let out = dir.path().join("logits.npy");
    let run = vitae(&[
        "run",
        "--checkpoint",
        p(&pth),
        "--config",
        p(&config),
        "--input",
        p(&input),
        "--out",
        p(&out),
    ]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn bench_reference_refuses_more_random_weights_than_fit_well_under_a_gigabyte() {
    // One normal cell 4,096 channels wide on a single token: 108 M parameters (433 MB of f32)
    // that bench-reference would make up. Before: accepted up to 2^28 (1 GiB of f32); this one
    // ran in 889 MiB of RSS.
    let wide = r#"{"img_size": 4, "in_chans": 1, "num_classes": 2, "stages": 1,
        "embed_dims": [4096], "token_dims": [4096], "downsample_ratios": [4], "kernel_size": [3],
        "dilations": [[1]], "RC_tokens_type": ["performer_less"], "NC_heads": [1],
        "NC_group": [64], "NC_depth": [1], "mlp_ratio": 1.0}"#;
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "wide.json", wide.as_bytes());
    let out = vitae(&["bench-reference", "--config", p(&config), "--iters", "1"]);
    assert_refused(&out, "random weights");
}

#[test]
fn a_calibration_npy_larger_than_the_calibration_budget_is_refused_from_its_header() {
    // A sparse 640 MB .npy of 2.5 M tiny images (no disk blocks): its header says what it
    // holds. Before: read whole, then copied image by image (signal 6 at the 1 GiB limit).
    let t = tiny();
    let dir = tempfile::tempdir().unwrap();
    let n = 2_500_000usize;
    let calib = dir.path().join("calib.npy");
    sparse_npy(&calib, n, false);
    let out_path = dir.path().join("q.vblob");
    let quantize = |extra: &[&str]| {
        let mut args = quantize_args(p(&t.pth), p(&t.config), p(&calib), p(&out_path));
        args.extend_from_slice(extra);
        vitae(&args)
    };
    assert_refused(&quantize(&[]), "--max-calib");
    assert!(!out_path.exists());
    // With --max-calib only the images used are read.
    let ok = quantize(&["--max-calib", "3"]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("3 calibration images"));
    // The same array in Fortran order is read whole whatever --max-calib says: refused whole.
    sparse_npy(&calib, n, true);
    assert_refused(&quantize(&["--max-calib", "3"]), "--max-calib");
}

/// A float32 `.npy` of `n` zero 1×8×8 images whose data is a hole in the file (no disk blocks).
fn sparse_npy(path: &Path, n: usize, fortran: bool) {
    let order = if fortran { "True" } else { "False" };
    let mut dict =
        format!("{{'descr': '<f4', 'fortran_order': {order}, 'shape': ({n}, 1, 8, 8), }}");
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut head = b"\x93NUMPY\x01\x00".to_vec();
    head.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    head.extend_from_slice(dict.as_bytes());
    std::fs::write(path, &head).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len((head.len() + n * 64 * 4) as u64)
        .unwrap();
}

#[test]
fn a_stored_zip_entry_claiming_more_than_the_archive_holds_is_refused_unread() {
    // A stored storage entry whose sizes claim 3 GiB in a 2 kB archive. Before: the reader
    // reserved the 3 GiB it claimed (here: "cannot allocate" at the 1 GiB limit; without one, the
    // address space was taken) before finding the bytes absent.
    let numel: u32 = 3 << 28; // 3 GiB of f32
    let views: [View<'_>; 1] = [("w", "0", numel, 0, &[1], &[1])];
    let storage = [0u8; 16];
    let mut archive = zip_of(&[
        ("archive/data.pkl", &views_pickle(&views), false),
        ("archive/data/0", &storage, false),
    ]);
    let claim = (numel as u64 * 4) as u32;
    let name = b"archive/data/0";
    // Local header: sizes at 18 (compressed) and 22; central directory: at 20 and 24.
    for (signature, at) in [(b"PK\x03\x04", 18usize), (b"PK\x01\x02", 20)] {
        let headers: Vec<usize> = archive
            .windows(4)
            .enumerate()
            .filter(|(_, w)| *w == &signature[..])
            .map(|(i, _)| i)
            .collect();
        let mut patched = 0;
        for h in headers {
            let name_at = if signature == b"PK\x03\x04" {
                h + 30
            } else {
                h + 46
            };
            if archive.get(name_at..name_at + name.len()) == Some(&name[..]) {
                archive[h + at..h + at + 4].copy_from_slice(&claim.to_le_bytes());
                archive[h + at + 4..h + at + 8].copy_from_slice(&claim.to_le_bytes());
                patched += 1;
            }
        }
        assert_eq!(patched, 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let pth = write(dir.path(), "claims.pth", &archive);
    let out = vitae(&[
        "check",
        "--checkpoint",
        p(&pth),
        "--config",
        p(&tiny().config),
    ]);
    assert_refused(&out, "archive/data/0");
    assert_refused(&out, "the archive holds");
    // Declared larger than the bytes it stores, within the archive: refused the same way.
    let mut short = zip_of(&[
        (
            "archive/data.pkl",
            &views_pickle(&[("w", "0", 64, 0, &[1], &[1])]),
            false,
        ),
        ("archive/data/0", &[0u8; 16], false),
    ]);
    let h = short
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"PK\x01\x02")
        .map(|(i, _)| i)
        .find(|&h| short.get(h + 46..h + 46 + name.len()) == Some(&name[..]))
        .unwrap();
    short[h + 24..h + 28].copy_from_slice(&256u32.to_le_bytes());
    let pth = write(dir.path(), "short.pth", &short);
    let out = vitae(&[
        "check",
        "--checkpoint",
        p(&pth),
        "--config",
        p(&tiny().config),
    ]);
    assert_refused(&out, "stored");
}

/// The tiny blob with `edit` applied and the checksum recomputed (what a crafted blob does).
fn crafted_blob(edit: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut bytes = std::fs::read(&tiny().blob).unwrap();
    edit(&mut bytes);
    bytes[CRC_FIELD_OFFSET..CRC_FIELD_OFFSET + 4].fill(0);
    let crc = crc32(&bytes);
    bytes[CRC_FIELD_OFFSET..CRC_FIELD_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    bytes
}

#[test]
fn a_blob_claiming_a_4_gib_arena_is_refused_by_every_subcommand() {
    // arena_len 0xFFFFFFF0 with a valid checksum: `run` allocated 4 GiB (SIGABRT here) and
    // `inspect` printed "45784.659×" the lower bound.
    let t = tiny();
    let blob = crafted_blob(|b| b[24..28].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes()));
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "arena.vblob", &blob);
    let out = dir.path().join("y.npy");
    for args in [
        vec![
            "run",
            "--model",
            p(&path),
            "--input",
            p(&t.input),
            "--out",
            p(&out),
        ],
        vec!["inspect", p(&path)],
        vec!["inspect", "--json", p(&path)],
        diff_args(p(&path), p(&t.pth), p(&t.config), p(&t.input)),
    ] {
        assert_refused(&vitae(&args), "above the 268435456-byte ceiling");
    }
    assert!(!out.exists());
}

// ---- 3. outputs that would destroy inputs or devices ---------------------------------------

#[test]
fn outputs_that_are_inputs_links_to_inputs_or_devices_are_refused() {
    let t = tiny();
    let dir = tempfile::tempdir().unwrap();
    // Copies, so that a regression cannot damage the shared tiny files.
    let copy = |from: &Path, name: &str| {
        let to = dir.path().join(name);
        std::fs::copy(from, &to).unwrap();
        to
    };
    let (config, pth, input, blob) = (
        copy(&t.config, "c.json"),
        copy(&t.pth, "m.pth"),
        copy(&t.input, "x.npy"),
        copy(&t.blob, "m.vblob"),
    );
    let hard = dir.path().join("hard.npy");
    std::fs::hard_link(&input, &hard).unwrap();
    let soft = dir.path().join("soft.pth");
    std::os::unix::fs::symlink(&pth, &soft).unwrap();
    let before: Vec<Vec<u8>> = [&config, &pth, &input, &blob]
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    let run_ref = |out: &Path| {
        vitae(&[
            "run",
            "--checkpoint",
            p(&pth),
            "--config",
            p(&config),
            "--input",
            p(&input),
            "--out",
            p(out),
        ])
    };
    for out in [&pth, &config, &input, &hard, &soft] {
        assert_refused(&run_ref(out), "is the same file as the input");
    }
    let run_blob = vitae(&[
        "run",
        "--model",
        p(&blob),
        "--input",
        p(&input),
        "--out",
        p(&blob),
    ]);
    assert_refused(&run_blob, "is the same file as the input");
    let q = |out: &Path, report: &Path| {
        vitae(&[
            "quantize",
            "--checkpoint",
            p(&pth),
            "--config",
            p(&config),
            "--calib",
            p(&input),
            "--precision",
            "mixed",
            "--out",
            p(out),
            "--report",
            p(report),
            "--no-progress",
        ])
    };
    let fresh = dir.path().join("q.vblob");
    assert_refused(&q(&fresh, &fresh), "is the same file as the output");
    assert_refused(
        &q(&input, &dir.path().join("r.json")),
        "is the same file as the input",
    );
    assert_refused(&q(&fresh, &config), "is the same file as the input");
    assert!(!fresh.exists());
    // Devices, reached through links here so that even a regression cannot replace the
    // system's own nodes: the check follows the link and refuses.
    for device in ["/dev/null", "/dev/full"] {
        let link = dir.path().join(format!("{}.npy", &device[5..]));
        std::os::unix::fs::symlink(device, &link).unwrap();
        assert_refused(&run_ref(&link), "is a character device, not a regular file");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
    let after: Vec<Vec<u8>> = [&config, &pth, &input, &blob]
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    assert!(before == after, "an input changed");
    // The same commands with distinct outputs work (the guard is not over-eager).
    let ok = run_ref(&dir.path().join("logits.npy"));
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

// ---- 4. terminal injection -----------------------------------------------------------------

const EVIL: &str = "\u{1b}]0;pwned\u{7}\r\u{1b}[2Jerror: ok";

#[test]
fn names_from_inputs_reach_the_terminal_escaped() {
    let t = tiny();
    let dir = tempfile::tempdir().unwrap();
    // A blob whose model name and first op name carry ESC, BEL and CR (checksum patched).
    let original = std::fs::read(&t.blob).unwrap();
    let (model_name, first_op) = {
        let aligned = vitae_edge::format::AlignedBytes::new(&original);
        let m = vitae_edge::format::Model::parse(aligned.as_bytes()).unwrap();
        (m.name().to_string(), m.op(0).unwrap().name.to_string())
    };
    assert_eq!(model_name, "NAME-TO-BE-PATCHED-01234");
    let blob = crafted_blob(|b| {
        let name = model_name.as_bytes();
        let at = b.windows(name.len()).position(|w| w == name).unwrap();
        b[at..at + name.len()].copy_from_slice(EVIL.as_bytes());
        let op = first_op.as_bytes();
        let at = b.windows(op.len()).position(|w| w == op).unwrap();
        b[at] = 0x1b;
    });
    assert_eq!(EVIL.len(), "NAME-TO-BE-PATCHED-01234".len());
    let path = write(dir.path(), "evil.vblob", &blob);
    for args in [
        vec!["inspect", p(&path)],
        vec!["inspect", "--json", p(&path)],
    ] {
        let out = vitae(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for &byte in &[0x1bu8, 0x07, b'\r'] {
            assert!(
                !out.stdout.contains(&byte),
                "{args:?} printed byte {byte:#x}"
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("1b"), "{text}");
    }
    // A checkpoint key with an escape sequence and a newline that would fake an `error:` line.
    let mut tensors = tiny_tensors();
    tensors.push((format!("extra{EVIL}\nerror: all good"), vec![1], vec![0.0]));
    let pth = write(dir.path(), "evil.pth", &pth_of(&tensors));
    let out = vitae(&["check", "--checkpoint", p(&pth), "--config", p(&t.config)]);
    assert_refused(&out, "does not match");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.stderr.contains(&0x1b) && !out.stderr.contains(&b'\r'),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    assert!(err.contains("extra\\u{1b}]0;pwned"), "{err}");
}

#[test]
fn a_config_string_in_the_release_reason_reaches_stdout_escaped() {
    // `NC_tokens_type` is matched by substring, so "transformer<ESC>]0;pwned<BEL>" is a valid
    // transformer cell, and only the current release accepts a name other than exactly
    // 'transformer'. Before: `check` printed that name raw in its "the model of the current
    // release (only it has NC_tokens_type[1] = '…')" line, retitling the terminal.
    let t = tiny();
    let dir = tempfile::tempdir().unwrap();
    let mut config: serde_json::Value = serde_json::from_str(TINY).unwrap();
    config["NC_tokens_type"] =
        serde_json::json!(["transformer", "transformer\u{1b}]0;pwned\u{7}\r"]);
    let path = write(dir.path(), "evil.json", config.to_string().as_bytes());
    let evil_dir = dir.path().join("dir\u{1b}[2J");
    std::fs::create_dir(&evil_dir).unwrap();
    let evil_path = evil_dir.join("evil.json");
    std::fs::copy(&path, &evil_path).unwrap();
    for config in [&path, &evil_path] {
        let out = vitae(&["check", "--checkpoint", p(&t.pth), "--config", p(config)]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        for &byte in &[0x1bu8, 0x07, b'\r'] {
            assert!(
                !out.stdout.contains(&byte),
                "printed byte {byte:#x}: {text:?}"
            );
        }
        assert!(text.contains("the current release"), "{text}");
        assert!(text.contains("NC_tokens_type[1]"), "{text}");
    }
}

// ---- 5. silently wrong results -------------------------------------------------------------

#[test]
fn resize_below_the_model_input_is_a_usage_error_not_silently_raised() {
    // Before: `--resize 4` for an 8x8 model was raised to 8 without a word.
    let t = tiny();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("q.vblob");
    let q = |resize: &str| {
        vitae(&[
            "quantize",
            "--checkpoint",
            p(&t.pth),
            "--config",
            p(&t.config),
            "--calib",
            p(&t.images),
            "--resize",
            resize,
            "--out",
            p(&out_path),
            "--no-progress",
        ])
    };
    assert_refused(&q("4"), "--resize 4");
    assert!(!out_path.exists());
    let ok = q("8");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// `--flash-budget` and `--max-logit-error` steer `--precision mixed` only: elsewhere they are
/// refused rather than ignored, and with mixed their values are range-checked; a budget below
/// the smallest possible mix is a usage error naming it. No output file in any case.
#[test]
fn mixed_precision_flags_are_refused_where_they_do_not_apply_or_out_of_range() {
    let t = tiny();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("q.vblob");
    let q = |precision: &str, flag: &str, value: &str| {
        vitae(&[
            "quantize",
            "--checkpoint",
            p(&t.pth),
            "--config",
            p(&t.config),
            "--calib",
            p(&t.images),
            "--out",
            p(&out_path),
            "--no-progress",
            "--precision",
            precision,
            &format!("{flag}={value}"),
        ])
    };
    for precision in ["int8", "int4", "fp16"] {
        for (flag, value) in [("--flash-budget", "100000"), ("--max-logit-error", "0.01")] {
            let out = q(precision, flag, value);
            assert_refused(&out, flag);
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("--precision mixed only"),
                "{precision} {flag}"
            );
        }
    }
    for value in ["0", "-1", "nan", "inf", "1.5"] {
        assert_refused(&q("mixed", "--max-logit-error", value), "--max-logit-error");
    }
    assert_refused(
        &q("mixed", "--flash-budget", "1"),
        "--flash-budget 1 bytes cannot be met",
    );
    assert!(!out_path.exists());
}

#[test]
fn non_finite_or_out_of_range_numeric_flags_are_usage_errors() {
    // Before: --std inf was accepted and every calibration value became 0.
    let t = tiny();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("q.vblob");
    let q = |flag: &str, value: &str| {
        vitae(&[
            "quantize",
            "--checkpoint",
            p(&t.pth),
            "--config",
            p(&t.config),
            "--calib",
            p(&t.images),
            "--out",
            p(&out_path),
            "--no-progress",
            &format!("{flag}={value}"),
        ])
    };
    for (flag, value) in [
        ("--std", "inf"),
        ("--std", "0"),
        ("--std", "-1"),
        ("--std", "NaN"),
        ("--mean", "nan"),
        ("--mean", "-inf"),
        ("--mean", "1e30"),
        ("--max-calib", "0"),
        ("--flash-budget", "0"),
    ] {
        assert_refused(&q(flag, value), flag);
    }
    assert!(!out_path.exists());
    // In range, it works.
    let ok = q("--std", "0.25");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(out_path.exists());
    let bench = vitae(&["bench-reference", "--config", p(&t.config), "--iters", "0"]);
    assert_refused(&bench, "--iters");
}

// ---- 6. requantization at the extremes -----------------------------------------------------

/// A blob of one int8 linear layer on a `1 × 1 × k` input whose weights are zero, so each
/// output's accumulator is its bias: requantized by `requant`, output scale 1, zero point 0.
fn linear_blob(bias: &[i32], requant: vitae_edge::quant::Requant, k: usize) -> Vec<u8> {
    use vitae_edge::ops::image::{QuantizeImageOp, QuantizeParams};
    use vitae_edge::ops::linear::{LinearParams, LinearS8Op};
    let n = bias.len();
    let tensor = |c: usize, at: u32, scale: f32| TensorDesc {
        dtype: DType::I8 as u8,
        reserved0: 0,
        flags: 0,
        h: 1,
        w: 1,
        c: c as u16,
        row0: 0,
        arena_offset: at,
        byte_len: c as u32,
        scale,
        zero_point: 0,
        name: StrRef::default(),
    };
    let mut w = BlobWriter::new();
    let mut input = tensor(k, 0, 1.0 / 64.0);
    input.name = w.string("x");
    let mut output = tensor(n, 16, 1.0);
    output.name = w.string("y");
    let (x, y) = (w.tensor(input), w.tensor(output));
    let weights = w.data(&vec![0i8; n * k]);
    let bias = w.data(bias);
    let requant = w.data(&vec![requant; n]);
    w.op::<QuantizeImageOp>(
        &[],
        x,
        &QuantizeParams {
            inv_scale: 64.0,
            zero_point: 0,
        },
        k as u64,
        "quantize",
    );
    let linear = w.op::<LinearS8Op>(
        &[x],
        y,
        &LinearParams {
            tokens: 1,
            in_features: k as u16,
            out_features: n as u16,
            out_zp: 0,
            weights,
            bias,
            requant,
            lut: DataRef::default(),
        },
        (n * k) as u64,
        "head",
    );
    let scratch = w.ops[linear].scratch_len;
    w.ops[linear].scratch_offset = 32;
    w.arena_len = 32 + scratch.div_ceil(16) * 16;
    w.arena_lower_bound = w.arena_len;
    let name = w.string("requant-extremes");
    w.meta = Some(ModelMeta {
        input_channels: k as u16,
        input_height: 1,
        input_width: 1,
        num_classes: n as u16,
        input_tensor: x,
        output_tensor: y,
        precision: 0,
        reserved0: [0; 3],
        macs: [(n * k) as u32, 0],
        name,
        reserved: [0; 4],
    });
    w.finish()
}

#[test]
fn a_crafted_blob_at_the_largest_multiplier_saturates_with_the_accumulators_sign() {
    // M = 2^31 − 1 with shift 0 is a valid requantization (≈ ×1). With the 32-bit final step
    // that issue 21 (class 6) replaced, `(acc·M) >> 30` wrapped for |result| ≥ 2^30: these
    // logits came out [−2, 1, 127, 127, 100, −100], three of the four extremes with the wrong
    // sign (checked by putting the old two lines back into `quant::requantize`).
    use vitae_edge::quant::Requant;
    let biases = [i32::MAX, i32::MIN, 1 << 30, -(1 << 30) - 1, 100, -100];
    let requant = Requant {
        multiplier: i32::MAX,
        shift: 0,
    };
    let dir = tempfile::tempdir().unwrap();
    let blob = write(
        dir.path(),
        "extremes.vblob",
        &linear_blob(&biases, requant, 4),
    );
    let input = dir.path().join("x.npy");
    vitae::npy::write_npy_f32(&input, &[1, 4, 1, 1], &[0.5, -0.25, 1.0, 0.0]).unwrap();
    let out_path = dir.path().join("y.npy");
    let out = vitae(&[
        "run",
        "--model",
        p(&blob),
        "--input",
        p(&input),
        "--out",
        p(&out_path),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logits = vitae::npy::read_npy_f32(&out_path).unwrap();
    assert_eq!(logits.shape, vec![1, biases.len()]);
    assert_eq!(
        logits.data,
        vec![127.0, -128.0, 127.0, -128.0, 100.0, -100.0]
    );
}

/// The tiny files themselves work end to end (the suite's cases fail for their own reason).
#[test]
fn the_tiny_model_runs() {
    let t = tiny();
    let out_path = t.root.join("ok-logits.npy");
    let out = vitae(&[
        "run",
        "--model",
        p(&t.blob),
        "--input",
        p(&t.input),
        "--out",
        p(&out_path),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = vitae(&["check", "--checkpoint", p(&t.pth), "--config", p(&t.config)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = vitae(&["inspect", p(&t.blob)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
