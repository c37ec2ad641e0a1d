//! The connection machinery every client shares.
//!
//! A [`Session`] owns, per endpoint: a [`Link`] for unary calls (made in the calling task, see
//! [`crate::transport`]) and a lazily connected tonic channel for the streaming calls; the
//! `x-mq-*` headers and HMAC-SHA1 signature put on every request ([`crate::headers`]); the
//! registry of telemetry streams, one per
//! endpoint in use (the streams themselves run in [`crate::telemetry`]), with the settings-echo
//! and open-failure counters that starting waits on; the heartbeat loop; the route table
//! ([`crate::route_table`], filled by [`crate::route`]); and failover between the configured
//! access points. What differs between producers and consumers (settings, heartbeat, commands)
//! comes from the client's [`Role`]. Starting a session is [`crate::connect`]'s job; see
//! [`grpc_error`] for how a TLS failure becomes [`Error::Tls`].
//!
//! Layering: the session names only the modules below it (config, error, endpoints,
//! route_table, headers, rpc, transport); telemetry, route and connect are built on it and start its streams and loops.
//!
//! Lifetime: background tasks run under the session's cancellation token and task tracker;
//! [`Session::shutdown`] notifies the server, cancels them and waits for them. The user-facing
//! handles cancel the token when their last clone drops, so nothing outlives the client.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use comet_proto::apache::rocketmq::v2 as pb;
use parking_lot::Mutex;
use pb::messaging_service_client::MessagingServiceClient;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::metadata::MetadataMap;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::config::{ClientConfig, Tls};
use crate::endpoints::{Endpoints, host_port};
use crate::error::{Error, Result};
use crate::headers::RequestHeaders;
use crate::route_table::RouteCache;
use crate::rpc::Rpc;
use crate::transport::{self, Dialer, Failure, Link};

/// Heartbeats go to every endpoint in use this often.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// What a kind of client contributes to the shared machinery.
pub(crate) trait Role: Send + Sync + 'static {
    /// The settings to sync on a telemetry stream to `endpoint` (the access point field set to
    /// the configured access point).
    fn settings(&self, access_point: &pb::Endpoints) -> pb::Settings;
    /// Applies the server's settings echo.
    fn apply(&self, echo: &pb::Settings);
    /// The heartbeat this client sends.
    fn heartbeat(&self) -> pb::HeartbeatRequest;
    /// The `NotifyClientTermination` this client sends on shutdown.
    fn termination(&self) -> pb::NotifyClientTerminationRequest;
    /// A server command other than settings arrived on `endpoint`'s telemetry stream.
    /// `reply` writes on that stream.
    fn on_command(
        &self,
        session: &Session,
        endpoint: &Endpoints,
        command: pb::telemetry_command::Command,
        reply: &mpsc::Sender<pb::TelemetryCommand>,
    );
}

/// The shared connection machinery of one client (cheap to clone).
#[derive(Clone)]
pub(crate) struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    client_id: String,
    headers: RequestHeaders,
    /// `headers`' base with the gRPC headers of a unary call.
    unary_headers: http::HeaderMap,
    dialer: Dialer,
    /// Per endpoint: the connection for unary calls.
    links: Mutex<HashMap<String, Arc<Link>>>,
    /// Per endpoint: the channel for streaming calls.
    channels: Mutex<HashMap<String, Channel>>,
    /// Index into `config.access_points` of the one currently preferred.
    access_index: AtomicUsize,
    role: Arc<dyn Role>,
    /// Per endpoint in use: the writer of its telemetry stream (replaced on reconnect).
    telemetry: Mutex<HashMap<String, TelemetryLink>>,
    /// Bumped on every settings echo.
    synced: watch::Sender<u64>,
    /// Counts telemetry streams that failed to open, with the latest failure.
    open_failures: watch::Sender<(u64, Option<OpenFailure>)>,
    token: CancellationToken,
    tasks: TaskTracker,
    routes: RouteCache,
}

/// Why a telemetry stream to an endpoint could not be opened.
#[derive(Debug, Clone)]
struct OpenFailure {
    endpoint: String,
    error: Error,
}

/// One endpoint's telemetry stream as the session sees it.
#[derive(Clone)]
pub(crate) struct TelemetryLink {
    pub(crate) endpoints: Endpoints,
    /// Writes on the current stream; `None` while reconnecting.
    pub(crate) writer: Option<mpsc::Sender<pb::TelemetryCommand>>,
}

impl Session {
    /// Builds a session (no I/O yet).
    pub(crate) fn new(config: ClientConfig, role: Arc<dyn Role>) -> Result<Session> {
        config.validate()?;
        let client_id = new_client_id();
        let headers = RequestHeaders::new(&client_id, &config)?;
        let unary_headers = transport::unary_headers(headers.base(), config.request_timeout);
        let token = CancellationToken::new();
        let tasks = TaskTracker::new();
        let dialer = Dialer::new(
            config.tls.as_ref(),
            config.request_timeout,
            token.clone(),
            tasks.clone(),
        )
        .map_err(|reason| Error::Config {
            setting: "tls",
            reason,
        })?;
        Ok(Session {
            inner: Arc::new(Inner {
                config,
                client_id,
                headers,
                unary_headers,
                dialer,
                links: Mutex::new(HashMap::new()),
                channels: Mutex::new(HashMap::new()),
                access_index: AtomicUsize::new(0),
                role,
                telemetry: Mutex::new(HashMap::new()),
                synced: watch::Sender::new(0),
                open_failures: watch::Sender::new((0, None)),
                token,
                tasks,
                routes: RouteCache::default(),
            }),
        })
    }

    /// Waits for a settings echo newer than `seen`. With `failures_seen`, a failure to open
    /// `endpoint`'s telemetry stream after that count ends the wait at once with its error
    /// (an unreachable server or an untrusted certificate is reported as itself, not as a
    /// timeout).
    pub(crate) async fn wait_synced(
        &self,
        seen: u64,
        failures_seen: Option<u64>,
        endpoint: &Endpoints,
    ) -> Result<()> {
        let mut synced = self.inner.synced.subscribe();
        let mut failures = self.inner.open_failures.subscribe();
        let echoed = async {
            synced
                .wait_for(|n| *n > seen)
                .await
                .map(|_| ())
                .map_err(|_| Error::Shutdown)
        };
        let failed = async {
            let Some(after) = failures_seen else {
                return std::future::pending().await;
            };
            let failure = failures
                .wait_for(|(n, f)| {
                    *n > after && f.as_ref().is_some_and(|f| f.endpoint == endpoint.key)
                })
                .await
                .ok()
                .and_then(|v| v.1.clone());
            match failure {
                Some(f) => Err(f.error),
                // The session is gone (cannot happen while `self` lives): wait for the echo.
                None => std::future::pending().await,
            }
        };
        let wait = async {
            tokio::select! {
                r = echoed => r,
                r = failed => r,
            }
        };
        match tokio::time::timeout(self.inner.config.request_timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                rpc: "Telemetry (settings sync)",
                endpoint: endpoint.key.clone(),
                after: self.inner.config.request_timeout,
            }),
        }
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub(crate) fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    pub(crate) fn routes(&self) -> &RouteCache {
        &self.inner.routes
    }

    pub(crate) fn token(&self) -> &CancellationToken {
        &self.inner.token
    }

    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }

    pub(crate) fn role(&self) -> &Arc<dyn Role> {
        &self.inner.role
    }

    /// A resource in the client's namespace.
    pub(crate) fn resource(&self, name: &str) -> pb::Resource {
        pb::Resource {
            resource_namespace: self.inner.config.namespace.clone(),
            name: name.to_owned(),
        }
    }

    /// The configured access point at `index`.
    pub(crate) fn access_point_at(&self, index: usize) -> Endpoints {
        Endpoints::from_access_point(&self.inner.config.access_points[index])
    }

    /// The access point currently preferred.
    pub(crate) fn access_point(&self) -> Endpoints {
        let n = self.inner.config.access_points.len();
        self.access_point_at(self.inner.access_index.load(Ordering::Relaxed) % n)
    }

    /// The index into the configured access points of the preferred one (take it modulo
    /// their count).
    pub(crate) fn preferred_index(&self) -> usize {
        self.inner.access_index.load(Ordering::Relaxed)
    }

    /// Makes the access point at `index` the preferred one.
    pub(crate) fn prefer(&self, index: usize) {
        self.inner.access_index.store(index, Ordering::Relaxed);
    }

    /// What [`Session::wait_synced`] waits beyond: the settings echoes so far and the
    /// telemetry streams that failed to open so far.
    pub(crate) fn sync_marks(&self) -> (u64, u64) {
        (
            *self.inner.synced.borrow(),
            self.inner.open_failures.borrow().0,
        )
    }

    /// Calls `f` on the access points in order, starting with the preferred one and moving on
    /// when one is unreachable; the first that answers becomes the preferred one.
    pub(crate) async fn on_access_point<T, F, Fut>(&self, mut f: F) -> Result<T>
    where
        F: FnMut(Endpoints) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let n = self.inner.config.access_points.len();
        let start = self.inner.access_index.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let index = (start + i) % n;
            match f(self.access_point_at(index)).await {
                Err(e) if e.is_transport() => {
                    tracing::debug!(endpoint = %self.inner.config.access_points[index], error = %e, "access point failed, trying the next");
                    last = Some(e);
                }
                other => {
                    if i > 0 {
                        self.inner.access_index.store(index, Ordering::Relaxed);
                    }
                    return other;
                }
            }
        }
        Err(last.unwrap_or(Error::Shutdown))
    }

    /// The channel to `endpoints` (connected lazily, cached).
    pub(crate) fn channel(&self, endpoints: &Endpoints) -> Result<Channel> {
        if let Some(c) = self.inner.channels.lock().get(&endpoints.key) {
            return Ok(c.clone());
        }
        let mut built = Vec::new();
        for a in &endpoints.proto.addresses {
            built.push(self.endpoint(&host_port(&a.host, a.port))?);
        }
        let channel = match built.len() {
            0 => {
                return Err(Error::Protocol {
                    rpc: "QueryRoute",
                    what: "an endpoint without addresses".into(),
                });
            }
            1 => built.remove(0).connect_lazy(),
            _ => Channel::balance_list(built.into_iter()),
        };
        Ok(self
            .inner
            .channels
            .lock()
            .entry(endpoints.key.clone())
            .or_insert(channel)
            .clone())
    }

    fn endpoint(&self, address: &str) -> Result<tonic::transport::Endpoint> {
        let cfg = &self.inner.config;
        let scheme = if cfg.tls.is_some() { "https" } else { "http" };
        let bad = |e: tonic::transport::Error| Error::Config {
            setting: "endpoints",
            reason: format!("{address}: {e}"),
        };
        let mut ep = tonic::transport::Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(bad)?
            .connect_timeout(cfg.request_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if let Some(tls) = &cfg.tls {
            let tls = match tls {
                Tls::SystemRoots => ClientTlsConfig::new().with_native_roots(),
                Tls::Ca { pem, domain } => {
                    let mut t = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
                    if let Some(d) = domain {
                        t = t.domain_name(d.clone());
                    }
                    t
                }
            };
            ep = ep.tls_config(tls).map_err(bad)?;
        }
        Ok(ep)
    }

    /// A streaming request carrying the `x-mq-*` headers, the signature and `timeout`.
    pub(crate) fn request<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        let mut headers = self.inner.headers.base().clone();
        self.inner.headers.stamp(&mut headers, SystemTime::now());
        let mut r = tonic::Request::new(message);
        *r.metadata_mut() = MetadataMap::from_headers(headers);
        r.set_timeout(timeout);
        r
    }

    /// A client for `endpoints`' streaming calls.
    pub(crate) fn client(&self, endpoints: &Endpoints) -> Result<MessagingServiceClient<Channel>> {
        Ok(MessagingServiceClient::new(self.channel(endpoints)?)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    /// The link for `endpoints`' unary calls (created on first use, cached).
    fn link(&self, endpoints: &Endpoints) -> Result<Arc<Link>> {
        if let Some(l) = self.inner.links.lock().get(&endpoints.key) {
            return Ok(l.clone());
        }
        let addresses: Vec<(&str, i32)> = endpoints
            .proto
            .addresses
            .iter()
            .map(|a| (a.host.as_str(), a.port))
            .collect();
        let link =
            Link::new(&addresses, self.inner.dialer.clone()).map_err(|reason| Error::Config {
                setting: "endpoints",
                reason,
            })?;
        Ok(self
            .inner
            .links
            .lock()
            .entry(endpoints.key.clone())
            .or_insert_with(|| Arc::new(link))
            .clone())
    }

    /// Runs one unary RPC to `endpoints` within the request timeout, mapping transport
    /// failures.
    pub(crate) async fn unary<Req, Resp>(
        &self,
        rpc: Rpc<Req, Resp>,
        endpoints: &Endpoints,
        message: &Req,
    ) -> Result<Resp>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let timeout = self.inner.config.request_timeout;
        let link = self.link(endpoints)?;
        let mut headers = self.inner.unary_headers.clone();
        self.inner.headers.stamp(&mut headers, SystemTime::now());
        // A margin over the gRPC deadline so the server's own deadline error wins the race.
        let call = link.call(rpc.path, headers, message);
        match tokio::time::timeout(timeout + Duration::from_millis(500), call).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(Failure::Status(status))) => Err(grpc_error(rpc.name, &endpoints.key, status)),
            Ok(Err(Failure::Tls(reason))) => Err(Error::Tls {
                rpc: rpc.name,
                endpoint: endpoints.key.clone(),
                reason,
            }),
            Err(_) => Err(Error::Timeout {
                rpc: rpc.name,
                endpoint: endpoints.key.clone(),
                after: timeout,
            }),
        }
    }

    /// Registers `endpoints` as wanting a telemetry stream; true when it had none, so the
    /// caller starts one ([`crate::telemetry::ensure`]).
    pub(crate) fn claim_telemetry(&self, endpoints: &Endpoints) -> bool {
        let mut map = self.inner.telemetry.lock();
        if map.contains_key(&endpoints.key) {
            return false;
        }
        map.insert(
            endpoints.key.clone(),
            TelemetryLink {
                endpoints: endpoints.clone(),
                writer: None,
            },
        );
        true
    }

    /// Forgets `key`'s telemetry stream (its task ends when it next looks).
    pub(crate) fn drop_telemetry(&self, key: &str) {
        self.inner.telemetry.lock().remove(key);
    }

    /// Whether `key` still wants a telemetry stream.
    pub(crate) fn wants_telemetry(&self, key: &str) -> bool {
        self.inner.telemetry.lock().contains_key(key)
    }

    pub(crate) fn set_telemetry_writer(
        &self,
        key: &str,
        writer: Option<mpsc::Sender<pb::TelemetryCommand>>,
    ) {
        if let Some(link) = self.inner.telemetry.lock().get_mut(key) {
            link.writer = writer;
        }
    }

    /// Records that `endpoint`'s telemetry stream could not be opened.
    pub(crate) fn telemetry_open_failed(&self, endpoint: &str, error: Error) {
        self.inner.open_failures.send_modify(|(n, last)| {
            *n += 1;
            *last = Some(OpenFailure {
                endpoint: endpoint.to_owned(),
                error,
            });
        });
    }

    /// Records a settings echo from the server.
    pub(crate) fn settings_synced(&self, echo: &pb::Settings) {
        self.inner.role.apply(echo);
        self.inner.synced.send_modify(|n| *n += 1);
    }

    /// Sends the current settings on every telemetry stream (after a local change such as a
    /// new subscription) and waits for an echo.
    pub(crate) async fn resync(&self) -> Result<()> {
        let access = self.access_point();
        let settings = self.inner.role.settings(&access.proto);
        let seen = *self.inner.synced.borrow();
        let links: Vec<TelemetryLink> = self.inner.telemetry.lock().values().cloned().collect();
        let mut sent = false;
        for link in links {
            if let Some(w) = link.writer {
                let cmd = pb::TelemetryCommand {
                    status: None,
                    command: Some(pb::telemetry_command::Command::Settings(settings.clone())),
                };
                sent |= w.send(cmd).await.is_ok();
            }
        }
        if !sent {
            return Ok(());
        }
        self.wait_synced(seen, None, &access).await
    }

    /// All endpoints with a telemetry stream (the endpoints in use).
    pub(crate) fn endpoints_in_use(&self) -> Vec<Endpoints> {
        self.inner
            .telemetry
            .lock()
            .values()
            .map(|l| l.endpoints.clone())
            .collect()
    }

    /// Heartbeats every endpoint in use every 10 s until the session stops.
    pub(crate) async fn heartbeat_loop(self) {
        let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.inner.token.cancelled() => return,
                _ = tick.tick() => {}
            }
            for ep in self.endpoints_in_use() {
                let hb = self.inner.role.heartbeat();
                let r = self
                    .unary(crate::rpc::HEARTBEAT, &ep, &hb)
                    .await
                    .and_then(|r| check("Heartbeat", r.status.as_ref()));
                if let Err(e) = r {
                    tracing::debug!(endpoint = %ep.key, error = %e, "heartbeat failed");
                }
            }
        }
    }

    /// Notifies the server of the client's termination, stops every background task and waits
    /// for them.
    pub(crate) async fn shutdown(&self) {
        if self.inner.token.is_cancelled() {
            self.inner.tasks.close();
            self.inner.tasks.wait().await;
            return;
        }
        for ep in self.endpoints_in_use() {
            let req = self.inner.role.termination();
            let r = self
                .unary(crate::rpc::NOTIFY_CLIENT_TERMINATION, &ep, &req)
                .await
                .and_then(|r| check("NotifyClientTermination", r.status.as_ref()));
            if let Err(e) = r {
                tracing::debug!(endpoint = %ep.key, error = %e, "termination notice failed");
            }
        }
        self.inner.token.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

/// Maps a gRPC-level failure: `UNIMPLEMENTED` is [`Error::Unsupported`], a failed TLS
/// handshake [`Error::Tls`], anything else [`Error::Transport`].
pub(crate) fn grpc_error(rpc: &'static str, endpoint: &str, status: tonic::Status) -> Error {
    if status.code() == tonic::Code::Unimplemented {
        return Error::Unsupported {
            rpc,
            message: status.message().to_owned(),
        };
    }
    if let Some(reason) = tls_failure(&status) {
        return Error::Tls {
            rpc,
            endpoint: endpoint.to_owned(),
            reason,
        };
    }
    Error::Transport {
        rpc,
        endpoint: endpoint.to_owned(),
        status: Box::new(status),
    }
}

/// The rustls error behind a failed call, if a TLS handshake is what failed. tokio-rustls
/// reports it as an `io::Error` wrapping the rustls error, somewhere down the status's source
/// chain (`io::Error::source` skips the wrapped error, hence `get_ref`).
fn tls_failure(status: &tonic::Status) -> Option<String> {
    use std::error::Error as _;
    let mut next = status.source();
    // The chain is a few links long; the bound only guards against a cyclic one.
    for _ in 0..16 {
        let e = next?;
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        if let Some(t) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(t.to_string());
        }
        next = e.source();
    }
    None
}

/// Checks an in-body status: OK and MULTIPLE_RESULTS pass; a missing status is a protocol
/// error; NOT_IMPLEMENTED and UNSUPPORTED are [`Error::Unsupported`].
pub(crate) fn check(rpc: &'static str, status: Option<&pb::Status>) -> Result<()> {
    let Some(s) = status else {
        return Err(Error::Protocol {
            rpc,
            what: "no status".into(),
        });
    };
    let code = s.code;
    if code == pb::Code::Ok as i32 || code == pb::Code::MultipleResults as i32 {
        return Ok(());
    }
    if code == pb::Code::NotImplemented as i32 || code == pb::Code::Unsupported as i32 {
        return Err(Error::Unsupported {
            rpc,
            message: s.message.clone(),
        });
    }
    Err(Error::Server {
        rpc,
        code,
        message: s.message.clone(),
    })
}

/// `<hostname>@<pid>@<index>@<time base36>`, as the official clients build it.
fn new_client_id() -> String {
    static INDEX: AtomicUsize = AtomicUsize::new(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty() && h.is_ascii())
        .unwrap_or_else(|| "localhost".to_owned());
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{host}@{}@{}@{}",
        std::process::id(),
        INDEX.fetch_add(1, Ordering::Relaxed),
        base36(nanos)
    )
}

fn base36(mut n: u128) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("base36 digits are ASCII")
}

/// A protobuf duration from a std one.
pub(crate) fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A std duration from a protobuf one (negative or malformed reads as zero).
pub(crate) fn std_duration(d: &prost_types::Duration) -> Duration {
    if d.seconds < 0 || d.nanos < 0 {
        return Duration::ZERO;
    }
    Duration::new(d.seconds.unsigned_abs(), d.nanos.unsigned_abs()) // nanos < 1e9 by contract
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_statuses_when_checked_should_classify_them() {
        let ok = pb::Status {
            code: pb::Code::Ok as i32,
            message: String::new(),
        };
        assert!(check("X", Some(&ok)).is_ok());
        assert!(matches!(check("X", None), Err(Error::Protocol { .. })));
        let ni = pb::Status {
            code: pb::Code::NotImplemented as i32,
            message: "no".into(),
        };
        assert!(matches!(
            check("RecallMessage", Some(&ni)),
            Err(Error::Unsupported { .. })
        ));
        let nf = pb::Status {
            code: pb::Code::TopicNotFound as i32,
            message: "gone".into(),
        };
        assert!(matches!(
            check("SendMessage", Some(&nf)),
            Err(Error::Server { code: 40402, .. })
        ));
    }

    #[test]
    fn given_client_ids_when_generated_should_be_unique_and_ascii() {
        let a = new_client_id();
        let b = new_client_id();
        assert_ne!(a, b);
        assert!(a.is_ascii());
        assert_eq!(a.split('@').count(), 4);
    }
}
