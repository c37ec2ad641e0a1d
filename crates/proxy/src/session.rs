//! Client sessions keyed by `x-mq-client-id`.
//!
//! A session remembers what a client told the proxy (client type, consumer group, the last
//! settings) and how many telemetry streams it holds open (a client opens one per endpoint
//! string, so several per id are normal). Heartbeats before settings are accepted. Sessions
//! without open streams that were not seen for `idle_timeout` are swept lazily on access, so
//! the table stays bounded by the number of live clients without a background task.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use comet_proto::apache::rocketmq::v2::{ClientType, Settings};
use parking_lot::Mutex;

/// What the proxy reports about one connected client (admin views, tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// `x-mq-client-id`.
    pub client_id: String,
    /// From the last heartbeat or settings.
    pub client_type: ClientType,
    /// Qualified consumer group, for consumers.
    pub group: Option<String>,
    /// Whether the client sent settings over telemetry.
    pub has_settings: bool,
    /// Open telemetry streams.
    pub telemetry_streams: usize,
    /// Time since the client was last heard from.
    pub idle: Duration,
}

/// What the proxy knows about one client.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// `ClientType` from the last heartbeat or settings (0 when unknown).
    pub(crate) client_type: i32,
    /// Qualified consumer group, for consumers.
    pub(crate) group: Option<String>,
    /// The client's last settings (as sent, before the echo).
    pub(crate) settings: Option<Settings>,
    /// Open telemetry streams.
    pub(crate) streams: usize,
    last_seen: Instant,
}

impl Session {
    fn new(now: Instant) -> Self {
        Session {
            client_type: 0,
            group: None,
            settings: None,
            streams: 0,
            last_seen: now,
        }
    }
}

#[derive(Debug)]
struct Table {
    sessions: HashMap<String, Session>,
    last_sweep: Instant,
}

/// All sessions of this proxy.
#[derive(Debug)]
pub(crate) struct Sessions {
    idle_timeout: Duration,
    table: Mutex<Table>,
}

impl Sessions {
    pub(crate) fn new(idle_timeout: Duration) -> Self {
        Sessions {
            idle_timeout,
            table: Mutex::new(Table {
                sessions: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    /// Creates or refreshes the session of `client_id` and lets `update` change it.
    pub(crate) fn touch(&self, client_id: &str, update: impl FnOnce(&mut Session)) {
        let now = Instant::now();
        let mut table = self.table.lock();
        if now.duration_since(table.last_sweep) >= self.idle_timeout / 2 {
            let idle = self.idle_timeout;
            table
                .sessions
                .retain(|_, s| s.streams > 0 || now.duration_since(s.last_seen) < idle);
            table.last_sweep = now;
        }
        let session = table
            .sessions
            .entry(client_id.to_owned())
            .or_insert_with(|| Session::new(now));
        session.last_seen = now;
        update(session);
    }

    pub(crate) fn stream_opened(&self, client_id: &str) {
        self.touch(client_id, |s| s.streams += 1);
    }

    pub(crate) fn stream_closed(&self, client_id: &str) {
        let mut table = self.table.lock();
        if let Some(s) = table.sessions.get_mut(client_id) {
            s.streams = s.streams.saturating_sub(1);
            s.last_seen = Instant::now();
        }
    }

    /// Forgets the client's settings and identity (NotifyClientTermination). Streams still
    /// open keep a bare session until they close.
    pub(crate) fn terminate(&self, client_id: &str) {
        let mut table = self.table.lock();
        if let Some(s) = table.sessions.get_mut(client_id) {
            if s.streams == 0 {
                table.sessions.remove(client_id);
            } else {
                s.settings = None;
                s.group = None;
                s.client_type = 0;
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn get(&self, client_id: &str) -> Option<Session> {
        self.table.lock().sessions.get(client_id).cloned()
    }

    /// A snapshot of every known client, sorted by id.
    pub(crate) fn snapshot(&self) -> Vec<ClientInfo> {
        let table = self.table.lock();
        let mut out: Vec<ClientInfo> = table
            .sessions
            .iter()
            .map(|(id, s)| ClientInfo {
                client_id: id.clone(),
                client_type: ClientType::try_from(s.client_type).unwrap_or(ClientType::Unspecified),
                group: s.group.clone(),
                has_settings: s.settings.is_some(),
                telemetry_streams: s.streams,
                idle: s.last_seen.elapsed(),
            })
            .collect();
        out.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        out
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.lock().sessions.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn streams_keep_sessions_and_termination_forgets_them() {
        let s = Sessions::new(Duration::from_secs(60));
        s.touch("c1", |x| x.client_type = 1);
        s.stream_opened("c1");
        s.stream_opened("c1");
        assert_eq!(s.get("c1").unwrap().streams, 2);
        s.terminate("c1");
        assert_eq!(s.get("c1").unwrap().client_type, 0);
        s.stream_closed("c1");
        s.stream_closed("c1");
        s.terminate("c1");
        assert!(s.get("c1").is_none());
        s.stream_closed("unknown");
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn idle_sessions_without_streams_are_swept() {
        let s = Sessions::new(Duration::ZERO);
        s.touch("a", |_| {});
        s.stream_opened("b");
        s.touch("c", |_| {});
        assert!(s.get("a").is_none(), "idle session survived the sweep");
        assert!(s.get("b").is_some(), "session with a stream was swept");
    }
}
