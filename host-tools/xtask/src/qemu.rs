//! Running firmware under qemu-system-arm: semihosting for exit codes and the defmt stream, the
//! project's instruction-count plugin for measurements, and a timeout on every run.

use crate::boards::{Board, Runner};
use crate::defmt_log::{self, LogDecoder};
use crate::setup::icount_plugin_path;
use anyhow::{Context, Result, bail};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Options of one QEMU run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Kill QEMU after this long.
    pub timeout: Duration,
    /// Load the instruction-count plugin.
    pub icount: bool,
    /// With `icount`: also count every translation block's executions, for a profile by
    /// function ([`RunOutput::blocks`]).
    pub profile: bool,
    /// Echo every decoded log line as it arrives.
    pub echo: bool,
    /// QEMU's working directory (semihosting opens files relative to it); default: inherited.
    pub cwd: Option<std::path::PathBuf>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            timeout: Duration::from_secs(300),
            icount: false,
            profile: false,
            echo: false,
            cwd: None,
        }
    }
}

/// One measured region, as the plugin reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Regions are numbered in the order their stop markers execute.
    pub index: u32,
    pub instructions: u64,
    /// 0 for an outermost region.
    pub depth: u32,
    /// What the board's timing model adds to the count.
    pub timing: Timing,
}

impl Region {
    /// Refuses figures no instruction mix can give: every instruction takes at least one cycle
    /// in the Cortex-M4 table, and the vector instructions are some of the instructions.
    pub fn check(&self) -> Result<()> {
        if let Some(c) = self.timing.estimated_cycles
            && c < self.instructions
        {
            bail!(
                "icount region {}: {c} estimated cycles for {} instructions (the plugin's timing model is broken)",
                self.index,
                self.instructions
            );
        }
        if let Some(v) = self.timing.vector_instructions
            && v > self.instructions
        {
            bail!(
                "icount region {}: {v} vector instructions of {} (the plugin's count is broken)",
                self.index,
                self.instructions
            );
        }
        Ok(())
    }
}

/// The plugin's timing figures beside the instruction count, where the core has a model
/// ([`timing_model`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timing {
    /// Cortex-M4: estimated cycles (the TRM's cycles per instruction class, taken branches'
    /// refills; zero wait states). An estimate, never a measurement.
    pub estimated_cycles: Option<u64>,
    /// Cortex-M55: how many of the instructions were vector (Helium) instructions.
    pub vector_instructions: Option<u64>,
}

/// The plugin's `timing=` model for a QEMU `-cpu`: the Cortex-M4 has a published cycle table
/// (its TRM), the Cortex-M55's beats are summarized by the scalar/vector split; the Cortex-M7
/// (dual issue, caches) has none the plugin could apply.
pub fn timing_model(cpu: &str) -> Option<&'static str> {
    match cpu {
        "cortex-m4" => Some("m4"),
        "cortex-m55" => Some("m55"),
        _ => None,
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct RunOutput {
    /// Exit code 0 (success through semihosting).
    pub success: bool,
    pub exit_code: Option<i32>,
    pub lines: Vec<String>,
    pub regions: Vec<Region>,
    /// With [`RunOptions::profile`]: the whole run's executed blocks.
    pub blocks: Vec<Block>,
    pub malformed_frames: usize,
}

/// One executed translation block of a profiled run: where it starts, and what its executions
/// added up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub start: u64,
    pub instructions: u64,
    /// Estimated Cortex-M4 cycles (0 without that timing model), taken-branch refills excluded.
    pub cycles: u64,
}

/// Runs `elf` on `board` under QEMU. `on_line` sees each decoded log line as it arrives.
pub fn run(
    board: &Board,
    elf: &Path,
    opts: &RunOptions,
    on_line: &mut dyn FnMut(&str),
) -> Result<RunOutput> {
    let Runner::Qemu { machine, cpu } = board.runner else {
        bail!(
            "board {} is a real board: it runs through probe-rs, not QEMU",
            board.name
        );
    };
    let elf_bytes = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
    let table = defmt_log::table(&elf_bytes)?;
    let plugin_log = tempfile_path("qemu-icount", "log");
    let mut cmd = Command::new("qemu-system-arm");
    cmd.args([
        "-machine",
        machine,
        "-cpu",
        cpu,
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        "none",
    ])
    .args(["-semihosting-config", "enable=on,target=native"])
    .arg("-kernel")
    .arg(elf);
    if opts.icount {
        let plugin = icount_plugin_path();
        if !plugin.exists() {
            bail!("the instruction-count plugin is not built: run `cargo xtask setup`");
        }
        let timing = timing_model(cpu).map_or(String::new(), |t| format!(",timing={t}"));
        let blocks = if opts.profile { ",blocks=on" } else { "" };
        cmd.arg("-plugin")
            .arg(format!("{},mode=tb{timing}{blocks}", plugin.display()));
        cmd.args(["-d", "plugin", "-D"]).arg(&plugin_log);
    }
    if let Some(dir) = &opts.cwd {
        cmd.current_dir(dir);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .context("starting qemu-system-arm (run `cargo xtask setup`)")?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    // Watchdog: kills QEMU when the timeout passes; the reads below then see EOF.
    let pid = child.id();
    let timeout = opts.timeout;
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(timeout).is_err() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            true
        } else {
            false
        }
    });

    let mut decoder = LogDecoder::new(&table);
    let mut lines = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading QEMU's output"),
        };
        decoder.feed(&buf[..n], &mut |line| {
            if opts.echo {
                println!("    {line}");
            }
            on_line(&line);
            lines.push(line);
        });
    }
    let status = child.wait().context("waiting for QEMU")?;
    let _ = done_tx.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    let stderr_text = stderr_reader.join().unwrap_or_default();
    if timed_out {
        bail!(
            "QEMU ({}) did not finish within {} s; last log line: {}",
            board.name,
            timeout.as_secs(),
            lines.last().map(String::as_str).unwrap_or("(none)")
        );
    }
    let (regions, blocks) = if opts.icount {
        let text = std::fs::read_to_string(&plugin_log).unwrap_or_default();
        let _ = std::fs::remove_file(&plugin_log);
        (parse_icount(&text).0, parse_blocks(&text))
    } else {
        (Vec::new(), Vec::new())
    };
    if !status.success() && lines.is_empty() && !stderr_text.trim().is_empty() {
        bail!("QEMU failed: {}", stderr_text.trim());
    }
    Ok(RunOutput {
        success: status.success(),
        exit_code: status.code(),
        lines,
        regions,
        blocks,
        malformed_frames: decoder.malformed_frames(),
    })
}

/// Parses the plugin's `icount: region=K insns=N [mem=M] [cycles=C] [vector=V] [depth=D]` and
/// `icount: total insns=N` lines.
pub fn parse_icount(text: &str) -> (Vec<Region>, Option<u64>) {
    let mut regions = Vec::new();
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("icount: ") else {
            continue;
        };
        let field = |name: &str| -> Option<u64> {
            rest.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        };
        if rest.starts_with("total ") {
            total = field("insns");
        } else if let (Some(index), Some(instructions)) = (field("region"), field("insns")) {
            regions.push(Region {
                index: index as u32,
                instructions,
                depth: field("depth").unwrap_or(0) as u32,
                timing: Timing {
                    estimated_cycles: field("cycles"),
                    vector_instructions: field("vector"),
                },
            });
        }
    }
    (regions, total)
}

/// Parses the plugin's `icount: block=0xADDR insns=N cycles=C executions=E` lines (`blocks=on`).
pub fn parse_blocks(text: &str) -> Vec<Block> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("icount: block=0x")?;
            let mut f = rest.split_whitespace();
            let start = u64::from_str_radix(f.next()?, 16).ok()?;
            let mut field = |name: &str| -> Option<u64> {
                f.next()?
                    .strip_prefix(name)?
                    .strip_prefix('=')?
                    .parse()
                    .ok()
            };
            let (insns, cycles, executions) =
                (field("insns")?, field("cycles")?, field("executions")?);
            Some(Block {
                start,
                instructions: insns * executions,
                cycles: cycles * executions,
            })
        })
        .collect()
}

fn tempfile_path(stem: &str, ext: &str) -> std::path::PathBuf {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("{stem}-{}-{n}.{ext}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plugin_lines() {
        let log = "icount: region=0 insns=120 cycles=150 depth=1\n\
                   icount: region=1 insns=5000 mem=7 vector=4000 depth=0\n\
                   something else\nicount: total insns=99999 regions=2\n";
        let (r, total) = parse_icount(log);
        assert_eq!(
            r,
            vec![
                Region {
                    index: 0,
                    instructions: 120,
                    depth: 1,
                    timing: Timing {
                        estimated_cycles: Some(150),
                        vector_instructions: None
                    }
                },
                Region {
                    index: 1,
                    instructions: 5000,
                    depth: 0,
                    timing: Timing {
                        estimated_cycles: None,
                        vector_instructions: Some(4000)
                    }
                }
            ]
        );
        assert_eq!(total, Some(99999));
        let blocks = parse_blocks("icount: block=0x1a4 insns=5 cycles=7 executions=3\nicount: x\n");
        assert_eq!(
            blocks,
            vec![Block {
                start: 0x1a4,
                instructions: 15,
                cycles: 21
            }]
        );
        assert!(r.iter().all(|r| r.check().is_ok()));
        let mut broken = r[0];
        broken.timing.estimated_cycles = Some(119);
        assert!(broken.check().is_err());
        let mut broken = r[1];
        broken.timing.vector_instructions = Some(5001);
        assert!(broken.check().is_err());
    }
}
