//! The OpenTelemetry `MeterProvider` of a node: a Prometheus reader (text exposition on the
//! metrics listener) and, when configured, a periodic OTLP/gRPC push. [`Observer`] is what a
//! role records with: the meter plus the labels RocketMQ puts on every series (`cluster`,
//! `node_type`, `node_id`) and the node's readiness registry.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use crate::error::{Error, Result};
use crate::ready::Readiness;

/// The instrumentation scope of every Comet meter.
const SCOPE: &str = "comet";

/// How a node exports its metrics.
#[derive(Debug, Clone)]
pub struct MetricsSetup {
    /// Serve Prometheus text (`/metrics`).
    pub prometheus: bool,
    /// Push OTLP over gRPC to this endpoint (`http://host:4317`) when set.
    pub otlp_endpoint: Option<String>,
    /// How often OTLP is pushed.
    pub otlp_interval: Duration,
    /// `service.name` of the OTLP resource.
    pub service_name: String,
}

impl Default for MetricsSetup {
    fn default() -> Self {
        MetricsSetup {
            prometheus: true,
            otlp_endpoint: None,
            otlp_interval: Duration::from_secs(15),
            service_name: "comet".to_owned(),
        }
    }
}

struct Inner {
    provider: SdkMeterProvider,
    registry: Option<prometheus::Registry>,
}

/// A node's metrics pipeline; cheap to clone. [`Metrics::disabled`] records nothing.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.inner.is_some())
            .finish()
    }
}

impl Metrics {
    /// A pipeline that records nothing (metrics turned off).
    pub fn disabled() -> Self {
        Metrics { inner: None }
    }

    /// Builds the pipeline. With an OTLP endpoint it must run inside a Tokio runtime (the
    /// gRPC channel lives on it).
    ///
    /// # Errors
    /// [`Error::Prometheus`] or [`Error::Otlp`] when an exporter cannot be built.
    pub fn start(setup: &MetricsSetup) -> Result<Self> {
        let resource = Resource::builder()
            .with_service_name(setup.service_name.clone())
            .build();
        let mut builder = SdkMeterProvider::builder().with_resource(resource);
        let registry = if setup.prometheus {
            let registry = prometheus::Registry::new();
            let exporter = opentelemetry_prometheus::exporter()
                .with_registry(registry.clone())
                .without_units()
                .without_counter_suffixes()
                .without_target_info()
                .scope_info_enabled(false)
                .build()
                .map_err(|e| Error::Prometheus(e.to_string()))?;
            builder = builder.with_reader(exporter);
            Some(registry)
        } else {
            None
        };
        if let Some(endpoint) = &setup.otlp_endpoint {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|e| Error::Otlp {
                    endpoint: endpoint.clone(),
                    reason: e.to_string(),
                })?;
            let reader = PeriodicReader::builder(exporter)
                .with_interval(setup.otlp_interval)
                .build();
            builder = builder.with_reader(reader);
        }
        Ok(Metrics {
            inner: Some(Arc::new(Inner {
                provider: builder.build(),
                registry,
            })),
        })
    }

    /// Whether anything records.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The meter every Comet instrument is created from.
    pub fn meter(&self) -> Meter {
        match &self.inner {
            Some(inner) => inner.provider.meter(SCOPE),
            None => opentelemetry::metrics::noop::NoopMeterProvider::new().meter(SCOPE),
        }
    }

    /// The current values as Prometheus text (empty when Prometheus is off).
    ///
    /// # Errors
    /// [`Error::Prometheus`] when encoding fails.
    pub fn prometheus_text(&self) -> Result<String> {
        let Some(registry) = self.inner.as_ref().and_then(|i| i.registry.as_ref()) else {
            return Ok(String::new());
        };
        prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .map_err(|e| Error::Prometheus(e.to_string()))
    }

    /// The series of the histogram `name` as the Prometheus registry holds them now (empty
    /// when Prometheus is off or nothing was recorded), for in-process readers such as the
    /// proxy's report to the console.
    pub fn histogram(&self, name: &str) -> Vec<HistogramSeries> {
        let Some(registry) = self.inner.as_ref().and_then(|i| i.registry.as_ref()) else {
            return Vec::new();
        };
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter())
            .map(|m| {
                let h = m.get_histogram();
                HistogramSeries {
                    labels: m
                        .get_label()
                        .iter()
                        .map(|l| (l.name().to_owned(), l.value().to_owned()))
                        .collect(),
                    buckets: h
                        .get_bucket()
                        .iter()
                        .filter(|b| b.upper_bound().is_finite())
                        .map(|b| (b.upper_bound(), b.cumulative_count()))
                        .collect(),
                    count: h.get_sample_count(),
                    sum: h.get_sample_sum(),
                }
            })
            .collect()
    }

    /// Pushes what is pending over OTLP now (tests; shutdown).
    pub fn flush(&self) {
        if let Some(inner) = &self.inner
            && let Err(e) = inner.provider.force_flush()
        {
            tracing::warn!(error = %e, "metrics flush failed");
        }
    }

    /// Stops the exporters after a last push.
    pub fn shutdown(&self) {
        if let Some(inner) = &self.inner
            && let Err(e) = inner.provider.shutdown()
        {
            tracing::debug!(error = %e, "metrics shutdown");
        }
    }
}

/// One labelled series of a histogram, cumulative since the process started.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSeries {
    /// Its labels, (name, value).
    pub labels: Vec<(String, String)>,
    /// (upper bound, observations at most that), ascending; the +Inf bucket is `count`.
    pub buckets: Vec<(f64, u64)>,
    /// Observations.
    pub count: u64,
    /// Sum of the observations.
    pub sum: f64,
}

impl HistogramSeries {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a role records with: a meter, the labels of every series it emits, and the node's
/// readiness. The default records nothing and reports into a private registry.
#[derive(Clone, Debug, Default)]
pub struct Observer {
    metrics: Metrics,
    labels: Arc<[KeyValue]>,
    readiness: Readiness,
}

impl Observer {
    /// An observer over `metrics` and `readiness`, with no labels yet.
    pub fn new(metrics: Metrics, readiness: Readiness) -> Self {
        Observer {
            metrics,
            labels: Arc::from(Vec::new()),
            readiness,
        }
    }

    /// The same pipeline for one role: RocketMQ's `cluster`, `node_type` (`proxy`, `broker`,
    /// `controller`) and `node_id` labels on every series.
    pub fn for_role(&self, cluster: &str, node_type: &'static str, node_id: &str) -> Observer {
        Observer {
            metrics: self.metrics.clone(),
            labels: Arc::from(vec![
                KeyValue::new("cluster", cluster.to_owned()),
                KeyValue::new("node_type", node_type),
                KeyValue::new("node_id", node_id.to_owned()),
            ]),
            readiness: self.readiness.clone(),
        }
    }

    /// Whether anything records.
    pub fn is_enabled(&self) -> bool {
        self.metrics.is_enabled()
    }

    /// The meter to create instruments from.
    pub fn meter(&self) -> Meter {
        self.metrics.meter()
    }

    /// The role's labels followed by `extra`.
    pub fn labels(&self, extra: &[KeyValue]) -> Vec<KeyValue> {
        let mut all = Vec::with_capacity(self.labels.len() + extra.len());
        all.extend(self.labels.iter().cloned());
        all.extend(extra.iter().cloned());
        all
    }

    /// The node's readiness registry.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// The pipeline.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_counter_when_rendered_should_show_its_name_labels_and_value() {
        let metrics = Metrics::start(&MetricsSetup::default()).expect("pipeline");
        let obs =
            Observer::new(metrics.clone(), Readiness::default()).for_role("c1", "proxy", "p1");
        let counter = obs
            .meter()
            .u64_counter("rocketmq_messages_in_total")
            .build();
        counter.add(3, &obs.labels(&[KeyValue::new("topic", "t")]));
        let text = metrics.prometheus_text().expect("text");
        assert!(
            text.contains(
                r#"rocketmq_messages_in_total{cluster="c1",node_id="p1",node_type="proxy",topic="t"} 3"#
            ),
            "{text}"
        );
    }

    #[test]
    fn given_a_histogram_when_read_back_should_give_cumulative_buckets_per_series() {
        let metrics = Metrics::start(&MetricsSetup::default()).expect("pipeline");
        let h = metrics
            .meter()
            .f64_histogram("test_latency")
            .with_boundaries(vec![1.0, 10.0])
            .build();
        let labels = [KeyValue::new("rpc", "send")];
        for v in [0.5, 5.0, 50.0] {
            h.record(v, &labels);
        }
        let series = metrics.histogram("test_latency");
        assert_eq!(series.len(), 1, "{series:?}");
        assert_eq!(series[0].label("rpc"), Some("send"));
        assert_eq!(series[0].buckets, vec![(1.0, 1), (10.0, 2)]);
        assert_eq!(series[0].count, 3);
        assert!((series[0].sum - 55.5).abs() < 1e-9);
        assert!(Metrics::disabled().histogram("test_latency").is_empty());
    }

    #[test]
    fn given_metrics_off_should_render_nothing() {
        let metrics = Metrics::disabled();
        metrics.meter().u64_counter("x_total").build().add(1, &[]);
        assert_eq!(metrics.prometheus_text().expect("text"), "");
    }
}
