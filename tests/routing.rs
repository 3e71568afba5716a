//! Read/write split against a real primary and its streaming replica, through the binary.
//! One test function runs the parts in order: `cargo test` runs a binary's tests in parallel
//! on one shared replica, and the lag part pauses its replay.

mod support;

use std::time::{Duration, Instant};
use support::*;
use tokio_postgres::SimpleQueryMessage;

const USERS: &str = "[users.app]\npassword = \"app\"\n[users.admin]\npassword = \"admin\"\n";

fn pgmux(db_extra: &str) -> Pgmux {
    let (primary, replica) = cluster_with_replica();
    Pgmux::start_with(
        primary,
        Some(replica.port),
        "auth_type = \"scram-sha-256\"\nadmin_users = [\"admin\"]",
        &format!(
            "{USERS}[databases.bench]\nport = {{pg_port}}\nreplicas = [\"127.0.0.1:{{replica_port}}\"]\n\
             read_write_split = true\nlag_check_interval = 0.1\n{db_extra}"
        ),
    )
}

/// The first value of the last row of a simple query.
async fn one(client: &tokio_postgres::Client, sql: &str) -> String {
    let messages = tokio::time::timeout(Duration::from_secs(10), client.simple_query(sql))
        .await
        .unwrap_or_else(|_| panic!("{sql}: timed out"))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .last()
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// `pg_is_in_recovery()` as a fresh client (no writes of its own) sees it.
async fn fresh_read(url: &str) -> String {
    one(&connect(url).await, "SELECT pg_is_in_recovery()").await
}

/// The SHOW REPLICAS row of the bench replica: (state, excluded_reason, reads_served).
async fn replica_row(px: &Pgmux) -> (String, String, i64) {
    let console = connect(&px.url("admin", "admin", "pgbouncer")).await;
    let messages = console.simple_query("SHOW REPLICAS").await.unwrap();
    let row = messages
        .into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .expect("a replica row");
    let get = |c: &str| row.get(c).unwrap_or_default().to_owned();
    (
        get("state"),
        get("excluded_reason"),
        get("reads_served").parse().unwrap(),
    )
}

/// Waits (10 s at most) until the replica's state is `want`; the monitor starts with the
/// first transaction, so one is run first.
async fn wait_state(px: &Pgmux, url: &str, want: &str) {
    let _ = fresh_read(url).await;
    let t0 = Instant::now();
    loop {
        let (state, why, _) = replica_row(px).await;
        if state == want {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "replica still {state} ({why}), want {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Until the replica has `table` (streamed from the primary).
fn wait_for_table(table: &str) {
    let (_, replica) = cluster_with_replica();
    let t0 = Instant::now();
    let sql = format!("SELECT count(*) FROM pg_class WHERE relname = '{table}'");
    while replica.psql("bench", &sql) != "1" {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{table} never reached the replica"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_write_split() {
    reads_go_to_the_replica_and_writes_to_the_primary().await;
    read_your_writes_and_the_lag_check().await;
}

async fn reads_go_to_the_replica_and_writes_to_the_primary() {
    let (primary, _) = cluster_with_replica();
    primary.psql(
        "bench",
        "CREATE TABLE rt(id int); GRANT ALL ON rt TO app; CREATE SEQUENCE rt_seq; GRANT ALL ON rt_seq TO app",
    );
    wait_for_table("rt_seq");
    let px = pgmux("");
    let url = px.url("app", "app", "bench");
    wait_state(&px, &url, "ok").await;

    assert_eq!(fresh_read(&url).await, "t", "a read lands on the replica");
    let c = connect(&url).await;
    assert_eq!(
        one(&c, "INSERT INTO rt VALUES (1) RETURNING id").await,
        "1",
        "a write on the primary"
    );
    let c = connect(&url).await;
    let inside = one(
        &c,
        "BEGIN; INSERT INTO rt VALUES (2); SELECT pg_is_in_recovery(); COMMIT",
    )
    .await;
    assert_eq!(inside, "f", "a read-write transaction stays on the primary");
    let c = connect(&url).await;
    // The transaction routes on its first statement (a Query of several goes to the primary).
    c.batch_execute("BEGIN READ ONLY").await.unwrap();
    assert_eq!(
        one(&c, "SELECT pg_is_in_recovery()").await,
        "t",
        "BEGIN READ ONLY goes to the replica"
    );
    c.batch_execute("COMMIT").await.unwrap();
    let c = connect(&url).await;
    let deny = one(&c, "SELECT nextval('rt_seq') > 0 AND NOT pg_is_in_recovery()").await;
    assert_eq!(deny, "t", "a deny-listed function goes to the primary");
    let c = connect(&url).await;
    assert_eq!(one(&c, "/* pgmux:primary */ SELECT pg_is_in_recovery()").await, "f");
    // Extended protocol: a prepared statement (Parse, then Bind by name).
    let c = connect(&url).await;
    let statement = c.prepare("SELECT pg_is_in_recovery() AND $1::int = 7").await.unwrap();
    for _ in 0..3 {
        let row = c.query_one(&statement, &[&7i32]).await.unwrap();
        assert!(row.get::<_, bool>(0), "a prepared read lands on the replica");
    }
    let (state, _, reads) = replica_row(&px).await;
    assert_eq!(state, "ok");
    assert!(reads >= 5, "reads_served {reads}");
}

/// Read-your-writes with replay paused, then the lag check: both pause the replica's replay.
async fn read_your_writes_and_the_lag_check() {
    let (primary, replica) = cluster_with_replica();
    primary.psql(
        "bench",
        "CREATE TABLE ryw(id int); GRANT ALL ON ryw TO app; CREATE TABLE lagged(id int, v text); GRANT ALL ON lagged TO app",
    );
    wait_for_table("lagged");
    let px = pgmux("max_replica_lag_bytes = 100000\nmax_replica_lag_seconds = 60\n");
    let url = px.url("app", "app", "bench");
    wait_state(&px, &url, "ok").await;

    struct Resume;
    impl Drop for Resume {
        fn drop(&mut self) {
            let (_, replica) = cluster_with_replica();
            replica.psql("postgres", "SELECT pg_wal_replay_resume()");
        }
    }
    let _resume = Resume;
    replica.psql("postgres", "SELECT pg_wal_replay_pause()");
    // Every row a client wrote is there when it reads it back at once.
    let c = connect(&url).await;
    for i in 0..1000 {
        let n = one(
            &c,
            &format!("INSERT INTO ryw VALUES ({i}); SELECT count(*) FROM ryw WHERE id = {i}"),
        )
        .await;
        assert_eq!(n, "1", "row {i} written then read back");
        let n = one(&c, &format!("SELECT count(*) FROM ryw WHERE id = {i}")).await;
        assert_eq!(n, "1", "row {i} missing on the next read (read-your-writes)");
    }
    // More than max_replica_lag_bytes behind: reads move to the primary within a few checks.
    primary.psql(
        "bench",
        "INSERT INTO lagged SELECT g, repeat('x', 1000) FROM generate_series(1, 500) g",
    );
    let t0 = Instant::now();
    wait_state(&px, &url, "excluded").await;
    println!("replica excluded {:?} after the write", t0.elapsed());
    let (_, why, _) = replica_row(&px).await;
    assert!(why.contains("max_replica_lag_bytes"), "{why}");
    assert_eq!(fresh_read(&url).await, "f", "a lagging replica gets no reads");
    replica.psql("postgres", "SELECT pg_wal_replay_resume()");
    wait_state(&px, &url, "ok").await;
    let t0 = Instant::now();
    while fresh_read(&url).await != "t" {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "reads never came back to the replica"
        );
    }
}
