//! A pool's listener connection: a server connection outside the pool's limits that LISTENs
//! on every channel the pool's clients listen to, and hands each notification to the hub.
//! Lost, it is opened again with the same channels (its subscribers are told they may have
//! missed some); it closes when no channel is left.

use super::statement::quote_ident;
use super::Hub;
use crate::backend::{connect::connect, ServerConn};
use crate::pool::Pool;
use crate::protocol::frame::{peek_header, read_cstr, HEADER_LEN};
use bytes::Bytes;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Waits between attempts to open a lost listener connection: doubling up to the last.
const RETRY: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(15);

/// Starts `pool`'s listener task (the hub said one is needed).
pub fn spawn(pool: Arc<Pool>) {
    crate::worker::spawn_off_workers(async move { run(pool).await });
}

async fn run(pool: Arc<Pool>) {
    let hub = &pool.listen;
    let mut retry = RETRY;
    loop {
        if hub.retire_if_idle() {
            return;
        }
        let mut target = pool.target.clone();
        target.connect_timeout = pool.settings().server_connect_timeout;
        let conn = match connect(&target, &pool.credentials()).await {
            Ok((conn, _)) => conn,
            Err(e) => {
                tracing::warn!(pool = %pool, error = %e, "could not open the listener connection (LISTEN/NOTIFY); retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        };
        retry = RETRY;
        tracing::info!(pool = %pool, backend_pid = conn.process_id, "listener connection open (LISTEN/NOTIFY)");
        match serve(hub, conn).await {
            Ok(()) => tracing::info!(pool = %pool, "listener connection closed: no channel left"),
            Err(e) => {
                tracing::warn!(pool = %pool, error = %e, "listener connection lost (LISTEN/NOTIFY): reopening it");
                hub.lost();
            }
        }
    }
}

/// Listens on what the hub wants until no channel is left (Ok) or the connection fails.
async fn serve(hub: &Hub, mut conn: Box<ServerConn>) -> std::io::Result<()> {
    let mut listening: HashSet<Vec<u8>> = HashSet::new();
    loop {
        let (generation, wanted) = hub.wanted();
        if wanted.is_empty() {
            let _ = conn.stream.write_all(b"X\0\0\0\x04").await;
            return Ok(());
        }
        let mut sql = String::new();
        for name in wanted.iter().filter(|n| !listening.contains(*n)) {
            sql.push_str(&format!("LISTEN {};", quote_ident(&String::from_utf8_lossy(name))));
        }
        let wanted: HashSet<Vec<u8>> = wanted.into_iter().collect();
        for name in listening.difference(&wanted) {
            sql.push_str(&format!("UNLISTEN {};", quote_ident(&String::from_utf8_lossy(name))));
        }
        if !sql.is_empty() {
            let mut out = bytes::BytesMut::new();
            crate::protocol::messages::query(&mut out, &sql);
            conn.stream.write_all(&out).await?;
            conn.stream.flush().await?;
            while !read_frames(hub, &mut conn)? {
                read_more(&mut conn).await?;
            }
            listening = wanted;
        }
        hub.set_applied(generation);
        tokio::select! {
            _ = hub.changed.notified() => {}
            read = read_more(&mut conn) => {
                read?;
                read_frames(hub, &mut conn)?;
            }
        }
    }
}

async fn read_more(conn: &mut ServerConn) -> std::io::Result<()> {
    match conn.stream.read_buf(&mut conn.buf).await? {
        0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(()),
    }
}

/// Handles the complete frames buffered: notifications go to the hub, an error is logged.
/// Returns whether a ReadyForQuery was among them.
fn read_frames(hub: &Hub, conn: &mut ServerConn) -> std::io::Result<bool> {
    let mut ready = false;
    loop {
        let header = peek_header(&conn.buf, 1 << 20).map_err(|e| std::io::Error::other(e.to_string()))?;
        let Some((tag, total)) = header.filter(|(_, total)| conn.buf.len() >= *total) else {
            return Ok(ready);
        };
        let frame = conn.buf.split_to(total).freeze();
        let body = frame.get(HEADER_LEN..).unwrap_or_default();
        match tag {
            b'A' => {
                let mut at = 4;
                if let Some(channel) = body.get(4..).and_then(|_| read_cstr(body, &mut at)) {
                    hub.deliver(channel, &Bytes::clone(&frame));
                }
            }
            b'E' => {
                let error = crate::backend::server::parse_error(body);
                tracing::warn!(%error, "the listener connection's LISTEN or UNLISTEN failed");
            }
            b'Z' => ready = true,
            _ => {}
        }
    }
}
