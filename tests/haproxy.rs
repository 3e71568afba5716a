//! Behind HAProxy, for real (issue 18, item 4): HAProxy in TCP mode, roundrobin, in front of
//! three pgmux processes that are peers of each other. A cancel that HAProxy hands to another
//! process than the query's is forwarded and cancels the query; a process killed with SIGKILL
//! fails only its own clients, which reconnect through HAProxy to the others, and pgbench
//! through HAProxy keeps going; a rolling upgrade of the three (`pgmux upgrade`, one at a time)
//! under pgbench fails no transaction and refuses no connection.
//!
//! HAProxy comes from the Debian package, installed by scripts/test.sh; without it these tests
//! fail saying so.

mod support;

use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// One test at a time: each runs a fleet and pgbench on two cores, and HAProxy's checks
/// (`fall 1`) would take a process starved by another test's load for a dead one.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running HAProxy, killed (and reaped) on drop.
struct Haproxy {
    port: u16,
    dir: PathBuf,
    child: Child,
    pid_file: PathBuf,
}

fn haproxy_bin() -> PathBuf {
    let found = ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy", "/usr/bin/haproxy"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!(
            "HAProxy is not installed: tests/haproxy.rs needs the haproxy binary. scripts/test.sh \
             installs the Debian package haproxy when run as root (or: apt-get install haproxy)"
        )
    })
}

impl Haproxy {
    /// TCP mode, roundrobin over `backends` (each checked every 200 ms; a connection refused
    /// is retried on another server).
    fn start(backends: &[u16]) -> Haproxy {
        let bin = haproxy_bin();
        let dir = temp_dir("haproxy");
        let port = free_port();
        let mut text = format!(
            "global\n    maxconn 1000\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n\
             \x20   retries 3\n    option redispatch 1\n\
             frontend pgmux\n    bind 127.0.0.1:{port}\n    default_backend fleet\n\
             backend fleet\n    balance roundrobin\n"
        );
        for (n, p) in backends.iter().enumerate() {
            text.push_str(&format!(
                "    server pgmux{} 127.0.0.1:{p} check inter 200ms fall 1 rise 2\n",
                n + 1
            ));
        }
        let config = dir.join("haproxy.cfg");
        fs::write(&config, text).expect("write haproxy.cfg");
        let log = fs::File::create(dir.join("haproxy.log")).expect("create haproxy.log");
        let child = Command::new(&bin)
            .arg("-f")
            .arg(&config)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        // Killed by the cluster's watchdog if this test process dies first.
        let pid_file = cluster().dir.join("pids").join(child.id().to_string());
        let _ = fs::write(&pid_file, "");
        let mut me = Haproxy {
            port,
            dir,
            child,
            pid_file,
        };
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("haproxy exited with {status}: {}", me.log());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "haproxy never listened: {}",
                me.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        me
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- haproxy log ---\n{}\n---", tail(&self.log(), 30));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.pid_file);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Cancel requests the fleet forwarded to a peer, all processes together.
fn forwarded(fleet: &[Pgmux]) -> i64 {
    let per = |px: &Pgmux| -> i64 {
        let rows = console_rows(px, "SHOW PEER_POOLS");
        rows.iter().map(|r| cell(r, "forwarded")).sum()
    };
    fleet.iter().map(per).sum()
}

#[test]
fn a_cancel_that_haproxy_sends_to_another_instance_cancels_the_query() {
    let _serial = one_at_a_time();
    let f = fleet(3, "lb", |_, _| String::new());
    let ports: Vec<u16> = f.iter().map(|px| px.port).collect();
    let lb = Haproxy::start(&ports);
    let mut homes = Vec::new();
    for (n, db) in ["lb_tx", "lb_session", "lb_tx"].into_iter().enumerate() {
        // Roundrobin: the login goes to one process, the cancel's new connection to the next.
        let mut c = Raw::login(lb.port, db);
        let home = peer_of(c.secret);
        assert!((1..=3).contains(&home), "{db}: key {:#x}", c.secret);
        homes.push(home);
        let sql = format!("SELECT pg_sleep(30) -- lb {n}");
        c.send(&sql);
        wait_running(&sql, 1);
        let before = forwarded(&f);
        send_cancel(lb.port, c.pid, c.secret);
        assert_eq!(c.outcome().map(|_| ()), Err("57014".to_string()), "{db}");
        assert_eq!(
            forwarded(&f),
            before + 1,
            "{db}: the cancel reached another process than {home}, which forwarded it"
        );
        let rows = c.query("SELECT 5 AS n").expect("the client goes on");
        assert_eq!(rows[0]["n"].as_deref(), Some("5"));
    }
    homes.sort();
    homes.dedup();
    assert!(homes.len() >= 2, "the queries ran on one process only: {homes:?}");
}

/// (seconds since start, tps) of each pgbench progress line.
fn progress(stderr: &str) -> Vec<(f64, f64)> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("progress: "))
        .filter_map(|l| {
            let mut parts = l.split(", ");
            let at = parts.next()?.strip_suffix(" s")?.parse().ok()?;
            let tps = parts.next()?.strip_suffix(" tps")?.parse().ok()?;
            Some((at, tps))
        })
        .collect()
}

#[test]
fn one_instance_killed_fails_only_its_clients_which_reconnect_to_the_others() {
    let _serial = one_at_a_time();
    cluster().pgbench_init();
    let f = fleet(3, "lbkill", |_, _| "[databases.bench]\nport = {pg_port}\n".to_string());
    let ports: Vec<u16> = f.iter().map(|px| px.port).collect();
    let lb = Haproxy::start(&ports);
    let victim = 2u16;

    // Six clients through HAProxy, spread by its roundrobin. Its first picks after a start are
    // not always even (one run gave 3, 1 and 2), so more clients, up to twelve, until every
    // process has one.
    let mut clients: Vec<Raw> = (0..6).map(|_| Raw::login(lb.port, "lbkill_tx")).collect();
    let count_on = |clients: &[Raw], p: u16| clients.iter().filter(|c| peer_of(c.secret) == p).count();
    while (1..=3).any(|p| count_on(&clients, p) == 0) && clients.len() < 12 {
        clients.push(Raw::login(lb.port, "lbkill_tx"));
    }
    for c in clients.iter_mut() {
        c.query("SELECT 1").expect("SELECT 1");
    }
    let spread: Vec<usize> = (1..=3).map(|p| count_on(&clients, p)).collect();
    assert!(spread.iter().all(|&n| n > 0), "a process without a client: {spread:?}");

    // pgbench through HAProxy, its connections spread over the three.
    let extra = ["-c", "10", "-j", "2", "-P", "1", "--failures-detailed"];
    let bench = pgbench_thread(lb.port, &extra, 5, Duration::from_secs(60));
    let started = Instant::now();
    // Every pgbench client is connected once its first progress second is over.
    std::thread::sleep(Duration::from_millis(1500));
    let victim_px = &f[usize::from(victim) - 1];
    let rows = console_rows(victim_px, "SHOW CLIENTS");
    let bench_on_victim = rows
        .iter()
        .filter(|r| r["database"].as_deref() == Some("bench"))
        .count();
    assert!(bench_on_victim > 0, "no pgbench client on process {victim}");

    let mut f = f;
    let killed_at = started.elapsed();
    f[usize::from(victim) - 1].signal("KILL");
    assert!(f[usize::from(victim) - 1].wait_exit(Duration::from_secs(5)).is_some());

    // Only the victim's clients see an error; they reconnect through HAProxy to the others.
    for c in clients.iter_mut() {
        let home = peer_of(c.secret);
        let outcome = c.query("SELECT 2 AS n");
        if home == victim {
            assert!(outcome.is_err(), "a client of the killed process answered: {outcome:?}");
            *c = Raw::login(lb.port, "lbkill_tx");
            assert_ne!(peer_of(c.secret), victim, "a new login landed on the killed process");
            let rows = c.query("SELECT 2 AS n").expect("the reconnected client is served");
            assert_eq!(rows[0]["n"].as_deref(), Some("2"));
        } else {
            let rows = outcome.unwrap_or_else(|e| panic!("a client of process {home} failed: {e}"));
            assert_eq!(rows[0]["n"].as_deref(), Some("2"));
        }
    }
    // New clients all get served, by the two left.
    for _ in 0..6 {
        let mut c = Raw::login(lb.port, "lbkill_tx");
        assert_ne!(peer_of(c.secret), victim);
        c.query("SELECT 3").expect("a new client is served");
    }

    let (code, out, err) = bench.join().expect("pgbench thread");
    eprintln!("pgbench exit {code}\n{out}\n{err}");
    assert!(code == 0 || code == 2, "pgbench failed to run: {code}\n{out}\n{err}");
    // The killed process's sessions end (pgbench aborts those clients), and only those.
    let aborted = err.lines().filter(|l| l.contains("aborted in command")).count();
    assert_eq!(aborted, bench_on_victim, "pgbench clients aborted\n{err}");
    // The others kept going after the kill.
    let after: Vec<(f64, f64)> = progress(&err)
        .into_iter()
        .filter(|(at, _)| *at > killed_at.as_secs_f64() + 1.0)
        .collect();
    assert!(!after.is_empty(), "no pgbench progress after the kill\n{err}");
    assert!(
        after.iter().all(|(_, tps)| *tps > 0.0),
        "pgbench stalled after the kill: {after:?}"
    );
    assert!(pgbench_processed(&out) > 0, "{out}");

    // With the process gone, new sessions through HAProxy all succeed: pgbench opening a
    // connection per transaction fails none.
    let extra = ["-C", "-c", "4", "--failures-detailed"];
    let storm = pgbench_thread(lb.port, &extra, 1, Duration::from_secs(30));
    let (code, out, err) = storm.join().expect("pgbench thread");
    assert_eq!(code, 0, "pgbench -C after the kill\n{out}\n{err}");
    assert!(out.contains("number of failed transactions: 0 "), "{out}");
}

#[test]
fn a_rolling_upgrade_of_all_three_instances_under_pgbench_fails_nothing() {
    let _serial = one_at_a_time();
    cluster().pgbench_init();
    let extra = |_: usize, _: &[u16]| "[databases.bench]\nport = {pg_port}\n".to_string();
    let f = fleet(3, "lbroll", extra);
    let ports: Vec<u16> = f.iter().map(|px| px.port).collect();
    let lb = Haproxy::start(&ports);
    // Fifty sessions spread over the three, and a new connection per transaction beside them.
    let steady = pgbench_thread(lb.port, &["-S", "-c", "50", "-j", "2"], 10, Duration::from_secs(120));
    let storm = pgbench_thread(
        lb.port,
        &["-S", "-C", "-c", "4", "-j", "1"],
        10,
        Duration::from_secs(120),
    );
    std::thread::sleep(Duration::from_secs(2));
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_pgmux"));
    let mut upgraded = Vec::new();
    for mut old in f {
        let t0 = Instant::now();
        let new = old.upgrade(&bin).expect("pgmux upgrade");
        let exited = old.wait_exit(Duration::from_secs(20));
        assert!(exited.is_some_and(|s| s.success()), "{}", old.log());
        let handed = old.log().matches("client handed to the new process").count();
        eprintln!(
            "instance on {}: {handed} clients handed over in {:?}",
            old.port,
            t0.elapsed()
        );
        assert!(handed > 0, "no client moved: {}", old.log());
        upgraded.push(new);
        std::thread::sleep(Duration::from_secs(1));
    }
    for (what, bench) in [("pgbench -c 50", steady), ("pgbench -C", storm)] {
        let done = bench.join().expect("pgbench thread");
        eprintln!("{what}: {}", done.1);
        pgbench_clean(what, &done);
    }
}
