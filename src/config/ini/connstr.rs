//! `[databases]` and `[users]` values: PgBouncer's connection strings, `key=value` pairs
//! separated by blanks, a value either bare (up to the next blank) or in single quotes with
//! `''` for a quote. Empty values and unknown keys are refused, as PgBouncer refuses them.

use super::values::{lookup, toml_str};
use super::{set, Db, Item, Out, Src};
use crate::config::ConfigError;

/// C's isspace, which PgBouncer skips between pairs.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// The pairs of a connection string, in order. Errors do not echo values (one may be a
/// password).
pub(crate) fn pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = text.trim_start_matches(is_space);
    while !rest.is_empty() {
        // The key runs to "=" or a blank; blanks may stand before the "=".
        let end = rest.find(['=', ' ']).unwrap_or(rest.len());
        let (key, after) = rest.split_at(end);
        let after = after.trim_start_matches(is_space);
        let Some(after) = after.strip_prefix('=') else {
            // The word is not shown: it may be part of a password with a blank in it.
            return Err("a word without \"=\"; quote a value that holds blanks: key='a b'".into());
        };
        if key.is_empty() {
            return Err("a value without a key (\"=\" at the start of a pair)".into());
        }
        let after = after.trim_start_matches(is_space);
        let (value, next) = if let Some(quoted) = after.strip_prefix('\'') {
            unquote(quoted).ok_or_else(|| format!("{key}: missing closing quote"))?
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            let (value, next) = after.split_at(end);
            (value.to_string(), next)
        };
        if value.is_empty() {
            return Err(format!("{key}: empty value"));
        }
        out.push((key.to_string(), value));
        // PgBouncer cuts the value at the character after it, whatever that is.
        let mut chars = next.chars();
        chars.next();
        rest = chars.as_str().trim_start_matches(is_space);
    }
    Ok(out)
}

/// The text after an opening quote: (value, rest after the closing quote).
fn unquote(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '\'' {
            value.push(c);
            continue;
        }
        if text.get(i + 1..).is_some_and(|r| r.starts_with('\'')) {
            value.push('\'');
            chars.next();
            continue;
        }
        return Some((value, text.get(i + 1..).unwrap_or("")));
    }
    None
}

/// An integer as a connection string gives it; -1 is PgBouncer's "not set".
fn number(key: &str, value: &str, src: &Src) -> Result<Option<u32>, ConfigError> {
    if value == "-1" {
        return Ok(None);
    }
    let digits = value.strip_prefix('+').unwrap_or(value);
    match digits.parse::<u32>() {
        Ok(n) if digits.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(n)),
        _ => Err(src.err(format!("{key}: expected a whole number, found {value:?}"))),
    }
}

fn item(key: &'static str, value: String, src: &Src) -> Item {
    Item {
        key,
        value,
        src: src.clone(),
        comment: None,
    }
}

/// What pgmux does instead of a database key it does not act on.
const DATABASE_NOTES: &[(&str, &str)] = &[
    (
        "connect_query",
        "not yet: pgmux runs no query on new server connections; set it on the role or database (ALTER ROLE ... SET)",
    ),
    (
        "auth_dbname",
        "not per database in pgmux: set auth_dbname in [pgbouncer]",
    ),
    ("auth_query", "not per database in pgmux: set auth_query in [pgbouncer]"),
    (
        "query_wait_timeout",
        "not per database in pgmux: the [pgbouncer] query_wait_timeout applies",
    ),
    (
        "max_db_client_connections",
        "not yet: max_client_conn limits clients for all databases together",
    ),
    (
        "server_lifetime",
        "not per database in pgmux: the [pgbouncer] server_lifetime applies",
    ),
    (
        "load_balance_hosts",
        "pgmux connects to the first host of the list only",
    ),
    (
        "application_name",
        "not yet: the client's own application_name is passed on",
    ),
];

/// `name = connection string` in `[databases]`.
pub(super) fn database(out: &mut Out, name: &str, value: &str, src: &Src) -> Result<(), ConfigError> {
    let path = format!("databases.{}", super::toml_key(name));
    let src = src.with_key(&path);
    if name == "pgbouncer" {
        return Err(src.err("the database name \"pgbouncer\" is reserved for the admin console"));
    }
    if name == "pgmux" {
        out.note(
            &src,
            "the name pgmux is pgmux's admin console: clients asking for it reach the console, not this database",
        );
    }
    let pairs = pairs(value).map_err(|e| src.err(format!("syntax error in connection string: {e}")))?;
    let mut db = Db {
        src: Some(src.clone()),
        ..Db::default()
    };
    for (key, value) in pairs {
        let at = src.with_key(format!("{path}.{key}"));
        let string = |k: &'static str| item(k, toml_str(&value), &at);
        match key.as_str() {
            "host" => db.host = Some(host(out, &value, &at)?),
            "port" => {
                let port = value
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0 && value.bytes().all(|b| b.is_ascii_digit()));
                let port = port.ok_or_else(|| at.err(format!("invalid port {value:?}, expected 1 to 65535")))?;
                set(&mut db.items, item("port", port.to_string(), &at));
            }
            "dbname" => set(&mut db.items, string("dbname")),
            "user" => set(&mut db.items, string("user")),
            "password" => set(&mut db.items, string("password")),
            "auth_user" => set(&mut db.items, string("auth_user")),
            "client_encoding" => set(&mut db.items, string("client_encoding")),
            "datestyle" => set(&mut db.items, string("datestyle")),
            "timezone" => set(&mut db.items, string("timezone")),
            "pool_size" | "min_pool_size" | "reserve_pool" | "reserve_pool_size" | "max_db_connections" => {
                let pgmux = match key.as_str() {
                    "pool_size" => "pool_size",
                    "min_pool_size" => "min_pool_size",
                    "max_db_connections" => "max_db_connections",
                    _ => "reserve_pool",
                };
                if let Some(n) = number(&key, &value, &at)? {
                    set(&mut db.items, item(pgmux, n.to_string(), &at));
                }
            }
            "pool_mode" => {
                let mode = lookup(&value, &["session", "transaction", "statement"], &at)?;
                set(&mut db.items, item("pool_mode", toml_str(mode), &at));
            }
            key => {
                if key == "load_balance_hosts" {
                    lookup(&value, &["disable", "round-robin"], &at)?;
                }
                if key == "auth_dbname" && value == "pgbouncer" {
                    return Err(at.err("cannot use the reserved \"pgbouncer\" database as auth_dbname"));
                }
                let Some((_, advice)) = DATABASE_NOTES.iter().find(|(k, _)| *k == key) else {
                    return Err(at.err("unrecognized connection parameter"));
                };
                out.note(&at, advice);
            }
        }
    }
    // A database defined twice: the last definition wins, as in PgBouncer.
    out.databases.insert(name.to_string(), db);
    Ok(())
}

/// PgBouncer's host: a name, an address, a Unix socket directory, or a comma list of those.
fn host(out: &mut Out, value: &str, src: &Src) -> Result<String, ConfigError> {
    let hosts: Vec<&str> = value.split(',').collect();
    let first = hosts.first().copied().unwrap_or("");
    if first.is_empty() || hosts.iter().any(|h| h.is_empty()) {
        return Err(src.err(format!("empty host name in {value:?}")));
    }
    if let Some(abstract_socket) = hosts.iter().find(|h| h.starts_with('@')) {
        return Err(src.err(format!(
            "{abstract_socket}: abstract Unix sockets are not supported; give the socket's directory"
        )));
    }
    if hosts.len() > 1 {
        out.note(
            src,
            format!(
                "pgmux connects to the first host only ({first}), where PgBouncer takes turns over \
                 all; list the others as replicas only if they are read replicas"
            ),
        );
    }
    Ok(first.to_string())
}

/// What pgmux does instead of a user key it does not act on.
const USER_NOTES: &[(&str, &str)] = &[
    (
        "pool_size",
        "not per user in pgmux: pool_size is set per database, or default_pool_size",
    ),
    (
        "reserve_pool_size",
        "not per user in pgmux: reserve_pool is set per database, or reserve_pool_size",
    ),
    (
        "query_timeout",
        "not per user in pgmux: the [pgbouncer] query_timeout applies",
    ),
    (
        "query_wait_timeout",
        "not per user in pgmux: the [pgbouncer] query_wait_timeout applies",
    ),
    (
        "idle_transaction_timeout",
        "not per user in pgmux: the [pgbouncer] idle_transaction_timeout applies",
    ),
    (
        "transaction_timeout",
        "not yet: use idle_transaction_timeout, or PostgreSQL 17's transaction_timeout",
    ),
    (
        "client_idle_timeout",
        "not per user in pgmux: the [pgbouncer] client_idle_timeout applies",
    ),
    (
        "max_user_client_connections",
        "not yet: max_client_conn limits clients for all users together",
    ),
];

/// `name = settings` in `[users]`.
pub(super) fn user(out: &mut Out, name: &str, value: &str, src: &Src) -> Result<(), ConfigError> {
    let path = format!("users.{}", super::toml_key(name));
    let src = src.with_key(&path);
    let pairs = pairs(value).map_err(|e| src.err(format!("syntax error in user settings: {e}")))?;
    let mut items = Vec::new();
    for (key, value) in pairs {
        let at = src.with_key(format!("{path}.{key}"));
        match key.as_str() {
            "pool_mode" => {
                let mode = lookup(&value, &["session", "transaction", "statement"], &at)?;
                set(&mut items, item("pool_mode", toml_str(mode), &at));
            }
            "max_user_connections" => {
                if let Some(n) = number(&key, &value, &at)? {
                    set(&mut items, item("max_user_connections", n.to_string(), &at));
                }
            }
            key => {
                let Some((_, advice)) = USER_NOTES.iter().find(|(k, _)| *k == key) else {
                    return Err(at.err("unrecognized user parameter"));
                };
                if matches!(
                    key,
                    "query_timeout"
                        | "query_wait_timeout"
                        | "idle_transaction_timeout"
                        | "transaction_timeout"
                        | "client_idle_timeout"
                        | "pool_size"
                        | "reserve_pool_size"
                ) {
                    number(key, &value, &at)?;
                }
                out.note(&at, advice);
            }
        }
    }
    out.users.insert(name.to_string(), (src, items));
    Ok(())
}

/// `id = host=... port=... pool_size=...` in `[peers]`, as PgBouncer reads it: the id a
/// number from 1 to 65535, host required, port 6432 unless given.
pub(super) fn peer(out: &mut Out, name: &str, value: &str, src: &Src) -> Result<(), ConfigError> {
    let path = format!("peers.{}", super::toml_key(name));
    let src = src.with_key(&path);
    let id = name
        .parse::<u16>()
        .ok()
        .filter(|id| *id > 0 && name.bytes().all(|b| b.is_ascii_digit()));
    let Some(id) = id else {
        return Err(src.err("ids of peers must be a number from 1 to 65535"));
    };
    let pairs = pairs(value).map_err(|e| src.err(format!("syntax error in connection string: {e}")))?;
    let mut items = Vec::new();
    let mut host = None;
    for (key, value) in pairs {
        let at = src.with_key(format!("{path}.{key}"));
        match key.as_str() {
            "host" => {
                if value.starts_with('@') {
                    return Err(at.err("abstract Unix sockets are not supported; give the socket's directory"));
                }
                host = Some(item("host", toml_str(&value), &at));
            }
            "port" => {
                let port = value
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0 && value.bytes().all(|b| b.is_ascii_digit()));
                let port = port.ok_or_else(|| at.err(format!("invalid port {value:?}, expected 1 to 65535")))?;
                set(&mut items, item("port", port.to_string(), &at));
            }
            "pool_size" => {
                if let Some(n) = number(&key, &value, &at)? {
                    set(&mut items, item("pool_size", n.to_string(), &at));
                }
            }
            _ => return Err(at.err("unrecognized connection parameter")),
        }
    }
    let Some(host) = host else {
        return Err(src.err(format!("host was not provided for peer {id}")));
    };
    items.insert(0, host);
    // A peer listed twice: the last entry wins, as in PgBouncer.
    out.peers.insert(id, (src, items));
    Ok(())
}
