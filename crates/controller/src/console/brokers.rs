//! The brokers behind a topic: which broker sets hold it (and their masters' internal
//! addresses, from the metadata), one lazily connected channel per address, and their
//! in-body statuses as [`ApiError`]s that name the broker set. [`broker_targets`],
//! [`check_status`] and [`query_messages`] are shared with the `comet` admin commands.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::StatusCode;
use comet_proto::apache::rocketmq::v2;
use comet_proto::comet::v1::broker_service_client::BrokerServiceClient;
use comet_proto::comet::v1::query_message_request::Query as MessageQuery;
use comet_proto::comet::v1::{
    ClusterMetadata, GetBrokerStatusRequest, GetBrokerStatusResponse, QueryMessageRequest,
};
use comet_vocab::system;
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

use super::error::ApiError;

/// Largest internal reply accepted (query results carry whole messages).
const BROKER_MAX_MESSAGE: usize = 256 << 20;
/// How long one broker call may take.
const BROKER_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A broker set holding a topic, with its master's internal address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerTarget {
    /// The broker set.
    pub broker_set: String,
    /// Its live master's internal BrokerService address.
    pub address: String,
}

/// The address of `set`'s live master, if it has one.
pub(crate) fn master_address(meta: &ClusterMetadata, set: &str) -> Option<String> {
    let b = meta.broker_sets.iter().find(|b| b.name == set)?;
    b.members
        .iter()
        .find(|m| m.broker_id == b.master_broker_id && m.alive && !m.address.is_empty())
        .map(|m| m.address.clone())
}

/// The broker sets holding `topic` (qualified), optionally only `only`; dead-letter topics
/// live on every broker set with a live master.
///
/// # Errors
/// 404 for an unknown topic; 400 for a broker set that does not hold it; 503 when a broker
/// set has no live master.
pub fn broker_targets(
    meta: &ClusterMetadata,
    topic: &str,
    only: Option<&str>,
) -> Result<Vec<BrokerTarget>, ApiError> {
    let sets: Vec<String> = if topic.starts_with(system::DLQ_PREFIX) {
        meta.broker_sets
            .iter()
            .filter(|b| master_address(meta, &b.name).is_some())
            .map(|b| b.name.clone())
            .collect()
    } else {
        let Some(t) = meta.topics.iter().find(|t| t.name == topic) else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("topic {topic:?} does not exist"),
            ));
        };
        t.placements
            .iter()
            .filter(|p| p.queue_count > 0)
            .map(|p| p.broker_set.clone())
            .collect()
    };
    let sets: Vec<String> = match only {
        None => sets,
        Some(want) if sets.iter().any(|s| s == want) => vec![want.to_owned()],
        Some(want) => {
            return Err(ApiError::bad_request(format!(
                "topic {topic:?} has no queues on broker set {want:?} (it is on: {})",
                sets.join(", ")
            )));
        }
    };
    if sets.is_empty() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("topic {topic:?} has no queues on any broker set"),
        ));
    }
    sets.into_iter()
        .map(|name| match master_address(meta, &name) {
            Some(address) => Ok(BrokerTarget {
                broker_set: name,
                address,
            }),
            None => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("broker set {name:?} has no live master right now"),
            )),
        })
        .collect()
}

/// One lazily connected channel per broker address.
pub(crate) struct Channels {
    by_addr: Mutex<HashMap<String, Channel>>,
    connector: comet_auth::Connector,
}

impl Channels {
    /// No channel yet; they dial through `connector`.
    pub(crate) fn new(connector: comet_auth::Connector) -> Self {
        Channels {
            by_addr: Mutex::new(HashMap::new()),
            connector,
        }
    }

    /// A BrokerService client for `t` (the channel connects on first use).
    pub(crate) fn client(
        &self,
        t: &BrokerTarget,
    ) -> Result<BrokerServiceClient<Channel>, ApiError> {
        let mut map = self.by_addr.lock();
        let channel = match map.get(&t.address) {
            Some(c) => c.clone(),
            None => {
                let endpoint = Endpoint::from_shared(format!("http://{}", t.address))
                    .map_err(|e| {
                        ApiError::new(
                            StatusCode::BAD_GATEWAY,
                            format!(
                                "broker set {} registered a bad address {:?}: {e}",
                                t.broker_set, t.address
                            ),
                        )
                    })?
                    .connect_timeout(Duration::from_secs(3))
                    .timeout(BROKER_CALL_TIMEOUT);
                let c = self.connector.lazy_channel(&endpoint);
                map.insert(t.address.clone(), c.clone());
                c
            }
        };
        Ok(BrokerServiceClient::new(channel)
            .max_decoding_message_size(BROKER_MAX_MESSAGE)
            .max_encoding_message_size(BROKER_MAX_MESSAGE))
    }
}

/// How long the cluster page waits for one broker's status.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

impl Channels {
    /// The storage status of every live member of every broker set, asked concurrently; a
    /// member that does not answer within [`STATUS_TIMEOUT`] is left out.
    pub(crate) async fn statuses(
        &self,
        meta: &ClusterMetadata,
    ) -> HashMap<(String, u64), GetBrokerStatusResponse> {
        let calls = meta
            .broker_sets
            .iter()
            .flat_map(|s| s.members.iter())
            .filter(|m| m.alive && !m.address.is_empty())
            .filter_map(|m| {
                let t = BrokerTarget {
                    broker_set: m.broker_set.clone(),
                    address: m.address.clone(),
                };
                let mut client = self.client(&t).ok()?;
                let key = (m.broker_set.clone(), m.broker_id);
                Some(async move {
                    let reply = tokio::time::timeout(
                        STATUS_TIMEOUT,
                        client.get_broker_status(GetBrokerStatusRequest {}),
                    )
                    .await;
                    match reply {
                        Ok(Ok(r)) => Some((key, r.into_inner())),
                        Ok(Err(e)) => {
                            tracing::debug!(broker_set = %key.0, broker_id = key.1, error = %e.message(), "broker status unavailable");
                            None
                        }
                        Err(_) => None,
                    }
                })
            });
        futures::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

/// A failed broker call as a 502 naming the broker set.
pub(crate) fn call_error(t: &BrokerTarget, what: &str, s: &tonic::Status) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        format!(
            "{what} on broker set {} ({}): {} ({:?})",
            t.broker_set,
            t.address,
            s.message(),
            s.code()
        ),
    )
}

/// The broker's in-body status as a result: OK passes, anything else is an error naming it.
///
/// # Errors
/// A missing status or a code other than OK: 400 for a 4xxxx code, else 502.
pub fn check_status(t: &BrokerTarget, what: &str, s: Option<&v2::Status>) -> Result<(), ApiError> {
    let Some(s) = s else {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "{what} on broker set {}: the broker returned no status",
                t.broker_set
            ),
        ));
    };
    if s.code == v2::Code::Ok as i32 {
        return Ok(());
    }
    let name = v2::Code::try_from(s.code).map_or("UNKNOWN", |c| c.as_str_name());
    // Codes in the 40000s are the request's fault, the rest the broker's.
    let status = if (40000..50000).contains(&s.code) {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::BAD_GATEWAY
    };
    Err(ApiError::new(
        status,
        format!(
            "{what} on broker set {}: {name}: {}",
            t.broker_set, s.message
        ),
    ))
}

/// The messages of `topic` (qualified) that `query` finds on broker set `t` through `client`;
/// none when the broker answers MESSAGE_NOT_FOUND.
///
/// `request` makes the call's request (the console's is plain; the CLI signs its own).
///
/// # Errors
/// 502 naming the broker set when the call fails; the in-body status as [`check_status`].
pub async fn query_messages(
    client: &mut BrokerServiceClient<Channel>,
    t: &BrokerTarget,
    topic: &str,
    query: &MessageQuery,
    request: impl FnOnce(QueryMessageRequest) -> tonic::Request<QueryMessageRequest>,
) -> Result<Vec<v2::Message>, ApiError> {
    const WHAT: &str = "querying messages";
    let reply = client
        .query_message(request(QueryMessageRequest {
            topic: Some(internal(topic)),
            query: Some(query.clone()),
        }))
        .await
        .map_err(|s| call_error(t, WHAT, &s))?
        .into_inner();
    if reply
        .status
        .as_ref()
        .is_some_and(|s| s.code == v2::Code::MessageNotFound as i32)
    {
        return Ok(Vec::new());
    }
    check_status(t, WHAT, reply.status.as_ref())?;
    Ok(reply.messages)
}

/// A qualified name as an internal Resource (empty namespace, see broker.proto).
pub(crate) fn internal(qualified: &str) -> v2::Resource {
    v2::Resource {
        resource_namespace: String::new(),
        name: qualified.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use comet_proto::comet::v1::{BrokerMember, BrokerSet, QueuePlacement, Topic};

    fn meta() -> ClusterMetadata {
        let set = |name: &str, alive: bool| BrokerSet {
            name: name.into(),
            members: vec![BrokerMember {
                broker_set: name.into(),
                broker_id: 0,
                address: format!("{name}:10911"),
                alive,
                last_heartbeat_ms: 0,
            }],
            master_broker_id: 0,
            master_epoch: 1,
            sync_state_set: vec![0],
        };
        let placement = |b: &str| QueuePlacement {
            broker_set: b.into(),
            queue_count: 2,
        };
        ClusterMetadata {
            topics: vec![
                Topic {
                    name: "t".into(),
                    placements: vec![placement("a"), placement("b")],
                    ..Default::default()
                },
                Topic {
                    name: "solo".into(),
                    placements: vec![placement("dead")],
                    ..Default::default()
                },
            ],
            broker_sets: vec![set("a", true), set("b", true), set("dead", false)],
            ..Default::default()
        }
    }

    #[test]
    fn given_topics_when_targeted_should_find_live_masters_of_their_broker_sets() {
        let m = meta();
        let sets =
            |v: Vec<BrokerTarget>| -> Vec<String> { v.into_iter().map(|t| t.address).collect() };
        assert_eq!(
            sets(broker_targets(&m, "t", None).unwrap()),
            vec!["a:10911", "b:10911"]
        );
        assert_eq!(
            sets(broker_targets(&m, "%DLQ%g", None).unwrap()),
            vec!["a:10911", "b:10911"]
        );
        let e = broker_targets(&m, "t", Some("c")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = broker_targets(&m, "nope", None).unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let e = broker_targets(&m, "solo", None).unwrap_err();
        assert!(e.message.contains("no live master"), "{}", e.message);
    }
}
