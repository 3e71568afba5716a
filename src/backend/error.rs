use crate::config::ServerTlsMode;
use crate::protocol::messages::PgError;
use thiserror::Error;

/// Why a server connection could not be made or used.
#[derive(Debug, Error)]
pub enum BackendError {
    #[error("could not connect to server {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("timed out connecting to server {addr} after {secs} s (server_connect_timeout)")]
    Timeout { addr: String, secs: f64 },
    /// The server refused the login; its own error is passed on as it was.
    #[error("server {addr} refused the login: {error}")]
    Refused { addr: String, error: Box<PgError> },
    #[error("server {addr} asks for a password for user {user:?}, and pgmux has none for it")]
    NoPassword { addr: String, user: String },
    #[error(
        "server {addr} holds another SCRAM secret for user {user:?} than pgmux (salt or iteration count differ), so the client's proof cannot log in for it"
    )]
    SecretMismatch { addr: String, user: String },
    #[error("server {addr} asks for an authentication method pgmux does not support ({method})")]
    UnsupportedAuth { addr: String, method: String },
    #[error("server {addr} broke the protocol: {what}")]
    Protocol { addr: String, what: String },
    #[error("TLS handshake with server {addr} failed (server_tls_mode = {mode}): {what}")]
    Tls {
        addr: String,
        mode: ServerTlsMode,
        what: String,
    },
    #[error("server {addr} does not support TLS (server_tls_mode = {mode})")]
    NoTls { addr: String, mode: ServerTlsMode },
    #[error("connection to server {addr} lost: {source}")]
    Io { addr: String, source: std::io::Error },
}

impl BackendError {
    /// What the client sees. A login refusal keeps the server's SQLSTATE (28P01, 3D000, 53300 ...).
    pub fn to_pg(&self) -> PgError {
        match self {
            BackendError::Refused { error, .. } => (**error).clone(),
            BackendError::NoPassword { .. } => PgError::fatal("08006", self.to_string()).with_hint(
                "set a plain-text password in [users.NAME], [databases.NAME] or auth_file; or store the server's own \
                 SCRAM secret (from pg_authid) there, and pgmux logs in with the proof of the first client that logs in with SCRAM",
            ),
            BackendError::SecretMismatch { .. } => PgError::fatal("08006", self.to_string())
                .with_hint("copy the user's secret from pg_authid again: the password was changed on the server"),
            BackendError::Tls {
                mode: ServerTlsMode::VerifyFull,
                ..
            } => PgError::fatal("08006", self.to_string())
                .with_hint("the server's certificate must chain to server_tls_ca_file and name the database's host"),
            BackendError::NoTls { .. } => PgError::fatal("08006", self.to_string())
                .with_hint("turn ssl on in the server, or set server_tls_mode = \"prefer\" in pooler.toml"),
            other => PgError::fatal("08006", other.to_string()),
        }
    }

    /// A wrong password or unknown role, as opposed to a server that is down.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, BackendError::Refused { error, .. } if error.code == "28P01" || error.code == "28000")
    }
}
