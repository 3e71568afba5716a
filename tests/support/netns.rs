//! Network namespaces for tests/netfault.rs: pgmux, a PostgreSQL primary and its streaming
//! replica each in a namespace of its own, joined by veth pairs to a bridge in the root
//! namespace; faults injected with nftables rules inside the namespaces and, for delay, a
//! userspace delaying TCP relay (this kernel has no `tc netem`).
//!
//! Names: namespaces `pgmf<pid><role>` (role `x` pgmux, `p` primary, `r` replica, `c` a client),
//! host-side veths `nf<pid><role>`, the bridge `nf<pid>b`, addresses `10.213.S.0/24` (bridge
//! `.1`, pgmux `.2`, primary `.3`, replica `.4`, client `.5`; S picked free at setup). Everything
//! is torn down by a watchdog shell when the test process exits, however it exits; a later
//! run also sweeps namespaces `pgmf<pid>*` whose pid is dead.
//!
//! PostgreSQL runs with short TCP keepalives (5 s idle, then 3 probes 1 s apart): a backend whose
//! pgmux side was closed during a black hole (its FIN dropped) goes away within seconds of the
//! heal, so pg_stat_activity counts can be compared with pgmux's; and a backend survives a black
//! hole shorter than 8 s on its own side, so the scenarios' black holes (2 to 7 s) test pgmux's
//! detection, not PostgreSQL's.
//!
//! Used through `#[path]` from tests/netfault.rs only (not part of `support`, so the other
//! test binaries do not compile it).
#![allow(dead_code)]

use crate::support::{tail, PG_BIN};
use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::BuildHasher;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub const PRIMARY_PORT: u16 = 5432;
pub const REPLICA_PORT: u16 = 5433;

/// Roles, each a namespace and an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Pgmux,
    Primary,
    Replica,
    Client,
}

impl Role {
    const ALL: [Role; 4] = [Role::Pgmux, Role::Primary, Role::Replica, Role::Client];
    fn letter(self) -> char {
        match self {
            Role::Pgmux => 'x',
            Role::Primary => 'p',
            Role::Replica => 'r',
            Role::Client => 'c',
        }
    }
    fn host(self) -> u8 {
        match self {
            Role::Pgmux => 2,
            Role::Primary => 3,
            Role::Replica => 4,
            Role::Client => 5,
        }
    }
}

/// The shared topology of the test binary: namespaces, bridge, primary and replica.
pub struct Net {
    pid: u32,
    pub subnet: u8,
    /// Temp root: PGDATAs (`data/`, `replica/`), logs, unix sockets, pgmux dirs, `pids/`.
    pub dir: PathBuf,
}

/// Why there is no topology.
#[derive(Clone, Debug)]
pub enum NoNet {
    /// This machine cannot make it (not root, no namespaces, no `nft`): tests skip.
    Unsupported(String),
    /// It could be made but its setup failed (e.g. PostgreSQL did not start): tests fail.
    Broken(String),
}

static NET: OnceLock<Result<Net, NoNet>> = OnceLock::new();

/// The topology, set up on first use (once per process, even when the setup fails).
pub fn net() -> Result<&'static Net, NoNet> {
    NET.get_or_init(|| {
        let t0 = Instant::now();
        let res = match std::panic::catch_unwind(Net::setup) {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(why)) => Err(NoNet::Unsupported(why)),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                Err(NoNet::Broken(msg))
            }
        };
        match &res {
            Ok(n) => eprintln!(
                "[netns] namespaces {}*, subnet 10.213.{}.0/24, primary and replica ready in {:?}",
                n.prefix(),
                n.subnet,
                t0.elapsed()
            ),
            Err(e) => eprintln!("[netns] no topology: {e:?}"),
        }
        res
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Runs a command to completion; Err with its output when it fails.
pub fn sh(argv: &[&str]) -> Result<String, String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("spawn {}: {e}", argv[0]))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("`{}` failed ({}): {}", argv.join(" "), out.status, text.trim()))
    }
}

fn must(argv: &[&str]) -> String {
    sh(argv).unwrap_or_else(|e| panic!("{e}"))
}

fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Deletes namespaces `pgmf<pid>*`, veths and bridges `nf<pid>*` of test processes that are gone.
fn sweep_stale() {
    let list = sh(&["ip", "netns", "list"]).unwrap_or_default();
    let links = sh(&["ip", "-o", "link", "show"]).unwrap_or_default();
    let mut dead = Vec::new();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if let Some(pid) = name
            .strip_prefix("pgmf")
            .and_then(|s| s[..s.len().saturating_sub(1)].parse::<u32>().ok())
        {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                for p in sh(&["ip", "netns", "pids", name])
                    .unwrap_or_default()
                    .split_whitespace()
                {
                    let _ = sh(&["kill", "-9", p]);
                }
                let _ = sh(&["ip", "netns", "del", name]);
                dead.push(pid);
            }
        }
    }
    for line in links.lines() {
        // "12: nf1234b: <BROADCAST..." or "13: nf1234p@if2: ..."
        let Some(name) = line.split(": ").nth(1) else { continue };
        let name = name.split('@').next().unwrap_or(name);
        if let Some(pid) = name
            .strip_prefix("nf")
            .and_then(|s| s[..s.len().saturating_sub(1)].parse::<u32>().ok())
        {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = sh(&["ip", "link", "del", name]);
            }
        }
    }
    // Temp roots of dead runs (their watchdog normally removes them).
    for entry in fs::read_dir("/tmp").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("pgmux-netfault-").and_then(|p| p.parse::<u32>().ok()) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    if !dead.is_empty() {
        eprintln!("[netns] swept namespaces of dead test processes {dead:?}");
    }
}

impl Net {
    fn setup() -> Result<Net, String> {
        if !is_root() {
            return Err("not root (network namespaces and nftables need root)".into());
        }
        for tool in ["ip", "nft"] {
            if sh(&["sh", "-c", &format!("command -v {tool}")]).is_err() {
                return Err(format!("`{tool}` not installed (scripts/test.sh installs it)"));
            }
        }
        if !Path::new(PG_BIN).join("postgres").exists() {
            return Err(format!("no PostgreSQL in {PG_BIN}"));
        }
        sweep_stale();
        let pid = std::process::id();
        let taken = sh(&["ip", "-4", "-o", "addr", "show"]).unwrap_or_default();
        let subnet = (0..250u32)
            .map(|i| ((pid + i) % 250 + 1) as u8)
            .find(|s| !taken.contains(&format!(" 10.213.{s}.")))
            .ok_or("no free 10.213.S.0/24 subnet")?;
        let dir = PathBuf::from(format!("/tmp/pgmux-netfault-{pid}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("pids")).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let net = Net { pid, subnet, dir };
        // The first namespace tells whether namespaces work at all.
        sh(&["ip", "netns", "add", &net.ns(Role::Pgmux)])?;
        net.spawn_watchdog();
        net.build_links()?;
        net.start_postgres();
        Ok(net)
    }

    pub fn prefix(&self) -> String {
        format!("pgmf{}", self.pid)
    }

    pub fn ns(&self, role: Role) -> String {
        format!("pgmf{}{}", self.pid, role.letter())
    }

    fn veth(&self, role: Role) -> String {
        format!("nf{}{}", self.pid, role.letter())
    }

    fn bridge(&self) -> String {
        format!("nf{}b", self.pid)
    }

    pub fn ip(&self, role: Role) -> String {
        format!("10.213.{}.{}", self.subnet, role.host())
    }

    fn build_links(&self) -> Result<(), String> {
        let br = self.bridge();
        // This bridge's traffic must not go through the root namespace's iptables
        // (br_netfilter): a per-bridge option, never the host-wide sysctl.
        let base = [
            "ip",
            "link",
            "add",
            "name",
            &br,
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ];
        let no_nf = [
            "nf_call_iptables",
            "0",
            "nf_call_ip6tables",
            "0",
            "nf_call_arptables",
            "0",
        ];
        if sh(&[&base[..], &no_nf[..]].concat()).is_err() {
            sh(&base)?; // an older kernel or iproute2: without the option
        }
        sh(&["ip", "addr", "add", &format!("10.213.{}.1/24", self.subnet), "dev", &br])?;
        sh(&["ip", "link", "set", &br, "up"])?;
        for role in Role::ALL {
            let (ns, veth) = (self.ns(role), self.veth(role));
            if role != Role::Pgmux {
                sh(&["ip", "netns", "add", &ns])?;
            }
            sh(&[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            sh(&["ip", "link", "set", &veth, "master", &br, "up"])?;
            let cidr = format!("{}/24", self.ip(role));
            sh(&["ip", "-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Detached shell that, once this process is gone, kills pgmux processes, stops both
    /// servers, deletes the namespaces, veths and bridge and removes the temp root.
    #[allow(clippy::zombie_processes)] // never waited for: it outlives us
    fn spawn_watchdog(&self) {
        let mut nses = String::new();
        let mut veths = String::new();
        for r in Role::ALL {
            nses.push_str(&format!(" {}", self.ns(r)));
            veths.push_str(&format!(" {}", self.veth(r)));
        }
        let script = format!(
            "while [ -e /proc/{pid} ]; do sleep 0.5; done
             for f in {d}/pids/*; do kill -9 \"${{f##*/}}\" 2>/dev/null; done
             for pgdata in {d}/replica {d}/data; do
               [ -f $pgdata/postmaster.pid ] && runuser -u postgres -- {PG_BIN}/pg_ctl -D $pgdata stop -m immediate
             done
             for ns in{nses}; do
               for p in $(ip netns pids $ns 2>/dev/null); do kill -9 $p; done
               ip netns del $ns 2>/dev/null
             done
             for v in{veths} {br}; do ip link del $v 2>/dev/null; done
             rm -rf {d}",
            pid = self.pid,
            d = self.dir.display(),
            br = self.bridge(),
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script]).current_dir("/").process_group(0);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        cmd.spawn().expect("spawn netns watchdog");
    }

    // ---- PostgreSQL in the namespaces --------------------------------------------------

    pub fn pgdata(&self, role: Role) -> PathBuf {
        match role {
            Role::Primary => self.dir.join("data"),
            Role::Replica => self.dir.join("replica"),
            _ => panic!("no PostgreSQL in {role:?}"),
        }
    }

    pub fn pg_port(role: Role) -> u16 {
        match role {
            Role::Primary => PRIMARY_PORT,
            Role::Replica => REPLICA_PORT,
            _ => panic!("no PostgreSQL in {role:?}"),
        }
    }

    /// Runs a PG_BIN program as postgres inside `role`'s namespace (open-file limit raised).
    pub fn run_pg(&self, role: Role, cmdline: &str) -> Result<(), String> {
        let script = r#"ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" "$@""#;
        let prog = format!("{PG_BIN}/{cmdline}");
        let ns = self.ns(role);
        let mut argv = vec![
            "ip", "netns", "exec", &ns, "runuser", "-u", "postgres", "--", "sh", "-c", script,
        ];
        argv.extend(prog.split_whitespace());
        let out = Command::new(argv[0])
            .args(&argv[1..])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("spawn {prog}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{prog} in {ns} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// `pg_ctl ARGS` for the server of `role`, in its namespace.
    pub fn pg_ctl(&self, role: Role, args: &str) {
        let d = self.pgdata(role);
        let log = self.dir.join(format!("{role:?}.log").to_lowercase());
        let cmd = format!("pg_ctl -D {} -l {} -w -t 60 {args}", d.display(), log.display());
        if let Err(e) = self.run_pg(role, &cmd) {
            let text = fs::read_to_string(&log).unwrap_or_default();
            panic!("{e}\nlast lines of {}:\n{}", log.display(), tail(&text, 30));
        }
    }

    fn start_postgres(&self) {
        must(&["chown", "-R", "postgres:postgres", self.dir.to_str().unwrap()]);
        let data = self.pgdata(Role::Primary);
        let initdb = format!(
            "initdb -D {} -A trust -U postgres --no-sync -E UTF8 --locale=C",
            data.display()
        );
        self.run_pg(Role::Primary, &initdb).unwrap_or_else(|e| panic!("{e}"));
        let conf = format!(
            "listen_addresses = '{ip}'\nport = {PRIMARY_PORT}\nunix_socket_directories = '{dir}'\n\
             fsync = off\nsynchronous_commit = off\nwal_writer_delay = 10ms\nfull_page_writes = off\n\
             shared_buffers = 32MB\nmax_connections = 300\nwal_level = replica\nmax_wal_senders = 5\n\
             wal_retrieve_retry_interval = 100ms\nwal_keep_size = 256MB\nhot_standby_feedback = on\n\
             password_encryption = 'scram-sha-256'\nlog_connections = off\n\
             tcp_keepalives_idle = 5\ntcp_keepalives_interval = 1\ntcp_keepalives_count = 3\n",
            ip = self.ip(Role::Primary),
            dir = self.dir.display()
        );
        append(&data.join("postgresql.conf"), &conf);
        let sub = format!("10.213.{}.0/24", self.subnet);
        let hba = format!(
            "local all all trust\nhost all postgres {sub} trust\nhost replication postgres {sub} trust\n\
             host all all {sub} scram-sha-256\n"
        );
        fs::write(data.join("pg_hba.conf"), hba).unwrap(); // truncating keeps the owner
        self.pg_ctl(Role::Primary, "start");
        self.psql(
            Role::Primary,
            "postgres",
            "SET password_encryption = 'scram-sha-256'; CREATE ROLE app LOGIN PASSWORD 'app';
             CREATE DATABASE bench OWNER app;",
        );
        // pgbench tables at scale 1, owned by app, over the unix socket.
        let dir = self.dir.display().to_string();
        let port = PRIMARY_PORT.to_string();
        let args = ["-i", "-s", "1", "-q", "-h", &dir, "-p", &port, "-U", "app", "bench"];
        let (code, out, err) = crate::support::run_cmd("pgbench", &args, &[], Duration::from_secs(120));
        assert_eq!(code, 0, "pgbench -i failed: {out}\n{err}");
        // The replica, streaming from the primary over the bridge.
        let rdata = self.pgdata(Role::Replica);
        let bb = format!(
            "pg_basebackup -h {} -p {PRIMARY_PORT} -U postgres -D {} -R -c fast -X stream",
            self.ip(Role::Primary),
            rdata.display()
        );
        self.run_pg(Role::Replica, &bb).unwrap_or_else(|e| panic!("{e}"));
        append(
            &rdata.join("postgresql.conf"),
            &format!(
                "listen_addresses = '{}'\nport = {REPLICA_PORT}\n",
                self.ip(Role::Replica)
            ),
        );
        self.pg_ctl(Role::Replica, "start");
    }

    /// psql as postgres over the unix socket (no namespace involved), -qAtX, ON_ERROR_STOP.
    pub fn try_psql(&self, role: Role, db: &str, sql: &str) -> Result<String, String> {
        let port = Self::pg_port(role).to_string();
        let dir = self.dir.display().to_string();
        let args = [
            "-h",
            &dir,
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            db,
            "-qAtX",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            "-",
        ];
        let mut child = Command::new(format!("{PG_BIN}/psql"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn psql: {e}"))?;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(sql.as_bytes());
        drop(stdin);
        let out = child.wait_with_output().map_err(|e| format!("psql: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "psql -d {db} on {role:?} failed ({}): {err}\nSQL: {sql}",
                out.status
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    pub fn psql(&self, role: Role, db: &str, sql: &str) -> String {
        self.try_psql(role, db, sql).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Client backends of `user` on `db` on the server of `role` whose client address is
    /// `from` (None: any), the counting psql excluded.
    pub fn backends(&self, role: Role, db: &str, user: &str, from: Option<&str>) -> i64 {
        let addr = from.map(|a| format!(" AND client_addr = '{a}'")).unwrap_or_default();
        let sql = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND usename = '{user}' \
             AND backend_type = 'client backend' AND pid <> pg_backend_pid(){addr}"
        );
        self.psql(role, "postgres", &sql).parse().expect("count")
    }

    /// Waits (≤ `timeout`) until the replica has replayed everything the primary wrote so far.
    pub fn wait_replica_caught_up(&self, timeout: Duration) {
        let lsn = self.psql(Role::Primary, "postgres", "SELECT pg_current_wal_insert_lsn()");
        let t0 = Instant::now();
        loop {
            let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'");
            if self.try_psql(Role::Replica, "postgres", &sql).is_ok_and(|v| v == "t") {
                return;
            }
            assert!(t0.elapsed() < timeout, "replica not at {lsn} within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // ---- faults -------------------------------------------------------------------------

    /// nftables rules in `role`'s namespace dropping every packet to and from `peer_ip`
    /// (a black hole: nothing answers, nothing is refused) until the guard is dropped.
    pub fn blackhole(&self, role: Role, peer_ip: &str) -> Fault {
        self.nft_fault(role, peer_ip, "counter drop", "black hole")
    }

    /// Drops `pct` % of the packets to and from `peer_ip`, at random, in `role`'s namespace.
    pub fn loss(&self, role: Role, peer_ip: &str, pct: u32) -> Fault {
        let verdict = format!("numgen random mod 100 < {pct} counter drop");
        self.nft_fault(role, peer_ip, &verdict, &format!("{pct}% loss"))
    }

    fn nft_fault(&self, role: Role, peer_ip: &str, verdict: &str, what: &str) -> Fault {
        static N: AtomicU32 = AtomicU32::new(0);
        let table = format!("pgmf{}", N.fetch_add(1, Ordering::Relaxed));
        let ns = self.ns(role);
        let rules = format!(
            "table inet {table} {{
               chain in {{ type filter hook input priority -10; policy accept; ip saddr {peer_ip} {verdict}; }}
               chain out {{ type filter hook output priority -10; policy accept; ip daddr {peer_ip} {verdict}; }}
             }}"
        );
        must(&["ip", "netns", "exec", &ns, "nft", &rules]);
        Fault {
            ns,
            table,
            what: format!("{what} between {role:?} and {peer_ip}"),
        }
    }
}

fn append(path: &Path, text: &str) {
    let f = fs::OpenOptions::new().append(true).open(path);
    let mut f = f.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(text.as_bytes()).unwrap();
}

/// An injected fault (an nftables table in one namespace); removed on drop (the link heals).
pub struct Fault {
    ns: String,
    table: String,
    pub what: String,
}

impl Fault {
    /// Removes the rules now (same as dropping the guard).
    pub fn heal(self) {}

    /// Packets dropped so far by this fault (both directions), from the rules' counters.
    pub fn dropped(&self) -> u64 {
        let out = sh(&[
            "ip",
            "netns",
            "exec",
            &self.ns,
            "nft",
            "list",
            "table",
            "inet",
            &self.table,
        ])
        .unwrap_or_default();
        // "... counter packets 12 bytes 720 drop"
        out.split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "packets")
            .filter_map(|w| w[1].parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Fault {
    fn drop(&mut self) {
        if let Err(e) = sh(&[
            "ip",
            "netns",
            "exec",
            &self.ns,
            "nft",
            "delete",
            "table",
            "inet",
            &self.table,
        ]) {
            eprintln!("[netns] could not remove fault {}: {e}", self.what);
        }
    }
}

// ---- running code inside a namespace --------------------------------------------------

extern "C" {
    fn setns(fd: i32, nstype: i32) -> i32;
}
const CLONE_NEWNET: i32 = 0x4000_0000;

/// Moves the calling thread into namespace `ns` (sockets it creates afterwards live there).
pub fn enter_netns(ns: &str) -> Result<(), String> {
    let f = fs::File::open(format!("/var/run/netns/{ns}")).map_err(|e| format!("open netns {ns}: {e}"))?;
    // SAFETY: setns only reads the fd, which lives for the call.
    let rc = unsafe { setns(f.as_raw_fd(), CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!("setns({ns}): {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Runs `f` on a new thread inside namespace `ns`, with a current-thread tokio runtime;
/// returns its result (the thread is joined).
pub fn run_in_netns<T: Send + 'static, F>(
    ns: &str,
    f: impl FnOnce() -> F + Send + 'static,
) -> std::thread::JoinHandle<T>
where
    F: std::future::Future<Output = T>,
{
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        enter_netns(&ns).unwrap_or_else(|e| panic!("{e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(f())
    })
}

/// A TCP listener in a namespace that accepts every connection and never writes a byte (a
/// server whose login stalls). Connections are held open until the guard is dropped.
pub struct SilentServer {
    pub addr: SocketAddr,
    accepts: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentServer {
    pub fn start(ns: &str, ip: &str, port: u16) -> SilentServer {
        let (tx, rx) = std::sync::mpsc::channel();
        let accepts = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (ns, addr) = (ns.to_owned(), format!("{ip}:{port}"));
        let thread = {
            let (accepts, stop) = (accepts.clone(), stop.clone());
            std::thread::spawn(move || {
                enter_netns(&ns).unwrap_or_else(|e| panic!("{e}"));
                let listener = TcpListener::bind(&addr).unwrap_or_else(|e| panic!("bind {addr} in {ns}: {e}"));
                listener.set_nonblocking(true).unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let mut held = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((sock, _)) => {
                            accepts.fetch_add(1, Ordering::SeqCst);
                            held.push(sock);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("silent server did not start");
        SilentServer {
            addr,
            accepts,
            stop,
            thread: Some(thread),
        }
    }

    pub fn accepts(&self) -> u32 {
        self.accepts.load(Ordering::SeqCst)
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A userspace TCP relay inside a namespace that delays every chunk by `delay ± jitter`
/// (uniform) in both directions, keeping the byte order: the stand-in for `tc netem delay`,
/// which this kernel lacks. Stops (and drops its connections) when the guard is dropped.
pub struct DelayRelay {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DelayRelay {
    pub fn start(ns: &str, listen: &str, target: &str, delay: Duration, jitter: Duration) -> DelayRelay {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (listen, target) = (listen.to_owned(), target.to_owned());
        let thread = run_in_netns(ns, move || async move {
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .unwrap_or_else(|e| panic!("relay bind {listen}: {e}"));
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let accept = async {
                loop {
                    let Ok((down, _)) = listener.accept().await else {
                        continue;
                    };
                    let target = target.clone();
                    tokio::spawn(async move {
                        let Ok(up) = tokio::net::TcpStream::connect(&target).await else {
                            return;
                        };
                        let _ = down.set_nodelay(true);
                        let _ = up.set_nodelay(true);
                        let (dr, dw) = down.into_split();
                        let (ur, uw) = up.into_split();
                        tokio::spawn(delayed_copy(dr, uw, delay, jitter));
                        tokio::spawn(delayed_copy(ur, dw, delay, jitter));
                    });
                }
            };
            tokio::select! {
                _ = accept => {}
                _ = stop_rx => {}
            }
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("relay did not start");
        DelayRelay {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        // The runtime (and every connection task) goes away with the thread.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies `r` to `w`, each chunk released `delay ± jitter` after it was read, in order.
async fn delayed_copy(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    jitter: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if w.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    });
    let mut last = tokio::time::Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n_chunk = 0u64;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        n_chunk += 1;
        let j = jitter.as_micros() as u64;
        let rnd = RandomState::new().hash_one((n_chunk, Instant::now())) % (2 * j + 1);
        let d = (delay.as_micros() as u64 + rnd).saturating_sub(j);
        let at = (tokio::time::Instant::now() + Duration::from_micros(d)).max(last);
        last = at;
        if tx.send((at, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

// ---- pgmux inside its namespace -----------------------------------------------------------

/// A pgmux process in the pgmux namespace, listening on its address; killed on drop.
pub struct NsPgmux {
    pub ip: String,
    pub port: u16,
    pub metrics_port: u16,
    pub dir: PathBuf,
    pub log_path: PathBuf,
    child: Child,
    pid_file: PathBuf,
}

impl NsPgmux {
    /// Starts pgmux with `[pooler]` listen_addr/listen_port set and `pooler_extra` after them,
    /// `[metrics]` on the pgmux address, then `rest`. Waits (10 s) until it accepts TCP.
    pub fn start(net: &Net, pooler_extra: &str, rest: &str) -> NsPgmux {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let ip = net.ip(Role::Pgmux);
        let (port, metrics_port) = (6432 + n as u16, 9930 + n as u16);
        let dir = net.dir.join(format!("pgmux-{n}"));
        fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "[pooler]\nlisten_addr = \"{ip}\"\nlisten_port = {port}\n{pooler_extra}\n\
             [metrics]\nlisten = \"{ip}:{metrics_port}\"\n{rest}\n"
        );
        let config_path = dir.join("pgmux.toml");
        fs::write(&config_path, config).unwrap();
        let log_path = dir.join("pgmux.log");
        let log = fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &net.ns(Role::Pgmux),
            env!("CARGO_BIN_EXE_pgmux"),
            "--config",
        ]);
        cmd.arg(&config_path);
        cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        // `ip netns exec` execs the program: the child's pid is pgmux's.
        let child = cmd.spawn().expect("spawn pgmux");
        let pid_file = net.dir.join("pids").join(child.id().to_string());
        let _ = fs::write(&pid_file, "");
        let mut me = NsPgmux {
            ip,
            port,
            metrics_port,
            dir,
            log_path,
            child,
            pid_file,
        };
        let t0 = Instant::now();
        let addr: SocketAddr = format!("{}:{}", me.ip, me.port).parse().unwrap();
        loop {
            if let Some(st) = me.child.try_wait().unwrap() {
                panic!("pgmux exited at start ({st}); log:\n{}", tail(&me.log(), 50));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "pgmux not listening on {addr} after 10 s; log:\n{}",
                tail(&me.log(), 50)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        me
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host={} port={} user={user} password={password} dbname={db} sslmode=disable connect_timeout=10",
            self.ip, self.port
        )
    }

    /// (VmRSS in kB, Threads) from /proc/PID/status.
    pub fn rss_threads(&self) -> (u64, u64) {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("Threads:"))
    }

    /// GET /metrics (plain HTTP/1.0 over a std socket), the body.
    pub fn metrics(&self) -> String {
        use std::io::Read;
        let addr: SocketAddr = format!("{}:{}", self.ip, self.metrics_port).parse().unwrap();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("metrics connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: pgmux\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or(out)
    }
}

impl Drop for NsPgmux {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The temp root goes with the process: keep the whole log for a post-mortem.
            let keep = format!("/tmp/netfault-{}-{}.log", std::process::id(), self.port);
            let _ = fs::copy(&self.log_path, &keep);
            eprintln!(
                "--- last 30 lines of {} (whole log kept in {keep}) ---\n{}\n---",
                self.log_path.display(),
                tail(&self.log(), 30)
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.pid_file);
    }
}
