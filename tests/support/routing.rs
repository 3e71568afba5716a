//! Read/write split (`read_write_split`) helpers: a pgmux in front of the primary and its
//! replica, the console's SHOW REPLICAS, and a guard that pauses WAL replay on the replica.
use super::{cluster_with_replica, connect, ensure_database, Cluster, Pgmux, Replica};
use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, SimpleQueryMessage};

/// Every single query or console command gives up after this.
pub const QUERY_WAIT: Duration = Duration::from_secs(5);

/// `ensure_database(name)` on the primary, then waits (10 s) until streaming replication has
/// brought the database and its `items` table to the replica.
pub fn routed_database(name: &str) {
    ensure_database(name);
    let (_, replica) = cluster_with_replica();
    let t0 = Instant::now();
    loop {
        let sql = format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'");
        if replica.psql("postgres", &sql) == "1"
            && replica.psql(name, "SELECT count(*) FROM pg_class WHERE relname = 'items'") == "1"
        {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "database {name} not on the replica 10 s after its creation on the primary"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// pgmux with users `app` and `admin` (console) and database `db` on the primary with the
/// replica as its read replica; `db_extra` adds lines to `[databases.db]`.
pub fn routing_pgmux(primary: &Cluster, replica: &Replica, db: &str, db_extra: &str) -> Pgmux {
    let pooler = "auth_type = \"scram-sha-256\"\nadmin_users = [\"admin\"]\n";
    let rest = format!(
        "[users.app]\npassword = \"app\"\n[users.admin]\npassword = \"admin\"\n\
         [databases.{db}]\nhost = \"127.0.0.1\"\nport = {{pg_port}}\n\
         replicas = [\"127.0.0.1:{{replica_port}}\"]\nread_write_split = true\n{db_extra}\n"
    );
    Pgmux::start_with(primary, Some(replica.port), pooler, &rest)
}

/// `fut`, or a panic naming `what` after QUERY_WAIT.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(QUERY_WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {QUERY_WAIT:?}"))
}

/// A client of `db` as app through pgmux.
pub async fn app_client(px: &Pgmux, db: &str) -> Client {
    connect(&px.url("app", "app", db)).await
}

/// A console client (user admin, database pgbouncer).
pub async fn console(px: &Pgmux) -> Client {
    connect(&px.url("admin", "admin", "pgbouncer")).await
}

/// The first column of the first row of `sql` (simple protocol); panics on error or timeout.
pub async fn first(c: &Client, sql: &str) -> String {
    let msgs = within(sql, c.simple_query(sql)).await;
    let msgs = msgs.unwrap_or_else(|e| panic!("{sql}: {e} [{e:?}]"));
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// `SELECT pg_is_in_recovery()` through `c`: true when the read ran on the replica.
pub async fn on_replica(c: &Client) -> bool {
    first(c, "SELECT pg_is_in_recovery()").await == "t"
}

pub type ReplicaRow = HashMap<String, String>;

/// SHOW REPLICAS rows of database `db` (NULL as "").
pub async fn show_replicas(console: &Client, db: &str) -> Vec<ReplicaRow> {
    let msgs = within("SHOW REPLICAS", console.simple_query("SHOW REPLICAS")).await;
    let msgs = msgs.unwrap_or_else(|e| panic!("SHOW REPLICAS: {e} [{e:?}]"));
    text_rows(&msgs)
        .into_iter()
        .filter(|r| r.get("database").is_some_and(|d| d == db))
        .collect()
}

/// The rows of a simple query's answer, by column name (NULL as "").
pub fn text_rows(msgs: &[SimpleQueryMessage]) -> Vec<HashMap<String, String>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_owned(), r.get(i).unwrap_or_default().to_owned()))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// Polls SHOW REPLICAS until the (only) replica of `db` satisfies `pred`; returns its row, or
/// panics after `timeout` with the last rows seen. `reader` (a client of `db`) sends a read
/// first: the lag monitor starts with the database's first routed request.
pub async fn wait_replica(
    console: &Client,
    reader: &Client,
    db: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&ReplicaRow) -> bool,
) -> ReplicaRow {
    first(reader, "SELECT 1").await;
    let t0 = Instant::now();
    loop {
        let rows = show_replicas(console, db).await;
        assert_eq!(rows.len(), 1, "SHOW REPLICAS for {db}: {rows:?}");
        if pred(&rows[0]) {
            return rows.into_iter().next().unwrap();
        }
        assert!(
            t0.elapsed() < timeout,
            "replica of {db} not {what} within {timeout:?}; SHOW REPLICAS: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the replica of `db` takes reads (state ok).
pub async fn wait_replica_ok(console: &Client, reader: &Client, db: &str) -> ReplicaRow {
    wait_replica(console, reader, db, "ok", Duration::from_secs(10), |r| {
        r["state"] == "ok"
    })
    .await
}

/// Polls `on_replica(c)` until it gives `want`, for at most `timeout`; returns how long it took.
pub async fn wait_reads_on_replica(c: &Client, want: bool, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        if on_replica(c).await == want {
            return t0.elapsed();
        }
        let place = if want { "the replica" } else { "the primary" };
        assert!(t0.elapsed() < timeout, "reads not on {place} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// WAL replay paused on the replica while it lives; resumed on drop, even when the test fails.
pub struct ReplayPaused<'a> {
    replica: &'a Replica,
}

impl<'a> ReplayPaused<'a> {
    /// Pauses replay and waits (10 s) until the replica reports it paused.
    pub fn new(replica: &'a Replica) -> ReplayPaused<'a> {
        let guard = ReplayPaused { replica };
        replica.psql("postgres", "SELECT pg_wal_replay_pause()");
        let t0 = Instant::now();
        while replica.psql("postgres", "SELECT pg_get_wal_replay_pause_state()") != "paused" {
            assert!(t0.elapsed() < Duration::from_secs(10), "replay not paused after 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        guard
    }
}

impl Drop for ReplayPaused<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.replica.try_psql("postgres", "SELECT pg_wal_replay_resume()") {
            eprintln!("could not resume WAL replay on the replica: {e}");
        }
    }
}
