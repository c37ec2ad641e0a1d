//! The replica side: follow the master named by the metadata.
//!
//! ```text
//!  handshake ─► start_action ─┬─ Follow(end) ─► Replicate stream: chunk ─► append_raw ─► progress
//!                             └─ Truncate / Wipe ─► ask the supervisor to reopen the store, end
//! ```
//!
//! Failures (master unreachable, refused, bytes that do not verify) end the attempt; the loop
//! retries from the handshake after a growing pause (100 ms .. 2 s). The supervisor aborts the
//! loop when the metadata names another master or the broker's role changes.

use std::sync::Arc;
use std::time::Duration;

use comet_proto::comet::v1 as pb;
use comet_proto::comet::v1::replication_service_client::ReplicationServiceClient;
use comet_store::EpochEntry;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use crate::api::BrokerApi;
use crate::engine::StorePrep;
use crate::ha::consumer_sync;
use crate::ha::role::{LogShape, StartAction, start_action};
use crate::outcome::blocking;

/// Largest replication message (a chunk holds at least one whole batch, up to the record limit).
const MAX_FRAME: usize = 256 << 20;

/// What the follower needs.
pub(crate) struct Follow {
    pub brokers: BrokerApi,
    pub broker_set: String,
    pub broker_id: u64,
    pub master_address: String,
    pub master_epoch: u64,
    /// Plaintext or mutual TLS to the master.
    pub connector: comet_auth::Connector,
}

/// Why an attempt ended.
enum Ended {
    /// The store must be reopened this way before following.
    Prepare(StorePrep),
    /// Something failed; retry after a pause.
    Failed(String),
}

/// Follows until aborted, or until the store must be cut or wiped: then sends the request on
/// `prepare` and returns (the supervisor reopens the store and starts a new follower).
pub(crate) async fn run(f: Follow, prepare: mpsc::Sender<StorePrep>) {
    let mut pause = Duration::from_millis(100);
    let channel = match connect(&f.master_address, &f.connector) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(master = %f.master_address, error = %e, "bad master address");
            return;
        }
    };
    loop {
        match follow_once(&f, channel.clone()).await {
            Ended::Prepare(p) => {
                let _ = prepare.send(p).await;
                return;
            }
            Ended::Failed(why) => {
                tracing::info!(master = %f.master_address, epoch = f.master_epoch, reason = %why,
                    "replication interrupted; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

fn connect(address: &str, connector: &comet_auth::Connector) -> Result<Channel, String> {
    let uri = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(connector.lazy_channel(&endpoint))
}

fn from_pb(e: &[pb::EpochEntry]) -> Vec<EpochEntry> {
    e.iter()
        .map(|e| EpochEntry {
            epoch: e.epoch,
            start_offset: e.start_offset,
        })
        .collect()
}

async fn follow_once(f: &Follow, channel: Channel) -> Ended {
    let inner = f.brokers.current();
    let Ok(store) = inner.store() else {
        return Ended::Failed("the broker is closing".into());
    };
    let mut client = ReplicationServiceClient::new(channel)
        .max_decoding_message_size(MAX_FRAME)
        .max_encoding_message_size(MAX_FRAME);
    let local_epochs = store.epochs();
    let (local_min, local_end) = (store.min_physical_offset(), store.write_offset());
    let hs = client
        .handshake(pb::HandshakeRequest {
            broker_set: f.broker_set.clone(),
            broker_id: f.broker_id,
            master_epoch: f.master_epoch,
            epochs: local_epochs
                .iter()
                .map(|e| pb::EpochEntry {
                    epoch: e.epoch,
                    start_offset: e.start_offset,
                })
                .collect(),
            end_offset: local_end,
        })
        .await;
    let hs = match hs {
        Ok(r) => r.into_inner(),
        Err(s) => return Ended::Failed(format!("handshake: {} ({:?})", s.message(), s.code())),
    };
    if hs.segment_size != store.segment_size() as u64 {
        tracing::error!(
            master_segment_size = hs.segment_size,
            segment_size = store.segment_size(),
            "broker.segment_size differs from the master's; a replica must use the same value"
        );
        return Ended::Failed("segment sizes differ".into());
    }
    let remote_epochs = from_pb(&hs.epochs);
    let action = start_action(
        LogShape {
            epochs: &local_epochs,
            min: local_min,
            end: local_end,
        },
        LogShape {
            epochs: &remote_epochs,
            min: hs.min_offset,
            end: hs.end_offset,
        },
    );
    let from = match action {
        StartAction::Follow(from) => from,
        StartAction::Truncate(to) => {
            tracing::warn!(
                local_end,
                to,
                master_end = hs.end_offset,
                "log diverges from the master's: cutting the tail"
            );
            return Ended::Prepare(StorePrep::Truncate(to));
        }
        StartAction::Wipe(start) => {
            tracing::warn!(
                local_end,
                start,
                master_min = hs.min_offset,
                "log shares nothing usable with the master's: starting over"
            );
            return Ended::Prepare(StorePrep::Wipe(start));
        }
    };
    let progress = |offset: i64| pb::ReplicaProgress {
        broker_set: f.broker_set.clone(),
        broker_id: f.broker_id,
        master_epoch: f.master_epoch,
        offset,
    };
    let (tx, rx) = mpsc::channel::<pb::ReplicaProgress>(64);
    if tx.send(progress(from)).await.is_err() {
        return Ended::Failed("progress channel closed".into());
    }
    let mut frames = match client
        .replicate(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => return Ended::Failed(format!("replicate: {} ({:?})", s.message(), s.code())),
    };
    tracing::info!(master = %f.master_address, epoch = f.master_epoch, from, "following the master");
    loop {
        let frame = match frames.message().await {
            Ok(Some(fr)) => fr,
            Ok(None) => return Ended::Failed("the master ended the stream".into()),
            Err(s) => return Ended::Failed(format!("stream: {} ({:?})", s.message(), s.code())),
        };
        match frame.frame {
            Some(pb::replication_frame::Frame::Chunk(c)) => {
                let confirmed = if c.data.is_empty() {
                    store.write_offset()
                } else {
                    let s = Arc::clone(&store);
                    let (epoch, offset) = (c.epoch, c.offset);
                    match blocking(move || s.append_raw(epoch, offset, &c.data)).await {
                        Ok(Ok(done)) => done.end,
                        Ok(Err(e)) => return Ended::Failed(format!("append at {offset}: {e}")),
                        Err(f) => return Ended::Failed(f.message),
                    }
                };
                if tx.send(progress(confirmed)).await.is_err() {
                    return Ended::Failed("progress stream closed".into());
                }
            }
            Some(pb::replication_frame::Frame::ConsumerOffsets(o)) => {
                let decoded = consumer_sync::decode(o);
                for (key, why) in &decoded.rejected {
                    tracing::warn!(group = %key.group, topic = %key.topic, queue_id = key.queue_id,
                        reason = why, "ignoring the master's state of a queue");
                }
                let changed = inner.adopt_consumer_state(decoded.records);
                if changed > 0 {
                    tracing::debug!(queues = changed, "adopted the master's consumer state");
                }
            }
            None => {}
        }
    }
}
