//! Malformed input on raw sockets: pgmux refuses it with an ErrorResponse (08P01 wherever a reply
//! is still possible) and closes that one connection; it never crashes, never hangs, and never
//! disturbs the other clients, which a healthy tokio-postgres client checks throughout each test.
//!
//! Most pgmux instances here use `auth_type = "trust"`, so a raw client gets AuthenticationOk
//! straight after its StartupMessage (pgmux itself logs in to PostgreSQL as app/app); one uses
//! SCRAM, for malformed SASL exchanges.

mod support;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};
use support::*;

const PROTOCOL_3_0: u32 = 196_608;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

/// A trust-auth pgmux in front of the `bench` database.
fn pgmux(pooler_extra: &str) -> Pgmux {
    Pgmux::start(
        &format!("auth_type = \"trust\"\n{pooler_extra}"),
        "[users.app]\npassword = \"app\"\n[databases.bench]\nport = {pg_port}\n",
    )
}

// ---------------------------------------------------------------------------------------------
// Building frontend packets.

/// An untagged startup-phase packet: length word (counting itself), code, body.
fn packet(code: u32, body: &[u8]) -> Vec<u8> {
    let mut p = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(body);
    p
}

/// Name/value pairs, each NUL-terminated, ended by an empty name.
fn params(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in pairs {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    body
}

/// A valid protocol 3.0 StartupMessage for app@bench.
fn startup() -> Vec<u8> {
    packet(PROTOCOL_3_0, &params(&[("user", "app"), ("database", "bench")]))
}

/// A StartupMessage for app@bench with more parameters.
fn startup_with(extra: &[(&str, &str)]) -> Vec<u8> {
    let mut pairs = vec![("user", "app"), ("database", "bench")];
    pairs.extend_from_slice(extra);
    packet(PROTOCOL_3_0, &params(&pairs))
}

/// A regular message: tag, length word (counting itself), body.
fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![tag];
    f.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// A tag and an arbitrary length word, nothing else.
fn header(tag: u8, len: u32) -> Vec<u8> {
    let mut f = vec![tag];
    f.extend_from_slice(&len.to_be_bytes());
    f
}

/// A simple Query message.
fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    frame(b'Q', &body)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// A raw protocol client.

/// One backend message.
#[derive(Debug)]
struct Msg {
    tag: u8,
    body: Vec<u8>,
}

impl Msg {
    /// Fields of an ErrorResponse or NoticeResponse, by field type (S, V, C, M, ...).
    fn fields(&self) -> HashMap<char, String> {
        let mut fields = HashMap::new();
        let mut rest = &self.body[..];
        while let Some((&kind, tail)) = rest.split_first() {
            if kind == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            fields.insert(kind as char, String::from_utf8_lossy(&tail[..end]).into_owned());
            rest = tail.get(end + 1..).unwrap_or_default();
        }
        fields
    }

    fn describe(&self) -> String {
        match self.tag {
            b'E' | b'N' => format!("{}{:?}", self.tag as char, self.fields()),
            tag => format!("{}({} bytes)", tag as char, self.body.len()),
        }
    }
}

/// What a full read found instead of the requested bytes.
enum Fill {
    Full,
    /// EOF (or a connection reset) after this many bytes.
    Closed(usize),
}

struct Raw {
    stream: TcpStream,
}

impl Raw {
    fn connect(px: &Pgmux) -> Raw {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], px.port));
        let stream = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("raw connect to pgmux port {}: {e}", px.port));
        stream.set_nodelay(true).unwrap();
        stream.set_write_timeout(Some(REPLY_TIMEOUT)).unwrap();
        Raw { stream }
    }

    /// Connects and completes a trust login: AuthenticationOk ... ReadyForQuery('I').
    fn login(px: &Pgmux) -> Result<Raw, String> {
        let mut raw = Raw::connect(px);
        raw.send(&startup())?;
        raw.expect_login()?;
        Ok(raw)
    }

    /// Reads the answer to a StartupMessage up to ReadyForQuery.
    fn expect_login(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let first = self
            .read_msg(deadline)?
            .ok_or("connection closed instead of AuthenticationOk")?;
        if first.tag != b'R' || first.body != [0, 0, 0, 0] {
            return Err(format!("expected AuthenticationOk, got {}", first.describe()));
        }
        loop {
            let msg = self.read_msg(deadline)?.ok_or("connection closed during login")?;
            match msg.tag {
                b'S' | b'K' | b'N' => {}
                b'Z' if msg.body == b"I" => return Ok(()),
                _ => return Err(format!("unexpected message during login: {}", msg.describe())),
            }
        }
    }

    /// Reads the answer to a query up to ReadyForQuery, which must say `status`; an
    /// ErrorResponse on the way is a failure.
    fn expect_ready(&mut self, status: u8) -> Result<(), String> {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let msg = self
                .read_msg(deadline)?
                .ok_or("connection closed before ReadyForQuery")?;
            match msg.tag {
                b'Z' if msg.body == [status] => return Ok(()),
                b'E' | b'Z' => {
                    return Err(format!(
                        "waiting for ReadyForQuery({}): {}",
                        status as char,
                        msg.describe()
                    ))
                }
                _ => {}
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .map_err(|e| format!("sending {} bytes: {e}", bytes.len()))
    }

    /// Fills `buf`, or reports how far it got before EOF. A reset counts as a close: pgmux
    /// closing a socket with unread input makes the kernel send RST instead of FIN.
    fn fill(&mut self, buf: &mut [u8], deadline: Instant) -> Result<Fill, String> {
        let mut got = 0;
        while got < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no reply and no close within the deadline ({got} bytes read)"));
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buf[got..]) {
                Ok(0) => return Ok(Fill::Closed(got)),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Err(format!("no reply and no close within the deadline ({got} bytes read)"));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Ok(Fill::Closed(got));
                }
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        Ok(Fill::Full)
    }

    /// The next backend message; None once the connection is closed.
    fn read_msg(&mut self, deadline: Instant) -> Result<Option<Msg>, String> {
        let mut head = [0u8; 5];
        match self.fill(&mut head, deadline)? {
            Fill::Full => {}
            Fill::Closed(0) => return Ok(None),
            Fill::Closed(n) => return Err(format!("connection closed after {n} bytes of a message header")),
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        if !(4..=1 << 20).contains(&len) {
            return Err(format!("backend message {:?} with bad length {len}", head[0] as char));
        }
        let mut body = vec![0u8; len as usize - 4];
        match self.fill(&mut body, deadline)? {
            Fill::Full => Ok(Some(Msg { tag: head[0], body })),
            Fill::Closed(n) => Err(format!(
                "connection closed {n} bytes into a {len}-byte {:?} message",
                head[0] as char
            )),
        }
    }

    /// A single byte (the answer to SSLRequest / GSSENCRequest).
    fn read_byte(&mut self) -> Result<u8, String> {
        let mut b = [0u8; 1];
        match self.fill(&mut b, Instant::now() + REPLY_TIMEOUT)? {
            Fill::Full => Ok(b[0]),
            Fill::Closed(_) => Err("connection closed instead of a one-byte answer".into()),
        }
    }

    /// Every message until the connection closes, which must happen within `within`.
    fn until_close(&mut self, within: Duration) -> Result<Vec<Msg>, String> {
        let deadline = Instant::now() + within;
        let mut msgs = Vec::new();
        loop {
            match self.read_msg(deadline) {
                Ok(Some(msg)) => msgs.push(msg),
                Ok(None) => return Ok(msgs),
                Err(e) => {
                    let seen: Vec<String> = msgs.iter().map(Msg::describe).collect();
                    return Err(format!("{e}; messages before that: {seen:?}"));
                }
            }
        }
    }

    /// The connection must end with exactly one ErrorResponse (after any messages accepted by
    /// `allow_before`) and then close. Returns the error's fields.
    fn refused(&mut self, allow_before: &[u8]) -> Result<HashMap<char, String>, String> {
        let msgs = self.until_close(REPLY_TIMEOUT)?;
        let all: Vec<String> = msgs.iter().map(Msg::describe).collect();
        let Some((last, before)) = msgs.split_last() else {
            return Err("connection closed without an ErrorResponse".into());
        };
        if last.tag != b'E' {
            return Err(format!("the last message is not an ErrorResponse: {all:?}"));
        }
        if let Some(other) = before.iter().find(|m| !allow_before.contains(&m.tag)) {
            return Err(format!("unexpected {} before the error: {all:?}", other.describe()));
        }
        Ok(last.fields())
    }
}

/// The connection must get a FATAL ErrorResponse with SQLSTATE `code` whose message contains
/// `needle`, then be closed.
fn expect_refused(raw: &mut Raw, allow_before: &[u8], code: &str, needle: &str) -> Result<(), String> {
    let fields = raw.refused(allow_before)?;
    let got = |k: char| fields.get(&k).map(String::as_str).unwrap_or("");
    if got('C') != code {
        return Err(format!("SQLSTATE {:?}, expected {code}: {fields:?}", got('C')));
    }
    if got('S') != "FATAL" {
        return Err(format!("severity {:?}, expected FATAL: {fields:?}", got('S')));
    }
    if !got('M').contains(needle) {
        return Err(format!("message does not mention {needle:?}: {fields:?}"));
    }
    Ok(())
}

/// Keep repeating the bad input for at least this long, so that the healthy client's queries
/// interleave with it.
const MIN_OVERLAP: Duration = Duration::from_millis(500);
const MAX_ROUNDS: usize = 50;

type Case<'a> = Box<dyn Fn() -> Result<(), String> + 'a>;

/// Named cases. Failures are collected so that one broken case does not hide the others.
#[derive(Default)]
struct Cases<'a> {
    list: Vec<(String, Case<'a>)>,
    failures: Vec<String>,
}

impl<'a> Cases<'a> {
    fn add(&mut self, name: impl Into<String>, case: impl Fn() -> Result<(), String> + 'a) {
        self.list.push((name.into(), Box::new(case)));
    }

    /// Runs one case now.
    fn once(&mut self, name: &str, case: impl FnOnce() -> Result<(), String>) {
        let started = Instant::now();
        if let Err(e) = case() {
            eprintln!("case {name:?}: FAILED after {:?}: {e}", started.elapsed());
            self.failures.push(format!("{name}: {e}"));
        }
    }

    /// Runs every added case, round after round, until MIN_OVERLAP has passed (at most
    /// MAX_ROUNDS), stopping after a round with failures. Panics listing the failures.
    fn run_rounds(mut self, healthy: &Healthy) {
        let (t0, queries_before) = (Instant::now(), healthy.count());
        let mut rounds = 0;
        while self.failures.is_empty() && rounds < MAX_ROUNDS && (rounds == 0 || t0.elapsed() < MIN_OVERLAP) {
            rounds += 1;
            for (name, case) in &self.list {
                let started = Instant::now();
                if let Err(e) = case() {
                    eprintln!(
                        "case {name:?} (round {rounds}): FAILED after {:?}: {e}",
                        started.elapsed()
                    );
                    self.failures.push(format!("{name} (round {rounds}): {e}"));
                }
            }
        }
        eprintln!(
            "{} cases x {rounds} rounds in {:?}; the healthy client ran {} queries meanwhile",
            self.list.len(),
            t0.elapsed(),
            healthy.count() - queries_before
        );
        self.assert_ok();
    }

    fn assert_ok(&self) {
        assert!(
            self.failures.is_empty(),
            "{} case(s) failed:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The healthy client and the liveness checks.

/// pgmux is still running (not exited, not a zombie) and serves both a new tokio-postgres
/// client and a new raw client (which logs in only where pgmux trusts it).
fn assert_serving(px: &mut Pgmux) {
    let pid = px.pid();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("pgmux (pid {pid}) is gone: /proc/{pid}/stat: {e}"));
    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
    assert!(
        matches!(state, Some('R' | 'S' | 'D')),
        "pgmux (pid {pid}) is in state {state:?}"
    );
    if let Some(status) = px.wait_exit(Duration::ZERO) {
        panic!("pgmux exited: {status}");
    }
    let url = px.url("app", "app", "bench");
    let answer = block_on(async {
        let client = connect(&url).await;
        try_value(&client, "SELECT 40 + 2").await
    });
    assert_eq!(answer.as_deref(), Ok("42"), "a new client after the bad input");
    let trust = std::fs::read_to_string(&px.config_path)
        .unwrap()
        .contains("auth_type = \"trust\"");
    if !trust {
        let raw = sasl_start(px).unwrap_or_else(|e| panic!("a new raw client after the bad input: {e}"));
        drop(raw);
        return;
    }
    let mut raw = Raw::login(px).unwrap_or_else(|e| panic!("a new raw client after the bad input: {e}"));
    raw.send(&query("SELECT 1")).unwrap();
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        match raw.read_msg(deadline) {
            Ok(Some(m)) if m.tag == b'Z' => break,
            Ok(Some(m)) if m.tag == b'E' => panic!("raw SELECT 1: {}", m.describe()),
            Ok(Some(_)) => {}
            Ok(None) => panic!("raw SELECT 1: connection closed"),
            Err(e) => panic!("raw SELECT 1: {e}"),
        }
    }
    raw.send(&frame(b'X', b"")).unwrap();
    let rest = raw
        .until_close(REPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("after Terminate: {e}"));
    assert!(rest.is_empty(), "messages after Terminate: {rest:?}");
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn malformed_startup_packets_are_refused_and_closed() {
    let mut px = pgmux("");
    let healthy = Healthy::start_at(px.url("app", "app", "bench"));
    let px_ref = &px;
    let mut cases = Cases::default();
    // (name, bytes, SQLSTATE, text the message must contain)
    let refused: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "length 0x7fffffff",
            vec![0x7f, 0xff, 0xff, 0xff],
            "08P01",
            "startup packet length",
        ),
        (
            "HTTP request",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            "08P01",
            "protocol violation",
        ),
        ("length 3", vec![0, 0, 0, 3], "08P01", "startup packet length"),
        ("length 0", vec![0, 0, 0, 0], "08P01", "startup packet length"),
        ("length 7", vec![0, 0, 0, 7, 0, 3, 0], "08P01", "startup packet length"),
        (
            "length 10001",
            [&10_001u32.to_be_bytes()[..], &PROTOCOL_3_0.to_be_bytes()].concat(),
            "08P01",
            "startup packet length",
        ),
        (
            "parameter value not NUL-terminated",
            packet(PROTOCOL_3_0, b"user\0app\0database\0bench"),
            "08P01",
            "startup packet",
        ),
        (
            "parameter list not ended by an empty name",
            packet(PROTOCOL_3_0, b"user\0app\0database\0bench\0"),
            "08P01",
            "startup packet",
        ),
        (
            "bytes after the parameter list",
            packet(PROTOCOL_3_0, b"user\0app\0\0junk"),
            "08P01",
            "startup packet",
        ),
        (
            "parameter value not UTF-8",
            packet(PROTOCOL_3_0, b"user\0\xff\xfe\0\0"),
            "08P01",
            "startup parameter",
        ),
        (
            "SSLRequest with a body",
            packet(SSL_REQUEST, b"xyz"),
            "08P01",
            "startup request",
        ),
        (
            "protocol 2.0",
            packet(2 << 16, &params(&[("user", "app"), ("database", "bench")])),
            "0A000",
            "unsupported frontend protocol 2.0",
        ),
        (
            "protocol 4.0",
            packet(4 << 16, &params(&[("user", "app")])),
            "0A000",
            "unsupported frontend protocol 4.0",
        ),
        (
            "a startup parameter name that is not an identifier",
            startup_with(&[("x;DROP TABLE items", "1")]),
            "08P01",
            "invalid startup parameter name",
        ),
        (
            "an options switch other than -c",
            startup_with(&[("options", "-X")]),
            "0A000",
            "unsupported startup option",
        ),
        (
            "-c without a value in options",
            startup_with(&[("options", "-c")]),
            "0A000",
            "unsupported startup option",
        ),
        (
            "no user",
            packet(PROTOCOL_3_0, &params(&[("database", "bench")])),
            "28000",
            "no PostgreSQL user name",
        ),
        (
            "a database pgmux does not serve",
            packet(PROTOCOL_3_0, &params(&[("user", "app"), ("database", "nosuchdb")])),
            "3D000",
            "nosuchdb",
        ),
        (
            "a replication connection",
            startup_with(&[("replication", "database")]),
            "0A000",
            "replication",
        ),
    ];
    for (name, bytes, code, needle) in refused {
        cases.add(name, move || {
            let mut raw = Raw::connect(px_ref);
            raw.send(&bytes)?;
            expect_refused(&mut raw, &[], code, needle)
        });
    }
    cases.add("CancelRequest with an unknown key: closed without a reply", move || {
        let mut raw = Raw::connect(px_ref);
        raw.send(&packet(CANCEL_REQUEST, &[0, 0, 0, 1, 0, 0, 0, 2]))?;
        let msgs = raw.until_close(REPLY_TIMEOUT)?;
        match msgs.is_empty() {
            true => Ok(()),
            false => Err(format!("a cancel request got an answer: {msgs:?}")),
        }
    });
    cases.add("a startup packet in one-byte writes still logs in", move || {
        let mut raw = Raw::connect(px_ref);
        for b in startup() {
            raw.send(&[b])?;
            std::thread::sleep(Duration::from_millis(2));
        }
        raw.expect_login()
    });
    cases.add(
        "protocol 3.2 with a _pq_ option gets NegotiateProtocolVersion",
        move || {
            let mut raw = Raw::connect(px_ref);
            let body = params(&[("user", "app"), ("database", "bench"), ("_pq_.no_such_option", "1")]);
            raw.send(&packet(PROTOCOL_3_0 | 2, &body))?;
            let first = raw.read_msg(Instant::now() + REPLY_TIMEOUT)?.ok_or("closed")?;
            let want = [&[0u8, 0, 0, 0, 0, 0, 0, 1][..], b"_pq_.no_such_option\0"].concat();
            if first.tag != b'v' || first.body != want {
                return Err(format!(
                    "expected NegotiateProtocolVersion(3.0, [_pq_.no_such_option]), got {}",
                    first.describe()
                ));
            }
            raw.expect_login()
        },
    );
    cases.add(
        "quotes and backslashes in a startup value reach the server intact",
        move || {
            let name = "x'; DROP TABLE items; --\\'";
            let mut raw = Raw::connect(px_ref);
            raw.send(&startup_with(&[("application_name", name)]))?;
            raw.expect_login()?;
            raw.send(&query("SELECT current_setting('application_name')"))?;
            let deadline = Instant::now() + REPLY_TIMEOUT;
            let mut row = None;
            loop {
                let msg = raw.read_msg(deadline)?.ok_or("closed before ReadyForQuery")?;
                match msg.tag {
                    b'T' | b'C' => {}
                    b'D' => row = msg.body.get(6..).map(|v| String::from_utf8_lossy(v).into_owned()),
                    b'Z' => break,
                    _ => return Err(format!("unexpected {}", msg.describe())),
                }
            }
            match row.as_deref() == Some(name) {
                true => Ok(()),
                false => Err(format!("application_name {row:?}, sent {name:?}")),
            }
        },
    );
    cases.add(
        "a startup setting the server refuses: FATAL at the first query",
        move || {
            let mut raw = Raw::connect(px_ref);
            raw.send(&startup_with(&[("options", "-c work_mem=banana")]))?;
            raw.expect_login()?;
            raw.send(&query("SELECT 1"))?;
            expect_refused(&mut raw, &[], "22023", "work_mem")
        },
    );
    cases.run_rounds(&healthy);
    healthy.finish();
    assert_serving(&mut px);
}

/// Reads an Authentication message: (code, data).
fn read_auth(raw: &mut Raw) -> Result<(i32, Vec<u8>), String> {
    let msg = raw
        .read_msg(Instant::now() + REPLY_TIMEOUT)?
        .ok_or("closed instead of an Authentication message")?;
    if msg.tag != b'R' || msg.body.len() < 4 {
        return Err(format!("expected an Authentication message, got {}", msg.describe()));
    }
    let code = i32::from_be_bytes([msg.body[0], msg.body[1], msg.body[2], msg.body[3]]);
    Ok((code, msg.body[4..].to_vec()))
}

/// Connects to a SCRAM pgmux as app and reads AuthenticationSASL.
fn sasl_start(px: &Pgmux) -> Result<Raw, String> {
    let mut raw = Raw::connect(px);
    raw.send(&startup())?;
    match read_auth(&mut raw)? {
        (10, mechanisms) if mechanisms == b"SCRAM-SHA-256\0\0" => Ok(raw),
        other => Err(format!("expected AuthenticationSASL [SCRAM-SHA-256], got {other:?}")),
    }
}

/// SASLInitialResponse: mechanism, data length (as given), data.
fn sasl_initial(mechanism: &str, len: i32, data: &[u8]) -> Vec<u8> {
    let mut body = mechanism.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&len.to_be_bytes());
    body.extend_from_slice(data);
    frame(b'p', &body)
}

/// A well-formed client-first-message; returns pgmux's server-first-message.
fn sasl_first(raw: &mut Raw) -> Result<String, String> {
    let client_first = b"n,,n=,r=rawclientnonce0123456789";
    raw.send(&sasl_initial("SCRAM-SHA-256", client_first.len() as i32, client_first))?;
    match read_auth(raw)? {
        (11, server_first) => Ok(String::from_utf8_lossy(&server_first).into_owned()),
        other => Err(format!("expected AuthenticationSASLContinue, got {other:?}")),
    }
}

#[test]
fn malformed_scram_exchanges_are_refused_and_closed() {
    let mut px = Pgmux::start(
        "auth_type = \"scram-sha-256\"",
        "[users.app]\npassword = \"app\"\n[databases.bench]\nport = {pg_port}\n",
    );
    let healthy = Healthy::start_at(px.url("app", "app", "bench"));
    let px_ref = &px;
    let mut cases = Cases::default();
    let client_first = b"n,,n=,r=abc".to_vec();
    // (name, bytes sent after AuthenticationSASL, SQLSTATE, text the message must contain)
    let refused: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "a Query instead of SASLInitialResponse",
            query("SELECT 1"),
            "08P01",
            "expected a password message",
        ),
        (
            "'p' of length 0x7fffffff",
            header(b'p', 0x7fff_ffff),
            "08P01",
            "protocol violation",
        ),
        ("'p' of length 2", header(b'p', 2), "08P01", "invalid message length"),
        (
            "mechanism not NUL-terminated",
            frame(b'p', b"SCRAM-SHA-256"),
            "08P01",
            "malformed authentication message",
        ),
        (
            "no data length",
            frame(b'p', b"SCRAM-SHA-256\0"),
            "08P01",
            "malformed authentication message",
        ),
        (
            "data length beyond the message",
            sasl_initial("SCRAM-SHA-256", 1000, &client_first),
            "08P01",
            "malformed authentication message",
        ),
        (
            "data length -1 (no data)",
            sasl_initial("SCRAM-SHA-256", -1, b""),
            "08P01",
            "SCRAM",
        ),
        (
            "unknown mechanism",
            sasl_initial("SCRAM-SHA-1", client_first.len() as i32, &client_first),
            "08P01",
            "mechanism",
        ),
        (
            "garbage client-first-message",
            sasl_initial("SCRAM-SHA-256", 5, b"hello"),
            "08P01",
            "SCRAM",
        ),
        (
            "channel binding asked for",
            sasl_initial("SCRAM-SHA-256", 35, b"p=tls-server-end-point,,n=,r=abcdef"),
            "08P01",
            "channel binding",
        ),
        (
            "an authorization identity",
            sasl_initial("SCRAM-SHA-256", 16, b"n,a=root,n=,r=ab"),
            "08P01",
            "SCRAM",
        ),
    ];
    for (name, bytes, code, needle) in refused {
        cases.add(name, move || {
            let mut raw = sasl_start(px_ref)?;
            raw.send(&bytes)?;
            expect_refused(&mut raw, &[], code, needle)
        });
    }
    cases.add("garbage client-final-message", move || {
        let mut raw = sasl_start(px_ref)?;
        sasl_first(&mut raw)?;
        raw.send(&frame(b'p', b"garbage"))?;
        expect_refused(&mut raw, &[], "08P01", "SCRAM")
    });
    cases.add("client-final-message with another nonce", move || {
        let mut raw = sasl_start(px_ref)?;
        sasl_first(&mut raw)?;
        let proof = "A".repeat(43) + "=";
        raw.send(&frame(b'p', format!("c=biws,r=othernonce,p={proof}").as_bytes()))?;
        expect_refused(&mut raw, &[], "08P01", "nonce")
    });
    cases.add("client-final-message with a wrong proof", move || {
        let mut raw = sasl_start(px_ref)?;
        let server_first = sasl_first(&mut raw)?;
        let nonce = server_first
            .split(',')
            .find_map(|part| part.strip_prefix("r="))
            .ok_or_else(|| format!("no nonce in {server_first:?}"))?;
        let proof = "A".repeat(43) + "=";
        raw.send(&frame(b'p', format!("c=biws,r={nonce},p={proof}").as_bytes()))?;
        expect_refused(&mut raw, &[], "28P01", "password authentication failed")
    });
    cases.add("a Query instead of the client-final-message", move || {
        let mut raw = sasl_start(px_ref)?;
        sasl_first(&mut raw)?;
        raw.send(&query("SELECT 1"))?;
        expect_refused(&mut raw, &[], "08P01", "expected a password message")
    });
    cases.add("closed in the middle of the exchange", move || {
        let mut raw = sasl_start(px_ref)?;
        sasl_first(&mut raw)?;
        raw.send(b"p\0\0")?;
        raw.stream.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        // pgmux may still send its 08006 to the half-closed socket.
        let msgs = raw.until_close(REPLY_TIMEOUT)?;
        match &msgs[..] {
            [] => Ok(()),
            [e] if e.tag == b'E' => Ok(()),
            _ => Err(format!("unexpected messages: {msgs:?}")),
        }
    });
    cases.run_rounds(&healthy);
    healthy.finish();
    assert_serving(&mut px);
}

#[test]
fn encryption_requests_get_n_then_a_plain_startup_works() {
    let mut px = pgmux("");
    let healthy = Healthy::start_at(px.url("app", "app", "bench"));
    let px_ref = &px;
    let mut cases = Cases::default();
    let sequences: [(&str, &[u32]); 3] = [
        ("SSLRequest", &[SSL_REQUEST]),
        ("GSSENCRequest", &[GSSENC_REQUEST]),
        (
            "GSSENCRequest then SSLRequest (libpq's order)",
            &[GSSENC_REQUEST, SSL_REQUEST],
        ),
    ];
    for (name, requests) in sequences {
        cases.add(name, move || {
            let mut raw = Raw::connect(px_ref);
            for &code in requests {
                raw.send(&packet(code, b""))?;
                let answer = raw.read_byte()?;
                if answer != b'N' {
                    return Err(format!("answer {:?}, expected 'N'", answer as char));
                }
            }
            raw.send(&startup())?;
            raw.expect_login()?;
            raw.send(&query("SELECT 'after ' || 'N'"))?;
            let deadline = Instant::now() + REPLY_TIMEOUT;
            let mut row = None;
            loop {
                let msg = raw.read_msg(deadline)?.ok_or("closed before ReadyForQuery")?;
                match msg.tag {
                    b'T' | b'C' => {}
                    b'D' => row = Some(msg.body),
                    b'Z' => break,
                    _ => return Err(format!("unexpected {}", msg.describe())),
                }
            }
            // DataRow: 1 column, length 7, "after N".
            let want = [&[0u8, 1, 0, 0, 0, 7][..], b"after N"].concat();
            if row.as_deref() != Some(&want[..]) {
                return Err(format!("DataRow {row:?}"));
            }
            raw.send(&frame(b'X', b""))?;
            let rest = raw.until_close(REPLY_TIMEOUT)?;
            match rest.is_empty() {
                true => Ok(()),
                false => Err(format!("messages after Terminate: {rest:?}")),
            }
        });
    }
    cases.run_rounds(&healthy);
    healthy.finish();
    assert_serving(&mut px);
}

#[test]
fn malformed_messages_after_login_are_refused_and_closed() {
    // One server only: a refused client that kept its server would stall the healthy client.
    let mut px = pgmux("max_message_size = 4096\ndefault_pool_size = 1");
    let healthy = Healthy::start_at(px.url("app", "app", "bench"));
    let px_ref = &px;
    let mut cases = Cases::default();
    let big_sql = format!("SELECT '{}'", "x".repeat(8 * 1024));
    // (name, bytes sent after ReadyForQuery, text the 08P01 message must contain)
    let refused: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "'Q' of length 0x7fffffff",
            header(b'Q', 0x7fff_ffff),
            "max_message_size",
        ),
        (
            "'Q' of length 0x7fffffff with some body",
            [header(b'Q', 0x7fff_ffff), b"SELECT 1".to_vec()].concat(),
            "max_message_size",
        ),
        ("unknown message type '?'", frame(b'?', b""), "invalid message type"),
        ("unknown message type NUL", frame(0, b"abc"), "invalid message type"),
        ("startup packet sent again", startup(), "protocol violation"),
        ("'Q' of length 2", header(b'Q', 2), "invalid message length 2"),
        ("'Q' of length 0", header(b'Q', 0), "invalid message length 0"),
        (
            "8 KB query over max_message_size 4096",
            query(&big_sql),
            "max_message_size",
        ),
        ("PasswordMessage after login", frame(b'p', b"app\0"), "password message"),
        (
            "SASLInitialResponse-like 'p' after login",
            frame(b'p', b"SCRAM-SHA-256\0\xff\xff\xff\xff"),
            "password message",
        ),
    ];
    for (name, bytes, needle) in refused {
        cases.add(name, move || {
            let mut raw = Raw::login(px_ref)?;
            raw.send(&bytes)?;
            expect_refused(&mut raw, &[], "08P01", needle)
        });
    }
    cases.add("a good query followed by garbage in one write", move || {
        let mut raw = Raw::login(px_ref)?;
        raw.send(&[query("SELECT 1"), frame(b'?', b"")].concat())?;
        // Running the good query first is allowed, not required.
        expect_refused(&mut raw, b"TDCZ", "08P01", "invalid message type")
    });
    cases.add("garbage inside an open transaction (relay path)", move || {
        let mut raw = Raw::login(px_ref)?;
        raw.send(&query("BEGIN"))?;
        raw.expect_ready(b'T')?;
        raw.send(&header(b'Q', 0x7fff_ffff))?;
        expect_refused(&mut raw, &[], "08P01", "max_message_size")
    });
    let healthy_ref = &healthy;
    cases.add("half a query, stalled, holds no server meanwhile", move || {
        let mut raw = Raw::login(px_ref)?;
        let q = query("SELECT 'stalled'");
        raw.send(&q[..9])?;
        let before = healthy_ref.count();
        let t0 = Instant::now();
        while healthy_ref.count() < before + 3 {
            if t0.elapsed() > REPLY_TIMEOUT {
                return Err("the healthy client stalled behind a half-sent query (pool of one)".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        raw.send(&q[9..])?;
        raw.expect_ready(b'I')
    });
    cases.add("garbage while a query runs (relay path)", move || {
        let mut raw = Raw::login(px_ref)?;
        raw.send(&query("SELECT pg_sleep(0.3)"))?;
        std::thread::sleep(Duration::from_millis(50));
        raw.send(&frame(b'?', b"x"))?;
        expect_refused(&mut raw, b"TDCZ", "08P01", "invalid message type")
    });
    cases.add("half a 'Q' frame, then the write side shut", move || {
        let mut raw = Raw::login(px_ref)?;
        let q = query("SELECT 'truncated'");
        raw.send(&q[..q.len() / 2])?;
        raw.stream.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        let msgs = raw.until_close(REPLY_TIMEOUT)?;
        match msgs.is_empty() {
            true => Ok(()),
            false => Err(format!("expected a silent close, got {msgs:?}")),
        }
    });
    cases.add("half a header, then the write side shut", move || {
        let mut raw = Raw::login(px_ref)?;
        raw.send(b"Q\0\0")?;
        raw.stream.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        let msgs = raw.until_close(REPLY_TIMEOUT)?;
        match msgs.is_empty() {
            true => Ok(()),
            false => Err(format!("expected a silent close, got {msgs:?}")),
        }
    });
    cases.add("PasswordMessage inside an open transaction (relay path)", move || {
        let mut raw = Raw::login(px_ref)?;
        raw.send(&query("BEGIN"))?;
        raw.expect_ready(b'T')?;
        raw.send(&frame(b'p', b"app\0"))?;
        expect_refused(&mut raw, &[], "08P01", "password message")
    });
    cases.run_rounds(&healthy);
    // The servers of the clients refused inside a transaction were rolled back or closed.
    let sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'bench' AND usename = 'app' \
               AND state LIKE 'idle in transaction%'";
    let t0 = Instant::now();
    loop {
        let n = cluster().psql("postgres", sql);
        if n == "0" {
            break;
        }
        assert!(t0.elapsed() < REPLY_TIMEOUT, "{n} server(s) left idle in transaction");
        std::thread::sleep(Duration::from_millis(50));
    }
    healthy.finish();
    assert_serving(&mut px);
}

#[test]
fn a_stalled_login_is_closed_by_client_login_timeout() {
    let mut px = pgmux("client_login_timeout = 1");
    let healthy = Healthy::start_at(px.url("app", "app", "bench"));
    // 3 bytes of a startup packet; nothing at all; an SSLRequest and then nothing.
    let mut stalled: Vec<(&str, Raw)> = Vec::new();
    for i in 0..12 {
        let mut raw = Raw::connect(&px);
        let name = match i % 3 {
            0 => {
                raw.send(&startup()[..3]).unwrap();
                "3 bytes of a startup packet"
            }
            1 => "nothing sent",
            _ => {
                raw.send(&packet(SSL_REQUEST, b"")).unwrap();
                assert_eq!(raw.read_byte(), Ok(b'N'));
                "SSLRequest, then nothing"
            }
        };
        stalled.push((name, raw));
    }
    let t0 = Instant::now();
    let mut cases = Cases::default();
    for (i, (name, raw)) in stalled.iter_mut().enumerate() {
        cases.once(&format!("{name} #{i}"), || {
            let msgs = raw.until_close(Duration::from_secs(4))?;
            let took = t0.elapsed();
            if took < Duration::from_millis(700) {
                return Err(format!("closed after only {took:?}, before client_login_timeout (1 s)"));
            }
            match &msgs[..] {
                [] => Ok(()),
                [e] if e.tag == b'E' && e.fields().get(&'C').map(String::as_str) == Some("08006") => {
                    let message = e.fields().remove(&'M').unwrap_or_default();
                    match message.contains("client_login_timeout") {
                        true => Ok(()),
                        false => Err(format!("message does not name client_login_timeout: {message:?}")),
                    }
                }
                _ => Err(format!("unexpected messages: {msgs:?}")),
            }
        });
    }
    cases.assert_ok();
    // The healthy client logged in long before and has been idle between queries for > 1 s in
    // total: the login timeout must not touch it.
    std::thread::sleep(Duration::from_millis(1200));
    healthy.finish();
    assert_serving(&mut px);
}

#[test]
fn a_burst_of_1000_connections_leaves_pgmux_serving() {
    // A small max_client_conn: a client slot leaked by any of the burst connections would
    // soon make pgmux refuse everyone with 53300.
    let mut px = pgmux("max_client_conn = 50");
    let healthy = Healthy::start_at(px.url("app", "app", "bench"));
    let t0 = Instant::now();
    // Batches of 200 keep the test within any file-descriptor limit.
    for batch in 0..5 {
        let mut conns = Vec::new();
        for i in 0..200 {
            let mut raw = Raw::connect(&px);
            // Writes may fail once pgmux has refused or closed: that is fine here.
            let _ = match (batch * 200 + i) % 4 {
                0 => Ok(()),
                1 => raw.stream.write_all(b"GET / HTTP/1.1\r\n\r\n"),
                2 => raw.stream.write_all(&startup()),
                _ => raw.stream.write_all(&startup()[..5]),
            };
            conns.push(raw);
        }
        drop(conns);
    }
    eprintln!("1000 connections opened and closed in {:?}", t0.elapsed());
    // Every slot must come back: 48 new clients fit beside the healthy one (retrying while
    // pgmux may still be closing the last of the burst).
    let url = px.url("app", "app", "bench");
    let many = block_on(async {
        let mut clients = Vec::new();
        let t0 = Instant::now();
        while clients.len() < 48 {
            match try_connect(&url).await {
                Ok(client) => clients.push(client),
                Err(e) if t0.elapsed() > Duration::from_secs(10) => {
                    panic!("client {} still refused 10 s after the burst: {e:?}", clients.len() + 1)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        for c in &clients {
            assert_eq!(try_value(c, "SELECT 1").await.as_deref(), Ok("1"));
        }
        clients.len()
    });
    assert_eq!(many, 48);
    healthy.finish();
    assert_serving(&mut px);
}

/// A tiny deterministic xorshift64 generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Random input for a connection that has just opened.
fn fuzz_startup(rng: &mut Rng) -> Vec<u8> {
    match rng.below(4) {
        0 => {
            let n = rng.below(64);
            rng.bytes(n)
        }
        1 => {
            let code = match rng.below(7) {
                0 => PROTOCOL_3_0,
                1 => PROTOCOL_3_0 | rng.below(4) as u32,
                2 => 2 << 16,
                3 => SSL_REQUEST,
                4 => GSSENC_REQUEST,
                5 => CANCEL_REQUEST,
                _ => rng.next() as u32,
            };
            let n = rng.below(40);
            let mut p = packet(code, &rng.bytes(n));
            if rng.below(4) == 0 {
                let n = rng.below(8);
                p.extend(rng.bytes(n)); // trailing junk
            }
            p
        }
        2 => {
            // Parameter lists made of plausible words, NULs in random places.
            let words: [&[u8]; 12] = [
                b"user",
                b"app",
                b"database",
                b"bench",
                b"nosuchdb",
                b"options",
                b"-c work_mem=1MB",
                b"application_name",
                b"replication",
                b"_pq_.x",
                b"",
                b"\xff",
            ];
            let mut body = Vec::new();
            for _ in 0..rng.below(8) {
                body.extend_from_slice(words[rng.below(words.len())]);
                if rng.below(6) != 0 {
                    body.push(0);
                }
            }
            if rng.below(2) == 0 {
                body.push(0);
            }
            packet(PROTOCOL_3_0, &body)
        }
        _ => {
            let mut p = (rng.below(12_000) as u32).to_be_bytes().to_vec();
            let n = rng.below(64);
            p.extend(rng.bytes(n));
            p
        }
    }
}

/// Random input for a logged-in connection. Never a FunctionCall ('F'): a random one could
/// call a real function.
fn fuzz_message(rng: &mut Rng) -> Vec<u8> {
    const TAGS: &[u8] = b"BCdcfDEHPpQSX?\0Zz";
    let one_frame = |rng: &mut Rng| {
        let tag = *rng.pick(TAGS);
        let n = rng.below(40);
        let body = match (tag, rng.below(3)) {
            (b'Q', 0) => b"SELECT 1\0".to_vec(),
            _ => rng.bytes(n),
        };
        let mut f = frame(tag, &body);
        if rng.below(3) == 0 {
            // Off by a little: short, long, or below the minimum.
            let len = (body.len() as i64 + 4 + rng.below(13) as i64 - 6).max(0) as u32;
            f[1..5].copy_from_slice(&len.to_be_bytes());
        }
        f
    };
    match rng.below(4) {
        0 => {
            let n = rng.below(64);
            let mut b = rng.bytes(n);
            if b.first() == Some(&b'F') {
                b[0] = b'?';
            }
            b
        }
        1 | 2 => one_frame(rng),
        _ => {
            let mut b = Vec::new();
            for _ in 0..1 + rng.below(4) {
                b.extend(one_frame(rng));
            }
            b
        }
    }
}

#[test]
fn fuzzed_input_never_crashes_or_hangs_pgmux() {
    const ITERATIONS: usize = 300;
    const CLOSE_WITHIN: Duration = Duration::from_secs(2);
    let mut px = pgmux("max_message_size = 4096");
    let healthy = Healthy::start_at(px.url("app", "app", "bench"));
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    let mut failures = Vec::new();
    let t0 = Instant::now();
    for i in 0..ITERATIONS {
        let after_login = i % 2 == 1;
        let bytes = match after_login {
            true => fuzz_message(&mut rng),
            false => fuzz_startup(&mut rng),
        };
        let stage = if after_login { "after login" } else { "before startup" };
        let mut raw = match after_login {
            true => match Raw::login(&px) {
                Ok(raw) => raw,
                Err(e) => {
                    failures.push(format!("#{i}: login failed: {e}"));
                    continue;
                }
            },
            false => Raw::connect(&px),
        };
        // pgmux may already have refused and closed: write errors are fine.
        let _ = raw.stream.write_all(&bytes);
        let _ = raw.stream.shutdown(Shutdown::Write);
        match raw.until_close(CLOSE_WITHIN) {
            Ok(msgs) => {
                for m in &msgs {
                    if m.tag == b'E' {
                        let code = m.fields().remove(&'C').unwrap_or_default();
                        if code.len() != 5 {
                            failures.push(format!("#{i} {stage}: bad SQLSTATE {code:?} for {}", hex(&bytes)));
                        }
                        *outcomes.entry(format!("{stage}: {code}")).or_default() += 1;
                    }
                }
                if !msgs.iter().any(|m| m.tag == b'E') {
                    *outcomes.entry(format!("{stage}: no error")).or_default() += 1;
                }
            }
            Err(e) => failures.push(format!("#{i} {stage}: {e}; input {}", hex(&bytes))),
        }
    }
    let mut summary: Vec<_> = outcomes.into_iter().collect();
    summary.sort();
    eprintln!("{ITERATIONS} fuzz inputs in {:?}: {summary:?}", t0.elapsed());
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    healthy.finish();
    assert_serving(&mut px);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_after_the_last_sync_leaves_the_server_free() {
    // Issue 23: a Flush after the last Sync (psycopg ends a pipeline block with one) marked the
    // transaction unsynced, so the server stayed with the client; with a pool of one, the next
    // client waited out query_wait_timeout.
    let px = pgmux("default_pool_size = 1\nquery_wait_timeout = 3");
    let mut raw = Raw::login(&px).unwrap();
    let mut bytes = frame(b'P', b"\0select 1\0\0\0");
    bytes.extend(frame(b'B', b"\0\0\0\0\0\0\0\0"));
    bytes.extend(frame(b'E', b"\0\0\0\0\0"));
    bytes.extend(frame(b'S', b""));
    bytes.extend(frame(b'H', b""));
    raw.send(&bytes).unwrap();
    raw.expect_ready(b'I').unwrap();
    // And a Flush on its own, later, while the client holds no server.
    raw.send(&frame(b'H', b"")).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let other = connect(&px.url("app", "app", "bench")).await;
    let t0 = Instant::now();
    assert_eq!(support::value(&other, "SELECT 7").await, "7");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "the other client waited {:?}",
        t0.elapsed()
    );
    drop(other);
    // The first client goes on as before.
    raw.send(&query("select 1")).unwrap();
    raw.expect_ready(b'I').unwrap();
}

/// Logs in with `extra` startup parameters; the ParameterStatus pairs pgmux sent.
fn reported_at_login(px: &Pgmux, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut raw = Raw::connect(px);
    raw.send(&startup_with(extra)).unwrap();
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let mut reported = HashMap::new();
    loop {
        let msg = raw.read_msg(deadline).unwrap().expect("closed during login");
        match msg.tag {
            b'S' => {
                let mut parts = msg.body.split(|&b| b == 0);
                let name = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                let value = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                reported.insert(name, value);
            }
            b'Z' => return reported,
            b'E' => panic!("login failed: {}", msg.describe()),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_status_reports_values_as_the_server_spells_them() {
    // Issue 23: pgmux repeated the client's raw startup value (iso,dmy) where a direct
    // connection is told the server's (ISO, DMY); psycopg then rejects every date.
    let px = pgmux("");
    let extra = [
        ("options", "-c DateStyle=iso,dmy -c IntervalStyle=iso_8601"),
        ("TimeZone", "europe/rome"),
        ("client_encoding", "utf8"),
    ];
    for round in 0..2 {
        // The second login finds the spellings learnt by the first.
        let got = reported_at_login(&px, &extra);
        assert_eq!(
            got.get("DateStyle").map(String::as_str),
            Some("ISO, DMY"),
            "round {round}: {got:?}"
        );
        assert_eq!(
            got.get("TimeZone").map(String::as_str),
            Some("Europe/Rome"),
            "round {round}: {got:?}"
        );
        assert_eq!(
            got.get("IntervalStyle").map(String::as_str),
            Some("iso_8601"),
            "round {round}"
        );
        assert_eq!(
            got.get("client_encoding").map(String::as_str),
            Some("UTF8"),
            "round {round}"
        );
    }
}
