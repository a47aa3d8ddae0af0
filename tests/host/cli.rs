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

#[test]
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
    for sub in ["run", "check", "bench-reference"] {
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
