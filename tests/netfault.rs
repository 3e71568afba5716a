//! Real network faults between pgmux, PostgreSQL and clients.
//!
//! # Topology
//!
//! ```text
//!   root namespace: this test process (tokio-postgres clients, pgbench, psql)
//!        │ 10.213.S.1 on bridge nf<pid>b
//!        ├── veth ── pgmf<pid>x  10.213.S.2  pgmux (config per test, ports 6432+n, metrics 9930+n)
//!        ├── veth ── pgmf<pid>p  10.213.S.3  PostgreSQL 15 primary :5432
//!        ├── veth ── pgmf<pid>r  10.213.S.4  PostgreSQL 15 replica :5433, streaming from .3
//!        └── veth ── pgmf<pid>c  10.213.S.5  a client of its own (scenario 6, client side)
//! ```
//!
//! One topology per test binary (tests/support/netns.rs), set up on first use and torn down by
//! a watchdog when the process exits; stale namespaces of dead runs are swept at start. Every
//! test starts its own pgmux in `pgmf<pid>x` and injects its faults as nftables tables inside a
//! namespace, matched by peer address, so a fault between pgmux and the primary never touches
//! replication (replica ↔ primary) or the test's own psql (unix socket). The fault tests hold
//! `FAULTS` for their whole run (they share the servers; `cargo test` runs them in threads).
//!
//! Without root or without working `ip netns add`, every test prints `SKIP` and passes.
//!
//! # Scenarios (each prints `FAULT-RESULT scenario=N injected="..." detect=..s recover=..s lost_committed=N`)
//!
//! 1. black hole (nft drop both ways) between pgmux and the primary under `pgbench -S -c 10`
//!    plus tokio-postgres readers and writers: every call ends within its timeouts, the
//!    primary's breaker opens, reads go on on the replica, pgmux's RSS and threads stay bounded.
//! 2. black hole between pgmux and the replica while a read (`SELECT pg_sleep(1), ...`) runs
//!    there: the read ends (answer from the primary or a clear error) within the timeouts, later
//!    reads go to the primary, and back to the replica once healed.
//! 3. slow, lossy link: 50 ms ± 20 ms delay each way and 2 % loss between pgmux and the
//!    primary under `pgbench -S -c 50`: no failed client, no leaked server or client. The kernel
//!    here has no `tc netem`, so the delay comes from a userspace delaying TCP relay running in
//!    the primary's namespace (netns::DelayRelay); the loss is `nft numgen random`.
//! 4. partition healed: after a black hole the breaker closes by itself, the pool refills to
//!    `min_pool_size` and SHOW POOLS, /metrics and pg_stat_activity agree.
//! 5. a server that accepts TCP and never speaks (a listener in the primary's namespace): its
//!    clients get an error within `server_connect_timeout`, another database is unaffected.
//! 6. peers that vanish without a FIN: the primary black-holed while its connection is idle
//!    and mid-transaction, and a client in its own namespace whose link goes dead: found dead by
//!    TCP keepalive / `tcp_user_timeout`, the pool slot freed.
//! 7. bank transfers (no committed transfer lost, no phantom, the total unchanged) with 5 %
//!    loss on the link to the primary while it is killed (`pg_ctl stop -m immediate`) and
//!    restarted.
//!
//! # Running
//!
//! `scripts/test.sh --test netfault` (as root; installs iproute2 and nftables when missing), or
//! `cargo test --test netfault -- --nocapture` to see the FAULT-RESULT lines.

#[path = "support/netns.rs"]
mod netns;
mod support;

use netns::{net, Net, NsPgmux, Role, SilentServer, PRIMARY_PORT, REPLICA_PORT};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::run_cmd;
use tokio_postgres::SimpleQueryMessage;

/// Serialises the tests: they share the servers and inject faults on shared links.
static FAULTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const USERS: &str = "[users.app]\npassword = \"app\"\n[users.admin]\npassword = \"admin\"\n";

/// The topology, or None (after printing why) when this machine cannot make namespaces.
fn topology(test: &str) -> Option<&'static Net> {
    match net() {
        Ok(n) => Some(n),
        Err(why) => {
            println!("SKIP {test}: {why}");
            None
        }
    }
}

fn fault_result(n: u32, injected: &str, detect: Option<Duration>, recover: Option<Duration>, lost: usize) {
    let f = |d: Option<Duration>| {
        d.map(|d| format!("{:.2}s", d.as_secs_f64()))
            .unwrap_or_else(|| "n/a".into())
    };
    println!(
        "FAULT-RESULT scenario={n} injected=\"{injected}\" detect={} recover={} lost_committed={lost}",
        f(detect),
        f(recover)
    );
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}", db.code().code(), db.message()),
        None => format!("{e}"),
    }
}

fn first_value(msgs: &[SimpleQueryMessage]) -> Option<String> {
    msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    })
}

/// Connect with a hard cap; the error text otherwise.
async fn try_client(url: &str, limit: Duration) -> Result<tokio_postgres::Client, String> {
    match tokio::time::timeout(limit, tokio_postgres::connect(url, tokio_postgres::NoTls)).await {
        Ok(Ok((client, conn))) => {
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(client)
        }
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err(format!("connect timed out after {limit:?}")),
    }
}

async fn query(c: &tokio_postgres::Client, sql: &str, limit: Duration) -> Result<String, String> {
    match tokio::time::timeout(limit, c.simple_query(sql)).await {
        Ok(Ok(msgs)) => Ok(first_value(&msgs).unwrap_or_default()),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err(format!("timed out after {limit:?}")),
    }
}

/// Connect, run `sql`, give the first value; with how long it took.
async fn attempt(url: &str, sql: &str, limit: Duration) -> (Duration, Result<String, String>) {
    let t0 = Instant::now();
    let res = async {
        let c = try_client(url, limit).await?;
        query(&c, sql, limit.saturating_sub(t0.elapsed())).await
    }
    .await;
    (t0.elapsed(), res)
}

/// Console command rows as column -> value maps (NULL as "").
async fn show(px: &NsPgmux, what: &str) -> Vec<HashMap<String, String>> {
    let lim = Duration::from_secs(10);
    let console = try_client(&px.url("admin", "admin", "pgbouncer"), lim)
        .await
        .unwrap_or_else(|e| panic!("console: {e}"));
    let msgs = tokio::time::timeout(lim, console.simple_query(what))
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                row.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_owned(), row.get(i).unwrap_or("").to_owned()))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// SHOW BREAKERS state of ip:port ("" when there is no row yet).
async fn breaker_state(px: &NsPgmux, ip: &str, port: u16) -> String {
    show(px, "SHOW BREAKERS")
        .await
        .into_iter()
        .find(|r| r["host"] == ip && r["port"] == port.to_string())
        .map(|r| r["state"].clone())
        .unwrap_or_default()
}

/// Polls `check` every 50 ms until it gives Some, for at most `limit`; (elapsed, value).
async fn poll<T, F: std::future::Future<Output = Option<T>>>(
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> Option<(Duration, T)> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Some((t0.elapsed(), v));
        }
        if t0.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Blocking work (commands, psql) off the test's runtime threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// Sum of a pool's server columns in a SHOW POOLS row.
fn pool_servers(row: &HashMap<String, String>) -> i64 {
    ["sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"]
        .iter()
        .map(|k| row.get(*k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0))
        .sum()
}

/// Sum of `pgmux_servers{database="db",user="app",state=*}` in a /metrics text.
fn metric_servers(text: &str, db: &str) -> i64 {
    text.lines()
        .filter(|l| {
            l.starts_with("pgmux_servers{") && l.contains(&format!("database=\"{db}\"")) && l.contains("user=\"app\"")
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum::<f64>() as i64
}

/// Collects failed checks so that one run reports every broken property, not just the first.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let w = what();
            println!("CHECK FAILED: {w}");
            self.0.push(w);
        }
    }

    fn finish(self, scenario: &str) {
        assert!(
            self.0.is_empty(),
            "{scenario}: {} check(s) failed:\n- {}",
            self.0.len(),
            self.0.join("\n- ")
        );
    }
}

/// What one load client saw.
#[derive(Default, Debug)]
struct LoadStats {
    calls: u64,
    ok: u64,
    /// Error kinds (digits masked) and counts.
    errors: BTreeMap<String, u64>,
    max: Duration,
    /// Calls that took longer than the limit they had to meet.
    late: Vec<String>,
}

fn kind(e: &str) -> String {
    e.chars()
        .take(90)
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect()
}

/// A client that runs `sqls` in turn, each call (connect included) timed against `bound`,
/// reconnecting after errors, until `stop`.
async fn load_client(url: String, sqls: Vec<&'static str>, bound: Duration, stop: Arc<AtomicBool>) -> LoadStats {
    let mut st = LoadStats::default();
    let cap = bound * 3; // a call that hangs longer is cut off (and counted late)
    let mut client: Option<tokio_postgres::Client> = None;
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let sql = sqls[i % sqls.len()];
        i += 1;
        let t0 = Instant::now();
        let res = async {
            if client.is_none() {
                client = Some(try_client(&url, cap).await?);
            }
            query(client.as_ref().unwrap(), sql, cap.saturating_sub(t0.elapsed())).await
        }
        .await;
        let took = t0.elapsed();
        st.calls += 1;
        st.max = st.max.max(took);
        if took > bound {
            st.late.push(format!("{sql} took {took:?}: {res:?}"));
        }
        match res {
            Ok(_) => st.ok += 1,
            Err(e) => {
                *st.errors.entry(kind(&e)).or_default() += 1;
                client = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    st
}

/// pgbench -n through pgmux at `ip`:`port` to database `db` as app.
fn pgbench(ip: &str, port: u16, db: &str, args: &[&str], timeout: Duration) -> (i32, String, String) {
    let port = port.to_string();
    let mut argv = vec!["-h", ip, "-p", &port, "-U", "app", "-n"];
    argv.extend(args);
    argv.push(db);
    run_cmd("pgbench", &argv, &[("PGPASSWORD", "app")], timeout)
}

/// "number of failed transactions: N" (0 when pgbench does not print it) and aborted clients.
fn pgbench_failures(out: &str, err: &str) -> (u64, u64) {
    let failed = out
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let aborted = err.lines().filter(|l| l.contains("aborted in command")).count() as u64;
    (failed, aborted)
}

/// The common pooler keys: SCRAM, the console, short timeouts.
fn pooler(extra: &str) -> String {
    format!(
        "auth_type = \"scram-sha-256\"\nadmin_users = [\"admin\"]\nserver_connect_timeout = 2\n\
         query_timeout = 3\nquery_wait_timeout = 3\nserver_login_retry = 0\n{extra}"
    )
}

/// `[databases.NAME]` on the primary, dbname bench, with the replica for reads when `split`.
fn database(net: &Net, name: &str, split: bool, extra: &str) -> String {
    let mut s = format!(
        "[databases.{name}]\ndbname = \"bench\"\nhost = \"{}\"\nport = {PRIMARY_PORT}\n",
        net.ip(Role::Primary)
    );
    if split {
        s.push_str(&format!(
            "replicas = [\"{}:{REPLICA_PORT}\"]\nread_write_split = true\nlag_check_interval = 0.5\n",
            net.ip(Role::Replica)
        ));
    }
    s.push_str(extra);
    s.push('\n');
    s
}

/// Waits (10 s) until reads of `db` run on the replica.
async fn wait_reads_on_replica(px: &NsPgmux, db: &str) -> Duration {
    let url = px.url("app", "app", db);
    let lim = Duration::from_secs(5);
    let found = poll(Duration::from_secs(10), || {
        let url = url.clone();
        async move {
            let (_, r) = attempt(&url, "SELECT pg_is_in_recovery()", lim).await;
            (r.as_deref() == Ok("t")).then_some(())
        }
    })
    .await;
    found.expect("reads never went to the replica").0
}

// ---------------------------------------------------------------------------------------------

/// Scenario 1: the primary black-holed under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_blackholed_primary_under_load() {
    let Some(net) = topology("s1") else { return };
    let _serial = FAULTS.lock().await;
    let px = NsPgmux::start(
        net,
        &pooler("default_pool_size = 20\nmin_pool_size = 2"),
        &format!(
            "{USERS}{}[breaker]\nfailure_threshold = 3\nopen_timeout = 2\n",
            database(net, "s1", true, "")
        ),
    );
    wait_reads_on_replica(&px, "s1").await;
    let url = px.url("app", "app", "s1");
    // A call may wait for a server (query_wait_timeout 3) whose connect times out (2), or run
    // into query_timeout (3) plus the cancel's connect (2): 3 + 3 + 2, plus 2 s of margin.
    let bound = Duration::from_secs(10);
    let (rss0, thr0) = px.rss_threads();

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for i in 0..4 {
        let sqls = if i % 2 == 0 {
            vec!["SELECT pg_is_in_recovery()"]
        } else {
            vec![
                "UPDATE pgbench_branches SET bbalance = bbalance WHERE bid = 1",
                "SELECT 1",
            ]
        };
        clients.push(tokio::spawn(load_client(url.clone(), sqls, bound, stop.clone())));
    }
    let bench = {
        let (ip, port) = (px.ip.clone(), px.port);
        tokio::task::spawn_blocking(move || {
            let args = ["-S", "-c", "10", "-j", "2", "-T", "14"];
            let t0 = Instant::now();
            let r = pgbench(&ip, port, "s1", &args, Duration::from_secs(45));
            (t0.elapsed(), r)
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    let primary_ip = net.ip(Role::Primary);
    let fault = net.blackhole(Role::Pgmux, &primary_ip);
    let injected = Instant::now();
    println!("s1: {} injected", fault.what);
    // Fresh writers need new server connections: their connect timeouts open the breaker.
    let opened = poll(Duration::from_secs(15), || {
        let (url, ip, px) = (url.clone(), primary_ip.clone(), &px);
        async move {
            if breaker_state(px, &ip, PRIMARY_PORT).await == "open" {
                return Some(());
            }
            let w = "UPDATE pgbench_branches SET bbalance = bbalance WHERE bid = 1";
            let (t, r) = attempt(&url, w, bound).await;
            println!("s1: write during the fault: {r:?} after {t:?}");
            None
        }
    })
    .await;
    let detect = opened.as_ref().map(|_| injected.elapsed());
    println!("s1: primary breaker open after {detect:?}");
    // Reads go on on the replica while the primary is unreachable.
    let mut reads = Vec::new();
    for _ in 0..5 {
        reads.push(attempt(&url, "SELECT pg_is_in_recovery()", Duration::from_secs(5)).await);
    }
    let (rss1, thr1) = px.rss_threads();
    let hold = Duration::from_secs(7).saturating_sub(injected.elapsed());
    tokio::time::sleep(hold).await;
    let (rss2, thr2) = px.rss_threads();
    drop(fault);
    let healed = Instant::now();
    let write = "UPDATE pgbench_branches SET bbalance = bbalance WHERE bid = 1 RETURNING 'w'";
    let recovered = poll(Duration::from_secs(15), || async {
        (attempt(&url, write, Duration::from_secs(5)).await.1.as_deref() == Ok("w")).then_some(())
    })
    .await;
    let recover = recovered.map(|_| healed.elapsed());
    println!("s1: writes back {recover:?} after the heal");

    let (bench_took, (code, out, err)) = tokio::time::timeout(Duration::from_secs(60), bench)
        .await
        .expect("pgbench did not end")
        .expect("pgbench task");
    stop.store(true, Ordering::Relaxed);
    let mut stats = Vec::new();
    for c in clients {
        stats.push(
            tokio::time::timeout(Duration::from_secs(40), c)
                .await
                .expect("load client hung")
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss3, thr3) = px.rss_threads();
    let state_after = breaker_state(&px, &primary_ip, PRIMARY_PORT).await;
    println!(
        "s1: pgbench exit {code} in {bench_took:?}:\n{}\n{}",
        support::tail(&out, 12),
        support::tail(&err, 8)
    );
    for (i, s) in stats.iter().enumerate() {
        println!(
            "s1: client {i}: {} calls, {} ok, max {:?}, errors {:?}",
            s.calls, s.ok, s.max, s.errors
        );
    }
    println!("s1: reads during the fault: {reads:?}");
    println!("s1: VmRSS kB before/during/late/after {rss0}/{rss1}/{rss2}/{rss3}, threads {thr0}/{thr1}/{thr2}/{thr3}");
    fault_result(
        1,
        "nft drop both ways pgmux<->primary, 7s, under pgbench -S -c 10 + 4 clients",
        detect,
        recover,
        0,
    );

    let mut ck = Checks::default();
    ck.check(detect.is_some(), || {
        "the primary's breaker never opened within 15 s of the black hole".into()
    });
    let late: Vec<_> = stats.iter().flat_map(|s| s.late.iter()).collect();
    // PGMUX BUG (query_timeout vs an unreachable server): on query_timeout pgmux sends a cancel
    // request and keeps waiting for the server; when the cancel cannot reach the server (black
    // hole) the client waits until TCP delivers the answer after the heal (26 s seen), not
    // query_timeout (3 s) as documented ("the client gets 57014").
    ck.check(late.is_empty(), || {
        format!("PGMUX BUG query_timeout: calls longer than {bound:?}: {late:#?}")
    });
    for (took, r) in &reads {
        ck.check(r.as_deref() == Ok("t"), || {
            format!("a read during the fault did not run on the replica ({took:?}): {r:?}")
        });
    }
    ck.check(bench_took < Duration::from_secs(14 + 10), || {
        format!("pgbench took {bench_took:?} for -T 14")
    });
    let (failed, aborted) = pgbench_failures(&out, &err);
    ck.check(code == 0 && failed == 0 && aborted == 0, || {
        format!("pgbench -S (reads only) failed during the primary's black hole: exit {code}, {failed} failed, {aborted} aborted")
    });
    ck.check(recover.is_some(), || {
        "writes did not come back within 15 s of the heal".into()
    });
    ck.check(state_after == "closed", || format!("breaker {state_after} at the end"));
    ck.check(thr1.max(thr2).max(thr3) <= thr0 + 16, || {
        format!("threads {thr0} -> {thr1}/{thr2}/{thr3}")
    });
    ck.check(rss1.max(rss2).max(rss3) <= rss0 * 2 + 64 * 1024, || {
        format!("VmRSS {rss0} kB -> {rss1}/{rss2}/{rss3} kB")
    });
    ck.finish("scenario 1");
}

/// Scenario 2: the replica black-holed while a read runs on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_blackholed_replica_during_reads() {
    let Some(net) = topology("s2") else { return };
    let _serial = FAULTS.lock().await;
    let px = NsPgmux::start(
        net,
        &pooler("default_pool_size = 5"),
        &format!(
            "{USERS}{}[breaker]\nfailure_threshold = 3\nopen_timeout = 2\n",
            database(net, "s2", true, "")
        ),
    );
    wait_reads_on_replica(&px, "s2").await;
    let url = px.url("app", "app", "s2");
    let c = try_client(&url, Duration::from_secs(5)).await.unwrap();
    let replica_ip = net.ip(Role::Replica);
    // The read starts on the replica; the replica vanishes before its answer (1 s) comes back.
    // Capped at 15 s by the test (pgmux's own bound is query_timeout, 3 s).
    let slow_read = tokio::spawn(async move {
        let t0 = Instant::now();
        let r = query(
            &c,
            "SELECT pg_is_in_recovery() FROM pg_sleep(1)",
            Duration::from_secs(15),
        )
        .await;
        (t0.elapsed(), r)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fault = net.blackhole(Role::Pgmux, &replica_ip);
    let injected = Instant::now();
    // Meanwhile new reads: on the primary within the timeouts.
    let lim = Duration::from_secs(10);
    let moved = poll(Duration::from_secs(15), || {
        let url = url.clone();
        async move {
            let (t, r) = attempt(&url, "SELECT pg_is_in_recovery()", lim).await;
            if r.as_deref() != Ok("f") {
                println!("s2: read during the fault: {r:?} in {t:?}");
            }
            (r.as_deref() == Ok("f")).then_some(t)
        }
    })
    .await;
    let detect = moved.as_ref().map(|_| injected.elapsed());
    let mut after = Vec::new();
    for _ in 0..5 {
        after.push(attempt(&url, "SELECT pg_is_in_recovery()", lim).await);
    }
    let replicas = show(&px, "SHOW REPLICAS").await;
    let (took, answer) = tokio::time::timeout(Duration::from_secs(30), slow_read)
        .await
        .expect("hung")
        .unwrap();
    println!("s2: the in-flight read got {answer:?} after {took:?}");
    println!("s2: new reads on the primary {detect:?} after the black hole; SHOW REPLICAS then: {replicas:?}");
    drop(fault);
    let healed = Instant::now();
    let back = poll(Duration::from_secs(15), || {
        let url = url.clone();
        async move { (attempt(&url, "SELECT pg_is_in_recovery()", lim).await.1.as_deref() == Ok("t")).then_some(()) }
    })
    .await;
    let recover = back.map(|_| healed.elapsed());
    fault_result(
        2,
        "nft drop both ways pgmux<->replica during a 1 s read on it",
        detect,
        recover,
        0,
    );

    let mut ck = Checks::default();
    // PGMUX BUG (query_timeout vs an unreachable server, as in scenario 1): query_timeout fires
    // at 3 s, the cancel request cannot reach the replica, and the client then waits with no
    // bound (the test's 15 s cap ends it). The replica connection never "dies" (no FIN, no RST),
    // so the retry on another target does not apply either.
    ck.check(took < Duration::from_secs(3 + 3), || {
        format!("PGMUX BUG query_timeout: the in-flight read took {took:?} (query_timeout 3 s): {answer:?}")
    });
    match &answer {
        Ok(v) => ck.check(v == "f", || {
            "an answer after the replica vanished must come from the primary".into()
        }),
        Err(e) => ck.check(e.starts_with("57014") || e.starts_with("08"), || {
            format!("no clear error for the in-flight read: {e}")
        }),
    }
    ck.check(detect.is_some_and(|d| d < Duration::from_secs(5)), || {
        format!("new reads did not move to the primary within 5 s: {detect:?}")
    });
    for (t, r) in &after {
        ck.check(r.as_deref() == Ok("f") && *t < Duration::from_secs(1), || {
            format!("read after the switch: {r:?} in {t:?}")
        });
    }
    ck.check(recover.is_some(), || {
        "reads did not come back to the replica within 15 s of the heal".into()
    });
    ck.finish("scenario 2");
}

/// Scenario 4: a black hole healed; the breaker closes, pools refill, the counts agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_partition_healed() {
    let Some(net) = topology("s4") else { return };
    let _serial = FAULTS.lock().await;
    let px = NsPgmux::start(
        net,
        &pooler("default_pool_size = 10\nmin_pool_size = 3"),
        &format!(
            "{USERS}{}[breaker]\nfailure_threshold = 2\nopen_timeout = 1\n",
            database(net, "s4", false, "")
        ),
    );
    let url = px.url("app", "app", "s4");
    let lim = Duration::from_secs(10);
    assert_eq!(attempt(&url, "SELECT 1", lim).await.1.as_deref(), Ok("1"));
    let pgmux_ip = net.ip(Role::Pgmux);
    let pg_count = move || {
        let ip = pgmux_ip.clone();
        blocking(move || net.backends(Role::Primary, "bench", "app", Some(&ip)))
    };
    let filled = poll(Duration::from_secs(10), || async {
        (pg_count().await >= 3).then_some(())
    })
    .await;
    assert!(filled.is_some(), "min_pool_size 3 not reached before the fault");

    let primary_ip = net.ip(Role::Primary);
    let fault = net.blackhole(Role::Pgmux, &primary_ip);
    let injected = Instant::now();
    // 6 clients at once: 3 take the idle servers (and hang), 3 need new connections, whose
    // connect timeouts open the breaker.
    let mut hung = Vec::new();
    for _ in 0..6 {
        let url = url.clone();
        hung.push(tokio::spawn(async move { attempt(&url, "SELECT 1", lim).await }));
    }
    let opened = poll(Duration::from_secs(10), || async {
        (breaker_state(&px, &primary_ip, PRIMARY_PORT).await == "open").then_some(())
    })
    .await;
    let detect = opened.map(|_| injected.elapsed());
    let refused = attempt(&url, "SELECT 1", lim).await;
    println!("s4: breaker open {detect:?} after the black hole; a new client then: {refused:?}");
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(injected.elapsed())).await;
    drop(fault);
    let healed = Instant::now();
    for h in hung {
        let (t, r) = h.await.unwrap();
        println!("s4: client started at the black hole: {r:?} after {t:?}");
    }
    // No client traffic: the janitor's probe (open_timeout 1 s) should close the breaker.
    let closed = poll(Duration::from_secs(8), || async {
        (breaker_state(&px, &primary_ip, PRIMARY_PORT).await == "closed").then_some(())
    })
    .await;
    let closed_after = closed.map(|_| healed.elapsed());
    println!("s4: breaker closed {closed_after:?} after the heal");
    // Agreement: SHOW POOLS, /metrics and pg_stat_activity, all at min_pool_size.
    let last = Mutex::new((0, 0, 0));
    let agreed = poll(Duration::from_secs(20), || {
        let px = &px;
        let last = &last;
        let pg = pg_count();
        async move {
            let pools = show(px, "SHOW POOLS").await;
            let pool = pools
                .iter()
                .find(|r| r["database"] == "s4" && r["user"] == "app")
                .map(pool_servers)
                .unwrap_or(-1);
            let metrics = metric_servers(&px.metrics(), "s4");
            let pg = pg.await;
            *last.lock().unwrap() = (pool, metrics, pg);
            (pool == 3 && metrics == 3 && pg == 3).then_some(())
        }
    })
    .await;
    let recover = agreed.map(|_| healed.elapsed());
    let last = *last.lock().unwrap();
    println!("s4: SHOW POOLS / metrics / pg_stat_activity = {last:?}, agreed {recover:?} after the heal");
    let works = attempt(&url, "SELECT 1", lim).await;
    fault_result(
        4,
        "nft drop both ways pgmux<->primary for 2 s, healed; open_timeout 1 s",
        detect,
        recover,
        0,
    );
    let mut ck = Checks::default();
    ck.check(detect.is_some(), || {
        "the breaker never opened during the black hole".into()
    });
    ck.check(
        refused.1.as_ref().is_err_and(|e| e.contains("circuit breaker open")),
        || format!("a client while the breaker is open: {refused:?}"),
    );
    // PGMUX FINDING: when the pool still holds min_pool_size servers after the heal (the
    // clients that hung on them got their answers), nothing opens a connection, so no probe
    // runs and SHOW BREAKERS / pgmux_breaker_state say "open" for a healthy server until a
    // client needs a new connection.
    ck.check(closed_after.is_some(), || {
        "PGMUX FINDING breaker: it did not close by itself within 8 s of the heal (open_timeout 1 s, no traffic)".into()
    });
    ck.check(recover.is_some(), || {
        format!("SHOW POOLS / metrics / pg_stat_activity never agreed on min_pool_size 3: last {last:?}")
    });
    ck.check(works.1.as_deref() == Ok("1"), || {
        format!("SELECT 1 after the heal: {works:?}")
    });
    ck.finish("scenario 4");
}

/// Scenario 5: a server that accepts and never speaks; another database carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_silent_server() {
    let Some(net) = topology("s5") else { return };
    let _serial = FAULTS.lock().await;
    let primary_ip = net.ip(Role::Primary);
    let silent = SilentServer::start(&net.ns(Role::Primary), &primary_ip, 7777);
    let px = NsPgmux::start(
        net,
        &pooler("default_pool_size = 5"),
        &format!(
            "{USERS}{}[databases.stall]\nhost = \"{primary_ip}\"\nport = {}\n[breaker]\nfailure_threshold = 50\nopen_timeout = 1\n",
            database(net, "s5", false, ""),
            silent.addr.port()
        ),
    );
    let good = px.url("app", "app", "s5");
    let stall = px.url("app", "app", "stall");
    let lim = Duration::from_secs(20);
    // Baseline latency of the good database.
    let c = try_client(&good, lim).await.unwrap();
    let mut base = Vec::new();
    for _ in 0..20 {
        let t0 = Instant::now();
        query(&c, "SELECT 1", lim).await.unwrap();
        base.push(t0.elapsed());
    }
    base.sort();
    // 8 clients of the stalled database at once, and the good one meanwhile.
    let injected = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let stall = stall.clone();
        stalled.push(tokio::spawn(async move { attempt(&stall, "SELECT 1", lim).await }));
    }
    let mut during = Vec::new();
    while injected.elapsed() < Duration::from_secs(3) {
        let t0 = Instant::now();
        let r = query(&c, "SELECT 1", lim).await;
        during.push(t0.elapsed());
        assert_eq!(r.as_deref(), Ok("1"), "the good database failed while another stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut results = Vec::new();
    for s in stalled {
        results.push(
            tokio::time::timeout(Duration::from_secs(30), s)
                .await
                .expect("hung")
                .unwrap(),
        );
    }
    during.sort();
    let p = |v: &[Duration], q: f64| v[((v.len() - 1) as f64 * q) as usize];
    println!(
        "s5: good database SELECT 1 before: p50 {:?} max {:?}; during: p50 {:?} p99 {:?} max {:?} ({} queries)",
        p(&base, 0.5),
        p(&base, 1.0),
        p(&during, 0.5),
        p(&during, 0.99),
        p(&during, 1.0),
        during.len()
    );
    for (t, r) in &results {
        println!("s5: stalled client: {r:?} after {t:?}");
    }
    println!("s5: the silent server accepted {} connections", silent.accepts());
    let worst = results.iter().map(|(t, _)| *t).max().unwrap();
    fault_result(5, "server accepts TCP, never answers the startup", Some(worst), None, 0);
    assert!(silent.accepts() >= 1, "pgmux never connected to the silent server");
    for (t, r) in &results {
        let e = r.as_ref().expect_err("a client of the silent server got an answer");
        assert!(
            !e.contains("timed out after"),
            "no error from pgmux, the test's own cap hit: {e}"
        );
        // server_connect_timeout 2 s; the client may also wait for a slot (query_wait_timeout 3).
        assert!(*t < Duration::from_secs(2 + 3 + 1), "error after {t:?}: {e}");
    }
    assert!(
        p(&during, 0.99) < Duration::from_millis(250).max(p(&base, 1.0) * 5),
        "the good database slowed down while the other stalled"
    );
}
