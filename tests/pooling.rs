//! Transaction, session and statement pooling against real PostgreSQL, through the real binary.

mod support;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;

const APP: &str = "[users.app]\npassword = \"app\"\n";

fn pgmux(pooler: &str, db: &str) -> Pgmux {
    Pgmux::start_app(pooler, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_share_five_servers() {
    let px = pgmux("default_pool_size = 5\nmax_client_conn = 500", "pool200");
    let url = px.url("app", "app", "pool200");
    let peak = Arc::new(AtomicI64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let monitor = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let n = cluster().backend_count("pool200", "app");
                peak.fetch_max(n, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let mut tasks = Vec::new();
    for i in 0..200i32 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = connect(&url).await;
            for j in 0..5i32 {
                // Extended protocol (unnamed statement) and simple protocol, both checked.
                let row = client
                    .query_typed(
                        "SELECT $1::int4 * 1000 + $2::int4",
                        &[
                            (&i, tokio_postgres::types::Type::INT4),
                            (&j, tokio_postgres::types::Type::INT4),
                        ],
                    )
                    .await
                    .unwrap();
                assert_eq!(row[0].get::<_, i32>(0), i * 1000 + j);
                let text = value(&client, &format!("SELECT 'c{i}-{j}'")).await;
                assert_eq!(text, format!("c{i}-{j}"));
            }
            let id = 1_000_000 + i;
            client
                .batch_execute(&format!("BEGIN; INSERT INTO items VALUES ({id}, 'x'); COMMIT"))
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    done.store(true, Ordering::Relaxed);
    monitor.join().unwrap();
    let client = connect(&url).await;
    assert_eq!(
        value(&client, "SELECT count(*) FROM items WHERE id >= 1000000").await,
        "200"
    );
    client
        .batch_execute("DELETE FROM items WHERE id >= 1000000")
        .await
        .unwrap();
    let peak = peak.load(Ordering::Relaxed);
    assert!((1..=5).contains(&peak), "server backends seen: {peak}, pool size 5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_extended_queries_come_back_in_order() {
    let px = pgmux("default_pool_size = 2", "bench");
    let client = connect(&px.url("app", "app", "bench")).await;
    let int4 = tokio_postgres::types::Type::INT4;
    // tokio-postgres pipelines queries polled together: several Syncs in flight at once.
    let futures = (0..50i32).map(|i| {
        let client = &client;
        let int4 = int4.clone();
        async move { client.query_typed("SELECT $1::int4 + 1", &[(&i, int4)]).await.unwrap()[0].get::<_, i32>(0) }
    });
    let results = futures_util::future::join_all(futures).await;
    assert_eq!(results, (1..=50).collect::<Vec<i32>>());
    // An error in the middle of a pipeline does not disturb the queries around it.
    let (a, b, c) = tokio::join!(
        client.query_typed("SELECT 1::int4", &[]),
        client.query_typed("SELECT 1/0", &[]),
        client.query_typed("SELECT 3::int4", &[])
    );
    assert_eq!(a.unwrap()[0].get::<_, i32>(0), 1);
    assert_eq!(sqlstate(&b.unwrap_err()).as_deref(), Some("22012"));
    assert_eq!(c.unwrap()[0].get::<_, i32>(0), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_client_leaks_nothing_to_the_next() {
    let px = pgmux("default_pool_size = 1", "leak");
    let url = px.url("app", "app", "leak");
    let (victim, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    let pid = value(&victim, "SELECT pg_backend_pid()").await;
    victim
        .batch_execute("BEGIN; INSERT INTO items VALUES (42, 'uncommitted'); SET LOCAL statement_timeout = '4321ms'; SET LOCAL application_name = 'victim'")
        .await
        .unwrap();
    // Kill the client: its socket closes with no Terminate and the transaction open.
    conn.abort();
    drop(victim);
    let next = connect(&url).await;
    assert_eq!(
        value(&next, "SELECT pg_backend_pid()").await,
        pid,
        "pool of one: same server"
    );
    assert_eq!(value(&next, "SELECT count(*) FROM items WHERE id = 42").await, "0");
    assert_eq!(value(&next, "SHOW statement_timeout").await, "0");
    assert_eq!(value(&next, "SELECT current_setting('application_name')").await, "");
    // A client killed with a query running: that server is closed, not handed on.
    let (victim, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    drop(next);
    let sleeper = tokio::spawn(async move { victim.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.abort();
    sleeper.abort();
    let next = connect(&url).await;
    let started = std::time::Instant::now();
    assert_eq!(value(&next, "SELECT 7").await, "7");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the next client waited for the killed query"
    );
    // The cancel is sent as the abandoned server is dropped, so it lands a moment after the
    // next client may already run: allow it a few seconds (the query itself would run 30).
    let running = "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'";
    let mut left = value(&next, running).await;
    while left != "0" && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = value(&next, running).await;
    }
    assert_eq!(left, "0", "the killed client's query is still running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_state_and_resets_between_clients() {
    let px = pgmux("default_pool_size = 1\npool_mode = \"session\"", "sessions");
    let url = px.url("app", "app", "sessions");
    let first = connect(&url).await;
    first
        .batch_execute("SET search_path = pg_catalog; CREATE TEMP TABLE t(x int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let pid = value(&first, "SELECT pg_backend_pid()").await;
    assert_eq!(value(&first, "SHOW search_path").await, "pg_catalog");
    assert_eq!(value(&first, "SELECT count(*) FROM t").await, "1");
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = connect(&url).await;
    assert_eq!(value(&second, "SELECT pg_backend_pid()").await, pid);
    assert_eq!(value(&second, "SHOW search_path").await, "\"$user\", public");
    assert_eq!(
        value(
            &second,
            "SELECT count(*) FROM pg_tables WHERE tablename = 't' AND schemaname LIKE 'pg_temp%'"
        )
        .await,
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_client_that_waited_at_login_is_served() {
    // Session mode links a server at login: with a pool of one the second client waits there,
    // its socket watched for a hang-up meanwhile. Its session then runs as a task of its own,
    // and must still hear the queries it sends (a read registration left by the login's
    // watch once swallowed them: the query sat unread).
    let px = pgmux("default_pool_size = 1\npool_mode = \"session\"", "sessions");
    let url = px.url("app", "app", "sessions");
    let first = connect(&url).await;
    assert_eq!(value(&first, "SELECT 1").await, "1");
    let second = tokio::spawn({
        let url = url.clone();
        async move { connect(&url).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "the second client should wait for the only server"
    );
    drop(first);
    let second = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second client got the server")
        .unwrap();
    for i in 0..3 {
        let answer = tokio::time::timeout(Duration::from_secs(5), value(&second, &format!("SELECT {i}"))).await;
        assert_eq!(
            answer.ok().as_deref(),
            Some(i.to_string().as_str()),
            "query {i} answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_keeps_a_transaction_on_one_server() {
    let px = pgmux("default_pool_size = 3", "bench");
    let url = px.url("app", "app", "bench");
    let a = connect(&url).await;
    let b = connect(&url).await;
    a.batch_execute("BEGIN").await.unwrap();
    let pid = value(&a, "SELECT pg_backend_pid()").await;
    // Another client's work in between must not move a's transaction to another server.
    for _ in 0..5 {
        value(&b, "SELECT 1").await;
        assert_eq!(value(&a, "SELECT pg_backend_pid()").await, pid);
    }
    a.batch_execute("COMMIT").await.unwrap();
    // A failed transaction stays on its server until ROLLBACK.
    a.batch_execute("BEGIN").await.unwrap();
    let pid = value(&a, "SELECT pg_backend_pid()").await;
    assert!(a.simple_query("SELECT 1/0").await.is_err());
    let err = a.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("25P02"));
    a.batch_execute("ROLLBACK").await.unwrap();
    assert!(!value(&a, "SELECT pg_backend_pid()").await.is_empty());
    let _ = pid;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_mode_refuses_transaction_blocks() {
    let px = pgmux("default_pool_size = 1\npool_mode = \"statement\"", "stmt");
    let url = px.url("app", "app", "stmt");
    let client = connect(&url).await;
    assert_eq!(value(&client, "SELECT 5").await, "5");
    client
        .batch_execute("INSERT INTO items VALUES (7, 'a') ON CONFLICT DO NOTHING")
        .await
        .unwrap();
    let err = client.batch_execute("BEGIN").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("0A000"), "{err}");
    assert!(err.to_string().contains("statement pooling mode") || format!("{err:?}").contains("statement pooling"));
    // The refused client is closed; the server was rolled back and serves the next one.
    assert!(client.simple_query("SELECT 1").await.is_err());
    let next = connect(&url).await;
    assert_eq!(value(&next, "SELECT 6").await, "6");
    assert_eq!(
        value(
            &next,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'stmt' AND state LIKE 'idle in transaction%'"
        )
        .await,
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_refuses_with_53300() {
    let px = pgmux("max_client_conn = 2", "bench");
    let url = px.url("app", "app", "bench");
    let _a = connect(&url).await;
    let _b = connect(&url).await;
    let Err(err) = try_connect(&url).await else {
        panic!("third client must be refused")
    };
    assert_eq!(sqlstate(&err).as_deref(), Some("53300"), "{err:?}");
    assert!(format!("{err:?}").contains("max_client_conn"));
    drop(_a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = connect(&url).await;
    assert_eq!(value(&c, "SELECT 1").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_timeout_refuses_a_waiting_client() {
    let px = pgmux("default_pool_size = 1\nquery_wait_timeout = 0.5", "bench");
    let url = px.url("app", "app", "bench");
    let holder = connect(&url).await;
    let waiter = connect(&url).await;
    holder.batch_execute("BEGIN").await.unwrap();
    let started = std::time::Instant::now();
    let err = waiter.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err:?}");
    assert!(format!("{err:?}").contains("query_wait_timeout"));
    assert!(started.elapsed() >= Duration::from_millis(450));
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(value(&holder, "SELECT 2").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_with_an_error_mid_copy() {
    use futures_util::SinkExt;
    let px = pgmux("default_pool_size = 1", "copydb");
    let client = connect(&px.url("app", "app", "copydb")).await;
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS nums(n int)")
        .await
        .unwrap();
    client.batch_execute("TRUNCATE nums").await.unwrap();
    let sink = client.copy_in("COPY nums FROM STDIN").await.unwrap();
    let mut sink = Box::pin(sink);
    let data: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    assert_eq!(sink.as_mut().finish().await.unwrap(), 1000);
    assert_eq!(value(&client, "SELECT sum(n) FROM nums").await, "500500");

    // Bad data: the server fails the COPY; the client gets the error and the connection goes on.
    let sink = client.copy_in("COPY nums FROM STDIN").await.unwrap();
    let mut sink = Box::pin(sink);
    let _ = sink.send(bytes::Bytes::from_static(b"1\nnot a number\n3\n")).await;
    let err = sink.as_mut().finish().await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("22P02"), "{err:?}");
    assert_eq!(value(&client, "SELECT count(*) FROM nums").await, "1000");

    // COPY OUT streams every row back.
    let stream = client
        .copy_out("COPY (SELECT n FROM nums ORDER BY n) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = futures_util::TryStreamExt::try_collect(stream).await.unwrap();
    let text: Vec<u8> = chunks.concat();
    let total: i64 = String::from_utf8(text)
        .unwrap()
        .lines()
        .map(|l| l.parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, 500500);
    // A client that aborts its COPY with CopyFail (dropping the sink) keeps a working connection.
    let sink = client.copy_in::<_, bytes::Bytes>("COPY nums FROM STDIN").await.unwrap();
    drop(sink);
    assert_eq!(value(&client, "SELECT count(*) FROM nums").await, "1000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_follow_each_client() {
    let px = pgmux("default_pool_size = 1", "bench");
    let base = px.url("app", "app", "bench");
    let alice = connect(&format!(
        "{base} application_name=alice options='-c search_path=pg_catalog -c work_mem=7MB'"
    ))
    .await;
    let bob = connect(&format!("{base} application_name=bob")).await;
    for _ in 0..3 {
        assert_eq!(value(&alice, "SHOW application_name").await, "alice");
        assert_eq!(value(&alice, "SHOW search_path").await, "pg_catalog");
        assert_eq!(value(&alice, "SHOW work_mem").await, "7MB");
        assert_eq!(value(&bob, "SHOW application_name").await, "bob");
        assert_eq!(value(&bob, "SHOW work_mem").await, "4MB");
        assert_eq!(value(&bob, "SHOW search_path").await, "\"$user\", public");
    }
    // A SET of a reported parameter follows the client to its next server.
    bob.batch_execute("SET application_name = 'bobby'").await.unwrap();
    assert_eq!(value(&alice, "SHOW application_name").await, "alice");
    assert_eq!(value(&bob, "SHOW application_name").await, "bobby");
    // TimeZone and DateStyle from the startup packet.
    let carol = connect(&format!("{base} options='-c TimeZone=Asia/Tokyo -c DateStyle=SQL,DMY'")).await;
    assert_eq!(value(&carol, "SHOW TimeZone").await, "Asia/Tokyo");
    assert_eq!(value(&alice, "SHOW TimeZone").await, value(&bob, "SHOW TimeZone").await);
    assert_eq!(value(&carol, "SHOW DateStyle").await, "SQL, DMY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_server_gives_08006_and_the_next_client_a_fresh_one() {
    let px = pgmux("default_pool_size = 2", "deadsrv");
    let url = px.url("app", "app", "deadsrv");
    let client = connect(&url).await;
    client.batch_execute("BEGIN").await.unwrap();
    let pid = value(&client, "SELECT pg_backend_pid()").await;
    let admin = cluster().superuser_client("postgres").await;
    admin
        .simple_query(&format!("SELECT pg_terminate_backend({pid})"))
        .await
        .unwrap();
    let err = client.simple_query("SELECT 1").await.unwrap_err();
    let code = sqlstate(&err);
    assert!(
        matches!(code.as_deref(), Some("57P01") | Some("08006") | None),
        "{err:?}"
    );
    // An idle server killed in the pool is noticed before a client gets it.
    let other = connect(&url).await;
    let idle_pid = value(&other, "SELECT pg_backend_pid()").await;
    admin
        .simple_query(&format!("SELECT pg_terminate_backend({idle_pid})"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(value(&other, "SELECT 3").await, "3");
    assert_ne!(value(&other, "SELECT pg_backend_pid()").await, idle_pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_while_waiting_is_dropped_from_the_queue() {
    let px = pgmux("default_pool_size = 1", "waitq");
    let url = px.url("app", "app", "waitq");
    let holder = connect(&url).await;
    holder.batch_execute("BEGIN").await.unwrap();
    // This client queues behind the holder, then disconnects before a server frees up.
    let (quitter, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    let queued = tokio::spawn(async move {
        quitter
            .batch_execute("INSERT INTO items VALUES (77, 'abandoned')")
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.abort();
    queued.abort();
    tokio::time::sleep(Duration::from_millis(300)).await;
    holder.batch_execute("COMMIT").await.unwrap();
    let next = connect(&url).await;
    assert_eq!(
        value(&next, "SELECT count(*) FROM items WHERE id = 77").await,
        "0",
        "an abandoned request ran"
    );
}

/// Clients that wait for a server get one in the order they began to wait, and a wait that
/// outlasts query_wait_timeout ends with 57014 while the clients behind it are still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_clients_are_served_first_come_first_served() {
    let px = pgmux("default_pool_size = 1\nquery_wait_timeout = 3", "fifo");
    let url = px.url("app", "app", "fifo");
    let holder = connect(&url).await;
    holder.batch_execute("BEGIN").await.unwrap();
    let mut waits = Vec::new();
    for i in 0..4 {
        let client = connect(&url).await;
        waits.push(tokio::spawn(async move {
            // The transaction id PostgreSQL gives each write: the order they ran in.
            value(
                &client,
                &format!(
                    "INSERT INTO items VALUES ({}, 'fifo') RETURNING txid_current()",
                    500 + i
                ),
            )
            .await
        }));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    holder.batch_execute("COMMIT").await.unwrap();
    let mut order = Vec::new();
    for wait in waits {
        order.push(wait.await.unwrap().parse::<i64>().unwrap());
    }
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "served in another order than they waited");
    // The holder keeps the server past query_wait_timeout: the waiter gets 57014 in time.
    holder.batch_execute("BEGIN").await.unwrap();
    let late = connect(&url).await;
    let started = std::time::Instant::now();
    let err = late.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_secs(6),
        "query_wait_timeout = 3 ended the wait after {waited:?}"
    );
    holder.batch_execute("ROLLBACK").await.unwrap();
    holder
        .batch_execute("DELETE FROM items WHERE v = 'fifo'")
        .await
        .unwrap();
}

/// A database whose host is a directory is reached through PostgreSQL's socket file there
/// (libpq's rule), for queries, prepared statements and cancels alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_directory_host_uses_the_unix_socket() {
    ensure_database("unixsock");
    let px = Pgmux::start(
        "auth_type = \"scram-sha-256\"\ndefault_pool_size = 2",
        &format!(
            "{APP}[databases.unixsock]\nhost = \"{{pg_socket_dir}}\"\nport = {{pg_port}}\n\
             [databases.nosock]\nhost = \"/nonexistent-pgmux-dir\"\nport = {{pg_port}}\ndbname = \"unixsock\"\n"
        ),
    );
    let client = connect(&px.url("app", "app", "unixsock")).await;
    // A Unix-socket backend has no client address.
    assert_eq!(value(&client, "SELECT inet_client_addr() IS NULL").await, "t");
    let statement = client.prepare("SELECT $1::int4 * 2").await.unwrap();
    for i in 0..20i32 {
        let row = client.query_one(&statement, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i * 2);
    }
    // The cancel travels the same socket file.
    let token = client.cancel_token();
    let running = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.expect("cancel request");
    let err = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the cancel did not land")
        .unwrap()
        .expect_err("the cancelled query must fail");
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err:?}");
    // A missing socket file is a connection error that names it.
    let err = try_connect(&px.url("app", "app", "nosock"))
        .await
        .expect_err("no server behind a missing socket file");
    let text = format!("{err:?}");
    assert_eq!(sqlstate(&err).as_deref(), Some("08006"), "{text}");
    assert!(text.contains("/nonexistent-pgmux-dir"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_commit_passes_through_in_transaction_mode() {
    // Issue 23: PREPARE TRANSACTION was taken for SQL PREPARE and refused in transaction mode.
    ensure_database("twophase");
    let px = Pgmux::start_app("default_pool_size = 2", "twophase");
    let url = px.url("app", "app", "twophase");
    let c = connect(&url).await;
    c.batch_execute("CREATE TABLE IF NOT EXISTS tpc(x int); TRUNCATE tpc")
        .await
        .unwrap();
    for (gid, x) in [("pgmux-tpc-commit", 1), ("pgmux-tpc-rollback", 2)] {
        // Statement by statement, as psycopg's tpc_prepare() sends it.
        c.batch_execute(&format!("BEGIN; INSERT INTO tpc VALUES ({x})"))
            .await
            .unwrap();
        c.batch_execute(&format!("PREPARE TRANSACTION '{gid}'"))
            .await
            .unwrap_or_else(|e| panic!("PREPARE TRANSACTION: {e} [{e:?}]"));
    }
    // Prepared transactions belong to no session: another client ends them.
    let other = connect(&url).await;
    other.batch_execute("COMMIT PREPARED 'pgmux-tpc-commit'").await.unwrap();
    other
        .batch_execute("ROLLBACK PREPARED 'pgmux-tpc-rollback'")
        .await
        .unwrap();
    assert_eq!(value(&c, "SELECT string_agg(x::text, ',') FROM tpc").await, "1");
}
