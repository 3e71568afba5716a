//! SHOW commands about pools, databases, users, settings and totals, with PgBouncer 1.25's
//! columns in its order (pgmux's own columns at the end). SHOW CLIENTS and SERVERS: `lists`.

use super::lists;
use super::result::{num, text, time, Rows, Ty};
use super::view::{self, load_balance};
use crate::frontend::Shared;
use crate::pool::Pool;
use crate::protocol::messages::{message, put_cstr, PgError};
use crate::stats::period::{Report, Totals};
use crate::stats::PoolStats;
use bytes::BytesMut;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub fn show(shared: &Shared, item: &str, out: &mut BytesMut) -> Result<(), PgError> {
    let rows = match item {
        "help" => {
            help(out);
            return Ok(());
        }
        "pools" => pools(shared),
        "stats" => stats(shared, Shape::Both),
        "stats_totals" => stats(shared, Shape::Totals),
        "stats_averages" => stats(shared, Shape::Averages),
        "totals" => totals(shared),
        "databases" => databases(shared),
        "users" => users(shared),
        "config" => config(shared),
        "lists" => lists_counts(shared),
        "version" => {
            let mut rows = Rows::of(&["version"], Ty::Text);
            rows.push(vec![text(concat!("pgmux ", env!("CARGO_PKG_VERSION")))]);
            rows
        }
        "state" => state(shared),
        "slow_queries" => slow_queries(shared),
        "replicas" => replicas(shared),
        "breakers" => breakers(shared),
        "listeners" => listeners(shared),
        "clients" => lists::clients(shared),
        "servers" => lists::servers(shared),
        "peers" => peers(shared),
        "peer_pools" => peer_pools(shared),
        "mem" | "fds" | "sockets" | "active_sockets" | "dns_hosts" | "dns_zones" => {
            return Err(PgError::new(
                "0A000",
                format!(
                    "SHOW {} describes PgBouncer internals that pgmux does not have",
                    item.to_uppercase()
                ),
            )
            .with_hint("SHOW POOLS, CLIENTS and SERVERS show pgmux's connections"))
        }
        _ => {
            return Err(PgError::new("42601", format!("unknown SHOW item \"{item}\""))
                .with_hint(format!("console commands: {}", super::command::USAGE)))
        }
    };
    rows.encode(out, "SHOW");
    Ok(())
}

fn help(out: &mut BytesMut) {
    message(out, b'N', |b| {
        for (field, value) in [
            (b'S', "NOTICE"),
            (b'V', "NOTICE"),
            (b'C', "00000"),
            (b'M', "Console usage"),
        ] {
            b.extend_from_slice(&[field]);
            put_cstr(b, value);
        }
        b.extend_from_slice(b"D");
        let detail = super::command::USAGE.replace("; ", "\n\t");
        put_cstr(b, &format!("\n\t{detail}"));
        b.extend_from_slice(&[0]);
    });
    super::result::complete(out, "SHOW");
}

const LATENCY_COLUMNS: [&str; 8] = [
    "query_p50_us",
    "query_p95_us",
    "query_p99_us",
    "query_max_us",
    "xact_p50_us",
    "xact_p95_us",
    "xact_p99_us",
    "xact_max_us",
];

fn latency_cells(report: &Report) -> Vec<Option<String>> {
    let (q, x) = (report.query(), report.xact());
    [q.p50, q.p95, q.p99, q.max, x.p50, x.p95, x.p99, x.max]
        .into_iter()
        .map(num)
        .collect()
}

fn period(stats: &PoolStats) -> Report {
    stats.period.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn pools(shared: &Shared) -> Rows {
    let mut rows = Rows::new(&[("database", Ty::Text), ("user", Ty::Text)]);
    for name in [
        "cl_active",
        "cl_waiting",
        "cl_active_cancel_req",
        "cl_waiting_cancel_req",
        "sv_active",
        "sv_active_cancel",
        "sv_being_canceled",
        "sv_idle",
        "sv_used",
        "sv_tested",
        "sv_login",
        "maxwait",
        "maxwait_us",
    ] {
        rows.add_column(name, Ty::Int4);
    }
    rows.add_column("pool_mode", Ty::Text);
    rows.add_column("load_balance_hosts", Ty::Text);
    rows.add_column("pool_size", Ty::Int4);
    rows.add_column("paused", Ty::Int4);
    for name in LATENCY_COLUMNS {
        rows.add_column(name, Ty::Int8);
    }
    for p in view::pools(shared) {
        // A cancel request is forwarded at once, on a connection of its own: clients waiting
        // for its answer and the connections carrying it are one count, and none waits to be
        // forwarded (cl_waiting_cancel_req).
        let mut row = vec![
            text(&p.database),
            text(&p.user),
            num(p.cl_active),
            num(p.cl_waiting),
            num(p.cancels),
            num(0),
            num(p.sv_active),
            num(p.cancels),
            num(p.sv_settling),
            num(p.sv_idle),
            num(p.sv_used),
            num(p.sv_tested),
            num(p.sv_login),
            num(p.maxwait_us / 1_000_000),
            num(p.maxwait_us % 1_000_000),
            text(p.pool_mode),
            p.load_balance,
            num(p.pool_size),
            num(u8::from(p.paused)),
        ];
        row.extend(latency_cells(&p.period));
        rows.push(row);
    }
    rows
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Both,
    Totals,
    Averages,
}

/// Totals and the last period of every database (its pools merged), in name order.
fn per_database(shared: &Shared) -> BTreeMap<String, (Totals, Report)> {
    let mut dbs: BTreeMap<String, (Totals, Report)> = BTreeMap::new();
    for pool in shared.pools.all().iter().chain(shared.pools.retired().iter()) {
        let entry = dbs.entry(pool.database.clone()).or_default();
        entry.0.add(&Totals::of(&pool.stats));
        entry.1.merge(&period(&pool.stats));
    }
    dbs
}

fn stats(shared: &Shared, shape: Shape) -> Rows {
    let mut rows = Rows::new(&[("database", Ty::Text)]);
    let names = Totals::NAMES;
    // STATS_TOTALS and STATS_AVERAGES rename the byte counters (and keep avg_ on three).
    let short = |n: &str| match n {
        "received" => "bytes_received".to_string(),
        "sent" => "bytes_sent".to_string(),
        n => n.to_string(),
    };
    match shape {
        Shape::Both => {
            for n in names {
                rows.add_column(&format!("total_{n}"), Ty::Numeric);
            }
            for n in names {
                let n = match n {
                    "received" => "recv",
                    n => n,
                };
                rows.add_column(&format!("avg_{n}"), Ty::Numeric);
            }
            for n in LATENCY_COLUMNS {
                rows.add_column(n, Ty::Numeric);
            }
        }
        Shape::Totals => names.iter().for_each(|n| rows.add_column(&short(n), Ty::Numeric)),
        Shape::Averages => names.iter().enumerate().for_each(|(i, n)| {
            let name = if i >= 8 { format!("avg_{n}") } else { short(n) };
            rows.add_column(&name, Ty::Numeric);
        }),
    }
    for (db, (totals, report)) in per_database(shared) {
        let averages = report.delta.averages(report.secs);
        let mut row = vec![text(db)];
        if shape != Shape::Averages {
            row.extend(totals.0.iter().map(num));
        }
        if shape != Shape::Totals {
            row.extend(averages.0.iter().map(num));
        }
        if shape == Shape::Both {
            row.extend(latency_cells(&report));
        }
        rows.push(row);
    }
    rows
}

fn totals(shared: &Shared) -> Rows {
    let mut all = Totals::default();
    let mut report = Report::default();
    for (_, (t, r)) in per_database(shared) {
        all.add(&t);
        report.merge(&r);
    }
    let averages = report.delta.averages(report.secs);
    let name = |n: &str| match n {
        "received" => "client_bytes".to_string(),
        "sent" => "server_bytes".to_string(),
        n if n.ends_with("parse_count") || n == "bind_count" => format!("ps_{n}"),
        n => n.to_string(),
    };
    let mut rows = Rows::new(&[("name", Ty::Text), ("value", Ty::Numeric)]);
    for (prefix, values) in [("total", all), ("avg", averages)] {
        for (n, v) in Totals::NAMES.iter().zip(values.0) {
            rows.push(vec![text(format!("{prefix}_{}", name(n))), num(v)]);
        }
    }
    rows
}

/// Database names: those configured (but "*") and those a "*" entry serves now.
fn database_names(shared: &Shared) -> Vec<String> {
    let config = shared.config.load();
    let mut names: Vec<String> = config.databases.keys().filter(|n| *n != "*").cloned().collect();
    for pool in shared.pools.all() {
        if !names.contains(&pool.database) {
            names.push(pool.database.clone());
        }
    }
    names.sort();
    names
}

/// Server connections and clients of these pools.
fn usage<'a>(pools: impl Iterator<Item = &'a Arc<Pool>>) -> (u32, u32) {
    pools.fold((0, 0), |(s, c), p| {
        (
            s + p.counts.servers.load(Ordering::Relaxed),
            c + p.counts.clients.load(Ordering::Relaxed),
        )
    })
}

fn databases(shared: &Shared) -> Rows {
    let mut rows = Rows::new(&[
        ("name", Ty::Text),
        ("host", Ty::Text),
        ("port", Ty::Int4),
        ("database", Ty::Text),
        ("force_user", Ty::Text),
        ("pool_size", Ty::Int4),
        ("min_pool_size", Ty::Int4),
        ("reserve_pool_size", Ty::Int4),
        ("server_lifetime", Ty::Int4),
        ("pool_mode", Ty::Text),
        ("load_balance_hosts", Ty::Text),
        ("max_connections", Ty::Int4),
        ("current_connections", Ty::Int4),
        ("max_client_connections", Ty::Int4),
        ("current_client_connections", Ty::Int4),
        ("paused", Ty::Int4),
        ("disabled", Ty::Int4),
    ]);
    let config = shared.config.load();
    let pools = shared.pools.all();
    for name in database_names(shared) {
        let Some(db) = config.database(&name) else { continue };
        let (servers, clients) = usage(pools.iter().filter(|p| p.database == name));
        let gate = shared.pools.find_gate(&name);
        let flag = |f: fn(&crate::pool::Gate) -> bool| num(u8::from(gate.as_deref().is_some_and(f)));
        rows.push(vec![
            text(&name),
            text(&db.host),
            num(db.port),
            text(db.server_dbname(&name)),
            db.user.clone(),
            num(config.pool_size_for(&name)),
            num(config.min_pool_size_for(&name)),
            num(db.reserve_pool.unwrap_or(config.pooler.reserve_pool_size)),
            num(config.pooler.server_lifetime.as_secs()),
            db.pool_mode.map(|m| m.to_string()),
            load_balance(db),
            num(db.max_db_connections.unwrap_or(config.pooler.max_db_connections)),
            num(servers),
            num(0),
            num(clients),
            flag(|g| g.paused()),
            flag(|g| g.disabled()),
        ]);
    }
    rows
}

fn users(shared: &Shared) -> Rows {
    let mut rows = Rows::new(&[
        ("name", Ty::Text),
        ("pool_size", Ty::Text),
        ("reserve_pool_size", Ty::Text),
        ("pool_mode", Ty::Text),
        ("max_user_connections", Ty::Int4),
        ("current_connections", Ty::Int4),
        ("max_user_client_connections", Ty::Int4),
        ("current_client_connections", Ty::Int4),
    ]);
    let config = shared.config.load();
    let pools = shared.pools.all();
    let mut names: Vec<String> = config.users.keys().cloned().collect();
    for pool in &pools {
        if !names.contains(&pool.user) {
            names.push(pool.user.clone());
        }
    }
    names.sort();
    for name in names {
        let user = config.users.get(&name);
        let (servers, clients) = usage(pools.iter().filter(|p| p.user == name));
        let max = user
            .and_then(|u| u.max_user_connections)
            .unwrap_or(config.pooler.max_user_connections);
        rows.push(vec![
            text(&name),
            text(""),
            text(""),
            user.and_then(|u| u.pool_mode).map(|m| m.to_string()),
            num(max),
            num(servers),
            num(0),
            num(clients),
        ]);
    }
    rows
}

/// Keys read once at startup: SET cannot change them.
pub(super) const FIXED: [&str; 9] = [
    "listen_addr",
    "listen_port",
    "so_reuseport",
    "peer_id",
    "tls_mode",
    "tls_cert_file",
    "tls_key_file",
    "server_tls_mode",
    "server_tls_ca_file",
];

fn config(shared: &Shared) -> Rows {
    let config = shared.config.load();
    let defaults = crate::config::Config::default();
    let mut rows = Rows::of(&["key", "value", "default", "changeable"], Ty::Text);
    let sections = [
        ("", config.pooler.entries(), defaults.pooler.entries()),
        ("metrics.", config.metrics.entries(), defaults.metrics.entries()),
        ("breaker.", config.breaker.entries(), defaults.breaker.entries()),
    ];
    for (prefix, values, defaults) in sections {
        for ((key, value), (_, default)) in values.into_iter().zip(defaults) {
            let changeable = prefix.is_empty() && !FIXED.contains(&key);
            rows.push(vec![
                text(format!("{prefix}{key}")),
                text(value),
                text(default),
                text(if changeable { "yes" } else { "no" }),
            ]);
        }
    }
    rows
}

/// PgBouncer's SHOW PEERS: every [peers] entry (this process's own too, when listed).
fn peers(shared: &Shared) -> Rows {
    let config = shared.config.load();
    let mut rows = Rows::new(&[
        ("peer_id", Ty::Int4),
        ("host", Ty::Text),
        ("port", Ty::Int4),
        ("pool_size", Ty::Int4),
    ]);
    for (id, peer) in &config.peers {
        rows.push(vec![
            num(id),
            text(peer.host.clone()),
            num(peer.port),
            num(config.peer_pool_size(peer)),
        ]);
    }
    rows
}

/// The peers this process forwards cancel requests to: the other [peers] when peering is on.
fn peer_pool_ids(shared: &Shared) -> Vec<u16> {
    if shared.peer_id == 0 {
        return Vec::new();
    }
    let config = shared.config.load();
    config
        .peers
        .keys()
        .copied()
        .filter(|id| *id != shared.peer_id)
        .collect()
}

/// PgBouncer's SHOW PEER_POOLS: per peer, cancel requests forwarded there now (each on its
/// own connection, so cl_active_cancel_req = sv_active_cancel), waiting for a slot of its
/// pool_size; pgmux adds the totals since start.
fn peer_pools(shared: &Shared) -> Rows {
    let mut rows = Rows::new(&[
        ("peer_id", Ty::Int4),
        ("cl_active_cancel_req", Ty::Int4),
        ("cl_waiting_cancel_req", Ty::Int4),
        ("sv_active_cancel", Ty::Int4),
        ("sv_login", Ty::Int4),
        ("forwarded", Ty::Int8),
        ("failed", Ty::Int8),
    ]);
    for id in peer_pool_ids(shared) {
        let pool = shared.peers.get(id);
        let count = |f: fn(&crate::frontend::peer::PeerPool) -> u64| pool.as_deref().map_or(0, f);
        let active = count(|p| p.active.load(Ordering::Relaxed).into());
        rows.push(vec![
            num(id),
            num(active),
            num(count(|p| p.waiting.load(Ordering::Relaxed).into())),
            num(active),
            num(0),
            num(count(|p| p.forwarded.load(Ordering::Relaxed))),
            num(count(|p| p.failed.load(Ordering::Relaxed))),
        ]);
    }
    rows
}

fn lists_counts(shared: &Shared) -> Rows {
    let pools = shared.pools.all();
    let logged_in: u32 = pools.iter().map(|p| p.counts.clients.load(Ordering::Relaxed)).sum();
    let servers: u32 = pools.iter().map(|p| p.counts.servers.load(Ordering::Relaxed)).sum();
    let connected = shared.clients.load(Ordering::Relaxed);
    let users = {
        let config = shared.config.load();
        let mut names: Vec<&String> = config.users.keys().collect();
        let pool_users: Vec<String> = pools.iter().map(|p| p.user.clone()).collect();
        let extra = pool_users.iter().filter(|u| !names.contains(u)).count();
        names.dedup();
        names.len() + extra
    };
    let mut rows = Rows::new(&[("list", Ty::Text), ("items", Ty::Int4)]);
    for (list, items) in [
        ("databases", database_names(shared).len() as u64),
        ("users", users as u64),
        ("peers", shared.config.load().peers.len() as u64),
        ("pools", pools.len() as u64),
        ("peer_pools", peer_pool_ids(shared).len() as u64),
        ("free_clients", 0),
        ("used_clients", u64::from(connected)),
        ("login_clients", u64::from(connected.saturating_sub(logged_in))),
        ("free_servers", 0),
        ("used_servers", u64::from(servers)),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ] {
        rows.push(vec![text(list), num(items)]);
    }
    rows
}

fn state(shared: &Shared) -> Rows {
    let paused = shared.pools.all_gate.paused();
    let mut rows = Rows::of(&["key", "value"], Ty::Text);
    let yes = |b: bool| text(if b { "yes" } else { "no" });
    rows.push(vec![text("active"), yes(!paused && !shared.shutdown.is_draining())]);
    rows.push(vec![text("paused"), yes(paused)]);
    rows.push(vec![text("suspended"), yes(false)]);
    rows
}

fn breakers(shared: &Shared) -> Rows {
    let mut rows = Rows::new(&[
        ("host", Ty::Text),
        ("port", Ty::Int4),
        ("role", Ty::Text),
        ("state", Ty::Text),
        ("consecutive_failures", Ty::Int4),
        ("opened_at", Ty::Text),
        ("next_probe_at", Ty::Text),
        ("last_error", Ty::Text),
        ("refused_clients", Ty::Int8),
    ]);
    let wall = |at: Option<std::time::SystemTime>| {
        at.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| super::result::utc(d.as_secs()))
    };
    for b in shared.pools.breakers() {
        let s = b.snapshot();
        rows.push(vec![
            text(s.host),
            num(s.port),
            text(s.role.as_str()),
            text(s.state.as_str()),
            num(s.consecutive_failures),
            wall(s.opened_at),
            wall(s.next_probe_at),
            s.last_error,
            num(s.refused),
        ]);
    }
    rows
}

/// LISTEN/NOTIFY in transaction and statement modes: one row per pool and channel.
fn listeners(shared: &Shared) -> Rows {
    let mut rows = Rows::new(&[
        ("database", Ty::Text),
        ("user", Ty::Text),
        ("channel", Ty::Text),
        ("clients", Ty::Int4),
        ("delivered", Ty::Int8),
        ("dropped", Ty::Int8),
    ]);
    let mut pools = shared.pools.all();
    pools.sort_by(|a, b| (&a.database, &a.user).cmp(&(&b.database, &b.user)));
    for pool in pools {
        for c in pool.listen.rows() {
            rows.push(vec![
                text(&pool.database),
                text(&pool.user),
                text(c.channel),
                num(c.clients as u64),
                num(c.delivered),
                num(c.dropped),
            ]);
        }
    }
    rows
}

fn replicas(shared: &Shared) -> Rows {
    let mut rows = Rows::new(&[
        ("database", Ty::Text),
        ("host", Ty::Text),
        ("port", Ty::Int4),
        ("role", Ty::Text),
        ("state", Ty::Text),
        ("replay_lsn", Ty::Text),
        ("lag_bytes", Ty::Int8),
        ("lag_seconds", Ty::Numeric),
        ("last_check", Ty::Text),
        ("reads_served", Ty::Int8),
        ("excluded_reason", Ty::Text),
    ]);
    for r in view::replicas(shared) {
        let report = r.report;
        rows.push(vec![
            text(&r.database),
            text(&r.host),
            num(r.port),
            text(report.role),
            text(report.state),
            text(view::lsn(report.replay_lsn)),
            num(report.lag_bytes),
            num(format!("{:.3}", report.lag_seconds)),
            if report.last_check == 0 {
                None
            } else {
                time(report.last_check)
            },
            num(r.reads_served),
            text(report.excluded_reason),
        ]);
    }
    rows
}

fn slow_queries(shared: &Shared) -> Rows {
    let mut rows = Rows::new(&[
        ("database", Ty::Text),
        ("user", Ty::Text),
        ("query", Ty::Text),
        ("count", Ty::Int8),
        ("mean_us", Ty::Int8),
        ("max_us", Ty::Int8),
        ("last_seen", Ty::Text),
    ]);
    for pool in shared.pools.all() {
        for q in pool.stats.slow.list() {
            rows.push(vec![
                text(&pool.database),
                text(&pool.user),
                text(q.query),
                num(q.count),
                num(q.total_us / q.count.max(1)),
                num(q.max_us),
                time(q.last_us),
            ]);
        }
    }
    rows
}
