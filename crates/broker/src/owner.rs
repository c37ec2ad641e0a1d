//! Consumer-state owners: whose position a (group, topic, queue) state is. A clustering
//! group owns its own; in a broadcast group each client owns one, named
//! `"<group>@<client id>"` (a group name never contains `@`: `comet_vocab::names`). Also when
//! each broadcast owner last received (the `broadcast` module expires silent ones).

use std::collections::HashMap;

use parking_lot::Mutex;
use tokio::sync::watch;

/// Separates the group from the client id in a broadcast owner.
pub(crate) const SEPARATOR: char = '@';

/// The group of a consumer-state owner (the owner itself for a clustering group).
pub(crate) fn group_of(owner: &str) -> &str {
    owner.split_once(SEPARATOR).map_or(owner, |(g, _)| g)
}

/// The client of a broadcast owner.
pub(crate) fn client_of(owner: &str) -> Option<&str> {
    owner.split_once(SEPARATOR).map(|(_, c)| c)
}

/// A broadcast client as the expiry sees it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// When its last receive began or ended, ms since the epoch.
    last_ms: i64,
    /// Its receives in progress (a long poll keeps the client alive however long it waits).
    receiving: u32,
}

/// When each broadcast client (by owner) last received, and whether it is receiving now.
#[derive(Debug, Default)]
pub(crate) struct Clients {
    seen: Mutex<HashMap<String, Seen>>,
    /// How many client positions the expiry removed so far (bumped once the removal is
    /// persisted), for whoever waits for an expiry.
    pub(crate) removed: watch::Sender<u64>,
}

/// A receive in progress (see [`Clients::receiving`]); ends when dropped.
pub(crate) struct Receiving<'a> {
    clients: &'a Clients,
    owner: Option<String>,
}

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.take() {
            let mut seen = self.clients.seen.lock();
            if let Some(s) = seen.get_mut(&owner) {
                s.receiving = s.receiving.saturating_sub(1);
                s.last_ms = crate::clock::now_ms();
            }
        }
    }
}

impl Clients {
    /// Records that `owner` receives from `now` until the guard drops (nothing for a
    /// clustering group's owner).
    pub(crate) fn receiving(&self, owner: &str, now: i64) -> Receiving<'_> {
        if client_of(owner).is_none() {
            return Receiving {
                clients: self,
                owner: None,
            };
        }
        let mut seen = self.seen.lock();
        match seen.get_mut(owner) {
            Some(s) => {
                s.last_ms = now;
                s.receiving += 1;
            }
            None => {
                seen.insert(
                    owner.to_owned(),
                    Seen {
                        last_ms: now,
                        receiving: 1,
                    },
                );
            }
        }
        Receiving {
            clients: self,
            owner: Some(owner.to_owned()),
        }
    }

    /// The owners among `present` (sorted) that are not receiving and whose last receive is
    /// `ttl_ms` or more before `now`; owners seen for the first time count from `now`, and
    /// owners neither present nor receiving are forgotten.
    pub(crate) fn expired(&self, present: &[String], now: i64, ttl_ms: i64) -> Vec<String> {
        let mut seen = self.seen.lock();
        seen.retain(|o, s| s.receiving > 0 || present.binary_search(o).is_ok());
        present
            .iter()
            .filter(|o| {
                let s = *seen.entry((*o).clone()).or_insert(Seen {
                    last_ms: now,
                    receiving: 0,
                });
                s.receiving == 0 && now.saturating_sub(s.last_ms) >= ttl_ms
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn given_owner_when_split_should_give_group_and_client() {
        assert_eq!(group_of("ns%g@host@1@2@abc"), "ns%g");
        assert_eq!(client_of("ns%g@host@1@2@abc"), Some("host@1@2@abc"));
        assert_eq!(group_of("plain"), "plain");
        assert_eq!(client_of("plain"), None);
    }

    #[test]
    fn given_clients_when_ttl_passes_without_receives_should_expire_only_the_silent() {
        // A receive's end is stamped with the wall clock: the times here are around it.
        let now = crate::clock::now_ms;
        let c = Clients::default();
        let owners = vec!["g@a".to_owned(), "g@b".to_owned()];
        let t = now();
        assert!(
            c.expired(&owners, t - 5_000, 500).is_empty(),
            "first sight counts"
        );
        let receiving = c.receiving("g@b", t);
        assert_eq!(
            c.expired(&owners, t + 10_000, 500),
            vec!["g@a".to_owned()],
            "a client in a receive (a long poll) is alive however long it waits"
        );
        drop(receiving);
        assert_eq!(
            c.expired(&owners, now() + 100, 500),
            vec!["g@a".to_owned()],
            "the TTL counts from the end of the last receive"
        );
        assert_eq!(c.expired(&owners, now() + 10_000, 500), vec!["g@a", "g@b"]);
        // Removed owners are forgotten; one that comes back counts afresh.
        assert!(c.expired(&[], t, 500).is_empty());
        assert!(c.expired(&owners, now() + 20_000, 500).is_empty());
    }
}
