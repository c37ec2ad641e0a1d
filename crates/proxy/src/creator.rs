//! The auto-create seam: how the proxy asks for a missing topic.

use comet_proto::comet::v1::Topic;

/// Creates topics on request (auto-create); the cluster implements it over the controller.
///
/// The proxy calls it only when `ProxyConfig::auto_create_topics` is on and a client names an
/// unknown topic on QueryRoute or SendMessage, then waits (`auto_create_wait`) for the topic to
/// appear in its metadata watch. ALREADY_EXISTS counts as success (another proxy won the race);
/// INVALID_ARGUMENT is reported as ILLEGAL_TOPIC, other errors as INTERNAL_SERVER_ERROR.
#[tonic::async_trait]
pub trait TopicCreator: Send + Sync + 'static {
    /// Creates `topic` (qualified name, MIXED type, READ_WRITE, placements on every broker set
    /// that has a live master with `default_queue_count` queues each).
    async fn create_topic(&self, topic: Topic) -> Result<(), tonic::Status>;
}
