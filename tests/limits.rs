//! Connection limits against real PostgreSQL: the reserve pool, max_db_connections,
//! max_user_connections, per-user and per-database overrides, the "*" database.

mod support;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const USERS: &str = "[users.app]\npassword = \"app\"\n[users.md5user]\npassword = \"md5pass\"\n";

/// Client backends on `db`, whatever their user.
fn backends(db: &str) -> i64 {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND backend_type = 'client backend' \
         AND pid <> pg_backend_pid()"
    );
    cluster().psql("postgres", &sql).parse().expect("count")
}

/// Samples `backends(db)` every 20 ms until dropped; `peak()` is the most seen.
struct Monitor {
    peak: Arc<AtomicI64>,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    fn start(db: &'static str) -> Monitor {
        let peak = Arc::new(AtomicI64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, done) = (peak.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    peak.fetch_max(backends(db), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Monitor {
            peak,
            done,
            thread: Some(thread),
        }
    }

    fn peak(&mut self) -> i64 {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

fn pgmux(pooler: &str, databases: &[&str], extra: &str) -> Pgmux {
    let mut rest = format!("{USERS}{extra}");
    for db in databases {
        ensure_database(db);
        rest.push_str(&format!("[databases.{db}]\nport = {{pg_port}}\n"));
    }
    Pgmux::start(&format!("auth_type = \"scram-sha-256\"\n{pooler}"), &rest)
}

fn error_text(err: &tokio_postgres::Error) -> String {
    format!("{err} {err:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_pool_serves_a_client_that_waited_past_reserve_pool_timeout() {
    let px = pgmux(
        "default_pool_size = 1\nreserve_pool_size = 1\nreserve_pool_timeout = 0.3\nquery_wait_timeout = 5",
        &["reserve"],
        "",
    );
    let url = px.url("app", "app", "reserve");
    let holder = connect(&url).await;
    holder.batch_execute("BEGIN").await.unwrap();
    let holder_pid = value(&holder, "SELECT pg_backend_pid()").await;
    let mut monitor = Monitor::start("reserve");

    // The pool is full: this client gets a reserve connection once it waited 0.3 s.
    let waiter = connect(&url).await;
    let started = Instant::now();
    let pid = value(&waiter, "SELECT pg_backend_pid()").await;
    let waited = started.elapsed();
    assert_ne!(pid, holder_pid);
    assert!(
        waited >= Duration::from_millis(280),
        "served after {waited:?}, before reserve_pool_timeout"
    );
    assert!(waited < Duration::from_secs(3), "served after {waited:?}");
    assert_eq!(backends("reserve"), 2);

    // Three more clients at once: the reserve has one connection, so they take turns on it.
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = connect(&url).await;
            value(&client, "SELECT pg_sleep(0.1)").await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(monitor.peak(), 2, "pool_size 1 + reserve_pool_size 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_db_connections_counts_every_user_of_a_database() {
    let px = pgmux(
        "default_pool_size = 5\nmax_db_connections = 2\nquery_wait_timeout = 0.5",
        &["dblimit"],
        "",
    );
    let app = px.url("app", "app", "dblimit");
    let md5 = px.url("md5user", "md5pass", "dblimit");
    let mut monitor = Monitor::start("dblimit");
    // md5user's pool opens a server first; it goes idle.
    let m1 = connect(&md5).await;
    assert_eq!(value(&m1, "SELECT 1").await, "1");
    let a1 = connect(&app).await;
    let a2 = connect(&app).await;
    a1.batch_execute("BEGIN; SELECT 1").await.unwrap();
    // The database is full (a1 + md5user's idle one): app's pool closes the idle one.
    a2.batch_execute("BEGIN; SELECT 1").await.unwrap();
    assert_eq!(cluster().backend_count("dblimit", "md5user"), 0);

    // Both slots are busy in app's pool: md5user's pool waits, then gets 57014 naming the limit.
    let err = m1.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err:?}");
    let text = error_text(&err);
    assert!(
        text.contains("max_db_connections (2) reached for database dblimit"),
        "{text}"
    );
    assert!(text.contains("query_wait_timeout"), "{text}");

    // a2's server goes idle: md5user's pool closes it to make room.
    a2.batch_execute("COMMIT").await.unwrap();
    let m1 = connect(&md5).await;
    m1.batch_execute("BEGIN; SELECT 1").await.unwrap();
    assert_eq!(backends("dblimit"), 2);
    assert_eq!(cluster().backend_count("dblimit", "md5user"), 1);

    // A waiter is served when a server of another pool comes back.
    let m2 = connect(&md5).await;
    let waiting = tokio::spawn(async move { value(&m2, "SELECT 'served'").await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    a1.batch_execute("COMMIT").await.unwrap();
    assert_eq!(waiting.await.unwrap(), "served");
    m1.batch_execute("COMMIT").await.unwrap();
    assert_eq!(value(&a2, "SELECT 'app again'").await, "app again");
    assert!(monitor.peak() <= 2, "max_db_connections = 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_user_connections_counts_every_database_of_a_user() {
    // app may hold 1 server in all (its own setting); md5user's own 3 overrides the pooler's 1.
    let users = "[users.app]\npassword = \"app\"\nmax_user_connections = 1\n\
                 [users.md5user]\npassword = \"md5pass\"\nmax_user_connections = 3\n";
    for db in ["ulimit1", "ulimit2"] {
        ensure_database(db);
    }
    let px = Pgmux::start(
        "auth_type = \"scram-sha-256\"\ndefault_pool_size = 5\nmax_user_connections = 1\nquery_wait_timeout = 0.5",
        &format!("{users}[databases.ulimit1]\nport = {{pg_port}}\n[databases.ulimit2]\nport = {{pg_port}}\n"),
    );
    // app's server in ulimit2 goes idle; ulimit1's pool closes it to open its own.
    let a2 = connect(&px.url("app", "app", "ulimit2")).await;
    assert_eq!(value(&a2, "SELECT 1").await, "1");
    let a1 = connect(&px.url("app", "app", "ulimit1")).await;
    a1.batch_execute("BEGIN; SELECT 1").await.unwrap();
    assert_eq!(cluster().backend_count("ulimit2", "app"), 0);
    let err = a2.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err:?}");
    let text = error_text(&err);
    assert!(text.contains("max_user_connections (1) reached for user app"), "{text}");

    // md5user's override lets it hold a server in both databases at once.
    let m1 = connect(&px.url("md5user", "md5pass", "ulimit1")).await;
    let m2 = connect(&px.url("md5user", "md5pass", "ulimit2")).await;
    m1.batch_execute("BEGIN; SELECT 1").await.unwrap();
    m2.batch_execute("BEGIN; SELECT 1").await.unwrap();
    m1.batch_execute("COMMIT").await.unwrap();
    m2.batch_execute("COMMIT").await.unwrap();

    // Once app's server in ulimit1 is idle, ulimit2's pool closes it and opens its own.
    a1.batch_execute("COMMIT").await.unwrap();
    let a2 = connect(&px.url("app", "app", "ulimit2")).await;
    assert_eq!(value(&a2, "SELECT 'moved'").await, "moved");
    assert_eq!(cluster().backend_count("ulimit1", "app"), 0);
    assert_eq!(cluster().backend_count("ulimit2", "app"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_database_pool_size_and_mode_and_per_user_pool_mode() {
    for db in ["small", "sess"] {
        ensure_database(db);
    }
    let px = Pgmux::start(
        "auth_type = \"scram-sha-256\"\ndefault_pool_size = 5\nquery_wait_timeout = 0.5",
        "[users.app]\npassword = \"app\"\n[users.md5user]\npassword = \"md5pass\"\npool_mode = \"statement\"\n\
         [databases.small]\nport = {pg_port}\npool_size = 1\n\
         [databases.sess]\nport = {pg_port}\npool_size = 1\npool_mode = \"session\"\n",
    );
    // pool_size = 1 on "small": a second transaction waits and times out.
    let a = connect(&px.url("app", "app", "small")).await;
    let b = connect(&px.url("app", "app", "small")).await;
    a.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let err = b.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err:?}");
    a.batch_execute("COMMIT").await.unwrap();

    // pool_mode = "session" on "sess": a client keeps its server between transactions, so a
    // second client of a pool of one waits even though the first is idle (at login: the
    // server is linked before the client is told its pid).
    let s1 = connect(&px.url("app", "app", "sess")).await;
    s1.batch_execute("CREATE TEMP TABLE mine(x int)").await.unwrap();
    assert_eq!(value(&s1, "SELECT count(*) FROM mine").await, "0");
    let err = try_connect(&px.url("app", "app", "sess")).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err:?}");

    // [users.md5user] pool_mode = "statement" applies to md5user only.
    let m = connect(&px.url("md5user", "md5pass", "small")).await;
    assert_eq!(value(&m, "SELECT 4").await, "4");
    let err = m.batch_execute("BEGIN").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("0A000"), "{err:?}");
    let a = connect(&px.url("app", "app", "small")).await;
    a.batch_execute("BEGIN; SELECT 1; COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_database_gives_each_name_its_own_pool() {
    for db in ["star1", "star2"] {
        ensure_database(db);
    }
    let px = Pgmux::start(
        "auth_type = \"scram-sha-256\"\ndefault_pool_size = 5\nquery_wait_timeout = 0.5",
        &format!("{USERS}[databases.\"*\"]\nport = {{pg_port}}\npool_size = 1\n"),
    );
    let one = connect(&px.url("app", "app", "star1")).await;
    one.batch_execute("BEGIN").await.unwrap();
    assert_eq!(value(&one, "SELECT current_database()").await, "star1");
    // star1's only server is busy; star2 has a pool (of one) of its own.
    let two = connect(&px.url("app", "app", "star2")).await;
    assert_eq!(value(&two, "SELECT current_database()").await, "star2");
    let other = connect(&px.url("app", "app", "star1")).await;
    let err = other.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(
        sqlstate(&err).as_deref(),
        Some("57014"),
        "the star1 pool has pool_size 1: {err:?}"
    );
    one.batch_execute("COMMIT").await.unwrap();
    assert_eq!(cluster().backend_count("star1", "app"), 1);
    assert_eq!(cluster().backend_count("star2", "app"), 1);
    // A name that does not exist on the server is the server's to refuse.
    let Err(err) = try_connect(&px.url("app", "app", "nosuchdb")).await else {
        panic!("a database the server does not have must be refused")
    };
    assert_eq!(sqlstate(&err).as_deref(), Some("3D000"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_cut_while_its_server_logs_in_gives_the_slots_back() {
    // Issue 23: a client that left while pgmux was logging in to a slow server left the
    // `opening` count (sv_login) and its max_db_connections slot taken, for good.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    // Accepts and never answers: every server login hangs.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().take(20).flatten() {
            held.push(stream);
        }
        std::thread::sleep(Duration::from_secs(60));
    });
    let px = Pgmux::start(
        "auth_type = \"scram-sha-256\"\nadmin_users = [\"admin\"]\nmax_db_connections = 2\n\
         client_login_timeout = 1\nserver_connect_timeout = 30",
        &format!("{USERS}[users.admin]\npassword = \"admin\"\n[databases.hangs]\nport = {port}\n"),
    );
    let url = px.url("app", "app", "hangs");
    for _ in 0..2 {
        let e = try_connect(&url)
            .await
            .err()
            .map(|e| error_text(&e))
            .unwrap_or_default();
        assert!(e.contains("client_login_timeout"), "{e}");
    }
    // Both logins were dropped with their clients: nothing is logging in, no slot is held.
    let console = connect(&px.url("admin", "admin", "pgbouncer")).await;
    let t0 = Instant::now();
    let sv_login = loop {
        let rows = console.simple_query("SHOW POOLS").await.unwrap();
        let n = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some("hangs") => {
                r.get("sv_login").map(str::to_owned)
            }
            _ => None,
        });
        if n.as_deref() == Some("0") || t0.elapsed() > Duration::from_secs(3) {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(sv_login.as_deref(), Some("0"));
    // A third client is not told the limit is reached: its own login times out the same way.
    let e = try_connect(&url)
        .await
        .err()
        .map(|e| error_text(&e))
        .unwrap_or_default();
    assert!(!e.contains("max_db_connections"), "{e}");
}
