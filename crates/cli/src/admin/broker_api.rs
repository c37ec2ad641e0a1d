//! Commands over the brokers' internal API: `comet offset reset|progress` and
//! `comet message id|key|offset`.
//!
//! Each reads the cluster metadata from the controller to find the broker sets holding a
//! topic, then calls each set's master on its internal BrokerService address (the `address` a
//! broker registered; over mutual TLS when `tls.internal_mode` says so) and merges the
//! answers. Broker calls are signed like the controller's ([`super::Signer`]).

use anyhow::bail;
use comet_proto::apache::rocketmq::v2 as pb;
use comet_proto::comet::v1::query_message_request::Query;
use comet_proto::comet::v1::reset_offset_request::Target as ResetTarget;
use comet_proto::comet::v1::{
    GetConsumerProgressRequest, KeyQuery, QueueOffsetQuery, ResetOffsetRequest,
};
use serde_json::{Value, json};

use super::args::{AdminTarget, MessageCommand, OffsetCommand};
use super::controller_api::{connect, metadata};
use super::fanout::{
    broker_call_error, broker_client, broker_targets, check_status, single_target,
};
use super::parse::{parse_time, qualify, timestamp};
use super::render::message_json;

/// Runs a `comet offset` command.
pub async fn offset(target: &AdminTarget, cmd: &OffsetCommand) -> anyhow::Result<Value> {
    let (client, signer) = connect(target)?;
    let meta = metadata(&client).await?;
    let ns = &target.namespace;
    match cmd {
        OffsetCommand::Reset(spec) => {
            let group = qualify(ns, &spec.group)?;
            let topic = qualify(ns, &spec.topic)?;
            let reset_target = match (&spec.timestamp, spec.offset) {
                (Some(t), _) => ResetTarget::Timestamp(timestamp(parse_time(t)?)),
                (None, Some(o)) => ResetTarget::Offset(o),
                (None, None) => bail!("give --timestamp or --offset"),
            };
            let targets = match spec.queue {
                Some(_) => vec![single_target(&meta, &topic, spec.broker_set.as_deref())?],
                None => broker_targets(&meta, &topic, spec.broker_set.as_deref())?,
            };
            let mut sets = Vec::new();
            for t in &targets {
                let mut c = broker_client(t, client.connector()).await?;
                let reply = c
                    .reset_offset(signer.sign(ResetOffsetRequest {
                        group: Some(internal(&group)),
                        topic: Some(internal(&topic)),
                        queue_id: spec.queue.unwrap_or(-1),
                        target: Some(reset_target),
                    }))
                    .await
                    .map_err(|s| broker_call_error(t, "resetting offsets", s))?
                    .into_inner();
                check_status(t, "resetting offsets", reply.status.as_ref())?;
                sets.push(json!({
                    "broker_set": t.broker_set,
                    "queues": reply.queues.iter().map(|q| json!({
                        "queue_id": q.queue_id,
                        "previous_offset": (q.previous_offset >= 0).then_some(q.previous_offset),
                        "offset": q.offset,
                        "dropped_inflight": q.dropped_inflight,
                    })).collect::<Vec<_>>(),
                }));
            }
            Ok(json!({"group": group, "topic": topic, "broker_sets": sets}))
        }
        OffsetCommand::Progress(spec) => {
            let group = qualify(ns, &spec.group)?;
            let topic = qualify(ns, &spec.topic)?;
            let mut queues = Vec::new();
            let (mut backlog, mut inflight) = (0i64, 0i64);
            for t in broker_targets(&meta, &topic, None)? {
                let mut c = broker_client(&t, client.connector()).await?;
                let reply = c
                    .get_consumer_progress(signer.sign(GetConsumerProgressRequest {
                        group: Some(internal(&group)),
                        topic: Some(internal(&topic)),
                    }))
                    .await
                    .map_err(|s| broker_call_error(&t, "reading consumer progress", s))?
                    .into_inner();
                check_status(&t, "reading consumer progress", reply.status.as_ref())?;
                for q in &reply.queues {
                    backlog += q.backlog;
                    inflight += q.inflight;
                    queues.push(json!({
                        "broker_set": t.broker_set,
                        "queue_id": q.queue_id,
                        "min_offset": q.min_offset,
                        "max_offset": q.max_offset,
                        "consume_offset": (q.consume_offset >= 0).then_some(q.consume_offset),
                        "backlog": q.backlog,
                        "inflight": q.inflight,
                    }));
                }
            }
            Ok(json!({
                "group": group,
                "topic": topic,
                "backlog": backlog,
                "inflight": inflight,
                "queues": queues,
            }))
        }
    }
}

/// Runs a `comet message` command. Finding nothing is not an error: `messages` is empty.
pub async fn message(target: &AdminTarget, cmd: &MessageCommand) -> anyhow::Result<Value> {
    let (client, signer) = connect(target)?;
    let meta = metadata(&client).await?;
    let ns = &target.namespace;
    let (topic, query, targets) = match cmd {
        MessageCommand::Id(q) => {
            let topic = qualify(ns, &q.topic)?;
            if q.message_id.is_empty() {
                bail!("the message id is empty");
            }
            let targets = broker_targets(&meta, &topic, None)?;
            (topic, Query::MessageId(q.message_id.clone()), targets)
        }
        MessageCommand::Key(q) => {
            let topic = qualify(ns, &q.topic)?;
            if q.key.is_empty() {
                bail!("the key is empty");
            }
            if !(1..=1000).contains(&q.max) {
                bail!("--max must be within 1..=1000, got {}", q.max);
            }
            let begin = q.begin.as_deref().map(parse_time).transpose()?;
            let end = q.end.as_deref().map(parse_time).transpose()?;
            if let (Some(b), Some(e)) = (begin, end)
                && b > e
            {
                bail!("--begin ({b} ms) is after --end ({e} ms)");
            }
            let targets = broker_targets(&meta, &topic, None)?;
            let key = KeyQuery {
                key: q.key.clone(),
                begin: begin.map(timestamp),
                end: end.map(timestamp),
                max: i32::try_from(q.max).unwrap_or(1000),
            };
            (topic, Query::Key(key), targets)
        }
        MessageCommand::Offset(q) => {
            let topic = qualify(ns, &q.topic)?;
            if q.queue < 0 {
                bail!("--queue must not be negative");
            }
            let t = single_target(&meta, &topic, q.broker_set.as_deref())?;
            let query = Query::QueueOffset(QueueOffsetQuery {
                queue_id: q.queue,
                offset: q.offset,
            });
            (topic, query, vec![t])
        }
    };
    let mut messages = Vec::new();
    for t in &targets {
        let mut c = broker_client(t, client.connector()).await?;
        let found = comet_controller::console::query_messages(&mut c, t, &topic, &query, |r| {
            signer.sign(r)
        })
        .await?;
        messages.extend(found.iter().map(|m| message_json(&t.broker_set, m)));
    }
    Ok(json!({"topic": topic, "count": messages.len(), "messages": messages}))
}

/// A qualified name as an internal Resource (empty namespace, see broker.proto).
fn internal(qualified: &str) -> pb::Resource {
    pb::Resource {
        resource_namespace: String::new(),
        name: qualified.to_owned(),
    }
}
