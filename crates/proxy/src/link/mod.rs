//! The internal link from this proxy to one broker: HTTP/2 connections made lean, the way the
//! proxy's public side already is.
//!
//! ```text
//!  handler on proxy thread k ──► Link(address) ─ slot of thread k ─┬─ h2 connection k
//!                                                                   │  (CoalescedIo socket)
//!                                                                   └─ SendCombiner k
//! ```
//!
//! - [`connect`]: the one function that turns a broker address into a connected transport
//!   (TCP, TCP_NODELAY, writes gathered per round by `comet_coalesce::CoalescedIo`). TLS
//!   belongs there.
//! - Each thread that calls a broker gets its own connection to it (its "slot"), opened on
//!   first use and again after it failed, and driven by a task on that thread: the proxy's
//!   connection threads each run a single-threaded runtime, so a call, its connection and its
//!   answer never change threads. Two proxy threads make two connections: enough streams for
//!   two cores of work.
//! - `grpc`: unary and server-streaming calls on `h2` directly (no buffer task, no body pump
//!   task per call).
//! - `combine`: each slot's [`SendCombiner`](combine::SendCombiner): concurrent SendMessage
//!   calls combined into one internal call when every call slot is busy, with bounded calls
//!   in flight and a bounded queue (backpressure: TOO_MANY_REQUESTS, nothing sent).
//!
//! Invariant: a request is sent at most once. A connection that fails before a request was
//! handed to it is replaced and the request goes on the new one; after that, a failure is the
//! call's (UNAVAILABLE), never retried here.

mod combine;
mod grpc;

use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ThreadId;
use std::time::Duration;

use comet_auth::ClientStream;
use comet_coalesce::CoalescedIo;
use comet_proto::apache::rocketmq::v2::{SendMessageRequest, SendMessageResponse};
use futures::stream::BoxStream;
use http::uri::Authority;
use parking_lot::{Mutex, RwLock};
use tonic::{Request, Response, Status};

pub use combine::{CombineLimits, CombineStats};
use combine::{SendCall, SendCombiner, SendFuture, Traceparent};
use grpc::Sender;

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
    /// Combining and backpressure of SendMessage calls, per connection.
    pub sends: CombineLimits,
    /// Plaintext (default) or mutual TLS against the cluster CA (`tls.internal_*`).
    pub tls: comet_auth::Connector,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            connect_timeout: Duration::from_secs(3),
            sends: CombineLimits::default(),
            tls: comet_auth::Connector::plaintext(),
        }
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

/// One thread's connection to the broker and its send combiner.
struct Slot {
    conn: Mutex<Option<Conn>>,
    /// Held while connecting, so that concurrent first calls open one connection.
    connecting: tokio::sync::Mutex<()>,
    sends: Arc<SendCombiner>,
}

impl Slot {
    fn live(&self) -> Option<Sender> {
        let conn = self.conn.lock();
        conn.as_ref()
            .filter(|c| !c.closed.load(Ordering::Acquire))
            .map(|c| c.sender.clone())
    }
}

/// Where a link's calls go, shared by its slots' combiners (weakly: a dropped link ends).
struct Shared {
    address: String,
    authority: Authority,
    options: LinkOptions,
    slots: RwLock<Vec<(ThreadId, Arc<Slot>)>>,
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
            .field("connections", &self.shared.slots.read().len())
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
            }),
        })
    }

    /// The broker address.
    pub fn address(&self) -> &str {
        &self.shared.address
    }

    /// Send counters of every connection together.
    pub fn send_stats(&self) -> CombineStats {
        let slots = self.shared.slots.read();
        slots
            .iter()
            .fold(CombineStats::default(), |mut acc, (_, s)| {
                let st = s.sends.stats();
                acc.calls += st.calls;
                acc.requests += st.requests;
                acc.refused += st.refused;
                acc
            })
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

    /// SendMessage through this thread's combiner (see `combine`).
    pub(crate) async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let timeout = grpc_timeout(request.metadata());
        let traceparent = request.metadata().get(TRACEPARENT).cloned();
        let slot = self.shared.slot();
        slot.sends
            .send(request.into_inner(), timeout, traceparent)
            .await
            .map(Response::new)
    }
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
        let caller = Arc::new(LinkSend(Arc::downgrade(self)));
        let slot = Arc::new(Slot {
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            sends: SendCombiner::new(
                format!("broker {}", self.address),
                self.options.sends,
                caller,
            ),
        });
        slots.push((me, Arc::clone(&slot)));
        slot
    }

    /// This thread's connection, ready for a new stream: the open one, or a new one when
    /// there is none or it failed (before anything was sent on it by this call).
    async fn ready_sender(self: &Arc<Self>) -> Result<Sender, Status> {
        let slot = self.slot();
        if let Some(sender) = slot.live()
            && let Ok(ready) = sender.ready().await
        {
            return Ok(ready);
        }
        let _connecting = slot.connecting.lock().await;
        if let Some(sender) = slot.live()
            && let Ok(ready) = sender.ready().await
        {
            return Ok(ready);
        }
        let conn = self.open().await?;
        let sender = conn.sender.clone();
        *slot.conn.lock() = Some(conn);
        sender.ready().await.map_err(grpc::transport)
    }

    /// Opens a connection and starts its task on this thread's runtime.
    async fn open(&self) -> Result<Conn, Status> {
        let io = connect(&self.address, &self.options).await?;
        let handshake = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(64 * 1024)
            .handshake::<_, bytes::Bytes>(io);
        let (sender, connection) =
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
        let address = self.address.clone();
        tokio::spawn(async move {
            let _guard = guard;
            if let Err(e) = connection.await {
                tracing::debug!(broker = %address, error = %e, "broker connection ended");
            }
        });
        tracing::debug!(broker = %self.address, "connected to broker");
        Ok(Conn { sender, closed })
    }
}

/// A combiner's calls: SendMessage on the link (if it still exists).
struct LinkSend(Weak<Shared>);

impl SendCall for LinkSend {
    fn call(
        &self,
        request: SendMessageRequest,
        timeout: Option<Duration>,
        traceparent: Traceparent,
    ) -> SendFuture {
        let shared = self.0.upgrade();
        Box::pin(async move {
            let shared = shared.ok_or_else(|| Status::unavailable("the broker link was closed"))?;
            let mut request = Request::new(request);
            if let Some(t) = timeout {
                request.set_timeout(t);
            }
            if let Some(tp) = traceparent {
                request.metadata_mut().insert(TRACEPARENT, tp);
            }
            Link { shared }
                .unary(broker_path!("SendMessage"), request)
                .await
                .map(Response::into_inner)
        })
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
    fn given_addresses_when_linked_should_refuse_bad_ones() {
        assert!(Link::new("127.0.0.1:1", LinkOptions::default()).is_ok());
        assert!(Link::new("broker-0.comet:10911", LinkOptions::default()).is_ok());
        for bad in ["", "bad address with spaces", "127.0.0.1", "h:x"] {
            let e = Link::new(bad, LinkOptions::default()).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }
}
