//! A semaphore whose size a reload can change while permits are out.
//!
//! Growing adds permits at once. Shrinking forgets the permits that are free now and records
//! the rest as a debt, paid by forgetting permits as they come back, so the number of permits in
//! circulation reaches the new size as soon as enough holders are done, and no holder is
//! disturbed meanwhile.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use tokio::sync::Semaphore;

pub struct Permits {
    /// Not behind an Arc: a permit borrows its `Permits` (owned permits would bump a reference
    /// count shared by every worker thread on each checkout and check-in).
    sem: Semaphore,
    /// Permits still to take out of circulation as they come back.
    debt: AtomicU32,
    /// The size last asked for; resizes are serialised by this lock.
    size: Mutex<u32>,
}

impl Permits {
    pub fn new(size: u32) -> Permits {
        Permits {
            sem: Semaphore::new(size as usize),
            debt: AtomicU32::new(0),
            size: Mutex::new(size),
        }
    }

    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        let permit = self.sem.try_acquire().ok()?;
        permit.forget();
        Some(Permit { permits: self })
    }

    /// Waits in FIFO order for a permit.
    pub async fn acquire(&self) -> Permit<'_> {
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
        self.sem.add_permits(1);
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
            self.sem.add_permits(grow as usize);
        } else if new < old {
            let shrink = old - new;
            let forgotten = self.sem.forget_permits(shrink as usize) as u32;
            self.debt.fetch_add(shrink - forgotten, Ordering::AcqRel);
        }
    }

    /// Pays what is owed from permits that are free now.
    pub fn collect_debt(&self) {
        let _size = self.size.lock().unwrap_or_else(|e| e.into_inner());
        let debt = self.debt.load(Ordering::Acquire);
        if debt > 0 {
            let forgotten = self.sem.forget_permits(debt as usize) as u32;
            self.debt.fetch_sub(forgotten, Ordering::AcqRel);
        }
    }

    /// The configured size.
    pub fn size(&self) -> u32 {
        *self.size.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Permits free right now.
    pub fn available(&self) -> usize {
        self.sem.available_permits()
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
