//! Which failures count against a backend address. The breaker is for an address that is down
//! or going down; a failure the client or the configuration causes would fail the same way
//! against a healthy server, and opening the breaker on it would hide the real error.

use std::fmt;
use std::io::ErrorKind;

use crate::backend::error::BackendError;

/// A failure that counts towards opening the breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureCause {
    /// TCP connect refused (nothing listening).
    Refused,
    /// TCP connect failed otherwise (unreachable, reset, name lookup).
    ConnectFailed,
    /// Connect plus login did not finish within `server_connect_timeout`.
    Timeout,
    /// The server refused the login with a SQLSTATE that is not the client's doing.
    LoginFailed(String),
    /// 57P01 admin_shutdown, 57P02 crash_shutdown or 57P03 cannot_connect_now.
    ServerShutdown(String),
    /// The server closed the connection (or the socket failed) without being asked.
    UnexpectedClose,
    /// The server answered with something that is not the PostgreSQL protocol.
    Protocol,
    /// `server_check_query` failed on a connection to the address.
    CheckFailed,
    /// The half-open probe was dropped before it reported (its task was cancelled).
    ProbeAbandoned,
}

impl FailureCause {
    /// Classifies a connect or login failure; `None` when it does not count.
    pub fn of(error: &BackendError) -> Option<FailureCause> {
        match error {
            BackendError::Connect { source, .. } if source.kind() == ErrorKind::ConnectionRefused => {
                Some(FailureCause::Refused)
            }
            BackendError::Connect { source, .. } if source.kind() == ErrorKind::TimedOut => Some(FailureCause::Timeout),
            BackendError::Connect { .. } => Some(FailureCause::ConnectFailed),
            BackendError::Timeout { .. } => Some(FailureCause::Timeout),
            BackendError::Refused { error, .. } => FailureCause::of_login_sqlstate(&error.code),
            BackendError::Io { .. } => Some(FailureCause::UnexpectedClose),
            BackendError::Protocol { .. } => Some(FailureCause::Protocol),
            // Configuration mismatches: every attempt fails the same way on a healthy server.
            BackendError::NoPassword { .. }
            | BackendError::SecretMismatch { .. }
            | BackendError::UnsupportedAuth { .. }
            | BackendError::Tls { .. }
            | BackendError::NoTls { .. } => None,
        }
    }

    /// Classifies the SQLSTATE of a refused login.
    pub fn of_login_sqlstate(code: &str) -> Option<FailureCause> {
        if is_shutdown(code) {
            return Some(FailureCause::ServerShutdown(code.to_owned()));
        }
        if client_caused(code) {
            return None;
        }
        Some(FailureCause::LoginFailed(code.to_owned()))
    }

    /// Classifies an error on an established connection: only the server going away counts;
    /// anything else is about the query.
    pub fn of_session_sqlstate(code: &str) -> Option<FailureCause> {
        is_shutdown(code).then(|| FailureCause::ServerShutdown(code.to_owned()))
    }

    /// Whether the server itself said it is shutting down or starting up.
    pub fn is_shutdown(&self) -> bool {
        matches!(self, FailureCause::ServerShutdown(_))
    }
}

/// Whether a connect or login failure counts against the address.
pub fn counts(error: &BackendError) -> bool {
    FailureCause::of(error).is_some()
}

fn is_shutdown(code: &str) -> bool {
    matches!(code, "57P01" | "57P02" | "57P03")
}

/// Login SQLSTATEs a healthy server gives for a bad request: credentials and authorization
/// (class 28), unknown database (3D000), no CONNECT privilege and the like (class 42), bad
/// startup options (class 22, 0A), a startup packet it cannot read (08P01), and
/// too_many_connections (53300), which is pool sizing against `max_connections`, not an outage.
fn client_caused(code: &str) -> bool {
    let class = code.get(..2).unwrap_or("");
    matches!(class, "28" | "42" | "22" | "0A") || matches!(code, "3D000" | "08P01" | "53300")
}

impl fmt::Display for FailureCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureCause::Refused => f.write_str("connection refused"),
            FailureCause::ConnectFailed => f.write_str("connect failed"),
            FailureCause::Timeout => f.write_str("timed out"),
            FailureCause::LoginFailed(code) => write!(f, "login failed ({code})"),
            FailureCause::ServerShutdown(code) => {
                let what = match code.as_str() {
                    "57P01" => "server shutting down",
                    "57P02" => "server crashed",
                    _ => "server cannot accept connections now",
                };
                write!(f, "{what} ({code})")
            }
            FailureCause::UnexpectedClose => f.write_str("server closed the connection unexpectedly"),
            FailureCause::Protocol => f.write_str("protocol violation"),
            FailureCause::CheckFailed => f.write_str("health check failed"),
            FailureCause::ProbeAbandoned => f.write_str("probe abandoned"),
        }
    }
}
