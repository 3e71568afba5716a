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

use base64::Engine as _;
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
    ScramSha256 = "scram-sha-256", Md5 = "md5", Trust = "trust", Passthrough = "passthrough"
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
/// type, default and validation are written once, on one line.
macro_rules! section {
    ($(#[$meta:meta])* $name:ident, $keys:ident, $set:ident {
        $($(#[$fmeta:meta])* $field:ident: $ty:ty = $default:expr, |$v:ident| $parse:expr;)+
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name { $($(#[$fmeta])* pub $field: $ty,)+ }

        impl Default for $name {
            fn default() -> Self {
                $name { $($field: $default,)+ }
            }
        }

        const $keys: &[&str] = &[$(stringify!($field)),+];

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
        listen_addr: String = "127.0.0.1".into(), |v| listen_addr(v);
        listen_port: u16 = 6432, |v| v.port();
        pool_mode: PoolMode = PoolMode::Transaction, |v| v.keyword();
        max_client_conn: u32 = 1000, |v| v.u32(1);
        default_pool_size: u32 = 20, |v| v.u32(1);
        min_pool_size: u32 = 0, |v| v.u32(0);
        reserve_pool_size: u32 = 0, |v| v.u32(0);
        reserve_pool_timeout: Duration = secs(5), |v| v.duration();
        max_db_connections: u32 = 0, |v| v.u32(0);
        max_user_connections: u32 = 0, |v| v.u32(0);
        auth_type: AuthType = AuthType::ScramSha256, |v| v.keyword();
        admin_users: Vec<String> = Vec::new(), |v| v.names();
        stats_users: Vec<String> = Vec::new(), |v| v.names();
        server_reset_query: String = "DISCARD ALL".into(), |v| v.string();
        server_check_query: String = String::new(), |v| v.string();
        server_check_delay: Duration = secs(30), |v| v.duration();
        server_connect_timeout: Duration = secs(15), |v| v.duration();
        server_login_retry: Duration = secs(15), |v| v.duration();
        query_wait_timeout: Duration = secs(120), |v| v.duration();
        query_timeout: Duration = Duration::ZERO, |v| v.duration();
        client_idle_timeout: Duration = Duration::ZERO, |v| v.duration();
        client_login_timeout: Duration = secs(60), |v| v.duration();
        idle_transaction_timeout: Duration = Duration::ZERO, |v| v.duration();
        server_idle_timeout: Duration = secs(600), |v| v.duration();
        server_lifetime: Duration = secs(3600), |v| v.duration();
        max_prepared_statements: u32 = 200, |v| v.u32(0);
        max_message_size: u32 = 256 * 1024 * 1024, |v| v.u32(1024);
        shutdown_timeout: Duration = secs(30), |v| v.duration();
        slow_query_threshold: Duration = secs(1), |v| v.duration();
        /// Never zero: it divides the SHOW STATS averages.
        stats_period: Duration = secs(60), |v| v.nonzero_duration();
        tls_mode: TlsMode = TlsMode::Disable, |v| v.keyword();
        tls_cert_file: String = String::new(), |v| v.string();
        tls_key_file: String = String::new(), |v| v.string();
        server_tls_mode: ServerTlsMode = ServerTlsMode::Disable, |v| v.keyword();
        server_tls_ca_file: String = String::new(), |v| v.string();
    }
}

section! {
    /// `[metrics]`
    MetricsConfig, METRICS_KEYS, set_metrics {
        /// "host:port" of the Prometheus endpoint; "" disables it.
        listen: String = "127.0.0.1:9930".into(), |v| metrics_listen(v);
    }
}

section! {
    /// `[breaker]`, per backend address.
    BreakerConfig, BREAKER_KEYS, set_breaker {
        failure_threshold: u32 = 5, |v| v.u32(1);
        open_timeout: Duration = secs(30), |v| v.duration();
    }
}

section! {
    /// `[users.NAME]`
    UserConfig, USER_KEYS, set_user {
        password: Option<Secret> = None, |v| v.secret().map(Some);
        pool_mode: Option<PoolMode> = None, |v| v.keyword().map(Some);
        /// 0 = unlimited.
        max_user_connections: Option<u32> = None, |v| v.u32(0).map(Some);
    }
}

section! {
    /// `[databases.NAME]`; the name `"*"` serves any database not listed.
    DatabaseConfig, DATABASE_KEYS, set_database {
        host: String = "127.0.0.1".into(), |v| v.nonempty();
        port: u16 = 5432, |v| v.port();
        dbname: Option<String> = None, |v| v.nonempty().map(Some);
        user: Option<String> = None, |v| v.nonempty().map(Some);
        password: Option<Secret> = None, |v| v.secret().map(Some);
        pool_size: Option<u32> = None, |v| v.u32(1).map(Some);
        min_pool_size: Option<u32> = None, |v| v.u32(0).map(Some);
        pool_mode: Option<PoolMode> = None, |v| v.keyword().map(Some);
        /// (host, port); IPv6 hosts are stored without brackets.
        replicas: Vec<(String, u16)> = Vec::new(), |v| replicas(v);
        read_write_split: bool = false, |v| v.bool();
        max_replica_lag_bytes: u64 = 16 * 1024 * 1024, |v| v.int(0, i64::MAX as u64);
        max_replica_lag_seconds: Duration = secs(5), |v| v.duration();
        lag_check_interval: Duration = secs(1), |v| v.duration();
        read_your_writes: bool = true, |v| v.bool();
        load_balancing: LoadBalancing = LoadBalancing::LeastOutstanding, |v| v.keyword();
        primary_reads: bool = false, |v| v.bool();
        /// Lowercase names; when set in the file it replaces DEFAULT_WRITE_FUNCTIONS.
        write_functions: Vec<String> = DEFAULT_WRITE_FUNCTIONS.iter().map(|s| s.to_string()).collect(),
            |v| v.names().map(|names| names.iter().map(|s| s.to_lowercase()).collect());
    }
}

/// Functions whose call sends a statement to the primary when `write_functions` is not
/// set: they write, take locks that must be coordinated with the primary, read session
/// state created there (currval, lastval), or fail on a standby (pg_current_wal_lsn).
#[rustfmt::skip]
pub const DEFAULT_WRITE_FUNCTIONS: &[&str] = &[
    "nextval", "setval", "currval", "lastval",
    "pg_advisory_lock", "pg_advisory_lock_shared", "pg_advisory_unlock", "pg_advisory_unlock_shared",
    "pg_advisory_unlock_all", "pg_advisory_xact_lock", "pg_advisory_xact_lock_shared",
    "pg_try_advisory_lock", "pg_try_advisory_lock_shared", "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared", "pg_notify",
    "lo_create", "lo_creat", "lo_import", "lo_export", "lo_unlink", "lo_open", "lo_put",
    "lo_from_bytea", "lowrite", "lo_truncate", "lo_truncate64",
    "set_config", "txid_current", "pg_current_xact_id",
    "pg_current_wal_lsn", "pg_current_wal_insert_lsn", "pg_current_wal_flush_lsn",
    "pg_logical_emit_message", "pg_create_restore_point", "pg_switch_wal",
    "pg_create_physical_replication_slot", "pg_create_logical_replication_slot",
    "pg_drop_replication_slot", "dblink_exec",
];

/// A password from `[users]` or `[databases]`. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Plain(String),
    /// md5(password + username), as PostgreSQL stores it after "md5".
    Md5([u8; 16]),
    Scram(ScramSecret),
}

/// PostgreSQL's pg_authid SCRAM-SHA-256 secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("Secret::Plain(***)"),
            Secret::Md5(_) => f.write_str("Secret::Md5(***)"),
            Secret::Scram(s) => write!(f, "Secret::Scram({s:?})"),
        }
    }
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScramSecret {{ iterations: {}, *** }}", self.iterations)
    }
}

impl Secret {
    /// Parses a password as written in the file: "md5" + 32 hex digits, a PostgreSQL
    /// "SCRAM-SHA-256$..." secret, else plain text. Errors never contain the input.
    pub fn parse(text: &str) -> Result<Secret, String> {
        if let Some(hex) = text.strip_prefix("md5") {
            return parse_md5(hex).map(Secret::Md5);
        }
        if let Some(rest) = text.strip_prefix("SCRAM-SHA-256$") {
            return parse_scram(rest).map(Secret::Scram);
        }
        if text.is_empty() {
            return Err("empty password; leave the key out instead".into());
        }
        Ok(Secret::Plain(text.to_string()))
    }
}

fn parse_md5(hex: &str) -> Result<[u8; 16], String> {
    let len = hex.chars().count();
    if len != 32 {
        return Err(format!(
            "md5 secret: expected 32 hex digits after \"md5\", found {len} characters"
        ));
    }
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("md5 secret: the part after \"md5\" is not all hex digits".into());
    }
    let digit = |b: &u8| (*b as char).to_digit(16).unwrap_or(0) as u8;
    let mut out = [0u8; 16];
    for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        *byte = pair.iter().fold(0, |acc, d| acc << 4 | digit(d));
    }
    Ok(out)
}

fn parse_scram(rest: &str) -> Result<ScramSecret, String> {
    let shape = "expected SCRAM-SHA-256$<iterations>:<salt>$<storedkey>:<serverkey>";
    let missing = |what: &str| format!("SCRAM secret: missing {what}; {shape}");
    let (iter_salt, keys) = rest.split_once('$').ok_or_else(|| missing("'$' before the keys"))?;
    let (iterations, salt) = iter_salt
        .split_once(':')
        .ok_or_else(|| missing("':' between iteration count and salt"))?;
    let (stored, server) = keys
        .split_once(':')
        .ok_or_else(|| missing("':' between stored key and server key"))?;
    let iterations = match iterations.parse::<u32>() {
        Ok(n) if n > 0 && iterations.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => return Err("SCRAM secret: the iteration count is not a positive integer".into()),
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let salt = b64
        .decode(salt)
        .map_err(|_| "SCRAM secret: the salt is not valid base64")?;
    if salt.is_empty() {
        return Err("SCRAM secret: the salt is empty".into());
    }
    let key = |text: &str, what: &str| -> Result<[u8; 32], String> {
        let bytes = b64
            .decode(text)
            .map_err(|_| format!("SCRAM secret: the {what} is not valid base64"))?;
        let n = bytes.len();
        <[u8; 32]>::try_from(bytes).map_err(|_| format!("SCRAM secret: the {what} must be 32 bytes, found {n}"))
    };
    let (stored_key, server_key) = (key(stored, "stored key")?, key(server, "server key")?);
    Ok(ScramSecret {
        iterations,
        salt,
        stored_key,
        server_key,
    })
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    pub pooler: PoolerConfig,
    pub metrics: MetricsConfig,
    pub breaker: BreakerConfig,
    pub users: BTreeMap<String, UserConfig>,
    pub databases: BTreeMap<String, DatabaseConfig>,
}

impl DatabaseConfig {
    /// The database name to use on the server: `dbname`, or the name the client asked for.
    pub fn server_dbname<'a>(&'a self, client_db: &'a str) -> &'a str {
        self.dbname.as_deref().unwrap_or(client_db)
    }
}

impl Config {
    /// `Config::default()` is what an empty file gives: no users, no databases.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let cx = Cx { text, origin };
        let root = DeTable::parse(text).map_err(|e| {
            let message = e.message().trim().replace('\n', "; ");
            let span = e.span();
            cx.err(span.as_ref(), "", format!("TOML syntax error: {message}"))
        })?;
        let mut p = Parser {
            cx,
            spans: BTreeMap::new(),
        };
        let config = p.document(root.get_ref())?;
        p.check(&config)?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, &origin),
            Err(e) => {
                let message = format!("cannot read file: {e}");
                Err(ConfigError {
                    origin,
                    line: None,
                    key: String::new(),
                    message,
                })
            }
        }
    }

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

const SECTIONS: &[&str] = &["pooler", "metrics", "breaker", "users", "databases"];

struct Cx<'a> {
    text: &'a str,
    origin: &'a str,
}

type Span = Range<usize>;

impl Cx<'_> {
    fn val<'v, 'i>(&'v self, path: String, v: &'v Spanned<DeValue<'i>>) -> Val<'v, 'i> {
        Val { cx: self, path, v }
    }

    fn err(&self, span: Option<&Span>, key: &str, message: impl Into<String>) -> ConfigError {
        let newlines = |end: usize| self.text.bytes().take(end).filter(|&b| b == b'\n').count();
        ConfigError {
            origin: self.origin.to_string(),
            line: span.map(|s| newlines(s.start) + 1),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// A value in the document with its full key path, for typed extraction.
struct Val<'v, 'i> {
    cx: &'v Cx<'v>,
    path: String,
    v: &'v Spanned<DeValue<'i>>,
}

impl<'v, 'i> Val<'v, 'i> {
    fn get(&self) -> &'v DeValue<'i> {
        self.v.get_ref()
    }

    fn err(&self, message: impl Into<String>) -> ConfigError {
        self.cx.err(Some(&self.v.span()), &self.path, message)
    }

    fn expected(&self, what: &str) -> ConfigError {
        let found = match self.get() {
            DeValue::String(_) => "a string",
            DeValue::Integer(_) => "an integer",
            DeValue::Float(_) => "a float",
            DeValue::Boolean(_) => "a boolean",
            DeValue::Datetime(_) => "a date-time",
            DeValue::Array(_) => "an array",
            DeValue::Table(_) => "a table",
        };
        self.err(format!("expected {what}, found {found}"))
    }

    fn str(&self) -> Result<&'v str, ConfigError> {
        self.get().as_str().ok_or_else(|| self.expected("a string"))
    }

    fn string(&self) -> Result<String, ConfigError> {
        self.str().map(str::to_string)
    }

    fn nonempty(&self) -> Result<String, ConfigError> {
        match self.str()? {
            "" => Err(self.err("must not be empty")),
            s => Ok(s.to_string()),
        }
    }

    fn bool(&self) -> Result<bool, ConfigError> {
        self.get().as_bool().ok_or_else(|| self.expected("true or false"))
    }

    fn int(&self, min: u64, max: u64) -> Result<u64, ConfigError> {
        let i = self.get().as_integer().ok_or_else(|| self.expected("an integer"))?;
        let n = i64::from_str_radix(i.as_str(), i.radix());
        let n = n.map_err(|_| self.err("integer out of range"))?;
        match u64::try_from(n) {
            Err(_) => Err(self.err(format!("must not be negative, found {n}"))),
            Ok(n) if n < min => Err(self.err(format!("{n} is too small, must be at least {min}"))),
            Ok(n) if n > max => Err(self.err(format!("{n} is too large, must be at most {max}"))),
            Ok(n) => Ok(n),
        }
    }

    fn u32(&self, min: u32) -> Result<u32, ConfigError> {
        let n = self.int(min.into(), u32::MAX.into())?;
        u32::try_from(n).map_err(|_| self.err("integer out of range"))
    }

    fn port(&self) -> Result<u16, ConfigError> {
        let n = self.int(0, u64::MAX)?;
        match u16::try_from(n) {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(self.err(format!("{n} is not a valid port, expected 1 to 65535"))),
        }
    }

    /// Seconds, integer or float.
    fn duration(&self) -> Result<Duration, ConfigError> {
        let f = match self.get() {
            DeValue::Integer(_) => return self.int(0, u64::MAX).map(Duration::from_secs),
            DeValue::Float(f) => f.as_str(),
            DeValue::String(_) => {
                return Err(self.err("expected a number of seconds such as 5 or 0.25, found a string"))
            }
            _ => return Err(self.expected("a number of seconds")),
        };
        let x: f64 = f.parse().map_err(|_| self.err("invalid number"))?;
        if x.is_nan() || x < 0.0 {
            return Err(self.err(format!("must not be negative, found {f}")));
        }
        Duration::try_from_secs_f64(x).map_err(|_| self.err(format!("{f} seconds is too large")))
    }

    fn nonzero_duration(&self) -> Result<Duration, ConfigError> {
        match self.duration()? {
            d if d.is_zero() => Err(self.err("must be greater than 0")),
            d => Ok(d),
        }
    }

    fn keyword<T: FromStr<Err = String>>(&self) -> Result<T, ConfigError> {
        self.str()?.parse().map_err(|e: String| self.err(e))
    }

    fn secret(&self) -> Result<Secret, ConfigError> {
        Secret::parse(self.str()?).map_err(|e| self.err(e))
    }

    fn address(&self) -> Result<(String, u16), ConfigError> {
        parse_host_port(self.str()?).map_err(|e| self.err(e))
    }

    fn items(&self) -> Result<Vec<Val<'v, 'i>>, ConfigError> {
        let array = self.get().as_array().ok_or_else(|| self.expected("an array"))?;
        let item = |(n, v)| self.cx.val(format!("{}[{n}]", self.path), v);
        Ok(array.iter().enumerate().map(item).collect())
    }

    /// An array of non-empty strings.
    fn names(&self) -> Result<Vec<String>, ConfigError> {
        self.items()?.iter().map(Val::nonempty).collect()
    }
}

fn listen_addr(v: &Val) -> Result<String, ConfigError> {
    let addr = v.nonempty()?;
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return Err(v.err("expected an address without a port; set the port with listen_port"));
    }
    Ok(addr)
}

fn metrics_listen(v: &Val) -> Result<String, ConfigError> {
    if !v.str()?.is_empty() {
        v.address()?;
    }
    v.string()
}

fn replicas(v: &Val) -> Result<Vec<(String, u16)>, ConfigError> {
    let mut out = Vec::new();
    for item in v.items()? {
        let addr = item.address()?;
        if out.contains(&addr) {
            return Err(item.err("duplicate replica"));
        }
        out.push(addr);
    }
    Ok(out)
}

/// "host:port" or "[v6addr]:port"; the host is returned without brackets.
fn parse_host_port(text: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("missing ']' after the IPv6 address")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("invalid IPv6 address {host:?} in {text:?}"));
        }
        let port = after.strip_prefix(':');
        (
            host,
            port.ok_or_else(|| format!("expected \"[address]:port\", found {text:?}"))?,
        )
    } else {
        let split = text.rsplit_once(':');
        let (host, port) = split.ok_or_else(|| format!("expected \"host:port\", found {text:?}"))?;
        if host.contains(':') {
            return Err(format!(
                "invalid address {text:?}: write IPv6 in brackets, e.g. \"[::1]:5432\""
            ));
        }
        (host, port)
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("invalid host in {text:?}"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok((host.to_string(), p)),
        _ => Err(format!("invalid port in {text:?}, expected 1 to 65535")),
    }
}

/// Path segment as TOML would write it: bare when it can be, quoted otherwise.
fn join(prefix: &str, key: &str) -> String {
    let bare = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    let seg = match key {
        k if !k.is_empty() && k.bytes().all(bare) => k.to_string(),
        k => format!("{k:?}"),
    };
    match prefix {
        "" => seg,
        p => format!("{p}.{seg}"),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let mut prev: Vec<usize> = (0..=b.chars().count()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for ((cb, diag), up) in b.chars().zip(&prev).zip(prev.iter().skip(1)) {
            let left = cur.last().copied().unwrap_or(0);
            cur.push((diag + usize::from(ca != cb)).min(up + 1).min(left + 1));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

fn unknown_key(key: &str, section: &str, known: &[&str]) -> String {
    let what = if section.is_empty() {
        "unknown section"
    } else {
        "unknown key"
    };
    let limit = 2.max(key.chars().count() / 4);
    let typo = known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= limit);
    // A truncated key ("server_tls_ca") is too far for the edit distance but plain to see.
    let prefix = || {
        known
            .iter()
            .find(|k| key.len() >= 4 && k.starts_with(key))
            .map(|k| (0, *k))
    };
    if let Some((_, k)) = typo.min().or_else(prefix) {
        return format!("{what}, did you mean {k:?}?");
    }
    let homes: [(&[&str], &str); 5] = [
        (POOLER_KEYS, "[pooler]"),
        (METRICS_KEYS, "[metrics]"),
        (BREAKER_KEYS, "[breaker]"),
        (USER_KEYS, "[users.NAME]"),
        (DATABASE_KEYS, "[databases.NAME]"),
    ];
    match homes.iter().find(|(keys, _)| keys.contains(&key)) {
        Some((_, home)) if !section.is_empty() => format!("{what} ({key} belongs in {home})"),
        _ if known.len() > 6 => what.to_string(),
        _ => format!("{what}, expected one of: {}", known.join(", ")),
    }
}

type Entry<'v, 'i> = (&'v Spanned<DeString<'i>>, &'v Spanned<DeValue<'i>>);

/// Entries sorted by position, so the first error reported is the first in the file.
fn in_file_order<'v, 'i>(table: &'v DeTable<'i>) -> Vec<Entry<'v, 'i>> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    entries
}

type SetFn<T> = fn(&mut T, &str, &Val) -> Result<bool, ConfigError>;

struct Parser<'a> {
    cx: Cx<'a>,
    /// Span of every value by full key path, for the checks made after the walk.
    spans: BTreeMap<String, Span>,
}

impl Parser<'_> {
    fn table<'v, 'i>(&self, path: &str, v: &'v Spanned<DeValue<'i>>) -> Result<&'v DeTable<'i>, ConfigError> {
        let table = v.get_ref().as_table();
        table.ok_or_else(|| self.cx.val(path.to_string(), v).expected("a table"))
    }

    /// Builds a section from its defaults and the keys present in the table.
    fn section<T: Default>(
        &mut self,
        path: &str,
        v: &Spanned<DeValue>,
        known: &[&str],
        set: SetFn<T>,
    ) -> Result<T, ConfigError> {
        let mut out = T::default();
        for (k, v) in in_file_order(self.table(path, v)?) {
            let key: &str = k.get_ref();
            let full = join(path, key);
            self.spans.insert(full.clone(), v.span());
            let val = self.cx.val(full, v);
            if !set(&mut out, key, &val)? {
                let message = unknown_key(key, path, known);
                return Err(self.cx.err(Some(&k.span()), &val.path, message));
            }
        }
        Ok(out)
    }

    fn document(&mut self, root: &DeTable) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        for (k, v) in in_file_order(root) {
            let name: &str = k.get_ref();
            match name {
                "pooler" => c.pooler = self.section(name, v, POOLER_KEYS, set_pooler)?,
                "metrics" => c.metrics = self.section(name, v, METRICS_KEYS, set_metrics)?,
                "breaker" => c.breaker = self.section(name, v, BREAKER_KEYS, set_breaker)?,
                "users" | "databases" => {
                    for (k, v) in in_file_order(self.table(name, v)?) {
                        let (entry, path) = (k.get_ref().to_string(), join(name, k.get_ref()));
                        if entry.is_empty() {
                            let message = "the name must not be empty";
                            return Err(self.cx.err(Some(&k.span()), &path, message));
                        }
                        if name == "users" {
                            let user = self.section(&path, v, USER_KEYS, set_user)?;
                            c.users.insert(entry, user);
                        } else {
                            let db = self.section(&path, v, DATABASE_KEYS, set_database)?;
                            c.databases.insert(entry, db);
                        }
                    }
                }
                _ => {
                    let message = unknown_key(name, "", SECTIONS);
                    return Err(self.cx.err(Some(&k.span()), &join("", name), message));
                }
            }
        }
        Ok(c)
    }

    fn err_at(&self, key: &str, message: String) -> ConfigError {
        self.cx.err(self.spans.get(key), key, message)
    }

    /// Rules that involve more than one key, checked once everything is read.
    fn check(&self, c: &Config) -> Result<(), ConfigError> {
        let p = &c.pooler;
        if p.min_pool_size > p.default_pool_size {
            let (min, size) = (p.min_pool_size, p.default_pool_size);
            let message = format!("{min} is larger than default_pool_size {size}");
            return Err(self.err_at("pooler.min_pool_size", message));
        }
        if p.tls_mode != TlsMode::Disable && (p.tls_cert_file.is_empty() || p.tls_key_file.is_empty()) {
            let message = format!(
                "tls_mode {:?} needs tls_cert_file and tls_key_file",
                p.tls_mode.as_str()
            );
            return Err(self.err_at("pooler.tls_mode", message));
        }
        for (name, d) in &c.databases {
            let path = join("databases", name);
            let (size, size_key) = match d.pool_size {
                Some(n) => (n, format!("{path}.pool_size")),
                None => (p.default_pool_size, "pooler.default_pool_size".to_string()),
            };
            let (min, min_key) = match d.min_pool_size {
                Some(n) => (n, format!("{path}.min_pool_size")),
                None => (p.min_pool_size, "pooler.min_pool_size".to_string()),
            };
            // Blame the database's own key: the pooler-wide pair was checked above.
            if min > size && d.min_pool_size.is_some() {
                let message = format!("{min} is larger than the pool size {size} ({size_key})");
                return Err(self.err_at(&min_key, message));
            }
            if min > size {
                let message = format!("{size} is smaller than min_pool_size {min} ({min_key})");
                return Err(self.err_at(&size_key, message));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copy of design/pooler.toml.example.
    const EXAMPLE: &str = r#"
# pgmux configuration: the keys every pgmux build must accept.
# Names follow PgBouncer's where PgBouncer has the same knob, so its users
# can carry their runbooks over. Durations are seconds (integer or float);
# 0 disables a timeout. Every key is optional: the defaults shown apply.

[pooler]
listen_addr = "127.0.0.1"          # "0.0.0.0" / "::" for all interfaces
listen_port = 6432
pool_mode = "transaction"          # "session" | "transaction" | "statement"
max_client_conn = 1000             # clients beyond this are refused with SQLSTATE 53300
default_pool_size = 20             # server connections per (database, user) pool
min_pool_size = 0                  # kept open even when idle
reserve_pool_size = 0              # extra connections a pool may open ...
reserve_pool_timeout = 5.0         # ... after a client waited this long
max_db_connections = 0             # per database, all users (0 = unlimited)
max_user_connections = 0           # per user, all databases (0 = unlimited)
auth_type = "scram-sha-256"        # "scram-sha-256" | "md5" | "trust" | "passthrough"
admin_users = []                   # may run every admin console command
stats_users = []                   # may run SHOW commands only
server_reset_query = "DISCARD ALL" # session mode only, on release
server_check_query = ""            # run on a server idle longer than server_check_delay; "" = empty query
server_check_delay = 30.0
server_connect_timeout = 15.0
server_login_retry = 15.0          # wait before retrying a failed server login
query_wait_timeout = 120.0         # max time a client waits for a server connection
query_timeout = 0.0                # cancel queries running longer than this
client_idle_timeout = 0.0
client_login_timeout = 60.0        # startup + auth must finish within this
idle_transaction_timeout = 0.0     # close clients idle inside a transaction
server_idle_timeout = 600.0
server_lifetime = 3600.0
max_prepared_statements = 200      # per server connection, transaction mode; 0 = pass through unsupported
max_message_size = 268435456       # larger messages from clients are refused (bytes)
shutdown_timeout = 30.0            # SIGINT/SIGTERM: how long transactions in flight may finish
slow_query_threshold = 1.0         # queries slower than this appear in SHOW SLOW_QUERIES and the log
stats_period = 60.0                # window of SHOW STATS averages and percentiles
tls_mode = "disable"               # client side: "disable" | "allow" | "prefer" | "require"
tls_cert_file = ""
tls_key_file = ""
server_tls_mode = "disable"        # to servers: "disable" | "prefer" | "require" | "verify-full"
server_tls_ca_file = ""

[metrics]
listen = "127.0.0.1:9930"          # Prometheus text exposition at /metrics; "" disables

[breaker]                          # per backend address
failure_threshold = 5              # consecutive failures that open the breaker
open_timeout = 30.0                # seconds open before one half-open probe is allowed

# Users the pooler authenticates clients against (auth_type scram-sha-256 / md5).
# password: plain text, "md5<32 hex>" or a "SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>" secret.
[users.app]
password = "app"
# pool_mode = "session"           # per-user override
# max_user_connections = 50

[users.admin]
password = "admin"

# Databases clients may connect to. The section name is what clients put in
# their connection string; dbname defaults to it.
[databases.bench]
host = "127.0.0.1"
port = 5432
# dbname = "bench"
# user = "app"                     # force this server login user; default: the client's user
# password = "..."                 # server password for that user; default: the client's
# pool_size = 20                   # overrides default_pool_size
# pool_mode = "transaction"
replicas = []                      # e.g. ["127.0.0.1:5433", "10.0.0.7:5432"]
read_write_split = false           # route read-only statements to healthy replicas
max_replica_lag_bytes = 16777216   # replicas further behind the primary's WAL get no reads
max_replica_lag_seconds = 5.0      # ... nor those whose last replay is older than this while the primary writes
lag_check_interval = 1.0
read_your_writes = true            # after a client's write, its reads wait for a replica that has replayed it
load_balancing = "least_outstanding" # "least_outstanding" | "round_robin" | "random"
primary_reads = false              # the primary also takes reads
# write_functions = ["nextval", "setval", ...]  # calls that force the primary (default list in the docs)

# A "*" entry serves any database name not listed, on the given server.
# [databases."*"]
# host = "127.0.0.1"
# port = 5432
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "pooler.toml")
    }

    const STORED: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="; // 32 bytes of 0x01
    const SERVER: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // bytes 0..32

    /// `input => expected part of the message`; "|" in the input stands for a line break.
    const ERRORS: &str = r#"
# c | [pooler] | listen_port = 6432 | pool_mod = "session" => pooler.toml:4: pooler.pool_mod: unknown key, did you mean "pool_mode"?
[poolr] => pooler.toml:1: poolr: unknown section, did you mean "pooler"?
top = 1 => pooler.toml:1: top: unknown section, expected one of: pooler, metrics, breaker, users, databases
[users.app] | passwd = "x" => pooler.toml:2: users.app.passwd: unknown key, did you mean "password"?
[pooler] | replicas = [] => pooler.toml:2: pooler.replicas: unknown key (replicas belongs in [databases.NAME])
[databases."*"] | zzz = 1 => pooler.toml:2: databases."*".zzz: unknown key
[breaker] | zzz = 1 => pooler.toml:2: breaker.zzz: unknown key, expected one of: failure_threshold, open_timeout
[pooler] | server_tls_ca = "x" => pooler.toml:2: pooler.server_tls_ca: unknown key, did you mean "server_tls_ca_file"?
[databases.""] => pooler.toml:1: databases."": the name must not be empty
[pooler] | max_client_conn = "100" => pooler.toml:2: pooler.max_client_conn: expected an integer, found a string
[pooler] | listen_addr = 1 => pooler.listen_addr: expected a string, found an integer
[pooler] | max_client_conn = 1.5 => pooler.max_client_conn: expected an integer, found a float
pooler = 1 => pooler.toml:1: pooler: expected a table, found an integer
[users] | app = "x" => pooler.toml:2: users.app: expected a table, found a string
[databases.d] | read_write_split = "yes" => databases.d.read_write_split: expected true or false, found a string
[pooler] | max_client_conn = 99999999999999999999 => pooler.max_client_conn: integer out of range
# x | | [pooler] | listen_port = 6432 | | | pool_mode = "sesion" => pooler.toml:7: pooler.pool_mode: invalid value "sesion", expected one of "session", "transaction", "statement"
[pooler] | auth_type = "scram" => expected one of "scram-sha-256", "md5", "trust", "passthrough"
[pooler] | tls_mode = "on" => pooler.tls_mode: invalid value "on", expected one of "disable", "allow", "prefer", "require"
[pooler] | server_tls_mode = "verify" => expected one of "disable", "prefer", "require", "verify-full"
[databases.d] | load_balancing = "rr" => expected one of "least_outstanding", "round_robin", "random"
[users.u] | pool_mode = 1 => users.u.pool_mode: expected a string, found an integer
[pooler] | listen_port = 0 => pooler.toml:2: pooler.listen_port: 0 is not a valid port, expected 1 to 65535
[pooler] | listen_port = 65536 => pooler.listen_port: 65536 is not a valid port, expected 1 to 65535
[pooler] | listen_port = -1 => pooler.listen_port: must not be negative, found -1
[databases.d] | port = 70000 => databases.d.port: 70000 is not a valid port
[pooler] | default_pool_size = 0 => pooler.default_pool_size: 0 is too small, must be at least 1
[pooler] | max_message_size = 1000 => pooler.max_message_size: 1000 is too small, must be at least 1024
[pooler] | max_client_conn = 4294967296 => 4294967296 is too large, must be at most 4294967295
[breaker] | failure_threshold = 0 => pooler.toml:2: breaker.failure_threshold: 0 is too small, must be at least 1
[databases.d] | pool_size = 0 => databases.d.pool_size: 0 is too small, must be at least 1
[pooler] | listen_addr = "" => pooler.listen_addr: must not be empty
[pooler] | listen_addr = "0.0.0.0:6432" => pooler.listen_addr: expected an address without a port
[metrics] | listen = "9930" => pooler.toml:2: metrics.listen: expected "host:port", found "9930"
[pooler] | stats_period = 0 => pooler.stats_period: must be greater than 0
[pooler] | query_timeout = -1 => pooler.toml:2: pooler.query_timeout: must not be negative, found -1
[pooler] | query_timeout = -0.5 => pooler.query_timeout: must not be negative, found -0.5
[pooler] | query_timeout = nan => pooler.query_timeout: must not be negative, found nan
[pooler] | query_timeout = inf => pooler.query_timeout: inf seconds is too large
[pooler] | query_timeout = "5s" => pooler.query_timeout: expected a number of seconds such as 5 or 0.25, found a string
[breaker] | open_timeout = true => breaker.open_timeout: expected a number of seconds, found a boolean
[pooler] | default_pool_size = 5 | min_pool_size = 6 => pooler.toml:3: pooler.min_pool_size: 6 is larger than default_pool_size 5
[databases.d] | pool_size = 4 | min_pool_size = 5 => pooler.toml:3: databases.d.min_pool_size: 5 is larger than the pool size 4 (databases.d.pool_size)
[pooler] | min_pool_size = 5 | [databases.d] | pool_size = 3 => pooler.toml:4: databases.d.pool_size: 3 is smaller than min_pool_size 5 (pooler.min_pool_size)
[pooler] | default_pool_size = 9 | [databases.d] | min_pool_size = 10 => databases.d.min_pool_size: 10 is larger than the pool size 9 (pooler.default_pool_size)
[pooler] | tls_mode = "require" => pooler.toml:2: pooler.tls_mode: tls_mode "require" needs tls_cert_file and tls_key_file
[pooler] | admin_users = ["a", 1] => pooler.toml:2: pooler.admin_users[1]: expected a string, found an integer
[pooler] | stats_users = "mon" => pooler.stats_users: expected an array, found a string
[pooler] | stats_users = [""] => pooler.stats_users[0]: must not be empty
[databases.d] | write_functions = [1] => databases.d.write_functions[0]: expected a string, found an integer
[databases.d] | replicas = [ | "a:1", | "nohost", | ] => pooler.toml:4: databases.d.replicas[1]: expected "host:port", found "nohost"
[databases.d] | replicas = ["::1:5432"] => replicas[0]: invalid address "::1:5432": write IPv6 in brackets, e.g. "[::1]:5432"
[databases.d] | replicas = ["[::1]5432"] => replicas[0]: expected "[address]:port", found "[::1]5432"
[databases.d] | replicas = ["[::1:5432"] => replicas[0]: missing ']' after the IPv6 address
[databases.d] | replicas = ["[nope]:5432"] => replicas[0]: invalid IPv6 address "nope" in "[nope]:5432"
[databases.d] | replicas = ["h:0"] => replicas[0]: invalid port in "h:0", expected 1 to 65535
[databases.d] | replicas = ["h:port"] => replicas[0]: invalid port in "h:port", expected 1 to 65535
[databases.d] | replicas = [":5432"] => replicas[0]: invalid host in ":5432"
[databases.d] | replicas = ["a:1", "a:1"] => pooler.toml:2: databases.d.replicas[1]: duplicate replica
[databases.d] | replicas = "a:1" => databases.d.replicas: expected an array, found a string
[users.u] | password = "" => pooler.toml:2: users.u.password: empty password; leave the key out instead
[users.u] | password = 5 => users.u.password: expected a string, found an integer
[users.u] | password = "md5abc" => users.u.password: md5 secret: expected 32 hex digits after "md5", found 3 characters
[users.u] | password = "md5zz63fea7be31b0200b496d08bc6b517d" => md5 secret: the part after "md5" is not all hex digits
[databases.d] | password = "SCRAM-SHA-256$4096:c2FsdA==" => databases.d.password: SCRAM secret: missing '$' before the keys
[users.u] | password = "SCRAM-SHA-256$4096c2FsdA==$AAAA:BBBB" => missing ':' between iteration count and salt
[users.u] | password = "SCRAM-SHA-256$x:c2FsdA==$AAAA:BBBB" => SCRAM secret: the iteration count is not a positive integer
[users.u] | password = "SCRAM-SHA-256$0:c2FsdA==$AAAA:BBBB" => SCRAM secret: the iteration count is not a positive integer
[users.u] | password = "SCRAM-SHA-256$4096:!!!$AAAA:BBBB" => SCRAM secret: the salt is not valid base64
[users.u] | password = "SCRAM-SHA-256$4096:$AAAA:BBBB" => SCRAM secret: the salt is empty
[users.u] | password = "SCRAM-SHA-256$4096:c2FsdA==$AAAA" => SCRAM secret: missing ':' between stored key and server key
[users.u] | password = "SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB" => SCRAM secret: the stored key must be 32 bytes, found 3
[users.u] | password = "SCRAM-SHA-256$4096:c2FsdA==$AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=:%%" => SCRAM secret: the server key is not valid base64
[pooler] | listen_port = 6432 | listen_addr = => pooler.toml:3: TOML syntax error:
[pooler] | listen_port = 1 | listen_port = 2 => pooler.toml:3: TOML syntax error: duplicate key
"#;

    #[test]
    fn errors_name_line_key_and_problem() {
        let cases: Vec<&str> = ERRORS.lines().filter(|l| !l.is_empty()).collect();
        assert!(cases.len() > 70);
        for case in cases {
            let (input, want) = case.split_once(" => ").unwrap();
            let text: Vec<&str> = input.split('|').map(str::trim).collect();
            let e = match parse(&text.join("\n")) {
                Ok(c) => panic!("no error for {input:?}: {c:?}"),
                Err(e) => e.to_string(),
            };
            assert!(e.starts_with("pooler.toml:") && !e.contains('\n'), "{e}");
            assert!(e.contains(want), "{input:?}\n gave {e:?}\n want {want:?}");
            // Secrets are never echoed.
            if let Some((_, secret)) = input.split_once("password = \"") {
                assert!(secret.len() < 8 || !e.contains(&secret[3..secret.len() - 1]), "{e}");
            }
        }
    }

    #[test]
    fn empty_file_gives_the_example_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        let p = &c.pooler;
        assert_eq!((p.listen_addr.as_str(), p.listen_port), ("127.0.0.1", 6432));
        assert_eq!(
            (p.pool_mode, p.auth_type),
            (PoolMode::Transaction, AuthType::ScramSha256)
        );
        assert_eq!(
            (p.max_client_conn, p.default_pool_size, p.max_prepared_statements),
            (1000, 20, 200)
        );
        assert_eq!(
            (p.max_message_size, p.server_reset_query.as_str()),
            (268435456, "DISCARD ALL")
        );
        assert_eq!(
            (p.reserve_pool_timeout, p.query_timeout),
            (Duration::from_secs(5), Duration::ZERO)
        );
        assert_eq!(
            (p.server_lifetime, p.tls_mode),
            (Duration::from_secs(3600), TlsMode::Disable)
        );
        assert_eq!(c.metrics.listen, "127.0.0.1:9930");
        let breaker = BreakerConfig {
            failure_threshold: 5,
            open_timeout: Duration::from_secs(30),
        };
        assert_eq!(c.breaker, breaker);
        assert!(c.users.is_empty() && c.databases.is_empty());
    }

    #[test]
    fn example_file_parses_with_default_values() {
        let c = parse(EXAMPLE).unwrap();
        let d = Config::default();
        assert_eq!((&c.pooler, &c.metrics, &c.breaker), (&d.pooler, &d.metrics, &d.breaker));
        assert_eq!(c.users.len(), 2);
        assert_eq!(c.users["app"].password, Some(Secret::Plain("app".into())));
        assert_eq!(c.users["admin"].pool_mode, None);
        assert_eq!(c.databases.len(), 1);
        let bench = &c.databases["bench"];
        assert_eq!(bench, &DatabaseConfig::default());
        assert_eq!((bench.host.as_str(), bench.port), ("127.0.0.1", 5432));
        assert_eq!(
            (bench.max_replica_lag_bytes, bench.load_balancing),
            (16777216, LoadBalancing::LeastOutstanding)
        );
        assert!(bench.read_your_writes && !bench.read_write_split && !bench.primary_reads);
        assert_eq!(bench.max_replica_lag_seconds, Duration::from_secs(5));
        for f in ["nextval", "setval", "pg_try_advisory_lock", "pg_notify", "lo_import"] {
            assert!(bench.write_functions.iter().any(|w| w == f), "{f}");
        }
    }

    #[test]
    fn commented_out_keys_of_the_example_are_accepted() {
        let text = "[users.app]\npool_mode = \"session\"\nmax_user_connections = 50\n\
                    [databases.bench]\ndbname = \"b\"\nuser = \"app\"\npassword = \"pw\"\npool_size = 20\n\
                    pool_mode = \"transaction\"\nwrite_functions = [\"NextVal\", \"my_fn\"]\n\
                    [databases.\"*\"]\nhost = \"10.0.0.1\"\nport = 5433\n";
        let c = parse(text).unwrap();
        assert_eq!(c.users["app"].max_user_connections, Some(50));
        let bench = &c.databases["bench"];
        assert_eq!(bench.user.as_deref(), Some("app"));
        assert_eq!(bench.write_functions, ["nextval", "my_fn"]);
        assert_eq!(c.databases["*"].port, 5433);
    }

    #[test]
    fn every_listed_key_is_handled() {
        let lists: [(&str, &[&str]); 5] = [
            ("[pooler]", POOLER_KEYS),
            ("[metrics]", METRICS_KEYS),
            ("[breaker]", BREAKER_KEYS),
            ("[users.u]", USER_KEYS),
            ("[databases.d]", DATABASE_KEYS),
        ];
        for (header, keys) in lists {
            for key in keys {
                let e = parse(&format!("{header}\n{key} = {{}}\n")).unwrap_err().to_string();
                assert!(e.contains("expected") && !e.contains("unknown"), "{e}");
            }
        }
    }

    #[test]
    fn database_lookup_and_embedded_default() {
        let c = parse("[databases.a]\ndbname = \"real_a\"\n[databases.\"*\"]\nhost = \"db\"\n").unwrap();
        assert_eq!(c.database("a").unwrap().server_dbname("a"), "real_a");
        assert_eq!(c.database("zzz").unwrap().host, "db");
        assert_eq!(c.database("zzz").unwrap().server_dbname("zzz"), "zzz");
        let c = parse("[databases.a]\n").unwrap();
        assert!(c.database("a").is_some() && c.database("b").is_none());

        let c = Config::embedded_default();
        assert_eq!(c.pooler.auth_type, AuthType::Passthrough);
        assert_eq!(
            (c.pooler.listen_addr.as_str(), c.pooler.listen_port),
            ("127.0.0.1", 6432)
        );
        assert!(c.users.is_empty());
        let d = c.database("anything").unwrap();
        assert_eq!(
            (d.host.as_str(), d.port, d.server_dbname("anything")),
            ("127.0.0.1", 5432, "anything")
        );
    }

    #[test]
    fn pool_mode_and_size_precedence() {
        let text = "[pooler]\npool_mode = \"statement\"\ndefault_pool_size = 7\nmin_pool_size = 2\n\
                    [users.u]\npool_mode = \"session\"\n[users.plain]\n\
                    [databases.d]\npool_mode = \"transaction\"\npool_size = 3\n[databases.e]\n";
        let c = parse(text).unwrap();
        assert_eq!(c.pool_mode_for("d", "u"), PoolMode::Session);
        assert_eq!(c.pool_mode_for("d", "plain"), PoolMode::Transaction);
        assert_eq!(c.pool_mode_for("e", "plain"), PoolMode::Statement);
        assert_eq!(c.pool_mode_for("unknown", "nobody"), PoolMode::Statement);
        assert_eq!(
            (c.pool_size_for("d"), c.pool_size_for("e"), c.pool_size_for("x")),
            (3, 7, 7)
        );
        assert_eq!(c.min_pool_size_for("d"), 2);
    }

    #[test]
    fn values_that_parse() {
        let text = "[pooler]\nquery_timeout = 5\nclient_idle_timeout = 5.0\nserver_check_delay = 0.25\n\
                    server_lifetime = 0\nshutdown_timeout = 1_000\nauth_type = \"SCRAM-SHA-256\"\n\
                    server_tls_mode = \"verify-full\"\ntls_mode = \"prefer\"\ntls_cert_file = \"c\"\n\
                    tls_key_file = \"k\"\nadmin_users = [\"root\"]\nstats_users = [\"mon\", \"ops\"]\n\
                    [metrics]\nlisten = \"\"\n[databases.d]\npool_size = 5\nmin_pool_size = 5\n\
                    replicas = [\"10.0.0.7:5432\", \"[::1]:5433\", \"replica.example:6000\"]\n";
        let c = parse(text).unwrap();
        let p = &c.pooler;
        assert_eq!(
            (p.query_timeout, p.client_idle_timeout),
            (Duration::from_secs(5), Duration::from_secs(5))
        );
        assert_eq!(
            (p.server_check_delay, p.server_lifetime),
            (Duration::from_millis(250), Duration::ZERO)
        );
        assert_eq!(p.shutdown_timeout, Duration::from_secs(1000));
        assert_eq!(
            (p.auth_type, p.server_tls_mode),
            (AuthType::ScramSha256, ServerTlsMode::VerifyFull)
        );
        assert_eq!(
            (p.admin_users.len(), p.stats_users.len(), p.tls_mode),
            (1, 2, TlsMode::Prefer)
        );
        assert_eq!(c.metrics.listen, "");
        let replicas = [("10.0.0.7", 5432), ("::1", 5433), ("replica.example", 6000)];
        let replicas: Vec<(String, u16)> = replicas.iter().map(|(h, p)| (h.to_string(), *p)).collect();
        assert_eq!(c.databases["d"].replicas, replicas);
        for mode in PoolMode::ALL {
            assert_eq!(mode.to_string().parse::<PoolMode>(), Ok(*mode));
        }
        assert_eq!(
            (LoadBalancing::RoundRobin.to_string(), AuthType::Md5.to_string()),
            ("round_robin".into(), "md5".into())
        );
    }

    #[test]
    fn secrets_parse_and_hide_in_debug() {
        let Ok(Secret::Md5(md5)) = Secret::parse("md5fe63fea7be31b0200b496d08bc6b517d") else {
            panic!()
        };
        assert_eq!((md5[0], md5[1], md5[15]), (0xfe, 0x63, 0x7d));
        let scram = format!("SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==${STORED}:{SERVER}");
        let Ok(Secret::Scram(s)) = Secret::parse(&scram) else {
            panic!("bad scram")
        };
        assert_eq!((s.iterations, s.salt.as_slice()), (4096, &b"saltsaltsaltsalt"[..]));
        assert_eq!((s.stored_key, s.server_key[31]), ([1; 32], 31));
        let text = format!(
            "[users.u]\npassword = \"{scram}\"\n[users.p]\npassword = \"hunter2\"\n\
                            [databases.d]\npassword = \"md5{}\"\n",
            "0".repeat(32)
        );
        let c = parse(&text).unwrap();
        assert!(matches!(c.users["u"].password, Some(Secret::Scram(_))));
        assert_eq!(c.databases["d"].password, Some(Secret::Md5([0; 16])));
        let shown = format!("{c:?}");
        assert!(
            shown.contains("Secret::Plain(***)") && shown.contains("Secret::Md5(***)"),
            "{shown}"
        );
        assert!(shown.contains("ScramSecret { iterations: 4096, *** }"), "{shown}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("[1, 1") && !shown.contains("[0, 0"),
            "{shown}"
        );
    }

    #[test]
    fn load_reads_files_and_reports_io_errors() {
        let dir = std::env::temp_dir().join(format!("pgmux-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pooler.toml");
        std::fs::write(&path, "[pooler]\nlisten_port = 7000\n").unwrap();
        assert_eq!(Config::load(&path).unwrap().pooler.listen_port, 7000);
        std::fs::write(&path, "[pooler]\nlisten_port = 0\n").unwrap();
        let e = Config::load(&path).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(2), "pooler.listen_port"));
        assert!(e
            .to_string()
            .starts_with(&format!("{}:2: pooler.listen_port: ", path.display())));
        let missing = dir.join("missing.toml");
        let e = Config::load(&missing).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (None, ""));
        assert!(
            e.to_string()
                .starts_with(&format!("{}: cannot read file: ", missing.display())),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
