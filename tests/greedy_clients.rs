//! Resource exhaustion by clients that are in (issue 17): one that never reads its results, one
//! that pipelines thousands of Parse messages, and a flood of TLS handshakes left half-open.
//! Each holds a bounded amount of pgmux's memory, ends within a bounded time, and a healthy
//! client keeps being served meanwhile (`Healthy`, whose every query must answer within its
//! reply timeout).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::*;

const DB: &str = "greedy";

/// pgmux's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("pgmux's /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn trust_pgmux(extra: &str) -> Pgmux {
    ensure_database(DB);
    Pgmux::start(
        &format!("auth_type = \"trust\"\ndefault_pool_size = 2\n{extra}"),
        &format!("[users.app]\npassword = \"app\"\n[databases.{DB}]\nport = {{pg_port}}\n"),
    )
}

/// A Wire past a trust login (AuthenticationOk ... ReadyForQuery).
fn trusted(port: u16) -> Wire {
    let mut wire = Wire::start(port, "app", DB);
    while let Some(msg) = wire.read(Duration::from_secs(5)) {
        match msg.tag {
            b'Z' => return wire,
            b'R' | b'S' | b'K' | b'N' => {}
            _ => panic!("during login: {msg:?}"),
        }
    }
    panic!("closed during login")
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Backends of `DB` running `needle` (the superuser's own query excluded).
fn running(needle: &str) -> String {
    cluster().psql(
        DB,
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%{needle}%' \
             AND pid <> pg_backend_pid()"
        ),
    )
}

#[test]
fn a_client_that_never_reads_holds_bounded_memory_and_its_query_ends_with_it() {
    let px = trust_pgmux("");
    let healthy = Healthy::start_at(px.url("app", "app", DB));
    let before = rss_kib(px.pid());
    let mut greedy = trusted(px.port);
    // About 1.6 GB of rows that nobody reads.
    let sql = "SELECT repeat('x', 8000) AS greedy_never_reads FROM generate_series(1, 200000)\0";
    greedy.send(&frame(b'Q', sql.as_bytes()));
    std::thread::sleep(Duration::from_secs(3));
    let grown = rss_kib(px.pid()).saturating_sub(before);
    assert!(
        grown < 32 * 1024,
        "pgmux grew by {grown} KiB for a client that does not read"
    );
    assert_eq!(
        running("greedy_never_reads"),
        "1",
        "the query runs, held back by the full socket"
    );
    drop(greedy);
    // The client gone, pgmux cancels its query and closes that server.
    let t0 = Instant::now();
    while running("greedy_never_reads") != "0" {
        assert!(t0.elapsed() < Duration::from_secs(15), "the abandoned query still runs");
        std::thread::sleep(Duration::from_millis(100));
    }
    healthy.finish();
}

#[test]
fn thousands_of_pipelined_parses_are_answered_within_bounds() {
    let px = trust_pgmux("max_prepared_statements = 200");
    let healthy = Healthy::start_at(px.url("app", "app", DB));
    let before = rss_kib(px.pid());
    let mut greedy = trusted(px.port);
    const N: usize = 20_000;
    let mut batch = Vec::new();
    for i in 0..N {
        let body = format!("s{i}\0SELECT {i} AS n\0\0\0");
        batch.extend(frame(b'P', body.as_bytes()));
    }
    // The last one executed, to show the statements are usable.
    let last = N - 1;
    batch.extend(frame(b'B', format!("\0s{last}\0\0\0\0\0\0\0").as_bytes()));
    batch.extend(frame(b'E', b"\0\0\0\0\0"));
    batch.extend(frame(b'S', b""));
    let t0 = Instant::now();
    greedy.send(&batch);
    let (mut parsed, mut row) = (0, None);
    loop {
        let msg = greedy
            .read(Duration::from_secs(30))
            .expect("closed before the ReadyForQuery");
        match msg.tag {
            b'1' => parsed += 1,
            b'D' => row = Some(String::from_utf8_lossy(&msg.body[6..]).into_owned()),
            b'Z' => break,
            b'E' => panic!("error: {:?}", msg.fields()),
            _ => {}
        }
    }
    eprintln!("{N} pipelined Parses answered in {:?}", t0.elapsed());
    assert_eq!(parsed, N, "a ParseComplete for every Parse");
    assert_eq!(row.as_deref(), Some(last.to_string().as_str()));
    let grown = rss_kib(px.pid()).saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "pgmux grew by {grown} KiB for {N} prepared statements"
    );
    healthy.finish();
}

#[test]
fn half_open_tls_handshakes_are_closed_and_keep_nobody_out() {
    let dir = temp_dir("greedy-tls");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let px = trust_pgmux(&format!(
        "tls_mode = \"allow\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\nclient_login_timeout = 3\nmax_client_conn = 1000",
        cert_path.display(),
        key_path.display()
    ));
    let healthy = Healthy::start_at(px.url("app", "app", DB));
    let before = rss_kib(px.pid());
    // SSLRequest answered 'S', then half a ClientHello (or nothing), then silence.
    let mut half_open = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect(("127.0.0.1", px.port)).expect("connect");
        s.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).unwrap();
        let mut answer = [0u8; 1];
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.read_exact(&mut answer).expect("the SSLRequest's answer");
        assert_eq!(answer[0], b'S');
        if i % 2 == 0 {
            // A TLS record header promising 512 bytes of handshake, and 10 of them.
            s.write_all(&[22, 3, 1, 2, 0, 1, 0, 1, 252, 3, 3, 0, 0, 0, 0]).unwrap();
        }
        half_open.push(s);
    }
    let grown = rss_kib(px.pid()).saturating_sub(before);
    assert!(
        grown < 32 * 1024,
        "pgmux grew by {grown} KiB for 300 half-open handshakes"
    );
    // A real client meanwhile.
    let answer = block_on(async { try_value(&connect(&px.url("app", "app", DB)).await, "SELECT 42").await });
    assert_eq!(answer.as_deref(), Ok("42"));
    // Closed by client_login_timeout (3 s): each read ends.
    let t0 = Instant::now();
    for mut s in half_open {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut sink = [0u8; 256];
        loop {
            match s.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
    assert!(
        t0.elapsed() < Duration::from_secs(12),
        "half-open handshakes outlived client_login_timeout"
    );
    healthy.finish();
}
