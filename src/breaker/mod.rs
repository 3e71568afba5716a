//! The circuit breaker of one backend address (issue 7).
//!
//! Closed: connections are opened freely, and consecutive counted failures (see
//! [`FailureCause`]) are tallied; `failure_threshold` of them open it. Open: no connection
//! attempts until the open period ends; then the next caller gets the single half-open probe.
//! A probe's success closes the breaker; its failure re-opens it for `open_timeout` again, or,
//! with `max_open_timeout` set, for twice the last period up to it (a server that stays down is
//! tried less and less often). Re-open periods are shortened by up to 10% at random, so that
//! pgmux processes that opened together do not probe together, and a server that came back is
//! never tried later than the configured wait.
//!
//! The breaker is the only gate for the failures it counts: `server_login_retry` applies to the
//! others (wrong credentials, an unknown database), which say nothing about the address.
//!
//! Shared by the pool's tasks: a `Mutex` suffices, as it is touched per connection opened or
//! failed, not per query.

mod cause;
mod clock;
mod refusal;
#[cfg(test)]
mod tests;
mod types;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::backend::error::BackendError;
use crate::config::BreakerConfig;

pub use cause::{counts, FailureCause};
pub use clock::{fixed_jitter, random_jitter, Clock, JitterSource, ManualClock, SystemClock};
pub use refusal::format_utc_time;
pub use types::{Admission, BreakerSnapshot, BreakerState, OpenInfo, Role};

/// Re-open periods are the base period times a factor in [1 - JITTER, 1].
pub const JITTER: f64 = 0.1;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed,
    Open {
        next_probe_at: Instant,
    },
    /// `probe` is the id of the one outstanding guard.
    HalfOpen {
        probe: u64,
    },
}

struct Inner {
    state: State,
    threshold: u32,
    open_timeout: Duration,
    /// The longest base period failed probes double up to; never below `open_timeout`.
    max_open_timeout: Duration,
    consecutive_failures: u32,
    last_cause: Option<FailureCause>,
    last_error: Option<String>,
    opened_at: Option<(Instant, SystemTime)>,
    /// The un-jittered length of the current open period.
    period: Duration,
    /// Start of the current open period (for the proptest's bounds).
    #[cfg_attr(not(test), allow(dead_code))]
    period_start: Option<Instant>,
    next_probe_id: u64,
}

struct Shared {
    host: String,
    port: u16,
    role: Role,
    clock: Arc<dyn Clock>,
    jitter: JitterSource,
    inner: Mutex<Inner>,
    /// Callers turned away while open or half-open (clients refused by this gate).
    refused: AtomicU64,
}

/// The breaker of one backend address; clones share it.
#[derive(Clone)]
pub struct Breaker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("host", &self.shared.host)
            .field("port", &self.shared.port)
            .field("state", &self.lock().state)
            .finish()
    }
}

impl Breaker {
    /// A breaker on the process clocks with random jitter.
    pub fn new(host: impl Into<String>, port: u16, role: Role, config: &BreakerConfig) -> Breaker {
        Breaker::with_clock(host, port, role, config, Arc::new(SystemClock), random_jitter())
    }

    pub fn with_clock(
        host: impl Into<String>,
        port: u16,
        role: Role,
        config: &BreakerConfig,
        clock: Arc<dyn Clock>,
        jitter: JitterSource,
    ) -> Breaker {
        let inner = Inner {
            state: State::Closed,
            // A threshold of 0 is refused by the config; treat it as 1 rather than never open.
            threshold: config.failure_threshold.max(1),
            open_timeout: config.open_timeout,
            max_open_timeout: config.max_open_timeout,
            consecutive_failures: 0,
            last_cause: None,
            last_error: None,
            opened_at: None,
            period: Duration::ZERO,
            period_start: None,
            next_probe_id: 0,
        };
        let shared = Shared {
            host: host.into(),
            port,
            role,
            clock,
            jitter,
            inner: Mutex::new(inner),
            refused: AtomicU64::new(0),
        };
        Breaker {
            shared: Arc::new(shared),
        }
    }

    /// New settings after a reload; they apply from the next failure or re-open.
    pub fn set_config(&self, config: &BreakerConfig) {
        let mut inner = self.lock();
        inner.threshold = config.failure_threshold.max(1);
        inner.open_timeout = config.open_timeout;
        inner.max_open_timeout = config.max_open_timeout;
    }

    pub fn host(&self) -> &str {
        &self.shared.host
    }

    pub fn port(&self) -> u16 {
        self.shared.port
    }

    pub fn role(&self) -> Role {
        self.shared.role
    }

    /// May the caller open a connection to the address now?
    pub fn try_acquire(&self) -> Admission {
        let now = self.shared.clock.now();
        let mut inner = self.lock();
        match inner.state {
            State::Closed => Admission::Allowed,
            State::Open { next_probe_at } if now >= next_probe_at => {
                let probe = inner.next_probe_id;
                inner.next_probe_id += 1;
                inner.state = State::HalfOpen { probe };
                tracing::info!(
                    "breaker for {}:{} ({}) half-open: probing the server",
                    self.shared.host,
                    self.shared.port,
                    self.shared.role.as_str()
                );
                Admission::Probe(ProbeGuard {
                    breaker: self.clone(),
                    probe,
                    done: false,
                })
            }
            State::Open { .. } | State::HalfOpen { .. } => {
                self.shared.refused.fetch_add(1, Ordering::Relaxed);
                Admission::Rejected(Box::new(self.info_locked(&inner, now)))
            }
        }
    }

    /// A connection opened, logged in or passed its check. Resets the failure count while
    /// closed; while open or half-open only the probe can close the breaker, since a success
    /// on a connection made before it opened says little about new ones.
    pub fn record_success(&self) {
        let mut inner = self.lock();
        if inner.state == State::Closed {
            inner.consecutive_failures = 0;
        }
    }

    /// A counted failure. While closed it may open the breaker; while open or half-open it
    /// only updates the count and the last error (the probe decides what happens next).
    pub fn record_failure(&self, cause: FailureCause, detail: impl Into<String>) {
        let now = self.shared.clock.now();
        let mut inner = self.lock();
        note_failure(&mut inner, cause, detail.into());
        if inner.state == State::Closed && inner.consecutive_failures >= inner.threshold {
            inner.opened_at = Some((now, self.shared.clock.wall()));
            let period = inner.open_timeout;
            self.open(&mut inner, now, period, period);
            tracing::warn!(
                "breaker for {}:{} ({}) open after {} consecutive failures (last: {}); next probe in {:.1} s",
                self.shared.host,
                self.shared.port,
                self.shared.role.as_str(),
                inner.consecutive_failures,
                inner.last_error.as_deref().unwrap_or(""),
                period.as_secs_f64()
            );
        }
    }

    /// Classifies a connect or login error and records it if it counts; returns whether it did.
    pub fn record_backend_error(&self, error: &BackendError) -> bool {
        match FailureCause::of(error) {
            Some(cause) => {
                self.record_failure(cause, error.to_string());
                true
            }
            None => false,
        }
    }

    /// Closes the breaker and forgets its history (console RECONNECT). An outstanding probe's
    /// later report is then taken as an ordinary success or failure.
    pub fn reset(&self) {
        let mut inner = self.lock();
        if inner.state != State::Closed {
            tracing::info!(
                "breaker for {}:{} ({}) closed by reset",
                self.shared.host,
                self.shared.port,
                self.shared.role.as_str()
            );
        }
        self.close(&mut inner);
        inner.last_cause = None;
        inner.last_error = None;
    }

    /// Open, and its probe may run now: the janitor runs it when no client asks (a pool that
    /// kept its connections through a short partition would otherwise never probe).
    pub fn probe_due(&self) -> bool {
        let now = self.shared.clock.now();
        matches!(self.lock().state, State::Open { next_probe_at } if now >= next_probe_at)
    }

    pub fn state(&self) -> BreakerState {
        match self.lock().state {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    pub fn snapshot(&self) -> BreakerSnapshot {
        let (now, wall) = (self.shared.clock.now(), self.shared.clock.wall());
        let inner = self.lock();
        let (state, next_probe_at) = match inner.state {
            State::Closed => (BreakerState::Closed, None),
            State::Open { next_probe_at } => (BreakerState::Open, Some(wall_at(now, wall, next_probe_at))),
            State::HalfOpen { .. } => (BreakerState::HalfOpen, None),
        };
        BreakerSnapshot {
            host: self.shared.host.clone(),
            port: self.shared.port,
            role: self.shared.role,
            state,
            consecutive_failures: inner.consecutive_failures,
            opened_at: inner.opened_at.map(|(_, wall)| wall),
            next_probe_at,
            last_error: inner.last_error.clone(),
            refused: self.shared.refused.load(Ordering::Relaxed),
        }
    }

    /// The refusal a client gets while the breaker is open, if it is.
    pub fn open_info(&self) -> Option<OpenInfo> {
        let now = self.shared.clock.now();
        let inner = self.lock();
        (inner.state != State::Closed).then(|| self.info_locked(&inner, now))
    }

    fn info_locked(&self, inner: &Inner, now: Instant) -> OpenInfo {
        let (opened_at, opened_at_wall) = inner.opened_at.unwrap_or((now, self.shared.clock.wall()));
        OpenInfo {
            host: self.shared.host.clone(),
            port: self.shared.port,
            role: self.shared.role,
            opened_at,
            opened_at_wall,
            consecutive_failures: inner.consecutive_failures,
            last_cause: inner.last_cause.clone(),
            last_error: inner.last_error.clone().unwrap_or_default(),
            next_probe_at: match inner.state {
                State::Open { next_probe_at } => Some(next_probe_at),
                _ => None,
            },
            now,
        }
    }

    fn probe_done(&self, probe: u64, outcome: Result<(), (FailureCause, String)>, explicit: bool) {
        let now = self.shared.clock.now();
        let mut inner = self.lock();
        if inner.state != (State::HalfOpen { probe }) {
            // Stale (the breaker was reset meanwhile): an explicit report is still news.
            drop(inner);
            match outcome {
                Ok(()) if explicit => self.record_success(),
                Err((cause, detail)) if explicit => self.record_failure(cause, detail),
                _ => {}
            }
            return;
        }
        let (host, port, role) = (&self.shared.host, self.shared.port, self.shared.role.as_str());
        match outcome {
            Ok(()) => {
                self.close(&mut inner);
                tracing::info!("breaker for {host}:{port} ({role}) closed: the probe succeeded");
            }
            Err((cause, detail)) => {
                note_failure(&mut inner, cause, detail);
                let cap = inner.max_open_timeout.max(inner.open_timeout);
                let base = inner.period.saturating_mul(2).min(cap).max(inner.open_timeout);
                let fraction = (self.shared.jitter)().clamp(0.0, 1.0);
                let factor = 1.0 - JITTER * fraction;
                let period = Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(base);
                self.open(&mut inner, now, base, period);
                tracing::warn!(
                    "breaker for {host}:{port} ({role}) open again: the probe failed ({}); next probe in {:.1} s",
                    inner.last_error.as_deref().unwrap_or(""),
                    period.as_secs_f64()
                );
            }
        }
    }

    /// Enters Open for `period` (jittered), remembering `base` for the next doubling.
    fn open(&self, inner: &mut Inner, now: Instant, base: Duration, period: Duration) {
        let next_probe_at = now
            .checked_add(period)
            .or_else(|| now.checked_add(Duration::from_secs(u32::MAX.into())))
            .unwrap_or(now);
        inner.state = State::Open { next_probe_at };
        inner.period = base;
        inner.period_start = Some(now);
    }

    fn close(&self, inner: &mut Inner) {
        inner.state = State::Closed;
        inner.consecutive_failures = 0;
        inner.opened_at = None;
        inner.period = Duration::ZERO;
        inner.period_start = None;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding it leaves consistent state: every update is whole.
        self.shared.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The length of the current open period, jitter included (tests check its bounds).
    #[cfg(test)]
    fn open_period(&self) -> Option<Duration> {
        let inner = self.lock();
        match (inner.state, inner.period_start) {
            (State::Open { next_probe_at }, Some(start)) => Some(next_probe_at - start),
            _ => None,
        }
    }
}

fn note_failure(inner: &mut Inner, cause: FailureCause, detail: String) {
    inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
    inner.last_error = Some(if detail.is_empty() { cause.to_string() } else { detail });
    inner.last_cause = Some(cause);
}

/// `at` on the wall clock, given that `now` is `wall`.
fn wall_at(now: Instant, wall: SystemTime, at: Instant) -> SystemTime {
    if at >= now {
        wall.checked_add(at - now).unwrap_or(wall)
    } else {
        wall.checked_sub(now - at).unwrap_or(wall)
    }
}

/// The right to run the one half-open probe. Report through [`ProbeGuard::success`] or
/// [`ProbeGuard::failure`]; dropped unreported it counts as a failed probe, so that a
/// cancelled probe cannot leave the breaker half-open for good.
#[derive(Debug)]
pub struct ProbeGuard {
    breaker: Breaker,
    probe: u64,
    done: bool,
}

impl ProbeGuard {
    pub fn success(mut self) {
        self.done = true;
        self.breaker.probe_done(self.probe, Ok(()), true);
    }

    pub fn failure(mut self, cause: FailureCause, detail: impl Into<String>) {
        self.done = true;
        self.breaker.probe_done(self.probe, Err((cause, detail.into())), true);
    }

    /// Reports a connect or login error. One that does not count (bad credentials) still
    /// ends the probe: the server answered, so the address is up and the breaker closes.
    pub fn backend_error(self, error: &BackendError) {
        match FailureCause::of(error) {
            Some(cause) => self.failure(cause, error.to_string()),
            None => self.success(),
        }
    }
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if !self.done {
            let detail = "the probe was cancelled before it finished".to_owned();
            self.breaker
                .probe_done(self.probe, Err((FailureCause::ProbeAbandoned, detail)), false);
        }
    }
}
