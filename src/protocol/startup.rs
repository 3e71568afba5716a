//! The untagged packets a client sends before the regular protocol starts.

use super::frame::{read_cstr, FrameError};

/// PostgreSQL refuses startup packets longer than this; so do we.
pub const MAX_STARTUP_LEN: usize = 10_000;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel {
        process_id: i32,
        secret_key: i32,
    },
    /// Protocol 3.x with its parameters in the client's order.
    Startup {
        minor: u16,
        params: Vec<(String, String)>,
    },
    /// Any other protocol version: refused with a clear error.
    Unsupported {
        major: u16,
        minor: u16,
    },
}

/// Parses one startup-phase packet from the front of `buf`. `Ok(None)` until it is complete;
/// returns the packet and its length so the caller can drop it from the buffer.
pub fn parse_startup(buf: &[u8]) -> Result<Option<(StartupPacket, usize)>, FrameError> {
    let Some(len) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(FrameError::Malformed("startup packet length"));
    }
    let Some(packet) = buf.get(..len) else {
        return Ok(None);
    };
    let code = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    let body = &packet[8..];
    let parsed = match code {
        SSL_REQUEST if body.is_empty() => StartupPacket::SslRequest,
        GSSENC_REQUEST if body.is_empty() => StartupPacket::GssEncRequest,
        CANCEL_REQUEST if body.len() == 8 => StartupPacket::Cancel {
            process_id: i32::from_be_bytes([body[0], body[1], body[2], body[3]]),
            secret_key: i32::from_be_bytes([body[4], body[5], body[6], body[7]]),
        },
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => return Err(FrameError::Malformed("startup request")),
        _ if code >> 16 == 3 => StartupPacket::Startup {
            minor: (code & 0xffff) as u16,
            params: parse_params(body)?,
        },
        _ => StartupPacket::Unsupported {
            major: (code >> 16) as u16,
            minor: (code & 0xffff) as u16,
        },
    };
    Ok(Some((parsed, len)))
}

/// Name/value pairs, each NUL-terminated, ended by an empty name.
fn parse_params(body: &[u8]) -> Result<Vec<(String, String)>, FrameError> {
    let mut params = Vec::new();
    let mut pos = 0;
    loop {
        let name = read_cstr(body, &mut pos).ok_or(FrameError::Malformed("startup packet"))?;
        if name.is_empty() {
            break;
        }
        let value = read_cstr(body, &mut pos).ok_or(FrameError::Malformed("startup packet"))?;
        let name = std::str::from_utf8(name).map_err(|_| FrameError::Malformed("startup parameter name"))?;
        let value = std::str::from_utf8(value).map_err(|_| FrameError::Malformed("startup parameter value"))?;
        params.push((name.to_owned(), value.to_owned()));
    }
    if pos != body.len() {
        return Err(FrameError::Malformed("startup packet: bytes after the parameter list"));
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn packet(code: u32, body: &[u8]) -> Vec<u8> {
        let mut p = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn startup_with_params() {
        let p = packet(196_608, b"user\0app\0database\0bench\0\0");
        let (parsed, len) = parse_startup(&p).unwrap().unwrap();
        assert_eq!(len, p.len());
        assert_eq!(
            parsed,
            StartupPacket::Startup {
                minor: 0,
                params: vec![("user".into(), "app".into()), ("database".into(), "bench".into())]
            }
        );
        assert_eq!(parse_startup(&p[..p.len() - 1]), Ok(None));
    }

    #[test]
    fn requests_and_versions() {
        assert_eq!(
            parse_startup(&packet(SSL_REQUEST, b"")).unwrap().unwrap().0,
            StartupPacket::SslRequest
        );
        assert_eq!(
            parse_startup(&packet(GSSENC_REQUEST, b"")).unwrap().unwrap().0,
            StartupPacket::GssEncRequest
        );
        let cancel = parse_startup(&packet(CANCEL_REQUEST, &[0, 0, 0, 7, 0, 0, 0, 9]))
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(
            cancel,
            StartupPacket::Cancel {
                process_id: 7,
                secret_key: 9
            }
        );
        let v2 = parse_startup(&packet(2 << 16, b"")).unwrap().unwrap().0;
        assert_eq!(v2, StartupPacket::Unsupported { major: 2, minor: 0 });
        let v32 = parse_startup(&packet((3 << 16) | 2, b"user\0a\0\0"))
            .unwrap()
            .unwrap()
            .0;
        assert!(matches!(v32, StartupPacket::Startup { minor: 2, .. }));
    }

    #[test]
    fn malformed() {
        assert!(parse_startup(&[0x7f, 0xff, 0xff, 0xff]).is_err());
        assert!(parse_startup(&[0, 0, 0, 4]).is_err());
        assert!(parse_startup(&packet(196_608, b"user\0app")).is_err());
        assert!(parse_startup(&packet(196_608, b"user\0app\0\0junk")).is_err());
        assert!(parse_startup(&packet(SSL_REQUEST, b"x")).is_err());
        assert!(parse_startup(&packet(196_608, b"user\0\xff\0\0")).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            if let Ok(Some((_, len))) = parse_startup(&bytes) {
                prop_assert!(len <= bytes.len());
            }
        }

        #[test]
        fn arbitrary_bodies_never_panic(code in any::<u32>(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_startup(&packet(code, &body));
        }
    }
}
