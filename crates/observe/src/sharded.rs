//! Sharded counters for the hot path: each thread adds to its own cache line, a collection
//! sums the shards. No lock and no shared cache line is touched per message.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// One shard on its own cache line (128 bytes covers adjacent-line prefetching).
#[repr(align(128))]
#[derive(Debug, Default)]
struct Shard(AtomicU64);

/// How many shards a cell has: the next power of two above the CPU count, at most 64.
fn shard_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(4)
            .next_power_of_two()
            .clamp(2, 64)
    })
}

/// The calling thread's shard slot, assigned round-robin on first use.
fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SLOT.with(|s| *s)
}

/// A monotonically increasing sum, added to from any thread without contention.
#[derive(Debug)]
pub struct ShardedCounter {
    shards: Box<[Shard]>,
}

impl Default for ShardedCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl ShardedCounter {
    /// A counter at zero.
    pub fn new() -> Self {
        ShardedCounter {
            shards: (0..shard_count()).map(|_| Shard::default()).collect(),
        }
    }

    /// Adds `n` on the calling thread's shard.
    #[inline]
    pub fn add(&self, n: u64) {
        let i = thread_slot() & (self.shards.len() - 1);
        self.shards[i].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The sum of every shard (each shard read once; concurrent adds may or may not be seen).
    pub fn sum(&self) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |acc, s| acc.wrapping_add(s.0.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn given_adds_from_many_threads_when_summed_should_count_every_one() {
        let c = Arc::new(ShardedCounter::new());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.add(3);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("adder thread");
        }
        assert_eq!(c.sum(), 8 * 1000 * 3);
    }
}
