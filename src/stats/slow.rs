//! SHOW SLOW_QUERIES: per pool, the queries that ran longer than slow_query_threshold, by
//! normalised text (literals stripped), each logged once when first seen.

use crate::prepared::query::skip_space;
use crate::route::lexer::{Lexer, Tok};
use std::sync::Mutex;

/// Distinct normalised queries kept per pool; the one seen longest ago makes room.
const KEEP: usize = 50;
/// Normalised text is cut here.
const TEXT_MAX: usize = 500;

#[derive(Debug, Clone, PartialEq)]
pub struct SlowQuery {
    pub query: String,
    pub count: u64,
    pub total_us: u64,
    pub max_us: u64,
    /// µs since start (`stats::now_us`) when it was last seen.
    pub last_us: u64,
}

#[derive(Default)]
pub struct SlowQueries {
    list: Mutex<Vec<SlowQuery>>,
}

impl SlowQueries {
    /// A query of this text took `us`; true when it is new to the list (the caller logs it).
    pub fn record(&self, text: &[u8], us: u64) -> Option<String> {
        let query = normalise(text);
        let now = super::now_us();
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = list.iter_mut().find(|q| q.query == query) {
            q.count += 1;
            q.total_us += us;
            q.max_us = q.max_us.max(us);
            q.last_us = now;
            return None;
        }
        if list.len() >= KEEP {
            if let Some(oldest) = (0..list.len()).min_by_key(|&i| list.get(i).map_or(0, |q| q.last_us)) {
                list.swap_remove(oldest);
            }
        }
        list.push(SlowQuery {
            query: query.clone(),
            count: 1,
            total_us: us,
            max_us: us,
            last_us: now,
        });
        Some(query)
    }

    /// Slowest (by max) first.
    pub fn list(&self) -> Vec<SlowQuery> {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner()).clone();
        list.sort_by_key(|q| std::cmp::Reverse(q.max_us));
        list
    }

    pub fn clear(&self) {
        self.list.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The query with comments dropped, white space collapsed and every string and number
/// literal replaced by `?`, so that queries differing only in their values meet.
pub fn normalise(text: &[u8]) -> String {
    let mut out = String::new();
    let mut lex = Lexer::new(text);
    loop {
        let before = lex.offset();
        let tok = lex.next_tok();
        let start = skip_space(text, before).min(lex.offset());
        let span = text.get(start..lex.offset()).unwrap_or_default();
        let piece: &[u8] = match tok {
            Tok::End => break,
            Tok::Str { .. } | Tok::Bad => b"?",
            Tok::Word(w) if w.first().is_some_and(u8::is_ascii_digit) => b"?",
            _ => span,
        };
        // White space (or a comment) stays one space; none stays none.
        if start > before && !out.is_empty() {
            out.push(' ');
        }
        // `1.5` lexes as a number, a dot and a number.
        if piece == b"?" && out.ends_with("?.") {
            out.pop();
            continue;
        }
        out.push_str(&String::from_utf8_lossy(piece));
        if out.len() > TEXT_MAX {
            let mut cut = TEXT_MAX;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push('…');
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_stripped() {
        assert_eq!(
            normalise(b"SELECT  abalance FROM pgbench_accounts\n WHERE aid = 42 -- x\n"),
            "SELECT abalance FROM pgbench_accounts WHERE aid = ?"
        );
        assert_eq!(
            normalise(b"select f('it''s', $$x$$, 1.5e3), t.\"Col\" from s.t where a in (1, 2) and b = $1;"),
            "select f(?, ?, ?), t.\"Col\" from s.t where a in (?, ?) and b = $1;"
        );
        assert_eq!(normalise(b"select pg_sleep(0.2) /* why */"), "select pg_sleep(?)");
        assert_eq!(normalise(b"select 'open"), "select ?");
        assert!(normalise("select 'é' ".repeat(200).as_bytes()).ends_with('…'));
    }

    #[test]
    fn repeated_queries_meet() {
        let slow = SlowQueries::default();
        assert!(slow.record(b"select pg_sleep(0.2)", 200_000).is_some());
        assert!(slow.record(b"select pg_sleep(0.3)", 300_000).is_none());
        assert!(slow.record(b"select 1", 1_000_000).is_some());
        let list = slow.list();
        assert_eq!(list.len(), 2);
        assert_eq!((list[0].query.as_str(), list[0].count), ("select ?", 1));
        assert_eq!((list[1].count, list[1].total_us, list[1].max_us), (2, 500_000, 300_000));
        for i in 0..KEEP + 5 {
            slow.record(format!("select {i} from t{i}").as_bytes(), 1);
        }
        assert_eq!(slow.list().len(), KEEP);
    }
}
