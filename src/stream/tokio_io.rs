//! Sockets on tokio's reactor (TLS streams, Unix sockets, a connection being opened), counted
//! process-wide. A worker's runner sleeps in its own reactor only while there are none
//! (`executor::may_sleep`): tokio hears of their readiness only when it has the thread.
//! Process-wide, not per worker, because a TLS stream stays on the reactor of the thread that
//! opened it wherever it is used next.

use std::io;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

static IN_USE: AtomicUsize = AtomicUsize::new(0);

/// Whether any socket is on tokio's reactor now.
#[inline]
pub fn in_use() -> bool {
    IN_USE.load(Ordering::Relaxed) > 0
}

/// Counts one use of tokio's reactor while it lives (an open, a handshake).
pub struct Guard(());

impl Guard {
    pub fn hold() -> Guard {
        IN_USE.fetch_add(1, Ordering::Relaxed);
        Guard(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        IN_USE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket (or a TLS stream over one) on tokio's reactor, counted while it lives.
pub struct Counted<T> {
    inner: T,
    _guard: Guard,
}

impl<T> Counted<T> {
    pub fn new(inner: T) -> Counted<T> {
        Counted {
            inner,
            _guard: Guard::hold(),
        }
    }

    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T> Deref for Counted<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for Counted<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_while_alive() {
        // Other tests of this binary may hold sockets of their own: compare, do not assume 0.
        let before = IN_USE.load(Ordering::Relaxed);
        let a = Counted::new(5u8);
        let b = Guard::hold();
        assert!(in_use());
        assert_eq!(IN_USE.load(Ordering::Relaxed), before + 2);
        assert_eq!(*a, 5);
        assert_eq!(a.into_inner(), 5);
        drop(b);
        assert_eq!(IN_USE.load(Ordering::Relaxed), before);
    }
}
