//! The dashboard's memory of the last minutes: every `SAMPLE_EVERY` a sampler task reads each
//! pool (SHOW POOLS' numbers, plus the window's transactions per second, transaction latency
//! percentiles and average wait) and each replica (its lag) into a ring of `KEEP` samples.
//! Bounded: `KEEP` samples per pool and replica, and one latency snapshot per pool that had
//! transactions (about 9 KB), dropped with the pool.

use crate::admin::view;
use crate::frontend::Shared;
use crate::stats::{histogram, now_us, PoolStats};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Five minutes of samples.
pub const KEEP: usize = 150;

/// A ring: pushing onto a full one drops the oldest.
#[derive(Debug, Clone)]
pub struct Ring<T> {
    items: VecDeque<T>,
    cap: usize,
}

impl<T> Ring<T> {
    pub fn new(cap: usize) -> Ring<T> {
        Ring {
            items: VecDeque::with_capacity(cap.min(16)),
            cap: cap.max(1),
        }
    }

    pub fn push(&mut self, item: T) {
        while self.items.len() >= self.cap {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }

    /// Oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    pub fn last(&self) -> Option<&T> {
        self.items.back()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// One pool at one moment (`t`: seconds since pgmux started).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PoolSample {
    pub t: u32,
    pub cl_active: u32,
    pub cl_waiting: u32,
    pub sv_active: u32,
    pub sv_idle: u32,
    pub sv_used: u32,
    /// Transactions per second since the previous sample.
    pub tps: f32,
    /// Transaction latency percentiles of the window, µs (0: no transaction).
    pub xact_p50_us: u32,
    pub xact_p95_us: u32,
    pub xact_p99_us: u32,
    /// Average wait for a server per assignment in the window, µs.
    pub wait_us: u32,
}

/// One replica at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReplicaSample {
    pub t: u32,
    pub lag_bytes: u64,
    pub lag_seconds: f32,
}

/// A pool's ring and the totals at its last sample.
pub struct PoolTrack {
    pub ring: Ring<PoolSample>,
    xacts: u64,
    wait_time: u64,
    assignments: u64,
    /// The transaction latency histogram at the last sample that saw transactions.
    latency: Vec<u64>,
    at: Instant,
}

pub type PoolKey = (String, String);
pub type ReplicaKey = (String, String, u16);

#[derive(Default)]
pub struct History {
    pools: Mutex<HashMap<PoolKey, PoolTrack>>,
    replicas: Mutex<HashMap<ReplicaKey, Ring<ReplicaSample>>>,
}

fn clamp(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn now_secs() -> u32 {
    clamp(now_us() / 1_000_000)
}

impl History {
    /// Reads `f` with the pools' tracks (the sampler waits meanwhile: keep it short).
    pub fn with_pools<R>(&self, f: impl FnOnce(&HashMap<PoolKey, PoolTrack>) -> R) -> R {
        f(&self.pools.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn with_replicas<R>(&self, f: impl FnOnce(&HashMap<ReplicaKey, Ring<ReplicaSample>>) -> R) -> R {
        f(&self.replicas.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Takes one sample of every pool and replica; forgets those that are gone.
    pub fn sample(&self, shared: &Shared) {
        let t = now_secs();
        let views = view::pools(shared);
        let mut tracks = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        tracks.retain(|(db, user), _| views.iter().any(|v| &v.database == db && &v.user == user));
        for v in &views {
            let key = (v.database.clone(), v.user.clone());
            let track = tracks.entry(key).or_insert_with(|| PoolTrack::new(&v.pool.stats));
            let sample = track.next(t, &v.pool.stats);
            track.ring.push(PoolSample {
                cl_active: v.cl_active,
                cl_waiting: v.cl_waiting,
                sv_active: v.sv_active,
                sv_idle: clamp(v.sv_idle as u64),
                sv_used: clamp(v.sv_used as u64),
                ..sample
            });
        }
        drop(tracks);
        let replicas = view::replicas(shared);
        let mut rings = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
        rings.retain(|(db, host, port), _| {
            replicas
                .iter()
                .any(|r| &r.database == db && &r.host == host && r.port == *port)
        });
        for r in replicas {
            let ring = rings
                .entry((r.database, r.host, r.port))
                .or_insert_with(|| Ring::new(KEEP));
            ring.push(ReplicaSample {
                t,
                lag_bytes: r.report.lag_bytes,
                lag_seconds: r.report.lag_seconds as f32,
            });
        }
    }

    pub fn clear(&self) {
        self.pools.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.replicas.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl PoolTrack {
    fn new(stats: &PoolStats) -> PoolTrack {
        let xacts = PoolStats::get(&stats.xacts);
        PoolTrack {
            ring: Ring::new(KEEP),
            xacts,
            wait_time: PoolStats::get(&stats.wait_time),
            assignments: PoolStats::get(&stats.server_assignments),
            // A pool that never ran a transaction has an empty histogram: nothing to copy.
            latency: if xacts > 0 {
                stats.xact_latency.snapshot()
            } else {
                Vec::new()
            },
            at: Instant::now(),
        }
    }

    /// The window since the last sample (`t` and the rates; the caller fills in the counts).
    fn next(&mut self, t: u32, stats: &PoolStats) -> PoolSample {
        let secs = self.at.elapsed().as_secs_f64();
        self.at = Instant::now();
        let xacts = PoolStats::get(&stats.xacts);
        let (wait_time, assignments) = (
            PoolStats::get(&stats.wait_time),
            PoolStats::get(&stats.server_assignments),
        );
        if xacts < self.xacts {
            self.latency.clear(); // a pool made anew: its histogram starts empty too
        }
        let done = xacts.saturating_sub(self.xacts);
        let waits = wait_time.saturating_sub(self.wait_time);
        let assigned = assignments.saturating_sub(self.assignments);
        (self.xacts, self.wait_time, self.assignments) = (xacts, wait_time, assignments);
        let mut sample = PoolSample {
            t,
            tps: if secs > 0.0 { (done as f64 / secs) as f32 } else { 0.0 },
            wait_us: clamp(waits.checked_div(assigned).unwrap_or(0)),
            ..PoolSample::default()
        };
        // Only a window with transactions has latencies to read (and a histogram to copy).
        if done > 0 {
            let now = stats.xact_latency.snapshot();
            if let Some([p50, p95, p99]) = histogram::percentiles(&now, &self.latency) {
                (sample.xact_p50_us, sample.xact_p95_us, sample.xact_p99_us) = (clamp(p50), clamp(p95), clamp(p99));
            }
            self.latency = now;
        }
        sample
    }
}

/// Samples every `SAMPLE_EVERY` while the dashboard is on (read again each time, so a reload
/// applies); the memory is let go while it is off.
pub async fn run(shared: std::sync::Arc<Shared>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let on = {
            let m = &shared.config.load().metrics;
            m.dashboard && !m.listen.is_empty()
        };
        if on {
            shared.dashboard.history.sample(&shared);
        } else {
            shared.dashboard.history.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_ring_keeps_the_newest() {
        let mut ring = Ring::new(3);
        assert!(ring.is_empty());
        for i in 0..10 {
            ring.push(i);
            assert!(ring.len() <= 3);
        }
        assert_eq!(ring.iter().copied().collect::<Vec<_>>(), [7, 8, 9]);
        assert_eq!(ring.last(), Some(&9));
        let mut one = Ring::new(0);
        one.push(1);
        one.push(2);
        assert_eq!(
            one.iter().copied().collect::<Vec<_>>(),
            [2],
            "a ring holds at least one"
        );
    }

    #[test]
    fn a_window_reports_its_own_transactions() {
        let stats = PoolStats::default();
        stats.xacts.fetch_add(5, Ordering::Relaxed);
        for _ in 0..5 {
            stats.xact_latency.record(100_000); // before the track: not in any window
        }
        let mut track = PoolTrack::new(&stats);
        let idle = track.next(1, &stats);
        assert_eq!((idle.t, idle.tps, idle.xact_p99_us, idle.wait_us), (1, 0.0, 0, 0));
        stats.xacts.fetch_add(100, Ordering::Relaxed);
        stats.server_assignments.fetch_add(10, Ordering::Relaxed);
        stats.wait_time.fetch_add(5_000, Ordering::Relaxed);
        for _ in 0..100 {
            stats.xact_latency.record(2_000);
        }
        std::thread::sleep(Duration::from_millis(20));
        let busy = track.next(2, &stats);
        assert!(busy.tps > 0.0);
        assert!(busy.xact_p50_us.abs_diff(2_000) < 100, "{busy:?}");
        assert!(busy.xact_p99_us.abs_diff(2_000) < 100, "{busy:?}");
        assert_eq!(busy.wait_us, 500);
        // Counters that go back (a pool made anew) give an empty window, not a huge one.
        let stats = PoolStats::default();
        let after = track.next(3, &stats);
        assert_eq!((after.tps, after.xact_p50_us), (0.0, 0));
    }
}
