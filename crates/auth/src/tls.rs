//! TLS on rustls: PEM loading, server configurations with the modes of RocketMQ's
//! `tls.server.mode` (disabled, permissive, enforcing), mutual TLS against a cluster CA,
//! client configurations that verify server names, and certificate reload.
//!
//! ```text
//!  TcpStream ──► Acceptor::accept ──┬─ disabled:   Plain
//!                                   ├─ enforcing:  peek 1 byte; 0x16 (handshake) → TLS handshake
//!                                   │              with ReloadingConfig::current(), else refused
//!                                   └─ permissive: peek 1 byte; 0x16 (handshake) → TLS, else Plain
//! ```
//!
//! Reload: [`ReloadingConfig`] re-reads its PEM files when their size or modification time
//! changed (looked at, at most once per `check_interval`, when a connection arrives), and
//! swaps the configuration new handshakes use; open connections keep the one they started
//! with. A renewal that fails to load leaves the previous configuration in place.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::error::{AuthError, Result};

/// First byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE: u8 = 0x16;
/// The ALPN protocol of gRPC.
const ALPN_H2: &[u8] = b"h2";

/// How a listener treats TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Plaintext only.
    #[default]
    Disabled,
    /// TLS and plaintext on the same port (told apart by the first byte).
    Permissive,
    /// TLS only.
    Enforcing,
}

impl std::str::FromStr for TlsMode {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "disabled" => Ok(TlsMode::Disabled),
            "permissive" => Ok(TlsMode::Permissive),
            "enforcing" => Ok(TlsMode::Enforcing),
            _ => Err(AuthError::Invalid(format!(
                "tls mode {s:?}: expected disabled, permissive or enforcing"
            ))),
        }
    }
}

impl std::fmt::Display for TlsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsMode::Disabled => "disabled",
            TlsMode::Permissive => "permissive",
            TlsMode::Enforcing => "enforcing",
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| AuthError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The certificates of a PEM file, in order.
///
/// # Errors
/// [`AuthError::Read`] or [`AuthError::Pem`] when it holds none.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| AuthError::Pem {
            path: path.to_owned(),
            what: format!("unreadable PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(AuthError::Pem {
            path: path.to_owned(),
            what: "no CERTIFICATE block".to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
///
/// # Errors
/// [`AuthError::Read`] or [`AuthError::Pem`] when it holds none.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| AuthError::Pem {
        path: path.to_owned(),
        what: format!("no usable PRIVATE KEY block: {e}"),
    })
}

/// A root store holding the certificates of a PEM file (the cluster CA).
///
/// # Errors
/// As [`load_certs`], or [`AuthError::Tls`] when a certificate is not a usable anchor.
pub fn load_roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// The ring provider: the workspace builds rustls with ring only (no aws-lc-rs), whose
/// default is deprecated in 0.23.48 for lacking post-quantum key exchange.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The files of a TLS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    /// PEM certificate chain, leaf first.
    pub cert_chain: PathBuf,
    /// PEM private key of the leaf.
    pub private_key: PathBuf,
    /// PEM CA whose certificates clients must present (mutual TLS); `None`: no client
    /// certificate asked for.
    pub client_ca: Option<PathBuf>,
}

impl ServerFiles {
    fn paths(&self) -> impl Iterator<Item = &Path> {
        [
            Some(&self.cert_chain),
            Some(&self.private_key),
            self.client_ca.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(PathBuf::as_path)
    }

    /// A server configuration from the files (ALPN h2).
    ///
    /// # Errors
    /// When a file is unreadable or rustls refuses its content.
    pub fn build(&self) -> Result<Arc<ServerConfig>> {
        let certs = load_certs(&self.cert_chain)?;
        let key = load_key(&self.private_key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(load_roots(ca)?),
                    provider(),
                )
                .build()
                .map_err(|e| AuthError::Verifier(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key)?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }
}

/// What was seen of a file: (length, modification time).
type Stamp = Option<(u64, SystemTime)>;

fn stamps(files: &ServerFiles) -> Vec<Stamp> {
    stamps_of(files.paths())
}

fn stamps_of<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Vec<Stamp> {
    paths
        .into_iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)))
        })
        .collect()
}

/// A server configuration that follows its files; see the module doc.
pub struct ReloadingConfig {
    files: ServerFiles,
    check_interval: Duration,
    seen: Mutex<(Instant, Vec<Stamp>)>,
    current: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for ReloadingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingConfig")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ReloadingConfig {
    /// Loads the files now; looks for changes at most every `check_interval`.
    ///
    /// # Errors
    /// As [`ServerFiles::build`].
    pub fn new(files: ServerFiles, check_interval: Duration) -> Result<Self> {
        let seen = stamps(&files);
        let config = files.build()?;
        Ok(ReloadingConfig {
            files,
            check_interval,
            seen: Mutex::new((Instant::now(), seen)),
            current: RwLock::new(config),
        })
    }

    /// The configuration for a new handshake, reloaded first when the files changed and the
    /// check interval passed.
    pub fn current(&self) -> Arc<ServerConfig> {
        let due = self.seen.lock().0.elapsed() >= self.check_interval;
        if due {
            self.reload_if_changed();
        }
        self.current.read().clone()
    }

    /// Re-reads the files when their size or time changed; returns whether it swapped.
    /// A load failure is logged and keeps the previous configuration (and is retried at
    /// the next change).
    pub fn reload_if_changed(&self) -> bool {
        let now = stamps(&self.files);
        {
            let mut seen = self.seen.lock();
            seen.0 = Instant::now();
            if seen.1 == now {
                return false;
            }
            seen.1 = now;
        }
        match self.files.build() {
            Ok(config) => {
                *self.current.write() = config;
                tracing::info!(cert = %self.files.cert_chain.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(cert = %self.files.cert_chain.display(), error = %e, "TLS certificate reload failed; keeping the previous one");
                false
            }
        }
    }
}

/// Turns accepted TCP connections into plaintext or TLS streams per the mode.
#[derive(Debug, Clone)]
pub struct Acceptor {
    mode: TlsMode,
    config: Option<Arc<ReloadingConfig>>,
}

impl Acceptor {
    /// Plaintext only.
    pub fn plaintext() -> Self {
        Acceptor {
            mode: TlsMode::Disabled,
            config: None,
        }
    }

    /// An acceptor in `mode` over `config` (ignored when disabled).
    pub fn new(mode: TlsMode, config: Arc<ReloadingConfig>) -> Self {
        Acceptor {
            mode,
            config: Some(config),
        }
    }

    /// The mode.
    pub fn mode(&self) -> TlsMode {
        if self.config.is_none() {
            TlsMode::Disabled
        } else {
            self.mode
        }
    }

    /// Completes the TLS handshake when the mode (and, permissive, the first byte) asks for it.
    ///
    /// # Errors
    /// The handshake's error (for mTLS: a client without a valid certificate).
    pub async fn accept(&self, stream: TcpStream) -> io::Result<MaybeTls> {
        let Some(config) = self
            .config
            .as_ref()
            .filter(|_| self.mode != TlsMode::Disabled)
        else {
            return Ok(MaybeTls::Plain(stream));
        };
        let mut first = [0u8; 1];
        let n = stream.peek(&mut first).await?;
        if n == 0 || first[0] != TLS_HANDSHAKE {
            if self.mode == TlsMode::Permissive {
                return Ok(MaybeTls::Plain(stream));
            }
            // Refused at once: waiting for a TLS record a plaintext peer never sends would
            // hold the connection until the handshake timeout.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a plaintext connection on a TLS-only (enforcing) port",
            ));
        }
        let tls = tokio_rustls::TlsAcceptor::from(config.current())
            .accept(stream)
            .await?;
        Ok(MaybeTls::Tls(Box::new(tls)))
    }
}

/// An accepted connection, plaintext or TLS.
#[derive(Debug)]
pub enum MaybeTls {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl MaybeTls {
    /// The TCP stream underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            MaybeTls::Plain(s) => s,
            MaybeTls::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Tls(_))
    }
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(feature = "tonic")]
impl tonic::transport::server::Connected for MaybeTls {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp().connect_info()
    }
}

/// The files of a TLS client on internal links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFiles {
    /// PEM CA that signed the servers' certificates (the cluster CA).
    pub ca: PathBuf,
    /// PEM certificate chain and key presented to servers that ask (mutual TLS).
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ClientFiles {
    /// A client configuration trusting only `ca`, verifying server names, ALPN h2.
    ///
    /// # Errors
    /// When a file is unreadable or rustls refuses its content.
    pub fn build(&self) -> Result<Arc<ClientConfig>> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(load_roots(&self.ca)?);
        let mut config = match &self.identity {
            Some((cert, key)) => {
                builder.with_client_auth_cert(load_certs(cert)?, load_key(key)?)?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }
}

/// Opens a TLS connection to `host` (a DNS name or IP address, checked against the server's
/// certificate) over `stream`.
///
/// # Errors
/// An invalid `host`, or the handshake's error (unknown CA, name mismatch, ...).
pub async fn connect(
    config: Arc<ClientConfig>,
    host: &str,
    stream: TcpStream,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = ServerName::try_from(host.to_owned()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("server name {host:?}: {e}"),
        )
    })?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
}

mod internal;

pub use internal::{
    ClientStream, Connector, HANDSHAKE_TIMEOUT, InternalFiles, InternalTls, handshaken,
};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
