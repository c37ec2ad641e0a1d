//! Client sessions keyed by `x-mq-client-id`.
//!
//! A session remembers what a client told the proxy (client type, consumer group, the last
//! settings) and how many telemetry streams it holds open (a client opens one per endpoint
//! string, so several per id are normal). Heartbeats before settings are accepted. Sessions
//! without open streams that were not seen for `idle_timeout` are swept lazily on access, so
//! the table stays bounded by the number of live clients without a background task.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use comet_proto::apache::rocketmq::v2::{ClientType, Language, Settings, TelemetryCommand};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

/// The proxy's side of one open telemetry stream (server → client commands).
pub(crate) type TelemetrySender = mpsc::Sender<Result<TelemetryCommand, tonic::Status>>;

/// A topic a producer declared in its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublishedTopic {
    /// Qualified name.
    pub(crate) qualified: String,
    /// The namespace the producer uses (for splitting names back).
    pub(crate) namespace: String,
}

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
    /// When the client was last heard from (wall clock).
    pub last_seen: SystemTime,
    /// Its language: the settings' user agent, else the `x-mq-language` header (may be empty).
    pub language: String,
    /// The settings' user agent: library version, platform and host name (may be empty).
    pub version: String,
    /// See `version`.
    pub platform: String,
    /// See `version`.
    pub hostname: String,
    /// Qualified topics it publishes to (producers) or subscribes to (consumers).
    pub topics: Vec<String>,
    /// A consumer's subscriptions: (qualified topic, TAG or SQL, expression).
    pub subscriptions: Vec<(String, String, String)>,
}

/// A shared handle on a proxy's sessions: what it reports about its connected clients.
#[derive(Debug, Clone)]
pub struct ClientsView(pub(crate) std::sync::Arc<Sessions>);

impl ClientsView {
    /// Every known client, sorted by id.
    pub fn snapshot(&self) -> Vec<ClientInfo> {
        self.0.snapshot()
    }

    /// A receiver that sees a new value after every change of the sessions.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.0.changes()
    }
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
    /// Topics from the producer's `publishing` settings (for transaction checks).
    pub(crate) publishing: Vec<PublishedTopic>,
    /// A consumer's subscriptions from its settings: (qualified topic, filter type, expression).
    pub(crate) subscriptions: Vec<(String, String, String)>,
    /// The `x-mq-language` header of its last request (upper-cased; may be empty).
    pub(crate) language: String,
    last_seen: Instant,
}

impl Session {
    fn new(now: Instant) -> Self {
        Session {
            client_type: 0,
            group: None,
            settings: None,
            streams: 0,
            publishing: Vec::new(),
            subscriptions: Vec::new(),
            language: String::new(),
            last_seen: now,
        }
    }
}

#[derive(Debug)]
struct Table {
    sessions: HashMap<String, Session>,
    last_sweep: Instant,
    /// Open telemetry streams by stream id: (client id, sender).
    senders: HashMap<u64, (String, TelemetrySender)>,
    next_stream: u64,
}

/// All sessions of this proxy.
#[derive(Debug)]
pub(crate) struct Sessions {
    idle_timeout: Duration,
    table: Mutex<Table>,
    /// Bumped after every change of the table (client reporters wake on it).
    changes: watch::Sender<u64>,
}

impl Sessions {
    pub(crate) fn new(idle_timeout: Duration) -> Self {
        Sessions {
            idle_timeout,
            table: Mutex::new(Table {
                sessions: HashMap::new(),
                last_sweep: Instant::now(),
                senders: HashMap::new(),
                next_stream: 0,
            }),
            changes: watch::Sender::new(0),
        }
    }

    /// A receiver that sees a new value after every change of the sessions.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
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
        drop(table);
        self.changed();
    }

    /// Records a subscription a consumer shows by receiving from `topic` (qualified), unless
    /// its session already has one for the topic.
    pub(crate) fn note_subscription(
        &self,
        client_id: &str,
        topic: &str,
        kind: &str,
        expression: &str,
    ) {
        let mut table = self.table.lock();
        let Some(s) = table.sessions.get_mut(client_id) else {
            return;
        };
        if s.subscriptions.iter().any(|(t, _, _)| t == topic) {
            return;
        }
        s.subscriptions
            .push((topic.to_owned(), kind.to_owned(), expression.to_owned()));
        drop(table);
        self.changed();
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
        drop(table);
        self.changed();
    }

    /// Registers the sender of an open telemetry stream; returns its id for
    /// [`Sessions::unregister_sender`].
    pub(crate) fn register_sender(&self, client_id: &str, tx: TelemetrySender) -> u64 {
        let mut table = self.table.lock();
        table.next_stream += 1;
        let id = table.next_stream;
        table.senders.insert(id, (client_id.to_owned(), tx));
        id
    }

    pub(crate) fn unregister_sender(&self, stream: u64) {
        self.table.lock().senders.remove(&stream);
    }

    /// Open telemetry streams of one client.
    pub(crate) fn client_streams(&self, client_id: &str) -> Vec<TelemetrySender> {
        self.table
            .lock()
            .senders
            .values()
            .filter(|(client, tx)| client == client_id && !tx.is_closed())
            .map(|(_, tx)| tx.clone())
            .collect()
    }

    /// Open telemetry streams of producers whose settings list `topic` (qualified), each with
    /// the namespace that producer uses, in stream order.
    pub(crate) fn producer_streams(&self, topic: &str) -> Vec<(String, TelemetrySender)> {
        let table = self.table.lock();
        let mut out: Vec<(u64, String, TelemetrySender)> = table
            .senders
            .iter()
            .filter(|(_, (_, tx))| !tx.is_closed())
            .filter_map(|(id, (client, tx))| {
                let s = table.sessions.get(client)?;
                if s.client_type != ClientType::Producer as i32 {
                    return None;
                }
                let t = s.publishing.iter().find(|t| t.qualified == topic)?;
                Some((*id, t.namespace.clone(), tx.clone()))
            })
            .collect();
        out.sort_by_key(|(id, _, _)| *id);
        out.into_iter().map(|(_, ns, tx)| (ns, tx)).collect()
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
                s.publishing.clear();
                s.subscriptions.clear();
            }
        }
        drop(table);
        self.changed();
    }

    /// The client type of the client's last settings, if it sent any.
    pub(crate) fn settings_type(&self, client_id: &str) -> Option<i32> {
        let table = self.table.lock();
        let settings = table.sessions.get(client_id)?.settings.as_ref()?;
        settings.client_type
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
            .map(|(id, s)| {
                let ua = s.settings.as_ref().and_then(|st| st.user_agent.as_ref());
                let language = ua
                    .and_then(|ua| Language::try_from(ua.language).ok())
                    .filter(|l| *l != Language::Unspecified)
                    .map_or_else(|| s.language.clone(), |l| l.as_str_name().to_owned());
                let idle = s.last_seen.elapsed();
                let mut topics: Vec<String> =
                    s.publishing.iter().map(|t| t.qualified.clone()).collect();
                topics.extend(s.subscriptions.iter().map(|(t, _, _)| t.clone()));
                ClientInfo {
                    client_id: id.clone(),
                    client_type: ClientType::try_from(s.client_type)
                        .unwrap_or(ClientType::Unspecified),
                    group: s.group.clone(),
                    has_settings: s.settings.is_some(),
                    telemetry_streams: s.streams,
                    idle,
                    last_seen: SystemTime::now()
                        .checked_sub(idle)
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                    language,
                    version: ua.map(|ua| ua.version.clone()).unwrap_or_default(),
                    platform: ua.map(|ua| ua.platform.clone()).unwrap_or_default(),
                    hostname: ua.map(|ua| ua.hostname.clone()).unwrap_or_default(),
                    topics,
                    subscriptions: s.subscriptions.clone(),
                }
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

    #[tokio::test]
    async fn producer_streams_are_found_by_published_topic() {
        let s = Sessions::new(Duration::from_secs(60));
        let (tx1, _rx1) = mpsc::channel(1);
        let (tx2, rx2) = mpsc::channel(1);
        let (tx3, _rx3) = mpsc::channel(1);
        let topic = |q: &str, ns: &str| PublishedTopic {
            qualified: q.into(),
            namespace: ns.into(),
        };
        s.touch("p1", |x| {
            x.client_type = ClientType::Producer as i32;
            x.publishing = vec![topic("ns%t", "ns")];
        });
        s.touch("p2", |x| {
            x.client_type = ClientType::Producer as i32;
            x.publishing = vec![topic("other", "")];
        });
        s.touch("c1", |x| {
            x.client_type = ClientType::SimpleConsumer as i32;
            x.publishing = vec![topic("ns%t", "ns")];
        });
        let a = s.register_sender("p1", tx1);
        s.register_sender("p2", tx2);
        s.register_sender("c1", tx3);
        let found = s.producer_streams("ns%t");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "ns");
        assert!(s.producer_streams("other").len() == 1);
        drop(rx2);
        assert!(
            s.producer_streams("other").is_empty(),
            "closed streams are skipped"
        );
        s.unregister_sender(a);
        assert!(s.producer_streams("ns%t").is_empty());
        s.terminate("p1");
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
