//! The SDK's one error type.
//!
//! Three families: what the caller asked for is wrong (configuration and client-side message
//! validation, found before any RPC), the server answered with a business code (in-body
//! `Status`, code and message kept as sent), or the call did not complete (transport, timeout,
//! shutdown). [`Error::is_retryable`] tells the transient ones from the permanent ones.

use std::time::Duration;

use comet_proto::apache::rocketmq::v2::Code;

/// `Result` with the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything an SDK call can fail with. Cloning is cheap enough for fanning one failure out
/// to every message of a batch.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A builder was given a setting that cannot work (names the setting and why).
    #[error("invalid client configuration: {setting}: {reason}")]
    Config {
        /// The builder setting at fault.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A message failed client-side validation; nothing was sent.
    #[error("invalid message: {0}")]
    InvalidMessage(#[from] Invalid),
    /// The server answered with a business error code.
    #[error("{rpc} failed with {} ({code}): {message}", code_name(*.code))]
    Server {
        /// The RPC that failed (e.g. `SendMessage`).
        rpc: &'static str,
        /// The `apache.rocketmq.v2.Code` number the server sent.
        code: i32,
        /// The server's message, as sent.
        message: String,
    },
    /// The server does not offer this RPC or feature (gRPC `UNIMPLEMENTED`, or the codes
    /// `NOT_IMPLEMENTED` / `UNSUPPORTED`).
    #[error("{rpc} is not supported by the server: {message}")]
    Unsupported {
        /// The RPC the server refused.
        rpc: &'static str,
        /// The server's explanation.
        message: String,
    },
    /// The call failed below the RocketMQ protocol (connection refused or reset, gRPC error).
    #[error("{rpc} to {endpoint}: transport error: {status}")]
    Transport {
        /// The RPC that failed.
        rpc: &'static str,
        /// The endpoint it went to.
        endpoint: String,
        /// The gRPC status the transport produced.
        #[source]
        status: Box<tonic::Status>,
    },
    /// The TLS handshake with the server failed: its certificate is not trusted by the
    /// configured roots or CA, does not name the host, or the handshake broke off. Not
    /// retryable: the client's [`crate::Tls`] setting or the server's certificate must change.
    #[error("{rpc} to {endpoint}: TLS handshake failed: {reason}")]
    Tls {
        /// The RPC that could not connect.
        rpc: &'static str,
        /// The endpoint it went to.
        endpoint: String,
        /// What the TLS layer reported (e.g. an unknown issuer).
        reason: String,
    },
    /// No answer within the request timeout.
    #[error("{rpc} to {endpoint}: no answer within {after:?}")]
    Timeout {
        /// The RPC that timed out.
        rpc: &'static str,
        /// The endpoint it went to.
        endpoint: String,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The server answered something the protocol does not allow (e.g. no status, no entry).
    #[error("{rpc}: malformed answer from the server: {what}")]
    Protocol {
        /// The RPC whose answer was malformed.
        rpc: &'static str,
        /// What was wrong with it.
        what: String,
    },
    /// The topic's route has no queue this client can use (e.g. no writable queue accepting
    /// the message's type).
    #[error("topic {topic}: no usable queue in its route: {reason}")]
    NoQueue {
        /// The topic.
        topic: String,
        /// Why no queue fits.
        reason: String,
    },
    /// The client was shut down (or is shutting down).
    #[error("the client is shut down")]
    Shutdown,
}

/// Client-side validation failures of a message or a call's arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    /// The topic is empty.
    #[error("the topic is empty")]
    EmptyTopic,
    /// The topic has characters outside `[%|a-zA-Z0-9_-]` or is longer than 127.
    #[error("topic {0:?} must be 1-127 characters of [%|a-zA-Z0-9_-]")]
    IllegalTopic(String),
    /// The body is empty.
    #[error("the body is empty")]
    EmptyBody,
    /// The body is larger than the server's limit.
    #[error("the body has {size} bytes, more than the limit of {max}")]
    BodyTooLarge {
        /// Body size in bytes.
        size: usize,
        /// The limit (the server's `max_body_size`).
        max: usize,
    },
    /// The tag is blank or contains `|`.
    #[error("tag {0:?} must not be blank or contain '|'")]
    IllegalTag(String),
    /// A key is blank.
    #[error("message keys must not be blank")]
    IllegalKey,
    /// A user property key is blank or reserved, or a value is empty.
    #[error("property {0:?}: keys and values must not be blank")]
    IllegalProperty(String),
    /// The message group is blank or longer than 64 characters.
    #[error("message group must be 1-64 characters")]
    IllegalMessageGroup,
    /// The lite topic is blank or longer than 64 characters.
    #[error("lite topic must be 1-64 characters")]
    IllegalLiteTopic,
    /// Fields were set that one message cannot carry together.
    #[error("conflicting fields: {0}")]
    Conflict(&'static str),
    /// A batch mixes topics or message types, or is empty.
    #[error("batch: {0}")]
    Batch(&'static str),
    /// A transactional send was asked of a message that cannot be one.
    #[error("transaction: {0}")]
    Transaction(&'static str),
    /// A receive or invisibility argument is out of range.
    #[error("{what} {value:?} is out of range")]
    Argument {
        /// The argument.
        what: &'static str,
        /// Its value.
        value: String,
    },
    /// A filter expression is blank.
    #[error("filter expression must not be blank")]
    EmptyFilter,
    /// The consumer is not subscribed to the topic.
    #[error("not subscribed to topic {0:?}")]
    NotSubscribed(String),
}

impl Error {
    /// Whether repeating the same call later can succeed: transport failures, timeouts and the
    /// server's transient codes (throttling, internal errors, persistence timeouts). Validation,
    /// configuration, permission and not-found errors are permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport { status, .. } => matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unknown
                    | tonic::Code::Internal
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::Aborted
                    | tonic::Code::Cancelled
            ),
            Error::Timeout { .. } => true,
            Error::Server { code, .. } => is_transient_code(*code),
            _ => false,
        }
    }

    /// The server's `apache.rocketmq.v2.Code` number, for [`Error::Server`].
    pub fn code(&self) -> Option<i32> {
        match self {
            Error::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The server's message, for [`Error::Server`] and [`Error::Unsupported`].
    pub fn server_message(&self) -> Option<&str> {
        match self {
            Error::Server { message, .. } | Error::Unsupported { message, .. } => Some(message),
            _ => None,
        }
    }

    /// Whether the call failed before reaching the server's logic (connection, timeout): the
    /// endpoint may be down, so another endpoint is worth trying.
    pub(crate) fn is_transport(&self) -> bool {
        match self {
            Error::Transport { status, .. } => matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            ),
            Error::Timeout { .. } => true,
            _ => false,
        }
    }

    /// Whether the error says the route the client used is stale.
    pub(crate) fn is_route_error(&self) -> bool {
        self.is_transport()
            || matches!(self, Error::Server { code, .. }
                if *code == Code::TopicNotFound as i32
                    || *code == Code::MasterPersistenceTimeout as i32
                    || *code == Code::HaNotAvailable as i32
                    || *code == Code::NotFound as i32)
    }
}

/// The name of a `Code` number (`"TOO_MANY_REQUESTS"`), or `"UNKNOWN_CODE"`.
pub fn code_name(code: i32) -> &'static str {
    Code::try_from(code).map_or("UNKNOWN_CODE", |c| c.as_str_name())
}

fn is_transient_code(code: i32) -> bool {
    [
        Code::TooManyRequests,
        Code::InternalError,
        Code::InternalServerError,
        Code::HaNotAvailable,
        Code::ProxyTimeout,
        Code::MasterPersistenceTimeout,
        Code::SlavePersistenceTimeout,
        Code::RequestTimeout,
    ]
    .iter()
    .any(|c| *c as i32 == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: Code) -> Error {
        Error::Server {
            rpc: "SendMessage",
            code: code as i32,
            message: "m".into(),
        }
    }

    #[test]
    fn given_transient_codes_when_classified_should_be_retryable() {
        assert!(server(Code::TooManyRequests).is_retryable());
        assert!(server(Code::InternalServerError).is_retryable());
        assert!(server(Code::ProxyTimeout).is_retryable());
        assert!(!server(Code::TopicNotFound).is_retryable());
        assert!(!server(Code::Forbidden).is_retryable());
        assert!(!Error::InvalidMessage(Invalid::EmptyBody).is_retryable());
        let unavailable = Error::Transport {
            rpc: "SendMessage",
            endpoint: "127.0.0.1:1".into(),
            status: Box::new(tonic::Status::unavailable("refused")),
        };
        assert!(unavailable.is_retryable());
        assert!(unavailable.is_transport());
    }

    #[test]
    fn given_a_server_error_when_displayed_should_name_the_code_and_keep_the_message() {
        let e = server(Code::TopicNotFound);
        assert_eq!(e.code(), Some(40402));
        assert_eq!(e.server_message(), Some("m"));
        assert_eq!(
            e.to_string(),
            "SendMessage failed with TOPIC_NOT_FOUND (40402): m"
        );
        let unknown = Error::Server {
            rpc: "AckMessage",
            code: 12345,
            message: String::new(),
        };
        assert!(unknown.to_string().contains("UNKNOWN_CODE (12345)"));
    }
}
