//! SCRAM-SHA-256 server (`auth::scram::ScramServer::client_first` / `client_final`).
//!
//! By the first byte:
//! - an honest exchange with postgres-protocol's client succeeds iff the client's password is
//!   the user's, and then the client accepts the server's signature;
//! - an honest client-first, then a client-final the fuzzer changed: accepted only if it is
//!   byte for byte the honest one;
//! - arbitrary client-first and client-final messages never get in.
//! None of them may panic, and a step out of order is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux::auth::scram::{ScramKeys, ScramServer};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // Few iterations: the exchange, not PBKDF2, is under test.
    let iterations = u32::from(mode >> 4) + 1;
    let keys = Arc::new(ScramKeys::derive("secret", b"salt-of-16-bytes", iterations));
    match mode % 3 {
        0 => honest(&keys, rest),
        1 => tampered(&keys, rest),
        _ => arbitrary(&keys, rest),
    }
});

fn honest(keys: &Arc<ScramKeys>, password: &[u8]) {
    let mut server = ScramServer::new(keys.clone());
    let mut client = ScramSha256::new(password, ChannelBinding::unsupported());
    let first = server
        .client_first("SCRAM-SHA-256", client.message())
        .expect("client-first");
    client.update(&first).expect("server-first");
    let result = server.client_final(client.message());
    // postgres-protocol and pgmux both SASLprep; raw bytes where that fails (as libpq).
    let right = std::str::from_utf8(password).is_ok_and(|p| {
        let keys2 = ScramKeys::derive(p, &keys.salt, keys.iterations);
        keys2.stored_key == keys.stored_key
    });
    match result {
        Ok(last) => {
            assert!(right, "wrong password accepted: {password:?}");
            client.finish(&last).expect("client accepts the server signature");
            assert!(server.client_key().is_some());
        }
        Err(e) => {
            assert!(!right, "right password refused: {e:?}");
            assert!(server.client_key().is_none());
        }
    }
    assert!(
        server.client_final(b"c=biws,r=x,p=AAAA").is_err(),
        "a second final is refused"
    );
}

fn tampered(keys: &Arc<ScramKeys>, edits: &[u8]) {
    let mut server = ScramServer::new(keys.clone());
    let mut client = ScramSha256::new(b"secret", ChannelBinding::unsupported());
    let first = server
        .client_first("SCRAM-SHA-256", client.message())
        .expect("client-first");
    client.update(&first).expect("server-first");
    let honest = client.message().to_vec();
    let mut msg = honest.clone();
    // Pairs (position, byte): overwrite, insert or truncate.
    for pair in edits.chunks(2) {
        let at = usize::from(pair[0]) % (msg.len() + 1);
        match pair.get(1) {
            Some(&b) if b & 0x80 == 0 && at < msg.len() => msg[at] = b,
            Some(&b) => msg.insert(at, b & 0x7f),
            None => msg.truncate(at),
        }
    }
    match server.client_final(&msg) {
        Ok(_) => assert_eq!(msg, honest, "a changed client-final got in"),
        Err(_) => assert!(server.client_key().is_none()),
    }
}

fn arbitrary(keys: &Arc<ScramKeys>, data: &[u8]) {
    let mut server = ScramServer::new(keys.clone());
    let split = data.iter().position(|&b| b == 0xff).unwrap_or(data.len());
    let (first, last) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let mechanism = if first.first() == Some(&b'+') {
        "SCRAM-SHA-256-PLUS"
    } else {
        "SCRAM-SHA-256"
    };
    match server.client_first(mechanism, first) {
        Ok(server_first) => {
            let text = std::str::from_utf8(&server_first).expect("server-first is text");
            assert!(text.starts_with("r=") && text.contains(",s=") && text.contains(",i="));
            assert!(server.client_first(mechanism, first).is_err(), "client-first twice");
        }
        Err(_) => {}
    }
    assert!(server.client_final(last).is_err(), "an arbitrary client-final got in");
    assert!(server.client_key().is_none());
}
