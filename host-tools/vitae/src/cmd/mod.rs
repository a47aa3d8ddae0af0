//! One module per subcommand: `Args` (clap) + `run(args) -> anyhow::Result<()>`.

pub mod bench;
pub mod check;
pub mod run;
