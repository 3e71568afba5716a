//! PgBouncer's ways of finding and checking passwords, through the real binary against real
//! PostgreSQL: `auth_file` (userlist.txt), `auth_type = "hba"` with `auth_hba_file` (every
//! method, over TCP and over the Unix socket of `unix_socket_dir`), and a reload that changes
//! the rules.

mod support;

use std::path::Path;
use std::time::Duration;
use support::*;

/// Authentication request codes (the Int32 after 'R').
const AUTH_CLEARTEXT: i32 = 3;
const AUTH_MD5: i32 = 5;
const AUTH_SASL: i32 = 10;

/// The 28xxx refusal's message; panics when the login worked or failed otherwise.
async fn refusal(url: &str, code: &str) -> String {
    match try_connect(url).await {
        Ok(_) => panic!("login succeeded but should not: {url}"),
        Err(e) => {
            assert_eq!(sqlstate(&e).as_deref(), Some(code), "{e} [{e:?}]");
            e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_default()
        }
    }
}

async fn works(url: &str) {
    let client = connect(url).await;
    assert_eq!(value(&client, "SELECT current_user").await, "app");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_file_users_log_in_and_their_password_logs_in_to_the_server() {
    ensure_database("authfile");
    let dir = temp_dir("authfile");
    let userlist = dir.join("userlist.txt");
    write(&userlist, ";; PgBouncer's format\n\"app\" \"app\"\n\"ghost\" \"boo\"\n");
    let px = Pgmux::start(
        &format!("auth_type = \"scram-sha-256\"\nauth_file = \"{}\"", userlist.display()),
        "[databases.authfile]\nport = {pg_port}\n",
    );
    // No [users] section: the password comes from the file, both ways.
    works(&px.url("app", "app", "authfile")).await;
    let wrong = refusal(&px.url("app", "nope", "authfile"), "28P01").await;
    assert_eq!(wrong, "password authentication failed for user \"app\"");
    // A user PostgreSQL does not know: pgmux lets it in, the server refuses the pool's login.
    let ghost = try_connect(&px.url("ghost", "boo", "authfile")).await.unwrap_err();
    assert_eq!(sqlstate(&ghost).as_deref(), Some("28P01"), "{ghost:?}");
    let unknown = refusal(&px.url("nobody", "x", "authfile"), "28P01").await;
    assert_eq!(unknown, "password authentication failed for user \"nobody\"");
    assert!(!px.log().contains("boo\""), "a password reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hba_rules_choose_the_method_over_tcp_and_the_unix_socket() {
    ensure_database("hba");
    let dir = temp_dir("hba");
    let hba = dir.join("hba.conf");
    write(
        &hba,
        "# method per database, all for user app\n\
         local  all        app                trust\n\
         host   hbatrust   app  127.0.0.1/32  trust\n\
         host   hbareject  app  127.0.0.1/32  reject\n\
         host   hbamd5     app  127.0.0.1/32  md5\n\
         host   hbascram   app  127.0.0.1/32  scram-sha-256\n\
         host   hbapass    app  127.0.0.1 255.255.255.255  password\n\
         hostssl all       app  all           trust\n\
         host   hbacert    app  127.0.0.1/32  cert\n",
    );
    let mut databases = String::new();
    for name in ["hbatrust", "hbareject", "hbamd5", "hbascram", "hbapass", "hbacert"] {
        databases.push_str(&format!("[databases.{name}]\nport = {{pg_port}}\ndbname = \"hba\"\n"));
    }
    let px = Pgmux::start(
        &format!(
            "auth_type = \"hba\"\nauth_hba_file = \"{}\"\nunix_socket_dir = \"{}\"",
            hba.display(),
            dir.display()
        ),
        &format!("[users.app]\npassword = \"app\"\n{databases}"),
    );

    // trust: no password asked, any given is ignored.
    works(&px.url("app", "wrong", "hbatrust")).await;
    // reject, and no matching rule: PostgreSQL's words.
    let msg = refusal(&px.url("app", "app", "hbareject"), "28000").await;
    assert_eq!(
        msg,
        "pg_hba.conf rejects connection for host \"127.0.0.1\", user \"app\", database \"hbareject\", no encryption"
    );
    let msg = refusal(&px.url("other", "x", "hbatrust"), "28000").await;
    assert_eq!(
        msg,
        "no pg_hba.conf entry for host \"127.0.0.1\", user \"other\", database \"hbatrust\", no encryption"
    );
    // md5, scram-sha-256 and password each ask for their own exchange and check the password.
    for (db, code) in [
        ("hbamd5", AUTH_MD5),
        ("hbascram", AUTH_SASL),
        ("hbapass", AUTH_CLEARTEXT),
    ] {
        assert_eq!(first_auth_request(px.port, "app", db), code, "{db}");
        works(&px.url("app", "app", db)).await;
        let msg = refusal(&px.url("app", "nope", db), "28P01").await;
        assert_eq!(msg, "password authentication failed for user \"app\"", "{db}");
    }
    // cert: pgmux asks no client for a certificate, and says so.
    let msg = refusal(&px.url("app", "app", "hbacert"), "28000").await;
    assert!(msg.contains("certificate authentication failed"), "{msg}");

    // The Unix socket: a `local` rule (trust) applies, whatever the database.
    let socket = format!(
        "host={} port={} user=app password=wrong dbname=hbareject",
        dir.display(),
        px.port
    );
    works(&socket).await;
    assert!(dir.join(format!(".s.PGSQL.{}", px.port)).exists());

    // A reload reads the rules again; a broken file keeps the running ones.
    write(&hba, "host hbatrust app 127.0.0.1/32 reject\n");
    px.signal("HUP");
    assert!(px.wait_for_log("configuration reloaded", Duration::from_secs(10)));
    refusal(&px.url("app", "app", "hbatrust"), "28000").await;
    write(&hba, "host hbatrust app 127.0.0.1/33 trust\n");
    px.signal("HUP");
    assert!(px.wait_for_log("reload refused", Duration::from_secs(10)));
    assert!(
        px.log().contains("hba.conf:1: invalid prefix length \"33\""),
        "{}",
        px.log()
    );
    refusal(&px.url("app", "app", "hbatrust"), "28000").await;
}

#[test]
fn a_malformed_userlist_or_hba_file_stops_check_with_file_and_line() {
    let dir = temp_dir("badauth");
    let userlist = dir.join("userlist.txt");
    write(&userlist, "\"app\" \"app\"\napp hunter2\n");
    let config = dir.join("pooler.toml");
    write(&config, "[pooler]\nauth_file = \"userlist.txt\"\n");
    let bin = env!("CARGO_BIN_EXE_pgmux");
    let path = config.to_str().unwrap();
    let (code, out, err) = run_cmd(bin, &["check", "--config", path], &[], Duration::from_secs(10));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("userlist.txt:2: expected \"user\" \"password\""), "{err}");
    assert!(!err.contains("hunter2"), "{err}");

    write(&dir.join("hba.conf"), "host all all 10.0.0.0/8 ident\n");
    write(&config, "[pooler]\nauth_type = \"hba\"\nauth_hba_file = \"hba.conf\"\n");
    let (code, _, err) = run_cmd(bin, &["check", "--config", path], &[], Duration::from_secs(10));
    assert_eq!(code, 2);
    assert!(
        err.contains("hba.conf:1: authentication method \"ident\" is not supported"),
        "{err}"
    );

    write(&config, "[pooler]\nauth_type = \"hba\"\n");
    let (code, _, err) = run_cmd(bin, &["check", "--config", path], &[], Duration::from_secs(10));
    assert_eq!(code, 2);
    assert!(err.contains("\"hba\" needs auth_hba_file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_pass_through_logs_in_with_only_the_servers_secret_stored() {
    ensure_database("passkey");
    let secret = cluster().psql("postgres", "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'");
    let secret = secret.trim();
    assert!(
        secret.starts_with("SCRAM-SHA-256$"),
        "app's password is not SCRAM: {secret}"
    );
    let dir = temp_dir("passkey");
    let userlist = dir.join("userlist.txt");
    write(&userlist, &format!("\"app\" \"{secret}\"\n"));
    let px = Pgmux::start(
        &format!(
            "auth_type = \"scram-sha-256\"\nauth_file = \"{}\"\nmin_pool_size = 1",
            userlist.display()
        ),
        "[databases.passkey]\nport = {pg_port}\n",
    );
    // No plain password anywhere: the client's proof gives the ClientKey the server login uses.
    works(&px.url("app", "app", "passkey")).await;
    let second = connect(&px.url("app", "app", "passkey")).await;
    assert_eq!(value(&second, "SELECT count(*) > 0 FROM pg_stat_activity").await, "t");
    let wrong = refusal(&px.url("app", "nope", "passkey"), "28P01").await;
    assert_eq!(wrong, "password authentication failed for user \"app\"");

    // After the password is set again on the server (same password, new salt), the stored
    // secret still verifies clients but its proofs no longer fit the server: a clear refusal.
    let c = cluster();
    c.psql(
        "postgres",
        "DROP ROLE IF EXISTS passkeyuser; CREATE ROLE passkeyuser LOGIN PASSWORD 'pw'",
    );
    c.psql("passkey", "GRANT ALL ON SCHEMA public TO passkeyuser");
    let old = c.psql(
        "postgres",
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'passkeyuser'",
    );
    c.psql("postgres", "ALTER ROLE passkeyuser PASSWORD 'pw'");
    let px2 = Pgmux::start(
        "auth_type = \"scram-sha-256\"",
        &format!(
            "[users.passkeyuser]\npassword = \"{}\"\n[databases.passkey]\nport = {{pg_port}}\n",
            old.trim()
        ),
    );
    let e = try_connect(&px2.url("passkeyuser", "pw", "passkey")).await.unwrap_err();
    let text = e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_default();
    assert!(
        text.contains("holds another SCRAM secret for user \"passkeyuser\""),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_finds_secrets_in_pg_shadow_and_through_a_security_definer_function() {
    let c = cluster();
    ensure_database("authq");
    // PgBouncer's default query on pg_shadow, as a superuser (trusted from 127.0.0.1).
    let px = Pgmux::start(
        "auth_type = \"scram-sha-256\"\nauth_user = \"postgres\"",
        "[databases.authq]\nport = {pg_port}\n",
    );
    works(&px.url("app", "app", "authq")).await;
    let wrong = refusal(&px.url("app", "nope", "authq"), "28P01").await;
    assert_eq!(wrong, "password authentication failed for user \"app\"");
    let unknown = refusal(&px.url("nosuchrole", "x", "authq"), "28P01").await;
    assert_eq!(unknown, "password authentication failed for user \"nosuchrole\"");
    // A quote in the name is data, not SQL.
    let odd = refusal(&px.url("o'neil", "x", "authq"), "28P01").await;
    assert_eq!(odd, "password authentication failed for user \"o'neil\"");

    // The recommended setup: an unprivileged auth_user calling a SECURITY DEFINER function.
    c.psql(
        "authq",
        "DROP ROLE IF EXISTS authlookup; CREATE ROLE authlookup LOGIN PASSWORD 'lookup';
         CREATE OR REPLACE FUNCTION public.user_secret(u text) RETURNS TABLE(usename name, passwd text)
           LANGUAGE sql SECURITY DEFINER AS 'SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = u';
         REVOKE ALL ON FUNCTION public.user_secret(text) FROM PUBLIC;
         GRANT EXECUTE ON FUNCTION public.user_secret(text) TO authlookup;",
    );
    let px = Pgmux::start(
        "auth_type = \"scram-sha-256\"\nauth_user = \"authlookup\"\n\
         auth_query = \"SELECT usename, passwd FROM public.user_secret($1)\"\nauth_dbname = \"authq\"",
        "[users.authlookup]\npassword = \"lookup\"\n[databases.authq]\nport = {pg_port}\n\
         [databases.authq2]\nport = {pg_port}\ndbname = \"authq\"\n",
    );
    works(&px.url("app", "app", "authq2")).await;
    refusal(&px.url("app", "nope", "authq2"), "28P01").await;

    // A query that fails names auth_query; the cause (the server's error) goes to the log
    // only, as the client has proved nothing yet.
    let px = Pgmux::start(
        "auth_type = \"scram-sha-256\"\nauth_user = \"authlookup\"\nauth_query = \"SELECT * FROM no_such_function($1)\"",
        "[users.authlookup]\npassword = \"lookup\"\n[databases.authq]\nport = {pg_port}\n",
    );
    let msg = refusal(&px.url("app", "app", "authq"), "08006").await;
    assert_eq!(msg, "auth_query for user \"app\" failed");
    assert!(px.log().contains("no_such_function"), "{}", px.log());
}
