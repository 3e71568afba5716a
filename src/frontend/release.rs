//! Giving a server back after a transaction: at once when it is clean, after the cancels aimed
//! at it have landed, after a RESET ALL or a ROLLBACK; closed when its state is unknown.

use super::cancel::CancelHandle;
use super::conn::ClientConn;
use crate::backend::Settings;
use crate::config::PoolMode;
use crate::pool::{Lease, Pool};
use crate::protocol::frame::peek_header;
use bytes::Buf;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long pgmux's own clean-up (ROLLBACK, server_reset_query, a cancel landing) may take
/// before the server is closed instead.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Returns a server whose transaction ended, once any cancel aimed at it has landed: at once
/// when none is in flight, else after the boxed wait.
pub async fn give_back(lease: Lease, cancel: &CancelHandle) {
    if let Some(lease) = give_back_now(lease, cancel) {
        // Boxed (only when a cancel is in flight): the wait would weigh on every idle client's task.
        Box::pin(settle_then_give_back(lease, cancel)).await
    }
}

/// `give_back` without a future: the lease back when a cancel in flight must land first. The
/// client's handle must be detached from the server already (`CancelHandle::detach`).
pub fn give_back_now(mut lease: Lease, cancel: &CancelHandle) -> Option<Lease> {
    if !known_state(lease.conn()) {
        return None;
    }
    if cancel.cancels_in_flight() > 0 {
        return Some(lease);
    }
    lease.release();
    None
}

/// Whether a server whose transaction ended may serve another client: no bytes after its last
/// ReadyForQuery, and no LISTEN of its own to settle.
#[inline]
pub fn known_state(server: &crate::backend::ServerConn) -> bool {
    server.buf.is_empty() && !server.listening
}

pub async fn settle_then_give_back(lease: Lease, cancel: &CancelHandle) {
    let pool = lease.pool().clone();
    // SHOW POOLS' sv_being_canceled: it waits for the cancels aimed at it to land.
    pool.counts.settling.fetch_add(1, Ordering::Relaxed);
    // Polled: rare (a cancel in flight as the transaction ended), and a waiter list in every
    // client's handle would weigh on every idle client.
    let settled = tokio::time::timeout(CLEANUP_TIMEOUT, async {
        while cancel.cancels_in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .is_ok();
    pool.counts.settling.fetch_sub(1, Ordering::Relaxed);
    if settled {
        lease.release();
    }
}

/// A SET pgmux did not follow changed the server's settings: RESET ALL brings it back to
/// what the pool logged in with (nothing applied), RESET ROLE and SESSION AUTHORIZATION (which
/// RESET ALL leaves) back to the pool's user. False when the server must be closed.
pub async fn reset_settings(lease: &mut Lease) -> bool {
    let server = lease.conn();
    let sql = "RESET ALL; RESET ROLE; RESET SESSION AUTHORIZATION";
    let reset = tokio::time::timeout(CLEANUP_TIMEOUT, server.run(sql)).await;
    match reset {
        Ok(Ok(outcome)) if outcome.error.is_none() && outcome.status == b'I' => {
            server.settings = Settings::default();
            true
        }
        _ => false,
    }
}

/// The client left while holding this server: roll back what it left open, then give the
/// server back; anything in an unknown state is closed instead.
pub fn clean_up<'a>(
    lease: Lease,
    client: &'a ClientConn,
    cancel: &'a CancelHandle,
    pool: &'a Pool,
    reset_query: &'a str,
) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    Box::pin(roll_back(lease, client, cancel, pool, reset_query))
}

async fn roll_back(mut lease: Lease, client: &ClientConn, cancel: &CancelHandle, pool: &Pool, reset_query: &str) {
    let mode = pool.mode();
    let tracker = client.tracker;
    let server = lease.conn();
    if !tracker.quiet() || !server.buf.is_empty() {
        // A query is in flight. Closing the socket alone would leave the backend running it
        // until it next writes, so cancel it, then drop the lease to close the connection.
        let target = pool.target.clone();
        let (pid, key) = (server.process_id, server.secret_key);
        tokio::spawn(async move {
            if let Err(e) = crate::backend::cancel::cancel(&target, pid, key).await {
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
        give_back(lease, cancel).await;
    }
}

/// Drops the frame at the front of the server's buffer (a ReadyForQuery held back).
pub fn drop_frame(server: &mut crate::backend::ServerConn) {
    if let Ok(Some((_, total))) = peek_header(&server.buf, usize::MAX >> 1) {
        if server.buf.len() >= total {
            server.buf.advance(total);
        }
    }
}
