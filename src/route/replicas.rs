//! The replicas of one database: which of them may take reads (the lag monitor's verdict), and
//! the choice of one for a read.
//!
//! The monitor runs every `lag_check_interval` over connections of its own (pgmux's backend
//! code, no second client library): the primary's `pg_current_wal_insert_lsn()`, then each replica's
//! `pg_is_in_recovery()`, `pg_last_wal_replay_lsn()` and the age of its last replayed
//! transaction. A replica takes reads while it is reachable, in recovery, within
//! `max_replica_lag_bytes` of the primary and, while the primary is writing, within
//! `max_replica_lag_seconds`.
//!
//! Read-your-writes: a client that wrote on the primary records when its write ended; its reads
//! may go to a replica only once the monitor has read the primary's position after that moment
//! and the replica has replayed up to it. Until then they go to the primary.

use crate::backend::{connect, Credentials, ServerConn, Target};
use crate::config::{DatabaseConfig, LoadBalancing};
use crate::stats::now_us;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// What SHOW REPLICAS shows of one replica.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// `replica`, or `primary` once it left recovery (promoted).
    pub role: &'static str,
    /// `ok`, `excluded` or `down`.
    pub state: &'static str,
    pub replay_lsn: u64,
    pub lag_bytes: u64,
    pub lag_seconds: f64,
    /// now_us of the last check (0: never).
    pub last_check: u64,
    pub excluded_reason: String,
}

pub struct Replica {
    pub host: String,
    pub port: u16,
    /// The monitor's verdict: may take reads.
    pub ok: AtomicBool,
    pub replay_lsn: AtomicU64,
    /// Transactions running on it through pgmux now (least_outstanding).
    pub outstanding: AtomicU32,
    pub reads_served: AtomicU64,
    pub report: Mutex<Report>,
    /// Its timeline while it claims to be a primary (promoted); 0 otherwise.
    pub timeline: AtomicU32,
}

/// The replicas of one database and what the monitor last read of the primary.
pub struct Replicas {
    pub database: String,
    pub list: Vec<Arc<Replica>>,
    /// The primary's WAL position at the last check, and when that check was sent (now_us).
    pub primary_lsn: AtomicU64,
    pub primary_lsn_at: AtomicU64,
    next: AtomicUsize,
    settings: Mutex<Settings>,
    /// The monitor task runs (started by the first pool of the database).
    monitoring: AtomicBool,
    /// The primary the monitor reads and its credentials (`set_source`).
    source: Mutex<Option<(Target, Credentials)>>,
    /// Failover: the replica that takes the writes (`NO_FAILOVER`: the configured primary).
    pub write_target: AtomicUsize,
    /// Two listed servers claim to be primary (logged once when it starts).
    pub split_brain: AtomicBool,
}

/// `write_target` when the configured primary takes the writes.
pub const NO_FAILOVER: usize = usize::MAX;

#[derive(Debug, Clone)]
struct Settings {
    max_lag_bytes: u64,
    max_lag_seconds: f64,
    interval: Duration,
    policy: LoadBalancing,
    primary_reads: bool,
}

impl Settings {
    fn of(db: &DatabaseConfig) -> Settings {
        Settings {
            max_lag_bytes: db.max_replica_lag_bytes,
            max_lag_seconds: db.max_replica_lag_seconds.as_secs_f64(),
            interval: db.lag_check_interval.max(Duration::from_millis(10)),
            policy: db.load_balancing,
            primary_reads: db.primary_reads,
        }
    }
}

impl Replicas {
    pub fn new(database: &str, db: &DatabaseConfig) -> Replicas {
        let list = db
            .replicas
            .iter()
            .map(|(host, port)| {
                Arc::new(Replica {
                    host: host.clone(),
                    port: *port,
                    ok: AtomicBool::new(false),
                    replay_lsn: AtomicU64::new(0),
                    outstanding: AtomicU32::new(0),
                    reads_served: AtomicU64::new(0),
                    timeline: AtomicU32::new(0),
                    report: Mutex::new(Report {
                        role: "replica",
                        state: "down",
                        excluded_reason: "not checked yet".into(),
                        ..Report::default()
                    }),
                })
            })
            .collect();
        Replicas {
            database: database.to_owned(),
            list,
            primary_lsn: AtomicU64::new(0),
            primary_lsn_at: AtomicU64::new(0),
            next: AtomicUsize::new(0),
            settings: Mutex::new(Settings::of(db)),
            monitoring: AtomicBool::new(false),
            source: Mutex::new(None),
            write_target: AtomicUsize::new(NO_FAILOVER),
            split_brain: AtomicBool::new(false),
        }
    }

    /// A reload's new settings (the list of replicas itself changes by retiring the pools).
    pub fn reconfigure(&self, db: &DatabaseConfig) {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = Settings::of(db);
    }

    fn settings(&self) -> Settings {
        self.settings.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The index of a replica for a read, or None for the primary. `wrote_at` (now_us, 0 for
    /// never) is when the client's last write ended (read-your-writes). With primary_reads the
    /// primary is one more candidate, with `primary_load` transactions in flight.
    pub fn choose(&self, wrote_at: u64, primary_load: u32) -> Option<usize> {
        let need = if wrote_at == 0 {
            0
        } else if self.primary_lsn_at.load(Ordering::Acquire) > wrote_at {
            self.primary_lsn.load(Ordering::Acquire)
        } else {
            return None; // the primary's position after that write is not known yet
        };
        let settings = self.settings();
        // Index `len` stands for the primary, a candidate with primary_reads.
        let n = self.list.len() + usize::from(settings.primary_reads);
        let fit = |i: usize| match self.list.get(i) {
            Some(r) => r.ok.load(Ordering::Acquire) && r.replay_lsn.load(Ordering::Acquire) >= need,
            None => true,
        };
        let load = |i: usize| match self.list.get(i) {
            Some(r) => r.outstanding.load(Ordering::Relaxed),
            None => primary_load,
        };
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut order = (0..n).map(|k| (start + k) % n.max(1));
        let chosen = match settings.policy {
            LoadBalancing::LeastOutstanding => order.filter(|&i| fit(i)).min_by_key(|&i| load(i)),
            LoadBalancing::RoundRobin => order.find(|&i| fit(i)),
            LoadBalancing::Random => {
                let fitting: Vec<usize> = (0..n).filter(|&i| fit(i)).collect();
                fitting.get(rand::random_range(0..fitting.len().max(1))).copied()
            }
        };
        chosen.filter(|&i| i < self.list.len())
    }

    /// Starts the monitor once, with the primary and the credentials `how` gives (the first
    /// pool that routes; a read-only check works as any user). It stops when the last pool of
    /// the database is gone.
    pub fn monitor(self: &Arc<Self>, how: impl FnOnce() -> (Target, Credentials)) {
        if self.monitoring.load(Ordering::Relaxed) || self.monitoring.swap(true, Ordering::AcqRel) {
            return;
        }
        self.set_source(how());
        crate::worker::spawn_off_workers(run(Arc::downgrade(self)));
    }

    /// Where the monitor reads the primary, and as whom: a reload that moves the primary or
    /// changes the password reaches the running monitor through this, at its next check.
    pub fn set_source(&self, source: (Target, Credentials)) {
        *self.source.lock().unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    fn source(&self) -> Option<(Target, Credentials)> {
        self.source.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One connection the monitor keeps to a server, reopened after a failure.
struct Probe {
    target: Target,
    conn: Option<Box<ServerConn>>,
}

impl Probe {
    /// The first row of `sql`, or why not.
    /// One check may take `limit` (connect included): a server that does not answer within it
    /// is as good as down, and must not hold up the checks of the others.
    async fn row(
        &mut self,
        credentials: &Credentials,
        sql: &str,
        limit: Duration,
    ) -> Result<Vec<Option<String>>, String> {
        let work = async {
            if self.conn.is_none() {
                let (conn, _) = connect(&self.target, credentials).await.map_err(|e| e.to_string())?;
                self.conn = Some(conn);
            }
            let conn = self.conn.as_mut().ok_or("no connection")?;
            let outcome = conn.run(sql).await.map_err(|e| e.to_string())?;
            match outcome.error {
                Some(e) => Err(e.to_string()),
                None => Ok(outcome.row),
            }
        };
        let result = match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} s", limit.as_secs_f64())),
        };
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}

/// The primary's position and timeline (a standby fails it: pg_current_wal_lsn refuses). The
/// insert position, not the write position: with synchronous_commit off a client has its commit
/// acknowledged before the WAL writer writes it, and read-your-writes must cover that commit.
const PRIMARY_SQL: &str =
    "SELECT pg_current_wal_insert_lsn()::text, substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)";
/// A replica's state; the timeline only once it left recovery (promoted).
const REPLICA_SQL: &str = "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, \
     COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)::float8::text, \
     CASE WHEN pg_is_in_recovery() THEN NULL ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END";

/// Probes to the primary and to each replica, for one source (target and credentials).
fn probes_for(set: &Replicas, primary: &Target) -> (Probe, Vec<Probe>) {
    let replicas = set
        .list
        .iter()
        .map(|r| Probe {
            target: Target {
                host: r.host.clone(),
                port: r.port,
                ..primary.clone()
            },
            conn: None,
        })
        .collect();
    let primary = Probe {
        target: primary.clone(),
        conn: None,
    };
    (primary, replicas)
}

async fn run(weak: Weak<Replicas>) {
    let Some((target, mut credentials)) = weak.upgrade().and_then(|set| set.source()) else {
        return;
    };
    let (mut primary, mut probes) = match weak.upgrade() {
        Some(set) => probes_for(&set, &target),
        None => return,
    };
    let mut last_primary_lsn = 0;
    loop {
        let Some(settings) = weak.upgrade().map(|set| set.settings()) else {
            return;
        };
        tokio::time::sleep(settings.interval).await;
        let Some(set) = weak.upgrade() else { return };
        // A reload may have moved the primary or changed the credentials: new connections.
        if let Some((target, now)) = set.source() {
            if target != primary.target || now != credentials {
                (primary, probes) = probes_for(&set, &target);
                credentials = now;
                last_primary_lsn = 0;
            }
        }
        let limit = settings.interval.max(Duration::from_secs(1));
        let sent = now_us();
        let (primary_lsn, primary_timeline) = match primary.row(&credentials, PRIMARY_SQL, limit).await {
            Ok(row) => {
                let text = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
                (parse_lsn(&text(0)), u32::from_str_radix(&text(1), 16).ok())
            }
            Err(e) => {
                tracing::debug!(database = %set.database, error = %e, "lag monitor: primary not readable");
                (None, None)
            }
        };
        let writing = match primary_lsn {
            Some(lsn) => {
                set.primary_lsn.store(lsn, Ordering::Release);
                set.primary_lsn_at.store(sent, Ordering::Release);
                let writing = lsn > last_primary_lsn && last_primary_lsn > 0;
                last_primary_lsn = lsn;
                writing
            }
            None => false,
        };
        let known_primary = set.primary_lsn.load(Ordering::Acquire);
        for (replica, probe) in set.list.iter().zip(probes.iter_mut()) {
            let result = probe.row(&credentials, REPLICA_SQL, limit).await;
            judge(replica, result, known_primary, writing, &settings, &set.database);
        }
        set.decide_writes(&primary.target, primary_timeline);
    }
}

/// Applies one check's result to a replica's verdict, logging each change of state once.
fn judge(
    replica: &Replica,
    result: Result<Vec<Option<String>>, String>,
    primary_lsn: u64,
    writing: bool,
    settings: &Settings,
    database: &str,
) {
    let mut report = replica.report.lock().unwrap_or_else(|e| e.into_inner());
    let before = (report.state, report.role);
    report.last_check = now_us();
    let verdict = match result {
        Err(e) => {
            report.state = "down";
            replica.timeline.store(0, Ordering::Release);
            Err(format!("unreachable: {e}"))
        }
        Ok(row) => {
            let text = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
            let in_recovery = text(0) == "t";
            let replay = parse_lsn(&text(1)).unwrap_or(0);
            let seconds: f64 = text(2).parse().unwrap_or(0.0);
            replica.replay_lsn.store(replay, Ordering::Release);
            let timeline = u32::from_str_radix(&text(3), 16).unwrap_or(0);
            replica.timeline.store(timeline, Ordering::Release);
            report.replay_lsn = replay;
            report.lag_bytes = primary_lsn.saturating_sub(replay);
            report.lag_seconds = if replay >= primary_lsn { 0.0 } else { seconds };
            report.role = if in_recovery { "replica" } else { "primary" };
            if !in_recovery {
                Err("not in recovery: promoted, takes no reads as a replica".to_string())
            } else if report.lag_bytes > settings.max_lag_bytes {
                Err(format!(
                    "{} bytes behind the primary (max_replica_lag_bytes = {})",
                    report.lag_bytes, settings.max_lag_bytes
                ))
            } else if writing && report.lag_seconds > settings.max_lag_seconds {
                Err(format!(
                    "{:.1} s behind the primary (max_replica_lag_seconds = {})",
                    report.lag_seconds, settings.max_lag_seconds
                ))
            } else {
                Ok(())
            }
        }
    };
    match verdict {
        Ok(()) => {
            report.state = "ok";
            report.excluded_reason.clear();
        }
        Err(why) => {
            if report.state != "down" {
                report.state = "excluded";
            }
            report.excluded_reason = why;
        }
    }
    replica.ok.store(report.state == "ok", Ordering::Release);
    if (report.state, report.role) != before {
        let addr = format!("{}:{}", replica.host, replica.port);
        match (report.state, report.role) {
            ("ok", _) => tracing::info!(database, replica = %addr, "replica takes reads"),
            (_, "primary") => tracing::error!(database, replica = %addr,
                "REPLICA PROMOTED: it is no longer in recovery and takes no reads as a replica"),
            _ => tracing::warn!(database, replica = %addr, reason = %report.excluded_reason, "replica takes no reads"),
        }
    }
}

/// `16/B374D848` to a byte position.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: usize, policy: LoadBalancing) -> Replicas {
        let db = DatabaseConfig {
            replicas: (0..n).map(|i| ("127.0.0.1".to_string(), 5000 + i as u16)).collect(),
            load_balancing: policy,
            ..DatabaseConfig::default()
        };
        Replicas::new("db", &db)
    }

    #[test]
    fn lsn() {
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("junk"), None);
    }

    #[test]
    fn verdicts() {
        let s = set(1, LoadBalancing::RoundRobin);
        let r = &s.list[0];
        let settings = s.settings();
        let row = |rec: &str, lsn: &str, secs: &str| {
            let timeline = (rec == "f").then(|| "00000002".to_string());
            Ok(vec![Some(rec.into()), Some(lsn.into()), Some(secs.into()), timeline])
        };
        judge(r, row("t", "0/100", "0"), 0x100, false, &settings, "db");
        assert!(r.ok.load(Ordering::Relaxed));
        judge(
            r,
            row("t", "0/100", "0"),
            0x100 + (16 << 20) + 1,
            false,
            &settings,
            "db",
        );
        assert!(!r.ok.load(Ordering::Relaxed), "too many bytes behind");
        judge(r, row("t", "0/100", "60"), 0x200, true, &settings, "db");
        assert!(
            !r.ok.load(Ordering::Relaxed),
            "too long behind while the primary writes"
        );
        judge(r, row("t", "0/100", "60"), 0x200, false, &settings, "db");
        assert!(r.ok.load(Ordering::Relaxed), "an idle primary: the age says nothing");
        judge(r, row("f", "0/300", "0"), 0x200, false, &settings, "db");
        assert!(!r.ok.load(Ordering::Relaxed));
        assert_eq!(r.timeline.load(Ordering::Relaxed), 2);
        assert_eq!(r.report.lock().unwrap().role, "primary");
        judge(r, Err("refused".into()), 0x200, false, &settings, "db");
        assert_eq!(r.report.lock().unwrap().state, "down");
    }

    #[test]
    fn choice_and_read_your_writes() {
        let s = set(2, LoadBalancing::LeastOutstanding);
        assert_eq!(s.choose(0, 0), None, "none checked yet");
        for r in &s.list {
            r.ok.store(true, Ordering::Relaxed);
            r.replay_lsn.store(100, Ordering::Relaxed);
        }
        s.list[0].outstanding.store(3, Ordering::Relaxed);
        assert_eq!(s.choose(0, 0), Some(1));
        // A write at t=50; the primary's position read at t=40 does not cover it.
        s.primary_lsn.store(150, Ordering::Relaxed);
        s.primary_lsn_at.store(40, Ordering::Relaxed);
        assert_eq!(s.choose(50, 0), None);
        s.primary_lsn_at.store(60, Ordering::Relaxed);
        assert_eq!(s.choose(50, 0), None, "replicas at 100 < 150");
        s.list[0].replay_lsn.store(150, Ordering::Relaxed);
        assert_eq!(s.choose(50, 0), Some(0));
        let rr = set(3, LoadBalancing::RoundRobin);
        for r in &rr.list {
            r.ok.store(true, Ordering::Relaxed);
        }
        let picks: Vec<_> = (0..3).map(|_| rr.choose(0, 0).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2]);
        let db = DatabaseConfig {
            replicas: vec![("127.0.0.1".to_string(), 5000)],
            primary_reads: true,
            ..DatabaseConfig::default()
        };
        let with_primary = Replicas::new("db", &db);
        with_primary.list[0].ok.store(true, Ordering::Relaxed);
        with_primary.list[0].outstanding.store(5, Ordering::Relaxed);
        assert_eq!(with_primary.choose(0, 1), None, "the primary is less busy");
        assert_eq!(with_primary.choose(0, 9), Some(0));
    }
}
