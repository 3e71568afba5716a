//! The way back: the server's replies matched against the queue of replies pgmux expects
//! (`server::Reply`): answers to what pgmux injected are swallowed, those to what it replaced
//! are rewritten, and errors undo the bookkeeping of every message the server skipped.

use super::server::{QueryReply, Reply, ReplyKind};
use super::statement;
use super::{ClientStatements, ServerStatements};
use crate::backend::server::parse_error;
use crate::protocol::frame::{peek_header, HEADER_LEN};
use bytes::BytesMut;

/// Handles the complete frame at `buf[pos..]`; returns where the scan goes on (`pos` itself
/// when the frame was swallowed). `answered` counts the ReadyForQuery seen so far.
pub fn on_reply(
    buf: &mut BytesMut,
    pos: usize,
    view: &mut ClientStatements,
    server: &mut ServerStatements,
    answered: u32,
) -> usize {
    let Some((tag, total)) = buf
        .get(pos..)
        .and_then(|b| peek_header(b, usize::MAX >> 1).ok().flatten())
    else {
        return buf.len();
    };
    let Some(body) = buf.get(pos + HEADER_LEN..pos + total) else {
        return buf.len();
    };
    // Stretches already over: whatever of them is still queued was skipped.
    let stale = take_while(server, |r| (answered.wrapping_sub(r.epoch) as i32) > 0);
    undo(stale, view, server);
    let current = server.replies.front().filter(|r| r.epoch == answered).map(|r| &r.kind);
    let replacement = match (tag, current) {
        (b'1', Some(ReplyKind::Parse { .. })) => match server.replies.pop_front().map(|r| r.kind) {
            Some(ReplyKind::Parse { swallow, key, gen, .. }) => {
                server.parsed(key, gen);
                swallow.then(BytesMut::new)
            }
            _ => None,
        },
        (b'3', Some(ReplyKind::Close { swallow, .. })) => {
            let swallow = *swallow;
            server.replies.pop_front();
            swallow.then(BytesMut::new)
        }
        (b'I', Some(ReplyKind::Query(QueryReply::Empty(command)))) => {
            let mut out = BytesMut::new();
            statement::command_complete(&mut out, command);
            server.replies.pop_front();
            Some(out)
        }
        (b'C', Some(ReplyKind::Query(QueryReply::Discard(_)))) => {
            // The client's own DISCARD ALL: both sides were emptied when it was sent.
            server.replies.pop_front();
            None
        }
        (b'C', _) => {
            if body.starts_with(b"DISCARD ALL\0") || body.starts_with(b"DEALLOCATE ALL\0") {
                server.clear();
                view.take();
            }
            None
        }
        (b'E', _) => on_error(body, view, server, answered),
        _ => None,
    };
    match replacement {
        None => pos + total,
        Some(new) => {
            let rest = buf[pos + total..].to_vec();
            buf.truncate(pos);
            buf.extend_from_slice(&new);
            let next = buf.len();
            buf.extend_from_slice(&rest);
            next
        }
    }
}

/// An ErrorResponse: the server skips to the next Sync, so every queued message of this
/// stretch did not happen. Returns the error the client gets instead, if it is not this one.
fn on_error(
    body: &[u8],
    view: &mut ClientStatements,
    server: &mut ServerStatements,
    answered: u32,
) -> Option<BytesMut> {
    let front = server.replies.front().filter(|r| r.epoch == answered)?;
    let mut replacement = None;
    match &front.kind {
        ReplyKind::Query(reply) => {
            // A Query's error is its own: nothing after it is skipped.
            if let QueryReply::Refuse(ours) = reply {
                if parse_error(body).code == "42601" {
                    replacement = Some(encoded(ours));
                }
            }
            if let Some(ReplyKind::Query(QueryReply::Discard(saved))) = server.replies.pop_front().map(|r| r.kind) {
                view.restore_all(saved);
            }
            return replacement;
        }
        // The probe's own error, not one of a message before it.
        ReplyKind::Duplicate(ours) if parse_error(body).message.contains(statement::PROBE) => {
            replacement = Some(encoded(ours));
        }
        _ => {}
    }
    let skipped = take_while(server, |r| {
        r.epoch == answered && !matches!(r.kind, ReplyKind::Query(_))
    });
    undo(skipped, view, server);
    replacement
}

fn take_while(server: &mut ServerStatements, keep: impl Fn(&Reply) -> bool) -> Vec<Reply> {
    let mut taken = Vec::new();
    while let Some(front) = server.replies.front() {
        if !keep(front) {
            break;
        }
        taken.extend(server.replies.pop_front());
    }
    taken
}

/// Undoes messages the server skipped, the last one first (a Close then a Parse of one name
/// leaves the name as it was before both).
fn undo(skipped: Vec<Reply>, view: &mut ClientStatements, server: &mut ServerStatements) {
    for reply in skipped.into_iter().rev() {
        match reply.kind {
            ReplyKind::Parse { key, gen, client, .. } => {
                server.failed(key, gen);
                if let Some((name, stmt)) = client {
                    view.remove_if_same(&name, &stmt);
                }
            }
            ReplyKind::Close {
                undo: Some((name, stmt)),
                ..
            } => view.restore(&name, stmt),
            _ => {}
        }
    }
}

fn encoded(error: &crate::protocol::messages::PgError) -> BytesMut {
    let mut out = BytesMut::new();
    error.encode(&mut out);
    out
}
