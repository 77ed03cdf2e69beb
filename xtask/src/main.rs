//! Developer tasks for kosmos2-rs.
fn main() -> anyhow::Result<()> {
    Ok(())
}
