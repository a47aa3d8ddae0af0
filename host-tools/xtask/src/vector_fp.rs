//! Helium floating point in the Cortex-M55 binaries, against the reviewed list.
//!
//! Helium's f32/f16 vector instructions always compute in Arm flush-to-zero arithmetic (subnormal
//! operands read as 0, results below 2^−126 become 0), where the host and the scalar FPUs keep
//! subnormals. Host = device holds only because every step that runs them was shown to be safe
//! (no subnormal can reach or leave it, or its other targets compute the same flush; see the
//! crate docs). LLVM vectorizes f32 loops by itself, so a new or changed loop could start using
//! them unreviewed: this check disassembles the M55 binaries, attributes every vector
//! floating-point instruction to the innermost function of this project it comes from (through
//! the DWARF inline chain: with LTO nearly everything is inlined into a few symbols), and fails on
//! a function that is not in [`ALLOWED`], and on an entry no binary uses any more.

use crate::toolchain::ArmToolchain;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The reviewed steps: every function allowed to contain Helium floating point, and why that is
/// safe. A new entry needs the same kind of argument at the step itself.
pub const ALLOWED: &[(&str, &str)] = &[
    (
        "vitae_edge::arch::mve::elementwise::quantize_rgb",
        "hand-written; inv_scale in 2^-64..2^64, the +zp+128.5 absorbs tiny products and subnormal pixels",
    ),
    (
        "vitae_edge::arch::mve::attention::softmax_row",
        "hand-written; only for scale in 2^-88..2^96, maximum 0 or >= 2^-88: nothing subnormal",
    ),
    (
        "vitae_edge::arch::mve::performer::axpy_f32",
        "hand-written; flush-to-zero is the definition on every target (math::ftz, FPSCR.FZ on M4/M7)",
    ),
    (
        "vitae_edge::arch::mve::performer::rank1_update_rows",
        "hand-written; as axpy_f32",
    ),
    (
        "vitae_edge::arch::mve::performer::weighted_row_sum",
        "hand-written; as axpy_f32",
    ),
    (
        "vitae_edge::kernels::performer::PerformerS8::features_of",
        "exponents 0 or >= 2^-106 (scales 2^-40..2^40), exp invariant, features 0 or > 2^-126",
    ),
    (
        "vitae_edge::kernels::performer::dequantize_token",
        "integers times v_scale in 2^-64..2^64",
    ),
    (
        "vitae_edge::kernels::performer::add_features",
        "sums of features that are 0 or >= 2^-126 and never negative",
    ),
    (
        "vitae_edge::kernels::performer::quantize_row",
        "flush-to-zero numerators, flushed scale, +zp+128.5 absorbs tiny products",
    ),
    (
        "vitae_edge::kernels::elementwise::AddS8::one",
        "factors 0 or 2^-64..2^64 times integers: 0 or >= 2^-89 throughout",
    ),
    (
        "vitae_edge::kernels::elementwise::mean_pool_s8",
        "sum times a scale, plus an offset, both 0 or 2^-64..2^64: 0 or >= 2^-89 throughout",
    ),
    (
        "vitae_edge::kernels::layernorm::layernorm_s8",
        "f in [2^-49, 2^32], gains and offsets 0 or 2^-64..2^64: 0 or >= 2^-113 throughout",
    ),
    (
        "vitae_edge::kernels::layernorm::layernorm_s16",
        "as layernorm_s8 with V < 2^60: f in [2^-48, 2^32], 0 or >= 2^-112 throughout",
    ),
    (
        "vitae_edge::kernels::elementwise::add_lanes",
        "AddS8::one's argument on int16 integers (|x| <= 2^15): 0 or >= 2^-89 throughout",
    ),
    (
        "vitae_edge::kernels::elementwise::add_lanes_in_place",
        "as add_lanes",
    ),
    (
        "vitae_edge::kernels::elementwise::requantize_s16",
        "integers times a ratio in 2^-64..2^64, +zp+128.5 absorbs tiny products",
    ),
    (
        "vitae_edge::kernels::attention::rescale",
        "the shortcuts for factors 0 and 1: integer sums converted and added, nothing tiny",
    ),
    (
        "vitae_edge::kernels::attention::rescale_general",
        "products <= 2^-126 zeroed alike on every target (math::zero_tiny)",
    ),
    (
        "vitae_edge::kernels::attention::output",
        "out_scale <= 2^64 and round_half_up's + 0.5 absorb tiny quotients and products",
    ),
    (
        "vitae_edge::kernels::f16::attention_f16",
        "the accumulator rescale, products <= 2^-126 zeroed alike (math::zero_tiny)",
    ),
    (
        "vitae_edge::kernels::f16::performer_f16",
        "feature sums of features 0 or >= 2^-126 (the exponent threshold -83.17)",
    ),
    // The flush-to-zero emulation itself, in the on-target tests' references: vectorized, it
    // computes what Helium computes (its flushes are idempotent with Helium's).
    (
        "vitae_edge::math::ftz::flush",
        "the emulation of Helium's arithmetic: the same result when Helium runs it",
    ),
    // Test code (the on-target test binary).
    (
        "vitae_edge::kernels::cases::subnormal::performer_f16",
        "test data: integers times 2^-29, never subnormal",
    ),
    (
        "vitae_qemu_tests::tile_probabilities_match_exp::{closure#0}",
        "the test's expected probabilities, for softmax_row's in-range inputs: nothing subnormal",
    ),
];

/// Functions that never count as a step: the step is their first caller outside this list (the
/// code they inline into). Everything outside this project (`core`, `half`, …) counts as such.
const HELPERS: &[&str] = &[
    "vitae_edge::math::exp",
    "vitae_edge::math::exp_cut",
    "vitae_edge::math::zero_tiny",
    "vitae_edge::quant::round_half_up",
    "vitae_edge::quant::round_to_i8",
    "vitae_edge::quant::round_to_i16",
    "vitae_edge::quant::quantize_f32",
    "vitae_edge::kernels::performer::feature",
];

/// One use of Helium floating point: where, and which instructions.
#[derive(Debug, Default, Clone)]
pub struct Use {
    /// Mnemonic → count.
    pub mnemonics: BTreeMap<String, usize>,
    /// A few source locations (innermost frame), for the report.
    pub locations: Vec<String>,
}

/// The disassembler and symbolizer (`cargo xtask setup` checks both are there).
pub(crate) fn llvm_tool(tc: ArmToolchain, name: &str) -> Result<PathBuf> {
    tc.llvm_tool(name).map_err(|why| {
        anyhow::anyhow!(
            "{name} {why}: install the Debian package llvm-22, or `rustup component add llvm-tools`"
        )
    })
}

/// Runs LLVM tool `name` with `args` on `elf` and returns its standard output; fails naming the
/// tool and the ELF with the tool's own message.
pub(crate) fn llvm_tool_output(
    tc: ArmToolchain,
    name: &str,
    args: &[&str],
    elf: &Path,
) -> Result<String> {
    let tool = llvm_tool(tc, name)?;
    let out = Command::new(&tool)
        .args(args)
        .arg(elf)
        .env("PATH", tc.search_path())
        .output()
        .with_context(|| format!("running {}", tool.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed on {}: {}",
            tool.display(),
            elf.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// True for an MVE floating-point instruction: an `.f32`/`.f16` type on a `q` register. Moves
/// (`vmov`) only copy bits and are left out.
pub fn is_vector_fp(mnemonic: &str, operands: &str) -> bool {
    let mut parts = mnemonic.split('.');
    let base = parts.next().unwrap_or("");
    let float = parts.any(|t| t == "f32" || t == "f16");
    let qreg = operands
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|t| t.len() == 2 && t.starts_with('q') && t.as_bytes()[1].is_ascii_digit());
    float && qreg && base != "vmov"
}

/// `(address, mnemonic)` of every vector floating-point instruction in `llvm-objdump -d` output.
pub fn vector_fp_instructions(disassembly: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for line in disassembly.lines() {
        let mut fields = line.split('\t');
        let Some(addr) = fields.next().and_then(|a| a.trim().strip_suffix(':')) else {
            continue;
        };
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        let mnemonic = fields.next().unwrap_or("").trim();
        let operands = fields.next().unwrap_or("");
        if is_vector_fp(mnemonic, operands) {
            out.push((addr, mnemonic.to_string()));
        }
    }
    out
}

/// A function name as the list spells it: generic arguments dropped, `<T>::f` and
/// `<T as Trait>::f` written `T::f`.
pub fn normalize(name: &str) -> String {
    // Drop `::<…>` (balanced).
    let mut s = String::new();
    let mut depth = 0usize;
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if depth == 0 && name[i..].starts_with("::<") {
            depth = 1;
            i += 3;
            continue;
        }
        if depth > 0 {
            match b[i] {
                b'<' => depth += 1,
                b'>' => depth -= 1,
                _ => {}
            }
            i += 1;
            continue;
        }
        s.push(b[i] as char);
        i += 1;
    }
    // `<T>::rest` or `<T as Trait>::rest`.
    if let Some(inner) = s.strip_prefix('<') {
        let mut depth = 1usize;
        for (j, c) in inner.char_indices() {
            match c {
                '<' => depth += 1,
                '>' => {
                    depth -= 1;
                    if depth == 0 {
                        let ty = inner[..j].split(" as ").next().unwrap_or("");
                        return format!("{ty}{}", &inner[j + 1..]);
                    }
                }
                _ => {}
            }
        }
    }
    s
}

/// True for a frame that is the project's own code (this crate, its on-target tests, the
/// firmware) and not one of [`HELPERS`].
fn is_step(function: &str) -> bool {
    let own = [
        "vitae_edge::",
        "vitae_qemu_tests::",
        "vitae_fw",
        "vitae_board::",
    ]
    .iter()
    .any(|p| function.starts_with(p));
    own && !HELPERS.contains(&function)
}

/// Every function of `elf` that contains Helium floating point.
pub fn uses(tc: ArmToolchain, elf: &Path) -> Result<BTreeMap<String, Use>> {
    let disassembly = llvm_tool_output(tc, "llvm-objdump", &["-d", "--no-show-raw-insn"], elf)?;
    let found = vector_fp_instructions(&disassembly);
    let mut uses: BTreeMap<String, Use> = BTreeMap::new();
    if found.is_empty() {
        return Ok(uses);
    }
    let symbolizer = llvm_tool(tc, "llvm-symbolizer")?;
    let mut child = Command::new(&symbolizer)
        .args(["--inlining", "--demangle", "--functions=linkage"])
        .arg(format!("--obj={}", elf.display()))
        .env("PATH", tc.search_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", symbolizer.display()))?;
    let addresses: String = found.iter().map(|(a, _)| format!("{a:#x}\n")).collect();
    let mut stdin = child.stdin.take().context("symbolizer stdin")?;
    let feeder = std::thread::spawn(move || stdin.write_all(addresses.as_bytes()));
    let out = child.wait_with_output()?;
    feeder
        .join()
        .map_err(|_| anyhow::anyhow!("symbolizer input thread"))??;
    let text = String::from_utf8_lossy(&out.stdout);
    let blocks: Vec<&str> = text.trim_end().split("\n\n").collect();
    if blocks.len() != found.len() {
        bail!(
            "{} answered {} locations for {} addresses",
            symbolizer.display(),
            blocks.len(),
            found.len()
        );
    }
    for ((addr, mnemonic), block) in found.iter().zip(blocks) {
        let lines: Vec<&str> = block.lines().collect();
        let frames: Vec<(String, &str)> = lines
            .chunks(2)
            .map(|f| {
                (
                    normalize(f[0].trim()),
                    f.get(1).copied().unwrap_or("").trim(),
                )
            })
            .collect();
        let step = frames
            .iter()
            .find(|(f, _)| is_step(f))
            .map(|(f, _)| f.clone())
            .unwrap_or_else(|| {
                format!(
                    "(no function of this project: {})",
                    frames.first().map(|f| f.0.as_str()).unwrap_or("?")
                )
            });
        let u = uses.entry(step).or_default();
        *u.mnemonics.entry(mnemonic.clone()).or_default() += 1;
        if u.locations.len() < 3 {
            let at = frames.first().map(|f| f.1).unwrap_or("?");
            u.locations.push(format!("{addr:#x} {mnemonic} ({at})"));
        }
    }
    Ok(uses)
}

/// Checks the binaries against [`ALLOWED`]: every function using Helium floating point must be
/// listed, and (when `complete`, i.e. the binaries hold every kernel) every entry must be used.
/// Prints the list with the instructions each step uses.
pub fn check(tc: ArmToolchain, elfs: &[PathBuf], complete: bool) -> Result<()> {
    let mut all: BTreeMap<String, Use> = BTreeMap::new();
    for elf in elfs {
        for (f, u) in uses(tc, elf)? {
            let e = all.entry(f).or_default();
            for (m, n) in u.mnemonics {
                *e.mnemonics.entry(m).or_default() += n;
            }
            for l in u.locations {
                if e.locations.len() < 3 {
                    e.locations.push(l);
                }
            }
        }
    }
    let mut problems = Vec::new();
    for (f, u) in &all {
        let total: usize = u.mnemonics.values().sum();
        let listed = ALLOWED.iter().any(|(a, _)| a == f);
        println!(
            "    {} {f}: {total} ({})",
            if listed { "reviewed" } else { "NEW     " },
            u.mnemonics
                .iter()
                .map(|(m, n)| format!("{m} ×{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !listed {
            problems.push(format!(
                "{f} uses Helium floating point (e.g. {}) and is not in host-tools/xtask/src/vector_fp.rs ALLOWED: show that no subnormal can reach or leave it (or that every target computes the same flush), write that at the step, then list it",
                u.locations.join("; ")
            ));
        }
    }
    if complete {
        for (f, _) in ALLOWED {
            if !all.contains_key(*f) {
                problems.push(format!(
                    "{f} is listed in ALLOWED but no M55 binary uses Helium floating point there any more: remove the entry"
                ));
            }
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n    "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_vector_floating_point() {
        assert!(is_vector_fp("vmul.f32", "q0, q0, r4"));
        assert!(is_vector_fp("vcvt.s32.f32", "q1, q1"));
        assert!(is_vector_fp("vcvt.f32.s32", "q2, q1"));
        assert!(is_vector_fp("vpt.f32", "lt, q0, r7"));
        assert!(is_vector_fp("vfma.f16", "q3, q4, q5"));
        assert!(!is_vector_fp("vmul.f32", "s0, s16, s0"), "scalar FPU");
        assert!(!is_vector_fp("vmov.f32", "q0, #5.000000e-01"), "a move");
        assert!(!is_vector_fp("vmul.i32", "q0, q0, q1"), "integer");
        assert!(!is_vector_fp("vldrw.u32", "q0, [r1], #16"));
        let dis = "\n00009010 <f>:\n    9016:      \tvmul.f32\tq0, q0, r4\n    901a:      \tvadd.f32\tq1, q1, r5\n    901e:      \tvmov.f32\ts0, s1\n";
        assert_eq!(
            vector_fp_instructions(dis),
            vec![(0x9016, "vmul.f32".into()), (0x901a, "vadd.f32".into())]
        );
    }

    #[test]
    fn names_are_normalized() {
        assert_eq!(
            normalize(
                "<vitae_edge::kernels::attention::Online>::leave::<core::iter::adapters::copied::Copied<core::slice::iter::Iter<i32>>>"
            ),
            "vitae_edge::kernels::attention::Online::leave"
        );
        assert_eq!(
            normalize(
                "<vitae_edge::ops::performer::PerformerS8Op as vitae_edge::ops::OpSpec>::run"
            ),
            "vitae_edge::ops::performer::PerformerS8Op::run"
        );
        assert_eq!(
            normalize("vitae_edge::kernels::performer::performer_s8"),
            "vitae_edge::kernels::performer::performer_s8"
        );
        assert!(is_step("vitae_edge::kernels::layernorm::layernorm_s8"));
        assert!(!is_step("vitae_edge::math::exp"));
        assert!(!is_step("core::f32::<impl f32>::clamp"));
    }
}
