//! NameServer route data (`TopicRouteData`, `ClusterInfo`, `TopicList`):
//! derived from a [`ClusterMetadata`] snapshot, written as RocketMQ's JSON
//! and read back from either JSON form. Pure: no I/O.
//!
//! # Mapping from Comet metadata
//!
//! - One `QueueData` per placement of the topic whose broker set has an
//!   alive member: `brokerName` = broker-set name, read and write queue counts
//!   = `queue_count`, `perm` from the topic's permission (READ 4, WRITE 2,
//!   READ_WRITE 6, NONE 0), `topicSysFlag` 0.
//! - One `BrokerData` per such broker set: `cluster` = cluster name,
//!   `brokerAddrs` = broker id → address of each *alive* member. RocketMQ
//!   clients send to id 0, so the master is always listed under 0: ids 0 and
//!   `master_broker_id` swap keys when they differ (identity while broker id 0
//!   is the master).
//! - A broker set without an alive member leaves the route, as a broker that
//!   stopped heartbeating leaves a NameServer's tables; a topic left without
//!   any broker set has no route (TOPIC_NOT_EXIST, as the Java NameServer).
//! - `ClusterInfo` lists the broker sets with an alive member under the
//!   cluster name; `TopicList` every topic's qualified name (`<ns>%<name>`,
//!   exactly what namespaced 4.x clients ask for).
//!
//! # JSON forms ([`JsonStyle`])
//!
//! fastjson writes the `Long` keys of `brokerAddrs` unquoted (`{0:"ip:port"}`,
//! not valid JSON): [`JsonStyle::Legacy`]. Clients that declare a version
//! of at least 401 (4.9.4) or `acceptStandardJsonOnly=true` get standard JSON
//! ([`JsonStyle::Standard`]). Only `brokerAddrs` keys differ between the two;
//! broker and cluster names are always quoted strings. The readers accept
//! both forms.

use std::collections::BTreeMap;

use comet_proto::apache::rocketmq::v2::Permission;
use comet_proto::comet::v1::{BrokerSet, ClusterMetadata, Topic};
use serde::Deserialize;

use crate::error::ControllerError;

/// `perm` bit: readable.
pub const PERM_READ: u32 = 4;
/// `perm` bit: writable.
pub const PERM_WRITE: u32 = 2;
/// First `MQVersion` ordinal (4.9.4) whose clients read standard JSON.
pub const STANDARD_JSON_VERSION: i32 = 401;

/// Which JSON a reply uses for `brokerAddrs` keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonStyle {
    /// fastjson's default: numeric keys unquoted (`{0:"10.0.0.1:10911"}`).
    Legacy,
    /// Standard JSON (`{"0":"10.0.0.1:10911"}`).
    Standard,
}

impl JsonStyle {
    /// The style the Java NameServer picks for a request: standard JSON for
    /// `version >= 401` or `acceptStandardJsonOnly`, else legacy.
    pub fn for_request(version: i32, accept_standard_json_only: bool) -> JsonStyle {
        if version >= STANDARD_JSON_VERSION || accept_standard_json_only {
            JsonStyle::Standard
        } else {
            JsonStyle::Legacy
        }
    }
}

/// A topic's queues on one broker (`QueueData`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueData {
    /// Broker-set name.
    pub broker_name: String,
    /// Readable queues.
    pub read_queue_nums: u32,
    /// Writable queues.
    pub write_queue_nums: u32,
    /// Permission bits ([`PERM_READ`], [`PERM_WRITE`]).
    pub perm: u32,
    /// Topic system flag (always 0 here).
    #[serde(default)]
    pub topic_sys_flag: u32,
}

/// One broker set and its members' addresses (`BrokerData`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerData {
    /// Cluster name.
    pub cluster: String,
    /// Broker-set name.
    pub broker_name: String,
    /// Broker id → `host:port`; id 0 is the master.
    pub broker_addrs: BTreeMap<u64, String>,
    /// Zone (unused: null).
    pub zone_name: Option<String>,
    /// RocketMQ 5 acting-master flag (always false).
    pub enable_acting_master: bool,
}

/// A topic's route (`TopicRouteData`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicRouteData {
    /// Strict-order configuration (unused: null).
    pub order_topic_conf: Option<String>,
    /// Queues per broker set.
    pub queue_datas: Vec<QueueData>,
    /// The broker sets holding them.
    pub broker_datas: Vec<BrokerData>,
    /// Filter servers by broker address (always empty).
    pub filter_server_table: BTreeMap<String, Vec<String>>,
}

/// Every broker set of the cluster (`ClusterInfo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterInfo {
    /// Broker data by broker-set name.
    pub broker_addr_table: BTreeMap<String, BrokerData>,
    /// Broker-set names by cluster name.
    pub cluster_addr_table: BTreeMap<String, Vec<String>>,
}

/// Why a topic has no route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoRoute {
    /// No such topic.
    UnknownTopic,
    /// The topic exists but none of its broker sets has an alive member.
    NoLiveBroker,
}

// ------------------------------------------------------------ from metadata

/// RocketMQ perm bits of a topic permission (UNSPECIFIED reads as READ_WRITE).
pub fn perm_bits(permission: i32) -> u32 {
    match Permission::try_from(permission) {
        Ok(Permission::Read) => PERM_READ,
        Ok(Permission::Write) => PERM_WRITE,
        Ok(Permission::None) => 0,
        Ok(Permission::ReadWrite | Permission::Unspecified) | Err(_) => PERM_READ | PERM_WRITE,
    }
}

/// The `BrokerData` of a broker set, or `None` when no member is alive.
pub fn broker_data(cluster: &str, set: &BrokerSet) -> Option<BrokerData> {
    let master = set.master_broker_id;
    let broker_addrs: BTreeMap<u64, String> = set
        .members
        .iter()
        .filter(|m| m.alive && !m.address.is_empty())
        .map(|m| {
            let key = if m.broker_id == master {
                0
            } else if m.broker_id == 0 {
                master
            } else {
                m.broker_id
            };
            (key, m.address.clone())
        })
        .collect();
    if broker_addrs.is_empty() {
        return None;
    }
    Some(BrokerData {
        cluster: cluster.to_owned(),
        broker_name: set.name.clone(),
        broker_addrs,
        zone_name: None,
        enable_acting_master: false,
    })
}

/// The route of `topic` (a qualified name).
pub fn topic_route(meta: &ClusterMetadata, topic: &str) -> Result<TopicRouteData, NoRoute> {
    let t: &Topic = meta
        .topics
        .iter()
        .find(|t| t.name == topic)
        .ok_or(NoRoute::UnknownTopic)?;
    let perm = perm_bits(t.permission);
    let mut queue_datas = Vec::new();
    let mut broker_datas = Vec::new();
    for p in &t.placements {
        let Some(data) = meta
            .broker_sets
            .iter()
            .find(|s| s.name == p.broker_set)
            .and_then(|s| broker_data(&meta.cluster_name, s))
        else {
            continue;
        };
        queue_datas.push(QueueData {
            broker_name: p.broker_set.clone(),
            read_queue_nums: p.queue_count,
            write_queue_nums: p.queue_count,
            perm,
            topic_sys_flag: 0,
        });
        broker_datas.push(data);
    }
    if queue_datas.is_empty() {
        return Err(NoRoute::NoLiveBroker);
    }
    Ok(TopicRouteData {
        order_topic_conf: None,
        queue_datas,
        broker_datas,
        filter_server_table: BTreeMap::new(),
    })
}

/// Every broker set with an alive member, under the cluster name.
pub fn cluster_info(meta: &ClusterMetadata) -> ClusterInfo {
    let mut broker_addr_table = BTreeMap::new();
    for set in &meta.broker_sets {
        if let Some(data) = broker_data(&meta.cluster_name, set) {
            broker_addr_table.insert(set.name.clone(), data);
        }
    }
    let mut cluster_addr_table = BTreeMap::new();
    if !broker_addr_table.is_empty() {
        cluster_addr_table.insert(
            meta.cluster_name.clone(),
            broker_addr_table.keys().cloned().collect(),
        );
    }
    ClusterInfo {
        broker_addr_table,
        cluster_addr_table,
    }
}

/// Every topic's qualified name, sorted.
pub fn topic_list(meta: &ClusterMetadata) -> Vec<String> {
    let mut names: Vec<String> = meta.topics.iter().map(|t| t.name.clone()).collect();
    names.sort();
    names
}

// ------------------------------------------------------------------ writing

fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.push_str("null"),
    }
}

fn push_list<T>(out: &mut String, items: &[T], mut each: impl FnMut(&mut String, &T)) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        each(out, item);
    }
    out.push(']');
}

fn push_queue_data(out: &mut String, q: &QueueData) {
    out.push_str("{\"brokerName\":");
    push_str(out, &q.broker_name);
    out.push_str(&format!(
        ",\"readQueueNums\":{},\"writeQueueNums\":{},\"perm\":{},\"topicSysFlag\":{}}}",
        q.read_queue_nums, q.write_queue_nums, q.perm, q.topic_sys_flag
    ));
}

fn push_broker_data(out: &mut String, b: &BrokerData, style: JsonStyle) {
    out.push_str("{\"cluster\":");
    push_str(out, &b.cluster);
    out.push_str(",\"brokerName\":");
    push_str(out, &b.broker_name);
    out.push_str(",\"brokerAddrs\":{");
    for (i, (id, addr)) in b.broker_addrs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match style {
            JsonStyle::Legacy => out.push_str(&id.to_string()),
            JsonStyle::Standard => push_str(out, &id.to_string()),
        }
        out.push(':');
        push_str(out, addr);
    }
    out.push_str("},\"zoneName\":");
    push_opt_str(out, b.zone_name.as_deref());
    out.push_str(&format!(
        ",\"enableActingMaster\":{}}}",
        b.enable_acting_master
    ));
}

fn push_string_list_map(out: &mut String, map: &BTreeMap<String, Vec<String>>) {
    out.push('{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, k);
        out.push(':');
        push_list(out, v, |o, s| push_str(o, s));
    }
    out.push('}');
}

impl TopicRouteData {
    /// The JSON body in `style`.
    pub fn to_json(&self, style: JsonStyle) -> String {
        let mut out = String::with_capacity(256);
        out.push_str("{\"orderTopicConf\":");
        push_opt_str(&mut out, self.order_topic_conf.as_deref());
        out.push_str(",\"queueDatas\":");
        push_list(&mut out, &self.queue_datas, push_queue_data);
        out.push_str(",\"brokerDatas\":");
        push_list(&mut out, &self.broker_datas, |o, b| {
            push_broker_data(o, b, style);
        });
        out.push_str(",\"filterServerTable\":");
        push_string_list_map(&mut out, &self.filter_server_table);
        out.push('}');
        out
    }

    /// Reads a `TopicRouteData` body in either JSON form.
    ///
    /// # Errors
    /// [`ControllerError::Body`] when it is not route data.
    pub fn from_json(text: &str) -> Result<TopicRouteData, ControllerError> {
        let raw: RawTopicRouteData = parse_either(text, "TopicRouteData")?;
        Ok(TopicRouteData {
            order_topic_conf: raw.order_topic_conf,
            queue_datas: raw.queue_datas.unwrap_or_default(),
            broker_datas: raw
                .broker_datas
                .unwrap_or_default()
                .into_iter()
                .map(RawBrokerData::into_data)
                .collect::<Result<_, _>>()?,
            filter_server_table: raw.filter_server_table.unwrap_or_default(),
        })
    }
}

impl ClusterInfo {
    /// The JSON body in `style`.
    pub fn to_json(&self, style: JsonStyle) -> String {
        let mut out = String::with_capacity(256);
        out.push_str("{\"brokerAddrTable\":{");
        for (i, (name, data)) in self.broker_addr_table.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_str(&mut out, name);
            out.push(':');
            push_broker_data(&mut out, data, style);
        }
        out.push_str("},\"clusterAddrTable\":");
        push_string_list_map(&mut out, &self.cluster_addr_table);
        out.push('}');
        out
    }

    /// Reads a `ClusterInfo` body in either JSON form.
    ///
    /// # Errors
    /// [`ControllerError::Body`] when it is not cluster info.
    pub fn from_json(text: &str) -> Result<ClusterInfo, ControllerError> {
        let raw: RawClusterInfo = parse_either(text, "ClusterInfo")?;
        Ok(ClusterInfo {
            broker_addr_table: raw
                .broker_addr_table
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| v.into_data().map(|d| (k, d)))
                .collect::<Result<_, _>>()?,
            cluster_addr_table: raw.cluster_addr_table.unwrap_or_default(),
        })
    }
}

/// The `TopicList` JSON body.
pub fn topic_list_json(topics: &[String]) -> String {
    let mut out = String::from("{\"topicList\":");
    push_list(&mut out, topics, |o, s| push_str(o, s));
    out.push('}');
    out
}

/// Reads a `TopicList` body.
///
/// # Errors
/// [`ControllerError::Body`] when it is not a topic list.
pub fn topic_list_from_json(text: &str) -> Result<Vec<String>, ControllerError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Raw {
        #[serde(default)]
        topic_list: Vec<String>,
    }
    let raw: Raw = parse_either(text, "TopicList")?;
    Ok(raw.topic_list)
}

// ------------------------------------------------------------------ reading

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTopicRouteData {
    #[serde(default)]
    order_topic_conf: Option<String>,
    #[serde(default)]
    queue_datas: Option<Vec<QueueData>>,
    #[serde(default)]
    broker_datas: Option<Vec<RawBrokerData>>,
    #[serde(default)]
    filter_server_table: Option<BTreeMap<String, Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBrokerData {
    #[serde(default)]
    cluster: String,
    broker_name: String,
    #[serde(default)]
    broker_addrs: BTreeMap<String, String>,
    #[serde(default)]
    zone_name: Option<String>,
    #[serde(default)]
    enable_acting_master: bool,
}

impl RawBrokerData {
    fn into_data(self) -> Result<BrokerData, ControllerError> {
        let broker_addrs = self
            .broker_addrs
            .into_iter()
            .map(|(k, v)| {
                k.parse::<u64>()
                    .map(|id| (id, v))
                    .map_err(|_| ControllerError::Body {
                        reason: format!(
                            "brokerAddrs of {} has a key {k:?} that is not a broker id",
                            self.broker_name
                        ),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(BrokerData {
            cluster: self.cluster,
            broker_name: self.broker_name,
            broker_addrs,
            zone_name: self.zone_name,
            enable_acting_master: self.enable_acting_master,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawClusterInfo {
    #[serde(default)]
    broker_addr_table: Option<BTreeMap<String, RawBrokerData>>,
    #[serde(default)]
    cluster_addr_table: Option<BTreeMap<String, Vec<String>>>,
}

fn parse_either<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &str,
) -> Result<T, ControllerError> {
    let standard = quote_bare_keys(text)?;
    serde_json::from_str(&standard).map_err(|e| ControllerError::Body {
        reason: format!("not a {what}: {e}"),
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Container {
    /// In an object; `true` while the next token is a key.
    Object(bool),
    Array,
}

/// Rewrites fastjson's unquoted object keys (`{0:"a"}`) as standard JSON
/// (`{"0":"a"}`); standard JSON passes through unchanged.
///
/// # Errors
/// [`ControllerError::Body`] for a bare key with characters other than
/// `[A-Za-z0-9_.-]`, or unbalanced brackets.
pub fn quote_bare_keys(text: &str) -> Result<String, ControllerError> {
    let bad = |reason: String| ControllerError::Body { reason };
    let mut out = String::with_capacity(text.len() + 16);
    let mut stack: Vec<Container> = Vec::new();
    let mut chars = text.char_indices().peekable();
    let mut in_string = false;
    while let Some((i, c)) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                '\\' => {
                    if let Some((_, next)) = chars.next() {
                        out.push(next);
                    }
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                if let Some(Container::Object(expect_key)) = stack.last_mut() {
                    *expect_key = false;
                }
                out.push(c);
            }
            '{' => {
                stack.push(Container::Object(true));
                out.push(c);
            }
            '[' => {
                stack.push(Container::Array);
                out.push(c);
            }
            '}' | ']' => {
                let want = if c == '}' {
                    matches!(stack.pop(), Some(Container::Object(_)))
                } else {
                    matches!(stack.pop(), Some(Container::Array))
                };
                if !want {
                    return Err(bad(format!("unbalanced {c:?} at byte {i}")));
                }
                out.push(c);
            }
            ',' => {
                if let Some(Container::Object(expect_key)) = stack.last_mut() {
                    *expect_key = true;
                }
                out.push(c);
            }
            c if c.is_whitespace() => out.push(c),
            c if matches!(stack.last(), Some(Container::Object(true))) => {
                let mut key = String::from(c);
                while let Some(&(_, n)) = chars.peek() {
                    if n == ':' || n.is_whitespace() {
                        break;
                    }
                    key.push(n);
                    chars.next();
                }
                if !key
                    .chars()
                    .all(|k| k.is_ascii_alphanumeric() || matches!(k, '_' | '-' | '.'))
                {
                    return Err(bad(format!("unexpected object key {key:?} at byte {i}")));
                }
                if let Some(Container::Object(expect_key)) = stack.last_mut() {
                    *expect_key = false;
                }
                out.push('"');
                out.push_str(&key);
                out.push('"');
            }
            c => out.push(c),
        }
    }
    if !stack.is_empty() || in_string {
        return Err(bad("unterminated JSON".to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;
    use comet_proto::comet::v1::{BrokerMember, QueuePlacement, TopicMessageType};
    use proptest::prelude::*;

    fn member(set: &str, id: u64, alive: bool) -> BrokerMember {
        BrokerMember {
            broker_set: set.into(),
            broker_id: id,
            address: format!("10.0.0.{id}:10911"),
            alive,
            last_heartbeat_ms: 0,
        }
    }

    fn meta() -> ClusterMetadata {
        ClusterMetadata {
            revision: 3,
            cluster_name: "DefaultCluster".into(),
            topics: vec![
                Topic {
                    name: "ns%orders".into(),
                    message_type: TopicMessageType::Normal as i32,
                    placements: vec![
                        QueuePlacement {
                            broker_set: "a".into(),
                            queue_count: 8,
                        },
                        QueuePlacement {
                            broker_set: "b".into(),
                            queue_count: 4,
                        },
                        QueuePlacement {
                            broker_set: "down".into(),
                            queue_count: 2,
                        },
                    ],
                    permission: Permission::Read as i32,
                    attributes: Default::default(),
                },
                Topic {
                    name: "dead".into(),
                    message_type: TopicMessageType::Normal as i32,
                    placements: vec![QueuePlacement {
                        broker_set: "down".into(),
                        queue_count: 2,
                    }],
                    permission: 0,
                    attributes: Default::default(),
                },
            ],
            groups: vec![],
            broker_sets: vec![
                BrokerSet {
                    name: "a".into(),
                    members: vec![member("a", 0, true), member("a", 1, true)],
                    master_broker_id: 0,
                    master_epoch: 1,
                    sync_state_set: vec![0, 1],
                },
                BrokerSet {
                    name: "b".into(),
                    // Broker 2 is master after an election; 0 is a replica, 1 is down.
                    members: vec![
                        member("b", 0, true),
                        member("b", 1, false),
                        member("b", 2, true),
                    ],
                    master_broker_id: 2,
                    master_epoch: 2,
                    sync_state_set: vec![2],
                },
                BrokerSet {
                    name: "down".into(),
                    members: vec![member("down", 0, false)],
                    master_broker_id: 0,
                    master_epoch: 0,
                    sync_state_set: vec![],
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn given_a_topic_on_three_sets_when_routed_should_list_live_sets_with_the_master_at_id_0() {
        let r = topic_route(&meta(), "ns%orders").unwrap();
        let queues: Vec<(&str, u32, u32)> = r
            .queue_datas
            .iter()
            .map(|q| (q.broker_name.as_str(), q.write_queue_nums, q.perm))
            .collect();
        assert_eq!(queues, [("a", 8, PERM_READ), ("b", 4, PERM_READ)]);
        assert_eq!(r.broker_datas.len(), 2);
        assert_eq!(
            r.broker_datas[0].broker_addrs,
            BTreeMap::from([(0, "10.0.0.0:10911".into()), (1, "10.0.0.1:10911".into())])
        );
        assert_eq!(
            r.broker_datas[1].broker_addrs,
            BTreeMap::from([(0, "10.0.0.2:10911".into()), (2, "10.0.0.0:10911".into())]),
            "master 2 is listed as 0, replica 0 takes key 2, dead member 1 is gone"
        );
        assert_eq!(r.broker_datas[1].cluster, "DefaultCluster");
        assert_eq!(
            topic_route(&meta(), "dead").unwrap_err(),
            NoRoute::NoLiveBroker
        );
        assert_eq!(
            topic_route(&meta(), "nope").unwrap_err(),
            NoRoute::UnknownTopic
        );
    }

    #[test]
    fn given_permissions_when_mapped_should_use_rocketmq_bits() {
        assert_eq!(perm_bits(Permission::Read as i32), 4);
        assert_eq!(perm_bits(Permission::Write as i32), 2);
        assert_eq!(perm_bits(Permission::ReadWrite as i32), 6);
        assert_eq!(perm_bits(Permission::Unspecified as i32), 6);
        assert_eq!(perm_bits(Permission::None as i32), 0);
    }

    #[test]
    fn given_route_data_when_written_should_match_the_contract_in_both_styles() {
        let r = TopicRouteData {
            order_topic_conf: None,
            queue_datas: vec![QueueData {
                broker_name: "broker-a".into(),
                read_queue_nums: 8,
                write_queue_nums: 8,
                perm: 6,
                topic_sys_flag: 0,
            }],
            broker_datas: vec![BrokerData {
                cluster: "c".into(),
                broker_name: "broker-a".into(),
                broker_addrs: BTreeMap::from([(0, "10.0.0.1:10911".into()), (1, "x:1".into())]),
                zone_name: None,
                enable_acting_master: false,
            }],
            filter_server_table: BTreeMap::new(),
        };
        let legacy = r.to_json(JsonStyle::Legacy);
        assert_eq!(
            legacy,
            r#"{"orderTopicConf":null,"queueDatas":[{"brokerName":"broker-a","readQueueNums":8,"writeQueueNums":8,"perm":6,"topicSysFlag":0}],"brokerDatas":[{"cluster":"c","brokerName":"broker-a","brokerAddrs":{0:"10.0.0.1:10911",1:"x:1"},"zoneName":null,"enableActingMaster":false}],"filterServerTable":{}}"#
        );
        assert!(
            serde_json::from_str::<serde_json::Value>(&legacy).is_err(),
            "legacy is not JSON"
        );
        let standard = r.to_json(JsonStyle::Standard);
        let v: serde_json::Value = serde_json::from_str(&standard).unwrap();
        assert_eq!(
            v["brokerDatas"][0]["brokerAddrs"]["0"],
            serde_json::json!("10.0.0.1:10911")
        );
        assert_eq!(TopicRouteData::from_json(&legacy).unwrap(), r);
        assert_eq!(TopicRouteData::from_json(&standard).unwrap(), r);
    }

    #[test]
    fn given_cluster_info_when_written_should_name_live_sets_under_the_cluster() {
        let info = cluster_info(&meta());
        assert_eq!(
            info.broker_addr_table.keys().collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(
            info.cluster_addr_table["DefaultCluster"],
            vec!["a".to_owned(), "b".to_owned()]
        );
        for style in [JsonStyle::Legacy, JsonStyle::Standard] {
            assert_eq!(ClusterInfo::from_json(&info.to_json(style)).unwrap(), info);
        }
        let standard: serde_json::Value =
            serde_json::from_str(&info.to_json(JsonStyle::Standard)).unwrap();
        assert_eq!(
            standard["brokerAddrTable"]["b"]["brokerAddrs"]["0"],
            "10.0.0.2:10911"
        );
    }

    #[test]
    fn given_topics_when_listed_should_round_trip() {
        let names = topic_list(&meta());
        assert_eq!(names, ["dead", "ns%orders"]);
        let json = topic_list_json(&names);
        assert_eq!(json, r#"{"topicList":["dead","ns%orders"]}"#);
        assert_eq!(topic_list_from_json(&json).unwrap(), names);
    }

    #[test]
    fn given_odd_json_when_read_should_fail_cleanly() {
        assert!(TopicRouteData::from_json("{").is_err());
        assert!(TopicRouteData::from_json("}").is_err());
        assert!(
            TopicRouteData::from_json(
                r#"{"brokerDatas":[{"brokerName":"a","brokerAddrs":{x y:"1"}}]}"#
            )
            .is_err()
        );
        assert!(
            TopicRouteData::from_json(
                r#"{"brokerDatas":[{"brokerName":"a","brokerAddrs":{"x":"1"}}]}"#
            )
            .is_err()
        );
        // Strings that look like keys are left alone.
        assert_eq!(
            quote_bare_keys(r#"{"k":"{0:1}", 5 : [ {7:"v"} ]}"#).unwrap(),
            r#"{"k":"{0:1}", "5" : [ {"7":"v"} ]}"#
        );
        assert_eq!(quote_bare_keys(r#"{"a\"b":1}"#).unwrap(), r#"{"a\"b":1}"#);
    }

    fn arb_broker_data() -> impl Strategy<Value = BrokerData> {
        (
            "[a-zA-Z0-9_.-]{1,12}",
            "[a-zA-Z0-9_.-]{1,12}",
            proptest::collection::btree_map(any::<u64>(), "[ -~]{1,24}", 0..4),
            proptest::option::of("[a-z\"\\\\]{0,6}"),
            any::<bool>(),
        )
            .prop_map(|(cluster, broker_name, broker_addrs, zone_name, acting)| {
                BrokerData {
                    cluster,
                    broker_name,
                    broker_addrs,
                    zone_name,
                    enable_acting_master: acting,
                }
            })
    }

    proptest! {
        #[test]
        fn prop_route_data_round_trips_in_both_styles(
            brokers in proptest::collection::vec(arb_broker_data(), 0..4),
            queues in proptest::collection::vec(("[a-z0-9]{1,8}", 0u32..2048, 0u32..16), 0..4),
            conf in proptest::option::of("[a-z:;0-9]{0,12}"),
        ) {
            let r = TopicRouteData {
                order_topic_conf: conf,
                queue_datas: queues
                    .into_iter()
                    .map(|(n, q, p)| QueueData {
                        broker_name: n,
                        read_queue_nums: q,
                        write_queue_nums: q,
                        perm: p,
                        topic_sys_flag: 0,
                    })
                    .collect(),
                broker_datas: brokers,
                filter_server_table: BTreeMap::new(),
            };
            for style in [JsonStyle::Legacy, JsonStyle::Standard] {
                prop_assert_eq!(&TopicRouteData::from_json(&r.to_json(style)).unwrap(), &r);
            }
        }

        #[test]
        fn prop_cluster_info_round_trips_in_both_styles(
            brokers in proptest::collection::vec(arb_broker_data(), 0..4),
        ) {
            let mut info = ClusterInfo {
                broker_addr_table: BTreeMap::new(),
                cluster_addr_table: BTreeMap::new(),
            };
            for b in brokers {
                info.cluster_addr_table.entry(b.cluster.clone()).or_default().push(b.broker_name.clone());
                info.broker_addr_table.insert(b.broker_name.clone(), b);
            }
            for style in [JsonStyle::Legacy, JsonStyle::Standard] {
                prop_assert_eq!(&ClusterInfo::from_json(&info.to_json(style)).unwrap(), &info);
            }
        }

        #[test]
        fn prop_random_text_never_panics_the_readers(s in ".{0,200}") {
            let _ = quote_bare_keys(&s);
            let _ = TopicRouteData::from_json(&s);
            let _ = ClusterInfo::from_json(&s);
        }
    }
}
