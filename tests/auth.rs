//! Client authentication through the real binary against real PostgreSQL: scram-sha-256 (plain,
//! SCRAM and md5 secrets), md5, trust and passthrough, with tokio-postgres and psql clients.

mod support;

use std::time::{Duration, Instant};
use support::*;

/// Authentication request codes (the Int32 after 'R').
const AUTH_OK: i32 = 0;
const AUTH_CLEARTEXT: i32 = 3;
const AUTH_MD5: i32 = 5;
const AUTH_SASL: i32 = 10;

/// A distinctive password, to look for in the pgmux log.
const STORM_PASSWORD: &str = "Zebra-Quartz-91";

fn bench_db() -> &'static str {
    "[databases.bench]\nport = {pg_port}\n"
}

/// Logs in, checks the session runs as `user` on `db` and can compute.
async fn login_works(px: &Pgmux, user: &str, password: &str, db: &str) {
    let client = connect(&px.url(user, password, db)).await;
    assert_eq!(value(&client, "SELECT current_user").await, user);
    assert_eq!(value(&client, "SELECT current_database()").await, db);
    assert_eq!(value(&client, "SELECT 40 + 2").await, "42");
}

/// The login must fail; returns the error.
async fn refused(url: &str) -> tokio_postgres::Error {
    match try_connect(url).await {
        Ok(client) => {
            let who = value(&client, "SELECT current_user").await;
            panic!("login succeeded (as {who}) but should not: {url}")
        }
        Err(e) => e,
    }
}

/// Asserts the error carries `code` and returns its (FATAL) message.
fn fatal(err: &tokio_postgres::Error, code: &str) -> String {
    assert_eq!(sqlstate(err).as_deref(), Some(code), "wrong SQLSTATE: {err} [{err:?}]");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.severity(), "FATAL", "{err:?}");
    db.message().to_owned()
}

fn scram_pgmux(rest: &str) -> Pgmux {
    Pgmux::start("auth_type = \"scram-sha-256\"", rest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_with_plain_password() {
    let px = scram_pgmux(&format!("[users.app]\npassword = \"app\"\n{}", bench_db()));
    assert_eq!(first_auth_request(px.port, "app", "bench"), AUTH_SASL);
    login_works(&px, "app", "app", "bench").await;

    let wrong = fatal(&refused(&px.url("app", "wrong", "bench")).await, "28P01");
    assert_eq!(wrong, "password authentication failed for user \"app\"");

    // No user enumeration: an unknown user goes through the same exchange and fails alike.
    assert_eq!(first_auth_request(px.port, "ghost", "bench"), AUTH_SASL);
    let ghost = fatal(&refused(&px.url("ghost", "app", "bench")).await, "28P01");
    assert_eq!(
        ghost.replace("ghost", "<user>"),
        wrong.replace("app", "<user>"),
        "unknown user and wrong password must look alike"
    );

    // A database with no [databases.x] entry and no "*" entry.
    let nodb = fatal(&refused(&px.url("app", "app", "nosuchdb")).await, "3D000");
    assert!(nodb.contains("nosuchdb"), "{nodb}");

    // The refusals left pgmux working.
    login_works(&px, "app", "app", "bench").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_with_scram_secret() {
    let secret = postgres_protocol::password::scram_sha_256(b"app");
    assert!(secret.starts_with("SCRAM-SHA-256$"), "{secret}");
    // pgmux cannot log in to the server with a secret: the server password comes from [databases].
    let px = scram_pgmux(&format!(
        "[users.app]\npassword = \"{secret}\"\n[databases.bench]\nport = {{pg_port}}\npassword = \"app\"\n"
    ));
    assert_eq!(first_auth_request(px.port, "app", "bench"), AUTH_SASL);
    login_works(&px, "app", "app", "bench").await;
    fatal(&refused(&px.url("app", "App", "bench")).await, "28P01");
    login_works(&px, "app", "app", "bench").await;
    drop(px);

    // Without a plain server password pgmux logs in with the client's SCRAM proof, which fits
    // only a server holding the same secret; this one (made here, with its own salt) does not:
    // the client, whose password was right, gets a clear FATAL instead of a hang.
    let px = scram_pgmux(&format!("[users.app]\npassword = \"{secret}\"\n{}", bench_db()));
    let err = refused(&px.url("app", "app", "bench")).await;
    let message = fatal(&err, "08006");
    assert!(
        message.contains("holds another SCRAM secret for user \"app\""),
        "{message}"
    );
    let hint = err.as_db_error().and_then(|e| e.hint()).unwrap_or_default();
    assert!(hint.contains("pg_authid"), "hint: {hint:?}");
    // A wrong password is still refused as such.
    fatal(&refused(&px.url("app", "App", "bench")).await, "28P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_with_md5_secret_falls_back_to_md5() {
    let secret = postgres_protocol::password::md5(b"app", "app");
    assert_eq!(secret.len(), 35, "{secret}");
    let px = scram_pgmux(&format!(
        "[users.app]\npassword = \"{secret}\"\n[databases.bench]\nport = {{pg_port}}\npassword = \"app\"\n"
    ));
    // The md5 secret cannot answer SCRAM, so pgmux asks the client for md5 (as PgBouncer does).
    assert_eq!(first_auth_request(px.port, "app", "bench"), AUTH_MD5);
    login_works(&px, "app", "app", "bench").await;
    let wrong = fatal(&refused(&px.url("app", "nope", "bench")).await, "28P01");
    assert_eq!(wrong, "password authentication failed for user \"app\"");
    // Other users still get SCRAM.
    assert_eq!(first_auth_request(px.port, "ghost", "bench"), AUTH_SASL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_with_plain_password() {
    // Plain password in [users]; the server side of md5user is md5 too (pg_hba). "md5pass" is
    // not "md5" + 32 hex digits, so it is a plain password (as in PostgreSQL and PgBouncer).
    let px = Pgmux::start(
        "auth_type = \"md5\"",
        &format!("[users.md5user]\npassword = \"md5pass\"\n{}", bench_db()),
    );
    assert_eq!(first_auth_request(px.port, "md5user", "bench"), AUTH_MD5);
    login_works(&px, "md5user", "md5pass", "bench").await;
    let wrong = fatal(&refused(&px.url("md5user", "md5pas", "bench")).await, "28P01");
    assert_eq!(wrong, "password authentication failed for user \"md5user\"");
    // Unknown user: asked for md5 like everyone, then the same refusal.
    assert_eq!(first_auth_request(px.port, "ghost", "bench"), AUTH_MD5);
    let ghost = fatal(&refused(&px.url("ghost", "md5pass", "bench")).await, "28P01");
    assert_eq!(ghost.replace("ghost", "<user>"), wrong.replace("md5user", "<user>"));
    // A user known to PostgreSQL but not to pgmux is unknown here.
    fatal(&refused(&px.url("app", "app", "bench")).await, "28P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_with_md5_secret() {
    // Only the md5 secret: pgmux also logs in to the server (md5 in pg_hba) with it.
    let secret = postgres_protocol::password::md5(b"md5pass", "md5user");
    let px = Pgmux::start(
        "auth_type = \"md5\"",
        &format!("[users.md5user]\npassword = \"{secret}\"\n{}", bench_db()),
    );
    assert_eq!(first_auth_request(px.port, "md5user", "bench"), AUTH_MD5);
    login_works(&px, "md5user", "md5pass", "bench").await;
    let wrong = fatal(&refused(&px.url("md5user", "wrong", "bench")).await, "28P01");
    assert_eq!(wrong, "password authentication failed for user \"md5user\"");
    assert_eq!(first_auth_request(px.port, "ghost", "bench"), AUTH_MD5);
    let ghost = fatal(&refused(&px.url("ghost", "md5pass", "bench")).await, "28P01");
    assert_eq!(ghost.replace("ghost", "<user>"), wrong.replace("md5user", "<user>"));
    // The secret itself is not a password.
    fatal(&refused(&px.url("md5user", &secret, "bench")).await, "28P01");
    login_works(&px, "md5user", "md5pass", "bench").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_needs_no_password() {
    let px = Pgmux::start("auth_type = \"trust\"", bench_db());
    assert_eq!(first_auth_request(px.port, "trustuser", "bench"), AUTH_OK);
    let url = format!(
        "host=127.0.0.1 port={} user=trustuser dbname=bench sslmode=disable",
        px.port
    );
    let client = connect(&url).await;
    assert_eq!(value(&client, "SELECT current_user").await, "trustuser");
    assert_eq!(value(&client, "SELECT count(*) >= 0 FROM items").await, "t");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_verifies_against_the_server() {
    let px = Pgmux::start("auth_type = \"passthrough\"", bench_db());
    // Passthrough asks for the password in clear text (loopback only) to try it on the server.
    assert_eq!(first_auth_request(px.port, "app", "bench"), AUTH_CLEARTEXT);

    // A wrong password first: it must not become the pool's server password.
    let wrong = fatal(&refused(&px.url("app", "wrong", "bench")).await, "28P01");
    assert!(wrong.contains("password authentication failed"), "{wrong}");
    login_works(&px, "app", "app", "bench").await;
    // Right, wrong, right again: the cached password does not let a wrong one in.
    fatal(&refused(&px.url("app", "wrong-again", "bench")).await, "28P01");
    login_works(&px, "app", "app", "bench").await;
    // A role PostgreSQL does not have.
    fatal(&refused(&px.url("ghost", "app", "bench")).await, "28P01");

    // 50 clients at once with the right password.
    let url = px.url("app", "app", "bench");
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = connect(&url).await;
                assert_eq!(value(&client, "SELECT current_user").await, "app");
                assert_eq!(value(&client, &format!("SELECT {i} * 2")).await, (i * 2).to_string());
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client task");
    }
    eprintln!("50 concurrent passthrough logins in {:?}", t0.elapsed());
    // Still refusing wrong passwords after the storm.
    fatal(&refused(&px.url("app", "wrong", "bench")).await, "28P01");
}

#[test]
fn psql_through_pgmux_with_scram() {
    let px = scram_pgmux(&format!("[users.app]\npassword = \"app\"\n{}", bench_db()));
    let conninfo = format!("host=127.0.0.1 port={} user=app dbname=bench", px.port);
    let timeout = Duration::from_secs(30);
    let args = ["-X", conninfo.as_str(), "-c", "select 40+2", "-tA"];
    let (code, out, err) = run_cmd("psql", &args, &[("PGPASSWORD", "app")], timeout);
    assert_eq!((code, out.trim()), (0, "42"), "stderr: {err}");

    let (code, out, err) = run_cmd("psql", &args, &[("PGPASSWORD", "not-app")], timeout);
    assert_ne!(code, 0, "psql with a wrong password succeeded: {out}");
    assert!(err.contains("password authentication failed"), "stderr: {err}");
}

/// Creates the role `storm` (SCRAM-stored password), once per cluster.
fn storm_role() {
    cluster().psql(
        "postgres",
        &format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'storm') THEN
                 SET password_encryption = 'scram-sha-256';
                 CREATE ROLE storm LOGIN PASSWORD '{STORM_PASSWORD}';
               END IF;
             END $$;
             GRANT CONNECT ON DATABASE bench TO storm;"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_storm_and_no_password_in_the_log() {
    storm_role();
    let px = scram_pgmux(&format!(
        "[users.storm]\npassword = \"{STORM_PASSWORD}\"\n{}",
        bench_db()
    ));
    let url = px.url("storm", STORM_PASSWORD, "bench");
    let t0 = Instant::now();
    for i in 0..100 {
        let client = connect(&url).await;
        assert_eq!(value(&client, &format!("SELECT {i} + 1")).await, (i + 1).to_string());
        drop(client);
    }
    eprintln!("100 sequential SCRAM logins in {:?}", t0.elapsed());
    fatal(&refused(&px.url("storm", "Zebra-Quartz-92", "bench")).await, "28P01");
    let log = px.log();
    assert!(log.contains("client logged in"), "nothing logged? {}", tail(&log, 20));
    assert!(!log.contains(STORM_PASSWORD), "password in the pgmux log:\n{log}");

    // Passthrough sees the password in clear text: it must not log it either, right or wrong.
    let px = Pgmux::start("auth_type = \"passthrough\"", bench_db());
    login_works(&px, "storm", STORM_PASSWORD, "bench").await;
    let wrong = "Wrong-Zebra-Quartz-17";
    fatal(&refused(&px.url("storm", wrong, "bench")).await, "28P01");
    login_works(&px, "storm", STORM_PASSWORD, "bench").await;
    let log = px.log();
    assert!(
        !log.contains(STORM_PASSWORD) && !log.contains(wrong),
        "password in the pgmux log:\n{log}"
    );
}
