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
[breaker] | zzz = 1 => pooler.toml:2: breaker.zzz: unknown key, expected one of: failure_threshold, open_timeout, max_open_timeout
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
[breaker] | open_timeout = 0 => pooler.toml:2: breaker.open_timeout: must be greater than 0
[breaker] | open_timeout = true => breaker.open_timeout: expected a number of seconds, found a boolean
[breaker] | open_timeout = 5 | max_open_timeout = 2 => pooler.toml:3: breaker.max_open_timeout: 2 s is shorter than open_timeout (5 s); 0 keeps every re-open at open_timeout
[pooler] | default_pool_size = 5 | min_pool_size = 6 => pooler.toml:3: pooler.min_pool_size: 6 is larger than default_pool_size 5
[databases.d] | pool_size = 4 | min_pool_size = 5 => pooler.toml:3: databases.d.min_pool_size: 5 is larger than the pool size 4 (databases.d.pool_size)
[pooler] | min_pool_size = 5 | [databases.d] | pool_size = 3 => pooler.toml:4: databases.d.pool_size: 3 is smaller than min_pool_size 5 (pooler.min_pool_size)
[pooler] | default_pool_size = 9 | [databases.d] | min_pool_size = 10 => databases.d.min_pool_size: 10 is larger than the pool size 9 (pooler.default_pool_size)
[pooler] | tls_mode = "require" => pooler.toml:2: pooler.tls_mode: tls_mode "require" needs tls_cert_file and tls_key_file
[pooler] | server_tls_mode = "verify-full" => pooler.toml:2: pooler.server_tls_mode: server_tls_mode "verify-full" needs server_tls_ca_file
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
        open_timeout: Duration::from_secs(15),
        max_open_timeout: Duration::ZERO,
    };
    assert_eq!(c.breaker, breaker);
    assert!(c.users.is_empty() && c.databases.is_empty());
}

#[test]
fn example_file_parses_with_default_values() {
    let c = parse(EXAMPLE).unwrap();
    let d = Config::default();
    // One deliberate difference: the example's open_timeout is 30 s, the default 15 s, so that
    // with no [breaker] section a server that came back is used again within PgBouncer's
    // server_login_retry (issue 15).
    assert_eq!(c.breaker.open_timeout, Duration::from_secs(30));
    let breaker = BreakerConfig {
        open_timeout: d.breaker.open_timeout,
        ..c.breaker.clone()
    };
    assert_eq!((&c.pooler, &c.metrics, &breaker), (&d.pooler, &d.metrics, &d.breaker));
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
    for f in ["nextval", "setval", "pg_try_advisory_*", "pg_notify", "lo_*", "dblink*"] {
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
    let lists: [(&str, &[&str]); 6] = [
        ("[pooler]", POOLER_KEYS),
        ("[metrics]", METRICS_KEYS),
        ("[breaker]", BREAKER_KEYS),
        ("[users.u]", USER_KEYS),
        ("[databases.d]", DATABASE_KEYS),
        ("[peers.1]", PEER_KEYS),
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
                server_tls_mode = \"verify-full\"\nserver_tls_ca_file = \"ca\"\ntls_mode = \"prefer\"\ntls_cert_file = \"c\"\n\
                tls_key_file = \"k\"\nadmin_users = [\"root\"]\nstats_users = [\"mon\", \"ops\"]\n\
                [metrics]\nlisten = \"\"\n[databases.d]\npool_size = 5\nmin_pool_size = 5\n\
                replicas = [\"10.0.0.7:5432\", \"[::1]:5433\", \"replica.example:6000\", \"/var/run/postgresql:5434\"]\n";
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
    // A socket directory (libpq's rule: a host starting with '/') works as any host.
    let replicas = [
        ("10.0.0.7", 5432),
        ("::1", 5433),
        ("replica.example", 6000),
        ("/var/run/postgresql", 5434),
    ];
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
    // Only "md5" followed by exactly 32 hex digits is a hash; anything else is a password.
    for plain in ["md5pass", "md5abc", "md5zz63fea7be31b0200b496d08bc6b517d"] {
        assert_eq!(Secret::parse(plain), Ok(Secret::Plain(plain.to_string())));
    }
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

#[test]
fn metrics_auth_users_need_a_password() {
    let dir = std::env::temp_dir().join(format!("pgmux-config-auth-users-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pooler.toml");
    std::fs::write(dir.join("users.txt"), "\"ops\" \"pw\"\n").unwrap();
    let text = "[pooler]\nauth_file = \"users.txt\"\n[metrics]\nauth_users = [\"ops\", \"app\"]\n";
    std::fs::write(&path, format!("{text}[users.app]\npassword = \"app\"\n")).unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(c.metrics.auth_users, ["ops", "app"]);
    assert!(c.metrics.dashboard);
    std::fs::write(&path, format!("{text}[users.app]\npool_mode = \"session\"\n")).unwrap();
    let e = Config::load(&path).unwrap_err();
    assert_eq!(e.key, "metrics.auth_users");
    assert!(e.to_string().contains("user \"app\" has no password"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn peers_parse_with_their_ids() {
    let c = parse(
        "[pooler]\npeer_id = 2\n[peers.1]\nhost = \"10.0.0.1\"\n[peers.2]\nhost = \"/tmp\"\nport = 6433\npool_size = 3\n",
    )
    .unwrap();
    assert_eq!(c.pooler.peer_id, 2);
    assert_eq!(c.peers.len(), 2);
    assert_eq!((c.peers[&1].host.as_str(), c.peers[&1].port), ("10.0.0.1", 6432));
    assert_eq!(c.peer_pool_size(&c.peers[&1]), 20, "default_pool_size");
    assert_eq!(c.peer_pool_size(&c.peers[&2]), 3);
    assert_eq!(parse("").unwrap().pooler.peer_id, 0, "off by default");
    let cases = [
        (
            "[pooler]\npeer_id = 65536\n",
            "pooler.toml:2: pooler.peer_id: 65536 is too large",
        ),
        (
            "[pooler]\npeer_id = -1\n",
            "pooler.toml:2: pooler.peer_id: must not be negative",
        ),
        (
            "[peers.0]\nhost = \"h\"\n",
            "pooler.toml:1: peers.0: a peer's name is its peer_id",
        ),
        (
            "[peers.x]\nhost = \"h\"\n",
            "pooler.toml:1: peers.x: a peer's name is its peer_id",
        ),
        (
            "[peers.70000]\nhost = \"h\"\n",
            "pooler.toml:1: peers.70000: a peer's name",
        ),
        ("\n[peers.1]\nport = 1\n", "pooler.toml:2: peers.1: missing host"),
        (
            "[peers.1]\nhost = \"h\"\nport = 0\n",
            "pooler.toml:3: peers.1.port: 0 is not a valid port",
        ),
        (
            "[peers.1]\nhost = \"h\"\npool_size = 0\n",
            "pooler.toml:3: peers.1.pool_size: 0 is too small",
        ),
        (
            "[peers.1]\nhost = \"h\"\ndbname = \"x\"\n",
            "pooler.toml:3: peers.1.dbname: unknown key",
        ),
        (
            "[peers.1]\nhost = \"h\"\n[peers.01]\nhost = \"i\"\n",
            "pooler.toml:3: peers.01: peer 1 is listed twice",
        ),
        ("[peers]\n1 = \"h:1\"\n", "pooler.toml:2: peers.1: expected a table"),
    ];
    for (text, want) in cases {
        let e = parse(text).unwrap_err().to_string();
        assert!(e.starts_with(want), "{text:?}\n gave {e:?}\n want {want:?}");
    }
}
