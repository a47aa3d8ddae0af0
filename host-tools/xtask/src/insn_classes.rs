//! Checks the QEMU plugin's instruction classes (`host-tools/qemu-icount/thumb_classes.h`, which
//! its `timing=m4` cycle estimate and `timing=m55` vector count rest on) against llvm-objdump:
//! every instruction of a firmware binary, decoded by the plugin's code (built into the small
//! `classify` program) and by its mnemonic here, must land in the same class, with the same
//! register count for a load/store multiple.

use crate::toolchain::ArmToolchain;
use crate::vector_fp::llvm_tool_output;
use crate::{project_root, run_checked, setup};
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const CONDITIONS: [&str; 16] = [
    "eq", "ne", "cs", "hs", "cc", "lo", "mi", "pl", "vs", "vc", "hi", "ls", "ge", "lt", "gt", "le",
];

/// Mnemonics (without condition, size or `.w`) the expectation below names.
const LOADS: &[&str] = &[
    "ldr", "ldrb", "ldrh", "ldrsb", "ldrsh", "ldrex", "ldrexb", "ldrexh", "ldrt", "ldrbt", "ldrht",
    "ldrsbt", "ldrsht", "lda", "ldab", "ldah", "ldaex", "ldaexb", "ldaexh", "pld", "pli",
];
const STORES: &[&str] = &[
    "str", "strb", "strh", "strex", "strexb", "strexh", "strt", "strbt", "strht", "stl", "stlb",
    "stlh", "stlex", "stlexb", "stlexh",
];
const MULTIPLES: &[&str] = &[
    "push", "pop", "stm", "stmia", "stmea", "stmdb", "stmfd", "ldm", "ldmia", "ldmfd", "ldmdb",
    "ldmea",
];
const MULTIPLIES: &[&str] = &[
    "mul", "muls", "mla", "mls", "smull", "umull", "smlal", "umlal", "umaal", "smlabb", "smlabt",
    "smlatb", "smlatt", "smlawb", "smlawt", "smulbb", "smulbt", "smultb", "smultt", "smulwb",
    "smulwt", "smlalbb", "smlalbt", "smlaltb", "smlaltt", "smlad", "smladx", "smlsd", "smlsdx",
    "smuad", "smuadx", "smusd", "smusdx", "smmul", "smmulr", "smmla", "smmlar", "smmls", "smmlsr",
    "smlald", "smlaldx", "smlsld", "smlsldx", "usad8", "usada8",
];
const FP_MACS: &[&str] = &[
    "vmla", "vmls", "vnmla", "vnmls", "vfma", "vfms", "vfnma", "vfnms",
];
const FP_MULTIPLES: &[&str] = &[
    "vldmia", "vldmdb", "vstmia", "vstmdb", "vldm", "vstm", "vpush", "vpop", "vscclrm", "vlldm",
    "vlstm",
];

/// The class llvm-objdump's `mnemonic operands` belongs to, as `classify` names it, and the
/// register (or FP word) count of a load/store multiple.
pub fn expected(mnemonic: &str, operands: &str) -> (&'static str, u32) {
    let base = mnemonic.split('.').next().unwrap_or(mnemonic);
    let tokens: Vec<&str> = operands
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .collect();
    let has_q = tokens
        .iter()
        .any(|t| t.len() == 2 && t.starts_with('q') && t.as_bytes()[1].is_ascii_digit());
    if has_q || ["vpst", "vpt", "vctp"].iter().any(|p| base.starts_with(p)) {
        return ("vector", 0);
    }
    // Branches first: `bls` is B with LS, not BL with S.
    for stem in ["b", "bl", "blx", "bx"] {
        if base == stem {
            return ("branch", 0);
        }
        if base
            .strip_prefix(stem)
            .is_some_and(|cc| CONDITIONS.contains(&cc))
        {
            return ("cbranch", 0);
        }
    }
    // `le lr, …` loops while LR counts; `le …` (no LR) always branches back.
    if base == "le" && tokens.first() != Some(&"lr") {
        return ("branch", 0);
    }
    if ["cbz", "cbnz", "le", "letp", "wls", "wlstp"].contains(&base) {
        return ("cbranch", 0);
    }
    // Inside an IT block llvm-objdump appends the condition: `popne`, `stmls.w`, `ldrbeq`.
    let known = |s: &str| {
        [LOADS, STORES, MULTIPLES, MULTIPLIES, FP_MACS, FP_MULTIPLES]
            .iter()
            .any(|l| l.contains(&s))
            || [
                "ldrd", "strd", "tbb", "tbh", "sdiv", "udiv", "mov", "add", "vldr", "vstr", "vdiv",
                "vsqrt",
            ]
            .contains(&s)
    };
    let (stem, conditional) = if known(base) {
        (base, false)
    } else {
        match base.len().checked_sub(2).map(|n| base.split_at(n)) {
            Some((s, cc)) if CONDITIONS.contains(&cc) && known(s) => (s, true),
            _ => (base, false),
        }
    };
    let first_is_pc = tokens.first() == Some(&"pc");
    let list = operands
        .split_once('{')
        .and_then(|(_, r)| r.split_once('}'))
        .map(|(l, _)| l);
    let writes_pc = match list {
        Some(l) if stem.starts_with("ldm") || stem == "pop" => {
            l.split(',').any(|r| r.trim() == "pc")
        }
        _ => (stem == "ldr" || stem == "mov" || stem == "add") && first_is_pc,
    };
    if writes_pc && conditional {
        return ("cbranch", 0);
    }
    if (stem == "mov" || stem == "add") && first_is_pc {
        return ("branch", 0);
    }
    if MULTIPLES.contains(&stem) {
        return ("multi", list.map_or(0, |l| registers(l, false)));
    }
    if FP_MULTIPLES.contains(&stem) {
        return ("fpmulti", list.map_or(0, |l| registers(l, true)));
    }
    if stem == "ldrd" || stem == "strd" {
        return ("dual", 0);
    }
    if stem == "tbb" || stem == "tbh" {
        return ("table", 0);
    }
    if LOADS.contains(&stem) {
        return ("load", 0);
    }
    if STORES.contains(&stem) {
        return ("store", 0);
    }
    if stem == "sdiv" || stem == "udiv" {
        return ("div", 0);
    }
    if MULTIPLIES.contains(&stem) {
        return ("mul", 0);
    }
    if FP_MACS.contains(&stem) {
        return ("fpmac", 0);
    }
    if stem == "vdiv" || stem == "vsqrt" {
        return ("fpdiv", 0);
    }
    if stem == "vldr" || stem == "vstr" {
        return ("fpldst", 0);
    }
    let core_registers = tokens
        .iter()
        .filter(|t| {
            matches!(**t, "lr" | "sp" | "ip" | "fp")
                || (t.starts_with('r') && t.len() <= 3 && t[1..].parse::<u8>().is_ok())
        })
        .count();
    if stem == "vmov" && core_registers == 2 {
        return ("fpmov2", 0);
    }
    if stem.starts_with('v') {
        return ("fp", 0);
    }
    ("alu", 0)
}

/// Registers in a `{…}` list (`r4-r7` counts 4); with `fp_words`, a D register counts 2.
fn registers(list: &str, fp_words: bool) -> u32 {
    let number = |r: &str| r.trim()[1..].parse::<u32>().ok();
    list.split(',')
        .map(|item| {
            let item = item.trim();
            let per = if fp_words && item.starts_with('d') {
                2
            } else {
                1
            };
            match item.split_once('-') {
                Some((a, b)) => match (number(a), number(b)) {
                    (Some(a), Some(b)) if b >= a => (b - a + 1) * per,
                    _ => per,
                },
                None if item == "vpr" => 0,
                None => per,
            }
        })
        .sum()
}

/// Builds `classify` (the plugin's decoder with a main) into the target directory.
fn build_classifier() -> Result<PathBuf> {
    let dir = project_root().join("host-tools").join("qemu-icount");
    let out = setup::icount_plugin_path().with_file_name("classify");
    std::fs::create_dir_all(out.parent().context("classify dir")?)?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut cmd = Command::new(&cc);
    cmd.args(["-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&out)
        .arg(dir.join("classify.c"));
    run_checked(cmd, &format!("{cc} (building the instruction classifier)"))?;
    Ok(out)
}

/// Compares the plugin's class of every instruction in `elf` with [`expected`]; prints a
/// summary and fails listing the first disagreements.
pub fn check(tc: ArmToolchain, elf: &Path) -> Result<()> {
    let classifier = build_classifier()?;
    let text = llvm_tool_output(tc, "llvm-objdump", &["-d"], elf)?;
    let instructions = parse_disassembly(&text);
    if instructions.len() < 1000 {
        bail!(
            "only {} instructions in the disassembly of {}",
            instructions.len(),
            elf.display()
        );
    }
    let mut child = Command::new(&classifier)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", classifier.display()))?;
    let input: String = instructions
        .iter()
        .map(|i| format!("{}\n", i.encoding))
        .collect();
    let mut stdin = child.stdin.take().context("classifier stdin")?;
    let feeder = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output()?;
    feeder
        .join()
        .map_err(|_| anyhow::anyhow!("classifier input thread"))??;
    let answers: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    if answers.len() != instructions.len() {
        bail!(
            "the classifier answered {} lines for {} instructions",
            answers.len(),
            instructions.len()
        );
    }
    let mut wrong = Vec::new();
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for (i, answer) in instructions.iter().zip(&answers) {
        let mut f = answer.split_whitespace();
        let class = f.next().unwrap_or("");
        let n: u32 = f.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        *counts.entry(class.to_string()).or_default() += 1;
        let (want, want_n) = expected(&i.mnemonic, &i.operands);
        let counted = matches!(want, "multi" | "fpmulti");
        if class != want || (counted && n != want_n) {
            wrong.push(format!(
                "{:#x} {} `{} {}`: plugin {class}{}, disassembler {want}{}",
                i.address,
                i.encoding,
                i.mnemonic,
                i.operands.trim(),
                if counted {
                    format!(" {n}")
                } else {
                    String::new()
                },
                if counted {
                    format!(" {want_n}")
                } else {
                    String::new()
                }
            ));
        }
    }
    let summary: Vec<String> = counts.iter().map(|(c, n)| format!("{c} {n}")).collect();
    println!(
        "    {}: {} instructions, classes: {}",
        elf.display(),
        instructions.len(),
        summary.join(", ")
    );
    if !wrong.is_empty() {
        bail!(
            "{} of {} instructions classified differently from llvm-objdump; first: {}",
            wrong.len(),
            instructions.len(),
            wrong
                .iter()
                .take(12)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    Ok(())
}

struct Instruction {
    address: u64,
    /// Halfwords as llvm-objdump prints them: `f8d0 3004` or `4770`.
    encoding: String,
    mnemonic: String,
    operands: String,
}

/// Instructions (not data) of `llvm-objdump -d` output, in address order.
fn parse_disassembly(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.split('\t');
        let Some((address, encoding)) = fields.next().and_then(|f| f.split_once(':')) else {
            continue;
        };
        let Ok(address) = u64::from_str_radix(address.trim(), 16) else {
            continue;
        };
        let encoding = encoding.trim();
        let halfwords: Vec<&str> = encoding.split(' ').collect();
        if halfwords.is_empty()
            || halfwords.len() > 2
            || !halfwords
                .iter()
                .all(|h| h.len() == 4 && h.chars().all(|c| c.is_ascii_hexdigit()))
        {
            continue; // data words (`.word`), bytes
        }
        let mnemonic = fields.next().unwrap_or("").trim();
        if mnemonic.is_empty() || mnemonic.starts_with('.') || mnemonic.starts_with('<') {
            continue;
        }
        out.push(Instruction {
            address,
            encoding: encoding.to_string(),
            mnemonic: mnemonic.to_string(),
            operands: fields.next().unwrap_or("").to_string(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mnemonics_map_to_the_plugin_classes() {
        assert_eq!(expected("ldr.w", "r0, [r1, #4]"), ("load", 0));
        assert_eq!(expected("bls", "0x100"), ("cbranch", 0));
        assert_eq!(expected("bl", "0x100"), ("branch", 0));
        assert_eq!(expected("bxeq", "lr"), ("cbranch", 0));
        assert_eq!(expected("pop", "{r4, r5, r7, pc}"), ("multi", 4));
        assert_eq!(expected("popne", "{r4, pc}"), ("cbranch", 0));
        assert_eq!(expected("stmls.w", "r0, {r1, r3, lr}"), ("multi", 3));
        assert_eq!(expected("mov", "pc, r6"), ("branch", 0));
        assert_eq!(expected("movs", "r0, #1"), ("alu", 0));
        assert_eq!(expected("vpush", "{d8, d9, d10}"), ("fpmulti", 6));
        assert_eq!(expected("vmov", "r0, r1, d0"), ("fpmov2", 0));
        assert_eq!(expected("vmov", "s0, r1"), ("fp", 0));
        assert_eq!(expected("vmla.f32", "s0, s1, s2"), ("fpmac", 0));
        assert_eq!(expected("vmlava.s8", "r0, q1, q2"), ("vector", 0));
        assert_eq!(expected("vpstt", ""), ("vector", 0));
        assert_eq!(expected("smlad", "r0, r1, r2, r3"), ("mul", 0));
        assert_eq!(expected("le", "lr, 0x100"), ("cbranch", 0));
        assert_eq!(expected("le", "0x100"), ("branch", 0));
        assert_eq!(expected("vldrhi", "s0, [pc, #176]"), ("fpldst", 0));
        assert_eq!(registers("r4-r7, lr", false), 5);
    }

    #[test]
    fn reads_objdump_lines() {
        let text = "00000100 <f>:\n     100: f8d0 3004    \tldr.w\tr3, [r0, #4]\n     \
                    104: 4770         \tbx\tlr\n     106: 0000 0000    \t.word\t0x00000000\n";
        let got = parse_disassembly(text);
        assert_eq!(got.len(), 2);
        assert_eq!(
            (
                got[0].address,
                got[0].encoding.as_str(),
                got[0].mnemonic.as_str()
            ),
            (0x100, "f8d0 3004", "ldr.w")
        );
        assert_eq!(got[1].encoding, "4770");
    }
}
