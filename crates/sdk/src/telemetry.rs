//! One telemetry stream per endpoint in use.
//!
//! The stream opens with the client's settings; every settings echo from the server is applied
//! to the client's [`crate::session::Role`]; other server commands (transaction check-back,
//! message verification, stack dumps, reconnect requests) go to the role. The settings are sent
//! again every five minutes. When the stream ends or fails it is opened again after a backoff
//! (200 ms doubling up to 10 s, back to 200 ms once the server answers), until the client shuts
//! down.

use std::time::Duration;

use comet_proto::apache::rocketmq::v2 as pb;
use pb::telemetry_command::Command;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::endpoints::Endpoints;
use crate::session::{Session, grpc_error};

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const RESYNC_INTERVAL: Duration = Duration::from_secs(300);

/// Why one stream ended.
enum Ended {
    /// The client is shutting down (or no longer uses this endpoint).
    Stop,
    /// The server asked for a new stream.
    Reconnect,
    /// The stream failed or the server closed it.
    Lost { answered: bool },
}

/// Makes sure `endpoints` has a telemetry stream, starting one under the session's task
/// tracker if not.
pub(crate) fn ensure(session: &Session, endpoints: &Endpoints) {
    if !session.claim_telemetry(endpoints) {
        return;
    }
    let me = session.clone();
    let ep = endpoints.clone();
    session.tasks().spawn(async move { run(me, ep).await });
}

/// Keeps `endpoints`' telemetry stream open until the session stops.
async fn run(session: Session, endpoints: Endpoints) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if session.token().is_cancelled() || !session.wants_telemetry(&endpoints.key) {
            return;
        }
        let ended = one_stream(&session, &endpoints).await;
        session.set_telemetry_writer(&endpoints.key, None);
        match ended {
            Ended::Stop => return,
            Ended::Reconnect => {
                backoff = FIRST_BACKOFF;
                continue;
            }
            Ended::Lost { answered } => {
                if answered {
                    backoff = FIRST_BACKOFF;
                }
            }
        }
        tracing::debug!(endpoint = %endpoints.key, ?backoff, "telemetry stream lost, reopening");
        tokio::select! {
            () = session.token().cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn settings_command(session: &Session) -> pb::TelemetryCommand {
    let access = session.access_point();
    pb::TelemetryCommand {
        status: None,
        command: Some(Command::Settings(session.role().settings(&access.proto))),
    }
}

async fn one_stream(session: &Session, endpoints: &Endpoints) -> Ended {
    let mut client = match session.client(endpoints) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(endpoint = %endpoints.key, error = %e, "no channel for telemetry");
            session.telemetry_open_failed(&endpoints.key, e);
            return Ended::Lost { answered: false };
        }
    };
    let (tx, rx) = mpsc::channel(64);
    if tx.send(settings_command(session)).await.is_err() {
        return Ended::Stop;
    }
    // The stream is long-lived: no deadline; the session's token ends it.
    let request = session.request(ReceiverStream::new(rx), Duration::from_secs(365 * 86_400));
    let opened = tokio::select! {
        () = session.token().cancelled() => return Ended::Stop,
        r = client.telemetry(request) => r,
    };
    let mut inbound = match opened {
        Ok(r) => r.into_inner(),
        Err(status) => {
            let error = grpc_error("Telemetry", &endpoints.key, status);
            tracing::debug!(endpoint = %endpoints.key, %error, "telemetry open failed");
            session.telemetry_open_failed(&endpoints.key, error);
            return Ended::Lost { answered: false };
        }
    };
    session.set_telemetry_writer(&endpoints.key, Some(tx.clone()));
    let mut answered = false;
    let mut resync = tokio::time::interval_at(
        tokio::time::Instant::now() + RESYNC_INTERVAL,
        RESYNC_INTERVAL,
    );
    loop {
        let next = tokio::select! {
            () = session.token().cancelled() => return Ended::Stop,
            _ = resync.tick() => {
                if tx.send(settings_command(session)).await.is_err() {
                    return Ended::Lost { answered };
                }
                continue;
            }
            m = inbound.message() => m,
        };
        let command = match next {
            Ok(Some(c)) => c,
            Ok(None) => return Ended::Lost { answered },
            Err(status) => {
                tracing::debug!(endpoint = %endpoints.key, %status, "telemetry stream failed");
                return Ended::Lost { answered };
            }
        };
        answered = true;
        match command.command {
            Some(Command::Settings(echo)) => {
                let ok = command
                    .status
                    .as_ref()
                    .is_none_or(|s| s.code == pb::Code::Ok as i32);
                if ok {
                    session.settings_synced(&echo);
                } else {
                    tracing::warn!(
                        endpoint = %endpoints.key,
                        code = command.status.as_ref().map(|s| s.code),
                        message = command.status.as_ref().map(|s| s.message.as_str()),
                        "the server refused the client's settings"
                    );
                }
            }
            Some(Command::ReconnectEndpointsCommand(_)) => return Ended::Reconnect,
            Some(other) => session.role().on_command(session, endpoints, other, &tx),
            None => {
                tracing::debug!(endpoint = %endpoints.key, "empty telemetry command ignored");
            }
        }
        if !session.wants_telemetry(&endpoints.key) {
            return Ended::Stop;
        }
    }
}

/// The answers every client gives to the commands that do not depend on its kind.
pub(crate) fn answer_common(command: Command, reply: &mpsc::Sender<pb::TelemetryCommand>) {
    let answer = match command {
        Command::PrintThreadStackTraceCommand(c) => pb::TelemetryCommand {
            status: Some(pb::Status {
                code: pb::Code::Unsupported as i32,
                message: "an async Rust client has no thread stacks to print".into(),
            }),
            command: Some(Command::ThreadStackTrace(pb::ThreadStackTrace {
                nonce: c.nonce,
                thread_stack_trace: None,
            })),
        },
        Command::VerifyMessageCommand(c) => pb::TelemetryCommand {
            status: Some(pb::Status {
                code: pb::Code::Unsupported as i32,
                message: "only push consumers verify messages".into(),
            }),
            command: Some(Command::VerifyMessageResult(pb::VerifyMessageResult {
                nonce: c.nonce,
            })),
        },
        other => {
            tracing::debug!(command = ?std::mem::discriminant(&other), "telemetry command ignored by this client");
            return;
        }
    };
    if reply.try_send(answer).is_err() {
        tracing::debug!("telemetry reply dropped: stream busy or closed");
    }
}
