//! The `claim` command-line program.
fn main() {}
