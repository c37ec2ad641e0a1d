//! The `comet` binary: see the library docs (`comet`) for commands and conventions.

use std::process::ExitCode;

use clap::Parser;

use comet::args::{Cli, Command};
use comet::config::LogFormat;
use comet::server::{self, Role};
use comet::{admin, logging, store_cmd};

/// mimalloc: the servers and the bench allocate many small buffers per request; glibc's malloc
/// spent about a tenth of the CPU of a send in its free lists.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Store(cmd) => {
            logging::init("warn", LogFormat::Text);
            store_cmd::run(&cmd)
        }
        Command::Standalone(args) => server::run(Role::Standalone, &args),
        Command::Controller(args) => server::run(Role::Controller, &args),
        Command::Broker(args) => server::run(Role::Broker, &args),
        Command::Proxy(args) => server::run(Role::Proxy, &args),
        Command::Bench(args) => {
            logging::init("warn", LogFormat::Text);
            bench_runtime(args.threads)
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(comet::bench::run(args)))
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Topic { target, cmd } => {
            admin_command(async move { admin::topic(&target, &cmd).await })
        }
        Command::Group { target, cmd } => {
            admin_command(async move { admin::group(&target, &cmd).await })
        }
        Command::Cluster { target, cmd } => {
            admin_command(async move { admin::cluster(&target, &cmd).await })
        }
        Command::Offset { target, cmd } => {
            admin_command(async move { admin::offset(&target, &cmd).await })
        }
        Command::Message { target, cmd } => {
            admin_command(async move { admin::message(&target, &cmd).await })
        }
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

/// The bench's runtime. One thread is a current-thread runtime, not a one-worker pool: the
/// pool's worker runs a task woken by the running task next (its LIFO slot), so each
/// producer's new request woke the connection task straight away and the connection handled
/// requests one at a time. On a current-thread runtime the producers woken by one read all
/// queue their requests first, and the connection task encodes and writes them together.
fn bench_runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// Runs an admin command on a small runtime and prints its JSON result.
fn admin_command(
    fut: impl Future<Output = anyhow::Result<serde_json::Value>>,
) -> anyhow::Result<ExitCode> {
    logging::init("warn", LogFormat::Text);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let value = rt.block_on(fut)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(ExitCode::SUCCESS)
}
