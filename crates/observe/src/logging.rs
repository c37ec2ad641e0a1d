//! The process's tracing subscriber: text or JSON lines on stderr, an `EnvFilter` that can be
//! replaced at run time ([`LogHandle::set_level`], behind the admin API's log-level RPC), and,
//! when configured, an OpenTelemetry layer exporting spans over OTLP with a sampling ratio.
//!
//! openraft logs its whole state at INFO on every change; the default filter holds it at WARN
//! (`openraft=warn`) unless the given directives name openraft themselves.

use std::io::IsTerminal;
use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use parking_lot::Mutex;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::error::{Error, Result};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Where spans go, when they are exported.
#[derive(Debug, Clone)]
pub struct TraceSetup {
    /// OTLP/gRPC endpoint, e.g. `http://127.0.0.1:4317`.
    pub otlp_endpoint: String,
    /// Fraction of new traces sampled, 0.0 to 1.0; a sampled parent is always followed.
    pub sample_ratio: f64,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

/// The subscriber's settings.
#[derive(Debug, Clone, Default)]
pub struct LogSetup {
    /// Filter directives (`info`, `comet_broker=debug,info`); `RUST_LOG` wins when set.
    pub level: String,
    /// Text or JSON.
    pub format: LogFormat,
    /// Span export, when on.
    pub traces: Option<TraceSetup>,
}

type FilterHandle = reload::Handle<EnvFilter, Registry>;

/// Controls the installed subscriber.
pub struct LogHandle {
    filter: FilterHandle,
    directives: Mutex<String>,
    tracer: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle")
            .field("directives", &*self.directives.lock())
            .field("traces", &self.tracer.is_some())
            .finish()
    }
}

static HANDLE: OnceLock<LogHandle> = OnceLock::new();

/// The directives for `level`, with openraft held at WARN unless `level` names it.
pub fn default_directives(level: &str) -> String {
    let level = if level.trim().is_empty() {
        "info"
    } else {
        level.trim()
    };
    if level.contains("openraft") {
        level.to_owned()
    } else {
        format!("{level},openraft=warn")
    }
}

fn parse_filter(directives: &str) -> Result<EnvFilter> {
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| Error::LogLevel {
            directives: directives.to_owned(),
            reason: e.to_string(),
        })
}

/// The sampler for `ratio`: new traces sampled at `ratio`, children follow their parent.
fn sampler(ratio: f64) -> Result<Sampler> {
    if !(0.0..=1.0).contains(&ratio) || ratio.is_nan() {
        return Err(Error::Config {
            key: "tracing.sample_ratio",
            reason: format!("{ratio} is outside 0.0..=1.0"),
        });
    }
    Ok(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
        ratio,
    ))))
}

fn tracer_provider(setup: &TraceSetup) -> Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(setup.otlp_endpoint.clone())
        .build()
        .map_err(|e| Error::Otlp {
            endpoint: setup.otlp_endpoint.clone(),
            reason: e.to_string(),
        })?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler(setup.sample_ratio)?)
        .with_resource(
            Resource::builder()
                .with_service_name(setup.service_name.clone())
                .build(),
        )
        .build())
}

/// Installs the global subscriber once; later calls return the first handle. With span
/// export it must run inside a Tokio runtime (the gRPC channel lives on it).
///
/// # Errors
/// [`Error::LogLevel`] for bad directives, [`Error::Config`] for a bad sampling ratio,
/// [`Error::Otlp`] when the exporter cannot be built, [`Error::NoLogHandle`] when another
/// subscriber is already installed.
pub fn init(setup: &LogSetup) -> Result<&'static LogHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h);
    }
    let directives = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => v,
        _ => default_directives(&setup.level),
    };
    let filter = parse_filter(&directives)?;
    let (filter_layer, filter_handle) = reload::Layer::new(filter);
    let tracer = setup.traces.as_ref().map(tracer_provider).transpose()?;
    let fmt_layer = match setup.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let otel_layer = tracer
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("comet")));
    tracing_subscriber::registry()
        .with(filter_layer)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|_| Error::NoLogHandle)?;
    Ok(HANDLE.get_or_init(|| LogHandle {
        filter: filter_handle,
        directives: Mutex::new(directives),
        tracer,
    }))
}

/// The `SetLogLevel` admin RPC of every role: replaces the filter, answering the directives in
/// force, INVALID_ARGUMENT for directives that do not parse, FAILED_PRECONDITION when the
/// process's subscriber is not Comet's (embedded in another program).
///
/// # Errors
/// As above, as a gRPC status.
pub fn set_level_rpc(directives: &str) -> std::result::Result<String, tonic::Status> {
    let handle = handle()
        .ok_or_else(|| tonic::Status::failed_precondition(Error::NoLogHandle.to_string()))?;
    handle.set_level(directives).map_err(|e| match e {
        Error::LogLevel { .. } => tonic::Status::invalid_argument(e.to_string()),
        other => tonic::Status::internal(other.to_string()),
    })
}

/// The installed handle, if Comet's subscriber is the process's.
pub fn handle() -> Option<&'static LogHandle> {
    HANDLE.get()
}

impl LogHandle {
    /// Replaces the filter with `directives` (openraft held at WARN unless named); returns the
    /// directives now in force.
    ///
    /// # Errors
    /// [`Error::LogLevel`] when they do not parse (the filter in force stays).
    pub fn set_level(&self, directives: &str) -> Result<String> {
        let full = default_directives(directives);
        let filter = parse_filter(&full)?;
        self.filter.reload(filter).map_err(|e| Error::LogLevel {
            directives: directives.to_owned(),
            reason: e.to_string(),
        })?;
        tracing::info!(directives = %full, "log level changed");
        full.clone_into(&mut self.directives.lock());
        Ok(full)
    }

    /// The directives in force.
    pub fn level(&self) -> String {
        self.directives.lock().clone()
    }

    /// Whether spans are exported (OTLP configured).
    pub fn exports_traces(&self) -> bool {
        self.tracer.is_some()
    }

    /// Exports the spans still buffered (tests; shutdown).
    pub fn flush_traces(&self) {
        if let Some(p) = &self.tracer
            && let Err(e) = p.force_flush()
        {
            tracing::warn!(error = %e, "span flush failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_plain_level_should_hold_openraft_at_warn() {
        assert_eq!(default_directives("info"), "info,openraft=warn");
        assert_eq!(default_directives(""), "info,openraft=warn");
        assert_eq!(
            default_directives("openraft=info,debug"),
            "openraft=info,debug"
        );
    }

    #[test]
    fn given_a_ratio_outside_the_unit_range_should_name_the_key() {
        assert!(sampler(0.5).is_ok());
        match sampler(1.5) {
            Err(Error::Config { key, .. }) => assert_eq!(key, "tracing.sample_ratio"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn given_bad_directives_should_say_so() {
        assert!(matches!(
            parse_filter("comet=notalevel"),
            Err(Error::LogLevel { .. })
        ));
    }
}
