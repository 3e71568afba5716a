//! Readiness of plain TCP sockets, pgmux's own: one epoll instance per thread, registered in
//! tokio as one descriptor.
//!
//! Tokio's reactor costs a socket about 400 instructions per transaction (`Registration::
//! poll_ready`, `ScheduledIo::wake`, its share of `Driver::turn`) and 256 bytes of
//! `ScheduledIo`. Here a socket's registration is a small `Slot` (readiness bits and two wakers),
//! and its events are read by whoever drives the thread's reactor: a worker's executor runner
//! before it polls its sessions (`executor`), or on any other thread a tokio task of its own.
//! Tokio sees one readiness per drive, that of the epoll descriptor, not one per socket.
//!
//! A slot is only touched on its reactor's thread: a socket polled on another thread moves to
//! that thread's reactor first (`Io::ensure_home`). A slot is freed only once no event of the
//! batch being dispatched can name it: after the dispatch (a socket closed by a waker's side
//! effect), or on its reactor's thread at its next drive (a socket closed or moved elsewhere).

use std::cell::{Cell, UnsafeCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Events read per `epoll_wait`; a full batch is followed by another at once.
const BATCH: usize = 64;

/// Readable: a read may find bytes (cleared when one finds none).
pub const READ: u8 = 1;
/// The peer closed or the socket failed: every read and write goes to the system call, which
/// tells (never cleared, like tokio's READ_CLOSED).
pub const CLOSED: u8 = 2;

/// One socket's registration.
pub struct Slot {
    pub ready: Cell<u8>,
    reader: UnsafeCell<Option<Waker>>,
    writer: UnsafeCell<Option<Waker>>,
}

impl Slot {
    /// Forgets that the socket is readable (a read or accept found nothing), unless it is
    /// closed: then reads go on to the system call, which tells the end.
    #[inline(always)]
    pub fn not_readable(&self) {
        self.ready.set(self.ready.get() & !READ);
    }

    /// Keeps `cx`'s waker to wake at the next read event (replaces another task's).
    pub fn wait_read(&self, cx: &Context<'_>) {
        // SAFETY: on the reactor's thread (the caller's `Io` is home), and no other borrow of
        // the cell is alive: dispatch does not run during a poll.
        keep(unsafe { &mut *self.reader.get() }, cx.waker());
    }

    pub fn wait_write(&self, cx: &Context<'_>) {
        // SAFETY: as in `wait_read`.
        keep(unsafe { &mut *self.writer.get() }, cx.waker());
    }
}

fn keep(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(kept) if kept.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

/// A thread's epoll instance.
pub struct Reactor {
    epfd: AsyncFd<OwnedFd>,
    /// False once the task that drove it is gone (its runtime shut down).
    alive: AtomicBool,
    /// Slots of sockets closed or moved by another thread, freed at the next drive.
    remote_dead: Mutex<Vec<SlotPtr>>,
    remote_dead_any: AtomicBool,
    local: UnsafeCell<Local>,
}

struct Local {
    dispatching: bool,
    /// Slots released during a dispatch: freed when it ends.
    dead: Vec<SlotPtr>,
}

/// A slot's address, sent to its reactor's thread to be freed there.
struct SlotPtr(NonNull<Slot>);
// SAFETY: only its reactor's thread dereferences or frees it.
unsafe impl Send for SlotPtr {}

// SAFETY: `local` and the slots are touched only on the reactor's thread (see the module's
// comment); other threads use `remote_dead` (locked), the atomics and `epoll_ctl` on the
// descriptor, which the kernel serialises.
unsafe impl Sync for Reactor {}
unsafe impl Send for Reactor {}

thread_local! {
    static CURRENT: Cell<Option<&'static Reactor>> = const { Cell::new(None) };
}

/// Marks its reactor dead when the task driving it goes (its runtime shut down), so the
/// thread's next socket gets a new reactor on the runtime that runs then.
pub struct Driving(&'static Reactor);

impl Drop for Driving {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Release);
        CURRENT.with(|c| {
            if c.get().is_some_and(|r| std::ptr::eq(r, self.0)) {
                c.set(None);
            }
        });
    }
}

impl Reactor {
    fn new() -> io::Result<&'static Reactor> {
        if tokio::runtime::Handle::try_current()
            .map_err(io::Error::other)?
            .runtime_flavor()
            != tokio::runtime::RuntimeFlavor::CurrentThread
        {
            return Err(io::Error::other("pgmux's sockets need a current-thread runtime"));
        }
        // SAFETY: plain system call; its result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the OwnedFd keeps its descriptor open and the same for the AsyncFd's life
        // (which never ends: the reactor is leaked); a runtime is current (checked above).
        let epfd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)?;
        let reactor = Reactor {
            epfd,
            alive: AtomicBool::new(true),
            remote_dead: Mutex::new(Vec::new()),
            remote_dead_any: AtomicBool::new(false),
            local: UnsafeCell::new(Local {
                dispatching: false,
                dead: Vec::new(),
            }),
        };
        // Never freed: sockets of other threads may still name it (one per thread that ever
        // opened a socket, a few hundred bytes).
        let reactor: &'static Reactor = Box::leak(Box::new(reactor));
        CURRENT.with(|c| c.set(Some(reactor)));
        Ok(reactor)
    }

    /// Makes this thread's reactor, to be driven by the caller (`drive` from a task that
    /// keeps the returned guard).
    pub fn start_driven() -> io::Result<(&'static Reactor, Driving)> {
        let reactor = Reactor::new()?;
        Ok((reactor, Driving(reactor)))
    }

    /// This thread's reactor, made (with a tokio task to drive it) on first use. Needs a
    /// current-thread tokio runtime, and not from its blocking pool: the driving task would run
    /// on the runtime's thread, not this one (pgmux's blocking work uses no such socket).
    pub fn current() -> io::Result<&'static Reactor> {
        if let Some(r) = CURRENT.with(Cell::get).filter(|r| r.alive.load(Ordering::Acquire)) {
            return Ok(r);
        }
        let (reactor, driving) = Reactor::start_driven()?;
        tokio::spawn(async move {
            let _driving = driving;
            std::future::poll_fn(|cx| {
                reactor.drive(cx);
                Poll::<()>::Pending
            })
            .await
        });
        Ok(reactor)
    }

    /// Is this thread's reactor, and alive (a thread whose runtime ended, its reactor's
    /// driver with it, moves its sockets to the next runtime's reactor).
    #[inline(always)]
    pub fn is_current(&'static self) -> bool {
        CURRENT.with(Cell::get).is_some_and(|r| std::ptr::eq(r, self)) && self.alive.load(Ordering::Relaxed)
    }

    /// SAFETY: on the reactor's thread, one borrow at a time (none held across a wake).
    #[allow(clippy::mut_from_ref)]
    unsafe fn local(&self) -> &mut Local {
        unsafe { &mut *self.local.get() }
    }

    /// Reads the events that came and wakes whoever waits for them; leaves `cx`'s waker with
    /// tokio for the next. On the reactor's thread only.
    pub fn drive(&'static self, cx: &mut Context<'_>) {
        debug_assert!(self.is_current(), "a reactor is driven on its own thread only");
        self.free_remote_dead();
        loop {
            let mut guard = match self.epfd.poll_read_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                // The runtime is going away: nothing more will come.
                Poll::Ready(Err(_)) | Poll::Pending => return,
            };
            if self.wait(0) < BATCH {
                // Emptied: the next event makes the descriptor readable again for tokio.
                guard.clear_ready();
            }
        }
    }

    /// Blocks in the reactor's `epoll_wait` for at most `timeout_ms` (the worker's runner,
    /// when it has nothing to run and tokio has nothing to do but its timers: `executor`), and
    /// wakes what the events name. Returns the number of events.
    pub fn sleep(&'static self, timeout_ms: i32) -> usize {
        debug_assert!(self.is_current(), "a reactor is driven on its own thread only");
        self.free_remote_dead();
        self.wait(timeout_ms)
    }

    /// Frees the slots of sockets another thread closed or moved since the last drive.
    fn free_remote_dead(&self) {
        if self.remote_dead_any.swap(false, Ordering::AcqRel) {
            let dead = std::mem::take(&mut *lock(&self.remote_dead));
            dead.into_iter().for_each(free);
        }
    }

    /// One `epoll_wait` of at most `timeout_ms` (0: it does not block), and the wakes of what
    /// it read.
    fn wait(&self, timeout_ms: i32) -> usize {
        // Not zeroed first (768 bytes a drive): only what the kernel wrote is read.
        let mut events = [std::mem::MaybeUninit::<libc::epoll_event>::uninit(); BATCH];
        let n = loop {
            // SAFETY: events is writable for BATCH entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.epfd.as_raw_fd(),
                    events.as_mut_ptr().cast(),
                    BATCH as i32,
                    timeout_ms,
                )
            };
            match usize::try_from(n) {
                Ok(n) => break n,
                Err(_) if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                // EBADF, EFAULT or EINVAL: none can happen on this reactor's own descriptor.
                Err(_) => return 0,
            }
        };
        // SAFETY: on this thread; released slots wait in `dead` until the loop is over.
        unsafe { self.local() }.dispatching = true;
        for event in events.iter().take(n) {
            // SAFETY: the kernel wrote the first n entries.
            let event = unsafe { event.assume_init() };
            let (bits, data) = (event.events, event.u64);
            // SAFETY: data is the address of a live slot of this reactor: a slot is freed only
            // after its socket left the epoll set (no later batch names it) and after the
            // batch being dispatched (`Local::dead`, `remote_dead`).
            let slot = unsafe { &*(data as *const Slot) };
            let closed = bits & (libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLRDHUP) as u32 != 0;
            if closed || bits & libc::EPOLLIN as u32 != 0 {
                slot.ready
                    .set(slot.ready.get() | READ | if closed { CLOSED } else { 0 });
                // SAFETY: on this thread; the waker is taken out before it runs.
                if let Some(waker) = unsafe { (*slot.reader.get()).take() } {
                    waker.wake();
                }
            }
            if closed || bits & libc::EPOLLOUT as u32 != 0 {
                // SAFETY: as above.
                if let Some(waker) = unsafe { (*slot.writer.get()).take() } {
                    waker.wake();
                }
            }
        }
        // SAFETY: as above; no wake is running now.
        let local = unsafe { self.local() };
        local.dispatching = false;
        std::mem::take(&mut local.dead).into_iter().for_each(free);
        n
    }
}

fn free(slot: SlotPtr) {
    // SAFETY: made by Box::into_raw in `Io::register`, freed once (its Io is gone).
    drop(unsafe { Box::from_raw(slot.0.as_ptr()) });
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A socket's registration with a reactor: the socket's owner keeps it beside the socket and
/// drops it before closing the socket.
pub struct Io {
    reactor: &'static Reactor,
    slot: NonNull<Slot>,
    fd: RawFd,
}

// SAFETY: the slot is only touched on its reactor's thread (`ensure_home` moves it first);
// elsewhere only its address travels.
unsafe impl Send for Io {}
unsafe impl Sync for Io {}

impl Io {
    /// Registers `fd` (a socket the caller owns, non-blocking) with this thread's reactor.
    pub fn register(fd: RawFd) -> io::Result<Io> {
        Io::register_with(Reactor::current()?, fd)
    }

    fn register_with(reactor: &'static Reactor, fd: RawFd) -> io::Result<Io> {
        let slot = Box::new(Slot {
            // Read at once: bytes may be there already (a moved socket's, a new client's).
            ready: Cell::new(READ),
            reader: UnsafeCell::new(None),
            writer: UnsafeCell::new(None),
        });
        let slot = NonNull::from(Box::leak(slot));
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: slot.as_ptr() as u64,
        };
        // SAFETY: both descriptors are open; event is a valid struct.
        if unsafe { libc::epoll_ctl(reactor.epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) } < 0 {
            let e = io::Error::last_os_error();
            free(SlotPtr(slot));
            return Err(e);
        }
        Ok(Io { reactor, slot, fd })
    }

    /// The slot, on this thread: moves the registration to this thread's reactor first when
    /// it is another's (a server connection a worker took from another worker).
    #[inline(always)]
    pub fn slot(&mut self) -> io::Result<&Slot> {
        if !self.reactor.is_current() {
            self.move_here()?;
        }
        // SAFETY: the slot is alive while its Io is, and this is its reactor's thread.
        Ok(unsafe { self.slot.as_ref() })
    }

    /// Registered with this thread's reactor.
    pub fn is_home(&self) -> bool {
        self.reactor.is_current()
    }

    #[cold]
    #[inline(never)]
    fn move_here(&mut self) -> io::Result<()> {
        let here = Reactor::current()?;
        let moved = Io::register_with(here, self.fd)?;
        let old = std::mem::replace(self, moved);
        old.release();
        std::mem::forget(old);
        Ok(())
    }

    /// Takes the socket out of the epoll set and frees the slot when that is safe.
    fn release(&self) {
        // SAFETY: both descriptors are open (the socket's owner closes it after this).
        let deleted = unsafe {
            libc::epoll_ctl(
                self.reactor.epfd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                self.fd,
                std::ptr::null_mut(),
            )
        };
        // The slot may be freed only once no later batch can name it.
        debug_assert_eq!(
            deleted,
            0,
            "a registered socket left its epoll set: {}",
            io::Error::last_os_error()
        );
        let slot = SlotPtr(self.slot);
        if self.reactor.is_current() {
            // SAFETY: this thread is the reactor's, and no other borrow of `local` is alive
            // (a drop in the middle of a dispatch comes from a wake, which holds none).
            let local = unsafe { self.reactor.local() };
            match local.dispatching {
                true => local.dead.push(slot),
                false => free(slot),
            }
        } else {
            lock(&self.reactor.remote_dead).push(slot);
            self.reactor.remote_dead_any.store(true, Ordering::Release);
        }
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Duration;

    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        a.set_nonblocking(true).unwrap();
        (a, b)
    }

    /// Waits until `io`'s socket is readable, as the data path does: the bit, else the waker.
    async fn readable(io: &mut Io) {
        std::future::poll_fn(|cx| {
            let slot = io.slot().unwrap();
            if slot.ready.get() & READ != 0 {
                return Poll::Ready(());
            }
            slot.wait_read(cx);
            Poll::Pending
        })
        .await
    }

    fn drained(io: &mut Io, s: &mut std::net::TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    io.slot().unwrap().not_readable();
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_read_event_wakes_the_waiting_task() {
        let (mut ours, mut peer) = pair();
        let mut io = Io::register(ours.as_raw_fd()).unwrap();
        readable(&mut io).await; // set at registration
        assert!(drained(&mut io, &mut ours).is_empty());
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            peer.write_all(b"hello").unwrap();
            peer
        });
        tokio::time::timeout(Duration::from_secs(5), readable(&mut io))
            .await
            .expect("woken");
        assert_eq!(drained(&mut io, &mut ours), b"hello");
        drop(writer.join().unwrap()); // the peer closes: readable again, and closed
        tokio::time::timeout(Duration::from_secs(5), readable(&mut io))
            .await
            .expect("woken");
        assert_ne!(io.slot().unwrap().ready.get() & CLOSED, 0);
    }

    #[test]
    fn a_socket_polled_on_another_thread_moves_there() {
        let (ours, mut peer) = pair();
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let io = runtime().block_on(async { Io::register(ours.as_raw_fd()).unwrap() });
        let first = io.reactor as *const Reactor as usize;
        let moved = std::thread::spawn(move || {
            let mut io = io;
            let mut ours = ours;
            runtime().block_on(async {
                assert!(!io.reactor.is_current());
                readable(&mut io).await;
                drained(&mut io, &mut ours);
                peer.write_all(b"x").unwrap();
                tokio::time::timeout(Duration::from_secs(5), readable(&mut io))
                    .await
                    .expect("woken");
                assert_eq!(drained(&mut io, &mut ours), b"x");
            });
            let moved_to = io.reactor as *const Reactor as usize;
            drop(io); // before the socket closes, as Tcp's fields are dropped
            moved_to
        });
        assert_ne!(moved.join().unwrap(), first);
    }

    /// Drops a registration from inside its wake, as a session's end drops its server
    /// connection while the reactor dispatches a batch that may still name it.
    struct DropOnWake(Mutex<Option<Io>>, AtomicBool);
    impl std::task::Wake for DropOnWake {
        fn wake(self: std::sync::Arc<Self>) {
            lock(&self.0).take();
            self.1.store(true, Ordering::Release);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_socket_closed_by_a_wake_is_freed_after_the_batch() {
        let (a, mut pa) = pair();
        let (b, mut pb) = pair();
        let mut io_a = Io::register(a.as_raw_fd()).unwrap();
        let mut io_b = Io::register(b.as_raw_fd()).unwrap();
        io_a.slot().unwrap().ready.set(0);
        io_b.slot().unwrap().ready.set(0);
        // a's waker drops b's registration; b's own waker must not be touched after that.
        let dropper = std::sync::Arc::new(DropOnWake(Mutex::new(Some(io_b)), AtomicBool::new(false)));
        let waker = Waker::from(dropper.clone());
        io_a.slot().unwrap().wait_read(&Context::from_waker(&waker));
        if let Some(io_b) = lock(&dropper.0).as_mut() {
            io_b.slot().unwrap().wait_read(&Context::from_waker(&waker));
        }
        pb.write_all(b"2").unwrap();
        pa.write_all(b"1").unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while !dropper.1.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("woken");
        assert!(lock(&dropper.0).is_none());
        drop((io_a, a, b));
    }
}
