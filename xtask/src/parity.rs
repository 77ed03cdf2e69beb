//! `cargo xtask parity`: run the parity tests and print their error table.
//!
//! Parity tests call `tests/common::assert_parity`, which appends a row to the
//! file named by `KOSMOS2_PARITY_REPORT`; this command collects the rows.

use std::process::Command;

use anyhow::Context;

use crate::paths::repo_root;
use crate::{fixtures, venv};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Regenerate the reference fixtures with the HF stack first.
    #[arg(long)]
    live: bool,
    /// Compare HF and kosmos2 on the full-size random-weight checkpoint instead (see
    /// `docs/parity.md`; builds and caches it under target/full-size on first use).
    #[arg(long)]
    full_size: bool,
    #[command(flatten)]
    full_size_options: crate::full_size::Options,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.full_size {
        return crate::full_size::run(&args.full_size_options);
    }
    if args.live {
        fixtures::run(&fixtures::Args::default())?;
    }
    let report = repo_root().join("target").join("parity-report.tsv");
    std::fs::create_dir_all(repo_root().join("target"))?;
    let _ = std::fs::remove_file(&report);
    let result = venv::run(
        Command::new(env!("CARGO"))
            .args(["test", "--workspace", "--release", "--tests"])
            .current_dir(repo_root())
            .env("KOSMOS2_PARITY_REPORT", &report),
    );
    let rows = std::fs::read_to_string(&report).unwrap_or_default();
    print_table(&rows);
    result.context("some tests failed")
}

pub(crate) fn print_table(rows: &str) {
    let mut rows: Vec<Vec<&str>> = rows.lines().map(|l| l.split('\t').collect()).collect();
    rows.retain(|r| r.len() == 5);
    rows.sort_by(|a, b| a[0].cmp(b[0]));
    let width = rows.iter().map(|r| r[0].len()).max().unwrap_or(9).max(9);
    println!(
        "\n{:width$}  {:>10}  {:>10}  {:>9}  pass",
        "component", "max abs", "max rel", "tolerance"
    );
    for r in &rows {
        let num = |s: &str| s.parse::<f64>().unwrap_or(f64::NAN);
        println!(
            "{:width$}  {:>10.3e}  {:>10.3e}  {:>9.1e}  {}",
            r[0],
            num(r[1]),
            num(r[2]),
            num(r[3]),
            if r[4] == "true" { "yes" } else { "NO" }
        );
    }
    let failed = rows.iter().filter(|r| r[4] != "true").count();
    println!("{} rows, {} failed", rows.len(), failed);
}
