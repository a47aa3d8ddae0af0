// The boards ViTAE-Edge builds for: the one table every consumer reads.
//
// Plain Rust data with no dependencies, `include!`d by the firmware build scripts (which generate
// each board's `memory.x` from it and check a blob and an arena against its regions) and by the
// xtask (targets, CPUs, QEMU machines, probe-rs chips). A board is selected at build time by the
// `VITAE_BOARD` environment variable: the board's folder sets it in its `.cargo/config.toml`, the
// xtask sets it for the builds it drives.
//
// Adding a board: an entry here, a package folder `firmware/boards/<name>/` (Cargo.toml and
// `.cargo/config.toml`, copied from a board of the same kind). The folder's config repeats the
// target, CPU and probe-rs chip for plain `cargo build`/`cargo run` there: the firmware build
// refuses a target or CPU that differs from the entry (`Board::check_build`), and the xtask's
// tests compare every folder's config with its entry.

/// One board: its core, how Rust builds for it, how it runs, and its memory.
#[derive(Debug, Clone, Copy)]
pub struct Board {
    /// Name on the command line and in `VITAE_BOARD`.
    pub name: &'static str,
    /// The core, for people.
    pub core: &'static str,
    /// Rust target triple.
    pub target: &'static str,
    /// `-C target-cpu` value.
    pub cpu: &'static str,
    /// How it runs.
    pub runner: Runner,
    /// Its memories. cortex-m-rt needs the code region named `FLASH` and the RAM region `RAM`.
    pub regions: &'static [Region],
    /// Bytes at the bottom of `RAM` for the stack, below `.data`/`.bss`: an overflow runs off the
    /// bottom of RAM and faults instead of silently corrupting statics (the flip-link layout).
    pub stack: u64,
    /// Region of the model blob (used in place, so it may be flash).
    pub blob: &'static str,
    /// Region of the activation arena.
    pub arena: &'static str,
    /// Bytes of the blob's region kept for code and read-only data when the blob shares `FLASH`.
    pub code_reserve: u64,
    /// Bytes of the arena's region kept for `.data`/`.bss` when the arena shares `RAM`.
    pub statics_reserve: u64,
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

/// One memory of a board.
#[derive(Debug, Clone, Copy)]
pub struct Region {
    /// Name in `memory.x`.
    pub name: &'static str,
    /// First address.
    pub origin: u64,
    /// Bytes.
    pub length: u64,
    /// What kind of memory, fastest first.
    pub kind: MemoryKind,
}

/// Kinds of memory, fastest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MemoryKind {
    /// Tightly coupled memory (single-cycle, next to the core).
    Tcm,
    /// On-chip SRAM.
    Sram,
    /// On-chip flash (or the memory a QEMU board gives in its place).
    Flash,
    /// Off-chip RAM (PSRAM, SDRAM, DDR).
    ExternalRam,
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// The memory of both QEMU MPS2 boards: 4 MiB of code SRAM at 0 stands in for flash, 4 MiB SRAM.
const MPS2_REGIONS: &[Region] = &[
    Region {
        name: "FLASH",
        origin: 0x0000_0000,
        length: 4 * MIB,
        kind: MemoryKind::Flash,
    },
    Region {
        name: "RAM",
        origin: 0x2000_0000,
        length: 4 * MIB,
        kind: MemoryKind::Sram,
    },
];

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
        regions: MPS2_REGIONS,
        stack: 64 * KIB,
        blob: "FLASH",
        arena: "RAM",
        code_reserve: 256 * KIB,
        statics_reserve: 64 * KIB,
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
        regions: MPS2_REGIONS,
        stack: 64 * KIB,
        blob: "FLASH",
        arena: "RAM",
        code_reserve: 256 * KIB,
        statics_reserve: 64 * KIB,
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
        // Code must fit the 512 KiB ITCM at 0 (the vector table lives there); the blob goes to
        // DDR and the arena to the 4 MiB SRAM2.
        regions: &[
            Region {
                name: "FLASH",
                origin: 0x0000_0000,
                length: 512 * KIB,
                kind: MemoryKind::Tcm,
            },
            Region {
                name: "RAM",
                origin: 0x2000_0000,
                length: 512 * KIB,
                kind: MemoryKind::Tcm,
            },
            Region {
                name: "SRAM2",
                origin: 0x2100_0000,
                length: 4 * MIB,
                kind: MemoryKind::Sram,
            },
            Region {
                name: "DDR",
                origin: 0x6000_0000,
                length: 256 * MIB,
                kind: MemoryKind::ExternalRam,
            },
        ],
        stack: 64 * KIB,
        blob: "DDR",
        arena: "SRAM2",
        code_reserve: 0,
        statics_reserve: 0,
    },
    Board {
        name: "nucleo-h743zi",
        core: "Cortex-M7",
        target: "thumbv7em-none-eabihf",
        cpu: "cortex-m7",
        runner: Runner::Probe {
            chip: "STM32H743ZITx",
        },
        // Stack and statics in DTCM, the arena in AXI SRAM.
        regions: &[
            Region {
                name: "FLASH",
                origin: 0x0800_0000,
                length: 2 * MIB,
                kind: MemoryKind::Flash,
            },
            Region {
                name: "RAM",
                origin: 0x2000_0000,
                length: 128 * KIB,
                kind: MemoryKind::Tcm,
            },
            Region {
                name: "AXISRAM",
                origin: 0x2400_0000,
                length: 512 * KIB,
                kind: MemoryKind::Sram,
            },
        ],
        stack: 32 * KIB,
        blob: "FLASH",
        arena: "AXISRAM",
        code_reserve: 256 * KIB,
        statics_reserve: 0,
    },
    Board {
        name: "nrf52840-dk",
        core: "Cortex-M4",
        target: "thumbv7em-none-eabihf",
        cpu: "cortex-m4",
        runner: Runner::Probe {
            chip: "nRF52840_xxAA",
        },
        // No SoftDevice.
        regions: &[
            Region {
                name: "FLASH",
                origin: 0x0000_0000,
                length: 1024 * KIB,
                kind: MemoryKind::Flash,
            },
            Region {
                name: "RAM",
                origin: 0x2000_0000,
                length: 256 * KIB,
                kind: MemoryKind::Sram,
            },
        ],
        stack: 32 * KIB,
        blob: "FLASH",
        arena: "RAM",
        code_reserve: 128 * KIB,
        statics_reserve: 16 * KIB,
    },
];

impl Board {
    /// Looks a board up by name.
    pub fn named(name: &str) -> Option<&'static Board> {
        BOARDS.iter().find(|b| b.name == name)
    }

    /// True when it runs under QEMU.
    pub fn is_qemu(&self) -> bool {
        matches!(self.runner, Runner::Qemu { .. })
    }

    /// The region called `name` (every name the entry uses is one of its regions: the build
    /// scripts check it).
    pub fn region(&self, name: &str) -> Option<&'static Region> {
        self.regions.iter().find(|r| r.name == name)
    }

    /// Bytes the model blob may take: its region, less what code keeps when they share it.
    pub fn blob_room(&self) -> u64 {
        let len = self.region(self.blob).map_or(0, |r| r.length);
        let shared = if self.blob == "FLASH" { self.code_reserve } else { 0 };
        len.saturating_sub(shared)
    }

    /// Bytes the arena may take: its region, less the stack and statics when they share it.
    pub fn arena_room(&self) -> u64 {
        let len = self.region(self.arena).map_or(0, |r| r.length);
        let shared = if self.arena == "RAM" {
            self.stack + self.statics_reserve
        } else {
            0
        };
        len.saturating_sub(shared)
    }

    /// The linker script memory map (`memory.x`) of the board: its regions, the stack carved from
    /// the bottom of `RAM`, and the blob and arena regions by alias.
    pub fn memory_x(&self) -> String {
        let mut s = format!(
            "/* Generated from firmware/boards.rs for {} ({}); do not edit. */\nMEMORY\n{{\n",
            self.name, self.core
        );
        for r in self.regions {
            if r.name == "RAM" {
                s += &format!(
                    "  STACK : ORIGIN = {:#010x}, LENGTH = {:#x}\n  RAM : ORIGIN = {:#010x}, LENGTH = {:#x}\n",
                    r.origin,
                    self.stack,
                    r.origin + self.stack,
                    r.length - self.stack
                );
            } else {
                s += &format!(
                    "  {} : ORIGIN = {:#010x}, LENGTH = {:#x}\n",
                    r.name, r.origin, r.length
                );
            }
        }
        s += "}\n";
        s += "/* The stack sits below .data/.bss: an overflow faults instead of corrupting statics. */\n";
        s += "_stack_start = ORIGIN(STACK) + LENGTH(STACK);\n_stack_end = ORIGIN(STACK);\n";
        s += &format!(
            "REGION_ALIAS(BLOB, {});\nREGION_ALIAS(ARENA, {});\nINCLUDE vitae-sections.x\n",
            self.blob, self.arena
        );
        s
    }

    /// Whether a build is for this board: `target` is cargo's `TARGET` and `encoded_rustflags`
    /// its `CARGO_ENCODED_RUSTFLAGS` (flags separated by 0x1f), as a build script sees them. The
    /// firmware build refuses a build whose target or `-C target-cpu` differs from this entry
    /// (a board folder's `.cargo/config.toml` or a `RUSTFLAGS` that disagrees with the table).
    pub fn check_build(&self, target: &str, encoded_rustflags: &str) -> Result<(), String> {
        if target != self.target {
            return Err(format!(
                "board {}: firmware/boards.rs gives target {}, but this build's target is {target}",
                self.name, self.target
            ));
        }
        match target_cpu(encoded_rustflags) {
            Some(cpu) if cpu == self.cpu => Ok(()),
            found => Err(format!(
                "board {}: firmware/boards.rs gives target-cpu {}, but this build's rustflags give {}",
                self.name,
                self.cpu,
                found.map_or("none".to_string(), |c| format!("target-cpu {c}"))
            )),
        }
    }

    /// What is wrong with the entry, if anything (the build scripts refuse such a board).
    pub fn problem(&self) -> Option<String> {
        for name in ["FLASH", "RAM", self.blob, self.arena] {
            if self.region(name).is_none() {
                return Some(format!("{}: no region named {name}", self.name));
            }
        }
        let ram = self.region("RAM").map_or(0, |r| r.length);
        (self.stack >= ram).then(|| format!("{}: the stack does not fit RAM", self.name))
    }
}

/// The `-C target-cpu=` value of encoded rustflags (`-C target-cpu=x`, `-Ctarget-cpu=x`,
/// `--codegen target-cpu=x` or `--codegen=target-cpu=x`; the last one, as rustc takes it).
pub fn target_cpu(encoded_rustflags: &str) -> Option<&str> {
    let mut flags = encoded_rustflags.split('\x1f');
    let mut cpu = None;
    while let Some(flag) = flags.next() {
        let codegen = match flag {
            "-C" | "--codegen" => flags.next(),
            _ => flag
                .strip_prefix("--codegen=")
                .or_else(|| flag.strip_prefix("-C")),
        };
        if let Some(value) = codegen.and_then(|c| c.strip_prefix("target-cpu=")) {
            cpu = Some(value);
        }
    }
    cpu
}
