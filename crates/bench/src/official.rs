//! The official RocketMQ 5 Rust client (`rocketmq` 5.0.0) as the bench's client: what a
//! Rust service using that crate would write.
//!
//! - Producers: one started `Producer` per bench producer, `send` for one message per
//!   request and `batch_send` for `--batch` > 1 (the crate picks the queues; it does not
//!   retry).
//! - Consumers: the crate has no push consumer, so one started `SimpleConsumer` per bench
//!   consumer runs the receive loop of the raw consumer (batch 32, invisible 30 s, long
//!   polling 5 s) and acknowledges every message with its own AckMessage, concurrently
//!   (the crate has no batch ack).
//!
//! The crate logs through its own `slog` terminal logger on stderr, down to debug level and
//! with no filter to set (its lines come between the progress bar's). Its calls can panic on
//! some server answers; a panic ends that task and fails the run naming the task.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::anyhow;
use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::error::{ClientError, ErrorKind};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use rocketmq::{Producer, SimpleConsumer};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::args::BenchArgs;
use crate::consumer::{
    self, INVISIBLE, LONG_POLLING, RECEIVE_BATCH, backoff, failed, run_property,
};
use crate::payload::{RUN_PROPERTY, body};
use crate::plan::Plan;
use crate::producer::{Request, SendOutcome, Sender};
use crate::stats::TaskStats;
use crate::target::Target;

/// Deadline of the crate's calls (the official clients' default).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The official clients of a run.
pub(crate) struct Fleet {
    producers: Vec<Arc<Producer>>,
    consumers: Vec<SimpleConsumer>,
    topic: String,
}

/// The crate's options for a client of `target`.
fn client_option(target: &Target) -> ClientOption {
    let mut o = ClientOption::default();
    o.set_access_url(target.authority.as_str());
    o.set_timeout(REQUEST_TIMEOUT);
    o.set_long_polling_timeout(LONG_POLLING);
    if let Some(c) = &target.credentials {
        o.set_access_key(c.access_key.as_str());
        o.set_secret_key(c.secret_key.as_str());
    }
    o
}

impl Fleet {
    /// Starts one producer per bench producer and one simple consumer per bench consumer;
    /// if any fails, shuts down those that started.
    pub(crate) async fn start(target: &Target, args: &BenchArgs) -> anyhow::Result<Fleet> {
        let producers = (0..args.producers).map(|_| async {
            let mut opt = ProducerOption::default();
            opt.set_topics(vec![args.topic.as_str()]);
            let mut p = Producer::new(opt, client_option(target))?;
            p.start().await?;
            Ok::<_, ClientError>(p)
        });
        let consumers = (0..args.consumers).map(|_| async {
            let mut opt = SimpleConsumerOption::default();
            opt.set_consumer_group(args.group.as_str());
            opt.set_topics(vec![args.topic.as_str()]);
            let mut c = SimpleConsumer::new(opt, client_option(target))?;
            c.start().await?;
            Ok::<_, ClientError>(c)
        });
        let (producers, consumers) = futures::future::join(
            futures::future::join_all(producers),
            futures::future::join_all(consumers),
        )
        .await;
        let mut fleet = Fleet {
            producers: Vec::new(),
            consumers: Vec::new(),
            topic: args.topic.clone(),
        };
        let mut first_error = None;
        for p in producers {
            match p {
                Ok(p) => fleet.producers.push(Arc::new(p)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        for c in consumers {
            match c {
                Ok(c) => fleet.consumers.push(c),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            fleet.close().await;
            return Err(anyhow!(
                "starting the official rocketmq clients against {}: {}",
                target.authority,
                describe(&e)
            ));
        }
        Ok(fleet)
    }

    /// Starts the producer tasks.
    pub(crate) fn spawn_producers(
        &self,
        plan: &Arc<Plan>,
        stop: &watch::Receiver<bool>,
    ) -> Vec<JoinHandle<TaskStats>> {
        let senders = self.producers.iter().map(|p| OfficialSender {
            producer: p.clone(),
        });
        crate::producer::spawn_all(senders, plan, stop)
    }

    /// Starts the consumer tasks; each shuts its consumer down when it ends.
    pub(crate) fn spawn_consumers(
        &mut self,
        plan: &Arc<Plan>,
        stop: &watch::Receiver<bool>,
    ) -> Vec<JoinHandle<TaskStats>> {
        std::mem::take(&mut self.consumers)
            .into_iter()
            .map(|c| tokio::spawn(consume(plan.clone(), c, self.topic.clone(), stop.clone())))
            .collect()
    }

    /// Shuts down every client still held (NotifyClientTermination).
    pub(crate) async fn close(self) {
        let producers = self
            .producers
            .into_iter()
            .filter_map(|p| Arc::try_unwrap(p).ok());
        let shutdowns = producers.map(|p| async move { log_shutdown(p.shutdown().await) });
        futures::future::join_all(shutdowns).await;
        let shutdowns = self
            .consumers
            .into_iter()
            .map(|c| async move { log_shutdown(c.shutdown().await) });
        futures::future::join_all(shutdowns).await;
    }
}

fn log_shutdown(result: Result<(), ClientError>) {
    if let Err(e) = result {
        tracing::warn!(error = %describe(&e), "an official client did not shut down cleanly");
    }
}

/// Sends through one official producer.
struct OfficialSender {
    producer: Arc<Producer>,
}

impl Sender for OfficialSender {
    fn send<'a>(
        &'a self,
        plan: &'a Plan,
        request: Request,
    ) -> impl Future<Output = SendOutcome> + Send + 'a {
        let n = u64::from(request.count);
        let messages: Result<Vec<_>, ClientError> = (0..request.count)
            .map(|_| {
                MessageBuilder::builder()
                    .set_topic(plan.topic.name.as_str())
                    .set_body(body(&plan.template, request.due_ns).to_vec())
                    .set_properties(HashMap::from([(RUN_PROPERTY, plan.run_hex.as_str())]))
                    .build()
            })
            .collect();
        async move {
            let sent = match messages {
                Ok(mut m) if m.len() == 1 => self.producer.send(m.remove(0)).await.map(|_| ()),
                Ok(m) => self.producer.batch_send(m).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) => SendOutcome::stored(n),
                Err(e) => SendOutcome::failed(error_key(&e), n),
            }
        }
    }
}

/// One official consumer's loop until `stop`: receive, record, acknowledge each message.
async fn consume(
    plan: Arc<Plan>,
    c: SimpleConsumer,
    topic: String,
    mut stop: watch::Receiver<bool>,
) -> TaskStats {
    let mut stats = TaskStats::new(&plan.histogram);
    let filter = FilterExpression::new(FilterType::Tag, "*");
    loop {
        if *stop.borrow() {
            break;
        }
        let received = tokio::select! {
            received = c.receive_with(topic.as_str(), &filter, RECEIVE_BATCH, INVISIBLE) => received,
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
        let messages = match received {
            Ok(messages) => messages,
            Err(e) => {
                failed(&plan, &mut stats, format!("receive/{}", error_key(&e)), 1);
                backoff(&mut stop).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        for m in &messages {
            consumer::record(
                &plan,
                &mut stats,
                run_property(m.properties()),
                m.body(),
                u32::try_from(m.delivery_attempt()).unwrap_or(1),
            );
        }
        plan.consumed.notify_one();
        let acks = futures::future::join_all(messages.iter().map(|m| c.ack(m))).await;
        for result in acks {
            if let Err(e) = result {
                failed(&plan, &mut stats, format!("ack/{}", error_key(&e)), 1);
            }
        }
    }
    log_shutdown(c.shutdown().await);
    stats
}

/// The key a failed call of the crate is counted under: the server's code for a server
/// error (`TOO_MANY_REQUESTS`), `official:<kind>` otherwise.
fn error_key(e: &ClientError) -> String {
    if *e.kind() == ErrorKind::Server
        && let Some((_, code)) = e.context().iter().find(|(key, _)| *key == "code")
    {
        return code.clone();
    }
    format!("official:{:?}", e.kind())
}

/// A one-line description of a failed call of the crate.
fn describe(e: &ClientError) -> String {
    let context: Vec<String> = e
        .context()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!(
        "{}: {:?}: {} [{}]",
        e.operation(),
        e.kind(),
        e.message(),
        context.join(", ")
    )
}
