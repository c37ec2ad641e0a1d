//! RecallMessage: cancels a delay message before its delivery, by the recall handle its send
//! answered. The handle's `"<broker_set>~"` prefix names the broker set holding the timer (as
//! a transaction id does); the proxy checks the request, routes it to that set's master and
//! passes the broker's answer on. The broker decides everything else (see the broker's
//! `recall` module): BAD_REQUEST for a malformed handle or one of another topic,
//! NOT_FOUND for an unknown or already delivered message.

use comet_proto::apache::rocketmq::v2::{Code, RecallMessageRequest, RecallMessageResponse};

use super::{Inner, require_client_id};
use crate::context::RequestContext;
use crate::names;
use crate::routes::{Access, named_set_target, topic_not_found};
use crate::status::{self, Failure, Outcome};

impl Inner {
    /// Forwards a recall to the broker set named by the handle.
    pub(super) async fn recall_message(
        &self,
        ctx: &RequestContext,
        request: RecallMessageRequest,
    ) -> Outcome<RecallMessageResponse> {
        require_client_id(ctx)?;
        let topic = names::topic(ctx, request.topic.as_ref())?;
        let handle = request.recall_handle.trim();
        if handle.is_empty() {
            return Err(Failure::new(
                Code::BadRequest,
                "recall_handle is required: use the one SendMessage returned for the delay message",
            ));
        }
        let index = self.metadata.current();
        if index.topic(&topic.qualified).is_none() {
            return Err(topic_not_found(&topic));
        }
        let set = comet_vocab::handle::broker_set(handle).ok_or_else(|| {
            Failure::new(
                Code::BadRequest,
                "recall handle is malformed: it does not name a broker set",
            )
        })?;
        let target = named_set_target(
            &index,
            set,
            Code::BadRequest,
            "recall handle",
            Access::Write,
        )?;
        let internal = RecallMessageRequest {
            topic: Some(topic.internal()),
            recall_handle: handle.to_owned(),
        };
        let budget = self.unary_budget(ctx);
        let response = self
            .call(&target, budget, internal, |b, r| {
                Box::pin(async move { b.recall_message(r).await })
            })
            .await?;
        let mut st = response.status.unwrap_or_else(|| {
            status::status(Code::InternalServerError, "broker returned no status")
        });
        status::normalize(&mut st);
        Ok(RecallMessageResponse {
            status: Some(st),
            message_id: response.message_id,
        })
    }
}
