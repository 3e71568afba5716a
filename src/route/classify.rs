//! Read-only or not: which server a simple Query's text may go to, read off the text with a hand
//! lexer (no SQL parser, no allocation). In doubt, the primary: a read sent to the primary only
//! costs load, a write sent to a replica fails.
//!
//! Replica candidates are `SELECT`, `VALUES`, `TABLE`, `SHOW`, `WITH`, `EXPLAIN` (without
//! ANALYZE, of one of those) and `BEGIN` / `START TRANSACTION ... READ ONLY`. A candidate still
//! goes to the primary when, outside quotes, it holds `INTO`, `FOR UPDATE | SHARE | NO KEY
//! UPDATE | KEY SHARE`, `INSERT | UPDATE | DELETE | MERGE` (data-modifying CTEs), or calls a
//! function on the deny list; so does a Query of several statements.
//!
//! Hints, in comments before the first keyword: `/* pgmux:primary */` always wins.
//! `/* pgmux:replica */` sends to a replica what is only doubtful (a deny-listed call, EXPLAIN
//! ANALYZE, several read statements, a BEGIN that is not READ ONLY, a backslash in a plain
//! string) but never what is clearly a write (a write keyword, INTO, FOR UPDATE, BEGIN READ
//! WRITE, any other first keyword).

use super::lexer::{Lexer, Tok};
use crate::prepared::query::{skip_blank, skip_comment};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Primary,
    Replica,
}

/// Ordered: a Query is as bad as its worst statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Read,
    /// Primary, unless hinted to a replica.
    Doubt,
    Write,
}

/// Functions whose call sends a statement to the primary: names, or prefixes written `name*`,
/// matched without regard to case or schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyList {
    /// Lower case; true for a prefix.
    entries: Vec<(Box<[u8]>, bool)>,
}

impl DenyList {
    /// Patterns as in `write_functions`: `nextval`, `pg_advisory_*`.
    pub fn new<S: AsRef<str>>(patterns: impl IntoIterator<Item = S>) -> Self {
        let entries = patterns
            .into_iter()
            .filter_map(|p| {
                let p = p.as_ref().to_ascii_lowercase();
                let (name, prefix) = match p.strip_suffix('*') {
                    Some(name) => (name, true),
                    None => (p.as_str(), false),
                };
                (!name.is_empty()).then(|| (name.as_bytes().into(), prefix))
            })
            .collect();
        DenyList { entries }
    }

    pub fn matches(&self, name: &[u8]) -> bool {
        self.entries.iter().any(|(p, prefix)| match prefix {
            true => name.get(..p.len()).is_some_and(|n| n.eq_ignore_ascii_case(p)),
            false => name.eq_ignore_ascii_case(p),
        })
    }
}

impl Default for DenyList {
    /// `DEFAULT_WRITE_FUNCTIONS`, the default of `write_functions`.
    fn default() -> Self {
        DenyList::new(crate::config::DEFAULT_WRITE_FUNCTIONS)
    }
}

/// Where a simple Query's text (a trailing NUL allowed) may run.
pub fn classify(sql: &[u8], deny: &DenyList) -> Target {
    let sql = sql.strip_suffix(b"\0").unwrap_or(sql);
    let hint = hint(sql);
    if hint == Some(Target::Primary) {
        return Target::Primary;
    }
    match (verdict(sql, deny), hint) {
        (Verdict::Read, _) | (Verdict::Doubt, Some(Target::Replica)) => Target::Replica,
        _ => Target::Primary,
    }
}

/// A `/* pgmux:primary */` or `/* pgmux:replica */` among the comments before the first
/// keyword; primary if both.
pub fn hint(sql: &[u8]) -> Option<Target> {
    let mut i = skip_blank(sql, 0);
    let mut found = None;
    while let Some(end) = skip_comment(sql, i) {
        let inner = sql.get(i..end).and_then(|c| c.strip_prefix(b"/*")?.strip_suffix(b"*/"));
        let inner = inner.map(<[u8]>::trim_ascii).unwrap_or_default();
        let name = inner
            .split_at_checked(6)
            .filter(|(p, _)| p.eq_ignore_ascii_case(b"pgmux:"));
        match name {
            Some((_, n)) if n.eq_ignore_ascii_case(b"primary") => return Some(Target::Primary),
            Some((_, n)) if n.eq_ignore_ascii_case(b"replica") => found = Some(Target::Replica),
            _ => {}
        }
        i = skip_blank(sql, end);
    }
    found
}

fn verdict(sql: &[u8], deny: &DenyList) -> Verdict {
    let mut lex = Lexer::new(sql);
    let (mut worst, mut statements) = (Verdict::Read, 0);
    loop {
        match statement(&mut lex, deny) {
            Some(v) => {
                worst = worst.max(v);
                statements += 1;
            }
            None if lex.done() => break,
            None => {}
        }
        if worst == Verdict::Write || lex.done() {
            break;
        }
    }
    match statements {
        0 => Verdict::Doubt,
        1 => worst,
        _ => worst.max(Verdict::Doubt),
    }
}

/// One statement, through its `;`. None when it is empty.
fn statement(lex: &mut Lexer, deny: &DenyList) -> Option<Verdict> {
    let mut first = lex.next_tok();
    // `(SELECT 1) UNION (SELECT 2)`
    while first == Tok::Open {
        first = lex.next_tok();
    }
    let kw = match first {
        Tok::End | Tok::Semi => return None,
        Tok::Word(w) => w,
        _ => return Some(Verdict::Write),
    };
    Some(if is(kw, &["select", "values", "table", "show", "with"]) {
        body(lex, deny)
    } else if is(kw, &["explain"]) {
        explain(lex, deny)
    } else if is(kw, &["begin"]) {
        begin(lex, false)
    } else if is(kw, &["start"]) {
        begin(lex, true)
    } else if is(kw, &["commit", "end", "rollback", "abort"]) {
        // Ends a transaction: harmless wherever it began, bar COMMIT PREPARED and the like.
        words_only(lex, &["work", "transaction", "and", "no", "chain"])
    } else {
        Verdict::Write
    })
}

/// The rest of a candidate statement.
fn body(lex: &mut Lexer, deny: &DenyList) -> Verdict {
    let mut v = Verdict::Read;
    let mut name: Option<&[u8]> = None;
    let mut after_for = false;
    loop {
        let tok = lex.next_tok();
        match tok {
            Tok::End | Tok::Semi => return v,
            Tok::Bad => return Verdict::Write,
            // UPDATE also covers FOR UPDATE and FOR NO KEY UPDATE. The first letter is a cheap
            // test: most words are none of these.
            Tok::Word(w)
                if w.first().is_some_and(|c| b"iudmskn".contains(&(c | 0x20)))
                    && (is(w, &["into", "insert", "update", "delete", "merge"])
                        || (after_for && is(w, &["share", "no", "key"]))) =>
            {
                return Verdict::Write
            }
            Tok::Open if name.is_some_and(|n| deny.matches(n)) => v = Verdict::Doubt,
            Tok::Str { ambiguous: true } => v = Verdict::Doubt,
            _ => {}
        }
        (name, after_for) = match tok {
            Tok::Word(w) => (Some(w), is(w, &["for"])),
            Tok::Quoted(q) => (Some(q), false),
            _ => (None, false),
        };
    }
}

/// `EXPLAIN [ANALYZE] [VERBOSE] | (options)` and the statement explained.
fn explain(lex: &mut Lexer, deny: &DenyList) -> Verdict {
    let mut v = Verdict::Read;
    let mut tok = lex.next_tok();
    loop {
        match tok {
            // It runs the statement: a replica only when hinted. ANALYZE false too, in doubt.
            Tok::Word(w) if is(w, &["analyze", "analyse"]) => v = Verdict::Doubt,
            Tok::Word(w) if is(w, &["verbose"]) => {}
            Tok::Open => match explain_options(lex) {
                Some(true) => v = Verdict::Doubt,
                Some(false) => {}
                None => return Verdict::Write,
            },
            _ => break,
        }
        tok = lex.next_tok();
    }
    match tok {
        Tok::Word(w) if is(w, &["select", "values", "table", "with"]) => v.max(body(lex, deny)),
        _ => Verdict::Write,
    }
}

/// EXPLAIN's known options (PostgreSQL 15 to 17) and the words their values may be.
const EXPLAIN_OPTIONS: &[&str] = &[
    "analyze",
    "analyse",
    "verbose",
    "costs",
    "settings",
    "generic_plan",
    "buffers",
    "serialize",
    "wal",
    "timing",
    "summary",
    "memory",
    "format",
];
const EXPLAIN_VALUES: &[&str] = &[
    "true", "false", "on", "off", "text", "xml", "json", "yaml", "none", "binary",
];

/// `( name [value] [, ...] )` after its `(`: whether ANALYZE is among them, None for anything
/// PostgreSQL would refuse or that is not plainly an option (a quoted name such as `"analyze"`,
/// a parenthesis, an unknown word): the primary answers those (found by the fuzzer).
fn explain_options(lex: &mut Lexer) -> Option<bool> {
    let mut analyze = false;
    loop {
        match lex.next_tok() {
            Tok::Word(w) if is(w, EXPLAIN_OPTIONS) => analyze |= is(w, &["analyze", "analyse"]),
            _ => return None,
        }
        let mut tok = lex.next_tok();
        match tok {
            Tok::Word(w) if is(w, EXPLAIN_VALUES) || w.first().is_some_and(u8::is_ascii_digit) => tok = lex.next_tok(),
            Tok::Str { .. } => tok = lex.next_tok(),
            _ => {}
        }
        match tok {
            Tok::Close => return Some(analyze),
            Tok::Other(b',') => {}
            _ => return None,
        }
    }
}

/// `BEGIN [WORK | TRANSACTION] [modes]`, `START TRANSACTION [modes]`: a replica for READ ONLY.
fn begin(lex: &mut Lexer, start: bool) -> Verdict {
    let mut tok = lex.next_tok();
    match tok {
        Tok::Word(w) if is(w, &["transaction"]) || (!start && is(w, &["work"])) => tok = lex.next_tok(),
        _ if start => return Verdict::Write,
        _ => {}
    }
    let (mut read_only, mut serializable) = (false, false);
    loop {
        let w = match tok {
            Tok::End | Tok::Semi => break,
            Tok::Other(b',') => {
                tok = lex.next_tok();
                continue;
            }
            Tok::Word(w) => w,
            _ => return Verdict::Write,
        };
        if is(w, &["isolation"]) {
            if !next_is(lex, &["level"]) {
                return Verdict::Write;
            }
            match lex.next_tok() {
                Tok::Word(l) if is(l, &["serializable"]) => serializable = true,
                Tok::Word(l) if is(l, &["repeatable"]) && next_is(lex, &["read"]) => {}
                Tok::Word(l) if is(l, &["read"]) && next_is(lex, &["committed", "uncommitted"]) => {}
                _ => return Verdict::Write,
            }
        } else if is(w, &["read"]) {
            match lex.next_tok() {
                Tok::Word(m) if is(m, &["only"]) => read_only = true,
                _ => return Verdict::Write,
            }
        } else if !(is(w, &["deferrable"]) || (is(w, &["not"]) && next_is(lex, &["deferrable"]))) {
            return Verdict::Write;
        }
        tok = lex.next_tok();
    }
    // A standby refuses SERIALIZABLE.
    match read_only && !serializable {
        true => Verdict::Read,
        false => Verdict::Doubt,
    }
}

/// Doubt if the statement is only these words, else Write.
fn words_only(lex: &mut Lexer, words: &[&str]) -> Verdict {
    loop {
        match lex.next_tok() {
            Tok::End | Tok::Semi => return Verdict::Doubt,
            Tok::Word(w) if is(w, words) => {}
            _ => return Verdict::Write,
        }
    }
}

fn next_is(lex: &mut Lexer, words: &[&str]) -> bool {
    matches!(lex.next_tok(), Tok::Word(w) if is(w, words))
}

fn is(word: &[u8], keywords: &[&str]) -> bool {
    keywords.iter().any(|k| word.eq_ignore_ascii_case(k.as_bytes()))
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;
