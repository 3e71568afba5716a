//! TCP options of every client and server socket: no delay, and PgBouncer's keepalive keys
//! (`tcp_keepalive`, `tcp_keepidle`, `tcp_keepintvl`, `tcp_keepcnt`, `tcp_user_timeout`), so
//! that a peer that vanished without a FIN (a host gone, a link cut) is found dead by the
//! kernel instead of holding a client or a server slot until the next write times out.
//!
//! One process-wide value, replaced by a reload: sockets take it when they are opened, and
//! one already open keeps what it got (as PgBouncer).

use crate::config::PoolerConfig;
use std::sync::RwLock;
use std::time::Duration;

/// The options, as read from `[pooler]`; zero means the operating system's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpOptions {
    pub keepalive: bool,
    pub idle: Duration,
    pub interval: Duration,
    pub count: u32,
    pub user_timeout: Duration,
}

impl TcpOptions {
    /// PgBouncer's defaults: keepalives on, every timing left to the kernel.
    pub const DEFAULT: TcpOptions = TcpOptions {
        keepalive: true,
        idle: Duration::ZERO,
        interval: Duration::ZERO,
        count: 0,
        user_timeout: Duration::ZERO,
    };

    pub fn of(pooler: &PoolerConfig) -> TcpOptions {
        TcpOptions {
            keepalive: pooler.tcp_keepalive,
            idle: pooler.tcp_keepidle,
            interval: pooler.tcp_keepintvl,
            count: pooler.tcp_keepcnt,
            user_timeout: Duration::from_millis(pooler.tcp_user_timeout.into()),
        }
    }

    /// Sets the options on a connected socket. Failures are logged, not fatal: a socket
    /// without keepalives still carries queries.
    pub fn apply(&self, socket: socket2::SockRef<'_>) {
        let _ = socket.set_tcp_nodelay(true);
        if let Err(e) = self.try_apply(&socket) {
            tracing::debug!(error = %e, "could not set TCP keepalive options");
        }
    }

    fn try_apply(&self, socket: &socket2::SockRef<'_>) -> std::io::Result<()> {
        socket.set_keepalive(self.keepalive)?;
        if self.keepalive {
            let mut ka = socket2::TcpKeepalive::new();
            if !self.idle.is_zero() {
                ka = ka.with_time(self.idle);
            }
            if !self.interval.is_zero() {
                ka = ka.with_interval(self.interval);
            }
            if self.count > 0 {
                ka = ka.with_retries(self.count);
            }
            if !self.idle.is_zero() || !self.interval.is_zero() || self.count > 0 {
                socket.set_tcp_keepalive(&ka)?;
            }
        }
        if !self.user_timeout.is_zero() {
            socket.set_tcp_user_timeout(Some(self.user_timeout))?;
        }
        Ok(())
    }
}

static CURRENT: RwLock<TcpOptions> = RwLock::new(TcpOptions::DEFAULT);

/// The options new sockets get from now on (startup, reload, the console's SET).
pub fn set(options: TcpOptions) {
    *CURRENT.write().unwrap_or_else(|e| e.into_inner()) = options;
}

/// The options for a socket opened now.
pub fn current() -> TcpOptions {
    *CURRENT.read().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn options_reach_the_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let options = TcpOptions {
            keepalive: true,
            idle: Duration::from_secs(7),
            interval: Duration::from_secs(3),
            count: 4,
            user_timeout: Duration::from_millis(2500),
        };
        options.apply(socket2::SockRef::from(&stream));
        let s = socket2::SockRef::from(&stream);
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_keepalive_time().unwrap(), Duration::from_secs(7));
        assert_eq!(s.tcp_keepalive_interval().unwrap(), Duration::from_secs(3));
        assert_eq!(s.tcp_keepalive_retries().unwrap(), 4);
        assert_eq!(s.tcp_user_timeout().unwrap(), Some(Duration::from_millis(2500)));
        assert!(s.tcp_nodelay().unwrap());

        let off = TcpOptions {
            keepalive: false,
            ..TcpOptions::DEFAULT
        };
        off.apply(socket2::SockRef::from(&stream));
        assert!(!s.keepalive().unwrap());
    }

    #[test]
    fn config_keys_parse_with_pgbouncer_units() {
        let c = crate::config::Config::parse(
            "[pooler]\ntcp_keepalive = true\ntcp_keepidle = 30\ntcp_keepintvl = 5\ntcp_keepcnt = 3\ntcp_user_timeout = 1500\n",
            "t",
        )
        .unwrap();
        let o = TcpOptions::of(&c.pooler);
        assert_eq!(o.idle, Duration::from_secs(30));
        assert_eq!(o.interval, Duration::from_secs(5));
        assert_eq!(o.count, 3);
        assert_eq!(o.user_timeout, Duration::from_millis(1500), "tcp_user_timeout is in ms");
        assert_eq!(
            TcpOptions::of(&crate::config::Config::default().pooler),
            TcpOptions::DEFAULT
        );
    }
}
