//! Mutual TLS on the internal links (proxy → broker, broker → controller, controller ↔
//! controller, broker ↔ broker replication, admin commands → controllers and brokers).
//!
//! Every node holds one certificate issued by the cluster CA, used both ways: as the server
//! certificate of its internal listener and as the client certificate it presents when it
//! dials another node. Servers ask for a client certificate and accept only one issued by the
//! cluster CA; clients trust only the cluster CA and check the server's name: the host of the
//! address they dial (the peer's advertised name), or one configured name for every peer.
//!
//! ```text
//!  InternalTls ─┬─ acceptor():  Acceptor (mode, server cert, client certs of the CA required)
//!               └─ connector(): Connector ── connect("host:port") ─► ClientStream
//!                                 disabled:   TCP
//!                                 enforcing:  TCP + TLS (name = host, or server_name)
//!                                 permissive: TCP + TLS; a peer that does not speak TLS at
//!                                             all (not a certificate refusal) is dialed again
//!                                             in plaintext
//! ```
//!
//! The permissive fallback lets a cluster move from plaintext to TLS one node at a time:
//! every node `disabled` → `permissive` (servers take both; clients prefer TLS) → `enforcing`.
//! A certificate failure is never retried in plaintext.
//!
//! Both sides follow renewed files as the client port does ([`ReloadingConfig`]): new
//! connections use the new certificate, open ones keep theirs.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, Stream, StreamExt};
use parking_lot::{Mutex, RwLock};
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{
    Acceptor, ClientFiles, MaybeTls, ReloadingConfig, ServerFiles, Stamp, TlsMode, stamps_of,
};
use crate::error::Result;

/// Longest a TLS handshake of an internal connection may take, either side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most handshakes an internal listener runs at once; further connections wait in the
/// listen backlog.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// The files of a node's internal TLS: the cluster CA and the node's own certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalFiles {
    /// PEM cluster CA: the only issuer trusted for servers and clients.
    pub ca: PathBuf,
    /// PEM certificate chain of this node (leaf first); its SANs name the node's advertised
    /// host names.
    pub cert_chain: PathBuf,
    /// PEM private key of the leaf.
    pub private_key: PathBuf,
}

/// A node's internal TLS: the acceptor of its internal listeners and the connector of its
/// internal clients; see the module doc.
#[derive(Debug, Clone)]
pub struct InternalTls {
    mode: TlsMode,
    server: Arc<ReloadingConfig>,
    client: Arc<ReloadingClient>,
    server_name: Option<String>,
}

impl InternalTls {
    /// Loads the files now; looks for renewed files at most every `reload_interval`.
    /// `server_name`: the one name every peer's certificate must carry (`None`: the host of
    /// the address dialed).
    ///
    /// # Errors
    /// When a file is unreadable or rustls refuses its content.
    pub fn new(
        mode: TlsMode,
        files: InternalFiles,
        server_name: Option<String>,
        reload_interval: Duration,
    ) -> Result<Self> {
        let server = ReloadingConfig::new(
            ServerFiles {
                cert_chain: files.cert_chain.clone(),
                private_key: files.private_key.clone(),
                client_ca: Some(files.ca.clone()),
            },
            reload_interval,
        )?;
        let client = ReloadingClient::new(
            ClientFiles {
                ca: files.ca,
                identity: Some((files.cert_chain, files.private_key)),
            },
            reload_interval,
        )?;
        Ok(InternalTls {
            mode,
            server: Arc::new(server),
            client: Arc::new(client),
            server_name: server_name.filter(|s| !s.is_empty()),
        })
    }

    /// The mode of the internal listeners.
    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    /// The acceptor of an internal listener: mutual TLS against the cluster CA.
    pub fn acceptor(&self) -> Acceptor {
        Acceptor::new(self.mode, self.server.clone())
    }

    /// The connector of internal clients.
    pub fn connector(&self) -> Connector {
        if self.mode == TlsMode::Disabled {
            return Connector::plaintext();
        }
        Connector {
            tls: Some(Arc::new(ConnectorTls {
                client: self.client.clone(),
                server_name: self.server_name.clone(),
                fallback: self.mode == TlsMode::Permissive,
            })),
            local_address: None,
        }
    }
}

/// A client configuration that follows its files, like [`ReloadingConfig`].
struct ReloadingClient {
    files: ClientFiles,
    check_interval: Duration,
    seen: Mutex<(Instant, Vec<Stamp>)>,
    current: RwLock<Arc<ClientConfig>>,
}

impl std::fmt::Debug for ReloadingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingClient")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ReloadingClient {
    fn paths(files: &ClientFiles) -> Vec<&Path> {
        let mut paths = vec![files.ca.as_path()];
        if let Some((cert, key)) = &files.identity {
            paths.push(cert);
            paths.push(key);
        }
        paths
    }

    fn new(files: ClientFiles, check_interval: Duration) -> Result<Self> {
        let seen = stamps_of(Self::paths(&files));
        let config = files.build()?;
        Ok(ReloadingClient {
            files,
            check_interval,
            seen: Mutex::new((Instant::now(), seen)),
            current: RwLock::new(config),
        })
    }

    fn current(&self) -> Arc<ClientConfig> {
        let due = self.seen.lock().0.elapsed() >= self.check_interval;
        if due {
            self.reload_if_changed();
        }
        self.current.read().clone()
    }

    fn reload_if_changed(&self) {
        let now = stamps_of(Self::paths(&self.files));
        {
            let mut seen = self.seen.lock();
            seen.0 = Instant::now();
            if seen.1 == now {
                return;
            }
            seen.1 = now;
        }
        match self.files.build() {
            Ok(config) => {
                *self.current.write() = config;
                tracing::info!(ca = %self.files.ca.display(), "internal TLS client certificate reloaded");
            }
            Err(e) => {
                tracing::warn!(ca = %self.files.ca.display(), error = %e, "internal TLS client reload failed; keeping the previous one");
            }
        }
    }
}

#[derive(Debug)]
struct ConnectorTls {
    client: Arc<ReloadingClient>,
    server_name: Option<String>,
    fallback: bool,
}

/// Dials internal peers: plaintext, or TLS with this node's certificate; see the module doc.
/// Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Connector {
    tls: Option<Arc<ConnectorTls>>,
    /// The local address connections bind to (`None`: the operating system picks).
    local_address: Option<std::net::IpAddr>,
}

/// Two connectors are equal when both are plaintext or both are the same TLS connector
/// (configurations holding connectors compare by identity, not by file content).
impl PartialEq for Connector {
    fn eq(&self, other: &Self) -> bool {
        self.local_address == other.local_address
            && match (&self.tls, &other.tls) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

impl Eq for Connector {}

impl Connector {
    /// Plaintext only (internal TLS disabled).
    pub fn plaintext() -> Self {
        Connector {
            tls: None,
            local_address: None,
        }
    }

    /// This connector with its connections bound to the local address `ip` (`None`: the
    /// operating system picks), e.g. to tell one node's outgoing connections apart.
    #[must_use]
    pub fn with_local_address(mut self, ip: Option<std::net::IpAddr>) -> Self {
        self.local_address = ip;
        self
    }

    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Connects to `address` (`host:port`) with TCP_NODELAY, then completes the TLS handshake
    /// when TLS is on (the server's certificate must name the host, or the configured server
    /// name, and chain to the cluster CA).
    ///
    /// # Errors
    /// The TCP connect's error, or the handshake's (an `InvalidData` error naming the
    /// certificate problem, e.g. `invalid peer certificate: UnknownIssuer`), or `TimedOut`
    /// after [`HANDSHAKE_TIMEOUT`].
    pub async fn connect(&self, address: &str) -> io::Result<ClientStream> {
        let tcp = tcp_connect(address, self.local_address).await?;
        let Some(tls) = &self.tls else {
            return Ok(ClientStream::Plain(tcp));
        };
        let host = match &tls.server_name {
            Some(name) => name.as_str(),
            None => host_of(address),
        };
        let handshake = super::connect(tls.client.current(), host, tcp);
        let error = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(stream)) => return Ok(ClientStream::Tls(Box::new(stream))),
            Ok(Err(e)) => e,
            Err(_) => io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TLS handshake with {address} took longer than {HANDSHAKE_TIMEOUT:?}"),
            ),
        };
        if tls.fallback && !is_certificate_refusal(&error) {
            tracing::debug!(%address, error = %error, "peer does not speak TLS; internal TLS is permissive: plaintext");
            return Ok(ClientStream::Plain(
                tcp_connect(address, self.local_address).await?,
            ));
        }
        Err(io::Error::new(
            error.kind(),
            format!("internal TLS with {address} (name {host:?}): {error}"),
        ))
    }
}

async fn tcp_connect(address: &str, local: Option<std::net::IpAddr>) -> io::Result<TcpStream> {
    let tcp = match local {
        None => TcpStream::connect(address).await?,
        Some(ip) => {
            let mut last = None;
            let mut connected = None;
            for peer in tokio::net::lookup_host(address).await? {
                let socket = if peer.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                if let Err(e) = socket.bind(std::net::SocketAddr::new(ip, 0)) {
                    last = Some(e);
                    continue;
                }
                match socket.connect(peer).await {
                    Ok(tcp) => {
                        connected = Some(tcp);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            connected.ok_or_else(|| {
                last.unwrap_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{address} resolves to no address"),
                    )
                })
            })?
        }
    };
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// The host of `host:port` (an IPv6 literal without its brackets).
fn host_of(address: &str) -> &str {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => address,
    };
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Whether a handshake failed on a certificate (ours refused by the peer, or the peer's by
/// us), as opposed to a peer that does not speak TLS.
fn is_certificate_refusal(error: &io::Error) -> bool {
    let Some(inner) = error.get_ref() else {
        return false;
    };
    match inner.downcast_ref::<rustls::Error>() {
        Some(
            rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::AlertReceived(_)
            | rustls::Error::PeerIncompatible(_),
        ) => true,
        Some(_) => false,
        // Not rustls': an invalid server name and the like.
        None => error.kind() == io::ErrorKind::InvalidInput,
    }
}

/// An internal client connection, plaintext or TLS.
#[derive(Debug)]
pub enum ClientStream {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl ClientStream {
    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Plain(s) => s.is_write_vectored(),
            ClientStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

type Handshake =
    Pin<Box<dyn Future<Output = (Option<std::net::SocketAddr>, io::Result<MaybeTls>)> + Send>>;

/// The connections of an internal listener after their handshakes: the handshakes of
/// `incoming` run concurrently (at most [`MAX_PENDING_HANDSHAKES`], each for at most
/// [`HANDSHAKE_TIMEOUT`]) while the server polls this stream, so a slow or hostile peer holds
/// up no other. A failed handshake (mutual TLS: a peer without a certificate of the cluster
/// CA, or a plaintext peer of an enforcing listener) is logged and its connection dropped;
/// errors of `incoming` itself pass through.
pub fn handshaken<S>(
    acceptor: Acceptor,
    incoming: S,
) -> impl Stream<Item = io::Result<MaybeTls>> + Send + 'static
where
    S: Stream<Item = io::Result<TcpStream>> + Send + 'static,
{
    Handshaken {
        acceptor,
        incoming: Box::pin(incoming),
        incoming_done: false,
        pending: FuturesUnordered::new(),
    }
}

struct Handshaken<S> {
    acceptor: Acceptor,
    incoming: Pin<Box<S>>,
    incoming_done: bool,
    pending: FuturesUnordered<Handshake>,
}

impl<S> Stream for Handshaken<S>
where
    S: Stream<Item = io::Result<TcpStream>> + Send + 'static,
{
    type Item = io::Result<MaybeTls>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        while !this.incoming_done && this.pending.len() < MAX_PENDING_HANDSHAKES {
            match this.incoming.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(tcp))) => {
                    let acceptor = this.acceptor.clone();
                    this.pending.push(Box::pin(async move {
                        let peer = tcp.peer_addr().ok();
                        let accepted =
                            tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                        let result = accepted.unwrap_or_else(|_| {
                            Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "TLS handshake timed out",
                            ))
                        });
                        (peer, result)
                    }));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => this.incoming_done = true,
                Poll::Pending => break,
            }
        }
        loop {
            match this.pending.poll_next_unpin(cx) {
                Poll::Ready(Some((_, Ok(conn)))) => return Poll::Ready(Some(Ok(conn))),
                Poll::Ready(Some((peer, Err(e)))) => {
                    tracing::warn!(?peer, error = %e, "internal TLS handshake refused");
                }
                Poll::Ready(None) if this.incoming_done => return Poll::Ready(None),
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(feature = "tonic")]
mod tonic_connector {
    //! The connector as a tonic channel transport
    //! (`Endpoint::connect_with_connector_lazy`).

    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use hyper_util::rt::TokioIo;

    use super::{ClientStream, Connector};

    impl Connector {
        /// A tonic channel to `endpoint` over this connector (connected on first use; the
        /// endpoint's connect timeout applies to the TCP connect and the TLS handshake).
        pub fn lazy_channel(
            &self,
            endpoint: &tonic::transport::Endpoint,
        ) -> tonic::transport::Channel {
            endpoint.connect_with_connector_lazy(self.clone())
        }
    }

    impl tower_service::Service<http::Uri> for Connector {
        type Response = TokioIo<ClientStream>;
        type Error = std::io::Error;
        type Future = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<ClientStream>>> + Send>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, uri: http::Uri) -> Self::Future {
            let connector = self.clone();
            Box::pin(async move {
                let authority = uri.authority().ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("{uri} has no host:port"),
                    )
                })?;
                let address = match authority.port_u16() {
                    Some(_) => authority.as_str().to_owned(),
                    None => format!("{}:80", authority.host()),
                };
                connector.connect(&address).await.map(TokioIo::new)
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn given_addresses_when_taking_the_host_should_strip_port_and_brackets() {
        assert_eq!(host_of("broker-0.comet:10911"), "broker-0.comet");
        assert_eq!(host_of("127.0.0.1:9878"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9878"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }
}
