//! The little of the wire protocol both floors speak: frame boundaries, the messages they
//! write, their answer to a client's startup and their own startup to PostgreSQL.

/// The end of the complete frames at the front of `buf`, and whether one is a Terminate.
pub fn frames(buf: &[u8]) -> (usize, bool) {
    let mut at = 0;
    while buf.len() - at >= 5 {
        let total = 1 + be32(&buf[at + 1..at + 5]) as usize;
        if buf.len() - at < total {
            break;
        }
        if buf[at] == b'X' {
            return (at, true);
        }
        at += total;
    }
    (at, false)
}

pub fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// What a floor answers a client's startup message with: AuthenticationOk and enough
/// ParameterStatus for pgbench.
pub fn welcome() -> Vec<u8> {
    let mut w = msg(b'R', &0u32.to_be_bytes());
    for (k, v) in [
        ("server_version", "15.0"),
        ("client_encoding", "UTF8"),
        ("server_encoding", "UTF8"),
        ("standard_conforming_strings", "on"),
        ("integer_datetimes", "on"),
        ("DateStyle", "ISO, MDY"),
    ] {
        w.extend(msg(b'S', format!("{k}\0{v}\0").as_bytes()));
    }
    w.extend(msg(b'K', &[0, 0, 0, 1, 0, 0, 0, 1]));
    w.extend(msg(b'Z', b"I"));
    w
}

/// A floor's startup message to PostgreSQL (as postgres, trust).
pub fn startup(database: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196608u32.to_be_bytes());
    body.extend_from_slice(format!("user\0postgres\0database\0{database}\0\0").as_bytes());
    let mut startup = (body.len() as u32 + 4).to_be_bytes().to_vec();
    startup.extend(body);
    startup
}
