//! The dashboard's JSON (`/api/*` on the metrics listener) says what the console says (SHOW
//! POOLS, REPLICAS, BREAKERS, SLOW_QUERIES) after a little traffic through a routed database;
//! `[metrics] auth_users` refuses whoever is not one of them with their password (plain, md5,
//! SCRAM), but never /health; a reload turns the dashboard off; 500 pools are all listed, the
//! answer stays bounded, and (with chromium) the page shows all 500.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::*;

const OPS: Option<(&str, &str)> = Some(("ops", "ops-pw"));

async fn get(port: u16, path: &str, auth: Option<(&'static str, &'static str)>) -> HttpReply {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || http_get(port, &path, auth))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no answer from the metrics listener"))
}

async fn json(port: u16, name: &'static str, auth: Option<(&'static str, &'static str)>) -> Value {
    tokio::task::spawn_blocking(move || api(port, name, auth))
        .await
        .unwrap()
}

/// Polls /api/`name` until `ok` holds (20 s); returns the answer that satisfied it.
async fn json_until(port: u16, name: &'static str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let v = json(port, name, OPS).await;
        if ok(&v) {
            return v;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{what} never held: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pool<'a>(pools: &'a Value, database: &str, user: &str) -> Option<&'a Value> {
    pools["pools"]
        .as_array()?
        .iter()
        .find(|p| p["database"] == database && p["user"] == user)
}

const POOL_FIELDS: [&str; 17] = [
    "cl_active",
    "cl_waiting",
    "sv_active",
    "sv_idle",
    "sv_used",
    "sv_tested",
    "sv_login",
    "pool_size",
    "paused",
    "pool_mode",
    "load_balance_hosts",
    "query_p50_us",
    "query_p95_us",
    "query_p99_us",
    "query_max_us",
    "xact_p50_us",
    "xact_p99_us",
];

/// Each pool's POOL_FIELDS (and maxwait in µs) as the console prints them.
fn api_pools(v: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for p in v["pools"].as_array().expect("pools") {
        let mut fields: Vec<String> = POOL_FIELDS.iter().map(|f| as_console(&p[*f])).collect();
        fields.push(as_console(&p["maxwait_us"]));
        out.insert(
            format!("{}/{}", as_console(&p["database"]), as_console(&p["user"])),
            fields,
        );
    }
    out
}

fn console_pools(rows: &[Row]) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for r in rows {
        let mut fields: Vec<String> = POOL_FIELDS.iter().map(|f| r[*f].clone()).collect();
        let wait: u64 = r["maxwait"].parse::<u64>().unwrap() * 1_000_000 + r["maxwait_us"].parse::<u64>().unwrap();
        fields.push(wait.to_string());
        out.insert(format!("{}/{}", r["database"], r["user"]), fields);
    }
    out
}

const REPLICA_FIELDS: [&str; 9] = [
    "database",
    "host",
    "port",
    "role",
    "state",
    "replay_lsn",
    "lag_bytes",
    "reads_served",
    "excluded_reason",
];

fn api_replicas(v: &Value) -> Vec<Vec<String>> {
    let rows = v["replicas"].as_array().expect("replicas");
    rows.iter()
        .map(|r| {
            let mut fields: Vec<String> = REPLICA_FIELDS.iter().map(|f| as_console(&r[*f])).collect();
            fields.push(format!("{:.3}", r["lag_seconds"].as_f64().unwrap()));
            fields
        })
        .collect()
}

fn console_replicas(rows: &[Row]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| {
            let mut fields: Vec<String> = REPLICA_FIELDS.iter().map(|f| r[*f].clone()).collect();
            fields.push(r["lag_seconds"].clone());
            fields
        })
        .collect()
}

/// Reads the API, the console, the API again until both API reads agree (no stats period or
/// lag check ended in between), then the console must say the same.
async fn agree<T: PartialEq + std::fmt::Debug>(
    port: u16,
    console: &tokio_postgres::Client,
    name: &'static str,
    show: &str,
    from_api: impl Fn(&Value) -> T,
    from_console: impl Fn(&[Row]) -> T,
) {
    for _ in 0..20 {
        let before = from_api(&json(port, name, OPS).await);
        let rows = show_rows(console, show).await;
        let after = from_api(&json(port, name, OPS).await);
        if before == after {
            assert_eq!(before, from_console(&rows), "/api/{name} and {show} disagree");
            return;
        }
    }
    panic!("/api/{name} never stood still for one {show}");
}

fn users() -> String {
    let scram = postgres_protocol::password::scram_sha_256(b"sops-pw");
    let md5 = postgres_protocol::password::md5(b"mops-pw", "mops");
    format!(
        "[users.app]\npassword = \"app\"\n[users.admin]\npassword = \"admin\"\n\
         [users.ops]\npassword = \"ops-pw\"\n[users.sops]\npassword = \"{scram}\"\n\
         [users.mops]\npassword = \"{md5}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_says_what_the_console_says() {
    let (primary, replica) = cluster_with_replica();
    routed_database("dash1");
    let mport = free_port();
    let pooler = "auth_type = \"scram-sha-256\"\nadmin_users = [\"admin\"]\nstats_period = 3\n\
                  slow_query_threshold = 0.05\n";
    let databases = "[databases.dash1]\nhost = \"127.0.0.1\"\nport = {pg_port}\n\
                     replicas = [\"127.0.0.1:{replica_port}\"]\nread_write_split = true\n";
    let metrics = |extra: &str| format!("[metrics]\nlisten = \"127.0.0.1:{mport}\"\n{extra}");
    let rest = |extra: &str| format!("{}{databases}{}", users(), metrics(extra));
    let auth_users = "auth_users = [\"ops\", \"sops\", \"mops\"]\n";
    let px = Pgmux::start_with(primary, Some(replica.port), pooler, &rest(auth_users));

    // Who may read.
    assert_eq!(get(mport, "/health", None).await.status, 200, "/health stays open");
    for path in ["/dashboard", "/api/summary", "/api/pools", "/metrics", "/nope"] {
        let reply = get(mport, path, None).await;
        assert_eq!(reply.status, 401, "{path} without credentials: {reply:?}");
        let challenge = reply.header("www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Basic realm=\"pgmux\""), "{reply:?}");
    }
    for refused in [
        ("ops", "wrong"),
        ("app", "app"),
        ("mops", "ops-pw"),
        ("nobody", "x"),
        ("sops", ""),
    ] {
        let reply = get(mport, "/api/summary", Some(refused)).await;
        assert_eq!(reply.status, 401, "{refused:?}: {reply:?}");
    }
    for ok in [("ops", "ops-pw"), ("sops", "sops-pw"), ("mops", "mops-pw")] {
        assert_eq!(get(mport, "/api/summary", Some(ok)).await.status, 200, "{ok:?}");
    }
    assert_eq!(get(mport, "/metrics", OPS).await.status, 200);
    let page = get(mport, "/dashboard", OPS).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(page
        .header("content-security-policy")
        .is_some_and(|c| c.contains("script-src 'self'")));
    assert!(page.body.contains("/dashboard/app.js"), "{}", page.body);
    let script = get(mport, "/dashboard/app.js", OPS).await;
    assert_eq!(
        (script.status, script.header("content-type")),
        (200, Some("text/javascript; charset=utf-8"))
    );
    assert_eq!(get(mport, "/api/nope", OPS).await.status, 404);

    // A little traffic: a write, reads (on the replica), and a slow query whose text needs
    // escaping in JSON.
    let console = console(&px).await;
    let app = app_client(&px, "dash1").await;
    wait_replica_ok(&console, &app, "dash1").await;
    app.batch_execute("INSERT INTO items VALUES (1, 'x') ON CONFLICT (id) DO NOTHING")
        .await
        .unwrap();
    for _ in 0..5 {
        first(&app, "SELECT count(*) FROM items").await;
    }
    let slow_sql = "SELECT pg_sleep(0.06) AS \"quote\"\"d\nline é </script>\"";
    app.simple_query(slow_sql).await.unwrap();
    // A stats period with the traffic in it.
    let pools = json_until(mport, "pools", "a stats period with transactions", |v| {
        pool(v, "dash1", "app").is_some_and(|p| p["xact_p50_us"].as_u64() > Some(0))
    })
    .await;
    assert_eq!(pools["truncated"], false);
    assert_eq!(
        pools["pools_total"].as_u64(),
        Some(pools["pools"].as_array().unwrap().len() as u64)
    );
    agree(mport, &console, "pools", "SHOW POOLS", api_pools, console_pools).await;
    agree(
        mport,
        &console,
        "replicas",
        "SHOW REPLICAS",
        api_replicas,
        console_replicas,
    )
    .await;

    // The series: transactions after the first sample show as a rate.
    json_until(mport, "pools", "a first sample", |v| {
        pool(v, "dash1", "app").is_some_and(|p| p["history"]["t"].as_array().is_some_and(|t| !t.is_empty()))
    })
    .await;
    // Writes: reads run on the replica's pool, which SHOW POOLS does not list.
    for _ in 0..5 {
        app.batch_execute("UPDATE items SET v = 'y' WHERE id = 1")
            .await
            .unwrap();
    }
    let pools = json_until(mport, "pools", "a sample with transactions", |v| {
        let tps = &pool(v, "dash1", "app").unwrap()["history"]["tps"];
        tps.as_array().is_some_and(|s| s.iter().any(|x| x.as_f64() > Some(0.0)))
    })
    .await;
    let history = &pool(&pools, "dash1", "app").unwrap()["history"];
    let t = history["t"].as_array().unwrap();
    assert!(
        t.len() <= 150 && t.windows(2).all(|w| w[0].as_u64() <= w[1].as_u64()),
        "{history}"
    );
    for (name, series) in history.as_object().unwrap() {
        assert_eq!(series.as_array().map(Vec::len), Some(t.len()), "{name}: {history}");
    }
    let replicas = json(mport, "replicas", OPS).await;
    let lag = &replicas["replicas"][0]["history"];
    assert!(lag["lag_bytes"].as_array().is_some_and(|s| !s.is_empty()), "{replicas}");

    // Slow queries: the console's text, decoded back from JSON.
    let slow = json(mport, "slow_queries", OPS).await;
    let rows = show_rows(&console, "SHOW SLOW_QUERIES").await;
    let row = rows
        .iter()
        .find(|r| r["query"].contains("pg_sleep"))
        .expect("slow query in SHOW");
    let item = slow["slow_queries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["query"].as_str().is_some_and(|s| s.contains("pg_sleep")))
        .unwrap_or_else(|| panic!("no slow query in {slow}"));
    assert_eq!(item["query"].as_str(), Some(row["query"].as_str()));
    assert!(row["query"].contains("\"quote\"\"d\nline é </script>\""), "{row:?}");
    for f in ["count", "max_us", "mean_us", "last_seen", "database", "user"] {
        assert_eq!(as_console(&item[f]), row[f], "{f}");
    }

    // Breakers and the summary.
    let breakers = json(mport, "breakers", OPS).await;
    let fields = [
        "host",
        "port",
        "role",
        "state",
        "consecutive_failures",
        "refused_clients",
        "last_error",
    ];
    let from_api: Vec<Vec<String>> = breakers["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| fields.iter().map(|f| as_console(&b[*f])).collect())
        .collect();
    let rows = show_rows(&console, "SHOW BREAKERS").await;
    let from_console: Vec<Vec<String>> = rows
        .iter()
        .map(|r| fields.iter().map(|f| r[*f].clone()).collect())
        .collect();
    assert!(!from_api.is_empty());
    assert_eq!(from_api, from_console);
    let summary = json(mport, "summary", OPS).await;
    let version = value(&console, "SHOW VERSION").await;
    assert_eq!(format!("pgmux {}", summary["version"].as_str().unwrap()), version);
    assert_eq!(
        summary["pools"].as_u64(),
        Some(show_rows(&console, "SHOW POOLS").await.len() as u64)
    );
    assert!(summary["clients"].as_u64() >= Some(1), "{summary}");
    assert_eq!(
        (summary["reloads_ok"].as_u64(), summary["draining"].as_bool()),
        (Some(0), Some(false))
    );

    // A reload turns the dashboard off (and auth with it): /metrics stays.
    px.write_config(pooler, &rest("dashboard = false\n"));
    px.signal("HUP");
    let t0 = Instant::now();
    while get(mport, "/api/summary", None).await.status != 404 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the dashboard stayed on after the reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(mport, "/dashboard", None).await.status, 404);
    assert_eq!(get(mport, "/metrics", None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_pools() {
    const POOLS: usize = 500;
    ensure_database("dash500");
    let mport = free_port();
    // One database entry per pool, all on one PostgreSQL database; idle servers close at once,
    // so that the 500 first logins (each opens a server) stay well under max_connections.
    let mut rest = String::from("[users.app]\npassword = \"app\"\n[users.admin]\npassword = \"admin\"\n");
    for i in 1..=POOLS {
        rest.push_str(&format!("[databases.p{i}]\nport = {{pg_port}}\ndbname = \"dash500\"\n"));
    }
    rest.push_str(&format!("[metrics]\nlisten = \"127.0.0.1:{mport}\"\n"));
    let pooler = "auth_type = \"scram-sha-256\"\nadmin_users = [\"admin\"]\nmax_client_conn = 1000\n\
                  default_pool_size = 1\nserver_idle_timeout = 0.2\n";
    let px = Pgmux::start(pooler, &rest);
    let mut clients = Vec::new();
    for batch in (1..=POOLS).collect::<Vec<_>>().chunks(25) {
        let logins = batch.iter().map(|i| {
            let url = px.url("app", "app", &format!("p{i}"));
            tokio::spawn(async move { connect(&url).await })
        });
        for login in logins.collect::<Vec<_>>() {
            clients.push(login.await.unwrap());
        }
        let t0 = Instant::now();
        while tokio::task::spawn_blocking(|| cluster().backend_count("dash500", "app"))
            .await
            .unwrap()
            > 100
        {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "idle servers of dash500 not closing"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let reply = get(mport, "/api/pools", None).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.body.len() < 1_000_000,
        "/api/pools of 500 pools: {} bytes",
        reply.body.len()
    );
    let pools: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        (pools["pools_total"].as_u64(), pools["truncated"].as_bool()),
        (Some(POOLS as u64), Some(false))
    );
    let list = pools["pools"].as_array().unwrap();
    assert_eq!(list.len(), POOLS);
    let charted = list.iter().filter(|p| !p["history"].is_null()).count();
    assert!(charted <= 12, "{charted} pools with series");
    let console = connect(&px.url("admin", "admin", "pgbouncer")).await;
    let rows = show_rows(&console, "SHOW POOLS").await;
    assert_eq!(rows.len(), POOLS);
    let from_api: BTreeMap<String, (String, String)> = list
        .iter()
        .map(|p| {
            let name = format!("{}/{}", as_console(&p["database"]), as_console(&p["user"]));
            (name, (as_console(&p["cl_active"]), as_console(&p["cl_waiting"])))
        })
        .collect();
    let from_console: BTreeMap<String, (String, String)> = rows
        .iter()
        .map(|r| {
            let name = format!("{}/{}", r["database"], r["user"]);
            (name, (r["cl_active"].clone(), r["cl_waiting"].clone()))
        })
        .collect();
    assert_eq!(from_api, from_console);
    assert!(from_api.values().all(|c| c == &("1".to_owned(), "0".to_owned())));
    assert_eq!(json(mport, "summary", None).await["pools"].as_u64(), Some(POOLS as u64));

    // The page lists every pool.
    if chromium().is_none() {
        eprintln!("SKIPPED the browser half: chromium is not installed (scripts/browser-setup.sh installs it)");
        return;
    }
    let url = format!("http://127.0.0.1:{mport}/dashboard");
    let page = tokio::task::spawn_blocking(move || load(&url, Duration::from_secs(3), (1400, 1000), None))
        .await
        .unwrap();
    assert!(page.console.is_empty(), "console messages: {:#?}", page.console);
    let updates: u32 = attr(&page.tag_of("updated").unwrap(), "data-updates")
        .unwrap()
        .parse()
        .unwrap();
    assert!(updates >= 1, "the page never updated");
    let errors = attr(&page.tag_of("errors").unwrap(), "data-count");
    assert_eq!(errors.as_deref(), Some("0"));
    let shown = page.rows("pool");
    assert_eq!(shown.len(), POOLS);
    for (name, cells) in shown {
        assert_eq!(cells["cl_active"].1, "1", "{name}");
    }
    drop(clients);
}
