//! pgmux configuration file (see design/pooler.toml.example).
//!
//! The file is parsed into toml's spanned document tree and walked by hand
//! rather than through serde derive, so that every error (unknown key, wrong
//! type, bad value, cross-field conflict) can name `file:line`, the full key
//! path and the problem on one line.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use toml::de::{DeString, DeTable, DeValue};
use toml::Spanned;

/// Defines a keyword enum with its file spelling, `Display`, `FromStr` and `ALL`.
macro_rules! keyword_enum {
    ($name:ident { $($variant:ident = $word:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// Case-insensitive; the error lists the allowed words.
        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let found = Self::ALL.iter().find(|v| v.as_str().eq_ignore_ascii_case(s));
                found.copied().ok_or_else(|| {
                    let words: Vec<String> =
                        Self::ALL.iter().map(|v| format!("{:?}", v.as_str())).collect();
                    format!("invalid value {s:?}, expected one of {}", words.join(", "))
                })
            }
        }
    };
}

keyword_enum!(PoolMode { Session = "session", Transaction = "transaction", Statement = "statement" });
keyword_enum!(AuthType {
    ScramSha256 = "scram-sha-256", Md5 = "md5", Trust = "trust", Passthrough = "passthrough", Hba = "hba"
});
keyword_enum!(TlsMode { Disable = "disable", Allow = "allow", Prefer = "prefer", Require = "require" });
keyword_enum!(ServerTlsMode {
    Disable = "disable", Prefer = "prefer", Require = "require", VerifyFull = "verify-full"
});
keyword_enum!(LoadBalancing {
    LeastOutstanding = "least_outstanding", RoundRobin = "round_robin", Random = "random"
});

/// Defines a config section: the struct (all fields pub), its `Default`, the list of
/// its keys (for "did you mean") and a setter that parses one key, so that each key's
/// type, default, validation and documentation (`pgmux config reference`) are written once.
macro_rules! section {
    ($(#[$meta:meta])* $name:ident, $keys:ident, $set:ident {
        $($(#[doc = $fdoc:literal])* $field:ident: $ty:ty = $default:expr, |$v:ident| $parse:expr;)+
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name { $($(#[doc = $fdoc])* pub $field: $ty,)+ }

        impl Default for $name {
            fn default() -> Self {
                $name { $($field: $default,)+ }
            }
        }

        const $keys: &[&str] = &[$(stringify!($field)),+];

        impl $name {
            /// (key, value as the console shows it) of every key, in declaration order.
            pub fn entries(&self) -> Vec<(&'static str, String)> {
                vec![$((stringify!($field), show::Show::show(&self.$field))),+]
            }

            /// (key, its documentation comment in one line) of every key, in declaration order.
            pub fn docs() -> Vec<(&'static str, String)> {
                let join = |lines: &[&str]| lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
                vec![$((stringify!($field), join(&[$($fdoc),*]))),+]
            }
        }

        /// Parses `key` into `c`; Ok(false) when the key is unknown.
        fn $set(c: &mut $name, key: &str, v: &Val) -> Result<bool, ConfigError> {
            match key {
                $(stringify!($field) => {
                    fn parse($v: &Val) -> Result<$ty, ConfigError> { $parse }
                    c.$field = parse(v)?;
                })+
                _ => return Ok(false),
            }
            Ok(true)
        }
    };
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

section! {
    /// `[pooler]`. Durations of zero mean "disabled".
    PoolerConfig, POOLER_KEYS, set_pooler {
        /// Where clients connect: an IP address, a comma-separated list, or `*` (every IPv4 and IPv6 address).
        listen_addr: String = "127.0.0.1".into(), |v| listen_addr(v);
        /// The TCP port (and the number in the Unix socket's name).
        listen_port: u16 = 6432, |v| v.port();
        /// Worker threads, each serving its own clients on its own runtime; 0: one per two cores.
        workers: u32 = 0, |v| v.u32(0);
        /// Share listen_addr:listen_port with other pgmux processes that set it too (SO_REUSEPORT; the kernel spreads connections over them); false: a second process on the port fails with "address in use".
        so_reuseport: bool = false, |v| v.bool();
        /// This process's id among its [peers] (PgBouncer's peer_id, 1 to 65535): written into every cancel key it hands out, so that a peer that receives the CancelRequest (behind a load balancer) forwards it here; 0 turns peering off. Read at start only.
        peer_id: u16 = 0, |v| v.peer_id();
        /// `session`, `transaction` or `statement`; overridable per database and per user.
        pool_mode: PoolMode = PoolMode::Transaction, |v| v.keyword();
        /// Client connections beyond it are refused with 53300.
        max_client_conn: u32 = 1000, |v| v.u32(1);
        /// Server connections per (database, user) pool.
        default_pool_size: u32 = 20, |v| v.u32(1);
        /// Server connections the janitor keeps open in a pool once it exists, also after server restarts.
        min_pool_size: u32 = 0, |v| v.u32(0);
        /// Extra connections per pool for clients that waited longer than reserve_pool_timeout.
        reserve_pool_size: u32 = 0, |v| v.u32(0);
        /// How long a client waits before it may take a reserve connection.
        reserve_pool_timeout: Duration = secs(5), |v| v.duration();
        /// Server connections of a database across its pools (0: unlimited).
        max_db_connections: u32 = 0, |v| v.u32(0);
        /// Server connections of a login user across its pools (0: unlimited).
        max_user_connections: u32 = 0, |v| v.u32(0);
        /// `scram-sha-256`, `md5`, `trust`, `passthrough` (the server checks the password), or `hba` (the method of the first matching rule of auth_hba_file).
        auth_type: AuthType = AuthType::ScramSha256, |v| v.keyword();
        /// Users who may run every command of the admin console.
        admin_users: Vec<String> = Vec::new(), |v| v.names();
        /// Users who may run the SHOW commands of the admin console.
        stats_users: Vec<String> = Vec::new(), |v| v.names();
        /// Run when a server goes back to the pool in session mode.
        server_reset_query: String = "DISCARD ALL".into(), |v| v.string();
        /// Run on a server idle longer than server_check_delay before a client gets it; "" turns the check off, as in PgBouncer.
        server_check_query: String = String::new(), |v| v.string();
        /// How long a server may sit idle before server_check_query runs (0: always).
        server_check_delay: Duration = secs(30), |v| v.duration();
        /// TCP connect plus login to a server.
        server_connect_timeout: Duration = secs(15), |v| v.duration();
        /// Pause after the server refused the pool's login (credentials, database, privileges); a server that is down is the breaker's to gate.
        server_login_retry: Duration = secs(15), |v| v.duration();
        /// Longest wait for a server connection; then 57014 (checked by the janitor, as in PgBouncer: up to half of it, at most 1 s, late).
        query_wait_timeout: Duration = secs(120), |v| v.duration();
        /// A query running longer is cancelled (57014); without an answer within another query_timeout the server connection is closed.
        query_timeout: Duration = Duration::ZERO, |v| v.duration();
        /// Clients idle longer are closed (57P05).
        client_idle_timeout: Duration = Duration::ZERO, |v| v.duration();
        /// Startup plus authentication must finish within it.
        client_login_timeout: Duration = secs(60), |v| v.duration();
        /// A wrong password (or an unknown user) waits this long before its error, as with PostgreSQL's auth_delay; 0: no wait.
        auth_failure_delay: Duration = Duration::from_millis(500), |v| v.duration();
        /// Wrong passwords for one user from one client address (IPv4, or IPv6 /64; the Unix socket is exempt) let through before its logins are refused at once with 53300; then one more per auth_failure_window / auth_failure_limit. 0: no limit.
        auth_failure_limit: u32 = 10, |v| v.u32(0);
        /// How long auth_failure_limit wrong passwords take to be forgotten (they drain evenly over it); 0: no limit.
        auth_failure_window: Duration = secs(60), |v| v.duration();
        /// Clients idle inside a transaction longer are closed (25P03); their transaction is rolled back.
        idle_transaction_timeout: Duration = Duration::ZERO, |v| v.duration();
        /// Servers idle longer are closed.
        server_idle_timeout: Duration = secs(600), |v| v.duration();
        /// Servers older are closed when released.
        server_lifetime: Duration = secs(3600), |v| v.duration();
        /// Protocol-level prepared statements kept per server connection in transaction and statement modes (LRU); 0 passes them through untracked.
        max_prepared_statements: u32 = 200, |v| v.u32(0);
        /// Larger client messages are refused with 08P01 (bytes).
        max_message_size: u32 = 256 * 1024 * 1024, |v| v.u32(1024);
        /// At SIGINT/SIGTERM, how long transactions in flight may finish.
        shutdown_timeout: Duration = secs(30), |v| v.duration();
        /// Queries slower than this go to SHOW SLOW_QUERIES and the log (0: off).
        slow_query_threshold: Duration = secs(1), |v| v.duration();
        /// Never zero: it divides the SHOW STATS averages.
        stats_period: Duration = secs(60), |v| v.nonzero_duration();
        /// TLS to clients: `disable`, `allow`, `prefer` or `require`.
        tls_mode: TlsMode = TlsMode::Disable, |v| v.keyword();
        /// PEM certificate chain shown to clients.
        tls_cert_file: String = String::new(), |v| v.string();
        /// PEM private key of that certificate (PKCS#8, RSA or SEC1).
        tls_key_file: String = String::new(), |v| v.string();
        /// TLS to servers: `disable`, `prefer`, `require` or `verify-full`.
        server_tls_mode: ServerTlsMode = ServerTlsMode::Disable, |v| v.keyword();
        /// PEM roots a server certificate must chain to (verify-full).
        server_tls_ca_file: String = String::new(), |v| v.string();
        /// PgBouncer's keepalive keys, for client and server sockets; 0: the kernel's default.
        tcp_keepalive: bool = true, |v| v.bool();
        /// Seconds idle before the first keepalive probe (0: the kernel's default).
        tcp_keepidle: Duration = Duration::ZERO, |v| v.duration();
        /// Seconds between keepalive probes (0: the kernel's default).
        tcp_keepintvl: Duration = Duration::ZERO, |v| v.duration();
        /// Unanswered probes before the peer is dead (0: the kernel's default).
        tcp_keepcnt: u32 = 0, |v| v.u32(0);
        /// Milliseconds, as in PgBouncer (TCP_USER_TIMEOUT).
        tcp_user_timeout: u32 = 0, |v| v.u32(0);
        /// Directory of a Unix socket `.s.PGSQL.<listen_port>` to listen on too; "" for none.
        unix_socket_dir: String = String::new(), |v| v.string();
        /// Permissions of that socket file (PgBouncer's default 0777, written 511 in TOML).
        unix_socket_mode: u32 = 0o777, |v| v.u32(0);
        /// PgBouncer's userlist.txt: `"user" "password"` lines (plain, md5 or SCRAM secrets).
        auth_file: String = String::new(), |v| v.string();
        /// pg_hba.conf-style rules, used when auth_type = "hba".
        auth_hba_file: String = String::new(), |v| v.string();
        /// Looks up the secret of a user not in [users] or auth_file, run as auth_user.
        auth_query: String = DEFAULT_AUTH_QUERY.into(), |v| v.nonempty();
        /// Who runs auth_query; "" turns the lookup off.
        auth_user: String = String::new(), |v| v.string();
        /// The database auth_query runs in; "": the client's own.
        auth_dbname: String = String::new(), |v| v.string();
    }
}

/// PgBouncer's default auth_query.
pub const DEFAULT_AUTH_QUERY: &str = "SELECT usename, passwd FROM pg_shadow WHERE usename=$1";

section! {
    /// `[metrics]`
    MetricsConfig, METRICS_KEYS, set_metrics {
        /// "host:port" of the Prometheus endpoint; "" disables it.
        listen: String = "127.0.0.1:9930".into(), |v| metrics_listen(v);
        /// Serves the live dashboard (`/dashboard`) and its JSON (`/api/...`) on that listener.
        dashboard: bool = true, |v| v.bool();
        /// Users of [users] or auth_file whose password HTTP basic auth asks for on every path
        /// of the listener but /health; empty: no auth.
        auth_users: Vec<String> = Vec::new(), |v| v.names();
    }
}

section! {
    /// `[breaker]`, per backend address.
    BreakerConfig, BREAKER_KEYS, set_breaker {
        /// Consecutive counted failures of an address that open its breaker.
        failure_threshold: u32 = 5, |v| v.u32(1);
        /// Never zero: every caller in turn would be the probe, a breaker that never rests.
        /// PgBouncer's server_login_retry by default: a server is tried as often as it would be.
        open_timeout: Duration = secs(15), |v| v.nonzero_duration();
        /// 0: every failed probe re-opens for open_timeout. Longer: each failed probe doubles
        /// the wait, up to this.
        max_open_timeout: Duration = Duration::ZERO, |v| v.duration();
    }
}

section! {
    /// `[users.NAME]`
    UserConfig, USER_KEYS, set_user {
        /// Plain, `md5<32 hex>` or a `SCRAM-SHA-256$...` secret.
        password: Option<Secret> = None, |v| v.secret().map(Some);
        /// This user's pool mode, over the database's and [pooler]'s.
        pool_mode: Option<PoolMode> = None, |v| v.keyword().map(Some);
        /// 0 = unlimited.
        max_user_connections: Option<u32> = None, |v| v.u32(0).map(Some);
    }
}

section! {
    /// `[databases.NAME]`; the name `"*"` serves any database not listed.
    DatabaseConfig, DATABASE_KEYS, set_database {
        /// The server: a name or address, or (starting with `/`) the directory of its Unix socket.
        host: String = "127.0.0.1".into(), |v| v.nonempty();
        /// The server's port.
        port: u16 = 5432, |v| v.port();
        /// The database name on the server (default: the name clients use).
        dbname: Option<String> = None, |v| v.nonempty().map(Some);
        /// Log in to the server as this user, whoever the client is.
        user: Option<String> = None, |v| v.nonempty().map(Some);
        /// The server password of that user.
        password: Option<Secret> = None, |v| v.secret().map(Some);
        /// This database's pool size, over default_pool_size.
        pool_size: Option<u32> = None, |v| v.u32(1).map(Some);
        /// This database's min_pool_size.
        min_pool_size: Option<u32> = None, |v| v.u32(0).map(Some);
        /// This database's pool mode.
        pool_mode: Option<PoolMode> = None, |v| v.keyword().map(Some);
        /// This database's auth_user for auth_query, instead of [pooler] auth_user.
        auth_user: Option<String> = None, |v| v.nonempty().map(Some);
        /// Extra connections after reserve_pool_timeout, instead of [pooler] reserve_pool_size.
        reserve_pool: Option<u32> = None, |v| v.u32(0).map(Some);
        /// This database's limit, instead of [pooler] max_db_connections (0: unlimited).
        max_db_connections: Option<u32> = None, |v| v.u32(0).map(Some);
        /// Server settings every client of this database starts with (as PgBouncer's
        /// connection string keys); a client's own startup parameters win.
        client_encoding: Option<String> = None, |v| v.nonempty().map(Some);
        /// DateStyle its clients start with, unless they send their own.
        datestyle: Option<String> = None, |v| v.nonempty().map(Some);
        /// TimeZone its clients start with, unless they send their own.
        timezone: Option<String> = None, |v| v.nonempty().map(Some);
        /// (host, port); IPv6 hosts are stored without brackets.
        replicas: Vec<(String, u16)> = Vec::new(), |v| replicas(v);
        /// Send read-only transactions to healthy replicas.
        read_write_split: bool = false, |v| v.bool();
        /// A replica further behind takes no reads (WAL bytes).
        max_replica_lag_bytes: u64 = 16 * 1024 * 1024, |v| v.int(0, i64::MAX as u64);
        /// A replica further behind, while the primary writes, takes no reads.
        max_replica_lag_seconds: Duration = secs(5), |v| v.duration();
        /// How often the lag monitor checks the primary and the replicas.
        lag_check_interval: Duration = secs(1), |v| v.duration();
        /// After a client writes, its reads wait for a replica that has replayed the write (or go to the primary).
        read_your_writes: bool = true, |v| v.bool();
        /// How reads are spread: `least_outstanding`, `round_robin` or `random`.
        load_balancing: LoadBalancing = LoadBalancing::LeastOutstanding, |v| v.keyword();
        /// The primary takes reads too, as one more candidate.
        primary_reads: bool = false, |v| v.bool();
        /// Lowercase names, `prefix*` for all names that start so; when set in the file it replaces
        /// DEFAULT_WRITE_FUNCTIONS.
        write_functions: Vec<String> = DEFAULT_WRITE_FUNCTIONS.iter().map(|s| s.to_string()).collect(),
            |v| v.names().map(|names| names.iter().map(|s| s.to_lowercase()).collect());
    }
}

section! {
    /// `[peers.ID]`: the pgmux processes that forward each other's cancel requests, by their
    /// peer_id (PgBouncer's `[peers]`); this process's own id may be listed too.
    PeerConfig, PEER_KEYS, set_peer {
        /// The peer's address: a name or IP address, or (starting with `/`) the directory of its Unix socket. Required.
        host: String = String::new(), |v| v.nonempty();
        /// The port the peer listens on.
        port: u16 = 6432, |v| v.port();
        /// Cancel requests forwarded to this peer at once (each on its own connection); more wait their turn. Default: default_pool_size.
        pool_size: Option<u32> = None, |v| v.u32(1).map(Some);
    }
}

/// Functions whose call sends a statement to the primary when `write_functions` is not
/// set: they write, take locks that must be coordinated with the primary, read session
/// state created there (currval, lastval), or fail on a standby (pg_current_wal_lsn).
#[rustfmt::skip]
pub const DEFAULT_WRITE_FUNCTIONS: &[&str] = &[
    "nextval", "setval", "currval", "lastval",
    "pg_advisory_*", "pg_try_advisory_*", "pg_notify", "lo_*", "lowrite",
    "set_config", "txid_current", "pg_current_xact_id",
    "pg_current_wal_lsn", "pg_current_wal_insert_lsn", "pg_current_wal_flush_lsn",
    "pg_logical_emit_message", "pg_create_restore_point", "pg_switch_wal",
    "pg_create_physical_replication_slot", "pg_create_logical_replication_slot",
    "pg_drop_replication_slot", "dblink*",
];

use parse::{listen_addr, metrics_listen, replicas, Val};
pub use secret::{ScramSecret, Secret};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    pub pooler: PoolerConfig,
    pub metrics: MetricsConfig,
    pub breaker: BreakerConfig,
    /// `[users]`, with the users of `auth_file` added (see `read_auth_files`).
    pub users: BTreeMap<String, UserConfig>,
    pub databases: BTreeMap<String, DatabaseConfig>,
    /// `[peers]`, by peer id (1 to 65535).
    pub peers: BTreeMap<u16, PeerConfig>,
    /// The rules of `auth_hba_file`, read with the file when auth_type = "hba".
    pub hba: Option<hba::Hba>,
    /// What reading the file found to report, once, at startup and on reload: PgBouncer
    /// settings of a pgbouncer.ini that pgmux does not act on, each `file:line: key: what to
    /// do instead`. Empty for pooler.toml.
    pub notes: Vec<String>,
}

impl DatabaseConfig {
    /// The database name to use on the server: `dbname`, or the name the client asked for.
    pub fn server_dbname<'a>(&'a self, client_db: &'a str) -> &'a str {
        self.dbname.as_deref().unwrap_or(client_db)
    }
}

impl Config {
    /// Used when there is no config file: clients authenticate against the server itself,
    /// and any database name goes to 127.0.0.1:5432.
    pub fn embedded_default() -> Config {
        let mut config = Config::default();
        config.pooler.auth_type = AuthType::Passthrough;
        config.databases.insert("*".into(), DatabaseConfig::default());
        config
    }

    /// The exact entry, else the `"*"` entry.
    pub fn database(&self, name: &str) -> Option<&DatabaseConfig> {
        self.databases.get(name).or_else(|| self.databases.get("*"))
    }

    /// User override, else database override, else `pooler.pool_mode`.
    pub fn pool_mode_for(&self, database: &str, user: &str) -> PoolMode {
        let user_mode = self.users.get(user).and_then(|u| u.pool_mode);
        let db_mode = || self.database(database).and_then(|d| d.pool_mode);
        user_mode.or_else(db_mode).unwrap_or(self.pooler.pool_mode)
    }

    pub fn pool_size_for(&self, database: &str) -> u32 {
        let size = self.database(database).and_then(|d| d.pool_size);
        size.unwrap_or(self.pooler.default_pool_size)
    }

    /// The peer's pool_size, else default_pool_size (as PgBouncer).
    pub fn peer_pool_size(&self, peer: &PeerConfig) -> u32 {
        peer.pool_size.unwrap_or(self.pooler.default_pool_size)
    }

    pub fn min_pool_size_for(&self, database: &str) -> u32 {
        let size = self.database(database).and_then(|d| d.min_pool_size);
        size.unwrap_or(self.pooler.min_pool_size)
    }
}

/// One line: `origin:line: key.path: problem` (line and key left out where there is none).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}{}: {}{message}", .line.map(|l| format!(":{l}")).unwrap_or_default(),
        if .key.is_empty() { String::new() } else { format!("{}: ", .key) })]
pub struct ConfigError {
    pub origin: String,
    /// 1-based line of the offending key or value.
    pub line: Option<usize>,
    /// Full key path, e.g. `databases.bench.replicas[1]`; empty for file-level errors.
    pub key: String,
    pub message: String,
}

pub mod hba;
pub mod ini;
mod parse;
pub mod reference;
mod secret;
mod show;
#[cfg(test)]
mod tests;
pub mod userlist;
