//! The raw producer's [`Sender`]: SendMessage requests built by hand and sent on `h2`
//! directly (see `unary`), on the queues the bench picks in turn.

use std::collections::HashMap;
use std::sync::Arc;

use comet_proto::apache::rocketmq::v2::{
    Encoding, Message, MessageQueue, MessageType, SendMessageRequest, SendMessageResponse,
    SystemProperties,
};

use super::client::{Headers, REQUEST_TIMEOUT, check_status, pb_timestamp};
use super::unary::{self, Method, Unary};
use crate::payload::{RUN_PROPERTY, body};
use crate::plan::Plan;
use crate::producer::{Request, SendOutcome, Sender};
use crate::stats::grpc_key;

/// The gRPC path of SendMessage.
const SEND_PATH: &str = "/apache.rocketmq.v2.MessagingService/SendMessage";

/// Where a raw producer's requests go: a connection, the SendMessage call with the producer's
/// headers, and the writable queues.
#[derive(Debug, Clone)]
pub(crate) struct RawSender {
    conn: Unary,
    method: Method,
    headers: Headers,
    queues: Arc<Vec<MessageQueue>>,
}

impl RawSender {
    /// SendMessage calls on `conn` as the client whose headers are `headers`, to `queues`.
    pub(crate) fn new(
        conn: Unary,
        headers: &Headers,
        queues: Arc<Vec<MessageQueue>>,
    ) -> anyhow::Result<Self> {
        let method = Method::new(&conn, SEND_PATH, headers.fixed().clone(), REQUEST_TIMEOUT)?;
        Ok(RawSender {
            conn,
            method,
            headers: headers.clone(),
            queues,
        })
    }

    /// The request's messages: unique ids from the run, the producer and its message count.
    fn messages(&self, plan: &Plan, request: Request) -> Vec<Message> {
        let queue = &self.queues[request.queue_turn % self.queues.len()];
        let born = pb_timestamp(std::time::SystemTime::now());
        let (run_hex, producer) = (&plan.run_hex, request.producer);
        (0..u64::from(request.count))
            .map(|i| {
                let n = request.first_message + i;
                Message {
                    topic: Some(plan.topic.clone()),
                    user_properties: HashMap::from([(RUN_PROPERTY.to_owned(), run_hex.clone())]),
                    system_properties: Some(SystemProperties {
                        message_id: format!("{run_hex}{producer:04X}{n:012X}"),
                        body_encoding: Encoding::Identity as i32,
                        message_type: MessageType::Normal as i32,
                        born_timestamp: Some(born),
                        born_host: plan.born_host.clone(),
                        queue_id: queue.id,
                        ..SystemProperties::default()
                    }),
                    body: body(&plan.template, request.due_ns),
                }
            })
            .collect()
    }
}

impl Sender for RawSender {
    fn send<'a>(
        &'a self,
        plan: &'a Plan,
        request: Request,
    ) -> impl Future<Output = SendOutcome> + Send + 'a {
        let messages = self.messages(plan, request);
        let n = messages.len() as u64;
        async move {
            let request = SendMessageRequest { messages };
            let result = unary::call(
                &self.conn,
                &self.method,
                &self.headers.per_call(),
                &request,
                REQUEST_TIMEOUT,
            )
            .await;
            outcome(result, n)
        }
    }
}

/// Interprets a SendMessage response for a request of `n` messages.
pub(crate) fn outcome(result: Result<SendMessageResponse, tonic::Status>, n: u64) -> SendOutcome {
    let response = match result {
        Ok(r) => r,
        Err(s) => return SendOutcome::failed(grpc_key(&s), n),
    };
    // OK and MULTIPLE_RESULTS carry one status per message; any other code fails them all.
    let code = response.status.as_ref().map(|s| s.code);
    if !code.is_some_and(comet_vocab::status::has_entry_statuses) {
        let key = check_status(response.status.as_ref())
            .err()
            .map_or_else(|| "MISSING_STATUS".to_owned(), |(key, _)| key);
        return SendOutcome::failed(key, n);
    }
    if response.entries.len() as u64 != n {
        return SendOutcome::failed("BAD_ENTRY_COUNT".to_owned(), n);
    }
    let mut out = SendOutcome::default();
    for entry in &response.entries {
        match check_status(entry.status.as_ref()) {
            Ok(()) => out.ok += 1,
            Err((key, _)) => match out.errors.iter_mut().find(|(k, _)| *k == key) {
                Some((_, count)) => *count += 1,
                None => out.errors.push((key, 1)),
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use comet_proto::apache::rocketmq::v2::Code;
    use comet_proto::apache::rocketmq::v2::{SendResultEntry, Status};

    fn status(code: Code) -> Option<Status> {
        Some(Status {
            code: code as i32,
            message: String::new(),
        })
    }

    fn entry(code: Code) -> SendResultEntry {
        SendResultEntry {
            status: status(code),
            ..SendResultEntry::default()
        }
    }

    #[test]
    fn given_responses_when_interpreted_should_count_per_message() {
        let ok = SendMessageResponse {
            status: status(Code::Ok),
            entries: vec![entry(Code::Ok), entry(Code::Ok)],
        };
        assert_eq!(
            outcome(Ok(ok), 2),
            SendOutcome {
                ok: 2,
                errors: vec![]
            }
        );

        let mixed = SendMessageResponse {
            status: status(Code::MultipleResults),
            entries: vec![
                entry(Code::Ok),
                entry(Code::TooManyRequests),
                entry(Code::TooManyRequests),
            ],
        };
        assert_eq!(
            outcome(Ok(mixed), 3),
            SendOutcome {
                ok: 1,
                errors: vec![("TOO_MANY_REQUESTS".into(), 2)]
            }
        );

        let refused = SendMessageResponse {
            status: status(Code::TopicNotFound),
            entries: vec![],
        };
        assert_eq!(
            outcome(Ok(refused), 4),
            SendOutcome {
                ok: 0,
                errors: vec![("TOPIC_NOT_FOUND".into(), 4)]
            }
        );

        let short = SendMessageResponse {
            status: status(Code::Ok),
            entries: vec![entry(Code::Ok)],
        };
        assert_eq!(
            outcome(Ok(short), 2),
            SendOutcome {
                ok: 0,
                errors: vec![("BAD_ENTRY_COUNT".into(), 2)]
            }
        );

        let no_status = SendMessageResponse::default();
        assert_eq!(
            outcome(Ok(no_status), 1),
            SendOutcome {
                ok: 0,
                errors: vec![("MISSING_STATUS".into(), 1)]
            }
        );

        assert_eq!(
            outcome(Err(tonic::Status::deadline_exceeded("slow")), 2),
            SendOutcome {
                ok: 0,
                errors: vec![("grpc:DEADLINE_EXCEEDED".into(), 2)]
            }
        );
    }
}
