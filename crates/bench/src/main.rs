//! The `comet-bench` binary: parse the flags, log to stderr, run on the bench's own runtime.
//! See the library docs (`comet_bench`) for what a run does.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// mimalloc, as in the servers: the bench allocates many small buffers per request and
/// glibc's malloc spent about a tenth of the CPU of a send in its free lists.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The `comet-bench` command line.
#[derive(Debug, Parser)]
#[command(
    name = "comet-bench",
    version,
    about = "Load-test a RocketMQ 5 gRPC proxy; prints a JSON report of throughput and latency",
    long_about = "Load-test a RocketMQ 5 gRPC proxy through the bench's raw client, the Comet \
        SDK or the official rocketmq 5.0.0 crate; prints a JSON report of throughput and \
        latency on stdout (with --compare: a table of all three), a progress bar and logs on \
        stderr.\n\n\
        Environment:\n  \
        RUST_LOG   log filter for stderr, e.g. `info` (default: warn)\n\n\
        Examples:\n  \
        comet topic create bench --queues 8\n  \
        comet-bench --producers 8 --consumers 2 --message-size 1KiB --duration 30s\n  \
        comet-bench --client sdk --rate 10000\n  \
        comet-bench --spawn cluster --producers 8 --consumers 0 --duration 20s\n  \
        comet-bench --spawn standalone --metrics-overhead 6 --consumers 0 --duration 10s\n  \
        comet-bench --compare --producers 8 --consumers 2 --backlog --duration 10s"
)]
struct Cli {
    #[command(flatten)]
    bench: comet_bench::BenchArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    let outcome = cli
        .bench
        .validate()
        .and_then(|()| runtime(cli.bench.threads).map_err(anyhow::Error::from))
        .and_then(|rt| rt.block_on(comet_bench::run(cli.bench)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
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
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
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
