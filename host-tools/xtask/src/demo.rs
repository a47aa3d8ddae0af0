//! `cargo xtask demo`: the whole product on real data, offline, in a few minutes.
//!
//! The committed ViTAE digit classifier (host-tools/train/digits, trained on sklearn's digits) is
//! quantized to int8 (and fp16 and mixed, for comparison), its int8 blob is built into the
//! Cortex-M4 firmware together with the 540 held-out test digits, and QEMU runs all of them.
//! Every device result is compared with the host engine bit for bit.

use crate::app::{self, AppInput, AppRun};
use crate::assets::{self, Digit};
use crate::{boards, project_root, setup, toolchain};
use anyhow::{Result, bail};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};
use vitae::engine::Engine;
use vitae::eval::argmax;
use vitae::quantize::{Precision, Quantized};
use vitae_edge::format::{AlignedBytes, Model};

fn step(n: usize, what: &str) {
    println!("\n[{n}/6] {what}");
}

fn accuracy(preds: &[usize], digits: &[Digit]) -> f64 {
    let right = preds
        .iter()
        .zip(digits)
        .filter(|(p, d)| **p == d.label as usize)
        .count();
    100.0 * right as f64 / digits.len() as f64
}

/// Two characters per pixel so the digit keeps its aspect ratio.
fn ascii(d: &Digit) -> Vec<String> {
    const SHADES: &[u8] = b" .:-=+*#%@";
    d.pixels
        .chunks_exact(8)
        .map(|row| {
            row.iter()
                .map(|&p| {
                    let c = SHADES[(p as usize * (SHADES.len() - 1)) / 16] as char;
                    format!("{c}{c}")
                })
                .collect()
        })
        .collect()
}

struct Variant {
    name: &'static str,
    q: Quantized,
    preds: Vec<usize>,
    logits: Vec<f32>,
}

pub fn run() -> Result<()> {
    let started = Instant::now();
    setup::setup(true)?;
    let board = boards::board("mps2-an386")?;
    let tc = toolchain::detect()?;

    step(
        1,
        "the trained ViTAE digit classifier and the 540 held-out digits (host-tools/train/digits)",
    );
    let model = assets::digits_model()?;
    let dir = assets::digits_dir();
    let test = assets::read_digits(&dir.join("test.bin"))?;
    let images: Vec<Vec<f32>> = test.iter().map(Digit::image).collect();
    let flat: Vec<f32> = images.iter().flatten().copied().collect();
    let classes = model.config().num_classes();
    println!(
        "    {} test images, 8x8 pixels upsampled to 32x32 (vitae_edge::preprocess::digits); {} classes",
        test.len(),
        classes
    );

    step(2, "f32 reference model on the host");
    let f32_logits = model.forward_batch(&flat, &mut vitae::reference::NoObserver)?;
    let f32_preds: Vec<usize> = f32_logits.chunks_exact(classes).map(argmax).collect();
    let f32_acc = accuracy(&f32_preds, &test);
    println!("    f32 accuracy: {f32_acc:.2} %");

    step(
        3,
        "quantizing: int8, fp16, mixed and int4 weights, calibrated on 128 training images",
    );
    let mut variants = Vec::new();
    for (precision, name) in [
        (Precision::Int8, "int8"),
        (Precision::Fp16, "fp16"),
        (Precision::Mixed, "mixed"),
        (Precision::Int4, "int4"),
    ] {
        let t = Instant::now();
        let (path, q) = assets::digits_blob(&model, precision)?;
        let mut engine = Engine::new(&q.lowered.blob)?;
        let logits = engine.run_batch(&flat)?;
        let preds: Vec<usize> = logits.chunks_exact(classes).map(argmax).collect();
        println!(
            "    {name:5} {} ({} bytes, arena {} bytes) in {:.1} s; host engine accuracy {:.2} %",
            path.strip_prefix(project_root()).unwrap_or(&path).display(),
            q.lowered.blob.len(),
            q.lowered.arena_len,
            t.elapsed().as_secs_f64(),
            accuracy(&preds, &test)
        );
        variants.push(Variant {
            name,
            q,
            preds,
            logits,
        });
    }
    let int8 = &variants[0];
    let aligned = AlignedBytes::new(&int8.q.lowered.blob);
    let blob_model = Model::parse(aligned.as_bytes())?;
    let inspect = vitae::report::inspect_text(&blob_model, "digits-int8.vblob")?;
    println!(
        "    int8 blob (`cargo vitae inspect target/vitae/digits-int8.vblob` prints every layer):"
    );
    for line in inspect.lines().take(2) {
        println!("      {line}");
    }
    println!("      {}", vitae::report::totals_line(&blob_model));
    if let Some(m) = &variants[2].q.mixed {
        let kept = |p: vitae::quantize::NodePrecision| -> Vec<&str> {
            m.layers
                .iter()
                .filter(|l| l.choice == p)
                .map(|l| l.name.as_str())
                .collect()
        };
        let list = |names: Vec<&str>| {
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        };
        let fp16 = kept(vitae::quantize::NodePrecision::Fp16);
        println!(
            "    mixed kept {} layer(s) in fp16 (logits error {:.2e} → {:.2e}): {}",
            fp16.len(),
            m.int8_error,
            m.mixed_error,
            list(fp16)
        );
        let int16 = kept(vitae::quantize::NodePrecision::Int16);
        if !int16.is_empty() {
            println!(
                "    and {} residual add(s) with an int16 sum: {}",
                int16.len(),
                list(int16)
            );
        }
    }

    step(
        4,
        "building the firmware for mps2-an386 (Cortex-M4) with the int8 blob and the 540 digits",
    );
    let blob_path = project_root()
        .join("target")
        .join("vitae")
        .join("digits-int8.vblob");
    let elf = app::build(
        tc,
        board,
        &blob_path,
        &AppInput::Digits(dir.join("test.bin")),
    )?;

    step(5, "running all 540 digits on the emulated Cortex-M4 (QEMU)");
    let total = test.len();
    let mut done = 0usize;
    let t = Instant::now();
    let run = app::run(board, &elf, Duration::from_secs(1200), &mut |line| {
        if line.starts_with("LOGITS ") {
            done += 1;
            if done.is_multiple_of(54) || done == total {
                println!(
                    "    {done:>3}/{total} images ({:.0} s)",
                    t.elapsed().as_secs_f64()
                );
            }
        }
    })?;
    if run.logits.len() != total {
        bail!(
            "the device returned {} results for {total} images",
            run.logits.len()
        );
    }

    step(6, "results");
    let device_flat: Vec<f32> = run.logits.iter().flatten().copied().collect();
    let identical = run
        .logits
        .iter()
        .zip(int8.logits.chunks_exact(classes))
        .filter(|(d, h)| {
            d.iter()
                .map(|v| v.to_bits())
                .eq(h.iter().map(|v| v.to_bits()))
        })
        .count();
    let device_preds: Vec<usize> = device_flat.chunks_exact(classes).map(argmax).collect();
    let device_acc = accuracy(&device_preds, &test);
    println!("    device vs host engine (int8): {identical}/{total} images bit-identical logits");
    println!("\n    accuracy on the 540 held-out digits");
    println!("      f32   (host reference)      {f32_acc:6.2} %");
    println!(
        "      int8  (Cortex-M4, QEMU)     {device_acc:6.2} %   ({:+.2} pt)",
        device_acc - f32_acc
    );
    for v in &variants[1..] {
        let a = accuracy(&v.preds, &test);
        println!(
            "      {:5} (host engine)         {a:6.2} %   ({:+.2} pt)",
            v.name,
            a - f32_acc
        );
    }
    println!("\n    confusion matrix, int8 on the device (rows: truth, columns: prediction)");
    let mut cm = vec![[0usize; 10]; 10];
    for (p, d) in device_preds.iter().zip(&test) {
        cm[d.label as usize][*p] += 1;
    }
    println!(
        "         {}",
        (0..10).map(|c| format!("{c:>4}")).collect::<String>()
    );
    for (r, row) in cm.iter().enumerate() {
        println!(
            "      {r:>2} {}",
            row.iter()
                .map(|&n| if n == 0 {
                    "   .".into()
                } else {
                    format!("{n:>4}")
                })
                .collect::<String>()
        );
    }
    let mut shown: Vec<usize> = (0..4).collect();
    shown.extend(
        (0..total)
            .filter(|&i| device_preds[i] != test[i].label as usize)
            .take(3),
    );
    println!("\n    a few digits (the first four, then misclassified ones):");
    let arts: Vec<Vec<String>> = shown.iter().map(|&i| ascii(&test[i])).collect();
    for row in 0..8 {
        println!(
            "      {}",
            arts.iter()
                .map(|a| a[row].clone())
                .collect::<Vec<_>>()
                .join("   ")
        );
    }
    println!(
        "      {}",
        shown
            .iter()
            .map(|&i| {
                let mark = if device_preds[i] == test[i].label as usize {
                    "ok"
                } else {
                    "WRONG"
                };
                format!(
                    "{:<16}",
                    format!("#{i} {}→{} {mark}", test[i].label, device_preds[i])
                )
            })
            .collect::<Vec<_>>()
            .join("   ")
    );
    let per_inf: Vec<u64> = run.instructions.iter().skip(1).copied().collect();
    let per_inf = if per_inf.is_empty() {
        run.instructions.clone()
    } else {
        per_inf
    };
    let mean = per_inf.iter().sum::<u64>() as f64 / per_inf.len().max(1) as f64;
    let macs = blob_model.macs();
    println!(
        "\n    instructions per inference on the Cortex-M4: {:.0} (min {}, max {}; {:.2} per MAC, {} MACs)",
        mean,
        per_inf.iter().min().unwrap_or(&0),
        per_inf.iter().max().unwrap_or(&0),
        mean / macs as f64,
        macs
    );
    println!(
        "    memory: arena {} bytes (liveness lower bound {}), stack peak {} of {} bytes; flash: firmware {} bytes, of which the model blob {}",
        run.memory.arena,
        run.memory.lower_bound,
        run.memory.stack_used,
        run.memory.stack_size,
        run.flash_bytes,
        int8.q.lowered.blob.len()
    );
    let report = project_root()
        .join("target")
        .join("vitae")
        .join("demo-report.html");
    write_report(
        &report,
        &blob_model,
        &run,
        f32_acc,
        device_acc,
        &variants,
        &test,
        identical,
    )?;
    println!("    report: {}", report.display());
    let npz = assets::write_digits_npz(&test)?;
    let rel = |p: &Path| {
        p.strip_prefix(project_root())
            .unwrap_or(p)
            .display()
            .to_string()
    };
    println!(
        "    the test digits as {}; every blob's accuracy beside the f32 model's:\n      \
         cargo vitae eval --checkpoint host-tools/train/digits/model.pth --config host-tools/train/digits/kwargs.json \\\n        \
         --model target/vitae/digits-int8.vblob --model target/vitae/digits-fp16.vblob --model target/vitae/digits-mixed.vblob \\\n        \
         --model target/vitae/digits-int4.vblob --data {}",
        rel(&npz),
        rel(&npz)
    );
    println!(
        "\ndemo finished in {:.0} s{}",
        started.elapsed().as_secs_f64(),
        xtask_bootstrap::since_start_note()
    );
    if identical != total {
        bail!(
            "{} image(s) gave different logits on the device and on the host engine",
            total - identical
        );
    }
    Ok(())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Horizontal bar chart as inline SVG.
fn bars(title: &str, rows: &[(String, f64)], unit: &str, color: &str) -> String {
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1e-9);
    let (row_h, label_w, bar_w) = (16.0, 300.0, 460.0);
    let h = rows.len() as f64 * row_h + 30.0;
    let mut s = format!(
        "<h3>{}</h3><svg width=\"{}\" height=\"{h}\" font-family=\"monospace\" font-size=\"11\">",
        esc(title),
        label_w + bar_w + 120.0
    );
    for (i, (name, v)) in rows.iter().enumerate() {
        let y = 10.0 + i as f64 * row_h;
        let w = bar_w * v / max;
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text><rect x=\"{}\" y=\"{}\" width=\"{w:.1}\" height=\"{}\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{:.0} {unit}</text>",
            label_w - 6.0,
            y + 11.0,
            esc(name),
            label_w,
            y + 2.0,
            row_h - 4.0,
            label_w + w + 4.0,
            y + 11.0,
            v
        );
    }
    s.push_str("</svg>");
    s
}

#[allow(clippy::too_many_arguments)]
fn write_report(
    path: &Path,
    m: &Model,
    run: &AppRun,
    f32_acc: f64,
    device_acc: f64,
    variants: &[Variant],
    test: &[Digit],
    identical: usize,
) -> Result<()> {
    let rows = vitae::report::layer_rows(m)?;
    let time: Vec<(String, f64)> = run
        .ops
        .iter()
        .map(|o| (format!("{} {}", o.kind, o.name), o.instructions as f64))
        .collect();
    let mem: Vec<(String, f64)> = rows
        .iter()
        .map(|r| (format!("{} {}", r.op, r.name), r.live_bytes as f64))
        .collect();
    let mut acc = String::from(
        "<table><tr><th>precision</th><th>where</th><th>accuracy</th><th>vs f32</th><th>blob bytes</th></tr>",
    );
    let _ = write!(
        acc,
        "<tr><td>f32</td><td>host reference</td><td>{f32_acc:.2} %</td><td></td><td></td></tr>"
    );
    let _ = write!(
        acc,
        "<tr><td>int8</td><td>Cortex-M4 (QEMU)</td><td>{device_acc:.2} %</td><td>{:+.2} pt</td><td>{}</td></tr>",
        device_acc - f32_acc,
        variants[0].q.lowered.blob.len()
    );
    for v in &variants[1..] {
        let a = accuracy(&v.preds, test);
        let _ = write!(
            acc,
            "<tr><td>{}</td><td>host engine</td><td>{a:.2} %</td><td>{:+.2} pt</td><td>{}</td></tr>",
            v.name,
            a - f32_acc,
            v.q.lowered.blob.len()
        );
    }
    acc.push_str("</table>");
    let mut mixed = String::new();
    if let Some(mr) = &variants[2].q.mixed {
        let _ = write!(
            mixed,
            "<h3>mixed precision: layers kept in fp16 and why</h3><p>Each candidate layer was run alone in fp16 \
             (everything else int8) on the calibration set; the relative logits error with all layers int8 was \
             {:.3e}. Layers are added to fp16 from the most helpful down while the blob stays within {} bytes \
             and the error keeps falling. Result: error {:.3e}, {} bytes.</p><table><tr><th>layer</th>\
             <th>logits error with only this layer fp16</th><th>fp16</th></tr>",
            mr.int8_error, mr.budget_bytes, mr.mixed_error, mr.mixed_bytes
        );
        let mut layers = mr.layers.clone();
        let fp16_alone = |l: &vitae::quantize::mixed::LayerSensitivity| {
            l.error_alone_fp16.unwrap_or(f64::INFINITY)
        };
        layers.retain(|l| l.error_alone_fp16.is_some());
        layers.sort_by(|a, b| fp16_alone(a).total_cmp(&fp16_alone(b)));
        for l in layers.iter().take(12) {
            let _ = write!(
                mixed,
                "<tr><td>{}</td><td>{:.3e}</td><td>{}</td></tr>",
                esc(&l.name),
                fp16_alone(l),
                if l.fp16() { "yes" } else { "" }
            );
        }
        mixed.push_str("</table>");
    }
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>ViTAE-Edge demo</title><style>\
         body{{font-family:sans-serif;margin:2em;max-width:1000px}} td,th{{padding:2px 10px;text-align:left}}\
         </style></head><body><h1>ViTAE-Edge demo: digits on a Cortex-M4</h1>\
         <p>Model {name}: {macs} MACs per image, blob {blob} bytes, arena {arena} bytes (lower bound {lb}), \
         stack peak {stack} bytes, firmware flash {flash} bytes. {identical}/{n} device results bit-identical \
         to the host engine. Instruction counts are from QEMU (instructions, not cycles).</p>\
         <h2>accuracy on the {n} held-out digits</h2>{acc}{mixed}<h2>per layer</h2>{time}{mem}</body></html>",
        name = esc(m.name()),
        macs = m.macs(),
        blob = m.bytes().len(),
        arena = run.memory.arena,
        lb = run.memory.lower_bound,
        stack = run.memory.stack_used,
        flash = run.flash_bytes,
        n = test.len(),
        time = bars(
            "instructions per op (first image, Cortex-M4)",
            &time,
            "instr",
            "#4a7fb5"
        ),
        mem = bars("arena bytes live during each op", &mem, "B", "#b5804a"),
    );
    vitae::io::write_atomic(path, html.as_bytes())?;
    Ok(())
}
