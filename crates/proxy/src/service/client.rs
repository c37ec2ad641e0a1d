//! Heartbeat, NotifyClientTermination and the Telemetry stream.

use std::sync::Arc;

use comet_proto::apache::rocketmq::v2::{
    HeartbeatRequest, Language, NotifyClientTerminationRequest, Settings, TelemetryCommand,
    settings, telemetry_command,
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

impl Inner {
    /// Records the client; accepted before (or without) settings, as Rust races them.
    pub(super) fn heartbeat(
        &self,
        ctx: &RequestContext,
        request: &HeartbeatRequest,
    ) -> Outcome<()> {
        let client_id = require_client_id(ctx)?;
        let group = match request.group.as_ref() {
            Some(g) if !g.name.is_empty() => Some(names::group(ctx, Some(g))?.qualified),
            _ => None,
        };
        self.sessions.touch(client_id, |s| {
            s.client_type = request.client_type;
            if group.is_some() {
                s.group = group;
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
                        let Some(reply) = inner.telemetry_command(&ctx, &client_id, command) else {
                            continue;
                        };
                        // A client that stops reading must not hold up shutdown.
                        let sent = tokio::select! {
                            () = shutdown.cancelled() => break,
                            sent = tx.send(Ok(reply)) => sent,
                        };
                        if sent.is_err() {
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

    /// Handles one inbound command; returns the reply, if any.
    fn telemetry_command(
        &self,
        ctx: &RequestContext,
        client_id: &str,
        command: TelemetryCommand,
    ) -> Option<TelemetryCommand> {
        match command.command {
            Some(telemetry_command::Command::Settings(settings)) => {
                Some(match self.settings_echo(ctx, client_id, settings) {
                    Ok(echoed) => TelemetryCommand {
                        status: Some(status::ok()),
                        command: Some(telemetry_command::Command::Settings(echoed)),
                    },
                    Err(f) => {
                        tracing::info!(client_id, code = ?f.code, reason = %f.message, "settings rejected");
                        TelemetryCommand {
                            status: Some(f.status()),
                            command: None,
                        }
                    }
                })
            }
            Some(telemetry_command::Command::ThreadStackTrace(t)) => {
                tracing::debug!(client_id, nonce = %t.nonce, "thread stack trace received");
                None
            }
            Some(telemetry_command::Command::VerifyMessageResult(v)) => {
                tracing::debug!(client_id, nonce = %v.nonce, "verify message result received");
                None
            }
            other => {
                tracing::debug!(
                    client_id,
                    command = ?other.as_ref().map(std::mem::discriminant),
                    "ignoring telemetry command not meant for the server"
                );
                None
            }
        }
    }

    fn settings_echo(
        &self,
        ctx: &RequestContext,
        client_id: &str,
        settings: Settings,
    ) -> Outcome<Settings> {
        let group = match settings.pub_sub.as_ref() {
            Some(settings::PubSub::Subscription(s)) => match s.group.as_ref() {
                Some(g) if !g.name.is_empty() => Some(names::group(ctx, Some(g))?),
                _ => None,
            },
            _ => None,
        };
        let publishing = match settings.pub_sub.as_ref() {
            Some(settings::PubSub::Publishing(p)) => p
                .topics
                .iter()
                .filter_map(|t| names::topic(ctx, Some(t)).ok())
                .map(|n| PublishedTopic {
                    qualified: n.qualified,
                    namespace: n.namespace,
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
            s.settings = Some(settings);
        });
        Ok(echoed)
    }
}
