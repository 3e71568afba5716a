//! The circuit breaker end to end: a server that drops every login, the binary's PostgreSQL
//! stopped and started under a running pgmux, a backend killed under one client, and money
//! moved across restarts.
//!
//! A binary of its own: it stops and restarts its cluster, which other test binaries must not
//! see. Under nextest every test is a process of its own with a cluster of its own (the cluster
//! is a per-process static); under `cargo test` the tests of this binary share one cluster, so
//! every test that uses it holds `CLUSTER` for its whole run.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tokio_postgres::SimpleQueryMessage;

/// Serialises the tests that use (and stop) the cluster when they share one process.
static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ADMIN: &str = "[users.admin]\npassword = \"admin\"\n";
const APP: &str = "[users.app]\npassword = \"app\"\n";

/// Connects, runs `sql`, and gives the first column of the first row; the error text (with its
/// SQLSTATE) otherwise. Bounded by `limit`.
async fn attempt(url: &str, sql: &str, limit: Duration) -> Result<String, String> {
    let run = async {
        let fut = tokio_postgres::connect(url, tokio_postgres::NoTls);
        let (client, conn) = fut.await.map_err(describe)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let msgs = client.simple_query(sql).await.map_err(describe)?;
        Ok(first_value(&msgs).unwrap_or_default())
    };
    match tokio::time::timeout(limit, run).await {
        Ok(res) => res,
        Err(_) => Err(format!("timed out after {limit:?}")),
    }
}

fn describe(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}", db.code().code(), db.message()),
        None => format!("{e} [{e:?}]"),
    }
}

fn first_value(msgs: &[SimpleQueryMessage]) -> Option<String> {
    msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    })
}

fn is_breaker(err: &str) -> bool {
    err.contains("pgmux: circuit breaker open for ")
}

/// SHOW BREAKERS rows as column name -> value maps.
async fn breakers(px: &Pgmux) -> Vec<std::collections::HashMap<String, String>> {
    let console = tokio::time::timeout(Duration::from_secs(10), connect(&px.url("admin", "admin", "pgbouncer")))
        .await
        .expect("console connect timed out");
    let msgs = tokio::time::timeout(Duration::from_secs(10), console.simple_query("SHOW BREAKERS"))
        .await
        .expect("SHOW BREAKERS timed out")
        .expect("SHOW BREAKERS");
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                row.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_owned(), row.get(i).unwrap_or("").to_owned()))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The SHOW BREAKERS row of 127.0.0.1:`port`.
async fn breaker_row(px: &Pgmux, port: u16) -> std::collections::HashMap<String, String> {
    let rows = breakers(px).await;
    rows.iter()
        .find(|r| r["host"] == "127.0.0.1" && r["port"] == port.to_string())
        .cloned()
        .unwrap_or_else(|| panic!("no SHOW BREAKERS row for 127.0.0.1:{port}: {rows:?}"))
}

/// A "server" that accepts every connection and closes it at once, counting the accepts.
struct DroppingServer {
    port: u16,
    accepts: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DroppingServer {
    fn start() -> DroppingServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().unwrap().port();
        let accepts = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepts, stop) = (accepts.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((sock, _)) => {
                            accepts.fetch_add(1, Ordering::SeqCst);
                            drop(sock);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        DroppingServer {
            port,
            accepts,
            stop,
            thread: Some(thread),
        }
    }

    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
}

impl Drop for DroppingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_stop_at_the_threshold_and_probe_once() {
    let server = DroppingServer::start();
    // trust: the measured time is the refusal, not SCRAM's PBKDF2 on a busy machine.
    let px = Pgmux::start(
        "auth_type = \"trust\"\nadmin_users = [\"admin\"]\nserver_login_retry = 0\nmax_client_conn = 1000",
        &format!(
            "{APP}{ADMIN}[databases.dropper]\nport = {}\n[breaker]\nfailure_threshold = 3\nopen_timeout = 1\n",
            server.port
        ),
    );
    let url = px.url("app", "app", "dropper");
    let limit = Duration::from_secs(5);

    // One client after another until the breaker answers: exactly after 3 failed logins.
    let mut errors = Vec::new();
    loop {
        let err = attempt(&url, "SELECT 1", limit)
            .await
            .expect_err("a client got through to a server that drops every connection");
        if is_breaker(&err) {
            errors.push(err);
            break;
        }
        errors.push(err);
        assert!(errors.len() <= 10, "no breaker after 10 failures: {errors:#?}");
    }
    assert_eq!(errors.len(), 4, "the 4th client should get the breaker: {errors:#?}");
    assert!(errors[3].starts_with("08006 "), "{}", errors[3]);
    assert_eq!(server.accepts(), 3, "{errors:#?}");

    // 200 clients at once: every one refused at once, none reaches the server.
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let res = attempt(&url, "SELECT 1", limit).await;
            (t0.elapsed(), res)
        }));
    }
    let mut times = Vec::new();
    for t in tasks {
        let (took, res) = t.await.expect("client task");
        let err = res.expect_err("a client got through while the breaker is open");
        assert!(is_breaker(&err), "expected the breaker error, got: {err}");
        times.push(took);
    }
    times.sort();
    let (median, max) = (times[times.len() / 2], times[times.len() - 1]);
    println!("200 refused clients: median {median:?}, max {max:?}");
    assert!(median < Duration::from_millis(100), "median refusal {median:?}");
    assert!(max < Duration::from_secs(1), "slowest refusal {max:?}");
    assert_eq!(
        server.accepts(),
        3,
        "clients reached the server while the breaker was open"
    );

    // After open_timeout (the first open period is not jittered) one client is the probe.
    tokio::time::sleep(Duration::from_millis(1150)).await;
    let err = attempt(&url, "SELECT 1", limit)
        .await
        .expect_err("the probe cannot succeed");
    assert!(!is_breaker(&err), "the probe client got the breaker error: {err}");
    assert_eq!(server.accepts(), 4, "exactly one probe");
    let row = breaker_row(&px, server.port).await;
    assert_eq!(row["state"], "open", "{row:?}");
    let failures: u32 = row["consecutive_failures"].parse().unwrap();
    assert!(failures >= 4, "{row:?}");
    // Re-opened (for about 2 s): the next client is refused without an attempt.
    let err = attempt(&url, "SELECT 1", limit).await.unwrap_err();
    assert!(is_breaker(&err), "{err}");
    assert_eq!(server.accepts(), 4);
    drop(px);
    drop(server); // joins the listener thread
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_restart_recovers_without_restarting_pgmux() {
    let _serial = CLUSTER.lock().await;
    let c = cluster();
    ensure_database("brkrestart");
    let px = Pgmux::start(
        "auth_type = \"scram-sha-256\"\nadmin_users = [\"admin\"]\nserver_login_retry = 0\nmin_pool_size = 1",
        &format!(
            "{APP}{ADMIN}[databases.brkrestart]\nport = {{pg_port}}\n[breaker]\nfailure_threshold = 2\nopen_timeout = 1\n"
        ),
    );
    let url = px.url("app", "app", "brkrestart");
    let limit = Duration::from_secs(10);
    assert_eq!(attempt(&url, "SELECT 1", limit).await.unwrap(), "1");
    assert_eq!(breaker_row(&px, c.port).await["state"], "closed");

    let stopped = Instant::now();
    let (errors, refusal, _) = stop_until_breaker(c, &url).await;
    println!(
        "breaker open {:?} after the stop, after {} failed clients; refusal: {refusal}",
        stopped.elapsed(),
        errors.len()
    );
    assert!(
        errors.len() <= 2,
        "more than failure_threshold failed clients: {errors:#?}"
    );
    assert_eq!(breaker_row(&px, c.port).await["state"], "open");

    // Within open_timeout + 3 s of the start.
    let back = start_until_served(c, &url, Duration::from_secs(4)).await;
    println!(
        "recovered {back:?} after PostgreSQL was up again (down for {:?} in all)",
        stopped.elapsed()
    );
    let row = breaker_row(&px, c.port).await;
    assert_eq!(row["state"], "closed", "{row:?}");
    assert_eq!(row["consecutive_failures"], "0", "{row:?}");
}

/// Stops the cluster and connects until the breaker answers: returns the errors before it, and
/// the breaker's refusal with how long it took.
async fn stop_until_breaker(c: &Cluster, url: &str) -> (Vec<String>, String, Duration) {
    c.stop_immediate();
    let stopped = Instant::now();
    let mut errors = Vec::new();
    loop {
        let t0 = Instant::now();
        match attempt(url, "SELECT 1", Duration::from_secs(10)).await {
            Ok(v) => panic!("SELECT 1 answered {v} with the server stopped"),
            Err(e) if is_breaker(&e) => return (errors, e, t0.elapsed()),
            Err(e) => errors.push(e),
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(10) && errors.len() <= 10,
            "no breaker error within 10 s of the stop: {errors:#?}"
        );
    }
}

/// Starts the cluster and connects until a client is served: how long that took.
async fn start_until_served(c: &Cluster, url: &str, most: Duration) -> Duration {
    c.start();
    let started = Instant::now();
    loop {
        let last = match attempt(url, "SELECT 1", Duration::from_secs(10)).await {
            Ok(v) => {
                assert_eq!(v, "1");
                return started.elapsed();
            }
            Err(e) => e,
        };
        assert!(
            started.elapsed() < most,
            "not served within {most:?} of the server's return; last error: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_gates_a_stopped_primary_with_the_default_server_login_retry() {
    // Issue 15: server_login_retry (15 s by default) once started its window at the first
    // failed login, so nothing more was counted and the breaker never opened, and clients
    // kept failing for 15 s after the server was back although open_timeout was 2 s.
    let _serial = CLUSTER.lock().await;
    let c = cluster();
    ensure_database("brkgate");
    let px = Pgmux::start(
        "auth_type = \"scram-sha-256\"\nadmin_users = [\"admin\"]",
        &format!(
            "{APP}{ADMIN}[databases.brkgate]\nport = {{pg_port}}\n[breaker]\nfailure_threshold = 3\nopen_timeout = 2\n"
        ),
    );
    let url = px.url("app", "app", "brkgate");
    assert_eq!(attempt(&url, "SELECT 1", Duration::from_secs(10)).await.unwrap(), "1");
    let (errors, refusal, took) = stop_until_breaker(c, &url).await;
    assert_eq!(errors.len(), 3, "the 4th client gets the breaker: {errors:#?}");
    assert!(
        errors.iter().all(|e| !e.contains("server_login_retry")),
        "server_login_retry gated a refused connection: {errors:#?}"
    );
    assert!(
        refusal.starts_with("08006 ") && refusal.contains("after 3 consecutive failures"),
        "{refusal}"
    );
    assert!(took < Duration::from_millis(100), "the refusal took {took:?}");
    // Once more: still refused at once, by the breaker.
    let t0 = Instant::now();
    let again = attempt(&url, "SELECT 1", Duration::from_secs(10)).await.unwrap_err();
    assert!(
        is_breaker(&again) && t0.elapsed() < Duration::from_millis(100),
        "{again} after {:?}",
        t0.elapsed()
    );
    let row = breaker_row(&px, c.port).await;
    assert_eq!(
        (row["state"].as_str(), row["refused_clients"].as_str()),
        ("open", "2"),
        "{row:?}"
    );

    let back = start_until_served(c, &url, Duration::from_secs(3)).await;
    println!("served {back:?} after the server's return (open_timeout 2 s)");
    assert_eq!(breaker_row(&px, c.port).await["state"], "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_breaker_section_a_stopped_primary_is_refused_fast_and_served_within_15_s() {
    let _serial = CLUSTER.lock().await;
    let c = cluster();
    ensure_database("brkdefault");
    let px = Pgmux::start(
        "auth_type = \"scram-sha-256\"\nadmin_users = [\"admin\"]",
        &format!("{APP}{ADMIN}[databases.brkdefault]\nport = {{pg_port}}\n"),
    );
    let url = px.url("app", "app", "brkdefault");
    assert_eq!(attempt(&url, "SELECT 1", Duration::from_secs(10)).await.unwrap(), "1");
    let (errors, refusal, took) = stop_until_breaker(c, &url).await;
    assert!(errors.len() <= 5, "failure_threshold is 5 by default: {errors:#?}");
    assert!(
        took < Duration::from_millis(100),
        "the refusal took {took:?}: {refusal}"
    );
    // PgBouncer, with its defaults, tries a server that failed again after 15 s.
    let back = start_until_served(c, &url, Duration::from_secs(16)).await;
    println!("served {back:?} after the server's return (defaults)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_fails_only_its_client() {
    let _serial = CLUSTER.lock().await;
    let c = cluster();
    ensure_database("brkkill");
    let px = Pgmux::start(
        "auth_type = \"scram-sha-256\"\nadmin_users = [\"admin\"]\nserver_login_retry = 0\ndefault_pool_size = 5",
        &format!("{APP}{ADMIN}[databases.brkkill]\nport = {{pg_port}}\n"),
    );
    let url = px.url("app", "app", "brkkill");
    let step = Duration::from_secs(10);
    let mut clients = Vec::new();
    let mut pids = Vec::new();
    for i in 0..5 {
        let client = tokio::time::timeout(step, connect(&url)).await.expect("connect");
        tokio::time::timeout(step, client.batch_execute("BEGIN"))
            .await
            .expect("BEGIN timed out")
            .expect("BEGIN");
        let pid = tokio::time::timeout(step, value(&client, "SELECT pg_backend_pid()"))
            .await
            .expect("pid timed out");
        tokio::time::timeout(
            step,
            client.batch_execute(&format!("INSERT INTO items VALUES ({}, 'k')", 7000 + i)),
        )
        .await
        .expect("INSERT timed out")
        .expect("INSERT");
        clients.push(client);
        pids.push(pid);
    }
    let distinct: HashSet<&String> = pids.iter().collect();
    assert_eq!(distinct.len(), 5, "5 transactions on 5 server connections: {pids:?}");

    c.psql("postgres", &format!("SELECT pg_terminate_backend({})", pids[2]));
    let res = tokio::time::timeout(step, clients[2].simple_query("SELECT 1"))
        .await
        .expect("the killed client's query timed out");
    let err = res.expect_err("the killed client's query succeeded");
    let code = sqlstate(&err);
    assert!(
        code.is_none() || ["57P01", "08006", "08003"].contains(&code.as_deref().unwrap()),
        "unexpected error for the killed client: {err} [{err:?}]"
    );
    println!("killed client got: {}", describe(err));
    for (i, client) in clients.iter().enumerate() {
        if i == 2 {
            continue;
        }
        tokio::time::timeout(step, client.batch_execute("COMMIT"))
            .await
            .expect("COMMIT timed out")
            .unwrap_or_else(|e| panic!("client {i} COMMIT: {e}"));
    }
    let fresh = tokio::time::timeout(step, connect(&url)).await.expect("connect");
    let committed = tokio::time::timeout(
        step,
        value(
            &fresh,
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM items WHERE id BETWEEN 7000 AND 7004",
        ),
    )
    .await
    .expect("count timed out");
    assert_eq!(committed, "7000,7001,7003,7004");
    let row = breaker_row(&px, c.port).await;
    assert_eq!(row["state"], "closed", "{row:?}");
    fresh
        .batch_execute("DELETE FROM items WHERE id BETWEEN 7000 AND 7004")
        .await
        .unwrap();
}

const ACCOUNTS: i64 = 20;

fn tally(errors: &Mutex<BTreeMap<String, usize>>, error: &str) {
    // Kept apart by their first 100 characters, with the digits of ports and times masked.
    let kind: String = error
        .chars()
        .take(100)
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect();
    *errors.lock().unwrap().entry(kind).or_default() += 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_transfers_survive_primary_restarts() {
    let _serial = CLUSTER.lock().await;
    let c = cluster();
    ensure_database("brkbank");
    c.psql(
        "brkbank",
        &format!(
            "DROP TABLE IF EXISTS accounts, transfers;
             CREATE TABLE accounts(id int PRIMARY KEY, balance bigint NOT NULL);
             CREATE TABLE transfers(id bigint PRIMARY KEY, src int NOT NULL, dst int NOT NULL, amount bigint NOT NULL);
             INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, {ACCOUNTS}) g;
             ALTER TABLE accounts OWNER TO app; ALTER TABLE transfers OWNER TO app;
             ALTER DATABASE brkbank SET synchronous_commit = on;"
        ),
    );
    let px = Pgmux::start(
        "auth_type = \"scram-sha-256\"\nadmin_users = [\"admin\"]\nserver_login_retry = 0\ndefault_pool_size = 10",
        &format!(
            "{APP}{ADMIN}[databases.brkbank]\nport = {{pg_port}}\n[breaker]\nfailure_threshold = 50\nopen_timeout = 0.3\n"
        ),
    );
    let url = px.url("app", "app", "brkbank");
    let committed = Arc::new(Mutex::new(Vec::<u64>::new()));
    let unknown = Arc::new(Mutex::new(Vec::<u64>::new()));
    // Error kinds and counts, printed at the end.
    let errors = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let next_id = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();

    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let (url, committed, unknown, errors, next_id, stop) = (
            url.clone(),
            committed.clone(),
            unknown.clone(),
            errors.clone(),
            next_id.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let step = Duration::from_secs(5);
            let mut client: Option<tokio_postgres::Client> = None;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if client.is_none() {
                    match tokio::time::timeout(step, tokio_postgres::connect(&url, tokio_postgres::NoTls)).await {
                        Ok(Ok((cl, conn))) => {
                            tokio::spawn(async move {
                                let _ = conn.await;
                            });
                            client = Some(cl);
                        }
                        Ok(Err(e)) => {
                            tally(&errors, &format!("connect: {}", describe(e)));
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                        Err(_) => {
                            tally(&errors, "connect: timed out");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    }
                }
                let cl = client.as_ref().unwrap();
                n += 1;
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let a = ((w * 7 + n * 3) % ACCOUNTS as u64) as i64 + 1;
                let b = ((w * 7 + n * 3 + 1 + n % 5) % ACCOUNTS as u64) as i64 + 1;
                let (a, b) = if a == b { (a, a % ACCOUNTS + 1) } else { (a, b) };
                let amount = (id % 50 + 1) as i64;
                // Lower id first: concurrent transfers cannot deadlock.
                let (first, second) = if a < b {
                    ((a, -amount), (b, amount))
                } else {
                    ((b, amount), (a, -amount))
                };
                let body = [
                    "BEGIN".to_owned(),
                    format!(
                        "UPDATE accounts SET balance = balance + {} WHERE id = {}",
                        first.1, first.0
                    ),
                    format!(
                        "UPDATE accounts SET balance = balance + {} WHERE id = {}",
                        second.1, second.0
                    ),
                    format!("INSERT INTO transfers VALUES ({id}, {a}, {b}, {amount})"),
                ];
                let mut failed = None;
                for sql in &body {
                    match tokio::time::timeout(step, cl.simple_query(sql)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => failed = Some(describe(e)),
                        Err(_) => failed = Some("timed out".to_owned()),
                    }
                    if let Some(e) = &failed {
                        let verb = sql.split_whitespace().next().unwrap();
                        tally(&errors, &format!("{verb}: {e}"));
                        break;
                    }
                }
                if failed.is_none() {
                    match tokio::time::timeout(step, cl.simple_query("COMMIT")).await {
                        Ok(Ok(_)) => {
                            committed.lock().unwrap().push(id);
                            continue;
                        }
                        Ok(Err(e)) => tally(&errors, &format!("COMMIT: {}", describe(e))),
                        Err(_) => tally(&errors, "COMMIT: timed out"),
                    }
                    unknown.lock().unwrap().push(id);
                }
                client = None;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    // Two restarts, at about 1 s and 3 s, each down for about 0.5 s.
    let restarts = tokio::task::spawn_blocking(move || {
        let c = cluster();
        for at in [1.0, 3.0] {
            let wait = Duration::from_secs_f64(at).saturating_sub(t0.elapsed());
            std::thread::sleep(wait);
            c.stop();
            std::thread::sleep(Duration::from_millis(500));
            c.start();
        }
    });
    tokio::time::timeout(Duration::from_secs(60), restarts)
        .await
        .expect("restarts timed out")
        .expect("restarts");
    let rest = Duration::from_secs(5).saturating_sub(t0.elapsed());
    tokio::time::sleep(rest).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("a transfer task did not stop")
            .expect("transfer task");
    }
    let committed: HashSet<u64> = committed.lock().unwrap().iter().copied().collect();
    let unknown: HashSet<u64> = unknown.lock().unwrap().iter().copied().collect();
    println!(
        "{} transfers committed, {} with unknown outcome in {:?}; errors: {:#?}",
        committed.len(),
        unknown.len(),
        t0.elapsed(),
        errors.lock().unwrap()
    );
    assert!(committed.len() > 50, "too few transfers committed: {}", committed.len());
    assert!(
        !errors.lock().unwrap().is_empty(),
        "the restarts failed no transfer: were they under load?"
    );

    // Checked directly on PostgreSQL.
    let sum = c.psql("brkbank", "SELECT sum(balance) FROM accounts");
    assert_eq!(sum, (ACCOUNTS * 1000).to_string());
    let rows: HashSet<u64> = c
        .psql("brkbank", "SELECT id FROM transfers")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let lost: Vec<_> = committed.difference(&rows).collect();
    assert!(lost.is_empty(), "committed transfers missing: {lost:?}");
    let phantom: Vec<_> = rows
        .iter()
        .filter(|id| !committed.contains(id) && !unknown.contains(id))
        .collect();
    assert!(
        phantom.is_empty(),
        "transfers present that never committed: {phantom:?}"
    );
    // Every balance is 1000 plus what the transfers rows say moved.
    let mismatched = c.psql(
        "brkbank",
        &format!(
            "SELECT a.id, a.balance, 1000 + coalesce((SELECT sum(amount) FROM transfers WHERE dst = a.id), 0)
                    - coalesce((SELECT sum(amount) FROM transfers WHERE src = a.id), 0)
             FROM accounts a
             WHERE a.balance <> 1000 + coalesce((SELECT sum(amount) FROM transfers WHERE dst = a.id), 0)
                    - coalesce((SELECT sum(amount) FROM transfers WHERE src = a.id), 0)
             ORDER BY a.id LIMIT {ACCOUNTS}"
        ),
    );
    assert!(
        mismatched.is_empty(),
        "balances disagree with transfers (id|balance|expected):\n{mismatched}"
    );
}
