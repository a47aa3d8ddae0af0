//! Building the inference firmware with a blob and inputs, running it under QEMU, and reading
//! back what it printed: logits (exact f32 bits), per-op instruction counts, memory.

use crate::boards::Board;
use crate::firmware::{self, Build};
use crate::qemu::{self, RunOptions};
use crate::toolchain::ArmToolchain;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the firmware runs on.
#[derive(Debug, Clone)]
pub enum AppInput {
    /// float32 .npy, (N, C, H, W) or (C, H, W).
    Npy(PathBuf),
    /// A VTDIGIT1 file, preprocessed on the device.
    Digits(PathBuf),
}

/// One op's cost in the first image's run.
#[derive(Debug, Clone)]
pub struct OpCost {
    pub kind: String,
    pub name: String,
    pub macs: u64,
    /// Instructions under QEMU (icount plugin).
    pub instructions: u64,
    /// The board's timing model's figures for the op (estimated M4 cycles, M55 vector share).
    pub timing: qemu::Timing,
    /// Arena bytes in use while the op runs (from the plan).
    pub live_bytes: u64,
}

/// Memory figures the firmware reported.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    pub arena: u64,
    pub lower_bound: u64,
    pub stack_used: u64,
    pub stack_size: u64,
    /// Each arena part's region and bytes, in part order.
    pub arena_parts: Vec<(String, u64)>,
}

/// Everything one firmware run produced.
#[derive(Debug)]
pub struct AppRun {
    pub model_line: String,
    /// Per image, the logits as f32.
    pub logits: Vec<Vec<f32>>,
    /// Whole-inference instructions, per image.
    pub instructions: Vec<u64>,
    /// Whole-inference timing figures, per image (see [`qemu::Timing`]).
    pub timing: Vec<qemu::Timing>,
    pub ops: Vec<OpCost>,
    pub memory: Memory,
    pub flash_bytes: u64,
    pub static_ram_bytes: u64,
    /// The firmware's `WEIGHTS` line after its tag: weight bytes per inference by region.
    pub weights_line: String,
    /// A profiled run's executed blocks (start-up and every image included).
    pub blocks: Vec<qemu::Block>,
}

/// Builds the app for `board` embedding `blob` and `input`.
pub fn build(tc: ArmToolchain, board: &Board, blob: &Path, input: &AppInput) -> Result<PathBuf> {
    build_env(tc, board, blob, input, &[])
}

/// [`build`] with extra build-script environment (`VITAE_REPEAT`, `VITAE_ALLOW_INVALID_BLOB`).
pub fn build_env(
    tc: ArmToolchain,
    board: &Board,
    blob: &Path,
    input: &AppInput,
    extra_env: &[(&str, &str)],
) -> Result<PathBuf> {
    let abs = |p: &Path| -> Result<String> {
        Ok(std::fs::canonicalize(p)
            .with_context(|| format!("{} not found", p.display()))?
            .display()
            .to_string())
    };
    let mut b = Build::app(board);
    b.env.push(("VITAE_BLOB".into(), abs(blob)?));
    match input {
        AppInput::Npy(p) => {
            b.env.push(("VITAE_INPUT".into(), abs(p)?));
            b.env.push(("VITAE_DIGITS".into(), String::new()));
        }
        AppInput::Digits(p) => {
            b.env.push(("VITAE_DIGITS".into(), abs(p)?));
            b.env.push(("VITAE_INPUT".into(), String::new()));
        }
    }
    // What the caller does not set is off, whatever the shell exported: an in-place run must
    // not be silently staged or repeated.
    for k in ["VITAE_STAGE", "VITAE_STAGE_AHEAD", "VITAE_REPEAT"] {
        if !extra_env.iter().any(|(key, _)| *key == k) {
            b.env.push((k.to_string(), String::new()));
        }
    }
    for (k, v) in extra_env {
        b.env.push((k.to_string(), v.to_string()));
    }
    firmware::build(tc, &b)
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn parse_logits(line: &str) -> Result<(usize, Vec<f32>)> {
    // "LOGITS <i> [3f800000, bf000000, ...]"
    let rest = line.strip_prefix("LOGITS ").context("not a LOGITS line")?;
    let (idx, list) = rest.split_once(' ').context("malformed LOGITS line")?;
    let values = parse_hex_list(list)?
        .into_iter()
        .map(f32::from_bits)
        .collect();
    Ok((idx.parse()?, values))
}

/// A defmt `{:x}` list of u32 (`[3f800000, bf000000]`), as the firmware prints logit bits.
pub fn parse_hex_list(list: &str) -> Result<Vec<u32>> {
    let list = list.trim().trim_start_matches('[').trim_end_matches(']');
    list.split(',')
        .map(|h| {
            let h = h.trim().trim_start_matches("0x");
            u32::from_str_radix(h, 16).with_context(|| format!("bad logit bits `{h}`"))
        })
        .collect()
}

/// Runs a built app under QEMU; `on_line` sees each log line (for progress).
pub fn run(
    board: &Board,
    elf: &Path,
    timeout: Duration,
    on_line: &mut dyn FnMut(&str),
) -> Result<AppRun> {
    run_with(board, elf, timeout, false, on_line)
}

/// [`run`], with `profile`: the whole run's executed blocks too ([`AppRun::blocks`]).
pub fn run_with(
    board: &Board,
    elf: &Path,
    timeout: Duration,
    profile: bool,
    on_line: &mut dyn FnMut(&str),
) -> Result<AppRun> {
    let opts = RunOptions {
        timeout,
        icount: true,
        echo: false,
        cwd: None,
        profile,
    };
    let mut out = qemu::run(board, elf, &opts, on_line)?;
    if let Some(err) = out
        .lines
        .iter()
        .find(|l| l.starts_with("ERROR") || l.starts_with("PANIC") || l.starts_with("HARDFAULT"))
    {
        bail!("the firmware on {} reported: {err}", board.name);
    }
    if !out.success || !out.lines.iter().any(|l| l.starts_with("DONE")) {
        bail!(
            "the firmware on {} did not finish (exit code {:?}); last line: {}",
            board.name,
            out.exit_code,
            out.lines.last().map(String::as_str).unwrap_or("(none)")
        );
    }
    let mut logits = Vec::new();
    let mut ops = Vec::new();
    let mut memory = Memory::default();
    let mut model_line = String::new();
    let mut weights_line = String::new();
    for line in &out.lines {
        if line.starts_with("LOGITS ") {
            let (i, v) = parse_logits(line)?;
            if i != logits.len() {
                bail!("logits of image {i} arrived out of order");
            }
            logits.push(v);
        } else if let Some(rest) = line.strip_prefix("OP ") {
            let mut it = rest.split_whitespace();
            let (_, kind, name) = (it.next(), it.next().unwrap_or(""), it.next().unwrap_or(""));
            ops.push(OpCost {
                kind: kind.to_string(),
                name: name.to_string(),
                macs: field(line, "macs")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                instructions: 0,
                timing: Default::default(),
                live_bytes: field(line, "live_bytes")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            });
        } else if line.starts_with("ARENA_PART ") {
            let region = field(line, "region").unwrap_or("?").to_string();
            let bytes = field(line, "bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            memory.arena_parts.push((region, bytes));
        } else if line.starts_with("MEMORY ") {
            let g = |k| field(line, k).and_then(|v| v.parse().ok()).unwrap_or(0);
            memory = Memory {
                arena: g("arena"),
                lower_bound: g("lower_bound"),
                stack_used: g("stack_used"),
                stack_size: g("stack_size"),
                arena_parts: std::mem::take(&mut memory.arena_parts),
            };
        } else if line.starts_with("MODEL ") {
            model_line = line.clone();
        } else if let Some(rest) = line.strip_prefix("WEIGHTS ") {
            weights_line = rest.to_string();
        }
    }
    // Regions: the first image's per-op regions are nested (depth 1) in its whole-inference
    // region; every image has one outermost (depth 0) region.
    for r in &out.regions {
        r.check()?;
    }
    let inner: Vec<&qemu::Region> = out.regions.iter().filter(|r| r.depth == 1).collect();
    let whole: Vec<&qemu::Region> = out.regions.iter().filter(|r| r.depth == 0).collect();
    if inner.len() == ops.len() {
        for (op, r) in ops.iter_mut().zip(inner) {
            op.instructions = r.instructions;
            op.timing = r.timing;
        }
    }
    let sizes = firmware::sizes(elf)?;
    Ok(AppRun {
        model_line,
        logits,
        instructions: whole.iter().map(|r| r.instructions).collect(),
        timing: whole.iter().map(|r| r.timing).collect(),
        blocks: std::mem::take(&mut out.blocks),
        ops,
        memory,
        flash_bytes: sizes.flash,
        static_ram_bytes: sizes.ram,
        weights_line,
    })
}
