//! deploy/grafana/pgmux.json queries only metrics pgmux exports: every `pgmux_*` name in its
//! panels' expressions is found in a real /metrics scrape of a pgmux with a routed database
//! (primary and replica), under a little traffic.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::*;

/// The JSON string values of every `"expr"` key, unescaped (`\"` and `\\` are all it holds).
fn exprs(json: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = json;
    while let Some(at) = rest.find("\"expr\"") {
        rest = &rest[at + 6..];
        let Some(open) = rest.find('"') else { break };
        let mut value = String::new();
        let mut chars = rest[open + 1..].char_indices();
        let mut end = rest.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => {
                    end = open + 1 + i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push(value);
        rest = &rest[end.min(rest.len())..];
    }
    out
}

/// The `pgmux_*` metric names in an expression.
fn names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            if word.starts_with("pgmux_") {
                out.push(std::mem::take(&mut word));
            }
            word.clear();
        }
    }
    out
}

fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_grafana_board_queries_exists() {
    let board = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/pgmux.json"))
        .expect("deploy/grafana/pgmux.json");
    let mut wanted: Vec<String> = exprs(&board).iter().flat_map(|e| names(e)).collect();
    wanted.sort();
    wanted.dedup();
    assert!(wanted.len() > 20, "too few metrics found in the board: {wanted:?}");

    let (primary, replica) = cluster_with_replica();
    routed_database("grafana");
    let metrics = free_port();
    let px = Pgmux::start_with(
        primary,
        Some(replica.port),
        "auth_type = \"scram-sha-256\"\nadmin_users = [\"admin\"]\n",
        &format!(
            "[users.app]\npassword = \"app\"\n[users.admin]\npassword = \"admin\"\n\
             [databases.grafana]\nport = {{pg_port}}\nreplicas = [\"127.0.0.1:{{replica_port}}\"]\n\
             read_write_split = true\nlag_check_interval = 0.2\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n"
        ),
    );
    // Traffic: reads (to the replica once it is up), a write, an error, the extended protocol.
    let client = app_client(&px, "grafana").await;
    let console = console(&px).await;
    wait_replica_ok(&console, &client, "grafana").await;
    client.batch_execute("BEGIN; SELECT 1; COMMIT").await.unwrap();
    client.query("SELECT $1::int", &[&1i32]).await.unwrap();
    assert!(client.batch_execute("SELECT * FROM no_such_table").await.is_err());
    px.signal("HUP");
    assert!(px.wait_for_log("configuration reloaded", Duration::from_secs(10)));

    let t0 = Instant::now();
    let missing = loop {
        let text = scrape(metrics).unwrap_or_default();
        let present: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let missing: Vec<&String> = wanted.iter().filter(|w| !present.contains(&w.as_str())).collect();
        if missing.is_empty() || t0.elapsed() > Duration::from_secs(10) {
            break missing.into_iter().cloned().collect::<Vec<_>>();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        missing.is_empty(),
        "the board queries metrics pgmux does not export: {missing:?}"
    );
}

#[test]
fn expressions_and_names_are_read_as_written() {
    let json = r#"{"targets": [{"expr": "sum by (le) (rate(pgmux_a_bucket{db=\"x\"}[5m]))"}, {"expr":"pgmux_b / pgmux_c_total"}]}"#;
    let e = exprs(json);
    assert_eq!(e.len(), 2);
    assert_eq!(names(&e[0]), ["pgmux_a_bucket"]);
    assert_eq!(names(&e[1]), ["pgmux_b", "pgmux_c_total"]);
}
