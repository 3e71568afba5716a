//! The client-side timeouts that run while a client holds a server: query_timeout,
//! idle_transaction_timeout and (session mode) client_idle_timeout. Each measures how long the
//! transaction has been in one phase; a phase change re-arms the one timer.

use super::track::Tracker;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{sleep, Instant, Sleep};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A query runs: answers are owed.
    Busy,
    /// Inside a transaction block, nothing owed: the client is thinking.
    IdleInTransaction,
    /// Outside any transaction (only seen in session mode, where the client keeps its server).
    Idle,
}

impl Phase {
    pub fn of(t: &Tracker) -> Phase {
        if !t.quiet() {
            Phase::Busy
        } else if t.status != b'I' {
            Phase::IdleInTransaction
        } else {
            Phase::Idle
        }
    }
}

/// Limits per phase in µs, as the configuration's atomics hold them; zero means none. (Made
/// a `Duration` only when a timer is armed: the conversion divides, and most transactions arm
/// none.)
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    pub query_us: u64,
    pub idle_transaction_us: u64,
    pub client_idle_us: u64,
}

impl Timeouts {
    fn limit_us(&self, phase: Phase) -> u64 {
        match phase {
            Phase::Busy => self.query_us,
            Phase::IdleInTransaction => self.idle_transaction_us,
            Phase::Idle => self.client_idle_us,
        }
    }

    pub fn limit(&self, phase: Phase) -> Duration {
        Duration::from_micros(self.limit_us(phase))
    }
}

/// One timer following the phases of a transaction. With no timeouts set it never allocates.
pub struct Watch {
    timeouts: Timeouts,
    phase: Option<Phase>,
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl Watch {
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    #[inline(always)]
    pub fn new(timeouts: Timeouts) -> Watch {
        Watch {
            timeouts,
            phase: None,
            timer: None,
            armed: false,
        }
    }

    /// Starts the current phase's limit over (after query_timeout's cancel: the answer to it
    /// gets as long again).
    pub fn rearm(&mut self) {
        self.phase = None;
    }

    /// Ready with the phase that outlived its limit; it fires once per phase.
    pub fn poll(&mut self, cx: &mut Context<'_>, t: &Tracker) -> Poll<Phase> {
        let phase = Phase::of(t);
        if self.phase != Some(phase) {
            self.phase = Some(phase);
            self.armed = self.timeouts.limit_us(phase) > 0;
            if self.armed {
                let limit = self.timeouts.limit(phase);
                let deadline = Instant::now() + limit;
                match &mut self.timer {
                    Some(timer) => timer.as_mut().reset(deadline),
                    None => self.timer = Some(Box::pin(sleep(limit))),
                }
            }
        }
        if !self.armed {
            return Poll::Pending;
        }
        let fired = self
            .timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        if !fired {
            return Poll::Pending;
        }
        self.armed = false;
        Poll::Ready(phase)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases() {
        let busy = Tracker {
            pending: 1,
            unsynced: false,
            status: b'I',
            ..Tracker::default()
        };
        let unsynced = Tracker {
            pending: 0,
            unsynced: true,
            status: b'T',
            ..Tracker::default()
        };
        let in_tx = Tracker {
            pending: 0,
            unsynced: false,
            status: b'E',
            ..Tracker::default()
        };
        assert_eq!(Phase::of(&busy), Phase::Busy);
        assert_eq!(Phase::of(&unsynced), Phase::Busy);
        assert_eq!(Phase::of(&in_tx), Phase::IdleInTransaction);
        assert_eq!(Phase::of(&Tracker::default()), Phase::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn fires_once_per_phase_and_rearms_on_change() {
        let timeouts = Timeouts {
            query_us: 2_000_000,
            ..Default::default()
        };
        let mut watch = Watch::new(timeouts);
        let mut t = Tracker {
            pending: 1,
            unsynced: false,
            status: b'I',
            ..Tracker::default()
        };
        let fired = std::future::poll_fn(|cx| watch.poll(cx, &t)).await;
        assert_eq!(fired, Phase::Busy);
        // No timeout for idle-in-transaction: nothing fires there.
        t = Tracker {
            pending: 0,
            unsynced: false,
            status: b'T',
            ..Tracker::default()
        };
        let waited = tokio::time::timeout(Duration::from_secs(10), std::future::poll_fn(|cx| watch.poll(cx, &t))).await;
        assert!(waited.is_err());
        t.pending = 1;
        let fired = std::future::poll_fn(|cx| watch.poll(cx, &t)).await;
        assert_eq!(fired, Phase::Busy);
    }
}
