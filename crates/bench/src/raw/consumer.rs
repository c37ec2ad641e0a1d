//! The raw consumer task: the simple-consumer loop of the official clients.
//!
//! ReceiveMessage (batch [`RECEIVE_BATCH`], invisible [`INVISIBLE`], long polling
//! [`LONG_POLLING`]) on the readable queues in turn, then one AckMessage with an entry per
//! received message. Each message is accounted by [`consumer::record`].
//!
//! Stopping: a consumer that is still waiting for the first frame of a long poll when told to
//! stop abandons the call; once frames flow it reads the stream to its end and acknowledges
//! what it got, so nothing the server handed over goes unaccounted.

use std::sync::Arc;

use comet_proto::apache::rocketmq::v2::{
    AckMessageEntry, AckMessageRequest, AckMessageResponse, Code, FilterExpression, FilterType,
    Message, MessageQueue, ReceiveMessageRequest, ReceiveMessageResponse,
    receive_message_response::Content,
};
use tokio::sync::watch;

use super::client::{Client, REQUEST_TIMEOUT, check_status, pb_duration};
use crate::consumer::{
    self, INVISIBLE, LONG_POLLING, RECEIVE_BATCH, backoff, failed, run_property,
};
use crate::plan::Plan;
use crate::stats::{TaskStats, code_key, grpc_key};

/// Runs consumer `index` until `stop`. Returns what it measured.
pub(crate) async fn run(
    plan: Arc<Plan>,
    mut client: Client,
    index: usize,
    queues: Arc<Vec<MessageQueue>>,
    mut stop: watch::Receiver<bool>,
) -> TaskStats {
    let mut stats = TaskStats::new(&plan.histogram);
    let mut next_queue = index;
    loop {
        if *stop.borrow() {
            break;
        }
        let queue = queues[next_queue % queues.len()].clone();
        next_queue = next_queue.wrapping_add(1);
        let mut request = tonic::Request::new(ReceiveMessageRequest {
            group: Some(plan.group.clone()),
            message_queue: Some(queue),
            filter_expression: Some(FilterExpression {
                r#type: FilterType::Tag as i32,
                expression: "*".to_owned(),
            }),
            batch_size: RECEIVE_BATCH,
            invisible_duration: Some(pb_duration(INVISIBLE)),
            auto_renew: false,
            long_polling_timeout: Some(pb_duration(LONG_POLLING)),
            attempt_id: None,
        });
        request.set_timeout(LONG_POLLING + REQUEST_TIMEOUT);

        // Wait for the first frame, unless told to stop first.
        let call = async {
            let mut stream = client.receive_message(request).await?.into_inner();
            let first = stream.message().await?;
            Ok::<_, tonic::Status>((stream, first))
        };
        let opened = tokio::select! {
            opened = call => opened,
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
        let (mut stream, mut frame) = match opened {
            Ok(x) => x,
            Err(s) => {
                failed(&plan, &mut stats, format!("receive/{}", grpc_key(&s)), 1);
                backoff(&mut stop).await;
                continue;
            }
        };

        let mut acks = Vec::new();
        let mut receive_error = None;
        while let Some(ReceiveMessageResponse { content }) = frame {
            match content {
                Some(Content::Status(s)) => {
                    if s.code != Code::Ok as i32 && s.code != Code::MessageNotFound as i32 {
                        receive_error = Some(code_key(s.code));
                    }
                }
                Some(Content::Message(m)) => on_message(&plan, &mut stats, m, &mut acks),
                Some(Content::DeliveryTimestamp(_)) | None => {}
            }
            frame = match stream.message().await {
                Ok(f) => f,
                Err(s) => {
                    receive_error = Some(grpc_key(&s));
                    None
                }
            };
        }
        if !acks.is_empty() {
            plan.consumed.notify_one();
            ack(&plan, &mut client, &mut stats, acks).await;
        }
        if let Some(key) = receive_error {
            failed(&plan, &mut stats, format!("receive/{key}"), 1);
            backoff(&mut stop).await;
        }
    }
    stats
}

/// Records one delivered message and queues its acknowledgement.
fn on_message(
    plan: &Plan,
    stats: &mut TaskStats,
    message: Message,
    acks: &mut Vec<AckMessageEntry>,
) {
    let props = message.system_properties.unwrap_or_default();
    consumer::record(
        plan,
        stats,
        run_property(&message.user_properties),
        &message.body,
        u32::try_from(props.delivery_attempt.unwrap_or(1)).unwrap_or(1),
    );
    match props.receipt_handle {
        Some(receipt_handle) if !receipt_handle.is_empty() => acks.push(AckMessageEntry {
            message_id: props.message_id,
            receipt_handle,
            lite_topic: None,
        }),
        _ => failed(plan, stats, "receive/MISSING_RECEIPT_HANDLE".to_owned(), 1),
    }
}

/// Acknowledges `entries` in one AckMessage.
async fn ack(
    plan: &Plan,
    client: &mut Client,
    stats: &mut TaskStats,
    entries: Vec<AckMessageEntry>,
) {
    let n = entries.len() as u64;
    let mut request = tonic::Request::new(AckMessageRequest {
        group: Some(plan.group.clone()),
        topic: Some(plan.topic.clone()),
        entries,
    });
    request.set_timeout(REQUEST_TIMEOUT);
    match client.ack_message(request).await {
        Ok(response) => {
            for (key, count) in ack_failures(&response.into_inner(), n) {
                failed(plan, stats, format!("ack/{key}"), count);
            }
        }
        Err(s) => failed(plan, stats, format!("ack/{}", grpc_key(&s)), n),
    }
}

/// Failed entries of an AckMessage response for `n` entries, by error key.
pub(crate) fn ack_failures(response: &AckMessageResponse, n: u64) -> Vec<(String, u64)> {
    // OK and MULTIPLE_RESULTS carry one status per message; any other code fails them all.
    let code = response.status.as_ref().map(|s| s.code);
    if !code.is_some_and(comet_vocab::status::has_entry_statuses) {
        let key = check_status(response.status.as_ref())
            .err()
            .map_or_else(|| "MISSING_STATUS".to_owned(), |(k, _)| k);
        return vec![(key, n)];
    }
    let mut out: Vec<(String, u64)> = Vec::new();
    for entry in &response.entries {
        if let Err((key, _)) = check_status(entry.status.as_ref()) {
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some((_, count)) => *count += 1,
                None => out.push((key, 1)),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use comet_proto::apache::rocketmq::v2::{AckMessageResultEntry, Status};

    fn status(code: Code) -> Option<Status> {
        Some(Status {
            code: code as i32,
            message: String::new(),
        })
    }

    #[test]
    fn given_ack_responses_when_interpreted_should_count_failed_entries() {
        let ok = AckMessageResponse {
            status: status(Code::Ok),
            entries: vec![AckMessageResultEntry {
                status: status(Code::Ok),
                ..Default::default()
            }],
        };
        assert!(ack_failures(&ok, 1).is_empty());

        let mixed = AckMessageResponse {
            status: status(Code::MultipleResults),
            entries: vec![
                AckMessageResultEntry {
                    status: status(Code::Ok),
                    ..Default::default()
                },
                AckMessageResultEntry {
                    status: status(Code::InvalidReceiptHandle),
                    ..Default::default()
                },
            ],
        };
        assert_eq!(
            ack_failures(&mixed, 2),
            vec![("INVALID_RECEIPT_HANDLE".to_owned(), 1)]
        );

        let refused = AckMessageResponse {
            status: status(Code::Forbidden),
            entries: vec![],
        };
        assert_eq!(ack_failures(&refused, 3), vec![("FORBIDDEN".to_owned(), 3)]);
        assert_eq!(
            ack_failures(&AckMessageResponse::default(), 2),
            vec![("MISSING_STATUS".to_owned(), 2)]
        );
    }
}
