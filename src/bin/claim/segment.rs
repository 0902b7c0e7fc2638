//! `claim segment` (being built).

use claim::{Error, Result};

/// Arguments of `claim segment`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `claim segment`.
pub fn run(_args: &Args) -> Result<()> {
    Err(Error::Unsupported("claim segment is being built".into()))
}
