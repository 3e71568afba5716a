//! The Prometheus text of `/metrics`: a `Snapshot` of plain numbers read from the pools'
//! atomics at scrape time (the data path does no extra work), encoded by prometheus-client.

use super::{histogram, CloseReason, PoolStats};
use crate::frontend::Shared;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering::Relaxed;

/// A latency histogram in Prometheus' terms: counts at or below each of
/// `histogram::PROMETHEUS_BOUNDS`, cumulative, then the total count and the sum in seconds.
#[derive(Debug, Default, Clone)]
pub struct Hist {
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

impl Hist {
    fn read(h: &histogram::Histogram, sum_us: u64) -> Hist {
        let (cumulative, count) = histogram::cumulative(&h.snapshot());
        Hist {
            cumulative,
            count,
            sum: sum_us as f64 / 1e6,
        }
    }

    /// Per-bucket counts with their bounds, +Inf last, as `encode_histogram` wants them.
    fn buckets(&self) -> Vec<(f64, u64)> {
        let mut out = Vec::with_capacity(self.cumulative.len() + 1);
        let mut below = 0;
        for (i, &bound) in histogram::PROMETHEUS_BOUNDS.iter().enumerate() {
            let n = self.cumulative.get(i).copied().unwrap_or(below);
            out.push((bound, n.saturating_sub(below)));
            below = below.max(n);
        }
        out.push((f64::INFINITY, self.count.saturating_sub(below)));
        out
    }
}

/// One pool, read at scrape time.
#[derive(Debug, Default, Clone)]
pub struct PoolSample {
    pub database: String,
    pub user: String,
    pub clients_active: u64,
    pub clients_waiting: u64,
    pub servers_active: u64,
    pub servers_idle: u64,
    pub servers_login: u64,
    pub servers_tested: u64,
    pub size: u64,
    pub max_wait: f64,
    pub paused: bool,
    pub xacts: u64,
    pub queries: u64,
    pub assignments: u64,
    pub received: u64,
    pub sent: u64,
    pub wait: f64,
    pub errors: Vec<(String, u64)>,
    pub opens: u64,
    pub closes: Vec<(&'static str, u64)>,
    /// Clients refused a server connection, by gate ("breaker", "login_retry").
    pub refusals: [(&'static str, u64); 2],
    /// LISTEN/NOTIFY (transaction mode): notifications queued for clients, and dropped.
    pub notifications: [(&'static str, u64); 2],
    /// Channels the pool's listener connection listens on.
    pub listen_channels: u64,
    pub client_parses: u64,
    pub server_parses: u64,
    pub binds: u64,
    pub query: Hist,
    pub xact: Hist,
}

/// One replica of a database with read_write_split, as SHOW REPLICAS shows it.
#[derive(Debug, Default, Clone)]
pub struct ReplicaSample {
    pub database: String,
    pub host: String,
    pub port: u16,
    pub ok: bool,
    pub in_recovery: bool,
    pub lag_bytes: u64,
    pub lag_seconds: f64,
    pub reads: u64,
}

/// One backend address's circuit breaker.
#[derive(Debug, Default, Clone)]
pub struct BreakerSample {
    pub host: String,
    pub port: u16,
    pub role: &'static str,
    /// 0 closed, 1 open, 2 half-open.
    pub state: i64,
    pub failures: u32,
}

/// Everything one scrape reports.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub pools: Vec<PoolSample>,
    pub replicas: Vec<ReplicaSample>,
    pub breakers: Vec<BreakerSample>,
    pub clients: u64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub last_reload_ok: bool,
    pub last_reload_at: u64,
}

impl Snapshot {
    pub fn read(shared: &Shared) -> Snapshot {
        let waits = shared.cancels.max_waits();
        let all = shared.pools.all();
        let pools = all.iter().map(|pool| {
            let (c, s) = (&pool.counts, &pool.stats);
            let clients = u64::from(c.clients.load(Relaxed));
            let waiting = u64::from(c.waiting.load(Relaxed));
            PoolSample {
                database: pool.database.clone(),
                user: pool.user.clone(),
                clients_active: clients.saturating_sub(waiting),
                clients_waiting: waiting,
                servers_active: c.active.load(Relaxed).into(),
                servers_idle: pool.idle_count() as u64,
                servers_login: c.opening.load(Relaxed).into(),
                servers_tested: c.testing.load(Relaxed).into(),
                size: pool.settings().size.into(),
                max_wait: waits
                    .get(&std::sync::Arc::as_ptr(pool))
                    .map_or(0.0, |&us| us as f64 / 1e6),
                paused: pool.paused(),
                xacts: PoolStats::get(&s.xacts),
                queries: PoolStats::get(&s.queries),
                assignments: PoolStats::get(&s.server_assignments),
                received: PoolStats::get(&s.received),
                sent: PoolStats::get(&s.sent),
                wait: PoolStats::get(&s.wait_time) as f64 / 1e6,
                errors: s.errors(),
                opens: PoolStats::get(&s.server_opens),
                closes: CloseReason::ALL.iter().map(|&r| (r.label(), s.closes(r))).collect(),
                refusals: [
                    ("breaker", s.refused_by_breaker.load(Relaxed)),
                    ("login_retry", s.refused_by_login_retry.load(Relaxed)),
                ],
                notifications: [
                    ("delivered", pool.listen.delivered.load(Relaxed)),
                    ("dropped", pool.listen.dropped.load(Relaxed)),
                ],
                listen_channels: pool.listen.channel_count() as u64,
                client_parses: PoolStats::get(&s.client_parses),
                server_parses: PoolStats::get(&s.server_parses),
                binds: PoolStats::get(&s.binds),
                query: Hist::read(&s.query_latency, PoolStats::get(&s.query_time)),
                xact: Hist::read(&s.xact_latency, PoolStats::get(&s.xact_time)),
            }
        });
        let mut replicas = Vec::new();
        for set in shared.pools.replica_sets() {
            for r in &set.list {
                let report = r.report.lock().unwrap_or_else(|e| e.into_inner()).clone();
                replicas.push(ReplicaSample {
                    database: set.database.clone(),
                    host: r.host.clone(),
                    port: r.port,
                    ok: r.ok.load(Relaxed),
                    in_recovery: report.role == "replica",
                    lag_bytes: report.lag_bytes,
                    lag_seconds: report.lag_seconds,
                    reads: r.reads_served.load(Relaxed),
                });
            }
        }
        let breakers = shared
            .pools
            .breakers()
            .iter()
            .map(|b| {
                let s = b.snapshot();
                BreakerSample {
                    host: s.host,
                    port: s.port,
                    role: s.role.as_str(),
                    state: match s.state {
                        crate::breaker::BreakerState::Closed => 0,
                        crate::breaker::BreakerState::Open => 1,
                        crate::breaker::BreakerState::HalfOpen => 2,
                    },
                    failures: s.consecutive_failures,
                }
            })
            .collect();
        let r = &shared.reloads;
        Snapshot {
            pools: pools.collect(),
            replicas,
            breakers,
            clients: shared.clients.load(Relaxed).into(),
            reloads_ok: r.ok.load(Relaxed),
            reloads_failed: r.failed.load(Relaxed),
            last_reload_ok: r.last_ok.load(Relaxed),
            last_reload_at: r.last_at.load(Relaxed),
        }
    }

    /// The OpenMetrics text (which Prometheus reads), ending in `# EOF`.
    pub fn encode(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

type Labels = Vec<(&'static str, String)>;

enum Value<'a> {
    Gauge(i64),
    GaugeF(f64),
    Counter(u64),
    CounterF(f64),
    Hist(&'a Hist),
}

/// One metric family: its HELP and TYPE, then a sample per label set. Counter names get
/// `_total` from the encoder.
fn family(enc: &mut DescriptorEncoder, name: &str, help: &str, rows: Vec<(Labels, Value)>) -> std::fmt::Result {
    let Some(kind) = rows.first().map(|(_, v)| match v {
        Value::Gauge(_) | Value::GaugeF(_) => MetricType::Gauge,
        Value::Counter(_) | Value::CounterF(_) => MetricType::Counter,
        Value::Hist(_) => MetricType::Histogram,
    }) else {
        return Ok(()); // no pools yet: no family
    };
    let mut metric = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in &rows {
        // An empty label set would print `name{}`.
        if labels.is_empty() {
            put(&mut metric, value)?;
        } else {
            put(&mut metric.encode_family(labels)?, value)?;
        }
    }
    Ok(())
}

fn put(e: &mut MetricEncoder, value: &Value) -> std::fmt::Result {
    match value {
        Value::Gauge(n) => e.encode_gauge(n),
        Value::GaugeF(x) => e.encode_gauge(x),
        Value::Counter(n) => e.encode_counter::<NoLabelSet, _, u64>(n, None),
        Value::CounterF(x) => e.encode_counter::<NoLabelSet, _, f64>(x, None),
        Value::Hist(h) => e.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets(), None),
    }
}

fn pool_labels(p: &PoolSample) -> Labels {
    vec![("database", p.database.clone()), ("user", p.user.clone())]
}

/// A per-pool metric: name, help, and its value for a pool.
type PerPool = (&'static str, &'static str, fn(&PoolSample) -> Value<'_>);
/// A per-pool metric with one more label: name, help, the label, and its (label value,
/// value) pairs for a pool.
type Split = (
    &'static str,
    &'static str,
    &'static str,
    fn(&PoolSample) -> Vec<(String, Value<'_>)>,
);

const SPLIT_GAUGES: &[Split] = &[
    (
        "pgmux_clients",
        "Logged-in clients: active (not waiting) or waiting for a server",
        "state",
        |p| states(&[("active", p.clients_active), ("waiting", p.clients_waiting)]),
    ),
    ("pgmux_servers", "Server connections by state", "state", |p| {
        let (active, idle) = (p.servers_active, p.servers_idle);
        states(&[
            ("active", active),
            ("idle", idle),
            ("login", p.servers_login),
            ("tested", p.servers_tested),
        ])
    }),
];

const PER_POOL: &[PerPool] = &[
    ("pgmux_pool_size", "Configured pool size", |p| {
        Value::Gauge(p.size as i64)
    }),
    (
        "pgmux_client_max_wait_seconds",
        "How long the oldest waiting client has waited",
        |p| Value::GaugeF(p.max_wait),
    ),
    ("pgmux_paused", "1 while the pool is paused", |p| {
        Value::Gauge(p.paused.into())
    }),
    (
        "pgmux_listen_channels",
        "Channels the pool's listener connection listens on (LISTEN in transaction mode)",
        |p| Value::Gauge(p.listen_channels as i64),
    ),
    ("pgmux_transactions", "Transactions completed", |p| {
        Value::Counter(p.xacts)
    }),
    ("pgmux_queries", "Queries completed", |p| Value::Counter(p.queries)),
    ("pgmux_server_assignments", "Times a client was given a server", |p| {
        Value::Counter(p.assignments)
    }),
    ("pgmux_received_bytes", "Bytes received from clients", |p| {
        Value::Counter(p.received)
    }),
    ("pgmux_sent_bytes", "Bytes sent to clients", |p| Value::Counter(p.sent)),
    ("pgmux_wait_seconds", "Time clients spent waiting for a server", |p| {
        Value::CounterF(p.wait)
    }),
    ("pgmux_server_connections_opened", "Server connections opened", |p| {
        Value::Counter(p.opens)
    }),
    ("pgmux_client_parses", "Parse messages from clients", |p| {
        Value::Counter(p.client_parses)
    }),
    ("pgmux_server_parses", "Parse messages sent to servers", |p| {
        Value::Counter(p.server_parses)
    }),
    ("pgmux_binds", "Bind messages from clients", |p| Value::Counter(p.binds)),
    ("pgmux_query_duration_seconds", "Query latency", |p| {
        Value::Hist(&p.query)
    }),
    ("pgmux_transaction_duration_seconds", "Transaction latency", |p| {
        Value::Hist(&p.xact)
    }),
];

const SPLIT_COUNTERS: &[Split] = &[
    (
        "pgmux_errors",
        "Error responses sent to clients, by SQLSTATE class",
        "sqlstate_class",
        |p| p.errors.iter().map(|(c, n)| (c.clone(), Value::Counter(*n))).collect(),
    ),
    (
        "pgmux_server_connections_closed",
        "Server connections closed, by reason",
        "reason",
        |p| {
            p.closes
                .iter()
                .map(|(r, n)| (r.to_string(), Value::Counter(*n)))
                .collect()
        },
    ),
    (
        "pgmux_notifications",
        "LISTEN/NOTIFY in transaction mode: notifications queued for listening clients, and \
         dropped because a client's queue was full",
        "outcome",
        |p| {
            p.notifications
                .iter()
                .map(|(o, n)| (o.to_string(), Value::Counter(*n)))
                .collect()
        },
    ),
    (
        "pgmux_client_refusals",
        "Clients refused a new server connection, by the gate that refused them: an open circuit \
         breaker, or server_login_retry after the server refused the pool's login",
        "gate",
        |p| {
            p.refusals
                .iter()
                .map(|(g, n)| (g.to_string(), Value::Counter(*n)))
                .collect()
        },
    ),
];

type PerReplica = (&'static str, &'static str, fn(&ReplicaSample) -> Value<'_>);

const REPLICA_METRICS: &[PerReplica] = &[
    (
        "pgmux_replica_up",
        "1 while the replica passes the lag check and takes reads",
        |r| Value::Gauge(r.ok.into()),
    ),
    (
        "pgmux_replica_in_recovery",
        "1 while the replica is in recovery (0: promoted)",
        |r| Value::Gauge(r.in_recovery.into()),
    ),
    (
        "pgmux_replica_lag_bytes",
        "WAL bytes the replica's replay is behind the primary",
        |r| Value::Gauge(r.lag_bytes as i64),
    ),
    (
        "pgmux_replica_lag_seconds",
        "Age of the replica's last replayed transaction while behind",
        |r| Value::GaugeF(r.lag_seconds),
    ),
    ("pgmux_replica_reads", "Transactions routed to the replica", |r| {
        Value::Counter(r.reads)
    }),
];

fn replica_labels(r: &ReplicaSample) -> Labels {
    vec![
        ("database", r.database.clone()),
        ("host", r.host.clone()),
        ("port", r.port.to_string()),
    ]
}

fn states<'a>(pairs: &[(&str, u64)]) -> Vec<(String, Value<'a>)> {
    pairs
        .iter()
        .map(|(s, n)| (s.to_string(), Value::Gauge(*n as i64)))
        .collect()
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let enc = &mut enc;
        let global = |v| vec![(Labels::new(), v)];
        let result = |r: &str| vec![("result", r.to_owned())];
        let reloads = vec![
            (result("ok"), Value::Counter(self.reloads_ok)),
            (result("error"), Value::Counter(self.reloads_failed)),
        ];
        for (name, help, rows) in [
            ("pgmux_up", "1 while pgmux runs", global(Value::Gauge(1))),
            (
                "pgmux_clients_connected",
                "Client connections, logged in or not",
                global(Value::Gauge(self.clients as i64)),
            ),
            ("pgmux_config_reloads", "Configuration reloads by result", reloads),
            (
                "pgmux_config_last_reload_success",
                "1 if the last reload (or the start) loaded the file",
                global(Value::Gauge(self.last_reload_ok.into())),
            ),
            (
                "pgmux_config_last_reload_timestamp_seconds",
                "Unix time of the last reload attempt, or of the start",
                global(Value::Gauge(self.last_reload_at as i64)),
            ),
        ] {
            family(enc, name, help, rows)?;
        }
        let split = |(name, help, key, f): &Split| {
            let rows = self.pools.iter().flat_map(|p| {
                f(p).into_iter().map(move |(label, v)| {
                    let mut labels = pool_labels(p);
                    labels.push((key, label));
                    (labels, v)
                })
            });
            (*name, *help, rows.collect::<Vec<_>>())
        };
        let per_pool = |(name, help, f): &PerPool| {
            (
                *name,
                *help,
                self.pools.iter().map(|p| (pool_labels(p), f(p))).collect(),
            )
        };
        let families = SPLIT_GAUGES
            .iter()
            .map(split)
            .chain(PER_POOL.iter().map(per_pool))
            .chain(SPLIT_COUNTERS.iter().map(split));
        for (name, help, rows) in families {
            family(enc, name, help, rows)?;
        }
        for (name, help, f) in REPLICA_METRICS {
            let rows = self.replicas.iter().map(|r| (replica_labels(r), f(r))).collect();
            family(enc, name, help, rows)?;
        }
        let labels = |b: &BreakerSample| -> Labels {
            vec![
                ("host", b.host.clone()),
                ("port", b.port.to_string()),
                ("role", b.role.to_owned()),
            ]
        };
        let state = self
            .breakers
            .iter()
            .map(|b| (labels(b), Value::Gauge(b.state)))
            .collect();
        family(
            enc,
            "pgmux_breaker_state",
            "Circuit breaker: 0 closed, 1 open, 2 half-open",
            state,
        )?;
        let failures = self
            .breakers
            .iter()
            .map(|b| (labels(b), Value::Gauge(b.failures.into())))
            .collect();
        family(
            enc,
            "pgmux_breaker_consecutive_failures",
            "Consecutive counted failures of the address",
            failures,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_of_a_known_pool() {
        let h = histogram::Histogram::default();
        for us in [100, 2_000, 2_000_000] {
            h.record(us);
        }
        let pool = PoolSample {
            database: "db".into(),
            user: "u\"x".into(),
            clients_active: 1,
            clients_waiting: 2,
            servers_active: 1,
            size: 1,
            max_wait: 0.25,
            xacts: 3,
            received: 10,
            wait: 1.5,
            errors: vec![("42".into(), 4)],
            closes: vec![("idle", 5)],
            query: Hist::read(&h, 2_002_100),
            ..Default::default()
        };
        let snap = Snapshot {
            pools: vec![pool],
            clients: 3,
            last_reload_ok: true,
            last_reload_at: 7,
            ..Default::default()
        };
        let text = snap.encode();
        let labels = "database=\"db\",user=\"u\\\"x\"";
        for line in [
            "pgmux_up 1".to_owned(),
            "pgmux_clients_connected 3".into(),
            "pgmux_config_reloads_total{result=\"error\"} 0".into(),
            "pgmux_config_last_reload_success 1".into(),
            "pgmux_config_last_reload_timestamp_seconds 7".into(),
            format!("pgmux_clients{{{labels},state=\"waiting\"}} 2"),
            format!("pgmux_clients{{{labels},state=\"active\"}} 1"),
            format!("pgmux_servers{{{labels},state=\"active\"}} 1"),
            format!("pgmux_pool_size{{{labels}}} 1"),
            format!("pgmux_client_max_wait_seconds{{{labels}}} 0.25"),
            format!("pgmux_transactions_total{{{labels}}} 3"),
            format!("pgmux_received_bytes_total{{{labels}}} 10"),
            format!("pgmux_wait_seconds_total{{{labels}}} 1.5"),
            format!("pgmux_errors_total{{{labels},sqlstate_class=\"42\"}} 4"),
            format!("pgmux_server_connections_closed_total{{{labels},reason=\"idle\"}} 5"),
            format!("pgmux_query_duration_seconds_count{{{labels}}} 3"),
            format!("pgmux_query_duration_seconds_sum{{{labels}}} 2.0021"),
            format!("pgmux_query_duration_seconds_bucket{{le=\"0.0005\",{labels}}} 1"),
            format!("pgmux_query_duration_seconds_bucket{{le=\"0.0025\",{labels}}} 2"),
            format!("pgmux_query_duration_seconds_bucket{{le=\"2.5\",{labels}}} 3"),
            format!("pgmux_query_duration_seconds_bucket{{le=\"+Inf\",{labels}}} 3"),
            "# TYPE pgmux_transactions counter".into(),
            "# TYPE pgmux_query_duration_seconds histogram".into(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn no_pools_no_pool_families() {
        let text = Snapshot::default().encode();
        assert!(text.contains("pgmux_up 1"));
        assert!(!text.contains("pgmux_servers"));
    }
}
