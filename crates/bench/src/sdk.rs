//! The Comet SDK (`comet-sdk`) as the bench's client: what a Rust service using the SDK
//! would write.
//!
//! - Producers: one [`Producer`] per [`PRODUCERS_PER_CLIENT`] bench producers, shared by
//!   them as a service shares one producer among its tasks (a clone is a handle on the same
//!   session and connection); the raw client groups its producers on connections the same
//!   way. `send` for one message per request and `send_batch` for `--batch` > 1. The SDK
//!   picks the queues and retries transient failures as its settings say.
//! - Consumers: one [`PushConsumer`] per bench consumer, subscribed to the topic with `*`,
//!   with a listener that only records the message and answers success ("no-op listener"),
//!   at most [`MAX_CONCURRENCY`] listener calls and [`MAX_CACHED`] cached messages. Building a
//!   push consumer starts its receiving, so the consumers are built when consuming starts:
//!   with the producers, or (with `--backlog`) once the window ends. The SDK acknowledges
//!   each message itself; ack failures are its own to retry and do not show in the report.

use std::sync::Arc;

use anyhow::Context;
use comet_sdk::{
    ConsumeResult, Error, FilterExpression, Message, MessageView, Producer, PushConsumer,
};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::args::BenchArgs;
use crate::consumer::{self, run_property};
use crate::payload::{RUN_PROPERTY, body};
use crate::plan::Plan;
use crate::producer::{Request, SendOutcome, Sender};
use crate::stats::{TaskStats, code_key, grpc_key};
use crate::target::Target;

/// Bench producers sharing one SDK [`Producer`] (the raw client's producers per connection).
const PRODUCERS_PER_CLIENT: usize = 4;

/// Most listener calls a push consumer runs at once.
const MAX_CONCURRENCY: usize = 64;
/// Most received, unfinished messages a push consumer holds.
const MAX_CACHED: usize = 4096;

/// The SDK clients of a run.
pub(crate) struct Fleet {
    /// One SDK producer per [`PRODUCERS_PER_CLIENT`] bench producers.
    producers: Vec<Producer>,
    /// Bench producer tasks.
    tasks: usize,
    endpoint: String,
    topic: String,
    group: String,
    consumers: usize,
}

impl Fleet {
    /// Builds (connects) one SDK producer per [`PRODUCERS_PER_CLIENT`] bench producers.
    pub(crate) async fn start(target: &Target, args: &BenchArgs) -> anyhow::Result<Fleet> {
        let clients = args.producers.div_ceil(PRODUCERS_PER_CLIENT);
        let builds = (0..clients).map(|_| {
            Producer::builder()
                .endpoints(&target.authority)
                .topics([args.topic.as_str()])
                .build()
        });
        let producers = futures::future::try_join_all(builds)
            .await
            .with_context(|| format!("starting the SDK producers against {}", target.authority))?;
        Ok(Fleet {
            producers,
            tasks: args.producers,
            endpoint: target.authority.clone(),
            topic: args.topic.clone(),
            group: args.group.clone(),
            consumers: args.consumers,
        })
    }

    /// Starts the producer tasks.
    pub(crate) fn spawn_producers(
        &self,
        plan: &Arc<Plan>,
        stop: &watch::Receiver<bool>,
    ) -> Vec<JoinHandle<TaskStats>> {
        let senders = (0..self.tasks).map(|i| SdkSender {
            producer: self.producers[i / PRODUCERS_PER_CLIENT].clone(),
        });
        crate::producer::spawn_all(senders, plan, stop)
    }

    /// Builds the push consumers (they start receiving at once) and starts one task per
    /// consumer that shuts it down on `stop` and hands back what its listener recorded.
    pub(crate) async fn spawn_consumers(
        &self,
        plan: &Arc<Plan>,
        stop: &watch::Receiver<bool>,
    ) -> anyhow::Result<Vec<JoinHandle<TaskStats>>> {
        let builds = (0..self.consumers).map(|_| async {
            let stats = Arc::new(Mutex::new(TaskStats::new(&plan.histogram)));
            let listener = {
                let (plan, stats) = (plan.clone(), stats.clone());
                move |m: MessageView| {
                    consumer::record(
                        &plan,
                        &mut stats.lock(),
                        run_property(m.properties()),
                        m.body(),
                        m.delivery_attempt(),
                    );
                    plan.consumed.notify_one();
                    std::future::ready(ConsumeResult::Success)
                }
            };
            let consumer = PushConsumer::builder(&self.group)
                .endpoints(&self.endpoint)
                .subscribe(&self.topic, FilterExpression::all())
                .max_concurrency(MAX_CONCURRENCY)
                .max_cached_messages(MAX_CACHED)
                .listener(listener)
                .build()
                .await?;
            Ok::<_, Error>((consumer, stats))
        });
        let consumers = futures::future::try_join_all(builds)
            .await
            .with_context(|| {
                format!("starting the SDK push consumers against {}", self.endpoint)
            })?;
        Ok(consumers
            .into_iter()
            .map(|(consumer, stats)| {
                let (plan, mut stop) = (plan.clone(), stop.clone());
                tokio::spawn(async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                    // Lets running listeners finish; what was not started becomes visible
                    // again for the next run. No listener call comes after this.
                    consumer.shutdown().await;
                    std::mem::replace(&mut *stats.lock(), TaskStats::new(&plan.histogram))
                })
            })
            .collect())
    }

    /// Shuts every producer down (NotifyClientTermination, telemetry closed).
    pub(crate) async fn close(self) {
        futures::future::join_all(self.producers.iter().map(Producer::shutdown)).await;
    }
}

/// Sends through one SDK producer.
struct SdkSender {
    producer: Producer,
}

impl SdkSender {
    fn messages(plan: &Plan, request: Request) -> Result<Vec<Message>, Error> {
        (0..request.count)
            .map(|_| {
                Message::builder(plan.topic.name.as_str())
                    .body(body(&plan.template, request.due_ns))
                    .property(RUN_PROPERTY, plan.run_hex.as_str())
                    .build()
            })
            .collect()
    }
}

impl Sender for SdkSender {
    fn send<'a>(
        &'a self,
        plan: &'a Plan,
        request: Request,
    ) -> impl Future<Output = SendOutcome> + Send + 'a {
        let n = u64::from(request.count);
        let messages = Self::messages(plan, request);
        async move {
            let sent = match messages {
                Ok(mut m) if m.len() == 1 => self.producer.send(m.remove(0)).await.map(|_| ()),
                Ok(m) => self.producer.send_batch(m).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) => SendOutcome::stored(n),
                Err(e) => SendOutcome::failed(error_key(&e), n),
            }
        }
    }
}

/// The key a failed SDK call is counted under: the server's code (`TOO_MANY_REQUESTS`), the
/// gRPC code of a transport failure (`grpc:UNAVAILABLE`), or `sdk:<kind>` for the rest.
fn error_key(e: &Error) -> String {
    match e {
        Error::Server { code, .. } => code_key(*code),
        Error::Transport { status, .. } => grpc_key(status),
        Error::Timeout { .. } => "grpc:DEADLINE_EXCEEDED".to_owned(),
        other => {
            let debug = format!("{other:?}");
            let kind = debug
                .split(|c: char| !c.is_ascii_alphanumeric())
                .next()
                .unwrap_or("Error");
            format!("sdk:{kind}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use comet_proto::apache::rocketmq::v2::Code;

    #[test]
    fn given_sdk_errors_when_keyed_should_match_the_raw_keys() {
        let server = Error::Server {
            rpc: "SendMessage",
            code: Code::TooManyRequests as i32,
            message: "slow down".into(),
        };
        assert_eq!(error_key(&server), "TOO_MANY_REQUESTS");
        let transport = Error::Transport {
            rpc: "SendMessage",
            endpoint: "127.0.0.1:1".into(),
            status: Box::new(tonic::Status::unavailable("down")),
        };
        assert_eq!(error_key(&transport), "grpc:UNAVAILABLE");
        let config = Error::Config {
            setting: "x",
            reason: "y".into(),
        };
        assert_eq!(error_key(&config), "sdk:Config");
    }
}
