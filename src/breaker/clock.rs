//! Time for the breaker, injectable so that tests step through open periods without sleeping.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// A source of time. `now` drives the state machine; `wall` only labels it for people.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
    fn wall(&self) -> SystemTime;
}

/// The process's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told; `wall` moves with it from a fixed start.
#[derive(Debug, Clone)]
pub struct ManualClock {
    start: Instant,
    wall_start: SystemTime,
    elapsed: Arc<Mutex<Duration>>,
}

impl ManualClock {
    /// Starts at `wall_start` on the wall clock.
    pub fn new(wall_start: SystemTime) -> ManualClock {
        ManualClock {
            start: Instant::now(),
            wall_start,
            elapsed: Arc::new(Mutex::new(Duration::ZERO)),
        }
    }

    pub fn advance(&self, by: Duration) {
        *self.lock() += by;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Duration> {
        self.elapsed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + *self.lock()
    }

    fn wall(&self) -> SystemTime {
        self.wall_start + *self.lock()
    }
}

/// Jitter: returns a fraction in [0, 1), drawn afresh for each re-open.
pub type JitterSource = Arc<dyn Fn() -> f64 + Send + Sync>;

/// Uniformly random jitter.
pub fn random_jitter() -> JitterSource {
    Arc::new(rand::random::<f64>)
}

/// The same fraction every time, for tests (0.5 means no jitter).
pub fn fixed_jitter(fraction: f64) -> JitterSource {
    Arc::new(move || fraction)
}
