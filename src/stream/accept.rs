//! A listening socket on pgmux's reactor (TCP, and the Unix socket's): a new TCP client's
//! socket is registered there once, instead of with tokio's reactor first and moved out of it
//! (three `epoll_ctl` calls and tokio's 256-byte `ScheduledIo` per login, where one call does).

use super::reactor::Io;
use super::Tcp;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::task::{Context, Poll};

pub struct Acceptor<L = std::net::TcpListener> {
    /// Dropped before `listener`: the socket leaves the epoll set before it is closed.
    io: Io,
    listener: L,
}

impl Acceptor {
    /// Watches `listener` (made non-blocking here) from this thread's reactor.
    pub fn new(listener: std::net::TcpListener) -> io::Result<Acceptor> {
        listener.set_nonblocking(true)?;
        Acceptor::watch(listener)
    }

    /// The next client's socket, registered with this thread's reactor.
    pub async fn accept(&mut self) -> io::Result<Tcp> {
        let fd = std::future::poll_fn(|cx| self.poll_accept(cx)).await?;
        Tcp::new(std::net::TcpStream::from(fd))
    }
}

/// The Unix socket's listener is watched here too (not by tokio, whose reactor a worker's runner
/// would then have to give the thread to: `executor`); the clients it accepts go to tokio's.
impl Acceptor<std::os::unix::net::UnixListener> {
    pub fn new_unix(listener: std::os::unix::net::UnixListener) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        Acceptor::watch(listener)
    }

    pub async fn accept_unix(&mut self) -> io::Result<tokio::net::UnixStream> {
        let fd = std::future::poll_fn(|cx| self.poll_accept(cx)).await?;
        tokio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(fd))
    }
}

impl<L: AsRawFd> Acceptor<L> {
    fn watch(listener: L) -> io::Result<Self> {
        Ok(Acceptor {
            io: Io::register(listener.as_raw_fd())?,
            listener,
        })
    }

    /// The next accepted socket (non-blocking, close-on-exec).
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<OwnedFd>> {
        let fd = self.listener.as_raw_fd();
        let slot = self.io.slot()?;
        if slot.ready.get() != 0 {
            loop {
                let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
                // SAFETY: fd is the open listening socket; no address is asked for.
                let s = unsafe { libc::accept4(fd, std::ptr::null_mut(), std::ptr::null_mut(), flags) };
                if s >= 0 {
                    // SAFETY: accept4 returned a new descriptor that nobody else owns.
                    return Poll::Ready(Ok(unsafe { OwnedFd::from_raw_fd(s) }));
                }
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => {
                        slot.not_readable();
                        break;
                    }
                    // Interrupted, or a client that left before it was accepted: the next.
                    Some(libc::EINTR | libc::ECONNABORTED) => {}
                    _ => return Poll::Ready(Err(e)),
                }
            }
        }
        slot.wait_read(cx);
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread")]
    async fn clients_that_connect_later_are_accepted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut acceptor = Acceptor::new(listener).unwrap();
        let clients = std::thread::spawn(move || {
            (0..3)
                .map(|_| {
                    std::thread::sleep(Duration::from_millis(20));
                    std::net::TcpStream::connect(addr).unwrap()
                })
                .collect::<Vec<_>>()
        });
        for _ in 0..3 {
            let accepted = tokio::time::timeout(Duration::from_secs(5), acceptor.accept()).await;
            let tcp = accepted.expect("woken by the connection").unwrap();
            assert_eq!(tcp.local_addr().unwrap(), addr);
        }
        drop(clients.join().unwrap());
    }
}
