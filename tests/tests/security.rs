//! Security end to end, in both deployment modes: the bootstrap admin user, users and ACLs
//! through the admin commands (refused without credentials), the official Rust client's
//! credential path (HMAC-SHA1 over x-mq-date-time) allowed and refused by ACLs, and no
//! plaintext secret in the controller's files or in admin output.

use std::time::Duration;

use comet::admin::{
    self, AclCommand, AclSpec, AdminTarget, TopicCommand, TopicSpec, TopicType, UserCommand,
    UserName, UserSpec, UserTypeArg,
};
use comet_tests::client::{self, receive_n, tag};
use comet_tests::{Mode, TestCluster, uuid_like, wait_until};
use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::model::message::MessageBuilder;
use rocketmq::{Producer, SimpleConsumer};

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const ADMIN_PASSWORD: &str = "admin-Secret-1";
const ALICE_PASSWORD: &str = "alice-Secret-1";

fn as_user(target: &AdminTarget, user: &str, password: &str) -> AdminTarget {
    AdminTarget {
        username: Some(user.to_owned()),
        password: Some(password.to_owned()),
        ..target.clone()
    }
}

fn topic_spec(name: &str) -> TopicCommand {
    TopicCommand::Create(TopicSpec {
        name: name.to_owned(),
        queues: 2,
        message_type: TopicType::Normal,
        perm: comet::admin::Perm::Rw,
        broker_sets: Vec::new(),
    })
}

fn credentials(access_url: &str, ak: &str, sk: &str) -> ClientOption {
    let mut o = client::option(access_url);
    o.set_access_key(ak);
    o.set_secret_key(sk);
    o
}

async fn secured(mode: Mode) -> (TestCluster, std::path::PathBuf, AdminTarget) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_path_buf();
    let cluster = TestCluster::start_in(mode, dir, |cfg| {
        cfg.auth.enabled = true;
        cfg.auth.cluster_key = KEY.to_owned();
        cfg.auth.bootstrap_username = "admin".to_owned();
        cfg.auth.bootstrap_password = ADMIN_PASSWORD.to_owned();
    })
    .await;
    let admin = as_user(&cluster.admin(), "admin", ADMIN_PASSWORD);
    let target = admin.clone();
    wait_until(
        "the bootstrap admin user exists",
        Duration::from_secs(20),
        async || {
            admin::user(
                &target,
                &UserCommand::Get(UserName {
                    name: "admin".into(),
                }),
            )
            .await
            .is_ok()
        },
    )
    .await;
    (cluster, path, admin)
}

/// Every file under `dir`, read whole.
fn all_bytes(dir: &std::path::Path, out: &mut Vec<u8>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = entry.path();
        if p.is_dir() {
            all_bytes(&p, out);
        } else if let Ok(b) = std::fs::read(&p) {
            out.extend_from_slice(&b);
        }
    }
}

async fn admin_calls_need_credentials_and_rights(mode: Mode) {
    let (cluster, data_dir, admin) = secured(mode).await;
    let topic = format!("sec-{}", uuid_like());
    // No credentials, a wrong password, an unknown user: refused, saying why.
    let anonymous = cluster.admin();
    let err = format!(
        "{:#}",
        admin::topic(&anonymous, &topic_spec(&topic))
            .await
            .expect_err("refused")
    );
    assert!(err.contains("authorization header is missing"), "{err}");
    let wrong = as_user(&anonymous, "admin", "guess");
    let err = format!(
        "{:#}",
        admin::topic(&wrong, &topic_spec(&topic))
            .await
            .expect_err("refused")
    );
    assert!(err.contains("signature mismatch"), "{err}");
    let ghost = as_user(&anonymous, "ghost", "x");
    let err = format!(
        "{:#}",
        admin::topic(&ghost, &topic_spec(&topic))
            .await
            .expect_err("refused")
    );
    assert!(err.contains("unknown access key"), "{err}");
    // A normal user without rights on the cluster is forbidden.
    let created = admin::user(
        &admin,
        &UserCommand::Create(UserSpec {
            name: "alice".into(),
            password: ALICE_PASSWORD.into(),
            user_type: UserTypeArg::Normal,
        }),
    )
    .await
    .expect("admin creates alice");
    assert_eq!(created["name"], "alice");
    assert!(!created.to_string().contains(ALICE_PASSWORD), "{created}");
    let alice = as_user(&anonymous, "alice", ALICE_PASSWORD);
    let err = format!(
        "{:#}",
        admin::topic(&alice, &topic_spec(&topic))
            .await
            .expect_err("refused")
    );
    assert!(
        err.contains(&format!("may not Create Topic:{topic}")),
        "{err}"
    );
    let err = format!(
        "{:#}",
        admin::user(
            &alice,
            &UserCommand::List(admin::UserFilter {
                filter: String::new()
            })
        )
        .await
        .expect_err("refused")
    );
    assert!(err.contains("may not List Cluster"), "{err}");
    // The super user may.
    admin::topic(&admin, &topic_spec(&topic))
        .await
        .expect("admin creates the topic");
    let listed = admin::user(
        &admin,
        &UserCommand::List(admin::UserFilter {
            filter: String::new(),
        }),
    )
    .await
    .expect("admin lists users");
    assert_eq!(
        listed["users"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    // No plaintext secret anywhere in the controller's files (Raft log, snapshot).
    let mut bytes = Vec::new();
    all_bytes(&data_dir.join("controller"), &mut bytes);
    assert!(!bytes.is_empty());
    for secret in [ALICE_PASSWORD, ADMIN_PASSWORD] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a plaintext secret is on disk"
        );
    }
    cluster.stop().await;
}

async fn official_client_follows_the_acl(mode: Mode) {
    let (cluster, _, admin) = secured(mode).await;
    let topic = format!("orders-{}", uuid_like());
    let other = format!("audit-{}", uuid_like());
    let group = format!("g-{}", uuid_like());
    for t in [&topic, &other] {
        admin::topic(&admin, &topic_spec(t)).await.expect("topic");
        cluster.wait_routable(t).await;
    }
    admin::user(
        &admin,
        &UserCommand::Create(UserSpec {
            name: "alice".into(),
            password: ALICE_PASSWORD.into(),
            user_type: UserTypeArg::Normal,
        }),
    )
    .await
    .expect("alice");
    let acl = |resources: Vec<String>, actions: &str, decision: &str| {
        AclCommand::Create(AclSpec {
            subject: "User:alice".into(),
            resources,
            actions: actions.into(),
            decision: decision.into(),
            source_ips: vec![],
        })
    };
    admin::acl(
        &admin,
        &acl(vec!["Topic:orders-*".into()], "Pub,Sub", "Allow"),
    )
    .await
    .expect("acl on the topics");
    admin::acl(&admin, &acl(vec![format!("Group:{group}")], "Sub", "Allow"))
        .await
        .expect("acl on the group");
    let url = cluster.access_url();
    // Allowed: send and receive with alice's credentials.
    let mut opt = ProducerOption::default();
    opt.set_topics(vec![topic.as_str()]);
    let mut p = Producer::new(opt, credentials(&url, "alice", ALICE_PASSWORD)).expect("producer");
    p.start().await.expect("producer starts");
    let msg = || {
        MessageBuilder::builder()
            .set_topic(&topic)
            .set_tag("t")
            .set_body(b"signed".to_vec())
            .build()
            .expect("message")
    };
    let id = p
        .send(msg())
        .await
        .expect("alice may send")
        .message_id()
        .to_owned();
    let mut copt = SimpleConsumerOption::default();
    copt.set_consumer_group(&group);
    copt.set_topics(vec![topic.as_str()]);
    let mut c =
        SimpleConsumer::new(copt, credentials(&url, "alice", ALICE_PASSWORD)).expect("consumer");
    c.start().await.expect("consumer starts");
    let got = receive_n(&c, &topic, &tag("*"), 1, Duration::from_secs(30)).await;
    assert_eq!(got[0].message_id(), id);
    c.ack(&got[0]).await.expect("ack");
    // Refused: a topic outside the ACL (FORBIDDEN).
    let outside = MessageBuilder::builder()
        .set_topic(&other)
        .set_body(b"x".to_vec())
        .build()
        .expect("message");
    let err = format!(
        "{:?}",
        p.send(outside)
            .await
            .expect_err("no Pub on the other topic")
    );
    assert!(
        err.contains("may not") || err.contains("Forbidden") || err.contains("40300"),
        "{err}"
    );
    p.shutdown().await.expect("producer shutdown");
    c.shutdown().await.expect("consumer shutdown");
    // Refused: a wrong secret (UNAUTHORIZED) stops the client at its first call.
    let mut opt = ProducerOption::default();
    opt.set_topics(vec![topic.as_str()]);
    let mut bad = Producer::new(opt, credentials(&url, "alice", "guess")).expect("producer");
    let started = bad.start().await;
    let sent = match started {
        Err(e) => Err(format!("{e:?}")),
        Ok(()) => bad
            .send(msg())
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}")),
    };
    let err = sent.expect_err("a wrong secret is refused");
    assert!(
        err.contains("signature mismatch") || err.contains("Unauthorized") || err.contains("40100"),
        "{err}"
    );
    // And no credentials at all.
    let mut opt = ProducerOption::default();
    opt.set_topics(vec![topic.as_str()]);
    let mut anon = Producer::new(opt, client::option(&url)).expect("producer");
    let sent = match anon.start().await {
        Err(e) => Err(format!("{e:?}")),
        Ok(()) => anon
            .send(msg())
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}")),
    };
    assert!(sent.is_err(), "an unsigned client is refused");
    cluster.stop().await;
}

comet_tests::both_modes!(
    admin_calls_need_credentials_and_rights,
    official_client_follows_the_acl,
);

/// A cluster CA and one node certificate (SANs `127.0.0.1` and `localhost`: the names the
/// test nodes advertise; server and client use) written into `dir`, as the `[tls]` section
/// of every node: mutual TLS enforced on every internal link, the client port plaintext.
fn internal_pki(dir: &std::path::Path, ca_name: &str) -> comet::config::TlsSection {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let mut node = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("node params");
    node.distinguished_name
        .push(DnType::CommonName, "comet-node");
    node.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().expect("node key");
    let cert = node.signed_by(&key, &issuer).expect("node certificate");
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    std::fs::write(path("ca.pem"), issuer.pem()).expect("write CA");
    std::fs::write(path("node.pem"), cert.pem()).expect("write certificate");
    std::fs::write(path("node.key"), key.serialize_pem()).expect("write key");
    comet::config::TlsSection {
        internal_mode: "enforcing".to_owned(),
        internal_ca: path("ca.pem"),
        internal_cert_chain: path("node.pem"),
        internal_private_key: path("node.key"),
        ..comet::config::TlsSection::default()
    }
}

async fn get_metadata(
    client: &comet::controller_client::ControllerClient,
) -> Result<comet_proto::comet::v1::ClusterMetadata, tonic::Status> {
    client
        .call(|mut c| async move {
            c.get_metadata(comet_proto::comet::v1::GetMetadataRequest {})
                .await
        })
        .await
}

/// The internal TLS of `tls` as a process would load it.
fn internal_tls(tls: &comet::config::TlsSection) -> comet_auth::InternalTls {
    let cfg = comet::config::Config {
        tls: tls.clone(),
        ..comet::config::Config::default()
    };
    cfg.internal_tls()
        .expect("internal TLS loads")
        .expect("internal TLS is on")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_enforcing_tls_on_every_internal_link_when_sending_receiving_and_administering_should_work()
 {
    use comet::server::{Node, Role};
    let pki = tempfile::tempdir().expect("temp dir");
    let tls = internal_pki(pki.path(), "comet cluster ca");
    // Three controllers (Raft over mutual TLS), a broker set registering with them, a proxy
    // watching them and calling the broker, all over mutual TLS.
    let cluster = comet_tests::ClusterBuilder::new()
        .controllers(3)
        .broker_sets(&["tls-a"])
        .tls(tls.clone())
        .start()
        .await;
    // A replica joins the set and replicates from the master over mutual TLS.
    let mut replica_cfg = cluster.base_config().clone();
    replica_cfg.data_dir = cluster.data_dir().join("tls-a-1");
    replica_cfg.broker.broker_set = "tls-a".to_owned();
    replica_cfg.broker.broker_id = 1;
    let replica = Node::start(Role::Broker, &replica_cfg)
        .await
        .expect("the replica starts");
    cluster
        .wait_metadata("the replica in the sync-state set", |m| {
            m.broker_sets
                .iter()
                .any(|b| b.name == "tls-a" && b.sync_state_set.len() == 2)
        })
        .await;
    // Admin commands reach the controllers (and, for offsets, the broker) over mutual TLS,
    // configured by the same [tls] section in the admin's config file.
    let admin_cfg = comet::config::Config {
        controllers: cluster.controller_addrs(),
        tls: tls.clone(),
        ..comet::config::Config::default()
    };
    let admin_file = pki.path().join("admin.toml");
    std::fs::write(
        &admin_file,
        toml::to_string(&admin_cfg).expect("admin config as TOML"),
    )
    .expect("write admin config");
    let target = AdminTarget {
        config: Some(admin_file),
        ..cluster.admin()
    };
    let topic = format!("tls-{}", uuid_like());
    let group = format!("g-{}", uuid_like());
    admin::topic(&target, &topic_spec(&topic))
        .await
        .expect("topic created over internal TLS");
    cluster
        .wait_metadata("the topic routable", |m| {
            m.topics.iter().any(|t| t.name == topic)
        })
        .await;
    // Send and receive through the proxy (the client port stays plaintext).
    let url = cluster.access_url();
    let mut opt = ProducerOption::default();
    opt.set_topics(vec![topic.as_str()]);
    let mut p = Producer::new(opt, client::option(&url)).expect("producer");
    p.start().await.expect("producer starts");
    let message = MessageBuilder::builder()
        .set_topic(&topic)
        .set_tag("t")
        .set_body(b"over internal TLS".to_vec())
        .build()
        .expect("message");
    let id = p
        .send(message)
        .await
        .expect("send through the proxy")
        .message_id()
        .to_owned();
    let mut copt = SimpleConsumerOption::default();
    copt.set_consumer_group(&group);
    copt.set_topics(vec![topic.as_str()]);
    let mut c = SimpleConsumer::new(copt, client::option(&url)).expect("consumer");
    c.start().await.expect("consumer starts");
    let got = receive_n(&c, &topic, &tag("*"), 1, Duration::from_secs(30)).await;
    assert_eq!(got[0].message_id(), id);
    assert_eq!(got[0].body(), b"over internal TLS");
    c.ack(&got[0]).await.expect("ack");
    let progress = admin::offset(
        &target,
        &admin::OffsetCommand::Progress(admin::ProgressSpec {
            group: group.clone(),
            topic: topic.clone(),
        }),
    )
    .await
    .expect("consumer progress from the broker over internal TLS");
    assert_eq!(progress["topic"], topic.as_str(), "{progress}");
    p.shutdown().await.expect("producer shutdown");
    c.shutdown().await.expect("consumer shutdown");
    replica.shutdown().await.expect("replica stops");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_enforcing_internal_tls_when_a_plaintext_or_foreign_peer_calls_should_refuse_it_clearly()
 {
    let pki = tempfile::tempdir().expect("temp dir");
    let tls = internal_pki(pki.path(), "comet cluster ca");
    let cluster = comet_tests::ClusterBuilder::new()
        .controllers(1)
        .broker_sets(&[])
        .without_proxy()
        .tls(tls.clone())
        .start()
        .await;
    let addr = cluster.controller_addr(0).to_string();
    // A member of the cluster gets through.
    let member = internal_tls(&tls).connector();
    let stream = member
        .connect(&addr)
        .await
        .expect("a cluster member connects");
    assert!(stream.is_tls());
    // (A connection left open would hold up the controller's graceful stop.)
    drop(stream);
    let client = comet::controller_client::ControllerClient::new(vec![addr.clone()])
        .expect("client")
        .with_connector(member);
    let metadata = get_metadata(&client).await;
    assert!(metadata.is_ok(), "{metadata:?}");
    drop(client);
    // A plaintext peer is refused (at its first bytes, not after a handshake timeout).
    let plaintext = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let refused =
        comet_proto::comet::v1::controller_service_client::ControllerServiceClient::new(plaintext)
            .get_metadata(comet_proto::comet::v1::GetMetadataRequest {})
            .await;
    let status = refused.expect_err("a plaintext call must fail");
    // The server closes the connection: a transport error (UNAVAILABLE, UNKNOWN or
    // CANCELLED, depending on how far hyper got with the request), never an answer.
    assert!(
        matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        ),
        "{status:?}"
    );
    // A peer of another CA: the server's certificate is not trusted, and the error says so.
    let foreign_dir = tempfile::tempdir().expect("temp dir");
    let foreign = internal_tls(&internal_pki(foreign_dir.path(), "another ca")).connector();
    let err = foreign
        .connect(&addr)
        .await
        .expect_err("a foreign CA is refused")
        .to_string();
    assert!(
        err.contains("invalid peer certificate") && err.contains("UnknownIssuer"),
        "{err}"
    );
    assert!(err.contains(&addr), "the error names the peer: {err}");
    cluster.stop().await;
}
