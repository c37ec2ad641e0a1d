//! Consumer-state owners: whose position a (group, topic, queue) state is. A clustering
//! group owns its own; in a broadcast group each client owns one, named
//! `"<group>@<client id>"` (a group name never contains `@`: `comet_vocab::names`). Also when
//! each broadcast owner last received (the `broadcast` module expires silent ones).

use std::collections::HashMap;

use parking_lot::Mutex;

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

/// When each broadcast client (by owner) last received, ms since the epoch.
#[derive(Debug, Default)]
pub(crate) struct Clients {
    seen: Mutex<HashMap<String, i64>>,
}

impl Clients {
    pub(crate) fn touch(&self, owner: &str, now: i64) {
        let mut seen = self.seen.lock();
        match seen.get_mut(owner) {
            Some(t) => *t = now,
            None => {
                seen.insert(owner.to_owned(), now);
            }
        }
    }

    /// The owners among `present` whose last receive is `ttl_ms` or more before `now`;
    /// owners seen for the first time count from `now`, and owners no longer present are
    /// forgotten.
    pub(crate) fn expired(&self, present: &[String], now: i64, ttl_ms: i64) -> Vec<String> {
        let mut seen = self.seen.lock();
        seen.retain(|o, _| present.binary_search(o).is_ok());
        present
            .iter()
            .filter(|o| {
                let last = *seen.entry((*o).clone()).or_insert(now);
                now.saturating_sub(last) >= ttl_ms
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
        let c = Clients::default();
        let owners = vec!["g@a".to_owned(), "g@b".to_owned()];
        assert!(
            c.expired(&owners, 1_000, 500).is_empty(),
            "first sight counts"
        );
        c.touch("g@a", 1_400);
        assert_eq!(c.expired(&owners, 1_600, 500), vec!["g@b".to_owned()]);
        assert_eq!(c.expired(&owners, 1_900, 500), vec!["g@a", "g@b"]);
        // Removed owners are forgotten; one that comes back counts afresh.
        assert!(c.expired(&[], 2_000, 500).is_empty());
        assert!(c.expired(&owners, 2_100, 500).is_empty());
    }
}
