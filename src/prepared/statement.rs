//! One pooler-wide statement, and the few frames pgmux writes for statements.

use crate::protocol::frame::HEADER_LEN;
use bytes::{BufMut, BytesMut};
use sha2::{Digest, Sha256};

/// Length of a pooler-wide name: `pgmux_` and 32 hex digits (under NAMEDATALEN, 63).
pub const NAME_LEN: usize = 6 + 32;

/// A statement as servers know it: the pooler-wide name and the Parse that creates it.
#[derive(Debug, PartialEq, Eq)]
pub struct Statement {
    /// 128 bits of SHA-256 over the text and parameter types: two different statements never
    /// meet under one name in practice, so no text comparison is needed.
    pub key: u128,
    /// The whole Parse frame, under the pooler-wide name, ready to inject.
    pub parse: BytesMut,
}

impl Statement {
    /// `tail` is what follows the name in a client's Parse: query, NUL, parameter types.
    pub fn new(tail: &[u8]) -> Statement {
        let digest = Sha256::digest(tail);
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        let key = u128::from_be_bytes(first);
        let mut parse = BytesMut::with_capacity(tail.len() + NAME_LEN + 6);
        frame(&mut parse, b'P', |b| {
            b.put_slice(&name(key));
            b.put_u8(0);
            b.put_slice(tail);
        });
        Statement { key, parse }
    }

    /// The pooler-wide name, read from the Parse frame (spelling it from the key costs ~300
    /// instructions, paid on every Bind otherwise).
    pub fn name(&self) -> &[u8] {
        self.parse.get(HEADER_LEN..HEADER_LEN + NAME_LEN).unwrap_or_default()
    }

    /// What followed the name in the client's Parse: query, NUL, parameter types.
    pub fn tail(&self) -> &[u8] {
        self.parse.get(HEADER_LEN + NAME_LEN + 1..).unwrap_or_default()
    }

    /// The statement's SQL text.
    pub fn text(&self) -> &[u8] {
        self.tail().split(|&b| b == 0).next().unwrap_or_default()
    }
}

pub fn name(key: u128) -> [u8; NAME_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; NAME_LEN];
    out[..6].copy_from_slice(b"pgmux_");
    for (i, slot) in out[6..].iter_mut().enumerate() {
        *slot = HEX[((key >> (124 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// A tagged frame whose body `body` writes.
pub fn frame(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    crate::protocol::messages::message(buf, tag, body);
}

/// Close of a prepared statement.
pub fn close_statement(buf: &mut BytesMut, name: &[u8]) {
    frame(buf, b'C', |b| {
        b.put_u8(b'S');
        b.put_slice(name);
        b.put_u8(0);
    });
}

/// The name no server ever holds: a Bind to it fails with 26000 and changes nothing, which
/// gives pgmux an error at the exact place PostgreSQL would raise one of its own.
pub const PROBE: &str = "pgmux_probe";

pub fn probe_bind(buf: &mut BytesMut) {
    frame(buf, b'B', |b| {
        b.put_u8(0);
        b.put_slice(PROBE.as_bytes());
        b.put_u8(0);
        b.put_slice(&[0; 6]); // no formats, no parameters, no result formats
    });
}

/// A simple query pgmux sends in place of the client's.
pub fn query(buf: &mut BytesMut, sql: &str) {
    crate::protocol::messages::query(buf, sql);
}

pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    frame(buf, b'C', |b| crate::protocol::messages::put_cstr(b, tag));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_and_types_same_name() {
        let a = Statement::new(b"select $1\0\0\x01\0\0\0\x17");
        let b = Statement::new(b"select $1\0\0\x01\0\0\0\x17");
        let c = Statement::new(b"select $1\0\0\x01\0\0\0\x14");
        assert_eq!(a, b);
        assert_ne!(a.key, c.key);
        let n = a.name();
        assert!(n.starts_with(b"pgmux_"));
        assert!(n[6..].iter().all(|c| c.is_ascii_hexdigit()));
        // P, length, name, NUL, the tail as given.
        assert_eq!(a.parse[0], b'P');
        assert_eq!(n, &name(a.key)[..]);
        assert_eq!(&a.parse[6 + NAME_LEN..], b"select $1\0\0\x01\0\0\0\x17");
        let len = u32::from_be_bytes([a.parse[1], a.parse[2], a.parse[3], a.parse[4]]) as usize;
        assert_eq!(len + 1, a.parse.len());
    }

    #[test]
    fn name_spells_the_key() {
        assert_eq!(&name(0xab)[..], b"pgmux_000000000000000000000000000000ab");
    }

    #[test]
    fn small_frames() {
        let mut buf = BytesMut::new();
        close_statement(&mut buf, b"x");
        assert_eq!(&buf[..], b"C\0\0\0\x07Sx\0");
        buf.clear();
        command_complete(&mut buf, "DEALLOCATE");
        assert_eq!(&buf[..], b"C\0\0\0\x0fDEALLOCATE\0");
        buf.clear();
        probe_bind(&mut buf);
        assert_eq!(&buf[..6], b"B\0\0\0\x17\0");
    }
}
