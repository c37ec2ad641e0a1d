//! [`Relay`]: a controllable TCP relay on 127.0.0.1 for network faults between real processes.
//!
//! A process is given the relay's address instead of its peer's (a broker's controller list, a
//! broker's advertised address); the relay forwards to the target. Faults:
//!
//! - [`Relay::partition`]: a blackhole, like a network partition. Open connections stop
//!   forwarding in both directions (bytes are neither delivered nor refused, no FIN or RST), new
//!   connections are accepted and then ignored. Clients see timeouts, never errors.
//! - [`Relay::heal`]: forwarding resumes for new connections; the connections held during the
//!   partition are closed (their peers reconnect), as after a real partition whose TCP state
//!   timed out.
//! - [`Relay::cut`]: closes every open connection now (a reset) and keeps forwarding.
//! - [`Relay::partition_from`] / [`Relay::heal_from`]: the same as a partition and its heal,
//!   for the connections that come from one local address only: in-process nodes that bind
//!   their outgoing connections to distinct loopback addresses (127.0.0.2, ...) can be cut off
//!   one by one while the others keep talking through the same relay.
//!
//! The target may be set after the relay starts ([`Relay::set_target`]): a restarted process
//! listens on a new port behind the same relay address. Connections wait for a target.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    target: Option<SocketAddr>,
    partitioned: bool,
    /// Bumped to close every connection (cut, heal).
    generation: u64,
    /// Sources partitioned on their own ([`Relay::partition_from`]), with the generation of
    /// their connections, bumped by [`Relay::heal_from`] to close only theirs.
    sources: BTreeMap<IpAddr, (bool, u64)>,
}

impl State {
    /// Whether connections from `source` are blackholed now.
    fn blackholes(&self, source: IpAddr) -> bool {
        self.partitioned || self.sources.get(&source).is_some_and(|(cut, _)| *cut)
    }

    /// The generation of `source`'s connections: a change closes them.
    fn generation_of(&self, source: IpAddr) -> (u64, u64) {
        let own = self.sources.get(&source).map_or(0, |(_, g)| *g);
        (self.generation, own)
    }
}

/// A TCP relay; dropping it stops it and closes its connections.
pub struct Relay {
    addr: SocketAddr,
    state: Arc<watch::Sender<State>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("addr", &self.addr)
            .field("state", &*self.state.borrow())
            .finish()
    }
}

impl Relay {
    /// Starts a relay on `127.0.0.1:0` towards `target` (or none yet).
    pub async fn start(target: Option<SocketAddr>) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let state = Arc::new(
            watch::channel(State {
                target,
                partitioned: false,
                generation: 0,
                sources: BTreeMap::new(),
            })
            .0,
        );
        let accept_state = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, peer)) = listener.accept().await else {
                    continue;
                };
                let _ = conn.set_nodelay(true);
                tokio::spawn(relay_one(conn, peer.ip(), accept_state.subscribe()));
            }
        });
        Relay { addr, state, task }
    }

    /// The address to give the client side.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forwards new connections to `target` from now on.
    pub fn set_target(&self, target: SocketAddr) {
        self.state.send_modify(|s| s.target = Some(target));
    }

    /// Blackholes every connection, open and new (see the module docs).
    pub fn partition(&self) {
        self.state.send_modify(|s| s.partitioned = true);
    }

    /// Ends a partition: held connections close, new ones are forwarded.
    pub fn heal(&self) {
        self.state.send_modify(|s| {
            s.partitioned = false;
            s.generation += 1;
        });
    }

    /// Closes every open connection now and keeps forwarding new ones.
    pub fn cut(&self) {
        self.state.send_modify(|s| s.generation += 1);
    }

    /// Blackholes the connections from local address `source`, open and new, like
    /// [`Relay::partition`]; connections from other addresses keep flowing.
    pub fn partition_from(&self, source: IpAddr) {
        self.state
            .send_modify(|s| s.sources.entry(source).or_insert((false, 0)).0 = true);
    }

    /// Ends [`Relay::partition_from`] for `source`: its held connections close, its new ones
    /// are forwarded; other connections are left alone.
    pub fn heal_from(&self, source: IpAddr) {
        self.state.send_modify(|s| {
            let (cut, generation) = s.sources.entry(source).or_insert((false, 0));
            *cut = false;
            *generation += 1;
        });
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        // Open connections end with the sender.
        self.state.send_modify(|s| s.generation += 1);
    }
}

/// Serves one accepted connection from `source` until its generation ends.
async fn relay_one(mut client: TcpStream, source: IpAddr, mut state: watch::Receiver<State>) {
    let generation = state.borrow().generation_of(source);
    let ended = |s: &State| s.generation_of(source) != generation;
    // Wait for a target and for the partition (if any) to end; a heal ends this generation.
    let target = loop {
        let s = state.borrow_and_update().clone();
        if ended(&s) {
            return;
        }
        if let (Some(t), false) = (s.target, s.blackholes(source)) {
            break t;
        }
        if state.changed().await.is_err() {
            return;
        }
    };
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    let partitioned = {
        let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        tokio::pin!(copy);
        loop {
            tokio::select! {
                _ = &mut copy => break false,
                changed = state.changed() => {
                    if changed.is_err() {
                        break false;
                    }
                    let s = state.borrow_and_update().clone();
                    if ended(&s) {
                        break false;
                    }
                    if s.blackholes(source) {
                        break true;
                    }
                }
            }
        }
    };
    if !partitioned {
        return;
    }
    // Partitioned: stop forwarding, keep both sockets open until the generation ends.
    let _held = (client, upstream);
    let _ = state.wait_for(ended).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = c.read(&mut buf).await {
                        if n == 0 || c.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        a
    }

    async fn roundtrip(c: &mut TcpStream, msg: &[u8]) -> Option<Vec<u8>> {
        c.write_all(msg).await.ok()?;
        let mut buf = vec![0u8; msg.len()];
        match tokio::time::timeout(Duration::from_millis(300), c.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Some(buf),
            _ => None,
        }
    }

    #[tokio::test]
    async fn given_a_relay_when_partitioned_and_healed_should_blackhole_then_forward() {
        let echo = echo_server().await;
        let relay = Relay::start(None).await;
        let mut early = TcpStream::connect(relay.addr()).await.unwrap();
        relay.set_target(echo);
        assert_eq!(
            roundtrip(&mut early, b"hi").await.as_deref(),
            Some(&b"hi"[..])
        );
        relay.partition();
        assert_eq!(roundtrip(&mut early, b"lost").await, None, "blackholed");
        let mut during = TcpStream::connect(relay.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut during, b"x").await, None);
        relay.heal();
        // Held connections are closed on heal.
        let mut buf = [0u8; 8];
        let closed = tokio::time::timeout(Duration::from_secs(5), early.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        let mut after = TcpStream::connect(relay.addr()).await.unwrap();
        assert_eq!(
            roundtrip(&mut after, b"ok").await.as_deref(),
            Some(&b"ok"[..])
        );
        relay.cut();
        let closed = tokio::time::timeout(Duration::from_secs(5), after.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    }

    /// A connection to `to` from the loopback address `from`.
    async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::from((from, 0))).unwrap();
        s.connect(to).await.unwrap()
    }

    #[tokio::test]
    async fn given_a_relay_when_one_source_is_partitioned_should_blackhole_only_its_connections() {
        let echo = echo_server().await;
        let relay = Relay::start(Some(echo)).await;
        let cut_off: IpAddr = [127, 0, 0, 2].into();
        let mut other = connect_from([127, 0, 0, 1], relay.addr()).await;
        let mut early = connect_from([127, 0, 0, 2], relay.addr()).await;
        assert_eq!(roundtrip(&mut early, b"a").await.as_deref(), Some(&b"a"[..]));
        relay.partition_from(cut_off);
        assert_eq!(roundtrip(&mut early, b"lost").await, None, "blackholed");
        let mut during = connect_from([127, 0, 0, 2], relay.addr()).await;
        assert_eq!(roundtrip(&mut during, b"x").await, None, "new ones too");
        assert_eq!(
            roundtrip(&mut other, b"b").await.as_deref(),
            Some(&b"b"[..]),
            "another source keeps flowing"
        );
        relay.heal_from(cut_off);
        let mut buf = [0u8; 8];
        let closed = tokio::time::timeout(Duration::from_secs(5), early.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        let mut after = connect_from([127, 0, 0, 2], relay.addr()).await;
        assert_eq!(roundtrip(&mut after, b"c").await.as_deref(), Some(&b"c"[..]));
        assert_eq!(
            roundtrip(&mut other, b"d").await.as_deref(),
            Some(&b"d"[..]),
            "the heal leaves other sources' connections open"
        );
    }
}
