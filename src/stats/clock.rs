//! The data path's clock: microseconds since pgmux started, read from the system once per turn
//! of a worker's event loop (when it wakes from the reactor) and served from a thread-local
//! copy in between, so a transaction costs no clock reads of its own. A worker that stays busy
//! without waking from the reactor refreshes the copy every `REFRESH_EVERY` reads, so it is
//! never more than a few transactions old. Threads that are not workers read the system clock.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

static START: OnceLock<(Instant, SystemTime)> = OnceLock::new();

/// Reads served from the copy before the system clock is read again.
const REFRESH_EVERY: u32 = 32;

thread_local! {
    /// (the copy in µs, reads left before a refresh); reads left 0: no copy (not a worker).
    static CACHED: Cell<(u64, u32)> = const { Cell::new((0, 0)) };
}

pub(super) fn start() -> &'static (Instant, SystemTime) {
    START.get_or_init(|| (Instant::now(), SystemTime::now()))
}

/// The system clock, in µs since the start.
fn read() -> u64 {
    start().0.elapsed().as_micros() as u64
}

/// Microseconds since pgmux started: what the data path stores as a time.
#[inline]
pub fn now_us() -> u64 {
    CACHED.with(|c| match c.get() {
        (_, 0) => read(),
        (_, 1) => {
            let now = read();
            c.set((now, REFRESH_EVERY));
            now
        }
        (now, left) => {
            c.set((now, left - 1));
            now
        }
    })
}

/// A duration in this clock's unit (µs), saturating.
pub fn as_us(d: std::time::Duration) -> u64 {
    d.as_micros().min(u64::MAX.into()) as u64
}

/// A worker woke from its reactor: refresh its copy (the runtime's `on_thread_unpark` hook).
pub fn tick() {
    CACHED.with(|c| c.set((read(), REFRESH_EVERY)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_reads_the_copy_and_refreshes_it() {
        let outside = now_us();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(now_us() >= outside + 2000, "not a worker: the system clock");
        tick();
        let copy = now_us();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(now_us(), copy, "served from the copy");
        // The copy is refreshed after REFRESH_EVERY reads at most.
        let later = (0..REFRESH_EVERY).map(|_| now_us()).max().unwrap_or(0);
        assert!(later >= copy + 2000, "refreshed: {later} vs {copy}");
        tick();
        assert!(now_us() >= copy + 2000);
    }
}
