//! One module per subcommand: `Args` (clap) + `run(args) -> anyhow::Result<()>`.

pub mod bench;
pub mod bench_engine;
pub mod check;
pub mod diff;
pub mod eval;
pub mod inspect;
pub mod quantize;
pub mod run;
