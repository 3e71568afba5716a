//! Upgrade in place (issue 18, item 3): `pgmux upgrade` starts a new process on the same
//! config, which takes the running one's listening sockets and its idle clients. Under pgbench
//! (clients handed over mid-run, the binary replaced on disk first) no transaction fails and
//! no connection is refused; an idle client keeps its settings, prepared statements, cancel key
//! and LISTEN; a second upgrade while one runs, or one with nothing to take over, is refused
//! clearly.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::*;

/// One test at a time: the pgbench one loads both cores, and the others time their processes.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const BENCH_TIMEOUT: Duration = Duration::from_secs(120);

const POOLER: &str = "max_client_conn = 200\nshutdown_timeout = 20\n";

/// A copy of the built binary at `dir/pgmux` (replaced later by renaming another copy over it).
fn binary_copy(dir: &Path) -> PathBuf {
    let path = dir.join("pgmux");
    let tmp = dir.join("pgmux.new");
    std::fs::copy(env!("CARGO_BIN_EXE_pgmux"), &tmp).expect("copy the binary");
    std::fs::rename(&tmp, &path).expect("put the binary in place");
    path
}

#[test]
fn upgrade_under_pgbench_fails_no_transaction_and_refuses_no_connection() {
    let _serial = one_at_a_time();
    cluster().pgbench_init();
    let dir = temp_dir("upgrade-bin");
    let bin = binary_copy(&dir);
    let old = Pgmux::start_app_from(&bin, POOLER, "bench");
    // Fifty sessions with prepared statements that must move, and new connections all along.
    let steady = pgbench_thread(
        old.port,
        &["-S", "-M", "prepared", "-c", "50", "-j", "2"],
        8,
        BENCH_TIMEOUT,
    );
    let storm = pgbench_thread(old.port, &["-S", "-C", "-c", "4", "-j", "1"], 8, BENCH_TIMEOUT);
    std::thread::sleep(Duration::from_secs(3));
    // The binary is replaced on disk under the running process, as a package upgrade does.
    let bin = binary_copy(&dir);
    let t0 = Instant::now();
    let new = old.upgrade(&bin).expect("pgmux upgrade");
    let took_over = t0.elapsed();
    let mut old = old;
    let status = old.wait_exit(Duration::from_secs(15)).expect("the old process exits");
    let handover = t0.elapsed();
    assert!(status.success(), "old process exit: {status}\n{}", old.log());
    eprintln!("upgrade: sockets taken over in {took_over:?}; old process gone after {handover:?}");
    let steady = steady.join().expect("pgbench thread");
    let storm = storm.join().expect("pgbench thread");
    eprintln!("steady: {}\nstorm: {}", steady.1, storm.1);
    pgbench_clean("pgbench -M prepared -c 50", &steady);
    pgbench_clean("pgbench -C", &storm);
    let log = old.log();
    let handed = log.matches("client handed to the new process").count();
    assert!(handed >= 40, "only {handed} clients handed over\n{}", tail(&log, 40));
    // The new process serves new sessions on the same port.
    let after = pgbench_thread(new.port, &["-S", "-c", "2"], 1, BENCH_TIMEOUT)
        .join()
        .expect("pgbench thread");
    pgbench_clean("pgbench after the upgrade", &after);
}

#[test]
fn an_idle_client_keeps_its_session_across_the_upgrade() {
    let _serial = one_at_a_time();
    ensure_database("upgrade_session");
    ensure_database("upgrade_listen");
    let sockets = temp_dir("upgrade-unix");
    let old = Pgmux::start(
        &format!(
            "auth_type = \"trust\"\nadmin_users = [\"app\"]\nshutdown_timeout = 10\nunix_socket_dir = \"{}\"\n",
            sockets.display()
        ),
        // `app` logs in to PostgreSQL with its password (the raw client below is `app`).
        "[users.app]\npassword = \"app\"\n[databases.upgrade_session]\nport = {pg_port}\n\
         [databases.upgrade_listen]\nport = {pg_port}\n",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!(
        "host=127.0.0.1 port={} user=trustuser dbname=upgrade_session sslmode=disable",
        old.port
    );
    let client = rt.block_on(connect(&url));
    rt.block_on(async {
        client.batch_execute("SET statement_timeout = '4321ms'").await.unwrap();
        client
            .batch_execute("SET application_name = 'before-upgrade'")
            .await
            .unwrap();
    });
    let statement = rt.block_on(client.prepare("SELECT $1::int + 1")).unwrap();
    let mut listener = Raw::login(old.port, "upgrade_listen");
    listener.query("LISTEN upgrade_channel").expect("LISTEN");
    // A client on the Unix socket moves too, and the socket file stays for the new process.
    let local_url = format!(
        "host={} port={} user=trustuser dbname=upgrade_session",
        sockets.display(),
        old.port
    );
    let local = rt.block_on(connect(&local_url));
    rt.block_on(local.batch_execute("SET work_mem = '7MB'")).unwrap();

    let bin = PathBuf::from(env!("CARGO_BIN_EXE_pgmux"));
    let new = old.upgrade(&bin).expect("pgmux upgrade");
    let mut old = old;
    let status = old.wait_exit(Duration::from_secs(15)).expect("the old process exits");
    assert!(status.success(), "{}", old.log());
    assert_eq!(
        old.log().matches("client handed to the new process").count(),
        3,
        "{}",
        old.log()
    );
    let row = rt.block_on(local.query_one("SHOW work_mem", &[])).unwrap();
    assert_eq!(row.get::<_, String>(0), "7MB");
    let again = rt.block_on(connect(&local_url));
    rt.block_on(again.batch_execute("SELECT 1")).unwrap();

    // Settings and prepared statements, served by the new process.
    let row = rt.block_on(client.query_one("SHOW statement_timeout", &[])).unwrap();
    assert_eq!(row.get::<_, String>(0), "4321ms");
    let row = rt.block_on(client.query_one("SHOW application_name", &[])).unwrap();
    assert_eq!(row.get::<_, String>(0), "before-upgrade");
    let row = rt.block_on(client.query_one(&statement, &[&41i32])).unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    // The cancel key given by the old process cancels a query on the new one.
    let token = client.cancel_token();
    let cancel = rt.spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(tokio_postgres::NoTls).await
    });
    let t0 = Instant::now();
    let err = rt.block_on(client.batch_execute("SELECT pg_sleep(3)")).unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "cancelled late: {:?}",
        t0.elapsed()
    );
    rt.block_on(cancel).unwrap().expect("cancel request sent");

    // The LISTEN moved too: a NOTIFY reaches the same socket through the new process.
    let notifier = rt.block_on(connect(&format!(
        "host=127.0.0.1 port={} user=trustuser dbname=upgrade_listen sslmode=disable",
        new.port
    )));
    rt.block_on(notifier.batch_execute("NOTIFY upgrade_channel, 'after'"))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && listener.notifications.is_empty() {
        listener.query("SELECT 1").expect("SELECT 1");
        if listener.notifications.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let seen = &listener.notifications;
    assert!(
        seen.iter()
            .any(|(channel, payload)| channel == "upgrade_channel" && payload == "after"),
        "{seen:?}"
    );
    let rows = support::console_rows(&new, "SHOW CLIENTS");
    assert!(
        rows.iter().any(|r| r["database"].as_deref() == Some("upgrade_session")),
        "{rows:?}"
    );
}

#[test]
fn a_second_upgrade_while_one_runs_is_refused_and_so_is_one_with_nothing_to_take_over() {
    let _serial = one_at_a_time();
    // Nothing runs on this port: the error says so.
    let port = free_port();
    let dir = temp_dir("upgrade-none");
    let config = dir.join("pooler.toml");
    std::fs::write(
        &config,
        format!("[pooler]\nlisten_addr = \"127.0.0.1\"\nlisten_port = {port}\n[metrics]\nlisten = \"\"\n"),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let (code, out, err) = run_cmd(
        env!("CARGO_BIN_EXE_pgmux"),
        &["--config", &config, "upgrade"],
        &[],
        Duration::from_secs(20),
    );
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("no running pgmux to take over from"), "{out}{err}");

    ensure_database("upgrade_twice");
    let old = Pgmux::start(
        "auth_type = \"trust\"\nshutdown_timeout = 20\n",
        "[databases.upgrade_twice]\nport = {pg_port}\n",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!(
        "host=127.0.0.1 port={} user=trustuser dbname=upgrade_twice sslmode=disable",
        old.port
    );
    let client = rt.block_on(connect(&url));
    // A transaction left open keeps the old process (and so the first upgrade) going.
    rt.block_on(client.batch_execute("BEGIN; SELECT 1")).unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_pgmux"));
    let first = old.upgrade(&bin).expect("first upgrade");
    let second = match old.upgrade(&bin) {
        Ok(px) => panic!("a second upgrade during the first started: {}", px.log()),
        Err(log) => log,
    };
    assert!(second.contains("already in progress"), "{second}");
    // The transaction finishes on the old process; then its client moves and the old exits.
    rt.block_on(client.batch_execute("COMMIT")).unwrap();
    let mut old = old;
    assert!(
        old.wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()),
        "{}",
        old.log()
    );
    let row = rt.block_on(client.query_one("SELECT 7", &[])).unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
    // Once the old process is gone, the new one can be upgraded in turn.
    let deadline = Instant::now() + Duration::from_secs(10);
    let third = loop {
        match first.upgrade(&bin) {
            Ok(third) => break third,
            Err(e) if Instant::now() < deadline => {
                assert!(!e.contains("panicked"), "{e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("upgrading the new process: {e}"),
        }
    };
    let mut first = first;
    assert!(
        first.wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()),
        "{}",
        first.log()
    );
    let row = rt.block_on(client.query_one("SELECT 8", &[])).unwrap();
    assert_eq!(row.get::<_, i32>(0), 8);
    drop(third);
}

#[test]
fn a_session_mode_client_stays_on_the_old_process_until_it_leaves() {
    let _serial = one_at_a_time();
    ensure_database("upgrade_sessmode");
    let old = Pgmux::start(
        "auth_type = \"trust\"\nshutdown_timeout = 20\n",
        "[databases.upgrade_sessmode]\nport = {pg_port}\npool_mode = \"session\"\n",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = |port: u16| format!("host=127.0.0.1 port={port} user=trustuser dbname=upgrade_sessmode sslmode=disable");
    let client = rt.block_on(connect(&url(old.port)));
    rt.block_on(client.batch_execute("SET statement_timeout = '999ms'"))
        .unwrap();
    let pid = |c: &tokio_postgres::Client| {
        rt.block_on(c.query_one("SELECT pg_backend_pid()", &[]))
            .unwrap()
            .get::<_, i32>(0)
    };
    let server = pid(&client);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_pgmux"));
    let new = old.upgrade(&bin).expect("pgmux upgrade");
    let mut old = old;
    // Its server holds its session: the client stays with the old process, served as before.
    assert!(old.wait_exit(Duration::from_millis(700)).is_none(), "{}", old.log());
    assert_eq!(pid(&client), server);
    let row = rt.block_on(client.query_one("SHOW statement_timeout", &[])).unwrap();
    assert_eq!(row.get::<_, String>(0), "999ms");
    // New sessions go to the new process; once the old one's client leaves, it exits.
    let other = rt.block_on(connect(&url(new.port)));
    assert_ne!(pid(&other), server);
    drop(client);
    let exited = old.wait_exit(Duration::from_secs(10));
    assert!(exited.is_some_and(|s| s.success()), "{}", old.log());
}
