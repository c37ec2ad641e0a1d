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
//! - [`Relay::partition_process`] / [`Relay::heal_process`]: the same for the connections a
//!   given process (a broker child) opened, whatever its address: the relay finds the process
//!   holding the other end of a connection through `/proc` (Linux: the socket's inode in
//!   `/proc/net/tcp`, then the process with a descriptor on it).
//!
//! The target may be set after the relay starts ([`Relay::set_target`]): a restarted process
//! listens on a new port behind the same relay address. Connections wait for a target.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
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
    /// The same by process id ([`Relay::partition_process`], [`Relay::heal_process`]).
    processes: BTreeMap<u32, (bool, u64)>,
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
                processes: BTreeMap::new(),
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
                let c = Conn::new(peer, addr, &accept_state.borrow());
                tokio::spawn(relay_one(conn, c, accept_state.subscribe()));
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

    /// Blackholes the connections process `pid` opened to the relay, open and new, like
    /// [`Relay::partition`]; other processes' connections keep flowing.
    pub fn partition_process(&self, pid: u32) {
        self.state
            .send_modify(|s| s.processes.entry(pid).or_insert((false, 0)).0 = true);
    }

    /// Ends [`Relay::partition_process`] for `pid`: its held connections close, its new ones
    /// are forwarded; other connections are left alone.
    pub fn heal_process(&self, pid: u32) {
        self.state.send_modify(|s| {
            let (cut, generation) = s.processes.entry(pid).or_insert((false, 0));
            *cut = false;
            *generation += 1;
        });
    }
}

/// One relayed connection as the partitions see it.
struct Conn {
    /// The client's end (its source address).
    peer: SocketAddr,
    /// The relay's address.
    relay: SocketAddr,
    /// The generations (all connections, its source's) when it was accepted.
    generation: (u64, u64),
    /// The processes already checked for holding the client's end.
    checked: BTreeSet<u32>,
    /// The process found holding it, with that process's generation then.
    owner: Option<(u32, u64)>,
}

impl Conn {
    fn new(peer: SocketAddr, relay: SocketAddr, s: &State) -> Conn {
        let mut c = Conn {
            peer,
            relay,
            generation: s.generation_of(peer.ip()),
            checked: BTreeSet::new(),
            owner: None,
        };
        c.observe(s);
        c
    }

    /// Checks the processes named in `s` for the first time (reading `/proc` only then).
    fn observe(&mut self, s: &State) {
        for (pid, (_, generation)) in &s.processes {
            if self.owner.is_none()
                && self.checked.insert(*pid)
                && holds(*pid, self.peer, self.relay)
            {
                self.owner = Some((*pid, *generation));
            }
        }
    }

    /// Whether a cut or heal since it was accepted closes it.
    fn ended(&self, s: &State) -> bool {
        s.generation_of(self.peer.ip()) != self.generation
            || self
                .owner
                .is_some_and(|(pid, g)| s.processes.get(&pid).map_or(0, |p| p.1) != g)
    }

    /// Whether it is blackholed now.
    fn blackholed(&self, s: &State) -> bool {
        s.blackholes(self.peer.ip())
            || self
                .owner
                .is_some_and(|(pid, _)| s.processes.get(&pid).is_some_and(|p| p.0))
    }
}

/// Whether process `pid` holds the client end of the local TCP connection from `peer` to
/// `relay`: the socket's inode from `/proc/net/tcp`, then a descriptor of `pid` on that socket
/// (Linux). False when `/proc` cannot tell (another OS, the process gone).
fn holds(pid: u32, peer: SocketAddr, relay: SocketAddr) -> bool {
    let (SocketAddr::V4(peer), SocketAddr::V4(relay)) = (peer, relay) else {
        return false;
    };
    // `/proc/net/tcp` prints an IPv4 address as its 32 bits in host order, in hex.
    let hex = |a: SocketAddrV4| {
        format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(a.ip().octets()),
            a.port()
        )
    };
    let (from, to) = (hex(peer), hex(relay));
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let inode = table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 9 && f[1] == from && f[2] == to).then(|| f[9].to_owned())
    });
    let Some(inode) = inode else {
        return false;
    };
    let wanted = format!("socket:[{inode}]");
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == wanted.as_str())
    })
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        // Open connections end with the sender.
        self.state.send_modify(|s| s.generation += 1);
    }
}

/// Serves one accepted connection until a cut or heal ends it.
async fn relay_one(mut client: TcpStream, mut conn: Conn, mut state: watch::Receiver<State>) {
    // Wait for a target and for the partition (if any) to end; a heal ends the connection.
    let target = loop {
        let s = state.borrow_and_update().clone();
        conn.observe(&s);
        if conn.ended(&s) {
            return;
        }
        if let (Some(t), false) = (s.target, conn.blackholed(&s)) {
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
                    conn.observe(&s);
                    if conn.ended(&s) {
                        break false;
                    }
                    if conn.blackholed(&s) {
                        break true;
                    }
                }
            }
        }
    };
    if !partitioned {
        return;
    }
    // Partitioned: stop forwarding, keep both sockets open until a heal ends it.
    let _held = (client, upstream);
    let _ = state.wait_for(|s| conn.ended(s)).await;
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
        assert_eq!(
            roundtrip(&mut early, b"a").await.as_deref(),
            Some(&b"a"[..])
        );
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
        assert_eq!(
            roundtrip(&mut after, b"c").await.as_deref(),
            Some(&b"c"[..])
        );
        assert_eq!(
            roundtrip(&mut other, b"d").await.as_deref(),
            Some(&b"d"[..]),
            "the heal leaves other sources' connections open"
        );
    }

    #[tokio::test]
    async fn given_a_relay_when_a_process_is_partitioned_should_blackhole_only_its_connections() {
        let echo = echo_server().await;
        let relay = Relay::start(Some(echo)).await;
        let mut open = TcpStream::connect(relay.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut open, b"a").await.as_deref(), Some(&b"a"[..]));
        // Another process (pid 1, the init process) holds none of these connections.
        relay.partition_process(1);
        assert_eq!(roundtrip(&mut open, b"b").await.as_deref(), Some(&b"b"[..]));
        // This process holds both ends of the test's connections.
        relay.partition_process(std::process::id());
        assert_eq!(roundtrip(&mut open, b"lost").await, None, "blackholed");
        let mut during = TcpStream::connect(relay.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut during, b"x").await, None, "new ones too");
        relay.heal_process(std::process::id());
        let mut buf = [0u8; 8];
        let closed = tokio::time::timeout(Duration::from_secs(5), open.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        let mut after = TcpStream::connect(relay.addr()).await.unwrap();
        assert_eq!(
            roundtrip(&mut after, b"c").await.as_deref(),
            Some(&b"c"[..])
        );
    }
}
