//! The simple-protocol commands that touch prepared statements, read off a Query's text:
//! `DEALLOCATE [PREPARE] name | ALL`, `DISCARD ALL`, and SQL `PREPARE` / `EXECUTE`.
//!
//! Only a Query that is that one statement is recognised (a trailing `;` allowed); inside a
//! longer string, DISCARD ALL and DEALLOCATE ALL are still seen in the server's CommandComplete.

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    DeallocateAll,
    /// The name as PostgreSQL reads it: unquoted folded to lower case, quoted kept as written.
    Deallocate(Vec<u8>),
    DiscardAll,
    /// SQL PREPARE or EXECUTE (the keyword, upper case).
    Sql(&'static str),
}

/// Cheap test for the scan of every Query: could this text be one of the commands?
pub fn candidate(text: &[u8]) -> bool {
    let i = skip_blank(text, 0);
    match text.get(i) {
        Some(b'/' | b'-') => true,
        // Every query passes here: a first letter other than these settles it.
        Some(c) if !matches!(c | 0x20, b'd' | b'p' | b'e') => false,
        _ => {
            let w = word(text, i);
            ["deallocate", "discard", "prepare", "execute"]
                .iter()
                .any(|k| w.eq_ignore_ascii_case(k.as_bytes()))
        }
    }
}

/// `text` is the Query's body (the SQL and its NUL).
pub fn classify(text: &[u8]) -> Option<Command> {
    let text = text.strip_suffix(b"\0").unwrap_or(text);
    let mut i = skip_space(text, 0);
    let first = word(text, i);
    i += first.len();
    if first.eq_ignore_ascii_case(b"prepare") {
        // PREPARE TRANSACTION 'gid' is two-phase commit, not a prepared statement: it passes.
        let j = skip_space(text, i);
        let second = word(text, j);
        let after = skip_space(text, j + second.len());
        let literal = matches!(text.get(after), Some(b'\'' | b'$'))
            || (matches!(text.get(after), Some(b'e' | b'E')) && text.get(after + 1) == Some(&b'\''));
        if second.eq_ignore_ascii_case(b"transaction") && literal {
            return None;
        }
        return Some(Command::Sql("PREPARE"));
    }
    if first.eq_ignore_ascii_case(b"execute") {
        return Some(Command::Sql("EXECUTE"));
    }
    if first.eq_ignore_ascii_case(b"discard") {
        i = skip_space(text, i);
        let all = word(text, i);
        return (all.eq_ignore_ascii_case(b"all") && at_end(text, i + all.len())).then_some(Command::DiscardAll);
    }
    if !first.eq_ignore_ascii_case(b"deallocate") {
        return None;
    }
    i = skip_space(text, i);
    let (mut name, mut next) = identifier(text, i)?;
    if name.quoted.is_none() && name.raw.eq_ignore_ascii_case(b"prepare") {
        let j = skip_space(text, next);
        if let Some((n, after)) = identifier(text, j) {
            (name, next) = (n, after);
        }
    }
    if !at_end(text, next) {
        return None;
    }
    match name.quoted {
        Some(quoted) => Some(Command::Deallocate(quoted)),
        None if name.raw.eq_ignore_ascii_case(b"all") => Some(Command::DeallocateAll),
        None => Some(Command::Deallocate(name.raw.to_ascii_lowercase())),
    }
}

struct Ident<'a> {
    raw: &'a [u8],
    quoted: Option<Vec<u8>>,
}

/// An identifier at `i` and the position after it.
fn identifier(text: &[u8], i: usize) -> Option<(Ident<'_>, usize)> {
    if text.get(i) == Some(&b'"') {
        let mut out = Vec::new();
        let mut j = i + 1;
        loop {
            match (text.get(j), text.get(j + 1)) {
                (Some(b'"'), Some(b'"')) => {
                    out.push(b'"');
                    j += 2;
                }
                (Some(b'"'), _) => break,
                (Some(&c), _) => {
                    out.push(c);
                    j += 1;
                }
                (None, _) => return None,
            }
        }
        let raw = text.get(i..=j)?;
        return (!out.is_empty()).then_some((Ident { raw, quoted: Some(out) }, j + 1));
    }
    let w = word(text, i);
    (!w.is_empty()).then_some((Ident { raw: w, quoted: None }, i + w.len()))
}

/// Letters, digits, `_` and `$` (and any non-ASCII byte, as PostgreSQL allows) from `i`.
pub(crate) fn word(text: &[u8], i: usize) -> &[u8] {
    let rest = text.get(i..).unwrap_or_default();
    let n = rest
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80))
        .unwrap_or(rest.len());
    &rest[..n]
}

/// Only blanks, comments and `;` are left from `i`.
pub(crate) fn at_end(text: &[u8], i: usize) -> bool {
    let mut i = skip_space(text, i);
    while text.get(i) == Some(&b';') {
        i = skip_space(text, i + 1);
    }
    i >= text.len()
}

pub(crate) fn skip_blank(text: &[u8], mut i: usize) -> usize {
    while text.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// Skips white space and comments (`--` to the end of the line, nested `/* */`).
/// As in PostgreSQL's scanner (`non_newline [^\n\r]`), a `--` comment ends at `\r` as well
/// as `\n`: what follows a lone carriage return is SQL, not comment.
pub(crate) fn skip_space(text: &[u8], mut i: usize) -> usize {
    loop {
        i = skip_blank(text, i);
        match skip_comment(text, i) {
            Some(end) => i = end,
            None => return i,
        }
    }
}

/// The end of the one comment at `i` (the text's end if it is not closed); None if there is
/// no comment at `i`.
pub(crate) fn skip_comment(text: &[u8], mut i: usize) -> Option<usize> {
    match text.get(i..i + 2) {
        Some(b"--") => {
            while text.get(i).is_some_and(|&c| c != b'\n' && c != b'\r') {
                i += 1;
            }
            Some(i)
        }
        Some(b"/*") => {
            let mut depth = 0usize;
            while i < text.len() {
                match text.get(i..i + 2) {
                    Some(b"/*") => {
                        depth += 1;
                        i += 2;
                    }
                    Some(b"*/") => {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            return Some(i);
                        }
                    }
                    _ => i += 1,
                }
            }
            Some(text.len())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(sql: &str) -> Option<Command> {
        classify(format!("{sql}\0").as_bytes())
    }

    #[test]
    fn recognises_the_commands() {
        assert_eq!(c("DEALLOCATE ALL"), Some(Command::DeallocateAll));
        assert_eq!(c("  deallocate prepare all ;"), Some(Command::DeallocateAll));
        assert_eq!(c("DEALLOCATE Foo"), Some(Command::Deallocate(b"foo".to_vec())));
        assert_eq!(
            c("DEALLOCATE PREPARE \"Fo\"\"o\";"),
            Some(Command::Deallocate(b"Fo\"o".to_vec()))
        );
        assert_eq!(c("deallocate prepare"), Some(Command::Deallocate(b"prepare".to_vec())));
        assert_eq!(c("/* hi */ DISCARD ALL -- bye"), Some(Command::DiscardAll));
        assert_eq!(c("prepare p as select 1"), Some(Command::Sql("PREPARE")));
        // Two-phase commit (issue 23): not a prepared statement.
        assert_eq!(c("PREPARE TRANSACTION 'tx1'"), None);
        assert_eq!(c("prepare  transaction\n E'tx''1';"), None);
        assert_eq!(c("prepare transaction $$tx$$"), None);
        // A statement that happens to be called "transaction" is still one.
        assert_eq!(c("prepare transaction as select 1"), Some(Command::Sql("PREPARE")));
        assert_eq!(c("EXECUTE p"), Some(Command::Sql("EXECUTE")));
    }

    #[test]
    fn leaves_everything_else() {
        for sql in [
            "DEALLOCATE a; SELECT 1",
            "DISCARD PLANS",
            "DISCARD ALL; SELECT 1",
            "SELECT 'DEALLOCATE ALL'",
            "DEALLOCATE",
            "DEALLOCATE \"\"",
            "DEALLOCATE \"open",
            "END",
            "/* unclosed",
        ] {
            assert_eq!(c(sql), None, "{sql}");
        }
    }

    #[test]
    fn candidates() {
        assert!(candidate(b" Deallocate x\0"));
        assert!(candidate(b"-- c\nDISCARD ALL\0"));
        assert!(candidate(b"execute p\0"));
        assert!(!candidate(b"END\0"));
        assert!(!candidate(b"SELECT 1\0"));
        assert!(!candidate(b"\0"));
    }

    proptest! {
        #[test]
        fn never_panics(text in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = classify(&text);
            let _ = candidate(&text);
        }

        #[test]
        fn never_panics_on_near_misses(
            text in "(DEALLOCATE|DISCARD|/\\*|--|\"|;| |a|ALL|PREPARE|\\*/|\n){0,8}"
        ) {
            let _ = classify(text.as_bytes());
        }
    }
}
