//! The `vitae` binary end to end: exit codes (0 ok, 2 bad input/usage with one clear first
//! line, 1 internal), atomic output (nothing left behind on failure, existing output kept),
//! and help texts with examples.

#[path = "common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vitae::npy::{read_npy_f32, write_npy_f32};

use common::{fixtures, relative_error};

fn vitae(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vitae"))
        .args(args)
        .output()
        .expect("run vitae")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn first_line(output: &Output) -> String {
    stderr(output)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn mcu_a(file: &str) -> String {
    fixtures().join("mcu_a").join(file).display().to_string()
}

/// Asserts exit status 2, a first line `error: ...` containing `needle`, and no panic text.
fn assert_input_error(output: &Output, needle: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(2), "stderr:\n{err}");
    let first = first_line(output);
    assert!(
        first.starts_with("error: ") && first.contains(needle),
        "first line {first:?} lacks {needle:?}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    all.sort();
    all
}

#[test]
#[cfg_attr(
    not(vitae_fixtures),
    ignore = "needs ../shared/fixtures (beside the checkout)"
)]
fn run_writes_fixture_logits_for_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    // A batch of two copies of the fixture input.
    let input = read_npy_f32(Path::new(&mcu_a("input.npy"))).unwrap();
    let mut batch = input.data.clone();
    batch.extend_from_slice(&input.data);
    let batch_path = dir.path().join("batch.npy");
    write_npy_f32(&batch_path, &[2, 3, 96, 96], &batch).unwrap();
    let out = dir.path().join("logits.npy");
    let output = vitae(&[
        "run",
        "--checkpoint",
        &mcu_a("model.pth"),
        "--config",
        &mcu_a("kwargs.json"),
        "--input",
        batch_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let logits = read_npy_f32(&out).unwrap();
    assert_eq!(logits.shape, vec![2, 10]);
    let expected = read_npy_f32(Path::new(&mcu_a("logits.npy"))).unwrap();
    assert!(relative_error(&logits.data[..10], &expected.data) <= 1e-4);
    assert!(relative_error(&logits.data[10..], &expected.data) <= 1e-4);
    assert!(String::from_utf8_lossy(&output.stdout).contains("top-1 class per image: 4, 4"));
    assert_eq!(
        entries(dir.path()).len(),
        2,
        "no temporary files left: {:?}",
        entries(dir.path())
    );
}

/// `vitae run --model` writes the same bytes whatever kernels the host picks: the AVX2 paths
/// chosen at run time and the portable scalar reference (`VITAE_SIMD=off`), on mcu_a int8 and
/// fp16 blobs and a batch of five images (the fixture input and four perturbations of it, some pushed
/// past the calibrated range so that values saturate).
#[test]
#[cfg_attr(
    not(vitae_fixtures),
    ignore = "needs ../shared/fixtures (beside the checkout)"
)]
fn run_model_logits_are_the_same_bytes_with_the_simd_paths_off() {
    let dir = tempfile::tempdir().unwrap();
    let input = read_npy_f32(Path::new(&mcu_a("input.npy"))).unwrap();
    let mut batch = input.data.clone();
    for k in 1..5u32 {
        batch.extend(input.data.iter().enumerate().map(|(i, &v)| {
            let wiggle = ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(k) >> 24) as f32;
            v * k as f32 + (wiggle - 128.0) / 64.0
        }));
    }
    let batch_path = dir.path().join("batch.npy");
    write_npy_f32(&batch_path, &[5, 3, 96, 96], &batch).unwrap();
    // int8 (the integer kernels) and fp16 (the fp16 conv and linear lanes).
    for precision in ["int8", "fp16"] {
        let blob = dir.path().join(format!("{precision}.vblob"));
        let output = vitae(&[
            "quantize",
            "--checkpoint",
            &mcu_a("model.pth"),
            "--config",
            &mcu_a("kwargs.json"),
            "--calib",
            &mcu_a("input.npy"),
            "--precision",
            precision,
            "--out",
            blob.to_str().unwrap(),
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        let run = |simd_off: bool, out: &Path| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_vitae"));
            cmd.args(["run", "--model", blob.to_str().unwrap(), "--input"])
                .arg(&batch_path)
                .arg("--out")
                .arg(out);
            if simd_off {
                cmd.env("VITAE_SIMD", "off");
            } else {
                cmd.env_remove("VITAE_SIMD");
            }
            let output = cmd.output().unwrap();
            assert!(output.status.success(), "{}", stderr(&output));
            std::fs::read(out).unwrap()
        };
        let fast = run(false, &dir.path().join(format!("{precision}-fast.npy")));
        let scalar = run(true, &dir.path().join(format!("{precision}-scalar.npy")));
        assert_eq!(
            fast, scalar,
            "{precision} logits differ with VITAE_SIMD=off"
        );
    }
}

/// `vitae run --checkpoint` on the fixtures of the options of issue 14 (Dec-2021 'pooling' and
/// RC_op 'sum'; class token, 'embedding', identity cells, 'performer' normal cells; shallow
/// PCMs) writes the official logits; `check` accepts them and names the release.
#[test]
#[cfg_attr(
    not(vitae_fixtures),
    ignore = "needs ../shared/fixtures (beside the checkout)"
)]
fn run_and_check_the_new_option_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    for (folder, release) in [
        ("mcu_c", "the Dec-2021 release"),
        ("mcu_d", "the current release"),
        ("mcu_g", "the current release"),
    ] {
        let file = |name: &str| fixtures().join(folder).join(name).display().to_string();
        let out = dir.path().join(format!("{folder}.npy"));
        let output = vitae(&[
            "run",
            "--checkpoint",
            &file("model.pth"),
            "--config",
            &file("kwargs.json"),
            "--input",
            &file("input.npy"),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(output.status.success(), "{folder}: {}", stderr(&output));
        let logits = read_npy_f32(&out).unwrap();
        let expected = read_npy_f32(Path::new(&file("logits.npy"))).unwrap();
        assert_eq!(logits.shape, expected.shape, "{folder}");
        let error = relative_error(&logits.data, &expected.data);
        assert!(error <= 1e-4, "{folder}: logits relative error {error:e}");

        let output = vitae(&[
            "check",
            "--checkpoint",
            &file("model.safetensors"),
            "--config",
            &file("kwargs.json"),
        ]);
        assert!(output.status.success(), "{folder}: {}", stderr(&output));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(stdout.starts_with("ok: "), "{stdout}");
        assert!(
            stdout.contains(&format!("the model of {release}")),
            "{folder}: {stdout}"
        );
    }
}

/// A doctored checkpoint of each new option fails `check` with the key named on the first
/// line; `quantize` takes every option, so with a missing calibration file that file is what it
/// names.
#[test]
#[cfg_attr(
    not(vitae_fixtures),
    ignore = "needs ../shared/fixtures (beside the checkout)"
)]
fn check_names_new_option_keys_and_quantize_reaches_the_calibration_data() {
    use vitae::checkpoint::load_checkpoint;
    use vitae::checkpoint::safetensors::encode_safetensors;
    let dir = tempfile::tempdir().unwrap();
    for (folder, key, summary) in [
        ("mcu_c", "layers.1.RC.attn.attn.qkv.weight", "1 missing"),
        ("mcu_d", "layers.0.RC.cls_token", "1 missing"),
        ("mcu_d", "fc_norm.weight", "1 missing"),
        ("mcu_g", "layers.2.NC.0.PCM.3.weight", "1 missing"),
    ] {
        let fixture = fixtures().join(folder);
        let mut checkpoint = load_checkpoint(&fixture.join("model.safetensors")).unwrap();
        assert!(checkpoint.remove(key), "{folder}: {key}");
        let path = dir.path().join(format!("{folder}_no_{key}.safetensors"));
        std::fs::write(&path, encode_safetensors(&checkpoint)).unwrap();
        let output = vitae(&[
            "check",
            "--checkpoint",
            path.to_str().unwrap(),
            "--config",
            fixture.join("kwargs.json").to_str().unwrap(),
        ]);
        assert_input_error(&output, &format!("{summary} (first: {key})"));
    }
    // Every option quantizes: the checkpoint passes, and the missing calibration file is the
    // error each gets.
    let missing_calib = dir.path().join("no-such-calib.npy");
    for folder in ["mcu_c", "mcu_d", "mcu_g"] {
        let needle = "no-such-calib.npy: no such file or directory";
        let fixture = fixtures().join(folder);
        let out = dir.path().join(format!("{folder}.vblob"));
        let output = vitae(&[
            "quantize",
            "--checkpoint",
            fixture.join("model.pth").to_str().unwrap(),
            "--config",
            fixture.join("kwargs.json").to_str().unwrap(),
            "--calib",
            missing_calib.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--no-progress",
        ]);
        assert_input_error(&output, needle);
        assert!(!out.exists());
    }
}

#[test]
#[cfg_attr(
    not(vitae_fixtures),
    ignore = "needs ../shared/fixtures (beside the checkout)"
)]
fn missing_checkpoint_is_exit_2_naming_the_file_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("logits.npy");
    let output = vitae(&[
        "run",
        "--checkpoint",
        "/nonexistent/weights.pth",
        "--arch",
        "vitae-t",
        "--input",
        &mcu_a("input.npy"),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_input_error(&output, "/nonexistent/weights.pth: file not found");
    assert!(entries(dir.path()).is_empty());
}

#[test]
#[cfg_attr(
    not(vitae_fixtures),
    ignore = "needs ../shared/fixtures (beside the checkout)"
)]
fn wrong_input_shape_keeps_existing_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("logits.npy");
    std::fs::write(&out, b"previous result").unwrap();
    let small = dir.path().join("small.npy");
    write_npy_f32(&small, &[1, 3, 64, 64], &vec![0.0; 3 * 64 * 64]).unwrap();
    let output = vitae(&[
        "run",
        "--checkpoint",
        &mcu_a("model.safetensors"),
        "--config",
        &mcu_a("kwargs.json"),
        "--input",
        small.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_input_error(&output, "small.npy: input shape [1, 3, 64, 64]");
    assert!(first_line(&output).contains("(N, 3, 96, 96)"));
    assert_eq!(std::fs::read(&out).unwrap(), b"previous result");
    assert_eq!(entries(dir.path()).len(), 2);
}

#[test]
#[cfg_attr(
    not(vitae_fixtures),
    ignore = "needs ../shared/fixtures (beside the checkout)"
)]
fn mismatched_architecture_lists_every_problem() {
    let output = vitae(&[
        "check",
        "--checkpoint",
        &mcu_a("model.pth"),
        "--arch",
        "vitae-t",
    ]);
    assert_input_error(&output, "does not match architecture vitae-t");
    let err = stderr(&output);
    assert!(
        err.lines().count() > 50,
        "one line per problem expected:\n{err}"
    );
    assert!(
        err.contains("misshaped   head.weight: expected shape [1000, 256], found [10, 80]"),
        "{err}"
    );
    assert!(
        err.contains("missing     layers.2.NC.3.norm1.weight"),
        "{err}"
    );
}

#[test]
#[cfg_attr(
    not(vitae_fixtures),
    ignore = "needs ../shared/fixtures (beside the checkout)"
)]
fn check_accepts_fixture_checkpoints() {
    let output = vitae(&[
        "check",
        "--checkpoint",
        &mcu_a("model.safetensors"),
        "--config",
        &mcu_a("kwargs.json"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("ok: "));
}

#[test]
#[cfg_attr(
    not(vitae_fixtures),
    ignore = "needs ../shared/fixtures (beside the checkout)"
)]
fn bad_config_and_output_paths_are_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kwargs.json");
    std::fs::write(&config, r#"{"img_size": 96, "stages": 3, "typo_key": 1}"#).unwrap();
    let output = vitae(&[
        "check",
        "--checkpoint",
        &mcu_a("model.pth"),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_input_error(&output, "unknown argument 'typo_key'");
    assert!(first_line(&output).contains("kwargs.json"));

    let out = dir.path().join("no/such/dir/logits.npy");
    let output = vitae(&[
        "run",
        "--checkpoint",
        &mcu_a("model.pth"),
        "--config",
        &mcu_a("kwargs.json"),
        "--input",
        &mcu_a("input.npy"),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_input_error(&output, "does not exist");

    let output = vitae(&[
        "check",
        "--checkpoint",
        &mcu_a("input.npy"),
        "--arch",
        "vitae-t",
    ]);
    assert_input_error(&output, "input.npy: not a checkpoint");

    let output = vitae(&[
        "check",
        "--checkpoint",
        &mcu_a("model.pth"),
        "--arch",
        "vitae-xl",
    ]);
    assert_input_error(&output, "unknown architecture 'vitae-xl'");
}

#[test]
fn usage_errors_exit_2() {
    let output = vitae(&["run", "--arch", "vitae-t"]);
    assert_eq!(output.status.code(), Some(2));
    let output = vitae(&[
        "check",
        "--checkpoint",
        "x.pth",
        "--arch",
        "vitae-t",
        "--config",
        "k.json",
    ]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "--arch and --config together must be refused"
    );
    let output = vitae(&["frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn every_subcommand_help_has_an_example() {
    for sub in [
        "run",
        "check",
        "quantize",
        "inspect",
        "diff",
        "eval",
        "bench-reference",
        "bench-engine",
    ] {
        let output = vitae(&[sub, "--help"]);
        assert!(output.status.success());
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            text.contains("Example"),
            "{sub} --help lacks an example:\n{text}"
        );
        assert!(
            text.contains(&format!("vitae {sub}")),
            "{sub} --help example does not show the command"
        );
    }
}

/// Rewrites one tensor of a checkpoint (key, shape, values) or drops it (`None`).
type Edit<'a> = &'a dyn Fn(&str, &[usize], &[f32]) -> Option<(Vec<usize>, Vec<f32>)>;

/// One bad-input case: the arguments, what the first stderr line must contain, and the output
/// file the command would have written (pre-filled, so clobbering shows).
struct Case {
    what: &'static str,
    args: Vec<String>,
    needle: String,
    out: Option<PathBuf>,
    /// Run under `ulimit -f <blocks>` (SIGXFSZ ignored): writes beyond the limit fail with
    /// EFBIG, the same failure path as a full disk (ENOSPC), on a real file system.
    file_size_limit: Option<u32>,
}

fn run_case(case: &Case) -> Output {
    match case.file_size_limit {
        None => vitae(&case.args.iter().map(String::as_str).collect::<Vec<_>>()),
        Some(blocks) => {
            let mut script = format!(
                "trap '' XFSZ; ulimit -f {blocks}; exec \"{}\"",
                env!("CARGO_BIN_EXE_vitae")
            );
            for a in &case.args {
                script.push_str(&format!(" '{a}'"));
            }
            Command::new("sh")
                .args(["-c", &script])
                .output()
                .expect("run sh")
        }
    }
}

/// A directory nobody can create files in: mode 0555, and when that does not stop this
/// process (root), the immutable attribute. `None` when neither is possible here.
struct ReadOnlyDir(PathBuf);

impl ReadOnlyDir {
    fn new(path: PathBuf) -> Option<ReadOnlyDir> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o555)).unwrap();
        let writable = |p: &Path| {
            let probe = p.join("probe");
            let ok = std::fs::write(&probe, b"x").is_ok();
            let _ = std::fs::remove_file(&probe);
            ok
        };
        if writable(&path) {
            let _ = Command::new("chattr").arg("+i").arg(&path).output();
        }
        let dir = ReadOnlyDir(path);
        (!writable(&dir.0)).then_some(dir)
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = Command::new("chattr").arg("-i").arg(&self.0).output();
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
    }
}

/// Every kind of bad input to every subcommand: exit status 2, one first line naming the
/// problem and the file/key at fault, no panic text, no output file left behind and an existing
/// output untouched.
#[test]
#[cfg_attr(
    not(vitae_fixtures),
    ignore = "needs ../shared/fixtures (beside the checkout)"
)]
fn bad_inputs_to_every_subcommand_are_clear_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |name: &str| d.join(name).display().to_string();
    let s = |x: &str| x.to_string();

    // Inputs.
    std::fs::write(d.join("empty.bin"), b"").unwrap();
    std::fs::create_dir(d.join("a_dir")).unwrap();
    std::fs::create_dir(d.join("no_images")).unwrap();
    std::fs::create_dir(d.join("bad_images")).unwrap();
    std::fs::write(d.join("bad_images/0.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let checkpoint = vitae::checkpoint::load_checkpoint(Path::new(&mcu_a("model.pth"))).unwrap();
    let doctored = |edit: Edit, extra: Option<(&str, Vec<usize>, Vec<f32>)>| {
        let mut owned: Vec<(String, Vec<usize>, Vec<f32>)> = checkpoint
            .tensors
            .iter()
            .filter_map(|(k, t)| edit(k, &t.shape, &t.data).map(|(s, v)| (k.clone(), s, v)))
            .collect();
        if let Some((k, s, v)) = extra {
            owned.push((k.to_string(), s, v));
        }
        let refs: Vec<(&str, &[usize], &[f32])> = owned
            .iter()
            .map(|(k, s, v)| (k.as_str(), s.as_slice(), v.as_slice()))
            .collect();
        common::write_pth(&refs)
    };
    let keep = |_: &str, s: &[usize], v: &[f32]| Some((s.to_vec(), v.to_vec()));
    let plain = doctored(&keep, None);
    std::fs::write(d.join("plain.pth"), &plain).unwrap();
    std::fs::write(
        d.join("missing_key.pth"),
        doctored(
            &|k, s, v| (k != "head.bias").then(|| (s.to_vec(), v.to_vec())),
            None,
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("extra_key.pth"),
        doctored(&keep, Some(("head.extra", vec![2], vec![1.0, 2.0]))),
    )
    .unwrap();
    std::fs::write(
        d.join("misshaped.pth"),
        doctored(
            &|k, s, v| {
                Some(if k == "head.weight" {
                    (vec![10, 81], vec![0.01; 810])
                } else {
                    (s.to_vec(), v.to_vec())
                })
            },
            None,
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("nan.pth"),
        doctored(
            &|k, s, v| {
                let mut v = v.to_vec();
                if k == "layers.2.NC.0.mlp.fc1.weight" {
                    v[17] = f32::NAN;
                }
                Some((s.to_vec(), v))
            },
            None,
        ),
    )
    .unwrap();
    let input = read_npy_f32(Path::new(&mcu_a("input.npy"))).unwrap();
    write_npy_f32(
        &d.join("small.npy"),
        &[1, 3, 64, 64],
        &vec![0.0; 3 * 64 * 64],
    )
    .unwrap();
    write_npy_f32(&d.join("none.npy"), &[0, 3, 96, 96], &[]).unwrap();
    let mut with_nan = input.data.clone();
    with_nan[5] = f32::NAN;
    write_npy_f32(&d.join("nan_input.npy"), &[1, 3, 96, 96], &with_nan).unwrap();

    // Blobs: a valid one from the tool itself, then broken copies.
    let blob_path = d.join("model.vblob");
    let made = vitae(&[
        "quantize",
        "--checkpoint",
        &p("plain.pth"),
        "--config",
        &mcu_a("kwargs.json"),
        "--calib",
        &mcu_a("input.npy"),
        "--no-progress",
        "--out",
        &blob_path.display().to_string(),
    ]);
    assert!(made.status.success(), "{}", stderr(&made));
    let blob = std::fs::read(&blob_path).unwrap();
    let mut flipped = blob.clone();
    flipped[blob.len() / 3] ^= 0x10;
    std::fs::write(d.join("flipped.vblob"), &flipped).unwrap();
    std::fs::write(d.join("truncated.vblob"), &blob[..blob.len() - 100]).unwrap();
    // A version from the future (the newest this reader knows, plus one).
    let mut future = blob.clone();
    future[8] = vitae_edge::format::FORMAT_VERSION as u8 + 1;
    future[20..24].fill(0);
    let crc = vitae_edge::format::crc32(&future);
    future[20..24].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(d.join("version3.vblob"), &future).unwrap();

    // Outputs.
    std::fs::create_dir(d.join("out")).unwrap();
    let readonly = ReadOnlyDir::new(d.join("readonly"));
    let out = |name: &str| d.join("out").join(name);

    let mut cases: Vec<Case> = Vec::new();
    let mut add = |what, args: &[&str], needle: &str, out: Option<PathBuf>| {
        cases.push(Case {
            what,
            args: args.iter().map(|a| a.to_string()).collect(),
            needle: needle.to_string(),
            out,
            file_size_limit: None,
        })
    };
    let cfg = mcu_a("kwargs.json");
    let x = mcu_a("input.npy");

    // vitae check
    for (what, file, needle) in [
        (
            "check: missing checkpoint",
            p("absent.pth"),
            s("absent.pth: file not found"),
        ),
        (
            "check: directory as checkpoint",
            p("a_dir"),
            s("a_dir: is a directory"),
        ),
        (
            "check: empty checkpoint",
            p("empty.bin"),
            s("empty.bin: file is empty"),
        ),
        (
            "check: .pth missing a key",
            p("missing_key.pth"),
            s("1 missing (first: head.bias)"),
        ),
        (
            "check: .pth with an extra key",
            p("extra_key.pth"),
            s("1 unexpected (first: head.extra)"),
        ),
        (
            "check: .pth with a misshaped key",
            p("misshaped.pth"),
            s("1 misshaped (first: head.weight)"),
        ),
        (
            "check: NaN weights",
            p("nan.pth"),
            s("1 with NaN/Inf (first: layers.2.NC.0.mlp.fc1.weight)"),
        ),
        (
            "check: not a checkpoint",
            x.clone(),
            s("input.npy: not a checkpoint"),
        ),
    ] {
        add(
            what,
            &["check", "--checkpoint", &file, "--config", &cfg],
            &needle,
            None,
        );
    }
    add(
        "check: wrong --arch",
        &[
            "check",
            "--checkpoint",
            &p("plain.pth"),
            "--arch",
            "vitae-t",
        ],
        "does not match architecture vitae-t",
        None,
    );
    add(
        "check: unknown --arch",
        &[
            "check",
            "--checkpoint",
            &p("plain.pth"),
            "--arch",
            "vitae-xxl",
        ],
        "unknown architecture 'vitae-xxl'",
        None,
    );
    add(
        "check: missing config",
        &[
            "check",
            "--checkpoint",
            &p("plain.pth"),
            "--config",
            &p("absent.json"),
        ],
        "absent.json: file not found",
        None,
    );
    add(
        "check: empty config",
        &[
            "check",
            "--checkpoint",
            &p("plain.pth"),
            "--config",
            &p("empty.bin"),
        ],
        "empty.bin: file is empty",
        None,
    );

    // vitae quantize
    let q = |ckpt: &str, arch: &[&str], calib: &str, out: &Path| -> Vec<String> {
        let mut v: Vec<String> = vec![s("quantize"), s("--checkpoint"), s(ckpt)];
        v.extend(arch.iter().map(|a| a.to_string()));
        v.extend([
            s("--calib"),
            s(calib),
            s("--no-progress"),
            s("--out"),
            out.display().to_string(),
        ]);
        v
    };
    let arch = ["--config", cfg.as_str()];
    let quantize_cases: Vec<(&'static str, Vec<String>, String)> = vec![
        (
            "quantize: missing checkpoint",
            q(&p("absent.pth"), &arch, &x, &out("q.vblob")),
            s("absent.pth: file not found"),
        ),
        (
            "quantize: directory as checkpoint",
            q(&p("a_dir"), &arch, &x, &out("q.vblob")),
            s("a_dir: is a directory"),
        ),
        (
            "quantize: empty checkpoint",
            q(&p("empty.bin"), &arch, &x, &out("q.vblob")),
            s("empty.bin: file is empty"),
        ),
        (
            "quantize: .pth missing a key",
            q(&p("missing_key.pth"), &arch, &x, &out("q.vblob")),
            s("(first: head.bias)"),
        ),
        (
            "quantize: .pth with an extra key",
            q(&p("extra_key.pth"), &arch, &x, &out("q.vblob")),
            s("(first: head.extra)"),
        ),
        (
            "quantize: .pth with a misshaped key",
            q(&p("misshaped.pth"), &arch, &x, &out("q.vblob")),
            s("(first: head.weight)"),
        ),
        (
            "quantize: NaN weights",
            q(&p("nan.pth"), &arch, &x, &out("q.vblob")),
            s("NaN/Inf (first: layers.2.NC.0.mlp.fc1.weight)"),
        ),
        (
            "quantize: wrong --arch",
            q(&p("plain.pth"), &["--arch", "vitae-t"], &x, &out("q.vblob")),
            s("does not match architecture vitae-t"),
        ),
        (
            "quantize: calibration images of the wrong size",
            q(&p("plain.pth"), &arch, &p("small.npy"), &out("q.vblob")),
            s("small.npy: calibration array has shape [1, 3, 64, 64]"),
        ),
        (
            "quantize: zero calibration images (.npy)",
            q(&p("plain.pth"), &arch, &p("none.npy"), &out("q.vblob")),
            s("none.npy"),
        ),
        (
            "quantize: zero calibration images (folder)",
            q(&p("plain.pth"), &arch, &p("no_images"), &out("q.vblob")),
            s("no_images: contains no calibration images"),
        ),
        (
            "quantize: unreadable calibration image",
            q(&p("plain.pth"), &arch, &p("bad_images"), &out("q.vblob")),
            s("0.png"),
        ),
        (
            "quantize: missing calibration file",
            q(&p("plain.pth"), &arch, &p("absent.npy"), &out("q.vblob")),
            s("absent.npy"),
        ),
        (
            "quantize: empty calibration file",
            q(&p("plain.pth"), &arch, &p("empty.bin"), &out("q.vblob")),
            s("empty.bin: file is empty"),
        ),
        (
            "quantize: output in a missing directory",
            q(&p("plain.pth"), &arch, &x, &d.join("nowhere/q.vblob")),
            s("q.vblob: directory"),
        ),
        (
            "quantize: output is a directory",
            q(&p("plain.pth"), &arch, &x, &d.join("a_dir")),
            s("a_dir: is a directory"),
        ),
    ];
    for (what, args, needle) in quantize_cases {
        let target = PathBuf::from(args.last().unwrap());
        cases.push(Case {
            what,
            args,
            needle,
            out: Some(target).filter(|t| t.starts_with(d.join("out"))),
            file_size_limit: None,
        });
    }
    if let Some(ro) = &readonly {
        let target = ro.0.join("q.vblob");
        cases.push(Case {
            what: "quantize: output in a read-only directory",
            args: q(&p("plain.pth"), &arch, &x, &target),
            needle: format!("{}: cannot write", target.display()),
            out: None,
            file_size_limit: None,
        });
    } else {
        eprintln!("note: no read-only directory can be made here; that case is not tried");
    }
    // The blob is ~350 KB; 100 blocks of 1 KiB is room for a third of it.
    cases.push(Case {
        what: "quantize: disk full while writing",
        args: q(&p("plain.pth"), &arch, &x, &out("q.vblob")),
        needle: s("q.vblob: cannot write: File too large"),
        out: Some(out("q.vblob")),
        file_size_limit: Some(100),
    });

    // vitae run --model / --checkpoint
    let r = |model: &str, input: &str, out: &Path| -> Vec<String> {
        vec![
            s("run"),
            s("--model"),
            s(model),
            s("--input"),
            s(input),
            s("--out"),
            out.display().to_string(),
        ]
    };
    let bp = blob_path.display().to_string();
    let run_cases: Vec<(&'static str, Vec<String>, String)> = vec![
        (
            "run --model: missing blob",
            r(&p("absent.vblob"), &x, &out("y.npy")),
            s("absent.vblob: file not found"),
        ),
        (
            "run --model: directory as blob",
            r(&p("a_dir"), &x, &out("y.npy")),
            s("a_dir: is a directory"),
        ),
        (
            "run --model: empty blob",
            r(&p("empty.bin"), &x, &out("y.npy")),
            s("empty.bin: file is empty"),
        ),
        (
            "run --model: bit-flipped blob",
            r(&p("flipped.vblob"), &x, &out("y.npy")),
            s("flipped.vblob: checksum mismatch"),
        ),
        (
            "run --model: truncated blob",
            r(&p("truncated.vblob"), &x, &out("y.npy")),
            s("truncated.vblob: blob declares"),
        ),
        (
            "run --model: other format version",
            r(&p("version3.vblob"), &x, &out("y.npy")),
            s("version3.vblob: blob format version 3 is not supported"),
        ),
        (
            "run --model: not a blob",
            r(&x, &x, &out("y.npy")),
            s("input.npy: not a ViTAE-Edge blob (bad magic)"),
        ),
        (
            "run --model: input of the wrong size",
            r(&bp, &p("small.npy"), &out("y.npy")),
            s("small.npy: input shape [1, 3, 64, 64]"),
        ),
        (
            "run --model: empty batch",
            r(&bp, &p("none.npy"), &out("y.npy")),
            s("none.npy: the batch is empty"),
        ),
        (
            "run --model: NaN in the input",
            r(&bp, &p("nan_input.npy"), &out("y.npy")),
            s("nan_input.npy: value 5 is NaN"),
        ),
        (
            "run --model: missing input",
            r(&bp, &p("absent.npy"), &out("y.npy")),
            s("absent.npy"),
        ),
        (
            "run --model: output in a missing directory",
            r(&bp, &x, &d.join("nowhere/y.npy")),
            s("y.npy: directory"),
        ),
        (
            "run --checkpoint: .pth missing a key",
            vec![
                s("run"),
                s("--checkpoint"),
                p("missing_key.pth"),
                s("--config"),
                cfg.clone(),
                s("--input"),
                x.clone(),
                s("--out"),
                out("y.npy").display().to_string(),
            ],
            s("(first: head.bias)"),
        ),
        (
            "run --checkpoint: wrong --arch",
            vec![
                s("run"),
                s("--checkpoint"),
                p("plain.pth"),
                s("--arch"),
                s("vitae-t"),
                s("--input"),
                x.clone(),
                s("--out"),
                out("y.npy").display().to_string(),
            ],
            s("does not match architecture vitae-t"),
        ),
    ];
    for (what, args, needle) in run_cases {
        let target = PathBuf::from(args.last().unwrap());
        cases.push(Case {
            what,
            args,
            needle,
            out: Some(target).filter(|t| t.starts_with(d.join("out"))),
            file_size_limit: None,
        });
    }
    if let Some(ro) = &readonly {
        let target = ro.0.join("y.npy");
        cases.push(Case {
            what: "run --model: output in a read-only directory",
            args: r(&bp, &x, &target),
            needle: format!("{}: cannot write", target.display()),
            out: None,
            file_size_limit: None,
        });
    }
    cases.push(Case {
        what: "run --model: disk full while writing",
        args: r(&bp, &x, &out("y.npy")),
        needle: s("y.npy: cannot write: File too large"),
        out: Some(out("y.npy")),
        file_size_limit: Some(0),
    });

    // vitae inspect
    let mut add = |what, args: Vec<String>, needle: String| {
        cases.push(Case {
            what,
            args,
            needle,
            out: None,
            file_size_limit: None,
        })
    };
    for (what, file, needle) in [
        (
            "inspect: missing blob",
            p("absent.vblob"),
            s("absent.vblob: file not found"),
        ),
        (
            "inspect: directory as blob",
            p("a_dir"),
            s("a_dir: is a directory"),
        ),
        (
            "inspect: empty blob",
            p("empty.bin"),
            s("empty.bin: file is empty"),
        ),
        (
            "inspect: bit-flipped blob",
            p("flipped.vblob"),
            s("flipped.vblob: checksum mismatch"),
        ),
        (
            "inspect: truncated blob",
            p("truncated.vblob"),
            s("truncated.vblob: blob declares"),
        ),
        (
            "inspect: other format version",
            p("version3.vblob"),
            s(
                "blob format version 3 is not supported (this reader reads [1, 2]) (at byte offset 8)",
            ),
        ),
    ] {
        add(what, vec![s("inspect"), file], needle);
    }
    // vitae diff
    let df = |model: &str, ckpt: &str, arch: &[&str], input: &str| -> Vec<String> {
        let mut v = vec![
            s("diff"),
            s("--model"),
            s(model),
            s("--checkpoint"),
            s(ckpt),
        ];
        v.extend(arch.iter().map(|a| a.to_string()));
        v.extend([s("--input"), s(input)]);
        v
    };
    for (what, args, needle) in [
        (
            "diff: bit-flipped blob",
            df(&p("flipped.vblob"), &p("plain.pth"), &arch, &x),
            s("flipped.vblob: checksum mismatch"),
        ),
        (
            "diff: missing blob",
            df(&p("absent.vblob"), &p("plain.pth"), &arch, &x),
            s("absent.vblob: file not found"),
        ),
        (
            "diff: empty checkpoint",
            df(&bp, &p("empty.bin"), &arch, &x),
            s("empty.bin: file is empty"),
        ),
        (
            "diff: .pth with a misshaped key",
            df(&bp, &p("misshaped.pth"), &arch, &x),
            s("(first: head.weight)"),
        ),
        (
            "diff: NaN weights",
            df(&bp, &p("nan.pth"), &arch, &x),
            s("(first: layers.2.NC.0.mlp.fc1.weight)"),
        ),
        (
            "diff: wrong --arch",
            df(&bp, &p("plain.pth"), &["--arch", "vitae-t"], &x),
            s("does not match architecture vitae-t"),
        ),
        (
            "diff: input of the wrong size",
            df(&bp, &p("plain.pth"), &arch, &p("small.npy")),
            s("small.npy: input shape [1, 3, 64, 64]"),
        ),
        (
            "diff: directory as input",
            df(&bp, &p("plain.pth"), &arch, &p("a_dir")),
            s("a_dir: is a directory"),
        ),
    ] {
        add(what, args, needle);
    }

    let previous = b"previous output, must survive a failed run";
    for case in &cases {
        if let Some(out) = &case.out {
            std::fs::write(out, previous).unwrap();
        }
        let output = run_case(case);
        let first = first_line(&output);
        println!("{:50} exit {:?}  {first}", case.what, output.status.code());
        let err = stderr(&output);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{}: stderr:\n{err}",
            case.what
        );
        assert!(
            first.starts_with("error: ") && first.contains(&case.needle),
            "{}: first line {first:?} lacks {:?}",
            case.what,
            case.needle
        );
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{}: {err}",
            case.what
        );
        if let Some(out) = &case.out {
            assert_eq!(
                std::fs::read(out).unwrap(),
                previous,
                "{}: output clobbered",
                case.what
            );
            std::fs::remove_file(out).unwrap();
        }
        assert!(
            entries(&d.join("out")).is_empty(),
            "{}: left behind {:?}",
            case.what,
            entries(&d.join("out"))
        );
    }
    assert!(!d.join("nowhere").exists());
    if let Some(ro) = &readonly {
        assert!(entries(&ro.0).is_empty());
    }
    println!("{} bad-input cases", cases.len());
}

#[test]
#[cfg_attr(
    not(vitae_fixtures),
    ignore = "needs ../shared/fixtures (beside the checkout)"
)]
fn quantize_and_inspect_plan_for_a_board_or_say_which_region_is_too_small() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.vblob");
    let quantize = |fixture: &str, board: &str| {
        let f = |file: &str| fixtures().join(fixture).join(file).display().to_string();
        let patch = if fixture == "vitae_t" { "off" } else { "auto" };
        vitae(&[
            "quantize",
            "--patch",
            patch,
            "--checkpoint",
            &f("model.pth"),
            "--config",
            &f("kwargs.json"),
            "--calib",
            &f("input.npy"),
            "--board",
            board,
            "--no-progress",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    // An unknown board is a usage error listing the boards; nothing is written.
    let output = quantize("mcu_a", "stm32h9");
    assert_input_error(
        &output,
        "unknown board `stm32h9`; known boards: mps2-an386, ",
    );
    assert!(entries(dir.path()).is_empty());
    // ViTAE-T on the H747 layer by layer (`--patch off`): the error names the buffer, the
    // largest region and the shortfall.
    let output = quantize("vitae_t", "stm32h747i-disco");
    assert_input_error(&output, "planning the arena for board stm32h747i-disco");
    let err = stderr(&output);
    assert!(
        err.contains("tensor `layers.0.RC.attn.norm1` (802,816 bytes")
            && err.contains("the largest, AXISRAM, is 278,528 bytes too small for it"),
        "{err}"
    );
    assert!(entries(dir.path()).is_empty());
    // mcu_a on the N6: four arena parts, placed by `inspect --board`.
    let output = quantize("mcu_a", "stm32n6570-dk");
    assert!(output.status.success(), "{}", stderr(&output));
    let blob = out.to_str().unwrap();
    let output = vitae(&["inspect", "--board", "stm32n6570-dk", blob]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("placement on stm32n6570-dk (Cortex-M55):"),
        "{text}"
    );
    for part in [
        "blob         XSPI2",
        "arena part 0 RAM",
        "arena part 3 AXISRAM3_6",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
    // The same blob on a board with one arena region is refused, saying how to re-plan it.
    let output = vitae(&["inspect", "--board", "nrf52840-dk", blob]);
    assert_input_error(
        &output,
        "planned in 4 parts, but board nrf52840-dk has 1 arena regions",
    );
    assert!(stderr(&output).contains("quantize it with `--board nrf52840-dk`"));
    // ViTAE-T on the H747 as it comes (`--patch auto`): the first cells run in strips, which
    // `quantize` says, and the arena parts fit the board's regions.
    let f = |file: &str| fixtures().join("vitae_t").join(file).display().to_string();
    let output = vitae(&[
        "quantize",
        "--checkpoint",
        &f("model.pth"),
        "--config",
        &f("kwargs.json"),
        "--calib",
        &f("input.npy"),
        "--board",
        "stm32h747i-disco",
        "--no-progress",
        "--out",
        blob,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("patch-based: ops 0..=16 run in ")
            && text.contains("of `layers.0.RC.add_mlp`, 2 passes over the strips"),
        "{text}"
    );
    let output = vitae(&["inspect", "--board", "stm32h747i-disco", blob]);
    assert!(output.status.success(), "{}", stderr(&output));
}
