//! Client sessions run on their worker's own small executor, not as tokio tasks.
//!
//! Each worker has one tokio task, the runner, that polls the sessions woken since it last ran,
//! with wakers of this module. A session's wake-up is then a flag and a queue push, not a tokio
//! task's schedule, run and state changes (measured: 4,959 -> 4,692 instructions per `-S`
//! transaction, two wake-ups each), and an idle session costs one allocation sized to its future
//! instead of tokio's 128-byte-aligned task cell. The runner also reads the worker's socket
//! events (`stream::reactor`) before it polls; tokio's timers wake these wakers like any other,
//! and a session may still spawn tokio tasks.
//!
//! A task's future is polled only on its worker's thread; a wake from another thread (a cancel,
//! a permit given back elsewhere, a blocking login check) goes through the worker's inbox.

use crate::stats::now_us;
use crate::stream::reactor::{Driving, Io, Reactor};
use std::cell::{Cell, UnsafeCell};
use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use tokio_util::task::task_tracker::TaskTrackerToken;

/// Sessions polled in one run of the runner before it lets tokio's other tasks and its reactor
/// have the thread (tokio's own budget is 128 operations per task poll).
const RUNS_PER_TURN: usize = 128;

/// The longest the runner sleeps in its own reactor (see `Home::sleep`): tokio's timers, whose
/// deadlines it does not tell, fire only once it has the thread back, so an idle worker's may
/// be this late. Not shorter: the kernel arms a timer for the sleep, and one that is the CPU's
/// earliest is programmed into the hardware on every sleep and again when an event ends it
/// (measured at `pgbench -S -c 1`: 1 ms cost about 6 µs of kernel time per transaction, 10 and
/// 100 ms nothing).
const SLEEP_MS: i32 = 10;

/// While the runner keeps finding work after its sleeps, it sleeps no more once this much time
/// has passed since it took the thread (µs), and tokio gets the thread back (for its timers)
/// when it next runs out of work: tokio's timers on a worker are late by at most about this and
/// one sleep. Each return costs tokio's park and a wake-up of the runner (at 1 ms, about 80
/// instructions per `-S` transaction).
const TOKIO_EVERY_US: u64 = SLEEP_MS as u64 * 1_000;

type Run = Arc<dyn Runnable>;

trait Runnable: Send + Sync {
    /// Polls the task's future once. Only on its home thread.
    fn run(self: Arc<Self>);
}

/// A worker's executor. Other threads see `inbox` and `runner`; `local` is its thread's alone.
struct Home {
    /// Tasks woken from other threads, moved to the local queue by the runner.
    inbox: Mutex<Vec<Run>>,
    inbox_full: AtomicBool,
    /// The runner's waker, for wakes from other threads.
    runner: Mutex<Option<Waker>>,
    /// The runner sleeps in its reactor (`sleep`), where tokio's waker does not reach it: a
    /// wake from another thread rings `bell`, an eventfd in that reactor.
    sleeping: AtomicBool,
    bell: Option<Bell>,
    local: UnsafeCell<Local>,
}

/// An eventfd registered in the worker's reactor (no waker: its event only ends a sleep).
struct Bell {
    fd: OwnedFd,
    _io: Io,
}

impl Bell {
    fn new() -> std::io::Result<Bell> {
        // SAFETY: plain system call; its result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let io = Io::register(fd.as_raw_fd())?;
        Ok(Bell { fd, _io: io })
    }

    fn ring(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our own descriptor. It fails only when
        // the counter is full, which a pending ring makes needless anyway.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// Resets the counter, so the count never fills (each ring is an event of its own).
    fn quiet(&self) {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer from our own descriptor.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
    }
}

// SAFETY: `local` is only touched on the home thread (`HOME` says which), and never while
// another reference to it is alive: each access is one short borrow, none across a task's run.
unsafe impl Sync for Home {}
unsafe impl Send for Home {}

struct Local {
    queue: VecDeque<Run>,
    runner: Option<Waker>,
    /// The runner returned with nothing to do: the next local wake wakes it.
    idle: bool,
}

impl Home {
    /// SAFETY: on the home thread only, and the borrow must end before any task runs.
    #[allow(clippy::mut_from_ref)]
    unsafe fn local(&self) -> &mut Local {
        unsafe { &mut *self.local.get() }
    }

    fn push_local(&self, task: Run) {
        // SAFETY: the caller checked this is the home thread; nothing else borrows it now (a
        // wake comes from inside a task's run, when the runner holds no borrow, or from tokio).
        let local = unsafe { self.local() };
        local.queue.push_back(task);
        if local.idle {
            local.idle = false;
            if let Some(runner) = &local.runner {
                runner.wake_by_ref();
            }
        }
    }

    fn push_remote(&self, task: Run) {
        lock(&self.inbox).push(task);
        // SeqCst with `sleeping`: either the runner sees the inbox before it sleeps, or this
        // sees it sleeping and rings.
        self.inbox_full.store(true, Ordering::SeqCst);
        self.ring_if_sleeping();
        let runner = lock(&self.runner).clone();
        if let Some(runner) = runner {
            runner.wake();
        }
    }

    /// Ends the runner's sleep in its reactor, if it is asleep there.
    fn ring_if_sleeping(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            if let Some(bell) = &self.bell {
                bell.ring();
            }
        }
    }

    /// Moves the tasks woken from other threads to the local queue. True when there were
    /// any. On the home thread, with no borrow of `local` alive.
    fn take_inbox(&self) -> bool {
        if !self.inbox_full.swap(false, Ordering::AcqRel) {
            return false;
        }
        let mut inbox = lock(&self.inbox);
        // SAFETY: the caller is the runner, on the home thread, and holds no borrow of `local`.
        unsafe { self.local() }.queue.extend(inbox.drain(..));
        true
    }

    /// The runner has nothing to run: it blocks in its reactor (at most `SLEEP_MS`) instead of
    /// returning to tokio, which would block in its own epoll with the reactor's inside it and
    /// wake the runner through its scheduler: one `epoll_wait` and tokio's park and wake-up
    /// saved each time the worker sleeps. Only while tokio has nothing to do but its timers
    /// (`may_sleep`). True when events or wakes came (the queue may have tasks).
    ///
    /// A tokio task spawned onto this runtime from another thread while the runner sleeps is
    /// not seen until the sleep ends (at most `SLEEP_MS`): its spawner calls `nudge_all`.
    fn sleep(&self, reactor: &'static Reactor) -> bool {
        // As tokio's park does (`worker::before_sleep`): a thread ready on this core goes first.
        std::thread::yield_now();
        self.sleeping.store(true, Ordering::SeqCst);
        let events = match self.inbox_full.load(Ordering::SeqCst) {
            true => 1,
            false => reactor.sleep(SLEEP_MS),
        };
        self.sleeping.store(false, Ordering::Relaxed);
        crate::stats::clock::tick();
        let drained = self.take_inbox();
        if drained {
            if let Some(bell) = &self.bell {
                bell.quiet();
            }
        }
        events > 0 || drained
    }
}

/// Whether tokio has nothing to do on this thread but its timers: no task but the runner (the
/// listeners and sessions are the executor's), and no socket on tokio's reactor anywhere (TLS
/// and Unix sockets: `stream::tokio_io`).
fn may_sleep(metrics: &tokio::runtime::RuntimeMetrics) -> bool {
    metrics.num_alive_tasks() == 1 && !crate::stream::tokio_io::in_use()
}

/// Ends the sleep of every runner asleep in its own epoll: a tokio task was spawned onto a
/// worker's runtime from another thread (an upgrade's adopted client), and tokio's wake-up of
/// that runtime does not reach a runner sleeping there. Rare: it walks every executor.
pub fn nudge_all() {
    let homes: Vec<&'static Home> = lock(&HOMES).clone();
    homes.into_iter().for_each(Home::ring_if_sleeping);
}

/// Every executor started, by index. Never shrinks: a worker's executor lives as long as the
/// process (a test's runtime leaks one, a few hundred bytes).
static HOMES: Mutex<Vec<&'static Home>> = Mutex::new(Vec::new());

/// This module's locks are never held across anything that panics: were one poisoned, what it
/// guards is still whole (a push, a read, a swap), so it is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

thread_local! {
    /// This thread's executor and its index in `HOMES`.
    static HOME: Cell<Option<(u32, &'static Home)>> = const { Cell::new(None) };
}

struct Task<F> {
    queued: AtomicBool,
    /// Its executor's index in `HOMES`: four bytes beside `queued` where a pointer would be
    /// eight more, and an idle client's task is allocated in size classes (256, then 320).
    home: u32,
    /// The future and its place in the shutdown's count, dropped together when it ends.
    /// Touched only on the home thread (`run`), or by the last owner once no one can run it.
    future: UnsafeCell<Option<(F, TaskTrackerToken)>>,
}

// SAFETY: `future` is only accessed by `run`, which runs on the home thread and never
// re-entrantly (only the runner calls it), or dropped with the task by its last owner; F is Send.
unsafe impl<F: Send> Sync for Task<F> {}

impl<F: Future<Output = ()> + Send + 'static> Wake for Task<F> {
    fn wake(self: Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        match HOME.with(Cell::get) {
            Some((index, home)) if index == self.home => home.push_local(self),
            _ => {
                let home = {
                    let homes = lock(&HOMES);
                    homes.get(self.home as usize).copied()
                };
                if let Some(home) = home {
                    home.push_remote(self);
                }
            }
        }
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.load(Ordering::Acquire) {
            self.clone().wake();
        }
    }
}

impl<F: Future<Output = ()> + Send + 'static> Runnable for Task<F> {
    fn run(self: Arc<Self>) {
        self.queued.store(false, Ordering::Release);
        // SAFETY: see `unsafe impl Sync`: this is the home thread, and nothing else polls now.
        let slot = unsafe { &mut *self.future.get() };
        let Some((future, _)) = slot.as_mut() else {
            return; // ended; a stale wake-up
        };
        // The task's own reference lent as a waker, not a new one: no count taken and given
        // back per poll (a clone the future keeps takes its own).
        // SAFETY: `self` keeps the task alive for the whole poll, and ManuallyDrop keeps this
        // waker from giving back a count it never took.
        let waker = std::mem::ManuallyDrop::new(Waker::from(unsafe { Arc::from_raw(Arc::as_ptr(&self)) }));
        let mut cx = Context::from_waker(&waker);
        // SAFETY: the future lives inside the task's allocation and is never moved out of it:
        // it is dropped in place (`*slot = None`).
        let future = unsafe { Pin::new_unchecked(future) };
        let ended = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| future.poll(&mut cx))) {
            Ok(Poll::Pending) => false,
            Ok(Poll::Ready(())) => true,
            Err(_) => {
                // As tokio does for a task: the panic is reported (by the hook) and the task is
                // dropped; its session's Drop gives back what it held.
                tracing::error!("a client session panicked; its connection is closed");
                true
            }
        };
        if ended {
            *slot = None;
        }
    }
}

/// Starts this worker's executor on the current thread (a worker's, inside its runtime): its
/// runner is a task of that runtime, and `spawn` on this thread uses it.
pub fn start() {
    // The thread's socket reactor, read by the runner before it polls: an event wakes a session
    // straight onto the queue the runner is about to empty, and tokio sees one descriptor.
    let reactor = Reactor::start_driven()
        .inspect_err(|e| {
            // Sockets then get a reactor driven by a task of its own (`Reactor::current`).
            tracing::warn!(error = %e, "the worker's socket reactor could not start here");
        })
        .ok();
    // Without a bell the runner does not sleep in its reactor (a wake from elsewhere could not
    // end the sleep).
    let bell = reactor.as_ref().and_then(|_| {
        Bell::new()
            .inspect_err(|e| tracing::warn!(error = %e, "the worker's executor runs without its bell"))
            .ok()
    });
    let home: &'static Home = Box::leak(Box::new(Home {
        inbox: Mutex::new(Vec::new()),
        inbox_full: AtomicBool::new(false),
        runner: Mutex::new(None),
        sleeping: AtomicBool::new(false),
        bell,
        local: UnsafeCell::new(Local {
            queue: VecDeque::new(),
            runner: None,
            idle: false,
        }),
    }));
    let index = {
        let mut homes = lock(&HOMES);
        homes.push(home);
        homes.len() - 1
    };
    HOME.with(|h| h.set(Some((index as u32, home))));
    // Outside tokio's cooperative budget, which the runner's many sessions would otherwise
    // share (the relay yields by itself: `relay::YIELD_AFTER`): set once per turn, not per poll.
    tokio::spawn(tokio::task::unconstrained(runner(home, reactor)));
}

/// Runs `future` on this thread's executor, counted by `token`. Outside a worker it becomes a
/// tokio task.
pub fn spawn<F: Future<Output = ()> + Send + 'static>(token: TaskTrackerToken, future: F) {
    let Some((index, _)) = HOME.with(Cell::get) else {
        tokio::spawn(async move {
            future.await;
            drop(token);
        });
        return;
    };
    // Polled only inside the runner, which runs outside tokio's cooperative budget.
    let task = Arc::new(Task {
        queued: AtomicBool::new(false),
        home: index,
        future: UnsafeCell::new(Some((future, token))),
    });
    Waker::from(task).wake();
}

/// The worker's task that reads its sockets' events and polls its sessions.
async fn runner(home: &'static Home, reactor: Option<(&'static Reactor, Driving)>) {
    let metrics = tokio::runtime::Handle::current().metrics();
    // `reactor`'s guard lives as long as the runner: the reactor is marked dead when it drops.
    let driven = reactor.as_ref().map(|(r, _)| *r);
    loop {
        std::future::poll_fn(|cx| turn(home, driven, &metrics, cx)).await;
        // More to do after RUNS_PER_TURN polls: after tokio's timers (a yield lets tokio turn
        // its driver before it polls the runner again; a plain self-wake would not for up to
        // 61 polls, each of which may have slept), its other tasks and a look at its reactor.
        tokio::task::yield_now().await;
    }
}

/// One poll of the runner: Pending when it has nothing to run (woken by the next wake or
/// event), Ready after RUNS_PER_TURN polls without a sleep.
fn turn(
    home: &'static Home,
    reactor: Option<&'static Reactor>,
    metrics: &tokio::runtime::RuntimeMetrics,
    cx: &mut Context<'_>,
) -> Poll<()> {
    {
        // SAFETY: the runner is a task of the home thread's runtime; no task runs here.
        let local = unsafe { home.local() };
        if !local.runner.as_ref().is_some_and(|r| r.will_wake(cx.waker())) {
            local.runner = Some(cx.waker().clone());
            *lock(&home.runner) = Some(cx.waker().clone());
        }
        local.idle = false;
    }
    home.take_inbox();
    // After `idle` is reset: the sessions the events wake join the queue without waking the
    // runner, which is running (that wake would cost it one more poll for nothing).
    if let Some(reactor) = reactor {
        reactor.drive(cx);
    }
    // Without a bell a wake from another thread could not end a sleep: no sleeping then.
    let sleeper = reactor.filter(|_| home.bell.is_some());
    let took = now_us();
    let mut runs = 0;
    loop {
        // SAFETY: as above; the borrow ends before the task runs.
        let next = unsafe { home.local() }.queue.pop_front();
        if let Some(task) = next {
            task.run();
            runs += 1;
            if runs < RUNS_PER_TURN {
                continue;
            }
            return Poll::Ready(());
        }
        if let Some(reactor) = sleeper {
            if now_us().saturating_sub(took) < TOKIO_EVERY_US && may_sleep(metrics) && home.sleep(reactor) {
                runs = 0;
                continue;
            }
        }
        // SAFETY: as above.
        unsafe { home.local() }.idle = true;
        // Woken from elsewhere after the inbox was looked at: once more.
        if home.inbox_full.load(Ordering::Acquire) {
            cx.waker().wake_by_ref();
        }
        return Poll::Pending;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio_util::task::TaskTracker;

    /// A worker-like runtime with the executor started on it.
    fn worker<F: Future>(body: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            start();
            body.await
        })
    }

    #[test]
    fn tasks_run_to_the_end_and_leave_the_count() {
        let tracker = TaskTracker::new();
        let done = Arc::new(AtomicUsize::new(0));
        worker(async {
            for _ in 0..100 {
                let done = done.clone();
                spawn(tracker.token(), async move {
                    tokio::task::yield_now().await;
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    done.fetch_add(1, Ordering::Relaxed);
                });
            }
            tracker.close();
            tokio::time::timeout(std::time::Duration::from_secs(5), tracker.wait())
                .await
                .expect("every task ended and dropped its token");
        });
        assert_eq!(done.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn a_wake_from_another_thread_runs_the_task() {
        let tracker = TaskTracker::new();
        worker(async {
            let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
            let (out_tx, out_rx) = tokio::sync::oneshot::channel::<u32>();
            spawn(tracker.token(), async move {
                let _ = out_tx.send(rx.await.unwrap_or(0) + 1);
            });
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                let _ = tx.send(41);
            });
            let got = tokio::time::timeout(std::time::Duration::from_secs(5), out_rx).await;
            assert_eq!(got.ok().and_then(Result::ok), Some(42));
        });
    }

    /// The runner sleeps in its reactor while it is tokio's only task; a busy worker (here a
    /// ping-pong between two of its tasks over loopback, so an event is always waiting when it
    /// sleeps) must not keep tokio's timers from firing, nor a wake from another thread from
    /// landing.
    #[test]
    fn timers_and_remote_wakes_while_the_runner_sleeps_in_its_reactor() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tracker = TaskTracker::new();
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicUsize::new(0));
        worker(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let a = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
            let (b, _) = listener.accept().expect("accept");
            for s in [&a, &b] {
                s.set_nonblocking(true).expect("nonblocking");
            }
            let plain = |s| crate::stream::Stream::Plain(crate::stream::Tcp::new(s).expect("register"));
            let (mut a, mut b) = (plain(a), plain(b));
            let (stop2, rounds2) = (stop.clone(), rounds.clone());
            spawn(tracker.token(), async move {
                let mut byte = [7u8; 1];
                while !stop2.load(Ordering::Relaxed) {
                    if a.write_all(&byte).await.is_err() || a.read_exact(&mut byte).await.is_err() {
                        break;
                    }
                    rounds2.fetch_add(1, Ordering::Relaxed);
                }
            });
            spawn(tracker.token(), async move {
                let mut byte = [0u8; 1];
                while b.read_exact(&mut byte).await.is_ok() && b.write_all(&byte).await.is_ok() {}
            });
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let (fired_tx, fired_rx) = tokio::sync::oneshot::channel::<std::time::Duration>();
            let start = std::time::Instant::now();
            spawn(tracker.token(), async move {
                tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                let _ = rx.await;
                let _ = fired_tx.send(start.elapsed());
            });
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(10));
                let _ = tx.send(());
            });
            // Were tokio never given the thread, its timers (this test's own included) would
            // not fire while the ping-pong runs: a thread ends the ping-pong after 8 s.
            let watchdog = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_secs(8));
                watchdog.store(true, Ordering::Relaxed);
            });
            let fired = fired_rx.await.unwrap_or(std::time::Duration::MAX);
            stop.store(true, Ordering::Relaxed);
            assert!(
                fired < std::time::Duration::from_secs(4),
                "the timer fired and the remote wake landed during the ping-pong: {fired:?}"
            );
            tracker.close();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), tracker.wait()).await;
        });
        assert!(rounds.load(Ordering::Relaxed) > 0, "the ping-pong ran beside them");
    }

    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_panicking_task_is_dropped_and_the_others_go_on() {
        let tracker = TaskTracker::new();
        let dropped = Arc::new(AtomicBool::new(false));
        let after = Arc::new(AtomicBool::new(false));
        worker(async {
            let guard = Dropped(dropped.clone());
            spawn(tracker.token(), async move {
                let _guard = guard;
                tokio::task::yield_now().await;
                panic!("a session's bug");
            });
            let after = after.clone();
            spawn(tracker.token(), async move {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                after.store(true, Ordering::Relaxed);
            });
            tracker.close();
            tokio::time::timeout(std::time::Duration::from_secs(5), tracker.wait())
                .await
                .expect("both tasks ended");
        });
        assert!(dropped.load(Ordering::Relaxed), "the panicked task's state was dropped");
        assert!(after.load(Ordering::Relaxed));
    }

    #[test]
    fn a_task_that_keeps_waking_itself_does_not_starve_tokio() {
        let tracker = TaskTracker::new();
        let polls = Arc::new(AtomicUsize::new(0));
        let seen = worker(async {
            let stop = Arc::new(AtomicBool::new(false));
            let (spin_stop, spin_polls) = (stop.clone(), polls.clone());
            spawn(
                tracker.token(),
                std::future::poll_fn(move |cx| {
                    if spin_stop.load(Ordering::Relaxed) || spin_polls.fetch_add(1, Ordering::Relaxed) > 1_000_000 {
                        return Poll::Ready(());
                    }
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }),
            );
            // A tokio task and a timer on the same thread.
            let flag = tokio::spawn(async {});
            let _ = flag.await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let seen = polls.load(Ordering::Relaxed);
            stop.store(true, Ordering::Relaxed);
            seen
        });
        assert!(seen > 0, "the spinning task ran");
        assert!(seen < 1_000_000, "tokio's tasks ran while it spun ({seen} polls)");
    }

    #[test]
    fn a_wake_after_the_end_is_harmless() {
        let tracker = TaskTracker::new();
        worker(async {
            let (tx, rx) = tokio::sync::oneshot::channel::<Waker>();
            let mut tx = Some(tx);
            spawn(
                tracker.token(),
                std::future::poll_fn(move |cx| {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(cx.waker().clone());
                    }
                    Poll::Ready(())
                }),
            );
            // Not polled before this task yields: the runner is a task of this runtime.
            let waker = rx.await.expect("the task ran");
            waker.wake_by_ref();
            waker.wake();
            tokio::task::yield_now().await;
        });
    }
}
