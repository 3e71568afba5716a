//! What the console and the metrics report about each pool: counters and latency histograms
//! that the data path updates with relaxed atomics (no lock), the averages and percentiles of
//! the last stats period, and the slowest recent queries.

pub mod clock;
pub mod counter;
pub mod exposition;
pub mod histogram;
pub mod meter;
pub mod metrics;
pub mod period;
pub mod reference;
pub mod slow;

pub use counter::Counter;
use histogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub use clock::now_us;
use clock::start;

/// Seconds since the Unix epoch of a `now_us` value.
pub fn wall_clock_secs(us: u64) -> u64 {
    let at = start().1 + std::time::Duration::from_micros(us);
    at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Why pgmux closed a server connection (a label of the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Idle past server_idle_timeout, or surplus after a shrink or a lowered limit.
    Idle,
    /// Older than server_lifetime.
    Lifetime,
    /// Closed by the server, failed a check, or left in an unknown state.
    Broken,
    /// An operator asked (RECONNECT, KILL, PAUSE) or pgmux shut down.
    Admin,
}

impl CloseReason {
    pub const ALL: [CloseReason; 4] = [
        CloseReason::Idle,
        CloseReason::Lifetime,
        CloseReason::Broken,
        CloseReason::Admin,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Idle => "idle",
            CloseReason::Lifetime => "lifetime",
            CloseReason::Broken => "broken",
            CloseReason::Admin => "admin",
        }
    }
}

/// Totals since the pool was made.
#[derive(Default)]
pub struct PoolStats {
    /// Times a client was given a server connection.
    pub server_assignments: Counter,
    pub xacts: Counter,
    pub queries: Counter,
    /// Bytes from clients, and to clients.
    pub received: Counter,
    pub sent: Counter,
    /// µs spent in transactions, in queries, and waiting for a server.
    pub xact_time: Counter,
    pub query_time: Counter,
    pub wait_time: Counter,
    pub client_parses: Counter,
    pub server_parses: Counter,
    pub binds: Counter,
    pub query_latency: Histogram,
    pub xact_latency: Histogram,
    pub server_opens: Counter,
    /// Clients refused a new server connection, by the gate that refused them: the address's
    /// open breaker, or server_login_retry after the server refused the pool's login.
    pub refused_by_breaker: AtomicU64,
    pub refused_by_login_retry: AtomicU64,
    server_closes: [AtomicU64; 4],
    /// ErrorResponses clients received, by SQLSTATE class (rare: a lock is fine).
    errors: Mutex<Vec<([u8; 2], u64)>>,
    /// The last stats period's averages and percentiles (`period`).
    pub period: Mutex<period::Report>,
    /// Totals at the start of the current period (the period task's own).
    pub(crate) mark: Mutex<period::Mark>,
    pub slow: slow::SlowQueries,
}

impl PoolStats {
    pub fn closed(&self, why: CloseReason) {
        if let Some(n) = self.server_closes.get(why as usize) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn closes(&self, why: CloseReason) -> u64 {
        self.server_closes
            .get(why as usize)
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// An ErrorResponse with this SQLSTATE reached a client.
    pub fn error(&self, sqlstate: &[u8]) {
        self.errors_of(sqlstate, 1);
    }

    /// `n` ErrorResponses of this SQLSTATE (or class) reached clients.
    pub fn errors_of(&self, sqlstate: &[u8], n: u64) {
        let class = match sqlstate {
            [a, b, ..] if a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric() => [*a, *b],
            _ => *b"XX",
        };
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        match errors.iter_mut().find(|(c, _)| *c == class) {
            Some((_, count)) => *count += n,
            None => errors.push((class, n)),
        }
    }

    /// (class, count) of every SQLSTATE class seen.
    pub fn errors(&self) -> Vec<(String, u64)> {
        let errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        errors
            .iter()
            .map(|(c, n)| (String::from_utf8_lossy(c).into_owned(), *n))
            .collect()
    }

    pub fn get(counter: &Counter) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
