//! `claim import` (being built).

use claim::{Error, Result};

/// Arguments of `claim import`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `claim import`.
pub fn run(_args: &Args) -> Result<()> {
    Err(Error::Unsupported("claim import is being built".into()))
}
