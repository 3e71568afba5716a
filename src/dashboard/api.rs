//! The JSON the dashboard reads (docs/monitoring.md lists every field). The numbers are those
//! of the console: pools and replicas from `admin::view` (SHOW POOLS, SHOW REPLICAS),
//! breakers from the same snapshot as SHOW BREAKERS; the series from `history`.

use super::history::{PoolSample, PoolTrack, ReplicaSample, Ring, KEEP, SAMPLE_EVERY};
use super::json::{array, Obj};
use crate::admin::result::utc;
use crate::admin::view;
use crate::frontend::Shared;
use crate::stats::{now_us, wall_clock_secs};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{SystemTime, UNIX_EPOCH};

/// Pools listed at most (the rest are counted in `pools_total`).
pub const MAX_POOLS: usize = 2000;
/// Pools whose series are sent: the busiest.
pub const MAX_CHARTED: usize = 12;
/// Slow queries sent, slowest first.
pub const MAX_SLOW: usize = 100;

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A series of samples as one array per field (`t` first), smaller than objects. Whole
/// numbers print without a fraction.
fn series<S>(out: &mut String, ring: &Ring<S>, fields: &[Field<S>]) {
    let mut obj = Obj::new(out);
    for (name, f) in fields {
        obj.field(name, ring.iter().map(f).collect::<Vec<f64>>());
    }
    obj.end();
}

/// A series' name and how to read it from a sample.
type Field<S> = (&'static str, fn(&S) -> f64);

const POOL_SERIES: &[Field<PoolSample>] = &[
    ("t", |s| s.t.into()),
    ("cl_active", |s| s.cl_active.into()),
    ("cl_waiting", |s| s.cl_waiting.into()),
    ("sv_active", |s| s.sv_active.into()),
    ("sv_idle", |s| s.sv_idle.into()),
    ("sv_used", |s| s.sv_used.into()),
    ("tps", |s| (f64::from(s.tps) * 10.0).round() / 10.0),
    ("xact_p50_us", |s| s.xact_p50_us.into()),
    ("xact_p95_us", |s| s.xact_p95_us.into()),
    ("xact_p99_us", |s| s.xact_p99_us.into()),
    ("wait_us", |s| s.wait_us.into()),
];

const REPLICA_SERIES: &[Field<ReplicaSample>] = &[
    ("t", |s| s.t.into()),
    ("lag_bytes", |s| s.lag_bytes as f64),
    ("lag_seconds", |s| (f64::from(s.lag_seconds) * 1000.0).round() / 1000.0),
];

/// `/api/summary`.
pub fn summary(shared: &Shared) -> String {
    let pools = shared.pools.all();
    let r = &shared.reloads;
    let last_at = r.last_at.load(Relaxed);
    let mut out = String::new();
    let mut o = Obj::new(&mut out);
    o.field("version", env!("CARGO_PKG_VERSION"))
        .field("uptime_seconds", now_us() / 1_000_000)
        .field("started_at", utc(wall_clock_secs(0)))
        .field("now", utc(unix_now()))
        .field("clients", shared.clients.load(Relaxed))
        .field(
            "clients_logged_in",
            pools
                .iter()
                .map(|p| u64::from(p.counts.clients.load(Relaxed)))
                .sum::<u64>(),
        )
        .field(
            "servers",
            pools
                .iter()
                .map(|p| u64::from(p.counts.servers.load(Relaxed)))
                .sum::<u64>(),
        )
        .field("pools", pools.len())
        .field("reloads_ok", r.ok.load(Relaxed))
        .field("reloads_failed", r.failed.load(Relaxed))
        .field("last_reload_ok", r.last_ok.load(Relaxed))
        .field("last_reload_at", (last_at > 0).then(|| utc(last_at)))
        .field("paused", shared.pools.all_gate.paused())
        .field("draining", shared.shutdown.is_draining())
        .field("sample_seconds", SAMPLE_EVERY.as_secs())
        .field("history_samples", KEEP);
    o.end();
    out
}

/// `/api/pools`: every pool (up to MAX_POOLS, by database and user) as SHOW POOLS shows it,
/// with the last sample's rates, and the series of the MAX_CHARTED busiest.
pub fn pools(shared: &Shared) -> String {
    let mut views = view::pools(shared);
    views.sort_by(|a, b| (&a.database, &a.user).cmp(&(&b.database, &b.user)));
    let total = views.len();
    views.truncate(MAX_POOLS);
    let mut out = String::new();
    shared.dashboard.history.with_pools(|tracks| {
        let track = |v: &view::PoolView| tracks.get(&(v.database.clone(), v.user.clone()));
        // Busiest: most transactions per second in the last sample, then most clients.
        let mut busy: Vec<(f32, u32, usize)> = views
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let tps = track(v).and_then(|t| t.ring.last()).map_or(0.0, |s| s.tps);
                (tps, v.cl_active + v.cl_waiting, i)
            })
            .collect();
        busy.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        let charted: Vec<usize> = busy.iter().take(MAX_CHARTED).map(|b| b.2).collect();
        let mut o = Obj::new(&mut out);
        o.field("pools_total", total)
            .field("truncated", total > views.len())
            .field("sample_seconds", SAMPLE_EVERY.as_secs())
            .field("now", now_us() / 1_000_000);
        o.with("pools", |out| {
            array(out, views.iter().enumerate(), |o, (i, v)| {
                pool(o, v, track(v), charted.contains(&i));
            })
        });
        o.end();
    });
    out
}

fn pool(o: &mut Obj, v: &view::PoolView, track: Option<&PoolTrack>, charted: bool) {
    let (q, x) = (v.period.query(), v.period.xact());
    let last = track.and_then(|t| t.ring.last()).copied().unwrap_or_default();
    o.field("database", &v.database)
        .field("user", &v.user)
        .field("pool_mode", v.pool_mode)
        .field("pool_size", v.pool_size)
        .field("paused", v.paused)
        .field("disabled", v.disabled)
        .field("cl_active", v.cl_active)
        .field("cl_waiting", v.cl_waiting)
        .field("sv_active", v.sv_active)
        .field("sv_idle", v.sv_idle)
        .field("sv_used", v.sv_used)
        .field("sv_tested", v.sv_tested)
        .field("sv_login", v.sv_login)
        .field("maxwait_us", v.maxwait_us)
        .field("load_balance_hosts", v.load_balance.as_deref())
        .field("query_p50_us", q.p50)
        .field("query_p95_us", q.p95)
        .field("query_p99_us", q.p99)
        .field("query_max_us", q.max)
        .field("xact_p50_us", x.p50)
        .field("xact_p95_us", x.p95)
        .field("xact_p99_us", x.p99)
        .field("xact_max_us", x.max)
        .field("tps", (f64::from(last.tps) * 10.0).round() / 10.0)
        .field("wait_us", last.wait_us);
    match track {
        Some(t) if charted => o.with("history", |out| series(out, &t.ring, POOL_SERIES)),
        _ => o.field("history", None::<u8>),
    };
}

/// `/api/replicas`: SHOW REPLICAS, with each replica's lag series.
pub fn replicas(shared: &Shared) -> String {
    let now = now_us();
    let mut out = String::new();
    shared.dashboard.history.with_replicas(|rings| {
        let mut o = Obj::new(&mut out);
        o.with("replicas", |out| {
            array(out, view::replicas(shared), |o, r| {
                let rep = &r.report;
                let key = (r.database.clone(), r.host.clone(), r.port);
                o.field("database", &r.database)
                    .field("host", &r.host)
                    .field("port", r.port)
                    .field("role", rep.role)
                    .field("state", rep.state)
                    .field("replay_lsn", view::lsn(rep.replay_lsn))
                    .field("lag_bytes", rep.lag_bytes)
                    .field("lag_seconds", (rep.lag_seconds * 1000.0).round() / 1000.0)
                    .field(
                        "last_check_seconds_ago",
                        (rep.last_check > 0).then(|| now.saturating_sub(rep.last_check) as f64 / 1e6),
                    )
                    .field("reads_served", r.reads_served)
                    .field("excluded_reason", &rep.excluded_reason);
                match rings.get(&key) {
                    Some(ring) => o.with("history", |out| series(out, ring, REPLICA_SERIES)),
                    None => o.field("history", None::<u8>),
                };
            })
        });
        o.end();
    });
    out
}

/// `/api/breakers`: SHOW BREAKERS.
pub fn breakers(shared: &Shared) -> String {
    let wall = |at: Option<SystemTime>| {
        at.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| utc(d.as_secs()))
    };
    let now = SystemTime::now();
    let mut out = String::new();
    let mut o = Obj::new(&mut out);
    o.with("breakers", |out| {
        array(out, shared.pools.breakers(), |o, b| {
            let s = b.snapshot();
            // Negative: the probe is due, waiting for a client to ask for a connection.
            let next_in = s.next_probe_at.map(|at| match at.duration_since(now) {
                Ok(d) => d.as_secs_f64(),
                Err(e) => -e.duration().as_secs_f64(),
            });
            o.field("host", &s.host)
                .field("port", s.port)
                .field("role", s.role.as_str())
                .field("state", s.state.as_str())
                .field("consecutive_failures", s.consecutive_failures)
                .field("opened_at", wall(s.opened_at))
                .field("next_probe_at", wall(s.next_probe_at))
                .field("next_probe_in_seconds", next_in.map(|x| (x * 10.0).round() / 10.0))
                .field("last_error", s.last_error.as_deref())
                .field("refused_clients", s.refused);
        })
    });
    o.end();
    out
}

/// `/api/slow_queries`: SHOW SLOW_QUERIES, slowest (by max) first, at most MAX_SLOW.
pub fn slow_queries(shared: &Shared) -> String {
    let mut all = Vec::new();
    for pool in shared.pools.all() {
        for q in pool.stats.slow.list() {
            all.push((pool.database.clone(), pool.user.clone(), q));
        }
    }
    all.sort_by_key(|(_, _, q)| std::cmp::Reverse(q.max_us));
    let total = all.len();
    all.truncate(MAX_SLOW);
    let mut out = String::new();
    let mut o = Obj::new(&mut out);
    o.field("total", total);
    o.with("slow_queries", |out| {
        array(out, all, |o, (database, user, q)| {
            o.field("database", database)
                .field("user", user)
                .field("query", &q.query)
                .field("count", q.count)
                .field("mean_us", q.total_us / q.count.max(1))
                .field("max_us", q.max_us)
                .field("last_seen", utc(wall_clock_secs(q.last_us)));
        })
    });
    o.end();
    out
}
