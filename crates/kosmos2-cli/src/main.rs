//! The `kosmos2` command-line tool.

use std::process::ExitCode;

use clap::Parser;
use kosmos2_cli::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Reuse freed activation buffers instead of faulting in fresh pages every op.
    kosmos2::tensor::alloc::keep_freed_memory();
    match kosmos2_cli::app::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line a newcomer can act on; the backtrace only when asked for.
            eprintln!("error: {}", kosmos2_cli::app::one_line(&e));
            if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
                eprintln!("{}", e.backtrace());
            }
            ExitCode::FAILURE
        }
    }
}
