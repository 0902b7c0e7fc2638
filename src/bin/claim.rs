//! The `claim` command-line program: the library from a shell — phantom
//! generation, image inspection, SMILE (AHA parcellation, scar masks,
//! per-segment statistics, bull's-eye plots) and the end-to-end demo.
//!
//! One module per subcommand under `src/bin/claim/`, plus `label_maps`
//! (what the SMILE commands share). Logic other callers need (EMIDEC case
//! discovery, label narrowing, tissue volumes) lives in the library.
//!
//! Every failure prints `error: <message>` to stderr and exits with the
//! error's `claim_status` number (1 invalid argument — bad flags included —,
//! 2 I/O, 3 format, …), so scripts can tell failures apart the same way C
//! callers do.

/// `println!` for the program's output. When the reader has gone (`claim
/// stats --json | head`), the rest of the output is dropped and the command
/// still finishes its work (files are written, the exit status is the
/// command's), where `println!` would panic.
macro_rules! outln {
    () => {
        $crate::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` with the behaviour of [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!($($arg)*))
    };
}

// The crate root is src/bin/claim.rs, so submodules need explicit paths
// to live in src/bin/claim/.
#[path = "claim/aha.rs"]
mod aha;
#[path = "claim/augment.rs"]
mod augment;
#[path = "claim/bullseye.rs"]
mod bullseye;
#[path = "claim/demo.rs"]
mod demo;
#[path = "claim/eval.rs"]
mod eval;
#[path = "claim/import.rs"]
mod import;
#[path = "claim/info.rs"]
mod info;
#[path = "claim/label_maps.rs"]
mod label_maps;
#[path = "claim/phantom.rs"]
mod phantom;
#[path = "claim/segment.rs"]
mod segment;
#[path = "claim/smile.rs"]
mod smile;
#[path = "claim/stats.rs"]
mod stats;
#[path = "claim/synth.rs"]
mod synth;
#[path = "claim/train.rs"]
mod train;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// CLAIM: clinically guided LGE scar synthesis and segmentation.
#[derive(Debug, Parser)]
#[command(name = "claim", version, about, propagate_version = true)]
struct Cli {
    /// Largest volume accepted, in voxels (default 268435456 = 2^28, or
    /// $CLAIM_MAX_VOXELS): larger images are refused from their header,
    /// before anything is decompressed.
    #[arg(long, global = true, value_name = "N", value_parser = parse_max_voxels)]
    max_voxels: Option<u64>,
    /// Print the command's peak memory (resident set high-water mark) to
    /// stderr when it ends, to size machines or check the documented bounds
    /// (Linux; elsewhere it says it cannot).
    #[arg(long, global = true)]
    report_memory: bool,
    #[command(subcommand)]
    command: Command,
}

fn parse_max_voxels(text: &str) -> Result<u64, String> {
    claim::limits::parse_max_voxels(text).map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate the procedural short-axis LGE phantom (image + labels).
    Phantom(phantom::Args),
    /// Describe a NIfTI image: geometry, value range, label volumes.
    Info(info::Args),
    /// Parcellate a label map into the AHA 17 segments (u8 segment map).
    Aha(aha::Args),
    /// Draw SMILE scar masks into a label map (one or many seeds).
    Smile(smile::Args),
    /// Myocardium, scar and MVO per AHA segment, as a table or JSON.
    Stats(stats::Args),
    /// Bull's-eye plot of per-segment scar, as SVG or PNG.
    Bullseye(bullseye::Args),
    /// Paint a realistic scar into an LGE image inside its scar labels (RePaint).
    Synth(synth::Args),
    /// Segment LV cavity, myocardium, scar and MVO with an nnU-Net model (no Python).
    Segment(segment::Args),
    /// Compare predicted label maps with ground truth: Dice, HD95, volumes, scar burden.
    Eval(eval::Args),
    /// Convert a PyTorch checkpoint or nnU-Net results folder to safetensors (no Python).
    Import(import::Args),
    /// Train a diffusion model in-process (checkpoints, resume, loss log).
    Train(train::Args),
    /// Make a synthetic scar dataset from a dataset's normal cases (resumable, shardable).
    Augment(augment::Args),
    /// Run everything claim can do on the built-in phantom.
    Demo(demo::Args),
}

fn run(command: Command) -> claim::Result<()> {
    match command {
        Command::Phantom(args) => phantom::run(&args),
        Command::Info(args) => info::run(&args),
        Command::Aha(args) => aha::run(&args),
        Command::Smile(args) => smile::run(&args),
        Command::Stats(args) => stats::run(&args),
        Command::Bullseye(args) => bullseye::run(&args),
        Command::Synth(args) => synth::run(&args),
        Command::Segment(args) => segment::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Import(args) => import::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Augment(args) => augment::run(&args),
        Command::Demo(args) => demo::run(&args),
    }
}

/// Writes to stdout; see [`outln!`].
fn write_stdout(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("error: I/O error: standard output: {err}");
            std::process::exit(claim::Error::Io(String::new()).status_code());
        }
        _ => {}
    }
}

/// `peak memory: N KiB` from the kernel's high-water mark of this
/// process's resident set (`VmHWM` in `/proc/self/status`).
fn peak_memory_line() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status.lines().find_map(|line| {
        line.strip_prefix("VmHWM:")?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse::<u64>()
            .ok()
    });
    match kib {
        Some(kib) => format!("peak memory: {kib} KiB ({:.1} MiB)", kib as f64 / 1024.0),
        None => "peak memory: unknown (no VmHWM in /proc/self/status on this system)".into(),
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
    if let Some(n) = cli.max_voxels {
        if let Err(err) = claim::limits::set_max_voxels(n) {
            eprintln!("error: {err}");
            return exit_code(err.status_code());
        }
    }
    let report_memory = cli.report_memory;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli.command)));
    if report_memory {
        eprintln!("{}", peak_memory_line());
    }
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            eprintln!("error: {err}");
            exit_code(err.status_code())
        }
        Err(_) => exit_code(claim::Error::Internal(String::new()).status_code()),
    }
}
