//! A latency histogram the data path records into with one relaxed atomic add: log-linear
//! buckets (32 per power of two above 64 µs, so within ~3%), read by the stats period task,
//! which turns the difference of two snapshots into an HDR histogram for percentiles, and by
//! the metrics, which sum them into Prometheus' fixed buckets.

use super::counter::{shard, SHARDS};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Values below 2^LINEAR_BITS µs get a bucket each.
const LINEAR_BITS: u32 = 6;
const LINEAR: usize = 1 << LINEAR_BITS;
/// Buckets per power of two above that.
const HALF: usize = LINEAR / 2;
/// The largest bucket starts at 2^MAX_BITS µs (about 76 hours); longer values land in it.
const MAX_BITS: u32 = 38;
pub const BUCKETS: usize = LINEAR + (MAX_BITS - LINEAR_BITS + 1) as usize * HALF;

/// Prometheus bucket bounds, seconds.
pub const PROMETHEUS_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The buckets are kept per group of threads (see `counter`), each made on its first value,
/// so the workers of one pool do not fight over the lines of its busiest buckets.
pub struct Histogram {
    shards: [OnceLock<Box<[AtomicU64]>>; SHARDS],
    /// Largest value since the period task last took it.
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            shards: std::array::from_fn(|_| OnceLock::new()),
            max: AtomicU64::new(0),
        }
    }
}

/// The bucket of a value in µs.
pub fn index(us: u64) -> usize {
    if us < LINEAR as u64 {
        return us as usize;
    }
    let msb = (63 - us.leading_zeros()).min(MAX_BITS);
    let us = us.min((1u64 << (MAX_BITS + 1)) - 1);
    let shift = msb + 1 - LINEAR_BITS;
    let within = ((us >> shift) as usize).saturating_sub(HALF);
    LINEAR + (msb - LINEAR_BITS) as usize * HALF + within
}

/// The smallest value of a bucket, µs.
pub fn lower_bound(index: usize) -> u64 {
    if index < LINEAR {
        return index as u64;
    }
    let group = ((index - LINEAR) / HALF) as u32;
    let within = ((index - LINEAR) % HALF) as u64;
    let shift = group + 1;
    (HALF as u64 + within) << shift
}

impl Histogram {
    #[inline]
    pub fn record(&self, us: u64) {
        self.record_at(shard(), us);
    }

    /// `record` on the line `shard()` gave (see `Counter::add_at`).
    #[inline]
    pub fn record_at(&self, shard: usize, us: u64) {
        if let Some(shard) = self.shards.get(shard) {
            let buckets = shard.get_or_init(|| (0..BUCKETS).map(|_| AtomicU64::new(0)).collect());
            if let Some(bucket) = buckets.get(index(us)) {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        if us > self.max.load(Ordering::Relaxed) {
            self.max.fetch_max(us, Ordering::Relaxed);
        }
    }

    /// Counts per bucket now.
    pub fn snapshot(&self) -> Vec<u64> {
        let mut out = vec![0; BUCKETS];
        for buckets in self.shards.iter().filter_map(OnceLock::get) {
            for (sum, b) in out.iter_mut().zip(buckets.iter()) {
                *sum += b.load(Ordering::Relaxed);
            }
        }
        out
    }

    /// The largest value recorded since the last call, which starts a new window.
    pub fn take_max(&self) -> u64 {
        self.max.swap(0, Ordering::Relaxed)
    }
}

/// Cumulative counts at each of `PROMETHEUS_BOUNDS` (a bucket counts below a bound when its
/// smallest value is), then the total.
pub fn cumulative(snapshot: &[u64]) -> (Vec<u64>, u64) {
    let mut out = Vec::with_capacity(PROMETHEUS_BOUNDS.len());
    let mut sum = 0u64;
    let mut i = 0;
    for bound in PROMETHEUS_BOUNDS {
        let bound_us = (bound * 1e6) as u64;
        while let Some(&n) = snapshot.get(i) {
            if lower_bound(i) >= bound_us {
                break;
            }
            sum += n;
            i += 1;
        }
        out.push(sum);
    }
    let total = snapshot.iter().sum();
    (out, total)
}

/// p50, p95, p99 of the counts `now - before` (µs), via an HDR histogram.
pub fn percentiles(now: &[u64], before: &[u64]) -> Option<[u64; 3]> {
    let mut hdr = hdrhistogram::Histogram::<u64>::new(2).ok()?;
    for (i, (&n, &b)) in now.iter().zip(before.iter().chain(std::iter::repeat(&0))).enumerate() {
        let count = n.saturating_sub(b);
        if count > 0 {
            // The middle of the bucket.
            let low = lower_bound(i);
            let high = lower_bound(i + 1).max(low + 1);
            hdr.record_n(low + (high - low - 1) / 2, count).ok()?;
        }
    }
    if hdr.is_empty() {
        return None;
    }
    Some([
        hdr.value_at_quantile(0.5),
        hdr.value_at_quantile(0.95),
        hdr.value_at_quantile(0.99),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_tight() {
        let mut last = 0;
        for v in (0..100_000u64).chain([1 << 20, 1 << 30, 1 << 38, (1 << 39) - 1]) {
            let i = index(v);
            assert!(i < BUCKETS, "{v}");
            assert!(i >= last, "{v}");
            last = i;
            let (low, high) = (lower_bound(i), lower_bound(i + 1));
            assert!(low <= v && v < high, "{v} in [{low}, {high})");
            assert!(
                (high - low) as f64 <= (v as f64 / 30.0).max(1.0),
                "{v}: width {}",
                high - low
            );
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_and_prometheus_buckets() {
        let h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v * 1000); // 1 ms .. 1 s
        }
        let snap = h.snapshot();
        let [p50, p95, p99] = percentiles(&snap, &[]).unwrap();
        for (got, want) in [(p50, 500_000.0), (p95, 950_000.0), (p99, 990_000.0)] {
            assert!((got as f64 - want).abs() / want < 0.04, "{got} vs {want}");
        }
        assert_eq!(h.take_max(), 1_000_000);
        assert_eq!(h.take_max(), 0);
        let (cum, total) = cumulative(&snap);
        assert_eq!(total, 1000);
        assert_eq!(
            cum[1], 1,
            "le=0.001 holds the 1 ms value (its bucket starts below 1 ms)"
        );
        assert!(cum.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*cum.last().unwrap(), 1000);
        // A window: only what came after the first snapshot.
        h.record(5);
        let p = percentiles(&h.snapshot(), &snap).unwrap();
        assert_eq!(p, [5, 5, 5]);
        assert!(percentiles(&snap, &snap).is_none());
    }
}
