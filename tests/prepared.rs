//! Protocol-level prepared statements in transaction mode: many clients preparing on few
//! servers, and raw-protocol exchanges whose replies must be exactly PostgreSQL's own (each is
//! also run against PostgreSQL directly and compared), LRU eviction, DEALLOCATE / Close /
//! DISCARD ALL, SQL PREPARE refused, and max_prepared_statements = 0 passing everything through.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::*;

const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A trust-auth pgmux in front of `bench` (pgmux itself logs in as app/app).
fn pgmux(pooler_extra: &str) -> Pgmux {
    Pgmux::start(
        &format!("auth_type = \"trust\"\n{pooler_extra}"),
        "[users.app]\npassword = \"app\"\n[databases.bench]\nport = {pg_port}\n",
    )
}

// ---------------------------------------------------------------------------------------------
// Frontend messages.

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![tag];
    f.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    f.extend_from_slice(body);
    f
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// Parse with no parameter types given.
fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name);
    cstr(&mut b, sql);
    b.extend_from_slice(&0u16.to_be_bytes());
    frame(b'P', &b)
}

/// Bind to the unnamed portal, text parameters, text results.
fn bind(stmt: &str, params: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, "");
    cstr(&mut b, stmt);
    b.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(&(params.len() as u16).to_be_bytes());
    for p in params {
        b.extend_from_slice(&(p.len() as u32).to_be_bytes());
        b.extend_from_slice(p.as_bytes());
    }
    b.extend_from_slice(&0u16.to_be_bytes());
    frame(b'B', &b)
}

fn describe_statement(name: &str) -> Vec<u8> {
    let mut b = vec![b'S'];
    cstr(&mut b, name);
    frame(b'D', &b)
}

fn close_statement(name: &str) -> Vec<u8> {
    let mut b = vec![b'S'];
    cstr(&mut b, name);
    frame(b'C', &b)
}

fn execute() -> Vec<u8> {
    frame(b'E', b"\0\0\0\0\0")
}

fn sync() -> Vec<u8> {
    frame(b'S', b"")
}

fn query(sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, sql);
    frame(b'Q', &b)
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

// ---------------------------------------------------------------------------------------------
// A raw protocol client.

struct Raw {
    stream: TcpStream,
}

impl Raw {
    /// Logs in (trust) as `user` to `bench` on `port`.
    fn login(port: u16, user: &str) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        let mut raw = Raw { stream };
        let mut body = 196_608u32.to_be_bytes().to_vec();
        for (k, v) in [("user", user), ("database", "bench")] {
            cstr(&mut body, k);
            cstr(&mut body, v);
        }
        body.push(0);
        let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        raw.stream.write_all(&packet).unwrap();
        let (tag, body) = raw.read_msg();
        assert_eq!((tag, &body[..]), (b'R', &[0u8, 0, 0, 0][..]), "no AuthenticationOk");
        while raw.read_msg().0 != b'Z' {}
        raw
    }

    fn read_msg(&mut self) -> (u8, Vec<u8>) {
        let mut head = [0u8; 5];
        self.stream.read_exact(&mut head).expect("reading a message header");
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        self.stream.read_exact(&mut body).expect("reading a message body");
        (head[0], body)
    }

    /// Sends `bytes` and describes every reply up to the `readies`-th ReadyForQuery:
    /// a tag, `C:<command tag>`, `E:<SQLSTATE>`, `Z:<status>`, `D:<first column>`.
    fn exchange(&mut self, bytes: &[u8], readies: usize) -> Vec<String> {
        self.stream.write_all(bytes).unwrap();
        let mut seen = Vec::new();
        let mut left = readies;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while left > 0 {
            assert!(Instant::now() < deadline, "replies so far: {seen:?}");
            let (tag, body) = self.read_msg();
            let text = |b: &[u8]| String::from_utf8_lossy(b.split(|&c| c == 0).next().unwrap_or_default()).into_owned();
            match tag {
                b'S' | b'N' => continue,
                b'C' => seen.push(format!("C:{}", text(&body))),
                b'E' => seen.push(format!("E:{}", field(&body, b'C'))),
                b'Z' => {
                    left -= 1;
                    seen.push(format!("Z:{}", body[0] as char));
                }
                b'D' => seen.push(format!("D:{}", first_column(&body))),
                tag => seen.push((tag as char).to_string()),
            }
        }
        seen
    }

    /// The message of the next ErrorResponse after sending `bytes` (read up to one ReadyForQuery).
    fn error_message(&mut self, bytes: &[u8]) -> String {
        self.stream.write_all(bytes).unwrap();
        let mut message = None;
        loop {
            let (tag, body) = self.read_msg();
            match tag {
                b'E' => message = Some(field(&body, b'M')),
                b'Z' => return message.expect("no ErrorResponse"),
                _ => {}
            }
        }
    }
}

fn field(body: &[u8], kind: u8) -> String {
    body.split(|&b| b == 0)
        .find(|f| f.first() == Some(&kind))
        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
        .unwrap_or_default()
}

fn first_column(body: &[u8]) -> String {
    let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
    if len < 0 {
        return "NULL".into();
    }
    String::from_utf8_lossy(&body[6..6 + len as usize]).into_owned()
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Runs the same steps (bytes, ReadyForQuery count, expected replies) on PostgreSQL directly
/// and through pgmux: both must give exactly the expected replies.
fn same_as_postgres(px: &Pgmux, steps: &[(Vec<u8>, usize, Vec<String>)]) {
    let mut pg = Raw::login(cluster().port, "trustuser");
    let mut mux = Raw::login(px.port, "app");
    for (i, (bytes, readies, want)) in steps.iter().enumerate() {
        let direct = pg.exchange(bytes, *readies);
        assert_eq!(&direct, want, "step {i}: PostgreSQL itself answered differently");
        let through = mux.exchange(bytes, *readies);
        assert_eq!(&through, want, "step {i}: pgmux answered differently from PostgreSQL");
    }
}

// ---------------------------------------------------------------------------------------------
// Many clients, few servers.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_clients_prepare_on_two_servers() {
    let px = pgmux("default_pool_size = 2");
    let _ = &px;
    let url = px.url("app", "app", "bench");
    let mut tasks = Vec::new();
    for i in 0..10i32 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = connect(&url).await;
            // Shared text (one pooler-wide statement for all) and text of this client's own.
            let shared = client.prepare("SELECT $1::int4 + 1").await.unwrap();
            let own = client
                .prepare(&format!("SELECT $1::int4 * {}, pg_backend_pid()", i + 2))
                .await
                .unwrap();
            let text = client.prepare("SELECT $1::text || '!'").await.unwrap();
            for j in 0..30i32 {
                let row = client.query_one(&shared, &[&j]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), j + 1);
                let row = client.query_one(&own, &[&j]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), j * (i + 2));
                let s = format!("c{i}-{j}");
                let row = client.query_one(&text, &[&s]).await.unwrap();
                assert_eq!(row.get::<_, String>(0), format!("{s}!"));
                if j % 10 == 0 {
                    // Inside a transaction block, and a statement prepared mid-session.
                    client.batch_execute("BEGIN").await.unwrap();
                    let late = client.prepare(&format!("SELECT {i} + $1::int4")).await.unwrap();
                    let row = client.query_one(&late, &[&j]).await.unwrap();
                    assert_eq!(row.get::<_, i32>(0), i + j);
                    client.batch_execute("COMMIT").await.unwrap();
                }
            }
            // Pipelined: several prepared queries in flight at once on one client.
            let futures = (0..8i32).map(|k| {
                let (client, shared) = (&client, &shared);
                async move { client.query_one(shared, &[&k]).await.unwrap().get::<_, i32>(0) }
            });
            let got = futures_util::future::join_all(futures).await;
            assert_eq!(got, (1..=8).collect::<Vec<i32>>());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        cluster().backend_count("bench", "app") <= 2 + 1,
        "more servers than the pool allows"
    );
}

// ---------------------------------------------------------------------------------------------
// Errors keep their shape: compared with PostgreSQL itself.

#[test]
fn failing_parse_in_a_pipeline() {
    let px = pgmux("default_pool_size = 1");
    same_as_postgres(
        &px,
        &[
            (
                cat(&[parse("s1", "SELEC 1"), bind("s1", &[]), execute(), sync()]),
                1,
                strs(&["E:42601", "Z:I"]),
            ),
            // The failed Parse left no s1 behind, in pgmux's books either.
            (
                cat(&[parse("s1", "SELECT 1"), bind("s1", &[]), execute(), sync()]),
                1,
                strs(&["1", "2", "D:1", "C:SELECT 1", "Z:I"]),
            ),
            // Two stretches in one write: the second, after the failing first, still runs.
            (
                cat(&[
                    parse("s2", "SELECT 2"),
                    bind("nope", &[]),
                    parse("s3", "SELECT 3"),
                    sync(),
                    bind("s2", &[]),
                    execute(),
                    sync(),
                    bind("s3", &[]),
                    execute(),
                    sync(),
                ]),
                3,
                strs(&["1", "E:26000", "Z:I", "2", "D:2", "C:SELECT 1", "Z:I", "E:26000", "Z:I"]),
            ),
        ],
    );
}

#[test]
fn execute_after_an_error_before_sync() {
    let px = pgmux("default_pool_size = 1");
    same_as_postgres(
        &px,
        &[
            (
                cat(&[
                    parse("d", "SELECT 1/x FROM generate_series($1::int, $1::int) x"),
                    bind("d", &["0"]),
                    execute(),
                    execute(),
                    sync(),
                ]),
                1,
                strs(&["1", "2", "E:22012", "Z:I"]),
            ),
            (
                cat(&[bind("d", &["1"]), execute(), sync()]),
                1,
                strs(&["2", "D:1", "C:SELECT 1", "Z:I"]),
            ),
        ],
    );
}

#[test]
fn statements_never_prepared_and_names_already_used() {
    let px = pgmux("default_pool_size = 1");
    same_as_postgres(
        &px,
        &[
            (
                cat(&[describe_statement("never"), sync()]),
                1,
                strs(&["E:26000", "Z:I"]),
            ),
            (
                cat(&[bind("never", &[]), execute(), sync()]),
                1,
                strs(&["E:26000", "Z:I"]),
            ),
            (cat(&[parse("s1", "SELECT $1::int"), sync()]), 1, strs(&["1", "Z:I"])),
            // Re-preparing s1 fails, and skips the rest up to Sync, as PostgreSQL does.
            (
                cat(&[parse("s1", "SELECT 42"), bind("s1", &["7"]), execute(), sync()]),
                1,
                strs(&["E:42P05", "Z:I"]),
            ),
            // s1 is still the first one.
            (
                cat(&[describe_statement("s1"), bind("s1", &["7"]), execute(), sync()]),
                1,
                strs(&["t", "T", "2", "D:7", "C:SELECT 1", "Z:I"]),
            ),
            // Inside a transaction block the error fails the transaction.
            (query("BEGIN"), 1, strs(&["C:BEGIN", "Z:T"])),
            (cat(&[parse("s1", "SELECT 1"), sync()]), 1, strs(&["E:42P05", "Z:E"])),
            (query("ROLLBACK"), 1, strs(&["C:ROLLBACK", "Z:I"])),
        ],
    );
    let mut raw = Raw::login(px.port, "app");
    raw.exchange(&cat(&[parse("mine", "SELECT 1"), sync()]), 1);
    let message = raw.error_message(&cat(&[parse("mine", "SELECT 2"), sync()]));
    assert_eq!(message, "prepared statement \"mine\" already exists");
    let message = raw.error_message(&cat(&[describe_statement("other"), sync()]));
    assert_eq!(message, "prepared statement \"other\" does not exist");
}

#[test]
fn close_deallocate_and_discard_all() {
    let px = pgmux("default_pool_size = 1");
    same_as_postgres(
        &px,
        &[
            (
                cat(&[parse("a", "SELECT 'a'"), parse("b", "SELECT 'b'"), sync()]),
                1,
                strs(&["1", "1", "Z:I"]),
            ),
            // Close: gone for the client; a Close of a name never used is no error.
            (
                cat(&[close_statement("a"), close_statement("zzz"), sync()]),
                1,
                strs(&["3", "3", "Z:I"]),
            ),
            (cat(&[describe_statement("a"), sync()]), 1, strs(&["E:26000", "Z:I"])),
            (
                cat(&[parse("a", "SELECT 'a2'"), bind("a", &[]), execute(), sync()]),
                1,
                strs(&["1", "2", "D:a2", "C:SELECT 1", "Z:I"]),
            ),
            // A Close skipped after an error did not happen (seen by the stretches sent after
            // that error came back).
            (
                cat(&[bind("zzz", &[]), close_statement("a"), sync()]),
                1,
                strs(&["E:26000", "Z:I"]),
            ),
            (
                cat(&[bind("a", &[]), execute(), sync()]),
                1,
                strs(&["2", "D:a2", "C:SELECT 1", "Z:I"]),
            ),
            (query("DEALLOCATE a"), 1, strs(&["C:DEALLOCATE", "Z:I"])),
            (query("DEALLOCATE a"), 1, strs(&["E:26000", "Z:I"])),
            (cat(&[bind("a", &[]), execute(), sync()]), 1, strs(&["E:26000", "Z:I"])),
            (
                cat(&[bind("b", &[]), execute(), sync()]),
                1,
                strs(&["2", "D:b", "C:SELECT 1", "Z:I"]),
            ),
            (query("DEALLOCATE ALL"), 1, strs(&["C:DEALLOCATE ALL", "Z:I"])),
            (cat(&[describe_statement("b"), sync()]), 1, strs(&["E:26000", "Z:I"])),
            (cat(&[parse("c", "SELECT 'c'"), sync()]), 1, strs(&["1", "Z:I"])),
            (query("DISCARD ALL"), 1, strs(&["C:DISCARD ALL", "Z:I"])),
            (cat(&[describe_statement("c"), sync()]), 1, strs(&["E:26000", "Z:I"])),
            // c may be prepared again (no 42P05), and runs.
            (
                cat(&[parse("c", "SELECT 'c'"), bind("c", &[]), execute(), sync()]),
                1,
                strs(&["1", "2", "D:c", "C:SELECT 1", "Z:I"]),
            ),
            // DISCARD ALL refused inside a transaction block leaves the statements.
            (query("BEGIN"), 1, strs(&["C:BEGIN", "Z:T"])),
            (query("DISCARD ALL"), 1, strs(&["E:25001", "Z:E"])),
            (query("ROLLBACK"), 1, strs(&["C:ROLLBACK", "Z:I"])),
            (
                cat(&[bind("c", &[]), execute(), sync()]),
                1,
                strs(&["2", "D:c", "C:SELECT 1", "Z:I"]),
            ),
            // Inside a longer query string, DEALLOCATE ALL is seen in its CommandComplete.
            (
                query("SELECT 1; DEALLOCATE ALL"),
                1,
                strs(&["T", "D:1", "C:SELECT 1", "C:DEALLOCATE ALL", "Z:I"]),
            ),
            (cat(&[describe_statement("c"), sync()]), 1, strs(&["E:26000", "Z:I"])),
            (
                cat(&[parse("c", "SELECT 'c3'"), bind("c", &[]), execute(), sync()]),
                1,
                strs(&["1", "2", "D:c3", "C:SELECT 1", "Z:I"]),
            ),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Servers that lack the statement.

/// The server a client runs its next transaction on is the one most recently given back, so
/// a second client holding a transaction open sends the first one to the other server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_injected_on_a_server_that_lacks_it() {
    let px = pgmux("default_pool_size = 2");
    let _ = &px;
    let table = "prep_inject";
    cluster().psql(
        "bench",
        &format!("DROP TABLE IF EXISTS {table}; CREATE TABLE {table}(x int); ALTER TABLE {table} OWNER TO app"),
    );
    let mut raw = tokio::task::block_in_place(|| Raw::login(px.port, "app"));
    let first = tokio::task::block_in_place(|| {
        raw.exchange(
            &cat(&[
                parse("pid", "SELECT pg_backend_pid()"),
                parse("n", &format!("SELECT count(*) FROM {table}")),
                bind("pid", &[]),
                execute(),
                sync(),
            ]),
            1,
        )
    });
    assert_eq!(first[..2], strs(&["1", "1"])[..]);
    let first_pid = first[3].clone();
    let other = connect(&px.url("app", "app", "bench")).await;
    other.batch_execute("BEGIN").await.unwrap();
    let held_pid = value(&other, "SELECT pg_backend_pid()").await;
    assert_eq!(
        format!("D:{held_pid}"),
        first_pid,
        "the other client should hold the first server"
    );
    // On the second server: the injected Parse's ParseComplete never reaches the client.
    let second = tokio::task::block_in_place(|| raw.exchange(&cat(&[bind("pid", &[]), execute(), sync()]), 1));
    assert_eq!(second.len(), 4, "{second:?}");
    assert_eq!(second[0], "2");
    assert_ne!(second[1], first_pid, "still on the first server");
    // An injected Parse that fails: the client sees its error in place of the Bind's, and the
    // statement is not taken to be on that server.
    cluster().psql("bench", &format!("DROP TABLE {table}"));
    let failed = tokio::task::block_in_place(|| raw.exchange(&cat(&[bind("n", &[]), execute(), sync()]), 1));
    assert_eq!(failed, strs(&["E:42P01", "Z:I"]));
    cluster().psql(
        "bench",
        &format!("CREATE TABLE {table}(x int); ALTER TABLE {table} OWNER TO app"),
    );
    let again = tokio::task::block_in_place(|| raw.exchange(&cat(&[bind("n", &[]), execute(), sync()]), 1));
    assert_eq!(again, strs(&["2", "D:0", "C:SELECT 1", "Z:I"]));
    other.batch_execute("COMMIT").await.unwrap();
}

#[test]
fn least_recently_used_statements_are_evicted() {
    let px = pgmux("default_pool_size = 1\nmax_prepared_statements = 2");
    let mut raw = Raw::login(px.port, "app");
    let held = "SELECT count(*) FROM pg_prepared_statements";
    for name in ["a", "b", "c"] {
        let sql = format!("SELECT '{name}'");
        assert_eq!(raw.exchange(&cat(&[parse(name, &sql), sync()]), 1), strs(&["1", "Z:I"]));
    }
    assert_eq!(raw.exchange(&query(held), 1), strs(&["T", "D:2", "C:SELECT 1", "Z:I"]));
    // a was evicted from the server, not from the client: it comes back when used.
    for name in ["a", "b", "c", "a"] {
        let replies = raw.exchange(&cat(&[bind(name, &[]), execute(), sync()]), 1);
        assert_eq!(replies, strs(&["2", &format!("D:{name}"), "C:SELECT 1", "Z:I"]));
    }
    // Three statements used in one pipeline, with room for two.
    let replies = raw.exchange(
        &cat(&[
            bind("a", &[]),
            execute(),
            bind("b", &[]),
            execute(),
            bind("c", &[]),
            execute(),
            sync(),
        ]),
        1,
    );
    assert_eq!(
        replies,
        strs(&[
            "2",
            "D:a",
            "C:SELECT 1",
            "2",
            "D:b",
            "C:SELECT 1",
            "2",
            "D:c",
            "C:SELECT 1",
            "Z:I"
        ])
    );
    assert_eq!(raw.exchange(&query(held), 1), strs(&["T", "D:2", "C:SELECT 1", "Z:I"]));
}

#[test]
fn zero_limit_passes_statements_through() {
    let px = pgmux("default_pool_size = 1\nmax_prepared_statements = 0");
    let mut raw = Raw::login(px.port, "app");
    assert_eq!(
        raw.exchange(&cat(&[parse("plain", "SELECT 1"), sync()]), 1),
        strs(&["1", "Z:I"])
    );
    let names = raw.exchange(&query("SELECT string_agg(name, ',') FROM pg_prepared_statements"), 1);
    assert_eq!(names, strs(&["T", "D:plain", "C:SELECT 1", "Z:I"]));
    // SQL PREPARE is not refused either.
    assert_eq!(
        raw.exchange(&query("PREPARE q AS SELECT 2"), 1),
        strs(&["C:PREPARE", "Z:I"])
    );
    assert_eq!(
        raw.exchange(&query("EXECUTE q"), 1),
        strs(&["T", "D:2", "C:SELECT 1", "Z:I"])
    );
}

#[test]
fn tracked_statements_use_pooler_wide_names() {
    let px = pgmux("default_pool_size = 1");
    let mut raw = Raw::login(px.port, "app");
    assert_eq!(
        raw.exchange(&cat(&[parse("plain", "SELECT 1"), sync()]), 1),
        strs(&["1", "Z:I"])
    );
    let names = raw.exchange(&query("SELECT string_agg(name, ',') FROM pg_prepared_statements"), 1);
    assert_eq!(names.len(), 4, "{names:?}");
    let name = names[1].trim_start_matches("D:");
    assert!(name.starts_with("pgmux_") && name.len() == 38, "{names:?}");
    // A second client preparing the same text under another name shares it.
    let mut second = Raw::login(px.port, "app");
    assert_eq!(
        second.exchange(&cat(&[parse("other", "SELECT 1"), sync()]), 1),
        strs(&["1", "Z:I"])
    );
    assert_eq!(
        second.exchange(&query("SELECT count(*) FROM pg_prepared_statements"), 1),
        strs(&["T", "D:1", "C:SELECT 1", "Z:I"])
    );
}

// ---------------------------------------------------------------------------------------------
// SQL PREPARE / EXECUTE.

#[test]
fn sql_prepare_is_refused_in_transaction_mode() {
    let px = pgmux("default_pool_size = 1");
    let mut raw = Raw::login(px.port, "app");
    assert_eq!(
        raw.exchange(&query("PREPARE p AS SELECT 1"), 1),
        strs(&["E:0A000", "Z:I"])
    );
    let message = raw.error_message(&query("  execute p"));
    assert!(
        message.contains("EXECUTE") && message.contains("pool_mode"),
        "{message}"
    );
    // In a transaction block the refusal fails the transaction, as an error there does.
    assert_eq!(raw.exchange(&query("BEGIN"), 1), strs(&["C:BEGIN", "Z:T"]));
    assert_eq!(
        raw.exchange(&query("PREPARE p AS SELECT 1"), 1),
        strs(&["E:0A000", "Z:E"])
    );
    assert_eq!(raw.exchange(&query("ROLLBACK"), 1), strs(&["C:ROLLBACK", "Z:I"]));
    assert_eq!(
        raw.exchange(&query("SELECT count(*) FROM pg_prepared_statements"), 1),
        strs(&["T", "D:0", "C:SELECT 1", "Z:I"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepare_works_in_session_mode() {
    let px = pgmux("default_pool_size = 2\npool_mode = \"session\"");
    let client = connect(&px.url("app", "app", "bench")).await;
    client.batch_execute("PREPARE p(int) AS SELECT $1 + 1").await.unwrap();
    assert_eq!(value(&client, "EXECUTE p(41)").await, "42");
    // Protocol-level statements pass through untouched.
    let stmt = client.prepare("SELECT $1::int4 * 2").await.unwrap();
    assert_eq!(client.query_one(&stmt, &[&21i32]).await.unwrap().get::<_, i32>(0), 42);
    assert_eq!(
        value(
            &client,
            "SELECT count(*) FROM pg_prepared_statements WHERE name NOT LIKE 'pgmux%'"
        )
        .await,
        "2"
    );
}

/// COPY FROM STDIN through the extended protocol: the Sync sent right after the Execute is
/// swallowed by the server's copy mode, so it must not count as a Sync stretch of its own.
/// Counted too few, the server would go back early; too many, it would stay with the client,
/// and the other client on the one-server pool would wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_twice_with_statements_dropped_between() {
    use futures_util::SinkExt;
    let px = pgmux("default_pool_size = 1");
    let client = connect(&px.url("app", "app", "bench")).await;
    let other = connect(&px.url("app", "app", "bench")).await;
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS copied(n int)")
        .await
        .unwrap();
    for round in 0..3 {
        let sink = client.copy_in("COPY copied FROM STDIN").await.unwrap();
        let mut sink = Box::pin(sink);
        sink.send(bytes::Bytes::from_static(b"1\n2\n")).await.unwrap();
        assert_eq!(sink.as_mut().finish().await.unwrap(), 2, "round {round}");
        let released = tokio::time::timeout(REPLY_TIMEOUT, value(&other, "SELECT 2")).await;
        assert_eq!(
            released.as_deref(),
            Ok("2"),
            "round {round}: the server stayed with the COPY's client"
        );
        assert_eq!(value(&client, "SELECT 1").await, "1");
    }
}
