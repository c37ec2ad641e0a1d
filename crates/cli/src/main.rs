//! The `comet` binary: see the library docs (`comet`) for commands and conventions.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use comet::args::{Cli, Command};
use comet::store_cmd;

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
