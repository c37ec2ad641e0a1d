//! TLS of the client port: gRPC over TLS in enforcing mode, both TLS and plaintext in
//! permissive mode, and a renewed certificate served to new connections while an open one
//! keeps working.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use comet_auth::{Acceptor, ReloadingConfig, ServerFiles, TlsMode};
use comet_proto::apache::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use comet_proto::apache::rocketmq::v2::{Code, QueryRouteRequest};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::harness::{Harness, req, res};

struct Ca {
    dir: tempfile::TempDir,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "test ca");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca {
            dir: tempfile::tempdir().unwrap(),
            issuer,
        }
    }

    /// Writes a leaf for localhost as server.pem / server.key (over any previous one).
    fn issue(&self, common_name: &str) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            self.dir.path().join("server.pem"),
            self.dir.path().join("server.key"),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

async fn tls_proxy(ca: &Ca, mode: TlsMode) -> (Harness, Arc<ReloadingConfig>) {
    let (cert_chain, private_key) = ca.issue("first");
    let config = Arc::new(
        ReloadingConfig::new(
            ServerFiles {
                cert_chain,
                private_key,
                client_ca: None,
            },
            Duration::ZERO,
        )
        .unwrap(),
    );
    let acceptor = Acceptor::new(mode, config.clone());
    let h = Harness::builder()
        .config(|c| c.security.tls = Some(acceptor))
        .start()
        .await;
    (h, config)
}

async fn tls_channel(h: &Harness, ca: &Ca) -> Result<Channel, tonic::transport::Error> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.issuer.pem()))
        .domain_name("localhost");
    Endpoint::from_shared(format!("https://localhost:{}", h.addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

async fn route_ok(channel: Channel) -> bool {
    MessagingServiceClient::new(channel)
        .query_route(req(QueryRouteRequest {
            topic: res("normal"),
            endpoints: None,
        }))
        .await
        .is_ok_and(|r| {
            r.into_inner()
                .status
                .is_some_and(|s| s.code == Code::Ok as i32)
        })
}

#[tokio::test]
async fn given_enforcing_tls_when_clients_connect_should_serve_tls_and_refuse_plaintext() {
    let ca = Ca::new();
    let (h, _) = tls_proxy(&ca, TlsMode::Enforcing).await;
    assert!(route_ok(tls_channel(&h, &ca).await.unwrap()).await);
    let plain = Endpoint::from_shared(format!("http://{}", h.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(channel) = plain {
        assert!(!route_ok(channel).await, "plaintext was served");
    }
}

#[tokio::test]
async fn given_permissive_tls_when_clients_use_either_should_serve_both() {
    let ca = Ca::new();
    let (h, _) = tls_proxy(&ca, TlsMode::Permissive).await;
    assert!(route_ok(tls_channel(&h, &ca).await.unwrap()).await);
    assert!(route_ok(h.channel().await).await);
}

#[tokio::test]
async fn given_a_renewed_certificate_when_reloaded_should_keep_open_connections() {
    let ca = Ca::new();
    let (h, config) = tls_proxy(&ca, TlsMode::Enforcing).await;
    let open = tls_channel(&h, &ca).await.unwrap();
    assert!(route_ok(open.clone()).await);
    ca.issue("renewed");
    assert!(config.reload_if_changed(), "the renewal is picked up");
    assert!(route_ok(tls_channel(&h, &ca).await.unwrap()).await);
    assert!(
        route_ok(open).await,
        "the open connection survives the reload"
    );
}
