//! A counter the data path adds to without contention: one cache line per group of threads
//! (tokio's workers land on different lines), summed when read. Two workers adding to one
//! pool's counters on a shared line cost more than the rest of the metering (measured: ~4% of
//! the CPU per transaction at `pgbench -S -c 50` on 2 cores).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Lines per counter; threads beyond share them round-robin.
pub const SHARDS: usize = 8;

/// This thread's line.
#[inline]
pub fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    MINE.with(|mine| {
        let mut i = mine.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            mine.set(i);
        }
        i
    })
}

#[repr(align(128))]
#[derive(Default)]
struct Line(AtomicU64);

#[derive(Default)]
pub struct Counter {
    lines: [Line; SHARDS],
}

impl Counter {
    #[inline]
    pub fn fetch_add(&self, n: u64, order: Ordering) {
        self.add_at(shard(), n, order);
    }

    /// `fetch_add` on the line `shard()` gave, for a caller adding to several counters (one
    /// thread-local read instead of one per counter).
    #[inline]
    pub fn add_at(&self, shard: usize, n: u64, order: Ordering) {
        // In bounds by the modulo (SHARDS is a constant, so no check is compiled).
        self.lines[shard % SHARDS].0.fetch_add(n, order);
    }

    pub fn load(&self, order: Ordering) -> u64 {
        self.lines.iter().map(|l| l.0.load(order)).sum()
    }
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_add_up() {
        let c = std::sync::Arc::new(Counter::default());
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(c.load(Ordering::Relaxed), 12_000);
    }
}
