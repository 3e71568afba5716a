//! A protocol fuzzer against the running binary (issue 17): generated message sequences, valid
//! and invalid, through every phase (startup, TLS and GSS requests, SCRAM, simple and extended
//! query, COPY, cancel, a close mid-message), while a healthy client's transactions keep
//! succeeding. Afterwards pgmux is alive, no backend is left in a transaction, and every pooled
//! server looks fresh to a new client (no open transaction, no setting, SQL prepared statement
//! or LISTEN carried over). Bounded: CASES sequences or BUDGET, whichever ends first; the seed
//! is printed, and `PGMUX_FUZZ_SEED` replays one.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::*;

const DB: &str = "protofuzz";
const POOL: usize = 3;
const CASES: usize = 600;
const BUDGET: Duration = Duration::from_secs(40);
/// A case's connection is closed once pgmux has been silent this long after its last reply.
const QUIET: Duration = Duration::from_millis(150);
/// Liveness bound for the healthy client (not a speed target): a query that waits longer
/// means bad input held it up.
const HEALTHY_BOUND: Duration = Duration::from_secs(5);

/// xorshift64*: deterministic per seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, list: &[T]) -> T {
        list[self.below(list.len())]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Up to `max - 1` random bytes.
    fn some_bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max);
        self.bytes(n)
    }
}

const SQL: &[&str] = &[
    "SELECT 1",
    "SELECT pg_sleep(0.01)",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SELECT 1/0",
    "SET statement_timeout = '7s'",
    "SET work_mem = '2MB'",
    "SET LOCAL search_path = pg_catalog",
    "RESET ALL",
    "DISCARD ALL",
    "PREPARE fz AS SELECT $1::int",
    "EXECUTE fz(1)",
    "DEALLOCATE ALL",
    "COPY t FROM STDIN",
    "COPY t TO STDOUT",
    "LISTEN fz",
    "UNLISTEN *",
    "SAVEPOINT s",
    "ROLLBACK TO s",
    "SELECT 'unterminated",
    "",
    ";",
    "BEGIN; SELECT 1; COMMIT",
    "SELECT $1",
    "INSERT INTO t VALUES (1, 'x')",
];

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(s: &[u8]) -> Vec<u8> {
    let mut v = s.to_vec();
    v.push(0);
    v
}

fn startup_packet(user: &str) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for part in ["user", user, "database", DB] {
        body.extend(cstr(part.as_bytes()));
    }
    body.push(0);
    let mut out = (body.len() as u32 + 4).to_be_bytes().to_vec();
    out.extend(body);
    out
}

fn code_packet(code: u32, rest: &[u8]) -> Vec<u8> {
    let mut out = ((rest.len() + 8) as u32).to_be_bytes().to_vec();
    out.extend(code.to_be_bytes());
    out.extend_from_slice(rest);
    out
}

/// One logged-in message, valid or not.
fn message(rng: &mut Rng) -> Vec<u8> {
    let names: &[&[u8]] = &[b"", b"s1", b"s2", b"fz"];
    let sql = |rng: &mut Rng| -> Vec<u8> {
        match rng.below(8) {
            0 => rng.some_bytes(20),
            _ => rng.pick(SQL).as_bytes().to_vec(),
        }
    };
    match rng.below(16) {
        0..=2 => frame(b'Q', &cstr(&sql(rng))),
        3 | 4 => {
            let mut body = cstr(rng.pick(names));
            body.extend(cstr(&sql(rng)));
            let types = rng.below(3) as u16;
            body.extend(types.to_be_bytes());
            for _ in 0..types {
                body.extend(23u32.to_be_bytes());
            }
            frame(b'P', &body)
        }
        5 => {
            let mut body = cstr(rng.pick(&[b"" as &[u8], b"p"]));
            body.extend(cstr(rng.pick(names)));
            match rng.below(3) {
                // No formats, one text parameter "1", no result formats.
                0 => body.extend([0, 0, 0, 1, 0, 0, 0, 1, b'1', 0, 0]),
                1 => body.extend([0, 0, 0, 0, 0, 0]),
                // Counts that promise more than is there.
                _ => body.extend([0, 9, 0, 1]),
            }
            frame(b'B', &body)
        }
        6 => {
            let mut body = vec![rng.pick(b"SPX")];
            body.extend(cstr(rng.pick(names)));
            frame(b'D', &body)
        }
        7 => {
            let mut body = cstr(rng.pick(&[b"" as &[u8], b"p"]));
            body.extend((rng.below(3) as u32).to_be_bytes());
            frame(b'E', &body)
        }
        8 | 9 => frame(b'S', b""),
        10 => frame(b'H', b""),
        11 => {
            let mut body = vec![rng.pick(b"SP")];
            body.extend(cstr(rng.pick(names)));
            frame(b'C', &body)
        }
        12 => frame(b'd', b"1\tcopied\n"),
        13 => frame(rng.pick(b"cf"), &cstr(b"fuzz")),
        14 => {
            let len = rng.below(40);
            frame(rng.pick(b"F?zp\0"), &rng.bytes(len))
        }
        // A length that is a lie: huge, or shorter than the header.
        _ => {
            let mut out = vec![b'Q'];
            out.extend(rng.pick(&[u32::MAX, 1 << 30, 3, 0]).to_be_bytes());
            out
        }
    }
}

/// What a case did to pgmux that it must not do; `Ok` for any answer a server could give.
type Outcome = Result<(), String>;

/// Reads whatever pgmux answers until it closes or stays quiet; checks only the framing.
fn drain(stream: &mut TcpStream, budget: Duration) -> Outcome {
    let until = Instant::now() + budget;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stream
            .set_read_timeout(Some(QUIET.min(left)))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => break,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    // Single-byte answers to SSLRequest / GSSENCRequest come before any frame.
    let mut at = 0;
    while matches!(buf.get(at), Some(b'N' | b'S')) && buf.get(at + 1..at + 5).is_none_or(|l| l[0] != 0) {
        at += 1;
    }
    while at < buf.len() {
        let Some(head) = buf.get(at..at + 5) else {
            return Err(format!("a partial header at the end: {:?}", &buf[at..]));
        };
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if !(4..1 << 24).contains(&len) || !b"RSKZTDCEINnst123AcdGHWVv".contains(&head[0]) {
            return Err(format!("bad frame {:?} of length {len} at {at}", head[0] as char));
        }
        at += 1 + len;
    }
    Ok(())
}

fn open(port: u16) -> Result<TcpStream, String> {
    let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// Sends `bytes`; a write refused because pgmux already closed the connection is fine.
fn send(s: &mut TcpStream, bytes: &[u8]) -> Outcome {
    match s.write_all(bytes) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => Ok(()),
        Err(e) => Err(format!("write: {e}")),
    }
}

/// Startup phase: a mutated or truncated startup packet, encryption and cancel requests.
fn startup_case(rng: &mut Rng, port: u16) -> Outcome {
    let mut s = open(port)?;
    let mut packet = match rng.below(5) {
        0 => code_packet(80_877_103, b""),
        1 => code_packet(80_877_104, b""),
        2 => code_packet(80_877_102, &rng.bytes(8)),
        3 => rng.some_bytes(64),
        _ => startup_packet("app"),
    };
    for _ in 0..rng.below(3) {
        let i = rng.below(packet.len().max(1));
        if let Some(b) = packet.get_mut(i) {
            *b = rng.next() as u8;
        }
    }
    if rng.below(3) == 0 {
        packet.truncate(rng.below(packet.len() + 1));
    }
    send(&mut s, &packet)?;
    if rng.below(2) == 0 {
        send(&mut s, &startup_packet("app"))?;
    }
    drain(&mut s, Duration::from_millis(500))
}

/// SCRAM phase on the SCRAM pgmux: garbage, truncated or out-of-order SASL messages.
fn auth_case(rng: &mut Rng, port: u16) -> Outcome {
    let mut s = open(port)?;
    send(&mut s, &startup_packet("app"))?;
    let mut body = Vec::new();
    match rng.below(4) {
        0 => {
            body.extend(cstr(b"SCRAM-SHA-256"));
            let first = b"n,,n=,r=fuzzfuzzfuzzfuzz".to_vec();
            body.extend((first.len() as i32).to_be_bytes());
            body.extend(first);
        }
        1 => {
            body.extend(cstr(b"SCRAM-SHA-256"));
            body.extend((-1i32).to_be_bytes());
        }
        2 => body.extend(rng.some_bytes(40)),
        _ => body.extend(cstr(b"c=biws,r=x,p=AAAA")),
    }
    send(&mut s, &frame(b'p', &body))?;
    if rng.below(2) == 0 {
        let len = rng.below(30);
        send(&mut s, &frame(b'p', &rng.bytes(len)))?;
    }
    drain(&mut s, Duration::from_millis(500))
}

/// Logged in (trust): a generated sequence, sometimes cut mid-message.
fn session_case(rng: &mut Rng, port: u16) -> Outcome {
    let mut s = open(port)?;
    send(&mut s, &startup_packet("app"))?;
    drain(&mut s, Duration::from_millis(300))?;
    let mut bytes = Vec::new();
    for _ in 0..1 + rng.below(8) {
        bytes.extend(message(rng));
    }
    match rng.below(6) {
        0 => bytes.truncate(bytes.len().saturating_sub(1 + rng.below(6))),
        1 => bytes.extend(frame(b'X', b"")),
        _ => {}
    }
    send(&mut s, &bytes)?;
    drain(&mut s, Duration::from_millis(800))
}

/// A CancelRequest with a made-up key, on a connection of its own.
fn cancel_case(rng: &mut Rng, port: u16) -> Outcome {
    let mut s = open(port)?;
    let mut rest = (rng.next() as u32 | 1 << 22).to_be_bytes().to_vec();
    rest.extend(rng.bytes(4));
    send(&mut s, &code_packet(80_877_102, &rest))?;
    drain(&mut s, Duration::from_millis(300))
}

#[test]
fn generated_sequences_disturb_nobody_and_leave_nothing_behind() {
    ensure_database(DB);
    cluster().psql(
        DB,
        "CREATE TABLE IF NOT EXISTS t(a int, b text); ALTER TABLE t OWNER TO app",
    );
    let users = "[users.app]\npassword = \"app\"\n";
    let dbs = format!("[databases.{DB}]\nport = {{pg_port}}\n");
    let px = Pgmux::start(
        &format!("auth_type = \"trust\"\ndefault_pool_size = {POOL}\nquery_wait_timeout = 10"),
        &format!("{users}{dbs}"),
    );
    let scram = Pgmux::start("auth_type = \"scram-sha-256\"", &format!("{users}{dbs}"));
    let seed = std::env::var("PGMUX_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("protocol fuzz seed {seed} (PGMUX_FUZZ_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let healthy = Healthy::start_at(px.url("app", "app", DB));
    let t0 = Instant::now();
    let mut counts = [0usize; 4];
    let mut failures = Vec::new();
    for case in 0..CASES {
        if t0.elapsed() > BUDGET {
            break;
        }
        let kind = match rng.below(10) {
            0 => 0,
            1 => 1,
            2 => 2,
            _ => 3,
        };
        counts[kind] += 1;
        let outcome = match kind {
            0 => startup_case(&mut rng, px.port),
            1 => auth_case(&mut rng, scram.port),
            2 => cancel_case(&mut rng, px.port),
            _ => session_case(&mut rng, px.port),
        };
        if let Err(e) = outcome {
            failures.push(format!("case {case} (kind {kind}): {e}"));
        }
    }
    eprintln!(
        "{} startup, {} SCRAM, {} cancel and {} session sequences in {:?}",
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        t0.elapsed()
    );
    let slowest = healthy.slowest();
    healthy.finish();
    assert!(failures.is_empty(), "seed {seed}:\n{}", failures.join("\n"));
    assert!(
        slowest < HEALTHY_BOUND,
        "seed {seed}: the healthy client waited {slowest:?} for a SELECT 1"
    );
    for p in [&px, &scram] {
        assert!(
            std::fs::metadata(format!("/proc/{}", p.pid())).is_ok() && !p.log().contains("panicked"),
            "seed {seed}: pgmux died or panicked:\n{}",
            tail(&p.log(), 30)
        );
    }
    block_on(servers_are_clean(&px, seed));
}

/// No backend of pgmux's is left inside a transaction, and each pooled server, held by a new
/// client, shows nothing of the sequences before.
async fn servers_are_clean(px: &Pgmux, seed: u64) {
    let su = cluster().superuser_client(DB).await;
    let stuck = "SELECT count(*)::text FROM pg_stat_activity WHERE datname = 'protofuzz' \
                 AND usename = 'app' AND state <> 'idle'";
    let mut left = String::new();
    for _ in 0..100 {
        left = value(&su, stuck).await;
        if left == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, "0", "seed {seed}: backends left busy or in a transaction");
    let check = "SELECT (now() = statement_timestamp())::text || ' ' \
                 || current_setting('statement_timeout') || ' ' || current_setting('work_mem') || ' ' \
                 || current_setting('search_path') || ' ' \
                 || (SELECT count(*) FROM pg_prepared_statements WHERE from_sql) || ' ' \
                 || (SELECT count(*) FROM pg_listening_channels()) || ' ' || pg_backend_pid(); BEGIN";
    let mut holders = Vec::new();
    let mut pids = std::collections::HashSet::new();
    for _ in 0..POOL {
        let c = connect(&px.url("app", "app", DB)).await;
        let got = value(&c, check).await;
        let (state, pid) = got.rsplit_once(' ').unwrap_or_default();
        assert_eq!(
            state, "true 0 4MB \"$user\", public 0 0",
            "seed {seed}: a pooled server carried something over (fresh, statement_timeout, work_mem, \
             search_path, SQL prepared statements, channels)"
        );
        pids.insert(pid.to_owned());
        holders.push(c);
    }
    assert_eq!(
        pids.len(),
        POOL,
        "seed {seed}: the check did not reach every pooled server"
    );
}
