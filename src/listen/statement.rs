//! LISTEN and UNLISTEN in a client's SQL: a cheap test that every Query and Parse passes, and
//! the parse of the (rare) texts that pass it.

use crate::prepared::query::{skip_blank, skip_space, word};
use crate::route::lexer::{Lexer, Tok};

/// A subscription change a client asked for (it counts once its transaction commits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Listen(String),
    Unlisten(String),
    /// `UNLISTEN *` (also what DISCARD ALL does).
    UnlistenAll,
}

/// Cheap test for a Query's text or a Parse's query: could it start with LISTEN or UNLISTEN?
#[inline]
pub fn candidate(text: &[u8]) -> bool {
    let mut i = skip_blank(text, 0);
    if matches!(text.get(i), Some(b'/' | b'-')) {
        i = skip_space(text, i);
    }
    match text.get(i) {
        // Every query passes here: a first letter other than these settles it.
        Some(c) if !matches!(c | 0x20, b'l' | b'u') => false,
        None => false,
        _ => {
            let w = word(text, i);
            w.eq_ignore_ascii_case(b"listen") || w.eq_ignore_ascii_case(b"unlisten")
        }
    }
}

/// The LISTEN and UNLISTEN statements of `sql` (a trailing NUL allowed), in order; other
/// statements are passed over.
pub fn parse(sql: &[u8], ops: &mut Vec<Op>) {
    let sql = sql.strip_suffix(b"\0").unwrap_or(sql);
    let mut lex = Lexer::new(sql);
    loop {
        let first = lex.next_tok();
        let op = match first {
            Tok::End => return,
            Tok::Word(w) if w.eq_ignore_ascii_case(b"listen") => match lex.next_tok() {
                Tok::Word(name) => Some(Op::Listen(folded(name))),
                Tok::Quoted(name) => Some(Op::Listen(unquoted(name))),
                _ => None,
            },
            Tok::Word(w) if w.eq_ignore_ascii_case(b"unlisten") => match lex.next_tok() {
                Tok::Word(name) => Some(Op::Unlisten(folded(name))),
                Tok::Quoted(name) => Some(Op::Unlisten(unquoted(name))),
                Tok::Other(b'*') => Some(Op::UnlistenAll),
                _ => None,
            },
            _ => None,
        };
        // The statement counts only if it ends here (PostgreSQL refuses anything else).
        let mut tail = match first {
            Tok::Semi => Tok::Semi,
            _ => lex.next_tok(),
        };
        if let Some(op) = op {
            if matches!(tail, Tok::Semi | Tok::End) {
                ops.push(op);
            }
        }
        while !matches!(tail, Tok::Semi | Tok::End) {
            tail = lex.next_tok();
        }
        if tail == Tok::End {
            return;
        }
    }
}

/// An unquoted identifier, folded to lower case as PostgreSQL does.
fn folded(name: &[u8]) -> String {
    String::from_utf8_lossy(name).to_ascii_lowercase()
}

/// A quoted identifier's inside, with `""` back to `"`.
fn unquoted(name: &[u8]) -> String {
    String::from_utf8_lossy(name).replace("\"\"", "\"")
}

/// `name` as a quoted identifier, for the listener connection's LISTEN and UNLISTEN.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(sql: &str) -> Vec<Op> {
        let mut ops = Vec::new();
        parse(sql.as_bytes(), &mut ops);
        ops
    }

    #[test]
    fn candidates() {
        for yes in ["LISTEN a", "  listen a", "\n-- c\nUnListen *", "/* x */ listen \"A\""] {
            assert!(candidate(yes.as_bytes()), "{yes}");
        }
        for no in ["select 1", "update t set x = 1", "listener", "", "NOTIFY a", "l"] {
            assert!(!candidate(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn parses_statements_in_order() {
        assert_eq!(ops("LISTEN Foo\0"), [Op::Listen("foo".into())]);
        assert_eq!(ops("listen \"Foo\"\"x\";"), [Op::Listen("Foo\"x".into())]);
        assert_eq!(
            ops("UNLISTEN *; select 1; listen b; unlisten c"),
            [Op::UnlistenAll, Op::Listen("b".into()), Op::Unlisten("c".into())]
        );
        assert_eq!(ops("begin; listen a; commit"), [Op::Listen("a".into())]);
        // Not a statement PostgreSQL runs: nothing to follow.
        assert_eq!(ops("listen a b"), []);
        assert_eq!(ops("listen"), []);
        assert_eq!(ops("select 'listen a'; -- listen b"), []);
        assert_eq!(ops("listen 'a"), []);
    }

    #[test]
    fn quotes_names_for_the_listener() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
