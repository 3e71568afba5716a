//! PgBouncer's `pgbouncer.ini`, read the way PgBouncer reads it and turned into pooler.toml
//! text, so that `--config pgbouncer.ini`, `check` and `convert` share `Config::parse`.
//!
//! The file is scanned as PgBouncer's ini reader does: leading blanks and empty lines are
//! skipped; a line starting with `;` or `#` is a comment (the characters mean nothing later in
//! a line, so `key = 5 ; note` has the value `5 ; note`); `[name]` opens a section (names are
//! case-sensitive); `key = value` takes the rest of the line, trailing blanks removed; a key is
//! made of letters, digits and `_.-*`, or is quoted with single quotes; `%include FILE` reads
//! FILE in place, a relative name being taken from the working directory, as PgBouncer does.
//!
//! Each line of the TOML written remembers the ini file, line and key it came from, so that a
//! problem `Config::parse` finds in it is reported as `pgbouncer.ini:LINE: key: problem`.
//! Settings pgmux does not act on become notes, `file:line: key: what to do instead`, which
//! `Config::notes` carries to the startup log, `check` and `convert`.

mod connstr;
mod keys;
mod reader;
mod values;

#[cfg(test)]
mod tests;

use super::{Config, ConfigError};
use reader::{Reader, Section};
use std::collections::BTreeMap;
use std::path::Path;

/// PgBouncer's limit on nested `%include`s.
const MAX_INCLUDE_DEPTH: usize = 10;

/// Whether `Config::load` should read the file as PgBouncer's format: a `.ini` name, or a
/// `[pgbouncer]` section or `%include` line in the text (neither is valid TOML for pgmux).
pub fn looks_like_ini(path: &Path, text: &str) -> bool {
    let ini_name = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("ini"));
    ini_name
        || text.lines().map(str::trim_start).any(|l| {
            l.starts_with("[pgbouncer]") || l.strip_prefix("%include").is_some_and(|r| r.starts_with([' ', '\t']))
        })
}

/// Where a line of the generated TOML came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Src {
    pub file: String,
    pub line: usize,
    /// The key as the ini names it: `listen_port`, `databases.foo.port`, `users.bob`.
    pub key: String,
}

impl Src {
    fn with_key(&self, key: impl Into<String>) -> Src {
        Src {
            key: key.into(),
            ..self.clone()
        }
    }

    pub(crate) fn err(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: self.file.clone(),
            line: Some(self.line),
            key: self.key.clone(),
            message: message.into(),
        }
    }

    fn note(&self, text: impl AsRef<str>) -> String {
        format!("{}:{}: {}: {}", self.file, self.line, self.key, text.as_ref())
    }
}

/// A pgbouncer.ini turned into pooler.toml text.
#[derive(Debug, Clone)]
pub struct Converted {
    /// pooler.toml text, with the notes as comments at the top.
    pub toml: String,
    /// `file:line: key: what to do instead`, one per setting pgmux does not act on.
    pub notes: Vec<String>,
    origin: String,
    /// The source of each line of `toml` (None for comments and the like).
    lines: Vec<Option<Src>>,
}

impl Converted {
    /// Parses the TOML as any pooler.toml; a problem names the ini file, line and key.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let mut config = Config::parse(&self.toml, &self.origin).map_err(|e| self.locate(e))?;
        config.notes = self.notes.clone();
        Ok(config)
    }

    /// An error about a `[pooler]` key found after parsing (e.g. reading auth_file), moved to
    /// the ini line that set the key.
    pub fn locate_pooler_key(&self, e: ConfigError) -> ConfigError {
        let key = e.key.strip_prefix("pooler.").unwrap_or(&e.key);
        let prefix = format!("{key} = ");
        let at = self.toml.lines().zip(&self.lines).find(|(l, _)| l.starts_with(&prefix));
        match at {
            Some((_, Some(src))) => src.err(e.message),
            _ => e,
        }
    }

    fn locate(&self, e: ConfigError) -> ConfigError {
        let src = e
            .line
            .and_then(|l| self.lines.get(l.checked_sub(1)?))
            .and_then(Option::as_ref);
        match src {
            Some(src) => src.err(e.message),
            None => ConfigError {
                origin: self.origin.clone(),
                line: None,
                ..e
            },
        }
    }
}

/// Reads `path` (and its includes, relative to the working directory) as pgbouncer.ini.
pub fn convert_file(path: &Path) -> Result<Converted, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        origin: origin.clone(),
        line: None,
        key: String::new(),
        message: format!("cannot read file: {e}"),
    })?;
    let cwd = std::env::current_dir().unwrap_or_default();
    convert(&text, path, &cwd)
}

/// `text` is the content of `path`; relative `%include` names are taken from `cwd`.
pub(crate) fn convert(text: &str, path: &Path, cwd: &Path) -> Result<Converted, ConfigError> {
    let origin = path.display().to_string();
    let mut reader = Reader {
        cwd,
        stack: Vec::new(),
        entries: Vec::new(),
        section: None,
        main: None,
    };
    let top = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    reader.stack.push(top);
    reader.scan(text, &origin, 0)?;
    let Some(main) = reader.main.clone() else {
        return Err(ConfigError {
            origin,
            line: None,
            key: String::new(),
            message: "no [pgbouncer] section: PgBouncer requires one (an empty one will do)".into(),
        });
    };
    let mut out = Out::new(main);
    for entry in &reader.entries {
        match entry.section {
            Section::Pgbouncer => keys::pgbouncer(&mut out, &entry.key, &entry.value, &entry.src)?,
            Section::Databases => connstr::database(&mut out, &entry.key, &entry.value, &entry.src)?,
            Section::Users => connstr::user(&mut out, &entry.key, &entry.value, &entry.src)?,
            Section::Peers => connstr::peer(&mut out, &entry.key, &entry.value, &entry.src)?,
        }
    }
    Ok(out.finish(origin))
}

/// One `key = value` of the TOML: the value already written as TOML.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    key: &'static str,
    value: String,
    src: Src,
    comment: Option<String>,
}

/// A `[databases]` entry: the host is settled at the end, as it may depend on unix_socket_dir.
#[derive(Debug, Clone, Default)]
pub(crate) struct Db {
    host: Option<String>,
    items: Vec<Item>,
    src: Option<Src>,
}

/// What the ini says, in pgmux terms.
pub(crate) struct Out {
    pooler: Vec<Item>,
    users: BTreeMap<String, (Src, Vec<Item>)>,
    databases: BTreeMap<String, Db>,
    /// `[peers]`, by id: the entry's source and its keys.
    peers: BTreeMap<u16, (Src, Vec<Item>)>,
    notes: Vec<String>,
    /// The `[pgbouncer]` header: the source of the defaults written for keys the ini leaves out.
    main: Src,
    /// `[pgbouncer] unix_socket_dir` as set in the ini (PgBouncer's default: /tmp).
    unix_socket_dir: Option<String>,
}

fn set(items: &mut Vec<Item>, item: Item) {
    // A key set twice: the last one wins, as in PgBouncer.
    match items.iter_mut().find(|i| i.key == item.key) {
        Some(old) => *old = item,
        None => items.push(item),
    }
}

impl Out {
    fn new(main: Src) -> Out {
        Out {
            pooler: Vec::new(),
            users: BTreeMap::new(),
            databases: BTreeMap::new(),
            peers: BTreeMap::new(),
            notes: Vec::new(),
            main,
            unix_socket_dir: None,
        }
    }

    fn pooler(&mut self, key: &'static str, value: String, src: &Src) {
        let item = Item {
            key,
            value,
            src: src.clone(),
            comment: None,
        };
        set(&mut self.pooler, item);
    }

    fn note(&mut self, src: &Src, text: impl AsRef<str>) {
        self.notes.push(src.note(text));
    }

    /// Settings PgBouncer accepts with a meaning pgmux spells differently.
    fn fix_up(&mut self) {
        let number = |items: &[Item], key: &str| -> Option<u32> {
            items.iter().find(|i| i.key == key).and_then(|i| i.value.parse().ok())
        };
        // reserve_pool_timeout = 0 turns PgBouncer's reserve off; pgmux's would be at once.
        let no_reserve = self
            .pooler
            .iter()
            .find(|i| i.key == "reserve_pool_timeout" && i.value == "0")
            .map(|i| i.src.clone());
        if let Some(src) = no_reserve {
            let had = number(&self.pooler, "reserve_pool_size").is_some_and(|n| n > 0)
                || self
                    .databases
                    .values()
                    .any(|d| number(&d.items, "reserve_pool").is_some_and(|n| n > 0));
            if had {
                self.note(
                    &src,
                    "0 turns the reserve pool off in PgBouncer (in pgmux it would be used at once): \
                     reserve_pool_size and every database's reserve_pool are set to 0",
                );
            }
            self.pooler("reserve_pool_size", "0".into(), &src);
            for db in self.databases.values_mut() {
                db.items.retain(|i| i.key != "reserve_pool");
            }
        }
        // PgBouncer caps min_pool_size at the pool size; pgmux refuses a larger one.
        let size = number(&self.pooler, "default_pool_size").unwrap_or(20);
        let min = number(&self.pooler, "min_pool_size").unwrap_or(0);
        let capped = |min: u32, size: u32| {
            format!("{min} is larger than the pool size {size}: capped at {size}, as PgBouncer does")
        };
        if min > size {
            if let Some(item) = self.pooler.iter_mut().find(|i| i.key == "min_pool_size") {
                item.value = size.to_string();
                let note = item.src.note(capped(min, size));
                self.notes.push(note);
            }
        }
        let min = min.min(size);
        for db in self.databases.values_mut() {
            let db_size = number(&db.items, "pool_size").unwrap_or(size);
            let db_min = number(&db.items, "min_pool_size");
            let Some(at) = db.src.clone() else { continue };
            match db_min {
                Some(m) if m > db_size => {
                    if let Some(item) = db.items.iter_mut().find(|i| i.key == "min_pool_size") {
                        item.value = db_size.to_string();
                        self.notes.push(item.src.note(capped(m, db_size)));
                    }
                }
                None if min > db_size => {
                    let src = at.with_key(format!("{}.min_pool_size", at.key));
                    self.notes.push(src.note(capped(min, db_size)));
                    set(
                        &mut db.items,
                        Item {
                            key: "min_pool_size",
                            value: db_size.to_string(),
                            src,
                            comment: None,
                        },
                    );
                }
                _ => {}
            }
        }
    }

    /// PgBouncer's defaults where pgmux's differ, for keys the ini leaves out.
    fn defaults(&mut self) {
        let defaults: [(&str, &str, &str); 6] = [
            ("pool_mode", "pool_mode", "\"session\""),
            ("server_check_query", "server_check_query", "\"select 1\""),
            ("max_client_conn", "max_client_conn", "100"),
            ("auth_type", "auth_type", "\"md5\""),
            ("server_tls_mode", "server_tls_sslmode", "\"prefer\""),
            ("unix_socket_dir", "unix_socket_dir", "\"/tmp\""),
        ];
        for (key, ini_key, value) in defaults {
            if !self.pooler.iter().any(|i| i.key == key) {
                self.pooler.push(Item {
                    key,
                    value: value.to_string(),
                    src: self.main.with_key(ini_key),
                    comment: Some("PgBouncer's default".into()),
                });
            }
        }
        if !self.pooler.iter().any(|i| i.key == "listen_addr") {
            let src = self.main.with_key("listen_addr");
            self.note(
                &src,
                "not set: PgBouncer would listen on its Unix socket only; pgmux also listens on \
                 127.0.0.1 (set listen_addr to choose)",
            );
        }
    }

    /// A database without host: PgBouncer connects through the Unix socket in unix_socket_dir.
    fn settle_hosts(&mut self) {
        let socket_dir = self.unix_socket_dir.clone().unwrap_or_else(|| "/tmp".into());
        for (name, db) in &mut self.databases {
            if db.host.is_some() {
                continue;
            }
            if socket_dir.starts_with('/') {
                db.host = Some(socket_dir.clone());
            } else {
                let src = db.src.clone().unwrap_or_else(|| self.main.clone());
                let text = "no host, and no Unix socket directory to reach the server through: \
                            pgmux connects to 127.0.0.1";
                self.notes
                    .push(src.with_key(format!("databases.{}", toml_key(name))).note(text));
                db.host = Some("127.0.0.1".into());
            }
        }
    }

    fn finish(mut self, origin: String) -> Converted {
        self.fix_up();
        self.defaults();
        self.settle_hosts();
        let mut w = Writer::default();
        w.line(
            &format!(
                "# pooler.toml converted from {} (PgBouncer's format) by pgmux.",
                origin.replace(|c: char| c.is_control() && c != '\t', " ")
            ),
            None,
        );
        if !self.notes.is_empty() {
            w.line("#", None);
            w.line(
                "# PgBouncer settings pgmux does not act on, or handles differently:",
                None,
            );
            for note in &self.notes {
                // A quoted ini key may hold a line break, a value other control characters;
                // a TOML comment may hold neither (tab excepted).
                w.line(
                    &format!("#   {}", note.replace(|c: char| c.is_control() && c != '\t', " ")),
                    None,
                );
            }
        }
        w.line("", None);
        w.line("[pooler]", Some(&self.main));
        for item in &self.pooler {
            w.item(item);
        }
        for (name, (src, items)) in &self.users {
            w.line("", None);
            w.line(&format!("[users.{}]", toml_key(name)), Some(src));
            for item in items {
                w.item(item);
            }
        }
        for (name, db) in &self.databases {
            let src = db.src.clone().unwrap_or_else(|| self.main.clone());
            w.line("", None);
            w.line(&format!("[databases.{}]", toml_key(name)), Some(&src));
            if let Some(host) = &db.host {
                let host_src = src.with_key(format!("databases.{}.host", toml_key(name)));
                w.line(&format!("host = {}", values::toml_str(host)), Some(&host_src));
            }
            for item in &db.items {
                w.item(item);
            }
        }
        for (id, (src, items)) in &self.peers {
            w.line("", None);
            w.line(&format!("[peers.{id}]"), Some(src));
            for item in items {
                w.item(item);
            }
        }
        Converted {
            toml: w.text,
            notes: self.notes,
            origin,
            lines: w.lines,
        }
    }
}

#[derive(Default)]
struct Writer {
    text: String,
    lines: Vec<Option<Src>>,
}

impl Writer {
    fn line(&mut self, text: &str, src: Option<&Src>) {
        self.text.push_str(text);
        self.text.push('\n');
        self.lines.push(src.cloned());
    }

    fn item(&mut self, item: &Item) {
        let text = match &item.comment {
            Some(c) => format!("{} = {}  # {c}", item.key, item.value),
            None => format!("{} = {}", item.key, item.value),
        };
        self.line(&text, Some(&item.src));
    }
}

/// A table name as TOML writes it: bare when it can be, quoted otherwise.
fn toml_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        name.to_string()
    } else {
        values::toml_key_str(name)
    }
}
