//! Server logins that fail, idle servers checked before reuse, reload on SIGHUP, shutdown on
//! SIGINT and SIGTERM: against real PostgreSQL, through the real binary.

mod support;

use std::time::{Duration, Instant};
use support::*;

const APP: &str = "[users.app]\npassword = \"app\"\n";

fn pgmux(pooler: &str, db: &str) -> Pgmux {
    Pgmux::start_app(pooler, db)
}

fn text(err: &tokio_postgres::Error) -> String {
    format!("{err} {err:?}")
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

// ---- server_login_retry ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_is_gated_by_the_breaker_not_by_server_login_retry() {
    // Nothing listens on this port: refused connections are the breaker's to count and gate;
    // a long server_login_retry must not stop them being counted, nor delay the probe.
    let dead_port = free_port();
    let px = Pgmux::start(
        "auth_type = \"scram-sha-256\"\nserver_login_retry = 30",
        &format!("{APP}[databases.nowhere]\nport = {dead_port}\n[breaker]\nfailure_threshold = 3\nopen_timeout = 1\n"),
    );
    let url = px.url("app", "app", "nowhere");
    for n in 1..=3 {
        let err = try_connect(&url).await.err().map(|e| text(&e)).unwrap_or_default();
        assert!(
            err.contains("could not connect") && !err.contains("server_login_retry"),
            "client {n}: {err}"
        );
        assert!(px.wait_for_log(
            &format!("consecutive failure {n} of the address"),
            Duration::from_secs(5)
        ));
    }
    // The threshold is reached: the breaker answers at once, and names itself.
    let started = Instant::now();
    let Err(e) = try_connect(&url).await else {
        panic!("the fourth client must be refused")
    };
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(sqlstate(&e).as_deref(), Some("08006"), "{e:?}");
    assert!(text(&e).contains("circuit breaker open"), "{e:?}");
    assert_eq!(count(&px.log(), "server login failed"), 3);

    // After open_timeout the next client is the probe: a real attempt, not a refusal.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let err = try_connect(&url).await.err().map(|e| text(&e)).unwrap_or_default();
    assert!(
        err.contains("could not connect") && !err.contains("server_login_retry"),
        "{err}"
    );
    assert_eq!(count(&px.log(), "server login failed"), 4);
    assert_eq!(
        count(&px.log(), "server login refused"),
        0,
        "server_login_retry never started"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_of_the_pool_starts_the_window_but_a_clients_does_not() {
    ensure_database("retrypw");
    let px = Pgmux::start(
        "auth_type = \"scram-sha-256\"\nserver_login_retry = 30",
        &format!(
            "{APP}[databases.retrypw]\nport = {{pg_port}}\npassword = \"wrong\"\n\
             [databases.retryok]\nport = {{pg_port}}\ndbname = \"retrypw\"\n"
        ),
    );
    // The pool's own (configured) password is refused: the server's error, then the window.
    let Err(e) = try_connect(&px.url("app", "app", "retrypw")).await else {
        panic!("refused")
    };
    assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{e:?}");
    let Err(e) = try_connect(&px.url("app", "app", "retrypw")).await else {
        panic!("refused")
    };
    assert_eq!(sqlstate(&e).as_deref(), Some("08006"), "{e:?}");
    assert!(text(&e).contains("server_login_retry (30 s)"), "{e:?}");
    // The other entry's pool is its own: untouched.
    let ok = connect(&px.url("app", "app", "retryok")).await;
    assert_eq!(value(&ok, "SELECT 1").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_with_a_wrong_password_does_not_block_the_right_one() {
    ensure_database("retrypass");
    let px = Pgmux::start(
        "auth_type = \"passthrough\"\nserver_login_retry = 30\ndefault_pool_size = 2",
        "[databases.retrypass]\nport = {pg_port}\n",
    );
    let url = px.url("app", "app", "retrypass");
    let holder = connect(&url).await;
    holder.batch_execute("BEGIN").await.unwrap();
    // A client's wrong password is refused by the server...
    let Err(e) = try_connect(&px.url("app", "nope", "retrypass")).await else {
        panic!("refused")
    };
    assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{e:?}");
    // ...and the pool still opens its next connection (the holder keeps the first one busy).
    let client = connect(&url).await;
    assert_eq!(value(&client, "SELECT 2").await, "2");
    assert_eq!(cluster().backend_count("retrypass", "app"), 2);
    holder.batch_execute("COMMIT").await.unwrap();
}

// ---- server_check_delay / server_check_query ----

/// Fails for a backend whose pid is in `doomed`, so a test can make one connection's check fail
/// while the connection itself stays alive (no liveness probe can notice that).
const CHECK: &str = "SELECT 1 / (1 - (SELECT count(*) FROM doomed WHERE pid = pg_backend_pid()))";

fn doomed(db: &str) {
    ensure_database(db);
    cluster().psql(
        db,
        "CREATE TABLE IF NOT EXISTS doomed(pid int); GRANT ALL ON doomed TO app; TRUNCATE doomed",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_that_fails_its_check_is_replaced_silently() {
    doomed("checked");
    let px = pgmux(
        &format!("default_pool_size = 1\nserver_check_delay = 0\nserver_check_query = \"{CHECK}\""),
        "checked",
    );
    let client = connect(&px.url("app", "app", "checked")).await;
    let first = value(&client, "SELECT pg_backend_pid()").await;
    client
        .batch_execute(&format!("INSERT INTO doomed VALUES ({first})"))
        .await
        .unwrap();
    // The check fails on `first`: the client's query runs on a new server, without an error.
    let second = value(&client, "SELECT pg_backend_pid()").await;
    assert_ne!(second, first);
    assert!(px.wait_for_log("server_check_query failed", Duration::from_secs(2)));
    assert!(wait_until(|| cluster().backend_count("checked", "app") == 1));

    // A server terminated while idle is replaced the same way.
    let admin = cluster().superuser_client("postgres").await;
    admin
        .simple_query(&format!("SELECT pg_terminate_backend({second})"))
        .await
        .unwrap();
    let third = value(&client, "SELECT pg_backend_pid()").await;
    assert_ne!(third, second);
    assert_eq!(value(&client, "SELECT 'fine'").await, "fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_waits_for_server_check_delay() {
    doomed("uncheck");
    let px = pgmux(
        &format!("default_pool_size = 1\nserver_check_delay = 30\nserver_check_query = \"{CHECK}\""),
        "uncheck",
    );
    let client = connect(&px.url("app", "app", "uncheck")).await;
    let first = value(&client, "SELECT pg_backend_pid()").await;
    client
        .batch_execute(&format!("INSERT INTO doomed VALUES ({first})"))
        .await
        .unwrap();
    // Idle for less than server_check_delay: reused unchecked.
    assert_eq!(value(&client, "SELECT pg_backend_pid()").await, first);
    assert!(!px.log().contains("server_check_query"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_server_check_query_turns_the_check_off() {
    // Issue 22: "" sent an empty query; in PgBouncer it means no check, and a runbook that says
    // so must mean the same here. An idle server due for a check shows as "used" in SHOW
    // SERVERS (PgBouncer's name for it); with no check, none is.
    ensure_database("nocheck");
    let state_of_idle = |check: &'static str| async move {
        let px = Pgmux::start(
            &format!(
                "auth_type = \"scram-sha-256\"\nadmin_users = [\"admin\"]\ndefault_pool_size = 1\n\
                 server_check_delay = 0\nserver_check_query = \"{check}\""
            ),
            &format!("{APP}[users.admin]\npassword = \"admin\"\n[databases.nocheck]\nport = {{pg_port}}\n"),
        );
        let client = connect(&px.url("app", "app", "nocheck")).await;
        assert_eq!(value(&client, "SELECT 1").await, "1");
        let admin = connect(&px.url("admin", "admin", "pgbouncer")).await;
        let rows = admin.simple_query("SHOW SERVERS").await.unwrap();
        let states: Vec<String> = rows
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get("state").map(str::to_owned),
                _ => None,
            })
            .collect();
        states
    };
    assert_eq!(state_of_idle("SELECT 1").await, ["used"]);
    assert_eq!(state_of_idle("").await, ["idle"]);
}

// ---- reload ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_sizes_users_and_databases_without_dropping_clients() {
    for db in ["reload1", "reload2"] {
        ensure_database(db);
    }
    let pooler = "auth_type = \"scram-sha-256\"\nquery_wait_timeout = 0.5";
    let px = Pgmux::start(
        &format!("{pooler}\ndefault_pool_size = 1"),
        "[users.app]\npassword = \"old-secret\"\n[databases.reload1]\nport = {pg_port}\npassword = \"app\"\n",
    );
    let old = connect(&px.url("app", "old-secret", "reload1")).await;
    assert_eq!(value(&old, "SELECT 1").await, "1");

    let new_config = "[users.app]\npassword = \"new-secret\"\n\
                      [databases.reload1]\nport = {pg_port}\npassword = \"app\"\n\
                      [databases.reload2]\nport = {pg_port}\npassword = \"app\"\n";
    px.write_config(&format!("{pooler}\ndefault_pool_size = 3"), new_config);
    px.signal("HUP");
    assert!(px.wait_for_log("configuration reloaded", Duration::from_secs(5)));

    // The connected client goes on; the new database, the new password work; the old does not.
    assert_eq!(value(&old, "SELECT 'still here'").await, "still here");
    let two = connect(&px.url("app", "new-secret", "reload2")).await;
    assert_eq!(value(&two, "SELECT current_database()").await, "reload2");
    let Err(e) = try_connect(&px.url("app", "old-secret", "reload1")).await else {
        panic!("the old password must be refused")
    };
    assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{e:?}");

    // pool_size 3: three transactions at once on three servers.
    let url = px.url("app", "new-secret", "reload1");
    let clients = [connect(&url).await, connect(&url).await, connect(&url).await];
    let mut pids = Vec::new();
    for c in &clients {
        c.batch_execute("BEGIN").await.unwrap();
        pids.push(value(c, "SELECT pg_backend_pid()").await);
    }
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 3);
    assert_eq!(cluster().backend_count("reload1", "app"), 3);
    for c in &clients {
        c.batch_execute("COMMIT").await.unwrap();
    }

    // A broken file is refused with file:line: key, and everything goes on as before.
    px.write_config(&format!("{pooler}\ndefault_pool_size = \"three\""), new_config);
    px.signal("HUP");
    assert!(px.wait_for_log("reload refused", Duration::from_secs(5)));
    let log = px.log();
    let line = log.lines().find(|l| l.contains("reload refused")).unwrap_or_default();
    assert!(line.contains("pgmux.toml:6: pooler.default_pool_size"), "{line}");
    assert_eq!(
        value(&old, "SELECT 'after the broken file'").await,
        "after the broken file"
    );
    let again = connect(&px.url("app", "new-secret", "reload2")).await;
    assert_eq!(value(&again, "SELECT 3").await, "3");
    for c in &clients {
        c.batch_execute("BEGIN").await.unwrap();
    }
    for c in &clients {
        c.batch_execute("COMMIT").await.unwrap();
    }

    // reload2 removed, pool_size back to 1: new logins to it get 3D000, its client keeps
    // working, and the surplus idle servers of reload1 are closed.
    px.write_config(
        &format!("{pooler}\ndefault_pool_size = 1"),
        "[users.app]\npassword = \"new-secret\"\n[databases.reload1]\nport = {pg_port}\npassword = \"app\"\n",
    );
    px.signal("HUP");
    assert!(wait_until(|| count(&px.log(), "configuration reloaded") == 2));
    let Err(e) = try_connect(&px.url("app", "new-secret", "reload2")).await else {
        panic!("a removed database must be refused")
    };
    assert_eq!(sqlstate(&e).as_deref(), Some("3D000"), "{e:?}");
    assert_eq!(value(&two, "SELECT 'kept'").await, "kept");
    assert!(wait_until(|| cluster().backend_count("reload1", "app") == 1));
    clients[0].batch_execute("BEGIN").await.unwrap();
    let err = clients[1].simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "pool_size 1 again: {err:?}");
}

fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

// ---- shutdown ----

fn refused(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_lets_a_transaction_finish_then_exits_0() {
    let mut px = pgmux("default_pool_size = 2\nshutdown_timeout = 5", "sigint");
    let url = px.url("app", "app", "sigint");
    let busy = connect(&url).await;
    let idle = connect(&url).await;
    busy.batch_execute("BEGIN").await.unwrap();
    let sleeper = tokio::spawn(async move {
        let slept = busy.simple_query("SELECT pg_sleep(1)").await.map(|_| ());
        let committed = busy.batch_execute("COMMIT").await;
        let after = busy.simple_query("SELECT 1").await;
        (slept, committed, after)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    px.signal("INT");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(refused(px.port), "the listener must close at once");
    // A new request waits for the end, then gets 57P01.
    let err = idle.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57P01"), "{err:?}");
    assert!(
        signalled.elapsed() >= Duration::from_millis(500),
        "it should have waited for the transaction"
    );
    let (slept, committed, after) = sleeper.await.unwrap();
    slept.expect("the transaction's query finishes");
    committed.expect("COMMIT succeeds");
    if let Err(e) = after {
        assert!(matches!(sqlstate(&e).as_deref(), Some("57P01") | None), "{e:?}");
    }
    let status = px.wait_exit(Duration::from_secs(6)).expect("pgmux exits");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "{:?}",
        signalled.elapsed()
    );
    assert!(px.log().contains("every transaction in flight has finished"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_refuses_new_queries_and_cuts_what_outlives_shutdown_timeout() {
    let mut px = pgmux("default_pool_size = 2\nshutdown_timeout = 0.5", "sigterm");
    let url = px.url("app", "app", "sigterm");
    let busy = connect(&url).await;
    let idle = connect(&url).await;
    busy.batch_execute("BEGIN").await.unwrap();
    let sleeper = tokio::spawn(async move { busy.simple_query("SELECT pg_sleep(5)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    px.signal("TERM");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = idle.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57P01"), "{err:?}");
    assert!(text(&err).contains("pgmux is shutting down"), "{err:?}");
    assert!(
        signalled.elapsed() < Duration::from_millis(400),
        "refused at once, not after {:?}",
        signalled.elapsed()
    );
    // The long transaction is cut at shutdown_timeout with 57P01, naming it.
    let err = sleeper.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57P01"), "{err:?}");
    assert!(text(&err).contains("shutdown_timeout (0.5 s)"), "{err:?}");
    let status = px.wait_exit(Duration::from_secs(3)).expect("pgmux exits");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        signalled.elapsed() < Duration::from_millis(1500),
        "{:?}",
        signalled.elapsed()
    );
    // The cut query was cancelled on the server, not left running.
    assert!(wait_until(|| cluster().psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(5)' AND state = 'active'"
    ) == "0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let mut px = pgmux("default_pool_size = 1\nshutdown_timeout = 20", "sigtwice");
    let busy = connect(&px.url("app", "app", "sigtwice")).await;
    busy.batch_execute("BEGIN").await.unwrap();
    let sleeper = tokio::spawn(async move { busy.simple_query("SELECT pg_sleep(5)").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    px.signal("INT");
    assert!(px.wait_exit(Duration::from_millis(300)).is_none(), "still draining");
    let second = Instant::now();
    px.signal("INT");
    let status = px.wait_exit(Duration::from_secs(2)).expect("pgmux exits");
    assert!(second.elapsed() < Duration::from_millis(500), "{:?}", second.elapsed());
    assert_eq!(status.code(), Some(1), "{status:?}");
    assert!(sleeper.await.unwrap().is_err());
}
