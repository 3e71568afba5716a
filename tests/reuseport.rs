//! `so_reuseport`: several pgmux processes on one port, the kernel spreading clients over them;
//! without the key a second process on the port refuses to start, whichever of the two has it.

mod support;

use std::path::Path;
use std::time::Duration;
use support::*;
use tokio_postgres::SimpleQueryMessage;

const DB: &str = "reuse";

/// A config with so_reuseport set as given; `{port}` and `{dir}` as `Pgmux::start_file` fills them.
fn config(share: bool, workers: u32) -> String {
    format!(
        "[pooler]\nlisten_addr = \"127.0.0.1\"\nlisten_port = {{port}}\nso_reuseport = {share}\n\
         workers = {workers}\nunix_socket_dir = \"{{dir}}\"\nauth_type = \"scram-sha-256\"\n\
         admin_users = [\"app\"]\n[metrics]\nlisten = \"\"\n[users.app]\npassword = \"app\"\n\
         [databases.{DB}]\nport = {{pg_port}}\n"
    )
}

/// Runs pgmux on `text` (with `{port}` and `{dir}` filled in) expecting it to refuse to start:
/// its exit code and log.
fn refused_start(text: &str, port: u16, dir: &Path) -> (i32, String) {
    let own = temp_dir("reuseport-refused");
    let text = text
        .replace("{port}", &port.to_string())
        .replace("{dir}", dir.to_str().unwrap())
        .replace("{pg_port}", &cluster().port.to_string());
    let path = own.join("pooler.toml");
    std::fs::write(&path, text).unwrap();
    let bin = env!("CARGO_BIN_EXE_pgmux");
    let (code, out, err) = run_cmd(bin, &["--config", path.to_str().unwrap()], &[], Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&own);
    (code, format!("{out}{err}"))
}

/// The console of one process, through its own Unix socket (the TCP port is shared).
async fn console(px: &Pgmux) -> tokio_postgres::Client {
    connect(&format!(
        "host={} port={} user=app password=app dbname=pgbouncer",
        px.dir.display(),
        px.port
    ))
    .await
}

/// How many clients of DB this process holds, from its SHOW CLIENTS.
async fn clients(px: &Pgmux) -> usize {
    let c = console(px).await;
    let rows = c.simple_query("SHOW CLIENTS").await.unwrap();
    rows.iter()
        .filter(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get("database") == Some(DB)))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_the_port_and_one_killed_leaves_the_other_serving() {
    ensure_database(DB);
    let mut a = Pgmux::start_file("pooler.toml", &config(true, 2));
    let b = Pgmux::start_file_on("pooler.toml", &config(true, 1), a.port);
    assert!(b.log().contains("port shared with so_reuseport"), "{}", b.log());

    // Each connection comes from its own source port, which the kernel hashes to a socket.
    const N: usize = 40;
    let url = a.url("app", "app", DB);
    let mut held = Vec::new();
    for _ in 0..N {
        let c = connect(&url).await;
        assert_eq!(value(&c, "SELECT 1").await, "1");
        held.push(c);
    }
    let (on_a, on_b) = (clients(&a).await, clients(&b).await);
    assert_eq!(on_a + on_b, N, "every client is on one of the two");
    assert!(on_a > 0 && on_b > 0, "both serve: {on_a} on A, {on_b} on B");

    a.signal("KILL");
    a.wait_exit(Duration::from_secs(5)).expect("A exits on SIGKILL");
    // Only A's clients lose their connection.
    let mut failed = 0;
    for c in &held {
        if c.simple_query("SELECT 1").await.is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, on_a, "A's clients fail, B's carry on");
    // New clients all land on B.
    for _ in 0..10 {
        let c = connect(&url).await;
        assert_eq!(value(&c, "SELECT 2").await, "2");
        held.push(c);
    }
    assert_eq!(clients(&b).await, on_b + 10, "B took every new client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_so_reuseport_a_second_process_refuses_to_start() {
    ensure_database(DB);
    // Two workers: A's own sockets use SO_REUSEPORT, yet a sharing process must not join them.
    let a = Pgmux::start_file("pooler.toml", &config(false, 2));
    let other_dir = temp_dir("reuseport-dir");

    let (code, log) = refused_start(&config(true, 1), a.port, &other_dir);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("address in use"), "{log}");
    assert!(
        log.contains(&format!(
            "pgmux process {} listens on 127.0.0.1:{} without so_reuseport",
            a.pid(),
            a.port
        )),
        "{log}"
    );

    let (code, log) = refused_start(&config(false, 1), a.port, &other_dir);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("address in use"), "{log}");
    assert!(log.contains("so_reuseport = true"), "{log}");

    // A still serves.
    let c = connect(&a.url("app", "app", DB)).await;
    assert_eq!(value(&c, "SELECT 1").await, "1");
    let _ = std::fs::remove_dir_all(&other_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharing_process_keeps_out_one_without_the_key_and_one_on_its_unix_socket() {
    ensure_database(DB);
    let a = Pgmux::start_file("pooler.toml", &config(true, 1));
    let other_dir = temp_dir("reuseport-dir");

    let (code, log) = refused_start(&config(false, 2), a.port, &other_dir);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("address in use"), "{log}");
    assert!(log.contains("so_reuseport = true"), "{log}");

    // The Unix socket cannot be shared: each process needs its own unix_socket_dir.
    let (code, log) = refused_start(&config(true, 1), a.port, &a.dir);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("in use by another server"), "{log}");
    assert!(log.contains("its own unix_socket_dir"), "{log}");

    // A keeps serving, over TCP and its Unix socket.
    let c = connect(&a.url("app", "app", DB)).await;
    assert_eq!(value(&c, "SELECT 1").await, "1");
    assert!(clients(&a).await >= 1);
    let _ = std::fs::remove_dir_all(&other_dir);
}
