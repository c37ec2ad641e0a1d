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
