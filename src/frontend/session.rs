//! The session loop of one logged-in client: wait for a request, take a server, relay the
//! transaction, give the server back clean.

use super::conn::{ClientConn, Request, Waited};
use super::drain::{self, Watch};
use super::relay::{relay, RelayEnd};
use crate::backend::Settings;
use crate::config::PoolMode;
use crate::pool::{Lease, Pool};
use crate::protocol::frame::peek_header;
use crate::protocol::messages::PgError;
use bytes::Buf;
use std::sync::Arc;
use std::time::Duration;

/// How long pgmux's own clean-up (ROLLBACK, server_reset_query) may take before the server is
/// closed instead.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(mut client: ClientConn, pool: Arc<Pool>, mut settings: Settings, watch: Watch) {
    let mode = pool.settings().mode;
    let release_at_idle = mode != PoolMode::Session;
    loop {
        match drain::next_request(&mut client, &watch).await {
            Request::Ready => {}
            Request::Gone => return,
            Request::Invalid(e) => return client.send_error(&e).await,
        }
        let waited = drain::until_deadline(&watch, client.wait_with(checkout(&pool, &settings))).await;
        let mut lease = match waited {
            Some(Waited::Done(Ok(lease))) => lease,
            Some(Waited::Done(Err(e)) | Waited::Invalid(e)) => return client.send_error(&e).await,
            Some(Waited::Gone) => return,
            None => return drain::cut(&mut client, None, &pool, &watch).await,
        };
        // Session mode never sees Release: the relay runs until the client leaves.
        let end = relay(
            &mut client,
            lease.conn(),
            &mut settings,
            release_at_idle,
            mode == PoolMode::Statement,
        );
        let Some(end) = drain::until_deadline(&watch, end).await else {
            return drain::cut(&mut client, Some(lease), &pool, &watch).await;
        };
        match end {
            RelayEnd::Release => {
                // Bytes after the last ReadyForQuery: the server is not in a state we know.
                if lease.conn().buf.is_empty() {
                    lease.release();
                } else {
                    drop(lease);
                }
                if client.flush_out().await.is_err() {
                    return;
                }
            }
            RelayEnd::ClientGone => return clean_up(lease, &client, &pool, &pool.settings().server_reset_query).await,
            RelayEnd::TransactionBlock => {
                let error = PgError::fatal(
                    "0A000",
                    "transaction blocks are not allowed in statement pooling mode (pool_mode = \"statement\")",
                )
                .with_hint(
                    "run each statement on its own, or use pool_mode = \"transaction\" for this database or user",
                );
                client.send_error(&error).await;
                drop_frame(lease.conn());
                return clean_up(lease, &client, &pool, "").await;
            }
            RelayEnd::ClientInvalid(e) => {
                client.send_error(&e).await;
                return clean_up(lease, &client, &pool, &pool.settings().server_reset_query).await;
            }
            RelayEnd::ServerGone(e) => {
                let addr = lease.conn().addr.clone();
                tracing::warn!(pool = %pool, server = %addr, error = %e, "server connection lost");
                let error = PgError::fatal("08006", format!("server connection lost ({addr}): {e}"))
                    .with_hint("the server closed the connection or crashed; reconnect to get a new one");
                return client.send_error(&error).await;
            }
        }
    }
}

/// Takes a server and brings its session settings to the client's.
async fn checkout(pool: &Arc<Pool>, settings: &Settings) -> Result<Lease, PgError> {
    let mut lease = pool.checkout().await.map_err(|e| e.to_pg())?;
    let server = lease.conn();
    if let Some(sql) = settings.apply_sql(&server.settings) {
        match server.run(&sql).await {
            Ok(outcome) if outcome.error.is_none() && outcome.status == b'I' => server.settings = settings.clone(),
            Ok(outcome) => {
                let mut error = outcome
                    .error
                    .unwrap_or_else(|| PgError::new("08P01", "could not apply settings"));
                error.fatal = true;
                return Err(error.with_hint("a startup parameter of this connection was refused by the server"));
            }
            Err(e) => return Err(e.to_pg()),
        }
    }
    Ok(lease)
}

/// The client left while holding this server: roll back what it left open, then give the
/// server back; anything in an unknown state is closed instead.
async fn clean_up(mut lease: Lease, client: &ClientConn, pool: &Pool, reset_query: &str) {
    let mode = pool.settings().mode;
    let tracker = client.tracker;
    let server = lease.conn();
    if !tracker.quiet() || !server.buf.is_empty() {
        // A query is in flight. Closing the socket alone would leave the backend running it
        // until it next writes, so cancel it, then drop the lease to close the connection.
        let (host, port) = (pool.target.host.clone(), pool.target.port);
        let (pid, key) = (server.process_id, server.secret_key);
        tokio::spawn(async move {
            if let Err(e) = crate::backend::cancel::cancel(&host, port, pid, key).await {
                tracing::debug!(error = %e, "cancel of an abandoned query failed");
            }
        });
        return;
    }
    let work = async {
        if tracker.status != b'I' {
            let outcome = server.run("ROLLBACK").await.ok()?;
            (outcome.error.is_none() && outcome.status == b'I').then_some(())?;
        }
        if mode == PoolMode::Session && !reset_query.is_empty() {
            let outcome = server.run(reset_query).await.ok()?;
            (outcome.status == b'I').then_some(())?;
            server.settings = Settings::default();
        }
        Some(())
    };
    if let Ok(Some(())) = tokio::time::timeout(CLEANUP_TIMEOUT, work).await {
        lease.release();
    }
}

/// Drops the frame at the front of the server's buffer (a ReadyForQuery held back).
fn drop_frame(server: &mut crate::backend::ServerConn) {
    if let Ok(Some((_, total))) = peek_header(&server.buf, usize::MAX >> 1) {
        if server.buf.len() >= total {
            server.buf.advance(total);
        }
    }
}
