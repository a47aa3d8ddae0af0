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
    /// Regions the activation arena may use, fastest first: a blob planned for the board
    /// (`vitae quantize --board`) has one arena part per region, part `i` in `arena[i]`; a blob
    /// with one part goes in `arena[0]`.
    pub arena: &'static [&'static str],
    /// Bytes of the blob's region kept for code and read-only data when the blob shares `FLASH`.
    pub code_reserve: u64,
    /// Bytes of the arena's region kept for `.data`/`.bss` when the arena shares `RAM`.
    pub statics_reserve: u64,
    /// For a QEMU board that emulates a real part's memory budget (its regions cut to the real
    /// part's sizes on the QEMU machine's memory): that part's board. `None` for the QEMU
    /// machines as they are and for real boards.
    pub stands_in_for: Option<&'static str>,
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
    /// Off-chip flash read in place (memory-mapped QSPI/OctoSPI/XSPI NOR).
    ExternalFlash,
}

impl MemoryKind {
    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            MemoryKind::Tcm => "TCM",
            MemoryKind::Sram => "SRAM",
            MemoryKind::Flash => "flash",
            MemoryKind::ExternalRam => "external RAM",
            MemoryKind::ExternalFlash => "external flash",
        }
    }

    /// True for on-chip RAM (what a budget of SRAM counts).
    pub fn is_on_chip_ram(self) -> bool {
        matches!(self, MemoryKind::Tcm | MemoryKind::Sram)
    }
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// The memory of both QEMU MPS2 boards: 4 MiB of code SRAM at 0 stands in for flash, 4 MiB SRAM.
/// The MPS2 boards (AN386, AN500): 4 MiB code memory, 4 MiB SRAM, and the board's 16 MiB PSRAM
/// for the blob (ViTAE-T's 5.2 MB does not fit the code memory beside the firmware); the PSRAM
/// sits at 0x2100_0000 on the AN385/AN386 and at 0x6000_0000 on the AN500.
const fn mps2_regions(psram: u64) -> [Region; 3] {
    [
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
        Region {
            name: "PSRAM",
            origin: psram,
            length: 16 * MIB,
            kind: MemoryKind::ExternalRam,
        },
    ]
}
const MPS2_AN386_REGIONS: &[Region] = &mps2_regions(0x2100_0000);
const MPS2_AN500_REGIONS: &[Region] = &mps2_regions(0x6000_0000);

// The real parts' region sizes, shared by their entries and their QEMU stand-ins.
/// STM32N6: DTCM (stack, statics, the fastest arena part), AXISRAM1 above the 400 KiB FLEXRAM,
/// AXISRAM2, AXISRAM3-6 (4 x 448 KiB, contiguous).
const N6_DTCM: u64 = 128 * KIB;
const N6_AXISRAM1: u64 = 624 * KIB;
const N6_AXISRAM2: u64 = MIB;
const N6_AXISRAM3_6: u64 = 4 * 448 * KIB;
/// The STM32N6570-DK's XSPI2 NOR above the first 2 MiB (kept for a first-stage loader).
const N6_XSPI2_BLOB: u64 = 126 * MIB;
/// STM32H747 (M7 core): flash bank 1, DTCM, AXI SRAM, SRAM1-3 (contiguous), SRAM4.
const H747_FLASH: u64 = MIB;
const H747_DTCM: u64 = 128 * KIB;
const H747_AXISRAM: u64 = 512 * KIB;
const H747_SRAM1_3: u64 = 288 * KIB;
const H747_SRAM4: u64 = 64 * KIB;
/// nRF52840: flash and RAM.
const NRF52840_FLASH: u64 = 1024 * KIB;
const NRF52840_RAM: u64 = 256 * KIB;

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
        regions: MPS2_AN386_REGIONS,
        stack: 64 * KIB,
        blob: "PSRAM",
        arena: &["RAM"],
        code_reserve: 256 * KIB,
        statics_reserve: 64 * KIB,
        stands_in_for: None,
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
        regions: MPS2_AN500_REGIONS,
        stack: 64 * KIB,
        blob: "PSRAM",
        arena: &["RAM"],
        code_reserve: 256 * KIB,
        statics_reserve: 64 * KIB,
        stands_in_for: None,
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
        arena: &["SRAM2"],
        code_reserve: 0,
        statics_reserve: 0,
        stands_in_for: None,
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
        arena: &["AXISRAM"],
        code_reserve: 256 * KIB,
        statics_reserve: 0,
        stands_in_for: None,
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
                length: NRF52840_FLASH,
                kind: MemoryKind::Flash,
            },
            Region {
                name: "RAM",
                origin: 0x2000_0000,
                length: NRF52840_RAM,
                kind: MemoryKind::Sram,
            },
        ],
        stack: 32 * KIB,
        blob: "FLASH",
        arena: &["RAM"],
        code_reserve: 128 * KIB,
        statics_reserve: 16 * KIB,
        stands_in_for: None,
    },
    Board {
        name: "stm32n6570-dk",
        core: "Cortex-M55",
        target: "thumbv8m.main-none-eabihf",
        cpu: "cortex-m55",
        // probe-rs lists the N657 without package variants: this is its full name.
        runner: Runner::Probe { chip: "STM32N657" },
        // No internal flash. The code runs from FLEXRAM (the 400 KiB below AXISRAM1; 2 KiB
        // aligned as the default 496-entry vector table needs): loaded there by the debugger in
        // development boot mode (BOOT1 = 1), which is how `probe-rs run` starts it, or copied by
        // a first-stage loader (ST's load-and-run template). The blob stays in the external
        // XSPI2 NOR flash, read in place (memory-mapped mode). Secure aliases, as ST's templates
        // use. DTCM holds the stack and statics; the arena takes AXISRAM1 (624 KiB), AXISRAM2
        // (1 MiB) and AXISRAM3-6 (4 x 448 KiB, contiguous; off at reset: enable them, RCC MEMENR
        // and RAMCFG, before the first inference).
        regions: &[
            Region {
                name: "FLASH",
                origin: 0x3400_0000,
                length: 400 * KIB,
                kind: MemoryKind::Sram,
            },
            Region {
                name: "XSPI2",
                origin: 0x7020_0000,
                length: N6_XSPI2_BLOB,
                kind: MemoryKind::ExternalFlash,
            },
            Region {
                name: "RAM",
                origin: 0x3000_0000,
                length: N6_DTCM,
                kind: MemoryKind::Tcm,
            },
            Region {
                name: "AXISRAM1",
                origin: 0x3406_4000,
                length: N6_AXISRAM1,
                kind: MemoryKind::Sram,
            },
            Region {
                name: "AXISRAM2",
                origin: 0x3410_0000,
                length: N6_AXISRAM2,
                kind: MemoryKind::Sram,
            },
            Region {
                name: "AXISRAM3_6",
                origin: 0x3420_0000,
                length: N6_AXISRAM3_6,
                kind: MemoryKind::Sram,
            },
        ],
        stack: 64 * KIB,
        blob: "XSPI2",
        arena: &["RAM", "AXISRAM1", "AXISRAM2", "AXISRAM3_6"],
        code_reserve: 0,
        statics_reserve: 16 * KIB,
        stands_in_for: None,
    },
    Board {
        name: "stm32h747i-disco",
        core: "Cortex-M7",
        target: "thumbv7em-none-eabihf",
        cpu: "cortex-m7",
        runner: Runner::Probe {
            chip: "STM32H747XIHx",
        },
        // The M7 core: flash bank 1 for code, the blob in the two QSPI NORs (dual-flash, 128 MiB,
        // memory-mapped at 0x9000_0000 once QUADSPI is set up), stack and statics in DTCM, the
        // arena over AXI SRAM, SRAM1-3 (contiguous, 288 KiB) and SRAM4. The 32 MiB SDRAM is left
        // out: the budget is the part's own SRAM.
        regions: &[
            Region {
                name: "FLASH",
                origin: 0x0800_0000,
                length: H747_FLASH,
                kind: MemoryKind::Flash,
            },
            Region {
                name: "QSPI",
                origin: 0x9000_0000,
                length: 128 * MIB,
                kind: MemoryKind::ExternalFlash,
            },
            Region {
                name: "RAM",
                origin: 0x2000_0000,
                length: H747_DTCM,
                kind: MemoryKind::Tcm,
            },
            Region {
                name: "AXISRAM",
                origin: 0x2400_0000,
                length: H747_AXISRAM,
                kind: MemoryKind::Sram,
            },
            Region {
                name: "SRAM1_3",
                origin: 0x3000_0000,
                length: H747_SRAM1_3,
                kind: MemoryKind::Sram,
            },
            Region {
                name: "SRAM4",
                origin: 0x3800_0000,
                length: H747_SRAM4,
                kind: MemoryKind::Sram,
            },
        ],
        stack: 32 * KIB,
        blob: "QSPI",
        arena: &["RAM", "AXISRAM", "SRAM1_3", "SRAM4"],
        code_reserve: 0,
        statics_reserve: 16 * KIB,
        stands_in_for: None,
    },
    // The real parts' budgets under QEMU: each region cut to the part's size and placed in the
    // QEMU machine's memory, the blob in the machine's external memory as the part's external
    // flash. Same instruction set and kernels as the part; the sizes are what they check.
    Board {
        name: "qemu-stm32n6570-dk",
        core: "Cortex-M55",
        target: "thumbv8m.main-none-eabihf",
        cpu: "cortex-m55",
        runner: Runner::Qemu {
            machine: "mps3-an547",
            cpu: "cortex-m55",
        },
        // Code in the AN547's ITCM (its vector table must sit at 0), DTCM cut to the N6's
        // 128 KiB, the three AXISRAM regions in the AN547's 4 MiB SRAM2, the blob in DDR.
        regions: &[
            Region {
                name: "FLASH",
                origin: 0x0000_0000,
                length: 512 * KIB,
                kind: MemoryKind::Tcm,
            },
            Region {
                name: "DDR",
                origin: 0x6000_0000,
                length: N6_XSPI2_BLOB,
                kind: MemoryKind::ExternalFlash,
            },
            Region {
                name: "RAM",
                origin: 0x2000_0000,
                length: N6_DTCM,
                kind: MemoryKind::Tcm,
            },
            Region {
                name: "AXISRAM1",
                origin: 0x2100_0000,
                length: N6_AXISRAM1,
                kind: MemoryKind::Sram,
            },
            Region {
                name: "AXISRAM2",
                origin: 0x2110_0000,
                length: N6_AXISRAM2,
                kind: MemoryKind::Sram,
            },
            Region {
                name: "AXISRAM3_6",
                origin: 0x2120_0000,
                length: N6_AXISRAM3_6,
                kind: MemoryKind::Sram,
            },
        ],
        stack: 64 * KIB,
        blob: "DDR",
        arena: &["RAM", "AXISRAM1", "AXISRAM2", "AXISRAM3_6"],
        code_reserve: 0,
        statics_reserve: 16 * KIB,
        stands_in_for: Some("stm32n6570-dk"),
    },
    Board {
        name: "qemu-stm32h747i-disco",
        core: "Cortex-M7",
        target: "thumbv7em-none-eabihf",
        cpu: "cortex-m7",
        runner: Runner::Qemu {
            machine: "mps2-an500",
            cpu: "cortex-m7",
        },
        // Code in the first MiB of the AN500's code memory, the H747's SRAM regions cut out of
        // its 4 MiB SRAM, the blob in its PSRAM as the QSPI flash.
        regions: &[
            Region {
                name: "FLASH",
                origin: 0x0000_0000,
                length: H747_FLASH,
                kind: MemoryKind::Flash,
            },
            Region {
                name: "PSRAM",
                origin: 0x6000_0000,
                length: 16 * MIB,
                kind: MemoryKind::ExternalFlash,
            },
            Region {
                name: "RAM",
                origin: 0x2000_0000,
                length: H747_DTCM,
                kind: MemoryKind::Tcm,
            },
            Region {
                name: "AXISRAM",
                origin: 0x2010_0000,
                length: H747_AXISRAM,
                kind: MemoryKind::Sram,
            },
            Region {
                name: "SRAM1_3",
                origin: 0x2020_0000,
                length: H747_SRAM1_3,
                kind: MemoryKind::Sram,
            },
            Region {
                name: "SRAM4",
                origin: 0x2030_0000,
                length: H747_SRAM4,
                kind: MemoryKind::Sram,
            },
        ],
        stack: 32 * KIB,
        blob: "PSRAM",
        arena: &["RAM", "AXISRAM", "SRAM1_3", "SRAM4"],
        code_reserve: 0,
        statics_reserve: 16 * KIB,
        stands_in_for: Some("stm32h747i-disco"),
    },
    Board {
        name: "qemu-nrf52840-dk",
        core: "Cortex-M4",
        target: "thumbv7em-none-eabihf",
        cpu: "cortex-m4",
        runner: Runner::Qemu {
            machine: "mps2-an386",
            cpu: "cortex-m4",
        },
        // The nRF52840's 1 MiB flash and 256 KiB RAM at the AN386's addresses.
        regions: &[
            Region {
                name: "FLASH",
                origin: 0x0000_0000,
                length: NRF52840_FLASH,
                kind: MemoryKind::Flash,
            },
            Region {
                name: "RAM",
                origin: 0x2000_0000,
                length: NRF52840_RAM,
                kind: MemoryKind::Sram,
            },
        ],
        stack: 32 * KIB,
        blob: "FLASH",
        arena: &["RAM"],
        code_reserve: 128 * KIB,
        statics_reserve: 16 * KIB,
        stands_in_for: Some("nrf52840-dk"),
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

    /// Bytes arena part `i` may take in its region (`arena[i]`), less the stack and statics
    /// when it is `RAM`; 0 past the last arena region.
    pub fn arena_room(&self, i: usize) -> u64 {
        let Some(&name) = self.arena.get(i) else {
            return 0;
        };
        let len = self.region(name).map_or(0, |r| r.length);
        let shared = if name == "RAM" {
            self.stack + self.statics_reserve
        } else {
            0
        };
        len.saturating_sub(shared)
    }

    /// The arena regions (indices into `arena`) a blob's arena parts of `part_lens` bytes go
    /// to: part `i` to region `i` for a blob planned for the board (one part per region), the
    /// first region with room for a blob of one part. The error names the region, the need and
    /// the room.
    pub fn place_arena(&self, part_lens: &[u64]) -> Result<Vec<usize>, String> {
        let regions = self.arena.join(", ");
        if let [need] = part_lens {
            if let Some(i) = (0..self.arena.len()).find(|&i| *need <= self.arena_room(i)) {
                return Ok(vec![i]);
            }
            let (largest, room) = (0..self.arena.len())
                .rev()
                .map(|i| (self.arena[i], self.arena_room(i)))
                .max_by_key(|&(_, room)| room)
                .unwrap_or(("none", 0));
            let split = if self.arena.len() > 1 {
                format!(
                    "; quantize it with `--board {}` to split the arena over {regions}",
                    self.name
                )
            } else {
                String::new()
            };
            return Err(format!(
                "the model needs a {need}-byte arena but the largest arena region of board {}, {largest}, has room for {room} bytes ({} over){split}",
                self.name,
                need - room
            ));
        }
        if part_lens.len() != self.arena.len() {
            return Err(format!(
                "the blob's arena is planned in {} parts, but board {} has {} arena regions ({regions}): quantize it with `--board {}`",
                part_lens.len(),
                self.name,
                self.arena.len(),
                self.name
            ));
        }
        for (i, &need) in part_lens.iter().enumerate() {
            let room = self.arena_room(i);
            if need > room {
                return Err(format!(
                    "arena part {i} needs {need} bytes but region {} of board {} has room for {room} ({} over): the blob was planned for other regions; quantize it with `--board {}`",
                    self.arena[i],
                    self.name,
                    need - room,
                    self.name
                ));
            }
        }
        Ok((0..part_lens.len()).collect())
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
            "REGION_ALIAS(BLOB, {});\nINCLUDE vitae-sections.x\n",
            self.blob
        );
        // One NOLOAD section per arena part, in its region: boot does not spend time zeroing it.
        // The first also takes `.vitae_arena`: other statics that want the board's arena memory
        // (the loader example's heap, the kernel bench's buffers).
        for (i, region) in self.arena.iter().enumerate() {
            let shared = if i == 0 {
                " .vitae_arena .vitae_arena.*"
            } else {
                ""
            };
            s += &format!(
                "SECTIONS\n{{\n  .vitae_arena{i} (NOLOAD) : ALIGN(16)\n  {{\n    *(.vitae_arena{i} .vitae_arena{i}.*{shared});\n    . = ALIGN(16);\n  }} > {region}\n}} INSERT AFTER .uninit;\n"
            );
        }
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
        let named = ["FLASH", "RAM", self.blob].into_iter();
        for name in named.chain(self.arena.iter().copied()) {
            if self.region(name).is_none() {
                return Some(format!("{}: no region named {name}", self.name));
            }
        }
        if self.arena.is_empty() || self.arena.len() > 8 {
            return Some(format!(
                "{}: 1 to 8 arena regions (the blob's arena parts)",
                self.name
            ));
        }
        // A part is at least 16 bytes even where no buffer goes (the blob's splits rise).
        if let Some(i) = (0..self.arena.len()).find(|&i| self.arena_room(i) < 16) {
            return Some(format!(
                "{}: arena region {} has no room left (the stack and statics take it)",
                self.name, self.arena[i]
            ));
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
