//! Parses answered without a server.
//!
//! libpq's PQprepare (and so `pgbench -M prepared`) sends a lone Parse and Sync and blocks until
//! the answer. A client that is not in a transaction holds no server, so that Parse must wait
//! for one; if the same thread's other clients hold every server mid-transaction, nobody moves
//! again (a deadlock until query_wait_timeout). A statement some server of the pool has already
//! parsed is therefore answered at once: pgmux records it in the client's view and replies
//! ParseComplete and ReadyForQuery itself; the Parse reaches a server when the statement is
//! used, injected as for any statement the server lacks. An error the server would have given
//! (a table dropped since) then comes with the Bind or Describe instead.

use super::{ClientStatements, Statement};
use crate::protocol::frame::{peek_header, read_cstr, HEADER_LEN};
use crate::protocol::messages;
use bytes::BytesMut;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Remembered statements per pool, at most: past that the set starts again.
const KNOWN_LIMIT: usize = 10_000;

/// Statements some server of a pool parsed without error.
#[derive(Debug, Default)]
pub struct Known(Mutex<HashSet<u128, super::keyhash::KeyHash>>);

impl Known {
    pub fn insert(&self, key: u128) {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if set.len() >= KNOWN_LIMIT {
            set.clear();
        }
        set.insert(key);
    }

    pub fn contains(&self, key: u128) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).contains(&key)
    }
}

/// If `frames` (complete client frames) are only named Parses of known statements, under names
/// the client does not use yet, then one Sync: records them in `view`, writes the replies to
/// `out` and returns true. Otherwise changes nothing and returns false.
pub fn answer(frames: &[u8], view: &mut ClientStatements, known: &Known, out: &mut BytesMut) -> bool {
    if frames.first() != Some(&b'P') {
        return false; // the usual case, asked of every request of a client that prepares
    }
    let mut parses: Vec<(&[u8], Arc<Statement>)> = Vec::new();
    let mut rest = frames;
    let mut synced = false;
    while let Ok(Some((tag, total))) = peek_header(rest, usize::MAX >> 1) {
        let (Some(body), false) = (rest.get(HEADER_LEN..total), synced) else {
            return false;
        };
        match tag {
            b'P' => {
                let mut pos = 0;
                let Some(name) = read_cstr(body, &mut pos).filter(|n| !n.is_empty()) else {
                    return false;
                };
                let statement = Statement::new(body.get(pos..).unwrap_or_default());
                let repeated = parses.iter().any(|(n, _)| *n == name);
                if view.get(name).is_some() || repeated || !known.contains(statement.key) {
                    return false;
                }
                parses.push((name, Arc::new(statement)));
            }
            b'S' => synced = true,
            _ => return false,
        }
        rest = rest.get(total..).unwrap_or_default();
    }
    if !synced || !rest.is_empty() || parses.is_empty() {
        return false;
    }
    for (name, statement) in parses {
        view.insert(name, statement);
        messages::message(out, b'1', |_| {});
    }
    messages::ready_for_query(out, b'I');
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, sql: &str) -> Vec<u8> {
        let mut b = BytesMut::new();
        messages::message(&mut b, b'P', |b| {
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&[0]);
            b.extend_from_slice(sql.as_bytes());
            b.extend_from_slice(&[0, 0, 0]);
        });
        b.to_vec()
    }

    fn sync() -> Vec<u8> {
        vec![b'S', 0, 0, 0, 4]
    }

    fn key(sql: &str) -> u128 {
        let mut tail = sql.as_bytes().to_vec();
        tail.extend_from_slice(&[0, 0, 0]);
        Statement::new(&tail).key
    }

    #[test]
    fn known_lone_parses_are_answered() {
        let known = Known::default();
        known.insert(key("select 1"));
        known.insert(key("select 2"));
        let mut view = ClientStatements::default();
        let mut out = BytesMut::new();
        let frames = [parse("a", "select 1"), parse("b", "select 2"), sync()].concat();
        assert!(answer(&frames, &mut view, &known, &mut out));
        assert_eq!(&out[..], b"1\0\0\0\x041\0\0\0\x04Z\0\0\0\x05I");
        assert_eq!(view.len(), 2);
        assert_eq!(view.get(b"a").map(|s| s.key), Some(key("select 1")));
    }

    #[test]
    fn anything_else_goes_to_a_server() {
        let known = Known::default();
        known.insert(key("select 1"));
        let mut view = ClientStatements::default();
        let mut out = BytesMut::new();
        let bind = vec![b'B', 0, 0, 0, 12, 0, b'a', 0, 0, 0, 0, 0, 0];
        for frames in [
            [parse("a", "select 3"), sync()].concat(),         // never parsed anywhere
            [parse("", "select 1"), sync()].concat(),          // unnamed
            parse("a", "select 1"),                            // no Sync yet
            [parse("a", "select 1"), bind, sync()].concat(),   // used at once
            [parse("a", "select 1"), sync(), sync()].concat(), // two stretches
            [parse("a", "select 1"), parse("a", "select 1"), sync()].concat(), // 42P05
            sync(),
        ] {
            assert!(!answer(&frames, &mut view, &known, &mut out));
        }
        assert!(out.is_empty() && view.is_empty());
        view.insert(b"a", Arc::new(Statement::new(b"select 1\0\0\0")));
        assert!(!answer(
            &[parse("a", "select 1"), sync()].concat(),
            &mut view,
            &known,
            &mut out
        ));
    }
}
