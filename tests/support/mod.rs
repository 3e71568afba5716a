//! Integration-test harness for pgmux.
//!
//! - `pg.rs`: one throwaway PostgreSQL 15 primary per test binary (`cluster()`), plus an
//!   optional streaming replica (`cluster_with_replica()`); a watchdog process tears both
//!   down when the test process exits, however it exits.
//! - `pgmux.rs`: `Pgmux`, a spawned pgmux process with a generated config, killed on drop.
//! - `wire.rs`: `Wire`, a raw protocol client for looking at a login message by message.
//! - `fleet.rs`: several pgmux processes that are peers of each other, and `Raw`, a blocking
//!   client that keeps its cancel key (`send_cancel` sends it to any process).
//! - `healthy.rs`: `Healthy`, a client that keeps running `SELECT 1` while a test misbehaves.
//! - `browser.rs`: headless chromium loads a page: its DOM, console messages, a screenshot.
//! - `http.rs`: GET on the metrics listener (basic auth, the dashboard's JSON), SHOW rows by
//!   column.
//! - `routing.rs`: read/write split helpers (a database on the replica too, SHOW REPLICAS,
//!   replay pause guard).
//! - here: client helpers (`connect`, `try_connect`, `sqlstate`, `run_cmd`) and `free_port`.
//!
//! Use from a test file with `mod support;` and `use support::*;`.
#![allow(dead_code, unused_imports)] // each test binary uses only a part

mod browser;
mod fleet;
pub mod healthy;
mod http;
mod pg;
mod pgmux;
mod routing;
mod wire;

pub use browser::*;
pub use fleet::*;
pub use healthy::{block_on, try_value, Healthy, REPLY_TIMEOUT};
pub use http::*;
pub use pg::{cluster, cluster_with_replica, Cluster, Replica};
pub use pgmux::Pgmux;
pub use routing::*;
pub use wire::*;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A connect that hangs is never what a test expects, so both connect helpers panic after this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connect with tokio-postgres (NoTls), driving the connection on the current runtime; panics on error.
pub async fn connect(conn_str: &str) -> tokio_postgres::Client {
    match try_connect(conn_str).await {
        Ok(client) => client,
        Err(e) => panic!("connect({conn_str}) failed: {e} [{e:?}]"),
    }
}

/// Like `connect` but returns the error (for refusal tests). Still panics on a 30 s hang.
pub async fn try_connect(conn_str: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let fut = tokio_postgres::connect(conn_str, tokio_postgres::NoTls);
    let (client, conn) = match tokio::time::timeout(CONNECT_TIMEOUT, fut).await {
        Ok(res) => res?,
        Err(_) => panic!("connect({conn_str}) timed out after {CONNECT_TIMEOUT:?}"),
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// SQLSTATE code (e.g. "28P01") of a server error; None for I/O or protocol errors.
pub fn sqlstate(err: &tokio_postgres::Error) -> Option<String> {
    err.code().map(|c| c.code().to_owned())
}

/// pgbench in a thread as `app` (password `app`, or trust) on 127.0.0.1:`port`'s database
/// `bench`: `extra` arguments, then `-T seconds`; (exit code, stdout, stderr) as `run_cmd`.
pub fn pgbench_thread(
    port: u16,
    extra: &[&str],
    seconds: u32,
    timeout: Duration,
) -> std::thread::JoinHandle<(i32, String, String)> {
    let mut args: Vec<String> = ["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "app", "-n"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["-T".into(), seconds.to_string(), "bench".into()]);
    std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cmd("pgbench", &args, &[("PGPASSWORD", "app")], timeout)
    })
}

/// pgbench's "number of transactions actually processed" (0 when it says none).
pub fn pgbench_processed(out: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// pgbench (as `pgbench_thread` returns it) ran to its end with every transaction committed,
/// none failed and no client aborted.
pub fn pgbench_clean(what: &str, (code, out, err): &(i32, String, String)) {
    assert_eq!(*code, 0, "{what}: pgbench failed\n{out}\n{err}");
    assert!(
        out.contains("number of failed transactions: 0 "),
        "{what}: failures\n{out}\n{err}"
    );
    assert!(
        !err.contains("aborted") && !err.contains("error"),
        "{what}: errors\n{out}\n{err}"
    );
    assert!(pgbench_processed(out) > 0, "{what}: nothing processed\n{out}");
}

/// Run a command-line client (psql, pgbench, ...) and return (exit code, stdout, stderr).
/// A bare program name found in PG_BIN is taken from there (the /usr/bin wrappers may pick
/// another version). Killed on timeout, giving code 124. Signal deaths give 128 + signal.
/// Blocking: from a current-thread tokio test, nothing else on that runtime runs meanwhile.
pub fn run_cmd(program: &str, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> (i32, String, String) {
    let in_pg_bin = Path::new(PG_BIN).join(program);
    let prog = if !program.contains('/') && in_pg_bin.exists() {
        in_pg_bin
    } else {
        PathBuf::from(program)
    };
    let mut child = Command::new(&prog)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", prog.display()));
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let code = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break exit_code(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            timed_out = true;
            break 124;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = err.join().unwrap();
    if timed_out {
        stderr.push_str(&format!("\n[run_cmd: killed after {timeout:?}]"));
    }
    (code, out.join().unwrap(), stderr)
}

/// Exit code, or 128 + signal number for a signal death (like a shell).
pub fn exit_code(status: ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// A port on 127.0.0.1 that is free right now. Picked at random in 20000..32000, below the
/// kernel's ephemeral range (32768+), so client sockets' local ports never steal it, and never
/// handed out twice by this process. Collisions with other processes are unlikely; the cluster
/// and Pgmux starts retry on "address in use" anyway.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut handed = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    for i in 0..10_000u32 {
        // RandomState is seeded randomly per process: a dependency-free random number.
        let r = RandomState::new().hash_one((std::process::id(), i, nanos()));
        let port = 20_000 + (r % 12_000) as u16;
        if !handed.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.push(port);
            return port;
        }
    }
    panic!("free_port: no free port found");
}

/// Create a fresh, unique directory /tmp/pgmux-test-<pid>-<counter>-<nanos>-<tag>.
pub fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(format!("/tmp/pgmux-test-{}-{n}-{}-{tag}", std::process::id(), nanos()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

fn nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// Last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// First column of the first row of a simple query.
pub async fn value(client: &tokio_postgres::Client, sql: &str) -> String {
    let rows = client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// A database of the test's own, owned by app, with an `items(id int primary key, v text)`
/// table; created once even when tests of one binary ask for it at the same time.
pub fn ensure_database(name: &str) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let c = cluster();
    if c.psql(
        "postgres",
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
    ) == "0"
    {
        c.psql("postgres", &format!("CREATE DATABASE {name} OWNER app"));
        c.psql(
            name,
            "CREATE TABLE items(id int PRIMARY KEY, v text); ALTER TABLE items OWNER TO app",
        );
    }
}

/// Sends a StartupMessage and returns the code of the first Authentication message pgmux sends
/// back (the method it asks the client for); panics on anything else (such as an ErrorResponse).
pub fn first_auth_request(port: u16, user: &str, db: &str) -> i32 {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to pgmux");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = bytes::BytesMut::new();
    let params = [("user", user), ("database", db)];
    postgres_protocol::message::frontend::startup_message(params.iter().copied(), &mut buf).unwrap();
    stream.write_all(&buf).expect("send startup");
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).expect("read the answer to startup");
    let len = i32::from_be_bytes(header[1..5].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len.saturating_sub(4)];
    stream.read_exact(&mut body).expect("read message body");
    assert_eq!(
        header[0] as char,
        'R',
        "expected an Authentication message, got {:?}: {}",
        header[0] as char,
        String::from_utf8_lossy(&body)
    );
    i32::from_be_bytes(body[..4].try_into().unwrap())
}
