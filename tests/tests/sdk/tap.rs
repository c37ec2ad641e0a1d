//! [`Tap`]: a `MessagingService` relay for the SDK's tests, on `127.0.0.1:0` in front of a
//! real node. Each call is forwarded unchanged (raw HTTP/2: unary and streaming calls alike)
//! and counted by RPC name. The relay can serve TLS with a given identity, and can check that
//! every request carries the official clients' HMAC-SHA1 `authorization` header for given
//! credentials, refusing the ones that do not (`UNAUTHENTICATED`).
//!
//! The node must advertise the relay's address (`proxy.advertised_endpoint`) so that routes
//! and assignments send the client back through it: bind with [`Tap::bind`] first, start the
//! node, then [`Tap::start`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Identity, Server, ServerTlsConfig};
use tower::ServiceExt;

/// An access key and secret the relay checks signatures against.
pub struct Expected {
    pub access_key: String,
    pub secret: String,
}

/// A running relay; dropping it stops it.
pub struct Tap {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct State {
    calls: Mutex<HashMap<String, usize>>,
    expected: Option<Expected>,
    signed: AtomicUsize,
    refused: Mutex<Vec<String>>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Tap {
    /// Binds the relay's listener (its address is what the node must advertise).
    pub async fn bind() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tap");
        let addr = listener.local_addr().expect("tap addr");
        (listener, addr)
    }

    /// Serves on `listener`, forwarding to the node at `upstream`; with `tls` as a TLS server,
    /// with `expected` checking every request's signature.
    pub fn start(
        listener: TcpListener,
        upstream: SocketAddr,
        tls: Option<Identity>,
        expected: Option<Expected>,
    ) -> Tap {
        let addr = listener.local_addr().expect("tap addr");
        let upstream = Channel::from_shared(format!("http://{upstream}"))
            .expect("upstream uri")
            .connect_lazy();
        let state = Arc::new(State {
            expected,
            ..State::default()
        });
        let relay = Relay {
            upstream,
            state: state.clone(),
        };
        let mut server = Server::builder();
        if let Some(identity) = tls {
            server = server
                .tls_config(ServerTlsConfig::new().identity(identity))
                .expect("server TLS config");
        }
        let router = server.add_service(relay);
        let task = tokio::spawn(async move {
            if let Err(e) = router
                .serve_with_incoming(TcpIncoming::from(listener))
                .await
            {
                tracing::warn!(error = %e, "tap stopped");
            }
        });
        Tap { addr, state, task }
    }

    /// How many calls of `rpc` (e.g. `"AckMessage"`) went through.
    pub fn calls(&self, rpc: &str) -> usize {
        self.state.calls.lock().get(rpc).copied().unwrap_or(0)
    }

    /// How many requests carried a valid signature.
    pub fn signed(&self) -> usize {
        self.state.signed.load(Ordering::SeqCst)
    }

    /// The requests refused for their signature (`"<rpc>: <why>"`).
    pub fn refused(&self) -> Vec<String> {
        self.state.refused.lock().clone()
    }
}

#[derive(Clone)]
struct Relay {
    upstream: Channel,
    state: Arc<State>,
}

impl tonic::server::NamedService for Relay {
    const NAME: &'static str = "apache.rocketmq.v2.MessagingService";
}

type Answer = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl tower::Service<http::Request<Body>> for Relay {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Answer {
        let rpc = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        *self.state.calls.lock().entry(rpc.clone()).or_default() += 1;
        if let Some(expected) = &self.state.expected {
            match verify(request.headers(), expected) {
                Ok(()) => {
                    self.state.signed.fetch_add(1, Ordering::SeqCst);
                }
                Err(why) => {
                    self.state.refused.lock().push(format!("{rpc}: {why}"));
                    let status = tonic::Status::unauthenticated(why);
                    return Box::pin(async move { Ok(status.into_http()) });
                }
            }
        }
        let upstream = self.upstream.clone();
        Box::pin(async move {
            match upstream.oneshot(request).await {
                Ok(response) => Ok(response),
                Err(e) => Ok(tonic::Status::unavailable(format!("tap: {e}")).into_http()),
            }
        })
    }
}

/// Checks the `authorization` header as a RocketMQ 5 proxy with ACL would:
/// `MQv2-HMAC-SHA1 Credential=<ak>, SignedHeaders=x-mq-date-time, Signature=<HEX>`, the
/// signature being HMAC-SHA1 of the `x-mq-date-time` value (`yyyyMMdd'T'HHmmss'Z'`) keyed
/// with the secret, in upper-case hex.
fn verify(headers: &http::HeaderMap, expected: &Expected) -> Result<(), String> {
    let header = |name: &str| {
        headers
            .get(name)
            .ok_or_else(|| format!("no {name} header"))?
            .to_str()
            .map_err(|_| format!("{name} is not ASCII"))
    };
    let date = header("x-mq-date-time")?;
    let shape_ok = date.len() == 16
        && date.bytes().enumerate().all(|(i, b)| match i {
            8 => b == b'T',
            15 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    if !shape_ok {
        return Err(format!("x-mq-date-time {date:?} is not yyyyMMddTHHmmssZ"));
    }
    let authorization = header("authorization")?;
    let prefix = format!(
        "MQv2-HMAC-SHA1 Credential={}, SignedHeaders=x-mq-date-time, Signature=",
        expected.access_key
    );
    let signature = authorization
        .strip_prefix(&prefix)
        .ok_or_else(|| format!("authorization {authorization:?} does not start with {prefix:?}"))?;
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(expected.secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(date.as_bytes());
    let want = hex::encode_upper(mac.finalize().into_bytes());
    if signature != want {
        return Err(format!("signature {signature} is not {want}"));
    }
    Ok(())
}

/// A CA and a server certificate it issued for `127.0.0.1` and `localhost`.
pub struct Pki {
    /// The CA certificate, PEM (what the client trusts).
    pub ca_pem: String,
    /// The server's identity (certificate and key).
    pub server: Identity,
}

impl Pki {
    pub fn generate() -> Pki {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "comet test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let server_key = rcgen::KeyPair::generate().expect("server key");
        let mut server_params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params");
        server_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "comet test server");
        server_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .expect("server certificate");
        Pki {
            ca_pem: ca_cert.pem(),
            server: Identity::from_pem(server_cert.pem(), server_key.serialize_pem()),
        }
    }
}
