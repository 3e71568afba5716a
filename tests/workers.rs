//! Thread-per-core: several workers share one pool (a server opened by one worker serves the
//! clients of another), the listening port is theirs alone, and a shutdown reaches the idle
//! clients of every worker. Against real PostgreSQL, through the real binary.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};
use support::*;

fn pgmux(pooler: &str, db: &str) -> Pgmux {
    Pgmux::start_app(pooler, db)
}

/// Voluntary context switches of each worker thread of `pid`, by thread name.
fn worker_switches(pid: u32) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("read /proc/PID/task")
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("pgmux-worker") {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let switches = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        out.push((comm.trim().to_owned(), switches));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_share_three_servers() {
    let px = pgmux("workers = 4\ndefault_pool_size = 3\nmax_client_conn = 500", "workers4");
    assert!(
        px.wait_for_log("(4 worker threads)", Duration::from_secs(5)),
        "log: {}",
        tail(&px.log(), 20)
    );
    // The log line comes as the threads start: wait for all four.
    let t0 = Instant::now();
    let mut before = worker_switches(px.pid());
    while before.len() < 4 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
        before = worker_switches(px.pid());
    }
    assert_eq!(before.len(), 4, "worker threads: {before:?}");
    let url = px.url("app", "app", "workers4");
    let mut tasks = Vec::new();
    for i in 0..80i32 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = connect(&url).await;
            let mut pids = HashSet::new();
            // A named prepared statement, used on whichever server each transaction gets.
            let stmt = client
                .prepare("SELECT $1::int4 * 1000 + $2::int4, pg_backend_pid()")
                .await
                .expect("prepare");
            for j in 0..10i32 {
                let row = client.query_one(&stmt, &[&i, &j]).await.expect("execute");
                assert_eq!(row.get::<_, i32>(0), i * 1000 + j);
                pids.insert(row.get::<_, i32>(1));
                // A transaction keeps its server across statements.
                let rows = client
                    .simple_query("BEGIN; SELECT pg_backend_pid(); SELECT pg_backend_pid(); COMMIT")
                    .await
                    .expect("transaction");
                let seen: HashSet<String> = rows
                    .iter()
                    .filter_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                        _ => None,
                    })
                    .collect();
                assert_eq!(seen.len(), 1, "one transaction, one server: {seen:?}");
            }
            pids
        }));
    }
    let mut servers = HashSet::new();
    for t in tasks {
        servers.extend(t.await.expect("client task"));
    }
    // Three connections served every worker's clients: none was closed and reopened.
    assert!(
        (1..=3).contains(&servers.len()),
        "backends seen: {servers:?} (pool size 3)"
    );
    // The kernel spread the clients over the four listeners: every worker did work, so at
    // least one of them ran transactions on a server another worker had opened.
    let after = worker_switches(px.pid());
    for ((name, b), (_, a)) in before.iter().zip(&after) {
        assert!(a - b >= 10, "{name} served nobody: {before:?} -> {after:?}");
    }
}

#[test]
fn a_port_held_by_another_pgmux_is_refused() {
    let px = pgmux("workers = 2", "workers_port");
    let dir = temp_dir("workers-port");
    let config = dir.join("second.toml");
    std::fs::write(
        &config,
        format!(
            "[pooler]\nlisten_addr = \"127.0.0.1\"\nlisten_port = {}\nworkers = 2\n[metrics]\nlisten = \"\"\n\
             [databases.bench]\nport = 1\n",
            px.port
        ),
    )
    .expect("write config");
    let config = config.to_str().expect("utf-8 path");
    let (code, out, err) = run_cmd(
        env!("CARGO_BIN_EXE_pgmux"),
        &["--config", config],
        &[("RUST_LOG", "info")],
        Duration::from_secs(5),
    );
    let text = format!("{out}{err}");
    assert_ne!(
        code, 124,
        "a second pgmux joined port {} instead of refusing it",
        px.port
    );
    assert_ne!(code, 0, "{text}");
    assert!(text.to_lowercase().contains("in use"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_reaches_idle_clients_of_every_worker() {
    let mut px = pgmux("workers = 3\nshutdown_timeout = 20", "workers_stop");
    let url = px.url("app", "app", "workers_stop");
    let mut clients = Vec::new();
    for _ in 0..24 {
        let client = connect(&url).await;
        assert_eq!(value(&client, "SELECT 1").await, "1");
        clients.push(client);
    }
    let t0 = Instant::now();
    px.signal("TERM");
    // Every client is idle: each is parked as soon as the shutdown wakes it, so pgmux exits
    // long before shutdown_timeout.
    let status = px
        .wait_exit(Duration::from_secs(10))
        .expect("pgmux still running 10 s after SIGTERM");
    assert!(status.success(), "exit status {status}: {}", tail(&px.log(), 20));
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}: idle clients were not woken",
        t0.elapsed()
    );
    for client in &clients {
        let e = client.simple_query("SELECT 1").await.expect_err("pgmux is gone");
        assert!(
            sqlstate(&e).as_deref() == Some("57P01") || e.is_closed(),
            "unexpected error: {e:?}"
        );
    }
}
