//! What someone who can reach the port learns without a password: unknown users look like wrong
//! passwords (the same exchange, the same error), no secret shows anywhere (log at trace level,
//! console, /metrics, errors), and failures before authentication name no server.

mod support;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::BytesMut;
use postgres_protocol::message::frontend;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use support::*;
use tokio_postgres::SimpleQueryMessage;

const DB: &str = "secdb";
/// Passwords no other text in a run contains by chance.
const PLAIN: &str = "Velvet-Otter-4417";
const MD5_PASSWORD: &str = "Amber-Finch-2290";
const SCRAM_PASSWORD: &str = "Quiet-Lynx-8803";
const SERVER_PASSWORD: &str = "Copper-Heron-5531";
const WRONG: &str = "Wrong-Badger-6642";

fn rest(users: &str) -> String {
    format!("{users}[databases.{DB}]\nport = {{pg_port}}\n")
}

/// `md5` + md5(password + user), as pg_authid and PgBouncer store it.
fn md5_secret(password: &str, user: &str) -> String {
    let inner = pgmux::auth::md5::md5_inner(password, user);
    let hex: String = inner.iter().map(|b| format!("{b:02x}")).collect();
    format!("md5{hex}")
}

/// A SCRAM-SHA-256 secret with 4096 iterations and the parts a leak check looks for.
fn scram_secret(password: &str) -> (String, Vec<String>) {
    let salt = b"sixteen byte salt";
    let keys = pgmux::auth::scram::ScramKeys::derive(password, &salt[..16], 4096);
    let (stored, server) = (STANDARD.encode(keys.stored_key), STANDARD.encode(keys.server_key));
    let secret = format!("SCRAM-SHA-256$4096:{}${stored}:{server}", STANDARD.encode(&salt[..16]));
    (secret, vec![stored, server])
}

/// A SCRAM exchange up to server-first: (salt, iterations), and the connection.
fn scram_first(port: u16, user: &str) -> (Vec<u8>, u32, String, Wire) {
    let mut wire = Wire::start(port, user, DB);
    let mechanisms = wire.expect_auth(AUTH_SASL);
    assert!(mechanisms.starts_with(b"SCRAM-SHA-256\0"), "{mechanisms:?}");
    let mut buf = BytesMut::new();
    frontend::sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=clientnonce", &mut buf).unwrap();
    wire.send(&buf);
    let first = String::from_utf8(wire.expect_auth(AUTH_SASL_CONTINUE)).unwrap();
    let attr = |name: &str| {
        first
            .split(',')
            .find_map(|a| a.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {first}"))
            .to_owned()
    };
    let salt = STANDARD.decode(attr("s=")).unwrap();
    let iterations = attr("i=").parse().unwrap();
    (salt, iterations, attr("r="), wire)
}

/// Finishes a SCRAM exchange with a wrong proof: the error's fields, the user's name replaced.
fn scram_refusal(port: u16, user: &str) -> HashMap<char, String> {
    let (_, _, nonce, mut wire) = scram_first(port, user);
    let mut buf = BytesMut::new();
    let fin = format!("c=biws,r={nonce},p={}", STANDARD.encode([7u8; 32]));
    frontend::sasl_response(fin.as_bytes(), &mut buf).unwrap();
    wire.send(&buf);
    anonymous(wire.expect_error(), user)
}

fn anonymous(mut fields: HashMap<char, String>, user: &str) -> HashMap<char, String> {
    for v in fields.values_mut() {
        *v = v.replace(user, "<user>");
    }
    fields.remove(&'L'); // no source location is sent, but it would differ
    fields
}

#[test]
fn unknown_users_get_the_exchange_and_the_error_of_a_wrong_password() {
    ensure_database(DB);
    let (scram, _) = scram_secret(SCRAM_PASSWORD);
    let px = Pgmux::start(
        "auth_type = \"scram-sha-256\"",
        &rest(&format!(
            "[users.plain]\npassword = \"{PLAIN}\"\n[users.scrammed]\npassword = \"{scram}\"\n"
        )),
    );
    // Known users (a plain password, a stored SCRAM secret) and unknown ones: the same
    // iteration count, the same salt length, a salt that stays the same from one try to the
    // next (a changing one would give an unknown name away), and the same error.
    let mut salts = HashMap::new();
    for user in ["plain", "scrammed", "ghost", "phantom"] {
        let (salt, iterations, _, _) = scram_first(px.port, user);
        assert_eq!(iterations, 4096, "{user}");
        assert_eq!(salt.len(), 16, "{user}");
        let (again, _, _, _) = scram_first(px.port, user);
        assert_eq!(salt, again, "{user}: the salt changed between two tries");
        salts.insert(user, salt);
    }
    assert_ne!(salts["ghost"], salts["phantom"], "unknown users share a salt");
    let wrong = scram_refusal(px.port, "plain");
    assert_eq!(wrong.get(&'C').map(String::as_str), Some("28P01"), "{wrong:?}");
    assert_eq!(
        wrong.get(&'M').map(String::as_str),
        Some("password authentication failed for user \"<user>\"")
    );
    for user in ["scrammed", "ghost"] {
        assert_eq!(scram_refusal(px.port, user), wrong, "{user} against a wrong password");
    }
    drop(px);

    // md5: a fresh 4-byte salt every time, known or not, and the same error.
    let px = Pgmux::start(
        "auth_type = \"md5\"",
        &rest(&format!("[users.plain]\npassword = \"{PLAIN}\"\n")),
    );
    let md5_refusal = |user: &str| {
        let mut wire = Wire::start(px.port, user, DB);
        let salt = wire.expect_auth(AUTH_MD5);
        assert_eq!(salt.len(), 4, "{user}");
        let mut buf = BytesMut::new();
        frontend::password_message(b"md5000000000000000000000000000000000", &mut buf).unwrap();
        wire.send(&buf);
        (salt, anonymous(wire.expect_error(), user))
    };
    let (salt1, wrong) = md5_refusal("plain");
    let (salt2, ghost) = md5_refusal("ghost");
    assert_eq!(wrong.get(&'C').map(String::as_str), Some("28P01"), "{wrong:?}");
    assert_eq!(ghost, wrong);
    assert_ne!(salt1, salt2, "md5 salts must be fresh");
}

/// The text of every row of a console command.
async fn console_text(console: &tokio_postgres::Client, cmd: &str) -> String {
    let msgs = console.simple_query(cmd).await.unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let mut text = String::new();
    for m in msgs {
        if let SimpleQueryMessage::Row(row) = m {
            for i in 0..row.len() {
                text.push_str(row.get(i).unwrap_or(""));
                text.push('\t');
            }
            text.push('\n');
        }
    }
    text
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// Every text a client could read of an error.
fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {:?} {:?}", db.message(), db.detail(), db.hint()),
        None => format!("{e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_the_trace_log_the_console_metrics_or_errors() {
    ensure_database(DB);
    cluster().psql(
        "postgres",
        &format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sec_plain') THEN
                 CREATE ROLE sec_plain LOGIN PASSWORD '{PLAIN}';
               END IF;
             END $$;"
        ),
    );
    let (scram, scram_parts) = scram_secret(SCRAM_PASSWORD);
    let md5 = md5_secret(MD5_PASSWORD, "sec_md5");
    let metrics_port = free_port();
    let px = Pgmux::start_logging(
        "trace",
        "auth_type = \"scram-sha-256\"\nadmin_users = [\"sec_admin\"]",
        &format!(
            "[users.sec_plain]\npassword = \"{PLAIN}\"\n[users.sec_md5]\npassword = \"{md5}\"\n\
             [users.sec_scram]\npassword = \"{scram}\"\n[users.sec_admin]\npassword = \"{PLAIN}\"\n\
             [databases.{DB}]\nport = {{pg_port}}\n\
             [databases.forced]\nport = {{pg_port}}\ndbname = \"{DB}\"\nuser = \"sec_plain\"\npassword = \"{SERVER_PASSWORD}\"\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"
        ),
    );
    let mut seen = String::new();
    let client = connect(&px.url("sec_plain", PLAIN, DB)).await;
    assert_eq!(value(&client, "SELECT 1").await, "1");
    for (user, password) in [
        ("sec_plain", WRONG),
        ("sec_md5", WRONG),
        ("sec_scram", WRONG),
        ("ghost", PLAIN),
    ] {
        for db in [DB, "forced", "pgbouncer"] {
            match try_connect(&px.url(user, password, db)).await {
                Ok(_) => panic!("{user} logged in to {db} with a wrong password"),
                Err(e) => seen.push_str(&error_text(&e)),
            }
        }
    }
    // The forced user's server password is used (and wrong): its error reaches a client.
    if let Err(e) = try_connect(&px.url("sec_plain", PLAIN, "forced")).await {
        seen.push_str(&error_text(&e));
    }
    let console = connect(&px.url("sec_admin", PLAIN, "pgbouncer")).await;
    for item in [
        "CONFIG",
        "USERS",
        "DATABASES",
        "POOLS",
        "CLIENTS",
        "SERVERS",
        "STATE",
        "SLOW_QUERIES",
    ] {
        seen.push_str(&console_text(&console, &format!("SHOW {item}")).await);
    }
    assert!(seen.contains("sec_md5"), "SHOW USERS lists the users: {seen}");
    let metrics = tokio::task::spawn_blocking(move || http_get(metrics_port, "/metrics"))
        .await
        .unwrap();
    assert!(metrics.contains("pgmux_"), "{metrics}");
    seen.push_str(&metrics);
    // A cancel request with a wrong key is logged at debug level only: proof the filter took.
    let mut cancel = Wire::connect(px.port);
    cancel.send(&[0, 0, 0, 16, 4, 210, 22, 46, 0, 0, 0, 1, 0, 0, 0, 2]);
    assert!(
        cancel.closed_within(Duration::from_secs(5)),
        "a wrong cancel request was not closed"
    );
    assert!(
        px.wait_for_log("cancel request", Duration::from_secs(5)),
        "no debug lines in the log"
    );
    seen.push_str(&px.log());

    let mut secrets = vec![
        PLAIN.to_owned(),
        MD5_PASSWORD.to_owned(),
        SCRAM_PASSWORD.to_owned(),
        SERVER_PASSWORD.to_owned(),
        WRONG.to_owned(),
        md5[3..].to_owned(),
    ];
    secrets.extend(scram_parts);
    for secret in &secrets {
        assert!(
            !seen.contains(secret.as_str()),
            "{secret:?} appears in what a run produced"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_before_authentication_name_no_server() {
    ensure_database(DB);
    // Nothing listens on this port: the server is down.
    let dead = free_port();
    let databases = format!("[databases.{DB}]\nport = {dead}\n");
    for (pooler, what) in [
        ("auth_type = \"passthrough\"\nserver_connect_timeout = 2", "passthrough"),
        (
            "auth_type = \"scram-sha-256\"\nauth_user = \"postgres\"\nserver_connect_timeout = 2",
            "auth_query",
        ),
    ] {
        let px = Pgmux::start(pooler, &databases);
        let e = try_connect(&px.url("app", "app", DB)).await.err();
        let e = e.unwrap_or_else(|| panic!("{what}: logged in with the server down"));
        assert_eq!(sqlstate(&e).as_deref(), Some("08006"), "{what}: {e:?}");
        let text = error_text(&e);
        assert!(
            !text.contains(&dead.to_string()) && !text.contains("127.0.0.1"),
            "{what}: the client was told the server's address: {text}"
        );
        assert!(px.log().contains(&dead.to_string()), "{what}: the log does not say why");
    }
}

/// A tokio-postgres login to pgmux from the loopback address `source` (127.0.0.x: Linux
/// routes all of 127/8 to lo, so each is another client address for pgmux).
async fn login_from(
    port: u16,
    source: &str,
    user: &str,
    password: &str,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = socket
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    let config: tokio_postgres::Config = format!("user={user} password={password} dbname={db}").parse().unwrap();
    let fut = config.connect_raw(stream, tokio_postgres::NoTls);
    let (client, conn) = tokio::time::timeout(CONNECT_TIMEOUT, fut).await.expect("login hung")?;
    tokio::spawn(conn);
    Ok(client)
}

/// The SQLSTATE a refused login got, and how long it took.
async fn refusal_from(port: u16, source: &str, user: &str, password: &str, db: &str) -> (String, String, Duration) {
    let started = std::time::Instant::now();
    let e = login_from(port, source, user, password, db)
        .await
        .err()
        .unwrap_or_else(|| panic!("{user}@{db} from {source} logged in with {password}"));
    (sqlstate(&e).unwrap_or_default(), error_text(&e), started.elapsed())
}

/// auth_failure_delay, auth_failure_limit and auth_failure_window, on the pools and the
/// console: wrong passwords (and unknown users) wait the delay; past the limit, the address
/// gets 53300 at once for that user, the right password included, until enough time passed;
/// other addresses and other users are not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_are_delayed_then_throttled_per_address_and_user() {
    ensure_database(DB);
    let px = Pgmux::start(
        "auth_type = \"scram-sha-256\"\nadmin_users = [\"boss\"]\n\
         auth_failure_delay = 1\nauth_failure_limit = 3\nauth_failure_window = 12",
        &rest(&format!(
            "[users.app]\npassword = \"app\"\n[users.md5user]\npassword = \"md5pass\"\n\
             [users.boss]\npassword = \"{PLAIN}\"\n"
        )),
    );
    let port = px.port;
    // The pool users log in to the server with their own password (ghost: nobody's).
    let right = |user: &str| match user {
        "app" => "app",
        "md5user" => "md5pass",
        _ => PLAIN,
    };
    // Three wrong passwords at once from 127.0.0.2, for a pool user, the console's admin and a
    // name pgmux does not know: each 28P01 after the delay.
    let mut wrong = Vec::new();
    for _ in 0..3 {
        for (user, db) in [("app", DB), ("boss", "pgbouncer"), ("ghost", DB)] {
            wrong.push(tokio::spawn(refusal_from(port, "127.0.0.2", user, WRONG, db)));
        }
    }
    for task in wrong {
        let (code, text, took) = task.await.unwrap();
        assert_eq!(code, "28P01", "{text}");
        assert!(
            took >= Duration::from_secs(1),
            "refused after {took:?}, before auth_failure_delay"
        );
    }
    // Now that address is refused at once for those users, the right password too.
    for (user, db) in [("app", DB), ("boss", "pgbouncer"), ("ghost", DB)] {
        let (code, text, took) = refusal_from(port, "127.0.0.2", user, right(user), db).await;
        assert_eq!(code, "53300", "{user}: {text}");
        assert!(
            text.contains(&format!("too many failed logins for user \"{user}\" from this address")),
            "{text}"
        );
        assert!(took < Duration::from_secs(1), "{user}: a throttled login took {took:?}");
    }
    // Other addresses for the same users, and other users from the same address, get in.
    for (source, user, db) in [
        ("127.0.0.3", "app", DB),
        ("127.0.0.3", "boss", "pgbouncer"),
        ("127.0.0.2", "md5user", DB),
    ] {
        let client = login_from(port, source, user, right(user), db)
            .await
            .unwrap_or_else(|e| panic!("{user} from {source}: {}", error_text(&e)));
        if db == DB {
            client.simple_query("SELECT 1").await.unwrap();
            continue;
        }
        let config = console_text(&client, "SHOW CONFIG").await;
        for row in [
            "auth_failure_delay\t1\t",
            "auth_failure_limit\t3\t",
            "auth_failure_window\t12\t",
        ] {
            assert!(config.contains(row), "SHOW CONFIG lacks {row:?}: {config}");
        }
    }
    // Once a failure has drained (12 s / 3), the right password gets in, and clears the record.
    let (_, text, _) = refusal_from(port, "127.0.0.2", "app", "app", DB).await;
    let wait: f64 = text
        .split("try again in ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no wait in {text}"));
    assert!(wait <= 4.0, "{text}");
    tokio::time::sleep(Duration::from_secs_f64(wait + 0.5)).await;
    for (user, db) in [("app", DB), ("boss", "pgbouncer")] {
        let client = login_from(port, "127.0.0.2", user, right(user), db)
            .await
            .unwrap_or_else(|e| panic!("{user} after the wait: {}", error_text(&e)));
        drop(client);
    }
    let (code, text, _) = refusal_from(port, "127.0.0.2", "app", WRONG, DB).await;
    assert_eq!(code, "28P01", "the right password cleared the record: {text}");
    assert!(px.log().contains("login throttled"), "the log does not say so");
}
