//! The upgrade channel between an old and a new pgmux: messages of a kind byte, a length and a
//! body, over a Unix stream socket; file descriptors (listening sockets, client sockets) ride
//! along as SCM_RIGHTS, which std offers only on nightly, hence `libc`.
//!
//! Both ends are pgmux processes of the same user (checked with SO_PEERCRED), possibly of
//! different versions: every read is bounds-checked, and a message that does not parse ends
//! the upgrade with an error, never a panic.

use std::collections::VecDeque;
use std::io::{self, Error, ErrorKind};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Raised with every incompatible change of the messages below.
pub const VERSION: u32 = 1;

/// A message longer than this ends the channel (a session's state is far smaller).
const MAX_MESSAGE: usize = 64 << 20;

/// At most this many descriptors come with one message.
const MAX_FDS: usize = 64;

#[derive(Debug, PartialEq, Eq)]
pub enum Msg {
    /// New to old, first on an upgrade connection.
    Hello { version: u32, pid: u32 },
    /// New to old, alone on its own connection: a CancelRequest the new process got for a key
    /// it does not know (a client still on the old process).
    Cancel { process_id: i32, secret_key: i32 },
    /// Old to new: no upgrade, and why.
    Refused { why: String },
    /// Old to new, with the descriptors: each worker's TCP listening sockets (`groups` counts
    /// them per worker), then the Unix socket when `unix` names its path, then the metrics
    /// listener when `metrics`.
    Listeners {
        pid: u32,
        next_client: u64,
        groups: Vec<u32>,
        unix: Option<String>,
        metrics: bool,
    },
    /// New to old: accepting on them; the old stops and starts handing clients over.
    Ready,
    /// Old to new, with the client's socket: a client at a transaction boundary.
    Offer { id: u64, state: Vec<u8> },
    /// New to old: the client is registered there; the old lets go of it.
    Adopted { id: u64 },
    /// New to old: not taken; the old keeps the client.
    Declined { id: u64, why: String },
    /// Old to new: the old no longer touches the client; what it had queued for it
    /// (notifications) goes first.
    Release { id: u64, leftovers: Vec<u8> },
}

impl Msg {
    /// How many descriptors arrive with this message.
    pub fn fds(&self) -> usize {
        match self {
            Msg::Listeners {
                groups, unix, metrics, ..
            } => {
                groups.iter().map(|&n| n as usize).sum::<usize>() + usize::from(unix.is_some()) + usize::from(*metrics)
            }
            Msg::Offer { .. } => 1,
            _ => 0,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Body::default();
        let kind = match self {
            Msg::Hello { version, pid } => {
                b.u32(*version);
                b.u32(*pid);
                b'H'
            }
            Msg::Cancel { process_id, secret_key } => {
                b.u32(*process_id as u32);
                b.u32(*secret_key as u32);
                b'K'
            }
            Msg::Refused { why } => {
                b.bytes(why.as_bytes());
                b'N'
            }
            Msg::Listeners {
                pid,
                next_client,
                groups,
                unix,
                metrics,
            } => {
                b.u32(*pid);
                b.u64(*next_client);
                b.u32(groups.len() as u32);
                for &n in groups {
                    b.u32(n);
                }
                b.u8(u8::from(unix.is_some()));
                b.bytes(unix.as_deref().unwrap_or_default().as_bytes());
                b.u8(u8::from(*metrics));
                b'L'
            }
            Msg::Ready => b'R',
            Msg::Offer { id, state } => {
                b.u64(*id);
                b.bytes(state);
                b'O'
            }
            Msg::Adopted { id } => {
                b.u64(*id);
                b'A'
            }
            Msg::Declined { id, why } => {
                b.u64(*id);
                b.bytes(why.as_bytes());
                b'D'
            }
            Msg::Release { id, leftovers } => {
                b.u64(*id);
                b.bytes(leftovers);
                b'E'
            }
        };
        let mut out = Vec::with_capacity(5 + b.0.len());
        out.push(kind);
        out.extend_from_slice(&(b.0.len() as u32).to_be_bytes());
        out.extend_from_slice(&b.0);
        out
    }

    /// One message from the front of `buf`: None when it is not all there yet.
    pub fn decode(buf: &[u8]) -> io::Result<Option<(Msg, usize)>> {
        let (Some(&kind), Some(len)) = (buf.first(), buf.get(1..5)) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len > MAX_MESSAGE {
            return Err(bad("message too long"));
        }
        let Some(body) = buf.get(5..5 + len) else {
            return Ok(None);
        };
        let mut r = Reader(body);
        let msg = match kind {
            b'H' => Msg::Hello {
                version: r.u32()?,
                pid: r.u32()?,
            },
            b'K' => Msg::Cancel {
                process_id: r.u32()? as i32,
                secret_key: r.u32()? as i32,
            },
            b'N' => Msg::Refused { why: r.string()? },
            b'L' => {
                let pid = r.u32()?;
                let next_client = r.u64()?;
                let count = r.u32()? as usize;
                if count > MAX_FDS {
                    return Err(bad("too many listener groups"));
                }
                let groups = (0..count).map(|_| r.u32()).collect::<io::Result<Vec<_>>>()?;
                let has_unix = r.u8()? != 0;
                let path = r.string()?;
                Msg::Listeners {
                    pid,
                    next_client,
                    groups,
                    unix: has_unix.then_some(path),
                    metrics: r.u8()? != 0,
                }
            }
            b'R' => Msg::Ready,
            b'O' => Msg::Offer {
                id: r.u64()?,
                state: r.bytes()?.to_vec(),
            },
            b'A' => Msg::Adopted { id: r.u64()? },
            b'D' => Msg::Declined {
                id: r.u64()?,
                why: r.string()?,
            },
            b'E' => Msg::Release {
                id: r.u64()?,
                leftovers: r.bytes()?.to_vec(),
            },
            other => return Err(bad(&format!("unknown message kind {other}"))),
        };
        if msg.fds() > MAX_FDS {
            return Err(bad("too many descriptors"));
        }
        Ok(Some((msg, 5 + len)))
    }
}

fn bad(what: &str) -> Error {
    Error::new(ErrorKind::InvalidData, format!("upgrade channel: {what}"))
}

/// A message body being written.
#[derive(Default)]
pub struct Body(pub Vec<u8>);

impl Body {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
}

/// A message body being read: every read checks the bounds.
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(bad("message cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    pub fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> io::Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> io::Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    pub fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn string(&mut self) -> io::Result<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| bad("a string is not UTF-8"))
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One end of the channel: blocking reads and writes, the descriptors received so far.
pub struct Channel {
    sock: UnixStream,
    inbuf: Vec<u8>,
    /// Where each read lands before it joins `inbuf` (kept: a handover reads one per client).
    chunk: Vec<u8>,
    fds: VecDeque<OwnedFd>,
}

impl Channel {
    pub fn new(sock: UnixStream) -> Channel {
        Channel {
            sock,
            inbuf: Vec::new(),
            chunk: vec![0u8; 64 * 1024],
            fds: VecDeque::new(),
        }
    }

    pub fn socket(&self) -> &UnixStream {
        &self.sock
    }

    /// Sends `msg` with `fds` attached to its first bytes.
    pub fn send(&self, msg: &Msg, fds: &[RawFd]) -> io::Result<()> {
        let bytes = msg.encode();
        let mut sent = send_with_fds(self.sock.as_raw_fd(), &bytes, fds)?;
        while sent < bytes.len() {
            sent += send_with_fds(self.sock.as_raw_fd(), bytes.get(sent..).unwrap_or_default(), &[])?;
        }
        Ok(())
    }

    /// The next message and its descriptors; an error at the end of the stream.
    pub fn recv(&mut self) -> io::Result<(Msg, Vec<OwnedFd>)> {
        loop {
            if let Some((msg, used)) = Msg::decode(&self.inbuf)? {
                self.inbuf.drain(..used);
                let wanted = msg.fds();
                if self.fds.len() < wanted {
                    return Err(bad("a message came without its descriptors"));
                }
                let fds = self.fds.drain(..wanted).collect();
                return Ok((msg, fds));
            }
            let n = recv_with_fds(self.sock.as_raw_fd(), &mut self.chunk, &mut self.fds)?;
            if n == 0 {
                return Err(Error::new(
                    ErrorKind::UnexpectedEof,
                    "the other pgmux closed the upgrade channel",
                ));
            }
            self.inbuf.extend_from_slice(self.chunk.get(..n).unwrap_or_default());
        }
    }
}

fn send_with_fds(sock: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: a zeroed msghdr is a valid empty one; its pointers are set below to live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer holds CMSG_SPACE(fd_bytes) bytes, aligned for cmsghdr,
        // so the first header and its data fit.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            if cmsg.is_null() {
                return Err(bad("no room for descriptors"));
            }
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr() as *const u8, libc::CMSG_DATA(cmsg), fd_bytes);
        }
    }
    loop {
        // SAFETY: msg points to live buffers for the duration of the call.
        let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = Error::last_os_error();
        if e.kind() != ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn recv_with_fds(sock: RawFd, buf: &mut [u8], fds: &mut VecDeque<OwnedFd>) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: as in send_with_fds.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space as _;
    let n = loop {
        // SAFETY: msg points to live buffers for the duration of the call.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = Error::last_os_error();
        if e.kind() != ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // SAFETY: the kernel filled msg_control with well-formed headers within msg_controllen;
    // each SCM_RIGHTS payload is an array of descriptors now owned by this process.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let len = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned((data as *const RawFd).add(i));
                    fds.push_back(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(bad("descriptors were cut off"));
    }
    Ok(n)
}

/// The user id of the process at the other end of `sock`.
pub fn peer_uid(sock: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for the size given.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    match rc {
        0 => Ok(cred.uid),
        _ => Err(Error::last_os_error()),
    }
}

/// This process's effective user id.
pub fn own_uid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_reads_back() {
        let all = [
            Msg::Hello { version: 1, pid: 42 },
            Msg::Cancel {
                process_id: -5,
                secret_key: i32::MIN,
            },
            Msg::Refused { why: "busy".into() },
            Msg::Listeners {
                pid: 7,
                next_client: 1 << 40,
                groups: vec![2, 2],
                unix: Some("/tmp/.s.PGSQL.6432".into()),
                metrics: true,
            },
            Msg::Listeners {
                pid: 7,
                next_client: 0,
                groups: vec![1],
                unix: None,
                metrics: false,
            },
            Msg::Ready,
            Msg::Offer {
                id: 9,
                state: vec![1, 2, 3],
            },
            Msg::Adopted { id: 9 },
            Msg::Declined {
                id: 9,
                why: "no".into(),
            },
            Msg::Release {
                id: 9,
                leftovers: vec![0; 100],
            },
        ];
        for msg in all {
            let bytes = msg.encode();
            for cut in 0..bytes.len() {
                assert!(Msg::decode(&bytes[..cut]).unwrap().is_none(), "{msg:?} cut at {cut}");
            }
            let (back, used) = Msg::decode(&bytes).unwrap().unwrap();
            assert_eq!((back, used), (msg, bytes.len()));
        }
        assert_eq!(
            Msg::Listeners {
                pid: 1,
                next_client: 1,
                groups: vec![2, 1],
                unix: Some(String::new()),
                metrics: true
            }
            .fds(),
            5
        );
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert!(Msg::decode(b"Z\0\0\0\0").is_err(), "unknown kind");
        assert!(Msg::decode(b"H\0\0\0\x02ab").is_err(), "body too short for its fields");
        assert!(Msg::decode(b"O\xff\xff\xff\xff").is_err(), "over the length limit");
        assert!(Msg::decode(b"N\0\0\0\x06\0\0\0\x02\xff\xfe").is_err(), "not UTF-8");
        let mut huge = Body::default();
        huge.u32(1);
        huge.u64(1);
        huge.u32(1000);
        let mut bytes = vec![b'L'];
        bytes.extend_from_slice(&(huge.0.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&huge.0);
        assert!(Msg::decode(&bytes).is_err(), "a thousand listener groups");
        for seed in 0..2000u32 {
            let junk: Vec<u8> = (0..40)
                .map(|i| (seed.wrapping_mul(2654435761).rotate_left(i) & 0xff) as u8)
                .collect();
            let _ = Msg::decode(&junk);
        }
    }

    #[test]
    fn descriptors_travel_with_their_message() {
        let (a, b) = UnixStream::pair().unwrap();
        let (sender, mut receiver) = (Channel::new(a), Channel::new(b));
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        sender
            .send(
                &Msg::Offer {
                    id: 1,
                    state: vec![7; 100_000],
                },
                &[file.as_raw_fd()],
            )
            .unwrap();
        sender.send(&Msg::Ready, &[]).unwrap();
        let (msg, fds) = receiver.recv().unwrap();
        assert!(matches!(msg, Msg::Offer { id: 1, ref state } if state.len() == 100_000));
        assert_eq!(fds.len(), 1);
        let mut text = String::new();
        use std::io::Read;
        std::fs::File::from(fds.into_iter().next().unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert!(
            text.starts_with(&std::process::id().to_string()),
            "the same file: {text}"
        );
        let (msg, fds) = receiver.recv().unwrap();
        assert!(msg == Msg::Ready && fds.is_empty());
        assert_eq!(peer_uid(sender.socket()).unwrap(), own_uid());
        drop(sender);
        assert_eq!(receiver.recv().unwrap_err().kind(), ErrorKind::UnexpectedEof);
    }
}
