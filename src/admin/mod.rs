//! The admin console: the virtual database `pgbouncer` (or `pgmux`), with PgBouncer's SHOW
//! and control commands over the simple query protocol.
//!
//! admin_users may run everything, stats_users the SHOW commands; anyone else is refused at
//! login with 42501. Answers read the same state the pools use (`pool::Pool` counts, the
//! client registry in `frontend::cancel`, `stats`).

pub mod command;
mod control;
mod lists;
pub mod result;
mod show;
pub mod view;

use crate::config::{Config, Secret};
use crate::frontend::conn::ClientConn;
use crate::frontend::Shared;
use crate::protocol::frame::HEADER_LEN;
use crate::protocol::messages::{self as msg, PgError};
use bytes::BytesMut;
use command::Command;
use std::sync::Arc;

/// The database names that reach the console.
pub fn is_console(database: &str) -> bool {
    database == "pgbouncer" || database == "pgmux"
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Stats,
}

/// The role of `user`, or the refusal that names the settings.
/// `superuser`: the server said the user is a PostgreSQL superuser (passthrough only), which
/// lets it in as an admin where admin_users does not name it.
pub fn role(config: &Config, user: &str, superuser: bool) -> Result<Role, PgError> {
    let p = &config.pooler;
    if p.admin_users.iter().any(|u| u == user) || superuser {
        Ok(Role::Admin)
    } else if p.stats_users.iter().any(|u| u == user) {
        Ok(Role::Stats)
    } else {
        let passthrough = p.auth_type == crate::config::AuthType::Passthrough;
        let who = if passthrough {
            "it is in neither admin_users nor stats_users, and is not a PostgreSQL superuser"
        } else {
            "it is in neither admin_users nor stats_users"
        };
        Err(
            PgError::fatal("42501", format!("user \"{user}\" may not use the pgmux console: {who}")).with_hint(
                "add the user to pooler.admin_users (every command) or pooler.stats_users (SHOW only) in pooler.toml; \
                 with auth_type = \"passthrough\" (the default without a configuration file) a PostgreSQL superuser may log in too",
            ),
        )
    }
}

/// auth_type passthrough, for the console: the password must match the user's own in [users];
/// a user with none there is asked of the server (`superuser`). Ok(true) for a verified
/// PostgreSQL superuser.
pub async fn check_passthrough(shared: &Shared, config: &Config, user: &str, password: &str) -> Result<bool, PgError> {
    let refused = || PgError::fatal("28P01", format!("password authentication failed for user \"{user}\""));
    let ok = match config.users.get(user).and_then(|u| u.password.as_ref()) {
        Some(secret) => crate::auth::password_matches(secret, user, password).await,
        None => return superuser(shared, config, user, password).await,
    };
    ok.then_some(false).ok_or_else(refused)
}

/// Logs in to the server (the `postgres` database, or the `*` entry's server) with the
/// client's password and asks whether the user is a superuser. A refused login is the client's
/// wrong password.
async fn superuser(shared: &Shared, config: &Config, user: &str, password: &str) -> Result<bool, PgError> {
    let no_server = || {
        PgError::fatal("28P01", format!("password authentication failed for user \"{user}\"")).with_hint(
            "with auth_type = \"passthrough\" the console checks the password in [users.NAME] password, \
             or, for a user not listed there, with the server of the \"postgres\" (or \"*\") database",
        )
    };
    let Some(db) = config.database("postgres") else {
        return Err(no_server());
    };
    let mut target = shared.pools.target_of(config, db, "postgres");
    if target.connect_timeout.is_zero() {
        target.connect_timeout = std::time::Duration::from_secs(10);
    }
    let credentials = crate::backend::Credentials {
        user: user.to_owned(),
        password: Some(Secret::Plain(password.to_owned())),
        client_key: None,
    };
    let (mut conn, _) = match crate::backend::connect(&target, &credentials).await {
        Ok(c) => c,
        Err(e) if e.is_auth_failure() => {
            return Err(PgError::fatal(
                "28P01",
                format!("password authentication failed for user \"{user}\""),
            ))
        }
        Err(e) => return Err(crate::frontend::auth::unverified(user, &e)),
    };
    let outcome = conn
        .run("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user")
        .await
        .map_err(|e| crate::frontend::auth::unverified(user, &e))?;
    Ok(outcome.row.first() == Some(&Some("t".to_owned())))
}

/// The welcome after a console login (ParameterStatus as PgBouncer's console sends them).
pub fn welcome(out: &mut BytesMut, process_id: i32) {
    msg::authentication(out, msg::AUTH_OK, &[]);
    for (name, value) in [
        ("server_version", concat!(env!("CARGO_PKG_VERSION"), "/pgmux")),
        ("client_encoding", "UTF8"),
        ("server_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("TimeZone", "GMT"),
        ("standard_conforming_strings", "on"),
        ("is_superuser", "on"),
        ("integer_datetimes", "on"),
    ] {
        msg::parameter_status(out, name, value);
    }
    msg::backend_key_data(out, process_id, 0);
    msg::ready_for_query(out, b'I');
}

/// Console commands are a line each: a larger message is refused before it is buffered (console
/// connections do not count against max_client_conn, so max_message_size would be too much).
const MAX_CONSOLE_MESSAGE: usize = 64 * 1024;

/// A logged-in console user.
pub struct Console {
    pub client: ClientConn,
    pub shared: Arc<Shared>,
    pub role: Role,
    pub user: String,
}

/// Serves console commands until the client leaves. Errors in a command are ERRORs (the
/// connection stays); the extended protocol is refused and the connection closed, as
/// PgBouncer does.
pub async fn run(mut c: Console) {
    tracing::info!(client = %c.client.peer(), user = %c.user, role = ?c.role, "console login");
    loop {
        let frame = match c.client.read_frame(MAX_CONSOLE_MESSAGE).await {
            Ok(frame) => frame,
            Err(e) => {
                c.client.send_error(&e).await;
                return;
            }
        };
        let Some(&tag) = frame.first() else { return };
        let mut out = BytesMut::new();
        match tag {
            b'Q' => {
                let body = frame.get(HEADER_LEN..).unwrap_or_default();
                let sql = String::from_utf8_lossy(body.split(|&b| b == 0).next().unwrap_or_default()).into_owned();
                if let Err(e) = answer(&mut c, &sql, &mut out).await {
                    out.clear();
                    e.encode(&mut out);
                }
                msg::ready_for_query(&mut out, b'I');
            }
            b'X' => return,
            _ => {
                let e = PgError::fatal("08P01", "the pgmux console speaks the simple query protocol only")
                    .with_hint("use psql, or a driver's simple query mode (e.g. simple_query)");
                e.encode(&mut out);
                let _ = c.client.write(&out).await;
                return;
            }
        }
        if c.client.write(&out).await.is_err() {
            return;
        }
    }
}

async fn answer(c: &mut Console, sql: &str, out: &mut BytesMut) -> Result<(), PgError> {
    if sql.trim().is_empty() {
        msg::message(out, b'I', |_| {});
        return Ok(());
    }
    let command = command::parse(sql)?;
    if !command.read_only() && c.role != Role::Admin {
        return Err(PgError::new(
            "42501",
            format!("user \"{}\" is in stats_users: only SHOW commands are allowed", c.user),
        )
        .with_hint("add the user to pooler.admin_users to run control commands"));
    }
    tracing::info!(user = %c.user, command = %sql.trim(), "console command");
    match command {
        Command::Show(item) => show::show(&c.shared, &item, out),
        other => control::run(&c.shared, other, out).await,
    }
}

/// The pools of one database, or all when `db` is None; an unknown name is an error.
fn pools_of(shared: &Shared, db: Option<&str>) -> Result<Vec<Arc<crate::pool::Pool>>, PgError> {
    let pools = shared.pools.all();
    match db {
        None => Ok(pools),
        Some(db) if is_console(db) => Err(PgError::new("42601", format!("\"{db}\" is the console itself"))),
        Some(db) => {
            if shared.config.load().database(db).is_none() {
                return Err(PgError::new("3D000", format!("no such database: {db}")));
            }
            Ok(pools.into_iter().filter(|p| p.database == db).collect())
        }
    }
}
