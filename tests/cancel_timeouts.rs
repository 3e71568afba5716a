//! Cancel requests forwarded to the right server, and the client-side timeouts.

mod support;

use std::time::{Duration, Instant};
use support::*;

fn pgmux(pooler: &str, db: &str) -> Pgmux {
    ensure_database(db);
    Pgmux::start(
        &format!("auth_type = \"scram-sha-256\"\n{pooler}"),
        &format!("[users.app]\npassword = \"app\"\n[databases.{db}]\nport = {{pg_port}}\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_right_query_only() {
    let px = pgmux("default_pool_size = 4", "cancels");
    let url = px.url("app", "app", "cancels");
    let victim = connect(&url).await;
    let bystander = connect(&url).await;
    let token = victim.cancel_token();
    let bystander_query = tokio::spawn(async move {
        let started = Instant::now();
        let result = bystander.simple_query("SELECT pg_sleep(1.5)").await;
        (result.map(|_| ()), started.elapsed())
    });
    let victim_query = tokio::spawn(async move {
        let started = Instant::now();
        let result = victim.simple_query("SELECT pg_sleep(30)").await;
        (result.map(|_| ()), started.elapsed(), victim)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    token.cancel_query(tokio_postgres::NoTls).await.expect("cancel request");
    let (result, _, victim) = victim_query.await.unwrap();
    let err = result.expect_err("the cancelled query must fail");
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err:?}");
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "cancel took {:?}",
        sent.elapsed()
    );
    // The other client's query ran to its end.
    let (result, took) = bystander_query.await.unwrap();
    result.expect("the bystander's query was cancelled");
    assert!(took >= Duration::from_millis(1400));
    // The cancelled client goes on working.
    assert_eq!(value(&victim, "SELECT 11").await, "11");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_key_cancels_nothing() {
    use std::io::Write;
    let px = pgmux("default_pool_size = 2", "cancels");
    let url = px.url("app", "app", "cancels");
    let client = connect(&url).await;
    let running = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(1)").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // CancelRequest with every process id pgmux may have handed out so far, and a wrong key.
    for pid in 1..=64i32 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", px.port)).unwrap();
        let mut packet = 16i32.to_be_bytes().to_vec();
        packet.extend_from_slice(&80_877_102i32.to_be_bytes());
        packet.extend_from_slice(&pid.to_be_bytes());
        packet.extend_from_slice(&12345i32.to_be_bytes());
        s.write_all(&packet).unwrap();
    }
    running.await.unwrap().expect("a forged cancel key cancelled a query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_for_a_client_without_a_server_is_dropped() {
    let px = pgmux("default_pool_size = 1", "cancels");
    let url = px.url("app", "app", "cancels");
    let idle = connect(&url).await;
    let busy = connect(&url).await;
    let running = tokio::spawn(async move { busy.simple_query("SELECT pg_sleep(1)").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The idle client holds no server: its cancel must not hit the one the busy client holds.
    idle.cancel_token().cancel_query(tokio_postgres::NoTls).await.unwrap();
    running
        .await
        .unwrap()
        .expect("an idle client's cancel hit another client's query");
    assert_eq!(value(&idle, "SELECT 1").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_cancels_a_long_query() {
    let px = pgmux("default_pool_size = 1\nquery_timeout = 0.5", "timeouts");
    let client = connect(&px.url("app", "app", "timeouts")).await;
    let started = Instant::now();
    let err = client.simple_query("SELECT pg_sleep(10)").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(px.log().contains("query_timeout"));
    // Short queries are untouched, and the connection goes on.
    assert_eq!(value(&client, "SELECT pg_sleep(0.1)::text || 'ok'").await, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_transaction_timeout_rolls_back_and_closes() {
    let px = pgmux("default_pool_size = 1\nidle_transaction_timeout = 0.5", "timeouts");
    let url = px.url("app", "app", "timeouts");
    let client = connect(&url).await;
    client
        .batch_execute("BEGIN; INSERT INTO items VALUES (501, 'left open')")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let err = client.simple_query("SELECT 1").await.unwrap_err();
    let code = sqlstate(&err);
    assert!(code.as_deref() == Some("25P03") || err.is_closed(), "{err:?}");
    // The server was rolled back and serves the next client (pool of one).
    let next = connect(&url).await;
    assert_eq!(value(&next, "SELECT count(*) FROM items WHERE id = 501").await, "0");
    let idle_tx = cluster().psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'timeouts' AND state LIKE 'idle in transaction%'",
    );
    assert_eq!(idle_tx, "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_idle_timeout_closes_idle_clients() {
    for mode in ["transaction", "session"] {
        let px = pgmux(
            &format!("pool_mode = \"{mode}\"\nclient_idle_timeout = 0.5"),
            "timeouts",
        );
        let url = px.url("app", "app", "timeouts");
        let client = connect(&url).await;
        assert_eq!(value(&client, "SELECT 1").await, "1");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let err = client.simple_query("SELECT 1").await.unwrap_err();
        assert!(
            sqlstate(&err).as_deref() == Some("57P05") || err.is_closed(),
            "{mode}: {err:?}"
        );
        // A busy client is not idle.
        let busy = connect(&url).await;
        for _ in 0..4 {
            assert_eq!(value(&busy, "SELECT 2").await, "2");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_tells_the_server_pid_and_cancels_still_work() {
    // Issue 23: in session mode the client is told its server's real pid (pg_backend_pid(),
    // pg_terminate_backend), with pgmux's own secret key; its cancels still land.
    ensure_database("cancels");
    let px = Pgmux::start(
        "auth_type = \"trust\"\npool_mode = \"session\"\ndefault_pool_size = 1",
        "[users.app]\npassword = \"app\"\n[databases.cancels]\nport = {pg_port}\n",
    );
    let (told, server_pid) = told_and_real_pid(px.port, "cancels");
    assert_eq!(told, server_pid, "told pid and pg_backend_pid() differ");
    assert!(server_pid <= 4_194_304, "a real pid: {server_pid}");
    let tx = Pgmux::start(
        "auth_type = \"trust\"",
        "[users.app]\npassword = \"app\"\n[databases.cancels]\nport = {pg_port}\n",
    );
    let (told, real) = told_and_real_pid(tx.port, "cancels");
    assert!(
        told > 4_194_304 && real <= 4_194_304,
        "transaction mode: told {told}, server {real}"
    );
    drop(tx);

    // The pool of 1 hands the same server (the same pid) to each client in turn.
    let url = px.url("app", "app", "cancels");
    for _ in 0..2 {
        let client = connect(&url).await;
        assert_eq!(value(&client, "SELECT pg_backend_pid()").await, server_pid.to_string());
        let token = client.cancel_token();
        let running = tokio::spawn(async move {
            let result = client.simple_query("SELECT pg_sleep(30)").await.map(|_| ());
            (result, client)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        // That pid with another key cancels nothing.
        forged_cancel(px.port, server_pid, 12345);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!running.is_finished(), "a forged key cancelled the query");
        let sent = Instant::now();
        token.cancel_query(tokio_postgres::NoTls).await.expect("cancel request");
        let (result, client) = running.await.unwrap();
        let err = result.expect_err("the cancelled query must fail");
        assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err:?}");
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "cancel took {:?}",
            sent.elapsed()
        );
        assert_eq!(value(&client, "SELECT 11").await, "11");
    }
}

/// A CancelRequest with this key, on a connection of its own.
fn forged_cancel(port: u16, pid: i32, key: i32) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut packet = 16i32.to_be_bytes().to_vec();
    packet.extend_from_slice(&80_877_102i32.to_be_bytes());
    packet.extend_from_slice(&pid.to_be_bytes());
    packet.extend_from_slice(&key.to_be_bytes());
    s.write_all(&packet).unwrap();
}

/// Logs in to a trust pgmux on a raw socket (tokio-postgres keeps its BackendKeyData to
/// itself): the process id it was told, and what pg_backend_pid() says.
fn told_and_real_pid(port: u16, db: &str) -> (i32, i32) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut body = 196_608i32.to_be_bytes().to_vec();
    for part in ["user", "app", "database", db, ""] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    let mut packet = (body.len() as i32 + 4).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    s.write_all(&packet).unwrap();
    let int = |b: &[u8]| i32::from_be_bytes(b[..4].try_into().unwrap());
    let mut told = None;
    loop {
        match read_msg(&mut s) {
            (b'K', body) => told = Some(int(&body)),
            (b'Z', _) => break,
            (b'E', body) => panic!("login refused: {}", String::from_utf8_lossy(&body)),
            _ => {}
        }
    }
    let sql = b"SELECT pg_backend_pid()\0";
    let mut query = vec![b'Q'];
    query.extend_from_slice(&(sql.len() as i32 + 4).to_be_bytes());
    query.extend_from_slice(sql);
    s.write_all(&query).unwrap();
    let mut real = None;
    loop {
        match read_msg(&mut s) {
            // One column: count (2 bytes), length (4), the text.
            (b'D', body) => real = std::str::from_utf8(&body[6..]).ok().and_then(|v| v.parse().ok()),
            (b'Z', _) => break,
            (b'E', body) => panic!("query failed: {}", String::from_utf8_lossy(&body)),
            _ => {}
        }
    }
    (told.expect("no BackendKeyData"), real.expect("no pg_backend_pid()"))
}

fn read_msg(s: &mut std::net::TcpStream) -> (u8, Vec<u8>) {
    use std::io::Read;
    let mut head = [0u8; 5];
    s.read_exact(&mut head).unwrap();
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0; len - 4];
    s.read_exact(&mut body).unwrap();
    (head[0], body)
}
