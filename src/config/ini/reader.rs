//! Scanning pgbouncer.ini as PgBouncer's ini reader does (see the module above), following
//! `%include`s, into a list of (section, key, value, where).

use super::{Src, MAX_INCLUDE_DEPTH};
use crate::config::ConfigError;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Section {
    Pgbouncer,
    Databases,
    Users,
    Peers,
}

pub(super) struct Entry {
    pub section: Section,
    pub key: String,
    pub value: String,
    pub src: Src,
}

pub(super) struct Reader<'a> {
    pub cwd: &'a Path,
    /// Files being read, outermost first (canonical paths), to refuse include loops.
    pub stack: Vec<PathBuf>,
    pub entries: Vec<Entry>,
    /// The current section carries into and out of included files, as in PgBouncer.
    pub section: Option<Section>,
    /// Where the first `[pgbouncer]` header is.
    pub main: Option<Src>,
}

/// C's isspace and isblank, which PgBouncer's reader uses.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t')
}

fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'*')
}

/// A position in the text with its line number; every read is bounds-checked.
struct Cursor<'t> {
    text: &'t str,
    pos: usize,
    line: usize,
}

impl<'t> Cursor<'t> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn bump(&mut self) {
        if let Some(b) = self.peek() {
            self.line += usize::from(b == b'\n');
            self.pos += 1;
        }
    }

    fn skip_while(&mut self, f: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&f) {
            self.bump();
        }
    }

    /// The text from `from` to here. Every stop is at an ASCII byte, a char boundary.
    fn since(&self, from: usize) -> &'t str {
        self.text.get(from..self.pos).unwrap_or("")
    }

    fn rest(&self) -> &'t str {
        self.text.get(self.pos..).unwrap_or("")
    }
}

impl Reader<'_> {
    pub(super) fn scan(&mut self, text: &str, origin: &str, depth: usize) -> Result<(), ConfigError> {
        let mut c = Cursor { text, pos: 0, line: 1 };
        loop {
            c.skip_while(is_space);
            let line = c.line;
            let at = |key: &str| Src {
                file: origin.to_string(),
                line,
                key: key.to_string(),
            };
            let syntax = |message: &str| at("").err(format!("syntax error: {message}"));
            if c.rest().starts_with("%include") && c.text.as_bytes().get(c.pos + 8).copied().is_some_and(is_blank) {
                (0..8).for_each(|_| c.bump());
                c.skip_while(is_blank);
                let start = c.pos;
                c.skip_while(|b| b != b'\n');
                let name = c.since(start).trim_end_matches(|ch: char| ch.is_ascii_whitespace());
                self.include(name, &at("%include"), depth)?;
                continue;
            }
            match c.peek() {
                None => break,
                Some(b'#' | b';') => {
                    c.skip_while(|b| b != b'\n');
                    continue;
                }
                Some(b'[') => {
                    c.bump();
                    let start = c.pos;
                    c.skip_while(|b| b != b']' && b != b'\n');
                    if c.peek() != Some(b']') {
                        return Err(syntax("missing \"]\" after the section name"));
                    }
                    let name = c.since(start);
                    c.bump();
                    self.section(name, &at(""))?;
                    continue;
                }
                _ => {}
            }
            let key = match c.peek() {
                Some(b'\'') => {
                    c.bump();
                    let start = c.pos;
                    c.skip_while(|b| b != b'\'');
                    if c.peek() != Some(b'\'') {
                        return Err(syntax("missing closing \"'\" after the key"));
                    }
                    let key = c.since(start);
                    c.bump();
                    if key.is_empty() {
                        return Err(syntax("empty quoted key"));
                    }
                    key
                }
                Some(b'"') => {
                    return Err(syntax("quote a name with single quotes, e.g. 'my db' = host=..."));
                }
                _ => {
                    let start = c.pos;
                    c.skip_while(is_key_char);
                    c.since(start)
                }
            };
            c.skip_while(is_blank);
            if c.peek() != Some(b'=') {
                let message = match key {
                    "" => "expected key = value".to_string(),
                    key => format!("expected \"=\" after {key:?} (keys are letters, digits and _.-*)"),
                };
                return Err(syntax(&message));
            }
            c.bump();
            c.skip_while(is_blank);
            let start = c.pos;
            c.skip_while(|b| b != b'\n');
            let value = c.since(start).trim_end_matches(|ch: char| ch.is_ascii_whitespace());
            self.entry(key, value, at(key))?;
        }
        Ok(())
    }

    fn section(&mut self, name: &str, src: &Src) -> Result<(), ConfigError> {
        let section = match name {
            "pgbouncer" => Section::Pgbouncer,
            "databases" => Section::Databases,
            "users" => Section::Users,
            "peers" => Section::Peers,
            _ => {
                let known = ["pgbouncer", "databases", "users", "peers"];
                let hint = match known.iter().find(|k| k.eq_ignore_ascii_case(name.trim())) {
                    Some(k) => format!("; section names are case-sensitive and unpadded: [{k}]"),
                    None if name == "pooler" || name.starts_with("databases.") || name.starts_with("users.") => {
                        "; this looks like a pooler.toml: give it a name not ending in .ini".to_string()
                    }
                    None => format!("; expected one of [{}]", known.join("], [")),
                };
                return Err(src.err(format!("invalid section [{name}]{hint}")));
            }
        };
        if section == Section::Pgbouncer && self.main.is_none() {
            self.main = Some(src.with_key(""));
        }
        self.section = Some(section);
        Ok(())
    }

    fn entry(&mut self, key: &str, value: &str, src: Src) -> Result<(), ConfigError> {
        let Some(section) = self.section else {
            return Err(src.err("a value before any section; put it under [pgbouncer]"));
        };
        if key.is_empty() {
            return Err(src.err("empty key"));
        }
        self.entries.push(Entry {
            section,
            key: key.to_string(),
            value: value.to_string(),
            src,
        });
        Ok(())
    }

    fn include(&mut self, name: &str, src: &Src, depth: usize) -> Result<(), ConfigError> {
        if name.is_empty() {
            return Err(src.err("%include needs a file name"));
        }
        if depth >= MAX_INCLUDE_DEPTH {
            let message = format!("{name}: includes nested deeper than {MAX_INCLUDE_DEPTH} levels");
            return Err(src.err(message));
        }
        let path = self.cwd.join(name);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            // PgBouncer takes a relative name from the working directory, not from the file.
            let beside = Path::new(&src.file).parent().map(|dir| dir.join(name));
            let hint = match beside {
                Some(b) if Path::new(name).is_relative() && b != path && b.exists() => format!(
                    "; a relative name is taken from the working directory ({}), as in PgBouncer: \
                     write {}",
                    self.cwd.display(),
                    b.display()
                ),
                _ => String::new(),
            };
            src.err(format!("cannot read {name}: {e}{hint}"))
        })?;
        let canonical = std::fs::canonicalize(&path).unwrap_or(path);
        if self.stack.contains(&canonical) {
            let chain: Vec<String> = self.stack.iter().map(|p| p.display().to_string()).collect();
            let message = format!("include loop: {} includes {name} again", chain.join(" -> "));
            return Err(src.err(message));
        }
        self.stack.push(canonical);
        let result = self.scan(&text, name, depth + 1);
        self.stack.pop();
        result
    }
}
