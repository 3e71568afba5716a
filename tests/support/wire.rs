//! A raw protocol client for the security tests: what pgmux sends before and during a login,
//! message by message, with every read bounded by a deadline.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub const AUTH_MD5: i32 = 5;
pub const AUTH_SASL: i32 = 10;
pub const AUTH_SASL_CONTINUE: i32 = 11;

/// One backend message.
#[derive(Debug)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Msg {
    /// An Authentication message's code.
    pub fn auth_code(&self) -> Option<i32> {
        let code = self.body.get(..4)?;
        (self.tag == b'R').then(|| i32::from_be_bytes([code[0], code[1], code[2], code[3]]))
    }

    /// An ErrorResponse's fields by type (S, V, C, M, D, H ...).
    pub fn fields(&self) -> HashMap<char, String> {
        let mut fields = HashMap::new();
        for field in self.body.split(|&b| b == 0).filter(|f| !f.is_empty()) {
            fields.insert(field[0] as char, String::from_utf8_lossy(&field[1..]).into_owned());
        }
        fields
    }
}

pub struct Wire {
    pub stream: TcpStream,
}

impl Wire {
    pub fn connect(port: u16) -> Wire {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect to port {port}: {e}"));
        stream.set_nodelay(true).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        Wire { stream }
    }

    /// Connects and sends a StartupMessage for user@db.
    pub fn start(port: u16, user: &str, db: &str) -> Wire {
        let mut wire = Wire::connect(port);
        let mut buf = bytes::BytesMut::new();
        let params = [("user", user), ("database", db)];
        postgres_protocol::message::frontend::startup_message(params.iter().copied(), &mut buf).unwrap();
        wire.send(&buf);
        wire
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to pgmux");
    }

    /// The next message; None when the connection closed (FIN or reset) first. Panics after
    /// `within` without either.
    pub fn read(&mut self, within: Duration) -> Option<Msg> {
        let deadline = Instant::now() + within;
        let mut head = [0u8; 5];
        if !self.fill(&mut head, deadline) {
            return None;
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        assert!(
            (4..1 << 20).contains(&len),
            "bad length {len} of a {:?} message",
            head[0] as char
        );
        let mut body = vec![0u8; len - 4];
        assert!(self.fill(&mut body, deadline), "closed inside a message");
        Some(Msg { tag: head[0], body })
    }

    /// An Authentication message of `code`: its data.
    pub fn expect_auth(&mut self, code: i32) -> Vec<u8> {
        let msg = self
            .read(Duration::from_secs(5))
            .expect("closed instead of an Authentication message");
        assert_eq!(
            msg.auth_code(),
            Some(code),
            "expected Authentication {code}, got {msg:?}"
        );
        msg.body[4..].to_vec()
    }

    /// The ErrorResponse that ends the connection: its fields.
    pub fn expect_error(&mut self) -> HashMap<char, String> {
        let msg = self
            .read(Duration::from_secs(10))
            .expect("closed without an ErrorResponse");
        assert_eq!(msg.tag, b'E', "expected an ErrorResponse, got {msg:?}");
        assert!(
            self.read(Duration::from_secs(5)).is_none(),
            "more after the FATAL error"
        );
        msg.fields()
    }

    /// Whether pgmux closed the connection within `within` (whatever it sent before).
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut sink = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut sink) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => return true,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Fills `buf`; false on a close before the first byte.
    fn fill(&mut self, buf: &mut [u8], deadline: Instant) -> bool {
        let mut got = 0;
        while got < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no message and no close before the deadline");
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e} ({got} bytes read)"),
            }
        }
        assert!(
            got == 0 || got == buf.len(),
            "closed after {got} of {} bytes",
            buf.len()
        );
        got == buf.len()
    }
}
