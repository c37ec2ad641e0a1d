//! The web console's JSON API against a running node, without a browser: every endpoint's
//! answer, bad input answered 4xx with a sentence (and nothing changed), destructive actions
//! refused without a matching `confirm`, clients of the proxy listed while they run and gone
//! after they stop, the group's backlog falling to 0 after consuming, a message found by key,
//! a dead letter resent and received again; with auth on: no call without a login, sessions
//! in an HttpOnly cookie, users and ACLs managed, a normal user limited to its ACL (403 naming
//! the resource and the action), sessions ended by logout and by deleting the user.

use std::net::SocketAddr;
use std::time::Duration;

use comet::admin::{ClientCommand, ClientListArgs, TopicType};
use comet_tests::client::{self, receive_n, tag};
use comet_tests::{Mode, TestCluster, uuid_like, wait_until};
use rocketmq::model::message::MessageBuilder;
use serde_json::{Value, json};

/// Bound for the waits on the console's view (client reports come every 200 ms here).
const VIEW_LIMIT: Duration = Duration::from_secs(30);

/// One HTTP/1.1 request to the console; returns the status and the body as JSON (or a string).
async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, _, value) = http_as(addr, None, method, path, body).await;
    (status, value)
}

/// A request with the session cookie `cookie` (`comet_session=...`); also returns the head.
async fn http_as(
    addr: SocketAddr,
    cookie: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, String, Value) {
    let payload = body.map(|b| b.to_string());
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    let (status, head, body) =
        comet_tests::http::exchange(addr, method, path, &headers, payload.as_deref())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, head, value)
}

fn error_of(v: &Value) -> &str {
    v["error"].as_str().unwrap_or_default()
}

async fn start() -> TestCluster {
    TestCluster::start_with(Mode::Local, |cfg| {
        cfg.console.report_interval = Duration::from_millis(200).into();
        cfg.console.client_timeout = Duration::from_secs(2).into();
    })
    .await
}

#[tokio::test]
async fn given_a_node_when_pages_and_the_overview_are_asked_should_serve_them() {
    let cluster = start().await;
    let c = cluster.console();
    let (status, page) = http(c, "GET", "/", None).await;
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap_or_default().contains("Comet console"));
    for asset in ["/assets/app.js", "/assets/chart.js", "/assets/style.css"] {
        assert_eq!(http(c, "GET", asset, None).await.0, 200, "{asset}");
    }
    let (status, v) = http(c, "GET", "/api/nope", None).await;
    assert_eq!(status, 404);
    assert!(!error_of(&v).is_empty());
    let (status, o) = http(c, "GET", "/api/overview", None).await;
    assert_eq!(status, 200, "{o}");
    assert_eq!(o["node"]["state"], "Leader");
    assert_eq!(o["controllers"].as_array().map(Vec::len), Some(1));
    assert_eq!(o["broker_sets"][0]["members"][0]["role"], "master");
    // The node's own proxy reports to it.
    wait_until("the proxy reports", VIEW_LIMIT, || async {
        let (_, o) = http(c, "GET", "/api/overview", None).await;
        o["proxies"].as_array().is_some_and(|p| p.len() == 1)
    })
    .await;
    // The broker's disk use against its watermarks (test_config: 0.995 / 0.999), and the
    // proxy's uptime.
    let (_, o) = http(c, "GET", "/api/overview", None).await;
    let disk = &o["broker_sets"][0]["members"][0]["disk"];
    let used = disk["used_ratio"].as_f64().expect("disk use shown");
    assert!((0.0..=1.0).contains(&used), "{disk}");
    assert_eq!(disk["high_watermark"], 0.995);
    assert_eq!(disk["refuse_watermark"], 0.999);
    assert!(disk["state"].is_string(), "{disk}");
    assert!(o["proxies"][0]["uptime_ms"].as_i64().is_some(), "{o}");
    let (status, s) = http(c, "GET", "/api/series", None).await;
    assert_eq!(status, 200);
    assert!(s["samples"].is_array());
    // Auth is off: no login, anonymous sessions see everything.
    let (status, me) = http(c, "GET", "/api/session", None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["auth_enabled"], false);
    assert_eq!(me["super"], true);
    let (status, v) = http(
        c,
        "POST",
        "/api/login",
        Some(json!({"username": "a", "password": "b"})),
    )
    .await;
    assert_eq!(status, 409, "{v}");
    cluster.stop().await;
}

#[tokio::test]
async fn given_sends_through_the_proxy_when_charts_are_sampled_should_draw_rpc_latency() {
    let cluster = TestCluster::start_with(Mode::Local, |cfg| {
        cfg.console.report_interval = Duration::from_millis(200).into();
        cfg.console.client_timeout = Duration::from_secs(2).into();
    })
    .await;
    let c = cluster.console();
    let topic = format!("lat-{}", uuid_like());
    cluster.create_topic(&topic, 1, TopicType::Normal).await;
    let p = client::producer(&cluster.access_url(), &topic).await;
    // Charts sample at most every 2 s; keep sending until a sample shows send_message timed.
    wait_until("send latency is charted", VIEW_LIMIT, || async {
        let m = MessageBuilder::builder()
            .set_topic(&topic)
            .set_body(b"x".to_vec())
            .build()
            .expect("message");
        p.send(m).await.expect("send");
        let (_, s) = http(c, "GET", "/api/series", None).await;
        s["samples"].as_array().is_some_and(|samples| {
            samples.iter().any(|x| {
                let l = &x["latency"]["send_message"];
                l["calls"].as_u64().is_some_and(|n| n > 0)
                    && l["p50_ms"].as_f64().is_some_and(|v| v > 0.0)
                    && l["p99_ms"].as_f64() >= l["p50_ms"].as_f64()
            })
        })
    })
    .await;
    drop(p);
    cluster.stop().await;
}

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const ADMIN_PASSWORD: &str = "admin-Secret-1";

/// The session cookie (`comet_session=<token>`) a login's head sets.
fn session_cookie(head: &str) -> String {
    let line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a Set-Cookie header");
    let attrs = line
        .split_once(':')
        .map(|(_, v)| v.trim())
        .unwrap_or_default();
    assert!(attrs.contains("HttpOnly"), "{attrs}");
    assert!(attrs.contains("SameSite=Strict"), "{attrs}");
    attrs.split(';').next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn given_auth_on_when_the_console_is_used_should_require_a_login_and_apply_acls() {
    let cluster = TestCluster::start_with(Mode::Local, |cfg| {
        cfg.auth.enabled = true;
        cfg.auth.cluster_key = KEY.to_owned();
        cfg.auth.bootstrap_username = "admin".to_owned();
        cfg.auth.bootstrap_password = ADMIN_PASSWORD.to_owned();
    })
    .await;
    let c = cluster.console();
    // Every API path but login and logout needs a session: 401 with a sentence.
    for path in ["/api/overview", "/api/topics", "/api/users", "/api/nope"] {
        let (status, _, v) = http_as(c, None, "GET", path, None).await;
        assert_eq!(status, 401, "{path}: {v}");
        assert!(error_of(&v).contains("log in"), "{path}: {v}");
    }
    let (status, _, v) = http_as(c, Some("comet_session=forged"), "GET", "/api/topics", None).await;
    assert_eq!(status, 401, "{v}");
    // The pages themselves load (they show the login form).
    assert_eq!(http(c, "GET", "/", None).await.0, 200);
    let login = |user: &str, password: &str| json!({"username": user, "password": password});
    let (status, _, v) =
        http_as(c, None, "POST", "/api/login", Some(login("admin", "wrong"))).await;
    assert_eq!(status, 401, "{v}");
    let (status, _, v2) = http_as(c, None, "POST", "/api/login", Some(login("nobody", "x"))).await;
    assert_eq!(status, 401);
    assert_eq!(error_of(&v), error_of(&v2), "no hint which part was wrong");
    // The bootstrap user may lag the first start by a moment.
    let mut admin_head = String::new();
    wait_until("the admin logs in", VIEW_LIMIT, async || {
        let (status, head, _) = http_as(
            c,
            None,
            "POST",
            "/api/login",
            Some(login("admin", ADMIN_PASSWORD)),
        )
        .await;
        admin_head = head;
        status == 200
    })
    .await;
    let admin = session_cookie(&admin_head);
    let get = |cookie: String, path: &'static str| async move {
        let (status, _, v) = http_as(c, Some(&cookie), "GET", path, None).await;
        (status, v)
    };
    let (status, me) = get(admin.clone(), "/api/session").await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"], "admin");
    assert_eq!(me["super"], true);
    assert_eq!(get(admin.clone(), "/api/overview").await.0, 200);

    // Users and ACLs through the console; no answer holds a secret.
    let alice_pw = "alice-Secret-1";
    let (status, _, v) = http_as(
        c,
        Some(&admin),
        "POST",
        "/api/users",
        Some(json!({"name": "alice", "password": alice_pw, "user_type": "normal"})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let (status, _, v) = http_as(
        c,
        Some(&admin),
        "POST",
        "/api/users",
        Some(json!({"name": "bad name", "password": "x"})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(error_of(&v).contains("user name"), "{v}");
    let (status, users) = get(admin.clone(), "/api/users").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = users["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert!(
        names.contains(&"alice") && names.contains(&"admin"),
        "{users}"
    );
    let text = users.to_string();
    assert!(!text.contains(alice_pw) && !text.contains("v1:"), "{text}");
    let allowed = format!("cap-{}", uuid_like());
    let (status, _, v) = http_as(
        c,
        Some(&admin),
        "POST",
        "/api/acls",
        Some(
            json!({"user": "alice", "resources": [format!("Topic:{allowed}")],
                    "actions": "Create,Get", "decision": "Allow"}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let (status, _, v) = http_as(
        c,
        Some(&admin),
        "POST",
        "/api/acls",
        Some(json!({"user": "alice", "resources": ["Topic:x"], "actions": "Fly"})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let (_, acls) = get(admin.clone(), "/api/acls").await;
    assert!(
        acls.to_string().contains(&format!("Topic:{allowed}")),
        "{acls}"
    );
    let hidden = format!("hid-{}", uuid_like());
    let (status, _, v) = http_as(
        c,
        Some(&admin),
        "POST",
        "/api/topics",
        Some(json!({"name": hidden, "queues": 1})),
    )
    .await;
    assert_eq!(status, 201, "{v}");

    // Alice sees and does only what her ACL allows.
    let (status, head, _) = http_as(
        c,
        None,
        "POST",
        "/api/login",
        Some(login("alice", alice_pw)),
    )
    .await;
    assert_eq!(status, 200);
    let alice = session_cookie(&head);
    let (status, v) = get(alice.clone(), "/api/overview").await;
    assert_eq!(status, 403, "{v}");
    assert!(error_of(&v).contains("Cluster"), "{v}");
    let (status, _, v) = http_as(
        c,
        Some(&alice),
        "POST",
        "/api/topics",
        Some(json!({"name": allowed, "queues": 1})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let other = format!("den-{}", uuid_like());
    let (status, _, v) = http_as(
        c,
        Some(&alice),
        "POST",
        "/api/topics",
        Some(json!({"name": other, "queues": 1})),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    assert!(
        error_of(&v).contains(&format!("Topic:{other}")) && error_of(&v).contains("Create"),
        "{v}"
    );
    let (_, topics) = get(alice.clone(), "/api/topics").await;
    let listed = topics.to_string();
    assert!(
        listed.contains(&allowed) && !listed.contains(&hidden),
        "{listed}"
    );
    let (status, v) = get(alice.clone(), "/api/users").await;
    assert_eq!(status, 403, "{v}");

    // Deleting alice (confirmed) ends her session; logout ends the admin's.
    let (status, _, _) = http_as(
        c,
        Some(&admin),
        "DELETE",
        "/api/users/alice",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _, v) = http_as(
        c,
        Some(&admin),
        "DELETE",
        "/api/users/alice",
        Some(json!({"confirm": "alice"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    wait_until("alice's session ends", VIEW_LIMIT, || async {
        get(alice.clone(), "/api/topics").await.0 == 401
    })
    .await;
    let (status, head, _) = http_as(c, Some(&admin), "POST", "/api/logout", None).await;
    assert_eq!(status, 200);
    assert!(head.contains("Max-Age=0"), "{head}");
    assert_eq!(get(admin.clone(), "/api/topics").await.0, 401);
    cluster.stop().await;
}

#[tokio::test]
async fn given_topic_and_group_forms_when_submitted_should_validate_change_and_confirm_deletes() {
    let cluster = start().await;
    let c = cluster.console();
    let topic = format!("console-{}", uuid_like());
    // Bad input: 4xx with a sentence, and nothing created.
    for (body, needle) in [
        (json!({"name": ""}), "empty"),
        (json!({"name": topic, "type": "BOGUS"}), "type"),
        (json!({"name": topic, "queues": 0}), "at least 1"),
        (json!({"name": topic, "permission": "ALL"}), "permission"),
        (json!({"name": topic, "colour": "red"}), "colour"),
        (json!({"name": "bad name!"}), "topic"),
    ] {
        let (status, v) = http(c, "POST", "/api/topics", Some(body.clone())).await;
        assert!((400..500).contains(&status), "{body}: {status} {v}");
        assert!(
            error_of(&v).to_lowercase().contains(needle),
            "{body}: {}",
            error_of(&v)
        );
    }
    let (status, _) = http(c, "POST", "/api/topics", Some(Value::String("{".into()))).await;
    assert!((400..500).contains(&status), "{status}");
    let (_, list) = http(c, "GET", "/api/topics", None).await;
    assert!(!list.to_string().contains(&topic));
    // Create, see it listed and routed, update it.
    let (status, t) = http(
        c,
        "POST",
        "/api/topics",
        Some(json!({"name": topic, "type": "FIFO", "queues": 2})),
    )
    .await;
    assert_eq!(status, 201, "{t}");
    assert_eq!(t["type"], "FIFO");
    let (status, v) = http(c, "POST", "/api/topics", Some(json!({"name": topic}))).await;
    assert_eq!(status, 409, "{v}");
    let (_, list) = http(c, "GET", "/api/topics", None).await;
    assert!(
        list["topics"]
            .as_array()
            .is_some_and(|l| l.iter().any(|t| t["name"] == topic.as_str()))
    );
    let (status, r) = http(c, "GET", &format!("/api/topics/{topic}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(r["route"][0]["master_alive"], true);
    assert_eq!(r["route"][0]["queues"], 2);
    let (status, u) = http(
        c,
        "PUT",
        &format!("/api/topics/{topic}"),
        Some(json!({"queues": 4, "permission": "READ"})),
    )
    .await;
    assert_eq!(status, 200, "{u}");
    assert_eq!(u["queues"], 4);
    assert_eq!(u["permission"], "READ");
    let (status, _) = http(c, "PUT", "/api/topics/missing-topic", Some(json!({}))).await;
    assert_eq!(status, 404);
    // Delete needs the name repeated.
    let path = format!("/api/topics/{topic}");
    let (status, v) = http(c, "DELETE", &path, Some(json!({}))).await;
    assert_eq!(status, 400);
    assert!(error_of(&v).contains("confirm"), "{v}");
    let (status, _) = http(c, "DELETE", &path, Some(json!({"confirm": "other"}))).await;
    assert_eq!(status, 400);
    assert_eq!(http(c, "GET", &path, None).await.0, 200, "still there");
    let (status, _) = http(c, "DELETE", &path, Some(json!({"confirm": topic}))).await;
    assert_eq!(status, 200);
    assert_eq!(http(c, "GET", &path, None).await.0, 404);

    // Groups.
    let group = format!("cg-{}", uuid_like());
    let (status, _) = http(c, "POST", "/api/groups", Some(json!({"name": ""}))).await;
    assert_eq!(status, 400);
    let (status, g) = http(
        c,
        "POST",
        "/api/groups",
        Some(json!({"name": group, "max_retries": 3})),
    )
    .await;
    assert_eq!(status, 201, "{g}");
    let (status, g) = http(
        c,
        "PUT",
        &format!("/api/groups/{group}"),
        Some(json!({"fifo": true})),
    )
    .await;
    assert_eq!(status, 200, "{g}");
    assert_eq!(g["fifo"], true);
    assert_eq!(g["max_retries"], 3);
    let (status, p) = http(c, "GET", &format!("/api/groups/{group}"), None).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["fifo"], true);
    let (status, _) = http(c, "GET", &format!("/api/groups/{group}?topic=nope"), None).await;
    assert_eq!(status, 404);
    let gpath = format!("/api/groups/{group}");
    assert_eq!(http(c, "DELETE", &gpath, Some(json!({}))).await.0, 400);
    assert_eq!(
        http(c, "DELETE", &gpath, Some(json!({"confirm": group})))
            .await
            .0,
        200
    );
    let (_, list) = http(c, "GET", "/api/groups", None).await;
    assert!(!list.to_string().contains(&group));
    cluster.stop().await;
}

#[tokio::test]
async fn given_clients_when_they_run_and_consume_should_be_listed_drain_the_backlog_and_leave() {
    let cluster = start().await;
    let c = cluster.console();
    let topic = format!("cc-{}", uuid_like());
    let group = format!("cg-{}", uuid_like());
    cluster.create_topic(&topic, 2, TopicType::Normal).await;
    let p = client::producer(&cluster.access_url(), &topic).await;
    const N: usize = 10;
    for i in 0..N {
        let m = MessageBuilder::builder()
            .set_topic(&topic)
            .set_tag("t")
            .set_keys(vec![format!("key-{i}")])
            .set_body(format!("{{\"n\":{i}}}").into_bytes())
            .build()
            .expect("message");
        p.send(m).await.expect("send");
    }
    let consumer = client::consumer(&cluster.access_url(), &group, &topic).await;
    // Both clients are listed with language and version, filterable by topic and group.
    let path = format!("/api/clients?group={group}");
    wait_until("the consumer is listed", VIEW_LIMIT, || async {
        let (_, v) = http(c, "GET", &path, None).await;
        v["clients"].as_array().is_some_and(|l| {
            l.len() == 1
                && l[0]["language"] == "RUST"
                && !l[0]["version"].as_str().unwrap_or_default().is_empty()
        })
    })
    .await;
    // Backlog before consuming, then 0 after.
    let progress = format!("/api/groups/{group}?topic={topic}");
    let (status, g) = http(c, "GET", &progress, None).await;
    assert_eq!(status, 200, "{g}");
    assert_eq!(g["topics"][0]["backlog"], N as i64, "{g}");
    assert_eq!(g["consumers"].as_array().map(Vec::len), Some(1));
    let got = receive_n(&consumer, &topic, &tag("*"), N, Duration::from_secs(30)).await;
    for m in &got {
        consumer.ack(m).await.expect("ack");
    }
    // Once it received, the consumer is found by topic too, beside the producer.
    let by_topic = format!("/api/clients?topic={topic}");
    wait_until("both clients are listed by topic", VIEW_LIMIT, || async {
        let (_, v) = http(c, "GET", &by_topic, None).await;
        let types: Vec<String> = v["clients"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|c| c["client_type"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        types.iter().any(|t| t == "PRODUCER") && types.iter().any(|t| t == "SIMPLE_CONSUMER")
    })
    .await;
    // `comet client list --topic T` sees the same clients.
    let listed = comet::admin::client_cmd(
        &cluster.admin(),
        &ClientCommand::List(ClientListArgs {
            topic: Some(topic.clone()),
            group: None,
        }),
    )
    .await
    .expect("client list");
    assert_eq!(
        listed["clients"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    assert_eq!(listed["clients"][0]["language"], "RUST");
    let (_, g) = http(c, "GET", &progress, None).await;
    assert_eq!(g["topics"][0]["backlog"], 0, "{g}");
    assert_eq!(g["topics"][0]["inflight"], 0, "{g}");
    // Find a message by key and by id.
    let (status, found) = http(
        c,
        "GET",
        &format!("/api/messages?topic={topic}&key=key-3"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["count"], 1);
    let m = &found["messages"][0];
    assert_eq!(m["body"]["format"], "json");
    assert!(
        m["body"]["content"]
            .as_str()
            .unwrap_or_default()
            .contains("\"n\": 3")
    );
    let id = m["message_id"].as_str().expect("id").to_owned();
    let (_, by_id) = http(
        c,
        "GET",
        &format!("/api/messages?topic={topic}&id={id}"),
        None,
    )
    .await;
    assert_eq!(by_id["count"], 1);
    for bad in [
        format!("/api/messages?topic={topic}"),
        format!("/api/messages?topic={topic}&key=a&id=b"),
        format!("/api/messages?topic={topic}&key=a&max=0"),
        format!("/api/messages?topic={topic}&key=a&begin=yesterday"),
        format!("/api/messages?topic={topic}&queue=-1&offset=0"),
        "/api/messages?key=a".to_owned(),
        format!("/api/messages?topic={topic}&queue=x&offset=0"),
    ] {
        let (status, v) = http(c, "GET", &bad, None).await;
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(!error_of(&v).is_empty());
    }
    // Reset offsets to the beginning: refused without confirmation, then the backlog is back.
    let reset = format!("/api/groups/{group}/reset-offset");
    let (status, v) = http(
        c,
        "POST",
        &reset,
        Some(json!({"topic": topic, "timestamp": "0"})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = http(
        c,
        "POST",
        &reset,
        Some(json!({"topic": topic, "timestamp": "someday", "confirm": group})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = http(
        c,
        "POST",
        &reset,
        Some(json!({"topic": topic, "timestamp": "0", "confirm": group})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (_, g) = http(c, "GET", &progress, None).await;
    assert_eq!(g["topics"][0]["backlog"], N as i64, "{g}");
    // The consumer leaves the list once it stops.
    drop(consumer);
    drop(p);
    wait_until("the clients leave", VIEW_LIMIT, || async {
        let (_, v) = http(c, "GET", &format!("/api/clients?topic={topic}"), None).await;
        v["clients"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    cluster.stop().await;
}

#[tokio::test]
async fn given_a_dead_letter_when_resent_should_reach_its_topic_again() {
    let cluster = start().await;
    let c = cluster.console();
    let topic = format!("cd-{}", uuid_like());
    let group = format!("cg-{}", uuid_like());
    cluster
        .create_group(&group, 1, Some("customized:100ms"))
        .await;
    cluster.create_topic(&topic, 1, TopicType::Normal).await;
    let p = client::producer(&cluster.access_url(), &topic).await;
    let msg = MessageBuilder::builder()
        .set_topic(&topic)
        .set_keys(vec!["poison"])
        .set_body(b"cannot be processed".to_vec())
        .build()
        .expect("message");
    let id = p.send(msg).await.expect("send").message_id().to_owned();
    let consumer = client::consumer(&cluster.access_url(), &group, &topic).await;
    // max_retries 1: two deliveries, neither acked, then the dead-letter queue.
    for _ in 0..2 {
        let got = receive_n(&consumer, &topic, &tag("*"), 1, Duration::from_secs(1)).await;
        assert_eq!(got[0].message_id(), id);
    }
    let dlq = comet_vocab::system::dlq_topic(&group);
    let path = format!("/api/messages?topic={}&id={id}", dlq.replace('%', "%25"));
    wait_until("the dead letter is stored", VIEW_LIMIT, || async {
        let (status, v) = http(c, "GET", &path, None).await;
        status == 200 && v["count"] == 1
    })
    .await;
    let (_, v) = http(c, "GET", &path, None).await;
    assert_eq!(v["messages"][0]["dead_letter_of"], topic.as_str());
    // The dead letter is found by id (index) possibly before its consume-queue entry lands,
    // which is what the count reads.
    let progress = format!("/api/groups/{group}?topic={topic}");
    wait_until("the dead letter is counted", VIEW_LIMIT, || async {
        http(c, "GET", &progress, None).await.1["dead_letters"] == 1
    })
    .await;
    let (_, g) = http(c, "GET", &progress, None).await;
    assert_eq!(g["dead_letters"], 1, "{g}");
    // Bad resends.
    let (status, _) = http(
        c,
        "POST",
        "/api/dead-letters/resend",
        Some(json!({"group": group})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = http(
        c,
        "POST",
        "/api/dead-letters/resend",
        Some(json!({"group": group, "message_id": "nope"})),
    )
    .await;
    assert_eq!(status, 404);
    let (status, r) = http(
        c,
        "POST",
        "/api/dead-letters/resend",
        Some(json!({"group": group, "message_id": id})),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["topic"], topic.as_str());
    let again = receive_n(&consumer, &topic, &tag("*"), 1, Duration::from_secs(30)).await;
    assert_eq!(again[0].message_id(), id);
    assert_eq!(again[0].body(), b"cannot be processed");
    consumer.ack(&again[0]).await.expect("ack");
    cluster.stop().await;
}

#[tokio::test]
async fn given_a_replica_when_the_cluster_page_is_read_should_show_its_lag_and_every_disk() {
    let cluster = TestCluster::start_with(Mode::Cluster, |cfg| {
        cfg.console.report_interval = Duration::from_millis(200).into();
    })
    .await;
    let c = cluster.console();
    let topic = format!("rep-{}", uuid_like());
    cluster.create_topic(&topic, 1, TopicType::Normal).await;
    let p = client::producer(&cluster.access_url(), &topic).await;
    for i in 0..5 {
        let m = MessageBuilder::builder()
            .set_topic(&topic)
            .set_body(format!("m{i}").into_bytes())
            .build()
            .expect("message");
        p.send(m).await.expect("send");
    }
    // A second member of the broker set, in process: it follows the master.
    let dir = tempfile::tempdir().expect("replica dir");
    let mut cfg = comet_tests::test_config(dir.path());
    cfg.controllers = cluster.admin().controllers;
    cfg.broker.broker_id = 1;
    let replica = comet::server::Node::start(comet::server::Role::Broker, &cfg)
        .await
        .expect("the replica starts");
    let mut seen = Value::Null;
    wait_until(
        "the replica's lag and disk are shown",
        VIEW_LIMIT,
        async || {
            let (_, o) = http(c, "GET", "/api/overview", None).await;
            seen = o["broker_sets"][0].clone();
            let members = seen["members"].as_array().cloned().unwrap_or_default();
            members.len() == 2
                && members.iter().all(|m| m["disk"]["used_ratio"].is_f64())
                && members.iter().any(|m| {
                    m["role"] == "replica" && m["replication_lag_bytes"].as_i64() == Some(0)
                })
        },
    )
    .await;
    let master = seen["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["role"] == "master").cloned())
        .expect("a master");
    assert!(master["log_end_offset"].as_i64() > Some(0), "{seen}");
    assert!(master["replication_lag_bytes"].is_null(), "{seen}");
    drop(p);
    replica.shutdown().await.expect("the replica stops");
    cluster.stop().await;
}
