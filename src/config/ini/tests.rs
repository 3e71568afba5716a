use super::connstr::pairs;
use super::*;
use crate::config::{AuthType, PoolMode, Secret, ServerTlsMode, TlsMode};
use std::path::PathBuf;
use std::time::Duration;

/// A pgbouncer.ini in the style of PgBouncer's own etc/pgbouncer.ini: a few active settings,
/// most of them commented out with ";".
const EXAMPLE: &str = "\
;; PgBouncer configuration, as shipped: sections [databases], [users], [pgbouncer].

[databases]

; database name = connection string
;   clients ask for the name on the left; the server is the one on the right
;appdb = host=db1.internal dbname=app
;reportdb = host=127.0.0.1 port=5433 dbname=reports user=reporter password=secret
;* = host=fallback.internal

[users]

;someuser = pool_mode=session

[pgbouncer]

;;; Administrative settings

logfile = /var/log/pgbouncer/pgbouncer.log
pidfile = /var/run/pgbouncer/pgbouncer.pid

;;; Where to wait for clients

; IP address or *, which means all IPs
listen_addr = localhost
listen_port = 6432
;unix_socket_dir = /tmp
;unix_socket_mode = 0777

;;; Authentication settings

; any, trust, plain, md5, cert, hba, pam
auth_type = md5
auth_file = /etc/pgbouncer/userlist.txt
;auth_hba_file =
;auth_query = SELECT usename, passwd FROM pg_shadow WHERE usename=$1

;;; Users allowed into database 'pgbouncer'

;admin_users = user2, someadmin, otheradmin
;stats_users = stats, root

;;; Pooler personality questions

;pool_mode = session
;server_reset_query = DISCARD ALL
;ignore_startup_parameters = extra_float_digits
;server_check_query = select 1
;server_check_delay = 30
;application_name_add_host = 0

;;; Connection limits

;max_client_conn = 100
;default_pool_size = 20
;min_pool_size = 0
;reserve_pool_size = 0
;reserve_pool_timeout = 5
;max_db_connections = 0
;max_user_connections = 0
;server_round_robin = 0

;;; Logging

;syslog = 0
;log_connections = 1
;log_pooler_errors = 1

;;; Timeouts

;server_lifetime = 3600
;server_idle_timeout = 600
;server_connect_timeout = 15
;server_login_retry = 15
;query_timeout = 0
;query_wait_timeout = 120
;client_idle_timeout = 0
;client_login_timeout = 60

;;; Low-level tuning options

;pkt_buf = 4096
;listen_backlog = 128
;tcp_keepalive = 1
;tcp_keepidle = 0

;; Read more settings from another file
;%include /etc/pgbouncer/pgbouncer-other.ini
";

/// A scratch directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pgmux-ini-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn conv(text: &str) -> Result<Converted, ConfigError> {
    convert(text, Path::new("pgbouncer.ini"), Path::new("/nonexistent"))
}

/// Converts and parses; panics with the TOML on an error.
fn load(text: &str) -> Config {
    let c = conv(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut config = c.config().unwrap_or_else(|e| panic!("{e}\n{}", c.toml));
    config.notes.retain(|n| !is_md5_note(n));
    config
}

/// The note on auth_type md5 (PgBouncer's default), checked in `md5_is_noted` and left out
/// elsewhere.
fn is_md5_note(note: &str) -> bool {
    note.contains(": auth_type: md5: ")
}

fn err(text: &str) -> ConfigError {
    match conv(text).and_then(|c| c.config()) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    }
}

fn notes(text: &str) -> Vec<String> {
    load(text).notes
}

fn pgb(lines: &str) -> Config {
    load(&format!("[pgbouncer]\n{lines}\n"))
}

#[test]
fn connection_strings_split_as_pgbouncer_splits_them() {
    let p = |s: &str| pairs(s).unwrap();
    let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(p(""), vec![]);
    assert_eq!(p("  host=a   port=5 "), vec![kv("host", "a"), kv("port", "5")]);
    // Quotes: blanks and "=" inside, '' for a quote; the character after the closing quote is
    // cut, as in PgBouncer.
    assert_eq!(
        p("password='it''s a = b' user=x"),
        vec![kv("password", "it's a = b"), kv("user", "x")]
    );
    assert_eq!(p("a=''' ''b'"), vec![kv("a", "' 'b")]);
    assert_eq!(p("host = h"), vec![kv("host", "h")]);
    // PgBouncer skips blanks after "=", so an empty value takes the next pair as its value.
    assert_eq!(p("host= port=5"), vec![kv("host", "port=5")]);
    assert_eq!(p("x=é"), vec![kv("x", "é")]);
    for bad in ["host", "host=", "=x", "password='open", "a=''", "host port=1"] {
        assert!(pairs(bad).is_err(), "{bad:?} accepted");
    }
    // The message never holds a value (it may be a password).
    let e = pairs("password='hunter2").unwrap_err();
    assert!(!e.contains("hunter2"), "{e}");
    let e = pairs("password=hunter2 correct horse").unwrap_err();
    assert!(!e.contains("correct") && e.contains("quote"), "{e}");
}

#[test]
fn databases_map_to_database_entries() {
    let c = load(
        "[databases]\n\
         foodb =\n\
         bardb = host=localhost dbname=bazdb\n\
         forcedb = host=127.0.0.1 port=300 user=baz password=foo client_encoding=UNICODE datestyle=ISO timezone=UTC\n\
         sized = host=/var/run/postgresql pool_size=50 min_pool_size=5 reserve_pool=10 max_db_connections=70 pool_mode=Statement auth_user=lookup\n\
         alias = host=h reserve_pool_size=3 pool_size=-1\n\
         v6 = host=2001:db8::1 port=6000\n\
         'odd name' = host=h\n\
         * = host=fallback port=5433\n\
         [pgbouncer]\n",
    );
    let db = |n: &str| {
        c.databases
            .get(n)
            .unwrap_or_else(|| panic!("no {n}: {:?}", c.databases.keys()))
    };
    // No host: the Unix socket in unix_socket_dir (PgBouncer's default /tmp).
    assert_eq!((db("foodb").host.as_str(), db("foodb").port), ("/tmp", 5432));
    assert_eq!(db("bardb").host, "localhost");
    assert_eq!(db("bardb").dbname.as_deref(), Some("bazdb"));
    let f = db("forcedb");
    assert_eq!(
        (f.host.as_str(), f.port, f.user.as_deref()),
        ("127.0.0.1", 300, Some("baz"))
    );
    assert_eq!(f.password, Some(Secret::Plain("foo".into())));
    assert_eq!(f.client_encoding.as_deref(), Some("UNICODE"));
    assert_eq!(f.datestyle.as_deref(), Some("ISO"));
    assert_eq!(f.timezone.as_deref(), Some("UTC"));
    let s = db("sized");
    assert_eq!(s.host, "/var/run/postgresql");
    assert_eq!(
        (s.pool_size, s.min_pool_size, s.reserve_pool),
        (Some(50), Some(5), Some(10))
    );
    assert_eq!(s.max_db_connections, Some(70));
    assert_eq!(s.pool_mode, Some(PoolMode::Statement));
    assert_eq!(s.auth_user.as_deref(), Some("lookup"));
    assert_eq!((db("alias").reserve_pool, db("alias").pool_size), (Some(3), None));
    assert_eq!((db("v6").host.as_str(), db("v6").port), ("2001:db8::1", 6000));
    assert_eq!(db("odd name").host, "h");
    assert_eq!((db("*").host.as_str(), db("*").port), ("fallback", 5433));
    // The fallback serves names not listed.
    assert_eq!(c.database("other").map(|d| d.host.as_str()), Some("fallback"));
}

#[test]
fn database_hosts_follow_unix_socket_dir() {
    let c = load("[databases]\nfoodb =\n[pgbouncer]\nunix_socket_dir = /run/pg\n");
    assert_eq!(c.databases["foodb"].host, "/run/pg");
    assert_eq!(c.pooler.unix_socket_dir, "/run/pg");
    let c = load("[databases]\nfoodb =\n[pgbouncer]\nunix_socket_dir =\n");
    assert_eq!(c.databases["foodb"].host, "127.0.0.1");
    assert!(c
        .notes
        .iter()
        .any(|n| n.contains("databases.foodb") && n.contains("127.0.0.1")));
    // A host list: the first host, with a note.
    let c = load("[databases]\nd = host=a,b,c\n[pgbouncer]\n");
    assert_eq!(c.databases["d"].host, "a");
    assert!(c
        .notes
        .iter()
        .any(|n| n.contains("databases.d.host") && n.contains("first host")));
}

#[test]
fn bad_connection_strings_are_refused_with_their_line() {
    let cases = [
        ("d = host=h port=0", "databases.d.port", "invalid port"),
        ("d = port=70000", "databases.d.port", "invalid port"),
        ("d = port=5432x", "databases.d.port", "invalid port"),
        (
            "d = host=h frobnicate=1",
            "databases.d.frobnicate",
            "unrecognized connection parameter",
        ),
        ("d = host=h pool_mode=sesion", "databases.d.pool_mode", "sesion"),
        ("d = host=h pool_size=lots", "databases.d.pool_size", "whole number"),
        ("d = host='h", "databases.d", "missing closing quote"),
        ("d = host=h port", "databases.d", "syntax error"),
        ("d = host=@sock", "databases.d.host", "abstract"),
        ("d = host=a,,b", "databases.d.host", "empty host"),
        ("pgbouncer = host=h", "databases.pgbouncer", "reserved"),
        (
            "d = load_balance_hosts=sometimes",
            "databases.d.load_balance_hosts",
            "round-robin",
        ),
        // Checked by the TOML stage, reported at the ini line all the same.
        ("d = host=h pool_size=0", "databases.d.pool_size", "at least 1"),
    ];
    for (line, key, needle) in cases {
        let e = err(&format!("; comment\n[databases]\n{line}\n[pgbouncer]\n"));
        assert_eq!((e.origin.as_str(), e.line), ("pgbouncer.ini", Some(3)), "{line}: {e}");
        assert_eq!(e.key, key, "{line}: {e}");
        assert!(e.message.contains(needle), "{line}: {e}");
    }
    // A malformed SCRAM secret as a server password: refused at its line, never echoed.
    let secret = "SCRAM-SHA-256$4096:c2FsdA==$U2VjcmV0U3RvcmVkS2V5";
    let e = err(&format!("[pgbouncer]\n[databases]\nd = host=h password={secret}\n"));
    assert_eq!((e.line, e.key.as_str()), (Some(3), "databases.d.password"), "{e}");
    assert!(!e.to_string().contains("U2VjcmV0U3RvcmVkS2V5"), "{e}");
}

#[test]
fn users_map_and_report() {
    let c = load(
        "[users]\nu1 = pool_mode=session max_user_connections=5\nu2 = pool_size=3 query_timeout=10\n[pgbouncer]\n",
    );
    assert_eq!(c.users["u1"].pool_mode, Some(PoolMode::Session));
    assert_eq!(c.users["u1"].max_user_connections, Some(5));
    assert_eq!(c.users["u2"].pool_mode, None);
    let joined = c.notes.join("\n");
    assert!(
        joined.contains("pgbouncer.ini:3: users.u2.pool_size: not per user"),
        "{joined}"
    );
    assert!(joined.contains("pgbouncer.ini:3: users.u2.query_timeout"), "{joined}");
    let e = err("[users]\nu = colour=blue\n[pgbouncer]\n");
    assert_eq!((e.line, e.key.as_str()), (Some(2), "users.u.colour"), "{e}");
    assert!(e.message.contains("unrecognized user parameter"), "{e}");
    let e = err("[users]\nu = max_user_connections=many\n[pgbouncer]\n");
    assert_eq!(e.line, Some(2), "{e}");
}

#[test]
fn every_mapped_pgbouncer_key() {
    let c = pgb("listen_addr = 10.0.0.5\n\
         listen_port = 7432\n\
         unix_socket_dir = /var/run/pgbouncer\n\
         unix_socket_mode = 0700\n\
         pool_mode = Statement\n\
         max_client_conn = 500\n\
         default_pool_size = 30\n\
         min_pool_size = 2\n\
         reserve_pool_size = 4\n\
         reserve_pool_timeout = 2.5\n\
         max_db_connections = 40\n\
         max_user_connections = 41\n\
         stats_period = 30\n\
         max_prepared_statements = 0\n\
         auth_type = hba\n\
         auth_hba_file = /etc/pgbouncer/hba.conf\n\
         auth_file = /etc/pgbouncer/userlist.txt\n\
         auth_user = lookup\n\
         auth_query = SELECT p_user, p_password FROM public.lookup($1)\n\
         auth_dbname = authdb\n\
         admin_users = admin, root ,\n\
         stats_users = stats\n\
         server_reset_query = DEALLOCATE ALL\n\
         server_check_delay = 10\n\
         server_check_query = <empty>\n\
         server_lifetime = 1800\n\
         server_idle_timeout = 300\n\
         server_connect_timeout = 5\n\
         server_login_retry = 3\n\
         client_login_timeout = 20\n\
         query_timeout = 100\n\
         query_wait_timeout = 60\n\
         client_idle_timeout = 900\n\
         idle_transaction_timeout = 0.5\n\
         client_tls_sslmode = require\n\
         client_tls_key_file = /etc/pgbouncer/server.key\n\
         client_tls_cert_file = /etc/pgbouncer/server.crt\n\
         server_tls_sslmode = verify-full\n\
         server_tls_ca_file = /etc/pgbouncer/root.crt\n\
         max_packet_size = 0x100000\n\
         tcp_keepalive = 0\n\
         so_reuseport = 1\n\
         tcp_keepcnt = 5\n\
         tcp_keepidle = 60\n\
         tcp_keepintvl = 10\n\
         tcp_user_timeout = 2500\n");
    let p = &c.pooler;
    assert_eq!((p.listen_addr.as_str(), p.listen_port), ("10.0.0.5", 7432));
    assert_eq!(
        (p.unix_socket_dir.as_str(), p.unix_socket_mode),
        ("/var/run/pgbouncer", 0o700)
    );
    assert_eq!(p.pool_mode, PoolMode::Statement);
    assert_eq!((p.max_client_conn, p.default_pool_size, p.min_pool_size), (500, 30, 2));
    assert_eq!(p.reserve_pool_size, 4);
    assert_eq!(p.reserve_pool_timeout, Duration::from_millis(2500));
    assert_eq!((p.max_db_connections, p.max_user_connections), (40, 41));
    assert_eq!(p.stats_period, Duration::from_secs(30));
    assert_eq!(p.max_prepared_statements, 0);
    assert_eq!(p.auth_type, AuthType::Hba);
    assert_eq!(p.auth_hba_file, "/etc/pgbouncer/hba.conf");
    assert_eq!(p.auth_file, "/etc/pgbouncer/userlist.txt");
    assert_eq!(p.auth_user, "lookup");
    assert_eq!(p.auth_query, "SELECT p_user, p_password FROM public.lookup($1)");
    assert_eq!(p.auth_dbname, "authdb");
    assert_eq!(p.admin_users, vec!["admin", "root"]);
    assert_eq!(p.stats_users, vec!["stats"]);
    assert_eq!(p.server_reset_query, "DEALLOCATE ALL");
    assert_eq!(p.server_check_delay, Duration::from_secs(10));
    assert_eq!(p.server_check_query, "");
    assert_eq!(p.server_lifetime, Duration::from_secs(1800));
    assert_eq!(p.server_idle_timeout, Duration::from_secs(300));
    assert_eq!(p.server_connect_timeout, Duration::from_secs(5));
    assert_eq!(p.server_login_retry, Duration::from_secs(3));
    assert_eq!(p.client_login_timeout, Duration::from_secs(20));
    assert_eq!(p.query_timeout, Duration::from_secs(100));
    assert_eq!(p.query_wait_timeout, Duration::from_secs(60));
    assert_eq!(p.client_idle_timeout, Duration::from_secs(900));
    assert_eq!(p.idle_transaction_timeout, Duration::from_millis(500));
    assert_eq!(p.tls_mode, TlsMode::Require);
    assert_eq!(p.tls_key_file, "/etc/pgbouncer/server.key");
    assert_eq!(p.tls_cert_file, "/etc/pgbouncer/server.crt");
    assert_eq!(p.server_tls_mode, ServerTlsMode::VerifyFull);
    assert_eq!(p.server_tls_ca_file, "/etc/pgbouncer/root.crt");
    assert_eq!(p.max_message_size, 1 << 20);
    assert!(!p.tcp_keepalive);
    assert!(p.so_reuseport);
    assert_eq!(p.tcp_keepcnt, 5);
    assert_eq!(p.tcp_keepidle, Duration::from_secs(60));
    assert_eq!(p.tcp_keepintvl, Duration::from_secs(10));
    assert_eq!(p.tcp_user_timeout, 2500);
    assert!(c.notes.is_empty(), "{:?}", c.notes);
}

#[test]
fn pgbouncer_defaults_where_pgmux_differs() {
    let c = pgb("listen_addr = 127.0.0.1");
    let p = &c.pooler;
    assert_eq!(p.pool_mode, PoolMode::Session);
    assert!(!p.so_reuseport, "off unless set, as in PgBouncer");
    assert_eq!(p.max_client_conn, 100);
    assert_eq!(p.auth_type, AuthType::Md5);
    assert_eq!(p.server_tls_mode, ServerTlsMode::Prefer);
    assert_eq!(p.unix_socket_dir, "/tmp");
    // Otherwise pgmux's defaults, which are PgBouncer's.
    let d = crate::config::PoolerConfig::default();
    assert_eq!(p.default_pool_size, d.default_pool_size);
    assert_eq!(p.server_lifetime, d.server_lifetime);
    assert!(c.notes.is_empty(), "{:?}", c.notes);
    // No listen_addr: PgBouncer would take Unix sockets only; said so.
    let n = notes("[pgbouncer]\n");
    assert!(
        n.iter().any(|n| n.contains("listen_addr") && n.contains("127.0.0.1")),
        "{n:?}"
    );
}

#[test]
fn listen_addr_star_and_lists_carry_over() {
    for (line, want) in [
        ("listen_addr = *", "*"),
        ("listen_addr = 127.0.0.1, 10.1.1.1", "127.0.0.1,10.1.1.1"),
        ("listen_addr = localhost", "127.0.0.1"),
    ] {
        let c = pgb(line);
        assert_eq!(c.pooler.listen_addr, want, "{line}");
        assert!(
            !c.notes.iter().any(|n| n.contains("listen_addr")),
            "{line}: {:?}",
            c.notes
        );
    }
}

#[test]
fn values_mapped_with_a_note() {
    type Check = fn(&Config) -> bool;
    let cases: &[(&str, Check)] = &[
        ("auth_type = any", |c| c.pooler.auth_type == AuthType::Trust),
        ("auth_type = trust", |c| c.pooler.auth_type == AuthType::Trust),
        ("auth_type = plain", |c| c.pooler.auth_type == AuthType::Md5),
        ("auth_type = pam", |c| c.pooler.auth_type == AuthType::ScramSha256),
        ("auth_type = ldap", |c| c.pooler.auth_type == AuthType::ScramSha256),
        ("auth_type = cert", |c| c.pooler.auth_type == AuthType::ScramSha256),
        ("server_tls_sslmode = allow", |c| {
            c.pooler.server_tls_mode == ServerTlsMode::Prefer
        }),
        ("server_tls_sslmode = verify-ca\nserver_tls_ca_file = /ca.pem", |c| {
            c.pooler.server_tls_mode == ServerTlsMode::VerifyFull
        }),
        (
            "client_tls_sslmode = verify-full\nclient_tls_key_file = k\nclient_tls_cert_file = c",
            |c| c.pooler.tls_mode == TlsMode::Require,
        ),
        ("unix_socket_dir = @pgbouncer", |c| c.pooler.unix_socket_dir.is_empty()),
    ];
    for (lines, check) in cases {
        let c = pgb(&format!("listen_addr = 127.0.0.1\n{lines}"));
        assert!(check(&c), "{lines}: {:?}", c.pooler);
        let key = lines.split(' ').next().unwrap_or_default();
        assert!(
            c.notes
                .iter()
                .any(|n| n.starts_with(&format!("pgbouncer.ini:3: {key}: "))),
            "{lines}: {:?}",
            c.notes
        );
    }
    let n = notes("[pgbouncer]\nauth_type = pam\n");
    assert!(
        n.iter().any(|n| n == "pgbouncer.ini:2: auth_type: pam: not supported; pgmux uses scram-sha-256 with auth_file or auth_query, so clients need a password"),
        "{n:?}"
    );
}

#[test]
fn every_pgbouncer_key_is_known_and_unmapped_ones_are_reported() {
    // The keys of PgBouncer's [pgbouncer] section (doc/config.md, 1.18 to 1.24).
    const PGBOUNCER_KEYS: &str = "logfile pidfile listen_addr listen_port unix_socket_dir unix_socket_mode \
        unix_socket_group user pool_mode max_client_conn default_pool_size min_pool_size reserve_pool_size \
        reserve_pool_timeout max_db_connections max_db_client_connections max_user_connections \
        max_user_client_connections server_round_robin track_extra_parameters ignore_startup_parameters \
        peer_id disable_pqexec application_name_add_host conffile service_name job_name stats_period \
        max_prepared_statements scram_iterations auth_type auth_hba_file auth_ident_file auth_file auth_user \
        auth_query auth_dbname auth_ldap_options syslog syslog_ident syslog_facility log_connections \
        log_disconnections log_pooler_errors log_stats verbose admin_users stats_users server_reset_query \
        server_reset_query_always server_check_delay server_check_query server_fast_close server_lifetime \
        server_idle_timeout server_connect_timeout server_login_retry client_login_timeout autodb_idle_timeout \
        pool_idle_timeout dns_max_ttl dns_nxdomain_ttl dns_zone_check_period resolv_conf query_wait_notify \
        login_notify_message client_tls_sslmode client_tls_key_file client_tls_cert_file client_tls_ca_file \
        client_tls_protocols client_tls_ciphers client_tls13_ciphers client_tls_ecdhcurve client_tls_dheparams \
        server_tls_sslmode server_tls_ca_file server_tls_key_file server_tls_cert_file server_tls_protocols \
        server_tls_ciphers server_tls13_ciphers query_timeout query_wait_timeout cancel_wait_timeout \
        client_idle_timeout idle_transaction_timeout transaction_timeout suspend_timeout pkt_buf max_packet_size \
        listen_backlog sbuf_loopcnt so_reuseport tcp_defer_accept tcp_socket_buffer tcp_keepalive tcp_keepcnt \
        tcp_keepidle tcp_keepintvl tcp_user_timeout";
    let ours = keys::all_keys();
    for key in PGBOUNCER_KEYS.split_whitespace() {
        assert!(ours.contains(&key), "{key} is not handled");
    }
    assert_eq!(
        ours.len(),
        PGBOUNCER_KEYS.split_whitespace().count(),
        "a key is listed twice"
    );
    // Each key pgmux does not act on gives a note naming it, with its line, and nothing else.
    for key in ours.iter().filter(|k| !keys::MAPPED.contains(k)) {
        let c = conv(&format!("[pgbouncer]\nlisten_addr = 127.0.0.1\n{key} = 1\n"));
        let mut c = match c.and_then(|c| c.config()) {
            Ok(c) => c,
            // Mapped keys whose value "1" is invalid in pgmux (e.g. a query) are not notes.
            Err(e) => panic!("{key}: {e}"),
        };
        c.notes.retain(|n| !is_md5_note(n));
        let noted = c
            .notes
            .iter()
            .any(|n| n.starts_with(&format!("pgbouncer.ini:3: {key}: ")));
        let mapped = c.notes.is_empty();
        assert!(noted || mapped, "{key}: {:?}", c.notes);
    }
}

#[test]
fn unknown_keys_sections_and_syntax_errors_name_their_line() {
    let cases = [
        ("[pgbouncer]\n\nlisten_prot = 6432\n", 3, "unknown parameter"),
        ("[pgbouncer]\nListen_Port = 6432\n", 2, "unknown parameter"),
        ("[pgbouncer]\n[PgBouncer]\n", 2, "case-sensitive"),
        ("[pgbouncer]\n[sections]\n", 2, "invalid section"),
        ("[pooler]\nlisten_port = 6432\n", 1, "looks like a pooler.toml"),
        ("listen_port = 6432\n[pgbouncer]\n", 1, "before any section"),
        ("[pgbouncer]\n[databases\nd = host=h\n", 2, "missing \"]\""),
        ("[pgbouncer]\nlisten port = 6432\n", 2, "expected \"=\""),
        ("[pgbouncer]\n\"my db\" = x\n", 2, "single quotes"),
        ("[pgbouncer]\nlisten_port = 6432 ; the port\n", 2, "own"),
        ("[pgbouncer]\nlisten_port = 0\n", 2, "not a valid port"),
        ("[pgbouncer]\nmax_client_conn = -5\n", 2, "negative"),
        ("[pgbouncer]\nmax_client_conn = 08\n", 2, "integer"),
        ("[pgbouncer]\nserver_lifetime = -1\n", 2, "negative"),
        ("[pgbouncer]\nserver_lifetime = 1h\n", 2, "seconds"),
        ("[pgbouncer]\npool_mode = pooled\n", 2, "session"),
        ("[pgbouncer]\nlisten_addr = db.example.com\n", 2, "IP address"),
        ("[pgbouncer]\nstats_period = 0\n", 2, "at least 1"),
        ("[pgbouncer]\nauth_dbname = pgbouncer\n", 2, "reserved"),
        // Found by the TOML stage: reported at the ini key.
        ("[pgbouncer]\n\n\nmax_packet_size = 100\n", 4, "at least 1024"),
        ("[pgbouncer]\nclient_tls_sslmode = require\n", 2, "tls_cert_file"),
        (
            "[pgbouncer]\nserver_tls_sslmode = verify-full\n",
            2,
            "server_tls_ca_file",
        ),
    ];
    for (text, line, needle) in cases {
        let e = err(text);
        assert_eq!(
            (e.origin.as_str(), e.line),
            ("pgbouncer.ini", Some(line)),
            "{text}: {e}"
        );
        assert!(e.to_string().contains(needle), "{text}: {e}");
        assert!(e.to_string().starts_with(&format!("pgbouncer.ini:{line}: ")), "{e}");
    }
    let e = err("[databases]\nd = host=h\n");
    assert_eq!((e.line, e.key.as_str()), (None, ""), "{e}");
    assert!(e.message.contains("[pgbouncer]"), "{e}");
    // The key is the ini's name, not pgmux's.
    let e = err("[pgbouncer]\nmax_packet_size = 100\n");
    assert_eq!(e.key, "max_packet_size");
}

#[test]
fn reader_rules() {
    // Comments with ";" or "#", leading blanks, blank lines, CRLF, sections repeated, keys set
    // twice (the last wins), enum values in any case, strtol's hex and octal.
    let c = load(
        "# top\r\n  ; indented comment\r\n\r\n[pgbouncer]\r\n   listen_port=7000\r\n\
         pool_mode = TRANSACTION\r\n[databases]\r\nd = host=a\r\nd = host=b\r\n[pgbouncer]\r\n\
         listen_port = 0x1B59\r\nunix_socket_mode = 0755\r\nlisten_addr = 127.0.0.1\r\n",
    );
    assert_eq!(c.pooler.listen_port, 7001);
    assert_eq!(c.pooler.unix_socket_mode, 0o755);
    assert_eq!(c.pooler.pool_mode, PoolMode::Transaction);
    assert_eq!(c.databases["d"].host, "b");
    // "#" and ";" mean nothing inside a value.
    let c = pgb("listen_addr = 127.0.0.1\nserver_reset_query = SELECT 1; -- done #1");
    assert_eq!(c.pooler.server_reset_query, "SELECT 1; -- done #1");
    // A section header with text after it on the same line: PgBouncer reads on.
    let c = load("[pgbouncer] listen_port = 7002\nlisten_addr = 127.0.0.1\n");
    assert_eq!(c.pooler.listen_port, 7002);
    // A quoted name may hold a line break; the TOML comments stay comments.
    let c = load("[databases]\n'two\nlines' = host=h port=1 pool_size=-1 max_db_client_connections=5\n[pgbouncer]\n");
    assert_eq!(c.databases["two\nlines"].port, 1);
    assert_eq!(c.notes.len(), 2, "{:?}", c.notes);
    let c = load("[databases]\n'a\"b\\c\td' = host=h\n[pgbouncer]\nlisten_addr = 127.0.0.1\n");
    assert_eq!(c.databases["a\"b\\c\td"].host, "h");
}

#[test]
fn include_reads_files_relative_to_the_working_directory() {
    let dir = Dir::new("include");
    std::fs::create_dir_all(dir.0.join("conf.d")).unwrap();
    dir.write("conf.d/dbs.ini", "[databases]\nd = host=h port=6000\n");
    dir.write(
        "conf.d/more.ini",
        "%include conf.d/dbs.ini\n[pgbouncer]\nlisten_port = 7100\n",
    );
    let main = dir.write(
        "pgbouncer.ini",
        "[pgbouncer]\nlisten_addr = 127.0.0.1\n%include conf.d/more.ini   \nmax_client_conn = 7\n",
    );
    let c = convert(&std::fs::read_to_string(&main).unwrap(), &main, &dir.0)
        .and_then(|c| c.config())
        .unwrap();
    assert_eq!(c.pooler.listen_port, 7100);
    assert_eq!(c.pooler.max_client_conn, 7);
    assert_eq!(c.databases["d"].port, 6000);
    // An error inside an included file names that file and its line.
    dir.write("conf.d/dbs.ini", "[databases]\n\nd = host=h port=none\n");
    let e = convert(&std::fs::read_to_string(&main).unwrap(), &main, &dir.0).unwrap_err();
    assert_eq!((e.origin.as_str(), e.line), ("conf.d/dbs.ini", Some(3)), "{e}");
    // A missing file: the including line, and a hint when the name is relative to the file.
    let elsewhere = Dir::new("cwd");
    let e = convert(&std::fs::read_to_string(&main).unwrap(), &main, &elsewhere.0).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(3), "%include"), "{e}");
    assert!(
        e.message.contains("conf.d/more.ini") && e.message.contains("working directory"),
        "{e}"
    );
    // An absolute name works from anywhere.
    let abs = dir.write(
        "abs.ini",
        &format!("%include {}\n", dir.0.join("conf.d/more.ini").display()),
    );
    let e = convert(&std::fs::read_to_string(&abs).unwrap(), &abs, &elsewhere.0).unwrap_err();
    assert!(e.message.contains("conf.d/dbs.ini"), "the nested relative include: {e}");
}

#[test]
fn include_loops_and_depth_are_refused() {
    let dir = Dir::new("loop");
    dir.write("a.ini", "[pgbouncer]\n%include b.ini\n");
    dir.write("b.ini", "\n%include a.ini\n");
    let a = dir.0.join("a.ini");
    let e = convert(&std::fs::read_to_string(&a).unwrap(), &a, &dir.0).unwrap_err();
    assert_eq!((e.origin.as_str(), e.line), ("b.ini", Some(2)), "{e}");
    assert!(e.message.contains("include loop"), "{e}");
    // A file including itself.
    dir.write("self.ini", "[pgbouncer]\n%include self.ini\n");
    let s = dir.0.join("self.ini");
    let e = convert(&std::fs::read_to_string(&s).unwrap(), &s, &dir.0).unwrap_err();
    assert!(e.message.contains("include loop"), "{e}");
    // A chain deeper than PgBouncer's 10 levels, without a loop.
    for n in 0..12 {
        dir.write(&format!("n{n}.ini"), &format!("%include n{}.ini\n", n + 1));
    }
    dir.write("n12.ini", "[pgbouncer]\n");
    let top = dir.0.join("n0.ini");
    let e = convert(&std::fs::read_to_string(&top).unwrap(), &top, &dir.0).unwrap_err();
    assert!(e.message.contains("deeper than 10"), "{e}");
    // Ten levels are fine.
    let top = dir.0.join("n2.ini");
    assert!(convert(&std::fs::read_to_string(&top).unwrap(), &top, &dir.0).is_ok());
    let e = conv("[pgbouncer]\n%include   \n");
    assert!(e.is_err());
}

#[test]
fn the_example_converts_and_parses() {
    let c = conv(EXAMPLE).unwrap();
    let config = c.config().unwrap();
    assert!(!config.notes.iter().any(|n| is_md5_note(n)), "{:?}", config.notes);
    let p = &config.pooler;
    assert_eq!((p.listen_addr.as_str(), p.listen_port), ("127.0.0.1", 6432));
    assert_eq!(p.auth_type, AuthType::Md5);
    assert_eq!(p.auth_file, "/etc/pgbouncer/userlist.txt");
    assert_eq!(p.pool_mode, PoolMode::Session);
    assert!(config.databases.is_empty() && config.users.is_empty());
    let n = &config.notes;
    assert_eq!(n.len(), 2, "{n:?}");
    assert!(
        n[0].starts_with("pgbouncer.ini:19: logfile: pgmux logs to stderr"),
        "{n:?}"
    );
    assert!(n[1].starts_with("pgbouncer.ini:20: pidfile: "), "{n:?}");
    // The TOML is a pooler.toml of its own, notes as comments.
    let again = Config::parse(&c.toml, "converted.toml").unwrap();
    assert_eq!(again.pooler, config.pooler);
    assert!(c.toml.contains("#   pgbouncer.ini:19: logfile:"), "{}", c.toml);
    // Uncommenting every setting of the example still converts.
    let on: String = EXAMPLE
        .lines()
        .map(|l| match l.strip_prefix(';') {
            Some(rest) if !rest.starts_with(';') && !rest.starts_with(' ') && rest.contains('=') => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let on = on.replace("%include /etc/pgbouncer/pgbouncer-other.ini", "");
    let config = load(&on);
    assert_eq!(config.databases.len(), 3);
    assert_eq!(config.databases["reportdb"].port, 5433);
    assert_eq!(config.users["someuser"].pool_mode, Some(PoolMode::Session));
    assert_eq!(config.pooler.admin_users, vec!["user2", "someadmin", "otheradmin"]);
}

#[test]
fn load_reads_ini_by_name_or_content() {
    let dir = Dir::new("load");
    let ini = "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = 7200\nlogfile = x.log\n";
    for name in ["pgbouncer.ini", "pgbouncer.conf", "PGBOUNCER.INI"] {
        let path = dir.write(name, ini);
        let mut c = Config::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.pooler.listen_port, 7200);
        c.notes.retain(|n| !is_md5_note(n));
        assert_eq!(
            c.notes,
            vec![format!(
                "{}:4: logfile: pgmux logs to stderr; redirect it or use journald",
                path.display()
            )]
        );
    }
    let path = dir.write("bad.conf", "; x\n[pgbouncer]\nlisten_port = many\n");
    let e = Config::load(&path).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}:3: listen_port: expected an integer, found \"many\"", path.display())
    );
    // pooler.toml stays TOML, without notes.
    let path = dir.write("pooler.toml", "[pooler]\nlisten_port = 7300\n");
    let c = Config::load(&path).unwrap();
    assert_eq!((c.pooler.listen_port, c.notes.len()), (7300, 0));
    // auth_file: read as for pooler.toml (relative to the file, noted); its errors at the ini line.
    dir.write("userlist.txt", "\"app\" \"secret\"\n");
    let path = dir.write(
        "auth.ini",
        "[pgbouncer]\nlisten_addr = 127.0.0.1\nauth_file = userlist.txt\n",
    );
    let c = Config::load(&path).unwrap();
    assert_eq!(c.users["app"].password, Some(Secret::Plain("secret".into())));
    assert!(
        c.notes.iter().any(|n| n.contains(":3: auth_file: a relative path")),
        "{:?}",
        c.notes
    );
    let path = dir.write("noauth.ini", "[pgbouncer]\n\nauth_file = missing.txt\n");
    let e = Config::load(&path).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(3), "auth_file"), "{e}");
    let path = dir.write("hba.ini", "[pgbouncer]\nauth_type = hba\n");
    let e = Config::load(&path).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(2), "auth_type"), "{e}");
    assert!(looks_like_ini(Path::new("x"), "  %include\tother.ini\n"));
    assert!(!looks_like_ini(Path::new("x.toml"), "[pooler]\n# [pgbouncer]\n"));
}

#[test]
fn pgbouncer_meanings_pgmux_spells_differently() {
    // min_pool_size above the pool size: PgBouncer caps it, so does the conversion.
    let c = load(
        "[databases]\nd = host=h min_pool_size=30\ne = host=h pool_size=3\nf = host=h\n\
         [pgbouncer]\nlisten_addr = 127.0.0.1\ndefault_pool_size = 5\nmin_pool_size = 10\n",
    );
    assert_eq!(c.pooler.min_pool_size, 5);
    assert_eq!(c.databases["d"].min_pool_size, Some(5));
    assert_eq!(c.databases["e"].min_pool_size, Some(3));
    assert_eq!(c.databases["f"].min_pool_size, None);
    let joined = c.notes.join("\n");
    for needle in [
        "pgbouncer.ini:2: databases.d.min_pool_size: 30 is larger than the pool size 5",
        "pgbouncer.ini:3: databases.e.min_pool_size: 5 is larger than the pool size 3",
        "pgbouncer.ini:8: min_pool_size: 10 is larger than the pool size 5",
    ] {
        assert!(joined.contains(needle), "{needle}:\n{joined}");
    }
    // server_lifetime = 0: one use per connection in PgBouncer, never expiring in pgmux.
    let c = pgb("listen_addr = 127.0.0.1\nserver_lifetime = 0");
    assert_eq!(c.pooler.server_lifetime, Duration::from_micros(1));
    assert!(
        c.notes.iter().any(|n| n.contains("server_lifetime: 0 closes")),
        "{:?}",
        c.notes
    );
    // reserve_pool_timeout = 0: no reserve in PgBouncer, an immediate one in pgmux.
    let c = load(
        "[databases]\nd = host=h reserve_pool=5\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
         reserve_pool_size = 3\nreserve_pool_timeout = 0\n",
    );
    assert_eq!((c.pooler.reserve_pool_size, c.databases["d"].reserve_pool), (0, None));
    assert!(
        c.notes
            .iter()
            .any(|n| n.starts_with("pgbouncer.ini:6: reserve_pool_timeout: ")),
        "{:?}",
        c.notes
    );
    // track_extra_parameters: fine for the parameters pgmux follows, said otherwise.
    let n = notes("[pgbouncer]\nlisten_addr = 127.0.0.1\ntrack_extra_parameters = IntervalStyle\n");
    assert!(n.len() == 1 && n[0].contains("nothing to do"), "{n:?}");
    let n = notes("[pgbouncer]\nlisten_addr = 127.0.0.1\ntrack_extra_parameters = IntervalStyle, search_path\n");
    assert!(n.len() == 1 && n[0].ends_with("not of search_path"), "{n:?}");
}

#[test]
fn md5_needs_no_note() {
    // pgmux's md5, like PgBouncer's, runs SCRAM for a user whose secret is a SCRAM one.
    for text in [
        "[pgbouncer]\nlisten_addr = 127.0.0.1\nauth_type = MD5\n",
        "\n[pgbouncer]\nlisten_addr = 127.0.0.1\n",
    ] {
        let c = conv(text).and_then(|c| c.config()).unwrap();
        assert!(c.notes.is_empty(), "{:?}", c.notes);
        assert_eq!(c.pooler.auth_type, AuthType::Md5);
    }
}

/// Found by fuzz/fuzz_targets/config_ini.rs: a note quotes the ini's value, which may hold
/// control characters (here NULs in a host list); TOML allows none in a comment (bar tab),
/// so the converted file did not parse.
#[test]
fn notes_quote_no_control_characters() {
    let text = "[databases]\nbench = host=/tmp\0\x01,other\n[pgbouncer]\nlisten_addr = 127.0.0.1\n";
    let c = conv(text).unwrap();
    assert!(c.notes.iter().any(|n| n.contains("first host only")), "{:?}", c.notes);
    if let Err(e) = c.toml.parse::<toml::Table>() {
        panic!("{e}\n{}", c.toml);
    }
}

#[test]
fn peers_and_peer_id_are_mapped() {
    let c = load(
        "[pgbouncer]\nlisten_addr = 127.0.0.1\npeer_id = 2\n[peers]\n1 = host=10.0.0.1\n2 = host=/tmp port=6433 pool_size=4\n3 = host=h3 pool_size=-1\n",
    );
    assert!(c.notes.is_empty(), "{:?}", c.notes);
    assert_eq!(c.pooler.peer_id, 2);
    assert_eq!(c.peers.len(), 3);
    assert_eq!(
        (c.peers[&1].host.as_str(), c.peers[&1].port, c.peers[&1].pool_size),
        ("10.0.0.1", 6432, None)
    );
    assert_eq!(
        (c.peers[&2].host.as_str(), c.peers[&2].port, c.peers[&2].pool_size),
        ("/tmp", 6433, Some(4))
    );
    assert_eq!(c.peers[&3].pool_size, None, "-1 is PgBouncer's unset");
    let cases = [
        (
            "[pgbouncer]\n[peers]\n0 = host=h\n",
            "pgbouncer.ini:3: peers.0: ids of peers must be a number",
        ),
        (
            "[pgbouncer]\n[peers]\nab = host=h\n",
            "pgbouncer.ini:3: peers.ab: ids of peers must be a number",
        ),
        (
            "[pgbouncer]\n[peers]\n1 = port=5\n",
            "pgbouncer.ini:3: peers.1: host was not provided for peer 1",
        ),
        (
            "[pgbouncer]\n[peers]\n1 = host=h dbname=x\n",
            "pgbouncer.ini:3: peers.1.dbname: unrecognized connection parameter",
        ),
        (
            "[pgbouncer]\n[peers]\n1 = host=h port=x\n",
            "pgbouncer.ini:3: peers.1.port: invalid port",
        ),
        (
            "[pgbouncer]\n[peers]\n1 = host=h pool_size=0\n",
            "pgbouncer.ini:3: peers.1.pool_size: 0 is too small",
        ),
        (
            "[pgbouncer]\npeer_id = 70000\n",
            "pgbouncer.ini:2: peer_id: 70000 is too large",
        ),
    ];
    for (text, want) in cases {
        let e = match conv(text).and_then(|c| c.config()) {
            Ok(_) => panic!("no error for {text:?}"),
            Err(e) => e.to_string(),
        };
        assert!(e.starts_with(want), "{text:?}\n gave {e:?}\n want {want:?}");
    }
}
