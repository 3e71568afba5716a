//! The pgmux command line: `check`, `convert`, `--help`, `--version`, a listen port that is
//! taken, and serving from PgBouncer's pgbouncer.ini.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const PGMUX: &str = env!("CARGO_BIN_EXE_pgmux");

/// The repository's own example configuration.
fn repo_config() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pooler.toml");
    assert!(path.exists(), "{} is missing", path.display());
    path
}

/// A config file under the temp dir with a unique name, removed on drop.
struct TempConfig(PathBuf);

impl TempConfig {
    fn new(text: &str) -> TempConfig {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!("pgmux-cli-{}-{n}-{nanos}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        TempConfig(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs pgmux to completion (it must finish within 10 s): (exit code, stdout, stderr).
fn pgmux(args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(PGMUX)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pgmux");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "pgmux {args:?} still running after 10 s; stdout: {}; stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let Output { status, stdout, stderr } = child.wait_with_output().expect("wait");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// `pgmux check --config F` must fail; returns stderr, asserted to name the file.
fn check_fails(text: &str) -> String {
    let file = TempConfig::new(text);
    let (code, out, err) = pgmux(&["check", "--config", file.path()]);
    assert_ne!(code, 0, "check passed a bad config:\n{text}\nstdout: {out}");
    assert!(err.contains(file.path()), "the error does not name the file: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line expected: {err}");
    err
}

#[test]
fn check_accepts_the_repository_config() {
    let config = repo_config();
    let path = config.to_str().unwrap();
    let (code, out, err) = pgmux(&["check", "--config", path]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains(path) && out.contains("ok"), "stdout: {out}");
    // The global option also works before the subcommand, and in its short form.
    let (code, out, err) = pgmux(&["--config", path, "check"]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let (code, _, err) = pgmux(&["-c", path, "check"]);
    assert_eq!(code, 0, "stderr: {err}");
    // A minimal file and an empty one are valid too (every key is optional).
    let file = TempConfig::new("[pooler]\nlisten_port = 6433\n[users.app]\npassword = \"app\"\n");
    assert_eq!(pgmux(&["check", "--config", file.path()]).0, 0);
    let empty = TempConfig::new("");
    assert_eq!(pgmux(&["check", "--config", empty.path()]).0, 0);
}

#[test]
fn check_names_file_line_and_key_of_an_unknown_key() {
    let err = check_fails("[pooler]\nlisten_port = 6432\npool_mod = \"session\"\n");
    assert!(err.contains(":3:"), "line 3 expected: {err}");
    assert!(err.contains("pooler.pool_mod"), "{err}");
    assert!(err.contains("unknown key"), "{err}");
    assert!(err.contains("pool_mode"), "a suggestion expected: {err}");
}

#[test]
fn check_reports_wrong_types_and_invalid_values() {
    let err = check_fails("[pooler]\ndefault_pool_size = \"ten\"\n");
    assert!(err.contains(":2:") && err.contains("pooler.default_pool_size"), "{err}");
    assert!(err.contains("integer") && err.contains("string"), "{err}");

    let err = check_fails("# comment\n\n[pooler]\nlisten_port = 6432\npool_mode = \"sesion\"\n");
    assert!(err.contains(":5:") && err.contains("pooler.pool_mode"), "{err}");
    assert!(err.contains("sesion") && err.contains("session"), "{err}");

    let err = check_fails("[databases.bench]\nport = 70000\n");
    assert!(err.contains(":2:") && err.contains("databases.bench.port"), "{err}");

    let err = check_fails("[pooler]\nlisten_port = 6432\nlisten_addr = \n");
    assert!(err.contains(":3:") && err.contains("syntax"), "{err}");
}

#[test]
fn check_and_startup_reject_unusable_tls_files() {
    let missing = std::env::temp_dir().join(format!("pgmux-cli-{}-missing.pem", std::process::id()));
    let missing = missing.to_str().unwrap();
    let text =
        format!("[pooler]\ntls_mode = \"require\"\ntls_cert_file = \"{missing}\"\ntls_key_file = \"{missing}\"\n");
    let err = check_fails(&text);
    assert!(err.contains("pooler.tls_cert_file") && err.contains(missing), "{err}");
    assert!(err.contains("cannot read"), "{err}");

    // A file that is not PEM, as the key and as the CA.
    let junk = TempConfig::new("this is no key\n");
    let cert = TempConfig::new("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    let text = format!(
        "[pooler]\ntls_mode = \"prefer\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert.path(),
        junk.path()
    );
    let err = check_fails(&text);
    assert!(
        err.contains("pooler.tls_key_file") && err.contains(junk.path()),
        "{err}"
    );
    let text = format!(
        "[pooler]\nserver_tls_mode = \"verify-full\"\nserver_tls_ca_file = \"{}\"\n",
        junk.path()
    );
    let err = check_fails(&text);
    assert!(
        err.contains("pooler.server_tls_ca_file") && err.contains(junk.path()),
        "{err}"
    );

    // Starting with such a file fails at once, with the same message.
    let file = TempConfig::new(&format!("[pooler]\nlisten_port = 1\n{}", &text["[pooler]\n".len()..]));
    let (code, _, err) = pgmux(&["--config", file.path()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("pooler.server_tls_ca_file") && err.contains(junk.path()),
        "{err}"
    );
}

#[test]
fn check_rejects_malformed_secrets_without_echoing_them() {
    let stored = "U2VjcmV0U3RvcmVkS2V5UXVva2th"; // 21 bytes, not 32
    let server = "U2VjcmV0U2VydmVyS2V5V29tYmF0";
    let salt = "UXVva2thU2FsdFNhbHQ=";
    let secret = format!("SCRAM-SHA-256$4096:{salt}${stored}:{server}");
    let err = check_fails(&format!(
        "[pooler]\nauth_type = \"scram-sha-256\"\n[users.x]\npassword = \"{secret}\"\n"
    ));
    assert!(err.contains(":4:") && err.contains("users.x.password"), "{err}");
    assert!(err.contains("SCRAM"), "{err}");
    for part in [stored, server, salt, secret.as_str()] {
        assert!(!err.contains(part), "the error echoes the secret ({part}): {err}");
    }

    // Missing keys part, bad iteration count: never echoed either. ("md5" followed by anything
    // but 32 hex digits is a plain password, as in PostgreSQL, so it is no error.)
    let cases = [
        format!("SCRAM-SHA-256$4096:{salt}"),
        format!("SCRAM-SHA-256$lots:{salt}${stored}:{server}"),
    ];
    for secret in cases {
        let err = check_fails(&format!("[users.x]\npassword = \"{secret}\"\n"));
        assert!(err.contains(":2:") && err.contains("users.x.password"), "{err}");
        assert!(!err.contains(&secret[3..]), "the error echoes the secret: {err}");
        for word in ["Quokka", "Wombat", "lots"] {
            assert!(!err.contains(word) || !secret.contains(word), "echoed {word}: {err}");
        }
    }

    // A database's server password is checked the same way.
    let err = check_fails(&format!(
        "[databases.bench]\npassword = \"SCRAM-SHA-256$4096:{salt}${stored}\"\n"
    ));
    assert!(
        err.contains("databases.bench.password") && !err.contains(stored),
        "{err}"
    );
}

#[test]
fn check_without_a_file_or_with_a_missing_one() {
    let (code, out, err) = pgmux(&["check"]);
    assert_ne!(code, 0, "stdout: {out}");
    assert!(err.contains("--config"), "no hint about --config: {err}");

    let missing = std::env::temp_dir().join(format!("pgmux-cli-missing-{}.toml", std::process::id()));
    let missing = missing.to_str().unwrap();
    let (code, out, err) = pgmux(&["check", "--config", missing]);
    assert_ne!(code, 0, "stdout: {out}");
    assert!(err.contains(missing), "the error does not name the path: {err}");
    // Serving with a missing file fails the same way, at once.
    let (code, _, err) = pgmux(&["--config", missing]);
    assert_ne!(code, 0);
    assert!(err.contains(missing), "{err}");
}

#[test]
fn help_and_version() {
    let (code, out, err) = pgmux(&["--help"]);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.contains("check"), "--help does not mention check: {out}");
    assert!(out.contains("--config"), "{out}");
    let (code, out, err) = pgmux(&["--version"]);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out.trim(), format!("pgmux {}", env!("CARGO_PKG_VERSION")));
    // An unknown subcommand or option is a usage error.
    let (code, _, err) = pgmux(&["chek"]);
    assert_ne!(code, 0);
    assert!(err.contains("chek"), "{err}");
}

#[test]
fn serving_on_a_taken_port_exits_with_an_error() {
    let held = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = held.local_addr().unwrap().port();
    let file = TempConfig::new(&format!(
        "[pooler]\nlisten_addr = \"127.0.0.1\"\nlisten_port = {port}\n[metrics]\nlisten = \"\"\n\
         [databases.bench]\nport = 1\n"
    ));
    let t0 = Instant::now();
    let mut child = Command::new(PGMUX)
        .args(["--config", file.path()])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pgmux");
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if t0.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pgmux still running after 5 s with port {port} taken");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut text = String::new();
    child.stdout.take().unwrap().read_to_string(&mut text).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut text).unwrap();
    assert!(!status.success(), "exit status {status}; output: {text}");
    assert!(text.contains("cannot listen"), "output: {text}");
    assert!(text.contains(&port.to_string()), "the port is not named: {text}");
    drop(held);
}

/// A pgbouncer.ini in a scratch directory with an included file, removed on drop.
struct IniDir(PathBuf);

impl IniDir {
    fn new(main: &str, included: &str) -> IniDir {
        let dir = TempConfig::new("").0.with_extension("d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pgbouncer.ini"), main.replace("{dir}", dir.to_str().unwrap())).unwrap();
        std::fs::write(dir.join("databases.ini"), included).unwrap();
        IniDir(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for IniDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn convert_and_check_a_pgbouncer_ini() {
    let ini = IniDir::new(
        ";; PgBouncer's format\n[pgbouncer]\nlisten_addr = *\nlisten_port = 6499\nauth_type = md5\n\
         logfile = /var/log/pgbouncer.log\nadmin_users = admin, ops\n%include {dir}/databases.ini\n",
        "[databases]\napp = host=db1 port=5433 dbname=app_prod pool_size=10\n* = host=db2\n",
    );
    let file = ini.path("pgbouncer.ini");
    let (code, toml, notes) = pgmux(&["convert", &file]);
    assert_eq!(code, 0, "stderr: {notes}");
    for line in [
        "listen_addr = \"*\"",
        "listen_port = 6499",
        "auth_type = \"md5\"",
        "admin_users = [\"admin\", \"ops\"]",
        "pool_mode = \"session\"",
        "[databases.app]",
        "dbname = \"app_prod\"",
        "[databases.\"*\"]",
    ] {
        assert!(toml.lines().any(|l| l.starts_with(line)), "{line} missing:\n{toml}");
    }
    assert!(
        notes.contains(&format!("{file}:6: logfile: pgmux logs to stderr")),
        "{notes}"
    );
    assert!(
        !notes.contains("listen_addr"),
        "listen_addr = * means the same in pgmux: {notes}"
    );
    // The output is a pooler.toml that check accepts.
    let converted = TempConfig::new(&toml);
    let (code, out, err) = pgmux(&["check", "--config", converted.path()]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}\n{toml}");
    // check reads the ini itself, and prints the notes.
    let (code, out, err) = pgmux(&["check", "--config", &file]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains(&file) && out.contains("ok"), "{out}");
    assert!(err.contains("logfile: pgmux logs to stderr"), "{err}");

    // A malformed ini: exit 2 and one line naming the file and line, for both.
    let bad = IniDir::new("[pgbouncer]\nlisten_port = 6499\n\nmax_client_conn = lots\n", "");
    let file = bad.path("pgbouncer.ini");
    for args in [vec!["convert", file.as_str()], vec!["check", "--config", file.as_str()]] {
        let (code, out, err) = pgmux(&args);
        assert_eq!(code, 2, "{args:?}: stdout: {out}\nstderr: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(&format!("{file}:4: max_client_conn: ")), "{err}");
    }
    let (code, _, err) = pgmux(&["convert", &ini.path("missing.ini")]);
    assert_eq!(code, 2);
    assert!(err.contains("missing.ini") && err.contains("cannot read"), "{err}");
}

#[tokio::test]
async fn serves_from_a_pgbouncer_ini_and_keeps_it_on_a_bad_reload() {
    let ini = "[databases]\nviaini = host=127.0.0.1 port={pg_port} dbname=postgres\n\
               [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = trust\n\
               pool_mode = transaction\nunix_socket_dir = {dir}\nlogfile = {dir}/pgbouncer.log\n";
    let px = support::Pgmux::start_file("pgbouncer.ini", ini);
    assert!(
        px.wait_for_log("logfile: pgmux logs to stderr", Duration::from_secs(5)),
        "the note is not logged:\n{}",
        px.log()
    );
    let client = support::connect(&px.url("postgres", "x", "viaini")).await;
    let row = client.query_one("SELECT current_database()", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "postgres");

    // A malformed file on SIGHUP: refused, naming the ini line; the running config stays.
    px.write_file(&ini.replace("pool_mode = transaction", "pool_mode = pooled"));
    px.signal("HUP");
    assert!(
        px.wait_for_log("reload refused", Duration::from_secs(5)),
        "{}",
        px.log()
    );
    assert!(px.log().contains("pgbouncer.ini:7: pool_mode: "), "{}", px.log());
    let client = support::connect(&px.url("postgres", "x", "viaini")).await;
    client.simple_query("SELECT 1").await.unwrap();

    // A good one takes effect: a new database name.
    px.write_file(&format!(
        "{ini}[databases]\nalso = host=127.0.0.1 port={{pg_port}} dbname=postgres\n"
    ));
    px.signal("HUP");
    assert!(
        px.wait_for_log("configuration reloaded", Duration::from_secs(5)),
        "{}",
        px.log()
    );
    let client = support::connect(&px.url("postgres", "x", "also")).await;
    client.simple_query("SELECT 1").await.unwrap();
}

#[test]
fn docs_configuration_md_is_the_reference_the_schema_gives() {
    let (code, out, err) = pgmux(&["config", "reference"]);
    assert_eq!(code, 0, "{err}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let committed = std::fs::read_to_string(&path).expect("docs/configuration.md");
    assert!(
        committed == out,
        "docs/configuration.md is out of date: run `pgmux config reference > docs/configuration.md`"
    );
    // Every key the parser accepts is in it.
    for key in [
        "listen_port",
        "tcp_user_timeout",
        "max_open_timeout",
        "write_functions",
        "auth_hba_file",
    ] {
        assert!(out.contains(&format!("| `{key}` |")), "{key} missing");
    }
}

#[test]
fn docs_metrics_md_is_the_reference_the_exporter_gives() {
    let (code, out, err) = pgmux(&["metrics", "reference"]);
    assert_eq!(code, 0, "{err}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md");
    let committed = std::fs::read_to_string(&path).expect("docs/metrics.md");
    assert!(
        committed == out,
        "docs/metrics.md is out of date: run `pgmux metrics reference > docs/metrics.md`"
    );
}
