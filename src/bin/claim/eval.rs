//! `claim eval` (being built).

use claim::{Error, Result};

/// Arguments of `claim eval`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `claim eval`.
pub fn run(_args: &Args) -> Result<()> {
    Err(Error::Unsupported("claim eval is being built".into()))
}
