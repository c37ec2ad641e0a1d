//! Model-based property test: random sequences of appends, batch appends, reads, queue reads,
//! clean restarts, crashes and torn tails, checked against a plain in-memory model.
//!
//! The model is a list of every message the store acknowledged, with the offsets the store
//! returned. After each step the store must agree with it: every acknowledged message readable
//! and identical, queue offsets dense and in order. A torn tail (bytes at the end of the written
//! log zeroed or garbled after a crash that no checkpoint covered) removes from the model the
//! records it touches, and the rest of their batch, exactly as recovery must.

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use comet_store::{Message, MessageStore, StoreConfig};
use common::{msg, small_config};
use proptest::prelude::*;

const QUEUES: i32 = 3;
const SEGMENT: i64 = 64 * 1024;

#[derive(Debug, Clone)]
enum Op {
    Append { queue: i32, body: usize },
    AppendBatch { queue: i32, n: usize, body: usize },
    Read { pick: usize },
    ReadQueue { queue: i32, from: i64 },
    Restart,
    Crash,
    TornTail { cut: i64, garbage: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..QUEUES, 0usize..3000).prop_map(|(queue, body)| Op::Append { queue, body }),
        2 => (0..QUEUES, 1usize..6, 0usize..1500)
            .prop_map(|(queue, n, body)| Op::AppendBatch { queue, n, body }),
        3 => any::<usize>().prop_map(|pick| Op::Read { pick }),
        2 => (0..QUEUES, 0i64..40).prop_map(|(queue, from)| Op::ReadQueue { queue, from }),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
        1 => (1i64..4000, any::<bool>()).prop_map(|(cut, garbage)| Op::TornTail { cut, garbage }),
    ]
}

#[derive(Debug, Clone)]
struct Acked {
    msg: Message,
    phys: i64,
    size: i64,
    queue_offset: i64,
    batch: u64,
}

struct Harness {
    dir: tempfile::TempDir,
    store: Option<MessageStore>,
    model: Vec<Acked>,
    next_n: u64,
    next_batch: u64,
}

fn config(dir: &Path) -> StoreConfig {
    let mut c = small_config(dir);
    // Long intervals: the test decides when things happen.
    c.checkpoint_interval = Duration::from_secs(3600);
    // A nearly full developer or CI disk must not refuse the appends.
    c.retention.disk_high_watermark = 0.995;
    c.retention.disk_refuse_watermark = 0.999;
    c
}

impl Harness {
    fn store(&self) -> &MessageStore {
        self.store.as_ref().expect("store is open")
    }

    fn next_queue_offset(&self, queue: i32) -> i64 {
        self.model
            .iter()
            .filter(|a| a.msg.queue_id == queue)
            .map(|a| a.queue_offset + 1)
            .max()
            .unwrap_or(0)
    }

    fn append(&mut self, msgs: Vec<Message>) {
        let batch = self.next_batch;
        self.next_batch += 1;
        let results = self.store().append_batch(&msgs).expect("append");
        assert_eq!(results.len(), msgs.len());
        let mut expect_next = HashMap::new();
        for (m, r) in msgs.into_iter().zip(results) {
            let q = m.queue_id;
            let want = *expect_next
                .entry(q)
                .or_insert_with(|| self.next_queue_offset(q));
            assert_eq!(r.queue_offset, want, "queue offsets are dense");
            expect_next.insert(q, want + 1);
            if let Some(prev) = self.model.last() {
                assert!(r.physical_offset >= prev.phys + prev.size, "log only grows");
            }
            self.model.push(Acked {
                msg: m,
                phys: r.physical_offset,
                size: i64::from(r.size),
                queue_offset: r.queue_offset,
                batch,
            });
        }
    }

    fn reopen(&mut self) {
        self.store = Some(MessageStore::open(config(self.dir.path())).expect("reopen"));
    }

    fn check_all(&self) {
        let store = self.store();
        let end = self.model.last().map_or(0, |a| a.phys + a.size);
        assert!(
            store.wait_dispatched(end, Duration::from_secs(10)),
            "dispatch stalled"
        );
        for a in &self.model {
            let got = store.read(a.phys).expect("acknowledged message readable");
            assert_eq!(got.message, a.msg);
            assert_eq!(got.queue_offset, a.queue_offset);
        }
        for q in 0..QUEUES {
            assert_eq!(
                store.max_offset("model", q),
                self.next_queue_offset(q),
                "queue {q}"
            );
        }
    }

    fn torn_tail(&mut self, cut: i64, garbage: bool) {
        let store = self.store.take().expect("open");
        let end = store.stats().write_offset;
        store.abandon();
        if end == 0 {
            self.reopen();
            return;
        }
        let seg_start = (end - 1) / SEGMENT * SEGMENT;
        let from = (end - cut).max(seg_start);
        let path = self
            .dir
            .path()
            .join("commitlog")
            .join(format!("{seg_start:020}"));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("segment");
        f.seek(SeekFrom::Start((from - seg_start) as u64))
            .expect("seek");
        let fill = if garbage { 0xA5u8 } else { 0 };
        f.write_all(&vec![fill; (end - from) as usize])
            .expect("tear");
        drop(f);
        // The crash came before any checkpoint covered the torn records.
        let _ = fs::remove_file(self.dir.path().join("checkpoint"));
        // Records touched by the tear are lost, and with them the rest of their batch.
        if let Some(first_lost) = self.model.iter().position(|a| a.phys + a.size > from) {
            let batch = self.model[first_lost].batch;
            let start = self.model[..first_lost]
                .iter()
                .rposition(|a| a.batch != batch)
                .map_or(0, |i| i + 1);
            self.model.truncate(start);
        }
        self.reopen();
        let rep = self.store().recovery_report();
        let expected_end = self.model.last().map_or(0, |a| a.phys + a.size);
        assert!(
            rep.valid_end >= expected_end && rep.valid_end <= from.max(expected_end),
            "recovered end {} outside [{expected_end}, {from}]",
            rep.valid_end
        );
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Append { queue, body } => {
                let m = msg("model", queue, self.next_n, body);
                self.next_n += 1;
                self.append(vec![m]);
            }
            Op::AppendBatch { queue, n, body } => {
                let msgs = (0..n)
                    .map(|i| {
                        let q = (queue + i as i32) % QUEUES;
                        self.next_n += 1;
                        msg("model", q, self.next_n, body)
                    })
                    .collect();
                self.append(msgs);
            }
            Op::Read { pick } => {
                if !self.model.is_empty() {
                    let a = &self.model[pick % self.model.len()];
                    assert_eq!(self.store().read(a.phys).expect("read").message, a.msg);
                }
            }
            Op::ReadQueue { queue, from } => {
                let end = self.model.last().map_or(0, |a| a.phys + a.size);
                assert!(self.store().wait_dispatched(end, Duration::from_secs(10)));
                let got = self
                    .store()
                    .get_messages("model", queue, from, 50, |_| true)
                    .expect("get");
                let want: Vec<&Acked> = self
                    .model
                    .iter()
                    .filter(|a| a.msg.queue_id == queue && a.queue_offset >= from)
                    .take(50)
                    .collect();
                assert_eq!(got.messages.len(), want.len());
                for (g, w) in got.messages.iter().zip(want) {
                    assert_eq!((g.queue_offset, &g.message), (w.queue_offset, &w.msg));
                }
            }
            Op::Restart => {
                if let Some(s) = self.store.take() {
                    s.close().expect("close");
                }
                self.reopen();
                assert!(!self.store().recovery_report().truncated);
                self.check_all();
            }
            Op::Crash => {
                if let Some(s) = self.store.take() {
                    s.abandon();
                }
                self.reopen();
                self.check_all();
            }
            Op::TornTail { cut, garbage } => {
                self.torn_tail(cut, garbage);
                self.check_all();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        max_shrink_iters: 200,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn store_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MessageStore::open(config(dir.path())).expect("open");
        let mut h = Harness { dir, store: Some(store), model: Vec::new(), next_n: 0, next_batch: 0 };
        for op in ops {
            h.apply(op);
        }
        h.check_all();
        // Appends keep working after whatever happened.
        h.apply(Op::Append { queue: 0, body: 10 });
        h.check_all();
    }
}
