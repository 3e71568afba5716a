//! `auth_file`: PgBouncer's userlist.txt. One user per line, `"name" "secret"`, both in double
//! quotes (a quote inside is doubled); the secret is plain, `md5…` or `SCRAM-SHA-256$…`, read
//! like a `[users]` password. Blank lines and lines starting with `;` or `#` are comments;
//! anything else that is not such a pair is refused with `file:line`, and a secret never
//! appears in an error.

use super::Secret;
use std::collections::BTreeMap;

/// Parses the file's text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<BTreeMap<String, Secret>, String> {
    let mut users = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        let (name, rest) = quoted(line).ok_or_else(|| format!("{origin}:{n}: expected \"user\" \"password\""))?;
        let (secret, rest) = quoted(rest.trim_start())
            .ok_or_else(|| format!("{origin}:{n}: user \"{name}\": expected a quoted password after the name"))?;
        let rest = rest.trim();
        if !(rest.is_empty() || rest.starts_with(';') || rest.starts_with('#')) {
            return Err(format!(
                "{origin}:{n}: user \"{name}\": unexpected text after the password"
            ));
        }
        if name.is_empty() {
            return Err(format!("{origin}:{n}: empty user name"));
        }
        let secret = Secret::parse(&secret).map_err(|e| format!("{origin}:{n}: user \"{name}\": {e}"))?;
        if users.insert(name.clone(), secret).is_some() {
            return Err(format!("{origin}:{n}: user \"{name}\" is listed twice"));
        }
    }
    Ok(users)
}

/// A double-quoted word at the start of `text` (`""` inside is a quote), and what follows it.
fn quoted(text: &str) -> Option<(String, &str)> {
    let body = text.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            out.push(c);
            continue;
        }
        if chars.peek().map(|&(_, c)| c) == Some('"') {
            chars.next();
            out.push('"');
            continue;
        }
        return Some((out, body.get(i + 1..).unwrap_or("")));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_md5_and_scram_secrets() {
        let text = "; PgBouncer's userlist\n\
                    \"app\" \"app\"\n\
                    \n\
                    # md5 of password \"secret\" for user \"md\"\n\
                    \"md\"  \"md5e8e0cd8a8c9b2b5f8e1f1c3e7f0d9a1b\"\n\
                    \"we\"\"ird\" \"pa ss\"\"word\"  ; trailing comment\n\
                    \"sc\" \"SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n";
        let users = parse(text, "userlist.txt").unwrap();
        assert_eq!(users.len(), 4);
        assert_eq!(users["app"], Secret::Plain("app".into()));
        assert!(matches!(users["md"], Secret::Md5(_)));
        assert_eq!(users["we\"ird"], Secret::Plain("pa ss\"word".into()));
        assert!(matches!(users["sc"], Secret::Scram(_)));
    }

    #[test]
    fn malformed_lines_name_the_line_and_never_the_secret() {
        for (text, want) in [
            ("app app", "userlist.txt:1: expected \"user\" \"password\""),
            ("\n\"app\"", "userlist.txt:2: user \"app\": expected a quoted password"),
            (
                "\"app\" \"hunter2",
                "userlist.txt:1: user \"app\": expected a quoted password",
            ),
            ("\"app\" \"hunter2\" x", "unexpected text after the password"),
            ("\"\" \"hunter2\"", "empty user name"),
            (
                "\"a\" \"hunter2\"\n\"a\" \"hunter2\"",
                "userlist.txt:2: user \"a\" is listed twice",
            ),
            ("\"a\" \"\"", "userlist.txt:1: user \"a\": empty password"),
        ] {
            let e = parse(text, "userlist.txt").unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
