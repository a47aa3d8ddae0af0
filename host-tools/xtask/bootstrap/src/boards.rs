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

/// The boards that run under QEMU.
pub fn qemu_boards() -> impl Iterator<Item = &'static Board> {
    BOARDS.iter().filter(|b| b.is_qemu())
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
}
