//! Session settings a client asked for, and the SQL that moves a server connection to them.
//!
//! A client's startup parameters (application_name, TimeZone, the `-c` switches of `options`, ...)
//! belong to the client, not to whichever server connection serves its next transaction. Each
//! server remembers the settings last applied to it; when a client with different settings takes
//! it, one batch of `SET`/`RESET` runs first.

use crate::protocol::messages::PgError;
use std::sync::Arc;

/// Reported by PostgreSQL in ParameterStatus: a client's `SET` of one of these is seen on the wire
/// and followed to its next server.
pub const REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "intervalstyle",
    "standard_conforming_strings",
    "timezone",
];

/// Marks a stored value as SQL the client wrote (`SET name TO <fragment>`), re-applied verbatim;
/// other values are literals. Startup and ParameterStatus values cannot hold a NUL.
const SQL_MARK: char = '\0';

/// Startup parameters that are not settings.
/// Startup parameters that are not session settings (pgmux.route is pgmux's own: `route`).
const NOT_SETTINGS: &[&str] = &["user", "database", "options", "replication", "pgmux.route"];

/// Settings by lower-case name, sorted, so two clients with the same settings compare equal.
/// Shared, copied on write: the clients of a pool mostly have the same few settings, and
/// each idle client holds only a pointer to them (see `Pool::share_settings`).
#[derive(Debug, Clone, Default)]
pub struct Settings(Option<Arc<Inner>>);

#[derive(Debug, Clone, Default)]
struct Inner {
    list: Vec<(String, String)>,
    /// A client's settings as they were at login, once a SET or ParameterStatus changed them
    /// (`keep_startup`): RESET goes back to them. Not part of equality.
    startup: Option<Settings>,
}

impl PartialEq for Settings {
    fn eq(&self, other: &Settings) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a.list == b.list,
            (Some(a), None) | (None, Some(a)) => a.list.is_empty(),
        }
    }
}

impl Eq for Settings {}

impl Settings {
    /// Takes the settings out of a client's startup parameters. `_pq_.` protocol options are the
    /// caller's business (NegotiateProtocolVersion) and are skipped here.
    pub fn from_startup(params: &[(String, String)]) -> Result<Settings, PgError> {
        let mut settings = Settings::default();
        for (name, value) in params {
            let lower = name.to_ascii_lowercase();
            if lower == "options" {
                for (name, value) in parse_options(value)? {
                    settings.insert(&name, value)?;
                }
            } else if !NOT_SETTINGS.contains(&lower.as_str()) && !lower.starts_with("_pq_.") {
                settings.insert(&lower, value.clone())?;
            }
        }
        Ok(settings)
    }

    fn insert(&mut self, name: &str, value: String) -> Result<(), PgError> {
        let name = name.to_ascii_lowercase();
        let valid = !name.is_empty()
            && name
                .split('.')
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        if !valid {
            return Err(PgError::fatal(
                "08P01",
                format!("invalid startup parameter name {name:?}"),
            ));
        }
        self.set(&name, &value);
        Ok(())
    }

    fn list(&self) -> &[(String, String)] {
        self.0.as_deref().map(|inner| inner.list.as_slice()).unwrap_or_default()
    }

    fn list_mut(&mut self) -> &mut Vec<(String, String)> {
        &mut Arc::make_mut(self.0.get_or_insert_with(Default::default)).list
    }

    /// Remembers the login settings before the first change to a client's settings.
    pub fn keep_startup(&mut self) {
        if self.0.as_ref().is_some_and(|inner| inner.startup.is_some()) {
            return;
        }
        let startup = self.clone();
        Arc::make_mut(self.0.get_or_insert_with(Default::default)).startup = Some(startup);
    }

    /// Settings written down by `pairs`-style lists (an upgrade's handover): `list` as they
    /// are now, `startup` as they were at login when a change was kept.
    pub fn from_pairs(list: &[(String, String)], startup: Option<&[(String, String)]>) -> Settings {
        let mut settings = Settings::default();
        for (name, value) in list {
            settings.set(&name.to_ascii_lowercase(), value);
        }
        if let Some(startup) = startup {
            let startup = Settings::from_pairs(startup, None);
            Arc::make_mut(settings.0.get_or_insert_with(Default::default)).startup = Some(startup);
        }
        settings
    }

    /// The login settings kept by `keep_startup`, if any change came since.
    pub fn kept_startup(&self) -> Option<Settings> {
        self.0.as_ref().and_then(|inner| inner.startup.clone())
    }

    /// The client's settings at login.
    pub fn startup(&self) -> Settings {
        match self.0.as_ref().and_then(|inner| inner.startup.as_ref()) {
            Some(startup) => startup.clone(),
            None => self.clone(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        let list = self.list();
        let i = list.binary_search_by(|(k, _)| k.as_str().cmp(name)).ok()?;
        list.get(i).map(|(_, v)| v.as_str())
    }

    /// Records a value; `name` must already be lower case.
    pub fn set(&mut self, name: &str, value: &str) {
        if self.get(name) == Some(value) {
            return;
        }
        let list = self.list_mut();
        match list.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
            Ok(i) => {
                if let Some((_, v)) = list.get_mut(i) {
                    value.clone_into(v);
                }
            }
            Err(i) => list.insert(i, (name.to_owned(), value.to_owned())),
        }
    }

    /// Records a value as a SQL fragment, already checked by `frontend::set` to be safe to
    /// re-apply verbatim.
    pub fn set_sql(&mut self, name: &str, fragment: &str) {
        self.set(name, &format!("{SQL_MARK}{fragment}"));
    }

    pub fn remove(&mut self, name: &str) {
        if let Ok(i) = self.list().binary_search_by(|(k, _)| k.as_str().cmp(name)) {
            self.list_mut().remove(i);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.list().iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether a ParameterStatus for `name` (any case) changes what this client has set.
    pub fn tracks(&self, lower_name: &str) -> bool {
        REPORTED.contains(&lower_name) || self.get(lower_name).is_some()
    }

    /// SQL that takes a server from `current` to these settings, or None when they agree.
    pub fn apply_sql(&self, current: &Settings) -> Option<String> {
        if self == current {
            return None;
        }
        let mut sql = String::new();
        for (name, value) in self.iter() {
            if current.get(name) != Some(value) {
                sql.push_str("SET ");
                push_name(&mut sql, name);
                if let Some(fragment) = value.strip_prefix(SQL_MARK) {
                    sql.push_str(" TO ");
                    sql.push_str(fragment);
                    sql.push(';');
                    continue;
                }
                sql.push_str(" TO E'");
                for c in value.chars() {
                    if c == '\'' || c == '\\' {
                        sql.push('\\');
                    }
                    sql.push(c);
                }
                sql.push_str("';");
            }
        }
        for (name, _) in current.iter() {
            if self.get(name).is_none() {
                sql.push_str("RESET ");
                push_name(&mut sql, name);
                sql.push(';');
            }
        }
        Some(sql)
    }
}

/// Quotes each dotted part: names were checked to hold only letters, digits and `_`.
fn push_name(sql: &mut String, name: &str) {
    for (i, part) in name.split('.').enumerate() {
        if i > 0 {
            sql.push('.');
        }
        sql.push('"');
        sql.push_str(part);
        sql.push('"');
    }
}

/// The `options` startup parameter: `-c name=value`, `-cname=value` or `--name=value`, separated
/// by spaces, a backslash escaping the next character (as libpq writes them).
fn parse_options(options: &str) -> Result<Vec<(String, String)>, PgError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_ascii_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let refuse = |what: &str| {
        PgError::fatal("0A000", format!("unsupported startup option {what:?}"))
            .with_hint("pgmux accepts only \"-c name=value\" and \"--name=value\" in options")
    };
    let mut pairs = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let assignment = if word == "-c" {
            words.next().ok_or_else(|| refuse("-c"))?
        } else if let Some(rest) = word.strip_prefix("--").or_else(|| word.strip_prefix("-c")) {
            rest.to_owned()
        } else {
            return Err(refuse(&word));
        };
        let (name, value) = assignment.split_once('=').ok_or_else(|| refuse(&assignment))?;
        // PostgreSQL accepts dashes for underscores in switch names.
        pairs.push((name.replace('-', "_"), value.to_owned()));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn startup_settings_skip_user_and_database() {
        let s = Settings::from_startup(&params(&[
            ("user", "app"),
            ("database", "bench"),
            ("TimeZone", "UTC"),
            ("application_name", "psql"),
            ("_pq_.x", "1"),
        ]))
        .unwrap();
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![("application_name", "psql"), ("timezone", "UTC")]
        );
    }

    #[test]
    fn options_switches() {
        let s = Settings::from_startup(&params(&[(
            "options",
            "-c search_path=a,b --work-mem=64MB -cgeqo=off -c x.y=with\\ space",
        )]))
        .unwrap();
        assert_eq!(s.get("search_path"), Some("a,b"));
        assert_eq!(s.get("work_mem"), Some("64MB"));
        assert_eq!(s.get("geqo"), Some("off"));
        assert_eq!(s.get("x.y"), Some("with space"));
        assert!(Settings::from_startup(&params(&[("options", "-e")])).is_err());
        assert!(Settings::from_startup(&params(&[("options", "-c")])).is_err());
        assert!(Settings::from_startup(&params(&[("options", "-c novalue")])).is_err());
        assert!(Settings::from_startup(&params(&[("bad;name", "x")])).is_err());
    }

    #[test]
    fn apply_sql_sets_changed_and_resets_gone() {
        let mut a = Settings::default();
        a.set("application_name", "it's \\ me");
        a.set("timezone", "UTC");
        let mut b = Settings::default();
        b.set("timezone", "UTC");
        b.set("x.y", "1");
        assert_eq!(a.apply_sql(&a.clone()), None);
        let mut c = a.clone();
        c.set_sql("search_path", "a, \"B\"");
        assert_eq!(c.apply_sql(&a).unwrap(), "SET \"search_path\" TO a, \"B\";");
        c.remove("search_path");
        c.remove("nothing");
        assert_eq!(c, a);
        assert_eq!(
            a.apply_sql(&b).unwrap(),
            "SET \"application_name\" TO E'it\\'s \\\\ me';RESET \"x\".\"y\";"
        );
    }
}
