//! The `claim` program end to end: every command run as a real process in
//! temporary folders. One test binary for all CLI suites (each integration
//! test binary relinks the library, which costs minutes on 2 cores).

mod common;

mod cli;
mod cli_augment;
mod cli_eval;
mod cli_hostile;
mod cli_joint;
mod cli_memory;
mod cli_segment;
mod cli_train;
mod cli_twochan;
mod fuzz;
