//! SHOW CLIENTS and SHOW SERVERS: one row per connection, PgBouncer's 21 columns.

use super::result::{num, text, time, Cell, Rows, Ty};
use crate::frontend::Shared;
use crate::stats::now_us;
use std::sync::atomic::Ordering;

fn columns() -> Rows {
    use Ty::*;
    Rows::new(&[
        ("type", Text),
        ("user", Text),
        ("database", Text),
        ("replication", Text),
        ("state", Text),
        ("addr", Text),
        ("port", Int4),
        ("local_addr", Text),
        ("local_port", Int4),
        ("connect_time", Text),
        ("request_time", Text),
        ("wait", Int4),
        ("wait_us", Int4),
        ("close_needed", Int4),
        ("ptr", Text),
        ("link", Text),
        ("remote_pid", Int4),
        ("tls", Text),
        ("application_name", Text),
        ("prepared_statements", Int4),
        ("id", Int8),
    ])
}

fn tls(on: bool) -> Cell {
    text(if on { "TLS" } else { "" })
}

pub fn clients(shared: &Shared) -> Rows {
    let mut rows = columns();
    let config = shared.config.load();
    let (local_addr, local_port) = (&config.pooler.listen_addr, config.pooler.listen_port);
    let now = now_us();
    for h in shared.cancels.all() {
        let held = h.held();
        let waiting_since = h.wait_since.load(Ordering::Relaxed);
        let state = match (&held, waiting_since) {
            (Some(_), _) => "active",
            (None, 0) => "idle",
            (None, _) => "waiting",
        };
        let wait = if waiting_since == 0 {
            0
        } else {
            now.saturating_sub(waiting_since)
        };
        rows.push(vec![
            text("C"),
            text(&h.pool.user),
            text(&h.pool.database),
            text("none"),
            text(state),
            h.peer().map(|p| p.ip().to_string()),
            h.peer().map(|p| p.port().to_string()),
            text(local_addr),
            num(local_port),
            time(u64::from(h.connected_s) * 1_000_000),
            time(u64::from(h.request_s.load(Ordering::Relaxed)) * 1_000_000),
            num(wait / 1_000_000),
            num(wait % 1_000_000),
            num(0),
            text(format!("c{}", h.process_id)),
            text(held.map(|s| format!("s{}", s.server_id)).unwrap_or_default()),
            num(0),
            tls(h.tls),
            text(h.settings.get("application_name").unwrap_or_default()),
            num(0),
            num(h.process_id),
        ]);
    }
    rows
}

pub fn servers(shared: &Shared) -> Rows {
    let mut rows = columns();
    let mut row = |pool: &crate::pool::Pool, state: &str, s: ServerFacts| {
        rows.push(vec![
            text("S"),
            text(&pool.credentials().user),
            text(&pool.database),
            text("none"),
            text(state),
            text(&pool.target.host),
            num(pool.target.port),
            None,
            None,
            time(s.created_us),
            time(s.request_at),
            num(0),
            num(0),
            num(0),
            text(format!("s{}", s.id)),
            text(s.link),
            num(s.process_id),
            tls(s.tls),
            text(""),
            num(0),
            num(s.id),
        ]);
    };
    for h in shared.cancels.all() {
        if let Some(held) = h.held() {
            let pool = held.other_pool.clone().unwrap_or_else(|| h.pool.clone());
            let facts = ServerFacts {
                id: held.server_id,
                process_id: held.process_id,
                created_us: u64::from(held.created_s) * 1_000_000,
                request_at: u64::from(h.request_s.load(Ordering::Relaxed)) * 1_000_000,
                link: format!("c{}", h.process_id),
                tls: held.tls,
            };
            row(&pool, "active", facts);
        }
    }
    for pool in shared.pools.all() {
        for idle in pool.idle_servers() {
            let facts = ServerFacts {
                id: idle.id,
                process_id: idle.process_id,
                created_us: idle.created_us,
                request_at: idle.idle_since_us,
                link: String::new(),
                tls: idle.tls,
            };
            row(&pool, if idle.used { "used" } else { "idle" }, facts);
        }
    }
    rows
}

struct ServerFacts {
    id: u64,
    process_id: i32,
    created_us: u64,
    request_at: u64,
    link: String,
    tls: bool,
}
