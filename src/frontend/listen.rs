//! The session's side of LISTEN/NOTIFY in transaction and statement modes (`crate::listen`):
//! what a transaction's LISTEN and UNLISTEN change once it ends, and the client's
//! notifications written out between its transactions.

use super::session::Session;
use super::track::listen_tags::{DISCARDED, FAILED, LISTENED};
use crate::listen::statement::{self, Op};
use crate::listen::{Hub, Mailbox};
use crate::pool::{Lease, Pool};
use crate::protocol::frame::{peek_header, read_cstr, HEADER_LEN};
use bytes::BytesMut;
use std::sync::Arc;
use std::time::Duration;

/// How long pgmux's own `UNLISTEN *` may take before the server is closed instead.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a LISTEN's answer waits for the listener connection to listen too: past it, the
/// client goes on and its notifications start once the listener connection is up.
const COVER_TIMEOUT: Duration = Duration::from_secs(5);

/// The LISTEN and UNLISTEN statements among complete client frames (Query, Parse).
pub fn collect(frames: &[u8], ops: &mut Vec<Op>) {
    let mut pos = 0;
    while let Ok(Some((tag, total))) = peek_header(frames.get(pos..).unwrap_or_default(), usize::MAX >> 1) {
        let body = frames.get(pos + HEADER_LEN..pos + total).unwrap_or_default();
        match tag {
            b'Q' => statement::parse(body, ops),
            b'P' => {
                let mut at = 0;
                if read_cstr(body, &mut at).is_some() {
                    if let Some(query) = read_cstr(body, &mut at) {
                        statement::parse(query, ops);
                    }
                }
            }
            _ => {}
        }
        pos += total;
    }
}

/// A NotificationResponse at `buf[at..]` from a server that ran LISTEN in this transaction:
/// dropped if the listener connection delivers it too (its channel is covered), else it goes
/// on to the client as PostgreSQL would send it. Returns where the scan goes on.
pub fn on_notification(buf: &mut BytesMut, at: usize, hub: &Hub) -> usize {
    let Some((_, total)) = buf
        .get(at..)
        .and_then(|b| peek_header(b, usize::MAX >> 1).ok().flatten())
    else {
        return buf.len();
    };
    let body = buf.get(at + HEADER_LEN..at + total).unwrap_or_default();
    let mut pos = 4;
    let covered = body.get(4..).is_some() && read_cstr(body, &mut pos).is_some_and(|c| hub.covers(c));
    if !covered {
        return at + total;
    }
    let rest = buf.split_off(at + total);
    buf.truncate(at);
    buf.unsplit(rest);
    at
}

/// A transaction that ran LISTEN, UNLISTEN or DISCARD ALL (`flags`, from the server's
/// CommandComplete tags) is over: the server forgets its LISTENs (`UNLISTEN *`), and the
/// client's subscriptions change as PostgreSQL's would at commit: first its UNLISTENs (`ops`),
/// then the channels the server listened to. False when the server must be closed.
pub async fn settle(
    mine: &mut Option<Arc<Mailbox>>,
    pool: &Arc<Pool>,
    lease: &mut Lease,
    flags: u8,
    ops: &[Op],
) -> bool {
    let mut listened = Vec::new();
    let mut early = Vec::new();
    if flags & LISTENED != 0 {
        let server = lease.conn();
        let run = server.run("SELECT pg_listening_channels(); UNLISTEN *");
        match tokio::time::timeout(CLEANUP_TIMEOUT, run).await {
            Ok(Ok(outcome)) if outcome.error.is_none() && outcome.status == b'I' => {
                listened.extend(outcome.row.into_iter().flatten().take(1));
                listened.extend(outcome.column);
                early = outcome.notifications;
            }
            _ => {
                tracing::warn!(pool = %lease.pool(), "UNLISTEN * failed on a server that ran LISTEN: closing it");
                return false;
            }
        }
    }
    // None: no UNLISTEN; Some(empty): UNLISTEN * (or DISCARD ALL). The server's channels are
    // added after, so LISTEN and UNLISTEN in either order end as PostgreSQL's would.
    let mut unlisten: Option<Vec<Vec<u8>>> = None;
    if flags & FAILED == 0 {
        if flags & DISCARDED != 0 || ops.contains(&Op::UnlistenAll) {
            unlisten = Some(Vec::new());
        } else {
            let names: Vec<Vec<u8>> = ops
                .iter()
                .filter_map(|op| match op {
                    Op::Unlisten(name) => Some(name.clone().into_bytes()),
                    _ => None,
                })
                .collect();
            unlisten = (!names.is_empty()).then_some(names);
        }
    }
    if listened.is_empty() && (unlisten.is_none() || mine.is_none()) {
        return true;
    }
    let mailbox = mine.get_or_insert_with(Default::default).clone();
    let listened: Vec<Vec<u8>> = listened.into_iter().map(String::into_bytes).collect();
    let wait = subscribe(pool, &mailbox, unlisten.as_deref(), &listened);
    // Notifications the server got between its LISTEN and UNLISTEN *, which the listener
    // connection was not there to see.
    for frame in early {
        let mut pos = HEADER_LEN + 4;
        let channel = read_cstr(&frame, &mut pos).map(<[u8]>::to_vec);
        if channel.is_some_and(|c| listened.contains(&c) && !pool.listen.covers(&c)) {
            mailbox.push(&frame);
        }
    }
    wait_covered(pool, wait).await;
    true
}

/// Subscribes `mailbox` in its pool's hub, first `unlisten` then `listen` (`Hub::update`),
/// starting the pool's listener connection where it has none; the generation that connection
/// must reach before the new channels are covered.
pub fn subscribe(
    pool: &Arc<Pool>,
    mailbox: &Arc<Mailbox>,
    unlisten: Option<&[Vec<u8>]>,
    listen: &[Vec<u8>],
) -> Option<u64> {
    let (wait, spawn) = pool.listen.update(mailbox, unlisten, listen);
    if spawn {
        crate::listen::listener::spawn(pool.clone());
    }
    wait
}

/// Waits, COVER_TIMEOUT at most, until the listener connection listens on `generation`'s channels.
pub async fn wait_covered(pool: &Pool, generation: Option<u64>) {
    let Some(generation) = generation else { return };
    if tokio::time::timeout(COVER_TIMEOUT, pool.listen.covered(generation))
        .await
        .is_err()
    {
        tracing::warn!(pool = %pool, "the listener connection is not listening yet: notifications start once it is");
    }
}

/// Writes the client's waiting notifications (it is idle).
pub async fn deliver(s: &mut Session) -> std::io::Result<()> {
    let Some(mailbox) = &s.listen else { return Ok(()) };
    let mut out = BytesMut::new();
    mailbox.take(&mut out);
    if out.is_empty() {
        return Ok(());
    }
    s.client.write(&out).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::test_frame as frame;

    #[test]
    fn collects_from_queries_and_parses() {
        let mut frames = frame(b'Q', b"LISTEN a; unlisten \"B\"\0");
        frames.extend(frame(b'P', b"s1\0UNLISTEN *\0\0\0"));
        frames.extend(frame(b'B', b"\0s1\0\0\0\0\0\0\0"));
        let mut ops = Vec::new();
        collect(&frames, &mut ops);
        assert_eq!(ops, [Op::Listen("a".into()), Op::Unlisten("B".into()), Op::UnlistenAll]);
    }

    #[test]
    fn drops_only_what_the_listener_delivers() {
        let hub = Hub::default();
        let mailbox = std::sync::Arc::new(crate::listen::Mailbox::default());
        hub.update(&mailbox, None, &[b"x".to_vec()]);
        hub.set_applied(1);
        let mut buf = BytesMut::from(&frame(b'C', b"LISTEN\0")[..]);
        let at = buf.len();
        buf.extend_from_slice(&frame(b'A', b"\0\0\0\x07x\0p\0"));
        let after_x = buf.len();
        buf.extend_from_slice(&frame(b'A', b"\0\0\0\x07y\0p\0"));
        buf.extend_from_slice(&frame(b'Z', b"I"));
        assert_eq!(on_notification(&mut buf, at, &hub), at, "x: the listener has it");
        let y = on_notification(&mut buf, at, &hub);
        assert_eq!(y, at + (buf.len() - at) - 6, "y goes on to the client");
        assert!(after_x > at);
    }
}
