//! QueryRoute, auto-create and QueryAssignment.

use std::sync::{Arc, OnceLock};

use comet_proto::apache::rocketmq::v2::{
    AddressScheme, Code, MessageType, Permission, QueryAssignmentRequest, QueryRouteRequest,
};
use comet_proto::comet::v1::{ClusterMetadata, Topic, TopicMessageType};
use comet_proxy::TopicCreator;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::harness::{Harness, bare, broker_set, default_metadata, req, res, res_ns};

#[tokio::test]
async fn given_a_mixed_topic_when_querying_the_route_should_list_every_queue_at_this_proxy() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let r = c
        .query_route(req(QueryRouteRequest {
            topic: res("mixed"),
            endpoints: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, Code::Ok as i32);
    let anonymous = c
        .query_route(bare(QueryRouteRequest {
            topic: res("mixed"),
            endpoints: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        anonymous.status.unwrap().code,
        Code::ClientIdRequired as i32,
        "upstream requires the client id on every RPC"
    );
    assert!(anonymous.message_queues.is_empty());
    let queues: Vec<(String, i32)> = r
        .message_queues
        .iter()
        .map(|q| (q.broker.as_ref().unwrap().name.clone(), q.id))
        .collect();
    assert_eq!(
        queues,
        vec![
            ("a".to_owned(), 0),
            ("a".to_owned(), 1),
            ("b".to_owned(), 0),
            ("b".to_owned(), 1)
        ]
    );
    for q in &r.message_queues {
        let topic = q.topic.as_ref().unwrap();
        assert_eq!(
            (topic.name.as_str(), topic.resource_namespace.as_str()),
            ("mixed", "")
        );
        assert_eq!(q.permission, Permission::ReadWrite as i32);
        let broker = q.broker.as_ref().unwrap();
        assert_eq!(broker.id, 0);
        let ep = broker.endpoints.as_ref().unwrap();
        assert_eq!(ep.scheme, AddressScheme::IPv4 as i32);
        assert_eq!(ep.addresses.len(), 1);
        assert_eq!(ep.addresses[0].host, "127.0.0.1");
        assert_eq!(ep.addresses[0].port, i32::from(h.addr.port()));
        assert_eq!(
            q.accept_message_types,
            vec![
                MessageType::Normal as i32,
                MessageType::Fifo as i32,
                MessageType::Delay as i32,
                MessageType::Transaction as i32
            ]
        );
    }
}

#[tokio::test]
async fn given_typed_topics_when_querying_routes_should_accept_only_that_type() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    for (name, ty) in [
        ("normal", MessageType::Normal),
        ("fifo", MessageType::Fifo),
        ("delay", MessageType::Delay),
    ] {
        let r = c
            .query_route(req(QueryRouteRequest {
                topic: res(name),
                endpoints: None,
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(r.message_queues[0].id == 0);
        assert!(
            r.message_queues
                .iter()
                .all(|q| q.accept_message_types == vec![ty as i32]),
            "{name}"
        );
    }
}

#[tokio::test]
async fn given_an_unknown_topic_when_querying_the_route_should_answer_topic_not_found() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let r = c
        .query_route(req(QueryRouteRequest {
            topic: res("nope"),
            endpoints: None,
        }))
        .await
        .unwrap()
        .into_inner();
    let s = r.status.unwrap();
    assert_eq!(s.code, Code::TopicNotFound as i32);
    assert_eq!(s.message, "topic nope does not exist");
    assert!(r.message_queues.is_empty());

    let r = c
        .query_route(req(QueryRouteRequest {
            topic: res_ns("ns9", "nope"),
            endpoints: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status.unwrap().message,
        "topic nope in namespace ns9 does not exist"
    );
}

#[tokio::test]
async fn given_a_namespace_when_querying_the_route_should_resolve_the_qualified_topic() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    // Via the Resource.
    let r = c
        .query_route(req(QueryRouteRequest {
            topic: res_ns("ns1", "scoped"),
            endpoints: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, Code::Ok as i32);
    let t = r.message_queues[0].topic.clone().unwrap();
    assert_eq!(
        (t.resource_namespace.as_str(), t.name.as_str()),
        ("ns1", "scoped")
    );
    // Via the x-mq-namespace header (Node leaves the Resource namespace empty).
    let mut request = req(QueryRouteRequest {
        topic: res("scoped"),
        endpoints: None,
    });
    request
        .metadata_mut()
        .insert("x-mq-namespace", "ns1".parse().unwrap());
    let r = c.query_route(request).await.unwrap().into_inner();
    assert_eq!(r.status.unwrap().code, Code::Ok as i32);
    assert_eq!(
        r.message_queues[0]
            .topic
            .clone()
            .unwrap()
            .resource_namespace,
        "ns1"
    );
}

/// A creator that adds the topic to the watched metadata, as the controller would.
struct WatchCreator {
    tx: OnceLock<watch::Sender<Arc<ClusterMetadata>>>,
    created: Mutex<Vec<Topic>>,
}

#[tonic::async_trait]
impl TopicCreator for WatchCreator {
    async fn create_topic(&self, t: Topic) -> Result<(), tonic::Status> {
        self.created.lock().push(t.clone());
        let tx = self.tx.get().expect("sender installed");
        tx.send_modify(|md| {
            let mut next = (**md).clone();
            next.revision += 1;
            next.topics.push(t);
            *md = Arc::new(next);
        });
        Ok(())
    }
}

#[tokio::test]
async fn given_auto_create_when_querying_an_unknown_topic_should_create_it_on_live_sets() {
    let creator = Arc::new(WatchCreator {
        tx: OnceLock::new(),
        created: Mutex::new(vec![]),
    });
    let mut md = default_metadata();
    md.broker_sets.push(broker_set("dead", false));
    let h = Harness::builder()
        .metadata(md)
        .config(|c| {
            c.auto_create_topics = true;
            c.default_queue_count = 3;
        })
        .creator(creator.clone())
        .start()
        .await;
    creator.tx.set(h.metadata.clone()).unwrap();
    let mut c = h.client().await;
    let r = c
        .query_route(req(QueryRouteRequest {
            topic: res_ns("ns2", "fresh"),
            endpoints: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, Code::Ok as i32);
    assert_eq!(r.message_queues.len(), 6);
    let created = creator.created.lock().clone();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].name, "ns2%fresh");
    assert_eq!(created[0].message_type, TopicMessageType::Mixed as i32);
    let sets: Vec<&str> = created[0]
        .placements
        .iter()
        .map(|p| p.broker_set.as_str())
        .collect();
    assert_eq!(sets, vec!["a", "b"]);
}

#[tokio::test]
async fn given_a_topic_when_querying_assignments_should_use_any_queue_or_every_queue_for_fifo() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let r = c
        .query_assignment(req(QueryAssignmentRequest {
            topic: res("mixed"),
            group: res("plain-group"),
            endpoints: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, Code::Ok as i32);
    let got: Vec<(String, i32)> = r
        .assignments
        .iter()
        .map(|a| {
            let q = a.message_queue.as_ref().unwrap();
            (q.broker.as_ref().unwrap().name.clone(), q.id)
        })
        .collect();
    assert_eq!(got, vec![("a".to_owned(), -1), ("b".to_owned(), -1)]);
    for a in &r.assignments {
        let q = a.message_queue.as_ref().unwrap();
        assert_eq!(q.permission, Permission::ReadWrite as i32);
        assert_eq!(
            q.broker
                .as_ref()
                .unwrap()
                .endpoints
                .as_ref()
                .unwrap()
                .addresses
                .len(),
            1
        );
    }

    let r = c
        .query_assignment(req(QueryAssignmentRequest {
            topic: res("fifo"),
            group: res("fifo-group"),
            endpoints: None,
        }))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<i32> = r
        .assignments
        .iter()
        .map(|a| a.message_queue.as_ref().unwrap().id)
        .collect();
    assert_eq!(ids, vec![0, 1, 2, 3]);
}
