//! The two kinds of call the link combines (see `combine`), as [`Batch`]es:
//!
//! - [`Sends`]: SendMessage. Requests that wait together leave as one SendMessage with all
//!   their messages; the broker answers one entry per message in order, and each caller gets
//!   its own entries back.
//! - [`Settles`]: AckMessage and ChangeInvisibleDuration. Requests that wait together leave
//!   as one SettleMessages call (`comet.v1.BrokerService`), whatever their consumers, groups
//!   and topics; the broker handles each as its own call and answers each in order.
//!
//! A request that finds a free call slot goes alone, as its own plain RPC.

use std::sync::Weak;
use std::time::Duration;

use comet_proto::apache::rocketmq::v2::{
    AckMessageRequest, AckMessageResponse, ChangeInvisibleDurationRequest,
    ChangeInvisibleDurationResponse, SendMessageRequest, SendMessageResponse,
};
use comet_proto::comet::v1::{
    SettleMessagesRequest, SettleMessagesResponse, Settlement, settled, settlement,
};
use tonic::metadata::AsciiMetadataValue;
use tonic::{Request, Status};

use super::combine::{Batch, ManyFuture, OneFuture, Traceparent};
use super::{CLIENT_ID_HEADER, Link, Shared, TRACEPARENT, broker_path};

/// The link a batch calls over, if it still exists.
fn link(shared: &Weak<Shared>) -> Result<Link, Status> {
    shared
        .upgrade()
        .map(|shared| Link { shared })
        .ok_or_else(|| Status::unavailable("the broker link was closed"))
}

/// A request with the deadline, trace and client id a combined call passes on.
fn request<T>(
    message: T,
    timeout: Option<Duration>,
    traceparent: Traceparent,
    client_id: Option<&str>,
) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(t) = timeout {
        request.set_timeout(t);
    }
    if let Some(tp) = traceparent {
        request.metadata_mut().insert(TRACEPARENT, tp);
    }
    if let Some(id) = client_id
        .filter(|id| !id.is_empty())
        .and_then(|id| AsciiMetadataValue::try_from(id).ok())
    {
        request.metadata_mut().insert(CLIENT_ID_HEADER, id);
    }
    request
}

/// SendMessage calls on a link.
pub(super) struct Sends(pub(super) Weak<Shared>);

impl Batch for Sends {
    type Request = SendMessageRequest;
    type Answer = SendMessageResponse;

    fn weight(request: &SendMessageRequest) -> (usize, usize) {
        let bytes = request.messages.iter().map(|m| m.body.len()).sum();
        (request.messages.len(), bytes)
    }

    fn call_one(
        &self,
        message: SendMessageRequest,
        timeout: Option<Duration>,
        traceparent: Traceparent,
    ) -> OneFuture<SendMessageResponse> {
        let link = link(&self.0);
        Box::pin(async move {
            let request = request(message, timeout, traceparent, None);
            link?
                .unary(broker_path!("SendMessage"), request)
                .await
                .map(tonic::Response::into_inner)
        })
    }

    fn call_many(
        &self,
        requests: Vec<SendMessageRequest>,
        timeout: Option<Duration>,
        traceparent: Traceparent,
    ) -> ManyFuture<SendMessageResponse> {
        let link = link(&self.0);
        let counts: Vec<usize> = requests.iter().map(|r| r.messages.len()).collect();
        let mut messages = Vec::with_capacity(counts.iter().sum());
        for r in requests {
            messages.extend(r.messages);
        }
        let total = messages.len();
        Box::pin(async move {
            let answer = match link {
                Err(e) => Err(e),
                Ok(link) => {
                    let request =
                        request(SendMessageRequest { messages }, timeout, traceparent, None);
                    link.unary(broker_path!("SendMessage"), request)
                        .await
                        .map(tonic::Response::into_inner)
                }
            };
            split_sends(answer, &counts, total)
        })
    }
}

/// Splits the answer to a combined SendMessage into the answers of its requests (`counts`
/// messages each, `total` together).
fn split_sends(
    answer: Result<SendMessageResponse, Status>,
    counts: &[usize],
    total: usize,
) -> Vec<Result<SendMessageResponse, Status>> {
    let response = match answer {
        Err(e) => return counts.iter().map(|_| Err(e.clone())).collect(),
        Ok(r) => r,
    };
    if response.entries.is_empty() {
        // The call as a whole failed in-body: the same answer for every request.
        return counts.iter().map(|_| Ok(response.clone())).collect();
    }
    if response.entries.len() != total {
        let e = Status::internal(format!(
            "the broker answered {} entries for {total} combined messages",
            response.entries.len()
        ));
        return counts.iter().map(|_| Err(e.clone())).collect();
    }
    let mut entries = response.entries.into_iter();
    counts
        .iter()
        .map(|&n| {
            let own: Vec<_> = entries.by_ref().take(n).collect();
            let status =
                comet_vocab::status::aggregate(own.iter().filter_map(|e| e.status.as_ref()));
            Ok(SendMessageResponse {
                status: Some(status),
                entries: own,
            })
        })
        .collect()
}

/// AckMessage and ChangeInvisibleDuration calls on a link.
pub(super) struct Settles(pub(super) Weak<Shared>);

impl Settles {
    /// An ack as a settlement (client id from the request's metadata).
    pub(super) fn ack(client_id: String, ack: AckMessageRequest) -> Settlement {
        Settlement {
            client_id,
            request: Some(settlement::Request::Ack(ack)),
        }
    }

    /// An invisible-time change as a settlement.
    pub(super) fn change(client_id: String, change: ChangeInvisibleDurationRequest) -> Settlement {
        Settlement {
            client_id,
            request: Some(settlement::Request::ChangeInvisibleDuration(change)),
        }
    }

    /// The ack answer of a settlement.
    pub(super) fn acked(answer: settled::Response) -> Result<AckMessageResponse, Status> {
        match answer {
            settled::Response::Ack(r) => Ok(r),
            settled::Response::ChangeInvisibleDuration(_) => Err(mismatch()),
        }
    }

    /// The change answer of a settlement.
    pub(super) fn changed(
        answer: settled::Response,
    ) -> Result<ChangeInvisibleDurationResponse, Status> {
        match answer {
            settled::Response::ChangeInvisibleDuration(r) => Ok(r),
            settled::Response::Ack(_) => Err(mismatch()),
        }
    }
}

fn mismatch() -> Status {
    Status::internal("the broker answered a settlement with a result of another kind")
}

impl Batch for Settles {
    type Request = Settlement;
    type Answer = settled::Response;

    fn weight(s: &Settlement) -> (usize, usize) {
        match &s.request {
            Some(settlement::Request::Ack(a)) => (
                a.entries.len(),
                a.entries.iter().map(|e| e.receipt_handle.len()).sum(),
            ),
            Some(settlement::Request::ChangeInvisibleDuration(c)) => (1, c.receipt_handle.len()),
            None => (0, 0),
        }
    }

    fn call_one(
        &self,
        s: Settlement,
        timeout: Option<Duration>,
        traceparent: Traceparent,
    ) -> OneFuture<settled::Response> {
        let link = link(&self.0);
        Box::pin(async move {
            let link = link?;
            let client_id = Some(s.client_id.as_str());
            match s.request {
                Some(settlement::Request::Ack(a)) => {
                    let request = request(a, timeout, traceparent, client_id);
                    link.unary::<_, AckMessageResponse>(broker_path!("AckMessage"), request)
                        .await
                        .map(|r| settled::Response::Ack(r.into_inner()))
                }
                Some(settlement::Request::ChangeInvisibleDuration(c)) => {
                    let request = request(c, timeout, traceparent, client_id);
                    link.unary::<_, ChangeInvisibleDurationResponse>(
                        broker_path!("ChangeInvisibleDuration"),
                        request,
                    )
                    .await
                    .map(|r| settled::Response::ChangeInvisibleDuration(r.into_inner()))
                }
                None => Err(Status::internal("an empty settlement")),
            }
        })
    }

    fn call_many(
        &self,
        settlements: Vec<Settlement>,
        timeout: Option<Duration>,
        traceparent: Traceparent,
    ) -> ManyFuture<settled::Response> {
        let link = link(&self.0);
        let count = settlements.len();
        Box::pin(async move {
            let answer = match link {
                Err(e) => Err(e),
                Ok(link) => {
                    let request = request(
                        SettleMessagesRequest { settlements },
                        timeout,
                        traceparent,
                        None,
                    );
                    link.unary::<_, SettleMessagesResponse>(broker_path!("SettleMessages"), request)
                        .await
                        .map(tonic::Response::into_inner)
                }
            };
            split_settles(answer, count)
        })
    }
}

/// The answers of a SettleMessages call for `count` settlements.
fn split_settles(
    answer: Result<SettleMessagesResponse, Status>,
    count: usize,
) -> Vec<Result<settled::Response, Status>> {
    let fail_all = |e: Status| (0..count).map(|_| Err(e.clone())).collect();
    let response = match answer {
        Err(e) => return fail_all(e),
        Ok(r) => r,
    };
    if response.results.len() != count {
        return fail_all(Status::internal(format!(
            "the broker answered {} results for {count} settlements",
            response.results.len()
        )));
    }
    response
        .results
        .into_iter()
        .map(|r| {
            r.response
                .ok_or_else(|| Status::internal("the broker answered a settlement with nothing"))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use comet_proto::apache::rocketmq::v2::{
        AckMessageEntry, Code, SendResultEntry, Status as PbStatus,
    };
    use comet_proto::comet::v1::Settled;

    fn entry(id: &str, code: Code) -> SendResultEntry {
        SendResultEntry {
            status: Some(PbStatus {
                code: code as i32,
                message: String::new(),
            }),
            message_id: id.to_owned(),
            ..SendResultEntry::default()
        }
    }

    #[test]
    fn given_a_combined_send_answer_when_split_should_give_each_request_its_own_entries() {
        let answer = SendMessageResponse {
            status: Some(comet_vocab::status::ok()),
            entries: vec![
                entry("a", Code::Ok),
                entry("b1", Code::Ok),
                entry("b2", Code::MessageBodyTooLarge),
            ],
        };
        let parts = split_sends(Ok(answer), &[1, 2], 3);
        let a = parts[0].as_ref().unwrap();
        assert_eq!(a.entries.len(), 1);
        assert_eq!(a.status.as_ref().unwrap().code, Code::Ok as i32);
        let b = parts[1].as_ref().unwrap();
        let ids: Vec<&str> = b.entries.iter().map(|e| e.message_id.as_str()).collect();
        assert_eq!(ids, ["b1", "b2"]);
        assert_ne!(
            b.status.as_ref().unwrap().code,
            Code::Ok as i32,
            "a failed entry shows in its own request's status only"
        );
    }

    #[test]
    fn given_a_send_answer_with_the_wrong_entry_count_when_split_should_fail_every_request() {
        let answer = SendMessageResponse {
            status: Some(comet_vocab::status::ok()),
            entries: vec![entry("a", Code::Ok)],
        };
        for part in split_sends(Ok(answer), &[1, 1], 2) {
            assert_eq!(part.unwrap_err().code(), tonic::Code::Internal);
        }
    }

    #[test]
    fn given_settlements_when_weighed_and_answered_should_count_entries_and_keep_order() {
        let ack = Settles::ack(
            "c1".into(),
            AckMessageRequest {
                entries: vec![
                    AckMessageEntry {
                        receipt_handle: "a~1".into(),
                        ..AckMessageEntry::default()
                    },
                    AckMessageEntry {
                        receipt_handle: "a~22".into(),
                        ..AckMessageEntry::default()
                    },
                ],
                ..AckMessageRequest::default()
            },
        );
        assert_eq!(Settles::weight(&ack), (2, 7));
        let change = Settles::change(
            "c2".into(),
            ChangeInvisibleDurationRequest {
                receipt_handle: "a~3".into(),
                ..ChangeInvisibleDurationRequest::default()
            },
        );
        assert_eq!(Settles::weight(&change), (1, 3));

        let answer = SettleMessagesResponse {
            results: vec![
                Settled {
                    response: Some(settled::Response::Ack(AckMessageResponse::default())),
                },
                Settled {
                    response: Some(settled::Response::ChangeInvisibleDuration(
                        ChangeInvisibleDurationResponse {
                            receipt_handle: "a~4".into(),
                            ..ChangeInvisibleDurationResponse::default()
                        },
                    )),
                },
            ],
        };
        let mut parts = split_settles(Ok(answer.clone()), 2).into_iter();
        assert!(Settles::acked(parts.next().unwrap().unwrap()).is_ok());
        let changed = Settles::changed(parts.next().unwrap().unwrap()).unwrap();
        assert_eq!(changed.receipt_handle, "a~4");
        for part in split_settles(Ok(answer), 3) {
            assert_eq!(part.unwrap_err().code(), tonic::Code::Internal);
        }
        let e = Status::unavailable("gone");
        for part in split_settles(Err(e), 2) {
            assert_eq!(part.unwrap_err().code(), tonic::Code::Unavailable);
        }
    }
}
