//! One reading of the pools and replicas, which SHOW POOLS, SHOW REPLICAS and the dashboard's
//! `/api/pools` and `/api/replicas` all print, so that they cannot disagree.

use crate::frontend::Shared;
use crate::pool::Pool;
use crate::route::replicas::Report as ReplicaReport;
use crate::stats::period::Report;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// A pool as SHOW POOLS shows it.
pub struct PoolView {
    pub pool: Arc<Pool>,
    pub database: String,
    pub user: String,
    pub cl_active: u32,
    pub cl_waiting: u32,
    /// Cancel requests being forwarded (cl_active_cancel_req and sv_active_cancel).
    pub cancels: u32,
    pub sv_active: u32,
    /// Servers being brought back to idle after a client (sv_being_canceled's column).
    pub sv_settling: u32,
    pub sv_idle: usize,
    pub sv_used: usize,
    pub sv_tested: u32,
    pub sv_login: u32,
    /// How long the oldest waiting client has waited, µs.
    pub maxwait_us: u64,
    pub pool_mode: &'static str,
    pub load_balance: Option<String>,
    pub pool_size: u32,
    pub paused: bool,
    /// Its database is DISABLEd (SHOW DATABASES' column).
    pub disabled: bool,
    /// The last stats period: SHOW POOLS' latency percentiles.
    pub period: Report,
}

/// load_balance_hosts: how reads are spread over the replicas of a database that splits them
/// (`load_balancing`); None where there is no list of servers to spread over.
pub fn load_balance(db: &crate::config::DatabaseConfig) -> Option<String> {
    (db.read_write_split && !db.replicas.is_empty()).then(|| db.load_balancing.to_string())
}

pub fn pools(shared: &Shared) -> Vec<PoolView> {
    let waits = shared.cancels.max_waits();
    let config = shared.config.load();
    let get = |n: &AtomicU32| n.load(Ordering::Relaxed);
    shared
        .pools
        .all()
        .into_iter()
        .map(|pool| {
            let c = &pool.counts;
            let (clients, waiting) = (get(&c.clients), get(&c.waiting));
            let idle = pool.idle_servers();
            let used = idle.iter().filter(|s| s.used).count();
            let settings = pool.settings();
            let gate = shared.pools.find_gate(&pool.database);
            let period = pool.stats.period.lock().unwrap_or_else(|e| e.into_inner()).clone();
            PoolView {
                cl_active: clients.saturating_sub(waiting),
                cl_waiting: waiting,
                cancels: get(&c.cancels),
                sv_active: get(&c.active),
                sv_settling: get(&c.settling),
                sv_idle: idle.len() - used,
                sv_used: used,
                sv_tested: get(&c.testing),
                sv_login: get(&c.opening),
                maxwait_us: waits.get(&Arc::as_ptr(&pool)).copied().unwrap_or(0),
                pool_mode: settings.mode.as_str(),
                load_balance: config.database(&pool.database).and_then(load_balance),
                pool_size: settings.size,
                paused: pool.paused(),
                disabled: gate.is_some_and(|g| g.disabled()),
                period,
                database: pool.database.clone(),
                user: pool.user.clone(),
                pool,
            }
        })
        .collect()
}

/// A replica as SHOW REPLICAS shows it.
pub struct ReplicaView {
    pub database: String,
    pub host: String,
    pub port: u16,
    pub report: ReplicaReport,
    pub reads_served: u64,
}

/// By database, then in the order of its `replicas` list.
pub fn replicas(shared: &Shared) -> Vec<ReplicaView> {
    let mut sets = shared.pools.replica_sets();
    sets.sort_by(|a, b| a.database.cmp(&b.database));
    let mut out = Vec::new();
    for set in sets {
        for r in &set.list {
            out.push(ReplicaView {
                database: set.database.clone(),
                host: r.host.clone(),
                port: r.port,
                report: r.report.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                reads_served: r.reads_served.load(Ordering::Relaxed),
            });
        }
    }
    out
}

/// The `X/X` form of a WAL position.
pub fn lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}
