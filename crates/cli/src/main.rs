//! `comet`: the one binary of Comet.
//!
//! Today it carries the storage admin commands; the server roles (`standalone`, `proxy`,
//! `broker`, `controller`) join as subcommands when their crates can run.
//!
//! ```text
//!  comet store inspect --data-dir DIR [--segment-size SIZE]   recovery report, offsets, queues
//!  comet store verify  --data-dir DIR [--segment-size SIZE]   CRC-check every queued message
//! ```
//!
//! # Layout
//! - `main.rs`: parse arguments, set up logging, dispatch, map the outcome to an exit status.
//! - `args`: the clap definitions of every subcommand.
//! - `store_cmd`: `comet store ...` over `comet_store`'s public API.
//! - `size`: human-readable sizes (`64KiB`, `1GiB`) for flags.
//!
//! # Conventions
//! - Results go to stdout (one JSON object per admin command); logs go to stderr, filtered by
//!   `RUST_LOG` (default `warn`).
//! - Exit status: 0 success; 1 the command ran and found a problem (e.g. corrupt records);
//!   2 the command could not run (bad arguments, missing directory, I/O error).
//! - Nothing depends on this crate; all logic worth testing in isolation belongs in a library.

mod args;
mod size;
mod store_cmd;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let outcome = match &cli.command {
        Command::Store(cmd) => store_cmd::run(cmd),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line: "what we did: why it failed".
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
