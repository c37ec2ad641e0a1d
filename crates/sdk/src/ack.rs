//! Acknowledgements in batches: one `AckMessage` carries many entries, so consumers send as
//! few calls as the messages allow.
//!
//! - [`Receipt`]: what settling a received message needs (id, topic, receipt handle, lite
//!   topic, endpoints, body size); far cheaper to keep than the message.
//! - [`ack_many`]: groups receipts by (endpoints, topic), since one request names one topic
//!   and goes to one endpoint, splits each group into chunks of at most [`MAX_ENTRIES`] and
//!   sends the chunks side by side. The reply's entries are matched to the receipts by
//!   message id, so each receipt gets its own result.
//! - [`settle`]: [`ack_many`] plus retries of the entries that failed with a retryable error.
//!   The others are logged and dropped: `INVALID_RECEIPT_HANDLE` means the message's
//!   invisibility already ended, so it is (or will be) delivered again, which is what the
//!   official clients conclude too.
//! - [`AckBatcher`]: the push consumer's accumulator. Handlers add their message's receipt;
//!   a batch goes out when it holds [`MAX_ENTRIES`] receipts or [`LINGER`] after it opened,
//!   whichever comes first.
//!
//! ```text
//!  handler ──ack(receipt)──► open batch for (endpoints, topic)?
//!     no  ─► opens one, waits LINGER (less if the consumer stops), takes it back if still
//!            open, settles it
//!     yes ─► joins it; the joiner that fills it takes it and settles it at once
//!            every other joiner returns at once
//! ```
//!
//! Invariants:
//! - Every receipt given to [`AckBatcher::ack`] is settled by exactly one caller (the one that
//!   opened its batch or the one that filled it), which gets the batch's size back to release
//!   it from the consumer's cache: a message counts as cached until its ack is settled.
//! - No batch waits more than [`LINGER`] once the consumer stops, so a graceful shutdown that
//!   waits for its handlers has flushed every ack.
//! - Locks are never held across an await.

use std::sync::Arc;
use std::time::Duration;

use comet_proto::apache::rocketmq::v2 as pb;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::endpoints::Endpoints;
use crate::error::{Error, Result};
use crate::message::MessageView;
use crate::session::{Session, check};

/// Most entries one `AckMessage` carries (as many as one receive returns).
pub(crate) const MAX_ENTRIES: usize = 32;
/// How long a push consumer's partial batch waits for more acks to join it.
pub(crate) const LINGER: Duration = Duration::from_millis(2);
/// Sends of an entry that keeps failing with a retryable error.
const ATTEMPTS: u32 = 5;
/// Pause before the first retry; it doubles with each (at most 1.5 s in all).
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(100);

const RPC: &str = "AckMessage";

/// What settling a received message needs.
#[derive(Debug, Clone)]
pub(crate) struct Receipt {
    pub(crate) message_id: String,
    pub(crate) topic: String,
    /// The current receipt handle (replaced by each invisibility change).
    pub(crate) handle: String,
    pub(crate) lite_topic: Option<String>,
    /// Where the message came from; its acks go there.
    pub(crate) endpoints: Arc<Endpoints>,
    /// Body bytes, as the consumer's cache counts them.
    pub(crate) size: usize,
}

impl Receipt {
    pub(crate) fn of(m: &MessageView) -> Receipt {
        Receipt {
            message_id: m.message_id.clone(),
            topic: m.topic.clone(),
            handle: m.receipt_handle.clone(),
            lite_topic: m.lite_topic.clone(),
            endpoints: m.endpoints.clone(),
            size: m.size,
        }
    }

    /// Whether one request can carry both (same endpoints, same topic).
    fn same_request(&self, other: &Receipt) -> bool {
        (Arc::ptr_eq(&self.endpoints, &other.endpoints)
            || self.endpoints.key == other.endpoints.key)
            && self.topic == other.topic
    }
}

/// Acknowledges `receipts` for `group` in as few calls as possible; one result per receipt,
/// in order.
pub(crate) async fn ack_many(
    session: &Session,
    group: &str,
    receipts: &[Receipt],
) -> Vec<Result<()>> {
    let chunks = chunks(receipts);
    let calls = chunks
        .iter()
        .map(|chunk| ack_chunk(session, group, receipts, chunk));
    let answers = futures::future::join_all(calls).await;
    let mut results: Vec<Option<Result<()>>> = receipts.iter().map(|_| None).collect();
    for (chunk, answer) in chunks.iter().zip(answers) {
        for (&i, r) in chunk.iter().zip(answer) {
            results[i] = Some(r);
        }
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(Error::Protocol {
                    rpc: RPC,
                    what: "an entry left out of every request".into(),
                })
            })
        })
        .collect()
}

/// Indices of `receipts` grouped by request: same endpoints and topic, at most
/// [`MAX_ENTRIES`] each, in first-seen order.
fn chunks(receipts: &[Receipt]) -> Vec<Vec<usize>> {
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    for (i, r) in receipts.iter().enumerate() {
        match chunks
            .iter_mut()
            .find(|c| c.len() < MAX_ENTRIES && receipts[c[0]].same_request(r))
        {
            Some(c) => c.push(i),
            None => chunks.push(vec![i]),
        }
    }
    chunks
}

/// One `AckMessage` for the receipts at `chunk` (non-empty, one endpoint and topic).
async fn ack_chunk(
    session: &Session,
    group: &str,
    receipts: &[Receipt],
    chunk: &[usize],
) -> Vec<Result<()>> {
    let first = &receipts[chunk[0]];
    let request = pb::AckMessageRequest {
        group: Some(session.resource(group)),
        topic: Some(session.resource(&first.topic)),
        entries: chunk
            .iter()
            .map(|&i| {
                let r = &receipts[i];
                pb::AckMessageEntry {
                    message_id: r.message_id.clone(),
                    receipt_handle: r.handle.clone(),
                    lite_topic: r.lite_topic.clone(),
                }
            })
            .collect(),
    };
    let ids: Vec<&str> = chunk
        .iter()
        .map(|&i| receipts[i].message_id.as_str())
        .collect();
    match session
        .unary(crate::rpc::ACK_MESSAGE, &first.endpoints, &request)
        .await
    {
        Ok(response) => entry_results(&ids, &response),
        Err(e) => ids.iter().map(|_| Err(e.clone())).collect(),
    }
}

/// One result per acknowledged message id, from the reply's entries (matched by message id,
/// the same id twice taking the entries in order). A reply without entries answers for all
/// of them with its status; an id the entries do not mention is a protocol error.
fn entry_results(ids: &[&str], response: &pb::AckMessageResponse) -> Vec<Result<()>> {
    if response.entries.is_empty() {
        let r = check(RPC, response.status.as_ref());
        return ids.iter().map(|_| r.clone()).collect();
    }
    let entries = &response.entries;
    let mut used = vec![false; entries.len()];
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            // Servers answer in request order; the lookup is for those that do not.
            let at = if entries.get(i).is_some_and(|e| e.message_id == *id) && !used[i] {
                Some(i)
            } else {
                entries
                    .iter()
                    .enumerate()
                    .position(|(j, e)| !used[j] && e.message_id == *id)
            };
            match at {
                Some(j) => {
                    used[j] = true;
                    check(RPC, entries[j].status.as_ref())
                }
                None => Err(Error::Protocol {
                    rpc: RPC,
                    what: format!("no result entry for message {id}"),
                }),
            }
        })
        .collect()
}

/// Acknowledges `receipts`, sending again the entries that failed with a retryable error
/// (up to [`ATTEMPTS`] sends, pausing 100 ms, then twice as long each time). Entries that
/// fail for good are logged and dropped: their messages come back when their invisibility
/// ends.
pub(crate) async fn settle(session: &Session, group: &str, receipts: Vec<Receipt>) {
    settle_with(receipts, FIRST_RETRY_PAUSE, |batch| {
        // Owned for the boxed future, which may borrow only the batch (one clone per send).
        let (session, group) = (session.clone(), group.to_owned());
        Box::pin(async move { ack_many(&session, &group, batch).await })
    })
    .await;
}

/// [`settle`] over any `send` (one result per receipt, in order), pausing `first_pause`
/// before the first retry.
async fn settle_with(
    receipts: Vec<Receipt>,
    first_pause: Duration,
    mut send: impl for<'b> FnMut(&'b [Receipt]) -> BoxFuture<'b, Vec<Result<()>>>,
) {
    let mut pending = receipts;
    let mut pause = first_pause;
    for attempt in 1..=ATTEMPTS {
        let results = send(&pending).await;
        let mut again = Vec::new();
        for (receipt, result) in pending.into_iter().zip(results) {
            match result {
                Ok(()) => {}
                Err(e) if e.is_retryable() && attempt < ATTEMPTS => again.push(receipt),
                Err(e) if e.code() == Some(pb::Code::InvalidReceiptHandle as i32) => {
                    tracing::warn!(message_id = %receipt.message_id, error = %e, "ack refused: the receipt handle expired, the message is delivered again");
                }
                Err(e) => {
                    tracing::warn!(message_id = %receipt.message_id, attempt, error = %e, "ack failed; the message returns when its invisibility ends");
                }
            }
        }
        if again.is_empty() {
            return;
        }
        tracing::debug!(
            entries = again.len(),
            attempt,
            "acks failed transiently, retrying"
        );
        tokio::time::sleep(pause).await;
        pause *= 2;
        pending = again;
    }
}

/// What a settled batch held, for the consumer's cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Settled {
    pub(crate) messages: usize,
    pub(crate) bytes: usize,
}

/// A push consumer's acks waiting to go out, per (endpoints, topic).
#[derive(Default)]
pub(crate) struct AckBatcher {
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    batches: Vec<Batch>,
    next_id: u64,
}

struct Batch {
    id: u64,
    receipts: Vec<Receipt>,
}

/// What one caller of [`AckBatcher::ack`] has to do.
enum Turn {
    /// It opened a batch: wait, then send what is still there.
    Opened(u64),
    /// It filled a batch: send it now.
    Filled(Vec<Receipt>),
    /// It joined a batch someone else sends.
    Joined,
}

impl AckBatcher {
    /// Adds `receipt` to its batch and, when this call is the one to send that batch, sends
    /// and settles it (see the module doc). Returns what this call settled: nothing unless it
    /// opened or filled a batch. `stopping` cuts the linger short.
    pub(crate) async fn ack(
        &self,
        session: &Session,
        group: &str,
        receipt: Receipt,
        stopping: &CancellationToken,
    ) -> Settled {
        let turn = {
            let mut open = self.open.lock();
            match open
                .batches
                .iter()
                .position(|b| b.receipts[0].same_request(&receipt))
            {
                Some(i) => {
                    open.batches[i].receipts.push(receipt);
                    if open.batches[i].receipts.len() >= MAX_ENTRIES {
                        Turn::Filled(open.batches.swap_remove(i).receipts)
                    } else {
                        Turn::Joined
                    }
                }
                None => {
                    let id = open.next_id;
                    open.next_id = open.next_id.wrapping_add(1);
                    let mut receipts = Vec::with_capacity(MAX_ENTRIES);
                    receipts.push(receipt);
                    open.batches.push(Batch { id, receipts });
                    Turn::Opened(id)
                }
            }
        };
        let batch = match turn {
            Turn::Joined => return Settled::default(),
            Turn::Filled(batch) => batch,
            Turn::Opened(id) => {
                if !stopping.is_cancelled() {
                    tokio::select! {
                        () = stopping.cancelled() => {}
                        () = tokio::time::sleep(LINGER) => {}
                    }
                }
                let mut open = self.open.lock();
                match open.batches.iter().position(|b| b.id == id) {
                    Some(i) => open.batches.swap_remove(i).receipts,
                    // Filled and sent by another caller meanwhile.
                    None => return Settled::default(),
                }
            }
        };
        let settled = Settled {
            messages: batch.len(),
            bytes: batch.iter().map(|r| r.size).sum(),
        };
        settle(session, group, batch).await;
        settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(id: &str, topic: &str, endpoint: &Arc<Endpoints>) -> Receipt {
        Receipt {
            message_id: id.into(),
            topic: topic.into(),
            handle: format!("handle-{id}"),
            lite_topic: None,
            endpoints: endpoint.clone(),
            size: 10,
        }
    }

    fn entry(id: &str, code: pb::Code) -> pb::AckMessageResultEntry {
        pb::AckMessageResultEntry {
            message_id: id.into(),
            receipt_handle: String::new(),
            status: Some(pb::Status {
                code: code as i32,
                message: String::new(),
            }),
        }
    }

    #[test]
    fn given_receipts_of_two_topics_and_endpoints_when_chunked_should_split_by_request_and_size() {
        let a = Arc::new(Endpoints::from_access_point("127.0.0.1:1"));
        // Equal key, another allocation: still one request.
        let a2 = Arc::new(Endpoints::from_access_point("127.0.0.1:1"));
        let b = Arc::new(Endpoints::from_access_point("127.0.0.1:2"));
        let mut receipts = vec![
            receipt("1", "t", &a),
            receipt("2", "u", &a),
            receipt("3", "t", &b),
            receipt("4", "t", &a2),
        ];
        assert_eq!(chunks(&receipts), vec![vec![0, 3], vec![1], vec![2]]);
        receipts = (0..MAX_ENTRIES * 2 + 1)
            .map(|i| receipt(&i.to_string(), "t", &a))
            .collect();
        let sizes: Vec<usize> = chunks(&receipts).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![MAX_ENTRIES, MAX_ENTRIES, 1]);
    }

    #[test]
    fn given_a_reply_with_entries_when_matched_should_give_each_message_its_own_status() {
        let response = pb::AckMessageResponse {
            status: Some(pb::Status {
                code: pb::Code::MultipleResults as i32,
                message: String::new(),
            }),
            // Out of order, one missing.
            entries: vec![
                entry("b", pb::Code::InvalidReceiptHandle),
                entry("a", pb::Code::Ok),
                entry("d", pb::Code::TooManyRequests),
            ],
        };
        let results = entry_results(&["a", "b", "c", "d"], &response);
        assert!(results[0].is_ok());
        assert_eq!(
            results[1].as_ref().err().and_then(Error::code),
            Some(pb::Code::InvalidReceiptHandle as i32)
        );
        assert!(matches!(results[2], Err(Error::Protocol { .. })));
        assert!(results[3].as_ref().is_err_and(Error::is_retryable));
    }

    fn server(code: pb::Code) -> Error {
        Error::Server {
            rpc: RPC,
            code: code as i32,
            message: String::new(),
        }
    }

    /// Settles receipts `a`, `b`, `c` against `answer` (what one send returns for an id on
    /// its n-th send), and returns the ids of each send.
    async fn sends(answer: impl Fn(&str, usize) -> Result<()>) -> Vec<Vec<String>> {
        let a = Arc::new(Endpoints::from_access_point("127.0.0.1:1"));
        let receipts = vec![
            receipt("a", "t", &a),
            receipt("b", "t", &a),
            receipt("c", "t", &a),
        ];
        let mut sent: Vec<Vec<String>> = Vec::new();
        settle_with(receipts, Duration::ZERO, |batch| {
            let n = sent.len();
            sent.push(batch.iter().map(|r| r.message_id.clone()).collect());
            let results = batch.iter().map(|r| answer(&r.message_id, n)).collect();
            Box::pin(std::future::ready(results))
        })
        .await;
        sent
    }

    #[tokio::test]
    async fn given_entry_failures_when_settling_should_resend_only_the_transient_ones() {
        let sent = sends(|id, n| match (id, n) {
            ("b", 0) => Err(server(pb::Code::TooManyRequests)),
            ("c", _) => Err(server(pb::Code::InvalidReceiptHandle)),
            _ => Ok(()),
        })
        .await;
        assert_eq!(sent, vec![vec!["a", "b", "c"], vec!["b"]]);
    }

    #[tokio::test]
    async fn given_an_entry_that_keeps_failing_transiently_when_settling_should_give_up_after_the_attempts()
     {
        let sent = sends(|id, _| match id {
            "a" => Err(Error::Timeout {
                rpc: RPC,
                endpoint: "127.0.0.1:1".into(),
                after: Duration::from_secs(3),
            }),
            _ => Ok(()),
        })
        .await;
        assert_eq!(sent.len(), ATTEMPTS as usize);
        assert!(sent[1..].iter().all(|s| s == &["a"]));
    }

    #[test]
    fn given_a_reply_without_entries_when_matched_should_apply_its_status_to_all() {
        let ok = pb::AckMessageResponse {
            status: Some(pb::Status {
                code: pb::Code::Ok as i32,
                message: String::new(),
            }),
            entries: Vec::new(),
        };
        assert!(entry_results(&["a", "b"], &ok).iter().all(Result::is_ok));
        let busy = pb::AckMessageResponse {
            status: Some(pb::Status {
                code: pb::Code::TooManyRequests as i32,
                message: "slow down".into(),
            }),
            entries: Vec::new(),
        };
        let results = entry_results(&["a", "b"], &busy);
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().is_err_and(Error::is_retryable))
        );
    }
}
