//! What the breaker tells its callers: admissions, refusals, SHOW BREAKERS rows.

use std::time::{Instant, SystemTime};

use super::{FailureCause, ProbeGuard};

/// What the address is to the database using it (for SHOW BREAKERS and the refusal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

/// Why a caller may not connect now.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenInfo {
    pub host: String,
    pub port: u16,
    pub role: Role,
    /// When the breaker first opened; kept across re-opens after failed probes.
    pub opened_at: Instant,
    pub opened_at_wall: SystemTime,
    pub consecutive_failures: u32,
    pub last_cause: Option<FailureCause>,
    pub last_error: String,
    /// When the next probe may run; `None` while one is running.
    pub next_probe_at: Option<Instant>,
    /// The clock's `now` when this was taken, so the refusal can say "next probe in 2.4 s".
    pub now: Instant,
}

/// The answer to [`Breaker::try_acquire`].
#[derive(Debug)]
pub enum Admission {
    /// Closed: connect, then report the outcome.
    Allowed,
    /// Half-open and this caller is the probe: connect, then report through the guard.
    Probe(ProbeGuard),
    /// Open, or half-open with the probe taken by someone else.
    Rejected(Box<OpenInfo>),
}

/// One SHOW BREAKERS row.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSnapshot {
    pub host: String,
    pub port: u16,
    pub role: Role,
    pub state: BreakerState,
    pub consecutive_failures: u32,
    pub opened_at: Option<SystemTime>,
    /// In the past when the probe is due but nobody asked for a connection yet.
    pub next_probe_at: Option<SystemTime>,
    pub last_error: Option<String>,
    /// Callers refused by the breaker since pgmux started.
    pub refused: u64,
}
