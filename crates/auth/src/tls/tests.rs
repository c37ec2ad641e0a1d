use super::*;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A test CA writing its certificates into a temporary directory.
struct TestCa {
    dir: tempfile::TempDir,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, "comet test ca");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), issuer.pem()).unwrap();
        TestCa { dir, issuer }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Writes `<stem>.pem` and `<stem>.key` for `names`; returns their paths.
    fn issue(&self, stem: &str, names: &[&str], common_name: &str) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            self.dir.path().join(format!("{stem}.pem")),
            self.dir.path().join(format!("{stem}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

/// Serves `acceptor` on a loopback port: each connection echoes what it reads.
async fn echo_server(acceptor: Acceptor) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = acceptor.accept(tcp).await else {
                    return;
                };
                let tag: &[u8] = if conn.is_tls() { b"T" } else { b"P" };
                let mut buf = [0u8; 64];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut out = tag.to_vec();
                    out.extend_from_slice(&buf[..n]);
                    if conn.write_all(&out).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    msg: &[u8],
) -> io::Result<Vec<u8>> {
    s.write_all(msg).await?;
    let mut buf = vec![0u8; msg.len() + 1];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

fn server(ca: &TestCa, mode: TlsMode, mtls: bool) -> (Acceptor, Arc<ReloadingConfig>, ServerFiles) {
    let (cert_chain, private_key) = ca.issue("server", &["localhost", "127.0.0.1"], "server-1");
    let files = ServerFiles {
        cert_chain,
        private_key,
        client_ca: mtls.then(|| ca.ca()),
    };
    let config = Arc::new(ReloadingConfig::new(files.clone(), Duration::ZERO).unwrap());
    (Acceptor::new(mode, config.clone()), config, files)
}

async fn tls_client(
    addr: std::net::SocketAddr,
    files: &ClientFiles,
    host: &str,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let mut s = connect(files.build().unwrap(), host, tcp).await?;
    // The server's verdict on a client certificate arrives with its first answer (TLS 1.3).
    round_trip(&mut s, b"hello").await?;
    Ok(s)
}

fn leaf_common_name(s: &tokio_rustls::client::TlsStream<TcpStream>) -> Vec<u8> {
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn given_enforcing_mode_when_a_client_trusts_the_ca_should_handshake_and_refuse_plaintext() {
    let ca = TestCa::new();
    let (acceptor, _, _) = server(&ca, TlsMode::Enforcing, false);
    let addr = echo_server(acceptor).await;
    let client = ClientFiles {
        ca: ca.ca(),
        identity: None,
    };
    let mut s = tls_client(addr, &client, "localhost").await.unwrap();
    assert_eq!(round_trip(&mut s, b"ping").await.unwrap(), b"Tping");
    // The IP address is in the certificate as well.
    assert!(tls_client(addr, &client, "127.0.0.1").await.is_ok());
    // A name the certificate does not carry is refused by the client.
    assert!(
        tls_client(addr, &client, "elsewhere.example")
            .await
            .is_err()
    );
    // A client trusting another CA refuses the server.
    let other = TestCa::new();
    let stranger = ClientFiles {
        ca: other.ca(),
        identity: None,
    };
    assert!(tls_client(addr, &stranger, "localhost").await.is_err());
    // Plaintext is never served: at most a TLS alert comes back before the connection closes.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"ping").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection");
    assert!(!answer.windows(4).any(|w| w == b"ping"), "{answer:?}");
}

#[tokio::test]
async fn given_permissive_mode_when_clients_use_either_should_serve_both_on_one_port() {
    let ca = TestCa::new();
    let (acceptor, _, _) = server(&ca, TlsMode::Permissive, false);
    let addr = echo_server(acceptor).await;
    let mut plain = TcpStream::connect(addr).await.unwrap();
    assert_eq!(round_trip(&mut plain, b"ping").await.unwrap(), b"Pping");
    let client = ClientFiles {
        ca: ca.ca(),
        identity: None,
    };
    let mut tls = tls_client(addr, &client, "localhost").await.unwrap();
    assert_eq!(round_trip(&mut tls, b"ping").await.unwrap(), b"Tping");
}

#[tokio::test]
async fn given_mutual_tls_when_the_client_has_no_certificate_should_refuse_it() {
    let ca = TestCa::new();
    let (acceptor, _, _) = server(&ca, TlsMode::Enforcing, true);
    let addr = echo_server(acceptor).await;
    let anonymous = ClientFiles {
        ca: ca.ca(),
        identity: None,
    };
    assert!(tls_client(addr, &anonymous, "localhost").await.is_err());
    let other = TestCa::new();
    let foreign = ClientFiles {
        ca: ca.ca(),
        identity: Some(other.issue("client", &["client"], "client")),
    };
    assert!(tls_client(addr, &foreign, "localhost").await.is_err());
    let member = ClientFiles {
        ca: ca.ca(),
        identity: Some(ca.issue("client", &["client"], "client")),
    };
    let mut s = tls_client(addr, &member, "localhost").await.unwrap();
    assert_eq!(round_trip(&mut s, b"ping").await.unwrap(), b"Tping");
}

#[tokio::test]
async fn given_a_renewed_certificate_when_files_change_should_serve_it_and_keep_open_connections() {
    let ca = TestCa::new();
    let (acceptor, config, files) = server(&ca, TlsMode::Enforcing, false);
    let addr = echo_server(acceptor).await;
    let client = ClientFiles {
        ca: ca.ca(),
        identity: None,
    };
    let mut before = tls_client(addr, &client, "localhost").await.unwrap();
    let old_cert = leaf_common_name(&before);
    assert!(!config.reload_if_changed(), "nothing changed yet");
    // Renewal: new files written over the old ones.
    let (cert, key) = ca.issue("renewed", &["localhost"], "server-2");
    std::fs::copy(&cert, &files.cert_chain).unwrap();
    std::fs::copy(&key, &files.private_key).unwrap();
    let after = tls_client(addr, &client, "localhost").await.unwrap();
    assert_ne!(
        leaf_common_name(&after),
        old_cert,
        "new connections get the renewed certificate"
    );
    assert_eq!(round_trip(&mut before, b"still").await.unwrap(), b"Tstill");
    // A broken renewal keeps the working certificate.
    std::fs::write(&files.cert_chain, "not a certificate").unwrap();
    assert!(!config.reload_if_changed());
    assert!(tls_client(addr, &client, "localhost").await.is_ok());
}

#[test]
fn given_bad_pem_files_when_loading_should_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.pem");
    std::fs::write(&p, "").unwrap();
    let err = load_certs(&p).unwrap_err().to_string();
    assert!(
        err.contains("empty.pem") && err.contains("CERTIFICATE"),
        "{err}"
    );
    assert!(load_key(&p).is_err());
    let err = load_certs(&dir.path().join("missing.pem"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.pem"), "{err}");
    assert_eq!(
        "Permissive".parse::<TlsMode>().unwrap(),
        TlsMode::Permissive
    );
    assert!("on".parse::<TlsMode>().is_err());
}
