//! [`Proxy`]: the gRPC routes (MessagingService, reflection, health) and the serve loop with
//! graceful shutdown.

use std::future::Future;
use std::sync::Arc;

use comet_proto::apache::rocketmq::v2::messaging_service_server::MessagingServiceServer;
use comet_proto::comet::v1::ClusterMetadata;
use tokio::sync::watch;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::brokers::BrokerDirectory;
use crate::config::{MAX_OUTBOUND_FRAME_BYTES, ProxyConfig};
use crate::creator::TopicCreator;
use crate::error::ProxyError;
use crate::service::{Inner, Service};
use crate::session::ClientInfo;

/// gRPC name of the public service, as reported by health checks.
pub const MESSAGING_SERVICE_NAME: &str = <MessagingServiceServer<Service> as NamedService>::NAME;

/// The Comet proxy: the public `apache.rocketmq.v2.MessagingService` over the internal
/// BrokerService, plus gRPC reflection (v1 and v1alpha) and `grpc.health.v1`.
///
/// A proxy serves once: after [`Proxy::serve`] returned, its long polls and telemetry streams
/// stay cancelled.
pub struct Proxy {
    inner: Arc<Inner>,
    health: HealthReporter,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("advertised_endpoint", &self.inner.cfg.advertised_endpoint)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Builds a proxy over a metadata watch and a broker directory. `creator` is used for
    /// topic auto-creation when `cfg.auto_create_topics` is on.
    ///
    /// The configuration is checked by [`Proxy::serve`] (and by [`ProxyConfig::validate`]); a
    /// proxy whose advertised endpoint is invalid answers routes with INTERNAL_SERVER_ERROR.
    pub fn new(
        cfg: ProxyConfig,
        metadata: watch::Receiver<Arc<ClusterMetadata>>,
        brokers: Arc<dyn BrokerDirectory>,
        creator: Option<Arc<dyn TopicCreator>>,
    ) -> Proxy {
        let health = HealthReporter::new();
        // The reporter's lock is uncontended here (nothing else holds the reporter yet), so
        // this completes at once on any executor.
        futures::executor::block_on(
            health.set_service_status(MESSAGING_SERVICE_NAME, ServingStatus::Serving),
        );
        Proxy {
            inner: Arc::new(Inner::new(cfg, metadata, brokers, creator)),
            health,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &ProxyConfig {
        &self.inner.cfg
    }

    /// Clients currently known by id (heartbeat, settings or open telemetry streams).
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.inner.sessions.snapshot()
    }

    /// MessagingService (inbound messages up to `max_inbound_message_bytes`, outbound frames
    /// at most 4 MiB), gRPC server reflection v1 and v1alpha, and `grpc.health.v1`.
    pub fn routes(&self) -> Routes {
        let messaging = MessagingServiceServer::new(Service(self.inner.clone()))
            .max_decoding_message_size(self.inner.cfg.max_inbound_message_bytes)
            .max_encoding_message_size(MAX_OUTBOUND_FRAME_BYTES);
        let health = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(self.health.clone()),
        );
        let mut routes = Routes::new(messaging).add_service(health);
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(comet_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        match reflection().build_v1() {
            Ok(svc) => routes = routes.add_service(svc),
            Err(e) => tracing::error!(error = %e, "gRPC reflection v1 unavailable"),
        }
        match reflection().build_v1alpha() {
            Ok(svc) => routes = routes.add_service(svc),
            Err(e) => tracing::error!(error = %e, "gRPC reflection v1alpha unavailable"),
        }
        routes
    }

    /// Serves on a bound listener until `shutdown` resolves. Then health turns NOT_SERVING,
    /// the server stops accepting, pending long polls end with MESSAGE_NOT_FOUND, telemetry
    /// streams close, and in-flight unary calls finish.
    ///
    /// # Errors
    /// [`ProxyError::InvalidConfig`] before serving; [`ProxyError::Transport`] when the server
    /// fails; [`ProxyError::DrainTimedOut`] when telemetry tasks outlive `shutdown_grace`.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ProxyError> {
        self.inner.cfg.validate()?;
        let local = listener.local_addr().ok();
        tracing::info!(
            local = ?local,
            advertised = %self.inner.cfg.advertised_endpoint,
            "proxy serving"
        );
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        // Transaction checks from every broker set, forwarded to producers connected here.
        self.inner
            .tasks
            .spawn(Arc::clone(&self.inner).watch_transaction_checks());
        let inner = self.inner.clone();
        let health = self.health.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!("proxy shutting down");
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            health
                .set_service_status(MESSAGING_SERVICE_NAME, ServingStatus::NotServing)
                .await;
            inner.shutdown.cancel();
        };
        let served = Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
            .add_routes(self.routes())
            .serve_with_incoming_shutdown(incoming, signal)
            .await;
        // Whatever ended the server, nothing may keep waiting on this proxy.
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        let grace = self.inner.cfg.shutdown_grace;
        let drained = tokio::time::timeout(grace, self.inner.tasks.wait()).await;
        served?;
        if drained.is_err() {
            return Err(ProxyError::DrainTimedOut {
                remaining: self.inner.tasks.len(),
                grace,
            });
        }
        tracing::info!("proxy shutdown complete");
        Ok(())
    }
}
