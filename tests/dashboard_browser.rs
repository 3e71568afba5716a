//! The dashboard in a real browser (Debian's chromium, headless; scripts/browser-setup.sh
//! installs it): under a running pgbench through a routed database, the page updates itself,
//! shows what SHOW POOLS and SHOW REPLICAS show, logs nothing to the console, and leaves a
//! screenshot in `target/dashboard/under-pgbench.png`. Without chromium it says it skips.

mod support;

use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::*;

const CLIENTS: &str = "4";

/// target/dashboard/, next to the test binaries.
fn artifacts() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(&tmp).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls /api/`name` until `ok` holds (30 s).
fn api_until(port: u16, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let v = api(port, name, None);
        if ok(&v) {
            return v;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{what} never held: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn row<'a>(rows: &'a [Row], key: &str, value: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.get(key).is_some_and(|v| v == value))
        .unwrap_or_else(|| panic!("no row with {key} = {value}: {rows:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_under_pgbench() {
    if chromium().is_none() {
        eprintln!("SKIPPED: chromium is not installed; scripts/browser-setup.sh (run by scripts/test.sh) installs it");
        return;
    }
    let (primary, replica) = cluster_with_replica();
    primary.pgbench_init();
    let t0 = Instant::now();
    while replica.psql(
        "bench",
        "SELECT count(*) FROM pg_class WHERE relname = 'pgbench_accounts'",
    ) != "1"
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "pgbench tables not on the replica"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mport = free_port();
    let pooler = "auth_type = \"scram-sha-256\"\nadmin_users = [\"admin\"]\ndefault_pool_size = 5\nstats_period = 2\n";
    let rest = format!(
        "[users.app]\npassword = \"app\"\n[users.admin]\npassword = \"admin\"\n\
         [databases.bench]\nport = {{pg_port}}\nreplicas = [\"127.0.0.1:{{replica_port}}\"]\n\
         read_write_split = true\nread_your_writes = false\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n"
    );
    let px = Pgmux::start_with(primary, Some(replica.port), pooler, &rest);
    let console = console(&px).await;

    // TPC-B transactions (the primary) and single selects (the replica), for 20 s.
    let port = px.port.to_string();
    let argv: Vec<String> = [
        "-n",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        "app",
        "-c",
        CLIENTS,
        "-j",
        "2",
        "-T",
        "20",
        "-b",
        "tpcb-like@1",
        "-b",
        "select-only@4",
        "bench",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let pgbench = std::thread::spawn(move || {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let env = [("PGPASSWORD", "app"), ("PGSSLMODE", "disable")];
        run_cmd("pgbench", &argv, &env, Duration::from_secs(60))
    });
    tokio::task::spawn_blocking(move || {
        api_until(mport, "pools", "pgbench's clients and transactions in a sample", |v| {
            let pools = v["pools"].as_array().into_iter().flatten();
            pools
                .filter(|p| p["database"] == "bench")
                .any(|p| p["cl_active"] == 4 && p["tps"].as_f64() > Some(0.0))
        });
        api_until(mport, "replicas", "reads on the replica", |v| {
            v["replicas"][0]["reads_served"].as_u64() > Some(0)
        });
    })
    .await
    .unwrap();
    let pools_before = show_rows(&console, "SHOW POOLS").await;
    let replicas_before = show_rows(&console, "SHOW REPLICAS").await;
    let shot = artifacts().join("under-pgbench.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!("http://127.0.0.1:{mport}/dashboard");
    let page = tokio::task::spawn_blocking(move || load(&url, Duration::from_secs(4), (1400, 1500), Some(&shot)));
    let page = page.await.unwrap();
    let shot = artifacts().join("under-pgbench.png");
    let pools_after = show_rows(&console, "SHOW POOLS").await;
    let replicas_after = show_rows(&console, "SHOW REPLICAS").await;

    assert!(page.console.is_empty(), "the page logged: {:#?}", page.console);
    assert_eq!(
        attr(&page.tag_of("errors").unwrap(), "data-count").as_deref(),
        Some("0")
    );
    let updates: u32 = attr(&page.tag_of("updated").unwrap(), "data-updates")
        .unwrap()
        .parse()
        .unwrap();
    assert!(updates >= 2, "{updates} updates in 4 s of page time");

    // The pool: what does not move under a steady pgbench is what the console shows.
    let pools = page.rows("pool");
    let (_, cells) = pools
        .iter()
        .find(|(k, _)| k == "bench/app")
        .expect("bench/app on the page");
    let shown = |k: &str| cells.get(k).unwrap_or_else(|| panic!("no {k} cell: {cells:?}")).clone();
    for k in ["cl_active", "cl_waiting", "pool_size", "pool_mode"] {
        let (before, after) = (
            &row(&pools_before, "database", "bench")[k],
            &row(&pools_after, "database", "bench")[k],
        );
        assert_eq!(before, after, "{k} moved during the page load");
        assert_eq!(
            &shown(k).1,
            before,
            "{k}: the page shows {:?}, SHOW POOLS {before}",
            shown(k)
        );
    }
    assert_eq!(shown("cl_active").1, CLIENTS);
    assert_eq!(shown("state").1, "active");
    let servers: u64 = ["sv_active", "sv_idle", "sv_used"]
        .iter()
        .map(|k| shown(k).0.parse::<u64>().unwrap())
        .sum();
    assert!((1..=5).contains(&servers), "{servers} servers for a pool of 5");
    assert!(shown("tps").0.parse::<f64>().unwrap() > 0.0, "{:?}", shown("tps"));
    assert!(
        shown("xact_p99_us").0.parse::<u64>().unwrap() > 0,
        "{:?}",
        shown("xact_p99_us")
    );
    assert!(
        page.dom.contains("class=\"card\" data-pool=\"bench/app\""),
        "no charts for bench/app"
    );
    assert!(page.dom.contains("<polyline points=\""), "no chart lines");

    // The replica: role and state as the console says, reads served between its two reads.
    let replicas = page.rows("replica");
    assert_eq!(replicas.len(), 1, "{replicas:?}");
    let (_, cells) = &replicas[0];
    let (before, after) = (
        row(&replicas_before, "database", "bench"),
        row(&replicas_after, "database", "bench"),
    );
    for k in ["role", "state"] {
        assert_eq!(cells[k].0, before[k], "{k}");
        assert_eq!(before[k], after[k], "{k}");
    }
    assert_eq!(cells["role"].0, "replica");
    let reads: u64 = cells["reads_served"].0.parse().unwrap();
    let (low, high): (u64, u64) = (
        before["reads_served"].parse().unwrap(),
        after["reads_served"].parse().unwrap(),
    );
    assert!(
        low <= reads && reads <= high,
        "page {reads}, SHOW REPLICAS {low} then {high}"
    );
    assert!(reads > 0);

    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", shot.display()));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
    eprintln!("screenshot: {}", shot.display());

    let (code, out, err) = tokio::task::spawn_blocking(move || pgbench.join().unwrap())
        .await
        .unwrap();
    assert_eq!(code, 0, "pgbench:\n{out}\n{err}");
}
