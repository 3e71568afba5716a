//! Resource exhaustion before authentication: connections that never finish their login are
//! closed by client_login_timeout, hold a bounded amount of memory meanwhile and do not keep a
//! real client out (beyond max_client_conn, which they count against, as in PgBouncer); login
//! and console messages over their limits are refused before they are buffered.

mod support;

use std::time::{Duration, Instant};
use support::*;

const DB: &str = "exhaust";
const PROTOCOL_3_0: u32 = 196_608;
const SSL_REQUEST: u32 = 80_877_103;

fn proc_status(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("pgmux's /proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .expect("the key in /proc status");
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a number")
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(Iterator::count)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_stalled_logins_are_closed_and_keep_nobody_out() {
    let px = Pgmux::start_app("max_client_conn = 2000\nclient_login_timeout = 3", DB);
    let url = px.url("app", "app", DB);
    // One login first, so the pool and the SCRAM keys exist before the baseline.
    assert_eq!(value(&connect(&url).await, "SELECT 1").await, "1");
    let (pid, fds_before) = (px.pid(), open_fds(px.pid()));
    let rss_before = proc_status(pid, "VmRSS:");
    let t0 = Instant::now();
    // Half send nothing; half send 8,000 bytes of a startup packet that says it has 10,000
    // (the most PostgreSQL and pgmux accept), and stop there.
    let mut partial = 10_000u32.to_be_bytes().to_vec();
    partial.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    partial.resize(8_000, b'x');
    let stalled: Vec<Wire> = tokio::task::block_in_place(|| {
        (0..1000)
            .map(|i| {
                let mut wire = Wire::connect(px.port);
                if i % 2 == 1 {
                    wire.send(&partial);
                }
                wire
            })
            .collect()
    });
    eprintln!("1000 stalled logins opened in {:?}", t0.elapsed());

    // Meanwhile a real client logs in and works.
    let client = connect(&url).await;
    assert_eq!(value(&client, "SELECT 2").await, "2");
    let grown_kib = proc_status(pid, "VmRSS:").saturating_sub(rss_before);
    eprintln!("pgmux's resident memory grew by {grown_kib} KiB for 1000 stalled logins");
    assert!(grown_kib < 64 * 1024, "{grown_kib} KiB for 1000 stalled logins");

    // Each is closed once client_login_timeout (3 s) has passed since it connected.
    let closed = tokio::task::block_in_place(|| {
        stalled
            .into_iter()
            .filter_map(|mut wire| {
                let left = Duration::from_secs(15).saturating_sub(t0.elapsed());
                wire.closed_within(left.max(Duration::from_millis(1))).then_some(wire)
            })
            .count()
    });
    assert_eq!(closed, 1000, "stalled logins still open 15 s after they connected");
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "closed before client_login_timeout"
    );
    let t1 = Instant::now();
    while open_fds(pid) > fds_before + 5 {
        assert!(
            t1.elapsed() < Duration::from_secs(5),
            "pgmux still holds {} descriptors",
            open_fds(pid)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        value(&client, "SELECT 3").await,
        "3",
        "the logged-in client after the timeouts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_logins_count_against_max_client_conn_until_client_login_timeout() {
    let px = Pgmux::start_app("max_client_conn = 20\nclient_login_timeout = 1", DB);
    let url = px.url("app", "app", DB);
    let stalled: Vec<Wire> = (0..20).map(|_| Wire::connect(px.port)).collect();
    // Give pgmux time to accept them all (accepting is what counts them).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let Err(e) = try_connect(&url).await else {
        panic!("a 21st client got in")
    };
    assert_eq!(sqlstate(&e).as_deref(), Some("53300"), "{e:?}");
    let message = e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_default();
    assert!(message.contains("max_client_conn = 20"), "{message}");
    tokio::task::block_in_place(|| {
        for mut wire in stalled {
            assert!(
                wire.closed_within(Duration::from_secs(5)),
                "a stalled login outlived client_login_timeout"
            );
        }
    });
    assert_eq!(
        value(&connect(&url).await, "SELECT 1").await,
        "1",
        "after the stalled logins closed"
    );
}

/// A Wire past a trust login (AuthenticationOk ... ReadyForQuery).
fn trusted(port: u16, user: &str, db: &str) -> Wire {
    let mut wire = Wire::start(port, user, db);
    while let Some(msg) = wire.read(Duration::from_secs(5)) {
        match msg.tag {
            b'Z' => return wire,
            b'R' | b'S' | b'K' | b'N' => {}
            _ => panic!("during login: {msg:?}"),
        }
    }
    panic!("closed during login")
}

#[test]
fn oversized_login_and_console_messages_and_repeated_ssl_requests_are_refused() {
    ensure_database(DB);
    let rest = format!("[users.app]\npassword = \"app\"\n[databases.{DB}]\nport = {{pg_port}}\n");
    let px = Pgmux::start("auth_type = \"md5\"", &rest);
    // A password message that says it is 1 MiB: refused at its header (no body is sent).
    let mut wire = Wire::start(px.port, "app", DB);
    wire.expect_auth(AUTH_MD5);
    wire.send(&[&b"p"[..], &(1u32 << 20).to_be_bytes()].concat());
    let fields = wire.expect_error();
    assert_eq!(fields.get(&'C').map(String::as_str), Some("08P01"), "{fields:?}");
    assert!(fields[&'M'].contains("at most 65536"), "{fields:?}");

    // A third encryption request (libpq sends at most two).
    let mut wire = Wire::connect(px.port);
    let ssl = [&8u32.to_be_bytes()[..], &SSL_REQUEST.to_be_bytes()].concat();
    for _ in 0..2 {
        wire.send(&ssl);
        let mut answer = [0u8; 1];
        std::io::Read::read_exact(&mut wire.stream, &mut answer).expect("the answer to SSLRequest");
        assert_eq!(&answer, b"N");
    }
    wire.send(&ssl);
    let fields = wire.expect_error();
    assert_eq!(fields.get(&'C').map(String::as_str), Some("08P01"), "{fields:?}");
    assert!(fields[&'M'].contains("too many encryption requests"), "{fields:?}");
    drop(px);

    // The console: a Query over 64 KiB is refused at its header, and the connection closed.
    let px = Pgmux::start("auth_type = \"trust\"\nadmin_users = [\"app\"]", &rest);
    let mut console = trusted(px.port, "app", "pgbouncer");
    console.send(&[&b"Q"[..], &(100_000u32).to_be_bytes()].concat());
    let fields = console.expect_error();
    assert_eq!(fields.get(&'C').map(String::as_str), Some("08P01"), "{fields:?}");
    assert!(fields[&'M'].contains("at most 65536"), "{fields:?}");
}
