//! [`ReplicationGrpc`]: the master side of `comet.v1.ReplicationService`.
//!
//! One `Replicate` stream per replica: a reader task records the replica's confirmations in the
//! [`Tracker`]; a sender task streams the log from where the replica stands, in chunks of whole
//! records that never straddle an epoch boundary, waits on appends when it has caught up, and
//! sends an empty chunk as a heartbeat every `heartbeat_interval` of silence (so an idle replica
//! still proves it is caught up) and the groups' consume offsets every
//! `consumer_offsets_interval`. Streams end when the broker instance closes (a role change or
//! shutdown): they run on the instance's task tracker, not as running calls.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use comet_proto::comet::v1 as pb;
use comet_proto::comet::v1::replication_service_server::ReplicationService;
use comet_store::EpochEntry;
use futures::Stream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::api::BrokerApi;
use crate::engine::{EngineRole, Inner};
use crate::ha::config::HaConfig;
use crate::ha::consumer_sync;
use crate::ha::lease::{ControllerLink, master_gate};
use crate::ha::tracker::Tracker;
use crate::outcome::blocking;

/// The stream of frames a master sends one replica.
pub type ReplicationStream =
    Pin<Box<dyn Stream<Item = Result<pb::ReplicationFrame, Status>> + Send + 'static>>;

/// The replication service of a broker; serve it next to its `BrokerService` (wrap it in
/// `ReplicationServiceServer::new`). Only a master answers; others refuse with
/// FAILED_PRECONDITION.
#[derive(Clone)]
pub struct ReplicationGrpc {
    brokers: BrokerApi,
    cfg: Arc<HaConfig>,
}

impl std::fmt::Debug for ReplicationGrpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationGrpc").finish_non_exhaustive()
    }
}

impl ReplicationGrpc {
    pub(crate) fn new(brokers: BrokerApi, cfg: Arc<HaConfig>) -> Self {
        ReplicationGrpc { brokers, cfg }
    }
}

/// The tracker of `inner` if it is the master of `broker_set` at `epoch`.
fn master_of(inner: &Inner, broker_set: &str, epoch: u64) -> Result<Arc<Tracker>, Status> {
    if broker_set != inner.cfg.broker_set {
        return Err(Status::invalid_argument(format!(
            "this broker belongs to broker set {}, not {broker_set}",
            inner.cfg.broker_set
        )));
    }
    match &inner.role {
        EngineRole::Master { tracker, .. } if tracker.epoch == epoch => Ok(Arc::clone(tracker)),
        EngineRole::Master { tracker, .. } => Err(Status::failed_precondition(format!(
            "broker {} is the master of {broker_set} at epoch {}, not {epoch}; re-read the \
             metadata",
            inner.cfg.broker_id, tracker.epoch
        ))),
        _ => Err(Status::failed_precondition(format!(
            "broker {} is not the master of {broker_set}",
            inner.cfg.broker_id
        ))),
    }
}

fn to_pb(e: &[EpochEntry]) -> Vec<pb::EpochEntry> {
    e.iter()
        .map(|e| pb::EpochEntry {
            epoch: e.epoch,
            start_offset: e.start_offset,
        })
        .collect()
}

/// The epoch that wrote `offset` and where the next epoch starts (the chunk limit). Data
/// below the first recorded epoch (a log from before replication) counts as epoch 0.
pub(crate) fn epoch_at(epochs: &[EpochEntry], offset: i64) -> (u64, i64) {
    let i = epochs.partition_point(|e| e.start_offset <= offset);
    let epoch = if i == 0 { 0 } else { epochs[i - 1].epoch };
    let limit = epochs.get(i).map_or(i64::MAX, |e| e.start_offset);
    (epoch, limit)
}

#[tonic::async_trait]
impl ReplicationService for ReplicationGrpc {
    async fn handshake(
        &self,
        request: Request<pb::HandshakeRequest>,
    ) -> Result<Response<pb::HandshakeResponse>, Status> {
        let req = request.into_inner();
        let (inner, _call) = self
            .brokers
            .enter()
            .await
            .map_err(|u| Status::unavailable(u.0))?;
        master_of(&inner, &req.broker_set, req.master_epoch)?;
        let store = inner.store().map_err(|f| Status::unavailable(f.message))?;
        tracing::info!(broker_set = %req.broker_set, replica = req.broker_id,
            replica_end = req.end_offset, epoch = req.master_epoch, "replica handshake");
        Ok(Response::new(pb::HandshakeResponse {
            epochs: to_pb(&store.epochs()),
            min_offset: store.min_physical_offset(),
            end_offset: store.write_offset(),
            segment_size: store.segment_size() as u64,
        }))
    }

    type ReplicateStream = ReplicationStream;

    async fn replicate(
        &self,
        request: Request<Streaming<pb::ReplicaProgress>>,
    ) -> Result<Response<Self::ReplicateStream>, Status> {
        let mut progress = request.into_inner();
        let first = progress.message().await?.ok_or_else(|| {
            Status::invalid_argument("the stream must start with ReplicaProgress")
        })?;
        let (inner, call) = self
            .brokers
            .enter()
            .await
            .map_err(|u| Status::unavailable(u.0))?;
        let tracker = master_of(&inner, &first.broker_set, first.master_epoch)?;
        // The stream itself does not hold the broker's shutdown back.
        drop(call);
        let store = inner.store().map_err(|f| Status::unavailable(f.message))?;
        let (min, end) = (store.min_physical_offset(), store.write_offset());
        if first.offset < min || first.offset > end {
            return Err(Status::invalid_argument(format!(
                "offset {} is outside the master's log [{min}, {end}]; handshake again",
                first.offset
            )));
        }
        if first.broker_id == inner.cfg.broker_id {
            return Err(Status::invalid_argument(
                "a broker cannot replicate from itself",
            ));
        }
        let id = first.broker_id;
        tracing::info!(broker_set = %first.broker_set, replica = id, from = first.offset,
            epoch = tracker.epoch, "replica connected");
        tracker.connected(id, first.offset, Instant::now());
        let shutdown = inner.shutdown.clone();
        // Confirmations.
        {
            let tracker = Arc::clone(&tracker);
            let shutdown = inner.shutdown.clone();
            inner.tasks.spawn(async move {
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        msg = progress.next() => match msg {
                            Some(Ok(p)) => tracker.progress(id, p.offset),
                            Some(Err(e)) => {
                                tracing::info!(replica = id, error = %e, "replica stream failed");
                                break;
                            }
                            None => break,
                        },
                    }
                }
                tracker.disconnected(id);
                tracing::info!(replica = id, "replica disconnected");
            });
        }
        // The log.
        let (tx, rx) = mpsc::channel::<Result<pb::ReplicationFrame, Status>>(4);
        let cfg = Arc::clone(&self.cfg);
        let streams = inner.tasks.clone();
        streams.spawn(async move {
            let sent = stream_log(&inner, &tracker, id, first.offset, &cfg, &tx, &shutdown).await;
            if let Err(status) = sent {
                send(&tx, Err(status), &shutdown).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

fn frame(f: pb::replication_frame::Frame) -> Result<pb::ReplicationFrame, Status> {
    Ok(pb::ReplicationFrame { frame: Some(f) })
}

/// Sends one frame to the replica's stream; false when the replica went away or the broker
/// is stopping (a replica that stopped reading must not hold the stop back).
async fn send(
    tx: &mpsc::Sender<Result<pb::ReplicationFrame, Status>>,
    f: Result<pb::ReplicationFrame, Status>,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        sent = tx.send(f) => sent.is_ok(),
        () = shutdown.cancelled() => false,
    }
}

/// Sends the log to replica `id` from `from` until the replica goes away or the broker closes.
async fn stream_log(
    inner: &Arc<Inner>,
    tracker: &Tracker,
    id: u64,
    from: i64,
    cfg: &HaConfig,
    tx: &mpsc::Sender<Result<pb::ReplicationFrame, Status>>,
    shutdown: &CancellationToken,
) -> Result<(), Status> {
    let mut next = from;
    let mut offsets_due = Instant::now();
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let store = inner.store().map_err(|f| Status::unavailable(f.message))?;
        if Instant::now() >= offsets_due {
            offsets_due = Instant::now() + cfg.consumer_offsets_interval;
            let f = frame(pb::replication_frame::Frame::ConsumerOffsets(
                consumer_sync::encode(inner.consumer_records()),
            ));
            if !send(tx, f, shutdown).await {
                return Ok(());
            }
        }
        let (epoch, limit) = epoch_at(&store.epochs(), next);
        let master_end = store.write_offset();
        if next < master_end {
            let (s, max) = (Arc::clone(&store), cfg.chunk_bytes);
            let chunk = blocking(move || s.read_raw(next, max, limit))
                .await
                .map_err(|f| Status::internal(f.message))?
                .map_err(|e| Status::invalid_argument(format!("reading the log at {next}: {e}")))?;
            if chunk.end > next {
                let end = chunk.end;
                let f = frame(pb::replication_frame::Frame::Chunk(pb::LogChunk {
                    epoch,
                    offset: next,
                    data: chunk.data,
                    end,
                    master_end,
                }));
                if !send(tx, f, shutdown).await {
                    return Ok(());
                }
                if end >= master_end {
                    tracker.sent_to_end(id, end, Instant::now());
                }
                next = end;
                continue;
            }
        }
        // Caught up: wait for an append, or send a heartbeat after a quiet interval.
        let s = Arc::clone(&store);
        let woken = tokio::select! {
            w = inner.append_wake.wait(cfg.heartbeat_interval, move || s.write_offset() > next) => w,
            () = shutdown.cancelled() => return Ok(()),
        };
        if !woken {
            let master_end = store.write_offset();
            let f = frame(pb::replication_frame::Frame::Chunk(pb::LogChunk {
                epoch,
                offset: next,
                data: Vec::new(),
                end: next,
                master_end,
            }));
            if !send(tx, f, shutdown).await {
                return Ok(());
            }
            if next >= master_end {
                tracker.sent_to_end(id, next, Instant::now());
            }
        }
    }
}

/// Keeps one master's sync-state set right: every tick, asks the controller to drop members
/// that fell behind and to add replicas that caught up (see [`Tracker::plan_change`]).
pub(crate) async fn manage_sync_state_set(
    inner: Arc<Inner>,
    tracker: Arc<Tracker>,
    link: Arc<dyn ControllerLink>,
    lease: tokio::sync::watch::Receiver<Option<std::time::Instant>>,
) {
    let refresh_gate = |store: &comet_store::MessageStore| {
        store.set_write_gate(master_gate(*lease.borrow(), &tracker));
    };
    let tick = (tracker.limits().max_time / 10)
        .clamp(Duration::from_millis(20), Duration::from_millis(500));
    loop {
        tokio::select! {
            () = inner.shutdown.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
        }
        let Ok(store) = inner.store() else { return };
        let Some(next) = tracker.plan_change(store.write_offset(), Instant::now()) else {
            continue;
        };
        // A member being added makes the master replaceable: fence it before asking.
        refresh_gate(&store);
        let req = pb::AlterSyncStateSetRequest {
            broker_set: inner.cfg.broker_set.clone(),
            master_broker_id: tracker.broker_id,
            master_epoch: tracker.epoch,
            sync_state_set: next.clone(),
        };
        tracing::info!(broker_set = %inner.cfg.broker_set, epoch = tracker.epoch,
            from = ?tracker.sync_state_set(), to = ?next, "changing the sync-state set");
        match link.alter_sync_state_set(req).await {
            Ok(set) => tracker.committed(&set.sync_state_set),
            Err(e) => {
                tracing::warn!(broker_set = %inner.cfg.broker_set, code = ?e.code(),
                    msg = e.message(), "sync-state set change failed; retrying");
                tracker.request_failed();
            }
        }
        refresh_gate(&store);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_at_finds_the_writer_and_the_next_boundary() {
        let h = [
            EpochEntry {
                epoch: 2,
                start_offset: 100,
            },
            EpochEntry {
                epoch: 5,
                start_offset: 300,
            },
        ];
        assert_eq!(epoch_at(&h, 0), (0, 100));
        assert_eq!(epoch_at(&h, 100), (2, 300));
        assert_eq!(epoch_at(&h, 299), (2, 300));
        assert_eq!(epoch_at(&h, 300), (5, i64::MAX));
        assert_eq!(epoch_at(&[], 7), (0, i64::MAX));
    }
}
