//! Read/write routing (`route::classify`, `route::hint`, its lexer).
//!
//! A statement sent to a replica holds no write: cut into statements and words by an
//! independent lexer written from PostgreSQL's scan.l (standard_conforming_strings on, its
//! default), every statement of a Query `classify` sends to a replica starts with a read-only
//! keyword and none holds INSERT, UPDATE, DELETE, MERGE or INTO outside quotes and comments.
//! pgmux's own lexer always moves forward and ends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux::fuzzing::{Lexer, Tok};
use pgmux::route::{classify, hint, DenyList, Target};

fuzz_target!(|sql: &[u8]| {
    let deny = DenyList::default();
    let target = classify(sql, &deny);
    let _ = hint(sql);
    lexer_ends(sql);
    if target == Target::Replica {
        let text = sql.strip_suffix(b"\0").unwrap_or(sql);
        // A Query whose text holds a NUL is refused by PostgreSQL (invalid message format).
        if text.contains(&0) {
            return;
        }
        // None: PostgreSQL refuses the whole Query before running any of it.
        for statement in reference_statements(text).unwrap_or_default() {
            let mut words = statement.iter().map(|w| w.to_ascii_lowercase());
            if let Some(first) = words.next() {
                assert!(
                    [
                        &b"select"[..],
                        b"values",
                        b"table",
                        b"show",
                        b"with",
                        b"explain",
                        b"begin",
                        b"start",
                        b"commit",
                        b"end",
                        b"rollback",
                        b"abort"
                    ]
                    .contains(&first.as_slice()),
                    "statement starting with {:?} sent to a replica: {:?}",
                    String::from_utf8_lossy(&first),
                    String::from_utf8_lossy(sql)
                );
            }
            for w in words {
                assert!(
                    ![&b"insert"[..], b"update", b"delete", b"merge", b"into"].contains(&w.as_slice()),
                    "{:?} sent to a replica: {:?}",
                    String::from_utf8_lossy(&w),
                    String::from_utf8_lossy(sql)
                );
            }
        }
    }
});

fn lexer_ends(sql: &[u8]) {
    let mut lex = Lexer::new(sql);
    let mut last = 0;
    for _ in 0..=sql.len() + 1 {
        let tok = lex.next_tok();
        assert!(lex.offset() <= sql.len());
        if tok == Tok::End {
            assert!(lex.done());
            return;
        }
        assert!(lex.offset() > last, "no progress at {last}");
        last = lex.offset();
    }
    panic!("lexer does not end");
}

/// The unquoted words of each statement, by PostgreSQL's rules (scan.l): `--` comments end at
/// `\n` or `\r`, `/* */` comments nest, `'...'` with `''`, `E'...'` with backslash escapes,
/// `"..."`, `$tag$...$tag$`; a word is `[A-Za-z_\x80-\xff][A-Za-z_0-9$\x80-\xff]*`.
/// None for a syntax error (a `$` that starts neither a dollar quote nor a parameter is one).
fn reference_statements(t: &[u8]) -> Option<Vec<Vec<Vec<u8>>>> {
    let ident_start = |c: u8| c.is_ascii_alphabetic() || c == b'_' || c >= 0x80;
    let ident_cont = |c: u8| ident_start(c) || c.is_ascii_digit() || c == b'$';
    let mut out = vec![Vec::new()];
    let mut i = 0;
    while i < t.len() {
        let c = t[i];
        if t[i..].starts_with(b"--") {
            while i < t.len() && t[i] != b'\n' && t[i] != b'\r' {
                i += 1;
            }
        } else if t[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < t.len() {
                if t[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if t[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == b'\'' || c == b'"' {
            i = quoted(t, i + 1, c, false);
        } else if (c == b'e' || c == b'E') && t.get(i + 1) == Some(&b'\'') {
            i = quoted(t, i + 2, b'\'', true);
        } else if c == b'$' {
            // $tag$ (tag not starting with a digit) or a parameter.
            let mut j = i + 1;
            if t.get(j).is_some_and(|&d| ident_start(d)) {
                while t.get(j).is_some_and(|&d| ident_start(d) || d.is_ascii_digit()) {
                    j += 1;
                }
            }
            if t.get(j) == Some(&b'$') {
                let tag = &t[i..=j];
                i = match t[j + 1..].windows(tag.len()).position(|w| w == tag) {
                    Some(p) => j + 1 + p + tag.len(),
                    None => t.len(),
                };
            } else if t.get(i + 1).is_some_and(u8::is_ascii_digit) {
                i += 1;
                while t.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
            } else {
                return None;
            }
        } else if ident_start(c) {
            let start = i;
            while i < t.len() && ident_cont(t[i]) {
                i += 1;
            }
            out.last_mut().unwrap().push(t[start..i].to_vec());
        } else if c.is_ascii_digit() {
            // Numbers (with letters after them, as `1e5` or `0x1F`) are not words. A `.` ends
            // one: `0.i$$` is `0.` and the identifier `i$$`, no dollar quote.
            while i < t.len() && (t[i].is_ascii_alphanumeric() || t[i] == b'_') {
                i += 1;
            }
        } else if c == b';' {
            out.push(Vec::new());
            i += 1;
        } else {
            i += 1;
        }
    }
    Some(out)
}

/// The end of a quoted token whose inside starts at `i`: a doubled quote stays inside; with
/// `escapes`, a backslash takes the next byte.
fn quoted(t: &[u8], mut i: usize, q: u8, escapes: bool) -> usize {
    while i < t.len() {
        if escapes && t[i] == b'\\' {
            i += 2;
        } else if t[i] == q {
            if t.get(i + 1) == Some(&q) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    t.len()
}
