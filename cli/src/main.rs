//! `draco`: the one binary of the project. Subcommands arrive with the issues that fill them.

mod bench;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "draco",
    version,
    about = "Byzantine-resilient distributed training (DRACO)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure Draco's hot paths against baselines measured in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bench(cmd) => bench::run(cmd),
    }
}
