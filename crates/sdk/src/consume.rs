//! The consumer calls both consumers share: ReceiveMessage (a server stream read to its end
//! within the long-polling deadline), ChangeInvisibleDuration and
//! ForwardMessageToDeadLetterQueue. Acknowledgements, sent in batches, are in [`crate::ack`].

use std::time::Duration;

use comet_proto::apache::rocketmq::v2 as pb;
use pb::receive_message_response::Content;

use crate::ack::Receipt;
use crate::error::{Error, Result};
use crate::message::MessageView;
use crate::route_table::Queue;
use crate::session::{Session, check, grpc_error, proto_duration};

/// One ReceiveMessage call.
pub(crate) struct ReceiveCall<'a> {
    pub(crate) group: &'a str,
    pub(crate) queue: &'a Queue,
    pub(crate) filter: pb::FilterExpression,
    pub(crate) batch: u32,
    pub(crate) invisible: Duration,
    pub(crate) long_polling: Duration,
}

/// Receives up to `call.batch` messages; an empty list when the long poll found nothing.
pub(crate) async fn receive(session: &Session, call: ReceiveCall<'_>) -> Result<Vec<MessageView>> {
    const RPC: &str = "ReceiveMessage";
    let endpoints = call.queue.endpoints.clone();
    let req = pb::ReceiveMessageRequest {
        group: Some(session.resource(call.group)),
        message_queue: Some(call.queue.proto.clone()),
        filter_expression: Some(call.filter),
        batch_size: i32::try_from(call.batch).unwrap_or(i32::MAX),
        invisible_duration: Some(proto_duration(call.invisible)),
        auto_renew: false,
        long_polling_timeout: Some(proto_duration(call.long_polling)),
        attempt_id: Some(uuid::Uuid::new_v4().to_string()),
    };
    let timeout = call.long_polling + session.config().request_timeout;
    let read = async {
        let mut client = session.client(&endpoints)?;
        let mut stream = client
            .receive_message(session.request(req, timeout))
            .await
            .map_err(|s| grpc_error(RPC, &endpoints.key, s))?
            .into_inner();
        let mut messages = Vec::new();
        let mut status = None;
        while let Some(frame) = stream
            .message()
            .await
            .map_err(|s| grpc_error(RPC, &endpoints.key, s))?
        {
            match frame.content {
                Some(Content::Status(s)) => status = Some(s),
                Some(Content::Message(m)) => match MessageView::from_proto(m, endpoints.clone()) {
                    Ok(v) => messages.push(v),
                    Err(what) => {
                        return Err(Error::Protocol {
                            rpc: RPC,
                            what: what.to_owned(),
                        });
                    }
                },
                Some(Content::DeliveryTimestamp(_)) | None => {}
            }
        }
        match &status {
            Some(s) if s.code == pb::Code::MessageNotFound as i32 => Ok(Vec::new()),
            // A stream of messages without a status frame is taken as a success.
            None if !messages.is_empty() => Ok(messages),
            s => check(RPC, s.as_ref()).map(|()| messages),
        }
    };
    match tokio::time::timeout(timeout + Duration::from_millis(500), read).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout {
            rpc: RPC,
            endpoint: endpoints.key.clone(),
            after: timeout,
        }),
    }
}

/// Makes the message of `receipt` invisible for `invisible` from now; the receipt's handle is
/// replaced by the server's new one.
pub(crate) async fn change_invisible(
    session: &Session,
    group: &str,
    receipt: &mut Receipt,
    invisible: Duration,
) -> Result<()> {
    let req = pb::ChangeInvisibleDurationRequest {
        group: Some(session.resource(group)),
        topic: Some(session.resource(&receipt.topic)),
        receipt_handle: receipt.handle.clone(),
        invisible_duration: Some(proto_duration(invisible)),
        message_id: receipt.message_id.clone(),
        lite_topic: receipt.lite_topic.clone(),
        suspend: None,
    };
    let response = session
        .unary(
            crate::rpc::CHANGE_INVISIBLE_DURATION,
            &receipt.endpoints,
            &req,
        )
        .await?;
    check("ChangeInvisibleDuration", response.status.as_ref())?;
    if !response.receipt_handle.is_empty() {
        receipt.handle = response.receipt_handle;
    }
    Ok(())
}

/// Sends the message of `receipt`, delivered `delivery_attempt` times, to `group`'s
/// dead-letter queue.
pub(crate) async fn forward_to_dlq(
    session: &Session,
    group: &str,
    receipt: &Receipt,
    delivery_attempt: u32,
    max_attempts: u32,
) -> Result<()> {
    let req = pb::ForwardMessageToDeadLetterQueueRequest {
        group: Some(session.resource(group)),
        topic: Some(session.resource(&receipt.topic)),
        receipt_handle: receipt.handle.clone(),
        message_id: receipt.message_id.clone(),
        delivery_attempt: i32::try_from(delivery_attempt).unwrap_or(i32::MAX),
        max_delivery_attempts: i32::try_from(max_attempts).unwrap_or(i32::MAX),
        lite_topic: receipt.lite_topic.clone(),
    };
    let response = session
        .unary(crate::rpc::FORWARD_TO_DLQ, &receipt.endpoints, &req)
        .await?;
    check("ForwardMessageToDeadLetterQueue", response.status.as_ref())
}

/// The subscription entries of a consumer's settings.
pub(crate) fn subscription_entries(
    namespace: &str,
    subscriptions: &std::collections::HashMap<String, crate::FilterExpression>,
) -> Vec<pb::SubscriptionEntry> {
    subscriptions
        .iter()
        .map(|(topic, f)| pb::SubscriptionEntry {
            topic: Some(pb::Resource {
                resource_namespace: namespace.to_owned(),
                name: topic.clone(),
            }),
            expression: Some(f.to_proto()),
        })
        .collect()
}

/// A consumer's identity as its settings, heartbeats and termination notice carry it.
pub(crate) struct ConsumerIdentity<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) group: &'a str,
    pub(crate) client_type: pb::ClientType,
}

impl ConsumerIdentity<'_> {
    fn group(&self) -> pb::Resource {
        pb::Resource {
            resource_namespace: self.namespace.to_owned(),
            name: self.group.to_owned(),
        }
    }

    /// The consumer's settings.
    pub(crate) fn settings(
        &self,
        access_point: &pb::Endpoints,
        request_timeout: Duration,
        subscriptions: &std::collections::HashMap<String, crate::FilterExpression>,
        long_polling: Option<Duration>,
    ) -> pb::Settings {
        pb::Settings {
            client_type: Some(self.client_type as i32),
            access_point: Some(access_point.clone()),
            backoff_policy: None,
            request_timeout: Some(proto_duration(request_timeout)),
            pub_sub: Some(pb::settings::PubSub::Subscription(pb::Subscription {
                group: Some(self.group()),
                subscriptions: subscription_entries(self.namespace, subscriptions),
                fifo: None,
                receive_batch_size: None,
                long_polling_timeout: long_polling.map(proto_duration),
                lite_subscription_quota: None,
                max_lite_topic_size: None,
            })),
            user_agent: Some(crate::user_agent()),
            metric: None,
            client_properties: Default::default(),
        }
    }

    /// The consumer's heartbeat.
    pub(crate) fn heartbeat(&self) -> pb::HeartbeatRequest {
        pb::HeartbeatRequest {
            group: Some(self.group()),
            client_type: self.client_type as i32,
        }
    }

    /// The consumer's termination notice.
    pub(crate) fn termination(&self) -> pb::NotifyClientTerminationRequest {
        pb::NotifyClientTerminationRequest {
            group: Some(self.group()),
        }
    }
}
