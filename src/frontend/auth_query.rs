//! `auth_query`: the secret of a user pgmux has no password for, looked up in PostgreSQL as
//! `auth_user` (PgBouncer's way), over a connection of the ordinary pool for that user, so it is
//! kept open, limited and counted like any other. Answers are cached for a few seconds: a
//! burst of logins costs one query, and a password changed on the server is seen soon.

use super::Shared;
use crate::config::{Config, Secret};
use crate::protocol::messages::PgError;
use dashmap::DashMap;
use std::time::{Duration, Instant};

/// How long an answer (a secret, or "no such user") is reused.
const TTL: Duration = Duration::from_secs(5);
/// Cached answers kept at most; beyond, the cache starts over (unknown names cannot fill memory).
const MAX_ENTRIES: usize = 10_000;
/// How long the query may take when server_connect_timeout is 0.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers by (database the query ran in, user).
#[derive(Default)]
pub struct Cache(DashMap<(String, String), (Instant, Option<Secret>)>);

/// The user's secret from auth_query; Ok(None) when no auth_user applies to the database, the
/// server does not know the user, or it has no password (all refused like a wrong password).
pub async fn lookup(shared: &Shared, config: &Config, database: &str, user: &str) -> Result<Option<Secret>, PgError> {
    let Some(db) = config.database(database) else {
        return Ok(None);
    };
    let auth_user = db.auth_user.as_deref().unwrap_or(&config.pooler.auth_user);
    if auth_user.is_empty() {
        return Ok(None);
    }
    let auth_db = match config.pooler.auth_dbname.as_str() {
        "" => database,
        name => name,
    };
    let key = (auth_db.to_owned(), user.to_owned());
    if let Some(hit) = shared.auth_cache.0.get(&key) {
        if hit.0.elapsed() < TTL {
            return Ok(hit.1.clone());
        }
    }
    let secret = query(shared, config, auth_db, auth_user, user).await?;
    if shared.auth_cache.0.len() >= MAX_ENTRIES {
        shared.auth_cache.0.clear();
    }
    shared.auth_cache.0.insert(key, (Instant::now(), secret.clone()));
    Ok(secret)
}

async fn query(
    shared: &Shared,
    config: &Config,
    auth_db: &str,
    auth_user: &str,
    user: &str,
) -> Result<Option<Secret>, PgError> {
    // The client has proved nothing yet: the cause (server addresses, SQL errors) goes to the
    // log only.
    let failed = |why: String| {
        tracing::warn!(
            user,
            auth_user,
            auth_db,
            cause = %why,
            "auth_query failed: check auth_query, auth_user (and its password in [users] or auth_file) and auth_dbname"
        );
        PgError::fatal("08006", format!("auth_query for user \"{user}\" failed")).with_hint("the pgmux log says why")
    };
    let db = config.database(auth_db).ok_or_else(|| {
        failed(format!(
            "auth_dbname \"{auth_db}\" is not a database of the configuration"
        ))
    })?;
    let pool = shared.pools.get_or_create(config, db, auth_db, auth_user, None);
    let mut lease = pool.checkout().await.map_err(|e| failed(e.to_string()))?;
    let sql = with_literal(&config.pooler.auth_query, user);
    let limit = match config.pooler.server_connect_timeout {
        t if t.is_zero() => QUERY_TIMEOUT,
        t => t,
    };
    let outcome = match tokio::time::timeout(limit, lease.conn().run(&sql)).await {
        Ok(Ok(outcome)) => outcome,
        // The lease is dropped unreleased: the connection is closed, not reused mid-answer.
        Ok(Err(e)) => return Err(failed(e.to_string())),
        Err(_) => return Err(failed(format!("no answer within {} s", limit.as_secs_f64()))),
    };
    if outcome.status == b'I' && outcome.error.is_none() {
        lease.release();
    }
    if let Some(error) = outcome.error {
        return Err(failed(format!("{} ({})", error.message, error.code)));
    }
    match outcome.row.get(1) {
        Some(Some(text)) => Secret::parse(text)
            .map(Some)
            .map_err(|e| failed(format!("the password it returned is not usable: {e}"))),
        // No row (unknown user) or a NULL password.
        _ => Ok(None),
    }
}

/// `sql` with every `$1` replaced by `value` as an escaped string literal (E'...': backslashes
/// and quotes doubled), which means the same whatever standard_conforming_strings says.
fn with_literal(sql: &str, value: &str) -> String {
    let mut literal = String::with_capacity(value.len() + 3);
    literal.push_str("E'");
    for c in value.chars() {
        match c {
            '\'' => literal.push_str("''"),
            '\\' => literal.push_str("\\\\"),
            c => literal.push(c),
        }
    }
    literal.push('\'');
    let mut out = String::with_capacity(sql.len() + literal.len());
    let mut rest = sql;
    while let Some(at) = rest.find("$1") {
        let (head, tail) = rest.split_at(at);
        let after = tail.get(2..).unwrap_or("");
        out.push_str(head);
        if after.starts_with(|c: char| c.is_ascii_digit()) {
            out.push_str("$1"); // $10 and up are not $1
        } else {
            out.push_str(&literal);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_name_becomes_an_escaped_literal() {
        let q = "SELECT usename, passwd FROM pg_shadow WHERE usename=$1";
        assert_eq!(
            with_literal(q, "app"),
            "SELECT usename, passwd FROM pg_shadow WHERE usename=E'app'"
        );
        assert_eq!(with_literal("$1", "o'k\\' OR 1=1 --"), "E'o''k\\\\'' OR 1=1 --'");
        assert_eq!(with_literal("f($1, $12)", "a"), "f(E'a', $12)");
    }
}
