//! Heartbeat, NotifyClientTermination and the Telemetry stream.

use std::sync::Arc;

use comet_proto::apache::rocketmq::v2::{
    ClientType, Code, FilterType, HeartbeatRequest, Language, NotifyClientTerminationRequest,
    Settings, TelemetryCommand, settings, telemetry_command,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{Inner, require_client_id};
use crate::context::RequestContext;
use crate::names;
use crate::session::PublishedTopic;
use crate::settings::echo;
use crate::status::{self, Failure, Outcome};

/// Frames buffered towards one telemetry client.
const TELEMETRY_BUFFER: usize = 8;

/// Whether a client of this type uses a consumer group (and subscription settings).
fn is_consumer(client_type: ClientType) -> bool {
    matches!(
        client_type,
        ClientType::PushConsumer
            | ClientType::SimpleConsumer
            | ClientType::PullConsumer
            | ClientType::LitePushConsumer
            | ClientType::LiteSimpleConsumer
    )
}

/// The client type a request may act as: PRODUCER, PUSH_CONSUMER, SIMPLE_CONSUMER (upstream's
/// three), PULL_CONSUMER (Comet serves PullMessage) and the lite consumers
/// (LITE_PUSH_CONSUMER, LITE_SIMPLE_CONSUMER); anything else is
/// UNRECOGNIZED_CLIENT_TYPE naming it.
fn recognized(raw: i32) -> Outcome<ClientType> {
    match ClientType::try_from(raw) {
        Ok(t) if t == ClientType::Producer || is_consumer(t) => Ok(t),
        Ok(t) => Err(Failure::new(
            Code::UnrecognizedClientType,
            format!("client type {} is not served here", t.as_str_name()),
        )),
        Err(_) => Err(Failure::new(
            Code::UnrecognizedClientType,
            format!("unknown client type {raw}"),
        )),
    }
}

/// What upstream ends a telemetry stream with when a command fails: INVALID_ARGUMENT for a
/// client error (a 4xxxx code), INTERNAL otherwise.
fn telemetry_error(f: &Failure) -> Status {
    let message = format!("process client telemetryCommand failed. {}", f.message);
    if (Code::BadRequest as i32..Code::InternalError as i32).contains(&(f.code as i32)) {
        Status::invalid_argument(message)
    } else {
        Status::internal(message)
    }
}

impl Inner {
    /// Records the client. The client type is the one of its settings, as upstream; before
    /// settings arrive (Rust's first heartbeat races them) the request's own type is used, and
    /// only a client with neither is UNRECOGNIZED_CLIENT_TYPE. Consumers must name a legal
    /// group (ILLEGAL_CONSUMER_GROUP).
    pub(super) fn heartbeat(
        &self,
        ctx: &RequestContext,
        request: &HeartbeatRequest,
    ) -> Outcome<()> {
        let client_id = require_client_id(ctx)?;
        let known = self
            .sessions
            .settings_type(client_id)
            .filter(|&t| t != ClientType::Unspecified as i32);
        let client_type = match known {
            Some(t) => recognized(t)?,
            None if request.client_type == ClientType::Unspecified as i32 => {
                return Err(Failure::new(
                    Code::UnrecognizedClientType,
                    "cannot find client settings for this client, and the heartbeat names no \
                     client type",
                ));
            }
            None => recognized(request.client_type)?,
        };
        let group = if is_consumer(client_type) {
            Some(names::group(ctx, request.group.as_ref())?.qualified)
        } else {
            None
        };
        self.sessions.touch(client_id, |s| {
            s.client_type = client_type as i32;
            if group.is_some() {
                s.group = group;
            }
            if !ctx.language.is_empty() {
                s.language.clone_from(&ctx.language);
            }
        });
        Ok(())
    }

    pub(super) fn notify_client_termination(
        &self,
        ctx: &RequestContext,
        request: &NotifyClientTerminationRequest,
    ) -> Outcome<()> {
        let client_id = require_client_id(ctx)?;
        tracing::debug!(
            client_id,
            group = request
                .group
                .as_ref()
                .map(|g| g.name.as_str())
                .unwrap_or(""),
            "client terminated"
        );
        self.sessions.terminate(client_id);
        Ok(())
    }

    /// Opens a telemetry stream: response headers go out at once (the handler returns the
    /// stream immediately), every inbound settings command is answered with the echo, and the
    /// stream stays open until the client half-closes or the proxy shuts down.
    pub(super) fn telemetry(
        self: &Arc<Self>,
        ctx: RequestContext,
        mut inbound: tonic::Streaming<TelemetryCommand>,
    ) -> ReceiverStream<Result<TelemetryCommand, Status>> {
        let (tx, rx) = mpsc::channel(TELEMETRY_BUFFER);
        let Some(client_id) = ctx.client_id.clone() else {
            let reply = TelemetryCommand {
                status: Some(Failure::client_id_required().status()),
                command: None,
            };
            // The channel is fresh and has room: this cannot fail.
            let _ = tx.try_send(Ok(reply));
            return ReceiverStream::new(rx);
        };
        // The stream's metadata is signed once, at its open.
        if let Err(f) = self.permit(&ctx, Vec::<crate::access::Need>::new) {
            let mut reply = TelemetryCommand {
                status: Some(f.status()),
                command: None,
            };
            crate::status::Statuses::fit_for(&mut reply, &ctx.language);
            let _ = tx.try_send(Ok(reply));
            return ReceiverStream::new(rx);
        }
        self.sessions.stream_opened(&client_id);
        // Transaction checks reach producers through this registration.
        let registration = self.sessions.register_sender(&client_id, tx.clone());
        let inner = Arc::clone(self);
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            tracing::debug!(client_id = %client_id, "telemetry stream opened");
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => break,
                    next = inbound.message() => next,
                };
                match next {
                    Ok(Some(command)) => {
                        let reply = match inner.telemetry_command(&ctx, &client_id, command) {
                            Ok(Some(reply)) => Ok(reply),
                            Ok(None) => continue,
                            // Upstream ends the stream with the error.
                            Err(status) => Err(status),
                        };
                        let ends = reply.is_err();
                        // A client that stops reading must not hold up shutdown.
                        let sent = tokio::select! {
                            () = shutdown.cancelled() => break,
                            sent = tx.send(reply) => sent,
                        };
                        if sent.is_err() || ends {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(client_id = %client_id, error = %e, "telemetry stream failed");
                        break;
                    }
                }
            }
            inner.sessions.unregister_sender(registration);
            inner.sessions.stream_closed(&client_id);
            tracing::debug!(client_id = %client_id, "telemetry stream closed");
        });
        ReceiverStream::new(rx)
    }

    /// Handles one inbound command: the reply, if any, or the gRPC status that ends the
    /// stream (settings upstream refuses).
    fn telemetry_command(
        &self,
        ctx: &RequestContext,
        client_id: &str,
        command: TelemetryCommand,
    ) -> Result<Option<TelemetryCommand>, Status> {
        match command.command {
            Some(telemetry_command::Command::Settings(settings)) => {
                match self.settings_echo(ctx, client_id, settings) {
                    Ok(echoed) => Ok(Some(TelemetryCommand {
                        status: Some(status::ok()),
                        command: Some(telemetry_command::Command::Settings(echoed)),
                    })),
                    Err(f) => {
                        tracing::info!(client_id, code = ?f.code, reason = %f.message, "settings rejected; ending the stream");
                        Err(telemetry_error(&f))
                    }
                }
            }
            Some(telemetry_command::Command::ThreadStackTrace(t)) => {
                tracing::debug!(client_id, nonce = %t.nonce, "thread stack trace received");
                Ok(None)
            }
            Some(telemetry_command::Command::VerifyMessageResult(v)) => {
                tracing::debug!(client_id, nonce = %v.nonce, "verify message result received");
                Ok(None)
            }
            other => {
                tracing::debug!(
                    client_id,
                    command = ?other.as_ref().map(std::mem::discriminant),
                    "ignoring telemetry command not meant for the server"
                );
                Ok(None)
            }
        }
    }

    fn settings_echo(
        &self,
        ctx: &RequestContext,
        client_id: &str,
        settings: Settings,
    ) -> Outcome<Settings> {
        // Upstream validates every published topic and the subscription group; Comet also
        // refuses a client type that contradicts the settings' kind.
        let declared = settings
            .client_type
            .filter(|&t| t != ClientType::Unspecified as i32)
            .map(recognized)
            .transpose()?;
        let group = match settings.pub_sub.as_ref() {
            Some(settings::PubSub::Subscription(s)) => {
                if declared.is_some_and(|t| !is_consumer(t)) {
                    return Err(Failure::bad_request(
                        "subscription settings come from a client that is not a consumer",
                    ));
                }
                for entry in &s.subscriptions {
                    super::receive::filter(entry.expression.as_ref())?;
                }
                Some(names::group(ctx, s.group.as_ref())?)
            }
            _ => None,
        };
        let publishing = match settings.pub_sub.as_ref() {
            Some(settings::PubSub::Publishing(p)) => {
                if declared.is_some_and(|t| t != ClientType::Producer) {
                    return Err(Failure::bad_request(
                        "publishing settings come from a client that is not a producer",
                    ));
                }
                p.topics
                    .iter()
                    .map(|t| {
                        names::writable_topic(ctx, Some(t)).map(|n| PublishedTopic {
                            qualified: n.qualified,
                            namespace: n.namespace,
                        })
                    })
                    .collect::<Outcome<Vec<_>>>()?
            }
            _ => Vec::new(),
        };
        let subscriptions: Vec<(String, String, String)> = match settings.pub_sub.as_ref() {
            Some(settings::PubSub::Subscription(s)) => s
                .subscriptions
                .iter()
                .filter_map(|e| {
                    let topic = e.topic.as_ref()?;
                    let ns = ctx.namespace_of(&topic.resource_namespace);
                    let (kind, expression) = e.expression.as_ref().map_or_else(
                        || ("TAG".to_owned(), "*".to_owned()),
                        |x| {
                            let kind = FilterType::try_from(x.r#type).map_or("TAG", |t| match t {
                                FilterType::Sql => "SQL",
                                _ => "TAG",
                            });
                            (kind.to_owned(), x.expression.clone())
                        },
                    );
                    Some((
                        comet_vocab::namespace::qualify(ns, &topic.name),
                        kind,
                        expression,
                    ))
                })
                .collect(),
            _ => Vec::new(),
        };
        let index = self.metadata.current();
        let group_meta = group.as_ref().and_then(|g| index.group(&g.qualified));
        let node = settings
            .user_agent
            .as_ref()
            .is_some_and(|ua| ua.language == Language::NodeJs as i32)
            || matches!(ctx.language.as_str(), "HTTP" | "NODE_JS" | "NODEJS");
        let echoed = echo(&self.cfg, &settings, group_meta, node)?;
        self.sessions.touch(client_id, |s| {
            if let Some(t) = settings.client_type {
                s.client_type = t;
            }
            if let Some(g) = &group {
                s.group = Some(g.qualified.clone());
            }
            s.publishing = publishing;
            s.subscriptions = subscriptions;
            if !ctx.language.is_empty() {
                s.language.clone_from(&ctx.language);
            }
            s.settings = Some(settings);
        });
        Ok(echoed)
    }
}
