//! Plain TCP reads and writes on the data path: the system call first, gated only by the
//! readiness the socket's reactor last saw (`reactor`: pgmux's own, not tokio's), and a waker
//! kept only when the socket has nothing. A caller that loops while bytes keep coming must
//! yield by itself now and then (the relay does): no cooperative budget is spent here.
//!
//! `syscall(2)` rather than `recv`/`send`: glibc's wrappers switch thread cancellation on and
//! off around the call, which pgmux never uses.

use super::reactor::Io;
use bytes::BytesMut;
use std::io;
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::task::{Context, Poll};
use tokio::io::ReadBuf;

/// A plain TCP socket and its registration with a reactor.
pub struct Tcp {
    /// Dropped before `s`: the socket leaves the epoll set before it is closed.
    io: Io,
    s: std::net::TcpStream,
}

impl Tcp {
    /// Registers a connected, non-blocking socket with this thread's reactor.
    pub fn new(s: std::net::TcpStream) -> io::Result<Tcp> {
        Ok(Tcp {
            io: Io::register(s.as_raw_fd())?,
            s,
        })
    }

    /// A tokio socket, taken out of tokio's reactor into pgmux's.
    pub fn from_tokio(s: tokio::net::TcpStream) -> io::Result<Tcp> {
        Tcp::new(s.into_std()?)
    }

    /// The socket, out of its reactor (for TLS, which runs on tokio's, or another process).
    pub fn into_std(self) -> std::net::TcpStream {
        let Tcp { io, s } = self;
        drop(io);
        s
    }

    /// Moves the registration to this thread's reactor if it is another's (also done by the
    /// first read or wait on this thread).
    pub fn rehome(mut self) -> io::Result<Tcp> {
        self.io.slot()?;
        Ok(self)
    }
}

impl Deref for Tcp {
    type Target = std::net::TcpStream;
    fn deref(&self) -> &std::net::TcpStream {
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
    let slot = t.io.slot()?;
    if slot.ready.get() != 0 {
        loop {
            // SAFETY: ptr..ptr+len is writable memory (the caller's).
            match unsafe { recv(fd, ptr, len) } {
                Outcome::Done(got) => {
                    // A short read emptied the socket: the next read waits for an event
                    // instead of making a system call that answers EAGAIN (the kernel reports
                    // what comes later as a new event).
                    if got < len && got > 0 {
                        slot.not_readable();
                    }
                    return Poll::Ready(Ok(got)); // 0: end of stream (or an empty buffer)
                }
                Outcome::WouldBlock => {
                    slot.not_readable();
                    break;
                }
                Outcome::Failed(libc::EINTR) => {}
                Outcome::Failed(errno) => return Poll::Ready(Err(io::Error::from_raw_os_error(errno))),
            }
        }
    }
    slot.wait_read(cx);
    Poll::Pending
}

pub fn poll_write(t: &mut Tcp, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
    loop {
        match write(&t.s, buf) {
            Outcome::Done(n) => return Poll::Ready(Ok(n)),
            Outcome::WouldBlock => {
                // The kernel reports the room it makes later as a new event; that wakes this.
                t.io.slot()?.wait_write(cx);
                return Poll::Pending;
            }
            Outcome::Failed(libc::EINTR) => {}
            Outcome::Failed(errno) => return Poll::Ready(Err(io::Error::from_raw_os_error(errno))),
        }
    }
}

/// One write without waiting: WouldBlock when the socket takes nothing now.
pub fn try_write(t: &Tcp, buf: &[u8]) -> io::Result<usize> {
    match write(&t.s, buf) {
        Outcome::Done(n) => Ok(n),
        Outcome::WouldBlock => Err(io::ErrorKind::WouldBlock.into()),
        Outcome::Failed(errno) => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// `try_write` for the data path: 0 when the socket takes nothing now.
pub fn write_now(t: &Tcp, buf: &[u8]) -> io::Result<usize> {
    match write(&t.s, buf) {
        Outcome::Done(n) => Ok(n),
        Outcome::WouldBlock | Outcome::Failed(libc::EINTR) => Ok(0),
        Outcome::Failed(errno) => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// True when the socket has nothing to read and is not closed: a probe that consumes what it
/// finds (see `Stream::is_quiet`), made only when the reactor saw it readable.
pub fn is_quiet(t: &mut Tcp) -> bool {
    let fd = t.s.as_raw_fd();
    let mut probe = 0u8;
    if !t.io.is_home() {
        // Another thread's socket (the janitor's look at the idle list): probed where it is,
        // not moved here and back.
        // SAFETY: probe is one writable byte.
        return matches!(unsafe { recv(fd, &raw mut probe, 1) }, Outcome::WouldBlock);
    }
    let Ok(slot) = t.io.slot() else {
        return false;
    };
    if slot.ready.get() == 0 {
        return true; // no event since the last read found nothing: nothing came
    }
    // SAFETY: probe is one writable byte.
    match unsafe { recv(fd, &raw mut probe, 1) } {
        Outcome::WouldBlock => {
            slot.not_readable();
            true
        }
        _ => false,
    }
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

fn write(s: &std::net::TcpStream, buf: &[u8]) -> Outcome {
    // SAFETY: the descriptor is open (s owns it) and buf is readable memory of its length.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            s.as_raw_fd(),
            buf.as_ptr().cast::<libc::c_void>(),
            buf.len(),
            libc::MSG_NOSIGNAL,
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    Outcome::of(n)
}

/// What one system call on a socket did.
#[derive(Clone, Copy)]
enum Outcome {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::io::Write;
    use std::time::Duration;

    /// A connected pair: the accepted side registered here, and its peer (blocking).
    fn pair() -> (Tcp, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        (Tcp::new(accepted).unwrap(), peer)
    }

    /// Reads twice: each time the first poll finds nothing and keeps the waker, the second
    /// (after a wake-up from elsewhere) finds nothing again without a system call, and then
    /// only the reactor can wake the task, when the peer writes from another thread 50 ms later.
    #[tokio::test(flavor = "current_thread")]
    async fn a_socket_with_nothing_waits_for_its_event() {
        let (mut tcp, mut peer) = pair();
        let writer = std::thread::spawn(move || {
            for word in [&b"hello"[..], b"again!"] {
                std::thread::sleep(Duration::from_millis(50));
                peer.write_all(word).unwrap();
            }
            peer
        });
        let mut reads = Vec::new();
        for _ in 0..2 {
            let mut buf = BytesMut::with_capacity(64);
            let mut polls = 0;
            let got = poll_fn(|cx| {
                polls += 1;
                let read = poll_read_bytes(&mut tcp, cx, &mut buf);
                if polls == 1 {
                    assert!(read.is_pending());
                    cx.waker().wake_by_ref();
                }
                read
            });
            let got = tokio::time::timeout(Duration::from_secs(5), got).await;
            reads.push(got.expect("the event woke the reader").unwrap());
        }
        assert_eq!(reads, [5, 6]);
        drop(writer.join().unwrap());
        let mut buf = BytesMut::with_capacity(64);
        let end = poll_fn(|cx| poll_read_bytes(&mut tcp, cx, &mut buf));
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), end)
                .await
                .unwrap()
                .unwrap(),
            0
        );
        assert!(!is_quiet(&mut tcp));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_socket_waits_for_room() {
        let (mut tcp, peer) = pair();
        let chunk = vec![7u8; 1 << 16];
        let mut sent = 0usize;
        // Fill the socket until it takes nothing; then a reader on another thread drains it.
        while let Poll::Ready(n) = poll_fn(|cx| Poll::Ready(poll_write(&mut tcp, cx, &chunk))).await {
            sent += n.unwrap();
        }
        let total = sent + chunk.len();
        let reader = std::thread::spawn(move || {
            let mut peer = peer;
            let mut buf = vec![0u8; 1 << 16];
            let mut got = 0;
            while got < total {
                got += std::io::Read::read(&mut peer, &mut buf).unwrap();
            }
            got
        });
        let mut left = &chunk[..];
        while !left.is_empty() {
            let write = poll_fn(|cx| poll_write(&mut tcp, cx, left));
            let n = tokio::time::timeout(Duration::from_secs(5), write)
                .await
                .expect("room made")
                .unwrap();
            left = &left[n..];
        }
        assert_eq!(reader.join().unwrap(), total);
    }
}
