//! Limits shared by several pools: `max_db_connections` (every pool of one database, whatever
//! its user) and `max_user_connections` (every pool logging in as one user, whatever its
//! database).
//!
//! Each limit counts the server connections open under it. Opening a connection takes a slot
//! from both limits of its pool; closing one gives both back and wakes whoever waits for a slot.
//! A pool that finds its database full may close an idle connection of another pool of that
//! database to make room (PgBouncer does the same); failing that, it waits.

use crate::stats::CloseReason;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::Notify;

/// A pool as a limit sees it: one whose idle connections may be closed to make room for
/// another's. (A trait, so that `limits` need not know `Pool`, which holds its limits.)
pub trait Member: std::fmt::Display + Send + Sync {
    fn idle_count(&self) -> usize;
    fn close_one_idle(&self, why: &str, reason: CloseReason) -> bool;
}

/// Which setting a limit enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Database,
    User,
}

impl LimitKind {
    pub fn setting(self) -> &'static str {
        match self {
            LimitKind::Database => "max_db_connections",
            LimitKind::User => "max_user_connections",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            LimitKind::Database => "database",
            LimitKind::User => "user",
        }
    }
}

pub struct Limit {
    pub kind: LimitKind,
    pub name: String,
    /// 0: unlimited (the connections are still counted, for a reload that sets a limit).
    max: AtomicU32,
    open: AtomicU32,
    /// Checkouts waiting for a slot here (or for an idle connection of their own pool).
    waiting: AtomicU32,
    freed: Notify,
    /// The pools under this limit, whose idle connections may be closed to make room.
    pools: Mutex<Vec<Weak<dyn Member>>>,
}

impl Limit {
    pub fn new(kind: LimitKind, name: &str, max: u32) -> Limit {
        Limit {
            kind,
            name: name.to_owned(),
            max: AtomicU32::new(max),
            open: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
            freed: Notify::new(),
            pools: Mutex::new(Vec::new()),
        }
    }

    pub fn max(&self) -> u32 {
        self.max.load(Ordering::Relaxed)
    }

    pub fn set_max(&self, max: u32) {
        if self.max.swap(max, Ordering::AcqRel) != max {
            // A raised limit lets waiters in.
            self.freed.notify_waiters();
        }
    }

    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Relaxed)
    }

    /// Takes a slot if the limit allows one more connection.
    pub fn try_take(&self) -> bool {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |open| {
                let max = self.max.load(Ordering::Relaxed);
                (max == 0 || open < max).then_some(open + 1)
            })
            .is_ok()
    }

    /// Counts a connection opened outside the limit (passthrough verification).
    pub fn force_take(&self) {
        self.open.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether more connections are open than the limit allows (after a forced one, or a reload
    /// that lowered it).
    pub fn over(&self) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        max != 0 && self.open.load(Ordering::Relaxed) > max
    }

    /// Undoes a `try_take` made a moment ago without waking anyone: a waiter woken by it
    /// would be the caller itself, which would then spin. (Another checkout that found the limit
    /// full during that moment waits for the next connection to come free, at worst until
    /// query_wait_timeout.)
    pub fn untake(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn put_back(&self, n: u32) {
        if n == 0 {
            return;
        }
        self.open.fetch_sub(n, Ordering::AcqRel);
        self.wake();
    }

    /// Wakes the waiters, if any (a slot or an idle connection came free).
    pub fn wake(&self) {
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.freed.notify_waiters();
        }
    }

    pub fn has_waiters(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    pub fn register<P: Member + 'static>(&self, pool: &Arc<P>) {
        let pool: Arc<dyn Member> = pool.clone();
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(&pool));
    }

    /// Closes one idle connection of another pool under this limit; true if one was closed.
    pub fn evict_idle(&self, except: &dyn Member) -> bool {
        let pools: Vec<Arc<dyn Member>> = {
            let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
            pools.retain(|p| p.strong_count() > 0);
            pools.iter().filter_map(Weak::upgrade).collect()
        };
        // The pool with the most idle connections gives one up.
        let victim = pools
            .iter()
            .filter(|p| !std::ptr::addr_eq(Arc::as_ptr(p), except))
            .max_by_key(|p| p.idle_count());
        match victim {
            Some(pool) => pool.close_one_idle(
                &format!("making room under {} for pool {except}", self.kind.setting()),
                CloseReason::Idle,
            ),
            None => false,
        }
    }

    /// Registers a waiter until the guard drops; `notified` must be enabled before the caller
    /// checks for a slot, so a slot freed in between is not missed.
    pub fn waiter(&self) -> Waiter<'_> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        Waiter(self)
    }

    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }

    /// "max_db_connections (2) reached for database bench".
    pub fn describe(&self) -> String {
        format!(
            "{} ({}) reached for {} {}",
            self.kind.setting(),
            self.max(),
            self.kind.noun(),
            self.name
        )
    }
}

pub struct Waiter<'a>(&'a Limit);

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_against_the_max() {
        let limit = Limit::new(LimitKind::Database, "bench", 2);
        assert!(limit.try_take());
        assert!(limit.try_take());
        assert!(!limit.try_take());
        limit.force_take();
        assert!(limit.over());
        limit.put_back(2);
        assert!(!limit.over());
        assert!(limit.try_take());
        assert!(!limit.try_take());
        limit.set_max(0);
        assert!(limit.try_take());
        assert_eq!(limit.open(), 3);
        assert_eq!(limit.describe(), "max_db_connections (0) reached for database bench");
    }
}
