//! Developer tasks for kosmos2-rs: `cargo xtask <command>`.
//!
//! - `fixtures`: builds the HF reference venv and regenerates `tests/fixtures`.
//! - `parity`: runs every parity test and prints the error table.

mod fixtures;
mod parity;
mod paths;
mod venv;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "kosmos2-rs developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Regenerate tests/fixtures with the pinned HF reference stack (creates the venv on first use).
    Fixtures(fixtures::Args),
    /// Run every parity test and print component, max abs/rel error, tolerance and pass.
    Parity(parity::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Fixtures(args) => fixtures::run(&args),
        Command::Parity(args) => parity::run(&args),
    }
}
