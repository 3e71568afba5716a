//! A pgmux process under test, with a generated config file.
use super::{cluster, free_port, tail, Cluster};
use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The binary cargo built.
fn built() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgmux"))
}

/// Starts `binary --config CONFIG ARGS...` with stdout and stderr in `log_path` and RUST_LOG
/// `log_filter` (else the test's own, else info), registered in `watchdog` for the cluster
/// watchdog, which kills leftovers when the tests die: the child and its pid file.
fn launch(
    binary: &Path,
    config_path: &Path,
    args: &[&str],
    log_path: &Path,
    log_filter: Option<&str>,
    watchdog: &Path,
) -> (Child, PathBuf) {
    let log = fs::File::create(log_path).expect("create pgmux log");
    let mut cmd = Command::new(binary);
    cmd.arg("--config").arg(config_path).args(args);
    cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
    if let Some(filter) = log_filter {
        cmd.env("RUST_LOG", filter);
    } else if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    let child = cmd.spawn().expect("spawn pgmux");
    let pid_file = watchdog.join(child.id().to_string());
    let _ = fs::write(&pid_file, "");
    (child, pid_file)
}

/// A running pgmux. Its config and log live in `dir` (under the cluster's temp root, so the
/// cluster watchdog kills the process and removes them even if the test binary aborts).
/// Drop kills it (SIGKILL), waits for it and removes `dir`; if the thread is panicking it
/// first prints the last 50 lines of the log to stderr (shown with the failed test).
pub struct Pgmux {
    pub port: u16,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub dir: PathBuf,
    child: Child,
    pid_file: PathBuf,
    /// Placeholder substitutions for the config text: {pg_port}, {pg_socket_dir}, {replica_port}.
    vars: Vec<(&'static str, String)>,
}

impl Pgmux {
    /// Start pgmux against `cluster()` (the primary of this test binary).
    pub fn start(pooler_extra: &str, rest: &str) -> Pgmux {
        Self::start_with(cluster(), None, pooler_extra, rest)
    }

    /// Start pgmux with SCRAM logins for user `app` (password `app`) and the database `db` of
    /// `cluster()`, created if missing; `pooler` goes into `[pooler]`.
    pub fn start_app(pooler: &str, db: &str) -> Pgmux {
        super::ensure_database(db);
        Self::start(
            &format!("auth_type = \"scram-sha-256\"\n{pooler}"),
            &format!("[users.app]\npassword = \"app\"\n[databases.{db}]\nport = {{pg_port}}\n"),
        )
    }

    /// Start pgmux with the config
    /// `[pooler]\nlisten_addr = "127.0.0.1"\nlisten_port = <free port>\n<pooler_extra>\n[metrics]\nlisten = ""\n<rest>`
    /// (without the `[metrics]` lines when `rest` has a `[metrics]` section of its own)
    /// where `{pg_port}` becomes `cluster.port`, `{pg_socket_dir}` `cluster.dir` (its unix
    /// socket directory) and `{replica_port}` the given replica port. Waits until the port
    /// accepts TCP (10 s); panics with the log tail if pgmux exits or never listens.
    pub fn start_with(cluster: &Cluster, replica_port: Option<u16>, pooler_extra: &str, rest: &str) -> Pgmux {
        Self::spawn(built(), cluster, replica_port, pooler_extra, rest, None)
    }

    /// `start_app` from another copy of the binary (an upgrade test replaces it under the
    /// running process).
    pub fn start_app_from(binary: &Path, pooler: &str, db: &str) -> Pgmux {
        super::ensure_database(db);
        let pooler = format!("auth_type = \"scram-sha-256\"\n{pooler}");
        let rest = format!("[users.app]\npassword = \"app\"\n[databases.{db}]\nport = {{pg_port}}\n");
        Self::spawn(binary, cluster(), None, &pooler, &rest, None)
    }

    /// `BINARY --config <this config> upgrade`: the new process, once it took over from this
    /// one (which goes on until it has handed over its clients), or its log when it did not.
    pub fn upgrade(&self, binary: &Path) -> Result<Pgmux, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = self.dir.with_file_name(format!(
            "{}-upgrade-{}",
            self.dir.file_name().and_then(|n| n.to_str()).unwrap_or("pgmux"),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).expect("mkdir for the new pgmux");
        let config_path = dir.join(self.config_path.file_name().expect("config file name"));
        fs::copy(&self.config_path, &config_path).expect("copy the config");
        let log_path = dir.join("pgmux.log");
        let watchdog = self.pid_file.parent().expect("the watchdog's directory");
        let (child, pid_file) = launch(binary, &config_path, &["upgrade"], &log_path, None, watchdog);
        let mut me = Pgmux {
            port: self.port,
            config_path,
            log_path,
            dir,
            child,
            pid_file,
            vars: self.vars.clone(),
        };
        match me.wait_logged("taken over from pgmux") {
            Ok(()) => Ok(me),
            Err(why) => Err(format!("{why}: {}", me.log())),
        }
    }

    /// `start` with RUST_LOG set to `filter` (e.g. "trace") whatever the test's environment says.
    pub fn start_logging(filter: &str, pooler_extra: &str, rest: &str) -> Pgmux {
        Self::spawn(built(), cluster(), None, pooler_extra, rest, Some(filter))
    }

    fn spawn(
        binary: &Path,
        cluster: &Cluster,
        replica_port: Option<u16>,
        pooler_extra: &str,
        rest: &str,
        log_filter: Option<&str>,
    ) -> Pgmux {
        static N: AtomicU32 = AtomicU32::new(0);
        let mut vars = vec![
            ("{pg_port}", cluster.port.to_string()),
            ("{pg_socket_dir}", cluster.dir.to_str().unwrap().to_owned()),
        ];
        if let Some(p) = replica_port {
            vars.push(("{replica_port}", p.to_string()));
        }
        for attempt in 1..=3 {
            let dir = cluster.dir.join(format!("pgmux-{}", N.fetch_add(1, Ordering::Relaxed)));
            fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            let port = free_port();
            let config_path = dir.join("pgmux.toml");
            let log_path = dir.join("pgmux.log");
            fs::write(&config_path, config_text(port, &vars, pooler_extra, rest)).expect("write config");
            let watchdog = cluster.dir.join("pids");
            let (child, pid_file) = launch(binary, &config_path, &[], &log_path, log_filter, &watchdog);
            let mut me = Pgmux {
                port,
                config_path,
                log_path,
                dir,
                child,
                pid_file,
                vars: vars.clone(),
            };
            let why = match me.wait_listening() {
                Ok(()) => return me,
                Err(why) => why,
            };
            let log = me.log();
            drop(me); // kills, reaps, removes the dir
                      // Another process may have grabbed the port between free_port() and bind: retry.
            if attempt < 3 && log.to_lowercase().contains("in use") {
                continue;
            }
            panic!(
                "pgmux did not start: {why}; last 50 lines of its log:\n{}",
                tail(&log, 50)
            );
        }
        unreachable!()
    }

    /// Start pgmux against `cluster()` on a config file named `file_name` (so any format,
    /// e.g. "pgbouncer.ini"), written from `text`, where `{port}` becomes the listen port, `{dir}`
    /// pgmux's own directory, and `{pg_port}`, `{pg_socket_dir}` as in `start_with`. Nothing
    /// is added to the text: it must set the listen address and port itself.
    pub fn start_file(file_name: &str, text: &str) -> Pgmux {
        Self::start_file_at(file_name, text, None)
    }

    /// `start_file` on a given `{port}` (one another pgmux may already listen on, with
    /// so_reuseport): waits for this process's own "listening on" log line, not for the port.
    pub fn start_file_on(file_name: &str, text: &str, port: u16) -> Pgmux {
        Self::start_file_at(file_name, text, Some(port))
    }

    fn start_file_at(file_name: &str, text: &str, fixed_port: Option<u16>) -> Pgmux {
        static N: AtomicU32 = AtomicU32::new(0);
        let cluster = cluster();
        for attempt in 1..=3 {
            let dir = cluster
                .dir
                .join(format!("pgmux-file-{}", N.fetch_add(1, Ordering::Relaxed)));
            fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            let port = fixed_port.unwrap_or_else(free_port);
            let vars = vec![
                ("{pg_port}", cluster.port.to_string()),
                ("{pg_socket_dir}", cluster.dir.to_str().unwrap().to_owned()),
                ("{port}", port.to_string()),
                ("{dir}", dir.to_str().unwrap().to_owned()),
            ];
            let config_path = dir.join(file_name);
            let log_path = dir.join("pgmux.log");
            let subst = |s: &str| vars.iter().fold(s.to_owned(), |s, (k, v)| s.replace(k, v));
            fs::write(&config_path, subst(text)).expect("write config");
            let watchdog = cluster.dir.join("pids");
            let (child, pid_file) = launch(built(), &config_path, &[], &log_path, None, &watchdog);
            let mut me = Pgmux {
                port,
                config_path,
                log_path,
                dir,
                child,
                pid_file,
                vars,
            };
            let started = match fixed_port {
                None => me.wait_listening(),
                Some(_) => me.wait_logged("listening on"),
            };
            let why = match started {
                Ok(()) => return me,
                Err(why) => why,
            };
            let log = me.log();
            drop(me);
            if attempt < 3 && fixed_port.is_none() && log.to_lowercase().contains("in use") {
                continue;
            }
            panic!(
                "pgmux did not start: {why}; last 50 lines of its log:\n{}",
                tail(&log, 50)
            );
        }
        unreachable!()
    }

    /// Rewrite the file of `start_file`, with the same substitutions.
    pub fn write_file(&self, text: &str) {
        let text = self.vars.iter().fold(text.to_owned(), |s, (k, v)| s.replace(k, v));
        fs::write(&self.config_path, text).expect("write pgmux config");
    }

    /// (Re)write the config file, same format and port as at start (e.g. before `signal("HUP")`).
    pub fn write_config(&self, pooler_extra: &str, rest: &str) {
        let text = config_text(self.port, &self.vars, pooler_extra, rest);
        fs::write(&self.config_path, text).expect("write pgmux config");
    }

    fn wait_listening(&mut self) -> Result<(), String> {
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Err(format!("it exited with {status}"));
            }
            // The listening socket must be pgmux's own: another process (a test binary probing
            // for a free port) may hold the port for a moment, and a connect alone would believe it.
            if listens(self.child.id(), self.port) && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if t0.elapsed() > START_TIMEOUT {
                return Err(format!("port {} not accepting after {START_TIMEOUT:?}", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_logged(&mut self, needle: &str) -> Result<(), String> {
        let t0 = Instant::now();
        while !self.log().contains(needle) {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Err(format!("it exited with {status}"));
            }
            if t0.elapsed() > START_TIMEOUT {
                return Err(format!("no {needle:?} in its log after {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn kill_and_reap(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.pid_file);
    }

    /// The whole log (stdout + stderr) so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// Poll the log until it contains `needle`; false after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let t0 = Instant::now();
        while !self.log().contains(needle) {
            if t0.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -s SIG <pid>`, e.g. "HUP", "INT", "TERM", "KILL".
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill").args(["-s", sig, &self.pid().to_string()]).status();
        assert!(st.is_ok_and(|s| s.success()), "kill -s {sig} {} failed", self.pid());
    }

    /// Wait up to `timeout` for the process to exit; None if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if t0.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// libpq-style connection string for tokio-postgres.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db} sslmode=disable",
            self.port
        )
    }
}

fn config_text(port: u16, vars: &[(&str, String)], pooler_extra: &str, rest: &str) -> String {
    let subst = |s: &str| vars.iter().fold(s.to_owned(), |s, (k, v)| s.replace(k, v));
    // Metrics are off unless `rest` has its own [metrics] section (tests/metrics.rs).
    let metrics = if rest.contains("[metrics]") {
        ""
    } else {
        "[metrics]\nlisten = \"\"\n"
    };
    format!(
        "[pooler]\nlisten_addr = \"127.0.0.1\"\nlisten_port = {port}\n{}\n{metrics}{}\n",
        subst(pooler_extra),
        subst(rest)
    )
}

impl Drop for Pgmux {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- last 50 lines of {} ---\n{}\n---",
                self.log_path.display(),
                tail(&self.log(), 50)
            );
        }
        self.kill_and_reap();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Whether process `pid` holds a TCP socket listening on `port` (from /proc: its descriptors'
/// socket inodes against /proc/net/tcp and tcp6).
fn listens(pid: u32, port: u16) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let inodes: Vec<String> = fds
        .flatten()
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let local = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                // local_address, st (0A = LISTEN), inode
                f.len() > 9 && f[1].ends_with(&local) && f[3] == "0A" && inodes.iter().any(|i| i == f[9])
            })
    })
}
