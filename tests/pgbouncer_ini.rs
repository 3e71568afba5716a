//! pgmux started on the very pgbouncer.ini and userlist.txt a PgBouncer 1.18 setup uses (the
//! shape ../shared/bench/pgbouncer-up.sh writes: listen address and port, a Unix socket
//! directory, auth_file with a plain password, pool settings as PgBouncer names them), serving
//! what PgBouncer serves there, and what PgBouncer 1.18 fails: pgbench -M prepared in
//! transaction mode, and session settings that follow their client from server to server.

mod support;

use std::time::Duration;
use support::*;

/// PgBouncer's bench configuration; `{auth}` is a directory made before the start.
const INI: &str = "[databases]
bench = host=127.0.0.1 port={pg_port} dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir = {auth}
auth_type = scram-sha-256
auth_file = {auth}/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 5000
admin_users = app
logfile = {auth}/pgbouncer.log
pidfile = {auth}/pgbouncer.pid
";

fn start() -> (Pgmux, std::path::PathBuf) {
    cluster().pgbench_init();
    let auth = temp_dir("pgbini");
    std::fs::write(auth.join("userlist.txt"), "\"app\" \"app\"\n").expect("write userlist");
    let text = INI.replace("{auth}", auth.to_str().unwrap());
    (Pgmux::start_file("pgbouncer.ini", &text), auth)
}

fn pgbench(host: &str, port: u16, args: &[&str]) -> String {
    let port = port.to_string();
    let mut all = vec![
        "-h", host, "-p", &port, "-U", "app", "-n", "-c", "4", "-j", "2", "-t", "50",
    ];
    all.extend_from_slice(args);
    all.push("bench");
    let (code, out, err) = run_cmd("pgbench", &all, &[("PGPASSWORD", "app")], Duration::from_secs(120));
    assert_eq!(code, 0, "pgbench {args:?} failed:\n{out}\n{err}");
    assert!(out.contains("number of failed transactions: 0"), "{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_in_every_mode_over_tcp_and_the_unix_socket() {
    let (px, auth) = start();
    pgbench("127.0.0.1", px.port, &["-S"]);
    pgbench("127.0.0.1", px.port, &[]); // tpcb-like: writes, in transactions
                                        // PgBouncer 1.18 fails this one: prepared statement "P_0" already exists / does not exist.
    pgbench("127.0.0.1", px.port, &["-S", "-M", "prepared"]);
    pgbench("127.0.0.1", px.port, &["-S", "-M", "extended"]);
    // The Unix socket of unix_socket_dir, as PgBouncer listens on it.
    pgbench(auth.to_str().unwrap(), px.port, &["-S", "-M", "prepared"]);
    // The notes name what pgmux does not act on.
    assert!(px.log().contains("logfile: pgmux logs to stderr"), "{}", px.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_follow_their_clients_and_the_console_answers() {
    let (px, _auth) = start();
    let url = px.url("app", "app", "bench");
    let mut clients = Vec::new();
    for i in 0..3 {
        let c = connect(&url).await;
        c.batch_execute(&format!("SET application_name = 'client{i}'"))
            .await
            .unwrap();
        clients.push(c);
    }
    // Interleaved, with transactions that hold their server a moment: servers change hands, and
    // each client still sees its own setting (PgBouncer 1.18 hands them around with the server).
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            tokio::spawn(async move {
                for _ in 0..20 {
                    c.batch_execute("BEGIN; SELECT pg_sleep(0.005); COMMIT").await.unwrap();
                    let name = value(&c, "SHOW application_name").await;
                    assert_eq!(name, format!("client{i}"));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a client saw another's setting");
    }
    // admin_users = app: the console, with PgBouncer's columns.
    let console = connect(&px.url("app", "app", "pgbouncer")).await;
    let rows = console.simple_query("SHOW POOLS").await.unwrap();
    let pool = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some("bench") => {
            Some(r.get("pool_mode").unwrap_or_default().to_owned())
        }
        _ => None,
    });
    assert_eq!(pool.as_deref(), Some("transaction"));
}
