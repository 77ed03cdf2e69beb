//! The `kosmos2` command-line tool.

fn main() -> anyhow::Result<()> {
    println!("kosmos2 {}", env!("CARGO_PKG_VERSION"));
    Ok(())
}
