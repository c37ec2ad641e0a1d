//! Making the commitlog durable, per [`FlushPolicy`]:
//!
//! - ASYNC: one flusher thread syncs everything written every `interval`; an append returns
//!   once written (page cache) and reaches the disk within the interval.
//! - SYNC: an append returns only once its records are on disk. Appenders wait on the
//!   [`GroupCommit`], which batches them into pipelined fdatasyncs run by up to
//!   `sync_flushers` threads: one fdatasync per batch of waiting appends.
//!
//! The flushed offset only grows, and only after the bytes below it are synced; the
//! dispatcher reads it in SYNC mode, so no consumer sees a record a power loss could take.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustix::thread::futex;

use super::{Inner, MessageStore};
use crate::config::{FlushPolicy, MAX_SYNC_FLUSHERS};
use crate::error::Result;

/// Completion words of the group commit: sync number `n` signals on word `n % SYNC_WORDS`.
/// More words than syncs can run at once, so a wake-up is almost never meant for another sync
/// (and one that is only makes its waiters look again).
const SYNC_WORDS: usize = 2 * MAX_SYNC_FLUSHERS;

/// Group commit for SYNC flushing, pipelined over up to `max_in_flight` concurrent fdatasyncs.
///
/// An appender records how far it needs the log flushed, picks the sync that will cover it (a
/// running one whose target reaches its record, else the next one to start) and sleeps on that
/// sync's futex word. A flusher starts a sync covering everything written so far whenever some
/// appender is not covered by a running sync and fewer than `max_in_flight` run; when the sync
/// ends it bumps its word and wakes every sleeper on it with one `FUTEX_WAKE`, so waking a
/// group of 64 is one system call and the flusher is not preempted 64 times on the way.
/// Concurrent fdatasyncs of one file are safe (each covers every write made before it began),
/// and they overlap on the device.
pub(super) struct GroupCommit {
    state: Mutex<GroupState>,
    words: [AtomicU32; SYNC_WORDS],
    max_in_flight: usize,
}

struct GroupState {
    /// Highest record end any appender has asked to have flushed.
    requested: i64,
    /// Highest target of any sync started (running or done): every write below it is covered.
    started: i64,
    /// Number of the next sync to start.
    next_sync: u64,
    /// Running syncs: their number and target.
    running: Vec<(u64, i64)>,
    /// Flushers parked with nothing to start.
    idle: Vec<std::thread::Thread>,
    /// A flusher was unparked and has not looked at the state yet (it will cover every appender
    /// registered until then), so appenders need not wake another.
    wake_pending: bool,
}

impl GroupCommit {
    pub(super) fn new(max_in_flight: usize) -> Self {
        Self {
            state: Mutex::new(GroupState {
                requested: 0,
                started: 0,
                next_sync: 0,
                running: Vec::new(),
                idle: Vec::new(),
                wake_pending: false,
            }),
            words: std::array::from_fn(|_| AtomicU32::new(0)),
            max_in_flight: max_in_flight.clamp(1, MAX_SYNC_FLUSHERS),
        }
    }

    /// How many syncs may run at once (and so how many SYNC flusher threads run).
    pub(super) fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Wakes every parked flusher and every waiting appender (shutdown): flushers see the
    /// shutdown flag, appenders flush what they wait for themselves.
    pub(super) fn wake_for_shutdown(&self) {
        for t in self.state.lock().idle.drain(..) {
            t.unpark();
        }
        self.signal_all();
    }

    fn word(&self, sync: u64) -> &AtomicU32 {
        &self.words[(sync % SYNC_WORDS as u64) as usize]
    }

    /// Wakes everyone sleeping on `sync`'s word (after the flushed offset moved, or the sync
    /// failed).
    fn signal(&self, sync: u64) {
        let w = self.word(sync);
        w.fetch_add(1, Ordering::SeqCst);
        let _ = futex::wake(w, futex::Flags::PRIVATE, i32::MAX as u32);
    }

    /// Wakes every sleeper on every word (shutdown).
    fn signal_all(&self) {
        for n in 0..SYNC_WORDS as u64 {
            self.signal(n);
        }
    }
}

impl MessageStore {
    /// Flushes the commitlog to disk now.
    ///
    /// # Errors
    /// I/O errors of msync.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush_now()
    }
}

impl Inner {
    /// SYNC: waits until the log is durable up to `end` (a record end), joining the group
    /// commit; false after `timeout`.
    pub(super) fn wait_flushed(&self, end: i64, timeout: Duration) -> bool {
        if self.flushed.load(Ordering::Acquire) >= end {
            return true;
        }
        let deadline = Instant::now() + timeout;
        let gc = &self.group_commit;
        loop {
            let (sync, wake) = {
                let mut st = gc.state.lock();
                st.requested = st.requested.max(end);
                let covering = st
                    .running
                    .iter()
                    .filter(|(_, target)| *target >= end)
                    .map(|(n, _)| *n)
                    .min();
                match covering {
                    Some(n) => (n, None),
                    None if end <= st.started => (st.next_sync.saturating_sub(1), None),
                    // No running sync covers us: the next one to start will. If the pipeline
                    // has room, start it now, unless a flusher is already on its way.
                    None => {
                        let wake = if !st.wake_pending && st.running.len() < gc.max_in_flight {
                            let t = st.idle.pop();
                            st.wake_pending = t.is_some();
                            t
                        } else {
                            None
                        };
                        (st.next_sync, wake)
                    }
                }
            };
            // Read before the flushed offset: a sync bumps its word after moving the offset, so
            // either we see the offset below or the futex sees the new word and returns.
            let word = gc.word(sync);
            let seen = word.load(Ordering::SeqCst);
            if let Some(t) = wake {
                t.unpark();
            }
            loop {
                if self.flushed.load(Ordering::SeqCst) >= end {
                    return true;
                }
                if self.shutdown.load(Ordering::Acquire) {
                    return self.flush_now().is_ok() && self.flushed.load(Ordering::Acquire) >= end;
                }
                let now = Instant::now();
                if now >= deadline {
                    return false;
                }
                let left = deadline - now;
                let ts = rustix::fs::Timespec {
                    tv_sec: left.as_secs().try_into().unwrap_or(i64::MAX),
                    tv_nsec: left.subsec_nanos().into(),
                };
                // Returns when woken, when the word already moved, on timeout or on a signal.
                let _ = futex::wait(word, futex::Flags::PRIVATE, seen, Some(&ts));
                if word.load(Ordering::SeqCst) != seen {
                    break;
                }
            }
            // Our sync ended: covered (seen at the top of the loop) or failed (register again).
        }
    }

    /// Syncs everything written so far.
    pub(super) fn flush_now(&self) -> Result<()> {
        let target = self.log.write_pos();
        let from = self.flushed.load(Ordering::Acquire);
        if target <= from {
            return Ok(());
        }
        self.flush_to(from, target)
    }

    /// Syncs `[from, to)` of the log and advances the flushed offset to `to`.
    fn flush_to(&self, from: i64, to: i64) -> Result<()> {
        let started = Instant::now();
        self.log.flush_range(from, to)?;
        self.flushed.fetch_max(to, Ordering::AcqRel);
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.flush_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The ASYNC flusher: flushes everything written every `interval`.
    pub(super) fn run_flusher(&self) {
        let FlushPolicy::Async { interval } = self.cfg.flush else {
            return;
        };
        while !self.shutdown.load(Ordering::Acquire) {
            std::thread::park_timeout(interval);
            if self.shutdown.load(Ordering::Acquire) {
                return;
            }
            if let Err(e) = self.flush_now() {
                tracing::error!(error = %e, "commitlog flush failed; retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// One of the SYNC flushers (see [`GroupCommit`]).
    pub(super) fn run_sync_flusher(&self) {
        let gc = &self.group_commit;
        let me = std::thread::current();
        let mut st = gc.state.lock();
        while !self.shutdown.load(Ordering::Acquire) {
            // Looking at the state now covers every appender registered so far.
            st.wake_pending = false;
            if st.requested <= st.started || st.running.len() >= gc.max_in_flight {
                // Every appender is covered by a running sync, or the pipeline is full (a
                // running sync starts the next when it ends). An appender that needs a sync
                // unparks us.
                st.idle.push(me.clone());
                drop(st);
                std::thread::park_timeout(Duration::from_millis(500));
                st = gc.state.lock();
                st.idle.retain(|t| t.id() != me.id());
                continue;
            }
            // Every registered appender's record lies below the write position: it was written
            // before the appender registered under this lock.
            let target = self.log.write_pos();
            let from = self.flushed.load(Ordering::Acquire);
            let sync = st.next_sync;
            st.next_sync += 1;
            st.started = target;
            st.running.push((sync, target));
            drop(st);
            let res = self.flush_to(from, target);
            st = gc.state.lock();
            st.running.retain(|(n, _)| *n != sync);
            if let Err(e) = res {
                // Not durable: the next sync must cover this range again; our waiters register
                // again for it.
                st.started = st
                    .running
                    .iter()
                    .map(|(_, t)| *t)
                    .max()
                    .unwrap_or(0)
                    .max(self.flushed.load(Ordering::Acquire));
                drop(st);
                gc.signal(sync);
                tracing::error!(error = %e, "commitlog flush failed; retrying");
                std::thread::sleep(Duration::from_millis(100));
                st = gc.state.lock();
                continue;
            }
            drop(st);
            gc.signal(sync);
            self.dispatch_signal.notify();
            st = gc.state.lock();
        }
    }
}
