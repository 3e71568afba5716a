//! Who may do what on the console: every command for an `admin_users` user, a `stats_users`
//! user and an ordinary user, as PgBouncer draws the line (SHOW for stats_users, everything
//! for admin_users, nothing for anyone else), and a refused command changes nothing.

mod support;

use std::future::Future;
use std::time::Duration;
use support::*;
use tokio_postgres::{Client, SimpleQueryMessage};

const DB: &str = "roles_db";
const WAIT: Duration = Duration::from_secs(5);

/// Every SHOW pgmux answers (`SHOW HELP` lists them).
const SHOWS: &[&str] = &[
    "HELP",
    "POOLS",
    "STATS",
    "STATS_TOTALS",
    "STATS_AVERAGES",
    "TOTALS",
    "DATABASES",
    "USERS",
    "CONFIG",
    "LISTS",
    "VERSION",
    "STATE",
    "SLOW_QUERIES",
    "REPLICAS",
    "BREAKERS",
    "LISTENERS",
    "CLIENTS",
    "SERVERS",
];

/// PgBouncer internals pgmux does not have: 0A000 whoever asks.
const NOT_PROVIDED: &[&str] = &["SHOW FDS", "SHOW MEM", "SHOW SOCKETS", "SHOW DNS_HOSTS"];

/// Every control command (`{db}` is the test's database, `{id}` a client's id), and what an
/// admin runs after it to undo it.
const CONTROL: &[(&str, Option<&str>)] = &[
    ("PAUSE {db}", Some("RESUME {db}")),
    ("PAUSE", Some("RESUME")),
    ("RECONNECT {db}", None),
    ("RECONNECT", None),
    ("WAIT_CLOSE {db}", None),
    ("WAIT_CLOSE", None),
    ("DISABLE {db}", Some("ENABLE {db}")),
    ("KILL_CLIENT {id}", None),
    ("KILL {db}", Some("RESUME {db}")),
    ("KILL", Some("RESUME")),
    ("RELOAD", None),
    ("SET default_pool_size = 3", None),
    ("SET default_pool_size TO '4'", None),
    ("SHUTDOWN WAIT_FOR_SERVERS", None),
    ("SHUTDOWN WAIT_FOR_CLIENTS", None),
    ("SHUTDOWN", None),
];

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {WAIT:?}"))
}

/// Ok, or the SQLSTATE of the error.
async fn run(c: &Client, cmd: &str) -> Result<Vec<SimpleQueryMessage>, String> {
    within(cmd, c.simple_query(cmd))
        .await
        .map_err(|e| sqlstate(&e).unwrap_or_else(|| format!("no SQLSTATE: {e:?}")))
}

fn rows(msgs: &[SimpleQueryMessage]) -> usize {
    msgs.iter().filter(|m| matches!(m, SimpleQueryMessage::Row(_))).count()
}

/// The value of `column` in the row whose first column is `key`.
async fn lookup(c: &Client, show: &str, key: &str, column: &str) -> Option<String> {
    let msgs = run(c, show).await.unwrap_or_else(|e| panic!("{show}: {e}"));
    msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) if r.get(0) == Some(key) => {
            let i = r.columns().iter().position(|col| col.name() == column)?;
            r.get(i).map(str::to_owned)
        }
        _ => None,
    })
}

/// The SQLSTATE of a login that must fail.
async fn refused(url: String) -> String {
    match try_connect(&url).await {
        Ok(_) => panic!("logged in: {url}"),
        Err(e) => sqlstate(&e).unwrap_or_else(|| format!("{e:?}")),
    }
}

fn command(template: &str, id: &str) -> String {
    template.replace("{db}", DB).replace("{id}", id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_command_by_role() {
    ensure_database(DB);
    let mut px = Pgmux::start(
        "auth_type = \"scram-sha-256\"\nadmin_users = [\"admin\"]\nstats_users = [\"watcher\"]\nshutdown_timeout = 1",
        &format!(
            "[users.app]\npassword = \"app\"\n[users.admin]\npassword = \"admin\"\n\
             [users.watcher]\npassword = \"watcher\"\n[databases.{DB}]\nport = {{pg_port}}\n"
        ),
    );
    let app = connect(&px.url("app", "app", DB)).await;
    assert_eq!(value(&app, "SELECT 1").await, "1");
    let admin = connect(&px.url("admin", "admin", "pgbouncer")).await;
    let watcher = connect(&px.url("watcher", "watcher", "pgmux")).await;
    let app_id = lookup(&admin, "SHOW CLIENTS", "C", "id").await;
    let app_id = app_id.unwrap_or_else(|| "1".into());

    // An ordinary user, on either console name: refused at login, after its password was
    // checked. Without the right password, every name gets the same 28P01, so the console
    // tells nobody who is in admin_users.
    for console in ["pgbouncer", "pgmux"] {
        let refused = |user: &str, password: &str| refused(px.url(user, password, console));
        assert_eq!(refused("app", "app").await, "42501", "an ordinary user on {console}");
        for (user, password) in [
            ("app", "wrong"),
            ("admin", "wrong"),
            ("watcher", "wrong"),
            ("ghost", "x"),
        ] {
            assert_eq!(refused(user, password).await, "28P01", "{user} with a wrong password");
        }
    }

    // SHOW: both roles.
    for item in SHOWS {
        let cmd = format!("SHOW {item}");
        for (role, c) in [("admin", &admin), ("stats", &watcher)] {
            let msgs = run(c, &cmd).await.unwrap_or_else(|e| panic!("{role}: {cmd}: {e}"));
            let n = rows(&msgs);
            assert!(
                // HELP answers in notices; the others may have nothing to list yet.
                n > 0
                    || matches!(
                        *item,
                        "HELP" | "SLOW_QUERIES" | "REPLICAS" | "BREAKERS" | "LISTENERS" | "SERVERS"
                    ),
                "{role}: {cmd}: no rows"
            );
        }
    }
    for cmd in NOT_PROVIDED {
        assert_eq!(run(&admin, cmd).await.err().as_deref(), Some("0A000"), "admin: {cmd}");
        assert_eq!(run(&watcher, cmd).await.err().as_deref(), Some("0A000"), "stats: {cmd}");
    }

    // Control commands: refused for stats_users (the undoing ones too), with nothing changed.
    for (template, undo) in CONTROL {
        for template in std::iter::once(template).chain(undo) {
            let cmd = command(template, &app_id);
            assert_eq!(
                run(&watcher, &cmd).await.err().as_deref(),
                Some("42501"),
                "stats: {cmd}"
            );
        }
    }
    assert_eq!(
        value(&app, "SELECT 2").await,
        "2",
        "the app client after the refused commands"
    );
    let late = connect(&px.url("app", "app", DB)).await;
    assert_eq!(
        value(&late, "SELECT 3").await,
        "3",
        "a new login after the refused DISABLE"
    );
    drop(late);
    let size = lookup(&admin, "SHOW CONFIG", "default_pool_size", "value").await;
    assert_eq!(size.as_deref(), Some("20"), "default_pool_size after the refused SET");
    assert!(
        px.wait_exit(Duration::ZERO).is_none(),
        "pgmux exited on a refused SHUTDOWN"
    );

    // Control commands: allowed for admin_users, each undone after. One SHUTDOWN ends pgmux
    // (its modes parse alike and share the role check), so only the last one runs.
    for (template, undo) in CONTROL {
        let cmd = command(template, &app_id);
        if cmd.starts_with("SHUTDOWN ") {
            continue;
        }
        let answer = run(&admin, &cmd).await;
        if cmd == "SHUTDOWN" {
            // The answer may be SHUTDOWN or a closed connection: only the exit counts.
            assert_ne!(answer.err().as_deref(), Some("42501"), "admin: SHUTDOWN");
            break;
        }
        answer.unwrap_or_else(|code| panic!("admin: {cmd}: {code}"));
        if let Some(undo) = undo {
            let undo = command(undo, &app_id);
            run(&admin, &undo)
                .await
                .unwrap_or_else(|code| panic!("admin: {undo}: {code}"));
        }
    }
    let exited = tokio::task::block_in_place(|| px.wait_exit(Duration::from_secs(5)));
    assert!(exited.is_some(), "pgmux still running 5 s after the admin's SHUTDOWN");
}
