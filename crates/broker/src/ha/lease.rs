//! A master and its controller: the link it asks for sync-state-set changes
//! ([`ControllerLink`]), and the write gate its lease sets ([`master_gate`]).

use comet_proto::comet::v1::{AlterSyncStateSetRequest, BrokerSet};
use comet_store::WriteGate;

use crate::ha::tracker::Tracker;

/// The controller, as a master needs it.
#[tonic::async_trait]
pub trait ControllerLink: Send + Sync + 'static {
    /// Asks the controller to replace the sync-state set (see `AlterSyncStateSet`); returns
    /// the broker set as committed.
    ///
    /// # Errors
    /// The controller's status (FAILED_PRECONDITION when this broker is no longer the master
    /// of that epoch), or UNAVAILABLE when no controller answered.
    async fn alter_sync_state_set(
        &self,
        req: AlterSyncStateSetRequest,
    ) -> Result<BrokerSet, tonic::Status>;
}

/// The write gate of a master: open until its lease deadline (closed without one) while
/// another member is or is becoming part of its sync-state set, since only then could the
/// controller elect someone else. A master alone in its set cannot be replaced (elections pick
/// from the set; unclean elections aside), so it keeps writing without the controller.
pub(crate) fn master_gate(lease: Option<std::time::Instant>, tracker: &Tracker) -> WriteGate {
    if !tracker.replicated() {
        return WriteGate::Open;
    }
    match lease {
        Some(deadline) => WriteGate::Until {
            deadline,
            reason: LAPSED.into(),
        },
        None => WriteGate::Closed(LAPSED.into()),
    }
}

const LAPSED: &str = "this broker cannot confirm that it is still the master (its lease with \
                      the controller lapsed); retry: the cluster elects a new master";
