//! The admin console (virtual database `pgbouncer` / `pgmux`) end to end: SHOW answers with
//! PgBouncer's columns and real counts, refusals, and the control commands' effects.

mod support;

use std::collections::HashMap;
use std::future::Future;
use std::net::TcpStream;
use std::time::Duration;
use support::*;
use tokio_postgres::{Client, SimpleQueryMessage};

const USERS: &str = "[users.app]\npassword = \"app\"\n[users.admin]\npassword = \"admin\"\n\
                     [users.watcher]\npassword = \"watcher\"\n";
/// Every console command, every client query and every poll gives up after this.
const WAIT: Duration = Duration::from_secs(5);

fn pooler(extra: &str) -> String {
    format!("auth_type = \"scram-sha-256\"\nadmin_users = [\"admin\"]\nstats_users = [\"watcher\"]\n{extra}")
}

fn rest(db: &str) -> String {
    format!("{USERS}[databases.{db}]\nhost = \"127.0.0.1\"\nport = {{pg_port}}\n")
}

/// pgmux with the three users and one database of the test's own.
fn pgmux(extra: &str, db: &str) -> Pgmux {
    ensure_database(db);
    Pgmux::start(&pooler(extra), &rest(db))
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {WAIT:?}"))
}

async fn admin(px: &Pgmux) -> Client {
    connect(&px.url("admin", "admin", "pgbouncer")).await
}

async fn app(px: &Pgmux, db: &str) -> Client {
    connect(&px.url("app", "app", db)).await
}

type Row = HashMap<String, Option<String>>;

/// A console command's columns and rows (by column name).
async fn show(c: &Client, cmd: &str) -> (Vec<String>, Vec<Row>) {
    let msgs = within(cmd, c.simple_query(cmd)).await;
    let msgs = msgs.unwrap_or_else(|e| panic!("{cmd}: {e} [{e:?}]"));
    let (mut columns, mut rows) = (Vec::new(), Vec::new());
    for m in msgs {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                columns = cols.iter().map(|c| c.name().to_owned()).collect();
            }
            SimpleQueryMessage::Row(r) => {
                let names = r.columns().iter().map(|c| c.name().to_owned());
                rows.push(
                    names
                        .enumerate()
                        .map(|(i, n)| (n, r.get(i).map(str::to_owned)))
                        .collect(),
                );
            }
            _ => {}
        }
    }
    (columns, rows)
}

/// A console command that succeeds (e.g. PAUSE): panics on an error.
async fn ok(c: &Client, cmd: &str) {
    let res = within(cmd, c.simple_query(cmd)).await;
    res.unwrap_or_else(|e| panic!("{cmd}: {e} [{e:?}]"));
}

/// The SQLSTATE of a login that must fail.
async fn refused(url: &str) -> String {
    match try_connect(url).await {
        Ok(_) => panic!("logged in: {url}"),
        Err(e) => sqlstate(&e).unwrap_or_else(|| panic!("{url}: no SQLSTATE in {e:?}")),
    }
}

/// The SQLSTATE of a command that must fail.
async fn fails(c: &Client, cmd: &str) -> String {
    match within(cmd, c.simple_query(cmd)).await {
        Ok(_) => panic!("{cmd}: succeeded, expected an error"),
        Err(e) => sqlstate(&e).unwrap_or_else(|| panic!("{cmd}: no SQLSTATE in {e:?}")),
    }
}

fn cell<'a>(row: &'a Row, col: &str) -> &'a str {
    match row.get(col) {
        Some(Some(v)) => v,
        Some(None) => panic!("column {col} is NULL in {row:?}"),
        None => panic!("no column {col} in {row:?}"),
    }
}

fn int(row: &Row, col: &str) -> i64 {
    let v = cell(row, col);
    v.parse().unwrap_or_else(|_| panic!("{col} = {v:?} is not a number"))
}

/// The first row whose `col` is `value`.
fn find<'a>(rows: &'a [Row], col: &str, value: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.get(col).and_then(|v| v.as_deref()) == Some(value))
}

/// The SHOW POOLS row of (db, app).
async fn pool_row(c: &Client, db: &str) -> Row {
    let (_, rows) = show(c, "SHOW POOLS").await;
    let row = rows
        .iter()
        .find(|r| cell(r, "database") == db && cell(r, "user") == "app");
    row.unwrap_or_else(|| panic!("no pool ({db}, app) in {rows:?}")).clone()
}

/// Polls SHOW POOLS every 20 ms (up to WAIT) until `check` holds for (db, app); that row.
async fn pool_until(c: &Client, db: &str, what: &str, check: impl Fn(&Row) -> bool) -> Row {
    let t0 = std::time::Instant::now();
    loop {
        let row = pool_row(c, db).await;
        if check(&row) {
            return row;
        }
        assert!(t0.elapsed() < WAIT, "SHOW POOLS never showed {what}; last: {row:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SHOW CLIENTS rows of one database.
async fn clients_of(c: &Client, db: &str) -> Vec<Row> {
    let (_, rows) = show(c, "SHOW CLIENTS").await;
    rows.into_iter().filter(|r| cell(r, "database") == db).collect()
}

/// A client of `db` that runs one query in its own task (connecting there too).
fn spawn_query(px: &Pgmux, db: &str, sql: &'static str) -> tokio::task::JoinHandle<String> {
    let url = px.url("app", "app", db);
    tokio::spawn(async move { value(&connect(&url).await, sql).await })
}

async fn finishes(task: tokio::task::JoinHandle<String>) -> String {
    within("a client's query", task).await.expect("client task")
}

fn names(list: &str) -> Vec<String> {
    list.split_whitespace().map(str::to_owned).collect()
}

const POOLS: &str = "database user cl_active cl_waiting cl_active_cancel_req cl_waiting_cancel_req sv_active \
    sv_active_cancel sv_being_canceled sv_idle sv_used sv_tested sv_login maxwait maxwait_us pool_mode \
    load_balance_hosts";
const LATENCY: &str = "query_p50_us query_p95_us query_p99_us query_max_us xact_p50_us xact_p95_us \
    xact_p99_us xact_max_us";
const STATS: &str = "database total_server_assignment_count total_xact_count total_query_count total_received \
    total_sent total_xact_time total_query_time total_wait_time total_client_parse_count \
    total_server_parse_count total_bind_count avg_server_assignment_count avg_xact_count avg_query_count \
    avg_recv avg_sent avg_xact_time avg_query_time avg_wait_time avg_client_parse_count \
    avg_server_parse_count avg_bind_count";
const STATS_TOTALS: &str = "database server_assignment_count xact_count query_count bytes_received bytes_sent \
    xact_time query_time wait_time client_parse_count server_parse_count bind_count";
const STATS_AVERAGES: &str = "database server_assignment_count xact_count query_count bytes_received bytes_sent \
    xact_time query_time wait_time avg_client_parse_count avg_server_parse_count avg_bind_count";
const TOTALS: &str = "server_assignment_count xact_count query_count client_bytes server_bytes xact_time \
    query_time wait_time ps_client_parse_count ps_server_parse_count ps_bind_count";
const DATABASES: &str = "name host port database force_user pool_size min_pool_size reserve_pool_size \
    server_lifetime pool_mode load_balance_hosts max_connections current_connections max_client_connections \
    current_client_connections paused disabled";
const CONNECTIONS: &str = "type user database replication state addr port local_addr local_port connect_time \
    request_time wait wait_us close_needed ptr link remote_pid tls application_name prepared_statements id";
const USERS_COLS: &str = "name pool_size reserve_pool_size pool_mode max_user_connections current_connections \
    max_user_client_connections current_client_connections";
const LISTS: &str = "databases users peers pools peer_pools free_clients used_clients login_clients free_servers \
    used_servers dns_names dns_zones dns_queries dns_pending";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_pools_counts_waiting_clients() {
    let db = "adm_waiting";
    let px = pgmux("default_pool_size = 1", db);
    let console = admin(&px).await;
    let a = app(&px, db).await;
    within("BEGIN", a.batch_execute("BEGIN; SELECT 1")).await.unwrap();
    let b = spawn_query(&px, db, "SELECT pg_sleep(0)");
    let c = spawn_query(&px, db, "SELECT pg_sleep(0)");
    pool_until(&console, db, "cl_waiting = 2", |r| int(r, "cl_waiting") == 2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let row = pool_row(&console, db).await;
    assert_eq!(int(&row, "cl_waiting"), 2, "{row:?}");
    assert_eq!(int(&row, "cl_active"), 1, "{row:?}");
    assert_eq!(int(&row, "sv_active"), 1, "{row:?}");
    assert!(
        int(&row, "maxwait") * 1_000_000 + int(&row, "maxwait_us") >= 50_000,
        "{row:?}"
    );
    assert_eq!(cell(&row, "pool_mode"), "transaction");
    assert_eq!(int(&row, "pool_size"), 1);
    assert_eq!(int(&row, "paused"), 0);

    let clients = clients_of(&console, db).await;
    assert_eq!(clients.len(), 3, "{clients:?}");
    let states: Vec<&str> = clients.iter().map(|r| cell(r, "state")).collect();
    assert_eq!(states.iter().filter(|s| **s == "active").count(), 1, "{states:?}");
    assert_eq!(states.iter().filter(|s| **s == "waiting").count(), 2, "{states:?}");
    let active = find(&clients, "state", "active").unwrap();
    let (_, servers) = show(&console, "SHOW SERVERS").await;
    let servers: Vec<&Row> = servers.iter().filter(|r| cell(r, "database") == db).collect();
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert_eq!(cell(servers[0], "state"), "active");
    assert_eq!(cell(servers[0], "link"), cell(active, "ptr"));
    assert_eq!(cell(active, "link"), cell(servers[0], "ptr"));

    within("COMMIT", a.batch_execute("COMMIT")).await.unwrap();
    assert_eq!(finishes(b).await, "");
    assert_eq!(finishes(c).await, "");
    let row = pool_until(&console, db, "cl_waiting = 0", |r| int(r, "cl_waiting") == 0).await;
    assert_eq!(int(&row, "sv_active"), 0, "{row:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_show_command_has_its_columns() {
    let db = "adm_columns";
    let px = pgmux("default_pool_size = 3\nslow_query_threshold = 0.1", db);
    let console = admin(&px).await;
    let client = app(&px, db).await;
    for _ in 0..2 {
        within("pg_sleep", client.simple_query("select pg_sleep(0.15)"))
            .await
            .unwrap();
    }
    let with = |base: &str, extra: &str| names(&format!("{base} {extra}"));

    let (cols, _) = show(&console, "SHOW POOLS").await;
    assert_eq!(cols, with(POOLS, &format!("pool_size paused {LATENCY}")));
    let (cols, rows) = show(&console, "SHOW STATS").await;
    assert_eq!(cols, with(STATS, LATENCY));
    assert!(find(&rows, "database", db).is_some(), "{rows:?}");
    assert_eq!(show(&console, "SHOW STATS_TOTALS").await.0, names(STATS_TOTALS));
    assert_eq!(show(&console, "SHOW STATS_AVERAGES").await.0, names(STATS_AVERAGES));

    let (cols, rows) = show(&console, "SHOW TOTALS").await;
    assert_eq!(cols, names("name value"));
    let expected: Vec<String> = ["total", "avg"]
        .iter()
        .flat_map(|p| names(TOTALS).into_iter().map(move |n| format!("{p}_{n}")))
        .collect();
    let got: Vec<&str> = rows.iter().map(|r| cell(r, "name")).collect();
    assert_eq!(got, expected);
    assert!(int(find(&rows, "name", "total_query_count").unwrap(), "value") >= 2);

    let (cols, rows) = show(&console, "SHOW DATABASES").await;
    assert_eq!(cols, names(DATABASES));
    let row = find(&rows, "name", db).unwrap_or_else(|| panic!("no {db} in {rows:?}"));
    assert_eq!(cell(row, "host"), "127.0.0.1");
    assert_eq!(int(row, "port"), i64::from(cluster().port));
    assert_eq!(cell(row, "database"), db);
    assert_eq!(int(row, "pool_size"), 3);
    assert_eq!(int(row, "current_client_connections"), 1);
    assert_eq!((int(row, "paused"), int(row, "disabled")), (0, 0));

    let (cols, rows) = show(&console, "SHOW CLIENTS").await;
    assert_eq!(cols, names(CONNECTIONS));
    let mine: Vec<&Row> = rows.iter().filter(|r| cell(r, "database") == db).collect();
    assert_eq!(mine.len(), 1, "{rows:?}");
    assert_eq!((cell(mine[0], "type"), cell(mine[0], "user")), ("C", "app"));
    assert_eq!(cell(mine[0], "state"), "idle");
    let (cols, rows) = show(&console, "SHOW SERVERS").await;
    assert_eq!(cols, names(CONNECTIONS));
    let server = find(&rows, "database", db).unwrap_or_else(|| panic!("no server in {rows:?}"));
    assert_eq!(cell(server, "type"), "S");
    assert!(int(server, "remote_pid") > 0, "{server:?}");

    let (cols, rows) = show(&console, "SHOW USERS").await;
    assert_eq!(cols, names(USERS_COLS));
    assert!(find(&rows, "name", "app").is_some(), "{rows:?}");

    let (cols, rows) = show(&console, "SHOW CONFIG").await;
    assert_eq!(cols, names("key value default changeable"));
    let size = find(&rows, "key", "default_pool_size").expect("default_pool_size row");
    assert_eq!((cell(size, "value"), cell(size, "default")), ("3", "20"));
    assert_eq!(cell(size, "changeable"), "yes");
    assert_eq!(cell(find(&rows, "key", "listen_port").unwrap(), "changeable"), "no");

    let (cols, rows) = show(&console, "SHOW LISTS").await;
    assert_eq!(cols, names("list items"));
    let lists: Vec<&str> = rows.iter().map(|r| cell(r, "list")).collect();
    assert_eq!(lists, names(LISTS));
    assert!(int(find(&rows, "list", "pools").unwrap(), "items") >= 1);

    let (cols, rows) = show(&console, "SHOW VERSION").await;
    assert_eq!(cols, names("version"));
    assert_eq!(rows.len(), 1);
    assert!(cell(&rows[0], "version").starts_with("pgmux"), "{rows:?}");

    let (cols, rows) = show(&console, "SHOW STATE").await;
    assert_eq!(cols, names("key value"));
    assert_eq!(cell(find(&rows, "key", "active").unwrap(), "value"), "yes");
    assert_eq!(cell(find(&rows, "key", "paused").unwrap(), "value"), "no");

    let help = within("SHOW HELP", console.simple_query("SHOW HELP")).await.unwrap();
    assert!(
        matches!(help.last(), Some(SimpleQueryMessage::CommandComplete(_))),
        "{help:?}"
    );

    let (cols, rows) = show(&console, "SHOW SLOW_QUERIES").await;
    assert_eq!(cols, names("database user query count mean_us max_us last_seen"));
    let slow: Vec<&Row> = rows.iter().filter(|r| cell(r, "database") == db).collect();
    assert_eq!(slow.len(), 1, "{rows:?}");
    assert_eq!(cell(slow[0], "query"), "select pg_sleep(?)");
    assert_eq!(int(slow[0], "count"), 2);
    assert!(int(slow[0], "max_us") >= 150_000, "{slow:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_after_traffic() {
    let db = "adm_stats";
    let px = pgmux("stats_period = 0.2", db);
    let console = admin(&px).await;
    let client = app(&px, db).await;
    within("traffic", async {
        for i in 0..50 {
            assert_eq!(value(&client, &format!("SELECT {i}")).await, i.to_string());
        }
        for _ in 0..10 {
            for sql in ["BEGIN", "SELECT 1", "SELECT 2", "COMMIT"] {
                client.simple_query(sql).await.unwrap();
            }
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(450)).await; // two stats periods
    let (_, rows) = show(&console, "SHOW STATS_TOTALS").await;
    let totals = find(&rows, "database", db).unwrap_or_else(|| panic!("no {db} in {rows:?}"));
    assert!(int(totals, "xact_count") >= 60, "{totals:?}");
    assert!(int(totals, "query_count") >= 70, "{totals:?}");
    assert!(int(totals, "bytes_received") > 0, "{totals:?}");
    assert!(int(totals, "bytes_sent") > 0, "{totals:?}");
    assert!(
        int(totals, "xact_time") > 0 && int(totals, "query_time") > 0,
        "{totals:?}"
    );
    let (_, rows) = show(&console, "SHOW STATS").await;
    let stats = find(&rows, "database", db).unwrap();
    assert_eq!(int(stats, "total_xact_count"), int(totals, "xact_count"), "{stats:?}");
    assert_eq!(int(stats, "total_query_count"), int(totals, "query_count"), "{stats:?}");

    // The latency columns cover the last period: a period full of queries shows them.
    let t0 = std::time::Instant::now();
    let stats = loop {
        within("SELECT 1", client.simple_query("SELECT 1")).await.unwrap();
        let (_, rows) = show(&console, "SHOW STATS").await;
        let row = find(&rows, "database", db).unwrap().clone();
        if int(&row, "query_p50_us") > 0 && int(&row, "avg_xact_count") > 0 {
            break row;
        }
        assert!(t0.elapsed() < WAIT, "no latencies in SHOW STATS: {row:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (p50, p99, max) = (
        int(&stats, "query_p50_us"),
        int(&stats, "query_p99_us"),
        int(&stats, "query_max_us"),
    );
    assert!(p50 > 0 && p99 >= p50 && max >= p99, "{stats:?}");
    assert!(int(&stats, "query_p95_us") >= p50, "{stats:?}");
    assert!(int(&stats, "xact_max_us") >= int(&stats, "xact_p50_us"), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals() {
    let db = "adm_refusals";
    let px = pgmux("", db);
    for console_db in ["pgbouncer", "pgmux"] {
        assert_eq!(refused(&px.url("app", "app", console_db)).await, "42501");
    }
    let watcher = connect(&px.url("watcher", "watcher", "pgmux")).await;
    assert!(show(&watcher, "SHOW POOLS").await.0.len() > 17);
    assert_eq!(fails(&watcher, &format!("PAUSE {db}")).await, "42501");
    assert_eq!(fails(&watcher, "RELOAD").await, "42501");
    assert_eq!(show(&watcher, "SHOW VERSION").await.1.len(), 1);

    let console = admin(&px).await;
    for (cmd, code) in [
        ("SELECT 1".to_string(), "42601"),
        ("FROBNICATE".into(), "42601"),
        ("PAUSE nosuchdb".into(), "3D000"),
        (format!("RESUME {db}"), "55000"),
        ("SET listen_port = 1".into(), "55P02"),
        ("SET so_reuseport = true".into(), "55P02"),
        ("SET default_pool_size = 0".into(), "22023"),
    ] {
        assert_eq!(fails(&console, &cmd).await, code, "{cmd}");
        let (_, rows) = show(&console, "SHOW VERSION").await;
        assert_eq!(rows.len(), 1, "the console after {cmd}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume() {
    let db = "adm_pause";
    let px = pgmux("", db);
    let console = admin(&px).await;
    assert_eq!(value(&app(&px, db).await, "SELECT 1").await, "1"); // the pool exists
    ok(&console, &format!("PAUSE {db}")).await;
    let query = spawn_query(&px, db, "SELECT 41 + 1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!query.is_finished(), "a query ran on a paused database");
    let row = pool_until(&console, db, "the waiting client", |r| int(r, "cl_waiting") == 1).await;
    assert_eq!(int(&row, "paused"), 1, "{row:?}");
    let (_, dbs) = show(&console, "SHOW DATABASES").await;
    assert_eq!(int(find(&dbs, "name", db).unwrap(), "paused"), 1);
    ok(&console, &format!("RESUME {db}")).await;
    assert_eq!(finishes(query).await, "42");
    let row = pool_row(&console, db).await;
    assert_eq!((int(&row, "paused"), int(&row, "cl_waiting")), (0, 0), "{row:?}");
}

/// The next query of a client the console has disconnected fails (57P01 or a closed connection).
async fn assert_killed(client: &Client) {
    match within("a killed client's query", client.simple_query("SELECT 1")).await {
        Ok(_) => panic!("a killed client's query ran"),
        Err(e) => assert!(matches!(sqlstate(&e).as_deref(), None | Some("57P01")), "{e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_kill_client_and_disable() {
    let db = "adm_kill";
    let px = pgmux("", db);
    let console = admin(&px).await;
    let victim = connect(&format!("{} application_name=victim", px.url("app", "app", db))).await;
    let other = app(&px, db).await;
    assert_eq!(value(&victim, "SELECT 1").await, "1");
    assert_eq!(value(&other, "SELECT 2").await, "2");
    let clients = clients_of(&console, db).await;
    assert_eq!(clients.len(), 2, "{clients:?}");
    let id = cell(
        find(&clients, "application_name", "victim").expect("the victim's row"),
        "id",
    )
    .to_owned();
    ok(&console, &format!("KILL_CLIENT {id}")).await;
    let t0 = std::time::Instant::now();
    while clients_of(&console, db).await.iter().any(|r| cell(r, "id") == id) {
        assert!(t0.elapsed() < WAIT, "client {id} still listed after KILL_CLIENT");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_killed(&victim).await;
    assert_eq!(value(&other, "SELECT 3").await, "3");
    assert_eq!(fails(&console, "KILL_CLIENT 999999999").await, "42704");

    ok(&console, &format!("DISABLE {db}")).await;
    assert_eq!(refused(&px.url("app", "app", db)).await, "57P03");
    ok(&console, &format!("ENABLE {db}")).await;
    let late = app(&px, db).await;
    assert_eq!(value(&late, "SELECT 4").await, "4");

    ok(&console, &format!("KILL {db}")).await;
    let t0 = std::time::Instant::now();
    while !clients_of(&console, db).await.is_empty() {
        assert!(t0.elapsed() < WAIT, "clients of {db} still listed after KILL");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_killed(&other).await;
    assert_killed(&late).await;
    let query = spawn_query(&px, db, "SELECT 5");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!query.is_finished(), "a query ran on a killed (paused) database");
    ok(&console, &format!("RESUME {db}")).await;
    assert_eq!(finishes(query).await, "5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_and_set_change_pool_size() {
    let db = "adm_reload";
    let px = pgmux("default_pool_size = 2", db);
    let console = admin(&px).await;
    assert_eq!(value(&app(&px, db).await, "SELECT 1").await, "1");
    assert_eq!(int(&pool_row(&console, db).await, "pool_size"), 2);

    px.write_config(&pooler("default_pool_size = 3"), &rest(db));
    ok(&console, "RELOAD").await;
    assert_eq!(int(&pool_row(&console, db).await, "pool_size"), 3);
    let (_, config) = show(&console, "SHOW CONFIG").await;
    assert_eq!(cell(find(&config, "key", "default_pool_size").unwrap(), "value"), "3");

    ok(&console, "SET default_pool_size = 4").await;
    assert_eq!(int(&pool_row(&console, db).await, "pool_size"), 4);
    let (_, config) = show(&console, "SHOW CONFIG").await;
    assert_eq!(cell(find(&config, "key", "default_pool_size").unwrap(), "value"), "4");

    px.write_config(&pooler("default_pool_size = = 5"), &rest(db));
    assert_eq!(fails(&console, "RELOAD").await, "F0000");
    assert_eq!(int(&pool_row(&console, db).await, "pool_size"), 4);
    assert_eq!(value(&app(&px, db).await, "SELECT 2").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_and_wait_close() {
    let db = "adm_reconnect";
    let px = pgmux("default_pool_size = 1", db);
    let console = admin(&px).await;
    let client = app(&px, db).await;
    within("BEGIN", client.batch_execute("BEGIN")).await.unwrap();
    let before = value(&client, "SELECT pg_backend_pid()").await;
    ok(&console, &format!("RECONNECT {db}")).await;
    let waiter = {
        let second = admin(&px).await;
        let cmd = format!("WAIT_CLOSE {db}");
        tokio::spawn(async move { second.simple_query(&cmd).await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "WAIT_CLOSE returned with the old server in a transaction"
    );
    // The transaction keeps its server until it ends.
    assert_eq!(value(&client, "SELECT pg_backend_pid()").await, before);
    within("COMMIT", client.batch_execute("COMMIT")).await.unwrap();
    within("WAIT_CLOSE", waiter).await.unwrap().expect("WAIT_CLOSE");
    let after = value(&client, "SELECT pg_backend_pid()").await;
    assert_ne!(before, after, "the same server after RECONNECT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_from_console() {
    let db = "adm_shutdown";
    let mut px = pgmux("shutdown_timeout = 1", db);
    let console = admin(&px).await;
    assert_eq!(value(&app(&px, db).await, "SELECT 1").await, "1");
    // The answer may be SHUTDOWN or a closed connection: only the exit counts.
    let _ = within("SHUTDOWN", console.simple_query("SHUTDOWN")).await;
    let status = tokio::task::block_in_place(|| px.wait_exit(Duration::from_secs(3)));
    assert!(status.is_some(), "pgmux still running 3 s after SHUTDOWN");
    assert!(
        TcpStream::connect(("127.0.0.1", px.port)).is_err(),
        "the port still accepts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_passthrough_and_no_admin_users_a_postgresql_superuser_gets_the_console() {
    // The embedded default's shape: passthrough, a "*" database, no admin_users.
    let px = Pgmux::start("auth_type = \"passthrough\"", "[databases.\"*\"]\nport = {pg_port}\n");
    // postgres is a superuser (trusted by the test cluster from 127.0.0.1).
    let su = connect(&px.url("postgres", "whatever", "pgbouncer")).await;
    let (cols, _) = within("SHOW POOLS", show(&su, "SHOW POOLS")).await;
    assert!(cols.iter().any(|c| c == "cl_active"), "{cols:?}");
    ok(&su, "PAUSE").await;
    ok(&su, "RESUME").await;
    // app logs in to PostgreSQL with its password but is no superuser: refused, and told why.
    let Err(e) = try_connect(&px.url("app", "app", "pgbouncer")).await else {
        panic!("app got the console")
    };
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e:?}");
    let msg = e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_default();
    assert!(msg.ends_with("and is not a PostgreSQL superuser"), "{msg}");
    // A wrong password is a wrong password.
    assert_eq!(refused(&px.url("app", "nope", "pgbouncer")).await, "28P01");
}
