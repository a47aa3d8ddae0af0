//! `cargo xtask`: the project's build, test, QEMU, demo and benchmark driver.
//!
//! `cargo xtask` runs the bootstrap crate (`host-tools/xtask/bootstrap`) first: it checks the
//! toolchain and QEMU (`setup`) before this crate's long first build, then runs this binary. Every
//! command here that needs ARM tools still calls `setup`, which is instant once its stamp matches.

mod app;
mod assets;
mod bench;
mod bench_e2e;
mod defmt_log;
mod demo;
mod e2e;
mod firmware;
mod fuzz;
mod hardening;
mod insn_classes;
mod kit;
mod profile;
mod python;
mod qemu;
mod qemu_cmd;
mod test;
mod vector_fp;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
pub use xtask_bootstrap::{boards, host_cargo, project_root, run_checked, setup, toolchain};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, test and run ViTAE-Edge",
    after_help = "\
Examples:
  cargo xtask setup            install the Cortex-M toolchain, QEMU and the icount plugin (once)
  cargo xtask test             everything: fmt, clippy, host tests, ARM builds, on-target tests under QEMU
  cargo xtask demo             the end-to-end demo on the QEMU Cortex-M4 board
  cargo xtask examples         the embedding examples (bare, embassy, loader) on the M4 and M55 boards
  cargo xtask firmware --board nucleo-h743zi   build the firmware for a real board"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing (Debian packages for Cortex-M builds and QEMU, the QEMU plugin).
    /// Idempotent: a second run does nothing.
    Setup,
    /// Run every check: fmt, clippy -D warnings, host unit + integration tests, the library built
    /// alone for every ARM target, the real-board firmware builds, on-target tests under QEMU.
    Test(test::TestArgs),
    /// Run the end-to-end demo on the QEMU Cortex-M4 board (mps2-an386).
    Demo,
    /// Build and run the embedding examples (firmware/examples: bare, embassy, loader) on the
    /// QEMU Cortex-M4 and M55 boards, each output checked against the host engine; writes their
    /// inputs to target/vitae/examples.
    Examples(kit::ExamplesArgs),
    /// Run a blob on an input under QEMU and write the logits (.npy), like `cargo vitae run --model`.
    Qemu(qemu_cmd::QemuArgs),
    /// Preprocess a VTDIGIT1 file into the model input (.npy, N×1×32×32 f32) with the runtime's
    /// own function; the training script uses this, so training and device see the same numbers.
    #[command(hide = true)]
    DigitsNpy {
        /// VTDIGIT1 file.
        input: PathBuf,
        /// Output .npy.
        output: PathBuf,
    },
    /// Build the firmware for a board (QEMU or real) without running it.
    Firmware {
        /// Board name (a board of firmware/boards.rs, e.g. mps2-an386 or nucleo-h743zi).
        #[arg(long)]
        board: String,
    },
    /// Build the firmware for a real board and run it there with `probe-rs run`.
    Flash {
        /// A real board of firmware/boards.rs (e.g. nucleo-h743zi or nrf52840-dk).
        #[arg(long)]
        board: String,
    },
    /// Instruction counts under QEMU: `bench kernels` (cases a–f, optimized vs reference).
    Bench(bench::BenchArgs),
    /// Fuzz a reader of untrusted input with libFuzzer (installs cargo-fuzz when missing).
    Fuzz(fuzz::FuzzArgs),
    /// Soak: 10,000 consecutive mcu_a int8 inferences on the host engine and 200 under QEMU,
    /// identical outputs, no memory growth.
    Soak(hardening::SoakArgs),
    /// The host tests of vitae-edge and vitae under AddressSanitizer (nightly), after showing
    /// that it catches a deliberate out-of-bounds read.
    Asan(hardening::AsanArgs),
    /// The `cargo xtask test` step that feeds corrupt blobs to the firmware, alone.
    #[command(hide = true)]
    FirmwareBadBlobs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => setup::setup(false),
        Cmd::Test(args) => test::run(&args),
        Cmd::Demo => demo::run(),
        Cmd::Examples(args) => kit::run(&args),
        Cmd::Qemu(args) => qemu_cmd::run(&args),
        Cmd::DigitsNpy { input, output } => digits_npy(&input, &output),
        Cmd::Firmware { board } => firmware_only(&board).map(|_| ()),
        Cmd::Flash { board } => flash(&board),
        Cmd::Fuzz(args) => fuzz::run(&args),
        Cmd::Soak(args) => hardening::soak(&args),
        Cmd::Asan(args) => hardening::asan(&args),
        Cmd::FirmwareBadBlobs => setup::setup(true)
            .and_then(|()| toolchain::detect())
            .and_then(hardening::firmware_bad_blobs),
        Cmd::Bench(args) => bench::run(&args),
    };
    xtask_bootstrap::exit_code(result)
}

/// Builds the firmware for a board with the demo model (int8) and one demo digit embedded.
fn firmware_only(board: &str) -> Result<PathBuf> {
    setup::setup(true)?;
    let board = boards::board(board)?;
    let tc = toolchain::detect()?;
    let elf = demo_firmware(tc, board)?;
    let sizes = firmware::sizes(&elf)?;
    println!(
        "built {} ({} flash bytes, {} static RAM bytes)",
        elf.display(),
        sizes.flash,
        sizes.ram
    );
    Ok(elf)
}

/// The app for `board` with the int8 demo model and the first test digit.
pub fn demo_firmware(tc: toolchain::ArmToolchain, board: &boards::Board) -> Result<PathBuf> {
    let model = assets::digits_model()?;
    let (blob, _) = assets::digits_blob(&model, vitae::quantize::Precision::Int8)?;
    let digits = assets::read_digits(&assets::digits_dir().join("test.bin"))?;
    let first = &digits[0];
    let input = project_root()
        .join("target")
        .join("vitae")
        .join("digit0.npy");
    vitae::npy::write_npy_f32(&input, &[1, 1, 32, 32], &first.image())?;
    app::build(tc, board, &blob, &app::AppInput::Npy(input))
}

fn digits_npy(input: &std::path::Path, output: &std::path::Path) -> Result<()> {
    let digits = assets::read_digits(input)?;
    let flat: Vec<f32> = digits.iter().flat_map(assets::Digit::image).collect();
    let size = vitae_edge::preprocess::digits::SIZE;
    vitae::npy::write_npy_f32(output, &[digits.len(), 1, size, size], &flat)?;
    Ok(())
}

fn flash(board_name: &str) -> Result<()> {
    let board = boards::board(board_name)?;
    let boards::Runner::Probe { chip } = board.runner else {
        bail!("{board_name} runs under QEMU; use `cargo xtask demo` or `cargo xtask test`");
    };
    let elf = firmware_only(board_name)?;
    let mut cmd = Command::new("probe-rs");
    cmd.args(["run", "--chip", chip]).arg(&elf);
    run_checked(
        cmd,
        "probe-rs run (install it with `cargo install probe-rs-tools --locked`)",
    )
}
