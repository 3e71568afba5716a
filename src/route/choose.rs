//! The session's question before each transaction: which pool serves it, the primary's or a
//! replica's. A transaction routes on its first request (a Query's text, a Parse's, or the
//! statement a Bind names); inside a transaction nothing moves.

use super::classify::{classify, DenyList, Target};
use super::replicas::Replicas;
use crate::pool::Pool;
use crate::prepared::ClientStatements;
use crate::protocol::frame::{peek_header, read_cstr, HEADER_LEN};
use std::sync::Arc;

/// A database's read/write split, held by each of its primary pools.
pub struct Route {
    pub set: Arc<Replicas>,
    /// One pool per replica, in `set.list` order, for the same user.
    pub pools: Vec<Arc<Pool>>,
    pub deny: DenyList,
    pub read_your_writes: bool,
    /// read_write_split: reads may go to replicas (without it the replicas are only watched,
    /// for following a failover).
    pub split: bool,
}

impl Route {
    /// The pool that takes the writes after a failover was followed, if one was.
    pub fn write_pool(&self) -> Option<&Arc<Pool>> {
        self.pools
            .get(self.set.write_target.load(std::sync::atomic::Ordering::Acquire))
    }
}

/// A client's standing order, from the startup parameter `pgmux.route`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preference {
    #[default]
    Auto,
    Primary,
    Replica,
}

impl Preference {
    pub fn parse(value: &str) -> Option<Preference> {
        match value.to_ascii_lowercase().as_str() {
            "auto" => Some(Preference::Auto),
            "primary" => Some(Preference::Primary),
            "replica" => Some(Preference::Replica),
            _ => None,
        }
    }
}

/// Where the first request in `frames` may go.
pub fn first_request(frames: &[u8], prepared: &ClientStatements, deny: &DenyList) -> Target {
    let Ok(Some((tag, total))) = peek_header(frames, usize::MAX >> 1) else {
        return Target::Primary;
    };
    let body = frames.get(HEADER_LEN..total).unwrap_or_default();
    let mut at = 0;
    let sql: &[u8] = match tag {
        b'Q' => body,
        b'P' => {
            let _ = read_cstr(body, &mut at);
            body.get(at..).unwrap_or_default()
        }
        b'B' => {
            let _ = read_cstr(body, &mut at);
            let name = read_cstr(body, &mut at).unwrap_or_default();
            match prepared.get(name) {
                Some(statement) if !name.is_empty() => statement.text(),
                _ => return Target::Primary,
            }
        }
        _ => return Target::Primary,
    };
    let sql = sql.split(|&b| b == 0).next().unwrap_or_default();
    classify(sql, deny)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::protocol::frame::test_frame as frame;

    #[test]
    fn first_requests() {
        let deny = DenyList::new(["nextval"]);
        let none = ClientStatements::default();
        assert_eq!(
            first_request(&frame(b'Q', b"select 1\0"), &none, &deny),
            Target::Replica
        );
        assert_eq!(
            first_request(&frame(b'Q', b"insert into t values (1)\0"), &none, &deny),
            Target::Primary
        );
        assert_eq!(
            first_request(&frame(b'P', b"\0select nextval('s')\0\0\0"), &none, &deny),
            Target::Primary
        );
        assert_eq!(
            first_request(&frame(b'P', b"s1\0select $1\0\0\0"), &none, &deny),
            Target::Replica
        );
        assert_eq!(
            first_request(&frame(b'B', b"\0s1\0\0\0\0\0\0\0"), &none, &deny),
            Target::Primary,
            "unknown statement"
        );
        let mut known = ClientStatements::default();
        known.insert(b"s1", Arc::new(crate::prepared::Statement::new(b"select 2\0\0\0")));
        assert_eq!(
            first_request(&frame(b'B', b"\0s1\0\0\0\0\0\0\0"), &known, &deny),
            Target::Replica
        );
        assert_eq!(first_request(&frame(b'S', b""), &none, &deny), Target::Primary);
        assert_eq!(first_request(b"", &none, &deny), Target::Primary);
    }
}
