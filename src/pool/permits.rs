//! A semaphore whose size a reload can change while permits are out, with its own FIFO of
//! waiters.
//!
//! Growing adds permits at once. Shrinking forgets the permits that are free now and records
//! the rest as a debt, paid by forgetting permits as they come back, so the number of permits in
//! circulation reaches the new size as soon as enough holders are done, and no holder is
//! disturbed meanwhile.
//!
//! The waiters' queue is a plain list behind a lock, and a waiter's deadline
//! (query_wait_timeout) is enforced by the pool's janitor sweeping the front of the queue
//! (`expire`), as PgBouncer's janitor does: no timer per wait. The queue owns its entries and a
//! wait finds its own by ticket, so a wait allocates nothing and takes one lock. Measured with
//! most transactions waiting (`INSTR_POOL_SIZE=3 benches/instructions.sh`): tokio's semaphore
//! and a timer per wait cost about 1,600 instructions per transaction more; an `Arc`ed entry
//! with a lock of its own, about 150 more.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Free permits live in `free`, an atomic counter that a checkout and a check-in each change
/// with one instruction while nobody waits; a permit given back while someone waits goes to the
/// first waiter, under the queue's lock.
pub struct Permits {
    /// Free permits.
    free: AtomicUsize,
    queue: Mutex<Queue>,
    /// Entries in the queue, read without the lock by `give_back`.
    waiting: AtomicUsize,
    /// Permits still to take out of circulation as they come back.
    debt: AtomicU32,
    /// The size last asked for; resizes are serialised by this lock.
    size: Mutex<u32>,
}

/// The waits, oldest first. A wait's entry stays until the wait has seen how it ended, and
/// leaves when it reaches the front: a wait finds its entry by its ticket, `ticket - head`.
#[derive(Default)]
struct Queue {
    /// The ticket of `entries[0]`.
    head: u64,
    entries: VecDeque<Entry>,
}

struct Entry {
    /// When the wait began (`stats::now_us`), for `expire`.
    since_us: u64,
    state: WaitState,
    waker: Option<Waker>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum WaitState {
    Waiting,
    /// A permit was handed to it and not collected yet.
    Granted,
    TimedOut,
    /// Collected, or given up: the entry leaves when it reaches the front.
    Done,
}

impl Queue {
    fn entry(&mut self, ticket: u64) -> Option<&mut Entry> {
        let at = usize::try_from(ticket.checked_sub(self.head)?).ok()?;
        self.entries.get_mut(at)
    }

    fn pop_done(&mut self) {
        while self.entries.front().is_some_and(|e| e.state == WaitState::Done) {
            self.entries.pop_front();
            self.head += 1;
        }
    }
}

/// Ends a waiting entry as `to`, waking its task.
fn settle(entry: &mut Entry, to: WaitState) {
    entry.state = to;
    if let Some(waker) = entry.waker.take() {
        waker.wake();
    }
}

/// How a wait for a permit ended.
pub enum Acquired<'a> {
    Permit(Permit<'a>),
    /// Waited past the deadline `Permits::expire` enforces.
    TimedOut,
}

impl Permits {
    pub fn new(size: u32) -> Permits {
        Permits {
            free: AtomicUsize::new(size as usize),
            queue: Mutex::new(Queue::default()),
            waiting: AtomicUsize::new(0),
            debt: AtomicU32::new(0),
            size: Mutex::new(size),
        }
    }

    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        // Not `then_some`: a Permit made and dropped would give a permit back.
        match self.take_free() {
            true => Some(Permit { permits: self }),
            false => None,
        }
    }

    fn take_free(&self) -> bool {
        self.take_free_upto(1) == 1
    }

    /// Takes up to `n` permits from `free`; returns how many.
    fn take_free_upto(&self, n: usize) -> usize {
        let mut free = self.free.load(Ordering::SeqCst);
        loop {
            let take = free.min(n);
            if take == 0 {
                return 0;
            }
            match self
                .free
                .compare_exchange_weak(free, free - take, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return take,
                Err(now) => free = now,
            }
        }
    }

    /// Ends a wait's entry (it leaves once it reaches the front); returns its state before.
    fn leave(&self, queue: &mut Queue, ticket: u64) -> Option<WaitState> {
        let was = queue
            .entry(ticket)
            .map(|e| std::mem::replace(&mut e.state, WaitState::Done));
        queue.pop_done();
        self.waiting.store(queue.entries.len(), Ordering::SeqCst);
        was
    }

    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands free permits to the oldest waits, with the queue locked, after `free` grew or a
    /// wait joined. A joining wait stores `waiting` before this looks at `free`, and
    /// `add_free` grows `free` before it looks at `waiting` (all SeqCst): whichever comes
    /// second sees the other, so no permit stays free while someone waits.
    fn dispatch(&self, queue: &mut Queue) {
        queue.pop_done();
        for entry in queue.entries.iter_mut() {
            if entry.state != WaitState::Waiting {
                continue;
            }
            if !self.take_free() {
                break;
            }
            settle(entry, WaitState::Granted);
        }
        self.waiting.store(queue.entries.len(), Ordering::SeqCst);
    }

    /// Waits in FIFO order for a permit; `since_us` (`stats::now_us`) is when the wait began,
    /// for `expire`.
    pub fn acquire(&self, since_us: u64) -> Acquire<'_> {
        Acquire {
            permits: self,
            since_us,
            ticket: None,
        }
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
        self.add_free(1);
    }

    fn add_free(&self, n: usize) {
        self.free.fetch_add(n, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.dispatch(&mut self.lock_queue());
        }
    }

    /// Ends the waits that began before `now_us - timeout_us` (query_wait_timeout): they
    /// wake up with `Acquired::TimedOut`. Called by the pool's janitor.
    pub fn expire(&self, now_us: u64, timeout_us: u64) {
        if timeout_us == 0 || self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut queue = self.lock_queue();
        for entry in queue.entries.iter_mut() {
            if now_us.saturating_sub(entry.since_us) < timeout_us {
                break; // the rest began later
            }
            if entry.state == WaitState::Waiting {
                settle(entry, WaitState::TimedOut);
            }
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
            // Waiters get them first, `try_acquire` finds the rest.
            if grow > 0 {
                self.add_free(grow as usize);
            }
        } else if new < old {
            let shrink = old - new;
            let forgotten = self.take_free_upto(shrink as usize) as u32;
            self.debt.fetch_add(shrink - forgotten, Ordering::AcqRel);
        }
    }

    /// Pays what is owed from permits that are free now.
    pub fn collect_debt(&self) {
        let _size = self.size.lock().unwrap_or_else(|e| e.into_inner());
        let debt = self.debt.load(Ordering::Acquire);
        if debt > 0 {
            let forgotten = self.take_free_upto(debt as usize) as u32;
            self.debt.fetch_sub(forgotten, Ordering::AcqRel);
        }
    }

    /// The configured size.
    pub fn size(&self) -> u32 {
        *self.size.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Permits free right now.
    pub fn available(&self) -> usize {
        self.free.load(Ordering::Relaxed)
    }
}

/// A wait for a permit (`Permits::acquire`). Dropped before it ends, it leaves the queue, and
/// a permit handed to it meanwhile goes back.
pub struct Acquire<'a> {
    permits: &'a Permits,
    since_us: u64,
    /// Its place in the queue, once it joined.
    ticket: Option<u64>,
}

impl<'a> Future for Acquire<'a> {
    type Output = Acquired<'a>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Acquired<'a>> {
        let permits = self.permits;
        let mut queue = match self.ticket {
            Some(_) => permits.lock_queue(),
            None => {
                if permits.take_free() {
                    return Poll::Ready(Acquired::Permit(Permit { permits }));
                }
                let mut queue = permits.lock_queue();
                self.ticket = Some(queue.head + queue.entries.len() as u64);
                queue.entries.push_back(Entry {
                    since_us: self.since_us,
                    state: WaitState::Waiting,
                    waker: None,
                });
                // Published before `dispatch` looks at `free`: a permit returned meanwhile
                // either is seen there or its `add_free` sees this wait.
                permits.waiting.store(queue.entries.len(), Ordering::SeqCst);
                permits.dispatch(&mut queue);
                queue
            }
        };
        let Some(ticket) = self.ticket else {
            return Poll::Pending;
        };
        let Some(entry) = queue.entry(ticket) else {
            // Not in the queue (cannot happen while the wait holds its ticket): wait for nothing.
            return Poll::Pending;
        };
        let out = match entry.state {
            WaitState::Waiting => {
                if !entry.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    entry.waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            WaitState::Granted => Acquired::Permit(Permit { permits }),
            WaitState::TimedOut => Acquired::TimedOut,
            WaitState::Done => return Poll::Pending,
        };
        permits.leave(&mut queue, ticket);
        drop(queue);
        self.ticket = None;
        Poll::Ready(out)
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else { return };
        let was = self.permits.leave(&mut self.permits.lock_queue(), ticket);
        if was == Some(WaitState::Granted) {
            self.permits.give_back();
        }
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
    use std::sync::Arc;
    use std::task::Wake;
    use std::time::{Duration, Instant};

    type Wait<'a> = Pin<Box<Acquire<'a>>>;

    fn poll<'a>(wait: &mut Wait<'a>) -> Poll<Acquired<'a>> {
        wait.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    }

    /// A wait that has joined the queue (its first poll found no permit).
    fn queued(p: &Permits, since_us: u64) -> Wait<'_> {
        let mut wait = Box::pin(p.acquire(since_us));
        assert!(poll(&mut wait).is_pending());
        wait
    }

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
        let p = Permits::new(1);
        let held = p.try_acquire().unwrap();
        let mut first = queued(&p, 0);
        let mut second = queued(&p, 0);
        drop(held);
        // The returned permit went to the waiters, not to `free`: no newcomer takes it.
        assert!(p.try_acquire().is_none());
        let Poll::Ready(Acquired::Permit(got)) = poll(&mut first) else {
            panic!("the first waiter should have the permit");
        };
        assert!(poll(&mut second).is_pending());
        drop(got);
        assert!(matches!(poll(&mut second), Poll::Ready(Acquired::Permit(_))));
        assert_eq!(p.waiting.load(Ordering::SeqCst), 0, "both waits are over");
    }

    #[test]
    fn a_cancelled_wait_loses_no_permit() {
        let p = Permits::new(1);
        let held = p.try_acquire().unwrap();
        let wait = queued(&p, 0);
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

    #[test]
    fn a_permit_handed_to_a_wait_that_ends_goes_to_the_next() {
        let p = Permits::new(1);
        let held = p.try_acquire().unwrap();
        let first = queued(&p, 0);
        let mut second = queued(&p, 0);
        drop(held); // handed to the first wait, which is dropped before it looks
        drop(first);
        assert!(matches!(poll(&mut second), Poll::Ready(Acquired::Permit(_))));
        assert_eq!(p.available(), 1, "the second gave it back as its result dropped");
    }

    #[test]
    fn waits_past_the_deadline_time_out_oldest_first() {
        let p = Permits::new(1);
        let _held = p.try_acquire().unwrap();
        let mut old = queued(&p, 1_000);
        let mut young = queued(&p, 5_000);
        p.expire(3_500, 2_000);
        assert!(matches!(poll(&mut old), Poll::Ready(Acquired::TimedOut)));
        assert!(poll(&mut young).is_pending(), "not waited 2 ms yet");
        p.expire(3_500, 0); // no query_wait_timeout: nothing times out
        assert!(poll(&mut young).is_pending());
        p.expire(7_000, 2_000);
        assert!(matches!(poll(&mut young), Poll::Ready(Acquired::TimedOut)));
        assert_eq!(p.waiting.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn growing_serves_the_waiters_first() {
        let p = Permits::new(0);
        let mut wait = queued(&p, 0);
        p.resize(2);
        assert!(matches!(poll(&mut wait), Poll::Ready(Acquired::Permit(_))));
        assert!(p.try_acquire().is_some(), "the second is free");
    }

    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    /// Waits for a permit on this thread; None when none came within `limit`.
    fn acquire_within(p: &Permits, limit: Duration) -> Option<Permit<'_>> {
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut wait = Box::pin(p.acquire(0));
        let deadline = Instant::now() + limit;
        loop {
            if let Poll::Ready(Acquired::Permit(permit)) = wait.as_mut().poll(&mut cx) {
                return Some(permit);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            std::thread::park_timeout(deadline - now);
        }
    }

    fn spin(n: u32) {
        for _ in 0..n {
            std::hint::spin_loop();
        }
    }

    /// A permit returned on one thread while another joins the queue on another must reach the
    /// waiter: the joiner publishes that it waits before it looks for a free permit, and the
    /// returner looks for waiters after it freed one, so one of the two sees the other. The two
    /// threads start each round together and each waits a varying few spins first, so the
    /// return lands at every point of the join over the rounds.
    #[test]
    fn a_permit_returned_while_a_wait_joins_is_not_lost() {
        const ROUNDS: u32 = 200_000;
        let p = Arc::new(Permits::new(1));
        let round = Arc::new(AtomicU32::new(0));
        let returner = {
            let (p, round) = (p.clone(), round.clone());
            std::thread::spawn(move || {
                for r in 1..=ROUNDS {
                    while round.load(Ordering::Acquire) < r {
                        std::hint::spin_loop();
                    }
                    spin(r.wrapping_mul(2_654_435_761) >> 26);
                    p.give_back();
                }
            })
        };
        let held = p.try_acquire().map(Permit::keep);
        assert!(held.is_some());
        for r in 1..=ROUNDS {
            round.store(r, Ordering::Release);
            spin(r.wrapping_mul(40_503) >> 10 & 63);
            let got = acquire_within(&p, Duration::from_secs(2)).map(Permit::keep);
            assert!(
                got.is_some(),
                "round {r}: the returned permit stayed free while a wait waited"
            );
        }
        let _ = returner.join();
    }
}
