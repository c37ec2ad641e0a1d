//! The `comet` binary: see the library docs (`comet`) for commands and conventions.

use std::process::ExitCode;

use clap::Parser;

use comet::args::{Cli, Command};
use comet::config::LogFormat;
use comet::server::{self, Role};
use comet::{admin, log_level, logging, store_cmd};

/// mimalloc: the servers allocate many small buffers per request; glibc's malloc
/// spent about a tenth of the CPU of a send in its free lists.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let output = cli.output;
    let outcome = match cli.command {
        Command::Store(cmd) => {
            logging::init("warn", LogFormat::Text);
            store_cmd::run(&cmd)
        }
        Command::Standalone(args) => server::run(Role::Standalone, &args),
        Command::Controller(args) => server::run(Role::Controller, &args),
        Command::Broker(args) => server::run(Role::Broker, &args),
        Command::Proxy(args) => server::run(Role::Proxy, &args),
        Command::Topic { target, cmd } => {
            admin_command(output, async move { admin::topic(&target, &cmd).await })
        }
        Command::Group { target, cmd } => {
            admin_command(output, async move { admin::group(&target, &cmd).await })
        }
        Command::Cluster { target, cmd } => {
            admin_command(output, async move { admin::cluster(&target, &cmd).await })
        }
        Command::Offset { target, cmd } => {
            admin_command(output, async move { admin::offset(&target, &cmd).await })
        }
        Command::Message { target, cmd } => {
            admin_command(output, async move { admin::message(&target, &cmd).await })
        }
        Command::Client { target, cmd } => {
            admin_command(
                output,
                async move { admin::client_cmd(&target, &cmd).await },
            )
        }
        Command::LogLevel(cmd) => admin_command(output, async move { log_level::run(&cmd).await }),
        Command::User { target, cmd } => {
            admin_command(output, async move { admin::user(&target, &cmd).await })
        }
        Command::Acl { target, cmd } => {
            admin_command(output, async move { admin::acl(&target, &cmd).await })
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

/// Runs an admin command on a small runtime and prints its result (tables or JSON).
fn admin_command(
    output: Option<admin::OutputFormat>,
    fut: impl Future<Output = anyhow::Result<serde_json::Value>>,
) -> anyhow::Result<ExitCode> {
    logging::init("warn", LogFormat::Text);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let value = rt.block_on(fut)?;
    admin::print_output(&value, output)?;
    Ok(ExitCode::SUCCESS)
}
