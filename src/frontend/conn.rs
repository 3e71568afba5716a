//! A client's socket, its read buffer and where its transaction stands.

use super::track::{scan_client, ClientScan, Tracker};
use crate::protocol::frame::{frame_len, FrameError};
use crate::protocol::messages::PgError;
use crate::stream::tokio_io::Counted;
use crate::stream::Stream;
use bytes::{Buf, BytesMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

pub struct ClientConn {
    /// Plain TCP until the client asks for TLS and gets it (`into_tls`).
    pub stream: Stream,
    /// Bytes from the client not yet forwarded.
    pub buf: BytesMut,
    /// Complete, scanned frames at the front of `buf`, waiting for a server.
    pub ready: usize,
    /// The client sent Terminate (it sits at `buf[ready..]`).
    pub terminate: bool,
    pub max_message_size: u32,
    pub tracker: Tracker,
    /// Frames in `buf[..ready]` name prepared statements (see `ClientScan::rewrite`).
    pub rewrite: bool,
    /// Frames in `buf[..ready]` may LISTEN or UNLISTEN (see `ClientScan::listen`).
    pub listen: bool,
    /// Frames in `buf[..ready]` may SET, RESET or DISCARD (see `ClientScan::set`).
    pub set: bool,
    /// The client's prepared statements, in transaction and statement modes.
    pub prepared: crate::prepared::ClientStatements,
}

/// A client's address as logs show it.
#[derive(Clone)]
pub enum Peer {
    Tcp(SocketAddr),
    /// On the Unix socket of `unix_socket_dir`.
    Unix,
    /// The socket has no peer any more.
    Gone,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(addr) => addr.fmt(f),
            Peer::Unix => f.write_str("unix"),
            Peer::Gone => f.write_str("(gone)"),
        }
    }
}

impl Peer {
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Peer::Tcp(a) => Some(a.ip()),
            _ => None,
        }
    }

    /// On this machine: loopback TCP, or the Unix socket.
    pub fn is_local(&self) -> bool {
        match self {
            Peer::Tcp(a) => a.ip().is_loopback(),
            Peer::Unix => true,
            Peer::Gone => false,
        }
    }
}

/// How a wait on the client's behalf ended.
pub enum Waited<T> {
    Done(T),
    /// The client closed its socket meanwhile: nobody wants the result.
    Gone,
    Invalid(PgError),
}

/// An idle client's next request is read into a stack buffer of this size first.
const FIRST_READ: usize = 2048;

/// While waiting for a server, read at most this much more from the client.
const WAIT_READ_LIMIT: usize = 64 * 1024;

/// What the client did while it held no server.
pub enum Request {
    /// Complete frames wait in the buffer: a server is needed.
    Ready,
    /// Terminate, or the socket closed.
    Gone,
    /// Notifications (LISTEN) wait for the client: nothing from it yet.
    News,
    /// Malformed input; the client gets this error and is closed. (Boxed: a Request is held
    /// in every idle client's task.)
    Invalid(Box<PgError>),
    /// An upgrade in place is handing clients over, and this one is idle (`handover::offer`).
    HandOver,
}

impl ClientConn {
    /// `stream` is plain TCP or a Unix socket.
    pub fn new(stream: Stream, max_message_size: u32) -> ClientConn {
        ClientConn {
            stream,
            // Room for the login messages; an idle client gives its buffer back (`spare`).
            buf: BytesMut::with_capacity(1024),
            ready: 0,
            terminate: false,
            max_message_size,
            tracker: Tracker::default(),
            rewrite: false,
            listen: false,
            set: false,
            prepared: Default::default(),
        }
    }

    /// The TLS handshake, after the client's SSLRequest was answered `S`. Nothing may be
    /// buffered: bytes read before the handshake came in plain text (see `read_startup`).
    pub async fn into_tls(mut self, config: Arc<rustls::ServerConfig>) -> std::io::Result<ClientConn> {
        // Counted from here: the handshake runs on tokio's reactor.
        let _tokio = crate::stream::tokio_io::Guard::hold();
        let tcp = match self.stream {
            Stream::Plain(tcp) if self.buf.is_empty() => tokio::net::TcpStream::from_std(tcp.into_std())?,
            _ => {
                return Err(std::io::Error::other(
                    "TLS requested on a connection that cannot start it",
                ))
            }
        };
        let tls = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await?;
        self.stream = Stream::Tls(Counted::new(Box::new(tls)));
        Ok(self)
    }

    /// Reads until at least one complete frame is buffered.
    pub async fn wait_for_request(&mut self) -> Request {
        std::future::poll_fn(|cx| self.poll_request(cx)).await
    }

    /// `wait_for_request` as a poll, so an idle client's task holds no future for it.
    pub fn poll_request(&mut self, cx: &mut Context<'_>) -> Poll<Request> {
        loop {
            // Nothing past the scanned frames (an idle client, most polls): no scan.
            if self.buf.len() > self.ready {
                match scan_client(&self.buf, self.ready, self.max_message_size as usize, &mut self.tracker) {
                    Ok(scan) => self.took(&scan),
                    Err(e) => return Poll::Ready(Request::Invalid(Box::new(protocol_violation(&e)))),
                }
            }
            if self.ready > 0 && self.tracker.quiet() && only_flushes(self.buf.get(..self.ready).unwrap_or_default()) {
                // Flushes with nothing before them to flush (after the last Sync): no server
                // is needed, and one taken for them would stay with an idle client.
                self.buf.advance(self.ready);
                self.ready = 0;
                continue;
            }
            if self.ready > 0 {
                return Poll::Ready(Request::Ready);
            }
            if self.terminate {
                return Poll::Ready(Request::Gone);
            }
            if self.buf.is_empty() {
                // Idle: hold no buffer while waiting (see `spare`). The read goes to the stack
                // first, so a wake-up costs one read, not a readiness check and then a read.
                super::spare::give(&mut self.buf);
                // Uninitialised: zeroing it would cost more than the read.
                let mut first = [std::mem::MaybeUninit::<u8>::uninit(); FIRST_READ];
                let mut read = tokio::io::ReadBuf::uninit(&mut first);
                match Pin::new(&mut self.stream).poll_read(cx, &mut read) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(_)) => return Poll::Ready(Request::Gone),
                    Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(Request::Gone),
                    Poll::Ready(Ok(())) => {}
                }
                self.buf = super::spare::take();
                self.buf.extend_from_slice(read.filled());
                continue;
            }
            // Pending with nothing read (a spurious wake-up): the next poll gives the buffer back.
            match ready!(self.stream.poll_read_buf(cx, &mut self.buf)) {
                Ok(0) | Err(_) => return Poll::Ready(Request::Gone),
                Ok(_) => {}
            }
        }
    }

    /// Runs `work` (waiting for a server) while watching the client, so a client that gives up
    /// and disconnects stops waiting at once instead of holding its place in the queue.
    pub async fn wait_with<F: std::future::Future>(&mut self, work: F) -> Waited<F::Output> {
        let mut work = std::pin::pin!(work);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = work.as_mut().poll(cx) {
                return Poll::Ready(Waited::Done(out));
            }
            // Until the socket has nothing (each read is scanned) or the limit is reached.
            while !self.terminate && self.buf.len() < WAIT_READ_LIMIT {
                super::spare::reserve(&mut self.buf);
                match ready!(self.stream.poll_read_buf(cx, &mut self.buf)) {
                    Ok(0) | Err(_) => return Poll::Ready(Waited::Gone),
                    Ok(_) => {}
                }
                match scan_client(&self.buf, self.ready, self.max_message_size as usize, &mut self.tracker) {
                    Ok(scan) => self.took(&scan),
                    Err(e) => return Poll::Ready(Waited::Invalid(protocol_violation(&e))),
                }
            }
            Poll::Pending
        })
        .await
    }

    /// What a scan of newly read bytes found: up to where frames are complete, and what the
    /// transaction that carries them must look at.
    fn took(&mut self, scan: &ClientScan) {
        self.ready = scan.end;
        self.terminate = scan.terminate;
        self.rewrite |= scan.rewrite;
        self.listen |= scan.listen;
        self.set |= scan.set;
    }

    /// Reads one complete regular frame during login (password and SASL messages) and on the
    /// console, where `max` is that phase's own limit, not max_message_size.
    pub async fn read_frame(&mut self, max: usize) -> Result<BytesMut, PgError> {
        loop {
            match frame_len(&self.buf, max) {
                Ok(Some(len)) => return Ok(self.buf.split_to(len)),
                Ok(None) => {}
                Err(FrameError::TooLarge { len, max }) => {
                    return Err(PgError::fatal(
                        "08P01",
                        format!("protocol violation: a message of {len} bytes here (at most {max})"),
                    ))
                }
                Err(e) => return Err(protocol_violation(&e)),
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => {
                    return Err(PgError::fatal("08006", "client closed the connection during login"));
                }
                Ok(_) => {}
            }
        }
    }

    /// The client's address, for logs. Asked of the socket, not stored: every idle client
    /// would carry it.
    pub fn peer(&self) -> Peer {
        match (&self.stream, self.stream.peer_addr()) {
            (Stream::Unix(_), _) => Peer::Unix,
            (_, Ok(addr)) => Peer::Tcp(addr),
            (_, Err(_)) => Peer::Gone,
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        write_flush(&mut self.stream, bytes).await
    }

    /// Sends an error; FATAL ones are the last thing the client gets.
    pub async fn send_error(&mut self, error: &PgError) {
        let mut out = BytesMut::new();
        error.encode(&mut out);
        let _ = write_flush(&mut self.stream, &out).await;
    }

    /// Drops frames already handed over (used after login, where nothing is forwarded).
    pub fn consume(&mut self, n: usize) {
        self.buf.advance(n);
    }
}

/// Writes all of `bytes` and pushes out what TLS buffered (a no-op on plain TCP).
async fn write_flush(stream: &mut Stream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Whether `frames` (complete ones) are all Flush messages.
fn only_flushes(mut frames: &[u8]) -> bool {
    while let Ok(Some((tag, total))) = crate::protocol::frame::peek_header(frames, usize::MAX >> 1) {
        match frames.get(total..) {
            Some(rest) if tag == b'H' => frames = rest,
            _ => return false,
        }
    }
    frames.is_empty()
}

pub fn protocol_violation(e: &FrameError) -> PgError {
    PgError::fatal("08P01", format!("protocol violation: {e}"))
}
