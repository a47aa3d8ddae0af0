//! `vitae`: quantize, inspect, run and diff ViTAE models (filled in by the host-tool work).
use clap::Parser;

/// ViTAE-Edge host tool.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    eprintln!("vitae: no subcommands yet");
    std::process::exit(2);
}
