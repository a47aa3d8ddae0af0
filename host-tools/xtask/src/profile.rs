//! A profile by function from a profiled QEMU run (`cargo xtask qemu --profile`): the plugin's
//! executed blocks (`blocks=on`) mapped to the ELF's function symbols.

use crate::qemu::Block;
use crate::toolchain::ArmToolchain;
use crate::vector_fp::llvm_tool_output;
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::Path;

/// One function's share of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionCost {
    pub name: String,
    pub instructions: u64,
    /// Estimated Cortex-M4 cycles (0 on other cores), taken-branch refills excluded.
    pub cycles: u64,
}

/// `(address, name)` of every function symbol in `llvm-nm -n --demangle` output, by address;
/// Rust's `::h<hash>` suffixes dropped.
pub fn functions(nm: &str) -> Vec<(u64, String)> {
    let mut out: Vec<(u64, String)> = nm
        .lines()
        .filter_map(|line| {
            let mut f = line.splitn(3, ' ');
            let address = u64::from_str_radix(f.next()?, 16).ok()?;
            let kind = f.next()?;
            let name = f.next()?;
            if !matches!(kind, "t" | "T" | "W" | "w") {
                return None;
            }
            let name = match name.rsplit_once("::h") {
                Some((stem, hash))
                    if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) =>
                {
                    stem
                }
                _ => name,
            };
            // Thumb function symbols carry the Thumb bit.
            Some((address & !1, name.to_string()))
        })
        .collect();
    out.sort();
    out
}

/// Sums the blocks per containing function (the last symbol at or below the block's start),
/// most instructions first.
pub fn by_function(functions: &[(u64, String)], blocks: &[Block]) -> Vec<FunctionCost> {
    let mut sums: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for b in blocks {
        let i = functions.partition_point(|(a, _)| *a <= b.start);
        let name = match i.checked_sub(1) {
            Some(i) => functions[i].1.as_str(),
            None => "(before the first symbol)",
        };
        let e = sums.entry(name).or_default();
        e.0 += b.instructions;
        e.1 += b.cycles;
    }
    let mut out: Vec<FunctionCost> = sums
        .into_iter()
        .map(|(name, (instructions, cycles))| FunctionCost {
            name: name.to_string(),
            instructions,
            cycles,
        })
        .collect();
    out.sort_by(|a, b| {
        b.instructions
            .cmp(&a.instructions)
            .then(a.name.cmp(&b.name))
    });
    out
}

/// The ELF's function symbols, through llvm-nm.
pub fn elf_functions(tc: ArmToolchain, elf: &Path) -> Result<Vec<(u64, String)>> {
    let symbols = llvm_tool_output(tc, "llvm-nm", &["-n", "--demangle", "--defined-only"], elf)?;
    Ok(functions(&symbols))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_add_up_per_function() {
        let nm = "00000100 T f::h0123456789abcdef\n00000141 t g\n00000200 D data\n";
        let f = functions(nm);
        assert_eq!(f, vec![(0x100, "f".to_string()), (0x140, "g".to_string())]);
        let block = |start, instructions| Block {
            start,
            instructions,
            cycles: 2 * instructions,
        };
        let got = by_function(
            &f,
            &[
                block(0x100, 5),
                block(0x150, 30),
                block(0x120, 7),
                block(0x80, 1),
            ],
        );
        assert_eq!(
            got.iter()
                .map(|c| (c.name.as_str(), c.instructions, c.cycles))
                .collect::<Vec<_>>(),
            vec![
                ("g", 30, 60),
                ("f", 12, 24),
                ("(before the first symbol)", 1, 2)
            ]
        );
    }
}
