//! Developer tasks for kosmos2-rs: `cargo xtask <command>`.
//!
//! - `fixtures`: builds the HF reference venv and regenerates `tests/fixtures`.
//! - `parity`: runs every parity test and prints the error table.
//!   `parity --full-size`: HF vs kosmos2 on the full-size random-weight checkpoint.
//! - `bench`: HF transformers vs kosmos2 on CPU, side by side (writes docs/performance.md).
//! - `loadtest`: a bounded load test of `kosmos2 serve` (continuous batching vs serial).
//! - `kernels`: compiles `kernels/*.cu` to the committed `kernels/ptx/*.ptx` with a pinned nvcc.

mod bench;
mod fixtures;
mod full_size;
mod kernels;
mod loadtest;
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
    /// Compile kernels/*.cu to kernels/ptx/*.ptx (pinned nvcc from PyPI) and write the manifest.
    Kernels(kernels::Args),
    /// Benchmark HF transformers against kosmos2 on CPU (full-size checkpoint; --quick for a smoke run).
    Bench(bench::Args),
    /// Bounded load test of `kosmos2 serve` on loopback: continuous batching vs serial serving.
    Loadtest(loadtest::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Fixtures(args) => fixtures::run(&args),
        Command::Parity(args) => parity::run(&args),
        Command::Kernels(args) => kernels::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Loadtest(args) => loadtest::run(&args),
    }
}
