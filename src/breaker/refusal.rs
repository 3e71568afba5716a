//! The error a client gets instead of a connection while the breaker is open.

use std::time::{SystemTime, UNIX_EPOCH};

use super::OpenInfo;
use crate::protocol::messages::PgError;

impl OpenInfo {
    /// FATAL 08006 connection_failure; 57P03 cannot_connect_now when the server's last word
    /// was that it is shutting down or starting up, which drivers treat as "retry soon".
    /// `database` is the client's database name, for the "(primary of "app")" part.
    pub fn to_pg(&self, database: &str) -> PgError {
        let shutdown = self.last_cause.as_ref().is_some_and(|c| c.is_shutdown());
        let code = if shutdown { "57P03" } else { "08006" };
        let next = match self.next_probe_at {
            None => "a probe is in progress".to_owned(),
            Some(at) if at <= self.now => "next probe due now".to_owned(),
            Some(at) => format!("next probe in {:.1} s", (at - self.now).as_secs_f64()),
        };
        let last = if self.last_error.is_empty() {
            "none"
        } else {
            &self.last_error
        };
        let message = format!(
            "pgmux: circuit breaker open for {} ({} of {database:?}) since {} after {} consecutive failures; \
             last error: {last}; {next}",
            address(&self.host, self.port),
            self.role.as_str(),
            format_utc_time(self.opened_at_wall),
            self.consecutive_failures,
        );
        PgError::fatal(code, message).with_hint(
            "pgmux stops connecting to a server after [breaker] failure_threshold consecutive failures \
             and probes it again every [breaker] open_timeout (growing up to max_open_timeout if set)",
        )
    }
}

/// `host:port`, with brackets around an IPv6 host.
fn address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// "HH:MM:SS UTC"; the date is left out, as an open breaker is about the last minutes.
pub fn format_utc_time(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let day = secs % 86_400;
    format!("{:02}:{:02}:{:02} UTC", day / 3600, day / 60 % 60, day % 60)
}
