//! The one place where failures become `apache.rocketmq.v2.Status` codes, and where every
//! status is fitted to the client that receives it.
//!
//! Business errors travel in-body with gRPC OK (service.proto convention). Handlers produce
//! upstream's code for each cause (apache/rocketmq-apis `StatusCode.md`, and the Apache proxy
//! where the table is silent), whatever the client. At the response boundary
//! [`for_client`] fits each status to its receiver: a client sending `x-mq-language: RUST`
//! gets only the codes the Rust `rocketmq` 5.0.0 enum has (it panics on any other number;
//! [`is_known_to_rust_5_0_0`] pins that list) and the nearest known code otherwise
//! ([`nearest_known_to_rust`]), with the original code named in the message; every other
//! client gets upstream's code. Numbers outside the current `Code` enum (a newer broker) are
//! rewritten for everyone ([`normalize`]).

use comet_proto::apache::rocketmq::v2::{Code, Status};

/// A business failure: an in-body code with a message meant for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) code: Code,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn status(&self) -> Status {
        status(self.code, &self.message)
    }

    /// Same failure with `context` in front of the message.
    pub(crate) fn context(mut self, context: impl std::fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Failure::new(Code::BadRequest, message)
    }

    pub(crate) fn client_id_required() -> Self {
        Failure::new(
            Code::ClientIdRequired,
            "the x-mq-client-id request header is required",
        )
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Failure::new(Code::InternalServerError, message)
    }
}

/// Result of a request step that fails with an in-body status.
pub(crate) type Outcome<T> = Result<T, Failure>;

/// Status construction and the batch aggregation rule are RocketMQ vocabulary, shared with
/// the broker.
pub(crate) use comet_vocab::status::{aggregate, ok, status};

/// Maps a failed broker call (the call itself: transport, deadline, shutdown) to the in-body
/// failure the client sees. `broker_set` names the target in the message.
pub(crate) fn from_broker_call(err: &tonic::Status, broker_set: &str) -> Failure {
    let code = match err.code() {
        tonic::Code::DeadlineExceeded => Code::ProxyTimeout,
        tonic::Code::ResourceExhausted => Code::TooManyRequests,
        tonic::Code::InvalidArgument => Code::BadRequest,
        tonic::Code::NotFound => Code::NotFound,
        tonic::Code::PermissionDenied => Code::Forbidden,
        tonic::Code::Unauthenticated => Code::Unauthorized,
        tonic::Code::FailedPrecondition => Code::PreconditionFailed,
        tonic::Code::Unimplemented => Code::NotImplemented,
        // Unreachable, shutting down or between masters: a retry reaches the set's next
        // master once the routes name it, which is what HA_NOT_AVAILABLE tells a client.
        tonic::Code::Unavailable => Code::HaNotAvailable,
        // The connection broke mid-call (the broker died): tonic reports UNKNOWN with the
        // transport error as its source. A status the broker itself sent has no source.
        tonic::Code::Unknown if std::error::Error::source(err).is_some() => Code::HaNotAvailable,
        // tonic reports its own deadline (the caller's `grpc-timeout`) as CANCELLED caused by
        // `TimeoutExpired`, and a call whose connection closed under it (the broker was killed,
        // a partition was cut) as CANCELLED caused by hyper: neither is the broker's fault,
        // and both succeed on retry once the routes name the set's next master.
        tonic::Code::Cancelled if deadline_passed(err) => Code::ProxyTimeout,
        tonic::Code::Cancelled => Code::HaNotAvailable,
        _ => Code::InternalServerError,
    };
    Failure::new(
        code,
        format!(
            "broker set {broker_set} call failed: {} ({:?})",
            err.message(),
            err.code()
        ),
    )
}

/// Whether tonic gave up on the call because its deadline passed.
fn deadline_passed(err: &tonic::Status) -> bool {
    let mut cause = std::error::Error::source(err);
    while let Some(e) = cause {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// A broker call that did not answer before the proxy's deadline.
pub(crate) fn broker_timeout(broker_set: &str, after: std::time::Duration) -> Failure {
    Failure::new(
        Code::ProxyTimeout,
        format!("broker set {broker_set} did not answer within {after:?}"),
    )
}

/// Maps a failed topic auto-creation.
pub(crate) fn from_topic_creation(err: &tonic::Status, topic: &str) -> Failure {
    let code = match err.code() {
        tonic::Code::InvalidArgument => Code::IllegalTopic,
        tonic::Code::FailedPrecondition | tonic::Code::NotFound => Code::TopicNotFound,
        tonic::Code::DeadlineExceeded => Code::ProxyTimeout,
        _ => Code::InternalServerError,
    };
    Failure::new(
        code,
        format!("could not create topic {topic}: {}", err.message()),
    )
}

/// Rewrites a status whose number is not a defined `Code` (or is CODE_UNSPECIFIED), e.g. from a
/// newer broker, to INTERNAL_SERVER_ERROR naming the number. Defined codes are kept.
pub(crate) fn normalize(status: &mut Status) {
    let defined = Code::try_from(status.code).is_ok_and(|c| c != Code::Unspecified);
    if !defined {
        status.message = format!(
            "unrecognised status code {}: {}",
            status.code, status.message
        );
        status.code = Code::InternalServerError as i32;
    }
}

/// The code a Rust 5.0.0 client gets in place of one its enum lacks: the head of the code's
/// class (`OFFSET_NOT_FOUND` 40404 → `NOT_FOUND` 40400, quota codes → `TOO_MANY_REQUESTS`),
/// except that an empty body is a BAD_REQUEST (its class head would say "too large").
pub(crate) fn nearest_known_to_rust(code: Code) -> Code {
    match code {
        Code::MessageBodyEmpty
        | Code::IllegalOffset
        | Code::IllegalLiteTopic
        | Code::InvalidClientProperties => Code::BadRequest,
        Code::OffsetNotFound => Code::NotFound,
        Code::LiteTopicQuotaExceeded | Code::LiteSubscriptionQuotaExceeded => Code::TooManyRequests,
        known => known,
    }
}

/// Fits one outgoing status to its receiver (see the module doc): [`normalize`], then for
/// `language == "RUST"` the [`nearest_known_to_rust`] code with the original one named in
/// the message.
pub(crate) fn for_client(language: &str, status: &mut Status) {
    normalize(status);
    if language != "RUST" {
        return;
    }
    let code = Code::try_from(status.code).unwrap_or(Code::InternalServerError);
    if !is_known_to_rust_5_0_0(code) {
        status.message = format!(
            "{} ({}): {}",
            code.as_str_name(),
            status.code,
            status.message
        );
        status.code = nearest_known_to_rust(code) as i32;
    }
}

/// A response (or stream frame) whose statuses are fitted to the client by [`for_client`]
/// before it leaves the proxy.
pub(crate) trait Statuses {
    /// Calls `f` on every status the value carries (top level and per entry).
    fn each_status(&mut self, f: &mut dyn FnMut(&mut Status));

    /// Applies [`for_client`] to every status.
    fn fit_for(&mut self, language: &str) {
        self.each_status(&mut |s| for_client(language, s));
    }
}

/// Whether the Rust `rocketmq` 5.0.0 client's `Code` enum has this value (it panics otherwise).
pub(crate) fn is_known_to_rust_5_0_0(code: Code) -> bool {
    !matches!(
        code,
        Code::IllegalOffset
            | Code::IllegalLiteTopic
            | Code::InvalidClientProperties
            | Code::OffsetNotFound
            | Code::MessageBodyEmpty
            | Code::LiteTopicQuotaExceeded
            | Code::LiteSubscriptionQuotaExceeded
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Golden table: how every failed broker call is reported.
    #[test]
    fn broker_call_failures_map_to_known_codes() {
        let table = [
            (tonic::Code::DeadlineExceeded, Code::ProxyTimeout),
            (tonic::Code::ResourceExhausted, Code::TooManyRequests),
            (tonic::Code::InvalidArgument, Code::BadRequest),
            (tonic::Code::NotFound, Code::NotFound),
            (tonic::Code::PermissionDenied, Code::Forbidden),
            (tonic::Code::Unauthenticated, Code::Unauthorized),
            (tonic::Code::FailedPrecondition, Code::PreconditionFailed),
            (tonic::Code::Unimplemented, Code::NotImplemented),
            (tonic::Code::Unavailable, Code::HaNotAvailable),
            (tonic::Code::Internal, Code::InternalServerError),
            (tonic::Code::Unknown, Code::InternalServerError),
            (tonic::Code::Cancelled, Code::HaNotAvailable),
        ];
        for (grpc, expected) in table {
            let f = from_broker_call(&tonic::Status::new(grpc, "boom"), "bs-a");
            assert_eq!(f.code, expected, "{grpc:?}");
            assert!(is_known_to_rust_5_0_0(f.code));
            assert!(f.message.contains("bs-a") && f.message.contains("boom"));
        }
        for grpc in [
            tonic::Code::InvalidArgument,
            tonic::Code::FailedPrecondition,
            tonic::Code::DeadlineExceeded,
            tonic::Code::Internal,
        ] {
            let f = from_topic_creation(&tonic::Status::new(grpc, "x"), "t");
            assert!(is_known_to_rust_5_0_0(f.code));
        }
    }

    #[test]
    fn a_broken_connection_is_ha_not_available_but_a_broker_sent_unknown_is_not() {
        let broken = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )));
        assert_eq!(broken.code(), tonic::Code::Unknown);
        assert_eq!(from_broker_call(&broken, "bs-a").code, Code::HaNotAvailable);
        let sent = tonic::Status::unknown("boom");
        assert_eq!(
            from_broker_call(&sent, "bs-a").code,
            Code::InternalServerError
        );
    }

    #[test]
    fn given_a_call_tonic_cancelled_when_mapped_should_be_a_timeout_or_a_retryable_failover() {
        let timed_out = tonic::Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(timed_out.code(), tonic::Code::Cancelled);
        assert_eq!(
            from_broker_call(&timed_out, "bs-a").code,
            Code::ProxyTimeout
        );
        // hyper's "operation was canceled": the connection closed under the call.
        let dropped = tonic::Status::cancelled("operation was canceled");
        assert_eq!(
            from_broker_call(&dropped, "bs-a").code,
            Code::HaNotAvailable
        );
    }

    #[test]
    fn undefined_numbers_are_rewritten_for_everyone() {
        for raw in [12345, 0, -1] {
            for lang in ["RUST", "PYTHON", "HTTP", ""] {
                let mut s = Status {
                    code: raw,
                    message: "m".into(),
                };
                for_client(lang, &mut s);
                assert_eq!(s.code, Code::InternalServerError as i32, "{raw} {lang}");
                assert!(s.message.contains(&raw.to_string()), "{}", s.message);
            }
        }
    }

    /// Golden table: every code of the current enum as a Rust 5.0.0 client and as any other
    /// client receives it.
    #[test]
    fn every_code_reaches_rust_as_a_code_it_knows_and_others_unchanged() {
        let newer = [
            (Code::IllegalOffset, Code::BadRequest),
            (Code::IllegalLiteTopic, Code::BadRequest),
            (Code::InvalidClientProperties, Code::BadRequest),
            (Code::OffsetNotFound, Code::NotFound),
            (Code::MessageBodyEmpty, Code::BadRequest),
            (Code::LiteTopicQuotaExceeded, Code::TooManyRequests),
            (Code::LiteSubscriptionQuotaExceeded, Code::TooManyRequests),
        ];
        for raw in 1..=70_000 {
            let Ok(code) = Code::try_from(raw) else {
                continue;
            };
            if code == Code::Unspecified {
                continue;
            }
            let mut other = status(code, "m");
            for_client("PYTHON", &mut other);
            assert_eq!(other, status(code, "m"), "{code:?} changed for Python");
            let mut rust = status(code, "m");
            for_client("RUST", &mut rust);
            let expected = newer
                .iter()
                .find(|(c, _)| *c == code)
                .map_or(code, |(_, r)| *r);
            assert_eq!(rust.code, expected as i32, "{code:?} for Rust");
            assert!(is_known_to_rust_5_0_0(expected));
            if expected != code {
                assert_eq!(
                    rust.message,
                    format!("{} ({raw}): m", code.as_str_name()),
                    "{code:?}"
                );
            } else {
                assert_eq!(rust.message, "m");
            }
        }
    }
}
