//! Throwaway PostgreSQL 15 servers: one primary per test binary, plus an optional replica.
//!
//! Layout of the temp root `Cluster::dir` (also the unix socket dir of both servers):
//! `data/` primary PGDATA, `replica/` replica PGDATA, `primary.log`, `replica.log`,
//! `pids/` (pids of live pgmux processes), `pgmux-N/` (Pgmux config + log).
use super::{free_port, tail, temp_dir, PG_BIN};
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

/// A running PostgreSQL server. The replica is the same type (see `Replica`).
pub struct Cluster {
    pub port: u16,
    /// Temp root shared by primary and replica: unix socket dir, logs, PGDATAs, pgmux dirs.
    pub dir: PathBuf,
    /// This server's PGDATA.
    pub data: PathBuf,
    /// This server's log file.
    pub log: PathBuf,
    pgbench_ready: OnceLock<()>,
}

/// The hot-standby replica: a `Cluster` whose `data` is `dir/replica` (psql,
/// superuser_client, backend_count, stop/start/restart all work on it; writes fail).
pub type Replica = Cluster;

static PRIMARY: OnceLock<Cluster> = OnceLock::new();
static REPLICA: OnceLock<Replica> = OnceLock::new();

/// The primary of this test binary, started on first use.
pub fn cluster() -> &'static Cluster {
    PRIMARY.get_or_init(|| timed("primary", start_primary))
}

/// The primary (same as `cluster()`) and its streaming replica, started on first use.
pub fn cluster_with_replica() -> (&'static Cluster, &'static Replica) {
    let primary = cluster();
    let replica = REPLICA.get_or_init(|| timed("replica", || start_replica(primary)));
    (primary, replica)
}

fn timed(name: &str, start: impl FnOnce() -> Cluster) -> Cluster {
    let t0 = Instant::now();
    let c = start();
    let (port, dir) = (c.port, c.dir.display());
    eprintln!("[support] {name} on port {port} ready in {:?} ({dir})", t0.elapsed());
    c
}

const CONF: &str = "
listen_addresses = '127.0.0.1'
unix_socket_directories = '{dir}'
fsync = off
synchronous_commit = off
wal_writer_delay = 10ms
full_page_writes = off
shared_buffers = 32MB
max_connections = 400
wal_level = replica
max_wal_senders = 5
wal_retrieve_retry_interval = 100ms
wal_keep_size = 256MB
password_encryption = 'scram-sha-256'
max_prepared_transactions = 10
";

const HBA: &str = "\
local all all trust
host all postgres 127.0.0.1/32 trust
host all trustuser 127.0.0.1/32 trust
host all md5user 127.0.0.1/32 md5
host replication postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
";

const SETUP_SQL: &str = "
SET password_encryption = 'scram-sha-256';
CREATE ROLE app LOGIN PASSWORD 'app';
SET password_encryption = 'md5';
CREATE ROLE md5user LOGIN PASSWORD 'md5pass';
CREATE ROLE trustuser LOGIN;
CREATE DATABASE bench OWNER app;
CREATE DATABASE other OWNER app;
";

const BENCH_SQL: &str = "
CREATE TABLE items(id int PRIMARY KEY, v text);
ALTER TABLE items OWNER TO app;
GRANT ALL ON items TO md5user, trustuser;
";

fn start_primary() -> Cluster {
    let dir = temp_dir("pg");
    fs::create_dir(dir.join("pids")).unwrap();
    if is_root() {
        let mut chown = Command::new("chown");
        let st = chown.args(["-R", "postgres:postgres", path_str(&dir)]).status();
        assert!(st.is_ok_and(|s| s.success()), "chown {}", dir.display());
    }
    spawn_watchdog(&dir);
    let data = dir.join("data");
    let d = data.display();
    let initdb = format!("initdb -D {d} -A trust -U postgres --no-sync -E UTF8 --locale=C");
    run_pg(&dir, &initdb).unwrap_or_else(|e| panic!("{e}"));
    append(&data, &CONF.replace("{dir}", path_str(&dir)));
    fs::write(data.join("pg_hba.conf"), HBA).unwrap(); // truncating keeps the file's owner
    let c = launch(dir, data, "primary");
    c.psql("postgres", SETUP_SQL);
    c.psql("bench", BENCH_SQL);
    c
}

fn start_replica(primary: &Cluster) -> Replica {
    let data = primary.dir.join("replica");
    let (port, d) = (primary.port, data.display());
    let cmd = format!("pg_basebackup -h 127.0.0.1 -p {port} -U postgres -D {d} -R -c fast -X stream");
    run_pg(&primary.dir, &cmd).unwrap_or_else(|e| panic!("{e}"));
    launch(primary.dir.clone(), data, "replica")
}

/// Start the server on a fresh port, retrying on another one if the port got taken meanwhile.
fn launch(dir: PathBuf, data: PathBuf, name: &str) -> Cluster {
    let log = dir.join(format!("{name}.log"));
    let mut c = Cluster {
        port: 0,
        dir,
        data,
        log,
        pgbench_ready: OnceLock::new(),
    };
    for attempt in 1..=5 {
        c.port = free_port();
        append(&c.data, &format!("port = {}\n", c.port)); // the last setting wins
        let res = c.pg_ctl("start");
        let log = fs::read_to_string(&c.log).unwrap_or_default();
        match res {
            Ok(()) => break,
            Err(_) if attempt < 5 && log.contains("could not bind") => {}
            Err(e) => panic!("{e}\nlast lines of {}:\n{}", c.log.display(), tail(&log, 30)),
        }
    }
    c
}

impl Cluster {
    fn pg_ctl(&self, args: &str) -> Result<(), String> {
        let (d, l) = (self.data.display(), self.log.display());
        run_pg(&self.dir, &format!("pg_ctl -D {d} -l {l} -w -t 60 {args}"))
    }

    /// Run `sql` (one or more statements, via stdin) with psql as superuser postgres over the
    /// unix socket, -qAtX, stopping at the first error. Returns trimmed stdout; panics on error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like `psql`, but returns the failure (for clean-up paths, e.g. in a `Drop`).
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let args = format!(
            "-h {} -p {} -U postgres -d {db} -qAtX -v ON_ERROR_STOP=1 -f -",
            self.dir.display(),
            self.port
        );
        let mut child = Command::new(format!("{PG_BIN}/psql"))
            .args(args.split_whitespace())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn psql: {e}"))?;
        let mut stdin = child.stdin.take().unwrap();
        let written = stdin.write_all(sql.as_bytes());
        drop(stdin);
        let out = child.wait_with_output().map_err(|e| format!("psql: {e}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!("psql -d {db} failed ({}): {stderr}\nSQL: {sql}", out.status));
        }
        written.map_err(|e| format!("write psql stdin: {e}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Direct connection as superuser postgres over TCP (trust).
    pub async fn superuser_client(&self, db: &str) -> tokio_postgres::Client {
        let url = format!(
            "host=127.0.0.1 port={} user=postgres dbname={db} sslmode=disable",
            self.port
        );
        super::connect(&url).await
    }

    /// Client backends connected to `db` as `user` (the counting psql excluded).
    pub fn backend_count(&self, db: &str, user: &str) -> i64 {
        let (db, user) = (db.replace('\'', "''"), user.replace('\'', "''"));
        let sql = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND usename = '{user}' \
             AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        );
        self.psql("postgres", &sql).parse().expect("count")
    }

    /// `pg_ctl restart -m fast`: drops every connection; same port afterwards.
    pub fn restart(&self) {
        self.pg_ctl("restart -m fast").unwrap_or_else(|e| panic!("{e}"));
    }

    /// `pg_ctl stop -m fast`.
    pub fn stop(&self) {
        self.pg_ctl("stop -m fast").unwrap_or_else(|e| panic!("{e}"));
    }

    /// `pg_ctl stop -m immediate`: no shutdown checkpoint, backends die at once (a crash).
    pub fn stop_immediate(&self) {
        self.pg_ctl("stop -m immediate").unwrap_or_else(|e| panic!("{e}"));
    }

    /// `pg_ctl promote -w` (a replica leaves recovery and becomes a primary of its own).
    pub fn promote(&self) {
        self.pg_ctl("promote").unwrap_or_else(|e| panic!("{e}"));
    }

    /// Start again after `stop()`, on the same port.
    pub fn start(&self) {
        self.pg_ctl("start").unwrap_or_else(|e| panic!("{e}"));
    }

    /// Turns TLS on: writes `cert_pem` and `key_pem` as server.crt and server.key in the data
    /// dir (0600, owned by postgres), sets `ssl = on`, puts `hba_lines` at the top of
    /// pg_hba.conf, reloads and waits until new connections see `ssl = on`. Plain-text clients
    /// (sslmode=disable) keep working unless `hba_lines` refuses them. Once per test binary.
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str, hba_lines: &str) {
        for (name, pem) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = self.data.join(name);
            fs::write(&path, pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
            if is_root() {
                let st = Command::new("chown")
                    .args(["postgres:postgres", path_str(&path)])
                    .status();
                assert!(st.is_ok_and(|s| s.success()), "chown {}", path.display());
            }
        }
        append(
            &self.data,
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        );
        let hba = self.data.join("pg_hba.conf");
        let old = fs::read_to_string(&hba).unwrap();
        fs::write(&hba, format!("{hba_lines}{old}")).unwrap(); // truncating keeps the file's owner
        self.pg_ctl("reload").unwrap_or_else(|e| panic!("{e}"));
        let t0 = Instant::now();
        while self.psql("postgres", "SHOW ssl") != "on" {
            if t0.elapsed() > std::time::Duration::from_secs(10) {
                let log = fs::read_to_string(&self.log).unwrap_or_default();
                panic!("ssl still off 10 s after the reload; log:\n{}", tail(&log, 20));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// pgbench tables in `bench` at scale 1, owned by app; created once per test binary.
    pub fn pgbench_init(&self) {
        self.pgbench_ready.get_or_init(|| {
            let port = self.port.to_string();
            let args = [
                "-i",
                "-s",
                "1",
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "app",
                "bench",
            ];
            let timeout = std::time::Duration::from_secs(120);
            let (code, out, err) = super::run_cmd("pgbench", &args, &[("PGPASSWORD", "app")], timeout);
            assert_eq!(code, 0, "pgbench -i failed: {out}\n{err}");
        });
    }
}

fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Run a PostgreSQL program from PG_BIN ("prog arg arg...", split on whitespace: our paths
/// have none) to completion, in `cwd` (postgres must be able to read its cwd). As root it runs
/// as postgres (PostgreSQL refuses root), and with the open-file soft limit raised in any case
/// (runuser resets it to 1024, too few for 400 connections). Err carries its output.
fn run_pg(cwd: &Path, cmdline: &str) -> Result<(), String> {
    let mut argv: Vec<&str> = Vec::new();
    if is_root() {
        argv.extend(["runuser", "-u", "postgres", "--"]);
    }
    let script = r#"ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" "$@""#;
    argv.extend(["sh", "-c", script]);
    let prog = format!("{PG_BIN}/{cmdline}");
    argv.extend(prog.split_whitespace());
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output();
    let out = out.unwrap_or_else(|e| panic!("spawn {prog}: {e}"));
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    match out.status.success() {
        true => Ok(()),
        false => Err(format!("{prog} failed ({}):\n{o}{e}", out.status)),
    }
}

/// Detached (own process group, so a terminal ^C to the tests does not kill it) shell that
/// waits for this test process to die, then kills leftover pgmux processes, stops both
/// servers and removes the temp root. Needed because statics are never dropped.
#[allow(clippy::zombie_processes)] // never waited for on purpose: it outlives us
fn spawn_watchdog(dir: &Path) {
    let sudo = if is_root() { "runuser -u postgres -- " } else { "" };
    let script = format!(
        "while [ -e /proc/{pid} ]; do sleep 0.5; done
         for f in {d}/pids/*; do kill -9 \"${{f##*/}}\" 2>/dev/null; done
         for pgdata in {d}/replica {d}/data; do
           [ -f $pgdata/postmaster.pid ] && {sudo}{PG_BIN}/pg_ctl -D $pgdata stop -m immediate
         done
         rm -rf {d}",
        pid = std::process::id(),
        d = path_str(dir),
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]).current_dir("/").process_group(0);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    cmd.spawn().expect("spawn watchdog");
}

/// Append to `data`/postgresql.conf (appending keeps the file's owner).
fn append(data: &Path, text: &str) {
    let path = data.join("postgresql.conf");
    let f = fs::OpenOptions::new().append(true).open(&path);
    let mut f = f.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(text.as_bytes()).unwrap();
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
