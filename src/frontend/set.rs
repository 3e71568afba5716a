//! Session `SET` / `RESET` a client sends as a simple Query, read off its text, so that in
//! transaction and statement modes the setting follows the client to its next server.
//!
//! The value is kept as the SQL the client wrote and re-applied verbatim (`search_path = a, "B"`
//! is a list, not one string), so only values that lex as plain identifiers, quoted identifiers,
//! `'strings'` and numbers, separated by commas, are accepted. Anything else (backslashes,
//! `E'...'`, non-ASCII, expressions, several statements) is not tracked: in doubt, the query
//! still goes to the server and pgmux forgets nothing and remembers nothing.

use crate::backend::settings::{Settings, REPORTED};
use crate::prepared::query::{at_end, skip_blank, skip_space, word};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `SET [SESSION] name {=|TO} value`: the lower-case name and the value as SQL.
    Set { name: String, value: String },
    /// `RESET name`, `SET name TO DEFAULT`.
    Reset(String),
    /// `RESET ALL`, `DISCARD ALL`.
    ResetAll,
}

/// Not plain settings: they change who the session is, or last one transaction.
const NOT_TRACKED: &[&str] = &[
    "role",
    "session_authorization",
    "transaction_isolation",
    "transaction_read_only",
    "transaction_deferrable",
];

/// Longest value remembered: settings are re-applied at every change of server.
const MAX_VALUE: usize = 4096;

/// Cheap test for a Query alone in flight: could this text be a SET or RESET?
pub fn candidate(text: &[u8]) -> bool {
    let i = skip_blank(text, 0);
    // Every query passes here: its first three letters settle most of them.
    let start = text.get(i..i + 3).map(|s| [s[0] | 0x20, s[1] | 0x20, s[2] | 0x20]);
    if !matches!(start, Some(ref s) if matches!(s, b"set" | b"res" | b"dis"))
        && !matches!(text.get(i), Some(b'/' | b'-'))
    {
        return false;
    }
    match text.get(i) {
        Some(b'/' | b'-') => true,
        _ => {
            let w = word(text, i);
            [&b"set"[..], b"reset", b"discard"]
                .iter()
                .any(|k| w.eq_ignore_ascii_case(k))
        }
    }
}

/// SET LOCAL and SET TRANSACTION statements (whose tag is `SET` but whose effect ends with the
/// transaction) in complete client frames (Query texts, Parse queries).
pub fn harmless(frames: &[u8]) -> u16 {
    use crate::protocol::frame::{peek_header, HEADER_LEN};
    use crate::route::lexer::{Lexer, Tok};
    let mut n: u16 = 0;
    let mut pos = 0;
    while let Ok(Some((tag, total))) = peek_header(frames.get(pos..).unwrap_or_default(), usize::MAX >> 1) {
        let body = frames.get(pos + HEADER_LEN..pos + total).unwrap_or_default();
        pos += total;
        let text = match tag {
            b'Q' => body,
            b'P' => match crate::protocol::frame::parse_query(body) {
                Some(q) => q.split(|&b| b == 0).next().unwrap_or_default(),
                None => continue,
            },
            _ => continue,
        };
        let mut lex = Lexer::new(text.strip_suffix(b"\0").unwrap_or(text));
        let mut words: u32 = 0;
        let mut first_is_set = false;
        loop {
            match lex.next_tok() {
                Tok::End => break,
                Tok::Semi => words = 0,
                Tok::Word(w) if words == 0 => {
                    first_is_set = w.eq_ignore_ascii_case(b"set");
                    words = 1;
                }
                Tok::Word(w) if words == 1 => {
                    if first_is_set && (w.eq_ignore_ascii_case(b"local") || w.eq_ignore_ascii_case(b"transaction")) {
                        n = n.saturating_add(1);
                    }
                    words = 2;
                }
                _ => words = words.max(1).saturating_add(1),
            }
        }
    }
    n
}

/// `text` is the Query's body (the SQL and its NUL). None: not a command that is tracked.
pub fn parse(text: &[u8]) -> Option<Command> {
    let text = text.strip_suffix(b"\0").unwrap_or(text);
    let mut i = skip_space(text, 0);
    let first = word(text, i);
    i = skip_space(text, i + first.len());
    let reset = first.eq_ignore_ascii_case(b"reset");
    if reset || first.eq_ignore_ascii_case(b"discard") {
        if word(text, i).eq_ignore_ascii_case(b"all") && at_end(text, i + 3) {
            return Some(Command::ResetAll);
        }
        if !reset {
            return None;
        }
        let (name, end) = name(text, i)?;
        return at_end(text, end).then_some(Command::Reset(name));
    }
    if !first.eq_ignore_ascii_case(b"set") {
        return None;
    }
    let w = word(text, i);
    if w.eq_ignore_ascii_case(b"local") {
        return None;
    }
    if w.eq_ignore_ascii_case(b"session") {
        i = skip_space(text, i + w.len());
    }
    let (name, end) = name(text, i)?;
    i = skip_space(text, end);
    if text.get(i) == Some(&b'=') {
        i += 1;
    } else if word(text, i).eq_ignore_ascii_case(b"to") {
        i += 2;
    } else {
        return None;
    }
    i = skip_space(text, i);
    let w = word(text, i);
    if w.eq_ignore_ascii_case(b"default") {
        return at_end(text, i + w.len()).then_some(Command::Reset(name));
    }
    let mut value = String::new();
    loop {
        let end = item(text, i)?;
        // Items are ASCII (checked by `item`).
        value.push_str(std::str::from_utf8(text.get(i..end)?).ok()?);
        i = skip_space(text, end);
        if text.get(i) != Some(&b',') {
            break;
        }
        value.push_str(", ");
        i = skip_space(text, i + 1);
    }
    (at_end(text, i) && value.len() <= MAX_VALUE).then_some(Command::Set { name, value })
}

/// Records a command that succeeded on `server`, which now holds the new value.
pub fn apply(command: Command, client: &mut Settings, server: &mut Settings) {
    client.keep_startup();
    match command {
        // Reported parameters are followed through ParameterStatus, with their canonical value.
        Command::Set { name, .. } if REPORTED.contains(&name.as_str()) => {}
        Command::Set { name, value } => {
            client.set_sql(&name, &value);
            server.set_sql(&name, &value);
        }
        Command::Reset(name) => {
            match client.startup().get(&name) {
                Some(value) => client.set(&name, value),
                None => client.remove(&name),
            }
            // The server is back at its own default: as far as pgmux knows, no setting.
            server.remove(&name);
        }
        Command::ResetAll => {
            *client = client.startup();
            *server = Settings::default();
        }
    }
}

/// A setting's name, `part[.part]`, parts unquoted or quoted, lower case; and the position after.
fn name(text: &[u8], mut i: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    loop {
        let (part, end) = if text.get(i) == Some(&b'"') {
            let end = quoted(text, i, b'"')?;
            (text.get(i + 1..end - 1)?, end)
        } else {
            let w = word(text, i);
            (w, i + w.len())
        };
        let valid = part.first().is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
            && part.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
        if !valid {
            return None;
        }
        name.extend(part.iter().map(|c| c.to_ascii_lowercase() as char));
        i = end;
        if text.get(i) != Some(&b'.') {
            break;
        }
        name.push('.');
        i += 1;
    }
    (!NOT_TRACKED.contains(&name.as_str())).then_some((name, i))
}

/// One value item at `i`: an identifier, a quoted identifier, a string or a number. Returns its
/// end; None for anything else.
fn item(text: &[u8], i: usize) -> Option<usize> {
    let end = match *text.get(i)? {
        q @ (b'\'' | b'"') => quoted(text, i, q)?,
        // ASCII only: a value must mean the same whatever the client encoding.
        c if c.is_ascii_alphabetic() || c == b'_' => match word(text, i) {
            w if w.is_ascii() => i + w.len(),
            _ => return None,
        },
        _ => number(text, i)?,
    };
    // `E'...'`, `64MB`, `$1` and the like are not items.
    let next = text.get(end);
    if next.is_some_and(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'\'' | b'"' | b'.')) {
        return None;
    }
    Some(end)
}

/// `[+-]digits[.digits]`, at least one digit.
fn number(text: &[u8], mut i: usize) -> Option<usize> {
    if matches!(text.get(i), Some(b'+' | b'-')) {
        i += 1;
    }
    let start = i;
    let digits = |mut i: usize| {
        while text.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    i = digits(i);
    if text.get(i) == Some(&b'.') {
        i = digits(i + 1);
    }
    text.get(start..i)?.iter().any(u8::is_ascii_digit).then_some(i)
}

/// A `'string'` or `"identifier"` at `i` (the quote doubled inside), ASCII without backslashes
/// (they mean different things as standard_conforming_strings changes); the position after it.
fn quoted(text: &[u8], i: usize, quote: u8) -> Option<usize> {
    let mut j = i + 1;
    loop {
        match *text.get(j)? {
            c if c == quote => {
                if text.get(j + 1) != Some(&quote) {
                    break;
                }
                j += 2;
            }
            b'\\' => return None,
            c if !c.is_ascii() => return None,
            _ => j += 1,
        }
    }
    // An empty quoted identifier is an error in PostgreSQL; an empty string is fine.
    (quote == b'\'' || j > i + 1).then_some(j + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(sql: &str) -> Option<Command> {
        parse(format!("{sql}\0").as_bytes())
    }

    fn set(name: &str, value: &str) -> Option<Command> {
        Some(Command::Set {
            name: name.into(),
            value: value.into(),
        })
    }

    #[test]
    fn counts_what_ends_with_the_transaction() {
        use crate::protocol::frame::test_frame as frame;
        let mut frames = frame(
            b'Q',
            b"SET LOCAL work_mem = '1MB'; set transaction read only; SET x = 1\0",
        );
        frames.extend(frame(b'P', b"s\0set local a = 2\0\0\0"));
        frames.extend(frame(b'Q', b"select 'set local'; BEGIN; SET LOCAL b = 3\0"));
        assert_eq!(harmless(&frames), 4);
        assert_eq!(harmless(&frame(b'Q', b"SET x TO local\0")), 0);
    }

    #[test]
    fn statements() {
        let reset = |n: &str| Some(Command::Reset(n.into()));
        let table = [
            (
                "SET search_path = a, \"B\", public",
                set("search_path", "a, \"B\", public"),
            ),
            ("set Search_Path to a,\"B\";", set("search_path", "a, \"B\"")),
            ("SET SESSION statement_timeout = 1000", set("statement_timeout", "1000")),
            ("SET statement_timeout TO '5s' ; ", set("statement_timeout", "'5s'")),
            ("  SET work_mem='64MB' -- bye", set("work_mem", "'64MB'")),
            ("/* hi */ SET myapp.x = 'it''s'", set("myapp.x", "'it''s'")),
            ("SET \"MyApp\".\"Y\" = -1.5", set("myapp.y", "-1.5")),
            ("SET x.y = ''", set("x.y", "''")),
            ("SET extra_float_digits = +3", set("extra_float_digits", "+3")),
            ("SET enable_seqscan = off", set("enable_seqscan", "off")),
            ("SET timezone = 'UTC'", set("timezone", "'UTC'")),
            ("SET search_path = DEFAULT", reset("search_path")),
            ("SET search_path TO default;", reset("search_path")),
            ("RESET work_mem", reset("work_mem")),
            ("reset myapp.x;", reset("myapp.x")),
            ("RESET ALL", Some(Command::ResetAll)),
            ("reset all ; -- x", Some(Command::ResetAll)),
            ("DISCARD ALL", Some(Command::ResetAll)),
            ("DISCARD PLANS", None),
            // Not tracked.
            ("SET LOCAL work_mem = '1MB'", None),
            ("SET ROLE bob", None),
            ("SET role = bob", None),
            ("SET role TO 'bob'", None),
            ("RESET ROLE", None),
            ("SET SESSION AUTHORIZATION bob", None),
            ("SET SESSION AUTHORIZATION DEFAULT", None),
            ("SET session_authorization = bob", None),
            ("RESET SESSION AUTHORIZATION", None),
            ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", None),
            ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", None),
            ("SET transaction_isolation = 'serializable'", None),
            ("SET CONSTRAINTS ALL DEFERRED", None),
            ("SET TIME ZONE 'UTC'", None),
            ("SET NAMES 'UTF8'", None),
            ("SET SCHEMA 'a'", None),
            ("SET x.y = E'a\\'b'", None),
            ("SET x.y = 'a\\'", None),
            ("SET x.y = 'a'; SELECT 1", None),
            ("SET x.y = 'a'; SET x.z = 1", None),
            ("SET x.y = 'unclosed", None),
            ("SET x.y = \"\"", None),
            ("SET x.y = 'é'", None),
            ("SET x.y = 1 + 1", None),
            ("SET x.y = 64MB", None),
            ("SET x.y = $1", None),
            ("SET x.y = $$a$$", None),
            ("SET x.y = 1e5", None),
            ("SET x.y = a b", None),
            ("SET x.y = a,", None),
            ("SET x.y = ", None),
            ("SET x.y 1", None),
            ("SET x. = 1", None),
            ("SET x.y = now()", None),
            ("SET x.y = DEFAULT, 1", None),
            ("SET", None),
            ("RESET", None),
            ("RESET a b", None),
            ("SELECT 1", None),
            ("SETTLE x = 1", None),
        ];
        for (sql, want) in table {
            assert_eq!(p(sql), want, "{sql}");
        }
    }

    /// As PostgreSQL reads it, a `--` comment ends at a carriage return (found by fuzzing the
    /// router, fuzz/fuzz_targets/classify.rs, which shares the comment scanner).
    #[test]
    fn line_comment_ends_at_carriage_return() {
        assert_eq!(p("SET search_path = a --x\r, b"), set("search_path", "a, b"));
        assert_eq!(p("RESET ALL --\r; SET x = 1"), None);
    }

    #[test]
    fn candidates() {
        assert!(candidate(b" set x = 1\0"));
        assert!(candidate(b"RESET ALL\0"));
        assert!(candidate(b"discard all\0"));
        assert!(candidate(b"/* c */ SET x = 1\0"));
        assert!(!candidate(b"SELECT 1\0"));
        assert!(!candidate(b"SETTLE\0"));
        assert!(!candidate(b"\0"));
    }

    #[test]
    fn apply_follows_startup() {
        let mut startup = Settings::default();
        startup.set("work_mem", "8MB");
        let mut client = startup.clone();
        let mut server = Settings::default();
        for sql in [
            "SET work_mem = '64MB'",
            "SET search_path = a, \"B\"",
            "SET application_name = 'x'",
        ] {
            apply(p(sql).unwrap(), &mut client, &mut server);
        }
        assert_eq!(client, server);
        assert_eq!(client.get("application_name"), None);
        assert_eq!(
            client.apply_sql(&startup).unwrap(),
            "SET \"search_path\" TO a, \"B\";SET \"work_mem\" TO '64MB';"
        );
        apply(p("RESET work_mem").unwrap(), &mut client, &mut server);
        assert_eq!(client.get("work_mem"), Some("8MB"));
        assert_eq!(server.get("work_mem"), None);
        apply(p("RESET ALL").unwrap(), &mut client, &mut server);
        assert_eq!(client, startup);
        assert_eq!(client.startup(), startup);
        assert_eq!(server, Settings::default());
    }

    proptest! {
        #[test]
        fn never_panics(text in proptest::collection::vec(any::<u8>(), 0..60)) {
            let _ = parse(&text);
            let _ = candidate(&text);
        }

        #[test]
        fn never_panics_on_near_misses(
            text in "(SET|RESET|SESSION|LOCAL|ALL|DEFAULT|TO|=|a|\\.|,|'|\"|\\\\|1|-|\\+|;| |/\\*|\\*/|--|\n){0,10}"
        ) {
            let _ = parse(text.as_bytes());
        }

        /// What is tracked re-lexes to the same command: the fragment is self-contained.
        #[test]
        fn fragments_reparse(
            text in "SET (a|x\\.y|\"Q\") (=|TO) ('[a-z;\"' ]{0,4}'|\"[a-z;' ]{1,4}\"|[a-z]{1,3}|-?[0-9]{1,3}(\\.[0-9])?)(, ?('[a-z;]{0,3}'|b|7)){0,3}( ;)?"
        ) {
            if let Some(Command::Set { name, value }) = parse(text.as_bytes()) {
                let again = parse(format!("SET {name} TO {value}").as_bytes());
                prop_assert_eq!(again, Some(Command::Set { name, value }));
            }
        }
    }
}
