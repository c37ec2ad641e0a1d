//! Talking to the proxy the way an official RocketMQ 5 client does.
//!
//! - [`connect`]: the shared HTTP/2 connections (see `transport`).
//! - [`Headers`]: the metadata every call carries (`x-mq-client-id`, `x-mq-language`,
//!   `x-mq-protocol-version`, `x-mq-client-version`, `x-mq-date-time`).
//! - [`query_route`]: the topic's queues, with an actionable error when the topic is missing.
//! - [`Session`]: one bench client's telemetry stream (settings sent first, echo awaited),
//!   its heartbeats, and its orderly end (NotifyClientTermination, then half-close).

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use comet_proto::apache::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use comet_proto::apache::rocketmq::v2::{
    ClientType, Code, HeartbeatRequest, MessageQueue, MessageType, NotifyClientTerminationRequest,
    Permission, QueryRouteRequest, Resource, Settings, Status, TelemetryCommand, telemetry_command,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;

use super::transport::{self, Conn};
use crate::stats::code_key;
use crate::target::{Credentials, Target};

/// Deadline of every unary call (the official clients use 3 s), and of the telemetry open.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Largest response frame accepted (a 4 MiB body plus its properties, with room to spare).
const MAX_DECODING_MESSAGE_SIZE: usize = 16 << 20;

/// The official clients heartbeat every 30 s.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// How long closing a session waits for the server to end its telemetry stream.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Version reported in `x-mq-client-version` and in the settings' user agent.
pub(crate) const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A client of the generated API with the bench headers on every call.
pub(crate) type Client = MessagingServiceClient<InterceptedService<Conn, Headers>>;

/// Opens `count` HTTP/2 connections to the target, all at once.
pub(crate) async fn connect(target: &Target, count: usize) -> anyhow::Result<Vec<Conn>> {
    let connects = (0..count.max(1)).map(|_| transport::open(&target.authority, REQUEST_TIMEOUT));
    futures::future::try_join_all(connects)
        .await
        .with_context(|| {
            format!(
                "cannot connect to {}: is a RocketMQ 5 gRPC proxy listening there?",
                target.authority
            )
        })
}

/// The headers of one bench client. Cloned into every call of that client.
#[derive(Debug, Clone)]
pub(crate) struct Headers {
    /// The headers that never change: client id, language, protocol and client version.
    fixed: http::HeaderMap,
    /// Signs every call when set.
    credentials: Option<Credentials>,
}

impl Headers {
    /// Headers for the client `client_id` (must be visible ASCII; see [`client_id`]), its calls
    /// signed with `credentials` when given.
    pub(crate) fn new(client_id: &str, credentials: Option<&Credentials>) -> anyhow::Result<Self> {
        let client_id = http::HeaderValue::try_from(client_id)
            .with_context(|| format!("client id {client_id:?} is not a valid header value"))?;
        let mut fixed = http::HeaderMap::with_capacity(4);
        fixed.insert("x-mq-client-id", client_id);
        fixed.insert("x-mq-language", http::HeaderValue::from_static("RUST"));
        fixed.insert(
            "x-mq-protocol-version",
            http::HeaderValue::from_static("2.0.0"),
        );
        fixed.insert(
            "x-mq-client-version",
            http::HeaderValue::from_static(CLIENT_VERSION),
        );
        Ok(Headers {
            fixed,
            credentials: credentials.cloned(),
        })
    }

    /// The headers of a call made now beside the fixed ones: the date, and with credentials
    /// the signature.
    pub(crate) fn per_call(&self) -> Vec<(http::HeaderName, http::HeaderValue)> {
        match &self.credentials {
            Some(c) => c.headers(std::time::SystemTime::now()).to_vec(),
            None => vec![Headers::date_time()],
        }
    }

    /// The headers every call of this client carries unchanged.
    pub(crate) fn fixed(&self) -> &http::HeaderMap {
        &self.fixed
    }

    /// The `x-mq-date-time` header of a call made now.
    pub(crate) fn date_time() -> (http::HeaderName, http::HeaderValue) {
        let date = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
        let value = http::HeaderValue::try_from(date)
            .unwrap_or_else(|_| http::HeaderValue::from_static("1970-01-01T00:00:00Z"));
        (http::HeaderName::from_static("x-mq-date-time"), value)
    }
}

impl Interceptor for Headers {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let md = request.metadata_mut();
        let mut headers = std::mem::take(md).into_headers();
        headers.extend(self.fixed.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (name, value) in self.per_call() {
            headers.insert(name, value);
        }
        *md = tonic::metadata::MetadataMap::from_headers(headers);
        Ok(request)
    }
}

/// A client over `channel` identified as `client_id`.
pub(crate) fn client(target: &Target, conn: Conn, client_id: &str) -> anyhow::Result<Client> {
    let origin: http::Uri = target
        .uri
        .parse()
        .with_context(|| format!("--endpoint {:?} is not a valid URI", target.authority))?;
    Ok(MessagingServiceClient::with_origin(
        InterceptedService::new(conn, Headers::new(client_id, target.credentials.as_ref())?),
        origin,
    )
    .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE))
}

/// This machine's host name, reduced to characters that are safe in a header value.
pub(crate) fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .collect();
    if clean.is_empty() {
        "localhost".to_owned()
    } else {
        clean
    }
}

/// The client id of bench client `index` of run `run`: `<host>@<pid>#bench-<run>-<index>`,
/// the shape of the official Rust client's ids, unique per client, process and run.
pub(crate) fn client_id(host: &str, run: u64, index: &str) -> String {
    format!(
        "{host}@{pid}#bench-{run:016x}-{index}",
        pid = std::process::id()
    )
}

/// A `Resource` in the default namespace.
pub(crate) fn resource(name: &str) -> Resource {
    Resource {
        resource_namespace: String::new(),
        name: name.to_owned(),
    }
}

/// A protobuf duration.
pub(crate) fn pb_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf timestamp for `t`.
pub(crate) fn pb_timestamp(t: std::time::SystemTime) -> prost_types::Timestamp {
    let since = t
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    prost_types::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

/// `Ok` for a present status with code OK, otherwise `(code key, message)`.
pub(crate) fn check_status(status: Option<&Status>) -> Result<(), (String, String)> {
    match status {
        None => Err((
            "MISSING_STATUS".to_owned(),
            "the response carries no status".to_owned(),
        )),
        Some(s) if s.code == Code::Ok as i32 => Ok(()),
        Some(s) => Err((code_key(s.code), s.message.clone())),
    }
}

/// The queues of a topic, split by what the bench may do with them.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// Writable queues accepting NORMAL messages.
    pub write: Vec<MessageQueue>,
    /// Readable queues.
    pub read: Vec<MessageQueue>,
}

/// QueryRoute for `topic`, failing with an actionable message when the topic is missing or has
/// no usable queue.
pub(crate) async fn query_route(
    client: &mut Client,
    target: &Target,
    topic: &str,
    need_read: bool,
) -> anyhow::Result<Route> {
    let mut request = tonic::Request::new(QueryRouteRequest {
        topic: Some(resource(topic)),
        endpoints: Some(target.endpoints.clone()),
    });
    request.set_timeout(REQUEST_TIMEOUT);
    let response = client
        .query_route(request)
        .await
        .map_err(|s| {
            anyhow!(
                "QueryRoute to {} failed: gRPC {:?}: {}",
                target.authority,
                s.code(),
                s.message()
            )
        })?
        .into_inner();
    match response.status.as_ref() {
        Some(s) if s.code == Code::TopicNotFound as i32 => bail!(
            "topic {topic:?} does not exist on {}; create it first, e.g. \
             `comet topic create {topic} --queues 8`",
            target.authority
        ),
        _ => {}
    }
    if let Err((code, message)) = check_status(response.status.as_ref()) {
        bail!("QueryRoute for topic {topic:?} failed: {code}: {message}");
    }
    let queues = response.message_queues;
    if queues.is_empty() {
        bail!("topic {topic:?} has no queues on {}", target.authority);
    }
    let perm = |q: &MessageQueue| Permission::try_from(q.permission).ok();
    let write: Vec<MessageQueue> = queues
        .iter()
        .filter(|q| matches!(perm(q), Some(Permission::Write | Permission::ReadWrite)))
        .filter(|q| {
            q.accept_message_types.is_empty()
                || q.accept_message_types
                    .contains(&(MessageType::Normal as i32))
        })
        .cloned()
        .collect();
    let read: Vec<MessageQueue> = queues
        .iter()
        .filter(|q| matches!(perm(q), Some(Permission::Read | Permission::ReadWrite)))
        .cloned()
        .collect();
    if write.is_empty() {
        bail!(
            "topic {topic:?} has no writable queue accepting NORMAL messages ({} queues); the \
             benchmark sends NORMAL messages, so use a NORMAL or MIXED topic",
            queues.len()
        );
    }
    if need_read && read.is_empty() {
        bail!(
            "topic {topic:?} has no readable queue ({} queues); run with --consumers 0 to only \
             produce",
            queues.len()
        );
    }
    Ok(Route { write, read })
}

/// One bench client's session: its telemetry stream and heartbeats.
#[derive(Debug)]
pub(crate) struct Session {
    /// The client (headers included) for this session's calls.
    pub client: Client,
    client_id: String,
    group: Option<Resource>,
    /// Sender half of the telemetry request stream; dropping it half-closes the stream.
    telemetry: mpsc::Sender<TelemetryCommand>,
    stop: watch::Sender<bool>,
    reader: JoinHandle<()>,
}

impl Session {
    /// Opens the telemetry stream, sends `settings` as its first command, waits for the
    /// server's echo (at most [`REQUEST_TIMEOUT`]; some servers never echo), then sends the
    /// first heartbeat, as the official clients do on start.
    pub(crate) async fn open(
        mut client: Client,
        client_id: String,
        settings: Settings,
        group: Option<Resource>,
    ) -> anyhow::Result<Session> {
        let client_type = settings.client_type.unwrap_or_default();
        tracing::debug!(
            client_id,
            client_type = client_type_name(&settings),
            "opening a session"
        );
        let (tx, rx) = mpsc::channel(4);
        tx.send(TelemetryCommand {
            status: None,
            command: Some(telemetry_command::Command::Settings(settings)),
        })
        .await
        .map_err(|_| anyhow!("telemetry request stream closed before it opened"))?;
        let opened =
            tokio::time::timeout(REQUEST_TIMEOUT, client.telemetry(ReceiverStream::new(rx)))
                .await
                .map_err(|_| {
                    anyhow!(
                        "Telemetry stream of {client_id} did not open within {REQUEST_TIMEOUT:?}"
                    )
                })?
                .map_err(|s| {
                    anyhow!(
                        "Telemetry stream of {client_id} was refused: gRPC {:?}: {}",
                        s.code(),
                        s.message()
                    )
                })?;
        let mut inbound = opened.into_inner();
        match tokio::time::timeout(REQUEST_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(first))) => {
                if let Some(status) = first.status.as_ref()
                    && let Err((code, message)) = check_status(Some(status))
                {
                    bail!("the server refused the settings of {client_id}: {code}: {message}");
                }
                tracing::debug!(
                    client_id,
                    echo = first.command.is_some(),
                    "telemetry settings acknowledged"
                );
            }
            Ok(Ok(None)) => bail!("the server closed the telemetry stream of {client_id} at once"),
            Ok(Err(s)) => bail!(
                "the telemetry stream of {client_id} failed: gRPC {:?}: {}",
                s.code(),
                s.message()
            ),
            Err(_) => tracing::warn!(
                client_id,
                "no settings echo on the telemetry stream within {REQUEST_TIMEOUT:?}; continuing"
            ),
        }
        let heartbeat = HeartbeatRequest {
            group: group.clone(),
            client_type,
        };
        send_heartbeat(&mut client, &client_id, heartbeat.clone()).await;

        let (stop, stop_rx) = watch::channel(false);
        let reader = tokio::spawn(read_telemetry(
            client.clone(),
            client_id.clone(),
            heartbeat,
            inbound,
            stop_rx,
        ));
        Ok(Session {
            client,
            client_id,
            group,
            telemetry: tx,
            stop,
            reader,
        })
    }

    /// Ends the session: stops heartbeats, sends NotifyClientTermination, half-closes the
    /// telemetry stream and waits (briefly) for the server to end it. Problems are logged, not
    /// returned: the measurements are already taken.
    pub(crate) async fn close(self) {
        let Session {
            mut client,
            client_id,
            group,
            telemetry,
            stop,
            mut reader,
        } = self;
        let _ = stop.send(true);
        let mut request = tonic::Request::new(NotifyClientTerminationRequest { group });
        request.set_timeout(REQUEST_TIMEOUT);
        match client.notify_client_termination(request).await {
            Ok(r) => {
                if let Err((code, message)) = check_status(r.get_ref().status.as_ref()) {
                    tracing::warn!(client_id, code, message, "NotifyClientTermination refused");
                }
            }
            Err(s) => {
                tracing::warn!(client_id, code = ?s.code(), message = s.message(), "NotifyClientTermination failed");
            }
        }
        drop(telemetry);
        if tokio::time::timeout(CLOSE_GRACE, &mut reader)
            .await
            .is_err()
        {
            tracing::debug!(
                client_id,
                "telemetry stream still open after close; dropping it"
            );
            reader.abort();
        }
    }
}

async fn send_heartbeat(client: &mut Client, client_id: &str, heartbeat: HeartbeatRequest) {
    let mut request = tonic::Request::new(heartbeat);
    request.set_timeout(REQUEST_TIMEOUT);
    match client.heartbeat(request).await {
        Ok(r) => {
            if let Err((code, message)) = check_status(r.get_ref().status.as_ref()) {
                tracing::warn!(client_id, code, message, "heartbeat refused");
            }
        }
        Err(s) => {
            tracing::warn!(client_id, code = ?s.code(), message = s.message(), "heartbeat failed");
        }
    }
}

/// Reads server commands until the server ends the stream, heartbeating meanwhile; stops
/// heartbeating when the session closes.
async fn read_telemetry(
    mut client: Client,
    client_id: String,
    heartbeat: HeartbeatRequest,
    mut inbound: tonic::Streaming<TelemetryCommand>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + HEARTBEAT_INTERVAL,
        HEARTBEAT_INTERVAL,
    );
    let mut heartbeating = true;
    loop {
        tokio::select! {
            message = inbound.message() => match message {
                Ok(Some(command)) => {
                    let kind = match &command.command {
                        Some(telemetry_command::Command::Settings(_)) => "settings",
                        Some(_) => "server command",
                        None => "status",
                    };
                    tracing::debug!(client_id, kind, "telemetry command ignored by the benchmark");
                }
                Ok(None) => break,
                Err(s) => {
                    if heartbeating {
                        tracing::warn!(client_id, code = ?s.code(), message = s.message(), "telemetry stream failed");
                    }
                    break;
                }
            },
            _ = ticks.tick(), if heartbeating => {
                send_heartbeat(&mut client, &client_id, heartbeat.clone()).await;
            }
            changed = stop.changed(), if heartbeating => {
                if changed.is_err() || *stop.borrow() {
                    heartbeating = false;
                }
            }
        }
    }
}

/// The client type of a settings message, for logs.
pub(crate) fn client_type_name(settings: &Settings) -> &'static str {
    settings
        .client_type
        .and_then(|t| ClientType::try_from(t).ok())
        .map_or("CLIENT_TYPE_UNSPECIFIED", |t| t.as_str_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_client_id_when_built_should_be_a_valid_unique_header() {
        let a = client_id(&hostname(), 7, "p0");
        let b = client_id(&hostname(), 7, "p1");
        assert_ne!(a, b);
        assert!(a.contains("#bench-0000000000000007-p0"), "{a}");
        Headers::new(&a, None).expect("valid header");
    }

    #[test]
    fn given_statuses_when_checked_should_name_the_failure() {
        assert!(
            check_status(Some(&Status {
                code: Code::Ok as i32,
                message: String::new()
            }))
            .is_ok()
        );
        let (code, _) = check_status(None).expect_err("missing status");
        assert_eq!(code, "MISSING_STATUS");
        let (code, message) = check_status(Some(&Status {
            code: Code::Forbidden as i32,
            message: "no".into(),
        }))
        .expect_err("FORBIDDEN");
        assert_eq!((code.as_str(), message.as_str()), ("FORBIDDEN", "no"));
    }

    #[test]
    fn given_durations_when_converted_should_keep_nanos() {
        let d = pb_duration(Duration::from_millis(1500));
        assert_eq!((d.seconds, d.nanos), (1, 500_000_000));
    }
}
