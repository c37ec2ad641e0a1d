//! Broadcast consumer groups (`Group.broadcast`): every client of the group receives every
//! message, each from its own position.
//!
//! The consumer state of a broadcast group is kept per client: its *owner* is
//! `"<group>@<client id>"` (a group name never contains `@`: `comet_vocab::names`), used
//! wherever a clustering group uses the group name (the `QueueKey` of each queue, so the pop
//! position, messages in flight, the state log and the replicas' copy; the receipt-handle
//! checksum, so one client cannot acknowledge another's delivery). The client id is the
//! `x-mq-client-id` the proxy forwards with each call.
//!
//! - **Start**: a client the broker has no position for starts at the end of each queue, or at
//!   the earliest stored message with `Group.broadcast_from_start`.
//! - **Retries**: per client, in place, like a clustering group's (attempts, invisible time,
//!   the group's backoff and `max_retries`).
//! - **Dead letters**: a message one client exhausted goes to the group's `%DLQ%<group>`, one
//!   copy per client that exhausted it, with the client in the user property
//!   `DLQ_CLIENT_ID` (`sys`) (dead-letter topics are the group's, not the client's: they outlive
//!   clients).
//! - **Expiry**: a client's position is kept while it receives (a long poll waiting counts).
//!   After `broadcast_client_ttl` since its last receive ended (from this broker instance's
//!   point of view:
//!   positions restored at start or adopted from a master count from when it first sees them)
//!   the writer removes every queue of the client, with its messages in flight; the removal
//!   is a tombstone in the state log. A client coming back afterwards starts afresh.
//! - A client that restarts under the same client id resumes where it was: its acknowledged
//!   messages are not delivered again, and those it held come back after their invisible time.
//!   The official clients make a new id per start, so for them a restart is a new client.

use std::borrow::Cow;

use crate::api::BrokerApi;
use crate::clock::{duration_ms, now_ms};
use crate::config::ConsumeFrom;
use crate::engine::Inner;
use crate::meta::MetaIndex;
use crate::outcome::{Code, Failure};
use crate::owner::{Receiving, SEPARATOR, client_of, group_of};

/// Longest client id accepted for a broadcast group (the official clients' are ~60 bytes).
const CLIENT_ID_MAX_LEN: usize = 255;

impl Inner {
    /// The owner of the consumer state a call of `group` by `client_id` uses: the group
    /// itself, or for a broadcast group `"<group>@<client id>"`.
    ///
    /// # Errors
    /// CLIENT_ID_REQUIRED when a broadcast group's call names no client (or one that is
    /// too long or not printable ASCII).
    pub(crate) fn consumer_owner<'a>(
        &self,
        group: &'a str,
        client_id: &str,
    ) -> Result<Cow<'a, str>, Failure> {
        let broadcast = self.meta.index().group(group).is_some_and(|g| g.broadcast);
        if !broadcast {
            return Ok(Cow::Borrowed(group));
        }
        if client_id.is_empty()
            || client_id.len() > CLIENT_ID_MAX_LEN
            || !client_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Failure::new(
                Code::ClientIdRequired,
                format!(
                    "consumer group {group:?} is a broadcast group: each call needs the \
                     client's id (x-mq-client-id, 1..={CLIENT_ID_MAX_LEN} printable ASCII \
                     characters), which keys the client's own position"
                ),
            ));
        }
        Ok(Cow::Owned(format!("{group}{SEPARATOR}{client_id}")))
    }

    /// Records a receive by `owner` until the guard drops: a broadcast client's position stays
    /// alive while it receives (long polls included) and for the TTL after.
    pub(crate) fn broadcast_receiving(&self, owner: &str) -> Receiving<'_> {
        self.broadcast_clients.receiving(owner, now_ms())
    }

    /// Where a queue of `owner` starts when it has no position yet.
    pub(crate) fn start_of(&self, idx: &MetaIndex, owner: &str) -> ConsumeFrom {
        if client_of(owner).is_none() {
            return self.cfg.consume_from;
        }
        match idx.group(group_of(owner)) {
            Some(g) if g.broadcast_from_start => ConsumeFrom::First,
            _ => ConsumeFrom::Last,
        }
    }

    /// Removes the positions of broadcast clients that have not received for
    /// `broadcast_client_ttl`; returns how many clients were removed. Scans the owners, one
    /// entry per (group or client): run every few seconds, not per call.
    pub(crate) fn expire_broadcast_clients(&self) -> usize {
        let owners: Vec<String> = self
            .consumers
            .owners()
            .into_iter()
            .filter(|o| client_of(o).is_some())
            .collect();
        let ttl_ms = duration_ms(self.cfg.broadcast_client_ttl);
        let expired = self.broadcast_clients.expired(&owners, now_ms(), ttl_ms);
        for owner in &expired {
            let queues = self.consumers.remove_owner(owner);
            tracing::info!(group = %group_of(owner), client = client_of(owner).unwrap_or(""),
                queues, "broadcast client position expired");
        }
        if !expired.is_empty() {
            self.persist_inline();
            let n = expired.len() as u64;
            self.broadcast_clients.removed.send_modify(|r| *r += n);
        }
        expired.len()
    }

    /// The clients of broadcast group `group` that have a position here, sorted.
    pub(crate) fn broadcast_client_ids(&self, group: &str) -> Vec<String> {
        self.consumers
            .owners()
            .iter()
            .filter(|o| group_of(o) == group)
            .filter_map(|o| client_of(o).map(str::to_owned))
            .collect()
    }
}

impl BrokerApi {
    /// The clients of broadcast group `group` (qualified name) that have a position on this
    /// broker instance, sorted: a client appears at its first receive and leaves when its
    /// position expires.
    pub fn broadcast_clients(&self, group: &str) -> Vec<String> {
        self.current().broadcast_client_ids(group)
    }

    /// How many broadcast client positions the current broker instance has expired so far
    /// (after `broadcast_client_ttl` of silence); the value changes once a removal is
    /// persisted, so a caller can wait for the next expiry instead of polling
    /// [`BrokerApi::broadcast_clients`]. A new instance (restart, role change) counts from 0.
    pub fn broadcast_expiries(&self) -> tokio::sync::watch::Receiver<u64> {
        self.current().broadcast_clients.removed.subscribe()
    }
}
