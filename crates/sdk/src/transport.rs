//! Unary calls on HTTP/2 connections the SDK drives itself, from the calling task.
//!
//! A unary call through tonic's `Channel` crosses three tasks: the caller hands the request
//! to the channel's buffer task, which hands it to hyper's connection task, and hyper spawns
//! one more task per request to bring the answer back; tonic also runs the request through
//! an encoding stream with an 8 KiB buffer. A producer on a small machine spends a visible
//! share of its CPU on those hand-offs. Here a call encodes its message into one buffer of
//! the right size, opens the stream on an `h2` connection and reads the answer in the
//! caller's task; the connection's own task only moves frames. Streaming calls (Telemetry,
//! ReceiveMessage) stay on tonic's channel, where one call lasts long enough that its set-up
//! does not matter.
//!
//! - [`Dialer`]: how a client connects: TCP with `TCP_NODELAY`, TLS through rustls (ALPN
//!   `h2`; the system's roots, loaded once off the runtime threads, or a given CA), writes
//!   gathered per round of the connection task ([`crate::gather`]), fixed flow-control
//!   windows, keep-alive pings every 30 s even when idle (a peer that does not answer within
//!   20 s is dropped).
//! - [`Link`]: one endpoint's connection, dialled on first use and again after it is lost
//!   (the endpoint's addresses are tried in order); calls share it.
//! - [`Link::call`]: one call: the gRPC request headers, one length-prefixed message (framed
//!   by [`crate::wire`]), and the answer checked as tonic would check it (HTTP status,
//!   `grpc-status` in the trailers or a trailers-only answer, exactly one uncompressed
//!   message).
//!
//! Invariants: a connection task ends when its session's token is cancelled, when the peer
//! closes or stops answering pings, or when nothing refers to the connection any more; a
//! call never decides on its own deadline (the session wraps it in one and sends
//! `grpc-timeout`), and dropping the call resets its stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use http::header::{CONTENT_TYPE, TE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Tls;
use crate::gather::GatherIo;
use crate::wire::{decode_frame, encode_frame};

/// Flow-control window of each stream (a 4 MiB answer fits).
const STREAM_WINDOW: u32 = 4 << 20;
/// Flow-control window of each connection.
const CONNECTION_WINDOW: u32 = 16 << 20;
/// Pings go out this long after the previous one was answered.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// A ping unanswered this long drops the connection.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a call failed below the RocketMQ protocol.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The gRPC status the call ended with (or the one tonic would report for a transport
    /// failure).
    Status(tonic::Status),
    /// The TLS handshake failed (what rustls reported).
    Tls(String),
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Self {
        Failure::Status(s)
    }
}

/// The headers every unary call of a client carries: `base` (the client's `x-mq-*`
/// headers) with the gRPC content type, `te: trailers` and a `grpc-timeout` of `timeout`.
pub(crate) fn unary_headers(base: &HeaderMap, timeout: Duration) -> HeaderMap {
    let mut headers = base.clone();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(TE, HeaderValue::from_static("trailers"));
    // gRPC allows at most 8 digits: whole milliseconds fit below 27 hours.
    let millis = timeout.as_millis().min(99_999_999);
    if let Ok(v) = HeaderValue::try_from(format!("{millis}m")) {
        headers.insert(HeaderName::from_static("grpc-timeout"), v);
    }
    headers
}

/// How one client connects (cheap to clone).
#[derive(Clone)]
pub(crate) struct Dialer {
    inner: Arc<DialerInner>,
}

struct DialerInner {
    tls: Option<TlsSetup>,
    connect_timeout: Duration,
    token: CancellationToken,
    tasks: TaskTracker,
}

struct TlsSetup {
    roots: Tls,
    /// Built on first use (loading the system's roots reads files).
    connector: tokio::sync::OnceCell<TlsConnector>,
}

impl Dialer {
    /// A dialer for connections with `tls` (none: plain text) whose tasks run under `tasks`
    /// until `token` is cancelled.
    ///
    /// # Errors
    /// What is wrong with a given CA certificate.
    pub(crate) fn new(
        tls: Option<&Tls>,
        connect_timeout: Duration,
        token: CancellationToken,
        tasks: TaskTracker,
    ) -> Result<Dialer, String> {
        let tls = match tls {
            None => None,
            Some(roots) => {
                let connector = tokio::sync::OnceCell::new();
                if matches!(roots, Tls::Ca { .. }) {
                    // No I/O: checked now, so a bad PEM is a configuration error.
                    let _ = connector.set(tls_connector(roots)?);
                }
                Some(TlsSetup {
                    roots: roots.clone(),
                    connector,
                })
            }
        };
        Ok(Dialer {
            inner: Arc::new(DialerInner {
                tls,
                connect_timeout,
                token,
                tasks,
            }),
        })
    }

    fn scheme(&self) -> Scheme {
        if self.inner.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        }
    }

    /// Connects to `host:port` and starts the connection's task.
    async fn dial(&self, host: &str, port: u16, authority: Authority) -> Result<Conn, Failure> {
        let timeout = self.inner.connect_timeout;
        let unavailable = |what: String| Failure::Status(tonic::Status::unavailable(what));
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(unavailable(format!("connecting to {authority}: {e}"))),
            Err(_) => {
                return Err(unavailable(format!(
                    "connecting to {authority}: no answer within {timeout:?}"
                )));
            }
        };
        tcp.set_nodelay(true)
            .map_err(|e| unavailable(format!("connecting to {authority}: {e}")))?;
        let Some(tls) = &self.inner.tls else {
            return self.start(GatherIo::new(tcp), authority).await;
        };
        let connector = tls
            .connector
            .get_or_try_init(|| async {
                let roots = tls.roots.clone();
                tokio::task::spawn_blocking(move || tls_connector(&roots))
                    .await
                    .map_err(|e| e.to_string())?
            })
            .await
            .map_err(Failure::Tls)?;
        let name = match &tls.roots {
            Tls::Ca {
                domain: Some(d), ..
            } => d.clone(),
            _ => host.to_owned(),
        };
        let name = ServerName::try_from(name.clone())
            .map_err(|_| Failure::Tls(format!("{name:?} is not a valid server name")))?;
        let stream = match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                if let Some(t) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    return Err(Failure::Tls(t.to_string()));
                }
                return Err(unavailable(format!("TLS with {authority}: {e}")));
            }
            Err(_) => {
                return Err(unavailable(format!(
                    "TLS with {authority}: no handshake within {timeout:?}"
                )));
            }
        };
        self.start(GatherIo::new(stream), authority).await
    }

    /// Runs the HTTP/2 handshake on `io` and spawns the connection's task.
    async fn start<T>(&self, io: T, authority: Authority) -> Result<Conn, Failure>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, mut connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| h2_status(&e))?;
        let alive = Arc::new(AtomicBool::new(true));
        let pings = connection.ping_pong();
        let (token, flag, endpoint) = (
            self.inner.token.clone(),
            alive.clone(),
            authority.to_string(),
        );
        self.inner.tasks.spawn(async move {
            drive(connection, pings, token, &endpoint).await;
            flag.store(false, Ordering::Release);
        });
        Ok(Conn {
            send,
            scheme: self.scheme(),
            authority,
            alive,
        })
    }
}

/// The TLS connector for `roots`.
fn tls_connector(roots: &Tls) -> Result<TlsConnector, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    match roots {
        Tls::SystemRoots => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "no usable root certificate found on this system ({} errors reading them)",
                    found.errors.len()
                ));
            }
        }
        Tls::Ca { pem, .. } => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("the CA certificate's PEM: {e}"))?;
                store
                    .add(cert)
                    .map_err(|e| format!("the CA certificate: {e}"))?;
            }
            if store.is_empty() {
                return Err("the CA PEM holds no certificate".into());
            }
        }
    }
    // The process's provider when one is installed, else ring's, as tonic does (ring is the
    // only provider in the dependency tree; its deprecation is about post-quantum suites).
    #[allow(deprecated)]
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Moves a connection's frames until it ends, the token is cancelled or a keep-alive ping
/// goes unanswered.
async fn drive<T>(
    connection: h2::client::Connection<T, Bytes>,
    mut pings: Option<h2::PingPong>,
    token: CancellationToken,
    endpoint: &str,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut connection = std::pin::pin!(connection);
    loop {
        let keep_alive = async {
            tokio::time::sleep(KEEP_ALIVE_INTERVAL).await;
            match pings.as_mut() {
                Some(p) => matches!(
                    tokio::time::timeout(KEEP_ALIVE_TIMEOUT, p.ping(h2::Ping::opaque())).await,
                    Ok(Ok(_))
                ),
                None => true,
            }
        };
        tokio::select! {
            ended = &mut connection => {
                if let Err(e) = ended {
                    tracing::debug!(endpoint, error = %e, "connection ended");
                }
                return;
            }
            () = token.cancelled() => return,
            answered = keep_alive => {
                if !answered {
                    tracing::debug!(endpoint, "keep-alive ping unanswered, dropping the connection");
                    return;
                }
            }
        }
    }
}

/// One live connection (clones share it).
#[derive(Clone)]
struct Conn {
    send: SendRequest<Bytes>,
    scheme: Scheme,
    authority: Authority,
    /// False once the connection's task has ended.
    alive: Arc<AtomicBool>,
}

/// One endpoint's connection for unary calls.
pub(crate) struct Link {
    /// `host`, `port` and their authority, in the order they are tried.
    addresses: Vec<(String, u16, Authority)>,
    dialer: Dialer,
    current: Mutex<Option<Conn>>,
    /// Held while dialling, so concurrent calls wait for one connection.
    dialing: tokio::sync::Mutex<()>,
}

impl Link {
    /// A link to the endpoint at `addresses` (`host`, `port`); nothing is dialled yet.
    ///
    /// # Errors
    /// The first address that is not a valid `host:port`.
    pub(crate) fn new(addresses: &[(&str, i32)], dialer: Dialer) -> Result<Link, String> {
        let addresses = addresses
            .iter()
            .map(|&(host, port)| {
                let spelled = crate::endpoints::host_port(host, port);
                let port = u16::try_from(port).map_err(|_| format!("{spelled}: bad port"))?;
                let authority =
                    Authority::try_from(spelled.as_str()).map_err(|e| format!("{spelled}: {e}"))?;
                Ok((host.to_owned(), port, authority))
            })
            .collect::<Result<Vec<_>, String>>()?;
        if addresses.is_empty() {
            return Err("an endpoint without addresses".into());
        }
        Ok(Link {
            addresses,
            dialer,
            current: Mutex::new(None),
            dialing: tokio::sync::Mutex::new(()),
        })
    }

    /// Calls `path` (`/package.Service/Method`) with `request`, `headers` (complete: see
    /// [`unary_headers`]) and decodes the answer.
    pub(crate) async fn call<Q, R>(
        &self,
        path: &'static str,
        headers: HeaderMap,
        request: &Q,
    ) -> Result<R, Failure>
    where
        Q: prost::Message,
        R: prost::Message + Default,
    {
        let body = encode_frame(request)?;
        let conn = self.connection().await?;
        match exchange(&conn, path, headers, body).await {
            Ok(r) => Ok(r),
            Err(Failed { status, lost }) => {
                if lost {
                    self.forget(&conn);
                }
                Err(Failure::Status(status))
            }
        }
    }

    /// The live connection, dialled now if there is none.
    async fn connection(&self) -> Result<Conn, Failure> {
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let mut last = None;
        for (host, port, authority) in &self.addresses {
            match self.dialer.dial(host, *port, authority.clone()).await {
                Ok(c) => {
                    *self.current.lock() = Some(c.clone());
                    return Ok(c);
                }
                Err(e) => {
                    tracing::debug!(endpoint = %authority, error = ?e, "dial failed");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| tonic::Status::unavailable("no address to dial").into()))
    }

    fn live(&self) -> Option<Conn> {
        self.current
            .lock()
            .as_ref()
            .filter(|c| c.alive.load(Ordering::Acquire))
            .cloned()
    }

    /// Drops `conn` as the link's connection (the next call dials anew).
    fn forget(&self, conn: &Conn) {
        let mut current = self.current.lock();
        if current
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(&c.alive, &conn.alive))
        {
            *current = None;
        }
    }
}

/// A failed exchange: its status, and whether the connection is unusable.
struct Failed {
    status: tonic::Status,
    lost: bool,
}

impl Failed {
    fn call(status: tonic::Status) -> Failed {
        Failed {
            status,
            lost: false,
        }
    }

    /// An `h2` failure; the connection is lost when the failure is the connection's.
    fn h2(e: &h2::Error) -> Failed {
        Failed {
            status: h2_status(e),
            lost: e.is_io() || e.is_go_away(),
        }
    }

    /// A failure to open a stream: the connection cannot take calls any more.
    fn open(e: &h2::Error) -> Failed {
        Failed {
            status: h2_status(e),
            lost: true,
        }
    }
}

async fn exchange<R>(
    conn: &Conn,
    path: &'static str,
    headers: HeaderMap,
    body: Bytes,
) -> Result<R, Failed>
where
    R: prost::Message + Default,
{
    let uri = Uri::builder()
        .scheme(conn.scheme.clone())
        .authority(conn.authority.clone())
        .path_and_query(PathAndQuery::from_static(path))
        .build()
        .map_err(|e| Failed::call(tonic::Status::internal(format!("request URI: {e}"))))?;
    let mut request = Request::new(());
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;

    let mut send = conn
        .send
        .clone()
        .ready()
        .await
        .map_err(|e| Failed::open(&e))?;
    let (response, mut stream) = send
        .send_request(request, false)
        .map_err(|e| Failed::open(&e))?;
    stream.send_data(body, true).map_err(|e| Failed::h2(&e))?;
    let response = response.await.map_err(|e| Failed::h2(&e))?;

    let (parts, mut body) = response.into_parts();
    // A trailers-only answer (an error before any message) carries its status in the headers.
    if let Some(status) = tonic::Status::from_header_map(&parts.headers) {
        return Err(Failed::call(if status.code() == tonic::Code::Ok {
            tonic::Status::internal("the server answered without a message")
        } else {
            status
        }));
    }
    if parts.status != StatusCode::OK {
        return Err(Failed::call(http_status(parts.status)));
    }
    let mut data = BytesMut::new();
    let mut only: Option<Bytes> = None;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| Failed::h2(&e))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        // The usual answer is one DATA frame: kept as it came, without a copy.
        match only.take() {
            None if data.is_empty() => only = Some(chunk),
            first => {
                if let Some(first) = first {
                    data.extend_from_slice(&first);
                }
                data.extend_from_slice(&chunk);
            }
        }
    }
    let trailers = body.trailers().await.map_err(|e| Failed::h2(&e))?;
    match trailers.as_ref().and_then(tonic::Status::from_header_map) {
        Some(status) if status.code() == tonic::Code::Ok => {}
        Some(status) => return Err(Failed::call(status)),
        None => {
            return Err(Failed::call(tonic::Status::internal(
                "the answer ended without a grpc-status",
            )));
        }
    }
    decode_frame(only.unwrap_or_else(|| data.freeze())).map_err(Failed::call)
}

/// The status tonic reports for an `h2` failure: a lost connection is `UNAVAILABLE`; a reset
/// stream maps as the gRPC HTTP/2 spec says.
fn h2_status(e: &h2::Error) -> tonic::Status {
    use tonic::Code;
    let code = if e.is_io() || e.is_go_away() {
        Code::Unavailable
    } else {
        match e.reason() {
            Some(
                h2::Reason::NO_ERROR
                | h2::Reason::PROTOCOL_ERROR
                | h2::Reason::INTERNAL_ERROR
                | h2::Reason::FLOW_CONTROL_ERROR
                | h2::Reason::SETTINGS_TIMEOUT
                | h2::Reason::FRAME_SIZE_ERROR
                | h2::Reason::COMPRESSION_ERROR
                | h2::Reason::CONNECT_ERROR,
            ) => Code::Internal,
            Some(h2::Reason::REFUSED_STREAM) => Code::Unavailable,
            Some(h2::Reason::CANCEL) => Code::Cancelled,
            Some(h2::Reason::ENHANCE_YOUR_CALM) => Code::ResourceExhausted,
            Some(h2::Reason::INADEQUATE_SECURITY) => Code::PermissionDenied,
            _ => Code::Unknown,
        }
    };
    tonic::Status::new(code, format!("HTTP/2: {e}"))
}

/// The status for an answer with HTTP status `status` and no `grpc-status` (gRPC's mapping).
fn http_status(status: StatusCode) -> tonic::Status {
    use tonic::Code;
    let code = match status {
        StatusCode::BAD_REQUEST => Code::Internal,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::Unimplemented,
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    };
    tonic::Status::new(code, format!("HTTP status {status} from the server"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use comet_proto::apache::rocketmq::v2 as pb;
    use tokio::net::TcpListener;

    const PATH: &str = "/apache.rocketmq.v2.MessagingService/Heartbeat";

    fn answer(code: pb::Code) -> pb::HeartbeatResponse {
        pb::HeartbeatResponse {
            status: Some(pb::Status {
                code: code as i32,
                message: "m".into(),
            }),
        }
    }

    /// How the test server answers one call.
    #[derive(Clone, Copy)]
    enum Reply {
        /// The request's group name echoed in the status message, `grpc-status: 0`.
        Echo,
        /// A trailers-only answer with `grpc-status: 5`.
        NotFound,
        /// Answers, then closes the connection.
        EchoThenClose,
    }

    /// Serves h2 on a fresh port: each call is answered with `reply` after its gRPC request
    /// headers are checked. Counts the connections accepted.
    async fn server(reply: Reply) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut conn = h2::server::handshake(tcp).await.unwrap();
                    while let Some(Ok((request, respond))) = conn.accept().await {
                        tokio::spawn(answer_call(request, respond, reply));
                        if matches!(reply, Reply::EchoThenClose) {
                            // The call in flight completes; then the connection closes.
                            conn.graceful_shutdown();
                            while conn.accept().await.is_some() {}
                            return;
                        }
                    }
                });
            }
        });
        (addr, connections)
    }

    async fn answer_call(
        request: http::Request<h2::RecvStream>,
        mut respond: h2::server::SendResponse<Bytes>,
        reply: Reply,
    ) {
        let (parts, mut body) = request.into_parts();
        assert_eq!(parts.uri.path(), PATH);
        assert_eq!(parts.headers[CONTENT_TYPE], "application/grpc");
        assert_eq!(parts.headers[TE], "trailers");
        assert_eq!(parts.headers["grpc-timeout"], "3000m");
        assert_eq!(parts.headers["x-mq-client-id"], "c1");
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            data.extend_from_slice(&chunk.unwrap());
        }
        let request: pb::HeartbeatRequest = decode_frame(data.freeze()).unwrap();
        let group = request.group.map(|g| g.name).unwrap_or_default();
        match reply {
            Reply::Echo | Reply::EchoThenClose => {
                let head = http::Response::builder()
                    .header(CONTENT_TYPE, "application/grpc")
                    .body(())
                    .unwrap();
                let mut out = respond.send_response(head, false).unwrap();
                let mut a = answer(pb::Code::Ok);
                a.status.as_mut().unwrap().message = group;
                out.send_data(encode_frame(&a).unwrap(), false).unwrap();
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                out.send_trailers(trailers).unwrap();
            }
            Reply::NotFound => {
                let head = http::Response::builder()
                    .header(CONTENT_TYPE, "application/grpc")
                    .header("grpc-status", "5")
                    .header("grpc-message", "no such thing")
                    .body(())
                    .unwrap();
                respond.send_response(head, true).unwrap();
            }
        }
    }

    fn link(addr: std::net::SocketAddr) -> (Link, CancellationToken) {
        let token = CancellationToken::new();
        let dialer = Dialer::new(
            None,
            Duration::from_secs(3),
            token.clone(),
            TaskTracker::new(),
        )
        .unwrap();
        let host = addr.ip().to_string();
        let link = Link::new(&[(host.as_str(), i32::from(addr.port()))], dialer).unwrap();
        (link, token)
    }

    fn headers() -> HeaderMap {
        let mut base = HeaderMap::new();
        base.insert("x-mq-client-id", HeaderValue::from_static("c1"));
        unary_headers(&base, Duration::from_secs(3))
    }

    fn heartbeat(group: &str) -> pb::HeartbeatRequest {
        pb::HeartbeatRequest {
            group: Some(pb::Resource {
                resource_namespace: String::new(),
                name: group.into(),
            }),
            client_type: pb::ClientType::Producer as i32,
        }
    }

    #[tokio::test]
    async fn given_a_server_when_called_should_send_grpc_and_decode_the_answer() {
        let (addr, _server) = server(Reply::Echo).await;
        let (link, token) = link(addr);
        let calls = (0..20).map(|i| {
            let link = &link;
            async move {
                let r: pb::HeartbeatResponse = link
                    .call(PATH, headers(), &heartbeat(&format!("g{i}")))
                    .await
                    .unwrap();
                assert_eq!(r.status.unwrap().message, format!("g{i}"));
            }
        });
        futures::future::join_all(calls).await;
        token.cancel();
    }

    #[tokio::test]
    async fn given_an_error_status_should_report_it() {
        let (addr, _server) = server(Reply::NotFound).await;
        let (link, token) = link(addr);
        let r = link
            .call::<_, pb::HeartbeatResponse>(PATH, headers(), &heartbeat("g"))
            .await;
        match r {
            Err(Failure::Status(s)) => {
                assert_eq!(s.code(), tonic::Code::NotFound);
                assert_eq!(s.message(), "no such thing");
            }
            other => panic!("{other:?}"),
        }
        token.cancel();
    }

    #[tokio::test]
    async fn given_a_lost_connection_when_called_again_should_dial_anew() {
        let (addr, server) = server(Reply::EchoThenClose).await;
        let (link, token) = link(addr);
        for round in 0..3 {
            // The connection may be seen closing only by the next call: bounded retries.
            let mut answered = false;
            for _ in 0..5 {
                let r = link
                    .call::<_, pb::HeartbeatResponse>(PATH, headers(), &heartbeat("g"))
                    .await;
                match r {
                    Ok(_) => {
                        answered = true;
                        break;
                    }
                    Err(Failure::Status(s)) => {
                        assert_eq!(s.code(), tonic::Code::Unavailable, "round {round}: {s}")
                    }
                    Err(other) => panic!("{other:?}"),
                }
            }
            assert!(answered, "round {round} got no answer");
        }
        token.cancel();
        assert!(
            server.load(Ordering::SeqCst) >= 3,
            "one connection per round"
        );
    }

    #[tokio::test]
    async fn given_no_server_should_be_unavailable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let (link, _token) = link(addr);
        match link
            .call::<_, pb::HeartbeatResponse>(PATH, headers(), &heartbeat("g"))
            .await
        {
            Err(Failure::Status(s)) => assert_eq!(s.code(), tonic::Code::Unavailable),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn given_transport_failures_should_map_as_tonic_does() {
        let refused = h2::Error::from(h2::Reason::REFUSED_STREAM);
        assert_eq!(h2_status(&refused).code(), tonic::Code::Unavailable);
        let cancel = h2::Error::from(h2::Reason::CANCEL);
        assert_eq!(h2_status(&cancel).code(), tonic::Code::Cancelled);
        assert_eq!(
            http_status(StatusCode::NOT_FOUND).code(),
            tonic::Code::Unimplemented
        );
        assert_eq!(
            http_status(StatusCode::SERVICE_UNAVAILABLE).code(),
            tonic::Code::Unavailable
        );
        let h = unary_headers(&HeaderMap::new(), Duration::from_millis(2500));
        assert_eq!(h["grpc-timeout"], "2500m");
    }

    #[test]
    fn given_a_pem_without_certificates_should_refuse_it() {
        let bad = Tls::Ca {
            pem: b"not a certificate".to_vec(),
            domain: None,
        };
        assert!(
            Dialer::new(
                Some(&bad),
                Duration::from_secs(1),
                CancellationToken::new(),
                TaskTracker::new()
            )
            .is_err()
        );
    }
}
