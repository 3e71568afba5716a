//! Plain TCP reads and writes on the data path, without tokio's layers in front of the
//! system call (measured: about 150 instructions per read or write, and four of each per
//! transaction).
//!
//! The order is the reverse of tokio's `poll_read`: the system call first, gated only by the
//! readiness tokio last saw (`try_io`, which clears it on EAGAIN), and the reactor's
//! `poll_*_ready` (waker registration, cooperative budget) only when the socket has nothing.
//! A caller that loops while bytes keep coming must yield by itself now and then (the relay
//! does), since a read that succeeds no longer spends tokio's budget.
//!
//! `syscall(2)` rather than `recv`/`send`: glibc's wrappers switch thread cancellation on and
//! off around the call, which pgmux never uses.

use bytes::BytesMut;
use std::io;
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::task::{Context, Poll};
use tokio::io::{Interest, ReadBuf};
use tokio::net::TcpStream;

/// A plain TCP socket, and what the data path knows of its read registration with the reactor.
pub struct Tcp {
    pub s: TcpStream,
    /// Only one task at a time reads the socket (a client's: its login, then its session,
    /// which says so with `Stream::new_reader`; a server connection moves from session to
    /// session, so not a server's).
    one_task: bool,
    /// That task's waker is registered for readability and no readiness was seen since. The
    /// reactor keeps a registered waker until it wakes it, and sets the readiness first: so a
    /// second registration (about 120 instructions: the waiters' lock, the waker compared) is
    /// skipped, once per transaction (the relay registers the client, then the idle wait).
    armed: bool,
}

impl Tcp {
    pub fn client(s: TcpStream) -> Tcp {
        Tcp {
            s,
            one_task: true,
            armed: false,
        }
    }

    pub fn server(s: TcpStream) -> Tcp {
        Tcp {
            s,
            one_task: false,
            armed: false,
        }
    }

    /// Another task reads the socket from now on: the waker registered (if any) is not its own.
    pub fn new_reader(&mut self) {
        self.armed = false;
    }

    /// The same socket registered with the current runtime's reactor.
    pub fn rehome(self) -> io::Result<Tcp> {
        Ok(Tcp {
            s: TcpStream::from_std(self.s.into_std()?)?,
            one_task: self.one_task,
            armed: false,
        })
    }
}

impl Deref for Tcp {
    type Target = TcpStream;
    fn deref(&self) -> &TcpStream {
        &self.s
    }
}

pub fn poll_read(s: &mut Tcp, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
    // SAFETY: recvfrom only writes into the unfilled part, and what it reports written is
    // initialised before `assume_init`.
    let unfilled = unsafe { buf.unfilled_mut() };
    let (ptr, len) = (unfilled.as_mut_ptr().cast::<u8>(), unfilled.len());
    let n = std::task::ready!(poll_read_into(s, cx, ptr, len))?;
    // SAFETY: the kernel wrote n bytes there.
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    Poll::Ready(Ok(()))
}

/// Reads into `buf`'s spare capacity (which the caller reserved), like tokio-util's
/// `poll_read_buf` without its `ReadBuf` round trip.
pub fn poll_read_bytes(s: &mut Tcp, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
    let spare = buf.spare_capacity_mut();
    let (ptr, len) = (spare.as_mut_ptr().cast::<u8>(), spare.len());
    let n = std::task::ready!(poll_read_into(s, cx, ptr, len))?;
    // SAFETY: the kernel initialised n bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Poll::Ready(Ok(n))
}

/// Reads into `ptr..ptr+len` (writable, owned by the caller): Ready(Ok(0)) at the end of the
/// stream.
fn poll_read_into(t: &mut Tcp, cx: &mut Context<'_>, ptr: *mut u8, len: usize) -> Poll<io::Result<usize>> {
    let fd = t.s.as_raw_fd();
    loop {
        // What the system call said, kept here rather than in the io::Error that `try_io`
        // wants: asking an error its kind and dropping it are calls, several per transaction.
        let mut outcome = Outcome::NotReady;
        let cleared = t.s.try_io(Interest::READABLE, || {
            // SAFETY: ptr..ptr+len is writable memory (the caller's).
            outcome = unsafe { recv(fd, ptr, len) };
            // A short read emptied the socket: WouldBlock has try_io forget its readiness, as
            // tokio's own poll_read does, so that the next read waits for the reactor instead
            // of making a system call that answers EAGAIN.
            match outcome {
                Outcome::Done(got) if got == len || got == 0 => Ok(()),
                Outcome::Done(_) | Outcome::WouldBlock => Err(io::ErrorKind::WouldBlock.into()),
                Outcome::NotReady | Outcome::Failed(_) => Ok(()),
            }
        });
        forget(cleared);
        if !matches!(outcome, Outcome::NotReady) {
            t.armed = false; // readiness was seen: the reactor may have woken (taken) the waker
        }
        match outcome {
            Outcome::Done(got) => return Poll::Ready(Ok(got)), // 0: end of stream (or an empty buffer)
            Outcome::NotReady | Outcome::WouldBlock => {
                if t.armed {
                    return Poll::Pending;
                }
                // Out of cooperative budget, tokio answers Pending without registering.
                let registers = t.one_task && tokio::task::coop::has_budget_remaining();
                match t.s.poll_read_ready(cx) {
                    Poll::Pending => {
                        t.armed = registers;
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {}
                }
            }
            Outcome::Failed(libc::EINTR) => {}
            Outcome::Failed(errno) => return Poll::Ready(Err(io::Error::from_raw_os_error(errno))),
        }
    }
}

pub fn poll_write(s: &TcpStream, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
    loop {
        match write(s, buf) {
            Outcome::Done(n) => return Poll::Ready(Ok(n)),
            Outcome::NotReady | Outcome::WouldBlock => {
                if let Err(e) = std::task::ready!(s.poll_write_ready(cx)) {
                    return Poll::Ready(Err(e));
                }
            }
            Outcome::Failed(libc::EINTR) => {}
            Outcome::Failed(errno) => return Poll::Ready(Err(io::Error::from_raw_os_error(errno))),
        }
    }
}

/// One write without waiting: WouldBlock when the socket takes nothing now.
pub fn try_write(s: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    match write(s, buf) {
        Outcome::Done(n) => Ok(n),
        Outcome::NotReady | Outcome::WouldBlock => Err(io::ErrorKind::WouldBlock.into()),
        Outcome::Failed(errno) => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// `try_write` for the data path: 0 when the socket takes nothing now.
pub fn write_now(s: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    match write(s, buf) {
        Outcome::Done(n) => Ok(n),
        Outcome::NotReady | Outcome::WouldBlock | Outcome::Failed(libc::EINTR) => Ok(0),
        Outcome::Failed(errno) => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// True when the socket has nothing to read and is not closed: a probe that consumes what it
/// finds (see `Stream::is_quiet`).
pub fn is_quiet(t: &mut Tcp) -> bool {
    let fd = t.s.as_raw_fd();
    let mut quiet = true; // no readiness since the last read: nothing came
    let mut probed = false;
    let cleared = t.s.try_io(Interest::READABLE, || {
        probed = true;
        let mut probe = 0u8;
        // SAFETY: probe is one writable byte.
        quiet = matches!(unsafe { recv(fd, &raw mut probe, 1) }, Outcome::WouldBlock);
        match quiet {
            true => Err(io::ErrorKind::WouldBlock.into()),
            false => Ok(()),
        }
    });
    forget(cleared);
    if probed {
        t.armed = false; // readiness was seen: the reactor may have woken (taken) the waker
    }
    quiet
}

/// One `recvfrom` on `fd`, the open socket of the caller's stream, into `ptr..ptr+len`.
///
/// # Safety
/// `ptr..ptr+len` must be writable memory.
unsafe fn recv(fd: std::os::fd::RawFd, ptr: *mut u8, len: usize) -> Outcome {
    // SAFETY: the caller vouches for the memory, and fd is its stream's open socket.
    let n = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd,
            ptr.cast::<libc::c_void>(),
            len,
            0,
            std::ptr::null_mut::<libc::c_void>(),
            0,
        )
    };
    Outcome::of(n)
}

fn write(s: &TcpStream, buf: &[u8]) -> Outcome {
    let fd = s.as_raw_fd();
    let mut outcome = Outcome::NotReady;
    let cleared = s.try_io(Interest::WRITABLE, || {
        // SAFETY: fd is open (s owns it) and buf is readable memory of its length.
        let n = unsafe {
            libc::syscall(
                libc::SYS_sendto,
                fd,
                buf.as_ptr().cast::<libc::c_void>(),
                buf.len(),
                libc::MSG_NOSIGNAL,
                std::ptr::null::<libc::c_void>(),
                0,
            )
        };
        outcome = Outcome::of(n);
        match outcome {
            Outcome::WouldBlock => Err(io::ErrorKind::WouldBlock.into()),
            _ => Ok(()),
        }
    });
    forget(cleared);
    outcome
}

/// What one system call on a socket did.
#[derive(Clone, Copy)]
enum Outcome {
    /// tokio saw no readiness since the last WouldBlock: the call was not made.
    NotReady,
    Done(usize),
    WouldBlock,
    Failed(i32),
}

impl Outcome {
    fn of(n: libc::c_long) -> Outcome {
        match usize::try_from(n) {
            Ok(n) => Outcome::Done(n),
            // SAFETY: errno is this thread's, read right after the failed call.
            Err(_) => match unsafe { *libc::__errno_location() } {
                libc::EAGAIN => Outcome::WouldBlock,
                errno => Outcome::Failed(errno),
            },
        }
    }
}

/// Lets go of `try_io`'s answer without dropping it: every error in this file's `try_io` calls
/// is a WouldBlock made from its kind, which owns nothing (and its drop is a call).
#[inline(always)]
fn forget(cleared: io::Result<()>) {
    std::mem::forget(cleared);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::io::Write;
    use std::time::Duration;

    /// A connected pair: the accepted side as `make` wraps it, and its peer (blocking).
    async fn pair(make: fn(TcpStream) -> Tcp) -> (Tcp, std::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (peer, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let peer = peer.unwrap().into_std().unwrap();
        peer.set_nonblocking(false).unwrap();
        (make(accepted.unwrap().0), peer)
    }

    /// Reads twice in a task of its own (as a session reads): each time the first poll finds
    /// nothing and registers, the second (after a wake-up from elsewhere) finds nothing again,
    /// and then only the reactor can wake the task, when the peer writes from another thread
    /// 50 ms later. Returns the socket, whether each second poll left it armed, and the reads.
    async fn reads_after_spurious_wakes(mut tcp: Tcp, mut peer: std::net::TcpStream) -> (Tcp, Vec<(bool, usize)>) {
        let writer = std::thread::spawn(move || {
            for word in [&b"hello"[..], b"again!"] {
                std::thread::sleep(Duration::from_millis(50));
                peer.write_all(word).unwrap();
            }
            peer
        });
        let reader = tokio::spawn(async move {
            let mut reads = Vec::new();
            for _ in 0..2 {
                let mut buf = BytesMut::with_capacity(64);
                let mut polls = 0;
                let mut armed_on_second = false;
                let got = poll_fn(|cx| {
                    polls += 1;
                    match polls {
                        1 => {
                            assert!(poll_read_bytes(&mut tcp, cx, &mut buf).is_pending());
                            cx.waker().wake_by_ref();
                            Poll::Pending
                        }
                        2 => {
                            assert!(poll_read_bytes(&mut tcp, cx, &mut buf).is_pending());
                            armed_on_second = tcp.armed;
                            Poll::Pending
                        }
                        _ => poll_read_bytes(&mut tcp, cx, &mut buf),
                    }
                })
                .await;
                reads.push((armed_on_second, got.unwrap()));
            }
            (tcp, reads)
        });
        let done = tokio::time::timeout(Duration::from_secs(5), reader).await;
        let _peer = writer.join().unwrap();
        done.expect("the registration woke the reader").unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_client_socket_keeps_its_registration_and_is_still_woken() {
        let (tcp, peer) = pair(Tcp::client).await;
        let (tcp, reads) = reads_after_spurious_wakes(tcp, peer).await;
        // Armed on each second poll (no second registration), and woken all the same; the
        // second read shows the first one disarmed it (the reactor took the waker it woke).
        assert_eq!(reads, [(true, 5), (true, 6)]);
        assert!(!tcp.armed);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_server_socket_registers_every_time() {
        // A server connection moves between sessions' tasks: a waker left by one is no use.
        let (tcp, peer) = pair(Tcp::server).await;
        let (_, reads) = reads_after_spurious_wakes(tcp, peer).await;
        assert_eq!(reads, [(false, 5), (false, 6)]);
    }
}
