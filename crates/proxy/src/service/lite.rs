//! Lite topics (RIP-83) at the proxy: SyncLiteSubscription and NotifyUnsubscribeLiteCommand.
//!
//! A lite consumer (LITE_PUSH_CONSUMER, LITE_SIMPLE_CONSUMER) binds one LITE parent topic and
//! tells the proxy which of its lite topics it consumes. The proxy checks the request (names,
//! quota: `lite_subscription_quota`, echoed in the client's settings) and forwards it to every
//! broker set of the parent topic, since a lite topic lives on the set its name hashes to;
//! the answer is OK only if every set took it. Brokers report lite topics they dropped
//! (expired) with the client's next pop; the proxy tells the client on its telemetry streams.

use comet_proto::apache::rocketmq::v2::{
    Code, LiteSubscriptionAction, NotifyUnsubscribeLiteCommand, SyncLiteSubscriptionRequest,
    SyncLiteSubscriptionResponse, TelemetryCommand, telemetry_command,
};
use comet_proto::comet::v1::{SyncLiteRequest, TopicMessageType};

use super::{Inner, require_client_id};
use crate::context::RequestContext;
use crate::names;
use crate::routes::Target;
use crate::status::{self, Failure, Outcome};
use crate::validate;

impl Inner {
    /// Checks a SyncLiteSubscription and applies it on every broker set of the parent topic.
    pub(super) async fn sync_lite_subscription(
        &self,
        ctx: &RequestContext,
        request: SyncLiteSubscriptionRequest,
    ) -> Outcome<SyncLiteSubscriptionResponse> {
        require_client_id(ctx)?;
        let topic = names::topic(ctx, request.topic.as_ref())?;
        let group = names::group(ctx, request.group.as_ref())?;
        let action = LiteSubscriptionAction::try_from(request.action).map_err(|_| {
            Failure::bad_request(format!(
                "unknown lite subscription action {}; use PARTIAL_ADD, PARTIAL_REMOVE, \
                 COMPLETE_ADD or COMPLETE_REMOVE",
                request.action
            ))
        })?;
        for lite in &request.lite_topic_set {
            validate::lite_topic(&self.cfg, lite)?;
        }
        let quota = self.cfg.lite_subscription_quota;
        let adds = matches!(
            action,
            LiteSubscriptionAction::PartialAdd | LiteSubscriptionAction::CompleteAdd
        );
        if adds && request.lite_topic_set.len() > quota as usize {
            return Err(Failure::new(
                Code::LiteSubscriptionQuotaExceeded,
                format!(
                    "{} lite topics named, more than the quota of {quota} per client",
                    request.lite_topic_set.len()
                ),
            ));
        }
        let index = self.metadata.current();
        let parent = index.require_topic(&topic)?;
        if parent.message_type != TopicMessageType::Lite as i32 {
            return Err(Failure::new(
                Code::IllegalTopic,
                format!(
                    "topic {} is not a LITE topic; lite consumers bind a LITE topic \
                     (comet topic create NAME --type lite)",
                    topic.name
                ),
            ));
        }
        let targets: Vec<Target> = parent
            .placements
            .iter()
            .filter(|p| p.queue_count > 0)
            .map(|p| {
                index
                    .master_address(&p.broker_set)
                    .map(|a| Target {
                        broker_set: p.broker_set.clone(),
                        address: a.to_owned(),
                        queue_id: -1,
                    })
                    .ok_or_else(|| {
                        Failure::new(
                            Code::HaNotAvailable,
                            format!(
                                "broker set {} of topic {} has no master; retry shortly",
                                p.broker_set, topic.name
                            ),
                        )
                    })
            })
            .collect::<Outcome<_>>()?;
        drop(parent);
        let internal = SyncLiteSubscriptionRequest {
            topic: Some(topic.internal()),
            group: Some(group.internal()),
            ..request
        };
        let budget = self.unary_budget(ctx);
        let calls = targets.iter().map(|target| {
            let message = SyncLiteRequest {
                request: Some(internal.clone()),
                quota: i32::try_from(quota).unwrap_or(i32::MAX),
            };
            self.call_for_client(ctx, target, budget, message, |b, r| {
                Box::pin(async move { b.sync_lite_subscription(r).await })
            })
        });
        let answers = futures::future::join_all(calls).await;
        for (target, answer) in targets.iter().zip(answers) {
            let mut st = answer?.status.unwrap_or_else(|| {
                status::status(Code::InternalServerError, "broker returned no status")
            });
            status::normalize(&mut st);
            if st.code != Code::Ok as i32 {
                tracing::debug!(broker_set = %target.broker_set, code = st.code,
                    "lite subscription refused");
                return Ok(SyncLiteSubscriptionResponse { status: Some(st) });
            }
        }
        Ok(SyncLiteSubscriptionResponse {
            status: Some(status::ok()),
        })
    }

    /// Tells a client, on each of its telemetry streams, that it no longer consumes these
    /// lite topics (the broker dropped them). A full or closed stream misses the notice; the
    /// client's next full sync (COMPLETE_ADD) no longer finds them anyway.
    pub(super) fn notify_unsubscribed_lite(&self, client_id: &str, lite_topics: Vec<String>) {
        let streams = self.sessions.client_streams(client_id);
        tracing::info!(client = %client_id, lite_topics = lite_topics.len(),
            streams = streams.len(), "lite topics unsubscribed by the broker");
        for lite in lite_topics {
            let command = TelemetryCommand {
                status: Some(status::ok()),
                command: Some(telemetry_command::Command::NotifyUnsubscribeLiteCommand(
                    NotifyUnsubscribeLiteCommand { lite_topic: lite },
                )),
            };
            for tx in &streams {
                if tx.try_send(Ok(command.clone())).is_err() {
                    tracing::warn!(client = %client_id, "telemetry stream full or closed; lite unsubscribe notice dropped");
                }
            }
        }
    }
}
