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
    map: Option<Box<Map>>,
}

impl ClientStatements {
    pub fn get(&self, name: &[u8]) -> Option<&Arc<Statement>> {
        self.map.as_ref()?.get(name)
    }

    pub fn insert(&mut self, name: &[u8], statement: Arc<Statement>) {
        self.map.get_or_insert_default().insert(name.into(), statement);
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<Arc<Statement>> {
        self.map.as_mut()?.remove(name)
    }

    /// Removes `name` only if it still stands for this very statement (not a later Parse).
    pub fn remove_if_same(&mut self, name: &[u8], statement: &Arc<Statement>) {
        if self.get(name).is_some_and(|s| Arc::ptr_eq(s, statement)) {
            self.remove(name);
        }
    }

    /// Puts a name back after a Close that the server skipped, unless it was reused since.
    pub fn restore(&mut self, name: &[u8], statement: Arc<Statement>) {
        let map = self.map.get_or_insert_default();
        map.entry(name.into()).or_insert(statement);
    }

    /// Empties the view, returning what it held.
    pub fn take(&mut self) -> ClientStatements {
        ClientStatements { map: self.map.take() }
    }

    /// Brings back names taken by `take`, where not reused since.
    pub fn restore_all(&mut self, saved: ClientStatements) {
        for (name, statement) in saved.map.into_iter().flat_map(|m| m.into_iter()) {
            self.restore(&name, statement);
        }
    }

    /// Every name and the statement it stands for.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Arc<Statement>)> {
        self.map.iter().flat_map(|m| m.iter()).map(|(k, v)| (&**k, v))
    }

    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len())
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
}
