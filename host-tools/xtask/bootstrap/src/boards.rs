//! The boards we build for, from the one table in `firmware/boards.rs` (the firmware build
//! scripts read the same file): every loop over boards reads it.

include!("../../../../firmware/boards.rs");

/// Looks a board up by name.
pub fn board(name: &str) -> anyhow::Result<&'static Board> {
    Board::named(name).ok_or_else(|| {
        let names: Vec<_> = BOARDS.iter().map(|b| b.name).collect();
        anyhow::anyhow!("unknown board `{name}`; known boards: {}", names.join(", "))
    })
}

/// The QEMU machines as they are (the default boards of tests and benchmarks).
pub fn qemu_boards() -> impl Iterator<Item = &'static Board> {
    BOARDS
        .iter()
        .filter(|b| b.is_qemu() && b.stands_in_for.is_none())
}

/// The QEMU boards that emulate a real part's memory budget.
pub fn budget_boards() -> impl Iterator<Item = &'static Board> {
    BOARDS.iter().filter(|b| b.stands_in_for.is_some())
}

/// Every distinct (target, cpu) pair, for building the library alone.
pub fn arm_targets() -> Vec<(&'static str, &'static str)> {
    let mut v: Vec<_> = BOARDS.iter().map(|b| (b.target, b.cpu)).collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_board_entry_is_consistent() {
        for b in BOARDS {
            assert_eq!(b.problem(), None);
            assert!(b.memory_x().contains("REGION_ALIAS(BLOB"), "{}", b.name);
        }
    }

    #[test]
    fn a_build_for_another_target_or_cpu_is_refused_naming_both() {
        let m4 = board("mps2-an386").unwrap();
        assert_eq!(
            m4.check_build("thumbv7em-none-eabihf", "-C\x1ftarget-cpu=cortex-m4"),
            Ok(())
        );
        assert_eq!(
            m4.check_build("thumbv7em-none-eabihf", "-Ctarget-cpu=cortex-m4"),
            Ok(())
        );
        let wrong_target = m4
            .check_build("thumbv8m.main-none-eabihf", "-Ctarget-cpu=cortex-m4")
            .unwrap_err();
        for part in [
            "mps2-an386",
            "thumbv7em-none-eabihf",
            "thumbv8m.main-none-eabihf",
        ] {
            assert!(wrong_target.contains(part), "{wrong_target}");
        }
        let wrong_cpu = m4
            .check_build("thumbv7em-none-eabihf", "-Ctarget-cpu=cortex-m7")
            .unwrap_err();
        for part in ["mps2-an386", "cortex-m4", "cortex-m7"] {
            assert!(wrong_cpu.contains(part), "{wrong_cpu}");
        }
        let no_cpu = m4.check_build("thumbv7em-none-eabihf", "").unwrap_err();
        assert!(no_cpu.contains("give none"), "{no_cpu}");
    }

    #[test]
    fn target_cpu_is_read_in_every_spelling_and_the_last_wins() {
        assert_eq!(target_cpu(""), None);
        assert_eq!(target_cpu("-Copt-level=3"), None);
        assert_eq!(target_cpu("-C\x1ftarget-cpu=a"), Some("a"));
        assert_eq!(target_cpu("--codegen\x1ftarget-cpu=b"), Some("b"));
        assert_eq!(target_cpu("--codegen=target-cpu=c"), Some("c"));
        assert_eq!(
            target_cpu("-Ctarget-cpu=a\x1f-Clink-arg=-Tx\x1f-C\x1ftarget-cpu=d"),
            Some("d")
        );
        // A trailing `-C` with nothing after it is no CPU.
        assert_eq!(target_cpu("-C"), None);
    }

    /// The quoted value of `key = "…"` in a `.cargo/config.toml` (these files are the board
    /// folders' own: one key a line, string values).
    fn config_value<'a>(config: &'a str, key: &str) -> Option<&'a str> {
        config.lines().find_map(|line| {
            let rest = line
                .trim()
                .strip_prefix(key)?
                .trim_start()
                .strip_prefix('=')?;
            rest.trim().strip_prefix('"')?.split('"').next()
        })
    }

    /// Each board folder's `.cargo/config.toml` (what `cargo build` in that folder uses) repeats
    /// the table's target, CPU, board name and probe-rs chip: they must agree, and every folder
    /// must be a board of the table and every board have a folder.
    #[test]
    fn every_board_folder_matches_its_table_entry() {
        let boards_dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../firmware/boards");
        let mut folders: Vec<String> = std::fs::read_dir(&boards_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        folders.sort();
        let mut names: Vec<String> = BOARDS.iter().map(|b| b.name.to_string()).collect();
        names.sort();
        assert_eq!(
            folders, names,
            "firmware/boards/ folders vs firmware/boards.rs"
        );
        for b in BOARDS {
            let path = boards_dir.join(b.name).join(".cargo/config.toml");
            let config = std::fs::read_to_string(&path).unwrap();
            let at = path.display();
            assert_eq!(config_value(&config, "target"), Some(b.target), "{at}");
            assert!(
                config.contains(&format!("[target.{}]", b.target)),
                "{at}: no [target.{}] section",
                b.target
            );
            let rustflags = config
                .lines()
                .find(|l| l.trim().starts_with("rustflags"))
                .unwrap_or_else(|| panic!("{at}: no rustflags"));
            assert!(
                rustflags.contains(&format!("\"target-cpu={}\"", b.cpu)),
                "{at}: {rustflags}"
            );
            assert_eq!(config_value(&config, "VITAE_BOARD"), Some(b.name), "{at}");
            let runner = config_value(&config, "runner");
            match b.runner {
                Runner::Probe { chip } => assert_eq!(
                    runner,
                    Some(format!("probe-rs run --chip {chip}").as_str()),
                    "{at}"
                ),
                Runner::Qemu { .. } => assert_eq!(
                    runner,
                    Some("../../qemu-run"),
                    "{at}: a QEMU board runs through firmware/qemu-run"
                ),
            }
        }
    }

    #[test]
    fn memory_map_of_the_m4_board() {
        let m = board("mps2-an386").unwrap().memory_x();
        assert!(
            m.contains("STACK : ORIGIN = 0x20000000, LENGTH = 0x10000"),
            "{m}"
        );
        assert!(
            m.contains("RAM : ORIGIN = 0x20010000, LENGTH = 0x3f0000"),
            "{m}"
        );
        assert!(
            m.contains("FLASH : ORIGIN = 0x00000000, LENGTH = 0x400000"),
            "{m}"
        );
    }

    /// One NOLOAD section per arena region, in order; the first also takes `.vitae_arena`
    /// (statics other than the arena parts that want arena memory: the loader example's heap).
    #[test]
    fn arena_sections_follow_the_arena_regions() {
        let m = board("stm32h747i-disco").unwrap().memory_x();
        let at = |needle: &str| m.find(needle).unwrap_or_else(|| panic!("{needle}: {m}"));
        assert!(
            at("*(.vitae_arena0 .vitae_arena0.* .vitae_arena .vitae_arena.*);") < at("} > RAM")
        );
        for (i, region) in ["AXISRAM", "SRAM1_3", "SRAM4"].iter().enumerate() {
            let section = format!("*(.vitae_arena{n} .vitae_arena{n}.*);", n = i + 1);
            assert!(
                m.contains(&format!("{section}\n    . = ALIGN(16);\n  }} > {region}\n")),
                "{m}"
            );
        }
        let m547 = board("mps3-an547").unwrap().memory_x();
        assert!(
            m547.contains(".vitae_arena .vitae_arena.*);\n    . = ALIGN(16);\n  } > SRAM2"),
            "{m547}"
        );
    }
}
