//! The `claim` command-line program: the library's foundation features
//! (phantom generation, image inspection, the end-to-end demo) from a shell.
//!
//! One module per subcommand under `src/bin/claim/`. Every failure prints
//! `error: <message>` to stderr and exits with the error's `claim_status`
//! number (1 invalid argument — bad flags included —, 2 I/O, 3 format, …),
//! so scripts can tell failures apart the same way C callers do.

// The crate root is src/bin/claim.rs, so submodules need explicit paths
// to live in src/bin/claim/.
#[path = "claim/demo.rs"]
mod demo;
#[path = "claim/info.rs"]
mod info;
#[path = "claim/phantom.rs"]
mod phantom;
#[path = "claim/stats.rs"]
mod stats;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// CLAIM: clinically guided LGE scar synthesis and segmentation.
#[derive(Debug, Parser)]
#[command(name = "claim", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate the procedural short-axis LGE phantom (image + labels).
    Phantom(phantom::Args),
    /// Describe a NIfTI image: geometry, value range, label volumes.
    Info(info::Args),
    /// Run everything claim can do on the built-in phantom.
    Demo(demo::Args),
}

fn run(command: Command) -> claim::Result<()> {
    match command {
        Command::Phantom(args) => phantom::run(&args),
        Command::Info(args) => info::run(&args),
        Command::Demo(args) => demo::run(&args),
    }
}

/// Exit status of an error: its `claim_status` number.
fn exit_code(status: i32) -> ExitCode {
    ExitCode::from(u8::try_from(status).unwrap_or(u8::MAX))
}

fn main() -> ExitCode {
    // A panic is a bug in claim, never the user's fault: say so in one line
    // instead of a backtrace, and exit like CLAIM_ERR_INTERNAL.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error (a bug in claim; please report it): {info}");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // --help and --version are not failures; usage errors are invalid arguments.
            let failed = err.use_stderr();
            let _ = err.print();
            return if failed {
                exit_code(claim::Error::invalid("").status_code())
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli.command))) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            eprintln!("error: {err}");
            exit_code(err.status_code())
        }
        Err(_) => exit_code(claim::Error::Internal(String::new()).status_code()),
    }
}
