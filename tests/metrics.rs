//! The `[metrics] listen` endpoint: Prometheus text that follows the pool's state, /health,
//! 404s, and a taken address that does not stop pgmux.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};
use support::*;

const APP: &str = "[users.app]\npassword = \"app\"\n[users.admin]\npassword = \"admin\"\n";

fn pgmux(db: &str, metrics_port: u16) -> Pgmux {
    ensure_database(db);
    Pgmux::start(
        "auth_type = \"scram-sha-256\"\ndefault_pool_size = 1\nadmin_users = [\"admin\"]",
        &format!("{APP}[databases.{db}]\nport = {{pg_port}}\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"),
    )
}

/// An HTTP/1.0 GET: (status, body); None while nothing listens.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

type Samples = Vec<(String, Vec<(String, String)>, f64)>;

/// `name{k="v",...} value` lines (labels unescaped naively: the test's values are plain).
fn parse(text: &str) -> Samples {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value of {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').unwrap();
                let labels = inner
                    .split("\",")
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").unwrap();
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name, labels)
            }
            None => (series, Vec::new()),
        };
        out.push((name.to_owned(), labels, value));
    }
    out
}

/// The samples named `name` whose labels include all of `want`, in order.
fn all(samples: &Samples, name: &str, want: &[(&str, &str)]) -> Vec<f64> {
    samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| *v)
        .collect()
}

fn one(samples: &Samples, name: &str, want: &[(&str, &str)]) -> f64 {
    match all(samples, name, want)[..] {
        [v] => v,
        ref other => panic!("{name} {want:?}: {other:?}"),
    }
}

fn scrape(port: u16) -> Samples {
    let (status, body) = get(port, "/metrics").expect("metrics endpoint");
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    parse(&body)
}

/// Scrapes until `ok` holds (10 s), returning the samples that satisfied it.
fn scrape_until(port: u16, what: &str, ok: impl Fn(&Samples) -> bool) -> Samples {
    let t0 = Instant::now();
    loop {
        if get(port, "/health").is_some() {
            let s = scrape(port);
            if ok(&s) {
                return s;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                panic!("{what} never held; last scrape: {s:?}");
            }
        } else if t0.elapsed() > Duration::from_secs(10) {
            panic!("metrics endpoint never answered");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The row of `database` in a console SHOW, as a column-name lookup.
async fn console_row(console: &tokio_postgres::Client, show: &str, database: &str) -> impl Fn(&str) -> String {
    let messages = console.simple_query(show).await.unwrap();
    let row = messages
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some(database) => Some(r),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{show}: no row for {database}"));
    move |column: &str| row.get(column).unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_busy_pool() {
    let port = free_port();
    let px = pgmux("metrics1", port);
    let url = px.url("app", "app", "metrics1");
    let pool = [("database", "metrics1"), ("user", "app")];
    let holder = connect(&url).await;
    let waiters = [connect(&url).await, connect(&url).await];
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let mut tasks = Vec::new();
    for client in waiters {
        tasks.push(tokio::spawn(async move {
            client.simple_query("SELECT 1").await.unwrap();
            client
        }));
    }

    let waiting = [pool[0], pool[1], ("state", "waiting")];
    let s = tokio::task::spawn_blocking(move || {
        scrape_until(port, "2 waiting", |s| all(s, "pgmux_clients", &waiting) == [2.0])
    })
    .await
    .unwrap();
    assert_eq!(one(&s, "pgmux_servers", &[pool[0], pool[1], ("state", "active")]), 1.0);
    assert_eq!(one(&s, "pgmux_pool_size", &pool), 1.0);
    assert!(one(&s, "pgmux_client_max_wait_seconds", &pool) > 0.0);
    assert_eq!(one(&s, "pgmux_up", &[]), 1.0);
    assert_eq!(one(&s, "pgmux_clients_connected", &[]), 3.0);
    // The console reads the same state.
    let console = connect(&px.url("admin", "admin", "pgbouncer")).await;
    let row = console_row(&console, "SHOW POOLS", "metrics1").await;
    assert_eq!(row("cl_waiting"), "2");
    assert_eq!(
        row("sv_active"),
        one(&s, "pgmux_servers", &[pool[0], pool[1], ("state", "active")]).to_string()
    );
    assert_eq!(row("pool_size"), "1");

    holder.batch_execute("COMMIT").await.unwrap();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("waiter")
            .unwrap();
    }
    let s = tokio::task::spawn_blocking(move || {
        scrape_until(port, "3 transactions", |s| {
            all(s, "pgmux_transactions_total", &pool)
                .first()
                .is_some_and(|&n| n >= 3.0)
        })
    })
    .await
    .unwrap();
    assert!(one(&s, "pgmux_queries_total", &pool) >= 3.0);
    assert_eq!(one(&s, "pgmux_clients", &waiting), 0.0);
    assert!(one(&s, "pgmux_received_bytes_total", &pool) > 0.0);
    assert!(one(&s, "pgmux_sent_bytes_total", &pool) > 0.0);
    assert!(one(&s, "pgmux_wait_seconds_total", &pool) > 0.0);
    let count = one(&s, "pgmux_query_duration_seconds_count", &pool);
    assert!(count >= 3.0, "{count}");
    let buckets = all(&s, "pgmux_query_duration_seconds_bucket", &pool);
    assert_eq!(buckets.len(), 15, "14 bounds and +Inf");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(*buckets.last().unwrap(), count);
    assert!(one(&s, "pgmux_transaction_duration_seconds_count", &pool) >= 3.0);
    let totals = console_row(&console, "SHOW STATS_TOTALS", "metrics1").await;
    assert_eq!(
        totals("xact_count"),
        one(&s, "pgmux_transactions_total", &pool).to_string()
    );
    assert_eq!(totals("query_count"), one(&s, "pgmux_queries_total", &pool).to_string());
    assert_eq!(
        totals("bytes_sent"),
        one(&s, "pgmux_sent_bytes_total", &pool).to_string()
    );

    let (status, body) = get(port, "/health").unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(get(port, "/nope").unwrap().0, 404);

    // A reload (the file is unchanged, so it succeeds) is counted.
    assert_eq!(one(&s, "pgmux_config_reloads_total", &[("result", "ok")]), 0.0);
    assert_eq!(one(&s, "pgmux_config_last_reload_success", &[]), 1.0);
    px.signal("HUP");
    let s = tokio::task::spawn_blocking(move || {
        scrape_until(port, "a reload", |s| {
            all(s, "pgmux_config_reloads_total", &[("result", "ok")]) == [1.0]
        })
    })
    .await
    .unwrap();
    assert_eq!(one(&s, "pgmux_config_reloads_total", &[("result", "error")]), 0.0);
    assert!(one(&s, "pgmux_config_last_reload_timestamp_seconds", &[]) > 1.7e9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_metrics_address_does_not_stop_pgmux() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let px = pgmux("metrics2", port);
    let client = connect(&px.url("app", "app", "metrics2")).await;
    assert_eq!(value(&client, "SELECT 'up'").await, "up");
    assert!(
        px.wait_for_log("cannot serve metrics", Duration::from_secs(5)),
        "{}",
        px.log()
    );
}
