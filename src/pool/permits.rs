//! A semaphore whose size a reload can change while permits are out.
//!
//! Growing adds permits at once. Shrinking forgets the permits that are free now and records
//! the rest as a debt, paid by forgetting permits as they come back, so the number of permits in
//! circulation reaches the new size as soon as enough holders are done, and no holder is
//! disturbed meanwhile.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::sync::Semaphore;

/// Free permits live in `free`, an atomic counter that a checkout and a check-in each change
/// with one instruction, while nobody waits; they move to the semaphore, whose queue keeps the
/// waiters' order, only when someone waits (the semaphore's release takes its lock every time).
pub struct Permits {
    /// Not behind an Arc: a permit borrows its `Permits` (owned permits would bump a reference
    /// count shared by every worker thread on each checkout and check-in).
    sem: Semaphore,
    /// Free permits outside the semaphore.
    free: AtomicUsize,
    /// `acquire` calls under way: while there are any, returned permits go to the semaphore.
    waiting: AtomicUsize,
    /// Permits still to take out of circulation as they come back.
    debt: AtomicU32,
    /// The size last asked for; resizes are serialised by this lock.
    size: Mutex<u32>,
}

impl Permits {
    pub fn new(size: u32) -> Permits {
        Permits {
            sem: Semaphore::new(0),
            free: AtomicUsize::new(size as usize),
            waiting: AtomicUsize::new(0),
            debt: AtomicU32::new(0),
            size: Mutex::new(size),
        }
    }

    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        if self.take_free() {
            return Some(Permit { permits: self });
        }
        let permit = self.sem.try_acquire().ok()?;
        permit.forget();
        Some(Permit { permits: self })
    }

    fn take_free(&self) -> bool {
        self.take_free_upto(1) == 1
    }

    /// Takes up to `n` permits from `free`; returns how many.
    fn take_free_upto(&self, n: usize) -> usize {
        let mut free = self.free.load(Ordering::Relaxed);
        loop {
            let take = free.min(n);
            if take == 0 {
                return 0;
            }
            match self
                .free
                .compare_exchange_weak(free, free - take, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => return take,
                Err(now) => free = now,
            }
        }
    }

    /// Waits in FIFO order for a permit.
    pub async fn acquire(&self) -> Permit<'_> {
        // Counted before `free` is looked at, and `give_back` adds to `free` before it looks at
        // the count (both SeqCst): a permit returned meanwhile is either seen here or moved to
        // the semaphore for the waiters.
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        if self.take_free() {
            return Permit { permits: self };
        }
        match self.sem.acquire().await {
            Ok(permit) => permit.forget(),
            // The semaphore is never closed.
            Err(_) => std::future::pending().await,
        }
        Permit { permits: self }
    }

    /// Returns a permit, or takes it out of circulation while a shrink is still owed.
    pub fn give_back(&self) {
        if self.debt.load(Ordering::Relaxed) > 0
            && self
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |d| d.checked_sub(1))
                .is_ok()
        {
            return;
        }
        self.free.fetch_add(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 && self.take_free() {
            self.sem.add_permits(1);
        }
    }

    pub fn resize(&self, new: u32) {
        let mut size = self.size.lock().unwrap_or_else(|e| e.into_inner());
        let old = *size;
        *size = new;
        if new > old {
            let mut grow = new - old;
            // Cancel what is still owed before adding permits.
            while grow > 0 {
                let debt = self.debt.load(Ordering::Acquire);
                let cancel = debt.min(grow);
                if cancel == 0 {
                    break;
                }
                if self
                    .debt
                    .compare_exchange(debt, debt - cancel, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    grow -= cancel;
                }
            }
            // Through the semaphore: waiters get them first, `try_acquire` finds the rest.
            self.sem.add_permits(grow as usize);
        } else if new < old {
            let shrink = old - new;
            let forgotten = self.forget_free(shrink);
            self.debt.fetch_add(shrink - forgotten, Ordering::AcqRel);
        }
    }

    /// Takes up to `n` free permits out of circulation; returns how many.
    fn forget_free(&self, n: u32) -> u32 {
        let from_free = self.take_free_upto(n as usize) as u32;
        from_free + self.sem.forget_permits((n - from_free) as usize) as u32
    }

    /// Pays what is owed from permits that are free now.
    pub fn collect_debt(&self) {
        let _size = self.size.lock().unwrap_or_else(|e| e.into_inner());
        let debt = self.debt.load(Ordering::Acquire);
        if debt > 0 {
            let forgotten = self.forget_free(debt);
            self.debt.fetch_sub(forgotten, Ordering::AcqRel);
        }
    }

    /// The configured size.
    pub fn size(&self) -> u32 {
        *self.size.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Permits free right now.
    pub fn available(&self) -> usize {
        self.free.load(Ordering::Relaxed) + self.sem.available_permits()
    }
}

/// One `acquire` under way, uncounted when it ends or is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The right to own one server connection, given back when dropped. A lease keeps it
/// (`keep`) and gives it back itself (`Permits::give_back`) when it ends.
pub struct Permit<'a> {
    permits: &'a Permits,
}

impl Permit<'_> {
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.permits.give_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_and_shrink_with_permits_out() {
        let p = Permits::new(2);
        let a = p.try_acquire().unwrap();
        let b = p.try_acquire().unwrap();
        assert!(p.try_acquire().is_none());
        p.resize(3);
        let c = p.try_acquire().unwrap();
        assert!(p.try_acquire().is_none());
        // Shrink to 1 with three out: two must be taken back as they return.
        p.resize(1);
        drop(a);
        drop(b);
        assert!(p.try_acquire().is_none());
        drop(c);
        let d = p.try_acquire().unwrap();
        assert!(p.try_acquire().is_none());
        // Shrink then grow before anything came back: the debt is cancelled first.
        p.resize(0);
        p.resize(2);
        drop(d);
        let _e = p.try_acquire().unwrap();
        let _f = p.try_acquire().unwrap();
        assert!(p.try_acquire().is_none());
    }

    #[test]
    fn a_waiter_gets_the_permit_returned_after_it_began_to_wait() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let p = Permits::new(1);
        let held = p.try_acquire().unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        let mut first = Box::pin(p.acquire());
        let mut second = Box::pin(p.acquire());
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        drop(held);
        // The returned permit went to the waiters, not to `free`: no newcomer takes it.
        assert!(p.try_acquire().is_none());
        let Poll::Ready(got) = first.as_mut().poll(&mut cx) else {
            panic!("the first waiter should have the permit");
        };
        assert!(second.as_mut().poll(&mut cx).is_pending());
        drop(got);
        assert!(matches!(second.as_mut().poll(&mut cx), Poll::Ready(_)));
        assert_eq!(p.waiting.load(Ordering::SeqCst), 0, "both waits are over");
    }

    #[test]
    fn a_cancelled_wait_loses_no_permit() {
        use std::future::Future;
        use std::task::{Context, Waker};
        let p = Permits::new(1);
        let held = p.try_acquire().unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        let mut wait = Box::pin(p.acquire());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        drop(wait);
        drop(held);
        assert_eq!(p.available(), 1);
        assert!(p.try_acquire().is_some());
    }

    #[test]
    fn dropped_permits_are_collected() {
        let p = Permits::new(2);
        let a = p.try_acquire().unwrap();
        p.resize(1);
        drop(a); // pays the debt
        p.collect_debt();
        let _b = p.try_acquire().unwrap();
        assert!(p.try_acquire().is_none());
    }
}
