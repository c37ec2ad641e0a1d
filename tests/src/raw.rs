//! Raw `apache.rocketmq.v2` requests as grpcurl or a hand-written client sends them, for what
//! the official client cannot express: the caller headers, resources, queues and
//! ReceiveMessage.

use std::time::Duration;

use comet_proto::apache::rocketmq::v2 as pb;
use pb::messaging_service_client::MessagingServiceClient;
use pb::receive_message_response::Content;
use tonic::transport::Channel;

/// `msg` as a call of client `client_id` (`x-mq-client-id`) in language HTTP
/// (`x-mq-language`, as grpcurl users and the Node.js client send it).
pub fn request<T>(client_id: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "x-mq-client-id",
        client_id.parse().expect("an ASCII client id"),
    );
    r.metadata_mut().insert(
        "x-mq-language",
        tonic::metadata::MetadataValue::from_static("HTTP"),
    );
    r
}

/// A resource named `name`, without namespace.
pub fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        resource_namespace: String::new(),
        name: name.to_owned(),
    })
}

/// Queue `id` of `topic` (-1: any queue), on any broker set or on `broker_set` only.
pub fn queue(topic: &str, id: i32, broker_set: Option<&str>) -> pb::MessageQueue {
    pb::MessageQueue {
        topic: resource(topic),
        id,
        broker: broker_set.map(|name| pb::Broker {
            name: name.to_owned(),
            id: 0,
            endpoints: None,
        }),
        ..Default::default()
    }
}

/// A ReceiveMessage of up to `batch_size` messages for `group` from `queue` with the TAG
/// filter `*`, no auto-renew and no attempt id.
pub fn receive_request(
    group: &str,
    queue: pb::MessageQueue,
    batch_size: i32,
    invisible: Duration,
    long_poll: Duration,
) -> pb::ReceiveMessageRequest {
    pb::ReceiveMessageRequest {
        group: resource(group),
        message_queue: Some(queue),
        filter_expression: Some(pb::FilterExpression {
            r#type: pb::FilterType::Tag as i32,
            expression: "*".to_owned(),
        }),
        batch_size,
        invisible_duration: Some(invisible.try_into().expect("invisible duration in range")),
        auto_renew: false,
        long_polling_timeout: Some(long_poll.try_into().expect("long poll in range")),
        attempt_id: None,
    }
}

/// Every frame of one ReceiveMessage call, in order; panics on a transport error or a frame
/// without content.
pub async fn receive_frames(
    client: &mut MessagingServiceClient<Channel>,
    req: tonic::Request<pb::ReceiveMessageRequest>,
) -> Vec<Content> {
    let mut stream = client
        .receive_message(req)
        .await
        .expect("ReceiveMessage answers")
        .into_inner();
    let mut frames = Vec::new();
    while let Some(frame) = stream.message().await.expect("receive frame") {
        frames.push(frame.content.expect("exactly one oneof set"));
    }
    frames
}

/// The messages among `frames`, in order.
pub fn messages(frames: &[Content]) -> impl Iterator<Item = &pb::Message> {
    frames.iter().filter_map(|f| match f {
        Content::Message(m) => Some(m),
        _ => None,
    })
}
