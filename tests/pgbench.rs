//! pgbench through pgmux in transaction mode (pool of 5, SCRAM): simple, extended and prepared
//! protocol, select-only with many clients, a new connection per transaction, and the TPC-B
//! balance invariant afterwards; `-M prepared` with 50 clients over 2 threads.
//!
//! The tests of this binary share the pgbench tables and the backend counts, so each one holds
//! `SERIAL` for its whole run.

mod support;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use support::*;
use tokio_postgres::SimpleQueryMessage;

const POOL_SIZE: i64 = 5;

static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the binary's lock, with pgbench tables ready and no backend of app left on bench.
fn serial() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    cluster().pgbench_init();
    wait_for_backends(0, Duration::from_secs(10));
    guard
}

/// Waits until at most `n` server backends of app are connected to bench.
fn wait_for_backends(n: i64, timeout: Duration) {
    let t0 = Instant::now();
    loop {
        let now = cluster().backend_count("bench", "app");
        if now <= n {
            return;
        }
        assert!(
            t0.elapsed() < timeout,
            "{now} backends of app on bench after {timeout:?}, want <= {n}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pgmux() -> Pgmux {
    pgmux_with_pool(POOL_SIZE)
}

fn pgmux_with_pool(size: i64) -> Pgmux {
    Pgmux::start(
        &format!("auth_type = \"scram-sha-256\"\ndefault_pool_size = {size}\nmax_client_conn = 200"),
        "[users.app]\npassword = \"app\"\n[databases.bench]\nport = {pg_port}\n",
    )
}

/// The number after `label` on its line of pgbench's report.
fn number_after(out: &str, label: &str) -> Option<u64> {
    let line = out.lines().find(|l| l.starts_with(label))?;
    let digits: String = line[label.len()..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Runs `pgbench -n -h 127.0.0.1 -p <pgmux> -U app <args> bench` (password app) and checks
/// it: exit 0, nothing aborted, zero failed transactions, some processed, and never more
/// than the pool's servers on PostgreSQL meanwhile. Returns the processed transactions.
fn pgbench(px: &Pgmux, args: &[&str]) -> u64 {
    pgbench_on(px, POOL_SIZE, args)
}

fn pgbench_on(px: &Pgmux, pool_size: i64, args: &[&str]) -> u64 {
    let port = px.port.to_string();
    let mut argv = vec!["-n", "-h", "127.0.0.1", "-p", &port, "-U", "app"];
    argv.extend_from_slice(args);
    argv.push("bench");

    let peak = Arc::new(AtomicI64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(cluster().backend_count("bench", "app"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let t0 = Instant::now();
    let env = [("PGPASSWORD", "app"), ("PGSSLMODE", "disable")];
    let (code, out, err) = run_cmd("pgbench", &argv, &env, Duration::from_secs(60));
    done.store(true, Ordering::Relaxed);
    monitor.join().unwrap();
    let report = format!(
        "pgbench {}\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
        argv.join(" ")
    );
    eprintln!("{report}\n--- took {:?}", t0.elapsed());

    assert_eq!(code, 0, "pgbench exited with {code}:\n{report}");
    assert!(
        !out.to_lowercase().contains("aborted") && !err.to_lowercase().contains("aborted"),
        "a pgbench client aborted:\n{report}"
    );
    assert!(!err.contains("error"), "pgbench reported an error:\n{report}");
    let failed = number_after(&out, "number of failed transactions:");
    assert_eq!(failed, Some(0), "failed transactions:\n{report}");
    let processed = number_after(&out, "number of transactions actually processed:");
    let processed = processed.unwrap_or_else(|| panic!("no processed count:\n{report}"));
    assert!(processed > 0, "no transaction processed:\n{report}");
    let peak = peak.load(Ordering::Relaxed);
    eprintln!("peak server backends: {peak}");
    assert!(
        (1..=pool_size).contains(&peak),
        "{peak} server backends seen for a pool of {pool_size}:\n{report}"
    );
    processed
}

/// Rows in pgbench_history: one per committed TPC-B transaction.
fn history_rows() -> u64 {
    cluster()
        .psql("bench", "SELECT count(*) FROM pgbench_history")
        .parse()
        .unwrap()
}

/// A TPC-B run of `clients` clients: every transaction pgbench counted committed exactly once
/// (one history row each); at most one per client may have committed as pgbench stopped.
fn pgbench_tpcb(px: &Pgmux, clients: u64, args: &[&str]) {
    pgbench_tpcb_on(px, POOL_SIZE, clients, args)
}

fn pgbench_tpcb_on(px: &Pgmux, pool_size: i64, clients: u64, args: &[&str]) {
    let before = history_rows();
    let processed = pgbench_on(px, pool_size, args);
    let added = history_rows() - before;
    assert!(
        (processed..=processed + clients).contains(&added),
        "{processed} transactions processed but {added} history rows added"
    );
}

/// Every server connection went back to the pool clean: none is left inside a transaction.
fn assert_no_open_transaction() {
    let sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'bench' \
               AND state LIKE 'idle in transaction%'";
    let t0 = Instant::now();
    loop {
        let n = cluster().psql("postgres", sql);
        if n == "0" {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{n} server(s) idle in transaction"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tpcb_simple_protocol_20_clients() {
    let _serial = serial();
    let px = pgmux();
    pgbench_tpcb(&px, 20, &["-c", "20", "-j", "2", "-T", "3", "-M", "simple"]);
    assert_no_open_transaction();
}

#[test]
fn tpcb_extended_protocol_20_clients_keeps_balances_consistent() {
    let _serial = serial();
    let px = pgmux();
    pgbench_tpcb(&px, 20, &["-c", "20", "-j", "2", "-T", "3", "-M", "extended"]);
    assert_no_open_transaction();
    // pgbench's TPC-B invariant: every transaction adds the same delta to one account, teller
    // and branch and logs it in history, all or nothing. It holds across every run of this
    // binary, as long as no transaction was applied in part.
    let sums = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let client = cluster().superuser_client("bench").await;
            let sql = "SELECT (SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts)::text, \
                              (SELECT coalesce(sum(tbalance), 0) FROM pgbench_tellers)::text, \
                              (SELECT coalesce(sum(bbalance), 0) FROM pgbench_branches)::text, \
                              (SELECT coalesce(sum(delta), 0) FROM pgbench_history)::text, \
                              (SELECT count(*) FROM pgbench_history)::text";
            let rows = client.simple_query(sql).await.unwrap();
            rows.iter()
                .find_map(|m| match m {
                    SimpleQueryMessage::Row(row) => Some((0..5).map(|i| row.get(i).unwrap().to_owned()).collect()),
                    _ => None,
                })
                .unwrap()
        });
    let sums: Vec<String> = sums;
    eprintln!("accounts, tellers, branches, history sums and history rows: {sums:?}");
    assert_ne!(sums[4], "0", "no history rows");
    assert_eq!(sums[0], sums[3], "sum(abalance) != sum(delta): {sums:?}");
    assert_eq!(sums[1], sums[3], "sum(tbalance) != sum(delta): {sums:?}");
    assert_eq!(sums[2], sums[3], "sum(bbalance) != sum(delta): {sums:?}");
}

/// Named statements move between servers with their clients: injected on first use. A pool as
/// large as the client count (each client keeps meeting new servers as others take its own),
/// then 20 threads sharing 5 servers.
#[test]
fn tpcb_prepared_statements_20_clients() {
    let _serial = serial();
    let px = pgmux_with_pool(20);
    pgbench_tpcb_on(&px, 20, 20, &["-c", "20", "-j", "2", "-T", "5", "-M", "prepared"]);
    drop(px);
    wait_for_backends(0, Duration::from_secs(10));
    let px = pgmux();
    pgbench_tpcb(&px, 20, &["-c", "20", "-j", "20", "-T", "3", "-M", "prepared"]);
    pgbench(&px, &["-S", "-c", "20", "-j", "20", "-T", "2", "-M", "prepared"]);
    assert_no_open_transaction();
}

#[test]
fn select_only_50_clients() {
    let _serial = serial();
    let px = pgmux();
    for mode in ["simple", "extended"] {
        pgbench(&px, &["-S", "-c", "50", "-j", "2", "-T", "3", "-M", mode]);
    }
    assert_no_open_transaction();
}

#[test]
fn new_connection_per_transaction_through_scram() {
    let _serial = serial();
    let px = pgmux();
    // Every one of those transactions logged in anew with SCRAM.
    pgbench_tpcb(&px, 10, &["-C", "-c", "10", "-j", "2", "-T", "2"]);
    assert_no_open_transaction();
}

#[test]
fn tpcb_prepared_50_clients() {
    let _serial = serial();
    let px = pgmux();
    // 50 clients on 5 servers, so statements run on servers they were not prepared on. pgbench
    // prepares each statement with a blocking PQprepare (Parse, Sync) on first use, while the
    // same thread's other clients may hold every server mid-transaction: a lone Parse of a
    // statement the pool knows is answered without a server (prepared::local), or this would
    // deadlock until query_wait_timeout.
    pgbench_tpcb(&px, 50, &["-c", "50", "-j", "2", "-T", "3", "-M", "prepared"]);
    assert_no_open_transaction();
}
