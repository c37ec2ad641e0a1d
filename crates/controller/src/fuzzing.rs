//! Fuzz entry points for every decoder of bytes the controller reads from the network or its
//! disk.
//!
//! Built for the unit tests and behind the `fuzzing` feature (the `fuzz/` crate at the
//! repository root enables it); not part of the controller's API. Each target takes arbitrary
//! bytes and panics only on a real bug: a decoder that panics, or a decoded value that does not
//! survive re-encoding. [`TARGETS`] lists every target with seed inputs made by the real
//! encoders.
//!
//! Layout of the structured inputs:
//! - `remoting_frame`: a byte stream from a remoting client (length-prefixed frames).
//! - `route_data`: `kind u8 | JSON text` (topic route, cluster info or topic list body).
//! - `raft_log`: the bytes of a raft log segment (records of `len | crc | JSON entry`); the
//!   records also get valid checksums, so the entry decoder is reached.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use openraft::{CommittedLeaderId, EntryPayload};

use crate::metadata::Command;
use crate::raft_types::{Entry, LogId};
use crate::remoting::codec::{self, LanguageCode, RemotingCommand, SerializeType};
use crate::remoting::route_data::{
    self, BrokerData, ClusterInfo, JsonStyle, QueueData, TopicRouteData,
};
use crate::storage::log_store;

/// One fuzz target: a name (the `fuzz/` binary and corpus directory), the function under
/// test and seed inputs made by the encoders.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Target name.
    pub name: &'static str,
    /// Runs one input; panics only on a bug.
    pub run: fn(&[u8]),
    /// Valid encoded inputs to start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every controller target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "remoting_frame",
        run: remoting_frame,
        seeds: remoting_frame_seeds,
    },
    Target {
        name: "route_data",
        run: route_data,
        seeds: route_data_seeds,
    },
    Target {
        name: "raft_log",
        run: raft_log,
        seeds: raft_log_seeds,
    },
];

/// Remoting stream: frames split and decode as the server reads them; a command that decodes
/// encodes to a frame that decodes to the same command.
pub fn remoting_frame(data: &[u8]) {
    let _ = codec::decode_frame(Bytes::copy_from_slice(data));
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = codec::split_frame(&mut buf) {
        let Ok(cmd) = codec::decode_frame(frame) else {
            continue;
        };
        let mut out = BytesMut::new();
        if codec::encode(&cmd, &mut out).is_err() {
            continue;
        }
        let again = codec::split_frame(&mut out)
            .expect("an encoded frame splits")
            .expect("an encoded frame is complete");
        assert!(out.is_empty(), "one frame consumed exactly");
        let back = codec::decode_frame(again).expect("an encoded command decodes");
        assert_eq!(back, cmd, "remoting command round trip");
    }
}

fn sample_command(serialize_type: SerializeType) -> RemotingCommand {
    RemotingCommand {
        code: 105,
        language: LanguageCode::JAVA,
        version: 453,
        opaque: 42,
        flag: 0,
        remark: Some("fine".to_owned()),
        ext_fields: BTreeMap::from([
            ("topic".to_owned(), "TopicTest".to_owned()),
            ("acceptStandardJsonOnly".to_owned(), "true".to_owned()),
        ]),
        body: Bytes::from_static(b"{\"topicList\":[\"a\"]}"),
        serialize_type,
    }
}

/// Seeds of [`remoting_frame`].
pub fn remoting_frame_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for t in [SerializeType::Json, SerializeType::RocketMq] {
        let mut out = BytesMut::new();
        codec::encode(&sample_command(t), &mut out).expect("a sample command encodes");
        seeds.push(out.to_vec());
    }
    // A Java client's JSON header, with numbers, booleans and nulls in extFields.
    let header = br#"{"code":105,"extFields":{"topic":"TopicTest","acceptStandardJsonOnly":true,"n":3,"gone":null},"flag":0,"language":"JAVA","opaque":42,"serializeTypeCurrentRPC":"JSON","version":453}"#;
    let len = u32::try_from(header.len()).expect("short header");
    let mut java = (4 + len).to_be_bytes().to_vec();
    java.extend_from_slice(&len.to_be_bytes());
    java.extend_from_slice(header);
    seeds.push(java);
    seeds
}

/// Route data bodies (responses a remoting client parses, in fastjson or standard JSON): what
/// parses prints as JSON that parses back to the same value.
pub fn route_data(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let _ = route_data::quote_bare_keys(&text);
    match kind % 3 {
        0 => {
            if let Ok(r) = TopicRouteData::from_json(&text) {
                for style in [JsonStyle::Standard, JsonStyle::Legacy] {
                    let printed = r.to_json(style);
                    let back = TopicRouteData::from_json(&printed);
                    assert_eq!(back.as_ref().ok(), Some(&r), "route printed as {printed}");
                }
            }
        }
        1 => {
            if let Ok(c) = ClusterInfo::from_json(&text) {
                for style in [JsonStyle::Standard, JsonStyle::Legacy] {
                    let printed = c.to_json(style);
                    let back = ClusterInfo::from_json(&printed);
                    assert_eq!(back.as_ref().ok(), Some(&c), "cluster printed as {printed}");
                }
            }
        }
        _ => {
            if let Ok(t) = route_data::topic_list_from_json(&text) {
                let printed = route_data::topic_list_json(&t);
                let back = route_data::topic_list_from_json(&printed);
                assert_eq!(back.ok(), Some(t), "topic list printed as {printed}");
            }
        }
    }
}

/// Seeds of [`route_data`].
pub fn route_data_seeds() -> Vec<Vec<u8>> {
    let broker = BrokerData {
        cluster: "DefaultCluster".to_owned(),
        broker_name: "broker-a".to_owned(),
        broker_addrs: BTreeMap::from([(0, "127.0.0.1:10911".to_owned())]),
        zone_name: None,
        enable_acting_master: false,
    };
    let route = TopicRouteData {
        order_topic_conf: None,
        queue_datas: vec![QueueData {
            broker_name: "broker-a".to_owned(),
            read_queue_nums: 8,
            write_queue_nums: 8,
            perm: 6,
            topic_sys_flag: 0,
        }],
        broker_datas: vec![broker.clone()],
        filter_server_table: BTreeMap::new(),
    };
    let cluster = ClusterInfo {
        broker_addr_table: BTreeMap::from([("broker-a".to_owned(), broker)]),
        cluster_addr_table: BTreeMap::from([(
            "DefaultCluster".to_owned(),
            vec!["broker-a".to_owned()],
        )]),
    };
    let with_kind = |k: u8, s: String| [&[k][..], s.as_bytes()].concat();
    vec![
        with_kind(0, route.to_json(JsonStyle::Legacy)),
        with_kind(0, route.to_json(JsonStyle::Standard)),
        with_kind(1, cluster.to_json(JsonStyle::Legacy)),
        with_kind(
            2,
            route_data::topic_list_json(&["a".to_owned(), "b%c".to_owned()]),
        ),
    ]
}

/// Raft log segment: records split and verify as recovery reads them, entries decode; what
/// decodes frames and decodes back to the same entry.
pub fn raft_log(data: &[u8]) {
    for input in [data.to_vec(), with_valid_checksums(data)] {
        let mut off = 0;
        while let Ok((payload, len)) = log_store::parse_record(&input[off..]) {
            off += len;
            let Ok(entry) = serde_json::from_slice::<Entry>(payload) else {
                continue;
            };
            let json = serde_json::to_vec(&entry).expect("an entry serializes");
            let framed = log_store::frame(&json).expect("an entry frames");
            let (back, n) = log_store::parse_record(&framed).expect("a framed entry parses");
            assert_eq!(n, framed.len());
            let back: Entry = serde_json::from_slice(back).expect("a framed entry decodes");
            assert_eq!(
                serde_json::to_vec(&back).expect("an entry serializes"),
                json,
                "raft entry round trip"
            );
        }
    }
}

/// `data` with the checksum of every complete record (as its length fields cut them)
/// recomputed.
fn with_valid_checksums(data: &[u8]) -> Vec<u8> {
    let mut b = data.to_vec();
    let mut pos = 0usize;
    while let Some(h) = b.get(pos..pos + 8) {
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let Some(end) = (pos + 8).checked_add(len).filter(|e| *e <= b.len()) else {
            break;
        };
        let crc = crc32c::crc32c(&b[pos + 8..end]);
        b[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
        pos = end;
    }
    b
}

/// Seeds of [`raft_log`].
pub fn raft_log_seeds() -> Vec<Vec<u8>> {
    let log_id = |term, index| LogId::new(CommittedLeaderId::new(term, 0), index);
    let entries = [
        Entry {
            log_id: log_id(1, 1),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(1, 2),
            payload: EntryPayload::Normal(Command::DeleteTopic {
                name: "ns%orders".to_owned(),
            }),
        },
    ];
    let mut segment = Vec::new();
    for e in &entries {
        let json = serde_json::to_vec(e).expect("an entry serializes");
        segment.extend_from_slice(&log_store::frame(&json).expect("an entry frames"));
    }
    vec![segment]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs every target on its seeds and on every file under
    /// `tests/fuzz_regressions/<target>/` (inputs that once found a bug).
    #[test]
    fn given_seeds_and_fuzz_regressions_when_decoded_should_not_panic() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
        for t in TARGETS {
            let seeds = (t.seeds)();
            assert!(!seeds.is_empty(), "{} has seeds", t.name);
            for s in &seeds {
                (t.run)(s);
            }
            if let Ok(dir) = std::fs::read_dir(root.join(t.name)) {
                for f in dir.flatten() {
                    let data = std::fs::read(f.path()).expect("regression input is readable");
                    (t.run)(&data);
                }
            }
        }
    }

    #[test]
    fn given_seeds_when_decoded_should_be_accepted() {
        for s in remoting_frame_seeds() {
            let mut buf = BytesMut::from(&s[..]);
            let frame = codec::split_frame(&mut buf)
                .expect("splits")
                .expect("whole");
            assert!(codec::decode_frame(frame).is_ok());
        }
        for s in route_data_seeds() {
            let text = std::str::from_utf8(&s[1..]).expect("utf-8");
            let ok = match s[0] {
                0 => TopicRouteData::from_json(text).is_ok(),
                1 => ClusterInfo::from_json(text).is_ok(),
                _ => route_data::topic_list_from_json(text).is_ok(),
            };
            assert!(ok, "{text}");
        }
        for s in raft_log_seeds() {
            let (payload, _) = log_store::parse_record(&s).expect("a record");
            assert!(serde_json::from_slice::<Entry>(payload).is_ok());
        }
    }
}
