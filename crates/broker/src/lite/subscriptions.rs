//! Lite subscriptions: which lite topics of a parent topic each client consumes for its group.
//!
//! Soft state, kept in memory only: the official lite consumers send their whole set
//! (COMPLETE_ADD) every 30 s, so a restarted broker has every live client's set back within
//! that time (the group's positions on the lite topics are persisted with the consumer state
//! and survive). A client that neither syncs nor receives for [`CLIENT_TTL`] is forgotten.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;

use super::index::state_key;

/// How long a client's subscription outlives its last sync or receive: a little more than
/// three of the official clients' 30 s full syncs.
pub(crate) const CLIENT_TTL_MS: i64 = 100_000;

/// What a SyncLiteSubscription does to the client's set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiteAction {
    /// Adds the named lite topics.
    PartialAdd,
    /// Removes the named lite topics.
    PartialRemove,
    /// Replaces the set with the named lite topics.
    CompleteAdd,
    /// Removes every lite topic of the client on the parent topic.
    CompleteRemove,
}

/// Who a subscription belongs to: (group, client id, parent topic).
type ClientKey = (String, String, String);

/// One lite topic of a client: its name and its consumer-state key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscribed {
    pub lite: String,
    pub key: String,
}

#[derive(Debug, Default)]
struct ClientSubs {
    lites: BTreeSet<String>,
    /// `lites` with their state keys, rebuilt on change (pops take it without copying).
    list: Arc<Vec<Subscribed>>,
    last_seen_ms: i64,
    /// Lite topics dropped by the broker, not yet told to the client.
    notices: Vec<String>,
    /// Where the next pop starts in `list` (fairness among lite topics).
    cursor: usize,
}

impl ClientSubs {
    fn rebuild(&mut self, parent: &str) {
        self.list = Arc::new(
            self.lites
                .iter()
                .map(|l| Subscribed {
                    lite: l.clone(),
                    key: state_key(parent, l),
                })
                .collect(),
        );
    }
}

/// Every client's lite subscriptions on this broker.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    clients: Mutex<HashMap<ClientKey, ClientSubs>>,
}

/// The set would exceed the quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OverQuota {
    pub would_hold: usize,
}

impl Subscriptions {
    /// Applies `action` with `lites` to the client's set at `now_ms`; refuses (leaving the set
    /// as it was) when the result would hold more than `quota` lite topics.
    pub(crate) fn sync(
        &self,
        who: (&str, &str, &str),
        action: LiteAction,
        lites: &[String],
        quota: usize,
        now_ms: i64,
    ) -> Result<usize, OverQuota> {
        let (group, client, parent) = who;
        let key = (group.to_owned(), client.to_owned(), parent.to_owned());
        let mut clients = self.clients.lock();
        let subs = clients.entry(key.clone()).or_default();
        subs.last_seen_ms = now_ms;
        let next: BTreeSet<String> = match action {
            LiteAction::PartialAdd => subs.lites.iter().chain(lites).cloned().collect(),
            LiteAction::PartialRemove => subs
                .lites
                .iter()
                .filter(|l| !lites.contains(l))
                .cloned()
                .collect(),
            LiteAction::CompleteAdd => lites.iter().cloned().collect(),
            LiteAction::CompleteRemove => BTreeSet::new(),
        };
        if next.len() > quota && next.len() > subs.lites.len() {
            let would_hold = next.len();
            if subs.lites.is_empty() && subs.notices.is_empty() {
                clients.remove(&key);
            }
            return Err(OverQuota { would_hold });
        }
        let n = next.len();
        if next != subs.lites {
            subs.lites = next;
            subs.rebuild(parent);
        }
        if n == 0 && subs.notices.is_empty() {
            clients.remove(&key);
        }
        Ok(n)
    }

    /// The client's lite topics, rotated so that each pop starts one further (fairness);
    /// refreshes its last-seen time. `None` when it has none.
    pub(crate) fn for_pop(
        &self,
        who: (&str, &str, &str),
        now_ms: i64,
    ) -> Option<(Arc<Vec<Subscribed>>, usize)> {
        let (group, client, parent) = who;
        let mut clients = self.clients.lock();
        let subs = clients.get_mut(&(group.to_owned(), client.to_owned(), parent.to_owned()))?;
        subs.last_seen_ms = now_ms;
        if subs.list.is_empty() {
            return None;
        }
        let start = subs.cursor % subs.list.len();
        subs.cursor = subs.cursor.wrapping_add(1);
        Some((Arc::clone(&subs.list), start))
    }

    /// Whether the client has notices waiting.
    pub(crate) fn has_notices(&self, who: (&str, &str, &str)) -> bool {
        let (group, client, parent) = who;
        self.clients
            .lock()
            .get(&(group.to_owned(), client.to_owned(), parent.to_owned()))
            .is_some_and(|s| !s.notices.is_empty())
    }

    /// Takes the client's notices (lite topics the broker dropped from its set).
    pub(crate) fn take_notices(&self, who: (&str, &str, &str)) -> Vec<String> {
        let (group, client, parent) = who;
        let key = (group.to_owned(), client.to_owned(), parent.to_owned());
        let mut clients = self.clients.lock();
        let Some(subs) = clients.get_mut(&key) else {
            return Vec::new();
        };
        let out = std::mem::take(&mut subs.notices);
        if subs.lites.is_empty() {
            clients.remove(&key);
        }
        out
    }

    /// Drops the expired lite topics `(parent, lite)` from every set that holds them, with a
    /// notice to each such client; returns the parents whose clients were told.
    pub(crate) fn drop_topics(&self, expired: &[(String, String)]) -> BTreeSet<String> {
        let mut woken = BTreeSet::new();
        if expired.is_empty() {
            return woken;
        }
        let mut by_parent: HashMap<&str, Vec<&str>> = HashMap::new();
        for (p, l) in expired {
            by_parent.entry(p.as_str()).or_default().push(l.as_str());
        }
        let mut clients = self.clients.lock();
        for ((_, _, parent), subs) in clients.iter_mut() {
            let Some(lites) = by_parent.get(parent.as_str()) else {
                continue;
            };
            let mut changed = false;
            for l in lites {
                if subs.lites.remove(*l) {
                    subs.notices.push((*l).to_owned());
                    changed = true;
                }
            }
            if changed {
                subs.rebuild(parent);
                woken.insert(parent.clone());
            }
        }
        woken
    }

    /// Forgets clients silent since `now_ms - CLIENT_TTL_MS`; returns how many.
    pub(crate) fn expire_clients(&self, now_ms: i64) -> usize {
        let mut clients = self.clients.lock();
        let before = clients.len();
        clients.retain(|_, s| now_ms.saturating_sub(s.last_seen_ms) < CLIENT_TTL_MS);
        before - clients.len()
    }

    /// Number of (client, lite topic) subscriptions.
    pub(crate) fn count(&self) -> usize {
        self.clients.lock().values().map(|s| s.lites.len()).sum()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn list(s: &Subscriptions, who: (&str, &str, &str)) -> Vec<String> {
        s.for_pop(who, 0)
            .map(|(l, _)| l.iter().map(|x| x.lite.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn given_actions_when_synced_should_add_remove_replace_and_clear() {
        let s = Subscriptions::default();
        let who = ("g", "c1", "p");
        assert_eq!(
            s.sync(who, LiteAction::PartialAdd, &names(&["a", "b"]), 10, 0),
            Ok(2)
        );
        assert_eq!(
            s.sync(who, LiteAction::PartialAdd, &names(&["c"]), 10, 0),
            Ok(3)
        );
        assert_eq!(
            s.sync(who, LiteAction::PartialRemove, &names(&["a"]), 10, 0),
            Ok(2)
        );
        assert_eq!(list(&s, who), names(&["b", "c"]));
        assert_eq!(
            s.sync(who, LiteAction::CompleteAdd, &names(&["x"]), 10, 0),
            Ok(1)
        );
        assert_eq!(list(&s, who), names(&["x"]));
        assert_eq!(s.sync(who, LiteAction::CompleteRemove, &[], 10, 0), Ok(0));
        assert!(s.for_pop(who, 0).is_none());
        assert_eq!(s.count(), 0);
    }

    #[test]
    fn given_a_quota_when_exceeded_should_refuse_and_keep_the_set() {
        let s = Subscriptions::default();
        let who = ("g", "c1", "p");
        s.sync(who, LiteAction::PartialAdd, &names(&["a", "b"]), 2, 0)
            .unwrap();
        assert_eq!(
            s.sync(who, LiteAction::PartialAdd, &names(&["c"]), 2, 0),
            Err(OverQuota { would_hold: 3 })
        );
        assert_eq!(list(&s, who), names(&["a", "b"]));
        // Shrinking is always allowed, even above a lowered quota.
        assert_eq!(
            s.sync(who, LiteAction::PartialRemove, &names(&["a"]), 0, 0),
            Ok(1)
        );
    }

    #[test]
    fn given_an_expired_topic_when_dropped_should_leave_a_notice_for_its_clients() {
        let s = Subscriptions::default();
        s.sync(
            ("g", "c1", "p"),
            LiteAction::PartialAdd,
            &names(&["a", "b"]),
            9,
            0,
        )
        .unwrap();
        s.sync(
            ("g", "c2", "p"),
            LiteAction::PartialAdd,
            &names(&["b"]),
            9,
            0,
        )
        .unwrap();
        let woken = s.drop_topics(&[("p".into(), "b".into())]);
        assert!(woken.contains("p"));
        assert!(s.has_notices(("g", "c1", "p")));
        assert_eq!(s.take_notices(("g", "c1", "p")), names(&["b"]));
        assert_eq!(s.take_notices(("g", "c2", "p")), names(&["b"]));
        assert!(s.take_notices(("g", "c1", "p")).is_empty());
        assert_eq!(list(&s, ("g", "c1", "p")), names(&["a"]));
        assert!(s.for_pop(("g", "c2", "p"), 0).is_none());
    }

    #[test]
    fn given_silent_clients_when_expired_should_be_forgotten() {
        let s = Subscriptions::default();
        s.sync(
            ("g", "c1", "p"),
            LiteAction::PartialAdd,
            &names(&["a"]),
            9,
            0,
        )
        .unwrap();
        s.sync(
            ("g", "c2", "p"),
            LiteAction::PartialAdd,
            &names(&["a"]),
            9,
            50_000,
        )
        .unwrap();
        assert_eq!(s.expire_clients(CLIENT_TTL_MS + 1), 1);
        assert_eq!(s.count(), 1);
    }
}
