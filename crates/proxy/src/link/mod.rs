//! The internal link from this proxy to one broker: HTTP/2 connections made lean, the way the
//! proxy's public side already is.
//!
//! ```text
//!  handler on proxy thread k ──► Link(address) ─ slot of thread k ─┬─ h2 connection(s) k
//!                                                                   │  (CoalescedIo socket)
//!                                                                   ├─ send combiner k
//!                                                                   └─ settle combiner k
//! ```
//!
//! - [`connect`]: the one function that turns a broker address into a connected transport
//!   (TCP, TCP_NODELAY, writes gathered per round by `comet_coalesce::CoalescedIo`). TLS
//!   belongs there.
//! - Each thread that calls a broker gets its own connections to it (its "slot":
//!   [`LinkOptions::connections_per_thread`] of them, calls spread round robin), opened on
//!   first use and again after they failed, and driven by tasks on that thread: the proxy's
//!   connection threads each run a single-threaded runtime, so a call, its connection and its
//!   answer never change threads. Two proxy threads make two connections or more: enough
//!   streams for two cores of work.
//! - `grpc`: unary and server-streaming calls on `h2` directly (no buffer task, no body pump
//!   task per call).
//! - `combine` and `batches`: each slot's two [`Combiner`](combine::Combiner)s: concurrent
//!   SendMessage calls, and concurrent AckMessage / ChangeInvisibleDuration calls (as one
//!   SettleMessages), combined into one internal call when every call slot is busy, with
//!   bounded calls in flight and a bounded queue (backpressure: TOO_MANY_REQUESTS, nothing
//!   sent).
//! - Keepalive: every connection sends an HTTP/2 PING each `keepalive_interval`; a PING not
//!   answered within `keepalive_timeout` (a broker host gone silent, a network that drops
//!   packets) closes the connection, failing its open calls with UNAVAILABLE, and the next
//!   call opens a new one. A dead connection is thus found within interval + timeout.
//!
//! Invariant: a request is sent at most once. A connection that fails before a request was
//! handed to it is replaced and the request goes on the new one; after that, a failure is the
//! call's (UNAVAILABLE), never retried here.

mod batches;
mod combine;
mod grpc;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::ThreadId;
use std::time::Duration;

use comet_auth::ClientStream;
use comet_coalesce::CoalescedIo;
use comet_proto::apache::rocketmq::v2::{
    AckMessageRequest, AckMessageResponse, ChangeInvisibleDurationRequest,
    ChangeInvisibleDurationResponse, SendMessageRequest, SendMessageResponse,
};
use futures::stream::BoxStream;
use http::uri::Authority;
use parking_lot::{Mutex, RwLock};
use tonic::{Request, Response, Status};

use batches::{Sends, Settles};
use combine::Combiner;
pub use combine::{CombineLimits, CombineStats};
use grpc::Sender;

pub(crate) use crate::context::CLIENT_ID_HEADER;
use crate::error::ProxyError;

/// The W3C trace context header a send passes on to the broker.
const TRACEPARENT: &str = "traceparent";

/// Largest internal message in either direction (batches of large messages, pop results).
pub const INTERNAL_MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Flow-control window of each stream: a 4 MiB message flows without a window update.
const STREAM_WINDOW: u32 = 4 << 20;

/// Flow-control window of each connection.
const CONNECTION_WINDOW: u32 = 16 << 20;

/// How the proxy connects to brokers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkOptions {
    /// A TCP connect (and HTTP/2 handshake) gives up after this long.
    pub connect_timeout: Duration,
    /// HTTP/2 connections each proxy thread opens to each broker; its calls are spread over
    /// them round robin.
    pub connections_per_thread: usize,
    /// Combining and backpressure, per proxy thread and broker: applied to SendMessage calls
    /// (messages, body bytes) and, separately, to acks and invisible-time changes (ack
    /// entries, receipt-handle bytes).
    pub combine: CombineLimits,
    /// Each connection sends an HTTP/2 PING this often; zero: no keepalive.
    pub keepalive_interval: Duration,
    /// A PING unanswered this long closes its connection.
    pub keepalive_timeout: Duration,
    /// Plaintext (default) or mutual TLS against the cluster CA (`tls.internal_*`).
    pub tls: comet_auth::Connector,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            connect_timeout: Duration::from_secs(3),
            connections_per_thread: 1,
            combine: CombineLimits::default(),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
            tls: comet_auth::Connector::plaintext(),
        }
    }
}

/// Most [`LinkOptions::connections_per_thread`].
pub const MAX_CONNECTIONS_PER_THREAD: usize = 16;
/// Most [`CombineLimits::calls_in_flight`].
pub const MAX_CALLS_IN_FLIGHT: usize = 256;
/// Most [`CombineLimits::max_call_messages`].
pub const MAX_CALL_MESSAGES: usize = 65_536;
/// Most [`CombineLimits::max_queued_messages`].
pub const MAX_QUEUED_MESSAGES: usize = 1 << 20;
/// Most [`CombineLimits::max_queued_bytes`].
pub const MAX_QUEUED_BYTES: usize = 4 << 30;
/// Shortest keepalive interval (other than zero, off) and timeout.
pub const MIN_KEEPALIVE: Duration = Duration::from_millis(100);
/// Longest connect timeout, keepalive interval and keepalive timeout.
pub const MAX_LINK_DURATION: Duration = Duration::from_secs(3600);

impl LinkOptions {
    /// Checks every bound. The keys named are those of the `[proxy]` config section.
    ///
    /// # Errors
    /// [`ProxyError::InvalidConfig`] naming the key and its allowed range.
    pub fn validate(&self) -> Result<(), ProxyError> {
        let c = &self.combine;
        let counts: [(&'static str, usize, usize); 6] = [
            (
                "link_connections_per_thread",
                self.connections_per_thread,
                MAX_CONNECTIONS_PER_THREAD,
            ),
            (
                "link_calls_in_flight",
                c.calls_in_flight,
                MAX_CALLS_IN_FLIGHT,
            ),
            (
                "link_call_max_messages",
                c.max_call_messages,
                MAX_CALL_MESSAGES,
            ),
            (
                "link_call_max_bytes",
                c.max_call_bytes,
                INTERNAL_MAX_MESSAGE_BYTES,
            ),
            (
                "link_queue_max_messages",
                c.max_queued_messages,
                MAX_QUEUED_MESSAGES,
            ),
            ("link_queue_max_bytes", c.max_queued_bytes, MAX_QUEUED_BYTES),
        ];
        for (key, value, max) in counts {
            if !(1..=max).contains(&value) {
                return Err(ProxyError::InvalidConfig {
                    key,
                    reason: format!("must be in 1..={max}, got {value}"),
                });
            }
        }
        let durations: [(&'static str, Duration, Duration, bool); 3] = [
            (
                "link_connect_timeout",
                self.connect_timeout,
                Duration::from_millis(1),
                false,
            ),
            (
                "link_keepalive_interval",
                self.keepalive_interval,
                MIN_KEEPALIVE,
                true,
            ),
            (
                "link_keepalive_timeout",
                self.keepalive_timeout,
                MIN_KEEPALIVE,
                false,
            ),
        ];
        for (key, value, min, zero_is_off) in durations {
            if (zero_is_off && value.is_zero()) || (min..=MAX_LINK_DURATION).contains(&value) {
                continue;
            }
            let off = if zero_is_off { "0s (off) or " } else { "" };
            return Err(ProxyError::InvalidConfig {
                key,
                reason: format!("must be {off}{min:?}..={MAX_LINK_DURATION:?}, got {value:?}"),
            });
        }
        Ok(())
    }
}

/// Connects to the broker at `address` (`host:port`): TCP with TCP_NODELAY, TLS per
/// `options.tls`, writes gathered per round of the connection's task. The one place where the
/// internal link's transport is built.
///
/// # Errors
/// UNAVAILABLE when the broker cannot be reached within `options.connect_timeout` (or refuses
/// the TLS handshake; the message names the certificate problem).
pub async fn connect(
    address: &str,
    options: &LinkOptions,
) -> Result<CoalescedIo<ClientStream>, Status> {
    let connecting =
        async { Ok::<_, std::io::Error>(CoalescedIo::new(options.tls.connect(address).await?)) };
    match tokio::time::timeout(options.connect_timeout, connecting).await {
        Ok(Ok(io)) => Ok(io),
        Ok(Err(e)) => Err(Status::unavailable(format!(
            "cannot connect to broker {address}: {e}"
        ))),
        Err(_) => Err(Status::unavailable(format!(
            "connecting to broker {address} took longer than {:?}",
            options.connect_timeout
        ))),
    }
}

/// An open HTTP/2 connection: its request handle and whether its task has ended.
#[derive(Clone)]
struct Conn {
    sender: Sender,
    closed: Arc<AtomicBool>,
}

/// Marks a connection closed when its task ends (or is dropped with its runtime).
struct ClosedOnDrop(Arc<AtomicBool>);

impl Drop for ClosedOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// One connection of a slot: open, or to be opened by the first call that needs it.
#[derive(Default)]
struct ConnSlot {
    conn: Mutex<Option<Conn>>,
    /// Held while connecting, so that concurrent first calls open one connection.
    connecting: tokio::sync::Mutex<()>,
}

impl ConnSlot {
    fn live(&self) -> Option<Sender> {
        let conn = self.conn.lock();
        conn.as_ref()
            .filter(|c| !c.closed.load(Ordering::Acquire))
            .map(|c| c.sender.clone())
    }
}

/// One thread's connections to the broker and its combiners.
struct Slot {
    conns: Vec<ConnSlot>,
    /// Round robin over `conns`.
    next: AtomicUsize,
    sends: Arc<Combiner<Sends>>,
    settles: Arc<Combiner<Settles>>,
}

/// Where a link's calls go, shared by its slots' combiners (weakly: a dropped link ends).
struct Shared {
    address: String,
    authority: Authority,
    options: LinkOptions,
    slots: RwLock<Vec<(ThreadId, Arc<Slot>)>>,
    /// Connections opened so far.
    opened: AtomicU64,
    /// Connections closed because a keepalive PING went unanswered.
    silent: AtomicU64,
}

/// Counters of a [`Link`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// SendMessage combining (every thread's together).
    pub sends: CombineStats,
    /// Ack and invisible-time change combining.
    pub settles: CombineStats,
    /// Connections opened since the link was made.
    pub connections_opened: u64,
    /// Connections closed because the broker left a keepalive PING unanswered.
    pub connections_silent: u64,
    /// Connections open now.
    pub connections_open: usize,
}

/// The link to one broker address (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct Link {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("address", &self.shared.address)
            .field("threads", &self.shared.slots.read().len())
            .finish()
    }
}

/// The gRPC path of a `comet.v1.BrokerService` method.
macro_rules! broker_path {
    ($method:literal) => {
        concat!("/comet.v1.BrokerService/", $method)
    };
}
pub(crate) use broker_path;

impl Link {
    /// A link to `address` (`host:port`); nothing connects before the first call.
    ///
    /// # Errors
    /// INVALID_ARGUMENT when `address` is not a `host:port`.
    pub fn new(address: &str, options: LinkOptions) -> Result<Link, Status> {
        let authority: Authority = address.parse().map_err(|e| {
            Status::invalid_argument(format!("bad broker address {address:?}: {e}"))
        })?;
        if authority.port_u16().is_none() || address.contains(char::is_whitespace) {
            return Err(Status::invalid_argument(format!(
                "bad broker address {address:?}: expected host:port"
            )));
        }
        Ok(Link {
            shared: Arc::new(Shared {
                address: address.to_owned(),
                authority,
                options,
                slots: RwLock::new(Vec::new()),
                opened: AtomicU64::new(0),
                silent: AtomicU64::new(0),
            }),
        })
    }

    /// The broker address.
    pub fn address(&self) -> &str {
        &self.shared.address
    }

    /// Counters of every thread's connections and combiners together.
    pub fn stats(&self) -> LinkStats {
        let slots = self.shared.slots.read();
        let mut stats = LinkStats {
            connections_opened: self.shared.opened.load(Ordering::Relaxed),
            connections_silent: self.shared.silent.load(Ordering::Relaxed),
            ..LinkStats::default()
        };
        for (_, slot) in slots.iter() {
            stats.sends = stats.sends.add(slot.sends.stats());
            stats.settles = stats.settles.add(slot.settles.stats());
            stats.connections_open += slot.conns.iter().filter(|c| c.live().is_some()).count();
        }
        stats
    }

    /// A unary call of `path` (see [`broker_path`]).
    pub(crate) async fn unary<Q, R>(
        &self,
        path: &'static str,
        request: Request<Q>,
    ) -> Result<Response<R>, Status>
    where
        Q: prost::Message,
        R: prost::Message + Default,
    {
        let (metadata, _, message) = request.into_parts();
        let sender = self.shared.ready_sender().await?;
        grpc::unary(sender, &self.shared.authority, path, metadata, &message)
            .await
            .map(Response::new)
    }

    /// A server-streaming call of `path`.
    pub(crate) async fn server_streaming<Q, R>(
        &self,
        path: &'static str,
        request: Request<Q>,
    ) -> Result<Response<BoxStream<'static, Result<R, Status>>>, Status>
    where
        Q: prost::Message,
        R: prost::Message + Default + Send + 'static,
    {
        let (metadata, _, message) = request.into_parts();
        let sender = self.shared.ready_sender().await?;
        grpc::server_streaming(sender, &self.shared.authority, path, metadata, &message)
            .await
            .map(Response::new)
    }

    /// SendMessage through this thread's send combiner (see `combine`).
    pub(crate) async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let timeout = grpc_timeout(request.metadata());
        let traceparent = request.metadata().get(TRACEPARENT).cloned();
        let slot = self.shared.slot();
        slot.sends
            .submit(request.into_inner(), timeout, traceparent)
            .await
            .map(Response::new)
    }

    /// AckMessage through this thread's settle combiner: alone, or together with the acks
    /// and changes waiting with it, as one SettleMessages call.
    pub(crate) async fn ack_message(
        &self,
        request: Request<AckMessageRequest>,
    ) -> Result<Response<AckMessageResponse>, Status> {
        let (client_id, timeout, traceparent) = call_metadata(&request);
        let settlement = Settles::ack(client_id, request.into_inner());
        let slot = self.shared.slot();
        let answer = slot
            .settles
            .submit(settlement, timeout, traceparent)
            .await?;
        Settles::acked(answer).map(Response::new)
    }

    /// ChangeInvisibleDuration through this thread's settle combiner.
    pub(crate) async fn change_invisible_duration(
        &self,
        request: Request<ChangeInvisibleDurationRequest>,
    ) -> Result<Response<ChangeInvisibleDurationResponse>, Status> {
        let (client_id, timeout, traceparent) = call_metadata(&request);
        let settlement = Settles::change(client_id, request.into_inner());
        let slot = self.shared.slot();
        let answer = slot
            .settles
            .submit(settlement, timeout, traceparent)
            .await?;
        Settles::changed(answer).map(Response::new)
    }
}

/// The client id, deadline and trace of a consumer call's metadata.
fn call_metadata<T>(request: &Request<T>) -> (String, Option<Duration>, combine::Traceparent) {
    let metadata = request.metadata();
    let client_id = metadata
        .get(CLIENT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        client_id,
        grpc_timeout(metadata),
        metadata.get(TRACEPARENT).cloned(),
    )
}

impl Shared {
    /// This thread's slot, created on first use.
    fn slot(self: &Arc<Self>) -> Arc<Slot> {
        let me = std::thread::current().id();
        if let Some((_, s)) = self.slots.read().iter().find(|(t, _)| *t == me) {
            return Arc::clone(s);
        }
        let mut slots = self.slots.write();
        if let Some((_, s)) = slots.iter().find(|(t, _)| *t == me) {
            return Arc::clone(s);
        }
        let name = format!("broker {}", self.address);
        let limits = self.options.combine;
        let slot = Arc::new(Slot {
            conns: (0..self.options.connections_per_thread.max(1))
                .map(|_| ConnSlot::default())
                .collect(),
            next: AtomicUsize::new(0),
            sends: Combiner::new(name.clone(), limits, Arc::new(Sends(Arc::downgrade(self)))),
            settles: Combiner::new(name, limits, Arc::new(Settles(Arc::downgrade(self)))),
        });
        slots.push((me, Arc::clone(&slot)));
        slot
    }

    /// A connection of this thread, ready for a new stream: the next open one, or a new one
    /// when there is none or it failed (before anything was sent on it by this call).
    async fn ready_sender(self: &Arc<Self>) -> Result<Sender, Status> {
        let slot = self.slot();
        let n = slot.next.fetch_add(1, Ordering::Relaxed) % slot.conns.len();
        let conn = &slot.conns[n];
        if let Some(sender) = conn.live()
            && let Ok(ready) = sender.ready().await
        {
            return Ok(ready);
        }
        let _connecting = conn.connecting.lock().await;
        if let Some(sender) = conn.live()
            && let Ok(ready) = sender.ready().await
        {
            return Ok(ready);
        }
        let opened = self.open().await?;
        let sender = opened.sender.clone();
        *conn.conn.lock() = Some(opened);
        sender.ready().await.map_err(grpc::transport)
    }

    /// Opens a connection and starts its task (with its keepalive) on this thread's runtime.
    async fn open(self: &Arc<Self>) -> Result<Conn, Status> {
        let io = connect(&self.address, &self.options).await?;
        let handshake = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(64 * 1024)
            .handshake::<_, bytes::Bytes>(io);
        let (sender, mut connection) =
            match tokio::time::timeout(self.options.connect_timeout, handshake).await {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => return Err(grpc::transport(e)),
                Err(_) => {
                    return Err(Status::unavailable(format!(
                        "the HTTP/2 handshake with broker {} took longer than {:?}",
                        self.address, self.options.connect_timeout
                    )));
                }
            };
        let closed = Arc::new(AtomicBool::new(false));
        let guard = ClosedOnDrop(Arc::clone(&closed));
        let interval = self.options.keepalive_interval;
        let timeout = self.options.keepalive_timeout;
        let pings = if interval.is_zero() {
            None
        } else {
            connection.ping_pong()
        };
        let shared = Arc::downgrade(self);
        let address = self.address.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let silent = async {
                match pings {
                    Some(pings) => silence(pings, interval, timeout).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ended = &mut connection => {
                    if let Err(e) = ended {
                        tracing::debug!(broker = %address, error = %e, "broker connection ended");
                    }
                }
                () = silent => {
                    tracing::warn!(
                        broker = %address,
                        ?timeout,
                        "broker connection left a keepalive PING unanswered; closing it"
                    );
                    if let Some(shared) = shared.upgrade() {
                        shared.silent.fetch_add(1, Ordering::Relaxed);
                    }
                    // Dropping the connection fails its open calls (UNAVAILABLE); the next
                    // call opens a new one.
                }
            }
        });
        self.opened.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(broker = %self.address, "connected to broker");
        Ok(Conn { sender, closed })
    }
}

/// Sends a PING every `interval` and returns when one is not answered within `timeout`.
/// Runs beside its connection, which must be polled for the answers to arrive; when the
/// connection fails, PINGs fail too and this waits for the connection to report it.
async fn silence(mut pings: h2::PingPong, interval: Duration, timeout: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, pings.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(_)) => std::future::pending::<()>().await,
            Err(_) => return,
        }
    }
}

/// The `grpc-timeout` of a request's metadata (`<digits><unit>`, units H M S m u n).
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn given_timeouts_when_parsed_should_read_every_unit() {
        let mut request = Request::new(());
        request.set_timeout(Duration::from_millis(2500));
        assert_eq!(
            grpc_timeout(request.metadata()),
            Some(Duration::from_millis(2500))
        );
        for (v, d) in [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("3S", Duration::from_secs(3)),
            ("4m", Duration::from_millis(4)),
            ("5u", Duration::from_micros(5)),
            ("6n", Duration::from_nanos(6)),
        ] {
            let mut m = tonic::metadata::MetadataMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            assert_eq!(grpc_timeout(&m), Some(d), "{v}");
        }
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(grpc_timeout(&m), None);
        assert_eq!(grpc_timeout(&tonic::metadata::MetadataMap::new()), None);
    }

    #[test]
    fn given_link_options_when_validated_should_name_the_key_and_range_of_a_bad_one() {
        LinkOptions::default().validate().unwrap();
        let off = LinkOptions {
            keepalive_interval: Duration::ZERO,
            ..LinkOptions::default()
        };
        off.validate().unwrap();
        let cases = [
            (
                LinkOptions {
                    connections_per_thread: 0,
                    ..LinkOptions::default()
                },
                "link_connections_per_thread: must be in 1..=16, got 0",
            ),
            (
                LinkOptions {
                    combine: CombineLimits {
                        calls_in_flight: 1000,
                        ..CombineLimits::default()
                    },
                    ..LinkOptions::default()
                },
                "link_calls_in_flight: must be in 1..=256, got 1000",
            ),
            (
                LinkOptions {
                    combine: CombineLimits {
                        max_queued_bytes: 0,
                        ..CombineLimits::default()
                    },
                    ..LinkOptions::default()
                },
                "link_queue_max_bytes: must be in 1..=",
            ),
            (
                LinkOptions {
                    keepalive_interval: Duration::from_millis(10),
                    ..LinkOptions::default()
                },
                "link_keepalive_interval: must be 0s (off) or 100ms..=3600s, got 10ms",
            ),
            (
                LinkOptions {
                    keepalive_timeout: Duration::ZERO,
                    ..LinkOptions::default()
                },
                "link_keepalive_timeout: must be 100ms..=3600s, got 0ns",
            ),
        ];
        for (options, expected) in cases {
            let e = options.validate().unwrap_err().to_string();
            assert!(e.contains(expected), "{e}");
        }
    }

    #[test]
    fn given_addresses_when_linked_should_refuse_bad_ones() {
        assert!(Link::new("127.0.0.1:1", LinkOptions::default()).is_ok());
        assert!(Link::new("broker-0.comet:10911", LinkOptions::default()).is_ok());
        for bad in ["", "bad address with spaces", "127.0.0.1", "h:x"] {
            let e = Link::new(bad, LinkOptions::default()).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }
}
