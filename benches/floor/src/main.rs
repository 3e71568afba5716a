//! The floor: the least a transaction-mode pooler can execute per `pgbench -S` transaction in
//! user space. One thread, one epoll, level-triggered; clients get AuthenticationOk at once;
//! servers are opened at start (PostgreSQL's Unix socket, trust); a client's complete frames go
//! to a server taken from the idle list (or wait in a FIFO), the server's answer goes back, and
//! a ReadyForQuery that says idle gives the server to the next waiting client or back to the
//! list. No timeouts, no stats, no TLS, no SET or prepared-statement tracking: a yardstick for
//! what an event loop without tokio can reach, not a pooler.
//!
//!   floor LISTEN_PORT PG_SOCKET_PATH DATABASE POOL_SIZE
//!
//! With FLOOR_DEFER=1 a released server goes back to the list, and the waiting clients take
//! servers only after the loop has handled every event of its turn (as a pooler whose waiting
//! clients are tasks woken at release would): the hand-off's share of the floor, measured.
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

mod cli;
mod wire;
use wire::{be32, frames, welcome};

const LISTENER: u64 = u64::MAX;
const BUF: usize = 16 * 1024;

struct Client {
    fd: RawFd,
    buf: Vec<u8>,
    filled: usize,
    server: Option<usize>,
    started: bool,
}

struct Server {
    fd: RawFd,
    buf: Vec<u8>,
    filled: usize,
    client: Option<usize>,
}

struct Floor {
    ep: RawFd,
    clients: Vec<Option<Client>>,
    free_slots: Vec<usize>,
    servers: Vec<Server>,
    idle: Vec<usize>,
    waiting: VecDeque<usize>,
    defer: bool,
}

fn main() {
    let cli::Args {
        port,
        socket,
        database,
        size,
    } = cli::args("floor");
    let mut servers = Vec::new();
    for _ in 0..size {
        servers.push(open_server(&socket, &database));
    }
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    // SAFETY: plain syscalls on descriptors this process owns.
    let ep = unsafe { libc::epoll_create1(0) };
    add(ep, listener.as_raw_fd(), LISTENER);
    for (i, s) in servers.iter().enumerate() {
        add(ep, s.fd, (i as u64) << 1 | 1);
    }
    let idle = (0..servers.len()).collect();
    let mut f = Floor {
        ep,
        clients: Vec::new(),
        free_slots: Vec::new(),
        servers,
        idle,
        waiting: VecDeque::new(),
        defer: std::env::var_os("FLOOR_DEFER").is_some_and(|v| v == "1"),
    };
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
    loop {
        // SAFETY: events is a valid array of 64 entries.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), 64, -1) };
        for ev in events.iter().take(n.max(0) as usize) {
            let token = ev.u64;
            if token == LISTENER {
                while let Ok((s, _)) = listener.accept() {
                    s.set_nonblocking(true).ok();
                    s.set_nodelay(true).ok();
                    f.accept(s.into_raw_fd());
                }
            } else if token & 1 == 0 {
                f.client_readable((token >> 1) as usize);
            } else {
                f.server_readable((token >> 1) as usize);
            }
        }
        while !f.waiting.is_empty() && !f.idle.is_empty() {
            if let Some(s) = f.idle.pop() {
                f.hand_to_waiting(s);
            }
        }
    }
}

impl Floor {
    fn accept(&mut self, fd: RawFd) {
        let client = Client {
            fd,
            buf: vec![0; BUF],
            filled: 0,
            server: None,
            started: false,
        };
        let i = match self.free_slots.pop() {
            Some(i) => {
                self.clients[i] = Some(client);
                i
            }
            None => {
                self.clients.push(Some(client));
                self.clients.len() - 1
            }
        };
        add(self.ep, fd, (i as u64) << 1);
    }

    fn client_readable(&mut self, i: usize) {
        let Some(c) = self.clients[i].as_mut() else { return };
        let n = recv(c.fd, &mut c.buf[c.filled..]);
        if n <= 0 {
            return self.close_client(i);
        }
        c.filled += n as usize;
        if !c.started {
            if c.filled < 8 {
                return;
            }
            let len = be32(&c.buf[0..4]) as usize;
            if c.filled < len {
                return;
            }
            if be32(&c.buf[4..8]) == 80877103 {
                send(c.fd, b"N");
            } else {
                c.started = true;
                send(c.fd, &welcome());
            }
            c.buf.copy_within(len..c.filled, 0);
            c.filled -= len;
            return;
        }
        let (end, terminate) = frames(&c.buf[..c.filled]);
        if terminate {
            return self.close_client(i);
        }
        if end == 0 {
            return;
        }
        match c.server {
            Some(s) => self.forward(i, s),
            None => match self.idle.pop() {
                Some(s) => {
                    self.servers[s].client = Some(i);
                    c.server = Some(s);
                    self.forward(i, s);
                }
                None if !self.waiting.contains(&i) => self.waiting.push_back(i),
                None => {}
            },
        }
    }

    /// The client's complete frames go to its server.
    fn forward(&mut self, i: usize, s: usize) {
        let Some(c) = self.clients[i].as_mut() else { return };
        let (end, _) = frames(&c.buf[..c.filled]);
        send(self.servers[s].fd, &c.buf[..end]);
        c.buf.copy_within(end..c.filled, 0);
        c.filled -= end;
    }

    fn server_readable(&mut self, s: usize) {
        let sv = &mut self.servers[s];
        let n = recv(sv.fd, &mut sv.buf[sv.filled..]);
        if n <= 0 {
            eprintln!("server {s} closed");
            std::process::exit(1);
        }
        sv.filled += n as usize;
        // Complete frames, and whether the last ReadyForQuery among them says idle.
        let mut at = 0;
        let mut idle = false;
        while sv.filled - at >= 5 {
            let total = 1 + be32(&sv.buf[at + 1..at + 5]) as usize;
            if sv.filled - at < total {
                break;
            }
            if sv.buf[at] == b'Z' {
                idle = sv.buf[at + 5] == b'I';
            }
            at += total;
        }
        if at == 0 {
            return;
        }
        if let Some(i) = sv.client {
            if let Some(c) = self.clients[i].as_ref() {
                send(c.fd, &sv.buf[..at]);
            }
        }
        sv.buf.copy_within(at..sv.filled, 0);
        sv.filled -= at;
        if idle && sv.filled == 0 {
            self.release(s);
        }
    }

    /// The server's transaction is over: to the first waiting client, or back to the list.
    fn release(&mut self, s: usize) {
        if let Some(i) = self.servers[s].client.take() {
            if let Some(c) = self.clients[i].as_mut() {
                c.server = None;
                // Pipelined frames of its own: it keeps the server.
                if frames(&c.buf[..c.filled]).0 > 0 {
                    c.server = Some(s);
                    self.servers[s].client = Some(i);
                    return self.forward(i, s);
                }
            }
        }
        if self.defer {
            return self.idle.push(s);
        }
        self.hand_to_waiting(s);
    }

    /// The server to the first waiting client, its frames written at once; or back to the list.
    fn hand_to_waiting(&mut self, s: usize) {
        while let Some(i) = self.waiting.pop_front() {
            let Some(c) = self.clients[i].as_mut() else { continue };
            c.server = Some(s);
            self.servers[s].client = Some(i);
            return self.forward(i, s);
        }
        self.idle.push(s);
    }

    fn close_client(&mut self, i: usize) {
        let Some(c) = self.clients[i].take() else { return };
        // SAFETY: the client's own descriptor, closed once.
        unsafe { libc::close(c.fd) };
        self.waiting.retain(|&w| w != i);
        self.free_slots.push(i);
        if let Some(s) = c.server {
            // Mid-transaction: a real pooler would roll back; the floor only sees pgbench's
            // Terminate between transactions.
            self.servers[s].client = None;
            self.idle.push(s);
        }
    }
}

fn add(ep: RawFd, fd: RawFd, token: u64) {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: ev is valid for the call.
    unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
}

fn recv(fd: RawFd, buf: &mut [u8]) -> isize {
    // SAFETY: buf is writable for its length.
    unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) }
}

fn send(fd: RawFd, buf: &[u8]) {
    // Loopback and small messages: the socket takes them whole (a yardstick, not a pooler).
    // SAFETY: buf is readable for its length.
    unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
}

fn open_server(socket: &str, database: &str) -> Server {
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect to PostgreSQL");
    let startup = wire::startup(database);
    s.write_all(&startup).expect("startup");
    // Until ReadyForQuery (trust: AuthenticationOk comes at once).
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).expect("read");
        assert!(n > 0, "PostgreSQL closed during login");
        got.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while got.len() - at >= 5 {
            let total = 1 + be32(&got[at + 1..at + 5]) as usize;
            if got.len() - at < total {
                break;
            }
            assert!(
                got[at] != b'E',
                "login refused: {}",
                String::from_utf8_lossy(&got[at..at + total])
            );
            if got[at] == b'Z' {
                s.set_nonblocking(true).expect("nonblocking");
                return Server {
                    fd: s.into_raw_fd(),
                    buf: vec![0; BUF],
                    filled: 0,
                    client: None,
                };
            }
            at += total;
        }
    }
}
