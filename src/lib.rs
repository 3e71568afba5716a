//! pgmux: a PostgreSQL connection pooler.
//!
//! A client's bytes take one road: `listener` accepts, `frontend` logs the client in and runs
//! its session, `pool` lends it a server connection per transaction, `backend` owns that
//! connection. `protocol` is the wire and nothing else.

pub mod admin; // the `pgbouncer` console: SHOW and control commands
pub mod auth; // server-side SCRAM and md5, and the cache of derived keys
pub mod backend; // server connections: connect, log in, settings
pub mod boxed; // futures boxed where they are made (no copy into the box)
pub mod breaker; // circuit breaker of one backend address: closed, open, half-open
pub mod config; // pooler.toml: schema, defaults, validation
pub mod dashboard; // GET /dashboard and /api/* on the metrics listener: the live page, its JSON
pub mod executor; // client sessions: each worker polls its own, with its own wakers
pub mod frontend; // per-client task: startup, auth, session loop, relay
pub mod listen; // LISTEN/NOTIFY in transaction mode: subscriptions, the listener connection
pub mod listener; // accept loop
pub mod pool; // pools per (database, user), wait queue, janitor
pub mod port_mark; // so_reuseport: which processes may share the listening port
pub mod prepared; // protocol-level prepared statements in transaction and statement modes
pub mod protocol; // framing, startup packets, messages pgmux writes
pub mod reload; // SIGHUP: re-read the config file, reconfigure the pools
pub mod route; // read-only or not: the primary or a replica for each statement
pub mod shutdown; // SIGINT/SIGTERM: drain, then close
pub mod stats; // counters, latency histograms, slow queries: what the console and metrics show
pub mod stream; // a socket: plain TCP or TLS, to clients and to servers
pub mod tcp; // keepalive and no-delay options of every socket
pub mod tls; // TLS settings (rustls, ring): certificates for clients, verification of servers
pub mod upgrade; // pgmux upgrade: a new process takes the sockets and the idle clients of the old
pub mod worker; // thread-per-core: a runtime per worker thread, each with its own listener

/// What the fuzz targets in `fuzz/` need that is not public: built only with the `fuzzing`
/// feature, never in a normal build.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::route::lexer::{Lexer, Tok};

    /// `config::ini::convert` of `text` as a file `fuzz.ini`, with `%include` names taken from a
    /// directory that does not exist (so no real file is ever read).
    pub fn ini_convert(text: &str) -> Result<crate::config::ini::Converted, crate::config::ConfigError> {
        crate::config::ini::convert(
            text,
            std::path::Path::new("fuzz.ini"),
            std::path::Path::new("/nonexistent/pgmux-fuzz"),
        )
    }
}
