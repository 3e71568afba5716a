//! What one server connection holds: an LRU set of pooler-wide statements, and the queue of
//! replies pgmux expects for what it changed on the way to this server.

use super::local::Known;
use super::{ClientStatements, Statement};
use crate::protocol::messages::PgError;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct ServerStatements {
    /// max_prepared_statements of the pool that lent this server (0: pass everything through).
    pub limit: u32,
    held: HashMap<u128, Held, super::keyhash::KeyHash>,
    /// Use counter for the LRU order.
    tick: u64,
    /// Numbers the Parses pgmux sends, so a late reply to an older one is told apart.
    next_gen: u64,
    pub replies: VecDeque<Reply>,
    /// The pool's statements parsed without error (see `local`), set when the server is lent.
    pub known: Option<Arc<Known>>,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    used: u64,
    /// The latest Parse sent for it.
    gen: u64,
    /// Its ParseComplete came back. Until then only messages of the same Sync stretch
    /// (`epoch`) may rely on a Parse pgmux injected: a later stretch would not be skipped with
    /// it if it failed.
    confirmed: bool,
    epoch: u32,
    /// The latest Parse was the client's own: later stretches rely on it whatever its fate, as
    /// they would on PostgreSQL (where its failure leaves the name undefined).
    client: bool,
}

/// A reply pgmux expects, in the order the server will send them. `epoch` counts the Syncs
/// and Queries sent before the message: the server skips to the next Sync after an error, and
/// every message of the failing stretch (one epoch) goes with it.
#[derive(Debug)]
pub struct Reply {
    pub epoch: u32,
    pub kind: ReplyKind,
}

#[derive(Debug)]
pub enum ReplyKind {
    /// A Close: CloseComplete is swallowed when pgmux sent it (eviction, before a Parse); a
    /// client's Close carries the name it removed, put back if the server skips it.
    Close {
        swallow: bool,
        undo: Option<(Box<[u8]>, Arc<Statement>)>,
    },
    /// A Parse: injected ones are swallowed; a client's own carries its name, removed from
    /// its view if the Parse fails or is skipped.
    Parse {
        swallow: bool,
        key: u128,
        gen: u64,
        client: Option<(Box<[u8]>, Arc<Statement>)>,
    },
    /// The probe Bind sent for a Parse of a name the client already uses: its error becomes
    /// this one.
    Duplicate(PgError),
    /// A simple Query pgmux replaced or watches.
    Query(QueryReply),
}

#[derive(Debug)]
pub enum QueryReply {
    /// Sent as an empty query: its EmptyQueryResponse becomes CommandComplete with this tag.
    Empty(&'static str),
    /// Sent as a query that fails with a syntax error, which becomes this error.
    Refuse(PgError),
    /// The client's DISCARD ALL: its view was emptied; an error puts it back.
    Discard(ClientStatements),
}

impl ServerStatements {
    pub fn clear(&mut self) {
        self.held.clear();
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Whether a message of stretch `epoch` may use the statement as it is on the server;
    /// marks it used.
    pub fn usable(&mut self, key: u128, epoch: u32) -> bool {
        self.tick += 1;
        match self.held.get_mut(&key) {
            Some(h) if h.confirmed || h.client || h.epoch == epoch => {
                h.used = self.tick;
                true
            }
            _ => false,
        }
    }

    /// Whether every later stretch may use the statement as it is on the server (its Parse was
    /// confirmed, or was the client's own); marks it used if so, as `usable` does.
    pub fn settled(&mut self, key: u128) -> bool {
        self.tick += 1;
        match self.held.get_mut(&key) {
            Some(h) if h.confirmed || h.client => {
                h.used = self.tick;
                true
            }
            _ => false,
        }
    }

    /// Records a Parse about to be sent; returns its generation and the statements to close
    /// first (least recently used) to stay within the limit.
    pub fn add(&mut self, key: u128, epoch: u32, client: bool) -> (u64, Vec<u128>) {
        self.tick += 1;
        self.next_gen += 1;
        let held = Held {
            used: self.tick,
            gen: self.next_gen,
            confirmed: false,
            epoch,
            client,
        };
        self.held.insert(key, held);
        let mut evicted = Vec::new();
        while self.held.len() > self.limit.max(1) as usize {
            let oldest = self
                .held
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, h)| h.used)
                .map(|(k, _)| *k);
            let Some(oldest) = oldest else { break };
            self.held.remove(&oldest);
            evicted.push(oldest);
        }
        (self.next_gen, evicted)
    }

    /// The ParseComplete of Parse `gen` came back.
    pub fn parsed(&mut self, key: u128, gen: u64) {
        if let Some(h) = self.held.get_mut(&key) {
            if h.gen == gen {
                h.confirmed = true;
                if let Some(known) = &self.known {
                    known.insert(key);
                }
            }
        }
    }

    /// Parse `gen` failed or was skipped: the server lacks the statement, unless a later
    /// Parse (which closes and parses again) decides otherwise.
    pub fn failed(&mut self, key: u128, gen: u64) {
        if self.held.get(&key).is_some_and(|h| h.gen == gen) {
            self.held.remove(&key);
        }
    }

    #[cfg(test)]
    pub fn holds(&self, key: u128) -> bool {
        self.held.contains_key(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut s = ServerStatements {
            limit: 2,
            ..Default::default()
        };
        assert_eq!(s.add(1, 0, false).1, vec![]);
        assert_eq!(s.add(2, 0, false).1, vec![]);
        assert!(s.usable(1, 0));
        assert_eq!(s.add(3, 0, false).1, vec![2]);
        assert!(s.holds(1) && s.holds(3) && !s.holds(2));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn unconfirmed_only_within_its_stretch() {
        let mut s = ServerStatements {
            limit: 10,
            ..Default::default()
        };
        let (gen, _) = s.add(7, 3, false);
        assert!(s.usable(7, 3));
        assert!(!s.usable(7, 4), "a later stretch must not rely on an unconfirmed Parse");
        s.parsed(7, gen);
        assert!(s.usable(7, 4));
        s.add(8, 3, true);
        assert!(s.usable(8, 4), "a client's own Parse decides for later stretches too");
    }

    #[test]
    fn only_the_latest_parse_decides() {
        let mut s = ServerStatements {
            limit: 10,
            ..Default::default()
        };
        let (old, _) = s.add(7, 0, false);
        let (new, _) = s.add(7, 1, false);
        s.failed(7, old);
        assert!(s.holds(7));
        s.parsed(7, old);
        assert!(!s.usable(7, 2), "the older Parse's reply does not confirm the newer");
        s.failed(7, new);
        assert!(!s.holds(7));
    }

    #[test]
    fn zero_limit_still_holds_one() {
        let mut s = ServerStatements::default();
        s.add(1, 0, false);
        assert_eq!(s.add(2, 0, false).1, vec![1]);
    }
}
