//! Console commands that act: PAUSE, RESUME, RECONNECT, KILL, KILL_CLIENT, DISABLE, ENABLE,
//! RELOAD, SHUTDOWN, WAIT_CLOSE, SET.

use super::command::{Command, ShutdownMode};
use super::pools_of;
use super::result::complete;
use crate::frontend::Shared;
use crate::pool::Gate;
use crate::protocol::messages::PgError;
use crate::shutdown::Mode;
use crate::stats::CloseReason;
use bytes::BytesMut;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How often a PAUSE or WAIT_CLOSE looks again at what it waits for.
const POLL: Duration = Duration::from_millis(20);

pub async fn run(shared: &Arc<Shared>, command: Command, out: &mut BytesMut) -> Result<(), PgError> {
    let tag = match command {
        Command::Pause(db) => {
            let gate = gate(shared, db.as_deref())?;
            if !gate.pause() {
                return Err(state_error(db.as_deref(), "is already paused"));
            }
            // Transactions in flight finish; their servers close as they come back.
            while pools_of(shared, db.as_deref())?
                .iter()
                .any(|p| p.counts.active.load(Ordering::Relaxed) > 0)
            {
                if !gate.paused() {
                    break; // resumed meanwhile
                }
                tokio::time::sleep(POLL).await;
            }
            close_idle(shared, db.as_deref(), "PAUSE")?;
            "PAUSE"
        }
        Command::Resume(db) => {
            if !gate(shared, db.as_deref())?.resume() {
                return Err(state_error(db.as_deref(), "is not paused"));
            }
            "RESUME"
        }
        Command::Reconnect(db) => {
            for pool in pools_of(shared, db.as_deref())? {
                pool.reconnect();
                // Also its breakers: the operator says the servers are worth trying again.
                pool.breaker.reset();
                for replica in pool.replica_pools() {
                    replica.reconnect();
                    replica.breaker.reset();
                }
            }
            "RECONNECT"
        }
        Command::Kill(db) => {
            let pools = pools_of(shared, db.as_deref())?;
            gate(shared, db.as_deref())?.pause();
            for client in shared.cancels.all() {
                if pools.iter().any(|p| Arc::ptr_eq(p, &client.pool)) {
                    client.kill();
                }
            }
            close_idle(shared, db.as_deref(), "KILL")?;
            "KILL"
        }
        Command::KillClient(id) => {
            let client = id
                .parse::<i32>()
                .ok()
                .and_then(|id| shared.cancels.get(id))
                .ok_or_else(|| {
                    PgError::new("42704", format!("no client with id {id}")).with_hint("SHOW CLIENTS lists the ids")
                })?;
            client.kill();
            "KILL_CLIENT"
        }
        Command::Disable(db) | Command::Enable(db) if pools_of(shared, Some(&db)).is_err() => {
            return Err(PgError::new("3D000", format!("no such database: {db}")))
        }
        Command::Disable(db) => {
            shared.pools.gate(&db).set_disabled(true);
            "DISABLE"
        }
        Command::Enable(db) => {
            shared.pools.gate(&db).set_disabled(false);
            "ENABLE"
        }
        Command::Reload => {
            crate::reload::reload(shared)
                .map_err(|e| PgError::new("F0000", format!("RELOAD failed, the configuration stays: {e}")))?;
            "RELOAD"
        }
        Command::Shutdown(mode) => {
            shutdown(shared, mode);
            "SHUTDOWN"
        }
        Command::WaitClose(db) => {
            while pools_of(shared, db.as_deref())?
                .iter()
                .any(|p| p.counts.stale.load(Ordering::Relaxed) > 0)
            {
                tokio::time::sleep(POLL).await;
            }
            "WAIT_CLOSE"
        }
        Command::Set { key, value } => {
            set(shared, &key, &value)?;
            "SET"
        }
        Command::Show(_) => unreachable!("SHOW is answered by show::show"),
    };
    complete(out, tag);
    Ok(())
}

/// The gate of one database, or of all.
fn gate(shared: &Shared, db: Option<&str>) -> Result<Arc<Gate>, PgError> {
    pools_of(shared, db)?;
    Ok(match db {
        Some(db) => shared.pools.gate(db),
        None => shared.pools.all_gate.clone(),
    })
}

fn state_error(db: Option<&str>, what: &str) -> PgError {
    match db {
        Some(db) => PgError::new("55000", format!("database {db} {what}")),
        None => PgError::new("55000", format!("pgmux {what}")),
    }
}

fn close_idle(shared: &Shared, db: Option<&str>, why: &str) -> Result<(), PgError> {
    for pool in pools_of(shared, db)? {
        while pool.close_one_idle(why, CloseReason::Admin) {}
    }
    Ok(())
}

fn shutdown(shared: &Arc<Shared>, mode: ShutdownMode) {
    let timeout = shared.config.load().pooler.shutdown_timeout;
    match mode {
        ShutdownMode::Now => {
            shared.shutdown.begin(Mode::Refuse, timeout);
        }
        ShutdownMode::WaitForServers => {
            shared.shutdown.begin(Mode::Graceful, timeout);
        }
        ShutdownMode::WaitForClients => {
            shared.shutdown.stop_accepting();
            let shared = shared.clone();
            tokio::spawn(async move {
                while shared.clients.load(Ordering::Acquire) > 0 {
                    tokio::time::sleep(POLL).await;
                }
                shared.shutdown.begin(Mode::Graceful, timeout);
            });
        }
    }
    tracing::warn!(?mode, "SHUTDOWN from the console");
}

/// SET key = value: one [pooler] setting, checked as the file's would be, for new logins and
/// the pools at once; the file is not changed (a RELOAD goes back to it).
fn set(shared: &Shared, key: &str, value: &str) -> Result<(), PgError> {
    if super::show::FIXED.contains(&key) {
        return Err(PgError::new(
            "55P02",
            format!("{key} is read at startup only: change it in pooler.toml and restart"),
        ));
    }
    let config = shared.config.load_full();
    let new = config
        .with_pooler_key(key, value)
        .map_err(|e| PgError::new("22023", format!("SET {key} refused: {e}")))?;
    let new = Arc::new(new);
    shared.set_config(new.clone());
    shared.pools.reconfigure(&new);
    tracing::info!(key, value, "setting changed from the console");
    Ok(())
}
