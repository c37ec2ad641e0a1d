//! The raw client: the bench's own `apache.rocketmq.v2` calls, made the way an official
//! RocketMQ 5 client makes them, with as little client-side CPU as possible (the bench shares
//! its machine with the server it measures).
//!
//! 1. [`setup`] opens `ceil(clients / 4)` shared HTTP/2 connections (at least one) and asks
//!    QueryRoute for the topic; a missing topic fails at once with the command that creates
//!    it. Every client kind goes through this check; only the raw one keeps the connections.
//! 2. [`Fleet::start`] opens one session per bench client, like an official client's start:
//!    a Telemetry stream whose first command is the client's Settings (PRODUCER publishing
//!    the topic, or SIMPLE_CONSUMER of the group subscribed with `*`), the server's echo
//!    awaited, then a Heartbeat (repeated every 30 s). Every call carries `x-mq-client-id`
//!    (unique per bench client), `x-mq-language: RUST`, `x-mq-protocol-version: 2.0.0`,
//!    `x-mq-client-version` and `x-mq-date-time`. The producers' SendMessage calls go on
//!    `ceil(producers / 4)` connections of their own.
//! 3. Producers send NORMAL messages (unique message id, born timestamp and host, queue ids
//!    round-robin over the writable queues); consumers ReceiveMessage (batch 32, invisible
//!    30 s, long polling 5 s) and acknowledge each batch in one AckMessage.
//! 4. [`Fleet::close`] ends every session with NotifyClientTermination and a half-close of its
//!    telemetry stream.
//!
//! # Modules
//! - `client`: connections, headers, QueryRoute, sessions (telemetry), for the
//!   [`Target`] (the endpoint, parsed in `crate::target`).
//! - `transport`: the HTTP/2 connections (hyper, called without a buffer task), over
//!   `comet_coalesce::CoalescedIo`, the write-gathering socket wrapper the proxy uses too.
//! - `unary`: the producers' SendMessage calls, on `h2` directly; `send`: the raw producer.
//! - `consumer`: the raw simple-consumer loop.

mod client;
mod consumer;
mod send;
mod transport;
mod unary;

use std::sync::Arc;

use anyhow::Context;
use comet_proto::apache::rocketmq::v2::{
    ClientType, FilterExpression, FilterType, Language, MessageQueue, Publishing, Resource,
    Settings, Subscription, SubscriptionEntry, Ua, settings::PubSub,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::args::BenchArgs;
use crate::consumer::{LONG_POLLING, RECEIVE_BATCH};
use crate::plan::Plan;
use crate::stats::TaskStats;
use crate::target::Target;
use client::Session;
use send::RawSender;
use transport::Conn;

pub(crate) use client::{Route, hostname};

/// Bench clients (producers + consumers) sharing one HTTP/2 connection.
const CLIENTS_PER_CONNECTION: usize = 4;

/// The shared connections and the topic's route.
#[derive(Debug)]
pub(crate) struct Setup {
    channels: Vec<Conn>,
    /// The topic's queues.
    pub route: Route,
}

impl Setup {
    /// HTTP/2 connections opened.
    pub(crate) fn connections(&self) -> usize {
        self.channels.len()
    }
}

/// Opens the connections for `clients` raw bench clients (one when `clients` is 0) and asks
/// QueryRoute for `--topic` through the first.
pub(crate) async fn setup(
    target: &Target,
    args: &BenchArgs,
    host: &str,
    run: u64,
    clients: usize,
) -> anyhow::Result<Setup> {
    let connections = clients.div_ceil(CLIENTS_PER_CONNECTION).max(1);
    let channels = client::connect(target, connections).await?;
    let mut c = client::client(
        target,
        channels[0].clone(),
        &client::client_id(host, run, "route"),
    )?;
    let route = client::query_route(&mut c, target, &args.topic, args.consumers > 0).await?;
    Ok(Setup { channels, route })
}

/// A `Resource` in the default namespace.
pub(crate) fn resource(name: &str) -> Resource {
    client::resource(name)
}

/// The raw bench clients of a run: one session per producer and consumer, and the producers'
/// senders.
#[derive(Debug)]
pub(crate) struct Fleet {
    sessions: Vec<Session>,
    senders: Vec<RawSender>,
    producers: usize,
    read_queues: Arc<Vec<MessageQueue>>,
    /// HTTP/2 connections opened: shared ones plus the producers' own.
    pub connections: usize,
}

impl Fleet {
    /// Starts every bench client on `setup`'s connections; if any fails, ends the others
    /// before reporting it.
    pub(crate) async fn start(
        setup: Setup,
        target: &Target,
        args: &BenchArgs,
        host: &str,
        run: u64,
    ) -> anyhow::Result<Fleet> {
        let Setup { channels, route } = setup;
        let channel = |i: usize| channels[i % channels.len()].clone();
        let topic = resource(&args.topic);
        let group = resource(&args.group);
        let user_agent = Ua {
            language: Language::Rust as i32,
            version: client::CLIENT_VERSION.to_owned(),
            platform: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            hostname: host.to_owned(),
        };
        let settings = |client_type: ClientType, pub_sub: PubSub| Settings {
            client_type: Some(client_type as i32),
            access_point: Some(target.endpoints.clone()),
            request_timeout: Some(client::pb_duration(client::REQUEST_TIMEOUT)),
            pub_sub: Some(pub_sub),
            user_agent: Some(user_agent.clone()),
            ..Settings::default()
        };
        let producer_settings = settings(
            ClientType::Producer,
            PubSub::Publishing(Publishing {
                topics: vec![topic.clone()],
                max_body_size: 0,
                validate_message_type: true,
            }),
        );
        let consumer_settings = settings(
            ClientType::SimpleConsumer,
            PubSub::Subscription(Subscription {
                group: Some(group.clone()),
                subscriptions: vec![SubscriptionEntry {
                    topic: Some(topic.clone()),
                    expression: Some(FilterExpression {
                        r#type: FilterType::Tag as i32,
                        expression: "*".to_owned(),
                    }),
                }],
                fifo: Some(false),
                receive_batch_size: Some(RECEIVE_BATCH),
                long_polling_timeout: Some(client::pb_duration(LONG_POLLING)),
                ..Subscription::default()
            }),
        );

        let clients = args.producers + args.consumers;
        let ids: Vec<String> = (0..clients)
            .map(|i| {
                let name = if i < args.producers {
                    format!("p{i}")
                } else {
                    format!("c{}", i - args.producers)
                };
                client::client_id(host, run, &name)
            })
            .collect();
        let mut opens = Vec::with_capacity(clients);
        for (i, id) in ids.iter().enumerate() {
            let (settings, group) = if i < args.producers {
                (producer_settings.clone(), None)
            } else {
                (consumer_settings.clone(), Some(group.clone()))
            };
            let c = client::client(target, channel(i), id)?;
            opens.push(Session::open(c, id.clone(), settings, group));
        }
        // The producers send on connections of their own (see `unary`), shared like the others.
        let count = args.producers.div_ceil(CLIENTS_PER_CONNECTION);
        let send_conns = futures::future::try_join_all(
            (0..count).map(|_| unary::open(&target.authority, client::REQUEST_TIMEOUT)),
        )
        .await
        .with_context(|| format!("opening the producers' connections to {}", target.authority))?;
        let write_queues = Arc::new(route.write.clone());
        let mut senders = Vec::with_capacity(args.producers);
        for (i, id) in ids[..args.producers].iter().enumerate() {
            senders.push(RawSender::new(
                send_conns[i % send_conns.len()].clone(),
                &client::Headers::new(id, target.credentials.as_ref())?,
                write_queues.clone(),
            )?);
        }
        let mut sessions = Vec::with_capacity(clients);
        let mut first_error = None;
        for opened in futures::future::join_all(opens).await {
            match opened {
                Ok(s) => sessions.push(s),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            close_all(sessions).await;
            return Err(e.context(format!(
                "starting the bench clients against {}",
                target.authority
            )));
        }
        Ok(Fleet {
            sessions,
            senders,
            producers: args.producers,
            read_queues: Arc::new(route.read),
            connections: channels.len() + send_conns.len(),
        })
    }

    /// Starts the producer tasks.
    pub(crate) fn spawn_producers(
        &mut self,
        plan: &Arc<Plan>,
        stop: &watch::Receiver<bool>,
    ) -> Vec<JoinHandle<TaskStats>> {
        crate::producer::spawn_all(std::mem::take(&mut self.senders), plan, stop)
    }

    /// Starts the consumer tasks.
    pub(crate) fn spawn_consumers(
        &self,
        plan: &Arc<Plan>,
        stop: &watch::Receiver<bool>,
    ) -> Vec<JoinHandle<TaskStats>> {
        self.sessions[self.producers..]
            .iter()
            .enumerate()
            .map(|(i, s)| {
                tokio::spawn(consumer::run(
                    plan.clone(),
                    s.client.clone(),
                    i,
                    self.read_queues.clone(),
                    stop.clone(),
                ))
            })
            .collect()
    }

    /// Ends every session.
    pub(crate) async fn close(self) {
        close_all(self.sessions).await;
    }
}

async fn close_all(sessions: Vec<Session>) {
    futures::future::join_all(sessions.into_iter().map(Session::close)).await;
}
