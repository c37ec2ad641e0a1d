//! The unary RPCs of `apache.rocketmq.v2.MessagingService` the SDK calls: each one's name
//! (for errors and logs), its HTTP/2 path, and its request and response types, tied
//! together so a call cannot pair a request with the wrong answer.
//!
//! Depends on nothing but the proto crate; the session's `unary` takes an [`Rpc`].

use std::marker::PhantomData;

use comet_proto::apache::rocketmq::v2 as pb;

/// One unary RPC: `Req` in, `Resp` out.
pub(crate) struct Rpc<Req, Resp> {
    /// The RPC's name, as errors report it (`SendMessage`).
    pub(crate) name: &'static str,
    /// `/apache.rocketmq.v2.MessagingService/<name>`.
    pub(crate) path: &'static str,
    types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> Clone for Rpc<Req, Resp> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Req, Resp> Copy for Rpc<Req, Resp> {}

macro_rules! rpcs {
    ($($konst:ident: $name:literal, $req:ident => $resp:ident;)*) => {
        $(
            pub(crate) const $konst: Rpc<pb::$req, pb::$resp> = Rpc {
                name: $name,
                path: concat!("/apache.rocketmq.v2.MessagingService/", $name),
                types: PhantomData,
            };
        )*
    };
}

rpcs! {
    QUERY_ROUTE: "QueryRoute", QueryRouteRequest => QueryRouteResponse;
    HEARTBEAT: "Heartbeat", HeartbeatRequest => HeartbeatResponse;
    SEND_MESSAGE: "SendMessage", SendMessageRequest => SendMessageResponse;
    QUERY_ASSIGNMENT: "QueryAssignment", QueryAssignmentRequest => QueryAssignmentResponse;
    ACK_MESSAGE: "AckMessage", AckMessageRequest => AckMessageResponse;
    FORWARD_TO_DLQ: "ForwardMessageToDeadLetterQueue",
        ForwardMessageToDeadLetterQueueRequest => ForwardMessageToDeadLetterQueueResponse;
    END_TRANSACTION: "EndTransaction", EndTransactionRequest => EndTransactionResponse;
    NOTIFY_CLIENT_TERMINATION: "NotifyClientTermination",
        NotifyClientTerminationRequest => NotifyClientTerminationResponse;
    CHANGE_INVISIBLE_DURATION: "ChangeInvisibleDuration",
        ChangeInvisibleDurationRequest => ChangeInvisibleDurationResponse;
    RECALL_MESSAGE: "RecallMessage", RecallMessageRequest => RecallMessageResponse;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_the_rpcs_should_name_their_paths_after_the_service() {
        assert_eq!(
            SEND_MESSAGE.path,
            "/apache.rocketmq.v2.MessagingService/SendMessage"
        );
        assert_eq!(FORWARD_TO_DLQ.name, "ForwardMessageToDeadLetterQueue");
        assert!(
            FORWARD_TO_DLQ
                .path
                .ends_with("/ForwardMessageToDeadLetterQueue")
        );
    }
}
