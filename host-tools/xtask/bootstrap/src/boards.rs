//! The boards we build for, as data: every loop over boards reads this table.

/// One board: its core, how Rust builds for it, and how it runs.
#[derive(Debug, Clone, Copy)]
pub struct Board {
    /// Name used on the command line and as the firmware's cargo feature.
    pub name: &'static str,
    /// The core, for people.
    pub core: &'static str,
    /// Rust target triple.
    pub target: &'static str,
    /// `-C target-cpu` value.
    pub cpu: &'static str,
    /// How to run it.
    pub runner: Runner,
}

/// Where a board's firmware runs.
#[derive(Debug, Clone, Copy)]
pub enum Runner {
    /// Under qemu-system-arm with this `-machine` and `-cpu`.
    Qemu {
        machine: &'static str,
        cpu: &'static str,
    },
    /// On hardware through `probe-rs run --chip <chip>`.
    Probe { chip: &'static str },
}

pub const BOARDS: &[Board] = &[
    Board {
        name: "mps2-an386",
        core: "Cortex-M4",
        target: "thumbv7em-none-eabihf",
        cpu: "cortex-m4",
        runner: Runner::Qemu {
            machine: "mps2-an386",
            cpu: "cortex-m4",
        },
    },
    Board {
        name: "mps2-an500",
        core: "Cortex-M7",
        target: "thumbv7em-none-eabihf",
        cpu: "cortex-m7",
        runner: Runner::Qemu {
            machine: "mps2-an500",
            cpu: "cortex-m7",
        },
    },
    Board {
        name: "mps3-an547",
        core: "Cortex-M55",
        target: "thumbv8m.main-none-eabihf",
        cpu: "cortex-m55",
        runner: Runner::Qemu {
            machine: "mps3-an547",
            cpu: "cortex-m55",
        },
    },
    Board {
        name: "nucleo-h743zi",
        core: "Cortex-M7",
        target: "thumbv7em-none-eabihf",
        cpu: "cortex-m7",
        runner: Runner::Probe {
            chip: "STM32H743ZITx",
        },
    },
    Board {
        name: "nrf52840-dk",
        core: "Cortex-M4",
        target: "thumbv7em-none-eabihf",
        cpu: "cortex-m4",
        runner: Runner::Probe {
            chip: "nRF52840_xxAA",
        },
    },
];

impl Board {
    pub fn is_qemu(&self) -> bool {
        matches!(self.runner, Runner::Qemu { .. })
    }
}

/// Looks a board up by name.
pub fn board(name: &str) -> anyhow::Result<&'static Board> {
    BOARDS.iter().find(|b| b.name == name).ok_or_else(|| {
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
