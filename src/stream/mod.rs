//! The socket under a client or a server connection: plain TCP, TLS over it, or (to a server
//! whose host is a directory, as libpq and PgBouncer read it) a Unix-domain socket.
//!
//! One enum rather than a trait object, so the plain-TCP hot path costs a `match` and nothing
//! else. TLS streams buffer encrypted output inside rustls: after writing, callers flush
//! (`poll_flush` / `flush`), which is free on plain TCP.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

mod accept;
mod raw;
pub(crate) mod reactor;
pub mod tokio_io;

pub use accept::Acceptor;
pub use raw::Tcp;
use tokio_io::Counted;

pub enum Stream {
    Plain(Tcp),
    /// A client that asked for TLS: pgmux is the TLS server.
    Tls(Counted<Box<tokio_rustls::server::TlsStream<TcpStream>>>),
    /// A server pgmux reached over TLS: pgmux is the TLS client.
    ServerTls(Counted<Box<tokio_rustls::client::TlsStream<TcpStream>>>),
    /// A server on this machine reached through its socket file: no TCP stack on either side,
    /// so each message costs both processes less CPU than over loopback TCP.
    Unix(Counted<UnixStream>),
}

/// Runs `$body` with `$s` bound to the inner stream of a variant on tokio's reactor, and
/// `$plain` with it bound to a plain TCP socket.
macro_rules! each {
    ($stream:expr, $s:ident => $body:expr, plain => $plain:expr) => {
        match $stream {
            Stream::Plain($s) => $plain,
            Stream::Tls($s) => $body,
            Stream::ServerTls($s) => $body,
            Stream::Unix($s) => $body,
        }
    };
}

impl Stream {
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        match self {
            Stream::Plain(s) => s.peer_addr(),
            Stream::Tls(s) => s.get_ref().0.peer_addr(),
            Stream::ServerTls(s) => s.get_ref().0.peer_addr(),
            Stream::Unix(_) => Err(io::ErrorKind::Unsupported.into()),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_) | Stream::ServerTls(_))
    }

    /// The socket's descriptor (under TLS, the TCP socket's).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Stream::Plain(s) => s.as_raw_fd(),
            Stream::Tls(s) => s.get_ref().0.as_raw_fd(),
            Stream::ServerTls(s) => s.get_ref().0.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    /// A write that never waits (a last Terminate to a server being closed, `write_now`). Over TLS it
    /// is skipped: a record cannot be written without the async machinery, and the close of the
    /// socket says the same.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => raw::try_write(s, buf),
            Stream::Unix(s) => s.try_write(buf),
            Stream::Tls(_) | Stream::ServerTls(_) => Ok(0),
        }
    }

    /// `try_write` for the data path: 0 when the socket takes nothing now (or `buf` is empty);
    /// the caller writes the rest the usual way. Over TLS always 0.
    #[inline]
    pub fn write_now(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            _ if buf.is_empty() => Ok(0),
            Stream::Plain(s) => raw::write_now(s, buf),
            other => other.write_now_other(buf),
        }
    }

    #[inline(never)]
    fn write_now_other(&self, buf: &[u8]) -> io::Result<usize> {
        match self.try_write(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            written => written,
        }
    }

    /// Reads into `buf`'s spare capacity: `tokio_util::io::poll_read_buf`, with plain TCP
    /// read straight into the buffer.
    #[inline(always)]
    pub fn poll_read_buf(&mut self, cx: &mut Context<'_>, buf: &mut bytes::BytesMut) -> Poll<io::Result<usize>> {
        match self {
            Stream::Plain(s) if buf.capacity() > buf.len() => raw::poll_read_bytes(s, cx, buf),
            other => tokio_util::io::poll_read_buf(Pin::new(other), cx, buf),
        }
    }

    /// Registers a socket with this thread's reactor instead of the one that watched it (a
    /// worker taking another worker's idle server connection). TLS streams are returned as
    /// they are.
    pub fn rehome(self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Plain(t) => Stream::Plain(t.rehome()?),
            Stream::Unix(s) => Stream::Unix(Counted::new(UnixStream::from_std(s.into_inner().into_std()?)?)),
            tls => tls,
        })
    }

    /// True when an idle connection has nothing to say: a peer that closed it (TCP FIN, TLS
    /// close_notify) or sent something unasked is not quiet. Never blocks: a plain socket is
    /// probed with a one-byte read when the reactor saw it readable; a TLS one is polled once
    /// with a no-op waker, so data rustls already holds counts too, and TLS records with no
    /// application data (session tickets) do not. Whatever a probe consumes is lost: only for
    /// connections about to be dropped when they are not quiet.
    #[inline]
    pub fn is_quiet(&mut self) -> bool {
        match self {
            Stream::Plain(s) => raw::is_quiet(s),
            other => other.is_quiet_other(),
        }
    }

    #[inline(never)]
    fn is_quiet_other(&mut self) -> bool {
        let mut probe = [0u8; 1];
        match self {
            Stream::Plain(s) => raw::is_quiet(s),
            Stream::Unix(s) => {
                matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Stream::Tls(_) | Stream::ServerTls(_) => {
                let mut buf = ReadBuf::new(&mut probe);
                let read = std::future::poll_fn(|cx| Pin::new(&mut *self).poll_read(cx, &mut buf));
                // Outside tokio's cooperative budget, which could answer Pending for it.
                let mut read = std::pin::pin!(tokio::task::unconstrained(read));
                let mut cx = Context::from_waker(std::task::Waker::noop());
                read.as_mut().poll(&mut cx).is_pending()
            }
        }
    }
}

// Plain TCP inline, everything else out of line: with the TLS arms inside, these dispatchers
// grow past what the compiler inlines, and every read, write and flush of the data path pays a
// call (measured: about 250 instructions per transaction when that happened).
impl Stream {
    #[inline(never)]
    fn poll_read_other(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf), plain => raw::poll_read(s, cx, buf))
    }

    #[inline(never)]
    fn poll_write_other(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf), plain => raw::poll_write(s, cx, buf))
    }

    #[inline(never)]
    fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
            Stream::ServerTls(s) => Pin::new(s).poll_flush(cx),
            Stream::Plain(_) | Stream::Unix(_) => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncRead for Stream {
    #[inline(always)]
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => raw::poll_read(s, cx, buf),
            other => other.poll_read_other(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    #[inline(always)]
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => raw::poll_write(s, cx, buf),
            other => other.poll_write_other(cx, buf),
        }
    }

    #[inline(always)]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            // Plain sockets have nothing to flush: answer without a call.
            Stream::Plain(_) | Stream::Unix(_) => Poll::Ready(Ok(())),
            other => other.poll_flush_tls(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx), plain => Poll::Ready(s.shutdown(std::net::Shutdown::Write)))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
        each!(self.get_mut(), s => Pin::new(s).poll_write_vectored(cx, bufs), plain => raw::poll_write(s, cx, first))
    }

    fn is_write_vectored(&self) -> bool {
        each!(self, s => s.is_write_vectored(), plain => {
            let _ = s;
            false
        })
    }
}
