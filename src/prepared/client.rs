//! A client's own view of its prepared statements: its names, each mapped to the pooler-wide
//! statement it stands for. Empty (one null pointer) for a client that never prepares.

use super::keyhash::KeyHash;
use super::Statement;
use std::collections::HashMap;
use std::sync::Arc;

/// Hashed with the statement keys' seeded hash (SipHash cost ~200 instructions per Bind); a
/// client choosing names to collide hurts only its own map, and cannot aim without the seed.
type Map = HashMap<Box<[u8]>, Arc<Statement>, KeyHash>;

#[derive(Debug, Default)]
pub struct ClientStatements {
    map: Option<Box<Names>>,
}

/// The map, and the name a Bind found last: drivers bind the same few names over and over,
/// and comparing one short name costs a fifth of a lookup (~100 instructions).
#[derive(Debug, Default)]
struct Names {
    map: Map,
    last: Option<Last>,
}

/// Names up to this long are remembered by `get_hot`.
const LAST_MAX: usize = 32;

#[derive(Debug)]
struct Last {
    len: u8,
    name: [u8; LAST_MAX],
    statement: Arc<Statement>,
}

impl ClientStatements {
    pub fn get(&self, name: &[u8]) -> Option<&Arc<Statement>> {
        self.map.as_ref()?.map.get(name)
    }

    /// `get` for the data path: remembers the name found, so that the next Bind of the same
    /// name skips the lookup.
    pub fn get_hot(&mut self, name: &[u8]) -> Option<&Arc<Statement>> {
        let names = self.map.as_deref_mut()?;
        if name.len() > LAST_MAX {
            names.last = None;
            return names.map.get(name);
        }
        let hit = names
            .last
            .as_ref()
            .is_some_and(|l| l.name.get(..l.len as usize) == Some(name));
        if !hit {
            let mut last = Last {
                len: name.len() as u8,
                name: [0; LAST_MAX],
                statement: names.map.get(name)?.clone(),
            };
            last.name[..name.len()].copy_from_slice(name);
            names.last = Some(last);
        }
        names.last.as_ref().map(|l| &l.statement)
    }

    pub fn insert(&mut self, name: &[u8], statement: Arc<Statement>) {
        let names = self.map.get_or_insert_default();
        names.last = None;
        names.map.insert(name.into(), statement);
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<Arc<Statement>> {
        let names = self.map.as_mut()?;
        names.last = None;
        names.map.remove(name)
    }

    /// Removes `name` only if it still stands for this very statement (not a later Parse).
    pub fn remove_if_same(&mut self, name: &[u8], statement: &Arc<Statement>) {
        if self.get(name).is_some_and(|s| Arc::ptr_eq(s, statement)) {
            self.remove(name);
        }
    }

    /// Puts a name back after a Close that the server skipped, unless it was reused since.
    pub fn restore(&mut self, name: &[u8], statement: Arc<Statement>) {
        let names = self.map.get_or_insert_default();
        names.last = None;
        names.map.entry(name.into()).or_insert(statement);
    }

    /// Empties the view, returning what it held.
    pub fn take(&mut self) -> ClientStatements {
        ClientStatements { map: self.map.take() }
    }

    /// Brings back names taken by `take`, where not reused since.
    pub fn restore_all(&mut self, saved: ClientStatements) {
        for (name, statement) in saved.map.into_iter().flat_map(|m| m.map.into_iter()) {
            self.restore(&name, statement);
        }
    }

    /// Every name and the statement it stands for.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Arc<Statement>)> {
        self.map.iter().flat_map(|m| m.map.iter()).map(|(k, v)| (&**k, v))
    }

    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.map.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_operations() {
        let mut v = ClientStatements::default();
        assert!(v.is_empty() && v.get(b"a").is_none());
        let s1 = Arc::new(Statement::new(b"select 1\0\0\0"));
        let s2 = Arc::new(Statement::new(b"select 1\0\0\0"));
        v.insert(b"a", s1.clone());
        v.remove_if_same(b"a", &s2);
        assert_eq!(v.len(), 1, "another Parse's statement does not remove it");
        v.restore(b"a", s2.clone());
        assert!(Arc::ptr_eq(v.get(b"a").unwrap(), &s1), "restore never overwrites");
        let saved = v.take();
        assert!(v.is_empty());
        v.insert(b"b", s2.clone());
        v.restore_all(saved);
        assert_eq!(v.len(), 2);
        v.remove_if_same(b"a", &s1);
        assert_eq!(v.len(), 1);
        assert!(v.remove(b"b").is_some() && v.is_empty());
    }

    #[test]
    fn the_remembered_name_follows_every_change() {
        let mut v = ClientStatements::default();
        let s1 = Arc::new(Statement::new(b"select 1\0\0\0"));
        let s2 = Arc::new(Statement::new(b"select 2\0\0\0"));
        assert!(v.get_hot(b"a").is_none());
        v.insert(b"a", s1.clone());
        v.insert(b"b", s2.clone());
        assert!(Arc::ptr_eq(v.get_hot(b"a").unwrap(), &s1));
        assert!(Arc::ptr_eq(v.get_hot(b"a").unwrap(), &s1), "remembered");
        assert!(Arc::ptr_eq(v.get_hot(b"b").unwrap(), &s2), "another name is looked up");
        assert!(v.get_hot(b"ab").is_none() && v.get_hot(b"").is_none());
        v.remove(b"b");
        assert!(v.get_hot(b"b").is_none(), "a removed name is gone");
        v.insert(b"b", s1.clone());
        assert!(
            Arc::ptr_eq(v.get_hot(b"b").unwrap(), &s1),
            "a name parsed again stands for the new statement"
        );
        let long = [b'x'; LAST_MAX + 1];
        v.insert(&long, s2.clone());
        assert!(Arc::ptr_eq(v.get_hot(&long).unwrap(), &s2));
        assert!(
            Arc::ptr_eq(v.get_hot(&long).unwrap(), &s2),
            "too long to remember, still found"
        );
        let saved = v.take();
        assert!(v.get_hot(b"b").is_none(), "taken with the view");
        v.restore_all(saved);
        assert!(Arc::ptr_eq(v.get_hot(b"b").unwrap(), &s1));
    }
}
