//! The `[pgbouncer]` section: every key of PgBouncer 1.18 to 1.24, mapped to its pgmux key,
//! or turned into a note saying what pgmux does instead.

use super::values::{flag, int, list, lookup, seconds, toml_seconds, toml_str, toml_strs, uint};
use super::{Out, Src};
use crate::config::ConfigError;

/// Keys whose value is seconds in both, under the same name.
const SAME_SECONDS: &[&str] = &[
    "reserve_pool_timeout",
    "server_check_delay",
    "server_lifetime",
    "server_idle_timeout",
    "server_connect_timeout",
    "server_login_retry",
    "client_login_timeout",
    "query_timeout",
    "query_wait_timeout",
    "client_idle_timeout",
    "idle_transaction_timeout",
];

/// Integer keys under the same name.
const SAME_INTEGERS: &[&str] = &[
    "max_client_conn",
    "default_pool_size",
    "min_pool_size",
    "reserve_pool_size",
    "max_db_connections",
    "max_user_connections",
    "max_prepared_statements",
    "tcp_keepcnt",
    "tcp_user_timeout",
];

/// String keys under the same name.
const SAME_STRINGS: &[&str] = &[
    "auth_file",
    "auth_hba_file",
    "auth_user",
    "server_reset_query",
    "server_tls_ca_file",
];

/// Keys pgmux does not act on, with what to do instead. Every other key of PgBouncer's is
/// mapped in `pgbouncer`.
const NOT_ACTED_ON: &[(&str, &str)] = &[
    ("logfile", "pgmux logs to stderr; redirect it or use journald"),
    (
        "pidfile",
        "pgmux does not daemonize or write a PID file; run it under systemd or another supervisor",
    ),
    (
        "user",
        "pgmux does not switch users; start it as that user (systemd User=)",
    ),
    (
        "syslog",
        "pgmux logs to stderr; journald or your supervisor forwards it to syslog",
    ),
    (
        "syslog_ident",
        "pgmux logs to stderr; journald or your supervisor forwards it to syslog",
    ),
    (
        "syslog_facility",
        "pgmux logs to stderr; journald or your supervisor forwards it to syslog",
    ),
    (
        "log_connections",
        "pgmux logs refused logins at info; its log level is set with RUST_LOG",
    ),
    (
        "log_disconnections",
        "pgmux's log level is set with RUST_LOG; SHOW CLIENTS lists the clients connected",
    ),
    ("log_pooler_errors", "pgmux's log level is set with RUST_LOG"),
    (
        "log_stats",
        "pgmux does not write periodic stats to its log; read SHOW STATS or /metrics",
    ),
    ("verbose", "set RUST_LOG=debug (or trace) instead"),
    (
        "unix_socket_group",
        "not supported; pgmux's socket keeps the group of its process (unix_socket_mode sets the permissions)",
    ),
    (
        "max_db_client_connections",
        "not yet; max_client_conn limits clients for all databases together",
    ),
    (
        "max_user_client_connections",
        "not yet; max_client_conn limits clients for all users together",
    ),
    (
        "server_round_robin",
        "not yet: pgmux reuses the most recently used server connection (PgBouncer's default)",
    ),
    (
        "ignore_startup_parameters",
        "nothing to do: pgmux passes every startup parameter through to the server",
    ),
    (
        "disable_pqexec",
        "not supported: pgmux accepts the simple query protocol",
    ),
    (
        "application_name_add_host",
        "not yet: application_name is passed through as the client sets it",
    ),
    (
        "conffile",
        "pgmux re-reads the file given with --config on SIGHUP; this key is ignored",
    ),
    ("service_name", "Windows service name: not used by pgmux"),
    ("job_name", "Windows service name: not used by pgmux"),
    (
        "scram_iterations",
        "not configurable: pgmux uses 4096 iterations for secrets it derives from plain passwords",
    ),
    (
        "auth_ident_file",
        "not supported: ident maps are for peer and cert authentication, which pgmux does not do",
    ),
    ("auth_ldap_options", "not supported: pgmux has no LDAP authentication"),
    (
        "server_reset_query_always",
        "not supported: pgmux runs server_reset_query in session mode only",
    ),
    (
        "server_fast_close",
        "not yet: in session mode pgmux keeps a server connection until its client leaves",
    ),
    (
        "autodb_idle_timeout",
        "not yet: pools of \"*\" databases stay; server_idle_timeout closes their connections",
    ),
    (
        "pool_idle_timeout",
        "not yet: empty pools stay; server_idle_timeout closes their connections",
    ),
    (
        "dns_max_ttl",
        "not configurable: pgmux resolves host names when it opens a connection, with the system resolver",
    ),
    (
        "dns_nxdomain_ttl",
        "not configurable: pgmux resolves host names when it opens a connection, with the system resolver",
    ),
    (
        "dns_zone_check_period",
        "not supported: pgmux resolves host names when it opens a connection",
    ),
    (
        "resolv_conf",
        "not supported: pgmux uses the system resolver (/etc/resolv.conf)",
    ),
    (
        "query_wait_notify",
        "not yet: waiting clients get no notice; see SHOW POOLS cl_waiting",
    ),
    ("login_notify_message", "not yet: no message is sent after login"),
    (
        "client_tls_ca_file",
        "not supported: pgmux does not verify client certificates; clients still authenticate with auth_type",
    ),
    (
        "client_tls_protocols",
        "not configurable: pgmux accepts TLS 1.2 and 1.3 (rustls)",
    ),
    (
        "client_tls_ciphers",
        "not configurable: pgmux uses rustls's safe cipher suites",
    ),
    (
        "client_tls13_ciphers",
        "not configurable: pgmux uses rustls's safe cipher suites",
    ),
    (
        "client_tls_ecdhcurve",
        "not configurable: pgmux uses rustls's key exchange groups",
    ),
    (
        "client_tls_dheparams",
        "not configurable: rustls does no finite-field DHE",
    ),
    (
        "server_tls_key_file",
        "not supported: pgmux presents no client certificate to servers",
    ),
    (
        "server_tls_cert_file",
        "not supported: pgmux presents no client certificate to servers",
    ),
    (
        "server_tls_protocols",
        "not configurable: pgmux offers TLS 1.2 and 1.3 (rustls)",
    ),
    (
        "server_tls_ciphers",
        "not configurable: pgmux uses rustls's safe cipher suites",
    ),
    (
        "server_tls13_ciphers",
        "not configurable: pgmux uses rustls's safe cipher suites",
    ),
    (
        "cancel_wait_timeout",
        "not configurable: pgmux forwards a cancel request at once, within server_connect_timeout",
    ),
    (
        "transaction_timeout",
        "not yet: use idle_transaction_timeout, or PostgreSQL 17's transaction_timeout on the server",
    ),
    (
        "suspend_timeout",
        "not supported: pgmux has no SUSPEND or online restart (-R); it drains on SIGINT within shutdown_timeout",
    ),
    ("pkt_buf", "nothing to do: pgmux sizes its buffers itself"),
    ("sbuf_loopcnt", "nothing to do: each pgmux client runs as its own task"),
    (
        "listen_backlog",
        "not configurable: pgmux listens with a backlog of 4096",
    ),
    ("tcp_defer_accept", "not supported: pgmux does not set TCP_DEFER_ACCEPT"),
    (
        "tcp_socket_buffer",
        "not supported: pgmux keeps the kernel's socket buffer sizes",
    ),
];

/// Keys that pgmux takes under another name or in another form; for `keys_are_all_known`.
#[cfg(test)]
pub(super) const MAPPED: &[&str] = &[
    "listen_addr",
    "listen_port",
    "unix_socket_dir",
    "unix_socket_mode",
    "pool_mode",
    "stats_period",
    "auth_type",
    "auth_query",
    "auth_dbname",
    "admin_users",
    "stats_users",
    "server_check_query",
    "client_tls_sslmode",
    "client_tls_key_file",
    "client_tls_cert_file",
    "server_tls_sslmode",
    "max_packet_size",
    "tcp_keepalive",
    "so_reuseport",
    "peer_id",
    "tcp_keepidle",
    "tcp_keepintvl",
    "track_extra_parameters",
];

#[cfg(test)]
pub(super) fn all_keys() -> Vec<&'static str> {
    let mut keys: Vec<&str> = [SAME_SECONDS, SAME_INTEGERS, SAME_STRINGS, MAPPED].concat();
    keys.extend(NOT_ACTED_ON.iter().map(|(k, _)| *k));
    keys
}

pub(super) fn pgbouncer(out: &mut Out, key: &str, value: &str, src: &Src) -> Result<(), ConfigError> {
    if key == "server_lifetime" && seconds(value, src)? == "0" {
        out.note(
            src,
            "0 closes each server connection after one use in PgBouncer (in pgmux 0 would mean \
             never): written as 1 microsecond, which does the same",
        );
        out.pooler("server_lifetime", "0.000001".into(), src);
        return Ok(());
    }
    if let Some(name) = SAME_SECONDS.iter().find(|k| **k == key) {
        out.pooler(name, seconds(value, src)?, src);
        return Ok(());
    }
    if let Some(name) = SAME_INTEGERS.iter().find(|k| **k == key) {
        out.pooler(name, uint(value, src)?.to_string(), src);
        return Ok(());
    }
    if matches!(key, "auth_file" | "auth_hba_file") && !value.is_empty() && !value.starts_with('/') {
        out.note(
            src,
            "a relative path: pgmux takes it from the directory of the configuration file, \
             PgBouncer from its working directory",
        );
    }
    if let Some(name) = SAME_STRINGS.iter().find(|k| **k == key) {
        out.pooler(name, toml_str(value), src);
        return Ok(());
    }
    if let Some((_, advice)) = NOT_ACTED_ON.iter().find(|(k, _)| *k == key) {
        out.note(src, advice);
        return Ok(());
    }
    match key {
        "listen_addr" => listen_addr(out, value, src)?,
        "listen_port" => match int(value, src)? {
            n @ 1..=65535 => out.pooler("listen_port", n.to_string(), src),
            n => return Err(src.err(format!("{n} is not a valid port, expected 1 to 65535"))),
        },
        "unix_socket_dir" => {
            if value.starts_with('@') {
                out.note(
                    src,
                    "abstract Unix sockets are not supported: pgmux listens on no Unix socket",
                );
                out.pooler("unix_socket_dir", toml_str(""), src);
                out.unix_socket_dir = Some(String::new());
            } else {
                out.pooler("unix_socket_dir", toml_str(value), src);
                out.unix_socket_dir = Some(value.to_string());
            }
        }
        "unix_socket_mode" => out.pooler("unix_socket_mode", uint(value, src)?.to_string(), src),
        "pool_mode" => {
            let mode = lookup(value, &["session", "transaction", "statement"], src)?;
            out.pooler("pool_mode", toml_str(mode), src);
        }
        "stats_period" => match int(value, src)? {
            n if n >= 1 => out.pooler("stats_period", n.to_string(), src),
            n => return Err(src.err(format!("must be at least 1 second, found {n}"))),
        },
        "auth_type" => auth_type(out, value, src)?,
        "auth_query" if value.is_empty() => {
            out.note(
                src,
                "empty: pgmux keeps its default auth_query; unset auth_user to turn lookups off",
            );
        }
        "auth_query" => out.pooler("auth_query", toml_str(value), src),
        "auth_dbname" if value == "pgbouncer" => {
            return Err(src.err("cannot use the reserved \"pgbouncer\" database as auth_dbname"));
        }
        "auth_dbname" => out.pooler("auth_dbname", toml_str(value), src),
        "admin_users" | "stats_users" => {
            let name = if key == "admin_users" {
                "admin_users"
            } else {
                "stats_users"
            };
            out.pooler(name, toml_strs(&list(value)), src);
        }
        "server_check_query" => {
            // Empty turns the check off, in PgBouncer as in pgmux.
            let query = if value == "<empty>" { "" } else { value };
            out.pooler("server_check_query", toml_str(query), src);
        }
        "client_tls_sslmode" => {
            let words = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"];
            let mode = match lookup(value, &words, src)? {
                m @ ("verify-ca" | "verify-full") => {
                    out.note(
                        src,
                        format!(
                            "{m}: pgmux does not verify client certificates; it requires TLS \
                             (tls_mode = \"require\") and clients still authenticate with auth_type"
                        ),
                    );
                    "require"
                }
                m => m,
            };
            out.pooler("tls_mode", toml_str(mode), src);
        }
        "client_tls_key_file" => out.pooler("tls_key_file", toml_str(value), src),
        "client_tls_cert_file" => out.pooler("tls_cert_file", toml_str(value), src),
        "server_tls_sslmode" => {
            let words = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"];
            let mode = match lookup(value, &words, src)? {
                "allow" => {
                    out.note(
                        src,
                        "allow: pgmux has no \"allow\" to servers; it uses \"prefer\" (TLS when the server offers it)",
                    );
                    "prefer"
                }
                "verify-ca" => {
                    out.note(
                        src,
                        "verify-ca: pgmux uses \"verify-full\", which also checks the server's host \
                         name against its certificate",
                    );
                    "verify-full"
                }
                m => m,
            };
            out.pooler("server_tls_mode", toml_str(mode), src);
        }
        "track_extra_parameters" => {
            let reported = crate::backend::settings::REPORTED;
            let other: Vec<String> = list(value)
                .into_iter()
                .filter(|p| !reported.iter().any(|r| r.eq_ignore_ascii_case(p)))
                .collect();
            let text = match other.as_slice() {
                [] => "nothing to do: pgmux follows these parameters from server to server".to_string(),
                other => format!(
                    "pgmux restores every startup parameter, but follows a SET only of {}; not of {}",
                    reported.join(", "),
                    other.join(", ")
                ),
            };
            out.note(src, text);
        }
        "max_packet_size" => out.pooler("max_message_size", uint(value, src)?.to_string(), src),
        "tcp_keepalive" => out.pooler("tcp_keepalive", flag(value, src)?.to_string(), src),
        "so_reuseport" => out.pooler("so_reuseport", flag(value, src)?.to_string(), src),
        "peer_id" => out.pooler("peer_id", uint(value, src)?.to_string(), src),
        "tcp_keepidle" | "tcp_keepintvl" => {
            let name = if key == "tcp_keepidle" {
                "tcp_keepidle"
            } else {
                "tcp_keepintvl"
            };
            let secs = uint(value, src)?;
            let value = toml_seconds(f64::from(secs)).unwrap_or_else(|| secs.to_string());
            out.pooler(name, value, src);
        }
        _ => return Err(src.err(format!("unknown parameter {key:?} in [pgbouncer]"))),
    }
    Ok(())
}

fn listen_addr(out: &mut Out, value: &str, src: &Src) -> Result<(), ConfigError> {
    let addrs = list(value);
    let Some(first) = addrs.first() else {
        out.note(
            src,
            "empty: PgBouncer would listen on its Unix socket only; pgmux also listens on 127.0.0.1",
        );
        return Ok(());
    };
    let _ = first;
    // `*` (every IPv4 and IPv6 address) and lists mean the same in pgmux; host names do not.
    let mut mapped = Vec::with_capacity(addrs.len());
    for a in &addrs {
        mapped.push(match a.as_str() {
            "*" => "*".to_string(),
            "localhost" => "127.0.0.1".to_string(),
            a if a.parse::<std::net::IpAddr>().is_ok() => a.to_string(),
            a => {
                let message = format!("{a:?}: pgmux listens on an IP address, not a host name; write its address");
                return Err(src.err(message));
            }
        });
    }
    out.pooler("listen_addr", toml_str(&mapped.join(",")), src);
    Ok(())
}

fn auth_type(out: &mut Out, value: &str, src: &Src) -> Result<(), ConfigError> {
    let words = [
        "any",
        "trust",
        "plain",
        "md5",
        "cert",
        "hba",
        "ldap",
        "pam",
        "scram-sha-256",
    ];
    let pgmux = match lookup(value, &words, src)? {
        "md5" => "md5",
        "scram-sha-256" => "scram-sha-256",
        "hba" => "hba",
        "trust" => {
            out.note(
                src,
                "trust: pgmux lets in any user name, where PgBouncer lets in only the users of auth_file",
            );
            "trust"
        }
        "any" => {
            out.note(src, "any: pgmux uses trust (no password; the user name is passed on)");
            "trust"
        }
        "plain" => {
            out.note(
                src,
                "plain: not supported (passwords in clear text); pgmux uses md5, which takes the same secrets",
            );
            "md5"
        }
        other => {
            out.note(
                src,
                format!("{other}: not supported; pgmux uses scram-sha-256 with auth_file or auth_query, so clients need a password"),
            );
            "scram-sha-256"
        }
    };
    out.pooler("auth_type", toml_str(pgmux), src);
    Ok(())
}
