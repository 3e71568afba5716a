//! The stats period: every `stats_period` the totals of each pool are compared with those at
//! the start of the period, giving SHOW STATS' averages and the latency percentiles.

use super::{histogram, PoolStats};

/// Totals in SHOW STATS order (after the database): see `Totals::NAMES`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals(pub [u64; 11]);

impl Totals {
    /// The counters, as PgBouncer names them after `total_` / `avg_`.
    pub const NAMES: [&'static str; 11] = [
        "server_assignment_count",
        "xact_count",
        "query_count",
        "received",
        "sent",
        "xact_time",
        "query_time",
        "wait_time",
        "client_parse_count",
        "server_parse_count",
        "bind_count",
    ];

    pub fn of(s: &PoolStats) -> Totals {
        let counters: [&super::Counter; 11] = [
            &s.server_assignments,
            &s.xacts,
            &s.queries,
            &s.received,
            &s.sent,
            &s.xact_time,
            &s.query_time,
            &s.wait_time,
            &s.client_parses,
            &s.server_parses,
            &s.binds,
        ];
        Totals(counters.map(PoolStats::get))
    }

    pub fn add(&mut self, other: &Totals) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }

    fn since(&self, before: &Totals) -> Totals {
        let mut out = *self;
        for (a, b) in out.0.iter_mut().zip(before.0) {
            *a = a.saturating_sub(b);
        }
        out
    }

    /// PgBouncer's averages of a period's difference: counts and bytes per second, times per
    /// transaction, query or assignment (µs).
    pub fn averages(&self, secs: f64) -> Totals {
        let [assign, xacts, queries, recv, sent, xact_time, query_time, wait_time, cparse, sparse, bind] = self.0;
        let rate = |n: u64| (n as f64 / secs.max(1e-3)).round() as u64;
        let per = |t: u64, n: u64| t.checked_div(n).unwrap_or(0);
        Totals([
            rate(assign),
            rate(xacts),
            rate(queries),
            rate(recv),
            rate(sent),
            per(xact_time, xacts),
            per(query_time, queries),
            per(wait_time, assign),
            rate(cparse),
            rate(sparse),
            rate(bind),
        ])
    }
}

/// p50, p95, p99 and max (µs) of one latency over a period.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
}

/// What the last complete period showed.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// The period's differences (averaged with `Totals::averages`).
    pub delta: Totals,
    pub secs: f64,
    /// The period's histogram counts and largest values, kept so that the pools of one
    /// database can be merged before percentiles are taken.
    query: Vec<u64>,
    xact: Vec<u64>,
    query_max: u64,
    xact_max: u64,
}

impl Report {
    /// Adds another pool's period (SHOW STATS is per database).
    pub fn merge(&mut self, other: &Report) {
        self.delta.add(&other.delta);
        self.secs = self.secs.max(other.secs);
        for (mine, theirs) in [(&mut self.query, &other.query), (&mut self.xact, &other.xact)] {
            if mine.len() < theirs.len() {
                mine.resize(theirs.len(), 0);
            }
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a += b;
            }
        }
        self.query_max = self.query_max.max(other.query_max);
        self.xact_max = self.xact_max.max(other.xact_max);
    }

    pub fn query(&self) -> Latency {
        latency(&self.query, self.query_max)
    }

    pub fn xact(&self) -> Latency {
        latency(&self.xact, self.xact_max)
    }
}

fn latency(counts: &[u64], max: u64) -> Latency {
    let [p50, p95, p99] = histogram::percentiles(counts, &[]).unwrap_or_default();
    // A percentile is the middle of its bucket: never above the largest value seen.
    Latency {
        p50: p50.min(max),
        p95: p95.min(max),
        p99: p99.min(max),
        max,
    }
}

/// The state at the start of the current period.
#[derive(Debug, Default)]
pub struct Mark {
    totals: Totals,
    query: Vec<u64>,
    xact: Vec<u64>,
}

/// Ends the current period of one pool (`secs` long) and starts the next.
pub fn roll(stats: &PoolStats, secs: f64) {
    let totals = Totals::of(stats);
    let (query, xact) = (stats.query_latency.snapshot(), stats.xact_latency.snapshot());
    let mut mark = stats.mark.lock().unwrap_or_else(|e| e.into_inner());
    let minus = |now: &[u64], before: &[u64]| -> Vec<u64> {
        let before = before.iter().chain(std::iter::repeat(&0));
        now.iter().zip(before).map(|(n, b)| n.saturating_sub(*b)).collect()
    };
    let report = Report {
        delta: totals.since(&mark.totals),
        secs,
        query: minus(&query, &mark.query),
        xact: minus(&xact, &mark.xact),
        query_max: stats.query_latency.take_max(),
        xact_max: stats.xact_latency.take_max(),
    };
    *mark = Mark { totals, query, xact };
    drop(mark);
    *stats.period.lock().unwrap_or_else(|e| e.into_inner()) = report;
}

/// Rolls every pool's period each stats_period (read again after each, so a reload applies).
pub async fn run(shared: std::sync::Arc<crate::frontend::Shared>) {
    loop {
        let period = shared.config.load().pooler.stats_period;
        tokio::time::sleep(period).await;
        for pool in shared.pools.all() {
            roll(&pool.stats, period.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_period_reports_its_own_differences() {
        let s = PoolStats::default();
        s.xacts.fetch_add(10, Ordering::Relaxed);
        s.xact_time.fetch_add(1000, Ordering::Relaxed);
        s.query_latency.record(100);
        roll(&s, 1.0);
        s.xacts.fetch_add(20, Ordering::Relaxed);
        s.xact_time.fetch_add(4000, Ordering::Relaxed);
        for _ in 0..100 {
            s.query_latency.record(3000);
        }
        roll(&s, 2.0);
        let r = s.period.lock().unwrap().clone();
        assert_eq!(r.delta.0[1], 20);
        let avg = r.delta.averages(r.secs);
        assert_eq!(avg.0[1], 10, "20 transactions in 2 s");
        assert_eq!(avg.0[5], 200, "4000 µs over 20 transactions");
        assert!(r.query().p50.abs_diff(3000) < 100, "{:?}", r.query());
        assert_eq!(r.query().max, 3000);
        assert_eq!(r.xact(), Latency::default());
        let mut merged = r.clone();
        merged.merge(&r);
        assert_eq!(merged.delta.0[1], 40);
        assert_eq!(merged.query(), r.query());
    }
}
