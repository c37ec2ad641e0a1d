//! The web console in a real browser: headless Chromium driven over WebDriver (chromedriver,
//! through `fantoccini`) against a standalone node started by the test. One scenario, in steps:
//! create a topic in the form and see it listed; send with the official Rust client and see
//! the group's backlog, then see it fall to 0 after consuming; see the connected clients with
//! language and version; find a message by key and open it; resend a dead letter and receive
//! it; see the clients leave after they stop. A second scenario runs with auth on: log in,
//! see the cluster page's disk use and proxy uptime, create a user and an ACL entry in the
//! forms and see them listed, delete the user through the confirmation dialog, log out.
//!
//! Skips (with a note) when `chromedriver` is not installed, unless `COMET_REQUIRE_BROWSER=1`
//! (as `.ci/run` sets after installing Debian's `chromium` and `chromium-driver`). On failure,
//! a screenshot of the page where it failed (`failed.png`) and of every page is saved under
//! `target/console-screenshots/<scenario>/` (`.ci/run` leaves `target/` in place for them).

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use comet::admin::TopicType;
use comet_tests::client::{self, receive_n, tag};
use comet_tests::{Mode, TestCluster, uuid_like, wait_until};
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use futures::future::LocalBoxFuture;
use rocketmq::model::message::MessageBuilder;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Set to `1` to make a missing browser a test failure instead of a skip.
const REQUIRE_ENV: &str = "COMET_REQUIRE_BROWSER";
/// Bound for every wait on the page.
const PAGE_LIMIT: Duration = Duration::from_secs(40);
/// The console's pages, for the failure screenshots.
const PAGES: [&str; 7] = [
    "cluster", "topics", "groups", "clients", "messages", "users", "acls",
];

fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots")
}

/// Starts chromedriver on a free port; `None` when it is not installed (and not required).
async fn chromedriver() -> Option<(Child, u16)> {
    let spawned = Command::new("chromedriver")
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var(REQUIRE_ENV).as_deref() != Ok("1"),
                "{REQUIRE_ENV}=1 but chromedriver cannot start: {e}"
            );
            eprintln!("skipping the console browser test: chromedriver not found ({e})");
            return None;
        }
    };
    let stdout = child.stdout.take().expect("chromedriver stdout");
    let mut lines = BufReader::new(stdout).lines();
    let port = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                return rest.trim_end_matches('.').parse::<u16>().ok();
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("chromedriver prints its port");
    // Keep draining its stdout so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Some((child, port))
}

async fn browser(port: u16, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    let mut options = json!({
        "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--window-size=1400,1000",
            format!("--user-data-dir={}", profile.display()),
        ],
    });
    if std::path::Path::new("/usr/bin/chromium").exists() {
        options["binary"] = json!("/usr/bin/chromium");
    }
    caps.insert("goog:chromeOptions".to_owned(), options);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session")
}

/// Text of the element matching `css` ("" when absent).
async fn text(b: &Client, css: &str) -> String {
    match b.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until the text of `css` satisfies `pred`.
async fn wait_text(b: &Client, what: &str, css: &str, pred: impl Fn(&str) -> bool) {
    wait_until(what, PAGE_LIMIT, async || pred(&text(b, css).await)).await;
}

fn text_has_error(t: &str) -> bool {
    t.contains("broker set") || t.contains("error") || t.contains("no ")
}

async fn fill(b: &Client, css: &str, value: &str) {
    let e = b
        .wait()
        .at_most(PAGE_LIMIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    e.clear().await.expect("clear");
    e.send_keys(value).await.expect("type");
}

async fn click(b: &Client, css: &str) {
    b.wait()
        .at_most(PAGE_LIMIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn screenshots(b: &Client, console: SocketAddr, name: &str) {
    let dir = screenshot_dir().join(name);
    let _ = std::fs::create_dir_all(&dir);
    // The page as the failure left it, before any navigation.
    if let Ok(png) = b.screenshot().await {
        let _ = std::fs::write(dir.join("failed.png"), png);
    }
    for p in PAGES {
        if b.goto(&format!("http://{console}/#/{p}")).await.is_ok() {
            // Let the page's first fetch land.
            let _ = AssertUnwindSafe(wait_until(
                "page rendered",
                Duration::from_secs(3),
                async || !text(b, "main").await.is_empty(),
            ))
            .catch_unwind()
            .await;
            if let Ok(png) = b.screenshot().await {
                let _ = std::fs::write(dir.join(format!("{p}.png")), png);
            }
        }
    }
    eprintln!("console screenshots saved under {}", dir.display());
}

/// A scenario of the browser tests.
type Scenario = for<'a> fn(&'a Client, &'a TestCluster, SocketAddr) -> LocalBoxFuture<'a, ()>;

/// Runs `scenario` in a fresh browser against a standalone node configured by `tweak`; on
/// failure saves screenshots under the directory `name`.
async fn drive(name: &str, tweak: impl Fn(&mut comet::config::Config), scenario: Scenario) {
    let Some((mut driver, port)) = chromedriver().await else {
        return;
    };
    let cluster = TestCluster::start_with(Mode::Local, |cfg| {
        cfg.console.report_interval = Duration::from_millis(200).into();
        cfg.console.client_timeout = Duration::from_secs(2).into();
        tweak(cfg);
    })
    .await;
    let console = cluster.console();
    let profile = tempfile::tempdir().expect("browser profile dir");
    let b = browser(port, profile.path()).await;
    let outcome = AssertUnwindSafe(scenario(&b, &cluster, console))
        .catch_unwind()
        .await;
    if outcome.is_err() {
        screenshots(&b, console, name).await;
    }
    let _ = b.close().await;
    let _ = driver.kill().await;
    cluster.stop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_browser_when_an_operator_uses_the_console_should_see_and_change_the_cluster() {
    drive("operator", |_| {}, |b, c, a| Box::pin(scenario(b, c, a))).await;
}

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const ADMIN_PASSWORD: &str = "admin-Secret-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_auth_on_when_an_operator_logs_in_should_manage_users_and_acls_in_the_forms() {
    drive(
        "auth",
        |cfg| {
            cfg.auth.enabled = true;
            cfg.auth.cluster_key = KEY.to_owned();
            cfg.auth.bootstrap_username = "admin".to_owned();
            cfg.auth.bootstrap_password = ADMIN_PASSWORD.to_owned();
        },
        |b, c, a| Box::pin(auth_scenario(b, c, a)),
    )
    .await;
}

async fn auth_scenario(b: &Client, cluster: &TestCluster, console: SocketAddr) {
    let base = format!("http://{console}");
    // The bootstrap admin user exists once the node applied it.
    let admin = comet::admin::AdminTarget {
        username: Some("admin".to_owned()),
        password: Some(ADMIN_PASSWORD.to_owned()),
        ..cluster.admin()
    };
    wait_until("the bootstrap admin exists", PAGE_LIMIT, async || {
        comet::admin::user(
            &admin,
            &comet::admin::UserCommand::Get(comet::admin::UserName {
                name: "admin".into(),
            }),
        )
        .await
        .is_ok()
    })
    .await;

    // Without a session the console asks for a login; a wrong password is refused in words.
    b.goto(&format!("{base}/#/cluster"))
        .await
        .expect("console page");
    fill(b, "#login-username", "admin").await;
    fill(b, "#login-password", "not-the-password").await;
    click(b, "#login-submit").await;
    wait_text(b, "the refusal is shown", "#login-error", |t| {
        t.contains("wrong password")
    })
    .await;
    fill(b, "#login-password", ADMIN_PASSWORD).await;
    click(b, "#login-submit").await;
    wait_text(b, "the user is shown", "#user-name-label", |t| {
        t.contains("admin")
    })
    .await;

    // The cluster page: the broker's disk use against its watermarks, the proxy's uptime.
    wait_text(b, "disk use is shown", "#brokers-table", |t| {
        t.contains("used (high 99.5%, refuse 99.9%)")
    })
    .await;
    wait_text(
        b,
        "the proxy's uptime is shown",
        "#proxies-table td.uptime",
        |t| t.ends_with('s') || t.ends_with('m') || t.ends_with('h') || t.ends_with('d'),
    )
    .await;

    // A user created in the form is listed; no secret is shown.
    let user = format!("web-{}", uuid_like());
    let password = "web-Secret-1";
    b.goto(&format!("{base}/#/users"))
        .await
        .expect("users page");
    fill(b, "#user-name", &user).await;
    fill(b, "#user-password", password).await;
    click(b, "#user-create").await;
    let row = format!("#users-table tr[data-name=\"{user}\"]");
    b.wait()
        .at_most(PAGE_LIMIT)
        .for_element(Locator::Css(&row))
        .await
        .expect("the new user is listed");
    assert!(text(b, "#user-ok").await.contains(&user));
    assert!(!text(b, "main").await.contains(password));

    // An ACL entry created in the form is listed; a bad action is refused in words.
    let topic = format!("webt-{}", uuid_like());
    b.goto(&format!("{base}/#/acls")).await.expect("acls page");
    fill(b, "#acl-user", &user).await;
    fill(b, "#acl-resources", &format!("Topic:{topic}")).await;
    fill(b, "#acl-actions", "Fly").await;
    click(b, "#acl-create").await;
    wait_text(b, "the bad action is refused", "#acl-error", |t| {
        t.contains("Fly")
    })
    .await;
    fill(b, "#acl-actions", "Pub,Sub").await;
    click(b, "#acl-create").await;
    let entry = format!("#acls-table tr[data-user=\"{user}\"][data-resource=\"Topic:{topic}\"]");
    b.wait()
        .at_most(PAGE_LIMIT)
        .for_element(Locator::Css(&entry))
        .await
        .expect("the new ACL entry is listed");
    let listed = text(b, &entry).await;
    assert!(
        listed.contains("Pub") && listed.contains("Allow"),
        "{listed}"
    );

    // Deleting the user asks for its name first.
    b.goto(&format!("{base}/#/users"))
        .await
        .expect("users page");
    click(b, &row).await;
    click(b, "#user-delete").await;
    fill(b, "#confirm-input", &user).await;
    click(b, "#confirm-ok").await;
    wait_until("the user leaves the list", PAGE_LIMIT, async || {
        b.find(Locator::Css(&row)).await.is_err() && text(b, "#users-list").await.contains("admin")
    })
    .await;

    // Logging out brings the login form back.
    click(b, "#logout").await;
    b.wait()
        .at_most(PAGE_LIMIT)
        .for_element(Locator::Css("#login-form"))
        .await
        .expect("the login form is back");
}

async fn scenario(b: &Client, cluster: &TestCluster, console: SocketAddr) {
    let base = format!("http://{console}");
    let topic = format!("web-{}", uuid_like());
    let group = format!("webg-{}", uuid_like());

    // Create a topic in the form; it appears in the list.
    b.goto(&format!("{base}/#/topics"))
        .await
        .expect("topics page");
    fill(b, "#topic-name", &topic).await;
    fill(b, "#topic-queues", "2").await;
    click(b, "#topic-create").await;
    let row = format!("#topics-table tr[data-name=\"{topic}\"]");
    b.wait()
        .at_most(PAGE_LIMIT)
        .for_element(Locator::Css(&row))
        .await
        .expect("the new topic is listed");
    assert!(text(b, "#topic-ok").await.contains(&topic));
    // A bad name shows the server's error in words.
    fill(b, "#topic-name", "bad name!").await;
    click(b, "#topic-create").await;
    wait_text(b, "the error is shown", "#topic-error", |t| {
        t.to_lowercase().contains("topic")
    })
    .await;

    // Send with the official Rust client; the group's backlog shows it.
    const N: usize = 6;
    let p = client::producer(&cluster.access_url(), &topic).await;
    for i in 0..N {
        let m = MessageBuilder::builder()
            .set_topic(&topic)
            .set_keys(vec![format!("web-key-{i}")])
            .set_body(format!("{{\"n\":{i}}}").into_bytes())
            .build()
            .expect("message");
        p.send(m).await.expect("send");
    }
    let consumer = client::consumer(&cluster.access_url(), &group, &topic).await;
    b.goto(&format!("{base}/#/group/{group}"))
        .await
        .expect("group page");
    fill(b, "#group-topic", &topic).await;
    click(b, "#group-topic-form button").await;
    let n = N.to_string();
    wait_text(
        b,
        "the backlog shows the sent messages",
        "#group-backlog",
        |t| t == n,
    )
    .await;

    // The connected clients, with language and version.
    b.goto(&format!("{base}/#/clients"))
        .await
        .expect("clients page");
    fill(b, "#clients-topic", &topic).await;
    click(b, "#clients-filter button").await;
    let _ = receive_n(&consumer, &topic, &tag("*"), 1, Duration::from_secs(1)).await;
    wait_text(b, "both clients are listed", "#clients-list", |t| {
        t.contains("RUST")
            && t.contains("5.0.0")
            && t.contains("PRODUCER")
            && t.contains("SIMPLE_CONSUMER")
    })
    .await;

    // Consume everything; the backlog falls to 0.
    let got = receive_n(&consumer, &topic, &tag("*"), N, Duration::from_secs(30)).await;
    for m in &got {
        consumer.ack(m).await.expect("ack");
    }
    b.goto(&format!("{base}/#/group/{group}"))
        .await
        .expect("group page");
    fill(b, "#group-topic", &topic).await;
    click(b, "#group-topic-form button").await;
    wait_text(b, "the backlog falls to 0", "#group-backlog", |t| t == "0").await;

    // Find a message by key and open it.
    b.goto(&format!("{base}/#/messages"))
        .await
        .expect("messages page");
    fill(b, "#message-topic", &topic).await;
    fill(b, "#message-value", "web-key-3").await;
    click(b, "#message-search").await;
    click(b, "#messages-table tbody tr").await;
    wait_text(b, "the body is shown", "#message-body", |t| {
        t.contains("\"n\": 3")
    })
    .await;

    // A dead letter, resent from the console, is received again.
    let dead_group = format!("webd-{}", uuid_like());
    cluster
        .create_group(&dead_group, 1, Some("customized:100ms"))
        .await;
    let dead_topic = format!("webdt-{}", uuid_like());
    cluster
        .create_topic(&dead_topic, 1, TopicType::Normal)
        .await;
    let p2 = client::producer(&cluster.access_url(), &dead_topic).await;
    let poison = MessageBuilder::builder()
        .set_topic(&dead_topic)
        .set_body(b"poison".to_vec())
        .build()
        .expect("message");
    let id = p2.send(poison).await.expect("send").message_id().to_owned();
    let dead_consumer = client::consumer(&cluster.access_url(), &dead_group, &dead_topic).await;
    for _ in 0..2 {
        let got = receive_n(
            &dead_consumer,
            &dead_topic,
            &tag("*"),
            1,
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(got[0].message_id(), id);
    }
    let dlq = comet_vocab::system::dlq_topic(&dead_group);
    b.goto(&format!("{base}/#/messages"))
        .await
        .expect("messages page");
    fill(b, "#message-topic", &dlq).await;
    b.find(Locator::Css("#message-by"))
        .await
        .expect("search kind")
        .select_by_value("id")
        .await
        .expect("search by id");
    fill(b, "#message-value", &id).await;
    wait_until("the dead letter is found", PAGE_LIMIT, async || {
        click(b, "#message-search").await;
        text(b, "#message-results").await.contains(&id)
    })
    .await;
    click(b, "#messages-table tbody tr").await;
    click(b, "#message-resend").await;
    wait_text(b, "the resend answers", "#message-view", |t| {
        t.contains("Resent to") || !t.is_empty() && text_has_error(t)
    })
    .await;
    let view = text(b, "#message-view").await;
    assert!(view.contains("Resent to"), "{view}");
    wait_text(b, "the resend is confirmed", "#resend-ok", |t| {
        t.contains(&dead_topic)
    })
    .await;
    let again = receive_n(
        &dead_consumer,
        &dead_topic,
        &tag("*"),
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(again[0].message_id(), id);
    dead_consumer.ack(&again[0]).await.expect("ack");

    // The clients leave the list after they stop.
    drop(dead_consumer);
    drop(consumer);
    drop(p);
    drop(p2);
    b.goto(&format!("{base}/#/clients"))
        .await
        .expect("clients page");
    wait_text(b, "the clients leave", "#clients-list", |t| {
        t.contains("No client connected")
    })
    .await;
}
