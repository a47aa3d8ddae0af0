//! `cargo xtask bench`: instruction counts under QEMU.
//!
//! `bench kernels` builds the kernel benchmark firmware (`firmware/bench`) for the Cortex-M4 and
//! Cortex-M55 QEMU boards, runs it with the instruction-count plugin and prints, per case, the
//! executed instructions of the optimized and the reference kernel. The firmware also checks that
//! both wrote the same bytes; a mismatch fails the command.

use crate::boards::{self, Board};
use crate::firmware::arm_target_dir;
use crate::qemu::{self, RunOptions};
use crate::{project_root, setup, toolchain};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(clap::Subcommand, Debug)]
pub enum BenchWhat {
    /// Kernel benchmark: cases a–f (conv, grouped conv, linear, attention), optimized vs
    /// reference, on mps2-an386 (Cortex-M4) and mps3-an547 (Cortex-M55).
    Kernels {
        /// One JSON object per line instead of the table.
        #[arg(long)]
        json: bool,
        /// Only this QEMU board (default: mps2-an386 and mps3-an547).
        #[arg(long)]
        board: Option<String>,
    },
    /// End-to-end benchmark: whole models (mcu_a int8, the demo's digits model) on the QEMU
    /// boards: instructions per inference and per MAC, arena, stack, flash.
    E2e(crate::bench_e2e::E2eArgs),
}

pub fn run(args: &BenchArgs) -> Result<()> {
    match &args.what {
        BenchWhat::Kernels { json, board } => kernels(*json, board.as_deref()),
        BenchWhat::E2e(a) => crate::bench_e2e::run(a),
    }
}

/// Boards the kernel benchmark runs on by default.
const KERNEL_BOARDS: &[&str] = &["mps2-an386", "mps3-an547"];

/// One measured kernel call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement {
    pub case: String,
    pub board: &'static str,
    pub implementation: String,
    pub macs: u64,
    pub instructions: u64,
    /// The board's timing model's figures (estimated M4 cycles, M55 vector instructions).
    pub timing: qemu::Timing,
    pub scratch_bytes: u64,
    pub shape: String,
}

fn kernels(json: bool, only: Option<&str>) -> Result<()> {
    setup::setup(true)?;
    let tc = toolchain::detect()?;
    let names: Vec<&str> = match only {
        Some(b) => vec![b],
        None => KERNEL_BOARDS.to_vec(),
    };
    let mut all = Vec::new();
    for name in names {
        let board = boards::board(name)?;
        if !board.is_qemu() {
            bail!("{name} is a real board; the kernel benchmark runs under QEMU");
        }
        let elf = build(tc, board)?;
        if !json {
            println!(
                "running {} on {} ({}) …",
                elf.display(),
                board.name,
                board.core
            );
        }
        all.extend(run_board(board, &elf)?);
    }
    if json {
        for m in &all {
            println!("{}", json_line(m));
        }
    } else {
        print!("{}", table(&all));
    }
    Ok(())
}

/// One measurement as a JSON object, keys in the documented order.
pub fn json_line(m: &Measurement) -> String {
    use serde_json::json;
    let mut timing = String::new();
    if let Some(c) = m.timing.estimated_cycles {
        timing += &format!(",\"estimated_cycles\":{c}");
    }
    if let Some(v) = m.timing.vector_instructions {
        timing += &format!(",\"vector_instructions\":{v}");
    }
    format!(
        "{{\"case\":{},\"board\":{},\"impl\":{},\"macs\":{},\"instructions\":{}{timing},\"scratch_bytes\":{}}}",
        json!(m.case),
        json!(m.board),
        json!(m.implementation),
        m.macs,
        m.instructions,
        m.scratch_bytes
    )
}

/// Builds `vitae-bench` for `board`; returns `target/firmware/<board>/vitae-bench.elf`. The
/// command is echoed to stderr, so `--json` output stays clean.
fn build(tc: toolchain::ArmToolchain, board: &Board) -> Result<PathBuf> {
    let package = "vitae-bench";
    let mut cmd = tc.cargo_for_board("build", board, &arm_target_dir());
    cmd.current_dir(project_root().join("firmware"))
        .args(["--release", "--package", package, "--bin", package])
        .env("DEFMT_LOG", "info");
    let shown: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    eprintln!("  $ {}", shown.join(" "));
    let status = cmd
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("starting cargo to build {package}"))?;
    if !status.success() {
        bail!("building {package} for {} failed ({status})", board.name);
    }
    let built = arm_target_dir()
        .join(board.target)
        .join("release")
        .join(package);
    // M4 and M7 share a Rust target: keep one copy per board.
    let dir = project_root()
        .join("target")
        .join("firmware")
        .join(board.name);
    std::fs::create_dir_all(&dir)?;
    let dest = dir.join(format!("{package}.elf"));
    std::fs::copy(&built, &dest).with_context(|| format!("copying {}", built.display()))?;
    Ok(dest)
}

fn run_board(board: &'static Board, elf: &std::path::Path) -> Result<Vec<Measurement>> {
    let opts = RunOptions {
        timeout: Duration::from_secs(900),
        icount: true,
        echo: false,
        cwd: None,
        profile: false,
    };
    let out = qemu::run(board, elf, &opts, &mut |line| {
        if line.starts_with("CHECK ") && !line.ends_with(" ok") {
            println!("    {line}");
        }
    })?;
    let failures: Vec<&String> = out
        .lines
        .iter()
        .filter(|l| l.starts_with("CHECK ") && !l.ends_with(" ok"))
        .collect();
    if !failures.is_empty() || !out.success {
        let last = out
            .lines
            .last()
            .map(String::as_str)
            .unwrap_or("(no output)");
        bail!(
            "the benchmark on {} failed: {}",
            board.name,
            if failures.is_empty() {
                last.to_string()
            } else {
                failures
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            }
        );
    }
    parse(board.name, &out.lines, &out.regions)
}

/// Pairs the firmware's `BENCH` lines with the plugin's outermost regions, in order.
pub fn parse(
    board: &'static str,
    lines: &[String],
    regions: &[qemu::Region],
) -> Result<Vec<Measurement>> {
    let mut counts: Vec<&qemu::Region> = regions.iter().filter(|r| r.depth == 0).collect();
    counts.sort_by_key(|r| r.index);
    let reports: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("BENCH "))
        .collect();
    if reports.len() != counts.len() {
        bail!(
            "{board}: {} BENCH lines but {} measured regions (is the icount plugin built? `cargo xtask setup`)",
            reports.len(),
            counts.len()
        );
    }
    reports
        .iter()
        .zip(counts)
        .map(|(line, region)| {
            let mut f = line.splitn(5, ' ');
            let mut field = |what: &str| {
                f.next()
                    .with_context(|| format!("BENCH line without {what}: {line}"))
            };
            let case = field("case")?.to_string();
            let implementation = field("impl")?.to_string();
            let macs = field("macs")?.parse().context("MACs")?;
            let scratch_bytes = field("scratch")?.parse().context("scratch bytes")?;
            let shape = field("shape")?.to_string();
            Ok(Measurement {
                case,
                board,
                implementation,
                macs,
                instructions: region.instructions,
                timing: region.timing,
                scratch_bytes,
                shape,
            })
        })
        .collect()
}

/// The human-readable table: one row per case, M4 and M55 side by side.
pub fn table(all: &[Measurement]) -> String {
    use std::fmt::Write;
    let mut cases: Vec<(&str, &str, u64)> = Vec::new();
    for m in all {
        if !cases.iter().any(|c| c.0 == m.case) {
            cases.push((&m.case, &m.shape, m.macs));
        }
    }
    let find = |case: &str, board: &str, imp: &str| {
        all.iter()
            .find(|m| m.case == case && m.board == board && m.implementation == imp)
    };
    let boards: Vec<&str> = KERNEL_BOARDS
        .iter()
        .copied()
        .filter(|b| all.iter().any(|m| m.board == *b))
        .chain(
            all.iter()
                .map(|m| m.board)
                .filter(|b| !KERNEL_BOARDS.contains(b))
                .take(1),
        )
        .collect();
    let mut s = String::new();
    let _ = write!(s, "\n| case | shape | MACs |");
    for b in &boards {
        let _ = write!(
            s,
            " {b} optimized | instr/MAC | {b} reference | instr/MAC |"
        );
    }
    let _ = writeln!(s, " scratch B (opt) |");
    let _ = write!(s, "|---|---|---:|");
    for _ in &boards {
        let _ = write!(s, "---:|---:|---:|---:|");
    }
    let _ = writeln!(s, "---:|");
    for (case, shape, macs) in cases {
        let _ = write!(s, "| {case} | {shape} | {} |", vitae::text::grouped(macs));
        let mut scratch = None;
        for b in &boards {
            for imp in ["optimized", "reference"] {
                match find(case, b, imp) {
                    Some(m) => {
                        let _ = write!(
                            s,
                            " {} | {:.3} |",
                            vitae::text::grouped(m.instructions),
                            m.instructions as f64 / m.macs.max(1) as f64
                        );
                        if imp == "optimized" {
                            scratch = Some(m.scratch_bytes);
                        }
                    }
                    None => {
                        let _ = write!(s, " – | – |");
                    }
                }
            }
        }
        let _ = writeln!(
            s,
            " {} |",
            scratch.map_or("–".to_string(), |b| b.to_string())
        );
    }
    // The timing models' figures for the optimized kernels, where a board has one.
    let timed: Vec<&Measurement> = all
        .iter()
        .filter(|m| {
            m.implementation == "optimized"
                && (m.timing.estimated_cycles.is_some() || m.timing.vector_instructions.is_some())
        })
        .collect();
    if !timed.is_empty() {
        let _ = writeln!(
            s,
            "\noptimized kernels, timing models (Cortex-M4: cycles estimated from the TRM's \
             cycles per instruction class, zero wait states; Cortex-M55: vector / scalar \
             instructions):\n"
        );
        let _ = writeln!(
            s,
            "| case | board | est. cycles | cycles/MAC | vector instr | vector % | scalar instr/MAC |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
        for m in timed {
            let per_mac = |n: u64| n as f64 / m.macs.max(1) as f64;
            let (cycles, cycles_per) = match m.timing.estimated_cycles {
                Some(c) => (vitae::text::grouped(c), format!("{:.3}", per_mac(c))),
                None => ("–".into(), "–".into()),
            };
            let (vector, share, scalar) = match m.timing.vector_instructions {
                Some(v) => (
                    vitae::text::grouped(v),
                    format!("{:.1}", 100.0 * v as f64 / m.instructions.max(1) as f64),
                    format!("{:.3}", per_mac(m.instructions.saturating_sub(v))),
                ),
                None => ("–".into(), "–".into(), "–".into()),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {cycles} | {cycles_per} | {vector} | {share} | {scalar} |",
                m.case, m.board
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_reports_with_regions_in_order() {
        let lines: Vec<String> = [
            "kernel benchmark on x",
            "BENCH a optimized 100 64 conv 3x3 thing",
            "BENCH a reference 100 0 conv 3x3 thing",
            "CHECK a ok",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let regions = [
            qemu::Region {
                index: 1,
                instructions: 700,
                depth: 0,
                timing: Default::default(),
            },
            qemu::Region {
                index: 0,
                instructions: 150,
                depth: 0,
                timing: qemu::Timing {
                    estimated_cycles: Some(240),
                    vector_instructions: None,
                },
            },
            qemu::Region {
                index: 2,
                instructions: 5,
                depth: 1,
                timing: Default::default(),
            },
        ];
        let m = parse("mps2-an386", &lines, &regions).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].implementation.as_str(), m[0].instructions),
            ("optimized", 150)
        );
        assert_eq!(
            (m[1].implementation.as_str(), m[1].instructions),
            ("reference", 700)
        );
        assert_eq!(m[0].shape, "conv 3x3 thing");
        assert_eq!(m[0].scratch_bytes, 64);
        let t = table(&m);
        assert!(
            t.contains("| a | conv 3x3 thing | 100 | 150 | 1.500 | 700 | 7.000 |"),
            "{t}"
        );
        assert!(parse("mps2-an386", &lines[..2], &regions).is_err());
        assert!(
            t.contains("| a | mps2-an386 | 240 | 2.400 | – | – | – |"),
            "{t}"
        );
        assert_eq!(
            json_line(&m[0]),
            r#"{"case":"a","board":"mps2-an386","impl":"optimized","macs":100,"instructions":150,"estimated_cycles":240,"scratch_bytes":64}"#
        );
    }

    #[test]
    fn groups_digits() {
        assert_eq!(vitae::text::grouped(0), "0");
        assert_eq!(vitae::text::grouped(999), "999");
        assert_eq!(vitae::text::grouped(1000), "1,000");
        assert_eq!(vitae::text::grouped(37748736), "37,748,736");
    }
}
