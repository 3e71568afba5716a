//! The few messages pgmux writes itself. Everything else is forwarded as it arrived.

use bytes::{BufMut, BytesMut};

/// An error as the client will see it: PostgreSQL's severity, SQLSTATE and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub fatal: bool,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl PgError {
    pub fn new(code: &str, message: impl Into<String>) -> PgError {
        PgError {
            fatal: false,
            code: code.to_owned(),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// A FATAL error: the connection closes after it.
    pub fn fatal(code: &str, message: impl Into<String>) -> PgError {
        PgError {
            fatal: true,
            ..PgError::new(code, message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> PgError {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> PgError {
        self.detail = Some(detail.into());
        self
    }

    /// Appends this error as an ErrorResponse.
    pub fn encode(&self, buf: &mut BytesMut) {
        let severity = if self.fatal { "FATAL" } else { "ERROR" };
        message(buf, b'E', |b| {
            field(b, b'S', severity);
            field(b, b'V', severity);
            field(b, b'C', &self.code);
            field(b, b'M', &self.message);
            if let Some(detail) = &self.detail {
                field(b, b'D', detail);
            }
            if let Some(hint) = &self.hint {
                field(b, b'H', hint);
            }
            b.put_u8(0);
        });
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

fn field(buf: &mut BytesMut, kind: u8, value: &str) {
    buf.put_u8(kind);
    put_cstr(buf, value);
}

/// Writes NUL-terminated text; an embedded NUL would end the string early, so it is dropped.
pub fn put_cstr(buf: &mut BytesMut, value: &str) {
    buf.extend(value.bytes().filter(|&b| b != 0));
    buf.put_u8(0);
}

/// Writes a tagged message whose body `body` appends, then patches its length.
pub fn message(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_u32(0);
    body(buf);
    let len = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    message(buf, b'Z', |b| b.put_u8(status));
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    message(buf, b'S', |b| {
        put_cstr(b, name);
        put_cstr(b, value);
    });
}

pub fn backend_key_data(buf: &mut BytesMut, process_id: i32, secret_key: i32) {
    message(buf, b'K', |b| {
        b.put_i32(process_id);
        b.put_i32(secret_key);
    });
}

/// Authentication request: 0 ok, 3 cleartext, 5 md5 (with salt), 10 SASL, 11 continue, 12 final.
pub fn authentication(buf: &mut BytesMut, code: i32, data: &[u8]) {
    message(buf, b'R', |b| {
        b.put_i32(code);
        b.put_slice(data);
    });
}

pub const AUTH_OK: i32 = 0;
pub const AUTH_CLEARTEXT: i32 = 3;
pub const AUTH_MD5: i32 = 5;
pub const AUTH_SASL: i32 = 10;
pub const AUTH_SASL_CONTINUE: i32 = 11;
pub const AUTH_SASL_FINAL: i32 = 12;

/// Tells a 3.x client which minor version and which `_pq_.` options we support (none).
pub fn negotiate_protocol_version(buf: &mut BytesMut, minor: i32, unrecognized: &[&str]) {
    message(buf, b'v', |b| {
        b.put_i32(minor);
        b.put_i32(unrecognized.len() as i32);
        for option in unrecognized {
            put_cstr(b, option);
        }
    });
}

/// A simple-protocol Query.
pub fn query(buf: &mut BytesMut, sql: &str) {
    message(buf, b'Q', |b| put_cstr(b, sql));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_layout() {
        let mut buf = BytesMut::new();
        PgError::fatal("28P01", "bad").with_hint("h").encode(&mut buf);
        assert_eq!(&buf[..], b"E\0\0\0\x22SFATAL\0VFATAL\0C28P01\0Mbad\0Hh\0\0");
    }

    #[test]
    fn small_messages() {
        let mut buf = BytesMut::new();
        ready_for_query(&mut buf, b'I');
        parameter_status(&mut buf, "a", "b");
        backend_key_data(&mut buf, 1, 2);
        assert_eq!(&buf[..6], b"Z\0\0\0\x05I");
        assert_eq!(&buf[6..15], b"S\0\0\0\x08a\0b\0");
        assert_eq!(&buf[buf.len() - 13..], b"K\0\0\0\x0c\0\0\0\x01\0\0\0\x02");
    }

    #[test]
    fn nul_in_text_is_dropped() {
        let mut buf = BytesMut::new();
        query(&mut buf, "se\0lect");
        assert_eq!(&buf[..], b"Q\0\0\0\x0bselect\0");
    }
}
