//! `vitae eval` end to end on the committed demo model (host-tools/train/digits; no fixtures
//! needed): its counts against top-1/top-5 computed here from `vitae run`'s logits, the same
//! numbers whatever the chunk size and whether the `.npz` is stored or deflated, an image
//! folder against an `.npz` of the same pixels, and bad datasets as clear input errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vitae::calib_data::{ImagePrep, load_pixels};
use vitae::npy::{encode_npy_f32, encode_npy_i64, encode_npy_u8, read_npy_f32, write_npz};

fn vitae(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vitae"))
        .args(args)
        .output()
        .expect("run vitae")
}

fn ok(output: Output) -> Output {
    assert!(
        output.status.success(),
        "vitae failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn digits(file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../train/digits")
        .join(file)
        .display()
        .to_string()
}

fn reference_args() -> Vec<String> {
    vec![
        "--checkpoint".into(),
        digits("model.pth"),
        "--config".into(),
        digits("kwargs.json"),
    ]
}

/// Deterministic pseudo-random values in [-2, 2).
fn noise(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 22) as f32 - 2.0
        })
        .collect()
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |best, (i, v)| if *v > row[best] { i } else { best })
}

/// Classes ordered by logit, largest first, ties by index: computed by sorting, not by the
/// counting `vitae eval` does.
fn ranked(row: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    order
}

fn eval_json(args: &[String]) -> serde_json::Value {
    let mut all: Vec<&str> = vec!["eval", "--json", "--no-progress"];
    all.extend(args.iter().map(String::as_str));
    let out = ok(vitae(&all));
    serde_json::from_slice(&out.stdout).expect("eval --json prints JSON")
}

/// The counts of a result, without the timings.
fn counts(v: &serde_json::Value) -> serde_json::Value {
    let mut v = v.clone();
    v.as_object_mut().unwrap().remove("seconds");
    v.as_object_mut().unwrap().remove("data");
    for e in v["engines"].as_array_mut().unwrap() {
        e.as_object_mut().unwrap().remove("seconds");
    }
    v
}

struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    blob: String,
    x: Vec<f32>,
    n: usize,
}

/// 37 pseudo-random digit-sized images, and an int8 blob calibrated on them.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let n = 37;
    let x = noise(n * 32 * 32, 7);
    let x_npy = path.join("x.npy");
    std::fs::write(&x_npy, encode_npy_f32(&[n, 1, 32, 32], &x).unwrap()).unwrap();
    let blob = path.join("int8.vblob").display().to_string();
    let mut args = vec!["quantize".to_string()];
    args.extend(reference_args());
    args.extend([
        "--calib".into(),
        x_npy.display().to_string(),
        "--out".into(),
        blob.clone(),
        "--no-progress".into(),
    ]);
    ok(vitae(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    Setup {
        _dir: dir,
        dir: path,
        blob,
        x,
        n,
    }
}

fn run_logits(s: &Setup, engine: &[String]) -> Vec<f32> {
    let out = s.dir.join("logits.npy");
    let _ = std::fs::remove_file(&out);
    let mut args = vec!["run".to_string()];
    args.extend(engine.iter().cloned());
    args.extend([
        "--input".into(),
        s.dir.join("x.npy").display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ]);
    ok(vitae(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    read_npy_f32(&out).unwrap().data
}

#[test]
fn eval_counts_match_the_logits_of_vitae_run() {
    let s = setup();
    let reference = run_logits(&s, &reference_args());
    let blob = run_logits(&s, &["--model".into(), s.blob.clone()]);
    // Every other label is the reference's own top-1, so top-1 is far from 0 and from 100 %.
    let labels: Vec<i64> = (0..s.n)
        .map(|i| {
            if i % 2 == 0 {
                argmax(&reference[i * 10..][..10]) as i64
            } else {
                (i * 7 % 10) as i64
            }
        })
        .collect();
    let npz = s.dir.join("data.npz");
    write_npz(
        &npz,
        &[
            ("x", encode_npy_f32(&[s.n, 1, 32, 32], &s.x).unwrap()),
            ("y", encode_npy_i64(&[s.n], &labels).unwrap()),
        ],
    )
    .unwrap();
    let mut args = reference_args();
    args.extend([
        "--model".into(),
        s.blob.clone(),
        "--data".into(),
        npz.display().to_string(),
        "--batch".into(),
        "5".into(),
    ]);
    let result = eval_json(&args);
    assert_eq!(result["images"], s.n);
    let engines = result["engines"].as_array().unwrap();
    assert_eq!(engines.len(), 2);
    for (engine, logits) in engines.iter().zip([&reference, &blob]) {
        let (mut top1, mut top5, mut class_top1) = (0, 0, [0usize; 10]);
        for (row, &label) in logits.chunks_exact(10).zip(&labels) {
            let rank = ranked(row).iter().position(|&c| c as i64 == label).unwrap();
            top1 += usize::from(rank == 0);
            top5 += usize::from(rank < 5);
            if rank == 0 {
                class_top1[label as usize] += 1;
            }
        }
        assert_eq!(engine["top1_correct"], top1, "{engine}");
        assert_eq!(engine["top5_correct"], top5, "{engine}");
        assert_eq!(engine["class_top1_correct"], serde_json::json!(class_top1));
        assert!(
            top1 > 0 && top1 < s.n,
            "the test needs both right and wrong"
        );
    }
    let agree = reference
        .chunks_exact(10)
        .zip(blob.chunks_exact(10))
        .filter(|(r, b)| argmax(r) == argmax(b))
        .count();
    assert_eq!(
        engines[1]["agreement_with_reference"],
        agree as f64 / s.n as f64
    );
    assert!(engines[0]["agreement_with_reference"].is_null());

    // The chunk size and the archive's compression change nothing.
    let whole = eval_json(&args[..args.len() - 2]);
    assert_eq!(counts(&whole), counts(&result));
    let deflated = s.dir.join("deflated.npz");
    {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&deflated).unwrap());
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in [
            ("y.npy", encode_npy_i64(&[s.n], &labels).unwrap()),
            ("x.npy", encode_npy_f32(&[s.n, 1, 32, 32], &s.x).unwrap()),
        ] {
            zip.start_file(name, options).unwrap();
            zip.write_all(&bytes).unwrap();
        }
        zip.finish().unwrap();
    }
    let mut deflated_args = args.clone();
    let at = deflated_args.iter().position(|a| a == "--data").unwrap() + 1;
    deflated_args[at] = deflated.display().to_string();
    assert_eq!(counts(&eval_json(&deflated_args)), counts(&result));

    // --limit takes the first images.
    let mut limited = args.clone();
    limited.extend(["--limit".into(), "10".into()]);
    let first = eval_json(&limited);
    assert_eq!(first["images"], 10);
    let top1_first10 = blob
        .chunks_exact(10)
        .zip(&labels)
        .take(10)
        .filter(|(row, l)| argmax(row) as i64 == **l)
        .count();
    assert_eq!(first["engines"][1]["top1_correct"], top1_first10);
}

#[test]
fn an_image_folder_scores_like_an_npz_of_its_pixels() {
    let s = setup();
    let root = s.dir.join("folder");
    // Three classes; class "b" has a nested folder; a text file is skipped.
    let mut files = Vec::new();
    for (class, count) in [("a", 3usize), ("b", 4), ("c", 2)] {
        for i in 0..count {
            let sub = if class == "b" && i >= 2 {
                root.join(class).join("more")
            } else {
                root.join(class)
            };
            std::fs::create_dir_all(&sub).unwrap();
            let (w, h) = (40 + i as u32, 30);
            let px: Vec<u8> = noise((w * h) as usize, 11 + i as u32 + class.len() as u32 * 100)
                .iter()
                .map(|v| ((v + 2.0) * 63.0) as u8)
                .collect();
            let file = sub.join(format!("img{i}.png"));
            image::save_buffer(&file, &px, w, h, image::ColorType::L8).unwrap();
            files.push(file);
        }
    }
    std::fs::write(root.join("a").join("notes.txt"), b"not an image").unwrap();
    let prep = ImagePrep {
        size: 32,
        resize: Some(36),
        crop: Some(34),
        channels: 1,
        mean: vec![0.25],
        std: vec![0.5],
    };
    let pixels: Vec<u8> = files
        .iter()
        .flat_map(|f| load_pixels(f, &prep).unwrap())
        .collect();
    let labels: Vec<i64> = vec![0, 0, 0, 1, 1, 1, 1, 2, 2];
    let npz = s.dir.join("pixels.npz");
    write_npz(
        &npz,
        &[
            ("x", encode_npy_u8(&[9, 32, 32, 1], &pixels).unwrap()),
            ("y", encode_npy_i64(&[9], &labels).unwrap()),
        ],
    )
    .unwrap();
    let common = |data: &Path| {
        let mut args = reference_args();
        args.extend(
            [
                "--model", &s.blob, "--data", "", "--resize", "36", "--crop", "34", "--mean",
                "0.25", "--std", "0.5",
            ]
            .map(String::from),
        );
        args[7] = data.display().to_string();
        args
    };
    let from_folder = eval_json(&common(&root));
    let from_npz = eval_json(&common(&npz));
    assert_eq!(
        from_folder["class_images"],
        serde_json::json!([3, 4, 2, 0, 0, 0, 0, 0, 0, 0])
    );
    assert_eq!(from_folder["class_names"][1], "b");
    let mut folder_counts = counts(&from_folder);
    let mut npz_counts = counts(&from_npz);
    for v in [&mut folder_counts, &mut npz_counts] {
        v.as_object_mut().unwrap().remove("class_names");
    }
    assert_eq!(folder_counts, npz_counts);
    // The text output names the folder's classes and counts the skipped file.
    let mut args = vec!["eval".to_string(), "--no-progress".into()];
    args.extend(common(&root));
    let text = ok(vitae(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("3 class folders, 9 images, 1 other files skipped"),
        "{text}"
    );
    assert!(text.contains("#2 int8.vblob (int8)"), "{text}");
}

fn assert_input_error(output: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr:\n{err}");
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: ") && first.contains(needle),
        "first line {first:?} lacks {needle:?}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_datasets_are_clear_input_errors() {
    let s = setup();
    let d = &s.dir;
    let x = encode_npy_f32(&[s.n, 1, 32, 32], &s.x).unwrap();
    let good_y: Vec<i64> = (0..s.n as i64).map(|i| i % 10).collect();
    let npz = |name: &str, members: &[(&str, Vec<u8>)]| {
        let path = d.join(name);
        write_npz(&path, members).unwrap();
        path.display().to_string()
    };
    let eval = |data: &str| vitae(&["eval", "--model", &s.blob, "--data", data, "--no-progress"]);

    let mut bad_y = good_y.clone();
    bad_y[3] = 10;
    let path = npz(
        "label.npz",
        &[
            ("x", x.clone()),
            ("y", encode_npy_i64(&[s.n], &bad_y).unwrap()),
        ],
    );
    assert_input_error(
        &eval(&path),
        "label 10 of image 3 is not a class of the model (0..10)",
    );

    let path = npz("no-y.npz", &[("x", x.clone())]);
    assert_input_error(&eval(&path), "has no array 'y' (it holds: x.npy)");

    let path = npz(
        "short-y.npz",
        &[
            ("x", x.clone()),
            ("y", encode_npy_i64(&[3], &[1, 2, 3]).unwrap()),
        ],
    );
    assert_input_error(&eval(&path), "y has shape [3]; expected (37,)");

    let path = npz(
        "shape.npz",
        &[
            ("x", encode_npy_f32(&[2, 1, 16, 16], &[0.0; 512]).unwrap()),
            ("y", encode_npy_i64(&[2], &[0, 1]).unwrap()),
        ],
    );
    assert_input_error(&eval(&path), "x is float32 of shape [2, 1, 16, 16]");

    let mut nan = s.x.clone();
    nan[1500] = f32::NAN;
    let path = npz(
        "nan.npz",
        &[
            ("x", encode_npy_f32(&[s.n, 1, 32, 32], &nan).unwrap()),
            ("y", encode_npy_i64(&[s.n], &good_y).unwrap()),
        ],
    );
    assert_input_error(&eval(&path), "value 1500 of x is NaN");

    // A header claiming 10^8 images over 4 bytes of data is refused before anything is
    // allocated for them.
    let mut huge = b"\x93NUMPY\x01\x00".to_vec();
    let mut header =
        "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000, 1, 32, 32), }".to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    huge.extend((header.len() as u16).to_le_bytes());
    huge.extend(header.as_bytes());
    huge.extend([0u8; 4]);
    let path = npz(
        "huge.npz",
        &[("x", huge), ("y", encode_npy_i64(&[1], &[0]).unwrap())],
    );
    assert_input_error(&eval(&path), "huge.npz/x.npy: truncated: need");

    let text = d.join("plain.npz");
    std::fs::write(&text, b"not a zip archive at all").unwrap();
    assert_input_error(
        &eval(&text.display().to_string()),
        "not a zip archive (.npz)",
    );

    let classes = d.join("eleven");
    for i in 0..11 {
        std::fs::create_dir_all(classes.join(format!("class{i:02}"))).unwrap();
    }
    assert_input_error(
        &eval(&classes.display().to_string()),
        "11 class folders, but the model has 10 classes",
    );
    let empty = d.join("empty");
    std::fs::create_dir_all(empty.join("only")).unwrap();
    assert_input_error(
        &eval(&empty.display().to_string()),
        "hold no .png, .jpg or .jpeg files",
    );

    assert_input_error(
        &eval(&d.join("missing.npz").display().to_string()),
        "no such file or directory",
    );
    assert_input_error(&vitae(&["eval", "--data", &path]), "nothing to evaluate");
}
