//! Topic auto-creation for the proxy ([`TopicCreator`]): through the in-process controller
//! (standalone) or through the controller cluster (cluster mode). A topic that already exists
//! counts as created.

use comet_broker::ControllerClient;
use comet_proto::comet::v1::controller_service_server::ControllerService;
use comet_proto::comet::v1::{CreateTopicRequest, Topic};
use comet_proxy::TopicCreator;

use crate::admin::Signer;

/// Auto-creates topics through the in-process controller.
pub struct LocalCreator(pub comet_controller::ControllerGrpc);

#[tonic::async_trait]
impl TopicCreator for LocalCreator {
    async fn create_topic(&self, topic: Topic) -> Result<(), tonic::Status> {
        match self
            .0
            .create_topic(tonic::Request::new(CreateTopicRequest {
                topic: Some(topic),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
            Err(s) => Err(s),
        }
    }
}

/// Auto-creates topics through the controller cluster, signing its calls with the process's
/// `auth.username` / `auth.password` (needed when the controllers have auth enabled).
pub struct RemoteCreator(pub ControllerClient, pub Signer);

#[tonic::async_trait]
impl TopicCreator for RemoteCreator {
    async fn create_topic(&self, topic: Topic) -> Result<(), tonic::Status> {
        let result = self
            .0
            .call(|mut c| {
                let req = self.1.sign(CreateTopicRequest {
                    topic: Some(topic.clone()),
                });
                async move { c.create_topic(req).await }
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
            Err(s) => Err(s),
        }
    }
}
