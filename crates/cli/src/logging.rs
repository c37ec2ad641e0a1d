//! Logging to stderr with `tracing`, through `comet_observe::logging`: a filter from `RUST_LOG`
//! or the configured level (openraft's state dumps held at WARN unless named), text or JSON
//! lines, the level changeable at run time (`comet log-level set`), and span export over OTLP
//! when `tracing.otlp_endpoint` is set. Message bodies are never logged anywhere in Comet.

use anyhow::Context as _;
use comet_observe::logging::{self as observe_logging, LogSetup, TraceSetup};

use crate::config::{Config, LogFormat};

fn format(f: LogFormat) -> observe_logging::LogFormat {
    match f {
        LogFormat::Text => observe_logging::LogFormat::Text,
        LogFormat::Json => observe_logging::LogFormat::Json,
    }
}

/// Installs the global subscriber for a command. `RUST_LOG`, when set, wins over `level`.
/// Calling it twice is harmless (the second call keeps the first subscriber).
pub fn init(level: &str, f: LogFormat) {
    let setup = LogSetup {
        level: level.to_owned(),
        format: format(f),
        traces: None,
    };
    if let Err(e) = observe_logging::init(&setup) {
        eprintln!("warning: logging not set up: {e}");
    }
}

/// Installs the global subscriber of a server process from `cfg` (`[log]` and `[tracing]`).
/// Must run inside the Tokio runtime when spans are exported.
///
/// # Errors
/// A bad level or sampling ratio, or an OTLP endpoint the exporter refuses.
pub fn init_server(cfg: &Config, service: &str) -> anyhow::Result<()> {
    let traces = (!cfg.tracing.otlp_endpoint.is_empty()).then(|| TraceSetup {
        otlp_endpoint: cfg.tracing.otlp_endpoint.clone(),
        sample_ratio: cfg.tracing.sample_ratio,
        service_name: service.to_owned(),
    });
    observe_logging::init(&LogSetup {
        level: cfg.log.level.clone(),
        format: format(cfg.log.format),
        traces,
    })
    .map(|_| ())
    .context("setting up logging (log.level, tracing.*)")
}
